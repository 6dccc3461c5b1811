//! Pool pressure: how busy the target's database connections were, who
//! held them longest, and whether tasks queued for one. Pure: executions
//! and answers in, one row per pool out.
//!
//! **What a pool is on the wire.** The target's connections to the server,
//! grouped by the code that uses them: two connections used by one
//! function are in one pool (union of the connections of each call site's
//! function). Two pools of one service used by different code come out
//! apart; code using both joins them.
//!
//! **Busy.** A connection is *in use* from the first statement written
//! after the server said it was idle (ReadyForQuery `I`) to the next `I`:
//! a statement's round trip, or a whole transaction. Its holder is the
//! function of that first statement. The pool is *saturated* while every
//! one of its connections is in use.
//!
//! **Waits.** A task that waits for a connection gets one the moment
//! another task is done with it: its first statement follows the previous
//! use's end on that connection within a hand-off gap (1 ms + 2x the
//! pool's fast round trip: a driver's ping on acquiring fits in it) while
//! every other connection of the pool is in use. Such *queued hand-offs*
//! are the waits the wire shows; a finding needs them to be material
//! (`PoolRule`). Stacks that show a wait (sqlx `PoolInner::acquire`, r2d2
//! or deadpool `get`, in the CPU or off-CPU profile) are added by the rule.
//!
//! Known limits: the pool's configured size is not on the wire, only the
//! connections it opened; a pool that grew to exactly its clients'
//! concurrency, each client getting back the connection it just released,
//! looks like hand-offs under saturation (give such a pool headroom or a
//! minimum size to tell them apart).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    analysis::{CallSite, Execution, untied_site},
    transactions::{WireIo, WireIoKind},
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolRule {
    /// Share of the audit with every connection of the pool in use.
    pub min_saturated_share: f64,
    /// Queued hand-offs.
    pub min_handoffs: u64,
    /// Share of the pool's uses that were queued hand-offs.
    pub min_handoff_share: f64,
}

impl Default for PoolRule {
    fn default() -> Self {
        PoolRule { min_saturated_share: 0.25, min_handoffs: 20, min_handoff_share: 0.1 }
    }
}

impl PoolRule {
    pub fn describe(&self) -> String {
        format!(
            "every connection of the pool in use for at least {:.0}% of the audit, and at least {} uses (and {:.0}% of them) that began on a connection the moment another use ended (within 1 ms + 2x the pool's fast round trip) while every other connection was in use: tasks queued for a connection",
            self.min_saturated_share * 100.0,
            self.min_handoffs,
            self.min_handoff_share * 100.0
        )
    }
}

/// Who held a pool's connections.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Holder {
    pub function: CallSite,
    pub uses: u64,
    pub held_ms_total: f64,
    pub held_p50_ms: f64,
    pub held_max_ms: f64,
}

/// One pool's pressure over the audit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct PoolPressure {
    /// Connections (fds) in the pool.
    pub connections: u64,
    pub uses: u64,
    /// Mean share of the window each connection was in use.
    pub busy_share: f64,
    /// Share of the window with every connection in use.
    pub saturated_share: f64,
    /// Uses that began the moment another ended while every other
    /// connection was in use (tasks queued for a connection).
    pub queued_handoffs: u64,
    pub handoff_gap_ms: f64,
    pub window_s: f64,
    /// Longest holders first (by total time held), at most 5.
    pub holders: Vec<Holder>,
    /// The rule's verdict.
    pub waits_material: bool,
}

struct Use {
    fd: u32,
    start: u64,
    end: u64,
    holder: usize,
}

