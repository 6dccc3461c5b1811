//! Statements inside a transaction whose writes are longer than the
//! kernel's 512-byte capture (issue 30: an upload's 100 INSERTs per request
//! were invisible, only BEGIN and COMMIT were seen): the Execute after a
//! large Bind lies past the captured bytes; the kernel counts it from the
//! message headers, so the wire sees every INSERT, reconciles with
//! pg_stat_statements, and the loop is found at the function that loops.
//! Its batched twin (one INSERT ... SELECT FROM unnest) is not flagged.

use perf_audit_tests::{Build, findings, fixture, free_loopback_addr, run_agent};

#[test]
fn inserts_past_the_captured_bytes_inside_a_transaction_are_seen_and_reconcile() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fixture("diesel-service", Build::Release);
    let addr = free_loopback_addr();
    let scenario = tmp.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        format!("[[request]]\nurl = \"http://{addr}/upload\"\nweight = 1\n\n[[request]]\nurl = \"http://{addr}/upload/batched\"\nweight = 1\n"),
    )
    .unwrap();
    let run = run_agent(&[
        "database",
        "--duration",
        "8s",
        "--rps",
        "20",
        "--private-database",
        "--scenario",
        scenario.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    run.assert_success();
    let report = run.report();
    let db = &report["database"];
    let wire = &db["wire"];

    // Each per-part INSERT's Execute is past its write's first 512 bytes.
    let beyond = wire["executions_beyond_capture"].as_u64().unwrap_or(0);
    let insert = "INSERT INTO parts (upload, seq, body) VALUES ($1, $2, $3)";
    let row = db["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["query"] == insert)
        .unwrap_or_else(|| {
            panic!(
                "no pg_stat_statements row for the INSERT: {:#}",
                db["statements"]
            )
        });
    let (calls, seen) = (
        row["calls"].as_u64().unwrap(),
        row["seen_on_wire"].as_u64().unwrap(),
    );
    eprintln!(
        "per-part INSERT: {seen} of {calls} calls seen on the wire; {beyond} executions past the captured bytes"
    );
    assert!(calls >= 400, "too few uploads ran: {calls} INSERTs");
    assert!(
        seen as f64 >= 0.95 * calls as f64,
        "{seen} of {calls} INSERTs seen on the wire: {wire:#}"
    );
    assert!(
        beyond as f64 >= 0.95 * calls as f64,
        "{beyond} executions past the capture for {calls} INSERTs"
    );

    // The twin's one INSERT per upload is seen too.
    let batched = db["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["query"]
                .as_str()
                .is_some_and(|q| q.contains("FROM unnest($2::bigint[], $3::text[])"))
        })
        .unwrap();
    assert!(
        batched["seen_on_wire"].as_u64().unwrap() as f64
            >= 0.95 * batched["calls"].as_u64().unwrap() as f64,
        "{batched:#}"
    );
    let md = run.file("report.md");
    assert!(
        md.contains("**Calls seen on the wire**")
            && md.contains("**Executions past the captured bytes**"),
        "{md}"
    );

    // The loop is an N+1 at the function that loops, with insert advice;
    // the twin is clean.
    let found = findings(&report);
    let n1: Vec<_> = found
        .iter()
        .filter(|(r, _, _, _)| r == "n-plus-one-query")
        .collect();
    assert_eq!(n1.len(), 1, "one loop, the batched twin clean: {found:?}");
    assert_eq!(
        n1[0].1, "diesel_service::store_parts_one_by_one",
        "{found:?}"
    );
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "n-plus-one-query")
        .unwrap();
    assert!(
        f["recommendation"].as_str().unwrap().contains("unnest("),
        "{f:#}"
    );
    assert!(f["evidence"].as_str().unwrap().contains(insert), "{f:#}");
}
