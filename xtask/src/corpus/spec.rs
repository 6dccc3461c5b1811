//! The corpus files of one service (`tests/corpus/<service>/`), parsed and
//! validated: `service.toml` (where it comes from, how it builds and runs),
//! `scenario.toml` (setup steps, warm-up, weighted requests) and
//! `labels.toml` (expected and must-not findings). Pure: text in, values out.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `service.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Upstream repository URL (where to fetch the checkout from).
    pub upstream: String,
    /// The commit the labels were written against.
    pub commit: String,
    /// Directory name under `--checkouts`.
    pub checkout: String,
    /// Where `cargo build` runs, relative to the checkout.
    #[serde(default = "dot")]
    pub workdir: String,
    /// `-p` of the build, when the workdir is a workspace.
    #[serde(default)]
    pub package: Option<String>,
    /// The binary to build and run.
    pub bin: String,
    /// Extra environment of the build (e.g. SQLX_OFFLINE, RUSTFLAGS).
    #[serde(default)]
    pub build_env: BTreeMap<String, String>,
    /// The build checks queries against a live database (sqlx macros without
    /// offline data): the private PostgreSQL is started and migrated first,
    /// its URL is the build's DATABASE_URL.
    #[serde(default)]
    pub build_needs_database: bool,
    /// Free text: what was needed to build it here.
    #[serde(default)]
    pub build_notes: String,
    /// The service's own SQL migration files, globs relative to the checkout
    /// (`*` within one path component), applied in path order per glob.
    #[serde(default)]
    pub migrations: Vec<String>,
    /// The service applies its own migrations when it starts (and fails
    /// on tables it did not create): the runner applies the files only for
    /// a build that needs the database, empties the schema before starting
    /// the service, and seeds once it answers.
    #[serde(default)]
    pub migrations_at_startup: bool,
    pub run: Run,
    /// Processes the service needs beside PostgreSQL (e.g. redis).
    #[serde(default)]
    pub sidecar: Vec<Sidecar>,
}

/// How the service is started.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Run {
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory relative to the checkout (config files are read from it).
    #[serde(default = "dot")]
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The port the service always listens on, when it cannot be told one
    /// (else a free port is chosen and given as `{port}`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Answers any HTTP response when the service is up.
    #[serde(default = "slash")]
    pub ready_path: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    pub command: Vec<String>,
}

fn dot() -> String {
    ".".into()
}
fn slash() -> String {
    "/".into()
}

/// `scenario.toml`: the corpus form (setup steps, rate, warm-up) around the
/// agent's own `[[request]]` tables, which are written out for `--scenario`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_rps")]
    pub rps: u32,
    #[serde(default = "default_warmup")]
    pub warmup_seconds: u64,
    /// Run once, in order, before the warm-up (sign up, log in...).
    #[serde(default)]
    pub setup: Vec<Step>,
    pub request: Vec<Request>,
}

fn default_rps() -> u32 {
    50
}
fn default_warmup() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// name -> where: `json:a.b.c` (a field of the JSON answer) or
    /// `cookie:NAME` (the `NAME=value` pair of a Set-Cookie header).
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Expected status class: the step fails unless the answer's status
    /// is below 400 (or equal to this, when given).
    #[serde(default)]
    pub expect_status: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn get() -> String {
    "GET".into()
}
fn one() -> u32 {
    1
}

/// `labels.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    #[serde(default)]
    pub expected: Vec<Expected>,
    #[serde(default)]
    pub must_not: Vec<MustNot>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// This project's rule id (`Finding::rule`).
    pub rule: String,
    /// Path suffix of the function the finding must name.
    pub function: String,
    /// Other functions that are the same place (the caller that a build
    /// without debug info names for an inlined callee, or the loop around
    /// the query's own function).
    #[serde(default)]
    pub also: Vec<String>,
    pub why: String,
    /// Whether a 30 s audit under the scenario can see it.
    pub observable: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MustNot {
    pub rule: String,
    pub function: String,
    #[serde(default)]
    pub also: Vec<String>,
    pub why: String,
}

/// The rule ids of this project (analysis/src/findings/*.rs).
pub const RULES: &[&str] = &[
    "allocation-churn",
    "allocation-hot-path",
    "blocking-in-async",
    "chatty-requests",
    "cpu-heavy-in-async",
    "cpu-hotspot",
    "memory-leak",
    "missing-index",
    "n-plus-one-query",
    "per-item-transaction",
    "slow-query",
    "sync-lock-contention",
    "unbounded-growth",
    "unbounded-result-set",
    "unused-index",
];

fn parse<T: for<'de> Deserialize<'de>>(text: &str, origin: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| format!(", line {}", text[..s.start.min(text.len())].matches('\n').count() + 1)).unwrap_or_default();
        format!("{origin}{line}: {}", e.message().trim())
    })
}

