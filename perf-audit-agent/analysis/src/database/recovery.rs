//! The text of statements prepared before the audit began, recovered from
//! the server's `pg_stat_activity`. Pure: wire facts and activity rows in,
//! statement texts out; the agent does the polling.
//!
//! **Why this is sound.** With the extended protocol the wire carries a
//! statement's text once, in its Parse, when the connection first prepares
//! it; an audit attached to a service that has been running sees only
//! Bind/Execute with a statement name (`sqlx_s_12`). Names are per
//! connection, and a connection is one backend on the server, whose
//! `pg_stat_activity` row (found by `client_port`, the socket's local port
//! in /proc/PID/net/tcp) holds in `query` the text of its current or last
//! statement: for a Bind/Execute, the text its statement was prepared
//! with. So when the last write on a connection executed an unknown name,
//! the backend has read that write (it is running it, `active`, or has run
//! it, `idle`), and nothing more was written on that connection until our
//! read's answer came, the backend's current or last statement is that
//! execution, and `query` is the name's text. "Has read": the backend must
//! have changed state *after* the write, which the two clocks tell without
//! being compared: the row's time in its state (the server's
//! `statement_timestamp() - state_change`, its own clock, measured from
//! when our read arrived) must be shorter than the write's age when our
//! read was sent (the kernel's monotonic clock). A write the
//! backend had not processed yet left it idle since before the write was
//! made (sqlx, like any driver that does not pipeline, writes the next
//! statement only after the
//! previous one's ReadyForQuery), so its idle time at our read's arrival is
//! longer than the write's age at our read's sending: such an observation
//! is never accepted, whatever the distance to the server, the load or the
//! clocks' offsets. A processed write is accepted when our read's one-way
//! trip to the server is shorter than the write's own plus its execution
//! (same host, same server: often not, for a statement that takes tens of
//! microseconds). So a second reading is accepted too: a backend seen idle
//! twice, (`ACTIVITY_POLL`-spaced) reads apart, with the same
//! `state_change` and text and nothing written on its connection since
//! before the first read, had processed that write at the first read
//! already (a write waiting in its socket would have woken it, and
//! changed `state_change`, within the interval; only a backend not
//! scheduled for the whole interval would be missed). A connection
//! written to again while our read was in flight (a slow read on a busy
//! service) still counts when that write came after the read was sent and
//! the state the row shows had lasted longer than the read's round trip
//! (so it began before the read was sent: it is not the later write's).
//! On top of that
//! a name's text is learnt during the audit only when at least
//! [`MIN_VOTES`] observations agree and they are at least
//! [`MIN_AGREEMENT`] of that name's observations (at the end, names still
//! undecided are decided per call site from [`MIN_SITE_VOTES`]) (what the rule above cannot see: a driver that pipelines
//! statements). A learnt text is the connection's (the same name on
//! another connection is another statement), and it fills every execution
//! of that name on that connection, before and after it was learnt.
//!
//! Cost: the agent polls only while some connection's last write executed
//! a name still unknown, at most once per `ACTIVITY_POLL` (the agent's
//! database module), one read of the server's backend array per poll for
//! the ports of those connections.

use std::collections::HashMap;

/// Observations of one (connection, name) that must agree before its text
/// is learnt: one can be the previous statement's text (see the module
/// doc), two agreeing at different times of the service's traffic cannot
/// both be, unless the same mistake repeats, which the share below bounds.
pub const MIN_VOTES: u32 = 2;
/// Observations that decide a call site's names at the end of the audit
/// ([`TextRecovery::decide_by_call_site`]), from any of its connections.
/// One would do by the timing rule alone (see the module doc), but with
/// one, the warmed-service test once tied the slow search's text to 10
/// executions of another call site (`fetch_authors`): some single
/// observations are wrong in a way not yet explained, so two must agree.
pub const MIN_SITE_VOTES: u32 = 2;
/// The learnt text's share of the name's observations (80%: one wrong
/// observation in five is tolerated, a name seen right after two different
/// statements alike is not decided).
pub const MIN_AGREEMENT: f64 = 0.8;

/// A connection: (file descriptor, generation). The generation changes when
/// the fd number is reused for a new socket.
pub type ConnKey = (u32, u64);

#[derive(Debug, Default, Clone)]
struct ConnState {
    writes: u64,
    last_write_ns: u64,
    /// The statement name the last write executed, when its text is unknown.
    last_unknown: Option<String>,
    /// The previous read's idle row: (writes then, state_change, text).
    seen: Option<(u64, i64, String)>,
    /// The last writes: (their number, time).
    recent: std::collections::VecDeque<(u64, u64)>,
}

