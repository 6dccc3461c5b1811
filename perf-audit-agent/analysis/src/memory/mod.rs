//! The memory profile's model and analyses: allocation sites and their
//! types ([`types`]), top allocators, leaks and growth ([`analysis`]),
//! page faults, mappings and the RSS series ([`faults`]), the report
//! section ([`section`]); its markdown is `crate::report::memory_md`.

pub mod analysis;
pub mod faults;
pub mod section;
pub mod types;

use std::{collections::HashMap, time::Duration};

use perf_audit_common::memory::SiteStats;

use crate::{evidence::MemCounters, memory::section::ProbeRow};

/// Length of one probing window in default mode.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// A window starts every this often in default mode (2% of the time
/// recorded; closing the probes keeps the hottest ones ~0.3 s longer, see
/// the agent's `kernel::memory`).
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(5000);

/// `--memory` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryMode {
    /// Duty-cycled allocator probes (2% of the time), estimates scaled up.
    #[default]
    Default,
    /// Allocator probes for the whole audit: every call counted.
    Precise,
}

impl MemoryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryMode::Default => "default",
            MemoryMode::Precise => "precise",
        }
    }

    /// Parses a `--memory` value.
    pub fn parse(s: &str) -> Option<MemoryMode> {
        match s {
            "default" => Some(MemoryMode::Default),
            "precise" => Some(MemoryMode::Precise),
            _ => None,
        }
    }
}

/// Per-site counters at one moment (cumulative since the start).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Seconds since collection started.
    pub t: f64,
    pub sites: HashMap<u64, SiteStats>,
}

/// The target's kernel (system) CPU time during the collection and right
/// after it. A uprobe hit (trap, handler, our program, emulation or single
/// step, the return trampoline) runs in the target's own context and is
/// charged to its system time; so the probes' cost is the kernel time
/// during the collection beyond the target's rate once they are gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelTime {
    /// Kernel seconds the target used from the start of the collection
    /// until every probe was closed.
    pub during_s: f64,
    /// Wall seconds of that span.
    pub during_wall_s: f64,
    /// Kernel seconds and wall seconds of the agent's unprobed baseline after every
    /// probe was closed; `None` when the target had exited.
    pub after: Option<(f64, f64)>,
}

/// What the memory collector measured, as the section needs it: the
/// agent's `MemoryRaw` without its maps, stacks and allocator plan.
#[derive(Debug, Clone)]
pub struct MemoryEvidence {
    pub mode: MemoryMode,
    /// The allocator family's name (`glibc malloc`, `jemalloc`...).
    pub allocator_family: String,
    /// The object it lives in.
    pub allocator_object: String,
    pub probes: Vec<ProbeRow>,
    pub rust_shims: Vec<String>,
    pub counters: MemCounters,
    /// Distinct allocation sites seen.
    pub sites: usize,
    pub truncated_stacks: u64,
    pub peak_rss_bytes: u64,
    pub current_rss_bytes: u64,
    pub duty: f64,
    pub recorded_s: f64,
    pub probed_s: f64,
    pub elapsed_s: f64,
    pub windows: u64,
    pub kernel_time: KernelTime,
    /// Default mode: how recording was decided from the first moments
    /// (`None` in precise mode).
    pub recording: Option<Recording>,
}

/// Default mode's probe: how long the allocator probes record first, to
/// measure the allocation rate before deciding how to go on.
pub const PROBE_WINDOW: Duration = Duration::from_millis(250);

/// Continuous recording is kept when its estimated cost is at most this
/// share of one core (percent). Measured here (kernel 6.18, glibc, every
/// probe emulated): precise mode costs 2.07 µs per probed call on the
/// diesel fixture at 50 rps (17k calls/s: 3.1% of a core, p99 within
/// 1.2x) and 1.95 µs on the demo at 100 rps (86k calls/s: 15% of a core,
/// p99 1.5x). 5% is ~24k calls/s, ~12k allocations/s with their frees;
/// above it, windows cost less than the traps of always-attached probes.
pub const CONTINUOUS_BUDGET_PCT: f64 = 5.0;

/// Estimated cost of one probed call, µs: an emulated entry probe and the
/// program (measured 1.95-2.07 µs a call, allocations and frees together,
/// see [`CONTINUOUS_BUDGET_PCT`]); a single-stepped entry (jemalloc's and
/// mimalloc's fast paths) ~9 µs more (ARCHITECTURE.md, "what a uprobe
/// costs").
pub const EMULATED_CALL_US: f64 = 2.1;
pub const SINGLE_STEPPED_CALL_US: f64 = 11.0;

/// How default mode records allocations, decided after [`PROBE_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingKind {
    /// Probes attached and recording for the whole audit: no link churn.
    #[default]
    Continuous,
    /// Probes attached only in windows (attach/detach per window).
    Windows,
    /// Probes attached for the whole audit, recording only in windows (a
    /// map flag the programs check): no link churn, a trap per call. Only
    /// on request (`PERF_AUDIT_MEMORY_RECORDING=gated`), to measure it.
    Gated,
    /// Probes attached for the whole audit, never recording after the
    /// first moments: the cost floor of always-attached probes (traps and
    /// programs that return at once). Benchmarks only
    /// (`PERF_AUDIT_MEMORY_RECORDING=floor`).
    Floor,
}

