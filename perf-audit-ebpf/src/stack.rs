//! User-stack capture shared by every program that records where user code
//! was: CPU samples in stack-copy mode, off-CPU samples, database writes,
//! page-fault samples and mmap/munmap/brk calls (memory profile).
//! The user-mode registers and a page-wise copy of the user stack go into a
//! ring-buffer record (never onto the 512-byte BPF stack); the agent unwinds
//! them with the binaries' `.eh_frame`, so targets without frame pointers
//! work.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::{bpf_get_current_task, bpf_probe_read_user},
    },
    macros::map,
    maps::RingBuf,
};
use perf_audit_common::{
    Counter, TASK_COMM_LEN, URETPROBE_FIXUPS, USER_STACK_COPY_BYTES, USER_STACK_COPY_PAGE, USER_STACK_RING_BYTES,
    UretprobeOffsets, UserStackSample,
};

use crate::maps::bump;

/// `BPF_RB_NO_WAKEUP`: submit without notifying a poller.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Set by the agent before load from the kernel's BTF; all zero (the fix
/// off) when the kernel does not describe these fields.
#[unsafe(no_mangle)]
static URETPROBE_OFFSETS: UretprobeOffsets =
    UretprobeOffsets { task_utask: 0, utask_return_instances: 0, ri_stack: 0, ri_orig_ret_vaddr: 0, ri_next: 0 };

#[map(name = "USER_STACK_SAMPLES")]
static USER_STACK_SAMPLES: RingBuf = RingBuf::with_byte_size(USER_STACK_RING_BYTES, 0);

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

