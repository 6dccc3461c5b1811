//! One audit, start to finish. The only async code of the agent lives here:
//! waiting for the duration, Ctrl-C, or the target's exit while the kernel
//! collects. Everything before is validation, everything after is pure
//! computation and file writing.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use perf_audit_analysis::audit::{AsyncEvidence, AuditEvidence, build_report, render_outputs};

use crate::{
    cli::{Profile, UnwindChoice},
    collect::{BACK_OFF_ORDER, Collector, Console, CpuSampling, Database, Finish, Memory, OffCpu, RawEvidence, StackCopy, finish_all},
    overhead::OverheadMeter,
    database::DatabaseCollector,
    error::{Error, Result},
    kernel::{self, Counters, Filter, KernelSession, UnwindMode, stack_copy::DRAIN_INTERVAL},
    memory::MemoryCollector,
    load::{self, LoadPlan, LoadResult},
    plan::{AuditPlan, TargetSpec},
    postgres::private::PrivatePostgres,
    profile::{
        CpuProfile,
        async_runtime::{ThreadTime, TimedSample},
    },
    report::{EndReason, KernelInfo, Report, TargetExec, UnwindTableParses},
    symbolize::StackSymbolizer,
    target::{self, Launched, MapsSnapshot, TargetInfo},
    unwind::SharedUnwinder,
};

/// How often the target's liveness and memory maps are checked.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const MAPS_REFRESH: Duration = Duration::from_secs(1);

/// What an audit produced.
pub struct AuditOutput {
    pub out_dir: PathBuf,
    pub report: Report,
}

/// One audit: resolve -> load -> collect -> symbolize -> analyze -> write.
pub async fn run(plan: AuditPlan) -> Result<AuditOutput> {
    for profile in &plan.unavailable {
        eprintln!("perf-audit: profile `{}` is not available in this version yet; skipping it", profile.as_str());
    }
    let support = kernel::preflight()?;
    let (existing_pid, unwind) = resolve(&plan)?;
    let probes = Probes::start(&plan, existing_pid, unwind).await?;
    let (info, out_dir, started_at) = (probes.info.clone(), probes.out_dir.clone(), SystemTime::now());
    let exe_file = probes.exe_file.clone();
    // One symbolizer for the audit: blazesym keeps each object it parsed,
    // so the database call sites and the profiles share the work.
    let symbolizer = StackSymbolizer::with_debug_dirs(&plan.debug_dirs);
    let (raw, collected, cpu_seconds, load, load_unprobed) = probes.collect(&plan, &symbolizer).await?;
    // Symbolized first: the symbols list names the objects it opened.
    let symbolized = symbolize(&plan, &info, &exe_file, raw, &collected.maps, &symbolizer);
    let evidence = AuditEvidence {
        target: info.clone(),
        profile: plan.requested_profile.as_str().to_string(),
        unavailable_profiles: plan.unavailable.iter().map(|p| p.as_str().to_string()).collect(),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        duration: collected.elapsed,
        planned_duration: plan.duration,
        end_reason: collected.end_reason,
        end_signal: collected.end_signal.clone(),
        target_exec: collected.target_exec.clone(),
        kernel: KernelInfo { release: support.release.clone(), btf: support.btf },
        counters: collected.counters,
        cpu_section: plan.profiles.contains(&Profile::Cpu),
        unwinding: unwind,
        frequency_hz: plan.frequency_hz,
        unwind_tables: collected.unwind_tables.clone(),
        collect_start_ns: collected.start_ns,
        load,
        load_unprobed,
        overhead: Some(collected.overhead.clone()),
        recording_periods: collected.recording_periods.clone(),
        last_rss_bytes: collected.last_rss,
        peak_rss_bytes: collected.peak_rss,
        cpu_seconds,
        benchmarks: crate::bench::run_if_asked(plan.bench.as_ref(), &info.exe)?,
        rerun_command: rerun_command(&plan, &info),
        bench: plan.bench.is_some(),
        symbols: symbolizer.object_symbols(),
        ..symbolized
    };
    let mut report = build_report(&evidence);
    for finding in &mut report.findings {
        finding.source = source_excerpt(finding.file.as_deref(), finding.line);
    }
    for file in render_outputs(&report, &evidence)? {
        write(&out_dir.join(file.name), &file.bytes)?;
    }
    Ok(AuditOutput { out_dir, report })
}

