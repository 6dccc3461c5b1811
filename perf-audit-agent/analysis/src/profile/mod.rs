//! The profile model: symbolized stacks with counts, and the analyses that
//! turn them into hotspots. Pure data and computation: no I/O, no clocks,
//! so every analysis is testable with hand-built stacks.

pub mod async_runtime;
pub mod crates;
pub mod hotspots;
pub mod layers;

use std::collections::HashMap;

/// Where a frame's code comes from; decides whether a hotspot may be
/// attributed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The target's own crates: hotspots and findings name these.
    Owner,
    /// Rust std/core/alloc or a crates.io / git dependency.
    Dependency,
    /// A native library or a binary without line info (libc, vdso...).
    Native,
    /// The kernel.
    Kernel,
    /// An address no symbol covers.
    #[default]
    Unknown,
}

/// One frame of a symbolized stack. Inlined calls are frames of their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Frame {
    /// Demangled name without the hash suffix; `[module]` when unknown.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub origin: Origin,
    /// True when this frame was inlined into its caller.
    pub inlined: bool,
}

impl Frame {
    /// The label used in flamegraphs and folded stacks: the function name,
    /// with `_[k]` for kernel frames (the convention inferno colours).
    pub fn label(&self) -> String {
        match self.origin {
            Origin::Kernel => format!("{}_[k]", self.function),
            _ => self.function.clone(),
        }
    }

    /// A frame of code without any symbol that still names its object
    /// (`svc+0x1a2b0`: a stripped binary), as opposed to an address outside
    /// every mapping (`0x7ffd...`).
    pub fn is_object_offset(&self) -> bool {
        self.origin == Origin::Unknown && !self.function.starts_with("0x") && self.function.contains("+0x")
    }

    /// Name for tables and findings: async fn bodies compile to
    /// `{{closure}}` frames, which are named after their fn here.
    pub fn display_name(&self) -> String {
        display_function_name(&self.function)
    }
}

/// Strips generated-closure suffixes so that `svc::handler::{{closure}}`
/// (an async fn body) reads `svc::handler`.
pub fn display_function_name(function: &str) -> String {
    let mut name = function;
    while let Some(stripped) = name.strip_suffix("::{{closure}}") {
        name = stripped;
    }
    name.to_string()
}

/// Index into [`CpuProfile::frames`].
pub type FrameId = u32;

/// One distinct stack and how many samples hit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSample {
    /// Thread name as the kernel has it (15 bytes at most).
    pub thread: String,
    pub tid: u32,
    /// Frames root first (outermost caller ... sampled function), user
    /// frames then kernel frames.
    pub frames: Vec<FrameId>,
    pub count: u64,
    /// Events behind `count` (samples; or blocking intervals when `count`
    /// is a time).
    pub events: u64,
    /// The user stack was captured (false: only kernel frames or none).
    pub has_user_stack: bool,
}

/// A CPU profile of one process.
#[derive(Debug, Clone, Default)]
pub struct CpuProfile {
    pub frames: Vec<Frame>,
    pub stacks: Vec<StackSample>,
    frame_ids: HashMap<Frame, FrameId>,
}

impl CpuProfile {
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        if let Some(id) = self.frame_ids.get(&frame) {
            return *id;
        }
        let id = self.frames.len() as FrameId;
        self.frame_ids.insert(frame.clone(), id);
        self.frames.push(frame);
        id
    }

    pub fn push(&mut self, thread: String, frames: Vec<FrameId>, count: u64, has_user_stack: bool) {
        self.stacks.push(StackSample { thread, tid: 0, frames, count, events: count, has_user_stack });
    }

    pub fn push_sample(&mut self, sample: StackSample) {
        self.stacks.push(sample);
    }

    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    pub fn total_samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// Share (0..=1) of samples whose user stack was unwound all the way:
    /// its outermost frame is a process or thread entry point (`_start`,
    /// `__libc_start_main`, `start_thread`, `clone3`...) or it passes
    /// through `main`. Stacks that stop early lose their callers and put
    /// the time under the wrong roots of the flamegraph.
    pub fn complete_share(&self) -> f64 {
        let total = self.total_samples();
        if total == 0 {
            return 0.0;
        }
        let complete: u64 = self.stacks.iter().filter(|s| self.is_complete(s)).map(|s| s.count).sum();
        complete as f64 / total as f64
    }

    fn is_complete(&self, stack: &StackSample) -> bool {
        if !stack.has_user_stack {
            return false;
        }
        let mut user = stack.frames.iter().map(|id| self.frame(*id)).filter(|f| f.origin != Origin::Kernel);
        let Some(root) = user.next() else { return false };
        is_thread_root(&root.function) || root.function == "main" || user.any(|f| f.function == "main")
    }

    /// Folded stacks (`root;...;leaf count`), thread name as the root frame,
    /// merged by label and sorted, so the output is deterministic.
    pub fn folded_lines(&self) -> Vec<String> {
        let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
        for stack in &self.stacks {
            let mut line = sanitize_label(&stack.thread);
            for id in &stack.frames {
                line.push(';');
                line.push_str(&sanitize_label(&self.frame(*id).label()));
            }
            *merged.entry(line).or_default() += stack.count;
        }
        merged.into_iter().map(|(stack, count)| format!("{stack} {count}")).collect()
    }
}

