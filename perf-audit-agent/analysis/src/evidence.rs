//! Raw evidence the probe layer hands to the analyses: plain values,
//! counted in the kernel or read from the target.

/// Sums of the per-CPU counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub cpu_samples: u64,
    pub cpu_samples_dropped_map_full: u64,
    pub cpu_user_stack_failed: u64,
    pub cpu_kernel_stack_failed: u64,
    pub cpu_samples_dropped_ring_full: u64,
    pub cpu_user_stack_copy_failed: u64,
    pub offcpu_samples: u64,
    pub offcpu_dropped_ring_full: u64,
    pub sched_state_map_full: u64,
    pub db_writes: u64,
    pub db_writes_dropped_ring_full: u64,
    pub db_payload_read_failed: u64,
    pub db_user_stack_copy_failed: u64,
    pub page_fault_samples: u64,
    pub page_fault_dropped_ring_full: u64,
    #[serde(flatten)]
    pub mappings: MappingTotals,
    pub mapping_dropped: u64,
}

/// Every mmap/munmap/brk call of the target, counted in the kernel (the
/// totals of report.json `memory.mappings`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MappingTotals {
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub brk_grow_calls: u64,
    pub brk_grow_bytes: u64,
    pub brk_shrink_bytes: u64,
}

/// Sums of the per-CPU memory counters (every drop is one of these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MemCounters {
    pub alloc_calls: u64,
    pub free_calls: u64,
    pub free_untracked: u64,
    pub live_map_full: u64,
    pub site_map_full: u64,
    pub stack_ring_full: u64,
    pub fingerprint_read_failed: u64,
    pub pending_lost: u64,
    pub alloc_failed: u64,
}

/// What the console reported about one task (latest values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleTask {
    pub location: String,
    pub polls: u64,
    pub busy_ns: u64,
    pub wakes: u64,
    pub self_wakes: u64,
    pub waker_clones: u64,
    pub waker_drops: u64,
    pub dropped: bool,
}
/// A memory event with its unwound user stack (see `sample_kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemEventRecord {
    /// `sample_kind::PAGE_FAULT`, `MMAP`, `MUNMAP` or `BRK`.
    pub kind: u32,
    pub tid: u32,
    pub ts_ns: u64,
    /// Faulting address, mapping address, or new break.
    pub addr: u64,
    /// Bytes mapped, unmapped or grown; for a page fault, the allocation
    /// site the thread was inside (0: none).
    pub bytes: u64,
    /// User stack pointer at the event (tells thread stacks apart).
    pub sp: u64,
    /// User frames, leaf first.
    pub frames: Vec<u64>,
}
