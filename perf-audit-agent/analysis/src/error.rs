//! User-facing errors: one line that says what went wrong and how to fix it.
//!
//! Modeled on cargo-nextest: an [`Error`] is a struct carrying an
//! [`ErrorKind`] (which decides the exit code and the fix) and the specific
//! message. `main` prints `error: <message> (fix: <fix>)` and exits with
//! [`ErrorKind::exit_code`]; nothing else in the agent prints errors.

use std::fmt;

/// Documented exit codes (also in `--help` and the README).
pub mod exit_code {
    /// The audit completed and the report was written (possibly partial:
    /// the target exited early; the report says so).
    pub const OK: i32 = 0;
    /// An unexpected internal error.
    pub const INTERNAL: i32 = 1;
    /// Invalid arguments (clap uses 2 too).
    pub const USAGE: i32 = 2;
    /// The target process could not be found or started, or has no
    /// allocator the memory profile can probe.
    pub const TARGET: i32 = 3;
    /// Not enough privileges to load eBPF programs.
    pub const PERMISSION: i32 = 4;
    /// The kernel lacks something the collectors need.
    pub const KERNEL: i32 = 5;
    /// The output directory could not be written.
    pub const OUTPUT: i32 = 6;
    /// The database the audit needs could not be started or reached.
    pub const DATABASE: i32 = 7;
    /// `diff`: a metric regressed past its `--max-regression` threshold
    /// (the outputs are written; stderr names each regressed metric).
    pub const REGRESSION: i32 = 8;
    /// `--bench`: the benchmarks could not be run or their results read.
    pub const BENCH: i32 = 9;
    /// `symbolize`: a debug file's build-id differs from the audited
    /// object's, or it has none (`--force-debug-file` uses it anyway).
    pub const DEBUG_FILE_MISMATCH: i32 = 10;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad or conflicting arguments.
    Usage,
    /// No process with that pid.
    PidNotFound,
    /// No process with that name.
    NameNotFound,
    /// Several processes match the name.
    NameAmbiguous,
    /// The command after `--` could not be started.
    LaunchFailed,
    /// The memory profile found no allocator it can probe in the target.
    AllocatorUnknown,
    /// Not root, or missing CAP_BPF / CAP_PERFMON.
    Permission,
    /// The kernel lacks BPF, BTF, perf events, tracefs...
    KernelUnsupported,
    /// Loading or attaching an eBPF program failed for another reason.
    EbpfLoad,
    /// Writing the report failed.
    Output,
    /// No PostgreSQL installed to start a private database with.
    PostgresNotInstalled,
    /// The database could not be started, reached or prepared.
    Database,
    /// `diff`: an input is not an audit output directory or report.json.
    AuditInput,
    /// `symbolize`: the audit to name is not an audit output directory.
    SymbolizeInput,
    /// `symbolize`: no debug file for any object that lacks symbols.
    DebugFileNotFound,
    /// `--bench`: `cargo bench` failed or left no criterion results.
    Bench,
    /// `symbolize`: the debug file is not the audited build's.
    DebugFileMismatch,
    /// Anything else; a bug.
    Internal,
}

