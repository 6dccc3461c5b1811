//! A throwaway PostgreSQL server, private to this process.
//!
//! Used when an audit needs a database and none is given: the bundled demo
//! and the tests. Why it looks like this:
//!
//! - **Throwaway.** A fresh cluster (`initdb`) in a new temporary directory,
//!   tuned to start fast and small (no fsync, no full-page writes, small
//!   shared buffers). Its data is worthless by design and is deleted when
//!   the server stops.
//! - **Loopback only.** It listens on `127.0.0.1` at a free port, and its
//!   Unix socket sits in the private directory, so nothing outside this host
//!   (and no other cluster's socket directory) sees it. Authentication is
//!   `trust`, which is only acceptable because of that.
//! - **`pg_stat_statements` preloaded** (`track = all`) and the extension
//!   created in the `postgres` database, because the database profile reads
//!   its statistics.
//! - **Nothing outlives the agent.** [`Drop`] does a fast shutdown (SIGINT,
//!   bounded wait, then SIGKILL) and removes the directory; that covers a
//!   normal return, Ctrl-C (the engine catches it and returns) and unwinding
//!   panics. For a hard kill (SIGKILL, abort) two more layers act: the
//!   postmaster is started with `PR_SET_PDEATHSIG`, so the kernel sends it
//!   SIGQUIT (immediate shutdown) when the agent dies, and a tiny `sh`
//!   watchdog, which learns about the agent's death from the end of a pipe
//!   only the agent holds, stops what is left and deletes the directory.
//!
//! PostgreSQL refuses to run as root; when the agent is root, `initdb` and
//! `postgres` run as the `postgres` system user (which owns the directory).

