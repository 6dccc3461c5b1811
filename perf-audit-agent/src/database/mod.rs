//! The database profile: PostgreSQL's statistics cross-referenced with the
//! code that issues the queries.
//!
//! Two sources, joined by statement text:
//!
//! - **The server's statistics** ([`stats`]): `pg_stat_statements` is
//!   snapshotted at the start and the end of the audit, and the difference
//!   gives calls, time and rows per statement over the audit window only;
//!   table and index scan counters the same way. Heavy statements are
//!   explained (generic plan) to find sequential scans worth an index
//!   ([`advice`]).
//! - **The wire, seen from the kernel** (`kernel::db`, [`wire`]): every
//!   write of the target to one of its database sockets ([`sockets`] finds
//!   them in /proc and keeps the in-kernel set current) is captured with
//!   its first bytes and its user stack. The agent parses the frontend
//!   protocol into executions and unwinds each stack to the innermost frame
//!   of the owner's code: the function and line that issued the query, with
//!   no change to the service. [`analysis`] finds N+1 loops in them, and
//!   `chatty` requests making many round trips from different call sites.
//!
//! [`DatabaseCollector`] is the only orchestration: the engine starts it
//! before collection and finishes it after, and gets a [`DatabaseSection`]
//! for the report. Everything else here is pure or plain I/O.

pub mod sockets;
pub mod stats;
pub mod url;

pub use perf_audit_analysis::{
    database::{advice, analysis, pool, recovery, rereads, section, transactions, wire},
    report::schema::{
        CallSiteRow, DatabaseSection, DuplicateIndex, IndexRow, MAX_PLANS_NOT_INSPECTED, MissingIndex, PlanNotInspected, StatementRow, TableRow, UnusedIndex,
        WireSummary,
    },
};

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use analysis::{BurstRule, CallSite, Execution};
use perf_audit_analysis::database::dialect::{CheckedRewrite, Driver};
use stats::{Db, IndexStat, StatementStat, TableStat};
use url::UrlSource;

use crate::{
    error::{Error, ErrorKind, Result},
    kernel::{
        KernelSession,
        cpu::RawCpuStack,
        db::{DbFdSet, DbWriteReader, RawDbIo, RawDbIoKind, RawDbStack, RawDbWrite},
    },
    profile::Origin,
    symbolize::StackSymbolizer,
    target::MapsSnapshot,
    unwind::SharedUnwinder,
};

