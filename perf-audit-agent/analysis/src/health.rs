//! The health guard: did the service degrade while it was audited?
//!
//! When the audit drives load, the same load runs during the audit
//! ([`AuditHealth::during`]) and for a few seconds once every probe is
//! detached ([`AuditHealth::unprobed`]); the two are compared here. The
//! unprobed sample comes after the audit, not before it: a service warmed
//! by it would have prepared its statements before the database profile
//! could see them.
//! A degraded audit is said at the top of the report, its findings are
//! marked as taken on a degraded service, and `alerts.yml` takes its
//! thresholds from the healthy sample instead.
//!
//! What counts as degraded, and why (each a stall, not overhead):
//! - **p99 more than doubled and up by at least 10 ms**: the audit's own
//!   budget is a p99 within 1.1x; a few seconds of load give a p99 from a
//!   handful of requests, so only a change far past that noise is called a
//!   stall (smaller changes are shown as the ratio, not judged);
//! - **throughput below 90% of the healthy sample's**: the load is
//!   open-loop at the same rate, so a service that keeps up answers the
//!   same number of requests per second;
//! - **timeouts or errors up by at least 1% of the requests** beyond the
//!   healthy sample's share.

use serde::{Deserialize, Serialize};

use crate::load::LoadResult;

/// p99 ratio past which (and [`P99_MIN_INCREASE_MS`]) the audit stalled the service.
pub const P99_RATIO: f64 = 2.0;
pub const P99_MIN_INCREASE_MS: f64 = 10.0;
/// Achieved throughput below this share of the healthy sample's.
pub const RPS_RATIO: f64 = 0.9;
/// Timeouts or errors beyond the healthy share, as a share of requests.
pub const FAILURE_SHARE: f64 = 0.01;

/// One load sample of the service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthSample {
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
    pub timeouts: u64,
}

impl HealthSample {
    pub fn of(load: &LoadResult) -> HealthSample {
        HealthSample {
            seconds: load.window_s,
            rps: load.achieved_rps,
            p50_ms: load.latency.p50_ms,
            p99_ms: load.latency.p99_ms,
            requests: load.sent,
            errors: load.errors(),
            timeouts: load.timeouts,
        }
    }

    fn share(&self, n: u64) -> f64 {
        if self.requests == 0 { 0.0 } else { n as f64 / self.requests as f64 }
    }
}

/// report.json `health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditHealth {
    /// The same load once every probe was detached.
    pub unprobed: HealthSample,
    pub during: HealthSample,
    /// p99 during / before.
    pub p99_ratio: f64,
    /// Achieved requests/s during / before.
    pub rps_ratio: f64,
    pub degraded: bool,
    /// Why it is called degraded (empty when it is not).
    pub reasons: Vec<String>,
    /// The rule, as the report states it.
    pub rule: String,
    /// What the audit's own measurements match (periodic spikes aligned
    /// with a collector's recording periods, a collector's CPU share):
    /// computed whether or not the service degraded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<HealthCause>,
}

/// A collector's recording periods (e.g. the memory profile's windows:
/// probes attached), seconds since the load started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorPeriods {
    pub collector: String,
    pub periods: Vec<(f64, f64)>,
}

/// One cause the health guard names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCause {
    pub collector: String,
    /// `periodic-spikes` or `cpu-share`.
    pub kind: String,
    pub evidence: String,
}

/// A period's cost can outlast it (probe links close ~0.3-1.4 s after a
/// window): the seconds this long after a period count as inside it.
pub const PERIOD_TAIL_S: f64 = 1.0;
/// Periodic spikes: the median p99 of the 1 s buckets inside a collector's
/// periods at least this many times the others' median, and up by at
/// least [`SPIKE_MIN_INCREASE_MS`].
pub const SPIKE_RATIO: f64 = 2.0;
pub const SPIKE_MIN_INCREASE_MS: f64 = 5.0;
/// A collector costing at least this share of the target's CPU is named.
pub const CPU_SHARE_PCT: f64 = 10.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// What the audit's own measurements say about its cost to the service:
/// per collector with recording periods, the p99 of each second of load
/// inside its periods (or within [`PERIOD_TAIL_S`] after one) against the
/// seconds outside them; per collector, its measured share of the
/// target's CPU (`overhead.collectors`). Most telling first.
/// One collector's measured cost (the overhead meter's figures; the
/// health guard stays below the report, which it must not import).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectorShare {
    pub collector: String,
    pub target_cpu_pct: f64,
    pub cpu_ms_per_s: f64,
}

