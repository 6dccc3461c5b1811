//! The async profile on a fixture Tokio service under load (real eBPF):
//! each planted blocker is found at its own function; the well-behaved
//! endpoint (tokio::fs, spawn_blocking) is not flagged.

use perf_audit_tests::*;

#[test]
fn blocking_calls_locks_and_long_polls_are_found_at_their_functions() {
    let bin = fixture("async-service", Build::Release);
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let scenario = tmp.path().join("scenario.toml");
    let mut text = String::new();
    for (path, weight) in [("/fs", 1), ("/lock", 2), ("/cpu", 1), ("/good", 2)] {
        text.push_str(&format!("[[request]]\nurl = \"http://{addr}{path}\"\nweight = {weight}\n\n"));
    }
    std::fs::write(&scenario, text).unwrap();
    let data = tmp.path().join("data");
    let run = run_agent(&[
        "async", "--duration", "8s", "--rps", "100", "--scenario", scenario.to_str().unwrap(),
        "--", bin.to_str().unwrap(), "--listen", &addr, "--data", data.to_str().unwrap(),
    ]);
    run.assert_success();
    let report = run.report();
    let a = &report["async"];
    assert_eq!(a["workers"]["workers"], 2, "the fixture runs 2 Tokio workers: {}", a["workers"]);
    assert_eq!(report["offcpu"]["dropped_intervals"], 0);

    let found = findings(&report);
    let at = |rule: &str, function: &str| {
        found
            .iter()
            .find(|(r, f, _, _)| r == rule && f == function)
            .unwrap_or_else(|| panic!("no {rule} at {function}: {found:?}"))
            .clone()
    };
    let source = std::fs::read_to_string(workspace_root().join("tests/fixtures/async-service/src/main.rs")).unwrap();
    let inside = |function: &str, line: u64| {
        let short = function.rsplit("::").next().unwrap();
        let start = source.lines().position(|l| l.contains(&format!("fn {short}("))).unwrap() as u64 + 1;
        assert!((start..start + 15).contains(&line), "{function} reported at line {line}, its body starts at {start}");
    };

    let fs = at("blocking-in-async", "async_service::read_settings_blocking");
    inside(&fs.1, fs.3);
    let sleep = at("blocking-in-async", "async_service::update_shared_stats");
    inside(&sleep.1, sleep.3);
    let lock = at("sync-lock-contention", "async_service::update_shared_stats");
    inside(&lock.1, lock.3);
    let cpu = at("cpu-heavy-in-async", "async_service::compute_digest");
    inside(&cpu.1, cpu.3);

    // The well-behaved endpoint does the same kinds of work off the workers.
    for (_, function, _, _) in &found {
        assert!(!function.contains("read_settings_async"), "the tokio::fs path is flagged: {found:?}");
    }
    // The blocking pool is not a worker.
    let threads = report["offcpu"]["threads"].as_array().unwrap();
    assert!(threads.iter().filter(|t| t["role"] == "worker").count() <= 2, "{threads:?}");

    let md = run.file("report.md");
    assert!(md.contains("### Async Runtime Analysis") && md.contains("**Task breakdown**"));
    // The time-weighted off-CPU stacks name the blocker (the SVG may drop
    // frames narrower than a pixel; the folded file keeps every stack). The
    // 8 ms sleep always passes the 1 ms capture threshold (an fsync may not).
    assert!(run.file("offcpu.folded").contains("async_service::update_shared_stats"));
    assert!(run.file("offcpu.svg").contains("<svg"));
}

#[test]
fn tokio_console_task_stats_are_read_when_the_target_runs_console_subscriber() {
    let bin = fixture("async-service", Build::ReleaseTokioConsole);
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let console = free_loopback_addr();
    let scenario = tmp.path().join("scenario.toml");
    std::fs::write(&scenario, format!("[[request]]\nurl = \"http://{addr}/good\"\nweight = 1\n")).unwrap();
    let data = tmp.path().join("data");
    let run = run_agent(&[
        "async", "--duration", "5s", "--rps", "40", "--console", &console, "--scenario", scenario.to_str().unwrap(),
        "--", bin.to_str().unwrap(), "--listen", &addr, "--data", data.to_str().unwrap(), "--console", &console,
    ]);
    run.assert_success();
    let report = run.report();
    let c = &report["async"]["console"];
    assert_eq!(c["listening"], true, "{c}");
    let summary = &c["summary"];
    // Every /good request spawns a blocking task (tokio::fs, spawn_blocking).
    assert!(summary["tasks_seen"].as_u64().unwrap() >= 100, "{summary}");
    let locations = summary["locations"].as_array().unwrap();
    assert!(locations.iter().any(|l| l["location"].as_str().unwrap().contains("async-service/src/main.rs") && l["polls"].as_u64().unwrap() > 0), "{locations:?}");
    assert!(run.file("report.md").contains("**Total tasks spawned**"));
}

#[test]
fn without_console_subscriber_the_report_says_how_to_enable_it() {
    let bin = fixture("cpu-burner", Build::Release);
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    let pid = target.pid().to_string();
    let closed = free_loopback_addr();
    let run = run_agent(&["--pid", &pid, "async", "--duration", "2s", "--console", &closed]);
    run.assert_success();
    let c = &run.report()["async"]["console"];
    assert_eq!(c["listening"], false);
    assert!(c["note"].as_str().unwrap().contains("console_subscriber::init()"), "{c}");
}