impl RecordingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingKind::Continuous => "continuous",
            RecordingKind::Windows => "windows",
            RecordingKind::Gated => "gated",
            RecordingKind::Floor => "floor",
        }
    }

    pub fn parse(s: &str) -> Option<RecordingKind> {
        match s {
            "continuous" => Some(RecordingKind::Continuous),
            "windows" => Some(RecordingKind::Windows),
            "gated" => Some(RecordingKind::Gated),
            "floor" => Some(RecordingKind::Floor),
            _ => None,
        }
    }
}

/// What the probe measured and what was decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Recording {
    pub kind: RecordingKind,
    /// Seconds the probe recorded.
    pub probe_s: f64,
    /// Allocator calls and frees seen during the probe, per second.
    pub calls_per_s: f64,
    /// Estimated cost per call (µs) from where the probes sit.
    pub per_call_us: f64,
    /// Estimated cost of recording continuously, percent of one core.
    pub continuous_cost_pct: f64,
    pub budget_pct: f64,
    /// Page faults and mmap/munmap/brk calls of the target during the
    /// probe, per second (context for the decision; they are recorded
    /// continuously in every mode).
    pub faults_per_s: f64,
    pub mappings_per_s: f64,
    /// Set when the kind was forced (`PERF_AUDIT_MEMORY_RECORDING`).
    pub forced: bool,
    /// Continuous recording switched to windows at this second (its rate
    /// rose past twice the budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_at_s: Option<f64>,
    /// The decision in one sentence.
    pub reason: String,
}

impl Recording {
    /// Decides from the probe: continuous when its estimated cost is within
    /// [`CONTINUOUS_BUDGET_PCT`] of one core, else windows.
    pub fn decide(probe_s: f64, calls: u64, per_call_us: f64, faults_per_s: f64, mappings_per_s: f64, forced: Option<RecordingKind>) -> Recording {
        let calls_per_s = calls as f64 / probe_s.max(1e-3);
        let cost = calls_per_s * per_call_us / 1e4;
        let kind = forced.unwrap_or(if cost <= CONTINUOUS_BUDGET_PCT { RecordingKind::Continuous } else { RecordingKind::Windows });
        let why = match (forced, kind) {
            (Some(k), _) => format!("{} (forced by PERF_AUDIT_MEMORY_RECORDING)", k.as_str()),
            (None, RecordingKind::Continuous) => format!("within the {CONTINUOUS_BUDGET_PCT:.0}% budget: probes kept attached for the whole audit (no attach or detach after the first moments), every call counted"),
            (None, _) => format!("over the {CONTINUOUS_BUDGET_PCT:.0}% budget: probes attached in {} ms windows every {} s, estimates scaled up", DEFAULT_WINDOW.as_millis(), DEFAULT_PERIOD.as_secs()),
        };
        Recording {
            kind,
            probe_s: (probe_s * 1000.0).round() / 1000.0,
            calls_per_s: calls_per_s.round(),
            per_call_us,
            continuous_cost_pct: (cost * 100.0).round() / 100.0,
            budget_pct: CONTINUOUS_BUDGET_PCT,
            faults_per_s: faults_per_s.round(),
            mappings_per_s: mappings_per_s.round(),
            forced: forced.is_some(),
            switched_at_s: None,
            reason: format!(
                "{calls} allocator calls and frees in the first {:.0} ms ({:.0}/s; {:.0} page faults/s, {:.0} mmap/munmap/brk/s): recording them all would cost ~{:.1}% of one core at {per_call_us:.1} µs a call, {why}",
                probe_s * 1000.0,
                calls_per_s,
                faults_per_s,
                mappings_per_s,
                cost,
            ),
        }
    }
}

#[cfg(test)]
mod recording_tests {
    use super::*;

    #[test]
    fn a_moderate_rate_records_continuously_and_a_high_one_in_windows() {
        // The diesel fixture at 50 rps: ~17k calls/s.
        let r = Recording::decide(0.25, 4_300, EMULATED_CALL_US, 10.0, 1.0, None);
        assert_eq!(r.kind, RecordingKind::Continuous, "{r:?}");
        assert!(r.reason.contains("17200/s") && r.reason.contains("3.6% of one core"), "{}", r.reason);
        // The demo at 100 rps: ~86k calls/s.
        let r = Recording::decide(0.25, 21_500, EMULATED_CALL_US, 10.0, 1.0, None);
        assert_eq!(r.kind, RecordingKind::Windows, "{r:?}");
        // Single-stepped probes cost 5x: the same moderate rate is too much.
        let r = Recording::decide(0.25, 4_300, SINGLE_STEPPED_CALL_US, 0.0, 0.0, None);
        assert_eq!(r.kind, RecordingKind::Windows, "{r:?}");
        let r = Recording::decide(0.25, 21_500, EMULATED_CALL_US, 0.0, 0.0, Some(RecordingKind::Gated));
        assert!(r.forced && r.kind == RecordingKind::Gated, "{r:?}");
    }
}
