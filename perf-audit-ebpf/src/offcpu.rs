//! Off-CPU time: `sched_switch` keeps, per target thread, when it went on
//! and off the CPU and whether it left voluntarily (blocked) or was
//! preempted; totals are aggregated per thread in the kernel.
//!
//! Stacks: at `sched_switch` the blocked thread's user stack is the
//! interesting one, but copying it there would cost every context switch.
//! Instead the blocked time is kept pending, and when the thread returns
//! from the syscall it blocked in (`sys_exit`, in the thread's own
//! context, with its user stack exactly at the blocking call)
//! a sample is emitted only if it blocked for at least `OFFCPU_MIN_NS`.
//! Short blocks are counted, not stack-attributed; so the stack-copy cost
//! is bounded by the number of long blocks, not by the switch rate; and,
//! when `OFFCPU_MAX_PER_SEC` is set (the daemon, system-wide), by at most
//! that many stack copies per CPU per second: blocks over the budget are
//! counted with their time (`OffCpuRateLimited`, `OffCpuRateLimitedNs`).
//!
//! Both hooks run on every context switch and syscall exit of the machine:
//! they are raw tracepoints (no event record built), with the classic ones
//! as the fallback, and keep one map lookup per side of a switch.

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use perf_audit_common::{
    Counter, FdOffsets, SCHED_THREADS_CAPACITY, TASK_COMM_LEN, ThreadSchedState, ThreadSchedTotals, sample_kind,
};

use crate::{
    maps::{add, bump, current_target_thread},
    stack::{StackSampleHeader, emit_stack_sample},
};

/// Set by the agent: blocks at least this long are captured with a stack.
#[unsafe(no_mangle)]
static OFFCPU_MIN_NS: u64 = 1_000_000;

/// Set by the agent: off-CPU stack copies per CPU per second (0: no limit).
#[unsafe(no_mangle)]
static OFFCPU_MAX_PER_SEC: u64 = 0;

/// Per CPU: (the second of the budget, stack copies in it).
#[map(name = "OFFCPU_BUDGET")]
static OFFCPU_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU may copy one more off-CPU stack this second.
#[inline(always)]
fn within_budget(now: u64) -> bool {
    // SAFETY: a read of a global set once before load.
    let max = unsafe { core::ptr::read_volatile(&OFFCPU_MAX_PER_SEC) };
    if max == 0 {
        return true;
    }
    let Some(slot) = OFFCPU_BUDGET.get_ptr_mut(0) else { return true };
    let second = now / 1_000_000_000;
    // SAFETY: this CPU's own slot; programs of one type do not nest on a CPU.
    unsafe {
        if (*slot)[0] != second {
            (*slot)[0] = second;
            (*slot)[1] = 0;
        }
        if (*slot)[1] >= max {
            return false;
        }
        (*slot)[1] += 1;
    }
    true
}

/// Per CPU: the thread switched in last with blocked time not yet taken by
/// its syscall exit. A thread keeps its CPU from switch-in to that exit (or
/// switches in again, somewhere, setting it there), so a syscall exit of
/// any other thread (nearly all of them) is dismissed by this array read,
/// without hashing its tid into `SCHED_STATE`.
#[map(name = "OFFCPU_PENDING_TID")]
static PENDING_TID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SCHED_STATE")]
static SCHED_STATE: HashMap<u32, ThreadSchedState> = HashMap::with_max_entries(SCHED_THREADS_CAPACITY, 0);

// Offsets in the `sched/sched_switch` tracepoint record (stable since 4.x;
// the agent checks them against tracefs before attaching).
const PREV_STATE: usize = 32;
const NEXT_PID: usize = 56;

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// How long the thread has been working since it last blocked (0 when
/// unknown), and how much of that it spent preempted in a run queue.
#[inline(always)]
pub fn oncpu_run_ns(tid: u32) -> (u64, u64) {
    match SCHED_STATE.get_ptr(tid) {
        // SAFETY: a map value of the right type; only this thread's own
        // switches write it.
        Some(state) => {
            let (since, preempted) = unsafe { ((*state).awake_since_ns, (*state).preempted_since_awake_ns) };
            if since == 0 { (0, 0) } else { (now_ns().saturating_sub(since), preempted) }
        }
        None => (0, 0),
    }
}

/// The totals inside a thread's state entry.
#[inline(always)]
fn totals(state: *mut ThreadSchedState) -> *mut ThreadSchedTotals {
    // SAFETY: a field of a valid map value.
    unsafe { core::ptr::addr_of_mut!((*state).totals) }
}

/// The scheduler state of the current thread: its entry when it has one
/// for this process; else a fresh one when it is a target's thread (a tid
/// reused by another process starts over); else `None`.
#[inline(always)]
fn current_state() -> Option<*mut ThreadSchedState> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid == 0 {
        return None; // the idle task
    }
    if let Some(state) = SCHED_STATE.get_ptr_mut(tid) {
        // SAFETY: a map value of the right type.
        if unsafe { (*state).tgid } == tgid {
            return Some(state);
        }
    }
    let (tgid, tid) = current_target_thread()?;
    let fresh = ThreadSchedState { tgid, totals: ThreadSchedTotals { tgid, ..Default::default() }, ..Default::default() };
    if SCHED_STATE.insert(tid, fresh, 0).is_err() {
        bump(Counter::SchedStateMapFull);
        return None;
    }
    SCHED_STATE.get_ptr_mut(tid)
}

