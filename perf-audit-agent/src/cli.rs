//! Command-line surface. Parsing only: [`crate::plan::AuditPlan::from_args`]
//! turns these raw arguments into a validated plan before any I/O happens.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use perf_audit_analysis::memory::MemoryMode;

const AFTER_HELP: &str = "\
Examples:
  sudo perf-audit-agent --pid 1234 cpu --duration 10s
  sudo perf-audit-agent user-service --load http://127.0.0.1:8080/feed --rps 100
  sudo perf-audit-agent user-service cpu                 # a running process, by name
  sudo perf-audit-agent cpu -- ./target/release/svc --bench-mode   # launch and profile

How it works:
  A perf_event eBPF program samples every thread of the target at --frequency
  on every CPU, with user and kernel stacks, aggregated in the kernel. No
  change to the target, no restart. Stacks are symbolized from the target's
  own binaries (DWARF: inlined frames, file:line); hotspots name the innermost
  frame in your own crates, while the flamegraph keeps every frame.
  The memory profile probes the allocator the target uses (uprobes placed on
  instructions the kernel emulates), keyed by call site in the kernel:
  --memory default records 100 ms every 5 s with the probes detached in
  between (estimates scaled up); --memory precise records every call.
  The async profile follows sched_switch and takes the stack of every block
  of --offcpu-min or more at the blocking syscall's exit: blocking calls and
  sync-lock waits on Tokio workers are named at your line. The database
  profile reads pg_stat_statements and traces the target's writes to its
  database connections, tying each query to the Rust line that issued it.

Outputs (in --out, default perf-audit-<service>-<UTC timestamp>/):
  report.md        the audit: samples, drops, top hotspots, ranked findings
  report.json      the same, machine-readable (schema_version 1)
  report.html      the report for a browser, flamegraphs embedded, no network needed
  flamegraph.svg   interactive CPU flamegraph (open in a browser)
  memory.svg       memory flamegraph: bytes allocated per stack (profile memory)
  offcpu.svg       off-CPU flamegraph: time blocked per stack (profile async)
  stacks.folded    folded stacks, one `root;...;leaf count` line per stack
  alerts.yml       Prometheus alert rules, thresholds from the measured baseline
  perf-audit-ci.yml  GitHub Actions workflow: audit base and head, gate with diff

Exit codes:
  0 report written (a target that exited early gives a partial report)
  1 internal error   2 usage error   3 target not found or not started
  4 insufficient privileges   5 kernel lacks eBPF support   6 cannot write output
  7 the database could not be started or reached
  8 `diff`: a metric regressed past --max-regression (stderr names each one)
  9 --bench: `cargo bench` failed or left no criterion results

Regression tracking:
  perf-audit-agent diff OLD_DIR NEW_DIR --max-regression 5%   see `perf-audit-agent diff --help`
  --bench runs the service crate's criterion benchmarks after the audit and
  adds their table to the report; the audit also writes perf-audit-ci.yml, a
  GitHub Actions workflow that audits the base and the head and gates with diff.";

/// Audit a running Rust service with eBPF and tell its owners what to fix first.
#[derive(Debug, Parser)]
#[command(
    name = "perf-audit-agent",
    version,
    about,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Without a subcommand: a one-shot audit of one process.
    #[command(flatten)]
    pub audit: Args,
}

/// Modes other than the one-shot audit.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Always-on, low-overhead profiling for fleets (pprof and Prometheus export).
    Daemon(DaemonArgs),
    /// Compare two audits (output dirs or report.json files); non-zero exit on regression.
    Diff(DiffArgs),
    /// Name a saved audit's stripped frames (`svc+0x1b5b0`) from debug files found later.
    Symbolize(SymbolizeArgs),
}

/// `perf-audit-agent symbolize AUDIT`: re-symbolizes report.json,
/// stacks.folded (offcpu.folded) and the flamegraphs of an audit of a
/// stripped binary, once its debug file exists (found by build-id).
#[derive(Debug, ClapArgs)]
pub struct SymbolizeArgs {
    /// The audit: its output directory or its report.json.
    pub audit: PathBuf,

