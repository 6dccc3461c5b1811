//! An N+1 written with sea-orm's query builder (over sqlx): found at the
//! function that loops, its code fix in sea-orm's dialect (the driver the
//! stacks show, sea-orm over sqlx), the SQL rewrite it shows parsed and
//! planned by PostgreSQL first, and the `is_in` twin clean.

use perf_audit_tests::{Build, findings, fixture, free_loopback_addr, run_agent};

#[test]
fn an_orm_loop_is_found_at_its_function_with_a_fix_in_the_orms_dialect() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fixture("seaorm-service", Build::Release);
    let addr = free_loopback_addr();
    let scenario = tmp.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        format!("[[request]]\nurl = \"http://{addr}/orders\"\nweight = 1\n\n[[request]]\nurl = \"http://{addr}/orders/batched\"\nweight = 1\n"),
    )
    .unwrap();
    let run = run_agent(&[
        "database", "--duration", "8s", "--rps", "30", "--private-database", "--scenario", scenario.to_str().unwrap(),
        "--", bin.to_str().unwrap(), "--listen", &addr,
    ]);
    run.assert_success();
    let report = run.report();
    let db = &report["database"];
    let drivers = &db["wire"]["drivers"];
    eprintln!("drivers: {drivers}");
    let sea = drivers["sea-orm"].as_u64().unwrap_or(0);
    let all: u64 = drivers.as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    assert!(sea > 0 && sea as f64 >= 0.9 * all as f64, "sea-orm is the driver on the stacks: {drivers}");

    let found = findings(&report);
    let n1: Vec<_> = found.iter().filter(|(r, _, _, _)| r == "n-plus-one-query").collect();
    assert_eq!(n1.len(), 1, "one loop, the is_in twin clean: {found:?}");
    assert_eq!(n1[0].1, "seaorm_service::orders_one_by_one", "{found:?}");
    let f = report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "n-plus-one-query").unwrap();
    let fix = &f["code_fix"];
    let after = fix["after"].as_str().unwrap_or_else(|| panic!("no code fix: {f:#}"));
    assert!(after.contains("orders::Column::CustomerId.is_in(ids)") && after.contains(".all(db)"), "{after}");
    assert!(!after.contains("sqlx::query"), "sea-orm code, not sqlx: {after}");
    assert!(fix["before"].as_str().unwrap().contains("orders::Column::CustomerId.eq(item.id)"), "{fix:#}");
    let recommendation = f["recommendation"].as_str().unwrap();
    assert!(recommendation.contains("written for sea-orm") && recommendation.contains("PostgreSQL parsed and planned this rewrite"), "{recommendation}");
    let query = db["n_plus_one"][0]["query"].as_str().unwrap();
    assert!(query.contains(r#""orders"."customer_id" = $1"#), "{query}");
    let rewrite = db["rewrites"].as_array().unwrap().iter().find(|r| r["sql"].as_str().is_some_and(|s| s.contains(r#""orders"."customer_id" = ANY($1)"#))).unwrap_or_else(|| panic!("{:#}", db["rewrites"]));
    assert_eq!(rewrite["accepted"], true, "{rewrite}");
}
