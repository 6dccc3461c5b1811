//! The file that is mapped, not the path: a binary replaced on disk by a
//! deploy (a rename over it) or deleted while it runs, and a binary in
//! another mount namespace (a container: its path exists only there), are
//! read through the process. The hot function and the owner's crate come
//! from the code that ran, and the report says what became of the path.

use std::{path::Path, process::Command};

use perf_audit_tests::*;

/// The executable's entry in report.json's symbols.
fn executable(report: &serde_json::Value) -> serde_json::Value {
    report["symbols"].as_array().unwrap().iter().find(|o| o["executable"] == true).unwrap_or_else(|| panic!("no executable in {:#}", report["symbols"])).clone()
}

fn build_id(bin: &Path) -> String {
    let out = Command::new("readelf").args(["-n"]).arg(bin).output().expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("a build-id note").trim().to_string()
}

fn audit_hot_spin(pid: u32) -> (serde_json::Value, AgentRun) {
    let run = run_agent(&["--pid", &pid.to_string(), "cpu", "--duration", "3s"]);
    run.assert_success();
    let report = run.report();
    let hs = hotspots(&report);
    assert_eq!(hs.first().map(|h| h.0.as_str()), Some("cpu_burner::hot_spin"), "hotspots: {hs:?}");
    let found = findings(&report);
    assert!(found.iter().any(|(r, f, _, _)| r == "cpu-hotspot" && f == "cpu_burner::hot_spin"), "{found:?}");
    (report, run)
}

#[test]
fn a_binary_replaced_on_disk_is_read_as_it_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let original = fixture("cpu-burner", Build::Release);
    let bin = tmp.path().join("svc");
    std::fs::copy(&original, &bin).unwrap();
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The deploy: another build renamed over the path.
    let other = fixture("ctx-switch", Build::Release);
    let staged = tmp.path().join("svc.new");
    std::fs::copy(&other, &staged).unwrap();
    std::fs::rename(&staged, &bin).unwrap();

    let (report, run) = audit_hot_spin(target.pid());
    let exe = executable(&report);
    assert_eq!(exe["on_disk"], "replaced", "{exe:#}");
    assert_eq!(exe["build_id"].as_str(), Some(build_id(&original).as_str()), "the build-id of the code that ran: {exe:#}");
    assert_eq!(exe["object"].as_str(), Some(bin.to_str().unwrap()), "named as the process knows it: {exe:#}");
    assert_eq!(exe["line_info"], true);
    assert!(run.file("report.md").contains("was replaced on disk while the process ran it"));
}

#[test]
fn a_deleted_binary_is_read_through_the_process_not_called_stripped() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("svc");
    std::fs::copy(fixture("cpu-burner", Build::Release), &bin).unwrap();
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::remove_file(&bin).unwrap();

    let (report, run) = audit_hot_spin(target.pid());
    let exe = executable(&report);
    assert_eq!((exe["on_disk"].as_str(), exe["symbols"].as_bool(), exe["line_info"].as_bool()), (Some("deleted"), Some(true), Some(true)), "{exe:#}");
    let md = run.file("report.md");
    assert!(md.contains("was deleted from disk") && !md.contains("is stripped"), "{md}");
}

/// A private mount namespace (as a container has): the binary lives on a
/// tmpfs mounted only there, so its path names nothing on the host.
#[test]
fn a_binary_in_another_mount_namespace_is_the_owners_code() {
    let tmp = tempfile::tempdir().unwrap();
    let original = fixture("cpu-burner", Build::Release);
    let inside = tmp.path().join("app");
    std::fs::create_dir(&inside).unwrap();
    let script = format!(
        "mount -t tmpfs none {dir} && cp {bin} {dir}/svc && exec {dir}/svc --seconds 30",
        dir = inside.display(),
        bin = original.display()
    );
    let target = Running::spawn(Path::new("/usr/bin/unshare"), &["--mount", "--propagation", "private", "sh", "-c", &script]);
    // Until the exec: the process runs `sh`, then `svc`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_link(format!("/proc/{}/exe", target.pid())).is_ok_and(|p| p.ends_with("svc")) {
        assert!(std::time::Instant::now() < deadline, "the namespaced service did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!inside.join("svc").exists(), "the binary must not be visible from the host's mount namespace");

    let (report, _run) = audit_hot_spin(target.pid());
    let exe = executable(&report);
    assert_eq!(exe["owner_crates"], serde_json::json!(["cpu_burner"]), "{exe:#}");
    assert_eq!(exe["build_id"].as_str(), Some(build_id(&original).as_str()));
}
