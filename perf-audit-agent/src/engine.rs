//! One audit, start to finish. The only async code of the agent lives here:
//! waiting for the duration, Ctrl-C, or the target's exit while the kernel
//! collects. Everything before is validation, everything after is pure
//! computation and file writing.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    cli::{Profile, UnwindChoice},
    database::DatabaseCollector,
    error::{Error, Result},
    findings::{self, CpuEvidence, Evidence},
    kernel::{self, Filter, KernelSession, UnwindMode, cpu::StackCopyCollector},
    plan::{AuditPlan, TargetSpec},
    profile::hotspots::hotspots,
    render,
    report::{CpuSection, EndReason, KernelInfo, Report, markdown},
    symbolize::StackSymbolizer,
    target::{self, Launched, MapsSnapshot, TargetInfo},
};

/// Rows of the hotspot table.
const HOTSPOT_ROWS: usize = 15;
/// How often the target's liveness and memory maps are checked.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const MAPS_REFRESH: Duration = Duration::from_secs(1);

/// What an audit produced.
pub struct AuditOutput {
    pub out_dir: PathBuf,
    pub report: Report,
}

pub async fn run(plan: AuditPlan) -> Result<AuditOutput> {
    for profile in &plan.unavailable {
        eprintln!("perf-audit: profile `{}` is not available in this version yet; skipping it", profile.as_str());
    }
    let support = kernel::preflight()?;

    // Resolve an existing target before loading anything: a typo fails fast.
    let existing_pid = match &plan.target {
        TargetSpec::Pid(pid) => Some(target::describe(*pid)?.pid),
        TargetSpec::Name(name) => Some(target::resolve_name(name)?),
        TargetSpec::Launch { .. } => None,
    };

    let exe_for_mode = match (&plan.target, existing_pid) {
        (_, Some(pid)) => target::describe(pid).map(|i| PathBuf::from(i.exe)).ok(),
        (TargetSpec::Launch { program, .. }, None) => resolve_program(program),
        _ => None,
    };
    let unwind = choose_unwind_mode(plan.unwind, exe_for_mode.as_deref());
    let mut session = KernelSession::load(Filter::ListedPids, unwind)?;
    if plan.profiles.contains(&Profile::Cpu) {
        session.start_cpu_sampling(plan.frequency_hz)?;
    }

    // Programs are attached before the pid is registered, so a launched
    // command is sampled from its first scheduled tick.
    let mut launched: Option<Launched> = None;
    let pid = match (&plan.target, existing_pid) {
        (_, Some(pid)) => pid,
        (TargetSpec::Launch { program, args }, None) => {
            let child = target::launch(program, args)?;
            let pid = child.pid();
            launched = Some(child);
            pid
        }
        _ => unreachable!("every non-launch target resolved to a pid above"),
    };
    session.add_target(pid)?;
    let mut stack_copy =
        if unwind == UnwindMode::Dwarf { Some(session.stack_copy_collector(pid)?) } else { None };
    let database = match plan.profiles.contains(&Profile::Database) {
        true => Some(DatabaseCollector::start(&mut session, pid, plan.database_url.as_deref(), plan.requested_profile == Profile::Database).await?),
        false => None,
    };
    let info = target::describe(pid).unwrap_or_else(|_| TargetInfo {
        pid,
        name: launched_name(&plan.target),
        exe: String::new(),
    });

    let started_at = SystemTime::now();
    let out_dir = plan.out_dir.clone().unwrap_or_else(|| default_out_dir(&info.name, started_at));
    fs::create_dir_all(&out_dir).map_err(|e| Error::output(&out_dir, e))?;

    eprintln!(
        "perf-audit: auditing {} (pid {pid}) for {}, profile {}, CPU sampling at {} Hz, unwinding with {}",
        info.name,
        humantime::format_duration(plan.duration),
        plan.requested_profile.as_str(),
        plan.frequency_hz,
        unwind.describe()
    );
    let mut collected = collect(&plan, &session, pid, stack_copy.as_mut()).await;
    session.stop_cpu_sampling();
    let database = match database {
        Some(collector) => Some(collector.finish(&mut session).await),
        None => None,
    };
    let counters = session.counters()?;
    let raw: Vec<_> = match stack_copy {
        Some(mut collector) => {
            collector.drain(&mut collected.maps);
            session.finish_stack_copy(collector)?
        }
        None => session.read_cpu_stacks()?,
    };
    let raw: Vec<_> = raw.into_iter().filter(|s| s.tgid == pid).collect();
    drop(session); // detach everything before the (slower) analysis
    drop(launched);

    eprintln!("perf-audit: symbolizing {} distinct stacks", raw.len());
    let profile = StackSymbolizer::new().cpu_profile(&raw, &collected.maps);
    let hotspots = hotspots(&profile);
    let mut threads: std::collections::BTreeMap<String, u64> = Default::default();
    for stack in &profile.stacks {
        *threads.entry(stack.thread.clone()).or_default() += stack.count;
    }
    let mut threads: Vec<(String, u64)> = threads.into_iter().collect();
    threads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let evidence = Evidence {
        cpu: Some(CpuEvidence { profile: &profile, hotspots: &hotspots, total_samples: profile.total_samples() }),
        database: database.as_ref(),
    };
    let findings = findings::evaluate(&evidence);

    let duration_s = collected.elapsed.as_secs_f64();
    let report = Report {
        schema_version: crate::report::SCHEMA_VERSION,
        target: info.clone(),
        profile: plan.requested_profile.as_str().to_string(),
        duration_s: crate::report::round2(duration_s),
        planned_duration_s: plan.duration.as_secs_f64(),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        end_reason: collected.end_reason,
        partial: collected.end_reason != EndReason::Duration,
        unavailable_profiles: plan.unavailable.iter().map(|p| p.as_str().to_string()).collect(),
        kernel: KernelInfo { release: support.release.clone(), btf: support.btf },
        cpu: Some(CpuSection::build(
            &counters,
            unwind,
            profile.complete_share(),
            plan.frequency_hz,
            &hotspots,
            threads,
            HOTSPOT_ROWS,
        )),
        database,
        findings,
        rerun_command: rerun_command(&plan, &info),
    };

    let folded = profile.folded_lines();
    let svg = render::flamegraph_svg(
        &format!("CPU: {} (pid {pid})", info.name),
        &format!("{} samples at {} Hz over {:.1} s", counters.cpu_samples, plan.frequency_hz, duration_s),
        "samples",
        &folded,
    )?;
    write(&out_dir.join("stacks.folded"), folded_text(&folded).as_bytes())?;
    write(&out_dir.join("flamegraph.svg"), &svg)?;
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::internal(format!("report.json: {e}")))?;
    write(&out_dir.join("report.json"), &json)?;
    write(&out_dir.join("report.md"), markdown::render(&report).as_bytes())?;
    Ok(AuditOutput { out_dir, report })
}

