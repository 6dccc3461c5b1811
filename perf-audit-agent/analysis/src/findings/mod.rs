//! Findings: evidence measured on the target, turned into ranked advice.
//!
//! As in tokio-console's lints, each rule is a small type in its own file
//! with a `check` over the evidence. A rule never invents a finding: every
//! field of a [`Finding`] is filled from a measurement (a share of samples,
//! a byte count, a query time) and says which one in `evidence`. Severity is
//! decided from the measured impact, and `ranking` says how.

mod allocation_churn;
mod blocking_in_async;
pub(crate) mod cpu_heavy_in_async;
mod cpu_hotspot;
pub mod known_costs;
mod sync_lock_contention;
mod missing_index;
mod n_plus_one_query;
mod slow_query;
mod unused_index;
mod unbounded_result_set;
mod per_item_transaction;
mod chatty_requests;
mod transaction_held_open;
mod repeated_row_reads;
mod pool_waits;
#[cfg(test)]
mod precision_tests;
mod memory_leak;
mod unbounded_growth;

use crate::profile::{CpuProfile, hotspots::Hotspot};

pub use blocking_in_async::BlockingInAsync;
pub use cpu_heavy_in_async::CpuHeavyInAsync;
pub use sync_lock_contention::SyncLockContention;
pub use cpu_hotspot::{
    CpuHotspot, advice as cpu_hotspot_advice, classify as cpu_hotspot_kind, recommendation as cpu_hotspot_recommendation,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, Default)]
pub enum Severity {
    P0,
    P1,
    #[default]
    P2,
}

impl Severity {
    /// The severity as a text badge in markdown (`**P0**`): no emoji, which
    /// render as empty boxes without an emoji font; report.html draws it as
    /// a CSS badge (`report::page::markdown_html`).
    pub fn badge(self) -> &'static str {
        match self {
            Severity::P0 => "**P0**",
            Severity::P1 => "**P1**",
            Severity::P2 => "**P2**",
        }
    }

    /// From a measured share (percent) against two thresholds: P0 from
    /// `p0`, P1 from `p1`, P2 below.
    pub fn from_share(pct: f64, p0: f64, p1: f64) -> Severity {
        if pct >= p0 {
            Severity::P0
        } else if pct >= p1 {
            Severity::P1
        } else {
            Severity::P2
        }
    }

    /// The impact level that goes with a severity ranked from impact.
    pub fn impact(self) -> Level {
        match self {
            Severity::P0 => Level::High,
            Severity::P1 => Level::Medium,
            Severity::P2 => Level::Low,
        }
    }

    pub fn heading(self) -> &'static str {
        match self {
            Severity::P0 => "P0 - Critical (Immediate Fix Required)",
            Severity::P1 => "P1 - High Priority",
            Severity::P2 => "P2 - Nice to Have",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    #[default]
    Cpu,
    Memory,
    Async,
    Database,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub enum Level {
    #[default]
    High,
    Medium,
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub enum Complexity {
    #[default]
    Easy,
    Medium,
    Hard,
}

/// A before/after code sketch for the finding's own function.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CodeFix {
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Finding {
    /// Stable kebab-case id of the rule.
    pub rule: String,
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    /// Demangled, without hash; async bodies named after their fn.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// What was measured, with numbers.
    pub evidence: String,
    pub recommendation: String,
    pub impact: Level,
    pub complexity: Complexity,
    /// Upper bound of the gain, derived from the measurement.
    pub estimated_gain: String,
    /// How the severity was decided.
    pub ranking: String,
    pub code_fix: Option<CodeFix>,
    /// The measured lines of the owner's source around `file:line`, when
    /// the source is readable where the audit ran (filled by the engine).
    pub source: Option<SourceExcerpt>,
}

/// A few lines of the target's source code.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct SourceExcerpt {
    pub file: String,
    pub first_line: u32,
    pub text: String,
}

/// Everything the rules may look at. Collectors that did not run are `None`.
pub struct Evidence<'a> {
    pub cpu: Option<CpuEvidence<'a>>,
    pub async_runtime: Option<&'a crate::profile::async_runtime::AsyncAnalysis>,
    /// The database section (statistics and wire), when that profile ran.
    pub database: Option<&'a crate::database::schema::DatabaseSection>,
    pub memory: Option<MemoryEvidence<'a>>,
}

pub struct MemoryEvidence<'a> {
    pub section: &'a crate::memory::section::MemorySection,
}

pub struct CpuEvidence<'a> {
    pub profile: &'a CpuProfile,
    pub hotspots: &'a [Hotspot],
    pub total_samples: u64,
}

pub trait Rule {
    /// Stable id, as in `Finding::rule`.
    fn id(&self) -> &'static str;
    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding>;
}

/// The rules of this build, in no particular order (findings are sorted).
pub fn all_rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(CpuHotspot::default()),
        Box::new(BlockingInAsync::default()),
        Box::new(SyncLockContention::default()),
        Box::new(CpuHeavyInAsync::default()),
        Box::new(n_plus_one_query::NPlusOneQuery),
        Box::new(slow_query::SlowQuery::default()),
        Box::new(missing_index::MissingIndex),
        Box::new(unused_index::UnusedIndex),
        Box::new(unbounded_result_set::UnboundedResultSet),
        Box::new(per_item_transaction::PerItemTransaction),
        Box::new(chatty_requests::ChattyRequests),
        Box::new(transaction_held_open::TransactionHeldOpen),
        Box::new(repeated_row_reads::RepeatedRowReads),
        Box::new(pool_waits::PoolWaits),
        Box::new(memory_leak::MemoryLeak::default()),
        Box::new(unbounded_growth::UnboundedGrowth::default()),
        Box::new(allocation_churn::AllocationChurn::hot_path()),
        Box::new(allocation_churn::AllocationChurn::churn()),
    ]
}

/// Runs every rule and ranks the findings: severity, then measured impact
/// order as each rule emitted it, then function name for stability.
pub fn evaluate(evidence: &Evidence<'_>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = all_rules().iter().flat_map(|r| r.check(evidence)).collect();
    findings.sort_by_key(|a| a.severity);
    findings
}
