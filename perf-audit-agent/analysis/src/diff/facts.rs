//! What `diff` reads from one `report.json`: the comparable facts, pulled
//! out of the JSON tolerantly.
//!
//! Reports grow sections over time (`baseline`, `memory`, `async`,
//! `database`, `benchmarks`), and an old report must still diff against a
//! new one, so this reads `serde_json::Value`s instead of deserializing the
//! writer's structs: a missing section is simply absent, and the comparison
//! covers what both sides have.

use std::collections::BTreeMap;

use serde_json::Value;

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
    pub fn from_report(report: &Value) -> Option<AuditFacts> {
        report.get("schema_version")?.as_u64()?;
        let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let baseline = report
            .get("baseline")
            .and_then(Value::as_object)
            .map(|b| b.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
            .unwrap_or_default();
        let cpu = report.get("cpu").filter(|c| c.is_object()).map(|cpu| CpuFacts {
            frequency_hz: cpu.get("frequency_hz").and_then(Value::as_f64).unwrap_or(0.0),
            total_samples: cpu.get("total_samples").and_then(Value::as_u64).unwrap_or(0),
            hotspots: array(cpu, "hotspots")
                .iter()
                .filter_map(|h| {
                    Some(HotspotFacts {
                        function: h.get("function")?.as_str()?.to_string(),
                        self_samples: h.get("self_samples").and_then(Value::as_u64).unwrap_or(0),
                        self_pct: h.get("self_pct").and_then(Value::as_f64).unwrap_or(0.0),
                        total_pct: h.get("total_pct").and_then(Value::as_f64).unwrap_or(0.0),
                    })
                })
                .collect(),
        });
        let benchmarks = array(report, "benchmarks")
            .iter()
            .filter_map(|b| {
                let mean = b.get("mean_ns")?.as_f64()?;
                Some(BenchFacts {
                    id: b.get("id")?.as_str()?.to_string(),
                    mean_ns: mean,
                    lower_ns: b.get("mean_lower_ns").and_then(Value::as_f64).unwrap_or(mean),
                    upper_ns: b.get("mean_upper_ns").and_then(Value::as_f64).unwrap_or(mean),
                })
            })
            .collect();
        let mut sections = BTreeMap::new();
        for name in GENERIC_SECTIONS {
            if let Some(section) = report.get(*name).filter(|s| s.is_object()) {
                flatten(section, name, 0, &mut sections);
            }
        }
        let findings = array(report, "findings")
            .iter()
            .filter_map(|f| {
                let location = match (f.get("file").and_then(Value::as_str), f.get("line").and_then(Value::as_u64)) {
                    (Some(file), Some(line)) => Some(format!("{file}:{line}")),
                    (Some(file), None) => Some(file.to_string()),
                    _ => None,
                };
                Some(FindingFacts {
                    rule: f.get("rule")?.as_str()?.to_string(),
                    function: str_at(f, "function"),
                    severity: str_at(f, "severity"),
                    title: str_at(f, "title"),
                    location,
                })
            })
            .collect();
        Some(AuditFacts {
            service: report.get("target").map(|t| str_at(t, "name")).unwrap_or_default(),
            started_at: str_at(report, "started_at"),
            duration_s: report.get("duration_s").and_then(Value::as_f64).unwrap_or(0.0),
            rerun_command: str_at(report, "rerun_command"),
            baseline,
            cpu,
            benchmarks,
            sections,
            findings,
        })
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
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
