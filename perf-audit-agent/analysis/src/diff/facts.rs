//! What `diff` reads from one `report.json`: the comparable facts.
//!
//! Reports grow sections over time (`baseline`, `memory`, `async`,
//! `database`, `benchmarks`), and an old report must still diff against a
//! new one. The file is read as the typed [`Report`] (every schema type
//! defaults what is missing); a missing section is simply absent, and the
//! comparison covers what both sides have.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::report::Report;

/// Sections whose numbers are compared generically (their schema is owned
/// by the profiles that write them).
pub const GENERIC_SECTIONS: &[&str] = &["memory", "async", "database"];
/// Fields that name a row of a table inside a generic section.
const ROW_KEYS: &[&str] = &["function", "query", "name", "site", "location", "id", "fingerprint"];
/// Depth and row limits of the generic flattening: enough for summary
/// numbers and top-N tables, bounded for huge sections.
const MAX_DEPTH: usize = 4;
const MAX_ROWS_PER_TABLE: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditFacts {
    pub service: String,
    pub started_at: String,
    pub duration_s: f64,
    pub rerun_command: String,
    /// `baseline.*` numbers (load-test results), when the report has them.
    pub baseline: BTreeMap<String, f64>,
    pub cpu: Option<CpuFacts>,
    pub benchmarks: Vec<BenchFacts>,
    /// Flattened numbers of [`GENERIC_SECTIONS`], by metric name.
    pub sections: BTreeMap<String, f64>,
    pub findings: Vec<FindingFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CpuFacts {
    pub frequency_hz: f64,
    pub total_samples: u64,
    pub hotspots: Vec<HotspotFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HotspotFacts {
    pub function: String,
    pub self_samples: u64,
    pub self_pct: f64,
    pub total_pct: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchFacts {
    pub id: String,
    pub mean_ns: f64,
    pub lower_ns: f64,
    pub upper_ns: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FindingFacts {
    pub rule: String,
    pub function: String,
    pub severity: String,
    pub title: String,
    pub location: Option<String>,
}

impl FindingFacts {
    /// Findings are the same across audits when rule and function match.
    pub fn key(&self) -> (&str, &str) {
        (&self.rule, &self.function)
    }
}

impl AuditFacts {
    /// Reads the facts of a parsed `report.json`; `None` when it is not a
    /// perf-audit report at all.
    ///
    /// The report is read as the typed [`Report`]: every schema type is
    /// `#[serde(default)]`, so a section or field an older version did not
    /// write is empty, and fields a newer version added are ignored. Only
    /// the generic sections are flattened from the JSON itself, so that a
    /// number is compared only when both files really have it.
    pub fn from_report(json: &Value) -> Option<AuditFacts> {
        json.get("schema_version")?.as_u64()?;
        let report: Report = serde_json::from_value(json.clone()).ok()?;
        let cpu = report.cpu.as_ref().map(|cpu| CpuFacts {
            frequency_hz: cpu.frequency_hz as f64,
            total_samples: cpu.total_samples,
            hotspots: cpu
                .hotspots
                .iter()
                .filter(|h| !h.function.is_empty())
                .map(|h| HotspotFacts {
                    function: h.function.clone(),
                    self_samples: h.self_samples,
                    self_pct: h.self_pct,
                    total_pct: h.total_pct,
                })
                .collect(),
        });
        let benchmarks = report
            .benchmarks
            .iter()
            .filter(|b| !b.id.is_empty())
            .map(|b| BenchFacts { id: b.id.clone(), mean_ns: b.mean_ns, lower_ns: b.mean_lower_ns, upper_ns: b.mean_upper_ns })
            .collect();
        let mut sections = BTreeMap::new();
        for name in GENERIC_SECTIONS {
            if let Some(section) = json.get(*name).filter(|s| s.is_object()) {
                flatten(section, name, 0, &mut sections);
            }
        }
        let findings = report
            .findings
            .iter()
            .filter(|f| !f.rule.is_empty())
            .map(|f| FindingFacts {
                rule: f.rule.clone(),
                function: f.function.clone(),
                severity: format!("{:?}", f.severity),
                title: f.title.clone(),
                location: match (&f.file, f.line) {
                    (Some(file), Some(line)) => Some(format!("{file}:{line}")),
                    (Some(file), None) => Some(file.clone()),
                    _ => None,
                },
            })
            .collect();
        Some(AuditFacts {
            service: report.target.name,
            started_at: report.started_at,
            duration_s: report.duration_s,
            rerun_command: report.rerun_command,
            baseline: report.baseline.measured().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            cpu,
            benchmarks,
            sections,
            findings,
        })
    }
}

/// `memory.peak_bytes`, `database.queries[SELECT 1].mean_ms`: numbers of
/// objects by path, rows of tables by their naming field.
fn flatten(value: &Value, path: &str, depth: usize, out: &mut BTreeMap<String, f64>) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(path.to_string(), x);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten(v, &format!("{path}.{k}"), depth + 1, out);
            }
        }
        Value::Array(rows) => {
            for row in rows.iter().take(MAX_ROWS_PER_TABLE) {
                let name = ROW_KEYS.iter().find_map(|k| row.get(*k).and_then(Value::as_str));
                if let (Some(name), Value::Object(fields)) = (name, row) {
                    for (k, v) in fields {
                        if v.is_number() {
                            flatten(v, &format!("{path}[{name}].{k}"), depth + 1, out);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_a_cpu_only_report_and_tolerates_missing_sections() {
        let report = json!({
            "schema_version": 1,
            "target": {"pid": 1, "name": "svc", "exe": "/x"},
            "started_at": "2026-01-01T00:00:00Z",
            "duration_s": 10.0,
            "cpu": {"frequency_hz": 99, "total_samples": 990, "hotspots": [
                {"function": "svc::hot", "self_pct": 50.0, "total_pct": 60.0, "self_samples": 495}
            ]},
            "findings": [{"rule": "cpu-hotspot", "function": "svc::hot", "severity": "P1", "title": "t", "file": "src/a.rs", "line": 3}],
            "rerun_command": "sudo perf-audit-agent svc cpu --duration 10s"
        });
        let facts = AuditFacts::from_report(&report).unwrap();
        assert_eq!(facts.service, "svc");
        assert!(facts.baseline.is_empty() && facts.benchmarks.is_empty() && facts.sections.is_empty());
        let cpu = facts.cpu.unwrap();
        assert_eq!(cpu.hotspots[0].self_samples, 495);
        assert_eq!(facts.findings[0].location.as_deref(), Some("src/a.rs:3"));
        assert_eq!(facts.findings[0].key(), ("cpu-hotspot", "svc::hot"));
    }

    #[test]
    fn flattens_generic_sections_by_path_and_row_name() {
        let report = json!({
            "schema_version": 1,
            "baseline": {"rps": 1000.0, "p99_ms": 12.5, "note": "text is ignored"},
            "database": {"total_time_ms": 40.0, "queries": [
                {"query": "SELECT 1", "mean_ms": 0.5, "calls": 10, "plan": "seq scan"},
                {"no_name": 1}
            ]},
            "memory": {"peak_bytes": 1024}
        });
        let facts = AuditFacts::from_report(&report).unwrap();
        assert_eq!(facts.baseline.get("rps"), Some(&1000.0));
        assert_eq!(facts.baseline.len(), 2);
        let names: Vec<&str> = facts.sections.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["database.queries[SELECT 1].calls", "database.queries[SELECT 1].mean_ms", "database.total_time_ms", "memory.peak_bytes"]
        );
    }

    #[test]
    fn a_json_without_schema_version_is_not_a_report() {
        assert!(AuditFacts::from_report(&json!({"hello": 1})).is_none());
    }
}
