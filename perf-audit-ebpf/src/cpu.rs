//! CPU sampling: a perf_event program fired at the audit's frequency on
//! every CPU. Two ways to get the user stack, chosen by the agent per target
//! through the `USER_STACK_MODE` global:
//!
//! - frame pointers: `bpf_get_stackid` walks the frame-pointer chain in the
//!   kernel; samples are aggregated by (thread, user stack, kernel stack) in
//!   a per-CPU hash, and the agent reads counts once at the end;
//! - stack copy: the user registers and up to `USER_STACK_COPY_BYTES` of the
//!   user stack go to a ring buffer, and the agent unwinds them from the
//!   binaries' `.eh_frame` (release builds without frame pointers).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    macros::{map, perf_event},
    maps::{PerCpuHashMap, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use perf_audit_common::{
    CPU_STACK_COUNTS_CAPACITY, Counter, CpuStackKey, STACK_TRACES_CAPACITY, TASK_COMM_LEN,
    sample_kind, user_stack_mode,
};

use crate::{
    maps::{bump, current_target_thread},
    stack::{StackSampleHeader, emit_stack_sample},
};

/// `bpf_get_stackid` returns -EFAULT for the kernel stack of a sample taken
/// in user mode: expected, not a failure.
const EFAULT: i64 = 14;
/// `BPF_NOEXIST`: only insert when the key is new.
const BPF_NOEXIST: u64 = 1;

/// Set by the agent before load: a `user_stack_mode` value.
#[unsafe(no_mangle)]
static USER_STACK_MODE: u32 = user_stack_mode::FRAME_POINTER;

#[map(name = "STACK_TRACES")]
pub static STACK_TRACES: StackTrace = StackTrace::with_max_entries(STACK_TRACES_CAPACITY, 0);

#[map(name = "CPU_STACK_COUNTS")]
static CPU_STACK_COUNTS: PerCpuHashMap<CpuStackKey, u64> =
    PerCpuHashMap::with_max_entries(CPU_STACK_COUNTS_CAPACITY, 0);

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    bump(Counter::CpuSamples);

    let kernel_stack_id = match ctx.get_stackid(&STACK_TRACES, 0) {
        Ok(id) => id as i32,
        Err(err) => {
            if i64::from(err) != -EFAULT {
                bump(Counter::CpuKernelStackFailed);
            }
            err
        }
    };
    let comm = ctx.command().unwrap_or([0u8; TASK_COMM_LEN]);

    // SAFETY: a read of a global set once before load.
    let mode = unsafe { core::ptr::read_volatile(&USER_STACK_MODE) };
    if mode == user_stack_mode::STACK_COPY {
        let (run_so_far, preempted) = crate::offcpu::oncpu_run_ns(tid);
        let sample = StackSampleHeader {
            tgid,
            tid,
            kernel_stack_id,
            kind: sample_kind::CPU,
            syscall_nr: -1,
            weight: run_so_far,
            // For CPU samples: the run-queue time inside `weight`.
            addr: preempted,
            comm,
        };
        if !emit_stack_sample(&sample) {
            bump(Counter::CpuSamplesDroppedRingFull);
        }
    } else {
        count_frame_pointer_stack(&ctx, tgid, tid, kernel_stack_id, comm);
    }
    0
}

#[inline(always)]
fn count_frame_pointer_stack(
    ctx: &PerfEventContext,
    tgid: u32,
    tid: u32,
    kernel_stack_id: i32,
    comm: [u8; TASK_COMM_LEN],
) {
    let user_stack_id = match ctx.get_stackid(&STACK_TRACES, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(err) => {
            bump(Counter::CpuUserStackFailed);
            err
        }
    };
    let key = CpuStackKey { tgid, tid, user_stack_id, kernel_stack_id, comm };

    // A per-CPU map: each CPU adds to its own slot, so counts stay exact
    // without atomics (which the BPF target does not offer to Rust).
    if let Some(count) = CPU_STACK_COUNTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of an existing entry.
        unsafe { *count += 1 };
    } else if CPU_STACK_COUNTS.insert(&key, &1, BPF_NOEXIST).is_err() {
        // Either the map is full, or another CPU created the key between our
        // lookup and insert: then add to our own slot of it.
        match CPU_STACK_COUNTS.get_ptr_mut(&key) {
            // SAFETY: as above.
            Some(count) => unsafe { *count += 1 },
            None => bump(Counter::CpuSamplesDroppedMapFull),
        }
    }
}

