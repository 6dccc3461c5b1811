//! CPU sampling: a perf_event program fired at the audit's frequency on
//! every CPU. Samples of target threads are aggregated in the kernel by
//! (thread, user stack, kernel stack) in a per-CPU hash, so the agent reads counts once at the
//! end instead of handling one event per sample.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    macros::{map, perf_event},
    maps::{PerCpuHashMap, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use perf_audit_common::{
    CPU_STACK_COUNTS_CAPACITY, CpuStackKey, Counter, STACK_TRACES_CAPACITY, TASK_COMM_LEN,
};

use crate::maps::{bump, current_target_thread};

/// `bpf_get_stackid` returns -EFAULT for the kernel stack of a sample taken
/// in user mode: expected, not a failure.
const EFAULT: i64 = 14;
/// `BPF_NOEXIST`: only insert when the key is new.
const BPF_NOEXIST: u64 = 1;

#[map(name = "STACK_TRACES")]
static STACK_TRACES: StackTrace = StackTrace::with_max_entries(STACK_TRACES_CAPACITY, 0);

#[map(name = "CPU_STACK_COUNTS")]
static CPU_STACK_COUNTS: PerCpuHashMap<CpuStackKey, u64> =
    PerCpuHashMap::with_max_entries(CPU_STACK_COUNTS_CAPACITY, 0);

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    bump(Counter::CpuSamples);

    let user_stack_id = match ctx.get_stackid(&STACK_TRACES, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(err) => {
            bump(Counter::CpuUserStackFailed);
            err
        }
    };
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
    0
}
