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
    /// Release with the `console` feature and `--cfg tokio_unstable`
    /// (tokio-console instrumentation).
    ReleaseTokioConsole,
    /// Release with one cargo feature of the fixture (`mem-leaker`'s
    /// `jemalloc`...), in a target directory of its own so that builds of
    /// different features do not overwrite each other.
    ReleaseWithFeature(&'static str),
    /// `debug = "line-tables-only"`: file:line, but DWARF names without
    /// their path (`run`, `{async_fn#0}`), the build the report advises.
    ReleaseLineTablesOnly,
    /// Cargo's default release profile: `debug = false` (symbols, no line
    /// tables; cargo then strips std's debug info too).
    ReleaseNoDebugInfo,
    /// `strip = true` without debug info: no symbol table at all.
    ReleaseStripped,
    /// `split-debuginfo = "packed"`: the DWARF units in a `.dwp` beside the binary.
    ReleaseSplitDebugInfoPacked,
    /// A static binary for `x86_64-unknown-linux-musl` (musl's own malloc
    /// linked in), the usual choice for scratch container images.
    ReleaseStaticMusl,
    /// Release of a fixture that is a workspace of its own (its pinned
    /// dependencies cannot share the fixtures' lock file, e.g. a 2022
    /// Tokio), in `tests/fixtures/<name>`.
    OwnWorkspace,
}

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Path of a fixture binary from `tests/fixtures`, built on first use.
pub fn fixture(name: &str, build: Build) -> PathBuf {
    let dir = workspace_root().join("tests/fixtures");
    let target_dir = match build {
        Build::Release => dir.join("target/plain"),
        Build::ReleaseFramePointers => dir.join("target/fp"),
        Build::ReleaseTokioConsole => dir.join("target/console"),
        Build::ReleaseWithFeature(feature) => dir.join(format!("target/feature-{feature}")),
        Build::ReleaseLineTablesOnly => dir.join("target/line-tables"),
        Build::ReleaseNoDebugInfo => dir.join("target/nodebug"),
        Build::ReleaseStripped => dir.join("target/stripped"),
        Build::ReleaseSplitDebugInfoPacked => dir.join("target/packed"),
        Build::ReleaseStaticMusl => dir.join("target/musl"),
        Build::OwnWorkspace => dir.join(format!("target/{name}")),
    };
    let mut cmd = cargo();
    cmd.current_dir(if build == Build::OwnWorkspace { dir.join(name) } else { dir.clone() }).args(["build", "--release", "-p", name]).arg("--target-dir").arg(&target_dir);
    // Never inherit the outer build's flags: the fixture must be built
    // exactly as the test says.
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("CARGO_BUILD_RUSTFLAGS");
    match build {
        Build::Release => {}
        Build::ReleaseFramePointers => {
            cmd.env("RUSTFLAGS", "-C force-frame-pointers=yes");
        }
        Build::ReleaseTokioConsole => {
            cmd.env("RUSTFLAGS", "--cfg tokio_unstable").args(["--features", "console"]);
        }
        Build::ReleaseWithFeature(feature) => {
            cmd.args(["--features", feature]);
        }
        // The fixtures' workspace sets `debug = true`; these override it as
        // a user's Cargo.toml would.
        Build::ReleaseLineTablesOnly => {
            cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only");
        }
        Build::ReleaseNoDebugInfo => {
            cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
        }
        Build::ReleaseStripped => {
            cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "true");
        }
        Build::ReleaseSplitDebugInfoPacked => {
            cmd.env("CARGO_PROFILE_RELEASE_SPLIT_DEBUGINFO", "packed");
        }
        Build::ReleaseStaticMusl => {
            cmd.args(["--target", MUSL_TARGET]);
        }
        Build::OwnWorkspace => {}
    }
    run_build(cmd, name);
    match build {
        Build::ReleaseStaticMusl => target_dir.join(MUSL_TARGET).join("release").join(name),
        _ => target_dir.join("release").join(name),
    }
}

/// Where [`split_debug_info`] puts the debug file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugFileLayout {
    /// `DIR/debug/.build-id/ab/cdef....debug` (pass `--debug-dir DIR/debug`).
    BuildId,
    /// `.gnu_debuglink` to `NAME.debug`, stored in `.debug/` next to the binary.
    DebugLink,
}

