//! A fixed, hand-built evidence set for the golden tests of the report
//! renderers (`audit::golden`) and for renderer unit tests: one audit of
//! `ledger-svc`, a small axum + sqlx service, with profile `all` and load.
//!
//! What it holds, and what it makes the analyses find:
//! - CPU (dwarf, 99 Hz, 1500 samples): two Tokio workers serving axum
//!   handlers under a middleware; `compute_running_balance` takes 32% of the
//!   samples by itself (a P1 cpu-hotspot, pure computation on a worker) and
//!   `format_statement_lines` 16% (P2, formatting); idle parks, sqlx sends,
//!   a blocking-pool thread, the `main` thread in `block_on`, and a few
//!   kernel-only samples. Timed samples make a 60 ms long poll.
//! - Async: `load_template` reads a file with `std::fs` on the workers
//!   (blocking-in-async, P1), its twin `load_template_blocking` does the
//!   same on the blocking pool (fine), `RateCache::get` waits on a
//!   `std::sync::Mutex`; tokio-console was read.
//! - Database: an N+1 (`owner_for_account`, detected by
//!   `detect_n_plus_one` over the executions), a slow statement with a
//!   missing index on `entries (account_id, posted_at)`, an unused and a
//!   duplicate index.
//! - Memory (default mode, 2% duty): allocation churn in a hot function, a
//!   leak, a cache that grows, page faults, mmap/brk sites, the RSS series.
//! - Load: 200 rps for 30 s, a few errors.
//!
//! Every value is a constant or computed from constants: no clock, and no
//! map whose iteration order could reach the outputs.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use perf_audit_common::{memory::SiteStats, sample_kind};

use crate::{
    audit::{AsyncEvidence, AuditEvidence},
    bench::{BenchVerdict, BenchmarkRow},
    database::{
        advice,
        analysis::{self, BurstRule, CallSite, Execution},
    },
    evidence::{Counters, MappingTotals, MemCounters, MemEventRecord},
    memory::{
        KernelTime, MemoryEvidence, MemoryMode, Snapshot,
        analysis as mem_analysis,
        faults::{self, MemEvents, Region, RssPoint},
        section::{GrowthSections, MemorySection, ProbeRow},
    },
    profile::{
        CpuProfile, Frame, Origin, StackSample,
        async_runtime::{ThreadTime, TimedSample},
        test_support::kernel,
    },
    report::{
        CallSiteRow, ConsoleSummary, ConsoleWarning, DatabaseSection, DuplicateIndex, EndReason, EndpointStats,
        IndexRow, KernelInfo, LatencySummary, LoadResult, MissingIndex, SpawnLocation, StatementRow, TableRow,
        ObjectSymbols, TargetInfo, UnusedIndex, UnwindMode, UnwindTableParses, WireSummary, round2, LatencyPoint, LatencySeries,
    },
};

/// The start of collection the fixture claims (a real audit writes its clock).
pub const STARTED_AT: &str = "2026-03-02T09:30:00Z";

const PID: u32 = 4242;
/// The two Tokio workers, the blocking-pool thread and the main thread.
const W1: u32 = 4243;
const W2: u32 = 4244;
const POOL: u32 = 4245;
const MAIN: u32 = PID;
const TOKIO_THREAD: &str = "tokio-runtime-w";

// ---------------------------------------------------------------- frames

/// A frame of ledger-svc's own code.
fn own(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("/build/ledger-svc/src/{file}")),
        line: Some(line),
        origin: Origin::Owner,
        inlined: false,
    }
}

/// A frame of a crates.io dependency (`krate` is `name-version`).
fn dep(krate: &str, function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/{krate}/src/{file}")),
        line: Some(line),
        origin: Origin::Dependency,
        inlined: false,
    }
}

fn tokio(function: &str, file: &str, line: u32) -> Frame {
    dep("tokio-1.47.1", function, file, line)
}

/// A frame of Rust's std/core/alloc.
fn std_(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("/rustc/17067e9ac6d7e98e3bd6e1f0c5f4fcd1e7b5b2a0/library/{file}")),
        line: Some(line),
        origin: Origin::Dependency,
        inlined,
    }
}

/// libc and other code without line info.
fn native(function: &str) -> Frame {
    Frame { function: function.into(), file: None, line: None, origin: Origin::Native, inlined: false }
}

/// The syscall leaf of an off-CPU stack.
fn syscall(name: &str) -> Frame {
    kernel(&format!("{name} [syscall]"))
}

fn cat(parts: &[&[Frame]]) -> Vec<Frame> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

/// A Tokio worker thread, down to its scheduler loop (Tokio starts its
/// workers on blocking-pool threads).
fn worker_loop() -> Vec<Frame> {
    vec![
        native("clone3"),
        native("start_thread"),
        std_("std::sys::pal::unix::thread::Thread::new::thread_start", "std/src/sys/pal/unix/thread.rs", 105, false),
        tokio("tokio::runtime::blocking::pool::Inner::run", "runtime/blocking/pool.rs", 512),
        tokio("tokio::runtime::scheduler::multi_thread::worker::run", "runtime/scheduler/multi_thread/worker.rs", 498),
        tokio("tokio::runtime::scheduler::multi_thread::worker::Context::run", "runtime/scheduler/multi_thread/worker.rs", 567),
    ]
}

/// A worker polling a request: hyper, axum, then the owner's middleware
/// around the handler.
fn request() -> Vec<Frame> {
    cat(&[
        &worker_loop(),
        &[
            tokio("tokio::runtime::scheduler::multi_thread::worker::Context::run_task", "runtime/scheduler/multi_thread/worker.rs", 624),
            tokio("tokio::runtime::task::raw::poll", "runtime/task/raw.rs", 255),
            dep("hyper-1.7.0", "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_loop", "proto/h1/dispatch.rs", 170),
            dep("axum-0.8.4", "<axum::routing::route::RouteFuture<E> as core::future::future::Future>::poll", "routing/route.rs", 153),
            own("ledger_svc::middleware::track_request::{{closure}}", "middleware.rs", 22),
            dep("axum-0.8.4", "axum::middleware::from_fn::Next::run::{{closure}}", "middleware/from_fn.rs", 336),
        ],
    ])
}

fn get_statement() -> Frame {
    own("ledger_svc::handlers::statement::get_statement::{{closure}}", "handlers/statement.rs", 41)
}

fn list_accounts() -> Frame {
    own("ledger_svc::handlers::accounts::list_accounts::{{closure}}", "handlers/accounts.rs", 57)
}