/// Resolves an existing target before loading anything (a typo fails
/// fast), and the unwinding mode: with `--unwind auto`, frame pointers when
/// the target's binary keeps them.
fn resolve(plan: &AuditPlan) -> Result<(Option<u32>, UnwindMode)> {
    let existing_pid = match &plan.target {
        TargetSpec::Pid(pid) => Some(target::describe(*pid)?.pid),
        TargetSpec::Name(name) => Some(target::resolve_name(name)?),
        TargetSpec::Launch { .. } => None,
    };
    let exe = match (&plan.target, existing_pid) {
        (_, Some(pid)) => target::describe(pid).map(|i| PathBuf::from(i.exe)).ok(),
        (TargetSpec::Launch { program, .. }, None) => resolve_program(program),
        _ => None,
    };
    Ok((existing_pid, choose_unwind_mode(plan.unwind, exe.as_deref())))
}

/// The target, the kernel session and the started collectors.
struct Probes {
    session: KernelSession,
    collectors: Vec<Box<dyn Collector>>,
    unwinder: SharedUnwinder,
    pid: u32,
    info: TargetInfo,
    /// The file the target runs, as its frames are read from (see
    /// `target::exe_file`: in another mount namespace, or replaced on disk).
    exe_file: PathBuf,
    out_dir: PathBuf,
    /// Declared after the service so that the database outlives it.
    launched: Option<Launched>,
    private_db: Option<PrivatePostgres>,
    /// The memory profile's default-mode recording kind, once decided.
    memory_recording: Option<crate::memory::RecordingKind>,
    /// The budget's latency side (windows only: see `overhead::P99Watch`).
    p99_watch: Option<crate::overhead::P99Watch>,
}

impl Probes {
    /// Loads the programs, resolves or launches the target, starts every
    /// collector the plan asks for.
    async fn start(plan: &AuditPlan, existing_pid: Option<u32>, unwind: UnwindMode) -> Result<Probes> {
        let wants_async = plan.profiles.contains(&Profile::Async);
        let mut session = KernelSession::load(Filter::ListedPids, unwind, plan.offcpu_min)?;
        // Programs are attached before the pid is registered, so a launched
        // command is sampled from its first scheduled tick. The async
        // analysis needs CPU samples too (long polls, task breakdown).
        let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
        if plan.profiles.contains(&Profile::Cpu) || wants_async {
            collectors.push(CpuSampling::start(&mut session, plan.frequency_hz, unwind == UnwindMode::Dwarf)?);
        }
        if wants_async {
            collectors.push(OffCpu::start(&mut session)?);
        }
        let private_db = if plan.private_database { Some(start_private_database().await?) } else { None };
        let (pid, launched) = match (&plan.target, existing_pid) {
            (_, Some(pid)) => (pid, None),
            (TargetSpec::Launch { program, args }, None) => {
                let env: Vec<(String, String)> = private_db.iter().map(|db| ("DATABASE_URL".to_string(), db.url())).collect();
                let child = target::launch(program, args, &env)?;
                (child.pid(), Some(child))
            }
            _ => unreachable!("every non-launch target resolved to a pid in `resolve`"),
        };
        session.add_target(pid)?;
        // One table cache and one unwinder for the process, shared by every
        // collector that unwinds its stacks (CPU/off-CPU, database, memory).
        let unwinder = SharedUnwinder::new(pid);
        if unwind == UnwindMode::Dwarf || wants_async {
            let collector = session.stack_copy_collector(&unwinder)?;
            collectors.push(Box::new(StackCopy { collector, cpu: unwind == UnwindMode::Dwarf }));
        }
        if plan.profiles.contains(&Profile::Database) {
            let explicit = plan.requested_profile == Profile::Database;
            let db = DatabaseCollector::start(&mut session, &unwinder, plan.database_url.as_deref(), explicit).await?;
            collectors.push(Box::new(Database(db)));
        }
        let info = target::describe(pid).unwrap_or_else(|_| TargetInfo { pid, name: launched_name(&plan.target), exe: String::new() });
        let exe_file = target::exe_file(pid).unwrap_or_else(|| PathBuf::from(&info.exe));
        if let Some(spec) = &plan.load {
            wait_until_ready(spec, pid, plan.ready_timeout).await?;
        }
        let out_dir = plan.out_dir.clone().unwrap_or_else(|| default_out_dir(&info.name, SystemTime::now()));
        fs::create_dir_all(&out_dir).map_err(|e| Error::output(&out_dir, e))?;
        eprintln!(
            "perf-audit: auditing {} (pid {pid}) for {}, profile {}, CPU sampling at {} Hz, unwinding with {}",
            info.name,
            humantime::format_duration(plan.duration),
            plan.requested_profile.as_str(),
            plan.frequency_hz,
            unwind.describe()
        );
        if wants_async && console_listening(&plan.console) {
            collectors.push(Console::start(&plan.console));
        }
        Ok(Probes { session, collectors, unwinder, pid, info, exe_file, out_dir, launched, private_db, memory_recording: None, p99_watch: None })
    }

