//! Memory profile: uprobes on the allocator the target really uses
//! (attached by the agent at offsets the kernel can emulate rather than
//! single-step), keyed by a stack fingerprint, aggregated in the kernel.
//!
//! Per call the cost is one 512-byte stack read and a few map operations;
//! the full stack (32 KiB copy) crosses to the agent once per new site. The
//! agent attaches these programs for the whole audit (`--memory precise`)
//! or only in short duty-cycled windows (default mode); `MEM_CONTROL`'s
//! window number lets a free tell whether it was seen in the same window as
//! its allocation. See `perf-audit-common/src/memory.rs` for the contract.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::generated::{bpf_get_attach_cookie, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use perf_audit_common::memory::{
    LiveAlloc, MEM_COUNTER_SLOTS, MEM_FINGERPRINT_BYTES, MEM_LIVE_CAPACITY,
    MEM_PENDING_CAPACITY, MEM_SITES_CAPACITY, MEM_STACK_COPY_BYTES, MEM_STACK_RING_BYTES, MEM_TEXT_RANGES,
    MemCounter, MemStackSample, PendingAlloc, SiteStats, TextRange, mem_control, mem_cookie, mem_sample_kind,
};

use crate::{
    maps::current_target_thread,
    stack::{in_range, mix},
};

const BPF_NOEXIST: u64 = 1;
/// Allocate live-map entries on demand: the map only costs what is live.
const BPF_F_NO_PREALLOC: u32 = 1;
const SCAN_WORDS: usize = MEM_FINGERPRINT_BYTES / 8;

#[map(name = "MEM_SITES")]
static MEM_SITES: PerCpuHashMap<u64, SiteStats> = PerCpuHashMap::with_max_entries(MEM_SITES_CAPACITY, 0);

/// Sites whose stack was already sent to the agent.
#[map(name = "MEM_KNOWN_SITES")]
static MEM_KNOWN_SITES: HashMap<u64, u8> = HashMap::with_max_entries(MEM_SITES_CAPACITY, 0);

#[map(name = "MEM_LIVE")]
static MEM_LIVE: HashMap<u64, LiveAlloc> = HashMap::with_max_entries(MEM_LIVE_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "MEM_PENDING")]
static MEM_PENDING: HashMap<u32, PendingAlloc> = HashMap::with_max_entries(MEM_PENDING_CAPACITY, 0);

#[map(name = "MEM_TEXT")]
static MEM_TEXT: Array<TextRange> = Array::with_max_entries(MEM_TEXT_RANGES, 0);

#[map(name = "MEM_CONTROL")]
static MEM_CONTROL: Array<u64> = Array::with_max_entries(mem_control::SLOTS, 0);

#[map(name = "MEM_COUNTERS")]
static MEM_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MEM_COUNTER_SLOTS, 0);

#[map(name = "MEM_STACKS")]
static MEM_STACKS: RingBuf = RingBuf::with_byte_size(MEM_STACK_RING_BYTES, 0);

