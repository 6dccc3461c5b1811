//! Helpers for the end-to-end tests: building the agent and the fixtures,
//! running audits, reading their output.
//!
//! These tests load real eBPF programs into the running kernel and profile
//! real processes, so they need root (or CAP_BPF + CAP_PERFMON). They never
//! skip: without privileges they fail and say why.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run_build(mut cmd: Command, what: &str) {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap_or_else(|e| panic!("cannot run cargo to build {what}: {e}"));
    assert!(out.status.success(), "building {what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The agent binary, built (or confirmed fresh) once per test process.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut cmd = cargo();
        cmd.current_dir(workspace_root()).args(["build", "-p", "perf-audit-agent", "--bin", "perf-audit-agent"]);
        run_build(cmd, "perf-audit-agent");
        workspace_root().join("target/debug/perf-audit-agent")
    })
    .clone()
}

/// How a fixture is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `cargo build --release` as a user does it: no frame pointers.
    Release,
    /// Release with `-C force-frame-pointers=yes`.
    ReleaseFramePointers,
}

/// Path of a fixture binary from `tests/fixtures`, built on first use.
pub fn fixture(name: &str, build: Build) -> PathBuf {
    let dir = workspace_root().join("tests/fixtures");
    let target_dir = match build {
        Build::Release => dir.join("target/plain"),
        Build::ReleaseFramePointers => dir.join("target/fp"),
    };
    let mut cmd = cargo();
    cmd.current_dir(&dir).args(["build", "--release", "-p", name]).arg("--target-dir").arg(&target_dir);
    // Never inherit the outer build's flags: the fixture must be built
    // exactly as the test says.
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("CARGO_BUILD_RUSTFLAGS");
    if build == Build::ReleaseFramePointers {
        cmd.env("RUSTFLAGS", "-C force-frame-pointers=yes");
    }
    run_build(cmd, name);
    target_dir.join("release").join(name)
}

/// A fixture process that is killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn spawn(program: &Path, args: &[&str]) -> Running {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        // Let it reach its main loop.
        std::thread::sleep(Duration::from_millis(200));
        Running { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The result of one agent run.
pub struct AgentRun {
    pub output: Output,
    pub out_dir: PathBuf,
    pub elapsed: Duration,
    _tmp: tempfile::TempDir,
}

impl AgentRun {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn assert_success(&self) {
        assert!(self.output.status.success(), "agent failed ({}):\n{}", self.code(), self.stderr());
    }

    pub fn report(&self) -> serde_json::Value {
        let path = self.out_dir.join("report.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.stderr()));
        serde_json::from_str(&text).expect("report.json is JSON")
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// Runs the agent with `args` plus `--out <tmp> --quiet`.
pub fn run_agent(args: &[&str]) -> AgentRun {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("out");
    let start = Instant::now();
    let mut full: Vec<String> = vec!["--quiet".into(), "--out".into(), out_dir.display().to_string()];
    let (before, after) = match args.iter().position(|a| *a == "--") {
        Some(i) => (&args[..i], &args[i..]),
        None => (args, &[][..]),
    };
    full.splice(0..0, before.iter().map(|s| s.to_string()));
    full.extend(after.iter().map(|s| s.to_string()));
    let output = Command::new(agent_bin()).args(&full).stdin(Stdio::null()).output().expect("run agent");
    AgentRun { output, out_dir, elapsed: start.elapsed(), _tmp: tmp }
}

/// A copy of `program` under a name no other process has, so that name
/// lookups in tests running in parallel do not see each other.
pub fn uniquely_named_copy(program: &Path, dir: &Path, prefix: &str) -> PathBuf {
    let name = format!("{prefix}{}", std::process::id() % 100_000);
    let dest = dir.join(name);
    std::fs::copy(program, &dest).expect("copy fixture");
    dest
}

/// The hotspots of a report as (function, self_pct) pairs.
pub fn hotspots(report: &serde_json::Value) -> Vec<(String, f64)> {
    report["cpu"]["hotspots"]
        .as_array()
        .expect("cpu.hotspots is an array")
        .iter()
        .map(|h| (h["function"].as_str().unwrap_or_default().to_string(), h["self_pct"].as_f64().unwrap_or(0.0)))
        .collect()
}

/// The demo service binary (`examples/demo-service`), built in release mode
/// (debug info, no frame pointers) on first use.
pub fn demo_service_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = workspace_root().join("examples/demo-service");
        let mut cmd = cargo();
        cmd.current_dir(&dir).args(["build", "--release"]);
        cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("CARGO_TARGET_DIR");
        run_build(cmd, "the demo service");
        dir.join("target/release/demo-service")
    })
    .clone()
}

/// A free loopback address (`127.0.0.1:PORT`).
pub fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").to_string()
}

/// The demo's load scenario pointed at `addr`, written into `dir`.
pub fn demo_scenario(dir: &Path, addr: &str) -> PathBuf {
    let template = std::fs::read_to_string(workspace_root().join("examples/demo-service/scenario.toml")).expect("scenario.toml");
    let path = dir.join("scenario.toml");
    std::fs::write(&path, template.replace("127.0.0.1:8080", addr)).expect("write scenario");
    path
}

/// The findings of a report as (rule, function, file, line).
pub fn findings(report: &serde_json::Value) -> Vec<(String, String, String, u64)> {
    report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default().to_string(),
                f["function"].as_str().unwrap_or_default().to_string(),
                f["file"].as_str().unwrap_or_default().to_string(),
                f["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}