use std::{
    ffi::CString,
    fs,
    io::{self, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::{
        fs::{DirBuilderExt, MetadataExt},
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::error::{Error, ErrorKind};

/// How long `start` waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a free port (another process may take the one we picked
/// between our check and the server's bind).
const PORT_ATTEMPTS: usize = 3;
/// Where Debian/Ubuntu install each major version's server binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// The OS user that runs the server when the agent is root.
const SERVER_USER: &str = "postgres";
/// The server log inside the data directory.
const LOG_FILE: &str = "perf-audit-postgres.log";

/// A running throwaway PostgreSQL server; stopped and deleted on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// The temporary directory; it is the data directory and holds the
    /// Unix socket and the server log.
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    postmaster: Option<Child>,
    keeper: Option<Keeper>,
    watchdog: Option<Watchdog>,
}

impl PrivatePostgres {
    /// Creates a fresh cluster in a new temporary directory, starts it on a
    /// free loopback port and creates `pg_stat_statements` in `postgres`.
    pub fn start() -> Result<PrivatePostgres, Error> {
        let bin = find_bindir()?;
        let server = program(&bin, "postgres");
        let initdb = program(&bin, "initdb");
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(lookup_user(SERVER_USER).ok_or_else(|| {
                Error::new(
                    ErrorKind::Database,
                    format!(
                        "PostgreSQL refuses to run as root and there is no `{SERVER_USER}` system user to run it as (create one: useradd --system {SERVER_USER})"
                    ),
                )
            })?)
        } else {
            None
        };
        let dir = make_private_dir(run_as)?;
        // From here on, dropping `pg` (an error below, a panic) cleans up.
        let mut pg = PrivatePostgres { dir, port: 0, bin, postmaster: None, keeper: None, watchdog: None };
        pg.watchdog = Some(
            Watchdog::spawn(&pg.dir)
                .map_err(|e| Error::new(ErrorKind::Database, format!("cannot start the cleanup watchdog (/bin/sh): {e}")))?,
        );

        pg.initdb(&initdb, run_as)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            pg.port = free_loopback_port()?;
            match pg.launch(&server, run_as) {
                Ok(()) => break,
                Err(Launch::PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(Launch::PortTaken) => {
                    return Err(pg.startup_error(&format!("PostgreSQL could not bind a free port after {PORT_ATTEMPTS} attempts")));
                }
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory: a private temporary directory (also holding the
    /// Unix socket and the server log) that is deleted on drop.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.postmaster.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Runs SQL with `psql` (unaligned, tuples only) and returns its output,
    /// trimmed; rows are separated by newlines, columns by `|`.
    pub fn psql(&self, sql: &str) -> Result<String, Error> {
        let psql = program(&self.bin, "psql");
        let mut cmd = Command::new(&psql);
        clean_env(&mut cmd);
        let out = cmd
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::new(ErrorKind::PostgresNotInstalled, format!("cannot run {}: {e}", psql.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::new(ErrorKind::Database, format!("private PostgreSQL rejected `{sql}`: {}", one_line(&stderr))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn initdb(&mut self, initdb: &Path, run_as: Option<(u32, u32)>) -> Result<(), Error> {
        let mut cmd = Command::new(initdb);
        clean_env(&mut cmd);
        cmd.arg("-D")
            .arg(&self.dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // initdb's own postgres children exit when it dies (their stdin closes).
        server_process(&mut cmd, run_as, libc::SIGKILL);
        let child =
            cmd.spawn().map_err(|e| Error::new(ErrorKind::PostgresNotInstalled, format!("cannot run {}: {e}", initdb.display())))?;
        self.watch(child.id());
        let out = child.wait_with_output().map_err(|e| Error::new(ErrorKind::Database, format!("initdb: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::new(
                ErrorKind::Database,
                format!("initdb failed ({}) in {}: {}", describe(out.status), self.dir.display(), tail(&stderr, 3)),
            ));
        }
        Ok(())
    }

    /// Starts the postmaster on `self.port` and waits until it accepts
    /// connections.
    fn launch(&mut self, server: &Path, run_as: Option<(u32, u32)>) -> Result<(), Launch> {
        let log_path = self.dir.join(LOG_FILE);
        let log = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| Launch::Failed(Error::new(ErrorKind::Database, format!("cannot create {}: {e}", log_path.display()))))?;
        let log_err = log.try_clone().map_err(|e| Launch::Failed(Error::internal(format!("log file: {e}"))))?;

        let mut cmd = Command::new(server);
        clean_env(&mut cmd);
        cmd.arg("-D").arg(&self.dir).arg("-k").arg(&self.dir).arg("-p").arg(self.port.to_string());
        for setting in SERVER_SETTINGS {
            cmd.arg("-c").arg(setting);
        }
        cmd.current_dir(&self.dir).stdin(Stdio::null()).stdout(log).stderr(log_err);
        // Immediate shutdown if the agent dies: the data is thrown away anyway.
        server_process(&mut cmd, run_as, libc::SIGQUIT);

        let (child, keeper) = spawn_kept(cmd)
            .map_err(|e| Launch::Failed(Error::new(ErrorKind::PostgresNotInstalled, format!("cannot run {}: {e}", server.display()))))?;
        self.watch(child.id());
        self.postmaster = Some(child);
        self.keeper = Some(keeper);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.postmaster.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                self.postmaster = None;
                if let Some(keeper) = self.keeper.take() {
                    keeper.release();
                }
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Err(Launch::PortTaken);
                }
                return Err(Launch::Failed(self.startup_error(&format!("PostgreSQL exited at startup ({})", describe(status)))));
            }
            if self.accepts_connections() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Launch::Failed(self.startup_error(&format!(
                    "PostgreSQL did not accept connections on 127.0.0.1:{} within {}s",
                    self.port,
                    START_TIMEOUT.as_secs()
                ))));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn accepts_connections(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return false;
        }
        // The socket is bound before recovery ends; ask whether it is ready.
        let isready = program(&self.bin, "pg_isready");
        if isready.exists() {
            let mut cmd = Command::new(&isready);
            clean_env(&mut cmd);
            return cmd
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-t", "2", "-p"])
                .arg(self.port.to_string())
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        }
        // Without pg_isready: the postmaster writes "ready" in its pid file.
        fs::read_to_string(self.dir.join("postmaster.pid")).is_ok_and(|s| pid_file_says_ready(&s))
    }

    fn startup_error(&self, what: &str) -> Error {
        let log = fs::read_to_string(self.dir.join(LOG_FILE)).unwrap_or_default();
        let excerpt = tail(&log, 3);
        let excerpt = if excerpt.is_empty() { "(empty log)".to_string() } else { excerpt };
        Error::new(ErrorKind::Database, format!("{what}; last log lines: {excerpt}"))
    }

    fn watch(&mut self, pid: u32) {
        if let Some(w) = self.watchdog.as_mut() {
            w.watch(pid);
        }
    }

    /// Fast shutdown, then delete the directory; never fails, bounded.
    fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take()
            && let Ok(None) = child.try_wait()
        {
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            if !wait_bounded(&mut child, STOP_TIMEOUT) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Only now may the thread that spawned the postmaster exit (its exit
        // would fire PR_SET_PDEATHSIG).
        if let Some(keeper) = self.keeper.take() {
            keeper.release();
        }
        // After a SIGKILL the postmaster's children may still be exiting.
        let removed = remove_dir_retrying(&self.dir, Duration::from_secs(3));
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.finish(removed);
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `dir` (a server's `data_directory`) is the directory of a
/// [`PrivatePostgres`]: the database profile may then create indexes inside
/// rolled-back transactions to measure their gain, which it never does on
/// a user's database.
pub fn is_private_data_dir(dir: &Path) -> bool {
    dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("perf-audit-postgres-"))
        && dir.join(LOG_FILE).is_file()
}

/// Settings for a small server that starts fast and records every statement.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=16MB",
    "max_connections=50",
    "huge_pages=off",
    "wal_level=minimal",
    "max_wal_senders=0",
    "logging_collector=off",
    "unix_socket_permissions=0700",
];

enum Launch {
    PortTaken,
    Failed(Error),
}

/// Makes `cmd` run as a PostgreSQL server process: as `run_as` (uid, gid)
/// when the agent is root, in its own process group (a terminal's Ctrl-C
/// goes to the agent, which stops the server itself), and receiving
/// `death_signal` when the thread that spawned it exits.
fn server_process(cmd: &mut Command, run_as: Option<(u32, u32)>, death_signal: i32) {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe system calls and does
    // not allocate. std runs pre_exec closures after setgid/setuid, which
    // matters: a credential change clears PR_SET_PDEATHSIG.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The agent died between fork and prctl: do not start orphaned.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
/// the process. So the postmaster is spawned from a dedicated thread that
/// lives until the server has been stopped; whoever calls `start` (a
/// short-lived blocking-pool thread, a test thread) does not matter.
#[derive(Debug)]
struct Keeper {
    release: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Keeper {
    fn release(self) {
        drop(self.release);
        let _ = self.thread.join();
    }
}

fn spawn_kept(mut cmd: Command) -> io::Result<(Child, Keeper)> {
    let (spawned_tx, spawned_rx) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let thread = thread::Builder::new().name("private-postgres".into()).spawn(move || {
        let spawned = cmd.spawn();
        let ok = spawned.is_ok();
        let _ = spawned_tx.send(spawned);
        if ok {
            // Returns when the sender is dropped (Keeper::release).
            let _ = released.recv();
        }
    })?;
    match spawned_rx.recv() {
        Ok(Ok(child)) => Ok((child, Keeper { release, thread })),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other("the thread spawning PostgreSQL panicked")),
    }
}

/// A `sh` process that cleans up after the agent if it dies without running
/// `Drop` (SIGKILL, abort). It reads pids from a pipe whose write end only
/// the agent holds (close-on-exec, so no other child inherits it); at end
/// of file (the agent is gone) it sends SIGQUIT to those still running
/// PostgreSQL programs, waits up to 10 s, sends SIGKILL, then deletes the
/// directory. A `done` line (clean drop) makes it exit doing nothing.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP
dir=$1
pids=
while IFS= read -r line; do
  case $line in
    done) exit 0 ;;
    ''|*[!0-9]*) ;;
    *) pids="$pids $line" ;;
  esac
done
ours() {
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  case $s in Z*|X*) return 1 ;; esac
  c=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  case $c in postgres|postmaster|initdb) return 0 ;; esac
  return 1
}
for p in $pids; do ours "$p" && kill -QUIT "$p" 2>/dev/null; done
i=0
while [ "$i" -lt 100 ]; do
  alive=
  for p in $pids; do ours "$p" && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1
  i=$((i + 1))
done
for p in $pids; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
i=0
while [ -e "$dir" ] && [ "$i" -lt 50 ]; do
  rm -rf "$dir" 2>/dev/null
  [ -e "$dir" ] && sleep 0.1
  i=$((i + 1))
done
"#;

impl Watchdog {
    fn spawn(dir: &Path) -> io::Result<Watchdog> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("perf-audit-postgres-watchdog")
            .arg(dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Watchdog { child, pipe })
    }

    fn watch(&mut self, pid: u32) {
        if let Some(pipe) = self.pipe.as_mut() {
            let _ = writeln!(pipe, "{pid}").and_then(|()| pipe.flush());
        }
    }

    /// `clean`: everything is already stopped and deleted, so the watchdog
    /// just exits; otherwise it gets end of file and cleans what is left.
    fn finish(mut self, clean: bool) {
        if let Some(mut pipe) = self.pipe.take() {
            if clean {
                let _ = pipe.write_all(b"done\n").and_then(|()| pipe.flush());
            }
            drop(pipe); // end of file: the watchdog acts now
        }
        if !wait_bounded(&mut self.child, Duration::from_secs(20)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` up to `limit`; true when it exited (and was reaped).
fn wait_bounded(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => return false,
            // Already reaped, or not ours: nothing to wait for.
            Err(_) => return true,
        }
    }
}

fn remove_dir_retrying(dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match fs::remove_dir_all(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
}

/// The directory of `initdb`/`postgres`: the newest major version under
/// /usr/lib/postgresql (Debian, Ubuntu), else `pg_config --bindir`, else PATH.
fn find_bindir() -> Result<PathBuf, Error> {
    let has_server = |dir: &Path| ["initdb", "postgres"].iter().all(|p| dir.join(p).is_file());
    if let Ok(entries) = fs::read_dir(DEBIAN_PG_ROOT) {
        let names = entries.filter_map(|e| e.ok()?.file_name().into_string().ok());
        for major in majors_newest_first(names) {
            let dir = Path::new(DEBIAN_PG_ROOT).join(major).join("bin");
            if has_server(&dir) {
                return Ok(dir);
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).stderr(Stdio::null()).output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_server(d))
    {
        return Ok(dir);
    }
    Err(Error::new(
        ErrorKind::PostgresNotInstalled,
        format!("no PostgreSQL server found (initdb and postgres in {DEBIAN_PG_ROOT}/<version>/bin, `pg_config --bindir` or PATH)"),
    ))
}

/// Major-version directory names, newest first; names that are not versions
/// (`15`, `9.6`) are left out.
fn majors_newest_first(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut versions: Vec<(Vec<u32>, String)> = names
        .into_iter()
        .filter_map(|name| {
            let parts: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, name))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, name)| name).collect()
}

/// Line 8 of `postmaster.pid` is the server status since PostgreSQL 10.
fn pid_file_says_ready(pid_file: &str) -> bool {
    pid_file.lines().nth(7).is_some_and(|status| status.trim() == "ready")
}

fn program(bin: &Path, name: &str) -> PathBuf {
    let next_to_server = bin.join(name);
    if next_to_server.exists() {
        return next_to_server;
    }
    PathBuf::from(name)
}

/// PG* variables (PGHOST, PGOPTIONS, PGDATA...) would redirect or alter the
/// client and server programs; they are all meant for some other cluster.
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r writes into it and buf only.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// A new empty 0700 directory under the temporary directory, owned by
/// `run_as` when given. When the server runs as another user, every parent
/// must be searchable by it, else /tmp is used.
fn make_private_dir(run_as: Option<(u32, u32)>) -> Result<PathBuf, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut base = std::env::temp_dir();
    if run_as.is_some() && !searchable_by_others(&base) {
        base = PathBuf::from("/tmp");
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("perf-audit-postgres-{}-{n}-{nanos:x}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                if let Some((uid, gid)) = run_as
                    && let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                {
                    let _ = fs::remove_dir(&dir);
                    return Err(Error::new(ErrorKind::Database, format!("cannot give {} to the {SERVER_USER} user: {e}", dir.display())));
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::new(ErrorKind::Database, format!("cannot create a directory in {}: {e}", base.display())));
            }
        }
    }
    Err(Error::internal(format!("cannot find a free directory name in {}", base.display())))
}

fn searchable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

fn free_loopback_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(ErrorKind::Database, format!("cannot find a free port on 127.0.0.1: {e}")))
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// The last `n` non-empty lines, joined on one line.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn newest_major_comes_first_and_non_versions_are_ignored() {
        let got = majors_newest_first(names(&["9.6", "15", "common", "13", "16", "10", ".hidden"]));
        assert_eq!(got, names(&["16", "15", "13", "10", "9.6"]));
        assert!(majors_newest_first(names(&["lib", "share"])).is_empty());
    }

    #[test]
    fn ready_is_read_from_line_8_of_the_pid_file() {
        let ready = "4242\n/tmp/d\n1700000000\n5432\n/tmp/d\n127.0.0.1\n  5432001   1\nready   \n";
        assert!(pid_file_says_ready(ready));
        assert!(!pid_file_says_ready(&ready.replace("ready   ", "starting")));
        assert!(!pid_file_says_ready("4242\n/tmp/d\n"));
    }

    #[test]
    fn log_excerpt_is_one_line_of_the_last_lines() {
        let log = "a\n\nLOG:  b\nFATAL:  c\n  \n";
        assert_eq!(tail(log, 2), "LOG:  b | FATAL:  c");
        assert_eq!(tail(log, 10), "a | LOG:  b | FATAL:  c");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn errors_are_one_line_with_the_fix() {
        let e = Error::new(ErrorKind::PostgresNotInstalled, "no PostgreSQL server found");
        assert!(e.to_string().contains("apt-get install postgresql"), "{e}");
        assert_eq!(e.kind.exit_code(), crate::error::exit_code::DATABASE);
    }
}
