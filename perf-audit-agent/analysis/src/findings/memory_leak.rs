//! `memory-leak`: a site of the owner's code whose allocations were never
//! seen freed and still hold memory at the end of the audit, and which does
//! not grow a collection (that case is `unbounded-growth`'s). Ranked by the
//! bytes outstanding and, when it also rises steadily, by its slope.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};
use crate::profile::Origin;

pub struct MemoryLeak {
    /// Outstanding bytes from which a leak is P1 (else P2); a steady rise
    /// projected to this much per hour makes it P0.
    pub p1_bytes: u64,
    pub p0_bytes_per_hour: f64,
}

impl Default for MemoryLeak {
    fn default() -> Self {
        MemoryLeak { p1_bytes: 10 * 1024 * 1024, p0_bytes_per_hour: 1024.0 * 1024.0 * 1024.0 }
    }
}

pub(crate) fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

impl Rule for MemoryLeak {
    fn id(&self) -> &'static str {
        "memory-leak"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(memory) = &evidence.memory else { return Vec::new() };
        let section = memory.section;
        section
            .leak_candidates
            .iter()
            .filter(|l| !l.held_by_collection && l.origin == Origin::Owner)
            // Memory a library decided below a frame that only awaits it.
            .filter(|l| l.via.as_deref().is_none_or(crate::profile::layers::owner_decides))
            .map(|l| {
                let growth = section.growth.iter().find(|g| g.function == l.function);
                let per_hour = growth.map(|g| g.slope_bytes_per_s * 3600.0).unwrap_or(0.0);
                let severity = if per_hour >= self.p0_bytes_per_hour {
                    Severity::P0
                } else if l.bytes >= self.p1_bytes || growth.is_some() {
                    Severity::P1
                } else {
                    Severity::P2
                };
                let ty = l.ty.as_deref().map(|t| format!(" ({t})")).unwrap_or_default();
                let rise = growth
                    .map(|g| format!("; its live bytes rose {}/s (least squares, r² {:.2}, {} points)", mib(g.slope_bytes_per_s), g.r2, g.points))
                    .unwrap_or_default();
                let confidence = if l.p_all_freed_unseen > 0.0 {
                    format!(" (chance that all were freed unseen: {:.1e})", l.p_all_freed_unseen)
                } else {
                    String::new()
                };
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Memory,
                    title: format!("`{}` leaks {}: its allocations are never freed", l.function, mib(l.bytes as f64)),
                    function: l.function.clone(),
                    file: l.file.clone(),
                    line: l.line,
                    evidence: format!(
                        "{} of its allocations{ty} were observed and none was freed{confidence}; {} outstanding at the end ({} allocations, {} mode){rise}{}",
                        l.observed_allocations, mib(l.bytes as f64), l.count, section.mode,
                        super::unbounded_growth::corroboration(section, &l.function)
                    ),
                    recommendation: "give these allocations an owner that drops them: look for `Box::leak`, `mem::forget`, `Rc`/`Arc` cycles (use `Weak` for back-references) or a `static` that only ever accumulates".to_string(),
                    impact: if severity == Severity::P2 { Level::Medium } else { Level::High },
                    complexity: Complexity::Medium,
                    estimated_gain: if per_hour > 0.0 {
                        format!("{} less memory per hour of uptime", mib(per_hour))
                    } else {
                        format!("{} less memory", mib(l.bytes as f64))
                    },
                    ranking: format!(
                        "outstanding {}: P1 from {}, P0 when rising {} per hour or more",
                        mib(l.bytes as f64),
                        mib(self.p1_bytes as f64),
                        mib(self.p0_bytes_per_hour)
                    ),
                    code_fix: Some(CodeFix {
                        before: "let buf = vec![0u8; 8192];\nstd::mem::forget(buf);            // never freed".to_string(),
                        after: "let buf = vec![0u8; 8192];\nstate.buffers.push(buf);          // owned, dropped with `state`".to_string(),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}
