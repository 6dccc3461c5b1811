//! `report.md`, following the seed's `/perf.audit` report structure: header,
//! one section per profile, Optimization Action Plan (P0/P1/P2), Next Steps.

use std::fmt::Write as _;

use super::{Baseline, CpuSection, EndReason, Report, alerts};
use crate::findings::{Finding, Severity};

pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let t = &report.target;
    let _ = writeln!(md, "## Performance Audit: {}\n", t.name);
    let _ = writeln!(md, "**Profile type**: {}", report.profile);
    let _ = writeln!(md, "**Date**: {}", report.started_at);
    let _ = writeln!(md, "**Target**: pid {} (`{}`)", t.pid, t.exe);
    let _ = writeln!(md, "**Duration**: {:.1} s of {:.1} s planned", report.duration_s, report.planned_duration_s);
    let _ = writeln!(md, "**Kernel**: {} (BTF {})", report.kernel.release, if report.kernel.btf { "available" } else { "missing" });
    for object in &report.symbols {
        if let Some(file) = object.debug_file.as_deref().filter(|_| object.executable) {
            let _ = writeln!(md, "**Debug info**: `{}` from `{file}`", object.name());
        }
    }
    for note in report.symbols.iter().filter_map(|o| o.on_disk_note()) {
        let _ = writeln!(md, "\n> {note}");
    }
    for note in report.symbols.iter().filter_map(|o| o.header_note()) {
        let _ = writeln!(md, "\n> {note}");
    }
    match report.end_reason {
        EndReason::Duration => {}
        EndReason::Interrupted => {
            let _ = writeln!(md, "\n> **Partial report**: {} after {:.1} s.", report.interruption(), report.duration_s);
        }
        EndReason::TargetExited => {
            let _ = writeln!(md, "\n> **Partial report**: the target exited after {:.1} s; this covers the time it ran.", report.duration_s);
        }
    }
    if let Some(exec) = &report.target_exec {
        let _ = writeln!(md, "\n> **The target exec'd during the audit**: {}.", exec.note());
    }
    if let Some(h) = report.health.as_ref().filter(|h| h.degraded) {
        let _ = writeln!(
            md,
            "\n> **The service degraded during the audit**: {}. {}The findings below were taken on a degraded service, and alerts.yml takes its thresholds from the {:.1} s measured after the probes were detached.",
            h.reasons.join("; "),
            if h.causes.is_empty() {
                "No collector's periods or CPU share match it (the machine's other load is the likelier cause). ".to_string()
            } else {
                format!("What matches it: {}. ", h.causes.iter().map(|c| c.evidence.as_str()).collect::<Vec<_>>().join("; "))
            },
            h.unprobed.seconds
        );
    }
    render_baseline(&mut md, &report.baseline);
    if let Some(h) = &report.health {
        let _ = writeln!(
            md,
            "- Health: p99 {:.2} ms after the probes were detached, {:.2} ms during the audit ({:.2}x); throughput {:.2}x; {} ({})",
            h.unprobed.p99_ms,
            h.during.p99_ms,
            h.p99_ratio,
            h.rps_ratio,
            if h.degraded { "**degraded**" } else { "not degraded" },
            h.rule
        );
        if !h.degraded && !h.causes.is_empty() {
            let _ = writeln!(md, "- Health, measured costs: {}", h.causes.iter().map(|c| c.evidence.as_str()).collect::<Vec<_>>().join("; "));
        }
    }
    if let Some(o) = &report.overhead {
        render_overhead(&mut md, o);
    }
    if !report.unavailable_profiles.is_empty() {
        let _ = writeln!(
            md,
            "\n> Not collected (not available in this version yet): {}.",
            report.unavailable_profiles.join(", ")
        );
    }
    md.push_str("\n---\n\n");

    if let Some(cpu) = &report.cpu {
        render_cpu(&mut md, cpu, &report.findings);
        md.push_str("\n---\n\n");
    }
    if let Some(a) = &report.async_runtime {
        render_async(&mut md, a, report.offcpu.as_ref(), &report.findings);
        md.push_str("\n---\n\n");
    }

    if !report.benchmarks.is_empty() {
        crate::bench::markdown::render(&mut md, &report.benchmarks);
        md.push_str("\n---\n\n");
    }

    if let Some(db) = &report.database {
        super::database_md::render(&mut md, db);
        md.push_str("\n---\n\n");
    }

    if let Some(memory) = &report.memory {
        super::memory_md::markdown(&mut md, memory, &report.findings);
        md.push_str("\n---\n\n");
    }

    render_action_plan(&mut md, report);
    md.push_str("\n---\n\n");
    render_monitoring(&mut md, report);
    md.push_str("\n---\n\n");
    render_next_steps(&mut md, report);
    md
}

