//! HTTP handlers, their response types, and the helpers they call.
//!
//! Five defects are planted here, each in its own function:
//! `load_report_template` (blocking `std::fs` on a tokio worker),
//! `compute_affinity_score` (CPU-heavy work inline on a worker),
//! `cache_rendered_profile` (a cache that only grows) and `build_feed_items`
//! (needless clones); `/stats` calls the std-Mutex defect in `stats.rs`.
//! `feed_fast` and `report_fast` do the same work as `feed` and `report`
//! the right way, so the profiler can be checked for false positives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::db::{self, Post, User};
use crate::stats::{self, LatencySummary};

/// Posts per feed page unless `?limit=` says otherwise.
const DEFAULT_FEED_LIMIT: i64 = 30;
const MAX_FEED_LIMIT: i64 = 100;
/// Size of the report template: it embeds a web font as a data URI, as
/// report templates that must render offline often do.
const REPORT_TEMPLATE_FONT_BYTES: usize = 512 * 1024;
/// Rounds of `compute_affinity_score`: ~2-3 ms of CPU per call.
const SCORE_ROUNDS: u64 = 200_000;

/// A handler error, answered with a status and a one-line body.
pub enum AppError {
    NotFound,
    BadRequest(&'static str),
    Internal(String),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(format!("io: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
            Self::Internal(why) => {
                eprintln!("demo-service: request failed: {why}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
            }
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

pub async fn health() -> &'static str {
    "ok\n"
}

// ---------------------------------------------------------------- feed

#[derive(Deserialize)]
pub struct FeedParams {
    limit: Option<i64>,
}

impl FeedParams {
    fn limit(&self) -> i64 {
        self.limit
            .unwrap_or(DEFAULT_FEED_LIMIT)
            .clamp(1, MAX_FEED_LIMIT)
    }
}

/// One feed entry, owned (built by `build_feed_items`).
#[derive(Serialize)]
pub struct FeedItem {
    post_id: i64,
    title: String,
    body: String,
    author_id: i64,
    author_name: String,
    author_country: String,
}

/// The same entry, borrowed from the query results (built by `feed_fast`).
#[derive(Serialize)]
pub struct FeedItemView<'a> {
    post_id: i64,
    title: &'a str,
    body: &'a str,
    author_id: i64,
    author_name: &'a str,
    author_country: &'a str,
}

/// `GET /feed`: the newest posts with their authors. Triggers the N+1
/// (`db::fetch_authors_one_by_one`) and needless-allocation
/// (`build_feed_items`) defects.
pub async fn feed(
    State(state): State<AppState>,
    Query(params): Query<FeedParams>,
) -> AppResult<Json<Vec<FeedItem>>> {
    let posts = db::latest_posts(&state.pool, params.limit()).await?;
    let authors = db::fetch_authors_one_by_one(&state.pool, &posts).await?;
    Ok(Json(build_feed_items(&posts, &authors)))
}

/// PLANTED DEFECT (needless allocation): for every post, rebuilds an
/// author lookup map by cloning every author (O(posts x authors) String
/// clones), then clones every field of the post and its author into the
/// response, although the caller drops `posts` and `authors` right after.
/// ~3 000 allocations per 30-post page on the request path. Fix: build the
/// map once, of references, and serialize borrowed fields (as `feed_fast`
/// does), or take the rows by value and move their fields.
fn build_feed_items(posts: &[Post], authors: &[User]) -> Vec<FeedItem> {
    let mut items = Vec::new();
    for post in posts {
        let authors_by_id: HashMap<i64, User> = authors.iter().map(|a| (a.id, a.clone())).collect();
        let Some(author) = authors_by_id.get(&post.author_id).cloned() else {
            continue;
        };
        items.push(FeedItem {
            post_id: post.id,
            title: post.title.clone(),
            body: post.body.clone(),
            author_id: author.id,
            author_name: author.name.clone(),
            author_country: author.country.clone(),
        });
    }
    items
}

/// `GET /feed/fast`: the same feed, done right. One batched query for all
/// authors, one lookup map of references, and a response that borrows from
/// the rows instead of copying them.
pub async fn feed_fast(
    State(state): State<AppState>,
    Query(params): Query<FeedParams>,
) -> AppResult<Response> {
    let posts = db::latest_posts(&state.pool, params.limit()).await?;
    let mut author_ids: Vec<i64> = posts.iter().map(|p| p.author_id).collect();
    author_ids.sort_unstable();
    author_ids.dedup();
    let authors = db::fetch_authors(&state.pool, &author_ids).await?;

    let authors_by_id: HashMap<i64, &User> = authors.iter().map(|a| (a.id, a)).collect();
    let items: Vec<FeedItemView<'_>> = posts
        .iter()
        .filter_map(|post| {
            let author = authors_by_id.get(&post.author_id)?;
            Some(FeedItemView {
                post_id: post.id,
                title: &post.title,
                body: &post.body,
                author_id: author.id,
                author_name: &author.name,
                author_country: &author.country,
            })
        })
        .collect();
    Ok(Json(items).into_response())
}

// ---------------------------------------------------------------- users

#[derive(Deserialize)]
pub struct SearchParams {
    country: String,
}

/// `GET /users/search?country=DE`: the 20 newest users of a country.
/// Triggers the unindexed-filter defect (`db::search_users_by_country`).
pub async fn search_users(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> AppResult<Json<Vec<User>>> {
    if params.country.is_empty() {
        return Err(AppError::BadRequest("country must not be empty"));
    }
    Ok(Json(
        db::search_users_by_country(&state.pool, &params.country).await?,
    ))
}

#[derive(Deserialize)]
pub struct NewUser {
    name: String,
    email: String,
    country: String,
}

#[derive(Serialize)]
pub struct Created {
    id: i64,
}

/// `POST /users` with `{"name", "email", "country"}`: signs a user up. Every
/// insert maintains the unused index (`db::create_last_login_index`).
pub async fn create_user(
    State(state): State<AppState>,
    Json(user): Json<NewUser>,
) -> AppResult<(StatusCode, Json<Created>)> {
    if user.name.is_empty() || user.email.is_empty() || user.country.is_empty() {
        return Err(AppError::BadRequest(
            "name, email and country must not be empty",
        ));
    }
    let id = db::create_user(&state.pool, &user.name, &user.email, &user.country).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

// ---------------------------------------------------------------- report

/// Where the report template lives: written at startup, read per request.
/// Per process, so several instances (or users) never share it.
fn report_template_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "demo-service-{}-report-template.html",
        std::process::id()
    ))
}

/// Writes the report template (at startup, before serving).
pub async fn write_report_template() -> std::io::Result<()> {
    // A deterministic stand-in for a base64 web font.
    const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let font: String = (0..REPORT_TEMPLATE_FONT_BYTES)
        .map(|i| char::from(BASE64[(i * 7 + i / 64) % BASE64.len()]))
        .collect();
    let template = format!(
        "<!doctype html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>Daily report</title>\n\
         <style>\n@font-face {{ font-family: \"Report Sans\"; src: url(data:font/woff2;base64,{font}) format(\"woff2\"); }}\n\
         body {{ font-family: \"Report Sans\", sans-serif; }}\n</style>\n</head>\n<body>\n\
         <h1>Daily report</h1>\n<p>Newest posts ({{{{count}}}}):</p>\n<ul>\n{{{{rows}}}}</ul>\n</body>\n</html>\n"
    );
    tokio::fs::write(report_template_path(), template).await
}

/// Removes the report template (at shutdown).
pub async fn remove_report_template() {
    let _ = tokio::fs::remove_file(report_template_path()).await;
    let _ = tokio::fs::remove_file(report_marker_path()).await;
}

/// Fills the template with the newest posts' titles.
fn render_report(template: &str, posts: &[Post]) -> String {
    let rows: String = posts
        .iter()
        .map(|p| format!("<li>#{} {}</li>\n", p.id, html_escape(&p.title)))
        .collect();
    template
        .replace("{{count}}", &posts.len().to_string())
        .replace("{{rows}}", &rows)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// PLANTED DEFECT (blocking `std::fs` in async code): reads the 512 KiB
/// template with `std::fs::read_to_string` on every request, and durably
/// records that the report was rendered (`std::fs::write` + `sync_data`, a
/// disk wait of milliseconds), on the tokio worker thread that runs the
/// `/report` handler. While it runs the worker polls no other task. Fix:
/// `tokio::fs` (as `report_fast` does), or better, load the template once
/// at startup and batch the access records.
fn load_report_template() -> std::io::Result<String> {
    let template = std::fs::read_to_string(report_template_path())?;
    let marker = std::fs::File::create(report_marker_path())?;
    std::io::Write::write_all(&mut &marker, b"rendered\n")?;
    marker.sync_data()?;
    Ok(template)
}

/// Where the "last rendered" record of the report goes.
fn report_marker_path() -> std::path::PathBuf {
    report_template_path().with_extension("rendered")
}

/// `GET /report`: an HTML report of the newest posts. Triggers the blocking
/// `std::fs` defect (`load_report_template`).
pub async fn report(State(state): State<AppState>) -> AppResult<Html<String>> {
    let template = load_report_template()?;
    let posts = db::latest_posts(&state.pool, 10).await?;
    Ok(Html(render_report(&template, &posts)))
}

/// `GET /report/fast`: the same report, reading the template with
/// `tokio::fs` (on tokio's blocking pool, not on a worker).
pub async fn report_fast(State(state): State<AppState>) -> AppResult<Html<String>> {
    let template = tokio::fs::read_to_string(report_template_path()).await?;
    let marker = tokio::fs::File::create(report_marker_path()).await?;
    let mut writer = marker;
    tokio::io::AsyncWriteExt::write_all(&mut writer, b"rendered\n").await?;
    writer.sync_data().await?;
    let posts = db::latest_posts(&state.pool, 10).await?;
    Ok(Html(render_report(&template, &posts)))
}

// ---------------------------------------------------------------- stats

/// `GET /stats`: latency percentiles of recent requests. Triggers the
/// std-Mutex defect (`stats::summarize_latency_stats`).
pub async fn stats(State(state): State<AppState>) -> Json<LatencySummary> {
    Json(stats::summarize_latency_stats(&state.latencies))
}

// ---------------------------------------------------------------- score

#[derive(Serialize)]
pub struct Score {
    user_id: i64,
    score: u64,
}

/// PLANTED DEFECT (CPU-heavy work on the async runtime): ~2-3 ms of pure
/// computation (200 000 rounds of an FNV-style hash over the user's name)
/// run inline by the `/score/{id}` handler, on the tokio worker thread. The
/// worker polls no other task meanwhile; with 2 workers, a few concurrent
/// score requests stall the whole service. Fix:
/// `tokio::task::spawn_blocking(move || compute_affinity_score(&user))` (or
/// rayon for parallel work), or cache the score.
fn compute_affinity_score(user: &User) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ user.id.unsigned_abs();
    for round in 0..SCORE_ROUNDS {
        for &byte in user.name.as_bytes().iter().chain(user.country.as_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash = (hash ^ round).rotate_left(29);
    }
    hash % 1000
}

/// `GET /score/{id}`: a user's affinity score. Triggers the CPU-heavy
/// defect (`compute_affinity_score`).
pub async fn score(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Json<Score>> {
    let user = db::user_by_id(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let score = compute_affinity_score(&user);
    Ok(Json(Score {
        user_id: user.id,
        score,
    }))
}

// ---------------------------------------------------------------- profile

/// Rendered `/profile` bodies, keyed by `user id:request id`.
static PROFILE_CACHE: LazyLock<Mutex<HashMap<String, Vec<u8>>>> = LazyLock::new(Mutex::default);
/// Request ids for requests that come without an `x-request-id` header.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Serialize)]
struct Profile {
    user: User,
    recent_posts: Vec<Post>,
}

/// PLANTED DEFECT (unbounded cache): the cache key includes the request id,
/// so no lookup ever hits and every `/profile/{id}` request inserts a new
/// ~2.5 KB entry; nothing ever evicts. The process grows by
/// (requests/s x 2.5 KB) per second until it is OOM-killed. Fix: key by the
/// user id only and bound the cache (an LRU or TTL cache such as `moka`).
fn cache_rendered_profile(key: String, body: Vec<u8>) {
    PROFILE_CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, body);
}

fn cached_profile(key: &str) -> Option<Vec<u8>> {
    PROFILE_CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .cloned()
}

/// `GET /profile/{id}`: a user and their newest posts, "cached". Triggers
/// the unbounded-cache defect (`cache_rendered_profile`).
pub async fn profile(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed).to_string(),
            str::to_owned,
        );
    let key = format!("{id}:{request_id}");

    let body = match cached_profile(&key) {
        Some(body) => body,
        None => {
            let user = db::user_by_id(&state.pool, id)
                .await?
                .ok_or(AppError::NotFound)?;
            let recent_posts = db::recent_posts_by_author(&state.pool, id, 5).await?;
            let body = serde_json::to_vec(&Profile { user, recent_posts })
                .map_err(|e| AppError::Internal(format!("json: {e}")))?;
            cache_rendered_profile(key, body.clone());
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
