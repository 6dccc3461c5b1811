//! `cargo xtask bench corpus`: the corpus of real services
//! (`tests/corpus/<service>/`) as the precision/recall benchmark.
//!
//! For each service and build kind (`shipped`: its own Cargo profile;
//! `line-tables`: CARGO_PROFILE_RELEASE_DEBUG=line-tables-only): build it
//! from its checkout, start a private PostgreSQL, apply its own migration
//! files and our seed, start its sidecars and the service, run the
//! scenario's setup steps, warm it up, attach the agent by pid with profile
//! `all` under the scenario's load, and score report.json against the
//! labels (score.rs). Prints precision and recall per service and per rule,
//! lists every false alarm, writes `target/bench/corpus.json`.

pub mod http;
pub mod score;
pub mod spec;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex, atomic::AtomicU64, atomic::Ordering},
    time::{Duration, Instant},
};

use score::{Found, Score, Tally};
use spec::{Labels, Scenario, Service};

use crate::{cargo, run_checked, workspace_root};

const USAGE: &str = "usage: cargo xtask bench corpus --checkouts DIR [--service NAME[,NAME]] [--builds shipped,line-tables] [--seconds 30] [--target-dir DIR]
       cargo xtask bench corpus --rescore [--service NAME] [--builds ...]   (the last audits against the labels as they are now)";

#[derive(Debug, PartialEq)]
pub struct Options {
    pub checkouts: PathBuf,
    pub services: Vec<String>,
    pub builds: Vec<Build>,
    pub seconds: u64,
    pub target_dir: Option<PathBuf>,
    /// Score the audits already in target/bench/corpus/ against the labels
    /// as they are now (after labelling unlabelled findings), run nothing.
    pub rescore: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Build {
    Shipped,
    LineTables,
}

impl Build {
    pub fn name(self) -> &'static str {
        match self {
            Build::Shipped => "shipped",
            Build::LineTables => "line-tables",
        }
    }
}

pub fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options { checkouts: PathBuf::new(), services: vec![], builds: vec![Build::Shipped, Build::LineTables], seconds: 30, target_dir: None, rescore: false };
    let mut checkouts = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--checkouts" => checkouts = Some(PathBuf::from(value("--checkouts")?)),
            "--service" => o.services.extend(value("--service")?.split(',').filter(|s| !s.is_empty()).map(String::from)),
            "--builds" => {
                o.builds = value("--builds")?
                    .split(',')
                    .map(|b| match b.trim() {
                        "shipped" => Ok(Build::Shipped),
                        "line-tables" => Ok(Build::LineTables),
                        other => Err(format!("--builds: unknown build `{other}` (known: shipped, line-tables)")),
                    })
                    .collect::<Result<_, _>>()?;
                if o.builds.is_empty() {
                    return Err(format!("--builds needs at least one of shipped, line-tables\n{USAGE}"));
                }
            }
            "--seconds" => o.seconds = value("--seconds")?.parse().map_err(|_| format!("--seconds takes a whole number of seconds\n{USAGE}"))?,
            "--target-dir" => o.target_dir = Some(PathBuf::from(value("--target-dir")?)),
            "--rescore" => o.rescore = true,
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if o.rescore {
        o.checkouts = checkouts.unwrap_or_default();
        return Ok(o);
    }
    o.checkouts = checkouts.ok_or_else(|| format!("--checkouts DIR is required: the directory holding the services' checkouts (tests/corpus/README.md says how to fetch them)\n{USAGE}"))?;
    Ok(o)
}

/// One corpus entry, read from tests/corpus/<name>/.
pub struct Entry {
    pub name: String,
    pub dir: PathBuf,
    pub service: Service,
    pub scenario: Scenario,
    pub labels: Labels,
}

pub fn load_entries(corpus: &Path, only: &[String]) -> Result<Vec<Entry>, String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus)
        .map_err(|e| format!("{}: {e}", corpus.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("service.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for o in only {
        if !names.contains(o) {
            return Err(format!("--service {o}: no tests/corpus/{o}/service.toml (known: {})", names.join(", ")));
        }
    }
    names
        .into_iter()
        .filter(|n| only.is_empty() || only.contains(n))
        .map(|name| {
            let dir = corpus.join(&name);
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()));
            let origin = |f: &str| format!("tests/corpus/{name}/{f}");
            Ok(Entry {
                service: Service::parse(&read("service.toml")?, &origin("service.toml"))?,
                scenario: Scenario::parse(&read("scenario.toml")?, &origin("scenario.toml"))?,
                labels: Labels::parse(&read("labels.toml")?, &origin("labels.toml"))?,
                name,
                dir,
            })
        })
        .collect()
}

