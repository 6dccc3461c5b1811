//! The memory model: per-site kernel counters and symbolized site stacks in,
//! the report's memory section out. Pure: no I/O, no clocks.
//!
//! Attribution follows the CPU profile's rule: a site is charged to the
//! innermost frame of the owner's crates (`Origin::Owner`); std and
//! dependency frames below it only say what kind of allocation it is (its
//! Rust type, whether it grows a collection).
//!
//! Estimates: with probes attached a share `d` of the time (1 in precise
//! mode), every count observed while attached stands for `1/d`. A free of a
//! block allocated in an earlier window is itself observed with probability
//! `d`, so it stands for `1/d²`. Live bytes of a site are then
//! `alloc/d - same_window_free/d - late_free/d²`, exact when `d = 1`.

use std::collections::{BTreeMap, HashMap};

use perf_audit_common::memory::SiteStats;

use super::{Snapshot, types};
use crate::profile::{Frame, Origin};

/// Rows of the top allocators table.
pub const TOP_ROWS: usize = 15;
/// A site is a leak candidate from this many observed allocations, none freed.
pub const LEAK_MIN_ALLOCS: u64 = 8;
/// ... holding at least this many (estimated) bytes at the end ...
pub const LEAK_MIN_BYTES: f64 = 16.0 * 1024.0;
/// ... and, in default mode, unlikely to have been freed unseen: each free
/// outside a window is seen with probability d, so (1-d)^n must be small.
pub const LEAK_MAX_P_UNSEEN: f64 = 0.05;
/// Growth: a least-squares fit at least this good (r²) ...
pub const GROWTH_MIN_R2: f64 = 0.8;
/// ... rising at least this fast (bytes/s) ...
pub const GROWTH_MIN_SLOPE: f64 = 16.0 * 1024.0;
/// ... by at least this much over the window (bytes) ...
pub const GROWTH_MIN_RISE: f64 = 256.0 * 1024.0;
/// ... over at least this many points.
pub const GROWTH_MIN_POINTS: usize = 4;

/// One row of the top allocators table (report.json `top_allocators`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct AllocatorRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Bytes allocated over the audit (estimated in default mode).
    pub bytes: u64,
    /// Allocations over the audit (estimated in default mode).
    pub count: u64,
    /// The Rust type, when a frame shows it (`String`, `Vec<u8>`...).
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub bytes_per_s: f64,
    pub allocs_per_s: f64,
    /// Share of the allocated bytes seen freed (scaled), 0-100.
    pub freed_pct: f64,
    /// Bytes still live at the end (estimated).
    pub live_bytes: u64,
    pub origin: Origin,
    /// The framework or runtime function below the owner's frame that made
    /// most of these allocations (`tokio::...::spawn`, a tower layer's
    /// boxing): they are that code's, not the owner's buffers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A site whose allocations are not freed (report.json `leak_candidates`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct LeakRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Bytes outstanding at the end from the site's unfreed allocations.
    pub bytes: u64,
    /// Allocations outstanding (estimated).
    pub count: u64,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Allocations observed (while probes were attached), none freed.
    pub observed_allocations: u64,
    /// Probability that every one of them was freed and no free was seen
    /// ((1-d)^n; 0 in precise mode, where every free is seen).
    pub p_all_freed_unseen: f64,
    /// The same function grows a collection (a map, a vector), or calls
    /// code that does: the memory is likely held there rather than lost.
    pub held_by_collection: bool,
    /// The function whose call grows that collection.
    pub collection_grown_in: Option<String>,
    pub origin: Origin,
    /// Library code below the owner's frame that made most of these
    /// allocations (as [`AllocatorRow::via`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A function whose live bytes rise steadily (report.json `growth`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct GrowthRow {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Least-squares slope of live bytes over time.
    pub slope_bytes_per_s: f64,
    /// Coefficient of determination of that fit.
    pub r2: f64,
    pub start_bytes: u64,
    pub end_bytes: u64,
    pub points: usize,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub held_by_collection: bool,
    pub collection_grown_in: Option<String>,
    pub never_freed: bool,
    pub origin: Origin,
    /// Library code below the owner's frame that made most of these
    /// allocations (as [`AllocatorRow::via`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A straight-line fit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    pub r2: f64,
    pub points: usize,
}

