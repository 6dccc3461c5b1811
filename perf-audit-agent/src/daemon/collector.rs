//! Draining the kernel's CPU aggregation into the agent, every interval.
//!
//! The eBPF program counts samples per (thread, user stack id, kernel stack
//! id) in a per-CPU hash (`CPU_STACK_COUNTS`) and interns stacks in
//! `STACK_TRACES`. A one-shot audit reads both once; the daemon runs for
//! weeks, so both must be emptied as it goes or they fill and drop:
//!
//! - each drain reads every count and deletes its key (a sample landing in
//!   the microseconds between the read and the delete of the same key is
//!   lost; the cumulative gap shows as `perf_audit_samples_unaccounted`);
//! - stack ids are resolved once and cached here (an id's frames never
//!   change until we delete it), and an id unused for [`STACK_ID_IDLE_DRAINS`]
//!   drains is deleted from the kernel map and from the cache, so the map
//!   holds only recently used stacks.

use std::{collections::HashMap, sync::Arc};

use aya::{
    Ebpf,
    maps::{PerCpuHashMap, StackTraceMap},
};
use perf_audit_common::{CpuStackKey, TASK_COMM_LEN, names};

use crate::{
    error::{Error, Result},
    kernel::missing,
};

/// Drains after which a stack id nobody used is deleted.
pub const STACK_ID_IDLE_DRAINS: u64 = 3;

/// One distinct stack of one process as the agent keeps it: thread name and
/// addresses, leaf first. Cheap to clone (shared slices).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub comm: [u8; TASK_COMM_LEN],
    pub user: Arc<[u64]>,
    pub kernel: Arc<[u64]>,
}

impl StackKey {
    pub fn thread_name(&self) -> String {
        let len = self.comm.iter().position(|b| *b == 0).unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..len]).into_owned()
    }
}

/// Samples read from the kernel by one drain.
pub struct Drained {
    pub samples: Vec<(u32, StackKey, u64)>,
    /// Entries `CPU_STACK_COUNTS` held at the drain (its fill).
    pub map_entries: usize,
}

#[derive(Default)]
pub struct Drainer {
    drains: u64,
    /// Stack id -> (last drain that used it, its frames).
    stacks: HashMap<u32, (u64, Arc<[u64]>)>,
    empty: Option<Arc<[u64]>>,
    /// Stack ids deleted from the kernel map as idle.
    pub stack_ids_pruned: u64,
    /// Stack ids that could not be read back (deleted while in use: rare).
    pub stack_lookups_failed: u64,
    /// Every sample count ever read.
    pub samples_drained: u64,
}

impl Drainer {
    /// Stack ids currently interned (the fill of `STACK_TRACES`).
    pub fn stack_ids(&self) -> usize {
        self.stacks.len()
    }

    pub fn drain(&mut self, ebpf: &mut Ebpf) -> Result<Drained> {
        self.drains += 1;
        let mut counts: PerCpuHashMap<_, CpuStackKey, u64> = PerCpuHashMap::try_from(
            ebpf.map_mut(names::CPU_STACK_COUNTS).ok_or_else(|| missing(names::CPU_STACK_COUNTS))?,
        )
        .map_err(|e| Error::internal(format!("CPU_STACK_COUNTS: {e}")))?;
        let keys: Vec<CpuStackKey> = counts.keys().filter_map(|k| k.ok()).collect();
        let mut entries = Vec::with_capacity(keys.len());
        for key in &keys {
            let Ok(per_cpu) = counts.get(key, 0) else { continue };
            let _ = counts.remove(key);
            let count: u64 = per_cpu.iter().sum();
            if count > 0 {
                entries.push((*key, count));
            }
        }

        let mut traces = StackTraceMap::try_from(
            ebpf.map_mut(names::STACK_TRACES).ok_or_else(|| missing(names::STACK_TRACES))?,
        )
        .map_err(|e| Error::internal(format!("STACK_TRACES: {e}")))?;
        let mut samples = Vec::with_capacity(entries.len());
        for (key, count) in entries {
            let user = self.frames(&traces, key.user_stack_id);
            let kernel = self.frames(&traces, key.kernel_stack_id);
            self.samples_drained += count;
            samples.push((key.tgid, StackKey { comm: key.comm, user, kernel }, count));
        }

        // Prune idle stack ids, in the kernel and here.
        let now = self.drains;
        let idle: Vec<u32> =
            self.stacks.iter().filter(|(_, (seen, _))| seen + STACK_ID_IDLE_DRAINS <= now).map(|(id, _)| *id).collect();
        for id in idle {
            let _ = traces.remove(&id);
            self.stacks.remove(&id);
            self.stack_ids_pruned += 1;
        }
        Ok(Drained { samples, map_entries: keys.len() })
    }

    /// Kernel stacks of stack-copy samples (the ring carries only their
    /// ids), through the same cache and idle pruning as the counts.
    pub fn kernel_stacks(&mut self, ebpf: &mut Ebpf, ids: &[i32]) -> Result<Vec<Arc<[u64]>>> {
        let traces = StackTraceMap::try_from(
            ebpf.map_mut(names::STACK_TRACES).ok_or_else(|| missing(names::STACK_TRACES))?,
        )
        .map_err(|e| Error::internal(format!("STACK_TRACES: {e}")))?;
        Ok(ids.iter().map(|id| self.frames(&traces, *id)).collect())
    }

    fn frames(&mut self, traces: &StackTraceMap<&mut aya::maps::MapData>, id: i32) -> Arc<[u64]> {
        let empty = self.empty.get_or_insert_with(|| Arc::from(Vec::new())).clone();
        if id < 0 {
            return empty;
        }
        let id = id as u32;
        if let Some((seen, frames)) = self.stacks.get_mut(&id) {
            *seen = self.drains;
            return frames.clone();
        }
        match traces.get(&id, 0) {
            Ok(trace) => {
                let frames: Arc<[u64]> = trace.frames().iter().map(|f| f.ip).filter(|ip| *ip != 0).collect();
                self.stacks.insert(id, (self.drains, frames.clone()));
                frames
            }
            Err(_) => {
                self.stack_lookups_failed += 1;
                empty
            }
        }
    }
}
