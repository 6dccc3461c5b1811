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
}
