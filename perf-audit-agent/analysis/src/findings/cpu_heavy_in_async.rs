//! `cpu-heavy-in-async`: owner code whose polls keep a runtime worker on
//! the CPU for long stretches without yielding, with poll lengths estimated
//! from the worker's on-CPU stretches (see `async_runtime::LongPoll`).
//! Every task queued on that worker waits that long.
//!
//! Thresholds: Tokio's guidance is that a task runs at most 10-100 µs
//! between awaits; a poll of 0.5 ms (five times its upper bound) already
//! adds that latency to every task queued behind it. Flagged when the
//! median estimated poll is at least 0.5 ms and the function takes at least
//! 1% of worker time (below that the latency it adds is rare).
//!
//! Severity comes from the distribution, never from one poll: a p99 made
//! of one poll in 76 is an outlier, not the function's behaviour. P0 when
//! it takes at least 10% of worker time (a tenth of the runtime's capacity
//! spent not yielding), or when at least 10% of its polls (its p90) reach
//! 10 ms (a request's whole latency budget on many services) and there are
//! at least 20 such polls and 2% of worker time; P1 from 5% of worker time
//! or from 5 polls of 10 ms that are at least 10% of its polls; else P2.
//!
//! Advice preconditions, checked on the evidence: `spawn_blocking(move ||
//! f(&input))` only for code that never awaited in its samples (a function
//! whose samples show it polling I/O, a driver's or a library's future
//! cannot be wrapped whole); a callee whose every sample ran under a caller
//! reported here is part of that poll, not a finding of its own; a function
//! whose cost is already a database finding (N+1, chatty requests, per-item
//! transactions) is reported there, once.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};
use crate::profile::async_runtime::LongPoll;

pub struct CpuHeavyInAsync {
    /// Median estimated poll from which a function is flagged (ms).
    pub min_p50_ms: f64,
    /// Share of worker time from which it is flagged (%).
    pub min_worker_pct: f64,
    /// A poll this long (ms) is long for the severity.
    pub p0_poll_ms: f64,
    /// Share of worker time from which it is P0 (%).
    pub p0_worker_pct: f64,
    /// Long polls (>= 10% of its polls) from which it is P0, with at least
    /// `p0_min_worker_pct` of worker time.
    pub p0_long_polls: u64,
    pub p0_min_worker_pct: f64,
    /// Share of worker time, or long polls (>= 10% of its polls), from
    /// which it is P1.
    pub p1_worker_pct: f64,
    pub p1_long_polls: u64,
}

impl Default for CpuHeavyInAsync {
    fn default() -> Self {
        CpuHeavyInAsync { min_p50_ms: 0.5, min_worker_pct: 1.0, p0_poll_ms: 10.0, p0_worker_pct: 10.0, p0_long_polls: 20, p0_min_worker_pct: 2.0, p1_worker_pct: 5.0, p1_long_polls: 5 }
    }
}

impl Rule for CpuHeavyInAsync {
    fn id(&self) -> &'static str {
        "cpu-heavy-in-async"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(a) = evidence.async_runtime else { return Vec::new() };
        // Functions whose cost a database rule already reports.
        let database: Vec<String> = [
            Box::new(super::n_plus_one_query::NPlusOneQuery) as Box<dyn Rule>,
            Box::new(super::chatty_requests::ChattyRequests),
            Box::new(super::per_item_transaction::PerItemTransaction),
        ]
        .iter()
        .flat_map(|r| r.check(evidence))
        .map(|f| f.function)
        .collect();
        let flagged: Vec<&LongPoll> = a.long_polls.iter().filter(|p| p.p50_ms >= self.min_p50_ms && p.worker_time_pct >= self.min_worker_pct).collect();
        flagged
            .iter()
            .filter(|p| !database.contains(&p.function))
            // A callee (`<User as Clone>::clone`) of a flagged poll is part
            // of that poll: one finding per cause, at the caller, when the
            // caller's typical poll holds the callee's (its p50 at least
            // half the callee's). A caller whose typical poll is far shorter
            // (a task's root future, `serve`, long once while its callee's
            // many polls are the cost) only passes through: the finding is
            // at the callee, and none at the caller.
            .filter(|p| {
                !p.callers.iter().any(|c| flagged.iter().any(|q| q.function == *c && !database.contains(&q.function) && !passes_through(q, p)))
            })
            .filter(|q| !flagged.iter().any(|p| p.callers.contains(&q.function) && passes_through(q, p)))
            .map(|p| self.finding(p, &flagged))
            .collect()
    }
}

/// `caller`'s typical poll is far shorter than its callee's: the callee's
/// long polls are the cost, the caller only passes through.
fn passes_through(caller: &LongPoll, callee: &LongPoll) -> bool {
    2.0 * caller.p50_ms < callee.p50_ms
}

