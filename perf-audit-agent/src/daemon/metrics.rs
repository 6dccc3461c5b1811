//! `/metrics`: the Prometheus text exposition (format 0.0.4) of the
//! daemon's own cost, what it sampled and dropped, how full its maps are,
//! and the CPU time of every process it watches. The snapshot is filled by
//! the collector at each drain; rendering is pure and deterministic.

use std::fmt::Write as _;

use super::model::ProcessLabels;
use crate::kernel::Counters;

#[derive(Debug, Clone, Default)]
pub struct ProcessCpu {
    pub labels: ProcessLabels,
    pub samples: u64,
    /// Time blocked with a stack (`--off-cpu`).
    pub off_cpu_ns: u64,
    /// Samples whose user stack could not be unwound to a root.
    pub truncated: u64,
    /// An executable mapping of the process has no loadable unwind tables.
    pub tables_missing: bool,
}

/// `--off-cpu`'s own counts (the kernel's are in [`Counters`]).
#[derive(Debug, Clone, Default)]
pub struct OffCpuMetrics {
    /// Blocks over the per-CPU stack-copy budget, and their time.
    pub rate_limited: u64,
    pub rate_limited_ns: u64,
    /// Off-CPU time not stored: the agent's stack limit was reached.
    pub dropped_agent_limit_ns: u64,
    /// Scheduler entries of exited threads removed from the kernel maps.
    pub sched_threads_pruned: u64,
}

