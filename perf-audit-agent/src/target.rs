//! The process under audit: finding it (pid, name, or a command we launch),
//! describing it, and watching it.
//!
//! Everything here reads `/proc`. Memory maps are snapshotted while the
//! target runs, so that stacks can still be symbolized when it has exited by
//! the time the audit ends (the partial-report guarantee).

use std::{
    collections::BTreeMap,
    fs,
    io,
    path::{Path, PathBuf},
    process::{Child, Command},
};

use crate::error::{Error, ErrorKind, Result};
pub use perf_audit_analysis::report::schema::TargetInfo;

/// Reads the identity of a live process.
pub fn describe(pid: u32) -> Result<TargetInfo> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        return Err(Error::new(ErrorKind::PidNotFound, format!("no process with pid {pid}")));
    }
    let exe = fs::read_link(proc_dir.join("exe"))
        .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string())
        .unwrap_or_default();
    let comm = fs::read_to_string(proc_dir.join("comm")).unwrap_or_default().trim().to_string();
    let name = Path::new(&exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or(comm);
    if is_own_process(pid) {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("pid {pid} is perf-audit-agent itself: the agent leaves its own process out of every probe, so a self-audit records nothing; audit another process (--pid, a service name, or `-- <command>`)"),
        ));
    }
    if exe.is_empty() && is_kernel_thread(pid) {
        return Err(Error::new(
            ErrorKind::PidNotFound,
            format!("pid {pid} is a kernel thread, not a service"),
        ));
    }
    Ok(TargetInfo { pid, name, exe })
}

/// Whether `pid` is the agent or one of its threads (a thread id also has
/// a /proc entry; its Tgid is the agent's pid).
fn is_own_process(pid: u32) -> bool {
    let own = std::process::id();
    pid == own
        || fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:").map(|v| v.trim().parse::<u32>().ok())).flatten())
            == Some(own)
}

/// Notices that a process replaced its program (`execve`): the executable
/// changed, or the auxiliary vector did (the kernel writes it once per
/// exec, and with ASLR its pointers differ even when the same binary is
/// executed again). Read every poll tick: two small /proc reads.
pub struct ExecWatch {
    exe: String,
    auxv: Vec<u8>,
}

impl ExecWatch {
    pub fn new(pid: u32) -> Option<ExecWatch> {
        Some(ExecWatch { exe: exe_of(pid)?, auxv: fs::read(format!("/proc/{pid}/auxv")).ok()? })
    }

    /// The executable before any exec.
    pub fn exe(&self) -> &str {
        &self.exe
    }

    /// The executable now, when the process has exec'd since [`ExecWatch::new`].
    pub fn exec_since(&self, pid: u32) -> Option<String> {
        let exe = exe_of(pid)?;
        let auxv = fs::read(format!("/proc/{pid}/auxv")).ok()?;
        (exe != self.exe || auxv != self.auxv).then_some(exe)
    }
}

fn exe_of(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string())
}

fn is_kernel_thread(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).map(|c| c.is_empty()).unwrap_or(false)
}

/// Whether the process still exists (and is not a zombie).
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // Field 3, after the parenthesised comm (which may contain spaces).
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// A candidate for a name lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid: u32,
    pub cmdline: String,
}

