//! One symbolized profile of one process over one window: the value every
//! daemon output is encoded from (pprof, collapsed stacks, Pyroscope).
//! Pure data; the encoders built on it are deterministic.

use std::{collections::BTreeMap, time::SystemTime};

use crate::{profile::Frame, target::Mapping};

/// What a window measures: CPU samples, and with `--off-cpu` also the time
/// each stack spent blocked (its own sample type, `off_cpu/nanoseconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Cpu,
    CpuAndOffCpu,
}

/// What one stack of one process measured: CPU samples and time blocked.
/// A stack may have both (a function that computes, then blocks at the
/// same return addresses), usually one of the two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackValues {
    pub samples: u64,
    pub off_cpu_ns: u64,
}

impl StackValues {
    pub fn samples(samples: u64) -> StackValues {
        StackValues { samples, off_cpu_ns: 0 }
    }

    pub fn off_cpu(ns: u64) -> StackValues {
        StackValues { samples: 0, off_cpu_ns: ns }
    }

    pub fn add(&mut self, other: StackValues) {
        self.samples += other.samples;
        self.off_cpu_ns += other.off_cpu_ns;
    }
}

/// Who a profile belongs to: the labels every output carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessLabels {
    pub pid: u32,
    /// Executable file name (or comm when the exe cannot be read).
    pub name: String,
    /// Executable path (`/proc/PID/exe`), when readable.
    pub exe: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// One code address of a window, with what it symbolized to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLocation {
    /// The sampled instruction, or for callers the byte before the return
    /// address (inside the call instruction).
    pub address: u64,
    /// Index into [`ProcessWindow::mappings`]; `None` for kernel code.
    pub mapping: Option<usize>,
    /// Frames at this address, outermost first (the function, then what was
    /// inlined into it, innermost last).
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowStack {
    pub thread: String,
    /// Indexes into [`ProcessWindow::locations`], leaf first (pprof order).
    pub locations: Vec<usize>,
    /// CPU samples.
    pub count: u64,
    /// Time blocked (off-CPU windows; 0 otherwise).
    pub off_cpu_ns: u64,
}

#[derive(Debug, Clone)]
pub struct ProcessWindow {
    pub kind: WindowKind,
    pub process: ProcessLabels,
    pub start: SystemTime,
    pub end: SystemTime,
    pub frequency_hz: u64,
    pub mappings: Vec<Mapping>,
    pub locations: Vec<WindowLocation>,
    pub stacks: Vec<WindowStack>,
}

impl ProcessWindow {
    pub fn total_samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    pub fn total_off_cpu_ns(&self) -> u64 {
        self.stacks.iter().map(|s| s.off_cpu_ns).sum()
    }

    pub fn has_off_cpu(&self) -> bool {
        self.kind == WindowKind::CpuAndOffCpu
    }

    /// CPU time one sample stands for.
    pub fn period_ns(&self) -> i64 {
        (1_000_000_000 / self.frequency_hz.max(1)) as i64
    }

    /// Collapsed stacks (`thread;root;...;leaf count`) of the CPU samples,
    /// every frame kept (inlined ones included), merged and sorted:
    /// deterministic.
    pub fn folded_lines(&self) -> Vec<String> {
        self.folded_by(|s| s.count)
    }

    /// Collapsed stacks of the time blocked, in microseconds (the
    /// Pyroscope push's unit for it, see `push`).
    pub fn folded_off_cpu_lines(&self) -> Vec<String> {
        self.folded_by(|s| s.off_cpu_ns / 1_000)
    }

    fn folded_by(&self, value: impl Fn(&WindowStack) -> u64) -> Vec<String> {
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        for stack in self.stacks.iter().filter(|s| value(s) > 0) {
            let mut line = sanitize(&stack.thread);
            for loc in stack.locations.iter().rev() {
                for frame in &self.locations[*loc].frames {
                    line.push(';');
                    line.push_str(&sanitize(&frame.label()));
                }
            }
            *merged.entry(line).or_default() += value(stack);
        }
        merged.into_iter().map(|(s, c)| format!("{s} {c}")).collect()
    }

