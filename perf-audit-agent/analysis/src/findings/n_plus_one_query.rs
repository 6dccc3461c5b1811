//! `n-plus-one-query`: one query per item of a list, issued from a loop in
//! the owner's code, seen on the wire as bursts of the same statement from
//! the same call site (see `database::analysis` for how bursts are told
//! apart from independent requests). Always P0: the cost grows with the
//! list, in round trips and in database work, and the fix is local.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};

#[derive(Default)]
pub struct NPlusOneQuery;

impl Rule for NPlusOneQuery {
    fn id(&self) -> &'static str {
        "n-plus-one-query"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        db.n_plus_one
            .iter()
            // BEGIN/COMMIT per item is a transaction per item, not an N+1.
            .filter(|n| !crate::database::analysis::is_transaction_control(&n.query))
            .map(|n| {
                let per_call = db
                    .statements
                    .iter()
                    .find(|s| crate::database::analysis::normalize_sql(&s.query) == n.query)
                    .and_then(|s| s.mean_ms);
                let batched = batched_query(&n.query);
                Finding {
                    rule: self.id().to_string(),
                    severity: Severity::P0,
                    category: Category::Database,
                    title: format!("N+1 queries in `{}`", n.call_site.function),
                    function: n.call_site.function.clone(),
                    file: n.call_site.file.clone(),
                    line: n.call_site.line,
                    evidence: format!(
                        "`{}` executed in {} bursts of a median {} (max {}) executions within {:.1} ms from this line; {} of its {} traced executions were in bursts (detected on the wire: {})",
                        n.query, n.bursts, n.median_burst, n.max_burst, n.median_burst_ms, n.executions_in_bursts, n.executions, db.wire.n_plus_one_rule
                    ),
                    recommendation: format!(
                        "fetch every row in one query instead of one per item: `{batched}` with all the ids bound as one array (or a JOIN)"
                    ),
                    impact: Level::High,
                    complexity: Complexity::Easy,
                    estimated_gain: match per_call {
                        Some(ms) => format!(
                            "{} round trips per burst become 1 (~{:.1} ms per burst now, {:.3} ms of server time per query)",
                            n.median_burst, n.median_burst_ms, ms
                        ),
                        None => format!("{} round trips per burst become 1 (~{:.1} ms per burst now)", n.median_burst, n.median_burst_ms),
                    },
                    ranking: "P0: a query per item grows with the data; measured as repeated bursts from one call site".into(),
                    code_fix: Some(CodeFix {
                        before: format!(
                            "for item in &items {{\n    let row = sqlx::query_as(\"{}\")\n        .bind(item.id)\n        .fetch_one(pool)\n        .await?;\n}}",
                            n.query
                        ),
                        after: format!(
                            "let ids: Vec<i64> = items.iter().map(|i| i.id).collect();\nlet rows: Vec<_> = sqlx::query_as(\"{batched}\")\n    .bind(&ids)\n    .fetch_all(pool)\n    .await?;"
                        ),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}

/// `... WHERE id = $1` -> `... WHERE id = ANY($1)`.
pub fn batched_query(query: &str) -> String {
    if let Some(pos) = query.find("= $1") {
        let rest = &query[pos + 4..];
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return format!("{}= ANY($1){}", &query[..pos], rest);
        }
    }
    format!("{query} -- rewritten to take an array: = ANY($1)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{database::analysis::{CallSite, NPlusOne}, report::DatabaseSection};

    #[test]
    fn an_n_plus_one_is_p0_at_its_line_with_a_batched_rewrite() {
        assert_eq!(batched_query("SELECT a FROM users WHERE id = $1"), "SELECT a FROM users WHERE id = ANY($1)");
        let section = DatabaseSection {
            n_plus_one: vec![NPlusOne {
                query: "SELECT a FROM users WHERE id = $1".into(),
                call_site: CallSite { function: "svc::db::authors".into(), file: Some("/svc/src/db.rs".into()), line: Some(42) },
                bursts: 12,
                executions_in_bursts: 360,
                executions: 360,
                median_burst: 30,
                max_burst: 30,
                median_burst_ms: 7.5,
            }],
            ..Default::default()
        };
        let ev = Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None };
        let f = NPlusOneQuery.check(&ev);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::P0);
        assert_eq!(f[0].category, Category::Database);
        assert_eq!((f[0].function.as_str(), f[0].line), ("svc::db::authors", Some(42)));
        assert!(f[0].code_fix.as_ref().unwrap().after.contains("= ANY($1)"));
    }
}
