//! `perf-audit-agent daemon` against real processes with real eBPF (root).

use std::{
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use perf_audit_agent::daemon::pprof::proto;
use perf_audit_tests::*;
use prost::Message as _;

fn decode_pprof(gz: &[u8]) -> proto::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).expect("the profile is gzip");
    proto::Profile::decode(&raw[..]).expect("the profile decodes as profile.proto")
}

/// Samples per function name whose location lines name it (any depth).
fn samples_through(p: &proto::Profile, function: &str) -> i64 {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let hits: std::collections::HashSet<u64> = p
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| s(p.function[line.function_id as usize - 1].name) == function))
        .map(|l| l.id)
        .collect();
    p.sample.iter().filter(|x| x.location_id.iter().any(|id| hits.contains(id))).map(|x| x.value[0]).sum()
}

#[test]
fn system_wide_daemon_serves_a_pprof_profile_naming_the_hot_function() {
    let bin = fixture("cpu-burner", Build::ReleaseFramePointers);
    let target = Running::spawn(&bin, &["--seconds", "60"]);
    let daemon = Daemon::start(&[]);
    let (status, body) = daemon.get(&format!("/debug/pprof/profile?pid={}&seconds=3", target.pid()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let p = decode_pprof(&body);
    let s = |i: i64| p.string_table[i as usize].clone();
    let types: Vec<(String, String)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
    assert_eq!(types, vec![("samples".into(), "count".into()), ("cpu".into(), "nanoseconds".into())]);
    assert_eq!(p.period, 1_000_000_000 / 19);
    let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
    // One busy thread at 19 Hz for 3 s: ~57 samples.
    assert!((30..=80).contains(&total), "samples: {total}");
    for x in &p.sample {
        assert_eq!(x.value[1], x.value[0] * p.period);
    }
    let hot = samples_through(&p, "cpu_burner::hot_spin");
    assert!(hot * 10 >= total * 6, "hot_spin in {hot} of {total} samples");
    assert!(samples_through(&p, "cpu_burner::main") * 10 >= total * 9, "stacks reach main");
    // The hot function has its file and line.
    let f = p.function.iter().find(|f| s(f.name) == "cpu_burner::hot_spin").unwrap();
    assert!(s(f.filename).ends_with("cpu-burner/src/main.rs"), "{}", s(f.filename));
    let line = p
        .location
        .iter()
        .flat_map(|l| &l.line)
        .find(|l| l.function_id == f.id)
        .map(|l| l.line)
        .unwrap();
    assert!((17..=25).contains(&line), "hot_spin's body is at lines 17-25, got {line}");
    // Locations point into the fixture's mapping.
    assert!(p.mapping.iter().any(|m| s(m.filename).ends_with("/cpu-burner")), "mappings name the binary");

    // Bad requests are one-line 4xx answers.
    let (status, body) = daemon.get("/debug/pprof/profile?seconds=1");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("missing pid"));
    let (status, _) = daemon.get("/debug/pprof/profile?pid=3999999&seconds=1");
    assert_eq!(status, 404);
}

#[test]
fn metrics_parse_and_carry_per_process_cpu_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = uniquely_named_copy(&fixture("cpu-burner", Build::ReleaseFramePointers), tmp.path(), "metrics");
    let name = bin.file_name().unwrap().to_str().unwrap().to_string();
    let target = Running::spawn(&bin, &["--seconds", "60"]);
    let pid = target.pid().to_string();
    let daemon = Daemon::start(&["--process", &name, "--window", "2s"]);
    std::thread::sleep(Duration::from_secs(5));
    let m = daemon.metrics();
    let cpu = metric(&m, "perf_audit_process_cpu_seconds_total", &[("pid", &pid), ("process", &name)])
        .unwrap_or_else(|| panic!("no series for pid {pid}: {m:?}"));
    // One busy thread, watched for ~4 s (drained every 2 s).
    assert!((1.5..=6.0).contains(&cpu), "cpu seconds {cpu}");
    // Only the filtered process is watched.
    assert_eq!(m.iter().filter(|x| x.name == "perf_audit_process_cpu_seconds_total").count(), 1, "{m:?}");
    assert!(metric(&m, "perf_audit_agent_cpu_seconds_total", &[]).unwrap() > 0.0);
    let rss = metric(&m, "perf_audit_agent_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 1e6 && rss < 256e6, "rss {rss}");
    assert!(metric(&m, "perf_audit_samples_total", &[]).unwrap() >= 40.0);
    assert_eq!(metric(&m, "perf_audit_samples_dropped_total", &[("reason", "kernel_map_full")]), Some(0.0));
    assert_eq!(metric(&m, "perf_audit_samples_dropped_total", &[("reason", "agent_limit")]), Some(0.0));
    let fill = metric(&m, "perf_audit_map_fill_ratio", &[("map", "cpu_stack_counts")]).unwrap();
    assert!((0.0..0.5).contains(&fill), "{fill}");
    assert!(metric(&m, "perf_audit_windows_total", &[]).unwrap() >= 2.0);
    // Host process: empty container labels, present.
    let series = m.iter().find(|x| x.name == "perf_audit_process_cpu_seconds_total").unwrap();
    assert!(series.labels.contains_key("container_id") && series.labels.contains_key("pod_uid"));
}

#[test]
fn sigterm_flushes_the_last_window_and_leaves_no_bpf_program_behind() {
    let bin = fixture("cpu-burner", Build::ReleaseFramePointers);
    let target = Running::spawn(&bin, &["--seconds", "60"]);
    let tmp = tempfile::tempdir().unwrap();
    let pid = target.pid().to_string();
    let mut daemon = Daemon::start(&["--pid", &pid, "--window", "10m", "--folded-dir", tmp.path().to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(3));
    let ids: Vec<u32> = daemon
        .metrics()
        .iter()
        .filter(|m| m.name == "perf_audit_bpf_program_info")
        .map(|m| m.labels["id"].parse().unwrap())
        .collect();
    assert!(!ids.is_empty());
    let loaded = || -> Vec<u32> { aya::programs::loaded_programs().filter_map(|p| p.ok()).map(|p| p.id()).collect() };
    assert!(ids.iter().all(|id| loaded().contains(id)), "the daemon's programs are loaded");

    assert_eq!(daemon.terminate(), 0, "{}", daemon.stderr());
    // The 10-minute window was cut short and written.
    let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    let mine = files
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("cpu-burner-{pid}-")))
        .unwrap_or_else(|| panic!("no folded file for {pid}: {files:?}\n{}", daemon.stderr()));
    let folded = std::fs::read_to_string(mine).unwrap();
    let samples: u64 = folded.lines().map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum();
    assert!(samples >= 30, "{samples} samples in the last window");
    assert!(folded.contains("cpu_burner::main;cpu_burner::run_workers;cpu_burner::work_unit;cpu_burner::hot_spin"), "{folded}");
    assert!(ids.iter().all(|id| !loaded().contains(id)), "programs {ids:?} outlived the daemon");

    // A daemon killed outright leaves nothing either (fd-owned, unpinned).
    let mut daemon = Daemon::start(&["--pid", &pid]);
    let ids: Vec<u32> = daemon
        .metrics()
        .iter()
        .filter(|m| m.name == "perf_audit_bpf_program_info")
        .map(|m| m.labels["id"].parse().unwrap())
        .collect();
    daemon.signal(libc::SIGKILL);
    let start = Instant::now();
    while ids.iter().any(|id| loaded().contains(id)) {
        assert!(start.elapsed() < Duration::from_secs(5), "programs {ids:?} outlived a killed daemon");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn push_sends_every_window_to_a_pyroscope_ingest_endpoint() {
    // A minimal ingest server: records each request line and body, answers 200.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            let (head, body) = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let n = stream.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    break (head, String::from_utf8_lossy(&buf[end + 4..]).into_owned());
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send((head.lines().next().unwrap_or_default().to_string(), body));
        }
    });

    let bin = fixture("cpu-burner", Build::ReleaseFramePointers);
    let target = Running::spawn(&bin, &["--seconds", "60"]);
    let pid = target.pid().to_string();
    // The in-kernel frame-pointer walk (the fixture keeps frame pointers).
    let daemon = Daemon::start(&[
        "--pid",
        &pid,
        "--window",
        "2s",
        "--push",
        &format!("http://127.0.0.1:{port}"),
        "--frame-pointers-only",
    ]);
    let (line, body) = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no push:\n{}", daemon.stderr()));
    assert!(line.starts_with(&format!("POST /ingest?name=cpu-burner.cpu%7Bpid%3D{pid}%7D&from=")), "{line}");
    assert!(line.contains("&format=folded") && line.contains("sampleRate=19"), "{line}");
    let from: u64 = line.split("from=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    let until: u64 = line.split("until=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    assert!(until > from && until - from <= 4, "{from}..{until}");
    assert!(body.contains("cpu_burner::work_unit;cpu_burner::hot_spin "), "{body}");
    let (line2, _) = rx.recv_timeout(Duration::from_secs(20)).expect("a second window is pushed too");
    assert_ne!(line, line2);
    let m = daemon.metrics();
    assert!(metric(&m, "perf_audit_push_total", &[("result", "ok")]).unwrap() >= 1.0);
    assert_eq!(metric(&m, "perf_audit_unwind_info", &[("mode", "frame_pointer")]), Some(1.0));
}

