//! The database section's tables, from the two statistics snapshots and the
//! statements seen on the wire. Pure: the agent's `database` collector
//! reads the server and the kernel, this turns what it read into rows.

use std::collections::{BTreeMap, HashMap};

use super::{
    advice,
    analysis::{self, CallSite, Execution, NPlusOne},
    stats::{IndexStat, StatementStat, TableStat},
};
use super::schema::{CallSiteRow, DuplicateIndex, IndexRow, MissingIndex, StatementRow, TableRow, UnusedIndex};
use crate::profile::round2;

/// Rows of the statements table.
pub const STATEMENT_ROWS: usize = 20;
/// Tables smaller than this are scanned faster than through an index.
pub const MIN_TABLE_ROWS: i64 = 10_000;

pub fn qualified(schema: &str, name: &str) -> String {
    if schema == "public" { name.to_string() } else { format!("{schema}.{name}") }
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
fn sites_for(query: &str, sites: &BTreeMap<String, Vec<(CallSite, u64)>>) -> Vec<CallSiteRow> {
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
    if merged.is_empty() {
        // pg_stat_statements replaced the text's constants with $n.
        for (sql, s) in sites {
            if same_statement(&query, sql) {
                merged.extend(s.iter().cloned());
            }
        }
    }
    merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    site_rows(&merged)
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    /// A number or a quoted string.
    Literal(&'a str),
    /// `$n`.
    Param,
    Punct(char),
}

fn tokens(sql: &str) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'\'' {
            // 'it''s': a doubled quote stays inside.
            i += 1;
            while i < b.len() {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push(Token::Literal(&sql[start..i]));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Token::Literal(&sql[start..i]));
        } else if c == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Token::Param);
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'"' || !c.is_ascii() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'"' || b[i] == b'.' || !b[i].is_ascii()) {
                i += 1;
            }
            out.push(Token::Word(&sql[start..i]));
        } else {
            i += 1;
            out.push(Token::Punct(c as char));
        }
    }
    out
}

/// Executions seen on the wire of the statement pg_stat_statements
/// names `query`: its text, a prefix of it (long texts are captured
/// truncated), or the same tokens with constants for `$n`.
fn seen_on_wire(query: &str, texts: &BTreeMap<&str, u64>) -> u64 {
    let query = analysis::normalize_sql(query);
    texts
        .iter()
        .filter(|(sql, _)| **sql == query || (sql.len() >= 32 && query.starts_with(**sql)) || same_statement(&query, sql))
        .map(|(_, n)| *n)
        .sum()
}

/// Calls pg_stat_statements counted during the audit and how many of them
/// the wire saw, over the statements it lists that are not the agent's
/// own (`/* perf-audit */`); `None` without statistics.
pub fn wire_coverage(rows: &[StatementRow]) -> Option<(i64, u64)> {
    let counted: Vec<&StatementRow> = rows.iter().filter(|r| r.seen_on_wire.is_some() && !r.query.contains("/* perf-audit */")).collect();
    (!counted.is_empty()).then(|| (counted.iter().map(|r| r.calls).sum(), counted.iter().map(|r| r.seen_on_wire.unwrap_or(0)).sum()))
}

/// The SQL rewrites the findings would show (`dialect`), for the agent to
/// have the server check before the report is written: the batched form
/// of every N+1 statement and of the statements inside per-item
/// transactions, and the paged form of every SELECT the unbounded-result
/// rule looks at. Deduplicated, in a stable order.
pub fn rewrites_wanted(db: &super::schema::DatabaseSection) -> Vec<String> {
    use super::{dialect, thresholds};
    let mut out: Vec<String> = Vec::new();
    let mut push = |sql: Option<String>| {
        if let Some(sql) = sql
            && !out.contains(&sql) {
                out.push(sql);
            }
    };
    for n in &db.n_plus_one {
        if n.query != analysis::UNKNOWN_TEXT && !analysis::is_transaction_control(&n.query) {
            push(dialect::batched_query(&n.query));
        }
    }
    for t in &db.per_item_transactions {
        for s in t.statements.iter().filter(|s| !analysis::is_transaction_control(s)) {
            push(dialect::batched_query(s));
        }
    }
    for s in &db.statements {
        let rows_per_call = s.rows.map_or(0.0, |r| r as f64 / s.calls.max(1) as f64);
        if thresholds::is_select(&s.query)
            && !thresholds::bounded(&s.query)
            && s.calls >= thresholds::UNBOUNDED_MIN_CALLS
            && rows_per_call >= thresholds::UNBOUNDED_MIN_ROWS_PER_CALL
        {
            push(dialect::paged_query(&s.query));
        }
    }
    out
}