/// The outcome of one service x build.
struct RunResult {
    service: String,
    build: Build,
    outcome: Result<Audited, String>,
}

struct Audited {
    score: Score,
    warmup: BTreeMap<String, BTreeMap<u16, u64>>,
    report_dir: PathBuf,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_options(args)?;
    let root = workspace_root();
    let entries = load_entries(&root.join("tests/corpus"), &opts.services)?;
    if opts.rescore {
        return rescore(&entries, &opts);
    }
    if !opts.checkouts.is_dir() {
        return Err(format!("--checkouts {}: not a directory (tests/corpus/README.md says how to fetch the checkouts)", opts.checkouts.display()));
    }
    let checkouts = opts.checkouts.canonicalize().map_err(|e| format!("{}: {e}", opts.checkouts.display()))?;
    let target_dir = opts.target_dir.clone().unwrap_or_else(|| root.join("target/corpus"));
    // PERF_AUDIT_AGENT: an agent binary already built (else the release build).
    let agent = match std::env::var_os("PERF_AUDIT_AGENT") {
        Some(path) => PathBuf::from(path),
        None => crate::bench::release_agent()?,
    };
    run_checked(cargo().current_dir(&root).args(["build", "-p", "perf-audit-tests", "--example", "private_postgres"]), "building the private PostgreSQL helper")?;
    let helper = root.join("target/debug/examples/private_postgres");
    let out_root = root.join("target/bench/corpus");
    std::fs::create_dir_all(&out_root).map_err(|e| format!("{}: {e}", out_root.display()))?;

    let mut results = Vec::new();
    // Build kind outermost: every service as shipped first, then with line
    // tables (each kind's target directory is shared by the services).
    for &build in &opts.builds {
        for e in &entries {
            eprintln!("xtask: corpus: {} ({})", e.name, build.name());
            let work = out_root.join(format!("{}-{}", e.name, build.name()));
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work).map_err(|er| format!("{}: {er}", work.display()))?;
            let outcome = run_one(e, build, &checkouts, &target_dir, &agent, &helper, &work, opts.seconds);
            if let Err(err) = &outcome {
                eprintln!("xtask: corpus: {} ({}): {err}", e.name, build.name());
            }
            results.push(RunResult { service: e.name.clone(), build, outcome });
            // corpus.json after every run, so a long session keeps what it measured.
            let _ = print_and_write(&entries, &results, &opts, false);
        }
    }
    print_and_write(&entries, &results, &opts, true)
}

/// `--rescore`: the audits of the last run, scored against today's labels.
fn rescore(entries: &[Entry], opts: &Options) -> Result<(), String> {
    let out_root = workspace_root().join("target/bench/corpus");
    let mut results = Vec::new();
    for &build in &opts.builds {
        for e in entries {
            let report_dir = out_root.join(format!("{}-{}", e.name, build.name())).join("audit");
            let path = report_dir.join("report.json");
            let outcome = std::fs::read(&path)
                .map_err(|er| format!("no audit to rescore: {} ({er}); run without --rescore first", path.display()))
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|er| format!("{}: {er}", path.display())))
                .map(|report| Audited { score: score::score(&Found::from_report(&report), &e.labels), warmup: BTreeMap::new(), report_dir });
            results.push(RunResult { service: e.name.clone(), build, outcome });
        }
    }
    print_and_write(entries, &results, opts, true)
}

