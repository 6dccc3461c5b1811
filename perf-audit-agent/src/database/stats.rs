//! Reading PostgreSQL's own statistics over one sqlx connection:
//! `pg_stat_statements` (per-statement calls, time, rows),
//! `pg_stat_user_tables` / `pg_stat_user_indexes` (scans, sizes) and
//! generic-plan `EXPLAIN`s. Every statement of ours carries the
//! `/* perf-audit */` comment, so that our own queries are left out of the
//! statement statistics.
//!
//! On a user's database the session is read-only (`SET SESSION
//! CHARACTERISTICS AS TRANSACTION READ ONLY`): nothing is ever written.
//! Only on the private throwaway database of the demo and the tests does
//! [`Db::index_gain`] create an index, inside a transaction that is always
//! rolled back, to measure what the recommended index would save.
//!
//! Statement texts from the wire or from `pg_stat_statements` are untrusted:
//! they are planned, never executed, only when `sql_text::single_statement`
//! accepts them, through one Parse of the extended protocol, inside a
//! read-only transaction that is always rolled back ([`plan_in`]).

use std::{collections::HashMap, str::FromStr as _, time::Duration};

use sqlx::{
    AssertSqlSafe, Connection as _, PgConnection, Row as _,
    postgres::{PgConnectOptions, PgSslMode},
};

pub use perf_audit_analysis::database::stats::{
    ENABLE_PG_STAT_STATEMENTS, IndexStat, StatementStat, StatementsUnavailable, TableStat,
};
pub use perf_audit_analysis::{database::sql_text::{Refusal, single_statement}, report::schema::RolePrivileges};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One backend of `pg_stat_activity`, as [`Db::activity`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRow {
    pub port: i32,
    pub addr: String,
    pub state: String,
    pub query: String,
    pub state_for_ns: i64,
    pub state_change_ns: i64,
}

pub struct Db {
    conn: PgConnection,
    pub server_version_num: i32,
    pub server_version: String,
    pub database: String,
    /// The private throwaway server of the demo or the tests.
    pub private: bool,
}

fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Connects without TLS (this build has no TLS backend), read-only unless
/// the server is a private throwaway one. Errors are one line, without the
/// URL (which may hold a password).
pub async fn connect(url: &str) -> Result<Db, String> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| format!("invalid database URL: {}", one_line(e)))?
        .application_name("perf-audit")
        .ssl_mode(PgSslMode::Disable);
    let mut conn = tokio::time::timeout(TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| format!("no answer from the database within {} s", TIMEOUT.as_secs()))?
        .map_err(one_line)?;
    let row = sqlx::query("/* perf-audit */ SELECT current_setting('server_version_num')::int4, current_setting('server_version'), current_database()::text, current_setting('data_directory', true)")
        .fetch_one(&mut conn)
        .await
        .map_err(one_line)?;
    let server_version_num: i32 = row.try_get(0).map_err(one_line)?;
    let server_version: String = row.try_get(1).map_err(one_line)?;
    let database: String = row.try_get(2).map_err(one_line)?;
    let data_dir: Option<String> = row.try_get(3).map_err(one_line)?;
    let private = data_dir.is_some_and(|d| crate::postgres::private::is_private_data_dir(std::path::Path::new(&d)));
    let mut session = vec!["/* perf-audit */ SET statement_timeout = '10s'", "/* perf-audit */ SET lock_timeout = '1s'"];
    if !private {
        session.push("/* perf-audit */ SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
    }
    for sql in session {
        sqlx::raw_sql(sql).execute(&mut conn).await.map_err(one_line)?;
    }
    Ok(Db { conn, server_version_num, server_version, database, private })
}

