//! Continuous attribution of memory growth, between and beside the
//! allocator-probe windows: sampled page faults ("memory first touched"),
//! large mmap/munmap and brk growth per call site, and the RSS series.
//!
//! The allocator probes see allocations only 2% of the time in default
//! mode; growth shows up continuously as page faults (new pages touched)
//! and as the syscalls that map them. Faults are sampled one in
//! `PAGE_FAULT_SAMPLE_PERIOD`, each sample with its user stack, so a
//! function's share of first-touched memory is estimated as samples x N x
//! 4 KiB (a fault maps one base page; this audit machine's transparent huge
//! pages are `madvise`-only). Pure: aggregation and analysis here, the
//! collector (`memory::run`) does the reading.

use std::collections::{BTreeMap, HashMap};

use perf_audit_common::{MMAP_STACK_MIN_BYTES, PAGE_FAULT_SAMPLE_PERIOD, sample_kind};

use super::analysis::{Fit, attribute, least_squares};
use crate::{
    evidence::{Counters, MappingTotals, MemEventRecord},
    profile::{Frame, Origin},
};

/// Bytes a sampled fault stands for besides the period: one base page.
pub const PAGE_BYTES: u64 = 4096;
/// Distinct stacks kept per kind; events of further stacks are counted in
/// `MemEvents::unaggregated`.
pub const MAX_STACKS: usize = 16_384;
/// Live large mappings followed (address -> size, site) to charge munmaps
/// back to the site that mapped them.
pub const MAX_LIVE_MAPPINGS: usize = 65_536;
/// Rows of the page-fault and mapping tables.
pub const TOP_ROWS: usize = 10;
/// How often the RSS is sampled, and how many points are kept (beyond,
/// every other point is dropped: the series keeps its span).
pub const RSS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
pub const MAX_RSS_POINTS: usize = 4_096;

/// What kind of memory a faulting address is in (from `/proc/PID/maps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Region {
    /// `[heap]`: the brk heap (glibc's main arena).
    Heap,
    /// `[stack]`, or the anonymous mapping holding the thread's stack pointer.
    Stack,
    /// Other anonymous memory: mmap'd allocations, other arenas.
    Anonymous,
    /// File-backed memory (binaries, mapped files).
    File,
    /// Not in any mapping seen.
    Unknown,
}

/// The address-space layout of the target, every mapping kind.
#[derive(Debug, Clone, Default)]
pub struct Regions {
    /// (start, end, kind) by start; `Stack` only for `[stack]`.
    ranges: Vec<(u64, u64, Region)>,
}

impl Regions {
    /// Parses `/proc/PID/maps`.
    pub fn parse(text: &str) -> Regions {
        let mut ranges = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some((start, end)) = fields.next().and_then(|r| r.split_once('-')) else { continue };
            let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else { continue };
            let inode = fields.nth(3).unwrap_or("0");
            let path = fields.next().unwrap_or("");
            let kind = match path {
                "[heap]" => Region::Heap,
                "[stack]" => Region::Stack,
                p if inode != "0" || p.starts_with('/') => Region::File,
                _ => Region::Anonymous,
            };
            ranges.push((start, end, kind));
        }
        ranges.sort_by_key(|r| r.0);
        Regions { ranges }
    }

    fn find(&self, addr: u64) -> Option<(u64, u64, Region)> {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        let r = *self.ranges.get(i.checked_sub(1)?)?;
        (addr < r.1).then_some(r)
    }

    /// The kind of memory at `addr`; `sp` (the faulting thread's stack
    /// pointer) tells a thread's stack from other anonymous memory.
    pub fn classify(&self, addr: u64, sp: u64) -> Region {
        match self.find(addr) {
            None => Region::Unknown,
            Some((start, end, Region::Anonymous)) if sp >= start && sp < end => Region::Stack,
            Some((_, _, kind)) => kind,
        }
    }

    /// End of `[heap]` (the break, page-rounded), when there is a heap.
    pub fn heap_end(&self) -> Option<u64> {
        self.ranges.iter().find(|r| r.2 == Region::Heap).map(|r| r.1)
    }

    /// Size of `[heap]` (virtual), 0 without one.
    pub fn heap_bytes(&self) -> u64 {
        self.ranges.iter().filter(|r| r.2 == Region::Heap).map(|r| r.1 - r.0).sum()
    }
}

/// Sampled faults of one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultAgg {
    pub samples: u64,
    /// Samples per `Region` (heap, stack, anonymous, file, unknown).
    pub by_region: [u64; 5],
}

