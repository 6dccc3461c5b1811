//! Open-loop HTTP load generator: drives the audited service while it is
//! being profiled (`--load URL` / `--scenario FILE` at `--rps N`).
//!
//! It works like wrk2. Request `i` is *planned* for `start + i / rps`, and
//! its latency is measured from that planned time, not from when it really
//! went out. So a server that stalls shows up in the latency of every
//! request that should have been sent during the stall, and coordinated
//! omission is corrected. Requests are never skipped when the
//! server is slow. At most [`LoadPlan::max_in_flight`] requests are in
//! flight: when every slot is busy the next request waits for one, and
//! that wait counts toward its latency. Which endpoint each request hits is a smooth
//! weighted round-robin over the scenario ([`WeightedRoundRobin`]), so the
//! sequence is deterministic given the plan. The latency measured from the
//! real send time is also kept ([`LoadResult::uncorrected_latency`]), so you can
//! see how much a closed-loop tool would have hidden.
//!
//! Plain `http://` over HTTP/1.1 with keep-alive only (the norm is a
//! service on loopback): https is rejected up front.
//!
//! # Scenario file (TOML)
//!
//! ```toml
//! [[request]]
//! url = "http://127.0.0.1:8080/feed"   # required, absolute http:// URL
//! weight = 3                           # share of the traffic, >= 1 (default 1)
//!
//! [[request]]
//! method = "POST"                      # default GET
//! url = "http://127.0.0.1:8080/users"
//! body = '{"name":"x"}'                # sent as is (content-length is computed)
//! headers = { "content-type" = "application/json" }
//! weight = 1
//! ```
//!
//! With these weights, 3 of every 4 requests go to `/feed`, interleaved as
//! `feed, feed, users, feed, ...`. Unknown keys are errors (to catch typos).
//!
//! # Use
//!
//! ```no_run
//! # async fn f() -> perf_audit_agent::error::Result<()> {
//! use perf_audit_agent::load::{self, LoadPlan, Scenario};
//! let scenario = Scenario::from_urls(&["http://127.0.0.1:8080/feed".to_string()])?;
//! let plan = LoadPlan::new(scenario, 100, std::time::Duration::from_secs(30))?;
//! let result = load::run(plan, tokio::signal::ctrl_c()).await;
//! println!("{}", load::summary_line(&result));
//! # Ok(()) }
//! ```

mod scenario;
mod series;

use std::{
    collections::BTreeMap,
    error::Error as StdError,
    future::Future,
    pin::pin,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::sync::{mpsc, oneshot, watch};

pub use scenario::{Scenario, WeightedRequest, WeightedRoundRobin, parse_http_url};

use crate::error::{Error, ErrorKind, Result};
pub use perf_audit_analysis::report::schema::{EndpointStats, LatencyPoint, LatencySeries, LatencySummary, LoadResult};

/// Latencies above this are recorded as this (the histogram saturates).
pub const MAX_RECORDED_LATENCY: Duration = Duration::from_secs(60);
/// Highest `--rps` accepted; beyond it the generator competes with the
/// target for the CPU it is measuring.
pub const MAX_RPS: u32 = 100_000;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub scenario: Scenario,
    /// Planned requests per second (>= 1).
    pub rps: u32,
    /// Requests are planned over this window.
    pub duration: Duration,
    /// Bound on concurrent requests (and pooled connections).
    pub max_in_flight: usize,
    /// A request without a complete response after this is a timeout
    /// (counted as a transport error).
    pub request_timeout: Duration,
    /// After the window closes, how long in-flight requests may finish
    /// before they are abandoned (counted as `unfinished`).
    pub drain_timeout: Duration,
}

impl LoadPlan {
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

