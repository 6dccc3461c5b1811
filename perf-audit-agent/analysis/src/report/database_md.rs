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
    let _ = writeln!(md, "**Missing indexes**: {}", db.missing_indexes.len());
    let w = &db.wire;
    if w.traced {
        let _ = writeln!(
            md,
            "**Wire tracing**: {} writes on {} connections ({} TLS), {} executions, {} tied to your code, {} without statement text; dropped: {} writes (ring buffer full), {} executions (agent bound); failures: {} payload reads, {} stack copies",
            w.writes, w.connections, w.tls_connections, w.executions, w.executions_with_call_site, w.executions_without_text,
            w.dropped_writes, w.dropped_executions, w.payload_read_failures, w.stack_failures
        );
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
        let _ = writeln!(md, "- 🟢 None detected{}", if w.traced { "" } else { " (the wire was not traced)" });
    }
    for n in &db.n_plus_one {
        let _ = writeln!(
            md,
            "- 🔴 File: {} - `{}` runs `{}` in a loop: {} bursts of ~{} queries within {:.1} ms",
            location(&n.call_site.file, n.call_site.line),
            n.call_site.function,
            truncate(&n.query, 100),
            n.bursts,
            n.median_burst,
            n.median_burst_ms
        );
    }
    if w.traced {
        let _ = writeln!(md, "\n*Detected as*: {}.", w.n_plus_one_rule);
    }

    let _ = writeln!(md, "\n**Index Recommendations**:\n");
    if db.missing_indexes.is_empty() && db.unused_indexes.is_empty() && db.duplicate_indexes.is_empty() {
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
        if !db.unused_indexes.is_empty() {
            let _ = writeln!(md, "-- Unused indexes (0 scans since statistics reset)");
        }
        for u in &db.unused_indexes {
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
    item(md, "Use `EXPLAIN (ANALYZE, BUFFERS)` to verify execution plans after each change".into());
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}...")
}