/// Mapping calls made from one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingAgg {
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    /// Bytes mapped here and unmapped (anywhere) during the audit.
    pub unmapped_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub brk_calls: u64,
    pub brk_bytes: u64,
}

impl std::ops::AddAssign for MappingAgg {
    fn add_assign(&mut self, a: MappingAgg) {
        self.mmap_calls += a.mmap_calls;
        self.mmap_bytes += a.mmap_bytes;
        self.unmapped_bytes += a.unmapped_bytes;
        self.munmap_calls += a.munmap_calls;
        self.munmap_bytes += a.munmap_bytes;
        self.brk_calls += a.brk_calls;
        self.brk_bytes += a.brk_bytes;
    }
}

/// The memory events of an audit, aggregated by stack (addresses only).
#[derive(Debug, Clone, Default)]
pub struct MemEvents {
    pub faults: HashMap<Vec<u64>, FaultAgg>,
    pub mappings: HashMap<Vec<u64>, MappingAgg>,
    live: HashMap<u64, (u64, Vec<u64>)>,
    /// Events whose stack could not be kept (`MAX_STACKS` reached), and
    /// large munmaps of mappings not seen mapped.
    pub unaggregated: u64,
    pub unmatched_munmaps: u64,
}

impl MemEvents {
    /// Adds one unwound event; `region` is where a fault's address lies.
    pub fn add(&mut self, e: MemEventRecord, region: Region) {
        if e.kind == sample_kind::PAGE_FAULT {
            if !self.faults.contains_key(&e.frames) && self.faults.len() >= MAX_STACKS {
                self.unaggregated += 1;
                return;
            }
            let agg = self.faults.entry(e.frames).or_default();
            agg.samples += 1;
            agg.by_region[region as usize] += 1;
            return;
        }
        if e.kind == sample_kind::MUNMAP {
            // Charge the unmapping back to the site that mapped it.
            match self.live.remove(&e.addr) {
                Some((len, site)) => {
                    if let Some(agg) = self.mappings.get_mut(&site) {
                        agg.unmapped_bytes += len.min(e.bytes);
                    }
                }
                None => self.unmatched_munmaps += 1,
            }
        }
        if !self.mappings.contains_key(&e.frames) && self.mappings.len() >= MAX_STACKS {
            self.unaggregated += 1;
            return;
        }
        if e.kind == sample_kind::MMAP && self.live.len() < MAX_LIVE_MAPPINGS {
            self.live.insert(e.addr, (e.bytes, e.frames.clone()));
        }
        let agg = self.mappings.entry(e.frames).or_default();
        match e.kind {
            sample_kind::MMAP => {
                agg.mmap_calls += 1;
                agg.mmap_bytes += e.bytes;
            }
            sample_kind::MUNMAP => {
                agg.munmap_calls += 1;
                agg.munmap_bytes += e.bytes;
            }
            sample_kind::BRK => {
                agg.brk_calls += 1;
                agg.brk_bytes += e.bytes;
            }
            _ => {}
        }
    }

    /// Every distinct stack, sorted (the order symbolization sees them in).
    pub fn stacks(&self) -> Vec<Vec<u64>> {
        let mut all: Vec<Vec<u64>> = self.faults.keys().chain(self.mappings.keys()).cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Completes the stack of a page fault taken inside a probed allocator
/// call: the uretprobe replaced the call's return address with its
/// trampoline (not code of any mapped object), so the unwinding stopped
/// there. The frames before it (inside the allocator) are kept and the
/// allocation site's stack (copied at the call's entry, leaf first, its
/// first frame the allocator's entry) supplies the callers.
pub fn complete_stack(frames: Vec<u64>, site: Option<&Vec<u64>>, is_code: impl Fn(u64) -> bool) -> Vec<u64> {
    let Some(site) = site.filter(|s| s.len() > 1) else { return frames };
    let Some(cut) = frames.iter().position(|a| !is_code(*a)) else { return frames };
    let mut out: Vec<u64> = frames[..cut].to_vec();
    out.extend_from_slice(&site[1..]);
    out
}

/// One RSS reading (`/proc/PID/smaps_rollup`, `[heap]` from the maps).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct RssPoint {
    pub t_s: f64,
    pub rss_bytes: u64,
    pub anon_bytes: u64,
    /// Virtual size of `[heap]` (the brk heap): its growth is heap growth.
    pub heap_bytes: u64,
    /// Anonymous memory in transparent huge pages (`AnonHugePages`): a
    /// fault there maps 2 MiB, not one 4 KiB page.
    pub huge_page_bytes: u64,
}

/// Parses `Rss:`, `Anonymous:` and `AnonHugePages:` (kB) of
/// `/proc/PID/smaps_rollup`, in bytes.
pub fn parse_smaps_rollup(text: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("Rss:")?, field("Anonymous:").unwrap_or(0), field("AnonHugePages:").unwrap_or(0)))
}

