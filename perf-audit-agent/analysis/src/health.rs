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