/// Finds the processes called `name`, like `pgrep -x`: by `comm` (which the
/// kernel cuts to 15 bytes, so the name is cut the same way before comparing)
/// or by the file name of the executable or of argv[0].
pub fn find_by_name(name: &str) -> Result<Vec<Candidate>> {
    let own_pid = std::process::id();
    let cut: String = truncate_utf8(name, 15).to_string();
    let mut found = Vec::new();
    let entries = fs::read_dir("/proc")
        .map_err(|e| Error::internal(format!("cannot list /proc: {e}")))?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let dir = entry.path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cmdline_raw = fs::read(dir.join("cmdline")).unwrap_or_default();
        if cmdline_raw.is_empty() {
            continue; // kernel thread or already gone
        }
        let argv0 = cmdline_raw.split(|b| *b == 0).next().unwrap_or_default();
        let argv0_name = Path::new(std::str::from_utf8(argv0).unwrap_or_default())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let exe_name = fs::read_link(dir.join("exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_string()))
            .unwrap_or_default();
        if comm.trim_end() == cut || exe_name == name || argv0_name == name {
            let cmdline = String::from_utf8_lossy(&cmdline_raw).replace('\0', " ").trim().to_string();
            found.push(Candidate { pid, cmdline });
        }
    }
    found.sort_by_key(|c| c.pid);
    Ok(found)
}

/// Resolves a name to exactly one pid, or a clear error.
pub fn resolve_name(name: &str) -> Result<u32> {
    let found = find_by_name(name)?;
    match found.as_slice() {
        [] => Err(Error::new(ErrorKind::NameNotFound, format!("no running process is named `{name}`"))),
        [one] => Ok(one.pid),
        many => {
            let list: Vec<String> = many
                .iter()
                .take(8)
                .map(|c| format!("{} ({})", c.pid, truncate_utf8(&c.cmdline, 60)))
                .collect();
            let more = if many.len() > 8 { format!(" and {} more", many.len() - 8) } else { String::new() };
            Err(Error::new(
                ErrorKind::NameAmbiguous,
                format!("{} processes are named `{name}`: {}{more}", many.len(), list.join(", ")),
            ))
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A command started by the agent. `spawn` returns once the program has
/// exec'd, and the agent registers its pid right away: at most the dynamic
/// loader's first microseconds go unsampled.
pub struct Launched {
    pub child: Child,
}

impl Launched {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Launched {
    /// The audit owns what it launched: stop it politely, then for good.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..40 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args...` with extra environment variables (stdin
/// detached; output goes where ours goes).
pub fn launch(program: &str, args: &[String], env: &[(String, String)]) -> Result<Launched> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    match cmd.spawn() {
        Ok(child) => Ok(Launched { child }),
        Err(e) => Err(Error::new(ErrorKind::LaunchFailed, format!("cannot start `{program}`: {e}"))),
    }
}

/// One executable mapping of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub path: PathBuf,
}

/// The executable file mappings of a process, accumulated over the audit:
/// a library loaded late, or the process exiting, loses nothing.
#[derive(Debug, Default, Clone)]
pub struct MapsSnapshot {
    by_start: BTreeMap<u64, Mapping>,
}

impl MapsSnapshot {
    /// Re-reads `/proc/PID/maps`, keeping mappings seen before.
    pub fn refresh(&mut self, pid: u32) -> io::Result<()> {
        let text = fs::read_to_string(format!("/proc/{pid}/maps"))?;
        for mapping in parse_maps(&text, pid) {
            self.by_start.insert(mapping.start, mapping);
        }
        Ok(())
    }

    /// The mapping containing `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        self.by_start.range(..=addr).next_back().map(|(_, m)| m).filter(|m| addr < m.end)
    }

    /// Every mapping seen, by start address.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.by_start.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

/// Parses the executable, file-backed lines of `/proc/PID/maps`.
pub fn parse_maps(text: &str, pid: u32) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path: Vec<&str> = fields.collect();
        let path = path.join(" ");
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        let path = path.trim_end_matches(" (deleted)");
        out.push(Mapping { start, end, offset, path: stable_path(path, pid) });
    }
    out
}

/// A path to the mapped file that still works after the process exits:
/// the plain path when it is the same file the process sees (same device
/// and inode), else the path through `/proc/PID/root` (another mount
/// namespace, e.g. a container).
fn stable_path(path: &str, pid: u32) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let plain = PathBuf::from(path);
    let via_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
    match (fs::metadata(&plain), fs::metadata(&via_root)) {
        (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => plain,
        (_, Ok(_)) => via_root,
        _ => plain,
    }
}

/// User + system CPU seconds the process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    process_stat(pid).map(|t| t.user_s + t.system_s)
}

/// What `/proc/PID/stat` counts for the whole process (every thread's,
/// dead ones included).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessStat {
    pub user_s: f64,
    /// Kernel time: system calls, page faults, and the uprobe and
    /// perf-event handling done in the process's context.
    pub system_s: f64,
    /// Page faults, minor and major.
    pub faults: u64,
}

