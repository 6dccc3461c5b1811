//! `perf-audit-ci.yml`: the seed's "Continuous Profiling" step, made
//! concrete for the audited service. A GitHub Actions workflow that, on
//! each pull request, builds the base and the head on the same runner,
//! audits both with this audit's own command (its `rerun_command`, with
//! paths made relative to the checkout), optionally with `--bench`, and
//! gates with `perf-audit-agent diff` (exit 8 fails the check). Auditing
//! both sides on one runner avoids comparing against numbers measured on
//! another machine.
//!
//! Pure: a report in, YAML text out. Strings that reach YAML are written as
//! double-quoted scalars (JSON string syntax, which YAML accepts), and
//! shell commands as literal blocks, so any service name stays valid YAML.

use std::fmt::Write as _;

use crate::report::Report;

/// The directory names the workflow uses, relative to the workspace.
const BASE_AUDIT: &str = "audit-base";
const HEAD_AUDIT: &str = "audit-head";
const DIFF_OUT: &str = "perf-diff";

/// The workflow for the service `report` audited; `bench`: audit with `--bench`.
pub fn render(report: &Report, bench: bool) -> String {
    let service = &report.target.name;
    let audit = |out: &str| ci_audit_command(report, out, bench);
    let mut y = String::new();
    let _ = writeln!(y, "# Performance regression gate for {}, written by perf-audit-agent", one_line(service));
    let _ = writeln!(y, "# from the audit of {}. Copy it to .github/workflows/perf-audit.yml.", one_line(&report.started_at));
    let _ = writeln!(y, "#");
    let _ = writeln!(y, "# On each pull request it builds the base and the head on the same runner, audits");
    let _ = writeln!(y, "# both with the same command, and fails when `perf-audit-agent diff` finds a metric");
    let _ = writeln!(y, "# worse than MAX_REGRESSION (exit code 8); diff.md goes to the job summary.");
    let _ = writeln!(y, "# The audit's own re-run command was:");
    let _ = writeln!(y, "#   {}", one_line(&report.rerun_command));
    let _ = writeln!(y, "# Start what the service needs (database, load) before the audit steps.");
    let _ = writeln!(y, "name: {}", quoted(&format!("Performance Regression Test ({service})")));
    y.push_str(
        "\non:\n  pull_request:\n  workflow_dispatch:\n\npermissions:\n  contents: read\n\nenv:\n  CARGO_TERM_COLOR: always\n",
    );
    let _ = writeln!(y, "  # Where to install perf-audit-agent from: set the repository variable PERF_AUDIT_GIT.");
    let _ = writeln!(y, "  PERF_AUDIT_GIT: \"${{{{ vars.PERF_AUDIT_GIT }}}}\"");
    let _ = writeln!(y, "  # `5%` for every metric; add e.g. `--max-regression p99_ms=10%` in the gate step.");
    let _ = writeln!(y, "  MAX_REGRESSION: \"5%\"");
    y.push_str("\njobs:\n  perf-audit:\n    runs-on: ubuntu-latest\n    timeout-minutes: 60\n    steps:\n");
    step_uses(&mut y, "Check out the head", "actions/checkout@v4", &[("path", "head")]);
    step_uses(
        &mut y,
        "Check out the base",
        "actions/checkout@v4",
        &[("path", "base"), ("ref", "${{ github.event.pull_request.base.sha || github.sha }}")],
    );
    step_uses(&mut y, "Install Rust", "dtolnay/rust-toolchain@stable", &[]);
    step_run(&mut y, "Install perf-audit-agent", None, &["cargo install --locked --git \"$PERF_AUDIT_GIT\" perf-audit-agent"]);
    step_run(&mut y, "Build the base", Some("base"), &["cargo build --release"]);
    step_run(&mut y, "Build the head", Some("head"), &["cargo build --release"]);
    step_run(&mut y, "Audit the base", Some("base"), &[&audit(BASE_AUDIT)]);
    step_run(&mut y, "Audit the head", Some("head"), &[&audit(HEAD_AUDIT)]);
    step_run(
        &mut y,
        "Gate: perf-audit-agent diff",
        None,
        &[&format!(
            "perf-audit-agent diff {BASE_AUDIT} {HEAD_AUDIT} --max-regression \"$MAX_REGRESSION\" --out {DIFF_OUT}"
        )],
    );
    let _ = writeln!(y, "      - name: \"Summary: diff.md\"");
    let _ = writeln!(y, "        if: always()");
    let _ = writeln!(y, "        run: |");
    let _ = writeln!(y, "          cat {DIFF_OUT}/diff.md >> \"$GITHUB_STEP_SUMMARY\" || true");
    let _ = writeln!(y, "      - name: Keep the audits and the diff");
    let _ = writeln!(y, "        if: always()");
    let _ = writeln!(y, "        uses: actions/upload-artifact@v4");
    let _ = writeln!(y, "        with:");
    let _ = writeln!(y, "          name: {}", quoted(&format!("perf-audit-{}", artifact_safe(service))));
    let _ = writeln!(y, "          path: |");
    for dir in [BASE_AUDIT, HEAD_AUDIT, DIFF_OUT] {
        let _ = writeln!(y, "            {dir}");
    }
    y
}

