//! A throwaway PostgreSQL (the agent's `PrivatePostgres`: loopback, trust,
//! pg_stat_statements preloaded) for tools outside the test harness, e.g.
//! `cargo xtask bench database`. Prints `url <URL>`, then runs each line
//! of its stdin as SQL (psql) and answers `ok <output>` or `error
//! <message>` on one line; when stdin closes the server and its directory
//! go with it.

use std::io::{BufRead, Write};

fn main() {
    let pg = match perf_audit_agent::postgres::private::PrivatePostgres::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("private-postgres: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "url {}", pg.url());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(sql) = line else { break };
        let answer = match pg.psql(&sql) {
            Ok(text) => format!("ok {}", text.replace('\n', " ")),
            Err(e) => format!("error {}", e.to_string().replace('\n', " ")),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}
