//! The contract between the kernel side (`perf-audit-ebpf`) and the agent.
//!
//! Every type here crosses the user/kernel boundary through a BPF map or a
//! ring buffer, so each is `#[repr(C)]`, `Copy`, free of padding the verifier
//! could see as uninitialised, and its layout is pinned by the tests at the
//! bottom of this file. Changing a field means changing both sides at once;
//! the layout tests make that impossible to forget.
#![no_std]

pub mod memory;

/// Length of a task's `comm` as the kernel stores it (15 bytes + NUL).
pub const TASK_COMM_LEN: usize = 16;

/// Capacity of the in-kernel CPU sample aggregation map. At 99 Hz on a
/// handful of busy threads a 30 s audit produces far fewer distinct stacks;
/// when it is full, new stacks are counted as dropped, never blocking.
pub const CPU_STACK_COUNTS_CAPACITY: u32 = 65_536;

/// Capacity of the stack-trace map (distinct user or kernel stacks).
pub const STACK_TRACES_CAPACITY: u32 = 32_768;

/// Capacity of the set of target process ids (the daemon may watch many).
pub const TARGET_PIDS_CAPACITY: u32 = 4_096;

/// Key of `CPU_STACK_COUNTS`: one entry per distinct (thread, user stack,
/// kernel stack). The value is the number of samples (`u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuStackKey {
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Id in `STACK_TRACES` of the user stack, or negative when it could not
    /// be captured (the negative errno from `bpf_get_stackid`).
    pub user_stack_id: i32,
    /// Id in `STACK_TRACES` of the kernel stack, or negative when the sample
    /// was taken in user mode or could not be captured.
    pub kernel_stack_id: i32,
    /// The thread's name, cut by the kernel to 15 bytes.
    pub comm: [u8; TASK_COMM_LEN],
}

/// Bytes of user stack copied per sample in stack-copy mode (16 pages).
/// Deep async stacks (tokio -> axum -> handler futures) fit; perf's
/// `--call-graph dwarf` default is 8 KiB.
pub const USER_STACK_COPY_BYTES: usize = 65_536;

/// Page size the copy is chunked by: a copy stops at the first page that
/// cannot be read (the top of the stack mapping), keeping all pages before.
pub const USER_STACK_COPY_PAGE: usize = 4_096;

/// Size of the ring buffer carrying [`UserStackSample`]s (a power of two).
/// 32 MiB holds ~500 samples: over two seconds of backlog at 99 Hz on two
/// CPUs; the agent drains it as soon as it is readable.
pub const USER_STACK_RING_BYTES: u32 = 32 * 1024 * 1024;

/// One CPU sample in stack-copy mode: registers and a copy of the user
/// stack from `sp` upward, unwound by the agent from `.eh_frame`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserStackSample {
    pub tgid: u32,
    pub tid: u32,
    /// Id in `STACK_TRACES` of the kernel stack, or negative (see
    /// [`CpuStackKey::kernel_stack_id`]).
    pub kernel_stack_id: i32,
    /// Bytes of `stack` that hold a copy of user memory starting at `sp`.
    pub stack_len: u32,
    /// User-mode registers at the sample (the task's saved user registers
    /// when the sample hit the kernel).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub comm: [u8; TASK_COMM_LEN],
    pub stack: [u8; USER_STACK_COPY_BYTES],
}

/// Values of the `USER_STACK_MODE` global.
pub mod user_stack_mode {
    /// Kernel frame-pointer walk (`bpf_get_stackid`), aggregated in-kernel.
    pub const FRAME_POINTER: u32 = 0;
    /// Copy registers and the stack into a ring buffer; the agent unwinds.
    pub const STACK_COPY: u32 = 1;
}