#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub frequency_hz: u64,
    pub agent_cpu_seconds: f64,
    pub agent_rss_bytes: u64,
    pub kernel: Counters,
    pub samples_drained: u64,
    pub samples_dropped_agent_limit: u64,
    pub stack_map_entries: usize,
    pub stack_map_capacity: u32,
    pub stack_ids: usize,
    pub stack_ids_capacity: u32,
    pub stack_ids_pruned: u64,
    pub stack_lookups_failed: u64,
    pub processes: Vec<ProcessCpu>,
    pub processes_evicted: u64,
    pub windows: u64,
    pub profiles_written: u64,
    pub push_ok: u64,
    pub push_failed: u64,
    pub push_dropped: u64,
    pub folded_write_failed: u64,
    /// OTLP exports (ok, failed, dropped) with `--otlp`.
    pub otlp: Option<(u64, u64, u64)>,
    /// With `--off-cpu`.
    pub off_cpu: Option<OffCpuMetrics>,
    pub symbol_cache_entries: usize,
    pub symbol_cache_resets: u64,
    /// Estimated bytes of the user frame cache.
    pub symbol_cache_bytes: usize,
    /// Object files searched for addresses not cached (one per file per
    /// window flush at most, unless a cache generation is dropped).
    pub symbol_objects_symbolized: u64,
    /// CPU time the window flushes took (symbolizing, encoding, writing).
    pub window_flush_cpu_seconds: f64,
    pub program_ids: Vec<u32>,
    /// "eh_frame" (stack copies) or "frame_pointer" (`--frame-pointers-only`).
    pub unwind_mode: &'static str,
    pub unwind: super::unwind::UnwindStats,
    pub unwind_processes: usize,
    pub unwind_objects: usize,
    pub unwind_processes_without_tables: usize,
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the snapshot. Process series are sorted by pid.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096 + m.processes.len() * 200);
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    one("perf_audit_agent_cpu_seconds_total", "counter", "CPU time used by the daemon itself (user + system).", format!("{:.3}", m.agent_cpu_seconds));
    one("perf_audit_agent_resident_memory_bytes", "gauge", "Resident memory of the daemon.", m.agent_rss_bytes.to_string());
    one("perf_audit_sampling_frequency_hertz", "gauge", "CPU samples per second per CPU.", m.frequency_hz.to_string());
    one("perf_audit_samples_total", "counter", "CPU samples taken in the kernel for watched processes.", m.kernel.cpu_samples.to_string());
    one("perf_audit_samples_collected_total", "counter", "Samples read back from the kernel into profiles.", m.samples_drained.to_string());
    let unaccounted = m
        .kernel
        .cpu_samples
        .saturating_sub(m.samples_drained + m.kernel.cpu_samples_dropped_map_full + m.kernel.cpu_samples_dropped_ring_full);
    one(
        "perf_audit_samples_unaccounted",
        "gauge",
        "Samples counted in the kernel but not (yet) collected: in flight until the next drain, or lost to a drain race.",
        unaccounted.to_string(),
    );

    header(&mut out, "perf_audit_samples_dropped_total", "counter", "Samples lost, by reason.");
    for (reason, value) in [
        ("kernel_map_full", m.kernel.cpu_samples_dropped_map_full),
        ("agent_limit", m.samples_dropped_agent_limit),
        ("ring_full", m.kernel.cpu_samples_dropped_ring_full),
    ] {
        let _ = writeln!(out, "perf_audit_samples_dropped_total{{reason=\"{reason}\"}} {value}");
    }
    header(&mut out, "perf_audit_stack_capture_failures_total", "counter", "Samples whose stack could not be captured, by part.");
    for (part, value) in [
        ("user", m.kernel.cpu_user_stack_failed),
        ("kernel", m.kernel.cpu_kernel_stack_failed),
        ("lookup", m.stack_lookups_failed),
    ] {
        let _ = writeln!(out, "perf_audit_stack_capture_failures_total{{part=\"{part}\"}} {value}");
    }

    header(&mut out, "perf_audit_unwind_info", "gauge", "How user stacks are obtained: eh_frame (stack copies unwound in the daemon) or frame_pointer.");
    let _ = writeln!(out, "perf_audit_unwind_info{{mode=\"{}\"}} 1", if m.unwind_mode.is_empty() { "frame_pointer" } else { m.unwind_mode });
    header(&mut out, "perf_audit_unwind_samples_total", "counter", "Stack-copy samples unwound, by result: complete (to a root, from unwind tables), frame_pointer (the frame-pointer chain went further than the tables), truncated (no root reached), no_user_stack (kernel threads).");
    for (result, value) in [
        ("complete", m.unwind.complete),
        ("frame_pointer", m.unwind.frame_pointer),
        ("truncated", m.unwind.truncated),
        ("no_user_stack", m.unwind.no_user_stack),
    ] {
        let _ = writeln!(out, "perf_audit_unwind_samples_total{{result=\"{result}\"}} {value}");
    }
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    one("perf_audit_unwind_processes", "gauge", "Processes with unwinding state (bounded, evicted on exit or when idle).", m.unwind_processes.to_string());
    one("perf_audit_unwind_processes_evicted_total", "counter", "Per-process unwinding states dropped.", m.unwind.processes_evicted.to_string());
    one("perf_audit_unwind_table_objects", "gauge", "Objects whose unwind tables are cached (shared by every process mapping them, by build-id).", m.unwind_objects.to_string());
    one("perf_audit_unwind_table_cache_resets_total", "counter", "Unwind table caches cleared by their size limit.", m.unwind.table_cache_resets.to_string());
    one("perf_audit_unwind_table_objects_evicted_total", "counter", "Objects whose unwind tables were dropped once no tracked process mapped them.", m.unwind.table_objects_evicted.to_string());
    one("perf_audit_unwind_processes_without_tables", "gauge", "Tracked processes with an executable mapping whose unwind tables could not be loaded (see perf_audit_process_unwind_tables_missing).", m.unwind_processes_without_tables.to_string());

    header(&mut out, "perf_audit_map_entries", "gauge", "Entries in the kernel maps at the last drain.");
    header(&mut out, "perf_audit_map_capacity", "gauge", "Capacity of the kernel maps.");
    header(&mut out, "perf_audit_map_fill_ratio", "gauge", "Entries over capacity of the kernel maps at the last drain.");
    for (map, entries, capacity) in [
        ("cpu_stack_counts", m.stack_map_entries, m.stack_map_capacity),
        ("stack_traces", m.stack_ids, m.stack_ids_capacity),
    ] {
        let ratio = if capacity == 0 { 0.0 } else { entries as f64 / capacity as f64 };
        let _ = writeln!(out, "perf_audit_map_entries{{map=\"{map}\"}} {entries}");
        let _ = writeln!(out, "perf_audit_map_capacity{{map=\"{map}\"}} {capacity}");
        let _ = writeln!(out, "perf_audit_map_fill_ratio{{map=\"{map}\"}} {ratio:.6}");
    }
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    one("perf_audit_stack_ids_pruned_total", "counter", "Idle stack ids deleted from the kernel map.", m.stack_ids_pruned.to_string());
    one("perf_audit_processes", "gauge", "Processes with samples the daemon currently tracks.", m.processes.len().to_string());
    one("perf_audit_processes_evicted_total", "counter", "Processes forgotten after they exited.", m.processes_evicted.to_string());
    one("perf_audit_windows_total", "counter", "Profile windows completed.", m.windows.to_string());
    one("perf_audit_profiles_total", "counter", "Per-process window profiles produced.", m.profiles_written.to_string());
    one("perf_audit_symbol_cache_entries", "gauge", "Addresses in the symbol caches.", m.symbol_cache_entries.to_string());
    one("perf_audit_symbol_cache_resets_total", "counter", "Symbol cache generations or parsed objects dropped by their size limits.", m.symbol_cache_resets.to_string());
    one("perf_audit_symbol_cache_bytes", "gauge", "Estimated bytes of the user frame cache.", m.symbol_cache_bytes.to_string());
    one("perf_audit_symbol_objects_symbolized_total", "counter", "Object files searched for addresses not in the symbol cache.", m.symbol_objects_symbolized.to_string());
    one("perf_audit_window_flush_cpu_seconds_total", "counter", "CPU time spent flushing windows (symbolizing, encoding, writing).", format!("{:.6}", m.window_flush_cpu_seconds));
    header(&mut out, "perf_audit_push_total", "counter", "Window pushes to the --push server, by result.");
    for (result, value) in [("ok", m.push_ok), ("failed", m.push_failed), ("dropped", m.push_dropped)] {
        let _ = writeln!(out, "perf_audit_push_total{{result=\"{result}\"}} {value}");
    }
    let (ok, failed, dropped) = m.otlp.unwrap_or_default();
    header(&mut out, "perf_audit_otlp_exports_total", "counter", "Windows exported to the --otlp endpoint, by result (dropped: the previous export was still in flight).");
    for (result, value) in [("ok", ok), ("failed", failed), ("dropped", dropped)] {
        let _ = writeln!(out, "perf_audit_otlp_exports_total{{result=\"{result}\"}} {value}");
    }
    if let Some(off) = &m.off_cpu {
        let k = &m.kernel;
        header(&mut out, "perf_audit_off_cpu_blocks_total", "counter", "Blocks at least --off-cpu-min long, by result: recorded (stack copied), rate_limited (over the per-CPU stack budget, counted only), ring_full (dropped).");
        for (result, value) in [
            ("recorded", k.offcpu_samples.saturating_sub(k.offcpu_dropped_ring_full)),
            ("rate_limited", off.rate_limited),
            ("ring_full", k.offcpu_dropped_ring_full),
        ] {
            let _ = writeln!(out, "perf_audit_off_cpu_blocks_total{{result=\"{result}\"}} {value}");
        }
        header(&mut out, "perf_audit_off_cpu_unattributed_seconds_total", "counter", "Time blocked that has no stack in the profiles, by reason.");
        for (reason, ns) in [("rate_limited", off.rate_limited_ns), ("agent_limit", off.dropped_agent_limit_ns)] {
            let _ = writeln!(out, "perf_audit_off_cpu_unattributed_seconds_total{{reason=\"{reason}\"}} {:.3}", ns as f64 / 1e9);
        }
        header(&mut out, "perf_audit_sched_threads_pruned_total", "counter", "Per-thread scheduler entries of exited threads removed from the kernel maps.");
        let _ = writeln!(out, "perf_audit_sched_threads_pruned_total {}", off.sched_threads_pruned);
        header(&mut out, "perf_audit_sched_map_full_total", "counter", "Scheduler events lost because the per-thread kernel maps were full.");
        let _ = writeln!(out, "perf_audit_sched_map_full_total {}", k.sched_state_map_full);
    }
    header(&mut out, "perf_audit_folded_write_failures_total", "counter", "Collapsed-stack files that could not be written.");
    let _ = writeln!(out, "perf_audit_folded_write_failures_total {}", m.folded_write_failed);
    header(&mut out, "perf_audit_bpf_program_info", "gauge", "eBPF programs loaded by this daemon, by kernel id.");
    for id in &m.program_ids {
        let _ = writeln!(out, "perf_audit_bpf_program_info{{id=\"{id}\"}} 1");
    }

    header(&mut out, "perf_audit_process_cpu_seconds_total", "counter", "On-CPU time of each watched process, estimated from samples (samples / frequency).");
    let mut processes: Vec<&ProcessCpu> = m.processes.iter().collect();
    processes.sort_by_key(|p| p.labels.pid);
    let hz = m.frequency_hz.max(1) as f64;
    for p in &processes {
        let _ = writeln!(out, "perf_audit_process_cpu_seconds_total{{{}}} {:.3}", labels(&p.labels), p.samples as f64 / hz);
    }
    if m.off_cpu.is_some() {
        header(&mut out, "perf_audit_process_off_cpu_seconds_total", "counter", "Time each watched process spent blocked in blocks of at least --off-cpu-min, with their stacks.");
        for p in &processes {
            let _ = writeln!(out, "perf_audit_process_off_cpu_seconds_total{{{}}} {:.3}", labels(&p.labels), p.off_cpu_ns as f64 / 1e9);
        }
    }
    header(&mut out, "perf_audit_process_truncated_stacks_total", "counter", "Samples of each watched process whose user stack could not be unwound to a root.");
    for p in &processes {
        let _ = writeln!(out, "perf_audit_process_truncated_stacks_total{{{}}} {}", labels(&p.labels), p.truncated);
    }
    header(&mut out, "perf_audit_process_unwind_tables_missing", "gauge", "1 for each watched process with an executable mapping whose unwind tables could not be loaded.");
    for p in processes.iter().filter(|p| p.tables_missing) {
        let _ = writeln!(out, "perf_audit_process_unwind_tables_missing{{{}}} 1", labels(&p.labels));
    }
    out
}

