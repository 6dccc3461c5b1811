//! The memory profile's kernel side, agent half: attaching and detaching
//! the allocator probes that `crate::allocator` planned (the default mode's
//! duty cycle), and reading the kernel's per-site counters back.
//!
//! The memory programs run in their own loaded instance of the eBPF object
//! (the CPU maps shrunk to nothing), owned by the memory collector's task:
//! it attaches and detaches on its own clock without borrowing the audit's
//! CPU session.

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap},
    programs::{UProbe, uprobe::{UProbeAttachPoint, UProbeLinkId, UProbeScope}},
};
use perf_audit_common::{
    filter_mode,
    memory::{MEM_TEXT_RANGES, MemCounter, SiteStats, TextRange, mem_control, mem_names},
    names,
};

use super::{EBPF_OBJECT, load_error, missing};
use crate::error::{Error, Result};
pub use perf_audit_analysis::evidence::MemCounters;

pub use crate::allocator::{AllocatorFamily, AllocatorPlan, CallShape, ProbePoint, discover_allocator};

/// The memory programs' own loaded instance of the eBPF object.
pub struct MemoryKernel {
    ebpf: Ebpf,
    pid: u32,
    plan: AllocatorPlan,
    links: Vec<(&'static str, UProbeLinkId)>,
    closing: Vec<std::thread::JoinHandle<()>>,
}

impl MemoryKernel {
    /// Loads the object (CPU maps shrunk, they are unused here), registers
    /// `pid` in this instance's filter and tells the fingerprint which
    /// address ranges hold code.
    pub fn load(pid: u32, plan: AllocatorPlan, text: &[(u64, u64)]) -> Result<MemoryKernel> {
        let mode = filter_mode::LISTED_PIDS;
        let stack_mode = perf_audit_common::user_stack_mode::FRAME_POINTER;
        let ebpf = EbpfLoader::new()
            .override_global(names::FILTER_MODE, &mode, true)
            .override_global(names::USER_STACK_MODE, &stack_mode, true)
            .override_global(names::URETPROBE_OFFSETS, &super::btf::uretprobe_offsets(), true)
            .map_max_entries(names::CPU_STACK_COUNTS, 1)
            .map_max_entries(names::STACK_TRACES, 1)
            // Carries the page-fault and mmap/brk samples (`kernel::mem_events`).
            .map_max_entries(names::USER_STACK_SAMPLES, super::mem_events::RING_BYTES)
            .load(EBPF_OBJECT)
            .map_err(|e| load_error("loading the eBPF object for the memory profile", &e))?;
        let mut kernel = MemoryKernel { ebpf, pid, plan, links: Vec::new(), closing: Vec::new() };
        let mut pids: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(
            kernel.ebpf.map_mut(names::TARGET_PIDS).ok_or_else(|| missing(names::TARGET_PIDS))?,
        )
        .map_err(|e| Error::internal(format!("TARGET_PIDS: {e}")))?;
        pids.insert(pid, 1, 0).map_err(|e| Error::internal(format!("cannot add pid {pid}: {e}")))?;
        let mut ranges: Array<_, TextRange> = Array::try_from(
            kernel.ebpf.map_mut(mem_names::TEXT).ok_or_else(|| missing(mem_names::TEXT))?,
        )
        .map_err(|e| Error::internal(format!("MEM_TEXT: {e}")))?;
        for (i, (start, end)) in text.iter().take(MEM_TEXT_RANGES as usize).enumerate() {
            ranges
                .set(i as u32, TextRange { start: *start, end: *end }, 0)
                .map_err(|e| Error::internal(format!("MEM_TEXT: {e}")))?;
        }
        for name in [
            mem_names::ALLOC_SIZE_ARG0,
            mem_names::ALLOC_SIZE_ARG1,
            mem_names::CALLOC,
            mem_names::REALLOC,
            mem_names::POSIX_MEMALIGN,
            mem_names::FREE,
            mem_names::ALLOC_SIZE_AT,
            mem_names::REALLOC_AT,
            mem_names::FREE_AT,
            mem_names::ALLOC_RETURN,
        ] {
            let program: &mut UProbe = kernel
                .ebpf
                .program_mut(name)
                .ok_or_else(|| missing(name))?
                .try_into()
                .map_err(|e| Error::internal(format!("{name} is not a uprobe: {e}")))?;
            program.load().map_err(|e| load_error(&format!("loading {name}"), &e))?;
        }
        Ok(kernel)
    }

