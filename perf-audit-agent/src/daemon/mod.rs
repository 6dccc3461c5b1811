//! `perf-audit-agent daemon`: always-on, low-overhead CPU profiling of a
//! whole node (or of the processes, cgroups and containers it is told to
//! watch), exported as Prometheus metrics, pprof on demand, Pyroscope
//! pushes and collapsed stacks on disk.
//!
//! Why it is shaped this way (the daemon runs for weeks on every node, so
//! its own cost and memory bound come first):
//!
//! - **Whole stacks without frame pointers, at 19 Hz.** By default each
//!   sample's user registers and stack copy go through a 4 MiB ring,
//!   drained every 250 ms and unwound at once with `.eh_frame` ([`unwind`]:
//!   one table cache for the node, one bounded unwinder per process), the
//!   frame-pointer chain of the copy as the fallback. With
//!   `--frame-pointers-only` the perf_event program instead counts
//!   frame-pointer stacks in a per-CPU hash, nothing streamed per sample.
//!   Every [`plan::DaemonPlan::drain_interval`] the agent reads and deletes
//!   the counts ([`collector`]) and prunes idle stack ids, so the kernel
//!   maps never fill however long it runs.
//! - **Windows.** Drained stacks accumulate per process ([`procs`]); every
//!   `--window` (60 s) each process with samples yields one profile
//!   ([`model::ProcessWindow`]) that is symbolized ([`symbols`]) and sent to
//!   the sinks (`--push`, `--otlp`, `--folded-dir`). Without a sink nothing is
//!   symbolized: metrics need only counts.
//! - **Bounded memory.** Process count, per-window stacks, symbol caches,
//!   concurrent pprof captures, pushes in flight and HTTP connections all
//!   have fixed limits; what does not fit is counted in `/metrics`.
//!   Exited processes are evicted after their last window.
//! - **Clean exit.** SIGTERM/Ctrl-C stops sampling, drains, flushes the
//!   last window and pushes, then drops the kernel session: every program
//!   and map is released (a killed daemon's are too: they are fd-owned,
//!   never pinned).
//! - **Off-CPU (`--off-cpu`)**: the audit's `sched_switch` /
//!   `raw_syscalls:sys_exit` programs, system-wide: a block of at least
//!   `--off-cpu-min` sends its stack, copied at the syscall exit, through the
//!   same ring, weighted by the time blocked, at most `--frequency` copies
//!   per CPU per second (the rest counted with their time); the kernel's
//!   per-thread state of exited threads is pruned every drain. Windows then
//!   carry a second sample type, `off_cpu/nanoseconds`.
//! - **OTLP (`--otlp`)**: each window, all processes, as one OTLP profiles
//!   request ([`otlp`]), one in flight at most.

pub mod cgroup;
pub mod collector;
pub mod http;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod plan;
pub mod pprof;
pub mod procs;
pub mod push;
pub mod symbols;
pub mod unwind;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use hyper::StatusCode;
use perf_audit_common::{Counter, CPU_STACK_COUNTS_CAPACITY, STACK_TRACES_CAPACITY, UserStackSample, sample_kind};
use tokio::sync::{mpsc, watch};

use self::{
    collector::{Drainer, StackKey},
    http::CaptureRequest,
    metrics::{MetricsSnapshot, ProcessCpu},
    model::{ProcessLabels, StackValues, WindowKind},
    otlp::{Exporter, RequestBuilder},
    plan::DaemonPlan,
    procs::{Discovery, MAX_WINDOW_STACKS, Registry},
    push::Pusher,
    symbols::WindowSymbolizer,
    unwind::{NodeUnwinder, Outcome},
};
use crate::{
    error::{Error, ErrorKind, Result},
    kernel::{self, Filter, KernelSession, UnwindMode, ring::{RingReader, StackRecord as _}},
    target::{self, MapsSnapshot},
};

/// pprof captures running at once.
pub const MAX_CAPTURES: usize = 4;
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