/// A copy of `bin` (built with debug info) in `dir`, stripped as
/// `strip = true` would (`objcopy --strip-all`), its debug info kept in a
/// separate file as distributions ship it (`objcopy --only-keep-debug`).
/// Returns the stripped binary.
pub fn split_debug_info(bin: &Path, dir: &Path, layout: DebugFileLayout) -> PathBuf {
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("objcopy").args(args).output().expect("objcopy (binutils) is installed");
        assert!(out.status.success(), "objcopy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let name = bin.file_name().expect("a file name");
    let stripped = dir.join(name);
    std::fs::copy(bin, &stripped).expect("copy the binary");
    let debug = dir.join(format!("{}.debug", name.to_string_lossy()));
    objcopy(&["--only-keep-debug".as_ref(), stripped.as_os_str(), debug.as_os_str()]);
    match layout {
        DebugFileLayout::BuildId => {
            objcopy(&["--strip-all".as_ref(), stripped.as_os_str()]);
            let notes = Command::new("readelf").arg("-n").arg(&stripped).output().expect("readelf");
            let notes = String::from_utf8_lossy(&notes.stdout);
            let id = notes.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("the binary has a build-id").trim();
            let target = dir.join("debug/.build-id").join(&id[..2]).join(format!("{}.debug", &id[2..]));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::rename(&debug, &target).unwrap();
        }
        DebugFileLayout::DebugLink => {
            let link = format!("--add-gnu-debuglink={}", debug.display());
            objcopy(&["--strip-all".as_ref(), link.as_ref(), stripped.as_os_str()]);
            std::fs::create_dir_all(dir.join(".debug")).unwrap();
            std::fs::rename(&debug, dir.join(".debug").join(debug.file_name().unwrap())).unwrap();
        }
    }
    stripped
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
    run_agent_with_env(args, &[])
}

/// [`run_agent`] with environment variables set for the agent.
pub fn run_agent_with_env(args: &[&str], env: &[(&str, &str)]) -> AgentRun {
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
    let output = Command::new(agent_bin())
        .args(&full)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run agent");
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

/// A running `perf-audit-agent daemon`, stopped with SIGTERM when dropped.
pub struct Daemon {
    pub child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon with `--listen 127.0.0.1:0` plus `args`, and waits
    /// until it announces its address (eBPF loaded and attached).
    pub fn start(args: &[&str]) -> Daemon {
        use std::io::BufRead as _;
        let mut child = Command::new(agent_bin())
            .arg("daemon")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let stderr = child.stderr.take().expect("piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the daemon did not start:\n{}", log.lock().unwrap())
        });
        Daemon { child, addr, stderr: log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(&self.addr, path)
    }

    pub fn metrics(&self) -> Vec<Metric> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        parse_prometheus(&String::from_utf8(body).expect("utf-8 metrics"))
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit code.
    pub fn terminate(&mut self) -> i32 {
        self.signal(libc::SIGTERM)
    }

    pub fn signal(&mut self, sig: i32) -> i32 {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                use std::os::unix::process::ExitStatusExt as _;
                return status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the daemon did not exit:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as above.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Cargo's default release profile (symbols, no debug info) made from a
/// `debug = true` build by removing its debug sections (`strip =
/// "debuginfo"`, what Cargo does when `debug = false`): the same code and
/// symbol table without another build. Written to `dir`.
pub fn symbols_only_copy(full: &Path, dir: &Path) -> PathBuf {
    let name = full.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let out = dir.join(format!("{name}-symbols-only"));
    let status = Command::new("objcopy").arg("--strip-debug").arg(full).arg(&out).status().expect("objcopy (binutils)");
    assert!(status.success(), "objcopy --strip-debug {}", full.display());
    out
}

/// The lines of `fn fn_name(`'s body in the workspace file `source` (from
/// its `fn` line to the first line that is `}` alone).
pub fn fn_body_lines(source: &str, fn_name: &str) -> std::ops::RangeInclusive<u64> {
    let src = std::fs::read_to_string(workspace_root().join(source)).unwrap_or_else(|e| panic!("{source}: {e}"));
    let lines: Vec<&str> = src.lines().collect();
    let start = lines.iter().position(|l| l.contains(&format!("fn {fn_name}("))).unwrap_or_else(|| panic!("fn {fn_name} in {source}"));
    let end = start + lines[start..].iter().position(|l| *l == "}").expect("end of fn");
    (start as u64 + 1)..=(end as u64 + 1)
}

/// The agent in the background (`--quiet`, stdout discarded, no
/// `DATABASE_URL` inherited), started and past its "auditing" line: its
/// programs are attached, the caller's load counts.
pub struct AuditingAgent {
    child: Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    seen: String,
}

impl AuditingAgent {
    pub fn start(args: &[&str]) -> AuditingAgent {
        use std::io::BufRead as _;
        let mut child = Command::new(agent_bin())
            .arg("--quiet")
            .args(args)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut seen = String::new();
        while !seen.contains("auditing") {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            seen.push_str(&line);
        }
        assert!(seen.contains("auditing"), "the agent did not start:\n{seen}");
        AuditingAgent { child, stderr, seen }
    }

    /// Waits for the audit's end; asserts it succeeded.
    pub fn finish(mut self) {
        use std::io::Read as _;
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        let status = self.child.wait().expect("wait for the agent");
        assert!(status.success(), "agent failed: {status}\n{}{rest}", self.seen);
    }
}

/// A plain HTTP/1.1 GET over loopback: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(400))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// A small parser of the Prometheus text exposition format: comments,
/// `name value` and `name{k="v",...} value` lines with escaped label
/// values. Panics on anything else, so a malformed line fails the test.
pub fn parse_prometheus(text: &str) -> Vec<Metric> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Default::default()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = std::collections::BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "label value not quoted: {line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap_or_else(|| panic!("unterminated label: {line}")) {
                            '\\' => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c) => value.push(c),
                                None => panic!("dangling escape: {line}"),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name: {line}");
        out.push(Metric { name, labels, value });
    }
    out
}

