//! How an audit ends, said in its report: the signal that ended it
//! (SIGTERM is not Ctrl-C), a target that exec'd during it, and a
//! self-audit refused before any probe with one line.

use std::{path::Path, process::Command, time::Duration};

use perf_audit_tests::{Build, Running, agent_bin, fixture, run_agent, spawn_agent, wait_attached};

/// Audits a running CPU-bound fixture, sends `signal` once attached,
/// returns (report.json, report.md, stderr).
fn audit_ended_by(signal: i32) -> (serde_json::Value, String, String) {
    let burner = fixture("cpu-burner", Build::ReleaseFramePointers);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let target = Running::spawn(&burner, &["--seconds", "60"]);
    let pid = target.pid().to_string();
    let agent = spawn_agent(&["--pid", &pid, "cpu", "--duration", "60s"], &out);
    wait_attached(agent.id());
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(agent.id() as libc::pid_t, signal) };
    let output = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the agent writes its partial report: {stderr}");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{stderr}"));
    (serde_json::from_str(&read("report.json")).unwrap(), read("report.md"), stderr)
}

#[test]
fn an_audit_ended_by_sigterm_says_sigterm_and_ctrl_c_says_sigint() {
    let (report, md, stderr) = audit_ended_by(libc::SIGTERM);
    assert_eq!(report["end_reason"], "interrupted");
    assert_eq!(report["partial"], true);
    assert_eq!(report["end_signal"], "SIGTERM", "{report:#}");
    assert!(md.contains("interrupted by SIGTERM after"), "{md}");
    assert!(!md.contains("Ctrl-C"), "a SIGTERM is labelled Ctrl-C: {md}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");

    let (report, md, _) = audit_ended_by(libc::SIGINT);
    assert_eq!(report["end_signal"], "SIGINT");
    assert!(md.contains("interrupted by SIGINT (Ctrl-C) after"), "{md}");
}

#[test]
fn a_target_that_execs_mid_audit_is_said_in_the_report() {
    let burner = fixture("cpu-burner", Build::ReleaseFramePointers);
    let script = format!("sleep 1; exec {} --seconds 20", burner.display());
    let run = run_agent(&["cpu", "--duration", "4s", "--", "/bin/sh", "-c", &script]);
    run.assert_success();
    let report = run.report();
    let exec = &report["target_exec"];
    assert!(exec["exe_after"].as_str().unwrap().ends_with("cpu-burner"), "{report:#}");
    assert!(!exec["exe_before"].as_str().unwrap().ends_with("cpu-burner"), "{exec}");
    let after = exec["after_s"].as_f64().unwrap();
    assert!((0.8..=2.5).contains(&after), "exec after 1 s of sleep, seen at {after} s");
    let md = run.file("report.md");
    assert!(md.contains("The target exec'd during the audit") && md.contains("cpu-burner"), "{md}");
    assert!(run.stderr().contains("exec"), "{}", run.stderr());

    // No exec, no note.
    let run = run_agent(&["cpu", "--duration", "2s", "--", burner.to_str().unwrap(), "--seconds", "10"]);
    run.assert_success();
    assert!(run.report().get("target_exec").is_none(), "{:#}", run.report());
}

#[test]
fn a_self_audit_is_refused_with_one_line_before_any_probe() {
    // `exec` keeps the shell's pid: the agent is handed its own pid.
    let agent = agent_bin();
    assert!(Path::new(&agent).exists());
    let out = Command::new("/bin/sh")
        .args(["-c", &format!("exec {} --pid $$ cpu --duration 2s --quiet", agent.display())])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("perf-audit-agent itself") && lines[0].contains("(fix: "), "{stderr}");
}
