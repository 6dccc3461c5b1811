//! The "Memory Profiling Results" section of `report.md`, in the seed's
//! structure: peak/current memory, the top allocators table
//! (Location | Size | Count | Type), issues detected, recommendations.
//! Pure and deterministic.

use std::fmt::Write as _;

use crate::memory::section::MemorySection;
use crate::findings::{Category, Finding};

fn size(bytes: f64) -> String {
    const KIB: f64 = 1024.0;
    if bytes >= KIB * KIB * KIB {
        format!("{:.2} GiB", bytes / (KIB * KIB * KIB))
    } else if bytes >= KIB * KIB {
        format!("{:.1} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB {
        format!("{:.1} KiB", bytes / KIB)
    } else {
        format!("{bytes:.0} B")
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn location(function: &str, file: &Option<String>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("`{}` ({f}:{l})", cell(function)),
        (Some(f), None) => format!("`{}` ({f})", cell(function)),
        _ => format!("`{}`", cell(function)),
    }
}

pub fn markdown(md: &mut String, m: &MemorySection, findings: &[Finding]) {
    let _ = writeln!(md, "### Memory Profiling Results\n");
    let _ = writeln!(md, "**Peak memory**: {} (VmHWM)", size(m.peak_rss_bytes as f64));
    let _ = writeln!(md, "**Current memory**: {} (VmRSS at the end)", size(m.current_rss_bytes as f64));
    if let Some(fit) = &m.rss_growth {
        let _ = writeln!(md, "**RSS trend**: {}/s (least squares over {} points, r² {:.2})", size(fit.slope), fit.points, fit.r2);
    }
    let _ = writeln!(md, "**Mode**: {}: {}", m.mode, m.sampling);
    let probes: Vec<String> = m
        .probes
        .iter()
        .map(|p| {
            format!(
                "`{}+{}` ({}, {})",
                p.symbol,
                p.offset,
                p.instruction,
                if p.emulated { "emulated" } else { "single-stepped" }
            )
        })
        .collect();
    let _ = writeln!(md, "**Allocator**: {}; probes: {}", m.allocator, probes.join(", "));
    let _ = writeln!(md, "**Measured cost**: {}", m.probe_cost.summary);
    let _ = writeln!(
        md,
        "**Observed**: {} allocations and {} frees while probed ({} estimated allocations, {} over the audit), {} allocation sites",
        m.alloc_calls_observed,
        m.free_calls_observed,
        m.total_allocations,
        size(m.total_bytes as f64),
        m.sites
    );
    let _ = writeln!(
        md,
        "**Dropped events**: {} (live-allocation map full {}, site map full {}, stack ring full {}, unmatched returns {}); frees of blocks allocated before or outside the probed time: {}",
        m.dropped.total, m.dropped.live_map_full, m.dropped.site_map_full, m.dropped.stack_ring_full, m.dropped.pending_lost, m.untracked_frees
    );

    let _ = writeln!(md, "\n**Top allocators**:\n");
    let _ = writeln!(md, "| Location | Size | Count | Type |");
    let _ = writeln!(md, "|----------|------|-------|------|");
    for r in &m.top_allocators {
        let _ = writeln!(
            md,
            "| {}{} | {} ({}/s) | {} ({:.0}/s) | {} |",
            location(&r.function, &r.file, r.line),
            r.via.as_deref().map(made_by).unwrap_or_default(),
            size(r.bytes as f64),
            size(r.bytes_per_s),
            r.count,
            r.allocs_per_s,
            cell(r.ty.as_deref().unwrap_or("-"))
        );
    }
    if m.top_allocators.is_empty() {
        let _ = writeln!(md, "| (no allocation observed) | | | |");
    }

    if !m.leak_candidates.is_empty() {
        let _ = writeln!(md, "\n**Leak candidates** (allocations never seen freed, outstanding at the end):\n");
        let _ = writeln!(md, "| Location | Outstanding | Allocations | Type | Held by a collection |");
        let _ = writeln!(md, "|----------|-------------|-------------|------|----------------------|");
        for l in &m.leak_candidates {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                location(&l.function, &l.file, l.line),
                size(l.bytes as f64),
                l.count,
                cell(l.ty.as_deref().unwrap_or("-")),
                if l.held_by_collection { "yes" } else { "no" }
            );
        }
    }
    if !m.growth.is_empty() {
        let _ = writeln!(md, "\n**Steady growth** (live bytes over time, least squares):\n");
        let _ = writeln!(md, "| Location | Slope | r² | From | To |");
        let _ = writeln!(md, "|----------|-------|----|------|----|");
        for g in &m.growth {
            let _ = writeln!(
                md,
                "| {} | {}/s | {:.2} | {} | {} |",
                location(&g.function, &g.file, g.line),
                size(g.slope_bytes_per_s),
                g.r2,
                size(g.start_bytes as f64),
                size(g.end_bytes as f64)
            );
        }
    }

    let pf = &m.page_faults;
    let _ = writeln!(
        md,
        "\n**Memory first touched** (page faults, {}; ~{} over the audit{}; dropped samples: {}):\n",
        pf.sampling,
        size(pf.estimated_bytes as f64),
        pf.faults_counted.map(|c| format!(", {c} faults counted by the kernel")).unwrap_or_default(),
        pf.dropped_samples
    );
    let _ = writeln!(md, "| Location | Estimated bytes | Samples | Share | Heap | Anonymous (mmap) | Stack |");
    let _ = writeln!(md, "|----------|-----------------|---------|-------|------|------------------|-------|");
    for r in &pf.top_sites {
        let _ = writeln!(
            md,
            "| {} | ~{} | {} | {:.1}% | {} | {} | {} |",
            location(&r.function, &r.file, r.line),
            size(r.estimated_bytes as f64),
            r.samples,
            r.share_pct,
            size(r.heap_bytes as f64),
            size(r.anonymous_bytes as f64),
            size(r.stack_bytes as f64)
        );
    }
    if pf.top_sites.is_empty() {
        let _ = writeln!(md, "| (no page fault sampled) | | | | | | |");
    }
    let mp = &m.mappings;
    let t = &mp.totals;
    let _ = writeln!(
        md,
        "\n**Mappings** (every mmap/munmap/brk counted: {} mmap ({}), {} munmap ({}), {} brk growths ({}, shrunk {}); stacks for anonymous mmap/munmap >= {} and every brk growth; dropped: {}):\n",
        t.mmap_calls,
        size(t.mmap_bytes as f64),
        t.munmap_calls,
        size(t.munmap_bytes as f64),
        t.brk_grow_calls,
        size(t.brk_grow_bytes as f64),
        size(t.brk_shrink_bytes as f64),
        size(mp.stack_threshold_bytes as f64),
        mp.dropped
    );
    let _ = writeln!(md, "| Location | mmap | Still mapped | munmap | brk growth |");
    let _ = writeln!(md, "|----------|------|--------------|--------|------------|");
    for r in &mp.sites {
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {} | {} ({}) | {} ({}) |",
            location(&r.function, &r.file, r.line),
            size(r.mmap_bytes as f64),
            r.mmap_calls,
            size(r.still_mapped_bytes as f64),
            size(r.munmap_bytes as f64),
            r.munmap_calls,
            size(r.brk_bytes as f64),
            r.brk_calls
        );
    }
    if mp.sites.is_empty() {
        let _ = writeln!(md, "| (no large mapping or heap growth) | | | | |");
    }
    let rs = &m.rss_series;
    if let (Some(first), Some(last)) = (rs.points.first(), rs.points.last()) {
        let fit = |f: &Option<crate::memory::analysis::Fit>| {
            f.as_ref().map(|f| format!("{}/s (r² {:.2})", size(f.slope), f.r2)).unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(md, "\n**RSS over time** (/proc/PID/smaps_rollup every {} ms, {} points):\n", rs.interval_ms, rs.points.len());
        let _ = writeln!(md, "| | Start | End | Peak | Trend |");
        let _ = writeln!(md, "|-|-------|-----|------|-------|");
        let _ = writeln!(md, "| RSS | {} | {} | {} | {} |", size(first.rss_bytes as f64), size(last.rss_bytes as f64), size(rs.peak_rss_bytes as f64), fit(&rs.rss_fit));
        let _ = writeln!(md, "| Anonymous | {} | {} | | {} |", size(first.anon_bytes as f64), size(last.anon_bytes as f64), fit(&rs.anon_fit));
        let _ = writeln!(md, "| `[heap]` (brk, virtual) | {} | {} | | |", size(first.heap_bytes as f64), size(last.heap_bytes as f64));
    }

    let memory_findings: Vec<&Finding> = findings.iter().filter(|f| f.category == Category::Memory).collect();
    let _ = writeln!(md, "\n**Issues detected**:\n");
    if memory_findings.is_empty() {
        let _ = writeln!(md, "- No leak, steady growth or allocation churn in your own code");
    }
    for f in &memory_findings {
        let dot = f.severity.badge();
        let at = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            _ => "-".into(),
        };
        let _ = writeln!(md, "- {dot} {}: {at}", f.title);
    }
    let _ = writeln!(md, "\n**Recommendations**:\n");
    if memory_findings.is_empty() {
        let _ = writeln!(md, "1. Nothing stands out in memory; see the memory flamegraph (`memory.svg`) for where bytes go.");
    }
    for (i, f) in memory_findings.iter().take(5).enumerate() {
        let _ = writeln!(md, "{}. `{}`: {}", i + 1, f.function, f.recommendation);
    }
}

