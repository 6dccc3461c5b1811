//! `report.json`'s `database` section.

use crate::database::analysis::NPlusOne;

/// `report.json`'s `database` section.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Transactions opened once per item of a loop.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_item_transactions: Vec<crate::database::analysis::PerItemTransaction>,
    /// Requests making many sequential round trips from different call sites.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chatty_requests: Vec<crate::database::chatty::ChattyRequest>,
    /// Transactions per opening function: time held, idle in transaction,
    /// what they waited on (`database::transactions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transactions: Vec<crate::database::transactions::HeldTransactions>,
    /// Call sites reading the same rows again within a unit of work.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeated_reads: Vec<crate::database::rereads::RepeatedRead>,
    /// The target's connection pools: busy share, holders, queued waits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<crate::database::pool::PoolPressure>,
    pub wire: WireSummary,
    /// What the connected role holds beyond what the audit needs (`None`:
    /// not connected, or not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<RolePrivileges>,
    /// Statement texts whose plan was not inspected because the agent
    /// refused to send them (not one plannable statement: see
    /// `database::sql_text`), with why; at most `MAX_PLANS_NOT_INSPECTED`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plans_not_inspected: Vec<PlanNotInspected>,
    /// The SQL rewrites the findings would suggest, each parsed and
    /// planned by the server before it is shown (`dialect::checked`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<crate::database::dialect::CheckedRewrite>,
}

/// Entries kept in `plans_not_inspected`.
pub const MAX_PLANS_NOT_INSPECTED: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct PlanNotInspected {
    /// The text, cut to 200 characters.
    pub query: String,
    pub reason: String,
}

/// The connected role's privileges, measured from `pg_roles` and
/// `has_table_privilege`: the audit needs `pg_read_all_stats` (or
/// `pg_monitor`) and CONNECT, plus SELECT for plans, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct RolePrivileges {
    pub role: String,
    pub superuser: bool,
    /// Member of `pg_read_all_stats` (directly or through `pg_monitor`).
    pub read_all_stats: bool,
    /// User tables the role owns (or is a member of their owner).
    pub owned_tables: u64,
    /// User tables it may INSERT, UPDATE, DELETE or TRUNCATE.
    pub writable_tables: u64,
    /// Up to 5 of them.
    pub writable_examples: Vec<String>,
    /// Superuser, or owns or can write a table.
    pub more_than_needed: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
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
    /// Executions of this statement seen on the wire during the audit,
    /// to reconcile with `calls` (pg_stat_statements counts every client's
    /// calls; the wire only the target's); `None` without statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_on_wire: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CallSiteRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Executions traced from this call site.
    pub executions: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
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

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
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

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
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

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct UnusedIndex {
    pub schema: String,
    pub table: String,
    pub index: String,
    pub size_bytes: i64,
    pub definition: String,
    /// Rows written to the table during the audit (each maintains the index).
    pub drop_sql: String,
    /// Whether the statements seen on its table were planned with
    /// sequential scans priced out (`database::thresholds::AT_SCALE_METHOD`).
    pub plan_checked: bool,
    /// A statement seen during the audit whose plan, the table being large,
    /// reads through this index: never advised dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_at_scale_by: Option<String>,
    /// Statements seen on its table that were planned for that check, and
    /// those that could not be (then whether they need it is unknown).
    pub statements_planned: u64,
    pub statements_unplanned: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct DuplicateIndex {
    pub table: String,
    pub index: String,
    pub duplicate_of: String,
    pub size_bytes: i64,
    pub drop_sql: String,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WireSummary {
    /// Whether the target's writes to the database were traced.
    pub traced: bool,
    /// Server answers seen (reads ending with ReadyForQuery), and
    /// pg_stat_activity samples of the target's connections taken for
    /// transactions (of which `idle in transaction`).
    #[serde(skip_serializing_if = "is_zero")]
    pub answers: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub transaction_activity_samples: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub idle_in_transaction_samples: u64,
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
    /// Executions of statements prepared before the audit whose text was
    /// recovered from the server's `pg_stat_activity` (see
    /// `database::recovery`), and the statement names (per connection)
    /// learnt that way.
    pub executions_text_from_activity: u64,
    pub statements_text_from_activity: u64,
    /// `pg_stat_activity` reads made to recover texts.
    pub activity_polls: u64,
    /// Executions whose text was taken from another execution of their call
    /// site (a site that issued one statement only).
    pub executions_text_from_call_site: u64,
    /// Writes sent right after the same thread read a database answer, with
    /// nothing in between (the next step of one task: see
    /// `database::analysis`): the links of the chains of round trips.
    pub writes_after_answer: u64,
    /// How N+1 patterns are recognised.
    pub n_plus_one_rule: String,
    /// Generic helpers of the owner's code that statements pass through
    /// (`database::analysis::resolve_wrappers`): the call sites are the
    /// frames outside them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wrappers: Vec<crate::database::analysis::Wrapper>,
    /// How a wrapper is told from a call site (`database::analysis::wrapper_rule`).
    pub wrapper_rule: String,
    /// Why some executions are not tied to the owner's code, and the fix
    /// (see `database::analysis::untied_reason`).
    pub untied_reason: Option<String>,
    /// Writes whose bytes did not start with a frontend message (garbage,
    /// or a message cut mid-header): nothing of them was used.
    #[serde(skip_serializing_if = "is_zero")]
    pub unparsed_writes: u64,
    /// Writes whose parsing failed (a bug in the agent: each is skipped),
    /// plus one if the wire task itself failed (a note says why; what it
    /// had gathered is then lost).
    #[serde(skip_serializing_if = "is_zero")]
    pub parser_failures: u64,
    /// Protocol state forgotten at the agent's bounds (`wire::MAX_PORTALS`,
    /// `MAX_STATEMENTS` per connection, `MAX_CONNECTIONS`): later
    /// executions of a forgotten name have no text.
    #[serde(skip_serializing_if = "is_zero")]
    pub evicted_portals: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub evicted_statements: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub evicted_connections: u64,
    /// Executions per client library (`dialect::Driver` labels), from the
    /// frames of the stacks that wrote them.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub drivers: std::collections::BTreeMap<String, u64>,
    /// Executions whose Execute message lay past a write's captured prefix
    /// (a large Bind, a pipelined batch), counted in the kernel by hopping
    /// message headers; included in `executions`.
    pub executions_beyond_capture: u64,
}
