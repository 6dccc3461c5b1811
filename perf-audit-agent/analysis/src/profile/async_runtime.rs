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
    /// Time since the thread last woke from a voluntary sleep (0: unknown).
    pub oncpu_run_ns: u64,
    /// How much of `oncpu_run_ns` the thread spent preempted, waiting in a
    /// run queue: not part of a poll's length.
    pub preempted_ns: u64,
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
    /// A blocking channel receive (std::sync::mpsc, crossbeam).
    ChannelRecv,
    /// `block_on` (futures, Tokio, pollster) called inside a task.
    BlockOn,
    /// Log lines (a tracing fmt layer, `log`, `println!`) written
    /// synchronously to stdout/stderr, a pipe or a terminal: not file I/O.
    Logging,
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
            BlockingKind::ChannelRecv => "a blocking channel receive",
            BlockingKind::BlockOn => "`block_on` inside a task",
            BlockingKind::Logging => "synchronous logging on the request path",
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

/// Estimated poll lengths of one owner function on workers. A poll cannot
/// outlast the worker's on-CPU stretch (from its wake-up to its next sleep,
/// `oncpu_run_ns` in each timed sample): an owner function that the samples
/// show from the start of a stretch was polled for about the time since the
/// wake-up (twice the time to a single sample, by symmetry; the time to the
/// last of consecutive samples plus half a period). Samples later in a
/// stretch after other code are not bounded by it and count only in the
/// share, so consecutive samples across awaits are not taken as one poll.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct LongPoll {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The longest estimated poll.
    pub max_ms: f64,
    /// Estimated polls at least the long-poll threshold (`--long-poll`).
    pub occurrences: u64,
    /// Time-weighted estimated poll length: half (99%) of this function's
    /// measured worker time was in polls at most this long.
    pub p50_ms: f64,
    /// Time-weighted: 90% of its polls were at most this long.
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Polls whose length the on-CPU stretches bound.
    pub polls_measured: u64,
    /// CPU samples on workers in this function.
    pub samples: u64,
    /// Share of all worker time (on + off CPU) on the CPU in this function.
    pub worker_time_pct: f64,
    /// Samples in which it was awaiting (an I/O resource, a driver's or a
    /// library's future below it): evidence that it is async code whose
    /// polls return `Pending`, which `spawn_blocking` cannot wrap.
    pub awaiting_samples: u64,
    /// Samples with a database driver below it (queries encoded, rows
    /// decoded).
    pub driver_samples: u64,
    /// Owner functions that called it in its samples (outermost first,
    /// each once): a callee of a reported poll is part of that poll.
    pub callers: Vec<String>,
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

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecognisedWorkers {
    pub kind: WorkerKind,
    pub threads: usize,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WorkersSummary {
    pub workers: usize,
    /// How the workers were recognised (kind, threads); empty when no
    /// runtime was recognised.
    pub recognised: Vec<RecognisedWorkers>,
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
    /// The CPU sampling period (1 / frequency).
    pub sample_period_ns: u64,
}

fn frames<'a>(p: &'a CpuProfile, s: &StackSample) -> Vec<&'a Frame> {
    s.frames.iter().map(|id| p.frame(*id)).collect()
}

/// How a thread was recognised as a runtime worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// Tokio's multi-thread scheduler loop: `scheduler::multi_thread::worker`
    /// (Tokio >= 1.23) or `thread_pool::worker` (Tokio 1.0-1.22).
    TokioMultiThread,
    /// A current-thread runtime's `block_on` thread:
    /// `scheduler::current_thread` (>= 1.23) or `basic_scheduler` (older),
    /// e.g. `#[tokio::main(flavor = "current_thread")]` or a runtime built
    /// in main.
    TokioCurrentThread,
    /// An actix-rt arbiter or system thread (one current-thread runtime per
    /// thread; actix-web's workers).
    ActixRt,
    /// No stack showed a scheduler loop; recognised by thread name only.
    ThreadName,
}

impl WorkerKind {
    pub fn describe(self) -> &'static str {
        match self {
            WorkerKind::TokioMultiThread => "Tokio multi-thread worker loop in their stacks (`scheduler::multi_thread::worker`, or `thread_pool::worker` on Tokio <= 1.22)",
            WorkerKind::TokioCurrentThread => "a Tokio current-thread runtime's `block_on` loop in their stacks (`scheduler::current_thread`, or `basic_scheduler` on Tokio <= 1.22)",
            WorkerKind::ActixRt => "an actix-rt arbiter/system runtime in their stacks or names (`actix-rt|system:N|arbiter:N`, `actix-server worker`)",
            WorkerKind::ThreadName => "thread name only (`tokio-runtime-worker`/`tokio-rt-worker`, no scheduler frame seen: stacks without symbols?)",
        }
    }
}

/// Frames only a thread running a scheduler's loop has. Any thread that
/// wakes a task runs scheduler code too (a blocking-pool thread finishing a
/// `tokio::fs` call runs `multi_thread::worker::<impl Handle>::schedule_task`,
/// Tokio 1.20's `thread_pool::worker::<impl Shared>::schedule`), so only the
/// loop's own functions count. Names read from Tokio's sources:
/// `runtime/scheduler/{multi_thread,multi_thread_alt}/worker.rs` (`run`,
/// `Context::run`, `Context::run_task`), `runtime/scheduler/current_thread`
/// (`CurrentThread::block_on`, `CoreGuard::block_on`, `Context::run_task`),
/// and before the 1.23 `scheduler` move `runtime/thread_pool/worker.rs` and
/// `runtime/basic_scheduler.rs` (`BasicScheduler::block_on`,
/// `CoreGuard::block_on`, `Context::run_task`; before 1.17 `Inner::block_on`
/// and `InnerGuard::block_on`); actix-rt's `Runtime::block_on`,
/// `SystemRunner` and `Arbiter` thread closures (`actix-rt` 2.x).
const WORKER_LOOPS: &[(&str, WorkerKind)] = &[
    ("tokio::runtime::scheduler::multi_thread::worker::run", WorkerKind::TokioMultiThread),
    ("tokio::runtime::scheduler::multi_thread::worker::Context::", WorkerKind::TokioMultiThread),
    ("tokio::runtime::scheduler::multi_thread_alt::worker::run", WorkerKind::TokioMultiThread),
    ("tokio::runtime::scheduler::multi_thread_alt::worker::Context::", WorkerKind::TokioMultiThread),
    ("tokio::runtime::thread_pool::worker::run", WorkerKind::TokioMultiThread),
    ("tokio::runtime::thread_pool::worker::Context::", WorkerKind::TokioMultiThread),
    ("actix_rt::arbiter::", WorkerKind::ActixRt),
    ("actix_rt::runtime::Runtime::block_on", WorkerKind::ActixRt),
    ("actix_rt::system::SystemRunner::", WorkerKind::ActixRt),
    ("actix_server::worker::ServerWorker::start", WorkerKind::ActixRt),
    ("tokio::runtime::scheduler::current_thread::CoreGuard::", WorkerKind::TokioCurrentThread),
    ("tokio::runtime::scheduler::current_thread::Context::", WorkerKind::TokioCurrentThread),
    ("tokio::runtime::scheduler::current_thread::CurrentThread::block_on", WorkerKind::TokioCurrentThread),
    ("tokio::runtime::basic_scheduler::CoreGuard", WorkerKind::TokioCurrentThread),
    ("tokio::runtime::basic_scheduler::Context::", WorkerKind::TokioCurrentThread),
    ("tokio::runtime::basic_scheduler::BasicScheduler", WorkerKind::TokioCurrentThread),
    ("tokio::runtime::basic_scheduler::Inner", WorkerKind::TokioCurrentThread),
];

