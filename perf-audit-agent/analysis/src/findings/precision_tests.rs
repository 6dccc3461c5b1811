//! The precision harness: each fixture reproduces a false alarm an owner
//! rejected on reading their code (issue 18), with the evidence that
//! produced it, and asserts that the wrong finding is absent and the right
//! one present. `precision_and_recall_over_the_fixtures` sums them up:
//! findings reported vs findings that are true defects of their fixture
//! (precision) and planted defects found (recall); run it with
//! `--nocapture` to print the table.

use super::{Category, CpuEvidence, Evidence, Finding, MemoryEvidence, Rule, evaluate};
use crate::{
    database::{
        analysis::{self, BurstRule, CallSite, Execution},
        thresholds,
    },
    memory::{analysis::AllocatorRow, section::MemorySection},
    profile::{
        CpuProfile, Frame, Origin,
        async_runtime::{AsyncAnalysis, BlockingKind, BlockingSite},
        hotspots::hotspots,
        test_support::{dep, owner, profile},
    },
    report::{DatabaseSection, StatementRow, TableRow, UnusedIndex},
};

fn owner_in(function: &str, file: &str, line: u32) -> Frame {
    Frame { function: function.into(), file: Some(file.into()), line: Some(line), origin: Origin::Owner, inlined: false }
}

fn worker_root() -> Vec<Frame> {
    vec![dep("tokio::runtime::scheduler::multi_thread::worker::run", false), dep("tokio::runtime::task::harness::Harness<T,S>::poll", false)]
}

fn stack(parts: &[Frame]) -> Vec<Frame> {
    let mut v = worker_root();
    v.extend_from_slice(parts);
    v
}

fn cpu_findings(p: &CpuProfile) -> Vec<Finding> {
    let hs = hotspots(p);
    let ev = Evidence { cpu: Some(CpuEvidence { profile: p, hotspots: &hs, total_samples: p.total_samples() }), async_runtime: None, database: None, memory: None };
    evaluate(&ev)
}

fn owned(stacks: &[(Vec<Frame>, u64)]) -> CpuProfile {
    let refs: Vec<(&[Frame], u64)> = stacks.iter().map(|(s, n)| (s.as_slice(), *n)).collect();
    profile(&refs)
}

// ------------------------------------------------------------ fixture 1

/// A metrics middleware whose body is `next.run(request).await`, over a
/// tower-http trace layer and tracing_subscriber's fmt writer; and a
/// handler that serializes its own data with serde_json.
fn middleware_profile() -> CpuProfile {
    let mw = owner("svc::middleware::track_metrics::{{closure}}", 31);
    let next = dep("axum::middleware::from_fn::Next::run::{{closure}}", false);
    let pin = dep("<core::pin::Pin<P> as core::future::future::Future>::poll", true);
    let trace = dep("<tower_http::trace::future::ResponseFuture<F,C,E> as core::future::future::Future>::poll", false);
    let fmt = dep("<tracing_subscriber::fmt::fmt_layer::Layer<S,N,E,W> as tracing_subscriber::layer::Layer<S>>::on_event", false);
    let format = dep("tracing_subscriber::fmt::format::Format::format_event", false);
    let handler = owner("svc::handlers::list_items::{{closure}}", 58);
    let to_string = dep("serde_json::ser::to_string", false);
    let escape = dep("serde_json::ser::format_escaped_str_contents", false);
    let idle = dep("tokio::runtime::park::Inner::park", false);
    owned(&[
        (stack(&[mw.clone(), pin.clone(), next.clone(), trace.clone(), fmt, format]), 90),
        (stack(&[mw.clone(), pin, next.clone(), trace.clone()]), 60),
        (stack(&[mw, next, trace, handler.clone(), to_string, escape]), 120),
        (stack(std::slice::from_ref(&handler)), 10),
        (vec![idle], 720),
    ])
}

#[test]
fn a_middleware_that_only_awaits_next_is_not_the_hotspot_its_layers_are() {
    let f = cpu_findings(&middleware_profile());
    let mw: Vec<&Finding> = f.iter().filter(|x| x.function == "svc::middleware::track_metrics").collect();
    assert_eq!(mw.len(), 1, "{f:#?}");
    let mw = mw[0];
    // Layers most samples first: the fmt writer (90, innermost) then the trace layer (60).
    assert_eq!(mw.title, "tracing_subscriber's fmt writer and the tower-http trace layer take 15.0% of CPU under `svc::middleware::track_metrics`");
    assert!(mw.evidence.contains("only awaited a framework future (`axum::middleware::from_fn::Next::run`)"), "{}", mw.evidence);
    assert!(mw.recommendation.contains("tracing_appender::non_blocking") && mw.recommendation.contains("TraceLayer"), "{}", mw.recommendation);
    for wrong in ["clear()", "cheaper algorithm", "borrow", "spawn_blocking"] {
        assert!(!mw.recommendation.contains(wrong), "{wrong}: {}", mw.recommendation);
    }
    assert!(mw.code_fix.is_none(), "no sketch of the middleware's own code: {:?}", mw.code_fix);
}

#[test]
fn a_handler_calling_serde_json_on_its_data_keeps_the_finding() {
    let f = cpu_findings(&middleware_profile());
    let h = f.iter().find(|x| x.function == "svc::handlers::list_items").expect("handler finding");
    assert_eq!(h.rule, "cpu-hotspot");
    assert!(h.title.contains("JSON") && h.title.contains("`svc::handlers::list_items`"), "{}", h.title);
    assert!(h.recommendation.contains("paginate") || h.recommendation.contains("cache the bytes"), "{}", h.recommendation);
}

#[test]
fn framework_and_runtime_allocations_are_not_told_to_reuse_a_buffer_nor_reported() {
    // Attribution from frames: the owner's frame calls tokio::spawn.
    let frames = vec![
        owner("svc::jobs::enqueue", 12),
        dep("tokio::task::spawn::spawn", false),
        dep("tokio::runtime::handle::Handle::spawn", false),
        dep("alloc::sync::Arc<T>::new", true),
        Frame { function: "__rust_alloc".into(), origin: Origin::Native, ..Default::default() },
    ];
    let attr = crate::memory::analysis::attribute(&frames);
    assert_eq!(attr.via.as_deref(), Some("tokio::task::spawn::spawn"));
    // An owner frame that builds its own String keeps no `via`.
    let own = vec![owner("svc::fmt_row", 3), dep("alloc::string::String::push_str", true), Frame { function: "malloc".into(), origin: Origin::Native, ..Default::default() }];
    assert_eq!(crate::memory::analysis::attribute(&own).via, None);

    let row = |function: &str, ty: &str, via: Option<&str>| AllocatorRow {
        function: function.into(),
        file: Some("/svc/src/main.rs".into()),
        line: Some(9),
        bytes: 1_000_000_000,
        count: 1_000_000,
        ty: Some(ty.into()),
        bytes_per_s: 6_400_000.0,
        allocs_per_s: 100_000.0,
        freed_pct: 100.0,
        live_bytes: 0,
        origin: Origin::Owner,
        via: via.map(str::to_string),
    };
    let section = MemorySection {
        top_allocators: vec![
            row("svc::jobs::enqueue", "Arc<Handle>", Some("tokio::runtime::handle::Handle::spawn")),
            row("svc::middleware::track_metrics", "Box<_>", Some("<tower::util::boxed::sync::BoxService<T,U,E> as tower_service::Service<T>>::call")),
            row("svc::encode", "Vec<u8>", None),
        ],
        ..Default::default()
    };
    let ev = Evidence { cpu: None, async_runtime: None, database: None, memory: Some(MemoryEvidence { section: &section }) };
    let f = evaluate(&ev);
    let by = |name: &str| f.iter().find(|x| x.function == name).unwrap_or_else(|| panic!("{name}: {f:#?}"));
    let spawn = by("svc::jobs::enqueue");
    assert!(!spawn.recommendation.contains("clear()"), "{}", spawn.recommendation);
    assert!(spawn.recommendation.contains("Tokio's own") && spawn.recommendation.contains("spawn fewer tasks"), "{}", spawn.recommendation);
    // A middleware whose allocations tower's boxing made (issue 26): the
    // framework's normal per-request work, not a finding.
    assert!(!f.iter().any(|x| x.function == "svc::middleware::track_metrics"), "{f:#?}");
    // The owner's own buffer keeps the buffer advice.
    assert!(by("svc::encode").recommendation.contains("clear()"));
}

