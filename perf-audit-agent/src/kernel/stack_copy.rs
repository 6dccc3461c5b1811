//! Reads `UserStackSample`s from the ring buffer every `DRAIN_INTERVAL`
//! (through the common [`RingReader`]) and unwinds each at once (so the 64 KiB copies never pile up; the
//! programs submit without wake-ups, since a wake-up per sample would put
//! the agent on the target's CPU at the sampling rate), keeping only
//! aggregated results: CPU stacks (dwarf mode) in the same shape as the
//! frame-pointer aggregation, off-CPU stacks weighted by time blocked, and
//! one small record per CPU sample (thread, time, on-CPU run length, stack)
//! for the long-poll analysis. Memory events (page-fault samples, large
//! mmap/munmap, brk growth) are unwound the same way and handed over one by
//! one ([`StackCopyCollector::take_memory_events`]) for the memory profile
//! to aggregate.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{RingBuf, StackTraceMap},
};
use perf_audit_common::{UserStackSample, names, sample_kind};
pub use perf_audit_analysis::evidence::MemEventRecord;

use super::{
    cpu::{RawCpuStack, comm_to_string, stack_frames},
    missing,
    ring::RingReader,
};
use crate::{
    error::{Error, Result},
    target::MapsSnapshot,
    unwind::{SharedUnwinder, UnwindEnd},
};

/// How often the ring is drained: at 99 Hz on 2 CPUs ~20 samples wait,
/// far below the ring's ~500.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// At most this many per-sample records are kept (about 2.8 hours of one
/// busy thread at 99 Hz); beyond it the long-poll analysis stops growing.
pub const MAX_SAMPLE_RECORDS: usize = 1_000_000;

/// One CPU sample, for analyses that need time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSampleRecord {
    pub tid: u32,
    pub ts_ns: u64,
    /// How long the thread had been on the CPU (0 when unknown).
    pub oncpu_run_ns: u64,
    /// How much of `oncpu_run_ns` it spent preempted.
    pub preempted_ns: u64,
    /// Index of its stack in the `cpu` list returned by `finish`.
    pub stack: usize,
}

/// Memory events waiting to be taken; beyond this (a collector that never
/// takes them) new ones are counted, not kept.
const MAX_PENDING_MEMORY_EVENTS: usize = 65_536;

type StackKey = (u32, [u8; 16], Vec<u64>, i32);

#[derive(Default)]
struct OffCpuAggregate {
    intervals: u64,
    total_ns: u64,
}

pub struct StackCopyCollector {
    reader: RingReader<UserStackSample>,
    tick: tokio::time::Interval,
    pid: u32,
    cpu_stacks: HashMap<StackKey, (usize, u64)>,
    offcpu_stacks: HashMap<(u32, [u8; 16], Vec<u64>, i32), OffCpuAggregate>,
    records: Vec<CpuSampleRecord>,
    memory: Vec<MemEventRecord>,
    /// Memory events not kept (`MAX_PENDING_MEMORY_EVENTS` waiting).
    pub memory_dropped: u64,
    /// Samples whose unwinding stopped before a root frame.
    pub truncated: u64,
    /// Samples unwound.
    pub unwound: u64,
}

/// What a finished collection holds.
pub struct StackCopyResult {
    /// CPU stacks (empty in frame-pointer mode); `RawCpuStack::count` is samples.
    pub cpu: Vec<RawCpuStack>,
    /// Off-CPU stacks; `count` is microseconds blocked, `events` intervals,
    /// `leaf_label` the syscall.
    pub offcpu: Vec<RawCpuStack>,
    pub records: Vec<CpuSampleRecord>,
}

impl StackCopyCollector {
    /// Takes the object's stack-sample ring; samples of the unwinder's
    /// process are unwound with it.
    pub(super) fn new(ebpf: &mut Ebpf, unwinder: &SharedUnwinder) -> Result<StackCopyCollector> {
        let map = ebpf.take_map(names::USER_STACK_SAMPLES).ok_or_else(|| missing(names::USER_STACK_SAMPLES))?;
        let ring = RingBuf::try_from(map).map_err(|e| Error::internal(format!("USER_STACK_SAMPLES: {e}")))?;
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(StackCopyCollector {
            reader: RingReader::new(ring, unwinder.clone(), names::USER_STACK_SAMPLES)?,
            tick,
            pid: unwinder.pid(),
            cpu_stacks: Default::default(),
            offcpu_stacks: Default::default(),
            records: Vec::new(),
            memory: Vec::new(),
            memory_dropped: 0,
            truncated: 0,
            unwound: 0,
        })
    }

