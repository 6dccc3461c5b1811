//! `pool-waits`: tasks queued for a pooled database connection (see
//! `database::pool`). P0 when every connection was in use for half the
//! audit or more, else P1. Stacks of the CPU profile that show a wait for
//! a connection (sqlx `PoolInner::acquire`, r2d2 and deadpool `get`) are
//! quoted when that profile ran.

use super::{Category, Complexity, Evidence, Finding, Rule, Severity};
use crate::database::pool::PoolRule;

pub struct PoolWaits;

/// Frames that wait for a pooled connection.
fn waits_for_connection(name: &str) -> bool {
    (name.contains("PoolInner") && name.contains("acquire"))
        || (name.contains("r2d2") && name.contains("Pool") && name.contains("get"))
        || (name.contains("deadpool") && name.contains("Pool") && name.contains("get"))
}

impl Rule for PoolWaits {
    fn id(&self) -> &'static str {
        "pool-waits"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        let stack_samples: u64 = evidence
            .cpu
            .as_ref()
            .map(|c| c.profile.stacks.iter().filter(|s| s.frames.iter().any(|f| waits_for_connection(&c.profile.frame(*f).display_name()))).map(|s| s.count).sum())
            .unwrap_or(0);
        db.pools
            .iter()
            .filter(|p| p.waits_material)
            .map(|p| {
                let sev = if p.saturated_share >= 0.5 { Severity::P0 } else { Severity::P1 };
                let top = p.holders.first().cloned().unwrap_or_default();
                let holders: Vec<String> = p
                    .holders
                    .iter()
                    .map(|h| format!("`{}` ({} uses, {:.1} ms held in all, median {:.2} ms, max {:.1} ms)", h.function.function, h.uses, h.held_ms_total, h.held_p50_ms, h.held_max_ms))
                    .collect();
                let stacks = if stack_samples > 0 { format!(" {stack_samples} CPU samples were inside a wait for a pooled connection.") } else { String::new() };
                Finding {
                    rule: self.id().to_string(),
                    severity: sev,
                    category: Category::Database,
                    title: format!("Tasks wait for a database connection: a pool of {} in use {:.0}% of the time", p.connections, p.saturated_share * 100.0),
                    function: top.function.function.clone(),
                    file: top.function.file.clone(),
                    line: top.function.line,
                    evidence: format!(
                        "The pool's {} connections were all in use for {:.0}% of the {:.1} s observed (each busy {:.0}% on average); {} of its {} uses began on a connection within {:.2} ms of the previous use ending there while every other connection was in use: tasks queued for a connection.{stacks} Longest holders: {}. (Rule: {})",
                        p.connections,
                        p.saturated_share * 100.0,
                        p.window_s,
                        p.busy_share * 100.0,
                        p.queued_handoffs,
                        p.uses,
                        p.handoff_gap_ms,
                        holders.join(", "),
                        PoolRule::default().describe()
                    ),
                    recommendation: format!(
                        "size the pool for the concurrency the service runs (`max_connections` at least the requests in flight that need a connection, within the server's `max_connections`), and shorten what holds a connection longest (`{}`: no slow work while holding it, no transaction across other I/O)",
                        top.function.function
                    ),
                    impact: sev.impact(),
                    complexity: Complexity::Easy,
                    estimated_gain: format!("up to {} queued acquisitions avoided", p.queued_handoffs),
                    ranking: format!("{sev:?}: every connection in use {:.0}% of the time (P0 from 50%)", p.saturated_share * 100.0),
                    code_fix: None,
                    source: None,
                }
            })
            .collect()
    }
}
