//! Statement executions seen on the wire, tied to the code that issued
//! them, and the N+1 pattern. Pure: executions in, patterns out.
//!
//! **How N+1 is detected: chains of round trips.** The kernel side tells,
//! for each write, whether the thread sent it right after reading a
//! database answer with nothing in between (no read from another socket,
//! no send elsewhere, no futex wait): the write *waited for* that answer.
//! The agent links it to the last write on the answering connection, so
//! every execution belongs to a *chain*: one task's statements, each sent
//! after the previous one's answer (a request's queries, or a loop's). A
//! new request starts a new chain: its thread first read the request from
//! the client's socket, or woke from a wait. A loop is a chain in which one
//! (statement, call site) comes back: at least `min_executions` times in
//! one chain is a *burst*. Nothing here is a time, so the loop is found
//! the same way with the database 0.1 ms or 10 ms away, and independent
//! requests issuing the same lookup at any rate are independent chains.
//! Known limits: a loop whose iterations also read another socket (an
//! HTTP call per item) or wait on a lock is cut into short chains; so is
//! one whose next connection must be waited for (a pool exhausted), each
//! wait a break; a driver whose socket is written by a separate task
//! (tokio-postgres' connection task) chains what that task does.
//!
//! **Without chains** (executions the agent did not number: chain 0, as
//! in synthetic evidence), the timing reading below is used. The wire shows no request boundaries, but each
//! execution carries the thread that wrote it, the call site and its place
//! in time. A loop of queries is one task issuing the same statement from
//! the same call site again and again, each execution waiting for the
//! previous answer: on the worker thread running that task, consecutive
//! executions of that (statement, call site) are one round trip apart, and
//! round trips of one statement are alike, and the task runs nothing else
//! in between. So, on each thread, an execution of a (statement, call site)
//! is *linked* to an earlier one when the gap is within a factor (`band`)
//! of that pair's typical gap (the median gap between its consecutive
//! executions on a thread: one round trip for a loop) and no other
//! statement ran on that thread in between (iterations of the same loop
//! from requests running at once may interleave: each execution continues
//! the chain whose last execution is oldest, as round trips complete in
//! turn; the typical gap is then re-measured inside the chains found).
//! A *burst* is a chain of at least `min_executions`. Nothing here is
//! an absolute time, so a loop is found the same way with the database
//! 0.1 ms or 10 ms away. Independent requests that run the same one-off
//! query arrive at random (gaps spread like an exponential distribution,
//! whatever the rate): only short runs of their gaps fall in one band, so
//! a call site is reported only when most of its executions (`min_share`)
//! are in bursts. Transaction control (BEGIN, COMMIT, SET...) is never an
//! N+1. The cost of a pattern is measured, not assumed: round trips per
//! burst x the round trip (see `NPlusOne::saved_ms_per_burst`).
//!
//! Known limits: with more than about two requests running the same loop
//! at once on one thread, the gaps between its consecutive executions
//! there are a fraction of the round trip and bursts are found only in
//! part (or not at all); an endpoint that issues a single statement and nothing else, hit
//! by a client that sends each request the moment the previous answer
//! arrives, is as regular as a loop (the wire cannot see the HTTP round
//! trip in between).

use std::collections::BTreeMap;

/// The owner's frame that issued a statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CallSite {
    /// Async fn bodies named after their fn.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The wrappers between this call site and the driver, innermost first
    /// (generic helpers every statement passes through, see
    /// [`resolve_wrappers`]); empty when the call site issues the
    /// statement itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// The client library the stack went through (see `dialect`): the
    /// dialect of the code fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<super::dialect::Driver>,
}

/// One execution seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Execution {
    pub ts_ns: u64,
    pub tid: u32,
    pub fd: u32,
    /// Statement text (normalised whitespace), when known.
    pub sql: Option<String>,
    /// The innermost frame of the target's own code, when the stack reached it.
    pub site: Option<CallSite>,
    /// The owner's frames above `site`, innermost first (the function that
    /// called the call site's function, and so on up to the handler and
    /// beyond); shared by every execution of one stack.
    pub callers: std::sync::Arc<[CallSite]>,
    /// The chain of round trips it belongs to (see the module's docs);
    /// 0 when answers were not tracked.
    pub chain: u64,
    /// Hash of the bound parameter values (extended protocol, fully
    /// captured; never the values): `database::rereads`.
    pub params: Option<u64>,
}

/// Whether the executions carry chains of round trips (the agent numbers
/// every write's chain when the kernel side tracks answers).
pub fn has_chains(executions: &[Execution]) -> bool {
    executions.iter().any(|e| e.chain != 0)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstRule {
    /// Executions in a run of links to make a burst.
    pub min_executions: usize,
    /// Two consecutive executions are linked when their gap is between 0.8x
    /// and `band` x the call site's fast gaps (10th percentile of its gaps
    /// between consecutive executions on a thread), or within 2x either way
    /// of its median gap (see `detect_n_plus_one`).
    pub band: f64,
    /// Share of a call site's executions that must be in bursts.
    pub min_share: f64,
    /// Executions of other statements tolerated on the thread between two
    /// linked ones (other requests' work interleaved on a busy thread); a
    /// task's other steps (a whole request in between) are more.
    pub max_between: usize,
}

impl Default for BurstRule {
    fn default() -> Self {
        BurstRule { min_executions: 5, band: 5.0, min_share: 0.5, max_between: 3 }
    }
}

impl BurstRule {
    pub fn describe(&self) -> String {
        format!(
            "the same statement from the same call site executed at least {} times in a row on one thread, each one round trip after the previous (a gap from 0.8x to {}x of that call site's fast gaps between consecutive executions, or within 2x of its median gap, whatever the database's distance) with at most {} other statements between, for at least {:.0}% of that call site's executions; transaction control statements excluded",
            self.min_executions,
            self.band,
            self.max_between,
            self.min_share * 100.0
        )
    }

    /// The rule as applied to executions with chains (the agent's).
    pub fn describe_chains(&self) -> String {
        format!(
            "the same statement from the same call site executed at least {} times in one chain of round trips (each statement sent by the thread that had just read the previous one's answer, with no other socket read, send or lock wait in between: one task's sequence of statements), for at least {:.0}% of that call site's executions; transaction control statements excluded. No time threshold: the database's distance and the request rate do not change what is linked",
            self.min_executions,
            self.min_share * 100.0
        )
    }
}


/// What an N+1 names as its query when the statement was prepared before
/// the audit began (its Parse was never on the traced wire) and no other
/// execution from its call site had a text: the loop is still seen, by its
/// call site and its round trips.
pub const UNKNOWN_TEXT: &str = "(a statement prepared before the audit: text unknown)";

/// The call site of executions whose stack never reached a named frame of
/// the owner's code (a build without line tables whose query code was
/// inlined into framework functions; see [`untied_reason`]). Chains of
/// round trips need no call site, so a loop is still found, by statement.
pub const UNTIED_FUNCTION: &str = "(not traced to code)";

/// The [`CallSite`] of untied executions.
pub fn untied_site() -> CallSite {
    CallSite { function: UNTIED_FUNCTION.to_string(), file: None, line: None, ..Default::default() }
}

/// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET...: repeated by design, never a loop to batch.
pub fn is_transaction_control(sql: &str) -> bool {
    let word: String = sql.trim_start().chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
    matches!(
        word.as_str(),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "SET" | "RESET" | "START" | "END" | "ABORT" | "DISCARD" | "DEALLOCATE" | "SHOW"
    )
}

/// An N+1 pattern at one call site.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct NPlusOne {
    pub query: String,
    pub call_site: CallSite,
    /// Bursts seen (about one per request that ran the loop).
    pub bursts: u64,
    pub executions_in_bursts: u64,
    pub executions: u64,
    /// Median and largest number of executions per burst.
    pub median_burst: u64,
    pub max_burst: u64,
    /// Median duration of a burst, first to last execution.
    pub median_burst_ms: f64,
    /// Median gap between linked executions: one round trip, as measured.
    pub round_trip_ms: f64,
    /// What batching saves per burst: (median burst - 1) round trips.
    pub saved_ms_per_burst: f64,
}

