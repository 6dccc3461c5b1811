//! The database profile on the demo (axum + sqlx) built the four ways
//! services ship: `debug = true`, line tables only, Cargo's default release
//! profile (symbols only) and stripped with a separate debug file. The N+1
//! loop and the missing index come out on every build; where the build has
//! line tables (or its debug file), at `fetch_authors_one_by_one`'s line
//! with every execution tied to code; with symbols only, the loop is still
//! found by its statement and the report says why executions are not tied
//! and how to fix it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use perf_audit_agent::postgres::private::PrivatePostgres;
use perf_audit_tests::*;

/// The demo built with `CARGO_PROFILE_RELEASE_DEBUG=debug` into its own
/// target directory (`debug = true` shares the other tests' build).
fn demo_built(debug: Option<&str>) -> PathBuf {
    let demo = workspace_root().join("examples/demo-service");
    let target = match debug {
        None => demo.join("target"),
        Some(d) => demo.join(format!("target/debug-{d}")),
    };
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--manifest-path"]).arg(demo.join("Cargo.toml")).arg("--target-dir").arg(&target);
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("CARGO_TARGET_DIR");
    if let Some(d) = debug {
        cmd.env("CARGO_PROFILE_RELEASE_DEBUG", d);
    }
    let out = cmd.output().expect("run cargo");
    assert!(out.status.success(), "building the demo ({debug:?}) failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target.join("release/demo-service")
}

struct Demo {
    child: Child,
    addr: String,
}

impl Demo {
    fn start(bin: &Path, url: &str) -> Demo {
        let mut child = Command::new(bin).args(["--listen", "127.0.0.1:0"]).env("DATABASE_URL", url).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the demo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("demo stdout");
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("demo said {line:?}")).to_string();
        Demo { child, addr }
    }

    fn get(&self, path: &str) -> u16 {
        http_get(&self.addr, path).0
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Audits the running demo (attached by pid after a warm-up) under a
/// bounded load of the N+1 feed and the unindexed search.
fn audit(demo: &Demo, extra: &[&str]) -> (serde_json::Value, String) {
    for _ in 0..20 {
        assert_eq!(demo.get("/feed"), 200);
    }
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let pid = demo.child.id().to_string();
    let mut args = vec!["--out", out_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["--pid", &pid, "database", "--duration", "8s"]);
    let agent = AuditingAgent::start(&args);
    let start = Instant::now();
    let countries = ["DE", "FR", "US", "JP", "BR"];
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(6) {
        assert_eq!(demo.get("/feed"), 200);
        assert_eq!(demo.get(&format!("/users/search?country={}", countries[i % 5])), 200);
        i += 1;
    }
    agent.finish();
    let json = std::fs::read_to_string(out_dir.join("report.json")).expect("report.json");
    (serde_json::from_str(&json).unwrap(), std::fs::read_to_string(out_dir.join("report.md")).unwrap())
}

/// Lines of `fn_name`'s body in the demo's db.rs.
fn body_lines(fn_name: &str) -> std::ops::RangeInclusive<u64> {
    fn_body_lines("examples/demo-service/src/db.rs", fn_name)
}

#[test]
fn every_build_kind_finds_the_loop_and_says_how_much_it_could_tie_to_code() {
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let tmp = tempfile::tempdir().unwrap();
    let full = demo_built(None);
    let stripped = split_debug_info(&full, tmp.path(), DebugFileLayout::BuildId);
    let debug_dir = tmp.path().join("debug");
    let builds: Vec<(&str, PathBuf, Vec<&str>, bool)> = vec![
        ("debug = true", full.clone(), vec![], true),
        ("line-tables-only", demo_built(Some("line-tables-only")), vec![], true),
        ("symbols only (Cargo's default)", symbols_only_copy(&full, tmp.path()), vec![], false),
        ("stripped + debug file", stripped, vec!["--debug-dir", debug_dir.to_str().unwrap()], true),
    ];
    let mut table = Vec::new();
    for (build, bin, extra, lines) in &builds {
        let demo = Demo::start(bin, &pg.url());
        let (report, md) = audit(&demo, extra);
        let wire = &report["database"]["wire"];
        let (executions, tied) = (wire["executions"].as_u64().unwrap(), wire["executions_with_call_site"].as_u64().unwrap());
        assert!(executions > 500, "{build}: {executions} executions");
        table.push(format!("{build}: {tied} of {executions} executions tied to code ({:.1}%)", tied as f64 * 100.0 / executions as f64));
        let found = findings(&report);
        let n1 = found.iter().find(|(r, _, _, _)| r == "n-plus-one-query").unwrap_or_else(|| panic!("{build}: no N+1: {found:?}"));
        assert!(found.iter().any(|(r, _, _, _)| r == "missing-index"), "{build}: no missing index: {found:?}");
        if *lines {
            assert_eq!(n1.1, "demo_service::db::fetch_authors_one_by_one", "{build}: {found:?}");
            assert!(body_lines("fetch_authors_one_by_one").contains(&n1.3), "{build}: N+1 at line {}", n1.3);
            assert!(tied as f64 >= 0.95 * executions as f64, "{build}: only {tied} of {executions} executions tied to code");
        } else {
            assert_eq!(n1.1, "(not traced to code)", "{build}: {found:?}");
            let reason = wire["untied_reason"].as_str().unwrap_or_else(|| panic!("{build}: no reason for {tied} of {executions} tied"));
            assert!(reason.contains("line-tables-only"), "{build}: {reason}");
            assert!(md.contains("**Executions not tied to code**"), "{build}");
        }
        assert_fix_in_dialect(&report, build, "sqlx", &["sqlx::query_as(", "= ANY($1)"]);
        // The once-per-request lookups and the search are never an N+1.
        assert_eq!(found.iter().filter(|(r, _, _, _)| r == "n-plus-one-query").count(), 1, "{build}: {found:?}");
    }
    eprintln!("executions tied to code per build:\n  {}", table.join("\n  "));
}

/// The N+1's code fix is written in the driver its stacks show (read
/// from the frames, symbols suffice), and the SQL rewrite it shows was
/// parsed and planned by the server first.
fn assert_fix_in_dialect(report: &serde_json::Value, build: &str, driver: &str, needles: &[&str]) {
    let db = &report["database"];
    let drivers = &db["wire"]["drivers"];
    assert!(drivers[driver].as_u64().unwrap_or(0) > 0, "{build}: drivers seen {drivers}");
    let n1 = report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "n-plus-one-query").unwrap();
    let after = n1["code_fix"]["after"].as_str().unwrap_or_else(|| panic!("{build}: no code fix: {n1:#}"));
    for needle in needles {
        assert!(after.contains(needle), "{build}: the {driver} fix lacks {needle}: {after}");
    }
    let other = if driver == "sqlx" { "diesel" } else { "sqlx" };
    assert!(!after.contains(other), "{build}: a {driver} service got {other} code: {after}");
    let query = db["n_plus_one"][0]["query"].as_str().unwrap();
    let rewrites = db["rewrites"].as_array().unwrap_or_else(|| panic!("{build}: no rewrites checked: {db:#}"));
    let batched = rewrites
        .iter()
        .find(|r| r["sql"].as_str().is_some_and(|s| s.contains("ANY($1)") && s.replace("ANY($1)", "$1") == query))
        .unwrap_or_else(|| panic!("{build}: `{query}` batched was not checked: {rewrites:?}"));
    assert_eq!(batched["accepted"], true, "{build}: PostgreSQL refused {batched}");
    assert!(n1["recommendation"].as_str().unwrap().contains("PostgreSQL parsed and planned this rewrite"), "{build}: {n1:#}");
}

/// diesel on libpq (a C driver) on the blocking pool, with an r2d2 pool:
/// the executions are written by libpq, on a blocking-pool thread; the
/// loop is found at the function that loops (`debug = true`), or by its
/// statement on a symbols-only build; the batched twin is never flagged.
#[test]
fn a_c_driver_on_the_blocking_pool_is_traced_to_the_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let full = fixture("diesel-service", Build::Release);
    let stripped = split_debug_info(&full, tmp.path(), DebugFileLayout::BuildId);
    let debug_dir = tmp.path().join("debug");
    let builds = [
        ("debug = true", full.clone(), true, vec![]),
        ("line-tables-only", fixture("diesel-service", Build::ReleaseLineTablesOnly), true, vec![]),
        ("symbols only", symbols_only_copy(&full, tmp.path()), false, vec![]),
        ("stripped + debug file", stripped, true, vec!["--debug-dir".to_string(), debug_dir.display().to_string()]),
    ];
    for (build, bin, lines, extra) in builds {
        let addr = free_loopback_addr();
        let scenario = tmp.path().join("scenario.toml");
        std::fs::write(&scenario, format!("[[request]]\nurl = \"http://{addr}/items\"\nweight = 1\n\n[[request]]\nurl = \"http://{addr}/items/batched\"\nweight = 1\n")).unwrap();
        let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
        args.extend([
            "database", "--duration", "8s", "--rps", "40", "--private-database", "--scenario", scenario.to_str().unwrap(),
            "--", bin.to_str().unwrap(), "--listen", &addr,
        ]);
        let run = run_agent(&args);
        run.assert_success();
        let report = run.report();
        let wire = &report["database"]["wire"];
        let (executions, tied) = (wire["executions"].as_u64().unwrap(), wire["executions_with_call_site"].as_u64().unwrap());
        eprintln!("{build}: {tied} of {executions} executions tied to code");
        assert!(executions > 1000, "{build}: {executions} executions: {wire:#}");
        let found = findings(&report);
        let n1: Vec<_> = found.iter().filter(|(r, _, _, _)| r == "n-plus-one-query").collect();
        assert_eq!(n1.len(), 1, "{build}: one loop, the batched twin clean: {found:?}");
        assert_fix_in_dialect(&report, build, "diesel", &["sql_query(\"SELECT id, name FROM owners WHERE id = ANY($1)\")", ".bind::<Array<BigInt>, _>(&ids)"]);
        if lines {
            assert_eq!(n1[0].1, "diesel_service::load_owners_one_by_one", "{build}: {found:?}");
            assert!(tied as f64 >= 0.95 * executions as f64, "{build}: {tied} of {executions} tied");
        } else {
            let query = report["database"]["n_plus_one"][0]["query"].as_str().unwrap_or_default().to_string();
            assert!(query.contains("WHERE id = $1"), "{build}: the loop by its statement: {query}");
        }
    }
}