    /// Drives the load beside collection, waits for the end, finishes every
    /// collector and detaches everything.
    async fn collect(mut self, plan: &AuditPlan, symbolizer: &StackSymbolizer) -> Result<Collection> {
        let (stop_load, load_stopped) = tokio::sync::oneshot::channel::<()>();
        // The load's clock (its latency series), for the health guard's
        // alignment of collectors' periods.
        let load_start_ns = monotonic_ns();
        let live = crate::load::LiveLatency::default();
        let load_task = plan.load.as_ref().map(|spec| {
            let load_plan = LoadPlan::new(spec.scenario.clone(), spec.rps, plan.duration).expect("validated when the plan was built");
            let endpoints = spec.scenario.requests.len();
            eprintln!("perf-audit: driving {} rps of open-loop load ({endpoints} endpoint{})", spec.rps, if endpoints == 1 { "" } else { "s" });
            tokio::spawn(load::run_live(load_plan, load_stopped, Some(live.clone())))
        });
        if plan.profiles.contains(&Profile::Memory) {
            let memory = MemoryCollector::start(&self.unwinder, &self.exe_file, plan.memory).await?;
            self.memory_recording = memory.recording();
            // The budget's latency side needs the load and a budget.
            if plan.load.is_some() && plan.max_overhead_pct.is_some() && memory.recording() == Some(crate::memory::RecordingKind::Windows) {
                self.p99_watch = Some(crate::overhead::P99Watch::new(live.clone(), load_start_ns, memory.probed_periods()));
            }
            self.collectors.push(Box::new(Memory(memory)));
        }
        let pid = self.pid;
        let cpu_start = target::cpu_seconds(pid);
        let start_ns = monotonic_ns();
        // The agent off the target's cores while it is measured
        // (`crate::priority`); back to normal for the health sample and the
        // report.
        let mut priority = crate::priority::AgentPriority::new(crate::priority::Level::from_env());
        let lowered = priority.apply();
        if lowered > 0 {
            eprintln!("perf-audit: agent threads {} while the target is measured ({lowered} threads; set PERF_AUDIT_AGENT_PRIORITY=normal to keep them as they are)", priority.level().describe());
        }
        let mut collected = collect(plan, &mut self.session, pid, &mut self.collectors, &mut priority, self.memory_recording, self.p99_watch.take()).await;
        collected.start_ns = start_ns;
        let cpu_seconds = cpu_start.zip(target::cpu_seconds(pid)).map(|(a, b)| b - a);
        let _ = stop_load.send(());
        let load = match load_task {
            Some(task) => Some(task.await.map_err(|e| Error::internal(format!("the load generator panicked: {e}")))?),
            None => None,
        };
        if let Some(result) = &load {
            eprintln!("perf-audit: {}", load::summary_line(result));
        }
        let mut raw = RawEvidence::default();
        let mut collectors = std::mem::take(&mut self.collectors);
        collectors.sort_by_key(|c| c.finish_order());
        let mut cx = Finish { session: &mut self.session, maps: &mut collected.maps, pid, symbolizer, raw: &mut raw };
        finish_all(collectors, &mut cx).await?;
        priority.restore();
        if let Some(m) = &raw.memory {
            let s = |ns: u64| (ns as f64 - load_start_ns as f64) / 1e9;
            collected.recording_periods.push(crate::health::CollectorPeriods {
                collector: "memory profile (allocator probes attached)".to_string(),
                periods: m.probed_periods_ns.iter().map(|(a, b)| (s(*a), s(*b))).collect(),
            });
        }
        collected.counters = self.session.counters()?;
        if priority.level() != crate::priority::Level::Normal {
            let c = &collected.counters;
            collected.overhead.agent_priority = Some(priority.level().describe().to_string());
            collected.overhead.drops = [
                ("CPU samples", c.cpu_samples, c.cpu_samples_dropped_ring_full),
                ("off-CPU samples", c.offcpu_samples, c.offcpu_dropped_ring_full),
                ("database writes", c.db_writes, c.db_writes_dropped_ring_full),
            ]
            .into_iter()
            .filter(|(_, n, d)| n + d > 0)
            .map(|(ring, records, dropped)| crate::overhead::RingDrops { ring: ring.to_string(), records, dropped })
            .collect();
        }
        collected.unwind_tables = self
            .unwinder
            .table_parses()
            .into_iter()
            .map(|(object, parses)| UnwindTableParses { object: object.display().to_string(), parses })
            .collect();
        // Detach everything before the (slower) analysis; the service stops
        // before its private database.
        let Probes { session, launched, private_db, .. } = self;
        drop(session);
        // The health guard's unprobed sample: the same load, every probe gone.
        let unprobed = match &plan.load {
            Some(spec) if target::is_alive(pid) => Some(health_sample(spec).await?),
            _ => None,
        };
        drop(launched);
        drop(private_db);
        Ok((raw, collected, cpu_seconds, load, unprobed))
    }
}

