//! `transaction-held-open`: transactions a function opens that stay open
//! while the service does other work (an HTTP call, a Redis call, a sleep):
//! idle in transaction for most of their life (see
//! `database::transactions`). Severity from the time held: P0 from a
//! median of 100 ms (or 50 ms with rows locked), P1 from 10 ms, else P2.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Rule, Severity};
use crate::database::transactions::HeldRule;

pub struct TransactionHeldOpen;

fn severity(held_p50_ms: f64, locks: bool) -> Severity {
    if held_p50_ms >= 100.0 || (locks && held_p50_ms >= 50.0) {
        Severity::P0
    } else if held_p50_ms >= 10.0 {
        Severity::P1
    } else {
        Severity::P2
    }
}

impl Rule for TransactionHeldOpen {
    fn id(&self) -> &'static str {
        "transaction-held-open"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        db.transactions
            .iter()
            .filter(|t| t.flagged)
            .map(|t| {
                let locks = t.lock_statement.is_some();
                let sev = severity(t.held_p50_ms, locks);
                let waited = if t.waited_on.is_empty() {
                    "no other socket I/O was seen on the thread meanwhile (a lock, a channel, a sleep, or the task moved to another thread)".to_string()
                } else {
                    format!(
                        "meanwhile its thread used other sockets in {} of them: {}",
                        t.transactions_with_other_io,
                        t.waited_on.iter().map(|(p, n)| format!("{p} ({n} transactions)")).collect::<Vec<_>>().join(", ")
                    )
                };
                let activity = if t.activity_samples > 0 {
                    format!(
                        "; pg_stat_activity found its connections `idle in transaction` {} times{}",
                        t.activity_samples,
                        t.max_xact_age_ms.map(|a| format!(" (transaction age up to {a:.0} ms)")).unwrap_or_default()
                    )
                } else {
                    String::new()
                };
                let lock = t.lock_statement.as_ref().map(|s| format!(" It locks rows: `{s}`, held as long.")).unwrap_or_default();
                let recommendation = if t.waited_on.is_empty() {
                    "keep the transaction short: do the slow work before BEGIN or after COMMIT, so no lock and no pooled connection waits on it; for work that must follow a change reliably, write it to an outbox table in the transaction and do it after commit".to_string()
                } else {
                    format!(
                        "make the outbound call after commit: claim the row in a short transaction (mark it taken and commit), call {} outside any transaction, then record the outcome in a second short transaction; or write the call to an outbox table inside the transaction and let a sender do it after commit; never hold a row lock and a pooled connection across a remote call",
                        t.waited_on[0].0
                    )
                };
                Finding {
                    rule: self.id().to_string(),
                    severity: sev,
                    category: Category::Database,
                    title: format!("Transaction held open across other work in `{}` ({:.0} ms held, {:.0}% idle)", t.function.function, t.held_p50_ms, t.idle_share_p50 * 100.0),
                    function: t.function.function.clone(),
                    file: t.function.file.clone(),
                    line: t.function.line,
                    evidence: format!(
                        "{} transactions opened here were held a median {:.1} ms (p99 {:.1} ms, max {:.1} ms), idle in transaction a median {:.1} ms (p99 {:.1} ms): {:.0}% of their life with no statement running; {waited}{activity}.{lock} Statements inside: {}. (Rule: {})",
                        t.transactions,
                        t.held_p50_ms,
                        t.held_p99_ms,
                        t.held_max_ms,
                        t.idle_p50_ms,
                        t.idle_p99_ms,
                        t.idle_share_p50 * 100.0,
                        t.statements.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
                        HeldRule::default().describe()
                    ),
                    recommendation,
                    impact: sev.impact(),
                    complexity: Complexity::Medium,
                    estimated_gain: format!(
                        "the connection and its locks held ~{:.1} ms instead of {:.1} ms per transaction",
                        (t.held_p50_ms - t.idle_p50_ms).max(0.0),
                        t.held_p50_ms
                    ),
                    ranking: format!("{sev:?}: a median {:.1} ms held{} (P0 from 100 ms, or 50 ms with rows locked; P1 from 10 ms)", t.held_p50_ms, if locks { " with rows locked" } else { "" }),
                    code_fix: Some(CodeFix {
                        before: "let mut tx = pool.begin().await?;\nlet job = sqlx::query(\"SELECT ... FOR UPDATE SKIP LOCKED\").fetch_one(&mut *tx).await?;\nhttp.post(url).send().await?; // the lock and the connection wait on this\nsqlx::query(\"DELETE FROM jobs WHERE id = $1\").bind(id).execute(&mut *tx).await?;\ntx.commit().await?;".into(),
                        after: "let mut tx = pool.begin().await?;\nlet job = sqlx::query(\"UPDATE jobs SET taken_at = now() WHERE id = (SELECT id FROM jobs WHERE taken_at IS NULL LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ...\").fetch_one(&mut *tx).await?;\ntx.commit().await?; // short: claim, then commit\nhttp.post(url).send().await?;\nsqlx::query(\"DELETE FROM jobs WHERE id = $1\").bind(id).execute(&pool).await?;".into(),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{analysis::CallSite, schema::DatabaseSection, transactions::HeldTransactions};

    #[test]
    fn a_flagged_transaction_is_ranked_by_its_time_held_and_names_what_it_waited_on_and_an_unflagged_one_is_silent() {
        let held = |flagged: bool, p50: f64| HeldTransactions {
            function: CallSite { function: "svc::deliver".into(), ..Default::default() },
            transactions: 40,
            held_p50_ms: p50,
            held_p99_ms: p50 * 2.0,
            idle_p50_ms: p50 - 1.0,
            idle_share_p50: 0.9,
            lock_statement: Some("SELECT id FROM jobs LIMIT 1 FOR UPDATE SKIP LOCKED".into()),
            waited_on: vec![("10.0.0.7:443".into(), 38)],
            transactions_with_other_io: 38,
            activity_samples: 12,
            flagged,
            ..Default::default()
        };
        let section = DatabaseSection { transactions: vec![held(true, 130.0), held(false, 2.0)], ..Default::default() };
        let f = TransactionHeldOpen.check(&Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None });
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].severity, f[0].function.as_str()), (Severity::P0, "svc::deliver"));
        assert!(f[0].evidence.contains("10.0.0.7:443 (38 transactions)") && f[0].evidence.contains("idle in transaction` 12 times"), "{}", f[0].evidence);
        assert!(f[0].recommendation.contains("after commit") && f[0].recommendation.contains("10.0.0.7:443"));
        let section = DatabaseSection { transactions: vec![HeldTransactions { lock_statement: None, ..held(true, 20.0) }], ..Default::default() };
        let f = TransactionHeldOpen.check(&Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None });
        assert_eq!(f[0].severity, Severity::P1);
    }
}