/// The private PostgreSQL (the tests' helper: prints `url URL`, lives
/// while its stdin is open).
struct Postgres {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl Postgres {
    fn start(helper: &Path) -> Result<Self, String> {
        let mut child = Command::new(helper).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| format!("{}: {e}", helper.display()))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).map_err(|e| e.to_string())?;
        let url = line.trim().strip_prefix("url ").ok_or_else(|| format!("the private PostgreSQL did not start: {line:?}"))?.to_string();
        Ok(Postgres { child, stdin, url })
    }

    fn psql_file(&self, file: &Path, log: &Path) -> Result<(), String> {
        let out = Command::new("psql").arg(&self.url).args(["-q", "-v", "ON_ERROR_STOP=1", "-f"]).arg(file).output().map_err(|e| format!("psql: {e}"))?;
        append(log, &out.stdout);
        append(log, &out.stderr);
        if out.status.success() { Ok(()) } else { Err(format!("{} failed in psql: {} (log: {})", file.display(), last_line(&out.stderr), log.display())) }
    }

    fn psql(&self, sql: &str) -> Result<(), String> {
        let out = Command::new("psql").arg(&self.url).args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().map_err(|e| format!("psql: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(format!("psql -c {sql:?}: {}", last_line(&out.stderr))) }
    }

    fn parts(&self) -> (String, String, String, String) {
        url_parts(&self.url)
    }
}

/// (host, port, user, database) of `postgres://user@host:port/db`.
pub fn url_parts(url: &str) -> (String, String, String, String) {
    let rest = url.trim_start_matches("postgres://").trim_start_matches("postgresql://");
    let (user, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    (host.into(), port.into(), user.into(), db.into())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn append(log: &Path, bytes: &[u8]) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = f.write_all(bytes);
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { crate::bench::libc_kill(self.0.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| format!("no free loopback port: {e}"))
}

/// Paths matching a glob relative to `base` (`*` within a component), sorted.
pub fn glob(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut paths = vec![base.to_path_buf()];
    for comp in pattern.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let mut next = Vec::new();
        for p in &paths {
            if !comp.contains('*') {
                let q = p.join(comp);
                if q.exists() {
                    next.push(q);
                }
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(p) {
                next.extend(rd.filter_map(|e| e.ok()).filter(|e| wildcard(comp, &e.file_name().to_string_lossy())).map(|e| e.path()));
            }
        }
        next.sort();
        paths = next;
    }
    paths
}

/// `*` matches any run of characters; everything else literally.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn run_one(e: &Entry, build: Build, checkouts: &Path, target_root: &Path, agent: &Path, helper: &Path, work: &Path, seconds: u64) -> Result<Audited, String> {
    let s = &e.service;
    let checkout = checkouts.join(&s.checkout);
    if !checkout.is_dir() {
        return Err(format!(
            "checkout missing: {} (fetch it: git clone {} {} && git -C {} checkout {})",
            checkout.display(),
            s.upstream,
            checkout.display(),
            checkout.display(),
            s.commit
        ));
    }
    let db_log = work.join("database.log");
    let pg = Postgres::start(helper)?;
    let mut migrations = 0;
    let apply = !s.migrations_at_startup || s.build_needs_database;
    for g in s.migrations.iter().filter(|_| apply) {
        let files = glob(&checkout, g);
        if files.is_empty() {
            return Err(format!("migration glob `{g}` matches no file in {} (is it the checkout of {}?)", checkout.display(), s.commit));
        }
        for f in files {
            pg.psql_file(&f, &db_log)?;
            migrations += 1;
        }
    }
    eprintln!("xtask: corpus:   {migrations} migration files applied");

    let target_dir = target_root.join(build.name());
    let binary = build_service(e, build, &checkout, &target_dir, &pg, &work.join("build.log"))?;

    let seed = e.dir.join("seed.sql");
    let seed_database = || -> Result<(), String> {
        if seed.is_file() {
            eprintln!("xtask: corpus:   seeding ({})", seed.display());
            let t = Instant::now();
            pg.psql_file(&seed, &db_log)?;
            eprintln!("xtask: corpus:   seeded in {:.0} s", t.elapsed().as_secs_f64());
        }
        // As on a server that has been running: statistics gathered, and the
        // seed's own statements not counted as the service's.
        pg.psql("ANALYZE")?;
        pg.psql("SELECT pg_stat_statements_reset()")
    };
    if s.migrations_at_startup {
        // The schema the build was checked against goes; the service creates its own.
        pg.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public; CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
    } else {
        seed_database()?;
    }

    let port = match s.run.port {
        Some(p) if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() => {
            return Err(format!("{} always listens on port {p}, which is in use: stop what listens there (ss -ltnp sport = :{p})", e.name));
        }
        Some(p) => p,
        None => free_port()?,
    };
    let addr = format!("127.0.0.1:{port}");
    let (db_host, db_port, db_user, db_name) = pg.parts();
    let mut vars = BTreeMap::from([
        ("port".to_string(), port.to_string()),
        ("addr".to_string(), addr.clone()),
        ("database_url".to_string(), pg.url.clone()),
        ("db_host".to_string(), db_host),
        ("db_port".to_string(), db_port),
        ("db_user".to_string(), db_user),
        ("db_name".to_string(), db_name),
        ("checkout".to_string(), checkout.display().to_string()),
        ("sidecar_port".to_string(), free_port()?.to_string()),
        ("sidecar_port2".to_string(), free_port()?.to_string()),
    ]);

    let mut sidecars = Vec::new();
    for (i, sc) in s.sidecar.iter().enumerate() {
        let argv: Vec<String> = sc.command.iter().map(|a| spec::substitute(a, &vars)).collect();
        let log = std::fs::File::create(work.join(format!("sidecar-{i}.log"))).map_err(|er| er.to_string())?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|er| er.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|er| format!("sidecar `{}`: {er} (install it: apt-get install {})", argv.join(" "), argv[0]))?;
        sidecars.push(Guard(child));
    }
    if !sidecars.is_empty() {
        std::thread::sleep(Duration::from_secs(1));
    }

    let service_log = work.join("service.log");
    let log = std::fs::File::create(&service_log).map_err(|er| er.to_string())?;
    let mut cmd = Command::new(&binary);
    cmd.args(s.run.args.iter().map(|a| spec::substitute(a, &vars)))
        .current_dir(checkout.join(&s.run.cwd))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|er| er.to_string())?)
        .stderr(log);
    for (k, v) in &s.run.env {
        cmd.env(k, spec::substitute(v, &vars));
    }
    let mut service = Guard(cmd.spawn().map_err(|er| format!("{}: {er}", binary.display()))?);
    let pid = service.0.id();
    wait_ready(&mut service.0, &addr, &s.run.ready_path, &service_log)?;
    eprintln!("xtask: corpus:   service up (pid {pid}, {addr})");
    if s.migrations_at_startup {
        seed_database()?;
    }

    for (i, st) in e.scenario.setup.iter().enumerate() {
        let headers: Vec<(String, String)> = st.headers.iter().map(|(k, v)| (k.clone(), spec::substitute(v, &vars))).collect();
        let body = st.body.as_ref().map(|b| spec::substitute(b, &vars));
        let path = spec::substitute(&st.path, &vars);
        let a = http::request(&addr, &st.method, &path, &headers, body.as_deref(), Duration::from_secs(30))?;
        let ok = st.expect_status.map_or(a.status < 400, |x| a.status == x);
        if !ok {
            return Err(format!("setup #{} {} {path} answered {}: {} (service log: {})", i + 1, st.method, a.status, String::from_utf8_lossy(&a.body).chars().take(200).collect::<String>(), service_log.display()));
        }
        for (name, from) in &st.capture {
            let value = if let Some(p) = from.strip_prefix("json:") {
                let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(|er| format!("setup #{}: answer is not JSON ({er})", i + 1))?;
                spec::json_path(&v, p).map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
            } else {
                http::cookie(&a.headers, from.trim_start_matches("cookie:"))
            };
            let value = value.ok_or_else(|| format!("setup #{} {path}: no `{from}` in the answer to capture as {name}", i + 1))?;
            vars.insert(name.clone(), value);
        }
    }

    eprintln!("xtask: corpus:   warming up {} s at {} rps", e.scenario.warmup_seconds, e.scenario.rps);
    let warmup = drive(&addr, &e.scenario, &vars, Duration::from_secs(e.scenario.warmup_seconds));
    let summary: Vec<String> = warmup.iter().map(|(k, v)| format!("{k} {v:?}")).collect();
    eprintln!("xtask: corpus:   warm-up statuses: {}", summary.join("; "));

    let scenario_file = work.join("scenario.toml");
    std::fs::write(&scenario_file, e.scenario.agent_toml(&addr, &vars)).map_err(|er| er.to_string())?;
    let report_dir = work.join("audit");
    let agent_log = work.join("agent.log");
    eprintln!("xtask: corpus:   auditing pid {pid} for {seconds} s (profile all, {} rps)", e.scenario.rps);
    let status = Command::new(agent)
        .args(["--quiet", "--out"])
        .arg(&report_dir)
        .args(["--pid", &pid.to_string(), "all", "--duration", &format!("{seconds}s"), "--rps", &e.scenario.rps.to_string(), "--scenario"])
        .arg(&scenario_file)
        .env("DATABASE_URL", &pg.url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&agent_log).map_err(|er| er.to_string())?)
        .stderr(std::fs::OpenOptions::new().append(true).open(&agent_log).map_err(|er| er.to_string())?)
        .status()
        .map_err(|er| format!("{}: {er}", agent.display()))?;
    if !status.success() {
        return Err(format!("the agent failed ({status}): {} (log: {})", last_line(&std::fs::read(&agent_log).unwrap_or_default()), agent_log.display()));
    }
    let report_path = report_dir.join("report.json");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).map_err(|er| format!("{}: {er}", report_path.display()))?)
        .map_err(|er| format!("{}: {er}", report_path.display()))?;
    drop(service);
    drop(sidecars);
    drop(pg);
    let found = Found::from_report(&report);
    Ok(Audited { score: score::score(&found, &e.labels), warmup, report_dir })
}

