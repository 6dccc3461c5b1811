//! The contract between the kernel side (`perf-audit-ebpf`) and the agent.
//!
//! Every type here crosses the user/kernel boundary through a BPF map or a
//! ring buffer, so each is `#[repr(C)]`, `Copy`, free of padding the verifier
//! could see as uninitialised, and its layout is pinned by the tests at the
//! bottom of this file. Changing a field means changing both sides at once;
//! the layout tests make that impossible to forget.
#![no_std]

pub mod memory;

/// Length of a task's `comm` as the kernel stores it (15 bytes + NUL).
pub const TASK_COMM_LEN: usize = 16;

/// Capacity of the in-kernel CPU sample aggregation map. At 99 Hz on a
/// handful of busy threads a 30 s audit produces far fewer distinct stacks;
/// when it is full, new stacks are counted as dropped, never blocking.
pub const CPU_STACK_COUNTS_CAPACITY: u32 = 65_536;

/// Capacity of the stack-trace map (distinct user or kernel stacks).
pub const STACK_TRACES_CAPACITY: u32 = 32_768;

/// Capacity of the set of target process ids (the daemon may watch many).
pub const TARGET_PIDS_CAPACITY: u32 = 4_096;

/// Key of `CPU_STACK_COUNTS`: one entry per distinct (thread, user stack,
/// kernel stack). The value is the number of samples (`u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuStackKey {
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Id in `STACK_TRACES` of the user stack, or negative when it could not
    /// be captured (the negative errno from `bpf_get_stackid`).
    pub user_stack_id: i32,
    /// Id in `STACK_TRACES` of the kernel stack, or negative when the sample
    /// was taken in user mode or could not be captured.
    pub kernel_stack_id: i32,
    /// The thread's name, cut by the kernel to 15 bytes.
    pub comm: [u8; TASK_COMM_LEN],
}

/// Bytes of user stack copied per sample in stack-copy mode (16 pages).
/// Deep async stacks (tokio -> axum -> handler futures) fit; perf's
/// `--call-graph dwarf` default is 8 KiB.
pub const USER_STACK_COPY_BYTES: usize = 65_536;

/// Page size the copy is chunked by: a copy stops at the first page that
/// cannot be read (the top of the stack mapping), keeping all pages before.
pub const USER_STACK_COPY_PAGE: usize = 4_096;

/// Size of the ring buffer carrying [`UserStackSample`]s (a power of two).
/// 32 MiB holds ~500 samples: over two seconds of backlog at 99 Hz on two
/// CPUs; records are submitted without wake-ups and the agent drains the
/// ring every 100 ms.
pub const USER_STACK_RING_BYTES: u32 = 32 * 1024 * 1024;

/// Byte offsets of the kernel fields a stack copy needs to undo pending
/// uretprobes (value of the `URETPROBE_OFFSETS` global, read by the agent
/// from the kernel's BTF; all zero when unknown, which disables the fix).
///
/// A uretprobe replaces its call's return address on the user stack with
/// the kernel's trampoline (`[uprobes]`), so a stack copied inside such a
/// call (a CPU sample inside a probed `malloc`) cannot be unwound past it.
/// The kernel keeps each replaced address in the thread's
/// `task_struct.utask->return_instances` list (`stack`: the slot's address,
/// `orig_ret_vaddr`: what it held); the copy puts those back, as the
/// kernel's own `perf_callchain_user` does for frame-pointer stacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UretprobeOffsets {
    /// `task_struct.utask` (0: the fix is off).
    pub task_utask: u32,
    /// `uprobe_task.return_instances`.
    pub utask_return_instances: u32,
    /// `return_instance.stack`.
    pub ri_stack: u32,
    /// `return_instance.orig_ret_vaddr`.
    pub ri_orig_ret_vaddr: u32,
    /// `return_instance.next`.
    pub ri_next: u32,
}

/// Kernel struct offsets for reading what a file descriptor refers to at
/// the syscall's exit (`current->files->fdt->fd[fd]->f_inode->i_mode`),
/// set by the agent from the kernel's BTF; `task_files == 0`: not read.
/// Reading it there, rather than from `/proc/PID/fd` later, cannot see a
/// reused number (a file closed at once and its fd taken by a socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdOffsets {
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdt_max_fds: u32,
    /// `fdtable.fd`.
    pub fdt_fd: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `inode.i_rdev`.
    pub inode_rdev: u32,
}