fn export_csv() -> Frame {
    own("ledger_svc::handlers::export::export_csv::{{closure}}", "handlers/export.rs", 30)
}

/// `std::fs::read_to_string` down to the read syscall's kernel frames.
fn fs_read(kernel_frames: &[&str]) -> Vec<Frame> {
    let mut v = vec![
        std_("std::fs::read_to_string", "std/src/fs.rs", 303, false),
        std_("std::fs::read_to_string::inner", "std/src/fs.rs", 297, false),
        native("__libc_read"),
    ];
    v.extend(kernel_frames.iter().map(|k| kernel(k)));
    v
}

fn load_template() -> Frame {
    own("ledger_svc::export::load_template", "export.rs", 72)
}

/// The blocking pool running a `spawn_blocking` closure.
fn pool_task() -> Vec<Frame> {
    vec![
        native("clone3"),
        native("start_thread"),
        std_("std::sys::pal::unix::thread::Thread::new::thread_start", "std/src/sys/pal/unix/thread.rs", 105, false),
        tokio("tokio::runtime::blocking::pool::Inner::run", "runtime/blocking/pool.rs", 512),
        tokio("tokio::runtime::task::raw::poll", "runtime/task/raw.rs", 255),
        tokio("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll", "runtime/blocking/task.rs", 42),
        own("ledger_svc::export::load_template_blocking::{{closure}}", "export.rs", 95),
    ]
}

fn park() -> Vec<Frame> {
    cat(&[
        &worker_loop(),
        &[
            tokio("tokio::runtime::scheduler::multi_thread::park::Parker::park", "runtime/scheduler/multi_thread/park.rs", 75),
            tokio("tokio::runtime::driver::Driver::park", "runtime/driver.rs", 52),
            tokio("tokio::runtime::io::driver::Driver::turn", "runtime/io/driver.rs", 149),
            dep("mio-1.0.4", "mio::poll::Poll::poll", "poll.rs", 435),
            native("epoll_wait"),
        ],
    ])
}

fn main_thread() -> Vec<Frame> {
    vec![
        native("_start"),
        native("__libc_start_main"),
        native("main"),
        own("ledger_svc::main", "main.rs", 14),
        tokio("tokio::runtime::runtime::Runtime::block_on", "runtime/runtime.rs", 370),
        tokio("tokio::runtime::park::CachedParkThread::block_on", "runtime/park.rs", 284),
        tokio("tokio::runtime::park::Inner::park", "runtime/park.rs", 116),
        std_("std::sys::pal::unix::futex::futex_wait", "std/src/sys/pal/unix/futex.rs", 72, true),
        native("syscall"),
    ]
}

// ---------------------------------------------------------------- CPU

struct Stacks(CpuProfile);

impl Stacks {
    /// Adds a stack; returns its index (what a `TimedSample` points at).
    fn add(&mut self, thread: &str, tid: u32, frames: &[Frame], count: u64, events: u64) -> usize {
        let frames = frames.iter().cloned().map(|f| self.0.intern(f)).collect();
        self.0.push_sample(StackSample { thread: thread.into(), tid, frames, count, events, has_user_stack: true });
        self.0.stacks.len() - 1
    }
}

