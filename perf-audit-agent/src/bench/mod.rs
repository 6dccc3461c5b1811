//! `--bench`: run the service crate's criterion benchmarks after the audit
//! and put their table in the report, so that one command measures both
//! where time goes (the profile) and how fast the code paths are (the
//! benchmarks), and `diff` can gate on both.
//!
//! The crate is `--bench-dir`, or, when not given, inferred from the
//! target's executable: a binary at `<crate>/target/release/<bin>` (how
//! `cargo build --release` lays it out) belongs to `<crate>`. Criterion
//! writes its results under the cargo target directory (asked from `cargo
//! metadata`, so workspaces and `CARGO_TARGET_DIR` work) or `CRITERION_HOME`.

pub use perf_audit_analysis::bench::{criterion, markdown};

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

pub use criterion::{BenchVerdict, BenchmarkRow};

use crate::error::{Error, ErrorKind, Result};

/// The change above which a benchmark counts as regressed, by default.
pub const DEFAULT_BENCH_MAX_REGRESSION_PCT: f64 = 5.0;

/// What `--bench` asked for, validated by the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchPlan {
    /// `None`: inferred from the target's executable at run time.
    pub crate_dir: Option<PathBuf>,
    pub max_regression_pct: f64,
}

impl BenchPlan {
    /// Validates `--bench`, `--bench-dir` and `--bench-max-regression`
    /// (a `--bench-dir` must be a crate: it has a Cargo.toml).
    pub fn from_args(bench: bool, crate_dir: Option<PathBuf>, max_regression: &str) -> Result<Option<BenchPlan>> {
        if !bench {
            return Ok(None);
        }
        let usage = |m: String| Error::new(ErrorKind::Usage, m);
        let number = max_regression.trim().strip_suffix('%').unwrap_or(max_regression.trim());
        let max_regression_pct = match number.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && p >= 0.0 => p,
            _ => return Err(usage(format!("--bench-max-regression `{max_regression}` is not a percentage: use e.g. 5%"))),
        };
        if let Some(dir) = &crate_dir
            && !dir.join("Cargo.toml").is_file()
        {
            return Err(usage(format!(
                "--bench-dir {}: no Cargo.toml there: pass the directory of the crate that has the benchmarks",
                dir.display()
            )));
        }
        Ok(Some(BenchPlan { crate_dir, max_regression_pct }))
    }
}

/// Runs the benchmarks when the plan asks for them; no rows otherwise.
pub fn run_if_asked(plan: Option<&BenchPlan>, target_exe: &str) -> Result<Vec<BenchmarkRow>> {
    let Some(plan) = plan else { return Ok(Vec::new()) };
    let dir = match &plan.crate_dir {
        Some(dir) => dir.clone(),
        None => infer_crate_dir(Path::new(target_exe)).ok_or_else(|| {
            Error::new(
                ErrorKind::Bench,
                format!(
                    "--bench: cannot tell the service's crate from its executable `{target_exe}` (not under <crate>/target/release/): pass --bench-dir <crate dir>"
                ),
            )
        })?,
    };
    eprintln!("perf-audit: running `cargo bench` in {}", dir.display());
    run_cargo_bench(&dir)?;
    let rows = read_results(&criterion_dir(&dir)?, plan.max_regression_pct)?;
    let regressed: Vec<&str> =
        rows.iter().filter(|r| r.verdict == BenchVerdict::Regressed).map(|r| r.id.as_str()).collect();
    if !regressed.is_empty() {
        eprintln!("perf-audit: benchmarks regressed past {}%: {}", plan.max_regression_pct, regressed.join(", "));
    }
    Ok(rows)
}

/// `<crate>/target/release/<bin>` (or `target/<triple>/release/<bin>`) ->
/// `<crate>`, when it has a Cargo.toml.
pub fn infer_crate_dir(exe: &Path) -> Option<PathBuf> {
    let exe = exe.to_str().map(|s| s.trim_end_matches(" (deleted)")).map(PathBuf::from)?;
    let target = exe.ancestors().skip(1).find(|dir| dir.file_name().is_some_and(|n| n == "target"))?;
    let release = exe.parent()?;
    if !release.file_name().is_some_and(|n| n == "release" || n == "debug") {
        return None;
    }
    let crate_dir = target.parent()?;
    crate_dir.join("Cargo.toml").is_file().then(|| crate_dir.to_path_buf())
}