impl Service {
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let s: Service = parse(text, origin)?;
        if s.commit.len() != 40 || !s.commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{origin}: commit must be the 40-hex-digit upstream commit, not `{}`", s.commit));
        }
        if !s.upstream.starts_with("https://") {
            return Err(format!("{origin}: upstream must be the https:// URL of the repository"));
        }
        for m in &s.migrations {
            if m.starts_with('/') || m.split('/').any(|c| c == "..") {
                return Err(format!("{origin}: migration glob `{m}` must stay inside the checkout (relative, no ..)"));
            }
        }
        if s.sidecar.iter().any(|c| c.command.is_empty()) {
            return Err(format!("{origin}: a [[sidecar]] has an empty command"));
        }
        if !s.run.ready_path.starts_with('/') {
            return Err(format!("{origin}: run.ready_path must start with /"));
        }
        Ok(s)
    }
}

impl Scenario {
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let s: Scenario = parse(text, origin)?;
        if s.request.is_empty() {
            return Err(format!("{origin}: no [[request]]: add the service's endpoints"));
        }
        if s.rps == 0 {
            return Err(format!("{origin}: rps must be at least 1"));
        }
        for (i, r) in s.request.iter().enumerate() {
            if !r.path.starts_with('/') {
                return Err(format!("{origin}, request #{}: path must start with / (the runner adds http://ADDR)", i + 1));
            }
            if r.weight == 0 {
                return Err(format!("{origin}, request #{}: weight must be at least 1", i + 1));
            }
        }
        for (i, st) in s.setup.iter().enumerate() {
            if !st.path.starts_with('/') {
                return Err(format!("{origin}, setup #{}: path must start with /", i + 1));
            }
            for (name, from) in &st.capture {
                if !(from.starts_with("json:") || from.starts_with("cookie:")) {
                    return Err(format!("{origin}, setup #{}: capture `{name}` = `{from}`: write json:FIELD.PATH or cookie:NAME", i + 1));
                }
            }
        }
        Ok(s)
    }

    /// The agent's scenario file (`--scenario`): every `{name}` replaced
    /// from `vars` (the captured values and `addr`).
    pub fn agent_toml(&self, addr: &str, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::from("# written by cargo xtask bench corpus\n");
        for r in &self.request {
            out.push_str("\n[[request]]\n");
            out.push_str(&format!("method = {}\n", toml_str(&r.method)));
            out.push_str(&format!("url = {}\n", toml_str(&format!("http://{addr}{}", substitute(&r.path, vars)))));
            if let Some(b) = &r.body {
                out.push_str(&format!("body = {}\n", toml_str(&substitute(b, vars))));
            }
            if !r.headers.is_empty() {
                let h: Vec<String> = r.headers.iter().map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(&substitute(v, vars)))).collect();
                out.push_str(&format!("headers = {{ {} }}\n", h.join(", ")));
            }
            out.push_str(&format!("weight = {}\n", r.weight));
        }
        out
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Replaces every `{name}` whose name is in `vars`; other braces stay
/// (JSON bodies keep theirs).
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

impl Expected {
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.function.as_str()).chain(self.also.iter().map(String::as_str))
    }
}

impl MustNot {
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.function.as_str()).chain(self.also.iter().map(String::as_str))
    }
}

impl Labels {
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let l: Labels = parse(text, origin)?;
        let rules = l.expected.iter().map(|e| (&e.rule, &e.function)).chain(l.must_not.iter().map(|m| (&m.rule, &m.function)));
        for (rule, function) in rules {
            if !RULES.contains(&rule.as_str()) {
                return Err(format!("{origin}: `{rule}` is not a rule id of this project (known: {})", RULES.join(", ")));
            }
            if function.trim().is_empty() {
                return Err(format!("{origin}: a `{rule}` label has an empty function"));
            }
        }
        Ok(l)
    }
}

