//! Two audits compared: [`facts`] reads each report.json tolerantly,
//! [`compare`] is the comparison with its noise rules, [`markdown`] and
//! [`flamegraph`] render `diff.md` and `diff.svg`, [`threshold`] parses
//! `--max-regression`. Reading the files and writing the outputs is the
//! agent's `diff` module.

pub mod compare;
pub mod facts;
pub mod flamegraph;
pub mod markdown;
pub mod threshold;

pub use compare::{AuditDiff, MetricChange, Verdict};
pub use threshold::Thresholds;
