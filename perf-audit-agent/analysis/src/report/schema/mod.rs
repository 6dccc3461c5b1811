//! The report schema: every type `report.json` is made of, in one place.
//!
//! `report.json` is a contract with its readers (`diff`, CI gates, users'
//! scripts), so its shape lives here and nowhere else: the probe layer and
//! the analyses fill these types, never their own. Renaming or removing a
//! field here is a schema change: bump [`SCHEMA_VERSION`] and keep `diff`
//! reading the older files (every field a later version added is
//! `#[serde(default)]`).

mod console;
mod overhead;
mod symbols;
mod target;

pub use console::{ConsoleSummary, ConsoleWarning, SpawnLocation};
pub use crate::database::schema::{
    MAX_PLANS_NOT_INSPECTED, PlanNotInspected, RolePrivileges,
    CallSiteRow, DatabaseSection, DuplicateIndex, IndexRow, MissingIndex, StatementRow, TableRow,
    UnusedIndex, WireSummary,
};
pub use crate::load::{EndpointStats, LatencyPoint, LatencySeries, LatencySummary, LoadResult};
pub use overhead::{BackOff, CollectorCost, OverheadSection, RingDrops};
pub use symbols::{LINE_TABLES_FIX, LoadSegment, ObjectSymbols};
pub use target::{TargetExec, TargetInfo};

use crate::{findings::Finding, profile::Origin};

pub const SCHEMA_VERSION: u32 = 1;

/// Why collection stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The planned duration elapsed.
    #[default]
    Duration,
    /// A signal ended it (SIGINT: Ctrl-C, or SIGTERM): see `Report::end_signal`.
    Interrupted,
    /// The target exited: the report covers only the time it ran.
    TargetExited,
}

