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
    /// `B`: parameters bound to `statement` into `portal`; `params`: a
    /// hash of the parameter formats and values (never the values
    /// themselves), `None` when the capture cut them.
    Bind { portal: String, statement: String, params: Option<u64> },
    /// `E`: run `portal`.
    Execute { portal: String },
    /// The client asked for TLS (or GSS encryption) at connection start.
    EncryptionRequest,
    /// A TLS record: the connection is encrypted, the wire is unreadable.
    Tls,
    /// `C` of a statement: its name is free again.
    CloseStatement { statement: String },
    /// `C` of a portal.
    ClosePortal { portal: String },
    /// Startup, Sync, Describe, Flush, password... (type byte, or 0).
    Other(u8),
}

/// The messages at the start of `buf` (a write's captured prefix). Stops at
/// the first byte that does not start a known message. Total: any bytes
/// give an answer, in one pass, slicing only at byte offsets the message
/// lengths and NULs give (names and texts that are not UTF-8 are kept
/// lossily, but never used to measure the buffer).
pub fn parse(buf: &[u8]) -> Vec<Message> {
    parse_write(buf).0
}

/// [`parse`], and whether the write was garbage: bytes, but not one message
/// at their start (random bytes, or the middle of a message that did not
/// fit in the previous write).
pub fn parse_write(buf: &[u8]) -> (Vec<Message>, bool) {
    let mut out = Vec::new();
    if buf.len() >= 2 && matches!(buf[0], 0x14..=0x17) && buf[1] == 0x03 {
        out.push(Message::Tls);
        return (out, false);
    }
    let mut pos = 0;
    // Untyped startup-phase messages: length, then a code.
    while buf.len() - pos >= 8 && buf[pos] == 0 {
        let len = be32(&buf[pos..]) as usize;
        let code = be32(&buf[pos + 4..]);
        if code == SSL_REQUEST_CODE || code == GSSENC_REQUEST_CODE {
            out.push(Message::EncryptionRequest);
        } else {
            out.push(Message::Other(0));
        }
        if len < 8 || len >= buf.len() - pos {
            return (out, false);
        }
        pos += len;
    }
    while buf.len() - pos >= 5 {
        let kind = buf[pos];
        if !kind.is_ascii_alphabetic() {
            break;
        }
        let len = be32(&buf[pos + 1..]) as usize;
        if len < 4 {
            break;
        }
        let body_start = pos + 5;
        // `len` counts itself: the body is len - 4 bytes.
        let body_len = len - 4;
        let truncated = body_len > buf.len() - body_start;
        let body = &buf[body_start..body_start + body_len.min(buf.len() - body_start)];
        match kind {
            b'Q' => {
                let (sql, complete) = cstr(body);
                out.push(Message::Query { sql: text(sql), truncated: truncated || !complete });
            }
            b'P' => {
                let (statement, complete) = cstr(body);
                if !complete {
                    break;
                }
                let (sql, complete) = cstr(&body[statement.len() + 1..]);
                out.push(Message::Parse { statement: text(statement), sql: text(sql), truncated: truncated || !complete });
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
                let rest = &body[portal.len() + 1 + statement.len() + 1..];
                out.push(Message::Bind { portal: text(portal), statement: text(statement), params: params_hash(rest) });
            }
            b'E' => {
                let (portal, complete) = cstr(body);
                if !complete {
                    break;
                }
                out.push(Message::Execute { portal: text(portal) });
            }
            b'C' => {
                // Close: 'S' statement or 'P' portal, then its name.
                let Some((&what, rest)) = body.split_first() else { break };
                let (name, complete) = cstr(rest);
                if !complete {
                    break;
                }
                match what {
                    b'S' => out.push(Message::CloseStatement { statement: text(name) }),
                    b'P' => out.push(Message::ClosePortal { portal: text(name) }),
                    _ => out.push(Message::Other(b'C')),
                }
            }
            other => out.push(Message::Other(other)),
        }
        if truncated {
            break;
        }
        pos = body_start + body_len;
    }
    let garbage = out.is_empty() && !buf.is_empty();
    (out, garbage)
}