/// Collapses whitespace so wire texts and `pg_stat_statements` texts compare.
pub fn normalize_sql(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Fills in unknown texts (statements prepared before tracing began) from
/// other executions of the same call site, when that site issued exactly
/// one distinct statement.
pub fn fill_texts_from_call_sites(executions: &mut [Execution]) -> u64 {
    let mut by_site: BTreeMap<&CallSite, Vec<&str>> = BTreeMap::new();
    for e in executions.iter() {
        if let (Some(site), Some(sql)) = (&e.site, &e.sql) {
            let v = by_site.entry(site).or_default();
            if !v.contains(&sql.as_str()) {
                v.push(sql);
            }
        }
    }
    let unique: BTreeMap<CallSite, String> = by_site
        .into_iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(site, v)| (site.clone(), v[0].to_string()))
        .collect();
    let mut filled = 0;
    for e in executions.iter_mut() {
        if e.sql.is_none()
            && let Some(sql) = e.site.as_ref().and_then(|s| unique.get(s)) {
                e.sql = Some(sql.clone());
                filled += 1;
            }
    }
    filled
}

/// Distinct statements a function must carry, and distinct functions it
/// must be called from, to be a wrapper rather than a call site (see
/// [`resolve_wrappers`]).
pub const WRAPPER_MIN_STATEMENTS: usize = 3;
/// See [`WRAPPER_MIN_STATEMENTS`].
pub const WRAPPER_MIN_CALLERS: usize = 3;

/// A generic helper of the owner's code that statements pass through
/// (`run_query`, `DbConn::run`, a retry helper), decided from the
/// executions seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct Wrapper {
    pub function: String,
    /// Distinct statements seen through it.
    pub statements: u64,
    /// Distinct owner functions seen calling it.
    pub callers: u64,
    /// Executions whose call site moved out of it to its caller.
    pub executions: u64,
}

/// The rule [`resolve_wrappers`] applies, as the report states it.
pub fn wrapper_rule() -> String {
    format!(
        "a function of the owner's code is a wrapper, not a call site, when at least {WRAPPER_MIN_STATEMENTS} distinct statements pass through it from at least {WRAPPER_MIN_CALLERS} distinct calling functions (a function that issues its own query carries one or two statements however many callers it has, and a function with one or two callers is the code that decides what to query); a statement's call site is then the first owner frame outside its innermost wrapper, and the wrappers are named as its path"
    )
}

/// Moves the call site of executions issued through a wrapper (a frame
/// through which many distinct statements and callers pass: see
/// [`WRAPPER_MIN_STATEMENTS`]) out to the first owner frame beyond it,
/// naming the frames passed over in [`CallSite::via`].
///
/// Per execution, the owner frames are `site, callers...` innermost first.
/// For each function on them: the distinct statements of the executions
/// whose owner frames contain it, and the distinct functions of the frame
/// just outside it. The innermost wrapper on an execution's frames decides:
/// every frame inside it must itself carry at least
/// [`WRAPPER_MIN_STATEMENTS`] statements (the wrapper's own machinery, a
/// retry helper called only from the wrapper); a specific query function
/// inside (one statement) stays the call site. The new call site is the
/// first frame outside the wrapper that is not a wrapper itself. An
/// execution without such a frame (the stack ends at the wrapper) keeps
/// its site. Texts unknown on the wire count as no statement.
pub fn resolve_wrappers(executions: &mut [Execution]) -> Vec<Wrapper> {
    use std::collections::{BTreeSet, HashMap, HashSet};
    // Distinct stacks first: executions of one stack share their callers.
    let mut stacks: HashMap<(Option<&str>, &CallSite, *const [CallSite]), ()> = HashMap::new();
    let mut carried: HashMap<&str, (HashSet<&str>, HashSet<&str>)> = HashMap::new();
    for e in executions.iter() {
        let Some(site) = &e.site else { continue };
        if stacks.insert((e.sql.as_deref(), site, std::sync::Arc::as_ptr(&e.callers)), ()).is_some() {
            continue;
        }
        let frames: Vec<&CallSite> = std::iter::once(site).chain(e.callers.iter()).collect();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            if !seen.insert(f.function.as_str()) {
                continue;
            }
            let entry = carried.entry(f.function.as_str()).or_default();
            if let Some(sql) = e.sql.as_deref() {
                entry.0.insert(sql);
            }
            // The calling function: the next frame of another function
            // (a recursive call is no new caller).
            if let Some(caller) = frames[i + 1..].iter().find(|c| c.function != f.function) {
                entry.1.insert(caller.function.as_str());
            }
        }
    }
    let statement_counts: HashMap<String, usize> = carried.iter().map(|(f, c)| (f.to_string(), c.0.len())).collect();
    let statements_of = |f: &str| statement_counts.get(f).copied().unwrap_or(0);
    let wrappers: BTreeSet<String> = carried
        .iter()
        .filter(|(_, (sql, callers))| sql.len() >= WRAPPER_MIN_STATEMENTS && callers.len() >= WRAPPER_MIN_CALLERS)
        .map(|(f, _)| f.to_string())
        .collect();
    if wrappers.is_empty() {
        return Vec::new();
    }
    let mut out: BTreeMap<String, Wrapper> = wrappers
        .iter()
        .map(|f| {
            let c = &carried[f.as_str()];
            (f.clone(), Wrapper { function: f.clone(), statements: c.0.len() as u64, callers: c.1.len() as u64, executions: 0 })
        })
        .collect();
    drop(carried);
    drop(stacks);
    // One decision per distinct stack, shared by its executions.
    type Decision = Option<(CallSite, std::sync::Arc<[CallSite]>, String)>;
    let mut decided: HashMap<(CallSite, *const [CallSite]), Decision> = HashMap::new();
    for e in executions.iter_mut() {
        let Some(site) = e.site.clone() else { continue };
        let key = (site, std::sync::Arc::as_ptr(&e.callers));
        let decision = decided
            .entry(key)
            .or_insert_with_key(|(site, _)| {
                let frames: Vec<&CallSite> = std::iter::once(site).chain(e.callers.iter()).collect();
                let w = frames.iter().position(|f| wrappers.contains(&f.function))?;
                if frames[..w].iter().any(|f| statements_of(&f.function) < WRAPPER_MIN_STATEMENTS) {
                    return None;
                }
                let outside = w + 1 + frames[w + 1..].iter().position(|f| !wrappers.contains(&f.function))?;
                let mut via: Vec<String> = Vec::new();
                for f in &frames[..outside] {
                    if via.last() != Some(&f.function) {
                        via.push(f.function.clone());
                    }
                }
                let mut new_site = frames[outside].clone();
                new_site.via = via;
                let callers: std::sync::Arc<[CallSite]> = frames[outside + 1..].iter().map(|c| (*c).clone()).collect();
                Some((new_site, callers, frames[w].function.clone()))
            })
            .clone();
        if let Some((new_site, callers, wrapper)) = decision {
            e.site = Some(new_site);
            e.callers = callers;
            if let Some(w) = out.get_mut(&wrapper) {
                w.executions += 1;
            }
        }
    }
    out.into_values().collect()
}

