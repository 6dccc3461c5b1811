//! `unbounded-growth`: the live bytes attributed to a function of the
//! owner's code rise steadily over the audit (least-squares slope, r²),
//! typically a map or vector used as a cache that is never evicted. Leaks
//! that do not go through a collection are `memory-leak`'s.
//!
//! Growth needs a material rate and total. Allocations that go into a
//! collection that is never shrunk show their mechanism: they fire from
//! the analysis' 256 KiB rise. Any other rise of live bytes must reach
//! 4 MiB over the audit and 0.1 MiB/s (~350 MiB per hour): a service
//! warming up (allocator arenas, pools, per-connection buffers, lazily
//! built state) rises by a few MiB in its first minutes and levels off,
//! which a 30 s audit cannot tell from growth below that; or the process
//! RSS must rise the same way (least squares, r² >= 0.8, a positive
//! slope). Allocations made by framework or runtime code below an owner
//! frame that only awaits it (`main` under `axum::serve`) are not the
//! owner's growth.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity, memory_leak::mib};
use crate::{memory::analysis::GrowthRow, profile::Origin};

pub struct UnboundedGrowth {
    /// Projected growth per hour from which the finding is P0 / P1.
    pub p0_bytes_per_hour: f64,
    pub p1_bytes_per_hour: f64,
    /// Growth not held by a never-shrunk collection: its rise over the
    /// audit and its rate from which it is material (or a rising RSS).
    pub min_rise_bytes: f64,
    pub min_bytes_per_s: f64,
}

impl Default for UnboundedGrowth {
    fn default() -> Self {
        UnboundedGrowth {
            p0_bytes_per_hour: 1024.0 * 1024.0 * 1024.0,
            p1_bytes_per_hour: 100.0 * 1024.0 * 1024.0,
            min_rise_bytes: 4.0 * 1024.0 * 1024.0,
            min_bytes_per_s: 0.1 * 1024.0 * 1024.0,
        }
    }
}