/// The task switching out is the current one: close its on-CPU stretch.
#[inline(always)]
fn switch_out(now: u64, state: *mut ThreadSchedState, voluntary: bool) {
    let t = totals(state);
    // SAFETY: this thread's own entry; it is switching out on this CPU, so
    // nothing else writes it now.
    unsafe {
        let since = (*state).oncpu_since_ns;
        let awake = (*state).awake_since_ns;
        if since != 0 {
            (*t).oncpu_ns += now.saturating_sub(since);
        }
        if voluntary && awake != 0 {
            let stretch = now.saturating_sub(awake);
            if stretch > (*t).max_oncpu_run_ns {
                (*t).max_oncpu_run_ns = stretch;
            }
        }
        if voluntary {
            (*t).voluntary_switches += 1;
        } else {
            (*t).involuntary_switches += 1;
        }
        (*state).switched_out_ns = now;
        (*state).voluntary = voluntary as u32;
        (*state).oncpu_since_ns = 0;
    }
}

/// The task switching in: a target thread if we know its state.
#[inline(always)]
fn switch_in(now: u64, next_tid: i32) {
    if next_tid <= 0 {
        return;
    }
    let next_tid = next_tid as u32;
    let Some(state) = SCHED_STATE.get_ptr_mut(next_tid) else { return };
    // SAFETY: the next thread is not running anywhere else now.
    unsafe {
        let out = (*state).switched_out_ns;
        if out != 0 {
            let off = now.saturating_sub(out);
            let t = totals(state);
            if (*state).voluntary != 0 {
                (*t).blocked_ns += off;
                (*state).blocked_pending_ns += off;
            } else {
                (*t).runqueue_ns += off;
                (*state).preempted_since_awake_ns += off;
            }
        }
        (*state).oncpu_since_ns = now;
        if (*state).voluntary != 0 || (*state).awake_since_ns == 0 {
            (*state).awake_since_ns = now;
            (*state).preempted_since_awake_ns = 0;
        }
        if (*state).blocked_pending_ns != 0
            && let Some(slot) = PENDING_TID.get_ptr_mut(0)
        {
            *slot = next_tid;
        }
    }
}

/// `sched/sched_switch` as a classic tracepoint (the fallback when the
/// kernel's BTF does not give `task_struct.pid` or the 5.18+ arguments):
/// the kernel first fills the event record (both comms, pids, priorities).
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let now = now_ns();
    if let Some(state) = current_state() {
        // SAFETY: reads within the tracepoint record.
        let prev_state: i64 = unsafe { ctx.read_at(PREV_STATE) }.unwrap_or(0);
        // The record's state is 0 for a preempted task (TASK_REPORT_MAX).
        switch_out(now, state, (prev_state & 0xff) != 0);
    }
    // SAFETY: reads within the tracepoint record.
    switch_in(now, unsafe { ctx.read_at(NEXT_PID) }.unwrap_or(0));
    0
}

/// Set by the agent from the kernel's BTF (all zero: the fd's kind is not
/// read).
#[unsafe(no_mangle)]
static FD_OFFSETS: FdOffsets =
    FdOffsets { task_files: 0, files_fdt: 0, fdt_max_fds: 0, fdt_fd: 0, file_inode: 0, inode_mode: 0, inode_rdev: 0 };

/// What the current task's `fd` refers to, packed as
/// [`sample_kind::pack_fd_mode`]: 0 when it cannot be read. Runs only when
/// a blocked syscall's sample is sent.
#[inline(always)]
fn fd_mode(fd: u64) -> u64 {
    // SAFETY: a read of a global set once before load.
    let off = unsafe { core::ptr::read_volatile(&FD_OFFSETS) };
    if off.task_files == 0 {
        return 0;
    }
    // SAFETY: every kernel read goes through bpf_probe_read_kernel, which
    // fails cleanly on a bad address.
    unsafe {
        let task = aya_ebpf::helpers::generated::bpf_get_current_task();
        let Ok(files) = bpf_probe_read_kernel((task + off.task_files as u64) as *const u64) else { return 0 };
        if files == 0 {
            return 0;
        }
        let Ok(fdt) = bpf_probe_read_kernel((files + off.files_fdt as u64) as *const u64) else { return 0 };
        let Ok(max) = bpf_probe_read_kernel((fdt + off.fdt_max_fds as u64) as *const u32) else { return 0 };
        if fd >= max as u64 {
            return 0;
        }
        let Ok(fds) = bpf_probe_read_kernel((fdt + off.fdt_fd as u64) as *const u64) else { return 0 };
        let Ok(file) = bpf_probe_read_kernel((fds + fd * 8) as *const u64) else { return 0 };
        if file == 0 {
            return 0;
        }
        let Ok(inode) = bpf_probe_read_kernel((file + off.file_inode as u64) as *const u64) else { return 0 };
        if inode == 0 {
            return 0;
        }
        let Ok(mode) = bpf_probe_read_kernel((inode + off.inode_mode as u64) as *const u16) else { return 0 };
        let rdev = bpf_probe_read_kernel((inode + off.inode_rdev as u64) as *const u32).unwrap_or(0);
        sample_kind::pack_fd_mode(mode, rdev)
    }
}

