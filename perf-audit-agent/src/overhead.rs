//! What the audit costs its target, measured while it runs, and the
//! overhead budget (`--max-overhead`).
//!
//! **What is measured, every second.** The kernel's own statistics of our
//! BPF programs (`BPF_ENABLE_STATS`: run time and run count of every
//! program this process holds, read from `/proc/self/fdinfo`), grouped by
//! the collector that owns them. The statistics are not free: while they
//! are on, the kernel reads the clock twice around every run of every BPF
//! program on the machine and updates per-CPU counters (measured here: ~55
//! ns a run, more than a filtered-out program run). So they are on for
//! [`STATS_ON`] in every [`STATS_CYCLE`], and every second is charged the
//! last measured stretch's rate (a back-off starts a measured stretch at
//! once). Not with the memory profile's default mode: its allocator probes
//! record in 100 ms windows every 5 s, a period a sampled stretch would
//! alias with (a stretch over a window charges every second a window's
//! cost; one between windows, nothing), so they stay on. Also measured:
//! the uprobe traps the allocator probes cost on top of their programs
//! (hits x the trap cost measured with `cargo xtask bench memory`: 0.84
//! µs for an entry probe, +0.5 µs for a return
//! probe; see ARCHITECTURE.md); the agent's own CPU time; the target's CPU
//! time. BPF programs and traps run on the target's threads (uprobes, its
//! syscalls) or interrupt whatever runs (the CPU sampler, `sched_switch`),
//! so they are what slows the target directly: the budget is their sum as
//! a share of the CPU time the target used (at least a tenth of a core: on
//! a nearly idle target the absolute cost is what matters, 3% of 0.1 core
//! is 3 ms a second). The agent's own CPU is measured and shown beside it;
//! it competes with the target only when the machine has no idle core, so
//! it is not in the budget.
//!
//! **Back-off.** When the cost over the last [`WINDOW`] passes the budget,
//! the engine switches off the costliest optional work in a stated order:
//! the allocator probes first (memory), then the database wire tracer
//! (pg_stat_statements is still read). CPU sampling is never reduced: its
//! rate is what the report's time figures are computed from. Each back-off
//! is reported with when and why; after one, the meter waits a whole
//! window before judging again.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

pub use perf_audit_analysis::report::schema::{BackOff, CollectorCost, OverheadSection, RingDrops};

/// The cost is judged over this many seconds (a single second of a
/// bursty service is noise).
pub const WINDOW: Duration = Duration::from_secs(3);
/// The kernel's BPF statistics are on for this long (ended by
/// [`OverheadMeter::poll`], called every 100 ms)...
const STATS_ON: Duration = Duration::from_millis(200);
/// ...in every this long: 4% of the time.
const STATS_CYCLE: Duration = Duration::from_secs(5);
/// The denominator's floor, in cores: see the module doc.
const MIN_TARGET_CORES: f64 = 0.1;
/// Trap cost of an entry uprobe hit, on top of its program (µs).
const UPROBE_TRAP_US: f64 = 0.84;
/// Extra cost of a return probe hit (µs).
const URETPROBE_TRAP_US: f64 = 0.5;

const ALLOCATOR_PROBES: &str = "allocator probes (memory)";

/// `prog_type` numbers in fdinfo (`enum bpf_prog_type`).
const BPF_PROG_TYPE_KPROBE: u32 = 2;

#[derive(Clone, Copy, Default)]
struct Program {
    run_ns: u64,
    runs: u64,
    kprobe: bool,
}

#[derive(Clone)]
struct Reading {
    at: Instant,
    agent_cpu_s: f64,
    target_cpu_s: f64,
}

/// The kernel's statistics of our programs at one moment.
#[derive(Clone)]
struct ProgramsReading {
    at: Instant,
    programs: HashMap<u32, Program>,
}

/// One second's costs, per collector, in CPU seconds.
#[derive(Clone, Default)]
struct Interval {
    seconds: f64,
    by_collector: BTreeMap<&'static str, (f64, u64)>,
    agent_cpu_s: f64,
    target_cpu_s: f64,
}

impl Interval {
    fn kernel_s(&self) -> f64 {
        self.by_collector.values().map(|(s, _)| s).sum()
    }

