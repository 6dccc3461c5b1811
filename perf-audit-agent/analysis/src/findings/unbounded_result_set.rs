//! `unbounded-result-set`: a SELECT without LIMIT whose calls return many
//! rows each (`pg_stat_statements` rows / calls), e.g. a handler loading a
//! whole table per request. Its cost grows with the table: rows read, sent,
//! decoded and serialized per call. P1 (P0 from ten times the threshold).

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};
use crate::database::thresholds::{UNBOUNDED_MIN_CALLS, UNBOUNDED_MIN_ROWS_PER_CALL, bounded, is_select};

#[derive(Default)]
pub struct UnboundedResultSet;

/// Share of its table a filtered statement must return per call to be
/// "the table" rather than a filtered set (a customer's orders).
pub const TABLE_SHARE: f64 = 0.10;

/// The rows come from the table as a whole, so they grow with it: no
/// WHERE clause, or a filter that still returns at least [`TABLE_SHARE`]
/// of the table per call. Never a lookup by a list the caller bound
/// (`= ANY($n)`, `IN ($n, ...)`: a deliberate prefetch, one query instead
/// of N, whose rows are bounded by that list).
fn grows_with_the_table(query: &str, per_call: f64, tables: &[crate::database::schema::TableRow]) -> bool {
    let q = format!(" {} ", query.to_ascii_uppercase().split_whitespace().collect::<Vec<_>>().join(" "));
    if q.contains("ANY($") || q.contains("ANY ($") || q.contains(" IN ($") || q.contains(" IN( $") || q.contains(" IN($") {
        return false;
    }
    if !q.contains(" WHERE ") {
        return true;
    }
    crate::database::thresholds::from_table(query)
        .and_then(|t| tables.iter().find(|r| r.table == t))
        .is_some_and(|t| t.rows > 0 && per_call >= TABLE_SHARE * t.rows as f64)
}

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
                if per_call < UNBOUNDED_MIN_ROWS_PER_CALL || !grows_with_the_table(&s.query, per_call, &db.tables) {
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
                        "return a page, not the table: {}, with keyset pagination (`WHERE key > $last ORDER BY key`), select only the columns sent, or aggregate in SQL if the rows are only counted or summed; if the caller must receive every row (an export, a sync protocol), stream them (`fetch` as a stream, a cursor) instead of holding the table in memory",
                        match paged {
                            Some(p) => format!("`{p}` (PostgreSQL parsed and planned this rewrite)"),
                            None => "add `LIMIT $n`".to_string(),
                        }
                    ),
                    impact: if severity == Severity::P0 { Level::High } else { Level::Medium },
                    complexity: Complexity::Medium,
                    estimated_gain: format!("rows per call from {per_call:.0} to one page; the cost stops growing with the table"),
                    ranking: format!(
                        "a SELECT without LIMIT returning at least {UNBOUNDED_MIN_ROWS_PER_CALL:.0} rows per call over at least {UNBOUNDED_MIN_CALLS} calls, from the whole table (no WHERE, or at least {:.0}% of the table per call; never a lookup by a bound list): P1, P0 from {:.0} rows per call",
                        TABLE_SHARE * 100.0,
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
