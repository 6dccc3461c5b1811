//! The async runtime analysis: which code blocks Tokio worker threads, at
//! the blocker's own frame; sync-lock waits on workers; long polls; and the
//! per-task breakdown of on- and off-CPU time. Pure computation over the
//! on-CPU profile, the off-CPU profile (weights in microseconds) and the
//! kernel's per-thread scheduler totals.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{CpuProfile, Frame, Origin, StackSample, round2};
use crate::syscalls::{self, Waits};

/// A thread's part in a Tokio runtime, from its stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThreadRole {
    /// Polls tasks: must never block.
    Worker,
    /// `spawn_blocking` / `tokio::fs` threads: blocking is their job.
    BlockingPool,
    #[default]
    Other,
}

/// Per-thread scheduler time, from the kernel's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadTime {
    pub tid: u32,
    pub name: String,
    pub oncpu_ns: u64,
    pub blocked_ns: u64,
    pub runqueue_ns: u64,
    pub max_run_ns: u64,
    pub short_blocks: u64,
    pub short_blocked_ns: u64,
}

/// One CPU sample in time order (dwarf mode), pointing into the on-CPU
/// profile's stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedSample {
    pub tid: u32,
    pub ts_ns: u64,
    pub oncpu_run_ns: u64,
    pub stack: usize,
}

/// What blocked a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlockingKind {
    /// std::fs or file syscalls.
    FileIo,
    /// std::net or socket syscalls.
    NetworkIo,
    /// Name resolution through `ToSocketAddrs` / getaddrinfo.
    Dns,
    /// `std::thread::sleep`.
    Sleep,
    /// A std::sync::Mutex/RwLock/Condvar or parking_lot wait (futex).
    SyncLock,
    /// Another blocking wait.
    #[default]
    Other,
}

impl BlockingKind {
    pub fn describe(self) -> &'static str {
        match self {
            BlockingKind::FileIo => "blocking file I/O (std::fs)",
            BlockingKind::NetworkIo => "blocking network I/O (std::net)",
            BlockingKind::Dns => "blocking DNS resolution (ToSocketAddrs)",
            BlockingKind::Sleep => "std::thread::sleep",
            BlockingKind::SyncLock => "waiting for a std::sync lock",
            BlockingKind::Other => "a blocking wait",
        }
    }
}

/// A place in the owner's code where workers blocked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct BlockingSite {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub kind: BlockingKind,
    /// The std or library call it blocked in (e.g. `std::fs::read_to_string`).
    pub via: Option<String>,
    pub syscalls: Vec<String>,
    /// Blocking intervals at least the capture threshold long.
    pub intervals: u64,
    pub blocked_ms: f64,
    /// Share of all worker time (on + off CPU) spent blocked here.
    pub worker_time_pct: f64,
    /// CPU samples on workers inside the same blocking call (time the call
    /// spent on the CPU, e.g. copying from the page cache).
    pub on_cpu_samples: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct LongPoll {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The longest stretch seen on one worker without blocking or parking.
    pub max_ms: f64,
    /// Stretches at least the threshold long.
    pub occurrences: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct TaskRow {
    /// The outermost frame of the owner's code in the poll: the task's
    /// future (an axum handler's async fn, a spawned task's fn).
    pub task: String,
    pub on_cpu_samples: u64,
    pub on_cpu_pct: f64,
    pub blocked_ms: f64,
    pub blocking_intervals: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WorkersSummary {
    pub workers: usize,
    pub blocking_pool_threads: usize,
    /// Share of worker time on the CPU.
    pub busy_pct: f64,
    /// Share blocked inside tasks (the bug this analysis hunts).
    pub blocked_in_tasks_pct: f64,
    /// Share parked with nothing to do (or in the runtime's own waits).
    pub idle_pct: f64,
    /// Share runnable but waiting for a CPU (preempted).
    pub runqueue_pct: f64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AsyncAnalysis {
    pub workers: WorkersSummary,
    pub blocking: Vec<BlockingSite>,
    pub lock_contention: Vec<BlockingSite>,
    pub long_polls: Vec<LongPoll>,
    pub tasks: Vec<TaskRow>,
    /// Whether long polls could be measured (needs time-ordered samples).
    pub long_polls_measured: bool,
}

pub struct AsyncInputs<'a> {
    pub cpu: &'a CpuProfile,
    pub offcpu: &'a CpuProfile,
    pub threads: &'a [ThreadTime],
    pub samples: &'a [TimedSample],
    pub long_poll_threshold_ns: u64,
}

fn frames<'a>(p: &'a CpuProfile, s: &StackSample) -> Vec<&'a Frame> {
    s.frames.iter().map(|id| p.frame(*id)).collect()
}

