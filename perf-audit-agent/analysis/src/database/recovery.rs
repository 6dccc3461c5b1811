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
//! and the backend is idle (it has finished everything it received) and
//! nothing more was written on that connection from well before the
//! snapshot until after it, the backend's last statement is that
//! execution, and `query` is the name's text. "Well before" is the guard
//! ([`TextRecovery::guard_ns`]): the write must be older than twice the
//! median round trip of the agent's own activity queries (at least 1 ms),
//! the time the write takes to reach the backend and the backend to pick it
//! up, as the agent's query, from the same host, takes both ways. What the
//! guard cannot exclude (a backend woken late on a loaded machine still
//! idle with the write in its socket: its `query` is then the previous
//! statement's) is outvoted: a name's text is learnt only when at least
//! [`MIN_VOTES`] observations agree and they are at least
//! [`MIN_AGREEMENT`] of that name's observations. A learnt text is the
//! connection's (the same name on another connection is another
//! statement), and it fills every execution of that name on that
//! connection, before and after it was learnt.
//!
//! Cost: the agent polls only while some connection's last write executed
//! a name still unknown and old enough, at most once per
//! `ACTIVITY_POLL` (the agent's database module), one indexed read of the
//! server's backend array per poll for the ports of those connections.

use std::collections::HashMap;

/// Observations of one (connection, name) that must agree before its text
/// is learnt: one can be the previous statement's text (see the module
/// doc), two agreeing at different times of the service's traffic cannot
/// both be, unless the same mistake repeats, which the share below bounds.
pub const MIN_VOTES: u32 = 2;
/// The learnt text's share of the name's observations (80%: one wrong
/// observation in five is tolerated, a name seen right after two different
/// statements alike is not decided).
pub const MIN_AGREEMENT: f64 = 0.8;
/// The guard's floor: a write younger than this is never attributed.
pub const MIN_GUARD_NS: u64 = 1_000_000;

/// A connection: (file descriptor, generation). The generation changes when
/// the fd number is reused for a new socket.
pub type ConnKey = (u32, u64);

#[derive(Debug, Default, Clone)]
struct ConnState {
    writes: u64,
    last_write_ns: u64,
    /// The statement name the last write executed, when its text is unknown.
    last_unknown: Option<String>,
}

/// A connection worth asking the server about, as it stood before the poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub conn: ConnKey,
    pub statement: String,
    writes: u64,
}

/// What the server said about one connection's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub state: String,
    pub query: String,
}

#[derive(Debug, Default)]
pub struct TextRecovery {
    conns: HashMap<ConnKey, ConnState>,
    votes: HashMap<(ConnKey, String), HashMap<String, u32>>,
    learnt: HashMap<(ConnKey, String), String>,
    rtts_ns: Vec<u64>,
    /// Activity queries sent.
    pub polls: u64,
    /// Observations counted as votes.
    pub observations: u64,
}

impl TextRecovery {
    /// One write on `conn` at `ts_ns` (the kernel's monotonic clock);
    /// `last_execution`: the statement name of the last execution it
    /// started and whether its text is known (None: it started none, and
    /// may have changed the backend's last statement: a Parse alone).
    pub fn on_write(&mut self, conn: ConnKey, ts_ns: u64, last_execution: Option<(&str, bool)>) {
        let c = self.conns.entry(conn).or_default();
        c.writes += 1;
        c.last_write_ns = c.last_write_ns.max(ts_ns);
        c.last_unknown = match last_execution {
            Some((name, false)) if !name.is_empty() && !self.learnt.contains_key(&(conn, name.to_string())) => Some(name.to_string()),
            _ => None,
        };
    }

    /// The connection is gone (its fd closed or reused).
    pub fn forget(&mut self, conn: ConnKey) {
        self.conns.remove(&conn);
    }

    /// Whether some connection's last write executed a name still unknown.
    pub fn wants_poll(&self) -> bool {
        self.conns.values().any(|c| c.last_unknown.is_some())
    }

    /// A write younger than this at the snapshot is not attributed: twice
    /// the median round trip of the agent's activity queries, at least
    /// [`MIN_GUARD_NS`] (2 ms until one was measured).
    pub fn guard_ns(&self) -> u64 {
        if self.rtts_ns.is_empty() {
            return 2 * MIN_GUARD_NS;
        }
        let mut r = self.rtts_ns.clone();
        r.sort_unstable();
        (2 * r[r.len() / 2]).max(MIN_GUARD_NS)
    }

