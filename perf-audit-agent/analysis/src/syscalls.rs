//! x86_64 syscall numbers the off-CPU analysis names and classifies.

/// What a blocking syscall waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waits {
    /// futex: a lock, a condition variable, a parked thread.
    Futex,
    /// nanosleep and friends.
    Sleep,
    /// Files: read/write/open/fsync on a file system.
    File,
    /// Sockets: connect, send, receive, accept.
    Network,
    /// epoll/poll/select: waiting for I/O readiness (a runtime parking).
    Readiness,
    Other,
}

const TABLE: &[(i32, &str, Waits)] = &[
    (0, "read", Waits::File),
    (1, "write", Waits::File),
    (2, "open", Waits::File),
    (3, "close", Waits::File),
    (4, "stat", Waits::File),
    (5, "fstat", Waits::File),
    (7, "poll", Waits::Readiness),
    (17, "pread64", Waits::File),
    (18, "pwrite64", Waits::File),
    (19, "readv", Waits::File),
    (20, "writev", Waits::File),
    (23, "select", Waits::Readiness),
    (24, "sched_yield", Waits::Other),
    (35, "nanosleep", Waits::Sleep),
    (42, "connect", Waits::Network),
    (43, "accept", Waits::Network),
    (44, "sendto", Waits::Network),
    (45, "recvfrom", Waits::Network),
    (46, "sendmsg", Waits::Network),
    (47, "recvmsg", Waits::Network),
    (61, "wait4", Waits::Other),
    (74, "fsync", Waits::File),
    (75, "fdatasync", Waits::File),
    (76, "truncate", Waits::File),
    (77, "ftruncate", Waits::File),
    (82, "rename", Waits::File),
    (87, "unlink", Waits::File),
    (202, "futex", Waits::Futex),
    (230, "clock_nanosleep", Waits::Sleep),
    (232, "epoll_wait", Waits::Readiness),
    (257, "openat", Waits::File),
    (262, "newfstatat", Waits::File),
    (270, "pselect6", Waits::Readiness),
    (271, "ppoll", Waits::Readiness),
    (277, "sync_file_range", Waits::File),
    (281, "epoll_pwait", Waits::Readiness),
    (288, "accept4", Waits::Network),
    (295, "preadv", Waits::File),
    (296, "pwritev", Waits::File),
    (299, "recvmmsg", Waits::Network),
    (307, "sendmmsg", Waits::Network),
    (318, "getrandom", Waits::Other),
    (332, "statx", Waits::File),
    (426, "io_uring_enter", Waits::File),
    (441, "epoll_pwait2", Waits::Readiness),
    (449, "futex_waitv", Waits::Futex),
];

pub fn name(nr: i32) -> String {
    TABLE.iter().find(|(n, _, _)| *n == nr).map(|(_, name, _)| name.to_string()).unwrap_or_else(|| format!("syscall_{nr}"))
}

/// What the syscall named `name` (as [`name`] returns it) waits for.
pub fn waits(name: &str) -> Waits {
    TABLE.iter().find(|(_, n, _)| *n == name).map(|(_, _, w)| *w).unwrap_or(Waits::Other)
}


/// Syscalls whose first argument is a file descriptor (read, write,
/// close, fsync...): the off-CPU sample carries it, and the agent reads
/// what it refers to.
pub fn takes_fd(nr: i32) -> bool {
    matches!(nr, 0 | 1 | 3 | 5 | 17 | 18 | 19 | 20 | 74 | 75 | 77 | 277 | 295 | 296)
}

/// What a file descriptor refers to, from `fstat`'s file type (`st_mode &
/// S_IFMT`) of `/proc/PID/fd/N`: only a regular file is file I/O that
/// `tokio::fs` applies to; stdout/stderr are pipes, terminals or
/// `/dev/null` (a character device) under a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FdKind {
    File,
    Pipe,
    Tty,
    CharDevice,
    Socket,
    Other,
}

impl FdKind {
    /// From `st_mode` and, for character devices, whether the device is a
    /// terminal (its major number: 4 and 5 are ttys, 136-143 ptys).
    pub fn from_mode(mode: u32, rdev_major: u32) -> FdKind {
        match mode & 0o170000 {
            0o100000 => FdKind::File,
            0o010000 => FdKind::Pipe,
            0o140000 => FdKind::Socket,
            0o020000 if matches!(rdev_major, 4 | 5 | 136..=143) => FdKind::Tty,
            0o020000 => FdKind::CharDevice,
            _ => FdKind::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Pipe => "pipe",
            FdKind::Tty => "tty",
            FdKind::CharDevice => "char device",
            FdKind::Socket => "socket",
            FdKind::Other => "other",
        }
    }

    fn from_label(label: &str) -> Option<FdKind> {
        [FdKind::File, FdKind::Pipe, FdKind::Tty, FdKind::CharDevice, FdKind::Socket, FdKind::Other].into_iter().find(|k| k.label() == label)
    }
}

/// The leaf frame of an off-CPU stack: `write [syscall]`, or with the file
/// descriptor and what it referred to, `write [syscall fd 1 pipe]`.
pub fn leaf_label(syscall: &str, fd: Option<(i32, FdKind)>) -> String {
    match fd {
        Some((fd, kind)) => format!("{syscall} [syscall fd {fd} {}]", kind.label()),
        None => format!("{syscall} [syscall]"),
    }
}

/// The syscall and its file descriptor from a leaf label ([`leaf_label`]).
pub fn parse_leaf(label: &str) -> Option<(&str, Option<(i32, FdKind)>)> {
    let (name, rest) = label.split_once(" [syscall")?;
    let rest = rest.strip_suffix(']')?;
    if rest.is_empty() {
        return Some((name, None));
    }
    let rest = rest.strip_prefix(" fd ")?;
    let (fd, kind) = rest.split_once(' ')?;
    Some((name, Some((fd.parse().ok()?, FdKind::from_label(kind)?))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_their_kind() {
        assert_eq!(name(202), "futex");
        assert_eq!(waits(&name(202)), Waits::Futex);
        assert_eq!(waits(&name(75)), Waits::File);
        assert_eq!(name(9999), "syscall_9999");
        assert_eq!(waits("syscall_9999"), Waits::Other);
    }

    #[test]
    fn leaf_labels_carry_the_fd_and_its_kind() {
        assert_eq!(parse_leaf("write [syscall]"), Some(("write", None)));
        let l = leaf_label("write", Some((1, FdKind::Pipe)));
        assert_eq!(l, "write [syscall fd 1 pipe]");
        assert_eq!(parse_leaf(&l), Some(("write", Some((1, FdKind::Pipe)))));
        assert_eq!(parse_leaf(&leaf_label("fsync", Some((7, FdKind::CharDevice)))), Some(("fsync", Some((7, FdKind::CharDevice)))));
        assert_eq!(parse_leaf("svc::main"), None);
        assert_eq!(FdKind::from_mode(0o100644, 0), FdKind::File);
        assert_eq!(FdKind::from_mode(0o010600, 0), FdKind::Pipe);
        assert_eq!(FdKind::from_mode(0o020620, 136), FdKind::Tty);
        assert_eq!(FdKind::from_mode(0o020666, 1), FdKind::CharDevice);
        assert_eq!(FdKind::from_mode(0o140777, 0), FdKind::Socket);
        assert!(takes_fd(1) && !takes_fd(202));
    }
}