/// Which worker loop a stack shows, if any (actix before the Tokio
/// current-thread loop it runs).
pub fn worker_kind(frames: &[&Frame]) -> Option<WorkerKind> {
    WORKER_LOOPS
        .iter()
        .find(|(prefix, _)| {
            frames.iter().any(|f| {
                f.function.starts_with(prefix)
                    // `BasicScheduler::spawn`/`schedule` run on waking threads.
                    && (!prefix.starts_with("tokio::runtime::basic_scheduler::BasicScheduler") || f.function.ends_with("block_on"))
            })
        })
        .map(|(_, kind)| *kind)
}

/// Thread names that say "runtime worker" unambiguously (Tokio's do not:
/// Tokio names its blocking-pool threads like its workers, and a
/// current-thread runtime's `tokio-runtime-worker` threads are all pool
/// threads). Names are cut to 15 bytes by the kernel.
pub fn worker_by_name(name: &str) -> bool {
    name.starts_with("actix-rt|system") || name.starts_with("actix-server wo")
}

fn tokio_worker_name(name: &str) -> bool {
    name.starts_with("tokio-runtime-w") || name.starts_with("tokio-rt-worker")
}

/// The role a stack shows. Tokio starts its multi-thread workers on
/// blocking-pool threads, so a worker's stack holds both markers: the
/// worker loop decides. The thread that calls `Runtime::block_on` on a
/// multi-thread runtime only waits; a current-thread runtime's
/// `block_on` thread is its worker.
pub fn role_of(frames: &[&Frame]) -> Option<ThreadRole> {
    if worker_kind(frames).is_some() {
        Some(ThreadRole::Worker)
    } else if frames.iter().any(|f| f.function.starts_with("tokio::runtime::blocking::pool")) {
        Some(ThreadRole::BlockingPool)
    } else {
        None
    }
}

/// `tokio::task::block_in_place`: the worker hands its core to another
/// thread and runs the closure as a blocking-pool thread would (the
/// sync-driver pattern, e.g. diesel behind `block_in_place`).
pub fn in_block_in_place(frames: &[&Frame]) -> bool {
    frames.iter().any(|f| f.function.contains("block_in_place") && (f.function.starts_with("tokio::") || f.function.starts_with("<tokio::")))
}

/// Code that runs off the async workers: on the blocking pool
/// (`spawn_blocking`, deadpool's `interact`) or inside `block_in_place`.
pub fn off_workers(frames: &[&Frame]) -> bool {
    role_of(frames) == Some(ThreadRole::BlockingPool) || in_block_in_place(frames)
}

/// The innermost frame of a scheduler loop, if the stack shows one.
fn innermost_loop(frames: &[&Frame]) -> Option<usize> {
    frames.iter().rposition(|f| worker_kind(std::slice::from_ref(f)).is_some())
}

/// The innermost owner frame inside a task: below the scheduler loop when
/// the stack shows it. The owner's `main` around a current-thread
/// runtime's `block_on` (the worker parked in it) is not task code.
fn innermost_owner(frames: &[&Frame]) -> Option<usize> {
    let i = frames.iter().rposition(|f| f.origin == Origin::Owner)?;
    match innermost_loop(frames) {
        Some(l) if i < l => None,
        _ => Some(i),
    }
}

/// The frame that names a task: where framework code (axum, tower, hyper,
/// tokio) last calls into the owner's code, i.e. the innermost owner frame
/// whose caller is not the owner's. A middleware of the owner's wraps every
/// handler; this picks the handler inside it.
/// Async fn bodies (`{{closure}}` frames) are preferred: a sync callback
/// such as a `FromRow` impl that sqlx calls is not a task.
fn task_root(frames: &[&Frame]) -> Option<usize> {
    let inside = innermost_loop(frames).map_or(0, |l| l + 1);
    let entries = || {
        (inside..frames.len())
            .rev()
            .filter(|&i| frames[i].origin == Origin::Owner && (i == 0 || frames[i - 1].origin != Origin::Owner))
    };
    entries().find(|&i| frames[i].function.ends_with("{{closure}}")).or_else(|| entries().next())
}

/// Frames of an async I/O resource (Tokio's sockets, mio's, Tokio's
/// readiness machinery): the socket is non-blocking, so time there is never
/// a blocking wait. A thread that leaves the CPU inside a non-blocking
/// `sendto`/`recvfrom` (e.g. mio's `<&std::net::TcpStream as Write>::write`)
/// was preempted or briefly waited for a socket lock, and a task polling
/// such a resource yields when it is not ready.
const ASYNC_IO: [&str; 7] = ["mio::", "tokio::net::", "tokio::io::", "tokio::runtime::io::", "tokio_util::codec", "<tokio::net::", "<mio::"];

/// Whether frames below an owner frame are inside an async I/O resource.
pub fn in_async_io(below: &[&Frame]) -> bool {
    below.iter().any(|f| ASYNC_IO.iter().any(|p| f.function.starts_with(p)))
}

/// Frames of a log or print writer: a tracing fmt layer, `log`'s
/// backends, std's stdout/stderr.
const LOG_WRITERS: [&str; 10] = ["std::io::stdio", "Stdout", "Stderr", "tracing_subscriber::fmt", "tracing_appender", "env_logger", "log4rs", "slog_term", "std::io::_print", "std::io::_eprint"];

