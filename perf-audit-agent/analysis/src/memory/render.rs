//! The "Memory Profiling Results" section of `report.md`, in the seed's
//! structure: peak/current memory, the top allocators table
//! (Location | Size | Count | Type), issues detected, recommendations.
//! Pure and deterministic.

use std::fmt::Write as _;

use super::section::MemorySection;
use crate::findings::{Category, Finding, Severity};

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
            "| {} | {} ({}/s) | {} ({:.0}/s) | {} |",
            location(&r.function, &r.file, r.line),
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
        let fit = |f: &Option<super::analysis::Fit>| {
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
        let _ = writeln!(md, "- 🟢 No leak, steady growth or allocation churn in your own code");
    }
    for f in &memory_findings {
        let dot = match f.severity {
            Severity::P0 => "🔴",
            Severity::P1 => "🟡",
            Severity::P2 => "🟢",
        };
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
