//! `allocation-churn` and `allocation-hot-path`: a function of the owner's
//! code that allocates and frees at a high rate. When the same function is
//! also hot in the CPU profile the allocations are in a hot path (P1);
//! otherwise the churn alone is P2. The advice follows the allocation's
//! type and size: `Arc<str>` for strings, `smallvec` for small vectors,
//! buffer reuse for the rest.
//!
//! Only where the owner's own code decides the allocation: a row whose
//! allocations were made by framework, runtime, driver, instrumentation or
//! password-hashing code below a frame that only awaits or calls it (an
//! axum `from_fn` middleware over every handler, `main` under
//! `axum::serve`, tracing spans, sqlx futures, argon2's working memory) is
//! that library's normal per-request work, named in the memory table
//! beside the row, not a finding. A task spawned per call (`tokio::spawn`
//! in the owner's loop) is the owner's decision and keeps its finding.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};
use crate::{memory::analysis::AllocatorRow, profile::Origin};

pub struct AllocationChurn {
    /// Allocations per second from which a function churns.
    pub min_allocs_per_s: f64,
    /// Share of its bytes freed during the audit (it is churn, not growth).
    pub min_freed_pct: f64,
    /// CPU share (total %, including what it calls) from which the function
    /// is a hot path.
    pub hot_cpu_pct: f64,
    /// `true`: the `allocation-hot-path` rule; `false`: `allocation-churn`.
    pub hot_path: bool,
}

impl AllocationChurn {
    pub fn hot_path() -> Self {
        AllocationChurn { min_allocs_per_s: 1_000.0, min_freed_pct: 50.0, hot_cpu_pct: 5.0, hot_path: true }
    }

    pub fn churn() -> Self {
        AllocationChurn { min_allocs_per_s: 10_000.0, min_freed_pct: 90.0, hot_cpu_pct: 5.0, hot_path: false }
    }
}

/// Advice and a sketch that fit the allocation's type and average size;
/// for allocations made by framework or runtime code the owner's frame
/// called (`via`), advice about that call: buffer reuse cannot apply to a
/// spawned task's cell or the runtime's own `Arc<Handle>`.
fn advice(row: &AllocatorRow) -> (String, CodeFix) {
    let avg = row.bytes as f64 / row.count.max(1) as f64;
    let ty = row.ty.as_deref().unwrap_or("");
    if let Some(via) = &row.via {
        let krate = crate::profile::layers::crate_of(via);
        if matches!(krate, "tokio" | "tokio_util" | "async_std") {
            return (
                format!("the allocations are Tokio's own (`{via}`: a spawned task's cell and the runtime handle it clones), made once per call here: spawn fewer tasks (one task per batch, or `futures::stream::iter(..).buffer_unordered(n)` inside one task) instead of a task per item"),
                CodeFix {
                    before: "for item in items {\n    tokio::spawn(process(item));        // a task (and its allocations) per item\n}".to_string(),
                    after: "futures::stream::iter(items)\n    .map(process)\n    .buffer_unordered(16)               // one task, bounded concurrency\n    .collect::<Vec<_>>()\n    .await;".to_string(),
                },
            );
        }
        let layer = crate::profile::layers::layer_of(via);
        let name = layer.map(|l| l.name).unwrap_or("the framework");
        let what = layer.map(|l| l.advice).unwrap_or("per-request framework work: combine or drop layers you do not need");
        return (
            format!("the allocations are made by {name} (`{via}`, per-request boxing of futures and request data) below this frame, not by its own code: {what}"),
            CodeFix {
                before: "let app = Router::new().route(\"/\", get(h))\n    .layer(a).layer(b).layer(c);          // each layer boxes the request future".to_string(),
                after: "let app = Router::new().route(\"/\", get(h))\n    .layer(ServiceBuilder::new().layer(a).layer(b)); // fewer, combined layers".to_string(),
            },
        );
    }
    if ty == "String" {
        (
            format!("strings are built or cloned per call (average {avg:.0} B): share them as `Arc<str>` (clone = refcount), or borrow `&str`"),
            CodeFix {
                before: "struct Item { name: String }\nlet name = item.name.clone();          // allocates each time".to_string(),
                after: "struct Item { name: Arc<str> }\nlet name = Arc::clone(&item.name);     // no allocation".to_string(),
            },
        )
    } else if ty.starts_with("Vec") && avg <= 256.0 {
        (
            format!("small vectors (average {avg:.0} B) are allocated per call: keep them inline with `smallvec::SmallVec<[T; N]>`, or reuse one buffer"),
            CodeFix {
                before: "let mut ids: Vec<u64> = Vec::new();   // heap allocation per call".to_string(),
                after: "let mut ids: smallvec::SmallVec<[u64; 8]> = smallvec::SmallVec::new(); // inline up to 8".to_string(),
            },
        )
    } else {
        (
            format!("a buffer{} of {avg:.0} B on average is allocated and freed per call: reuse one (`clear()` keeps the capacity) or pre-size it with `with_capacity`", if ty.is_empty() { String::new() } else { format!(" ({ty})") }),
            CodeFix {
                before: "for item in items {\n    let mut buf = Vec::new();          // allocated and freed per item\n    encode(item, &mut buf);\n}".to_string(),
                after: "let mut buf = Vec::with_capacity(4096);\nfor item in items {\n    buf.clear();                        // keeps the allocation\n    encode(item, &mut buf);\n}".to_string(),
            },
        )
    }
}

