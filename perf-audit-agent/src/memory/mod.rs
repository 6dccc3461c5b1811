//! The memory profile: which code allocates how much, what is never freed,
//! what keeps growing, at a cost production can bear.
//!
//! A uprobe hit costs the target 0.5-9 µs, so probing every allocator call
//! for a whole audit cannot be the default. Two modes:
//!
//! - **default**: the probes first record for [`PROBE_WINDOW`] (250 ms);
//!   from the rate of calls seen, [`Recording::decide`] keeps them attached
//!   and recording for the whole audit when that costs at most
//!   [`perf_audit_analysis::memory::CONTINUOUS_BUDGET_PCT`] of a core
//!   (continuous: exact counts, and no probe attached or closed while the
//!   target is measured, so no periodic latency spike), else records in
//!   short windows ([`DEFAULT_WINDOW`] every [`DEFAULT_PERIOD`]), *detached*
//!   between them (an attached uprobe costs its trap even when the program
//!   returns at once). Window counts are scaled back up by the measured
//!   share of time attached; a free seen in a later window than its
//!   allocation is observed with that same probability and scaled
//!   accordingly. Each window ends with a short grace period where only
//!   `free` stays probed, so that short-lived blocks allocated just before
//!   the window closed are seen freed rather than left as outstanding.
//!   Recording is a lease the kernel enforces (`RECORDING_UNTIL`): a
//!   stopped or starved agent never leaves recording on.
//! - **precise** (`--memory precise`): the probes stay attached for the
//!   whole audit; every call is counted.
//!
//! In both, each probe sits where the kernel emulates the instruction rather
//! than single-stepping it (see `kernel::memory`), calls are keyed in the
//! kernel by a stack fingerprint, and the full stack of each new site is
//! copied once and unwound here with the CPU profile's unwinder.
//!
//! Beside the probes, growth is attributed continuously in both modes by
//! sampled page faults, mmap/munmap/brk per call site and the RSS series
//! ([`faults`], `kernel::mem_events`): they cost nothing per allocation.
//!
//! This module is the orchestration (the collector task); [`analysis`] is
//! the pure model that turns what was collected into the report's section.

pub use perf_audit_analysis::memory::{
    DEFAULT_PERIOD, DEFAULT_WINDOW, EMULATED_CALL_US, PROBE_WINDOW, Recording, RecordingKind, SINGLE_STEPPED_CALL_US, KernelTime, MemoryEvidence, MemoryMode, Snapshot, analysis, faults, section, types,
};

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use perf_audit_common::memory::{MemStackSample, SiteStats};

use crate::{
    error::{Error, Result},
    kernel::{
        Counters,
        mem_events,
        memory::{AllocatorPlan, MemoryKernel, discover_allocator, monotonic_ns},
        ring::RingReader,
        stack_copy::StackCopyCollector,
    },
    target::{self, MapsSnapshot},
    unwind::{SharedUnwinder, UnwindEnd},
};

/// After a window, `free` alone stays probed this long.
pub const FREE_GRACE: Duration = Duration::from_millis(10);
/// How often precise mode snapshots the per-site counters.
pub const PRECISE_SNAPSHOT: Duration = Duration::from_millis(500);
/// After every probe is gone, the target's kernel time is watched this long
/// for its rate without probes: the baseline of the measured probe cost.
pub const UNPROBED_BASELINE: Duration = Duration::from_millis(500);

/// Everything the collector gathered, before symbolization.
pub struct MemoryRaw {
    /// What the report section takes as it is: mode, allocator, counters,
    /// time shares, RSS, probe cost.
    pub summary: MemoryEvidence,
    pub allocator: AllocatorPlan,
    /// Final counters per site.
    pub sites: HashMap<u64, SiteStats>,
    pub series: Vec<Snapshot>,
    /// User frames of each site (leaf first), unwound from its stack copy.
    pub stacks: HashMap<u64, Vec<u64>>,
    pub maps: MapsSnapshot,
    /// Sampled page faults and large mmap/munmap/brk calls, by stack.
    pub events: faults::MemEvents,
    /// The memory instance's kernel counters (page-fault samples, every
    /// mmap/munmap/brk call and its bytes, drops).
    pub event_counters: Counters,
    /// RSS, anonymous and heap size every `faults::RSS_INTERVAL`.
    pub rss_series: Vec<faults::RssPoint>,
    /// The target's faults over the audit (/proc/PID/stat), exact.
    pub faults_counted: Option<u64>,
    /// When allocator probes were attached (CLOCK_MONOTONIC ns, attach to
    /// detach): the windows, or one period when recording continuously.
    pub probed_periods_ns: Vec<(u64, u64)>,
}