    /// Look for debug files here first (repeatable): `DIR/.build-id/ab/cdef....debug`
    /// or `DIR/<binary>.debug`; then under /usr/lib/debug.
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,

    /// The debug file of the audited executable (e.g. from `objcopy
    /// --only-keep-debug`). Refused (exit 10) unless its build-id is the
    /// executable's.
    #[arg(long = "debug-file", value_name = "FILE")]
    pub debug_file: Option<PathBuf>,

    /// Use a debug file whose build-id differs from the audited object's,
    /// or that has none (`--debug-file`, or one found by name in a
    /// `--debug-dir`): its names may be wrong; a warning says so.
    #[arg(long = "force-debug-file")]
    pub force_debug_file: bool,

    /// Output directory (default: `<AUDIT>-symbolized` beside it).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `perf-audit-agent daemon`: every option may also come from `--config`
/// (same names, snake_case); a flag given here wins over the file.
/// Validated by [`crate::daemon::plan::DaemonPlan::from_args`].
#[derive(Debug, Default, ClapArgs)]
#[command(after_help = DAEMON_AFTER_HELP)]
pub struct DaemonArgs {
    /// TOML configuration file (keys: listen, frequency, window, pids,
    /// processes, cgroups, containers, push, otlp, folded_dir,
    /// frame_pointers_only, off_cpu, off_cpu_min).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// HTTP address for /metrics and /debug/pprof/profile [default: 127.0.0.1:6060].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// CPU samples per second per CPU [default: 19].
    #[arg(long, value_name = "HZ")]
    pub frequency: Option<u64>,

    /// Length of one profile window, e.g. 60s [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub window: Option<std::time::Duration>,

    /// Profile only this process (repeatable). No filter: system-wide.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Profile processes with this name, like pgrep -x (repeatable).
    #[arg(long = "process", value_name = "NAME")]
    pub processes: Vec<String>,

    /// Profile processes whose cgroup path contains this text (repeatable).
    #[arg(long = "cgroup", value_name = "TEXT")]
    pub cgroups: Vec<String>,

    /// Profile processes of this container id or id prefix (repeatable).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,

    /// Send every window to this Pyroscope-compatible server (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,

    /// Send every window to this OTLP gRPC endpoint as OpenTelemetry
    /// profiles (a collector's OTLP receiver, e.g. http://otel-collector:4317).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,

    /// Write every window as collapsed stacks into this directory.
    #[arg(long, value_name = "DIR")]
    pub folded_dir: Option<PathBuf>,

    /// Also record the time threads spend blocked, per stack (sched_switch):
    /// a second sample type, off_cpu/nanoseconds, in pprof, --push and --otlp.
    #[arg(long)]
    pub off_cpu: bool,

    /// With --off-cpu: blocks at least this long are recorded with their
    /// stack; shorter ones are not attributed [default: 1ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub off_cpu_min: Option<std::time::Duration>,

    /// Walk frame pointers in the kernel only (cheapest; stacks of binaries
    /// built without frame pointers stop after a frame or two). Default:
    /// copy each sample's user stack and unwind it with `.eh_frame`.
    #[arg(long)]
    pub frame_pointers_only: bool,
}

const DIFF_AFTER_HELP: &str = "\
Examples:
  perf-audit-agent diff perf-audit-svc-20260101T100000Z perf-audit-svc-20260201T100000Z
  perf-audit-agent diff old/report.json new/report.json --max-regression 10% \\
      --max-regression p99_ms=5% --max-regression cpu.hotspot=20%

Metrics (names for --max-regression; the most specific key wins):
  baseline.rps, baseline.p50_ms, baseline.p99_ms, baseline.p999_ms,
  baseline.errors, baseline.rss_bytes  load-test numbers (short: rps, p99_ms...);
                                       worse past the threshold regresses
  cpu.hotspot:<function>   self CPU time (ms per second of audit, per request
                           when both have baseline.rps); also needs 3 sigma
                           of sampling noise. Family key: cpu.hotspot
  bench:<id>               criterion mean; NEW's whole 95% interval must be past
                           OLD's widened by the threshold. Family key: bench
  memory.*, async.*, database.*   shown; gated only when a key names them
  KEY=off never gates KEY; a bare `off` gates only the metrics named.

Outputs (in --out, default perf-audit-diff-<UTC timestamp>/; the last stdout line):
  diff.md    regressions, baseline, hotspots, benchmarks, findings fixed/new/still open
  diff.json  the same, machine-readable
  diff.svg   differential flamegraph: NEW's stacks, red grew, blue shrank

Exit codes: 0 no regression   8 regression (one stderr line per metric)
  2 usage error or an input that is not an audit   6 cannot write output";

/// `perf-audit-agent diff OLD NEW`.
#[derive(Debug, ClapArgs)]
#[command(after_help = DIFF_AFTER_HELP)]
pub struct DiffArgs {
    /// The earlier audit: its output directory or its report.json.
    pub old: PathBuf,
    /// The later audit.
    pub new: PathBuf,