impl CpuHeavyInAsync {
    /// Polls of at least `p0_poll_ms`, from the distribution: the highest
    /// quantile (p50, p90, p99) that reaches it, as a share, and the
    /// count it implies (nearest rank: at least `n - ceil(q n) + 1` polls
    /// are that long); 0 when even p99 is shorter.
    fn long_polls(&self, p: &LongPoll) -> (f64, u64) {
        let q = if p.p50_ms >= self.p0_poll_ms {
            0.5
        } else if p.p90_ms >= self.p0_poll_ms {
            0.9
        } else if p.p99_ms >= self.p0_poll_ms {
            0.99
        } else {
            return (0.0, 0);
        };
        let n = p.polls_measured;
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n.max(1));
        let long = (n + 1).saturating_sub(rank).min(n);
        // The share of polls that long: 0.5, 0.1 or 0.01 (rounded: 1 - 0.9
        // is not 0.1 in floating point).
        (((1.0 - q) * 100.0).round() / 100.0, long)
    }

    pub fn severity(&self, p: &LongPoll) -> Severity {
        let (share, long) = self.long_polls(p);
        let frequent = share >= 0.1;
        if p.worker_time_pct >= self.p0_worker_pct || (frequent && long >= self.p0_long_polls && p.worker_time_pct >= self.p0_min_worker_pct) {
            Severity::P0
        } else if p.worker_time_pct >= self.p1_worker_pct || (frequent && long >= self.p1_long_polls) {
            Severity::P1
        } else {
            Severity::P2
        }
    }

    fn finding(&self, p: &LongPoll, flagged: &[&LongPoll]) -> Finding {
        let severity = self.severity(p);
        let short = p.function.rsplit("::").next().unwrap_or(&p.function).to_string();
        let (share, long) = self.long_polls(p);
        let awaits = p.awaiting_samples > 0;
        let driver = p.driver_samples * 2 >= p.samples.max(1);
        let callees: Vec<&str> = flagged.iter().filter(|q| q.callers.contains(&p.function)).map(|q| q.function.as_str()).collect();
        let mut evidence = format!(
            "{} polls measured (bounded by the worker's on-CPU stretches, from sched_switch; run-queue waits not counted): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.1} ms; {} CPU samples, {:.2}% of all worker time",
            p.polls_measured, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.samples, p.worker_time_pct
        );
        if share > 0.0 {
            evidence.push_str(&format!(
                "; at least {long} of {} polls reached {} ms ({})",
                p.polls_measured,
                self.p0_poll_ms,
                if share >= 0.5 { "its median" } else if share >= 0.1 { "its p90" } else { "only its p99: an outlier, not the function's usual poll" }
            ));
        }
        if awaits {
            evidence.push_str(&format!("; in {} of its {} samples it was awaiting (an I/O resource, a driver's or a library's future below it)", p.awaiting_samples, p.samples));
        }
        if !callees.is_empty() {
            evidence.push_str(&format!("; includes its callees {}", callees.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")));
        }
        let (recommendation, code_fix) = if driver {
            (
                "the time is the database driver encoding queries and decoding rows inside this function's polls: issue fewer queries (batch per-item queries into one, `= ANY($1)`) and fetch fewer rows and columns; `spawn_blocking` cannot wrap code that awaits".to_string(),
                None,
            )
        } else if awaits {
            (
                format!("`{short}` awaits (its samples show futures below it), so it cannot be moved whole into `spawn_blocking`: move the synchronous computation between its awaits into `tokio::task::spawn_blocking` (or `block_in_place` on a multi-thread runtime), or yield inside long loops (`tokio::task::yield_now().await`)"),
                Some(CodeFix {
                    before: "let rows = load(&pool).await?;
let out = expensive(&rows);              // synchronous, between awaits".to_string(),
                    after: "let rows = load(&pool).await?;
let out = tokio::task::spawn_blocking(move || expensive(&rows)).await?;".to_string(),
                }),
            )
        } else {
            (
                "move the computation to tokio::task::spawn_blocking (or a rayon pool) and await its result; password hashing (argon2, bcrypt, scrypt) and compression are the usual cases".to_string(),
                Some(CodeFix {
                    before: format!("let out = {short}(&input);                 // holds the worker"),
                    after: format!("let out = tokio::task::spawn_blocking(move || {short}(&input)).await?;"),
                }),
            )
        };
        Finding {
            rule: self.id().to_string(),
            severity,
            category: Category::Async,
            title: format!("`{}` holds a runtime worker for ~{:.1} ms per poll (p90 {:.1} ms, {:.2}% of worker time) without yielding", p.function, p.p50_ms, p.p90_ms, p.worker_time_pct),
            function: p.function.clone(),
            file: p.file.clone(),
            line: p.line,
            evidence,
            recommendation,
            impact: match severity {
                Severity::P0 => Level::High,
                Severity::P1 => Level::Medium,
                Severity::P2 => Level::Low,
            },
            complexity: Complexity::Easy,
            estimated_gain: format!("up to {:.1} ms less latency for tasks queued behind it on the same worker (p90); frees {:.2}% of worker time", p.p90_ms, p.worker_time_pct),
            ranking: format!(
                "{severity:?} from the distribution: {:.2}% of worker time, at least {long} of {} polls at {} ms or more; flagged from a {} ms median poll (5x Tokio's 100 µs guidance) and {}% of worker time; P0 from {}% of worker time, or from {} polls of {} ms that are >= 10% of its polls with {}% of worker time; P1 from {}% of worker time or {} such polls; one long poll is never more than P2",
                p.worker_time_pct, p.polls_measured, self.p0_poll_ms, self.min_p50_ms, self.min_worker_pct, self.p0_worker_pct, self.p0_long_polls, self.p0_poll_ms, self.p0_min_worker_pct, self.p1_worker_pct, self.p1_long_polls
            ),
            code_fix,
            source: None,
        }
    }
}