fn labels(l: &ProcessLabels) -> String {
    format!(
        "pid=\"{}\",process=\"{}\",container_id=\"{}\",pod_uid=\"{}\"",
        l.pid,
        escape(&l.name),
        escape(l.container_id.as_deref().unwrap_or("")),
        escape(l.pod_uid.as_deref().unwrap_or(""))
    )
}

/// The daemon's own CPU seconds (utime + stime) and RSS, from /proc/self.
pub fn self_usage() -> (f64, u64) {
    let pid = std::process::id();
    (crate::target::cpu_seconds(pid).unwrap_or(0.0), crate::target::rss_bytes(pid).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escaped_labels_sorted_by_pid() {
        let m = MetricsSnapshot {
            frequency_hz: 19,
            kernel: Counters { cpu_samples: 100, cpu_samples_dropped_map_full: 2, ..Default::default() },
            samples_drained: 95,
            stack_map_entries: 10,
            stack_map_capacity: 100,
            processes: vec![
                ProcessCpu {
                    labels: ProcessLabels { pid: 9, name: "b\"q".into(), ..Default::default() },
                    samples: 38,
                    off_cpu_ns: 2_500_000_000,
                    truncated: 4,
                    tables_missing: true,
                },
                ProcessCpu {
                    labels: ProcessLabels { pid: 3, name: "a".into(), container_id: Some("c1".into()), ..Default::default() },
                    samples: 19,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render(&m);
        assert!(text.contains("perf_audit_samples_unaccounted 3\n"), "{text}");
        assert!(text.contains("perf_audit_map_fill_ratio{map=\"cpu_stack_counts\"} 0.100000\n"));
        let a = text.find("pid=\"3\",process=\"a\",container_id=\"c1\",pod_uid=\"\"} 1.000").expect(&text);
        let b = text.find("pid=\"9\",process=\"b\\\"q\"").expect(&text);
        assert!(a < b);
        assert!(text.contains("} 2.000\n"));
        assert!(text.contains("perf_audit_process_truncated_stacks_total{pid=\"9\",process=\"b\\\"q\",container_id=\"\",pod_uid=\"\"} 4\n"), "{text}");
        assert!(text.contains("perf_audit_process_unwind_tables_missing{pid=\"9\""), "{text}");
        assert!(!text.contains("perf_audit_process_unwind_tables_missing{pid=\"3\""), "{text}");
        assert!(text.contains("perf_audit_unwind_samples_total{result=\"truncated\"} 0\n"), "{text}");
        assert!(text.contains("perf_audit_otlp_exports_total{result=\"failed\"} 0\n"), "{text}");
        assert!(!text.contains("perf_audit_off_cpu_blocks_total"), "off-CPU series only with --off-cpu");
        let off = render(&MetricsSnapshot {
            kernel: Counters { offcpu_samples: 50, offcpu_dropped_ring_full: 2, ..Default::default() },
            off_cpu: Some(OffCpuMetrics { rate_limited: 7, rate_limited_ns: 1_500_000_000, ..Default::default() }),
            otlp: Some((3, 1, 2)),
            ..m.clone()
        });
        assert!(off.contains("perf_audit_off_cpu_blocks_total{result=\"recorded\"} 48\n"), "{off}");
        assert!(off.contains("perf_audit_off_cpu_blocks_total{result=\"rate_limited\"} 7\n"), "{off}");
        assert!(off.contains("perf_audit_off_cpu_unattributed_seconds_total{reason=\"rate_limited\"} 1.500\n"), "{off}");
        assert!(off.contains("perf_audit_process_off_cpu_seconds_total{pid=\"9\",process=\"b\\\"q\",container_id=\"\",pod_uid=\"\"} 2.500\n"), "{off}");
        assert!(off.contains("perf_audit_otlp_exports_total{result=\"dropped\"} 2\n"), "{off}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit_once(' ').unwrap().1;
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn self_usage_reads_our_own_process() {
        let (cpu, rss) = self_usage();
        assert!(cpu >= 0.0);
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
