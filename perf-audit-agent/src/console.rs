//! tokio-console's view of the target, when it runs console-subscriber:
//! the agent connects to its gRPC endpoint (console-api `watch_updates`)
//! for the audit window and keeps, per task, its spawn location and its
//! latest stats. The summary (tasks per spawn location, polls, busy time,
//! mean poll duration) and the console's own warnings (self-wakes, lost
//! wakers, never yielded) are pure functions of those stats.

use std::{collections::BTreeMap, time::Duration};

use console_api::{instrument::InstrumentRequest, instrument::instrument_client::InstrumentClient};
pub use perf_audit_analysis::{
    evidence::ConsoleTask,
    report::schema::{ConsoleSummary, ConsoleWarning, SpawnLocation},
};

/// Reads updates from `addr` until `stop` resolves. Errors are one line.
pub async fn watch(addr: &str, stop: impl std::future::Future<Output = ()>) -> Result<ConsoleSummary, String> {
    let url = format!("http://{addr}");
    let connect = InstrumentClient::connect(url.clone());
    let mut client = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| format!("timed out connecting to console-subscriber at {addr}"))?
        .map_err(|e| format!("cannot connect to console-subscriber at {addr}: {e}"))?;
    let mut stream = client
        .watch_updates(InstrumentRequest {})
        .await
        .map_err(|e| format!("console-subscriber at {addr} refused watch_updates: {e}"))?
        .into_inner();
    let mut tasks: BTreeMap<u64, ConsoleTask> = BTreeMap::new();
    let mut updates = 0u64;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            message = stream.message() => match message {
                Ok(Some(update)) => {
                    updates += 1;
                    let Some(t) = update.task_update else { continue };
                    for task in t.new_tasks {
                        let Some(id) = task.id.map(|i| i.id) else { continue };
                        let location = task
                            .location
                            .map(|l| format!("{}:{}", l.file.unwrap_or_default(), l.line.unwrap_or(0)))
                            .unwrap_or_else(|| "(unknown)".into());
                        tasks.entry(id).or_default().location = location;
                    }
                    for (id, stats) in t.stats_update {
                        let entry = tasks.entry(id).or_default();
                        entry.wakes = stats.wakes;
                        entry.self_wakes = stats.self_wakes;
                        entry.waker_clones = stats.waker_clones;
                        entry.waker_drops = stats.waker_drops;
                        entry.dropped = stats.dropped_at.is_some();
                        if let Some(p) = stats.poll_stats {
                            entry.polls = p.polls;
                            entry.busy_ns = p.busy_time.map(|d| d.seconds.max(0) as u64 * 1_000_000_000 + d.nanos.max(0) as u64).unwrap_or(0);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("console-subscriber stream from {addr} failed: {e}")),
            },
        }
    }
    let mut summary = summarize(tasks.values());
    summary.updates = updates;
    Ok(summary)
}

/// Tasks per spawn location and the console's warnings, from task stats.
pub fn summarize<'a>(tasks: impl Iterator<Item = &'a ConsoleTask>) -> ConsoleSummary {
    let mut by_location: BTreeMap<String, (SpawnLocation, u64, u64, u64)> = BTreeMap::new();
    let mut summary = ConsoleSummary::default();
    for t in tasks {
        summary.tasks_seen += 1;
        if !t.dropped {
            summary.live_tasks += 1;
        }
        let (loc, self_wake_heavy, lost, never_yielded) = by_location
            .entry(t.location.clone())
            .or_insert_with(|| (SpawnLocation { location: t.location.clone(), ..Default::default() }, 0, 0, 0));
        loc.tasks += 1;
        loc.live += u64::from(!t.dropped);
        loc.polls += t.polls;
        loc.busy_ms += t.busy_ns as f64 / 1e6;
        // The console's lints: most wakes are self-wakes; a live, idle
        // task whose wakers are all dropped can never run again; a task
        // polled once that has been busy for over a second never yielded.
        if t.wakes >= 10 && t.self_wakes * 2 >= t.wakes {
            *self_wake_heavy += 1;
        }
        if !t.dropped && t.polls > 0 && t.waker_clones > 0 && t.waker_drops >= t.waker_clones {
            *lost += 1;
        }
        if t.polls <= 1 && t.busy_ns >= 1_000_000_000 {
            *never_yielded += 1;
        }
    }
    for (location, (mut loc, self_wakes, lost, never)) in by_location {
        loc.mean_poll_us = if loc.polls == 0 { 0.0 } else { (loc.busy_ms * 1000.0 / loc.polls as f64 * 100.0).round() / 100.0 };
        loc.busy_ms = (loc.busy_ms * 100.0).round() / 100.0;
        for (kind, n, detail) in [
            ("self-wakes", self_wakes, "more than half of their wakes are self-wakes (they wake themselves instead of waiting)"),
            ("lost-waker", lost, "live, idle, and every waker dropped: nothing can wake them again"),
            ("never-yielded", never, "busy for over a second in a single poll"),
        ] {
            if n > 0 {
                summary.warnings.push(ConsoleWarning { kind: kind.to_string(), location: location.clone(), tasks: n, detail: detail.to_string() });
            }
        }
        summary.locations.push(loc);
    }
    summary.locations.sort_by(|a, b| b.busy_ms.total_cmp(&a.busy_ms).then(a.location.cmp(&b.location)));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_grouped_by_spawn_location_with_the_consoles_warnings() {
        let t = |loc: &str, polls, busy_ns, wakes, self_wakes, clones, drops, dropped| ConsoleTask {
            location: loc.into(),
            polls,
            busy_ns,
            wakes,
            self_wakes,
            waker_clones: clones,
            waker_drops: drops,
            dropped,
        };
        let tasks = [t("src/main.rs:10", 100, 5_000_000, 100, 80, 1, 1, true),
            t("src/main.rs:10", 50, 5_000_000, 50, 0, 2, 1, false),
            t("src/lib.rs:7", 1, 2_000_000_000, 0, 0, 0, 0, false),
            t("src/lib.rs:9", 3, 1_000, 3, 0, 2, 2, false)];
        let s = summarize(tasks.iter());
        assert_eq!(s.tasks_seen, 4);
        assert_eq!(s.live_tasks, 3);
        assert_eq!(s.locations[0].location, "src/lib.rs:7");
        let main = s.locations.iter().find(|l| l.location == "src/main.rs:10").unwrap();
        assert_eq!((main.tasks, main.live, main.polls), (2, 1, 150));
        assert!((main.mean_poll_us - 66.67).abs() < 0.01, "{}", main.mean_poll_us);
        let kinds: Vec<(&str, &str)> = s.warnings.iter().map(|w| (w.kind.as_str(), w.location.as_str())).collect();
        assert!(kinds.contains(&("self-wakes", "src/main.rs:10")));
        assert!(kinds.contains(&("never-yielded", "src/lib.rs:7")));
        assert!(kinds.contains(&("lost-waker", "src/lib.rs:9")));
        assert_eq!(s.warnings.len(), 3);
    }
}
