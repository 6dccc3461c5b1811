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
        // An exec in progress switches /proc/PID/exe before the kernel
        // fills the new image's auxv: read until two readings agree (and
        // the auxv has its entries), so the baseline is a whole image.
        let read = || Some((exe_of(pid)?, fs::read(format!("/proc/{pid}/auxv")).ok()?));
        let mut last = read()?;
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let now = read()?;
            if now == last && last.1.iter().any(|b| *b != 0) {
                return Some(ExecWatch { exe: now.0, auxv: now.1 });
            }
            last = now;
        }
        Some(ExecWatch { exe: last.0, auxv: last.1 })
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

/// One executable, file-backed line of `/proc/PID/maps`, as the kernel
/// wrote it: the mapped file is (`dev`, `inode`), whatever `path` now names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// `makedev(major, minor)` of the maps' `MAJ:MIN` field.
    pub dev: u64,
    pub inode: u64,
    pub path: String,
    /// The kernel marked the path ` (deleted)`: the mapped file has no
    /// name any more (deleted, or replaced by a rename over it).
    pub deleted: bool,
}

/// Parses the executable, file-backed lines of `/proc/PID/maps` (pure;
/// lines that do not parse are skipped).
pub fn parse_maps_lines(text: &str) -> Vec<MapsLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
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
        let Some((major, minor)) = dev.split_once(':') else { continue };
        let (Ok(major), Ok(minor), Ok(inode)) = (u32::from_str_radix(major, 16), u32::from_str_radix(minor, 16), inode.parse::<u64>()) else {
            continue;
        };
        let deleted = path.ends_with(" (deleted)");
        let path = path.trim_end_matches(" (deleted)").to_string();
        out.push(MapsLine { start, end, offset, dev: libc::makedev(major, minor), inode, path, deleted });
    }
    out
}

/// Parses the executable, file-backed lines of `/proc/PID/maps`, each with
/// a path to the file that is mapped (see [`mapped_file_path`]).
pub fn parse_maps(text: &str, pid: u32) -> Vec<Mapping> {
    parse_maps_lines(text)
        .into_iter()
        .map(|l| Mapping { start: l.start, end: l.end, offset: l.offset, path: mapped_file_path(&l, pid) })
        .collect()
}

/// What became of a mapped file's path on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisk {
    /// The path names another file now (a deploy renamed a new build over it).
    Replaced,
    /// The path names nothing (deleted while the process runs).
    Deleted,
}

/// A mapped file kept open by the agent (the file the process runs, read
/// through `/proc/self/fd/N` even after the process exits or the path is
/// reused), its name as the process knows it, and what its path is now.
struct Pinned {
    _file: fs::File,
    fd_path: PathBuf,
    display: String,
    on_disk: OnDisk,
}

/// At most this many mapped files are kept open per audit.
const MAX_PINNED: usize = 256;

fn pinned() -> &'static std::sync::Mutex<BTreeMap<(u64, u64), Pinned>> {
    static PINNED: std::sync::OnceLock<std::sync::Mutex<BTreeMap<(u64, u64), Pinned>>> = std::sync::OnceLock::new();
    PINNED.get_or_init(Default::default)
}

/// A path to the file a maps line maps that still works after the process
/// exits: the plain path when it is that file (same device and inode), else
/// the path through `/proc/PID/root` when that is (another mount namespace,
/// e.g. a container), else the file itself, opened through
/// `/proc/PID/map_files/` and kept open (a binary deleted or replaced on
/// disk since the process started: never the new file at its path).
fn mapped_file_path(line: &MapsLine, pid: u32) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let is_it = |p: &Path| fs::metadata(p).is_ok_and(|m| m.dev() == line.dev && m.ino() == line.inode);
    let plain = PathBuf::from(&line.path);
    if !line.deleted && is_it(&plain) {
        return plain;
    }
    let via_root = PathBuf::from(format!("/proc/{pid}/root{}", line.path));
    if !line.deleted && is_it(&via_root) {
        return via_root;
    }
    let mut pins = pinned().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = pins.get(&(line.dev, line.inode)) {
        return p.fd_path.clone();
    }
    let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", line.start, line.end));
    let opened = (pins.len() < MAX_PINNED)
        .then(|| crate::safe_file::open_regular(&map_file).ok())
        .flatten();
    let Some(file) = opened else {
        // Without map_files (not root, or the process is gone): the plain
        // path, as before; the identity check below still warns.
        return if line.deleted || is_it(&plain) || !via_root.exists() { plain } else { via_root };
    };
    use std::os::fd::AsRawFd as _;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let on_disk = if fs::metadata(&plain).is_ok() || fs::metadata(&via_root).is_ok() { OnDisk::Replaced } else { OnDisk::Deleted };
    pins.insert((line.dev, line.inode), Pinned { _file: file, fd_path: fd_path.clone(), display: line.path.clone(), on_disk });
    fd_path
}

/// The name the process knows a mapped file by (`/proc/self/fd/N` paths of
/// pinned files are shown as the process's path), and what became of that
/// path on disk, if anything.
pub fn mapped_file_name(path: &Path) -> (String, Option<OnDisk>) {
    let pins = pinned().lock().unwrap_or_else(|p| p.into_inner());
    match pins.values().find(|p| p.fd_path == path) {
        Some(p) => (p.display.clone(), Some(p.on_disk)),
        None => (path.display().to_string(), None),
    }
}

/// [`executable_file`] from a fresh read of the maps.
pub fn exe_file(pid: u32) -> Option<PathBuf> {
    let mut maps = MapsSnapshot::default();
    maps.refresh(pid).ok()?;
    executable_file(pid, &maps)
}