    /// A plan with the default bounds, validated.
    pub fn new(scenario: Scenario, rps: u32, duration: Duration) -> Result<Self> {
        let plan = LoadPlan {
            scenario,
            rps,
            duration,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Checks the values a caller may have set by hand.
    pub fn validate(&self) -> Result<()> {
        let usage = |m: String| Err(Error::new(ErrorKind::Usage, m));
        if self.rps == 0 || self.rps > MAX_RPS {
            return usage(format!(
                "--rps {} is out of range: use 1 to {MAX_RPS}",
                self.rps
            ));
        }
        if self.duration.is_zero() {
            return usage("the load duration must be longer than 0s".to_string());
        }
        if self.max_in_flight == 0 {
            return usage("the in-flight request bound must be at least 1".to_string());
        }
        if self.scenario.requests.is_empty() {
            return usage(
                "the load scenario has no request: pass --load URL or a scenario file".to_string(),
            );
        }
        if self.request_timeout.is_zero() {
            return usage("the request timeout must be longer than 0s".to_string());
        }
        Ok(())
    }
}

/// Percentiles of a histogram of microseconds; all zeros when it is empty.
pub fn latency_summary(hist: &Histogram<u64>) -> LatencySummary {
    if hist.is_empty() {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: hist.len(),
        mean_ms: hist.mean().round() / 1000.0,
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p90_ms: ms(hist.value_at_quantile(0.90)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
    }
}

/// An empty latency histogram: microseconds, 3 significant digits, up to
/// [`MAX_RECORDED_LATENCY`].
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED_LATENCY.as_micros() as u64, 3)
        .expect("static histogram bounds are valid")
}

/// Records `latency` in microseconds, saturating at the histogram's maximum.
pub fn record_latency(hist: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    hist.saturating_record(us);
}

/// The planned send time of request `i`, as an offset from the start.
pub fn planned_offset(i: u64, rps: u32) -> Duration {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rps.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many requests are planned in a window of `window` (offsets `< window`).
pub fn planned_count(window: Duration, rps: u32) -> u64 {
    let n = window.as_nanos() * u128::from(rps.max(1));
    u64::try_from(n.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

/// One line for the report and the console, e.g.
/// `load: 2000 sent, 2000 answered at 99.8 rps (target 100 rps over 20.0s): p50 1.20 ms, p90 2.10 ms, p99 4.50 ms, p99.9 9.10 ms, max 12.00 ms; 0 errors`.
pub fn summary_line(r: &LoadResult) -> String {
    let l = &r.latency;
    let mut line = format!(
        "load: {} sent, {} answered at {:.1} rps (target {} rps over {:.1}s{}): ",
        r.sent,
        r.completed,
        r.achieved_rps,
        r.target_rps,
        r.window_s,
        if r.stopped_early {
            ", stopped early"
        } else {
            ""
        },
    );
    if l.count == 0 {
        line.push_str("no response");
    } else {
        line.push_str(&format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
    }
    if r.errors() == 0 {
        line.push_str("; 0 errors");
    } else {
        line.push_str(&format!(
            "; {} errors ({} HTTP status, {} transport{})",
            r.errors(),
            r.status_errors,
            r.transport_errors,
            if r.timeouts > 0 {
                format!(", {} timed out", r.timeouts)
            } else {
                String::new()
            },
        ));
    }
    if r.unsent > 0 || r.unfinished > 0 {
        line.push_str(&format!(
            "; the service fell behind: {} not sent (all {} slots busy), {} unanswered at the end",
            r.unsent, r.max_in_flight, r.unfinished
        ));
    }
    line
}

/// Runs the plan: plans requests over `plan.duration` (or until `stop`
/// resolves), then waits up to `plan.drain_timeout` for the ones in flight.
/// Never fails: errors are counted in the result. Must be called within a
/// Tokio runtime; requests run as tasks on it.
///
/// Requests are paced by a dedicated thread with `std::thread` timers
/// (tens of microseconds of slack) rather than Tokio's millisecond timer
/// wheel, which would add up to ~1 ms of send lateness to every
/// corrected latency: too much for a loopback service answering in 200 µs.
/// Each ended request's (planned send time in seconds since the load
/// started, latency in ms; `None` for an error), shared while the load runs
/// (the engine's overhead budget reads it; it takes what is there).
pub type LiveLatency = Arc<std::sync::Mutex<Vec<(f64, Option<f64>)>>>;

/// At most this many samples wait in a [`LiveLatency`] (the reader takes
/// them every second); beyond, they are not shared.
pub const LIVE_CAPACITY: usize = 100_000;

pub async fn run(plan: LoadPlan, stop: impl Future) -> LoadResult {
    run_live(plan, stop, None).await
}

/// [`run`], sharing each ended request's latency as it arrives.
pub async fn run_live(plan: LoadPlan, stop: impl Future, live: Option<LiveLatency>) -> LoadResult {
    let LoadPlan {
        scenario,
        rps,
        duration,
        max_in_flight,
        request_timeout,
        drain_timeout,
    } = plan;
    let rps = rps.max(1);
    let max_in_flight = max_in_flight.max(1);
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<Sample>();
    let (abandon_tx, abandon_rx) = watch::channel(false);
    let (paced_tx, mut paced_rx) = oneshot::channel::<Paced>();
    let pacing = Arc::new(Pacing::default());
    // Stops the pacer if this future is dropped mid-run.
    let _stop_pacer = StopOnDrop(pacing.clone());

    // The requests run on a runtime of their own (one worker thread), never
    // on the caller's: in an audit, the agent's runtime also drains rings and
    // unwinds stacks, and requests queued behind that work looked like a
    // stalled service. Measured before this: the demo at 100 rps answered
    // 6.4-34 requests/s with p99 18-35 s and timeouts while it used 0.02
    // cores (issue 19's stall), and 98-99 rps with p99 0.1-0.3 s measured
    // right after the probes detached.
    let own_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("perf-audit-http")
        .enable_all()
        .build()
        .ok();
    let runtime = own_runtime.as_ref().map(|rt| rt.handle().clone()).unwrap_or_else(tokio::runtime::Handle::current);
    // The client's connection tasks are spawned where it is built.
    let client = {
        let _entered = runtime.enter();
        http_client(max_in_flight, request_timeout)
    };
    let start = Instant::now();
    let mut recorder = Recorder::new(&scenario, start);
    recorder.live = live;
    let end = start + duration;
    let pacer = Pacer {
        pacing: pacing.clone(),
        start,
        end,
        rps,
        max_in_flight,
        request_timeout,
        endpoints: scenario.requests.clone().into(),
        chooser: scenario.chooser(),
        client,
        runtime,
        samples: samples_tx,
        abandon: abandon_rx,
    };
    let spawned = std::thread::Builder::new()
        .name("perf-audit-load".to_string())
        .spawn(move || {
            let _ = paced_tx.send(pacer.run());
        });
    if let Err(e) = spawned {
        recorder.endpoints.iter_mut().for_each(|ep| {
            ep.first_error
                .get_or_insert_with(|| format!("cannot start the load thread: {e}"));
        });
    }

    let mut stop = pin!(stop);
    let mut stopped = false;
    // Until the pacer is done: record completions, forward `stop`.
    let paced = loop {
        tokio::select! {
            biased;
            _ = &mut stop, if !stopped => {
                stopped = true;
                pacing.stop();
            }
            paced = &mut paced_rx => break paced.unwrap_or_else(|_| Paced::nothing(start, recorder.endpoints.len())),
            Some(sample) = samples_rx.recv() => recorder.record(sample),
        }
    };

    // Drain: in-flight requests may finish, up to the drain timeout.
    let drain = tokio::time::sleep(drain_timeout);
    let mut drain = pin!(drain);
    while recorder.received < paced.sent {
        tokio::select! {
            biased;
            _ = &mut stop, if !stopped => {
                stopped = true;
                break;
            }
            Some(sample) = samples_rx.recv() => recorder.record(sample),
            _ = &mut drain => break,
        }
    }
    // Whatever is still in flight is abandoned (its connection closed).
    let _ = abandon_tx.send(true);
    let unfinished = paced.sent.saturating_sub(recorder.received);
    if let Some(rt) = own_runtime {
        // (Dropping a runtime may block; this is inside the caller's.)
        rt.shutdown_background();
    }

    for (ep, sent) in recorder.endpoints.iter_mut().zip(&paced.sent_per_endpoint) {
        ep.sent = *sent;
    }
    let window = paced.window_end.saturating_duration_since(start);
    let last = recorder
        .last_completion
        .unwrap_or(paced.window_end)
        .max(paced.window_end);
    recorder.finish(Finish {
        target_rps: rps,
        duration,
        window,
        elapsed: last.saturating_duration_since(start),
        stopped_early: stopped && paced.window_end < end,
        max_in_flight,
        // Requests due while every slot was busy count as planned, unsent.
        planned: if paced.blocked {
            planned_count(window, rps).max(paced.sent)
        } else {
            paced.sent
        },
        sent: paced.sent,
        unfinished,
    })
}

/// What the pacing thread did.
struct Paced {
    sent: u64,
    sent_per_endpoint: Vec<u64>,
    /// It ended while a due request waited for a slot.
    blocked: bool,
    /// When it stopped planning: the end of the duration, or the stop.
    window_end: Instant,
}

impl Paced {
    fn nothing(start: Instant, endpoints: usize) -> Self {
        Paced {
            sent: 0,
            sent_per_endpoint: vec![0; endpoints],
            blocked: false,
            window_end: start,
        }
    }
}

/// State shared by the pacing thread, the request tasks (slots) and `run`
/// (stop).
#[derive(Default)]
struct Pacing {
    state: Mutex<PacingState>,
    changed: Condvar,
}

#[derive(Default)]
struct PacingState {
    in_flight: usize,
    stopped: bool,
    waiting_for_slot: bool,
}

impl Pacing {
    fn lock(&self) -> MutexGuard<'_, PacingState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// Blocks until `deadline`; false if stopped first.
    fn sleep_until(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Takes one of `max` slots, blocking while all are busy; `None` if
    /// stopped or `end` passes first.
    fn take_slot(self: &Arc<Self>, max: usize, end: Instant) -> Option<Slot> {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return None;
            }
            if state.in_flight < max {
                state.in_flight += 1;
                state.waiting_for_slot = false;
                return Some(Slot(self.clone()));
            }
            let now = Instant::now();
            if now >= end {
                state.waiting_for_slot = false;
                return None;
            }
            state.waiting_for_slot = true;
            state = self
                .changed
                .wait_timeout(state, end - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// One in-flight request; dropping it frees the slot.
struct Slot(Arc<Pacing>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        if state.waiting_for_slot {
            drop(state);
            self.0.changed.notify_all();
        }
    }
}

struct StopOnDrop(Arc<Pacing>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The pacing thread: sends request `i` at `start + i / rps`.
struct Pacer {
    pacing: Arc<Pacing>,
    start: Instant,
    end: Instant,
    rps: u32,
    max_in_flight: usize,
    request_timeout: Duration,
    endpoints: Arc<[WeightedRequest]>,
    chooser: WeightedRoundRobin,
    client: HttpClient,
    runtime: tokio::runtime::Handle,
    samples: mpsc::UnboundedSender<Sample>,
    abandon: watch::Receiver<bool>,
}

impl Pacer {
    fn run(mut self) -> Paced {
        let mut paced = Paced::nothing(self.start, self.endpoints.len());
        if self.endpoints.is_empty() {
            return paced;
        }
        loop {
            let planned = self.start + planned_offset(paced.sent, self.rps);
            if planned >= self.end {
                paced.window_end = self.end;
                break;
            }
            if !self.pacing.sleep_until(planned) {
                paced.window_end = Instant::now().min(self.end);
                break;
            }
            let Some(slot) = self.pacing.take_slot(self.max_in_flight, self.end) else {
                paced.blocked = true;
                paced.window_end = Instant::now().min(self.end);
                break;
            };
            let index = self.chooser.next_index();
            let endpoints = self.endpoints.clone();
            let client = self.client.clone();
            let samples = self.samples.clone();
            let mut abandon = self.abandon.clone();
            let timeout = self.request_timeout;
            self.runtime.spawn(async move {
                let exchange = send_one(&client, &endpoints[index], index, planned, timeout);
                let sample = tokio::select! {
                    sample = exchange => sample,
                    _ = abandon.wait_for(|&abandoned| abandoned) => return,
                };
                drop(slot);
                let _ = samples.send(sample);
            });
            paced.sent += 1;
            paced.sent_per_endpoint[index] += 1;
        }
        paced
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client(max_in_flight: usize, request_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(request_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_in_flight)
        .build(connector)
}

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    Response(u16),
    Transport(String),
    Timeout,
}

#[derive(Debug)]
struct Sample {
    endpoint: usize,
    outcome: Outcome,
    /// From the planned send time.
    corrected: Duration,
    /// From the actual send time.
    uncorrected: Duration,
    completed_at: Instant,
}

async fn send_one(
    client: &HttpClient,
    endpoint: &WeightedRequest,
    index: usize,
    planned: Instant,
    timeout: Duration,
) -> Sample {
    let sent_at = Instant::now();
    let exchange = async {
        let mut request = Request::builder()
            .method(endpoint.method.clone())
            .uri(endpoint.url.clone());
        for (name, value) in &endpoint.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(endpoint.body.clone().unwrap_or_default()))
            .map_err(|e| error_chain(&e))?;
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        // Read the whole body: the latency includes it, and the connection
        // goes back to the pool.
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?;
        Ok::<u16, String>(status)
    };
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Outcome::Response(status),
        Ok(Err(message)) => Outcome::Transport(message),
        Err(_) => Outcome::Timeout,
    };
    let completed_at = Instant::now();
    Sample {
        endpoint: index,
        outcome,
        corrected: completed_at.saturating_duration_since(planned),
        uncorrected: completed_at.saturating_duration_since(sent_at),
        completed_at,
    }
}

/// `a: b: c` from an error and its sources, on one line.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ").replace('\n', " ")
}

struct EndpointRecorder {
    method: String,
    url: String,
    weight: u32,
    sent: u64,
    completed: u64,
    ok: u64,
    status_errors: u64,
    transport_errors: u64,
    timeouts: u64,
    latency: Histogram<u64>,
    first_error: Option<String>,
}

struct Recorder {
    endpoints: Vec<EndpointRecorder>,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    status_counts: BTreeMap<u16, u64>,
    last_completion: Option<Instant>,
    /// Samples recorded (requests that ended, one way or another).
    received: u64,
    /// When the first request was planned (offsets of the series).
    start: Instant,
    series: series::SeriesRecorder,
    live: Option<LiveLatency>,
}

struct Finish {
    target_rps: u32,
    duration: Duration,
    window: Duration,
    elapsed: Duration,
    stopped_early: bool,
    max_in_flight: usize,
    planned: u64,
    sent: u64,
    unfinished: u64,
}

impl Recorder {
    fn new(scenario: &Scenario, start: Instant) -> Self {
        Recorder {
            endpoints: scenario
                .requests
                .iter()
                .map(|r| EndpointRecorder {
                    method: r.method.to_string(),
                    url: r.url.to_string(),
                    weight: r.weight,
                    sent: 0,
                    completed: 0,
                    ok: 0,
                    status_errors: 0,
                    transport_errors: 0,
                    timeouts: 0,
                    latency: latency_histogram(),
                    first_error: None,
                })
                .collect(),
            corrected: latency_histogram(),
            uncorrected: latency_histogram(),
            status_counts: BTreeMap::new(),
            last_completion: None,
            received: 0,
            start,
            series: series::SeriesRecorder::new(),
            live: None,
        }
    }

    fn record(&mut self, sample: Sample) {
        self.received += 1;
        let planned = sample.completed_at.checked_sub(sample.corrected).unwrap_or(self.start);
        let (latency, error) = match sample.outcome {
            Outcome::Response(status) => (Some(sample.corrected), !(200..400).contains(&status)),
            Outcome::Transport(_) | Outcome::Timeout => (None, true),
        };
        self.series.record(planned.saturating_duration_since(self.start), latency, error);
        if let Some(live) = &self.live
            && let Ok(mut v) = live.lock()
            && v.len() < LIVE_CAPACITY
        {
            v.push((planned.saturating_duration_since(self.start).as_secs_f64(), latency.map(|l| l.as_secs_f64() * 1e3)));
        }
        let ep = &mut self.endpoints[sample.endpoint];
        self.last_completion = Some(
            self.last_completion
                .map_or(sample.completed_at, |t| t.max(sample.completed_at)),
        );
        match sample.outcome {
            Outcome::Response(status) => {
                ep.completed += 1;
                if (200..400).contains(&status) {
                    ep.ok += 1;
                } else {
                    ep.status_errors += 1;
                }
                *self.status_counts.entry(status).or_default() += 1;
                record_latency(&mut ep.latency, sample.corrected);
                record_latency(&mut self.corrected, sample.corrected);
                record_latency(&mut self.uncorrected, sample.uncorrected);
            }
            Outcome::Transport(message) => {
                ep.transport_errors += 1;
                ep.first_error.get_or_insert(message);
            }
            Outcome::Timeout => {
                ep.transport_errors += 1;
                ep.timeouts += 1;
                ep.first_error
                    .get_or_insert_with(|| "timed out waiting for the response".to_string());
            }
        }
    }

    fn finish(self, f: Finish) -> LoadResult {
        let sum =
            |field: fn(&EndpointRecorder) -> u64| self.endpoints.iter().map(field).sum::<u64>();
        let completed = sum(|e| e.completed);
        let elapsed_s = f.elapsed.as_secs_f64();
        LoadResult {
            target_rps: f.target_rps,
            duration_s: f.duration.as_secs_f64(),
            window_s: f.window.as_secs_f64(),
            elapsed_s,
            stopped_early: f.stopped_early,
            max_in_flight: f.max_in_flight,
            planned: f.planned,
            sent: f.sent,
            unsent: f.planned.saturating_sub(f.sent),
            completed,
            ok: sum(|e| e.ok),
            status_errors: sum(|e| e.status_errors),
            transport_errors: sum(|e| e.transport_errors),
            timeouts: sum(|e| e.timeouts),
            unfinished: f.unfinished,
            achieved_rps: if elapsed_s > 0.0 {
                completed as f64 / elapsed_s
            } else {
                0.0
            },
            latency: latency_summary(&self.corrected),
            uncorrected_latency: latency_summary(&self.uncorrected),
            status_counts: self.status_counts,
            per_endpoint: self
                .endpoints
                .into_iter()
                .map(|e| EndpointStats {
                    latency: latency_summary(&e.latency),
                    method: e.method,
                    url: e.url,
                    weight: e.weight,
                    sent: e.sent,
                    completed: e.completed,
                    ok: e.ok,
                    status_errors: e.status_errors,
                    transport_errors: e.transport_errors,
                    timeouts: e.timeouts,
                    first_error: e.first_error,
                })
                .collect(),
            series: self.series.finish(),
        }
    }
}

#[cfg(test)]
mod tests;
