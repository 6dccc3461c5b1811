//! Whole user stacks for every process on the node, frame pointers or not.
//!
//! The daemon loads the perf_event program in stack-copy mode: each sample
//! sends the user registers and a copy of the user stack (up to 64 KiB,
//! stopping at the stack mapping's end) to a small ring buffer, which the
//! daemon drains every [`RING_DRAIN_INTERVAL`]. Each sample is unwound at
//! once with framehop (`crate::unwind`) through:
//!
//! - one [`TableCache`] for the whole node, keyed by build-id (or path, size
//!   and mtime): a binary run by a hundred processes is parsed once. Bounded
//!   by [`MAX_OBJECTS`] objects / [`MAX_PATHS`] paths; beyond, it is cleared
//!   and rebuilt on demand (counted);
//! - one [`ProcessUnwinder`] and maps snapshot per process, at most
//!   [`MAX_PROCESSES`], evicted when the process exits or has not been
//!   sampled for [`IDLE_EVICT_DRAINS`] drains (least recently sampled first
//!   when full);
//! - every window, the tables no remaining process uses are dropped (their
//!   files unmapped), and every drain the cached files' resident pages are
//!   released ([`NodeUnwinder::release_table_pages`]): the daemon's
//!   file-backed RSS is what the last drain interval touched, not every
//!   page ever read.
//!
//! When the tables walk stops early (code without tables: a stripped or
//! unreadable object) the frame-pointer chain in the same copy is walked
//! instead, if it goes further; what neither completes is counted as
//! truncated, per process, in `/metrics`, as are the processes with an
//! executable mapping whose tables could not be loaded.

use std::collections::HashMap;

use crate::{
    target::MapsSnapshot,
    unwind::{ProcessUnwinder, TableCache, UnwindEnd, frame_pointer_walk},
};

/// How often the stack-copy ring is drained: at 19 Hz on 64 CPUs about 300
/// samples wait, within [`RING_BYTES`].
pub const RING_DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// The daemon's stack-copy ring: 64 records of 64 KiB.
pub const RING_BYTES: u32 = 4 * 1024 * 1024;
pub const MAX_OBJECTS: usize = 512;
pub const MAX_PATHS: usize = 8_192;
pub const MAX_PROCESSES: usize = 1_024;
/// Ring drains (of [`RING_DRAIN_INTERVAL`]) without a sample after which a
/// process's unwinder is dropped: 2 minutes.
pub const IDLE_EVICT_DRAINS: u64 = 480;

/// Drains (2.5 s) between two re-reads of a process's maps for a sample
/// outside them.
pub const REFRESH_DRAINS: u64 = 10;

/// How a sample's user stack was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Unwound from the tables up to a root frame.
    Complete,
    /// The tables walk stopped early; the frame-pointer chain went further.
    FramePointer,
    /// Neither walk reached a root.
    Truncated,
    /// No user stack: a kernel thread, or the copy failed.
    NoUserStack,
}

#[derive(Debug, Clone, Default)]
pub struct UnwindStats {
    pub complete: u64,
    pub frame_pointer: u64,
    pub truncated: u64,
    pub no_user_stack: u64,
    pub table_cache_resets: u64,
    pub processes_evicted: u64,
    /// Objects whose tables were dropped once no process used them.
    pub table_objects_evicted: u64,
}

struct ProcessState {
    unwinder: ProcessUnwinder,
    maps: MapsSnapshot,
    last_drain: u64,
    /// Drain of the last re-read of the maps.
    refreshed_in: u64,
}

/// The node's unwinding state (see the module documentation).
#[derive(Default)]
pub struct NodeUnwinder {
    tables: TableCache,
    processes: HashMap<u32, ProcessState>,
    drain: u64,
    pub stats: UnwindStats,
}

impl NodeUnwinder {
    /// Marks the start of a ring drain (for refreshes and idle eviction).
    pub fn begin_drain(&mut self) {
        self.drain += 1;
        if self.drain.is_multiple_of(64) {
            let now = self.drain;
            let before = self.processes.len();
            self.processes.retain(|_, p| p.last_drain + IDLE_EVICT_DRAINS > now);
            self.stats.processes_evicted += (before - self.processes.len()) as u64;
        }
    }

    /// Drops the state of a process that exited.
    pub fn forget(&mut self, pid: u32) {
        if self.processes.remove(&pid).is_some() {
            self.stats.processes_evicted += 1;
        }
    }

    /// Drops the state of every process that exited, then the tables no
    /// remaining process uses, and the resident pages of the others (see
    /// [`TableCache::evict_unused`] and [`TableCache::release_pages`]):
    /// called once per window.
    pub fn evict_exited(&mut self) {
        let before = self.processes.len();
        self.processes.retain(|pid, _| crate::target::is_alive(*pid));
        self.stats.processes_evicted += (before - self.processes.len()) as u64;
        self.stats.table_objects_evicted += self.tables.evict_unused() as u64;
        self.tables.release_pages();
    }

    /// Drops the resident pages of the cached objects (every drain, so
    /// that the file-backed RSS is what one drain interval touches).
    pub fn release_table_pages(&self) {
        self.tables.release_pages();
    }

    /// Processes with unwinding state.
    pub fn processes(&self) -> usize {
        self.processes.len()
    }

    /// Distinct objects whose tables are cached.
    pub fn objects(&self) -> usize {
        self.tables.objects()
    }

