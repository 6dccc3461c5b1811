//! A killed agent never harms its target: with every profile attached
//! (CPU sampling, off-CPU tracepoints, the stack-copy ring, allocator
//! uprobes and uretprobes in precise mode, page-fault and mapping probes),
//! SIGKILL leaves no BPF program behind, and the allocation-heavy target
//! runs at its unprobed speed again: a uprobe left on its allocator would
//! cost it more than half of it (precise mode runs it at ~0.12x, one trap
//! per malloc at ~0.45x, `cargo xtask bench memory`).

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use perf_audit_tests::{Build, bpf_programs_of, fixture, loaded_programs, spawn_agent};

/// The leaker's allocation units per second from `measure_after` to its end.
fn leaker(seconds: u32, measure_after: u32) -> std::process::Child {
    Command::new(fixture("mem-leaker", Build::Release))
        .args(["--churn-only", "--seconds", &seconds.to_string(), "--measure-after", &measure_after.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mem-leaker")
}

fn rate_of(child: std::process::Child) -> f64 {
    let out = child.wait_with_output().expect("mem-leaker runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("rate "))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate line in {text:?}"))
}

#[test]
fn a_killed_agent_leaves_no_program_and_no_uprobe_and_the_target_runs_at_full_speed() {
    // The target alone: its rate from 10 s to 14 s.
    let control = rate_of(leaker(14, 10));

    let t0 = Instant::now();
    let target = leaker(14, 10);
    let pid = target.id().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut agent = spawn_agent(&["--pid", &pid, "all", "--memory", "precise", "--unwind", "dwarf", "--duration", "60s"], &out);
    // Every collector attached: the memory instance is the last one loaded.
    let start = Instant::now();
    let mut programs = BTreeSet::new();
    while start.elapsed() < Duration::from_secs(4) {
        thread::sleep(Duration::from_millis(200));
        programs = bpf_programs_of(agent.id());
    }
    if let Some(status) = agent.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(agent.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("the agent exited early ({status}):\n{err}");
    }
    // CPU, off-CPU, sys_exit, page faults, mappings and the allocator
    // programs: a dozen and more.
    assert!(programs.len() >= 8, "the agent holds only {programs:?}");

    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGKILL) };
    agent.wait().unwrap();
    let killed = Instant::now();
    while programs.iter().any(|id| loaded_programs().contains(id)) {
        assert!(killed.elapsed() < Duration::from_secs(5), "programs {:?} outlived the killed agent", programs.intersection(&loaded_programs()).collect::<Vec<_>>());
        thread::sleep(Duration::from_millis(100));
    }
    // The kernel releases uprobes after a grace period (a uretprobe link
    // takes up to ~1 s to close), so the programs go within a few seconds.
    assert!(t0.elapsed() < Duration::from_millis(9500), "the programs went only at {:?}; the target's measurement starts at 10 s", t0.elapsed());
    // From 10 s to 14 s, after the kill: at full speed again.
    let after = rate_of(target);
    // A single uprobe trap left on malloc costs this fixture more than half
    // its speed (0.448x with one trap per malloc, `cargo xtask bench
    // memory`), the precise probes ~0.12x: above 0.6x, none is left. Below
    // that bound, run-to-run noise on a shared machine (0.72x seen once on
    // a quiet one) does not pass for a probe.
    assert!(after >= 0.6 * control, "the target ran at {after:.0}/s after the agent was killed, {control:.0}/s alone: a probe was left behind");
}