impl Report {
    /// How an interrupted audit was ended, named by its signal:
    /// "interrupted by SIGTERM", "interrupted by SIGINT (Ctrl-C)", or
    /// "interrupted by a signal" for a report that did not record it.
    pub fn interruption(&self) -> String {
        match self.end_signal.as_deref() {
            Some("SIGINT") => "interrupted by SIGINT (Ctrl-C)".to_string(),
            Some(signal) => format!("interrupted by {signal}"),
            None => "interrupted by a signal".to_string(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Report {
    pub schema_version: u32,
    pub target: TargetInfo,
    /// The profile the user asked for (`all` stays `all`).
    pub profile: String,
    /// Seconds actually collected.
    pub duration_s: f64,
    pub planned_duration_s: f64,
    /// RFC 3339 UTC start of collection.
    pub started_at: String,
    pub end_reason: EndReason,
    /// True when collection ended before the planned duration.
    pub partial: bool,
    /// The signal that ended an interrupted audit: `SIGINT` (Ctrl-C) or
    /// `SIGTERM`. Absent otherwise (and in reports written before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_signal: Option<String>,
    /// The target exec'd during the audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_exec: Option<TargetExec>,
    /// Profiles asked for that this build does not collect yet.
    pub unavailable_profiles: Vec<String>,
    pub kernel: KernelInfo,
    /// The objects sampled frames fell in: build-id, symbols, line info,
    /// separate debug file (see `ObjectSymbols::header_note`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<ObjectSymbols>,
    /// Service-level metrics measured during the audit.
    pub baseline: Baseline,
    pub cpu: Option<CpuSection>,
    /// The async runtime analysis (profile `async`).
    #[serde(rename = "async")]
    pub async_runtime: Option<AsyncSection>,
    /// Off-CPU time of the target's threads (profile `async`).
    pub offcpu: Option<OffCpuSection>,
    /// The database profile: statements, indexes, N+1 patterns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSection>,
    /// The memory profile (allocation tables, leaks, growth).
    pub memory: Option<crate::memory::section::MemorySection>,
    pub findings: Vec<Finding>,
    /// With `--load`: the service measured after the probes were detached and
    /// during the audit, and whether it degraded (`crate::health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::AuditHealth>,
    /// What the audit cost the target, measured while it ran, and what it
    /// switched off to stay within `--max-overhead`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<OverheadSection>,
    /// The command that re-runs this audit.
    pub rerun_command: String,
    /// `--bench`: the service's criterion benchmarks (see `bench`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub benchmarks: Vec<crate::bench::BenchmarkRow>,
}


/// The seed's "Baseline metrics": load results when the audit drove load,
/// and the target's resource use from /proc in every case.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Baseline {
    /// Achieved requests per second of the audit's load (None without load).
    pub rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// Failed requests: non-2xx/3xx answers plus transport errors.
    pub errors: Option<u64>,
    /// The target's resident set size at the end of the audit.
    pub rss_bytes: u64,
    /// The largest RSS seen during the audit (sampled every 200 ms).
    pub peak_rss_bytes: u64,
    /// CPU cores the target used on average (user + system time / wall time).
    pub cpu_cores: f64,
    /// The load generator's full result, when it ran.
    pub load: Option<LoadResult>,
}

impl Baseline {
    /// The numbers `diff` compares, by their report.json name; those not
    /// measured are left out (an RSS or CPU of exactly 0 is "not read":
    /// a live process always has pages, and a ratio against 0 means nothing).
    pub fn measured(&self) -> Vec<(&'static str, f64)> {
        let positive = |x: f64| (x > 0.0).then_some(x);
        [
            ("rps", self.rps),
            ("p50_ms", self.p50_ms),
            ("p99_ms", self.p99_ms),
            ("p999_ms", self.p999_ms),
            ("errors", self.errors.map(|e| e as f64)),
            ("rss_bytes", positive(self.rss_bytes as f64)),
            ("peak_rss_bytes", positive(self.peak_rss_bytes as f64)),
            ("cpu_cores", positive(self.cpu_cores)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct AsyncSection {
    #[serde(flatten)]
    pub analysis: crate::profile::async_runtime::AsyncAnalysis,
    pub long_poll_threshold_ms: f64,
    pub console: ConsoleInfo,
}

/// tokio-console (console-subscriber) status of the target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ConsoleInfo {
    pub address: String,
    /// Something accepted a TCP connection at the address.
    pub listening: bool,
    pub note: String,
    /// Task counts, spawn locations, poll times and warnings, when read.
    pub summary: Option<ConsoleSummary>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct OffCpuSection {
    /// Blocking intervals at least this long were captured with stacks.
    pub capture_threshold_ms: f64,
    pub captured_intervals: u64,
    pub captured_ms: f64,
    /// Shorter intervals: counted, not stack-attributed.
    pub short_intervals: u64,
    pub short_ms: f64,
    pub dropped_intervals: u64,
    /// Which tracepoints the collector ran on: raw ones (no event record
    /// built per context switch) or, on kernels without what they need,
    /// the classic ones.
    pub tracepoints: String,
    /// Per thread: on-CPU, blocked, run-queue time.
    pub threads: Vec<OffCpuThreadRow>,
    /// The heaviest blocking stacks (innermost owner frame and syscall).
    pub top: Vec<OffCpuRow>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct OffCpuThreadRow {
    pub tid: u32,
    pub name: String,
    pub role: crate::profile::async_runtime::ThreadRole,
    pub on_cpu_ms: f64,
    pub blocked_ms: f64,
    /// The part of `blocked_ms` spent blocked inside task code (captured
    /// off-CPU stacks with a frame of the owner's code); the rest is idle.
    pub blocked_in_tasks_ms: f64,
    pub runqueue_ms: f64,
    pub max_run_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct OffCpuRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub syscall: String,
    pub thread: String,
    pub intervals: u64,
    pub blocked_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct KernelInfo {
    pub release: String,
    pub btf: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CpuSection {
    /// Samples that hit the target's threads.
    pub total_samples: u64,
    /// Samples lost in the kernel (aggregation map full).
    pub dropped_samples: u64,
    pub frequency_hz: u64,
    /// How user stacks were unwound: `frame-pointer` or `dwarf`.
    pub unwinding: UnwindMode,
    /// Percent of samples whose user stack reached `main` or a thread's
    /// entry point (see `CpuProfile::complete_share`).
    pub stack_completeness_pct: f64,
    /// Samples whose user stack could not be captured at all.
    pub user_stack_failures: u64,
    /// Stack-copy samples lost because the ring buffer was full.
    pub ring_buffer_drops: u64,
    /// Samples whose kernel stack could not be captured.
    pub kernel_stack_failures: u64,
    pub hotspots: Vec<HotspotRow>,
    pub threads: Vec<ThreadRow>,
    /// Objects whose unwind tables were parsed for this audit (every
    /// collector's stacks included), with how many times: once each.
    pub unwind_tables: Vec<UnwindTableParses>,
    /// CPU cores per thread role over time (time-stamped samples only:
    /// `--unwind dwarf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<CpuTimeline>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct UnwindTableParses {
    pub object: String,
    pub parses: u32,
}

/// report.json `cpu.timeline`: CPU cores used per thread role and bucket
/// (samples / (frequency x bucket width)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CpuTimeline {
    /// Width of each bucket, seconds.
    pub interval_s: f64,
    /// Series, in plotting order (bottom first): roles that had samples.
    pub roles: Vec<String>,
    pub points: Vec<CpuTimelinePoint>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CpuTimelinePoint {
    /// Start of the bucket, seconds since collection started.
    pub t_s: f64,
    /// CPU cores per role, in the order of `roles`.
    pub cores: Vec<f64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct HotspotRow {
    pub function: String,
    pub self_pct: f64,
    pub total_pct: f64,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub self_samples: u64,
    pub total_samples: u64,
    /// owner | dependency | native | kernel | unknown
    pub origin: Origin,
    pub recommendation: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ThreadRow {
    pub name: String,
    pub samples: u64,
    pub pct: f64,
}

/// How user stacks are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnwindMode {
    /// The kernel walks frame pointers (`bpf_get_stackid`).
    #[default]
    FramePointer,
    /// The kernel copies registers and the stack; the agent unwinds with
    /// the binaries' `.eh_frame` (no frame pointers needed).
    Dwarf,
}

impl UnwindMode {
    pub fn describe(self) -> &'static str {
        match self {
            UnwindMode::FramePointer => "frame pointers (kernel bpf_get_stackid)",
            UnwindMode::Dwarf => "dwarf (.eh_frame, 64 KiB user stack copy per sample, unwound by the agent)",
        }
    }
}
