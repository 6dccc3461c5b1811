//! Index advice from measured statistics and plans. Pure functions over
//! EXPLAIN JSON and statistics snapshots; no I/O.
//!
//! - A **missing index**: a heavy statement whose generic plan scans a
//!   large table sequentially with a filter. The filter's columns (equality
//!   first, then ranges) and, when the rows are then sorted, the sort keys
//!   make the index, as the demo's `(country, signup_at DESC)`.
//! - An **unused index**: no scan since statistics were reset, and not a
//!   unique or primary-key index (those enforce constraints).
//! - A **duplicate index**: same table, same columns, expressions and
//!   predicate as another, or a plain prefix of another non-unique one.

use serde_json::Value;

use super::stats::IndexStat;

/// A sequential scan with a filter, found in a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqScan {
    pub schema: String,
    pub table: String,
    pub filter: String,
    /// Filter columns, equality comparisons first.
    pub equality: Vec<String>,
    pub range: Vec<String>,
    /// Sort keys applied to this scan's rows (`col DESC`), table prefix removed.
    pub sort_keys: Vec<String>,
    /// The planner's estimate of rows kept by the filter.
    pub plan_rows: f64,
}

impl SeqScan {
    /// Index columns: equality columns, then sort keys (when every filter
    /// is an equality, so the index order serves the sort), else ranges.
    pub fn index_columns(&self) -> Vec<String> {
        let mut cols = self.equality.clone();
        if self.range.is_empty() {
            for key in &self.sort_keys {
                let name = key.split_whitespace().next().unwrap_or_default();
                if !cols.iter().any(|c| c == name) {
                    cols.push(key.clone());
                }
            }
        } else {
            cols.extend(self.range.iter().filter(|r| !self.equality.contains(r)).cloned());
        }
        cols
    }
}

/// Total cost of the plan's root node.
pub fn total_cost(plan: &Value) -> f64 {
    root(plan).and_then(|p| p["Total Cost"].as_f64()).unwrap_or(0.0)
}

fn root(plan: &Value) -> Option<&Value> {
    plan.get(0).map(|p| &p["Plan"]).or_else(|| plan.get("Plan"))
}

/// Every filtered sequential scan in an EXPLAIN (FORMAT JSON) document.
pub fn seq_scans(plan: &Value) -> Vec<SeqScan> {
    let mut out = Vec::new();
    if let Some(root) = root(plan) {
        walk(root, &[], &mut out);
    }
    out
}

fn walk(node: &Value, sort_keys: &[String], out: &mut Vec<SeqScan>) {
    let mut keys = sort_keys.to_vec();
    if let Some(k) = node["Sort Key"].as_array() {
        keys = k.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    }
    if node["Node Type"] == "Seq Scan"
        && let (Some(table), Some(filter)) = (node["Relation Name"].as_str(), node["Filter"].as_str()) {
            let (equality, range) = filter_columns(filter);
            let alias = node["Alias"].as_str().unwrap_or(table);
            let sort_keys = keys
                .iter()
                .filter_map(|k| {
                    let k = k.strip_prefix(&format!("{alias}.")).or_else(|| k.strip_prefix(&format!("{table}."))).unwrap_or(k);
                    let name = k.split_whitespace().next()?;
                    is_identifier(name).then(|| k.to_string())
                })
                .collect();
            out.push(SeqScan {
                schema: node["Schema"].as_str().unwrap_or("public").to_string(),
                table: table.to_string(),
                filter: filter.to_string(),
                equality,
                range,
                sort_keys,
                plan_rows: node["Plan Rows"].as_f64().unwrap_or(0.0),
            });
        }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            walk(child, &keys, out);
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !s.chars().next().unwrap().is_ascii_digit()
}

