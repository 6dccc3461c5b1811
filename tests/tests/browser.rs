//! report.html in a real browser: the demo audit (as in demo.rs, shorter),
//! then Debian's headless `chromium`, driven by `playwright-core` from npm
//! (`tests/browser/`, installed with `npm ci` from its committed lock file),
//! loads the report from file:// and checks what a reader relies on (see
//! `tests/browser/check-report.mjs`): the summary before the first profile
//! section, the plots, a flamegraph click that zooms, search, no network
//! request, no console error (a CSP violation is one), no sideways
//! scrolling in a narrow window. Screenshots are kept in
//! `target/browser-test/` as artifacts. Never skipped: without chromium or
//! node it fails and says how to install them (`cargo xtask setup`).

use std::process::Command;

use perf_audit_tests::*;

#[test]
fn the_demo_report_leads_with_what_to_fix_and_works_in_headless_chromium() {
    let demo = demo_service_bin();
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let scenario = demo_scenario(tmp.path(), &addr);
    let run = run_agent(&[
        "all", "--memory", "precise", "--duration", "10s", "--rps", "100", "--private-database", "--scenario",
        scenario.to_str().unwrap(), "--", demo.to_str().unwrap(), "--listen", &addr,
    ]);
    run.assert_success();

    // The terminal summary: the baseline in one line, the P0/P1 findings
    // one line each, the report directory as the last stdout line.
    let stderr = run.stderr();
    let stdout = String::from_utf8_lossy(&run.output.stdout).into_owned();
    assert_eq!(stdout.lines().last(), Some(run.out_dir.display().to_string().as_str()), "stdout: {stdout}");
    assert!(stderr.lines().any(|l| l.starts_with("perf-audit: baseline: ") && l.contains(" rps") && l.contains("p99")), "{stderr}");
    let report = run.report();
    let urgent: Vec<&serde_json::Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "P0" || f["severity"] == "P1").collect();
    assert!(!urgent.is_empty(), "the demo has P0/P1 findings");
    for f in &urgent {
        let start = format!("perf-audit: {} {}", f["severity"].as_str().unwrap(), f["title"].as_str().unwrap());
        let place = match (f["file"].as_str(), f["line"].as_u64()) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            _ => String::new(),
        };
        assert!(
            stderr.lines().any(|l| l.starts_with(&start) && l.contains(&place)),
            "no terminal line `{start}...{place}` in:\n{stderr}"
        );
    }

    // The JSON carries the series the plots are drawn from.
    assert!(report["baseline"]["load"]["series"]["points"].as_array().is_some_and(|p| p.len() >= 8), "{}", report["baseline"]["load"]["series"]);
    assert!(report["cpu"]["timeline"]["points"].as_array().is_some_and(|p| !p.is_empty()), "cpu.timeline: {}", report["cpu"]["timeline"]);

    let browser = workspace_root().join("tests/browser");
    npm_ci(&browser);
    let artifacts = workspace_root().join("target/browser-test");
    // Keep the page next to its screenshots, to look at after a CI run.
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::copy(run.out_dir.join("report.html"), artifacts.join("report.html")).unwrap();
    let out = Command::new("node")
        .arg(browser.join("check-report.mjs"))
        .arg(run.out_dir.join("report.html"))
        .arg(&artifacts)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Debian package nodejs; `cargo xtask setup` installs it): {e}"));
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "report.html failed in chromium:\n{seen}\n{}\n(the page and its screenshots are in {})",
        String::from_utf8_lossy(&out.stderr),
        artifacts.display()
    );
    for shot in ["report-first-screen.png", "flamegraph-zoomed.png", "report-narrow.png"] {
        assert!(artifacts.join(shot).metadata().is_ok_and(|m| m.len() > 1000), "screenshot {shot} missing");
    }
}

/// `npm ci` in `dir` unless its lock file is installed already.
fn npm_ci(dir: &std::path::Path) {
    let installed = dir.join("node_modules/.package-lock.json");
    let fresh = match (installed.metadata().and_then(|m| m.modified()), dir.join("package-lock.json").metadata().and_then(|m| m.modified())) {
        (Ok(installed), Ok(lock)) => installed >= lock,
        _ => false,
    };
    if fresh {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run npm (Debian package npm; `cargo xtask setup` installs it): {e}"));
    assert!(out.status.success(), "npm ci in {} failed:\n{}", dir.display(), String::from_utf8_lossy(&out.stderr));
}
