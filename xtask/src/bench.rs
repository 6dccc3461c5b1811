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
    // The baseline tools (perf, heaptrack, bpftrace) on a fresh machine.
    crate::setup::install_missing_packages(&[crate::setup::DEMO_PACKAGES, crate::setup::TEST_PACKAGES].concat())?;
    match args.first().map(String::as_str) {
        Some("cpu-overhead") => cpu_overhead(),
        Some("unwind") => unwind(),
        Some("offcpu") => offcpu(),
        Some("daemon") => daemon(),
        Some("memory") => memory(),
        Some("overhead") => overhead(),
        Some("database") => database(),
        Some("corpus") => crate::corpus::run(&args[1..]),
        Some(other) => Err(format!("unknown benchmark `{other}` (known: cpu-overhead, unwind, offcpu, memory, daemon, database, overhead, corpus)")),
        None => Err("which benchmark? known: cpu-overhead, unwind, offcpu, memory, daemon, database, overhead, corpus".into()),
    }
}

/// The whole audit's cost on a realistic service: the demo (private
/// PostgreSQL, its scenario) untraced vs each profile vs `all`, p99 and
/// throughput ratios in one run. The driver lives in the tests crate
/// (`tests/src/bin/bench-overhead.rs`), next to the demo and database
/// helpers it uses; its module doc says what is measured and how.
fn overhead() -> Result<(), String> {
    let agent = release_agent()?;
    let root = workspace_root();
    // BENCH_DEBUG_DRIVER=1: the driver's debug build (no release build of
    // its dependencies); it measures every configuration the same way.
    let debug = std::env::var_os("BENCH_DEBUG_DRIVER").is_some();
    let mut build = cargo();
    build.current_dir(&root).args(["build", "-p", "perf-audit-tests", "--bin", "bench-overhead"]);
    if !debug {
        build.arg("--release");
    }
    run_checked(&mut build, "building the overhead benchmark's driver")?;
    run_checked(
        Command::new(root.join(if debug { "target/debug/bench-overhead" } else { "target/release/bench-overhead" })).env("PERF_AUDIT_AGENT", &agent),
        "the overhead benchmark",
    )
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub(crate) fn release_agent() -> Result<PathBuf, String> {
    // An agent already built (e.g. the debug one, on a machine where a
    // release build costs too much): the results say which was used.
    if let Some(agent) = std::env::var_os("PERF_AUDIT_AGENT") {
        eprintln!("bench: using PERF_AUDIT_AGENT={}", PathBuf::from(&agent).display());
        return Ok(PathBuf::from(agent));
    }
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

/// Builds the command of one mode from the fixture and its arguments.
type ModeCommand = Box<dyn Fn(&Path, &[String]) -> Command>;

/// A way of running the fixture: alone, under the agent, under perf.
struct Mode {
    name: &'static str,
    command: ModeCommand,
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

pub(crate) fn write_result(name: &str, value: &serde_json::Value) -> Result<(), String> {
    let path = workspace_root().join("target/bench").join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("results: {}", path.display());
    Ok(())
}

/// Completeness and target slowdown of the unwinding modes on a plain
/// release build (`main -> a -> b -> hot`, no frame pointers): perf-audit's
/// dwarf mode, its frame-pointer mode, and `perf record --call-graph dwarf`.
fn unwind() -> Result<(), String> {
    let rounds = env_or("BENCH_ROUNDS", 5) as usize;
    let seconds = env_or("BENCH_SECONDS", 5);
    let agent = release_agent()?;
    let chain = fixture("unwind-chain", false)?;
    let scratch = tempfile_dir()?;
    let args = vec!["--seconds".to_string(), seconds.to_string()];

    struct Run {
        name: &'static str,
        rates: Vec<f64>,
        completeness: Vec<f64>,
    }
    let names = ["untraced", "perf-audit --unwind dwarf", "perf-audit --unwind frame-pointer", "perf record --call-graph dwarf -F 99"];
    let mut runs: Vec<Run> = names.iter().map(|n| Run { name: n, rates: vec![], completeness: vec![] }).collect();
    eprintln!("xtask: unwind: {rounds} rounds x {} modes x {seconds} s", runs.len());
    for round in 0..rounds {
        for k in 0..runs.len() {
            let i = (round + k) % runs.len();
            let out_dir = scratch.join(format!("unwind-{i}"));
            let _ = std::fs::remove_dir_all(&out_dir);
            let (rate, completeness) = match i {
                0 => (measure_rate(Command::new(&chain).args(&args), names[0])?, None),
                1 | 2 => {
                    let mode = if i == 1 { "dwarf" } else { "frame-pointer" };
                    let rate = measure_rate(
                        Command::new(&agent)
                            .args(["cpu", "--quiet", "--frequency", "99", "--duration", "10m", "--unwind", mode, "--out"])
                            .arg(&out_dir)
                            .arg("--")
                            .arg(&chain)
                            .args(&args),
                        names[i],
                    )?;
                    (rate, Some(report_completeness(&out_dir)?))
                }
                _ => {
                    let data = scratch.join("perf-dwarf.data");
                    let rate = measure_rate(
                        Command::new("perf")
                            .args(["record", "-q", "--call-graph", "dwarf", "-F", "99", "-o"])
                            .arg(&data)
                            .arg("--")
                            .arg(&chain)
                            .args(&args),
                        names[i],
                    )?;
                    (rate, Some(perf_script_completeness(&data)?))
                }
            };
            eprintln!(
                "  round {}: {:<38} {rate:>9.1} calls/s{}",
                round + 1,
                names[i],
                completeness.map(|c| format!("  {:.1}% complete", c * 100.0)).unwrap_or_default()
            );
            runs[i].rates.push(rate);
            if let Some(c) = completeness {
                runs[i].completeness.push(c);
            }
        }
    }
    let baseline = median(&mut runs[0].rates.clone());
    println!("\nunwind: plain release build (no frame pointers), median of {rounds} runs of {seconds} s");
    println!("{:<38} {:>10} {:>8} {:>10}", "mode", "calls/s", "ratio", "complete");
    let mut rows = Vec::new();
    for run in &runs {
        let rate = median(&mut run.rates.clone());
        let complete = if run.completeness.is_empty() { None } else { Some(median(&mut run.completeness.clone())) };
        println!(
            "{:<38} {rate:>10.1} {:>8.4} {:>10}",
            run.name,
            rate / baseline,
            complete.map(|c| format!("{:.1}%", c * 100.0)).unwrap_or_else(|| "-".into())
        );
        rows.push(serde_json::json!({"mode": run.name, "median_rate": rate, "ratio": rate / baseline,
            "completeness": complete, "rates": run.rates, "completeness_runs": run.completeness}));
    }
    let dwarf_ratio = rows[1]["ratio"].as_f64().unwrap_or(0.0);
    let perf_ratio = rows[3]["ratio"].as_f64().unwrap_or(0.0);
    let dwarf_complete = rows[1]["completeness"].as_f64().unwrap_or(0.0);
    println!(
        "goal: dwarf mode >= 95% complete ({}) at a slowdown no worse than perf's dwarf mode ({})",
        if dwarf_complete >= 0.95 { "met" } else { "NOT met" },
        if dwarf_ratio >= perf_ratio - 0.005 { "met" } else { "NOT met" }
    );
    write_result("unwind", &serde_json::json!({"rounds": rounds, "seconds": seconds, "results": rows}))
}

fn report_completeness(out_dir: &Path) -> Result<f64, String> {
    let path = out_dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    report["cpu"]["stack_completeness_pct"].as_f64().map(|p| p / 100.0).ok_or_else(|| "no stack_completeness_pct".into())
}

/// The same completeness rule as the agent's, applied to `perf script`:
/// a sample's stack is complete when it reaches `main` or a thread root.
fn perf_script_completeness(data: &Path) -> Result<f64, String> {
    let out = Command::new("perf")
        .args(["script", "-F", "comm,tid,ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut total, mut complete) = (0u64, 0u64);
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        if lines.next().is_none() {
            continue;
        }
        total += 1;
        let reaches_root = lines.any(|l| {
            let sym = l.split_whitespace().nth(1).unwrap_or_default();
            let sym = sym.split('+').next().unwrap_or_default();
            matches!(sym, "main" | "_start" | "__libc_start_main" | "__libc_start_call_main" | "start_thread" | "clone3" | "__clone3")
        });
        if reaches_root {
            complete += 1;
        }
    }
    if total == 0 {
        return Err("perf script produced no samples".into());
    }
    Ok(complete as f64 / total as f64)
}

/// The always-on daemon's cost at 19 Hz system-wide with two busy
/// processes built without frame pointers (Rust's default release profile,
/// so every sample is a stack copy unwound with `.eh_frame`), in two parts:
///
/// 1. a soak of BENCH_SECONDS (180): the daemon's CPU (utime + stime from
///    /proc/<daemon>/stat) and RSS every BENCH_INTERVAL (5) seconds, with a
///    Prometheus-like scrape of /metrics each time and collapsed stacks
///    written every window (symbolization included);
/// 2. the busy processes' throughput side by side: BENCH_ROUNDS (3) rounds
///    of BENCH_PHASE (30) seconds without the daemon and with it (order
///    alternating per round), the two processes' `rate` summed.
///
/// BENCH_DAEMON_ARGS (e.g. `--frame-pointers-only`) is passed to the daemon;
/// BENCH_AGENT names an agent binary to use instead of the release build.
fn daemon() -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let seconds = env_or("BENCH_SECONDS", 180);
    let interval = env_or("BENCH_INTERVAL", 5).max(1);
    let phase = env_or("BENCH_PHASE", 30).max(5);
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let extra: Vec<String> = std::env::var("BENCH_DAEMON_ARGS").unwrap_or_default().split_whitespace().map(String::from).collect();
    // BENCH_AGENT: an already built agent (else the release build).
    let agent = match std::env::var_os("BENCH_AGENT") {
        Some(path) => PathBuf::from(path),
        None => release_agent()?,
    };
    let burner = fixture("cpu-burner", false)?;
    let scratch = tempfile_dir()?.join("daemon-folded");
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::create_dir_all(&scratch);

    let spawn_busy = |secs: u64| -> Result<Vec<std::process::Child>, String> {
        (0..2)
            .map(|_| {
                Command::new(&burner)
                    .args(["--seconds", &secs.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cpu-burner: {e}"))
            })
            .collect()
    };
    let summed_rate = |children: Vec<std::process::Child>| -> Result<f64, String> {
        let mut sum = 0.0;
        for child in children {
            let out = child.wait_with_output().map_err(|e| format!("cpu-burner: {e}"))?;
            let rate = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("rate ").and_then(|v| v.trim().parse::<f64>().ok()))
                .ok_or("cpu-burner printed no rate")?;
            sum += rate;
        }
        Ok(sum)
    };
    let cpu_ticks = |pid: u32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    // VmRSS and its anonymous and file-backed parts (RssAnon, RssFile).
    let status_kib = |pid: u32, field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
            .unwrap_or(0)
            * 1024
    };
    let rss = |pid: u32| -> u64 { status_kib(pid, "VmRSS:") };
    let scrape = |addr: &str| -> String {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else { return String::new() };
        let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut body = Vec::new();
        let _ = s.read_to_end(&mut body);
        String::from_utf8_lossy(&body).into_owned()
    };
    let ticks_per_s = 100.0; // USER_HZ on Linux

    // The machine's load, printed with the result: the daemon's CPU share
    // and the busy processes' throughput mean little on a loaded machine.
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let load_before = loadavg();

    // Part 1: the soak.
    let busy = spawn_busy(seconds + 30)?;
    let (mut daemon, addr) = start_daemon(&agent, &scratch, &extra)?;
    let pid = daemon.id();
    eprintln!("xtask: daemon: {seconds} s soak, 19 Hz system-wide, two busy no-frame-pointer processes, sampled every {interval} s");
    let start = std::time::Instant::now();
    let t0 = cpu_ticks(pid).unwrap_or(0);
    let mut rows = Vec::new();
    let mut last_ticks = t0;
    let mut last_t = start;
    let mut last_metrics = String::new();
    while start.elapsed().as_secs() < seconds {
        std::thread::sleep(std::time::Duration::from_secs(interval));
        let scraped = scrape(&addr);
        let (Some(ticks), r) = (cpu_ticks(pid), rss(pid)) else { return Err("the daemon died during the soak".into()) };
        let dt = last_t.elapsed().as_secs_f64();
        let cpu_pct = (ticks - last_ticks) as f64 / ticks_per_s / dt * 100.0;
        last_ticks = ticks;
        last_t = std::time::Instant::now();
        let t = start.elapsed().as_secs_f64();
        let (anon, file) = (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"));
        let mib = |b: u64| b as f64 / 1048576.0;
        eprintln!(
            "  t={t:>6.1}s  cpu {cpu_pct:>5.2}% of a core  rss {:>6.1} MiB (anon {:>5.1}, file {:>5.1})  (/metrics {} bytes)",
            mib(r),
            mib(anon),
            mib(file),
            scraped.len()
        );
        rows.push(serde_json::json!({"t_s": t, "cpu_pct": cpu_pct, "rss_bytes": r, "rss_anon_bytes": anon, "rss_file_bytes": file}));
        last_metrics = scraped;
    }
    let total_s = start.elapsed().as_secs_f64();
    let load_after = loadavg();
    // The true peak (the 5 s samples can miss a window flush's, which
    // lasts a second or two).
    let hwm = status_kib(pid, "VmHWM:");
    let total_cpu_pct = (last_ticks - t0) as f64 / ticks_per_s / total_s * 100.0;
    // SAFETY: signalling our own child.
    unsafe { libc_kill(pid as i32, 15) };
    let status = daemon.wait().map_err(|e| format!("daemon: {e}"))?;
    for mut b in busy {
        let _ = b.kill();
        let _ = b.wait();
    }
    let unwind: Vec<String> =
        last_metrics
            .lines()
            .filter(|l| {
                [
                    "perf_audit_unwind_samples_total{",
                    "perf_audit_samples_dropped_total{",
                    "perf_audit_off_cpu_",
                    "perf_audit_unwind_table_",
                    "perf_audit_windows_total ",
                    "perf_audit_profiles_total ",
                    "perf_audit_window_flush_cpu_seconds_total ",
                    "perf_audit_symbol_",
                ]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(String::from)
            .collect();

    // Part 2: throughput without and with the daemon, side by side.
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut phase_cpu = Vec::new();
    for round in 0..rounds {
        for daemon_on in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let running = if daemon_on { Some(start_daemon(&agent, &scratch, &extra)?) } else { None };
            let t = std::time::Instant::now();
            let before = running.as_ref().and_then(|(d, _)| cpu_ticks(d.id())).unwrap_or(0);
            let rate = summed_rate(spawn_busy(phase)?)?;
            if let Some((mut d, _)) = running {
                let used = cpu_ticks(d.id()).unwrap_or(before) - before;
                phase_cpu.push(used as f64 / ticks_per_s / t.elapsed().as_secs_f64() * 100.0);
                // SAFETY: signalling our own child.
                unsafe { libc_kill(d.id() as i32, 15) };
                let _ = d.wait();
                with.push(rate);
            } else {
                without.push(rate);
            }
            eprintln!("  round {}: daemon {:<3} {rate:>10.1} units/s", round + 1, if daemon_on { "on" } else { "off" });
        }
    }
    let (m_without, m_with) = (median(&mut without.clone()), median(&mut with.clone()));
    let ratio = m_with / m_without.max(1e-9);

    let rss_values: Vec<u64> = rows.iter().map(|r| r["rss_bytes"].as_u64().unwrap_or(0)).collect();
    let max_rss = rss_values.iter().copied().max().unwrap_or(0);
    // "Flat" judges the trend, not one sample: the median RSS of the first
    // and of the last quarter of the soak. Their maxima compared a window
    // flush's transient peak (symbolization maps and parses objects, and
    // releases them at the flush's end) in the last quarter with the first
    // quarter, which has no flush (the first is at 60 s), so one flush
    // failed it whatever the trend; peaks are judged by the 64 MiB maximum.
    let quarter = (rss_values.len() / 4).max(1);
    let median_of = |values: &[u64]| -> u64 {
        let mut v = values.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let early = median_of(&rss_values[..quarter]);
    let late = median_of(&rss_values[rss_values.len() - quarter..]);
    let windows = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    println!("\ndaemon {}: 19 Hz system-wide, two busy no-frame-pointer processes, {total_s:.0} s soak, sampled every {interval} s", extra.join(" "));
    println!("cpu (whole soak)      {total_cpu_pct:.3}% of one core");
    println!("load average          {load_before} before the soak, {load_after} after (1, 5, 15 min)");
    println!("rss peak (VmHWM)      {:.1} MiB", hwm as f64 / 1048576.0);
    println!("rss max (samples)     {:.1} MiB (median of the first quarter {:.1} MiB, of the last quarter {:.1} MiB)", max_rss as f64 / 1048576.0, early as f64 / 1048576.0, late as f64 / 1048576.0);
    let part_max = |key: &str| rows.iter().map(|r| r[key].as_u64().unwrap_or(0)).max().unwrap_or(0) as f64 / 1048576.0;
    println!("rss parts max         anon {:.1} MiB, file-backed {:.1} MiB", part_max("rss_anon_bytes"), part_max("rss_file_bytes"));
    println!("folded profiles       {windows} written");
    println!("exit on SIGTERM       {status}");
    for line in &unwind {
        println!("                      {line}");
    }
    println!("throughput            without {m_without:.1} units/s, with {m_with:.1} units/s (medians of {rounds} x {phase} s): ratio {ratio:.4}");
    println!("                      without {without:.1?}, with {with:.1?}; daemon cpu per phase {phase_cpu:.2?} % of a core");
    let cpu_ok = total_cpu_pct <= 1.0;
    let rss_ok = max_rss.max(hwm) <= 64 * 1024 * 1024;
    let flat = late <= early + 4 * 1024 * 1024;
    let throughput_ok = ratio >= 0.99;
    println!(
        "goal: <= 1% of a core ({}), <= 64 MiB RSS ({}), flat ({}), throughput >= 0.99x ({})",
        if cpu_ok { "met" } else { "NOT met" },
        if rss_ok { "met" } else { "NOT met" },
        if flat { "met" } else { "NOT met" },
        if throughput_ok { "met" } else { "NOT met" }
    );
    write_result(
        "daemon",
        &serde_json::json!({"seconds": total_s, "interval_s": interval, "frequency_hz": 19, "daemon_args": extra,
            "cpu_pct": total_cpu_pct, "rss_max_bytes": max_rss, "rss_peak_bytes": hwm, "rss_first_quarter_median": early, "rss_last_quarter_median": late,
            "load_average_before": load_before, "load_average_after": load_after,
            "folded_profiles": windows, "samples": rows, "unwind": unwind,
            "throughput": {"phase_s": phase, "rounds": rounds, "without": without, "with": with, "ratio": ratio, "daemon_cpu_pct": phase_cpu},
            "goals": {"cpu": cpu_ok, "rss": rss_ok, "flat": flat, "throughput": throughput_ok}}),
    )
}

/// Starts the release daemon system-wide at 19 Hz (60 s windows written to
/// `folded`) and waits until it listens; returns it and its address.
fn start_daemon(agent: &Path, folded: &Path, extra: &[String]) -> Result<(std::process::Child, String), String> {
    use std::io::BufRead as _;
    let mut daemon = Command::new(agent)
        .args(["daemon", "--listen", "127.0.0.1:0", "--frequency", "19", "--window", "60s", "--folded-dir"])
        .arg(folded)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("daemon: {e}"))?;
    let stderr = daemon.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    break rest.split_whitespace().next().unwrap_or_default().to_string();
                }
                eprintln!("{line}");
            }
            _ => return Err("the daemon exited before listening".into()),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((daemon, addr))
}

unsafe extern "C" {
    #[link_name = "kill"]
    pub(crate) fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Off-CPU collector overhead on a context-switch-heavy fixture (two
/// threads ping-ponging through a futex, ~100k hand-offs/s): hand-off rate
/// untraced, under `perf-audit-agent async` (sched_switch + syscall-exit
/// raw tracepoints, stacks for blocks >= 1 ms, CPU sampling at 99 Hz), the
/// same on the classic tracepoints (the fallback for kernels without the
/// BTF the raw ones need: what the raw ones save), and under `perf record
/// -e sched:sched_switch -g` (perf's off-CPU recipe).
fn offcpu() -> Result<(), String> {
    let rounds = env_or("BENCH_ROUNDS", 5) as usize;
    let seconds = env_or("BENCH_SECONDS", 5);
    let agent = release_agent()?;
    let bin = fixture("ctx-switch", false)?;
    let scratch = tempfile_dir()?;
    let args = vec!["--seconds".to_string(), seconds.to_string()];
    let out_dir = scratch.join("offcpu-agent");
    let out_dir_classic = scratch.join("offcpu-agent-classic");
    let agent_classic = agent.clone();
    let perf_data = scratch.join("offcpu-perf.data");
    let mut modes = vec![
        Mode { name: "untraced", command: Box::new(|bin, args| { let mut c = Command::new(bin); c.args(args); c }), rates: vec![] },
        Mode {
            name: "perf-audit-agent async",
            command: Box::new(move |bin, args| {
                let _ = std::fs::remove_dir_all(&out_dir);
                let mut c = Command::new(&agent);
                c.args(["async", "--quiet", "--duration", "10m", "--out"]).arg(&out_dir).arg("--").arg(bin).args(args);
                c
            }),
            rates: vec![],
        },
        Mode {
            name: "perf-audit async, classic tracepoints",
            command: Box::new(move |bin, args| {
                let _ = std::fs::remove_dir_all(&out_dir_classic);
                let mut c = Command::new(&agent_classic);
                c.env("PERF_AUDIT_CLASSIC_TRACEPOINTS", "1");
                c.args(["async", "--quiet", "--duration", "10m", "--out"]).arg(&out_dir_classic).arg("--").arg(bin).args(args);
                c
            }),
            rates: vec![],
        },
        Mode {
            name: "perf record -e sched:sched_switch -g",
            command: Box::new(move |bin, args| {
                let mut c = Command::new("perf");
                c.args(["record", "-q", "-e", "sched:sched_switch", "-g", "-o"]).arg(&perf_data).arg("--").arg(bin).args(args);
                c
            }),
            rates: vec![],
        },
    ];
    eprintln!("xtask: offcpu: {rounds} rounds x {} modes x {seconds} s", modes.len());
    for round in 0..rounds {
        let n = modes.len();
        for k in 0..n {
            let mode = &mut modes[(round + k) % n];
            let rate = measure_rate(&mut (mode.command)(&bin, &args), mode.name)?;
            eprintln!("  round {}: {:<38} {rate:>10.1} hand-offs/s", round + 1, mode.name);
            mode.rates.push(rate);
        }
    }
    let baseline = median(&mut modes[0].rates.clone());
    println!("\noffcpu: context-switch-heavy fixture (median of {rounds} runs of {seconds} s), ratio to untraced");
    println!("{:<38} {:>12} {:>8}", "mode", "hand-offs/s", "ratio");
    let mut rows = Vec::new();
    for mode in &modes {
        let m = median(&mut mode.rates.clone());
        println!("{:<38} {:>12.1} {:>8.4}", mode.name, m, m / baseline);
        rows.push(serde_json::json!({"mode": mode.name, "median_rate": m, "ratio": m / baseline, "rates": mode.rates}));
    }
    write_result("offcpu", &serde_json::json!({"rounds": rounds, "seconds": seconds, "results": rows}))
}

/// Throughput of an allocation-heavy fixture (`mem-leaker --churn-only`:
/// two allocations and two frees per unit, with `BENCH_WORK` steps of work
/// per unit, ~1.5 µs by default, the class of program where the issue
/// measured heaptrack at 0.70x and memleak-style probes at 0.066x), side by
/// side in one run: untraced, perf-audit's default and precise memory
/// modes, heaptrack (LD_PRELOAD), bpftrace with memleak-style uprobes and
/// uretprobes on glibc's allocator, and two floors of the uprobe mechanism
/// itself: `perf stat` counting trace-event uprobes (no BPF program at all)
/// at exactly the places precise mode probes, and on malloc's entry alone.
/// The floors bound what any per-call uprobe design can reach here.
fn memory() -> Result<(), String> {
    let rounds = env_or("BENCH_ROUNDS", 3) as usize;
    // 10 s measured: two whole default-mode periods (a window every 5 s).
    let seconds = env_or("BENCH_SECONDS", 11);
    let work = env_or("BENCH_WORK", 1000);
    // Tools that attach to a launched process need a moment: the fixture
    // counts its rate from then on.
    let measure_after = 1.0;
    let agent = release_agent()?;
    let fixture_bin = fixture("mem-leaker", false)?;
    let scratch = tempfile_dir()?;
    let args: Vec<String> = vec![
        "--seconds".into(),
        seconds.to_string(),
        "--churn-only".into(),
        "--work".into(),
        work.to_string(),
        "--measure-after".into(),
        measure_after.to_string(),
    ];
    let agent_mode = |mode: &'static str| {
        let agent = agent.clone();
        let out = scratch.join(format!("memory-{mode}"));
        Box::new(move |bin: &Path, args: &[String]| {
            let _ = std::fs::remove_dir_all(&out);
            let mut c = Command::new(&agent);
            c.args(["memory", "--memory", mode, "--quiet", "--duration", "10m", "--out"]).arg(&out).arg("--").arg(bin).args(args);
            c
        }) as Box<dyn Fn(&Path, &[String]) -> Command>
    };
    let agent_forced = |kind: &'static str| {
        let agent = agent.clone();
        let out = scratch.join(format!("memory-default-{kind}"));
        Box::new(move |bin: &Path, args: &[String]| {
            let _ = std::fs::remove_dir_all(&out);
            let mut c = Command::new(&agent);
            c.env("PERF_AUDIT_MEMORY_RECORDING", kind);
            c.args(["memory", "--memory", "default", "--quiet", "--duration", "10m", "--out"]).arg(&out).arg("--").arg(bin).args(args);
            c
        }) as Box<dyn Fn(&Path, &[String]) -> Command>
    };
    let placement = precise_probe_placement(&agent, &fixture_bin, &scratch)?;
    let floor_events = FloorProbes::create(&placement)?;
    let perf_stat = |events: String| {
        Box::new(move |bin: &Path, args: &[String]| {
            let mut c = Command::new("perf");
            c.args(["stat", "-x,", "-e", &events, "--"]).arg(bin).args(args);
            c
        }) as Box<dyn Fn(&Path, &[String]) -> Command>
    };
    let bpftrace_script = memleak_style_bpftrace(&placement.object);
    let heaptrack_out = scratch.join("heaptrack.out");
    let mut modes = vec![
        Mode { name: "untraced", command: Box::new(|bin, args| { let mut c = Command::new(bin); c.args(args); c }), rates: vec![] },
        Mode { name: "perf-audit --memory default", command: agent_mode("default"), rates: vec![] },
        Mode { name: "perf-audit --memory precise", command: agent_mode("precise"), rates: vec![] },
        Mode {
            name: "heaptrack (LD_PRELOAD)",
            command: Box::new(move |bin, args| {
                let mut c = Command::new("heaptrack");
                c.arg("-o").arg(&heaptrack_out).arg(bin).args(args);
                c
            }),
            rates: vec![],
        },
        Mode {
            name: "bpftrace memleak-style",
            command: Box::new(move |bin, args| {
                let mut c = Command::new("bpftrace");
                let cmdline = std::iter::once(bin.display().to_string()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
                c.arg("-c").arg(cmdline).arg("-e").arg(&bpftrace_script);
                c
            }),
            rates: vec![],
        },
        Mode { name: "floor: precise's uprobes, no program", command: perf_stat(floor_events.all()), rates: vec![] },
        Mode { name: "floor: malloc entry uprobe only", command: perf_stat(floor_events.malloc_entry()), rates: vec![] },
        // Default mode's other mechanisms, forced: probes attached for the
        // whole audit and recording in windows (no link churn), and the
        // floor of always-attached probes (programs that return at once).
        Mode { name: "default, gated (always attached)", command: agent_forced("gated"), rates: vec![] },
        Mode { name: "default, floor (attached, no rec.)", command: agent_forced("floor"), rates: vec![] },
    ];
    eprintln!("xtask: memory: {rounds} rounds x {} modes x {seconds} s (rate from {measure_after} s), {work} work steps per unit", modes.len());
    for round in 0..rounds {
        let n = modes.len();
        for k in 0..n {
            let mode = &mut modes[(round + k) % n];
            let rate = measure_rate(&mut (mode.command)(&fixture_bin, &args), mode.name)?;
            eprintln!("  round {}: {:<32} {rate:>12.1} units/s", round + 1, mode.name);
            mode.rates.push(rate);
        }
    }
    let baseline = median(&mut modes[0].rates.clone());
    println!(
        "\nmemory: allocation-heavy fixture (2 allocs + 2 frees per unit, {:.2} µs per unit untraced), median of {rounds} runs, ratio to untraced",
        1e6 / baseline
    );
    println!("{:<34} {:>12} {:>8}", "mode", "units/s", "ratio");
    let mut rows = Vec::new();
    for mode in &modes {
        let m = median(&mut mode.rates.clone());
        println!("{:<34} {:>12.1} {:>8.4}", mode.name, m, m / baseline);
        rows.push(serde_json::json!({"mode": mode.name, "median_rate": m, "ratio": m / baseline, "rates": mode.rates}));
    }
    let ratio = |i: usize| rows[i]["ratio"].as_f64().unwrap_or(0.0);
    println!(
        "goal: default >= 0.9 -> {}; precise >= 0.5 -> {}; precise vs bpftrace memleak-style: {:.1}x the throughput; \
         precise reaches {:.0}% of the uprobe mechanism's own floor at its placements ({:.3}); one uprobe on malloc's entry alone caps any per-call design at {:.3}",
        if ratio(1) >= 0.9 { "met" } else { "NOT met" },
        if ratio(2) >= 0.5 { "met" } else { "NOT met" },
        ratio(2) / ratio(4).max(1e-9),
        100.0 * ratio(2) / ratio(5).max(1e-9),
        ratio(5),
        ratio(6)
    );
    drop(floor_events);
    write_result(
        "memory",
        &serde_json::json!({"rounds": rounds, "seconds": seconds, "work": work, "measure_after_s": measure_after,
            "untraced_us_per_unit": 1e6 / baseline, "allocator_object": placement.object, "probes": placement.probes, "results": rows}),
    )
}

/// Where precise mode puts its probes on the fixture: read from the
/// report of a short precise-mode audit, so the floor is measured at the
/// agent's real placements.
struct ProbePlacement {
    object: String,
    /// (symbol, offset past its entry, has a uretprobe).
    probes: Vec<(String, u64, bool)>,
}

fn precise_probe_placement(agent: &Path, fixture_bin: &Path, scratch: &Path) -> Result<ProbePlacement, String> {
    let out = scratch.join("memory-placement");
    let _ = std::fs::remove_dir_all(&out);
    run_checked(
        Command::new(agent)
            .args(["memory", "--memory", "precise", "--quiet", "--duration", "2s", "--out"])
            .arg(&out)
            .arg("--")
            .arg(fixture_bin)
            .args(["--seconds", "3", "--churn-only"])
            .stdout(Stdio::null()),
        "a short precise-mode audit to read the probe placement",
    )?;
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).map_err(|e| format!("{}: {e}", out.join("report.json").display()))?,
    )
    .map_err(|e| format!("report.json: {e}"))?;
    let memory = &report["memory"];
    let object = memory["allocator_object"].as_str().ok_or("report.json has no memory.allocator_object")?.to_string();
    let probes = memory["probes"]
        .as_array()
        .ok_or("report.json has no memory.probes")?
        .iter()
        .filter_map(|p| Some((p["symbol"].as_str()?.to_string(), p["offset"].as_u64()?, p["uretprobe"].as_bool()?)))
        .collect::<Vec<_>>();
    if !object.contains("libc.so") {
        return Err(format!("the fixture's allocator is {object}, not glibc: the bpftrace baseline probes glibc"));
    }
    Ok(ProbePlacement { object, probes })
}

/// Trace-event uprobes (`perf probe`) at precise mode's placements, in
/// their own group, deleted on drop. Counted by `perf stat`, a hit runs no
/// BPF program: what is left is the cost of the uprobe mechanism itself.
struct FloorProbes;

const FLOOR_GROUP: &str = "perfauditfloor";

impl FloorProbes {
    fn create(placement: &ProbePlacement) -> Result<FloorProbes, String> {
        let _ = Command::new("perf").args(["probe", "-q", "-d", &format!("{FLOOR_GROUP}:*")]).stderr(Stdio::null()).status();
        let mut events = Vec::new();
        for (symbol, offset, uretprobe) in &placement.probes {
            let mut specs = vec![(format!("{symbol}_entry"), if *offset == 0 { symbol.clone() } else { format!("{symbol}+{offset}") })];
            if *uretprobe {
                // perf names a return probe's event `<name>__return`.
                specs.push((symbol.clone(), format!("{symbol}%return")));
            }
            for (event, place) in specs {
                run_checked(
                    Command::new("perf")
                        .args(["probe", "-q", "-x", &placement.object, "-a", &format!("{FLOOR_GROUP}:{event}={place}")])
                        .stdout(Stdio::null()),
                    &format!("perf probe {place} in {}", placement.object),
                )?;
                events.push(event);
            }
        }
        if !events.iter().any(|e| e == "malloc_entry") {
            return Err("precise mode placed no probe on malloc".into());
        }
        Ok(FloorProbes)
    }

    fn all(&self) -> String {
        format!("{FLOOR_GROUP}:*")
    }

    fn malloc_entry(&self) -> String {
        format!("{FLOOR_GROUP}:malloc_entry")
    }
}

impl Drop for FloorProbes {
    fn drop(&mut self) {
        let _ = Command::new("perf").args(["probe", "-q", "-d", &format!("{FLOOR_GROUP}:*")]).stderr(Stdio::null()).status();
    }
}

/// bcc memleak's approach written for bpftrace: every allocation's size at
/// entry, its pointer at return into a live map, removed at free.
fn memleak_style_bpftrace(libc: &str) -> String {
    format!(
        "uprobe:{libc}:malloc {{ @size[tid] = arg0; }}
uprobe:{libc}:calloc {{ @size[tid] = arg0 * arg1; }}
uprobe:{libc}:realloc {{ delete(@live[arg0]); @size[tid] = arg1; }}
uretprobe:{libc}:malloc, uretprobe:{libc}:calloc, uretprobe:{libc}:realloc {{ if (retval != 0) {{ @live[retval] = @size[tid]; }} delete(@size[tid]); }}
uprobe:{libc}:free {{ delete(@live[arg0]); }}
END {{ clear(@live); clear(@size); }}"
    )
}

/// The database profile's cost at >= 10,000 queries/s: the demo service's
/// `/feed` (31 sequential queries per request: a page query and an N+1 loop
/// of primary-key lookups, sqlx over a pool of 5) driven closed-loop by
/// `BENCH_CLIENTS` keep-alive HTTP clients against a private PostgreSQL,
/// side by side in one run on one server and one service process, rounds
/// alternating: untraced (`pg_stat_statements.track = none`),
/// pg_stat_statements alone (`track = all`, the private server's setting),
/// and the agent's database profile attached (`--pid`, track = all). The
/// service is warmed before the first round, so every statement is
/// prepared before the agent attaches, as on a service that has been
/// running: the rounds measure the text recovery too. Besides the ratios,
/// each profiled round reports dropped writes, executions without text and
/// the agent's own CPU (user + system time of its process per second of the
/// round).
fn database() -> Result<(), String> {
    use std::io::{BufRead, BufReader, Write};
    let rounds = env_or("BENCH_ROUNDS", 3) as usize;
    let seconds = env_or("BENCH_SECONDS", 8);
    let clients = env_or("BENCH_CLIENTS", 12) as usize;
    let root = workspace_root();
    let agent = release_agent()?;
    run_checked(
        cargo().current_dir(&root).args(["build", "--release", "--manifest-path", "examples/demo-service/Cargo.toml"]).env_remove("RUSTFLAGS"),
        "building the demo service (release)",
    )?;
    let demo_bin = root.join("examples/demo-service/target/release/demo-service");
    run_checked(cargo().current_dir(&root).args(["build", "-p", "perf-audit-tests", "--example", "private_postgres"]), "building the private PostgreSQL helper")?;
    let helper = root.join("target/debug/examples/private_postgres");

    let mut pg = Command::new(&helper).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| format!("{}: {e}", helper.display()))?;
    let mut pg_in = pg.stdin.take().expect("piped");
    let mut pg_out = BufReader::new(pg.stdout.take().expect("piped"));
    let mut line = String::new();
    pg_out.read_line(&mut line).map_err(|e| e.to_string())?;
    let url = line.trim().strip_prefix("url ").ok_or_else(|| format!("private PostgreSQL did not start: {line:?}"))?.to_string();
    let mut sql = move |q: &str| -> Result<String, String> {
        writeln!(pg_in, "{q}").map_err(|e| e.to_string())?;
        let mut answer = String::new();
        pg_out.read_line(&mut answer).map_err(|e| e.to_string())?;
        answer.trim().strip_prefix("ok").map(|s| s.trim().to_string()).ok_or_else(|| format!("{q}: {answer}"))
    };
    let mut demo = Command::new(&demo_bin)
        .args(["--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", demo_bin.display()))?;
    let mut demo_line = String::new();
    BufReader::new(demo.stdout.take().expect("piped")).read_line(&mut demo_line).map_err(|e| e.to_string())?;
    let addr = demo_line.trim().strip_prefix("listening on http://").ok_or_else(|| format!("the demo said {demo_line:?}"))?.to_string();
    let demo_pid = demo.id();

    let result = (|| -> Result<(), String> {
        eprintln!("xtask: database: warming the service for 5 s");
        feed_load(&addr, clients, 5)?;
        // The floor of any eBPF tool that reads these syscalls on a kernel
        // without kprobes or fentry: bpftrace on the same syscall
        // tracepoints as the wire tracer, counting the target's calls and
        // nothing else (enabling a syscall tracepoint sends every
        // syscall of every task through the kernel's tracing path).
        let bpftrace = Command::new("bpftrace").arg("--version").output().is_ok_and(|o| o.status.success());
        let names: Vec<&str> = ["untraced", "pg_stat_statements alone", "perf-audit-agent database"]
            .into_iter()
            .chain(bpftrace.then_some("bpftrace, same tracepoints"))
            .collect();
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let mut profiled: Vec<serde_json::Value> = Vec::new();
        let scratch = tempfile_dir()?;
        eprintln!("xtask: database: {rounds} rounds x {} modes x {seconds} s, {clients} clients on /feed (31 queries per request)", names.len());
        for round in 0..rounds {
            for k in 0..names.len() {
                let mode = (round + k) % names.len();
                let track = if mode == 0 { "none" } else { "all" };
                sql(&format!("ALTER SYSTEM SET pg_stat_statements.track = '{track}'"))?;
                sql("SELECT pg_reload_conf()")?;
                std::thread::sleep(std::time::Duration::from_millis(300));
                let mut agent_run = None;
                let mut floor_run = None;
                if mode == 3 {
                    let probes: Vec<String> =
                        perf_audit_common::names::DB_TRACEPOINTS.iter().map(|(_, tracepoint)| format!("tracepoint:syscalls:{tracepoint}")).collect();
                    let program = format!("{} /pid == {demo_pid}/ {{ @calls = count(); }}", probes.join(","));
                    let mut child = Command::new("bpftrace")
                        .args(["-e", &program])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| format!("bpftrace: {e}"))?;
                    let mut out = BufReader::new(child.stdout.take().expect("piped"));
                    let mut l = String::new();
                    while !l.contains("Attaching") {
                        l.clear();
                        if out.read_line(&mut l).unwrap_or(0) == 0 {
                            return Err("bpftrace did not attach".into());
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    floor_run = Some((child, out));
                }
                if mode == 2 {
                    let out = scratch.join("database-agent");
                    let _ = std::fs::remove_dir_all(&out);
                    let mut child = Command::new(&agent)
                        .args(["--quiet", "--out"])
                        .arg(&out)
                        .args(["--pid", &demo_pid.to_string(), "database", "--duration", "10m"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .map_err(|e| format!("{}: {e}", agent.display()))?;
                    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
                    let mut seen = String::new();
                    loop {
                        let mut l = String::new();
                        if stderr.read_line(&mut l).unwrap_or(0) == 0 {
                            return Err(format!("the agent did not start:\n{seen}"));
                        }
                        seen.push_str(&l);
                        if l.contains("auditing") {
                            break;
                        }
                    }
                    // Keep reading its stderr so it never blocks on a full pipe.
                    let drain = std::thread::spawn(move || {
                        let mut rest = String::new();
                        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
                        rest
                    });
                    agent_run = Some((child, out, drain));
                }
                let agent_cpu_before = agent_run.as_ref().map(|(c, ..)| cpu_seconds(c.id())).unwrap_or(0.0);
                let rate = feed_load(&addr, clients, seconds)?;
                let qps = rate * 31.0;
                eprintln!("  round {}: {:<28} {qps:>10.0} queries/s ({rate:.1} requests/s)", round + 1, names[mode]);
                rates[mode].push(qps);
                if let Some((child, mut out)) = floor_run {
                    // SAFETY: plain kill(2) on our own child.
                    unsafe { libc_kill(child.id() as i32, 2) };
                    let mut printed = String::new();
                    let _ = std::io::Read::read_to_string(&mut out, &mut printed);
                    let _ = child.wait_with_output();
                    eprintln!("           bpftrace: {}", printed.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                if let Some((child, out, drain)) = agent_run {
                    let agent_cpu = (cpu_seconds(child.id()) - agent_cpu_before) / seconds as f64;
                    // SAFETY: plain kill(2) on our own child.
                    unsafe { libc_kill(child.id() as i32, 2) };
                    let status = child.wait_with_output().map_err(|e| e.to_string())?.status;
                    let log = drain.join().unwrap_or_default();
                    if !status.success() {
                        return Err(format!("the agent failed ({status}):\n{log}"));
                    }
                    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).map_err(|e| format!("report.json: {e}"))?)
                        .map_err(|e| e.to_string())?;
                    let w = &report["database"]["wire"];
                    let n = |k: &str| w[k].as_u64().unwrap_or(0) as f64;
                    let row = serde_json::json!({
                        "round": round + 1,
                        "queries_per_s": qps,
                        "writes": n("writes"),
                        "dropped_writes_pct": 100.0 * n("dropped_writes") / n("writes").max(1.0),
                        "executions": n("executions"),
                        "executions_without_text_pct": 100.0 * n("executions_without_text") / n("executions").max(1.0),
                        "executions_text_from_activity": n("executions_text_from_activity"),
                        "activity_polls": n("activity_polls"),
                        "agent_cpu_per_s": agent_cpu,
                        "n_plus_one_found": report["database"]["n_plus_one"].as_array().is_some_and(|a| !a.is_empty()),
                    });
                    eprintln!("           {row}");
                    profiled.push(row);
                }
            }
        }
        let baseline = median(&mut rates[0].clone());
        println!("\ndatabase: demo /feed, {clients} closed-loop clients, median of {rounds} rounds of {seconds} s, ratio to untraced");
        println!("{:<28} {:>12} {:>8}", "mode", "queries/s", "ratio");
        let mut rows = Vec::new();
        for (mode, name) in names.iter().enumerate() {
            let m = median(&mut rates[mode].clone());
            println!("{:<28} {:>12.0} {:>8.4}", name, m, m / baseline);
            rows.push(serde_json::json!({"mode": name, "median_queries_per_s": m, "ratio": m / baseline, "queries_per_s": rates[mode]}));
        }
        let pick = |k: &str| -> Vec<f64> { profiled.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect() };
        println!(
            "database profile: dropped writes {:.2}% (median), executions without text {:.2}% (median), agent CPU {:.1}% of a core (median)",
            median(&mut pick("dropped_writes_pct")),
            median(&mut pick("executions_without_text_pct")),
            100.0 * median(&mut pick("agent_cpu_per_s"))
        );
        let ratio = median(&mut rates[2].clone()) / baseline;
        println!("goal: >= 10,000 queries/s untraced ({}), database profile ratio >= 0.95 -> {}", if baseline >= 10_000.0 { "met" } else { "NOT met" }, if ratio >= 0.95 { "met" } else { "NOT met" });
        write_result("database", &serde_json::json!({"rounds": rounds, "seconds": seconds, "clients": clients, "results": rows, "profiled_rounds": profiled}))
    })();
    let _ = demo.kill();
    let _ = demo.wait();
    drop(sql);
    let _ = pg.wait();
    result
}

/// User + system CPU seconds of a process (0 for pid 0 or a gone process).
fn cpu_seconds(pid: u32) -> f64 {
    if pid == 0 {
        return 0.0;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime: fields 14 and 15 of stat(5), 11 and 12 after the name.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// `clients` keep-alive HTTP/1.1 clients sending `GET /feed` one after the
/// other for `seconds`; returns the completed requests per second.
fn feed_load(addr: &str, clients: usize, seconds: u64) -> Result<f64, String> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || -> Result<u64, String> {
                let mut s = std::net::TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_nodelay(true).ok();
                let mut done = 0;
                let mut buf = Vec::with_capacity(64 * 1024);
                let mut chunk = [0u8; 16 * 1024];
                while std::time::Instant::now() < deadline {
                    s.write_all(b"GET /feed HTTP/1.1\r\nHost: bench\r\n\r\n").map_err(|e| e.to_string())?;
                    buf.clear();
                    // Headers, then Content-Length bytes of body.
                    let (head_end, length) = loop {
                        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
                        if n == 0 {
                            return Err("the demo closed the connection".into());
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            if !head.starts_with("http/1.1 200") {
                                return Err(format!("the demo answered {}", head.lines().next().unwrap_or("")));
                            }
                            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()).ok_or("no content-length")?;
                            break (end + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
                        if n == 0 {
                            return Err("the demo closed the connection".into());
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "a load client panicked".to_string())??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