/// The process's CPU seconds by mode and its page faults, from
/// `/proc/PID/stat`.
pub fn process_stat(pid: u32) -> Option<ProcessStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, minflt 10, majflt 12, utime 14,
    // stime 15 (1-based).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some(ProcessStat {
        user_s: field(14)? as f64 / ticks as f64,
        system_s: field(15)? as f64 / ticks as f64,
        faults: field(10)? + field(12)?,
    })
}

/// Resident set size in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_refuses_to_audit_itself_or_its_threads() {
        let own = std::process::id();
        let e = describe(own).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.message.contains("perf-audit-agent itself"), "{}", e.message);
        // A thread of the agent has its own /proc entry: refused too.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, own);
        let e = describe(tid).unwrap_err();
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(e.message.contains("itself"), "thread {tid}: {}", e.message);
    }

    /// Starts `sh -c script` and returns it with its ExecWatch.
    fn watched(script: &str) -> (std::process::Child, ExecWatch) {
        let child = Command::new("/bin/sh").args(["-c", script]).spawn().unwrap();
        // /proc/PID/exe is the shell once the fork has exec'd it.
        let start = std::time::Instant::now();
        loop {
            if let Some(w) = ExecWatch::new(child.id()).filter(|w| w.exe().ends_with("sh") || w.exe().ends_with("dash") || w.exe().ends_with("bash")) {
                return (child, w);
            }
            assert!(start.elapsed().as_secs() < 5, "the shell did not start");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn an_exec_is_noticed_to_another_program_and_to_the_same_one() {
        for (script, same) in [("sleep 0.4; exec sleep 5", false), ("sleep 0.4; exec /bin/sh -c 'sleep 5'", true)] {
            let (mut child, watch) = watched(script);
            assert_eq!(watch.exec_since(child.id()), None, "{script}: nothing happened yet");
            std::thread::sleep(std::time::Duration::from_millis(1200));
            let after = watch.exec_since(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let after = after.unwrap_or_else(|| panic!("{script}: exec not noticed"));
            if same {
                assert_eq!(after, watch.exe(), "{script}");
            } else {
                assert!(after.ends_with("/sleep"), "{script}: {after}");
            }
        }
    }

    #[test]
    fn maps_keep_only_executable_file_mappings() {
        let text = "\
55d0c0a00000-55d0c0a20000 r--p 00000000 08:01 123 /usr/bin/svc
55d0c0a20000-55d0c0b00000 r-xp 00020000 08:01 123 /usr/bin/svc
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000100000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
";
        let maps = parse_maps(text, u32::MAX);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].start, 0x55d0c0a20000);
        assert_eq!(maps[0].offset, 0x20000);
        assert_eq!(maps[0].path, PathBuf::from("/usr/bin/svc"));
        let mut snap = MapsSnapshot::default();
        for m in maps {
            snap.by_start.insert(m.start, m);
        }
        assert_eq!(snap.find(0x55d0c0a20010).unwrap().offset, 0x20000);
        assert!(snap.find(0x55d0c0a10000).is_none());
        assert!(snap.find(0x7f1000100000).is_none());
    }

    #[test]
    fn comm_comparison_uses_the_kernels_15_byte_cut() {
        assert_eq!(truncate_utf8("tokio-runtime-worker", 15), "tokio-runtime-w");
    }

    #[test]
    fn a_missing_pid_is_reported_as_not_running() {
        let e = describe(u32::MAX - 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PidNotFound);
    }
}
