//! Framework layers: when the owner's innermost frame only awaits a
//! framework future (a middleware's `next.run(req).await`, a handler
//! awaiting a tower/axum/hyper future), the time below it is the
//! framework's, not the owner's code. This names that code by layer
//! ("the tower-http trace layer", "tracing_subscriber's fmt writer") so a
//! finding can say where the time goes and give advice for that layer.
//! Pure name matching on demangled frames.

use super::{Frame, Origin};

/// The crate a demangled function belongs to: `tower_http` for
/// `<tower_http::trace::service::Trace<S> as tower_service::Service>::call`.
pub fn crate_of(function: &str) -> &str {
    let f = function.trim_start_matches('<').trim_start_matches('&').trim_start_matches("mut ").trim_start_matches("dyn ");
    f.split("::").next().unwrap_or(f)
}

/// Crates of std and of future adaptors that only forward a poll.
fn is_adaptor(krate: &str) -> bool {
    matches!(krate, "core" | "std" | "alloc" | "futures_util" | "futures_core" | "futures" | "pin_project_lite" | "pin_project")
}

/// Web framework crates whose futures a middleware or handler awaits.
/// Not `tracing`: an event the owner's code emits is the owner's call.
const FRAMEWORK: &[&str] = &[
    "axum", "axum_core", "tower", "tower_http", "tower_layer", "tower_service", "hyper", "hyper_util",
    "actix_web", "actix_http", "actix_service", "actix_server", "actix_utils", "tower_governor", "axum_extra",
];

/// Runtime crates: what they allocate below an owner frame (a task's cell,
/// a clone of the runtime's `Arc<Handle>`) is the runtime's own bookkeeping.
const RUNTIME: &[&str] = &["tokio", "tokio_util", "async_std", "mio"];

/// The first frame below the owner's frame that is not a std or future
/// adaptor, when it is framework code: the owner only passes through.
/// `below` starts right under the owner's frame.
pub fn passes_through<'a>(below: &[&'a Frame]) -> Option<&'a Frame> {
    let first = below.iter().find(|f| f.origin != Origin::Owner && !is_adaptor(crate_of(&f.function)))?;
    (first.origin == Origin::Dependency && FRAMEWORK.contains(&crate_of(&first.function))).then_some(*first)
}

/// Database drivers: what they allocate below an owner frame is rows
/// being encoded and decoded, judged by the database rules (rows per call,
/// queries per request), not by buffer advice.
pub const DRIVERS: &[&str] = &[
    "sqlx", "sqlx_core", "sqlx_postgres", "sqlx_mysql", "sqlx_sqlite", "tokio_postgres", "postgres", "postgres_protocol",
    "diesel", "diesel_async", "deadpool_postgres", "bb8_postgres", "sea_orm",
];

/// Whether a function belongs to a database driver.
pub fn is_driver(function: &str) -> bool {
    DRIVERS.contains(&crate_of(function))
}

/// As [`passes_through`], with the runtime's crates and database drivers
/// too (allocations): the first library frame below the owner's frame
/// when it is one of these.
pub fn framework_or_runtime<'a>(below: &[&'a Frame]) -> Option<&'a Frame> {
    let first = below.iter().find(|f| f.origin != Origin::Owner && !is_adaptor(crate_of(&f.function)))?;
    let krate = crate_of(&first.function);
    (first.origin == Origin::Dependency && (FRAMEWORK.contains(&krate) || RUNTIME.contains(&krate) || DRIVERS.contains(&krate))).then_some(*first)
}

/// Libraries whose allocations are their own decision whatever the caller
/// passes: instrumentation (spans and events, their subscriber's records)
/// and password hashing (its working memory is a parameter of the
/// algorithm, `m_cost`, not a buffer the caller could reuse).
const OWN_MEMORY: &[&str] = &[
    "tracing", "tracing_core", "tracing_subscriber", "tracing_appender", "tracing_log",
    "argon2", "bcrypt", "scrypt", "pbkdf2", "password_hash", "blowfish", "balloon_hash",
];

