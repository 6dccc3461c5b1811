//! Hotspots: where CPU time goes, attributed to the owner's code.
//!
//! A sample's time is charged to the innermost frame of the target's own
//! crates (`Origin::Owner`): inlined std/core helpers such as
//! `u64::wrapping_mul` sit below it as leaf frames, but the owner can only
//! change their own function, so that is what a hotspot names. What ran
//! below that frame is kept (`callees`) to explain the hotspot. Samples with
//! no owner frame at all (runtime idle loops, libc) are charged to their
//! innermost user frame, or kernel frame, so shares still add up to 100%.

use std::collections::{BTreeMap, HashSet};

use super::{CpuProfile, Origin};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Hotspot {
    pub function: String,
    pub file: Option<String>,
    /// The line of `function` that most samples were at.
    pub line: Option<u32>,
    pub origin: Origin,
    pub self_samples: u64,
    pub total_samples: u64,
    pub self_pct: f64,
    pub total_pct: f64,
    /// Percent of this hotspot's self samples taken on a Tokio runtime
    /// (a `tokio::runtime` frame on the stack): work that holds a worker.
    pub on_async_runtime_pct: f64,
    /// Functions that ran below this one (inlined helpers, callees in
    /// dependencies, the kernel), most samples first, at most 5.
    pub callees: Vec<(String, u64)>,
    /// Self samples in which this frame only awaited a framework future
    /// (see [`super::layers::passes_through`]): the time was below it.
    pub pass_through_samples: u64,
    /// Percent of self samples on a Tokio blocking-pool thread (inside
    /// `spawn_blocking`): already off the async workers.
    pub on_blocking_pool_pct: f64,
    /// The framework function it awaited most in those samples.
    pub passes_through: Option<String>,
    /// How the code ran off the async workers in most of its samples,
    /// when it did (`spawn_blocking`, deadpool's `interact`,
    /// `block_in_place`): a library hotspot there runs the owner's closure
    /// (inlined into the runtime's task when no frame of the owner shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_off_by: Option<String>,
    /// Framework layers the pass-through samples ran in (innermost known
    /// layer per sample), most samples first.
    pub layers: Vec<(String, u64)>,
    /// Every function that ran below this frame (each counted once per
    /// sample), most samples first, at most 40: what a catalogue of known
    /// costly calls is matched against.
    pub below: Vec<(String, u64)>,
}

#[derive(Default)]
struct Accumulator {
    origin: Option<Origin>,
    file: Option<String>,
    self_samples: u64,
    lines: BTreeMap<u32, u64>,
    callees: BTreeMap<String, u64>,
    on_runtime: u64,
    pass_through: u64,
    on_blocking_pool: u64,
    awaited: BTreeMap<String, u64>,
    handed_off: BTreeMap<String, u64>,
    layers: BTreeMap<String, u64>,
    below: BTreeMap<String, u64>,
}

/// What ran below a charged frame, as one label: the leaf function, or,
/// when the sample was in the kernel, the last user frame and `→ kernel`
/// (e.g. `__libc_send → kernel`): the kernel leaf (a spinlock, a page
/// clear) says little about what the owner's code asked for.
fn callee_label(below: &[&super::Frame]) -> Option<String> {
    let leaf = below.last()?;
    if leaf.origin != Origin::Kernel {
        return Some(leaf.display_name());
    }
    match below.iter().rev().find(|f| f.origin != Origin::Kernel) {
        Some(user) => Some(format!("{} → kernel", user.display_name())),
        None => Some("kernel".to_string()),
    }
}

/// How a stack's code was handed off the async workers: the innermost
/// hand-off frame it shows.
fn hand_off(frames: &[&super::Frame]) -> Option<&'static str> {
    frames.iter().rev().find_map(|f| {
        let n = f.function.as_str();
        if n.contains("block_in_place") {
            Some("`tokio::task::block_in_place`")
        } else if n.starts_with("deadpool") && n.contains("interact") {
            Some("deadpool's `interact`")
        } else if n.contains("actix_web::web::block") || n.starts_with("actix_threadpool") {
            Some("actix-web's `web::block`")
        } else if n.contains("tokio::runtime::blocking::task::BlockingTask") || n.contains("spawn_blocking") {
            Some("`tokio::task::spawn_blocking`")
        } else {
            None
        }
    })
}