struct Capture {
    pid: u32,
    labels: ProcessLabels,
    started: SystemTime,
    deadline: tokio::time::Instant,
    stacks: HashMap<StackKey, StackValues>,
    /// Added to the kernel filter for this capture only.
    temporary_target: bool,
    reply: tokio::sync::oneshot::Sender<std::result::Result<Vec<u8>, (StatusCode, String)>>,
}

struct Daemon {
    plan: DaemonPlan,
    session: KernelSession,
    /// The stack-copy ring (None with `--frame-pointers-only`).
    ring: Option<RingReader<UserStackSample>>,
    node: NodeUnwinder,
    drainer: Drainer,
    registry: Registry,
    symbolizer: WindowSymbolizer,
    pusher: Option<Pusher>,
    exporter: Option<Exporter>,
    host_name: String,
    discovery: Option<Discovery>,
    captures: Vec<Capture>,
    metrics: Arc<Mutex<MetricsSnapshot>>,
    program_ids: Vec<u32>,
    window_start: SystemTime,
    windows: u64,
    profiles: u64,
    folded_failed: u64,
    map_entries: usize,
    drain_error_shown: bool,
    unwind_mode: &'static str,
    kind: WindowKind,
    /// Kernel scheduler entries of exited threads removed (`--off-cpu`).
    sched_pruned: u64,
    /// CPU time spent in window flushes (symbolizing and writing).
    flush_cpu_seconds: f64,
}