    /// How much worse a metric may get: `5%` for all (the default), or
    /// `METRIC=PCT` for one metric or family, e.g. `p99_ms=10%`,
    /// `cpu.hotspot=3%`, `memory=off`. Repeatable.
    #[arg(long, value_name = "[METRIC=]PCT")]
    pub max_regression: Vec<String>,

    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The one-shot audit's arguments.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Service to audit, found by process name (like pgrep), then the profile.
    /// With --pid or `-- <command>`, the only positional is the profile.
    #[arg(value_name = "SERVICE|PROFILE", num_args = 0..=2)]
    pub positionals: Vec<String>,

    /// Audit the process with this pid (all of its threads).
    #[arg(long, value_name = "PID", conflicts_with = "name")]
    pub pid: Option<u32>,

    /// Audit the process with this name (same as the SERVICE positional).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// How long to collect, e.g. 10s, 2m. Ctrl-C or the target exiting ends
    /// the audit early with a partial report.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,

    /// CPU sampling frequency in Hz per CPU. 99 avoids lockstep with
    /// periodic work at round frequencies.
    #[arg(long, default_value_t = 99, value_name = "HZ")]
    pub frequency: u64,

    /// How user stacks are unwound: `auto` uses frame pointers when the
    /// target's binary keeps them and `.eh_frame` (dwarf) otherwise.
    #[arg(long, value_enum, default_value_t = UnwindChoice::Auto)]
    pub unwind: UnwindChoice,

