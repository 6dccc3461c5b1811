//! The load generator's result (`baseline.load`).

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency percentiles, in milliseconds (microsecond resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LatencySummary {
    /// Number of latencies recorded (responses received).
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Per-endpoint counts and latencies.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct EndpointStats {
    pub method: String,
    pub url: String,
    pub weight: u32,
    pub sent: u64,
    /// Responses received, whatever their status.
    pub completed: u64,
    /// Responses with a 2xx or 3xx status.
    pub ok: u64,
    /// Responses with another status (4xx, 5xx...).
    pub status_errors: u64,
    /// No response: connection refused or reset, malformed response, timeout.
    pub transport_errors: u64,
    /// The part of `transport_errors` that are timeouts.
    pub timeouts: u64,
    /// Coordinated-omission-corrected latency of the responses received.
    pub latency: LatencySummary,
    /// The first transport error, to tell why the endpoint fails.
    pub first_error: Option<String>,
}

/// What a run measured. Every request planned in the window is accounted
/// for: `planned = sent + unsent` and
/// `sent = completed + transport_errors + unfinished`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct LoadResult {
    pub target_rps: u32,
    /// The window that was asked for.
    pub duration_s: f64,
    /// The window that ran (shorter when stopped early).
    pub window_s: f64,
    /// From the start to the last response (or the window's end if later).
    pub elapsed_s: f64,
    /// `stop` resolved before the window ended.
    pub stopped_early: bool,
    pub max_in_flight: usize,
    /// Requests whose planned time fell in the window.
    pub planned: u64,
    pub sent: u64,
    /// Planned but never sent: every slot stayed busy until the window closed.
    pub unsent: u64,
    /// Responses received, whatever their status.
    pub completed: u64,
    /// 2xx and 3xx responses.
    pub ok: u64,
    /// Responses with another status.
    pub status_errors: u64,
    /// Requests that got no response (including timeouts).
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Still in flight after the drain timeout; abandoned.
    pub unfinished: u64,
    /// `completed / elapsed_s`.
    pub achieved_rps: f64,
    /// Latency from each request's planned send time (what users wait).
    pub latency: LatencySummary,
    /// Latency from the actual send time (what a closed-loop tool reports).
    pub uncorrected_latency: LatencySummary,
    /// Responses by HTTP status.
    pub status_counts: BTreeMap<u16, u64>,
    pub per_endpoint: Vec<EndpointStats>,
    /// Latency per second of planned send time (p50/p99/max, errors).
    pub series: LatencySeries,
}

impl LoadResult {
    /// Status errors plus transport errors.
    pub fn errors(&self) -> u64 {
        self.status_errors + self.transport_errors
    }
}

/// One bucket of the series: requests planned in `[t_s, t_s + interval_s)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LatencyPoint {
    /// Start of the bucket, seconds since the load started.
    pub t_s: f64,
    /// Requests that ended (answered or failed).
    pub requests: u64,
    /// Non-2xx/3xx answers, transport errors and timeouts.
    pub errors: u64,
    /// Percentiles of the answered requests; 0 when none was answered.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// report.json `baseline.load.series`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LatencySeries {
    /// Width of each bucket, seconds (1 unless the run was long).
    pub interval_s: f64,
    pub points: Vec<LatencyPoint>,
}
