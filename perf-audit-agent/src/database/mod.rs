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
    database::{advice, analysis, section, wire},
    report::schema::{
        CallSiteRow, DatabaseSection, DuplicateIndex, IndexRow, MissingIndex, StatementRow, TableRow, UnusedIndex, WireSummary,
    },
};

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

use analysis::{BurstRule, CallSite, Execution};
use stats::{Db, IndexStat, StatementStat, TableStat};
use url::UrlSource;

use crate::{
    error::{Error, ErrorKind, Result},
    kernel::{
        KernelSession,
        cpu::RawCpuStack,
        db::{DbFdSet, DbWriteReader, RawDbStack, RawDbWrite},
    },
    profile::Origin,
    symbolize::StackSymbolizer,
    target::MapsSnapshot,
    unwind::SharedUnwinder,
};

/// Executions kept from the wire; more are counted as dropped.
const MAX_EXECUTIONS: usize = 200_000;
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

/// One statement seen on the wire: (ts, tid, fd, normalised sql, stack fingerprint).
type WireExecution = (u64, u32, u32, Option<String>, u64);

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
    fd_rejected: u64,
    maps: MapsSnapshot,
    /// The target's executable, read while it runs: only its frames are
    /// the owner's code.
    exe: std::path::PathBuf,
}

