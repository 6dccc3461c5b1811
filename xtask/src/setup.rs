//! Installs what a fresh machine lacks: Debian packages for the tools the
//! tests and benchmarks call, a mounted tracefs, the browser test's npm
//! packages (`npm ci` from tests/browser's lock file), and (by building the
//! agent, whose build script does it) rust-src and bpf-linker.

use std::{path::Path, process::Command};

use crate::{cargo, run_checked, workspace_root};

/// (command that must exist, Debian package that provides it).
const PACKAGES: &[(&str, &str)] = &[
    ("perf", "linux-perf"),
    ("runuser", "util-linux"),
    // The mem-leaker fixture's jemalloc and mimalloc builds compile C.
    ("make", "make"),
    ("cc", "gcc"),
    ("promtool", "prometheus"),
    // The daemon's consumer tests: `go tool pprof` reads its profiles (the
    // Prometheus server above scrapes its /metrics).
    ("go", "golang-go"),
    // Baselines of `cargo xtask bench memory`.
    ("heaptrack", "heaptrack"),
    ("bpftrace", "bpftrace"),
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
    ("/usr/share/postgresql/15/extension/pg_stat_statements.control", "postgresql-contrib"),
    // The browser test of report.html: headless chromium, driven by
    // playwright-core from npm (tests/browser/package-lock.json).
    ("chromium", "chromium"),
    ("node", "nodejs"),
    ("npm", "npm"),
    // tests/tests/debug_info.rs: split debug files, a real debuginfod server.
    ("objcopy", "binutils"),
    ("debuginfod", "debuginfod"),
];

pub fn setup() -> Result<(), String> {
    install_missing_packages()?;
    mount_tracefs();
    // tests/tests/debug_info.rs audits a static musl build of a fixture.
    run_checked(
        Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]),
        "rustup target add x86_64-unknown-linux-musl",
    )?;
    run_checked(
        Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"]).current_dir(workspace_root().join("tests/browser")),
        "npm ci in tests/browser (playwright-core for the browser test)",
    )?;
    run_checked(
        cargo().current_dir(workspace_root()).args(["build", "-p", "perf-audit-agent"]),
        "building perf-audit-agent (first build installs rust-src and bpf-linker)",
    )
}

fn have(command: &str) -> bool {
    if command.starts_with('/') {
        return Path::new(command).exists();
    }
    Command::new("sh").args(["-c", &format!("command -v {command}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn install_missing_packages() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        return Err(format!("missing packages {missing:?} and no apt-get: install them by hand"));
    }
    run_checked(Command::new("apt-get").arg("update").arg("-qq"), "apt-get update")?;
    run_checked(
        Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {}", missing.join(" ")),
    )
}

/// Tracepoint programs need tracefs; some machines do not mount it.
fn mount_tracefs() {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return;
    }
    let _ = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status();
}
