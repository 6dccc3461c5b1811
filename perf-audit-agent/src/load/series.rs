//! Latency over the run: one bucket per second of *planned* send time
//! (coordinated-omission-corrected latencies, like the totals), so a stall
//! shows in the seconds whose requests it delayed. Bounded: past
//! [`MAX_BUCKETS`] buckets, neighbours are merged and the bucket doubles
//! (a one-hour run keeps ~8 s buckets).

use std::time::Duration;

use hdrhistogram::Histogram;
use super::{LatencyPoint, LatencySeries};

/// At most this many buckets are kept.
pub const MAX_BUCKETS: usize = 600;

/// Accumulates the series while the run goes.
pub(super) struct SeriesRecorder {
    interval_s: u64,
    buckets: Vec<(Histogram<u64>, u64, u64)>,
}

fn bucket_histogram() -> Histogram<u64> {
    // Two significant digits: a per-second plot needs no more, and a bucket
    // costs ~20 KiB instead of ~160 KiB.
    Histogram::new_with_bounds(1, super::MAX_RECORDED_LATENCY.as_micros() as u64, 2)
        .expect("static histogram bounds are valid")
}

impl SeriesRecorder {
    pub(super) fn new() -> Self {
        SeriesRecorder { interval_s: 1, buckets: Vec::new() }
    }

    /// One request planned `planned_offset` after the start; `latency` when
    /// it was answered (an error answer still has one), `error` when it
    /// failed.
    pub(super) fn record(&mut self, planned_offset: Duration, latency: Option<Duration>, error: bool) {
        let mut index = (planned_offset.as_secs() / self.interval_s) as usize;
        while index >= MAX_BUCKETS {
            self.halve();
            index = (planned_offset.as_secs() / self.interval_s) as usize;
        }
        while self.buckets.len() <= index {
            self.buckets.push((bucket_histogram(), 0, 0));
        }
        let bucket = &mut self.buckets[index];
        bucket.1 += 1;
        if error {
            bucket.2 += 1;
        }
        if let Some(latency) = latency {
            super::record_latency(&mut bucket.0, latency);
        }
    }

    /// Merges neighbouring buckets: the interval doubles.
    fn halve(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        let mut iter = old.into_iter();
        while let Some((mut hist, requests, errors)) = iter.next() {
            let (mut requests, mut errors) = (requests, errors);
            if let Some((next, r, e)) = iter.next() {
                let _ = hist.add(&next);
                requests += r;
                errors += e;
            }
            self.buckets.push((hist, requests, errors));
        }
        self.interval_s *= 2;
    }

    pub(super) fn finish(self) -> LatencySeries {
        let ms = |us: u64| us as f64 / 1000.0;
        let interval = self.interval_s;
        LatencySeries {
            interval_s: interval as f64,
            points: self
                .buckets
                .into_iter()
                .enumerate()
                .map(|(i, (hist, requests, errors))| {
                    let answered = !hist.is_empty();
                    LatencyPoint {
                        t_s: (i as u64 * interval) as f64,
                        requests,
                        errors,
                        p50_ms: if answered { ms(hist.value_at_quantile(0.50)) } else { 0.0 },
                        p99_ms: if answered { ms(hist.value_at_quantile(0.99)) } else { 0.0 },
                        max_ms: if answered { ms(hist.max()) } else { 0.0 },
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_planned_second_and_count_errors() {
        let mut r = SeriesRecorder::new();
        for i in 0..100u64 {
            r.record(Duration::from_millis(i * 10), Some(Duration::from_micros(1000 + i)), false);
        }
        r.record(Duration::from_millis(2500), Some(Duration::from_millis(80)), false);
        r.record(Duration::from_millis(2600), None, true);
        let s = r.finish();
        assert_eq!(s.interval_s, 1.0);
        assert_eq!(s.points.len(), 3);
        assert_eq!(s.points[0].requests, 100);
        assert!((s.points[0].p50_ms - 1.05).abs() < 0.02, "{:?}", s.points[0]);
        assert_eq!(s.points[1], LatencyPoint { t_s: 1.0, ..Default::default() }, "an empty second stays in the series");
        assert_eq!((s.points[2].requests, s.points[2].errors), (2, 1));
        assert!((s.points[2].p99_ms - 80.0).abs() < 1.0);
    }

    #[test]
    fn a_long_run_merges_buckets_and_keeps_its_span() {
        let mut r = SeriesRecorder::new();
        for s in 0..(MAX_BUCKETS as u64 * 2 + 10) {
            r.record(Duration::from_secs(s), Some(Duration::from_millis(1)), false);
        }
        let s = r.finish();
        assert_eq!(s.interval_s, 4.0);
        assert!(s.points.len() <= MAX_BUCKETS);
        assert_eq!(s.points.iter().map(|p| p.requests).sum::<u64>(), MAX_BUCKETS as u64 * 2 + 10);
        assert_eq!(s.points.last().unwrap().t_s, 1208.0);
    }
}
