//! Transactions held open: spans of BEGIN ... COMMIT/ROLLBACK per
//! connection, read from the wire, and what happened inside them. Pure:
//! executions and answers in, spans and patterns out.
//!
//! **How a span is found.** The kernel reports each read of a database
//! connection that ends with ReadyForQuery (the end of the server's answer
//! to a statement or a ping) with its transaction status byte: `I` idle,
//! `T` inside a transaction, `E` inside a failed one ([`WireIo`]). On one
//! connection, a transaction opens with the first statement written after
//! an `I` whose answer says `T` (whatever form BEGIN took: a simple query,
//! a prepared one, `START TRANSACTION`, an implicit one from a driver) and
//! closes at the next `I` (COMMIT, ROLLBACK, or an error's end). A
//! connection first seen inside a transaction (the audit attached
//! mid-way) opens no span until its first `I`. Inside a span, the time
//! from each answer to the next statement written is *idle in
//! transaction*: the service held the transaction (its locks, its pooled
//! connection) while doing something else. The kernel also reports every
//! send to and receive from another socket by a thread whose last database
//! answer was inside a transaction (an HTTP call, a Redis call): what the
//! transaction waited on. pg_stat_activity samples taken during the audit
//! (`idle in transaction` rows of the target's connections, with their
//! `xact_start`) corroborate a span when their time and connection fall in
//! it. Statement texts from pg_stat_activity are never read here.
//!
//! The function that opened a transaction is the call site of its first
//! statement (BEGIN: `pool.begin()`, `conn.transaction()`).
//!
//! Known limits: a task moved to another worker thread while its
//! transaction is open takes its other I/O with it unseen (the idle time
//! is still measured: it needs no thread); a thread that runs another task
//! after the transaction's statement, before any database I/O, lends that
//! task's sends to the transaction; an answer split so that its last read
//! does not end with ReadyForQuery ends no statement.

use std::collections::BTreeMap;

use super::analysis::{CallSite, Execution, untied_site};

/// An answer of the server or another socket's I/O, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireIo {
    pub ts_ns: u64,
    pub tid: u32,
    /// The database connection (an answer) or the other socket.
    pub fd: u32,
    pub kind: WireIoKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WireIoKind {
    /// ReadyForQuery with this transaction status byte (`I`, `T`, `E`).
    Answer(u8),
    /// A send to another socket by a thread inside a transaction on
    /// `xact_fd`; `peer`: that socket's remote address when it was found.
    OtherSend { xact_fd: u32, peer: Option<String> },
    /// A receive from another socket, the same.
    OtherRecv { xact_fd: u32, peer: Option<String> },
    #[default]
    None,
}

/// One pg_stat_activity row of a target connection, taken during the audit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActivitySample {
    /// When the read was answered (monotonic, the wire's clock).
    pub ts_ns: u64,
    pub fd: u32,
    pub idle_in_transaction: bool,
    /// Age of the backend's transaction (now - xact_start), when it has one.
    pub xact_age_ms: Option<f64>,
}

/// One transaction seen on the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    pub fd: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Index of its first statement in the executions.
    pub first: usize,
    /// Its statements (indexes), the first included.
    pub statements: Vec<usize>,
    /// Time from an answer to the next statement written, summed.
    pub idle_ns: u64,
    /// Other sockets' sends and receives inside it: (peer, sends, receives).
    pub other_io: BTreeMap<String, (u64, u64)>,
    /// pg_stat_activity samples that found it idle in transaction.
    pub activity_samples: u64,
    pub max_xact_age_ms: Option<f64>,
}