fn render_baseline(md: &mut String, b: &Baseline) {
    let _ = writeln!(md, "\n**Baseline metrics**:");
    match (&b.load, b.rps) {
        (Some(load), Some(rps)) => {
            let ms = |v: Option<f64>| v.map(|v| format!("{v:.2} ms")).unwrap_or_else(|| "-".into());
            let _ = writeln!(md, "- Requests/sec: {rps:.1} (open-loop load at {} rps)", load.target_rps);
            let _ = writeln!(md, "- P50 latency: {}", ms(b.p50_ms));
            let _ = writeln!(md, "- P99 latency: {}", ms(b.p99_ms));
            let _ = writeln!(md, "- P99.9 latency: {}", ms(b.p999_ms));
            let _ = writeln!(md, "- Errors: {} of {} requests sent", b.errors.unwrap_or(0), load.sent);
        }
        _ => {
            let _ = writeln!(md, "- Requests/sec, latency: not measured (no `--load`/`--scenario`: the audit profiled the traffic the service had)");
        }
    }
    let mib = |v: u64| v as f64 / (1024.0 * 1024.0);
    let _ = writeln!(md, "- Memory usage: {:.1} MiB RSS at the end, {:.1} MiB peak", mib(b.rss_bytes), mib(b.peak_rss_bytes));
    let _ = writeln!(md, "- CPU usage: {:.2} cores on average", b.cpu_cores);
}