/// The pools of the target and their pressure, from the wire's first to
/// its last event.
pub fn pool_pressure(executions: &[Execution], io: &[WireIo], rule: &PoolRule) -> Vec<PoolPressure> {
    // Uses per connection, from the statements and the idle answers.
    let mut events: BTreeMap<u32, Vec<(u64, u8, usize)>> = BTreeMap::new();
    for (i, e) in executions.iter().enumerate() {
        events.entry(e.fd).or_default().push((e.ts_ns, 0, i));
    }
    let mut round_trips: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for w in io {
        if let WireIoKind::Answer(status) = w.kind {
            events.entry(w.fd).or_default().push((w.ts_ns, if status == b'I' { 1 } else { 2 }, 0));
        }
    }
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let mut uses: Vec<Use> = Vec::new();
    let mut holder_names: Vec<CallSite> = Vec::new();
    let mut holder_ids: BTreeMap<String, usize> = BTreeMap::new();
    let mut holder_of = |site: Option<&CallSite>| -> usize {
        let s = site.cloned().unwrap_or_else(untied_site);
        let key = format!("{}\u{0}{}", s.function, s.file.as_deref().unwrap_or(""));
        *holder_ids.entry(key).or_insert_with(|| {
            holder_names.push(s);
            holder_names.len() - 1
        })
    };
    for (fd, ev) in events.iter_mut() {
        ev.sort();
        lo = lo.min(ev.first().map_or(u64::MAX, |e| e.0));
        hi = hi.max(ev.last().map_or(0, |e| e.0));
        let mut seen_idle = false;
        let mut open: Option<(u64, usize)> = None;
        let mut last_write: Option<u64> = None;
        for (ts, kind, i) in ev.iter().copied() {
            match kind {
                0 => {
                    last_write.get_or_insert(ts);
                    if open.is_none() && seen_idle {
                        open = Some((ts, holder_of(executions[i].site.as_ref())));
                    }
                }
                _ => {
                    if let Some(w) = last_write.take() {
                        round_trips.entry(*fd).or_default().push(ts.saturating_sub(w));
                    }
                    if kind == 1 {
                        if let Some((start, holder)) = open.take() {
                            uses.push(Use { fd: *fd, start, end: ts, holder });
                        }
                        seen_idle = true;
                    }
                }
            }
        }
    }
    if uses.is_empty() || hi <= lo {
        return Vec::new();
    }
    // Pools: connections joined by the functions that use them.
    let fds: Vec<u32> = events.keys().copied().collect();
    let index: BTreeMap<u32, usize> = fds.iter().enumerate().map(|(k, fd)| (*fd, k)).collect();
    let mut parent: Vec<usize> = (0..fds.len()).collect();
    fn root(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut first_fd_of: BTreeMap<&str, usize> = BTreeMap::new();
    for e in executions {
        let Some(site) = &e.site else { continue };
        let k = index[&e.fd];
        match first_fd_of.get(site.function.as_str()) {
            Some(&other) => {
                let (a, b) = (root(&mut parent, k), root(&mut parent, other));
                parent[a] = b;
            }
            None => {
                first_fd_of.insert(site.function.as_str(), k);
            }
        }
    }
    let mut pools: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for (k, fd) in fds.iter().enumerate() {
        pools.entry(root(&mut parent, k)).or_default().insert(*fd);
    }
    let window = (hi - lo) as f64;
    let mut out = Vec::new();
    for members in pools.values() {
        let pool_uses: Vec<&Use> = uses.iter().filter(|u| members.contains(&u.fd)).collect();
        if pool_uses.is_empty() {
            continue;
        }
        let n = members.len();
        // The pool's fast round trip: 10th percentile of its statements'.
        let mut rtts: Vec<u64> = members.iter().filter_map(|fd| round_trips.get(fd)).flatten().copied().collect();
        rtts.sort_unstable();
        let fast = rtts.get(rtts.len() / 10).copied().unwrap_or(0);
        let gap = 1_000_000 + 2 * fast;
        // Sweep: how many connections are in use, over time.
        let mut edges: Vec<(u64, i32)> = pool_uses.iter().flat_map(|u| [(u.start, 1), (u.end, -1)]).collect();
        edges.sort();
        let (mut busy, mut saturated, mut last) = (0i32, 0u64, lo);
        let mut in_use_sum = 0u64;
        for (t, d) in &edges {
            if busy as usize >= n {
                saturated += t - last;
            }
            in_use_sum += busy.max(0) as u64 * (t - last);
            busy += d;
            last = *t;
        }
        // Queued hand-offs: a use starting right after the previous one on
        // its connection ended, every other connection in use when it did.
        let mut by_fd: BTreeMap<u32, Vec<&Use>> = BTreeMap::new();
        for u in &pool_uses {
            by_fd.entry(u.fd).or_default().push(u);
        }
        let mut handoffs = 0u64;
        for list in by_fd.values_mut() {
            list.sort_by_key(|u| u.start);
        }
        for list in by_fd.values() {
            for w in list.windows(2) {
                let (prev, next) = (w[0], w[1]);
                if next.start.saturating_sub(prev.end) > gap {
                    continue;
                }
                let others_busy = by_fd
                    .iter()
                    .filter(|(fd, _)| **fd != prev.fd)
                    .filter(|(_, l)| l.iter().any(|u| u.start <= prev.end && u.end > prev.end))
                    .count();
                if others_busy + 1 >= n {
                    handoffs += 1;
                }
            }
        }
        // Holders.
        let mut per: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for u in &pool_uses {
            per.entry(u.holder).or_default().push((u.end - u.start) as f64 / 1e6);
        }
        let mut holders: Vec<Holder> = per
            .into_iter()
            .map(|(h, mut v)| {
                v.sort_by(f64::total_cmp);
                Holder {
                    function: holder_names[h].clone(),
                    uses: v.len() as u64,
                    held_ms_total: round2(v.iter().sum()),
                    held_p50_ms: round2(v[v.len() / 2]),
                    held_max_ms: round2(*v.last().unwrap_or(&0.0)),
                }
            })
            .collect();
        holders.sort_by(|a, b| b.held_ms_total.total_cmp(&a.held_ms_total));
        holders.truncate(5);
        let saturated_share = saturated as f64 / window;
        let uses_n = pool_uses.len() as u64;
        out.push(PoolPressure {
            connections: n as u64,
            uses: uses_n,
            busy_share: round2(in_use_sum as f64 / window / n as f64),
            saturated_share: round2(saturated_share),
            queued_handoffs: handoffs,
            handoff_gap_ms: round2(gap as f64 / 1e6),
            window_s: round2(window / 1e9),
            holders,
            waits_material: saturated_share >= rule.min_saturated_share
                && handoffs >= rule.min_handoffs
                && handoffs as f64 >= rule.min_handoff_share * uses_n as f64,
        });
    }
    out.sort_by(|a, b| b.waits_material.cmp(&a.waits_material).then(b.saturated_share.total_cmp(&a.saturated_share)));
    out
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(f: &str) -> CallSite {
        CallSite { function: f.into(), file: Some("/svc/src/main.rs".into()), line: Some(5), ..Default::default() }
    }

    /// `clients` closed-loop clients, each a 20 ms query then `think_ms`
    /// away, on a pool of `conns` connections handed out first come first
    /// served (FIFO, as sqlx); a ping of `rtt` on each acquire.
    fn simulate(clients: usize, conns: u32, think_ms: f64, rtt: f64, f: &CallSite, fd0: u32) -> (Vec<Execution>, Vec<WireIo>) {
        let (mut ex, mut io) = (Vec::new(), Vec::new());
        let ns = |ms: f64| (ms * 1e6) as u64;
        for c in 0..conns {
            io.push(WireIo { ts_ns: 0, tid: 1, fd: fd0 + c, kind: WireIoKind::Answer(b'I') });
        }
        let mut free_at: Vec<(f64, u32)> = (0..conns).map(|c| (0.5, fd0 + c)).collect();
        let mut ready: Vec<f64> = (0..clients).map(|k| 1.0 + k as f64 * 0.1).collect();
        for _ in 0..(clients * 100) {
            // The client that is ready first takes the connection free first.
            let (k, t_ready) = ready.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
            free_at.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (t_free, fd) = free_at.remove(0);
            let start = t_ready.max(t_free) + rtt + 0.05;
            io.push(WireIo { ts_ns: ns(start - 0.05), tid: 1, fd, kind: WireIoKind::Answer(b'I') });
            ex.push(Execution { ts_ns: ns(start), tid: 1, fd, sql: Some("SELECT pg_sleep(0.02)".into()), site: Some(f.clone()), ..Default::default() });
            let end = start + 20.0 + rtt;
            io.push(WireIo { ts_ns: ns(end), tid: 1, fd, kind: WireIoKind::Answer(b'I') });
            free_at.push((end + 0.03, fd));
            ready[k] = end + think_ms;
        }
        (ex, io)
    }

    #[test]
    fn a_pool_of_two_under_eight_clients_queues_and_a_pool_with_headroom_does_not() {
        for rtt in [0.1, 6.0] {
            let (mut ex, mut io) = simulate(8, 2, 0.4, rtt, &site("svc::report_small_pool"), 10);
            let (ex2, io2) = simulate(8, 16, 0.4, rtt, &site("svc::report_sized_pool"), 100);
            ex.extend(ex2);
            io.extend(io2);
            let pools = pool_pressure(&ex, &io, &PoolRule::default());
            assert_eq!(pools.len(), 2, "{pools:#?}");
            let small = &pools[0];
            assert!(small.waits_material, "{small:#?}");
            assert_eq!(small.connections, 2);
            assert_eq!(small.holders[0].function.function, "svc::report_small_pool");
            assert!(small.saturated_share > 0.5 && small.queued_handoffs > 100, "{small:#?}");
            let sized = &pools[1];
            assert!(!sized.waits_material && sized.queued_handoffs == 0, "{sized:#?}");
            assert_eq!((sized.connections, sized.holders[0].function.function.as_str()), (16, "svc::report_sized_pool"));
        }
    }
}
