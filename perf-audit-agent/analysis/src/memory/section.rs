//! The memory section of the report (`report.json` `memory`), built from
//! what the collector measured and the model's analysis. Pure.

use super::{
    MemoryEvidence, MemoryMode,
    analysis::{AllocatorRow, Analysis, Fit, GrowthRow, LeakRow},
};
use super::faults::{MappingSection, PageFaultSection, RssSeries};
use crate::evidence::MemCounters;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct MemorySection {
    /// `VmHWM`: the largest resident set the process has had.
    pub peak_rss_bytes: u64,
    /// `VmRSS` at the end of the audit.
    pub current_rss_bytes: u64,
    /// `default` or `precise`.
    pub mode: String,
    /// How the numbers were sampled, in one sentence.
    pub sampling: String,
    /// Share of the audit allocations were recorded (the sampling rate),
    /// percent; 100 in precise mode.
    pub recorded_time_pct: f64,
    /// Share of the audit any allocator probe was attached (what the
    /// target paid for), percent.
    pub probed_time_pct: f64,
    pub windows: u64,
    /// Default mode: what the first moments measured and how recording
    /// went on (continuous or windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<super::Recording>,
    /// Seconds collected.
    pub elapsed_s: f64,
    /// Which allocator was probed, and in which file.
    pub allocator: String,
    /// The file the probes are in.
    pub allocator_object: String,
    pub probes: Vec<ProbeRow>,
    /// Rust allocator shims found in the executable (they forward to the
    /// allocator above, which is what is probed).
    pub rust_allocator_shims: Vec<String>,
    /// Allocator calls seen while probes were attached (not scaled).
    pub alloc_calls_observed: u64,
    pub free_calls_observed: u64,
    /// Estimated over the whole audit.
    pub total_allocations: u64,
    pub total_bytes: u64,
    /// Events that could not be recorded, by cause.
    pub dropped: Dropped,
    /// Frees of blocks allocated before the audit or outside a window.
    pub untracked_frees: u64,
    pub sites: usize,
    pub sites_without_stack: usize,
    pub truncated_stacks: u64,
    /// What the probes cost the target, measured from its kernel time.
    pub probe_cost: ProbeCost,
    /// Least-squares fit of the process RSS over the audit (bytes/s): the
    /// fit of `rss_series`, which is read every 500 ms.
    pub rss_growth: Option<Fit>,
    pub top_allocators: Vec<AllocatorRow>,
    pub leak_candidates: Vec<LeakRow>,
    pub growth: Vec<GrowthRow>,
    /// Sampled page faults per owner function ("memory first touched"),
    /// continuous in both modes.
    pub page_faults: PageFaultSection,
    /// mmap/munmap/brk: every call counted, large ones per call site.
    pub mappings: MappingSection,
    /// RSS, anonymous memory and heap size every 500 ms, with fits.
    pub rss_series: RssSeries,
}

/// The continuous (non-probe) parts of the memory section.
#[derive(Debug, Clone)]
pub struct GrowthSections {
    pub page_faults: PageFaultSection,
    pub mappings: MappingSection,
    pub rss_series: RssSeries,
}

/// The probes' cost, measured on the target: probe hits run in its context
/// and are charged to its kernel (system) time, so the cost is its kernel
/// time during the collection beyond its rate once every probe was gone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ProbeCost {
    /// The target's kernel CPU seconds during the collection.
    pub kernel_s_during: f64,
    /// Its kernel CPU seconds per second after the probes were closed
    /// (`null` when it had exited: then the whole kernel time is counted,
    /// an upper bound).
    pub kernel_rate_after: Option<f64>,
    /// Kernel seconds beyond that rate: the probes' cost.
    pub probe_s: f64,
    /// `probe_s` as a share of one core over the collection, percent.
    pub pct_of_core: f64,
    /// `probe_s` per probed call (allocations and frees seen), µs; precise
    /// mode only: in default mode, breakpoints still hit while the links
    /// close after a window cost time but are not recorded.
    pub per_call_us: Option<f64>,
    /// One sentence for the report.
    pub summary: String,
}

