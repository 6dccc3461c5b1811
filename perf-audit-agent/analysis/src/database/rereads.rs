//! The same row read again and again within one unit of work, whatever I/O
//! sits between the reads. Pure: executions in, patterns out.
//!
//! **How it is found.** Each execution of a prepared statement carries a
//! hash of its bound values (`Execution::params`, from the Bind message;
//! the values themselves are never kept). Per call site and statement
//! (reads only: SELECT, WITH; or a statement prepared before the audit
//! whose text stayed unknown), the executions in time order are cut into
//! *runs* of consecutive executions with the same values. A worker that
//! re-reads a job's row for each of its items makes one run per job (5
//! items, 5 reads of one row, then the next job's row), whatever ran
//! between two reads (an HTTP call per item ends every chain of round
//! trips, so the N+1 rule never sees it); a normal N+1 reads distinct rows
//! (runs of 1); independent requests reading rows at random make short
//! runs. A hot row read by every request (one value, or one value holding
//! most runs) is not a loop: the long runs must cover several values, none
//! holding more than half of them.
//!
//! Known limits: two instances of the loop running at once interleave
//! their reads and shorten the runs (found in part, or not); statements
//! sent with the simple protocol (values inlined in the text) carry no
//! hash and are not examined.

use std::collections::BTreeMap;

use super::analysis::{CallSite, Execution, UNKNOWN_TEXT, is_transaction_control};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RereadRule {
    /// Executions with a value hash at the call site.
    pub min_executions: usize,
    /// Consecutive executions with the same values that make a run.
    pub min_run: usize,
    /// Share of the executions in such runs.
    pub min_share: f64,
    /// Distinct values among the runs (a hot row is one value).
    pub min_values: usize,
    /// No value may hold more than this share of the runs' executions.
    pub max_value_share: f64,
}

impl Default for RereadRule {
    fn default() -> Self {
        RereadRule { min_executions: 10, min_run: 3, min_share: 0.6, min_values: 3, max_value_share: 0.5 }
    }
}

impl RereadRule {
    pub fn describe(&self) -> String {
        format!(
            "a read statement from one call site executed at least {} times with bound values, at least {:.0}% of them in runs of {} or more consecutive executions with the same values (the same row read again, whatever ran between), the runs covering at least {} distinct values, none more than {:.0}% of them (a hot row read by independent requests is not a loop)",
            self.min_executions,
            self.min_share * 100.0,
            self.min_run,
            self.min_values,
            self.max_value_share * 100.0
        )
    }
}

/// A call site that re-reads the same values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct RepeatedRead {
    pub call_site: CallSite,
    pub query: String,
    pub executions: u64,
    /// Distinct value hashes among them.
    pub distinct_values: u64,
    /// Runs of `min_run` or more, and their executions.
    pub runs: u64,
    pub executions_in_runs: u64,
    /// Reads per run (per unit of work), median and largest.
    pub median_run: u64,
    pub max_run: u64,
    /// Median time a read took (write to the next answer on its
    /// connection), when answers were seen: what each repeat costs.
    pub read_ms: Option<f64>,
    /// Executions a read-once would save.
    pub avoidable_reads: u64,
}

fn is_read(sql: &str) -> bool {
    let w: String = sql.trim_start().chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
    (w == "SELECT" || w == "WITH") && !is_transaction_control(sql)
}