/// Executions kept from the wire; more are counted as dropped.
const MAX_EXECUTIONS: usize = 200_000;
/// Answers and other sockets' I/O kept (`transactions::WireIo`, ~50 bytes
/// each); more are counted as dropped.
const MAX_IO: usize = 400_000;
/// How often pg_stat_activity is sampled for the target's transactions.
const TRANSACTION_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Distinct stacks kept; executions with a new stack beyond this lose it.
const MAX_STACKS: usize = 20_000;
/// How often the wire's rings are drained (DB_EVENTS holds ~14,000 writes:
/// half a second at 25,000 writes/s).
const WIRE_DRAIN: std::time::Duration = std::time::Duration::from_millis(10);
/// How often the target's database sockets are looked up again.
const FD_REFRESH: std::time::Duration = std::time::Duration::from_millis(50);
/// Statements explained for missing indexes (heaviest first).
const EXPLAINED_STATEMENTS: usize = 5;
/// Statements planned per table with an unused index (about a millisecond
/// each): a table touched by more statements keeps its indexes (unknown).
const PLANNED_PER_TABLE: usize = 100;
/// At most one `pg_stat_activity` read per this interval, and only while a
/// connection's last write executed a statement whose text is unknown
/// (`recovery::TextRecovery::wants_poll`): at most 100 small reads a second
/// on the server, none once every name in use is known. Each observation
/// needs an idle backend, so more frequent reads mostly find the same
/// state; 10 ms gives a connection used every few milliseconds dozens of
/// chances a second (a statement rarely last on its connection is seen
/// only in the few milliseconds before the connection is used again).
const ACTIVITY_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Failed activity reads after which recovery stops (a server that refuses
/// them). A slow read is no failure: the wire is drained while it runs.
const ACTIVITY_MAX_FAILURES: u32 = 5;

/// One statement seen on the wire.
struct WireExecution {
    ts_ns: u64,
    tid: u32,
    fd: u32,
    /// Normalised text, when known.
    sql: Option<String>,
    /// Stack fingerprint.
    site: u64,
    /// Without a text: the connection's generation and the statement name,
    /// to fill it once the text is recovered.
    unknown: Option<(u64, String)>,
    /// The text was recovered from pg_stat_activity.
    recovered: bool,
    /// The chain of round trips it belongs to (see `WireCapture::chain_of`).
    chain: u64,
    /// Hash of its bound values (`wire::WireExecution::params`).
    params: Option<u64>,
}

/// Writes parsed into executions, before symbolization.
#[derive(Default)]
struct WireCapture {
    connections: HashMap<u32, wire::Connection>,
    seen_fds: BTreeSet<u32>,
    tls_fds: BTreeSet<u32>,
    stacks: HashMap<Vec<u64>, usize>,
    stack_list: Vec<Vec<u64>>,
    /// Stack fingerprint -> index in `stack_list` (one kernel stack copy per
    /// fingerprint; several fingerprints may unwind to one stack).
    sites: HashMap<u64, usize>,
    executions: Vec<WireExecution>,
    dropped_executions: u64,
    /// Answers and other sockets' I/O inside transactions.
    io: Vec<transactions::WireIo>,
    dropped_io: u64,
    answers: u64,
    /// Other sockets' remote ends: fd -> (socket inode, peer).
    peers: HashMap<u32, (u64, Option<String>)>,
    pid: u32,
    /// fd -> its connection's generation (bumped when the fd is reused).
    generations: HashMap<u32, u64>,
    next_generation: u64,
    recovery: recovery::TextRecovery,
    /// Chains of round trips: each write either waited for the answer of
    /// a connection (the kernel says which, `RawDbWrite::answer`) and
    /// continues the chain of that connection's last write, or starts a
    /// new one. One chain is one task's sequence of statements, each sent
    /// after the previous answer (a request's queries, a loop's).
    chain_of_fd: HashMap<u32, u64>,
    next_chain: u64,
    /// Writes that followed an answer (evidence that the kernel side
    /// tracks answers: 0 with executions means it does not).
    writes_after_answer: u64,
    fd_rejected: u64,
    /// Writes that were not protocol messages (`wire::parse_write`).
    unparsed_writes: u64,
    /// Writes whose parsing panicked (a bug), skipped.
    parser_failures: u64,
    /// Connections' protocol state forgotten at `wire::MAX_CONNECTIONS`,
    /// and the names forgotten by connections since dropped.
    evicted_connections: u64,
    evicted_portals: u64,
    evicted_statements: u64,
    /// Executions counted in the kernel past a write's captured prefix.
    executions_beyond_capture: u64,
    maps: MapsSnapshot,
    /// The target's executable, read while it runs: only its frames are
    /// the owner's code.
    exe: std::path::PathBuf,
}

impl WireCapture {
    fn generation(&mut self, fd: u32) -> u64 {
        let next = &mut self.next_generation;
        *self.generations.entry(fd).or_insert_with(|| {
            *next += 1;
            *next
        })
    }

    /// A new socket on `fd` (or a reused fd number): fresh protocol state.
    fn reset(&mut self, fd: u32) {
        if let Some(conn) = self.connections.remove(&fd) {
            self.evicted_portals += conn.evicted_portals;
            self.evicted_statements += conn.evicted_statements;
        }
        self.chain_of_fd.remove(&fd);
        if let Some(g) = self.generations.remove(&fd) {
            self.recovery.forget((fd, g));
        }
    }

    /// `fd` is no longer traced: its connection's state in the text
    /// recovery is dropped (writes may now go unseen).
    fn untraced(&mut self, fd: u32) {
        if let Some(g) = self.generations.get(&fd) {
            self.recovery.forget((fd, *g));
        }
    }

    /// The chain a write belongs to (numbered from 1).
    fn chain_of(&mut self, w: &RawDbWrite) -> u64 {
        let continued = w.answer.and_then(|fd| self.chain_of_fd.get(&fd).copied());
        if w.answer.is_some() {
            self.writes_after_answer += 1;
        }
        let chain = continued.unwrap_or_else(|| {
            self.next_chain += 1;
            self.next_chain
        });
        self.chain_of_fd.insert(w.fd, chain);
        chain
    }

    fn push(&mut self, w: RawDbWrite) {
        let chain = self.chain_of(&w);
        let generation = self.generation(w.fd);
        if !self.connections.contains_key(&w.fd) && self.connections.len() >= wire::MAX_CONNECTIONS
            && let Some(victim) = self.connections.keys().next().copied() {
                self.reset(victim);
                self.evicted_connections += 1;
            }
        let conn = self.connections.entry(w.fd).or_default();
        // The parser is total (fuzzed); were it ever to panic, the write is
        // skipped and counted, and the audit keeps everything else.
        let Ok((messages, garbage)) = std::panic::catch_unwind(|| wire::parse_write(&w.payload)) else {
            self.parser_failures += 1;
            return;
        };
        self.unparsed_writes += u64::from(garbage);
        let mut executions = conn.feed(messages.clone());
        // Executions past the captured prefix, counted in the kernel (a
        // Bind too large for the prefix, a pipelined batch): they run the
        // statement the prefix's last Bind (or last Parse, through the
        // unnamed portal every driver uses) names.
        let in_prefix = messages.iter().filter(|m| matches!(m, wire::Message::Execute { .. })).count() as u32;
        if let Some(total) = w.executes
            && total > in_prefix {
                let mut inferred = Vec::new();
                let portal = match messages.iter().rev().find(|m| matches!(m, wire::Message::Bind { .. } | wire::Message::Parse { .. })) {
                    Some(wire::Message::Bind { portal, .. }) => portal.clone(),
                    Some(wire::Message::Parse { statement, .. }) => {
                        inferred.push(wire::Message::Bind { portal: String::new(), statement: statement.clone(), params: None });
                        String::new()
                    }
                    _ => String::new(),
                };
                let extra = (total - in_prefix).min(wire::MAX_PORTALS as u32 * 8);
                inferred.extend((0..extra).map(|_| wire::Message::Execute { portal: portal.clone() }));
                // Their own Binds were not captured: their values are unknown.
                executions.extend(conn.feed(inferred).into_iter().map(|mut e| {
                    e.params = None;
                    e
                }));
                self.executions_beyond_capture += u64::from(extra);
            }
        if conn.encrypted {
            self.tls_fds.insert(w.fd);
        }
        self.recovery.on_write((w.fd, generation), w.ts_ns, recovery::last_statement(&messages, |s| conn.knows(s)));
        for e in executions {
            if self.executions.len() >= MAX_EXECUTIONS {
                self.dropped_executions += 1;
                continue;
            }
            let unknown = if e.sql.is_none() { Some((generation, e.statement)) } else { None };
            self.executions.push(WireExecution {
                ts_ns: w.ts_ns,
                tid: w.tid,
                fd: w.fd,
                sql: e.sql.map(|s| analysis::normalize_sql(&s)),
                site: w.site,
                unknown,
                recovered: e.recovered,
                chain,
                params: e.params,
            });
        }
    }

    /// An answer, or another socket's I/O inside a transaction (its peer
    /// looked up while the socket is open).
    fn push_io(&mut self, e: RawDbIo) {
        if self.io.len() >= MAX_IO {
            self.dropped_io += 1;
            return;
        }
        let kind = match e.kind {
            RawDbIoKind::Answer(status) => {
                self.answers += 1;
                transactions::WireIoKind::Answer(status)
            }
            RawDbIoKind::OtherSend { xact_fd } => transactions::WireIoKind::OtherSend { xact_fd, peer: self.peer(e.fd) },
            RawDbIoKind::OtherRecv { xact_fd } => transactions::WireIoKind::OtherRecv { xact_fd, peer: self.peer(e.fd) },
        };
        self.io.push(transactions::WireIo { ts_ns: e.ts_ns, tid: e.tid, fd: e.fd, kind });
    }

    /// The remote end of the target's socket `fd` (cached per socket).
    fn peer(&mut self, fd: u32) -> Option<String> {
        let inode = sockets::fd_inode(self.pid, fd)?;
        if let Some((known, peer)) = self.peers.get(&fd)
            && *known == inode
        {
            return peer.clone();
        }
        let peer = sockets::tcp_peer(self.pid, inode);
        self.peers.insert(fd, (inode, peer.clone()));
        peer
    }

    /// Texts learnt from the server for the current connection on an fd.
    fn learn(&mut self, learnt: Vec<(recovery::ConnKey, String, String)>) {
        for ((fd, generation), name, sql) in learnt {
            if self.generations.get(&fd) == Some(&generation)
                && let Some(conn) = self.connections.get_mut(&fd) {
                    conn.learn(&name, sql);
                }
        }
    }

    /// Fills executions recorded before their statement's text was learnt.
    fn fill_recovered(&mut self) {
        for e in &mut self.executions {
            if e.sql.is_none()
                && let Some((generation, name)) = &e.unknown
                && let Some(sql) = self.recovery.text((e.fd, *generation), name) {
                    e.sql = Some(sql.to_string());
                    e.recovered = true;
                }
        }
    }

    /// A new call site's stack (keyed by its fingerprint).
    fn push_stack(&mut self, s: RawDbStack) {
        if s.user.is_empty() || self.sites.contains_key(&s.site) {
            return;
        }
        let id = match self.stacks.get(&s.user) {
            Some(id) => *id,
            None if self.stack_list.len() < MAX_STACKS => {
                let id = self.stack_list.len();
                self.stacks.insert(s.user.clone(), id);
                self.stack_list.push(s.user);
                id
            }
            None => return,
        };
        self.sites.insert(s.site, id);
    }
}

struct WireTask {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<WireCapture>,
    /// pg_stat_activity samples of the target's transactions (when the
    /// server can be read).
    activity: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<transactions::ActivitySample>>)>,
}

