//! `diff.md`: what changed between two audits, regressions first. Pure and
//! deterministic (golden-file tested: `BLESS=1 cargo test` rewrites them).

use std::fmt::Write as _;

pub use crate::bench::markdown::format_ns;

use super::compare::{AuditDiff, FindingChange, Group, MetricChange, Verdict};

/// CPU hotspot rows shown (regressions and improvements are always shown).
const CPU_ROWS: usize = 25;

pub fn render(diff: &AuditDiff) -> String {
    let mut md = String::new();
    let service = if diff.new.service.is_empty() { &diff.old.service } else { &diff.new.service };
    let _ = writeln!(md, "## Performance Diff: {service}\n");
    let _ = writeln!(md, "**Old**: {} ({:.1} s)", diff.old.started_at, diff.old.duration_s);
    let _ = writeln!(md, "**New**: {} ({:.1} s)", diff.new.started_at, diff.new.duration_s);
    let _ = writeln!(md, "**Max regression**: {}", diff.thresholds);
    let regressions: Vec<&MetricChange> = diff.regressions().collect();
    if regressions.is_empty() {
        let improved = diff.improvements().count();
        let _ = writeln!(md, "**Verdict**: **ok**, no regression past the thresholds ({improved} improved)");
    } else {
        let names: Vec<String> = regressions.iter().map(|m| format!("`{}`", cell(&m.name))).collect();
        let _ = writeln!(md, "**Verdict**: **regressed**, {} regression(s): {}", regressions.len(), names.join(", "));
    }
    for note in &diff.notes {
        let _ = writeln!(md, "\n> {note}");
    }
    md.push_str("\n---\n\n");

    if !regressions.is_empty() {
        let _ = writeln!(md, "### Regressions\n");
        metric_table(&mut md, &regressions);
        md.push('\n');
    }

    let of = |g: Group| diff.metrics.iter().filter(move |m| m.group == g);
    let baseline: Vec<&MetricChange> = of(Group::Baseline).collect();
    if !baseline.is_empty() {
        let _ = writeln!(md, "### Baseline (load test)\n");
        metric_table(&mut md, &baseline);
        md.push('\n');
    }

    let cpu: Vec<&MetricChange> = of(Group::Cpu).collect();
    if !cpu.is_empty() {
        let _ = writeln!(md, "### CPU hotspots\n");
        let _ = writeln!(
            md,
            "Self CPU time in {} (gated: must also exceed 3σ of sampling noise); self and total shares of samples for reference. `-`: not in that audit's hotspot table.\n",
            diff.cpu_unit
        );
        let _ = writeln!(md, "| Function | Old | New | Change | Self % | Total % | Verdict | Noise |");
        let _ = writeln!(md, "|----------|-----|-----|--------|--------|---------|---------|-------|");
        let shown = cpu
            .iter()
            .enumerate()
            .filter(|(i, m)| *i < CPU_ROWS || matches!(m.verdict, Verdict::Regressed | Verdict::Improved));
        for (_, m) in shown {
            let shares = m.shares.as_ref();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} → {} | {} → {} | {} | {} |",
                cell(m.name.strip_prefix("cpu.hotspot:").unwrap_or(&m.name)),
                value(m.old),
                value(m.new),
                change(m.change_pct),
                pct(shares.and_then(|s| s.old_self_pct)),
                pct(shares.and_then(|s| s.new_self_pct)),
                pct(shares.and_then(|s| s.old_total_pct)),
                pct(shares.and_then(|s| s.new_total_pct)),
                verdict(m),
                cell(m.noise.as_deref().unwrap_or("-"))
            );
        }
        md.push('\n');
    }

    let bench: Vec<&MetricChange> = of(Group::Bench).collect();
    if !bench.is_empty() {
        let _ = writeln!(md, "### Benchmarks\n");
        let _ = writeln!(md, "Mean time per iteration; gated only when NEW's whole 95% interval is past OLD's, widened by the threshold.\n");
        let _ = writeln!(md, "| Benchmark | Old | New | Change | Limit | Verdict | Intervals |");
        let _ = writeln!(md, "|-----------|-----|-----|--------|-------|---------|-----------|");
        for m in bench {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                cell(m.name.strip_prefix("bench:").unwrap_or(&m.name)),
                m.old.map_or("-".into(), format_ns),
                m.new.map_or("-".into(), format_ns),
                change(m.change_pct),
                m.limit.as_deref().unwrap_or("not gated"),
                verdict(m),
                cell(m.noise.as_deref().unwrap_or("-"))
            );
        }
        md.push('\n');
    }

    let sections: Vec<&MetricChange> = of(Group::Section).collect();
    if !sections.is_empty() {
        let _ = writeln!(md, "### Memory, async and database\n");
        let _ = writeln!(md, "Numbers both audits have that changed; gated only when `--max-regression` names them (higher = worse).\n");
        metric_table(&mut md, &sections);
        md.push('\n');
    }

    let f = &diff.findings;
    let _ = writeln!(md, "### Findings\n");
    let _ = writeln!(md, "**Fixed** ({}): in the old audit, not in the new one\n", f.fixed.len());
    finding_list(&mut md, &f.fixed, |c| c.old_severity.clone().unwrap_or_default());
    let _ = writeln!(md, "**New** ({})\n", f.new.len());
    finding_list(&mut md, &f.new, |c| c.new_severity.clone().unwrap_or_default());
    let _ = writeln!(md, "**Still open** ({})\n", f.still_open.len());
    finding_list(&mut md, &f.still_open, |c| {
        let (o, n) = (c.old_severity.clone().unwrap_or_default(), c.new_severity.clone().unwrap_or_default());
        if o == n { n } else { format!("{o} → {n}") }
    });

    let _ = writeln!(md, "---\n\n### Differential flamegraph\n");
    let _ = writeln!(
        md,
        "`diff.svg`: the new profile's stacks, coloured by change against the old one (normalized to the same sample count): red grew, blue shrank. Hover a frame for its counts."
    );
    md
}