    pub fn plan(&self) -> &AllocatorPlan {
        &self.plan
    }

    /// The loaded instance, for the memory event programs (`kernel::mem_events`).
    pub(crate) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub(crate) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Attaches every planned probe (entry, and uretprobe for allocating
    /// calls), for this process only.
    pub fn attach(&mut self) -> Result<()> {
        if self.attached() {
            return Ok(());
        }
        let pid = NonZeroU32::new(self.pid).ok_or_else(|| Error::internal("pid 0"))?;
        let object = self.plan.object.clone();
        let probes = self.plan.probes.clone();
        for probe in &probes {
            let mut targets = vec![(probe.shape.program(), probe.entry_offset + probe.probe_offset, probe.shape.cookie())];
            if probe.shape.returns_pointer() {
                targets.push((mem_names::ALLOC_RETURN, probe.entry_offset, None));
            }
            for (name, offset, cookie) in targets {
                let program: &mut UProbe = self
                    .ebpf
                    .program_mut(name)
                    .ok_or_else(|| missing(name))?
                    .try_into()
                    .map_err(|e| Error::internal(format!("{name}: {e}")))?;
                let link = program
                    .attach(UProbeAttachPoint { location: offset.into(), cookie }, &object, UProbeScope::OneProcess(pid))
                    .map_err(|e| load_error(&format!("attaching a uprobe to {} in {}", probe.symbol, object.display()), &e))?;
                self.links.push((name, link));
            }
        }
        Ok(())
    }

    /// Detaches every probe: the target pays nothing until the next attach.
    pub fn detach(&mut self) {
        self.detach_where(|_| true);
    }

    /// Closing a uprobe link waits for kernel grace periods under a global
    /// mutex (~0.1 s per link, measured on 6.18), and its breakpoint stays
    /// until then, so links close one after the other whatever we do. They
    /// are closed on a background thread (the duty cycle keeps its clock),
    /// hottest first: the frees', then each allocating function's entry and
    /// return probes in the plan's order (malloc first), so that the
    /// breakpoints the target hits most go within ~0.3 s.
    /// [`MemoryKernel::join_detaches`] waits for them.
    fn detach_where(&mut self, which: impl Fn(&str) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links).into_iter().partition(|(n, _)| which(n));
        self.links = kept;
        let mut owned = Vec::with_capacity(gone.len());
        let (frees, others): (Vec<_>, Vec<_>) =
            gone.into_iter().partition(|(n, _)| *n == mem_names::FREE || *n == mem_names::FREE_AT);
        for (name, link) in frees.into_iter().chain(others) {
            if let Some(program) = self.ebpf.program_mut(name) {
                let program: std::result::Result<&mut UProbe, _> = program.try_into();
                if let Ok(program) = program
                    && let Ok(link) = program.take_link(link) {
                        owned.push(link);
                    }
            }
        }
        if owned.is_empty() {
            return;
        }
        self.closing.retain(|h| !h.is_finished());
        // Named: `crate::priority` keeps it at its priority.
        let closer = std::thread::Builder::new().name("memory-links".into()).spawn(move || {
            for link in owned {
                drop(link);
            }
        });
        if let Ok(closer) = closer {
            self.closing.push(closer);
        }
    }

    /// Waits until every detached link is closed in the kernel.
    pub fn join_detaches(&mut self) {
        for handle in self.closing.drain(..) {
            let _ = handle.join();
        }
    }

    pub fn set_window(&mut self, window: u64) -> Result<()> {
        self.set_control(mem_control::WINDOW, window)
    }