fn build_service(e: &Entry, build: Build, checkout: &Path, target_dir: &Path, pg: &Postgres, log_path: &Path) -> Result<PathBuf, String> {
    let s = &e.service;
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "15"]).arg(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(["build", "--release"]);
    if let Some(p) = &s.package {
        cmd.args(["-p", p]);
    }
    cmd.args(["--bin", &s.bin]).current_dir(checkout.join(&s.workdir));
    // Only the service's own settings: nothing of this workspace's build.
    for (k, _) in std::env::vars() {
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "RUSTFLAGS" || k == "RUSTC_WRAPPER" || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target_dir).env("CARGO_BUILD_JOBS", std::env::var("CORPUS_BUILD_JOBS").unwrap_or_else(|_| "2".into()));
    if build == Build::LineTables {
        cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only");
    }
    if s.build_needs_database {
        cmd.env("DATABASE_URL", &pg.url);
    }
    cmd.envs(&s.build_env);
    let log = std::fs::File::create(log_path).map_err(|er| format!("{}: {er}", log_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|er| er.to_string())?).stderr(log);
    eprintln!("xtask: corpus:   building {} ({}) into {}", s.bin, build.name(), target_dir.display());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|er| format!("cargo: {er}"))?;
    let mut next_note = Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|er| er.to_string())? {
            break st;
        }
        if started.elapsed() >= next_note {
            next_note += Duration::from_secs(30);
            eprintln!("xtask: corpus:   still building ({:.0} s): {}", started.elapsed().as_secs_f64(), last_line(&std::fs::read(log_path).unwrap_or_default()));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        return Err(format!("build of {} ({}) failed: see {}", e.name, build.name(), log_path.display()));
    }
    let bin = target_dir.join("release").join(&s.bin);
    if !bin.is_file() {
        return Err(format!("the build of {} succeeded but {} is missing", e.name, bin.display()));
    }
    Ok(bin)
}