    /// Memory profile: `default` measures the allocation rate in its first
    /// 250 ms, then records every call for the whole audit when that costs
    /// at most 5% of a core, else only in short windows (100 ms every 5 s,
    /// estimates scaled up); for production. `precise` probes every
    /// allocator call for the whole audit whatever it costs (exact).
    #[arg(long, default_value = "default", value_parser = memory_mode())]
    pub memory: MemoryMode,

    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// PostgreSQL URL for the database profile (else DATABASE_URL, else the
    /// target's own environment).
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Drive open-loop HTTP load at this URL during the audit (repeatable;
    /// equal weights). Latency is measured from each request's planned send
    /// time, so a stalled service shows up (coordinated omission corrected).
    #[arg(long = "load", value_name = "URL")]
    pub load: Vec<String>,

    /// Drive load from a scenario file (TOML: weighted `[[request]]`s with
    /// url, method, body, headers, weight) instead of --load.
    #[arg(long, value_name = "FILE", conflicts_with = "load")]
    pub scenario: Option<PathBuf>,

    /// Requests per second of the load (--load or --scenario).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub rps: u32,

    /// Start a throwaway PostgreSQL (loopback, pg_stat_statements preloaded)
    /// for the audit, give its URL to the launched command as DATABASE_URL,
    /// and delete it at exit. For demos and tests.
    #[arg(long)]
    pub private_database: bool,

    /// With load: how long to wait for the service to accept connections
    /// before collection starts (a launched service may seed its database).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: std::time::Duration,

    /// Async profile: blocking intervals at least this long are captured
    /// with the blocked thread's stack (shorter ones are counted).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = humantime::parse_duration)]
    pub offcpu_min: std::time::Duration,

    /// Async profile: a worker running one task's code this long without
    /// yielding is a long poll.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub long_poll: std::time::Duration,

    /// Overhead budget: the audit's kernel-side cost on the target (our BPF
    /// programs' run time from the kernel's statistics, plus uprobe traps)
    /// as a share of the target's CPU, judged over 3 s. Past it, the audit
    /// switches off the allocator probes, then the database wire tracer,
    /// and the report says what, when and why; the report always shows the
    /// measured cost. Default 50%, a guard rail: profile `all` normally
    /// costs 12-18% of the demo's CPU at 100 rps (a window up to ~33%), so
    /// the default acts on a runaway (a recording window held open), and
    /// leaves `--memory precise`, asked for as the costly exact mode, on.
    /// Give 3% to keep only the cheap collectors (it also applies to precise
    /// mode); `none` to measure only
    #[arg(long, value_name = "PCT|none")]
    pub max_overhead: Option<String>,

    /// Async profile: the target's console-subscriber (tokio-console) address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6669")]
    pub console: String,
    /// After collecting, run the service crate's criterion benchmarks
    /// (`cargo bench`) and add their table to the report. The crate is
    /// --bench-dir, else inferred from the target's executable
    /// (`<crate>/target/release/<bin>` -> `<crate>`).
    #[arg(long)]
    pub bench: bool,

    /// The crate whose `cargo bench` --bench runs.
    #[arg(long, value_name = "DIR", requires = "bench")]
    pub bench_dir: Option<PathBuf>,

    /// A benchmark regressed when the whole 95% interval of its change
    /// against the previous run is above this.
    #[arg(long, value_name = "PCT", default_value = "5%", requires = "bench")]
    pub bench_max_regression: String,

    /// Look for the target's separate debug files here first (repeatable):
    /// `DIR/.build-id/ab/cdef....debug`, or the `.gnu_debuglink` name (or
    /// `<binary>.debug`) in DIR; then next to the binary, in its `.debug/`,
    /// and under /usr/lib/debug, as gdb does.
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,

    /// Hide the progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// Launch this command and audit it: `perf-audit-agent cpu -- ./svc --flag`.
    /// It is stopped (SIGTERM) when the audit ends.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--unwind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnwindChoice {
    /// Frame pointers if the binary has them, else dwarf.
    Auto,
    /// Kernel frame-pointer walk: cheapest, needs `-C force-frame-pointers=yes`.
    FramePointer,
    /// Copy the user stack and unwind with `.eh_frame`: works on plain release builds.
    Dwarf,
}

/// What to profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// CPU sampling, flamegraph, hotspots.
    Cpu,
    /// Allocation tables, leaks, growth.
    Memory,
    /// Off-CPU time and Tokio runtime analysis.
    Async,
    /// PostgreSQL statistics and the code that issues queries.
    Database,
    /// Every profile above.
    All,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Cpu => "cpu",
            Profile::Memory => "memory",
            Profile::Async => "async",
            Profile::Database => "database",
            Profile::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        <Profile as ValueEnum>::from_str(s, true).ok()
    }
}

/// `--memory`: the mode type lives in the pure core, without clap.
fn memory_mode() -> impl clap::builder::TypedValueParser<Value = MemoryMode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["default", "precise"])
        .map(|s| MemoryMode::parse(&s).expect("clap checked the possible values"))
}

pub const DAEMON_AFTER_HELP: &str = "\
Examples:
  sudo perf-audit-agent daemon                                   # system-wide, 19 Hz, 60 s windows
  sudo perf-audit-agent daemon --process user-service --push http://pyroscope:4040
  sudo perf-audit-agent daemon --config /etc/perf-audit/daemon.toml --folded-dir /var/lib/perf-audit

HTTP (bound to 127.0.0.1:6060 unless --listen):
  GET /metrics                                   Prometheus text: agent CPU/RSS, samples, drops, map fill,
                                                 per-process CPU seconds with pid/container/pod labels
  GET /debug/pprof/profile?pid=PID&seconds=N     gzip pprof CPU profile of PID over the next N seconds

SIGTERM or Ctrl-C flushes the current window and detaches every eBPF program.";
