//! `cpu-hotspot`: a function of the target's own code that takes a large
//! share of the CPU samples by itself (self time, after charging inlined
//! std helpers to it). The recommendation follows what ran below it.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Level, Rule, Severity};
use crate::profile::{Origin, hotspots::Hotspot};

pub struct CpuHotspot {
    /// Self share (percent) from which a hotspot is a P2 finding.
    pub p2_self_pct: f64,
    /// Self share (percent) from which it is P1.
    pub p1_self_pct: f64,
    /// Fewer samples than this and shares are too noisy to act on.
    pub min_samples: u64,
}

impl Default for CpuHotspot {
    fn default() -> Self {
        CpuHotspot { p2_self_pct: 10.0, p1_self_pct: 30.0, min_samples: 20 }
    }
}

/// What dominates below a hotspot, read from its callee frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Allocation,
    Copying,
    Hashing,
    Formatting,
    Locking,
    Serialization,
    Regex,
    Syscalls,
    Compute,
}

pub fn classify(callees: &[(String, u64)]) -> WorkKind {
    let Some((leaf, _)) = callees.first() else { return WorkKind::Compute };
    let has = |needles: &[&str]| needles.iter().any(|n| leaf.contains(n));
    if has(&["futex", "Mutex", "RwLock", "parking_lot", "Condvar"]) {
        WorkKind::Locking
    } else if leaf.ends_with("kernel") && !has(&["malloc", "free", "realloc", "calloc"]) {
        WorkKind::Syscalls
    } else if has(&["malloc", "free", "realloc", "__rust_alloc", "__rust_dealloc", "alloc::alloc", "RawVec", "cfree", "_int_malloc", "_int_free"]) {
        WorkKind::Allocation
    } else if has(&["memcpy", "memmove", "clone", "to_owned", "to_vec"]) {
        WorkKind::Copying
    } else if has(&["Hasher", "sip", "hash::", "Hash>::hash"]) {
        WorkKind::Hashing
    } else if has(&["core::fmt", "alloc::fmt", "Display>::fmt", "Debug>::fmt", "write_fmt"]) {
        WorkKind::Formatting
    } else if has(&["serde", "Serialize", "Deserialize"]) {
        WorkKind::Serialization
    } else if has(&["regex"]) {
        WorkKind::Regex
    } else if has(&["do_syscall", "entry_SYSCALL", "__x64_sys_", "syscall"]) {
        WorkKind::Syscalls
    } else {
        WorkKind::Compute
    }
}

/// One-sentence advice for a hotspot of this kind.
pub fn recommendation(kind: WorkKind, hotspot: &Hotspot) -> String {
    let leaf = hotspot.callees.first().map(|(f, _)| f.as_str()).unwrap_or("its own code");
    match kind {
        WorkKind::Allocation => format!("allocation dominates (`{leaf}`): reuse buffers (`Vec::with_capacity`, `clear()`), avoid per-item `String`/`Vec` clones"),
        WorkKind::Copying => format!("copying dominates (`{leaf}`): borrow (`&str`, slices, `Arc<str>`) instead of cloning owned data"),
        WorkKind::Hashing => format!("hashing dominates (`{leaf}`): use a faster hasher (FxHash/ahash) for trusted keys, or hash once and cache"),
        WorkKind::Formatting => format!("string formatting dominates (`{leaf}`): write into a reused buffer, avoid `format!` in the loop"),
        WorkKind::Locking => format!("lock operations dominate (`{leaf}`): shorten critical sections or shard the lock"),
        WorkKind::Serialization => format!("(de)serialization dominates (`{leaf}`): serialize once and cache, or borrow with `&str` fields"),
        WorkKind::Regex => format!("regex work dominates (`{leaf}`): compile once (`LazyLock<Regex>`), prefer `str` methods for fixed patterns"),
        WorkKind::Syscalls => format!("system calls dominate (`{leaf}`): batch I/O through buffered readers/writers"),
        WorkKind::Compute => {
            let what = match hotspot.callees.first() {
                Some((leaf, _)) => format!("pure computation (down to `{leaf}`)"),
                None => "pure computation in this function's own code".to_string(),
            };
            if runs_on_runtime(hotspot) {
                format!(
                    "{what} on a Tokio worker ({:.0}% of its samples): move it to `tokio::task::spawn_blocking` (or rayon) so the worker keeps polling other tasks, and cache or simplify the work",
                    hotspot.on_async_runtime_pct
                )
            } else {
                format!("{what}: cache results or use a cheaper algorithm or data structure")
            }
        }
    }
}

/// Most of the hotspot's samples ran under a Tokio runtime frame.
fn runs_on_runtime(hotspot: &Hotspot) -> bool {
    hotspot.on_async_runtime_pct >= 50.0
}

