//! Statement executions seen on the wire, tied to the code that issued
//! them, and the N+1 pattern. Pure: executions in, patterns out.
//!
//! **How N+1 is detected.** The wire shows no request boundaries, so a
//! loop of queries is recognised by its shape in time: the same statement
//! from the same call site executed again and again, each one right after
//! the previous answer. A *burst* is a run of executions of one (statement,
//! call site) pair with gaps of at most `max_gap_ms` between consecutive
//! ones, holding at least `min_executions` within `window_ms`. Unrelated
//! requests that happen to run the same one-off query also come close
//! together under load, so a call site is reported only when most of its
//! executions (`min_share`) are in bursts: for a loop that is every
//! execution, for independent requests a small fraction (a run of 4 gaps
//! under 5 ms in a row is rare below ~150 executions a second of that one
//! call site; above that, independent calls can look like a loop, which is
//! the known limit of a detector that cannot see request boundaries).

use std::collections::BTreeMap;

/// The owner's frame that issued a statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct CallSite {
    /// Async fn bodies named after their fn.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One execution seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub ts_ns: u64,
    pub tid: u32,
    pub fd: u32,
    /// Statement text (normalised whitespace), when known.
    pub sql: Option<String>,
    /// The innermost frame of the target's own code, when the stack reached it.
    pub site: Option<CallSite>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstRule {
    pub min_executions: usize,
    pub window_ms: f64,
    pub max_gap_ms: f64,
    pub min_share: f64,
}

impl Default for BurstRule {
    fn default() -> Self {
        BurstRule { min_executions: 5, window_ms: 50.0, max_gap_ms: 5.0, min_share: 0.5 }
    }
}

impl BurstRule {
    pub fn describe(&self) -> String {
        format!(
            "the same statement from the same call site executed at least {} times within {} ms, each at most {} ms after the previous one, for at least {:.0}% of that call site's executions",
            self.min_executions,
            self.window_ms,
            self.max_gap_ms,
            self.min_share * 100.0
        )
    }
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

/// Transaction control and session statements (`BEGIN`, `COMMIT`,
/// `SAVEPOINT`, `SET`...): one per item is not an N+1 (they cannot be
/// batched with `= ANY($1)`); a loop of them is a transaction per item.
pub fn is_transaction_control(sql: &str) -> bool {
    let first = sql.trim_start().split(|c: char| c.is_whitespace() || c == ';').next().unwrap_or("").to_ascii_uppercase();
    matches!(
        first.as_str(),
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" | "SET" | "RESET" | "SHOW" | "DISCARD" | "PREPARE" | "DEALLOCATE"
    )
}

fn opens_transaction(sql: &str) -> bool {
    let q = sql.trim_start().to_ascii_uppercase();
    q.starts_with("BEGIN") || q.starts_with("START TRANSACTION")
}

fn closes_transaction(sql: &str) -> bool {
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
    let bursts = bursts_by_site(&begins, rule, |_| true);
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

pub fn detect_n_plus_one(executions: &[Execution], rule: &BurstRule) -> Vec<NPlusOne> {
    bursts_by_site(executions, rule, |sql| !is_transaction_control(sql))
}

fn bursts_by_site(executions: &[Execution], rule: &BurstRule, keep: impl Fn(&str) -> bool) -> Vec<NPlusOne> {
    let mut groups: BTreeMap<(&str, &CallSite), Vec<u64>> = BTreeMap::new();
    for e in executions {
        if let (Some(sql), Some(site)) = (&e.sql, &e.site)
            && keep(sql) {
                groups.entry((sql.as_str(), site)).or_default().push(e.ts_ns);
            }
    }
    let gap = (rule.max_gap_ms * 1e6) as u64;
    let window = (rule.window_ms * 1e6) as u64;
    let mut out = Vec::new();
    for ((sql, site), mut ts) in groups {
        ts.sort_unstable();
        let mut bursts: Vec<(u64, u64)> = Vec::new(); // (executions, duration ns)
        let mut start = 0;
        for i in 1..=ts.len() {
            if i == ts.len() || ts[i] - ts[i - 1] > gap {
                let run = &ts[start..i];
                let n = rule.min_executions.max(1);
                if run.len() >= n && run.windows(n).any(|w| w[n - 1] - w[0] <= window) {
                    bursts.push((run.len() as u64, run[run.len() - 1] - run[0]));
                }
                start = i;
            }
        }
        let in_bursts: u64 = bursts.iter().map(|b| b.0).sum();
        if bursts.is_empty() || (in_bursts as f64) < rule.min_share * ts.len() as f64 {
            continue;
        }
        let mut sizes: Vec<u64> = bursts.iter().map(|b| b.0).collect();
        sizes.sort_unstable();
        let mut durations: Vec<u64> = bursts.iter().map(|b| b.1).collect();
        durations.sort_unstable();
        out.push(NPlusOne {
            query: sql.to_string(),
            call_site: site.clone(),
            bursts: bursts.len() as u64,
            executions_in_bursts: in_bursts,
            executions: ts.len() as u64,
            median_burst: sizes[sizes.len() / 2],
            max_burst: *sizes.last().unwrap_or(&0),
            median_burst_ms: durations[durations.len() / 2] as f64 / 1e6,
        });
    }
    out.sort_by(|a, b| b.executions_in_bursts.cmp(&a.executions_in_bursts).then(a.call_site.cmp(&b.call_site)));
    out
}

/// Call sites of each statement text, most executions first.
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
        CallSite { function: f.into(), file: Some("/svc/src/db.rs".into()), line: Some(line) }
    }

    fn ex(ms: f64, sql: &str, s: &CallSite) -> Execution {
        Execution { ts_ns: (ms * 1e6) as u64, tid: 1, fd: 9, sql: Some(sql.into()), site: Some(s.clone()) }
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

    #[test]
    fn unknown_texts_are_filled_from_their_call_site() {
        let s = site("svc::a", 1);
        let mut execs = vec![ex(0.0, "SELECT 1", &s), Execution { sql: None, ..ex(1.0, "", &s) }];
        assert_eq!(fill_texts_from_call_sites(&mut execs), 1);
        assert_eq!(execs[1].sql.as_deref(), Some("SELECT 1"));
        assert_eq!(normalize_sql("SELECT a\n   FROM t"), "SELECT a FROM t");
    }
}