/// At most this many pending uretprobes of one thread are undone per copy
/// (innermost first; nested allocator calls go two or three deep).
pub const URETPROBE_FIXUPS: usize = 8;

/// Kinds of [`UserStackSample`].
pub mod sample_kind {
    /// A CPU sample (perf_event); `weight` is how long the thread had
    /// been working since it last blocked (preemptions included).
    pub const CPU: u32 = 0;
    /// The end of a blocking interval (at the syscall exit after the thread
    /// was switched out voluntarily); `weight` is the time it was off
    /// the CPU, `syscall_nr` the syscall that blocked, `addr` its first
    /// argument with bit 32 set ([`OFF_CPU_ARG_KNOWN`]) when the program
    /// could read it (raw tracepoints), else 0.
    pub const OFF_CPU: u32 = 1;
    /// Set in an off-CPU sample's `addr` when its low 32 bits are the
    /// syscall's first argument (a file descriptor for read/write...).
    pub const OFF_CPU_ARG_KNOWN: u64 = 1 << 32;
    /// Set when bits 34-49 hold the fd's `i_mode` and bits 50-61 its
    /// device's major number, read in the kernel at the syscall's exit.
    pub const OFF_CPU_MODE_KNOWN: u64 = 1 << 33;

    /// `(i_mode, rdev major)` of an off-CPU sample's fd, when the kernel
    /// read them.
    pub fn off_cpu_fd_mode(addr: u64) -> Option<(u32, u32)> {
        (addr & OFF_CPU_MODE_KNOWN != 0).then_some((((addr >> 34) & 0xffff) as u32, ((addr >> 50) & 0xfff) as u32))
    }

    /// The bits [`off_cpu_fd_mode`] reads.
    pub fn pack_fd_mode(mode: u16, rdev: u32) -> u64 {
        OFF_CPU_MODE_KNOWN | ((mode as u64) << 34) | ((((rdev >> 20) & 0xfff) as u64) << 50)
    }
    /// A sampled user page fault (one in `PAGE_FAULT_SAMPLE_PERIOD` of the
    /// CPU's faults, kept when it hit the target); `addr` is the faulting
    /// address, `weight` the allocation site (memory profile fingerprint)
    /// of the allocator call the thread is inside while probes are
    /// attached, else 0: a uretprobe hides the call's return address, and
    /// the agent completes the stack with the site's.
    pub const PAGE_FAULT: u32 = 2;
    /// An anonymous `mmap` of at least `MMAP_STACK_MIN_BYTES`, at its
    /// return; `addr` is the mapping's address, `weight` its length.
    pub const MMAP: u32 = 3;
    /// A `munmap` of at least `MMAP_STACK_MIN_BYTES`; `addr` and `weight`
    /// are its arguments.
    pub const MUNMAP: u32 = 4;
    /// A `brk` that moved the break up; `addr` is the new break, `weight`
    /// the growth in bytes.
    pub const BRK: u32 = 5;
}

/// One user page fault in this many is sampled with its stack (per CPU,
/// counted over all processes, kept when the fault is the target's: each
/// target fault is sampled with probability ~1/N). A fault costs the
/// kernel ~0.5-2 µs (zeroing a page); a sample costs a stack copy of a few
/// µs, so at 1 in 256 the sampling adds ~1-2% to a fault storm (touching
/// 1 GiB: 262 144 faults, ~1 000 samples), while a service growing by
/// 4 MiB/s still yields ~4 samples per second.
pub const PAGE_FAULT_SAMPLE_PERIOD: u64 = 256;

/// mmap/munmap calls at least this large (anonymous mappings for mmap) get
/// a stack copy; smaller ones are only counted. glibc serves allocations
/// of >= 128 KiB (its initial mmap threshold) with mmap.
pub const MMAP_STACK_MIN_BYTES: u64 = 64 * 1024;

/// Capacity of `MMAP_PENDING` (thread id -> length of an anonymous mmap
/// between its entry and its return). A full map drops the stack sample
/// (counted in `MappingDropped`), never the call's count.
pub const MMAP_PENDING_CAPACITY: u32 = 4_096;