fn wait_ready(child: &mut Child, addr: &str, path: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the service exited ({st}) before answering: {} (log: {})", last_line(&std::fs::read(log).unwrap_or_default()), log.display()));
        }
        if http::request(addr, "GET", path, &[], None, Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("the service did not answer GET {path} on {addr} within 90 s (log: {})", log.display()))
}

/// Paced load (the scenario's rate, its weights in round-robin order) for
/// the warm-up; answers counted per request and status (0: no answer).
fn drive(addr: &str, scenario: &Scenario, vars: &BTreeMap<String, String>, length: Duration) -> BTreeMap<String, BTreeMap<u16, u64>> {
    let order: Vec<usize> = scenario.request.iter().enumerate().flat_map(|(i, r)| std::iter::repeat_n(i, r.weight as usize)).collect();
    let counts: Arc<Mutex<BTreeMap<String, BTreeMap<u16, u64>>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let interval = 1.0 / f64::from(scenario.rps);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            let (counts, next, order) = (counts.clone(), next.clone(), &order);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let at = Duration::from_secs_f64(k as f64 * interval);
                    if at >= length {
                        return;
                    }
                    if let Some(wait) = at.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let r = &scenario.request[order[k as usize % order.len()]];
                    let headers: Vec<(String, String)> = r.headers.iter().map(|(k, v)| (k.clone(), spec::substitute(v, vars))).collect();
                    let path = spec::substitute(&r.path, vars);
                    let body = r.body.as_ref().map(|b| spec::substitute(b, vars));
                    let status = http::request(addr, &r.method, &path, &headers, body.as_deref(), Duration::from_secs(10)).map_or(0, |a| a.status);
                    *counts.lock().unwrap().entry(format!("{} {}", r.method, r.path)).or_default().entry(status).or_default() += 1;
                }
            });
        }
    });
    Arc::try_unwrap(counts).map(|m| m.into_inner().unwrap()).unwrap_or_default()
}

