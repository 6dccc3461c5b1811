//! One unwinder per audited process: every collector that unwinds stacks
//! (CPU and off-CPU samples, memory sites and page faults, database wire
//! writes) goes through one ring reader and one shared table cache, so each
//! object's unwind tables are parsed once per audit (report.json
//! `cpu.unwind_tables`).

use perf_audit_tests::*;

#[test]
fn every_collector_shares_one_unwinder_and_tables_are_parsed_once() {
    let demo = demo_service_bin();
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let scenario = demo_scenario(tmp.path(), &addr);
    let run = run_agent(&[
        "all", "--unwind", "dwarf", "--memory", "precise", "--duration", "10s", "--rps", "100", "--private-database",
        "--scenario", scenario.to_str().unwrap(), "--", demo.to_str().unwrap(), "--listen", &addr,
    ]);
    run.assert_success();
    let report = run.report();
    let cpu = &report["cpu"];
    assert_eq!(cpu["unwinding"], "dwarf");

    // Every collector unwound stacks during the audit.
    assert!(cpu["total_samples"].as_u64().unwrap() > 100, "{}", cpu["total_samples"]);
    let wire = &report["database"]["wire"];
    assert!(wire["executions_with_call_site"].as_u64().unwrap_or(0) > 0, "no database write unwound: {wire}");
    let memory = &report["memory"];
    assert!(!memory["top_allocators"].as_array().unwrap().is_empty(), "no allocation site unwound");
    assert!(report["offcpu"].is_object(), "no off-CPU section");

    // One table cache: each object's tables parsed exactly once.
    let tables = cpu["unwind_tables"].as_array().expect("cpu.unwind_tables");
    let object = |t: &serde_json::Value| t["object"].as_str().unwrap().to_string();
    assert!(tables.iter().any(|t| object(t).ends_with("/demo-service")), "{tables:?}");
    assert!(tables.iter().any(|t| object(t).contains("libc.so")), "{tables:?}");
    for t in tables {
        assert_eq!(t["parses"], 1, "{} parsed more than once: {tables:?}", object(t));
    }
}