#[test]
fn rows_decoded_by_the_database_driver_are_not_an_allocation_finding() {
    // The demo's `latest_posts` (50 posts with LIMIT) allocating in sqlx.
    let frames = vec![
        owner("svc::db::latest_posts::{{closure}}", 40),
        dep("sqlx_core::query_as::QueryAs<DB,O,A>::fetch_all::{{closure}}", false),
        dep("sqlx_postgres::row::PgRow::try_decode", false),
        Frame { function: "malloc".into(), origin: Origin::Native, ..Default::default() },
    ];
    let via = crate::memory::analysis::attribute(&frames).via;
    assert_eq!(via.as_deref(), Some("sqlx_core::query_as::QueryAs<DB,O,A>::fetch_all"));
    let section = MemorySection {
        top_allocators: vec![AllocatorRow {
            function: "svc::db::latest_posts".into(),
            count: 1_000_000,
            bytes: 100_000_000,
            allocs_per_s: 50_000.0,
            freed_pct: 100.0,
            origin: Origin::Owner,
            via,
            ..Default::default()
        }],
        ..Default::default()
    };
    let ev = Evidence { cpu: None, async_runtime: None, database: None, memory: Some(MemoryEvidence { section: &section }) };
    assert!(evaluate(&ev).is_empty());
}

fn startup_statements() -> DatabaseSection {
    let slow = |query: &str, calls: i64, mean: f64| StatementRow { query: query.into(), calls, mean_ms: Some(mean), total_ms: Some(mean * calls as f64), ..Default::default() };
    DatabaseSection {
        window_s: 15.0,
        statements: vec![
            slow("INSERT INTO users (id, name) SELECT g, 'u' || g FROM generate_series(1, $1) g", 1, 561.2),
            slow("CREATE INDEX IF NOT EXISTS users_last_login_at_idx ON users (last_login_at)", 1, 99.6),
            slow("ANALYZE users", 3, 20.0),
            slow("SELECT id FROM users WHERE country = $1 ORDER BY signup_at DESC LIMIT $2", 400, 31.1),
        ],
        ..Default::default()
    }
}

#[test]
fn statements_run_once_at_startup_are_not_slow_queries() {
    let db = startup_statements();
    let f = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&db), memory: None });
    let slow: Vec<&Finding> = f.iter().filter(|x| x.rule == "slow-query").collect();
    assert_eq!(slow.len(), 1, "{f:#?}");
    assert!(slow[0].evidence.contains("country = $1") && slow[0].ranking.contains("at least 3 calls"), "{:?}", slow[0]);
}

// ------------------------------------------------------------ fixture 2

fn known_cost_finding(below: &[Frame]) -> Finding {
    let mut s = vec![owner("svc::work::{{closure}}", 20)];
    s.extend_from_slice(below);
    let p = owned(&[(stack(&s), 80), (vec![dep("tokio::runtime::park::Inner::park", false)], 20)]);
    let f = cpu_findings(&p);
    f.into_iter().find(|x| x.function == "svc::work").expect("a finding on svc::work")
}

#[test]
fn each_known_costly_call_gets_its_own_advice() {
    let cases: &[(&str, &str, &str)] = &[
        ("argon2::Argon2::hash_password_into", "password hashing", "spawn_blocking"),
        ("bcrypt::hash_with_salt", "password hashing", "slow by design"),
        ("scrypt::scrypt", "password hashing", "slow by design"),
        ("pbkdf2::pbkdf2_hmac", "password hashing", "slow by design"),
        ("rustls::client::hs::start_handshake", "TLS handshakes", "reuse connections"),
        ("SSL_do_handshake", "TLS handshakes", "session resumption"),
        ("getaddrinfo", "DNS resolution", "lookup_host"),
        ("flate2::zio::Writer<W,D>::write", "compression", "faster level"),
        ("zstd::stream::write::Encoder::write", "compression", "faster level"),
        ("brotli::enc::encode::BrotliEncoderCompressStream", "compression", "faster level"),
        ("regex::regex::string::Regex::new", "regex compilation", "LazyLock"),
        ("serde_json::ser::to_string", "JSON", "paginate"),
        ("tracing_subscriber::fmt::format::Format::format_event", "log formatting", "EnvFilter"),
        ("<std::io::stdio::StdoutLock as std::io::Write>::write_all", "stdout", "tracing_appender::non_blocking"),
        ("sqlx_core::query_as::QueryAs<DB,O,A>::fetch_all::{{closure}}", "database driver", "fewer queries"),
    ];
    for (frame, what, advice) in cases {
        let f = known_cost_finding(&[dep(frame, false)]);
        assert!(f.title.to_lowercase().contains(&what.to_lowercase()), "{frame}: {}", f.title);
        assert!(f.recommendation.contains(advice), "{frame}: {}", f.recommendation);
        assert!(!f.recommendation.contains("cheaper algorithm"), "{frame}: {}", f.recommendation);
        assert!(f.evidence.contains("known costly call"), "{frame}: {}", f.evidence);
    }
    // stdout is never told to use tokio::fs.
    let out = known_cost_finding(&[dep("tracing_subscriber::fmt::format::Format::format_event", false), dep("<std::io::stdio::StdoutLock as std::io::Write>::write_all", false)]);
    assert!(out.recommendation.contains("non_blocking") && !out.recommendation.contains("use tokio::fs"), "{}", out.recommendation);
}

#[test]
fn argon2_already_in_spawn_blocking_is_not_told_to_move_or_to_use_a_cheaper_algorithm() {
    let pool = vec![
        dep("std::sys::pal::unix::thread::Thread::new::thread_start", false),
        dep("tokio::runtime::blocking::pool::Inner::run", false),
        dep("tokio::runtime::blocking::task::BlockingTask<T>::poll", false),
        owner("svc::auth::hash_password::{{closure}}", 44),
        dep("argon2::Argon2::hash_password_into", false),
        dep("argon2::block::Block::compress", true),
    ];
    let p = owned(&[(pool, 90), (vec![dep("tokio::runtime::park::Inner::park", false)], 10)]);
    let f = cpu_findings(&p);
    let h = f.iter().find(|x| x.function == "svc::auth::hash_password").expect("finding");
    assert!(h.recommendation.contains("slow by design") && h.recommendation.contains("already runs on the blocking pool"), "{}", h.recommendation);
    for wrong in ["cheaper algorithm", "borrow", "move it to `tokio::task::spawn_blocking`"] {
        assert!(!h.recommendation.contains(wrong), "{wrong}: {}", h.recommendation);
    }
    assert!(h.code_fix.is_none(), "the code already does what a spawn_blocking sketch shows");
    // The same call on a worker is told to move off the runtime.
    let w = known_cost_finding(&[dep("argon2::Argon2::hash_password_into", false)]);
    assert!(w.recommendation.contains("move the call off the async runtime"), "{}", w.recommendation);
    assert!(w.code_fix.as_ref().unwrap().after.contains("spawn_blocking"));
}

fn stdout_analysis() -> AsyncAnalysis {
    let site = |function: &str, via: &str| BlockingSite {
        function: function.into(),
        file: Some("src/main.rs".into()),
        line: Some(12),
        kind: BlockingKind::FileIo,
        via: Some(via.into()),
        syscalls: vec!["write".into()],
        intervals: 40,
        blocked_ms: 80.0,
        worker_time_pct: 0.5,
        on_cpu_samples: 0,
    };
    AsyncAnalysis {
        blocking: vec![site("svc::handlers::login", "<std::io::stdio::StdoutLock as std::io::Write>::write_all"), site("svc::load_config", "std::fs::read_to_string")],
        ..Default::default()
    }
}