/// The audit command for CI: the audit's own command, run from the
/// checkout (`…/target/release/<bin>` becomes `./target/release/<bin>`),
/// writing to `$GITHUB_WORKSPACE/<out>`. An audit that attached to a
/// running service by name or pid launches its binary instead, with the
/// same profile and duration (CI has no running service to attach to).
pub fn ci_audit_command(report: &Report, out: &str, bench: bool) -> String {
    let rerun = report.rerun_command.strip_prefix("sudo ").unwrap_or(&report.rerun_command);
    let (mut options, command) = match rerun.split_once(" -- ") {
        Some((options, command)) => {
            let options: Vec<String> = options.split_whitespace().skip(1).map(str::to_string).collect();
            let mut words = command.split_whitespace();
            let program = words.next().map(checkout_relative).unwrap_or_default();
            (options, std::iter::once(program).chain(words.map(str::to_string)).collect::<Vec<_>>().join(" "))
        }
        None => (
            vec![
                report.profile.clone(),
                "--duration".to_string(),
                humantime::format_duration(std::time::Duration::from_secs_f64(report.planned_duration_s)).to_string(),
            ],
            checkout_relative(&report.target.exe),
        ),
    };
    options.extend(["--quiet".to_string(), "--out".to_string(), format!("\"$GITHUB_WORKSPACE/{out}\"")]);
    if bench {
        options.extend(["--bench".to_string(), "--bench-dir".to_string(), ".".to_string()]);
    }
    format!("sudo \"$(command -v perf-audit-agent)\" {} -- {command}", options.join(" "))
}

/// `/home/me/svc/target/release/svc` (or `…/target/<dir>/release/svc`)
/// -> `./target/release/svc`: where the workflow's `cargo build --release`
/// puts it.
fn checkout_relative(program: &str) -> String {
    let Some(i) = program.find("/target/") else { return program.to_string() };
    match program[i..].rsplit_once("/release/") {
        Some((_, bin)) if !bin.contains('/') => format!("./target/release/{bin}"),
        _ => format!(".{}", &program[i..]),
    }
}

fn step_uses(y: &mut String, name: &str, uses: &str, with: &[(&str, &str)]) {
    let _ = writeln!(y, "      - name: {}", quoted(name));
    let _ = writeln!(y, "        uses: {uses}");
    if !with.is_empty() {
        let _ = writeln!(y, "        with:");
        for (k, v) in with {
            let _ = writeln!(y, "          {k}: {}", quoted(v));
        }
    }
}