/// The role a stack shows. Tokio starts its multi-thread workers on
/// blocking-pool threads, so a worker's stack holds both markers: the
/// worker loop decides. The thread that calls `Runtime::block_on` on a
/// multi-thread runtime only waits; a current-thread runtime's
/// `block_on` thread is its worker.
///
/// Only the worker loop marks a worker: any thread that wakes a task runs
/// scheduler code too (a blocking-pool thread finishing a `tokio::fs` call
/// runs `multi_thread::worker::<impl Handle>::schedule_task`), and counting
/// such a stack made a pool thread a third worker.
pub fn role_of(frames: &[&Frame]) -> Option<ThreadRole> {
    let has = |prefix: &str| frames.iter().any(|f| f.function.starts_with(prefix));
    const WORKER_LOOP: [&str; 5] = [
        "tokio::runtime::scheduler::multi_thread::worker::run",
        "tokio::runtime::scheduler::multi_thread::worker::Context::",
        "tokio::runtime::scheduler::current_thread::CoreGuard::",
        "tokio::runtime::scheduler::current_thread::Context::",
        "tokio::runtime::scheduler::current_thread::CurrentThread::block_on",
    ];
    if WORKER_LOOP.iter().any(|prefix| has(prefix)) {
        Some(ThreadRole::Worker)
    } else if has("tokio::runtime::blocking::pool") {
        Some(ThreadRole::BlockingPool)
    } else {
        None
    }
}

fn innermost_owner(frames: &[&Frame]) -> Option<usize> {
    frames.iter().rposition(|f| f.origin == Origin::Owner)
}

/// The frame that names a task: where framework code (axum, tower, hyper,
/// tokio) last calls into the owner's code, i.e. the innermost owner frame
/// whose caller is not the owner's. A middleware of the owner's wraps every
/// handler; this picks the handler inside it.
/// Async fn bodies (`{{closure}}` frames) are preferred: a sync callback
/// such as a `FromRow` impl that sqlx calls is not a task.
fn task_root(frames: &[&Frame]) -> Option<usize> {
    let entries = || {
        (0..frames.len())
            .rev()
            .filter(|&i| frames[i].origin == Origin::Owner && (i == 0 || frames[i - 1].origin != Origin::Owner))
    };
    entries().find(|&i| frames[i].function.ends_with("{{closure}}")).or_else(|| entries().next())
}