/// One sample with registers and a copy of the user stack from `sp`
/// upward, unwound by the agent from `.eh_frame`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserStackSample {
    pub tgid: u32,
    pub tid: u32,
    /// Id in `STACK_TRACES` of the kernel stack, or negative (see
    /// [`CpuStackKey::kernel_stack_id`]).
    pub kernel_stack_id: i32,
    /// Bytes of `stack` that hold a copy of user memory starting at `sp`.
    pub stack_len: u32,
    /// A [`sample_kind`] value.
    pub kind: u32,
    /// The syscall number (off-CPU samples), or -1.
    pub syscall_nr: i32,
    /// `bpf_ktime_get_ns` at the sample.
    pub ts_ns: u64,
    /// See [`sample_kind`]: on-CPU run length so far or time blocked (ns),
    /// or bytes mapped, unmapped or grown.
    pub weight: u64,
    /// User-mode registers at the sample (the task's saved user registers
    /// when the sample hit the kernel).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// See [`sample_kind`]: the faulting or mapped address (0 for CPU
    /// samples; an off-CPU sample's syscall argument).
    pub addr: u64,
    pub comm: [u8; TASK_COMM_LEN],
    pub stack: [u8; USER_STACK_COPY_BYTES],
}

/// Per-thread scheduler state kept by the `sched_switch` program (value of
/// `SCHED_STATE`, keyed by thread id), with the thread's totals in the same
/// entry: one map lookup per side of a context switch, not two.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSchedState {
    /// When the thread last went on a CPU (0: not seen yet).
    pub oncpu_since_ns: u64,
    /// When it last went on a CPU after blocking (a voluntary switch-out):
    /// preemptions do not reset it, so `now - awake_since_ns` is how long it
    /// has been working without parking, e.g. the length of a task poll.
    pub awake_since_ns: u64,
    /// When it last went off a CPU.
    pub switched_out_ns: u64,
    /// Voluntary off-CPU time not yet attributed to a syscall exit.
    pub blocked_pending_ns: u64,
    /// Run-queue time (preempted) since `awake_since_ns`: a CPU sample
    /// carries it, so a poll's length is its time on the CPU, not the
    /// machine's load.
    pub preempted_since_awake_ns: u64,
    /// 1 when the last switch-out was voluntary (sleeping), 0 if preempted.
    pub voluntary: u32,
    pub tgid: u32,
    /// What the agent reads.
    pub totals: ThreadSchedTotals,
}

/// Per-thread scheduler totals (in [`ThreadSchedState`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSchedTotals {
    pub oncpu_ns: u64,
    /// Voluntary off-CPU time: blocked in a syscall, a lock, or idle.
    pub blocked_ns: u64,
    /// Involuntary off-CPU time: preempted and waiting in the run queue.
    pub runqueue_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// Blocking intervals shorter than the capture threshold (counted, not
    /// stack-attributed).
    pub short_blocks: u64,
    pub short_blocked_ns: u64,
    /// The longest stretch between waking up and blocking again
    /// (preemptions included).
    pub max_oncpu_run_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Capacity of the per-thread scheduler maps.
pub const SCHED_THREADS_CAPACITY: u32 = 16_384;

/// Values of the `USER_STACK_MODE` global.
pub mod user_stack_mode {
    /// Kernel frame-pointer walk (`bpf_get_stackid`), aggregated in-kernel.
    pub const FRAME_POINTER: u32 = 0;
    /// Copy registers and the stack into a ring buffer; the agent unwinds.
    pub const STACK_COPY: u32 = 1;
}

/// Bytes of each database write copied into a [`DbWriteRecord`]: enough for
/// the message headers and the statement text of typical queries (the agent
/// completes truncated texts from `pg_stat_statements`).
pub const DB_PAYLOAD_BYTES: usize = 512;

/// Bytes of user stack copied into a [`DbStackEvent`], once per new call
/// site (stack fingerprint): the call site in the owner's code is within
/// the innermost frames (sqlx, tokio I/O).
pub const DB_STACK_COPY_BYTES: usize = 32_768;

/// Bytes of user stack above the write's stack pointer whose code addresses
/// make its fingerprint: deep enough to reach the owner's frame above sqlx
/// and tokio, so two call sites of one statement get two fingerprints.
pub const DB_FINGERPRINT_BYTES: usize = 1_024;

/// Code ranges (the target's executable first) the fingerprint keeps.
pub const DB_TEXT_RANGES: u32 = 4;

