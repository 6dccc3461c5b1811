//! demo-service: a small user/feed service (axum + sqlx + PostgreSQL) that
//! perf-audit audits in its end-to-end demo.
//!
//! It is written like an ordinary service, with a handful of performance
//! defects planted on purpose, each in its own function marked
//! `/// PLANTED DEFECT (<kind>)`. README.md lists them with what the profiler
//! should report and the fix. Beside them, `/feed/fast`, `/report/fast` and
//! `/health` are well-behaved and must not be flagged.
//!
//! Usage: `DATABASE_URL=postgres://... demo-service [--listen ADDR]`. The
//! service creates and seeds its schema, then prints `listening on
//! http://ADDR` once it serves, so a script can wait for that line.

mod backoffice;
mod db;
mod handlers;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sqlx::PgPool;

use crate::stats::LatencyWindow;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const USAGE: &str = "usage: DATABASE_URL=postgres://USER@HOST:PORT/DB demo-service [--listen ADDR]";

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Latencies of recent requests, behind a `std::sync::Mutex` (see
    /// `stats::summarize_latency_stats`).
    pub latencies: Arc<std::sync::Mutex<LatencyWindow>>,
}

struct Config {
    database_url: String,
    listen: SocketAddr,
}

impl Config {
    /// Reads `DATABASE_URL` and `--listen ADDR`; errors are one line.
    fn from_env() -> Result<Self, String> {
        let mut listen = DEFAULT_LISTEN.to_owned();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--listen" => {
                    listen = args
                        .next()
                        .ok_or("--listen needs an address, e.g. --listen 127.0.0.1:8080")?;
                }
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unexpected argument `{other}`; {USAGE}")),
            }
        }
        let listen = listen.parse().map_err(|e| {
            format!("--listen {listen}: {e} (expected IP:PORT, e.g. 127.0.0.1:8080)")
        })?;
        let database_url = std::env::var("DATABASE_URL")
            .map_err(|_| format!("DATABASE_URL is not set; {USAGE}"))?;
        Ok(Self {
            database_url,
            listen,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("demo-service: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = Config::from_env()?;

    let pool = db::connect(&config.database_url)
        .await
        .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
    db::prepare(&pool)
        .await
        .map_err(|e| format!("cannot create or seed the schema: {e}"))?;
    backoffice::prepare(&pool)
        .await
        .map_err(|e| format!("cannot create or seed the back-office tables: {e}"))?;
    handlers::write_report_template()
        .await
        .map_err(|e| format!("cannot write the report template: {e}"))?;

    let state = AppState {
        pool,
        latencies: Arc::new(std::sync::Mutex::new(LatencyWindow::default())),
    };
    let app = router(state);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    handlers::remove_report_template().await;
    served.map_err(|e| format!("server error: {e}"))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/feed", get(handlers::feed))
        .route("/feed/fast", get(handlers::feed_fast))
        .route("/users", post(handlers::create_user))
        .route("/users/search", get(handlers::search_users))
        .route("/report", get(handlers::report))
        .route("/report/fast", get(handlers::report_fast))
        .route("/stats", get(handlers::stats))
        .route("/score/{id}", get(handlers::score))
        .route("/profile/{id}", get(handlers::profile))
        .route("/dashboard/{id}", get(backoffice::dashboard))
        .route("/dashboard/fast/{id}", get(backoffice::dashboard_fast))
        .route("/jobs/run", get(backoffice::run_jobs))
        .route("/events/export", get(backoffice::export_events))
        .route("/events/recent", get(backoffice::recent_events))
        .route("/tags/search", get(backoffice::search_tags))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            stats::record_latency,
        ))
        .with_state(state)
}

/// Resolves on Ctrl-C or SIGTERM, so whoever launched the service (a demo
/// script, the profiler) can stop it cleanly.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
