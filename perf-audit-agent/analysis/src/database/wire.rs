//! The PostgreSQL frontend protocol, as seen in the first bytes of each
//! write to a database socket. Pure parsing, no I/O.
//!
//! A write carries whole messages most of the time (sqlx, tokio-postgres
//! and libpq flush complete buffers): a type byte, a big-endian length that
//! counts itself, and a body. The simple protocol sends `Q` (query text);
//! the extended protocol sends `P` (Parse: statement name + text) once per
//! statement and connection, then `B` (Bind: portal + statement name) and
//! `E` (Execute) for each execution. [`Connection`] keeps the statement
//! names of one socket, so an `E` is tied to its text even when the `P` was
//! written long before. Only `DB_PAYLOAD_BYTES` of each write reach the
//! agent: a long text is kept as a prefix and marked truncated.

use std::collections::HashMap;

/// `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `GSSENCRequest`.
const GSSENC_REQUEST_CODE: u32 = 80_877_104;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `Q`: a simple-protocol query.
    Query { sql: String, truncated: bool },
    /// `P`: a statement prepared under `statement` ("" = unnamed).
    Parse { statement: String, sql: String, truncated: bool },
    /// `B`: parameters bound to `statement` into `portal`.
    Bind { portal: String, statement: String },
    /// `E`: run `portal`.
    Execute { portal: String },
    /// The client asked for TLS (or GSS encryption) at connection start.
    EncryptionRequest,
    /// A TLS record: the connection is encrypted, the wire is unreadable.
    Tls,
    /// Startup, Sync, Describe, Close, Flush, password... (type byte, or 0).
    Other(u8),
}

/// The messages at the start of `buf` (a write's captured prefix). Stops at
/// the first byte that does not start a known message.
pub fn parse(buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    if buf.len() >= 2 && matches!(buf[0], 0x14..=0x17) && buf[1] == 0x03 {
        out.push(Message::Tls);
        return out;
    }
    // Untyped startup-phase messages: length, then a code.
    if buf.len() >= 8 && buf[0] == 0 {
        let len = be32(&buf[0..4]) as usize;
        let code = be32(&buf[4..8]);
        if code == SSL_REQUEST_CODE || code == GSSENC_REQUEST_CODE {
            out.push(Message::EncryptionRequest);
        } else {
            out.push(Message::Other(0));
        }
        if len < 8 || len >= buf.len() {
            return out;
        }
        return out.into_iter().chain(parse(&buf[len..])).collect();
    }
    let mut pos = 0;
    while pos + 5 <= buf.len() {
        let kind = buf[pos];
        if !kind.is_ascii_alphabetic() {
            break;
        }
        let len = be32(&buf[pos + 1..pos + 5]) as usize;
        if len < 4 {
            break;
        }
        let end = pos + 1 + len;
        let body = &buf[pos + 5..end.min(buf.len())];
        let truncated = end > buf.len();
        match kind {
            b'Q' => {
                let (sql, complete) = cstr(body);
                out.push(Message::Query { sql, truncated: truncated || !complete });
            }
            b'P' => {
                let (statement, complete) = cstr(body);
                if !complete {
                    break;
                }
                let (sql, complete) = cstr(&body[statement.len() + 1..]);
                out.push(Message::Parse { statement, sql, truncated: truncated || !complete });
            }
            b'B' => {
                let (portal, complete) = cstr(body);
                if !complete {
                    break;
                }
                let (statement, complete) = cstr(&body[portal.len() + 1..]);
                if !complete {
                    break;
                }
                out.push(Message::Bind { portal, statement });
            }
            b'E' => {
                let (portal, complete) = cstr(body);
                if !complete {
                    break;
                }
                out.push(Message::Execute { portal });
            }
            other => out.push(Message::Other(other)),
        }
        if truncated {
            break;
        }
        pos = end;
    }
    out
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A NUL-terminated string at the start of `b`, and whether the NUL was seen.
fn cstr(b: &[u8]) -> (String, bool) {
    match b.iter().position(|c| *c == 0) {
        Some(n) => (String::from_utf8_lossy(&b[..n]).into_owned(), true),
        None => (String::from_utf8_lossy(b).into_owned(), false),
    }
}

/// One statement execution seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireExecution {
    /// The statement text, when its `P` or `Q` was seen.
    pub sql: Option<String>,
    /// True when `sql` is a prefix (the write was longer than the capture).
    pub truncated: bool,
    /// The prepared statement's name ("" for unnamed or simple queries).
    pub statement: String,
    /// The text was not on the wire but learnt from the server
    /// ([`Connection::learn`], see `recovery`).
    pub recovered: bool,
}

/// The protocol state of one database socket.
#[derive(Debug, Default)]
pub struct Connection {
    /// Statement name -> (text, truncated, recovered from the server).
    statements: HashMap<String, (String, bool, bool)>,
    portals: HashMap<String, String>,
    /// The connection asked for TLS or sent TLS records.
    pub encrypted: bool,
}

