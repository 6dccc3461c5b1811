//! User-stack capture shared by every collector that needs user stacks on
//! binaries without frame pointers: the user registers and up to
//! `USER_STACK_COPY_BYTES` of the user stack go into one ring-buffer record
//! (`UserStackSample`), which the agent unwinds from `.eh_frame`.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::bpf_probe_read_user,
    },
    macros::map,
    maps::RingBuf,
};
use perf_audit_common::{
    Counter, TASK_COMM_LEN, USER_STACK_COPY_BYTES, USER_STACK_COPY_PAGE, USER_STACK_RING_BYTES,
    UserStackSample,
};

use crate::maps::bump;

#[map(name = "USER_STACK_SAMPLES")]
static USER_STACK_SAMPLES: RingBuf = RingBuf::with_byte_size(USER_STACK_RING_BYTES, 0);

/// The fields of a sample other than registers and the stack copy.
pub struct StackSampleHeader {
    pub tgid: u32,
    pub tid: u32,
    pub kernel_stack_id: i32,
    pub kind: u32,
    pub syscall_nr: i32,
    pub weight_ns: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// Emits one sample of the current task. Returns false when the ring
/// buffer was full (the caller counts the drop in its own counter).
#[inline(always)]
pub fn emit_stack_sample(header: &StackSampleHeader) -> bool {
    // The saved user-mode registers, whether the event hit user or kernel
    // mode (a perf context holds kernel registers in the latter case).
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
        return true;
    }
    // SAFETY: initialised just above.
    let regs = unsafe { regs.assume_init() };

    let Some(mut entry) = USER_STACK_SAMPLES.reserve::<UserStackSample>(0) else {
        return false;
    };
    let sample = entry.as_mut_ptr();
    let sp = regs.rsp;
    // Bytes from sp to the end of its page (1..=4096), then whole pages
    // until one cannot be read: the stack mapping's top ends the copy.
    let first = USER_STACK_COPY_PAGE - (sp as usize & (USER_STACK_COPY_PAGE - 1));
    let mut copied: usize = 0;
    // SAFETY: `sample` points at a reserved ring-buffer record of the right
    // size; every write below stays inside its `stack` array (the offsets
    // are bounded by construction: first <= 4096, then at most
    // USER_STACK_COPY_BYTES / 4096 - 1 more pages).
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
        core::ptr::addr_of_mut!((*sample).tgid).write(header.tgid);
        core::ptr::addr_of_mut!((*sample).tid).write(header.tid);
        core::ptr::addr_of_mut!((*sample).kernel_stack_id).write(header.kernel_stack_id);
        core::ptr::addr_of_mut!((*sample).stack_len).write(copied as u32);
        core::ptr::addr_of_mut!((*sample).kind).write(header.kind);
        core::ptr::addr_of_mut!((*sample).syscall_nr).write(header.syscall_nr);
        core::ptr::addr_of_mut!((*sample).ts_ns).write(bpf_ktime_get_ns());
        core::ptr::addr_of_mut!((*sample).weight_ns).write(header.weight_ns);
        core::ptr::addr_of_mut!((*sample).ip).write(regs.rip);
        core::ptr::addr_of_mut!((*sample).sp).write(sp);
        core::ptr::addr_of_mut!((*sample).bp).write(regs.rbp);
        core::ptr::addr_of_mut!((*sample).comm).write(header.comm);
    }
    if copied == 0 {
        bump(Counter::CpuUserStackCopyFailed);
    }
    entry.submit(0);
    true
}
