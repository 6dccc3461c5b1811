//! Golden tests of the report stage: the fixed ledger-svc evidence set
//! (`crate::test_evidence`) through [`build_report`] and [`render_outputs`],
//! each text output compared with its snapshot in `snapshots/`. A change to
//! a renderer, the schema or an analysis shows as a diff of these files.
//!
//! To accept a change: `INSTA_UPDATE=always cargo test -p perf-audit-analysis`
//! rewrites the snapshots, then review them with `git diff` and commit them
//! with the change. Under `CI=true` insta never writes a snapshot: a missing
//! or different one fails.
//!
//! The flamegraph SVGs are inferno's output and are not snapshotted (their
//! inputs, the folded stacks, are); `report.html` is compared with each
//! embedded SVG replaced by a placeholder, after checking that it embeds
//! exactly the bytes of the SVG file.

use super::{AuditEvidence, OutputFile, build_report, render_outputs};
use crate::{report::Report, test_evidence};

fn outputs() -> (Report, Vec<OutputFile>) {
    outputs_of(&test_evidence::ledger_svc())
}

fn outputs_of(evidence: &AuditEvidence) -> (Report, Vec<OutputFile>) {
    let report = build_report(evidence);
    let files = render_outputs(&report, evidence).expect("the fixture renders");
    (report, files)
}

fn bytes<'a>(files: &'a [OutputFile], name: &str) -> &'a [u8] {
    &files.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} was not rendered")).bytes
}

fn text<'a>(files: &'a [OutputFile], name: &str) -> &'a str {
    std::str::from_utf8(bytes(files, name)).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"))
}

/// Compares `text` with `snapshots/<name>.snap`.
macro_rules! golden {
    ($name:expr, $text:expr) => {
        insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

#[test]
fn every_output_file_is_rendered_once() {
    let (_, files) = outputs();
    let names: Vec<&str> = files.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "stacks.folded",
            "flamegraph.svg",
            "offcpu.folded",
            "offcpu.svg",
            "report.json",
            "report.md",
            "alerts.yml",
            "memory.svg",
            "report.html",
            "perf-audit-ci.yml",
        ]
    );
}

/// The fixture exercises every rule it was written for (and the blocking
/// pool's twin of the blocking read is not a finding): a snapshot of an
/// empty report would pass for the wrong reason.
#[test]
fn the_fixture_makes_the_rules_fire() {
    let (report, _) = outputs();
    let fired: std::collections::BTreeSet<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
    for rule in [
        "cpu-hotspot",
        "blocking-in-async",
        "sync-lock-contention",
        "cpu-heavy-in-async",
        "n-plus-one-query",
        "slow-query",
        "missing-index",
        "unused-index",
        "memory-leak",
        "unbounded-growth",
        "allocation-hot-path",
    ] {
        assert!(fired.contains(rule), "{rule} did not fire: {fired:?}");
    }
    assert!(report.findings.iter().all(|f| !f.function.contains("load_template_blocking")), "{:#?}", report.findings);
    let a = report.async_runtime.as_ref().expect("async section");
    assert_eq!((a.analysis.workers.workers, a.analysis.workers.blocking_pool_threads), (2, 1));
}

#[test]
fn report_md_is_golden() {
    let (_, files) = outputs();
    golden!("report.md", text(&files, "report.md"));
}

/// `report.json` as written (serde_json's pretty printer over the schema),
/// with the collection's start time redacted: a real audit writes its clock
/// there.
#[test]
fn report_json_is_golden() {
    let (_, files) = outputs();
    let json = text(&files, "report.json");
    let started = format!("\"started_at\": \"{}\"", test_evidence::STARTED_AT);
    assert_eq!(json.matches(&started).count(), 1, "started_at appears once");
    golden!("report.json", json.replace(&started, "\"started_at\": \"[started_at]\""));
}

/// Every schema type derives Deserialize: reading report.json back and
/// writing it again gives the same bytes (what `diff` reads is what the
/// audit wrote).
#[test]
fn report_json_round_trips_byte_for_byte() {
    for evidence in [test_evidence::ledger_svc(), test_evidence::ledger_svc_interrupted_cpu_bench()] {
        let (_, files) = outputs_of(&evidence);
        let json = bytes(&files, "report.json");
        let read: Report = serde_json::from_slice(json).expect("report.json reads back as a Report");
        let again = serde_json::to_vec_pretty(&read).expect("serializes");
        assert!(again == json, "report.json changed through a round trip:\n{}", String::from_utf8_lossy(&again));
    }
}

