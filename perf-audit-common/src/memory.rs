//! The memory profile's contract between `perf-audit-ebpf/src/memory.rs`
//! and the agent (`perf-audit-agent/src/kernel/memory.rs`).
//!
//! Allocator calls are keyed in the kernel by a *stack fingerprint*: a hash
//! of the code addresses found in the first [`MEM_FINGERPRINT_BYTES`] of the
//! user stack at the allocator's entry (the return addresses of the
//! allocating call path). Release builds have no frame pointers, so
//! `bpf_get_stackid` cannot walk them, and copying the whole stack on every
//! call is far too slow; the fingerprint costs one small read. The first
//! time a fingerprint is seen, the full stack is copied once to a ring
//! buffer for the agent to unwind; from then on the kernel only adds to
//! that site's counters. Live allocations (address -> size, site) are kept
//! in a bounded hash so that frees are charged back to the allocating site.

/// Distinct allocation sites (fingerprints) tracked per CPU.
pub const MEM_SITES_CAPACITY: u32 = 16_384;
/// Live allocations tracked at once (address -> size, site). When full, new
/// allocations are counted in their site but not tracked for frees, and
/// counted as dropped (`MemCounter::LiveMapFull`).
pub const MEM_LIVE_CAPACITY: u32 = 1_048_576;
/// Threads with an allocator call in flight (entry seen, return pending).
pub const MEM_PENDING_CAPACITY: u32 = 16_384;
/// Bytes of user stack scanned for the fingerprint at each allocator call.
pub const MEM_FINGERPRINT_BYTES: usize = 512;
/// Code ranges (the target's executable mappings) a fingerprint value must
/// fall in: the agent fills the first entries, `end == 0` ends the list.
pub const MEM_TEXT_RANGES: u32 = 4;
/// Bytes of user stack copied once per new site (and per page-fault sample).
pub const MEM_STACK_COPY_BYTES: usize = 32_768;
/// Ring buffer carrying [`MemStackSample`]s (a power of two).
pub const MEM_STACK_RING_BYTES: u32 = 8 * 1024 * 1024;

/// Per-CPU counters of one site (value of `MEM_SITES`). The agent sums CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    /// Frees observed in the same sampling window as their allocation (or
    /// any free in precise mode, where there is one window).
    pub free_count: u64,
    pub free_bytes: u64,
    /// Frees observed in a later window than their allocation (default
    /// mode: such frees are seen only when they fall inside a window).
    pub late_free_count: u64,
    pub late_free_bytes: u64,
}

/// One tracked live allocation (value of `MEM_LIVE`, keyed by address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveAlloc {
    pub size: u64,
    pub site: u64,
    /// Sampling window the allocation was made in.
    pub window: u64,
}

/// An allocator call between its entry and its return (value of
/// `MEM_PENDING`, keyed by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingAlloc {
    pub size: u64,
    pub site: u64,
    /// `posix_memalign`: where the pointer is written (0 otherwise).
    pub out_ptr: u64,
    /// Stack pointer at the entry: the matching return has `sp + 8` (the
    /// return address popped). A call made from inside another allocator
    /// call (glibc's `realloc(NULL, n)` calls `malloc`) has a lower `sp` and
    /// is not counted twice.
    pub sp: u64,
}

/// A code range of the target (value of `MEM_TEXT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextRange {
    pub start: u64,
    pub end: u64,
}

/// Kinds of [`MemStackSample`].
pub mod mem_sample_kind {
    /// The first call seen from a new allocation site.
    pub const NEW_SITE: u32 = 0;
}

/// The full stack of a new allocation site, unwound by the agent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemStackSample {
    pub site: u64,
    pub tgid: u32,
    pub tid: u32,
    pub kind: u32,
    /// Bytes of `stack` that hold a copy of user memory from `sp`.
    pub stack_len: u32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub stack: [u8; MEM_STACK_COPY_BYTES],
}

/// Slots of `MEM_CONTROL` (an array of `u64` the agent writes).
pub mod mem_control {
    /// Current sampling window number (starts at 1).
    pub const WINDOW: u32 = 0;
    /// Non-zero while allocations are recorded. Cleared at a window's end
    /// before the probes are detached, so that no allocation is recorded
    /// after `free` stops being watched.
    pub const RECORDING: u32 = 1;
    /// While RECORDING is set, allocations are recorded only until this
    /// time (`bpf_ktime_get_ns`, CLOCK_MONOTONIC); 0: no limit. The agent
    /// renews it as a lease, so an agent that is stopped (SIGSTOP) or
    /// starved cannot leave recording on: its probes then cost only their
    /// trap.
    pub const RECORDING_UNTIL: u32 = 2;
    pub const SLOTS: u32 = 4;
}

/// Slots of the per-CPU `MEM_COUNTERS` array: every event that could not be
/// recorded is counted, and the report shows each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemCounter {
    /// Allocator calls of the target seen (malloc, calloc, realloc...).
    AllocCalls = 0,
    /// Frees (and reallocs of a non-null pointer) seen.
    FreeCalls = 1,
    /// Frees of an address not tracked (allocated before the audit or
    /// outside a window, or not tracked because the live map was full).
    FreeUntracked = 2,
    /// Allocations not tracked for frees: `MEM_LIVE` was full.
    LiveMapFull = 3,
    /// Allocations not counted: `MEM_SITES` was full.
    SiteMapFull = 4,
    /// New-site stacks lost: the ring buffer was full.
    StackRingFull = 5,
    /// Fingerprint stack reads that failed (counted under a fallback key).
    FingerprintReadFailed = 6,
    /// Allocations whose return was never seen (the probes were detached
    /// while the call ran): counted in their site, not tracked for frees.
    PendingLost = 7,
    /// Allocations that returned NULL.
    AllocFailed = 8,
}

