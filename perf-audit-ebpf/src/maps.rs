//! Maps shared by several programs: the target filter and the counters.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use perf_audit_common::{COUNTER_SLOTS, Counter, TARGET_PIDS_CAPACITY, filter_mode};

/// Set by the agent before load: `filter_mode::LISTED_PIDS` or `ALL`.
#[unsafe(no_mangle)]
static FILTER_MODE: u32 = filter_mode::LISTED_PIDS;

/// Process ids (tgids) to profile; the value is unused.
#[map(name = "TARGET_PIDS")]
pub static TARGET_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(TARGET_PIDS_CAPACITY, 0);

/// Per-CPU event counters, indexed by `Counter::slot`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Current thread as `(tgid, tid)` when it belongs to a target, else `None`.
/// This is the first thing every program does, so that non-target tasks pay
/// one map lookup and nothing else.
#[inline(always)]
pub fn current_target_thread() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tgid == 0 {
        return None; // the idle task
    }
    // SAFETY: a read of a global set once before load.
    let mode = unsafe { core::ptr::read_volatile(&FILTER_MODE) };
    if mode == filter_mode::ALL {
        return Some((tgid, tid));
    }
    TARGET_PIDS.get_ptr(tgid).map(|_| (tgid, tid))
}

/// Adds `value` to a counter (see [`bump`]).
#[inline(always)]
pub fn add(counter: Counter, value: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.slot()) {
        // SAFETY: as in `bump`.
        unsafe { *slot += value };
    }
}

#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.slot()) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for the same
        // program type, so a plain add is race-free.
        unsafe { *slot += 1 };
    }
}
