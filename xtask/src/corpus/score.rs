//! Scoring one audit against a service's labels, and the precision/recall
//! tables over many. Pure.
//!
//! A finding *matches* a label when the rule ids are equal and the label's
//! function is a path suffix of the finding's (at a `::` boundary, closure
//! segments of async bodies ignored). A finding matching an expected label
//! is right (observable or not); one matching a must-not label, or no label
//! at all, is a false alarm. An observable expected label is found when at
//! least one finding matches it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::spec::Labels;

/// The part of a report.json finding that scoring reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub rule: String,
    pub function: String,
    pub severity: String,
    pub title: String,
}

impl Found {
    /// Every finding of a report.json value (empty when it has none).
    pub fn from_report(report: &serde_json::Value) -> Vec<Found> {
        let s = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap_or("").to_string();
        report["findings"].as_array().map_or_else(Vec::new, |a| {
            a.iter().map(|f| Found { rule: s(f, "rule"), function: s(f, "function"), severity: s(f, "severity"), title: s(f, "title") }).collect()
        })
    }
}

/// What one finding turned out to be.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Matches `labels.expected[label]`.
    Expected { label: usize, observable: bool },
    /// False alarm: matches `labels.must_not[label]`.
    MustNot { label: usize, why: String },
    /// False alarm: no label; read the code and label it.
    Unlabelled,
}