/// Writes remembered per connection, to find the first one after a read
/// was sent.
const RECENT_WRITES: usize = 8;

/// What a write makes the backend's last statement (its
/// `pg_stat_activity.query`): Parse, Bind and Query messages set it (Bind
/// to the bound statement's text), Execute keeps the Bind's, Sync,
/// Describe, Flush and Close leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastStatement<'a> {
    Unchanged,
    /// A statement whose text the wire showed.
    Known,
    /// A prepared statement whose text is unknown, by name.
    Unknown(&'a str),
}

/// What the messages of one write (in order) make the backend's last
/// statement; `known` tells whether a statement name's text is known.
pub fn last_statement<'a>(messages: &'a [crate::database::wire::Message], known: impl Fn(&str) -> bool) -> LastStatement<'a> {
    use crate::database::wire::Message;
    let mut last = LastStatement::Unchanged;
    for m in messages {
        match m {
            Message::Query { .. } | Message::Parse { .. } => last = LastStatement::Known,
            Message::Bind { statement, .. } => {
                last = if known(statement) { LastStatement::Known } else { LastStatement::Unknown(statement) };
            }
            _ => {}
        }
    }
    last
}

/// A connection worth asking the server about, as it stood before the poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub conn: ConnKey,
    pub statement: String,
    writes: u64,
    last_write_ns: u64,
}

/// What the server said about one connection's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub state: String,
    pub query: String,
    /// How long the backend had been in its state when our read arrived
    /// (`statement_timestamp() - state_change`), ns.
    pub state_for_ns: i64,
    /// `state_change` (the server's clock, ns since the epoch).
    pub state_change_ns: i64,
}

#[derive(Debug, Default)]
pub struct TextRecovery {
    conns: HashMap<ConnKey, ConnState>,
    votes: HashMap<(ConnKey, String), HashMap<String, u32>>,
    learnt: HashMap<(ConnKey, String), String>,
    /// Activity queries sent.
    pub polls: u64,
    /// Observations counted as votes.
    pub observations: u64,
}

impl TextRecovery {
    /// One write on `conn` at `ts_ns` (the kernel's monotonic clock), and
    /// what it makes the backend's last statement.
    pub fn on_write(&mut self, conn: ConnKey, ts_ns: u64, last: LastStatement<'_>) {
        let c = self.conns.entry(conn).or_default();
        c.writes += 1;
        c.last_write_ns = c.last_write_ns.max(ts_ns);
        if c.recent.len() == RECENT_WRITES {
            c.recent.pop_front();
        }
        c.recent.push_back((c.writes, ts_ns));
        match last {
            LastStatement::Unchanged => {}
            LastStatement::Known => c.last_unknown = None,
            LastStatement::Unknown(name) => {
                c.last_unknown = (!name.is_empty() && !self.learnt.contains_key(&(conn, name.to_string()))).then(|| name.to_string());
            }
        }
    }

    /// The connection is gone (its fd closed or reused).
    pub fn forget(&mut self, conn: ConnKey) {
        self.conns.remove(&conn);
    }

    /// Whether some connection's last write executed a name still unknown.
    pub fn wants_poll(&self) -> bool {
        self.conns.values().any(|c| c.last_unknown.is_some())
    }

