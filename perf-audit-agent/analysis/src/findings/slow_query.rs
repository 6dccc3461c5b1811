//! `slow-query`: a statement whose mean server time over the audit is
//! high (from the `pg_stat_statements` difference), named at the code that
//! issues it when the wire tied it to a call site. P1 when a call takes 100
//! ms or more, or the statement takes half of all database time; else P2.

use super::{Category, Complexity, Evidence, Finding, Level, Rule, Severity};

pub struct SlowQuery {
    pub min_mean_ms: f64,
    /// Calls during the audit from which a slow statement is a pattern: a
    /// statement run once (a migration, seeding at startup) is not a cost
    /// of serving requests.
    pub min_calls: i64,
}

impl Default for SlowQuery {
    fn default() -> Self {
        SlowQuery { min_mean_ms: 10.0, min_calls: 3 }
    }
}

/// Schema changes and maintenance (migrations, index builds, `setval`):
/// slow by nature and run at startup, never a request's query.
pub fn is_maintenance(query: &str) -> bool {
    let q = query.trim_start().to_ascii_uppercase();
    ["CREATE ", "ALTER ", "DROP ", "VACUUM", "ANALYZE", "REINDEX", "CLUSTER", "TRUNCATE", "COPY ", "COMMENT ", "GRANT ", "REVOKE ", "REFRESH MATERIALIZED", "SELECT SETVAL", "SELECT PG_"]
        .iter()
        .any(|k| q.starts_with(k))
}

impl Rule for SlowQuery {
    fn id(&self) -> &'static str {
        "slow-query"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        db.statements
            .iter()
            .filter_map(|s| {
                let mean = s.mean_ms?;
                if mean < self.min_mean_ms || s.calls < self.min_calls || is_maintenance(&s.query) {
                    return None;
                }
                let share = s.time_pct.unwrap_or(0.0);
                let severity = if mean >= 100.0 || share >= 50.0 { Severity::P1 } else { Severity::P2 };
                let site = s.call_sites.first();
                let index = db.missing_indexes.iter().find(|m| m.query == s.query);
                Some(Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Database,
                    title: format!("Slow query ({mean:.1} ms per call)"),
                    function: site.map_or_else(|| "(not traced to code)".into(), |c| c.function.clone()),
                    file: site.and_then(|c| c.file.clone()),
                    line: site.and_then(|c| c.line),
                    evidence: format!(
                        "`{}`: {} calls during the audit, mean {:.2} ms, max {:.2} ms, {:.1}% of database time (pg_stat_statements difference)",
                        s.query,
                        s.calls,
                        mean,
                        s.max_ms.unwrap_or(0.0),
                        share
                    ),
                    recommendation: match index {
                        Some(m) => format!("add the missing index: `{}`", m.create_sql),
                        None => "look at its plan with `EXPLAIN (ANALYZE, BUFFERS)`: a missing index, a sort or too many rows read".into(),
                    },
                    impact: if severity == Severity::P1 { Level::High } else { Level::Medium },
                    complexity: if index.is_some() { Complexity::Easy } else { Complexity::Medium },
                    estimated_gain: format!("up to {:.0} ms of database time per second of traffic", s.total_ms.unwrap_or(0.0) / db.window_s.max(1e-3)),
                    ranking: format!("P1 when a call takes >= 100 ms or the statement takes >= 50% of database time, else P2 (from a mean of {} ms over at least {} calls; schema changes and maintenance excluded)", self.min_mean_ms, self.min_calls),
                    code_fix: None,
                    source: None,
                })
            })
            .collect()
    }
}