/// Per-CPU scratch for the fingerprint's stack read (the BPF stack is 512
/// bytes in all, too small to hold it).
#[map(name = "MEM_SCRATCH")]
static MEM_SCRATCH: PerCpuArray<[u64; SCAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn bump(counter: MemCounter) {
    if let Some(slot) = MEM_COUNTERS.get_ptr_mut(counter.slot()) {
        // SAFETY: this CPU's slot; uprobe programs do not nest on a CPU.
        unsafe { *slot += 1 };
    }
}

/// Hash of the return address and the next code addresses on the stack.
#[inline(always)]
fn fingerprint(sp: u64) -> u64 {
    let Some(scratch) = MEM_SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: reads user memory into our per-CPU scratch of the same size.
    let read = unsafe { bpf_probe_read_user(scratch.cast(), MEM_FINGERPRINT_BYTES as u32, sp as *const _) };
    if read != 0 {
        // Within 512 bytes of the stack's top: the return address alone.
        bump(MemCounter::FingerprintReadFailed);
        let mut ra: u64 = 0;
        // SAFETY: reads 8 bytes of user memory into a local.
        unsafe { bpf_probe_read_user((&mut ra as *mut u64).cast(), 8, sp as *const _) };
        return mix(0xcbf2_9ce4_8422_2325, ra) | 1;
    }
    let empty = TextRange { start: 0, end: 0 };
    let r0 = *MEM_TEXT.get(0).unwrap_or(&empty);
    let r1 = *MEM_TEXT.get(1).unwrap_or(&empty);
    let r2 = *MEM_TEXT.get(2).unwrap_or(&empty);
    let r3 = *MEM_TEXT.get(3).unwrap_or(&empty);
    // SAFETY: the scratch slot is this CPU's and was just filled.
    let words = unsafe { &*scratch };
    let mut h = mix(0xcbf2_9ce4_8422_2325, words[0]);
    let mut i = 1;
    // No early exit: every iteration ends in the same verifier state, so
    // the loop verifies in linear time.
    while i < SCAN_WORDS {
        let v = words[i];
        if in_range(v, &r0) || in_range(v, &r1) || in_range(v, &r2) || in_range(v, &r3) {
            h = mix(h, v);
        }
        i += 1;
    }
    h | 1
}

/// Adds to this CPU's counters of `site`; on a new site, sends its stack.
#[inline(always)]
fn charge_alloc(regs: &pt_regs, tgid: u32, tid: u32, site: u64, size: u64) {
    if let Some(stats) = MEM_SITES.get_ptr_mut(&site) {
        // SAFETY: this CPU's slot of an existing entry.
        unsafe {
            (*stats).alloc_count += 1;
            (*stats).alloc_bytes += size;
        }
        return;
    }
    let stats = SiteStats { alloc_count: 1, alloc_bytes: size, ..SiteStats::default() };
    if MEM_SITES.insert(&site, &stats, 0).is_err() {
        bump(MemCounter::SiteMapFull);
        return;
    }
    if MEM_KNOWN_SITES.insert(&site, &1, BPF_NOEXIST).is_ok() && !send_stack(regs, tgid, tid, site) {
        // Lost in a full ring: let the next call of this site try again.
        let _ = MEM_KNOWN_SITES.remove(&site);
        let _ = MEM_SITES.remove(&site);
    }
}

/// Copies registers and up to `MEM_STACK_COPY_BYTES` of user stack, page
/// by page until the stack mapping ends (`stack::copy_user_stack`).
#[inline(always)]
fn send_stack(regs: &pt_regs, tgid: u32, tid: u32, site: u64) -> bool {
    let Some(mut entry) = MEM_STACKS.reserve::<MemStackSample>(0) else {
        bump(MemCounter::StackRingFull);
        return false;
    };
    let sample = entry.as_mut_ptr();
    let sp = regs.rsp;
    let mut ip = regs.rip;
    // SAFETY: the copy stays inside the reserved record's `stack` array of
    // MEM_STACK_COPY_BYTES; the header writes are fields of that record.
    unsafe {
        let copied = crate::stack::copy_user_stack::<MEM_STACK_COPY_BYTES>(
            core::ptr::addr_of_mut!((*sample).stack) as *mut u8,
            sp,
            &mut ip,
        );
        core::ptr::addr_of_mut!((*sample).site).write(site);
        core::ptr::addr_of_mut!((*sample).tgid).write(tgid);
        core::ptr::addr_of_mut!((*sample).tid).write(tid);
        core::ptr::addr_of_mut!((*sample).kind).write(mem_sample_kind::NEW_SITE);
        core::ptr::addr_of_mut!((*sample).stack_len).write(copied as u32);
        core::ptr::addr_of_mut!((*sample).ip).write(ip);
        core::ptr::addr_of_mut!((*sample).sp).write(sp);
        core::ptr::addr_of_mut!((*sample).bp).write(regs.rbp);
    }
    entry.submit(0);
    true
}

/// Recording is on and its lease (`RECORDING_UNTIL`) has not run out.
#[inline(always)]
fn recording() -> bool {
    if MEM_CONTROL.get(mem_control::RECORDING).copied().unwrap_or(0) == 0 {
        return false;
    }
    let until = MEM_CONTROL.get(mem_control::RECORDING_UNTIL).copied().unwrap_or(0);
    // SAFETY: a helper without arguments.
    until == 0 || unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() } < until
}