/// A JSON field by dotted path (`user.token`; array indices as numbers).
pub fn json_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |v, key| match key.parse::<usize>() {
        Ok(i) if v.is_array() => v.get(i),
        _ => v.get(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = r#"
upstream = "https://github.com/example/svc"
commit = "970987c5f793af6fc8e557731c9bbb23b620451e"
checkout = "svc"
bin = "svc"
build_env = { SQLX_OFFLINE = "true" }
migrations = ["migrations/*.sql"]
[run]
env = { PORT = "{port}" }
ready_path = "/health"
[[sidecar]]
command = ["redis-server", "--port", "{sidecar_port}"]
"#;

    #[test]
    fn service_parses_with_defaults() {
        let s = Service::parse(SERVICE, "service.toml").unwrap();
        assert_eq!(s.workdir, ".");
        assert_eq!(s.run.cwd, ".");
        assert_eq!(s.package, None);
        assert!(!s.build_needs_database);
        assert_eq!(s.run.env["PORT"], "{port}");
        assert_eq!(s.sidecar[0].command[0], "redis-server");
    }

    #[test]
    fn service_rejects_bad_commit_unknown_keys_and_escaping_globs() {
        let e = Service::parse(&SERVICE.replace("970987c5f793af6fc8e557731c9bbb23b620451e", "main"), "s.toml").unwrap_err();
        assert!(e.contains("40-hex-digit"), "{e}");
        let e = Service::parse(&format!("colour = 1\n{SERVICE}"), "s.toml").unwrap_err();
        assert!(e.starts_with("s.toml, line 1"), "{e}");
        let e = Service::parse(&SERVICE.replace("migrations/*.sql", "../x/*.sql"), "s.toml").unwrap_err();
        assert!(e.contains("inside the checkout"), "{e}");
    }

    const SCENARIO: &str = r#"
rps = 40
[[setup]]
method = "POST"
path = "/api/users"
body = '{"user":{"email":"a@b.c"}}'
headers = { "content-type" = "application/json" }
capture = { token = "json:user.token", session = "cookie:id" }
[[request]]
path = "/api/articles?limit=20"
headers = { authorization = "Token {token}" }
weight = 3
[[request]]
method = "POST"
path = "/api/articles"
body = '{"article":{"title":"t"}}'
"#;

    #[test]
    fn scenario_parses_and_writes_the_agent_form() {
        let s = Scenario::parse(SCENARIO, "scenario.toml").unwrap();
        assert_eq!((s.rps, s.warmup_seconds, s.setup.len(), s.request.len()), (40, 10, 1, 2));
        let vars = BTreeMap::from([("token".to_string(), "abc".to_string())]);
        let text = s.agent_toml("127.0.0.1:9000", &vars);
        // The agent's own format: parse it back as plain TOML and check it.
        let v: toml::Value = toml::from_str(&text).unwrap();
        let reqs = v["request"].as_array().unwrap();
        assert_eq!(reqs[0]["url"].as_str(), Some("http://127.0.0.1:9000/api/articles?limit=20"));
        assert_eq!(reqs[0]["headers"]["authorization"].as_str(), Some("Token abc"));
        assert_eq!(reqs[0]["weight"].as_integer(), Some(3));
        assert_eq!(reqs[1]["body"].as_str(), Some(r#"{"article":{"title":"t"}}"#));
        assert_eq!(reqs[1]["method"].as_str(), Some("POST"));
    }

    #[test]
    fn scenario_rejects_relative_paths_bad_captures_and_no_requests() {
        let e = Scenario::parse(&SCENARIO.replace("path = \"/api/articles?", "path = \"api/articles?"), "s").unwrap_err();
        assert!(e.contains("request #1: path must start with /"), "{e}");
        let e = Scenario::parse(&SCENARIO.replace("json:user.token", "user.token"), "s").unwrap_err();
        assert!(e.contains("json:FIELD.PATH or cookie:NAME"), "{e}");
        let e = Scenario::parse("rps = 3", "s").unwrap_err();
        assert!(e.contains("request"), "{e}");
    }

    #[test]
    fn labels_check_rule_ids() {
        let ok = r#"
[[expected]]
rule = "n-plus-one-query"
function = "listing::list_articles"
why = "one query per article"
observable = true
[[must_not]]
rule = "blocking-in-async"
function = "users::hash_password"
why = "runs in spawn_blocking"
"#;
        let l = Labels::parse(ok, "labels.toml").unwrap();
        assert_eq!((l.expected.len(), l.must_not.len()), (1, 1));
        let e = Labels::parse(&ok.replace("n-plus-one-query", "n+1"), "labels.toml").unwrap_err();
        assert!(e.contains("`n+1` is not a rule id"), "{e}");
        let e = Labels::parse(&ok.replace("observable = true\n", ""), "labels.toml").unwrap_err();
        assert!(e.contains("observable"), "{e}");
    }

    #[test]
    fn substitution_and_json_paths() {
        let vars = BTreeMap::from([("token".to_string(), "t1".to_string())]);
        assert_eq!(substitute(r#"{"a":"{token}","b":{}}"#, &vars), r#"{"a":"t1","b":{}}"#);
        let v: serde_json::Value = serde_json::json!({"user": {"token": "x", "list": [{"id": 7}]}});
        assert_eq!(json_path(&v, "user.token"), Some(&serde_json::json!("x")));
        assert_eq!(json_path(&v, "user.list.0.id"), Some(&serde_json::json!(7)));
        assert_eq!(json_path(&v, "user.missing"), None);
    }
}
