//! Installs what a fresh machine lacks: Debian packages for the tools the
//! tests and benchmarks call, a mounted tracefs, the browser test's npm
//! packages (`npm ci` from tests/browser's lock file), the OTLP consumer
//! test's Python packages (a venv in tests/otlp/.venv from its pinned
//! requirements.txt, skipped once they import), and (by building the
//! agent, whose build script does it) rust-src and bpf-linker.

use std::{path::Path, process::Command};

use crate::{cargo, run_checked, workspace_root};

/// A Debian package to install when `command` (a name on PATH, or an
/// absolute path) is missing, and why: printed as one line when installed.
#[derive(Clone, Copy)]
pub struct Package {
    pub command: &'static str,
    pub package: &'static str,
    pub why: &'static str,
}

const fn pkg(command: &'static str, package: &'static str, why: &'static str) -> Package {
    Package { command, package, why }
}

/// What `cargo xtask demo` needs: building the agent and the demo service,
/// and the agent's `--private-database` (tracefs is mounted separately).
pub const DEMO_PACKAGES: &[Package] = &[
    pkg("cc", "gcc", "rustc links every binary with cc; bpf-linker's one-time build compiles LLVM's C wrappers"),
    pkg("/usr/lib/postgresql/15/bin/initdb", "postgresql", "--private-database runs initdb and postgres for the demo's own database"),
    pkg(
        "/usr/share/postgresql/15/extension/pg_stat_statements.control",
        "postgresql-contrib",
        "the private database preloads pg_stat_statements, the database profile's query statistics",
    ),
];

/// What only the tests and benchmarks call (`cargo xtask test` / `setup`
/// install these on top of [`DEMO_PACKAGES`]).
pub const TEST_PACKAGES: &[Package] = &[
    pkg("perf", "linux-perf", "the benchmarks' baseline (perf record, perf stat)"),
    pkg("runuser", "util-linux", "tests/tests/cpu_profile.rs starts a PostgreSQL as the postgres user"),
    pkg("make", "make", "the mem-leaker fixture's jemalloc and mimalloc builds"),
    pkg("promtool", "prometheus", "the daemon's consumer tests: a real Prometheus scrapes /metrics"),
    pkg("go", "golang-go", "the daemon's consumer tests: `go tool pprof` reads its profiles"),
    pkg("heaptrack", "heaptrack", "the baseline of `cargo xtask bench memory`"),
    pkg("bpftrace", "bpftrace", "the memleak-style baseline of `cargo xtask bench memory`"),
    pkg("chromium", "chromium", "the browser test of report.html (headless)"),
    pkg("node", "nodejs", "the browser test runs playwright-core"),
    pkg("npm", "npm", "the browser test installs playwright-core (tests/browser/package-lock.json)"),
    pkg("objcopy", "binutils", "tests/tests/debug_info.rs splits debug files"),
    pkg("debuginfod", "debuginfod", "tests/tests/debug_info.rs serves debug files from a real debuginfod"),
    pkg("/usr/include/postgresql/libpq-fe.h", "libpq-dev", "the diesel fixture (tests/fixtures/diesel-service) links libpq"),
    pkg("/usr/bin/python3", "python3", "the OTLP consumer test's receiver (tests/otlp)"),
    pkg("/usr/share/doc/python3-venv", "python3-venv", "the OTLP receiver's venv of pinned PyPI packages"),
];

/// The OTLP receiver's venv (tests/otlp/receiver.py runs in it).
pub const OTLP_VENV: &str = "tests/otlp/.venv";

pub fn setup() -> Result<(), String> {
    install_missing_packages(&[DEMO_PACKAGES, TEST_PACKAGES].concat())?;
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

/// Installs the packages of `wanted` whose command is missing, printing one
/// line per package with why it is needed.
pub fn install_missing_packages(wanted: &[Package]) -> Result<(), String> {
    let missing: Vec<&Package> = wanted.iter().filter(|p| !have(p.command)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.package).collect();
    if !have("apt-get") {
        return Err(format!("missing packages {names:?} and no apt-get: install them by hand"));
    }
    for p in &missing {
        eprintln!("xtask: installing {}: {}", p.package, p.why);
    }
    run_checked(Command::new("apt-get").arg("update").arg("-qq"), "apt-get update")?;
    run_checked(
        Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&names).env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {}", names.join(" ")),
    )
}

/// Tracepoint programs need tracefs; some machines do not mount it.
pub fn mount_tracefs() {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return;
    }
    let _ = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tools only the tests and benchmarks run: the demo must not install them.
    const TEST_ONLY: &[&str] = &[
        "prometheus", "golang-go", "bpftrace", "chromium", "debuginfod", "heaptrack", "linux-perf", "npm", "nodejs",
        "python3", "python3-venv", "binutils", "make",
    ];

    fn packages(list: &[Package]) -> Vec<&'static str> {
        list.iter().map(|p| p.package).collect()
    }

    #[test]
    fn the_demo_installs_no_test_tooling() {
        let demo = packages(DEMO_PACKAGES);
        for tool in TEST_ONLY {
            assert!(!demo.contains(tool), "the demo would install the test-only package {tool}");
        }
    }

    #[test]
    fn the_demo_installs_what_its_code_paths_need() {
        let demo = packages(DEMO_PACKAGES);
        // Linking (rustc calls cc), the private database's server binaries
        // and its preloaded pg_stat_statements.
        for needed in ["gcc", "postgresql", "postgresql-contrib"] {
            assert!(demo.contains(&needed), "the demo's list lacks {needed}");
        }
        let by_command = |c: &str| DEMO_PACKAGES.iter().any(|p| p.command.ends_with(c));
        assert!(by_command("/bin/initdb"), "--private-database runs initdb");
        assert!(by_command("/extension/pg_stat_statements.control"), "--private-database preloads pg_stat_statements");
        for p in DEMO_PACKAGES {
            assert!(!p.why.is_empty(), "{} has no reason to print", p.package);
        }
    }

    #[test]
    fn setup_keeps_the_full_list() {
        let all = packages(&[DEMO_PACKAGES, TEST_PACKAGES].concat());
        for tool in TEST_ONLY.iter().chain(packages(DEMO_PACKAGES).iter()) {
            assert!(all.contains(tool), "setup no longer installs {tool}");
        }
        let test = packages(TEST_PACKAGES);
        assert!(packages(DEMO_PACKAGES).iter().all(|p| !test.contains(p)), "a package listed twice");
    }
}