    /// Connections whose last write executed an unknown name.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                let name = c.last_unknown.as_ref()?;
                Some(Candidate { conn: *k, statement: name.clone(), writes: c.writes, last_write_ns: c.last_write_ns })
            })
            .collect();
        out.sort_by_key(|c| c.conn);
        out
    }

    /// The answer to a poll of `candidates` sent at `sent_ns` and received
    /// at `received_ns` (the kernel's monotonic clock), handed over after
    /// every write made until the answer came was seen: `activity` gives
    /// each connection's backend row (connections missing from it, or
    /// ambiguous, are left out). Returns the texts learnt.
    pub fn observe(&mut self, candidates: &[Candidate], activity: &HashMap<ConnKey, Activity>, sent_ns: u64, received_ns: u64) -> Vec<(ConnKey, String, String)> {
        self.polls += 1;
        let mut learnt = Vec::new();
        for cand in candidates {
            let Some(c) = self.conns.get(&cand.conn) else { continue };
            let Some(a) = activity.get(&cand.conn) else { continue };
            // Written to since the candidate's write: the snapshot may show
            // a later write's statement, unless that write came after our
            // read was sent and the state the snapshot shows began before
            // it (it has lasted longer than our read's whole round trip,
            // which bounds how long before the snapshot the read was sent).
            let written_since = c.writes != cand.writes;
            if written_since {
                let next = c.recent.iter().find(|(n, _)| *n == cand.writes + 1).map(|(_, ts)| *ts);
                let began_before_sent = a.state_for_ns >= 0 && a.state_for_ns as u64 > received_ns.saturating_sub(sent_ns);
                if !(next.is_some_and(|ts| ts > sent_ns) && began_before_sent) {
                    continue;
                }
            }
            // Active: running a statement, which, begun after the write
            // (below), is this one (a driver writes the next statement
            // only once the previous one is done).
            let idle = a.state == "idle" || a.state == "idle in transaction";
            if !idle && a.state != "active" {
                continue;
            }
            let query = crate::database::analysis::normalize_sql(&a.query);
            if query.is_empty() || query.starts_with('<') || query.contains("perf-audit") {
                continue; // "<insufficient privilege>", our own, nothing
            }
            // Went idle after the write (see the module doc), or idle and
            // unchanged since a previous read with nothing written since.
            let after_write = a.state_for_ns >= 0 && (a.state_for_ns as u64) < sent_ns.saturating_sub(cand.last_write_ns);
            let seen = Some((cand.writes, a.state_change_ns, query.clone()));
            let Some(conn) = self.conns.get_mut(&cand.conn) else { continue };
            let stable = idle && !written_since && conn.seen == seen;
            conn.seen = if idle { seen } else { None };
            if !after_write && !stable {
                continue;
            }
            let key = (cand.conn, cand.statement.clone());
            if self.learnt.contains_key(&key) {
                continue;
            }
            self.observations += 1;
            let votes = self.votes.entry(key.clone()).or_default();
            *votes.entry(query).or_default() += 1;
            let total: u32 = votes.values().sum();
            let (top, n) = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(t, n)| (t.clone(), *n)).unwrap_or_default();
            if n >= MIN_VOTES && f64::from(n) >= MIN_AGREEMENT * f64::from(total) {
                self.learnt.insert(key.clone(), top.clone());
                if let Some(c) = self.conns.get_mut(&cand.conn)
                    && c.last_unknown.as_deref() == Some(cand.statement.as_str()) {
                        c.last_unknown = None;
                    }
                learnt.push((cand.conn, cand.statement.clone(), top));
            }
        }
        learnt
    }

    /// The learnt text of `statement` on `conn`.
    pub fn text(&self, conn: ConnKey, statement: &str) -> Option<&str> {
        self.learnt.get(&(conn, statement.to_string())).map(String::as_str)
    }

    /// Statement names (per connection) whose text was learnt.
    pub fn learnt_count(&self) -> usize {
        self.learnt.len()
    }

    /// Names left undecided on their connection (one observation: a
    /// statement rarely the last on its connection), decided by their call
    /// site instead: the names whose executions all come from one call site
    /// `site_of` gives pool their observations per site ([`MIN_SITE_VOTES`]
    /// agreeing, [`MIN_AGREEMENT`] of them), as the call site
    /// is taken to issue one statement when its texts are filled from each
    /// other (`analysis::fill_texts_from_call_sites`). Returns each pooled
    /// name's text.
    pub fn decide_by_call_site<S: Ord + Clone>(&self, site_of: impl Fn(ConnKey, &str) -> Option<S>) -> HashMap<(ConnKey, String), String> {
        type Pool<'a> = (Vec<&'a (ConnKey, String)>, HashMap<&'a str, u32>);
        let mut by_site: std::collections::BTreeMap<S, Pool<'_>> = std::collections::BTreeMap::new();
        for (key, votes) in &self.votes {
            if self.learnt.contains_key(key) {
                continue;
            }
            let Some(site) = site_of(key.0, &key.1) else { continue };
            let entry = by_site.entry(site).or_default();
            entry.0.push(key);
            for (text, n) in votes {
                *entry.1.entry(text.as_str()).or_default() += n;
            }
        }
        let mut out = HashMap::new();
        for (keys, votes) in by_site.into_values() {
            let total: u32 = votes.values().sum();
            let Some((top, n)) = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) else { continue };
            if *n >= MIN_SITE_VOTES && f64::from(*n) >= MIN_AGREEMENT * f64::from(total) {
                for key in keys {
                    out.insert(key.clone(), top.to_string());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle for `for_ms` when our read arrived.
    fn idle(q: &str, for_ms: f64) -> Activity {
        Activity { state: "idle".into(), query: q.into(), state_for_ns: (for_ms * 1e6) as i64, state_change_ns: 0 }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn a_name_is_learnt_from_two_agreeing_snapshots_of_a_backend_idle_since_the_write() {
        let mut r = TextRecovery::default();
        let c = (7, 1);
        r.on_write(c, 10 * MS, LastStatement::Unknown("sqlx_s_3"));
        assert!(r.wants_poll());
        let cands = r.candidates();
        assert_eq!(cands.len(), 1);
        // Sent 0.5 ms after the write; the backend went idle 0.3 ms before
        // our read arrived: after the write.
        let act = HashMap::from([(c, idle("SELECT id FROM users  WHERE id = $1", 0.3))]);
        assert!(r.observe(&cands, &act, 10 * MS + MS / 2, 10 * MS + MS / 2 + MS / 10).is_empty(), "one observation is not enough");
        r.on_write(c, 20 * MS, LastStatement::Unknown("sqlx_s_3"));
        let cands = r.candidates();
        let learnt = r.observe(&cands, &act, 21 * MS, 21 * MS + MS / 10);
        assert_eq!(learnt, vec![(c, "sqlx_s_3".to_string(), "SELECT id FROM users WHERE id = $1".to_string())]);
        assert_eq!(r.text(c, "sqlx_s_3"), Some("SELECT id FROM users WHERE id = $1"));
        assert_eq!(r.text((7, 2), "sqlx_s_3"), None, "another socket on the same fd is another connection");
        assert!(!r.wants_poll(), "nothing left to learn");
        assert_eq!((r.polls, r.observations), (2, 2));
    }

    #[test]
    fn a_backend_that_became_active_after_the_write_runs_it() {
        let mut r = TextRecovery::default();
        let c = (3, 1);
        for at in [10, 50] {
            r.on_write(c, at * MS, LastStatement::Unknown("s"));
            let cands = r.candidates();
            let act = Activity { state: "active".into(), query: "SELECT slow($1)".into(), state_for_ns: 4_000_000, state_change_ns: 0 };
            r.observe(&cands, &HashMap::from([(c, act)]), (at + 5) * MS, (at + 5) * MS + MS / 10);
        }
        assert_eq!(r.text(c, "s"), Some("SELECT slow($1)"));
    }

    #[test]
    fn single_observations_on_two_connections_agree_through_their_call_site() {
        let mut r = TextRecovery::default();
        let (a, b, c) = ((1, 1), (2, 1), (3, 1));
        for (conn, name, text) in [(a, "s4", "SELECT rare"), (b, "s7", "SELECT rare"), (c, "s2", "SELECT other")] {
            r.on_write(conn, 0, LastStatement::Unknown(name));
            let cands = r.candidates();
            r.observe(&cands, &HashMap::from([(conn, idle(text, 0.1))]), MS, MS + MS / 10);
        }
        assert_eq!(r.learnt_count(), 0, "one observation each");
        let site = |conn: ConnKey, _: &str| Some(if conn == c { "other_fn" } else { "rare_fn" });
        let decided = r.decide_by_call_site(site);
        assert_eq!(decided.len(), 2, "{decided:?}");
        assert_eq!(decided[&(a, "s4".to_string())], "SELECT rare");
        assert_eq!(decided[&(b, "s7".to_string())], "SELECT rare");
        // One observation decides nothing; contradicting ones neither.
        let alone = |conn: ConnKey, _: &str| Some(if conn == a { "a_fn" } else { "b_fn" });
        assert!(r.decide_by_call_site(alone).is_empty(), "a alone; b and c disagree");
        // Names whose executions come from several sites are left out.
        assert!(r.decide_by_call_site(|_: ConnKey, _: &str| None::<&str>).is_empty());
    }

    #[test]
    fn a_write_after_the_read_was_sent_leaves_an_older_state_readable() {
        let mut r = TextRecovery::default();
        let c = (4, 1);
        for (round, at) in [(0u64, 100 * MS), (1, 200 * MS)] {
            r.on_write(c, at, LastStatement::Unknown("s"));
            let cands = r.candidates();
            // Sent 10 ms after the write, answered 2 ms later; meanwhile the
            // service wrote again, 1 ms after the sending.
            let sent = at + 10 * MS;
            r.on_write(c, sent + MS, LastStatement::Unknown("t"));
            // Idle for 5 ms: since before the sending, after the write.
            let learnt = r.observe(&cands, &HashMap::from([(c, idle("SELECT s", 5.0))]), sent, sent + 2 * MS);
            assert_eq!(learnt.len() as u64, round, "round {round}");
        }
        assert_eq!(r.text(c, "s"), Some("SELECT s"));
        // A state that may have begun after the sending (shorter than the
        // round trip) may be the later write's.
        r.on_write(c, 300 * MS, LastStatement::Unknown("u"));
        let cands = r.candidates();
        r.on_write(c, 311 * MS, LastStatement::Unknown("v"));
        r.observe(&cands, &HashMap::from([(c, idle("SELECT v", 1.0))]), 310 * MS, 312 * MS);
        assert_eq!(r.observations, 2);
    }

    #[test]
    fn binds_set_the_last_statement_and_syncs_leave_it() {
        use crate::database::wire::{parse, tests::{bind_execute_sync, msg, parse_msg}};
        let known = |s: &str| s == "k";
        assert_eq!(last_statement(&parse(&bind_execute_sync("u")), known), LastStatement::Unknown("u"));
        assert_eq!(last_statement(&parse(&bind_execute_sync("k")), known), LastStatement::Known);
        assert_eq!(last_statement(&parse(&msg(b'S', &[])), known), LastStatement::Unchanged);
        let mut both = bind_execute_sync("u");
        both.extend(parse_msg("p", "SELECT 1"));
        assert_eq!(last_statement(&parse(&both), known), LastStatement::Known);
    }

    #[test]
    fn a_write_the_backend_has_not_processed_teaches_nothing() {
        let mut r = TextRecovery::default();
        let c = (7, 1);
        // Written 0.2 ms before our read was sent; the backend has been idle
        // for 0.5 ms: since before the write, its query is the previous one.
        for _ in 0..5 {
            r.on_write(c, 100 * MS, LastStatement::Unknown("s1"));
            let cands = r.candidates();
            r.observe(&cands, &HashMap::from([(c, idle("SELECT previous", 0.5))]), 100 * MS + MS / 5, 100 * MS + MS / 5 + MS / 10);
        }
        assert_eq!((r.observations, r.text(c, "s1")), (0, None));
        // ... unless a later read finds it idle since the same moment, and
        // nothing was written in between: then it had processed the write.
        let cands = r.candidates();
        let later = Activity { state_change_ns: 7, ..idle("SELECT 1", 20.5) };
        r.observe(&cands, &HashMap::from([(c, later.clone())]), 120 * MS, 120 * MS + MS / 10);
        assert_eq!(r.observations, 0, "the first sight of this idle period");
        let learnt = r.observe(&cands, &HashMap::from([(c, Activity { state_for_ns: 40_500_000, ..later.clone() })]), 140 * MS, 140 * MS + MS / 10);
        assert_eq!(r.observations, 1);
        assert!(learnt.is_empty());
        r.observe(&cands, &HashMap::from([(c, Activity { state_for_ns: 60_500_000, ..later })]), 160 * MS, 160 * MS + MS / 10);
        assert_eq!(r.text(c, "s1"), Some("SELECT 1"));
    }

    #[test]
    fn busy_written_since_or_contradicted_backends_teach_nothing() {
        let mut r = TextRecovery::default();
        let c = (7, 1);
        r.on_write(c, 0, LastStatement::Unknown("s1"));
        let cands = r.candidates();
        // Active since before the write: running an earlier statement.
        let active = HashMap::from([(c, Activity { state: "active".into(), query: "SELECT 0".into(), state_for_ns: 20_000_000, state_change_ns: 0 })]);
        r.observe(&cands, &active, 10 * MS, 10 * MS + MS / 10);
        r.observe(&cands, &active, 10 * MS, 10 * MS + MS / 10);
        // Written to between the candidates and the read's sending.
        r.on_write(c, 0, LastStatement::Unknown("s1"));
        r.observe(&cands, &HashMap::from([(c, idle("SELECT 1", 1.0))]), 10 * MS, 10 * MS + MS / 10);
        // No privilege to read the text.
        let cands = r.candidates();
        r.observe(&cands, &HashMap::from([(c, idle("<insufficient privilege>", 1.0))]), 10 * MS, 10 * MS + MS / 10);
        assert_eq!(r.observations, 0);
        // Two texts for one name, 2 against 1: not 80%.
        for q in ["SELECT 1", "SELECT 2", "SELECT 1"] {
            let cands = r.candidates();
            assert!(r.observe(&cands, &HashMap::from([(c, idle(q, 1.0))]), 10 * MS, 10 * MS + MS / 10).is_empty(), "{q}");
        }
        assert_eq!(r.text(c, "s1"), None);
        // A write that executed a known statement, or none, is no candidate.
        r.on_write(c, 0, LastStatement::Known);
        assert!(r.candidates().is_empty());
        r.on_write(c, 0, LastStatement::Unchanged);
        assert!(r.candidates().is_empty(), "a Sync alone changes nothing");
        assert!(!r.wants_poll());
    }
}
