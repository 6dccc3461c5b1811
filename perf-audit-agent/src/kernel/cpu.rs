//! CPU sampling: attaching `cpu_sample` to a software cpu-clock perf event
//! on every online CPU, and reading the in-kernel aggregation back.

use aya::{
    Ebpf,
    maps::{PerCpuHashMap, StackTraceMap},
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use perf_audit_common::{CpuStackKey, names};

use super::{load_error, missing};
use crate::error::{Error, Result};

pub(super) struct CpuSampling {
    links: Vec<PerfEventLinkId>,
}

impl CpuSampling {
    pub(super) fn attach(ebpf: &mut Ebpf, frequency_hz: u64) -> Result<CpuSampling> {
        let program: &mut PerfEvent = ebpf
            .program_mut(names::CPU_SAMPLE_PROGRAM)
            .ok_or_else(|| missing(names::CPU_SAMPLE_PROGRAM))?
            .try_into()
            .map_err(|e| Error::internal(format!("cpu_sample is not a perf_event program: {e}")))?;
        if program.fd().is_err() {
            program.load().map_err(|e| load_error("loading the CPU sampling program", &e))?;
        }
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| Error::internal(format!("cannot read {what}: {e}")))?;
        let mut links = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let link = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .map_err(|e| load_error(&format!("attaching the CPU sampler to cpu {cpu}"), &e))?;
            links.push(link);
        }
        Ok(CpuSampling { links })
    }

    pub(super) fn detach(self, ebpf: &mut Ebpf) {
        if let Some(program) = ebpf.program_mut(names::CPU_SAMPLE_PROGRAM) {
            let program: Result<&mut PerfEvent, _> = program.try_into();
            if let Ok(program) = program {
                for link in self.links {
                    let _ = program.detach(link);
                }
            }
        }
    }
}

/// One aggregated stack as the kernel recorded it: addresses only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCpuStack {
    pub tgid: u32,
    pub tid: u32,
    pub thread_name: String,
    /// User frames, leaf first: the sampled instruction pointer, then return
    /// addresses. Empty when the user stack could not be captured.
    pub user: Vec<u64>,
    /// Kernel frames, leaf first. Empty for samples taken in user mode.
    pub kernel: Vec<u64>,
    pub count: u64,
}

pub(super) fn read_stacks(ebpf: &Ebpf) -> Result<Vec<RawCpuStack>> {
    let counts: PerCpuHashMap<_, CpuStackKey, u64> = PerCpuHashMap::try_from(
        ebpf.map(names::CPU_STACK_COUNTS).ok_or_else(|| missing(names::CPU_STACK_COUNTS))?,
    )
    .map_err(|e| Error::internal(format!("CPU_STACK_COUNTS: {e}")))?;
    let traces = StackTraceMap::try_from(
        ebpf.map(names::STACK_TRACES).ok_or_else(|| missing(names::STACK_TRACES))?,
    )
    .map_err(|e| Error::internal(format!("STACK_TRACES: {e}")))?;

    let mut out = Vec::new();
    for entry in counts.iter() {
        let (key, per_cpu) = entry.map_err(|e| Error::internal(format!("reading CPU samples: {e}")))?;
        let count: u64 = per_cpu.iter().sum();
        if count == 0 {
            continue;
        }
        out.push(RawCpuStack {
            tgid: key.tgid,
            tid: key.tid,
            thread_name: comm_to_string(&key.comm),
            user: stack_frames(&traces, key.user_stack_id),
            kernel: stack_frames(&traces, key.kernel_stack_id),
            count,
        });
    }
    Ok(out)
}

/// Stack-copy mode: reads `UserStackSample`s from the ring buffer as they
/// arrive, unwinds each at once (so the copies never pile up), and keeps
/// only the aggregated result: the same shape as frame-pointer mode.
pub struct StackCopyCollector {
    ring: tokio::io::unix::AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    pid: u32,
    unwinder: crate::unwind::ProcessUnwinder,
    tables: crate::unwind::TableCache,
    stacks: std::collections::HashMap<(u32, [u8; 16], Vec<u64>, i32), u64>,
    /// Samples whose unwinding stopped before a root frame.
    pub truncated: u64,
    /// Samples unwound.
    pub unwound: u64,
}

