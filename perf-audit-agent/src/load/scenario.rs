//! What the load generator sends: a validated, weighted list of requests,
//! from `--load URL` arguments or a scenario file (format in the parent
//! module's doc). Everything here is pure except [`Scenario::from_file`],
//! which reads the file.

use std::{collections::BTreeMap, path::Path};

use hyper::{
    Method, Uri,
    body::Bytes,
    header::{HeaderName, HeaderValue},
};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// The requests to send, each with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Never empty once built by [`Scenario::from_urls`] or [`Scenario::from_file`].
    pub requests: Vec<WeightedRequest>,
}

/// One endpoint of a scenario. Built only through validation: the URL is
/// absolute `http://` with a host, header names and values are valid HTTP,
/// and `weight >= 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedRequest {
    pub method: Method,
    pub url: Uri,
    pub body: Option<Bytes>,
    pub headers: Vec<(String, String)>,
    pub weight: u32,
}

impl WeightedRequest {
    /// `GET http://127.0.0.1:8080/feed`: how reports name this endpoint.
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

impl Scenario {
    /// One `GET` per URL, equal weights (the `--load URL` form).
    pub fn from_urls(urls: &[String]) -> Result<Self> {
        if urls.is_empty() {
            return Err(usage(
                "no URL to load: pass --load http://HOST:PORT/PATH".to_string(),
            ));
        }
        let requests = urls
            .iter()
            .map(|url| {
                Ok(WeightedRequest {
                    method: Method::GET,
                    url: parse_http_url(url, &format!("--load {url}"))?,
                    body: None,
                    headers: Vec::new(),
                    weight: 1,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Scenario { requests })
    }

    /// Reads and validates a TOML scenario file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read scenario {}: {e}", path.display())))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text; `origin` names it in errors
    /// (usually the file path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| {
                    format!(
                        ", line {}",
                        text[..span.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            usage(format!("scenario {origin}{line}: {}", e.message().trim()))
        })?;
        if file.request.is_empty() {
            return Err(usage(format!(
                "scenario {origin} has no request: add at least one [[request]] table with a url"
            )));
        }
        let requests = file
            .request
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(&format!("scenario {origin}, request #{}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Scenario { requests })
    }

    /// Sum of the weights (at least 1 for a valid scenario).
    pub fn total_weight(&self) -> u64 {
        self.requests.iter().map(|r| u64::from(r.weight)).sum()
    }

    /// The deterministic sequence of request indices the generator sends.
    pub fn chooser(&self) -> WeightedRoundRobin {
        WeightedRoundRobin::new(self.requests.iter().map(|r| r.weight).collect())
    }
}

/// The on-disk form, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    request: Vec<RawRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl RawRequest {
    fn validate(self, context: &str) -> Result<WeightedRequest> {
        let url = parse_http_url(&self.url, context)?;
        let method = match self.method.as_deref() {
            None => Method::GET,
            Some(m) => {
                let upper = m.trim().to_ascii_uppercase();
                let method = Method::from_bytes(upper.as_bytes())
                    .map_err(|_| usage(format!("{context}: `{m}` is not an HTTP method (use GET, POST, PUT, PATCH, DELETE...)")))?;
                if method == Method::CONNECT {
                    return Err(usage(format!(
                        "{context}: CONNECT is not supported: use GET, POST, PUT, PATCH, DELETE..."
                    )));
                }
                method
            }
        };
        if self.weight == 0 {
            return Err(usage(format!(
                "{context}: weight must be at least 1 (remove the request to disable it)"
            )));
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| usage(format!("{context}: `{name}` is not a valid header name")))?;
            if parsed == hyper::header::CONTENT_LENGTH || parsed == hyper::header::TRANSFER_ENCODING
            {
                return Err(usage(format!(
                    "{context}: do not set `{name}`: it is computed from the body"
                )));
            }
            HeaderValue::from_str(&value).map_err(|_| {
                usage(format!(
                    "{context}: the value of header `{name}` is not valid (visible ASCII only)"
                ))
            })?;
            headers.push((parsed.as_str().to_string(), value));
        }
        Ok(WeightedRequest {
            method,
            url,
            body: self.body.map(Bytes::from),
            headers,
            weight: self.weight,
        })
    }
}

/// Parses an absolute `http://HOST[:PORT][/PATH]` URL; `context` prefixes errors.
pub fn parse_http_url(raw: &str, context: &str) -> Result<Uri> {
    let raw = raw.trim();
    let uri: Uri = raw.parse().map_err(|e| {
        usage(format!(
            "{context}: not a valid URL ({e}): write http://HOST:PORT/PATH"
        ))
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => {
            return Err(usage(format!(
                "{context}: https is not supported, the load generator speaks plain HTTP only: use the service's http:// address (e.g. http://127.0.0.1:8080/)"
            )));
        }
        Some(s) => {
            return Err(usage(format!(
                "{context}: scheme `{s}` is not supported: use an http:// URL"
            )));
        }
        None => {
            return Err(usage(format!(
                "{context}: missing scheme and host: write http://HOST:PORT/PATH"
            )));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(usage(format!(
            "{context}: missing host: write http://HOST:PORT/PATH"
        )));
    };
    if authority.host().is_empty() {
        return Err(usage(format!(
            "{context}: missing host: write http://HOST:PORT/PATH"
        )));
    }
    if authority.as_str().contains('@') {
        return Err(usage(format!(
            "{context}: credentials in the URL are not supported: pass an authorization header in a scenario file"
        )));
    }
    if uri.path_and_query().is_none() {
        // `http://host:port` -> `http://host:port/`
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
        return Uri::from_parts(parts)
            .map_err(|e| usage(format!("{context}: not a valid URL ({e})")));
    }
    Ok(uri)
}

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// Smooth weighted round-robin (as nginx balances upstreams): over every
/// `total_weight` consecutive picks, index `i` is picked exactly `weights[i]`
/// times, spread out rather than in bursts, and the sequence depends only on
/// the weights.
#[derive(Debug, Clone)]
pub struct WeightedRoundRobin {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl WeightedRoundRobin {
    /// `weights` must not be empty; a weight of 0 is never picked (unless all are 0,
    /// in which case picks rotate evenly).
    pub fn new(weights: Vec<u32>) -> Self {
        let mut weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        if weights.iter().all(|&w| w == 0) {
            weights.iter_mut().for_each(|w| *w = 1);
        }
        let total = weights.iter().sum();
        let current = vec![0; weights.len()];
        WeightedRoundRobin {
            weights,
            current,
            total,
        }
    }

    /// The next index; always `< weights.len()` (0 for an empty list).
    pub fn next_index(&mut self) -> usize {
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        if let Some(c) = self.current.get_mut(best) {
            *c -= self.total;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[request]]
url = "http://127.0.0.1:8080/feed"
weight = 3

[[request]]
method = "POST"
url = "http://127.0.0.1:8080/users"
body = '{"name":"x"}'
headers = { "content-type" = "application/json" }
weight = 1
"#;

    fn err(text: &str) -> String {
        let e = Scenario::from_toml_str(text, "s.toml").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        shown
    }

    #[test]
    fn parses_the_documented_example() {
        let s = Scenario::from_toml_str(EXAMPLE, "s.toml").unwrap();
        assert_eq!(s.requests.len(), 2);
        let feed = &s.requests[0];
        assert_eq!(feed.method, Method::GET);
        assert_eq!(feed.url, "http://127.0.0.1:8080/feed");
        assert_eq!(feed.weight, 3);
        assert_eq!(feed.body, None);
        let users = &s.requests[1];
        assert_eq!(users.method, Method::POST);
        assert_eq!(users.body.as_deref(), Some(&br#"{"name":"x"}"#[..]));
        assert_eq!(
            users.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
        assert_eq!(s.total_weight(), 4);
        // The interleaving the module doc promises.
        let mut chooser = s.chooser();
        assert_eq!(
            (0..8).map(|_| chooser.next_index()).collect::<Vec<_>>(),
            vec![0, 0, 1, 0, 0, 0, 1, 0]
        );
        assert_eq!(users.label(), "POST http://127.0.0.1:8080/users");
    }

    #[test]
    fn defaults_get_and_weight_one_and_normalizes_method_case() {
        let s = Scenario::from_toml_str(
            "[[request]]\nurl = \"http://localhost:3000\"\n[[request]]\nmethod = \"delete\"\nurl = \"http://localhost:3000/x?y=1\"\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(s.requests[0].method, Method::GET);
        assert_eq!(s.requests[0].weight, 1);
        assert_eq!(s.requests[0].url, "http://localhost:3000/");
        assert_eq!(s.requests[1].method, Method::DELETE);
        assert_eq!(
            s.requests[1].url.path_and_query().unwrap().as_str(),
            "/x?y=1"
        );
    }

    #[test]
    fn from_urls_gives_equal_weight_gets() {
        let s = Scenario::from_urls(&["http://127.0.0.1:1/a".into(), "http://[::1]:2/b".into()])
            .unwrap();
        assert_eq!(s.requests.len(), 2);
        assert!(
            s.requests
                .iter()
                .all(|r| r.weight == 1 && r.method == Method::GET)
        );
        assert!(Scenario::from_urls(&[]).is_err());
    }

    #[test]
    fn rejects_https_with_the_fix_in_one_line() {
        let e = Scenario::from_urls(&["https://127.0.0.1:8443/".into()]).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("https is not supported"), "{shown}");
        assert!(shown.contains("http://"), "{shown}");
        assert!(!shown.contains('\n'));
        assert_eq!(e.kind.exit_code(), crate::error::exit_code::USAGE);
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "127.0.0.1:8080/feed",
            "/feed",
            "ftp://h/x",
            "http://",
            "not a url",
            "http://u:p@h/",
        ] {
            let e = Scenario::from_urls(&[bad.to_string()]).unwrap_err();
            assert!(
                e.message.starts_with(&format!("--load {bad}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rejects_invalid_scenarios_with_context() {
        assert!(err("").contains("has no request"));
        assert!(
            err("[[request]]\nurl = \"http://h/\"\nweight = 0\n")
                .contains("request #1: weight must be at least 1")
        );
        assert!(
            err("[[request]]\nurl = \"http://h/\"\nwieght = 2\n")
                .contains("unknown field `wieght`")
        );
        assert!(
            err("[[request]]\nurl = \"http://h/\"\n[[request]]\nurl = \"https://h/\"\n")
                .contains("request #2: https is not supported")
        );
        assert!(
            err("[[request]]\nmethod = \"GE T\"\nurl = \"http://h/\"\n")
                .contains("not an HTTP method")
        );
        assert!(
            err("[[request]]\nurl = \"http://h/\"\nheaders = { \"bad name\" = \"v\" }\n")
                .contains("not a valid header name")
        );
        assert!(
            err("[[request]]\nurl = \"http://h/\"\nheaders = { \"x\" = \"a\\nb\" }\n")
                .contains("header `x` is not valid")
        );
        assert!(
            err("[[request]]\nurl = \"http://h/\"\nheaders = { \"Content-Length\" = \"3\" }\n")
                .contains("computed from the body")
        );
        assert!(err("[[request]]\nweight = 1\n").contains("missing field `url`"));
        let syntax = err("[[request]]\nurl = \"http://h/\"\nweight = -1\n");
        assert!(syntax.contains("s.toml, line 3"), "{syntax}");
    }

    #[test]
    fn from_file_reports_unreadable_files() {
        let e = Scenario::from_file(Path::new("/nonexistent/scenario.toml")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(
            e.message
                .contains("cannot read scenario /nonexistent/scenario.toml")
        );
    }

    #[test]
    fn weighted_round_robin_is_exact_per_cycle_and_spread() {
        let mut wrr = WeightedRoundRobin::new(vec![5, 1, 1]);
        let first: Vec<usize> = (0..7).map(|_| wrr.next_index()).collect();
        // nginx's documented sequence for weights 5,1,1.
        assert_eq!(first, vec![0, 0, 1, 0, 2, 0, 0]);

        let weights = vec![3, 1, 7, 2];
        let total: u32 = weights.iter().sum();
        let mut wrr = WeightedRoundRobin::new(weights.clone());
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..total * 100 {
            counts[wrr.next_index()] += 1;
        }
        assert_eq!(counts, weights.iter().map(|w| w * 100).collect::<Vec<_>>());

        // Deterministic: the same weights give the same sequence.
        let a: Vec<usize> = {
            let mut w = WeightedRoundRobin::new(weights.clone());
            (0..50).map(|_| w.next_index()).collect()
        };
        let b: Vec<usize> = {
            let mut w = WeightedRoundRobin::new(weights);
            (0..50).map(|_| w.next_index()).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn weighted_round_robin_degenerate_inputs() {
        let mut one = WeightedRoundRobin::new(vec![4]);
        assert!((0..10).all(|_| one.next_index() == 0));
        let mut zeros = WeightedRoundRobin::new(vec![0, 0]);
        assert_eq!(
            (0..4).map(|_| zeros.next_index()).collect::<Vec<_>>(),
            vec![0, 1, 0, 1]
        );
        let mut some_zero = WeightedRoundRobin::new(vec![0, 2]);
        assert!((0..6).all(|_| some_zero.next_index() == 1));
        let mut empty = WeightedRoundRobin::new(vec![]);
        assert_eq!(empty.next_index(), 0);
    }
}