    /// The cost the budget judges: without the precise allocator probes
    /// when the default budget keeps them (switching the database off for
    /// a cost it cannot remove would lose data and save nothing).
    fn judged_s(&self, exempt_allocator_probes: bool) -> f64 {
        self.by_collector.iter().filter(|(k, _)| !(exempt_allocator_probes && **k == ALLOCATOR_PROBES)).map(|(_, (s, _))| s).sum()
    }
}

pub struct OverheadMeter {
    /// Statistics stay on while this is open.
    stats: Option<OwnedFd>,
    /// When the current statistics cycle began (statistics on).
    cycle_start: Instant,
    /// The programs' figures when the statistics went on.
    stretch_start: Option<ProgramsReading>,
    /// The programs' figures at the end of the last stretch (since load:
    /// `PERF_AUDIT_DEBUG_OVERHEAD`).
    last_programs: Option<ProgramsReading>,
    /// The last measured stretch's cost per second of each collector (CPU
    /// seconds, program runs): the estimate while statistics are off.
    rates: BTreeMap<&'static str, (f64, f64)>,
    /// Seconds the statistics were on, in total.
    stats_on_s: f64,
    /// Statistics on only [`STATS_ON`] in every [`STATS_CYCLE`]; `false`
    /// keeps them on (a collector with a period of its own: sampling
    /// stretches would alias with it).
    sampled: bool,
    pid: u32,
    started: Instant,
    budget_pct: Option<f64>,
    names: HashMap<u32, String>,
    last: Option<Reading>,
    recent: VecDeque<Interval>,
    total: Interval,
    peak_window_pct: f64,
    judge_after: Instant,
    back_offs: Vec<BackOff>,
    /// The default budget keeps `--memory precise` on: its cost is not
    /// judged.
    exempt_allocator_probes: bool,
    /// Why the kernel statistics are not available (old kernel, no
    /// privilege): the section says so instead of showing zeros.
    unavailable: Option<String>,
}