fn kernel_seconds(pid: u32) -> Option<f64> {
    target::process_stat(pid).map(|t| t.system_s)
}

/// The memory collector: started before collection, finished after.
pub struct MemoryCollector {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<MemoryRaw>>,
    /// Set by the overhead budget: no more allocator probing (the task
    /// detaches within one tick; page faults, mappings and RSS go on).
    probes_off: Arc<AtomicBool>,
    mode: MemoryMode,
    recording: Option<RecordingKind>,
    periods: ProbedPeriods,
}

impl MemoryCollector {
    /// Finds the allocator of the unwinder's process, loads the memory
    /// programs, and starts the collector task. Stacks are unwound with the
    /// audit's shared `unwinder`.
    pub async fn start(unwinder: &SharedUnwinder, exe: &Path, mode: MemoryMode) -> Result<MemoryCollector> {
        let pid = unwinder.pid();
        let mut maps = MapsSnapshot::default();
        // A launched command may not have mapped its libraries yet.
        let deadline = Instant::now() + Duration::from_secs(3);
        let plan = loop {
            let _ = maps.refresh(pid);
            let mapped: Vec<PathBuf> = maps.iter().map(|m| m.path.clone()).collect();
            match discover_allocator(exe, &mapped) {
                Ok(plan) => break plan,
                Err(e) if Instant::now() >= deadline || !target::is_alive(pid) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let emulated = plan.probes.iter().filter(|p| p.emulated).count();
        eprintln!(
            "perf-audit: memory profile ({} mode): probing {} in {} ({} of {} probes on emulated instructions)",
            mode.as_str(),
            plan.family.name(),
            plan.object.display(),
            emulated,
            plan.probes.len()
        );
        let text = code_ranges(&maps, exe);
        let mut kernel = MemoryKernel::load(pid, plan, &text)?;
        let regions = read_regions(pid).unwrap_or_default();
        let events = mem_events::attach(&mut kernel, unwinder, regions.heap_end())?;
        kernel.set_window(1)?;
        let ring = RingReader::new(kernel.take_stack_ring()?, unwinder.clone(), perf_audit_common::memory::mem_names::STACKS)?;
        if mode != MemoryMode::Default {
            kernel.attach()?;
            kernel.set_recording(true)?;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let stacks = Stacks { ring, stacks: HashMap::new(), truncated: 0 };
        let probes_off = Arc::new(AtomicBool::new(false));
        let (decided_tx, decided) = tokio::sync::oneshot::channel();
        let periods = ProbedPeriods::default();
        let task = tokio::spawn(run(kernel, stacks, Growth { reader: events, regions, events: Default::default(), rss: Vec::new(), faults_at_start: fault_count(pid), faults_last: None }, pid, mode, maps, Control { stopped, probes_off: probes_off.clone(), decided: decided_tx, periods: periods.clone() }));
        // Default mode decides how to record after its first moments: the
        // engine's overhead meter samples its statistics unless windows
        // would alias with them.
        let recording = match mode {
            MemoryMode::Default => tokio::time::timeout(PROBE_WINDOW + Duration::from_secs(2), decided).await.ok().and_then(|r| r.ok()),
            _ => None,
        };
        Ok(MemoryCollector { stop, task, probes_off, mode, recording, periods })
    }

    /// Default mode's recording kind, once decided (`None` in precise mode
    /// or when the target exited first).
    pub fn recording(&self) -> Option<RecordingKind> {
        self.recording
    }

    /// When the probes were attached so far (live).
    pub fn probed_periods(&self) -> ProbedPeriods {
        self.periods.clone()
    }

    /// The overhead budget's first step: the allocator probes stop (no
    /// more windows in the default mode; detached in the precise mode).
    /// `None` when they already are.
    pub fn back_off(&self) -> Option<String> {
        if self.probes_off.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(match self.mode {
            MemoryMode::Default => "allocator probes: no more recording windows (allocation figures cover the windows before; page faults, mappings and RSS go on)".to_string(),
            _ => "allocator probes detached (allocation figures cover the time before; page faults, mappings and RSS go on)".to_string(),
        })
    }

    /// Stops collecting (detaches everything) and returns what was gathered.
    pub async fn finish(self) -> Result<MemoryRaw> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| Error::internal(format!("the memory collector panicked: {e}")))?
    }
}

/// Executable mappings, the target's own executable first: the ranges a
/// fingerprint value must fall in to count as a return address.
/// The code mappings of the target, its executable first.
pub(crate) fn code_ranges(maps: &MapsSnapshot, exe: &Path) -> Vec<(u64, u64)> {
    let mut own: Vec<(u64, u64)> = Vec::new();
    let mut other: Vec<(u64, u64)> = Vec::new();
    for m in maps.iter() {
        if m.path == exe { own.push((m.start, m.end)) } else { other.push((m.start, m.end)) }
    }
    own.extend(other);
    own
}

/// New-site stack copies (`MEM_STACKS`), unwound once per site.
struct Stacks {
    ring: RingReader<MemStackSample>,
    stacks: HashMap<u64, Vec<u64>>,
    truncated: u64,
}

impl Stacks {
    fn drain(&mut self, maps: &mut MapsSnapshot) {
        let Stacks { ring, stacks, truncated } = self;
        ring.drain(maps, |sample, unwind| {
            if stacks.contains_key(&sample.site) {
                return;
            }
            let (frames, end) = unwind.frames();
            if end == UnwindEnd::Truncated {
                *truncated += 1;
            }
            stacks.insert(sample.site, frames);
        });
    }
}

/// The continuous part: page-fault and mapping samples, RSS series.
struct Growth {
    reader: StackCopyCollector,
    regions: faults::Regions,
    events: faults::MemEvents,
    rss: Vec<faults::RssPoint>,
    faults_at_start: Option<u64>,
    /// The last fault count read (the target may exit before the end).
    faults_last: Option<u64>,
}

impl Growth {
    /// Unwinds what the ring holds and aggregates it; fault addresses are
    /// classified with the maps (re-read once when one is not found).
    fn drain(&mut self, maps: &mut MapsSnapshot, pid: u32, sites: &HashMap<u64, Vec<u64>>) {
        self.reader.drain(maps);
        let mut reread = false;
        for mut e in self.reader.take_memory_events() {
            if e.kind == perf_audit_common::sample_kind::PAGE_FAULT && e.bytes != 0 {
                let frames = std::mem::take(&mut e.frames);
                e.frames = faults::complete_stack(frames, sites.get(&e.bytes), |a| maps.find(a).is_some());
            }
            let mut region = self.regions.classify(e.addr, e.sp);
            if region == faults::Region::Unknown && e.kind == perf_audit_common::sample_kind::PAGE_FAULT && !reread {
                reread = true;
                if let Some(r) = read_regions(pid) {
                    self.regions = r;
                    region = self.regions.classify(e.addr, e.sp);
                }
            }
            self.events.add(e, region);
        }
    }

