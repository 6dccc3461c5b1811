//! `perf-audit-agent diff OLD NEW`: did the fixes work, and did anything
//! get worse? The closing loop of an audit: re-run it after a change, diff
//! the two outputs, and let CI fail on a regression (exit code 8).
//!
//! Split like the audit: [`DiffPlan`] validates the arguments before any
//! I/O; [`facts`] reads each report.json tolerantly (sections added by
//! later versions or other profiles are compared when both sides have
//! them); [`compare`] is the pure comparison with its noise rules;
//! [`markdown`] and [`flamegraph`] render `diff.md` and `diff.svg`.
//! `diff.json` is the comparison, machine-readable.

pub use perf_audit_analysis::diff::{compare, facts, flamegraph, markdown, threshold};

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    cli::DiffArgs,
    error::{Error, ErrorKind, Result},
};
pub use perf_audit_analysis::diff::{AuditDiff, MetricChange, Thresholds, Verdict};

/// A validated `diff` invocation.
#[derive(Debug, Clone)]
pub struct DiffPlan {
    pub old: PathBuf,
    pub new: PathBuf,
    pub thresholds: Thresholds,
    /// `None`: `perf-audit-diff-<UTC timestamp>/`.
    pub out_dir: Option<PathBuf>,
}

impl DiffPlan {
    pub fn from_args(args: DiffArgs) -> Result<DiffPlan> {
        Ok(DiffPlan {
            thresholds: Thresholds::parse(&args.max_regression)?,
            old: args.old,
            new: args.new,
            out_dir: args.out,
        })
    }
}

/// What a diff produced.
pub struct DiffOutput {
    pub out_dir: PathBuf,
    pub diff: AuditDiff,
    /// True when `diff.svg` was written (both sides had `stacks.folded`).
    pub flamegraph: bool,
}

impl DiffOutput {
    /// One stderr line per regressed metric, naming it.
    pub fn regression_lines(&self) -> Vec<String> {
        self.diff
            .regressions()
            .map(|m| {
                let value = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
                let change = m.change_pct.map_or("from 0".to_string(), |c| format!("{c:+.1}%"));
                let noise = m.noise.as_deref().map(|n| format!(", {n}")).unwrap_or_default();
                format!(
                    "perf-audit: regression: {} {} -> {} {} ({change}, max {}{noise})",
                    m.name,
                    value(m.old),
                    value(m.new),
                    m.unit,
                    m.limit.as_deref().unwrap_or("-"),
                )
            })
            .collect()
    }
}

/// One audit to compare: its report.json and, when beside it, stacks.folded.
struct AuditInput {
    report_path: PathBuf,
    facts: facts::AuditFacts,
    folded: Option<String>,
}

fn input_error(message: String) -> Error {
    Error::new(ErrorKind::AuditInput, message)
}

fn load(path: &Path) -> Result<AuditInput> {
    let (report_path, dir) = if path.is_dir() {
        (path.join("report.json"), path.to_path_buf())
    } else if path.is_file() {
        (path.to_path_buf(), path.parent().map(Path::to_path_buf).unwrap_or_default())
    } else {
        return Err(input_error(format!("{} does not exist", path.display())));
    };
    let text = fs::read_to_string(&report_path)
        .map_err(|e| input_error(format!("cannot read {}: {e}", report_path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| input_error(format!("{} is not JSON: {e}", report_path.display())))?;
    let facts = facts::AuditFacts::from_report(&json)
        .ok_or_else(|| input_error(format!("{} is not a perf-audit report (no schema_version)", report_path.display())))?;
    let folded = fs::read_to_string(dir.join("stacks.folded")).ok();
    Ok(AuditInput { report_path, facts, folded })
}

/// Loads both audits, compares them, writes `diff.md`, `diff.json` and
/// (when both have folded stacks) `diff.svg`.
pub fn run(plan: &DiffPlan) -> Result<DiffOutput> {
    let old = load(&plan.old)?;
    let new = load(&plan.new)?;
    let diff = compare::compare(&old.facts, &new.facts, &plan.thresholds);

    let out_dir = plan.out_dir.clone().unwrap_or_else(|| default_out_dir(SystemTime::now()));
    fs::create_dir_all(&out_dir).map_err(|e| Error::output(&out_dir, e))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out_dir.join(name);
        fs::write(&path, bytes).map_err(|e| Error::output(&path, e))
    };
    let flamegraph = match (&old.folded, &new.folded) {
        (Some(o), Some(n)) => {
            let svg = flamegraph::differential_svg(
                &format!("CPU diff: {}", diff.new.service),
                &format!("{} (old) → {} (new); red grew, blue shrank", diff.old.started_at, diff.new.started_at),
                o,
                n,
            )?;
            write("diff.svg", &svg)?;
            true
        }
        _ => {
            eprintln!(
                "perf-audit: no stacks.folded beside {} or {}: diff.svg not written",
                old.report_path.display(),
                new.report_path.display()
            );
            false
        }
    };
    write("diff.md", markdown::render(&diff).as_bytes())?;
    let json = serde_json::to_vec_pretty(&diff).map_err(|e| Error::internal(format!("diff.json: {e}")))?;
    write("diff.json", &json)?;
    Ok(DiffOutput { out_dir, diff, flamegraph })
}

/// `perf-audit-diff-<UTC timestamp>`, e.g. `perf-audit-diff-20261124T212300Z`.
pub fn default_out_dir(at: SystemTime) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(at).to_string().replace(['-', ':'], "");
    PathBuf::from(format!("perf-audit-diff-{stamp}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn default_out_dir_is_utc_stamped() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_555_380);
        assert_eq!(default_out_dir(at), PathBuf::from("perf-audit-diff-20261124T212300Z"));
    }

    #[test]
    fn a_missing_input_is_one_line_with_the_fix() {
        let e = load(Path::new("/nonexistent/audit")).err().unwrap();
        assert_eq!(e.kind, ErrorKind::AuditInput);
        let shown = e.to_string();
        assert!(shown.contains("/nonexistent/audit does not exist") && shown.contains("fix:"), "{shown}");
    }
}