#[test]
fn churn_keeps_memory_bounded_and_loses_no_live_process() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = uniquely_named_copy(&fixture("cpu-burner", Build::ReleaseFramePointers), tmp.path(), "churn");
    let name = bin.file_name().unwrap().to_str().unwrap().to_string();
    let long_lived = Running::spawn(&bin, &["--seconds", "120"]);
    let daemon = Daemon::start(&["--process", &name, "--window", "2s"]);
    let cpu_at_start = proc_cpu_seconds(long_lived.pid());

    // 40 short-lived processes of the same name, two or three alive at a time.
    let mut rss = Vec::new();
    let mut children = Vec::new();
    let mut started = Vec::new();
    for i in 0..40 {
        let child = std::process::Command::new(&bin)
            .args(["--seconds", "1.2"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        started.push(child.id());
        children.push(child);
        std::thread::sleep(Duration::from_millis(500));
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        if i % 4 == 0 {
            rss.push(rss_bytes(daemon.pid()));
        }
    }
    for mut c in children {
        let _ = c.wait();
    }
    // Two more windows: every exited process is evicted.
    std::thread::sleep(Duration::from_secs(5));
    rss.push(rss_bytes(daemon.pid()));
    let m = daemon.metrics();
    let real_cpu = proc_cpu_seconds(long_lived.pid()) - cpu_at_start;
    let series: Vec<&Metric> = m.iter().filter(|x| x.name == "perf_audit_process_cpu_seconds_total").collect();
    let long_pid = long_lived.pid().to_string();
    assert!(series.iter().any(|s| s.labels["pid"] == long_pid), "the live process is kept: {series:?}");
    assert!(series.len() <= 2, "exited processes are evicted: {series:?}");
    let evicted = metric(&m, "perf_audit_processes_evicted_total", &[]).unwrap();
    assert!(evicted >= 10.0, "churned processes were seen and evicted: {evicted}");
    // The long-lived one was sampled throughout: its estimated CPU time
    // matches what the kernel accounted to it (it shares 2 cores with the
    // churn, so it is not simply the wall time).
    let cpu = metric(&m, "perf_audit_process_cpu_seconds_total", &[("pid", &long_pid)]).unwrap();
    assert!(real_cpu > 5.0, "the long-lived process ran: {real_cpu}");
    assert!(cpu >= real_cpu * 0.7 && cpu <= real_cpu * 1.3 + 1.0, "estimated {cpu} s, kernel says {real_cpu} s");

    let max = *rss.iter().max().unwrap();
    let first = rss[0];
    assert!(max < 128 * 1024 * 1024, "rss {rss:?}");
    assert!(max - first < 16 * 1024 * 1024, "rss grows with churn: {rss:?}");

    // And its profile is still served.
    let (status, body) = daemon.get(&format!("/debug/pprof/profile?pid={long_pid}&seconds=2"));
    assert_eq!(status, 200);
    assert!(samples_through(&decode_pprof(&body), "cpu_burner::hot_spin") > 10);
    let _ = started;
}

/// utime + stime of a process, in seconds.
fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / hz
}

