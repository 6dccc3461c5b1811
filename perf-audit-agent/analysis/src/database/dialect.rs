//! Code fixes in the service's own driver, and SQL rewrites the server
//! checks before the report shows them.
//!
//! - **The driver** of a statement is read from the stack that wrote it:
//!   the innermost known driver crate among its frames
//!   ([`Driver::from_frames`]). sea-orm runs on sqlx and diesel on libpq,
//!   so the higher layer wins. The section keeps the executions per
//!   driver (`wire.drivers`); a rule without a stack of its own (a
//!   statement row) uses the driver of nearly every execution.
//! - **Rewrites** ([`batched_query`], [`paged_query`]) are made only when
//!   the change is mechanical (one `= $n` in the WHERE clause, a SELECT
//!   without LIMIT); the agent then has PostgreSQL parse and plan each one
//!   on the safe path (one Parse, read-only, rolled back, never executed:
//!   `stats::Db::explain_generic`) and records the answer in
//!   `DatabaseSection::rewrites`. A rule shows a rewrite only when the
//!   server accepted it ([`checked`]); otherwise the advice is prose.

use super::sql_text::{Kind, lex};

/// The client library a statement went through.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    Sqlx,
    SeaOrm,
    Diesel,
    DieselAsync,
    TokioPostgres,
    /// The synchronous `postgres` crate.
    Postgres,
    /// libpq called directly (no Rust driver frame above it).
    Libpq,
}

impl Driver {
    pub fn label(self) -> &'static str {
        match self {
            Driver::Sqlx => "sqlx",
            Driver::SeaOrm => "sea-orm",
            Driver::Diesel => "diesel",
            Driver::DieselAsync => "diesel-async",
            Driver::TokioPostgres => "tokio-postgres",
            Driver::Postgres => "postgres",
            Driver::Libpq => "libpq",
        }
    }

    /// Layers above others win: sea-orm over sqlx, diesel over libpq,
    /// postgres over tokio-postgres.
    fn rank(self) -> u8 {
        match self {
            Driver::SeaOrm => 6,
            Driver::DieselAsync => 5,
            Driver::Diesel => 4,
            Driver::Postgres => 3,
            Driver::Sqlx => 2,
            Driver::TokioPostgres => 1,
            Driver::Libpq => 0,
        }
    }

    /// The driver of one stack, from its frames' names (any order).
    pub fn from_frames<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Driver> {
        names.into_iter().filter_map(Driver::of_frame).max_by_key(|d| d.rank())
    }

    fn of_frame(name: &str) -> Option<Driver> {
        const CRATES: &[(&str, Driver)] = &[
            ("sea_orm", Driver::SeaOrm),
            ("diesel_async", Driver::DieselAsync),
            ("diesel", Driver::Diesel),
            ("sqlx_postgres", Driver::Sqlx),
            ("sqlx_core", Driver::Sqlx),
            ("sqlx", Driver::Sqlx),
            ("tokio_postgres", Driver::TokioPostgres),
            ("postgres", Driver::Postgres),
        ];
        for (krate, driver) in CRATES {
            if mentions_crate(name, krate) {
                return Some(*driver);
            }
        }
        // libpq's exported API (PQexecParams, PQsendQueryParams...).
        (name.len() > 2 && name.starts_with("PQ") && name.as_bytes()[2].is_ascii_lowercase())
            .then_some(Driver::Libpq)
    }
}

/// `name` has a path starting at crate `krate` (`krate::...` at the start
/// or after `<`, `&`, space, `(` or `,`), so `tokio_postgres::` is not
/// `postgres::`.
fn mentions_crate(name: &str, krate: &str) -> bool {
    let needle = format!("{krate}::");
    name.match_indices(&needle).any(|(i, _)| {
        i == 0 || matches!(name.as_bytes()[i - 1], b'<' | b'&' | b' ' | b'(' | b',' | b'[' | b'*')
    })
}

