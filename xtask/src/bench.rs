//! Benchmarks: the product measured side by side with its baseline tool,
//! in one run, alternating so that drift on the machine hits every mode
//! alike. Results are printed as ratios and written to
//! `target/bench/<name>.json`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{cargo, run_checked, workspace_root};

pub fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("cpu-overhead") => cpu_overhead(),
        Some(other) => Err(format!("unknown benchmark `{other}` (known: cpu-overhead)")),
        None => Err("which benchmark? known: cpu-overhead".into()),
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn release_agent() -> Result<PathBuf, String> {
    let root = workspace_root();
    run_checked(
        cargo().current_dir(&root).args(["build", "--release", "-p", "perf-audit-agent"]),
        "building perf-audit-agent (release)",
    )?;
    Ok(root.join("target/release/perf-audit-agent"))
}

fn fixture(name: &str, frame_pointers: bool) -> Result<PathBuf, String> {
    let dir = workspace_root().join("tests/fixtures");
    let target_dir = dir.join(if frame_pointers { "target/fp" } else { "target/plain" });
    let mut cmd = cargo();
    cmd.current_dir(&dir).args(["build", "--release", "-p", name]).arg("--target-dir").arg(&target_dir);
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    if frame_pointers {
        cmd.env("RUSTFLAGS", "-C force-frame-pointers=yes");
    }
    run_checked(&mut cmd, &format!("building fixture {name}"))?;
    Ok(target_dir.join("release").join(name))
}

/// Runs a command whose output contains a `rate <float>` line; returns it.
fn measure_rate(cmd: &mut Command, what: &str) -> Result<f64, String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("rate ").and_then(|r| r.trim().parse().ok()))
        .ok_or_else(|| format!("{what}: no `rate` line in its output"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// A way of running the fixture: alone, under the agent, under perf.
struct Mode {
    name: &'static str,
    command: Box<dyn Fn(&Path, &[String]) -> Command>,
    rates: Vec<f64>,
}

fn cpu_overhead() -> Result<(), String> {
    let rounds = env_or("BENCH_ROUNDS", 5) as usize;
    let seconds = env_or("BENCH_SECONDS", 5);
    let agent = release_agent()?;
    let burner = fixture("cpu-burner", true)?;
    let scratch = tempfile_dir()?;
    let fixture_args = vec!["--seconds".to_string(), seconds.to_string()];

    let agent_out = scratch.join("agent-out");
    let perf_data = scratch.join("perf.data");
    let mut modes = vec![
        Mode { name: "untraced", command: Box::new(|bin, args| { let mut c = Command::new(bin); c.args(args); c }), rates: vec![] },
        Mode {
            name: "perf-audit-agent cpu -F 99",
            command: Box::new(move |bin, args| {
                let mut c = Command::new(&agent);
                c.args(["cpu", "--quiet", "--frequency", "99", "--duration", "10m", "--out"]).arg(&agent_out).arg("--").arg(bin).args(args);
                c
            }),
            rates: vec![],
        },
        Mode {
            name: "perf record -g -F 99",
            command: Box::new(move |bin, args| {
                let mut c = Command::new("perf");
                c.args(["record", "-q", "-g", "-F", "99", "-o"]).arg(&perf_data).arg("--").arg(bin).args(args);
                c
            }),
            rates: vec![],
        },
    ];

    eprintln!("xtask: cpu-overhead: {rounds} rounds x {} modes x {seconds} s on one core of the fixture", modes.len());
    for round in 0..rounds {
        // Rotate the order every round so no mode always runs first.
        let n = modes.len();
        for k in 0..n {
            let mode = &mut modes[(round + k) % n];
            let rate = measure_rate(&mut (mode.command)(&burner, &fixture_args), mode.name)?;
            eprintln!("  round {}: {:<28} {rate:>10.1} units/s", round + 1, mode.name);
            mode.rates.push(rate);
        }
    }

    let baseline = median(&mut modes[0].rates.clone());
    let mut rows = Vec::new();
    println!("\ncpu-overhead: work rate of a CPU-bound fixture (median of {rounds} runs of {seconds} s), ratio to untraced");
    println!("{:<30} {:>12} {:>8}", "mode", "units/s", "ratio");
    for mode in &modes {
        let m = median(&mut mode.rates.clone());
        let ratio = m / baseline;
        println!("{:<30} {:>12.1} {:>8.4}", mode.name, m, ratio);
        rows.push(serde_json::json!({"mode": mode.name, "median_rate": m, "ratio": ratio, "rates": mode.rates}));
    }
    let agent_ratio = rows[1]["ratio"].as_f64().unwrap_or(0.0);
    println!("goal: perf-audit ratio >= 0.99 -> {}", if agent_ratio >= 0.99 { "met" } else { "NOT met" });
    write_result("cpu-overhead", &serde_json::json!({"rounds": rounds, "seconds": seconds, "results": rows}))
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = workspace_root().join("target/bench/scratch");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn write_result(name: &str, value: &serde_json::Value) -> Result<(), String> {
    let path = workspace_root().join("target/bench").join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("results: {}", path.display());
    Ok(())
}