/// Least squares of `y` over `x`; `None` with fewer than 2 points or no
/// spread in x. r² is 1 for a flat perfect fit.
pub fn least_squares(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let r2 = if syy <= 0.0 { 1.0 } else { (sxy * sxy) / (sxx * syy) };
    Some(Fit { slope, intercept, r2, points: n })
}

/// Where a site is charged and what it allocates.
#[derive(Debug, Clone)]
pub struct Attribution {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub origin: Origin,
    pub ty: Option<String>,
    pub grows_collection: bool,
    /// Framework or runtime code the owner's frame called into, when that
    /// is what allocated (a task spawned, a request boxed by the stack).
    pub via: Option<String>,
}

/// Rust's allocator shims (`__rustc::__rust_alloc`...) and `GlobalAlloc`
/// methods are allocator code even when the owner's crate declares the
/// `#[global_allocator]` (their debug info then points at the owner's
/// file): a site is never charged to them, nor to anything they call.
fn is_rust_allocator_frame(frame: &Frame) -> bool {
    let f = frame.function.as_str();
    let shim = f.strip_prefix("__rustc::").unwrap_or(f);
    ["__rust_alloc", "__rust_alloc_zeroed", "__rust_dealloc", "__rust_realloc"].contains(&shim)
        || f.contains(" as core::alloc::global::GlobalAlloc>::")
}

/// Charges a site (frames root first, the allocator function last) to the
/// innermost owner frame, else the innermost Rust dependency frame, else
/// the frame that called the allocator. Frames from the first Rust
/// allocator frame on count as the allocator.
pub fn attribute(frames: &[Frame]) -> Attribution {
    let callers = match frames.iter().position(is_rust_allocator_frame) {
        Some(allocator) => &frames[..allocator],
        None => frames,
    };
    let charged = callers
        .iter()
        .rposition(|f| f.origin == Origin::Owner)
        .or_else(|| callers.iter().rposition(|f| f.origin == Origin::Dependency))
        .or_else(|| if callers.len() < frames.len() { callers.len().checked_sub(1) } else { None })
        .or_else(|| frames.len().checked_sub(2))
        .or_else(|| frames.len().checked_sub(1));
    let Some(i) = charged else {
        return Attribution {
            function: "[no stack]".into(),
            file: None,
            line: None,
            origin: Origin::Unknown,
            ty: None,
            grows_collection: false,
            via: None,
        };
    };
    let below = &frames[i + 1..];
    Attribution {
        function: frames[i].display_name(),
        file: frames[i].file.clone(),
        line: frames[i].line,
        origin: frames[i].origin,
        ty: types::allocation_type(below),
        grows_collection: types::grows_collection(below),
        via: if frames[i].origin == Origin::Owner {
            let refs: Vec<&Frame> = below.iter().collect();
            crate::profile::layers::allocated_by(&refs).map(|f| f.display_name())
        } else {
            None
        },
    }
}

/// What the analysis needs, all measured.
pub struct Input<'a> {
    /// Share of the time the probes were attached (1 in precise mode).
    pub duty: f64,
    pub elapsed_s: f64,
    pub sites: &'a HashMap<u64, SiteStats>,
    pub series: &'a [Snapshot],
    /// Symbolized frames of each site, root first.
    pub stacks: &'a HashMap<u64, Vec<Frame>>,
}

/// The analysed memory profile (the parts of the section that come from
/// the model).
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub top_allocators: Vec<AllocatorRow>,
    pub leak_candidates: Vec<LeakRow>,
    pub growth: Vec<GrowthRow>,
    /// Estimated totals over the audit.
    pub total_bytes: u64,
    pub total_allocations: u64,
    /// Sites whose stack never reached the agent (counted under
    /// `[no stack]`).
    pub sites_without_stack: usize,
    /// Every function's allocated bytes, for the memory flamegraph: folded
    /// stacks weighted by estimated bytes.
    pub folded: Vec<String>,
}

fn live_estimate(s: &SiteStats, d: f64) -> f64 {
    let live = s.alloc_bytes as f64 / d - s.free_bytes as f64 / d - s.late_free_bytes as f64 / (d * d);
    live.max(0.0)
}