pub fn causes(during: &LoadResult, periods: &[CollectorPeriods], collectors: &[CollectorShare]) -> Vec<HealthCause> {
    let mut out = periodic_spikes(&during.series.points, during.series.interval_s, periods);
    let mut costly: Vec<_> = collectors.iter().filter(|c| c.target_cpu_pct >= CPU_SHARE_PCT).collect();
    costly.sort_by(|a, b| b.target_cpu_pct.total_cmp(&a.target_cpu_pct));
    for c in costly {
        out.push(HealthCause {
            collector: c.collector.clone(),
            kind: "cpu-share".into(),
            evidence: format!("{} cost {:.1}% of the target's CPU ({:.1} ms/s, measured in the kernel)", c.collector, c.target_cpu_pct, c.cpu_ms_per_s),
        });
    }
    out
}

/// The periodic-spike half of [`causes`], over latency buckets of `width`
/// seconds (the engine runs it live, on the seconds measured so far).
pub fn periodic_spikes(points: &[crate::load::LatencyPoint], width: f64, periods: &[CollectorPeriods]) -> Vec<HealthCause> {
    let mut out = Vec::new();
    let width = width.max(1e-3);
    for c in periods.iter().filter(|c| !c.periods.is_empty()) {
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        for p in points.iter().filter(|p| p.requests > 0) {
            let (a, b) = (p.t_s, p.t_s + width);
            let hit = c.periods.iter().any(|(s, e)| a < e + PERIOD_TAIL_S && b > *s);
            if hit { inside.push(p.p99_ms) } else { outside.push(p.p99_ms) }
        }
        if inside.is_empty() || outside.len() < 2 {
            continue;
        }
        let (n_in, n_out) = (inside.len(), outside.len());
        let (m_in, m_out) = (median(inside), median(outside));
        if m_in >= m_out * SPIKE_RATIO && m_in - m_out >= SPIKE_MIN_INCREASE_MS {
            out.push(HealthCause {
                collector: c.collector.clone(),
                kind: "periodic-spikes".into(),
                evidence: format!(
                    "p99 spikes align with the {}'s {} recording periods: median p99 {m_in:.1} ms in the {n_in} seconds of load during or within {PERIOD_TAIL_S:.0} s after one, {m_out:.1} ms in the other {n_out} ({:.1}x)",
                    c.collector,
                    c.periods.len(),
                    m_in / m_out.max(1e-9)
                ),
            });
        }
    }
    out
}

