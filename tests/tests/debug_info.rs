//! Binaries as users ship them (issue 15): cargo's default release profile
//! (symbols, no line tables), `strip = true` with a separate debug file
//! found by build-id or `.gnu_debuglink`, and `strip = true` with nothing.
//! The same fixture, the same hot function (`cpu_burner::hot_spin`, ~90% of
//! the CPU), named at function level wherever a symbol or debug file exists
//! and with file:line where line tables were found.

use perf_audit_tests::*;
use serde_json::Value;

fn audit(bin: &std::path::Path, extra: &[&str]) -> AgentRun {
    let bin = bin.to_str().unwrap();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["cpu", "--duration", "3s", "--", bin, "--seconds", "20"]);
    let run = run_agent(&args);
    run.assert_success();
    run
}

fn executable(report: &Value) -> &Value {
    let objects = report["symbols"].as_array().expect("report.json lists the objects' symbols");
    objects.iter().find(|o| o["executable"] == true).unwrap_or_else(|| panic!("no executable in {objects:?}"))
}

/// The hot function is the top hotspot and the top finding, of the owner's
/// code; returns the hotspot row.
fn assert_hot_spin_found(report: &Value) -> Value {
    let hs = hotspots(report);
    assert_eq!(hs[0].0, "cpu_burner::hot_spin", "hotspots: {hs:?}");
    assert!(hs[0].1 > 60.0, "{hs:?}");
    let top = report["cpu"]["hotspots"][0].clone();
    assert_eq!(top["origin"], "owner", "{top}");
    let f = findings(report);
    assert_eq!((f[0].0.as_str(), f[0].1.as_str()), ("cpu-hotspot", "cpu_burner::hot_spin"), "{f:?}");
    top
}

#[test]
fn default_release_profile_finds_the_owner_function_without_line_info_and_says_how_to_get_lines() {
    let bin = fixture("cpu-burner", Build::ReleaseNoDebugInfo);
    let run = audit(&bin, &[]);
    let report = run.report();
    let top = assert_hot_spin_found(&report);
    assert!(top["file"].is_null() && top["line"].is_null(), "no line tables, no file:line: {top}");
    let exe = executable(&report);
    assert_eq!(exe["symbols"], true, "{exe}");
    assert_eq!(exe["line_info"], false, "{exe}");
    assert!(exe["build_id"].as_str().is_some_and(|b| b.len() == 40), "{exe}");
    assert!(exe["owner_crates"].as_array().unwrap().iter().any(|c| c == "cpu_burner"), "{exe}");
    let md = run.file("report.md");
    let header = md.split("\n---\n").next().unwrap();
    assert!(header.contains("**No line info** in `cpu-burner`") && header.contains("debug = \"line-tables-only\""), "{header}");
    assert_eq!(md.matches("line-tables-only").count(), 1, "said once");
}

#[test]
fn stripped_binary_with_a_build_id_debug_file_gets_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), tmp.path(), DebugFileLayout::BuildId);
    let debug_dir = tmp.path().join("debug");
    let run = audit(&bin, &["--debug-dir", debug_dir.to_str().unwrap()]);
    let report = run.report();
    let top = assert_hot_spin_found(&report);
    assert!(top["file"].as_str().unwrap().ends_with("cpu-burner/src/main.rs"), "{top}");
    assert!((17..=25).contains(&top["line"].as_u64().unwrap()), "{top}");
    let exe = executable(&report);
    assert_eq!(exe["line_info"], true, "{exe}");
    assert!(exe["debug_file"].as_str().unwrap().contains("/debug/.build-id/"), "{exe}");
    assert!(!run.file("report.md").contains("**No line info**"));
}

#[test]
fn stripped_binary_with_a_debuglink_finds_its_debug_file_in_dot_debug() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), tmp.path(), DebugFileLayout::DebugLink);
    let report = audit(&bin, &[]).report();
    let top = assert_hot_spin_found(&report);
    assert!((17..=25).contains(&top["line"].as_u64().unwrap()), "{top}");
    let exe = executable(&report);
    assert!(exe["debug_file"].as_str().unwrap().ends_with("/.debug/cpu-burner.debug"), "{exe}");
}