#[test]
fn stdout_log_lines_blocking_a_worker_get_a_non_blocking_writer_not_tokio_fs() {
    let analysis = stdout_analysis();
    let ev = Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None };
    let f = super::BlockingInAsync::default().check(&ev);
    let login = f.iter().find(|x| x.function == "svc::handlers::login").unwrap();
    assert!(login.recommendation.contains("tracing_appender::non_blocking") && !login.recommendation.contains("use tokio::fs"), "{}", login.recommendation);
    assert!(login.code_fix.as_ref().unwrap().after.contains("non_blocking"));
    let config = f.iter().find(|x| x.function == "svc::load_config").unwrap();
    assert!(config.recommendation.contains("use tokio::fs"), "{}", config.recommendation);
}

#[test]
fn anonymous_async_fns_of_two_files_are_two_functions() {
    let a = owner_in("svc::{async_fn#0}", "/svc/src/routes/users.rs", 10);
    let b = owner_in("svc::{async_fn#0}", "/svc/src/routes/orders.rs", 20);
    let p = owned(&[(stack(&[a]), 30), (stack(&[b]), 20), (vec![dep("tokio::runtime::park::Inner::park", false)], 50)]);
    let hs = hotspots(&p);
    let anon: Vec<_> = hs.iter().filter(|h| h.function == "svc::{async_fn#0}").collect();
    assert_eq!(anon.len(), 2, "{hs:#?}");
    assert_eq!((anon[0].self_samples, anon[0].file.as_deref()), (30, Some("/svc/src/routes/users.rs")));
    assert_eq!((anon[1].self_samples, anon[1].file.as_deref()), (20, Some("/svc/src/routes/orders.rs")));
    let f = cpu_findings(&p);
    let files: Vec<_> = f.iter().filter(|x| x.function == "svc::{async_fn#0}").map(|x| (x.file.clone(), x.evidence.clone())).collect();
    assert_eq!(files.len(), 2);
    assert!(files[0].1.contains("30 of 100") && files[1].1.contains("20 of 100"), "{files:?}");
}

#[test]
fn one_short_block_while_a_join_handle_drops_is_not_blocking_in_async() {
    // The demo's `report_fast` (tokio::fs, a good twin): blocked once for 1.3 ms.
    let site = |function: &str, intervals: u64, blocked_ms: f64| BlockingSite {
        function: function.into(),
        kind: BlockingKind::FileIo,
        via: Some("core::ptr::drop_in_place<tokio::runtime::task::join::JoinHandle<core::result::Result<std::fs::File,std::io::error::Error>>>".into()),
        intervals,
        blocked_ms,
        worker_time_pct: 0.004,
        ..Default::default()
    };
    let analysis = AsyncAnalysis { blocking: vec![site("svc::handlers::report_fast", 1, 1.3), site("svc::handlers::load_report_template", 193, 671.8)], ..Default::default() };
    let f = evaluate(&Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None });
    let names: Vec<&str> = f.iter().map(|x| x.function.as_str()).collect();
    assert_eq!(names, vec!["svc::handlers::load_report_template"], "{f:#?}");
}

#[test]
fn a_single_wait_on_a_lock_is_not_contention() {
    // The demo's `report_fast` (a good twin) waited once, for 4 ms, on the
    // latency-stats mutex that `summarize_latency_stats` holds while it sleeps.
    let wait = |function: &str, intervals: u64| BlockingSite {
        function: function.into(),
        kind: BlockingKind::SyncLock,
        via: Some("std::sync::poison::mutex::Mutex<T>::lock".into()),
        intervals,
        blocked_ms: 4.0 * intervals as f64,
        worker_time_pct: 0.01 * intervals as f64,
        ..Default::default()
    };
    let analysis = AsyncAnalysis { lock_contention: vec![wait("svc::handlers::report_fast", 1), wait("svc::stats::record_latency", 19)], ..Default::default() };
    let f = evaluate(&Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None });
    let names: Vec<&str> = f.iter().map(|x| x.function.as_str()).collect();
    assert_eq!(names, vec!["svc::stats::record_latency"], "{f:#?}");
}

// ------------------------------------------------------------ fixture 3

/// A serial worker: per item BEGIN, SELECT, UPDATE, COMMIT, each item right
/// after the previous one, 40 items per batch, 6 batches.
fn per_item_transaction_executions() -> Vec<Execution> {
    let site = |line| Some(CallSite { function: "svc::worker::process_one".into(), file: Some("/svc/src/worker.rs".into()), line: Some(line), ..Default::default() });
    let mut out = Vec::new();
    for batch in 0..6u64 {
        let mut t = batch * 2_000_000_000;
        for _ in 0..40 {
            for (i, (sql, line)) in [("BEGIN", 30), ("SELECT state FROM jobs WHERE id = $1", 31), ("UPDATE jobs SET state = $2 WHERE id = $1", 32), ("COMMIT", 33)].into_iter().enumerate() {
                // The task moves between worker threads; its connection stays.
                out.push(Execution { ts_ns: t, tid: 7 + i as u32 % 2, fd: 12, sql: Some(sql.into()), site: site(line), ..Default::default() });
                t += 300_000;
            }
        }
    }
    out
}

#[test]
fn begin_and_commit_per_item_are_a_transaction_per_item_not_an_n_plus_one() {
    let ex = per_item_transaction_executions();
    let rule = BurstRule::default();
    let n1 = analysis::detect_n_plus_one(&ex, &rule);
    assert!(n1.iter().all(|n| !analysis::is_transaction_control(&n.query)), "{n1:#?}");
    assert!(!n1.iter().any(|n| n.query == "BEGIN" || n.query == "COMMIT"));
    let tx = analysis::detect_per_item_transactions(&ex, &rule);
    assert_eq!(tx.len(), 1, "{tx:#?}");
    assert_eq!(tx[0].transactions, 240);
    assert_eq!(tx[0].median_round_trips, 4);
    // Even a section that lists BEGIN as N+1 (older agents) gives no N+1 finding on it.
    let mut section = DatabaseSection { n_plus_one: n1, per_item_transactions: tx, ..Default::default() };
    section.n_plus_one.push(analysis::NPlusOne { query: "COMMIT".into(), call_site: CallSite { function: "svc::worker::process_one".into(), ..Default::default() }, bursts: 6, executions: 240, executions_in_bursts: 240, median_burst: 40, max_burst: 40, median_burst_ms: 48.0, ..Default::default() });
    let ev = Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None };
    let f = evaluate(&ev);
    assert!(!f.iter().any(|x| x.rule == "n-plus-one-query" && (x.evidence.contains("`BEGIN`") || x.evidence.contains("`COMMIT`"))), "{f:#?}");
    let t = f.iter().find(|x| x.rule == "per-item-transaction").expect("per-item transaction finding");
    assert!(t.evidence.contains("240 transactions") && t.evidence.contains("4 round trips"), "{}", t.evidence);
    assert!(!t.recommendation.contains("= ANY($1)` with all the ids"), "{}", t.recommendation);
    for stmt in ["BEGIN", "SAVEPOINT s1", "COMMIT", "ROLLBACK", "SET search_path TO app", "start transaction", "RELEASE SAVEPOINT s1"] {
        assert!(analysis::is_transaction_control(stmt), "{stmt}");
    }
    assert!(!analysis::is_transaction_control("SELECT 1"));
}

// ------------------------------------------------------------ fixture 4

fn table(name: &str, rows: i64, seq_scans: i64, seq_rows_read: i64, idx_scans: i64) -> TableRow {
    TableRow { schema: "public".into(), table: name.into(), rows, seq_scans, seq_rows_read, idx_scans, idx_rows_fetched: 0 }
}