    fn sample_rss(&mut self, pid: u32, t: f64) {
        if let Some(r) = read_regions(pid) {
            self.regions = r;
        }
        if let Some(n) = fault_count(pid) {
            self.faults_last = Some(n);
        }
        let Some((rss, anon, huge)) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok().as_deref().and_then(faults::parse_smaps_rollup) else {
            return;
        };
        faults::push_rss(&mut self.rss, faults::RssPoint { t_s: t, rss_bytes: rss, anon_bytes: anon, heap_bytes: self.regions.heap_bytes(), huge_page_bytes: huge });
    }
}

fn read_regions(pid: u32) -> Option<faults::Regions> {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).ok().map(|t| faults::Regions::parse(&t))
}

/// minflt + majflt of `/proc/PID/stat` (every thread's, dead ones included).
fn fault_count(pid: u32) -> Option<u64> {
    target::process_stat(pid).map(|s| s.faults)
}

/// How the engine steers the collector task: the end of the audit, and
/// the overhead budget's back-off.
struct Control {
    stopped: tokio::sync::oneshot::Receiver<()>,
    probes_off: Arc<AtomicBool>,
    /// Default mode's decision, as soon as it is made.
    decided: tokio::sync::oneshot::Sender<RecordingKind>,
    periods: ProbedPeriods,
}