impl ErrorKind {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => exit_code::USAGE,
            ErrorKind::PidNotFound
            | ErrorKind::NameNotFound
            | ErrorKind::NameAmbiguous
            | ErrorKind::LaunchFailed
            | ErrorKind::AllocatorUnknown => exit_code::TARGET,
            ErrorKind::Permission => exit_code::PERMISSION,
            ErrorKind::KernelUnsupported | ErrorKind::EbpfLoad => exit_code::KERNEL,
            ErrorKind::Output => exit_code::OUTPUT,
            ErrorKind::PostgresNotInstalled | ErrorKind::Database => exit_code::DATABASE,
            ErrorKind::AuditInput | ErrorKind::SymbolizeInput | ErrorKind::DebugFileNotFound => exit_code::USAGE,
            ErrorKind::Bench => exit_code::BENCH,
            ErrorKind::DebugFileMismatch => exit_code::DEBUG_FILE_MISMATCH,
            ErrorKind::Internal => exit_code::INTERNAL,
        }
    }

    /// The fix, as the seed's error table gives it.
    pub fn fix(self) -> &'static str {
        match self {
            ErrorKind::Usage => "see `perf-audit-agent --help`",
            ErrorKind::PidNotFound | ErrorKind::NameNotFound => {
                "the service is not running: start it first, or launch it with `perf-audit-agent -- <command>`"
            }
            ErrorKind::NameAmbiguous => "pick one with --pid <PID>",
            ErrorKind::LaunchFailed => "check the command path and that it is executable",
            ErrorKind::AllocatorUnknown => {
                "audit the other profiles (`cpu async database`), or build the service with glibc malloc, jemalloc (tikv-jemallocator) or mimalloc"
            }
            ErrorKind::Permission => {
                "run with sudo (or grant CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE)"
            }
            ErrorKind::KernelUnsupported => {
                "use a kernel built with CONFIG_BPF_SYSCALL, CONFIG_BPF_EVENTS and CONFIG_DEBUG_INFO_BTF (5.8 or later)"
            }
            ErrorKind::EbpfLoad => {
                "report it with the output of `uname -r` and this message (likely an unsupported kernel)"
            }
            ErrorKind::Output => "pass a writable directory with --out DIR",
            ErrorKind::PostgresNotInstalled => {
                "install PostgreSQL (apt-get install postgresql), or pass --database-url URL"
            }
            ErrorKind::Database => {
                "see the PostgreSQL error in this message, or pass --database-url URL of a running database"
            }
            ErrorKind::AuditInput => {
                "pass two audit output directories (or their report.json files) written by perf-audit-agent"
            }
            ErrorKind::SymbolizeInput => {
                "pass one audit output directory (or its report.json) written by perf-audit-agent: `perf-audit-agent symbolize DIR --debug-dir DEBUG_DIR`"
            }
            ErrorKind::DebugFileNotFound => {
                "pass --debug-dir DIR holding the debug file (DIR/.build-id/ab/cdef....debug or DIR/<binary>.debug, e.g. from `objcopy --only-keep-debug`), or install it under /usr/lib/debug/.build-id/"
            }
            ErrorKind::Bench => {
                "run `cargo bench` in the service's crate to see the error, or point --bench-dir at the crate with the criterion benchmarks"
            }
            ErrorKind::DebugFileMismatch => {
                "pass the debug file of the audited build (same build-id), or --force-debug-file to use this one anyway (names may be wrong)"
            }
            ErrorKind::Internal => "this is a bug: please report it with the command you ran",
        }
    }
}

impl ErrorKind {
    /// The fix as a subcommand prints it: a usage error points at that
    /// subcommand's own help (`perf-audit-agent diff --help`); `None` is
    /// the audit itself.
    pub fn fix_in(self, subcommand: Option<&str>) -> std::borrow::Cow<'static, str> {
        match (self, subcommand) {
            (ErrorKind::Usage, Some(cmd)) => format!("see `perf-audit-agent {cmd} --help`").into(),
            _ => self.fix().into(),
        }
    }
}

/// An error with its kind and a specific, one-line message.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line: never let a multi-line source (e.g. a verifier log) in.
        let message = message.lines().next().unwrap_or_default().trim_end().to_string();
        Error { kind, message }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn output(path: &std::path::Path, err: std::io::Error) -> Self {
        Error::new(ErrorKind::Output, format!("cannot write {}: {err}", path.display()))
    }
}

impl Error {
    /// `message (fix: ...)` with the fix of `subcommand` (see [`ErrorKind::fix_in`]).
    pub fn display_in(&self, subcommand: Option<&str>) -> String {
        format!("{} (fix: {})", self.message, self.kind.fix_in(subcommand))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (fix: {})", self.message, self.kind.fix())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_one_line_with_the_fix() {
        let e = Error::new(ErrorKind::PidNotFound, "no process with pid 99\nsecond line");
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("no process with pid 99"));
        assert!(shown.contains("start it first"));
        assert_eq!(e.kind.exit_code(), exit_code::TARGET);
    }

    #[test]
    fn a_subcommands_usage_error_points_at_its_own_help() {
        let e = Error::new(ErrorKind::Usage, "bad threshold");
        assert!(e.display_in(Some("diff")).ends_with("(fix: see `perf-audit-agent diff --help`)"));
        assert_eq!(e.display_in(None), e.to_string());
        let d = Error::new(ErrorKind::DebugFileNotFound, "no debug file");
        assert!(d.display_in(Some("symbolize")).contains("--debug-dir"));
        assert!(!d.to_string().contains("two audit output directories"));
    }
}