    /// Connections whose last write executed an unknown name and is older
    /// than the guard at `now_ns`.
    pub fn candidates(&self, now_ns: u64) -> Vec<Candidate> {
        let guard = self.guard_ns();
        let mut out: Vec<Candidate> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                let name = c.last_unknown.as_ref()?;
                (c.last_write_ns + guard <= now_ns).then(|| Candidate { conn: *k, statement: name.clone(), writes: c.writes })
            })
            .collect();
        out.sort_by(|a, b| a.conn.cmp(&b.conn));
        out
    }

    /// The answer to a poll of `candidates`, read after every write made
    /// until the answer came was seen: `activity` gives each connection's
    /// backend row (connections missing from it, or ambiguous, are left
    /// out); `rtt_ns` is the poll's round trip. Returns the texts learnt.
    pub fn observe(&mut self, candidates: &[Candidate], activity: &HashMap<ConnKey, Activity>, rtt_ns: u64) -> Vec<(ConnKey, String, String)> {
        self.polls += 1;
        self.rtts_ns.push(rtt_ns);
        if self.rtts_ns.len() > 64 {
            self.rtts_ns.remove(0);
        }
        let mut learnt = Vec::new();
        for cand in candidates {
            // Written to since: the backend may have moved on.
            if self.conns.get(&cand.conn).is_none_or(|c| c.writes != cand.writes) {
                continue;
            }
            let Some(a) = activity.get(&cand.conn) else { continue };
            if !(a.state == "idle" || a.state == "idle in transaction") {
                continue;
            }
            let query = crate::database::analysis::normalize_sql(&a.query);
            if query.is_empty() || query.starts_with('<') || query.contains("perf-audit") {
                continue; // "<insufficient privilege>", our own, nothing
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(q: &str) -> Activity {
        Activity { state: "idle".into(), query: q.into() }
    }

    #[test]
    fn a_name_is_learnt_from_two_agreeing_snapshots_of_an_idle_backend() {
        let mut r = TextRecovery::default();
        let c = (7, 1);
        r.on_write(c, 1_000_000, Some(("sqlx_s_3", false)));
        assert!(r.wants_poll());
        // Too young for the guard (2 ms before any round trip was measured).
        assert!(r.candidates(2_000_000).is_empty());
        let cands = r.candidates(3_000_000);
        assert_eq!(cands.len(), 1);
        let act = HashMap::from([(c, idle("SELECT id FROM users  WHERE id = $1"))]);
        assert!(r.observe(&cands, &act, 200_000).is_empty(), "one observation is not enough");
        assert_eq!(r.guard_ns(), MIN_GUARD_NS, "2 x 0.2 ms is under the floor");
        r.on_write(c, 10_000_000, Some(("sqlx_s_3", false)));
        let cands = r.candidates(12_000_000);
        let learnt = r.observe(&cands, &act, 200_000);
        assert_eq!(learnt, vec![(c, "sqlx_s_3".to_string(), "SELECT id FROM users WHERE id = $1".to_string())]);
        assert_eq!(r.text(c, "sqlx_s_3"), Some("SELECT id FROM users WHERE id = $1"));
        assert_eq!(r.text((7, 2), "sqlx_s_3"), None, "another socket on the same fd is another connection");
        assert!(!r.wants_poll(), "nothing left to learn");
    }

    #[test]
    fn busy_written_since_or_contradicted_backends_teach_nothing() {
        let mut r = TextRecovery::default();
        let c = (7, 1);
        r.on_write(c, 0, Some(("s1", false)));
        let cands = r.candidates(10_000_000);
        // Active: the backend may be running a later write.
        let active = HashMap::from([(c, Activity { state: "active".into(), query: "SELECT 1".into() })]);
        r.observe(&cands, &active, 100_000);
        // Written to between the snapshot and its answer.
        r.on_write(c, 0, Some(("s1", false)));
        r.observe(&cands, &HashMap::from([(c, idle("SELECT 1"))]), 100_000);
        // No privilege to read the text.
        let cands = r.candidates(10_000_000);
        r.observe(&cands, &HashMap::from([(c, idle("<insufficient privilege>"))]), 100_000);
        assert_eq!(r.observations, 0);
        // Two texts for one name, 2 against 1: not 80%.
        for q in ["SELECT 1", "SELECT 2", "SELECT 1"] {
            let cands = r.candidates(10_000_000);
            assert!(r.observe(&cands, &HashMap::from([(c, idle(q))]), 100_000).is_empty(), "{q}");
        }
        assert_eq!(r.text(c, "s1"), None);
        // A write that executed a known statement, or none, is no candidate.
        r.on_write(c, 0, Some(("s2", true)));
        assert!(r.candidates(10_000_000).is_empty());
        r.on_write(c, 0, None);
        assert!(!r.wants_poll());
    }

    #[test]
    fn the_guard_follows_the_measured_round_trip() {
        let mut r = TextRecovery::default();
        for rtt in [4_000_000, 5_000_000, 6_000_000] {
            r.observe(&[], &HashMap::new(), rtt);
        }
        assert_eq!(r.guard_ns(), 10_000_000);
        assert_eq!(r.polls, 3);
    }
}