/// Columns compared in a plan filter such as `((country)::text = $1)` or
/// `((a = 1) AND (b > $2))`: (equality columns, other comparisons).
pub fn filter_columns(filter: &str) -> (Vec<String>, Vec<String>) {
    const OPS: &[&str] = &["<>", "<=", ">=", "~~*", "~~", "=", "<", ">"];
    let bytes = filter.as_bytes();
    let (mut eq, mut other) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '\'' {
            // Skip a string literal.
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                i += 1;
            }
            let word = &filter[start..i];
            let preceded_by_cast = filter[..start].ends_with("::") || filter[..start].ends_with('$');
            // Skip `)` and `::type` casts, then spaces; then an operator?
            let mut j = i;
            loop {
                let rest = &filter[j..];
                if rest.starts_with(')') {
                    j += 1;
                } else if let Some(after) = rest.strip_prefix("::") {
                    let n = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ' ' && after.starts_with("character varying"))).unwrap_or(after.len());
                    j += 2 + n;
                } else {
                    break;
                }
            }
            let rest = filter[j..].trim_start();
            let column = word.rsplit('.').next().unwrap_or(word).to_string();
            if !preceded_by_cast && is_identifier(&column) && !matches!(column.to_ascii_uppercase().as_str(), "AND" | "OR" | "NOT" | "NULL" | "ANY" | "ALL")
                && let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
                    let list = if *op == "=" { &mut eq } else { &mut other };
                    if !list.contains(&column) {
                        list.push(column);
                    }
                }
            continue;
        }
        i += 1;
    }
    other.retain(|c| !eq.contains(c));
    (eq, other)
}

/// `idx_{table}_{col1}_{col2}`, as the seed names them.
pub fn index_name(table: &str, columns: &[String]) -> String {
    let cols: Vec<&str> = columns.iter().map(|c| c.split_whitespace().next().unwrap_or(c)).collect();
    let mut name = format!("idx_{table}_{}", cols.join("_"));
    // PostgreSQL's 63-byte identifier limit, cut on a character boundary.
    let mut cut = name.len().min(63);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name.truncate(cut);
    name
}

/// `CREATE INDEX [CONCURRENTLY] name ON [schema.]table (cols);`
pub fn create_index_sql(schema: &str, table: &str, columns: &[String], concurrently: bool) -> String {
    let target = if schema == "public" { table.to_string() } else { format!("{schema}.{table}") };
    format!(
        "CREATE INDEX {}{} ON {target} ({});",
        if concurrently { "CONCURRENTLY " } else { "" },
        index_name(table, columns),
        columns.join(", ")
    )
}

/// The `CREATE INDEX` the agent runs itself (on the private throwaway
/// server only, in a rolled-back transaction): every name from the plan
/// double-quoted, a column's suffix only `ASC`/`DESC`/`NULLS FIRST|LAST`.
/// `None` when a name cannot be quoted (a NUL) or a suffix is anything else.
pub fn create_index_statement(schema: &str, table: &str, columns: &[String]) -> Option<String> {
    let mut cols = Vec::new();
    for c in columns {
        let mut words = c.split_whitespace();
        let name = words.next()?;
        let suffix: Vec<&str> = words.collect();
        let allowed = ["ASC", "DESC", "NULLS", "FIRST", "LAST"];
        if !suffix.iter().all(|w| allowed.iter().any(|a| a.eq_ignore_ascii_case(w))) {
            return None;
        }
        let mut col = quote_ident(name)?;
        for w in suffix {
            col.push(' ');
            col.push_str(&w.to_ascii_uppercase());
        }
        cols.push(col);
    }
    if cols.is_empty() {
        return None;
    }
    Some(format!(
        "CREATE INDEX {} ON {}.{} ({})",
        quote_ident(&index_name(table, columns))?,
        quote_ident(schema)?,
        quote_ident(table)?,
        cols.join(", ")
    ))
}

/// `"name"` with inner quotes doubled; `None` for a NUL (never valid).
pub fn quote_ident(name: &str) -> Option<String> {
    (!name.contains('\0')).then(|| format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Whether an existing index already starts with `columns` (by name).
pub fn covered_by_existing(columns: &[String], existing: &[Vec<String>]) -> bool {
    let wanted: Vec<&str> = columns.iter().map(|c| c.split_whitespace().next().unwrap_or(c)).collect();
    existing.iter().any(|idx| idx.len() >= wanted.len().min(1) && idx.iter().zip(&wanted).take(wanted.len()).all(|(a, b)| a == b) && idx.len() >= wanted.len())
}

/// Indexes never scanned since statistics were reset, constraints excluded.
pub fn unused(indexes: &[IndexStat]) -> Vec<&IndexStat> {
    let mut out: Vec<&IndexStat> = indexes.iter().filter(|i| i.idx_scan == 0 && !i.unique && !i.primary).collect();
    out.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.index.cmp(&b.index)));
    out
}

