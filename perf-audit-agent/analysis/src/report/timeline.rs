//! CPU by thread role over the audit, from the time-stamped CPU samples
//! (`--unwind dwarf`: every sample reaches the agent with its time; the
//! frame-pointer path aggregates in the kernel and has no times). Pure.

use std::collections::BTreeMap;

use crate::{
    profile::async_runtime::ThreadRole,
    report::{CpuTimeline, CpuTimelinePoint},
};

/// At most this many buckets; longer audits get wider buckets.
pub const MAX_BUCKETS: u64 = 600;

/// The label a role has in the report.
pub fn role_label(role: ThreadRole) -> &'static str {
    match role {
        ThreadRole::Worker => "Tokio workers",
        ThreadRole::BlockingPool => "blocking pool",
        ThreadRole::Other => "other threads",
    }
}

/// Buckets `samples` (thread id, `CLOCK_MONOTONIC` ns) from `start_ns` over
/// `duration_s`; a thread's role comes from `roles` (other when absent).
/// `None` without samples.
pub fn cpu_by_role(
    samples: impl IntoIterator<Item = (u32, u64)>,
    start_ns: u64,
    duration_s: f64,
    frequency_hz: u64,
    roles: &BTreeMap<u32, ThreadRole>,
) -> Option<CpuTimeline> {
    let order = [ThreadRole::Worker, ThreadRole::BlockingPool, ThreadRole::Other];
    let span_s = duration_s.max(1.0).ceil() as u64;
    let interval_s = span_s.div_ceil(MAX_BUCKETS).max(1);
    // A last bucket shorter than a quarter of the interval (collection ran
    // 10.05 s) joins the one before, rather than plotting a nearly empty
    // bucket as a drop.
    let duration_s = duration_s.max(0.001);
    let mut buckets = span_s.div_ceil(interval_s) as usize;
    let last_width = duration_s - ((buckets - 1) as u64 * interval_s) as f64;
    if buckets > 1 && last_width < interval_s as f64 / 4.0 {
        buckets -= 1;
    }
    // The width each bucket really covers (the last one may be shorter).
    let width = |b: usize| -> f64 {
        let start = (b as u64 * interval_s) as f64;
        if b + 1 == buckets { (duration_s - start).max(interval_s as f64 / 4.0) } else { interval_s as f64 }
    };
    let mut counts = vec![[0u64; 3]; buckets];
    let mut any = false;
    for (tid, ts_ns) in samples {
        let Some(offset) = ts_ns.checked_sub(start_ns) else { continue };
        let bucket = ((offset / 1_000_000_000) / interval_s) as usize;
        let role = roles.get(&tid).copied().unwrap_or(ThreadRole::Other);
        let slot = order.iter().position(|r| *r == role).expect("every role is in the order");
        // A sample taken as collection ended belongs to the last bucket.
        counts[bucket.min(buckets - 1)][slot] += 1;
        any = true;
    }
    if !any {
        return None;
    }
    let used: Vec<usize> = (0..3).filter(|&i| counts.iter().any(|c| c[i] > 0)).collect();
    let hz = frequency_hz.max(1) as f64;
    Some(CpuTimeline {
        interval_s: interval_s as f64,
        roles: used.iter().map(|&i| role_label(order[i]).to_string()).collect(),
        points: counts
            .iter()
            .enumerate()
            .map(|(b, c)| CpuTimelinePoint {
                t_s: (b as u64 * interval_s) as f64,
                cores: used.iter().map(|&i| (c[i] as f64 / (hz * width(b)) * 1000.0).round() / 1000.0).collect(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_cores_per_role_and_second() {
        let roles =
            BTreeMap::from([(10, ThreadRole::Worker), (11, ThreadRole::Worker), (20, ThreadRole::BlockingPool)]);
        let start = 5_000_000_000u64;
        let mut samples = Vec::new();
        // Second 0: both workers busy (2 cores); second 1: one worker and
        // the pool half; second 2: the main thread (unknown: other).
        for i in 0..100u64 {
            samples.push((10, start + i * 10_000_000));
            samples.push((11, start + i * 10_000_000));
            samples.push((10, start + 1_000_000_000 + i * 10_000_000));
        }
        for i in 0..50u64 {
            samples.push((20, start + 1_000_000_000 + i * 20_000_000));
            samples.push((1, start + 2_000_000_000 + i * 20_000_000));
        }
        samples.push((1, start - 1)); // before the start: ignored
        let t = cpu_by_role(samples, start, 3.0, 100, &roles).unwrap();
        assert_eq!(t.interval_s, 1.0);
        assert_eq!(t.roles, ["Tokio workers", "blocking pool", "other threads"]);
        let cores: Vec<&[f64]> = t.points.iter().map(|p| p.cores.as_slice()).collect();
        assert_eq!(cores, [&[2.0, 0.0, 0.0][..], &[1.0, 0.5, 0.0], &[0.0, 0.0, 0.5]]);
    }

    #[test]
    fn no_sample_no_timeline_and_long_audits_get_wide_buckets() {
        assert_eq!(cpu_by_role(Vec::new(), 0, 10.0, 99, &BTreeMap::new()), None);
        let t = cpu_by_role([(1, 3_599_000_000_000)], 0, 3600.0, 99, &BTreeMap::new()).unwrap();
        assert_eq!((t.interval_s, t.points.len()), (6.0, 600));
        // 10.05 s: ten buckets, the last 0.05 s counted in the tenth.
        let samples = (0..1005u64).map(|i| (1, i * 10_000_000));
        let t = cpu_by_role(samples, 0, 10.05, 100, &BTreeMap::new()).unwrap();
        assert_eq!(t.points.len(), 10);
        assert_eq!(t.points[9].cores, [1.0]);
        // 10.5 s: an eleventh bucket of half a second, its own width.
        let samples = (0..1050u64).map(|i| (1, i * 10_000_000));
        let t = cpu_by_role(samples, 0, 10.5, 100, &BTreeMap::new()).unwrap();
        assert_eq!(t.points.len(), 11);
        assert_eq!(t.points[10].cores, [1.0]);
        assert_eq!(t.roles, ["other threads"]);
    }
}