#[test]
fn split_debuginfo_packed_keeps_file_and_line() {
    let bin = fixture("cpu-burner", Build::ReleaseSplitDebugInfoPacked);
    assert!(bin.with_extension("dwp").is_file(), "cargo wrote the .dwp beside the binary");
    let report = audit(&bin, &[]).report();
    let top = assert_hot_spin_found(&report);
    assert!((17..=25).contains(&top["line"].as_u64().unwrap()), "{top}");
    assert_eq!(executable(&report)["line_info"], true);
}

#[test]
fn stripped_binary_without_debug_info_blames_its_own_offsets_never_a_start_frame() {
    let bin = fixture("cpu-burner", Build::ReleaseStripped);
    let run = audit(&bin, &[]);
    let report = run.report();
    let hs = hotspots(&report);
    // The same build with symbols names the function at that file offset.
    let with_symbols = fixture("cpu-burner", Build::ReleaseNoDebugInfo);
    let offset = perf_audit_agent::debuginfo::function_file_offset(&with_symbols, "cpu_burner::hot_spin").expect("hot_spin's symbol");
    assert_eq!(hs[0].0, format!("cpu-burner+{offset:#x}"), "hot_spin by its file offset: {hs:?}");
    assert!(hs[0].1 > 60.0, "{hs:?}");
    for (function, _) in &hs {
        assert!(!perf_audit_agent::profile::is_thread_root(function), "a start frame charged: {hs:?}");
    }
    assert!(findings(&report).is_empty(), "no finding can name the owner's code: {:?}", findings(&report));
    let exe = executable(&report);
    assert_eq!((exe["symbols"].as_bool(), exe["line_info"].as_bool()), (Some(false), Some(false)), "{exe}");
    assert!(exe["build_id"].as_str().is_some_and(|b| b.len() == 40), "the build-id finds the debug file later: {exe}");
    let md = run.file("report.md");
    assert!(md.contains("**`cpu-burner` is stripped**"), "{md}");
    assert!(run.file("stacks.folded").contains(&format!("cpu-burner+{offset:#x}")));
}

#[test]
fn symbolize_names_a_saved_stripped_audit_once_the_debug_file_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), tmp.path(), DebugFileLayout::BuildId);
    // Audited in "production": the debug file is elsewhere, not given.
    let run = audit(&bin, &[]);
    let before = run.report();
    assert!(hotspots(&before)[0].0.starts_with("cpu-burner+0x"), "{:?}", hotspots(&before));
    assert!(findings(&before).is_empty());
    let exe = executable(&before);
    assert!(exe["load_segments"].as_array().is_some_and(|s| !s.is_empty()), "the offsets can be read back: {exe}");

    let out = tmp.path().join("named");
    let debug_dir = tmp.path().join("debug");
    let status = std::process::Command::new(agent_bin())
        .arg("symbolize")
        .arg(&run.out_dir)
        .arg("--debug-dir")
        .arg(&debug_dir)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run symbolize");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim_end().lines().last(), Some(out.to_str().unwrap()));
    let after: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let top = assert_hot_spin_found(&after);
    assert!(top["file"].as_str().unwrap().ends_with("cpu-burner/src/main.rs"), "{top}");
    // The location has its line: where the function begins (the samples'
    // own lines were not saved), shown as file:line in report.md.
    let line = top["line"].as_u64().unwrap_or_else(|| panic!("no line: {top}"));
    let source = std::fs::read_to_string(top["file"].as_str().unwrap()).unwrap();
    let text = source.lines().nth(line as usize - 1).unwrap_or_default();
    assert!(text.contains("fn hot_spin"), "line {line} is `{text}`, not the start of hot_spin");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("cpu-burner/src/main.rs:{line}")), "{md}");
    // Every location the original audit had (libc's, with its debug info)
    // is kept.
    for row in before["cpu"]["hotspots"].as_array().unwrap().iter().filter(|h| h["file"].is_string()) {
        if let Some(again) = after["cpu"]["hotspots"].as_array().unwrap().iter().find(|h| h["function"] == row["function"]) {
            assert_eq!((&again["file"], &again["line"]), (&row["file"], &row["line"]), "{row} lost its location: {again}");
        }
    }
    assert_eq!(executable(&after)["line_info"], true);
    let folded = std::fs::read_to_string(out.join("stacks.folded")).unwrap();
    assert!(folded.contains("cpu_burner::work_unit;cpu_burner::hot_spin "), "{folded}");
    assert!(std::fs::read_to_string(out.join("flamegraph.svg")).unwrap().contains("cpu_burner::hot_spin"));
    assert!(!std::fs::read_to_string(out.join("report.md")).unwrap().contains("is stripped"));
}