/// How long the health guard measures the service after the probes detach.
const HEALTH_SAMPLE: Duration = Duration::from_secs(3);

/// The audit's load for [`HEALTH_SAMPLE`], after the probes detach.
async fn health_sample(spec: &crate::plan::LoadSpec) -> Result<LoadResult> {
    eprintln!(
        "perf-audit: measuring the service for {} under the same load after the probes detach (health guard)",
        humantime::format_duration(HEALTH_SAMPLE)
    );
    let plan = LoadPlan::new(spec.scenario.clone(), spec.rps, HEALTH_SAMPLE).expect("validated when the plan was built");
    let unprobed = load::run(plan, std::future::pending::<()>()).await;
    eprintln!("perf-audit: without probes: {}", load::summary_line(&unprobed));
    Ok(unprobed)
}

/// What `Probes::collect` returns: the raw evidence, the collection's
/// figures, the target's CPU seconds, the audit's load and the unprobed one.
type Collection = (RawEvidence, Collected, Option<f64>, Option<LoadResult>, Option<LoadResult>);

/// A throwaway database for a launched service (demo, tests).
async fn start_private_database() -> Result<PrivatePostgres> {
    eprintln!("perf-audit: starting a private PostgreSQL (loopback, pg_stat_statements preloaded)");
    let db = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .map_err(|e| Error::internal(format!("private PostgreSQL start panicked: {e}")))??;
    eprintln!("perf-audit: private PostgreSQL ready on 127.0.0.1:{}", db.port());
    Ok(db)
}

