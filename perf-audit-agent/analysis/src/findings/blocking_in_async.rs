//! `blocking-in-async`: a blocking call (std::fs, std::net, DNS through
//! `ToSocketAddrs`, `std::thread::sleep`) made on a Tokio worker thread,
//! found at the owner's frame that made it. While it blocks, the worker
//! polls no other task: every request queued on it waits.
//!
//! "Blocking file I/O ... use tokio::fs" is said only of regular files:
//! the agent reads the kind of the file descriptor each blocked read/write
//! used (`/proc/PID/fd/N`), and a write to stdout/stderr, a pipe or a
//! terminal from a log writer (a tracing fmt layer, `log`, `println!`) is
//! synchronous logging on the request path. Writing a log line costs
//! something everywhere; it blocks a worker only when the pipe or terminal
//! is full, so it is a finding only when material: from 0.5% of worker
//! time blocked in such writes (P1 from 2%, P0 from 10%), the fix a
//! non-blocking writer or fewer log lines.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Rule, Severity};
use crate::profile::async_runtime::{BlockingKind, BlockingSite};

pub struct BlockingInAsync {
    /// Share of worker time blocked at a site from which it is P0.
    pub p0_worker_pct: f64,
    /// From which it is P1 (below: P2).
    pub p1_worker_pct: f64,
    /// Synchronous logging: share of worker time from which it is a
    /// finding, P1 and P0.
    pub log_min_worker_pct: f64,
    pub log_p1_worker_pct: f64,
    pub log_p0_worker_pct: f64,
}

impl Default for BlockingInAsync {
    fn default() -> Self {
        BlockingInAsync { p0_worker_pct: 1.0, p1_worker_pct: 0.2, log_min_worker_pct: 0.5, log_p1_worker_pct: 2.0, log_p0_worker_pct: 10.0 }
    }
}

/// Whether the worker blocked while dropping a file, i.e. in close(2): the
/// owner may already use `tokio::fs`, whose `File` closes its fd wherever its
/// last handle drops, so "use tokio::fs" would be the wrong advice.
fn closes_a_file_on_drop(site: &BlockingSite) -> bool {
    site.kind == BlockingKind::FileIo && site.via.as_deref().is_some_and(|v| v.contains("drop_in_place") && v.contains("File"))
}

/// Whether the worker blocked writing log lines to stdout/stderr (a log
/// writer or `println!`): `tokio::fs` does not apply, a non-blocking log
/// writer does.
fn writes_stdout(site: &BlockingSite) -> bool {
    site.kind == BlockingKind::Logging
        || (site.kind == BlockingKind::FileIo
            && site.via.as_deref().is_some_and(|v| {
                ["std::io::stdio", "Stdout", "Stderr", "tracing_subscriber::fmt", "env_logger", "log4rs", "_print", "_eprint"].iter().any(|n| v.contains(n))
            }))
}

