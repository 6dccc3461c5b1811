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
//!   no change to the service. [`analysis`] finds N+1 loops in them.
//!
//! [`DatabaseCollector`] is the only orchestration: the engine starts it
//! before collection and finishes it after, and gets a [`DatabaseSection`]
//! for the report. Everything else here is pure or plain I/O.

pub mod advice;
pub mod analysis;
pub mod sockets;
pub mod stats;
pub mod url;
pub mod wire;

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

use analysis::{BurstRule, CallSite, Execution, NPlusOne};
use stats::{Db, IndexStat, StatementStat, TableStat};
use url::UrlSource;

use crate::{
    error::{Error, ErrorKind, Result},
    kernel::{
        KernelSession,
        cpu::RawCpuStack,
        db::{DbFdSet, DbWriteReader, RawDbWrite},
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
/// How often the target's database sockets are looked up again.
const FD_REFRESH: std::time::Duration = std::time::Duration::from_millis(50);
/// Statements explained for missing indexes (heaviest first).
const EXPLAINED_STATEMENTS: usize = 5;
/// Tables smaller than this are scanned faster than through an index.
const MIN_TABLE_ROWS: i64 = 10_000;
/// Rows of the statements table.
const STATEMENT_ROWS: usize = 20;

/// `report.json`'s `database` section.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DatabaseSection {
    /// The URL used, password masked; `None` when none was found.
    pub connection: Option<String>,
    /// Where the URL came from.
    pub connection_source: Option<String>,
    pub server_version: Option<String>,
    /// The private throwaway server of the demo or the tests (index gains
    /// are then measured in rolled-back transactions).
    pub private_database: bool,
    /// Whether `pg_stat_statements` could be read.
    pub pg_stat_statements: bool,
    /// One-line notices: what could not be measured and how to fix it.
    pub notes: Vec<String>,
    /// Seconds between the two statistics snapshots.
    pub window_s: f64,
    pub statements: Vec<StatementRow>,
    pub tables: Vec<TableRow>,
    pub indexes: Vec<IndexRow>,
    pub missing_indexes: Vec<MissingIndex>,
    pub unused_indexes: Vec<UnusedIndex>,
    pub duplicate_indexes: Vec<DuplicateIndex>,
    pub n_plus_one: Vec<NPlusOne>,
    pub wire: WireSummary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StatementRow {
    pub query: String,
    /// Calls during the audit.
    pub calls: i64,
    /// `None` when only the wire saw the statement (no pg_stat_statements).
    pub total_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Largest single execution; since the statistics were last reset when
    /// the statement had run before the audit (`max_since_reset`).
    pub max_ms: Option<f64>,
    pub max_since_reset: bool,
    pub rows: Option<i64>,
    /// Share of the database time of all statements in the window.
    pub time_pct: Option<f64>,
    pub call_sites: Vec<CallSiteRow>,
    pub recommendation: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallSiteRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Executions traced from this call site.
    pub executions: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableRow {
    pub schema: String,
    pub table: String,
    pub rows: i64,
    /// Scans during the audit.
    pub seq_scans: i64,
    pub seq_rows_read: i64,
    pub idx_scans: i64,
    pub idx_rows_fetched: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexRow {
    pub schema: String,
    pub table: String,
    pub index: String,
    /// Scans during the audit, and since statistics were reset.
    pub scans: i64,
    pub scans_total: i64,
    pub size_bytes: i64,
    pub definition: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MissingIndex {
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
    pub create_sql: String,
    /// The statement that would use it, and the plan's filter.
    pub query: String,
    pub filter: String,
    pub calls: i64,
    pub mean_ms: Option<f64>,
    pub table_rows: i64,
    /// Generic-plan total cost without and with the index, measured in a
    /// rolled-back transaction (private databases only).
    pub cost_before: Option<f64>,
    pub cost_after: Option<f64>,
    pub call_sites: Vec<CallSiteRow>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UnusedIndex {
    pub schema: String,
    pub table: String,
    pub index: String,
    pub size_bytes: i64,
    pub definition: String,
    /// Rows written to the table during the audit (each maintains the index).
    pub drop_sql: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DuplicateIndex {
    pub table: String,
    pub index: String,
    pub duplicate_of: String,
    pub size_bytes: i64,
    pub drop_sql: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WireSummary {
    /// Whether the target's writes to the database were traced.
    pub traced: bool,
    /// Database sockets of the target seen during the audit.
    pub connections: u64,
    /// Of which encrypted (TLS): their statements cannot be read.
    pub tls_connections: u64,
    /// Writes captured in the kernel.
    pub writes: u64,
    /// Writes lost because the ring buffer was full.
    pub dropped_writes: u64,
    pub payload_read_failures: u64,
    pub stack_failures: u64,
    /// Statement executions parsed from the writes.
    pub executions: u64,
    /// Executions beyond the agent's bound, not analysed.
    pub dropped_executions: u64,
    /// Executions whose statement was prepared before tracing began and
    /// whose text could not be recovered.
    pub executions_without_text: u64,
    /// Executions whose stack reached the owner's code.
    pub executions_with_call_site: u64,
    /// How N+1 patterns are recognised.
    pub n_plus_one_rule: String,
}

/// One statement seen on the wire: (ts, tid, fd, normalised sql, stack index).
type WireExecution = (u64, u32, u32, Option<String>, Option<usize>);

/// Writes parsed into executions, before symbolization.
#[derive(Default)]
struct WireCapture {
    connections: HashMap<u32, wire::Connection>,
    seen_fds: BTreeSet<u32>,
    tls_fds: BTreeSet<u32>,
    stacks: HashMap<Vec<u64>, usize>,
    stack_list: Vec<Vec<u64>>,
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
        let stack = if w.user.is_empty() {
            None
        } else if let Some(id) = self.stacks.get(&w.user) {
            Some(*id)
        } else if self.stack_list.len() < MAX_STACKS {
            let id = self.stack_list.len();
            self.stacks.insert(w.user.clone(), id);
            self.stack_list.push(w.user);
            Some(id)
        } else {
            None
        };
        for e in executions {
            if self.executions.len() >= MAX_EXECUTIONS {
                self.dropped_executions += 1;
                continue;
            }
            self.executions.push((w.ts_ns, w.tid, w.fd, e.sql.map(|s| analysis::normalize_sql(&s)), stack));
        }
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
                let (mut fds, mut reader) = session.start_db_tracing(unwinder)?;
                let mut maps = MapsSnapshot::default();
                let _ = maps.refresh(pid);
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
    pub async fn finish(mut self, session: &mut KernelSession) -> DatabaseSection {
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
            Some(capture) => symbolize_capture(self.pid, capture, &mut section.wire),
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
        section.statements = statement_rows(self.start_statements.as_ref(), end_statements.as_ref(), &executions, &sites);
        if let Some((_, tables, indexes)) = &end {
            section.tables = table_rows(&self.start_tables, tables);
            section.indexes = index_rows(&self.start_indexes, indexes);
            section.unused_indexes = advice::unused(indexes)
                .into_iter()
                .map(|i| UnusedIndex {
                    schema: i.schema.clone(),
                    table: i.table.clone(),
                    index: i.index.clone(),
                    size_bytes: i.size_bytes,
                    definition: i.definition.clone(),
                    drop_sql: format!("DROP INDEX CONCURRENTLY {};", qualified(&i.schema, &i.index)),
                })
                .collect();
            section.duplicate_indexes = advice::duplicates(indexes)
                .into_iter()
                .map(|(a, b)| DuplicateIndex {
                    table: a.table.clone(),
                    index: a.index.clone(),
                    duplicate_of: b.index.clone(),
                    size_bytes: a.size_bytes,
                    drop_sql: format!("DROP INDEX CONCURRENTLY {};", qualified(&a.schema, &a.index)),
                })
                .collect();
            if let Some(db) = self.db.as_mut() {
                section.missing_indexes = missing_indexes(db, &section.statements, tables, indexes).await;
            }
        }
        for row in &mut section.statements {
            row.recommendation = recommendation(row, &section.n_plus_one, &section.missing_indexes);
        }
        section
    }
}

fn qualified(schema: &str, name: &str) -> String {
    if schema == "public" { name.to_string() } else { format!("{schema}.{name}") }
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
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = reader.readable() => reader.drain(&mut maps, |w| capture.push(w)),
            _ = tick.tick() => {
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
    reader.drain(&mut maps, |w| capture.push(w));
    capture.fd_rejected = fds.rejected;
    capture.maps = maps;
    capture
}

/// Symbolizes each distinct stack once and names the owner's frame.
fn symbolize_capture(pid: u32, capture: WireCapture, summary: &mut WireSummary) -> Vec<Execution> {
    summary.connections = capture.seen_fds.len() as u64;
    summary.tls_connections = capture.tls_fds.len() as u64;
    summary.dropped_executions = capture.dropped_executions;
    let raw: Vec<RawCpuStack> = capture
        .stack_list
        .iter()
        .map(|user| RawCpuStack::call_site(pid, user.clone()))
        .collect();
    let profile = StackSymbolizer::new().cpu_profile(&raw, &capture.maps, &capture.exe);
    let sites: Vec<Option<CallSite>> = profile
        .stacks
        .iter()
        .map(|s| {
            let frame = s.frames.iter().rev().map(|id| profile.frame(*id)).find(|f| f.origin == Origin::Owner)?;
            Some(CallSite { function: frame.display_name(), file: frame.file.clone(), line: frame.line })
        })
        .collect();
    let mut executions: Vec<Execution> = capture
        .executions
        .into_iter()
        .map(|(ts_ns, tid, fd, sql, stack)| Execution { ts_ns, tid, fd, sql, site: stack.and_then(|i| sites.get(i).cloned().flatten()) })
        .collect();
    analysis::fill_texts_from_call_sites(&mut executions);
    summary.executions = executions.len() as u64;
    summary.executions_without_text = executions.iter().filter(|e| e.sql.is_none()).count() as u64;
    summary.executions_with_call_site = executions.iter().filter(|e| e.site.is_some()).count() as u64;
    executions
}

fn site_rows(sites: &[(CallSite, u64)]) -> Vec<CallSiteRow> {
    sites
        .iter()
        .take(5)
        .map(|(s, n)| CallSiteRow { function: s.function.clone(), file: s.file.clone(), line: s.line, executions: *n })
        .collect()
}

/// Call sites of a statement: exact text, or a wire text that is a prefix
/// of it (long statements are captured truncated).
fn sites_for(query: &str, sites: &std::collections::BTreeMap<String, Vec<(CallSite, u64)>>) -> Vec<CallSiteRow> {
    let query = analysis::normalize_sql(query);
    if let Some(s) = sites.get(&query) {
        return site_rows(s);
    }
    let mut merged: Vec<(CallSite, u64)> = Vec::new();
    for (sql, s) in sites {
        if sql.len() >= 32 && query.starts_with(sql.as_str()) {
            merged.extend(s.iter().cloned());
        }
    }
    merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    site_rows(&merged)
}

fn statement_rows(
    start: Option<&HashMap<i64, StatementStat>>,
    end: Option<&HashMap<i64, StatementStat>>,
    executions: &[Execution],
    sites: &std::collections::BTreeMap<String, Vec<(CallSite, u64)>>,
) -> Vec<StatementRow> {
    let mut rows = Vec::new();
    if let (Some(start), Some(end)) = (start, end) {
        let mut total_all = 0.0;
        for (id, e) in end {
            let s = start.get(id);
            let calls = e.calls - s.map_or(0, |s| s.calls);
            if calls <= 0 {
                continue;
            }
            let total = e.total_ms - s.map_or(0.0, |s| s.total_ms);
            total_all += total.max(0.0);
            rows.push(StatementRow {
                query: e.query.clone(),
                calls,
                total_ms: Some(crate::report::round2(total)),
                mean_ms: Some(crate::report::round2(total / calls as f64)),
                max_ms: Some(crate::report::round2(e.max_ms)),
                max_since_reset: s.is_some(),
                rows: Some(e.rows - s.map_or(0, |s| s.rows)),
                time_pct: None,
                call_sites: sites_for(&e.query, sites),
                recommendation: String::new(),
            });
        }
        for r in &mut rows {
            r.time_pct = r.total_ms.map(|t| if total_all > 0.0 { crate::report::round2(t * 100.0 / total_all) } else { 0.0 });
        }
        rows.sort_by(|a, b| b.total_ms.partial_cmp(&a.total_ms).unwrap_or(std::cmp::Ordering::Equal).then(a.query.cmp(&b.query)));
    } else {
        // No statistics: the wire's own counts.
        let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
        for e in executions {
            if let Some(sql) = &e.sql {
                *counts.entry(sql).or_default() += 1;
            }
        }
        for (sql, calls) in counts {
            rows.push(StatementRow {
                query: sql.to_string(),
                calls,
                total_ms: None,
                mean_ms: None,
                max_ms: None,
                max_since_reset: false,
                rows: None,
                time_pct: None,
                call_sites: sites_for(sql, sites),
                recommendation: String::new(),
            });
        }
        rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.query.cmp(&b.query)));
    }
    rows.truncate(STATEMENT_ROWS);
    rows
}

fn table_rows(start: &[TableStat], end: &[TableStat]) -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = end
        .iter()
        .map(|e| {
            let s = start.iter().find(|s| s.schema == e.schema && s.table == e.table);
            let d = |f: fn(&TableStat) -> i64| f(e) - s.map_or(0, f);
            TableRow {
                schema: e.schema.clone(),
                table: e.table.clone(),
                rows: e.live_rows,
                seq_scans: d(|t| t.seq_scan),
                seq_rows_read: d(|t| t.seq_tup_read),
                idx_scans: d(|t| t.idx_scan),
                idx_rows_fetched: d(|t| t.idx_tup_fetch),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.seq_rows_read.cmp(&a.seq_rows_read).then(a.table.cmp(&b.table)));
    rows
}

fn index_rows(start: &[IndexStat], end: &[IndexStat]) -> Vec<IndexRow> {
    let mut rows: Vec<IndexRow> = end
        .iter()
        .map(|e| {
            let before = start.iter().find(|s| s.schema == e.schema && s.index == e.index).map_or(0, |s| s.idx_scan);
            IndexRow {
                schema: e.schema.clone(),
                table: e.table.clone(),
                index: e.index.clone(),
                scans: e.idx_scan - before,
                scans_total: e.idx_scan,
                size_bytes: e.size_bytes,
                definition: e.definition.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.table.cmp(&b.table).then(a.index.cmp(&b.index)));
    rows
}

/// Explains the heaviest read statements and proposes an index for each
/// filtered sequential scan of a large table that no index covers.
async fn missing_indexes(db: &mut Db, statements: &[StatementRow], tables: &[TableStat], indexes: &[IndexStat]) -> Vec<MissingIndex> {
    let mut out: Vec<MissingIndex> = Vec::new();
    let candidates = statements.iter().filter(|s| {
        let q = s.query.trim_start().to_ascii_uppercase();
        (q.starts_with("SELECT") || q.starts_with("WITH")) && s.mean_ms.unwrap_or(0.0) >= 1.0
    });
    let mut columns_cache: HashMap<(String, String), HashMap<i32, String>> = HashMap::new();
    for stmt in candidates.take(EXPLAINED_STATEMENTS) {
        let Ok(plan) = db.explain_generic(&stmt.query).await else { continue };
        for scan in advice::seq_scans(&plan) {
            let rows = tables.iter().find(|t| t.schema == scan.schema && t.table == scan.table).map_or(0, |t| t.live_rows);
            let columns = scan.index_columns();
            if rows < MIN_TABLE_ROWS || columns.is_empty() {
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

fn recommendation(row: &StatementRow, n_plus_one: &[NPlusOne], missing: &[MissingIndex]) -> String {
    let query = analysis::normalize_sql(&row.query);
    if let Some(n) = n_plus_one.iter().find(|n| n.query == query) {
        return format!(
            "N+1 from {}: batch into one query (`= ANY($1)` or a JOIN)",
            n.call_site.function
        );
    }
    if let Some(m) = missing.iter().find(|m| m.query == row.query) {
        return format!("Add index on {} ({})", m.table, m.columns.join(", "));
    }
    match row.mean_ms {
        Some(mean) if mean >= 10.0 => "Slow: check the plan with EXPLAIN (ANALYZE, BUFFERS)".into(),
        _ => "-".into(),
    }
}
