//! `sync-lock-contention`: Tokio workers waiting (futex) on a synchronous
//! lock — std::sync::Mutex/RwLock/Condvar or parking_lot — found at the
//! owner's frame that takes the lock. The holder's side, when visible, is
//! the code that blocked on workers during the same window while not
//! waiting on a lock itself (a lock held across a slow operation).

use super::{Category, CodeFix, Complexity, Evidence, Finding, Rule, Severity};

pub struct SyncLockContention {
    pub p0_worker_pct: f64,
    pub p1_worker_pct: f64,
    /// Waits (captured intervals) at a site from which it is contention:
    /// one wait is a lock that was taken while another holder had it once,
    /// e.g. any handler that records a metric behind the lock a slow
    /// holder keeps (the holder is the finding).
    pub min_intervals: u64,
}

impl Default for SyncLockContention {
    fn default() -> Self {
        SyncLockContention { p0_worker_pct: 1.0, p1_worker_pct: 0.2, min_intervals: 3 }
    }
}

impl Rule for SyncLockContention {
    fn id(&self) -> &'static str {
        "sync-lock-contention"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(a) = evidence.async_runtime else { return Vec::new() };
        let holder = a
            .blocking
            .iter()
            .find(|s| s.intervals > 0)
            .map(|s| format!("; likely holder: `{}` blocked workers {} times ({:.1} ms, {}) in the same window", s.function, s.intervals, s.blocked_ms, s.kind.describe()));
        a.lock_contention
            .iter()
            .filter(|s| s.intervals >= self.min_intervals.max(1))
            .map(|s| {
                let severity = Severity::from_share(s.worker_time_pct, self.p0_worker_pct, self.p1_worker_pct);
                let via = s.via.as_deref().map(|v| format!(" in `{v}`")).unwrap_or_default();
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Async,
                    title: format!("Tokio workers wait for a sync lock in `{}`", s.function),
                    function: s.function.clone(),
                    file: s.file.clone(),
                    line: s.line,
                    evidence: format!(
                        "workers waited {} times for {:.1} ms in total{via}, {:.2}% of all worker time{}",
                        s.intervals,
                        s.blocked_ms,
                        s.worker_time_pct,
                        holder.clone().unwrap_or_default()
                    ),
                    recommendation: "never hold a std::sync lock across slow work: copy what you need and drop the guard first; if it must be held across an .await, use tokio::sync::Mutex".to_string(),
                    impact: severity.impact(),
                    complexity: Complexity::Medium,
                    estimated_gain: format!("frees {:.2}% of worker time spent waiting for the lock", s.worker_time_pct),
                    ranking: format!(
                        "{:.2}% of worker time waiting here: P0 from {}%, P1 from {}%",
                        s.worker_time_pct, self.p0_worker_pct, self.p1_worker_pct
                    ),
                    code_fix: Some(CodeFix {
                        before: "let stats = STATS.lock().unwrap();\nlet summary = slow_summary(&stats);     // other workers wait on the futex".to_string(),
                        after: "let snapshot = STATS.lock().unwrap().clone();   // guard dropped here\nlet summary = slow_summary(&snapshot);".to_string(),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}
