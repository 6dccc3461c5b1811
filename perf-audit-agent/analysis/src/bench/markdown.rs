//! The benchmark table of report.md. Pure and deterministic.

use std::fmt::Write as _;

use super::criterion::{BenchVerdict, BenchmarkRow};

pub fn render(md: &mut String, rows: &[BenchmarkRow]) {
    let _ = writeln!(md, "### Benchmarks (criterion)\n");
    let threshold = rows.first().map(|r| r.max_regression_pct).unwrap_or_default();
    let _ = writeln!(
        md,
        "Mean time per iteration with its 95% confidence interval; the change is against the previous `cargo bench` run, and counts as a regression only when its whole interval is above +{}%.\n",
        trim_float(threshold)
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

/// `1.35 µs`, `11.2 µs`, `840 ns`, `2.10 ms`.
pub fn format_ns(ns: f64) -> String {
    let (value, unit) = if ns.abs() >= 1e9 {
        (ns / 1e9, "s")
    } else if ns.abs() >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns.abs() >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    if value.abs() >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// `5` rather than `5.0`, `2.5` as is.
pub(crate) fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x}") }
}
