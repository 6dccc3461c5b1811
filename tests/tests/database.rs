//! The database profile end to end: a private PostgreSQL, the demo service
//! (axum + sqlx, built like a user builds it: release, no frame pointers)
//! under a bounded loopback load, and the agent tracing it with real eBPF.
//! The demo's planted database defects must come out at their code: the
//! N+1 loop at `fetch_authors_one_by_one`'s line, a `CREATE INDEX
//! CONCURRENTLY` for the unindexed `users.country` filter, and the unused
//! `users_last_login_at_idx`; without pg_stat_statements the audit says how
//! to enable it and still completes from the wire alone.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use perf_audit_agent::postgres::private::PrivatePostgres;
use perf_audit_tests::*;

/// The demo service binary, built once per test process.
fn demo_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = workspace_root().join("examples/demo-service/Cargo.toml");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--manifest-path"])
            .arg(&manifest)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run cargo");
        assert!(out.status.success(), "building the demo failed:\n{}", String::from_utf8_lossy(&out.stderr));
        workspace_root().join("examples/demo-service/target/release/demo-service")
    })
    .clone()
}

/// The demo service, stopped when dropped.
struct Demo {
    child: Child,
    addr: String,
}

impl Demo {
    fn start(database_url: &str) -> Demo {
        let mut child = Command::new(demo_bin())
            .args(["--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the demo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("demo stdout");
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("demo said {line:?}")).to_string();
        Demo { child, addr }
    }

    fn get(&self, path: &str) -> u16 {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the demo");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// A bounded mix: the N+1 feed, the unindexed search, the well-behaved
    /// profile (one `user_by_id` per request: must not look like N+1).
    fn load(&self, rounds: usize, limit: Duration) -> usize {
        const COUNTRIES: [&str; 5] = ["DE", "FR", "US", "JP", "BR"];
        let start = Instant::now();
        let mut done = 0;
        while done < rounds && start.elapsed() < limit {
            assert_eq!(self.get("/feed"), 200);
            assert_eq!(self.get(&format!("/users/search?country={}", COUNTRIES[done % 5])), 200);
            assert_eq!(self.get(&format!("/profile/{}", 1 + done * 37 % 5000)), 200);
            assert_eq!(self.get("/feed/fast"), 200);
            done += 1;
        }
        done
    }
}

impl Demo {
    /// The back-office endpoints (`backoffice.rs`), each planted defect
    /// beside its twin, one request after the other.
    /// A user's pace: 5 ms between two requests, and a pause between two
    /// rounds drawn from an exponential distribution (80 ms on average,
    /// fixed seed), so the once-per-round statements arrive at random as
    /// independent users' requests do: a client sending the same requests
    /// in lockstep, each the moment the previous answer arrives, makes a
    /// once-per-request statement as regular as a loop (the N+1 rule's
    /// stated limit: run 2 of this test without pauses reported the tag
    /// search and the export as N+1 at 9.3 ms "round trips", the period of
    /// the lockstep).
    fn back_office_load(&self, rounds: usize, limit: Duration) -> usize {
        let start = Instant::now();
        let mut done = 0;
        let mut seed: u64 = 0x5eed;
        while done < rounds && start.elapsed() < limit {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((seed >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            std::thread::sleep(Duration::from_secs_f64(-u.ln() * 0.080));
            let id = 1 + done * 37 % 5000;
            for path in [
                format!("/dashboard/{id}"),
                format!("/dashboard/fast/{id}"),
                "/jobs/run".to_string(),
                "/events/export".to_string(),
                "/events/recent".to_string(),
                format!("/tags/search?label=l{}", done % 7),
            ] {
                std::thread::sleep(Duration::from_millis(5));
                assert_eq!(self.get(&path), 200, "{path}");
            }
            done += 1;
        }
        done
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the agent on `pid`, waits until it is collecting, drives the
/// load, and returns the finished run.
fn audit_under_load(demo: &Demo, extra: &[&str]) -> (std::process::Output, tempfile::TempDir, usize) {
    audit_with_load(demo, extra, |demo| demo.load(150, Duration::from_secs(7)))
}

fn audit_with_load(demo: &Demo, extra: &[&str], load: impl FnOnce(&Demo) -> usize) -> (std::process::Output, tempfile::TempDir, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let pid = demo.child.id().to_string();
    let mut cmd = Command::new(agent_bin());
    cmd.args(["--quiet", "--out"]).arg(&out_dir).args(["--pid", &pid, "database", "--duration", "10s"]).args(extra);
    let mut agent = cmd.env_remove("DATABASE_URL").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The agent says "auditing" once its programs are attached.
    let mut stderr = BufReader::new(agent.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("auditing") {
            break;
        }
    }
    assert!(seen.contains("auditing"), "the agent did not start:\n{seen}");
    let rounds = load(demo);
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let mut output = agent.wait_with_output().unwrap();
    output.stderr = format!("{seen}{rest}").into_bytes();
    (output, tmp, rounds)
}

fn read_report(tmp: &tempfile::TempDir) -> (serde_json::Value, String) {
    let dir = tmp.path().join("out");
    let json = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    (serde_json::from_str(&json).unwrap(), std::fs::read_to_string(dir.join("report.md")).unwrap())
}

/// Lines of `fn_name`'s body in the demo's db.rs.
fn body_lines(fn_name: &str) -> std::ops::RangeInclusive<u64> {
    let src = std::fs::read_to_string(workspace_root().join("examples/demo-service/src/db.rs")).unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let start = lines.iter().position(|l| l.contains(&format!("fn {fn_name}("))).expect("fn in db.rs");
    let end = start + lines[start..].iter().position(|l| *l == "}").expect("end of fn");
    (start as u64 + 1)..=(end as u64 + 1)
}

#[test]
fn database_profile_finds_the_demos_n_plus_one_missing_and_unused_indexes_at_their_code() {
    finds_the_demos_defects(None);
}

/// The same with the database behind a 2 ms delay each way (a round trip
/// of 4 ms more, as a database in another zone): the N+1 is found at the
/// same line, ranked P0 from its measured cost, and the once-per-request
/// lookups are still not an N+1.
#[test]
fn database_profile_finds_the_demos_n_plus_one_with_the_database_4_ms_away() {
    finds_the_demos_defects(Some(Duration::from_millis(2)));
}

fn finds_the_demos_defects(delay: Option<Duration>) {
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let proxy = delay.map(|d| DelayProxy::start(format!("127.0.0.1:{}", pg.port()).parse().unwrap(), d));
    let url = match &proxy {
        Some(p) => p.url_for(&pg.url(), pg.port()),
        None => pg.url(),
    };
    let demo = Demo::start(&url);
    let (output, tmp, rounds) = audit_under_load(&demo, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed:\n{stderr}");
    // Each round is ~35 sequential round trips: fewer fit in 7 s when each costs 4 ms more.
    assert!(rounds >= if delay.is_some() { 10 } else { 20 }, "only {rounds} load rounds ran");
    let (report, md) = read_report(&tmp);
    let db = &report["database"];
    eprintln!("{}", serde_json::to_string_pretty(&db["wire"]).unwrap());

    // The URL was read from the target's own environment, and said so.
    assert!(db["connection_source"].as_str().unwrap().contains("/environ"), "{db}");
    assert_eq!(db["pg_stat_statements"], true);
    assert_eq!(db["private_database"], true);
    assert_eq!(db["wire"]["traced"], true);
    assert!(db["wire"]["connections"].as_u64().unwrap() >= 1, "{}", db["wire"]);
    // Drops depend on the machine's load; they must be counted, and most
    // executions must have been seen and tied to the code.
    assert!(db["wire"]["dropped_writes"].is_u64(), "{}", db["wire"]);
    assert!(db["wire"]["executions_with_call_site"].as_u64().unwrap() * 10 >= db["wire"]["executions"].as_u64().unwrap() * 9, "{}", db["wire"]);

    // N+1: at fetch_authors_one_by_one, on a line of its loop.
    let n1 = report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "n-plus-one-query").unwrap_or_else(|| panic!("no N+1 finding:\n{md}"));
    eprintln!("N+1 finding ({delay:?} each way): {} {} at {}:{} -- {} -- {}", n1["severity"], n1["function"], n1["file"], n1["line"], n1["evidence"], n1["ranking"]);
    // Ranked by its measured cost: 29 saved round trips are >= 10 ms (P0)
    // with the database 4 ms away; on loopback (~0.1 ms) they are worth
    // about a millisecond per request, whatever rank that gives.
    if delay.is_some() {
        assert_eq!(n1["severity"], "P0", "{n1}");
    }
    assert_eq!(n1["category"], "database");
    assert_eq!(n1["function"], "demo_service::db::fetch_authors_one_by_one", "{n1}");
    assert!(n1["file"].as_str().unwrap().ends_with("examples/demo-service/src/db.rs"), "{n1}");
    let line = n1["line"].as_u64().unwrap();
    assert!(body_lines("fetch_authors_one_by_one").contains(&line), "line {line} is not in the loop's fn {:?}", body_lines("fetch_authors_one_by_one"));
    assert!(n1["code_fix"]["after"].as_str().unwrap().contains("= ANY($1)"), "{n1}");
    // The well-behaved once-per-request lookups are not N+1.
    let n1s = report["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == "n-plus-one-query").count();
    assert_eq!(n1s, 1, "only the loop is an N+1:\n{md}");

    // The statement table ties the lookup to both of its call sites.
    let statements = db["statements"].as_array().unwrap();
    let lookup = statements
        .iter()
        .find(|s| s["query"].as_str().unwrap().contains("FROM users WHERE id = $1"))
        .unwrap_or_else(|| panic!("{statements:#?}"));
    assert!(lookup["calls"].as_i64().unwrap() >= 30 * rounds as i64 / 2, "{lookup}");
    let sites: Vec<&str> = lookup["call_sites"].as_array().unwrap().iter().map(|c| c["function"].as_str().unwrap()).collect();
    assert!(sites.contains(&"demo_service::db::fetch_authors_one_by_one"), "{sites:?}");
    // Only code that issues it (the wire key: stack fingerprint, statement,
    // connection).
    assert!(sites.iter().all(|f| ["demo_service::db::fetch_authors_one_by_one", "demo_service::db::user_by_id"].contains(f)), "{sites:?}");
    // The profile page's lookup runs the same statement on the same
    // connections, once per request against the loop's 30: where the 1 KiB
    // its stack fingerprint covers is the same sqlx I/O frames as the
    // loop's, it is charged to the loop (the fingerprint's known limit, see
    // ARCHITECTURE.md). Seen in both fresh-clone runs on loopback, and
    // missed once in two behind the delaying proxy: required on loopback.
    if delay.is_none() {
        assert!(sites.contains(&"demo_service::db::user_by_id"), "{sites:?}");
    }

    // Missing index on users.country, with a measured gain on this private DB.
    let missing = db["missing_indexes"].as_array().unwrap();
    let country = missing.iter().find(|m| m["table"] == "users").unwrap_or_else(|| panic!("{missing:#?}\n{md}"));
    assert_eq!(country["columns"][0], "country", "{country}");
    let create = country["create_sql"].as_str().unwrap();
    assert!(create.starts_with("CREATE INDEX CONCURRENTLY") && create.contains("ON users (country"), "{create}");
    assert!(country["cost_after"].as_f64().unwrap() < country["cost_before"].as_f64().unwrap() / 2.0, "{country}");
    eprintln!("missing index: {create} cost {} -> {}", country["cost_before"], country["cost_after"]);
    // ... and nothing was left behind by the measurement (rolled back).
    let left = pg.psql("SELECT count(*) FROM pg_indexes WHERE tablename = 'users' AND indexdef LIKE '%country%'").unwrap();
    assert_eq!(left, "0");

    // The unused index.
    let unused: Vec<&str> = db["unused_indexes"].as_array().unwrap().iter().map(|u| u["index"].as_str().unwrap()).collect();
    assert!(unused.contains(&"users_last_login_at_idx"), "{unused:?}");
    assert!(!unused.contains(&"posts_author_id_idx"), "used by /profile: {unused:?}");
    assert!(report["findings"].as_array().unwrap().iter().any(|f| f["rule"] == "unused-index" && f["title"].as_str().unwrap().contains("users_last_login_at_idx")));

    // report.md: the seed's section.
    assert!(md.contains("### Database Performance Analysis"), "{md}");
    assert!(md.contains("**N+1 Query Patterns**"));
    assert!(md.contains(&format!("src/db.rs:{line} - `demo_service::db::fetch_authors_one_by_one`")), "{md}");
    assert!(md.contains("CREATE INDEX CONCURRENTLY idx_users_country"), "{md}");
    assert!(md.contains("DROP INDEX CONCURRENTLY users_last_login_at_idx;"), "{md}");
}

#[test]
fn without_pg_stat_statements_the_audit_says_how_to_enable_it_and_completes_from_the_wire() {
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    pg.psql("DROP EXTENSION pg_stat_statements").unwrap();
    let demo = Demo::start(&pg.url());
    let url = pg.url();
    let (output, tmp, _) = audit_under_load(&demo, &["--database-url", &url]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed:\n{stderr}");
    let notice: Vec<&str> = stderr.lines().filter(|l| l.contains("pg_stat_statements")).collect();
    assert_eq!(notice.len(), 1, "one line: {stderr}");
    assert!(notice[0].contains("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"), "{stderr}");
    assert!(notice[0].contains("shared_preload_libraries = 'pg_stat_statements'"), "{stderr}");

    let (report, md) = read_report(&tmp);
    let db = &report["database"];
    eprintln!("{}", serde_json::to_string_pretty(&db["wire"]).unwrap());
    assert_eq!(db["pg_stat_statements"], false);
    assert_eq!(db["connection_source"], "--database-url");
    assert!(md.contains("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"), "{md}");
    // The wire alone still names the N+1 and its statements.
    let n1 = report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "n-plus-one-query").unwrap_or_else(|| panic!("{md}"));
    assert_eq!(n1["function"], "demo_service::db::fetch_authors_one_by_one");
    let statements = db["statements"].as_array().unwrap();
    assert!(statements.iter().any(|s| s["query"].as_str().unwrap().contains("WHERE country = $1") && s["mean_ms"].is_null()), "{statements:#?}");
    // Index statistics do not need the extension.
    assert!(db["unused_indexes"].as_array().unwrap().iter().any(|u| u["index"] == "users_last_login_at_idx"));
}

/// The back-office endpoints of the demo, each planted database defect
/// beside a twin doing the same work the right way: a dashboard making six
/// round trips one after the other (`chatty-requests` at the handler) and
/// its one-query twin (nothing); a job runner with one transaction per job
/// (`per-item-transaction`, never an N+1 on BEGIN or COMMIT); the whole
/// events table per request (`unbounded-result-set`) and its paged twin
/// (nothing); the GIN index of a 60-row table that the tag search never
/// reads today but needs once the table grows (no drop advised, and the
/// report says why).
#[test]
fn database_profile_judges_the_back_office_by_its_planted_defects_and_spares_their_twins() {
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let demo = Demo::start(&pg.url());
    let (output, tmp, rounds) = audit_with_load(&demo, &[], |demo| demo.back_office_load(200, Duration::from_secs(7)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed:\n{stderr}");
    assert!(rounds >= 15, "only {rounds} load rounds ran");
    let (report, md) = read_report(&tmp);
    let findings = report["findings"].as_array().unwrap();
    for f in findings {
        eprintln!("finding: {} {} {} at {}:{} -- {}", f["severity"], f["rule"], f["function"], f["file"], f["line"], f["evidence"]);
    }
    let src = std::fs::read_to_string(workspace_root().join("examples/demo-service/src/backoffice.rs")).unwrap();
    let lines_of = |fn_name: &str| -> std::ops::RangeInclusive<u64> {
        let lines: Vec<&str> = src.lines().collect();
        let start = lines.iter().position(|l| l.contains(&format!("fn {fn_name}("))).expect("fn in backoffice.rs");
        let end = start + lines[start..].iter().position(|l| *l == "}").expect("end of fn");
        (start as u64 + 1)..=(end as u64 + 1)
    };
    let of = |rule: &str| -> Vec<&serde_json::Value> { findings.iter().filter(|f| f["rule"] == rule).collect() };

    // (a) Six round trips per request at the handler, at one of its lines; (b) not its twin.
    let chatty = of("chatty-requests");
    assert_eq!(chatty.len(), 1, "one chatty handler:\n{md}");
    assert_eq!(chatty[0]["function"], "demo_service::backoffice::dashboard", "{}", chatty[0]);
    assert!(lines_of("dashboard").contains(&chatty[0]["line"].as_u64().unwrap()), "{}", chatty[0]);
    let c = &report["database"]["chatty_requests"][0];
    assert_eq!(c["median_round_trips"], 6, "{c}");
    // The kernel's chains keep each dashboard whole (52 of 52 in a run;
    // 26 to 39 of 40-49 when linked by time alone, before issue 27): at
    // least 80%, room for a dashboard cut by the audit's start or end.
    eprintln!("chatty: {} of {rounds} dashboards seen whole", c["requests"]);
    assert!(c["requests"].as_u64().unwrap() * 5 >= rounds as u64 * 4, "{} of {rounds} dashboards seen chatty: {c}", c["requests"]);
    assert!(!findings.iter().any(|f| f["function"].as_str().unwrap().contains("dashboard_fast")), "the twin:\n{md}");

    // (c) One transaction per job, and BEGIN/COMMIT never an N+1.
    let tx = of("per-item-transaction");
    assert_eq!(tx.len(), 1, "{md}");
    assert_eq!(tx[0]["function"], "demo_service::backoffice::run_jobs", "{}", tx[0]);
    for n in of("n-plus-one-query") {
        let e = n["evidence"].as_str().unwrap();
        assert!(!e.starts_with("`BEGIN`") && !e.starts_with("`COMMIT`"), "{n}");
        // The lock and update run once per job inside the loop: a query per item of that loop.
        assert_eq!(n["function"], "demo_service::backoffice::run_jobs", "{n}");
    }

    // (d) The whole table per request; the paged twin is bounded.
    let unbounded = of("unbounded-result-set");
    assert_eq!(unbounded.len(), 1, "{md}");
    assert!(unbounded[0]["evidence"].as_str().unwrap().starts_with("`SELECT * FROM events` has no LIMIT"), "{}", unbounded[0]);
    assert_eq!(unbounded[0]["function"], "demo_service::backoffice::export_events", "{}", unbounded[0]);

    // (e) The tag search's GIN index is never scanned on 60 rows, but a
    // seen statement would read through it at scale: no drop, and why.
    let gin = report["database"]["unused_indexes"].as_array().unwrap().iter().find(|u| u["index"] == "tags_labels_gin").unwrap_or_else(|| panic!("{md}"));
    assert_eq!(gin["plan_checked"], true, "{gin}");
    assert!(gin["used_at_scale_by"].as_str().unwrap().contains("labels @>"), "{gin}");
    assert!(!of("unused-index").iter().any(|f| f["function"] == "index tags_labels_gin"), "{md}");
    assert!(md.contains("*Not advised*: dropping tags_labels_gin, never scanned, because a statement seen during the audit would use it once tags is large"), "{md}");
    assert!(!md.contains("DROP INDEX CONCURRENTLY tags_labels_gin"), "{md}");
}

/// An audit attached to a service that has served traffic for a while:
/// every statement was prepared (its Parse, the only message carrying its
/// text, sent) before the agent attached. The texts come back from the
/// server's pg_stat_activity, so the N+1 is found with its statement and
/// the slow, unindexed search is tied to the code that issues it.
#[test]
fn an_audit_of_a_warmed_service_recovers_the_text_of_statements_prepared_before_it() {
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let demo = Demo::start(&pg.url());
    // Warm-up: each round uses every statement of the load; the pool's 5
    // connections are taken in turn, so 40 rounds (1,240 lookups, 40
    // searches) prepare every statement on every connection.
    let warm = demo.load(40, Duration::from_secs(60));
    assert!(warm >= 20, "only {warm} warm-up rounds ran");
    let (output, tmp, rounds) = audit_under_load(&demo, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed:\n{stderr}");
    assert!(rounds >= 10, "only {rounds} load rounds ran");
    let (report, md) = read_report(&tmp);
    let db = &report["database"];
    let wire = &db["wire"];
    eprintln!("{}", serde_json::to_string_pretty(wire).unwrap());
    for line in stderr.lines().filter(|l| l.starts_with("perf-audit: wire") || l.starts_with("perf-audit: activity")) {
        eprintln!("{line}");
    }
    let executions = wire["executions"].as_u64().unwrap();
    assert!(executions >= 30 * rounds as u64, "{wire}");
    // The statements really were prepared before: their texts came from
    // the server, not from a Parse on the wire.
    // (A learnt text fills the other executions of its call site.)
    assert!(wire["statements_text_from_activity"].as_u64().unwrap() >= 1, "{wire}");
    let recovered = wire["executions_text_from_activity"].as_u64().unwrap() + wire["executions_text_from_call_site"].as_u64().unwrap();
    assert!(recovered * 100 >= executions * 85, "{wire}");
    // At most 10% of the executions are left without a text. (At >= 5,000
    // queries/s, `cargo xtask bench database` leaves 0.00% without text:
    // a connection's last statement is observed many times a second. At
    // this test's low rate a once-per-request statement is rarely the last
    // one on its connection when a read arrives: 3.0-7.3% were left in six
    // runs on a loaded machine.)
    let without = wire["executions_without_text"].as_u64().unwrap();
    assert!(without * 10 <= executions, "{without} of {executions} executions without text: {wire}\n{stderr}");

    // The N+1, with its statement, at the loop's line.
    let n1 = db["n_plus_one"].as_array().unwrap().iter().find(|n| n["call_site"]["function"] == "demo_service::db::fetch_authors_one_by_one").unwrap_or_else(|| panic!("no N+1:\n{md}"));
    assert_eq!(n1["query"], "SELECT id, name, country FROM users WHERE id = $1", "{n1}");
    let line = n1["call_site"]["line"].as_u64().unwrap();
    assert!(body_lines("fetch_authors_one_by_one").contains(&line), "line {line}");
    let finding = report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "n-plus-one-query").unwrap_or_else(|| panic!("{md}"));
    assert_eq!(finding["function"], "demo_service::db::fetch_authors_one_by_one", "{finding}");
    assert!(finding["code_fix"]["after"].as_str().unwrap().contains("= ANY($1)"), "{finding}");

    // The slow statement (the unindexed search) tied to its call site, in
    // the statement table and in the missing-index advice.
    let statements = db["statements"].as_array().unwrap();
    let search = statements.iter().find(|s| s["query"].as_str().unwrap().contains("WHERE country = $1")).unwrap_or_else(|| panic!("{statements:#?}"));
    // Its call site holds (nearly) all of its executions: a stray one
    // elsewhere is a wrongly recovered text (seen: 1-10 executions of
    // another site in some runs, see ARCHITECTURE.md).
    let sites = search["call_sites"].as_array().unwrap();
    assert_eq!(sites[0]["function"], "demo_service::db::search_users_by_country", "{search}");
    let total: u64 = sites.iter().map(|c| c["executions"].as_u64().unwrap()).sum();
    assert!(sites[0]["executions"].as_u64().unwrap() * 10 >= total * 9, "{search}");
    let missing = db["missing_indexes"].as_array().unwrap();
    let country = missing.iter().find(|m| m["table"] == "users").unwrap_or_else(|| panic!("{missing:#?}\n{md}"));
    assert_eq!(country["call_sites"][0]["function"], "demo_service::db::search_users_by_country", "{country}");
    assert!(md.contains("read from the server's pg_stat_activity"), "{md}");
}

/// A single lookup per request at a high rate (the demo's /profile: one
/// `user_by_id` and one `recent_posts_by_author` per request), 600
/// requests a second for 7 s from 12 threads, each sending on its own
/// schedule of random arrivals (exponential gaps from a fixed-seed
/// generator: independent users; open loop, so requests overlap and their
/// lookups interleave on the workers and the pool's connections), is not
/// an N+1. Beside them, four more clients each send the same request the
/// moment the previous answer arrives (lockstep: the once-per-request
/// lookup then comes back as regularly as a loop's, which a rule reading
/// gaps alone takes for one): each request is still its own chain of round
/// trips. At this rate (~4,000 queries a second, ~13,000 writes) the wire
/// tracer keeps up: at most 1% of writes dropped, at most 5% of executions
/// without their statement's text. (This is the debug build of the agent;
/// with 8 lockstep clients, ~18,000 writes a second, it fell behind and
/// dropped 12-18%. The release build at ~29,000 writes a second drops
/// none: `cargo xtask bench database`.)
#[test]
fn a_single_lookup_per_request_at_600_requests_per_second_is_not_an_n_plus_one() {
    const RATE: f64 = 600.0;
    const THREADS: usize = 12;
    const LOCKSTEP: usize = 4;
    const MIN_QPS: f64 = 3_000.0;
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let demo = Demo::start(&pg.url());
    let seconds = 7.0;
    let (output, tmp, completed) = audit_with_load(&demo, &[], |demo| {
        let start = Instant::now();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|k| {
                    scope.spawn(move || {
                        let mut done = 0;
                        let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k as u64 + 1);
                        let mut at = 0.0;
                        for n in 0.. {
                            // Exponential gaps, RATE / THREADS a second on average per thread.
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                            at += -u.ln() * THREADS as f64 / RATE;
                            if at >= seconds {
                                break;
                            }
                            let due = Duration::from_secs_f64(at);
                            if let Some(wait) = due.checked_sub(start.elapsed()) {
                                std::thread::sleep(wait);
                            }
                            assert_eq!(demo.get(&format!("/profile/{}", 1 + (k + n * THREADS) % 5000)), 200);
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            let lockstep: Vec<_> = (0..LOCKSTEP)
                .map(|k| {
                    scope.spawn(move || {
                        let mut done = 0;
                        while start.elapsed().as_secs_f64() < seconds {
                            assert_eq!(demo.get(&format!("/profile/{}", 1 + (k + done * LOCKSTEP) * 37 % 5000)), 200);
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            let done: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
            let lockstep: usize = lockstep.into_iter().map(|w| w.join().unwrap()).sum();
            assert!(lockstep as f64 >= seconds * 20.0, "the lockstep clients sent only {lockstep} requests");
            // Behind schedule, the threads send one after the other: the
            // rate is what completed in the time it took (random arrivals
            // only).
            (done as f64 / start.elapsed().as_secs_f64().max(seconds)) as usize
        })
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed:\n{stderr}");
    let (report, md) = read_report(&tmp);
    let n_plus_one = &report["database"]["n_plus_one"];
    eprintln!("{completed} requests/s; wire: {}\nN+1: {n_plus_one}", report["database"]["wire"]);
    assert!(completed >= 500, "the load reached only {completed} requests/s");
    let wire = &report["database"]["wire"];
    let n = |k: &str| wire[k].as_f64().unwrap_or(0.0);
    // The load ran for `seconds` of the audit window; the service is idle otherwise.
    let qps = n("executions") / seconds;
    eprintln!("{qps:.0} queries/s");
    assert!(qps >= MIN_QPS, "{qps:.0} queries/s: {wire}");
    assert!(n("dropped_writes") <= 0.01 * n("writes"), "{wire}");
    assert!(n("executions_without_text") <= 0.05 * n("executions"), "{wire}");
    // The chains were traced: sqlx writes a Bind after reading the answer
    // to its Sync (and a Parse's answer), so most writes follow an answer.
    assert!(n("writes_after_answer") >= 0.3 * n("writes"), "{wire}");
    // The lookups were seen and tied to their call site...
    let statements = report["database"]["statements"].as_array().unwrap();
    let lookup = statements.iter().find(|s| s["query"].as_str().unwrap().contains("FROM users WHERE id = $1")).unwrap_or_else(|| panic!("{statements:#?}"));
    assert!(lookup["calls"].as_i64().unwrap() >= 500 * 6, "{lookup}");
    assert_eq!(lookup["call_sites"][0]["function"], "demo_service::db::user_by_id", "{lookup}");
    // ... and are not an N+1.
    let n1: Vec<&serde_json::Value> = report["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == "n-plus-one-query").collect();
    assert!(n1.is_empty(), "{n1:#?}\n{md}");
    assert!(n_plus_one.as_array().unwrap().is_empty(), "{n_plus_one}");
}

/// A client that writes its queries with `sendmsg(2)` (here Python's
/// `socket.sendmsg`, one buffer per message: some drivers and proxies use
/// it): the wire tracer reads each message's first iovec, so its
/// statements are seen like those written with `send` or `writev`.
#[test]
fn queries_written_with_sendmsg_are_traced() {
    const QUERIES: usize = 300;
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let script = r#"
import socket, struct, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
def read_until_ready():
    buf = b""
    while True:
        while len(buf) < 5:
            buf += s.recv(65536)
        kind, length = buf[0:1], struct.unpack("!I", buf[1:5])[0]
        while len(buf) < 1 + length:
            buf += s.recv(65536)
        buf = buf[1 + length:]
        if kind == b"E":
            sys.exit("server error")
        if kind == b"Z":
            return
body = struct.pack("!I", 196608) + b"user\0postgres\0database\0postgres\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
read_until_ready()
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    sql = b"SELECT 1 AS sent_with_sendmsg\0"
    s.sendmsg([b"Q" + struct.pack("!I", len(sql) + 4) + sql])
    read_until_ready()
    time.sleep(0.005)
print("done", flush=True)
"#;
    let mut client = Command::new("python3")
        .args(["-c", script, &pg.port().to_string(), &QUERIES.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the client did not connect");
    let tmp = tempfile::tempdir().unwrap();
    let pid = client.id().to_string();
    let mut agent = Command::new(agent_bin())
        .args(["--quiet", "--out"])
        .arg(tmp.path().join("out"))
        .args(["--pid", &pid, "database", "--duration", "6s", "--database-url", &pg.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(agent.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("auditing") {
        let mut l = String::new();
        if stderr.read_line(&mut l).unwrap_or(0) == 0 {
            panic!("the agent did not start:\n{seen}");
        }
        seen.push_str(&l);
    }
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    let _ = client.wait();
    let output = agent.wait_with_output().unwrap();
    assert!(output.status.success(), "agent failed:\n{seen}{}", String::from_utf8_lossy(&output.stderr));
    let (report, _) = read_report(&tmp);
    let wire = &report["database"]["wire"];
    assert_eq!(wire["dropped_writes"], 0, "{wire}");
    assert!(wire["writes"].as_u64().unwrap() >= QUERIES as u64, "{wire}");
    let statements = report["database"]["statements"].as_array().unwrap();
    let ours = statements.iter().find(|s| s["query"].as_str().unwrap_or_default().contains("sent_with_sendmsg")).unwrap_or_else(|| panic!("{statements:#?}"));
    eprintln!("{ours}\n{wire}");
    assert!(wire["executions"].as_u64().unwrap() >= QUERIES as u64, "every query seen on the wire: {wire}");
    assert_eq!(wire["executions_without_text"], 0, "{wire}");
}