impl Rule for AllocationChurn {
    fn id(&self) -> &'static str {
        if self.hot_path { "allocation-hot-path" } else { "allocation-churn" }
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(memory) = &evidence.memory else { return Vec::new() };
        let cpu_share = |f: &str| -> Option<(f64, f64)> {
            let cpu = evidence.cpu.as_ref()?;
            cpu.hotspots.iter().find(|h| h.function == f).map(|h| (h.self_pct, h.total_pct))
        };
        memory
            .section
            .top_allocators
            .iter()
            .filter(|r| r.origin == Origin::Owner && r.allocs_per_s >= self.min_allocs_per_s && r.freed_pct >= self.min_freed_pct)
            // Rows decoded by a database driver are judged by the database
            // rules (N+1, unbounded result sets), not by buffer advice.
            .filter(|r| !r.via.as_deref().is_some_and(crate::profile::layers::is_driver))
            // Library allocations below a frame that only awaits or calls it.
            .filter(|r| r.via.as_deref().is_none_or(crate::profile::layers::owner_decides))
            .filter_map(|r| {
                let hot = cpu_share(&r.function).filter(|(_, total)| *total >= self.hot_cpu_pct);
                if hot.is_some() != self.hot_path {
                    return None;
                }
                let (recommendation, fix) = advice(r);
                let ty = r.ty.as_deref().map(|t| format!(" of {t}")).unwrap_or_default();
                let measured = format!(
                    "{:.0} allocations/s{ty} ({}/s, {:.0}% freed during the audit, {} mode)",
                    r.allocs_per_s,
                    super::memory_leak::mib(r.bytes_per_s),
                    r.freed_pct,
                    memory.section.mode
                );
                let (mut title, mut evidence_text, severity, ranking) = match hot {
                    Some((self_pct, total_pct)) => (
                        format!("Allocation in a hot path: `{}`", r.function),
                        format!("{measured}; the function takes {total_pct:.1}% of CPU samples ({self_pct:.1}% by itself)"),
                        Severity::P1,
                        format!("allocation-heavy (from {:.0}/s) and CPU-hot (from {:.0}% of samples): P1", self.min_allocs_per_s, self.hot_cpu_pct),
                    ),
                    None => (
                        format!("Allocation churn in `{}`: {:.0} allocations/s", r.function, r.allocs_per_s),
                        measured,
                        Severity::P2,
                        format!("from {:.0} allocations/s, not hot in the CPU profile: P2", self.min_allocs_per_s),
                    ),
                };
                if let Some(via) = &r.via {
                    title = format!("Allocations by `{via}` under `{}`", r.function);
                    evidence_text.push_str(&format!("; most of them were made by `{via}` (framework/runtime code below this frame)"));
                }
                Some(Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Memory,
                    title,
                    function: r.function.clone(),
                    file: r.file.clone(),
                    line: r.line,
                    evidence: evidence_text,
                    recommendation,
                    impact: if self.hot_path { Level::High } else { Level::Low },
                    complexity: Complexity::Easy,
                    estimated_gain: match hot {
                        Some((self_pct, _)) => format!("up to {:.0} allocations/s fewer, part of {self_pct:.0}% CPU", r.allocs_per_s),
                        None => format!("up to {:.0} allocations/s fewer", r.allocs_per_s),
                    },
                    ranking,
                    code_fix: Some(fix),
                    source: None,
                })
            })
            .collect()
    }
}