fn render_monitoring(md: &mut String, report: &Report) {
    let t = alerts::thresholds(report);
    let _ = writeln!(md, "## Monitoring Setup
");
    let _ = writeln!(md, "Add these Prometheus alerts to track regressions (also written as `alerts.yml`). Thresholds come from this audit's baseline:
");
    let _ = writeln!(md, "- latency: {}", t.p99_reason);
    let _ = writeln!(md, "- memory: {}", t.rss_reason);
    let _ = writeln!(md, "- CPU: {}\n", t.cpu_reason);
    let _ = writeln!(md, "```yaml\n{}```", alerts::render(report));
}

pub(super) fn location(file: &Option<String>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.clone(),
        _ => "-".to_string(),
    }
}

/// The audit's own cost: one line, then what it switched off and why.
fn render_overhead(md: &mut String, o: &crate::report::schema::OverheadSection) {
    let budget = o.budget_pct.map(|b| format!("budget {b}%")).unwrap_or_else(|| "no budget (`--max-overhead none`)".to_string());
    let by: Vec<String> = o
        .collectors
        .iter()
        .filter(|c| c.program_runs > 0)
        .map(|c| format!("{} {:.2}% ({:.2} ms/s)", c.collector, c.target_cpu_pct, c.cpu_ms_per_s))
        .collect();
    match &o.unavailable {
        Some(why) => {
            let _ = writeln!(md, "- Audit overhead: not measured: {why}; the agent used {:.2} cores", o.agent_cores);
        }
        None => {
            let _ = writeln!(
                md,
                "- Audit overhead: {:.2}% of the target's CPU in the kernel (the budget's judged cost peaked at {:.2}% over a window; {budget}){}; the agent itself used {:.2} cores, the target {:.2} ({})",
                o.kernel_pct,
                o.peak_window_pct,
                if by.is_empty() { String::new() } else { format!(": {}", by.join(", ")) },
                o.agent_cores,
                o.target_cores,
                o.rule
            );
        }
    }
    if let Some(priority) = &o.agent_priority {
        let drops: Vec<String> = o.drops.iter().map(|d| format!("{} {} of {}", d.ring, d.dropped, d.records + d.dropped)).collect();
        let _ = writeln!(
            md,
            "- Agent threads {priority} while the target was measured (the load generator and the memory windows excepted); records its rings dropped meanwhile: {}",
            if drops.is_empty() { "none counted".to_string() } else { drops.join(", ") }
        );
    }
    for b in &o.back_offs {
        let _ = writeln!(md, "- **Backed off** at {:.1} s ({:.2}% over the budget's window): {}", b.at_s, b.cost_pct, b.action);
    }
}

/// Table cells cannot contain `|` or newlines.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn render_cpu(md: &mut String, cpu: &CpuSection, findings: &[Finding]) {
    let _ = writeln!(md, "### CPU Profiling Results\n");
    let _ = writeln!(md, "**Total samples**: {} (at {} Hz per CPU)", cpu.total_samples, cpu.frequency_hz);
    let _ = writeln!(
        md,
        "**Dropped samples**: {} (kernel aggregation map full {}, stack-copy ring full {}: the agent did not drain it in time)",
        cpu.dropped_samples + cpu.ring_buffer_drops,
        cpu.dropped_samples,
        cpu.ring_buffer_drops
    );
    let _ = writeln!(
        md,
        "**Stack unwinding**: {}; {:.1}% of samples have a complete stack (down from `main` or the thread start)",
        cpu.unwinding.describe(),
        cpu.stack_completeness_pct
    );
    let _ = writeln!(
        md,
        "**Capture failures**: user stack missing in {} samples, kernel stack in {}",
        cpu.user_stack_failures, cpu.kernel_stack_failures
    );
    if !cpu.threads.is_empty() {
        let threads: Vec<String> =
            cpu.threads.iter().take(6).map(|t| format!("`{}` {:.1}%", t.name, t.pct)).collect();
        let _ = writeln!(md, "**Threads**: {}", threads.join(", "));
    }
    let _ = writeln!(md, "\n**Top hotspots** (self time charged to the innermost frame of your own code):\n");
    let _ = writeln!(md, "| Function | Self % | Total % | Location | Recommendation |");
    let _ = writeln!(md, "|----------|--------|---------|----------|----------------|");
    for h in &cpu.hotspots {
        let _ = writeln!(
            md,
            "| `{}` | {:.1}% | {:.1}% | {} | {} |",
            cell(&h.function),
            h.self_pct,
            h.total_pct,
            cell(&location(&h.file, h.line)),
            cell(&h.recommendation)
        );
    }
    if cpu.hotspots.is_empty() {
        let _ = writeln!(md, "| (no samples: the target did not run on a CPU during the audit) | | | | |");
    }

    let cpu_findings: Vec<&Finding> =
        findings.iter().filter(|f| f.category == crate::findings::Category::Cpu).collect();
    let _ = writeln!(md, "\n**Critical findings**:\n");
    if cpu_findings.is_empty() {
        let _ = writeln!(md, "- No function of your own code takes more than 10% of CPU samples by itself");
    }
    for f in &cpu_findings {
        let dot = f.severity.badge();
        let _ = writeln!(md, "- {dot} {}: {}", f.title, location(&f.file, f.line));
    }
    let _ = writeln!(md, "\n**Optimization priorities**:\n");
    if cpu_findings.is_empty() {
        let _ = writeln!(md, "1. Nothing stands out in CPU time; look at the other profiles.");
    }
    for (i, f) in cpu_findings.iter().take(3).enumerate() {
        let _ = writeln!(md, "{}. `{}`: {}", i + 1, f.function, f.recommendation);
    }
}