/// (redundant index, the index that makes it redundant).
pub fn duplicates(indexes: &[IndexStat]) -> Vec<(&IndexStat, &IndexStat)> {
    let mut out = Vec::new();
    for a in indexes {
        if a.primary || a.unique || a.columns.is_empty() {
            continue;
        }
        let twin = indexes.iter().find(|b| {
            b.index != a.index
                && b.schema == a.schema
                && b.table == a.table
                && b.expressions == a.expressions
                && b.predicate == a.predicate
                && b.columns.len() >= a.columns.len()
                && b.columns[..a.columns.len()] == a.columns[..]
                // Of two identical indexes, report only the later name.
                && (b.columns.len() > a.columns.len() || b.primary || b.unique || b.index < a.index)
        });
        if let Some(b) = twin {
            out.push((a, b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_index_the_agent_creates_quotes_every_name() {
        let cols = vec!["country".to_string(), "signup_at DESC".to_string()];
        assert_eq!(
            super::create_index_statement("public", "us\"ers; DROP", &cols).as_deref(),
            Some("CREATE INDEX \"idx_us\"\"ers; DROP_country_signup_at\" ON \"public\".\"us\"\"ers; DROP\" (\"country\", \"signup_at\" DESC)")
        );
        assert_eq!(super::create_index_statement("public", "t", &["a); DROP TABLE t; --".to_string()]), None);
        assert_eq!(super::create_index_statement("public", "t", &[]), None);
        assert_eq!(super::index_name(&"é".repeat(40), &["a".to_string()]).len(), 62);
    }

    use super::*;

    #[test]
    fn filter_columns_handle_casts_and_conjunctions() {
        assert_eq!(filter_columns("(country = $1)"), (vec!["country".to_string()], vec![]));
        assert_eq!(filter_columns("((country)::text = $1)"), (vec!["country".to_string()], vec![]));
        assert_eq!(
            filter_columns("((status = 'a = b'::text) AND (created_at > $2))"),
            (vec!["status".to_string()], vec!["created_at".to_string()])
        );
    }

    #[test]
    fn a_sorted_seq_scan_yields_the_composite_index_of_the_readme() {
        // The demo's `search_users_by_country` plan (PG 15, generic).
        let plan: Value = serde_json::from_str(r#"[{"Plan": {"Node Type": "Limit", "Total Cost": 9000.5, "Plans": [
            {"Node Type": "Gather Merge", "Plans": [
              {"Node Type": "Sort", "Sort Key": ["users.signup_at DESC"], "Plans": [
                {"Node Type": "Seq Scan", "Parallel Aware": true, "Relation Name": "users", "Schema": "public",
                 "Alias": "users", "Plan Rows": 4167, "Filter": "(country = $1)"}]}]}]}}]"#).unwrap();
        assert_eq!(total_cost(&plan), 9000.5);
        let scans = seq_scans(&plan);
        assert_eq!(scans.len(), 1);
        let cols = scans[0].index_columns();
        assert_eq!(cols, vec!["country".to_string(), "signup_at DESC".to_string()]);
        assert_eq!(
            create_index_sql("public", "users", &cols, true),
            "CREATE INDEX CONCURRENTLY idx_users_country_signup_at ON users (country, signup_at DESC);"
        );
        assert!(covered_by_existing(&cols, &[vec!["country".into(), "signup_at".into(), "x".into()]]));
        assert!(!covered_by_existing(&cols, &[vec!["signup_at".into()]]));
    }

    fn idx(name: &str, cols: &[i32], scans: i64, unique: bool) -> IndexStat {
        IndexStat {
            schema: "public".into(),
            table: "users".into(),
            index: name.into(),
            idx_scan: scans,
            idx_tup_read: 0,
            size_bytes: 1000,
            unique,
            primary: false,
            definition: String::new(),
            columns: cols.to_vec(),
            expressions: String::new(),
            predicate: String::new(),
        }
    }

    #[test]
    fn unused_and_duplicate_indexes() {
        let all = vec![idx("pk", &[1], 0, true), idx("a_idx", &[3], 0, false), idx("a_b_idx", &[3, 4], 9, false), idx("z_idx", &[5], 2, false), idx("y_idx", &[5], 1, false)];
        let unused: Vec<&str> = unused(&all).iter().map(|i| i.index.as_str()).collect();
        assert_eq!(unused, vec!["a_idx"], "unique indexes enforce constraints");
        let dups: Vec<(&str, &str)> = duplicates(&all).iter().map(|(a, b)| (a.index.as_str(), b.index.as_str())).collect();
        assert_eq!(dups, vec![("a_idx", "a_b_idx"), ("z_idx", "y_idx")]);
    }
}
