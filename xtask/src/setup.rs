//! Installs what a fresh machine lacks: Debian packages for the tools the
//! tests and benchmarks call, a mounted tracefs, the browser test's npm
//! packages (`npm ci` from tests/browser's lock file), the OTLP consumer
//! test's Python packages (a venv in tests/otlp/.venv from its pinned
//! requirements.txt, skipped once they import), and (by building the
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
    // tests/otlp: the official OpenTelemetry protobuf classes (PyPI) in a
    // venv of Debian's Python.
    ("/usr/bin/python3", "python3"),
    ("/usr/share/doc/python3-venv", "python3-venv"),
];

/// The OTLP receiver's venv (tests/otlp/receiver.py runs in it).
pub const OTLP_VENV: &str = "tests/otlp/.venv";

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
    otlp_venv()?;
    run_checked(
        cargo().current_dir(workspace_root()).args(["build", "-p", "perf-audit-agent"]),
        "building perf-audit-agent (first build installs rust-src and bpf-linker)",
    )
}

/// Creates tests/otlp/.venv and installs tests/otlp/requirements.txt into
/// it, unless the receiver's imports already work (offline once installed).
fn otlp_venv() -> Result<(), String> {
    let root = workspace_root();
    let venv = root.join(OTLP_VENV);
    let python = venv.join("bin/python");
    let imports = "import grpc, opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2_grpc";
    let ready = || Command::new(&python).args(["-c", imports]).output().map(|o| o.status.success()).unwrap_or(false);
    if ready() {
        return Ok(());
    }
    run_checked(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv tests/otlp/.venv")?;
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(root.join("tests/otlp/requirements.txt")),
        "pip install -r tests/otlp/requirements.txt (the OTLP consumer test's receiver)",
    )?;
    if ready() { Ok(()) } else { Err(format!("{} cannot import grpc and opentelemetry-proto after installing them", python.display())) }
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
