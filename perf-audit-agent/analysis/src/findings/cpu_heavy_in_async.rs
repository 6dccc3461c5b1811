//! `cpu-heavy-in-async`: a worker on the CPU in one task's code for longer
//! than the long-poll threshold without switching out, measured from
//! consecutive CPU samples of one thread within one on-CPU run. Every task
//! queued on that worker waits that long.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};

pub struct CpuHeavyInAsync {
    /// Longest stretch from which it is P0 (ms).
    pub p0_max_ms: f64,
}

impl Default for CpuHeavyInAsync {
    fn default() -> Self {
        CpuHeavyInAsync { p0_max_ms: 100.0 }
    }
}

impl Rule for CpuHeavyInAsync {
    fn id(&self) -> &'static str {
        "cpu-heavy-in-async"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(a) = evidence.async_runtime else { return Vec::new() };
        a.long_polls
            .iter()
            .map(|p| {
                let severity = if p.max_ms >= self.p0_max_ms { Severity::P0 } else { Severity::P1 };
                let short = p.function.rsplit("::").next().unwrap_or(&p.function).to_string();
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Async,
                    title: format!("`{}` runs on a Tokio worker for up to {:.0} ms without yielding", p.function, p.max_ms),
                    function: p.function.clone(),
                    file: p.file.clone(),
                    line: p.line,
                    evidence: format!(
                        "{} times a worker stayed on the CPU in `{}` past the long-poll threshold (consecutive samples in one on-CPU run); longest {:.1} ms",
                        p.occurrences, p.function, p.max_ms
                    ),
                    recommendation: "move the computation to tokio::task::spawn_blocking (or a rayon pool) and await its result".to_string(),
                    impact: if severity == Severity::P0 { Level::High } else { Level::Medium },
                    complexity: Complexity::Easy,
                    estimated_gain: format!("up to {:.0} ms less latency for requests queued behind it on the same worker", p.max_ms),
                    ranking: format!("longest stretch {:.1} ms: P0 from {} ms, else P1", p.max_ms, self.p0_max_ms),
                    code_fix: Some(CodeFix {
                        before: format!("let score = {short}(&input);                 // holds the worker"),
                        after: format!("let score = tokio::task::spawn_blocking(move || {short}(&input)).await?;"),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}