/// Samples pg_stat_activity every `TRANSACTION_POLL` for the target's
/// connections (`ports`, kept current by the wire task): their state and
/// transaction age, never their statement text.
async fn sample_transactions(mut db: Db, ports: std::sync::Arc<std::sync::Mutex<BTreeMap<u32, u16>>>, mut stop: tokio::sync::oneshot::Receiver<()>) -> Vec<transactions::ActivitySample> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(TRANSACTION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let by_port: HashMap<i32, u32> = ports.lock().map(|p| p.iter().map(|(fd, port)| (i32::from(*port), *fd)).collect()).unwrap_or_default();
                if by_port.is_empty() {
                    continue;
                }
                let list: Vec<i32> = by_port.keys().copied().collect();
                match db.transaction_states(&list).await {
                    Ok(rows) => {
                        let ts_ns = monotonic_ns();
                        let mut seen: HashMap<i32, u32> = HashMap::new();
                        for (port, _, _) in &rows {
                            *seen.entry(*port).or_default() += 1;
                        }
                        // A port is the connection's only when one backend has it.
                        for (port, state, age) in rows {
                            if let (Some(fd), Some(1)) = (by_port.get(&port), seen.get(&port)) {
                                out.push(transactions::ActivitySample { ts_ns, fd: *fd, idle_in_transaction: state.starts_with("idle in transaction"), xact_age_ms: age });
                            }
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= ACTIVITY_MAX_FAILURES {
                            eprintln!("perf-audit: database: pg_stat_activity could not be read for transactions ({e}): transaction spans are not corroborated by the server (grant the role pg_read_all_stats)");
                            break;
                        }
                    }
                }
            }
        }
    }
    out
}

/// The database profile of one audit: started before collection, finished
/// after it.
pub struct DatabaseCollector {
    pid: u32,
    section: DatabaseSection,
    db: Option<Db>,
    start_statements: Option<HashMap<i64, StatementStat>>,
    start_tables: Vec<TableStat>,
    start_indexes: Vec<IndexStat>,
    wire: Option<WireTask>,
    started: Instant,
}