/// What the duty cycle hands back when it stops.
struct DutyCycle {
    kernel: MemoryKernel,
    series: Vec<Snapshot>,
    /// Time allocations were recorded (the sampling share).
    recorded: Duration,
    /// Time any probe was attached (what the target paid for).
    probed: Duration,
    windows: u64,
    recording: Option<Recording>,
    probed_periods_ns: Vec<(u64, u64)>,
}

/// When the allocator probes were attached (CLOCK_MONOTONIC ns), shared
/// while the audit runs: the engine matches latency spikes against them.
#[derive(Clone, Default)]
pub struct ProbedPeriods(Arc<std::sync::Mutex<Vec<(u64, u64)>>>);

impl ProbedPeriods {
    fn push(&self, period: (u64, u64)) {
        if let Ok(mut v) = self.0.lock() {
            v.push(period);
        }
    }

    pub fn get(&self) -> Vec<(u64, u64)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Continuous recording renews its kernel-side lease this often, for this
/// long: an agent stopped (SIGSTOP) or starved stops recording by itself
/// within [`LEASE`], and its probes then cost their trap only.
pub const LEASE_RENEW: Duration = Duration::from_millis(500);
pub const LEASE: Duration = Duration::from_secs(2);
/// Continuous recording checks its rate over this long.
pub const RATE_CHECK: Duration = Duration::from_secs(2);

/// `PERF_AUDIT_MEMORY_RECORDING=continuous|windows|gated|floor` forces
/// default mode's recording kind (benchmarks and tests of each mechanism).
fn forced_recording() -> Option<RecordingKind> {
    std::env::var("PERF_AUDIT_MEMORY_RECORDING").ok().and_then(|v| RecordingKind::parse(v.trim()))
}

/// Estimated cost of one probed call for this plan: its hot probes (the
/// first allocating function, malloc's place in the plan, and free),
/// emulated or single-stepped; glibc's rarely called aligned allocators
/// are single-stepped and do not count.
fn per_call_us(plan: &AllocatorPlan) -> f64 {
    let hot_alloc = plan.probes.iter().find(|p| !p.shape.is_free());
    let free = plan.probes.iter().find(|p| p.shape.is_free());
    if hot_alloc.into_iter().chain(free).all(|p| p.emulated) { EMULATED_CALL_US } else { SINGLE_STEPPED_CALL_US }
}

fn mapping_calls(kernel: &MemoryKernel) -> u64 {
    mem_events::counters(kernel).map(|c| c.mappings.mmap_calls + c.mappings.munmap_calls + c.mappings.brk_grow_calls).unwrap_or(0)
}

/// The allocator probes' duty cycle, on a thread of its own. Default mode
/// first records for [`PROBE_WINDOW`] and decides from the rate it saw
/// ([`Recording::decide`]): continuous (the probes stay attached, nothing is
/// attached or closed again while the target is measured; the recording
/// lease is renewed every [`LEASE_RENEW`]) or windows (a [`DEFAULT_WINDOW`]
/// every [`DEFAULT_PERIOD`], probes attached for each; each window's
/// recording also ends in the kernel at its deadline). Precise mode reads a
/// snapshot every [`PRECISE_SNAPSHOT`]. Every wait is a plain timed wait on
/// this thread, so a window closes on time whatever the agent's async
/// runtime is doing. It did not when the window lived in the collector
/// task: on the runtime's one worker, behind stack unwinding and a wait for
/// the shared unwinder's lock, a 100 ms window stayed open 8.7 s and 22.7 s
/// (measured, demo service, debug agent on a loaded machine), and the
/// target paid the precise mode's cost meanwhile (issue 19's "attached
/// 66.5% of the time").
fn duty_cycle(mut kernel: MemoryKernel, mode: MemoryMode, pid: u32, start: Instant, control: (Arc<AtomicBool>, tokio::sync::oneshot::Sender<RecordingKind>, ProbedPeriods), stop: std::sync::mpsc::Receiver<()>) -> Result<DutyCycle> {
    let (probes_off, decided_tx, shared_periods) = control;
    use std::sync::mpsc::RecvTimeoutError;
    let stop_requested = |r: std::result::Result<(), RecvTimeoutError>| !matches!(r, Err(RecvTimeoutError::Timeout));
    let mut series = Vec::new();
    let mut recorded = Duration::ZERO;
    let mut probed = Duration::ZERO;
    let mut attached_since = kernel.attached().then(Instant::now);
    let mut windows: u64 = if kernel.attached() { 1 } else { 0 };
    let mut recording = None;
    let periods = shared_periods;
    let mut attached_at_ns = kernel.attached().then(monotonic_ns);
    // Default mode: the probe, then the decision.
    let mut kind = None;
    if mode == MemoryMode::Default && target::is_alive(pid) {
        let faults_before = fault_count(pid);
        let maps_before = mapping_calls(&kernel);
        windows = 1;
        kernel.set_window(1)?;
        let opened_ns = monotonic_ns();
        kernel.attach()?;
        let opened = Instant::now();
        kernel.record_for(PROBE_WINDOW + LEASE)?;
        let stop_now = stop_requested(stop.recv_timeout(PROBE_WINDOW));
        let probe_s = opened.elapsed().as_secs_f64();
        let c = kernel.counters()?;
        let faults = fault_count(pid).zip(faults_before).map(|(b, a)| b.saturating_sub(a)).unwrap_or(0);
        let decided = Recording::decide(
            probe_s,
            c.alloc_calls + c.free_calls,
            per_call_us(kernel.plan()),
            faults as f64 / probe_s,
            mapping_calls(&kernel).saturating_sub(maps_before) as f64 / probe_s,
            forced_recording(),
        );
        eprintln!("perf-audit: memory profile: {}", decided.reason);
        let _ = decided_tx.send(decided.kind);
        kind = Some(decided.kind);
        recording = Some(decided);
        match kind {
            Some(RecordingKind::Continuous) if !stop_now => {
                kernel.record_for(LEASE)?;
                attached_since = Some(opened);
                attached_at_ns = Some(opened_ns);
            }
            _ => {
                // Windows (or gated): the probe was the first window.
                kernel.set_recording(false)?;
                recorded += opened.elapsed();
                if !stop_now {
                    std::thread::sleep(FREE_GRACE);
                }
                if !matches!(kind, Some(RecordingKind::Gated | RecordingKind::Floor)) || stop_now {
                    kernel.detach();
                    probed += opened.elapsed();
                    periods.push((opened_ns, monotonic_ns()));
                } else {
                    attached_since = Some(opened);
                    attached_at_ns = Some(opened_ns);
                }
                series.push(Snapshot { t: start.elapsed().as_secs_f64(), sites: kernel.read_sites()? });
            }
        }
        if stop_now {
            return Ok(DutyCycle { kernel, series, recorded, probed, windows, recording, probed_periods_ns: periods.get() });
        }
    }
    let mut period = match (mode, kind) {
        (MemoryMode::Default, Some(RecordingKind::Continuous | RecordingKind::Floor)) => LEASE_RENEW,
        (MemoryMode::Default, _) => DEFAULT_PERIOD,
        _ => PRECISE_SNAPSHOT,
    };
    let mut next = Instant::now() + period;
    let mut last_snapshot = Instant::now();
    // Continuous recording watches its own rate: the first moments may
    // have been quiet (a service before its traffic).
    let per_call = per_call_us(kernel.plan());
    let mut rate_from = (Instant::now(), kernel.counters().map(|c| c.alloc_calls + c.free_calls).unwrap_or(0));
    loop {
        if stop_requested(stop.recv_timeout(next.saturating_duration_since(Instant::now()))) {
            break;
        }
        next = (next + period).max(Instant::now());
        if !target::is_alive(pid) {
            // Keep what was collected; the engine ends the audit.
            continue;
        }
        if probes_off.load(Ordering::Relaxed) {
            // Backed off (overhead budget): detach once, keep the rest of
            // the profile going.
            if kernel.attached() {
                kernel.set_recording(false)?;
                std::thread::sleep(FREE_GRACE);
                kernel.detach();
                if let Some(at) = attached_at_ns.take() {
                    periods.push((at, monotonic_ns()));
                }
                if let Some(since) = attached_since.take() {
                    if !matches!(kind, Some(RecordingKind::Gated | RecordingKind::Floor)) {
                        recorded += since.elapsed();
                    }
                    probed += since.elapsed();
                }
                series.push(Snapshot { t: start.elapsed().as_secs_f64(), sites: kernel.read_sites()? });
            }
        } else if mode == MemoryMode::Default && kind == Some(RecordingKind::Floor) {
            // Attached, never recording: nothing to do.
        } else if mode == MemoryMode::Default && kind == Some(RecordingKind::Continuous) {
            // Renew the lease; snapshots as often as precise mode's.
            kernel.record_for(LEASE)?;
            if last_snapshot.elapsed() >= PRECISE_SNAPSHOT {
                last_snapshot = Instant::now();
                series.push(Snapshot { t: start.elapsed().as_secs_f64(), sites: kernel.read_sites()? });
            }
            // Over twice the budget for RATE_CHECK: windows from now on
            // (the continuous stretch counts as recorded time, like a
            // window).
            if rate_from.0.elapsed() >= RATE_CHECK && !recording.as_ref().is_some_and(|r| r.forced) {
                let calls = kernel.counters().map(|c| c.alloc_calls + c.free_calls).unwrap_or(rate_from.1);
                let rate = calls.saturating_sub(rate_from.1) as f64 / rate_from.0.elapsed().as_secs_f64();
                let cost = rate * per_call / 1e4;
                rate_from = (Instant::now(), calls);
                if cost > 2.0 * perf_audit_analysis::memory::CONTINUOUS_BUDGET_PCT {
                    kernel.set_recording(false)?;
                    std::thread::sleep(FREE_GRACE);
                    kernel.detach();
                    if let Some(at) = attached_at_ns.take() {
                        periods.push((at, monotonic_ns()));
                    }
                    if let Some(since) = attached_since.take() {
                        recorded += since.elapsed();
                        probed += since.elapsed();
                    }
                    series.push(Snapshot { t: start.elapsed().as_secs_f64(), sites: kernel.read_sites()? });
                    let at_s = start.elapsed().as_secs_f64();
                    let note = format!("after {at_s:.1} s the rate rose to {rate:.0} calls/s (~{cost:.1}% of one core): windows from then on");
                    eprintln!("perf-audit: memory profile: {note}");
                    if let Some(r) = recording.as_mut() {
                        r.kind = RecordingKind::Windows;
                        r.switched_at_s = Some((at_s * 10.0).round() / 10.0);
                        r.reason = format!("{}; {note}", r.reason);
                    }
                    kind = Some(RecordingKind::Windows);
                    period = DEFAULT_PERIOD;
                    next = Instant::now() + period;
                }
            }
        } else if mode == MemoryMode::Default {
            windows += 1;
            kernel.set_window(windows)?;
            let opened = Instant::now();
            let opened_ns = monotonic_ns();
            let gated = kernel.attached();
            kernel.attach()?;
            // Every probe (free's included) is in place: record, until the
            // window's deadline even if this thread is held up.
            kernel.record_for(DEFAULT_WINDOW + FREE_GRACE)?;
            let recording_since = Instant::now();
            // Stop early if the audit ends during the window.
            let stop_now = stop_requested(stop.recv_timeout(DEFAULT_WINDOW));
            kernel.set_recording(false)?;
            recorded += recording_since.elapsed();
            if !stop_now {
                std::thread::sleep(FREE_GRACE);
            }
            if !gated {
                // Breakpoints go at once; the kernel's grace periods finish
                // on a background thread.
                kernel.detach();
                probed += opened.elapsed();
                periods.push((opened_ns, monotonic_ns()));
            }
            series.push(Snapshot { t: start.elapsed().as_secs_f64(), sites: kernel.read_sites()? });
            if stop_now {
                break;
            }
        } else {
            series.push(Snapshot { t: start.elapsed().as_secs_f64(), sites: kernel.read_sites()? });
        }
    }
    if let Some(since) = attached_since.take() {
        if !matches!(kind, Some(RecordingKind::Gated | RecordingKind::Floor)) {
            recorded += since.elapsed();
        }
        probed += since.elapsed();
    }
    if let Some(at) = attached_at_ns.take() {
        periods.push((at, monotonic_ns()));
    }
    Ok(DutyCycle { kernel, series, recorded, probed, windows, recording, probed_periods_ns: periods.get() })
}

/// The collector task: the probes' duty cycle on its thread, new-site
/// stacks unwound as they arrive, page faults and mappings, RSS over time.
async fn run(
    kernel: MemoryKernel,
    mut stacks: Stacks,
    mut growth: Growth,
    pid: u32,
    mode: MemoryMode,
    mut maps: MapsSnapshot,
    control: Control,
) -> Result<MemoryRaw> {
    let Control { mut stopped, probes_off, decided, periods } = control;
    let start = Instant::now();
    let kernel_at_start = kernel_seconds(pid);
    let mut kernel_last = kernel_at_start;
    let mut peak_rss = 0u64;
    let mut current_rss = 0u64;
    // The probes' duty cycle runs on a thread of its own: a window must
    // close on time whatever the agent's async work is doing (see
    // `duty_cycle`).
    let (stop_duty, duty_stopped) = std::sync::mpsc::channel::<()>();
    let duty = std::thread::Builder::new()
        .name("memory-windows".into())
        .spawn(move || duty_cycle(kernel, mode, pid, start, (probes_off, decided, periods), duty_stopped))
        .map_err(|e| Error::internal(format!("cannot start the memory window thread: {e}")))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_tick = tokio::time::interval(crate::kernel::stack_copy::DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rss_tick = tokio::time::interval(faults::RSS_INTERVAL);
    rss_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = drain_tick.tick() => growth.drain(&mut maps, pid, &stacks.stacks),
            _ = rss_tick.tick() => {
                if target::is_alive(pid) {
                    growth.sample_rss(pid, start.elapsed().as_secs_f64());
                }
            }
            _ = stacks.ring.readable() => stacks.drain(&mut maps),
            _ = tick.tick() => {
                if !target::is_alive(pid) {
                    continue;
                }
                if let Some((rss_now, hwm)) = rss_and_peak(pid) {
                    current_rss = rss_now;
                    peak_rss = peak_rss.max(hwm).max(rss_now);
                }
                kernel_last = kernel_seconds(pid).or(kernel_last);
                let _ = maps.refresh(pid);
            }
        }
    }
    let _ = stop_duty.send(());
    let DutyCycle { mut kernel, mut series, recorded, probed, windows, recording, probed_periods_ns } = tokio::task::spawn_blocking(move || duty.join())
        .await
        .map_err(|e| Error::internal(format!("the memory window thread: {e}")))?
        .map_err(|_| Error::internal("the memory window thread panicked".to_string()))??;
    // As at a window's end: stop recording, keep watching frees a moment,
    // then detach (free's link closes first).
    kernel.set_recording(false)?;
    if kernel.attached() {
        tokio::time::sleep(FREE_GRACE).await;
    }
    kernel.detach();
    mem_events::detach(&mut kernel);
    let elapsed = start.elapsed();
    // Every probe closed before the final read: no event races the counts.
    tokio::task::block_in_place(|| kernel.join_detaches());
    let closed = Instant::now();
    let kernel_alive = kernel_seconds(pid);
    // A target that exited keeps its last reading (the cost up to then).
    let kernel_at_close = kernel_alive.or(kernel_last);
    let mut kernel_time = KernelTime {
        during_s: match (kernel_at_start, kernel_at_close) {
            (Some(a), Some(b)) => (b - a).max(0.0),
            _ => 0.0,
        },
        during_wall_s: (closed - start).as_secs_f64(),
        after: None,
    };
    if kernel_alive.is_some() {
        tokio::time::sleep(UNPROBED_BASELINE).await;
        if let (Some(a), Some(b)) = (kernel_at_close, kernel_seconds(pid)) {
            kernel_time.after = Some(((b - a).max(0.0), closed.elapsed().as_secs_f64()));
        }
    }
    let sites = kernel.read_sites()?;
    let continuous = recording.as_ref().is_some_and(|r| r.kind == RecordingKind::Continuous);
    if mode != MemoryMode::Default || continuous {
        series.push(Snapshot { t: elapsed.as_secs_f64(), sites: sites.clone() });
    }
    if let Some((rss_now, hwm)) = rss_and_peak(pid) {
        current_rss = rss_now;
        peak_rss = peak_rss.max(hwm).max(rss_now);
    }
    stacks.drain(&mut maps);
    growth.sample_rss(pid, elapsed.as_secs_f64());
    growth.drain(&mut maps, pid, &stacks.stacks);
    growth.events.unaggregated += growth.reader.memory_dropped;
    let faults_counted = match (growth.faults_at_start, fault_count(pid).or(growth.faults_last)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let event_counters = mem_events::counters(&kernel)?;
    let counters = kernel.counters()?;
    let duty = if mode == MemoryMode::Default && !continuous {
        (recorded.as_secs_f64() / elapsed.as_secs_f64().max(1e-9)).clamp(1e-6, 1.0)
    } else {
        1.0
    };
    let plan = kernel.plan().clone();
    let summary = MemoryEvidence {
        mode,
        allocator_family: plan.family.name().to_string(),
        allocator_object: plan.object.display().to_string(),
        probes: plan
            .probes
            .iter()
            .map(|p| section::ProbeRow {
                symbol: p.symbol.clone(),
                offset: p.probe_offset,
                instruction: p.instruction.clone(),
                emulated: p.emulated,
                uretprobe: !p.shape.is_free(),
            })
            .collect(),
        rust_shims: plan.rust_shims.clone(),
        counters,
        sites: sites.len(),
        truncated_stacks: stacks.truncated,
        peak_rss_bytes: peak_rss,
        current_rss_bytes: current_rss,
        duty,
        recorded_s: recorded.as_secs_f64(),
        probed_s: probed.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        windows,
        kernel_time,
        recording,
    };
    Ok(MemoryRaw {
        summary,
        allocator: plan,
        sites,
        series,
        stacks: stacks.stacks,
        maps,
        events: growth.events,
        event_counters,
        rss_series: growth.rss,
        faults_counted,
        probed_periods_ns,
    })
}

/// (VmRSS, VmHWM) in bytes from `/proc/PID/status`.
pub fn rss_and_peak(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let rss = field("VmRSS:")?;
    Some((rss, field("VmHWM:").unwrap_or(rss)))
}

/// Symbolizes every site's stack (with the CPU profile's symbolizer: inlined
/// frames, file:line, owner detection) and runs the analysis. Returns the
/// report section and folded stacks weighted by bytes (`memory.svg`).
pub fn build_section(
    raw: &MemoryRaw,
    symbolizer: &crate::symbolize::StackSymbolizer,
    exe: &Path,
) -> (section::MemorySection, Vec<String>) {
    let mut ids: Vec<u64> = raw.stacks.keys().copied().collect();
    ids.sort_unstable();
    let stacks: Vec<crate::kernel::cpu::RawCpuStack> = ids
        .iter()
        .map(|id| crate::kernel::cpu::RawCpuStack::call_site(0, raw.stacks[id].clone()))
        .collect();
    let profile = symbolizer.cpu_profile(&stacks, &raw.maps, exe);
    // `cpu_profile` keeps one stack per input, in order.
    let frames: HashMap<u64, Vec<crate::profile::Frame>> = ids
        .iter()
        .zip(profile.stacks.iter())
        .map(|(id, s)| (*id, s.frames.iter().map(|f| profile.frame(*f).clone()).collect()))
        .collect();
    let analysis = analysis::analyze(&analysis::Input {
        duty: raw.summary.duty,
        elapsed_s: raw.summary.elapsed_s,
        sites: &raw.sites,
        series: &raw.series,
        stacks: &frames,
    });
    let folded = analysis.folded.clone();
    let events = growth_sections(raw, symbolizer, exe);
    (section::MemorySection::build(&raw.summary, analysis, events), folded)
}


/// Symbolizes the page-fault and mapping stacks and builds their sections.
fn growth_sections(
    raw: &MemoryRaw,
    symbolizer: &crate::symbolize::StackSymbolizer,
    exe: &Path,
) -> section::GrowthSections {
    let keys = raw.events.stacks();
    let stacks: Vec<crate::kernel::cpu::RawCpuStack> = keys
        .iter()
        .map(|user| crate::kernel::cpu::RawCpuStack::call_site(0, user.clone()))
        .collect();
    let profile = symbolizer.cpu_profile(&stacks, &raw.maps, exe);
    let frames: HashMap<Vec<u64>, Vec<crate::profile::Frame>> = keys
        .into_iter()
        .zip(profile.stacks.iter())
        .map(|(key, s)| (key, s.frames.iter().map(|f| profile.frame(*f).clone()).collect()))
        .collect();
    section::GrowthSections {
        page_faults: faults::page_fault_section(
            &raw.events,
            &frames,
            &raw.event_counters,
            raw.faults_counted,
            raw.rss_series.iter().map(|p| p.huge_page_bytes).max().unwrap_or(0),
        ),
        mappings: faults::mapping_section(&raw.events, &frames, &raw.event_counters),
        rss_series: faults::rss_series(&raw.rss_series),
    }
}
