//! Continuous, cheap attribution of memory growth (memory profile, both
//! modes), beside the duty-cycled allocator uprobes of `memory.rs`:
//!
//! - `page_fault_sample`: a software `page-faults` perf event on every CPU
//!   with a sample period of `PAGE_FAULT_SAMPLE_PERIOD`; a sample that hit a
//!   target thread sends its user stack and the faulting address ("memory
//!   first touched here"). The program runs once per N faults of the CPU,
//!   never per fault.
//! - `mmap_enter`/`mmap_exit`, `munmap_enter`, `brk_exit`: syscall
//!   tracepoints, counted (calls, bytes) for every call of the target; the
//!   rare large ones (anonymous mmap and munmap of at least
//!   `MMAP_STACK_MIN_BYTES`, every upward move of the break) also send
//!   their user stack, so that large allocations served by mmap and heap
//!   growth by brk are charged to the code that caused them.
//!
//! Stacks go through the CPU profile's stack path (`stack::emit_stack_sample`,
//! `UserStackSample` kinds `PAGE_FAULT`, `MMAP`, `MUNMAP`, `BRK`), unwound
//! by the agent like dwarf CPU samples.

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_perf_event_data,
    macros::{map, perf_event, tracepoint},
    maps::HashMap,
    programs::{PerfEventContext, TracePointContext},
};
use perf_audit_common::{
    Counter, MMAP_PENDING_CAPACITY, MMAP_STACK_MIN_BYTES, TARGET_PIDS_CAPACITY, TASK_COMM_LEN, sample_kind,
};

use crate::{
    maps::{bump, current_target_thread},
    stack::{StackSampleHeader, emit_stack_sample},
};

/// Offsets in the syscall tracepoint records (see
/// `/sys/kernel/tracing/events/syscalls/sys_enter_mmap/format`): arguments
/// from 16, 8 bytes each; `ret` of an exit record at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG3: usize = 40;
const RET: usize = 16;
const MAP_ANONYMOUS: u64 = 0x20;

/// Length of a large anonymous mmap between its entry and its return, by
/// thread id.
#[map(name = "MMAP_PENDING")]
static MMAP_PENDING: HashMap<u32, u64> = HashMap::with_max_entries(MMAP_PENDING_CAPACITY, 0);

/// The last break seen per process (the agent seeds it from the `[heap]`
/// mapping), so that a `brk` return tells how far the heap moved.
#[map(name = "LAST_BRK")]
static LAST_BRK: HashMap<u32, u64> = HashMap::with_max_entries(TARGET_PIDS_CAPACITY, 0);

#[inline(always)]
fn add(counter: Counter, value: u64) {
    if let Some(slot) = crate::maps::COUNTERS.get_ptr_mut(counter.slot()) {
        // SAFETY: this CPU's slot; tracepoint and perf_event programs do
        // not nest with themselves on one CPU.
        unsafe { *slot += value };
    }
}

#[inline(always)]
fn header(tgid: u32, tid: u32, kind: u32, weight: u64, addr: u64, comm: [u8; TASK_COMM_LEN]) -> StackSampleHeader {
    StackSampleHeader { tgid, tid, kernel_stack_id: -1, kind, syscall_nr: -1, weight, addr, comm }
}

#[perf_event]
pub fn page_fault_sample(ctx: PerfEventContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    bump(Counter::PageFaultSamples);
    let data = ctx.as_ptr() as *const bpf_perf_event_data;
    // SAFETY: a direct context load of `addr` (the verifier rewrites it to
    // the perf sample's address: the faulting address of this event).
    let addr = unsafe { (*data).addr };
    let comm = ctx.command().unwrap_or([0u8; TASK_COMM_LEN]);
    let site = crate::stack::user_regs().map(|r| crate::memory::pending_site(tid, r.sp)).unwrap_or(0);
    if !emit_stack_sample(&header(tgid, tid, sample_kind::PAGE_FAULT, site, addr, comm)) {
        bump(Counter::PageFaultDroppedRingFull);
    }
    0
}

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    let Some((_, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: reads within the tracepoint record.
    let (len, flags) = unsafe { (ctx.read_at::<u64>(ARG1).unwrap_or(0), ctx.read_at::<u64>(ARG3).unwrap_or(0)) };
    bump(Counter::MmapCalls);
    add(Counter::MmapBytes, len);
    if flags & MAP_ANONYMOUS != 0 && len >= MMAP_STACK_MIN_BYTES && MMAP_PENDING.insert(&tid, &len, 0).is_err() {
        bump(Counter::MappingDropped);
    }
    0
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    let Some(len) = (unsafe { MMAP_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = MMAP_PENDING.remove(&tid);
    // SAFETY: reads within the tracepoint record.
    let ret: i64 = unsafe { ctx.read_at(RET) }.unwrap_or(-1);
    if ret < 0 && ret > -4096 {
        return 0; // failed: nothing mapped
    }
    let comm = ctx.command().unwrap_or([0u8; TASK_COMM_LEN]);
    if !emit_stack_sample(&header(tgid, tid, sample_kind::MMAP, len, ret as u64, comm)) {
        bump(Counter::MappingDropped);
    }
    0
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: reads within the tracepoint record.
    let (addr, len) = unsafe { (ctx.read_at::<u64>(ARG0).unwrap_or(0), ctx.read_at::<u64>(ARG1).unwrap_or(0)) };
    bump(Counter::MunmapCalls);
    add(Counter::MunmapBytes, len);
    if len >= MMAP_STACK_MIN_BYTES {
        let comm = ctx.command().unwrap_or([0u8; TASK_COMM_LEN]);
        if !emit_stack_sample(&header(tgid, tid, sample_kind::MUNMAP, len, addr, comm)) {
            bump(Counter::MappingDropped);
        }
    }
    0
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: reads within the tracepoint record.
    let ret: i64 = unsafe { ctx.read_at(RET) }.unwrap_or(0);
    if ret <= 0 {
        return 0;
    }
    let now = ret as u64;
    let last = unsafe { LAST_BRK.get(&tgid) }.copied().unwrap_or(0);
    if now == last {
        return 0; // a query (brk(0)) or a refused move
    }
    let _ = LAST_BRK.insert(&tgid, &now, 0);
    if last == 0 {
        return 0; // first break seen: nothing to compare with
    }
    if now < last {
        add(Counter::BrkShrinkBytes, last - now);
        return 0;
    }
    bump(Counter::BrkGrowCalls);
    add(Counter::BrkGrowBytes, now - last);
    let comm = ctx.command().unwrap_or([0u8; TASK_COMM_LEN]);
    if !emit_stack_sample(&header(tgid, tid, sample_kind::BRK, now - last, now, comm)) {
        bump(Counter::MappingDropped);
    }
    0
}
