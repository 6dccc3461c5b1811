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
use perf_audit_analysis::syscalls::FdKind;
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

/// An off-CPU stack: thread, name, frames, syscall, and the fd it used
/// with what the fd referred to when the sample arrived.
type OffCpuKey = (u32, [u8; 16], Vec<u64>, i32, Option<(i32, FdKind)>);

/// How long what an fd refers to is trusted before it is read again (the
/// target may close it and open something else under the same number).
const FD_KIND_TTL: std::time::Duration = std::time::Duration::from_secs(1);

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
    offcpu_stacks: HashMap<OffCpuKey, OffCpuAggregate>,
    /// What the target's fds referred to, read from `/proc/PID/fd` when an
    /// off-CPU sample names them (at most once per fd per `FD_KIND_TTL`).
    fd_kinds: HashMap<i32, (std::time::Instant, Option<FdKind>)>,
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
            fd_kinds: Default::default(),
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
        let StackCopyCollector { reader, cpu_stacks, offcpu_stacks, fd_kinds, records, memory, memory_dropped, truncated, unwound, pid, .. } =
            self;
        let pid = *pid;
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
                let fd = Self::fd_of(sample.syscall_nr, sample.addr).and_then(|fd| {
                    // Read in the kernel at the syscall's exit: exact.
                    if let Some((mode, major)) = sample_kind::off_cpu_fd_mode(sample.addr) {
                        return Some((fd, FdKind::from_mode(mode, major)));
                    }
                    // Else (no BTF offsets) only stdin/stdout/stderr from
                    // /proc: any other number may have been closed and
                    // reused (a file closed at once, its fd taken by a
                    // socket) by the time the agent looks.
                    if fd > 2 {
                        return None;
                    }
                    let now = std::time::Instant::now();
                    let entry = fd_kinds.entry(fd).or_insert((now, None));
                    if entry.1.is_none() || now.duration_since(entry.0) > FD_KIND_TTL {
                        *entry = (now, crate::target::fd_kind(pid, fd));
                    }
                    entry.1.map(|kind| (fd, kind))
                });
                let agg = offcpu_stacks.entry((sample.tid, sample.comm, frames, sample.syscall_nr, fd)).or_default();
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

    /// The fd an off-CPU sample's syscall used, when the program read its
/// first argument and the syscall takes one.
fn fd_of(syscall_nr: i32, arg: u64) -> Option<i32> {
    (arg & sample_kind::OFF_CPU_ARG_KNOWN != 0 && crate::syscalls::takes_fd(syscall_nr)).then_some(arg as u32 as i32)
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
            .map(|((tid, comm, user, syscall, fd), agg)| RawCpuStack {
                tgid: pid,
                tid,
                thread_name: comm_to_string(&comm),
                user,
                kernel: Vec::new(),
                count: (agg.total_ns / 1_000).max(1),
                events: agg.intervals,
                leaf_label: Some(crate::syscalls::leaf_label(&crate::syscalls::name(syscall), fd)),
            })
            .collect();
        Ok(StackCopyResult { cpu: cpu.into_iter().map(|(_, s)| s).collect(), offcpu, records: self.records })
    }
}
