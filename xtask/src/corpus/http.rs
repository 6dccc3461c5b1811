//! A minimal HTTP/1.1 client for the corpus runner's setup steps, readiness
//! checks and warm-up (one connection per request, `Connection: close`).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn request(addr: &str, method: &str, path: &str, headers: &[(String, String)], body: Option<&str>, timeout: Duration) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| format!("{method} {path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("{method} {path}: {e}"))?;
    parse(&raw).ok_or_else(|| format!("{method} {path}: not an HTTP answer ({} bytes)", raw.len()))
}

pub fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Some(Answer { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// The `NAME=value` pair of a Set-Cookie header named NAME.
pub fn cookie(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().filter(|(k, _)| k == "set-cookie").find_map(|(_, v)| {
        let pair = v.split(';').next()?.trim();
        (pair.split_once('=')?.0 == name).then(|| pair.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers_and_cookies() {
        let a = parse(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nSet-Cookie: id=abc; Path=/; HttpOnly\r\n\r\nok").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, b"ok".as_slice()));
        assert_eq!(cookie(&a.headers, "id").as_deref(), Some("id=abc"));
        assert_eq!(cookie(&a.headers, "other"), None);
        let c = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").unwrap();
        assert_eq!(c.body, b"Wikipedia");
        assert!(parse(b"garbage").is_none());
    }
}