fn unused(table: &str, index: &str, definition: &str) -> UnusedIndex {
    UnusedIndex { schema: "public".into(), table: table.into(), index: index.into(), size_bytes: 16_384, definition: definition.into(), drop_sql: format!("DROP INDEX CONCURRENTLY {index};"), ..Default::default() }
}

fn statement(query: &str, calls: i64, rows: i64) -> StatementRow {
    StatementRow {
        query: query.into(),
        calls,
        total_ms: Some(calls as f64 * 2.0),
        mean_ms: Some(2.0),
        rows: Some(rows),
        call_sites: vec![crate::report::CallSiteRow { function: "svc::handlers::list_users".into(), file: Some("/svc/src/handlers.rs".into()), line: Some(77), executions: calls as u64 }],
        ..Default::default()
    }
}

/// The tag search's GIN index on a 60-row table, an index on a big table
/// nothing used, a unique index; a handler loading the whole users table
/// per request, and a paged twin.
fn database_fixture() -> DatabaseSection {
    DatabaseSection {
        window_s: 60.0,
        pg_stat_statements: true,
        tables: vec![table("tags", 60, 900, 54_000, 0), table("users", 5_100, 600, 3_060_000, 40), table("orders", 2_000_000, 0, 0, 5_000)],
        unused_indexes: vec![
            unused("tags", "tags_search_gin", "CREATE INDEX tags_search_gin ON public.tags USING gin (labels)"),
            unused("orders", "orders_note_idx", "CREATE INDEX orders_note_idx ON public.orders USING btree (note)"),
            unused("orders", "orders_ref_key", "CREATE UNIQUE INDEX orders_ref_key ON public.orders USING btree (ref)"),
            // Never scanned during the audit, but the customer lookup's plan
            // reads through it once sequential scans are priced out.
            UnusedIndex {
                used_at_scale_by: Some("SELECT id FROM orders WHERE customer_id = $1".into()),
                plan_checked: true,
                statements_planned: 2,
                ..unused("orders", "orders_customer_idx", "CREATE INDEX orders_customer_idx ON public.orders USING btree (customer_id)")
            },
        ],
        statements: vec![
            statement("SELECT * FROM users", 600, 3_060_000),
            statement("SELECT id, name FROM users ORDER BY id LIMIT $1", 600, 30_000),
            statement("SELECT count(*) FROM users", 600, 600),
        ],
        ..Default::default()
    }
}

#[test]
fn an_index_seen_unused_on_a_tiny_table_is_not_dropped_and_the_thresholds_are_stated() {
    let db = database_fixture();
    let ev = Evidence { cpu: None, async_runtime: None, database: Some(&db), memory: None };
    let f: Vec<Finding> = evaluate(&ev).into_iter().filter(|x| x.rule == "unused-index").collect();
    assert_eq!(f.iter().map(|x| x.function.as_str()).collect::<Vec<_>>(), vec!["index orders_note_idx"], "{f:#?}");
    assert!(f[0].evidence.contains("2000000 rows") && f[0].evidence.contains("5000 times"), "{}", f[0].evidence);
    assert!(f[0].ranking.contains("at least 10000 rows") && f[0].ranking.contains("primary-key or unique"), "{}", f[0].ranking);
    let why = thresholds::unused_index_evidence(&db, &db.unused_indexes[0]).unwrap_err();
    assert!(why.contains("60 rows"), "{why}");
    let md = {
        let report = crate::report::Report { database: Some(db.clone()), ..Default::default() };
        crate::report::markdown::render(&report)
    };
    assert!(md.contains("*Not advised*: dropping tags_search_gin"), "{md}");
    assert!(md.contains("*Not advised*: dropping orders_customer_idx, never scanned, because a statement seen during the audit would use it once orders is large"), "{md}");
    assert!(!md.contains("DROP INDEX CONCURRENTLY orders_customer_idx"), "{md}");
    assert!(!md.contains("DROP INDEX CONCURRENTLY tags_search_gin"), "{md}");
}

#[test]
fn no_missing_index_says_why_with_the_largest_sequential_reader() {
    let db = DatabaseSection { tables: vec![table("users", 4_000, 600, 242_000, 0), table("tags", 60, 9, 540, 0)], ..Default::default() };
    let why = thresholds::no_missing_index_reason(&db);
    assert!(why.contains("no table over 10000 rows had a heavy sequential scan") && why.contains("users (4000 rows, 242000 rows read by 600 sequential scans)"), "{why}");
    let report = crate::report::Report { database: Some(db), ..Default::default() };
    let md = crate::report::markdown::render(&report);
    assert!(md.contains("**Missing indexes**: 0 — none: no table over 10000 rows"), "{md}");
}

/// Rows bounded by the caller's list (a prefetch: one query instead of
/// N) and a filtered set that is a small share of its table do not grow
/// with the table: not an unbounded result set. The same filter returning
/// most of its table does.
#[test]
fn a_prefetch_by_ids_and_a_filtered_set_are_not_unbounded_but_most_of_a_table_is() {
    let mut db = database_fixture();
    db.statements = vec![
        statement("SELECT id, name FROM tags WHERE id = ANY($1)", 50, 100_000),
        statement("SELECT id, total FROM orders WHERE user_id = $1", 40, 60_000),
        statement("SELECT id, email FROM users WHERE active", 30, 150_000),
    ];
    let ev = Evidence { cpu: None, async_runtime: None, database: Some(&db), memory: None };
    let f: Vec<Finding> = evaluate(&ev).into_iter().filter(|x| x.rule == "unbounded-result-set").collect();
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].evidence.contains("SELECT id, email FROM users WHERE active") && f[0].evidence.contains("98%"), "{}", f[0].evidence);
    assert!(f[0].recommendation.contains("stream them"), "{}", f[0].recommendation);
}

#[test]
fn a_whole_table_per_request_is_an_unbounded_result_set_and_its_paged_twin_is_not() {
    let db = database_fixture();
    let ev = Evidence { cpu: None, async_runtime: None, database: Some(&db), memory: None };
    let f: Vec<Finding> = evaluate(&ev).into_iter().filter(|x| x.rule == "unbounded-result-set").collect();
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].evidence.contains("`SELECT * FROM users` has no LIMIT") && f[0].evidence.contains("5100 rows per call"), "{}", f[0].evidence);
    assert_eq!((f[0].function.as_str(), f[0].line), ("svc::handlers::list_users", Some(77)));
    assert!(f[0].evidence.contains("users has 5100 rows"), "{}", f[0].evidence);
    assert!(thresholds::bounded("SELECT id FROM users ORDER BY id LIMIT $1"));
    assert!(!thresholds::bounded("SELECT * FROM users"));
}

// ------------------------------------------------------------ fixture 5

#[test]
fn a_report_without_findings_says_what_was_measured_and_no_boilerplate() {
    let report = crate::report::Report {
        async_runtime: Some(crate::report::AsyncSection { analysis: AsyncAnalysis { long_polls_measured: true, ..Default::default() }, ..Default::default() }),
        ..Default::default()
    };
    let md = crate::report::markdown::render(&report);
    assert!(!md.contains("Implement P0 fixes immediately"), "{md}");
    assert!(!md.contains("Use `tokio::fs` instead of `std::fs`"), "{md}");
    assert!(!md.contains("Consider a dedicated runtime"), "{md}");
    assert!(md.contains("None needed: 0 workers measured"), "{md}");
    assert!(md.contains("No finding to fix"), "{md}");
}

#[test]
fn next_steps_follow_from_the_findings() {
    let finding = |severity, function: &str| Finding { rule: "cpu-hotspot".into(), severity, function: function.into(), category: Category::Cpu, ..Default::default() };
    let report = crate::report::Report { findings: vec![finding(super::Severity::P1, "svc::a"), finding(super::Severity::P2, "svc::b")], ..Default::default() };
    let md = crate::report::markdown::render(&report);
    let steps = &md[md.find("## Next Steps").unwrap()..];
    assert!(!steps.contains("P0"), "{steps}");
    assert!(steps.contains("1. Fix the 1 P1 finding(s): `svc::a`\n2. When convenient, the 1 P2 finding(s): `svc::b`"), "{steps}");
}

