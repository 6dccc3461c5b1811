//! `cargo xtask <command>`: everything a fresh machine needs, in one place.
//!
//! - `test`: installs missing system packages, builds the agent (its build
//!   script installs the eBPF toolchain pieces), runs every test. With
//!   `CI=true` nothing is skipped.
//! - `bench <name>`: runs a benchmark side by side with its baseline tool.
//! - `setup`: only the installation part of `test`.
mod bench;
mod corpus;
mod demo;
mod setup;

use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo                 build, start a private Postgres and the demo service, drive load, audit it (profile all),
                       print the report directory last (DEMO_SECONDS=30 by default)
  test                 install what is missing, build, run all tests (unit, end-to-end with real eBPF)
  bench cpu-overhead   CPU sampling overhead on a CPU-bound fixture: perf-audit vs `perf record -g -F 99`
  bench unwind         stack completeness and slowdown: dwarf vs frame-pointer vs `perf record --call-graph dwarf`
  bench offcpu         off-CPU collector overhead on a context-switch-heavy fixture vs `perf record -e sched:sched_switch -g`
  bench daemon         the daemon's own CPU and RSS at 19 Hz system-wide over a soak (BENCH_SECONDS, default 180)
  bench memory         allocation-heavy fixture: memory default/precise vs heaptrack, bpftrace memleak-style
                       uprobes, and the uprobe mechanism's own floor (perf stat counting uprobes)
  bench overhead       the demo service (private PostgreSQL, its scenario) untraced vs each profile vs `all`:
                       p99 at BENCH_RPS (default 100) and saturated throughput, ratios (BENCH_ROUNDS default 3,
                       BENCH_SECONDS default 8 per measurement, BENCH_PROFILES to choose)
  bench database       the demo's /feed at >= 10,000 queries/s (BENCH_CLIENTS closed-loop clients, default 12):
                       untraced vs pg_stat_statements alone vs the database profile; dropped writes, texts
  bench corpus         the corpus of real services (tests/corpus/): build each (as shipped, with line tables), run it
                       on a private PostgreSQL under its scenario, audit it (profile all, 30 s), score against its
                       labels: precision/recall per service and rule (--checkouts DIR [--service N] [--builds ...])
  setup                install system packages and build the eBPF toolchain pieces only

environment:
  CI=true              tests that need eBPF or Postgres run, never skip (they never skip anyway)
  BENCH_ROUNDS=N       rounds per benchmark (default 5)
  BENCH_SECONDS=S      seconds per measured run (default 5)
  BENCH_WORK=N         work steps per allocation unit in `bench memory` (default 1000, ~2 µs)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("setup") => setup::setup(),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ has a parent").to_path_buf()
}

pub fn run_checked(cmd: &mut Command, what: &str) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what} failed ({status})")) }
}

fn test(extra: &[String]) -> Result<(), String> {
    setup::setup()?;
    let root = workspace_root();
    // Unit tests in parallel; the end-to-end tests one at a time, since they
    // measure CPU shares on a 2-core machine and must not starve each other.
    run_checked(
        cargo().current_dir(&root).args(["test", "--workspace", "--exclude", "perf-audit-tests"]).args(extra),
        "unit tests (cargo test --workspace --exclude perf-audit-tests)",
    )?;
    run_checked(
        cargo().current_dir(&root).args(["test", "--no-fail-fast", "-p", "perf-audit-tests"]).args(extra).args(["--", "--test-threads=1"]),
        "end-to-end tests with real eBPF (cargo test -p perf-audit-tests -- --test-threads=1)",
    )
}
