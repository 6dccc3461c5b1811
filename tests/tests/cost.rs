//! What a default audit costs a service at moderate load (issue 28), side
//! by side: the diesel fixture (tokio + diesel on libpq through an r2d2
//! pool, each request on the blocking pool: the shape of diesel/deadpool
//! services) on a private PostgreSQL at 50 requests/s of open-loop load
//! from this test, first unprobed, then with the agent attached by pid
//! with profile `all` and default settings. Compared per second of load:
//!
//! - not degraded, by the audit's own health rule;
//! - no periodic spikes, in the 1 s buckets of the audited run: at most two
//!   seconds past 1.5x the unprobed run's worst second (and +10 ms), and no
//!   phase of a 2-5 s period whose seconds' median p99 is 3x the others'
//!   (and +10 ms). The memory profile's old windows (100 ms every 5 s,
//!   probes attached and closed per window) gave p99 33.9 ms and p99.9 121
//!   ms against 12.6 and 17.2 unprobed here (one 10 s run at 50 rps);
//! - the memory profile chose continuous recording (its first 250 ms
//!   measure ~18k allocator calls/s at 50 rps, within the 5% budget), so
//!   no probe is attached or closed once the audit runs.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use perf_audit_agent::{
    health,
    load::{self, LoadPlan, LoadResult, Scenario},
    postgres::private::PrivatePostgres,
};
use perf_audit_tests::*;

fn drive(rt: &tokio::runtime::Runtime, scenario: &Scenario, rps: u32, window: Duration) -> LoadResult {
    let plan = LoadPlan::new(scenario.clone(), rps, window).expect("valid load plan");
    rt.block_on(load::run(plan, std::future::pending::<()>()))
}

fn bucket_p99s(load: &LoadResult) -> Vec<f64> {
    load.series.points.iter().filter(|p| p.requests > 0).map(|p| p.p99_ms).collect()
}

/// The lower median.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

#[test]
fn a_default_audit_of_a_diesel_service_at_50_rps_shows_no_periodic_p99_spikes() {
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
    let tmp = tempfile::tempdir().unwrap();
    let scenario_file = tmp.path().join("scenario.toml");
    let mut toml = String::new();
    for path in ["/items", "/items/batched", "/create", "/create/batched"] {
        toml.push_str(&format!("[[request]]\nurl = \"http://{addr}{path}\"\nweight = 1\n\n"));
    }
    std::fs::write(&scenario_file, toml).unwrap();
    let scenario = Scenario::from_file(&scenario_file).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // Warmed (pool connections open, statements prepared), then unprobed.
    drive(&rt, &scenario, 50, Duration::from_secs(3));
    let unprobed = drive(&rt, &scenario, 50, Duration::from_secs(12));

    let out = tmp.path().join("out");
    let pid = service.0.id().to_string();
    let agent = spawn_agent(&["--pid", &pid, "all", "--duration", "30s"], &out);
    wait_attached(agent.id());
    let during = drive(&rt, &scenario, 50, Duration::from_secs(16));
    // End the audit early (SIGINT: a partial report, as Ctrl-C).
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGINT) };
    let output = agent.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    drop(service);

    let h = health::assess(&unprobed, &during);
    eprintln!("p99 {:.1} ms -> {:.1} ms ({:.2}x), {:.1} -> {:.1} req/s", h.unprobed.p99_ms, h.during.p99_ms, h.p99_ratio, h.unprobed.rps, h.during.rps);
    let (base, audited) = (bucket_p99s(&unprobed), bucket_p99s(&during));
    eprintln!("p99 per second, unprobed: {base:?}\np99 per second, audited:  {audited:?}");
    assert!(!h.degraded, "the service degraded: {:?} ({})", h.reasons, h.rule);
    // Past anything the unprobed run had in a second (1.5x its worst
    // second, and +10 ms): at most two such seconds in 16 (this machine is
    // shared; one second past it was seen in unprobed runs too).
    let worst = base.iter().copied().fold(0.0, f64::max);
    let limit = (1.5 * worst).max(worst + 10.0);
    let spikes: Vec<(usize, f64)> = audited.iter().copied().enumerate().filter(|(_, p)| *p > limit).collect();
    assert!(spikes.len() <= 2, "p99 spikes past {limit:.1} ms in seconds {spikes:?} of the audited run");
    // Periodic: the seconds at one phase of a 2-5 s period (at least 3 of
    // them in 16 s), against the others, as the health guard matches a
    // collector's periods.
    for period in 2..=5usize {
        for phase in 0..period {
            let (at, other): (Vec<(usize, f64)>, Vec<(usize, f64)>) = audited.iter().copied().enumerate().partition(|(i, _)| i % period == phase);
            let (m_at, m_other) = (median(at.iter().map(|x| x.1).collect()), median(other.iter().map(|x| x.1).collect()));
            assert!(
                at.len() < 3 || !(m_at >= 3.0 * m_other && m_at - m_other >= 10.0),
                "periodic p99 spikes every {period} s (phase {phase}): median {m_at:.1} ms against {m_other:.1} ms"
            );
        }
    }

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let m = &report["memory"];
    assert_eq!(m["recording"]["kind"], "continuous", "{:#}", m["recording"]);
    assert_eq!(m["windows"], 1, "no window after the first: {m:#}");
    assert!(m["alloc_calls_observed"].as_u64().unwrap() > 1000, "{m:#}");
    // The agent was off the target's cores, and says so.
    assert_eq!(report["overhead"]["agent_priority"], "at nice 19", "{:#}", report["overhead"]);
}