/// The call sites re-reading the same rows; `read_ms` gives the median
/// round trip of a (call site, statement)'s executions when known.
pub fn detect_repeated_reads(executions: &[Execution], rule: &RereadRule, read_ms: impl Fn(&[&Execution]) -> Option<f64>) -> Vec<RepeatedRead> {
    let mut groups: BTreeMap<(&CallSite, &str), Vec<&Execution>> = BTreeMap::new();
    for e in executions {
        // A statement prepared before the audit whose text was not
        // recovered is still one statement of its call site.
        let sql = e.sql.as_deref().unwrap_or(UNKNOWN_TEXT);
        if let (Some(site), Some(_)) = (&e.site, e.params)
            && (e.sql.is_none() || is_read(sql))
        {
            groups.entry((site, sql)).or_default().push(e);
        }
    }
    let mut out = Vec::new();
    for ((site, sql), mut ex) in groups {
        if ex.len() < rule.min_executions {
            continue;
        }
        ex.sort_by_key(|e| e.ts_ns);
        let mut runs: Vec<(u64, usize)> = Vec::new();
        for e in &ex {
            let v = e.params.unwrap_or_default();
            match runs.last_mut() {
                Some((last, n)) if *last == v => *n += 1,
                _ => runs.push((v, 1)),
            }
        }
        let long: Vec<&(u64, usize)> = runs.iter().filter(|(_, n)| *n >= rule.min_run).collect();
        let in_runs: usize = long.iter().map(|(_, n)| *n).sum();
        let mut per_value: BTreeMap<u64, usize> = BTreeMap::new();
        for (v, n) in &long {
            *per_value.entry(*v).or_default() += *n;
        }
        let top = per_value.values().copied().max().unwrap_or(0);
        if (in_runs as f64) < rule.min_share * ex.len() as f64 || per_value.len() < rule.min_values || top as f64 > rule.max_value_share * in_runs as f64 {
            continue;
        }
        let mut sizes: Vec<usize> = long.iter().map(|(_, n)| *n).collect();
        sizes.sort_unstable();
        let distinct: std::collections::BTreeSet<u64> = ex.iter().filter_map(|e| e.params).collect();
        out.push(RepeatedRead {
            call_site: site.clone(),
            query: sql.to_string(),
            executions: ex.len() as u64,
            distinct_values: distinct.len() as u64,
            runs: long.len() as u64,
            executions_in_runs: in_runs as u64,
            median_run: sizes[sizes.len() / 2] as u64,
            max_run: sizes.last().copied().unwrap_or(0) as u64,
            read_ms: read_ms(&ex),
            avoidable_reads: (in_runs - long.len()) as u64,
        });
    }
    out.sort_by(|a, b| b.avoidable_reads.cmp(&a.avoidable_reads));
    out
}

/// The median time from each execution to the next answer on its
/// connection (ms), when answers were seen: what one read costs.
pub fn median_round_trip_ms(executions: &[&Execution], io: &[super::transactions::WireIo]) -> Option<f64> {
    let mut answers: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for w in io {
        if let super::transactions::WireIoKind::Answer(_) = w.kind {
            answers.entry(w.fd).or_default().push(w.ts_ns);
        }
    }
    for v in answers.values_mut() {
        v.sort_unstable();
    }
    let mut rtts: Vec<u64> = executions
        .iter()
        .filter_map(|e| {
            let a = answers.get(&e.fd)?;
            let k = a.partition_point(|t| *t <= e.ts_ns);
            a.get(k).map(|t| t - e.ts_ns)
        })
        .collect();
    if rtts.is_empty() {
        return None;
    }
    rtts.sort_unstable();
    Some((rtts[rtts.len() / 2] as f64 / 1e4).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(f: &str) -> CallSite {
        CallSite { function: f.into(), file: Some("/svc/src/worker.rs".into()), line: Some(20), ..Default::default() }
    }

    fn ex(ms: f64, sql: &str, s: &CallSite, v: u64) -> Execution {
        Execution { ts_ns: (ms * 1e6) as u64, tid: 1, fd: 9, sql: Some(sql.into()), site: Some(s.clone()), params: Some(v), ..Default::default() }
    }

    const TEMPLATE: &str = "SELECT subject, body FROM templates WHERE id = $1";

    #[test]
    fn a_row_reread_per_item_is_found_and_read_once_distinct_rows_and_a_hot_row_are_not() {
        let reread = site("svc::notify_rereading");
        let once = site("svc::notify_read_once");
        let n1 = site("svc::load_one_by_one");
        let hot = site("svc::config");
        let mut e = Vec::new();
        let mut t = 0.0;
        for job in 0..40u64 {
            let template = job % 12;
            e.push(ex(t, TEMPLATE, &once, template));
            for _ in 0..5 {
                e.push(ex(t + 0.5, TEMPLATE, &reread, template));
                // An HTTP call between reads: nothing links them but the value.
                t += 120.0;
            }
            for i in 0..20 {
                e.push(ex(t, "SELECT name FROM owners WHERE id = $1", &n1, job * 20 + i));
            }
        }
        // A hot row read by every request, and two hot rows at random.
        for i in 0..300u64 {
            e.push(ex(i as f64, "SELECT value FROM config WHERE key = $1", &hot, 1));
            e.push(ex(i as f64, "SELECT value FROM flags WHERE key = $1", &hot, (i * 7919) % 3 / 2));
        }
        let found = detect_repeated_reads(&e, &RereadRule::default(), |_| Some(0.2));
        assert_eq!(found.len(), 1, "{found:#?}");
        let r = &found[0];
        assert_eq!(r.call_site, reread);
        assert_eq!((r.executions, r.distinct_values, r.runs, r.median_run, r.avoidable_reads), (200, 12, 40, 5, 160));
    }
}