/// Symbolizes what the collectors gathered: the profiles and sections of
/// the audit's evidence (the rest is filled by the caller).
fn symbolize(plan: &AuditPlan, info: &TargetInfo, exe: &Path, raw: RawEvidence, maps: &MapsSnapshot, symbolizer: &StackSymbolizer) -> AuditEvidence {
    eprintln!("perf-audit: symbolizing {} distinct stacks", raw.cpu.len() + raw.offcpu.len());
    let cpu = symbolizer.cpu_profile(&raw.cpu, maps, exe);
    let async_runtime = plan.profiles.contains(&Profile::Async).then(|| {
        let offcpu = symbolizer.cpu_profile(&raw.offcpu, maps, exe);
        AsyncEvidence {
            threads: thread_times(info.pid, &raw.sched_totals, &cpu, &offcpu),
            offcpu,
            samples: raw
                .records
                .iter()
                .map(|r| TimedSample { tid: r.tid, ts_ns: r.ts_ns, oncpu_run_ns: r.oncpu_run_ns, preempted_ns: r.preempted_ns, stack: r.stack })
                .collect(),
            long_poll: plan.long_poll,
            offcpu_min: plan.offcpu_min,
            console_address: plan.console.clone(),
            console: raw.console,
            tracepoints: raw.offcpu_tracepoints.unwrap_or_default().to_string(),
        }
    });
    AuditEvidence {
        cpu_sample_times: raw.records.iter().map(|r| (r.tid, r.ts_ns)).collect(),
        cpu,
        async_runtime,
        memory: raw.memory.as_ref().map(|m| crate::memory::build_section(m, symbolizer, exe)),
        database: raw.database,
        ..AuditEvidence::default()
    }
}

struct Collected {
    elapsed: Duration,
    end_reason: EndReason,
    /// `SIGINT` or `SIGTERM` when a signal ended the audit.
    end_signal: Option<String>,
    target_exec: Option<TargetExec>,
    maps: MapsSnapshot,
    last_rss: u64,
    peak_rss: u64,
    /// CLOCK_MONOTONIC at the start, the clock of the samples' time stamps.
    start_ns: u64,
    /// Read once every collector finished.
    counters: Counters,
    unwind_tables: Vec<UnwindTableParses>,
    /// The overhead meter's figures and back-offs.
    overhead: crate::overhead::OverheadSection,
    /// Collectors' recording periods on the load's clock.
    recording_periods: Vec<crate::health::CollectorPeriods>,
}

/// Waits for the duration, Ctrl-C/SIGTERM, or the target's exit, keeping a
/// snapshot of the target's memory maps and showing progress.
async fn collect(
    plan: &AuditPlan,
    session: &mut KernelSession,
    pid: u32,
    collectors: &mut [Box<dyn Collector>],
    priority: &mut crate::priority::AgentPriority,
    memory_recording: Option<crate::memory::RecordingKind>,
    mut p99_watch: Option<crate::overhead::P99Watch>,
) -> Collected {
    use tokio::signal::unix::{SignalKind, signal};

    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + plan.duration;
    let mut maps = MapsSnapshot::default();
    let _ = maps.refresh(pid);
    let mut last_maps = Instant::now();
    let mut last_rss = target::rss_bytes(pid).unwrap_or(0);
    let mut peak_rss = last_rss;
    let progress = progress_bar(plan);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let mut drain = tokio::time::interval(DRAIN_INTERVAL);
    // The overhead meter and budget (`crate::overhead`), read every second.
    let memory = plan.profiles.contains(&Profile::Memory);
    // Continuous recording has no period to alias with.
    let windowed_memory = memory && plan.memory == crate::memory::MemoryMode::Default && memory_recording != Some(crate::memory::RecordingKind::Continuous);
    let mut meter = OverheadMeter::start(pid, plan.max_overhead_pct, plan.keep_precise_memory && memory, !windowed_memory);
    let mut meter_tick = tokio::time::interval(Duration::from_secs(1));
    meter_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // Whether the target replaces its program mid-audit (`target::ExecWatch`).
    let exec_watch = target::ExecWatch::new(pid);
    let mut target_exec = None;

    let (end_reason, end_signal) = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break (EndReason::Duration, None),
            _ = &mut ctrl_c => break (EndReason::Interrupted, Some("SIGINT")),
            _ = async { match sigterm.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                break (EndReason::Interrupted, Some("SIGTERM"))
            }
            _ = drain.tick() => {
                collectors.iter_mut().for_each(|c| c.drain(&mut maps));
                meter.poll();
            }
            _ = meter_tick.tick() => {
                // Threads started since inherit their creator's priority.
                priority.apply();
                if let Some(pct) = meter.tick() {
                    back_off(&mut meter, pct, session, collectors, plan.keep_precise_memory);
                }
                if let Some(evidence) = p99_watch.as_mut().and_then(|w| w.check(monotonic_ns())) {
                    for c in collectors.iter_mut().filter(|c| c.name() == "memory") {
                        if let Some(what) = c.back_off(session) {
                            eprintln!("perf-audit: backing off the memory profile: {evidence}");
                            meter.backed_off("memory", format!("{what}, because {evidence}"), 0.0);
                        }
                    }
                }
            }
            _ = tick.tick() => {
                if !target::is_alive(pid) {
                    break (EndReason::TargetExited, None);
                }
                if target_exec.is_none()
                    && let Some(exe_after) = exec_watch.as_ref().and_then(|w| w.exec_since(pid))
                {
                    let exec = TargetExec {
                        after_s: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                        exe_before: exec_watch.as_ref().map(|w| w.exe().to_string()).unwrap_or_default(),
                        exe_after,
                    };
                    eprintln!("perf-audit: {}", exec.note());
                    target_exec = Some(exec);
                }
                if let Some(rss) = target::rss_bytes(pid) {
                    last_rss = rss;
                    peak_rss = peak_rss.max(rss);
                }
                if last_maps.elapsed() >= MAPS_REFRESH {
                    let _ = maps.refresh(pid);
                    last_maps = Instant::now();
                }
                if let Some(bar) = &progress {
                    let samples = session.counters().map(|c| c.cpu_samples).unwrap_or(0);
                    bar.set_position(start.elapsed().as_millis() as u64);
                    bar.set_message(format!("{samples} samples"));
                }
            }
        }
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    match end_reason {
        EndReason::TargetExited => eprintln!(
            "perf-audit: the target exited after {:.1} s; writing a partial report",
            start.elapsed().as_secs_f64()
        ),
        EndReason::Interrupted => {
            eprintln!("perf-audit: interrupted by {}; writing a partial report", end_signal.unwrap_or("a signal"))
        }
        EndReason::Duration => {}
    }
    let end_signal = end_signal.map(String::from);
    Collected { elapsed: start.elapsed(), end_reason, end_signal, target_exec, maps, last_rss, peak_rss, start_ns: 0, counters: Counters::default(), unwind_tables: Vec::new(), overhead: meter.section(), recording_periods: Vec::new() }
}