/// What blocked, from the frames and, when the agent read it, the kind of
/// file descriptor the syscall used: a write to a pipe, a terminal or
/// `/dev/null` is not file I/O whatever the frames say; from a log writer
/// (or on fd 1/2) it is synchronous logging.
fn classify(below: &[&Frame], syscall: Option<&str>) -> (BlockingKind, Option<String>) {
    let (name, fd) = match syscall.and_then(syscalls::parse_leaf) {
        Some((name, fd)) => (Some(name), fd),
        None => (syscall, None),
    };
    let (kind, via) = classify_frames(below, name);
    let log_writer = below.iter().find(|f| LOG_WRITERS.iter().any(|n| f.function.contains(n))).map(|f| f.display_name());
    match (kind, fd) {
        // Waiting for stdout's lock (or a log writer's) while another
        // thread's log write blocks: the same cause, synchronous logging.
        (BlockingKind::SyncLock, _) if log_writer.is_some() => (BlockingKind::Logging, log_writer),
        (BlockingKind::FileIo, Some((_, syscalls::FdKind::File))) => (kind, via),
        (BlockingKind::FileIo | BlockingKind::Other, Some((n, syscalls::FdKind::Pipe | syscalls::FdKind::Tty | syscalls::FdKind::CharDevice))) => {
            if log_writer.is_some() || n == 1 || n == 2 {
                (BlockingKind::Logging, log_writer.or(via))
            } else {
                // A pipe to another process: not a file, no tokio::fs advice.
                (BlockingKind::Other, via)
            }
        }
        (BlockingKind::FileIo, Some((_, syscalls::FdKind::Socket))) => (BlockingKind::NetworkIo, via),
        // No fd kind (classic tracepoints): the frames decide.
        (BlockingKind::FileIo, None) if log_writer.is_some() => (BlockingKind::Logging, log_writer),
        _ => (kind, via),
    }
}

fn classify_frames(below: &[&Frame], syscall: Option<&str>) -> (BlockingKind, Option<String>) {
    let find = |needles: &[&str]| below.iter().find(|f| needles.iter().any(|n| f.function.contains(n))).map(|f| f.display_name());
    // `block_on` parks on a Condvar/futex inside: checked before locks.
    if let Some(via) = find(&["futures_executor::local_pool::block_on", "futures::executor::block_on", "tokio::runtime::runtime::Runtime::block_on", "tokio::runtime::Runtime::block_on", "tokio::runtime::handle::Handle::block_on", "tokio::runtime::park::CachedParkThread::block_on", "tokio::runtime::enter::Enter::block_on", "pollster::block_on", "async_std::task::block_on"]) {
        return (BlockingKind::BlockOn, Some(via));
    }
    if let Some(via) = find(&["std::sync::mpsc::", "std::sync::mpmc::", "crossbeam_channel::", "flume::"]) {
        return (BlockingKind::ChannelRecv, Some(via));
    }
    const LOCKS: [&str; 8] = ["std::sys::sync::mutex", "std::sync::poison::mutex", "std::sync::mutex", "std::sync::rwlock", "std::sys::sync::rwlock", "std::sync::poison::rwlock", "Condvar", "parking_lot"];
    if let Some(at) = below.iter().position(|f| LOCKS.iter().any(|n| f.function.contains(n))) {
        // A lock Tokio takes inside its own code (its `parking_lot`
        // mutexes, e.g. the blocking pool's when spawning) is not the
        // owner's lock: no lock advice for it.
        let kind = if below[..=at].iter().any(|f| f.function.starts_with("tokio::")) { BlockingKind::Other } else { BlockingKind::SyncLock };
        return (kind, Some(below[at].display_name()));
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
    worker_recognition(cpu, offcpu, threads).into_iter().map(|(tid, (role, _))| (tid, role)).collect()
}

/// Every thread's role and, for workers, how it was recognised.
pub fn worker_recognition(cpu: &CpuProfile, offcpu: &CpuProfile, threads: &[ThreadTime]) -> BTreeMap<u32, (ThreadRole, Option<WorkerKind>)> {
    // Per thread: events of worker stacks (by kind) and of pool stacks.
    let mut votes: HashMap<u32, (BTreeMap<WorkerKind, u64>, u64)> = HashMap::new();
    for (p, s) in cpu.stacks.iter().map(|s| (cpu, s)).chain(offcpu.stacks.iter().map(|s| (offcpu, s))) {
        let fr = frames(p, s);
        match (worker_kind(&fr), role_of(&fr)) {
            (Some(kind), _) => *votes.entry(s.tid).or_default().0.entry(kind).or_default() += s.events,
            (None, Some(ThreadRole::BlockingPool)) => votes.entry(s.tid).or_default().1 += s.events,
            _ => {}
        }
    }
    // Tokio's thread names only decide when no stack shows a worker loop
    // (stacks without symbols): Tokio names its blocking-pool threads like
    // its workers, so a pool thread caught only outside the pool's frames
    // (or seen only by sched_switch) would otherwise be counted as a worker.
    let names_show_workers = threads.iter().map(|t| t.name.as_str()).chain(cpu.stacks.iter().chain(offcpu.stacks.iter()).map(|s| s.thread.as_str())).any(worker_by_name);
    let stacks_show_workers = votes.values().any(|(w, _)| !w.is_empty()) || names_show_workers;
    let role_of_tid = |tid: u32, name: &str| -> (ThreadRole, Option<WorkerKind>) {
        let (w, b) = votes.get(&tid).map(|(w, b)| (w.values().sum::<u64>(), *b)).unwrap_or((0, 0));
        let kind = votes.get(&tid).and_then(|(w, _)| w.iter().max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k))).map(|(k, _)| *k));
        match kind {
            Some(kind) if w >= b => (ThreadRole::Worker, Some(kind)),
            _ if b > 0 => (ThreadRole::BlockingPool, None),
            _ if worker_by_name(name) => (ThreadRole::Worker, Some(WorkerKind::ActixRt)),
            _ if !stacks_show_workers && tokio_worker_name(name) => (ThreadRole::Worker, Some(WorkerKind::ThreadName)),
            _ => (ThreadRole::Other, None),
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
    let recognition = worker_recognition(input.cpu, input.offcpu, input.threads);
    let roles: BTreeMap<u32, ThreadRole> = recognition.iter().map(|(tid, (role, _))| (*tid, *role)).collect();
    let mut recognised: BTreeMap<WorkerKind, usize> = BTreeMap::new();
    for (_, kind) in recognition.values().filter(|(role, _)| *role == ThreadRole::Worker) {
        *recognised.entry(kind.unwrap_or(WorkerKind::ThreadName)).or_default() += 1;
    }
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
        if off_workers(&fr) {
            continue;
        }
        let Some(owner) = innermost_owner(&fr) else { continue };
        if in_async_io(&fr[owner + 1..]) {
            continue;
        }
        let syscall = fr.last().filter(|f| syscalls::parse_leaf(&f.function).is_some()).map(|f| f.function.clone());
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
        if let Some((sc, fd)) = syscall.as_deref().and_then(syscalls::parse_leaf) {
            acc.syscalls.insert(match fd {
                Some((n, k)) => format!("{sc} on fd {n} ({})", k.label()),
                None => sc.to_string(),
            });
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
        if off_workers(&fr) {
            continue;
        }
        worker_samples += s.count;
        if let Some(root) = task_root(&fr) {
            *task_cpu.entry(fr[root].display_name()).or_default() += s.count;
        }
        let Some(owner) = innermost_owner(&fr) else { continue };
        if in_async_io(&fr[owner + 1..]) {
            continue;
        }
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

    let long_polls = long_polls(input, &worker_tids, worker_time_ns);

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
            recognised: recognised.into_iter().map(|(kind, threads)| RecognisedWorkers { kind, threads }).collect(),
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


/// What one timed sample on a worker shows: its owner function (innermost
/// owner frame, outside the blocking pool) and whether that function was
/// polling an async I/O resource (where a task yields when it is not ready).
struct SampleOwner<'a> {
    frame: &'a Frame,
    name: String,
    at_io: bool,
    /// The function was awaiting in this sample (see [`awaits_below`]).
    awaits: bool,
    /// A database driver's frames below it.
    driver: bool,
    /// The owner frames above it (its callers), outermost first.
    callers: Vec<String>,
}

/// Whether the frames below an owner frame show it awaiting: polling an
/// async I/O resource, a database driver's future, or a library future
/// (`<X as Future>::poll`, an async body of a dependency). Code that
/// awaits cannot be wrapped whole in `spawn_blocking`.
pub fn awaits_below(below: &[&Frame]) -> bool {
    in_async_io(below)
        || below.iter().any(|f| {
            f.origin != Origin::Owner
                && (crate::profile::layers::is_driver(&f.function)
                    || (f.function.contains(" as core::future::future::Future>::poll") && !f.function.starts_with("<core::pin::Pin"))
                    || (f.function.ends_with("{{closure}}") && !matches!(crate::profile::layers::crate_of(&f.function), "core" | "std" | "alloc")))
        })
}

fn sample_owner<'a>(cpu: &'a CpuProfile, idx: usize) -> Option<SampleOwner<'a>> {
    let s = cpu.stacks.get(idx)?;
    let fr = frames(cpu, s);
    if off_workers(&fr) {
        return None;
    }
    let i = innermost_owner(&fr)?;
    let below = &fr[i + 1..];
    Some(SampleOwner {
        frame: fr[i],
        name: fr[i].display_name(),
        at_io: in_async_io(below),
        awaits: awaits_below(below),
        driver: below.iter().any(|f| crate::profile::layers::is_driver(&f.function)),
        callers: fr[..i].iter().filter(|f| f.origin == Origin::Owner).map(|f| f.display_name()).collect(),
    })
}

