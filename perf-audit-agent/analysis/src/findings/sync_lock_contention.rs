//! `sync-lock-contention`: Tokio workers waiting (futex) on a synchronous
//! lock — std::sync::Mutex/RwLock/Condvar or parking_lot — found at the
//! owner's frame that takes the lock. A holder is named only with evidence
//! that links it to this lock: the same function also blocks on a worker
//! (after taking the lock, at a later line), i.e. it can hold the lock
//! across a slow call. The audit's largest blocking site elsewhere is not
//! a holder (it may never touch this lock), so no claim is made then.

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
        let holder = |lock: &crate::profile::async_runtime::BlockingSite| {
            a.blocking
                .iter()
                .find(|b| b.intervals > 0 && b.function == lock.function && b.line.zip(lock.line).is_none_or(|(b, l)| b >= l))
                .map(|b| {
                    let at = b.line.map(|l| format!(" at line {l}")).unwrap_or_default();
                    format!("; the same function also blocks workers{at} ({} times, {:.1} ms, {}): it can hold the lock across that call", b.intervals, b.blocked_ms, b.kind.describe())
                })
        };
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
                        holder(s).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::async_runtime::{AsyncAnalysis, BlockingKind, BlockingSite};

    fn site(function: &str, line: u32, kind: BlockingKind) -> BlockingSite {
        BlockingSite { function: function.into(), line: Some(line), kind, intervals: 5, blocked_ms: 40.0, worker_time_pct: 0.5, ..Default::default() }
    }

    #[test]
    fn a_holder_is_named_only_when_the_lock_taker_itself_blocks() {
        let analysis = AsyncAnalysis {
            blocking: vec![site("svc::export", 70, BlockingKind::FileIo), site("svc::update", 55, BlockingKind::Sleep)],
            lock_contention: vec![site("svc::update", 52, BlockingKind::SyncLock), site("svc::cache_get", 44, BlockingKind::SyncLock)],
            ..Default::default()
        };
        let evidence = Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None };
        let found = SyncLockContention::default().check(&evidence);
        let by = |f: &str| found.iter().find(|x| x.function == f).unwrap().evidence.clone();
        assert!(by("svc::update").contains("also blocks workers at line 55"), "{}", by("svc::update"));
        // The largest unrelated blocking site is not called the holder.
        assert!(!by("svc::cache_get").contains("svc::export") && !by("svc::cache_get").contains("holder"), "{}", by("svc::cache_get"));
    }
}
