//! One audit's evidence in, its report and output files out: the analyze
//! and report stages of the pipeline as two pure functions.
//!
//! The agent's engine collects, unwinds and symbolizes, fills an
//! [`AuditEvidence`], and calls [`build_report`] then [`render_outputs`];
//! it only writes the returned bytes to disk. The golden tests call the same
//! two functions on a fixed evidence set.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    bench::BenchmarkRow,
    error::Result,
    evidence::Counters,
    findings::{self, CpuEvidence, Evidence},
    memory::section::MemorySection,
    profile::{
        CpuProfile,
        async_runtime::{self, AsyncInputs, ThreadTime, TimedSample},
        hotspots::hotspots,
    },
    render,
    report::{
        AsyncSection, Baseline, ConsoleInfo, ConsoleSummary, CpuSection, DatabaseSection, EndReason, KernelInfo, LoadResult,
        ObjectSymbols, OffCpuSection, Report, SCHEMA_VERSION, TargetInfo, UnwindMode, UnwindTableParses, alerts, ci_workflow, html, markdown, round2, timeline,
    },
};

#[cfg(test)]
mod golden;

/// Rows of the hotspot table.
pub const HOTSPOT_ROWS: usize = 15;

/// Everything one audit measured, as plain values.
#[derive(Debug, Clone, Default)]
pub struct AuditEvidence {
    pub target: TargetInfo,
    /// The profile the user asked for (`all` stays `all`).
    pub profile: String,
    /// Profiles asked for that this build does not collect.
    pub unavailable_profiles: Vec<String>,
    /// RFC 3339 UTC start of collection.
    pub started_at: String,
    pub duration: Duration,
    pub planned_duration: Duration,
    pub end_reason: EndReason,
    /// The signal that ended an interrupted audit (`SIGINT`, `SIGTERM`).
    pub end_signal: Option<String>,
    /// The target exec'd during collection.
    pub target_exec: Option<crate::report::TargetExec>,
    pub kernel: KernelInfo,
    /// The kernel's counters at the end of collection.
    pub counters: Counters,
    /// On-CPU stacks (sampled for the cpu and async profiles).
    pub cpu: CpuProfile,
    /// Whether the report has a CPU section (profile `cpu`).
    pub cpu_section: bool,
    pub unwinding: UnwindMode,
    pub frequency_hz: u64,
    /// The objects sampled frames fell in, and their symbols and debug info.
    pub symbols: Vec<ObjectSymbols>,
    /// Objects whose unwind tables were parsed, with how many times.
    pub unwind_tables: Vec<UnwindTableParses>,
    /// (thread, CLOCK_MONOTONIC ns) of every CPU sample (dwarf mode).
    pub cpu_sample_times: Vec<(u32, u64)>,
    /// CLOCK_MONOTONIC ns when collection started.
    pub collect_start_ns: u64,
    /// Profile `async`: off-CPU stacks, per-thread scheduler time, timed CPU
    /// samples and tokio-console's view.
    pub async_runtime: Option<AsyncEvidence>,
    pub database: Option<DatabaseSection>,
    /// The memory section and its stacks folded by bytes (`memory.svg`).
    pub memory: Option<(MemorySection, Vec<String>)>,
    /// The audit's load, when it drove one.
    pub load: Option<LoadResult>,
    /// The same load for a few seconds before the target was registered
    /// with the probes (the health guard's healthy sample).
    pub load_unprobed: Option<LoadResult>,
    /// The overhead meter's section (`None`: not measured).
    pub overhead: Option<crate::report::schema::OverheadSection>,
    /// Collectors' recording periods, seconds since the load started (the
    /// health guard matches latency spikes against them).
    pub recording_periods: Vec<crate::health::CollectorPeriods>,
    pub last_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// The target's CPU seconds over the collection (user + system).
    pub cpu_seconds: Option<f64>,
    pub benchmarks: Vec<BenchmarkRow>,
    /// The command that re-runs this audit.
    pub rerun_command: String,
    /// Whether the audit ran `--bench` (the CI workflow runs it too).
    pub bench: bool,
}

#[derive(Debug, Clone)]
pub struct AsyncEvidence {
    pub offcpu: CpuProfile,
    pub threads: Vec<ThreadTime>,
    pub samples: Vec<TimedSample>,
    pub long_poll: Duration,
    /// Blocking intervals at least this long were captured with stacks.
    pub offcpu_min: Duration,
    pub console_address: String,
    /// tokio-console: `None` when nothing listened at the address, else
    /// what was read or why it could not be.
    pub console: Option<std::result::Result<ConsoleSummary, String>>,
    /// Which tracepoints the off-CPU collector ran on (said in the report).
    pub tracepoints: String,
}