pub(crate) fn opens_transaction(sql: &str) -> bool {
    let q = sql.trim_start().to_ascii_uppercase();
    q.starts_with("BEGIN") || q.starts_with("START TRANSACTION")
}

pub(crate) fn closes_transaction(sql: &str) -> bool {
    let q = sql.trim_start().to_ascii_uppercase();
    ["COMMIT", "END", "ROLLBACK", "ABORT"].iter().any(|k| q.starts_with(k)) && !q.starts_with("ROLLBACK TO")
}

/// Transactions opened in a loop: `BEGIN` from one call site in bursts
/// (the N+1 burst rule), each transaction with its own round trips.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct PerItemTransaction {
    /// Where `BEGIN` is issued.
    pub call_site: CallSite,
    pub transactions: u64,
    pub bursts: u64,
    pub median_burst: u64,
    /// Median statements per transaction, `BEGIN` and `COMMIT` included:
    /// the round trips each item costs.
    pub median_round_trips: u64,
    /// The statements run inside (distinct texts, at most 5).
    pub statements: Vec<String>,
}

/// Transactions opened once per item of a loop (see [`PerItemTransaction`]).
pub fn detect_per_item_transactions(executions: &[Execution], rule: &BurstRule) -> Vec<PerItemTransaction> {
    let begins: Vec<Execution> = executions.iter().filter(|e| e.sql.as_deref().is_some_and(opens_transaction)).cloned().collect();
    let bursts = bursts_by_site(&begins, rule, |_| true, false, has_chains(executions));
    let mut out = Vec::new();
    for b in bursts {
        // Round trips per transaction, on each connection (fd) in time
        // order: an async task may move between threads, its connection not.
        let mut sorted: Vec<&Execution> = executions.iter().collect();
        sorted.sort_by_key(|e| (e.fd, e.ts_ns));
        let mut counts: Vec<u64> = Vec::new();
        let mut statements: Vec<String> = Vec::new();
        let mut open: Option<(u32, u64)> = None;
        for e in sorted {
            let sql = e.sql.as_deref().unwrap_or("");
            if opens_transaction(sql) && e.site.as_ref() == Some(&b.call_site) {
                open = Some((e.fd, 1));
                continue;
            }
            if let Some((fd, n)) = open.as_mut()
                && *fd == e.fd {
                    *n += 1;
                    if closes_transaction(sql) {
                        counts.push(*n);
                        open = None;
                    } else if !sql.is_empty() && statements.len() < 5 && !statements.iter().any(|s| s == sql) {
                        statements.push(sql.to_string());
                    }
                }
        }
        counts.sort_unstable();
        out.push(PerItemTransaction {
            call_site: b.call_site,
            transactions: b.executions,
            bursts: b.bursts,
            median_burst: b.median_burst,
            median_round_trips: counts.get(counts.len() / 2).copied().unwrap_or(0),
            statements,
        });
    }
    out
}

/// A run of linked executions of one (statement, call site) on one thread.
struct Chain {
    first: u64,
    last: u64,
    /// Index of the last execution in the thread's sequence of all statements.
    last_index: usize,
    /// Its rank among the thread's executions of this (statement, call site).
    last_rank: usize,
    gaps: Vec<u64>,
}

pub fn detect_n_plus_one(executions: &[Execution], rule: &BurstRule) -> Vec<NPlusOne> {
    bursts_by_site(executions, rule, |sql| !is_transaction_control(sql), true, has_chains(executions))
}

/// Loops of the statements `keep` accepts, per (statement, call site);
/// with `unknown_text`, executions without a text are grouped per call site.
fn bursts_by_site(executions: &[Execution], rule: &BurstRule, keep: impl Fn(&str) -> bool, unknown_text: bool, chained: bool) -> Vec<NPlusOne> {
    // Groups: (statement, call site); per thread, every traced execution in order.
    let mut group_ids: BTreeMap<(&str, &CallSite), usize> = BTreeMap::new();
    // Per chain of round trips, its executions of each group, in order.
    let mut by_chain: BTreeMap<u64, Vec<(u64, usize)>> = BTreeMap::new();
    let mut threads: BTreeMap<u32, Vec<(u64, Option<usize>)>> = BTreeMap::new();
    let mut totals: Vec<usize> = Vec::new();
    let untied = untied_site();
    for e in executions {
        // Chains link a task's round trips whatever its stack says: an
        // execution not tied to code is grouped by its statement alone.
        let site = match &e.site {
            None if chained && e.chain != 0 && e.sql.is_some() => Some(&untied),
            other => other.as_ref(),
        };
        let gid = match (&e.sql, site) {
            (Some(sql), Some(site)) if keep(sql) => {
                let next = group_ids.len();
                Some(*group_ids.entry((sql.as_str(), site)).or_insert(next))
            }
            // Prepared before the audit: one group per call site (a site
            // that runs several such statements merges them).
            (None, Some(site)) if unknown_text => {
                let next = group_ids.len();
                Some(*group_ids.entry((UNKNOWN_TEXT, site)).or_insert(next))
            }
            _ => None,
        };
        threads.entry(e.tid).or_default().push((e.ts_ns, gid));
        if let Some(g) = gid {
            totals.resize(totals.len().max(g + 1), 0);
            totals[g] += 1;
            if e.chain != 0 {
                by_chain.entry(e.chain).or_default().push((e.ts_ns, g));
            }
        }
    }
    let groups = group_ids.len();
    let (totals, bursts, link_gaps) = if chained {
        let mut statement_of = vec![""; groups];
        for ((sql, _), g) in &group_ids {
            statement_of[*g] = sql;
        }
        let (bursts, link_gaps) = chain_bursts(&by_chain, &statement_of, &mut totals, rule);
        (totals, bursts, link_gaps)
    } else {
        timing_bursts(threads, groups, rule)
    };
    let mut out = Vec::new();
    for ((sql, site), g) in group_ids {
        let total = totals[g];
        let in_bursts: u64 = bursts[g].iter().map(|b| b.0).sum();
        if bursts[g].is_empty() || (in_bursts as f64) < rule.min_share * total as f64 {
            continue;
        }
        let mut sizes: Vec<u64> = bursts[g].iter().map(|b| b.0).collect();
        sizes.sort_unstable();
        let mut durations: Vec<u64> = bursts[g].iter().map(|b| b.1).collect();
        durations.sort_unstable();
        let lg = &link_gaps[g];
        let median_burst = sizes[sizes.len() / 2];
        // Microseconds: report.json reads back what it wrote.
        let round_trip_ms = (lg.get(lg.len() / 2).copied().unwrap_or(0) as f64 / 1e3).round() / 1e3;
        out.push(NPlusOne {
            query: sql.to_string(),
            call_site: site.clone(),
            bursts: bursts[g].len() as u64,
            executions_in_bursts: in_bursts,
            executions: total as u64,
            median_burst,
            max_burst: *sizes.last().unwrap_or(&0),
            median_burst_ms: durations[durations.len() / 2] as f64 / 1e6,
            round_trip_ms,
            saved_ms_per_burst: (median_burst.saturating_sub(1) as f64 * round_trip_ms * 1e3).round() / 1e3,
        });
    }
    out.sort_by(|a, b| b.executions_in_bursts.cmp(&a.executions_in_bursts).then(a.call_site.cmp(&b.call_site)));
    out
}