fn ratio(t: &Tally) -> (String, String) {
    (score::pct(t.precision(), t.right, t.right + t.false_alarms), score::pct(t.recall(), t.found, t.observable))
}

fn print_and_write(entries: &[Entry], results: &[RunResult], opts: &Options, print: bool) -> Result<(), String> {
    let mut text = String::new();
    let mut out = |line: String| {
        text.push_str(&line);
        text.push('\n');
    };
    let labels_of = |name: &str| &entries.iter().find(|e| e.name == name).expect("entry").labels;
    out(format!("\ncorpus: profile all, {} s per audit under each service's scenario", opts.seconds));
    out(format!("{:<26} {:<12} {:>8} {:>6} {:>12} {:>16} {:>16}", "service", "build", "findings", "right", "false alarms", "precision", "recall"));
    let mut per_rule: BTreeMap<(Build, String), Tally> = BTreeMap::new();
    let mut runs_json = Vec::new();
    for r in results {
        match &r.outcome {
            Err(err) => {
                out(format!("{:<26} {:<12} error: {err}", r.service, r.build.name()));
                runs_json.push(serde_json::json!({"service": r.service, "build": r.build.name(), "error": err}));
            }
            Ok(a) => {
                let labels = labels_of(&r.service);
                let by = score::per_rule(&a.score, labels);
                for (rule, t) in &by {
                    per_rule.entry((r.build, rule.clone())).or_default().add(*t);
                }
                let t = score::total(&by);
                let (p, rc) = ratio(&t);
                out(format!("{:<26} {:<12} {:>8} {:>6} {:>12} {:>16} {:>16}", r.service, r.build.name(), a.score.findings.len(), t.right, t.false_alarms, p, rc));
                let label_json = |i: &usize| {
                    let l = &labels.expected[*i];
                    serde_json::json!({"rule": l.rule, "function": l.function, "why": l.why})
                };
                runs_json.push(serde_json::json!({
                    "service": r.service,
                    "build": r.build.name(),
                    "report": a.report_dir,
                    "findings": a.score.findings,
                    "matches": a.score.findings.iter().filter(|f| !f.verdict.is_false_alarm()).collect::<Vec<_>>(),
                    "false_alarms": a.score.findings.iter().filter(|f| f.verdict.is_false_alarm()).collect::<Vec<_>>(),
                    "found": a.score.found.iter().map(label_json).collect::<Vec<_>>(),
                    "misses": a.score.misses.iter().map(label_json).collect::<Vec<_>>(),
                    "per_rule": by,
                    "total": t,
                    "warmup_statuses": a.warmup,
                }));
            }
        }
    }
    out(format!("\nper rule (all services)"));
    out(format!("{:<24} {:<12} {:>16} {:>16}", "rule", "build", "precision", "recall"));
    for ((b, rule), t) in &per_rule {
        let (p, rc) = ratio(t);
        out(format!("{:<24} {:<12} {:>16} {:>16}", rule, b.name(), p, rc));
    }
    out(format!("\nfalse alarms"));
    for r in results {
        let Ok(a) = &r.outcome else { continue };
        for f in a.score.findings.iter().filter(|f| f.verdict.is_false_alarm()) {
            let why = match &f.verdict {
                score::Verdict::MustNot { why, .. } => format!("must-not: {why}"),
                _ => "unlabelled: read the code and label it".into(),
            };
            out(format!("  {} ({}): {} {} at `{}`: {} [{}]", r.service, r.build.name(), f.finding.severity, f.finding.rule, f.finding.function, f.finding.title, why));
        }
    }
    out(format!("\nmisses (observable, not found)"));
    for r in results {
        let Ok(a) = &r.outcome else { continue };
        for &i in &a.score.misses {
            let l = &labels_of(&r.service).expected[i];
            out(format!("  {} ({}): {} at `{}`", r.service, r.build.name(), l.rule, l.function));
        }
    }
    let commit = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(workspace_root()).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let rules_json: Vec<_> = per_rule.iter().map(|((b, rule), t)| serde_json::json!({"build": b.name(), "rule": rule, "tally": t})).collect();
    let value = serde_json::json!({"commit": commit, "seconds": opts.seconds, "runs": runs_json, "per_rule": rules_json, "table": text});
    if !print {
        let path = workspace_root().join("target/bench/corpus.json");
        return std::fs::write(&path, serde_json::to_vec_pretty(&value).expect("json")).map_err(|e| format!("{}: {e}", path.display()));
    }
    print!("{text}");
    crate::bench::write_result("corpus", &value)?;
    if results.iter().all(|r| r.outcome.is_err()) {
        return Err("no service was audited: see the errors above".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options() {
        let o = parse_options(&args("--checkouts /c --service a,b --service c --builds line-tables --seconds 10")).unwrap();
        assert_eq!(o, Options { checkouts: "/c".into(), services: vec!["a".into(), "b".into(), "c".into()], builds: vec![Build::LineTables], seconds: 10, target_dir: None, rescore: false });
        assert!(parse_options(&args("--rescore")).unwrap().rescore);
        let d = parse_options(&args("--checkouts /c")).unwrap();
        assert_eq!((d.builds.clone(), d.seconds), (vec![Build::Shipped, Build::LineTables], 30));
        assert!(parse_options(&args("--service a")).unwrap_err().contains("--checkouts DIR is required"));
        assert!(parse_options(&args("--checkouts /c --builds debug")).unwrap_err().contains("unknown build `debug`"));
        assert!(parse_options(&args("--checkouts")).unwrap_err().contains("--checkouts needs a value"));
    }

    #[test]
    fn wildcards_and_globs() {
        assert!(wildcard("*.sql", "2020_create.sql"));
        assert!(wildcard("up.sql", "up.sql"));
        assert!(wildcard("20*_create*.sql", "2021_create_users.sql"));
        assert!(!wildcard("*.sql", "down.sql.bak"));
        assert!(!wildcard("a*a", "a"));
        let dir = std::env::temp_dir().join(format!("xtask-glob-{}", std::process::id()));
        for p in ["m/2_b/up.sql", "m/1_a/up.sql", "m/1_a/down.sql", "m/x.txt"] {
            std::fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
            std::fs::write(dir.join(p), "").unwrap();
        }
        let got: Vec<String> = glob(&dir, "m/*/up.sql").iter().map(|p| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(got, vec!["m/1_a/up.sql", "m/2_b/up.sql"]);
        assert!(glob(&dir, "m/*.sql").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn database_url_parts() {
        let p = |a: &str, b: &str, c: &str, d: &str| (a.to_string(), b.to_string(), c.to_string(), d.to_string());
        assert_eq!(url_parts("postgres://postgres@127.0.0.1:40123/postgres"), p("127.0.0.1", "40123", "postgres", "postgres"));
        assert_eq!(url_parts("postgresql://u@h/db"), p("h", "5432", "u", "db"));
    }

    /// Every committed corpus entry parses and names only known rules.
    #[test]
    fn the_committed_corpus_parses() {
        let entries = load_entries(&workspace_root().join("tests/corpus"), &[]).unwrap();
        for e in &entries {
            assert!(!e.labels.expected.is_empty() || !e.labels.must_not.is_empty(), "{}: no label", e.name);
            assert!(e.dir.join("seed.sql").is_file(), "{}: no seed.sql", e.name);
        }
    }
}