// ------------------------------------------------------------ fixture 6

/// One handler making six lookups one after the other (each from its own
/// db function, awaited at its own line), its twin reading the same in
/// one query, and a checkout running six statements in one transaction;
/// requests one at a time from a closed-loop client (the gap between two
/// requests looks like a round trip), under a latency middleware.
fn chatty_executions() -> Vec<Execution> {
    let cs = |f: &str, file: &str, l: u32| CallSite { function: f.into(), file: Some(file.into()), line: Some(l), ..Default::default() };
    let mw = cs("svc::middleware::track_metrics", "/svc/src/middleware.rs", 31);
    let (mut out, mut transactions) = (Vec::new(), Vec::new());
    let mut t = 0u64;
    let mut push = |t: &mut u64, sql: &str, site: CallSite, callers: Vec<CallSite>| {
        out.push(Execution { ts_ns: *t, tid: 7 + (*t / 300_000 % 2) as u32, fd: 12 + (*t / 300_000 % 3) as u32, sql: Some(sql.into()), site: Some(site), callers: callers.into(), chain: 0, params: None });
        *t += 300_000;
    };
    for _ in 0..60 {
        for (k, table) in ["users", "subscriptions", "orders", "user_tags", "avatars", "settings"].iter().enumerate() {
            let sql = format!("SELECT * FROM {table} WHERE user_id = $1");
            push(&mut t, &sql, cs(&format!("svc::db::{table}"), "/svc/src/db.rs", 10 * k as u32 + 5), vec![cs("svc::handlers::profile", "/svc/src/handlers.rs", 40 + k as u32), mw.clone()]);
        }
        push(&mut t, "SELECT u.name, s.plan FROM users u JOIN subscriptions s ON s.user_id = u.id WHERE u.id = $1", cs("svc::db::profile_page", "/svc/src/db.rs", 90), vec![cs("svc::handlers::profile_fast", "/svc/src/handlers.rs", 60), mw.clone()]);
        let checkout = |l| cs("svc::handlers::checkout", "/svc/src/handlers.rs", l);
        // One transaction holds its connection: same fd throughout.
        let fd = 20;
        for (k, sql) in ["BEGIN", "SELECT n FROM carts WHERE id = $1", "UPDATE stock SET n = n - 1 WHERE id = $1", "INSERT INTO orders (cart) VALUES ($1)", "DELETE FROM carts WHERE id = $1", "INSERT INTO audit (what) VALUES ($1)", "UPDATE users SET orders = orders + 1 WHERE id = $1", "COMMIT"].iter().enumerate() {
            transactions.push(Execution { ts_ns: t, tid: 8, fd, sql: Some(sql.to_string()), site: Some(checkout(70 + k as u32)), callers: vec![mw.clone()].into(), chain: 0, params: None });
            t += 300_000;
        }
    }
    out.extend(transactions);
    out
}

#[test]
fn six_round_trips_per_request_are_chatty_at_the_handler_and_its_one_query_twin_and_a_transaction_are_not() {
    let ex = chatty_executions();
    let section = DatabaseSection { chatty_requests: crate::database::chatty::detect_chatty_requests(&ex, &Default::default()), ..Default::default() };
    let f = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None });
    let chatty: Vec<&Finding> = f.iter().filter(|x| x.rule == "chatty-requests").collect();
    assert_eq!(chatty.len(), 1, "{f:#?}");
    assert_eq!((chatty[0].function.as_str(), chatty[0].line), ("svc::handlers::profile", Some(40)));
    assert!(chatty[0].evidence.contains("60 requests each made a median 6 (max 6) round trips"), "{}", chatty[0].evidence);
    assert!(!f.iter().any(|x| x.function.contains("profile_fast") || x.function.contains("checkout") || x.function.contains("middleware")), "{f:#?}");
}

/// Issue 30: ten N+1 findings were placed at `DbConn::run` and a retry
/// helper every query passes through. Here every statement goes through
/// `svc::db::DbConn::run` (over `svc::db::with_retry`): one function loops
/// over a page's tags, three handlers' lookups run once per request, and a
/// batched twin reads its tags in one query.
fn wrapped_executions() -> Vec<Execution> {
    let cs = |f: &str, l: u32| CallSite { function: f.into(), file: Some("/svc/src/db.rs".into()), line: Some(l), ..Default::default() };
    let (retry, run) = (cs("svc::db::with_retry", 12), cs("svc::db::DbConn::run", 30));
    let through = |caller: CallSite, handler: &str| -> std::sync::Arc<[CallSite]> { vec![run.clone(), caller, cs(handler, 80)].into() };
    let mut out = Vec::new();
    let mut t = 0u64;
    for request in 0..40u64 {
        let handler = if request % 2 == 0 { "svc::handlers::page" } else { "svc::handlers::page_batched" };
        let mut push = |sql: &str, callers: std::sync::Arc<[CallSite]>| {
            out.push(Execution { ts_ns: t, tid: 3, fd: 9, sql: Some(sql.into()), site: Some(retry.clone()), callers, chain: request + 1, params: None });
            t += 200_000;
        };
        push("SELECT id, name FROM accounts WHERE id = $1", through(cs("svc::accounts::load", 20), handler));
        push("SELECT id FROM orders WHERE account_id = $1", through(cs("svc::orders::load", 22), handler));
        push("SELECT id, name FROM settings WHERE id = $1", through(cs("svc::settings::load", 24), handler));
        if request % 2 == 0 {
            for _ in 0..20 {
                push("SELECT id, name FROM tags WHERE id = $1", through(cs("svc::tags::load_tags_one_by_one", 51), handler));
            }
        } else {
            push("SELECT id, name FROM tags WHERE id = ANY($1)", through(cs("svc::tags::load_tags_batched", 60), handler));
        }
        t += 50_000_000;
    }
    out
}

#[test]
fn an_n_plus_one_through_a_shared_wrapper_is_at_the_loop_not_at_the_wrapper() {
    let mut ex = wrapped_executions();
    analysis::resolve_wrappers(&mut ex);
    let section = DatabaseSection { n_plus_one: analysis::detect_n_plus_one(&ex, &BurstRule::default()), ..Default::default() };
    let f = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&section), memory: None });
    let n1: Vec<&Finding> = f.iter().filter(|x| x.rule == "n-plus-one-query").collect();
    assert_eq!(n1.len(), 1, "{f:#?}");
    assert_eq!(n1[0].function, "svc::tags::load_tags_one_by_one");
    assert!(!f.iter().any(|x| x.function.starts_with("svc::db::")), "no finding at the wrapper: {f:#?}");
}

// ------------------------------------------------------------ issue 26 classes

fn malloc() -> Frame {
    Frame { function: "malloc".into(), origin: Origin::Native, ..Default::default() }
}