/// Bounds the statement names remembered per connection (sqlx caches 100
/// per connection by default).
const MAX_STATEMENTS: usize = 1_024;

impl Connection {
    /// Feeds the messages of one write; returns the executions it starts.
    pub fn feed(&mut self, messages: Vec<Message>) -> Vec<WireExecution> {
        let mut out = Vec::new();
        for message in messages {
            match message {
                Message::Query { sql, truncated } => {
                    out.push(WireExecution { sql: Some(sql), truncated, statement: String::new(), recovered: false });
                }
                Message::Parse { statement, sql, truncated } => {
                    if self.statements.len() >= MAX_STATEMENTS && !self.statements.contains_key(&statement) {
                        self.statements.clear();
                    }
                    self.statements.insert(statement, (sql, truncated, false));
                }
                Message::Bind { portal, statement } => {
                    self.portals.insert(portal, statement);
                }
                Message::Execute { portal } => {
                    let statement = self.portals.get(&portal).cloned().unwrap_or_default();
                    let known = self.statements.get(&statement).cloned();
                    out.push(WireExecution {
                        truncated: known.as_ref().is_some_and(|k| k.1),
                        recovered: known.as_ref().is_some_and(|k| k.2),
                        sql: known.map(|k| k.0),
                        statement,
                    });
                }
                Message::EncryptionRequest | Message::Tls => self.encrypted = true,
                Message::Other(_) => {}
            }
        }
        out
    }

    /// Whether the text of prepared statement `name` is known.
    pub fn knows(&self, name: &str) -> bool {
        self.statements.contains_key(name)
    }

    /// The text of a statement prepared before tracing began, recovered
    /// from the server: later executions of `statement` carry it. A Parse
    /// seen on the wire is never overridden.
    pub fn learn(&mut self, statement: &str, sql: String) {
        if self.statements.len() < MAX_STATEMENTS {
            self.statements.entry(statement.to_string()).or_insert((sql, false, true));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    pub fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(sql.as_bytes());
        body.push(0);
        body.extend_from_slice(&0u16.to_be_bytes());
        msg(b'P', &body)
    }

    pub fn bind_execute_sync(name: &str) -> Vec<u8> {
        let mut bind = vec![0u8];
        bind.extend_from_slice(name.as_bytes());
        bind.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0]);
        let mut v = msg(b'B', &bind);
        v.extend(msg(b'E', &[0, 0, 0, 0, 0]));
        v.extend(msg(b'S', &[]));
        v
    }

    #[test]
    fn extended_protocol_executions_are_tied_to_their_parse() {
        let mut conn = Connection::default();
        let sql = "SELECT id, name, country FROM users WHERE id = $1";
        let mut first = parse_msg("sqlx_s_1", sql);
        first.extend(msg(b'D', b"Ssqlx_s_1\0"));
        first.extend(msg(b'S', &[]));
        assert!(conn.feed(parse(&first)).is_empty());
        for _ in 0..3 {
            let ex = conn.feed(parse(&bind_execute_sync("sqlx_s_1")));
            assert_eq!(ex, vec![WireExecution { sql: Some(sql.into()), truncated: false, statement: "sqlx_s_1".into(), recovered: false }]);
        }
        // A statement prepared before tracing began has no text.
        let ex = conn.feed(parse(&bind_execute_sync("sqlx_s_9")));
        assert_eq!(ex[0].sql, None);
        assert_eq!(ex[0].statement, "sqlx_s_9");
        // ... until the server tells its text.
        conn.learn("sqlx_s_9", "SELECT 9".into());
        let ex = conn.feed(parse(&bind_execute_sync("sqlx_s_9")));
        assert_eq!((ex[0].sql.as_deref(), ex[0].recovered), (Some("SELECT 9"), true));
        conn.learn("sqlx_s_1", "wrong".into());
        assert_eq!(conn.feed(parse(&bind_execute_sync("sqlx_s_1")))[0].sql.as_deref(), Some(sql), "a Parse seen on the wire wins");
    }

    #[test]
    fn simple_queries_and_truncated_texts() {
        let q = msg(b'Q', b"SELECT 1\0");
        assert_eq!(parse(&q), vec![Message::Query { sql: "SELECT 1".into(), truncated: false }]);
        let long = parse_msg("", &format!("SELECT {}", "x, ".repeat(300)));
        let cut = &long[..512];
        match &parse(cut)[0] {
            Message::Parse { statement, sql, truncated } => {
                assert_eq!(statement, "");
                assert!(*truncated);
                assert!(sql.starts_with("SELECT x, x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ssl_request_and_tls_records_mark_the_connection_encrypted() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(parse(&ssl), vec![Message::EncryptionRequest]);
        assert_eq!(parse(&[0x17, 0x03, 0x03, 0x00, 0x20]), vec![Message::Tls]);
        let mut conn = Connection::default();
        conn.feed(parse(&[0x17, 0x03, 0x03, 0x00, 0x20]));
        assert!(conn.encrypted);
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(parse(b"\x01\x02\x03").is_empty());
        assert!(parse(&[]).is_empty());
    }
}