/// Appends a point, halving the series (every other point) when full.
pub fn push_rss(series: &mut Vec<RssPoint>, point: RssPoint) {
    if series.len() >= MAX_RSS_POINTS {
        let mut i = 0;
        series.retain(|_| {
            i += 1;
            i % 2 == 1
        });
    }
    series.push(point);
}

/// One row of `memory.page_faults.top_sites`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct FaultRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub samples: u64,
    /// samples x period x 4 KiB.
    pub estimated_bytes: u64,
    pub share_pct: f64,
    /// Estimated bytes by kind of memory touched.
    pub heap_bytes: u64,
    pub stack_bytes: u64,
    pub anonymous_bytes: u64,
    pub file_bytes: u64,
    pub origin: Origin,
}

/// report.json `memory.page_faults`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct PageFaultSection {
    pub sampling_period: u64,
    pub sampling: String,
    pub samples: u64,
    /// Samples lost to a full ring buffer (counted in the kernel).
    pub dropped_samples: u64,
    pub estimated_faults: u64,
    pub estimated_bytes: u64,
    /// The target's own fault count over the audit (minflt + majflt of
    /// `/proc/PID/stat`): exact, no stacks.
    pub faults_counted: Option<u64>,
    /// The most anonymous memory seen in transparent huge pages: faults
    /// there map 2 MiB at once, so bytes estimated at 4 KiB per fault
    /// undercount it (the RSS series does not).
    pub huge_page_bytes: u64,
    pub by_region_bytes: BTreeMap<String, u64>,
    pub top_sites: Vec<FaultRow>,
}

/// One row of `memory.mappings.sites`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct MappingRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    /// Of the bytes mapped here, those still mapped at the end.
    pub still_mapped_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub brk_calls: u64,
    pub brk_bytes: u64,
    pub origin: Origin,
}

/// report.json `memory.mappings`: every call counted, stacks for large ones.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct MappingSection {
    pub stack_threshold_bytes: u64,
    #[serde(flatten)]
    pub totals: MappingTotals,
    /// Stack samples lost (ring full, pending map full).
    pub dropped: u64,
    /// Large munmaps of mappings made before the audit.
    pub unmatched_munmaps: u64,
    pub sites: Vec<MappingRow>,
}

/// report.json `memory.rss_series`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct RssSeries {
    pub interval_ms: u64,
    pub points: Vec<RssPoint>,
    /// Least squares of RSS over time (bytes/s), and of anonymous memory.
    pub rss_fit: Option<Fit>,
    pub anon_fit: Option<Fit>,
    pub peak_rss_bytes: u64,
    pub current_rss_bytes: u64,
}

fn round_fit(f: Fit) -> Fit {
    Fit { slope: crate::profile::round2(f.slope), intercept: f.intercept.round(), r2: (f.r2 * 1000.0).round() / 1000.0, points: f.points }
}

pub fn rss_series(points: &[RssPoint]) -> RssSeries {
    let fit = |value: fn(&RssPoint) -> u64| {
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.t_s, value(p) as f64)).collect();
        least_squares(&xy).map(round_fit)
    };
    RssSeries {
        interval_ms: RSS_INTERVAL.as_millis() as u64,
        points: points.to_vec(),
        rss_fit: fit(|p| p.rss_bytes),
        anon_fit: fit(|p| p.anon_bytes),
        peak_rss_bytes: points.iter().map(|p| p.rss_bytes).max().unwrap_or(0),
        current_rss_bytes: points.last().map(|p| p.rss_bytes).unwrap_or(0),
    }
}

struct Charged {
    function: String,
    file: Option<String>,
    origin: Origin,
    /// Weight per line, to name the busiest line.
    lines: BTreeMap<u32, u64>,
}

fn charge<'a>(groups: &'a mut BTreeMap<String, Charged>, frames: &[Frame], weight: u64) -> &'a mut Charged {
    let a = attribute(frames);
    let g = groups.entry(a.function.clone()).or_insert(Charged { function: a.function, file: a.file, origin: a.origin, lines: BTreeMap::new() });
    if let Some(line) = a.line {
        *g.lines.entry(line).or_default() += weight;
    }
    g
}

