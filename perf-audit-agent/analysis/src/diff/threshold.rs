//! `--max-regression`: how much worse a metric may get before `diff` fails.
//!
//! One option, repeated, so that CI configs read like a table:
//!
//! ```text
//! --max-regression 5%                        every gated metric (the default is 5%)
//! --max-regression p99_ms=10%                one metric (`p99_ms` = `baseline.p99_ms`)
//! --max-regression cpu.hotspot=20%           a family: every CPU hotspot
//! --max-regression 'cpu.hotspot:app::handler=2%'   one hotspot
//! --max-regression memory=off                never gate on this family
//! --max-regression off                       gate only on the metrics named
//! ```
//!
//! The most specific key wins (a whole metric name over a family prefix over
//! the global value). Families that the agent cannot judge by direction
//! (numbers in the `memory`, `async` and `database` sections) are shown but
//! only gated when a key names them.

use crate::{
    bench::markdown::trim_float,
    error::{Error, ErrorKind, Result},
};

/// The global threshold when none is given.
pub const DEFAULT_MAX_REGRESSION_PCT: f64 = 5.0;

/// Short keys accepted for the baseline metrics.
const BASELINE_FIELDS: &[&str] = &["rps", "p50_ms", "p99_ms", "p999_ms", "errors", "rss_bytes"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Fail when the metric gets worse by more than this many percent.
    Pct(f64),
    /// Never fail on it.
    Off,
}

impl Limit {
    pub fn describe(self) -> String {
        match self {
            Limit::Pct(p) => format!("{}%", trim_float(p)),
            Limit::Off => "off".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    global: Limit,
    /// (metric name or family prefix, limit), as given.
    keyed: Vec<(String, Limit)>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { global: Limit::Pct(DEFAULT_MAX_REGRESSION_PCT), keyed: Vec::new() }
    }
}

impl Thresholds {
    /// Parses every `--max-regression` value; later values override earlier
    /// ones for the same key.
    pub fn parse(specs: &[String]) -> Result<Thresholds> {
        let mut thresholds = Thresholds::default();
        for spec in specs {
            match spec.split_once('=') {
                None => thresholds.global = parse_limit(spec, "--max-regression")?,
                Some((key, value)) => {
                    let key = normalize_key(key.trim());
                    if key.is_empty() {
                        return Err(usage(format!(
                            "--max-regression {spec}: the metric before `=` is empty (e.g. p99_ms=10%)"
                        )));
                    }
                    let limit = parse_limit(value, &format!("--max-regression {key}"))?;
                    thresholds.keyed.retain(|(k, _)| *k != key);
                    thresholds.keyed.push((key, limit));
                }
            }
        }
        Ok(thresholds)
    }

    /// The limit for `metric`, or `None` when it is not gated: metrics of
    /// families without a known direction are gated only by an explicit key.
    pub fn limit_for(&self, metric: &str, gated_by_default: bool) -> Option<Limit> {
        let best = self
            .keyed
            .iter()
            .filter(|(key, _)| key_covers(key, metric))
            .max_by_key(|(key, _)| key.len());
        match best {
            Some((_, limit)) => Some(*limit),
            None if gated_by_default => Some(self.global),
            None => None,
        }
    }

    /// The keys as given, for diff.md's header.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} by default", self.global.describe())];
        for (key, limit) in &self.keyed {
            parts.push(format!("`{key}` {}", limit.describe()));
        }
        parts.join(", ")
    }
}

/// `key` names `metric` itself or a family it belongs to (`cpu.hotspot`
/// covers `cpu.hotspot:f`, `baseline` covers `baseline.p99_ms`).
fn key_covers(key: &str, metric: &str) -> bool {
    metric == key
        || metric
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(['.', ':', '[']))
}

fn normalize_key(key: &str) -> String {
    if BASELINE_FIELDS.contains(&key) { format!("baseline.{key}") } else { key.to_string() }
}

fn parse_limit(value: &str, what: &str) -> Result<Limit> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(Limit::Off);
    }
    let number = value.strip_suffix('%').unwrap_or(value).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(Limit::Pct(p)),
        _ => Err(usage(format!(
            "{what}: `{value}` is not a percentage: use e.g. 5% (or `off` after a metric name)"
        ))),
    }
}

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(specs: &[&str]) -> Result<Thresholds> {
        Thresholds::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn default_is_five_percent_for_gated_metrics_only() {
        let t = parse(&[]).unwrap();
        assert_eq!(t.limit_for("baseline.p99_ms", true), Some(Limit::Pct(5.0)));
        assert_eq!(t.limit_for("memory.peak_bytes", false), None);
    }

    #[test]
    fn most_specific_key_wins() {
        let t = parse(&["3%", "cpu.hotspot=20%", "cpu.hotspot:app::handler=1.5%", "p99_ms=10"]).unwrap();
        assert_eq!(t.limit_for("cpu.hotspot:app::handler", true), Some(Limit::Pct(1.5)));
        assert_eq!(t.limit_for("cpu.hotspot:app::other", true), Some(Limit::Pct(20.0)));
        assert_eq!(t.limit_for("baseline.p99_ms", true), Some(Limit::Pct(10.0)));
        assert_eq!(t.limit_for("baseline.p50_ms", true), Some(Limit::Pct(3.0)));
        // A prefix only counts at a name boundary.
        assert_eq!(t.limit_for("cpu.hotspotter", true), Some(Limit::Pct(3.0)));
    }

    #[test]
    fn explicit_keys_gate_families_without_a_direction_and_off_disables() {
        let t = parse(&["memory=10%", "bench=off"]).unwrap();
        assert_eq!(t.limit_for("memory.peak_bytes", false), Some(Limit::Pct(10.0)));
        assert_eq!(t.limit_for("bench:mix/1000_rounds", true), Some(Limit::Off));
        assert_eq!(t.describe(), "5% by default, `memory` 10%, `bench` off");
    }

    #[test]
    fn bad_values_are_usage_errors_that_show_the_syntax() {
        let e = parse(&["five"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.message.contains("e.g. 5%"), "{}", e.message);
        assert!(parse(&["=5%"]).is_err());
        assert!(parse(&["p99_ms=-1%"]).is_err());
        assert_eq!(parse(&["off"]).unwrap().limit_for("baseline.rps", true), Some(Limit::Off));
    }
}
