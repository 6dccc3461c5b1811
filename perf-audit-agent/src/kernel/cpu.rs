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
    /// Weight: samples for CPU stacks, microseconds blocked for off-CPU.
    pub count: u64,
    /// Events behind the weight (samples, or blocking intervals).
    pub events: u64,
    /// A synthetic leaf frame (the blocking syscall of off-CPU stacks).
    pub leaf_label: Option<String>,
}

impl RawCpuStack {
    /// A call site's user frames alone, weight 1: how the memory and
    /// database profiles hand their stacks to the CPU profile's symbolizer.
    pub fn call_site(tgid: u32, user: Vec<u64>) -> RawCpuStack {
        RawCpuStack { tgid, tid: 0, thread_name: String::new(), user, kernel: Vec::new(), count: 1, events: 1, leaf_label: None }
    }
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
            events: count,
            leaf_label: None,
        });
    }
    Ok(out)
}

pub(super) fn stack_frames(traces: &StackTraceMap<&aya::maps::MapData>, id: i32) -> Vec<u64> {
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
