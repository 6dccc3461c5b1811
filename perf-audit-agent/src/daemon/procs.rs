//! The processes the daemon knows about: their labels (name, container,
//! pod), memory-map snapshots for symbolization, the current window's
//! stacks, and cumulative CPU samples for `/metrics`.
//!
//! Bounded whatever the node runs: at most [`MAX_PROCESSES`] entries and
//! [`MAX_WINDOW_STACKS`] distinct stacks per window across all of them
//! (beyond, samples are counted as dropped, never stored); a process that
//! exited is evicted at the end of the window that holds its last samples;
//! maps snapshots restart from the live `/proc/PID/maps` every window.
//!
//! Discovery (name, cgroup and container filters) rescans `/proc` on a
//! timer; a pid is re-examined whenever its `comm` changes, so a process
//! caught between `fork` and `exec` is matched once it has exec'd.

use std::{collections::HashMap, fs};

use super::{
    cgroup::{ContainerInfo, parse_proc_cgroup},
    collector::StackKey,
    model::{ProcessLabels, StackValues},
    plan::Selection,
};
use crate::target::{self, MapsSnapshot};

pub const MAX_PROCESSES: usize = 4_096;
pub const MAX_WINDOW_STACKS: usize = 100_000;

pub struct ProcessEntry {
    pub labels: ProcessLabels,
    pub cgroup: String,
    pub maps: MapsSnapshot,
    /// This window's stacks.
    pub window: HashMap<StackKey, StackValues>,
    pub samples_total: u64,
    /// Time blocked with a stack (`--off-cpu`).
    pub off_cpu_ns_total: u64,
    /// Samples whose user stack could not be unwound to a root.
    pub truncated_total: u64,
    pub alive: bool,
}

#[derive(Default)]
pub struct Registry {
    pub entries: HashMap<u32, ProcessEntry>,
    window_stacks: usize,
    /// Samples not stored because a limit was reached.
    pub dropped_samples: u64,
    /// Off-CPU time not stored because a limit was reached.
    pub dropped_off_cpu_ns: u64,
    pub evicted: u64,
}

/// Labels and container info of a live process, read from /proc.
pub fn describe(pid: u32, fallback_name: &str) -> (ProcessLabels, String) {
    let (name, exe) = match target::describe(pid) {
        Ok(info) => (info.name, Some(info.exe).filter(|e| !e.is_empty())),
        Err(_) => (fallback_name.to_string(), None),
    };
    let cgroup_text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let ContainerInfo { cgroup, container_id, pod_uid, .. } = parse_proc_cgroup(&cgroup_text);
    (ProcessLabels { pid, name, exe, container_id, pod_uid }, cgroup)
}

impl Registry {
    pub fn window_stacks(&self) -> usize {
        self.window_stacks
    }

    /// Adds one drained stack to its process's window (creating the entry,
    /// with its labels and maps, on first sight).
    pub fn record(&mut self, pid: u32, key: &StackKey, values: StackValues) -> bool {
        if !self.entries.contains_key(&pid) {
            if self.entries.len() >= MAX_PROCESSES {
                self.dropped(values);
                return false;
            }
            let (labels, cgroup) = describe(pid, &key.thread_name());
            let mut maps = MapsSnapshot::default();
            let _ = maps.refresh(pid);
            self.entries.insert(
                pid,
                ProcessEntry {
                    labels,
                    cgroup,
                    maps,
                    window: HashMap::new(),
                    samples_total: 0,
                    off_cpu_ns_total: 0,
                    truncated_total: 0,
                    alive: true,
                },
            );
        }
        let entry = self.entries.get_mut(&pid).expect("inserted above");
        entry.samples_total += values.samples;
        entry.off_cpu_ns_total += values.off_cpu_ns;
        if let Some(v) = entry.window.get_mut(key) {
            v.add(values);
        } else if self.window_stacks < MAX_WINDOW_STACKS {
            // A user address outside the snapshot: code mapped since (dlopen).
            if key.user.first().is_some_and(|ip| entry.maps.find(*ip).is_none()) {
                let _ = entry.maps.refresh(pid);
            }
            entry.window.insert(key.clone(), values);
            self.window_stacks += 1;
        } else {
            self.dropped(values);
        }
        true
    }

    fn dropped(&mut self, values: StackValues) {
        self.dropped_samples += values.samples;
        self.dropped_off_cpu_ns += values.off_cpu_ns;
    }