/// `stat` (a pg_stat_statements text, constants replaced by `$n`) is the
/// statement `wire` (a text as the service sent it): the same tokens, a
/// `$n` standing for a constant (optionally negative) or a parameter.
fn same_statement(stat: &str, wire: &str) -> bool {
    let (s, w) = (tokens(stat), tokens(wire));
    let mut j = 0;
    for t in &s {
        let Some(u) = w.get(j) else { return false };
        match (t, u) {
            (Token::Param, Token::Literal(_) | Token::Param) => j += 1,
            (Token::Param, Token::Punct('-')) if matches!(w.get(j + 1), Some(Token::Literal(_))) => j += 2,
            (a, b) if a == b => j += 1,
            _ => return false,
        }
    }
    j == w.len()
}

pub fn statement_rows(
    start: Option<&HashMap<i64, StatementStat>>,
    end: Option<&HashMap<i64, StatementStat>>,
    executions: &[Execution],
    sites: &BTreeMap<String, Vec<(CallSite, u64)>>,
) -> Vec<StatementRow> {
    let mut rows = Vec::new();
    if let (Some(start), Some(end)) = (start, end) {
        let mut texts: BTreeMap<&str, u64> = BTreeMap::new();
        for e in executions {
            if let Some(sql) = &e.sql {
                *texts.entry(sql).or_default() += 1;
            }
        }
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
                total_ms: Some(round2(total)),
                mean_ms: Some(round2(total / calls as f64)),
                max_ms: Some(round2(e.max_ms)),
                max_since_reset: s.is_some(),
                rows: Some(e.rows - s.map_or(0, |s| s.rows)),
                time_pct: None,
                call_sites: sites_for(&e.query, sites),
                recommendation: String::new(),
                seen_on_wire: Some(seen_on_wire(&e.query, &texts)),
            });
        }
        for r in &mut rows {
            r.time_pct = r.total_ms.map(|t| if total_all > 0.0 { round2(t * 100.0 / total_all) } else { 0.0 });
        }
        rows.sort_by(|a, b| b.total_ms.partial_cmp(&a.total_ms).unwrap_or(std::cmp::Ordering::Equal).then(a.query.cmp(&b.query)));
    } else {
        // No statistics: the wire's own counts.
        let mut counts: BTreeMap<&str, i64> = Default::default();
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
                seen_on_wire: None,
            });
        }
        rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.query.cmp(&b.query)));
    }
    rows.truncate(STATEMENT_ROWS);
    rows
}

pub fn table_rows(start: &[TableStat], end: &[TableStat]) -> Vec<TableRow> {
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

pub fn index_rows(start: &[IndexStat], end: &[IndexStat]) -> Vec<IndexRow> {
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

pub fn recommendation(row: &StatementRow, n_plus_one: &[NPlusOne], missing: &[MissingIndex]) -> String {
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

/// Indexes never scanned, with the statement that drops them.
pub fn unused_index_rows(indexes: &[IndexStat]) -> Vec<UnusedIndex> {
    advice::unused(indexes)
        .into_iter()
        .map(|i| UnusedIndex {
            schema: i.schema.clone(),
            table: i.table.clone(),
            index: i.index.clone(),
            size_bytes: i.size_bytes,
            definition: i.definition.clone(),
            drop_sql: format!("DROP INDEX CONCURRENTLY {};", qualified(&i.schema, &i.index)),
            ..Default::default()
        })
        .collect()
}

/// Indexes whose columns another index already covers.
pub fn duplicate_index_rows(indexes: &[IndexStat]) -> Vec<DuplicateIndex> {
    advice::duplicates(indexes)
        .into_iter()
        .map(|(a, b)| DuplicateIndex {
            table: a.table.clone(),
            index: a.index.clone(),
            duplicate_of: b.index.clone(),
            size_bytes: a.size_bytes,
            drop_sql: format!("DROP INDEX CONCURRENTLY {};", qualified(&a.schema, &a.index)),
        })
        .collect()
}

#[cfg(test)]
mod same_statement_tests {
    use super::*;

    #[test]
    fn pg_stat_statements_texts_match_the_statements_their_constants_came_from() {
        let stat = "SELECT id, name FROM users WHERE country = $1 ORDER BY signup_at DESC LIMIT $2";
        assert!(same_statement(stat, "SELECT id, name FROM users WHERE country = $1 ORDER BY signup_at DESC LIMIT 20"));
        assert!(same_statement("SELECT $1 - x FROM t WHERE a = $2", "SELECT 'it''s' - x FROM t WHERE a = -1.5"));
        assert!(!same_statement(stat, "SELECT id, name FROM users WHERE country = $1 ORDER BY signup_at DESC"));
        assert!(!same_statement(stat, "SELECT id, name FROM users WHERE city = $1 ORDER BY signup_at DESC LIMIT 20"));
        assert!(!same_statement("SELECT a FROM t LIMIT 20", "SELECT a FROM t LIMIT 21"));
    }
}