fn render_async(md: &mut String, a: &super::AsyncSection, off: Option<&super::OffCpuSection>, findings: &[Finding]) {
    let w = &a.analysis.workers;
    let _ = writeln!(md, "### Async Runtime Analysis\n");
    if w.workers == 0 {
        let _ = writeln!(
            md,
            "**Runtime workers**: none recognised. No thread showed a Tokio scheduler loop (multi-thread or current-thread, any 1.x release), an actix-rt arbiter, or a runtime thread name, so the async analysis below is empty for that reason, not because the service is clean (blocking pool threads seen: {}). Is the target an async Rust service, and were its stacks symbolized?",
            w.blocking_pool_threads
        );
    } else {
        let how: Vec<String> = w.recognised.iter().map(|r| format!("{} by {}", r.threads, r.kind.describe())).collect();
        let _ = writeln!(md, "**Runtime workers**: {} recognised: {} (blocking pool threads seen: {}, never counted as workers)", w.workers, how.join("; "), w.blocking_pool_threads);
    }
    let _ = writeln!(
        md,
        "**Worker time**: {:.1}% on CPU, {:.1}% blocked inside tasks, {:.1}% idle (parked), {:.1}% waiting for a CPU",
        w.busy_pct, w.blocked_in_tasks_pct, w.idle_pct, w.runqueue_pct
    );
    let blocking_count: u64 = a.analysis.blocking.iter().chain(a.analysis.lock_contention.iter()).map(|s| s.intervals).sum();
    let _ = writeln!(md, "**Blocking operations detected**: {blocking_count} blocking intervals on workers at {} sites", a.analysis.blocking.len() + a.analysis.lock_contention.len());
    if let Some(off) = off {
        let _ = writeln!(
            md,
            "**Off-CPU capture**: intervals of {} ms or more with stacks: {} ({:.1} ms); shorter: {} ({:.1} ms, counted only); dropped: {}{}",
            off.capture_threshold_ms,
            off.captured_intervals,
            off.captured_ms,
            off.short_intervals,
            off.short_ms,
            off.dropped_intervals,
            if off.tracepoints.is_empty() { String::new() } else { format!("; on {}", off.tracepoints) }
        );
    }
    let _ = writeln!(md, "\n**Task breakdown** (a task is named by the async fn of your code that framework code polls, e.g. an axum handler):\n");
    let _ = writeln!(md, "| Task | On-CPU % of workers | Blocked | Blocking intervals | Status |");
    let _ = writeln!(md, "|------|---------------------|---------|--------------------|--------|");
    for t in a.analysis.tasks.iter().take(12) {
        let flagged = findings.iter().any(|f| f.category == crate::findings::Category::Async && (t.task.starts_with(&f.function) || f.function.starts_with(&t.task)));
        let status = if t.blocked_ms > 0.0 || flagged { "**blocks workers**" } else { "ok" };
        let _ = writeln!(md, "| `{}` | {:.1}% | {:.1} ms | {} | {status} |", cell(&t.task), t.on_cpu_pct, t.blocked_ms, t.blocking_intervals);
    }
    if a.analysis.tasks.is_empty() {
        let _ = writeln!(md, "| (no task code seen on workers) | | | | |");
    }
    let _ = writeln!(md, "\n**Issues detected**:\n");
    let async_findings: Vec<&Finding> = findings.iter().filter(|f| f.category == crate::findings::Category::Async).collect();
    if async_findings.is_empty() {
        let _ = writeln!(md, "- No blocking call, sync-lock wait or long poll on Tokio workers was measured");
    }
    for f in &async_findings {
        let dot = f.severity.badge();
        let _ = writeln!(md, "- {dot} {}: {} ({})", f.title, location(&f.file, f.line), f.evidence);
    }
    let polls: Vec<_> = a.analysis.long_polls.iter().filter(|p| p.p50_ms >= 0.1 || p.worker_time_pct >= 1.0).take(10).collect();
    if !polls.is_empty() {
        let _ = writeln!(md, "\n**Poll lengths** (estimated per owner function from the worker's on-CPU stretches, wake-up to sleep: a poll cannot outlast its stretch; time spent preempted in a run queue is not counted; time-weighted. Flagged from a 0.5 ms median poll, five times Tokio's 10-100 µs guidance, and 1% of worker time; P0 from a 10 ms p99 poll or 10% of worker time):\n");
        let _ = writeln!(md, "| Function | Poll p50 | Poll p99 | Polls bounded | Worker time |");
        let _ = writeln!(md, "|----------|----------|----------|---------------|-------------|");
        for p in polls {
            let _ = writeln!(md, "| `{}` | {:.2} ms | {:.2} ms | {} | {:.2}% |", cell(&p.function), p.p50_ms, p.p99_ms, p.polls_measured, p.worker_time_pct);
        }
    }
    if !a.analysis.long_polls_measured {
        let _ = writeln!(md, "- Long polls were not measured: they need time-ordered samples (`--unwind dwarf`).");
    }
    if let Some(off) = off
        && !off.top.is_empty() {
            let _ = writeln!(md, "\n**Off-CPU time** (where threads blocked; see `offcpu.svg`):\n");
            let _ = writeln!(md, "| Function | Syscall | Thread | Intervals | Blocked |");
            let _ = writeln!(md, "|----------|---------|--------|-----------|---------|");
            for r in off.top.iter().take(10) {
                let _ = writeln!(md, "| `{}` ({}) | {} | {} | {} | {:.1} ms |", cell(&r.function), cell(&location(&r.file, r.line)), r.syscall, r.thread, r.intervals, r.blocked_ms);
            }
        }
    let _ = writeln!(md, "\n**tokio-console**: {}", a.console.note);
    if let Some(c) = &a.console.summary {
        let _ = writeln!(md, "\n**Total tasks spawned**: {} ({} live at the end)\n", c.tasks_seen, c.live_tasks);
        let _ = writeln!(md, "| Spawn location | Tasks | Polls | Busy | Avg poll |");
        let _ = writeln!(md, "|----------------|-------|-------|------|----------|");
        for l in c.locations.iter().take(10) {
            let _ = writeln!(md, "| {} | {} | {} | {:.1} ms | {:.1} us |", cell(&l.location), l.tasks, l.polls, l.busy_ms, l.mean_poll_us);
        }
        for w in &c.warnings {
            let _ = writeln!(md, "- **warning** tokio-console `{}` at {}: {} task(s) {}", w.kind, w.location, w.tasks, w.detail);
        }
    }
    let _ = writeln!(md, "\n**Recommendations**:\n");
    if async_findings.is_empty() {
        // Nothing said without evidence: what was measured, and that it was clean.
        let _ = writeln!(
            md,
            "None needed: {} workers measured ({:.1}% on CPU, {:.1}% blocked inside tasks); no blocking call, sync-lock wait{} on a worker.",
            w.workers,
            w.busy_pct,
            w.blocked_in_tasks_pct,
            if a.analysis.long_polls_measured { " or long poll" } else { "" }
        );
    }
    for (i, f) in async_findings.iter().enumerate() {
        let _ = writeln!(md, "{}. `{}`: {}", i + 1, f.function, f.recommendation);
    }
}

