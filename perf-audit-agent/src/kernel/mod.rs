//! The agent's side of the kernel boundary: checking what the kernel offers,
//! loading the embedded eBPF object, attaching programs, and reading maps
//! back into plain Rust values (no symbols, no analysis here).

pub mod btf;
pub mod cpu;
pub mod ring;
pub mod stack_copy;
pub mod db;
pub mod memory;
pub mod mem_events;

use std::{fs, path::Path};

use aya::{Ebpf, EbpfLoader, maps::PerCpuArray};
use perf_audit_common::{COUNTER_SLOTS, Counter, filter_mode, names, user_stack_mode};

use crate::{
    error::{Error, ErrorKind, Result},
    unwind::SharedUnwinder,
};
pub use perf_audit_analysis::{
    evidence::{Counters, MappingTotals},
    report::schema::UnwindMode,
};

/// The compiled `perf-audit-ebpf` crate, built by this crate's build script.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/perf-audit-ebpf.o"));

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What the running kernel and our privileges allow, found before loading.
#[derive(Debug, Clone)]
pub struct KernelSupport {
    pub btf: bool,
    pub release: String,
}

/// Checks privileges and kernel features; one clear error when lacking.
pub fn preflight() -> Result<KernelSupport> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let caps = effective_capabilities().unwrap_or(0);
        let has = |cap: u32| caps & (1u64 << cap) != 0;
        if !(has(CAP_BPF) && has(CAP_PERFMON)) {
            return Err(Error::new(
                ErrorKind::Permission,
                "loading eBPF programs needs root or CAP_BPF and CAP_PERFMON",
            ));
        }
    }
    if !Path::new("/proc/sys/kernel/perf_event_paranoid").exists() {
        return Err(Error::new(
            ErrorKind::KernelUnsupported,
            "this kernel has no perf events (CONFIG_PERF_EVENTS is off)",
        ));
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    raise_memlock_limit();
    Ok(KernelSupport { btf, release })
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Which processes the programs record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Only pids added with [`KernelSession::add_target`].
    ListedPids,
    /// Every process (system-wide daemon).
    All,
}

/// The loaded object and whatever is attached. Dropping it detaches every
/// program and frees every map: nothing is left in the kernel.
pub struct KernelSession {
    ebpf: Ebpf,
    cpu: Option<cpu::CpuSampling>,
    offcpu: Option<OffCpuAttach>,
    db: Option<db::DbTracing>,
}

/// How the off-CPU collector is attached (stated in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffCpuAttach {
    /// `sched_switch` and `sys_exit` as raw tracepoints (BTF, 5.18+).
    RawTracepoints,
    /// `sched:sched_switch` and `raw_syscalls:sys_exit` as classic
    /// tracepoints (the kernel builds an event record for every call).
    Tracepoints,
}

impl OffCpuAttach {
    pub fn describe(self) -> &'static str {
        match self {
            OffCpuAttach::RawTracepoints => "raw tracepoints sched_switch and sys_exit",
            OffCpuAttach::Tracepoints => "classic tracepoints sched:sched_switch and raw_syscalls:sys_exit",
        }
    }
}

impl KernelSession {
    /// `offcpu_min`: blocking intervals at least this long are captured with
    /// a stack (off-CPU profile).
    pub fn load(filter: Filter, unwind: UnwindMode, offcpu_min: std::time::Duration) -> Result<KernelSession> {
        Self::load_with_ring(filter, unwind, offcpu_min, None, 0)
    }

