//! `cargo xtask demo`: the whole product in one command. Builds the agent
//! and the demo service, then lets the agent do the rest: a private
//! PostgreSQL (`--private-database`), the demo service launched under
//! audit (`-- demo-service`), open-loop load from the demo's scenario, and
//! the `all` profile. The report directory is the last line printed.

use std::{net::TcpListener, process::Command};

use crate::{cargo, run_checked, workspace_root};

pub fn run(extra: &[String]) -> Result<(), String> {
    // Only what the demo runs: no test tooling (`cargo xtask setup` has it).
    crate::setup::install_missing_packages(crate::setup::DEMO_PACKAGES)?;
    crate::setup::mount_tracefs();
    let root = workspace_root();
    run_checked(
        cargo().current_dir(&root).args(["build", "--release", "-p", "perf-audit-agent"]),
        "building perf-audit-agent (release; the first build installs rust-src and bpf-linker)",
    )?;
    let demo_dir = root.join("examples/demo-service");
    run_checked(
        cargo().current_dir(&demo_dir).args(["build", "--release"]),
        "building the demo service (release, debug info, no frame pointers)",
    )?;

    // A free loopback port for the service, written into the scenario.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let template = std::fs::read_to_string(demo_dir.join("scenario.toml")).map_err(|e| format!("scenario.toml: {e}"))?;
    let demo_target = root.join("target/demo");
    std::fs::create_dir_all(&demo_target).map_err(|e| format!("{}: {e}", demo_target.display()))?;
    let scenario = demo_target.join("scenario.toml");
    std::fs::write(&scenario, template.replace("127.0.0.1:8080", &addr)).map_err(|e| format!("{e}"))?;

    let seconds = std::env::var("DEMO_SECONDS").unwrap_or_else(|_| "30".into());
    let rps = std::env::var("DEMO_RPS").unwrap_or_else(|_| "100".into());
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let out = demo_target.join(format!("perf-audit-demo-service-{stamp}"));
    let agent = root.join("target/release/perf-audit-agent");
    let mut cmd = Command::new(&agent);
    cmd.arg("all")
        // Precise memory mode: the demo's unbounded cache grows by a dozen
        // entries a second, too few for the default 2% duty cycle to see
        // in a short demo.
        .args(["--duration", &format!("{seconds}s"), "--rps", &rps, "--memory", "precise", "--private-database", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .arg("--")
        .arg(demo_dir.join("target/release/demo-service"))
        .args(["--listen", &addr]);
    eprintln!("xtask: auditing the demo service for {seconds} s at {rps} rps (private PostgreSQL, profile all)");
    let status = cmd.status().map_err(|e| format!("cannot run {}: {e}", agent.display()))?;
    if !status.success() {
        return Err(format!("the demo audit failed ({status})"));
    }
    eprintln!("xtask: open report.html in a browser, or read report.md, in:");
    println!("{}", out.display());
    Ok(())
}
