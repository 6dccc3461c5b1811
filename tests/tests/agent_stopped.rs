//! A stopped or killed agent never holds its target back. The demo service
//! (axum + sqlx on a private PostgreSQL) is audited with profile `all`
//! (CPU sampling and the stack-copy ring, off-CPU, allocator probes in the
//! default mode, the database wire tracer and pg_stat_statements), attached
//! by pid to the running service as in production. Then:
//!
//! - **SIGSTOP for 10 s**: nothing in the kernel waits for the agent (the
//!   rings drop what does not fit and count it; perf events and probes
//!   never block), so the service keeps answering the same load without
//!   degrading, by the audit's own health rule (p99 more than 2x and at
//!   least +10 ms, throughput below 90%, errors or timeouts up by 1% of
//!   requests). After SIGCONT the audit goes on and writes its report.
//! - **SIGKILL** of that same agent, with every profile attached: no BPF
//!   program outlives it, and the service answers as before.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use perf_audit_agent::{
    health,
    load::{self, LoadPlan, LoadResult, Scenario},
    postgres::private::PrivatePostgres,
};
use perf_audit_tests::{demo_scenario, demo_service_bin, free_loopback_addr, loaded_programs, spawn_agent, wait_attached};

fn drive(rt: &tokio::runtime::Runtime, scenario: &Scenario, rps: u32, window: Duration) -> LoadResult {
    let plan = LoadPlan::new(scenario.clone(), rps, window).expect("valid load plan");
    rt.block_on(load::run(plan, std::future::pending::<()>()))
}

fn assert_healthy(what: &str, unprobed: &LoadResult, during: &LoadResult) {
    let h = health::assess(unprobed, during);
    assert!(!h.degraded, "{what}: the service degraded: {:?} (rule: {})", h.reasons, h.rule);
    eprintln!("{what}: p99 {:.1} ms -> {:.1} ms ({:.2}x), {:.1} -> {:.1} req/s", h.unprobed.p99_ms, h.during.p99_ms, h.p99_ratio, h.unprobed.rps, h.during.rps);
}

/// The demo service on a private PostgreSQL, answering, with a client
/// runtime for its load; stopped when dropped.
struct RunningDemo {
    service: std::process::Child,
    rt: tokio::runtime::Runtime,
    scenario: Scenario,
    tmp: tempfile::TempDir,
    _db: PrivatePostgres,
}

impl RunningDemo {
    fn start() -> RunningDemo {
        let db = PrivatePostgres::start().expect("private PostgreSQL");
        let tmp = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr();
        let scenario = Scenario::from_file(&demo_scenario(tmp.path(), &addr)).unwrap();
        let service = Command::new(demo_service_bin())
            .args(["--listen", &addr])
            .env("DATABASE_URL", db.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo service");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let start = Instant::now();
        while drive(&rt, &scenario, 10, Duration::from_millis(200)).ok == 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "the demo service did not answer");
            thread::sleep(Duration::from_millis(300));
        }
        RunningDemo { service, rt, scenario, tmp, _db: db }
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        let _ = self.service.kill();
        let _ = self.service.wait();
    }
}

#[test]
fn a_stopped_agent_never_holds_the_service_back_and_a_killed_one_leaves_nothing() {
    let demo = RunningDemo::start();
    let (rt, scenario, tmp) = (&demo.rt, &demo.scenario, &demo.tmp);
    // Warmed up (its statements prepared, its caches filled), then its
    // unprobed latency under the load of the test.
    drive(rt, scenario, 100, Duration::from_secs(5));
    let unprobed = drive(rt, scenario, 100, Duration::from_secs(5));

    let out = tmp.path().join("out");
    let mut agent = spawn_agent(&["--pid", &demo.service.id().to_string(), "all", "--duration", "120s"], &out);
    let programs = wait_attached(agent.id());
    // CPU, off-CPU, the database writes, page faults, mappings and the
    // allocator programs.
    assert!(programs.len() >= 8, "the agent holds only {programs:?}");

    // Stopped for 10 s with everything attached: the load runs meanwhile.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGSTOP) };
    let stopped = drive(rt, scenario, 100, Duration::from_secs(10));
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGCONT) };
    assert_healthy("agent stopped", &unprobed, &stopped);
    assert!(agent.try_wait().unwrap().is_none(), "the agent did not survive SIGSTOP/SIGCONT");
    // It resumes: its rings are drained again and the probes still work.
    drive(rt, scenario, 100, Duration::from_secs(3));

    // Killed with every profile attached.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGKILL) };
    agent.wait().unwrap();
    let killed = Instant::now();
    while programs.iter().any(|id| loaded_programs().contains(id)) {
        assert!(killed.elapsed() < Duration::from_secs(5), "programs {:?} outlived the killed agent", programs.intersection(&loaded_programs()).collect::<Vec<_>>());
        thread::sleep(Duration::from_millis(100));
    }
    let after = drive(rt, scenario, 100, Duration::from_secs(5));
    assert_healthy("agent killed", &unprobed, &after);
    let mut demo = demo;
    assert!(demo.service.try_wait().unwrap().is_none(), "the demo service exited");
}