fn bench_error(message: String) -> Error {
    Error::new(ErrorKind::Bench, message)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo bench` in `dir`; its output goes to stderr (stdout's last line is
/// the report directory).
fn run_cargo_bench(dir: &Path) -> Result<()> {
    let status = cargo()
        .arg("bench")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| bench_error(format!("cannot run `cargo bench` in {}: {e}", dir.display())))?;
    if !status.success() {
        return Err(bench_error(format!("`cargo bench` failed in {} ({status})", dir.display())));
    }
    Ok(())
}

/// Where criterion wrote its results for the crate in `dir`.
fn criterion_dir(dir: &Path) -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Ok(PathBuf::from(home));
    }
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| bench_error(format!("cannot run `cargo metadata` in {}: {e}", dir.display())))?;
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| bench_error(format!("`cargo metadata` in {} gave no JSON: {e}", dir.display())))?;
    let target = metadata["target_directory"]
        .as_str()
        .ok_or_else(|| bench_error(format!("`cargo metadata` in {} has no target_directory", dir.display())))?;
    Ok(Path::new(target).join("criterion"))
}

/// Every benchmark under a criterion directory, sorted by id.
pub fn read_results(criterion_dir: &Path, max_regression_pct: f64) -> Result<Vec<BenchmarkRow>> {
    let mut new_dirs = Vec::new();
    find_new_dirs(criterion_dir, 0, &mut new_dirs);
    if new_dirs.is_empty() {
        return Err(bench_error(format!(
            "no criterion results under {} after `cargo bench` (are the benchmarks criterion ones, with `harness = false`?)",
            criterion_dir.display()
        )));
    }
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let mut rows = Vec::new();
    for new_dir in new_dirs {
        let bench_dir = new_dir.parent().expect("new/ has a parent");
        let fallback = bench_dir.strip_prefix(criterion_dir).unwrap_or(bench_dir).to_string_lossy().into_owned();
        let estimates = read(&new_dir.join("estimates.json"))
            .ok_or_else(|| bench_error(format!("cannot read {}", new_dir.join("estimates.json").display())))?;
        let row = criterion::row(
            &fallback,
            read(&new_dir.join("benchmark.json")).as_deref(),
            &estimates,
            read(&bench_dir.join("change/estimates.json")).as_deref(),
            max_regression_pct,
        )
        .map_err(bench_error)?;
        rows.push(row);
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// Directories named `new` holding an `estimates.json`, below `dir`
/// (criterion nests `group/function/parameter/`); `report/` is HTML.
fn find_new_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    children.sort();
    for child in children {
        match child.file_name().and_then(|n| n.to_str()) {
            Some("new") if child.join("estimates.json").is_file() => out.push(child),
            Some("report" | "base" | "change" | "new") => {}
            _ => find_new_dirs(&child, depth + 1, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_options_are_validated_before_the_audit() {
        assert_eq!(BenchPlan::from_args(false, None, "5%").unwrap(), None);
        let plan = BenchPlan::from_args(true, None, "2.5%").unwrap().unwrap();
        assert_eq!(plan.max_regression_pct, 2.5);
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(BenchPlan::from_args(true, Some(here.clone()), "5").unwrap().unwrap().crate_dir, Some(here));
        let e = BenchPlan::from_args(true, Some("/nonexistent".into()), "5%").unwrap_err();
        assert!(e.message.contains("no Cargo.toml"), "{}", e.message);
        assert!(BenchPlan::from_args(true, None, "lots").is_err());
    }

    #[test]
    fn the_crate_is_two_levels_above_target_release() {
        let tmp = std::env::temp_dir().join(format!("perf-audit-bench-infer-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("svc/target/release")).unwrap();
        std::fs::write(tmp.join("svc/Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(infer_crate_dir(&tmp.join("svc/target/release/svc")), Some(tmp.join("svc")));
        assert_eq!(
            infer_crate_dir(&tmp.join("svc/target/x86_64-unknown-linux-gnu/release/svc")),
            Some(tmp.join("svc"))
        );
        assert_eq!(infer_crate_dir(Path::new("/usr/bin/svc")), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
