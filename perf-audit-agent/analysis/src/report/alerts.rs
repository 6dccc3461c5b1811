//! `alerts.yml`: Prometheus alert rules for the audited service, with
//! thresholds derived from the baseline the audit measured (not the seed's
//! fixed 500 ms / 512 MB): an alert fires when the service gets markedly
//! worse than it was during the audit. Deterministic text; checked by
//! `promtool check rules` in the tests.

use std::fmt::Write as _;

use super::Report;

/// Thresholds and the reasoning the report shows next to them.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub p99_seconds: f64,
    pub p99_reason: String,
    pub rss_bytes: u64,
    pub rss_reason: String,
    pub cpu_cores: f64,
    pub cpu_reason: String,
}

const MIB: u64 = 1024 * 1024;

pub fn thresholds(report: &Report) -> Thresholds {
    let b = &report.baseline;
    // A degraded audit's latency is the stall, not the service: the healthy
    // sample taken after the probes were detached sets the threshold instead.
    let healthy = report.health.as_ref().filter(|h| h.degraded).map(|h| (h.unprobed.p99_ms, h.unprobed.seconds));
    let (p99_seconds, p99_reason) = match (healthy, b.p99_ms) {
        (Some((p99, seconds)), _) => {
            let t = (p99 * 2.0).max(p99 + 50.0) / 1000.0;
            (
                round3(t),
                format!("2x the p99 of {p99:.1} ms measured over {seconds:.1} s after the probes were detached (at least +50 ms): the service degraded during the audit"),
            )
        }
        (None, Some(p99)) => {
            let t = (p99 * 2.0).max(p99 + 50.0) / 1000.0;
            (round3(t), format!("2x the measured p99 of {p99:.1} ms (at least +50 ms)"))
        }
        (None, None) => (0.5, "no load was driven during the audit: the seed's default of 500 ms".to_string()),
    };
    let peak = b.peak_rss_bytes.max(b.rss_bytes);
    let rss_bytes = if peak == 0 { 512 * 1000 * 1000 } else { (peak + peak / 2).max(peak + 64 * MIB) };
    let rss_reason = if peak == 0 {
        "RSS could not be read: the seed's default of 512 MB".to_string()
    } else {
        format!("1.5x the peak RSS of {:.1} MiB seen during the audit (at least +64 MiB)", peak as f64 / MIB as f64)
    };
    let cpu_cores = round3((b.cpu_cores * 2.0).max(b.cpu_cores + 0.25));
    let cpu_reason = format!("2x the {:.2} cores used during the audit (at least +0.25)", b.cpu_cores);
    Thresholds { p99_seconds, p99_reason, rss_bytes, rss_reason, cpu_cores, cpu_reason }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A Prometheus metric-name-safe form of the service name.
pub fn metric_prefix(service: &str) -> String {
    let mut out: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Escapes a string for a double-quoted YAML scalar (and a PromQL string).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn render(report: &Report) -> String {
    let t = thresholds(report);
    let service = &report.target.name;
    let metric = metric_prefix(service);
    let label = service.replace(['"', '\\'], "_");
    let mut y = String::new();
    let _ = writeln!(y, "# Prometheus alert rules for {service}, written by perf-audit from the audit of {}.", report.started_at);
    let _ = writeln!(y, "# Thresholds come from the baseline measured during the audit:");
    let _ = writeln!(y, "#   latency: {}", t.p99_reason);
    let _ = writeln!(y, "#   memory:  {}", t.rss_reason);
    let _ = writeln!(y, "#   cpu:     {}", t.cpu_reason);
    let _ = writeln!(y, "groups:");
    let _ = writeln!(y, "  - name: {}", quoted(&format!("{service}-performance")));
    let _ = writeln!(y, "    rules:");
    let _ = writeln!(y, "      - alert: HighLatency");
    let _ = writeln!(
        y,
        "        expr: histogram_quantile(0.99, sum by (le) (rate({metric}_request_duration_seconds_bucket[5m]))) > {}",
        t.p99_seconds
    );
    let _ = writeln!(y, "        for: 5m");
    let _ = writeln!(y, "        labels:");
    let _ = writeln!(y, "          severity: warning");
    let _ = writeln!(y, "        annotations:");
    let _ = writeln!(y, "          summary: {}", quoted(&format!("P99 latency of {service} above {:.0} ms", t.p99_seconds * 1000.0)));
    let _ = writeln!(y, "          description: {}", quoted(&format!("threshold: {}", t.p99_reason)));
    let _ = writeln!(y, "      - alert: HighMemoryUsage");
    let _ = writeln!(y, "        expr: process_resident_memory_bytes{{service={}}} > {}", quoted(&label), t.rss_bytes);
    let _ = writeln!(y, "        for: 10m");
    let _ = writeln!(y, "        labels:");
    let _ = writeln!(y, "          severity: warning");
    let _ = writeln!(y, "        annotations:");
    let _ = writeln!(y, "          summary: {}", quoted(&format!("Memory usage of {service} above {:.0} MiB", t.rss_bytes as f64 / MIB as f64)));
    let _ = writeln!(y, "          description: {}", quoted(&format!("threshold: {}", t.rss_reason)));
    let _ = writeln!(y, "      - alert: HighCpuUsage");
    let _ = writeln!(y, "        expr: rate(process_cpu_seconds_total{{service={}}}[5m]) > {}", quoted(&label), t.cpu_cores);
    let _ = writeln!(y, "        for: 10m");
    let _ = writeln!(y, "        labels:");
    let _ = writeln!(y, "          severity: warning");
    let _ = writeln!(y, "        annotations:");
    let _ = writeln!(y, "          summary: {}", quoted(&format!("CPU usage of {service} above {} cores", t.cpu_cores)));
    let _ = writeln!(y, "          description: {}", quoted(&format!("threshold: {}", t.cpu_reason)));
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_sanitized() {
        assert_eq!(metric_prefix("user-service"), "user_service");
        assert_eq!(metric_prefix("9lives"), "_9lives");
    }

    #[test]
    fn yaml_strings_escape_quotes() {
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
