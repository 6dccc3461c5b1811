//! `n-plus-one-query`: one query per item of a list, issued from a loop in
//! the owner's code, seen on the wire as bursts of the same statement from
//! the same call site (see `database::analysis` for how bursts are told
//! apart from independent requests). Severity from the measured cost: the
//! round trips batching saves per burst x the measured round trip (P0 from
//! 10 ms per burst, P1 from 1 ms, else P2): the same loop costs little
//! beside a database on loopback and a lot beside one 3 ms away.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Rule, Severity};

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
                let unknown = n.query == crate::database::analysis::UNKNOWN_TEXT;
                let untied = n.call_site.function == crate::database::analysis::UNTIED_FUNCTION;
                let candidate = crate::database::dialect::batched_query(&n.query);
                let batched = crate::database::dialect::checked(&db.rewrites, candidate.as_deref());
                let driver = n.call_site.driver.or_else(|| crate::database::dialect::dominant(&db.wire.drivers));
                let why_untied = || {
                    db.wire.untied_reason.as_deref().map(|r| format!(" Its call site is unknown: {r}.")).unwrap_or_default()
                };
                Finding {
                    rule: self.id().to_string(),
                    severity: severity(n.saved_ms_per_burst),
                    category: Category::Database,
                    title: if untied {
                        format!("N+1 queries: `{}` (not traced to code)", short_text(&n.query, 60))
                    } else {
                        format!("N+1 queries in `{}`", n.call_site.function)
                    },
                    function: n.call_site.function.clone(),
                    file: n.call_site.file.clone(),
                    line: n.call_site.line,
                    evidence: format!(
                        "`{}` executed in {} bursts of a median {} (max {}) executions within {:.1} ms from this line, one round trip ({:.2} ms) apart; {} of its {} traced executions were in bursts (detected on the wire: {}){}",
                        n.query, n.bursts, n.median_burst, n.max_burst, n.median_burst_ms, n.round_trip_ms, n.executions_in_bursts, n.executions, db.wire.n_plus_one_rule, through(n, db)
                    ),
                    recommendation: if unknown {
                        "fetch every row in one query instead of one per item at this line (`= ANY($1)` with all the ids bound as one array, or a JOIN); the statement was prepared before the audit began, so its text was not on the traced wire (an audit that starts with the service shows it)".into()
                    } else {
                        format!(
                            "fetch every row in one query instead of one per item: {}{}{}",
                            match batched {
                                Some(b) => format!("`{b}` with all the ids bound as one array, or a JOIN (PostgreSQL parsed and planned this rewrite)"),
                                None if crate::database::chatty::is_write(&n.query) && n.query.trim_start().to_ascii_uppercase().starts_with("INSERT") => {
                                    "all the rows in one INSERT (`INSERT ... SELECT * FROM unnest($1::type[], $2::type[], ...)` with one array per column, or a multi-row VALUES)".to_string()
                                }
                                None => "the per-item condition as `= ANY($1)` with all the ids bound as one array, or a JOIN".to_string(),
                            },
                            driver.map(|d| format!("; the code fix is written for {}, the driver on its stacks", d.label())).unwrap_or_default(),
                            if untied { why_untied() } else { String::new() }
                        )
                    },
                    impact: severity(n.saved_ms_per_burst).impact(),
                    complexity: Complexity::Easy,
                    estimated_gain: match per_call {
                        Some(ms) => format!(
                            "{} round trips per burst become 1: ~{:.1} ms saved per burst ({:.1} ms now, {:.3} ms of server time per query)",
                            n.median_burst, n.saved_ms_per_burst, n.median_burst_ms, ms
                        ),
                        None => format!("{} round trips per burst become 1: ~{:.1} ms saved per burst ({:.1} ms now)", n.median_burst, n.saved_ms_per_burst, n.median_burst_ms),
                    },
                    ranking: format!(
                        "{:?}: {} round trips x {:.2} ms measured per round trip = {:.1} ms per burst that batching saves (P0 from {P0_SAVED_MS} ms, P1 from {P1_SAVED_MS} ms); a query per item also grows with the data",
                        severity(n.saved_ms_per_burst), n.median_burst.saturating_sub(1), n.round_trip_ms, n.saved_ms_per_burst
                    ),
                    code_fix: if unknown {
                        None
                    } else {
                        crate::database::dialect::n_plus_one_fix(driver, &n.query, batched).map(|(before, after)| CodeFix { before, after })
                    },
                    source: None,
                }
            })
            .collect()
    }
}

/// The first `max` characters of a statement, `...` when cut.
fn short_text(sql: &str, max: usize) -> String {
    if sql.chars().count() <= max { sql.to_string() } else { format!("{}...", sql.chars().take(max).collect::<String>()) }
}

/// Milliseconds saved per burst from which an N+1 is P0, P1.
const P0_SAVED_MS: f64 = 10.0;
const P1_SAVED_MS: f64 = 1.0;

fn severity(saved_ms_per_burst: f64) -> Severity {
    if saved_ms_per_burst >= P0_SAVED_MS {
        Severity::P0
    } else if saved_ms_per_burst >= P1_SAVED_MS {
        Severity::P1
    } else {
        Severity::P2
    }
}

