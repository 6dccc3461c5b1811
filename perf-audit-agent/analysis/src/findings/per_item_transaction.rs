//! `per-item-transaction`: `BEGIN` issued from one call site in bursts (a
//! loop), each transaction with its own round trips: one transaction per
//! item. Not an N+1 (`BEGIN`/`COMMIT` cannot be batched with `= ANY($1)`):
//! the fix is to process the batch in one transaction with set-based
//! statements. P1.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};

#[derive(Default)]
pub struct PerItemTransaction;

impl Rule for PerItemTransaction {
    fn id(&self) -> &'static str {
        "per-item-transaction"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else {
            return Vec::new();
        };
        db.per_item_transactions
            .iter()
            .map(|t| {
                let inside = if t.statements.is_empty() {
                    String::new()
                } else {
                    format!(" running {}", t.statements.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))
                };
                Finding {
                    rule: self.id().to_string(),
                    severity: Severity::P1,
                    category: Category::Database,
                    title: format!("One transaction per item in `{}`", t.call_site.function),
                    function: t.call_site.function.clone(),
                    file: t.call_site.file.clone(),
                    line: t.call_site.line,
                    evidence: format!(
                        "{} transactions opened from this line, in {} bursts of a median {} (a loop), each a median {} round trips (BEGIN and COMMIT included){inside}",
                        t.transactions, t.bursts, t.median_burst, t.median_round_trips
                    ),
                    recommendation: "process the items in one transaction with set-based statements (`... WHERE id = ANY($1)`, `INSERT ... SELECT * FROM UNNEST($1, $2)`), or at least one transaction per batch: each item now pays BEGIN, COMMIT (a WAL flush) and its own round trips".into(),
                    impact: Level::Medium,
                    complexity: Complexity::Medium,
                    estimated_gain: format!("{} round trips per item become a few per batch", t.median_round_trips),
                    ranking: "P1: transactions in a loop, detected with the N+1 burst rule on BEGIN".into(),
                    code_fix: {
                        let candidate = t
                            .statements
                            .iter()
                            .find(|s| !crate::database::analysis::is_transaction_control(s))
                            .and_then(|s| crate::database::dialect::batched_query(s));
                        let batched = crate::database::dialect::checked(&db.rewrites, candidate.as_deref());
                        let driver = t.call_site.driver.or_else(|| crate::database::dialect::dominant(&db.wire.drivers));
                        crate::database::dialect::transaction_fix(driver, batched).map(|(before, after)| CodeFix { before, after })
                    },
                    source: None,
                }
            })
            .collect()
    }
}
