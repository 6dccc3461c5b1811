//! Command-line surface. Parsing only: [`crate::plan::AuditPlan::from_args`]
//! turns these raw arguments into a validated plan before any I/O happens.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

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

Outputs (in --out, default perf-audit-<service>-<UTC timestamp>/):
  report.md        the audit: samples, drops, top hotspots, ranked findings
  report.json      the same, machine-readable (schema_version 1)
  report.html      the report for a browser, flamegraphs embedded, no network needed
  flamegraph.svg   interactive CPU flamegraph (open in a browser)
  memory.svg       memory flamegraph: bytes allocated per stack (profile memory)
  stacks.folded    folded stacks, one `root;...;leaf count` line per stack
  alerts.yml       Prometheus alert rules, thresholds from the measured baseline

Exit codes:
  0 report written (a target that exited early gives a partial report)
  1 internal error   2 usage error   3 target not found or not started
  4 insufficient privileges   5 kernel lacks eBPF support   6 cannot write output
  7 the database could not be started or reached";

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
}

/// `perf-audit-agent daemon` (filled in by the daemon issue).
#[derive(Debug, ClapArgs)]
pub struct DaemonArgs {}

/// `perf-audit-agent diff OLD NEW` (filled in by the regression issue).
#[derive(Debug, ClapArgs)]
pub struct DiffArgs {
    /// The earlier audit: its output directory or its report.json.
    pub old: PathBuf,
    /// The later audit.
    pub new: PathBuf,
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

    /// Memory profile: `default` probes the allocator only in short windows
    /// (100 ms every 5 s, estimates scaled up; for production), `precise`
    /// probes every allocator call for the whole audit (exact; costlier).
    #[arg(long, value_enum, default_value_t = crate::memory::MemoryMode::Default)]
    pub memory: crate::memory::MemoryMode,

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
