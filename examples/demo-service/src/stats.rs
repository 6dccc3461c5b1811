//! Request latency statistics: a middleware records every request's latency
//! in a shared window, and `GET /stats` summarizes the window.
//!
//! The window sits behind a `std::sync::Mutex`, which is the right tool when
//! every critical section is short (the middleware only pushes a number).
//! `summarize_latency_stats` breaks that rule: see its PLANTED DEFECT note.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use crate::AppState;

/// How many recent latencies the window keeps.
const WINDOW_LEN: usize = 20_000;
/// What a synchronous push to the metrics backend costs (see
/// `summarize_latency_stats`).
const METRICS_PUSH_LATENCY: Duration = Duration::from_millis(2);

/// The latencies of the last `WINDOW_LEN` requests, in microseconds.
#[derive(Default)]
pub struct LatencyWindow {
    samples_us: Vec<u32>,
    /// Where the next sample goes once the window is full.
    next: usize,
    total_requests: u64,
}

impl LatencyWindow {
    fn record(&mut self, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if self.samples_us.len() < WINDOW_LEN {
            self.samples_us.push(us);
        } else {
            self.samples_us[self.next] = us;
            self.next = (self.next + 1) % WINDOW_LEN;
        }
        self.total_requests += 1;
    }
}

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub total_requests: u64,
    pub window: usize,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
}

/// Middleware: times the request and records its latency. The lock is held
/// only for the push.
pub async fn record_latency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(started.elapsed());
    response
}

/// PLANTED DEFECT (std Mutex held during slow work): the guard of the shared
/// `std::sync::Mutex` is held while the window is copied and sorted and while
/// the summary is pushed to the metrics backend through a blocking client
/// (stood in for by `std::thread::sleep`). Called from the async `/stats`
/// handler, this blocks the tokio worker thread for ~2-3 ms, and every other
/// request's `record_latency` blocks its own worker on the same lock
/// meanwhile. Fix: copy the samples under the lock, drop the guard, then sort
/// and publish (the push with an async client, or on `spawn_blocking`).
pub fn summarize_latency_stats(latencies: &Mutex<LatencyWindow>) -> LatencySummary {
    let window = latencies.lock().unwrap_or_else(PoisonError::into_inner);
    let mut sorted = window.samples_us.clone();
    sorted.sort_unstable();
    let summary = LatencySummary {
        total_requests: window.total_requests,
        window: sorted.len(),
        p50_us: percentile(&sorted, 50),
        p90_us: percentile(&sorted, 90),
        p99_us: percentile(&sorted, 99),
        max_us: sorted.last().copied().unwrap_or(0),
    };
    std::thread::sleep(METRICS_PUSH_LATENCY); // still holding `window`
    summary
}

/// The `pct`-th percentile of sorted samples (nearest rank), 0 when empty.
fn percentile(sorted: &[u32], pct: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}