/// All functions that were charged at least one sample, most first.
pub fn hotspots(profile: &CpuProfile) -> Vec<Hotspot> {
    let total = profile.total_samples();
    if total == 0 {
        return Vec::new();
    }
    // One hotspot per (function, file): anonymous async blocks of two
    // files (`{async_fn#0}`) share a name but are different functions.
    let mut acc: BTreeMap<(String, Option<String>), Accumulator> = BTreeMap::new();
    let mut inclusive: BTreeMap<(String, Option<String>), u64> = BTreeMap::new();

    for stack in &profile.stacks {
        let frames: Vec<_> = stack.frames.iter().map(|id| profile.frame(*id)).collect();
        let charged = frames
            .iter()
            .rposition(|f| f.origin == Origin::Owner)
            .or_else(|| {
                // Never a process or thread entry point (`__libc_start_call_main`,
                // `start_thread`): they are on every stack and do no work; a
                // stripped binary's own code (`svc+0x1a2b0`) is a better answer.
                frames.iter().rposition(|f| {
                    (f.is_object_offset() || !matches!(f.origin, Origin::Kernel | Origin::Unknown)) && !super::is_thread_root(&f.function)
                })
            })
            .or_else(|| frames.len().checked_sub(1));
        let Some(charged) = charged else { continue };
        let frame = frames[charged];
        let name = frame.display_name();
        let entry = acc.entry((name, frame.file.clone())).or_default();
        entry.origin.get_or_insert(frame.origin);
        if entry.file.is_none() {
            entry.file = frame.file.clone();
        }
        entry.self_samples += stack.count;
        if let Some(line) = frame.line {
            *entry.lines.entry(line).or_default() += stack.count;
        }
        if frames[..charged].iter().any(|f| f.function.starts_with("tokio::runtime::")) {
            entry.on_runtime += stack.count;
        }
        if let Some(callee) = callee_label(&frames[charged + 1..]) {
            *entry.callees.entry(callee).or_default() += stack.count;
        }
        if super::async_runtime::off_workers(&frames) {
            entry.on_blocking_pool += stack.count;
            if let Some(how) = hand_off(&frames) {
                *entry.handed_off.entry(how.to_string()).or_default() += stack.count;
            }
        }
        let below = &frames[charged + 1..];
        if frame.origin == Origin::Owner
            && let Some(awaited) = super::layers::passes_through(below) {
                entry.pass_through += stack.count;
                *entry.awaited.entry(awaited.display_name()).or_default() += stack.count;
                if let Some(layer) = super::layers::innermost_layer(below) {
                    *entry.layers.entry(layer.name.to_string()).or_default() += stack.count;
                }
            }
        let below_names: HashSet<String> = below.iter().filter(|f| f.origin != Origin::Kernel).map(|f| f.display_name()).collect();
        for n in below_names {
            *entry.below.entry(n).or_default() += stack.count;
        }

        let distinct: HashSet<(String, Option<String>)> = frames.iter().map(|f| (f.display_name(), f.file.clone())).collect();
        for name in distinct {
            *inclusive.entry(name).or_default() += stack.count;
        }
    }

    let pct = |n: u64| (n as f64) * 100.0 / (total as f64);
    let mut out: Vec<Hotspot> = acc
        .into_iter()
        .map(|(key, a)| {
            let total_samples = inclusive.get(&key).copied().unwrap_or(a.self_samples);
            let function = key.0;
            let most_first = |m: BTreeMap<String, u64>, n: usize| {
                let mut v: Vec<(String, u64)> = m.into_iter().collect();
                v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
                v.truncate(n);
                v
            };
            let line = a.lines.iter().max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0))).map(|(l, _)| *l);
            let mut callees: Vec<(String, u64)> = a.callees.into_iter().collect();
            callees.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            callees.truncate(5);
            Hotspot {
                on_async_runtime_pct: (a.on_runtime as f64) * 100.0 / (a.self_samples.max(1) as f64),
                self_pct: pct(a.self_samples),
                total_pct: pct(total_samples),
                function,
                file: a.file,
                line,
                origin: a.origin.unwrap_or(Origin::Unknown),
                self_samples: a.self_samples,
                total_samples,
                callees,
                pass_through_samples: a.pass_through,
                on_blocking_pool_pct: (a.on_blocking_pool as f64) * 100.0 / (a.self_samples.max(1) as f64),
                passes_through: most_first(a.awaited, 1).into_iter().next().map(|(f, _)| f),
                handed_off_by: most_first(a.handed_off, 1).into_iter().next().filter(|(_, n)| n * 2 >= a.self_samples).map(|(f, _)| f),
                layers: most_first(a.layers, 5),
                below: most_first(a.below, 40),
            }
        })
        .collect();
    out.sort_by(|a, b| b.self_samples.cmp(&a.self_samples).then(a.function.cmp(&b.function)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::*;

    #[test]
    fn inlined_std_leaf_is_charged_to_the_owner_frame_above_it() {
        let p = profile(&[
            (&[owner("svc::main", 10), owner("svc::hash_all", 42), dep("core::num::<impl u64>::wrapping_mul", true)], 8),
            (&[owner("svc::main", 10), owner("svc::idle", 7)], 2),
        ]);
        let hs = hotspots(&p);
        assert_eq!(hs[0].function, "svc::hash_all");
        assert_eq!(hs[0].self_samples, 8);
        assert_eq!(hs[0].line, Some(42));
        assert!((hs[0].self_pct - 80.0).abs() < 1e-9);
        assert_eq!(hs[0].callees, vec![("core::num::<impl u64>::wrapping_mul".to_string(), 8)]);
        let main = hs.iter().find(|h| h.function == "svc::main");
        assert!(main.is_none(), "main has no self time: {hs:?}");
    }

    #[test]
    fn a_kernel_leaf_is_described_by_the_user_call_into_the_kernel() {
        let libc = |f: &str| crate::profile::Frame { function: f.into(), file: None, line: None, origin: Origin::Native, inlined: false };
        let p = profile(&[(&[owner("svc::fetch", 9), libc("__libc_send"), kernel("do_syscall_64"), kernel("_raw_spin_unlock")], 3)]);
        assert_eq!(hotspots(&p)[0].callees, vec![("__libc_send → kernel".to_string(), 3)]);
    }

    #[test]
    fn total_share_counts_each_sample_once_even_under_recursion() {
        let f = owner("svc::fib", 3);
        let p = profile(&[(&[owner("svc::main", 1), f.clone(), f.clone(), f], 4)]);
        let hs = hotspots(&p);
        assert_eq!(hs[0].function, "svc::fib");
        assert_eq!(hs[0].total_samples, 4);
        assert!((hs[0].total_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn stacks_without_owner_code_still_add_up() {
        let p = profile(&[
            (&[dep("tokio::runtime::park", false), kernel("ep_poll")], 5),
            (&[owner("svc::work", 9)], 5),
        ]);
        let hs = hotspots(&p);
        let total: u64 = hs.iter().map(|h| h.self_samples).sum();
        assert_eq!(total, 10);
        assert!(hs.iter().any(|h| h.function == "tokio::runtime::park" && h.origin == Origin::Dependency));
    }

    #[test]
    fn a_stripped_binary_is_charged_at_its_own_offsets_never_at_start_frames() {
        let libc = |f: &str| crate::profile::Frame { function: f.into(), file: None, line: None, origin: Origin::Native, inlined: false };
        let stripped = |f: &str| crate::profile::Frame { function: f.into(), file: None, line: None, origin: Origin::Unknown, inlined: false };
        let p = profile(&[
            (&[stripped("svc+0x9a10"), libc("__libc_start_main"), libc("__libc_start_call_main"), stripped("svc+0x1f000"), stripped("svc+0x1a2b0")], 9),
            (&[libc("clone3"), libc("start_thread"), stripped("0x7ffd1234")], 1),
        ]);
        let hs = hotspots(&p);
        assert_eq!(hs[0].function, "svc+0x1a2b0", "{hs:?}");
        assert_eq!(hs[0].self_samples, 9);
        assert!(hs.iter().all(|h| !crate::profile::is_thread_root(&h.function)), "{hs:?}");
    }

    #[test]
    fn async_closure_frames_merge_under_their_fn() {
        let p = profile(&[
            (&[owner("svc::handler::{{closure}}", 20)], 3),
            (&[owner("svc::handler", 21)], 1),
        ]);
        let hs = hotspots(&p);
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].function, "svc::handler");
        assert_eq!(hs[0].self_samples, 4);
        assert_eq!(hs[0].line, Some(20));
    }
}
