//! Chatty requests: one request making many sequential round trips from
//! *different* call sites, outside any transaction. Pure: executions in,
//! patterns out.
//!
//! **How they are found.** The wire shows no request boundaries, but each
//! execution carries its time, its connection and its stack: the innermost
//! owner frame (the call site) and the owner frames above it. The function
//! that sequences a request's statements (the handler, or a service
//! function it calls) is on the stack of every one of them, each time at a
//! *different line* (the line awaiting that step); a middleware's
//! `next.run(req).await` is on every stack too, but always at the same
//! line, so it never sequences anything. So, for every owner function seen
//! at two or more lines, or issuing two or more statements itself (the
//! kernel fingerprints a stack by its innermost frames: a function whose
//! statements all take one driver path comes out at one line, the first
//! seen) — the *sequencer* candidates — the executions under
//! it, in time order over the whole process (tokio moves a task between
//! workers at its awaits), are cut into chains:
//!
//! - an execution continues an open chain when the chain has not run its
//!   call site yet and its last execution is at most `band` x the
//!   sequencer's fast gap (10th percentile of the gaps between its
//!   consecutive executions: one round trip, wherever the database is)
//!   before it; the oldest such chain continues first (requests running at
//!   once advance in turn);
//! - a step is a (call site, statement) pair: call sites whose stacks the
//!   kernel fingerprinted alike (the same library path, the owner's frames
//!   beyond the fingerprint's reach) are still told apart by their text;
//! - a step run again starts a new chain (the next request runs the
//!   same steps again: this is what separates back-to-back requests of a
//!   closed-loop client, whose gaps look like round trips), except right
//!   after itself: a loop. The request waits for each of its iterations,
//!   so each counts as a round trip while the loop is shorter than the
//!   N+1 rule's burst (`loop_burst`); a longer loop is the N+1 rule's
//!   finding and counts once here (one finding per cause: a page query
//!   plus a loop of 20 lookups is an N+1, not a chatty request);
//! - executions sent in one write (same time stamp) are pipelined: one
//!   round trip;
//! - when the agent numbered the kernel's chains of round trips
//!   (`Execution::chain`: one task's statements, each sent right after the
//!   previous answer), an execution only continues an open chain of its
//!   own kernel chain, however long the gap: a slow step (a write waiting
//!   for the WAL, a loaded machine) no longer splits a request;
//! - transaction control and every statement inside BEGIN..COMMIT on its
//!   connection are left out and close the chains they would join: a
//!   transaction keeps its statements on one connection in order by
//!   design, and its own cost is the per-item-transaction rule's.
//!
//! A chain of at least `min_round_trips` round trips with at least
//! `min_statements` distinct statements is a chatty request; a sequencer is
//! reported when at least `min_requests` such chains were seen and they
//! hold at least `min_share` of its executions (a startup routine that runs
//! once, or a handler that is chatty once in a while, is not a per-request
//! cost). When two sequencers nest (a service function and the handler
//! calling it), the inner one is kept, and the outer one only when most of
//! its chained executions are not the inner one's.
//!
//! Known limits: many requests of the same handler in flight at once
//! shorten the gaps between its consecutive executions below a round trip,
//! so the fast gap under-estimates it and chains break (found in part or
//! not at all); a statement much slower than the others (10x the fast gap)
//! splits a chain in two.

use std::collections::{BTreeMap, BTreeSet};

use super::analysis::{CallSite, Execution, UNKNOWN_TEXT, closes_transaction, is_transaction_control, opens_transaction};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChattyRule {
    /// Round trips per request (a loop of `loop_burst` or more counted once).
    pub min_round_trips: usize,
    /// Distinct statements per request.
    pub min_statements: usize,
    /// Chains (requests) seen at the sequencer.
    pub min_requests: usize,
    /// Share of the sequencer's executions in chatty chains.
    pub min_share: f64,
    /// A gap links two steps up to this factor of the sequencer's fast gap.
    pub band: f64,
    /// A step repeated this many times in a row is the N+1 rule's loop
    /// (its `min_executions`): counted as one round trip here.
    pub loop_burst: usize,
}

impl Default for ChattyRule {
    /// 5 round trips: the N+1 rule's burst size, and past what an ordinary
    /// request needs (authorize, load, write, audit: up to 4); 2 distinct
    /// statements: one statement alone is a loop (the N+1 rule's), and a
    /// write of a row and its children (an item, then its tags one by one)
    /// is two statements making many round trips; 20 requests: the
    /// shape is a per-request cost seen from the first few dozen requests
    /// (30 s at 1 request/s), not a startup routine or an admin action run
    /// a few times, and a median over 20 is stable; 50% of the
    /// sequencer's executions, as the N+1 rule asks of a call site; 10x
    /// the fast gap: different statements take different server times
    /// (the N+1 rule's 5x is for one statement repeated); loops of 5 or
    /// more: the N+1 rule's burst size.
    fn default() -> Self {
        ChattyRule { min_round_trips: 5, min_statements: 2, min_requests: 20, min_share: 0.5, band: 10.0, loop_burst: 5 }
    }
}