impl ProbeCost {
    fn measure(raw: &MemoryEvidence) -> ProbeCost {
        let k = raw.kernel_time;
        let rate_after = k.after.filter(|(_, wall)| *wall > 0.0).map(|(s, wall)| s / wall);
        let probe_s = (k.during_s - rate_after.unwrap_or(0.0) * k.during_wall_s).max(0.0);
        let pct = probe_s / k.during_wall_s.max(1e-9) * 100.0;
        let calls = raw.counters.alloc_calls + raw.counters.free_calls;
        let per_call_us = (calls > 0 && (raw.mode == MemoryMode::Precise || raw.duty >= 1.0)).then(|| probe_s * 1e6 / calls as f64);
        let baseline = match rate_after {
            Some(r) => format!("{:.1} ms/s once the probes were gone, measured over {:.1} s after closing them", r * 1e3, k.after.map(|a| a.1).unwrap_or(0.0)),
            None => "the target exited before a rate without probes could be measured, so all of it is counted (an upper bound)".to_string(),
        };
        let summary = format!(
            "measured on the target: {:.2} s of kernel time over the {:.1} s of collection against {baseline}: the probes cost {probe_s:.2} s ({pct:.1}% of one core){}{}",
            k.during_s,
            k.during_wall_s,
            per_call_us.map(|us| format!(", {us:.2} µs per probed call ({calls} allocator calls and frees seen)")).unwrap_or_default(),
            if raw.mode == MemoryMode::Default && raw.recording.as_ref().is_none_or(|r| r.kind == super::RecordingKind::Windows) {
                " (windows, and breakpoints still hit while their links close after each window)"
            } else {
                "; a CPU profile taken at the same time charges this time to the allocating functions"
            }
        );
        ProbeCost {
            kernel_s_during: crate::profile::round2(k.during_s),
            kernel_rate_after: rate_after.map(|r| (r * 1e4).round() / 1e4),
            probe_s: crate::profile::round2(probe_s),
            pct_of_core: crate::profile::round2(pct),
            per_call_us: per_call_us.map(|us| (us * 100.0).round() / 100.0),
            summary,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ProbeRow {
    pub symbol: String,
    pub offset: u64,
    pub instruction: String,
    /// Emulated by the kernel (cheap) rather than single-stepped.
    pub emulated: bool,
    pub uretprobe: bool,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Dropped {
    pub live_map_full: u64,
    pub site_map_full: u64,
    pub stack_ring_full: u64,
    pub pending_lost: u64,
    pub total: u64,
}

impl Dropped {
    fn from(c: &MemCounters) -> Dropped {
        let total = c.live_map_full + c.site_map_full + c.stack_ring_full + c.pending_lost;
        Dropped {
            live_map_full: c.live_map_full,
            site_map_full: c.site_map_full,
            stack_ring_full: c.stack_ring_full,
            pending_lost: c.pending_lost,
            total,
        }
    }
}

impl MemorySection {
    pub fn build(raw: &MemoryEvidence, analysis: Analysis, growth: GrowthSections) -> MemorySection {
        let continuous = raw.recording.as_ref().is_some_and(|r| r.kind == super::RecordingKind::Continuous);
        let sampling = match raw.mode {
            MemoryMode::Default if continuous => format!(
                "every allocator call recorded for the whole {:.1} s audit (counts are exact): {}",
                raw.elapsed_s,
                raw.recording.as_ref().map(|r| r.reason.as_str()).unwrap_or_default()
            ),
            MemoryMode::Default => format!(
                "allocations recorded in {} ms windows every {} s ({} windows: {:.1}% of the {:.1} s audit; probes attached {:.1}% of the time, detached in between); every count is scaled by {:.1}x, and a free seen in a later window than its allocation by {:.0}x",
                super::DEFAULT_WINDOW.as_millis(),
                super::DEFAULT_PERIOD.as_secs_f64(),
                raw.windows,
                raw.duty * 100.0,
                raw.elapsed_s,
                raw.probed_s / raw.elapsed_s.max(1e-9) * 100.0,
                1.0 / raw.duty,
                1.0 / (raw.duty * raw.duty),
            ) + &raw.recording.as_ref().map(|r| format!(" ({})", r.reason)).unwrap_or_default(),
            MemoryMode::Precise => format!(
                "every allocator call probed for the whole {:.1} s audit: counts are exact",
                raw.elapsed_s
            ),
        };
        MemorySection {
            peak_rss_bytes: raw.peak_rss_bytes,
            current_rss_bytes: raw.current_rss_bytes,
            mode: raw.mode.as_str().to_string(),
            sampling,
            recorded_time_pct: crate::profile::round2(raw.duty * 100.0),
            probed_time_pct: crate::profile::round2(raw.probed_s / raw.elapsed_s.max(1e-9) * 100.0),
            windows: raw.windows,
            recording: raw.recording.clone(),
            elapsed_s: crate::profile::round2(raw.elapsed_s),
            allocator: format!("{} in {}", raw.allocator_family, raw.allocator_object),
            allocator_object: raw.allocator_object.clone(),
            probes: raw.probes.clone(),
            rust_allocator_shims: raw.rust_shims.clone(),
            alloc_calls_observed: raw.counters.alloc_calls,
            free_calls_observed: raw.counters.free_calls,
            total_allocations: analysis.total_allocations,
            total_bytes: analysis.total_bytes,
            dropped: Dropped::from(&raw.counters),
            untracked_frees: raw.counters.free_untracked,
            sites: raw.sites,
            sites_without_stack: analysis.sites_without_stack,
            truncated_stacks: raw.truncated_stacks,
            probe_cost: ProbeCost::measure(raw),
            rss_growth: growth.rss_series.rss_fit,
            top_allocators: analysis.top_allocators,
            leak_candidates: analysis.leak_candidates,
            growth: analysis.growth,
            page_faults: growth.page_faults,
            mappings: growth.mappings,
            rss_series: growth.rss_series,
        }
    }
}