/// Copies the user stack from `sp` upward into `dest`, which has room for
/// `MAX` bytes (a multiple of the page size): the bytes up to the end of
/// sp's page, then whole pages until one cannot be read (the top of the
/// stack mapping) or `MAX` is reached. Returns the bytes copied (0 when
/// nothing could be read).
///
/// # Safety
/// `dest` must point at `MAX` writable bytes (a field of a reserved
/// ring-buffer record).
#[inline(always)]
pub unsafe fn copy_user_stack<const MAX: usize>(dest: *mut u8, sp: u64, ip: &mut u64) -> usize {
    let first = USER_STACK_COPY_PAGE - (sp as usize & (USER_STACK_COPY_PAGE - 1));
    let mut copied: usize = 0;
    // SAFETY: every write stays inside `dest`: first <= 4096, then at most
    // MAX / 4096 - 1 more pages, per the caller's contract.
    unsafe {
        if bpf_probe_read_user(dest.cast(), first as u32, sp as *const _) == 0 {
            copied = first;
            let mut page = 0;
            while page < MAX / USER_STACK_COPY_PAGE - 1 {
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
            if let Some(resume) = undo_uretprobes::<MAX>(dest, sp, copied) {
                *ip = resume;
            }
        }
    }
    copied
}

/// Writes back, into a copy of `copied` bytes of user stack from `sp`, the
/// original return address of each pending uretprobe of the current thread
/// whose slot lies in the copy: the kernel's `return_instance` list
/// (`task->utask->return_instances`, innermost first) holds the slot's
/// address (`stack`) and what the trampoline replaced (`orig_ret_vaddr`).
/// Returns the original return address of a call whose slot is just below
/// `sp`: the call has returned into the trampoline, whose `uretprobe`
/// syscall is running its handlers with the caller's stack pointer.
///
/// # Safety
/// As [`copy_user_stack`]: `dest` points at `MAX` writable bytes.
#[inline(always)]
unsafe fn undo_uretprobes<const MAX: usize>(dest: *mut u8, sp: u64, copied: usize) -> Option<u64> {
    // SAFETY: a read of a global set once before load.
    let off = unsafe { core::ptr::read_volatile(&URETPROBE_OFFSETS) };
    if off.task_utask == 0 {
        return None;
    }
    let mut resume = None;
    // SAFETY: kernel reads through bpf_probe_read_kernel, which fails
    // cleanly on a bad address; the write below stays inside `dest`.
    unsafe {
        let task = bpf_get_current_task();
        let Ok(utask) = bpf_probe_read_kernel((task + off.task_utask as u64) as *const u64) else { return None };
        if utask == 0 {
            return None;
        }
        let Ok(mut ri) = bpf_probe_read_kernel((utask + off.utask_return_instances as u64) as *const u64) else {
            return None;
        };
        let mut i = 0;
        while i < URETPROBE_FIXUPS {
            if ri == 0 {
                break;
            }
            let Ok(slot) = bpf_probe_read_kernel((ri + off.ri_stack as u64) as *const u64) else { break };
            let Ok(ret) = bpf_probe_read_kernel((ri + off.ri_orig_ret_vaddr as u64) as *const u64) else { break };
            let at = slot.wrapping_sub(sp);
            if at <= (MAX - 8) as u64 && at + 8 <= copied as u64 {
                (dest.add(at as usize) as *mut u64).write_unaligned(ret);
            } else if slot.wrapping_add(8) == sp {
                resume = Some(ret);
            }
            let Ok(next) = bpf_probe_read_kernel((ri + off.ri_next as u64) as *const u64) else { break };
            ri = next;
            i += 1;
        }
    }
    resume
}

/// The fields of a [`UserStackSample`] other than registers and stack.
pub struct StackSampleHeader {
    pub tgid: u32,
    pub tid: u32,
    pub kernel_stack_id: i32,
    pub kind: u32,
    pub syscall_nr: i32,
    pub weight: u64,
    pub addr: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// Emits one sample of the current task into `USER_STACK_SAMPLES`.
/// Returns false when the ring buffer was full (the caller counts the drop
/// in its own counter).
#[inline(always)]
pub fn emit_stack_sample(header: &StackSampleHeader) -> bool {
    let Some(regs) = user_regs() else {
        bump(Counter::CpuUserStackCopyFailed);
        return true;
    };
    let Some(mut entry) = USER_STACK_SAMPLES.reserve::<UserStackSample>(0) else {
        return false;
    };
    let sample = entry.as_mut_ptr();
    let mut ip = regs.ip;
    // SAFETY: `sample` points at a reserved record of the right size; the
    // stack copy stays inside its `stack` array.
    let copied = unsafe {
        let copied =
            copy_user_stack::<USER_STACK_COPY_BYTES>(core::ptr::addr_of_mut!((*sample).stack) as *mut u8, regs.sp, &mut ip);
        core::ptr::addr_of_mut!((*sample).tgid).write(header.tgid);
        core::ptr::addr_of_mut!((*sample).tid).write(header.tid);
        core::ptr::addr_of_mut!((*sample).kernel_stack_id).write(header.kernel_stack_id);
        core::ptr::addr_of_mut!((*sample).stack_len).write(copied as u32);
        core::ptr::addr_of_mut!((*sample).kind).write(header.kind);
        core::ptr::addr_of_mut!((*sample).syscall_nr).write(header.syscall_nr);
        core::ptr::addr_of_mut!((*sample).ts_ns).write(bpf_ktime_get_ns());
        core::ptr::addr_of_mut!((*sample).weight).write(header.weight);
        core::ptr::addr_of_mut!((*sample).addr).write(header.addr);
        core::ptr::addr_of_mut!((*sample).ip).write(ip);
        core::ptr::addr_of_mut!((*sample).sp).write(regs.sp);
        core::ptr::addr_of_mut!((*sample).bp).write(regs.bp);
        core::ptr::addr_of_mut!((*sample).comm).write(header.comm);
        copied
    };
    if copied == 0 {
        bump(Counter::CpuUserStackCopyFailed);
    }
    // No wake-up: the agent drains the ring on a timer. A wake-up per
    // sample would schedule the agent, often on the target's own CPU.
    entry.submit(BPF_RB_NO_WAKEUP);
    true
}

/// One step of a stack fingerprint's hash (the allocation sites of
/// memory.rs and the database call sites of db.rs).
#[inline(always)]
pub(crate) fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
}

/// Whether a stack word points into one of the target's code ranges.
#[inline(always)]
pub(crate) fn in_range(v: u64, r: &perf_audit_common::memory::TextRange) -> bool {
    v >= r.start && v < r.end
}
