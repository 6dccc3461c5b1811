//! report.json `overhead`: what the audit cost its target, measured while
//! it ran, against the `--max-overhead` budget, and what it switched off.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverheadSection {
    /// `--max-overhead` in percent of the target's CPU (`None`: measured
    /// only, never backs off).
    pub budget_pct: Option<f64>,
    /// Seconds the meter covered.
    pub measured_s: f64,
    /// The target's CPU use over that time, in cores.
    pub target_cores: f64,
    /// Kernel-side cost (our BPF programs + uprobe traps) over the whole
    /// audit, in percent of the target's CPU.
    pub kernel_pct: f64,
    /// The highest cost over one judging window.
    pub peak_window_pct: f64,
    /// The agent's own CPU use, in cores (not in the budget: it competes
    /// with the target only when no core is idle).
    pub agent_cores: f64,
    pub collectors: Vec<CollectorCost>,
    /// What was switched off to stay within the budget, in order.
    pub back_offs: Vec<BackOff>,
    /// Why the kernel-side cost could not be measured, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// How the cost is computed and judged, as the report states it.
    pub rule: String,
    /// The agent's threads' priority while the target was measured
    /// (`crate::priority` in the agent), e.g. "at nice 19".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_priority: Option<String>,
    /// What the agent's rings dropped during collection (an agent kept off
    /// the target's cores drains later), by ring: what its priority cost
    /// the report, not the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<RingDrops>,
}

/// One ring's records and drops over the collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RingDrops {
    pub ring: String,
    pub records: u64,
    pub dropped: u64,
}

/// One collector's kernel-side cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorCost {
    pub collector: String,
    /// CPU milliseconds per second of audit (programs + traps).
    pub cpu_ms_per_s: f64,
    pub target_cpu_pct: f64,
    /// Times its programs ran.
    pub program_runs: u64,
}

/// One step of the back-off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackOff {
    /// Seconds since collection started.
    pub at_s: f64,
    /// `memory`, `database`, or `none` (nothing left to switch off).
    pub collector: String,
    pub action: String,
    /// The cost over the judging window that triggered it.
    pub cost_pct: f64,
}
