//! The comparison itself: two [`AuditFacts`] in, an [`AuditDiff`] out. Pure.
//!
//! A regression must be both large and real:
//! - baseline metrics (load-test numbers) have no noise estimate, so the
//!   threshold alone decides;
//! - CPU hotspots are sample counts, so a change must also exceed
//!   [`SIGNIFICANCE_SIGMAS`] standard deviations of Poisson sampling noise
//!   (a function seen 10 times is not "twice as slow" at 20);
//! - benchmarks carry criterion's 95% confidence interval, so the whole
//!   interval of NEW must lie past OLD's interval widened by the threshold.
//!
//! CPU is compared as CPU time per second of audit (ms/s), or per request
//! when both audits have `baseline.rps`: shares (self %) are shown too, but
//! are not gated, since one function getting faster raises every other
//! function's share.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    facts::{AuditFacts, FindingFacts, HotspotFacts},
    threshold::{Limit, Thresholds},
};

/// How many standard deviations of sampling noise a hotspot change needs.
pub const SIGNIFICANCE_SIGMAS: f64 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Baseline,
    Cpu,
    Bench,
    Section,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Worse past the threshold (and past the noise).
    Regressed,
    /// Better past the threshold (and past the noise).
    Improved,
    /// Past the threshold, but within sampling noise or overlapping intervals.
    WithinNoise,
    /// Within the threshold.
    Unchanged,
    /// Not gated: shown for information.
    NotGated,
    /// Only in the old audit.
    Gone,
    /// Only in the new audit.
    Appeared,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricChange {
    pub name: String,
    pub group: Group,
    pub unit: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
    /// Signed relative change, percent of old.
    pub change_pct: Option<f64>,
    /// The limit applied, e.g. `5%`, or `off`; `None` when not gated.
    pub limit: Option<String>,
    pub verdict: Verdict,
    /// How noise was judged, e.g. `4.1σ` or `CI 10.2..10.9 µs → 12.0..12.4 µs`.
    pub noise: Option<String>,
    /// For CPU hotspots: self and total shares of samples, old → new.
    pub shares: Option<Shares>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Shares {
    pub old_self_pct: Option<f64>,
    pub new_self_pct: Option<f64>,
    pub old_total_pct: Option<f64>,
    pub new_total_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FindingChange {
    pub rule: String,
    pub function: String,
    pub title: String,
    pub location: Option<String>,
    pub old_severity: Option<String>,
    pub new_severity: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FindingsDiff {
    /// In OLD, not in NEW.
    pub fixed: Vec<FindingChange>,
    /// In NEW, not in OLD.
    pub new: Vec<FindingChange>,
    pub still_open: Vec<FindingChange>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Side {
    pub service: String,
    pub started_at: String,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditDiff {
    pub old: Side,
    pub new: Side,
    pub thresholds: String,
    /// `CPU ms/s` or `CPU ms/request`.
    pub cpu_unit: String,
    pub metrics: Vec<MetricChange>,
    pub findings: FindingsDiff,
    /// What could not be compared, and why.
    pub notes: Vec<String>,
}

impl AuditDiff {
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.metrics.iter().filter(|m| m.verdict == Verdict::Regressed)
    }

    pub fn improvements(&self) -> impl Iterator<Item = &MetricChange> {
        self.metrics.iter().filter(|m| m.verdict == Verdict::Improved)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

pub fn compare(old: &AuditFacts, new: &AuditFacts, thresholds: &Thresholds) -> AuditDiff {
    let mut metrics = Vec::new();
    let mut notes = Vec::new();

    // Baseline: exact numbers, threshold only.
    match (old.baseline.is_empty(), new.baseline.is_empty()) {
        (false, false) => {
            let names: BTreeSet<&String> = old.baseline.keys().chain(new.baseline.keys()).collect();
            for field in names {
                let name = format!("baseline.{field}");
                let direction = if field == "rps" { Direction::HigherIsBetter } else { Direction::LowerIsBetter };
                let (o, n) = (old.baseline.get(field).copied(), new.baseline.get(field).copied());
                let mut change = judge_exact(name, Group::Baseline, baseline_unit(field), o, n, direction, thresholds.limit_for(&format!("baseline.{field}"), true));
                // A process's RSS moves by whole pages, thread stacks and
                // allocator arenas from run to run: below RSS_NOISE_BYTES of
                // change it is no signal, whatever its percent of a small
                // process (2.0 -> 2.17 MB, +5.8%, between two runs of the
                // same 2 MB fixture).
                if field.ends_with("rss_bytes")
                    && let (Some(o), Some(n)) = (o, n)
                    && (n - o).abs() < RSS_NOISE_BYTES
                    && matches!(change.verdict, Verdict::Regressed | Verdict::Improved)
                {
                    change.verdict = Verdict::WithinNoise;
                    change.noise = Some(format!("{:+.0} KiB, under the {} MiB floor of RSS noise", (n - o) / 1024.0, RSS_NOISE_BYTES / (1024.0 * 1024.0)));
                }
                metrics.push(change);
            }
        }
        (true, true) => notes.push("no `baseline` (load-test numbers) in either audit: latency and throughput not compared".into()),
        (true, false) => notes.push("the old audit has no `baseline`: latency and throughput not compared".into()),
        (false, true) => notes.push("the new audit has no `baseline`: latency and throughput not compared".into()),
    }

    // CPU hotspots.
    let per_request = match (old.baseline.get("rps"), new.baseline.get("rps")) {
        (Some(&a), Some(&b)) if a > 0.0 && b > 0.0 => Some((a, b)),
        _ => None,
    };
    let cpu_unit = if per_request.is_some() { "CPU ms/request" } else { "CPU ms/s" };
    match (&old.cpu, &new.cpu) {
        (Some(oc), Some(nc)) if oc.frequency_hz > 0.0 && nc.frequency_hz > 0.0 => {
            // ms of CPU per sample, per second of audit (and per request).
            let scale = |freq: f64, duration: f64, rps: Option<f64>| {
                1000.0 / freq / duration.max(f64::MIN_POSITIVE) / rps.unwrap_or(1.0)
            };
            let old_scale = scale(oc.frequency_hz, old.duration_s, per_request.map(|p| p.0));
            let new_scale = scale(nc.frequency_hz, new.duration_s, per_request.map(|p| p.1));
            let old_by: BTreeMap<&str, &HotspotFacts> = oc.hotspots.iter().map(|h| (h.function.as_str(), h)).collect();
            let new_by: BTreeMap<&str, &HotspotFacts> = nc.hotspots.iter().map(|h| (h.function.as_str(), h)).collect();
            // A function missing from one table had at most as many samples
            // as that table's last row: gate with that bound, never with 0.
            let old_floor = oc.hotspots.iter().map(|h| h.self_samples).min().unwrap_or(0);
            let new_floor = nc.hotspots.iter().map(|h| h.self_samples).min().unwrap_or(0);
            let mut functions: Vec<&str> = nc.hotspots.iter().map(|h| h.function.as_str()).collect();
            functions.extend(oc.hotspots.iter().map(|h| h.function.as_str()).filter(|f| !new_by.contains_key(f)));
            for function in functions {
                let (o, n) = (old_by.get(function), new_by.get(function));
                let old_count = o.map_or(old_floor, |h| h.self_samples) as f64;
                let new_count = n.map_or(new_floor, |h| h.self_samples) as f64;
                let name = format!("cpu.hotspot:{function}");
                let limit = thresholds.limit_for(&name, true);
                let (ov, nv) = (old_count * old_scale, new_count * new_scale);
                let sigma = (old_count * old_scale * old_scale + new_count * new_scale * new_scale).sqrt();
                let z = if sigma > 0.0 { (nv - ov) / sigma } else { 0.0 };
                let mut change = judge(name, Group::Cpu, cpu_unit, Some(ov), Some(nv), Direction::LowerIsBetter, limit, z.abs() >= SIGNIFICANCE_SIGMAS);
                change.old = o.map(|_| ov);
                change.new = n.map(|_| nv);
                if o.is_none() || n.is_none() {
                    change.change_pct = None;
                }
                change.noise = Some(format!("{z:+.1}σ ({} → {} samples)", old_count as u64, new_count as u64));
                if o.is_none() || n.is_none() {
                    change.noise = Some(format!(
                        "{z:+.1}σ ({}{} → {}{} samples, bound from the table's last row)",
                        if o.is_none() { "≤" } else { "" },
                        old_count as u64,
                        if n.is_none() { "≤" } else { "" },
                        new_count as u64
                    ));
                    if change.verdict != Verdict::Regressed && change.verdict != Verdict::Improved {
                        change.verdict = if o.is_none() { Verdict::Appeared } else { Verdict::Gone };
                    }
                }
                change.shares = Some(Shares {
                    old_self_pct: o.map(|h| h.self_pct),
                    new_self_pct: n.map(|h| h.self_pct),
                    old_total_pct: o.map(|h| h.total_pct),
                    new_total_pct: n.map(|h| h.total_pct),
                });
                metrics.push(change);
            }
        }
        (None, None) => {}
        _ => notes.push("only one audit has a CPU profile: hotspots not compared".into()),
    }

    // Benchmarks: whole confidence intervals.
    let old_bench: BTreeMap<&str, _> = old.benchmarks.iter().map(|b| (b.id.as_str(), b)).collect();
    let new_bench: BTreeMap<&str, _> = new.benchmarks.iter().map(|b| (b.id.as_str(), b)).collect();
    let ids: BTreeSet<&str> = old_bench.keys().chain(new_bench.keys()).copied().collect();
    for id in ids {
        let name = format!("bench:{id}");
        let limit = thresholds.limit_for(&name, true);
        let change = match (old_bench.get(id), new_bench.get(id)) {
            (Some(o), Some(n)) => {
                let t = match limit {
                    Some(Limit::Pct(p)) => p / 100.0,
                    _ => 0.0,
                };
                let worse = n.lower_ns > o.upper_ns * (1.0 + t);
                let better = n.upper_ns * (1.0 + t) < o.lower_ns;
                let mut c = judge(name, Group::Bench, "ns", Some(o.mean_ns), Some(n.mean_ns), Direction::LowerIsBetter, limit, worse || better);
                c.noise = Some(format!(
                    "95% CI {} → {}",
                    interval(o.lower_ns, o.upper_ns),
                    interval(n.lower_ns, n.upper_ns)
                ));
                c
            }
            (o, n) => {
                let mut c = judge(name, Group::Bench, "ns", o.map(|b| b.mean_ns), n.map(|b| b.mean_ns), Direction::LowerIsBetter, limit, false);
                c.verdict = if o.is_some() { Verdict::Gone } else { Verdict::Appeared };
                c
            }
        };
        metrics.push(change);
    }

    // Generic sections: compared where both sides have the number; gated
    // only when a --max-regression key names them (higher = worse).
    let mut section_changes: Vec<MetricChange> = old
        .sections
        .iter()
        .filter_map(|(name, &o)| {
            let n = *new.sections.get(name)?;
            let limit = thresholds.limit_for(name, false);
            Some(judge_exact(name.clone(), Group::Section, "", Some(o), Some(n), Direction::LowerIsBetter, limit))
        })
        .filter(|c| c.limit.is_some() || c.change_pct.is_some_and(|p| p != 0.0))
        .collect();
    section_changes.sort_by(|a, b| {
        let key = |c: &MetricChange| c.change_pct.map_or(f64::INFINITY, f64::abs);
        key(b).total_cmp(&key(a)).then(a.name.cmp(&b.name))
    });
    metrics.extend(section_changes);
    for section in super::facts::GENERIC_SECTIONS {
        let prefix = format!("{section}.");
        let has = |f: &AuditFacts| f.sections.keys().any(|k| k.starts_with(&prefix));
        if has(old) != has(new) {
            notes.push(format!("only one audit has a `{section}` section: not compared"));
        }
    }

    AuditDiff {
        old: side(old),
        new: side(new),
        thresholds: thresholds.describe(),
        cpu_unit: cpu_unit.to_string(),
        metrics,
        findings: diff_findings(&old.findings, &new.findings),
        notes,
    }
}

fn side(f: &AuditFacts) -> Side {
    Side { service: f.service.clone(), started_at: f.started_at.clone(), duration_s: f.duration_s }
}

fn baseline_unit(field: &str) -> &'static str {
    match field {
        "rps" => "req/s",
        f if f.ends_with("_ms") => "ms",
        f if f.ends_with("_bytes") => "bytes",
        _ => "",
    }
}

fn interval(lo: f64, hi: f64) -> String {
    format!("{}..{}", super::markdown::format_ns(lo), super::markdown::format_ns(hi))
}

/// RSS changes smaller than this are within noise (see the baseline
/// comparison in [`compare`]).
const RSS_NOISE_BYTES: f64 = 1024.0 * 1024.0;

/// A metric without a noise estimate: the threshold alone decides.
fn judge_exact(
    name: String,
    group: Group,
    unit: &str,
    old: Option<f64>,
    new: Option<f64>,
    direction: Direction,
    limit: Option<Limit>,
) -> MetricChange {
    judge(name, group, unit, old, new, direction, limit, true)
}

#[allow(clippy::too_many_arguments)]
fn judge(
    name: String,
    group: Group,
    unit: &str,
    old: Option<f64>,
    new: Option<f64>,
    direction: Direction,
    limit: Option<Limit>,
    significant: bool,
) -> MetricChange {
    let change_pct = match (old, new) {
        (Some(o), Some(n)) if o != 0.0 => Some((n - o) / o.abs() * 100.0),
        (Some(o), Some(n)) if o == n => Some(0.0),
        _ => None,
    };
    // How many times worse NEW is (new/old for lower-is-better, old/new
    // for higher-is-better): past 1 + t regresses, below 1 / (1 + t)
    // improves. Ratios keep the two directions symmetric: 10 -> 30 is 200%
    // worse, and 30 -> 10 is 200% better (not "-67%", which no threshold
    // above 100% could ever reach).
    let worse_ratio = match (old, new) {
        (Some(o), Some(n)) => {
            let (num, den) = if direction == Direction::LowerIsBetter { (n, o) } else { (o, n) };
            if den != 0.0 {
                Some(num / den)
            } else if num == 0.0 {
                Some(1.0)
            } else {
                Some(f64::INFINITY)
            }
        }
        _ => None,
    };
    let verdict = match (limit, worse_ratio) {
        (None, _) | (Some(Limit::Off), _) => Verdict::NotGated,
        (_, None) => if old.is_some() { Verdict::Gone } else { Verdict::Appeared },
        (Some(Limit::Pct(t)), Some(r)) if r > 1.0 + t / 100.0 => if significant { Verdict::Regressed } else { Verdict::WithinNoise },
        (Some(Limit::Pct(t)), Some(r)) if r * (1.0 + t / 100.0) < 1.0 => if significant { Verdict::Improved } else { Verdict::WithinNoise },
        _ => Verdict::Unchanged,
    };
    MetricChange {
        name,
        group,
        unit: unit.to_string(),
        old,
        new,
        change_pct,
        limit: limit.map(Limit::describe),
        verdict,
        noise: None,
        shares: None,
    }
}

fn diff_findings(old: &[FindingFacts], new: &[FindingFacts]) -> FindingsDiff {
    let old_by: BTreeMap<_, _> = old.iter().map(|f| (f.key(), f)).collect();
    let new_by: BTreeMap<_, _> = new.iter().map(|f| (f.key(), f)).collect();
    let change = |f: &FindingFacts, o: Option<&FindingFacts>, n: Option<&FindingFacts>| FindingChange {
        rule: f.rule.clone(),
        function: f.function.clone(),
        title: f.title.clone(),
        location: f.location.clone(),
        old_severity: o.map(|f| f.severity.clone()),
        new_severity: n.map(|f| f.severity.clone()),
    };
    let mut diff = FindingsDiff::default();
    for f in old {
        match new_by.get(&f.key()) {
            None => diff.fixed.push(change(f, Some(f), None)),
            Some(n) => diff.still_open.push(change(n, Some(f), Some(n))),
        }
    }
    for f in new.iter().filter(|f| !old_by.contains_key(&f.key())) {
        diff.new.push(change(f, None, Some(f)));
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::facts::{BenchFacts, CpuFacts};

    fn facts(duration_s: f64, hotspots: &[(&str, u64)], findings: &[(&str, &str)]) -> AuditFacts {
        let total: u64 = hotspots.iter().map(|h| h.1).sum();
        AuditFacts {
            service: "svc".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_s,
            rerun_command: String::new(),
            baseline: BTreeMap::new(),
            cpu: Some(CpuFacts {
                frequency_hz: 100.0,
                total_samples: total,
                hotspots: hotspots
                    .iter()
                    .map(|(f, n)| HotspotFacts {
                        function: f.to_string(),
                        self_samples: *n,
                        self_pct: *n as f64 * 100.0 / total as f64,
                        total_pct: *n as f64 * 100.0 / total as f64,
                    })
                    .collect(),
            }),
            benchmarks: Vec::new(),
            sections: BTreeMap::new(),
            findings: findings
                .iter()
                .map(|(rule, function)| FindingFacts {
                    rule: rule.to_string(),
                    function: function.to_string(),
                    severity: "P1".into(),
                    title: format!("{function} is hot"),
                    location: None,
                })
                .collect(),
        }
    }

    fn verdict<'a>(d: &'a AuditDiff, name: &str) -> &'a MetricChange {
        d.metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} in {:?}", d.metrics))
    }

    #[test]
    fn hotspot_cpu_time_that_grows_past_threshold_and_noise_regresses() {
        let old = facts(10.0, &[("a::hot", 100), ("a::cold", 100)], &[]);
        let new = facts(10.0, &[("a::hot", 400), ("a::cold", 104)], &[]);
        let d = compare(&old, &new, &Thresholds::default());
        let hot = verdict(&d, "cpu.hotspot:a::hot");
        assert_eq!(hot.verdict, Verdict::Regressed);
        assert_eq!(hot.old, Some(100.0)); // 100 samples at 100 Hz over 10 s = 100 ms/s
        assert_eq!(hot.change_pct, Some(300.0));
        // +4% is within the 5% threshold.
        assert_eq!(verdict(&d, "cpu.hotspot:a::cold").verdict, Verdict::Unchanged);
        assert_eq!(d.regressions().count(), 1);
    }

    #[test]
    fn improvements_are_ratios_like_regressions() {
        let old = facts(10.0, &[("a::f", 900)], &[]);
        let new = facts(10.0, &[("a::f", 100)], &[]);
        // 9x less CPU is an improvement even with a 200% threshold.
        let t = Thresholds::parse(&["200%".into()]).unwrap();
        assert_eq!(verdict(&compare(&old, &new, &t), "cpu.hotspot:a::f").verdict, Verdict::Improved);
        assert_eq!(verdict(&compare(&new, &old, &t), "cpu.hotspot:a::f").verdict, Verdict::Regressed);
        let t = Thresholds::parse(&["900%".into()]).unwrap();
        assert_eq!(verdict(&compare(&old, &new, &t), "cpu.hotspot:a::f").verdict, Verdict::Unchanged);
    }

    #[test]
    fn a_small_count_change_past_threshold_is_within_noise() {
        let old = facts(10.0, &[("a::f", 10)], &[]);
        let new = facts(10.0, &[("a::f", 14)], &[]);
        let d = compare(&old, &new, &Thresholds::default());
        assert_eq!(verdict(&d, "cpu.hotspot:a::f").verdict, Verdict::WithinNoise);
    }

    #[test]
    fn shares_do_not_gate_a_function_that_only_got_a_bigger_share() {
        // hot got 10x cheaper: cold's share rises from 10% to ~50%, its CPU time does not.
        let old = facts(10.0, &[("a::hot", 900), ("a::cold", 100)], &[("cpu-hotspot", "a::hot")]);
        let new = facts(10.0, &[("a::cold", 98), ("a::hot", 90)], &[("cpu-hotspot", "a::cold")]);
        let d = compare(&old, &new, &Thresholds::default());
        assert_eq!(d.regressions().count(), 0, "{:?}", d.metrics);
        assert_eq!(verdict(&d, "cpu.hotspot:a::hot").verdict, Verdict::Improved);
        assert_eq!(d.findings.fixed.len(), 1);
        assert_eq!(d.findings.fixed[0].function, "a::hot");
        assert_eq!(d.findings.new[0].function, "a::cold");
    }

    #[test]
    fn a_function_new_to_the_table_is_compared_with_the_old_tables_last_row() {
        let old = facts(10.0, &[("a::x", 500), ("a::y", 50)], &[]);
        let new = facts(10.0, &[("a::x", 500), ("a::y", 50), ("a::z", 52)], &[]);
        let d = compare(&old, &new, &Thresholds::default());
        let z = verdict(&d, "cpu.hotspot:a::z");
        assert_eq!(z.verdict, Verdict::Appeared, "50 -> 52 is no regression: {z:?}");
        assert_eq!(z.old, None);
    }

    #[test]
    fn cpu_is_per_request_when_both_sides_measured_throughput() {
        let mut old = facts(10.0, &[("a::f", 1000)], &[]);
        let mut new = facts(10.0, &[("a::f", 2000)], &[]);
        old.baseline.insert("rps".into(), 100.0);
        new.baseline.insert("rps".into(), 200.0);
        let d = compare(&old, &new, &Thresholds::default());
        assert_eq!(d.cpu_unit, "CPU ms/request");
        assert_eq!(verdict(&d, "cpu.hotspot:a::f").verdict, Verdict::Unchanged);
        // Twice the throughput is an improvement of rps.
        assert_eq!(verdict(&d, "baseline.rps").verdict, Verdict::Improved);
    }

    #[test]
    fn a_small_process_whose_rss_moves_by_a_few_pages_has_not_regressed() {
        let mut old = facts(10.0, &[], &[]);
        let mut new = facts(10.0, &[], &[]);
        old.baseline.insert("rss_bytes".into(), 2_048_000.0);
        new.baseline.insert("rss_bytes".into(), 2_166_784.0);
        let d = compare(&old, &new, &Thresholds::default());
        let rss = verdict(&d, "baseline.rss_bytes");
        assert_eq!(rss.verdict, Verdict::WithinNoise, "{rss:?}");
        assert!(rss.noise.as_deref().unwrap().contains("floor of RSS noise"), "{rss:?}");
        // 2 MiB more is a change, at any size.
        new.baseline.insert("rss_bytes".into(), 2_048_000.0 + 2.0 * 1024.0 * 1024.0);
        assert_eq!(verdict(&compare(&old, &new, &Thresholds::default()), "baseline.rss_bytes").verdict, Verdict::Regressed);
    }

    #[test]
    fn baseline_latency_and_errors_regress_by_threshold_alone() {
        let mut old = facts(10.0, &[], &[]);
        let mut new = facts(10.0, &[], &[]);
        old.baseline.extend([("p99_ms".into(), 10.0), ("errors".into(), 0.0), ("p50_ms".into(), 2.0)]);
        new.baseline.extend([("p99_ms".into(), 10.8), ("errors".into(), 3.0), ("p50_ms".into(), 2.0)]);
        let t = Thresholds::parse(&["p99_ms=10%".into()]).unwrap();
        let d = compare(&old, &new, &t);
        assert_eq!(verdict(&d, "baseline.p99_ms").verdict, Verdict::Unchanged);
        assert_eq!(verdict(&d, "baseline.errors").verdict, Verdict::Regressed);
        assert_eq!(verdict(&d, "baseline.p50_ms").verdict, Verdict::Unchanged);
        let d = compare(&old, &new, &Thresholds::default());
        assert_eq!(verdict(&d, "baseline.p99_ms").verdict, Verdict::Regressed);
    }

    #[test]
    fn a_benchmark_regresses_only_when_the_whole_interval_is_past_the_threshold() {
        let bench = |lo: f64, mean: f64, hi: f64| BenchFacts { id: "mix".into(), mean_ns: mean, lower_ns: lo, upper_ns: hi };
        let mut old = facts(1.0, &[], &[]);
        let mut new = facts(1.0, &[], &[]);
        old.benchmarks = vec![bench(95.0, 100.0, 105.0)];
        new.benchmarks = vec![bench(108.0, 112.0, 116.0)]; // mean +12%, but 108 < 105 * 1.05
        assert_eq!(verdict(&compare(&old, &new, &Thresholds::default()), "bench:mix").verdict, Verdict::WithinNoise);
        new.benchmarks = vec![bench(111.0, 115.0, 119.0)];
        assert_eq!(verdict(&compare(&old, &new, &Thresholds::default()), "bench:mix").verdict, Verdict::Regressed);
    }

    #[test]
    fn generic_sections_are_gated_only_when_named() {
        let mut old = facts(1.0, &[], &[]);
        let mut new = facts(1.0, &[], &[]);
        old.sections.insert("memory.peak_bytes".into(), 100.0);
        new.sections.insert("memory.peak_bytes".into(), 200.0);
        assert_eq!(verdict(&compare(&old, &new, &Thresholds::default()), "memory.peak_bytes").verdict, Verdict::NotGated);
        let t = Thresholds::parse(&["memory=50%".into()]).unwrap();
        assert_eq!(verdict(&compare(&old, &new, &t), "memory.peak_bytes").verdict, Verdict::Regressed);
    }

    #[test]
    fn missing_baseline_is_noted_not_failed() {
        let d = compare(&facts(1.0, &[], &[]), &facts(1.0, &[], &[]), &Thresholds::default());
        assert!(d.notes[0].contains("no `baseline`"), "{:?}", d.notes);
    }
}
