//! The thresholds behind the database advice, stated so a report can say
//! why it advised something, and why it advised nothing. Pure.

use crate::report::{DatabaseSection, TableRow, UnusedIndex};

pub use super::section::MIN_TABLE_ROWS;

/// A statement is EXPLAINed for a missing index from this mean time (ms).
pub const MISSING_INDEX_MIN_MEAN_MS: f64 = 1.0;

/// An index never scanned is advised dropped only on a table at least this
/// large (on a small table the planner prefers a sequential scan, so an
/// index a query needs at scale looks unused) ...
pub const UNUSED_MIN_TABLE_ROWS: i64 = MIN_TABLE_ROWS;
/// ... that the workload read at least this many times during the audit
/// (queries on it ran and none chose the index) ...
pub const UNUSED_MIN_TABLE_SCANS: i64 = 100;
/// ... over an audit at least this long (seconds).
pub const UNUSED_MIN_WINDOW_S: f64 = 10.0;

/// The thresholds of an unused-index advice, as a sentence.
pub fn unused_rule() -> String {
    format!(
        "no scan since statistics were reset, not backing a primary-key or unique constraint, on a table of at least {UNUSED_MIN_TABLE_ROWS} rows read at least {UNUSED_MIN_TABLE_SCANS} times during an audit of at least {UNUSED_MIN_WINDOW_S:.0} s"
    )
}

fn table<'a>(db: &'a DatabaseSection, schema: &str, name: &str) -> Option<&'a TableRow> {
    db.tables.iter().find(|t| t.table == name && (t.schema == schema || t.schema.is_empty() || schema.is_empty()))
}

/// Whether an index seen unused has the evidence to be dropped; the reason
/// when not. Indexes backing a constraint never reach here (see
/// `advice::unused`), and a definition with UNIQUE is refused again.
pub fn unused_index_evidence(db: &DatabaseSection, u: &UnusedIndex) -> Result<String, String> {
    if u.definition.to_ascii_uppercase().contains("UNIQUE") {
        return Err(format!("{} backs a unique constraint", u.index));
    }
    let Some(t) = table(db, &u.schema, &u.table) else {
        return Err(format!("no statistics for table {}", u.table));
    };
    let scans = t.seq_scans + t.idx_scans;
    if t.rows < UNUSED_MIN_TABLE_ROWS {
        return Err(format!("{} has {} rows (< {UNUSED_MIN_TABLE_ROWS}): a small table is scanned sequentially whatever its indexes", u.table, t.rows));
    }
    if scans < UNUSED_MIN_TABLE_SCANS {
        return Err(format!("{} was read {scans} times during the audit (< {UNUSED_MIN_TABLE_SCANS}): too few queries to tell", u.table));
    }
    if db.window_s < UNUSED_MIN_WINDOW_S {
        return Err(format!("the audit lasted {:.0} s (< {UNUSED_MIN_WINDOW_S:.0} s)", db.window_s));
    }
    Ok(format!(
        "{} has {} rows and was read {scans} times during the {:.0} s audit ({} sequential, {} index scans), none through this index",
        u.table, t.rows, db.window_s, t.seq_scans, t.idx_scans
    ))
}

/// The unused indexes that have the evidence to be dropped.
pub fn droppable(db: &DatabaseSection) -> Vec<(&UnusedIndex, String)> {
    db.unused_indexes.iter().filter_map(|u| unused_index_evidence(db, u).ok().map(|e| (u, e))).collect()
}

/// Why no missing index was advised: the criteria, and the table that came
/// closest (the most rows read by sequential scans).
pub fn no_missing_index_reason(db: &DatabaseSection) -> String {
    let criteria = format!(
        "advised for a SELECT with a mean of at least {MISSING_INDEX_MIN_MEAN_MS} ms whose plan scans a table of at least {MIN_TABLE_ROWS} rows sequentially with a filter that no index covers"
    );
    match db.tables.iter().filter(|t| t.seq_scans > 0).max_by_key(|t| t.seq_rows_read) {
        None => format!("none: no sequential scan of any table during the audit ({criteria})"),
        Some(t) if t.rows < MIN_TABLE_ROWS => format!(
            "none: no table over {MIN_TABLE_ROWS} rows had a heavy sequential scan; largest {} ({} rows, {} rows read by {} sequential scans): below the size where an index beats a scan ({criteria})",
            t.table, t.rows, t.seq_rows_read, t.seq_scans
        ),
        Some(t) => format!(
            "none: the largest sequential reader, {} ({} rows, {} rows read by {} sequential scans), was scanned by statements no index can serve (no filter, or one an index already covers, or a mean under {MISSING_INDEX_MIN_MEAN_MS} ms) ({criteria})",
            t.table, t.rows, t.seq_rows_read, t.seq_scans
        ),
    }
}

/// An unbounded result set: a SELECT without LIMIT returning at least
/// this many rows per call on average.
pub const UNBOUNDED_MIN_ROWS_PER_CALL: f64 = 1_000.0;
/// ... over at least this many calls.
pub const UNBOUNDED_MIN_CALLS: i64 = 10;

/// Whether a statement bounds its result (LIMIT, FETCH FIRST/NEXT). An
/// aggregate needs no case of its own: its rows per call stay small.
pub fn bounded(query: &str) -> bool {
    let q = format!(" {} ", query.to_ascii_uppercase().split_whitespace().collect::<Vec<_>>().join(" "));
    q.contains(" LIMIT ") || q.contains(" FETCH FIRST ") || q.contains(" FETCH NEXT ")
}

/// A SELECT (or WITH ... SELECT) statement.
pub fn is_select(query: &str) -> bool {
    let q = query.trim_start().to_ascii_uppercase();
    (q.starts_with("SELECT") || q.starts_with("WITH")) && !q.contains(" FOR UPDATE")
}

/// The table of a simple `SELECT ... FROM table ...`.
pub fn from_table(query: &str) -> Option<String> {
    let words: Vec<&str> = query.split_whitespace().collect();
    let i = words.iter().position(|w| w.eq_ignore_ascii_case("FROM"))?;
    let t = words.get(i + 1)?.trim_end_matches([';', ')', ',']);
    let t = t.rsplit('.').next().unwrap_or(t).trim_matches('"');
    (!t.is_empty() && !t.starts_with('(')).then(|| t.to_string())
}