/// Collections the owner's code drives: their growth is the owner's
/// decision (std's `HashMap` is hashbrown's table).
fn is_collection(krate: &str) -> bool {
    matches!(krate, "hashbrown" | "smallvec" | "indexmap" | "arrayvec" | "bytes")
}

/// Whether a frame is a library future being polled (`<X as Future>::poll`,
/// an async body of a dependency): the owner's frame above it only awaits.
fn is_future(f: &Frame) -> bool {
    (f.function.contains(" as core::future::future::Future>::poll") || f.function.ends_with("{{closure}}")) && !is_adaptor(crate_of(&f.function))
}

/// Who decided the allocations below an owner's frame, when it is not the
/// owner's own code: the first library frame below it (std, future
/// adaptors and collections skipped) when it is framework, runtime,
/// driver, instrumentation or password-hashing code, or a library future
/// the owner only awaits. `None`: the owner's code made the allocating
/// call (a `String` it builds, a `Vec` it grows, `serde_json::to_string`
/// of its data). `below` starts right under the owner's frame.
pub fn allocated_by<'a>(below: &[&'a Frame]) -> Option<&'a Frame> {
    let first = below.iter().find(|f| f.origin != Origin::Owner && !is_adaptor(crate_of(&f.function)) && !is_collection(crate_of(&f.function)))?;
    if first.origin != Origin::Dependency {
        return None;
    }
    let krate = crate_of(&first.function);
    (FRAMEWORK.contains(&krate) || RUNTIME.contains(&krate) || DRIVERS.contains(&krate) || OWN_MEMORY.contains(&krate) || is_future(first)).then_some(*first)
}

/// Whether allocations made by `via` below the owner's frame are still the
/// owner's decision: a task spawned per call (`tokio::spawn`), not an await.
pub fn owner_decides(via: &str) -> bool {
    matches!(crate_of(via), "tokio" | "tokio_util" | "async_std") && via.contains("spawn") && !via.contains("Future>::poll")
}

/// A layer of framework code, named for a report, with advice for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub name: &'static str,
    pub advice: &'static str,
}

/// Known layers, most specific first: (crate or path prefix, layer).
const LAYERS: &[(&str, Layer)] = &[
    ("tower_http::trace", Layer { name: "the tower-http trace layer", advice: "the per-request trace layer makes spans and events for every request: raise its levels (`TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))` with `RUST_LOG=tower_http=info`) or sample requests" }),
    ("tower_http::compression", Layer { name: "the tower-http compression layer", advice: "response compression: lower the level (`CompressionLayer::new().quality(CompressionLevel::Fastest)`) and skip small or already-compressed bodies" }),
    ("tracing_subscriber::fmt", Layer { name: "tracing_subscriber's fmt writer", advice: "log formatting and writing run on the request path: filter events before they are formatted (`EnvFilter`, a higher level for per-request events), and write through `tracing_appender::non_blocking` so a worker never waits on stdout" }),
    ("tracing_subscriber", Layer { name: "the tracing subscriber", advice: "span and event bookkeeping per request: filter spans and events out early with `EnvFilter` (fewer per-request spans)" }),
    ("tracing_core", Layer { name: "the tracing subscriber", advice: "span and event bookkeeping per request: filter spans and events out early with `EnvFilter` (fewer per-request spans)" }),
    ("argon2", Layer { name: "argon2's working memory", advice: "password hashing allocates its working memory (`m_cost` KiB) per hash by design: keep the parameters; bound concurrent hashes with a `Semaphore` so the peak stays bounded" }),
    ("bcrypt", Layer { name: "bcrypt's working memory", advice: "password hashing allocates per hash by design: keep the parameters; bound concurrent hashes with a `Semaphore`" }),
    ("scrypt", Layer { name: "scrypt's working memory", advice: "password hashing allocates its working memory per hash by design: keep the parameters; bound concurrent hashes with a `Semaphore`" }),
    ("tracing", Layer { name: "tracing instrumentation", advice: "per-request spans and events: instrument fewer functions on the request path or raise their level" }),
    ("hyper", Layer { name: "hyper's HTTP/1 and HTTP/2 codec", advice: "HTTP parsing and encoding per request: keep connections alive, send smaller bodies; this cost is per request, not in your code" }),
    ("hyper_util", Layer { name: "hyper's HTTP/1 and HTTP/2 codec", advice: "HTTP parsing and encoding per request: keep connections alive, send smaller bodies; this cost is per request, not in your code" }),
    ("axum", Layer { name: "axum's router and extractors", advice: "routing and extraction per request: fewer nested routers and layers (`ServiceBuilder` to combine them), cheaper extractors" }),
    ("axum_core", Layer { name: "axum's router and extractors", advice: "routing and extraction per request: fewer nested routers and layers (`ServiceBuilder` to combine them), cheaper extractors" }),
    ("tower", Layer { name: "the tower middleware stack", advice: "per-request middleware boxing and polling: combine layers with `ServiceBuilder`, drop unused ones" }),
    ("actix_web", Layer { name: "actix-web's middleware and routing", advice: "per-request middleware and routing: combine middleware, drop unused ones (`Logger` formats a line per request)" }),
    ("actix_http", Layer { name: "actix-http's HTTP codec", advice: "HTTP parsing and encoding per request: keep connections alive, send smaller bodies" }),
];