pub async fn run(plan: DaemonPlan) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    kernel::preflight()?;
    for pid in &plan.selection.pids {
        target::describe(*pid)?;
    }
    if let Some(dir) = &plan.folded_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    }
    let listener = tokio::net::TcpListener::bind(plan.listen).await.map_err(|e| {
        Error::new(ErrorKind::Usage, format!("cannot listen on {}: {e}; pick a free address with --listen", plan.listen))
    })?;
    let local = listener.local_addr().map_err(|e| Error::internal(format!("listener address: {e}")))?;

    let system_wide = plan.selection.is_system_wide();
    let filter = if system_wide { Filter::All } else { Filter::ListedPids };
    let (mut session, ring) = if plan.frame_pointers_only {
        (KernelSession::load(filter, UnwindMode::FramePointer, Duration::from_millis(1))?, None)
    } else {
        // Off-CPU stack copies: at most as many per CPU per second as CPU
        // samples, so they can at most double the ring's load and the
        // unwinding cost (measured for CPU samples alone: see
        // ARCHITECTURE.md "Daemon cost, measured").
        let off_cpu_budget = if plan.off_cpu.is_some() { plan.frequency_hz } else { 0 };
        let mut session = KernelSession::load_with_ring(
            filter,
            UnwindMode::Dwarf,
            plan.off_cpu.unwrap_or(Duration::from_millis(1)),
            Some(unwind::RING_BYTES),
            off_cpu_budget,
        )?;
        let ring = session.system_wide_stack_ring()?;
        (session, Some(ring))
    };
    for pid in &plan.selection.pids {
        session.add_target(*pid)?;
    }
    let mut discovery = plan.selection.needs_discovery().then(Discovery::default);
    if let Some(d) = discovery.as_mut() {
        for pid in d.scan(&plan.selection).added {
            session.add_target(pid)?;
        }
    }
    session.start_cpu_sampling(plan.frequency_hz)?;
    if plan.off_cpu.is_some() {
        session.start_offcpu()?;
    }
    let exporter = match &plan.otlp {
        Some(endpoint) => Some(Exporter::new(endpoint).map_err(|e| Error::new(ErrorKind::Usage, e))?),
        None => None,
    };
    let program_ids: Vec<u32> =
        session.ebpf_mut().programs().filter_map(|(_, p)| p.info().ok().map(|i| i.id())).collect();

    let metrics = Arc::new(Mutex::new(MetricsSnapshot {
        frequency_hz: plan.frequency_hz,
        stack_map_capacity: CPU_STACK_COUNTS_CAPACITY,
        stack_ids_capacity: STACK_TRACES_CAPACITY,
        program_ids: program_ids.clone(),
        ..Default::default()
    }));
    let (capture_tx, mut capture_rx) = mpsc::channel::<CaptureRequest>(MAX_CAPTURES);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(http::HttpState { metrics: metrics.clone(), captures: capture_tx });
    let server = tokio::spawn(http::serve(listener, state, shutdown_rx));

    let scope = if system_wide {
        "system-wide".to_string()
    } else {
        let s = &plan.selection;
        format!(
            "{} pid(s), processes {:?}, cgroups {:?}, containers {:?}",
            s.pids.len(),
            s.processes,
            s.cgroups,
            s.containers
        )
    };
    eprintln!(
        "perf-audit: daemon listening on http://{local} ({scope}, {} Hz, {} windows, {}{})",
        plan.frequency_hz,
        humantime::format_duration(plan.window),
        if plan.frame_pointers_only { "frame pointers" } else { "stack copies unwound with .eh_frame" },
        match plan.off_cpu {
            Some(min) => format!(", off-CPU blocks >= {}", humantime::format_duration(min)),
            None => String::new(),
        }
    );

    let window = plan.window;
    let mut daemon = Daemon {
        pusher: plan.push.clone().map(Pusher::new),
        exporter,
        host_name: otlp::host_name(),
        kind: if plan.off_cpu.is_some() { WindowKind::CpuAndOffCpu } else { WindowKind::Cpu },
        sched_pruned: 0,
        flush_cpu_seconds: 0.0,
        unwind_mode: if plan.frame_pointers_only { "frame_pointer" } else { "eh_frame" },
        plan,
        session,
        ring,
        node: NodeUnwinder::default(),
        drainer: Drainer::default(),
        registry: Registry::default(),
        symbolizer: WindowSymbolizer::new(),
        discovery: discovery.take(),
        captures: Vec::new(),
        metrics,
        program_ids,
        window_start: SystemTime::now(),
        windows: 0,
        profiles: 0,
        folded_failed: 0,
        map_entries: 0,
        drain_error_shown: false,
    };

    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| Error::internal(format!("SIGTERM handler: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::internal(format!("SIGINT handler: {e}")))?;
    let mut drain_tick = tokio::time::interval(daemon.plan.drain_interval());
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drain_tick.tick().await; // the first tick is immediate
    let mut ring_tick = tokio::time::interval(unwind::RING_DRAIN_INTERVAL);
    ring_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discovery_tick = tokio::time::interval(DISCOVERY_INTERVAL);
    discovery_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window_deadline = tokio::time::Instant::now() + window;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);

    loop {
        let next_capture = daemon.captures.iter().map(|c| c.deadline).min();
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = tokio::time::sleep_until(window_deadline) => {
                daemon.drain();
                daemon.flush_window(SystemTime::now());
                daemon.publish_metrics();
                window_deadline += window;
            }
            _ = drain_tick.tick() => {
                daemon.drain();
                daemon.prune_sched_threads();
                daemon.node.release_table_pages();
            }
            _ = ring_tick.tick(), if daemon.ring.is_some() => daemon.drain_ring(),
            Some(request) = capture_rx.recv() => {
                daemon.drain();
                daemon.start_capture(request);
            }
            _ = tokio::time::sleep_until(next_capture.unwrap_or(far)), if next_capture.is_some() => {
                daemon.drain();
                daemon.finish_captures(false);
            }
            _ = discovery_tick.tick(), if daemon.discovery.is_some() => daemon.discover(),
        }
    }

    // Shutdown: stop sampling, collect what is left, flush, detach.
    daemon.session.stop_cpu_sampling();
    daemon.session.stop_offcpu();
    daemon.drain();
    daemon.finish_captures(true);
    daemon.flush_window(SystemTime::now());
    if let Some(pusher) = &daemon.pusher {
        pusher.flush(Duration::from_secs(5)).await;
    }
    if let Some(exporter) = &daemon.exporter {
        exporter.flush(Duration::from_secs(5)).await;
    }
    daemon.publish_metrics();
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    let Daemon { session, windows, profiles, .. } = daemon;
    drop(session); // detaches every program, frees every map
    eprintln!("perf-audit: daemon stopped after {windows} windows ({profiles} profiles); eBPF programs detached");
    Ok(())
}

