//! Whose code it is, in a service shaped like real ones: a workspace whose
//! binary only routes while its database and CPU-heavy code live in a
//! sibling crate (`tests/fixtures/owners-service`, crate `owners-core`), and
//! whose every statement goes through one generic helper
//! (`owners_core::run_query`). Built with `debug = true` and symbols only
//! (Cargo's default release profile, made with `objcopy --strip-debug`):
//!
//! - the sibling crate is the owner's code on both builds, and the report
//!   says why (`symbols[].owner_crates`, `owner_evidence`, `owner_rule`);
//!   its hashing is the hotspot, the cheap twin route is not;
//! - the N+1 is at the looping function (`load_tags_one_by_one`), with the
//!   helper named as its path; the once-per-request callers of the helper
//!   and the batched twin are not flagged.

use std::path::{Path, PathBuf};

use perf_audit_tests::*;

fn builds(dir: &Path) -> Vec<(&'static str, PathBuf, bool)> {
    let full = fixture("owners-service", Build::Release);
    let symbols = symbols_only_copy(&full, dir);
    vec![("debug = true", full, true), ("symbols only", symbols, false)]
}

fn scenario(dir: &Path, addr: &str, routes: &[&str]) -> PathBuf {
    let path = dir.join("scenario.toml");
    let body: String = routes.iter().map(|r| format!("[[request]]\nurl = \"http://{addr}{r}\"\nweight = 1\n\n")).collect();
    std::fs::write(&path, body).unwrap();
    path
}

/// Lines of `fn_name`'s body in owners-core's lib.rs.
fn body_lines(fn_name: &str) -> std::ops::RangeInclusive<u64> {
    fn_body_lines("tests/fixtures/owners-service/crates/owners-core/src/lib.rs", fn_name)
}

fn executable(report: &serde_json::Value) -> &serde_json::Value {
    report["symbols"].as_array().unwrap().iter().find(|o| o["executable"] == true).expect("the executable in symbols")
}

#[test]
fn a_sibling_workspace_crate_is_the_owners_code_on_every_build_and_the_report_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    for (build, bin, lines) in builds(tmp.path()) {
        let addr = free_loopback_addr();
        let scenario = scenario(tmp.path(), &addr, &["/login", "/token"]);
        let run = run_agent(&["cpu", "--duration", "6s", "--rps", "60", "--scenario", scenario.to_str().unwrap(), "--", bin.to_str().unwrap(), "--listen", &addr]);
        run.assert_success();
        let report = run.report();
        let exe = executable(&report);
        assert_eq!(exe["line_info"], lines, "{build}: {exe:#}");
        let owners: Vec<&str> = exe["owner_crates"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
        assert_eq!(owners, ["owners_core", "owners_service"], "{build}: the workspace's two crates, nothing else: {exe:#}");
        let why = exe["owner_evidence"]["owners_core"].as_str().unwrap_or_default();
        assert!(why.contains("owners-service/crates/owners-core/src/lib.rs"), "{build}: the sibling crate's evidence: {why}");
        assert!(exe["owner_rule"].as_str().unwrap_or_default().contains("workspace"), "{build}: the rule is stated: {exe:#}");
        let found = findings(&report);
        let hot = found.iter().find(|(r, _, _, _)| r == "cpu-hotspot").unwrap_or_else(|| panic!("{build}: no hotspot: {found:?}"));
        assert_eq!(hot.1, "owners_core::hash_password", "{build}: the sibling crate's function is the owner's hotspot: {found:?}");
        if lines {
            assert!(body_lines("hash_password").contains(&hot.3), "{build}: hotspot at line {}", hot.3);
        }
        // The cheap twin route is never a finding.
        assert!(found.iter().all(|(_, f, _, _)| !f.contains("check_token")), "{build}: {found:?}");
        eprintln!("{build}: owner crates {owners:?}, hotspot {}", hot.1);
    }
}

#[test]
fn an_n_plus_one_through_a_shared_helper_is_at_the_looping_function_with_the_helper_as_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    for (build, bin, lines) in builds(tmp.path()) {
        let addr = free_loopback_addr();
        let scenario = scenario(tmp.path(), &addr, &["/page", "/page/batched"]);
        let run = run_agent(&[
            "database", "--duration", "8s", "--rps", "40", "--private-database", "--scenario", scenario.to_str().unwrap(),
            "--", bin.to_str().unwrap(), "--listen", &addr,
        ]);
        run.assert_success();
        let report = run.report();
        let db = &report["database"];
        let wire = &db["wire"];
        let (executions, tied) = (wire["executions"].as_u64().unwrap(), wire["executions_with_call_site"].as_u64().unwrap());
        assert!(executions > 1000, "{build}: {executions} executions: {wire:#}");
        let wrappers: Vec<&str> = wire["wrappers"].as_array().map(|w| w.iter().filter_map(|x| x["function"].as_str()).collect()).unwrap_or_default();
        assert_eq!(wrappers, ["owners_core::run_query"], "{build}: the helper is the one wrapper: {wire:#}");
        assert!(wire["wrapper_rule"].as_str().unwrap_or_default().contains("distinct statements"), "{build}");
        let found = findings(&report);
        let n1: Vec<_> = found.iter().filter(|(r, _, _, _)| r == "n-plus-one-query").collect();
        assert_eq!(n1.len(), 1, "{build}: one loop; the once-per-request callers and the batched twin clean: {found:?}");
        assert_eq!(n1[0].1, "owners_core::load_tags_one_by_one", "{build}: at the looping function, not the helper: {found:?}");
        if lines {
            assert!(body_lines("load_tags_one_by_one").contains(&n1[0].3), "{build}: N+1 at line {}", n1[0].3);
        }
        let pattern = &db["n_plus_one"][0];
        assert!(pattern["query"].as_str().unwrap_or_default().contains("FROM tags WHERE id = $1"), "{build}: {pattern:#}");
        assert_eq!(pattern["call_site"]["via"], serde_json::json!(["owners_core::run_query"]), "{build}: {pattern:#}");
        let finding = report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "n-plus-one-query").unwrap();
        let evidence = finding["evidence"].as_str().unwrap_or_default();
        assert!(evidence.contains("Issued through `owners_core::run_query` (a wrapper"), "{build}: the helper named as the path: {evidence}");
        // No finding is placed at the helper.
        assert!(found.iter().all(|(_, f, _, _)| f != "owners_core::run_query"), "{build}: {found:?}");
        eprintln!("{build}: {tied} of {executions} executions tied to code; N+1 at {}:{} through {wrappers:?}", n1[0].1, n1[0].3);
    }
}
