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
}
