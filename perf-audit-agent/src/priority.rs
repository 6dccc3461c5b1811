//! The agent off the target's cores: while the target is measured, the
//! agent's own threads (draining rings, unwinding, parsing the wire,
//! reading maps, the overhead meter) run at the lowest CPU priority, so
//! that on a machine without an idle core the target's threads go first.
//! Every ring is bounded and counts what it drops, so a starved agent costs
//! the report samples (shown in each section and in the overhead line),
//! never the target its time.
//!
//! Kept at their priority, by thread name:
//! - `memory-windows` and `memory-links`: they end recording windows and
//!   close probe links; starved, a window would stay open and the target
//!   would pay the probes' cost (issue 19's stall);
//! - `perf-audit-http` and `perf-audit-load`: the load generator measures
//!   the target's latency, which must not include our queueing;
//! - `private-postgres`: the throwaway database's log reader.
//!
//! Threads created later inherit their creator's priority, so
//! [`AgentPriority::apply`] runs every second of the collection and sets
//! each thread as above; [`AgentPriority::restore`] puts every thread back
//! before the unprobed health sample and the report (symbolization and
//! rendering run after the target is measured, at normal priority).
//!
//! `PERF_AUDIT_AGENT_PRIORITY`: `low` (default, nice 19), `idle`
//! (`SCHED_IDLE`: below nice 19; on a machine whose cores are busy with
//! other work the agent may then get almost no CPU and drop more) or
//! `normal` (unchanged).

use std::collections::HashMap;

/// Thread names never lowered (see the module doc).
pub const KEPT_THREADS: [&str; 5] = ["memory-windows", "memory-links", "perf-audit-http", "perf-audit-load", "private-postgres"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Normal,
    /// nice 19.
    Low,
    /// `SCHED_IDLE`.
    Idle,
}

impl Level {
    pub fn from_env() -> Level {
        match std::env::var("PERF_AUDIT_AGENT_PRIORITY").as_deref().map(str::trim) {
            Ok("normal") => Level::Normal,
            Ok("idle") => Level::Idle,
            _ => Level::Low,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Level::Normal => "at normal priority",
            Level::Low => "at nice 19",
            Level::Idle => "at SCHED_IDLE",
        }
    }
}

/// The agent's threads' priority during collection.
pub struct AgentPriority {
    level: Level,
    /// The nice value of the process when collection started (restored).
    original_nice: i32,
    /// Threads this pass set, and whether lowered.
    set: HashMap<i32, bool>,
}

fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Sets one thread's priority: `lowered` per `level`, else normal.
fn set_thread(tid: i32, level: Level, lowered: bool, normal_nice: i32) -> bool {
    // SAFETY: plain syscalls on a thread of this process.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        match (level, lowered) {
            (Level::Idle, true) => libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0,
            (Level::Low, true) => libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) == 0,
            _ => {
                let policy = libc::sched_getscheduler(tid);
                let ok = policy != libc::SCHED_IDLE || libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) == 0;
                ok && libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, normal_nice) == 0
            }
        }
    }
}

impl AgentPriority {
    pub fn new(level: Level) -> AgentPriority {
        // SAFETY: getpriority of this process; -1 can be a value, errno
        // is not checked: a failure leaves 0, the usual nice value.
        let original_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        AgentPriority { level, original_nice, set: HashMap::new() }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// Lowers every thread of the agent but the kept ones (and raises a
    /// kept one that inherited a lowered priority). Returns how many
    /// threads are lowered.
    pub fn apply(&mut self) -> usize {
        self.apply_to(threads())
    }

    /// [`AgentPriority::apply`] on these threads only.
    fn apply_to(&mut self, live: Vec<i32>) -> usize {
        if self.level == Level::Normal {
            return 0;
        }
        self.set.retain(|tid, _| live.contains(tid));
        for tid in live {
            let lower = !KEPT_THREADS.contains(&thread_name(tid).as_str());
            if self.set.get(&tid) != Some(&lower) && set_thread(tid, self.level, lower, self.original_nice) {
                self.set.insert(tid, lower);
            }
        }
        self.set.values().filter(|l| **l).count()
    }

    /// Every thread back to the priority the agent started with.
    pub fn restore(&mut self) {
        if self.level == Level::Normal {
            return;
        }
        for tid in threads() {
            set_thread(tid, self.level, false, self.original_nice);
        }
        self.set.clear();
    }
}

impl Drop for AgentPriority {
    fn drop(&mut self) {
        self.restore();
    }
}

/// This thread's (nice, policy): for tests.
pub fn current_thread_priority() -> (i32, i32) {
    let tid = gettid();
    // SAFETY: plain syscalls on this thread.
    unsafe { (libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t), libc::sched_getscheduler(tid)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A named thread that reports its tid, waits, then reports its nice.
    fn thread(name: &str) -> (i32, mpsc::Sender<()>, mpsc::Receiver<i32>, std::thread::JoinHandle<()>) {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (nice_tx, nice_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                tid_tx.send(gettid()).unwrap();
                let _ = go_rx.recv();
                nice_tx.send(current_thread_priority().0).unwrap();
                let _ = go_rx.recv();
                nice_tx.send(current_thread_priority().0).unwrap();
            })
            .unwrap();
        (tid_rx.recv().unwrap(), go_tx, nice_rx, handle)
    }

    // Only this test's threads are touched: the other tests of this
    // process keep their priority.
    #[test]
    fn lowers_the_agents_threads_keeps_the_named_ones_and_restores() {
        let (nice0, _) = current_thread_priority();
        let (worker, worker_go, worker_nice, worker_join) = thread("drain-worker");
        let (kept, kept_go, kept_nice, kept_join) = thread("memory-windows");
        let mut p = AgentPriority::new(Level::Low);
        assert_eq!(p.apply_to(vec![worker, kept]), 1);
        worker_go.send(()).unwrap();
        kept_go.send(()).unwrap();
        assert_eq!(worker_nice.recv().unwrap(), 19);
        assert_eq!(kept_nice.recv().unwrap(), nice0);
        for tid in [worker, kept] {
            set_thread(tid, p.level, false, p.original_nice);
        }
        p.set.clear();
        worker_go.send(()).unwrap();
        kept_go.send(()).unwrap();
        assert_eq!(worker_nice.recv().unwrap(), nice0);
        assert_eq!(kept_nice.recv().unwrap(), nice0);
        worker_join.join().unwrap();
        kept_join.join().unwrap();
        // Dropping it would restore every thread of the test process.
        std::mem::forget(p);
    }
}