#[inline(always)]
fn alloc_enter(ctx: &ProbeContext, size: u64, out_ptr: u64) {
    let Some((tgid, tid)) = current_target_thread() else { return };
    if !recording() {
        return;
    }
    // SAFETY: the probe context's registers are the user registers.
    let regs = unsafe { &*ctx.regs };
    // SAFETY: a copy of the entry is taken.
    if let Some(outer) = unsafe { MEM_PENDING.get(&tid) }.copied() {
        if outer.sp > regs.rsp {
            // Called from inside another allocator call on this thread.
            return;
        }
        // A call whose return was never seen (probes detached meanwhile).
        bump(MemCounter::PendingLost);
    }
    bump(MemCounter::AllocCalls);
    let site = fingerprint(regs.rsp);
    charge_alloc(regs, tgid, tid, site, size);
    let pending = PendingAlloc { size, site, out_ptr, sp: regs.rsp };
    if MEM_PENDING.insert(&tid, &pending, 0).is_err() {
        bump(MemCounter::PendingLost);
    }
}

/// The site of the allocator call thread `tid` is inside (its entry seen,
/// its return pending, `sp` at or below the entry's), or 0. A uretprobe replaces
/// the call's return address on the user stack, so a stack copied inside
/// the call cannot be unwound past it: the page-fault sampler sends this
/// site, whose stack (copied at the entry, intact) the agent completes it
/// with.
#[inline(always)]
pub fn pending_site(tid: u32, sp: u64) -> u64 {
    // At or below the entry's stack pointer: inside the call, including a
    // function it tail-called (glibc's calloc jumps to memset, which runs
    // at the entry's `sp`); once the call returned, `sp` is above it.
    // SAFETY: a copy of the entry is taken.
    match unsafe { MEM_PENDING.get(&tid) }.copied() {
        Some(p) if sp <= p.sp => p.site,
        _ => 0,
    }
}

#[inline(always)]
fn current_window() -> u64 {
    MEM_CONTROL.get(mem_control::WINDOW).copied().unwrap_or(0)
}

#[inline(always)]
fn free_ptr(ptr: u64) {
    bump(MemCounter::FreeCalls);
    if ptr == 0 {
        return;
    }
    // SAFETY: a copy is taken before the entry is removed.
    let Some(live) = (unsafe { MEM_LIVE.get(&ptr) }).copied() else {
        bump(MemCounter::FreeUntracked);
        return;
    };
    let _ = MEM_LIVE.remove(&ptr);
    let same_window = live.window == current_window();
    if let Some(stats) = MEM_SITES.get_ptr_mut(&live.site) {
        // SAFETY: this CPU's slot of an existing entry.
        unsafe {
            if same_window {
                (*stats).free_count += 1;
                (*stats).free_bytes += live.size;
            } else {
                (*stats).late_free_count += 1;
                (*stats).late_free_bytes += live.size;
            }
        }
    } else {
        let mut stats = SiteStats::default();
        if same_window {
            stats.free_count = 1;
            stats.free_bytes = live.size;
        } else {
            stats.late_free_count = 1;
            stats.late_free_bytes = live.size;
        }
        if MEM_SITES.insert(&live.site, &stats, 0).is_err() {
            bump(MemCounter::SiteMapFull);
        }
    }
}

/// `malloc(size)`, `mallocx(size, flags)`, `mi_malloc(size)`...
#[uprobe]
pub fn mem_alloc_arg0(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    alloc_enter(&ctx, size, 0);
    0
}

/// `aligned_alloc(align, size)`, `memalign(align, size)`.
#[uprobe]
pub fn mem_alloc_arg1(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    alloc_enter(&ctx, size, 0);
    0
}

/// `calloc(n, size)`.
#[uprobe]
pub fn mem_calloc(ctx: ProbeContext) -> u32 {
    let n: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    alloc_enter(&ctx, n.wrapping_mul(size), 0);
    0
}

/// `realloc(ptr, size)`: the old block is freed, a new one allocated (a
/// failed realloc keeps the old block; it is then counted as freed).
#[uprobe]
pub fn mem_realloc(ctx: ProbeContext) -> u32 {
    if current_target_thread().is_none() {
        return 0;
    }
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    if ptr != 0 {
        free_ptr(ptr);
    }
    alloc_enter(&ctx, size, 0);
    0
}

/// `posix_memalign(&ptr, align, size)`: the pointer is read at return.
#[uprobe]
pub fn mem_posix_memalign(ctx: ProbeContext) -> u32 {
    let out: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    alloc_enter(&ctx, size, out);
    0
}

/// `free(ptr)`, attached past a leading null check when the code has one.
#[uprobe]
pub fn mem_free(ctx: ProbeContext) -> u32 {
    if current_target_thread().is_none() {
        return 0;
    }
    free_ptr(ctx.arg(0).unwrap_or(0));
    0
}