    pub fn folded_text(&self) -> String {
        lines_text(self.folded_lines())
    }

    pub fn folded_off_cpu_text(&self) -> String {
        lines_text(self.folded_off_cpu_lines())
    }
}

fn lines_text(lines: Vec<String>) -> String {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

fn sanitize(label: &str) -> String {
    let clean: String = label.chars().map(|c| if c == ';' || c == '\n' || c == ' ' { '_' } else { c }).collect();
    if clean.is_empty() { "[unnamed]".into() } else { clean }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::profile::Origin;

    pub fn frame(function: &str, file: Option<&str>, line: Option<u32>, inlined: bool) -> Frame {
        let origin = if file.is_some() { Origin::Owner } else { Origin::Native };
        Frame { function: function.into(), file: file.map(Into::into), line, origin, inlined }
    }

    /// main -> work (with `mix` inlined into it) -> hot, 3 samples; main -> work, 1 sample.
    pub fn window() -> ProcessWindow {
        let src = Some("/src/svc/src/main.rs");
        ProcessWindow {
            kind: WindowKind::Cpu,
            process: ProcessLabels {
                pid: 42,
                name: "svc".into(),
                exe: Some("/usr/bin/svc".into()),
                container_id: Some("ab".repeat(32)),
                pod_uid: Some("9d4e2c1b-7a6f-4e3d-8c2b-1a0f9e8d7c6b".into()),
            },
            start: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            end: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_060),
            frequency_hz: 19,
            mappings: vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/usr/bin/svc".into() }],
            locations: vec![
                WindowLocation { address: 0x1100, mapping: Some(0), frames: vec![frame("svc::main", src, Some(10), false)] },
                WindowLocation {
                    address: 0x1200,
                    mapping: Some(0),
                    frames: vec![frame("svc::work", src, Some(20), false), frame("svc::mix", src, Some(30), true)],
                },
                WindowLocation { address: 0x1300, mapping: Some(0), frames: vec![frame("svc::hot", src, Some(40), false)] },
            ],
            stacks: vec![
                WindowStack { thread: "worker".into(), locations: vec![2, 1, 0], count: 3, off_cpu_ns: 0 },
                WindowStack { thread: "worker".into(), locations: vec![1, 0], count: 1, off_cpu_ns: 0 },
            ],
        }
    }

    /// [`window`] with off-CPU time: main -> nap blocked 7 ms.
    pub fn window_with_off_cpu() -> ProcessWindow {
        let mut w = window();
        w.kind = WindowKind::CpuAndOffCpu;
        w.locations.push(WindowLocation {
            address: 0x1400,
            mapping: Some(0),
            frames: vec![frame("svc::nap", Some("/src/svc/src/main.rs"), Some(50), false)],
        });
        w.stacks.push(WindowStack { thread: "worker".into(), locations: vec![3, 0], count: 0, off_cpu_ns: 7_000_000 });
        w
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{window, window_with_off_cpu};

    #[test]
    fn off_cpu_folds_apart_in_microseconds() {
        let w = window_with_off_cpu();
        assert_eq!(w.folded_off_cpu_lines(), vec!["worker;svc::main;svc::nap 7000".to_string()]);
        assert_eq!(w.total_off_cpu_ns(), 7_000_000);
        assert!(!w.folded_text().contains("svc::nap"), "no CPU samples in nap: {}", w.folded_text());
        assert!(w.has_off_cpu() && !window().has_off_cpu());
    }

    #[test]
    fn folded_lines_keep_inlined_frames_root_first() {
        let w = window();
        assert_eq!(
            w.folded_lines(),
            vec![
                "worker;svc::main;svc::work;svc::mix 1".to_string(),
                "worker;svc::main;svc::work;svc::mix;svc::hot 3".to_string(),
            ]
        );
        assert_eq!(w.total_samples(), 4);
        assert_eq!(w.period_ns(), 52_631_578);
    }
}