/// Allocation sites of a framework service: what a `from_fn` middleware,
/// `main` under `axum::serve`, a handler's tracing span and sqlx future and
/// argon2 in `spawn_blocking` allocate, and the owner's own buffers.
fn framework_allocations() -> MemorySection {
    use crate::memory::analysis::attribute;
    let pass = dep("<core::pin::Pin<P> as core::future::future::Future>::poll", true);
    let via = |frames: Vec<Frame>| attribute(&frames).via;
    let sites: Vec<(&str, Option<String>, &str)> = vec![
        ("svc::middleware::track_metrics", via(vec![owner("svc::middleware::track_metrics::{{closure}}", 31), pass.clone(), dep("axum::middleware::from_fn::Next::run::{{closure}}", false), dep("alloc::boxed::Box<T>::new", true), malloc()]), "Box<_>"),
        ("svc::main", via(vec![owner("svc::main::{{closure}}", 80), dep("<axum::serve::Serve<L,M,S> as core::future::into_future::IntoFuture>::into_future::{{closure}}", false), dep("hyper_util::server::conn::auto::Builder<E>::serve_connection", false), malloc()]), "Vec<u8>"),
        ("svc::handlers::create_order", via(vec![owner("svc::handlers::create_order::{{closure}}", 40), dep("tracing::span::Span::new", false), dep("tracing_subscriber::registry::sharded::Registry::new_span", false), malloc()]), "Box<_>"),
        ("svc::handlers::update_order", via(vec![owner("svc::handlers::update_order::{{closure}}", 60), dep("<sqlx_core::transaction::Transaction<DB> as core::ops::drop::Drop>::drop", false), malloc()]), "Box<_>"),
        ("svc::auth::hash_password", via(vec![dep("tokio::runtime::blocking::pool::Inner::run", false), owner("svc::auth::hash_password::{{closure}}", 44), dep("argon2::Argon2::hash_password_into", false), dep("alloc::vec::from_elem", true), malloc()]), "Vec<Block>"),
        ("svc::handlers::other_client", via(vec![owner("svc::handlers::other_client::{{closure}}", 70), dep("<reqwest::async_impl::client::Pending as core::future::future::Future>::poll", false), malloc()]), "Vec<u8>"),
        // The twins: the owner's own code makes the allocating call.
        ("svc::render::row_labels", via(vec![owner("svc::render::row_labels", 12), dep("<alloc::string::String as core::clone::Clone>::clone", true), malloc()]), "String"),
        ("svc::render::to_json", via(vec![owner("svc::render::to_json", 20), dep("serde_json::ser::to_vec", false), malloc()]), "Vec<u8>"),
        ("svc::index::insert", via(vec![owner("svc::index::insert", 9), dep("hashbrown::raw::RawTable<T,A>::reserve_rehash", false), malloc()]), "HashMap"),
    ];
    MemorySection {
        top_allocators: sites
            .into_iter()
            .map(|(function, via, ty)| AllocatorRow {
                function: function.into(),
                file: Some("/svc/src/main.rs".into()),
                line: Some(9),
                bytes: 1_000_000_000,
                count: 1_000_000,
                ty: Some(ty.into()),
                bytes_per_s: 6_400_000.0,
                allocs_per_s: 100_000.0,
                freed_pct: 100.0,
                origin: Origin::Owner,
                via,
                ..Default::default()
            })
            .collect(),
        mode: "precise".into(),
        ..Default::default()
    }
}

#[test]
fn allocations_below_a_frame_that_only_awaits_or_calls_a_library_are_the_librarys_not_a_finding() {
    let section = framework_allocations();
    let via = |f: &str| section.top_allocators.iter().find(|r| r.function == f).unwrap().via.clone();
    assert_eq!(via("svc::middleware::track_metrics").as_deref(), Some("axum::middleware::from_fn::Next::run"));
    assert!(via("svc::main").unwrap().contains("axum::serve"));
    assert_eq!(via("svc::handlers::create_order").as_deref(), Some("tracing::span::Span::new"));
    assert!(via("svc::handlers::update_order").unwrap().contains("sqlx_core"));
    assert_eq!(via("svc::auth::hash_password").as_deref(), Some("argon2::Argon2::hash_password_into"));
    assert!(via("svc::handlers::other_client").unwrap().contains("reqwest"), "an awaited library future");
    for own in ["svc::render::row_labels", "svc::render::to_json", "svc::index::insert"] {
        assert_eq!(via(own), None, "{own}");
    }
    let ev = Evidence { cpu: None, async_runtime: None, database: None, memory: Some(MemoryEvidence { section: &section }) };
    let f = evaluate(&ev);
    let named: Vec<&str> = f.iter().map(|x| x.function.as_str()).collect();
    assert_eq!(named.len(), 3, "{f:#?}");
    for own in ["svc::render::row_labels", "svc::render::to_json", "svc::index::insert"] {
        assert!(named.contains(&own), "{own}: {named:?}");
    }
    // Advice fits what allocates: strings are shared, buffers reused.
    assert!(f.iter().find(|x| x.function == "svc::render::row_labels").unwrap().recommendation.contains("Arc<str>"));
    // The memory table names where the library allocations really go.
    let md = crate::report::memory_md_for_tests(&section);
    assert!(md.contains("(made by `axum` below it: axum's router and extractors)"), "{md}");
    assert!(md.contains("(made by `argon2` below it: argon2's working memory)"), "{md}");
    assert!(md.contains("(made by `tracing` below it: tracing instrumentation)"), "{md}");
}

fn logging_site(function: &str, kind: BlockingKind, via: &str, pct: f64) -> BlockingSite {
    BlockingSite {
        function: function.into(),
        file: Some("src/main.rs".into()),
        line: Some(12),
        kind,
        via: Some(via.into()),
        syscalls: vec!["write on fd 1 (pipe)".into()],
        intervals: 400,
        blocked_ms: 800.0,
        worker_time_pct: pct,
        on_cpu_samples: 0,
    }
}

#[test]
fn log_writes_are_synchronous_logging_when_material_and_never_tokio_fs() {
    let fmt = "<tracing_subscriber::fmt::fmt_layer::Layer<S,N,E,W> as tracing_subscriber::layer::Layer<S>>::on_event";
    let analysis = AsyncAnalysis {
        blocking: vec![
            logging_site("svc::handlers::checkout", BlockingKind::Logging, fmt, 3.1),
            // The twin: the same writer at 0.1% of worker time.
            logging_site("svc::handlers::health", BlockingKind::Logging, fmt, 0.1),
            BlockingSite { syscalls: vec!["write on fd 7 (file)".into()], ..logging_site("svc::export::write_csv", BlockingKind::FileIo, "<std::fs::File as std::io::Write>::write", 3.1) },
        ],
        ..Default::default()
    };
    let f = evaluate(&Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None });
    assert_eq!(f.len(), 2, "{f:#?}");
    let log = f.iter().find(|x| x.function == "svc::handlers::checkout").unwrap();
    assert!(log.title.starts_with("Synchronous logging on the request path"), "{}", log.title);
    assert!(!log.title.contains("file I/O") && !log.recommendation.contains("use tokio::fs"), "{log:#?}");
    assert!(log.recommendation.contains("tracing_appender::non_blocking") && log.recommendation.contains("log volume"), "{}", log.recommendation);
    assert!(log.ranking.contains("from 0.5%"), "{}", log.ranking);
    assert_eq!(log.severity, super::Severity::P1);
    let file = f.iter().find(|x| x.function == "svc::export::write_csv").unwrap();
    assert!(file.title.contains("blocking file I/O") && file.recommendation.contains("use tokio::fs"), "{file:#?}");
}

fn poll(function: &str, p50: f64, p90: f64, p99: f64, polls: u64, pct: f64) -> crate::profile::async_runtime::LongPoll {
    crate::profile::async_runtime::LongPoll {
        function: function.into(),
        file: Some("/svc/src/main.rs".into()),
        line: Some(30),
        max_ms: p99,
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
        polls_measured: polls,
        samples: polls * 2,
        worker_time_pct: pct,
        ..Default::default()
    }
}

#[test]
fn severity_comes_from_the_distribution_not_from_one_poll() {
    let analysis = AsyncAnalysis {
        long_polls: vec![
            // The corpus case: one poll in 76 at 49.7 ms, 1.28% of worker time.
            poll("svc::handlers::list_accounts", 0.8, 1.1, 49.7, 76, 1.28),
            // Polls that are long most of the time, 24% of worker time.
            poll("svc::report::render_pdf", 18.0, 35.0, 60.0, 300, 24.0),
            // A tenth of 200 polls at 12 ms or more, 3% of worker time.
            poll("svc::search::rank", 2.0, 12.0, 20.0, 200, 3.0),
        ],
        ..Default::default()
    };
    let f = evaluate(&Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None });
    let by = |n: &str| f.iter().find(|x| x.function == n).unwrap_or_else(|| panic!("{n}: {f:#?}"));
    let outlier = by("svc::handlers::list_accounts");
    assert_eq!(outlier.severity, super::Severity::P2, "{outlier:#?}");
    assert!(outlier.evidence.contains("at least 1 of 76 polls reached 10 ms (only its p99"), "{}", outlier.evidence);
    assert!(outlier.evidence.contains("p90 1.10 ms") && outlier.evidence.contains("1.28% of all worker time"), "{}", outlier.evidence);
    assert_eq!(by("svc::report::render_pdf").severity, super::Severity::P0);
    let rank = by("svc::search::rank");
    assert_eq!(rank.severity, super::Severity::P0, "{rank:#?}");
    assert!(rank.ranking.contains("at least 21 of 200 polls"), "{}", rank.ranking);
}