    /// Counts a recorded sample of `pid` whose user stack is truncated.
    pub fn add_truncated(&mut self, pid: u32) {
        if let Some(entry) = self.entries.get_mut(&pid) {
            entry.truncated_total += 1;
        }
    }

    /// Takes every process's window (leaving them empty), refreshes the
    /// liveness of each, and evicts the processes that exited (after their
    /// last window has been taken). Returns (pid, entry labels, maps, stacks).
    pub fn take_windows(&mut self) -> Vec<(ProcessLabels, MapsSnapshot, HashMap<StackKey, StackValues>)> {
        let mut out = Vec::new();
        let mut pids: Vec<u32> = self.entries.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let entry = self.entries.get_mut(&pid).expect("listed");
            entry.alive = target::is_alive(pid);
            let stacks = std::mem::take(&mut entry.window);
            if !stacks.is_empty() {
                out.push((entry.labels.clone(), entry.maps.clone(), stacks));
            }
            if entry.alive {
                // Start the next window from the live mappings only.
                let mut fresh = MapsSnapshot::default();
                if fresh.refresh(pid).is_ok() {
                    entry.maps = fresh;
                }
            } else {
                self.entries.remove(&pid);
                self.evicted += 1;
            }
        }
        self.window_stacks = 0;
        out
    }
}

/// Whether a process matches the name, cgroup or container filters.
pub fn matches(selection: &Selection, pid: u32, comm: &str) -> bool {
    if selection.pids.contains(&pid) {
        return true;
    }
    if !selection.processes.is_empty() {
        let exe_name = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_string()))
            .unwrap_or_default();
        let hit = selection.processes.iter().any(|name| {
            let cut: String = name.chars().take(15).collect();
            comm == cut || exe_name == *name
        });
        if hit {
            return true;
        }
    }
    if !selection.cgroups.is_empty() || !selection.containers.is_empty() {
        let info = parse_proc_cgroup(&fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default());
        if selection.cgroups.iter().any(|c| info.cgroup.contains(c.as_str())) {
            return true;
        }
        if let Some(id) = &info.container_id
            && selection.containers.iter().any(|c| id.starts_with(c.as_str())) {
                return true;
            }
    }
    false
}

/// /proc scanner for the filtered modes.
#[derive(Default)]
pub struct Discovery {
    /// pid -> (comm when examined, matched).
    examined: HashMap<u32, (String, bool)>,
}

/// What changed since the last scan.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiscoveryDelta {
    pub added: Vec<u32>,
    pub removed: Vec<u32>,
}

impl Discovery {
    pub fn scan(&mut self, selection: &Selection) -> DiscoveryDelta {
        let own = std::process::id();
        let mut delta = DiscoveryDelta::default();
        let mut live: Vec<u32> = Vec::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                if pid == own {
                    continue;
                }
                let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
                let comm = comm.trim_end().to_string();
                live.push(pid);
                if let Some((seen, _)) = self.examined.get(&pid)
                    && *seen == comm {
                        continue;
                    }
                let matched = matches(selection, pid, &comm);
                let was = self.examined.insert(pid, (comm, matched)).map(|(_, m)| m).unwrap_or(false);
                match (was, matched) {
                    (false, true) => delta.added.push(pid),
                    (true, false) => delta.removed.push(pid),
                    _ => {}
                }
            }
        }
        live.sort_unstable();
        self.examined.retain(|pid, (_, matched)| {
            let alive = live.binary_search(pid).is_ok();
            if !alive && *matched {
                delta.removed.push(*pid);
            }
            alive
        });
        delta.added.sort_unstable();
        delta.removed.sort_unstable();
        delta
    }

    /// Pids currently matched.
    pub fn matched(&self) -> usize {
        self.examined.values().filter(|(_, m)| *m).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_finds_this_process_by_pid_and_forgets_nothing_live() {
        // The scanner skips the agent itself; pid filtering goes through
        // `matches` directly.
        let me = std::process::id();
        let sel = Selection { pids: vec![me], processes: vec![], cgroups: vec![], containers: vec![] };
        assert!(matches(&sel, me, "whatever"));
        let init = Selection { pids: vec![], processes: vec![], cgroups: vec!["/".into()], containers: vec![] };
        let mut d = Discovery::default();
        let first = d.scan(&init);
        assert!(!first.added.is_empty(), "every process's cgroup path contains `/`");
        assert!(!first.added.contains(&me));
        // A second scan adds nothing new for processes already matched.
        let second = d.scan(&init);
        assert!(second.added.len() < first.added.len());
    }
}
