//! The thresholds behind the database advice, stated so a report can say
//! why it advised something, and why it advised nothing. Pure.

use super::schema::{DatabaseSection, TableRow, UnusedIndex};

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

/// How the agent asks whether a seen statement would use an index once its
/// table is large. PostgreSQL 15 has no `EXPLAIN (GENERIC_PLAN)`, and on a
/// small table the planner picks a sequential scan whatever the indexes,
/// so the statistics alone cannot tell. With sequential scans priced out
/// (`enable_seqscan = off` adds a penalty to their cost, it forbids
/// nothing) the planner compares only the other paths, which is the
/// comparison it makes once a sequential scan of the grown table costs
/// more than reading the few matching rows through an index. So each
/// statement seen on the index's table (wire text or pg_stat_statements)
/// is prepared and its generic plan explained (`EXPLAIN EXECUTE` with
/// NULL parameters, under `plan_cache_mode = force_generic_plan`; PG 16+:
/// `EXPLAIN (GENERIC_PLAN)`), in a transaction that is rolled back. When
/// that plan reads through the index, no drop is advised. This errs on
/// the side of keeping an index: a filter matching most of the table would
/// still be a sequential scan at scale, but a wrong drop costs a
/// sequential scan per query and a kept index only its space and writes.
pub const AT_SCALE_METHOD: &str = "each statement seen on its table planned with sequential scans priced out (`SET LOCAL enable_seqscan = off`, generic plan, in a rolled-back transaction) does not read through it";

/// The thresholds of an unused-index advice, as a sentence.
pub fn unused_rule() -> String {
    format!(
        "no scan since statistics were reset, not backing a primary-key or unique constraint, on a table of at least {UNUSED_MIN_TABLE_ROWS} rows read at least {UNUSED_MIN_TABLE_SCANS} times during an audit of at least {UNUSED_MIN_WINDOW_S:.0} s, and {AT_SCALE_METHOD}"
    )
}

/// The statements of `queries` that name `table` (as a word, schema
/// prefix or quotes allowed) and that PostgreSQL can prepare and explain.
pub fn statements_on_table<'a>(queries: impl IntoIterator<Item = &'a str>, table: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for q in queries {
        let first = q.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        if !matches!(first.as_str(), "SELECT" | "WITH" | "UPDATE" | "DELETE" | "INSERT" | "MERGE" | "VALUES" | "TABLE") {
            continue;
        }
        let names = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '"'))
            .map(|w| w.rsplit('.').next().unwrap_or(w).trim_matches('"'));
        if names.into_iter().any(|w| w.eq_ignore_ascii_case(table)) && !out.contains(&q) {
            out.push(q);
        }
    }
    out
}

