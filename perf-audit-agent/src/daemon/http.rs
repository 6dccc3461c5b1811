//! The daemon's HTTP surface (hyper, HTTP/1.1): `GET /metrics` and
//! `GET /debug/pprof/profile?pid=PID&seconds=N`. Handlers never touch the
//! kernel or the symbolizer: metrics come from the snapshot the collector
//! publishes, and a profile request is a message to the collector, which
//! answers when the N seconds are over. Connections are capped.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};

use super::metrics::{MetricsSnapshot, render, self_usage};

pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_PROFILE_SECONDS: u64 = 300;
pub const DEFAULT_PROFILE_SECONDS: u64 = 30;

/// A `/debug/pprof/profile` request, answered by the collector with the
/// gzip pprof bytes or a status and a one-line message.
pub struct CaptureRequest {
    pub pid: u32,
    pub seconds: u64,
    pub reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>,
}

pub struct HttpState {
    pub metrics: Arc<Mutex<MetricsSnapshot>>,
    pub captures: mpsc::Sender<CaptureRequest>,
}

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<HttpState>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: refuse rather than queue
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Parses `pid=..&seconds=..`.
pub fn parse_profile_query(query: &str) -> Result<(u32, u64), String> {
    let mut pid = None;
    let mut seconds = DEFAULT_PROFILE_SECONDS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "pid" => pid = Some(v.parse::<u32>().map_err(|_| format!("pid `{v}` is not a process id"))?),
            "seconds" => {
                seconds = v.parse::<u64>().map_err(|_| format!("seconds `{v}` is not a whole number"))?;
                if !(1..=MAX_PROFILE_SECONDS).contains(&seconds) {
                    return Err(format!("seconds must be within 1..={MAX_PROFILE_SECONDS}"));
                }
            }
            _ => {}
        }
    }
    let pid = pid.ok_or("missing pid: GET /debug/pprof/profile?pid=PID&seconds=N")?;
    Ok((pid, seconds))
}

async fn handle(state: &HttpState, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut snapshot = state.metrics.lock().expect("metrics lock").clone();
            let (cpu, rss) = self_usage();
            snapshot.agent_cpu_seconds = cpu;
            snapshot.agent_rss_bytes = rss;
            let mut response = text(StatusCode::OK, render(&snapshot));
            response
                .headers_mut()
                .insert("content-type", "text/plain; version=0.0.4; charset=utf-8".parse().expect("header"));
            response
        }
        "/debug/pprof/profile" => {
            let (pid, seconds) = match parse_profile_query(req.uri().query().unwrap_or("")) {
                Ok(q) => q,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            let (reply, answer) = oneshot::channel();
            if state.captures.try_send(CaptureRequest { pid, seconds, reply }).is_err() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "too many profiles in progress; retry later\n".into());
            }
            match answer.await {
                Ok(Ok(bytes)) => Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/octet-stream")
                    .header("content-disposition", format!("attachment; filename=\"cpu-{pid}.pb.gz\""))
                    .body(Full::new(Bytes::from(bytes)))
                    .expect("valid response"),
                Ok(Err((status, message))) => text(status, format!("{message}\n")),
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down\n".into()),
            }
        }
        "/" => text(
            StatusCode::OK,
            "perf-audit daemon\n  GET /metrics\n  GET /debug/pprof/profile?pid=PID&seconds=N\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics or /debug/pprof/profile?pid=PID&seconds=N\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_query_needs_a_pid_and_bounds_seconds() {
        assert_eq!(parse_profile_query("pid=12&seconds=5"), Ok((12, 5)));
        assert_eq!(parse_profile_query("pid=12"), Ok((12, DEFAULT_PROFILE_SECONDS)));
        assert!(parse_profile_query("seconds=5").unwrap_err().contains("missing pid"));
        assert!(parse_profile_query("pid=x").is_err());
        assert!(parse_profile_query("pid=1&seconds=0").is_err());
        assert!(parse_profile_query("pid=1&seconds=100000").is_err());
    }
}