/// Function names of each sample's frames, leaf first (inlined frames of a
/// location innermost first, as profile.proto orders them), with its count.
fn sample_stacks(p: &proto::Profile) -> Vec<(Vec<String>, i64)> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let by_id: std::collections::HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    p.sample
        .iter()
        .map(|x| {
            let names = x
                .location_id
                .iter()
                .flat_map(|id| by_id[id].line.iter().map(|line| s(p.function[line.function_id as usize - 1].name)))
                .collect();
            (names, x.value[0])
        })
        .collect()
}

/// (samples in `chain[0]`, of which carry the rest of `chain` above it, in order).
fn chain_coverage(p: &proto::Profile, chain: &[&str]) -> (i64, i64) {
    let (mut hot, mut whole) = (0, 0);
    for (names, count) in sample_stacks(p) {
        let Some(at) = names.iter().position(|n| n == chain[0]) else { continue };
        hot += count;
        let mut rest = chain[1..].iter().peekable();
        for n in &names[at + 1..] {
            if rest.peek().is_some_and(|c| *c == n) {
                rest.next();
            }
        }
        if rest.peek().is_none() {
            whole += count;
        }
    }
    (hot, whole)
}

const HOT_CHAIN: [&str; 4] = ["cpu_burner::hot_spin", "cpu_burner::work_unit", "cpu_burner::run_workers", "cpu_burner::main"];

