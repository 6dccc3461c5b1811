//! What to fix first, in two forms: the cards that open `report.html`
//! (every P0 and P1 finding: title, location, measured impact, estimated
//! gain, a link to its evidence) and the lines the terminal shows when an
//! audit ends (the baseline in one line, one line per P0/P1 finding).
//! Pure: plain data in, text out.

use std::fmt::Write as _;

use super::{Report, plots::escape};
use crate::findings::{Finding, Severity};

/// `file:line`, or the file alone.
fn file_line(f: &Finding) -> Option<String> {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => Some(format!("{file}:{line}")),
        (Some(file), None) => Some(file.clone()),
        _ => None,
    }
}

/// Whether the finding names a function (rules that could not trace it
/// to code say so in parentheses, e.g. `(not traced to code)`).
fn names_function(f: &Finding) -> bool {
    !f.function.is_empty() && !f.function.starts_with('(')
}

/// Where a finding is, for one terminal line: ` at function (file:line)`,
/// only ` at file:line` when the title already names the function, or why
/// there is no place (`; not traced to code`).
pub fn location(f: &Finding) -> String {
    match (names_function(f), file_line(f)) {
        (true, Some(at)) if f.title.contains(&f.function) => format!(" at {at}"),
        (true, Some(at)) => format!(" at {} ({at})", f.function),
        (true, None) => format!(" at {}", f.function),
        (false, Some(at)) => format!(" at {at}"),
        (false, None) if f.function.is_empty() => String::new(),
        (false, None) => format!("; {}", f.function.trim_start_matches('(').trim_end_matches(')')),
    }
}

/// The findings a reader should act on first: P0 then P1, in the report's
/// order (already ranked by measured impact within a severity).
pub fn urgent(report: &Report) -> impl Iterator<Item = &Finding> {
    report.findings_of(Severity::P0).chain(report.findings_of(Severity::P1))
}

/// The baseline in one line.
pub fn baseline_line(report: &Report) -> String {
    let b = &report.baseline;
    let mib = |v: u64| v as f64 / (1024.0 * 1024.0);
    let mut parts = Vec::new();
    match (&b.load, b.rps) {
        (Some(load), Some(rps)) => {
            let ms = |v: Option<f64>| v.map(|v| format!("{v:.2} ms")).unwrap_or_else(|| "-".into());
            parts.push(format!(
                "{rps:.1} rps (load at {}), p50 {}, p99 {}, p99.9 {}, {} errors",
                load.target_rps,
                ms(b.p50_ms),
                ms(b.p99_ms),
                ms(b.p999_ms),
                b.errors.unwrap_or(0)
            ));
        }
        _ => parts.push("no load driven (latency not measured)".to_string()),
    }
    parts.push(format!("RSS {:.1} MiB (peak {:.1} MiB)", mib(b.rss_bytes), mib(b.peak_rss_bytes)));
    parts.push(format!("CPU {:.2} cores", b.cpu_cores));
    format!("baseline: {}", parts.join("; "))
}

/// The terminal summary: the baseline, then one line per P0/P1 finding
/// (severity, title, location), then how many P2 findings the report has.
/// The caller prints the report directory after these.
pub fn terminal(report: &Report) -> Vec<String> {
    let mut lines = vec![baseline_line(report)];
    if report.partial {
        let why = match report.end_reason {
            crate::report::EndReason::Interrupted => format!(" ({})", report.interruption()),
            _ => String::new(),
        };
        lines.push(format!("partial report: collection ended after {:.1} s{why}", report.duration_s));
    }
    if let Some(h) = report.health.as_ref().filter(|h| h.degraded) {
        lines.push(format!("the service degraded during the audit: {} (findings taken on a degraded service)", h.reasons.join("; ")));
    }
    let mut urgent_count = 0;
    for f in urgent(report) {
        urgent_count += 1;
        lines.push(format!("{:?} {}{}", f.severity, f.title, location(f)));
    }
    if urgent_count == 0 {
        lines.push("no P0/P1 finding".to_string());
    }
    let p2 = report.findings_of(Severity::P2).count();
    if p2 > 0 {
        lines.push(format!("{p2} P2 finding{} in the report", if p2 == 1 { "" } else { "s" }));
    }
    lines
}

/// Escaped text, with the report's `code spans` as `<code>`.
fn inline(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return escape(text); // an unpaired backtick: plain text
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { format!("<code>{}</code>", escape(part)) } else { escape(part) })
        .collect()
}