/// Where a row's allocations really go when library code below the
/// owner's frame made them: the crate and, when known, its layer.
fn made_by(via: &str) -> String {
    let krate = crate::profile::layers::crate_of(via);
    match crate::profile::layers::layer_of(via) {
        Some(layer) => format!(" (made by `{krate}` below it: {})", layer.name),
        None => format!(" (made by `{krate}` below it)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        findings::{Category, Finding, Severity},
        memory::{
            analysis::{AllocatorRow, Fit, LeakRow},
            faults::RssPoint,
        },
        test_evidence,
    };

    fn rendered(m: &MemorySection, findings: &[Finding]) -> String {
        let mut md = String::new();
        markdown(&mut md, m, findings);
        md
    }

    #[test]
    fn sizes_switch_units_at_each_power_of_1024() {
        assert_eq!(size(1023.0), "1023 B");
        assert_eq!(size(1024.0), "1.0 KiB");
        assert_eq!(size(1536.0), "1.5 KiB");
        assert_eq!(size(1024.0 * 1024.0), "1.0 MiB");
        assert_eq!(size(3.0 * 1024.0 * 1024.0 * 1024.0), "3.00 GiB");
    }

    #[test]
    fn locations_name_the_function_and_escape_pipes() {
        assert_eq!(location("svc::a", &Some("/svc/src/a.rs".into()), Some(3)), "`svc::a` (/svc/src/a.rs:3)");
        assert_eq!(location("svc::a", &Some("/svc/src/a.rs".into()), None), "`svc::a` (/svc/src/a.rs)");
        assert_eq!(location("<a as b>::c|d", &None, Some(3)), "`<a as b>::c\\|d`");
    }

    #[test]
    fn an_empty_section_renders_placeholders_and_no_optional_tables() {
        let md = rendered(&MemorySection::default(), &[]);
        for row in ["| (no allocation observed) | | | |", "| (no page fault sampled) | | | | | | |", "| (no large mapping or heap growth) | | | | |"] {
            assert!(md.contains(row), "{row} missing:\n{md}");
        }
        for absent in ["**RSS trend**", "**Leak candidates**", "**Steady growth**", "**RSS over time**"] {
            assert!(!md.contains(absent), "{absent} present:\n{md}");
        }
        assert!(md.contains("- No leak, steady growth or allocation churn in your own code"));
        assert!(md.ends_with("1. Nothing stands out in memory; see the memory flamegraph (`memory.svg`) for where bytes go.\n"), "{md}");
    }

    #[test]
    fn rows_show_sizes_rates_types_and_whether_a_collection_holds_the_memory() {
        let m = MemorySection {
            rss_growth: Some(Fit { slope: 2048.0, intercept: 0.0, r2: 0.987, points: 9 }),
            top_allocators: vec![AllocatorRow {
                function: "svc::render".into(),
                file: Some("/svc/src/render.rs".into()),
                line: Some(23),
                bytes: 11 * 1024 * 1024,
                count: 120_000,
                ty: Some("Vec<u8>".into()),
                bytes_per_s: 384_000.0,
                allocs_per_s: 4_000.4,
                ..Default::default()
            }],
            leak_candidates: vec![
                LeakRow { function: "svc::log".into(), bytes: 4096, count: 8, ty: Some("Box<_>".into()), ..Default::default() },
                LeakRow { function: "svc::cache".into(), bytes: 3 << 20, count: 12_000, held_by_collection: true, ..Default::default() },
            ],
            ..Default::default()
        };
        let md = rendered(&m, &[]);
        assert!(md.contains("**RSS trend**: 2.0 KiB/s (least squares over 9 points, r² 0.99)"), "{md}");
        assert!(md.contains("| `svc::render` (/svc/src/render.rs:23) | 11.0 MiB (375.0 KiB/s) | 120000 (4000/s) | Vec<u8> |"), "{md}");
        assert!(md.contains("| `svc::log` | 4.0 KiB | 8 | Box<_> | no |"), "{md}");
        assert!(md.contains("| `svc::cache` | 3.0 MiB | 12000 | - | yes |"), "{md}");
    }

    #[test]
    fn the_rss_table_spans_the_first_and_last_points() {
        let point = |t_s: f64, rss_bytes: u64| RssPoint { t_s, rss_bytes, anon_bytes: rss_bytes / 2, heap_bytes: 1 << 20, huge_page_bytes: 0 };
        let points = vec![point(0.0, 10 << 20), point(0.5, 14 << 20), point(1.0, 12 << 20)];
        let m = MemorySection { rss_series: crate::memory::faults::rss_series(&points), ..Default::default() };
        let md = rendered(&m, &[]);
        assert!(md.contains("every 500 ms, 3 points"), "{md}");
        assert!(md.contains("| RSS | 10.0 MiB | 12.0 MiB | 14.0 MiB | 2.0 MiB/s (r² 0.25) |"), "{md}");
        assert!(md.contains("| `[heap]` (brk, virtual) | 1.0 MiB | 1.0 MiB | | |"), "{md}");
    }

    #[test]
    fn only_memory_findings_are_listed_with_their_severity() {
        let finding = |category, severity, function: &str| Finding {
            rule: "r".into(),
            category,
            severity,
            title: format!("title of {function}"),
            function: function.into(),
            file: Some("/svc/src/lib.rs".into()),
            line: Some(9),
            recommendation: format!("fix {function}"),
            ..Default::default()
        };
        let findings = [
            finding(Category::Memory, Severity::P0, "svc::leak"),
            finding(Category::Cpu, Severity::P0, "svc::hot"),
            Finding { file: None, ..finding(Category::Memory, Severity::P2, "svc::churn") },
        ];
        let md = rendered(&MemorySection::default(), &findings);
        assert!(md.contains("- **P0** title of svc::leak: /svc/src/lib.rs:9\n- **P2** title of svc::churn: -\n"), "{md}");
        assert!(md.ends_with("1. `svc::leak`: fix svc::leak\n2. `svc::churn`: fix svc::churn\n"), "{md}");
        assert!(!md.contains("svc::hot") && !md.contains("No leak"), "{md}");
    }

    #[test]
    fn the_fixture_section_names_its_allocator_probes_and_cost() {
        let (m, _) = test_evidence::memory();
        let md = rendered(&m, &[]);
        assert!(md.contains("**Allocator**: glibc malloc in /usr/lib/x86_64-linux-gnu/libc.so.6; probes: `malloc+4` (push, emulated), `free+12` (push, emulated)"), "{md}");
        assert!(md.contains("**Measured cost**: measured on the target: 0.41 s of kernel time"), "{md}");
        assert!(md.contains("**Dropped events**: 0 (live-allocation map full 0"), "{md}");
    }
}
