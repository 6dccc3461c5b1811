//! Chatty requests at an ordinary request rate (issue 27): diesel-service's
//! `/create` makes 6 sequential round trips (an item, then its 5 tags one
//! INSERT each: 4 of one statement text, a loop of 4 on the wire, and one
//! derived tag; no transaction) at about 2 requests/s; its twin
//! `/create/batched` writes the same in one CTE. The chatty finding is at
//! `diesel_service::create_with_tags` with its numbers and its threshold,
//! never at the twin, and the N+1 page (`/items`) keeps its one finding (an
//! N+1 request is the N+1 rule's: one finding per cause). Both on a service
//! the agent launches (`--private-database --scenario`) and on one attached
//! by pid after a warm-up.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use perf_audit_agent::postgres::private::PrivatePostgres;
use perf_audit_tests::*;

/// What the report says about the create and its neighbours.
fn assert_create_is_chatty_and_nothing_else(report: &serde_json::Value, how: &str) {
    let chatty: Vec<&serde_json::Value> = report["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == "chatty-requests").collect();
    let found = findings(report);
    assert_eq!(chatty.len(), 1, "{how}: one chatty request, the create: {found:?}\n{:#}", report["database"]["chatty_requests"]);
    let f = chatty[0];
    assert_eq!(f["function"], "diesel_service::create_with_tags", "{how}: {found:?}");
    assert!(f["title"].as_str().unwrap().starts_with("6 sequential round trips per request"), "{how}: {}", f["title"]);
    let evidence = f["evidence"].as_str().unwrap();
    assert!(evidence.contains("in at least 20 requests") && evidence.contains("at least 2 distinct statements"), "{how}: the threshold is stated: {evidence}");
    let c = &report["database"]["chatty_requests"][0];
    assert_eq!((c["median_round_trips"].as_u64(), c["median_statements"].as_u64(), c["writes"].as_bool()), (Some(6), Some(3), Some(true)), "{how}: {c:#}");
    let requests = c["requests"].as_u64().unwrap();
    assert!(requests >= 20, "{how}: {requests} requests: {c:#}");
    assert!(c["executions_in_requests"].as_u64().unwrap() >= 5 * requests && c["max_round_trips"].as_u64() == Some(6), "{how}: {c:#}");
    // The 4 tag writes are one step on the wire (one fingerprint, one text): listed once.
    let steps = c["steps"].as_array().unwrap().len();
    assert!((3..=6).contains(&steps), "{how}: {c:#}");
    eprintln!("{how}: {}\n  {evidence}", f["title"]);
    // The N+1 page keeps its one finding, at the loop; the batched twins have none.
    let n1: Vec<_> = found.iter().filter(|(r, _, _, _)| r == "n-plus-one-query").collect();
    assert_eq!(n1.len(), 1, "{how}: {found:?}");
    assert_eq!(n1[0].1, "diesel_service::load_owners_one_by_one", "{how}: {found:?}");
    for twin in ["diesel_service::create_with_tags_batched", "diesel_service::load_owners_batched"] {
        assert!(!found.iter().any(|(_, function, _, _)| function == twin), "{how}: {twin} flagged: {found:?}");
    }
}

#[test]
fn a_six_round_trip_create_at_two_requests_a_second_is_chatty_and_its_twin_is_not() {
    let bin = fixture("diesel-service", Build::Release);
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let scenario = tmp.path().join("scenario.toml");
    let mut toml = String::new();
    for (path, weight) in [("/create", 2), ("/create/batched", 2), ("/items", 1), ("/items/batched", 1)] {
        toml.push_str(&format!("[[request]]\nurl = \"http://{addr}{path}\"\nweight = {weight}\n\n"));
    }
    std::fs::write(&scenario, toml).unwrap();
    let run = run_agent(&[
        "database", "--duration", "25s", "--rps", "6", "--private-database", "--scenario", scenario.to_str().unwrap(), "--", bin.to_str().unwrap(), "--listen", &addr,
    ]);
    run.assert_success();
    assert_create_is_chatty_and_nothing_else(&run.report(), "launched");
}

#[test]
fn a_six_round_trip_create_is_chatty_on_a_service_attached_by_pid() {
    let pg = PrivatePostgres::start().expect("private PostgreSQL");
    let bin = fixture("diesel-service", Build::Release);
    let mut child = Command::new(&bin).args(["--listen", "127.0.0.1:0"]).env("DATABASE_URL", pg.url()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start diesel-service");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("diesel-service stdout");
    let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("diesel-service said {line:?}")).to_string();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let service = Kill(child);
    // Warm-up: pool connections open, statements seen before the audit.
    for path in ["/create", "/create/batched", "/items", "/items/batched"] {
        for _ in 0..5 {
            assert_eq!(http_get(&addr, path).0, 200, "{path}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let pid = service.0.id().to_string();
    let agent = AuditingAgent::start(&["--out", out_dir.to_str().unwrap(), "--pid", &pid, "database", "--duration", "25s"]);
    // About 2 creates and 2 batched creates a second, a page each second.
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(22) {
        let tick = Instant::now();
        assert_eq!(http_get(&addr, "/create").0, 200);
        assert_eq!(http_get(&addr, "/create/batched").0, 200);
        if i % 2 == 0 {
            assert_eq!(http_get(&addr, if i % 4 == 0 { "/items" } else { "/items/batched" }).0, 200);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(500).saturating_sub(tick.elapsed()));
    }
    agent.finish();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).expect("report.json")).unwrap();
    assert_create_is_chatty_and_nothing_else(&report, "attached by pid");
    drop(service);
}