#[test]
fn spawn_blocking_advice_only_for_code_that_never_awaits_and_one_finding_per_cause() {
    let mut awaiting = poll("svc::feed::enrich_items", 2.0, 4.0, 9.0, 120, 6.0);
    awaiting.awaiting_samples = 90;
    let mut n1 = poll("svc::feed::authors_one_by_one", 1.5, 3.0, 8.0, 100, 4.0);
    n1.awaiting_samples = 150;
    n1.driver_samples = 150;
    let caller = poll("svc::handlers::profile", 9.0, 12.0, 15.0, 200, 12.0);
    let mut clone = poll("<svc::User as core::clone::Clone>::clone", 9.0, 12.0, 15.0, 200, 11.0);
    clone.callers = vec!["svc::handlers::profile".into()];
    let score = poll("svc::score::affinity", 4.0, 6.0, 9.0, 100, 5.0);
    let analysis = AsyncAnalysis { long_polls: vec![awaiting, n1, caller, clone, score], ..Default::default() };
    // The database section reports the N+1 in authors_one_by_one.
    let db = DatabaseSection {
        n_plus_one: analysis::detect_n_plus_one(&n_plus_one_executions("svc::feed::authors_one_by_one"), &BurstRule::default()),
        ..Default::default()
    };
    assert!(!db.n_plus_one.is_empty());
    let f = evaluate(&Evidence { cpu: None, async_runtime: Some(&analysis), database: Some(&db), memory: None });
    let heavy: Vec<&Finding> = f.iter().filter(|x| x.rule == "cpu-heavy-in-async").collect();
    let names: Vec<&str> = heavy.iter().map(|x| x.function.as_str()).collect();
    assert_eq!(names.len(), 3, "{heavy:#?}");
    assert!(!names.contains(&"svc::feed::authors_one_by_one"), "its cost is the N+1 finding's: {names:?}");
    assert!(!names.contains(&"<svc::User as core::clone::Clone>::clone"), "a callee of a reported poll: {names:?}");
    let by = |n: &str| heavy.iter().find(|x| x.function == n).unwrap();
    let enrich = by("svc::feed::enrich_items");
    assert!(enrich.recommendation.contains("cannot be moved whole"), "{}", enrich.recommendation);
    assert!(!enrich.code_fix.as_ref().unwrap().after.contains("enrich_items(&input)"), "{:?}", enrich.code_fix);
    assert!(by("svc::handlers::profile").evidence.contains("includes its callees `<svc::User as core::clone::Clone>::clone`"));
    let sync = by("svc::score::affinity");
    assert!(sync.code_fix.as_ref().unwrap().after.contains("spawn_blocking(move || affinity(&input))"), "{:?}", sync.code_fix);
    assert!(f.iter().any(|x| x.rule == "n-plus-one-query" && x.function == "svc::feed::authors_one_by_one"));
}

/// A task's root future (`serve`) polled long once while its callee's many
/// long polls are the cost: the root only passes through, the finding is
/// at the callee (async-service on a symbols-only build, CI).
#[test]
fn a_root_future_holding_less_than_its_callee_does_not_swallow_the_callees_finding() {
    let mut serve = poll("async_service::serve", 0.6, 19.8, 19.8, 5, 1.49);
    serve.awaiting_samples = 19;
    let mut digest = poll("async_service::compute_digest", 18.5, 23.9, 29.8, 28, 3.36);
    digest.callers = vec!["async_service::serve".into()];
    let analysis = AsyncAnalysis { long_polls: vec![serve, digest], ..Default::default() };
    let f = evaluate(&Evidence { cpu: None, async_runtime: Some(&analysis), database: None, memory: None });
    let heavy: Vec<&str> = f.iter().filter(|x| x.rule == "cpu-heavy-in-async").map(|x| x.function.as_str()).collect();
    assert!(heavy.contains(&"async_service::compute_digest"), "{heavy:?}");
    assert!(!heavy.contains(&"async_service::serve"), "{heavy:?}");
}

/// Bursts of one SELECT per item from one call site.
fn n_plus_one_executions(function: &str) -> Vec<Execution> {
    let site = Some(CallSite { function: function.into(), file: Some("/svc/src/feed.rs".into()), line: Some(41), ..Default::default() });
    let mut out = Vec::new();
    for burst in 0..8u64 {
        let mut t = burst * 1_000_000_000;
        for _ in 0..20 {
            out.push(Execution { ts_ns: t, tid: 4, fd: 11, sql: Some("SELECT id, name FROM users WHERE id = $1".into()), site: site.clone(), ..Default::default() });
            t += 250_000;
        }
    }
    out
}

fn growth_row(function: &str, slope: f64, start: u64, end: u64, held: bool) -> crate::memory::analysis::GrowthRow {
    crate::memory::analysis::GrowthRow {
        function: function.into(),
        file: Some("/svc/src/main.rs".into()),
        line: Some(5),
        slope_bytes_per_s: slope,
        r2: 0.93,
        start_bytes: start,
        end_bytes: end,
        points: 60,
        held_by_collection: held,
        origin: Origin::Owner,
        ..Default::default()
    }
}

#[test]
fn growth_needs_a_material_rate_and_total_unless_a_collection_keeps_it() {
    let mib = 1024 * 1024;
    let section = MemorySection {
        growth: vec![
            // The corpus case: +0.0 MiB/s, 0.8 MiB over a 30 s audit.
            growth_row("svc::main", 28_000.0, 10 * mib, 10 * mib + 838_861, false),
            // A buffer that really grows: 12 MiB at 0.4 MiB/s.
            growth_row("svc::ingest::append", 0.4 * mib as f64, 0, 12 * mib, false),
            // A cache keyed per request, never evicted: 0.6 MiB.
            growth_row("svc::cache::insert", 20_000.0, 0, 600 * 1024, true),
            // Connection state axum::serve keeps below main: not main's.
            crate::memory::analysis::GrowthRow {
                via: Some("<axum::serve::private::ServeFuture as core::future::future::Future>::poll".into()),
                ..growth_row("svc::serve", 0.4 * mib as f64, 0, 12 * mib, false)
            },
        ],
        elapsed_s: 30.0,
        ..Default::default()
    };
    let f = evaluate(&Evidence { cpu: None, async_runtime: None, database: None, memory: Some(MemoryEvidence { section: &section }) });
    let names: Vec<&str> = f.iter().map(|x| x.function.as_str()).collect();
    assert_eq!(names.len(), 2, "{f:#?}");
    assert!(!names.contains(&"svc::main"), "{f:#?}");
    let cache = f.iter().find(|x| x.function == "svc::cache::insert").unwrap();
    assert!(cache.title.contains("+19.5 KiB/s (600.0 KiB over the audit)"), "{}", cache.title);
    assert!(cache.ranking.contains("collection that is never shrunk"), "{}", cache.ranking);
    let append = f.iter().find(|x| x.function == "svc::ingest::append").unwrap();
    assert!(append.ranking.contains("at least 4.0 MiB at 102.4 KiB/s"), "{}", append.ranking);
}