/// Whether an EXPLAIN (FORMAT JSON) plan of `sql` reads through `index`
/// (defined by `definition`, `pg_get_indexdef`) for what it is: a node on
/// the index with an index condition (index, index-only and bitmap index
/// scans), or a scan without one that serves the statement's ORDER BY
/// (its first key is the index's first column). A full scan of an index
/// with neither is only the planner's substitute for the sequential scan
/// that was priced out (any index on the table would do), not a use.
pub fn plan_uses_index(plan: &serde_json::Value, index: &str, definition: &str, sql: &str) -> bool {
    let orders = || {
        let first = definition.rfind(" (").map(|i| &definition[i + 2..]).and_then(|c| c.split([',', ')', ' ']).next()).unwrap_or_default().trim_matches('"');
        let upper = sql.to_ascii_uppercase();
        let key = upper.rfind("ORDER BY").map(|i| &sql[i + 8..]).and_then(|k| k.split([',', ' ', ')']).find(|w| !w.is_empty())).unwrap_or_default();
        let key = key.rsplit('.').next().unwrap_or(key).trim_matches('"');
        !first.is_empty() && key.eq_ignore_ascii_case(first)
    };
    fn walk(v: &serde_json::Value, index: &str, orders: &dyn Fn() -> bool) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                let on_it = m.get("Index Name").and_then(|v| v.as_str()).is_some_and(|n| n == index);
                (on_it && (m.contains_key("Index Cond") || orders())) || m.values().any(|v| walk(v, index, orders))
            }
            serde_json::Value::Array(a) => a.iter().any(|v| walk(v, index, orders)),
            _ => false,
        }
    }
    walk(plan, index, &orders)
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
    if let Some(sql) = &u.used_at_scale_by {
        return Err(format!(
            "a statement seen during the audit would use it once {} is large: `{sql}` reads through it when planned with sequential scans priced out (its statistics show no scan only because a sequential scan of today's table is cheaper)",
            u.table
        ));
    }
    if u.statements_unplanned > 0 {
        return Err(format!(
            "{} of the statements seen on {} could not be planned, so whether they would use it at scale is unknown",
            u.statements_unplanned, u.table
        ));
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
    let plans = if u.plan_checked {
        format!("; none of the {} statements seen on it would read through it at scale (planned with sequential scans priced out)", u.statements_planned)
    } else {
        String::new()
    };
    Ok(format!(
        "{} has {} rows and was read {scans} times during the {:.0} s audit ({} sequential, {} index scans), none through this index{plans}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DatabaseSection, TableRow, UnusedIndex};

    #[test]
    fn the_statements_on_a_table_are_the_preparable_ones_naming_it() {
        let seen = [
            "SELECT id FROM tags WHERE labels @> $1",
            "SELECT id FROM public.\"tags\" t JOIN posts p ON p.tag = t.id",
            "SELECT id FROM tags_archive",
            "UPDATE tags SET n = n + 1 WHERE id = $1",
            "LOCK TABLE tags IN EXCLUSIVE MODE",
            "SELECT id FROM tags WHERE labels @> $1",
        ];
        assert_eq!(
            statements_on_table(seen.iter().copied(), "tags"),
            vec![seen[0], seen[1], seen[3]]
        );
    }

    #[test]
    fn a_plan_reads_through_an_index_at_any_depth() {
        // PG 15, the tag search on a 60-row table with enable_seqscan = off.
        let plan: serde_json::Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Bitmap Heap Scan", "Relation Name": "tags", "Plans": [
                {"Node Type": "Bitmap Index Scan", "Index Name": "tags_labels_gin", "Index Cond": "(labels @> $1)"}]}}]"#,
        )
        .unwrap();
        let gin = "CREATE INDEX tags_labels_gin ON public.tags USING gin (labels)";
        let search = "SELECT id FROM tags WHERE labels @> $1";
        assert!(plan_uses_index(&plan, "tags_labels_gin", gin, search));
        assert!(!plan_uses_index(&plan, "tags_pkey", "CREATE UNIQUE INDEX tags_pkey ON public.tags USING btree (id)", search));
        let seq: serde_json::Value = serde_json::from_str(r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "tags", "Filter": "(labels @> $1)"}}]"#).unwrap();
        assert!(!plan_uses_index(&seq, "tags_labels_gin", gin, search));
        // The demo's country search with sequential scans priced out: a full
        // scan of the last-login index stands in for the sequential scan
        // (no condition, and the rows are sorted by signup_at): not a use.
        let stand_in: serde_json::Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Limit", "Plans": [{"Node Type": "Sort", "Sort Key": ["signup_at DESC"], "Plans": [
                {"Node Type": "Index Scan", "Index Name": "users_last_login_at_idx", "Relation Name": "users", "Filter": "(country = $1)"}]}]}}]"#,
        )
        .unwrap();
        let last_login = "CREATE INDEX users_last_login_at_idx ON public.users USING btree (last_login_at)";
        let by_country = "SELECT id, name, country FROM users WHERE country = $1 ORDER BY signup_at DESC LIMIT 20";
        assert!(!plan_uses_index(&stand_in, "users_last_login_at_idx", last_login, by_country));
        // ... but a scan without condition that gives the ORDER BY is one.
        assert!(plan_uses_index(&stand_in, "users_last_login_at_idx", last_login, "SELECT id FROM users ORDER BY last_login_at DESC LIMIT 20"));
    }

    #[test]
    fn an_index_a_seen_statement_would_use_at_scale_is_never_advised_dropped() {
        let big = TableRow { schema: "public".into(), table: "orders".into(), rows: 2_000_000, seq_scans: 900, idx_scans: 4_000, ..Default::default() };
        let index = UnusedIndex { schema: "public".into(), table: "orders".into(), index: "orders_note_idx".into(), plan_checked: true, statements_planned: 3, ..Default::default() };
        let db = DatabaseSection { window_s: 60.0, tables: vec![big], unused_indexes: vec![index.clone()], ..Default::default() };
        let ok = unused_index_evidence(&db, &index).unwrap();
        assert!(ok.contains("none of the 3 statements seen on it would read through it at scale"), "{ok}");
        let used = UnusedIndex { used_at_scale_by: Some("SELECT id FROM orders WHERE note = $1".into()), ..index.clone() };
        let why = unused_index_evidence(&db, &used).unwrap_err();
        assert!(why.contains("`SELECT id FROM orders WHERE note = $1` reads through it"), "{why}");
        let unknown = UnusedIndex { statements_unplanned: 1, ..index };
        assert!(unused_index_evidence(&db, &unknown).unwrap_err().contains("1 of the statements seen on orders could not be planned"));
        assert!(unused_rule().contains("enable_seqscan = off"));
    }
}