/// Entry points where a process's or thread's user stack begins.
pub fn is_thread_root(function: &str) -> bool {
    matches!(
        function,
        "_start" | "__libc_start_main" | "__libc_start_call_main" | "__libc_start_main_impl" | "start_thread"
            | "clone" | "clone3" | "__clone" | "__clone3" | "__GI___clone3" | "__GI___clone" | "thread_start"
            // musl (static binaries): the main thread's and pthread_create's entries.
            | "_start_c" | "libc_start_main_stage2" | "start" | "start_c11"
    )
}

/// Rounds to two decimals, for shares and milliseconds in reports.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Folded format separators cannot appear inside a frame label.
fn sanitize_label(label: &str) -> String {
    let clean: String = label.chars().map(|c| if c == ';' || c == '\n' { ':' } else { c }).collect();
    if clean.is_empty() { "[unnamed]".to_string() } else { clean }
}

/// Whether a source path belongs to the target's own code rather than the
/// toolchain's library or a downloaded dependency.
pub fn origin_of_path(path: &str) -> Origin {
    const DEPENDENCY_MARKERS: &[&str] = &[
        "/rustc/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/.rustup/toolchains/",
        "/vendor/",
        "/cargo/registry/",
        "/lib/rustlib/src/",
        "/rust/deps/",
    ];
    if DEPENDENCY_MARKERS.iter().any(|m| path.contains(m)) {
        Origin::Dependency
    } else if !path.ends_with(".rs") {
        // C/C++/assembly with debug info (glibc's `sysdeps/.../send.c`):
        // native libraries, never the owner's Rust crates.
        Origin::Native
    } else {
        Origin::Owner
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A frame of the target's own code.
    pub fn owner(function: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: Some("/src/svc/src/main.rs".into()),
            line: Some(line),
            origin: Origin::Owner,
            inlined: false,
        }
    }

    /// A std/dependency frame.
    pub fn dep(function: &str, inlined: bool) -> Frame {
        Frame {
            function: function.into(),
            file: Some("/rustc/abc/library/core/src/num/mod.rs".into()),
            line: Some(1),
            origin: Origin::Dependency,
            inlined,
        }
    }

    pub fn kernel(function: &str) -> Frame {
        Frame { function: function.into(), file: None, line: None, origin: Origin::Kernel, inlined: false }
    }

    pub fn profile(stacks: &[(&[Frame], u64)]) -> CpuProfile {
        let mut p = CpuProfile::default();
        for (frames, count) in stacks {
            let ids = frames.iter().cloned().map(|f| p.intern(f)).collect();
            p.push("worker".into(), ids, *count, true);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::{test_support::*, *};

    #[test]
    fn folded_lines_are_root_first_merged_and_sorted() {
        let main = owner("svc::main", 1);
        let hot = owner("svc::hot", 2);
        let p = profile(&[(&[main.clone(), hot.clone()], 3), (&[main.clone(), hot], 2), (&[main, kernel("do_syscall_64")], 1)]);
        assert_eq!(
            p.folded_lines(),
            vec!["worker;svc::main;do_syscall_64_[k] 1".to_string(), "worker;svc::main;svc::hot 5".to_string()]
        );
    }

    #[test]
    fn completeness_counts_stacks_reaching_main_or_a_thread_root() {
        let libc = |f: &str| Frame { function: f.into(), file: None, line: None, origin: Origin::Native, inlined: false };
        let p = profile(&[
            (&[libc("_start"), libc("__libc_start_main"), libc("main"), owner("svc::main", 1), owner("svc::hot", 2)], 6),
            (&[libc("clone3"), libc("start_thread"), owner("svc::worker", 3)], 2),
            (&[owner("svc::b", 4), owner("svc::hot", 2)], 2),
        ]);
        assert!((p.complete_share() - 0.8).abs() < 1e-9);
    }

    #[test]
    fn async_fn_bodies_are_named_after_their_fn() {
        assert_eq!(display_function_name("svc::handlers::feed::{{closure}}"), "svc::handlers::feed");
        assert_eq!(display_function_name("svc::a::{{closure}}::{{closure}}"), "svc::a");
        assert_eq!(display_function_name("svc::plain"), "svc::plain");
    }

    #[test]
    fn std_and_registry_paths_are_dependencies() {
        assert_eq!(origin_of_path("/rustc/17067e9/library/core/src/num/mod.rs"), Origin::Dependency);
        assert_eq!(
            origin_of_path("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/mod.rs"),
            Origin::Dependency
        );
        assert_eq!(origin_of_path("/work/svc/src/handlers.rs"), Origin::Owner);
        assert_eq!(origin_of_path("./socket/../sysdeps/unix/sysv/linux/send.c"), Origin::Native);
    }
}