/// The wrappers an N+1's statements passed through, named as its path
/// (`database::analysis::resolve_wrappers`), with the evidence that made
/// each one a wrapper.
fn through(n: &crate::database::analysis::NPlusOne, db: &crate::database::schema::DatabaseSection) -> String {
    if n.call_site.via.is_empty() {
        return String::new();
    }
    let path: Vec<String> = n
        .call_site
        .via
        .iter()
        .map(|f| match db.wire.wrappers.iter().find(|w| &w.function == f) {
            Some(w) => format!("`{f}` (a wrapper: {} distinct statements from {} calling functions)", w.statements, w.callers),
            None => format!("`{f}`"),
        })
        .collect();
    format!(". Issued through {}; this function is the one that calls it once per item", path.join(", called from "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{database::analysis::{CallSite, NPlusOne}, report::DatabaseSection};

    #[test]
    fn an_n_plus_one_is_ranked_by_its_measured_cost_at_its_line_with_a_batched_rewrite() {
        let section = DatabaseSection {
            rewrites: vec![crate::database::dialect::CheckedRewrite { sql: "SELECT a FROM users WHERE id = ANY($1)".into(), accepted: true, error: None }],
            n_plus_one: vec![NPlusOne {
                query: "SELECT a FROM users WHERE id = $1".into(),
                call_site: CallSite {
                    function: "svc::db::authors".into(),
                    file: Some("/svc/src/db.rs".into()),
                    line: Some(42),
                    driver: Some(crate::database::dialect::Driver::Sqlx),
                    ..Default::default()
                },
                bursts: 12,
                executions_in_bursts: 360,
                executions: 360,
                median_burst: 30,
                max_burst: 30,
                median_burst_ms: 7.5,
                round_trip_ms: 0.26,
                saved_ms_per_burst: 7.54,
            }],
            ..Default::default()
        };
        let ev = Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None };
        let f = NPlusOneQuery.check(&ev);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::P1);
        assert!(f[0].ranking.contains("29 round trips x 0.26 ms"), "{}", f[0].ranking);
        // The same loop beside a database 3 ms away costs ~90 ms per burst.
        let mut far = section.clone();
        far.n_plus_one[0].round_trip_ms = 3.1;
        far.n_plus_one[0].saved_ms_per_burst = 89.9;
        let f_far = NPlusOneQuery.check(&Evidence { database: Some(&far), ..ev });
        assert!(!f[0].evidence.contains("Issued through"), "no wrapper, no path: {}", f[0].evidence);
        // Through a wrapper: the wrapper is named as the path, with why.
        let mut wrapped = section.clone();
        wrapped.n_plus_one[0].call_site.via = vec!["svc::db::run_query".into()];
        wrapped.wire.wrappers = vec![crate::database::analysis::Wrapper { function: "svc::db::run_query".into(), statements: 5, callers: 4, executions: 900 }];
        let f_wrapped = NPlusOneQuery.check(&Evidence { cpu: None, async_runtime: None, database: Some(&wrapped), memory: None });
        assert_eq!(f_wrapped[0].function, "svc::db::authors");
        assert!(f_wrapped[0].evidence.contains("Issued through `svc::db::run_query` (a wrapper: 5 distinct statements from 4 calling functions)"), "{}", f_wrapped[0].evidence);
        assert_eq!(f_far[0].severity, Severity::P0);
        assert_eq!(severity(0.3), Severity::P2);
        // Prepared before the audit: the loop is named at its line, without a rewrite of an unknown text.
        let mut unknown = far.clone();
        unknown.n_plus_one[0].query = crate::database::analysis::UNKNOWN_TEXT.into();
        let f_unknown = NPlusOneQuery.check(&Evidence { cpu: None, async_runtime: None, database: Some(&unknown), memory: None });
        assert_eq!((f_unknown[0].line, f_unknown[0].severity), (Some(42), Severity::P0));
        assert!(f_unknown[0].code_fix.is_none() && f_unknown[0].recommendation.contains("prepared before the audit"));
        assert_eq!(f[0].category, Category::Database);
        assert_eq!((f[0].function.as_str(), f[0].line), ("svc::db::authors", Some(42)));
        assert!(f[0].code_fix.as_ref().unwrap().after.contains("sqlx::query_as(\"SELECT a FROM users WHERE id = ANY($1)\")"));
        assert!(f[0].recommendation.contains("PostgreSQL parsed and planned this rewrite"), "{}", f[0].recommendation);
        // A rewrite the server refused (or was never asked about) is not
        // shown: prose, and no raw-SQL code fix.
        let mut refused = section.clone();
        refused.rewrites[0].accepted = false;
        let f_refused = NPlusOneQuery.check(&Evidence { cpu: None, async_runtime: None, database: Some(&refused), memory: None });
        assert!(!f_refused[0].recommendation.contains("WHERE id = ANY($1)") && f_refused[0].code_fix.is_none(), "{:?}", f_refused[0]);
        // diesel on the stack, hand-written SQL: diesel's sql_query, batched.
        let mut diesel = section.clone();
        diesel.n_plus_one[0].call_site.driver = Some(crate::database::dialect::Driver::Diesel);
        let f_diesel = NPlusOneQuery.check(&Evidence { cpu: None, async_runtime: None, database: Some(&diesel), memory: None });
        let fix = f_diesel[0].code_fix.as_ref().unwrap();
        assert!(fix.after.contains("sql_query(\"SELECT a FROM users WHERE id = ANY($1)\")") && !fix.after.contains("sqlx"), "{}", fix.after);
        assert!(f_diesel[0].recommendation.contains("written for diesel"), "{}", f_diesel[0].recommendation);
    }
}