fn code_fix(kind: WorkKind, hotspot: &Hotspot) -> Option<CodeFix> {
    let function = hotspot.function.as_str();
    let short = function.rsplit("::").next().unwrap_or(function);
    match kind {
        WorkKind::Allocation | WorkKind::Copying => Some(CodeFix {
            before: format!("fn {short}(items: &[Item]) -> Vec<String> {{\n    items.iter().map(|i| i.name.clone()).collect()   // one allocation per item\n}}"),
            after: format!("fn {short}<'a>(items: &'a [Item]) -> impl Iterator<Item = &'a str> {{\n    items.iter().map(|i| i.name.as_str())               // borrow, no allocation\n}}"),
        }),
        WorkKind::Hashing => Some(CodeFix {
            before: "let mut seen = std::collections::HashMap::new();".to_string(),
            after: "let mut seen = rustc_hash::FxHashMap::default(); // keys are not attacker-controlled".to_string(),
        }),
        WorkKind::Compute if runs_on_runtime(hotspot) => Some(CodeFix {
            before: format!("async fn handler() -> Response {{\n    let result = {short}(input);          // holds a runtime worker\n    respond(result)\n}}"),
            after: format!("async fn handler() -> Response {{\n    let result = tokio::task::spawn_blocking(move || {short}(input)).await?;\n    respond(result)\n}}"),
        }),
        _ => None,
    }
}

impl Rule for CpuHotspot {
    fn id(&self) -> &'static str {
        "cpu-hotspot"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(cpu) = &evidence.cpu else { return Vec::new() };
        if cpu.total_samples < self.min_samples {
            return Vec::new();
        }
        cpu.hotspots
            .iter()
            .filter(|h| h.origin == Origin::Owner && h.self_pct >= self.p2_self_pct)
            .map(|h| {
                let kind = classify(&h.callees);
                let severity = if h.self_pct >= self.p1_self_pct { Severity::P1 } else { Severity::P2 };
                let location = match (&h.file, h.line) {
                    (Some(f), Some(l)) => format!(" at {f}:{l}"),
                    _ => String::new(),
                };
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Cpu,
                    title: format!("`{}` takes {:.1}% of CPU samples", h.function, h.self_pct),
                    function: h.function.clone(),
                    file: h.file.clone(),
                    line: h.line,
                    evidence: format!(
                        "{} of {} CPU samples ({:.1}%) were in `{}`{location} or std/dependency code it inlines or calls ({:.1}% including everything it calls)",
                        h.self_samples, cpu.total_samples, h.self_pct, h.function, h.total_pct
                    ),
                    recommendation: recommendation(kind, h),
                    impact: if h.self_pct >= self.p1_self_pct { Level::High } else { Level::Medium },
                    complexity: match kind {
                        WorkKind::Hashing | WorkKind::Regex | WorkKind::Formatting => Complexity::Easy,
                        WorkKind::Compute => Complexity::Hard,
                        _ => Complexity::Medium,
                    },
                    estimated_gain: format!("up to {:.0}% less CPU", h.self_pct),
                    ranking: format!(
                        "self share {:.1}% of samples: P1 from {:.0}%, P2 from {:.0}%",
                        h.self_pct, self.p1_self_pct, self.p2_self_pct
                    ),
                    code_fix: code_fix(kind, h),
                    source: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        findings::CpuEvidence,
        profile::{hotspots::hotspots, test_support::*},
    };

    fn run(stacks: &[(&[crate::profile::Frame], u64)]) -> Vec<Finding> {
        let p = profile(stacks);
        let hs = hotspots(&p);
        let ev = Evidence { cpu: Some(CpuEvidence { profile: &p, hotspots: &hs, total_samples: p.total_samples() }), async_runtime: None, database: None, memory: None };
        CpuHotspot::default().check(&ev)
    }

    #[test]
    fn dominant_owner_function_is_p1_with_measured_share() {
        let f = run(&[
            (&[owner("svc::main", 1), owner("svc::hash_all", 42), dep("core::num::<impl u64>::wrapping_mul", true)], 90),
            (&[owner("svc::main", 1), owner("svc::other", 5)], 10),
        ]);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].function, "svc::hash_all");
        assert_eq!(f[0].severity, Severity::P1);
        assert_eq!(f[0].line, Some(42));
        assert!(f[0].evidence.contains("90 of 100"), "{}", f[0].evidence);
        assert_eq!(f[1].severity, Severity::P2);
    }

    #[test]
    fn too_few_samples_give_no_finding() {
        assert!(run(&[(&[owner("svc::hot", 1)], 5)]).is_empty());
    }

    #[test]
    fn dependency_hotspots_are_not_findings_on_the_owner() {
        assert!(run(&[(&[dep("tokio::runtime::park", false)], 100)]).is_empty());
    }

    #[test]
    fn leaf_kind_drives_the_advice() {
        assert_eq!(classify(&[("__memmove_avx_unaligned_erms".into(), 3)]), WorkKind::Copying);
        assert_eq!(classify(&[("<std::hash::random::DefaultHasher as core::hash::Hasher>::write".into(), 3)]), WorkKind::Hashing);
        assert_eq!(classify(&[("_int_malloc".into(), 3)]), WorkKind::Allocation);
        assert_eq!(classify(&[]), WorkKind::Compute);
        assert_eq!(classify(&[("__libc_send → kernel".into(), 3)]), WorkKind::Syscalls);
        // In the kernel under malloc (page faults, allocator probes): allocation.
        assert_eq!(classify(&[("__GI___libc_malloc → kernel".into(), 3)]), WorkKind::Allocation);
    }
}