fn busiest_line(lines: &BTreeMap<u32, u64>) -> Option<u32> {
    lines.iter().max_by_key(|(line, w)| (**w, std::cmp::Reverse(**line))).map(|(l, _)| *l)
}

/// Page faults per owner function. `frames` gives each stack's symbolized
/// frames, root first; `faults_counted` is the exact count from /proc.
pub fn page_fault_section(
    events: &MemEvents,
    frames: &HashMap<Vec<u64>, Vec<Frame>>,
    counters: &Counters,
    faults_counted: Option<u64>,
    huge_page_bytes: u64,
) -> PageFaultSection {
    let n = PAGE_FAULT_SAMPLE_PERIOD;
    let est = |samples: u64| samples * n * PAGE_BYTES;
    let empty = Vec::new();
    let mut groups: BTreeMap<String, Charged> = BTreeMap::new();
    let mut per: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    let mut by_region = [0u64; 5];
    let mut keys: Vec<&Vec<u64>> = events.faults.keys().collect();
    keys.sort();
    for key in keys {
        let agg = events.faults[key];
        let g = charge(&mut groups, frames.get(key).unwrap_or(&empty), agg.samples);
        let row = per.entry(g.function.clone()).or_default();
        for (i, v) in agg.by_region.iter().enumerate() {
            row[i] += v;
            by_region[i] += v;
        }
    }
    let samples: u64 = by_region.iter().sum();
    // A dropped sample was taken (its fault counted) but its stack lost.
    let dropped = counters.page_fault_dropped_ring_full;
    let mut top_sites: Vec<FaultRow> = per
        .iter()
        .map(|(function, r)| {
            let g = &groups[function];
            let s: u64 = r.iter().sum();
            FaultRow {
                function: function.clone(),
                file: g.file.clone(),
                line: busiest_line(&g.lines),
                samples: s,
                estimated_bytes: est(s),
                share_pct: crate::profile::round2(s as f64 / samples.max(1) as f64 * 100.0),
                heap_bytes: est(r[Region::Heap as usize]),
                stack_bytes: est(r[Region::Stack as usize]),
                anonymous_bytes: est(r[Region::Anonymous as usize]),
                file_bytes: est(r[Region::File as usize]),
                origin: g.origin,
            }
        })
        .collect();
    top_sites.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.function.cmp(&b.function)));
    top_sites.truncate(TOP_ROWS);
    let names = ["heap", "stack", "anonymous", "file", "unknown"];
    PageFaultSection {
        sampling_period: n,
        sampling: format!(
            "one page fault in {n} sampled with its user stack (software page-faults event on every CPU, the target's kept): each sample stands for {n} faults of one {} KiB page, so bytes are estimates (samples x {n} x 4 KiB); {} samples, {} more without a stack (ring buffer full){}",
            PAGE_BYTES / 1024,
            samples,
            dropped,
            if huge_page_bytes > 0 {
                format!(
                    "; {:.1} MiB of the target's memory is in transparent huge pages, which fault 2 MiB at a time: the estimates undercount it (the RSS series counts it)",
                    huge_page_bytes as f64 / (1024.0 * 1024.0)
                )
            } else {
                String::new()
            }
        ),
        samples,
        dropped_samples: dropped,
        estimated_faults: (samples + dropped) * n,
        estimated_bytes: est(samples + dropped),
        faults_counted,
        huge_page_bytes,
        by_region_bytes: names.iter().zip(by_region).filter(|(_, v)| *v > 0).map(|(k, v)| (k.to_string(), est(v))).collect(),
        top_sites,
    }
}