    /// [`KernelSession::load`] with the stack-copy ring sized to
    /// `stack_ring_bytes` (a power of two of pages) instead of the audit's
    /// 32 MiB: the daemon drains it often and keeps its own memory small;
    /// and at most `offcpu_max_per_sec` off-CPU stack copies per CPU per
    /// second (0: no limit), the rest counted.
    pub fn load_with_ring(
        filter: Filter,
        unwind: UnwindMode,
        offcpu_min: std::time::Duration,
        stack_ring_bytes: Option<u32>,
        offcpu_max_per_sec: u64,
    ) -> Result<KernelSession> {
        let mode = match filter {
            Filter::ListedPids => filter_mode::LISTED_PIDS,
            Filter::All => filter_mode::ALL,
        };
        let stack_mode = match unwind {
            UnwindMode::FramePointer => user_stack_mode::FRAME_POINTER,
            UnwindMode::Dwarf => user_stack_mode::STACK_COPY,
        };
        let mut loader = EbpfLoader::new();
        if let Some(bytes) = stack_ring_bytes {
            loader.map_max_entries(names::USER_STACK_SAMPLES, bytes);
        }
        let ebpf = loader
            .override_global(names::FILTER_MODE, &mode, true)
            .override_global(names::USER_STACK_MODE, &stack_mode, true)
            .override_global(names::OFFCPU_MIN_NS, &(offcpu_min.as_nanos() as u64), true)
            .override_global(names::OFFCPU_MAX_PER_SEC, &offcpu_max_per_sec, true)
            .override_global(names::URETPROBE_OFFSETS, &btf::uretprobe_offsets(), true)
            .override_global(names::TASK_PID_OFFSET, &(btf::task_pid_offset_for_raw_sched_switch().unwrap_or(0) as u64), true)
            .override_global(names::FD_OFFSETS, &btf::fd_offsets(), true)
            .load(EBPF_OBJECT)
            .map_err(|e| load_error("loading the eBPF object", &e))?;
        Ok(KernelSession { ebpf, cpu: None, offcpu: None, db: None })
    }