impl StackCopyCollector {
    pub(super) fn new(ebpf: &mut Ebpf, pid: u32) -> Result<StackCopyCollector> {
        let map = ebpf
            .take_map(names::USER_STACK_SAMPLES)
            .ok_or_else(|| missing(names::USER_STACK_SAMPLES))?;
        let ring = aya::maps::RingBuf::try_from(map)
            .map_err(|e| Error::internal(format!("USER_STACK_SAMPLES: {e}")))?;
        // SAFETY: the ring buffer owns its fd, which stays open and the same
        // for as long as the AsyncFd owns the ring.
        let ring = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
        }
        .map_err(|e| Error::internal(format!("cannot poll the stack ring buffer: {e}")))?;
        Ok(StackCopyCollector {
            ring,
            pid,
            unwinder: Default::default(),
            tables: Default::default(),
            stacks: Default::default(),
            truncated: 0,
            unwound: 0,
        })
    }

    /// Waits until samples are ready, then unwinds all that are.
    pub async fn drain_when_ready(&mut self, maps: &mut crate::target::MapsSnapshot) {
        if let Ok(mut guard) = self.ring.readable_mut().await {
            guard.clear_ready();
        }
        self.drain(maps);
    }

    /// Unwinds every sample in the ring now.
    pub fn drain(&mut self, maps: &mut crate::target::MapsSnapshot) {
        let ring = self.ring.get_mut();
        let mut refreshed = false;
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<perf_audit_common::UserStackSample>() {
                continue;
            }
            // SAFETY: the record was written by the eBPF program as a
            // `UserStackSample` (size checked); read unaligned from the ring.
            let sample: perf_audit_common::UserStackSample =
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            if sample.tgid != self.pid {
                continue;
            }
            if maps.find(sample.ip).is_none() && !refreshed {
                // New code mapped since the last snapshot (dlopen, JIT-less
                // late loads): refresh once per drain.
                let _ = maps.refresh(self.pid);
                refreshed = true;
            }
            self.unwinder.sync_modules(maps, &mut self.tables);
            let len = (sample.stack_len as usize).min(sample.stack.len());
            let (frames, end) = self.unwinder.unwind(sample.ip, sample.sp, sample.bp, &sample.stack[..len]);
            self.unwound += 1;
            if end == crate::unwind::UnwindEnd::Truncated {
                self.truncated += 1;
            }
            *self.stacks.entry((sample.tid, sample.comm, frames, sample.kernel_stack_id)).or_default() += 1;
        }
    }

    /// The aggregated stacks, kernel frames resolved from `STACK_TRACES`.
    pub(super) fn into_raw(self, ebpf: &Ebpf) -> Result<Vec<RawCpuStack>> {
        let traces = StackTraceMap::try_from(
            ebpf.map(names::STACK_TRACES).ok_or_else(|| missing(names::STACK_TRACES))?,
        )
        .map_err(|e| Error::internal(format!("STACK_TRACES: {e}")))?;
        let pid = self.pid;
        Ok(self
            .stacks
            .into_iter()
            .map(|((tid, comm, user, kernel_id), count)| RawCpuStack {
                tgid: pid,
                tid,
                thread_name: comm_to_string(&comm),
                user,
                kernel: stack_frames(&traces, kernel_id),
                count,
            })
            .collect())
    }
}

fn stack_frames(traces: &StackTraceMap<&aya::maps::MapData>, id: i32) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    traces
        .get(&(id as u32), 0)
        .map(|trace| trace.frames().iter().map(|f| f.ip).filter(|ip| *ip != 0).collect())
        .unwrap_or_default()
}

pub(super) fn comm_to_string(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}
