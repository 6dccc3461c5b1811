//! `missing-index`: a heavy statement whose generic plan scans a large
//! table sequentially to filter it, with no index on the filter columns.
//! The recommendation is a `CREATE INDEX CONCURRENTLY` (no write lock on a
//! live table); on the private database of the demo and the tests the gain
//! is measured as the plan's cost with and without the index. P1.

use super::{Category, Complexity, Evidence, Finding, Level, Rule, Severity};

#[derive(Default)]
pub struct MissingIndex;

impl Rule for MissingIndex {
    fn id(&self) -> &'static str {
        "missing-index"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        db.missing_indexes
            .iter()
            .map(|m| {
                let site = m.call_sites.first();
                let measured = match (m.cost_before, m.cost_after) {
                    (Some(b), Some(a)) if b > 0.0 => format!(
                        "; with the index the plan's cost drops from {b:.0} to {a:.0} ({:.0}% less, measured in a rolled-back transaction)",
                        (1.0 - a / b) * 100.0
                    ),
                    _ => String::new(),
                };
                Finding {
                    rule: self.id().to_string(),
                    severity: Severity::P1,
                    category: Category::Database,
                    title: format!("Missing index on {} ({})", m.table, m.columns.join(", ")),
                    function: site.map_or_else(|| "(not traced to code)".into(), |c| c.function.clone()),
                    file: site.and_then(|c| c.file.clone()),
                    line: site.and_then(|c| c.line),
                    evidence: format!(
                        "`{}` ({} calls, mean {}) scans all {} rows of {} sequentially with filter `{}`{measured}",
                        m.query,
                        m.calls,
                        m.mean_ms.map_or_else(|| "?".into(), |ms| format!("{ms:.2} ms")),
                        m.table_rows,
                        m.table,
                        m.filter
                    ),
                    recommendation: format!("`{}`", m.create_sql),
                    impact: Level::High,
                    complexity: Complexity::Easy,
                    estimated_gain: match (m.cost_before, m.cost_after) {
                        (Some(b), Some(a)) if a > 0.0 => format!("plan cost / {:.0}", b / a),
                        _ => "a sequential scan becomes an index scan".into(),
                    },
                    ranking: format!(
                        "P1: a filtered sequential scan of a large table in a frequent statement (advised for a SELECT with a mean of at least {} ms scanning a table of at least {} rows with a filter no index covers){}",
                        crate::database::thresholds::MISSING_INDEX_MIN_MEAN_MS,
                        crate::database::thresholds::MIN_TABLE_ROWS,
                        db.tables
                            .iter()
                            .find(|t| t.table == m.table)
                            .map(|t| format!("; during the audit {} had {} sequential scans reading {} rows", t.table, t.seq_scans, t.seq_rows_read))
                            .unwrap_or_default()
                    ),
                    code_fix: None,
                    source: None,
                }
            })
            .collect()
    }
}