/// Over budget: the first collector in [`BACK_OFF_ORDER`] with something
/// left to switch off does so; if none has, the report says the budget
/// could not be kept.
fn back_off(meter: &mut OverheadMeter, pct: f64, session: &mut KernelSession, collectors: &mut [Box<dyn Collector>], keep_precise_memory: bool) {
    for name in BACK_OFF_ORDER.into_iter().filter(|n| !(keep_precise_memory && *n == "memory")) {
        for c in collectors.iter_mut().filter(|c| c.name() == name) {
            if let Some(what) = c.back_off(session) {
                meter.backed_off(name, what, pct);
                return;
            }
        }
    }
    meter.exhausted(pct, keep_precise_memory);
}

fn progress_bar(plan: &AuditPlan) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !plan.show_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(plan.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("collecting [{bar:30}] {elapsed}/{duration} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    Some(bar)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// time-stamps the samples.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::output(path, e))
}

fn launched_name(spec: &TargetSpec) -> String {
    match spec {
        TargetSpec::Launch { program, .. } => {
            Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| program.clone())
        }
        TargetSpec::Name(n) => n.clone(),
        TargetSpec::Pid(p) => format!("pid-{p}"),
    }
}

/// Per-thread scheduler time with names (from the samples, else /proc).
fn thread_times(
    pid: u32,
    totals: &[(u32, perf_audit_common::ThreadSchedTotals)],
    cpu: &CpuProfile,
    offcpu: &CpuProfile,
) -> Vec<ThreadTime> {
    let names: std::collections::HashMap<u32, String> =
        cpu.stacks.iter().chain(offcpu.stacks.iter()).map(|s| (s.tid, s.thread.clone())).collect();
    totals
        .iter()
        .map(|(tid, t)| ThreadTime {
            tid: *tid,
            name: names.get(tid).cloned().unwrap_or_else(|| {
                fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
            }),
            oncpu_ns: t.oncpu_ns,
            blocked_ns: t.blocked_ns,
            runqueue_ns: t.runqueue_ns,
            max_run_ns: t.max_oncpu_run_ns,
            short_blocks: t.short_blocks,
            short_blocked_ns: t.short_blocked_ns,
        })
        .collect()
}