/// `report.html` with each embedded flamegraph checked against its SVG
/// file (every frame present), then replaced by a placeholder.
#[test]
fn report_html_is_golden() {
    let (_, files) = outputs();
    let html = text(&files, "report.html");
    let mut page = String::with_capacity(html.len());
    let mut rest = html;
    let mut embedded = Vec::new();
    while let Some(start) = rest.find("srcdoc=\"") {
        let (head, tail) = rest.split_at(start + "srcdoc=\"".len());
        let end = tail.find('"').expect("srcdoc is closed");
        embedded.push(unescape(&tail[..end]));
        page.push_str(head);
        page.push_str(&format!("[embedded SVG {}]", embedded.len()));
        rest = &tail[end..];
    }
    page.push_str(rest);
    let svgs = ["flamegraph.svg", "offcpu.svg", "memory.svg"];
    assert_eq!(embedded.len(), svgs.len());
    // The page rewrites each SVG for its frame (script and style moved out
    // under the page's policy, full width): every frame of the file, i.e.
    // every `<title>` tooltip, must be in the embedded document.
    for (doc, name) in embedded.iter().zip(svgs) {
        let svg = String::from_utf8_lossy(bytes(&files, name)).into_owned();
        let titles: Vec<&str> = svg.split("<title>").skip(1).filter_map(|t| t.split("</title>").next()).collect();
        assert!(titles.len() > 1, "{name} has frames");
        for title in titles {
            assert!(doc.contains(&format!("<title>{title}</title>")), "report.html does not embed the frame `{title}` of {name}");
        }
    }
    golden!("report.html", page);
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

#[test]
fn alerts_yml_is_golden_and_valid_yaml() {
    let (_, files) = outputs();
    let yml = text(&files, "alerts.yml");
    serde_yaml::from_str::<serde_yaml::Value>(yml).expect("alerts.yml is YAML");
    golden!("alerts.yml", yml);
}

#[test]
fn ci_workflow_is_golden_and_valid_yaml() {
    let (_, files) = outputs();
    let yml = text(&files, "perf-audit-ci.yml");
    serde_yaml::from_str::<serde_yaml::Value>(yml).expect("perf-audit-ci.yml is YAML");
    golden!("perf-audit-ci.yml", yml);
}

/// The flamegraphs' inputs.
#[test]
fn folded_stacks_are_golden() {
    let (_, files) = outputs();
    golden!("stacks.folded", text(&files, "stacks.folded"));
    golden!("offcpu.folded", text(&files, "offcpu.folded"));
}

/// The evidence is rebuilt each time, so every `HashMap` in it (and in the
/// analyses) gets new random keys: an output that depended on a map's
/// iteration order would differ between two runs.
#[test]
fn outputs_do_not_depend_on_map_iteration_order() {
    let (_, first) = outputs();
    for _ in 0..4 {
        let (_, again) = outputs();
        for (a, b) in first.iter().zip(&again) {
            assert!(a == b, "{} differs between two renderings of the same evidence", a.name);
        }
    }
}

/// The other branches of the report: an interrupted CPU-only audit without
/// load, with `--bench` (see `test_evidence::ledger_svc_interrupted_cpu_bench`).
#[test]
fn an_interrupted_cpu_audit_with_benchmarks_is_golden() {
    let (report, files) = outputs_of(&test_evidence::ledger_svc_interrupted_cpu_bench());
    assert!(report.partial && report.async_runtime.is_none() && report.memory.is_none() && report.database.is_none());
    let names: Vec<&str> = files.iter().map(|f| f.name).collect();
    assert_eq!(names, ["stacks.folded", "flamegraph.svg", "report.json", "report.md", "alerts.yml", "report.html", "perf-audit-ci.yml"]);
    golden!("interrupted-cpu-bench.report.md", text(&files, "report.md"));
    golden!("interrupted-cpu-bench.perf-audit-ci.yml", text(&files, "perf-audit-ci.yml"));
}

/// Characters that render as emoji, or as empty boxes where no emoji font
/// is installed (headless Chromium on Debian): anything outside the Basic
/// Multilingual Plane, and the BMP's symbol and pictograph blocks
/// (Miscellaneous Technical, Geometric Shapes, Miscellaneous Symbols,
/// Dingbats, Miscellaneous Symbols and Arrows, variation selectors).
fn emoji_like(c: char) -> bool {
    let u = c as u32;
    u > 0xFFFF
        || (0x2300..=0x23FF).contains(&u)
        || (0x25A0..=0x27BF).contains(&u)
        || (0x2B00..=0x2BFF).contains(&u)
        || (0xFE00..=0xFE0F).contains(&u)
        || u == 0x200D
}

#[test]
fn no_rendered_output_contains_an_emoji() {
    assert!(emoji_like('🔴') && emoji_like('🟢') && emoji_like('⚠') && emoji_like('✅') && !emoji_like('→') && !emoji_like('µ'));
    let interrupted = test_evidence::ledger_svc_interrupted_cpu_bench();
    for evidence in [test_evidence::ledger_svc(), interrupted] {
        let (report, files) = outputs_of(&evidence);
        let mut texts: Vec<(String, String)> =
            files.iter().map(|f| (f.name.to_string(), String::from_utf8_lossy(&f.bytes).into_owned())).collect();
        texts.push(("terminal summary".into(), crate::report::summary::terminal(&report).join("\n")));
        for (name, text) in texts {
            for (line_no, line) in text.lines().enumerate() {
                if let Some(c) = line.chars().find(|c| emoji_like(*c)) {
                    panic!("{name} line {}: emoji-like U+{:04X} in: {line}", line_no + 1, c as u32);
                }
            }
        }
    }
    // The diff's and the benchmark table's markdown (their golden files).
    for (name, text) in [
        ("regression.diff.md", include_str!("../diff/testdata/regression.diff.md")),
        ("improvement.diff.md", include_str!("../diff/testdata/improvement.diff.md")),
    ] {
        assert!(!text.chars().any(emoji_like), "{name} contains an emoji");
    }
}