fn step_run(y: &mut String, name: &str, dir: Option<&str>, lines: &[&str]) {
    let _ = writeln!(y, "      - name: {}", quoted(name));
    if let Some(dir) = dir {
        let _ = writeln!(y, "        working-directory: {dir}");
    }
    let _ = writeln!(y, "        run: |");
    for line in lines {
        let _ = writeln!(y, "          {}", one_line(line));
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn artifact_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{EndReason, KernelInfo, TargetInfo};

    fn report(name: &str, exe: &str, rerun: &str) -> Report {
        Report {
            schema_version: 1,
            target: TargetInfo { pid: 42, name: name.into(), exe: exe.into() },
            profile: "cpu".into(),
            duration_s: 10.0,
            planned_duration_s: 10.0,
            started_at: "2026-02-01T10:00:00Z".into(),
            end_reason: EndReason::Duration,
            partial: false,
            end_signal: None,
            target_exec: None,
            unavailable_profiles: vec![],
            kernel: KernelInfo { release: "6.18".into(), btf: true },
            symbols: vec![],
            baseline: Default::default(),
            cpu: None,
            async_runtime: None,
            offcpu: None,
            database: None,
            memory: None,
            findings: vec![],
            health: None,
            overhead: None,
            rerun_command: rerun.into(),
            benchmarks: vec![],
        }
    }

    fn steps(yaml: &serde_yaml::Value) -> Vec<serde_yaml::Value> {
        yaml["jobs"]["perf-audit"]["steps"].as_sequence().expect("steps").clone()
    }

    fn run_of(yaml: &serde_yaml::Value, step: &str) -> String {
        steps(yaml)
            .iter()
            .find(|s| s["name"].as_str() == Some(step))
            .and_then(|s| s["run"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no run step {step}"))
    }

    #[test]
    fn the_workflow_parses_and_gates_a_launched_service_with_diff() {
        let r = report(
            "user-service",
            "/home/me/user-service/target/release/user-service",
            "sudo perf-audit-agent cpu --duration 30s -- /home/me/user-service/target/release/user-service --port 8080",
        );
        let text = render(&r, true);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(yaml["name"], "Performance Regression Test (user-service)");
        assert!(yaml["on"]["pull_request"].is_null() && yaml.get("on").is_some());
        let head = run_of(&yaml, "Audit the head");
        assert_eq!(
            head.trim_end(),
            "sudo \"$(command -v perf-audit-agent)\" cpu --duration 30s --quiet --out \"$GITHUB_WORKSPACE/audit-head\" --bench --bench-dir . -- ./target/release/user-service --port 8080"
        );
        let gate = run_of(&yaml, "Gate: perf-audit-agent diff");
        assert!(gate.contains("perf-audit-agent diff audit-base audit-head --max-regression \"$MAX_REGRESSION\""), "{gate}");
        let build = steps(&yaml).iter().find(|s| s["name"] == "Build the base").cloned().unwrap();
        assert_eq!(build["working-directory"], "base");
        assert!(text.contains("#   sudo perf-audit-agent cpu --duration 30s -- /home/me/"), "the original command is kept: {text}");
    }

    #[test]
    fn a_service_audited_by_name_is_launched_from_its_binary_and_odd_names_stay_valid_yaml() {
        let r = report(
            "svc: \"quoted\" #1",
            "/srv/app/target/release/svc",
            "sudo perf-audit-agent svc: \"quoted\" #1 all --duration 10s",
        );
        let text = render(&r, false);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(yaml["name"], "Performance Regression Test (svc: \"quoted\" #1)");
        let base = run_of(&yaml, "Audit the base");
        assert!(base.contains("-- ./target/release/svc"), "{base}");
        assert!(!base.contains("--bench"), "{base}");
    }

    #[test]
    fn the_ci_command_rewrites_paths_and_keeps_options() {
        let r = report("svc", "/x/svc/target/release/svc", "sudo perf-audit-agent svc cpu --duration 10s");
        assert_eq!(
            ci_audit_command(&r, "out", false),
            "sudo \"$(command -v perf-audit-agent)\" cpu --duration 10s --quiet --out \"$GITHUB_WORKSPACE/out\" -- ./target/release/svc"
        );
        assert_eq!(checkout_relative("/w/svc/target/x86_64-unknown-linux-gnu/release/svc"), "./target/release/svc");
        assert_eq!(checkout_relative("/usr/local/bin/svc"), "/usr/local/bin/svc");
    }
}