fn classify(below: &[&Frame], syscall: Option<&str>) -> (BlockingKind, Option<String>) {
    let find = |needles: &[&str]| below.iter().find(|f| needles.iter().any(|n| f.function.contains(n))).map(|f| f.display_name());
    if let Some(via) = find(&["std::sys::sync::mutex", "std::sync::poison::mutex", "std::sync::mutex", "std::sync::rwlock", "std::sys::sync::rwlock", "std::sync::poison::rwlock", "Condvar", "parking_lot"]) {
        return (BlockingKind::SyncLock, Some(via));
    }
    if let Some(via) = find(&["ToSocketAddrs", "getaddrinfo", "lookup_host"]) {
        return (BlockingKind::Dns, Some(via));
    }
    if let Some(via) = find(&["std::thread::sleep", "std::thread::functions::sleep"]) {
        return (BlockingKind::Sleep, Some(via));
    }
    if let Some(via) = find(&["std::fs::", "<std::fs::File", "std::sys::fs::"]) {
        return (BlockingKind::FileIo, Some(via));
    }
    if let Some(via) = find(&["std::net::", "std::sys::net::"]) {
        return (BlockingKind::NetworkIo, Some(via));
    }
    // A futex with no std/parking_lot lock frame is some library's own wait
    // (a channel, an allocator lock): reported as "other", not as a lock.
    let kind = match syscall.map(syscalls::waits) {
        Some(Waits::Sleep) => BlockingKind::Sleep,
        Some(Waits::File) => BlockingKind::FileIo,
        Some(Waits::Network) => BlockingKind::NetworkIo,
        _ => BlockingKind::Other,
    };
    (kind, below.iter().find(|f| f.origin != Origin::Kernel).map(|f| f.display_name()))
}

/// Whether an on-CPU stack below an owner frame is inside a blocking std API.
fn blocking_api_on_cpu(below: &[&Frame]) -> Option<(BlockingKind, String)> {
    let (kind, via) = classify(below, None);
    match (kind, via) {
        (BlockingKind::Other, _) | (_, None) => None,
        (kind, Some(via)) if via.starts_with("std::") || via.starts_with("<std::") => Some((kind, via)),
        _ => None,
    }
}

#[derive(Default)]
struct SiteAcc {
    file: Option<String>,
    lines: BTreeMap<u32, u64>,
    via: BTreeMap<String, u64>,
    syscalls: BTreeSet<String>,
    intervals: u64,
    blocked_us: u64,
    on_cpu_samples: u64,
}

/// The role of every thread seen in the stacks or the scheduler totals:
/// from stack evidence first, thread names second.
pub fn thread_roles(cpu: &CpuProfile, offcpu: &CpuProfile, threads: &[ThreadTime]) -> BTreeMap<u32, ThreadRole> {
    let mut votes: HashMap<u32, (u64, u64)> = HashMap::new();
    for (p, s) in cpu.stacks.iter().map(|s| (cpu, s)).chain(offcpu.stacks.iter().map(|s| (offcpu, s))) {
        match role_of(&frames(p, s)) {
            Some(ThreadRole::Worker) => votes.entry(s.tid).or_default().0 += s.events,
            Some(ThreadRole::BlockingPool) => votes.entry(s.tid).or_default().1 += s.events,
            _ => {}
        }
    }
    // Thread names only decide when no stack shows a worker loop (stacks
    // without symbols): Tokio names its blocking-pool threads like its
    // workers, so a pool thread caught only outside the pool's frames (or
    // seen only by sched_switch) would otherwise be counted as a worker.
    let stacks_show_workers = votes.values().any(|(w, _)| *w > 0);
    let role_of_tid = |tid: u32, name: &str| -> ThreadRole {
        match votes.get(&tid) {
            Some((w, b)) if w >= b && *w > 0 => ThreadRole::Worker,
            Some((_, b)) if *b > 0 => ThreadRole::BlockingPool,
            _ if !stacks_show_workers && (name.starts_with("tokio-runtime-w") || name.starts_with("tokio-rt-worker")) => ThreadRole::Worker,
            _ => ThreadRole::Other,
        }
    };
    // Every thread seen, by the name its stacks carry, else sched_switch's.
    let names: HashMap<u32, &str> = threads
        .iter()
        .map(|t| (t.tid, t.name.as_str()))
        .chain(cpu.stacks.iter().chain(offcpu.stacks.iter()).map(|s| (s.tid, s.thread.as_str())))
        .collect();
    names.iter().map(|(tid, name)| (*tid, role_of_tid(*tid, name))).collect()
}