impl Daemon {
    fn record(&mut self, pid: u32, key: &StackKey, values: StackValues) {
        for capture in self.captures.iter_mut().filter(|c| c.pid == pid) {
            if let Some(v) = capture.stacks.get_mut(key) {
                v.add(values);
            } else if capture.stacks.len() < MAX_WINDOW_STACKS {
                capture.stacks.insert(key.clone(), values);
            }
        }
        self.registry.record(pid, key, values);
    }

    /// Unwinds every CPU and off-CPU sample waiting in the stack-copy ring
    /// and records it (nothing to do with `--frame-pointers-only`).
    fn drain_ring(&mut self) {
        let Some(ring) = self.ring.as_mut() else { return };
        let node = &mut self.node;
        node.begin_drain();
        let mut samples = Vec::new();
        ring.drain_all(|sample| {
            let values = match sample.kind {
                sample_kind::CPU => StackValues::samples(1),
                sample_kind::OFF_CPU => StackValues::off_cpu(sample.weight),
                _ => return,
            };
            let (user, outcome) = node.unwind(sample.tgid, sample.regs(), sample.stack());
            samples.push((sample.tgid, sample.comm, user, sample.kernel_stack_id, outcome, values));
        });
        if samples.is_empty() {
            return;
        }
        let ids: Vec<i32> = samples.iter().map(|s| s.3).collect();
        let kernel = match self.drainer.kernel_stacks(self.session.ebpf_mut(), &ids) {
            Ok(kernel) => kernel,
            Err(_) => vec![Arc::from(Vec::new()); ids.len()],
        };
        for ((pid, comm, user, _, outcome, values), kernel) in samples.into_iter().zip(kernel) {
            let key = StackKey { comm, user: user.into(), kernel };
            self.record(pid, &key, values);
            if values.samples > 0 {
                self.drainer.samples_drained += 1;
                if outcome == Outcome::Truncated {
                    self.registry.add_truncated(pid);
                }
            }
        }
    }

    /// `--off-cpu`: forgets the kernel's scheduler state of exited threads
    /// (every thread of the node gets an entry; the maps hold 16,384).
    fn prune_sched_threads(&mut self) {
        if self.plan.off_cpu.is_none() {
            return;
        }
        let alive = |tid: u32| std::path::Path::new(&format!("/proc/{tid}")).exists();
        if let Ok(removed) = self.session.prune_sched_threads(alive) {
            self.sched_pruned += removed as u64;
        }
    }

    fn drain(&mut self) {
        self.drain_ring();
        match self.drainer.drain(self.session.ebpf_mut()) {
            Ok(drained) => {
                self.map_entries = drained.map_entries;
                for (pid, key, count) in drained.samples {
                    self.record(pid, &key, StackValues::samples(count));
                }
            }
            Err(e) => {
                if !self.drain_error_shown {
                    eprintln!("perf-audit: reading the kernel maps failed: {e}");
                    self.drain_error_shown = true;
                }
            }
        }
        self.publish_metrics();
    }