/// The on-CPU profile, and the indexes of the stacks the timed samples use:
/// (running balance on W1, on W2, statement formatting on W1).
fn cpu_profile() -> (CpuProfile, [usize; 3]) {
    let mut p = Stacks(CpuProfile::default());
    let balance = cat(&[
        &request(),
        &[
            get_statement(),
            own("ledger_svc::ledger::balance::compute_running_balance", "ledger/balance.rs", 88),
            dep("rust_decimal-1.37.2", "<rust_decimal::decimal::Decimal as core::ops::arith::Add>::add", "arithmetic_impls.rs", 250),
        ],
    ]);
    let b1 = p.add(TOKIO_THREAD, W1, &balance, 300, 300);
    let b2 = p.add(TOKIO_THREAD, W2, &balance, 180, 180);
    let format = cat(&[
        &request(),
        &[
            get_statement(),
            own("ledger_svc::render::format_statement_lines", "render.rs", 23),
            std_("alloc::fmt::format::format_inner", "alloc/src/fmt.rs", 637, false),
            std_("core::fmt::write", "core/src/fmt/mod.rs", 1682, false),
            dep("rust_decimal-1.37.2", "<rust_decimal::decimal::Decimal as core::fmt::Display>::fmt", "decimal.rs", 2251),
        ],
    ]);
    let f1 = p.add(TOKIO_THREAD, W1, &format, 110, 110);
    p.add(TOKIO_THREAD, W2, &format, 130, 130);
    let send = cat(&[
        &request(),
        &[
            list_accounts(),
            own("ledger_svc::db::owner_for_account::{{closure}}", "db.rs", 118),
            dep("sqlx-core-0.8.6", "sqlx_core::net::socket::buffered::BufferedSocket<S>::flush::{{closure}}", "net/socket/buffered.rs", 140),
            dep("tokio-1.47.1", "<tokio::net::tcp::stream::TcpStream as tokio::io::async_write::AsyncWrite>::poll_write", "net/tcp/stream.rs", 1352),
            native("__libc_send"),
            kernel("entry_SYSCALL_64_after_hwframe"),
            kernel("do_syscall_64"),
            kernel("__x64_sys_sendto"),
            kernel("tcp_sendmsg"),
        ],
    ]);
    p.add(TOKIO_THREAD, W1, &send, 45, 45);
    p.add(TOKIO_THREAD, W2, &send, 45, 45);
    let from_row = cat(&[
        &request(),
        &[
            list_accounts(),
            own("<ledger_svc::model::Account as sqlx_core::from_row::FromRow<sqlx_postgres::row::PgRow>>::from_row", "model.rs", 18),
            std_("alloc::raw_vec::RawVecInner<A>::reserve::do_reserve_and_handle", "alloc/src/raw_vec/mod.rs", 405, false),
            native("malloc"),
        ],
    ]);
    p.add(TOKIO_THREAD, W1, &from_row, 60, 60);
    p.add(TOKIO_THREAD, W2, &from_row, 60, 60);
    let read_on_worker = cat(&[
        &request(),
        &[export_csv(), load_template()],
        &fs_read(&["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "ksys_read", "filemap_read"]),
    ]);
    p.add(TOKIO_THREAD, W1, &read_on_worker, 18, 18);
    p.add(TOKIO_THREAD, W2, &read_on_worker, 12, 12);
    let idle = cat(&[&park(), &[kernel("entry_SYSCALL_64_after_hwframe"), kernel("do_syscall_64"), kernel("do_epoll_wait")]]);
    p.add(TOKIO_THREAD, W1, &idle, 215, 215);
    p.add(TOKIO_THREAD, W2, &idle, 205, 205);
    let harness = cat(&[
        &worker_loop(),
        &[
            tokio("tokio::runtime::scheduler::multi_thread::worker::Context::run_task", "runtime/scheduler/multi_thread/worker.rs", 624),
            tokio("tokio::runtime::task::raw::poll", "runtime/task/raw.rs", 255),
            tokio("tokio::runtime::task::harness::Harness<T,S>::poll", "runtime/task/harness.rs", 153),
        ],
    ]);
    p.add(TOKIO_THREAD, W1, &harness, 20, 20);
    p.add(TOKIO_THREAD, W2, &harness, 20, 20);
    let read_on_pool = cat(&[&pool_task(), &fs_read(&["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "ksys_read", "filemap_read"])]);
    p.add(TOKIO_THREAD, POOL, &read_on_pool, 60, 60);
    let main = cat(&[&main_thread(), &[kernel("entry_SYSCALL_64_after_hwframe"), kernel("do_syscall_64"), kernel("__x64_sys_futex")]]);
    p.add("ledger-svc", MAIN, &main, 10, 10);
    // Samples taken in an interrupt whose user stack could not be copied.
    let frames = [kernel("asm_sysvec_apic_timer_interrupt"), kernel("irq_exit_rcu")];
    let ids = frames.iter().cloned().map(|f| p.0.intern(f)).collect();
    p.0.push_sample(StackSample { thread: TOKIO_THREAD.into(), tid: W1, frames: ids, count: 10, events: 10, has_user_stack: false });
    (p.0, [b1, b2, f1])
}

/// CPU samples in time order (dwarf mode): a 60 ms stretch of
/// `compute_running_balance` on W1, a 20 ms one on W2, and formatting
/// samples between them (each starts a new stretch).
fn timed_samples(stacks: [usize; 3]) -> Vec<TimedSample> {
    const MS: u64 = 1_000_000;
    const PERIOD: u64 = 10_101_010; // 99 Hz
    let [b1, b2, f1] = stacks;
    let mut out = Vec::new();
    let start = 4_000 * MS;
    for k in 0..7 {
        out.push(TimedSample { tid: W1, ts_ns: start + k * PERIOD, oncpu_run_ns: 3 * MS + k * PERIOD, preempted_ns: 0, stack: b1 });
    }
    out.push(TimedSample { tid: W1, ts_ns: start + 7 * PERIOD, oncpu_run_ns: 2 * MS, preempted_ns: 0, stack: f1 });
    let start = 9_500 * MS;
    for k in 0..3 {
        out.push(TimedSample { tid: W2, ts_ns: start + k * PERIOD, oncpu_run_ns: MS + k * PERIOD, preempted_ns: 0, stack: b2 });
    }
    // A short stretch: one sample, no long poll.
    out.push(TimedSample { tid: W1, ts_ns: 12_000 * MS, oncpu_run_ns: 4 * MS, preempted_ns: 0, stack: b1 });
    // Requests served by a worker that was idle: one sample each, 1 ms
    // after the wake-up (polls of ~2 ms).
    for k in 0..60 {
        out.push(TimedSample { tid: W2, ts_ns: 14_000 * MS + k * 50 * MS, oncpu_run_ns: MS, preempted_ns: 0, stack: b2 });
    }
    out
}

// ---------------------------------------------------------------- async

/// Off-CPU stacks, weighted in microseconds, `events` blocking intervals.
fn offcpu_profile() -> CpuProfile {
    let mut p = Stacks(CpuProfile::default());
    let blocked_read = cat(&[&request(), &[export_csv(), load_template()], &fs_read(&[]), &[syscall("read")]]);
    p.add(TOKIO_THREAD, W1, &blocked_read, 182_000, 46);
    p.add(TOKIO_THREAD, W2, &blocked_read, 95_500, 23);
    let lock = cat(&[
        &request(),
        &[
            get_statement(),
            own("ledger_svc::cache::RateCache::get", "cache.rs", 44),
            std_("std::sys::sync::mutex::futex::Mutex::lock_contended", "std/src/sys/sync/mutex/futex.rs", 62, false),
            native("syscall"),
            syscall("futex"),
        ],
    ]);
    p.add(TOKIO_THREAD, W2, &lock, 12_400, 31);
    let idle = cat(&[&park(), &[syscall("epoll_wait")]]);
    p.add(TOKIO_THREAD, W1, &idle, 24_100_000, 5_200);
    p.add(TOKIO_THREAD, W2, &idle, 24_650_000, 5_310);
    let twin = cat(&[&pool_task(), &fs_read(&[]), &[syscall("read")]]);
    p.add(TOKIO_THREAD, POOL, &twin, 88_000, 23);
    let pool_idle = vec![
        native("clone3"),
        native("start_thread"),
        std_("std::sys::pal::unix::thread::Thread::new::thread_start", "std/src/sys/pal/unix/thread.rs", 105, false),
        tokio("tokio::runtime::blocking::pool::Inner::run", "runtime/blocking/pool.rs", 530),
        std_("std::sync::poison::condvar::Condvar::wait_timeout", "std/src/sync/poison/condvar.rs", 345, false),
        native("syscall"),
        syscall("futex"),
    ];
    p.add(TOKIO_THREAD, POOL, &pool_idle, 29_400_000, 40);
    p.add("ledger-svc", MAIN, &cat(&[&main_thread(), &[syscall("futex")]]), 30_000_000, 1);
    p.0
}

fn thread_times() -> Vec<ThreadTime> {
    const MS: u64 = 1_000_000;
    let t = |tid, name: &str, on, blocked, rq, max_run, short, short_ms| ThreadTime {
        tid,
        name: name.into(),
        oncpu_ns: on * MS,
        blocked_ns: blocked * MS,
        runqueue_ns: rq * MS,
        max_run_ns: max_run * MS,
        short_blocks: short,
        short_blocked_ns: short_ms * MS,
    };
    vec![
        t(MAIN, "ledger-svc", 12, 29_988, 0, 4, 3, 1),
        t(W1, TOKIO_THREAD, 5_200, 24_500, 300, 61, 41_200, 118),
        t(W2, TOKIO_THREAD, 4_900, 24_900, 200, 22, 40_650, 112),
        t(POOL, TOKIO_THREAD, 420, 29_560, 20, 9, 310, 2),
    ]
}

fn console() -> ConsoleSummary {
    ConsoleSummary {
        tasks_seen: 6_042,
        live_tasks: 14,
        updates: 30,
        locations: vec![
            SpawnLocation {
                location: "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-util-0.1.16/src/common/exec.rs:49:21".into(),
                tasks: 6_001,
                live: 8,
                polls: 48_210,
                busy_ms: 9_612.4,
                mean_poll_us: 199.4,
            },
            SpawnLocation {
                location: "/build/ledger-svc/src/handlers/export.rs:33:18".into(),
                tasks: 31,
                live: 0,
                polls: 31,
                busy_ms: 412.0,
                mean_poll_us: 13_290.3,
            },
            SpawnLocation { location: "/build/ledger-svc/src/main.rs:31:5".into(), tasks: 1, live: 1, polls: 6_020, busy_ms: 38.2, mean_poll_us: 6.3 },
        ],
        warnings: vec![ConsoleWarning {
            kind: "self-wakes".into(),
            location: "/build/ledger-svc/src/main.rs:31:5".into(),
            tasks: 1,
            detail: "woke themselves in more than 50% of their wakes".into(),
        }],
    }
}

// ---------------------------------------------------------------- database

const ENTRIES_SQL: &str = "SELECT id, account_id, amount, memo, posted_at FROM entries WHERE account_id = $1 AND posted_at >= $2 ORDER BY posted_at";
const OWNER_SQL: &str = "SELECT id, name, email FROM owners WHERE id = $1";
const ACCOUNTS_SQL: &str = "SELECT id, owner_id, branch_id, balance FROM accounts WHERE branch_id = $1 ORDER BY id LIMIT 25";

fn db_site(function: &str, line: u32) -> CallSite {
    CallSite { function: function.into(), file: Some("/build/ledger-svc/src/db.rs".into()), line: Some(line), ..Default::default() }
}

/// Statement executions as the wire showed them: 40 requests to
/// `list_accounts`, each one page query then 25 owner lookups 0.38 ms
/// apart (the N+1); 310 statement queries, one per request, arriving at random.
fn executions() -> Vec<Execution> {
    const MS: f64 = 1e6;
    let page = db_site("ledger_svc::db::accounts_page", 64);
    let owner = db_site("ledger_svc::db::owner_for_account", 118);
    let entries = db_site("ledger_svc::db::entries_since", 91);
    let ex = |ts_ms: f64, tid: u32, fd: u32, sql: &str, site: &CallSite| Execution {
        ts_ns: (ts_ms * MS).round() as u64,
        tid,
        fd,
        sql: Some(sql.into()),
        site: Some(site.clone()),
        ..Default::default()
    };
    let mut out = Vec::new();
    for r in 0..40u32 {
        let base = 1_000.0 + f64::from(r) * 740.0;
        let (tid, fd) = (if r % 2 == 0 { W1 } else { W2 }, 17 + r % 4);
        out.push(ex(base - 1.5, tid, fd, ACCOUNTS_SQL, &page));
        for i in 0..25 {
            out.push(ex(base + f64::from(i) * 0.38, tid, fd, OWNER_SQL, &owner));
        }
    }
    // Independent requests arrive at random (exponential gaps, 96.7 ms on
    // average, from a fixed-seed generator) on either worker thread.
    let mut x: u64 = 0x5eed;
    let mut uniform = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut at = 500.0;
    for k in 0..310u32 {
        at += -uniform().ln() * 96.7;
        out.push(ex(at, if uniform() < 0.5 { W2 } else { W1 }, 21 + k % 4, ENTRIES_SQL, &entries));
    }
    out
}

pub fn database_section() -> DatabaseSection {
    let executions = executions();
    let rule = BurstRule::default();
    let n_plus_one = analysis::detect_n_plus_one(&executions, &rule);
    let sites = analysis::call_sites_by_statement(&executions);
    let call_sites = |sql: &str| -> Vec<CallSiteRow> {
        sites[sql]
            .iter()
            .map(|(s, n)| CallSiteRow { function: s.function.clone(), file: s.file.clone(), line: s.line, executions: *n })
            .collect()
    };
    // (query, calls, total ms, max ms, rows), as pg_stat_statements' difference.
    let measured = [(ENTRIES_SQL, 310, 12_927.0, 96.31, 7_750), (ACCOUNTS_SQL, 40, 93.6, 5.12, 1_000), (OWNER_SQL, 1_000, 92.0, 1.84, 1_000)];
    let all_ms: f64 = measured.iter().map(|m| m.2).sum();
    let missing_columns = vec!["account_id".to_string(), "posted_at".to_string()];
    let statements = measured
        .iter()
        .map(|&(query, calls, total_ms, max_ms, rows)| StatementRow {
            query: query.into(),
            calls,
            total_ms: Some(total_ms),
            mean_ms: Some(round2(total_ms / calls as f64)),
            max_ms: Some(max_ms),
            max_since_reset: false,
            rows: Some(rows),
            time_pct: Some(round2(total_ms / all_ms * 100.0)),
            call_sites: call_sites(query),
            seen_on_wire: Some(executions.iter().filter(|e| e.sql.as_deref() == Some(query)).count() as u64),
            // As the agent's `database::recommendation` words them.
            recommendation: match query {
                ENTRIES_SQL => format!("Add index on entries ({})", missing_columns.join(", ")),
                OWNER_SQL => "N+1 from ledger_svc::db::owner_for_account: batch into one query (`= ANY($1)` or a JOIN)".into(),
                _ => "-".into(),
            },
        })
        .collect();
    let table = |name: &str, rows, seq_scans, seq_rows_read, idx_scans, idx_rows_fetched| TableRow {
        schema: "public".into(),
        table: name.into(),
        rows,
        seq_scans,
        seq_rows_read,
        idx_scans,
        idx_rows_fetched,
    };
    let index = |table: &str, index: &str, scans, scans_total, size_bytes, columns: &str, unique: bool| IndexRow {
        schema: "public".into(),
        table: table.into(),
        index: index.into(),
        scans,
        scans_total,
        size_bytes,
        definition: format!(
            "CREATE {}INDEX {index} ON public.{table} USING btree ({columns})",
            if unique { "UNIQUE " } else { "" }
        ),
    };
    let mut section = DatabaseSection {
        connection: Some("postgres://ledger:***@127.0.0.1:5432/ledger".into()),
        connection_source: Some(format!("DATABASE_URL in the target's environment (/proc/{PID}/environ)")),
        server_version: Some("16.4".into()),
        private_database: false,
        pg_stat_statements: true,
        notes: vec![],
        window_s: 30.02,
        statements,
        tables: vec![
            table("accounts", 48_000, 0, 0, 40, 1_000),
            table("branches", 12, 0, 0, 0, 0),
            table("entries", 2_400_000, 310, 744_000_000, 0, 0),
            table("owners", 12_000, 0, 0, 1_000, 1_000),
        ],
        indexes: vec![
            index("accounts", "accounts_branch_id_idx", 40, 18_220, 1_089_536, "branch_id", false),
            index("accounts", "accounts_pkey", 0, 51_118, 1_089_536, "id", true),
            index("accounts", "idx_accounts_branch", 0, 0, 1_089_536, "branch_id", false),
            index("entries", "entries_pkey", 0, 1_204, 53_968_896, "id", true),
            index("entries", "idx_entries_memo", 0, 0, 75_882_496, "memo", false),
            index("owners", "owners_pkey", 1_000, 981_233, 270_336, "id", true),
        ],
        missing_indexes: vec![MissingIndex {
            schema: "public".into(),
            table: "entries".into(),
            create_sql: advice::create_index_sql("public", "entries", &missing_columns, true),
            columns: missing_columns.clone(),
            query: ENTRIES_SQL.into(),
            filter: "((account_id = $1) AND (posted_at >= $2))".into(),
            calls: 310,
            mean_ms: Some(round2(12_927.0 / 310.0)),
            table_rows: 2_400_000,
            cost_before: None,
            cost_after: None,
            call_sites: call_sites(ENTRIES_SQL),
        }],
        unused_indexes: vec![UnusedIndex {
            schema: "public".into(),
            table: "entries".into(),
            index: "idx_entries_memo".into(),
            size_bytes: 75_882_496,
            definition: "CREATE INDEX idx_entries_memo ON public.entries USING btree (memo)".into(),
            drop_sql: "DROP INDEX CONCURRENTLY idx_entries_memo;".into(),
            plan_checked: true,
            used_at_scale_by: None,
            statements_planned: 2,
            statements_unplanned: 0,
        }],
        duplicate_indexes: vec![DuplicateIndex {
            table: "accounts".into(),
            index: "idx_accounts_branch".into(),
            duplicate_of: "accounts_branch_id_idx".into(),
            size_bytes: 1_089_536,
            drop_sql: "DROP INDEX CONCURRENTLY idx_accounts_branch;".into(),
        }],
        n_plus_one,
        per_item_transactions: Vec::new(),
        chatty_requests: Vec::new(),
        transactions: Vec::new(),
        repeated_reads: Vec::new(),
        pools: Vec::new(),
        wire: WireSummary {
            traced: true,
            connections: 8,
            tls_connections: 0,
            writes: 2_780,
            dropped_writes: 0,
            payload_read_failures: 0,
            stack_failures: 2,
            executions: executions.len() as u64,
            dropped_executions: 0,
            executions_without_text: 0,
            executions_with_call_site: executions.iter().filter(|e| e.site.is_some()).count() as u64,
            n_plus_one_rule: rule.describe(),
            // The ledger service runs on sqlx (what its stacks' frames say).
            drivers: [("sqlx".to_string(), executions.len() as u64)].into_iter().collect(),
            ..Default::default()
        },
        privileges: None,
        plans_not_inspected: Vec::new(),
        rewrites: Vec::new(),
    };
    // What the server answers for this schema: each rewrite parses and plans.
    section.rewrites = crate::database::section::rewrites_wanted(&section)
        .into_iter()
        .map(|sql| crate::database::dialect::CheckedRewrite { sql, accepted: true, error: None })
        .collect();
    section
}

// ---------------------------------------------------------------- memory

/// A request's allocating path, below the middleware (no runtime frames:
/// only the owner's frames and what they call decide attribution).
fn handler(f: Frame, rest: &[Frame]) -> Vec<Frame> {
    cat(&[&[own("ledger_svc::middleware::track_request::{{closure}}", "middleware.rs", 22), f], rest])
}

/// Allocation site id -> (stack root first, allocator last).
fn allocation_stacks() -> Vec<(u64, Vec<Frame>)> {
    let malloc = || native("malloc");
    vec![
        // Churn in a hot function: one String per statement line, freed.
        (0x1001, handler(get_statement(), &[
            own("ledger_svc::render::format_statement_lines", "render.rs", 23),
            std_("alloc::fmt::format::format_inner", "alloc/src/fmt.rs", 637, false),
            std_("alloc::raw_vec::RawVecInner<A>::reserve::do_reserve_and_handle", "alloc/src/raw_vec/mod.rs", 405, false),
            malloc(),
        ])),
        // A leak: every audit record is boxed and never freed.
        (0x1002, handler(get_statement(), &[
            own("ledger_svc::audit_log::AuditLog::record", "audit_log.rs", 51),
            std_("alloc::boxed::Box<T>::new", "alloc/src/boxed.rs", 257, true),
            std_("alloc::alloc::exchange_malloc", "alloc/src/alloc.rs", 349, true),
            malloc(),
        ])),
        // A cache that grows: its table, and the keys cloned into it.
        (0x1003, handler(get_statement(), &[
            own("ledger_svc::cache::RateCache::insert", "cache.rs", 71),
            dep("hashbrown-0.15.5", "hashbrown::raw::RawTable<T,A>::reserve_rehash", "raw/mod.rs", 1067),
            malloc(),
        ])),
        (0x1004, handler(get_statement(), &[
            own("ledger_svc::cache::RateCache::insert", "cache.rs", 69),
            std_("<alloc::string::String as core::clone::Clone>::clone", "alloc/src/string.rs", 2117, true),
            malloc(),
        ])),
        // sqlx's row buffers: allocated and freed per query.
        (0x1005, handler(list_accounts(), &[
            own("ledger_svc::db::owner_for_account::{{closure}}", "db.rs", 118),
            dep("sqlx-postgres-0.8.6", "sqlx_postgres::message::data_row::DataRow::decode_with", "message/data_row.rs", 37),
            std_("<alloc::vec::Vec<u8> as core::clone::Clone>::clone", "alloc/src/vec/mod.rs", 3412, true),
            malloc(),
        ])),
        // A site whose stack never reached the agent.
        (0x1006, vec![]),
    ]
}

/// Cumulative counters of each site after window `w` (1..=6).
fn site_stats(site: u64, w: u64) -> SiteStats {
    let s = |alloc_count: u64, size: u64, free_count: u64| SiteStats {
        alloc_count,
        alloc_bytes: alloc_count * size,
        free_count,
        free_bytes: free_count * size,
        late_free_count: 0,
        late_free_bytes: 0,
    };
    match site {
        0x1001 => s(400 * w, 96, 400 * w),
        0x1002 => s(30 * w, 512, 0),
        0x1003 => SiteStats { alloc_count: w, alloc_bytes: (1 << (w + 4)) * 1024, free_count: w - 1, free_bytes: ((1 << (w + 4)) - 32) * 1024, ..Default::default() },
        0x1004 => s(40 * w, 256, 0),
        0x1005 => s(90 * w, 2048, 90 * w),
        _ => s(5 * w, 64, 5 * w),
    }
}

/// (stack id, leaf-first addresses) -> frames, for page faults and mappings.
fn event_stacks() -> Vec<(Vec<u64>, Vec<Frame>)> {
    vec![
        (vec![0x5501, 0x5502], handler(get_statement(), &[
            own("ledger_svc::cache::RateCache::insert", "cache.rs", 71),
            dep("hashbrown-0.15.5", "hashbrown::raw::RawTable<T,A>::reserve_rehash", "raw/mod.rs", 1067),
        ])),
        (vec![0x5511], handler(get_statement(), &[
            own("ledger_svc::render::format_statement_lines", "render.rs", 23),
            std_("alloc::fmt::format::format_inner", "alloc/src/fmt.rs", 637, false),
        ])),
        (vec![0x5521], handler(list_accounts(), &[
            own("ledger_svc::db::owner_for_account::{{closure}}", "db.rs", 118),
            dep("sqlx-core-0.8.6", "sqlx_core::net::socket::buffered::ReadBuffer::read", "net/socket/buffered.rs", 311),
        ])),
        (vec![0x5531], handler(get_statement(), &[own("ledger_svc::ledger::balance::compute_running_balance", "ledger/balance.rs", 88)])),
        (vec![0x5541], worker_loop()),
        (vec![0x5551], handler(export_csv(), &[
            own("ledger_svc::export::render_csv", "export.rs", 118),
            std_("alloc::raw_vec::RawVecInner<A>::reserve::do_reserve_and_handle", "alloc/src/raw_vec/mod.rs", 405, false),
            native("malloc"),
            native("mmap64"),
        ])),
        (vec![0x5561], handler(export_csv(), &[own("ledger_svc::export::render_csv", "export.rs", 131), native("free"), native("munmap")])),
        (vec![0x5571], handler(get_statement(), &[
            own("ledger_svc::cache::RateCache::insert", "cache.rs", 69),
            native("malloc"),
            native("sbrk"),
        ])),
    ]
}

fn mem_events() -> MemEvents {
    let mut ev = MemEvents::default();
    let record = |kind, addr, bytes, frames: &[u64]| MemEventRecord { kind, tid: W1, ts_ns: 0, addr, bytes, sp: 0x7f3a_5c1f_e000, frames: frames.to_vec() };
    let faults: [(&[u64], Region, u32); 6] = [
        (&[0x5501, 0x5502], Region::Heap, 180),
        (&[0x5511], Region::Heap, 40),
        (&[0x5521], Region::Anonymous, 25),
        (&[0x5531], Region::Stack, 12),
        (&[0x5541], Region::File, 3),
        (&[0x5501, 0x5502], Region::Anonymous, 6),
    ];
    for (frames, region, n) in faults {
        for _ in 0..n {
            ev.add(record(sample_kind::PAGE_FAULT, 0, 0, frames), region);
        }
    }
    // Two 1 MiB buffers mapped, one unmapped; the heap grown five times.
    ev.add(record(sample_kind::MMAP, 0x7f3a_4000_0000, 1 << 20, &[0x5551]), Region::Unknown);
    ev.add(record(sample_kind::MMAP, 0x7f3a_4010_0000, 1 << 20, &[0x5551]), Region::Unknown);
    ev.add(record(sample_kind::MUNMAP, 0x7f3a_4000_0000, 1 << 20, &[0x5561]), Region::Unknown);
    ev.add(record(sample_kind::MUNMAP, 0x7f3a_3000_0000, 256 << 10, &[0x5561]), Region::Unknown);
    for i in 0..5 {
        ev.add(record(sample_kind::BRK, 0x55d0_c140_0000 + i * (132 << 10), 132 << 10, &[0x5571]), Region::Unknown);
    }
    ev
}

/// RSS every 500 ms over the 30 s: a steady rise with a small, fixed ripple.
fn rss_points() -> Vec<RssPoint> {
    const MIB: u64 = 1 << 20;
    (0..=60u64)
        .map(|i| {
            let ripple = [0, 12, 4, 20, 8][(i % 5) as usize] * 1024;
            RssPoint {
                t_s: i as f64 * 0.5,
                rss_bytes: 46 * MIB + i * 36 * 1024 + ripple,
                anon_bytes: 31 * MIB + i * 34 * 1024 + ripple,
                heap_bytes: 8 * MIB + (i / 12) * (660 << 10),
                huge_page_bytes: 0,
            }
        })
        .collect()
}

pub fn memory() -> (MemorySection, Vec<String>) {
    let stacks: HashMap<u64, Vec<Frame>> = allocation_stacks().into_iter().collect();
    let windows = 6u64;
    let series: Vec<Snapshot> = (1..=windows)
        .map(|w| Snapshot { t: (w * 5) as f64 - 2.5, sites: stacks.keys().map(|&s| (s, site_stats(s, w))).collect() })
        .collect();
    let sites = series.last().expect("six windows").sites.clone();
    let duty = 0.02;
    let elapsed_s = 30.0;
    let analysis = mem_analysis::analyze(&mem_analysis::Input { duty, elapsed_s, sites: &sites, series: &series, stacks: &stacks });
    let folded = analysis.folded.clone();
    let frames: HashMap<Vec<u64>, Vec<Frame>> = event_stacks().into_iter().collect();
    let events = mem_events();
    let c = counters();
    let points = rss_points();
    let growth = GrowthSections {
        page_faults: faults::page_fault_section(&events, &frames, &c, Some(68_412), 0),
        mappings: faults::mapping_section(&events, &frames, &c),
        rss_series: faults::rss_series(&points),
    };
    let mut ids: Vec<u64> = sites.keys().copied().collect();
    ids.sort_unstable();
    let alloc_calls = ids.iter().map(|s| sites[s].alloc_count).sum();
    let free_calls = ids.iter().map(|s| sites[s].free_count + sites[s].late_free_count).sum();
    let probe = |symbol: &str, offset, instruction: &str, uretprobe| ProbeRow {
        symbol: symbol.into(),
        offset,
        instruction: instruction.into(),
        emulated: true,
        uretprobe,
    };
    let raw = MemoryEvidence {
        mode: MemoryMode::Default,
        allocator_family: "glibc malloc".into(),
        allocator_object: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        probes: vec![
            probe("malloc", 4, "push", true),
            probe("free", 12, "push", false),
            probe("calloc", 4, "push", true),
            probe("realloc", 4, "push", true),
        ],
        rust_shims: vec!["__rustc::__rust_alloc".into(), "__rustc::__rust_dealloc".into(), "__rustc::__rust_realloc".into()],
        counters: MemCounters { alloc_calls, free_calls, free_untracked: 311, ..Default::default() },
        sites: sites.len(),
        truncated_stacks: 0,
        peak_rss_bytes: points.iter().map(|p| p.rss_bytes).max().unwrap_or(0),
        current_rss_bytes: points.last().map_or(0, |p| p.rss_bytes),
        duty,
        recorded_s: 0.6,
        probed_s: 2.4,
        elapsed_s,
        windows,
        kernel_time: KernelTime { during_s: 0.41, during_wall_s: 30.0, after: Some((0.012, 1.0)) },
        recording: None,
    };
    (MemorySection::build(&raw, analysis, growth), folded)
}

// ---------------------------------------------------------------- load, counters

fn latency(count: u64, mean_ms: f64, p50_ms: f64, p90_ms: f64, p99_ms: f64, p999_ms: f64, max_ms: f64) -> LatencySummary {
    LatencySummary { count, mean_ms, p50_ms, p90_ms, p99_ms, p999_ms, max_ms }
}

/// A GET endpoint of the scenario: requests sent, 2xx, other statuses, no response.
fn endpoint(url: &str, weight: u32, [sent, ok, status_errors, transport_errors]: [u64; 4], latency: LatencySummary) -> EndpointStats {
    EndpointStats {
        method: "GET".into(),
        url: url.into(),
        weight,
        sent,
        completed: ok + status_errors,
        ok,
        status_errors,
        transport_errors,
        timeouts: transport_errors / 2,
        latency,
        first_error: (transport_errors > 0).then(|| "timed out after 5s".to_string()),
    }
}

pub fn load() -> LoadResult {
    LoadResult {
        target_rps: 200,
        duration_s: 30.0,
        window_s: 30.0,
        elapsed_s: 30.04,
        stopped_early: false,
        max_in_flight: 256,
        planned: 6_000,
        sent: 6_000,
        unsent: 0,
        completed: 5_996,
        ok: 5_990,
        status_errors: 6,
        transport_errors: 4,
        timeouts: 2,
        unfinished: 0,
        achieved_rps: 5_996.0 / 30.04,
        latency: latency(5_996, 38.21, 24.6, 71.3, 182.4, 410.9, 5_012.7),
        uncorrected_latency: latency(5_996, 31.02, 22.9, 64.8, 141.7, 298.2, 5_002.1),
        status_counts: BTreeMap::from([(200, 5_990), (500, 6)]),
        per_endpoint: vec![
            endpoint("http://127.0.0.1:8080/accounts/{id}/statement", 6, [3_600, 3_594, 6, 0], latency(3_600, 51.80, 36.2, 88.1, 201.5, 420.3, 611.0)),
            endpoint("http://127.0.0.1:8080/branches/{id}/accounts", 3, [1_800, 1_800, 0, 0], latency(1_800, 14.71, 12.1, 22.4, 48.9, 77.0, 93.2)),
            endpoint("http://127.0.0.1:8080/accounts/{id}/export.csv", 1, [600, 596, 0, 4], latency(596, 29.35, 24.8, 41.0, 96.6, 5_000.2, 5_012.7)),
        ],
        // One bucket per second; the export's 5 s timeouts land in second 17.
        series: LatencySeries {
            interval_s: 1.0,
            points: (0..30u32)
                .map(|t| LatencyPoint {
                    t_s: f64::from(t),
                    requests: 200,
                    errors: if t == 17 { 10 } else { 0 },
                    p50_ms: 24.0 + f64::from(t % 5) * 0.4,
                    p99_ms: if t == 17 { 5_000.2 } else { 160.0 + f64::from(t % 7) * 6.0 },
                    max_ms: if t == 17 { 5_012.7 } else { 300.0 + f64::from(t % 3) * 20.0 },
                })
                .collect(),
        },
    }
}

/// The same load for 3 s after the probes were detached: healthy, a little
/// faster than during the audit.
fn load_unprobed() -> LoadResult {
    let mut before = load();
    before.duration_s = 3.0;
    before.window_s = 3.0;
    before.elapsed_s = 3.01;
    before.planned = 600;
    before.sent = 600;
    before.completed = 600;
    before.ok = 600;
    before.status_errors = 0;
    before.transport_errors = 0;
    before.timeouts = 0;
    before.achieved_rps = 600.0 / 3.01;
    before.latency = latency(600, 33.4, 22.1, 60.2, 151.0, 160.2, 170.5);
    before.status_counts = BTreeMap::from([(200, 600)]);
    before.per_endpoint = Vec::new();
    before.series = LatencySeries::default();
    before
}

fn counters() -> Counters {
    Counters {
        cpu_samples: 1_500,
        cpu_samples_dropped_map_full: 0,
        cpu_user_stack_failed: 10,
        cpu_kernel_stack_failed: 0,
        cpu_samples_dropped_ring_full: 3,
        cpu_user_stack_copy_failed: 0,
        offcpu_samples: 10_674,
        offcpu_dropped_ring_full: 0,
        sched_state_map_full: 0,
        db_writes: 2_780,
        db_writes_dropped_ring_full: 0,
        db_payload_read_failed: 0,
        db_user_stack_copy_failed: 2,
        page_fault_samples: 266,
        page_fault_dropped_ring_full: 1,
        mappings: MappingTotals {
            mmap_calls: 214,
            mmap_bytes: 61 << 20,
            munmap_calls: 198,
            munmap_bytes: 57 << 20,
            brk_grow_calls: 41,
            brk_grow_bytes: 41 * (132 << 10),
            brk_shrink_bytes: 0,
        },
        mapping_dropped: 0,
    }
}

// ---------------------------------------------------------------- the audit

/// The whole evidence set of the ledger-svc audit.
pub fn ledger_svc() -> AuditEvidence {
    let (cpu, timed) = cpu_profile();
    let (section, folded) = memory();
    let rss = rss_points();
    AuditEvidence {
        target: TargetInfo { pid: PID, name: "ledger-svc".into(), exe: "/build/ledger-svc/target/release/ledger-svc".into() },
        profile: "all".into(),
        unavailable_profiles: vec![],
        started_at: STARTED_AT.into(),
        duration: Duration::from_secs(30),
        planned_duration: Duration::from_secs(30),
        end_reason: EndReason::Duration,
        end_signal: None,
        target_exec: None,
        kernel: KernelInfo { release: "6.8.0-52-generic".into(), btf: true },
        counters: counters(),
        cpu,
        cpu_section: true,
        unwinding: UnwindMode::Dwarf,
        frequency_hz: 99,
        symbols: vec![
            ObjectSymbols {
                object: "/build/ledger-svc/target/release/ledger-svc".into(),
                build_id: Some("5f1c0ffee0ddf00d5f1c0ffee0ddf00d12345678".into()),
                executable: true,
                symbols: true,
                line_info: true,
                debug_file: None,
                owner_crates: vec!["ledger_svc".into()],
                load_segments: vec![],
                on_disk: None,
                problems: vec![],
                ..Default::default()
            },
            ObjectSymbols {
                object: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                build_id: Some("4d5b3e2a1f0c9b8a7d6e5f4a3b2c1d0e9f8a7b6c".into()),
                executable: false,
                symbols: true,
                line_info: false,
                debug_file: None,
                owner_crates: vec![],
                load_segments: vec![],
                on_disk: None,
                problems: vec![],
                ..Default::default()
            },
        ],
        unwind_tables: vec![
            UnwindTableParses { object: "/build/ledger-svc/target/release/ledger-svc".into(), parses: 1 },
            UnwindTableParses { object: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(), parses: 1 },
        ],
        cpu_sample_times: timed_samples(timed).iter().map(|s| (s.tid, s.ts_ns)).collect(),
        collect_start_ns: 0,
        async_runtime: Some(AsyncEvidence {
            offcpu: offcpu_profile(),
            threads: thread_times(),
            samples: timed_samples(timed),
            long_poll: Duration::from_millis(10),
            offcpu_min: Duration::from_millis(1),
            console_address: "127.0.0.1:6669".into(),
            console: Some(Ok(console())),
            tracepoints: "raw tracepoints sched_switch and sys_exit".into(),
        }),
        database: Some(database_section()),
        memory: Some((section, folded)),
        load: Some(load()),
        load_unprobed: Some(load_unprobed()),
        overhead: Some(crate::report::schema::OverheadSection {
            budget_pct: Some(3.0),
            measured_s: 29.8,
            target_cores: 0.62,
            kernel_pct: 4.1,
            peak_window_pct: 9.7,
            agent_cores: 0.21,
            collectors: vec![
                crate::report::schema::CollectorCost { collector: "allocator probes (memory)".into(), cpu_ms_per_s: 14.2, target_cpu_pct: 2.29, program_runs: 418_000 },
                crate::report::schema::CollectorCost { collector: "cpu sampling".into(), cpu_ms_per_s: 0.4, target_cpu_pct: 0.06, program_runs: 5_900 },
            ],
            back_offs: vec![crate::report::schema::BackOff {
                at_s: 5.2,
                collector: "memory".into(),
                action: "allocator probes: no more recording windows (allocation figures cover the windows before; page faults, mappings and RSS go on)".into(),
                cost_pct: 9.7,
            }],
            unavailable: None,
            rule: "cost = our BPF programs' run time (kernel statistics) + uprobe traps, as a share of the target's CPU time, judged over 3 s".into(),
            agent_priority: None,
            drops: vec![],
        }),
        recording_periods: vec![],
        last_rss_bytes: rss.last().map_or(0, |p| p.rss_bytes),
        peak_rss_bytes: rss.iter().map(|p| p.rss_bytes).max().unwrap_or(0),
        cpu_seconds: Some(10.59),
        benchmarks: vec![],
        rerun_command: "sudo perf-audit-agent ledger-svc all --duration 30s".into(),
        bench: false,
    }
}

/// The same service audited with profile `cpu` and `--bench`, without load,
/// stopped with Ctrl-C after 12.4 s of the 30 s planned: the report's other
/// branches (partial banner, baseline without load, no async, database or
/// memory section, the benchmark table, a CI workflow that benchmarks).
pub fn ledger_svc_interrupted_cpu_bench() -> AuditEvidence {
    let mut e = ledger_svc();
    e.profile = "cpu".into();
    e.duration = Duration::from_millis(12_400);
    e.end_reason = EndReason::Interrupted;
    e.end_signal = Some("SIGINT".into());
    e.async_runtime = None;
    e.database = None;
    e.memory = None;
    e.load = None;
    e.cpu_seconds = Some(3.1);
    e.unwinding = UnwindMode::FramePointer;
    e.bench = true;
    // Built with cargo's default release profile: symbols, no line tables.
    e.symbols[0].line_info = false;
    e.rerun_command = "sudo perf-audit-agent ledger-svc cpu --duration 30s --bench".into();
    let bench = |id: &str, mean_ns: f64, change: Option<(f64, f64, f64)>, verdict| BenchmarkRow {
        id: id.into(),
        mean_ns,
        mean_lower_ns: mean_ns * 0.98,
        mean_upper_ns: mean_ns * 1.03,
        change_pct: change.map(|c| c.0),
        change_lower_pct: change.map(|c| c.1),
        change_upper_pct: change.map(|c| c.2),
        max_regression_pct: 5.0,
        verdict,
    };
    e.benchmarks = vec![
        bench("balance/running_balance/1000", 18_250.0, Some((12.41, 9.87, 15.02)), BenchVerdict::Regressed),
        bench("render/statement_lines/100", 4_812.5, Some((-1.2, -3.4, 0.9)), BenchVerdict::WithinNoise),
        bench("csv/export|escape", 912_000.0, None, BenchVerdict::FirstRun),
    ];
    e
}
