//! `--push URL`: every window of every process goes to a Pyroscope-compatible
//! ingest endpoint (`POST /ingest?name=APP{labels}&from=&until=&format=folded`,
//! body = collapsed stacks). With `--off-cpu` a window also pushes its time
//! blocked as `NAME.off_cpu{labels}`: Pyroscope's ingest accepts only its
//! fixed units (samples, objects, bytes, goroutines, lock_*), and shows
//! samples as time = value / sampleRate, so the blocked time is sent in
//! microseconds with `sampleRate=1000000`: it reads as seconds blocked.
//! Pushes run in the background with at most
//! [`MAX_IN_FLIGHT`] at a time and a timeout each; a window that finds no
//! slot is dropped and counted, so a slow server never grows our memory.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::model::ProcessWindow;

pub const MAX_IN_FLIGHT: usize = 8;
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct PushStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Pusher {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: hyper::Uri,
    slots: Arc<tokio::sync::Semaphore>,
    pub stats: Arc<PushStats>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which of a window's values a push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Cpu,
    OffCpu,
}

/// `sampleRate` of the off-CPU push: its values are microseconds.
pub const OFF_CPU_RATE: u64 = 1_000_000;

/// Pyroscope application name: `NAME.cpu{pid=..,container_id=..,pod_uid=..}`
/// (`NAME.off_cpu{..}` for the time blocked).
pub fn application_name(window: &ProcessWindow, series: Series) -> String {
    let p = &window.process;
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect::<String>();
    let mut labels = vec![format!("pid={}", p.pid)];
    if let Some(c) = &p.container_id {
        labels.push(format!("container_id={}", clean(c)));
    }
    if let Some(u) = &p.pod_uid {
        labels.push(format!("pod_uid={}", clean(u)));
    }
    let kind = match series {
        Series::Cpu => "cpu",
        Series::OffCpu => "off_cpu",
    };
    format!("{}.{kind}{{{}}}", clean(&p.name), labels.join(","))
}

/// The ingest URL of one window's series.
pub fn ingest_uri(base: &hyper::Uri, window: &ProcessWindow, series: Series) -> String {
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = base.to_string();
    format!(
        "{}/ingest?name={}&from={}&until={}&format=folded&sampleRate={}&spyName=perf-audit&units=samples&aggregationType=sum",
        base.trim_end_matches('/'),
        encode(&application_name(window, series)),
        secs(window.start),
        secs(window.end).max(secs(window.start) + 1),
        match series {
            Series::Cpu => window.frequency_hz,
            Series::OffCpu => OFF_CPU_RATE,
        }
    )
}

impl Pusher {
    pub fn new(base: hyper::Uri) -> Pusher {
        Pusher {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            stats: Arc::default(),
        }
    }

    /// Starts sending one window (its CPU samples, and its time blocked
    /// when it has any); returns at once.
    pub fn push(&self, window: &ProcessWindow) {
        if window.total_samples() > 0 || !window.has_off_cpu() {
            self.push_series(window, Series::Cpu);
        }
        if window.total_off_cpu_ns() >= 1_000 {
            self.push_series(window, Series::OffCpu);
        }
    }

    fn push_series(&self, window: &ProcessWindow, series: Series) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let uri = ingest_uri(&self.base, window, series);
        let body = match series {
            Series::Cpu => window.folded_text(),
            Series::OffCpu => window.folded_off_cpu_text(),
        };
        let client = self.client.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let request = hyper::Request::post(uri)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(body)))
                .expect("a valid request");
            let ok = matches!(
                tokio::time::timeout(PUSH_TIMEOUT, client.request(request)).await,
                Ok(Ok(response)) if response.status().is_success()
            );
            let counter = if ok { &stats.ok } else { &stats.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }

    /// Waits (up to `timeout`) for the pushes in flight: used at shutdown.
    pub async fn flush(&self, timeout: Duration) {
        let all = self.slots.acquire_many(MAX_IN_FLIGHT as u32);
        let _ = tokio::time::timeout(timeout, all).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{super::model::test_support::{window, window_with_off_cpu}, *};

    #[test]
    fn off_cpu_goes_to_its_own_application_in_microseconds() {
        let uri = ingest_uri(&"http://pyro:4040".parse().unwrap(), &window_with_off_cpu(), Series::OffCpu);
        assert!(uri.starts_with("http://pyro:4040/ingest?name=svc.off_cpu%7Bpid%3D42%2C"), "{uri}");
        assert!(uri.contains("&sampleRate=1000000&") && uri.contains("&units=samples&"), "{uri}");
    }

    #[test]
    fn ingest_url_carries_name_labels_and_window() {
        let uri = ingest_uri(&"http://pyro:4040/".parse().unwrap(), &window(), Series::Cpu);
        assert!(uri.starts_with("http://pyro:4040/ingest?name=svc.cpu%7Bpid%3D42%2Ccontainer_id%3Dabab"), "{uri}");
        assert!(uri.contains("pod_uid%3D9d4e2c1b-7a6f-4e3d-8c2b-1a0f9e8d7c6b%7D"), "{uri}");
        assert!(uri.contains("&from=1700000000&until=1700000060&format=folded&sampleRate=19"), "{uri}");
    }
}
