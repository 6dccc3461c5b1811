//! The memory section of the report (`report.json` `memory`), built from
//! what the collector measured and the model's analysis. Pure.

use super::{
    MemoryMode, MemoryRaw,
    analysis::{AllocatorRow, Analysis, Fit, GrowthRow, LeakRow, least_squares},
};
use super::faults::{MappingSection, PageFaultSection, RssSeries};
use crate::kernel::memory::{CallShape, MemCounters, ProbePoint};

/// Measured cost of one probe hit on this machine class (see
/// `cargo xtask bench memory` and ARCHITECTURE.md): an emulated entry probe
/// with our program, a uretprobe, and a single-stepped probe.
pub const EMULATED_HIT_US: f64 = 1.0;
pub const RETURN_HIT_US: f64 = 1.5;
pub const SINGLE_STEP_HIT_US: f64 = 10.0;

#[derive(Debug, Clone, serde::Serialize)]
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
    /// Seconds collected.
    pub elapsed_s: f64,
    /// Which allocator was probed, and in which file.
    pub allocator: String,
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
    /// Target CPU time spent in the probes, estimated from the calls seen
    /// and the measured cost per hit, as a share of the audit's wall time
    /// on one core.
    pub estimated_probe_cost_pct: f64,
    pub estimated_probe_cost: String,
    /// Least-squares fit of the process RSS over the audit (bytes/s).
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeRow {
    pub symbol: String,
    pub offset: u64,
    pub instruction: String,
    /// Emulated by the kernel (cheap) rather than single-stepped.
    pub emulated: bool,
    pub uretprobe: bool,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
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

fn probe_cost_us(probe: &ProbePoint) -> f64 {
    let entry = if probe.emulated { EMULATED_HIT_US } else { SINGLE_STEP_HIT_US };
    if probe.shape == CallShape::Free { entry } else { entry + RETURN_HIT_US }
}

impl MemorySection {
    pub fn build(raw: &MemoryRaw, analysis: Analysis, growth: GrowthSections) -> MemorySection {
        let plan = &raw.allocator;
        let sampling = match raw.mode {
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
            ),
            MemoryMode::Precise => format!(
                "every allocator call probed for the whole {:.1} s audit: counts are exact",
                raw.elapsed_s
            ),
            MemoryMode::EntryProbes => format!(
                "benchmark baseline: every allocator call probed at the function entry for the whole {:.1} s audit",
                raw.elapsed_s
            ),
        };
        // Cost: the calls seen, each at the measured cost of its probe kind.
        // Most calls go to the family's first allocating and freeing entry
        // points (malloc/free, mi_malloc/mi_free...).
        let first = |free: bool| plan.probes.iter().find(|p| (p.shape == CallShape::Free) == free).map(probe_cost_us).unwrap_or(0.0);
        let (alloc_cost, free_cost) = (first(false), first(true));
        let cost_s = (raw.counters.alloc_calls as f64 * alloc_cost + raw.counters.free_calls as f64 * free_cost) / 1e6;
        let cost_pct = cost_s / raw.elapsed_s.max(1e-9) * 100.0;
        let rss_points: Vec<(f64, f64)> = raw.rss.iter().map(|(t, b)| (*t, *b as f64)).collect();
        MemorySection {
            peak_rss_bytes: raw.peak_rss_bytes,
            current_rss_bytes: raw.current_rss_bytes,
            mode: raw.mode.as_str().to_string(),
            sampling,
            recorded_time_pct: crate::report::round2(raw.duty * 100.0),
            probed_time_pct: crate::report::round2(raw.probed_s / raw.elapsed_s.max(1e-9) * 100.0),
            windows: raw.windows,
            elapsed_s: crate::report::round2(raw.elapsed_s),
            allocator: format!("{} in {}", plan.family.name(), plan.object.display()),
            probes: plan
                .probes
                .iter()
                .map(|p| ProbeRow {
                    symbol: p.symbol.clone(),
                    offset: p.probe_offset,
                    instruction: p.instruction.clone(),
                    emulated: p.emulated,
                    uretprobe: p.shape != CallShape::Free,
                })
                .collect(),
            rust_allocator_shims: plan.rust_shims.clone(),
            alloc_calls_observed: raw.counters.alloc_calls,
            free_calls_observed: raw.counters.free_calls,
            total_allocations: analysis.total_allocations,
            total_bytes: analysis.total_bytes,
            dropped: Dropped::from(&raw.counters),
            untracked_frees: raw.counters.free_untracked,
            sites: raw.sites.len(),
            sites_without_stack: analysis.sites_without_stack,
            truncated_stacks: raw.truncated_stacks,
            estimated_probe_cost_pct: crate::report::round2(cost_pct),
            estimated_probe_cost: format!(
                "{} allocator calls and {} frees probed at ~{alloc_cost:.1} µs and ~{free_cost:.1} µs per hit (measured on this machine class): {cost_s:.2} s of target CPU over {:.1} s ({cost_pct:.1}% of one core){}",
                raw.counters.alloc_calls,
                raw.counters.free_calls,
                raw.elapsed_s,
                if raw.mode == MemoryMode::Default {
                    ""
                } else {
                    "; a CPU profile taken at the same time charges this probe time to the allocating functions"
                }
            ),
            rss_growth: least_squares(&rss_points).map(|f| Fit {
                slope: crate::report::round2(f.slope),
                intercept: f.intercept.round(),
                r2: (f.r2 * 1000.0).round() / 1000.0,
                points: f.points,
            }),
            top_allocators: analysis.top_allocators,
            leak_candidates: analysis.leak_candidates,
            growth: analysis.growth,
            page_faults: growth.page_faults,
            mappings: growth.mappings,
            rss_series: growth.rss_series,
        }
    }
}
