//! CPU profiling of live processes with real eBPF (root required).

use perf_audit_tests::*;

#[test]
fn profiles_a_running_process_by_pid_and_names_its_hot_function() {
    let bin = fixture("cpu-burner", Build::ReleaseFramePointers);
    let target = Running::spawn(&bin, &["--seconds", "30", "--late-thread"]);
    let pid = target.pid().to_string();
    let run = run_agent(&["--pid", &pid, "cpu", "--duration", "4s"]);
    run.assert_success();

    let report = run.report();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["target"]["pid"].as_u64(), Some(target.pid() as u64));
    assert_eq!(report["target"]["name"], "cpu-burner");
    assert_eq!(report["profile"], "cpu");
    let total = report["cpu"]["total_samples"].as_u64().unwrap();
    // Two busy threads at 99 Hz for 4 s on 2 CPUs: ~790 samples.
    assert!(total >= 300, "too few samples: {total}");
    assert_eq!(report["cpu"]["dropped_samples"], 0);

    let hs = hotspots(&report);
    assert_eq!(hs[0].0, "cpu_burner::hot_spin", "hotspots: {hs:?}");
    assert!(hs[0].1 > 60.0, "hot_spin should dominate: {hs:?}");
    assert!(hs.iter().any(|(f, _)| f == "cpu_burner::cold_spin"), "{hs:?}");
    let top = &report["cpu"]["hotspots"][0];
    assert!(top["file"].as_str().unwrap().ends_with("cpu-burner/src/main.rs"), "{top}");
    let line = top["line"].as_u64().unwrap();
    assert!((17..=25).contains(&line), "hot_spin's body is at lines 17-25, got {line}");

    // The thread started after attach is sampled too.
    let threads = report["cpu"]["threads"].as_array().unwrap();
    assert!(threads.iter().any(|t| t["name"] == "late-worker" && t["samples"].as_u64().unwrap() > 50), "{threads:?}");

    let folded = run.file("stacks.folded");
    let hot_line = folded.lines().find(|l| l.contains("cpu_burner::hot_spin")).expect("hot_spin in stacks.folded");
    let (stack, count) = hot_line.rsplit_once(' ').unwrap();
    assert!(count.parse::<u64>().unwrap() > 0);
    let frames: Vec<&str> = stack.split(';').collect();
    let pos = |f: &str| frames.iter().position(|x| *x == f);
    // Root first: main before run_workers before work_unit before hot_spin.
    assert!(pos("cpu_burner::main") < pos("cpu_burner::run_workers"), "{stack}");
    assert!(pos("cpu_burner::work_unit") < pos("cpu_burner::hot_spin"), "{stack}");

    let svg = run.file("flamegraph.svg");
    assert!(svg.contains("cpu_burner::hot_spin"));
    assert!(svg.contains("<script"), "the flamegraph is interactive");

    let md = run.file("report.md");
    assert!(md.contains("### CPU Profiling Results"));
    assert!(md.contains("| `cpu_burner::hot_spin` |"), "{md}");
    assert!(md.contains(&format!("**Total samples**: {total}")));

    let finding = &report["findings"][0];
    assert_eq!(finding["rule"], "cpu-hotspot");
    assert_eq!(finding["function"], "cpu_burner::hot_spin");
    assert_eq!(finding["category"], "cpu");
}

#[test]
fn finds_a_running_process_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = uniquely_named_copy(&fixture("cpu-burner", Build::ReleaseFramePointers), tmp.path(), "byname");
    let name = bin.file_name().unwrap().to_str().unwrap().to_string();
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    let run = run_agent(&[&name, "cpu", "--duration", "2s"]);
    run.assert_success();
    let report = run.report();
    assert_eq!(report["target"]["pid"].as_u64(), Some(target.pid() as u64));
    assert_eq!(report["target"]["name"], name.as_str());
    assert_eq!(hotspots(&report)[0].0, "cpu_burner::hot_spin");
}

#[test]
fn an_ambiguous_name_lists_the_candidates() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = uniquely_named_copy(&fixture("cpu-burner", Build::ReleaseFramePointers), tmp.path(), "twins");
    let name = bin.file_name().unwrap().to_str().unwrap().to_string();
    let a = Running::spawn(&bin, &["--seconds", "30"]);
    let b = Running::spawn(&bin, &["--seconds", "30"]);
    let run = run_agent(&[&name, "cpu", "--duration", "2s"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains(&a.pid().to_string()) && err.contains(&b.pid().to_string()), "{err}");
    assert!(err.contains("--pid"), "the fix names --pid: {err}");
}

#[test]
fn launches_a_command_and_reports_partially_when_it_exits_early() {
    let bin = fixture("cpu-burner", Build::ReleaseFramePointers);
    let bin = bin.to_str().unwrap();
    let run = run_agent(&["cpu", "--duration", "20s", "--", bin, "--seconds", "2"]);
    run.assert_success();
    assert!(run.elapsed.as_secs() < 15, "the audit ends when the target exits ({:?})", run.elapsed);
    let report = run.report();
    assert_eq!(report["end_reason"], "target_exited");
    assert_eq!(report["partial"], true);
    assert!(report["duration_s"].as_f64().unwrap() < 5.0);
    assert!(report["cpu"]["total_samples"].as_u64().unwrap() > 50);
    assert_eq!(hotspots(&report)[0].0, "cpu_burner::hot_spin", "symbolized after the target exited");
    assert!(run.file("report.md").contains("Partial report"));
}

#[test]
fn an_unknown_pid_is_one_line_saying_the_service_is_not_running() {
    let run = run_agent(&["--pid", "3999999", "cpu", "--duration", "1s"]);
    assert_eq!(run.code(), 3);
    let err = run.stderr();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no process with pid 3999999") && err.contains("start it first"), "{err}");
}

#[test]
fn an_unknown_name_is_one_line_saying_the_service_is_not_running() {
    let run = run_agent(&["no-such-service-xyz", "cpu", "--duration", "1s"]);
    assert_eq!(run.code(), 3);
    let err = run.stderr();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no-such-service-xyz") && err.contains("start it first"), "{err}");
}

#[test]
fn without_privileges_the_error_says_to_use_sudo() {
    // Run the agent as `nobody` from a copy it can read.
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("perf-audit-agent");
    std::fs::copy(agent_bin(), &agent).unwrap();
    for dir in [tmp.path(), agent.as_path()] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&agent)
        .args(["--pid", "1", "cpu", "--duration", "1s", "--out", "/tmp/never-written"])
        .output()
        .expect("runuser");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("sudo"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