/// Two samples of one thread in the same on-CPU stretch: the same wake-up
/// time (to clock jitter).
fn same_run(a: &TimedSample, b: &TimedSample) -> bool {
    const JITTER_NS: u64 = 200_000;
    a.oncpu_run_ns > 0 && b.oncpu_run_ns > 0 && b.ts_ns >= a.ts_ns && a.ts_ns.saturating_sub(a.oncpu_run_ns).abs_diff(b.ts_ns.saturating_sub(b.oncpu_run_ns)) <= JITTER_NS
}

fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Poll lengths per owner function, bounded by the worker's on-CPU
/// stretches (see [`LongPoll`]).
fn long_polls(input: &AsyncInputs<'_>, worker_tids: &BTreeSet<u32>, worker_time_ns: u64) -> Vec<LongPoll> {
    let period = if input.sample_period_ns == 0 { 10_101_010 } else { input.sample_period_ns };
    #[derive(Default)]
    struct Acc<'a> {
        frame: Option<&'a Frame>,
        polls: Vec<u64>,
        samples: u64,
        awaiting: u64,
        driver: u64,
        callers: Vec<String>,
    }
    let mut by_fn: BTreeMap<String, Acc<'_>> = BTreeMap::new();
    let mut by_tid: BTreeMap<u32, Vec<&TimedSample>> = BTreeMap::new();
    for s in input.samples {
        if worker_tids.contains(&s.tid) {
            by_tid.entry(s.tid).or_default().push(s);
        }
    }
    for samples in by_tid.values_mut() {
        samples.sort_by_key(|s| s.ts_ns);
        let owners: Vec<Option<SampleOwner<'_>>> = samples.iter().map(|s| sample_owner(input.cpu, s.stack)).collect();
        let mut i = 0;
        while i < samples.len() {
            let Some(first) = &owners[i] else {
                i += 1;
                continue;
            };
            // A chain: consecutive samples in one stretch, in one function,
            // none of them polling an I/O resource (an await that yields).
            let mut j = i;
            while j + 1 < samples.len()
                && !first.at_io
                && same_run(samples[j], samples[j + 1])
                && samples[j + 1].ts_ns - samples[j].ts_ns <= 2 * period
                && owners[j + 1].as_ref().is_some_and(|o| o.name == first.name && !o.at_io)
            {
                j += 1;
            }
            let acc = by_fn.entry(first.name.clone()).or_default();
            // The function's location: the first sample's frame that has a
            // line (an address in compiler-generated code has none, or
            // DWARF's line 0, and one such sample must not name the finding).
            let has_line = |f: &Frame| f.line.is_some_and(|l| l > 0);
            if acc.frame.is_none_or(|f| !has_line(f)) {
                acc.frame = Some(first.frame);
            }
            acc.samples += (j - i + 1) as u64;
            for o in owners[i..=j].iter().flatten() {
                acc.awaiting += o.awaits as u64;
                acc.driver += o.driver as u64;
                for c in &o.callers {
                    if !acc.callers.contains(c) && acc.callers.len() < 8 {
                        acc.callers.push(c.clone());
                    }
                }
            }
            let (start, last) = (samples[i], samples[j]);
            let first_in_run = i == 0 || !same_run(samples[i - 1], start);
            if !first.at_io && start.oncpu_run_ns > 0 && first_in_run {
                // From the wake-up: the poll began at or after it.
                let wake = start.ts_ns.saturating_sub(start.oncpu_run_ns);
                // On the CPU: time preempted in a run queue is the
                // machine's load, not the poll's.
                let elapsed = (last.ts_ns - wake).saturating_sub(last.preempted_ns);
                let mut estimate = if i == j { 2 * elapsed } else { elapsed + period / 2 };
                // The stretch ended before the next one began.
                if let Some(next) = samples.get(j + 1).filter(|n| n.oncpu_run_ns > 0 && !same_run(last, n)) {
                    estimate = estimate.min(next.ts_ns.saturating_sub(next.oncpu_run_ns).saturating_sub(wake));
                }
                acc.polls.push(estimate.max(elapsed));
            } else if !first.at_io && j > i {
                // Consecutive samples later in a stretch: at least their
                // span, about half a period more on either side.
                acc.polls.push((last.ts_ns - start.ts_ns).saturating_sub(last.preempted_ns.saturating_sub(start.preempted_ns)) + period);
            }
            i = j + 1;
        }
    }
    let ms = |ns: u64| round2(ns as f64 / 1e6);
    let mut out: Vec<LongPoll> = by_fn
        .into_iter()
        .filter(|(_, acc)| !acc.polls.is_empty())
        .map(|(function, mut acc)| {
            acc.polls.sort_unstable();
            let frame = acc.frame.expect("a chain sets the frame");
            LongPoll {
                file: frame.file.clone(),
                line: frame.line,
                max_ms: ms(*acc.polls.last().unwrap_or(&0)),
                occurrences: acc.polls.iter().filter(|p| **p >= input.long_poll_threshold_ns).count() as u64,
                p50_ms: ms(nearest_rank(&acc.polls, 0.5)),
                p90_ms: ms(nearest_rank(&acc.polls, 0.9)),
                awaiting_samples: acc.awaiting,
                driver_samples: acc.driver,
                callers: acc.callers,
                p99_ms: ms(nearest_rank(&acc.polls, 0.99)),
                polls_measured: acc.polls.len() as u64,
                samples: acc.samples,
                worker_time_pct: if worker_time_ns == 0 { 0.0 } else { round2((acc.samples * period) as f64 * 100.0 / worker_time_ns as f64) },
                function,
            }
        })
        .collect();
    out.sort_by(|a, b| b.worker_time_pct.total_cmp(&a.worker_time_pct).then(b.p99_ms.total_cmp(&a.p99_ms)).then(a.function.cmp(&b.function)));
    out.truncate(30);
    out
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
        let a = analyze(&AsyncInputs { cpu: &CpuProfile::default(), offcpu: &off, threads: &threads, samples: &[], long_poll_threshold_ns: 10_000_000, sample_period_ns: 10_000_000 });
        assert_eq!(a.workers.workers, 2);
        // Without any worker stack, names decide.
        let a = analyze(&AsyncInputs { cpu: &CpuProfile::default(), offcpu: &CpuProfile::default(), threads: &threads, samples: &[], long_poll_threshold_ns: 10_000_000, sample_period_ns: 10_000_000 });
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
        let a = analyze(&AsyncInputs { cpu: &CpuProfile::default(), offcpu: &off, threads: &threads, samples: &[], long_poll_threshold_ns: 10_000_000, sample_period_ns: 10_000_000 });
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

    fn inputs<'a>(cpu: &'a CpuProfile, off: &'a CpuProfile, threads: &'a [ThreadTime], samples: &'a [TimedSample]) -> AsyncInputs<'a> {
        AsyncInputs { cpu, offcpu: off, threads, samples, long_poll_threshold_ns: 10_000_000, sample_period_ns: 10_000_000 }
    }

    #[test]
    fn consecutive_samples_from_the_wake_up_bound_one_poll() {
        let mut cpu = CpuProfile::default();
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::score", 20), dep("<u64>::wrapping_mul", true)], 3, 3);
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::cheap", 9)], 1, 1);
        let ms = 1_000_000;
        let samples = vec![
            TimedSample { tid: 1, ts_ns: 100 * ms, oncpu_run_ns: 2 * ms, preempted_ns: 0, stack: 0 },
            TimedSample { tid: 1, ts_ns: 110 * ms, oncpu_run_ns: 12 * ms, preempted_ns: 0, stack: 0 },
            TimedSample { tid: 1, ts_ns: 120 * ms, oncpu_run_ns: 22 * ms, preempted_ns: 0, stack: 0 },
            // A new run: the stretch (and the poll) ended before it.
            TimedSample { tid: 1, ts_ns: 300 * ms, oncpu_run_ns: ms, preempted_ns: 0, stack: 1 },
        ];
        let a = analyze(&inputs(&cpu, &CpuProfile::default(), &[], &samples));
        let score = a.long_polls.iter().find(|p| p.function == "svc::score").unwrap();
        // 22 ms from the wake-up to the last sample, plus half a period.
        assert!((score.p50_ms - 27.0).abs() < 1e-9, "{score:?}");
        assert_eq!((score.occurrences, score.polls_measured, score.samples), (1, 1, 3));
        let cheap = a.long_polls.iter().find(|p| p.function == "svc::cheap").unwrap();
        assert!((cheap.p50_ms - 2.0).abs() < 1e-9, "{cheap:?}");
    }

    /// A poll preempted by another process is as long as its time on the
    /// CPU: a ~1 ms key derivation that waited 10 ms in a run queue (a
    /// loaded machine) is not a 22 ms poll.
    #[test]
    fn run_queue_waits_inside_a_poll_are_not_its_length() {
        let mut cpu = CpuProfile::default();
        let ms = 1_000_000;
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::derive_key", 30)], 1, 1);
        let mut samples = Vec::new();
        let mut t = 1_000 * ms;
        for k in 0..20u64 {
            // 0.1..1.0 ms on the CPU since the wake-up; every other one was
            // also preempted for 10 ms before the sample.
            let cpu_run = (k % 10 + 1) * ms / 10;
            let preempted = if k % 2 == 0 { 10 * ms } else { 0 };
            samples.push(TimedSample { tid: 1, ts_ns: t, oncpu_run_ns: cpu_run + preempted, preempted_ns: preempted, stack: 0 });
            t += 40 * ms;
        }
        let threads = [ThreadTime { tid: 1, oncpu_ns: 200 * ms, blocked_ns: 600 * ms, ..Default::default() }];
        let a = analyze(&inputs(&cpu, &CpuProfile::default(), &threads, &samples));
        let key = a.long_polls.iter().find(|p| p.function == "svc::derive_key").unwrap();
        assert!(key.p99_ms <= 2.0, "preemption counted as poll time: {key:?}");
        assert!((0.5..=2.0).contains(&key.p50_ms), "{key:?}");
    }

    /// A sample whose address in the function has no line (compiler-made
    /// code: DWARF line 0) does not name the long poll's location when
    /// another sample of it has one.
    #[test]
    fn a_long_poll_is_located_by_a_sample_with_a_line() {
        let mut cpu = CpuProfile::default();
        let ms = 1_000_000;
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::derive_key", 0)], 1, 1);
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::derive_key", 83)], 1, 1);
        let mut samples = Vec::new();
        let mut t = 1_000 * ms;
        for k in 0..20u64 {
            samples.push(TimedSample { tid: 1, ts_ns: t, oncpu_run_ns: ms / 2, preempted_ns: 0, stack: (k % 2) as usize });
            t += 20 * ms;
        }
        let threads = [ThreadTime { tid: 1, oncpu_ns: 400 * ms, blocked_ns: 1_600 * ms, ..Default::default() }];
        let a = analyze(&inputs(&cpu, &CpuProfile::default(), &threads, &samples));
        let key = a.long_polls.iter().find(|p| p.function == "svc::derive_key").unwrap();
        assert_eq!(key.line, Some(83), "{key:?}");
    }

    #[test]
    fn polls_are_bounded_by_the_stretch_not_by_consecutive_samples() {
        let mut cpu = CpuProfile::default();
        let ms = 1_000_000;
        // 0: a ~1 ms key derivation per request on an idle worker; 1: a
        // handler whose polls are short; 2: a handler awaiting sequential
        // queries on a busy worker (its samples show the socket it awaits);
        // 3: framework code.
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::derive_key", 30)], 1, 1);
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::health", 5)], 1, 1);
        sample(&mut cpu, 1, &[rt(WORKER), owner("svc::report::{{closure}}", 50), rt("tokio::net::tcp::stream::TcpStream::poll_write_priv"), rt("mio::io_source::IoSource<T>::do_io")], 1, 1);
        sample(&mut cpu, 1, &[rt(WORKER), rt("hyper::proto::h1::dispatch::Dispatcher::poll_loop")], 1, 1);
        let mut samples = Vec::new();
        let mut t = 1_000 * ms;
        for k in 0..40u64 {
            // Sampled 0.1..1.0 ms after the wake-up: a ~1 ms poll.
            let run = (k % 10 + 1) * ms / 10;
            samples.push(TimedSample { tid: 1, ts_ns: t, oncpu_run_ns: run, preempted_ns: 0, stack: 0 });
            t += 20 * ms;
            samples.push(TimedSample { tid: 1, ts_ns: t, oncpu_run_ns: 40_000, preempted_ns: 0, stack: 1 });
            t += 20 * ms;
        }
        // One long busy stretch (no sleep for 60 ms): framework code, then
        // the query handler at its awaits, consecutive samples included.
        let wake = t;
        samples.push(TimedSample { tid: 1, ts_ns: wake + 5 * ms, oncpu_run_ns: 5 * ms, preempted_ns: 0, stack: 3 });
        for k in 1..6 {
            samples.push(TimedSample { tid: 1, ts_ns: wake + 5 * ms + k * 10 * ms, oncpu_run_ns: 5 * ms + k * 10 * ms, preempted_ns: 0, stack: 2 });
        }
        let threads = [ThreadTime { tid: 1, oncpu_ns: 400 * ms, blocked_ns: 1_600 * ms, ..Default::default() }];
        let a = analyze(&inputs(&cpu, &CpuProfile::default(), &threads, &samples));
        let key = a.long_polls.iter().find(|p| p.function == "svc::derive_key").unwrap();
        assert!((0.5..=2.0).contains(&key.p50_ms), "a ~1 ms poll within 2x: {key:?}");
        assert!(key.p99_ms <= 2.0 && key.worker_time_pct >= 1.0, "{key:?}");
        let health = a.long_polls.iter().find(|p| p.function == "svc::health").unwrap();
        assert!(health.p50_ms < 0.5, "{health:?}");
        assert!(a.long_polls.iter().all(|p| p.function != "svc::report"), "awaits are not one poll: {:?}", a.long_polls);

        let found = crate::findings::cpu_heavy_in_async::CpuHeavyInAsync::default();
        let evidence = crate::findings::Evidence { cpu: None, async_runtime: Some(&a), database: None, memory: None };
        let flagged: Vec<_> = crate::findings::Rule::check(&found, &evidence).into_iter().map(|f| (f.function, f.severity)).collect();
        assert_eq!(flagged, [("svc::derive_key".to_string(), crate::findings::Severity::P0)], "a 1 ms poll taking 20% of the worker");
    }

    #[test]
    fn old_tokio_current_thread_and_actix_runtimes_have_workers() {
        let f = |name: &str| rt(name);
        let kind = |names: &[&str]| {
            let frames: Vec<Frame> = names.iter().map(|n| f(n)).collect();
            worker_kind(&frames.iter().collect::<Vec<_>>())
        };
        // Tokio 1.20 (thread_pool, basic_scheduler), current Tokio, actix-rt.
        assert_eq!(kind(&["tokio::runtime::blocking::pool::Inner::run", "tokio::runtime::thread_pool::worker::run", "tokio::runtime::thread_pool::worker::Context::run_task"]), Some(WorkerKind::TokioMultiThread));
        assert_eq!(kind(&["tokio::runtime::basic_scheduler::BasicScheduler::block_on", "tokio::runtime::basic_scheduler::CoreGuard::block_on"]), Some(WorkerKind::TokioCurrentThread));
        assert_eq!(kind(&["tokio::runtime::scheduler::current_thread::CurrentThread::block_on"]), Some(WorkerKind::TokioCurrentThread));
        assert_eq!(kind(&["actix_rt::arbiter::Arbiter::with_tokio_rt::{{closure}}", "actix_rt::runtime::Runtime::block_on", "tokio::runtime::scheduler::current_thread::CoreGuard::block_on"]), Some(WorkerKind::ActixRt));
        // Waking a task from a pool thread runs scheduler code, not its loop.
        assert_eq!(kind(&["tokio::runtime::blocking::pool::Inner::run", "tokio::runtime::thread_pool::worker::<impl tokio::runtime::thread_pool::worker::Shared>::schedule"]), None);
        assert_eq!(kind(&["tokio::runtime::basic_scheduler::BasicScheduler::spawn"]), None);
        assert_eq!(kind(&["tokio::runtime::scheduler::multi_thread::MultiThread::block_on"]), None);
    }

    #[test]
    fn actix_arbiters_are_workers_and_their_blocking_pool_never_is() {
        // Two arbiters (names cut to 15 bytes), the actix system thread
        // running its runtime in main, and a blocking-pool thread (named
        // by Tokio's default) hashing a password inside spawn_blocking.
        let mut cpu = CpuProfile::default();
        let arbiter = [rt("actix_rt::arbiter::Arbiter::with_tokio_rt::{{closure}}"), rt("tokio::runtime::scheduler::current_thread::CoreGuard::block_on")];
        let hash = [rt("tokio::runtime::blocking::pool::Inner::run"), owner("svc::verify_password::{{closure}}", 12), dep("argon2::Argon2::verify_password", false)];
        let mut push = |tid: u32, thread: &str, fr: &[Frame]| {
            let frames = fr.iter().cloned().map(|f| cpu.intern(f)).collect();
            cpu.push_sample(StackSample { thread: thread.into(), tid, frames, count: 50, events: 50, has_user_stack: true });
        };
        push(10, "actix-rt|system", &arbiter);
        push(11, "actix-rt|system", &arbiter);
        push(20, "tokio-runtime-w", &hash);
        let threads: Vec<ThreadTime> = [(1, "svc"), (10, "actix-rt|system"), (11, "actix-rt|system"), (20, "tokio-runtime-w"), (21, "tokio-runtime-w")]
            .into_iter()
            .map(|(tid, name)| ThreadTime { tid, name: name.into(), oncpu_ns: 1, ..Default::default() })
            .collect();
        let a = analyze(&inputs(&cpu, &CpuProfile::default(), &threads, &[]));
        assert_eq!(a.workers.workers, 2, "{:?}", a.workers);
        assert_eq!(a.workers.recognised, [RecognisedWorkers { kind: WorkerKind::ActixRt, threads: 2 }]);
        assert_eq!(a.workers.blocking_pool_threads, 1);
        assert!(a.tasks.iter().all(|t| !t.task.contains("verify_password")), "{:?}", a.tasks);
        // Without stacks, the arbiter names still say "worker"; Tokio's
        // names do not while any runtime is recognised.
        let a = analyze(&inputs(&CpuProfile::default(), &CpuProfile::default(), &threads, &[]));
        assert_eq!(a.workers.workers, 2);
        // And with nothing recognised the summary says so (no kinds).
        let none: Vec<ThreadTime> = vec![ThreadTime { tid: 1, name: "svc".into(), ..Default::default() }];
        let a = analyze(&inputs(&CpuProfile::default(), &CpuProfile::default(), &none, &[]));
        assert!(a.workers.workers == 0 && a.workers.recognised.is_empty());
    }

    #[test]
    fn a_current_thread_runtime_in_main_is_the_worker_and_tokio_named_threads_are_its_pool() {
        let mut off = CpuProfile::default();
        let main = [rt("std::rt::lang_start"), rt("tokio::runtime::scheduler::current_thread::CoreGuard::block_on"), owner("svc::load::{{closure}}", 9), rt("std::fs::read_to_string"), syscall("read")];
        let frames = main.iter().cloned().map(|f| off.intern(f)).collect();
        off.push_sample(StackSample { thread: "svc".into(), tid: 1, frames, count: 30_000, events: 3, has_user_stack: true });
        let threads: Vec<ThreadTime> = [(1, "svc"), (2, "tokio-runtime-w")].into_iter().map(|(tid, name)| ThreadTime { tid, name: name.into(), oncpu_ns: 1, blocked_ns: 1_000_000_000, ..Default::default() }).collect();
        let a = analyze(&inputs(&CpuProfile::default(), &off, &threads, &[]));
        assert_eq!(a.workers.recognised, [RecognisedWorkers { kind: WorkerKind::TokioCurrentThread, threads: 1 }]);
        assert_eq!(a.blocking[0].function, "svc::load");
    }

    #[test]
    fn main_around_a_current_thread_block_on_is_not_task_code() {
        let mut off = CpuProfile::default();
        // The worker parked on its timer, under the owner's main.
        let parked = [owner("svc::main", 80), rt("tokio::runtime::runtime::Runtime::block_on"), rt("tokio::runtime::scheduler::current_thread::CoreGuard::block_on"), rt("tokio::runtime::park::Inner::park"), rt("std::sync::Condvar::wait"), syscall("futex")];
        let frames = parked.iter().cloned().map(|f| off.intern(f)).collect();
        off.push_sample(StackSample { thread: "svc".into(), tid: 1, frames, count: 900_000, events: 90, has_user_stack: true });
        let a = analyze(&inputs(&CpuProfile::default(), &off, &[], &[]));
        assert_eq!(a.workers.workers, 1);
        assert!(a.blocking.is_empty() && a.lock_contention.is_empty() && a.tasks.is_empty(), "{a:?}");
    }

    #[test]
    fn non_blocking_socket_io_is_not_blocking_and_blocking_waits_are() {
        let mut off = CpuProfile::default();
        let mut cpu = CpuProfile::default();
        // mio's non-blocking write: preempted or a socket lock, not a block.
        let mio_write = [rt(WORKER), owner("svc::query::{{closure}}", 30), rt("<&mio::net::tcp::stream::TcpStream as std::io::Write>::write"), rt("mio::io_source::IoSource<T>::do_io"), rt("<&std::net::tcp::TcpStream as std::io::Write>::write"), syscall("sendto")];
        sample(&mut off, 1, &mio_write, 5_000, 3);
        sample(&mut cpu, 1, &mio_write[..5], 7, 7);
        // A blocking std::net connect, a std mpsc receive, a block_on.
        sample(&mut off, 1, &[rt(WORKER), owner("svc::notify", 40), rt("std::net::tcp::TcpStream::connect"), syscall("connect")], 5_000, 1);
        sample(&mut off, 1, &[rt(WORKER), owner("svc::wait_job", 50), rt("std::sync::mpsc::Receiver<T>::recv"), rt("std::sync::mpmc::context::Context::wait_until"), syscall("futex")], 5_000, 1);
        sample(&mut off, 1, &[rt(WORKER), owner("svc::legacy", 60), rt("futures_executor::local_pool::block_on"), rt("std::thread::park"), syscall("futex")], 5_000, 1);
        let a = analyze(&inputs(&cpu, &off, &[], &[]));
        let kinds: Vec<(&str, BlockingKind)> = a.blocking.iter().map(|s| (s.function.as_str(), s.kind)).collect();
        assert!(kinds.iter().all(|(f, _)| *f != "svc::query"), "{kinds:?}");
        assert!(kinds.contains(&("svc::notify", BlockingKind::NetworkIo)), "{kinds:?}");
        assert!(kinds.contains(&("svc::wait_job", BlockingKind::ChannelRecv)), "{kinds:?}");
        assert!(kinds.contains(&("svc::legacy", BlockingKind::BlockOn)), "{kinds:?}");
        assert!(a.lock_contention.is_empty());
    }

    #[test]
    fn a_lock_inside_tokio_is_not_the_owners_lock() {
        let mut off = CpuProfile::default();
        // Tokio 1.20 with `parking_lot`: spawning onto the blocking pool
        // waits for the pool's mutex.
        sample(&mut off, 1, &[rt(WORKER), owner("svc::read_async::{{closure}}", 30), rt("tokio::runtime::blocking::pool::Spawner::spawn_task"), rt("tokio::loom::std::parking_lot::Mutex<T>::lock"), rt("parking_lot::raw_mutex::RawMutex::lock_slow"), syscall("futex")], 20_000, 1);
        sample(&mut off, 1, &[rt(WORKER), owner("svc::update", 52), rt("parking_lot::raw_mutex::RawMutex::lock_slow"), syscall("futex")], 5_000, 1);
        let a = analyze(&inputs(&CpuProfile::default(), &off, &[], &[]));
        let locks: Vec<&str> = a.lock_contention.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(locks, ["svc::update"]);
        assert!(a.blocking.iter().all(|s| s.kind == BlockingKind::Other), "{:?}", a.blocking);
    }

    /// Issue 26: a tracing fmt layer writing to stdout (a pipe) is
    /// synchronous logging, not file I/O; the same frames over a regular
    /// file's descriptor stay file I/O; a write to a pipe from other code
    /// is neither; without the fd's kind the log writer's frames decide.
    #[test]
    fn log_writes_to_a_pipe_are_logging_and_only_regular_files_are_file_io() {
        let fmt = [
            rt(WORKER),
            owner("svc::handlers::login::{{closure}}", 30),
            rt("tracing::event::Event::dispatch"),
            rt("<tracing_subscriber::fmt::fmt_layer::Layer<S,N,E,W> as tracing_subscriber::layer::Layer<S>>::on_event"),
            rt("<std::io::stdio::StdoutLock as std::io::Write>::write_all"),
        ];
        let with = |leaf: &str| {
            let mut v = fmt.to_vec();
            v.push(kernel(leaf));
            v
        };
        let mut off = CpuProfile::default();
        sample(&mut off, 1, &with(&crate::syscalls::leaf_label("write", Some((1, crate::syscalls::FdKind::Pipe)))), 30_000, 40);
        // Another worker waits for stdout's lock meanwhile: the same cause.
        let mut locked = fmt[..4].to_vec();
        locked.extend([rt("std::io::stdio::Stdout::lock"), rt("std::sys::sync::mutex::futex::Mutex::lock_contended"), syscall("futex")]);
        sample(&mut off, 1, &locked, 10_000, 8);
        let file_write = [rt(WORKER), owner("svc::audit_log::{{closure}}", 12), rt("<std::fs::File as std::io::Write>::write"), kernel(&crate::syscalls::leaf_label("write", Some((7, crate::syscalls::FdKind::File))))];
        sample(&mut off, 1, &file_write, 20_000, 10);
        let child = [rt(WORKER), owner("svc::feed_child::{{closure}}", 8), rt("<std::process::ChildStdin as std::io::Write>::write"), kernel(&crate::syscalls::leaf_label("write", Some((9, crate::syscalls::FdKind::Pipe))))];
        sample(&mut off, 1, &child, 20_000, 10);
        // Classic tracepoints: no fd kind; the fmt writer's frames decide.
        let mut old = fmt.to_vec();
        old[1] = owner("svc::handlers::logout::{{closure}}", 50);
        old.push(syscall("write"));
        sample(&mut off, 1, &old, 10_000, 5);
        let threads = vec![ThreadTime { tid: 1, oncpu_ns: 500_000_000, blocked_ns: 500_000_000, ..Default::default() }];
        let a = analyze(&inputs(&CpuProfile::default(), &off, &threads, &[]));
        let by = |f: &str| a.blocking.iter().find(|b| b.function == f).unwrap_or_else(|| panic!("{f}: {:?}", a.blocking));
        let login = by("svc::handlers::login");
        assert_eq!(login.kind, BlockingKind::Logging, "{login:?}");
        assert_eq!(login.syscalls, vec!["futex".to_string(), "write on fd 1 (pipe)".to_string()]);
        assert!(a.lock_contention.is_empty(), "{:?}", a.lock_contention);
        assert!(login.via.as_deref().unwrap().contains("tracing_subscriber::fmt"), "{login:?}");
        assert_eq!(by("svc::audit_log").kind, BlockingKind::FileIo);
        assert_eq!(by("svc::feed_child").kind, BlockingKind::Other);
        assert_eq!(by("svc::handlers::logout").kind, BlockingKind::Logging);
    }

    /// Issue 30: code inside `block_in_place` runs off the async workers
    /// (the worker handed its core over), like the blocking pool.
    #[test]
    fn block_in_place_is_off_the_workers_like_spawn_blocking() {
        let mut off = CpuProfile::default();
        let bip = [rt(WORKER), owner("svc::handlers::users::{{closure}}", 20), rt("tokio::runtime::scheduler::multi_thread::worker::block_in_place"), owner("svc::db::load_users", 44), rt("std::net::tcp::TcpStream::read"), syscall("recvfrom")];
        sample(&mut off, 1, &bip, 50_000, 20);
        let threads = vec![ThreadTime { tid: 1, oncpu_ns: 500_000_000, blocked_ns: 500_000_000, ..Default::default() }];
        let a = analyze(&inputs(&CpuProfile::default(), &off, &threads, &[]));
        assert!(a.blocking.is_empty(), "{:?}", a.blocking);
        let refs: Vec<&Frame> = bip.iter().collect();
        assert!(off_workers(&refs));
        assert!(!off_workers(&refs[..2]));
    }

    /// Issue 26: a poll's samples say whether the function awaits (futures
    /// or a driver below it) and who called it.
    #[test]
    fn long_polls_record_awaiting_driver_samples_and_callers() {
        let mut cpu = CpuProfile::default();
        let handler = owner("svc::handlers::feed::{{closure}}", 10);
        sample(&mut cpu, 1, &[rt(WORKER), handler.clone(), owner("svc::db::authors::{{closure}}", 30), rt("sqlx_core::query_as::QueryAs<DB,O,A>::fetch_one::{{closure}}"), rt("sqlx_postgres::connection::PgConnection::run")], 1, 1);
        sample(&mut cpu, 1, &[rt(WORKER), handler, owner("<svc::User as core::clone::Clone>::clone", 5)], 1, 1);
        let ms = 1_000_000;
        let samples = vec![
            TimedSample { tid: 1, ts_ns: 100 * ms, oncpu_run_ns: 3 * ms, preempted_ns: 0, stack: 0 },
            TimedSample { tid: 1, ts_ns: 200 * ms, oncpu_run_ns: 3 * ms, preempted_ns: 0, stack: 1 },
        ];
        let a = analyze(&inputs(&cpu, &CpuProfile::default(), &[], &samples));
        let db = a.long_polls.iter().find(|p| p.function == "svc::db::authors").unwrap();
        assert_eq!((db.awaiting_samples, db.driver_samples), (1, 1), "{db:?}");
        assert_eq!(db.callers, vec!["svc::handlers::feed".to_string()]);
        let clone = a.long_polls.iter().find(|p| p.function == "<svc::User as core::clone::Clone>::clone").unwrap();
        assert_eq!((clone.awaiting_samples, clone.driver_samples), (0, 0), "{clone:?}");
        assert_eq!(clone.callers, vec!["svc::handlers::feed".to_string()]);
        assert!((clone.p90_ms - 6.0).abs() < 1e-9, "{clone:?}");
    }
}