/// The value of `name` whose labels include every `(key, value)` given.
pub fn metric(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .iter()
        .find(|m| m.name == name && labels.iter().all(|(k, v)| m.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|m| m.value)
}

/// Resident set size of a process in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A TCP proxy on loopback that puts a fixed delay on every chunk in both
/// directions: a database "`delay` x 2 away" per round trip, for tests that
/// must hold against a real network latency. One thread per direction of
/// each connection; a chunk is forwarded `delay` after it was read (chunks
/// keep their order). Stops accepting when dropped (open connections end
/// when either side closes).
pub struct DelayProxy {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DelayProxy {
    pub fn start(upstream: std::net::SocketAddr, delay: std::time::Duration) -> DelayProxy {
        use std::{
            io::{Read, Write},
            net::{TcpListener, TcpStream},
            sync::{atomic::Ordering, mpsc},
            time::Instant,
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        // Reads chunks as they come and hands them, stamped, to a writer
        // that sends each one `delay` after it was read.
        fn pipe(mut from: TcpStream, mut to: TcpStream, delay: std::time::Duration) {
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let writer = std::thread::spawn(move || {
                for (at, chunk) in rx {
                    let due = at + delay;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if to.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(tx);
            let _ = writer.join();
        }
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let _ = client.set_nodelay(true);
                        let Ok(server) = TcpStream::connect(upstream) else { continue };
                        let _ = server.set_nodelay(true);
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        std::thread::spawn(move || pipe(client, server, delay));
                        std::thread::spawn(move || pipe(s2, c2, delay));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        });
        DelayProxy { addr, stop }
    }

    /// `url` with its host:port replaced by the proxy's.
    pub fn url_for(&self, url: &str, upstream_port: u16) -> String {
        url.replace(&format!("127.0.0.1:{upstream_port}"), &self.addr.to_string())
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The BPF programs a process holds, from its file descriptors.
pub fn bpf_programs_of(pid: u32) -> std::collections::BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Default::default() };
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|id| id.trim().parse().ok()))
        .collect()
}

/// Every BPF program loaded on the machine, by id.
pub fn loaded_programs() -> std::collections::BTreeSet<u32> {
    aya::programs::loaded_programs().filter_map(|p| p.ok()).map(|p| p.id()).collect()
}

/// The agent started in the background with `args` plus `--quiet --out
/// out` (stdout dropped, stderr piped), for tests that signal it.
pub fn spawn_agent(args: &[&str], out: &Path) -> std::process::Child {
    Command::new(agent_bin())
        .args(args)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent")
}

/// Waits until the agent `pid` holds every program it will load (the set
/// stops growing for 2 s: the memory profile attaches last); returns them.
pub fn wait_attached(pid: u32) -> std::collections::BTreeSet<u32> {
    let start = Instant::now();
    let (mut programs, mut stable_since) = (std::collections::BTreeSet::new(), Instant::now());
    while start.elapsed() < Duration::from_secs(60) {
        let now = bpf_programs_of(pid);
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "the agent exited before attaching");
        if now != programs {
            (programs, stable_since) = (now, Instant::now());
        } else if !programs.is_empty() && stable_since.elapsed() >= Duration::from_secs(2) {
            return programs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent did not attach within 60 s (holds {programs:?})");
}

/// Of the samples in a folded stacks file (`stacks.folded`), the share (%)
/// whose stack reaches `main` or a thread root, leaving out those caught
/// while the kernel was in the middle of a uprobe (`uprobe_notify_resume`,
/// the `uretprobe` syscall) with the user stack ending in the uprobe page:
/// the kernel had written the trampoline over the return address and not
/// yet recorded it (or was writing it back), so their caller is nowhere
/// to be read; they are the probes' own cost. Returns (share, left out).
pub fn stack_completeness_outside_uprobes(folded: &str) -> (f64, u64) {
    let (complete, mid_uprobe) = (reaches_a_root, caught_mid_uprobe);
    let (mut total, mut whole, mut left_out) = (0u64, 0u64, 0u64);
    for line in folded.lines() {
        let Some(n) = line.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()) else { continue };
        if mid_uprobe(line) && !complete(line) {
            left_out += n;
            continue;
        }
        total += n;
        if complete(line) {
            whole += n;
        }
    }
    (100.0 * whole as f64 / total.max(1) as f64, left_out)
}

/// Whether a folded stack line reaches `main` or a thread root.
pub fn reaches_a_root(line: &str) -> bool {
    line.contains(";start_thread;") || line.contains(";clone3;") || line.contains(";main;")
}

/// Whether a folded stack line ends in the uprobe page while the kernel
/// was handling a uprobe (see [`stack_completeness_outside_uprobes`]).
pub fn caught_mid_uprobe(line: &str) -> bool {
    line.contains(";[uprobes];") && (line.contains("uprobe_notify_resume_[k]") || line.contains("__do_sys_uretprobe_[k]"))
}