pub fn analyze(input: &AsyncInputs<'_>) -> AsyncAnalysis {
    let roles = thread_roles(input.cpu, input.offcpu, input.threads);
    let worker_tids: BTreeSet<u32> = roles.iter().filter(|(_, role)| **role == ThreadRole::Worker).map(|(tid, _)| *tid).collect();
    let pool_threads = input.threads.iter().filter(|t| roles.get(&t.tid) == Some(&ThreadRole::BlockingPool)).count();

    let worker_time_ns: u64 = input
        .threads
        .iter()
        .filter(|t| worker_tids.contains(&t.tid))
        .map(|t| t.oncpu_ns + t.blocked_ns + t.runqueue_ns)
        .sum();

    // Blocking sites from off-CPU stacks of workers inside task code.
    let mut sites: BTreeMap<(String, BlockingKind), SiteAcc> = BTreeMap::new();
    let mut task_blocked: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut blocked_in_tasks_us = 0u64;
    for s in &input.offcpu.stacks {
        if !worker_tids.contains(&s.tid) {
            continue;
        }
        let fr = frames(input.offcpu, s);
        if role_of(&fr) == Some(ThreadRole::BlockingPool) {
            continue;
        }
        let Some(owner) = innermost_owner(&fr) else { continue };
        let syscall = fr.last().filter(|f| f.function.ends_with(" [syscall]")).map(|f| f.function.trim_end_matches(" [syscall]").to_string());
        let (kind, via) = classify(&fr[owner + 1..], syscall.as_deref());
        let frame = fr[owner];
        let acc = sites.entry((frame.display_name(), kind)).or_default();
        if acc.file.is_none() {
            acc.file = frame.file.clone();
        }
        if let Some(line) = frame.line {
            *acc.lines.entry(line).or_default() += s.count;
        }
        if let Some(via) = via {
            *acc.via.entry(via).or_default() += s.count;
        }
        if let Some(sc) = syscall {
            acc.syscalls.insert(sc);
        }
        acc.intervals += s.events;
        acc.blocked_us += s.count;
        blocked_in_tasks_us += s.count;
        if let Some(root) = task_root(&fr) {
            let t = task_blocked.entry(fr[root].display_name()).or_default();
            t.0 += s.count;
            t.1 += s.events;
        }
    }
    // On-CPU time of workers inside blocking std calls, at the same sites.
    let mut task_cpu: BTreeMap<String, u64> = BTreeMap::new();
    let mut worker_samples = 0u64;
    for s in &input.cpu.stacks {
        if !worker_tids.contains(&s.tid) {
            continue;
        }
        let fr = frames(input.cpu, s);
        if role_of(&fr) == Some(ThreadRole::BlockingPool) {
            continue;
        }
        worker_samples += s.count;
        if let Some(root) = task_root(&fr) {
            *task_cpu.entry(fr[root].display_name()).or_default() += s.count;
        }
        let Some(owner) = innermost_owner(&fr) else { continue };
        if let Some((kind, via)) = blocking_api_on_cpu(&fr[owner + 1..]) {
            let frame = fr[owner];
            let acc = sites.entry((frame.display_name(), kind)).or_default();
            if acc.file.is_none() {
                acc.file = frame.file.clone();
            }
            if let Some(line) = frame.line {
                acc.lines.entry(line).or_default();
            }
            *acc.via.entry(via).or_default() += 0;
            acc.on_cpu_samples += s.count;
        }
    }

    let pct_of_workers = |us: u64| if worker_time_ns == 0 { 0.0 } else { round2(us as f64 * 1000.0 * 100.0 / worker_time_ns as f64) };
    let mut blocking = Vec::new();
    let mut lock_contention = Vec::new();
    for ((function, kind), acc) in sites {
        let line = acc.lines.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(l, _)| *l);
        let via = acc.via.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(v, _)| v.clone());
        let site = BlockingSite {
            function,
            file: acc.file,
            line,
            kind,
            via,
            syscalls: acc.syscalls.into_iter().collect(),
            intervals: acc.intervals,
            blocked_ms: round2(acc.blocked_us as f64 / 1000.0),
            worker_time_pct: pct_of_workers(acc.blocked_us),
            on_cpu_samples: acc.on_cpu_samples,
        };
        if kind == BlockingKind::SyncLock {
            lock_contention.push(site);
        } else {
            blocking.push(site);
        }
    }
    let order = |a: &BlockingSite, b: &BlockingSite| {
        b.blocked_ms.total_cmp(&a.blocked_ms).then(b.on_cpu_samples.cmp(&a.on_cpu_samples)).then(a.function.cmp(&b.function))
    };
    blocking.sort_by(order);
    lock_contention.sort_by(order);

    // Long polls: consecutive samples of one worker, in one stretch of work
    // since it last woke up (preemptions do not end it), inside the same
    // owner function. The stretch runs from the wake-up to the last sample.
    let mut long: BTreeMap<String, (Option<String>, Option<u32>, u64, u64)> = BTreeMap::new();
    let mut by_tid: BTreeMap<u32, Vec<&TimedSample>> = BTreeMap::new();
    for s in input.samples {
        if worker_tids.contains(&s.tid) {
            by_tid.entry(s.tid).or_default().push(s);
        }
    }
    let owner_of = |idx: usize| -> Option<&Frame> {
        let s = input.cpu.stacks.get(idx)?;
        let fr = frames(input.cpu, s);
        if role_of(&fr) == Some(ThreadRole::BlockingPool) {
            return None;
        }
        innermost_owner(&fr).map(|i| fr[i])
    };
    for samples in by_tid.values_mut() {
        samples.sort_by_key(|s| s.ts_ns);
        let mut streak: Option<(String, u64, u64)> = None; // (function, start ts, run start)
        for s in samples.iter() {
            let run_start = s.ts_ns.saturating_sub(s.oncpu_run_ns);
            let Some(frame) = owner_of(s.stack) else {
                streak = None;
                continue;
            };
            let name = frame.display_name();
            let continues = matches!(&streak, Some((f, start, rs)) if *f == name && s.oncpu_run_ns > 0 && rs.abs_diff(run_start) < 1_000_000 && s.ts_ns >= *start);
            if !continues {
                streak = Some((name.clone(), s.ts_ns, run_start));
                continue;
            }
            let (_, start, _) = streak.as_ref().expect("continues implies a streak");
            let length = s.ts_ns - start;
            let entry = long.entry(name).or_insert((frame.file.clone(), frame.line, 0, 0));
            if length >= input.long_poll_threshold_ns {
                entry.3 += 1;
            }
            entry.2 = entry.2.max(length);
        }
    }
    let mut long_polls: Vec<LongPoll> = long
        .into_iter()
        .filter(|(_, (_, _, _, n))| *n > 0)
        .map(|(function, (file, line, max, n))| LongPoll { function, file, line, max_ms: round2(max as f64 / 1e6), occurrences: n })
        .collect();
    long_polls.sort_by(|a, b| b.max_ms.total_cmp(&a.max_ms).then(a.function.cmp(&b.function)));

    let mut tasks: Vec<TaskRow> = task_cpu
        .keys()
        .chain(task_blocked.keys())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|task| {
            let on = task_cpu.get(&task).copied().unwrap_or(0);
            let (us, n) = task_blocked.get(&task).copied().unwrap_or((0, 0));
            TaskRow {
                on_cpu_pct: if worker_samples == 0 { 0.0 } else { round2(on as f64 * 100.0 / worker_samples as f64) },
                on_cpu_samples: on,
                blocked_ms: round2(us as f64 / 1000.0),
                blocking_intervals: n,
                task,
            }
        })
        .collect();
    tasks.sort_by(|a, b| b.on_cpu_samples.cmp(&a.on_cpu_samples).then(b.blocked_ms.total_cmp(&a.blocked_ms)).then(a.task.cmp(&b.task)));

    let (on, blocked, rq) = input
        .threads
        .iter()
        .filter(|t| worker_tids.contains(&t.tid))
        .fold((0u64, 0u64, 0u64), |acc, t| (acc.0 + t.oncpu_ns, acc.1 + t.blocked_ns, acc.2 + t.runqueue_ns));
    let in_tasks_ns = (blocked_in_tasks_us * 1000).min(blocked);
    let share = |ns: u64| if worker_time_ns == 0 { 0.0 } else { round2(ns as f64 * 100.0 / worker_time_ns as f64) };
    AsyncAnalysis {
        workers: WorkersSummary {
            workers: worker_tids.len(),
            blocking_pool_threads: pool_threads,
            busy_pct: share(on),
            blocked_in_tasks_pct: share(in_tasks_ns),
            idle_pct: share(blocked - in_tasks_ns),
            runqueue_pct: share(rq),
        },
        blocking,
        lock_contention,
        long_polls,
        tasks,
        long_polls_measured: !input.samples.is_empty(),
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::*;

    fn rt(f: &str) -> Frame {
        dep(f, false)
    }

    fn syscall(name: &str) -> Frame {
        kernel(&format!("{name} [syscall]"))
    }

    fn sample(p: &mut CpuProfile, tid: u32, fr: &[Frame], count: u64, events: u64) {
        let frames = fr.iter().cloned().map(|f| p.intern(f)).collect();
        p.push_sample(StackSample { thread: "tokio-rt-worker".into(), tid, frames, count, events, has_user_stack: true });
    }

    const WORKER: &str = "tokio::runtime::scheduler::multi_thread::worker::Context::run";

    #[test]
    fn workers_started_on_the_blocking_pool_are_workers_and_block_on_is_not() {
        let pool = rt("tokio::runtime::blocking::pool::Inner::run");
        let worker = rt(WORKER);
        assert_eq!(role_of(&[&pool, &worker]), Some(ThreadRole::Worker));
        assert_eq!(role_of(&[&pool]), Some(ThreadRole::BlockingPool));
        let main = rt("tokio::runtime::scheduler::multi_thread::MultiThread::block_on");
        assert_eq!(role_of(&[&main]), None);
    }

    #[test]
    fn a_pool_thread_waking_a_task_is_not_a_worker() {
        let pool = rt("tokio::runtime::blocking::pool::Inner::run");
        let wake = rt("tokio::runtime::scheduler::multi_thread::worker::<impl tokio::runtime::scheduler::multi_thread::handle::Handle>::schedule_task");
        assert_eq!(role_of(&[&pool, &wake]), Some(ThreadRole::BlockingPool));
        let current = rt("tokio::runtime::scheduler::current_thread::CoreGuard::block_on");
        assert_eq!(role_of(&[&current]), Some(ThreadRole::Worker));
    }

    #[test]
    fn a_tokio_named_thread_is_a_worker_by_name_only_when_no_stack_shows_the_workers() {
        let mut off = CpuProfile::default();
        sample(&mut off, 1, &[rt(WORKER), syscall("futex")], 900_000, 5);
        sample(&mut off, 2, &[rt(WORKER), syscall("futex")], 900_000, 5);
        // tid 3: a pool thread named like a worker, caught once starting up
        // (no pool frame yet); tid 4: one seen only by sched_switch.
        sample(&mut off, 3, &[rt("std::sys::pal::unix::thread::Thread::new::thread_start"), syscall("futex")], 20_000, 1);
        let threads: Vec<ThreadTime> = (1..=4).map(|tid| ThreadTime { tid, name: "tokio-rt-worker".into(), oncpu_ns: 1, blocked_ns: 1, ..Default::default() }).collect();
        let a = analyze(&AsyncInputs { cpu: &CpuProfile::default(), offcpu: &off, threads: &threads, samples: &[], long_poll_threshold_ns: 10_000_000 });
        assert_eq!(a.workers.workers, 2);
        // Without any worker stack, names decide.
        let a = analyze(&AsyncInputs { cpu: &CpuProfile::default(), offcpu: &CpuProfile::default(), threads: &threads, samples: &[], long_poll_threshold_ns: 10_000_000 });
        assert_eq!(a.workers.workers, 4);
    }

    #[test]
    fn blocking_calls_on_workers_are_found_at_the_owner_frame_and_idle_parks_are_not() {
        let mut off = CpuProfile::default();
        sample(&mut off, 1, &[rt(WORKER), owner("svc::middleware::{{closure}}", 5), rt("axum::middleware::Next::run"), owner("svc::handlers::report::{{closure}}", 40), owner("svc::load_template", 12), rt("std::fs::read_to_string"), syscall("fdatasync")], 40_000, 10);
        sample(&mut off, 1, &[rt(WORKER), rt("tokio::runtime::scheduler::multi_thread::park::Parker::park"), syscall("futex")], 900_000, 50);
        sample(&mut off, 2, &[rt(WORKER), owner("svc::record", 7), rt("std::sys::sync::mutex::futex::Mutex::lock_contended"), syscall("futex")], 8_000, 4);
        sample(&mut off, 3, &[rt("tokio::runtime::blocking::pool::Inner::run"), owner("svc::good", 3), rt("std::fs::read"), syscall("read")], 50_000, 5);
        let threads = vec![
            ThreadTime { tid: 1, oncpu_ns: 100_000_000, blocked_ns: 900_000_000, ..Default::default() },
            ThreadTime { tid: 2, oncpu_ns: 500_000_000, blocked_ns: 500_000_000, ..Default::default() },
            ThreadTime { tid: 3, oncpu_ns: 0, blocked_ns: 1_000_000_000, ..Default::default() },
        ];
        let a = analyze(&AsyncInputs { cpu: &CpuProfile::default(), offcpu: &off, threads: &threads, samples: &[], long_poll_threshold_ns: 10_000_000 });
        assert_eq!(a.workers.workers, 2);
        assert_eq!(a.workers.blocking_pool_threads, 1);
        assert_eq!(a.blocking.len(), 1, "{:?}", a.blocking);
        let b = &a.blocking[0];
        assert_eq!(b.function, "svc::load_template");
        assert_eq!(b.kind, BlockingKind::FileIo);
        assert_eq!(b.via.as_deref(), Some("std::fs::read_to_string"));
        assert_eq!(b.intervals, 10);
        assert!((b.blocked_ms - 40.0).abs() < 1e-9);
        assert!((b.worker_time_pct - 2.0).abs() < 1e-9, "{}", b.worker_time_pct);
        assert_eq!(a.lock_contention[0].function, "svc::record");
        assert_eq!(a.tasks.iter().find(|t| t.task == "svc::handlers::report").unwrap().blocking_intervals, 10);
    }

    #[test]
    fn consecutive_samples_in_one_run_and_one_function_are_a_long_poll() {
        let mut cpu = CpuProfile::default();
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::score", 20), dep("<u64>::wrapping_mul", true)], 3, 3);
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::cheap", 9)], 1, 1);
        let ms = 1_000_000;
        let samples = vec![
            TimedSample { tid: 1, ts_ns: 100 * ms, oncpu_run_ns: 2 * ms, stack: 0 },
            TimedSample { tid: 1, ts_ns: 110 * ms, oncpu_run_ns: 12 * ms, stack: 0 },
            TimedSample { tid: 1, ts_ns: 120 * ms, oncpu_run_ns: 22 * ms, stack: 0 },
            // A new run: the streak ends.
            TimedSample { tid: 1, ts_ns: 300 * ms, oncpu_run_ns: ms, stack: 1 },
        ];
        let a = analyze(&AsyncInputs { cpu: &cpu, offcpu: &CpuProfile::default(), threads: &[], samples: &samples, long_poll_threshold_ns: 10 * ms });
        assert_eq!(a.long_polls.len(), 1);
        assert_eq!(a.long_polls[0].function, "svc::score");
        assert!((a.long_polls[0].max_ms - 20.0).abs() < 1e-9);
        assert_eq!(a.long_polls[0].occurrences, 2);
    }
}