impl Verdict {
    pub fn is_false_alarm(&self) -> bool {
        !matches!(self, Verdict::Expected { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredFinding {
    #[serde(flatten)]
    pub finding: Found,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// One audit (one service, one build) scored.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Score {
    pub findings: Vec<ScoredFinding>,
    /// Observable expected labels that some finding matched (indices).
    pub found: Vec<usize>,
    /// Observable expected labels no finding matched (indices).
    pub misses: Vec<usize>,
}

/// Drops the closure segments async bodies and closures add
/// (`f::{{closure}}`, `f::{closure#0}`) and surrounding spaces.
fn normalize(function: &str) -> &str {
    let mut f = function.trim();
    loop {
        let stripped = ["::{{closure}}", "::{closure}"].iter().find_map(|s| f.strip_suffix(s)).or_else(|| {
            let at = f.rfind("::{closure#")?;
            f[at..].ends_with('}').then(|| &f[..at])
        });
        match stripped {
            Some(s) => f = s,
            None => return f,
        }
    }
}

/// Whether `label` names `function`: equal, or a suffix starting at a path
/// segment (after `::`, or after the `<` of a qualified `<T as Trait>` or
/// `<impl Trait for T>` segment).
pub fn function_matches(function: &str, label: &str) -> bool {
    let (f, l) = (normalize(function), normalize(label));
    if l.is_empty() {
        return false;
    }
    f == l || f.strip_suffix(l).is_some_and(|head| head.ends_with("::") || head.ends_with('<'))
}

pub fn score(findings: &[Found], labels: &Labels) -> Score {
    let mut scored = Vec::new();
    let mut hit = vec![false; labels.expected.len()];
    for f in findings {
        let expected = labels.expected.iter().enumerate().filter(|(_, l)| l.rule == f.rule && l.functions().any(|lf| function_matches(&f.function, lf))).map(|(i, _)| i).collect::<Vec<_>>();
        let verdict = if let Some(&first) = expected.first() {
            for &i in &expected {
                hit[i] = true;
            }
            Verdict::Expected { label: first, observable: labels.expected[first].observable }
        } else if let Some((i, m)) = labels.must_not.iter().enumerate().find(|(_, l)| l.rule == f.rule && l.functions().any(|lf| function_matches(&f.function, lf))) {
            Verdict::MustNot { label: i, why: m.why.clone() }
        } else {
            Verdict::Unlabelled
        };
        scored.push(ScoredFinding { finding: f.clone(), verdict });
    }
    let observable = labels.expected.iter().enumerate().filter(|(_, l)| l.observable).map(|(i, _)| i);
    let (found, misses) = observable.partition(|&i| hit[i]);
    Score { findings: scored, found, misses }
}

/// Counts behind precision and recall.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Tally {
    /// Findings matching an expected label.
    pub right: u32,
    /// Findings matching a must-not label or none.
    pub false_alarms: u32,
    /// Observable expected labels found / labelled.
    pub found: u32,
    pub observable: u32,
}

impl Tally {
    pub fn add(&mut self, o: Tally) {
        self.right += o.right;
        self.false_alarms += o.false_alarms;
        self.found += o.found;
        self.observable += o.observable;
    }
    pub fn precision(&self) -> Option<f64> {
        let n = self.right + self.false_alarms;
        (n > 0).then(|| f64::from(self.right) / f64::from(n))
    }
    pub fn recall(&self) -> Option<f64> {
        (self.observable > 0).then(|| f64::from(self.found) / f64::from(self.observable))
    }
}

/// The score per rule id (every rule with a finding or an observable label).
pub fn per_rule(score: &Score, labels: &Labels) -> BTreeMap<String, Tally> {
    let mut by: BTreeMap<String, Tally> = BTreeMap::new();
    for f in &score.findings {
        let t = by.entry(f.finding.rule.clone()).or_default();
        if f.verdict.is_false_alarm() { t.false_alarms += 1 } else { t.right += 1 }
    }
    for &i in &score.found {
        let t = by.entry(labels.expected[i].rule.clone()).or_default();
        t.found += 1;
        t.observable += 1;
    }
    for &i in &score.misses {
        by.entry(labels.expected[i].rule.clone()).or_default().observable += 1;
    }
    by
}

pub fn total(by_rule: &BTreeMap<String, Tally>) -> Tally {
    by_rule.values().fold(Tally::default(), |mut a, t| {
        a.add(*t);
        a
    })
}

/// `83% (5/6)` or `-` when there is nothing to divide.
pub fn pct(value: Option<f64>, num: u32, den: u32) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{:.0}% ({num}/{den})", 100.0 * v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::spec::{Expected, MustNot};

    fn found(rule: &str, function: &str) -> Found {
        Found { rule: rule.into(), function: function.into(), severity: "P1".into(), title: String::new() }
    }

    fn labels() -> Labels {
        Labels {
            expected: vec![
                Expected { rule: "n-plus-one-query".into(), function: "listing::list_articles".into(), also: vec!["listing::fetch_one".into()], why: String::new(), observable: true },
                Expected { rule: "unbounded-result-set".into(), function: "tags::get_tags".into(), also: vec![], why: String::new(), observable: true },
                Expected { rule: "missing-index".into(), function: "comments::get_comments".into(), also: vec![], why: String::new(), observable: false },
            ],
            must_not: vec![MustNot { rule: "blocking-in-async".into(), function: "users::hash_password".into(), also: vec![], why: "spawn_blocking".into() }],
        }
    }

    #[test]
    fn suffix_matching_is_on_path_segments_and_ignores_closures() {
        assert!(function_matches("app::http::articles::listing::list_articles", "listing::list_articles"));
        assert!(function_matches("app::listing::list_articles::{{closure}}", "listing::list_articles"));
        assert!(function_matches("app::listing::list_articles::{closure#0}::{closure#1}", "list_articles"));
        assert!(function_matches("list_articles", "list_articles"));
        // Inside a qualified segment: after its `<`.
        assert!(function_matches("m::_::<impl serde::Serialize for m::User>::serialize", "impl serde::Serialize for m::User>::serialize"));
        assert!(function_matches("<app::Repo as app::Store>::fetch", "Repo as app::Store>::fetch"));
        assert!(!function_matches("<app::MyRepo as app::Store>::fetch", "Repo as app::Store>::fetch"));
        // Not a segment boundary: a different function.
        assert!(!function_matches("app::listing::my_list_articles", "list_articles"));
        assert!(!function_matches("app::listing::list_articles_fast", "list_articles"));
        assert!(!function_matches("app::x", ""));
    }

    #[test]
    fn findings_are_right_false_alarms_or_unlabelled() {
        let l = labels();
        let fs = vec![
            found("n-plus-one-query", "app::http::articles::listing::list_articles::{{closure}}"),
            // The alternative place of the same label.
            found("n-plus-one-query", "app::listing::fetch_one"),
            // Right rule, wrong function: unlabelled.
            found("n-plus-one-query", "app::http::profiles::get_profile"),
            // Right function, other rule: unlabelled.
            found("cpu-hotspot", "app::listing::list_articles"),
            found("blocking-in-async", "app::http::users::hash_password"),
            // Not observable in 30 s, yet seen: right, not a false alarm.
            found("missing-index", "app::comments::get_comments"),
        ];
        let s = score(&fs, &l);
        let verdicts: Vec<_> = s.findings.iter().map(|f| f.verdict.clone()).collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Expected { label: 0, observable: true },
                Verdict::Expected { label: 0, observable: true },
                Verdict::Unlabelled,
                Verdict::Unlabelled,
                Verdict::MustNot { label: 0, why: "spawn_blocking".into() },
                Verdict::Expected { label: 2, observable: false },
            ]
        );
        assert_eq!(s.found, vec![0]);
        assert_eq!(s.misses, vec![1]);

        let by = per_rule(&s, &l);
        assert_eq!(by["n-plus-one-query"], Tally { right: 2, false_alarms: 1, found: 1, observable: 1 });
        assert_eq!(by["unbounded-result-set"], Tally { right: 0, false_alarms: 0, found: 0, observable: 1 });
        assert_eq!(by["blocking-in-async"], Tally { right: 0, false_alarms: 1, found: 0, observable: 0 });
        assert_eq!(by["missing-index"], Tally { right: 1, false_alarms: 0, found: 0, observable: 0 });
        let t = total(&by);
        assert_eq!(t, Tally { right: 3, false_alarms: 3, found: 1, observable: 2 });
        assert_eq!(pct(t.precision(), t.right, t.right + t.false_alarms), "50% (3/6)");
        assert_eq!(pct(t.recall(), t.found, t.observable), "50% (1/2)");
        assert_eq!(pct(by["unbounded-result-set"].precision(), 0, 0), "-");
    }

    #[test]
    fn no_findings_means_every_observable_label_is_missed() {
        let s = score(&[], &labels());
        assert!(s.findings.is_empty());
        assert_eq!(s.misses, vec![0, 1]);
        assert_eq!(total(&per_rule(&s, &labels())).recall(), Some(0.0));
    }

    #[test]
    fn findings_are_read_from_report_json() {
        let report = serde_json::json!({"findings": [{"rule": "slow-query", "function": "a::b", "severity": "P1", "title": "t", "evidence": "e"}]});
        assert_eq!(Found::from_report(&report), vec![Found { rule: "slow-query".into(), function: "a::b".into(), severity: "P1".into(), title: "t".into() }]);
        assert!(Found::from_report(&serde_json::json!({})).is_empty());
    }
}