/// Capacity of `DB_KNOWN_STACKS` (LRU): fingerprints whose stack was sent.
pub const DB_KNOWN_STACKS_CAPACITY: u32 = 16_384;

/// Capacity of `DB_FDS`, the (process, fd) pairs that are database
/// connections. A pool holds a few; the daemon may watch many processes.
pub const DB_FDS_CAPACITY: u32 = 4_096;

/// Size of the ring buffer carrying [`DbWriteRecord`]s (a power of two):
/// ~28,700 writes of 584 bytes, ~2 s of backlog at 14,000 writes/s (the
/// agent runs at nice 19 while the target is measured and may be drained
/// late on a busy machine).
pub const DB_EVENTS_RING_BYTES: u32 = 16 * 1024 * 1024;

/// Size of the ring buffer carrying [`DbStackEvent`]s (one per new call
/// site; ~120 in flight).
pub const DB_STACKS_RING_BYTES: u32 = 4 * 1024 * 1024;

/// Key of `DB_FDS`: a socket of a target process connected to the database.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DbFdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Values of [`DbWriteRecord::syscall`].
pub mod db_syscall {
    pub const WRITE: u32 = 0;
    pub const SENDTO: u32 = 1;
    /// Only the first `iovec` is copied.
    pub const WRITEV: u32 = 2;
    /// Only the first `iovec` of the message is copied.
    pub const SENDMSG: u32 = 3;
}

/// One write of a target thread to a database connection: the first bytes
/// written (PostgreSQL frontend messages, parsed by the agent) and the
/// fingerprint of its user stack (`site`); the stack itself comes once per
/// fingerprint as a [`DbStackEvent`], so a busy service costs ~600 bytes
/// per write instead of a stack copy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DbWriteRecord {
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    /// A `db_syscall` value.
    pub syscall: u32,
    /// Bytes the syscall was asked to write (first iovec for writev).
    pub len: u64,
    /// `bpf_ktime_get_ns` at the syscall entry (monotonic).
    pub ts_ns: u64,
    /// Stack fingerprint (0: registers unavailable).
    pub site: u64,
    /// Bytes of `payload` that hold a copy of the written data.
    pub payload_len: u32,
    /// The database connection whose answer this thread read last, when
    /// nothing else came between that read and this write (no read from
    /// another socket, no send elsewhere, no sleep on a futex):
    /// this write waited for that answer. [`NO_ANSWER`] otherwise.
    pub answer_fd: u32,
    /// Execute (`E`) messages in the whole write, found by hopping from
    /// message header to message header past the captured prefix (at most
    /// [`DB_WALK_HOPS`] messages), when the write is longer than the
    /// prefix: the executions of a pipelined batch or of a Bind too large
    /// for the prefix. Valid only when `walk` is [`DB_WALK_COMPLETE`].
    pub executes: u32,
    /// A `DB_WALK_*` value.
    pub walk: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub payload: [u8; DB_PAYLOAD_BYTES],
}

/// Message headers read past the prefix of one write, at most.
pub const DB_WALK_HOPS: u32 = 64;
/// [`DbWriteRecord::walk`]: the write fit in the prefix (nothing walked).
pub const DB_WALK_NONE: u32 = 0;
/// Every message of the write was counted.
pub const DB_WALK_COMPLETE: u32 = 1;
/// More than [`DB_WALK_HOPS`] messages, a header that is not one, or an
/// unreadable page: the count is not used.
pub const DB_WALK_INCOMPLETE: u32 = 2;

/// [`DbWriteRecord::answer_fd`] of a write not preceded by a database answer.
pub const NO_ANSWER: u32 = u32::MAX;

/// Value of `DB_THREADS` (per thread): the database connection whose
/// answer the thread read last ([`NO_ANSWER`]: none pending), and
/// the database connection of the read in progress (entry to exit). One
/// entry per thread, made once and then updated in place: the programs
/// that keep it run on every read, so they take no lock after the first.
///
/// `xact_fd`: the database connection this thread last saw inside a
/// transaction (its last answer there ended with ReadyForQuery status `T`
/// or `E`), [`NO_ANSWER`] when none: its sends to and receives from other
/// sockets are reported as [`DbIoEvent`]s while it is set. `read_buf`: the
/// buffer of the database read in progress (its last bytes are looked at
/// when it returns).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbThread {
    pub answer_fd: u32,
    pub reading_fd: u32,
    pub xact_fd: u32,
    pub _pad: u32,
    pub read_buf: u64,
}