/// Compares the unprobed sample with the audit's load.
pub fn assess(unprobed: &LoadResult, during: &LoadResult) -> AuditHealth {
    let (b, d) = (HealthSample::of(unprobed), HealthSample::of(during));
    let ratio = |x: f64, y: f64| if y > 0.0 { round2(x / y) } else { 0.0 };
    let mut reasons = Vec::new();
    if d.p99_ms > b.p99_ms * P99_RATIO && d.p99_ms - b.p99_ms >= P99_MIN_INCREASE_MS {
        reasons.push(format!("p99 latency went from {:.1} ms to {:.1} ms ({:.1}x)", b.p99_ms, d.p99_ms, ratio(d.p99_ms, b.p99_ms)));
    }
    if b.rps > 0.0 && d.rps < b.rps * RPS_RATIO {
        reasons.push(format!("throughput fell from {:.1} to {:.1} requests/s", b.rps, d.rps));
    }
    if d.share(d.timeouts) - b.share(b.timeouts) >= FAILURE_SHARE {
        reasons.push(format!("{} of {} requests timed out ({} of {} without probes)", d.timeouts, d.requests, b.timeouts, b.requests));
    } else if d.share(d.errors) - b.share(b.errors) >= FAILURE_SHARE {
        reasons.push(format!("{} of {} requests failed ({} of {} without probes)", d.errors, d.requests, b.errors, b.requests));
    }
    AuditHealth {
        p99_ratio: ratio(d.p99_ms, b.p99_ms),
        rps_ratio: ratio(d.rps, b.rps),
        degraded: !reasons.is_empty(),
        reasons,
        rule: format!(
            "degraded when p99 more than {P99_RATIO:.0}x and at least +{P99_MIN_INCREASE_MS:.0} ms, throughput below {:.0}%, or timeouts/errors up by {:.0}% of requests, against {:.1} s of the same load after the probes were detached",
            RPS_RATIO * 100.0,
            FAILURE_SHARE * 100.0,
            b.seconds
        ),
        unprobed: b,
        during: d,
        causes: Vec::new(),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::LatencySummary;

    fn load(rps: f64, p99_ms: f64, sent: u64, timeouts: u64) -> LoadResult {
        LoadResult {
            target_rps: 100,
            window_s: 3.0,
            achieved_rps: rps,
            sent,
            completed: sent - timeouts,
            ok: sent - timeouts,
            transport_errors: timeouts,
            timeouts,
            latency: LatencySummary { count: sent, p50_ms: p99_ms / 4.0, p99_ms, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn a_stall_is_degraded_with_its_reasons() {
        // The stall the issue measured: p99 12 ms -> 28 s, 11 of 30 rps, timeouts.
        let h = assess(&load(30.0, 12.0, 90, 0), &load(11.0, 28_300.0, 900, 71));
        assert!(h.degraded);
        assert_eq!(h.reasons.len(), 3, "{:?}", h.reasons);
        assert!(h.reasons[0].contains("12.0 ms to 28300.0 ms"), "{:?}", h.reasons);
        assert!(h.rule.contains("3.0 s of the same load"));
    }

    #[test]
    fn overhead_within_noise_is_not_degraded() {
        // The well-behaved twin: p99 1.3x and +4 ms, throughput kept.
        let h = assess(&load(100.0, 12.0, 300, 0), &load(99.5, 16.0, 3000, 0));
        assert!(!h.degraded, "{:?}", h.reasons);
        assert_eq!(h.p99_ratio, 1.33);
        // A fast service whose p99 doubles by a few ms is not a stall either.
        assert!(!assess(&load(100.0, 1.0, 300, 0), &load(100.0, 3.0, 3000, 0)).degraded);
    }

    #[test]
    fn errors_beyond_the_healthy_share_degrade() {
        let mut during = load(100.0, 12.0, 3000, 0);
        during.status_errors = 60;
        let h = assess(&load(100.0, 12.0, 300, 0), &during);
        assert!(h.degraded && h.reasons[0].contains("60 of 3000 requests failed"), "{:?}", h.reasons);
    }

    #[test]
    fn a_degraded_audit_takes_its_alert_threshold_from_the_healthy_sample() {
        let mut report = crate::report::Report::default();
        report.baseline.p99_ms = Some(28_300.0);
        report.health = Some(assess(&load(30.0, 12.0, 90, 0), &load(11.0, 28_300.0, 900, 71)));
        let t = crate::report::alerts::thresholds(&report);
        assert_eq!(t.p99_seconds, 0.062, "{}", t.p99_reason);
        assert!(t.p99_reason.contains("after the probes were detached"));
        let md = crate::report::markdown::render(&report);
        assert!(md.contains("The service degraded during the audit"), "{md}");
        // Healthy: the audit's own baseline, as before.
        report.health = Some(assess(&load(30.0, 12.0, 90, 0), &load(30.0, 13.0, 900, 0)));
        assert_eq!(crate::report::alerts::thresholds(&report).p99_seconds, 56.6);
        assert!(!crate::report::markdown::render(&report).contains("degraded during"));
    }
}

#[cfg(test)]
mod cause_tests {
    use super::*;
    use crate::load::{LatencyPoint, LatencySeries};

    fn load(p99s: &[f64]) -> LoadResult {
        let points = p99s.iter().enumerate().map(|(i, p99)| LatencyPoint { t_s: i as f64, requests: 50, p99_ms: *p99, ..Default::default() }).collect();
        LoadResult { series: LatencySeries { interval_s: 1.0, points }, ..Default::default() }
    }

    #[test]
    fn spikes_in_the_seconds_of_a_collectors_windows_name_it_and_flat_latency_does_not() {
        let windows = [CollectorPeriods { collector: "memory profile".into(), periods: vec![(0.0, 0.35), (5.0, 5.1)] }];
        // Spikes in seconds 0-1 and 5-6: the windows and their tails.
        let spiky = load(&[40.0, 35.0, 8.0, 7.0, 9.0, 45.0, 38.0, 8.0, 7.5, 8.0]);
        let c = causes(&spiky, &windows, &[]);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].collector.as_str(), c[0].kind.as_str()), ("memory profile", "periodic-spikes"));
        assert!(c[0].evidence.contains("2 recording periods") && c[0].evidence.contains("in the 4 seconds"), "{}", c[0].evidence);
        // The twin: the same windows over flat latency.
        let flat = load(&[8.0, 9.0, 8.0, 7.0, 9.0, 8.5, 8.0, 8.0, 7.5, 8.0]);
        assert!(causes(&flat, &windows, &[]).is_empty());
        // Spikes elsewhere are not the windows'.
        let elsewhere = load(&[8.0, 9.0, 40.0, 7.0, 9.0, 8.5, 8.0, 45.0, 7.5, 8.0]);
        assert!(causes(&elsewhere, &windows, &[]).is_empty());
        // A costly collector is named by its share.
        let costs = [CollectorShare { collector: "database wire".into(), cpu_ms_per_s: 30.0, target_cpu_pct: 14.0 }];
        let c = causes(&flat, &windows, &costs);
        assert_eq!((c.len(), c[0].kind.as_str()), (1, "cpu-share"), "{c:?}");
    }
}
