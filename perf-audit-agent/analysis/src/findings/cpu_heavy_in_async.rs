//! `cpu-heavy-in-async`: owner code whose polls keep a runtime worker on
//! the CPU for long stretches without yielding, with poll lengths estimated
//! from the worker's on-CPU stretches (see `async_runtime::LongPoll`).
//! Every task queued on that worker waits that long.
//!
//! Thresholds: Tokio's guidance is that a task runs at most 10-100 µs
//! between awaits; a poll of 0.5 ms (five times its upper bound) already
//! adds that latency to every task queued behind it. Flagged when the
//! time-weighted median estimated poll is at least 0.5 ms and the function
//! takes at least 1% of worker time (below that the latency it adds is
//! rare); P0 when its p99 poll reaches 10 ms (a request's whole latency
//! budget on many services) or it takes at least 10% of worker time (a
//! tenth of the runtime's capacity spent not yielding).

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};

pub struct CpuHeavyInAsync {
    /// Median estimated poll from which a function is flagged (ms).
    pub min_p50_ms: f64,
    /// Share of worker time from which it is flagged (%).
    pub min_worker_pct: f64,
    /// p99 estimated poll from which it is P0 (ms).
    pub p0_p99_ms: f64,
    /// Share of worker time from which it is P0 (%).
    pub p0_worker_pct: f64,
}

impl Default for CpuHeavyInAsync {
    fn default() -> Self {
        CpuHeavyInAsync { min_p50_ms: 0.5, min_worker_pct: 1.0, p0_p99_ms: 10.0, p0_worker_pct: 10.0 }
    }
}

impl Rule for CpuHeavyInAsync {
    fn id(&self) -> &'static str {
        "cpu-heavy-in-async"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(a) = evidence.async_runtime else { return Vec::new() };
        a.long_polls
            .iter()
            .filter(|p| p.p50_ms >= self.min_p50_ms && p.worker_time_pct >= self.min_worker_pct)
            .map(|p| {
                let p0 = p.p99_ms >= self.p0_p99_ms || p.worker_time_pct >= self.p0_worker_pct;
                let severity = if p0 { Severity::P0 } else { Severity::P1 };
                let short = p.function.rsplit("::").next().unwrap_or(&p.function).to_string();
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Async,
                    title: format!("`{}` holds a runtime worker for ~{:.1} ms per poll (p99 {:.1} ms) without yielding", p.function, p.p50_ms, p.p99_ms),
                    function: p.function.clone(),
                    file: p.file.clone(),
                    line: p.line,
                    evidence: format!(
                        "estimated poll length p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms over {} polls bounded by the worker's on-CPU stretches (wake-up to sleep, from sched_switch; run-queue waits not counted); {} CPU samples, {:.2}% of all worker time",
                        p.p50_ms, p.p99_ms, p.max_ms, p.polls_measured, p.samples, p.worker_time_pct
                    ),
                    recommendation: "move the computation to tokio::task::spawn_blocking (or a rayon pool) and await its result; password hashing (argon2, bcrypt, scrypt) and compression are the usual cases".to_string(),
                    impact: if p0 { Level::High } else { Level::Medium },
                    complexity: Complexity::Easy,
                    estimated_gain: format!("up to {:.1} ms less latency for tasks queued behind it on the same worker; frees {:.2}% of worker time", p.p99_ms, p.worker_time_pct),
                    ranking: format!(
                        "polls p50 {:.2} ms, p99 {:.2} ms, {:.2}% of worker time: flagged from a {} ms median poll (5x Tokio's 100 µs guidance) and {}% of worker time; P0 from a {} ms p99 poll or {}% of worker time",
                        p.p50_ms, p.p99_ms, p.worker_time_pct, self.min_p50_ms, self.min_worker_pct, self.p0_p99_ms, self.p0_worker_pct
                    ),
                    code_fix: Some(CodeFix {
                        before: format!("let out = {short}(&input);                 // holds the worker"),
                        after: format!("let out = tokio::task::spawn_blocking(move || {short}(&input)).await?;"),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}