    /// Tracked processes with an executable mapping whose tables could not
    /// be loaded, and the pids (sorted).
    pub fn processes_without_tables(&self) -> Vec<u32> {
        let mut pids: Vec<u32> =
            self.processes.iter().filter(|(_, p)| p.unwinder.mappings_without_tables() > 0).map(|(pid, _)| *pid).collect();
        pids.sort_unstable();
        pids
    }

    /// Unwinds one sample of process `pid`: its user frames, leaf first.
    pub fn unwind(&mut self, pid: u32, (ip, sp, bp): (u64, u64, u64), stack: &[u8]) -> (Vec<u64>, Outcome) {
        let outcome = self.unwind_inner(pid, (ip, sp, bp), stack);
        match outcome.1 {
            Outcome::Complete => self.stats.complete += 1,
            Outcome::FramePointer => self.stats.frame_pointer += 1,
            Outcome::Truncated => self.stats.truncated += 1,
            Outcome::NoUserStack => self.stats.no_user_stack += 1,
        }
        outcome
    }

    fn unwind_inner(&mut self, pid: u32, (ip, sp, bp): (u64, u64, u64), stack: &[u8]) -> (Vec<u64>, Outcome) {
        if self.tables.objects() > MAX_OBJECTS || self.tables.paths() > MAX_PATHS {
            self.tables.clear();
            self.stats.table_cache_resets += 1;
        }
        if !self.processes.contains_key(&pid) {
            if self.processes.len() >= MAX_PROCESSES
                && let Some(oldest) = self.processes.iter().min_by_key(|(_, p)| p.last_drain).map(|(pid, _)| *pid)
            {
                self.forget(oldest);
            }
            let mut maps = MapsSnapshot::default();
            let _ = maps.refresh(pid);
            self.processes.insert(pid, ProcessState {
                unwinder: ProcessUnwinder::new(),
                maps,
                last_drain: self.drain,
                refreshed_in: self.drain,
            });
        }
        let state = self.processes.get_mut(&pid).expect("inserted above");
        state.last_drain = self.drain;
        // Code mapped since the snapshot (dlopen, exec): re-read, at most
        // every REFRESH_DRAINS drains (JIT code is never in the file maps).
        if state.maps.find(ip).is_none() && state.refreshed_in + REFRESH_DRAINS <= self.drain {
            let _ = state.maps.refresh(pid);
            state.refreshed_in = self.drain;
        }
        if state.maps.is_empty() {
            // A kernel thread (no user memory at all): no user frames.
            return (Vec::new(), Outcome::NoUserStack);
        }
        if stack.is_empty() && ip == 0 {
            return (Vec::new(), Outcome::NoUserStack);
        }
        state.unwinder.sync_modules(&state.maps, &mut self.tables);
        let (frames, end) = state.unwinder.unwind(ip, sp, bp, stack);
        if end == UnwindEnd::Root {
            return (frames, Outcome::Complete);
        }
        let (fp, fp_end) = frame_pointer_walk(ip, sp, bp, stack);
        // The chain is believed only when every address is mapped code.
        let all_code = fp.iter().all(|a| state.maps.find(*a).is_some());
        if all_code && (fp.len() > frames.len() || fp.len() == frames.len() && fp_end == UnwindEnd::Root) {
            let outcome = if fp_end == UnwindEnd::Root { Outcome::FramePointer } else { Outcome::Truncated };
            return (fp, outcome);
        }
        (frames, Outcome::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_stack_is_unwound_whole_and_a_kernel_thread_has_none() {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers.
        unsafe {
            std::arch::asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let end = maps
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.split_once('-'))
            .map(|(a, b)| (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap()))
            .find(|(a, b)| (*a..*b).contains(&sp))
            .map(|(_, b)| b)
            .unwrap();
        let len = (end - sp).min(16 * 1024) as usize;
        // SAFETY: `len` bytes of our own live stack mapping from sp.
        let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
        let mut node = NodeUnwinder::default();
        node.begin_drain();
        let (frames, outcome) = node.unwind(std::process::id(), (ip, sp, bp), &stack);
        assert_eq!(outcome, Outcome::Complete, "{frames:x?}");
        assert!(frames.len() >= 5);
        // A second sample of the process reuses its state and the tables.
        let objects = node.objects();
        let _ = node.unwind(std::process::id(), (ip, sp, bp), &stack);
        assert_eq!((node.processes(), node.objects(), node.stats.complete), (1, objects, 2));
        assert!(node.processes_without_tables().is_empty());
        // kthreadd (pid 2) maps no user memory.
        assert_eq!(node.unwind(2, (0, 0, 0), &[]), (Vec::new(), Outcome::NoUserStack));
        node.forget(2);
        node.forget(std::process::id());
        assert_eq!((node.processes(), node.stats.processes_evicted), (0, 2));
        // No process uses the tables any more: they are dropped.
        assert!(objects > 0);
        node.evict_exited();
        assert_eq!((node.objects(), node.stats.table_objects_evicted), (0, objects as u64));
        // A process's tables stay while it is tracked, and survive their
        // pages being released.
        node.begin_drain();
        assert_eq!(node.unwind(std::process::id(), (ip, sp, bp), &stack).1, Outcome::Complete);
        node.evict_exited();
        assert_eq!(node.objects(), objects);
        assert_eq!(node.unwind(std::process::id(), (ip, sp, bp), &stack).1, Outcome::Complete);
    }
}