/// A real `debuginfod` (Debian's elfutils server) serving a directory of
/// debug files on loopback.
struct Debuginfod {
    child: std::process::Child,
    url: String,
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Debuginfod {
    fn serve(dir: &std::path::Path, db: &std::path::Path, build_id: &str) -> Debuginfod {
        let addr = free_loopback_addr();
        let port = addr.rsplit(':').next().unwrap();
        let child = std::process::Command::new("debuginfod")
            .args(["-F", dir.to_str().unwrap(), "-p", port, "-t", "1", "-d", db.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("debuginfod is installed (apt-get install debuginfod)");
        let server = Debuginfod { child, url: format!("http://{addr}") };
        // Wait until it has scanned the directory and serves the file.
        let start = std::time::Instant::now();
        loop {
            let listening = std::net::TcpStream::connect(&addr).is_ok();
            let status = if listening { http_get(&addr, &format!("/buildid/{build_id}/debuginfo")).0 } else { 0 };
            if status == 200 {
                break;
            }
            assert!(start.elapsed().as_secs() < 60, "debuginfod did not serve {build_id} (status {status})");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        server
    }
}

#[test]
fn stripped_binary_gets_its_debug_file_from_debuginfod() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), tmp.path(), DebugFileLayout::BuildId);
    // The server's directory holds the debug file; the agent is not told where.
    let debug = walk(&tmp.path().join("debug/.build-id"));
    let build_id = format!(
        "{}{}",
        debug.parent().unwrap().file_name().unwrap().to_str().unwrap(),
        debug.file_stem().unwrap().to_str().unwrap()
    );
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::rename(&debug, served.join("cpu-burner.debug")).unwrap();
    let server = Debuginfod::serve(&served, &tmp.path().join("debuginfod.sqlite"), &build_id);
    let cache = tmp.path().join("cache");
    let bin_s = bin.to_str().unwrap();
    let run = run_agent_with_env(
        &["cpu", "--duration", "3s", "--", bin_s, "--seconds", "20"],
        &[("DEBUGINFOD_URLS", &server.url), ("DEBUGINFOD_CACHE_PATH", cache.to_str().unwrap())],
    );
    run.assert_success();
    let report = run.report();
    let top = assert_hot_spin_found(&report);
    assert!((17..=25).contains(&top["line"].as_u64().unwrap()), "{top}");
    let exe = executable(&report);
    let expected = cache.join(&build_id).join("debuginfo");
    assert_eq!(exe["debug_file"].as_str(), expected.to_str(), "fetched into the client cache: {exe}");
}

/// The one file under `dir`.
fn walk(dir: &std::path::Path) -> std::path::PathBuf {
    let entry = std::fs::read_dir(dir).unwrap().next().expect("not empty").unwrap().path();
    if entry.is_dir() { walk(&entry) } else { entry }
}

/// Audits the async fixture under its load scenario with `profile`.
///
/// Lock contention must not depend on scheduling jitter: the load is an
/// evenly spaced weighted round-robin, and `/lock` holds the mutex for
/// 8 ms, so two `/lock` requests overlap only when they are sent less than
/// 8 ms apart. With these weights every cycle of six sends `/lock` twice in
/// a row (`lock fs lock cpu good | lock ...`), 6.7 ms apart at 150 rps: the
/// second waits ~1.3 ms or more on the futex, above the 1 ms capture
/// threshold, 25 times a second. (At 100 rps with `/lock` never sent twice
/// in a row, contention came only from requests delayed by `/cpu` or a slow
/// fsync, and a quiet machine had almost none.)
fn audit_async_service(bin: &std::path::Path, profile: &str) -> AgentRun {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let scenario = tmp.path().join("scenario.toml");
    let mut text = String::new();
    for (path, weight) in [("/fs", 1), ("/lock", 3), ("/cpu", 1), ("/good", 1)] {
        text.push_str(&format!("[[request]]\nurl = \"http://{addr}{path}\"\nweight = {weight}\n\n"));
    }
    std::fs::write(&scenario, text).unwrap();
    let data = tmp.path().join("data");
    let run = run_agent(&[
        profile, "--duration", "8s", "--rps", "150", "--scenario", scenario.to_str().unwrap(),
        "--", bin.to_str().unwrap(), "--listen", &addr, "--data", data.to_str().unwrap(),
    ]);
    run.assert_success();
    run
}

/// Without line tables, the async rules still name the owner's functions.
#[test]
fn default_release_profile_gets_the_async_findings_at_function_level() {
    let run = audit_async_service(&fixture("async-service", Build::ReleaseNoDebugInfo), "async");
    let found = findings(&run.report());
    for (rule, function) in [
        ("blocking-in-async", "async_service::read_settings_blocking"),
        ("blocking-in-async", "async_service::update_shared_stats"),
        ("sync-lock-contention", "async_service::update_shared_stats"),
        ("cpu-heavy-in-async", "async_service::compute_digest"),
    ] {
        assert!(found.iter().any(|(r, f, _, _)| r == rule && f == function), "no {rule} at {function}: {found:?}");
    }
    for (_, function, _, _) in &found {
        assert!(!function.contains("read_settings_async") && !function.starts_with("tokio::"), "{found:?}");
    }
}

/// A static musl binary (scratch images): CPU, memory (musl's malloc
/// linked into the executable) and async profiles, one audit.
#[test]
fn a_static_musl_build_is_audited_with_cpu_memory_and_async() {
    let run = audit_async_service(&fixture("async-service", Build::ReleaseStaticMusl), "all");
    let report = run.report();
    let cpu = &report["cpu"];
    assert!(cpu["stack_completeness_pct"].as_f64().unwrap() > 50.0, "musl's thread entries count as roots: {cpu}");
    let memory = &report["memory"];
    assert!(memory["allocator"].as_str().unwrap().starts_with("malloc linked into the executable"), "{}", memory["allocator"]);
    assert!(memory["total_allocations"].as_u64().unwrap() > 0, "{memory}");
    assert_eq!(report["async"]["workers"]["workers"], 2);
    let found = findings(&report);
    for (rule, function) in [
        ("cpu-hotspot", "async_service::compute_digest"),
        ("cpu-heavy-in-async", "async_service::compute_digest"),
        ("blocking-in-async", "async_service::read_settings_blocking"),
        ("blocking-in-async", "async_service::update_shared_stats"),
        // The futex wait is inside musl's `syscall`, whose unwind table is
        // in .debug_frame only.
        ("sync-lock-contention", "async_service::update_shared_stats"),
    ] {
        assert!(found.iter().any(|(r, f, _, l)| r == rule && f == function && *l > 0), "no {rule} at {function}: {found:?}");
    }
    let exe = executable(&report);
    assert_eq!(exe["line_info"], true, "{exe}");
}