impl Db {
    /// Cumulative statement statistics of this database, by queryid.
    pub async fn statements(&mut self) -> Result<HashMap<i64, StatementStat>, StatementsUnavailable> {
        let created: i64 = sqlx::query_scalar("/* perf-audit */ SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| StatementsUnavailable::Other(one_line(e)))?;
        if created == 0 {
            return Err(StatementsUnavailable::NotCreated);
        }
        // PostgreSQL 13 renamed total_time/max_time to *_exec_time.
        let (total, max) = if self.server_version_num >= 130_000 {
            ("total_exec_time", "max_exec_time")
        } else {
            ("total_time", "max_time")
        };
        let sql = format!(
            "/* perf-audit */ SELECT queryid::int8, min(query)::text, sum(calls)::int8, sum({total})::float8, max({max})::float8, sum(rows)::int8 \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid IS NOT NULL \
               AND query NOT LIKE '%perf-audit%' \
             GROUP BY queryid"
        );
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut self.conn).await.map_err(|e| {
            let msg = one_line(e);
            if msg.contains("shared_preload_libraries") {
                StatementsUnavailable::NotPreloaded
            } else {
                StatementsUnavailable::Other(msg)
            }
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let get = || -> Result<(i64, StatementStat), sqlx::Error> {
                Ok((
                    row.try_get(0)?,
                    StatementStat {
                        query: row.try_get(1)?,
                        calls: row.try_get(2)?,
                        total_ms: row.try_get(3)?,
                        max_ms: row.try_get(4)?,
                        rows: row.try_get(5)?,
                    },
                ))
            };
            if let Ok((id, stat)) = get() {
                out.insert(id, stat);
            }
        }
        Ok(out)
    }

    pub async fn tables(&mut self) -> Result<Vec<TableStat>, String> {
        let rows = sqlx::query(
            "/* perf-audit */ SELECT schemaname::text, relname::text, coalesce(seq_scan, 0)::int8, coalesce(seq_tup_read, 0)::int8, \
             coalesce(idx_scan, 0)::int8, coalesce(idx_tup_fetch, 0)::int8, greatest(n_live_tup, (SELECT reltuples FROM pg_class c WHERE c.oid = relid)::int8)::int8 \
             FROM pg_stat_user_tables",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(one_line)?;
        rows.iter()
            .map(|r| {
                Ok(TableStat {
                    schema: r.try_get(0)?,
                    table: r.try_get(1)?,
                    seq_scan: r.try_get(2)?,
                    seq_tup_read: r.try_get(3)?,
                    idx_scan: r.try_get(4)?,
                    idx_tup_fetch: r.try_get(5)?,
                    live_rows: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(one_line)
    }

    pub async fn indexes(&mut self) -> Result<Vec<IndexStat>, String> {
        let rows = sqlx::query(
            "/* perf-audit */ SELECT s.schemaname::text, s.relname::text, s.indexrelname::text, coalesce(s.idx_scan, 0)::int8, \
             coalesce(s.idx_tup_read, 0)::int8, pg_relation_size(s.indexrelid)::int8, i.indisunique, i.indisprimary, \
             pg_get_indexdef(s.indexrelid)::text, i.indkey::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), '')::text, \
             coalesce(pg_get_expr(i.indpred, i.indrelid), '')::text \
             FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(one_line)?;
        rows.iter()
            .map(|r| {
                let indkey: String = r.try_get(9)?;
                Ok(IndexStat {
                    schema: r.try_get(0)?,
                    table: r.try_get(1)?,
                    index: r.try_get(2)?,
                    idx_scan: r.try_get(3)?,
                    idx_tup_read: r.try_get(4)?,
                    size_bytes: r.try_get(5)?,
                    unique: r.try_get(6)?,
                    primary: r.try_get(7)?,
                    definition: r.try_get(8)?,
                    columns: indkey.split_whitespace().filter_map(|c| c.parse().ok()).collect(),
                    expressions: r.try_get(10)?,
                    predicate: r.try_get(11)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(one_line)
    }

    /// The `pg_stat_activity` rows of this database's client connections
    /// from the local `ports`: (client port, client address, state, text of
    /// the backend's current or last statement, how long it has been in its
    /// state when this read arrived, in ns). Rows of other users show
    /// `<insufficient privilege>` as their text unless the role has
    /// `pg_read_all_stats`.
    pub async fn activity(&mut self, ports: &[i32]) -> Result<Vec<ActivityRow>, String> {
        let rows = sqlx::query(
            "/* perf-audit */ SELECT client_port::int4, coalesce(host(client_addr), '')::text, coalesce(state, '')::text, coalesce(query, '')::text, \
             coalesce(extract(epoch FROM statement_timestamp() - state_change) * 1e9, -1)::int8, \
             coalesce(extract(epoch FROM state_change) * 1e9, 0)::int8 \
             FROM pg_stat_activity WHERE datname = current_database() AND client_port = ANY($1) AND pid <> pg_backend_pid()",
        )
        .bind(ports)
        .fetch_all(&mut self.conn)
        .await
        .map_err(one_line)?;
        rows.iter()
            .map(|r| Ok(ActivityRow { port: r.try_get(0)?, addr: r.try_get(1)?, state: r.try_get(2)?, query: r.try_get(3)?, state_for_ns: r.try_get(4)?, state_change_ns: r.try_get(5)? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(one_line)
    }

    /// The state of the backends of the local `ports` and the age of their
    /// transaction (ms, `None` outside one): (client port, state, age).
    /// Never their statement text.
    pub async fn transaction_states(&mut self, ports: &[i32]) -> Result<Vec<(i32, String, Option<f64>)>, String> {
        let rows = sqlx::query(
            "/* perf-audit */ SELECT client_port::int4, coalesce(state, '')::text, (extract(epoch FROM clock_timestamp() - xact_start) * 1e3)::float8 \
             FROM pg_stat_activity WHERE datname = current_database() AND client_port = ANY($1) AND pid <> pg_backend_pid()",
        )
        .bind(ports)
        .fetch_all(&mut self.conn)
        .await
        .map_err(one_line)?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect::<Result<_, sqlx::Error>>().map_err(one_line)
    }

    /// Names of the columns of `schema.table`, by attribute number.
    pub async fn column_names(&mut self, schema: &str, table: &str) -> Result<HashMap<i32, String>, String> {
        let rows = sqlx::query(
            "/* perf-audit */ SELECT a.attnum::int4, a.attname::text FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(&mut self.conn)
        .await
        .map_err(one_line)?;
        Ok(rows.iter().filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))).collect())
    }

    /// The generic plan of `sql` (parameters `$n` unknown) as EXPLAIN JSON,
    /// planned in a read-only transaction that is always rolled back (see
    /// [`plan_in`]: the text is never executed, and never more than one
    /// statement).
    pub async fn explain_generic(&mut self, sql: &str) -> Result<serde_json::Value, PlanError> {
        self.explain_read_only(sql, false).await
    }

    /// The generic plan of `sql` with sequential scans priced out
    /// (`SET LOCAL enable_seqscan = off`), in the same read-only, rolled
    /// back transaction: the plan the table would get once large (see
    /// `thresholds::AT_SCALE_METHOD`).
    pub async fn explain_at_scale(&mut self, sql: &str) -> Result<serde_json::Value, PlanError> {
        self.explain_read_only(sql, true).await
    }

    async fn explain_read_only(&mut self, sql: &str, seqscan_off: bool) -> Result<serde_json::Value, PlanError> {
        let sql = single_statement(sql).map_err(PlanError::Refused)?;
        let mut tx = self.conn.begin_with("/* perf-audit */ BEGIN READ ONLY").await.map_err(server)?;
        let result = async {
            if seqscan_off {
                own(&mut tx, "/* perf-audit */ SET LOCAL enable_seqscan = off").await?;
            }
            plan_in(&mut tx, sql).await
        }
        .await;
        let _ = tx.rollback().await;
        self.forget_plan_statement(result.is_err()).await;
        result
    }

    /// A prepared statement is not transactional: when the EXPLAIN failed
    /// after the PREPARE, the statement outlived the rollback.
    async fn forget_plan_statement(&mut self, failed: bool) {
        if failed {
            let _ = own(&mut self.conn, "/* perf-audit */ DEALLOCATE perf_audit_explain").await;
        }
    }

    /// Total cost of the generic plan before and after creating the index
    /// on `schema.table (columns)` (every name quoted, see
    /// `advice::create_index_statement`), inside a transaction that is
    /// always rolled back and turned read-only right after the `CREATE
    /// INDEX`, before the statement text reaches the server. Only on the
    /// private throwaway server.
    pub async fn index_gain(&mut self, sql: &str, schema: &str, table: &str, columns: &[String]) -> Result<(f64, f64), PlanError> {
        if !self.private {
            return Err(PlanError::Server("not a private database: indexes are never created on a user's database".into()));
        }
        let create = super::advice::create_index_statement(schema, table, columns)
            .ok_or_else(|| PlanError::Server("the index's names cannot be quoted".into()))?;
        let before = super::advice::total_cost(&self.explain_generic(sql).await?);
        let sql = single_statement(sql).map_err(PlanError::Refused)?;
        let mut tx = self.conn.begin().await.map_err(server)?;
        let result = async {
            own(&mut tx, &format!("/* perf-audit */ {create}")).await?;
            own(&mut tx, "/* perf-audit */ SET TRANSACTION READ ONLY").await?;
            plan_in(&mut tx, sql).await
        }
        .await;
        let _ = tx.rollback().await;
        self.forget_plan_statement(result.is_err()).await;
        Ok((before, super::advice::total_cost(&result?)))
    }

    /// What the connected role holds beyond what the audit needs (see the
    /// README's database profile section): superuser, or tables it owns or
    /// can write. Read from `pg_roles` and `has_table_privilege`.
    pub async fn privileges(&mut self) -> Result<RolePrivileges, String> {
        let row = sqlx::query(
            "/* perf-audit */ SELECT current_user::text, r.rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), \
             (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                AND pg_has_role(c.relowner, 'USAGE'))::int8, \
             (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))::int8, \
             coalesce((SELECT array_agg(t ORDER BY t) FROM (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS t \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                 AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') ORDER BY 1 LIMIT 5) w), '{}')::text[] \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .persistent(false)
        .fetch_one(&mut self.conn)
        .await
        .map_err(one_line)?;
        let get = || -> Result<RolePrivileges, sqlx::Error> {
            let superuser: bool = row.try_get(1)?;
            let owned: i64 = row.try_get(3)?;
            let writable: i64 = row.try_get(4)?;
            Ok(RolePrivileges {
                role: row.try_get(0)?,
                superuser,
                read_all_stats: row.try_get(2)?,
                owned_tables: owned.max(0) as u64,
                writable_tables: writable.max(0) as u64,
                writable_examples: row.try_get(5)?,
                more_than_needed: superuser || owned > 0 || writable > 0,
            })
        };
        get().map_err(one_line)
    }
}

/// Why a statement's plan was not inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Refused before anything was sent (`sql_text::single_statement`).
    Refused(Refusal),
    /// The server's answer (one line).
    Server(String),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Refused(r) => write!(f, "{r}"),
            PlanError::Server(s) => write!(f, "{s}"),
        }
    }
}

fn server(e: impl std::fmt::Display) -> PlanError {
    PlanError::Server(one_line(e))
}

/// PostgreSQL's bound on a statement's parameters (Bind's 16-bit count).
const MAX_PARAMS: i64 = 65_535;

/// Runs one statement of ours, through the extended protocol.
async fn own(conn: &mut PgConnection, sql: &str) -> Result<(), PlanError> {
    sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false).execute(&mut *conn).await.map_err(server)?;
    Ok(())
}

/// The generic plan of `sql`, one statement already checked by
/// `sql_text::single_statement`, in the caller's read-only transaction:
/// `PREPARE` sent as ONE Parse of the extended protocol (the server refuses
/// several commands there, so the text cannot end the transaction or add a
/// statement), the parameter count read from `pg_prepared_statements`
/// (bounded by the protocol's 65,535, never read from the text), then
/// `EXPLAIN (FORMAT JSON) EXECUTE` with NULLs under `force_generic_plan`:
/// planned, never executed. One path on every server version.
async fn plan_in(conn: &mut PgConnection, sql: &str) -> Result<serde_json::Value, PlanError> {
    own(conn, "/* perf-audit */ SET LOCAL plan_cache_mode = force_generic_plan").await?;
    own(conn, &format!("/* perf-audit */ PREPARE perf_audit_explain AS {sql}")).await?;
    let params: i64 = sqlx::query_scalar(
        "/* perf-audit */ SELECT coalesce(cardinality(parameter_types), 0)::int8 FROM pg_prepared_statements WHERE name = 'perf_audit_explain'",
    )
    .persistent(false)
    .fetch_one(&mut *conn)
    .await
    .map_err(server)?;
    if !(0..=MAX_PARAMS).contains(&params) {
        return Err(PlanError::Server(format!("the server reports {params} parameters, over the protocol's {MAX_PARAMS}")));
    }
    let args = if params == 0 { String::new() } else { format!("({})", vec!["NULL"; params as usize].join(", ")) };
    let rows = sqlx::query(AssertSqlSafe(format!("/* perf-audit */ EXPLAIN (FORMAT JSON) EXECUTE perf_audit_explain{args}")))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(server)?;
    own(conn, "/* perf-audit */ DEALLOCATE perf_audit_explain").await?;
    let row = rows.first().ok_or_else(|| PlanError::Server("EXPLAIN returned no row".into()))?;
    let text = row.try_get_unchecked::<String, _>(0).map_err(server)?;
    serde_json::from_str(&text).map_err(|e| PlanError::Server(format!("EXPLAIN output is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::private::PrivatePostgres;

    const INJECTION: &str = "SELECT v FROM t WHERE id = $1; COMMIT; BEGIN READ WRITE; CREATE TABLE x(i int); COMMIT; --";

    /// Both locks on a real server: the validator refuses the injection,
    /// and past it the server refuses several commands in one Parse; the
    /// parameter count is the server's; a write is planned, never run.
    #[test]
    fn untrusted_texts_are_planned_in_one_parse_never_run() {
        let pg = PrivatePostgres::start().expect("private PostgreSQL");
        pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text)").unwrap();
        pg.psql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut db = connect(&pg.url()).await.unwrap();
            assert!(matches!(db.explain_generic(INJECTION).await, Err(PlanError::Refused(Refusal::SeveralStatements))));
            assert!(matches!(db.explain_at_scale(INJECTION).await, Err(PlanError::Refused(Refusal::SeveralStatements))));
            // Past the validator, the extended protocol refuses it.
            let mut tx = db.conn.begin_with("/* perf-audit */ BEGIN READ ONLY").await.unwrap();
            let err = plan_in(&mut tx, INJECTION).await.unwrap_err();
            assert!(err.to_string().contains("cannot insert multiple commands into a prepared statement"), "{err}");
            let _ = tx.rollback().await;
            db.forget_plan_statement(true).await;
            // `$N` in a comment counts for nothing: the server says 1 parameter.
            let plan = db.explain_generic("SELECT v FROM t WHERE id = $1 -- $99999999999 $18446744073709551615").await.unwrap();
            assert!(super::super::advice::total_cost(&plan) > 0.0, "{plan}");
            // More parameters than the protocol allows, or a number the server refuses: an error, no allocation.
            assert!(db.explain_generic("SELECT $70000::int").await.is_err());
            assert!(db.explain_generic("SELECT $99999999999::int").await.is_err());
            // Writes are planned, never executed; the session stays usable.
            db.explain_generic("DELETE FROM t").await.unwrap();
            db.explain_at_scale("UPDATE t SET v = 'x' WHERE id = $1").await.unwrap();
            let gain = db.index_gain("SELECT id FROM t WHERE v = $1", "public", "t", &["v".to_string()]).await.unwrap();
            assert!(gain.0 > 0.0 && gain.1 > 0.0, "{gain:?}");
            // The private server's index_gain: a hostile table name is quoted, not run.
            assert!(db.index_gain("SELECT 1", "public", "t\"; DROP TABLE t; --", &["v".to_string()]).await.is_err());
            assert_eq!(db.explain_generic("SELECT count(*) FROM t").await.map(|_| ()), Ok(()));
        });
        assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "100");
        assert_eq!(pg.psql("SELECT to_regclass('public.x') IS NULL").unwrap(), "t");
        assert_eq!(pg.psql("SELECT count(*) FROM pg_indexes WHERE tablename = 't'").unwrap(), "1", "only the primary key: the measured index was rolled back");
    }
}
