//! Criterion's result files, read into benchmark rows. Pure: file contents
//! in, rows out (the directory walk is in [`super::read_results`]).
//!
//! For each benchmark criterion keeps `<id>/new/estimates.json` (the last
//! run: point estimates and 95% bootstrap confidence intervals, in ns) and,
//! from the second run on, `<id>/change/estimates.json` (the relative change
//! against the previous run, as a fraction: 0.05 = +5%). `new/benchmark.json`
//! holds the benchmark's full id (`group/function/parameter`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ConfidenceInterval {
    pub lower_bound: f64,
    pub upper_bound: f64,
    pub confidence_level: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Estimate {
    pub point_estimate: f64,
    pub confidence_interval: ConfidenceInterval,
}

/// `new/estimates.json` and `change/estimates.json` both have a `mean`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Estimates {
    pub mean: Estimate,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BenchmarkId {
    pub full_id: String,
}

/// What a benchmark's change means, given the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BenchVerdict {
    /// The whole confidence interval of the change is above +threshold.
    Regressed,
    /// The whole confidence interval of the change is below -threshold.
    Improved,
    /// The estimate is past the threshold, the interval is not.
    WithinNoise,
    /// Within the threshold.
    #[default]
    NoChange,
    /// No previous run to compare with.
    FirstRun,
}

impl BenchVerdict {
    pub fn describe(self) -> &'static str {
        match self {
            BenchVerdict::Regressed => "regressed",
            BenchVerdict::Improved => "improved",
            BenchVerdict::WithinNoise => "within noise",
            BenchVerdict::NoChange => "no change",
            BenchVerdict::FirstRun => "first run",
        }
    }
}

/// One row of the benchmark table in report.json (`benchmarks`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct BenchmarkRow {
    pub id: String,
    pub mean_ns: f64,
    pub mean_lower_ns: f64,
    pub mean_upper_ns: f64,
    /// Change of the mean against the previous run, percent (criterion's
    /// `change/estimates.json`); absent on a first run.
    pub change_pct: Option<f64>,
    pub change_lower_pct: Option<f64>,
    pub change_upper_pct: Option<f64>,
    pub max_regression_pct: f64,
    pub verdict: BenchVerdict,
}

/// The row of one benchmark from its files' contents.
pub fn row(
    fallback_id: &str,
    benchmark_json: Option<&str>,
    new_estimates_json: &str,
    change_estimates_json: Option<&str>,
    max_regression_pct: f64,
) -> Result<BenchmarkRow, String> {
    let id = benchmark_json
        .and_then(|text| serde_json::from_str::<BenchmarkId>(text).ok())
        .map(|b| b.full_id)
        .unwrap_or_else(|| fallback_id.to_string());
    let new: Estimates = serde_json::from_str(new_estimates_json)
        .map_err(|e| format!("{id}: new/estimates.json is not criterion's format: {e}"))?;
    let change: Option<Estimates> = change_estimates_json
        .map(|text| {
            serde_json::from_str(text).map_err(|e| format!("{id}: change/estimates.json is not criterion's format: {e}"))
        })
        .transpose()?;
    let pct = |x: f64| x * 100.0;
    let verdict = match change {
        None => BenchVerdict::FirstRun,
        Some(c) => verdict(c.mean, max_regression_pct / 100.0),
    };
    Ok(BenchmarkRow {
        id,
        mean_ns: new.mean.point_estimate,
        mean_lower_ns: new.mean.confidence_interval.lower_bound,
        mean_upper_ns: new.mean.confidence_interval.upper_bound,
        change_pct: change.map(|c| pct(c.mean.point_estimate)),
        change_lower_pct: change.map(|c| pct(c.mean.confidence_interval.lower_bound)),
        change_upper_pct: change.map(|c| pct(c.mean.confidence_interval.upper_bound)),
        max_regression_pct,
        verdict,
    })
}

/// A change counts only when its whole confidence interval is past the
/// threshold: criterion's estimate alone moves by a few percent run to run.
pub fn verdict(change: Estimate, threshold: f64) -> BenchVerdict {
    let ci = change.confidence_interval;
    if ci.lower_bound > threshold {
        BenchVerdict::Regressed
    } else if ci.upper_bound < -threshold {
        BenchVerdict::Improved
    } else if change.point_estimate.abs() > threshold {
        BenchVerdict::WithinNoise
    } else {
        BenchVerdict::NoChange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimates(point: f64, lo: f64, hi: f64) -> String {
        format!(
            r#"{{"mean":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{lo},"upper_bound":{hi}}},"point_estimate":{point},"standard_error":1.0}},"median":null}}"#
        )
    }

    #[test]
    fn reads_mean_interval_change_and_full_id() {
        let row = row(
            "mix/1000_rounds",
            Some(r#"{"group_id":"mix","function_id":"1000_rounds","full_id":"mix/1000 rounds","directory_name":"mix/1000_rounds"}"#),
            &estimates(1354.8, 1343.4, 1370.0),
            Some(&estimates(0.08, 0.06, 0.10)),
            5.0,
        )
        .unwrap();
        assert_eq!(row.id, "mix/1000 rounds");
        assert_eq!((row.mean_ns, row.mean_lower_ns, row.mean_upper_ns), (1354.8, 1343.4, 1370.0));
        assert_eq!(row.change_pct, Some(8.0));
        assert_eq!(row.verdict, BenchVerdict::Regressed);
    }

    #[test]
    fn a_regression_needs_the_whole_interval_past_the_threshold() {
        let e = |p, lo, hi| Estimate { point_estimate: p, confidence_interval: ConfidenceInterval { lower_bound: lo, upper_bound: hi, confidence_level: 0.95 } };
        assert_eq!(verdict(e(0.08, 0.04, 0.12), 0.05), BenchVerdict::WithinNoise);
        assert_eq!(verdict(e(0.08, 0.051, 0.12), 0.05), BenchVerdict::Regressed);
        assert_eq!(verdict(e(-0.20, -0.25, -0.15), 0.05), BenchVerdict::Improved);
        assert_eq!(verdict(e(0.01, -0.02, 0.04), 0.05), BenchVerdict::NoChange);
    }

    #[test]
    fn first_run_has_no_change_and_bad_json_says_which_file() {
        let r = row("a", None, &estimates(10.0, 9.0, 11.0), None, 5.0).unwrap();
        assert_eq!(r.id, "a");
        assert_eq!(r.verdict, BenchVerdict::FirstRun);
        assert_eq!(r.change_pct, None);
        let e = row("a", None, "{}", None, 5.0).unwrap_err();
        assert!(e.contains("a: new/estimates.json"), "{e}");
    }
}