#[derive(Default)]
struct Group {
    file: Option<String>,
    origin: Option<Origin>,
    lines: BTreeMap<u32, u64>,
    types: BTreeMap<String, u64>,
    via: BTreeMap<String, u64>,
    via_bytes: BTreeMap<String, u64>,
    alloc_bytes: u64,
    alloc_count: u64,
    freed_bytes_est: f64,
    live_end: f64,
    collection: bool,
    /// Unfreed sites: (observed allocs, live estimate, estimated count).
    unfreed: Vec<(u64, f64, f64)>,
    sites: Vec<u64>,
}

pub fn analyze(input: &Input<'_>) -> Analysis {
    let d = input.duty.clamp(1e-6, 1.0);
    let elapsed = input.elapsed_s.max(1e-9);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut sites_without_stack = 0;
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let empty: Vec<Frame> = Vec::new();

    let mut site_ids: Vec<&u64> = input.sites.keys().collect();
    site_ids.sort();
    // Functions that call into a collection's growth (a map's table
    // resize...): memory they allocate and never free is likely moved into
    // that collection. Function -> the function that grows the collection.
    let mut collection_callers: BTreeMap<String, String> = BTreeMap::new();
    for site in &site_ids {
        let frames = input.stacks.get(site).unwrap_or(&empty);
        let attr = attribute(frames);
        if attr.grows_collection {
            for f in frames.iter().filter(|f| f.origin == Origin::Owner) {
                collection_callers.entry(f.display_name()).or_insert_with(|| attr.function.clone());
            }
        }
    }
    for site in site_ids {
        let stats = &input.sites[site];
        let frames = input.stacks.get(site).unwrap_or(&empty);
        if frames.is_empty() {
            sites_without_stack += 1;
        }
        let attr = attribute(frames);
        let g = groups.entry(attr.function.clone()).or_default();
        if g.file.is_none() {
            g.file = attr.file.clone();
        }
        g.origin.get_or_insert(attr.origin);
        if let Some(line) = attr.line {
            *g.lines.entry(line).or_default() += stats.alloc_bytes;
        }
        if let Some(ty) = &attr.ty {
            *g.types.entry(ty.clone()).or_default() += stats.alloc_bytes;
        }
        if let Some(via) = &attr.via {
            *g.via.entry(via.clone()).or_default() += stats.alloc_count;
            *g.via_bytes.entry(via.clone()).or_default() += stats.alloc_bytes;
        }
        g.collection |= attr.grows_collection;
        g.alloc_bytes += stats.alloc_bytes;
        g.alloc_count += stats.alloc_count;
        g.freed_bytes_est += stats.free_bytes as f64 / d + stats.late_free_bytes as f64 / (d * d);
        let live = live_estimate(stats, d);
        g.live_end += live;
        g.sites.push(*site);
        if stats.free_count + stats.late_free_count == 0 && stats.alloc_count > 0 {
            g.unfreed.push((stats.alloc_count, live, stats.alloc_count as f64 / d));
        }
        if stats.alloc_bytes > 0 {
            let mut line = String::from("all");
            for f in frames {
                line.push(';');
                line.push_str(&f.label().replace([';', '\n'], ":"));
            }
            *folded.entry(line).or_default() += (stats.alloc_bytes as f64 / d).round() as u64;
        }
    }

    let best = |m: &BTreeMap<String, u64>| m.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| k.clone());
    let best_line =
        |m: &BTreeMap<u32, u64>| m.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| *k);

    let mut total_bytes = 0.0;
    let mut total_allocations = 0.0;
    let mut top = Vec::new();
    let mut leaks = Vec::new();
    let mut growth = Vec::new();
    for (function, g) in &groups {
        let held_by = collection_callers.get(function).cloned();
        let held = g.collection || held_by.is_some();
        let bytes = g.alloc_bytes as f64 / d;
        let count = g.alloc_count as f64 / d;
        total_bytes += bytes;
        total_allocations += count;
        let ty = best(&g.types);
        let line = best_line(&g.lines);
        // The library code below that made most of its memory, by bytes
        // (argon2's one 8 MiB block per hash beside the handler's few
        // small strings and the spawn_blocking task that carries it), else
        // by count.
        let group_via = best(&g.via_bytes).filter(|v| g.via_bytes[v] * 2 >= g.alloc_bytes).or_else(|| best(&g.via).filter(|v| g.via[v] * 2 >= g.alloc_count));
        if g.alloc_count > 0 {
            top.push(AllocatorRow {
                function: function.clone(),
                file: g.file.clone(),
                line,
                bytes: bytes.round() as u64,
                count: count.round() as u64,
                ty: ty.clone(),
                bytes_per_s: crate::profile::round2(bytes / elapsed),
                allocs_per_s: crate::profile::round2(count / elapsed),
                freed_pct: crate::profile::round2((g.freed_bytes_est / bytes.max(1.0) * 100.0).min(100.0)),
                live_bytes: g.live_end.round() as u64,
                origin: g.origin.unwrap_or(Origin::Unknown),
                // Most allocations made by framework/runtime code it called.
                via: group_via.clone(),
            });
        }
        let observed: u64 = g.unfreed.iter().map(|u| u.0).sum();
        let outstanding: f64 = g.unfreed.iter().map(|u| u.1).sum();
        let p_unseen = if d >= 1.0 { 0.0 } else { (1.0 - d).powf(observed as f64) };
        if observed >= LEAK_MIN_ALLOCS && outstanding >= LEAK_MIN_BYTES && p_unseen <= LEAK_MAX_P_UNSEEN {
            leaks.push(LeakRow {
                function: function.clone(),
                file: g.file.clone(),
                line,
                bytes: outstanding.round() as u64,
                count: g.unfreed.iter().map(|u| u.2).sum::<f64>().round() as u64,
                ty: ty.clone(),
                observed_allocations: observed,
                p_all_freed_unseen: p_unseen,
                held_by_collection: held,
                collection_grown_in: held_by.clone(),
                origin: g.origin.unwrap_or(Origin::Unknown),
                via: group_via.clone(),
            });
        }
        // Live bytes of the function's sites at each snapshot.
        let points: Vec<(f64, f64)> = input
            .series
            .iter()
            .map(|snap| {
                let live: f64 = g.sites.iter().filter_map(|s| snap.sites.get(s)).map(|s| live_estimate(s, d)).sum();
                (snap.t, live)
            })
            .collect();
        if points.len() >= GROWTH_MIN_POINTS
            && let Some(fit) = least_squares(&points) {
                let span = points.last().map(|p| p.0).unwrap_or(0.0) - points.first().map(|p| p.0).unwrap_or(0.0);
                if fit.r2 >= GROWTH_MIN_R2 && fit.slope >= GROWTH_MIN_SLOPE && fit.slope * span >= GROWTH_MIN_RISE {
                    growth.push(GrowthRow {
                        function: function.clone(),
                        file: g.file.clone(),
                        line,
                        slope_bytes_per_s: crate::profile::round2(fit.slope),
                        r2: (fit.r2 * 1000.0).round() / 1000.0,
                        start_bytes: points.first().map(|p| p.1).unwrap_or(0.0).round() as u64,
                        end_bytes: points.last().map(|p| p.1).unwrap_or(0.0).round() as u64,
                        points: points.len(),
                        ty: ty.clone(),
                        held_by_collection: held,
                        collection_grown_in: held_by.clone(),
                        never_freed: !g.unfreed.is_empty() && g.unfreed.len() == g.sites.len(),
                        origin: g.origin.unwrap_or(Origin::Unknown),
                        via: group_via.clone(),
                    });
                }
            }
    }
    top.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.function.cmp(&b.function)));
    top.truncate(TOP_ROWS);
    leaks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.function.cmp(&b.function)));
    growth.sort_by(|a, b| b.slope_bytes_per_s.total_cmp(&a.slope_bytes_per_s).then(a.function.cmp(&b.function)));
    Analysis {
        top_allocators: top,
        leak_candidates: leaks,
        growth,
        total_bytes: total_bytes.round() as u64,
        total_allocations: total_allocations.round() as u64,
        sites_without_stack,
        folded: folded.into_iter().map(|(k, v)| format!("{k} {v}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::{dep, owner};

    fn stats(alloc_count: u64, alloc_bytes: u64, free_count: u64, free_bytes: u64) -> SiteStats {
        SiteStats { alloc_count, alloc_bytes, free_count, free_bytes, ..Default::default() }
    }

    fn native(f: &str) -> Frame {
        Frame { function: f.into(), file: None, line: None, origin: Origin::Native, inlined: false }
    }

    #[test]
    fn least_squares_fits_a_line_exactly() {
        let fit = least_squares(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 1.0).abs() < 1e-12);
        assert!((fit.r2 - 1.0).abs() < 1e-12);
        assert!(least_squares(&[(1.0, 1.0)]).is_none());
        let noisy = least_squares(&[(0.0, 0.0), (1.0, 10.0), (2.0, 0.0), (3.0, 10.0)]).unwrap();
        assert!(noisy.r2 < 0.5);
    }

    #[test]
    fn a_site_is_charged_to_the_innermost_owner_frame_with_its_type() {
        let frames = vec![
            owner("svc::main", 1),
            owner("svc::handle", 20),
            dep("<alloc::string::String as core::clone::Clone>::clone", true),
            dep("alloc::raw_vec::RawVecInner<A>::try_allocate_in", false),
            native("malloc"),
        ];
        let a = attribute(&frames);
        assert_eq!(a.function, "svc::handle");
        assert_eq!(a.line, Some(20));
        assert_eq!(a.ty.as_deref(), Some("String"));
    }

    /// A leaking site (never freed, rising), a churning site (freed in
    /// full), a map that grows: the model tells them apart.
    #[test]
    fn a_global_allocator_declared_in_the_owners_crate_is_not_charged() {
        // `#[global_allocator]` in svc: the shim and the GlobalAlloc impl,
        // inlined into the caller, carry svc's file and are owner frames.
        let frames = vec![
            owner("svc::main", 1),
            owner("svc::handle", 20),
            dep("alloc::alloc::alloc", true),
            owner("__rustc::__rust_alloc", 7),
            owner("<svc::arena::Arena as core::alloc::global::GlobalAlloc>::alloc", 40),
            owner("svc::arena::map_chunk", 60),
        ];
        assert_eq!(attribute(&frames).function, "svc::handle");
        let only_machinery = vec![native("start"), owner("__rustc::__rust_dealloc", 7)];
        assert_eq!(attribute(&only_machinery).function, "start");
    }

    #[test]
    fn leaks_growth_and_churn_are_told_apart() {
        let leak = 1u64;
        let churn = 2u64;
        let table = 3u64;
        let entries = 4u64;
        let stacks: HashMap<u64, Vec<Frame>> = [
            (leak, vec![owner("svc::main", 1), owner("svc::leak", 10), native("malloc")]),
            (churn, vec![owner("svc::main", 1), owner("svc::churn", 20), dep("alloc::raw_vec::RawVec<T,A>::grow_one", false), native("malloc")]),
            (table, vec![owner("svc::main", 1), owner("svc::grow", 30), dep("hashbrown::raw::RawTable<T,A>::reserve_rehash", false), native("malloc")]),
            (entries, vec![owner("svc::main", 1), owner("svc::grow", 31), dep("alloc::fmt::format::format_inner", false), native("malloc")]),
        ]
        .into_iter()
        .collect();
        let series: Vec<Snapshot> = (1..=10)
            .map(|i| Snapshot {
                t: i as f64,
                sites: [
                    (leak, stats(100 * i, 100 * i * 1024, 0, 0)),
                    (churn, stats(10_000 * i, 10_000 * i * 64, 10_000 * i, 10_000 * i * 64)),
                    (table, stats(i, (1 << i) * 1024, i - 1, ((1 << i) - 2) * 1024)),
                    (entries, stats(100 * i, 100 * i * 512, 0, 0)),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        let sites = series.last().unwrap().sites.clone();
        let a = analyze(&Input { duty: 1.0, elapsed_s: 10.0, sites: &sites, series: &series, stacks: &stacks });
        let leaks: Vec<&str> = a.leak_candidates.iter().map(|l| l.function.as_str()).collect();
        assert!(leaks.contains(&"svc::leak"), "{leaks:?}");
        assert!(!leaks.contains(&"svc::churn"), "freed memory is never a leak: {leaks:?}");
        let grow_leak = a.leak_candidates.iter().find(|l| l.function == "svc::grow").unwrap();
        assert!(grow_leak.held_by_collection);
        assert!(!a.leak_candidates.iter().find(|l| l.function == "svc::leak").unwrap().held_by_collection);
        let growing: Vec<&str> = a.growth.iter().map(|g| g.function.as_str()).collect();
        assert!(growing.contains(&"svc::leak") && growing.contains(&"svc::grow"), "{growing:?}");
        assert!(!growing.contains(&"svc::churn"));
        assert_eq!(a.top_allocators[0].function, "svc::churn");
        assert_eq!(a.top_allocators[0].count, 100_000);
        assert_eq!(a.top_allocators[0].live_bytes, 0);
        assert_eq!(a.top_allocators[0].ty.as_deref(), Some("Vec<_>"));
        assert!((a.top_allocators[0].allocs_per_s - 10_000.0).abs() < 1e-6);
    }

    /// Issue 26: argon2's one 8 MiB block per hash under the handler's
    /// closure outweighs the spawn_blocking task's few small allocations:
    /// the row is argon2's working memory, by bytes.
    #[test]
    fn the_library_that_made_most_of_a_functions_bytes_names_the_row() {
        let stacks: HashMap<u64, Vec<Frame>> = [
            (1, vec![owner("svc::login::{{closure}}", 10), dep("tokio::task::blocking::spawn_blocking", false), native("malloc")]),
            (2, vec![owner("svc::login::{{closure}}::{{closure}}", 12), dep("argon2::Argon2::hash_password_into", false), dep("alloc::vec::from_elem", true), native("malloc")]),
        ]
        .into_iter()
        .collect();
        let sites: HashMap<u64, SiteStats> = [(1, stats(300, 300 * 64, 300, 300 * 64)), (2, stats(100, 100 * 8 * 1024 * 1024, 100, 100 * 8 * 1024 * 1024))].into_iter().collect();
        let a = analyze(&Input { duty: 1.0, elapsed_s: 10.0, sites: &sites, series: &[], stacks: &stacks });
        let row = a.top_allocators.iter().find(|r| r.function == "svc::login").unwrap();
        assert_eq!(row.via.as_deref(), Some("argon2::Argon2::hash_password_into"), "{row:?}");
    }

    #[test]
    fn unfreed_memory_of_a_function_that_grows_a_map_in_a_callee_is_held_by_it() {
        let stacks: HashMap<u64, Vec<Frame>> = [
            (1, vec![owner("svc::profile", 10), dep("<alloc::vec::Vec<T,A> as core::clone::Clone>::clone", true), native("malloc")]),
            (2, vec![owner("svc::profile", 11), owner("svc::cache_insert", 40), dep("hashbrown::raw::RawTable<T,A>::reserve_rehash", false), native("malloc")]),
        ]
        .into_iter()
        .collect();
        let sites: HashMap<u64, SiteStats> = [(1, stats(100, 256 * 1024, 0, 0)), (2, stats(3, 4096, 2, 1024))].into_iter().collect();
        let a = analyze(&Input { duty: 1.0, elapsed_s: 10.0, sites: &sites, series: &[], stacks: &stacks });
        let l = a.leak_candidates.iter().find(|l| l.function == "svc::profile").unwrap();
        assert!(l.held_by_collection);
        assert_eq!(l.collection_grown_in.as_deref(), Some("svc::cache_insert"));
    }

    #[test]
    fn default_mode_scales_observed_counts_by_the_duty_cycle() {
        let stacks: HashMap<u64, Vec<Frame>> = [(1, vec![owner("svc::churn", 20), native("malloc")])].into_iter().collect();
        // 5% duty: 500 allocations seen stand for 10 000; a late free
        // (seen with probability 5%) stands for 400 frees.
        let s = SiteStats { alloc_count: 500, alloc_bytes: 500 * 100, free_count: 480, free_bytes: 480 * 100, late_free_count: 1, late_free_bytes: 100 };
        let sites: HashMap<u64, SiteStats> = [(1, s)].into_iter().collect();
        let a = analyze(&Input { duty: 0.05, elapsed_s: 10.0, sites: &sites, series: &[], stacks: &stacks });
        let row = &a.top_allocators[0];
        assert_eq!(row.count, 10_000);
        assert_eq!(row.bytes, 1_000_000);
        // 1e6 - 960e3 - 40e3 = 0 live.
        assert_eq!(row.live_bytes, 0);
        assert!(a.leak_candidates.is_empty());
    }
}