impl ChattyRule {
    pub fn describe(&self) -> String {
        format!(
            "at least {} sequential round trips per request under one function (the one awaiting its call sites at different lines, keyed by its full path and file), at least {} distinct statements, each sent by the same task right after the previous answer (the kernel's chain of round trips, any gap), or, without chains, within {}x of that function's fast gap (10th percentile of the gaps between its consecutive executions, one round trip wherever the database is) after the previous one, outside any transaction, in at least {} requests holding at least {:.0}% of that function's executions; a loop's iterations count each below {} in a row, once from {} (an N+1, reported by its own rule); pipelined statements count once",
            self.min_round_trips,
            self.min_statements,
            self.band,
            self.min_requests,
            self.min_share * 100.0,
            self.loop_burst,
            self.loop_burst
        )
    }
}

/// A function whose requests make many sequential round trips.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ChattyRequest {
    /// The sequencer (function and file) and the line of its first step.
    pub function: CallSite,
    /// Chatty chains seen: about one per request.
    pub requests: u64,
    pub executions_in_requests: u64,
    /// Executions under this function, outside transactions.
    pub executions: u64,
    /// Median and largest round trips per request.
    pub median_round_trips: u64,
    pub max_round_trips: u64,
    /// Median distinct statements per request.
    pub median_statements: u64,
    /// Median time from the first to the last execution of a request.
    pub median_request_ms: f64,
    /// Median gap between consecutive steps: one round trip, as measured.
    pub round_trip_ms: f64,
    /// Round trips saved if the request made one: (median - 1) x round trip.
    pub saved_ms_per_request: f64,
    /// Whether any step writes (INSERT, UPDATE, DELETE, MERGE...).
    pub writes: bool,
    /// The steps of the longest chain, in order (call site, statement).
    pub steps: Vec<(CallSite, String)>,
}

/// Writes data: a transaction is only advised when one of these is involved.
pub fn is_write(sql: &str) -> bool {
    let q = sql.trim_start().to_ascii_uppercase();
    ["INSERT", "UPDATE", "DELETE", "MERGE", "COPY"].iter().any(|k| q.starts_with(k)) || (q.starts_with("WITH") && [" INSERT ", " UPDATE ", " DELETE "].iter().any(|k| q.contains(k)))
}

type Key = (String, Option<String>);

fn key(c: &CallSite) -> Key {
    (c.function.clone(), c.file.clone())
}

struct Open {
    /// The kernel's chain of round trips (one task's statements, each sent
    /// after the previous answer); 0 when the evidence has none.
    chain: u64,
    first: u64,
    last: u64,
    last_site: usize,
    sites: BTreeSet<usize>,
    statements: BTreeSet<String>,
    members: Vec<usize>,
    step_gaps: Vec<u64>,
    /// Round trips of each step in turn (a loop's iterations), pipelined
    /// statements not counted.
    runs: Vec<usize>,
}

impl Open {
    /// Sequential round trips, a loop of `loop_burst` or more counted once.
    fn round_trips(&self, rule: &ChattyRule) -> usize {
        self.runs.iter().map(|&r| if r >= rule.loop_burst { 1 } else { r }).sum()
    }
}