fn render_action_plan(md: &mut String, report: &Report) {
    let _ = writeln!(md, "## Optimization Action Plan\n");
    let _ = writeln!(
        md,
        "Ranked by measured impact (share of CPU samples, bytes, latency), not by rule name; each finding says how it was ranked.\n"
    );
    if report.health.as_ref().is_some_and(|h| h.degraded) {
        let _ = writeln!(md, "> Taken on a degraded service: the figures below include the stall (see the top of the report).\n");
    }
    for severity in [Severity::P0, Severity::P1, Severity::P2] {
        let _ = writeln!(md, "### {}\n", severity.heading());
        let rows: Vec<&Finding> = report.findings_of(severity).collect();
        if rows.is_empty() {
            let _ = writeln!(md, "None.\n");
            continue;
        }
        let _ = writeln!(md, "| Issue | Location | Impact | Complexity | Estimated Gain |");
        let _ = writeln!(md, "|-------|----------|--------|------------|----------------|");
        for f in &rows {
            let _ = writeln!(
                md,
                "| {} | {} | {:?} | {:?} | {} |",
                cell(&f.title),
                cell(&location(&f.file, f.line)),
                f.impact,
                f.complexity,
                cell(&f.estimated_gain)
            );
        }
        md.push('\n');
        for f in &rows {
            let _ = writeln!(md, "- **{}** (`{}`): {}. *Evidence*: {}. *Ranking*: {}.", f.rule, f.function, f.recommendation, f.evidence, f.ranking);
        }
        md.push('\n');
    }
    for f in report.findings.iter().filter(|f| f.code_fix.is_some()).take(3) {
        let fix = f.code_fix.as_ref().expect("filtered");
        let _ = writeln!(md, "**Code fix for `{}`** ({}):\n", f.function, location(&f.file, f.line));
        if let Some(source) = &f.source {
            let _ = writeln!(md, "Measured here (`{}`, from line {}):\n", source.file, source.first_line);
            let _ = writeln!(md, "```rust\n{}\n```\n", source.text.trim_end());
        }
        let _ = writeln!(md, "```rust\n// Before\n{}\n\n// After\n{}\n```\n", fix.before, fix.after);
    }
}

