//! `chatty-requests`: one request making many sequential round trips from
//! different call sites, outside any transaction (see `database::chatty`
//! for how requests are told apart on the wire). Severity from the
//! measured cost, as for an N+1: the round trips one query would save per
//! request x the measured round trip (P0 from 10 ms per request, P1 from
//! 1 ms, else P2): six lookups cost little beside a database on loopback
//! and a lot beside one 3 ms away.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Rule, Severity};
use crate::database::chatty::ChattyRule;

#[derive(Default)]
pub struct ChattyRequests;

/// Milliseconds saved per request from which a chatty request is P0, P1
/// (the N+1 rule's: both are round trips a request waits for in turn).
const P0_SAVED_MS: f64 = 10.0;
const P1_SAVED_MS: f64 = 1.0;

fn severity(saved_ms: f64) -> Severity {
    if saved_ms >= P0_SAVED_MS {
        Severity::P0
    } else if saved_ms >= P1_SAVED_MS {
        Severity::P1
    } else {
        Severity::P2
    }
}

impl Rule for ChattyRequests {
    fn id(&self) -> &'static str {
        "chatty-requests"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else {
            return Vec::new();
        };
        db.chatty_requests
            .iter()
            .map(|c| {
                let sev = severity(c.saved_ms_per_request);
                let steps: Vec<String> = c
                    .steps
                    .iter()
                    .map(|(site, sql)| format!("`{sql}` ({}{})", site.function, site.line.map(|l| format!(":{l}")).unwrap_or_default()))
                    .collect();
                let recommendation = if c.writes {
                    "fewer round trips per request: read what the request needs in one query (JOINs, or a CTE whose parts are scalar subqueries), and fold the writes into it with a data-modifying CTE (`WITH u AS (UPDATE ... RETURNING ...) SELECT ...`); if the writes must succeed or fail together, run them in one transaction (which adds BEGIN and COMMIT but no round trip per read); independent steps can also run at once on separate connections (`tokio::try_join!`)"
                } else {
                    "fetch what the request needs in one query (JOINs, or a CTE whose parts are scalar subqueries or `json_agg` of the child rows), or run the independent lookups at once on separate connections (`tokio::try_join!`) or pipelined on one (tokio-postgres pipelines queries issued together); no transaction is needed: every step only reads"
                };
                Finding {
                    rule: self.id().to_string(),
                    severity: sev,
                    category: Category::Database,
                    title: format!("{} sequential round trips per request in `{}`", c.median_round_trips, c.function.function),
                    function: c.function.function.clone(),
                    file: c.function.file.clone(),
                    line: c.function.line,
                    evidence: format!(
                        "{} requests each made a median {} (max {}) round trips to the database one after the other from {} distinct statements, one round trip ({:.2} ms) apart, a median {:.1} ms per request, outside any transaction; {} of the {} executions under this function; the longest: {} (detected on the wire: {})",
                        c.requests,
                        c.median_round_trips,
                        c.max_round_trips,
                        c.median_statements,
                        c.round_trip_ms,
                        c.median_request_ms,
                        c.executions_in_requests,
                        c.executions,
                        steps.join(" -> "),
                        ChattyRule::default().describe()
                    ),
                    recommendation: recommendation.into(),
                    impact: sev.impact(),
                    complexity: Complexity::Medium,
                    estimated_gain: format!(
                        "{} round trips per request become 1: ~{:.1} ms saved per request ({:.1} ms now)",
                        c.median_round_trips, c.saved_ms_per_request, c.median_request_ms
                    ),
                    ranking: format!(
                        "{sev:?}: {} round trips x {:.2} ms measured per round trip = {:.1} ms per request that one query saves (P0 from {P0_SAVED_MS} ms, P1 from {P1_SAVED_MS} ms)",
                        c.median_round_trips.saturating_sub(1),
                        c.round_trip_ms,
                        c.saved_ms_per_request
                    ),
                    code_fix: if !c.writes && c.steps.len() >= 2 {
                        let statements: Vec<&str> = c.steps.iter().map(|(_, sql)| sql.as_str()).collect();
                        let driver = c.function.driver.or_else(|| crate::database::dialect::dominant(&db.wire.drivers));
                        crate::database::dialect::round_trips_fix(driver, &statements).map(|(before, after)| CodeFix { before, after })
                    } else {
                        None
                    },
                    source: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        database::{analysis::CallSite, chatty::ChattyRequest},
        report::DatabaseSection,
    };

    fn chatty(round_trip_ms: f64, writes: bool) -> DatabaseSection {
        let site = |f: &str, l| CallSite { function: f.into(), file: Some("/svc/src/db.rs".into()), line: Some(l), ..Default::default() };
        DatabaseSection {
            chatty_requests: vec![ChattyRequest {
                function: CallSite {
                    function: "svc::handlers::profile".into(),
                    file: Some("/svc/src/handlers.rs".into()),
                    line: Some(40),
                    driver: Some(crate::database::dialect::Driver::Sqlx),
                    ..Default::default()
                },
                requests: 90,
                executions_in_requests: 540,
                executions: 540,
                median_round_trips: 6,
                max_round_trips: 6,
                median_statements: 6,
                median_request_ms: 5.0 * round_trip_ms,
                round_trip_ms,
                saved_ms_per_request: 5.0 * round_trip_ms,
                writes,
                steps: vec![(site("svc::db::user", 10), "SELECT name FROM users WHERE id = $1".into()), (site("svc::db::plan", 20), "SELECT plan FROM subscriptions WHERE user_id = $1".into())],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_chatty_request_is_ranked_by_its_measured_cost_at_the_handler_with_advice_that_fits_its_statements() {
        let near = chatty(0.3, false);
        let f = ChattyRequests.check(&Evidence { cpu: None, async_runtime: None, database: Some(&near), memory: None });
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].function.as_str(), f[0].line, f[0].severity), ("svc::handlers::profile", Some(40), Severity::P1));
        assert!(f[0].ranking.contains("5 round trips x 0.30 ms"), "{}", f[0].ranking);
        assert!(f[0].evidence.contains("`SELECT name FROM users WHERE id = $1` (svc::db::user:10) -> "), "{}", f[0].evidence);
        assert!(f[0].recommendation.contains("no transaction is needed") && f[0].code_fix.is_some());
        let fix = f[0].code_fix.as_ref().unwrap();
        assert!(fix.before.contains("sqlx::query(\"SELECT name FROM users WHERE id = $1\")") && !fix.after.contains("FROM"), "{fix:?}");
        // diesel: the statements are its query builder's, the fix its joins.
        let mut diesel = near.clone();
        diesel.chatty_requests[0].function.driver = Some(crate::database::dialect::Driver::Diesel);
        let f_diesel = ChattyRequests.check(&Evidence { cpu: None, async_runtime: None, database: Some(&diesel), memory: None });
        let fix = f_diesel[0].code_fix.as_ref().unwrap();
        assert!(fix.after.contains("inner_join") && !fix.before.contains("sqlx") && !fix.after.contains("sqlx"), "{fix:?}");
        let far = chatty(3.0, true);
        let f = ChattyRequests.check(&Evidence { cpu: None, async_runtime: None, database: Some(&far), memory: None });
        assert_eq!(f[0].severity, Severity::P0);
        assert!(f[0].recommendation.contains("one transaction") && f[0].code_fix.is_none());
        assert_eq!(severity(0.5), Severity::P2);
    }
}