/// Slots of the per-CPU `COUNTERS` array. The agent sums them over CPUs and
/// shows every one of them in the report: nothing is dropped silently.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Samples that hit a target thread (whether or not they were stored).
    CpuSamples = 0,
    /// Samples lost because `CPU_STACK_COUNTS` was full.
    CpuSamplesDroppedMapFull = 1,
    /// Samples whose user stack could not be captured.
    CpuUserStackFailed = 2,
    /// Samples whose kernel stack could not be captured (other than the
    /// expected "sample was in user mode").
    CpuKernelStackFailed = 3,
    /// Stack-copy samples lost because the ring buffer was full.
    CpuSamplesDroppedRingFull = 4,
    /// Stack-copy samples whose user stack could not be read at all.
    CpuUserStackCopyFailed = 5,
}

/// Number of slots in `COUNTERS` (room for later collectors).
pub const COUNTER_SLOTS: u32 = 32;

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Counter; 6] = [
        Counter::CpuSamples,
        Counter::CpuSamplesDroppedMapFull,
        Counter::CpuUserStackFailed,
        Counter::CpuKernelStackFailed,
        Counter::CpuSamplesDroppedRingFull,
        Counter::CpuUserStackCopyFailed,
    ];

    /// Slot index in `COUNTERS`.
    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// Values of the `FILTER_MODE` global.
pub mod filter_mode {
    /// Only processes whose tgid is a key of `TARGET_PIDS`.
    pub const LISTED_PIDS: u32 = 0;
    /// Every process on the machine (daemon, system-wide).
    pub const ALL: u32 = 1;
}

/// Names of the maps and programs, shared so that a rename on one side is a
/// compile error on the other, not a runtime "map not found".
pub mod names {
    pub const CPU_SAMPLE_PROGRAM: &str = "cpu_sample";
    pub const CPU_STACK_COUNTS: &str = "CPU_STACK_COUNTS";
    pub const STACK_TRACES: &str = "STACK_TRACES";
    pub const TARGET_PIDS: &str = "TARGET_PIDS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FILTER_MODE: &str = "FILTER_MODE";
    pub const USER_STACK_MODE: &str = "USER_STACK_MODE";
    pub const USER_STACK_SAMPLES: &str = "USER_STACK_SAMPLES";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding (checked by the
    // layout tests), every bit pattern valid.
    unsafe impl aya::Pod for super::CpuStackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UserStackSample {}
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn cpu_stack_key_layout_is_pinned() {
        assert_eq!(size_of::<CpuStackKey>(), 32);
        assert_eq!(align_of::<CpuStackKey>(), 4);
        assert_eq!(offset_of!(CpuStackKey, tgid), 0);
        assert_eq!(offset_of!(CpuStackKey, tid), 4);
        assert_eq!(offset_of!(CpuStackKey, user_stack_id), 8);
        assert_eq!(offset_of!(CpuStackKey, kernel_stack_id), 12);
        assert_eq!(offset_of!(CpuStackKey, comm), 16);
    }

    #[test]
    fn user_stack_sample_layout_is_pinned() {
        assert_eq!(offset_of!(UserStackSample, tgid), 0);
        assert_eq!(offset_of!(UserStackSample, tid), 4);
        assert_eq!(offset_of!(UserStackSample, kernel_stack_id), 8);
        assert_eq!(offset_of!(UserStackSample, stack_len), 12);
        assert_eq!(offset_of!(UserStackSample, ip), 16);
        assert_eq!(offset_of!(UserStackSample, sp), 24);
        assert_eq!(offset_of!(UserStackSample, bp), 32);
        assert_eq!(offset_of!(UserStackSample, comm), 40);
        assert_eq!(offset_of!(UserStackSample, stack), 56);
        assert_eq!(size_of::<UserStackSample>(), 56 + USER_STACK_COPY_BYTES);
        assert_eq!(align_of::<UserStackSample>(), 8);
        assert_eq!(USER_STACK_COPY_BYTES % USER_STACK_COPY_PAGE, 0);
        assert!(USER_STACK_RING_BYTES.is_power_of_two());
    }

    #[test]
    fn counter_slots_are_dense_and_fit() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.slot() as usize, i);
        }
        assert!(Counter::ALL.len() as u32 <= COUNTER_SLOTS);
    }
}
