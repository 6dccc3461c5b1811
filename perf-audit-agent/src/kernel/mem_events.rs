//! Attaches the memory profile's continuous programs
//! (`perf-audit-ebpf/src/mem_events.rs`) in the memory collector's own
//! loaded instance: a sampled `page-faults` software perf event on every
//! CPU and the `mmap`/`munmap`/`brk` syscall tracepoints. They stay attached
//! for the whole audit in both modes: unlike the allocator uprobes they cost
//! the target nothing per allocation (the program runs on one fault in
//! `PAGE_FAULT_SAMPLE_PERIOD` and on syscalls that are rare once a heap is
//! warm).
//!
//! Why per CPU rather than per target thread: a per-CPU event with the
//! target filter in the program (as the CPU profiler does) covers threads
//! created at any time without following `clone`s, and the program still
//! runs only once per N faults of the CPU; the period counts every
//! process's faults, so each target fault is sampled with probability ~1/N
//! whatever else runs, and the estimate (samples x N) stays unbiased.

use aya::{
    maps::HashMap as BpfHashMap,
    programs::{
        PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use perf_audit_common::{PAGE_FAULT_SAMPLE_PERIOD, names};

use super::{
    Counters, ensure_tracefs, load_error,
    memory::MemoryKernel,
    missing,
    stack_copy::StackCopyCollector,
};
use crate::{
    error::{Error, ErrorKind, Result},
    unwind::SharedUnwinder,
};

/// Size of the memory instance's `USER_STACK_SAMPLES` ring (a power of
/// two): 8 MiB holds ~127 samples of 64 KiB, drained every 100 ms; a fault
/// storm beyond that drops samples (counted) rather than slowing the target.
pub const RING_BYTES: u32 = 8 * 1024 * 1024;

const TRACEPOINTS: [(&str, &str); 4] = [
    (names::MMAP_ENTER_PROGRAM, "sys_enter_mmap"),
    (names::MMAP_EXIT_PROGRAM, "sys_exit_mmap"),
    (names::MUNMAP_ENTER_PROGRAM, "sys_enter_munmap"),
    (names::BRK_EXIT_PROGRAM, "sys_exit_brk"),
];

/// Attaches the page-fault sampler and the mapping tracepoints for the
/// memory kernel's target, seeds its last-known break (`heap_end`, the end
/// of its `[heap]` mapping, when it has one), and returns the reader of
/// their samples, which unwinds them with the audit's `unwinder`.
pub fn attach(kernel: &mut MemoryKernel, unwinder: &SharedUnwinder, heap_end: Option<u64>) -> Result<StackCopyCollector> {
    let pid = unwinder.pid();
    let ebpf = kernel.ebpf_mut();
    if let Some(end) = heap_end {
        let mut last: BpfHashMap<_, u32, u64> =
            BpfHashMap::try_from(ebpf.map_mut(names::LAST_BRK).ok_or_else(|| missing(names::LAST_BRK))?)
                .map_err(|e| Error::internal(format!("LAST_BRK: {e}")))?;
        last.insert(pid, end, 0).map_err(|e| Error::internal(format!("LAST_BRK: {e}")))?;
    }

    let program: &mut PerfEvent = ebpf
        .program_mut(names::PAGE_FAULT_PROGRAM)
        .ok_or_else(|| missing(names::PAGE_FAULT_PROGRAM))?
        .try_into()
        .map_err(|e| Error::internal(format!("{} is not a perf_event program: {e}", names::PAGE_FAULT_PROGRAM)))?;
    program.load().map_err(|e| load_error("loading the page-fault sampling program", &e))?;
    let cpus = aya::util::online_cpus().map_err(|(what, e)| Error::internal(format!("cannot read {what}: {e}")))?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::PageFaults),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(PAGE_FAULT_SAMPLE_PERIOD),
                false,
            )
            .map_err(|e| {
                let err = load_error(&format!("opening the page-faults software perf event on cpu {cpu}"), &e);
                if err.kind == ErrorKind::KernelUnsupported {
                    Error::new(ErrorKind::KernelUnsupported, format!("{}: this kernel has no page-faults software event (CONFIG_PERF_EVENTS)", err.message))
                } else {
                    err
                }
            })?;
    }

    ensure_tracefs()?;
    for (program, event) in TRACEPOINTS {
        let tp: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| missing(program))?
            .try_into()
            .map_err(|e| Error::internal(format!("{program} is not a tracepoint program: {e}")))?;
        tp.load().map_err(|e| load_error(&format!("loading the syscalls:{event} program"), &e))?;
        tp.attach("syscalls", event).map_err(|e| {
            let err = load_error(&format!("attaching to tracepoint syscalls:{event}"), &e);
            if std::path::Path::new("/sys/kernel/tracing/events/syscalls").exists() {
                err
            } else {
                Error::new(ErrorKind::KernelUnsupported, format!("{}: this kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS)", err.message))
            }
        })?;
    }
    StackCopyCollector::new(ebpf, unwinder)
}

/// Detaches the page-fault sampler and the tracepoints (counters and the
/// ring stay readable).
pub fn detach(kernel: &mut MemoryKernel) {
    let ebpf = kernel.ebpf_mut();
    if let Some(p) = ebpf.program_mut(names::PAGE_FAULT_PROGRAM) {
        let p: std::result::Result<&mut PerfEvent, _> = p.try_into();
        if let Ok(p) = p {
            let _ = p.unload();
        }
    }
    for (program, _) in TRACEPOINTS {
        if let Some(p) = ebpf.program_mut(program) {
            let tp: std::result::Result<&mut TracePoint, _> = p.try_into();
            if let Ok(tp) = tp {
                let _ = tp.unload();
            }
        }
    }
}

/// The memory instance's counters (page-fault samples, mmap/munmap/brk
/// calls and bytes, drops).
pub fn counters(kernel: &MemoryKernel) -> Result<Counters> {
    super::read_counters(kernel.ebpf())
}