/// Whether the target runs console-subscriber at `addr`.
fn console_listening(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
        .unwrap_or(false)
}

/// Waits until every host the load targets accepts TCP connections (a
/// launched service may take a while to seed its database), or fails with a
/// clear error when it does not in time or when the target dies first.
async fn wait_until_ready(spec: &crate::plan::LoadSpec, pid: u32, timeout: Duration) -> Result<()> {
    let mut authorities: Vec<String> = spec
        .scenario
        .requests
        .iter()
        .filter_map(|r| r.url.authority().map(|a| {
            let port = a.port_u16().unwrap_or(80);
            format!("{}:{port}", a.host())
        }))
        .collect();
    authorities.sort();
    authorities.dedup();
    let deadline = Instant::now() + timeout;
    for authority in &authorities {
        let mut announced = false;
        loop {
            if tokio::net::TcpStream::connect(authority.as_str()).await.is_ok() {
                break;
            }
            if !target::is_alive(pid) {
                return Err(Error::new(
                    crate::error::ErrorKind::LaunchFailed,
                    format!("the target exited before {authority} accepted connections"),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    crate::error::ErrorKind::Usage,
                    format!(
                        "nothing accepts connections on {authority} after {}: check the --load URL, or raise --ready-timeout",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            if !announced {
                eprintln!("perf-audit: waiting for {authority} to accept connections");
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Up to 7 lines around `line` of `file`, when the file is readable here.
fn source_excerpt(file: Option<&str>, line: Option<u32>) -> Option<crate::findings::SourceExcerpt> {
    let (file, line) = (file?, line?);
    let text = fs::read_to_string(file).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let index = (line as usize).checked_sub(1).filter(|i| *i < lines.len())?;
    let first = index.saturating_sub(3);
    let last = (index + 3).min(lines.len() - 1);
    let mut excerpt = String::new();
    for (i, l) in lines[first..=last].iter().enumerate() {
        let n = first + i + 1;
        let marker = if n == line as usize { ">" } else { " " };
        excerpt.push_str(&format!("{marker}{n:>5} | {l}\n"));
    }
    Some(crate::findings::SourceExcerpt { file: file.to_string(), first_line: first as u32 + 1, text: excerpt })
}

/// `auto` picks frame pointers only when the binary keeps them.
fn choose_unwind_mode(choice: UnwindChoice, exe: Option<&Path>) -> UnwindMode {
    match choice {
        UnwindChoice::FramePointer => UnwindMode::FramePointer,
        UnwindChoice::Dwarf => UnwindMode::Dwarf,
        UnwindChoice::Auto => match exe {
            Some(exe) if crate::unwind::has_frame_pointers(exe) => UnwindMode::FramePointer,
            _ => UnwindMode::Dwarf,
        },
    }
}

/// The file `Command` would run for `program` (PATH lookup for bare names).
fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `perf-audit-<service>-<UTC timestamp>`, e.g. `perf-audit-svc-20261124T212300Z`.
pub fn default_out_dir(service: &str, at: SystemTime) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(at).to_string().replace(['-', ':'], "");
    let service: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    PathBuf::from(format!("perf-audit-{service}-{stamp}"))
}

fn rerun_command(plan: &AuditPlan, info: &TargetInfo) -> String {
    let profile = plan.requested_profile.as_str();
    let duration = humantime::format_duration(plan.duration);
    match &plan.target {
        TargetSpec::Launch { program, args } => {
            format!("sudo perf-audit-agent {profile} --duration {duration} -- {program} {}", args.join(" "))
                .trim_end()
                .to_string()
        }
        _ => format!("sudo perf-audit-agent {} {profile} --duration {duration}", info.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_out_dir_names_service_and_utc_time() {
        // 2026-11-24T21:23:00Z
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_555_380);
        let dir = default_out_dir("user service", at);
        assert_eq!(dir, PathBuf::from("perf-audit-user_service-20261124T212300Z"));
    }
}