    fn publish_metrics(&mut self) {
        let kernel = self.session.counters().unwrap_or_default();
        let without_tables = self.node.processes_without_tables();
        let processes: Vec<ProcessCpu> = self
            .registry
            .entries
            .values()
            .map(|e| ProcessCpu {
                labels: e.labels.clone(),
                samples: e.samples_total,
                off_cpu_ns: e.off_cpu_ns_total,
                truncated: e.truncated_total,
                tables_missing: without_tables.binary_search(&e.labels.pid).is_ok(),
            })
            .collect();
        let push = self.pusher.as_ref().map(|p| {
            use std::sync::atomic::Ordering::Relaxed;
            (p.stats.ok.load(Relaxed), p.stats.failed.load(Relaxed), p.stats.dropped.load(Relaxed))
        });
        let otlp = self.exporter.as_ref().map(|e| {
            use std::sync::atomic::Ordering::Relaxed;
            (e.stats.ok.load(Relaxed), e.stats.failed.load(Relaxed), e.stats.dropped.load(Relaxed))
        });
        let off_cpu = self.plan.off_cpu.map(|_| metrics::OffCpuMetrics {
            rate_limited: self.session.counter(Counter::OffCpuRateLimited).unwrap_or(0),
            rate_limited_ns: self.session.counter(Counter::OffCpuRateLimitedNs).unwrap_or(0),
            dropped_agent_limit_ns: self.registry.dropped_off_cpu_ns,
            sched_threads_pruned: self.sched_pruned,
        });
        let mut m = self.metrics.lock().expect("metrics lock");
        m.kernel = kernel;
        m.otlp = otlp;
        m.off_cpu = off_cpu;
        m.samples_drained = self.drainer.samples_drained;
        m.samples_dropped_agent_limit = self.registry.dropped_samples;
        m.stack_map_entries = self.map_entries;
        m.stack_ids = self.drainer.stack_ids();
        m.stack_ids_pruned = self.drainer.stack_ids_pruned;
        m.stack_lookups_failed = self.drainer.stack_lookups_failed;
        m.processes = processes;
        m.processes_evicted = self.registry.evicted;
        m.windows = self.windows;
        m.profiles_written = self.profiles;
        (m.push_ok, m.push_failed, m.push_dropped) = push.unwrap_or_default();
        m.folded_write_failed = self.folded_failed;
        m.symbol_cache_entries = self.symbolizer.cached();
        m.symbol_cache_resets = self.symbolizer.resets();
        m.symbol_cache_bytes = self.symbolizer.cached_bytes();
        m.symbol_objects_symbolized = self.symbolizer.objects_symbolized;
        m.window_flush_cpu_seconds = self.flush_cpu_seconds;
        m.program_ids = self.program_ids.clone();
        m.unwind_mode = self.unwind_mode;
        m.unwind = self.node.stats.clone();
        m.unwind_processes = self.node.processes();
        m.unwind_objects = self.node.objects();
        m.unwind_processes_without_tables = without_tables.len();
    }

    fn flush_window(&mut self, end: SystemTime) {
        let cpu = thread_cpu_seconds();
        self.flush_window_inner(end);
        self.flush_cpu_seconds += (thread_cpu_seconds() - cpu).max(0.0);
    }

    fn flush_window_inner(&mut self, end: SystemTime) {
        let taken = self.registry.take_windows();
        self.node.evict_exited();
        self.windows += 1;
        let start = std::mem::replace(&mut self.window_start, end);
        if self.pusher.is_none() && self.exporter.is_none() && self.plan.folded_dir.is_none() {
            return;
        }
        let mut request = self.exporter.as_ref().map(|_| RequestBuilder::new(&self.host_name));
        // Symbolizing every process's window takes long enough on a busy
        // node for the small stack-copy ring to fill: keep draining it in
        // between files (its samples belong to the next window).
        let mut symbolizer = std::mem::take(&mut self.symbolizer);
        let mut last_ring_drain = std::time::Instant::now();
        symbolizer.prepare(
            taken.iter().flat_map(|(_, maps, stacks)| stacks.keys().map(move |key| (maps, key))),
            &mut || {
                if last_ring_drain.elapsed() >= unwind::RING_DRAIN_INTERVAL {
                    self.drain_ring();
                    last_ring_drain = std::time::Instant::now();
                }
            },
        );
        self.symbolizer = symbolizer;
        for (labels, maps, stacks) in taken {
            if last_ring_drain.elapsed() >= unwind::RING_DRAIN_INTERVAL {
                self.drain_ring();
                last_ring_drain = std::time::Instant::now();
            }
            let window = self.symbolizer.window(labels, &maps, &stacks, (start, end), self.plan.frequency_hz, self.kind);
            self.profiles += 1;
            if let Some(pusher) = &self.pusher {
                pusher.push(&window);
            }
            if let Some(request) = request.as_mut() {
                request.add(&window);
            }
            if let Some(dir) = &self.plan.folded_dir {
                let secs = start.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let name: String = window
                    .process
                    .name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                    .collect();
                let path = dir.join(format!("{name}-{}-{secs}.folded", window.process.pid));
                if std::fs::write(&path, window.folded_text()).is_err() {
                    self.folded_failed += 1;
                }
                if window.has_off_cpu() && window.total_off_cpu_ns() > 0 {
                    let path = dir.join(format!("{name}-{}-{secs}.off_cpu.folded", window.process.pid));
                    if std::fs::write(&path, window.folded_off_cpu_text()).is_err() {
                        self.folded_failed += 1;
                    }
                }
            }
        }
        self.symbolizer.release_objects();
        if let (Some(exporter), Some(request)) = (&self.exporter, request) {
            exporter.export(request.finish());
        }
    }