/// Values of [`DbIoEvent::kind`].
pub mod db_io {
    /// A read of a database connection whose last bytes were a
    /// ReadyForQuery message: the server finished a statement (or a ping);
    /// `status` is its transaction status byte (`I` idle, `T` in a
    /// transaction, `E` in a failed transaction).
    pub const ANSWER: u8 = 1;
    /// A send (`sendto`, `sendmsg`, `writev`) to another socket by a thread
    /// whose last database answer was inside a transaction (`xact_fd`).
    pub const OTHER_SEND: u8 = 2;
    /// A receive (`recvfrom`) from another socket by such a thread.
    pub const OTHER_RECV: u8 = 3;
}

/// One small event of the database connections' life besides the writes:
/// answers (the end of each statement, with the server's transaction
/// status) and other sockets' I/O inside transactions. Sent to `DB_IO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbIoEvent {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// The database connection (ANSWER) or the other socket.
    pub fd: u32,
    /// The database connection in a transaction, for OTHER_* (else [`NO_ANSWER`]).
    pub xact_fd: u32,
    /// A [`db_io`] value.
    pub kind: u8,
    /// ANSWER: the ReadyForQuery status byte.
    pub status: u8,
    pub _pad: [u8; 6],
}

/// Size of the ring buffer carrying [`DbIoEvent`]s: 32,768 events.
pub const DB_IO_RING_BYTES: u32 = 1024 * 1024;

/// Capacity of `DB_THREADS` (LRU: threads that exit age out).
pub const DB_THREADS_CAPACITY: u32 = 16_384;

/// The user registers and stack of the first write seen with a given stack
/// fingerprint, unwound by the agent like a CPU sample in stack-copy mode,
/// so every write with that fingerprint is tied to the code that issued it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DbStackEvent {
    pub tgid: u32,
    pub tid: u32,
    pub site: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of `stack` that hold a copy of user memory starting at `sp`.
    pub stack_len: u32,
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub stack: [u8; DB_STACK_COPY_BYTES],
}

/// Slots of the per-CPU `COUNTERS` array. The agent sums them over CPUs and
/// shows every one of them in the report: nothing is dropped silently.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Samples that hit a target thread (whether or not they were stored).
    CpuSamples = 0,
    /// Samples lost because `CPU_STACK_COUNTS` was full.
    CpuSamplesDroppedMapFull = 1,
    /// Samples whose user stack could not be captured.
    CpuUserStackFailed = 2,
    /// Samples whose kernel stack could not be captured (other than the
    /// expected "sample was in user mode").
    CpuKernelStackFailed = 3,
    /// Stack-copy samples lost because the ring buffer was full.
    CpuSamplesDroppedRingFull = 4,
    /// Stack-copy samples whose user stack could not be read at all.
    CpuUserStackCopyFailed = 5,
    /// Blocking intervals long enough to be captured with a stack.
    OffCpuSamples = 6,
    /// Off-CPU samples lost because the ring buffer was full.
    OffCpuDroppedRingFull = 7,
    /// Scheduler events lost because a per-thread map was full.
    SchedStateMapFull = 8,
    /// Writes of a target to one of its database connections.
    DbWrites = 9,
    /// Database writes lost because the `DB_EVENTS` ring buffer was full.
    DbWritesDroppedRingFull = 10,
    /// Database writes whose bytes could not be read.
    DbPayloadReadFailed = 11,
    /// New call sites whose user stack could not be read or sent (full
    /// `DB_STACKS` ring; the next write from that site tries again).
    DbUserStackCopyFailed = 12,
    /// Page-fault samples that hit a target thread (1 in
    /// `PAGE_FAULT_SAMPLE_PERIOD` of its faults).
    PageFaultSamples = 13,
    /// Page-fault samples lost because the ring buffer was full.
    PageFaultDroppedRingFull = 14,
    /// `mmap` calls of the target (any size, any kind).
    MmapCalls = 15,
    /// Bytes asked for by those calls.
    MmapBytes = 16,
    /// `munmap` calls of the target, and their bytes.
    MunmapCalls = 17,
    MunmapBytes = 18,
    /// `brk` calls that moved the break up or down, and by how much.
    BrkGrowCalls = 19,
    BrkGrowBytes = 20,
    BrkShrinkBytes = 21,
    /// mmap/munmap/brk stack samples lost: the ring buffer was full, or
    /// (mmap) `MMAP_PENDING` was full between entry and return.
    MappingDropped = 22,
    /// Off-CPU blocks long enough for a stack but over the per-CPU budget
    /// (`OFFCPU_MAX_PER_SEC`, the daemon's bound): counted, not copied.
    OffCpuRateLimited = 23,
    /// Their total time blocked (ns).
    OffCpuRateLimitedNs = 24,
}

