//! Issue 26's false-alarm classes on a real axum service
//! (`tests/fixtures/framework-service`), audited with profile `all` and
//! precise memory under load: log lines written by tracing's fmt layer to
//! a stdout pipe that its reader drains slowly are synchronous logging, not
//! file I/O (a real `std::fs` write is); argon2's working memory, axum's and
//! the `from_fn` middleware's per-request allocations are not the owner's
//! allocation findings (the owner's own `String`s are); a callee of a poll
//! is not a finding of its own; a steady service does not grow.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    time::Duration,
};

use perf_audit_tests::*;

/// The service with its stdout on a pipe that a "log shipper" thread reads
/// at ~27 KiB/s, half of what `/checkout` writes under the test's load.
struct Service {
    child: std::process::Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        let bin = fixture("framework-service", Build::Release);
        let data = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr();
        let mut child = Command::new(&bin)
            .args(["--listen", &addr, "--data", data.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.contains("listening on"), "{first}");
        // Straight from the pipe (a BufReader would take 8 KiB a read).
        let mut pipe = out.into_inner();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // At most 4 KiB every 150 ms (~27 KiB/s): a shipper that falls
            // behind the ~56 KB/s `/checkout` writes at the test's load.
            while pipe.read(&mut buf).is_ok_and(|n| n > 0) {
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        Service { child, addr, _data: data }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn framework_service_false_alarm_classes_stay_silent_and_their_twins_are_found() {
    let service = Service::start();
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("scenario.toml");
    let mut text = String::new();
    for (path, weight) in [("/checkout", 4), ("/export", 1), ("/login", 1), ("/render", 3), ("/profile", 2), ("/health", 1)] {
        text.push_str(&format!("[[request]]\nurl = \"http://{}{path}\"\nweight = {weight}\n\n", service.addr));
    }
    std::fs::write(&scenario, text).unwrap();
    let pid = service.child.id().to_string();
    let run = run_agent(&["--pid", &pid, "all", "--memory", "precise", "--duration", "10s", "--rps", "60", "--scenario", scenario.to_str().unwrap()]);
    run.assert_success();
    let report = run.report();
    let found = findings(&report);
    let a = &report["async"];
    eprintln!("findings: {found:#?}\nblocking: {:#}\nlong polls: {:#}\ntop allocators: {:#}", a["blocking"], a["long_polls"], report["memory"]["top_allocators"]);
    let full: Vec<&serde_json::Value> = report["findings"].as_array().unwrap().iter().collect();
    let finding = |rule: &str, function: &str| full.iter().find(|f| f["rule"] == rule && f["function"] == function).copied();

    // Class 2: the log writes are synchronous logging, on a pipe.
    let site = a["blocking"].as_array().unwrap().iter().find(|b| b["function"] == "framework_service::checkout").unwrap_or_else(|| panic!("no blocking site at checkout: {:#}", a["blocking"]));
    assert_eq!(site["kind"], "logging", "{site:#}");
    assert!(site["syscalls"].to_string().contains("on fd 1 (pipe)"), "{site:#}");
    let log = finding("blocking-in-async", "framework_service::checkout").unwrap_or_else(|| panic!("{found:?}"));
    assert!(log["title"].as_str().unwrap().starts_with("Synchronous logging on the request path"), "{log:#}");
    let rec = log["recommendation"].as_str().unwrap();
    assert!(rec.contains("tracing_appender::non_blocking") && !rec.contains("use tokio::fs"), "{rec}");
    // Waiting for stdout's lock behind a blocked write is the same cause.
    assert!(finding("sync-lock-contention", "framework_service::checkout").is_none(), "{found:?}");
    // Its twin: a regular file written with std::fs is file I/O.
    let export = full
        .iter()
        .find(|f| f["rule"] == "blocking-in-async" && f["function"].as_str().unwrap().ends_with("export"))
        .unwrap_or_else(|| panic!("no blocking file I/O at the export: {found:?}"));
    assert!(export["title"].as_str().unwrap().contains("blocking file I/O") && export["recommendation"].as_str().unwrap().contains("tokio::fs"), "{export:#}");
    assert!(export["evidence"].as_str().unwrap().contains("(file)"), "{export:#}");

    // Class 1: library allocations below an owner frame are not findings.
    let memory_rules = ["allocation-churn", "allocation-hot-path", "memory-leak", "unbounded-growth"];
    for (rule, function, _, _) in &found {
        if memory_rules.contains(&rule.as_str()) {
            // The owner's own strings: render_rows' rows, the catalogue's
            // clone (String::with_capacity per name in its own loop).
            assert!(
                function == "framework_service::render_rows" || function == "<framework_service::Catalog as core::clone::Clone>::clone",
                "{rule} at {function}: {found:?}"
            );
        }
    }
    let top = &report["memory"]["top_allocators"];
    let login = top.as_array().unwrap().iter().find(|r| r["function"] == "framework_service::login").unwrap_or_else(|| panic!("{top:#}"));
    assert!(login["via"].as_str().unwrap_or_default().starts_with("argon2::"), "{login:#}");
    assert!(run.file("report.md").contains("(made by `argon2` below it: argon2's working memory)"));
    // The owner's own strings are.
    assert!(
        found.iter().any(|(r, f, _, _)| (r == "allocation-churn" || r == "allocation-hot-path") && f == "framework_service::render_rows"),
        "no allocation finding at render_rows: {found:?}\n{top:#}"
    );

    // Class 4: the clone is part of profile_page's polls.
    assert!(finding("cpu-heavy-in-async", "<framework_service::Catalog as core::clone::Clone>::clone").is_none(), "{found:?}");
    // Class 6: argon2 on the blocking pool is never idle or runtime work.
    for row in report["cpu"]["hotspots"].as_array().unwrap() {
        let f = row["function"].as_str().unwrap();
        assert!(!(f.starts_with("argon2::") && row["recommendation"].as_str().unwrap().contains("idle or runtime work")), "{row:#}");
    }
}
