//! The audit report: one data structure ([`Report`], serialized as
//! `report.json`), and renderers that turn it into text. Renderers are pure
//! and deterministic: the same report gives the same bytes.

pub mod alerts;
pub mod html;
mod database_md;
mod memory_md;
pub mod markdown;
mod offcpu;
mod page;
pub mod plots;
pub mod summary;
pub mod timeline;
pub mod ci_workflow;
pub mod schema;

pub use schema::*;

use crate::{
    findings::{Finding, Severity},
    evidence::Counters,
    profile::{Origin, hotspots::Hotspot},
};

fn hotspot_recommendation(h: &Hotspot) -> String {
    match h.origin {
        Origin::Owner => crate::findings::cpu_hotspot_advice(h),
        Origin::Kernel => "time in the kernel: see the calling user frame in the flamegraph".to_string(),
        Origin::Dependency if h.on_blocking_pool_pct >= 50.0 && !is_runtime_code(&h.function) => {
            let how = h.handed_off_by.as_deref().unwrap_or("the blocking pool");
            let known = crate::findings::known_costs::lookup(&[(h.function.clone(), h.self_samples)], h.self_samples)
                .map(|(k, _)| format!(": {}", k.advice_for(h.on_blocking_pool_pct)))
                .unwrap_or_default();
            format!(
                "your code's work on the blocking pool, handed off with {how} ({:.0}% of its samples): `{}` runs inside your closure, inlined into the runtime's task so no frame of yours shows (build with `debug = \"line-tables-only\"` to name it){known}",
                h.on_blocking_pool_pct,
                crate::profile::layers::crate_of(&h.function)
            )
        }
        Origin::Dependency => {
            "library or runtime code with no own frame above it (idle or runtime work)".to_string()
        }
        Origin::Native => {
            "native library code called by a framework or the runtime, with no frame of your own code above it".to_string()
        }
        Origin::Unknown => "code without symbols (no frame of your own code above it)".to_string(),
    }
}

/// The runtime's and std's own code (a pool thread parking, a condvar):
/// idle or runtime work wherever it runs.
fn is_runtime_code(function: &str) -> bool {
    matches!(crate::profile::layers::crate_of(function), "tokio" | "std" | "core" | "alloc" | "parking_lot" | "parking_lot_core" | "crossbeam_channel" | "crossbeam_utils" | "futures_util" | "mio")
}

pub use crate::profile::round2;

/// The memory section's markdown alone (tests of its tables).
#[cfg(test)]
pub(crate) fn memory_md_for_tests(m: &crate::memory::section::MemorySection) -> String {
    let mut md = String::new();
    memory_md::markdown(&mut md, m, &[]);
    md
}

impl CpuSection {
    /// The section from measured data; `limit` hotspot rows.
    pub fn build(
        counters: &Counters,
        unwinding: UnwindMode,
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
            unwind_tables: Vec::new(),
            timeline: None,
        }
    }
}

impl Report {
    pub fn findings_of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}