    /// Adds a process (all its threads, present and future) to the filter.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        let mut pids: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(
            self.ebpf.map_mut(names::TARGET_PIDS).ok_or_else(|| missing(names::TARGET_PIDS))?,
        )
        .map_err(|e| Error::internal(format!("TARGET_PIDS: {e}")))?;
        pids.insert(pid, 1, 0)
            .map_err(|e| Error::internal(format!("cannot add pid {pid} to the filter: {e}")))
    }

    pub fn start_cpu_sampling(&mut self, frequency_hz: u64) -> Result<()> {
        self.cpu = Some(cpu::CpuSampling::attach(&mut self.ebpf, frequency_hz)?);
        Ok(())
    }

    /// Stops sampling (detaches the perf events); maps stay readable.
    pub fn stop_cpu_sampling(&mut self) {
        if let Some(cpu) = self.cpu.take() {
            cpu.detach(&mut self.ebpf);
        }
    }

    /// Attaches the database write tracepoints and hands over the socket
    /// set and the event reader for the unwinder's process (see `kernel::db`).
    pub fn start_db_tracing(&mut self, unwinder: &SharedUnwinder, text: &[(u64, u64)]) -> Result<(db::DbFdSet, db::DbWriteReader)> {
        let parts = db::take_parts(&mut self.ebpf, unwinder, text)?;
        self.db = Some(db::DbTracing::attach(&mut self.ebpf)?);
        Ok(parts)
    }

    /// Detaches the database write tracepoints.
    /// Whether the database wire tracer is attached.
    pub fn db_tracing(&self) -> bool {
        self.db.is_some()
    }

    pub fn stop_db_tracing(&mut self) {
        if let Some(db) = self.db.take() {
            db.detach(&mut self.ebpf);
        }
    }

    pub fn read_cpu_stacks(&self) -> Result<Vec<cpu::RawCpuStack>> {
        cpu::read_stacks(&self.ebpf)
    }

    /// Takes the stack-copy ring buffer to unwind its samples (dwarf CPU
    /// samples, off-CPU samples) of the unwinder's process as they arrive.
    pub fn stack_copy_collector(&mut self, unwinder: &SharedUnwinder) -> Result<stack_copy::StackCopyCollector> {
        stack_copy::StackCopyCollector::new(&mut self.ebpf, unwinder)
    }

    /// Takes the stack-copy ring to read every process's samples (the
    /// daemon, which unwinds each with that process's own unwinder).
    pub fn system_wide_stack_ring(&mut self) -> Result<ring::RingReader<perf_audit_common::UserStackSample>> {
        let map = self.ebpf.take_map(names::USER_STACK_SAMPLES).ok_or_else(|| missing(names::USER_STACK_SAMPLES))?;
        let ring = aya::maps::RingBuf::try_from(map).map_err(|e| Error::internal(format!("USER_STACK_SAMPLES: {e}")))?;
        ring::RingReader::system_wide(ring, names::USER_STACK_SAMPLES)
    }

    /// Resolves the kernel stacks of a finished stack-copy collection.
    pub fn finish_stack_copy(&self, collector: stack_copy::StackCopyCollector) -> Result<stack_copy::StackCopyResult> {
        collector.finish(&self.ebpf)
    }

    /// Attaches the scheduler and syscall-exit tracepoints (off-CPU time):
    /// as raw tracepoints when the kernel's BTF gives what they read (no
    /// event record is built per context switch and per syscall: on a
    /// context-switch-heavy target most of the collector's cost), else as
    /// classic ones. Returns which.
    pub fn start_offcpu(&mut self) -> Result<OffCpuAttach> {
        ensure_tracefs()?;
        // PERF_AUDIT_CLASSIC_TRACEPOINTS=1: the fallback, on purpose (the
        // benchmark measures what the raw ones save; a test keeps it working).
        if btf::task_pid_offset_for_raw_sched_switch().is_some() && std::env::var_os("PERF_AUDIT_CLASSIC_TRACEPOINTS").is_none() {
            match self.attach_offcpu_raw() {
                Ok(()) => {
                    self.offcpu = Some(OffCpuAttach::RawTracepoints);
                    return Ok(OffCpuAttach::RawTracepoints);
                }
                Err(e) => {
                    self.detach_offcpu_programs();
                    eprintln!(
                        "perf-audit: off-CPU: the raw tracepoints could not be attached ({e}); using the classic ones, which cost more per context switch"
                    );
                }
            }
        }
        for (program, category, name) in [
            (names::SCHED_SWITCH_PROGRAM, "sched", "sched_switch"),
            (names::SYSCALL_EXIT_PROGRAM, "raw_syscalls", "sys_exit"),
        ] {
            let tp: &mut aya::programs::TracePoint = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| missing(program))?
                .try_into()
                .map_err(|e| Error::internal(format!("{program} is not a tracepoint program: {e}")))?;
            tp.load().map_err(|e| load_error(&format!("loading the {category}:{name} program"), &e))?;
            tp.attach(category, name).map_err(|e| load_error(&format!("attaching to tracepoint {category}:{name}"), &e))?;
        }
        self.offcpu = Some(OffCpuAttach::Tracepoints);
        Ok(OffCpuAttach::Tracepoints)
    }

    fn attach_offcpu_raw(&mut self) -> Result<()> {
        for (program, name) in [(names::SCHED_SWITCH_RAW_PROGRAM, "sched_switch"), (names::SYSCALL_EXIT_RAW_PROGRAM, "sys_exit")] {
            let tp: &mut aya::programs::RawTracePoint = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| missing(program))?
                .try_into()
                .map_err(|e| Error::internal(format!("{program} is not a raw tracepoint program: {e}")))?;
            tp.load().map_err(|e| load_error(&format!("loading the raw {name} program"), &e))?;
            tp.attach(name).map_err(|e| load_error(&format!("attaching to raw tracepoint {name}"), &e))?;
        }
        Ok(())
    }

    /// Unloads whichever off-CPU programs are loaded (which detaches them).
    fn detach_offcpu_programs(&mut self) {
        use aya::programs::Program;
        for program in [
            names::SCHED_SWITCH_PROGRAM,
            names::SYSCALL_EXIT_PROGRAM,
            names::SCHED_SWITCH_RAW_PROGRAM,
            names::SYSCALL_EXIT_RAW_PROGRAM,
        ] {
            let _ = match self.ebpf.program_mut(program) {
                Some(Program::TracePoint(p)) => p.unload(),
                Some(Program::RawTracePoint(p)) => p.unload(),
                _ => Ok(()),
            };
        }
    }

    /// Detaches the off-CPU tracepoints; maps stay readable.
    pub fn stop_offcpu(&mut self) {
        if self.offcpu.take().is_some() {
            self.detach_offcpu_programs();
        }
    }

    /// Per-thread scheduler totals of process `pid` (off-CPU profile).
    pub fn sched_totals(&self, pid: u32) -> Result<Vec<(u32, perf_audit_common::ThreadSchedTotals)>> {
        let map: aya::maps::HashMap<_, u32, perf_audit_common::ThreadSchedState> = aya::maps::HashMap::try_from(
            self.ebpf.map(names::SCHED_STATE).ok_or_else(|| missing(names::SCHED_STATE))?,
        )
        .map_err(|e| Error::internal(format!("SCHED_STATE: {e}")))?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let (tid, state) = entry.map_err(|e| Error::internal(format!("reading SCHED_STATE: {e}")))?;
            if state.totals.tgid == pid {
                out.push((tid, state.totals));
            }
        }
        out.sort_by_key(|(tid, _)| *tid);
        Ok(out)
    }

    /// The loaded object, for collectors that manage the maps themselves
    /// (the daemon drains and prunes the aggregation maps every interval).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Removes a process from the filter (it exited, or no longer matches),
    /// with its threads' scheduler state.
    pub fn remove_target(&mut self, pid: u32) -> Result<()> {
        let mut pids: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(
            self.ebpf.map_mut(names::TARGET_PIDS).ok_or_else(|| missing(names::TARGET_PIDS))?,
        )
        .map_err(|e| Error::internal(format!("TARGET_PIDS: {e}")))?;
        // The only realistic failure is ENOENT: the pid was not listed.
        let _ = pids.remove(&pid);
        // The off-CPU programs check the filter only for a thread without
        // scheduler state: forget the process's threads, or they would go
        // on being followed.
        if let Some(map) = self.ebpf.map_mut(names::SCHED_STATE)
            && let Ok(mut state) = aya::maps::HashMap::<_, u32, perf_audit_common::ThreadSchedState>::try_from(map)
        {
            let threads: Vec<u32> =
                state.iter().filter_map(|e| e.ok()).filter(|(_, s)| s.tgid == pid).map(|(tid, _)| tid).collect();
            for tid in threads {
                let _ = state.remove(&tid);
            }
        }
        Ok(())
    }

    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.ebpf)
    }

    /// One counter, summed over CPUs (for counters the audit's report does
    /// not carry).
    pub fn counter(&self, counter: Counter) -> Result<u64> {
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::COUNTERS).ok_or_else(|| missing(names::COUNTERS))?)
                .map_err(|e| Error::internal(format!("COUNTERS: {e}")))?;
        let values =
            array.get(&counter.slot(), 0).map_err(|e| Error::internal(format!("reading counter {counter:?}: {e}")))?;
        Ok(values.iter().sum())
    }

    /// Removes the scheduler state of threads that no longer exist (the
    /// daemon's off-CPU maps would otherwise fill with the node's dead
    /// threads). Returns the entries removed.
    pub fn prune_sched_threads(&mut self, alive: impl Fn(u32) -> bool) -> Result<usize> {
        fn prune<V: aya::Pod>(ebpf: &mut Ebpf, name: &str, alive: &impl Fn(u32) -> bool) -> Result<usize> {
            let mut map: aya::maps::HashMap<_, u32, V> =
                aya::maps::HashMap::try_from(ebpf.map_mut(name).ok_or_else(|| missing(name))?)
                    .map_err(|e| Error::internal(format!("{name}: {e}")))?;
            let dead: Vec<u32> = map.keys().filter_map(|k| k.ok()).filter(|tid| !alive(*tid)).collect();
            Ok(dead.into_iter().filter(|tid| map.remove(tid).is_ok()).count())
        }
        prune::<perf_audit_common::ThreadSchedState>(&mut self.ebpf, names::SCHED_STATE, &alive)
    }
}