    fn start_capture(&mut self, request: CaptureRequest) {
        let CaptureRequest { pid, seconds, reply } = request;
        if self.captures.len() >= MAX_CAPTURES {
            let _ = reply.send(Err((StatusCode::SERVICE_UNAVAILABLE, "too many profiles in progress; retry later".into())));
            return;
        }
        if !target::is_alive(pid) {
            let _ = reply.send(Err((StatusCode::NOT_FOUND, format!("no process with pid {pid}"))));
            return;
        }
        // Outside the filter: watch it for this capture only.
        let temporary_target = !self.plan.selection.is_system_wide()
            && !self.plan.selection.pids.contains(&pid)
            && !procs::matches(&self.plan.selection, pid, std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim_end())
            && !self.captures.iter().any(|c| c.pid == pid && c.temporary_target);
        if temporary_target && self.session.add_target(pid).is_err() {
            let _ = reply.send(Err((StatusCode::INTERNAL_SERVER_ERROR, format!("cannot watch pid {pid}"))));
            return;
        }
        let (labels, _) = procs::describe(pid, &format!("pid-{pid}"));
        self.captures.push(Capture {
            pid,
            labels,
            started: SystemTime::now(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(seconds),
            stacks: HashMap::new(),
            temporary_target,
            reply,
        });
    }

    /// Answers the captures whose time is up (all of them at shutdown).
    fn finish_captures(&mut self, all: bool) {
        let now = tokio::time::Instant::now();
        let (done, running): (Vec<Capture>, Vec<Capture>) =
            std::mem::take(&mut self.captures).into_iter().partition(|c| all || c.deadline <= now);
        self.captures = running;
        for capture in done {
            if capture.temporary_target && !self.captures.iter().any(|c| c.pid == capture.pid) {
                let _ = self.session.remove_target(capture.pid);
            }
            let maps = match self.registry.entries.get(&capture.pid) {
                Some(entry) => entry.maps.clone(),
                None => {
                    let mut maps = MapsSnapshot::default();
                    let _ = maps.refresh(capture.pid);
                    maps
                }
            };
            self.symbolizer.prepare(capture.stacks.keys().map(|key| (&maps, key)), &mut || ());
            let window = self.symbolizer.window(
                capture.labels,
                &maps,
                &capture.stacks,
                (capture.started, SystemTime::now()),
                self.plan.frequency_hz,
                self.kind,
            );
            let _ = capture.reply.send(Ok(pprof::encode_gzip(&window)));
            self.symbolizer.release_objects();
        }
    }

    fn discover(&mut self) {
        let Some(discovery) = self.discovery.as_mut() else { return };
        let delta = discovery.scan(&self.plan.selection);
        for pid in delta.added {
            let _ = self.session.add_target(pid);
        }
        for pid in delta.removed {
            if !self.captures.iter().any(|c| c.pid == pid) {
                let _ = self.session.remove_target(pid);
            }
        }
    }
}

/// CPU time of the calling thread (the flush runs on the drain loop's).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
