//! The seed's "Database Performance Analysis" section of `report.md`: slow
//! queries (with the code that issues them), N+1 patterns at file:line,
//! index recommendations as one SQL block, then index usage. Pure.

use std::fmt::Write as _;

use super::markdown::{cell, location};
use crate::report::DatabaseSection;

/// Statements at or above this mean time are counted as slow.
const SLOW_MS: f64 = 10.0;

pub(super) fn render(md: &mut String, db: &DatabaseSection) {
    let _ = writeln!(md, "### Database Performance Analysis\n");
    if let Some(conn) = &db.connection {
        let _ = writeln!(
            md,
            "**Database**: `{conn}` (from {}){}{}",
            db.connection_source.as_deref().unwrap_or("?"),
            db.server_version.as_deref().map(|v| format!(", PostgreSQL {v}")).unwrap_or_default(),
            if db.private_database { ", private throwaway server" } else { ", read-only session" }
        );
    }
    if let Some(p) = db.privileges.as_ref().filter(|p| p.more_than_needed) {
        let mut more = Vec::new();
        if p.superuser {
            more.push("is a superuser".to_string());
        }
        if p.owned_tables > 0 {
            more.push(format!("owns {} tables", p.owned_tables));
        }
        if p.writable_tables > 0 {
            more.push(format!("can write {} tables ({})", p.writable_tables, p.writable_examples.join(", ")));
        }
        let _ = writeln!(
            md,
            "\n> **Connected with more privileges than the audit needs**: role `{}` {}. The audit only reads: connect with a role that has `pg_monitor` (or `pg_read_all_stats`), CONNECT and SELECT, nothing more (README, database profile).",
            p.role,
            more.join(", ")
        );
    }
    for note in &db.notes {
        let _ = writeln!(md, "\n> {note}");
    }
    let slow = db.statements.iter().filter(|s| s.mean_ms.is_some_and(|m| m >= SLOW_MS)).count();
    let (calls, total): (i64, f64) =
        db.statements.iter().filter_map(|s| Some((s.calls, s.total_ms?))).fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let _ = writeln!(md);
    if db.pg_stat_statements {
        let _ = writeln!(md, "**Slow queries detected**: {slow} (mean >= {SLOW_MS} ms, over {:.1} s)", db.window_s);
        let avg = if calls > 0 { total / calls as f64 } else { 0.0 };
        let _ = writeln!(md, "**Average query time**: {avg:.2} ms over {calls} calls");
    }
    if db.missing_indexes.is_empty() && !db.tables.is_empty() {
        let _ = writeln!(md, "**Missing indexes**: 0 — {}", crate::database::thresholds::no_missing_index_reason(db));
    } else {
        let _ = writeln!(md, "**Missing indexes**: {}", db.missing_indexes.len());
    }
    let w = &db.wire;
    if w.traced {
        let _ = writeln!(
            md,
            "**Wire tracing**: {} writes on {} connections ({} TLS), {} executions, {} tied to your code, {} without statement text; dropped: {} writes (ring buffer full), {} executions (agent bound); failures: {} payload reads, {} stack copies",
            w.writes, w.connections, w.tls_connections, w.executions, w.executions_with_call_site, w.executions_without_text,
            w.dropped_writes, w.dropped_executions, w.payload_read_failures, w.stack_failures
        );
        if let Some(reason) = &w.untied_reason {
            let _ = writeln!(md, "**Executions not tied to code**: {reason}");
        }
        if let Some((calls, seen)) = crate::database::section::wire_coverage(&db.statements) {
            let _ = writeln!(
                md,
                "**Calls seen on the wire**: {seen} of the {calls} calls pg_stat_statements counted for the statements listed below ({:.0}%; other clients of this database count there too)",
                seen as f64 * 100.0 / calls.max(1) as f64
            );
        }
        if w.executions_beyond_capture > 0 {
            let _ = writeln!(
                md,
                "**Executions past the captured bytes**: {} (their Execute lay beyond the first {} bytes of a write: a large Bind or a pipelined batch; counted in the kernel from the message headers, with the statement the write's last Bind names)",
                w.executions_beyond_capture,
                perf_audit_common::DB_PAYLOAD_BYTES
            );
        }
        if !w.drivers.is_empty() {
            let drivers: Vec<String> = w.drivers.iter().map(|(d, n)| format!("{d} ({n} executions)")).collect();
            let _ = writeln!(md, "**Drivers on the stacks**: {} (code fixes are written in the driver of the statement's stack)", drivers.join(", "));
        }
        if w.unparsed_writes > 0 || w.parser_failures > 0 || w.evicted_portals > 0 || w.evicted_statements > 0 || w.evicted_connections > 0 {
            let _ = writeln!(
                md,
                "**Wire damage**: {} writes not parsed as protocol messages (nothing used from them), {} parser failures (a bug in perf-audit: please report it); forgotten at the agent's bounds: {} portal names, {} statement names, {} connections",
                w.unparsed_writes, w.parser_failures, w.evicted_portals, w.evicted_statements, w.evicted_connections
            );
        }
        if w.executions_text_from_activity > 0 || w.executions_text_from_call_site > 0 {
            let _ = writeln!(
                md,
                "**Statements prepared before the audit**: text of {} executions ({} statement names) read from the server's pg_stat_activity ({} reads), {} from another execution of their call site",
                w.executions_text_from_activity, w.statements_text_from_activity, w.activity_polls, w.executions_text_from_call_site
            );
        }
    }

    if !db.rewrites.is_empty() {
        let accepted = db.rewrites.iter().filter(|r| r.accepted).count();
        let _ = writeln!(md, "**SQL rewrites**: {accepted} of {} shown: {}", db.rewrites.len(), crate::database::dialect::CHECK_METHOD);
        for r in db.rewrites.iter().filter(|r| !r.accepted) {
            let _ = writeln!(md, "- not shown: `{}`: {}", cell(&truncate(&r.sql, 120)).replace('`', "'"), cell(r.error.as_deref().unwrap_or("refused")));
        }
    }
    if !db.plans_not_inspected.is_empty() {
        let _ = writeln!(md, "\n**Plans not inspected** (statement texts the agent refused to send to the server):\n");
        for p in &db.plans_not_inspected {
            let _ = writeln!(md, "- `{}`: {}", cell(&truncate(&p.query, 120)).replace('`', "'"), p.reason);
        }
    }
    let _ = writeln!(md, "\n**Top slow queries**:\n");
    let _ = writeln!(md, "| Query | Calls | Avg Time | Max Time | Called from | Recommendation |");
    let _ = writeln!(md, "|-------|-------|----------|----------|-------------|----------------|");
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2} ms"));
    for s in db.statements.iter().take(10) {
        let site = s
            .call_sites
            .first()
            .map(|c| format!("`{}` {}", c.function, location(&c.file, c.line)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} |",
            cell(&truncate(&s.query, 120)),
            s.calls,
            ms(s.mean_ms),
            ms(s.max_ms),
            cell(&site),
            cell(&s.recommendation)
        );
    }
    if db.statements.is_empty() {
        let _ = writeln!(md, "| (no statement ran during the audit) | | | | | |");
    }

    let _ = writeln!(md, "\n**N+1 Query Patterns**:\n");
    if db.n_plus_one.is_empty() {
        let _ = writeln!(md, "- None detected{}", if w.traced { "" } else { " (the wire was not traced)" });
    }
    for n in &db.n_plus_one {
        let _ = writeln!(
            md,
            "- **N+1** File: {} - `{}`{} runs `{}` in a loop: {} bursts of ~{} queries within {:.1} ms, one round trip ({:.2} ms) apart ({:.1} ms per burst that one batched query saves)",
            location(&n.call_site.file, n.call_site.line),
            n.call_site.function,
            if n.call_site.via.is_empty() { String::new() } else { format!(" (through {})", n.call_site.via.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" <- ")) },
            truncate(&n.query, 100),
            n.bursts,
            n.median_burst,
            n.median_burst_ms,
            n.round_trip_ms,
            n.saved_ms_per_burst
        );
    }
    if w.traced {
        let _ = writeln!(md, "\n*Detected as*: {}.", w.n_plus_one_rule);
        if !w.wrappers.is_empty() {
            let names: Vec<String> = w.wrappers.iter().map(|x| format!("`{}` ({} statements from {} callers)", x.function, x.statements, x.callers)).collect();
            let _ = writeln!(md, "\n*Wrappers, not call sites*: {}; {}.", names.join(", "), w.wrapper_rule);
        }
    }

    let _ = writeln!(md, "\n**Index Recommendations**:\n");
    let droppable: Vec<&crate::report::UnusedIndex> = crate::database::thresholds::droppable(db).into_iter().map(|(u, _)| u).collect();
    if db.missing_indexes.is_empty() && droppable.is_empty() && db.duplicate_indexes.is_empty() {
        let _ = writeln!(md, "None: no heavy sequential scan, unused or duplicate index found.");
    } else {
        let _ = writeln!(md, "```sql");
        if !db.missing_indexes.is_empty() {
            let _ = writeln!(md, "-- High-impact indexes");
        }
        for m in &db.missing_indexes {
            let gain = match (m.cost_before, m.cost_after) {
                (Some(b), Some(a)) => format!(", plan cost {b:.0} -> {a:.0} with it"),
                _ => String::new(),
            };
            let _ = writeln!(md, "-- for: {} ({} calls{gain})", truncate(&m.query, 100), m.calls);
            let _ = writeln!(md, "{}", m.create_sql);
        }
        if !droppable.is_empty() {
            let _ = writeln!(md, "-- Unused indexes ({})", crate::database::thresholds::unused_rule());
        }
        for u in &droppable {
            let _ = writeln!(md, "{}  -- {:.1} KiB on {}", u.drop_sql, u.size_bytes as f64 / 1024.0, u.table);
        }
        if !db.duplicate_indexes.is_empty() {
            let _ = writeln!(md, "-- Duplicate indexes");
        }
        for d in &db.duplicate_indexes {
            let _ = writeln!(md, "{}  -- covered by {}", d.drop_sql, d.duplicate_of);
        }
        let _ = writeln!(md, "```");
    }
    for u in &db.unused_indexes {
        if let Err(why) = crate::database::thresholds::unused_index_evidence(db, u) {
            let _ = writeln!(md, "\n*Not advised*: dropping {}, never scanned, because {why}.", u.index);
        }
    }

    let active: Vec<_> = db.tables.iter().filter(|t| t.seq_scans + t.idx_scans > 0).collect();
    if !active.is_empty() {
        let _ = writeln!(md, "\n**Index usage during the audit**:\n");
        let _ = writeln!(md, "| Table | Rows | Seq scans | Rows read by seq scans | Index scans | Rows fetched by index |");
        let _ = writeln!(md, "|-------|------|-----------|------------------------|-------------|-----------------------|");
        for t in active {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                t.table, t.rows, t.seq_scans, t.seq_rows_read, t.idx_scans, t.idx_rows_fetched
            );
        }
    }

    let _ = writeln!(md, "\n**Query Optimizations**:\n");
    let mut i = 0;
    let mut item = |md: &mut String, text: String| {
        i += 1;
        let _ = writeln!(md, "{i}. {text}");
    };
    if let Some(n) = db.n_plus_one.first() {
        item(md, format!("Replace N+1 in `{}` with a batch query using `ANY($1)`", n.call_site.function));
    }
    if let Some(m) = db.missing_indexes.first() {
        item(md, format!("Add the index on {} ({})", m.table, m.columns.join(", ")));
    }
    if !db.n_plus_one.is_empty() || !db.missing_indexes.is_empty() {
        item(md, "Use `EXPLAIN (ANALYZE, BUFFERS)` to verify execution plans after each change".into());
    } else {
        let _ = writeln!(md, "None needed: no N+1 pattern and no missing index was measured.");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        database::analysis::{CallSite, NPlusOne},
        report::{CallSiteRow, DuplicateIndex, MissingIndex, StatementRow, TableRow, UnusedIndex},
        test_evidence,
    };

    fn rendered(db: &DatabaseSection) -> String {
        let mut md = String::new();
        render(&mut md, db);
        md
    }

    fn statement(query: &str, calls: i64, total_ms: Option<f64>) -> StatementRow {
        StatementRow {
            query: query.into(),
            calls,
            total_ms,
            mean_ms: total_ms.map(|t| t / calls as f64),
            max_ms: total_ms.map(|t| t / calls as f64 * 2.0),
            ..Default::default()
        }
    }

    #[test]
    fn excess_privileges_wire_damage_and_refused_plans_are_said() {
        use crate::report::schema::{PlanNotInspected, RolePrivileges};
        let mut db = DatabaseSection::default();
        db.wire.traced = true;
        db.wire.unparsed_writes = 3;
        db.wire.evicted_portals = 1_000;
        db.privileges = Some(RolePrivileges { role: "app".into(), superuser: true, writable_tables: 2, writable_examples: vec!["public.t".into(), "public.u".into()], more_than_needed: true, ..Default::default() });
        db.plans_not_inspected = vec![PlanNotInspected { query: "SELECT `x`; COMMIT".into(), reason: "several statements".into() }];
        let md = rendered(&db);
        assert!(md.contains("role `app` is a superuser, can write 2 tables (public.t, public.u)"), "{md}");
        assert!(md.contains("**Wire damage**: 3 writes not parsed") && md.contains("1000 portal names"), "{md}");
        assert!(md.contains("- `SELECT 'x'; COMMIT`: several statements"), "{md}");
        // A role with only what it needs, and no damage: not a word.
        db.privileges = Some(RolePrivileges { role: "ro".into(), read_all_stats: true, ..Default::default() });
        db.wire = Default::default();
        db.plans_not_inspected.clear();
        let md = rendered(&db);
        assert!(!md.contains("more privileges") && !md.contains("Wire damage") && !md.contains("Plans not inspected"), "{md}");
    }

    #[test]
    fn an_empty_section_says_what_was_not_measured() {
        let md = rendered(&DatabaseSection::default());
        assert!(md.contains("| (no statement ran during the audit) | | | | | |"), "{md}");
        assert!(md.contains("- None detected (the wire was not traced)"));
        assert!(md.contains("None: no heavy sequential scan, unused or duplicate index found."));
        // Neither pg_stat_statements' nor the wire's summary lines, no usage table.
        assert!(!md.contains("**Slow queries detected**") && !md.contains("**Wire tracing**") && !md.contains("*Detected as*"));
        assert!(!md.contains("**Index usage during the audit**") && !md.contains("**Database**:"));
        assert!(md.contains("**Missing indexes**: 0"));
        assert!(md.ends_with("**Query Optimizations**:\n\nNone needed: no N+1 pattern and no missing index was measured.\n"), "{md}");
    }

    #[test]
    fn slow_queries_and_the_average_count_only_statements_pg_stat_statements_timed() {
        let db = DatabaseSection {
            pg_stat_statements: true,
            window_s: 30.0,
            statements: vec![
                statement("SELECT slow", 10, Some(150.0)),     // 15 ms each: slow
                statement("SELECT fast", 90, Some(45.0)),      // 0.5 ms each
                statement("SELECT wire_only", 500, None),      // seen on the wire only
            ],
            ..Default::default()
        };
        let md = rendered(&db);
        assert!(md.contains("**Slow queries detected**: 1 (mean >= 10 ms, over 30.0 s)"), "{md}");
        // (150 + 45) ms over 100 calls; the wire-only statement is left out.
        assert!(md.contains("**Average query time**: 1.95 ms over 100 calls"), "{md}");
        assert!(md.contains("| `SELECT wire_only` | 500 | - | - | - |  |"), "{md}");
    }

    #[test]
    fn long_queries_are_cut_on_characters_and_pipes_escaped_in_cells() {
        let long = format!("SELECT 'é' || name FROM t WHERE {}", "x = 1 AND ".repeat(20));
        let mut row = statement(&long, 1, Some(1.0));
        row.call_sites = vec![CallSiteRow { function: "svc::db::q".into(), file: Some("/svc/src/db.rs".into()), line: Some(7), executions: 1 }];
        let md = rendered(&DatabaseSection { statements: vec![row], ..Default::default() });
        let cut: String = long.chars().take(120).collect();
        assert!(md.contains(&format!("| `{}...` |", cut.replace('|', "\\|"))), "{md}");
        assert!(md.contains("| `svc::db::q` /svc/src/db.rs:7 |"), "{md}");
    }

    #[test]
    fn index_advice_is_one_sql_block_with_measured_gains() {
        let db = DatabaseSection {
            missing_indexes: vec![MissingIndex {
                table: "users".into(),
                columns: vec!["country".into(), "signup_at DESC".into()],
                create_sql: "CREATE INDEX CONCURRENTLY idx_users_country_signup_at ON users (country, signup_at DESC);".into(),
                query: "SELECT * FROM users WHERE country = $1 ORDER BY signup_at DESC".into(),
                calls: 12,
                cost_before: Some(2041.7),
                cost_after: Some(12.3),
                ..Default::default()
            }],
            // Enough evidence to advise the drop (see database::thresholds).
            window_s: 60.0,
            tables: vec![TableRow { table: "users".into(), rows: 50_000, seq_scans: 120, ..Default::default() }],
            unused_indexes: vec![UnusedIndex {
                table: "users".into(),
                index: "idx_users_name".into(),
                size_bytes: 3 * 1024 * 1024 / 2,
                drop_sql: "DROP INDEX CONCURRENTLY idx_users_name;".into(),
                ..Default::default()
            }],
            duplicate_indexes: vec![DuplicateIndex {
                table: "users".into(),
                index: "idx_users_country".into(),
                duplicate_of: "idx_users_country_signup_at".into(),
                size_bytes: 8192,
                drop_sql: "DROP INDEX CONCURRENTLY idx_users_country;".into(),
            }],
            ..Default::default()
        };
        let md = rendered(&db);
        let block = "```sql\n\
            -- High-impact indexes\n\
            -- for: SELECT * FROM users WHERE country = $1 ORDER BY signup_at DESC (12 calls, plan cost 2042 -> 12 with it)\n\
            CREATE INDEX CONCURRENTLY idx_users_country_signup_at ON users (country, signup_at DESC);\n\
            -- Unused indexes (no scan since statistics were reset, not backing a primary-key or unique constraint, on a table of at least 10000 rows read at least 100 times during an audit of at least 10 s, and each statement seen on its table planned with sequential scans priced out (`SET LOCAL enable_seqscan = off`, generic plan, in a rolled-back transaction) does not read through it)\n\
            DROP INDEX CONCURRENTLY idx_users_name;  -- 1536.0 KiB on users\n\
            -- Duplicate indexes\n\
            DROP INDEX CONCURRENTLY idx_users_country;  -- covered by idx_users_country_signup_at\n\
            ```\n";
        assert!(md.contains(block), "{md}");
        assert!(md.contains("1. Add the index on users (country, signup_at DESC)\n2. Use `EXPLAIN"), "{md}");
    }

    #[test]
    fn n_plus_one_patterns_are_named_at_their_line_and_come_first_in_the_plan() {
        let db = DatabaseSection {
            n_plus_one: vec![NPlusOne {
                query: "SELECT name FROM owners WHERE id = $1".into(),
                call_site: CallSite { function: "svc::db::owner".into(), file: Some("/svc/src/db.rs".into()), line: Some(118), ..Default::default() },
                bursts: 40,
                median_burst: 25,
                median_burst_ms: 9.12,
                ..Default::default()
            }],
            missing_indexes: vec![MissingIndex { table: "entries".into(), columns: vec!["account_id".into()], ..Default::default() }],
            tables: vec![
                TableRow { table: "idle".into(), rows: 5, ..Default::default() },
                TableRow { table: "entries".into(), rows: 100, seq_scans: 3, seq_rows_read: 300, ..Default::default() },
            ],
            ..Default::default()
        };
        let md = rendered(&db);
        assert!(md.contains("- **N+1** File: /svc/src/db.rs:118 - `svc::db::owner` runs `SELECT name FROM owners WHERE id = $1` in a loop: 40 bursts of ~25 queries within 9.1 ms"), "{md}");
        assert!(md.contains("1. Replace N+1 in `svc::db::owner` with a batch query using `ANY($1)`\n2. Add the index on entries (account_id)\n3. Use `EXPLAIN"), "{md}");
        // Only tables scanned during the audit are listed.
        assert!(md.contains("| entries | 100 | 3 | 300 | 0 | 0 |") && !md.contains("| idle |"), "{md}");
    }

    #[test]
    fn the_fixture_section_renders_its_connection_and_wire_summary() {
        let md = rendered(&test_evidence::database_section());
        assert!(md.starts_with("### Database Performance Analysis\n\n**Database**: `postgres://ledger:***@127.0.0.1:5432/ledger` (from DATABASE_URL in the target's environment (/proc/4242/environ)), PostgreSQL 16.4, read-only session\n"), "{md}");
        assert!(md.contains("**Wire tracing**: 2780 writes on 8 connections (0 TLS), 1350 executions, 1350 tied to your code"), "{md}");
        assert!(md.contains("*Detected as*: the same statement from the same call site executed at least 5 times"), "{md}");
    }
}