/// Advice by layer name (names are what a hotspot keeps).
pub static LAYER_ADVICE: std::sync::LazyLock<Vec<(&'static str, &'static str)>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<(&'static str, &'static str)> = Vec::new();
    for (_, l) in LAYERS {
        if !v.iter().any(|(n, _)| *n == l.name) {
            v.push((l.name, l.advice));
        }
    }
    v
});

/// The layer a frame's code belongs to, if known.
pub fn layer_of(function: &str) -> Option<Layer> {
    let f = function.trim_start_matches('<');
    LAYERS
        .iter()
        .find(|(prefix, _)| f.starts_with(prefix) && f[prefix.len()..].starts_with("::"))
        .map(|(_, l)| *l)
}

/// The layers a sample's frames below a pass-through frame ran in, the
/// innermost first (the one whose code the sample was in): a sample in the
/// fmt writer under the trace layer counts for the fmt writer.
pub fn innermost_layer(below: &[&Frame]) -> Option<Layer> {
    below.iter().rev().find_map(|f| layer_of(&f.function))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::*;

    #[test]
    fn crates_and_layers_are_read_from_demangled_names() {
        assert_eq!(crate_of("<tower_http::trace::service::Trace<S> as tower_service::Service>::call"), "tower_http");
        assert_eq!(layer_of("<tower_http::trace::future::ResponseFuture<F> as core::future::future::Future>::poll").unwrap().name, "the tower-http trace layer");
        assert_eq!(layer_of("tracing_subscriber::fmt::format::Format::format_event").unwrap().name, "tracing_subscriber's fmt writer");
        assert!(layer_of("towerish::x").is_none());
    }

    #[test]
    fn awaiting_a_framework_future_passes_through_but_calling_serde_does_not() {
        let next = dep("axum::middleware::from_fn::Next::run::{{closure}}", false);
        let pin = dep("<core::pin::Pin<P> as core::future::future::Future>::poll", true);
        let serde = dep("serde_json::ser::to_string", false);
        assert!(passes_through(&[&pin, &next]).is_some());
        assert!(passes_through(&[&serde]).is_none());
        let spawn = dep("tokio::runtime::handle::Handle::spawn", false);
        assert!(passes_through(&[&spawn]).is_none());
        assert!(framework_or_runtime(&[&spawn]).is_some());
    }
}