impl OverheadMeter {
    /// Turns the kernel's BPF statistics on and takes the first reading.
    /// `budget_pct`: `None` measures only. `sampled`: see the module doc.
    pub fn start(pid: u32, budget_pct: Option<f64>, exempt_allocator_probes: bool, sampled: bool) -> OverheadMeter {
        let (stats, unavailable) = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => (Some(fd), None),
            Err(e) => (None, Some(format!("the kernel's BPF run-time statistics could not be enabled ({e}); the kernel-side cost is not measured"))),
        };
        let mut meter = OverheadMeter {
            stats,
            cycle_start: Instant::now(),
            stretch_start: None,
            last_programs: None,
            sampled,
            rates: BTreeMap::new(),
            stats_on_s: 0.0,
            pid,
            started: Instant::now(),
            budget_pct,
            names: HashMap::new(),
            last: None,
            recent: VecDeque::new(),
            total: Interval::default(),
            peak_window_pct: 0.0,
            judge_after: Instant::now() + WINDOW,
            back_offs: Vec::new(),
            exempt_allocator_probes,
            unavailable,
        };
        meter.last = meter.read();
        if meter.stats.is_some() {
            meter.stretch_start = meter.read_programs();
        }
        meter
    }

    fn read(&self) -> Option<Reading> {
        let target_cpu_s = crate::target::cpu_seconds(self.pid)?;
        let agent_cpu_s = crate::target::cpu_seconds(std::process::id()).unwrap_or(0.0);
        Some(Reading { at: Instant::now(), agent_cpu_s, target_cpu_s })
    }

    fn read_programs(&mut self) -> Option<ProgramsReading> {
        let mut programs = HashMap::new();
        for entry in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
            let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok());
            let (Some(id), Some(run_ns), Some(runs)) = (field("prog_id:"), field("run_time_ns:"), field("run_cnt:")) else { continue };
            let kprobe = field("prog_type:") == Some(u64::from(BPF_PROG_TYPE_KPROBE));
            programs.insert(id as u32, Program { run_ns, runs, kprobe });
        }
        if programs.keys().any(|id| !self.names.contains_key(id)) {
            for info in aya::programs::loaded_programs().flatten() {
                if programs.contains_key(&info.id()) {
                    self.names.insert(info.id(), info.name_as_str().unwrap_or("?").to_string());
                }
            }
        }
        Some(ProgramsReading { at: Instant::now(), programs })
    }

    /// Ends a measured stretch once it has lasted [`STATS_ON`] (its rates
    /// stand for the cost until the next one), and starts the next one
    /// [`STATS_CYCLE`] after the last began. Call often (every 100 ms).
    pub fn poll(&mut self) {
        if !self.sampled {
            return;
        }
        if self.stats.is_none() {
            if self.cycle_start.elapsed() >= STATS_CYCLE {
                self.measure_now();
            }
            return;
        }
        if self.cycle_start.elapsed() >= STATS_ON {
            self.end_stretch();
            self.stats = None;
        }
    }

    /// Takes the rates of the stretch that began at `stretch_start`; the
    /// reading that ends it is kept in `last_programs`.
    fn end_stretch(&mut self) {
        let Some(end) = self.read_programs() else { return };
        let Some(start) = self.stretch_start.take() else {
            self.last_programs = Some(end);
            return;
        };
        let seconds = end.at.duration_since(start.at).as_secs_f64();
        let mut cost: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
        for (id, p) in &end.programs {
            let before = start.programs.get(id).copied().unwrap_or_default();
            let (ns, runs) = (p.run_ns.saturating_sub(before.run_ns), p.runs.saturating_sub(before.runs));
            let name = self.names.get(id).map(String::as_str).unwrap_or("?");
            let trap_us = if p.kprobe { if name.starts_with("mem_alloc_ret") { URETPROBE_TRAP_US } else { UPROBE_TRAP_US } } else { 0.0 };
            let e = cost.entry(collector_of(name)).or_default();
            e.0 += ns as f64 / 1e9 + runs as f64 * trap_us / 1e6;
            e.1 += runs as f64;
        }
        if seconds > 0.0 {
            self.rates = cost.into_iter().map(|(k, (s, n))| (k, (s / seconds, n / seconds))).collect();
            self.stats_on_s += seconds;
        }
        self.last_programs = Some(end);
    }

    /// Takes a reading (call about once a second). Returns the window's
    /// cost when it passes the budget and it is time to judge again.
    pub fn tick(&mut self) -> Option<f64> {
        let now = self.read()?;
        let last = self.last.replace(now.clone())?;
        let mut interval = Interval {
            seconds: now.at.duration_since(last.at).as_secs_f64(),
            agent_cpu_s: (now.agent_cpu_s - last.agent_cpu_s).max(0.0),
            target_cpu_s: (now.target_cpu_s - last.target_cpu_s).max(0.0),
            ..Default::default()
        };
        if !self.sampled && self.stats.is_some() {
            // Statistics always on: this second is its own stretch, and
            // its end reading starts the next one.
            self.end_stretch();
            self.stretch_start = self.last_programs.clone();
        }
        // Every second is charged the last measured stretch's rates.
        for (k, (s, n)) in &self.rates {
            interval.by_collector.insert(k, (s * interval.seconds, (n * interval.seconds).round() as u64));
        }
        self.total.seconds += interval.seconds;
        self.total.agent_cpu_s += interval.agent_cpu_s;
        self.total.target_cpu_s += interval.target_cpu_s;
        for (k, (s, n)) in &interval.by_collector {
            let e = self.total.by_collector.entry(k).or_default();
            e.0 += s;
            e.1 += n;
        }
        self.recent.push_back(interval);
        while self.recent.iter().map(|i| i.seconds).sum::<f64>() > WINDOW.as_secs_f64() + 0.5 {
            self.recent.pop_front();
        }
        let covered: f64 = self.recent.iter().map(|i| i.seconds).sum();
        if covered + 0.5 < WINDOW.as_secs_f64() {
            return None;
        }
        let kernel: f64 = self.recent.iter().map(|i| i.judged_s(self.exempt_allocator_probes)).sum();
        let target: f64 = self.recent.iter().map(|i| i.target_cpu_s).sum();
        let pct = share_pct(kernel, target, covered);
        self.peak_window_pct = self.peak_window_pct.max(pct);
        let budget = self.budget_pct?;
        (pct > budget && Instant::now() >= self.judge_after).then_some(pct)
    }

    /// Starts a measured stretch now (a new cycle).
    fn measure_now(&mut self) {
        if self.unavailable.is_some() || self.stats.is_some() {
            return;
        }
        if let Ok(fd) = aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            self.stats = Some(fd);
            self.cycle_start = Instant::now();
            // The stretch starts now: the counters were frozen since the
            // last one.
            self.stretch_start = self.read_programs();
        }
    }

    /// Records that `collector` backed off (`what`), at a window cost of
    /// `pct`; the next judgement waits a whole window.
    pub fn backed_off(&mut self, collector: &str, what: String, pct: f64) {
        let budget = self.budget_pct.unwrap_or(0.0);
        eprintln!("perf-audit: the audit cost the target {pct:.1}% of its CPU over {} s (budget {budget}%): {what}", WINDOW.as_secs());
        self.back_offs.push(BackOff {
            at_s: round2(self.started.elapsed().as_secs_f64()),
            collector: collector.to_string(),
            action: what,
            cost_pct: round2(pct),
        });
        self.judge_after = Instant::now() + WINDOW;
        self.recent.clear();
        // The rates include what was just switched off: measure again.
        self.rates.clear();
        self.measure_now();
    }

    /// The budget was passed and nothing is left to switch off.
    pub fn exhausted(&mut self, pct: f64, kept_precise_memory: bool) {
        if !self.back_offs.iter().any(|b| b.collector == "none") {
            let kept = if kept_precise_memory { "; the precise allocator probes stay on: the default budget leaves the exact mode asked for (give --max-overhead to include them)" } else { "" };
            self.backed_off("none", format!("nothing optional is left to switch off (CPU sampling keeps its rate){kept}"), pct);
        }
        self.judge_after = Instant::now() + Duration::from_secs(3600);
    }

    pub fn section(&self) -> OverheadSection {
        if std::env::var_os("PERF_AUDIT_DEBUG_OVERHEAD").is_some()
            && let Some(last) = &self.last_programs
        {
            // Per program, over the measured stretches: runs (all
            // processes: the filters run first), run time, time per run.
            for (id, p) in &last.programs {
                let name = self.names.get(id).map_or("?", String::as_str);
                eprintln!("perf-audit: overhead: {name:<22} {:>10} runs {:>9.1} ms {:>7.0} ns/run", p.runs, p.run_ns as f64 / 1e6, p.run_ns as f64 / p.runs.max(1) as f64);
            }
        }
        let t = &self.total;
        let collectors = t
            .by_collector
            .iter()
            .map(|(name, (s, runs))| CollectorCost {
                collector: name.to_string(),
                cpu_ms_per_s: round2(s * 1e3 / t.seconds.max(1e-9)),
                target_cpu_pct: round2(share_pct(*s, t.target_cpu_s, t.seconds)),
                program_runs: *runs,
            })
            .collect();
        OverheadSection {
            budget_pct: self.budget_pct,
            measured_s: round2(t.seconds),
            target_cores: round2(t.target_cpu_s / t.seconds.max(1e-9)),
            kernel_pct: round2(share_pct(t.kernel_s(), t.target_cpu_s, t.seconds)),
            peak_window_pct: round2(self.peak_window_pct),
            agent_cores: round2(t.agent_cpu_s / t.seconds.max(1e-9)),
            collectors,
            back_offs: self.back_offs.clone(),
            unavailable: self.unavailable.clone(),
            rule: format!(
                "cost = our BPF programs' run time (kernel statistics, {}) + uprobe traps ({UPROBE_TRAP_US} µs per entry hit, +{URETPROBE_TRAP_US} µs per return hit), as a share of the target's CPU time (at least {MIN_TARGET_CORES} core), judged over {} s; back-off order: allocator probes, then the database wire tracer{}",
                if self.sampled {
                    format!(
                        "on {} ms in every {} s: they cost every program run while on; {:.1} s measured, every second charged the last measured stretch's rate",
                        STATS_ON.as_millis(),
                        STATS_CYCLE.as_secs(),
                        self.stats_on_s
                    )
                } else {
                    "on throughout: the memory profile's default windows have a period sampled statistics would alias with".to_string()
                },
                WINDOW.as_secs(),
                if self.exempt_allocator_probes { "; the precise allocator probes are kept and not judged (default budget)" } else { "" }
            ),
            agent_priority: None,
            drops: Vec::new(),
        }
    }
}

