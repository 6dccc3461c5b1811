//! The audit report: one data structure ([`Report`], serialized as
//! `report.json`), and renderers that turn it into text. Renderers are pure
//! and deterministic: the same report gives the same bytes.

pub mod alerts;
pub mod html;
mod database_md;
pub mod markdown;
mod offcpu;
mod page;
pub mod plots;
pub mod summary;
pub mod timeline;

use crate::{
    findings::{Finding, Severity},
    kernel::Counters,
    profile::{Origin, hotspots::Hotspot},
    target::TargetInfo,
};

pub const SCHEMA_VERSION: u32 = 1;

/// Why collection stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The planned duration elapsed.
    Duration,
    /// The user pressed Ctrl-C.
    Interrupted,
    /// The target exited: the report covers only the time it ran.
    TargetExited,
}

#[derive(Debug, Clone, serde::Serialize)]
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
    /// Profiles asked for that this build does not collect yet.
    pub unavailable_profiles: Vec<String>,
    pub kernel: KernelInfo,
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
    pub database: Option<crate::database::DatabaseSection>,
    /// The memory profile (allocation tables, leaks, growth).
    pub memory: Option<crate::memory::section::MemorySection>,
    pub findings: Vec<Finding>,
    /// The command that re-runs this audit.
    pub rerun_command: String,
    /// `--bench`: the service's criterion benchmarks (see `bench`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub benchmarks: Vec<crate::bench::BenchmarkRow>,
}

/// The seed's "Baseline metrics": load results when the audit drove load,
/// and the target's resource use from /proc in every case.
#[derive(Debug, Clone, Default, serde::Serialize)]
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
    pub load: Option<crate::load::LoadResult>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AsyncSection {
    #[serde(flatten)]
    pub analysis: crate::profile::async_runtime::AsyncAnalysis,
    pub long_poll_threshold_ms: f64,
    pub console: ConsoleInfo,
}

/// tokio-console (console-subscriber) status of the target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsoleInfo {
    pub address: String,
    /// Something accepted a TCP connection at the address.
    pub listening: bool,
    pub note: String,
    /// Task counts, spawn locations, poll times and warnings, when read.
    pub summary: Option<crate::console::ConsoleSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OffCpuSection {
    /// Blocking intervals at least this long were captured with stacks.
    pub capture_threshold_ms: f64,
    pub captured_intervals: u64,
    pub captured_ms: f64,
    /// Shorter intervals: counted, not stack-attributed.
    pub short_intervals: u64,
    pub short_ms: f64,
    pub dropped_intervals: u64,
    /// Per thread: on-CPU, blocked, run-queue time.
    pub threads: Vec<OffCpuThreadRow>,
    /// The heaviest blocking stacks (innermost owner frame and syscall).
    pub top: Vec<OffCpuRow>,
}

#[derive(Debug, Clone, serde::Serialize)]
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct OffCpuRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub syscall: String,
    pub thread: String,
    pub intervals: u64,
    pub blocked_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelInfo {
    pub release: String,
    pub btf: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuSection {
    /// Samples that hit the target's threads.
    pub total_samples: u64,
    /// Samples lost in the kernel (aggregation map full).
    pub dropped_samples: u64,
    pub frequency_hz: u64,
    /// How user stacks were unwound: `frame-pointer` or `dwarf`.
    pub unwinding: crate::kernel::UnwindMode,
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
    /// CPU cores per thread role over time (time-stamped samples only:
    /// `--unwind dwarf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<timeline::CpuTimeline>,
}

#[derive(Debug, Clone, serde::Serialize)]
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreadRow {
    pub name: String,
    pub samples: u64,
    pub pct: f64,
}

impl CpuSection {
    /// The section from measured data; `limit` hotspot rows.
    pub fn build(
        counters: &Counters,
        unwinding: crate::kernel::UnwindMode,
        stack_completeness: f64,
        frequency_hz: u64,
        hotspots: &[Hotspot],
        threads: Vec<(String, u64)>,
        limit: usize,
    ) -> CpuSection {
        let stored: u64 = threads.iter().map(|(_, n)| n).sum();
        let rows = hotspots
            .iter()
            .take(limit)
            .map(|h| HotspotRow {
                function: h.function.clone(),
                self_pct: round2(h.self_pct),
                total_pct: round2(h.total_pct),
                file: h.file.clone(),
                line: h.line,
                self_samples: h.self_samples,
                total_samples: h.total_samples,
                origin: h.origin,
                recommendation: hotspot_recommendation(h),
            })
            .collect();
        let threads = threads
            .into_iter()
            .map(|(name, samples)| ThreadRow {
                pct: if stored == 0 { 0.0 } else { round2(samples as f64 * 100.0 / stored as f64) },
                name,
                samples,
            })
            .collect();
        CpuSection {
            total_samples: counters.cpu_samples,
            dropped_samples: counters.cpu_samples_dropped_map_full + counters.cpu_samples_dropped_ring_full,
            frequency_hz,
            unwinding,
            stack_completeness_pct: round2(stack_completeness * 100.0),
            user_stack_failures: counters.cpu_user_stack_failed + counters.cpu_user_stack_copy_failed,
            ring_buffer_drops: counters.cpu_samples_dropped_ring_full,
            kernel_stack_failures: counters.cpu_kernel_stack_failed,
            hotspots: rows,
            threads,
            timeline: None,
        }
    }
}

fn hotspot_recommendation(h: &Hotspot) -> String {
    match h.origin {
        Origin::Owner => {
            let kind = crate::findings::cpu_hotspot_kind(&h.callees);
            crate::findings::cpu_hotspot_recommendation(kind, h)
        }
        Origin::Kernel => "time in the kernel: see the calling user frame in the flamegraph".to_string(),
        Origin::Dependency => {
            "library or runtime code with no own frame above it (idle or runtime work)".to_string()
        }
        Origin::Native => {
            "native library code called by a framework or the runtime, with no frame of your own code above it".to_string()
        }
        Origin::Unknown => "code without symbols (no frame of your own code above it)".to_string(),
    }
}

pub use crate::profile::round2;

impl Report {
    pub fn findings_of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}