impl WireCapture {
    fn push(&mut self, w: RawDbWrite) {
        let conn = self.connections.entry(w.fd).or_default();
        let executions = conn.feed(wire::parse(&w.payload));
        if conn.encrypted {
            self.tls_fds.insert(w.fd);
        }
        if executions.is_empty() {
            return;
        }
        for e in executions {
            if self.executions.len() >= MAX_EXECUTIONS {
                self.dropped_executions += 1;
                continue;
            }
            self.executions.push((w.ts_ns, w.tid, w.fd, e.sql.map(|s| analysis::normalize_sql(&s)), w.site));
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
            wire: WireSummary { n_plus_one_rule: BurstRule::default().describe(), ..Default::default() },
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
                let initial = fds.sync(&sockets::database_fds(pid, &endpoint));
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let handle = tokio::spawn(trace_wire(fds, reader, maps, initial, pid, endpoint, stopped));
                collector.wire = Some(WireTask { stop, handle });
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
        let capture = match self.wire.take() {
            Some(task) => {
                let _ = task.stop.send(());
                task.handle.await.ok()
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
        let executions = match capture {
            Some(capture) => symbolize_capture(self.pid, capture, &mut section.wire, symbolizer),
            None => Vec::new(),
        };
        if section.wire.tls_connections > 0 {
            section.notes.push(format!(
                "{} of the service's database connections are encrypted (TLS): their statements cannot be read from the wire, so they are not tied to code; their timings come from pg_stat_statements alone.",
                section.wire.tls_connections
            ));
        }
        let rule = BurstRule::default();
        section.n_plus_one = analysis::detect_n_plus_one(&executions, &rule);
        section.per_item_transactions = analysis::detect_per_item_transactions(&executions, &rule);
        section.chatty_requests = perf_audit_analysis::database::chatty::detect_chatty_requests(&executions, &Default::default());
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
                section.missing_indexes = missing_indexes(db, &section.statements, tables, indexes).await;
                plan_unused_at_scale(db, &executions, &section.statements, &mut section.unused_indexes).await;
            }
        }
        for row in &mut section.statements {
            row.recommendation = section::recommendation(row, &section.n_plus_one, &section.missing_indexes);
        }
        section
    }
}


async fn trace_wire(
    mut fds: DbFdSet,
    mut reader: DbWriteReader,
    mut maps: MapsSnapshot,
    initial_fds: Vec<u32>,
    pid: u32,
    endpoint: sockets::Endpoint,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> WireCapture {
    let mut capture = WireCapture { exe: std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default(), ..WireCapture::default() };
    capture.seen_fds.extend(initial_fds);
    let mut last_maps = Instant::now();
    let mut tick = tokio::time::interval(FD_REFRESH);
    let mut drain_tick = tokio::time::interval(WIRE_DRAIN);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Writes come without a wake-up (see perf-audit-ebpf's db.rs).
            _ = drain_tick.tick() => drain(&mut reader, &mut maps, &mut capture),
            _ = tick.tick() => {
                drain(&mut reader, &mut maps, &mut capture);
                let now = sockets::database_fds(pid, &endpoint);
                for fd in fds.sync(&now) {
                    // A new socket (or a reused fd number): fresh protocol state.
                    capture.connections.remove(&fd);
                    capture.seen_fds.insert(fd);
                }
                if last_maps.elapsed() >= std::time::Duration::from_secs(1) {
                    let _ = maps.refresh(pid);
                    last_maps = Instant::now();
                }
            }
        }
    }
    drain(&mut reader, &mut maps, &mut capture);
    capture.fd_rejected = fds.rejected;
    if std::env::var_os("PERF_AUDIT_DEBUG_WIRE").is_some() {
        eprintln!("perf-audit: wire: {} stack fingerprints, {} distinct stacks, {} executions", capture.sites.len(), capture.stack_list.len(), capture.executions.len());
    }
    capture.maps = maps;
    capture
}

fn drain(reader: &mut DbWriteReader, maps: &mut MapsSnapshot, capture: &mut WireCapture) {
    let mut stacks = Vec::new();
    let mut writes = Vec::new();
    reader.drain(maps, |s| stacks.push(s), |w| writes.push(w));
    for s in stacks {
        capture.push_stack(s);
    }
    for w in writes {
        capture.push(w);
    }
}

/// Symbolizes each distinct stack once and names the owner's frame.
fn symbolize_capture(pid: u32, capture: WireCapture, summary: &mut WireSummary, symbolizer: &StackSymbolizer) -> Vec<Execution> {
    summary.connections = capture.seen_fds.len() as u64;
    summary.tls_connections = capture.tls_fds.len() as u64;
    summary.dropped_executions = capture.dropped_executions;
    let raw: Vec<RawCpuStack> = capture
        .stack_list
        .iter()
        .map(|user| RawCpuStack::call_site(pid, user.clone()))
        .collect();
    let profile = symbolizer.cpu_profile(&raw, &capture.maps, &capture.exe);
    // Per stack, the owner's frames innermost first: the call site, then
    // its callers (the handler that sequences a request's statements).
    let sites: Vec<Option<(CallSite, std::sync::Arc<[CallSite]>)>> = profile
        .stacks
        .iter()
        .map(|s| {
            let owners: Vec<CallSite> = s
                .frames
                .iter()
                .rev()
                .map(|id| profile.frame(*id))
                .filter(|f| f.origin == Origin::Owner)
                .map(|frame| CallSite { function: frame.display_name(), file: frame.file.clone(), line: frame.line })
                .collect();
            let (site, callers) = owners.split_first()?;
            Some((site.clone(), callers.into()))
        })
        .collect();
    let mut executions: Vec<Execution> = capture
        .executions
        .into_iter()
        .map(|(ts_ns, tid, fd, sql, fingerprint)| {
            let stack = capture.sites.get(&fingerprint).copied();
            let (site, callers) = stack.and_then(|i| sites.get(i).cloned().flatten()).unzip();
            Execution { ts_ns, tid, fd, sql, site, callers: callers.unwrap_or_default() }
        })
        .collect();
    analysis::fill_texts_from_call_sites(&mut executions);
    summary.executions = executions.len() as u64;
    summary.executions_without_text = executions.iter().filter(|e| e.sql.is_none()).count() as u64;
    summary.executions_with_call_site = executions.iter().filter(|e| e.site.is_some()).count() as u64;
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
async fn plan_unused_at_scale(db: &mut Db, executions: &[Execution], statements: &[StatementRow], unused: &mut [UnusedIndex]) {
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
                let plan = if k < PLANNED_PER_TABLE { Some(db.explain_at_scale(sql).await.ok()) } else { None };
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

/// Explains the heaviest read statements and proposes an index for each
/// filtered sequential scan of a large table that no index covers.
async fn missing_indexes(db: &mut Db, statements: &[StatementRow], tables: &[TableStat], indexes: &[IndexStat]) -> Vec<MissingIndex> {
    let mut out: Vec<MissingIndex> = Vec::new();
    let candidates = statements.iter().filter(|s| {
        let q = s.query.trim_start().to_ascii_uppercase();
        (q.starts_with("SELECT") || q.starts_with("WITH")) && s.mean_ms.unwrap_or(0.0) >= perf_audit_analysis::database::thresholds::MISSING_INDEX_MIN_MEAN_MS
    });
    let mut columns_cache: HashMap<(String, String), HashMap<i32, String>> = HashMap::new();
    for stmt in candidates.take(EXPLAINED_STATEMENTS) {
        let Ok(plan) = db.explain_generic(&stmt.query).await else { continue };
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
                match db.index_gain(&stmt.query, &advice::create_index_sql(&scan.schema, &scan.table, &columns, false)).await {
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