/// The analyses and the findings rules over the evidence.
pub fn build_report(e: &AuditEvidence) -> Report {
    let hotspots = hotspots(&e.cpu);
    let async_analysis = e.async_runtime.as_ref().map(|a| {
        async_runtime::analyze(&AsyncInputs {
            cpu: &e.cpu,
            offcpu: &a.offcpu,
            threads: &a.threads,
            samples: &a.samples,
            long_poll_threshold_ns: a.long_poll.as_nanos() as u64,
            sample_period_ns: 1_000_000_000 / e.frequency_hz.max(1),
        })
    });
    let memory = e.memory.as_ref().map(|(section, _)| section);
    let findings = findings::evaluate(&Evidence {
        cpu: e.cpu_section.then(|| CpuEvidence { profile: &e.cpu, hotspots: &hotspots, total_samples: e.cpu.total_samples() }),
        async_runtime: async_analysis.as_ref(),
        database: e.database.as_ref(),
        memory: memory.map(|section| findings::MemoryEvidence { section }),
    });
    let duration_s = e.duration.as_secs_f64();
    let cpu_cores = match e.cpu_seconds {
        Some(s) if duration_s > 0.0 => (s / duration_s).max(0.0),
        _ => 0.0,
    };
    let load = e.load.as_ref();
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        target: e.target.clone(),
        profile: e.profile.clone(),
        duration_s: round2(duration_s),
        planned_duration_s: e.planned_duration.as_secs_f64(),
        started_at: e.started_at.clone(),
        end_reason: e.end_reason,
        partial: e.end_reason != EndReason::Duration,
        end_signal: e.end_signal.clone().filter(|_| e.end_reason == EndReason::Interrupted),
        target_exec: e.target_exec.clone(),
        unavailable_profiles: e.unavailable_profiles.clone(),
        kernel: e.kernel.clone(),
        symbols: e.symbols.clone(),
        baseline: Baseline {
            rps: load.map(|r| round2(r.achieved_rps)),
            p50_ms: load.map(|r| r.latency.p50_ms),
            p99_ms: load.map(|r| r.latency.p99_ms),
            p999_ms: load.map(|r| r.latency.p999_ms),
            errors: load.map(LoadResult::errors),
            rss_bytes: e.last_rss_bytes,
            peak_rss_bytes: e.peak_rss_bytes,
            cpu_cores: round2(cpu_cores),
            load: e.load.clone(),
        },
        cpu: e.cpu_section.then(|| CpuSection {
            unwind_tables: e.unwind_tables.clone(),
            ..CpuSection::build(
                &e.counters,
                e.unwinding,
                e.cpu.complete_share(),
                e.frequency_hz,
                &hotspots,
                thread_samples(&e.cpu),
                HOTSPOT_ROWS,
            )
        }),
        offcpu: e.async_runtime.as_ref().zip(async_analysis.as_ref()).map(|(a, analysis)| {
            OffCpuSection::build(&e.cpu, &a.offcpu, &a.threads, &e.counters, a.offcpu_min, &a.tracepoints, analysis)
        }),
        async_runtime: e.async_runtime.as_ref().zip(async_analysis).map(|(a, analysis)| AsyncSection {
            analysis,
            long_poll_threshold_ms: a.long_poll.as_secs_f64() * 1000.0,
            console: console_info(&a.console_address, a.console.clone()),
        }),
        database: e.database.clone(),
        memory: memory.cloned(),
        findings,
        health: e.load_unprobed.as_ref().zip(e.load.as_ref()).map(|(before, during)| {
            let mut h = crate::health::assess(before, during);
            let costs: Vec<crate::health::CollectorShare> = e
                .overhead
                .iter()
                .flat_map(|o| &o.collectors)
                .map(|c| crate::health::CollectorShare { collector: c.collector.clone(), target_cpu_pct: c.target_cpu_pct, cpu_ms_per_s: c.cpu_ms_per_s })
                .collect();
            h.causes = crate::health::causes(during, &e.recording_periods, &costs);
            h
        }),
        overhead: e.overhead.clone(),
        rerun_command: e.rerun_command.clone(),
        benchmarks: e.benchmarks.clone(),
    };
    if let Some(cpu) = report.cpu.as_mut() {
        let (offcpu, threads) = match &e.async_runtime {
            Some(a) => (&a.offcpu, a.threads.as_slice()),
            None => (&CpuProfile::default(), &[][..]),
        };
        let roles = async_runtime::thread_roles(&e.cpu, offcpu, threads);
        let samples = e.cpu_sample_times.iter().copied();
        cpu.timeline = timeline::cpu_by_role(samples, e.collect_start_ns, duration_s, e.frequency_hz, &roles);
    }
    report
}

