//! The layout of `report.html`: what to fix first (summary cards), then the
//! baseline, then the report's sections in the seed's order (the markdown
//! of `report.md`, cut at its `---` rules), each with its plots and its
//! flamegraph. `report.md` itself keeps the seed's order.
//!
//! Offline and strict: no external resource, and a Content-Security-Policy
//! `<meta>` that allows nothing but the page's own stylesheet and the
//! flamegraphs' script and styles, by their SHA-256 hashes (no
//! `unsafe-inline`, no inline event handler). Each flamegraph keeps its
//! interactive script (search, click to zoom) in a sandboxed `srcdoc`
//! frame, so that the scripts and element ids of several flamegraphs stay
//! apart; a srcdoc frame inherits the page's policy, so inferno's
//! `onload="init(evt)"` attribute is replaced by a call at the end of the
//! script. Markdown cannot inject markup: raw HTML in it (SQL with `<`, a
//! path with `&`) is rendered as text.

use std::{collections::BTreeSet, fmt::Write as _};

use base64::Engine as _;
use pulldown_cmark::{Event, Options, Parser, Tag, html};
use sha2::{Digest as _, Sha256};

use super::{Report, alerts, html::Embedded, plots, plots::escape, summary};
use crate::findings::{Category, Finding};

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:0 auto;padding:0.5em 1em 3em;color:#222;line-height:1.45;overflow-wrap:anywhere}\
h1{font-size:1.6em;margin:0.6em 0 0.3em}h2{border-bottom:2px solid #ddd;padding-bottom:0.15em;margin-top:1.6em}\
nav.toc{font-size:0.92em;margin:0.5em 0 1em;display:flex;flex-wrap:wrap;gap:0.3em 1em}\
table{border-collapse:collapse;margin:1em 0;font-size:0.92em;display:block;overflow-x:auto;max-width:100%}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}\
code{background:#f5f5f5;padding:0 3px;border-radius:3px;font-size:0.92em}pre{background:#f5f5f5;padding:10px;overflow-x:auto}\
pre code{background:none;padding:0}blockquote{border-left:4px solid #e0a000;margin:1em 0;padding:0.2em 1em;background:#fff8e0}\
.summary .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:1em}\
.card{border:1px solid #ddd;border-left:6px solid #999;border-radius:6px;padding:0.6em 1em;background:#fcfcfc}\
.card.p0{border-left-color:#c9302c}.card.p1{border-left-color:#e0a000}\
.card h3{margin:0.2em 0 0.4em;font-size:1.05em}.card dl{margin:0.4em 0}\
.card dt{font-weight:600;color:#555;font-size:0.85em;margin-top:0.35em}.card dd{margin:0}.card .where{margin:0.2em 0;font-size:0.92em}.card .more{margin:0.4em 0 0}\
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:0.85em;font-weight:700;color:#fff;background:#888}\
.badge.p0{background:#c9302c}.badge.p1{background:#c98a00}.badge.p2{background:#2e7d4e}\
.muted,.at{color:#666}\
figure{margin:1em 0}figcaption{font-size:0.9em;color:#444;margin:0.3em 0}figure.plot{overflow-x:auto}\
.plot-svg{width:100%;height:auto;max-width:900px;min-width:520px;display:block;border:1px solid #e4e4e4}\
iframe.flamegraph{width:100%;border:1px solid #ccc}\
@media (max-width:640px){body{padding:0.3em 0.5em 2em}h1{font-size:1.3em}th,td{padding:3px 4px}}";

/// The CSP source of a script or style text.
fn sha256_source(text: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes())))
}

/// Markdown to HTML with raw HTML shown as text and table alignment
/// dropped (it would be an inline `style`, which the policy forbids).
/// The severity and status words report.md writes in bold (`**P0**`,
/// `**blocks workers**`), drawn in report.html as CSS badges: text, never
/// emoji (no emoji font on a headless Debian Chromium).
const BADGES: &[(&str, &str)] =
    &[("P0", "p0"), ("P1", "p1"), ("P2", "p2"), ("blocks workers", "p0"), ("N+1", "p0"), ("warning", "p1")];

pub fn markdown_html(markdown: &str) -> String {
    let events: Vec<Event<'_>> = Parser::new_ext(markdown, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH)
        .map(|e| match e {
            Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
            Event::Start(Tag::Table(align)) => Event::Start(Tag::Table(vec![pulldown_cmark::Alignment::None; align.len()])),
            e => e,
        })
        .collect();
    let mut badged = Vec::with_capacity(events.len());
    let mut i = 0;
    while i < events.len() {
        if let (Event::Start(Tag::Strong), Some(Event::Text(text)), Some(Event::End(pulldown_cmark::TagEnd::Strong))) =
            (&events[i], events.get(i + 1), events.get(i + 2))
            && let Some((word, class)) = BADGES.iter().find(|(w, _)| *w == text.as_ref())
        {
            badged.push(Event::InlineHtml(format!("<span class=\"badge {class}\">{}</span>", word).into()));
            i += 3;
            continue;
        }
        badged.push(events[i].clone());
        i += 1;
    }
    let mut out = String::new();
    html::push_html(&mut out, badged.into_iter());
    out
}

/// One chunk of the markdown between `---` rules.
struct Chunk {
    id: String,
    title: String,
    markdown: String,
}

/// Cuts the markdown at its `---` lines (not inside code fences).
fn chunks(markdown: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        }
        if !fence && line.trim() == "---" {
            out.push(String::new());
            continue;
        }
        let last = out.last_mut().expect("never empty");
        last.push_str(line);
        last.push('\n');
    }
    out.retain(|c| !c.trim().is_empty());
    out
}

/// The anchor of a section, from its heading.
fn section_id(title: &str) -> String {
    let known = [
        ("CPU Profiling Results", "cpu"),
        ("Async Runtime Analysis", "async"),
        ("Database Performance Analysis", "database"),
        ("Memory Profiling Results", "memory"),
        ("Benchmarks", "benchmarks"),
        ("Optimization Action Plan", "action-plan"),
        ("Monitoring Setup", "monitoring"),
        ("Next Steps", "next-steps"),
    ];
    if let Some((_, id)) = known.iter().find(|(prefix, _)| title.starts_with(prefix)) {
        return id.to_string();
    }
    let slug: String =
        title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let slug = slug.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-");
    if slug.is_empty() { "section".to_string() } else { slug }
}

fn is_profile_section(id: &str) -> bool {
    matches!(id, "cpu" | "async" | "database" | "memory" | "benchmarks")
}

/// A flamegraph made ready for a srcdoc frame under the page's policy.
struct FlameDoc {
    srcdoc: String,
    script: String,
    style: String,
    height: u32,
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<(usize, usize, &'a str)> {
    let start = text.find(open)?;
    let inner = start + open.len();
    let end = inner + text[inner..].find(close)?;
    Some((start, end + close.len(), &text[inner..end]))
}

/// Moves inferno's `<style>` and `<script>` out of the SVG (into the
/// frame's head and the end of its body), drops the XML prologue and the
/// inline `onload` handler, keeps the SVG at 100% width (inferno removes
/// the attribute, which in an HTML page means 300 px), and guards
/// `history.replaceState`, which throws in a sandboxed frame (opaque
/// origin) after every zoom.
fn flame_doc(svg: &[u8]) -> FlameDoc {
    let text = String::from_utf8_lossy(svg);
    let mut svg = text[text.find("<svg").unwrap_or(0)..].to_string();
    let mut style = String::from("html,body{margin:0;padding:0;background:#fff}svg{display:block}");
    if let Some((start, end, inner)) = between(&svg, "<style type=\"text/css\">", "</style>") {
        style.push_str(inner);
        svg.replace_range(start..end, "");
    }
    let mut script = String::from(
        "function perf_audit_replace_state(a, b, c) { try { history.replaceState(a, b, c); } catch (e) {} }\n",
    );
    if let Some((start, end, inner)) = between(&svg, "<script type=\"text/ecmascript\">", "</script>") {
        let js = inner.replace("<![CDATA[", "").replace("]]>", "");
        // Inside an HTML page an `<svg>` without a width is 300 px wide and
        // its `width.baseVal` is 0: keep it at the frame's full width, and
        // measure the width it is drawn at.
        let js = js
            .replace("svg.removeAttribute(\"width\");", "svg.setAttribute(\"width\", \"100%\");")
            .replace("svg.width.baseVal.value", "Math.max(svg.getBoundingClientRect().width, xpad * 2 + 1)");
        script.push_str(&js.replace("history.replaceState(", "perf_audit_replace_state("));
        svg.replace_range(start..end, "");
        // A frame may run its script before the page has laid it out
        // (width 0: inferno would divide by it): start once it has a width,
        // and redraw whenever the SVG's size changes (inferno only listens
        // to window resizes, and a frame can get its width after start).
        script.push_str(
            "\n(function perf_audit_start() { if (document.documentElement.clientWidth > 0) { init(); if (window.ResizeObserver) { new ResizeObserver(function () { window.dispatchEvent(new Event(\"resize\")); }).observe(svg); } } else { setTimeout(perf_audit_start, 50); } })();\n",
        );
    }
    let script = script.replace("</script", "<\\/script");
    let style = style.replace("</style", "<\\/style");
    let svg = svg.replacen(" onload=\"init(evt)\"", "", 1);
    let height = between(&svg, "height=\"", "\"").and_then(|(_, _, h)| h.parse::<f64>().ok()).unwrap_or(600.0) as u32;
    let srcdoc = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><style>{style}</style></head><body>{svg}<script>{script}</script></body></html>"
    );
    FlameDoc { srcdoc, script, style, height }
}

struct Placed {
    section: String,
    html: String,
}

fn figure(id: &str, svg: String, caption: &str) -> String {
    format!("<figure class=\"plot\" id=\"{id}\">\n{svg}<figcaption>{}</figcaption>\n</figure>\n", escape(caption))
}

/// The whole page. `flamegraphs` name the section they belong to (`cpu`,
/// `async`, `memory`); one whose section is not in the report goes last.
pub fn render(report: &Report, markdown: &str, flamegraphs: &[Embedded<'_>]) -> String {
    let thresholds = alerts::thresholds(report);
    let title = format!("Performance Audit: {}", report.target.name);

    // Header, baseline, sections.
    let mut parts = chunks(markdown).into_iter();
    let first = parts.next().unwrap_or_default();
    let (header_md, baseline_md) = match first.split_once("**Baseline metrics**:") {
        Some((h, b)) => (h.to_string(), format!("## Baseline metrics\n{b}")),
        None => (first.clone(), String::new()),
    };
    // The header's `**Key**: value` lines, one per line (markdown would
    // join them into one paragraph).
    let header_md = header_md
        .replacen("## Performance Audit", "# Performance Audit", 1)
        .lines()
        .map(|l| if l.starts_with("**") { format!("{l}  ") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let sections: Vec<Chunk> = parts
        .map(|md| {
            let title = md
                .lines()
                .find(|l| l.starts_with('#'))
                .map(|l| l.trim_start_matches('#').trim().to_string())
                .unwrap_or_default();
            Chunk { id: section_id(&title), title, markdown: md }
        })
        .collect();
    let has = |id: &str| sections.iter().any(|s| s.id == id);

    // Plots and flamegraphs, by the section they go into.
    let mut placed: Vec<Placed> = Vec::new();
    if let Some(svg) = report.baseline.load.as_ref().and_then(|l| {
        plots::latency(&l.series, report.baseline.p99_ms.map(|_| thresholds.p99_seconds * 1000.0), l.duration_s)
    }) {
        placed.push(Placed {
            section: "baseline".into(),
            html: figure(
                "plot-latency",
                svg,
                "p50 and p99 latency of the load generator's requests, per second of planned send time (corrected for coordinated omission); the dashed line is the p99 threshold of alerts.yml.",
            ),
        });
    }
    if let Some(svg) = report
        .cpu
        .as_ref()
        .and_then(|c| c.timeline.as_ref())
        .and_then(|t| plots::cpu_by_role(t, Some(thresholds.cpu_cores)))
    {
        placed.push(Placed {
            section: "cpu".into(),
            html: figure("plot-cpu-roles", svg, "CPU samples per second by thread role (Tokio workers, blocking pool, other threads), in cores; the dashed line is the CPU threshold of alerts.yml."),
        });
    } else if report.cpu.is_some() {
        placed.push(Placed {
            section: "cpu".into(),
            html: "<p class=\"muted\" id=\"plot-cpu-roles-missing\">CPU by thread role over time needs time-stamped samples (<code>--unwind dwarf</code>); this audit aggregated stacks in the kernel.</p>\n".into(),
        });
    }
    if let Some(svg) = report.offcpu.as_ref().and_then(|o| plots::worker_time(&o.threads)) {
        placed.push(Placed {
            section: "async".into(),
            html: figure("plot-worker-time", svg, "Per Tokio worker, from the kernel's scheduler totals: on CPU, blocked inside task code (captured blocks of at least the off-CPU threshold with a frame of your code), idle (parked or waiting in the runtime), and runnable but waiting for a CPU."),
        });
    }
    if let Some(svg) = report.memory.as_ref().and_then(|m| plots::memory(&m.rss_series)) {
        let caption = format!(
            "RSS and anonymous memory of the target every 500 ms (smaps_rollup), with their least-squares fits (dashed). alerts.yml's HighMemoryUsage fires above {:.0} MiB ({}).",
            thresholds.rss_bytes as f64 / (1024.0 * 1024.0),
            thresholds.rss_reason
        );
        placed.push(Placed { section: "memory".into(), html: figure("plot-memory", svg, &caption) });
    }
    let mut scripts = BTreeSet::new();
    let mut styles = BTreeSet::from([sha256_source(STYLE)]);
    for fg in flamegraphs {
        let doc = flame_doc(fg.svg);
        scripts.insert(sha256_source(&doc.script));
        styles.insert(sha256_source(&doc.style));
        let section = if has(fg.section) { fg.section.to_string() } else { "flamegraphs".to_string() };
        let mut h = String::new();
        let _ = writeln!(h, "<figure class=\"flamegraph-figure\" id=\"flamegraph-{}\">", escape(fg.section));
        let _ = writeln!(
            h,
            "<figcaption><strong>{}</strong>: hover a frame for its numbers, click it to zoom (\"Reset Zoom\" to go back), \"Search\" or Ctrl-F to highlight functions.</figcaption>",
            escape(fg.title)
        );
        let _ = writeln!(
            h,
            "<iframe class=\"flamegraph\" title=\"{}\" sandbox=\"allow-scripts allow-modals\" height=\"{}\" srcdoc=\"{}\"></iframe>\n</figure>",
            escape(fg.title),
            doc.height + 4,
            escape(&doc.srcdoc)
        );
        placed.push(Placed { section, html: h });
    }
    let placed_in =
        |id: &str| -> String { placed.iter().filter(|p| p.section == id).map(|p| p.html.as_str()).collect() };

    // The page.
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; base-uri 'none'; form-action 'none'",
        if scripts.is_empty() { "'none'".to_string() } else { scripts.into_iter().collect::<Vec<_>>().join(" ") },
        styles.into_iter().collect::<Vec<_>>().join(" ")
    );
    let mut page = String::with_capacity(markdown.len() * 2 + 256 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    let _ = writeln!(page, "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">", escape(&csp));
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"referrer\" content=\"no-referrer\">\n");
    let _ = writeln!(page, "<title>{}</title>", escape(&title));
    let _ = writeln!(page, "<style>{STYLE}</style>\n</head><body>");
    page.push_str("<header id=\"top\">\n");
    page.push_str(&markdown_html(&header_md));
    page.push_str("<nav class=\"toc\"><a href=\"#summary\">What to fix first</a><a href=\"#baseline\">Baseline</a>");
    for s in &sections {
        let _ = write!(page, "<a href=\"#{}\">{}</a>", escape(&s.id), escape(&s.title));
    }
    if placed.iter().any(|p| p.section == "flamegraphs") {
        page.push_str("<a href=\"#flamegraphs\">Flamegraphs</a>");
    }
    page.push_str("</nav>\n</header>\n<main>\n");
    let evidence = |f: &Finding| -> (String, String) {
        let id = match f.category {
            Category::Cpu => "cpu",
            Category::Async => "async",
            Category::Database => "database",
            Category::Memory => "memory",
        };
        match sections.iter().find(|s| s.id == id) {
            Some(s) => (format!("#{}", s.id), s.title.clone()),
            None => ("#action-plan".to_string(), "Optimization Action Plan".to_string()),
        }
    };
    page.push_str(&summary::html(report, &evidence));
    page.push_str("<section id=\"baseline\" class=\"baseline\">\n");
    page.push_str(&markdown_html(&baseline_md));
    page.push_str(&placed_in("baseline"));
    page.push_str("</section>\n");
    for s in &sections {
        let class = if is_profile_section(&s.id) { "profile-section" } else { "plan-section" };
        let _ = writeln!(page, "<section id=\"{}\" class=\"{class}\">", escape(&s.id));
        page.push_str(&markdown_html(&s.markdown));
        page.push_str(&placed_in(&s.id));
        page.push_str("</section>\n");
    }
    let rest = placed_in("flamegraphs");
    if !rest.is_empty() {
        page.push_str("<section id=\"flamegraphs\" class=\"profile-section\">\n<h2>Flamegraphs</h2>\n");
        page.push_str(&rest);
        page.push_str("</section>\n");
    }
    page.push_str("</main>\n</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG: &[u8] = b"<?xml version=\"1.0\" standalone=\"no\"?><!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\"><svg version=\"1.1\" width=\"1200\" height=\"310\" onload=\"init(evt)\" viewBox=\"0 0 1200 310\" xmlns=\"http://www.w3.org/2000/svg\"><style type=\"text/css\">text { font-size:12px }</style><script type=\"text/ecmascript\"><![CDATA[var a = 1 < 2;]]><![CDATA[function init(evt) { history.replaceState(null, null, '?x=1'); }]]></script><g id=\"frames\"></g></svg>";

    fn page() -> String {
        let mut report = super::summary::tests::report();
        report.findings.truncate(3);
        let md = "## Performance Audit: demo-service\n\n**Profile type**: all\n\n**Baseline metrics**:\n- P99 latency: 5.25 ms\n\n---\n\n### CPU Profiling Results\n\n| Function | Self % |\n|:---|---:|\n| `f` | 3.0% |\n\n---\n\n### Database Performance Analysis\n\nSQL: SELECT * FROM t WHERE a <b AND c > 1 <script>alert(1)</script>\n\n---\n\n## Optimization Action Plan\n\n```yaml\n---\nnot: a rule\n```\n";
        render(
            &report,
            md,
            &[
                Embedded { title: "CPU flamegraph (flamegraph.svg)", svg: SVG, section: "cpu" },
                Embedded { title: "Off-CPU", svg: SVG, section: "async" },
            ],
        )
    }

    #[test]
    fn the_summary_comes_first_then_the_baseline_then_the_sections() {
        let p = page();
        let at = |needle: &str| p.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
        assert!(at("id=\"summary\"") < at("id=\"baseline\""));
        assert!(at("id=\"baseline\"") < at("<section id=\"cpu\" class=\"profile-section\""));
        assert!(at("id=\"cpu\"") < at("id=\"database\"") && at("id=\"database\"") < at("id=\"action-plan\""));
        assert!(at("id=\"plot-latency\"") < at("id=\"cpu\""), "the latency plot is in the baseline");
        assert!(at("id=\"flamegraph-cpu\"") < at("id=\"database\""), "the CPU flamegraph is in its section");
        assert!(
            at("id=\"flamegraph-async\"") > at("id=\"flamegraphs\""),
            "no async section: the off-CPU flamegraph goes last"
        );
        assert!(
            p.contains("href=\"#database\">Evidence: Database Performance Analysis"),
            "cards link to their evidence"
        );
        assert!(
            p.contains("<pre><code class=\"language-yaml\">---\nnot: a rule"),
            "a rule inside a code fence does not cut a section"
        );
    }

    #[test]
    fn markup_in_the_report_is_text_and_the_policy_allows_only_hashed_code() {
        let p = page();
        assert!(
            !p.contains("<script>alert(1)") && p.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "raw HTML is escaped"
        );
        assert!(p.contains("a &lt;b AND c &gt; 1"));
        assert!(!p.contains("style=\""), "no inline style attribute (the CSP forbids them)");
        assert!(!p.contains("onload=") && !p.contains("onload=&quot;"), "no inline handler, in the page or the frames");
        assert!(!p.contains("src=\"http") && !p.contains("<link") && !p.contains("@import"), "no external resource");
        let csp = p.split("Content-Security-Policy\" content=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(csp.starts_with("default-src &#39;none&#39;; script-src &#39;sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        // The frame's script is exactly what was hashed.
        let doc = flame_doc(SVG);
        assert!(
            doc.script.contains(
                "var a = 1 < 2;function init(evt) { perf_audit_replace_state(null, null, '?x=1'); }\n(function perf_audit_start()"
            ),
            "{}",
            doc.script
        );
        assert!(p.contains(&escape(&sha256_source(&doc.script))) && p.contains(&escape(&sha256_source(&doc.style))));
        assert!(p.contains(&escape(&sha256_source(STYLE))));
        assert!(p.contains("height=\"314\""), "the frame is as tall as the flamegraph");
    }

    #[test]
    fn inferno_output_is_rewritten_as_expected() {
        // Guards the string surgery of `flame_doc` against inferno changes.
        let folded = ["main;a;b 3".to_string(), "main;c 1".to_string()];
        let svg = crate::render::flamegraph_svg("CPU", "sub", "samples", &folded).unwrap();
        let doc = flame_doc(&svg);
        assert!(!doc.srcdoc.contains("onload="), "the inline handler is gone");
        assert!(!doc.srcdoc.contains("<?xml") && !doc.srcdoc.contains("<!DOCTYPE svg"));
        assert_eq!(doc.srcdoc.matches("<script").count(), 1, "inferno's script moved out of the SVG");
        assert_eq!(doc.srcdoc.matches("<style").count(), 1, "inferno's style moved out of the SVG");
        assert!(!doc.script.contains("CDATA") && doc.script.contains("function init(evt)"));
        assert!(
            doc.script.contains("svg.setAttribute(\"width\", \"100%\")")
                && !doc.script.contains("removeAttribute(\"width\")")
        );
        assert!(!doc.script.contains("svg.width.baseVal"));
        assert_eq!(doc.script.matches("history.replaceState(").count(), 1, "only the guarded call is left");
        assert!(doc.script.trim_end().ends_with("setTimeout(perf_audit_start, 50); } })();"));
        assert!(doc.script.contains(".observe(svg)"), "redrawn when the frame gets its width");
        assert!(doc.style.contains("#frames") || doc.style.contains("text {"), "inferno's CSS kept");
        assert!(doc.height > 50);
    }

    #[test]
    fn the_hash_is_the_standard_csp_form() {
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert_eq!(sha256_source("alert(1)"), "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='");
    }

    #[test]
    fn the_page_is_deterministic() {
        assert_eq!(page(), page());
    }
}