/// SIGSTOP then SIGCONT, and the audit ends as asked: its report is whole,
/// and what the stop cost it is counted, not hidden.
#[test]
fn an_agent_resumed_after_sigstop_writes_its_report_with_the_drops_counted() {
    let demo = RunningDemo::start();
    let (rt, scenario, tmp) = (&demo.rt, &demo.scenario, &demo.tmp);
    let out = tmp.path().join("out");
    let agent = spawn_agent(&["--pid", &demo.service.id().to_string(), "cpu", "--unwind", "dwarf", "--frequency", "999", "--duration", "20s"], &out);
    wait_attached(agent.id());
    // 999 Hz of 32 KiB stack copies on a busy service fill the ring in well
    // under the 10 s the agent is stopped.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGSTOP) };
    drive(rt, scenario, 200, Duration::from_secs(10));
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGCONT) };
    let output = agent.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let cpu = &report["cpu"];
    let drops = cpu["ring_buffer_drops"].as_u64().unwrap();
    assert!(drops > 0, "nothing dropped while the agent was stopped for 10 s: {cpu:#}");
    assert!(cpu["total_samples"].as_u64().unwrap() > 0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&drops.to_string()), "report.md does not show the {drops} dropped samples");
}

/// The overhead budget: with a budget far below what profile `all` costs
/// the demo, the audit switches off the allocator probes first, then the
/// database wire tracer, says when and why, and still writes every section
/// (from what it gathered before, and from what stays on). With no budget
/// (`none`) the same audit measures its cost and switches nothing off.
#[test]
fn a_tiny_overhead_budget_backs_off_in_order_and_says_so() {
    let audit = |budget: &str| {
        let tmp = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr();
        let scenario = demo_scenario(tmp.path(), &addr);
        let run = perf_audit_tests::run_agent(&[
            "all", "--duration", "20s", "--rps", "100", "--max-overhead", budget, "--private-database", "--scenario",
            scenario.to_str().unwrap(), "--", demo_service_bin().to_str().unwrap(), "--listen", &addr,
        ]);
        run.assert_success();
        (run.report(), run.file("report.md"))
    };
    let (report, md) = audit("0.5%");
    let o = &report["overhead"];
    assert_eq!(o["budget_pct"], 0.5, "{o:#}");
    let steps: Vec<&str> = o["back_offs"].as_array().unwrap().iter().map(|b| b["collector"].as_str().unwrap()).collect();
    assert!(steps.len() >= 2 && steps[..2] == ["memory", "database"], "{o:#}");
    for b in o["back_offs"].as_array().unwrap() {
        assert!(b["cost_pct"].as_f64().unwrap() > 0.5, "backed off under the budget: {b}");
    }
    // Every collector's cost is measured, from the kernel's statistics.
    let costs: Vec<&str> = o["collectors"].as_array().unwrap().iter().filter(|c| c["program_runs"].as_u64().unwrap() > 0).map(|c| c["collector"].as_str().unwrap()).collect();
    for c in ["cpu sampling", "off-CPU (async)", "database wire", "allocator probes (memory)"] {
        assert!(costs.contains(&c), "no measured cost for {c}: {o:#}");
    }
    assert!(md.contains("**Backed off** at") && md.contains("allocator probes") && md.contains("database wire tracer detached"), "{md}");
    // The sections are still there: the memory and database profiles
    // report what they gathered, pg_stat_statements is still read.
    assert!(report["memory"].is_object() && report["database"].is_object());
    assert!(!report["database"]["statements"].as_array().unwrap().is_empty(), "{:#}", report["database"]);

    let (report, md) = audit("none");
    let o = &report["overhead"];
    assert!(o["budget_pct"].is_null() && o["back_offs"].as_array().unwrap().is_empty(), "{o:#}");
    assert!(o["kernel_pct"].as_f64().unwrap() > 0.0, "{o:#}");
    assert!(md.contains("- Audit overhead:") && !md.contains("**Backed off**"), "{md}");
}
