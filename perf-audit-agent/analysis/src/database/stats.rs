//! What PostgreSQL's statistics views said, as plain values (read by the
//! agent's `database::stats`).

/// Cumulative counters of one statement (summed over users and the
/// top-level/nested split of PG 14+).
#[derive(Debug, Clone, PartialEq)]
pub struct StatementStat {
    pub query: String,
    pub calls: i64,
    pub total_ms: f64,
    pub max_ms: f64,
    pub rows: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableStat {
    pub schema: String,
    pub table: String,
    pub seq_scan: i64,
    pub seq_tup_read: i64,
    pub idx_scan: i64,
    pub idx_tup_fetch: i64,
    pub live_rows: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexStat {
    pub schema: String,
    pub table: String,
    pub index: String,
    pub idx_scan: i64,
    pub idx_tup_read: i64,
    pub size_bytes: i64,
    pub unique: bool,
    pub primary: bool,
    pub definition: String,
    /// Column numbers (`pg_index.indkey`), 0 for an expression.
    pub columns: Vec<i32>,
    /// Expressions and predicate, compared for duplicates.
    pub expressions: String,
    pub predicate: String,
}

/// Why statement statistics are not available.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementsUnavailable {
    /// `CREATE EXTENSION` was never run in this database.
    NotCreated,
    /// The extension exists but the library is not preloaded.
    NotPreloaded,
    Other(String),
}

impl StatementsUnavailable {
    /// One line: what is missing, what is skipped, and the fix.
    pub fn message(&self) -> String {
        let what = match self {
            StatementsUnavailable::NotCreated => "the pg_stat_statements extension is not created in this database".to_string(),
            StatementsUnavailable::NotPreloaded => "pg_stat_statements is not loaded via shared_preload_libraries".to_string(),
            StatementsUnavailable::Other(e) => format!("pg_stat_statements cannot be read ({e})"),
        };
        format!("{what}: query timings are not available (statements and N+1 patterns come from the wire alone); to enable it, {ENABLE_PG_STAT_STATEMENTS}")
    }
}

/// The exact lines that enable `pg_stat_statements`.
pub const ENABLE_PG_STAT_STATEMENTS: &str = "add `shared_preload_libraries = 'pg_stat_statements'` to postgresql.conf, restart PostgreSQL, then run `CREATE EXTENSION IF NOT EXISTS pg_stat_statements;` in the service's database";
