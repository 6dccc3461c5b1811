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
    bindings::{BPF_F_USER_STACK, pt_regs},
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::bpf_probe_read_user,
    },
    macros::{map, perf_event},
    maps::{PerCpuHashMap, RingBuf, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use perf_audit_common::{
    CPU_STACK_COUNTS_CAPACITY, Counter, CpuStackKey, STACK_TRACES_CAPACITY, TASK_COMM_LEN,
    USER_STACK_COPY_BYTES, USER_STACK_COPY_PAGE, USER_STACK_RING_BYTES, UserStackSample,
    user_stack_mode,
};

use crate::maps::{bump, current_target_thread};

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
    // The saved user-mode registers, whether the sample hit user or kernel
    // mode (the perf context holds kernel registers in the latter case).
    let mut regs = core::mem::MaybeUninit::<pt_regs>::uninit();
    // SAFETY: helpers called with a valid task and a local destination.
    let read = unsafe {
        let user_regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        bpf_probe_read_kernel(user_regs).map(|r| {
            regs.write(r);
        })
    };
    if read.is_err() {
        bump(Counter::CpuUserStackCopyFailed);
        return;
    }
    // SAFETY: initialised just above.
    let regs = unsafe { regs.assume_init() };

    let Some(mut entry) = USER_STACK_SAMPLES.reserve::<UserStackSample>(0) else {
        bump(Counter::CpuSamplesDroppedRingFull);
        return;
    };
    let sample = entry.as_mut_ptr();
    let sp = regs.rsp;
    // Bytes from sp to the end of its page (1..=4096), then whole pages
    // until one cannot be read: the stack mapping's top ends the copy.
    let first = USER_STACK_COPY_PAGE - (sp as usize & (USER_STACK_COPY_PAGE - 1));
    let mut copied: usize = 0;
    // SAFETY: `sample` points at a reserved ring-buffer record of the right
    // size; every write below stays inside its `stack` array (the offsets
    // are bounded by construction: first <= 4096, 7 more pages).
    unsafe {
        let stack = core::ptr::addr_of_mut!((*sample).stack) as *mut u8;
        if bpf_probe_read_user(stack.cast(), first as u32, sp as *const _) == 0 {
            copied = first;
            let mut page = 0;
            while page < USER_STACK_COPY_BYTES / USER_STACK_COPY_PAGE - 1 {
                let offset = first + page * USER_STACK_COPY_PAGE;
                if bpf_probe_read_user(
                    stack.add(offset).cast(),
                    USER_STACK_COPY_PAGE as u32,
                    (sp as usize + offset) as *const _,
                ) != 0
                {
                    break;
                }
                copied = offset + USER_STACK_COPY_PAGE;
                page += 1;
            }
        }
        core::ptr::addr_of_mut!((*sample).tgid).write(tgid);
        core::ptr::addr_of_mut!((*sample).tid).write(tid);
        core::ptr::addr_of_mut!((*sample).kernel_stack_id).write(kernel_stack_id);
        core::ptr::addr_of_mut!((*sample).stack_len).write(copied as u32);
        core::ptr::addr_of_mut!((*sample).ip).write(regs.rip);
        core::ptr::addr_of_mut!((*sample).sp).write(sp);
        core::ptr::addr_of_mut!((*sample).bp).write(regs.rbp);
        core::ptr::addr_of_mut!((*sample).comm).write(comm);
    }
    if copied == 0 {
        bump(Counter::CpuUserStackCopyFailed);
    }
    entry.submit(0);
}