pub fn detect_chatty_requests(executions: &[Execution], rule: &ChattyRule) -> Vec<ChattyRequest> {
    // Executions outside transactions, with a call site; inside ones mark a boundary.
    let mut order: Vec<usize> = (0..executions.len()).collect();
    order.sort_by_key(|&i| (executions[i].fd, executions[i].ts_ns));
    let mut in_tx = vec![false; executions.len()];
    let mut open_fd: Option<u32> = None;
    for &i in &order {
        let e = &executions[i];
        let sql = e.sql.as_deref().unwrap_or("");
        if open_fd.is_some_and(|fd| fd != e.fd) {
            open_fd = None;
        }
        if opens_transaction(sql) {
            open_fd = Some(e.fd);
            in_tx[i] = true;
        } else if open_fd.is_some() {
            in_tx[i] = true;
            if closes_transaction(sql) {
                open_fd = None;
            }
        } else if e.sql.as_deref().is_some_and(is_transaction_control) {
            in_tx[i] = true;
        }
    }
    let mut by_time: Vec<usize> = (0..executions.len()).filter(|&i| executions[i].site.is_some()).collect();
    by_time.sort_by_key(|&i| (executions[i].ts_ns, i));

    // Sequencer candidates: owner functions seen at two or more lines, or
    // issuing two or more statements themselves (their call sites' stacks
    // fingerprinted alike in the kernel come out at one line: see below).
    let mut lines: BTreeMap<Key, BTreeSet<Option<u32>>> = BTreeMap::new();
    let mut texts: BTreeMap<Key, BTreeSet<Option<&str>>> = BTreeMap::new();
    for &i in &by_time {
        if in_tx[i] {
            continue;
        }
        let e = &executions[i];
        for f in e.site.iter().chain(e.callers.iter()) {
            lines.entry(key(f)).or_default().insert(f.line);
        }
        texts.entry(key(e.site.as_ref().unwrap())).or_default().insert(e.sql.as_deref());
    }
    // A step is a (call site, statement): two call sites whose stacks share
    // a fingerprint are one site on the wire (see `kernel::db`), their
    // statements still tell them apart.
    let step_ids: BTreeMap<(&CallSite, Option<&str>), usize> = {
        let mut m = BTreeMap::new();
        for &i in &by_time {
            let next = m.len();
            m.entry((executions[i].site.as_ref().unwrap(), executions[i].sql.as_deref())).or_insert(next);
        }
        m
    };
    let mut found: Vec<(ChattyRequest, BTreeSet<usize>)> = Vec::new();
    for (seq, seen_at) in lines {
        if seen_at.len() < 2 && texts.get(&seq).is_none_or(|t| t.len() < 2) {
            continue;
        }
        // Executions under this sequencer, and the line each is at in it.
        let frame_of = |e: &Execution| -> Option<CallSite> { e.site.iter().chain(e.callers.iter()).find(|f| key(f) == seq).cloned() };
        let members: Vec<usize> = by_time.iter().copied().filter(|&i| frame_of(&executions[i]).is_some()).collect();
        let mut gaps: Vec<u64> = members
            .windows(2)
            .filter(|w| !in_tx[w[0]] && !in_tx[w[1]])
            .map(|w| executions[w[1]].ts_ns - executions[w[0]].ts_ns)
            .filter(|g| *g > 0)
            .collect();
        if gaps.is_empty() {
            continue;
        }
        gaps.sort_unstable();
        let fast = gaps[gaps.len() / 10].max(1) as f64;
        let hi = fast * rule.band;
        let total = members.iter().filter(|&&i| !in_tx[i]).count();
        let mut open: Vec<Open> = Vec::new();
        let mut closed: Vec<Open> = Vec::new();
        for &i in &members {
            let e = &executions[i];
            if in_tx[i] {
                // A transaction on the way: the chains it would join end here.
                closed.append(&mut open);
                continue;
            }
            let site = step_ids[&(e.site.as_ref().unwrap(), e.sql.as_deref())];
            let statement = e.sql.clone().unwrap_or_else(|| format!("{UNKNOWN_TEXT} at line {:?}", e.site.as_ref().and_then(|s| s.line)));
            let mut k = 0;
            while k < open.len() {
                // One kernel chain is one task's round trips in turn: a slow
                // step does not cut it.
                let same_task = e.chain != 0 && open[k].chain == e.chain;
                if !same_task && (e.ts_ns - open[k].last) as f64 > hi {
                    closed.push(open.swap_remove(k));
                } else {
                    k += 1;
                }
            }
            // Pipelined with, or a loop continuing, the chain's last step.
            if let Some(c) = open.iter_mut().filter(|c| c.chain == e.chain && (c.last_site == site || c.last == e.ts_ns)).min_by_key(|c| c.last) {
                if c.last == e.ts_ns && c.last_site != site {
                    c.sites.insert(site);
                    c.statements.insert(statement);
                    c.last_site = site;
                } else if c.last != e.ts_ns {
                    // One more iteration of a loop: a round trip waited for.
                    c.step_gaps.push(e.ts_ns - c.last);
                    *c.runs.last_mut().unwrap() += 1;
                }
                c.last = e.ts_ns;
                c.members.push(i);
                continue;
            }
            if e.chain != 0 {
                // The task runs a step again: its next request.
                if let Some(k) = open.iter().position(|c| c.chain == e.chain && c.sites.contains(&site)) {
                    closed.push(open.swap_remove(k));
                }
            }
            match open.iter_mut().filter(|c| c.chain == e.chain && !c.sites.contains(&site)).min_by_key(|c| c.last) {
                Some(c) => {
                    c.step_gaps.push(e.ts_ns - c.last);
                    c.runs.push(1);
                    c.last = e.ts_ns;
                    c.last_site = site;
                    c.sites.insert(site);
                    c.statements.insert(statement);
                    c.members.push(i);
                }
                None => open.push(Open {
                    chain: e.chain,
                    first: e.ts_ns,
                    last: e.ts_ns,
                    last_site: site,
                    sites: BTreeSet::from([site]),
                    statements: BTreeSet::from([statement]),
                    members: vec![i],
                    step_gaps: Vec::new(),
                    runs: vec![1],
                }),
            }
        }
        closed.append(&mut open);
        let chatty: Vec<Open> = closed.into_iter().filter(|c| c.round_trips(rule) >= rule.min_round_trips && c.statements.len() >= rule.min_statements).collect();
        let in_chains: usize = chatty.iter().map(|c| c.members.len()).sum();
        if chatty.len() < rule.min_requests || (in_chains as f64) < rule.min_share * total as f64 {
            continue;
        }
        let median = |mut v: Vec<u64>| -> u64 {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let median_round_trips = median(chatty.iter().map(|c| c.round_trips(rule) as u64).collect());
        let round_trip_ns = median(chatty.iter().flat_map(|c| c.step_gaps.iter().copied()).collect());
        // Microseconds: report.json reads back what it wrote.
        let round_trip_ms = (round_trip_ns as f64 / 1e3).round() / 1e3;
        let longest = chatty.iter().max_by_key(|c| (c.round_trips(rule), std::cmp::Reverse(c.first))).unwrap();
        let mut steps: Vec<(CallSite, String)> = Vec::new();
        for &i in &longest.members {
            let e = &executions[i];
            let s = e.site.clone().unwrap();
            let sql = e.sql.clone().unwrap_or_else(|| UNKNOWN_TEXT.into());
            if steps.last().is_none_or(|(last, last_sql)| *last != s || *last_sql != sql) {
                steps.push((s, sql));
            }
        }
        let first_frame = frame_of(&executions[longest.members[0]]).unwrap();
        let members: BTreeSet<usize> = chatty.iter().flat_map(|c| c.members.iter().copied()).collect();
        found.push((
            ChattyRequest {
                function: first_frame,
                requests: chatty.len() as u64,
                executions_in_requests: in_chains as u64,
                executions: total as u64,
                median_round_trips,
                max_round_trips: chatty.iter().map(|c| c.round_trips(rule) as u64).max().unwrap_or(0),
                median_statements: median(chatty.iter().map(|c| c.statements.len() as u64).collect()),
                median_request_ms: median(chatty.iter().map(|c| c.last - c.first).collect()) as f64 / 1e6,
                round_trip_ms,
                saved_ms_per_request: (median_round_trips.saturating_sub(1) as f64 * round_trip_ms * 1e3).round() / 1e3,
                writes: chatty.iter().flat_map(|c| c.members.iter()).any(|&i| executions[i].sql.as_deref().is_some_and(is_write)),
                steps,
            },
            members,
        ));
    }
    // Nested sequencers: the inner one (its frame deepest in its stacks:
    // the code that makes the calls) first; an outer one is kept only when
    // most of its chained executions are its own (a handler adding a pool
    // check to a chatty service function is that function's finding; a
    // handler making 20 round trips around a chatty helper's 5 is its own).
    let depth = |c: &ChattyRequest, members: &BTreeSet<usize>| -> usize {
        members
            .iter()
            .map(|&i| {
                let e = &executions[i];
                e.site.iter().chain(e.callers.iter()).position(|f| key(f) == key(&c.function)).unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    };
    found.sort_by(|a, b| {
        depth(&a.0, &a.1)
            .cmp(&depth(&b.0, &b.1))
            .then(b.0.median_round_trips.cmp(&a.0.median_round_trips))
            .then(a.0.function.cmp(&b.0.function))
    });
    let mut kept: Vec<(ChattyRequest, BTreeSet<usize>)> = Vec::new();
    for (c, m) in found {
        if kept.iter().any(|(_, k)| 2 * m.intersection(k).count() > m.len()) {
            continue;
        }
        kept.push((c, m));
    }
    let mut out: Vec<ChattyRequest> = kept.into_iter().map(|(c, _)| c).collect();
    out.sort_by(|a, b| b.saved_ms_per_request.total_cmp(&a.saved_ms_per_request).then(a.function.cmp(&b.function)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(function: &str, line: u32) -> CallSite {
        CallSite { function: function.into(), file: Some(format!("/svc/src/{}.rs", function.rsplit("::").nth(1).unwrap_or("main"))), line: Some(line), ..Default::default() }
    }

    /// A fixed-seed uniform generator in (0, 1].
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        }
    }

    const MW: (&str, u32) = ("svc::middleware::track", 20);

    /// One statement issued by `helper` (called by `handler` at `line`),
    /// under the middleware.
    fn exec(ts: f64, tid: u32, fd: u32, sql: &str, helper: (&str, u32), handler: Option<(&str, u32)>) -> Execution {
        let mut callers = Vec::new();
        if let Some((h, l)) = handler {
            callers.push(cs(h, l));
        }
        callers.push(cs(MW.0, MW.1));
        Execution { ts_ns: (ts * 1e6) as u64, tid, fd, sql: Some(sql.into()), site: Some(cs(helper.0, helper.1)), callers: callers.into(), chain: 0, params: None }
    }

    /// A profile page handler: six lookups one after the other, each from
    /// its own db function, awaited at its own line of the handler.
    const PROFILE_STEPS: [(&str, &str, u32); 6] = [
        ("SELECT id, name FROM users WHERE id = $1", "svc::db::user", 40),
        ("SELECT plan FROM subscriptions WHERE user_id = $1", "svc::db::subscription", 41),
        ("SELECT count(*) FROM orders WHERE user_id = $1", "svc::db::order_count", 42),
        ("SELECT tag FROM user_tags WHERE user_id = $1", "svc::db::tags", 43),
        ("SELECT avatar FROM avatars WHERE user_id = $1", "svc::db::avatar", 44),
        ("SELECT theme FROM settings WHERE user_id = $1", "svc::db::settings", 45),
    ];

    /// Requests at random (exponential gaps, `interval_ms` on average) on
    /// 2 workers and 5 connections: the chatty handler, its twin doing the
    /// same in one query, a handler doing 2 lookups and one issuing its own
    /// statements directly at 6 lines of one function.
    fn service(rtt: f64, interval_ms: f64, seed: u64, chatty: bool) -> Vec<Execution> {
        let mut rng = Lcg(seed);
        let mut out = Vec::new();
        let mut t = 0.0;
        for r in 0..300u32 {
            t += -rng.next().ln() * interval_ms;
            let mut at = t;
            let conn = |rng: &mut Lcg| 10 + (rng.next() * 5.0) as u32;
            let tid = |rng: &mut Lcg| 1 + (rng.next() * 2.0) as u32;
            match r % 3 {
                0 if chatty => {
                    for (k, (sql, f, l)) in PROFILE_STEPS.iter().enumerate() {
                        at += (rtt + 0.03 + 0.1 * rng.next()) * if k == 0 { 0.0 } else { 1.0 };
                        out.push(exec(at, tid(&mut rng), conn(&mut rng), sql, (f, 10 + k as u32), Some(("svc::handlers::profile", *l))));
                    }
                }
                0 => {
                    let sql = "SELECT u.id, u.name, s.plan, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u JOIN subscriptions s ON s.user_id = u.id WHERE u.id = $1";
                    out.push(exec(at, tid(&mut rng), conn(&mut rng), sql, ("svc::db::profile_page", 70), Some(("svc::handlers::profile_fast", 50))));
                }
                1 => {
                    out.push(exec(at, tid(&mut rng), conn(&mut rng), "SELECT id FROM sessions WHERE token = $1", ("svc::db::session", 12), Some(("svc::handlers::feed", 60))));
                    at += rtt + 0.05;
                    out.push(exec(at, tid(&mut rng), conn(&mut rng), "SELECT id, body FROM posts ORDER BY id DESC LIMIT 20", ("svc::db::posts", 30), Some(("svc::handlers::feed", 61))));
                }
                _ => {
                    // Statements issued by the handler itself, 3 lines; not chatty (3 < 5).
                    for (k, sql) in ["SELECT 1 FROM a WHERE id = $1", "SELECT 1 FROM b WHERE id = $1", "SELECT 1 FROM c WHERE id = $1"].iter().enumerate() {
                        at += if k == 0 { 0.0 } else { rtt + 0.05 };
                        out.push(exec(at, tid(&mut rng), conn(&mut rng), sql, ("svc::handlers::small", 80 + k as u32), None));
                    }
                }
            }
        }
        out.sort_by_key(|e| e.ts_ns);
        out
    }

    #[test]
    fn six_sequential_round_trips_from_different_call_sites_are_a_chatty_request_at_the_handler() {
        for (rtt, interval, seed) in [(0.1, 20.0, 1), (3.0, 60.0, 2), (10.0, 200.0, 3)] {
            let found = detect_chatty_requests(&service(rtt, interval, seed, true), &ChattyRule::default());
            assert_eq!(found.len(), 1, "rtt {rtt}: {found:#?}");
            let c = &found[0];
            assert_eq!((c.function.function.as_str(), c.function.line), ("svc::handlers::profile", Some(40)), "rtt {rtt}");
            assert_eq!((c.median_round_trips, c.median_statements, c.steps.len()), (6, 6, 6), "rtt {rtt}: {c:#?}");
            assert!(c.requests >= 90 && c.requests <= 100, "rtt {rtt}: {c:#?}");
            assert!(c.round_trip_ms >= rtt && c.round_trip_ms <= rtt + 0.2, "rtt {rtt}: {c:#?}");
            assert!((c.saved_ms_per_request - 5.0 * c.round_trip_ms).abs() < 1e-3);
            assert!(!c.writes);
        }
    }

    /// Two call sites of the same library path fingerprinted alike in the
    /// kernel come out as one stack (the first one seen): steps 2, 3 and 5
    /// carry the stacks of steps 1 and 4; their statements tell them apart.
    #[test]
    fn call_sites_merged_by_their_stack_fingerprint_are_still_separate_steps() {
        let mut execs = service(0.2, 20.0, 6, true);
        let stack_of = |line: u32, execs: &[Execution]| execs.iter().find(|e| e.callers.first().and_then(|c| c.line) == Some(line)).map(|e| (e.site.clone(), e.callers.clone())).unwrap();
        let (first, fourth) = (stack_of(40, &execs), stack_of(43, &execs));
        for e in execs.iter_mut() {
            match e.callers.first().and_then(|c| c.line) {
                Some(41 | 42) => (e.site, e.callers) = first.clone(),
                Some(44) => (e.site, e.callers) = fourth.clone(),
                _ => {}
            }
        }
        let found = detect_chatty_requests(&execs, &ChattyRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].function.function.as_str(), found[0].median_round_trips, found[0].median_statements), ("svc::handlers::profile", 6, 6));
    }

    #[test]
    fn the_twin_in_one_query_two_lookups_and_a_middleware_are_not_chatty() {
        for (rtt, interval, seed) in [(0.1, 20.0, 4), (3.0, 60.0, 5)] {
            let found = detect_chatty_requests(&service(rtt, interval, seed, false), &ChattyRule::default());
            assert!(found.is_empty(), "rtt {rtt}: {found:#?}");
        }
    }

    /// A closed-loop client: each request right after the previous answer,
    /// so the gap between two requests looks like a round trip; 2 lookups
    /// and a write per request: the next request runs the same call sites
    /// again, which ends the chain.
    #[test]
    fn back_to_back_requests_of_a_small_handler_do_not_join_into_one_chain() {
        let mut out = Vec::new();
        let mut t = 0.0;
        for _ in 0..500 {
            for (k, sql) in ["SELECT id FROM users WHERE id = $1", "SELECT n FROM carts WHERE user_id = $1", "UPDATE carts SET n = n + 1 WHERE user_id = $1"].iter().enumerate() {
                out.push(exec(t, 1, 10, sql, ("svc::db::step", 10 + k as u32), Some(("svc::handlers::add", 20 + k as u32))));
                t += 0.2;
            }
        }
        assert!(detect_chatty_requests(&out, &ChattyRule::default()).is_empty());
    }

    #[test]
    fn statements_inside_a_transaction_and_a_loop_are_not_chatty() {
        let mut out = Vec::new();
        let mut t = 0.0;
        for r in 0..50u32 {
            // A handler running 6 statements in one transaction.
            let fd = 10 + r % 3;
            let mut steps: Vec<(String, u32)> = vec![("BEGIN".into(), 29)];
            steps.extend(PROFILE_STEPS.iter().map(|(s, _, l)| (s.to_string(), *l)));
            steps.push(("COMMIT".into(), 49));
            for (sql, l) in steps {
                out.push(exec(t, 1, fd, &sql, ("svc::handlers::checkout", l), None));
                t += 0.3;
            }
            // A page query then an N+1 loop of 20 lookups and one more query.
            out.push(exec(t, 2, fd, "SELECT id FROM posts LIMIT 30", ("svc::db::page", 5), Some(("svc::handlers::feed", 10))));
            for _ in 0..20 {
                t += 0.3;
                out.push(exec(t, 2, fd, "SELECT name FROM users WHERE id = $1", ("svc::db::author", 8), Some(("svc::handlers::feed", 11))));
            }
            t += 0.3;
            out.push(exec(t, 2, fd, "SELECT 1 FROM flags", ("svc::db::flags", 3), Some(("svc::handlers::feed", 12))));
            t += 30.0;
        }
        let found = detect_chatty_requests(&out, &ChattyRule::default());
        assert!(found.is_empty(), "{found:#?}");
    }

    /// A service function issuing the 6 steps, called at one line by the
    /// handler: the service function is the sequencer (the handler's frame
    /// is at one line). Writes are noted; executions written together
    /// (pipelined) count as one round trip.
    #[test]
    fn the_sequencer_is_the_function_awaiting_each_step_and_pipelined_statements_count_once() {
        let mut out = Vec::new();
        let mut t = 0.0;
        for r in 0..40u32 {
            let tid = 1 + r % 2;
            for (k, (sql, f, l)) in PROFILE_STEPS.iter().enumerate() {
                let sql = if k == 5 { "UPDATE settings SET seen = now() WHERE user_id = $1" } else { sql };
                let mut e = exec(t, tid, 10, sql, (f, 10), Some(("svc::service::load_page", *l)));
                e.callers = vec![cs("svc::service::load_page", *l), cs("svc::handlers::page", 7), cs(MW.0, MW.1)].into();
                out.push(e.clone());
                if k == 2 {
                    // Pipelined with the previous statement: same write time.
                    let mut p = e;
                    p.sql = Some("SELECT 2 FROM pipelined".into());
                    p.site = Some(cs("svc::db::extra", 3));
                    out.push(p);
                }
                t += 0.25;
            }
            t += 50.0;
        }
        let found = detect_chatty_requests(&out, &ChattyRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].function.function, "svc::service::load_page");
        assert_eq!((found[0].median_round_trips, found[0].median_statements, found[0].requests), (6, 7, 40));
        assert!(found[0].writes);
        assert!(is_write("UPDATE t SET a = 1") && is_write("with x as (select 1) insert into t select * from x") && !is_write("SELECT 1"));
    }

    const TAG: &str = "INSERT INTO item_tags (item_id, tag) VALUES ($1, $2)";
    const ITEM: &str = "INSERT INTO items (name) VALUES ($1) RETURNING id";

    /// A diesel create at about 1 request/s for 30 s (the 30
    /// requests): the item, then its 5 tags at 5 lines of
    /// `create_with_tags` (one statement text: 2 distinct statements),
    /// each awaiting the previous answer; the batched twin (one CTE) and an
    /// N+1 page of 20 lookups run beside it on the blocking pool.
    fn creates(tags_in_a_loop: Option<usize>, rtt: f64) -> Vec<Execution> {
        let mut rng = Lcg(9);
        let mut out = Vec::new();
        let mut t = 0.0;
        for r in 0..30u32 {
            t += 500.0 + 1000.0 * rng.next();
            let tid = 20 + r % 4;
            let fd = 10 + r % 4;
            let site = |line: u32| (("diesel_service::create_with_tags", line), Some(("diesel_service::create::{{closure}}", 90)));
            let (f, caller) = site(40);
            let mut at = t;
            out.push(exec(at, tid, fd, ITEM, f, caller));
            match tags_in_a_loop {
                None => {
                    for k in 0..5u32 {
                        at += rtt + 0.02 * rng.next();
                        let (f, caller) = site(42 + k);
                        out.push(exec(at, tid, fd, TAG, f, caller));
                    }
                }
                Some(n) => {
                    for _ in 0..n {
                        at += rtt + 0.02 * rng.next();
                        let (f, caller) = site(43);
                        out.push(exec(at, tid, fd, TAG, f, caller));
                    }
                    at += rtt + 0.02 * rng.next();
                    let (f, caller) = site(45);
                    out.push(exec(at, tid, fd, "UPDATE items SET tags = $2 WHERE id = $1", f, caller));
                }
            }
            // The twin, half a second later: one round trip.
            out.push(exec(t + 300.0, tid, fd, "WITH i AS (INSERT INTO items (name) VALUES ($1) RETURNING id) SELECT id FROM i", ("diesel_service::create_with_tags_batched", 60), Some(("diesel_service::create::{{closure}}", 91))));
            // The N+1 page: 20 lookups from one line.
            let mut at = t + 600.0;
            for _ in 0..20 {
                out.push(exec(at, tid, fd, "SELECT id, name FROM owners WHERE id = $1", ("diesel_service::load_owners_one_by_one", 44), Some(("diesel_service::handle::{{closure}}", 70))));
                at += rtt;
            }
        }
        out.sort_by_key(|e| e.ts_ns);
        out
    }

    /// Why the create was not reported: its 6 round trips come from
    /// 2 distinct statements, and the rule asked for 3; the rule as it is
    /// now finds it at the full function with its numbers, and neither the
    /// twin nor the N+1 page.
    #[test]
    fn a_create_writing_its_tags_one_by_one_is_chatty_from_30_requests_at_the_full_function() {
        for rtt in [0.15, 3.0] {
            let execs = creates(None, rtt);
            let old = ChattyRule { min_statements: 3, min_requests: 3, loop_burst: 1, ..ChattyRule::default() };
            assert!(detect_chatty_requests(&execs, &old).is_empty(), "the former rule missed it");
            let found = detect_chatty_requests(&execs, &ChattyRule::default());
            assert_eq!(found.len(), 1, "rtt {rtt}: {found:#?}");
            let c = &found[0];
            assert_eq!((c.function.function.as_str(), c.function.line), ("diesel_service::create_with_tags", Some(40)));
            assert_eq!((c.requests, c.median_round_trips, c.max_round_trips, c.median_statements, c.executions_in_requests, c.executions), (30, 6, 6, 2, 180, 180));
            assert!(c.writes && c.steps.len() == 6, "{c:#?}");
            assert!(c.round_trip_ms >= rtt && c.round_trip_ms <= rtt + 0.03, "{c:#?}");
        }
    }

    /// A loop of tags shorter than the N+1 rule's burst: the request waits
    /// for each iteration (1 + 3 + 1 = 5 round trips, chatty); a loop of 5
    /// or more is the N+1 rule's finding and counts once here (1 + 1 + 1),
    /// so one cause gets one finding.
    #[test]
    fn a_short_loop_counts_each_round_trip_and_an_n_plus_one_loop_counts_once() {
        let found = detect_chatty_requests(&creates(Some(3), 0.2), &ChattyRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].function.function.as_str(), found[0].median_round_trips, found[0].median_statements), ("diesel_service::create_with_tags", 5, 3));
        assert_eq!(found[0].steps.len(), 3, "a loop is one step in the list: {:#?}", found[0].steps);
        let execs = creates(Some(5), 0.2);
        assert!(detect_chatty_requests(&execs, &ChattyRule::default()).is_empty());
        let n1 = super::super::analysis::detect_n_plus_one(&execs, &super::super::analysis::BurstRule::default());
        assert!(n1.iter().any(|n| n.query == TAG), "the N+1 rule reports the loop: {n1:#?}");
    }

    /// The e2e fixture's shape (the item, 4 tags of one statement, a
    /// derived tag) with one stack for every statement of the create, as
    /// the kernel's fingerprint gives it (libpq's path, the first stack
    /// seen): the function is at one line, and still the sequencer, since
    /// it issues several statements itself; the texts tell the steps apart.
    #[test]
    fn a_function_whose_statements_share_one_stack_is_still_the_sequencer() {
        let mut execs = creates(Some(4), 0.2);
        for e in execs.iter_mut().filter(|e| e.site.as_ref().unwrap().function == "diesel_service::create_with_tags") {
            e.site.as_mut().unwrap().line = Some(40);
        }
        let found = detect_chatty_requests(&execs, &ChattyRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        let c = &found[0];
        assert_eq!((c.function.function.as_str(), c.requests, c.median_round_trips, c.median_statements, c.steps.len()), ("diesel_service::create_with_tags", 30, 6, 3, 3));
        // The same 5 tags of one statement are a loop of 5: the N+1 rule's.
        let mut execs = creates(Some(5), 0.2);
        execs.retain(|e| !e.sql.as_deref().unwrap().starts_with("UPDATE"));
        assert!(detect_chatty_requests(&execs, &ChattyRule::default()).is_empty());
    }

    /// The pool's check-out query (`SELECT 1`, r2d2's test on check-out)
    /// issued by the closure that then calls the create: the closure's
    /// requests make 7 round trips, 6 of them the create's; the finding is
    /// at the create (the code making the calls), once.
    #[test]
    fn an_outer_function_adding_a_pool_check_leaves_the_finding_at_the_inner_one() {
        let mut execs = creates(None, 0.2);
        let checks: Vec<Execution> = execs
            .iter()
            .filter(|e| e.sql.as_deref() == Some(ITEM))
            .map(|e| {
                let mut c = exec((e.ts_ns as f64 - 200_000.0) / 1e6, e.tid, e.fd, "SELECT 1", ("diesel_service::create::{{closure}}", 89), None);
                c.callers = Vec::new().into();
                c
            })
            .collect();
        execs.extend(checks);
        execs.sort_by_key(|e| e.ts_ns);
        let found = detect_chatty_requests(&execs, &ChattyRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].function.function.as_str(), found[0].median_round_trips), ("diesel_service::create_with_tags", 6));
    }

    /// With the kernel's chains, a step 50x slower than a round trip (the
    /// 4th statement of each create) does not split the request, and two
    /// requests running at once stay apart.
    #[test]
    fn kernel_chains_keep_a_request_whole_across_a_slow_step() {
        let mut execs = creates(None, 0.1);
        let mut n = 0u64;
        let mut k = 0;
        for e in execs.iter_mut() {
            if e.site.as_ref().unwrap().function == "diesel_service::create_with_tags" {
                if e.sql.as_deref() == Some(ITEM) {
                    n += 1;
                    k = 0;
                }
                k += 1;
                e.chain = n;
                if k >= 4 {
                    e.ts_ns += 5_000_000;
                }
            } else {
                e.chain = 1000 + e.ts_ns / 100_000_000;
            }
        }
        execs.sort_by_key(|e| e.ts_ns);
        let untimed: Vec<Execution> = execs.iter().cloned().map(|mut e| {
            e.chain = 0;
            e
        }).collect();
        assert!(detect_chatty_requests(&untimed, &ChattyRule::default()).is_empty(), "by time alone the slow step splits each request");
        let found = detect_chatty_requests(&execs, &ChattyRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].function.function.as_str(), found[0].requests, found[0].median_round_trips), ("diesel_service::create_with_tags", 30, 6));
    }

    /// Too few requests: a shape seen under 20 times is not reported.
    #[test]
    fn fewer_than_twenty_requests_are_not_a_per_request_pattern() {
        let execs = creates(None, 0.2);
        let cut = execs.iter().filter(|e| e.sql.as_deref() == Some(ITEM)).nth(19).unwrap().ts_ns;
        let first: Vec<Execution> = execs.iter().filter(|e| e.ts_ns < cut).cloned().collect();
        assert!(detect_chatty_requests(&first, &ChattyRule::default()).is_empty());
        let twenty: Vec<Execution> = execs.iter().filter(|e| e.ts_ns < cut + 100_000_000).cloned().collect();
        assert_eq!(detect_chatty_requests(&twenty, &ChattyRule::default())[0].requests, 20);
    }

    /// Two functions of one file with the same short name (`create`) in
    /// different modules, called back to back by a closed-loop client,
    /// 3 round trips each: keyed by the full path, neither is a 6-round-trip
    /// request.
    #[test]
    fn functions_are_keyed_by_their_full_path_not_their_short_name() {
        let mut out = Vec::new();
        let mut t = 0.0;
        for _ in 0..60 {
            for f in ["svc::items::create", "svc::users::create"] {
                for (k, sql) in ["INSERT INTO a VALUES ($1)", "INSERT INTO b VALUES ($1)", "INSERT INTO c VALUES ($1)"].iter().enumerate() {
                    let mut e = exec(t, 1, 10, &format!("{sql} -- {f}"), (f, 10 + k as u32), None);
                    e.site.as_mut().unwrap().file = Some("/svc/src/lib.rs".into());
                    out.push(e);
                    t += 0.2;
                }
            }
            t += 300.0;
        }
        assert!(detect_chatty_requests(&out, &ChattyRule::default()).is_empty());
        for e in out.iter_mut() {
            e.site.as_mut().unwrap().function = "create".into();
        }
        assert_eq!(detect_chatty_requests(&out, &ChattyRule::default()).len(), 1, "one short name chains both");
    }
}