/// Bursts from chains of round trips: per chain, each group's executions
/// (a burst when at least `min_executions`), their span, and the gaps
/// between consecutive ones (one iteration of the loop each: the round
/// trip and whatever the loop does around it).
///
/// One statement from two call sites in one chain is counted as one loop,
/// at the site with the most executions in the chain: the kernel keys a
/// write's stack by a fingerprint of its innermost 1 KiB, the statement and
/// the connection, and through sqlx two call sites of one statement can
/// share that key on a connection, so a loop's iterations sent on that
/// connection take the other site's stack (interleaved with the loop's own,
/// or in a block when the loop keeps one connection for a while). Two
/// genuine loops of one statement in one request are then reported as one,
/// at the larger: the price of not reporting a once-per-request lookup as
/// a loop.
fn chain_bursts(by_chain: &BTreeMap<u64, Vec<(u64, usize)>>, statement_of: &[&str], totals: &mut [usize], rule: &BurstRule) -> (Bursts, Vec<Vec<u64>>) {
    let groups = statement_of.len();
    let mut bursts: Bursts = vec![Vec::new(); groups];
    let mut link_gaps: Vec<Vec<u64>> = vec![Vec::new(); groups];
    for execs in by_chain.values() {
        // Per statement, its executions in the chain and how many each
        // call site issued.
        let mut per_statement: BTreeMap<&str, (Vec<u64>, BTreeMap<usize, usize>)> = BTreeMap::new();
        for &(ts, g) in execs {
            let (ts_list, sites) = per_statement.entry(statement_of[g]).or_default();
            ts_list.push(ts);
            *sites.entry(g).or_default() += 1;
        }
        for (mut ts, sites) in per_statement.into_values() {
            // The site with the most executions (the first on a tie) takes them all.
            let (&g, _) = sites.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).expect("one execution at least");
            for (&other, &n) in sites.iter().filter(|(other, _)| **other != g) {
                totals[other] -= n;
                totals[g] += n;
            }
            if ts.len() < rule.min_executions.max(2) {
                continue;
            }
            ts.sort_unstable();
            bursts[g].push((ts.len() as u64, ts[ts.len() - 1] - ts[0]));
            link_gaps[g].extend(ts.windows(2).map(|w| w[1] - w[0]));
        }
    }
    for g in &mut link_gaps {
        g.sort_unstable();
    }
    (bursts, link_gaps)
}

/// The timing reading, for executions without chains (see the module's docs).
fn timing_bursts(mut threads: BTreeMap<u32, Vec<(u64, Option<usize>)>>, groups: usize, rule: &BurstRule) -> (Vec<usize>, Bursts, Vec<Vec<u64>>) {
    // Per thread, and over the whole process: tokio moves a task between
    // workers at its awaits, so a loop may continue on another thread; the
    // process-wide sequence keeps it whole when few requests run at once
    // (under concurrency, other requests' statements in between break it
    // there, and the per-thread reading holds). The better one per group.
    for seq in threads.values_mut() {
        seq.sort_unstable();
    }
    let mut all: Vec<(u64, Option<usize>)> = threads.values().flatten().copied().collect();
    all.sort_unstable();
    let process: BTreeMap<u32, Vec<(u64, Option<usize>)>> = BTreeMap::from([(0, all)]);
    let (totals, mut bursts, mut link_gaps) = readings(&threads, groups, rule);
    let (_, b2, l2) = readings(&process, groups, rule);
    let in_bursts = |b: &Vec<(u64, u64)>| b.iter().map(|x| x.0).sum::<u64>();
    for (g, (b, l)) in b2.into_iter().zip(l2).enumerate() {
        if in_bursts(&b) > in_bursts(&bursts[g]) {
            bursts[g] = b;
            link_gaps[g] = l;
        }
    }
    (totals, bursts, link_gaps)
}

type Bursts = Vec<Vec<(u64, u64)>>;

/// Bursts of each group in `threads` (sequences sorted by time), under the
/// two readings of its round trip; returns (executions per group, bursts,
/// gaps inside bursts).
fn readings(threads: &BTreeMap<u32, Vec<(u64, Option<usize>)>>, groups: usize, rule: &BurstRule) -> (Vec<usize>, Bursts, Vec<Vec<u64>>) {
    let mut totals = vec![0usize; groups];
    let mut gaps: Vec<Vec<u64>> = vec![Vec::new(); groups];
    for seq in threads.values() {
        let mut last: Vec<Option<u64>> = vec![None; groups];
        for &(ts, gid) in seq.iter() {
            if let Some(g) = gid {
                totals[g] += 1;
                if let Some(prev) = last[g] {
                    gaps[g].push(ts - prev);
                }
                last[g] = Some(ts);
            }
        }
    }
    // Two readings of a group's round trip from the gaps between its
    // consecutive executions on a thread, each with its own band; a group
    // keeps the one that puts more of its executions in bursts (each alone
    // links few of the gaps of random arrivals):
    // - the fast gaps (10th percentile), linking up to `band` x as far:
    //   a loop's round trips have a floor (the database's distance) and a
    //   long tail (a busy worker, a late wake-up), most visible on loopback;
    // - the median, linking within 2x either way, re-measured inside the
    //   chains found: when several requests run the loop at once on one
    //   thread, its consecutive gaps are fractions of the round trip.
    let mut quantile = |q: usize| -> Vec<f64> {
        gaps.iter_mut()
            .map(|g| {
                g.sort_unstable();
                g.get(g.len() / q).copied().unwrap_or(0).max(1) as f64
            })
            .collect()
    };
    let (fast, median) = (quantile(10), quantile(2));
    let floor = chains(threads, &fast, groups, rule, 0.8, rule.band);
    let (first, first_links) = chains(threads, &median, groups, rule, 0.5, 2.0);
    let remeasured: Vec<f64> = median
        .iter()
        .zip(&first_links)
        .zip(&first)
        .map(|((t, links), b)| if b.is_empty() { *t } else { links[links.len() / 2].max(1) as f64 })
        .collect();
    let spread = chains(threads, &remeasured, groups, rule, 0.5, 2.0);
    let in_bursts = |b: &Vec<(u64, u64)>| b.iter().map(|x| x.0).sum::<u64>();
    let (mut bursts, mut link_gaps) = floor;
    for (g, (b, l)) in spread.0.into_iter().zip(spread.1).enumerate() {
        if in_bursts(&b) > in_bursts(&bursts[g]) {
            bursts[g] = b;
            link_gaps[g] = l;
        }
    }
    (totals, bursts, link_gaps)
}