#[test]
fn system_wide_daemon_gives_whole_stacks_with_and_without_frame_pointers() {
    // Rust's default release profile (no frame pointers) and a frame-pointer
    // build, on the node at once; the daemon watches every process.
    let plain = Running::spawn(&fixture("cpu-burner", Build::Release), &["--seconds", "60"]);
    let fp = Running::spawn(&fixture("cpu-burner", Build::ReleaseFramePointers), &["--seconds", "60"]);
    let daemon = Daemon::start(&[]);
    let fetch = |pid: u32| {
        let addr = daemon.addr.clone();
        std::thread::spawn(move || http_get(&addr, &format!("/debug/pprof/profile?pid={pid}&seconds=6")))
    };
    let (a, b) = (fetch(plain.pid()), fetch(fp.pid()));
    for (build, (status, body)) in [("default release", a.join().unwrap()), ("frame pointers", b.join().unwrap())] {
        assert_eq!(status, 200, "{build}: {}", String::from_utf8_lossy(&body));
        let p = decode_pprof(&body);
        let (hot, whole) = chain_coverage(&p, &HOT_CHAIN);
        let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
        let depth = sample_stacks(&p).iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        eprintln!("{build}: {whole} of {hot} hot_spin samples carry hot_spin <- work_unit <- run_workers <- main ({total} samples, max depth {depth})");
        // Two busy threads on 2 CPUs at 19 Hz for 6 s: up to ~228 samples,
        // far fewer on a loaded machine (the threads get less CPU).
        assert!(hot >= 10, "{build}: hot_spin in {hot} of {total} samples\n{}", daemon.stderr());
        assert!(whole * 100 >= hot * 95, "{build}: only {whole} of {hot} hot_spin samples reach main: {:?}", sample_stacks(&p));
    }
    let m = daemon.metrics();
    assert_eq!(metric(&m, "perf_audit_unwind_info", &[("mode", "eh_frame")]), Some(1.0));
    let complete = metric(&m, "perf_audit_unwind_samples_total", &[("result", "complete")]).unwrap();
    assert!(complete >= 40.0, "{complete}");
    assert_eq!(metric(&m, "perf_audit_samples_dropped_total", &[("reason", "ring_full")]), Some(0.0));
    // Both fixtures map the same libc: its tables are cached once (the gauge
    // counts distinct objects, not processes x objects).
    let objects = metric(&m, "perf_audit_unwind_table_objects", &[]).unwrap();
    let processes = metric(&m, "perf_audit_unwind_processes", &[]).unwrap();
    assert!(processes >= 2.0 && objects >= 2.0, "{processes} processes, {objects} objects");
    for pid in [plain.pid(), fp.pid()] {
        let pid = pid.to_string();
        assert!(metric(&m, "perf_audit_process_truncated_stacks_total", &[("pid", &pid)]).is_some(), "{pid}");
    }
}