/// Integer argument `n` (System V: rdi, rsi, rdx, rcx, r8, r9). Every
/// register is loaded at its own constant offset (volatile reads, so that
/// the compiler cannot turn them into one load at a computed context
/// offset, which the verifier rejects) and the value is picked after.
#[inline(always)]
fn arg_at(regs: &pt_regs, n: u8) -> u64 {
    // SAFETY: reads of fields of the probe's register context.
    let args = unsafe {
        [
            core::ptr::read_volatile(&regs.rdi),
            core::ptr::read_volatile(&regs.rsi),
            core::ptr::read_volatile(&regs.rdx),
            core::ptr::read_volatile(&regs.rcx),
            core::ptr::read_volatile(&regs.r8),
            core::ptr::read_volatile(&regs.r9),
        ]
    };
    match n {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        _ => args[5],
    }
}

#[inline(always)]
fn attach_cookie(ctx: &ProbeContext) -> u64 {
    // SAFETY: the helper only reads the running program's attach cookie.
    unsafe { bpf_get_attach_cookie(ctx.regs.cast()) }
}

/// Rust's `__rust_alloc(size, align)`, or a `GlobalAlloc::alloc`: the
/// size in the argument the attach cookie names.
#[uprobe]
pub fn mem_alloc_size_at(ctx: ProbeContext) -> u32 {
    let cookie = attach_cookie(&ctx);
    // SAFETY: the probe context's registers are the user registers.
    let regs = unsafe { &*ctx.regs };
    alloc_enter(&ctx, arg_at(regs, mem_cookie::size_arg(cookie)), 0);
    0
}

/// `__rust_realloc(ptr, old_size, align, new_size)`, or a
/// `GlobalAlloc::realloc`: as `mem_realloc`, at the cookie's positions.
#[uprobe]
pub fn mem_realloc_at(ctx: ProbeContext) -> u32 {
    if current_target_thread().is_none() {
        return 0;
    }
    let cookie = attach_cookie(&ctx);
    // SAFETY: the probe context's registers are the user registers.
    let regs = unsafe { &*ctx.regs };
    let ptr = arg_at(regs, mem_cookie::ptr_arg(cookie));
    let size = arg_at(regs, mem_cookie::size_arg(cookie));
    if ptr != 0 {
        free_ptr(ptr);
    }
    alloc_enter(&ctx, size, 0);
    0
}

/// `__rust_dealloc(ptr, size, align)`, or a `GlobalAlloc::dealloc`.
#[uprobe]
pub fn mem_free_at(ctx: ProbeContext) -> u32 {
    if current_target_thread().is_none() {
        return 0;
    }
    let cookie = attach_cookie(&ctx);
    // SAFETY: the probe context's registers are the user registers.
    let regs = unsafe { &*ctx.regs };
    free_ptr(arg_at(regs, mem_cookie::ptr_arg(cookie)));
    0
}

#[uretprobe]
pub fn mem_alloc_return(ctx: RetProbeContext) -> u32 {
    let Some((_tgid, tid)) = current_target_thread() else { return 0 };
    // SAFETY: a copy is taken before the entry is removed.
    let Some(pending) = (unsafe { MEM_PENDING.get(&tid) }).copied() else {
        // The entry was not recorded (outside a recording window).
        return 0;
    };
    // SAFETY: the probe context's registers are the user registers.
    let sp = unsafe { (*ctx.regs).rsp };
    if pending.sp.wrapping_add(8) != sp {
        // The return of a nested call: the outer call's is still to come.
        return 0;
    }
    let _ = MEM_PENDING.remove(&tid);
    let ret: u64 = ctx.ret();
    let ptr = if pending.out_ptr != 0 {
        let mut p: u64 = 0;
        if ret == 0 {
            // SAFETY: reads the 8-byte pointer posix_memalign wrote.
            unsafe { bpf_probe_read_user((&mut p as *mut u64).cast(), 8, pending.out_ptr as *const _) };
        }
        p
    } else {
        ret
    };
    if ptr == 0 {
        bump(MemCounter::AllocFailed);
        return 0;
    }
    let live = LiveAlloc { size: pending.size, site: pending.site, window: current_window() };
    if MEM_LIVE.insert(&ptr, &live, 0).is_err() {
        bump(MemCounter::LiveMapFull);
    }
    0
}