/// The driver of nearly every execution (at least 90% of those with one):
/// the one a rule without a stack of its own writes its fix in.
pub fn dominant(drivers: &std::collections::BTreeMap<String, u64>) -> Option<Driver> {
    let total: u64 = drivers.values().sum();
    let (name, n) = drivers.iter().max_by_key(|(_, n)| **n)?;
    if total == 0 || (*n as f64) < 0.9 * total as f64 {
        return None;
    }
    serde_json::from_value(serde_json::Value::String(name.clone())).ok()
}

/// A rewrite the server was asked about, and its answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CheckedRewrite {
    pub sql: String,
    /// PostgreSQL parsed and planned it.
    pub accepted: bool,
    /// The server's error (or why it was not asked), when not accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How rewrites are checked, for the report.
pub const CHECK_METHOD: &str = "each SQL rewrite shown was parsed and planned by the audited PostgreSQL (one PREPARE in a read-only transaction, rolled back, never executed)";

/// `sql` when the server accepted it.
pub fn checked<'a>(rewrites: &[CheckedRewrite], sql: Option<&'a str>) -> Option<&'a str> {
    let sql = sql?;
    rewrites.iter().any(|r| r.accepted && r.sql == sql).then_some(sql)
}

fn is_param(text: &str) -> bool {
    text.len() > 1 && text.starts_with('$') && text[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The statement with its one per-item equality (`col = $n` in the WHERE
/// clause) taking an array: `col = ANY($n)`. `None` when that is not a
/// mechanical change: not a SELECT/DELETE (or an UPDATE setting
/// constants), no WHERE, or several `= $n` (which one is per item?).
pub fn batched_query(query: &str) -> Option<String> {
    let tokens = lex(query).ok()?;
    let text = |i: usize| &query[tokens[i].start..tokens[i].end];
    let first = tokens
        .first()
        .filter(|t| t.kind == Kind::Word)
        .map(|t| query[t.start..t.end].to_ascii_uppercase())?;
    let mut depth = 0i32;
    let mut where_at = None;
    for (i, t) in tokens.iter().enumerate() {
        match (t.kind, text(i)) {
            (Kind::Open, _) => depth += 1,
            (Kind::Other, ")") => depth -= 1,
            (Kind::Word, w) if depth == 0 && w.eq_ignore_ascii_case("WHERE") => {
                where_at = Some(i);
                break;
            }
            _ => {}
        }
    }
    let where_at = where_at?;
    match first.as_str() {
        "SELECT" | "WITH" | "DELETE" => {}
        // An UPDATE whose SET takes per-item values cannot become one
        // statement by changing its WHERE.
        "UPDATE" if !(0..where_at).any(|i| is_param(text(i))) => {}
        _ => return None,
    }
    let mut equalities = (where_at + 1..tokens.len()).filter(|&i| {
        is_param(text(i))
            && i >= 1
            && text(i - 1) == "="
            // `<=`, `>=`, `!=`: the lexer gives their characters one by one.
            && !(i >= 2 && tokens[i - 2].end == tokens[i - 1].start && matches!(text(i - 2), "<" | ">" | "!"))
    });
    let at = equalities.next()?;
    if equalities.next().is_some() {
        return None;
    }
    let t = &tokens[at];
    Some(format!("{}ANY({}){}", &query[..t.start], &query[t.start..t.end], &query[t.end..]))
}

/// The SELECT returning one page: `... LIMIT $k` (k one past its highest
/// parameter). `None` for anything but a SELECT without LIMIT/FETCH and
/// without a locking clause.
pub fn paged_query(query: &str) -> Option<String> {
    let tokens = lex(query).ok()?;
    let words: Vec<String> = tokens
        .iter()
        .filter(|t| t.kind == Kind::Word)
        .map(|t| query[t.start..t.end].to_ascii_uppercase())
        .collect();
    if !matches!(words.first().map(String::as_str), Some("SELECT"))
        || words.iter().any(|w| matches!(w.as_str(), "LIMIT" | "FETCH" | "FOR" | "OFFSET"))
    {
        return None;
    }
    let last_param = tokens
        .iter()
        .filter_map(|t| {
            let s = &query[t.start..t.end];
            is_param(s).then(|| s[1..].parse::<u32>().ok()).flatten()
        })
        .max()
        .unwrap_or(0);
    let body = query[..tokens.last()?.end].trim_end_matches(';').trim_end();
    Some(format!("{body} LIMIT ${}", last_param + 1))
}

/// `FROM table` and the column compared to the per-item parameter in a
/// rewritten statement, unquoted: names for a query-builder fix.
fn table_and_column(batched: &str) -> Option<(String, String)> {
    let tokens = lex(batched).ok()?;
    let text = |i: usize| &batched[tokens[i].start..tokens[i].end];
    let unquote = |s: &str| s.trim_matches('"').to_string();
    let from = (0..tokens.len()).find(|&i| text(i).eq_ignore_ascii_case("FROM"))?;
    // `schema.table`: the name after the last dot.
    let mut at = from + 1;
    while at + 2 < tokens.len() && text(at + 1) == "." {
        at += 2;
    }
    let name = tokens.get(at)?;
    let table = unquote(&batched[name.start..name.end]);
    let any = (0..tokens.len()).find(|&i| text(i).eq_ignore_ascii_case("ANY"))?;
    // `col = ANY(`, `"t"."col" = ANY(`: the lexer splits at the dots.
    let column = (0..any.checked_sub(1)?)
        .rev()
        .find(|&i| tokens[i].kind == Kind::Word || text(i).starts_with('"'))
        .map(|i| unquote(text(i)))?;
    let ident =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (ident(&table) && ident(&column)).then_some((table, column))
}

/// diesel's and sea-orm's query builders quote every identifier and
/// qualify columns (`"tags"."item_id"`); hand-written SQL rarely does.
fn built_by_a_query_builder(query: &str) -> bool {
    query.contains("\".\"")
}

fn camel(s: &str) -> String {
    s.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_ascii_uppercase() + &p[1..]).collect()
}

/// A before/after pair for a loop of one statement per item, in the
/// driver's dialect; `batched` is a rewrite the server accepted. `None`
/// when the driver is unknown (the recommendation says it in prose).
pub fn n_plus_one_fix(
    driver: Option<Driver>,
    query: &str,
    batched: Option<&str>,
) -> Option<(String, String)> {
    let names = batched.and_then(table_and_column);
    let ids = "let ids: Vec<i64> = items.iter().map(|i| i.id).collect();";
    match driver? {
        Driver::Sqlx => Some((
            format!(
                "for item in &items {{\n    let row = sqlx::query_as(\"{query}\")\n        .bind(item.id)\n        .fetch_one(pool)\n        .await?;\n}}"
            ),
            format!(
                "{ids}\nlet rows: Vec<_> = sqlx::query_as(\"{}\")\n    .bind(&ids)\n    .fetch_all(pool)\n    .await?;",
                batched?
            ),
        )),
        Driver::TokioPostgres => Some((
            format!(
                "for item in &items {{\n    let row = client.query_one(\"{query}\", &[&item.id]).await?;\n}}"
            ),
            format!("{ids}\nlet rows = client.query(\"{}\", &[&ids]).await?;", batched?),
        )),
        Driver::Postgres => Some((
            format!(
                "for item in &items {{\n    let row = client.query_one(\"{query}\", &[&item.id])?;\n}}"
            ),
            format!("{ids}\nlet rows = client.query(\"{}\", &[&ids])?;", batched?),
        )),
        d @ (Driver::Diesel | Driver::DieselAsync) if !built_by_a_query_builder(query) => {
            // Hand-written SQL through `sql_query`: keep it, batched.
            let wait = if d == Driver::DieselAsync { ".await" } else { "" };
            Some((
                format!(
                    "for item in &items {{\n    let row: Row = sql_query(\"{query}\")\n        .bind::<BigInt, _>(item.id)\n        .get_result(conn){wait}?;\n}}"
                ),
                format!(
                    "{ids}\nlet rows: Vec<Row> = sql_query(\"{}\")\n    .bind::<Array<BigInt>, _>(&ids)\n    .load::<Row>(conn){wait}?;",
                    batched?
                ),
            ))
        }
        d @ (Driver::Diesel | Driver::DieselAsync) => {
            let (table, column) = names.unwrap_or_else(|| ("items_table".into(), "id".into()));
            let wait = if d == Driver::DieselAsync { ".await" } else { "" };
            Some((
                format!(
                    "// {query}\nfor item in &items {{\n    let rows = {table}::table\n        .filter({table}::{column}.eq(item.id))\n        .load::<Row>(conn){wait}?;\n}}"
                ),
                format!(
                    "{ids}\n// one statement: ... {column} = ANY($1)\nlet rows = {table}::table\n    .filter({table}::{column}.eq_any(&ids))\n    .load::<Row>(conn){wait}?;"
                ),
            ))
        }
        Driver::SeaOrm => {
            let (table, column) = names.unwrap_or_else(|| ("entity".into(), "id".into()));
            Some((
                format!(
                    "// {query}\nfor item in &items {{\n    let rows = {table}::Entity::find()\n        .filter({table}::Column::{}.eq(item.id))\n        .all(db)\n        .await?;\n}}",
                    camel(&column)
                ),
                format!(
                    "{ids}\n// one statement: ... {column} IN (...)\nlet rows = {table}::Entity::find()\n    .filter({table}::Column::{}.is_in(ids))\n    .all(db)\n    .await?;",
                    camel(&column)
                ),
            ))
        }
        Driver::Libpq => None,
    }
}

/// A before/after pair returning one page of a SELECT, in the driver's
/// dialect; `paged` is a rewrite the server accepted.
pub fn paged_fix(
    driver: Option<Driver>,
    query: &str,
    paged: Option<&str>,
) -> Option<(String, String)> {
    match driver? {
        Driver::Sqlx => Some((
            format!("sqlx::query_as::<_, Row>(\"{query}\")\n    .fetch_all(pool).await?"),
            format!("sqlx::query_as::<_, Row>(\"{}\")\n    .bind(page_size)\n    .fetch_all(pool).await?", paged?),
        )),
        Driver::TokioPostgres => Some((format!("client.query(\"{query}\", &[]).await?"), format!("client.query(\"{}\", &[&page_size]).await?", paged?))),
        Driver::Postgres => Some((format!("client.query(\"{query}\", &[])?"), format!("client.query(\"{}\", &[&page_size])?", paged?))),
        d @ (Driver::Diesel | Driver::DieselAsync) => {
            let wait = if d == Driver::DieselAsync { ".await" } else { "" };
            Some((format!("// {query}\nlet rows = table.load::<Row>(conn){wait}?;"), format!("let rows = table\n    .order(id)\n    .filter(id.gt(after_id))\n    .limit(page_size)\n    .load::<Row>(conn){wait}?;")))
        }
        Driver::SeaOrm => Some((
            format!("// {query}\nlet rows = Entity::find().all(db).await?;"),
            "let rows = Entity::find()\n    .cursor_by(Column::Id)\n    .after(after_id)\n    .first(page_size)\n    .all(db)\n    .await?;".into(),
        )),
        Driver::Libpq => None,
    }
}

/// How the driver opens and commits one transaction around a batch.
pub fn transaction_fix(driver: Option<Driver>, batched: Option<&str>) -> Option<(String, String)> {
    let statement = batched.map_or_else(
        || "/* the statement, set-based: = ANY($1) or UNNEST */".to_string(),
        |s| format!("\"{s}\""),
    );
    let ids = "let ids: Vec<i64> = items.iter().map(|i| i.id).collect();";
    match driver? {
        Driver::Sqlx => Some((
            "for item in items {\n    let mut tx = pool.begin().await?;\n    // one statement for this item\n    tx.commit().await?;\n}".into(),
            format!("{ids}\nlet mut tx = pool.begin().await?;\nsqlx::query({statement}).bind(&ids).execute(&mut *tx).await?;\ntx.commit().await?;"),
        )),
        Driver::TokioPostgres => Some((
            "for item in items {\n    let tx = client.transaction().await?;\n    // one statement for this item\n    tx.commit().await?;\n}".into(),
            format!("{ids}\nlet tx = client.transaction().await?;\ntx.execute({statement}, &[&ids]).await?;\ntx.commit().await?;"),
        )),
        Driver::Postgres => Some((
            "for item in items {\n    let mut tx = client.transaction()?;\n    // one statement for this item\n    tx.commit()?;\n}".into(),
            format!("{ids}\nlet mut tx = client.transaction()?;\ntx.execute({statement}, &[&ids])?;\ntx.commit()?;"),
        )),
        d @ (Driver::Diesel | Driver::DieselAsync) => {
            let wait = if d == Driver::DieselAsync { ".await" } else { "" };
            Some((
                format!("for item in items {{\n    conn.transaction(|conn| {{\n        // one statement for this item\n    }}){wait}?;\n}}"),
                format!("{ids}\nconn.transaction(|conn| {{\n    // one set-based statement for every item: .filter(id.eq_any(&ids))\n}}){wait}?;"),
            ))
        }
        Driver::SeaOrm => Some((
            "for item in items {\n    let txn = db.begin().await?;\n    // one statement for this item\n    txn.commit().await?;\n}".into(),
            format!("{ids}\nlet txn = db.begin().await?;\n// one set-based statement: Entity::update_many().filter(Column::Id.is_in(ids)) or insert_many\ntxn.commit().await?;"),
        )),
        Driver::Libpq => None,
    }
}

/// Sequential statements of one request, and the same request in one
/// round trip (or concurrent ones), in the driver's dialect. The "after"
/// names no table: the statements to merge are the service's own.
pub fn round_trips_fix(driver: Option<Driver>, statements: &[&str]) -> Option<(String, String)> {
    let driver = driver?;
    let call = |sql: &str| match driver {
        Driver::Sqlx => format!("let _ = sqlx::query(\"{sql}\").bind(id).fetch_one(pool).await?;"),
        Driver::TokioPostgres => format!("let _ = client.query_one(\"{sql}\", &[&id]).await?;"),
        Driver::Postgres => format!("let _ = client.query_one(\"{sql}\", &[&id])?;"),
        Driver::Diesel | Driver::DieselAsync | Driver::SeaOrm => format!("// {sql}"),
        Driver::Libpq => format!("/* {sql} */"),
    };
    let before = statements
        .iter()
        .take(3)
        .map(|s| call(s))
        .chain(std::iter::once("// ...".to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let merge =
        "// one round trip: the former statements become subqueries or JOINs of one statement";
    let after = match driver {
        Driver::Sqlx => format!(
            "{merge}\n// or, for independent lookups on separate pooled connections:\nlet (a, b) = tokio::try_join!(first.fetch_one(pool), second.fetch_one(pool))?;"
        ),
        Driver::TokioPostgres => format!(
            "{merge}\n// or, for independent lookups: tokio-postgres pipelines concurrent queries on one connection\nlet (a, b) = tokio::try_join!(client.query_one(&first, &[&id]), client.query_one(&second, &[&id]))?;"
        ),
        Driver::Postgres => format!("{merge}\nlet row = client.query_one(&merged, &[&id])?;"),
        Driver::Diesel => format!(
            "{merge}\n// with diesel: .inner_join()/.left_join() of the tables, or belonging_to() for children loaded in one query per relation\nlet rows = parents.inner_join(children).load::<(Parent, Child)>(conn)?;"
        ),
        Driver::DieselAsync => format!(
            "{merge}\nlet rows = parents.inner_join(children).load::<(Parent, Child)>(conn).await?;"
        ),
        Driver::SeaOrm => format!(
            "{merge}\n// with sea-orm: find_also_related / find_with_related load a relation in the same query\nlet rows = Parent::find().find_with_related(Child).all(db).await?;"
        ),
        Driver::Libpq => return None,
    };
    Some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_is_the_highest_layer_on_the_stack() {
        let sqlx = [
            "<sqlx_postgres::connection::PgConnection as sqlx_core::connection::Connection>::flush",
            "demo::handlers::feed",
        ];
        assert_eq!(Driver::from_frames(sqlx), Some(Driver::Sqlx));
        let sea = [
            "sqlx_core::pool::inner::PoolInner<DB>::acquire",
            "sea_orm::executor::select::Selector<S>::all",
            "svc::list",
        ];
        assert_eq!(Driver::from_frames(sea), Some(Driver::SeaOrm));
        let diesel = [
            "pqFlush",
            "PQexecPrepared",
            "<diesel::pg::connection::PgConnection as diesel::connection::LoadConnection>::load",
            "svc::items",
        ];
        assert_eq!(Driver::from_frames(diesel), Some(Driver::Diesel));
        assert_eq!(Driver::from_frames(["PQexecParams", "main"]), Some(Driver::Libpq));
        // tokio_postgres:: is not postgres::, postgres_protocol:: neither.
        let tp =
            ["postgres_protocol::message::frontend::bind", "tokio_postgres::client::Client::query"];
        assert_eq!(Driver::from_frames(tp), Some(Driver::TokioPostgres));
        assert_eq!(
            Driver::from_frames([
                "postgres::client::Client::query",
                "tokio_postgres::query::query"
            ]),
            Some(Driver::Postgres)
        );
        assert_eq!(Driver::from_frames(["mysqlx::run", "my_sqlx::go", "svc::main"]), None);
    }

    #[test]
    fn the_dominant_driver_needs_nearly_every_execution() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("diesel".to_string(), 95u64);
        m.insert("sqlx".to_string(), 5);
        assert_eq!(dominant(&m), Some(Driver::Diesel));
        m.insert("sqlx".to_string(), 20);
        assert_eq!(dominant(&m), None);
        assert_eq!(dominant(&Default::default()), None);
    }

    #[test]
    fn only_one_per_item_equality_in_the_where_clause_is_batched() {
        assert_eq!(
            batched_query("SELECT a FROM users WHERE id = $1").as_deref(),
            Some("SELECT a FROM users WHERE id = ANY($1)")
        );
        // diesel's form.
        assert_eq!(
            batched_query(
                r#"SELECT "tags"."id", "tags"."name" FROM "tags" WHERE ("tags"."item_id" = $1)"#
            )
            .as_deref(),
            Some(
                r#"SELECT "tags"."id", "tags"."name" FROM "tags" WHERE ("tags"."item_id" = ANY($1))"#
            )
        );
        assert_eq!(
            batched_query("DELETE FROM t WHERE id=$12").as_deref(),
            Some("DELETE FROM t WHERE id=ANY($12)")
        );
        assert_eq!(
            batched_query("UPDATE jobs SET done = true WHERE id = $1").as_deref(),
            Some("UPDATE jobs SET done = true WHERE id = ANY($1)")
        );
        // The issue's invalid rewrite: a per-item SET value is not batched.
        assert_eq!(
            batched_query(r#"UPDATE "items" SET "updated_at" = $1 WHERE "items"."id" = $2"#),
            None
        );
        // Ambiguous, ranges, no WHERE, inserts, an `= $1` in a string or a subquery's WHERE only.
        assert_eq!(batched_query("SELECT a FROM t WHERE org = $1 AND id = $2"), None);
        assert_eq!(batched_query("SELECT a FROM t WHERE id >= $1"), None);
        assert_eq!(batched_query("SELECT a FROM t WHERE id <= $1 AND k != $2"), None);
        assert_eq!(batched_query("SELECT a FROM t"), None);
        assert_eq!(batched_query("INSERT INTO t (a) VALUES ($1)"), None);
        assert_eq!(batched_query("SELECT 'x = $1' FROM t WHERE k = 'y = $2'"), None);
        assert_eq!(batched_query("SELECT a FROM t WHERE k = 'unterminated"), None);
    }

    #[test]
    fn a_page_is_a_limit_one_past_the_last_parameter() {
        assert_eq!(
            paged_query("SELECT id, name FROM users ORDER BY id").as_deref(),
            Some("SELECT id, name FROM users ORDER BY id LIMIT $1")
        );
        assert_eq!(
            paged_query("SELECT id FROM orders WHERE user_id = $2 AND s = $1;").as_deref(),
            Some("SELECT id FROM orders WHERE user_id = $2 AND s = $1 LIMIT $3")
        );
        assert_eq!(paged_query("SELECT id FROM t LIMIT 5"), None);
        assert_eq!(paged_query("SELECT id FROM t FOR UPDATE"), None);
        assert_eq!(paged_query("UPDATE t SET a = 1"), None);
    }

    #[test]
    fn fixes_are_written_in_the_drivers_dialect() {
        let q = r#"SELECT "tags"."id", "tags"."name" FROM "tags" WHERE ("tags"."item_id" = $1)"#;
        let b = batched_query(q).unwrap();
        let (before, after) = n_plus_one_fix(Some(Driver::Diesel), q, Some(&b)).unwrap();
        assert!(
            before.contains("tags::item_id.eq(item.id)")
                && after.contains("tags::item_id.eq_any(&ids)")
                && !after.contains("sqlx"),
            "{after}"
        );
        // diesel's sql_query with hand-written SQL keeps its SQL, batched.
        let raw = "SELECT id, name FROM owners WHERE id = $1";
        let (before, after) =
            n_plus_one_fix(Some(Driver::Diesel), raw, batched_query(raw).as_deref()).unwrap();
        assert!(
            before.contains("sql_query(\"SELECT id, name FROM owners WHERE id = $1\")"),
            "{before}"
        );
        assert!(
            after.contains("sql_query(\"SELECT id, name FROM owners WHERE id = ANY($1)\")")
                && after.contains(".bind::<Array<BigInt>, _>(&ids)"),
            "{after}"
        );
        assert_eq!(
            table_and_column("SELECT a FROM public.\"tags\" WHERE tag_id = ANY($1)"),
            Some(("tags".into(), "tag_id".into()))
        );
        let (_, after) = n_plus_one_fix(Some(Driver::SeaOrm), q, Some(&b)).unwrap();
        assert!(
            after.contains("tags::Column::ItemId.is_in(ids)") && after.contains(".all(db)"),
            "{after}"
        );
        let (_, after) = n_plus_one_fix(Some(Driver::Sqlx), q, Some(&b)).unwrap();
        assert!(after.contains("sqlx::query_as") && after.contains("= ANY($1)"), "{after}");
        let (_, after) = n_plus_one_fix(Some(Driver::TokioPostgres), q, Some(&b)).unwrap();
        assert!(after.contains("client.query(") && after.contains(".await?"), "{after}");
        // Without an accepted rewrite, the raw-SQL drivers show no code.
        assert_eq!(n_plus_one_fix(Some(Driver::Sqlx), q, None), None);
        assert_eq!(n_plus_one_fix(None, q, Some(&b)), None);
        assert_eq!(n_plus_one_fix(Some(Driver::Libpq), q, Some(&b)), None);
        let (_, page) = paged_fix(Some(Driver::Diesel), "SELECT * FROM t", None).unwrap();
        assert!(page.contains(".limit(page_size)"), "{page}");
        let (_, tx) = transaction_fix(Some(Driver::Diesel), None).unwrap();
        assert!(tx.contains("conn.transaction(") && !tx.contains("pool.begin"), "{tx}");
    }

    #[test]
    fn only_accepted_rewrites_are_shown() {
        let rewrites = vec![
            CheckedRewrite {
                sql: "SELECT a FROM t WHERE id = ANY($1)".into(),
                accepted: true,
                error: None,
            },
            CheckedRewrite {
                sql: "SELECT b FROM u WHERE id = ANY($1)".into(),
                accepted: false,
                error: Some("column \"b\" does not exist".into()),
            },
        ];
        assert!(checked(&rewrites, Some("SELECT a FROM t WHERE id = ANY($1)")).is_some());
        assert!(checked(&rewrites, Some("SELECT b FROM u WHERE id = ANY($1)")).is_none());
        assert!(checked(&rewrites, Some("SELECT never_asked")).is_none());
        assert!(checked(&rewrites, None).is_none());
    }
}