struct Collected {
    elapsed: Duration,
    end_reason: EndReason,
    maps: MapsSnapshot,
}

/// Waits for the duration, Ctrl-C/SIGTERM, or the target's exit, keeping a
/// snapshot of the target's memory maps and showing progress.
async fn collect(
    plan: &AuditPlan,
    session: &KernelSession,
    pid: u32,
    mut stack_copy: Option<&mut StackCopyCollector>,
) -> Collected {
    use tokio::signal::unix::{SignalKind, signal};

    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + plan.duration;
    let mut maps = MapsSnapshot::default();
    let _ = maps.refresh(pid);
    let mut last_maps = Instant::now();
    let progress = progress_bar(plan);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let end_reason = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break EndReason::Duration,
            _ = &mut ctrl_c => break EndReason::Interrupted,
            _ = async { match sigterm.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                break EndReason::Interrupted
            }
            _ = async {
                match stack_copy.as_deref_mut() {
                    Some(c) => c.drain_when_ready(&mut maps).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = tick.tick() => {
                if !target::is_alive(pid) {
                    break EndReason::TargetExited;
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
        EndReason::Interrupted => eprintln!("perf-audit: interrupted; writing a partial report"),
        EndReason::Duration => {}
    }
    Collected { elapsed: start.elapsed(), end_reason, maps }
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

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::output(path, e))
}

fn folded_text(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
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