/// The HTML summary section (`<section id="summary">`). `evidence` gives
/// the href and the name of the section holding a finding's evidence.
pub fn html(report: &Report, evidence: &dyn Fn(&Finding) -> (String, String)) -> String {
    let mut h = String::new();
    let p0 = report.findings_of(Severity::P0).count();
    let p1 = report.findings_of(Severity::P1).count();
    let p2 = report.findings_of(Severity::P2).count();
    h.push_str("<section id=\"summary\" class=\"summary\">\n<h2>What to fix first</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"counts\"><span class=\"badge p0\">{p0} P0</span> <span class=\"badge p1\">{p1} P1</span> <span class=\"badge p2\">{p2} P2</span> findings, ranked by measured impact. {}</p>",
        if p2 > 0 { "P2 findings are in the <a href=\"#action-plan\">Optimization Action Plan</a>." } else { "" }
    );
    if p0 + p1 == 0 {
        h.push_str("<p class=\"none\">No P0 or P1 finding: nothing measured here needs an urgent fix.</p>\n");
    }
    h.push_str("<div class=\"cards\">\n");
    for (i, f) in urgent(report).enumerate() {
        let sev = format!("{:?}", f.severity);
        let (href, section) = evidence(f);
        let _ = writeln!(h, "<article class=\"card {}\" id=\"fix-{}\">", sev.to_lowercase(), i + 1);
        let _ = writeln!(h, "<h3><span class=\"badge {}\">{sev}</span> {}</h3>", sev.to_lowercase(), inline(&f.title));
        let place = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!(" <span class=\"at\">at</span> <code>{}:{line}</code>", escape(file)),
            (Some(file), None) => format!(" <span class=\"at\">at</span> <code>{}</code>", escape(file)),
            _ => String::new(),
        };
        let function = if names_function(f) {
            format!("<code>{}</code>", escape(&f.function))
        } else {
            format!("<span class=\"muted\">{}</span>", escape(&f.function))
        };
        let _ = writeln!(h, "<p class=\"where\">{function}{place}</p>");
        h.push_str("<dl>\n");
        let _ = writeln!(h, "<dt>Measured</dt><dd>{}</dd>", inline(&f.evidence));
        let _ = writeln!(h, "<dt>Estimated gain</dt><dd>{}</dd>", inline(&f.estimated_gain));
        let _ = writeln!(
            h,
            "<dt>Fix</dt><dd>{} <span class=\"muted\">({:?} impact, {:?} to do)</span></dd>",
            inline(&f.recommendation),
            f.impact,
            f.complexity
        );
        h.push_str("</dl>\n");
        let _ = writeln!(
            h,
            "<p class=\"more\"><a href=\"{}\">Evidence: {} &#8594;</a></p>",
            escape(&href),
            escape(&section)
        );
        h.push_str("</article>\n");
    }
    h.push_str("</div>\n</section>\n");
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        findings::{Category, Complexity},
        report::{Baseline, EndReason, KernelInfo, LatencySummary, LoadResult, TargetInfo},
    };

    fn finding(
        severity: Severity,
        category: Category,
        title: &str,
        function: &str,
        file: Option<&str>,
        line: Option<u32>,
    ) -> Finding {
        Finding {
            rule: "cpu-hotspot".into(),
            severity,
            category,
            title: title.into(),
            function: function.into(),
            file: file.map(str::to_string),
            line,
            evidence: format!("measured for {title}: 31.2% of CPU samples"),
            recommendation: "do less work per request".into(),
            impact: severity.impact(),
            complexity: Complexity::Medium,
            estimated_gain: "up to 31% of CPU time".into(),
            ranking: "P0 from 20% of samples".into(),
            code_fix: None,
            source: None,
        }
    }

    /// A fixed report for golden tests: load, findings of every severity,
    /// a path and a title that need escaping.
    pub(crate) fn report() -> Report {
        let load = LoadResult {
            target_rps: 100,
            duration_s: 12.0,
            window_s: 12.0,
            elapsed_s: 12.01,
            stopped_early: false,
            max_in_flight: 256,
            planned: 1200,
            sent: 1200,
            unsent: 0,
            completed: 1197,
            ok: 1197,
            status_errors: 0,
            transport_errors: 3,
            timeouts: 0,
            unfinished: 0,
            achieved_rps: 99.67,
            latency: LatencySummary {
                count: 1197,
                mean_ms: 2.1,
                p50_ms: 1.6,
                p90_ms: 3.9,
                p99_ms: 5.25,
                p999_ms: 47.0,
                max_ms: 60.1,
            },
            uncorrected_latency: LatencySummary::default(),
            status_counts: Default::default(),
            per_endpoint: vec![],
            series: crate::report::plots::tests::latency_series(),
        };
        Report {
            schema_version: 1,
            target: TargetInfo {
                pid: 4242,
                name: "demo-service".into(),
                exe: "/srv/demo <&> \"svc\"/demo-service".into(),
            },
            profile: "all".into(),
            duration_s: 12.0,
            planned_duration_s: 12.0,
            started_at: "2026-02-01T10:00:00Z".into(),
            end_reason: EndReason::Duration,
            partial: false,
            end_signal: None,
            target_exec: None,
            unavailable_profiles: vec![],
            kernel: KernelInfo { release: "6.18".into(), btf: true },
            baseline: Baseline {
                rps: Some(99.67),
                p50_ms: Some(1.6),
                p99_ms: Some(5.25),
                p999_ms: Some(47.0),
                errors: Some(3),
                rss_bytes: 52 * 1024 * 1024,
                peak_rss_bytes: 53 * 1024 * 1024,
                cpu_cores: 0.61,
                load: Some(load),
            },
            cpu: None,
            async_runtime: None,
            offcpu: None,
            database: None,
            memory: None,
            findings: vec![
                finding(
                    Severity::P0,
                    Category::Cpu,
                    "CPU hotspot: compute_affinity_score",
                    "demo_service::handlers::compute_affinity_score",
                    Some("examples/demo-service/src/handlers.rs"),
                    Some(88),
                ),
                finding(
                    Severity::P0,
                    Category::Database,
                    "N+1 query: `SELECT * FROM users WHERE id = $1 AND score < 5`",
                    "demo_service::db::fetch_authors_one_by_one",
                    Some("examples/demo-service/src/db.rs"),
                    Some(41),
                ),
                finding(
                    Severity::P1,
                    Category::Async,
                    "Blocking std::fs on a Tokio worker",
                    "demo_service::handlers::load_report_template",
                    Some("examples/demo-service/src/handlers.rs"),
                    None,
                ),
                finding(
                    Severity::P1,
                    Category::Memory,
                    "Unbounded growth of a HashMap<String, <Vec<u8>>>",
                    "demo_service::handlers::cache_rendered_profile",
                    None,
                    None,
                ),
                finding(
                    Severity::P1,
                    Category::Database,
                    "Slow query (51.9 ms per call)",
                    "(not traced to code)",
                    None,
                    None,
                ),
                finding(
                    Severity::P2,
                    Category::Cpu,
                    "Minor hotspot",
                    "demo_service::util::fmt",
                    Some("src/util.rs"),
                    Some(3),
                ),
            ],
            symbols: Vec::new(),
            health: None,
            overhead: None,
            rerun_command: "sudo perf-audit-agent all -- ./demo-service".into(),
            benchmarks: vec![],
        }
    }

    fn golden(name: &str, text: &str) {
        insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(name, text);
        });
    }

    #[test]
    fn terminal_summary_golden() {
        golden("summary_terminal", &terminal(&report()).join("\n"));
    }

    #[test]
    fn html_summary_golden() {
        let html = html(&report(), &|f| {
            (format!("#{}", format!("{:?}", f.category).to_lowercase()), format!("{:?}", f.category))
        });
        assert!(!html.contains("<Vec") && html.contains("&lt;Vec&lt;u8&gt;&gt;"), "titles are escaped");
        golden("summary_html", &html);
    }

    #[test]
    fn code_spans_become_code_and_stray_backticks_stay_text() {
        assert_eq!(inline("in `a<b>` and `c`"), "in <code>a&lt;b&gt;</code> and <code>c</code>");
        assert_eq!(inline("one ` tick <"), "one ` tick &lt;");
    }

    #[test]
    fn a_report_without_urgent_findings_says_so() {
        let mut r = report();
        r.findings.retain(|f| f.severity == Severity::P2);
        r.baseline.load = None;
        r.baseline.rps = None;
        let lines = terminal(&r);
        assert_eq!(
            lines[0],
            "baseline: no load driven (latency not measured); RSS 52.0 MiB (peak 53.0 MiB); CPU 0.61 cores"
        );
        assert_eq!(&lines[1..], ["no P0/P1 finding", "1 P2 finding in the report"]);
        assert!(html(&r, &|_| (String::new(), String::new())).contains("No P0 or P1 finding"));
    }
}
