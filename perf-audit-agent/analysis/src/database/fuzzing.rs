//! Entry points of the fuzz targets (`fuzz/fuzz_targets/{wire,sql_text}.rs`,
//! cargo-fuzz) and of the stable replay harness (`tests/untrusted_input.rs`):
//! one definition of what each target feeds and which invariants must hold.
//! A panic here is a bug (the targets treat every panic as a crash).

use super::{advice, analysis, chatty, dialect, recovery, section, sql_text, thresholds, wire};

/// Splits a fuzz input into writes: each is a 2-byte little-endian length,
/// then that many bytes (cut at the end of the input).
pub fn writes(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let n = n.min(body.len());
        out.push(&body[..n]);
        rest = &body[n..];
    }
    out
}

/// The `wire` target: the writes of one connection parsed and fed in
/// order; bounds hold after every write; the texts seen go through the
/// statement-text helpers.
pub fn wire(data: &[u8]) {
    let mut conn = wire::Connection::default();
    for write in writes(data) {
        let (messages, garbage) = wire::parse_write(write);
        assert!(!garbage || messages.is_empty());
        assert!(!garbage || !write.is_empty());
        let _ = recovery::last_statement(&messages, |s| conn.knows(s));
        let texts: Vec<String> = messages
            .iter()
            .filter_map(|m| match m {
                wire::Message::Query { sql, .. } | wire::Message::Parse { sql, .. } => Some(sql.clone()),
                _ => None,
            })
            .collect();
        for e in conn.feed(messages) {
            if let Some(sql) = e.sql {
                statement_text(&sql);
            }
            conn.learn(&e.statement, "SELECT 1".into());
        }
        for t in &texts {
            statement_text(t);
        }
        let (statements, portals) = conn.names();
        assert!(statements <= wire::MAX_STATEMENTS && portals <= wire::MAX_PORTALS, "{statements} statements, {portals} portals");
    }
}

/// The `sql_text` target: the input as a statement text (lossy UTF-8),
/// and as an EXPLAIN JSON document when it is one.
pub fn sql_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    statement_text(&text);
    if let Ok(plan) = serde_json::from_slice::<serde_json::Value>(data) {
        for scan in advice::seq_scans(&plan) {
            let _ = scan.index_columns();
        }
        let _ = advice::total_cost(&plan);
        let _ = thresholds::plan_uses_index(&plan, "i", "CREATE INDEX i ON public.t USING btree (a)", "SELECT a FROM t ORDER BY a");
    }
}

/// Every helper that reads statement text, with the validator's invariants.
pub fn statement_text(sql: &str) {
    match sql_text::single_statement(sql) {
        Ok(one) => {
            assert!(sql.starts_with(one), "the accepted statement is a prefix of the text");
            assert!(!one.trim().is_empty());
            assert!(one.len() <= sql_text::MAX_PLANNED_SQL_BYTES);
            assert_eq!(sql_text::single_statement(one), Ok(one), "accepting is idempotent");
            assert!(!one.contains('\0'));
        }
        Err(why) => {
            let _ = why.to_string();
        }
    }
    let normalized = analysis::normalize_sql(sql);
    let _ = analysis::is_transaction_control(sql);
    let _ = analysis::is_transaction_control(&normalized);
    let _ = chatty::is_write(sql);
    let _ = thresholds::statements_on_table([sql, normalized.as_str()], "t");
    let _ = thresholds::bounded(sql);
    let _ = thresholds::is_select(sql);
    let table = thresholds::from_table(sql).unwrap_or_default();
    let (eq, range) = advice::filter_columns(sql);
    let columns: Vec<String> = eq.into_iter().chain(range).chain(sql.split_whitespace().take(3).map(str::to_string)).collect();
    let _ = advice::index_name(&table, &columns);
    let _ = advice::create_index_sql("public", &table, &columns, true);
    if let Some(create) = advice::create_index_statement(sql, &table, &columns) {
        assert!(create.starts_with("CREATE INDEX \""));
    }
    let _ = advice::quote_ident(sql);
    let _ = section::qualified(sql, &table);
    // Rewrites of a hostile text: total, and only ever one statement more
    // (`ANY(...)` or `LIMIT $n`) than the text itself.
    let frames = [sql, normalized.as_str()];
    let driver = dialect::Driver::from_frames(frames);
    if let Some(b) = dialect::batched_query(sql) {
        assert!(b.len() == sql.len() + 5 && b.contains("ANY($"), "{b}");
        for d in [Some(dialect::Driver::Sqlx), Some(dialect::Driver::Diesel), Some(dialect::Driver::SeaOrm), driver] {
            let _ = dialect::n_plus_one_fix(d, sql, Some(&b));
            let _ = dialect::transaction_fix(d, Some(&b));
        }
    }
    if let Some(p) = dialect::paged_query(sql) {
        assert!(p.contains(" LIMIT $"), "{p}");
        let _ = dialect::paged_fix(Some(dialect::Driver::Diesel), sql, Some(&p));
    }
    let _ = dialect::round_trips_fix(driver, &frames);
}