#[test]
fn own_code_on_the_blocking_pool_is_named_not_idle_or_runtime_work() {
    // A shipped build: the spawn_blocking closure is inlined into tokio's
    // task, so no frame of the owner's shows above argon2 or diesel.
    let pool = |leaf: &[Frame]| {
        let mut v = vec![
            dep("std::sys::pal::unix::thread::Thread::new::thread_start", false),
            dep("tokio::runtime::blocking::pool::Inner::run", false),
            dep("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll", false),
        ];
        v.extend_from_slice(leaf);
        v
    };
    let p = owned(&[
        (pool(&[dep("argon2::block::Block::compress", false)]), 60),
        (pool(&[dep("deadpool_sync::SyncWrapper<T>::interact::{{closure}}", false), dep("diesel::pg::connection::row::PgRow::get", false)]), 30),
        // The twin: a pool thread parked with nothing to do.
        (pool(&[dep("std::sync::Condvar::wait_timeout", false)]), 10),
    ]);
    let hs = hotspots(&p);
    let rows = crate::report::CpuSection::build(&Default::default(), Default::default(), 100.0, 99, &hs, Vec::new(), 10).hotspots;
    let rec = |f: &str| rows.iter().find(|r| r.function == f).unwrap_or_else(|| panic!("{f}: {rows:#?}")).recommendation.clone();
    let argon = rec("argon2::block::Block::compress");
    assert!(argon.starts_with("your code's work on the blocking pool, handed off with `tokio::task::spawn_blocking`"), "{argon}");
    assert!(argon.contains("slow by design") && !argon.contains("idle or runtime work"), "{argon}");
    let diesel = rec("diesel::pg::connection::row::PgRow::get");
    assert!(diesel.contains("deadpool's `interact`") && diesel.contains("`diesel`"), "{diesel}");
    assert!(rec("std::sync::Condvar::wait_timeout").contains("idle or runtime work"));
}

// ------------------------------------------------------------ summary

/// A fixture: its name, the findings reported, and the (rule, function)
/// of each of its true defects.
type Fixture = (&'static str, Vec<Finding>, Vec<(&'static str, &'static str)>);

fn fixtures() -> Vec<Fixture> {
    let db = database_fixture();
    let db_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&db), memory: None });
    let tx_section = DatabaseSection {
        n_plus_one: analysis::detect_n_plus_one(&per_item_transaction_executions(), &BurstRule::default()),
        per_item_transactions: analysis::detect_per_item_transactions(&per_item_transaction_executions(), &BurstRule::default()),
        ..Default::default()
    };
    let tx_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&tx_section), memory: None });
    let argon = {
        let pool = vec![
            dep("tokio::runtime::blocking::pool::Inner::run", false),
            owner("svc::auth::hash_password::{{closure}}", 44),
            dep("argon2::Argon2::hash_password_into", false),
        ];
        cpu_findings(&owned(&[(pool, 90), (vec![dep("tokio::runtime::park::Inner::park", false)], 10)]))
    };
    let stdout = stdout_analysis();
    let stdout_findings = evaluate(&Evidence { cpu: None, async_runtime: Some(&stdout), database: None, memory: None });
    let chatty_section = DatabaseSection { chatty_requests: crate::database::chatty::detect_chatty_requests(&chatty_executions(), &Default::default()), ..Default::default() };
    let chatty_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&chatty_section), memory: None });
    let wrapped_section = {
        let mut ex = wrapped_executions();
        let wrappers = analysis::resolve_wrappers(&mut ex);
        let mut section = DatabaseSection { n_plus_one: analysis::detect_n_plus_one(&ex, &BurstRule::default()), ..Default::default() };
        section.wire.wrappers = wrappers;
        section
    };
    let wrapped_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&wrapped_section), memory: None });
    let startup = startup_statements();
    let startup_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: Some(&startup), memory: None });
    let alloc_section = framework_allocations();
    let alloc_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: None, memory: Some(MemoryEvidence { section: &alloc_section }) });
    let mib = 1024 * 1024;
    let growth_section = MemorySection {
        growth: vec![growth_row("svc::main", 28_000.0, 10 * mib, 10 * mib + 838_861, false), growth_row("svc::cache::insert", 20_000.0, 0, 600 * 1024, true)],
        elapsed_s: 30.0,
        ..Default::default()
    };
    let growth_findings = evaluate(&Evidence { cpu: None, async_runtime: None, database: None, memory: Some(MemoryEvidence { section: &growth_section }) });
    let mut clone = poll("<svc::User as core::clone::Clone>::clone", 9.0, 12.0, 15.0, 200, 11.0);
    clone.callers = vec!["svc::handlers::profile".into()];
    let polls = AsyncAnalysis { long_polls: vec![poll("svc::handlers::profile", 9.0, 12.0, 15.0, 200, 12.0), clone], ..Default::default() };
    let poll_findings = evaluate(&Evidence { cpu: None, async_runtime: Some(&polls), database: None, memory: None });
    vec![
        (
            "framework service allocations: middleware, main under serve, spans, sqlx, argon2, own buffers",
            alloc_findings,
            vec![("allocation-churn", "svc::render::row_labels"), ("allocation-churn", "svc::render::to_json"), ("allocation-churn", "svc::index::insert")],
        ),
        ("0.8 MiB of warm-up in main, a never-evicted cache", growth_findings, vec![("unbounded-growth", "svc::cache::insert")]),
        ("a handler's long poll and its Clone callee", poll_findings, vec![("cpu-heavy-in-async", "svc::handlers::profile")]),
        (
            "stdout logging on a worker, std::fs config read",
            stdout_findings,
            vec![("blocking-in-async", "svc::handlers::login"), ("blocking-in-async", "svc::load_config")],
        ),
        // The request query is slow (31 ms, 400 calls); seeding and an index build are not.
        ("startup statements", startup_findings, vec![("slow-query", "(not traced to code)")]),
        (
            "middleware over a tracing layer",
            cpu_findings(&middleware_profile()),
            // The layers' cost under the middleware (named as such) and the
            // handler's own serialization are both real costs.
            vec![("cpu-hotspot", "svc::middleware::track_metrics"), ("cpu-hotspot", "svc::handlers::list_items")],
        ),
        ("argon2 in spawn_blocking", argon, vec![("cpu-hotspot", "svc::auth::hash_password")]),
        // The per-item SELECT inside the loop is a real N+1 of this worker.
        (
            "per-item transactions",
            tx_findings,
            vec![("per-item-transaction", "svc::worker::process_one"), ("n-plus-one-query", "svc::worker::process_one")],
        ),
        (
            "tiny table with a used GIN index, whole table per request",
            db_findings,
            vec![("unused-index", "index orders_note_idx"), ("unbounded-result-set", "svc::handlers::list_users")],
        ),
        (
            "six round trips per request, a one-query twin, a transaction",
            chatty_findings,
            vec![("chatty-requests", "svc::handlers::profile")],
        ),
        (
            "every query through DbConn::run and a retry helper, one loop, a batched twin",
            wrapped_findings,
            vec![("n-plus-one-query", "svc::tags::load_tags_one_by_one")],
        ),
    ]
}

#[test]
fn precision_and_recall_over_the_fixtures() {
    let (mut reported, mut true_reported, mut planted, mut found) = (0, 0, 0, 0);
    for (name, findings, truth) in fixtures() {
        let is_true = |f: &Finding| truth.iter().any(|(r, func)| f.rule == *r && f.function == *func);
        let t = findings.iter().filter(|f| is_true(f)).count();
        let hit = truth.iter().filter(|(r, func)| findings.iter().any(|f| f.rule == *r && f.function == *func)).count();
        println!("{name}: {} reported, {t} true (precision {t}/{}), {hit} of {} planted found (recall)", findings.len(), findings.len(), truth.len());
        for f in findings.iter().filter(|f| !is_true(f)) {
            println!("  false alarm: {} {} {}", f.rule, f.function, f.title);
        }
        reported += findings.len();
        true_reported += t;
        planted += truth.len();
        found += hit;
    }
    println!("all fixtures: precision {true_reported}/{reported}, recall {found}/{planted}");
    assert_eq!(true_reported, reported, "false alarms in the fixtures");
    assert_eq!(found, planted, "planted defects missed");
}