/// The file name of a mapped object as the process knows it (a pinned
/// `/proc/self/fd/N` shows the process's own path): frames' module names.
pub fn mapped_file_base_name(path: &Path) -> String {
    let (name, _) = mapped_file_name(path);
    let shown = Path::new(&name);
    shown.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| shown.display().to_string())
}

/// The executable of `pid` as a path to the file it runs (see
/// [`mapped_file_path`]): its mapping's path, so that it compares equal to
/// the path its frames are symbolized from, in any mount namespace.
pub fn executable_file(pid: u32, maps: &MapsSnapshot) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let exe = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    maps.iter().find(|m| fs::metadata(&m.path).is_ok_and(|f| f.dev() == exe.dev() && f.ino() == exe.ino())).map(|m| m.path.clone())
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

/// What the target's file descriptor `fd` refers to now: a regular file,
/// a pipe, a terminal, another character device, a socket. `/proc` is the
/// target's to shape (issue 24): the link text is only trusted for the
/// kernel's own pseudo-file names (`pipe:[ino]`, `socket:[ino]`,
/// `anon_inode:...`, which no path can spell: a path starts with `/`),
/// never opened; anything else is classified by `statx` of the magic link
/// itself (the open file, not a path looked up again), with
/// `AT_STATX_DONT_SYNC` so a network or FUSE file system is never asked
/// (its cached attributes answer) and the agent cannot hang on it.
/// `None`: the fd is gone or unreadable.
pub fn fd_kind(pid: u32, fd: i32) -> Option<crate::syscalls::FdKind> {
    use crate::syscalls::FdKind;
    if fd < 0 {
        return None;
    }
    let link = format!("/proc/{pid}/fd/{fd}");
    let target = fs::read_link(&link).ok()?;
    let text = target.as_os_str().as_encoded_bytes();
    if text.starts_with(b"pipe:[") {
        return Some(FdKind::Pipe);
    }
    if text.starts_with(b"socket:[") {
        return Some(FdKind::Socket);
    }
    if text.starts_with(b"anon_inode:") {
        return Some(FdKind::Other);
    }
    let c = std::ffi::CString::new(link).ok()?;
    // SAFETY: an all-zero statx is a valid out value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), libc::AT_STATX_DONT_SYNC, libc::STATX_TYPE, &mut stx) };
    if rc != 0 || stx.stx_mask & libc::STATX_TYPE == 0 {
        return None;
    }
    Some(FdKind::from_mode(u32::from(stx.stx_mode), stx.stx_rdev_major))
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
    fn maps_lines_keep_the_mapped_files_identity() {
        let text = "55d0c0a20000-55d0c0b00000 r-xp 00020000 fd:01 1234 /app/svc (deleted)\n\
                    7f1000000000-7f1000100000 r-xp 00028000 08:01 456 /usr/lib/with space/libc.so.6\n\
                    bad line\n7f2000000000-7f2000001000 r-xp zz 08:01 4 /x\n";
        let lines = parse_maps_lines(text);
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].dev, lines[0].inode, lines[0].deleted, lines[0].path.as_str()), (libc::makedev(0xfd, 1), 1234, true, "/app/svc"));
        assert_eq!((lines[1].path.as_str(), lines[1].deleted), ("/usr/lib/with space/libc.so.6", false));
    }

    /// A binary replaced on disk by a rename (a deploy) while it runs: its
    /// frames are read from the file it runs, not from the new one.
    #[test]
    fn a_replaced_binary_is_read_through_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sleeper");
        fs::copy("/bin/sleep", &bin).unwrap();
        let mut child = Command::new(&bin).arg("30").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let replacement = dir.path().join("new");
        fs::copy("/bin/true", &replacement).unwrap();
        fs::rename(&replacement, &bin).unwrap();
        let mut maps = MapsSnapshot::default();
        maps.refresh(pid).unwrap();
        let exe = executable_file(pid, &maps).expect("the executable's mapping");
        assert!(exe.starts_with("/proc/self/fd/"), "{exe:?}");
        assert_eq!(fs::read(&exe).unwrap(), fs::read("/bin/sleep").unwrap());
        assert_eq!(mapped_file_name(&exe), (bin.display().to_string(), Some(OnDisk::Replaced)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Still readable after the process is gone.
        assert_eq!(fs::read(&exe).unwrap(), fs::read("/bin/sleep").unwrap());
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

    #[test]
    fn fd_kinds_are_read_without_opening_what_the_fds_name() {
        use crate::syscalls::FdKind;
        use std::os::unix::fs::OpenOptionsExt as _;
        use std::os::fd::AsRawFd;
        let me = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("log.txt")).unwrap();
        assert_eq!(fd_kind(me, file.as_raw_fd()), Some(FdKind::File));
        let (r, w) = std::io::pipe().unwrap();
        assert_eq!(fd_kind(me, w.as_raw_fd()), Some(FdKind::Pipe));
        assert_eq!(fd_kind(me, r.as_raw_fd()), Some(FdKind::Pipe));
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(fd_kind(me, null.as_raw_fd()), Some(FdKind::CharDevice));
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(fd_kind(me, sock.as_raw_fd()), Some(FdKind::Socket));
        // A FIFO opened by path reads as a path in the link but is a pipe.
        let fifo = dir.path().join("pipe:[1]");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        assert_eq!(fd_kind(me, f.as_raw_fd()), Some(FdKind::Pipe));
        // A file named like a pseudo-file is still a file.
        let odd = std::fs::File::create(dir.path().join("socket:[42]")).unwrap();
        assert_eq!(fd_kind(me, odd.as_raw_fd()), Some(FdKind::File));
        assert_eq!(fd_kind(me, 100_000), None);
        assert_eq!(fd_kind(me, -1), None);
    }
}
