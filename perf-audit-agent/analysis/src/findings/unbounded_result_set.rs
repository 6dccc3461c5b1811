//! `unbounded-result-set`: a SELECT without LIMIT whose calls return many
//! rows each (`pg_stat_statements` rows / calls), e.g. a handler loading a
//! whole table per request. Its cost grows with the table: rows read, sent,
//! decoded and serialized per call. P1 (P0 from ten times the threshold).

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};
use crate::database::thresholds::{UNBOUNDED_MIN_CALLS, UNBOUNDED_MIN_ROWS_PER_CALL, bounded, is_select};

#[derive(Default)]
pub struct UnboundedResultSet;

impl Rule for UnboundedResultSet {
    fn id(&self) -> &'static str {
        "unbounded-result-set"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else {
            return Vec::new();
        };
        db.statements
            .iter()
            .filter(|s| is_select(&s.query) && !bounded(&s.query) && s.calls >= UNBOUNDED_MIN_CALLS)
            .filter_map(|s| {
                let rows = s.rows?;
                let per_call = rows as f64 / s.calls.max(1) as f64;
                if per_call < UNBOUNDED_MIN_ROWS_PER_CALL {
                    return None;
                }
                let site = s.call_sites.first();
                let candidate = crate::database::dialect::paged_query(&s.query);
                let paged = crate::database::dialect::checked(&db.rewrites, candidate.as_deref());
                let severity = if per_call >= 10.0 * UNBOUNDED_MIN_ROWS_PER_CALL { Severity::P0 } else { Severity::P1 };
                let table = crate::database::thresholds::from_table(&s.query)
                    .and_then(|t| db.tables.iter().find(|r| r.table == t))
                    .map(|t| format!("; {} has {} rows, so each call returns {:.0}% of it", t.table, t.rows, per_call * 100.0 / t.rows.max(1) as f64))
                    .unwrap_or_default();
                Some(Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Database,
                    title: format!("Unbounded result set: {per_call:.0} rows per call without LIMIT"),
                    function: site.map_or_else(|| "(not traced to code)".into(), |c| c.function.clone()),
                    file: site.and_then(|c| c.file.clone()),
                    line: site.and_then(|c| c.line),
                    evidence: format!(
                        "`{}` has no LIMIT and returned {rows} rows over {} calls ({per_call:.0} rows per call, pg_stat_statements){table}",
                        s.query, s.calls
                    ),
                    recommendation: format!(
                        "return a page, not the table: {}, with keyset pagination (`WHERE key > $last ORDER BY key`), select only the columns sent, or aggregate in SQL if the rows are only counted or summed",
                        match paged {
                            Some(p) => format!("`{p}` (PostgreSQL parsed and planned this rewrite)"),
                            None => "add `LIMIT $n`".to_string(),
                        }
                    ),
                    impact: if severity == Severity::P0 { Level::High } else { Level::Medium },
                    complexity: Complexity::Medium,
                    estimated_gain: format!("rows per call from {per_call:.0} to one page; the cost stops growing with the table"),
                    ranking: format!(
                        "a SELECT without LIMIT returning at least {UNBOUNDED_MIN_ROWS_PER_CALL:.0} rows per call over at least {UNBOUNDED_MIN_CALLS} calls: P1, P0 from {:.0} rows per call",
                        10.0 * UNBOUNDED_MIN_ROWS_PER_CALL
                    ),
                    code_fix: crate::database::dialect::paged_fix(crate::database::dialect::dominant(&db.wire.drivers), &s.query, paged)
                        .map(|(before, after)| CodeFix { before, after }),
                    source: None,
                })
            })
            .collect()
    }
}
