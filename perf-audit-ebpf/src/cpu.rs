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
    maps::{PerCpuHashMap, RingBuf, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use perf_audit_common::{
    CPU_STACK_COUNTS_CAPACITY, Counter, CpuStackKey, STACK_TRACES_CAPACITY, TASK_COMM_LEN,
    USER_STACK_RING_BYTES, UserStackSample, user_stack_mode,
};

use crate::{
    maps::{bump, current_target_thread},
    stack,
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
static STACK_TRACES: StackTrace = StackTrace::with_max_entries(STACK_TRACES_CAPACITY, 0);

#[map(name = "CPU_STACK_COUNTS")]
static CPU_STACK_COUNTS: PerCpuHashMap<CpuStackKey, u64> =
    PerCpuHashMap::with_max_entries(CPU_STACK_COUNTS_CAPACITY, 0);

#[map(name = "USER_STACK_SAMPLES")]
static USER_STACK_SAMPLES: RingBuf = RingBuf::with_byte_size(USER_STACK_RING_BYTES, 0);

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
        copy_user_stack(tgid, tid, kernel_stack_id, comm);
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

#[inline(always)]
fn copy_user_stack(tgid: u32, tid: u32, kernel_stack_id: i32, comm: [u8; TASK_COMM_LEN]) {
    let Some(regs) = stack::user_regs() else {
        bump(Counter::CpuUserStackCopyFailed);
        return;
    };
    let Some(mut entry) = USER_STACK_SAMPLES.reserve::<UserStackSample>(0) else {
        bump(Counter::CpuSamplesDroppedRingFull);
        return;
    };
    let sample = entry.as_mut_ptr();
    // SAFETY: `sample` points at a reserved ring-buffer record of the right
    // size; `stack` is its USER_STACK_COPY_BYTES array.
    let copied = unsafe {
        let copied = stack::copy_user_stack(core::ptr::addr_of_mut!((*sample).stack) as *mut u8, regs.sp);
        core::ptr::addr_of_mut!((*sample).tgid).write(tgid);
        core::ptr::addr_of_mut!((*sample).tid).write(tid);
        core::ptr::addr_of_mut!((*sample).kernel_stack_id).write(kernel_stack_id);
        core::ptr::addr_of_mut!((*sample).stack_len).write(copied as u32);
        core::ptr::addr_of_mut!((*sample).ip).write(regs.ip);
        core::ptr::addr_of_mut!((*sample).sp).write(regs.sp);
        core::ptr::addr_of_mut!((*sample).bp).write(regs.bp);
        core::ptr::addr_of_mut!((*sample).comm).write(comm);
        copied
    };
    if copied == 0 {
        bump(Counter::CpuUserStackCopyFailed);
    }
    entry.submit(0);
}
