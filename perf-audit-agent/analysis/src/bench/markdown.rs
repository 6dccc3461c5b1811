//! The benchmark table of report.md. Pure and deterministic.

use std::fmt::Write as _;

use super::criterion::{BenchVerdict, BenchmarkRow};
use crate::diff::markdown::format_ns;

pub fn render(md: &mut String, rows: &[BenchmarkRow]) {
    let _ = writeln!(md, "### Benchmarks (criterion)\n");
    let threshold = rows.first().map(|r| r.max_regression_pct).unwrap_or_default();
    let _ = writeln!(
        md,
        "Mean time per iteration with its 95% confidence interval; the change is against the previous `cargo bench` run, and counts as a regression only when its whole interval is above +{}%.\n",
        crate::diff::threshold::trim_float(threshold)
    );
    let _ = writeln!(md, "| Benchmark | Mean | 95% CI | Change | Change CI | Verdict |");
    let _ = writeln!(md, "|-----------|------|--------|--------|-----------|---------|");
    for r in rows {
        let change = r.change_pct.map_or("-".to_string(), |c| format!("{c:+.2}%"));
        let change_ci = match (r.change_lower_pct, r.change_upper_pct) {
            (Some(lo), Some(hi)) => format!("{lo:+.2}% .. {hi:+.2}%"),
            _ => "-".to_string(),
        };
        let verdict = match r.verdict {
            BenchVerdict::Regressed => "**regressed**",
            BenchVerdict::Improved => "**improved**",
            other => other.describe(),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} .. {} | {change} | {change_ci} | {verdict} |",
            r.id.replace('|', "\\|"),
            format_ns(r.mean_ns),
            format_ns(r.mean_lower_ns),
            format_ns(r.mean_upper_ns)
        );
    }
}