fn fix(site: &BlockingSite) -> CodeFix {
    let f = site.function.rsplit("::").next().unwrap_or(&site.function);
    match site.kind {
        BlockingKind::FileIo | BlockingKind::Logging if writes_stdout(site) => CodeFix {
            before: "tracing_subscriber::fmt().with_writer(std::io::stdout).init();   // write(2) on the worker".to_string(),
            after: "let (writer, _guard) = tracing_appender::non_blocking(std::io::stdout()); // keep _guard alive in main\ntracing_subscriber::fmt().with_writer(writer).init();".to_string(),
        },
        BlockingKind::FileIo if closes_a_file_on_drop(site) => CodeFix {
            before: "let mut file = tokio::fs::File::create(path).await?;\nfile.write_all(data).await?;\nfile.sync_data().await?;\n}                                        // close(2) runs on the worker here".to_string(),
            after: "tokio::task::spawn_blocking(move || {\n    let mut file = std::fs::File::create(path)?;\n    file.write_all(&data)?;\n    file.sync_data()                     // open, write, fsync and close on the pool\n}).await??;".to_string(),
        },
        BlockingKind::FileIo => CodeFix {
            before: format!("fn {f}() -> std::io::Result<String> {{\n    std::fs::read_to_string(path)            // blocks the worker\n}}"),
            after: format!("async fn {f}() -> std::io::Result<String> {{\n    tokio::fs::read_to_string(path).await    // runs on the blocking pool\n}}"),
        },
        BlockingKind::Sleep => CodeFix {
            before: "std::thread::sleep(delay);              // parks the whole worker".to_string(),
            after: "tokio::time::sleep(delay).await;        // yields to other tasks".to_string(),
        },
        BlockingKind::Dns => CodeFix {
            before: "let addr = (host, port).to_socket_addrs()?.next();   // getaddrinfo on the worker".to_string(),
            after: "let addr = tokio::net::lookup_host((host, port)).await?.next();".to_string(),
        },
        BlockingKind::NetworkIo => CodeFix {
            before: "let mut stream = std::net::TcpStream::connect(addr)?;".to_string(),
            after: "let mut stream = tokio::net::TcpStream::connect(addr).await?;".to_string(),
        },
        BlockingKind::ChannelRecv => CodeFix {
            before: "let msg = rx.recv()?;                   // std/crossbeam receiver parks the worker".to_string(),
            after: "let msg = rx.recv().await;              // tokio::sync::mpsc::Receiver yields".to_string(),
        },
        BlockingKind::BlockOn => CodeFix {
            before: "let out = futures::executor::block_on(fut);   // parks the worker inside a task".to_string(),
            after: "let out = fut.await;".to_string(),
        },
        BlockingKind::SyncLock | BlockingKind::Other | BlockingKind::Logging => CodeFix {
            before: format!("let out = {f}(input);                    // blocks the worker"),
            after: format!("let out = tokio::task::spawn_blocking(move || {f}(input)).await?;"),
        },
    }
}

