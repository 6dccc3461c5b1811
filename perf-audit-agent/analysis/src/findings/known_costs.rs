//! A catalogue of known costly calls: library functions whose cost is
//! known and whose fix is specific (password hashing is slow by design and
//! belongs off the runtime; a regex compiled per call is compiled once...).
//! A CPU hotspot whose samples ran mostly below one of these gets that
//! entry's advice instead of advice guessed from the leaf frame. Entries
//! match frame names of the functions that ran below the owner's frame.

use super::{CodeFix, Complexity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCost {
    /// Stable id, for tests and the evidence text.
    pub id: &'static str,
    /// What the call is, for a report ("Argon2 password hashing").
    pub what: &'static str,
    /// Frame name fragments that identify it (any one matches).
    needles: &'static [&'static str],
    /// The advice: specific to the call.
    pub advice: &'static str,
    pub before: &'static str,
    pub after: &'static str,
    pub complexity: Complexity,
    /// The advice when the samples already ran on the blocking pool
    /// (inside `spawn_blocking`); `None`: the advice above still applies.
    pub off_runtime_advice: Option<&'static str>,
}

/// Most specific first: a TLS handshake formats nothing, but log formatting
/// may sit above a write to stdout, which is the cost to fix.
pub const CATALOGUE: &[KnownCost] = &[
    KnownCost {
        id: "password-hashing",
        what: "password hashing",
        needles: &["argon2::", "bcrypt::", "scrypt::", "pbkdf2::", "password_hash::", "blowfish::"],
        advice: "password hashing is slow by design (its cost is what protects the passwords): keep the algorithm and its parameters, and move the call off the async runtime with `tokio::task::spawn_blocking` (bound concurrent hashes with a `Semaphore` so logins cannot starve the blocking pool)",
        before: "let hash = argon2.hash_password(password.as_bytes(), &salt)?;   // holds a Tokio worker for tens of ms",
        after: "let _permit = HASH_PERMITS.acquire().await?;                     // Semaphore: bound concurrent hashes\nlet hash = tokio::task::spawn_blocking(move || {\n    argon2.hash_password(password.as_bytes(), &salt).map(|h| h.to_string())\n}).await??;",
        complexity: Complexity::Easy,
        off_runtime_advice: Some("password hashing is slow by design (its cost is what protects the passwords) and already runs on the blocking pool, off the async workers: keep the algorithm and its parameters; what remains is capacity: bound concurrent hashes with a `Semaphore` sized to the cores you give it, rate-limit login attempts per account and IP, and size `max_blocking_threads` so hashing cannot crowd out other blocking work"),
    },
    KnownCost {
        id: "tls-handshake",
        what: "TLS handshakes",
        needles: &["rustls::client::hs", "rustls::server::hs", "rustls::conn::", "ssl_do_handshake", "SSL_do_handshake", "tls_process_", "openssl::ssl::SslStream", "native_tls::"],
        advice: "TLS handshakes (key exchange and certificate checks) per connection: reuse connections (one shared `reqwest::Client` / connection pool, HTTP keep-alive) and enable session resumption instead of connecting per request",
        before: "let client = reqwest::Client::new();        // new pool, new TLS handshake per request\nclient.get(url).send().await?",
        after: "static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(reqwest::Client::new); // pooled, resumed sessions\nCLIENT.get(url).send().await?",
        complexity: Complexity::Easy,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "dns-resolution",
        what: "DNS resolution",
        needles: &["getaddrinfo", "ToSocketAddrs", "gaih_inet", "trust_dns_resolver::", "hickory_resolver::"],
        advice: "DNS resolution per request: resolve once and reuse pooled connections (a shared HTTP client or database pool), or cache lookups; never resolve with the blocking `ToSocketAddrs` on a worker (`tokio::net::lookup_host`)",
        before: "let addr = (host, port).to_socket_addrs()?.next();   // getaddrinfo per call",
        after: "let addr = tokio::net::lookup_host((host, port)).await?.next();   // once, then reuse the connection",
        complexity: Complexity::Medium,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "compression",
        what: "compression",
        needles: &["flate2::", "miniz_oxide::", "zstd::", "zstd_sys::", "ZSTD_", "brotli::", "brotli_decompressor::", "libz_sys::", "deflate"],
        advice: "compression is CPU-bound per byte: use a faster level (`Compression::fast()`, zstd level 1-3, brotli quality 4-5), skip bodies that are small or already compressed, and compress large payloads in `spawn_blocking` (or cache the compressed bytes)",
        before: "let mut enc = GzEncoder::new(Vec::new(), Compression::best());",
        after: "let mut enc = GzEncoder::new(Vec::new(), Compression::fast());   // most of the ratio at a fraction of the CPU",
        complexity: Complexity::Easy,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "regex-compilation",
        what: "regex compilation",
        needles: &["regex::regex::string::Regex::new", "regex::Regex::new", "regex::builders::", "regex_automata::meta::regex::Builder::build", "regex_syntax::", "regex_automata::nfa::thompson::compiler"],
        advice: "a regex is compiled on every call: compile it once (`static RE: LazyLock<Regex>`) and reuse it; compiling costs far more than matching",
        before: "let re = Regex::new(r\"^[a-z0-9_]+$\")?;   // compiled per call\nre.is_match(name)",
        after: "static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r\"^[a-z0-9_]+$\").unwrap());\nRE.is_match(name)",
        complexity: Complexity::Easy,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "blocking-stdout-writer",
        what: "blocking writes to stdout/stderr",
        needles: &["std::io::stdio::", "<std::io::stdio::", "std::io::Stdout", "std::io::Stderr"],
        advice: "log lines are written to stdout/stderr synchronously on the request path (the global stdout lock and a write(2) per line): write through a non-blocking writer (`tracing_appender::non_blocking(std::io::stdout())`) so a background thread does the writes; `tokio::fs` does not apply to stdout",
        before: "tracing_subscriber::fmt().with_writer(std::io::stdout).init();   // write(2) on the worker",
        after: "let (writer, _guard) = tracing_appender::non_blocking(std::io::stdout()); // keep _guard alive in main\ntracing_subscriber::fmt().with_writer(writer).init();",
        complexity: Complexity::Easy,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "log-formatting",
        what: "log formatting",
        needles: &["tracing_subscriber::fmt::", "env_logger::", "log4rs::", "slog_term::", "actix_web::middleware::logger"],
        advice: "log events are formatted on the request path: filter them before formatting (`EnvFilter`, a higher level for per-request events), drop ANSI colours and span fields you do not read, and write through `tracing_appender::non_blocking`",
        before: "tracing::info!(?request, \"handled\");       // formats the whole request per call",
        after: "tracing::debug!(path = %request.uri().path(), \"handled\");   // filtered out at info, few fields",
        complexity: Complexity::Easy,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "json-serialization",
        what: "JSON (de)serialization",
        needles: &["serde_json::ser::", "serde_json::de::", "serde_json::to_", "serde_json::from_", "serde_json::value::"],
        advice: "JSON encoding/decoding of large values dominates: return less (paginate, select only the fields sent), serialize once and cache the bytes for data that rarely changes, avoid `serde_json::Value` round trips (derive typed structs, borrow `&str` fields)",
        before: "let body = serde_json::to_string(&all_rows)?;       // every row, every request",
        after: "let page: Vec<_> = rows.iter().take(limit).collect();\nlet body = serde_json::to_vec(&page)?;              // a page, into bytes",
        complexity: Complexity::Medium,
        off_runtime_advice: None,
    },
    KnownCost {
        id: "database-driver",
        what: "database driver work",
        needles: &["sqlx_core::", "sqlx_postgres::", "sqlx::", "tokio_postgres::", "postgres_protocol::", "diesel::", "diesel_async::"],
        advice: "the time is the database driver encoding queries and decoding rows: issue fewer queries (batch per-item queries, see the database findings) and fetch fewer rows and columns per query",
        before: "for id in ids {\n    let row = sqlx::query_as(\"SELECT * FROM users WHERE id = $1\").bind(id).fetch_one(pool).await?;\n}",
        after: "let rows = sqlx::query_as(\"SELECT id, name FROM users WHERE id = ANY($1)\").bind(&ids).fetch_all(pool).await?;",
        complexity: Complexity::Medium,
        off_runtime_advice: None,
    },
];