/// A hash (FNV-1a) of a Bind's parameter format codes and values: `rest`
/// is the body after the statement name. `None` when the capture ends
/// before the last value (the counts run past the bytes captured).
fn params_hash(rest: &[u8]) -> Option<u64> {
    let be16 = |b: &[u8], at: usize| -> Option<usize> { b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]) as usize) };
    let formats = be16(rest, 0)?;
    let mut pos = 2 + 2 * formats;
    let params = be16(rest, pos)?;
    pos += 2;
    for _ in 0..params {
        let len = rest.get(pos..pos + 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))?;
        pos += 4;
        if len > 0 {
            pos = pos.checked_add(len as usize)?;
        }
        if pos > rest.len() {
            return None;
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &rest[..pos] {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Some(h)
}

/// Big-endian u32 at the start of `b` (callers check there are 4 bytes).
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The bytes of a NUL-terminated string at the start of `b` (without the
/// NUL), and whether the NUL was seen.
fn cstr(b: &[u8]) -> (&[u8], bool) {
    match b.iter().position(|c| *c == 0) {
        Some(n) => (&b[..n], true),
        None => (b, false),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
    /// Hash of the bound parameters (extended protocol, fully captured).
    pub params: Option<u64>,
    /// The text was not on the wire but learnt from the server
    /// ([`Connection::learn`], see `recovery`).
    pub recovered: bool,
}

/// The protocol state of one database socket. Bounded: at most
/// [`MAX_STATEMENTS`] statement names and [`MAX_PORTALS`] portal names;
/// past a bound the names are forgotten (counted in `evicted_*`), so a
/// client that never closes them (or a hostile one) cannot grow the agent.
#[derive(Debug, Default)]
pub struct Connection {
    /// Statement name -> (text, truncated, recovered from the server).
    statements: HashMap<String, (String, bool, bool)>,
    /// Portal name -> statement name and its parameters' hash. The unnamed
    /// portal "" is by far the most common; named ones live until their
    /// transaction ends or a Close.
    portals: HashMap<String, (String, Option<u64>)>,
    /// The connection asked for TLS or sent TLS records.
    pub encrypted: bool,
    /// Names forgotten at the bounds.
    pub evicted_statements: u64,
    pub evicted_portals: u64,
}

/// Bounds the statement names remembered per connection (sqlx caches 100
/// per connection by default).
pub const MAX_STATEMENTS: usize = 1_024;
/// Bounds the portal names remembered per connection (drivers use the
/// unnamed portal; a named one is an open cursor).
pub const MAX_PORTALS: usize = 128;
/// Bounds the connections whose protocol state the agent keeps (the
/// agent's `WireCapture` evicts one, counted, beyond it). With the two
/// bounds above and 512-byte captures, about 0.7 MB per connection at most.
pub const MAX_CONNECTIONS: usize = 512;

impl Connection {
    /// Feeds the messages of one write; returns the executions it starts.
    pub fn feed(&mut self, messages: Vec<Message>) -> Vec<WireExecution> {
        let mut out = Vec::new();
        for message in messages {
            match message {
                Message::Query { sql, truncated } => {
                    out.push(WireExecution { sql: Some(sql), truncated, statement: String::new(), recovered: false, params: None });
                }
                Message::Parse { statement, sql, truncated } => {
                    if self.statements.len() >= MAX_STATEMENTS && !self.statements.contains_key(&statement) {
                        self.evicted_statements += self.statements.len() as u64;
                        self.statements.clear();
                    }
                    self.statements.insert(statement, (sql, truncated, false));
                }
                Message::Bind { portal, statement, params } => {
                    if self.portals.len() >= MAX_PORTALS && !self.portals.contains_key(&portal) {
                        // Keep the unnamed portal: it is rebound at once anyway.
                        let unnamed = self.portals.remove("");
                        self.evicted_portals += self.portals.len() as u64;
                        self.portals.clear();
                        if let Some(s) = unnamed {
                            self.portals.insert(String::new(), s);
                        }
                    }
                    self.portals.insert(portal, (statement, params));
                }
                Message::Execute { portal } => {
                    let (statement, params) = self.portals.get(&portal).cloned().unwrap_or_default();
                    let known = self.statements.get(&statement).cloned();
                    out.push(WireExecution {
                        params,
                        truncated: known.as_ref().is_some_and(|k| k.1),
                        recovered: known.as_ref().is_some_and(|k| k.2),
                        sql: known.map(|k| k.0),
                        statement,
                    });
                }
                Message::CloseStatement { statement } => {
                    self.statements.remove(&statement);
                }
                Message::ClosePortal { portal } => {
                    self.portals.remove(&portal);
                }
                Message::EncryptionRequest | Message::Tls => self.encrypted = true,
                Message::Other(_) => {}
            }
        }
        out
    }

    /// Statement and portal names held now.
    pub fn names(&self) -> (usize, usize) {
        (self.statements.len(), self.portals.len())
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
            assert_eq!(ex, vec![WireExecution { sql: Some(sql.into()), truncated: false, statement: "sqlx_s_1".into(), recovered: false, params: ex[0].params }]);
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

    fn bind_with(values: &[&[u8]]) -> Vec<u8> {
        let mut body = b"\0stmt_1\0".to_vec();
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v);
        }
        body.extend_from_slice(&0u16.to_be_bytes());
        msg(b'B', &body)
    }

    #[test]
    fn a_bind_carries_a_hash_of_its_values_equal_for_equal_values_and_none_when_cut() {
        let params = |b: &[u8]| match parse(b).first() {
            Some(Message::Bind { params, .. }) => *params,
            other => panic!("{other:?}"),
        };
        let a = params(&bind_with(&[&7i64.to_be_bytes()]));
        assert!(a.is_some());
        assert_eq!(a, params(&bind_with(&[&7i64.to_be_bytes()])));
        assert_ne!(a, params(&bind_with(&[&8i64.to_be_bytes()])));
        // A value past the capture: no hash (a prefix is no proof of equal values).
        let long = bind_with(&[&[b'x'; 600]]);
        assert_eq!(params(&long[..512]), None);
        // Executions carry it through their portal.
        let mut conn = Connection::default();
        conn.feed(parse(&parse_msg("stmt_1", "SELECT 1 WHERE $1 > 0")));
        let mut write = bind_with(&[&7i64.to_be_bytes()]);
        write.extend_from_slice(&msg(b'E', b"\0\0\0\0\0"));
        let e = conn.feed(parse(&write));
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].params, e[0].sql.as_deref()), (a, Some("SELECT 1 WHERE $1 > 0")));
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
        assert_eq!(parse_write(b"\x01\x02\x03"), (vec![], true));
        assert_eq!(parse_write(&[]), (vec![], false));
    }

    #[test]
    fn names_that_are_not_utf8_are_sliced_by_their_bytes() {
        // Each invalid byte becomes a 3-byte U+FFFD: the lossy name is
        // longer than the raw one (the old parser sliced past the body).
        let mut body = vec![0xff, 0xfe, 0xfd, 0];
        body.extend_from_slice(b"SELECT 1\0\0\0");
        let m = msg(b'P', &body);
        assert_eq!(parse_write(&m), (vec![Message::Parse { statement: "\u{fffd}\u{fffd}\u{fffd}".into(), sql: "SELECT 1".into(), truncated: false }], false));
        let mut bind = vec![0xff, 0];
        bind.extend_from_slice(&[0xc3, 0]);
        assert_eq!(parse(&msg(b'B', &bind)), vec![Message::Bind { portal: "\u{fffd}".into(), statement: "\u{fffd}".into(), params: None }]);
        // Every prefix of a valid stream and of a corrupt one parses.
        let mut stream = m.clone();
        stream.extend(bind_execute_sync("x"));
        stream.extend([0, 0, 0, 8, 0, 0, 0, 0, b'Q', 0xff, 0xff, 0xff, 0xff]);
        for n in 0..=stream.len() {
            let _ = parse_write(&stream[..n]);
            let _ = parse_write(&stream[n..]);
        }
    }

    #[test]
    fn startup_messages_in_a_row_are_read_without_recursion() {
        let mut buf = Vec::new();
        for _ in 0..10_000 {
            buf.extend([0, 0, 0, 8, 0, 0, 0, 0]);
        }
        buf.extend(msg(b'Q', b"SELECT 1\0"));
        let out = parse(&buf);
        assert_eq!(out.len(), 10_001);
        assert_eq!(out[10_000], Message::Query { sql: "SELECT 1".into(), truncated: false });
    }

    #[test]
    fn portal_and_statement_names_are_bounded_and_evictions_counted() {
        let mut conn = Connection::default();
        conn.feed(parse(&parse_msg("s", "SELECT 1")));
        for i in 0..10 * MAX_PORTALS {
            let mut bind = format!("p{i}").into_bytes();
            bind.extend_from_slice(b"\0s\0\0\0\0\0\0\0");
            conn.feed(parse(&msg(b'B', &bind)));
            assert!(conn.names().1 <= MAX_PORTALS);
        }
        assert!(conn.evicted_portals >= 9 * MAX_PORTALS as u64 - 1, "{}", conn.evicted_portals);
        // The latest portal still runs its statement.
        let mut exec = format!("p{}", 10 * MAX_PORTALS - 1).into_bytes();
        exec.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(conn.feed(parse(&msg(b'E', &exec)))[0].sql.as_deref(), Some("SELECT 1"));
        for i in 0..2 * MAX_STATEMENTS {
            conn.feed(parse(&parse_msg(&format!("s{i}"), "SELECT 2")));
            assert!(conn.names().0 <= MAX_STATEMENTS);
        }
        assert!(conn.evicted_statements >= MAX_STATEMENTS as u64);
        // Close frees a name.
        conn.feed(parse(&msg(b'C', b"Ss1999\0")));
        assert!(!conn.knows("s1999"));
        let before = conn.names().1;
        conn.feed(parse(&msg(b'C', b"Pp1279\0")));
        assert_eq!(conn.names().1, before - 1);
    }
}
