//! `unbounded-growth`: the live bytes attributed to a function of the
//! owner's code rise steadily over the audit (least-squares slope, r²),
//! typically a map or vector used as a cache that is never evicted. Leaks
//! that do not go through a collection are `memory-leak`'s.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity, memory_leak::mib};
use crate::{memory::analysis::GrowthRow, profile::Origin};

pub struct UnboundedGrowth {
    /// Projected growth per hour from which the finding is P0 / P1.
    pub p0_bytes_per_hour: f64,
    pub p1_bytes_per_hour: f64,
}

impl Default for UnboundedGrowth {
    fn default() -> Self {
        UnboundedGrowth { p0_bytes_per_hour: 1024.0 * 1024.0 * 1024.0, p1_bytes_per_hour: 100.0 * 1024.0 * 1024.0 }
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
            })
            .collect();
        section
            .growth
            .iter()
            .chain(held.iter())
            .filter(|g| g.origin == Origin::Owner && !plain_leak(&g.function))
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
                    title: format!("Unbounded memory growth in `{}`: +{}/s", g.function, mib(g.slope_bytes_per_s)),
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
                        "projected {} per hour: P0 from {}, P1 from {}",
                        mib(per_hour),
                        mib(self.p0_bytes_per_hour),
                        mib(self.p1_bytes_per_hour)
                    ),
                    code_fix,
                    source: None,
                }
            })
            .collect()
    }
}