impl Rule for BlockingInAsync {
    fn id(&self) -> &'static str {
        "blocking-in-async"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(a) = evidence.async_runtime else { return Vec::new() };
        a.blocking
            .iter()
            // One short block (a 1 ms wait while a JoinHandle drops) is not
            // a blocking call of the owner's: 3 intervals, or 10 ms, or 3
            // CPU samples inside a blocking API make one.
            .filter(|s| s.kind != BlockingKind::Other && (s.intervals >= 3 || s.blocked_ms >= 10.0 || s.on_cpu_samples >= 3))
            // Logging is material from a share of worker time.
            .filter(|s| !writes_stdout(s) || s.worker_time_pct >= self.log_min_worker_pct)
            .map(|s| {
                let logging = writes_stdout(s);
                let (p0, p1) = if logging { (self.log_p0_worker_pct, self.log_p1_worker_pct) } else { (self.p0_worker_pct, self.p1_worker_pct) };
                let severity = Severity::from_share(s.worker_time_pct, p0, p1);
                let via = s.via.as_deref().map(|v| format!(" in `{v}`")).unwrap_or_default();
                let syscalls = if s.syscalls.is_empty() { String::new() } else { format!(" ({})", s.syscalls.join(", ")) };
                let mut evidence = format!(
                    "Runtime workers blocked {} times for {:.1} ms in total{via}{syscalls}, {:.2}% of all worker time",
                    s.intervals, s.blocked_ms, s.worker_time_pct
                );
                if s.on_cpu_samples > 0 {
                    evidence.push_str(&format!("; plus {} CPU samples on workers inside the call", s.on_cpu_samples));
                }
                let recommendation = match s.kind {
                    BlockingKind::FileIo | BlockingKind::Logging if logging => "log lines (or prints) are written to stdout/stderr (a pipe or terminal, not a file) synchronously on the worker, which waits whenever the reader falls behind: log through a non-blocking writer (`tracing_appender::non_blocking(std::io::stdout())`), whose background thread does the writes, or lower the log volume (per-request events at debug, `EnvFilter`); `tokio::fs` does not apply to stdout".to_string(),
                    BlockingKind::FileIo if closes_a_file_on_drop(s) => "the file is closed (close(2)) on the worker where its last handle drops: do the whole open/write/close in one tokio::task::spawn_blocking, or hand the handle to spawn_blocking to drop".to_string(),
                    BlockingKind::FileIo => "use tokio::fs (or tokio::task::spawn_blocking) instead of std::fs on the runtime".to_string(),
                    BlockingKind::Sleep => "use tokio::time::sleep(..).await instead of std::thread::sleep".to_string(),
                    BlockingKind::Dns => "resolve with tokio::net::lookup_host(..).await instead of ToSocketAddrs".to_string(),
                    BlockingKind::NetworkIo => "use tokio::net instead of std::net on the runtime".to_string(),
                    BlockingKind::ChannelRecv => "receive with tokio::sync::mpsc (recv().await), or do the receive in tokio::task::spawn_blocking".to_string(),
                    BlockingKind::BlockOn => "await the future instead of calling block_on inside async code (block_on parks the worker until it completes)".to_string(),
                    _ => "move the blocking call into tokio::task::spawn_blocking".to_string(),
                };
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Async,
                    title: if logging {
                        format!("Synchronous logging on the request path in `{}`: {:.2}% of worker time blocked writing log lines", s.function, s.worker_time_pct)
                    } else {
                        format!("{} on a runtime worker in `{}`", s.kind.describe(), s.function)
                    },
                    function: s.function.clone(),
                    file: s.file.clone(),
                    line: s.line,
                    evidence,
                    recommendation,
                    impact: severity.impact(),
                    complexity: Complexity::Easy,
                    estimated_gain: format!(
                        "frees {:.2}% of worker time; removes up to {:.1} ms of queueing from requests that land behind it",
                        s.worker_time_pct,
                        if s.intervals > 0 { s.blocked_ms / s.intervals as f64 } else { 0.0 }
                    ),
                    ranking: if logging {
                        format!(
                            "{:.2}% of worker time blocked writing log lines here: a finding from {}% (a write blocks only when the pipe or terminal is full), P0 from {}%, P1 from {}%",
                            s.worker_time_pct, self.log_min_worker_pct, p0, p1
                        )
                    } else {
                        format!("{:.2}% of worker time blocked here: P0 from {}%, P1 from {}%", s.worker_time_pct, p0, p1)
                    },
                    code_fix: Some(fix(s)),
                    source: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::async_runtime::{AsyncAnalysis, WorkersSummary};

    fn site(function: &str, via: &str, syscalls: &[&str]) -> BlockingSite {
        BlockingSite {
            function: function.into(),
            file: Some("src/main.rs".into()),
            line: Some(73),
            kind: BlockingKind::FileIo,
            via: Some(via.into()),
            syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
            intervals: 3,
            blocked_ms: 2.5,
            worker_time_pct: 0.02,
            on_cpu_samples: 0,
        }
    }

    fn check(sites: Vec<BlockingSite>) -> Vec<Finding> {
        let analysis = AsyncAnalysis { workers: WorkersSummary::default(), blocking: sites, lock_contention: Vec::new(), long_polls: Vec::new(), tasks: Vec::new(), long_polls_measured: true };
        let evidence = Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None };
        BlockingInAsync::default().check(&evidence)
    }

    #[test]
    fn a_file_closed_on_the_worker_by_its_drop_is_not_told_to_use_tokio_fs() {
        let found = check(vec![
            site("svc::write_marker", "core::ptr::drop_in_place<alloc::sync::Arc<std::fs::File>>", &["close"]),
            site("svc::read_config", "std::fs::read_to_string", &["read"]),
        ]);
        let by = |f: &str| found.iter().find(|x| x.function == f).unwrap();
        let close = by("svc::write_marker");
        assert!(close.recommendation.contains("spawn_blocking") && !close.recommendation.contains("use tokio::fs"), "{}", close.recommendation);
        assert!(close.code_fix.as_ref().unwrap().after.contains("spawn_blocking"));
        let read = by("svc::read_config");
        assert!(read.recommendation.contains("use tokio::fs"), "{}", read.recommendation);
    }
}
