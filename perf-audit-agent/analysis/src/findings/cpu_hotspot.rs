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

/// Share of a hotspot's self samples spent below a framework future it
/// awaits from which the time is charged to the framework's layers.
pub const PASS_THROUGH_PCT: f64 = 50.0;

/// How a hotspot is explained: by the framework layers it only passes
/// through, by a known costly call, or by the kind of its leaf work.
pub enum Explanation {
    /// The owner's frame awaited a framework future (`awaited`) and the
    /// time ran in these layers (name, samples, advice).
    Layers { awaited: String, samples: u64, layers: Vec<(String, u64, &'static str)> },
    Known(&'static super::known_costs::KnownCost, u64),
    Kind(WorkKind),
}

pub fn explain(h: &Hotspot) -> Explanation {
    if h.origin == Origin::Owner && h.pass_through_samples as f64 * 100.0 >= PASS_THROUGH_PCT * h.self_samples.max(1) as f64 {
        let layers: Vec<(String, u64, &'static str)> = h
            .layers
            .iter()
            .filter_map(|(name, n)| {
                let advice = crate::profile::layers::LAYER_ADVICE.iter().find(|(l, _)| l == name)?.1;
                Some((name.clone(), *n, advice))
            })
            .collect();
        if !layers.is_empty() {
            return Explanation::Layers {
                awaited: h.passes_through.clone().unwrap_or_default(),
                samples: h.pass_through_samples,
                layers,
            };
        }
    }
    match super::known_costs::lookup(&h.below, h.self_samples) {
        Some((k, n)) => Explanation::Known(k, n),
        None => Explanation::Kind(classify(&h.callees)),
    }
}

/// The layers that explain most of the pass-through time, named as one
/// phrase ("the tower-http trace layer and tracing_subscriber's fmt
/// writer"): each layer from a quarter of those samples, at most two.
fn layer_names<'a>(layers: &'a [(String, u64, &'static str)], samples: u64) -> Vec<&'a (String, u64, &'static str)> {
    let mut main: Vec<_> = layers.iter().filter(|(_, n, _)| *n * 4 >= samples).take(2).collect();
    if main.is_empty() {
        main = layers.iter().take(1).collect();
    }
    main
}

/// Advice for a hotspot row of the report (the same as its finding's).
pub fn advice(h: &Hotspot) -> String {
    match explain(h) {
        Explanation::Layers { layers, samples, .. } => {
            layer_names(&layers, samples).iter().map(|(_, _, a)| *a).collect::<Vec<_>>().join("; ")
        }
        Explanation::Known(k, _) => k.advice_for(h.on_blocking_pool_pct).to_string(),
        Explanation::Kind(kind) => recommendation(kind, h),
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
                let severity = if h.self_pct >= self.p1_self_pct { Severity::P1 } else { Severity::P2 };
                let location = match (&h.file, h.line) {
                    (Some(f), Some(l)) => format!(" at {f}:{l}"),
                    _ => String::new(),
                };
                let measured = format!(
                    "{} of {} CPU samples ({:.1}%) were in `{}`{location} or std/dependency code it inlines or calls ({:.1}% including everything it calls)",
                    h.self_samples, cpu.total_samples, h.self_pct, h.function, h.total_pct
                );
                let (title, evidence_text, recommendation, complexity, code_fix) = match explain(h) {
                    Explanation::Layers { awaited, samples, layers } => {
                        let named = layer_names(&layers, samples);
                        let names = named.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(" and ");
                        let verb = if named.len() > 1 { "take" } else { "takes" };
                        let split = layers.iter().map(|(n, c, _)| format!("{n} {c}")).collect::<Vec<_>>().join(", ");
                        (
                            format!("{names} {verb} {:.1}% of CPU under `{}`", h.self_pct, h.function),
                            format!(
                                "{measured}; in {samples} of those samples `{}` only awaited a framework future (`{awaited}`) and the time ran in framework code below it (samples by layer: {split}); its own code is not the cost",
                                h.function
                            ),
                            named.iter().map(|(_, _, a)| *a).collect::<Vec<_>>().join("; "),
                            Complexity::Easy,
                            None,
                        )
                    }
                    Explanation::Known(k, n) => (
                        format!("{} takes {:.1}% of CPU in `{}`", capitalize(k.what), h.self_pct, h.function),
                        format!("{measured}; {n} of those samples ran in {} below it (known costly call: {})", k.what, k.id),
                        k.advice_for(h.on_blocking_pool_pct).to_string(),
                        k.complexity,
                        k.code_fix_for(h.on_blocking_pool_pct),
                    ),
                    Explanation::Kind(kind) => (
                        format!("`{}` takes {:.1}% of CPU samples", h.function, h.self_pct),
                        measured,
                        recommendation(kind, h),
                        match kind {
                            WorkKind::Hashing | WorkKind::Regex | WorkKind::Formatting => Complexity::Easy,
                            WorkKind::Compute => Complexity::Hard,
                            _ => Complexity::Medium,
                        },
                        code_fix(kind, h),
                    ),
                };
                Finding {
                    rule: self.id().to_string(),
                    severity,
                    category: Category::Cpu,
                    title,
                    function: h.function.clone(),
                    file: h.file.clone(),
                    line: h.line,
                    evidence: evidence_text,
                    recommendation,
                    impact: if h.self_pct >= self.p1_self_pct { Level::High } else { Level::Medium },
                    complexity,
                    estimated_gain: format!("up to {:.0}% less CPU", h.self_pct),
                    ranking: format!(
                        "self share {:.1}% of samples: P1 from {:.0}%, P2 from {:.0}%",
                        h.self_pct, self.p1_self_pct, self.p2_self_pct
                    ),
                    code_fix,
                    source: None,
                }
            })
            .collect()
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
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