fn metric_table(md: &mut String, rows: &[&MetricChange]) {
    let _ = writeln!(md, "| Metric | Old | New | Change | Limit | Verdict | Noise |");
    let _ = writeln!(md, "|--------|-----|-----|--------|-------|---------|-------|");
    for m in rows {
        let with_unit = |x: Option<f64>| match (x, m.unit.as_str()) {
            (None, _) => "-".to_string(),
            (Some(ns), "ns") => format_ns(ns),
            (Some(_), "") => value(x),
            (Some(_), unit) => format!("{} {unit}", value(x)),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            cell(&m.name),
            with_unit(m.old),
            with_unit(m.new),
            change(m.change_pct),
            m.limit.as_deref().unwrap_or("not gated"),
            verdict(m),
            cell(m.noise.as_deref().unwrap_or("-"))
        );
    }
}

fn finding_list(md: &mut String, rows: &[FindingChange], severity: impl Fn(&FindingChange) -> String) {
    if rows.is_empty() {
        let _ = writeln!(md, "- none\n");
        return;
    }
    for c in rows {
        let location = c.location.as_deref().map(|l| format!(" at {l}")).unwrap_or_default();
        let _ = writeln!(md, "- {} **{}** `{}`{location}: {}", severity(c), c.rule, c.function, c.title);
    }
    md.push('\n');
}

fn verdict(m: &MetricChange) -> &'static str {
    match m.verdict {
        Verdict::Regressed => "**regressed**",
        Verdict::Improved => "**improved**",
        Verdict::WithinNoise => "within noise",
        Verdict::Unchanged => "unchanged",
        Verdict::NotGated => "not gated",
        Verdict::Gone => "gone",
        Verdict::Appeared => "appeared",
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn value(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.1}%"))
}

fn change(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:+.1}%"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::diff::{
        compare::compare,
        facts::{AuditFacts, BenchFacts, CpuFacts, FindingFacts, HotspotFacts},
        threshold::Thresholds,
    };

    fn hotspot(function: &str, self_samples: u64, total: u64) -> HotspotFacts {
        HotspotFacts {
            function: function.into(),
            self_samples,
            self_pct: self_samples as f64 * 100.0 / total as f64,
            total_pct: 100.0,
        }
    }

    fn finding(rule: &str, function: &str, severity: &str) -> FindingFacts {
        FindingFacts {
            rule: rule.into(),
            function: function.into(),
            severity: severity.into(),
            title: format!("`{function}` uses a lot of CPU"),
            location: Some("src/lib.rs:10".into()),
        }
    }

    fn synthetic(new_side: bool) -> AuditFacts {
        let (hot, cold) = if new_side { (2_700, 300) } else { (600, 300) };
        let total = hot + cold;
        AuditFacts {
            service: "user-service".into(),
            started_at: if new_side { "2026-02-01T10:00:00Z" } else { "2026-01-18T10:00:00Z" }.into(),
            duration_s: 30.0,
            rerun_command: "sudo perf-audit-agent user-service all --duration 30s".into(),
            baseline: BTreeMap::from([
                ("rps".into(), 1000.0),
                ("p50_ms".into(), 4.0),
                ("p99_ms".into(), if new_side { 19.0 } else { 12.0 }),
                ("errors".into(), 0.0),
            ]),
            cpu: Some(CpuFacts {
                frequency_hz: 99.0,
                total_samples: total,
                hotspots: vec![hotspot("svc::handler::hash_password", hot, total), hotspot("svc::json::encode", cold, total)],
            }),
            benchmarks: vec![BenchFacts {
                id: "encode/1k".into(),
                mean_ns: if new_side { 1450.0 } else { 1354.8 },
                lower_ns: if new_side { 1440.0 } else { 1343.4 },
                upper_ns: if new_side { 1461.0 } else { 1370.0 },
            }],
            sections: BTreeMap::from([("database.total_time_ms".into(), if new_side { 50.0 } else { 40.0 })]),
            findings: if new_side {
                vec![finding("cpu-hotspot", "svc::handler::hash_password", "P0"), finding("n-plus-one", "svc::users::list", "P1")]
            } else {
                vec![finding("cpu-hotspot", "svc::handler::hash_password", "P1"), finding("cpu-hotspot", "svc::json::encode", "P2")]
            },
        }
    }

    /// Compares `actual` with the golden file, or rewrites it with BLESS=1.
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/diff/testdata").join(name);
        if std::env::var_os("BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
        assert_eq!(actual, expected, "{} differs (BLESS=1 cargo test rewrites it after review)", path.display());
    }

    #[test]
    fn regression_diff_md_matches_golden() {
        let thresholds = Thresholds::parse(&["p99_ms=20%".into()]).unwrap();
        let diff = compare(&synthetic(false), &synthetic(true), &thresholds);
        golden("regression.diff.md", &render(&diff));
    }

    #[test]
    fn improvement_diff_md_matches_golden() {
        let diff = compare(&synthetic(true), &synthetic(false), &Thresholds::default());
        golden("improvement.diff.md", &render(&diff));
    }

    #[test]
    fn nanoseconds_read_in_the_right_unit() {
        assert_eq!(format_ns(840.0), "840 ns");
        assert_eq!(format_ns(1354.8), "1.35 µs");
        assert_eq!(format_ns(11_205.0), "11.2 µs");
        assert_eq!(format_ns(2.1e6), "2.10 ms");
    }
}