impl DatabaseCollector {
    /// Finds the database, takes the first statistics snapshot and starts
    /// tracing the target's writes to it. `explicit`: the user asked for
    /// the database profile alone, so a missing or unreachable database is
    /// an error; under `all` it is a notice in the report and the rest of
    /// the audit goes on. Wire writes are unwound with the audit's shared `unwinder`, whose
    /// process is the target.
    pub async fn start(
        session: &mut KernelSession,
        unwinder: &SharedUnwinder,
        url: Option<&str>,
        explicit: bool,
    ) -> Result<DatabaseCollector> {
        let pid = unwinder.pid();
        let mut section = DatabaseSection {
            wire: WireSummary { n_plus_one_rule: BurstRule::default().describe_chains(), ..Default::default() },
            ..Default::default()
        };
        let mut collector = DatabaseCollector {
            pid,
            section: DatabaseSection::default(),
            db: None,
            start_statements: None,
            start_tables: Vec::new(),
            start_indexes: Vec::new(),
            wire: None,
            started: Instant::now(),
        };
        let Some((url, source)) = url::resolve(url, pid) else {
            let msg = "no database URL: pass --database-url URL, set DATABASE_URL, or run the service with DATABASE_URL in its environment";
            if explicit {
                return Err(Error::new(ErrorKind::Database, msg));
            }
            eprintln!("perf-audit: database profile skipped: {msg}");
            section.notes.push(format!("Database profile skipped: {msg}."));
            collector.section = section;
            return Ok(collector);
        };
        let shown = url::redact(&url);
        section.connection = Some(shown.clone());
        section.connection_source = Some(source.describe(pid));
        if source == UrlSource::TargetEnvironment {
            eprintln!("perf-audit: database: using DATABASE_URL from the target's environment ({shown})");
        }

        if url::requires_tls(&url) {
            let msg = format!(
                "the database URL ({shown}) requires TLS, which this build of perf-audit does not include: statistics are not read (use a URL without sslmode=require on a trusted network, e.g. loopback)"
            );
            if explicit {
                return Err(Error::new(ErrorKind::Database, msg));
            }
            section.notes.push(msg);
        } else {
            match stats::connect(&url).await {
                Ok(db) => collector.db = Some(db),
                Err(reason) => {
                    let msg = format!("cannot connect to the database at {shown} ({}): {reason}", source.describe(pid));
                    if explicit {
                        return Err(Error::new(ErrorKind::Database, msg));
                    }
                    eprintln!("perf-audit: database statistics skipped: {msg}");
                    section.notes.push(msg);
                }
            }
        }
        if let Some(db) = collector.db.as_mut() {
            section.server_version = Some(db.server_version.clone());
            section.private_database = db.private;
            match db.privileges().await {
                Ok(p) => section.privileges = Some(p),
                Err(e) => section.notes.push(format!("The role's privileges could not be read ({e}): the report cannot say whether the agent holds more than it needs.")),
            }
            match db.statements().await {
                Ok(s) => {
                    section.pg_stat_statements = true;
                    collector.start_statements = Some(s);
                }
                Err(why) => {
                    let msg = why.message();
                    eprintln!("perf-audit: {msg}");
                    section.notes.push(msg);
                }
            }
            collector.start_tables = db.tables().await.unwrap_or_default();
            collector.start_indexes = db.indexes().await.unwrap_or_default();
        }

        match url::endpoint(&url) {
            Some(endpoint) => {
                let mut maps = MapsSnapshot::default();
                let _ = maps.refresh(pid);
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                let (mut fds, mut reader) = session.start_db_tracing(unwinder, &crate::memory::code_ranges(&maps, &exe))?;
                reader.warm_up(&maps);
                let sockets_now = sockets::database_sockets(pid, &endpoint);
                let initial = fds.sync(&sockets_now.keys().copied().collect());
                // A second session of our own reads pg_stat_activity for the
                // text of statements prepared before the audit, beside the
                // wire (the first one takes the statistics snapshots).
                let activity = match collector.db.is_some() {
                    true => stats::connect(&url).await.ok(),
                    false => None,
                };
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let shared_ports = std::sync::Arc::new(std::sync::Mutex::new(sockets_now.clone()));
                let xact_activity = match collector.db.is_some() {
                    true => stats::connect(&url).await.ok().map(|db| {
                        let (stop, stopped) = tokio::sync::oneshot::channel();
                        (stop, tokio::spawn(sample_transactions(db, shared_ports.clone(), stopped)))
                    }),
                    false => None,
                };
                let inodes = sockets_now.keys().filter_map(|fd| Some((*fd, sockets::fd_inode(pid, *fd)?))).collect();
                let wire = Wire { fds, reader, maps, ports: sockets_now, activity, pid, endpoint, shared_ports, inodes };
                let handle = tokio::spawn(trace_wire(wire, initial, stopped));
                collector.wire = Some(WireTask { stop, handle, activity: xact_activity });
                section.wire.traced = true;
            }
            None => section.notes.push(
                "The database URL names a Unix socket: tracing the wire over Unix sockets is not supported yet, so statements are not tied to code (statistics only).".into(),
            ),
        }
        collector.section = section;
        collector.started = Instant::now();
        Ok(collector)
    }