impl Span {
    pub fn held_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// The transactions of every connection, in time order per connection.
pub fn spans(executions: &[Execution], io: &[WireIo], activity: &[ActivitySample]) -> Vec<Span> {
    // Per connection: its statements and answers, merged by time
    // (a statement first at equal times: its answer cannot precede it).
    let mut events: BTreeMap<u32, Vec<(u64, u8, usize)>> = BTreeMap::new();
    for (i, e) in executions.iter().enumerate() {
        events.entry(e.fd).or_default().push((e.ts_ns, 0, i));
    }
    for (i, w) in io.iter().enumerate() {
        if let WireIoKind::Answer(_) = w.kind {
            events.entry(w.fd).or_default().push((w.ts_ns, 1, i));
        }
    }
    let mut out = Vec::new();
    for (fd, mut ev) in events {
        ev.sort();
        let mut seen_idle = false;
        let mut since_idle: Vec<usize> = Vec::new();
        let mut open: Option<Span> = None;
        let mut last_answer: Option<u64> = None;
        for (ts, kind, i) in ev {
            if kind == 0 {
                match open.as_mut() {
                    Some(span) => {
                        if let Some(a) = last_answer.take() {
                            span.idle_ns += ts.saturating_sub(a);
                        }
                        span.statements.push(i);
                    }
                    None => since_idle.push(i),
                }
                continue;
            }
            let WireIoKind::Answer(status) = io[i].kind else { continue };
            if status == b'I' {
                if let Some(mut span) = open.take() {
                    span.end_ns = ts;
                    out.push(span);
                }
                since_idle.clear();
                seen_idle = true;
                last_answer = None;
            } else if open.is_some() {
                last_answer = Some(ts);
            } else if seen_idle && let Some(&first) = since_idle.first() {
                open = Some(Span { fd, start_ns: executions[first].ts_ns, first, statements: std::mem::take(&mut since_idle), ..Default::default() });
                last_answer = Some(ts);
            }
        }
    }
    // What the transactions' threads did on other sockets meanwhile.
    let mut by_fd: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (k, s) in out.iter().enumerate() {
        by_fd.entry(s.fd).or_default().push(k);
    }
    let find = |out: &[Span], fd: u32, ts: u64| -> Option<usize> {
        by_fd.get(&fd)?.iter().copied().find(|k| out[*k].start_ns <= ts && ts <= out[*k].end_ns)
    };
    for w in io {
        let (xact_fd, peer, send) = match &w.kind {
            WireIoKind::OtherSend { xact_fd, peer } => (*xact_fd, peer, true),
            WireIoKind::OtherRecv { xact_fd, peer } => (*xact_fd, peer, false),
            _ => continue,
        };
        if let Some(k) = find(&out, xact_fd, w.ts_ns) {
            let name = peer.clone().unwrap_or_else(|| format!("another socket (fd {})", w.fd));
            let slot = out[k].other_io.entry(name).or_default();
            if send {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
    }
    for a in activity.iter().filter(|a| a.idle_in_transaction) {
        if let Some(k) = find(&out, a.fd, a.ts_ns) {
            out[k].activity_samples += 1;
            out[k].max_xact_age_ms = match (out[k].max_xact_age_ms, a.xact_age_ms) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldRule {
    /// Transactions opened by the function.
    pub min_transactions: usize,
    /// Median share of a transaction's life spent idle in it.
    pub min_idle_share: f64,
    /// Median idle time per transaction (ms): a scheduling delay on a busy
    /// machine is not a transaction held across other work.
    pub min_idle_ms: f64,
}

impl Default for HeldRule {
    fn default() -> Self {
        HeldRule { min_transactions: 5, min_idle_share: 0.5, min_idle_ms: 5.0 }
    }
}

impl HeldRule {
    pub fn describe(&self) -> String {
        format!(
            "at least {} transactions opened by the function, idle in transaction (between an answer and the next statement) for a median of at least {:.0}% of their life and at least {} ms each; spans from the server's own transaction status (ReadyForQuery) on the wire",
            self.min_transactions,
            self.min_idle_share * 100.0,
            self.min_idle_ms
        )
    }
}

/// The transactions one function opened.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct HeldTransactions {
    /// The function whose BEGIN opened them.
    pub function: CallSite,
    pub transactions: u64,
    pub held_p50_ms: f64,
    pub held_p99_ms: f64,
    pub held_max_ms: f64,
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    /// Median share of a transaction's life spent idle in it.
    pub idle_share_p50: f64,
    /// Distinct statements inside, in first-seen order (at most 8).
    pub statements: Vec<String>,
    /// A statement inside locks rows (`FOR UPDATE`, `FOR SHARE`...).
    pub lock_statement: Option<String>,
    /// Other sockets the transactions' threads used while they were open:
    /// (peer, transactions in which it was seen).
    pub waited_on: Vec<(String, u64)>,
    pub transactions_with_other_io: u64,
    /// pg_stat_activity samples that found one of them idle in
    /// transaction, and the oldest transaction (xact_start) they saw.
    pub activity_samples: u64,
    pub max_xact_age_ms: Option<f64>,
    /// The rule's verdict: held across other work.
    pub flagged: bool,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

/// Whether a statement locks the rows it reads.
pub fn locks_rows(sql: &str) -> bool {
    let u = sql.to_ascii_uppercase();
    [" FOR UPDATE", " FOR NO KEY UPDATE", " FOR SHARE", " FOR KEY SHARE"].iter().any(|k| u.contains(k))
}

/// Per opening function: its transactions' numbers and the rule's verdict.
pub fn held_transactions(executions: &[Execution], spans: &[Span], rule: &HeldRule) -> Vec<HeldTransactions> {
    let mut by_fn: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
    let mut sites: BTreeMap<String, CallSite> = BTreeMap::new();
    for s in spans {
        let site = executions[s.first].site.clone().unwrap_or_else(untied_site);
        let key = format!("{}\u{0}{}", site.function, site.file.as_deref().unwrap_or(""));
        sites.entry(key.clone()).or_insert(site);
        by_fn.entry(key).or_default().push(s);
    }
    let mut out = Vec::new();
    for (key, group) in by_fn {
        let mut held: Vec<f64> = group.iter().map(|s| s.held_ns() as f64 / 1e6).collect();
        let mut idle: Vec<f64> = group.iter().map(|s| s.idle_ns as f64 / 1e6).collect();
        let mut share: Vec<f64> = group.iter().map(|s| if s.held_ns() == 0 { 0.0 } else { s.idle_ns as f64 / s.held_ns() as f64 }).collect();
        for v in [&mut held, &mut idle, &mut share] {
            v.sort_by(f64::total_cmp);
        }
        let mut statements: Vec<String> = Vec::new();
        let mut lock_statement = None;
        for s in &group {
            for i in &s.statements {
                if let Some(sql) = &executions[*i].sql {
                    if statements.len() < 8 && !statements.contains(sql) {
                        statements.push(sql.clone());
                    }
                    if lock_statement.is_none() && locks_rows(sql) {
                        lock_statement = Some(sql.clone());
                    }
                }
            }
        }
        let mut waited: BTreeMap<String, u64> = BTreeMap::new();
        for s in &group {
            for peer in s.other_io.keys() {
                *waited.entry(peer.clone()).or_default() += 1;
            }
        }
        let mut waited_on: Vec<(String, u64)> = waited.into_iter().collect();
        waited_on.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        waited_on.truncate(5);
        let idle_p50 = quantile(&idle, 0.5);
        let idle_share_p50 = quantile(&share, 0.5);
        out.push(HeldTransactions {
            function: sites.remove(&key).unwrap_or_default(),
            transactions: group.len() as u64,
            held_p50_ms: round2(quantile(&held, 0.5)),
            held_p99_ms: round2(quantile(&held, 0.99)),
            held_max_ms: round2(held.last().copied().unwrap_or(0.0)),
            idle_p50_ms: round2(idle_p50),
            idle_p99_ms: round2(quantile(&idle, 0.99)),
            idle_share_p50: round2(idle_share_p50),
            statements,
            lock_statement,
            waited_on,
            transactions_with_other_io: group.iter().filter(|s| !s.other_io.is_empty()).count() as u64,
            activity_samples: group.iter().map(|s| s.activity_samples).sum(),
            max_xact_age_ms: group.iter().filter_map(|s| s.max_xact_age_ms).reduce(f64::max).map(round2),
            flagged: group.len() >= rule.min_transactions && idle_share_p50 >= rule.min_idle_share && idle_p50 >= rule.min_idle_ms,
        });
    }
    out.sort_by(|a, b| b.flagged.cmp(&a.flagged).then(b.held_p50_ms.total_cmp(&a.held_p50_ms)));
    out
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(f: &str) -> CallSite {
        CallSite { function: f.into(), file: Some("/svc/src/worker.rs".into()), line: Some(10), ..Default::default() }
    }

    fn ex(ms: f64, fd: u32, sql: &str, s: &CallSite) -> Execution {
        Execution { ts_ns: (ms * 1e6) as u64, tid: 1, fd, sql: Some(sql.into()), site: Some(s.clone()), ..Default::default() }
    }

    fn answer(ms: f64, fd: u32, status: u8) -> WireIo {
        WireIo { ts_ns: (ms * 1e6) as u64, tid: 1, fd, kind: WireIoKind::Answer(status) }
    }

    /// `n` jobs on connection `fd`: BEGIN, SELECT ... FOR UPDATE, then
    /// `call_ms` (an HTTP call) before or after the UPDATE and COMMIT.
    fn worker(n: usize, fd: u32, call_inside: bool, call_ms: f64, rtt: f64) -> (Vec<Execution>, Vec<WireIo>) {
        let s = site(if call_inside { "svc::deliver_in_transaction" } else { "svc::deliver_after_commit" });
        let (mut ex_, mut io) = (Vec::new(), Vec::new());
        let mut t = 0.0;
        io.push(answer(t, fd, b'I'));
        t += 1.0;
        for j in 0..n {
            let step = |ex_: &mut Vec<Execution>, io: &mut Vec<WireIo>, t: &mut f64, sql: &str, status: u8| {
                ex_.push(ex(*t, fd, sql, &s));
                *t += rtt;
                io.push(answer(*t, fd, status));
                *t += 0.02;
            };
            step(&mut ex_, &mut io, &mut t, "BEGIN", b'T');
            step(&mut ex_, &mut io, &mut t, "SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", b'T');
            if call_inside {
                io.push(WireIo { ts_ns: ((t + 0.01) * 1e6) as u64, tid: 1, fd: 30 + j as u32 % 2, kind: WireIoKind::OtherSend { xact_fd: fd, peer: Some("127.0.0.1:9000".into()) } });
                t += call_ms;
            }
            step(&mut ex_, &mut io, &mut t, "UPDATE jobs SET attempts = attempts + 1 WHERE id = $1", b'T');
            step(&mut ex_, &mut io, &mut t, "COMMIT", b'I');
            if !call_inside {
                io.push(WireIo { ts_ns: ((t + 0.01) * 1e6) as u64, tid: 1, fd: 31, kind: WireIoKind::OtherSend { xact_fd: u32::MAX, peer: None } });
                t += call_ms;
            }
            t += 1.0;
        }
        (ex_, io)
    }

    #[test]
    fn a_transaction_around_an_http_call_is_held_and_its_commit_first_twin_is_not_at_any_distance() {
        for rtt in [0.1, 6.0] {
            let (mut ex_, mut io) = worker(30, 9, true, 120.0, rtt);
            let (ex2, io2) = worker(30, 10, false, 120.0, rtt);
            ex_.extend(ex2);
            io.extend(io2);
            let activity = vec![ActivitySample { ts_ns: (1.0 + 2.0 * rtt + 50.0) as u64 * 1_000_000, fd: 9, idle_in_transaction: true, xact_age_ms: Some(51.0) }];
            let sp = spans(&ex_, &io, &activity);
            assert_eq!(sp.len(), 60);
            let found = held_transactions(&ex_, &sp, &HeldRule::default());
            assert_eq!(found.len(), 2);
            let held = &found[0];
            assert!(held.flagged, "{held:#?}");
            assert_eq!(held.function.function, "svc::deliver_in_transaction");
            assert_eq!(held.transactions, 30);
            assert!(held.idle_p50_ms >= 120.0 && held.held_p50_ms >= 120.0 + 4.0 * rtt, "{held:#?}");
            assert_eq!(held.lock_statement.as_deref(), Some("SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"));
            assert_eq!(held.waited_on, vec![("127.0.0.1:9000".to_string(), 30)]);
            assert_eq!(held.activity_samples, 1);
            let twin = &found[1];
            assert_eq!(twin.function.function, "svc::deliver_after_commit");
            assert!(!twin.flagged && twin.transactions == 30 && twin.waited_on.is_empty(), "{twin:#?}");
        }
    }

    #[test]
    fn a_connection_seen_first_inside_a_transaction_opens_no_span_until_idle() {
        let s = site("svc::f");
        let ex_ = vec![ex(0.0, 9, "UPDATE t SET x = 1", &s), ex(2.0, 9, "COMMIT", &s), ex(4.0, 9, "BEGIN", &s), ex(6.0, 9, "COMMIT", &s)];
        let io = vec![answer(1.0, 9, b'T'), answer(3.0, 9, b'I'), answer(5.0, 9, b'T'), answer(7.0, 9, b'I')];
        let sp = spans(&ex_, &io, &[]);
        assert_eq!(sp.len(), 1);
        assert_eq!((sp[0].start_ns, sp[0].end_ns, sp[0].idle_ns), (4_000_000, 7_000_000, 1_000_000));
    }
}