/// Sums the per-CPU `COUNTERS` of a loaded instance.
pub(crate) fn read_counters(ebpf: &Ebpf) -> Result<Counters> {
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(names::COUNTERS).ok_or_else(|| missing(names::COUNTERS))?)
            .map_err(|e| Error::internal(format!("COUNTERS: {e}")))?;
    let mut sums = [0u64; COUNTER_SLOTS as usize];
    for counter in Counter::ALL {
        let values = array
            .get(&counter.slot(), 0)
            .map_err(|e| Error::internal(format!("reading counter {counter:?}: {e}")))?;
        sums[counter.slot() as usize] = values.iter().sum();
    }
    let at = |c: Counter| sums[c.slot() as usize];
    Ok(Counters {
        cpu_samples: at(Counter::CpuSamples),
        cpu_samples_dropped_map_full: at(Counter::CpuSamplesDroppedMapFull),
        cpu_user_stack_failed: at(Counter::CpuUserStackFailed),
        cpu_kernel_stack_failed: at(Counter::CpuKernelStackFailed),
        cpu_samples_dropped_ring_full: at(Counter::CpuSamplesDroppedRingFull),
        cpu_user_stack_copy_failed: at(Counter::CpuUserStackCopyFailed),
        offcpu_samples: at(Counter::OffCpuSamples),
        offcpu_dropped_ring_full: at(Counter::OffCpuDroppedRingFull),
        sched_state_map_full: at(Counter::SchedStateMapFull),
        db_writes: at(Counter::DbWrites),
        db_writes_dropped_ring_full: at(Counter::DbWritesDroppedRingFull),
        db_payload_read_failed: at(Counter::DbPayloadReadFailed),
        db_user_stack_copy_failed: at(Counter::DbUserStackCopyFailed),
        page_fault_samples: at(Counter::PageFaultSamples),
        page_fault_dropped_ring_full: at(Counter::PageFaultDroppedRingFull),
        mappings: MappingTotals {
            mmap_calls: at(Counter::MmapCalls),
            mmap_bytes: at(Counter::MmapBytes),
            munmap_calls: at(Counter::MunmapCalls),
            munmap_bytes: at(Counter::MunmapBytes),
            brk_grow_calls: at(Counter::BrkGrowCalls),
            brk_grow_bytes: at(Counter::BrkGrowBytes),
            brk_shrink_bytes: at(Counter::BrkShrinkBytes),
        },
        mapping_dropped: at(Counter::MappingDropped),
    })
}

/// Tracepoints are found through tracefs; mount it when the machine has not.
pub(crate) fn ensure_tracefs() -> Result<()> {
    let events = Path::new("/sys/kernel/tracing/events");
    if events.exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status();
    if events.exists() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::KernelUnsupported,
        format!(
            "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs nodev /sys/kernel/tracing`",
            status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
        ),
    ))
}

pub(crate) fn missing(name: &str) -> Error {
    Error::internal(format!("the eBPF object has no map or program `{name}` (stale build?)"))
}

/// Maps an aya error to the user-facing kind: permission, kernel support,
/// or a verifier rejection (a bug on our side).
pub(crate) fn load_error(what: &str, err: &dyn std::error::Error) -> Error {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_lowercase();
    let kind = if lower.contains("operation not permitted") || lower.contains("permission denied") {
        ErrorKind::Permission
    } else if lower.contains("function not implemented")
        || lower.contains("not supported")
        || lower.contains("invalid argument") && lower.contains("perf_event_open")
    {
        ErrorKind::KernelUnsupported
    } else {
        ErrorKind::EbpfLoad
    };
    Error::new(kind, format!("{what} failed: {chain}"))
}