/// Runs a consumer tool; its stdout, or a panic naming `cargo xtask setup`
/// when the tool is not installed.
fn consumer(program: &str, args: &[&str], home: &std::path::Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .env("HOME", home)
        .env("PPROF_TMPDIR", home)
        .env("GOCACHE", home.join("go-cache"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (installed by `cargo xtask setup`)"));
    assert!(out.status.success(), "{program} {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn go_tool_pprof_reads_the_profile_and_shows_the_caller_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let target = Running::spawn(&fixture("cpu-burner", Build::Release), &["--seconds", "60"]);
    let daemon = Daemon::start(&[]);
    let (status, body) = daemon.get(&format!("/debug/pprof/profile?pid={}&seconds=5", target.pid()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let path = tmp.path().join("cpu.pb.gz");
    std::fs::write(&path, &body).unwrap();
    let path = path.to_str().unwrap();

    // -top: main is not flat = cum any more (depth-1 stacks made every
    // function its own root): its cumulative share holds nearly everything.
    let top = consumer("go", &["tool", "pprof", "-top", "-sample_index=samples", path], tmp.path());
    let cum_percent = |function: &str| -> f64 {
        let line = top.lines().find(|l| l.trim_end().ends_with(function)).unwrap_or_else(|| panic!("{function} not in:\n{top}"));
        // flat flat% sum% cum cum% name
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields[4].trim_end_matches('%').parse().unwrap_or_else(|_| panic!("{line}"))
    };
    assert!(cum_percent("cpu_burner::main") >= 90.0, "{top}");
    assert!(cum_percent("cpu_burner::run_workers") >= 90.0, "{top}");
    assert!(cum_percent("cpu_burner::hot_spin") >= 50.0, "{top}");

    // -traces: the hot function's samples come through its caller chain.
    let traces = consumer("go", &["tool", "pprof", "-traces", "-sample_index=samples", path], tmp.path());
    let blocks: Vec<&str> = traces.split("-----------+").collect();
    let whole = blocks.iter().any(|block| {
        let names: Vec<&str> = block.lines().filter_map(|l| l.split_whitespace().last()).collect();
        let mut chain = HOT_CHAIN.iter().peekable();
        for n in names {
            if chain.peek().is_some_and(|c| **c == n) {
                chain.next();
            }
        }
        chain.peek().is_none()
    });
    assert!(whole, "no trace carries hot_spin <- work_unit <- run_workers <- main:\n{traces}");
}

#[test]
fn a_prometheus_server_scrapes_metrics_and_answers_a_promql_query() {
    let tmp = tempfile::tempdir().unwrap();
    let target = Running::spawn(&fixture("cpu-burner", Build::Release), &["--seconds", "90"]);
    let pid = target.pid().to_string();
    let daemon = Daemon::start(&["--pid", &pid, "--window", "2s"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: perf-audit\n    static_configs:\n      - targets: ['{}']\n",
            daemon.addr
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tmp.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (installed by `cargo xtask setup`)");
    let server = format!("127.0.0.1:{port}");
    let encode = |q: &str| -> String {
        q.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"_-.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    };
    let query = |q: &str| -> Option<Vec<serde_json::Value>> {
        let (status, body) = http_get(&server, &format!("/api/v1/query?query={}", encode(q)));
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    // The per-process CPU series, and its rate (CPU cores used) once a few
    // scrapes are stored: the daemon updates the counter every drain (2 s
    // here) and Prometheus scrapes every second, so the first two scrapes
    // can hold the same value (a rate of 0); wait for 5 s of them.
    let promql = format!("rate(perf_audit_process_cpu_seconds_total{{job=\"perf-audit\",pid=\"{pid}\"}}[10s])");
    let scrapes = format!("count_over_time(perf_audit_process_cpu_seconds_total{{job=\"perf-audit\",pid=\"{pid}\"}}[10s])");
    let enough = |r: &Vec<serde_json::Value>| {
        r.first().and_then(|x| x["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok()).is_some_and(|n| n >= 5.0)
    };
    let start = Instant::now();
    let result = loop {
        let up = std::net::TcpStream::connect(&server).is_ok();
        let stored = up && query(&scrapes).is_some_and(|r| enough(&r));
        let found = if stored { query(&promql).filter(|r| !r.is_empty()) } else { None };
        if let Some(r) = found {
            break r;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = prometheus.kill();
            panic!("prometheus never answered {promql}\n{}", daemon.stderr());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(result.len(), 1, "{result:?}");
    let metric = &result[0]["metric"];
    assert_eq!(metric["pid"], pid.as_str());
    assert_eq!(metric["process"], "cpu-burner");
    let cores: f64 = result[0]["value"][1].as_str().unwrap().parse().unwrap();
    // One busy thread on a shared 2-core machine.
    assert!(cores > 0.05 && cores <= 1.5, "rate {cores}");
}

/// Starts tests/otlp/receiver.py (the official OpenTelemetry classes from
/// PyPI, in the venv `cargo xtask setup` makes) on `port`, writing one JSON
/// line per request into `out`.
struct OtlpReceiver {
    child: std::process::Child,
}

impl OtlpReceiver {
    fn start(port: u16, out: &std::path::Path) -> OtlpReceiver {
        let python = workspace_root().join("tests/otlp/.venv/bin/python");
        let mut child = std::process::Command::new(&python)
            .arg(workspace_root().join("tests/otlp/receiver.py"))
            .args(["--port", &port.to_string(), "--out", out.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (the venv is made by `cargo xtask setup`)", python.display()));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "listening", "the receiver did not start");
        OtlpReceiver { child }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the receiver has written a request whose resources include
/// every pid in `pids` (with samples), and returns those resources.
fn otlp_resources(out: &std::path::Path, pids: &[u32], daemon: &Daemon) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let mut found = Vec::new();
        for line in text.lines() {
            let request: serde_json::Value = serde_json::from_str(line).expect("the receiver writes JSON lines");
            assert_eq!(request["zero_values_first"], serde_json::json!([true, true, true, true, true, true]), "{line}");
            for r in request["resources"].as_array().unwrap() {
                let pid = r["attributes"]["process.pid"].as_u64();
                if pid.is_some_and(|p| pids.contains(&(p as u32))) {
                    found.push(r.clone());
                }
            }
        }
        let mut seen: Vec<u64> = found.iter().map(|r| r["attributes"]["process.pid"].as_u64().unwrap()).collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() == pids.len() && found.len() >= 2 * pids.len() {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no OTLP request for {pids:?} in 30 s: {} requests\n{}",
            text.lines().count(),
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The OTLP profile of one sample type in a resource.
fn otlp_profile<'a>(resource: &'a serde_json::Value, sample_type: &str) -> Option<&'a serde_json::Value> {
    resource["profiles"].as_array().unwrap().iter().find(|p| p["sample_type"][0] == sample_type)
}

/// (value in samples through `chain[0]`, of which with the rest of `chain`
/// above it in order), over OTLP samples (frames leaf first).
fn otlp_chain_coverage(profiles: &[&serde_json::Value], chain: &[&str]) -> (i64, i64) {
    let (mut hot, mut whole) = (0, 0);
    for p in profiles {
        for x in p["samples"].as_array().unwrap() {
            let names: Vec<&str> =
                x["frames"].as_array().unwrap().iter().flat_map(|l| l.as_array().unwrap()).map(|n| n.as_str().unwrap()).collect();
            let value: i64 = x["values"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum();
            let Some(at) = names.iter().position(|n| *n == chain[0]) else { continue };
            hot += value;
            let mut rest = chain[1..].iter().peekable();
            for n in &names[at + 1..] {
                if rest.peek().is_some_and(|c| *c == n) {
                    rest.next();
                }
            }
            if rest.peek().is_none() {
                whole += value;
            }
        }
    }
    (hot, whole)
}

#[test]
fn otlp_requests_decode_with_the_official_opentelemetry_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("requests.jsonl");
    // A default release build (no frame pointers): whole stacks come from
    // the stack copies.
    let bin = fixture("cpu-burner", Build::Release);
    let target = Running::spawn(&bin, &["--seconds", "90"]);
    let pid = target.pid();
    // Nothing listens on the endpoint at first: exports fail, are counted
    // and said in one line, and sampling goes on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let daemon = Daemon::start(&["--pid", &pid.to_string(), "--window", "2s", "--otlp", &endpoint]);
    let start = Instant::now();
    while metric(&daemon.metrics(), "perf_audit_otlp_exports_total", &[("result", "failed")]).unwrap_or(0.0) < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no failed export counted:\n{}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let failure = daemon.stderr().lines().find(|l| l.contains("OTLP export to")).map(str::to_string).unwrap();
    assert!(failure.contains(&endpoint) && failure.contains("failed") && failure.contains("--otlp"), "{failure}");
    assert!(metric(&daemon.metrics(), "perf_audit_samples_collected_total", &[]).unwrap() > 0.0, "sampling goes on");

    // The collector comes up: the next windows arrive and decode.
    let _receiver = OtlpReceiver::start(port, &out);
    let resources = otlp_resources(&out, &[pid], &daemon);
    let attrs = &resources[0]["attributes"];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(attrs["host.name"], host.trim());
    assert_eq!(attrs["process.pid"], serde_json::json!(pid), "an int value");
    assert_eq!(attrs["process.executable.name"], "cpu-burner");
    assert_eq!(attrs["process.executable.path"], bin.to_str().unwrap());
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let info = perf_audit_agent::daemon::cgroup::parse_proc_cgroup(&cgroup);
    assert_eq!(attrs["container.id"].as_str(), info.container_id.as_deref(), "{attrs}");
    assert_eq!(attrs["k8s.pod.uid"].as_str(), info.pod_uid.as_deref(), "{attrs}");

    let cpu: Vec<&serde_json::Value> = resources.iter().filter_map(|r| otlp_profile(r, "cpu")).collect();
    assert!(resources.iter().all(|r| otlp_profile(r, "off_cpu").is_none()), "no off-CPU profile without --off-cpu");
    for p in &cpu {
        assert_eq!(p["sample_type"], serde_json::json!(["cpu", "nanoseconds"]));
        assert_eq!(p["period_type"], serde_json::json!(["cpu", "nanoseconds"]));
        assert_eq!(p["period"], serde_json::json!(1_000_000_000i64 / 19));
        assert_eq!(p["scope"], "perf-audit");
    }
    let (hot, whole) = otlp_chain_coverage(&cpu, &HOT_CHAIN);
    let period = 1_000_000_000 / 19;
    eprintln!("OTLP: {} of {} hot_spin samples carry the chain up to main", whole / period, hot / period);
    assert!(hot / period >= 10, "hot_spin in {} samples", hot / period);
    assert!(whole * 100 >= hot * 95, "only {whole} of {hot} ns of hot_spin reach main");
    // Locations point into the fixture's mapping; threads are named.
    let sample = cpu.iter().flat_map(|p| p["samples"].as_array().unwrap()).next().unwrap();
    assert!(sample["files"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().ends_with("/cpu-burner")), "{sample}");
    assert_eq!(sample["thread"], "cpu-burner");
    assert!(metric(&daemon.metrics(), "perf_audit_otlp_exports_total", &[("result", "ok")]).unwrap() >= 1.0);
}

#[test]
fn off_cpu_time_names_the_blocking_call_in_pprof_and_otlp() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("requests.jsonl");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _receiver = OtlpReceiver::start(port, &out);
    // `--rate 40` paces the burner: it works ~1 ms per unit and sleeps the
    // rest of each 25 ms in `std::thread::sleep`, called by `run_workers`.
    let sleeper = Running::spawn(&fixture("cpu-burner", Build::Release), &["--seconds", "90", "--rate", "40"]);
    let pid = sleeper.pid().to_string();
    let daemon = Daemon::start(&[
        "--pid",
        &pid,
        "--window",
        "2s",
        "--off-cpu",
        "--otlp",
        &format!("http://127.0.0.1:{port}"),
    ]);
    // (The start-up line is logged just after the address is handed over.)
    let start = Instant::now();
    while !daemon.stderr().contains("off-CPU blocks >= 1ms") {
        assert!(start.elapsed() < Duration::from_secs(2), "{}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }

    // pprof: a third sample type; the blocked time sits under the sleep,
    // called from run_workers, and none under the hot function.
    let (status, body) = daemon.get(&format!("/debug/pprof/profile?pid={pid}&seconds=4"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let p = decode_pprof(&body);
    let s = |i: i64| p.string_table[i as usize].clone();
    let types: Vec<(String, String)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
    assert_eq!(types[2], ("off_cpu".to_string(), "nanoseconds".to_string()), "{types:?}");
    let mut through_run_workers = 0i64;
    let mut under_sleep = 0i64;
    let mut total = 0i64;
    for (x, (names, _)) in p.sample.iter().zip(sample_stacks(&p)) {
        let off = x.value[2];
        total += off;
        let at = names.iter().position(|n| n == "cpu_burner::run_workers");
        if let Some(at) = at {
            through_run_workers += off;
            if names[..at].iter().any(|n| n.contains("sleep")) && names[at + 1..].iter().any(|n| n == "cpu_burner::main") {
                under_sleep += off;
            }
        }
        if names.iter().any(|n| n == "cpu_burner::hot_spin") {
            assert_eq!(off, 0, "blocked time under the hot function: {names:?}");
        }
    }
    eprintln!("off-CPU: {:.2} s in 4 s, {:.2} s through run_workers, {:.2} s under sleep <- run_workers <- main", total as f64 / 1e9, through_run_workers as f64 / 1e9, under_sleep as f64 / 1e9);
    // The thread sleeps ~96% of 4 s; blocks past the per-CPU budget (19
    // stack copies per CPU per second, 40 sleeps a second here) are counted
    // without a stack, so at least ~19/40 of it has its stack.
    assert!(total >= 1_000_000_000, "{total} ns blocked in a 4 s capture");
    assert!(under_sleep * 10 >= total * 9, "{under_sleep} of {total} ns under sleep <- run_workers <- main");

    // OTLP: the off_cpu profile of the same process says the same.
    let resources = otlp_resources(&out, &[sleeper.pid()], &daemon);
    let off: Vec<&serde_json::Value> = resources.iter().filter_map(|r| otlp_profile(r, "off_cpu")).collect();
    assert!(!off.is_empty(), "no off_cpu profile in {} resources", resources.len());
    assert_eq!(off[0]["sample_type"], serde_json::json!(["off_cpu", "nanoseconds"]));
    let (run, whole) = otlp_chain_coverage(&off, &["cpu_burner::run_workers", "cpu_burner::main"]);
    assert!(run >= 500_000_000 && whole * 10 >= run * 9, "{whole} of {run} ns");

    let m = daemon.metrics();
    let recorded = metric(&m, "perf_audit_off_cpu_blocks_total", &[("result", "recorded")]).unwrap();
    assert!(recorded >= 20.0, "{recorded}");
    assert!(metric(&m, "perf_audit_process_off_cpu_seconds_total", &[("pid", &pid)]).unwrap() >= 1.0);
    assert_eq!(metric(&m, "perf_audit_off_cpu_blocks_total", &[("result", "ring_full")]), Some(0.0));
    assert_eq!(metric(&m, "perf_audit_samples_dropped_total", &[("reason", "ring_full")]), Some(0.0));
}