    /// Stops tracing, takes the second snapshot and builds the section.
    pub async fn finish(mut self, session: &mut KernelSession, symbolizer: &StackSymbolizer) -> DatabaseSection {
        let window_s = self.started.elapsed().as_secs_f64();
        session.stop_db_tracing();
        let mut activity_samples = Vec::new();
        let capture = match self.wire.take() {
            Some(task) => {
                if let Some((stop, handle)) = task.activity {
                    let _ = stop.send(());
                    activity_samples = handle.await.unwrap_or_default();
                }
                let _ = task.stop.send(());
                match task.handle.await {
                    Ok(capture) => Some(capture),
                    Err(e) => {
                        // Never absorbed: the section says the wire's findings are missing and why.
                        self.section.wire.parser_failures += 1;
                        let why = match e.try_into_panic() {
                            Ok(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default(),
                            Err(e) => e.to_string(),
                        };
                        let msg = format!("the wire tracer failed ({}): the statements seen on the wire are missing from this report (please report this bug with the service's driver)", why.lines().next().unwrap_or("no message"));
                        eprintln!("perf-audit: database: {msg}");
                        self.section.notes.push(msg);
                        None
                    }
                }
            }
            None => None,
        };
        if let Ok(c) = session.counters() {
            self.section.wire.writes = c.db_writes;
            self.section.wire.dropped_writes = c.db_writes_dropped_ring_full;
            self.section.wire.payload_read_failures = c.db_payload_read_failed;
            self.section.wire.stack_failures = c.db_user_stack_copy_failed;
        }
        let mut section = std::mem::take(&mut self.section);
        section.window_s = crate::report::round2(window_s);
        let (executions, io) = match capture {
            Some(mut capture) => {
                let io = std::mem::take(&mut capture.io);
                section.wire.answers = capture.answers;
                if capture.dropped_io > 0 {
                    section.notes.push(format!("{} answers and other sockets' I/O were left out (more than {MAX_IO}): transaction spans and pool figures cover the start of the audit.", capture.dropped_io));
                }
                (symbolize_capture(self.pid, capture, &mut section.wire, symbolizer), io)
            }
            None => (Vec::new(), Vec::new()),
        };
        section.wire.transaction_activity_samples = activity_samples.len() as u64;
        section.wire.idle_in_transaction_samples = activity_samples.iter().filter(|a| a.idle_in_transaction).count() as u64;
        if section.wire.tls_connections > 0 {
            section.notes.push(format!(
                "{} of the service's database connections are encrypted (TLS): their statements cannot be read from the wire, so they are not tied to code; their timings come from pg_stat_statements alone.",
                section.wire.tls_connections
            ));
        }
        let rule = BurstRule::default();
        // The agent numbers every write's chain: the chain rule is the one applied.
        section.wire.n_plus_one_rule = rule.describe_chains();
        section.n_plus_one = analysis::detect_n_plus_one(&executions, &rule);
        section.per_item_transactions = analysis::detect_per_item_transactions(&executions, &rule);
        section.chatty_requests = perf_audit_analysis::database::chatty::detect_chatty_requests(&executions, &Default::default());
        let spans = transactions::spans(&executions, &io, &activity_samples);
        section.transactions = transactions::held_transactions(&executions, &spans, &Default::default());
        section.repeated_reads = rereads::detect_repeated_reads(&executions, &Default::default(), |ex| rereads::median_round_trip_ms(ex, &io));
        section.pools = pool::pool_pressure(&executions, &io, &Default::default());
        let sites = analysis::call_sites_by_statement(&executions);

        let end = match self.db.as_mut() {
            Some(db) => Some((
                if self.start_statements.is_some() { db.statements().await.ok() } else { None },
                db.tables().await.unwrap_or_default(),
                db.indexes().await.unwrap_or_default(),
            )),
            None => None,
        };
        let end_statements = end.as_ref().and_then(|e| e.0.clone());
        section.statements = section::statement_rows(self.start_statements.as_ref(), end_statements.as_ref(), &executions, &sites);
        if let Some((_, tables, indexes)) = &end {
            section.tables = section::table_rows(&self.start_tables, tables);
            section.indexes = section::index_rows(&self.start_indexes, indexes);
            section.unused_indexes = section::unused_index_rows(indexes);
            section.duplicate_indexes = section::duplicate_index_rows(indexes);
            if let Some(db) = self.db.as_mut() {
                let mut refused = Vec::new();
                section.missing_indexes = missing_indexes(db, &section.statements, tables, indexes, &mut refused).await;
                plan_unused_at_scale(db, &executions, &section.statements, &mut section.unused_indexes, &mut refused).await;
                section.plans_not_inspected = refused;
            }
        }
        for row in &mut section.statements {
            row.recommendation = section::recommendation(row, &section.n_plus_one, &section.missing_indexes);
        }
        section.rewrites = check_rewrites(self.db.as_mut(), section::rewrites_wanted(&section)).await;
        section
    }
}


/// Rewrites checked per audit, at most (each is one PREPARE and EXPLAIN).
const MAX_REWRITES: usize = 20;

/// Has the server parse and plan each rewrite the findings would show,
/// on the safe path (`Db::explain_generic`: one statement, one Parse, a
/// read-only transaction rolled back, never executed). Without a
/// connection nothing is accepted, so nothing unchecked is shown.
async fn check_rewrites(db: Option<&mut Db>, wanted: Vec<String>) -> Vec<CheckedRewrite> {
    let Some(db) = db else {
        return wanted
            .into_iter()
            .take(MAX_REWRITES)
            .map(|sql| CheckedRewrite { sql, accepted: false, error: Some("no connection to the database: not checked, so not shown".into()) })
            .collect();
    };
    let mut out = Vec::new();
    for sql in wanted.into_iter().take(MAX_REWRITES) {
        let result = db.explain_generic(&sql).await;
        let error = result.err().map(|e| e.to_string());
        out.push(CheckedRewrite { accepted: error.is_none(), error, sql });
    }
    out
}

/// What the wire task owns.
struct Wire {
    fds: DbFdSet,
    reader: DbWriteReader,
    maps: MapsSnapshot,
    /// The target's database sockets: fd -> local port.
    ports: std::collections::BTreeMap<u32, u16>,
    /// Our session for pg_stat_activity reads (None: no recovery).
    activity: Option<Db>,
    pid: u32,
    endpoint: sockets::Endpoint,
    /// The socket inode of each database fd (a missed scan keeps an fd
    /// whose socket is unchanged).
    inodes: BTreeMap<u32, u64>,
    /// `ports`, for the transaction sampler.
    shared_ports: std::sync::Arc<std::sync::Mutex<BTreeMap<u32, u16>>>,
}

async fn trace_wire(mut w: Wire, initial_fds: Vec<u32>, mut stop: tokio::sync::oneshot::Receiver<()>) -> WireCapture {
    let pid = w.pid;
    let exe = crate::target::exe_file(pid).or_else(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok()).unwrap_or_default();
    let mut capture = WireCapture { exe, pid, ..WireCapture::default() };
    capture.seen_fds.extend(initial_fds);
    let mut last_maps = Instant::now();
    let mut tick = tokio::time::interval(FD_REFRESH);
    let mut drain_tick = tokio::time::interval(WIRE_DRAIN);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll_tick = tokio::time::interval(ACTIVITY_POLL);
    poll_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    // The activity read in flight: it runs beside the drains, so a slow
    // server never makes the ring overflow.
    let mut read: Option<ActivityRead> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Writes come without a wake-up (see perf-audit-ebpf's db.rs).
            _ = drain_tick.tick() => drain(&mut w.reader, &mut w.maps, &mut capture),
            _ = tick.tick() => {
                drain(&mut w.reader, &mut w.maps, &mut capture);
                let mut ports = sockets::database_sockets(pid, &w.endpoint);
                // A connection missing from this scan whose fd still holds
                // the same socket is kept: the socket table can miss an
                // established connection while many others come and go (a
                // server closing a connection per request), and dropping it
                // would lose its writes and the statement names it prepared.
                for (fd, port) in &w.ports {
                    if !ports.contains_key(fd) && w.inodes.get(fd).is_some_and(|i| sockets::fd_inode(pid, *fd) == Some(*i)) {
                        ports.insert(*fd, *port);
                    }
                }
                w.inodes = ports.keys().filter_map(|fd| Some((*fd, sockets::fd_inode(pid, *fd)?))).collect();
                // An fd missing from this scan leaves DB_FDS: its writes go
                // untraced until it is found again (a socket may be missed by
                // one read of /proc/PID/net/tcp while connections come and
                // go), so what pg_stat_activity says about it is not used.
                for fd in w.ports.keys().filter(|fd| !ports.contains_key(fd)) {
                    capture.untraced(*fd);
                }
                for fd in w.fds.sync(&ports.keys().copied().collect()) {
                    capture.reset(fd);
                    capture.seen_fds.insert(fd);
                }
                // Another socket on the same fd number since the last look
                // (another local port): its backend is another one.
                for (fd, port) in &ports {
                    if w.ports.get(fd).is_some_and(|p| p != port) {
                        capture.reset(*fd);
                    }
                }
                if let Ok(mut shared) = w.shared_ports.lock() {
                    shared.clone_from(&ports);
                }
                w.ports = ports;
                if last_maps.elapsed() >= std::time::Duration::from_secs(1) {
                    let _ = w.maps.refresh(pid);
                    last_maps = Instant::now();
                }
            }
            _ = poll_tick.tick(), if read.is_none() && w.activity.is_some() && capture.recovery.wants_poll() => {
                read = start_activity_read(&mut w, &mut capture);
            }
            (db, rows, sent) = async { read.as_mut().expect("guarded").future.as_mut().await }, if read.is_some() => {
                let done = read.take().expect("guarded");
                w.activity = Some(db);
                match rows {
                    Ok(rows) => finish_activity_read(&mut w, &mut capture, done, rows, sent),
                    Err(e) => {
                        failures += 1;
                        if failures >= ACTIVITY_MAX_FAILURES {
                            eprintln!("perf-audit: database: pg_stat_activity could not be read ({e}): the text of statements prepared before the audit is not recovered (grant the role pg_read_all_stats to recover it)");
                            w.activity = None;
                        }
                    }
                }
            }
        }
    }
    drain(&mut w.reader, &mut w.maps, &mut capture);
    capture.fill_recovered();
    capture.fd_rejected = w.fds.rejected;
    if std::env::var_os("PERF_AUDIT_DEBUG_WIRE").is_some() {
        eprintln!(
            "perf-audit: wire: {} stack fingerprints, {} distinct stacks, {} executions; pg_stat_activity: {} reads, {} observations, {} statement names learnt",
            capture.sites.len(),
            capture.stack_list.len(),
            capture.executions.len(),
            capture.recovery.polls,
            capture.recovery.observations,
            capture.recovery.learnt_count()
        );
    }
    capture.maps = w.maps;
    capture
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's write timestamps
/// (`bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Gives back our session, the rows, and when the read was sent.
type ActivityFuture = std::pin::Pin<Box<dyn std::future::Future<Output = (Db, std::result::Result<Vec<stats::ActivityRow>, String>, u64)> + Send>>;

/// A pg_stat_activity read in flight: our session (given back when done)
/// and the candidates as they stood when it was sent.
struct ActivityRead {
    future: ActivityFuture,
    candidates: Vec<recovery::Candidate>,
}

/// Starts one pg_stat_activity read for the connections whose last write
/// bound an unknown statement (see `recovery`), the wire drained just
/// before so the candidates are current.
fn start_activity_read(w: &mut Wire, capture: &mut WireCapture) -> Option<ActivityRead> {
    drain(&mut w.reader, &mut w.maps, capture);
    let candidates = capture.recovery.candidates();
    let ports: Vec<i32> = candidates.iter().filter_map(|c| w.ports.get(&c.conn.0)).map(|p| i32::from(*p)).collect();
    if ports.is_empty() {
        return None;
    }
    let mut db = w.activity.take()?;
    let future = Box::pin(async move {
        // As late as possible, but before the read is written: the
        // recovery's timing rule needs a time no later than the server's
        // receipt of the read.
        let sent = monotonic_ns();
        let rows = db.activity(&ports).await;
        (db, rows, sent)
    });
    Some(ActivityRead { future, candidates })
}

/// The read's answer, the wire drained first (every write made before the
/// server's snapshot has been seen).
fn finish_activity_read(w: &mut Wire, capture: &mut WireCapture, read: ActivityRead, rows: Vec<stats::ActivityRow>, sent: u64) {
    let received = monotonic_ns();
    drain(&mut w.reader, &mut w.maps, capture);
    // A port is the connection's only when one backend has it (clients on
    // other hosts may use the same port number).
    let mut by_port: HashMap<i32, Vec<&stats::ActivityRow>> = HashMap::new();
    for r in &rows {
        by_port.entry(r.port).or_default().push(r);
    }
    let activity: HashMap<recovery::ConnKey, recovery::Activity> = read
        .candidates
        .iter()
        .filter_map(|c| {
            let port = i32::from(*w.ports.get(&c.conn.0)?);
            match by_port.get(&port).map(Vec::as_slice) {
                Some([row]) => Some((
                    c.conn,
                    recovery::Activity { state: row.state.clone(), query: row.query.clone(), state_for_ns: row.state_for_ns, state_change_ns: row.state_change_ns },
                )),
                _ => None,
            }
        })
        .collect();
    if std::env::var_os("PERF_AUDIT_DEBUG_ACTIVITY").is_some() {
        eprintln!("perf-audit: activity: sent {sent} candidates {:?} rows {rows:?}", read.candidates);
    }
    let learnt = capture.recovery.observe(&read.candidates, &activity, sent, received);
    capture.learn(learnt);
}

fn drain(reader: &mut DbWriteReader, maps: &mut MapsSnapshot, capture: &mut WireCapture) {
    let mut stacks = Vec::new();
    let mut writes = Vec::new();
    reader.drain(maps, |s| stacks.push(s), |w| writes.push(w));
    let mut io = Vec::new();
    reader.drain_io(|e| io.push(e));
    for s in stacks {
        capture.push_stack(s);
    }
    for w in writes {
        capture.push(w);
    }
    for e in io {
        capture.push_io(e);
    }
}

/// Symbolizes each distinct stack once and names the owner's frame.
fn symbolize_capture(pid: u32, capture: WireCapture, summary: &mut WireSummary, symbolizer: &StackSymbolizer) -> Vec<Execution> {
    summary.connections = capture.seen_fds.len() as u64;
    summary.tls_connections = capture.tls_fds.len() as u64;
    summary.dropped_executions = capture.dropped_executions;
    summary.writes_after_answer = capture.writes_after_answer;
    summary.unparsed_writes = capture.unparsed_writes;
    summary.parser_failures += capture.parser_failures;
    if capture.parser_failures > 0 {
        eprintln!("perf-audit: database: {} writes could not be parsed (a bug in perf-audit's protocol parser: please report it); they are left out", capture.parser_failures);
    }
    summary.evicted_connections = capture.evicted_connections;
    summary.executions_beyond_capture = capture.executions_beyond_capture;
    summary.evicted_portals = capture.evicted_portals + capture.connections.values().map(|c| c.evicted_portals).sum::<u64>();
    summary.evicted_statements = capture.evicted_statements + capture.connections.values().map(|c| c.evicted_statements).sum::<u64>();
    let raw: Vec<RawCpuStack> = capture
        .stack_list
        .iter()
        .map(|user| RawCpuStack::call_site(pid, user.clone()))
        .collect();
    let profile = symbolizer.cpu_profile(&raw, &capture.maps, &capture.exe);
    // Per stack, the owner's frames innermost first: the call site, then
    // its callers (the handler that sequences a request's statements).
    // Each stack's driver (the client library its frames go through, see
    // `dialect`) rides on its owner frames: the dialect of the code fix.
    let sites: Vec<Option<(CallSite, std::sync::Arc<[CallSite]>)>> = profile
        .stacks
        .iter()
        .map(|s| {
            let names: Vec<String> = s.frames.iter().map(|id| profile.frame(*id).display_name()).collect();
            let driver = Driver::from_frames(names.iter().map(String::as_str));
            let owners: Vec<CallSite> = s
                .frames
                .iter()
                .rev()
                .map(|id| profile.frame(*id))
                .filter(|f| f.origin == Origin::Owner)
                .map(|frame| CallSite { function: frame.display_name(), file: frame.file.clone(), line: frame.line, driver, ..Default::default() })
                .collect();
            let (site, callers) = owners.split_first()?;
            Some((site.clone(), callers.into()))
        })
        .collect();
    let site_of = |e: &WireExecution| capture.sites.get(&e.site).and_then(|i| sites.get(*i).cloned().flatten());
    // Names observed once on their connection, decided with the other
    // connections' names of the same call site (recovery::decide_by_call_site).
    let mut name_sites: HashMap<(u32, u64, &str), Option<CallSite>> = HashMap::new();
    for e in capture.executions.iter().filter(|e| e.sql.is_none()) {
        if let Some((generation, name)) = &e.unknown {
            let site = site_of(e).map(|(site, _)| site);
            name_sites.entry((e.fd, *generation, name.as_str())).and_modify(|s| if *s != site { *s = None }).or_insert(site);
        }
    }
    let pooled = capture.recovery.decide_by_call_site(|(fd, generation), name| name_sites.get(&(fd, generation, name)).cloned().flatten());
    summary.statements_text_from_activity = (capture.recovery.learnt_count() + pooled.len()) as u64;
    summary.activity_polls = capture.recovery.polls;
    let mut executions: Vec<Execution> = capture
        .executions
        .iter()
        .map(|e| {
            let mut sql = e.sql.clone();
            let mut recovered = e.recovered;
            if sql.is_none()
                && let Some((generation, name)) = &e.unknown
                && let Some(text) = pooled.get(&((e.fd, *generation), name.clone())) {
                    sql = Some(text.clone());
                    recovered = true;
                }
            if recovered {
                summary.executions_text_from_activity += 1;
            }
            let (site, callers) = site_of(e).unzip();
            Execution { ts_ns: e.ts_ns, tid: e.tid, fd: e.fd, sql, site, callers: callers.unwrap_or_default(), chain: e.chain, params: e.params }
        })
        .collect();
    // Call sites out of generic helpers every statement passes through,
    // before texts are filled per call site (a helper's many statements
    // would leave its site without a unique text).
    summary.wrappers = analysis::resolve_wrappers(&mut executions);
    summary.wrapper_rule = analysis::wrapper_rule();
    summary.executions_text_from_call_site = analysis::fill_texts_from_call_sites(&mut executions);
    summary.executions = executions.len() as u64;
    for e in &executions {
        if let Some(driver) = e.site.as_ref().and_then(|s| s.driver) {
            *summary.drivers.entry(driver.label().to_string()).or_default() += 1;
        }
    }
    summary.executions_without_text = executions.iter().filter(|e| e.sql.is_none()).count() as u64;
    if std::env::var_os("PERF_AUDIT_DEBUG_WIRE").is_some() {
        let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
        for e in executions.iter().filter(|e| e.sql.is_none()) {
            *unknown.entry(e.site.as_ref().map_or_else(|| "?".into(), |s| format!("{}:{:?}", s.function, s.line))).or_default() += 1;
        }
        eprintln!("perf-audit: wire: executions without text by call site: {unknown:?}");
    }
    summary.executions_with_call_site = executions.iter().filter(|e| e.site.is_some()).count() as u64;
    let exe = symbolizer.object_symbols().into_iter().find(|o| o.executable);
    summary.untied_reason = analysis::untied_reason(
        summary.executions,
        summary.executions_with_call_site,
        exe.as_ref().is_some_and(|o| o.symbols),
        exe.as_ref().is_some_and(|o| o.line_info),
    );
    executions
}






/// Whether a statement seen during the audit would read through each
/// unused index once its table is large: each statement on the index's
/// table is planned with sequential scans priced out
/// (`thresholds::AT_SCALE_METHOD`), once per table. Texts from the wire
/// are what the service sent, so one that cannot be planned leaves the
/// question open (no drop advised); pg_stat_statements texts of other
/// clients are normalised (`interval $3` for a literal), so theirs that
/// cannot be planned are skipped.
async fn plan_unused_at_scale(db: &mut Db, executions: &[Execution], statements: &[StatementRow], unused: &mut [UnusedIndex], refused: &mut Vec<PlanNotInspected>) {
    use perf_audit_analysis::database::thresholds::{plan_uses_index, statements_on_table};
    let wire: BTreeSet<&str> = executions.iter().filter_map(|e| e.sql.as_deref()).collect();
    let mut texts: Vec<&str> = wire.iter().copied().collect();
    texts.extend(statements.iter().map(|s| s.query.as_str()).filter(|q| !wire.contains(q)));
    // Per table: (statement, None beyond the bound, else its plan if it could be made).
    type Plans = Vec<(String, Option<Option<serde_json::Value>>)>;
    let mut plans: HashMap<String, Plans> = HashMap::new();
    for u in unused.iter_mut() {
        if !plans.contains_key(&u.table) {
            let mut planned = Vec::new();
            for (k, sql) in statements_on_table(texts.iter().copied(), &u.table).into_iter().enumerate() {
                // Beyond the bound, not planned: unknown (no drop advised).
                let plan = if k < PLANNED_PER_TABLE { Some(explained(db.explain_at_scale(sql).await, sql, refused)) } else { None };
                planned.push((sql.to_string(), plan));
            }
            plans.insert(u.table.clone(), planned);
        }
        u.plan_checked = true;
        for (sql, plan) in &plans[&u.table] {
            match plan {
                Some(Some(plan)) => {
                    u.statements_planned += 1;
                    if u.used_at_scale_by.is_none() && plan_uses_index(plan, &u.index, &u.definition, sql) {
                        u.used_at_scale_by = Some(sql.clone());
                    }
                }
                Some(None) if !wire.contains(sql.as_str()) => {}
                Some(None) | None => u.statements_unplanned += 1,
            }
        }
    }
}

/// The plan, or None; a text the agent refused to send is kept (with why)
/// for the report, once, up to `MAX_PLANS_NOT_INSPECTED`.
fn explained(result: std::result::Result<serde_json::Value, stats::PlanError>, sql: &str, refused: &mut Vec<PlanNotInspected>) -> Option<serde_json::Value> {
    match result {
        Ok(plan) => Some(plan),
        Err(stats::PlanError::Refused(why)) => {
            let query: String = sql.chars().take(200).collect();
            if refused.len() < MAX_PLANS_NOT_INSPECTED && !refused.iter().any(|r| r.query == query) {
                refused.push(PlanNotInspected { query, reason: why.to_string() });
            }
            None
        }
        Err(stats::PlanError::Server(_)) => None,
    }
}

/// Explains the heaviest read statements and proposes an index for each
/// filtered sequential scan of a large table that no index covers.
async fn missing_indexes(db: &mut Db, statements: &[StatementRow], tables: &[TableStat], indexes: &[IndexStat], refused: &mut Vec<PlanNotInspected>) -> Vec<MissingIndex> {
    let mut out: Vec<MissingIndex> = Vec::new();
    let candidates = statements.iter().filter(|s| {
        let q = s.query.trim_start().to_ascii_uppercase();
        (q.starts_with("SELECT") || q.starts_with("WITH")) && s.mean_ms.unwrap_or(0.0) >= perf_audit_analysis::database::thresholds::MISSING_INDEX_MIN_MEAN_MS
    });
    let mut columns_cache: HashMap<(String, String), HashMap<i32, String>> = HashMap::new();
    for stmt in candidates.take(EXPLAINED_STATEMENTS) {
        let Some(plan) = explained(db.explain_generic(&stmt.query).await, &stmt.query, refused) else { continue };
        for scan in advice::seq_scans(&plan) {
            let rows = tables.iter().find(|t| t.schema == scan.schema && t.table == scan.table).map_or(0, |t| t.live_rows);
            let columns = scan.index_columns();
            if rows < section::MIN_TABLE_ROWS || columns.is_empty() {
                continue;
            }
            let key = (scan.schema.clone(), scan.table.clone());
            if !columns_cache.contains_key(&key) {
                let names = db.column_names(&scan.schema, &scan.table).await.unwrap_or_default();
                columns_cache.insert(key.clone(), names);
            }
            let names = &columns_cache[&key];
            let existing: Vec<Vec<String>> = indexes
                .iter()
                .filter(|i| i.schema == scan.schema && i.table == scan.table && i.predicate.is_empty())
                .map(|i| i.columns.iter().map(|n| names.get(n).cloned().unwrap_or_default()).collect())
                .collect();
            if advice::covered_by_existing(&columns, &existing)
                || out.iter().any(|m| m.table == scan.table && m.columns == columns)
            {
                continue;
            }
            let create_sql = advice::create_index_sql(&scan.schema, &scan.table, &columns, true);
            let (cost_before, cost_after) = if db.private {
                match db.index_gain(&stmt.query, &scan.schema, &scan.table, &columns).await {
                    Ok((b, a)) => (Some(b), Some(a)),
                    Err(_) => (None, None),
                }
            } else {
                (None, None)
            };
            out.push(MissingIndex {
                schema: scan.schema.clone(),
                table: scan.table.clone(),
                columns,
                create_sql,
                query: stmt.query.clone(),
                filter: scan.filter.clone(),
                calls: stmt.calls,
                mean_ms: stmt.mean_ms,
                table_rows: rows,
                cost_before,
                cost_after,
                call_sites: stmt.call_sites.clone(),
            });
        }
    }
    out
}