    /// Waits for the next drain tick, then unwinds what the ring holds.
    pub async fn drain_next(&mut self, maps: &mut MapsSnapshot) {
        self.tick.tick().await;
        self.drain(maps);
    }

    /// Unwinds every sample in the ring now.
    pub fn drain(&mut self, maps: &mut MapsSnapshot) {
        let StackCopyCollector { reader, cpu_stacks, offcpu_stacks, records, memory, memory_dropped, truncated, unwound, .. } =
            self;
        reader.drain(maps, |sample, unwind| {
            let (frames, end) = unwind.frames();
            *unwound += 1;
            if end == UnwindEnd::Truncated {
                *truncated += 1;
            }
            if sample.kind >= sample_kind::PAGE_FAULT {
                if memory.len() >= MAX_PENDING_MEMORY_EVENTS {
                    *memory_dropped += 1;
                    return;
                }
                memory.push(MemEventRecord {
                    kind: sample.kind,
                    tid: sample.tid,
                    ts_ns: sample.ts_ns,
                    addr: sample.addr,
                    bytes: sample.weight,
                    sp: sample.sp,
                    frames,
                });
            } else if sample.kind == sample_kind::OFF_CPU {
                let agg = offcpu_stacks.entry((sample.tid, sample.comm, frames, sample.syscall_nr)).or_default();
                agg.intervals += 1;
                agg.total_ns += sample.weight;
            } else {
                let next = cpu_stacks.len();
                let entry = cpu_stacks.entry((sample.tid, sample.comm, frames, sample.kernel_stack_id)).or_insert((next, 0));
                entry.1 += 1;
                if records.len() < MAX_SAMPLE_RECORDS {
                    records.push(CpuSampleRecord {
                        tid: sample.tid,
                        ts_ns: sample.ts_ns,
                        oncpu_run_ns: sample.weight,
                        preempted_ns: sample.addr,
                        stack: entry.0,
                    });
                }
            }
        });
    }

    /// The memory events unwound since the last call.
    pub fn take_memory_events(&mut self) -> Vec<MemEventRecord> {
        std::mem::take(&mut self.memory)
    }

    /// The aggregated stacks, kernel frames resolved from `STACK_TRACES`.
    pub(super) fn finish(self, ebpf: &Ebpf) -> Result<StackCopyResult> {
        let traces = StackTraceMap::try_from(ebpf.map(names::STACK_TRACES).ok_or_else(|| missing(names::STACK_TRACES))?)
            .map_err(|e| Error::internal(format!("STACK_TRACES: {e}")))?;
        let pid = self.pid;
        let mut cpu: Vec<(usize, RawCpuStack)> = self
            .cpu_stacks
            .into_iter()
            .map(|((tid, comm, user, kernel_id), (index, count))| {
                (index, RawCpuStack {
                    tgid: pid,
                    tid,
                    thread_name: comm_to_string(&comm),
                    user,
                    kernel: stack_frames(&traces, kernel_id),
                    count,
                    events: count,
                    leaf_label: None,
                })
            })
            .collect();
        cpu.sort_by_key(|(index, _)| *index);
        let offcpu = self
            .offcpu_stacks
            .into_iter()
            .map(|((tid, comm, user, syscall), agg)| RawCpuStack {
                tgid: pid,
                tid,
                thread_name: comm_to_string(&comm),
                user,
                kernel: Vec::new(),
                count: (agg.total_ns / 1_000).max(1),
                events: agg.intervals,
                leaf_label: Some(format!("{} [syscall]", crate::syscalls::name(syscall))),
            })
            .collect();
        Ok(StackCopyResult { cpu: cpu.into_iter().map(|(_, s)| s).collect(), offcpu, records: self.records })
    }
}