/// Samples per thread name, most first.
fn thread_samples(profile: &CpuProfile) -> Vec<(String, u64)> {
    let mut threads: BTreeMap<String, u64> = BTreeMap::new();
    for stack in &profile.stacks {
        *threads.entry(stack.thread.clone()).or_default() += stack.count;
    }
    let mut threads: Vec<(String, u64)> = threads.into_iter().collect();
    threads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    threads
}

/// The report's console entry: what was read, or how to enable it.
pub fn console_info(addr: &str, read: Option<std::result::Result<ConsoleSummary, String>>) -> ConsoleInfo {
    let (listening, summary, note) = match read {
        Some(Ok(summary)) => (
            true,
            Some(summary.clone()),
            format!(
                "read from console-subscriber at {addr}: {} tasks seen ({} live), {} spawn locations, {} warnings",
                summary.tasks_seen,
                summary.live_tasks,
                summary.locations.len(),
                summary.warnings.len()
            ),
        ),
        Some(Err(e)) => (true, None, format!("{e}: the task breakdown comes from eBPF samples only")),
        None => (
            false,
            None,
            format!(
                "not running at {addr}. For task counts, spawn locations, poll durations and its self-wake / lost-waker warnings, add `console-subscriber` to the service (`console_subscriber::init()` in main, built with `RUSTFLAGS=\"--cfg tokio_unstable\"`), then re-run with `--console {addr}`"
            ),
        ),
    };
    ConsoleInfo { address: addr.to_string(), listening, note, summary }
}

/// One file of the audit's output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// Every output file of an audit, rendered from its report and stacks:
/// deterministic, the same inputs give the same bytes.
pub fn render_outputs(report: &Report, e: &AuditEvidence) -> Result<Vec<OutputFile>> {
    let name = &report.target.name;
    let pid = report.target.pid;
    let mut out = Vec::new();
    let mut file = |name: &'static str, bytes: Vec<u8>| out.push(OutputFile { name, bytes });
    let folded = e.cpu.folded_lines();
    let cpu_svg = render::flamegraph_svg(
        &format!("CPU: {name} (pid {pid})"),
        &format!("{} samples at {} Hz over {:.1} s", e.counters.cpu_samples, e.frequency_hz, report.duration_s),
        "samples",
        &folded,
    )?;
    file("stacks.folded", folded_text(&folded).into_bytes());
    file("flamegraph.svg", cpu_svg.clone());
    let offcpu_svg = match &e.async_runtime {
        Some(a) => {
            let folded = a.offcpu.folded_lines();
            let svg = render::flamegraph_svg(
                &format!("Off-CPU: {name} (pid {pid})"),
                &format!(
                    "time blocked, in microseconds; intervals of {} or more",
                    humantime::format_duration(a.offcpu_min)
                ),
                "us",
                &folded,
            )?;
            file("offcpu.folded", folded_text(&folded).into_bytes());
            file("offcpu.svg", svg.clone());
            Some(svg)
        }
        None => None,
    };
    let json = serde_json::to_vec_pretty(report).map_err(|err| crate::error::Error::internal(format!("report.json: {err}")))?;
    file("report.json", json);
    let md = markdown::render(report);
    file("report.md", md.clone().into_bytes());
    file("alerts.yml", alerts::render(report).into_bytes());
    let memory_svg = match (&e.memory, &report.memory) {
        (Some((_, folded)), Some(m)) => {
            let svg = render::flamegraph_svg(
                &format!("Memory: {name} (pid {pid})"),
                &format!("bytes allocated per stack, {} mode ({:.1}% of the time probed)", m.mode, m.probed_time_pct),
                "bytes",
                folded,
            )?;
            file("memory.svg", svg.clone());
            Some(svg)
        }
        _ => None,
    };
    let page = html::render_with_flamegraphs(report, &md, &cpu_svg, offcpu_svg.as_deref(), memory_svg.as_deref());
    file("report.html", page.into_bytes());
    file("perf-audit-ci.yml", ci_workflow::render(report, e.bench).into_bytes());
    Ok(out)
}

/// Folded stacks as a file: one line each, newline-terminated.
pub(crate) fn folded_text(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}
