//! The off-CPU section of the report, from the symbolized off-CPU
//! profile (weights in microseconds) and the kernel's per-thread totals.
//! Pure: no I/O.

use std::time::Duration;

use super::{OffCpuRow, OffCpuSection, OffCpuThreadRow};
use crate::{
    evidence,
    profile::{
        CpuProfile,
        async_runtime::{self, AsyncAnalysis, ThreadTime},
    },
};

impl OffCpuSection {
    pub fn build(
        cpu: &CpuProfile,
        offcpu: &CpuProfile,
        threads: &[ThreadTime],
        counters: &evidence::Counters,
        min: Duration,
        tracepoints: &str,
        analysis: &AsyncAnalysis,
    ) -> OffCpuSection {
        use crate::profile::Origin;
        let ms = |ns: u64| crate::report::round2(ns as f64 / 1e6);
        // The analysis's own roles: stacks first, names second.
        let roles = async_runtime::thread_roles(cpu, offcpu, threads);
        let worker_role = |tid: u32| {
            if analysis.workers.workers > 0 && roles.get(&tid) == Some(&async_runtime::ThreadRole::Worker) {
                async_runtime::ThreadRole::Worker
            } else {
                async_runtime::ThreadRole::Other
            }
        };
        // Captured blocks inside the owner's code, outside the blocking pool
        // (as the analysis counts them), per thread.
        let blocked_in_tasks_us = |tid: u32| -> u64 {
            offcpu
                .stacks
                .iter()
                .filter(|s| s.tid == tid)
                .filter(|s| {
                    let frames: Vec<_> = s.frames.iter().map(|id| offcpu.frame(*id)).collect();
                    async_runtime::role_of(&frames) != Some(async_runtime::ThreadRole::BlockingPool)
                        && frames.iter().any(|f| f.origin == Origin::Owner)
                })
                .map(|s| s.count)
                .sum()
        };
        let mut top: Vec<OffCpuRow> = offcpu
            .stacks
            .iter()
            .map(|s| {
                let frames: Vec<_> = s.frames.iter().map(|id| offcpu.frame(*id)).collect();
                // The owner's frame; else the innermost Rust frame (a runtime
                // park shows as tokio's parker, not as libc's `syscall`).
                let site = frames
                    .iter()
                    .rposition(|f| f.origin == Origin::Owner)
                    .or_else(|| frames.iter().rposition(|f| f.origin == Origin::Dependency))
                    .or_else(|| frames.iter().rposition(|f| f.origin != Origin::Kernel))
                    .map(|i| frames[i]);
                let syscall = frames
                    .last()
                    .map(|f| match crate::syscalls::parse_leaf(&f.function) {
                        Some((name, Some((fd, kind)))) => format!("{name} (fd {fd}: {})", kind.label()),
                        Some((name, None)) => name.to_string(),
                        None => f.function.clone(),
                    })
                    .unwrap_or_default();
                OffCpuRow {
                    function: site.map(|f| f.display_name()).unwrap_or_else(|| "[unknown]".into()),
                    file: site.and_then(|f| f.file.clone()),
                    line: site.and_then(|f| f.line),
                    syscall,
                    thread: s.thread.clone(),
                    intervals: s.events,
                    blocked_ms: crate::report::round2(s.count as f64 / 1000.0),
                }
            })
            .collect();
        // Merge rows of the same site, syscall and thread name.
        top.sort_by(|a, b| (&a.function, &a.syscall, &a.thread, a.line).cmp(&(&b.function, &b.syscall, &b.thread, b.line)));
        let mut merged: Vec<OffCpuRow> = Vec::new();
        for row in top {
            match merged.last_mut() {
                Some(last) if last.function == row.function && last.syscall == row.syscall && last.thread == row.thread && last.line == row.line => {
                    last.intervals += row.intervals;
                    last.blocked_ms = crate::report::round2(last.blocked_ms + row.blocked_ms);
                }
                _ => merged.push(row),
            }
        }
        merged.sort_by(|a, b| b.blocked_ms.total_cmp(&a.blocked_ms).then(a.function.cmp(&b.function)));
        merged.truncate(20);
        OffCpuSection {
            capture_threshold_ms: min.as_secs_f64() * 1000.0,
            captured_intervals: offcpu.stacks.iter().map(|s| s.events).sum(),
            captured_ms: crate::report::round2(offcpu.total_samples() as f64 / 1000.0),
            short_intervals: threads.iter().map(|t| t.short_blocks).sum(),
            short_ms: ms(threads.iter().map(|t| t.short_blocked_ns).sum()),
            dropped_intervals: counters.offcpu_dropped_ring_full,
            tracepoints: tracepoints.to_string(),
            threads: threads
                .iter()
                .map(|t| OffCpuThreadRow {
                    tid: t.tid,
                    name: t.name.clone(),
                    role: worker_role(t.tid),
                    on_cpu_ms: ms(t.oncpu_ns),
                    blocked_ms: ms(t.blocked_ns),
                    blocked_in_tasks_ms: crate::report::round2(blocked_in_tasks_us(t.tid) as f64 / 1000.0),
                    runqueue_ms: ms(t.runqueue_ns),
                    max_run_ms: ms(t.max_run_ns),
                })
                .collect(),
            top: merged,
        }
    }
}
