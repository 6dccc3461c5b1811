//! User-stack capture shared by every program that records where user code
//! was: CPU samples in stack-copy mode and database writes. The user-mode
//! registers and a page-wise copy of the user stack go into a ring-buffer
//! record (never onto the 512-byte BPF stack); the agent unwinds them with
//! the binaries' `.eh_frame`, so targets without frame pointers work.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs, generated::bpf_probe_read_user},
};
use perf_audit_common::{USER_STACK_COPY_BYTES, USER_STACK_COPY_PAGE};

/// The registers the agent's unwinder starts from.
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The current task's saved user-mode registers, valid whether the program
/// runs on a perf sample that hit user or kernel mode, or at a syscall.
#[inline(always)]
pub fn user_regs() -> Option<UserRegs> {
    // SAFETY: helpers called with the current task; the result is copied
    // out of kernel memory by value.
    let regs: pt_regs = unsafe {
        let user_regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        bpf_probe_read_kernel(user_regs).ok()?
    };
    Some(UserRegs { ip: regs.rip, sp: regs.rsp, bp: regs.rbp })
}

/// Copies the user stack from `sp` upward into `dest` (which must have room
/// for `USER_STACK_COPY_BYTES`): the bytes up to the end of sp's page, then
/// whole pages until one cannot be read (the top of the stack mapping).
/// Returns the number of bytes copied (0 when nothing could be read).
///
/// # Safety
/// `dest` must point at `USER_STACK_COPY_BYTES` writable bytes (a field of a
/// reserved ring-buffer record).
#[inline(always)]
pub unsafe fn copy_user_stack(dest: *mut u8, sp: u64) -> usize {
    let first = USER_STACK_COPY_PAGE - (sp as usize & (USER_STACK_COPY_PAGE - 1));
    let mut copied: usize = 0;
    // SAFETY: every write stays inside `dest` (first <= 4096, then at most
    // 7 more pages), per the caller's contract.
    unsafe {
        if bpf_probe_read_user(dest.cast(), first as u32, sp as *const _) == 0 {
            copied = first;
            let mut page = 0;
            while page < USER_STACK_COPY_BYTES / USER_STACK_COPY_PAGE - 1 {
                let offset = first + page * USER_STACK_COPY_PAGE;
                if bpf_probe_read_user(
                    dest.add(offset).cast(),
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
    }
    copied
}