/// Number of slots in `COUNTERS` (room for later collectors).
pub const COUNTER_SLOTS: u32 = 32;

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Counter; 25] = [
        Counter::CpuSamples,
        Counter::CpuSamplesDroppedMapFull,
        Counter::CpuUserStackFailed,
        Counter::CpuKernelStackFailed,
        Counter::CpuSamplesDroppedRingFull,
        Counter::CpuUserStackCopyFailed,
        Counter::OffCpuSamples,
        Counter::OffCpuDroppedRingFull,
        Counter::SchedStateMapFull,
        Counter::DbWrites,
        Counter::DbWritesDroppedRingFull,
        Counter::DbPayloadReadFailed,
        Counter::DbUserStackCopyFailed,
        Counter::PageFaultSamples,
        Counter::PageFaultDroppedRingFull,
        Counter::MmapCalls,
        Counter::MmapBytes,
        Counter::MunmapCalls,
        Counter::MunmapBytes,
        Counter::BrkGrowCalls,
        Counter::BrkGrowBytes,
        Counter::BrkShrinkBytes,
        Counter::MappingDropped,
        Counter::OffCpuRateLimited,
        Counter::OffCpuRateLimitedNs,
    ];

    /// Slot index in `COUNTERS`.
    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// Values of the `FILTER_MODE` global.
pub mod filter_mode {
    /// Only processes whose tgid is a key of `TARGET_PIDS`.
    pub const LISTED_PIDS: u32 = 0;
    /// Every process on the machine (daemon, system-wide).
    pub const ALL: u32 = 1;
}