    /// Starts or stops recording allocations (probes stay as they are).
    /// Recording started here has no time limit; see
    /// [`MemoryKernel::record_for`].
    pub fn set_recording(&mut self, on: bool) -> Result<()> {
        if on {
            self.set_control(mem_control::RECORDING_UNTIL, 0)?;
        }
        self.set_control(mem_control::RECORDING, on as u64)
    }

    /// Records allocations for `lease` from now, then the programs stop by
    /// themselves (the kernel compares its monotonic clock): renewed by
    /// calling again. An agent that is stopped or starved before it says
    /// stop leaves its probes costing their trap only, never recording.
    pub fn record_for(&mut self, lease: Duration) -> Result<()> {
        let until = monotonic_ns().saturating_add(lease.as_nanos() as u64);
        self.set_control(mem_control::RECORDING_UNTIL, until)?;
        self.set_control(mem_control::RECORDING, 1)
    }

    fn set_control(&mut self, slot: u32, value: u64) -> Result<()> {
        let mut control: Array<_, u64> = Array::try_from(
            self.ebpf.map_mut(mem_names::CONTROL).ok_or_else(|| missing(mem_names::CONTROL))?,
        )
        .map_err(|e| Error::internal(format!("MEM_CONTROL: {e}")))?;
        control.set(slot, value, 0).map_err(|e| Error::internal(format!("MEM_CONTROL: {e}")))
    }

    /// Takes the new-site stack ring (once).
    pub fn take_stack_ring(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self.ebpf.take_map(mem_names::STACKS).ok_or_else(|| missing(mem_names::STACKS))?;
        aya::maps::RingBuf::try_from(map).map_err(|e| Error::internal(format!("MEM_STACKS: {e}")))
    }

    /// Every site's counters, summed over CPUs.
    pub fn read_sites(&self) -> Result<HashMap<u64, SiteStats>> {
        let sites: PerCpuHashMap<_, u64, SiteStats> = PerCpuHashMap::try_from(
            self.ebpf.map(mem_names::SITES).ok_or_else(|| missing(mem_names::SITES))?,
        )
        .map_err(|e| Error::internal(format!("MEM_SITES: {e}")))?;
        let mut out = HashMap::new();
        for entry in sites.iter() {
            let (site, per_cpu) = entry.map_err(|e| Error::internal(format!("reading MEM_SITES: {e}")))?;
            let mut sum = SiteStats::default();
            for s in per_cpu.iter() {
                sum.alloc_count += s.alloc_count;
                sum.alloc_bytes += s.alloc_bytes;
                sum.free_count += s.free_count;
                sum.free_bytes += s.free_bytes;
                sum.late_free_count += s.late_free_count;
                sum.late_free_bytes += s.late_free_bytes;
            }
            out.insert(site, sum);
        }
        Ok(out)
    }

    pub fn counters(&self) -> Result<MemCounters> {
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf.map(mem_names::COUNTERS).ok_or_else(|| missing(mem_names::COUNTERS))?,
        )
        .map_err(|e| Error::internal(format!("MEM_COUNTERS: {e}")))?;
        let read = |c: MemCounter| -> Result<u64> {
            Ok(array.get(&c.slot(), 0).map_err(|e| Error::internal(format!("MEM_COUNTERS: {e}")))?.iter().sum())
        };
        Ok(MemCounters {
            alloc_calls: read(MemCounter::AllocCalls)?,
            free_calls: read(MemCounter::FreeCalls)?,
            free_untracked: read(MemCounter::FreeUntracked)?,
            live_map_full: read(MemCounter::LiveMapFull)?,
            site_map_full: read(MemCounter::SiteMapFull)?,
            stack_ring_full: read(MemCounter::StackRingFull)?,
            fingerprint_read_failed: read(MemCounter::FingerprintReadFailed)?,
            pending_lost: read(MemCounter::PendingLost)?,
            alloc_failed: read(MemCounter::AllocFailed)?,
        })
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Drop for MemoryKernel {
    fn drop(&mut self) {
        self.detach();
        self.join_detaches();
    }
}