/// mmap/munmap/brk per owner function.
pub fn mapping_section(events: &MemEvents, frames: &HashMap<Vec<u64>, Vec<Frame>>, counters: &Counters) -> MappingSection {
    let empty = Vec::new();
    let mut groups: BTreeMap<String, Charged> = BTreeMap::new();
    let mut sums: BTreeMap<String, MappingAgg> = BTreeMap::new();
    let mut keys: Vec<&Vec<u64>> = events.mappings.keys().collect();
    keys.sort();
    for key in keys {
        let a = events.mappings[key];
        let weight = a.mmap_bytes + a.munmap_bytes + a.brk_bytes;
        let g = charge(&mut groups, frames.get(key).unwrap_or(&empty), weight);
        *sums.entry(g.function.clone()).or_default() += a;
    }
    let mut sites: Vec<MappingRow> = sums
        .iter()
        .map(|(function, s)| {
            let g = &groups[function];
            MappingRow {
                function: function.clone(),
                file: g.file.clone(),
                line: busiest_line(&g.lines),
                mmap_calls: s.mmap_calls,
                mmap_bytes: s.mmap_bytes,
                still_mapped_bytes: s.mmap_bytes.saturating_sub(s.unmapped_bytes),
                munmap_calls: s.munmap_calls,
                munmap_bytes: s.munmap_bytes,
                brk_calls: s.brk_calls,
                brk_bytes: s.brk_bytes,
                origin: g.origin,
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        (b.mmap_bytes + b.brk_bytes, b.munmap_bytes).cmp(&(a.mmap_bytes + a.brk_bytes, a.munmap_bytes)).then_with(|| a.function.cmp(&b.function))
    });
    sites.truncate(TOP_ROWS);
    MappingSection {
        stack_threshold_bytes: MMAP_STACK_MIN_BYTES,
        totals: counters.mappings,
        dropped: counters.mapping_dropped,
        unmatched_munmaps: events.unmatched_munmaps,
        sites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::{dep, owner};

    const MAPS: &str = "\
55d0c0000000-55d0c0021000 r-xp 00000000 fd:01 1234 /usr/bin/svc
55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
7f0000200000-7f0000a00000 rw-p 00000000 00:00 0
7fff00000000-7fff00021000 rw-p 00000000 00:00 0 [stack]
";

    fn event(kind: u32, addr: u64, bytes: u64, frames: &[u64]) -> MemEventRecord {
        MemEventRecord { kind, tid: 1, ts_ns: 0, addr, bytes, sp: 0x7f00_0020_1000, frames: frames.to_vec() }
    }

    #[test]
    fn fault_addresses_are_classified_by_mapping_and_thread_stack() {
        let r = Regions::parse(MAPS);
        let sp = 0x7f00_0020_1000; // inside the second anonymous mapping: a thread stack
        assert_eq!(r.classify(0x55d0_c100_0010, sp), Region::Heap);
        assert_eq!(r.classify(0x7f00_0000_1000, sp), Region::Anonymous);
        assert_eq!(r.classify(0x7f00_0030_0000, sp), Region::Stack);
        assert_eq!(r.classify(0x7fff_0000_0008, sp), Region::Stack);
        assert_eq!(r.classify(0x55d0_c000_0100, sp), Region::File);
        assert_eq!(r.classify(0x10, sp), Region::Unknown);
        assert_eq!(r.heap_end(), Some(0x55d0_c140_0000));
        assert_eq!(r.heap_bytes(), 0x40_0000);
    }

    #[test]
    fn sampled_faults_are_charged_to_the_owner_function_and_scaled_by_the_period() {
        let mut ev = MemEvents::default();
        for _ in 0..3 {
            ev.add(event(sample_kind::PAGE_FAULT, 0, 0, &[1, 2]), Region::Heap);
        }
        ev.add(event(sample_kind::PAGE_FAULT, 0, 0, &[3, 2]), Region::Anonymous);
        ev.add(event(sample_kind::PAGE_FAULT, 0, 0, &[4]), Region::Heap);
        let frames: HashMap<Vec<u64>, Vec<Frame>> = [
            (vec![1, 2], vec![owner("svc::main", 1), owner("svc::grow", 10), dep("hashbrown::map::HashMap::insert", false)]),
            (vec![3, 2], vec![owner("svc::main", 1), owner("svc::grow", 12)]),
            (vec![4], vec![owner("svc::main", 1), owner("svc::other", 5)]),
        ]
        .into_iter()
        .collect();
        let s = page_fault_section(&ev, &frames, &Counters::default(), Some(1234), 0);
        assert_eq!(s.samples, 5);
        assert_eq!(s.estimated_bytes, 5 * PAGE_FAULT_SAMPLE_PERIOD * 4096);
        let top = &s.top_sites[0];
        assert_eq!((top.function.as_str(), top.samples, top.line), ("svc::grow", 4, Some(10)));
        assert_eq!(top.heap_bytes, 3 * PAGE_FAULT_SAMPLE_PERIOD * 4096);
        assert_eq!(top.anonymous_bytes, PAGE_FAULT_SAMPLE_PERIOD * 4096);
        assert_eq!(top.share_pct, 80.0);
        assert_eq!(s.top_sites[1].function, "svc::other");
        assert_eq!(s.by_region_bytes["heap"], 4 * PAGE_FAULT_SAMPLE_PERIOD * 4096);
    }

    #[test]
    fn a_munmap_is_charged_back_to_the_site_that_mapped_it() {
        let mut ev = MemEvents::default();
        ev.add(event(sample_kind::MMAP, 0x1000_0000, 256 << 10, &[7]), Region::Unknown);
        ev.add(event(sample_kind::MMAP, 0x2000_0000, 256 << 10, &[7]), Region::Unknown);
        ev.add(event(sample_kind::MUNMAP, 0x1000_0000, 256 << 10, &[8]), Region::Unknown);
        ev.add(event(sample_kind::MUNMAP, 0x3000_0000, 1 << 20, &[8]), Region::Unknown);
        ev.add(event(sample_kind::BRK, 0x5000_0000, 132 << 10, &[9]), Region::Unknown);
        let frames: HashMap<Vec<u64>, Vec<Frame>> = [
            (vec![7], vec![owner("svc::main", 1), owner("svc::big", 20)]),
            (vec![8], vec![owner("svc::main", 1), owner("svc::drop_big", 30)]),
            (vec![9], vec![owner("svc::main", 1), owner("svc::small", 40)]),
        ]
        .into_iter()
        .collect();
        let s = mapping_section(&ev, &frames, &Counters::default());
        let big = s.sites.iter().find(|r| r.function == "svc::big").unwrap();
        assert_eq!((big.mmap_calls, big.mmap_bytes, big.still_mapped_bytes), (2, 512 << 10, 256 << 10));
        let dropper = s.sites.iter().find(|r| r.function == "svc::drop_big").unwrap();
        assert_eq!((dropper.munmap_calls, dropper.munmap_bytes), (2, (256 << 10) + (1 << 20)));
        let small = s.sites.iter().find(|r| r.function == "svc::small").unwrap();
        assert_eq!((small.brk_calls, small.brk_bytes), (1, 132 << 10));
        assert_eq!(s.unmatched_munmaps, 1);
        assert_eq!(s.sites[0].function, "svc::big");
    }

    #[test]
    fn a_fault_under_a_uretprobe_is_completed_with_its_allocation_site() {
        let code = |a: u64| a < 0x7fff_0000_0000;
        let trampoline = 0x7fff_ffff_e000;
        // Inside calloc (0x10, 0x20), then the trampoline: the callers come
        // from the site's stack, past its entry frame.
        let site = vec![0x11, 0x500, 0x600];
        assert_eq!(complete_stack(vec![0x10, 0x20, trampoline], Some(&site), code), vec![0x10, 0x20, 0x500, 0x600]);
        // A complete stack, or no site stack: unchanged.
        assert_eq!(complete_stack(vec![0x10, 0x500], Some(&site), code), vec![0x10, 0x500]);
        assert_eq!(complete_stack(vec![0x10, trampoline], None, code), vec![0x10, trampoline]);
    }

    #[test]
    fn the_rss_series_keeps_its_span_when_full_and_fits_a_rising_line() {
        let mut series = Vec::new();
        for i in 0..(MAX_RSS_POINTS + 10) {
            push_rss(&mut series, RssPoint { t_s: i as f64, rss_bytes: 1000 + 10 * i as u64, anon_bytes: 500, heap_bytes: 0, huge_page_bytes: 0 });
        }
        assert!(series.len() <= MAX_RSS_POINTS);
        assert_eq!(series[0].t_s, 0.0);
        assert_eq!(series.last().unwrap().t_s, (MAX_RSS_POINTS + 9) as f64);
        let s = rss_series(&series);
        let fit = s.rss_fit.unwrap();
        assert!((fit.slope - 10.0).abs() < 1e-6 && fit.r2 > 0.99, "{fit:?}");
        assert_eq!(s.current_rss_bytes, 1000 + 10 * (MAX_RSS_POINTS as u64 + 9));
    }

    #[test]
    fn smaps_rollup_rss_anonymous_and_huge_pages_are_read_in_bytes() {
        let text = "55d0c0000000-7fff00021000 ---p 00000000 00:00 0 [rollup]\nRss:                8192 kB\nPss:  100 kB\nAnonymous:          4096 kB\nAnonHugePages:      2048 kB\n";
        assert_eq!(parse_smaps_rollup(text), Some((8192 * 1024, 4096 * 1024, 2048 * 1024)));
        assert_eq!(parse_smaps_rollup("Pss: 1 kB\n"), None);
    }
}