/// Names of the maps and programs, shared so that a rename on one side is a
/// compile error on the other, not a runtime "map not found".
pub mod names {
    pub const CPU_SAMPLE_PROGRAM: &str = "cpu_sample";
    pub const CPU_STACK_COUNTS: &str = "CPU_STACK_COUNTS";
    pub const STACK_TRACES: &str = "STACK_TRACES";
    pub const TARGET_PIDS: &str = "TARGET_PIDS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FILTER_MODE: &str = "FILTER_MODE";
    pub const USER_STACK_MODE: &str = "USER_STACK_MODE";
    pub const URETPROBE_OFFSETS: &str = "URETPROBE_OFFSETS";
    pub const USER_STACK_SAMPLES: &str = "USER_STACK_SAMPLES";
    pub const SCHED_SWITCH_PROGRAM: &str = "sched_switch";
    pub const SYSCALL_EXIT_PROGRAM: &str = "syscall_exit";
    pub const SCHED_SWITCH_RAW_PROGRAM: &str = "sched_switch_raw";
    pub const SYSCALL_EXIT_RAW_PROGRAM: &str = "syscall_exit_raw";
    pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    pub const FD_OFFSETS: &str = "FD_OFFSETS";
    pub const SCHED_STATE: &str = "SCHED_STATE";
    pub const OFFCPU_MIN_NS: &str = "OFFCPU_MIN_NS";
    pub const OFFCPU_MAX_PER_SEC: &str = "OFFCPU_MAX_PER_SEC";
    pub const OFFCPU_BUDGET: &str = "OFFCPU_BUDGET";
    pub const DB_WRITE_PROGRAM: &str = "db_write";
    pub const DB_SENDTO_PROGRAM: &str = "db_sendto";
    pub const DB_WRITEV_PROGRAM: &str = "db_writev";
    pub const DB_SENDMSG_PROGRAM: &str = "db_sendmsg";
    pub const DB_FDS: &str = "DB_FDS";
    pub const DB_EVENTS: &str = "DB_EVENTS";
    pub const DB_STACKS: &str = "DB_STACKS";
    pub const DB_TEXT: &str = "DB_TEXT";
    pub const DB_IO: &str = "DB_IO";
    pub const DB_READ_ENTER_PROGRAM: &str = "db_read_enter";
    pub const DB_READ_EXIT_PROGRAM: &str = "db_read_exit";
    pub const DB_RECVFROM_ENTER_PROGRAM: &str = "db_recvfrom_enter";
    pub const DB_RECVFROM_EXIT_PROGRAM: &str = "db_recvfrom_exit";
    pub const DB_FUTEX_PROGRAM: &str = "db_futex";
    /// (program, `syscalls:` tracepoint) of the database wire tracer: every
    /// syscall a socket write may use, and what tells which answer a write
    /// waited for (reads of database sockets, reads from other sockets,
    /// futex waits). `cargo xtask bench database` traces the same ones.
    pub const DB_TRACEPOINTS: [(&str, &str); 9] = [
        (DB_WRITE_PROGRAM, "sys_enter_write"),
        (DB_SENDTO_PROGRAM, "sys_enter_sendto"),
        (DB_WRITEV_PROGRAM, "sys_enter_writev"),
        (DB_SENDMSG_PROGRAM, "sys_enter_sendmsg"),
        (DB_READ_ENTER_PROGRAM, "sys_enter_read"),
        (DB_READ_EXIT_PROGRAM, "sys_exit_read"),
        (DB_RECVFROM_ENTER_PROGRAM, "sys_enter_recvfrom"),
        (DB_RECVFROM_EXIT_PROGRAM, "sys_exit_recvfrom"),
        (DB_FUTEX_PROGRAM, "sys_enter_futex"),
    ];
    pub const PAGE_FAULT_PROGRAM: &str = "page_fault_sample";
    pub const MMAP_ENTER_PROGRAM: &str = "mmap_enter";
    pub const MMAP_EXIT_PROGRAM: &str = "mmap_exit";
    pub const MUNMAP_ENTER_PROGRAM: &str = "munmap_enter";
    pub const BRK_EXIT_PROGRAM: &str = "brk_exit";
    pub const MMAP_PENDING: &str = "MMAP_PENDING";
    pub const LAST_BRK: &str = "LAST_BRK";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding (checked by the
    // layout tests), every bit pattern valid.
    unsafe impl aya::Pod for super::CpuStackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UserStackSample {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadSchedState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DbFdKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DbWriteRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DbStackEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DbIoEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UretprobeOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FdOffsets {}
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn cpu_stack_key_layout_is_pinned() {
        assert_eq!(size_of::<CpuStackKey>(), 32);
        assert_eq!(align_of::<CpuStackKey>(), 4);
        assert_eq!(offset_of!(CpuStackKey, tgid), 0);
        assert_eq!(offset_of!(CpuStackKey, tid), 4);
        assert_eq!(offset_of!(CpuStackKey, user_stack_id), 8);
        assert_eq!(offset_of!(CpuStackKey, kernel_stack_id), 12);
        assert_eq!(offset_of!(CpuStackKey, comm), 16);
    }

    #[test]
    fn fd_offsets_layout_and_mode_bits_are_pinned() {
        assert_eq!(size_of::<FdOffsets>(), 28);
        assert_eq!(offset_of!(FdOffsets, inode_rdev), 24);
        let packed = sample_kind::pack_fd_mode(0o020620, (136 << 20) | 3) | sample_kind::OFF_CPU_ARG_KNOWN | 2;
        assert_eq!(sample_kind::off_cpu_fd_mode(packed), Some((0o020620, 136)));
        assert_eq!(packed as u32, 2);
        assert_eq!(sample_kind::off_cpu_fd_mode(sample_kind::OFF_CPU_ARG_KNOWN | 1), None);
    }

    #[test]
    fn uretprobe_offsets_layout_is_pinned() {
        assert_eq!(size_of::<UretprobeOffsets>(), 20);
        assert_eq!(offset_of!(UretprobeOffsets, task_utask), 0);
        assert_eq!(offset_of!(UretprobeOffsets, ri_next), 16);
    }

    #[test]
    fn user_stack_sample_layout_is_pinned() {
        assert_eq!(offset_of!(UserStackSample, tgid), 0);
        assert_eq!(offset_of!(UserStackSample, tid), 4);
        assert_eq!(offset_of!(UserStackSample, kernel_stack_id), 8);
        assert_eq!(offset_of!(UserStackSample, stack_len), 12);
        assert_eq!(offset_of!(UserStackSample, kind), 16);
        assert_eq!(offset_of!(UserStackSample, syscall_nr), 20);
        assert_eq!(offset_of!(UserStackSample, ts_ns), 24);
        assert_eq!(offset_of!(UserStackSample, weight), 32);
        assert_eq!(offset_of!(UserStackSample, ip), 40);
        assert_eq!(offset_of!(UserStackSample, sp), 48);
        assert_eq!(offset_of!(UserStackSample, bp), 56);
        assert_eq!(offset_of!(UserStackSample, addr), 64);
        assert_eq!(offset_of!(UserStackSample, comm), 72);
        assert_eq!(offset_of!(UserStackSample, stack), 88);
        assert_eq!(size_of::<UserStackSample>(), 88 + USER_STACK_COPY_BYTES);
        assert_eq!(align_of::<UserStackSample>(), 8);
        assert_eq!(USER_STACK_COPY_BYTES % USER_STACK_COPY_PAGE, 0);
        assert!(USER_STACK_RING_BYTES.is_power_of_two());
    }

    #[test]
    fn sched_maps_values_have_no_padding() {
        assert_eq!(size_of::<ThreadSchedState>(), 48 + 72);
        assert_eq!(offset_of!(ThreadSchedState, voluntary), 40);
        assert_eq!(offset_of!(ThreadSchedState, totals), 48);
        assert_eq!(size_of::<ThreadSchedTotals>(), 72);
        assert_eq!(offset_of!(ThreadSchedTotals, tgid), 64);
    }

    #[test]
    fn db_write_event_layout_is_pinned() {
        assert_eq!(size_of::<DbFdKey>(), 8);
        assert_eq!(offset_of!(DbWriteRecord, tgid), 0);
        assert_eq!(offset_of!(DbWriteRecord, tid), 4);
        assert_eq!(offset_of!(DbWriteRecord, fd), 8);
        assert_eq!(offset_of!(DbWriteRecord, syscall), 12);
        assert_eq!(offset_of!(DbWriteRecord, len), 16);
        assert_eq!(offset_of!(DbWriteRecord, ts_ns), 24);
        assert_eq!(offset_of!(DbWriteRecord, site), 32);
        assert_eq!(offset_of!(DbWriteRecord, payload_len), 40);
        assert_eq!(offset_of!(DbWriteRecord, answer_fd), 44);
        assert_eq!(offset_of!(DbWriteRecord, executes), 48);
        assert_eq!(offset_of!(DbWriteRecord, walk), 52);
        assert_eq!(offset_of!(DbWriteRecord, comm), 56);
        assert_eq!(offset_of!(DbWriteRecord, payload), 72);
        assert_eq!(size_of::<DbWriteRecord>(), 72 + DB_PAYLOAD_BYTES);
        assert_eq!(size_of::<DbThread>(), 24);
        assert_eq!(offset_of!(DbThread, xact_fd), 8);
        assert_eq!(offset_of!(DbThread, read_buf), 16);
        assert_eq!(size_of::<DbIoEvent>(), 32);
        assert_eq!(offset_of!(DbIoEvent, fd), 16);
        assert_eq!(offset_of!(DbIoEvent, kind), 24);
        assert!(DB_IO_RING_BYTES.is_power_of_two());
        assert_eq!(offset_of!(DbStackEvent, site), 8);
        assert_eq!(offset_of!(DbStackEvent, ip), 16);
        assert_eq!(offset_of!(DbStackEvent, stack_len), 40);
        assert_eq!(offset_of!(DbStackEvent, comm), 48);
        assert_eq!(offset_of!(DbStackEvent, stack), 64);
        assert_eq!(size_of::<DbStackEvent>(), 64 + DB_STACK_COPY_BYTES);
        assert_eq!(DB_FINGERPRINT_BYTES % 8, 0);
        assert!(DB_STACKS_RING_BYTES.is_power_of_two());
        assert_eq!(DB_STACK_COPY_BYTES % USER_STACK_COPY_PAGE, 0);
        assert!(DB_PAYLOAD_BYTES.is_power_of_two());
        assert!(DB_EVENTS_RING_BYTES.is_power_of_two());
    }

    #[test]
    fn counter_slots_are_dense_and_fit() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.slot() as usize, i);
        }
        assert!(Counter::ALL.len() as u32 <= COUNTER_SLOTS);
    }
}