/// Share of a hotspot's self samples that must run below a known call for
/// the call to explain it.
pub const MIN_SHARE_PCT: f64 = 30.0;

/// The catalogue entry explaining most of `self_samples`, from the
/// functions seen below the owner's frame (`below`: name, samples).
pub fn lookup(below: &[(String, u64)], self_samples: u64) -> Option<(&'static KnownCost, u64)> {
    CATALOGUE.iter().find_map(|k| {
        let n = below
            .iter()
            .filter(|(f, _)| k.needles.iter().any(|needle| f.contains(needle)))
            .map(|(_, n)| *n)
            .max()?;
        (n as f64 * 100.0 >= MIN_SHARE_PCT * self_samples.max(1) as f64).then_some((k, n))
    })
}

impl KnownCost {
    /// The advice for a hotspot that ran `on_blocking_pool_pct` percent on
    /// the blocking pool.
    pub fn advice_for(&self, on_blocking_pool_pct: f64) -> &'static str {
        match self.off_runtime_advice {
            Some(off) if on_blocking_pool_pct >= 50.0 => off,
            _ => self.advice,
        }
    }

    /// The sketch, unless the call already runs off the runtime (then the
    /// spawn_blocking sketch would describe what the code already does).
    pub fn code_fix_for(&self, on_blocking_pool_pct: f64) -> Option<CodeFix> {
        match self.off_runtime_advice {
            Some(_) if on_blocking_pool_pct >= 50.0 => None,
            _ => Some(self.code_fix()),
        }
    }

    pub fn code_fix(&self) -> CodeFix {
        CodeFix { before: self.before.to_string(), after: self.after.to_string() }
    }
}