fn render_next_steps(md: &mut String, report: &Report) {
    let _ = writeln!(md, "## Next Steps\n");
    // Steps follow from the findings: a P0 step only when there is a P0.
    let mut steps: Vec<String> = Vec::new();
    for severity in [Severity::P0, Severity::P1, Severity::P2] {
        let rows: Vec<&Finding> = report.findings_of(severity).collect();
        if rows.is_empty() {
            continue;
        }
        let mut functions: Vec<&str> = Vec::new();
        for f in &rows {
            if !functions.contains(&f.function.as_str()) {
                functions.push(&f.function);
            }
        }
        let names = functions.iter().take(3).map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
        let more = if functions.len() > 3 { format!(" and {} more", functions.len() - 3) } else { String::new() };
        steps.push(match severity {
            Severity::P0 => format!("Fix the {} P0 finding(s) first: {names}{more}", rows.len()),
            Severity::P1 => format!("Fix the {} P1 finding(s): {names}{more}", rows.len()),
            Severity::P2 => format!("When convenient, the {} P2 finding(s): {names}{more}", rows.len()),
        });
    }
    if steps.is_empty() {
        steps.push("No finding to fix: keep this report as the baseline and compare the next audit with it (`perf-audit diff`)".into());
    } else {
        steps.push("Re-run the audit after each fix and compare it with this one to measure its effect".into());
    }
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(md, "{}. {step}", i + 1);
    }
    md.push('\n');
    let _ = writeln!(md, "**Re-run audit after fixes**:\n");
    let _ = writeln!(md, "```bash\n{}\n```", report.rerun_command);
}

#[cfg(test)]
mod async_tests {
    use super::*;
    use crate::profile::async_runtime::{RecognisedWorkers, WorkerKind};

    #[test]
    fn the_async_section_says_how_workers_were_recognised_or_that_none_was() {
        let mut a = super::super::AsyncSection::default();
        let mut md = String::new();
        render_async(&mut md, &a, None, &[]);
        assert!(md.contains("none recognised") && md.contains("not because the service is clean"), "{md}");
        a.analysis.workers.workers = 2;
        a.analysis.workers.recognised = vec![RecognisedWorkers { kind: WorkerKind::ActixRt, threads: 2 }];
        let mut md = String::new();
        render_async(&mut md, &a, None, &[]);
        assert!(md.contains("**Runtime workers**: 2 recognised: 2 by an actix-rt arbiter"), "{md}");
    }
}

#[cfg(test)]
mod end_tests {
    use super::*;
    use crate::report::{EndReason, TargetExec};

    fn interrupted(signal: Option<&str>) -> String {
        let report = Report {
            end_reason: EndReason::Interrupted,
            partial: true,
            end_signal: signal.map(String::from),
            duration_s: 4.0,
            ..Default::default()
        };
        render(&report)
    }

    #[test]
    fn an_interrupted_audit_names_the_signal_that_ended_it() {
        let term = interrupted(Some("SIGTERM"));
        assert!(term.contains("interrupted by SIGTERM after 4.0 s"), "{term}");
        assert!(!term.contains("Ctrl-C"), "SIGTERM is not Ctrl-C: {term}");
        assert!(interrupted(Some("SIGINT")).contains("interrupted by SIGINT (Ctrl-C)"));
        // A report written before the signal was recorded claims no key press.
        let old = interrupted(None);
        assert!(old.contains("interrupted by a signal") && !old.contains("Ctrl-C"), "{old}");
        let line = &crate::report::summary::terminal(&Report { end_signal: Some("SIGTERM".into()), ..serde_json::from_str(r#"{"end_reason":"interrupted","partial":true}"#).unwrap() })[1];
        assert!(line.contains("SIGTERM"), "{line}");
    }

    #[test]
    fn a_target_that_execs_is_said() {
        let exec = TargetExec { after_s: 2.4, exe_before: "/usr/bin/dash".into(), exe_after: "/usr/bin/sleep".into() };
        let md = render(&Report { target_exec: Some(exec.clone()), ..Default::default() });
        assert!(md.contains("The target exec'd during the audit") && md.contains("replaced `/usr/bin/dash` with `/usr/bin/sleep`") && md.contains("2.4 s"), "{md}");
        let same = TargetExec { exe_before: "/usr/bin/dash".into(), exe_after: "/usr/bin/dash".into(), ..exec };
        assert!(same.note().contains("re-executed `/usr/bin/dash`"));
        // Read back from report.json.
        let back: Report = serde_json::from_str(&serde_json::to_string(&Report { target_exec: Some(same.clone()), ..Default::default() }).unwrap()).unwrap();
        assert_eq!(back.target_exec, Some(same));
    }
}