/// Chains of each group on each thread, given each group's typical gap:
/// its bursts (executions, duration ns) and the gaps inside them (sorted).
fn chains(threads: &BTreeMap<u32, Vec<(u64, Option<usize>)>>, typical: &[f64], groups: usize, rule: &BurstRule, lo_factor: f64, hi_factor: f64) -> (Bursts, Vec<Vec<u64>>) {
    let n = rule.min_executions.max(2);
    let mut bursts: Vec<Vec<(u64, u64)>> = vec![Vec::new(); groups]; // (executions, duration ns)
    let mut link_gaps: Vec<Vec<u64>> = vec![Vec::new(); groups];
    let mut close = |g: usize, c: Chain, bursts: &mut Vec<Vec<(u64, u64)>>| {
        if c.gaps.len() + 1 >= n {
            bursts[g].push((c.gaps.len() as u64 + 1, c.last - c.first));
            link_gaps[g].extend(c.gaps);
        }
    };
    for seq in threads.values() {
        let mut open: Vec<Vec<Chain>> = (0..groups).map(|_| Vec::new()).collect();
        let mut rank = vec![0usize; groups];
        for (index, &(ts, gid)) in seq.iter().enumerate() {
            let Some(g) = gid else { continue };
            let (lo, hi) = (typical[g] * lo_factor, typical[g] * hi_factor);
            let r = rank[g];
            rank[g] += 1;
            let mut i = 0;
            while i < open[g].len() {
                if (ts - open[g][i].last) as f64 > hi {
                    let c = open[g].swap_remove(i);
                    close(g, c, &mut bursts);
                } else {
                    i += 1;
                }
            }
            // The chain this execution continues: about one round trip before
            // it, with little else run on the thread in between (a task's
            // other steps are other statements). Interleaved chains of the
            // same loop advance in turn: the oldest one continues first.
            let best = open[g]
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    let gap = (ts - c.last) as f64;
                    gap >= lo && gap <= hi && (index - c.last_index) - (r - c.last_rank) <= rule.max_between
                })
                .min_by_key(|(_, c)| c.last)
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    let c = &mut open[g][i];
                    c.gaps.push(ts - c.last);
                    c.last = ts;
                    c.last_index = index;
                    c.last_rank = r;
                }
                None => open[g].push(Chain { first: ts, last: ts, last_index: index, last_rank: r, gaps: Vec::new() }),
            }
        }
        for (g, chains) in open.into_iter().enumerate() {
            for c in chains {
                close(g, c, &mut bursts);
            }
        }
    }
    for g in &mut link_gaps {
        g.sort_unstable();
    }
    (bursts, link_gaps)
}

/// Call sites of each statement text, most executions first.
/// Why `executions - tied` executions have no call site in the owner's
/// code, from what the executable's symbols allow (`symbols`: it has a
/// symbol table or debug file; `line_info`: line tables for the owner's
/// code), with the fix. `None` when every execution is tied.
pub fn untied_reason(executions: u64, tied: u64, symbols: bool, line_info: bool) -> Option<String> {
    let untied = executions.saturating_sub(tied);
    if untied == 0 {
        return None;
    }
    let share = untied as f64 * 100.0 / executions as f64;
    let head = format!("{untied} of {executions} executions ({share:.0}%) are not tied to your code");
    Some(if !symbols {
        format!("{head}: the binary is stripped and no debug file was found, so no frame of yours can be named; keep the symbol table (no `strip = true`) or give the debug file with --debug-dir")
    } else if !line_info {
        format!(
            "{head}: the binary has symbols but no line tables (Cargo's default release profile), and the functions that issue them were inlined into framework code, which the symbol table cannot see; add `debug = \"line-tables-only\"` to `[profile.release]` (no runtime cost) to tie every execution to its function and line"
        )
    } else {
        format!(
            "{head}: their stacks never reach your code although it has line tables: the driver writes them from a task or thread of its own (a connection task, a pool's worker), or the stack copy was cut short; the per-statement numbers still hold, the call sites are unknown"
        )
    })
}