/// Set by the agent from the kernel's BTF: `task_struct.pid` (0: the raw
/// tracepoint programs are not used).
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u64 = 0;

/// `sched_switch` as a raw tracepoint: `TP_PROTO(bool preempt, struct
/// task_struct *prev, struct task_struct *next, unsigned int prev_state)`
/// (5.18+). No event record is built, which on a context-switch-heavy
/// target is most of the classic tracepoint's cost; the next task's tid is
/// read from its `task_struct` at the offset the agent found in BTF.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch_raw(ctx: RawTracePointContext) -> i32 {
    let now = now_ns();
    if let Some(state) = current_state() {
        let preempt: u64 = ctx.arg(0);
        let prev_state: u64 = ctx.arg(3);
        // As the classic record: a preempted task did not block, nor did
        // one switching out in TASK_RUNNING (a yield).
        switch_out(now, state, preempt & 0xff == 0 && (prev_state & 0xff) != 0);
    }
    let next: *const u8 = ctx.arg(2);
    // SAFETY: a read of a global set once before load.
    let offset = unsafe { core::ptr::read_volatile(&TASK_PID_OFFSET) } as usize;
    // SAFETY: a checked kernel read of the next task's pid.
    let next_tid = unsafe { bpf_probe_read_kernel(next.wrapping_add(offset) as *const i32) }.unwrap_or(0);
    switch_in(now, next_tid);
    0
}

// `raw_syscalls/sys_exit`: `long id` at 8.
const SYSCALL_ID: usize = 8;

/// The thread returns from a syscall: a sample with its user stack (at the
/// blocking call) if it blocked in it for at least `OFFCPU_MIN_NS`.
/// `syscall_nr` is read only then.
#[inline(always)]
fn on_syscall_exit<C: EbpfContext>(ctx: &C, syscall_nr: impl FnOnce() -> i64, first_arg: impl FnOnce() -> Option<u64>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // Cheap first test: only the thread this CPU switched in with blocked
    // time pending.
    let Some(slot) = PENDING_TID.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own slot; programs do not nest on a CPU here.
    unsafe {
        if *slot != tid {
            return;
        }
        *slot = 0;
    }
    let Some(state) = SCHED_STATE.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: this thread's own entry, written only in its own context or
    // while it is switched out.
    let blocked = unsafe { (*state).blocked_pending_ns };
    if blocked == 0 {
        return;
    }
    unsafe { (*state).blocked_pending_ns = 0 };
    // SAFETY: a read of a global set once before load.
    let min = unsafe { core::ptr::read_volatile(&OFFCPU_MIN_NS) };
    let tgid = (pid_tgid >> 32) as u32;
    if blocked < min {
        let t = totals(state);
        // SAFETY: this thread's own totals.
        unsafe {
            (*t).short_blocks += 1;
            (*t).short_blocked_ns += blocked;
        }
        return;
    }
    if !within_budget(now_ns()) {
        bump(Counter::OffCpuRateLimited);
        add(Counter::OffCpuRateLimitedNs, blocked);
        return;
    }
    bump(Counter::OffCpuSamples);
    let header = StackSampleHeader {
        tgid,
        tid,
        kernel_stack_id: -1,
        kind: sample_kind::OFF_CPU,
        syscall_nr: syscall_nr() as i32,
        weight: blocked,
        // The syscall's first argument (the fd of read/write/fsync...),
        // bit 32 set when known: the agent reads what the fd refers to.
        addr: first_arg().map(|a| (a & 0xffff_ffff) | sample_kind::OFF_CPU_ARG_KNOWN | fd_mode(a & 0xffff_ffff)).unwrap_or(0),
        comm: ctx.command().unwrap_or([0u8; TASK_COMM_LEN]),
    };
    if !emit_stack_sample(&header) {
        bump(Counter::OffCpuDroppedRingFull);
    }
}

#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: reads within the tracepoint record.
    on_syscall_exit(&ctx, || unsafe { ctx.read_at::<i64>(SYSCALL_ID) }.unwrap_or(-1), || None);
    0
}

/// `sys_exit` as a raw tracepoint: `TP_PROTO(struct pt_regs *regs, long
/// ret)`; the syscall number is the registers' `orig_rax`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscall_exit_raw(ctx: RawTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    on_syscall_exit(
        &ctx,
        || {
            // SAFETY: a checked kernel read of one register of the saved set.
            unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).orig_rax)) }.map(|nr| nr as i64).unwrap_or(-1)
        },
        // SAFETY: as above; `rdi` holds the first argument at entry.
        || unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rdi)) }.ok(),
    );
    0
}