pub const MEM_COUNTER_SLOTS: u32 = 16;

impl MemCounter {
    pub const ALL: [MemCounter; 9] = [
        MemCounter::AllocCalls,
        MemCounter::FreeCalls,
        MemCounter::FreeUntracked,
        MemCounter::LiveMapFull,
        MemCounter::SiteMapFull,
        MemCounter::StackRingFull,
        MemCounter::FingerprintReadFailed,
        MemCounter::PendingLost,
        MemCounter::AllocFailed,
    ];

    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// Attach cookies of the `*_AT` programs: which integer arguments (0 = the
/// first, `%rdi`, ... 5 = `%r9`) hold the pointer and the size. Rust's
/// allocator functions put them in different places (`__rust_realloc`'s new
/// size is its fourth argument; a `GlobalAlloc` method has `&self` first).
pub mod mem_cookie {
    pub const fn encode(ptr_arg: u8, size_arg: u8) -> u64 {
        ptr_arg as u64 | (size_arg as u64) << 8
    }

    pub const fn ptr_arg(cookie: u64) -> u8 {
        cookie as u8
    }

    pub const fn size_arg(cookie: u64) -> u8 {
        (cookie >> 8) as u8
    }
}

/// Program and map names of the memory profile.
pub mod mem_names {
    /// `malloc(size)`-shaped entry: size in the first argument.
    pub const ALLOC_SIZE_ARG0: &str = "mem_alloc_arg0";
    /// `aligned_alloc(align, size)`-shaped: size in the second argument.
    pub const ALLOC_SIZE_ARG1: &str = "mem_alloc_arg1";
    /// `calloc(n, size)`.
    pub const CALLOC: &str = "mem_calloc";
    /// `realloc(ptr, size)`.
    pub const REALLOC: &str = "mem_realloc";
    /// `posix_memalign(&ptr, align, size)`.
    pub const POSIX_MEMALIGN: &str = "mem_posix_memalign";
    /// `free(ptr)`.
    pub const FREE: &str = "mem_free";
    /// Allocation with the size in the argument the attach cookie names
    /// (Rust's `__rust_alloc(size, align)`, a `GlobalAlloc::alloc`).
    pub const ALLOC_SIZE_AT: &str = "mem_alloc_size_at";
    /// Reallocation with the pointer and new size where the cookie says
    /// (`__rust_realloc(ptr, old_size, align, new_size)`...).
    pub const REALLOC_AT: &str = "mem_realloc_at";
    /// Free with the pointer where the cookie says (`__rust_dealloc`...).
    pub const FREE_AT: &str = "mem_free_at";
    /// uretprobe of every allocating function: the returned pointer.
    pub const ALLOC_RETURN: &str = "mem_alloc_return";
    pub const SITES: &str = "MEM_SITES";
    pub const LIVE: &str = "MEM_LIVE";
    pub const PENDING: &str = "MEM_PENDING";
    pub const TEXT: &str = "MEM_TEXT";
    pub const CONTROL: &str = "MEM_CONTROL";
    pub const COUNTERS: &str = "MEM_COUNTERS";
    pub const STACKS: &str = "MEM_STACKS";
    pub const KNOWN_SITES: &str = "MEM_KNOWN_SITES";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding (layout tests).
    unsafe impl aya::Pod for super::SiteStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveAlloc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TextRange {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemStackSample {}
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn memory_layouts_are_pinned() {
        assert_eq!(size_of::<SiteStats>(), 48);
        assert_eq!(size_of::<LiveAlloc>(), 24);
        assert_eq!(size_of::<PendingAlloc>(), 32);
        assert_eq!(size_of::<TextRange>(), 16);
        assert_eq!(offset_of!(MemStackSample, site), 0);
        assert_eq!(offset_of!(MemStackSample, tgid), 8);
        assert_eq!(offset_of!(MemStackSample, kind), 16);
        assert_eq!(offset_of!(MemStackSample, stack_len), 20);
        assert_eq!(offset_of!(MemStackSample, ip), 24);
        assert_eq!(offset_of!(MemStackSample, bp), 40);
        assert_eq!(offset_of!(MemStackSample, stack), 48);
        assert_eq!(size_of::<MemStackSample>(), 48 + MEM_STACK_COPY_BYTES);
        assert!(MEM_STACK_RING_BYTES.is_power_of_two());
        assert_eq!(MEM_FINGERPRINT_BYTES % 8, 0);
    }

    #[test]
    fn attach_cookies_round_trip_argument_positions() {
        let c = mem_cookie::encode(1, 4);
        assert_eq!((mem_cookie::ptr_arg(c), mem_cookie::size_arg(c)), (1, 4));
    }

    #[test]
    fn memory_counter_slots_are_dense_and_fit() {
        for (i, c) in MemCounter::ALL.iter().enumerate() {
            assert_eq!(c.slot() as usize, i);
        }
        assert!(MemCounter::ALL.len() as u32 <= MEM_COUNTER_SLOTS);
    }
}