pub fn call_sites_by_statement(executions: &[Execution]) -> BTreeMap<String, Vec<(CallSite, u64)>> {
    let mut counts: BTreeMap<String, BTreeMap<CallSite, u64>> = BTreeMap::new();
    for e in executions {
        if let (Some(sql), Some(site)) = (&e.sql, &e.site) {
            *counts.entry(sql.clone()).or_default().entry(site.clone()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(sql, sites)| {
            let mut v: Vec<(CallSite, u64)> = sites.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            (sql, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(f: &str, line: u32) -> CallSite {
        CallSite { function: f.into(), file: Some("/svc/src/db.rs".into()), line: Some(line), ..Default::default() }
    }

    fn ex(ms: f64, sql: &str, s: &CallSite) -> Execution {
        Execution { ts_ns: (ms * 1e6) as u64, tid: 1, fd: 9, sql: Some(sql.into()), site: Some(s.clone()), ..Default::default() }
    }

    #[test]
    fn a_loop_of_queries_is_an_n_plus_one_and_independent_requests_are_not() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let loop_site = site("svc::db::fetch_authors_one_by_one", 175);
        let single_site = site("svc::db::user_by_id", 200);
        let mut execs = Vec::new();
        // 20 requests, 100 ms apart, each running 30 lookups 0.3 ms apart.
        for r in 0..20 {
            for i in 0..30 {
                execs.push(ex(r as f64 * 100.0 + i as f64 * 0.3, lookup, &loop_site));
            }
        }
        // The same statement once per request from another site, 100 times
        // a second at random (Poisson arrivals from a fixed-seed generator).
        let mut t = 0.0;
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            t += -u.ln() * 10.0;
            execs.push(ex(t, lookup, &single_site));
        }
        let found = detect_n_plus_one(&execs, &BurstRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        let n = &found[0];
        assert_eq!(n.call_site, loop_site);
        assert_eq!(n.bursts, 20);
        assert_eq!(n.median_burst, 30);
        assert!((n.median_burst_ms - 8.7).abs() < 0.01);
    }

    /// A fixed-seed uniform generator in (0, 1].
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        }
    }

    fn exec_at(ms: f64, tid: u32, fd: u32, sql: &str, s: &CallSite) -> Execution {
        Execution { ts_ns: (ms * 1e6) as u64, tid, fd, sql: Some(sql.into()), site: Some(s.clone()), ..Default::default() }
    }

    /// Requests arriving at random every `interval_ms` on average, on 2
    /// worker threads and a pool of 10 connections, each request one page
    /// query then a loop of 25 lookups,
    /// every lookup one round trip (`rtt_ms` + 0.05-0.25 ms of client work,
    /// one in five stretched up to 2.5x by a late wake-up) after the
    /// previous answer; beside it, a single lookup per request
    /// at 100 requests/s from another call site, interleaved across the
    /// same threads and connections.
    fn service(rtt_ms: f64, interval_ms: f64, seed: u64) -> Vec<Execution> {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let page = "SELECT id, author_id FROM posts ORDER BY id DESC LIMIT $1";
        let loop_site = site("svc::db::fetch_authors_one_by_one", 193);
        let page_site = site("svc::db::latest_posts", 180);
        let single_site = site("svc::db::user_by_id", 228);
        let mut rng = Lcg(seed);
        let mut out = Vec::new();
        let mut t = 0.0;
        for r in 0..400u32 {
            t += -rng.next().ln() * interval_ms;
            let tid = 1 + r % 2;
            let mut at = t;
            out.push(exec_at(at, tid, 10 + (rng.next() * 10.0) as u32, page, &page_site));
            for _ in 0..25 {
                // 1 in 5 answers is picked up late (a busy worker): up to 2.5x.
                let late = if rng.next() < 0.2 { 1.0 + 1.5 * rng.next() } else { 1.0 };
                at += (rtt_ms + 0.05 + 0.2 * rng.next()) * late;
                out.push(exec_at(at, tid, 10 + (rng.next() * 10.0) as u32, lookup, &loop_site));
            }
        }
        let mut t = 0.0;
        for _ in 0..1_000 {
            t += -rng.next().ln() * 10.0;
            let tid = 1 + (rng.next() * 2.0) as u32;
            out.push(exec_at(t, tid.min(2), 10 + (rng.next() * 10.0) as u32, lookup, &single_site));
        }
        out.sort_by_key(|e| e.ts_ns);
        out
    }

    #[test]
    fn the_loop_is_found_with_the_database_near_or_far_and_the_single_lookup_beside_it_is_not() {
        // 40 requests/s (about 2 loops running at once at 3 ms), and 4/s at
        // 10 ms (a 250 ms loop: about one at a time per thread).
        for (rtt, interval, seed) in [(0.1, 25.0, 7), (3.0, 25.0, 8), (10.0, 250.0, 9)] {
            let found = detect_n_plus_one(&service(rtt, interval, seed), &BurstRule::default());
            assert_eq!(found.len(), 1, "rtt {rtt} ms: {found:#?}");
            let n = &found[0];
            assert_eq!(n.call_site.function, "svc::db::fetch_authors_one_by_one", "rtt {rtt} ms");
            // Late wake-ups amid two loops interleaved on a thread (3 ms) split some bursts.
            assert!(n.executions_in_bursts as f64 >= 0.8 * n.executions as f64, "rtt {rtt} ms: {n:#?}");
            eprintln!("rtt {rtt} ms: {} of {} in bursts, median burst {}, round trip {:.3} ms", n.executions_in_bursts, n.executions, n.median_burst, n.round_trip_ms);
            // 25 per request (two requests' loops one round trip apart may
            // join; late wake-ups amid interleaved loops split some).
            assert!((10..=50).contains(&n.median_burst), "rtt {rtt} ms: {n:#?}");
            // The measured round trip is the database's distance plus the client's work.
            assert!(n.round_trip_ms >= rtt && n.round_trip_ms <= 1.5 * rtt + 0.4, "rtt {rtt} ms: {n:#?}");
            assert!((n.saved_ms_per_burst - (n.median_burst - 1) as f64 * n.round_trip_ms).abs() < 1e-3);
        }
    }

    #[test]
    fn a_single_lookup_per_request_is_not_an_n_plus_one_at_any_rate_or_distance() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let s = site("svc::db::user_by_id", 228);
        for (rate, threads, seed) in [(500.0, 2u32, 1u64), (500.0, 1, 2), (50.0, 2, 3), (5_000.0, 2, 4)] {
            let mut rng = Lcg(seed);
            let mut t = 0.0;
            let execs: Vec<Execution> = (0..10_000)
                .map(|_| {
                    t += -rng.next().ln() * 1_000.0 / rate;
                    let tid = 1 + ((rng.next() * f64::from(threads)) as u32).min(threads - 1);
                    exec_at(t, tid, 10 + (rng.next() * 10.0) as u32, lookup, &s)
                })
                .collect();
            let found = detect_n_plus_one(&execs, &BurstRule::default());
            assert!(found.is_empty(), "{rate}/s on {threads} threads: {found:#?}");
        }
    }

    /// The demo's test load: one client, one request after the other, each
    /// round a page query then 30 lookups in a loop (0.3 ms apart), then a
    /// single lookup from another call site: the single lookups are as
    /// regular as the loop's, but a whole request runs between two of them.
    #[test]
    fn a_closed_loop_client_does_not_make_the_once_per_round_lookup_an_n_plus_one() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let page = "SELECT id, author_id FROM posts ORDER BY id DESC LIMIT $1";
        let (loop_site, page_site, single_site) = (site("svc::db::loop", 193), site("svc::db::page", 180), site("svc::db::user_by_id", 228));
        let mut rng = Lcg(5);
        let mut out = Vec::new();
        let mut t = 0.0;
        for _ in 0..300 {
            out.push(exec_at(t, 1, 10, page, &page_site));
            for _ in 0..30 {
                t += 0.3 + 0.05 * rng.next();
                out.push(exec_at(t, 1, 10, lookup, &loop_site));
            }
            t += 2.0 + rng.next();
            out.push(exec_at(t, 1, 10, lookup, &single_site));
            t += 2.0 + rng.next();
        }
        let found = detect_n_plus_one(&out, &BurstRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].call_site, loop_site);
        assert_eq!(found[0].median_burst, 30);
    }

    #[test]
    fn a_loop_of_statements_prepared_before_the_audit_is_found_with_its_text_unknown() {
        let mut execs = service(0.1, 25.0, 11);
        let loop_fn = "svc::db::fetch_authors_one_by_one";
        for e in execs.iter_mut() {
            if e.site.as_ref().is_some_and(|s| s.function == loop_fn) {
                e.sql = None;
            }
        }
        let found = detect_n_plus_one(&execs, &BurstRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].query.as_str(), found[0].call_site.function.as_str()), (UNKNOWN_TEXT, loop_fn));
    }

    /// One request at a time, the task moving between 2 workers at its
    /// awaits (as tokio's I/O driver wakes it on either): the loop is
    /// whole in the process-wide sequence.
    #[test]
    fn a_loop_that_hops_between_worker_threads_is_found_whole() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let (loop_site, page_site) = (site("svc::db::loop", 193), site("svc::db::page", 180));
        let mut rng = Lcg(21);
        let mut out = Vec::new();
        let mut t = 0.0;
        for _ in 0..200 {
            out.push(exec_at(t, 1 + (rng.next() * 2.0) as u32, 10, "SELECT 1 FROM posts", &page_site));
            for _ in 0..30 {
                t += 0.15 + 0.1 * rng.next();
                out.push(exec_at(t, 1 + (rng.next() * 2.0) as u32, 10, lookup, &loop_site));
            }
            t += 20.0 + 10.0 * rng.next();
        }
        let found = detect_n_plus_one(&out, &BurstRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].median_burst, found[0].executions_in_bursts), (30, 6_000), "{found:#?}");
    }

    #[test]
    fn transaction_control_repeated_in_a_loop_is_not_an_n_plus_one() {
        let s = site("svc::db::transfer", 12);
        let mut execs = Vec::new();
        for i in 0..200 {
            for (k, sql) in ["BEGIN", "SET LOCAL statement_timeout = 100", "COMMIT"].iter().enumerate() {
                execs.push(exec_at(i as f64 * 0.3 + k as f64 * 0.1, 1, 9, sql, &s));
            }
        }
        for sql in ["BEGIN", "commit", "  Rollback", "SAVEPOINT a", "SET x = 1", "START TRANSACTION"] {
            assert!(is_transaction_control(sql), "{sql}");
        }
        assert!(!is_transaction_control("SELECT 1"));
        let found = detect_n_plus_one(&execs, &BurstRule::default());
        assert!(found.is_empty(), "{found:#?}");
    }

    /// With chains (the kernel side tracked answers), what is linked is
    /// what waited for what, never timing: a lookup once per request in
    /// perfect lockstep with a loop's pace, on one thread and connection,
    /// is its own chain each time and not an N+1; the loop beside it is,
    /// whatever its pace or the threads it hops between, also when its
    /// body runs two statements per item.
    #[test]
    fn chains_of_round_trips_tell_a_loop_from_independent_requests() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let posts = "SELECT id FROM posts WHERE author_id = $1";
        let (loop_site, posts_site, single_site) = (site("svc::db::loop", 193), site("svc::db::posts", 199), site("svc::db::user_by_id", 228));
        let mut rng = Lcg(7);
        let mut out = Vec::new();
        let mut t = 0.0;
        let mut chain = 0;
        for _ in 0..300 {
            // A loop request: one chain, 10 items, two statements each.
            chain += 1;
            for _ in 0..10 {
                for (sql, s) in [(lookup, &loop_site), (posts, &posts_site)] {
                    t += 0.3;
                    out.push(Execution { chain, ..exec_at(t, 1 + (rng.next() * 2.0) as u32, 10, sql, s) });
                }
            }
            // Single lookups exactly 0.3 ms apart: as regular as the loop,
            // but each a request of its own (its own chain).
            for _ in 0..10 {
                chain += 1;
                t += 0.3;
                out.push(Execution { chain, ..exec_at(t, 1, 10, lookup, &single_site) });
            }
        }
        let found = detect_n_plus_one(&out, &BurstRule::default());
        let sites: Vec<&CallSite> = found.iter().map(|n| &n.call_site).collect();
        assert_eq!(sites, [&loop_site, &posts_site], "{found:#?}");
        assert_eq!((found[0].median_burst, found[0].bursts, found[0].executions_in_bursts), (10, 300, 3000));
        // One iteration: two statements, 0.6 ms.
        assert_eq!(found[0].round_trip_ms, 0.6);
        // The same executions without chains: the timing reading cannot
        // tell the lockstep lookups from a loop.
        let unchained: Vec<Execution> = out.iter().map(|e| Execution { chain: 0, ..e.clone() }).collect();
        assert!(detect_n_plus_one(&unchained, &BurstRule::default()).iter().any(|n| n.call_site == single_site));
    }

    /// A build without line tables whose query code was inlined into
    /// framework functions: no execution has a call site, yet the chains of
    /// round trips still show the loop, by its statement; the independent
    /// lookups (a chain each) are still no N+1.
    #[test]
    fn a_loop_is_found_by_its_statement_when_no_execution_is_tied_to_code() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let single = "SELECT id, name FROM users WHERE email = $1";
        let nowhere = site("unused", 1);
        let mut out = Vec::new();
        let (mut t, mut chain) = (0.0, 0);
        for _ in 0..200 {
            chain += 1;
            for _ in 0..8 {
                t += 0.3;
                out.push(Execution { chain, site: None, ..exec_at(t, 1, 10, lookup, &nowhere) });
            }
            for _ in 0..8 {
                chain += 1;
                t += 0.3;
                out.push(Execution { chain, site: None, ..exec_at(t, 1, 10, single, &nowhere) });
            }
        }
        let found = detect_n_plus_one(&out, &BurstRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].query.as_str(), found[0].call_site.function.as_str()), (lookup, UNTIED_FUNCTION));
        assert_eq!((found[0].median_burst, found[0].bursts), (8, 200));
        // Unknown texts without a call site are never grouped together.
        let unknown: Vec<Execution> = out.iter().map(|e| Execution { sql: None, ..e.clone() }).collect();
        assert!(detect_n_plus_one(&unknown, &BurstRule::default()).is_empty());
    }

    /// A loop whose iterations on one connection were tied to another call
    /// site of the same statement (a stack key shared on that connection)
    /// is one loop, at the site issuing most of them; that other site's
    /// own once-per-request lookups are no N+1. A second loop of the same
    /// statement in the request is counted with the first (the stated
    /// price).
    #[test]
    fn a_loop_split_between_two_call_sites_by_shared_stack_keys_is_one_loop() {
        let lookup = "SELECT id, name, country FROM users WHERE id = $1";
        let (loop_site, single_site, second_loop) = (site("svc::db::loop", 193), site("svc::db::user_by_id", 228), site("svc::db::loop2", 240));
        let mut out = Vec::new();
        let mut t = 0.0;
        let mut chain = 0;
        for r in 0..100 {
            chain += 1;
            // 30 iterations over 3 connections; those on fd 12 carry the
            // single lookup's site.
            for i in 0..30 {
                t += 0.3;
                let fd = 10 + i % 3;
                let s = if fd == 12 && r % 2 == 0 { &single_site } else { &loop_site };
                out.push(Execution { chain, ..exec_at(t, 1, fd, lookup, s) });
            }
            // Then a second, separate loop of the same statement.
            for _ in 0..6 {
                t += 0.3;
                out.push(Execution { chain, ..exec_at(t, 1, 10, lookup, &second_loop) });
            }
            chain += 1;
            t += 0.3;
            out.push(Execution { chain, ..exec_at(t, 1, 12, lookup, &single_site) });
        }
        let found = detect_n_plus_one(&out, &BurstRule::default());
        let sites: Vec<&CallSite> = found.iter().map(|n| &n.call_site).collect();
        assert_eq!(sites, [&loop_site], "{found:#?}");
        assert_eq!((found[0].executions_in_bursts, found[0].executions), (3600, 3600));
    }

    /// Fewer repetitions than `min_executions` in a chain (a handler that
    /// looks one row up twice) are no loop; a loop's BEGINs in one chain
    /// are transactions per item.
    #[test]
    fn short_repeats_in_a_chain_are_no_loop_and_per_item_transactions_follow_chains() {
        let s = site("svc::db::twice", 40);
        let w = site("svc::jobs::per_item", 77);
        let mut out = Vec::new();
        let mut t = 0.0;
        for chain in 1..=200 {
            for _ in 0..4 {
                t += 0.2;
                out.push(Execution { chain, ..exec_at(t, 1, 9, "SELECT 1 FROM t WHERE id = $1", &s) });
            }
        }
        assert!(detect_n_plus_one(&out, &BurstRule::default()).is_empty());
        for _ in 0..20 {
            for _ in 0..8 {
                for sql in ["BEGIN", "UPDATE jobs SET done = true WHERE id = $1", "COMMIT"] {
                    t += 0.2;
                    out.push(Execution { chain: 1000, ..exec_at(t, 2, 11, sql, &w) });
                }
            }
        }
        let per_item = detect_per_item_transactions(&out, &BurstRule::default());
        assert_eq!(per_item.len(), 1, "{per_item:#?}");
        assert_eq!((per_item[0].call_site.clone(), per_item[0].median_round_trips), (w, 3));
    }

    #[test]
    fn untied_executions_say_why_by_what_the_build_allows() {
        assert_eq!(untied_reason(100, 100, true, true), None);
        let stripped = untied_reason(100, 0, false, false).unwrap();
        assert!(stripped.starts_with("100 of 100 executions (100%)") && stripped.contains("--debug-dir"), "{stripped}");
        let symbols_only = untied_reason(6055, 673, true, false).unwrap();
        assert!(symbols_only.starts_with("5382 of 6055 executions (89%)") && symbols_only.contains("line-tables-only"), "{symbols_only}");
        assert!(untied_reason(10, 9, true, true).unwrap().contains("task or thread of its own"));
    }

    #[test]
    fn unknown_texts_are_filled_from_their_call_site() {
        let s = site("svc::a", 1);
        let mut execs = vec![ex(0.0, "SELECT 1", &s), Execution { sql: None, ..ex(1.0, "", &s) }];
        assert_eq!(fill_texts_from_call_sites(&mut execs), 1);
        assert_eq!(execs[1].sql.as_deref(), Some("SELECT 1"));
        assert_eq!(normalize_sql("SELECT a\n   FROM t"), "SELECT a FROM t");
    }

    /// A service whose statements all go through one helper
    /// (`svc::db::run_query`, itself through a retry helper): one handler
    /// loops over items, three others query once per request.
    fn through_wrapper(requests: u64) -> Vec<Execution> {
        let run_query = site("svc::db::run_query", 30);
        let retry = site("svc::db::with_retry", 12);
        let handler = site("svc::handlers::page", 80);
        let stack = |caller: CallSite| -> std::sync::Arc<[CallSite]> { vec![run_query.clone(), caller, handler.clone()].into() };
        let loop_stack = stack(site("svc::tags::load_tags_one_by_one", 51));
        let once: Vec<(&str, std::sync::Arc<[CallSite]>)> = vec![
            ("SELECT id, name FROM accounts WHERE id = $1", stack(site("svc::accounts::load_account", 20))),
            ("SELECT id, name FROM orders WHERE account_id = $1", stack(site("svc::orders::load_orders", 22))),
            ("SELECT id, name FROM settings WHERE id = $1", stack(site("svc::settings::load_settings", 24))),
        ];
        let mut out = Vec::new();
        let mut t = 0.0;
        for r in 0..requests {
            let chain = r + 1;
            for (sql, callers) in &once {
                t += 0.2;
                out.push(Execution { chain, callers: callers.clone(), ..ex(t, sql, &retry) });
            }
            for _ in 0..20 {
                t += 0.2;
                out.push(Execution { chain, callers: loop_stack.clone(), ..ex(t, "SELECT id, name FROM tags WHERE id = $1", &retry) });
            }
            t += 50.0;
        }
        out
    }

    #[test]
    fn an_n_plus_one_through_a_shared_wrapper_is_at_the_looping_function_with_the_wrapper_as_its_path() {
        let mut execs = through_wrapper(30);
        // Before: every statement's innermost owner frame is the helper.
        let before = detect_n_plus_one(&execs, &BurstRule::default());
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].call_site.function, "svc::db::with_retry");
        let wrappers = resolve_wrappers(&mut execs);
        let names: Vec<&str> = wrappers.iter().map(|w| w.function.as_str()).collect();
        assert_eq!(names, ["svc::db::run_query"], "{wrappers:#?}");
        assert_eq!((wrappers[0].statements, wrappers[0].callers, wrappers[0].executions), (4, 4, 30 * 23));
        let found = detect_n_plus_one(&execs, &BurstRule::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        let n = &found[0];
        assert_eq!(n.call_site.function, "svc::tags::load_tags_one_by_one");
        assert_eq!(n.call_site.line, Some(51), "the line in the looping function");
        assert_eq!(n.call_site.via, ["svc::db::with_retry", "svc::db::run_query"]);
        assert_eq!((n.bursts, n.median_burst), (30, 20));
        // The once-per-request callers are call sites of their own, above
        // the handler, and no N+1.
        let account = execs.iter().find(|e| e.sql.as_deref().is_some_and(|s| s.contains("accounts"))).unwrap();
        assert_eq!(account.site.as_ref().unwrap().function, "svc::accounts::load_account");
        assert_eq!(account.callers.iter().map(|c| c.function.as_str()).collect::<Vec<_>>(), ["svc::handlers::page"]);
    }

    /// The genuine loop beside it: a function that issues its own statement
    /// (one statement, however many callers) stays the call site, and so
    /// does a helper with too few statements or callers to be generic.
    #[test]
    fn a_query_function_called_from_many_places_is_no_wrapper() {
        let lookup = "SELECT id, name FROM users WHERE id = $1";
        let user_by_id = site("svc::db::user_by_id", 40);
        let mut execs = Vec::new();
        for (r, caller) in ["svc::a::one", "svc::b::two", "svc::c::three", "svc::d::four"].iter().enumerate() {
            let callers: std::sync::Arc<[CallSite]> = vec![site(caller, 10)].into();
            for i in 0..20 {
                execs.push(Execution { chain: r as u64 + 1, callers: callers.clone(), ..ex(r as f64 * 100.0 + i as f64 * 0.2, lookup, &user_by_id) });
            }
        }
        // A helper with three statements from two callers: not generic.
        let helper = site("svc::db::small_helper", 60);
        for (k, (sql, caller)) in [("SELECT 1 FROM a", "svc::x::f"), ("SELECT 1 FROM b", "svc::x::f"), ("SELECT 1 FROM c", "svc::y::g")].iter().enumerate() {
            let callers: std::sync::Arc<[CallSite]> = vec![site(caller, 5)].into();
            execs.push(Execution { chain: 100 + k as u64, callers, ..ex(1000.0 + k as f64, sql, &helper) });
        }
        let before = execs.clone();
        assert!(resolve_wrappers(&mut execs).is_empty());
        assert_eq!(execs, before);
        let found = detect_n_plus_one(&execs, &BurstRule::default());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].call_site, user_by_id);
    }

    /// A specific query function inside a wrapper (`with_cache(|| user_by_id(id))`-style
    /// helpers outside it) stays the call site: only generic frames are passed over.
    #[test]
    fn a_specific_query_function_inside_a_wrapper_stays_the_call_site() {
        let mut execs = through_wrapper(10);
        let user_by_id = site("svc::db::user_by_id", 40);
        let callers: std::sync::Arc<[CallSite]> = vec![site("svc::db::run_query", 30), site("svc::profile::show", 9)].into();
        execs.push(Execution { chain: 999, callers, ..ex(99_999.0, "SELECT id, name FROM users WHERE id = $1", &user_by_id) });
        resolve_wrappers(&mut execs);
        assert_eq!(execs.last().unwrap().site.as_ref().unwrap(), &user_by_id);
    }

}
