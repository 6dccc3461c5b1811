//! Which database to read, and how to show it without its secrets.
//!
//! The URL comes from `--database-url`, else `DATABASE_URL` (clap reads
//! both into the same option; the variable's value tells which), else the
//! target's own environment (`/proc/PID/environ`), which is what the
//! service itself connects to. A password is never printed or written:
//! [`redact`] masks it everywhere the URL is shown.

use std::net::{IpAddr, ToSocketAddrs as _};

use super::sockets::Endpoint;

/// Where the URL was found, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlSource {
    Flag,
    Environment,
    TargetEnvironment,
}

impl UrlSource {
    pub fn describe(self, pid: u32) -> String {
        match self {
            UrlSource::Flag => "--database-url".into(),
            UrlSource::Environment => "DATABASE_URL of the agent".into(),
            UrlSource::TargetEnvironment => format!("DATABASE_URL in the target's environment (/proc/{pid}/environ)"),
        }
    }
}

/// The URL to use and where it came from.
pub fn resolve(flag_or_env: Option<&str>, pid: u32) -> Option<(String, UrlSource)> {
    if let Some(url) = flag_or_env.filter(|u| !u.is_empty()) {
        let from_env = std::env::var("DATABASE_URL").is_ok_and(|v| v == url);
        return Some((url.to_string(), if from_env { UrlSource::Environment } else { UrlSource::Flag }));
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    target_database_url(&environ).map(|u| (u, UrlSource::TargetEnvironment))
}

/// `DATABASE_URL` in a NUL-separated environment block.
pub fn target_database_url(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("DATABASE_URL="))
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

/// The URL with its password (userinfo or `password=` parameter) masked.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map(|i| rest_start + i).unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Host and port of a `postgres://` URL (default port 5432); `None` for a
/// Unix-socket URL (`host=/path` or an empty host).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if hostport.is_empty() || hostport.starts_with('%') {
        return None;
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h.to_string(), after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(5432))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (hostport.to_string(), 5432),
        }
    };
    Some((host, port))
}

/// Whether the URL demands TLS (`sslmode=require`, `verify-ca`, `verify-full`).
pub fn requires_tls(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["sslmode=require", "sslmode=verify-ca", "sslmode=verify-full"].iter().any(|m| lower.contains(m))
}

/// The addresses the database's host resolves to.
pub fn endpoint(url: &str) -> Option<Endpoint> {
    let (host, port) = host_port(url)?;
    let mut addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host.as_str(), port).to_socket_addrs().map(|it| it.map(|a| a.ip()).collect()).unwrap_or_default(),
    };
    addrs.sort();
    addrs.dedup();
    Some(Endpoint { addrs, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(redact("postgres://app:s3cret@db:5432/app"), "postgres://app:***@db:5432/app");
        assert_eq!(redact("postgres://app@db/app?password=s3cret&sslmode=disable"), "postgres://app@db/app?password=***&sslmode=disable");
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
        assert!(!redact("postgres://u:p%40ss@h/d").contains("p%40ss"));
    }

    #[test]
    fn hosts_ports_and_sockets() {
        assert_eq!(host_port("postgres://u:p@127.0.0.1:55432/postgres"), Some(("127.0.0.1".into(), 55432)));
        assert_eq!(host_port("postgres://localhost/db"), Some(("localhost".into(), 5432)));
        assert_eq!(host_port("postgresql://[::1]:6000/db"), Some(("::1".into(), 6000)));
        assert_eq!(host_port("postgres:///db?host=/run/postgresql"), None);
        let ep = endpoint("postgres://localhost:5999/x").unwrap();
        assert_eq!(ep.port, 5999);
        assert!(ep.addrs.iter().any(|a| a.is_loopback()));
    }

    #[test]
    fn the_targets_environment_block_is_searched() {
        let env = b"PATH=/bin\0DATABASE_URL=postgres://u@h/d\0HOME=/root\0";
        assert_eq!(target_database_url(env).as_deref(), Some("postgres://u@h/d"));
        assert_eq!(target_database_url(b"PATH=/bin\0"), None);
        assert!(requires_tls("postgres://h/d?sslmode=require"));
        assert!(!requires_tls("postgres://h/d?sslmode=prefer"));
    }
}