/// Cost as a percent of the target's CPU over `seconds` (floored).
fn share_pct(cost_s: f64, target_cpu_s: f64, seconds: f64) -> f64 {
    let denominator = target_cpu_s.max(MIN_TARGET_CORES * seconds);
    if denominator <= 0.0 { 0.0 } else { 100.0 * cost_s / denominator }
}

/// The collector that owns a program, from its (15-character) name.
fn collector_of(program: &str) -> &'static str {
    match program {
        p if p.starts_with("cpu_sample") => "cpu sampling",
        p if p.starts_with("sched_switch") || p.starts_with("syscall_exit") => "off-CPU (async)",
        p if p.starts_with("db_") => "database wire",
        p if p.starts_with("mem_") => ALLOCATOR_PROBES,
        p if p.starts_with("page_fault") || p.starts_with("mmap_") || p.starts_with("munmap_") || p.starts_with("brk_") => "page faults and mappings (memory)",
        _ => "other",
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The budget's latency side: with `--load`, the seconds of load measured
/// so far (p99 per second of planned send time) are matched against the
/// memory profile's probe periods, as the health guard does at the end
/// (`health::periodic_spikes`). A collector whose periods line up with
/// p99 spikes is backed off even when its CPU share is within the budget:
/// it is what the service's users feel.
pub struct P99Watch {
    live: crate::load::LiveLatency,
    load_start_ns: u64,
    periods: crate::memory::ProbedPeriods,
    /// Latencies (ms) per second of load.
    seconds: BTreeMap<u64, Vec<f64>>,
    /// Judged once; a back-off ends it.
    done: bool,
}

/// Periods seen before the watch judges (the spikes must recur).
pub const P99_WATCH_MIN_PERIODS: usize = 3;

impl P99Watch {
    pub fn new(live: crate::load::LiveLatency, load_start_ns: u64, periods: crate::memory::ProbedPeriods) -> P99Watch {
        P99Watch { live, load_start_ns, periods, seconds: BTreeMap::new(), done: false }
    }

    /// Takes the latencies measured since the last call; returns the
    /// evidence when the memory profile's periods match p99 spikes.
    pub fn check(&mut self, now_ns: u64) -> Option<String> {
        if self.done {
            return None;
        }
        let taken = self.live.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        for (t, latency) in taken {
            if let Some(ms) = latency {
                self.seconds.entry(t as u64).or_default().push(ms);
            }
        }
        let to_s = |ns: u64| (ns as f64 - self.load_start_ns as f64) / 1e9;
        let periods: Vec<(f64, f64)> = self.periods.get().iter().map(|(a, b)| (to_s(*a), to_s(*b))).collect();
        let now_s = to_s(now_ns);
        // Whole periods whose tail has been measured (latencies of requests
        // planned up to 2 s ago have mostly ended).
        let judged: Vec<(f64, f64)> = periods.into_iter().filter(|(_, e)| e + perf_audit_analysis::health::PERIOD_TAIL_S + 2.0 <= now_s).collect();
        if judged.len() < P99_WATCH_MIN_PERIODS {
            return None;
        }
        let points: Vec<crate::load::LatencyPoint> = self
            .seconds
            .iter()
            .filter(|(s, _)| (**s as f64) + 3.0 <= now_s)
            .map(|(s, v)| {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1];
                crate::load::LatencyPoint { t_s: *s as f64, requests: v.len() as u64, p99_ms: p99, ..Default::default() }
            })
            .collect();
        let watched = [perf_audit_analysis::health::CollectorPeriods { collector: "memory profile".into(), periods: judged }];
        let cause = perf_audit_analysis::health::periodic_spikes(&points, 1.0, &watched).into_iter().next()?;
        self.done = true;
        Some(cause.evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_charged_to_their_collector() {
        assert_eq!(collector_of("cpu_sample"), "cpu sampling");
        assert_eq!(collector_of("mem_alloc_retur"), "allocator probes (memory)");
        assert_eq!(collector_of("page_fault_samp"), "page faults and mappings (memory)");
        assert_eq!(collector_of("db_writev"), "database wire");
        assert_eq!(collector_of("sched_switch"), "off-CPU (async)");
    }

    #[test]
    fn an_idle_target_is_judged_against_a_tenth_of_a_core() {
        // 3 ms of probes in a second on a target that used 1 ms: 3% of the
        // 0.1-core floor, not 300%.
        assert_eq!(round2(share_pct(0.003, 0.001, 1.0)), 3.0);
        assert_eq!(round2(share_pct(0.003, 0.5, 1.0)), 0.6);
    }
}