/// A size or a rate in the unit that shows it: `+0.0 MiB/s` said nothing.
pub(super) fn human(bytes: f64) -> String {
    let abs = bytes.abs();
    if abs >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else if abs >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

impl UnboundedGrowth {
    /// Whether a row's growth is material (see the module's doc).
    fn material(&self, g: &GrowthRow, rss_rises: bool) -> bool {
        let kept_by_collection = g.held_by_collection;
        let rise = g.end_bytes.saturating_sub(g.start_bytes) as f64;
        kept_by_collection || (rise >= self.min_rise_bytes && g.slope_bytes_per_s >= self.min_bytes_per_s) || rss_rises
    }
}

/// Independent evidence from the continuous memory signals: the memory
/// this function first touched (sampled page faults) and the process RSS
/// trend. Empty when neither says anything.
pub(super) fn corroboration(section: &crate::memory::section::MemorySection, function: &str) -> String {
    let mut parts = Vec::new();
    let pf = &section.page_faults;
    if let Some(r) = pf.top_sites.iter().find(|r| r.function == function) {
        parts.push(format!(
            "it first touched ~{} of new pages over the audit ({} of {} sampled page faults, 1 in {})",
            mib(r.estimated_bytes as f64),
            r.samples,
            pf.samples,
            pf.sampling_period
        ));
    }
    if let Some(fit) = section.rss_series.rss_fit.as_ref().filter(|f| f.slope > 0.0 && f.r2 >= 0.8) {
        parts.push(format!("the process RSS rose at {}/s (r² {:.2} over {} points)", mib(fit.slope), fit.r2, fit.points));
    }
    if parts.is_empty() { String::new() } else { format!("; {}", parts.join("; ")) }
}

impl Rule for UnboundedGrowth {
    fn id(&self) -> &'static str {
        "unbounded-growth"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(memory) = &evidence.memory else { return Vec::new() };
        let section = memory.section;
        let plain_leak = |f: &str| section.leak_candidates.iter().any(|l| l.function == f && !l.held_by_collection);
        // Memory never freed and held by a collection is growth too, even
        // when too few points were seen for a fit (a slow cache): its rise
        // is the outstanding bytes over the audit.
        let elapsed = section.elapsed_s.max(1e-9);
        let rss_rises = section.rss_series.rss_fit.as_ref().is_some_and(|f| f.slope > 0.0 && f.r2 >= 0.8 && f.slope >= self.min_bytes_per_s / 10.0);
        let held: Vec<GrowthRow> = section
            .leak_candidates
            .iter()
            .filter(|l| l.held_by_collection && !section.growth.iter().any(|g| g.function == l.function))
            .map(|l| GrowthRow {
                function: l.function.clone(),
                file: l.file.clone(),
                line: l.line,
                slope_bytes_per_s: l.bytes as f64 / elapsed,
                r2: 0.0,
                start_bytes: 0,
                end_bytes: l.bytes,
                points: 0,
                ty: l.ty.clone(),
                held_by_collection: true,
                collection_grown_in: l.collection_grown_in.clone(),
                never_freed: true,
                origin: l.origin,
                via: l.via.clone(),
            })
            .collect();
        section
            .growth
            .iter()
            .chain(held.iter())
            .filter(|g| g.origin == Origin::Owner && !plain_leak(&g.function))
            .filter(|g| g.via.as_deref().is_none_or(crate::profile::layers::owner_decides))
            .filter(|g| self.material(g, rss_rises))
            .map(|g| {
                let per_hour = g.slope_bytes_per_s * 3600.0;
                let severity = if per_hour >= self.p0_bytes_per_hour {
                    Severity::P0
                } else if per_hour >= self.p1_bytes_per_hour {
                    Severity::P1
                } else {
                    Severity::P2
                };
                let what = g.ty.as_deref().map(|t| format!(" ({t})")).unwrap_or_default();
                let (recommendation, code_fix) = if g.held_by_collection {
                    let which = match &g.collection_grown_in {
                        Some(f) if *f != g.function => format!("the collection grown in `{f}`"),
                        _ => "the collection".to_string(),
                    };
                    (
                        format!("bound {which}: a cache with a maximum size and a TTL (e.g. `moka::sync::Cache::builder().max_capacity(..).time_to_live(..)`), keyed so that lookups hit, or evict entries when they are no longer needed"),
                        Some(CodeFix {
                            before: "static CACHE: LazyLock<Mutex<HashMap<K, V>>> = ...;\nCACHE.lock().unwrap().insert(key, value);   // never evicted".to_string(),
                            after: "static CACHE: LazyLock<moka::sync::Cache<K, V>> = LazyLock::new(|| {\n    moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(300)).build()\n});\nCACHE.insert(key, value);".to_string(),
                        }),
                    )
                } else {
                    (
                        "find what keeps these allocations alive and bound it (a queue without backpressure, a buffer that only grows, a per-connection state never dropped)".to_string(),
                        None,
                    )
                };
                let evidence_tail = corroboration(section, &g.function);
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Memory,
                    title: format!(
                        "Unbounded memory growth in `{}`: +{}/s ({} over the audit)",
                        g.function,
                        human(g.slope_bytes_per_s),
                        human(g.end_bytes.saturating_sub(g.start_bytes) as f64)
                    ),
                    function: g.function.clone(),
                    file: g.file.clone(),
                    line: g.line,
                    evidence: format!("{}{evidence_tail}", if g.points == 0 {
                        format!(
                            "{} allocated here{what} during the audit were never freed ({}/s on average, {} mode) and are held by a collection that is never shrunk",
                            mib(g.end_bytes as f64),
                            mib(g.slope_bytes_per_s),
                            section.mode
                        )
                    } else {
                        format!(
                            "live bytes allocated here{what} rose from {} to {} at {}/s (least squares over {} points, r² {:.2}, {} mode){}",
                            mib(g.start_bytes as f64),
                            mib(g.end_bytes as f64),
                            mib(g.slope_bytes_per_s),
                            g.points,
                            g.r2,
                            section.mode,
                            if g.held_by_collection { "; the allocations grow a collection (map/vector) that is never shrunk" } else { "" }
                        )
                    }),
                    recommendation,
                    impact: if severity == Severity::P2 { Level::Medium } else { Level::High },
                    complexity: if g.held_by_collection { Complexity::Easy } else { Complexity::Medium },
                    estimated_gain: format!("{} less memory per hour of uptime", mib(per_hour)),
                    ranking: format!(
                        "projected {} per hour: P0 from {}, P1 from {}; material because {}",
                        mib(per_hour),
                        mib(self.p0_bytes_per_hour),
                        mib(self.p1_bytes_per_hour),
                        if g.held_by_collection {
                            "its allocations go into a collection that is never shrunk (rise from 256 KiB)".to_string()
                        } else if rss_rises {
                            "the process RSS rises the same way (r² >= 0.8)".to_string()
                        } else {
                            format!("it rose by at least {} at {}/s or more (warm-up levels off below that)", human(self.min_rise_bytes), human(self.min_bytes_per_s))
                        }
                    ),
                    code_fix,
                    source: None,
                }
            })
            .collect()
    }
}
