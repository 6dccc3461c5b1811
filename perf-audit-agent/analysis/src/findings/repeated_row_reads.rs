//! `repeated-row-reads`: a call site that reads the same row again and
//! again within one unit of work (see `database::rereads`). P1 from 100
//! avoidable reads in the audit, else P2.

use super::{Category, CodeFix, Complexity, Evidence, Finding, Rule, Severity};
use crate::database::rereads::RereadRule;

pub struct RepeatedRowReads;

impl Rule for RepeatedRowReads {
    fn id(&self) -> &'static str {
        "repeated-row-reads"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        db.repeated_reads
            .iter()
            .map(|r| {
                let sev = if r.avoidable_reads >= 100 { Severity::P1 } else { Severity::P2 };
                let cost = r.read_ms.map(|ms| format!(", ~{ms:.2} ms each ({:.0} ms in all)", ms * r.avoidable_reads as f64)).unwrap_or_default();
                Finding {
                    rule: self.id().to_string(),
                    severity: sev,
                    category: Category::Database,
                    title: format!("The same row read {} times per unit of work in `{}`", r.median_run, r.call_site.function),
                    function: r.call_site.function.clone(),
                    file: r.call_site.file.clone(),
                    line: r.call_site.line,
                    evidence: format!(
                        "`{}` ran {} times here with only {} distinct bound values: {} runs of the same values read again and again (a median {}, up to {} reads in a row), {} reads that one read per run would avoid{cost}. Other I/O between the reads does not hide them: the values are compared, not the timing. (Rule: {})",
                        r.query,
                        r.executions,
                        r.distinct_values,
                        r.runs,
                        r.median_run,
                        r.max_run,
                        r.avoidable_reads,
                        RereadRule::default().describe()
                    ),
                    recommendation: "read the row once before the loop and pass it down (or cache it for the unit of work); if each item needs different rows, fetch them in one batched query (`WHERE id = ANY($1)`)".into(),
                    impact: sev.impact(),
                    complexity: Complexity::Easy,
                    estimated_gain: format!("{} of {} reads avoided", r.avoidable_reads, r.executions),
                    ranking: format!("{sev:?}: {} avoidable reads (P1 from 100)", r.avoidable_reads),
                    code_fix: Some(CodeFix {
                        before: "for recipient in &job.recipients {\n    let template = sqlx::query_as(\"SELECT ... FROM templates WHERE id = $1\").bind(job.template_id).fetch_one(&pool).await?;\n    send(&template, recipient).await?;\n}".into(),
                        after: "let template = sqlx::query_as(\"SELECT ... FROM templates WHERE id = $1\").bind(job.template_id).fetch_one(&pool).await?;\nfor recipient in &job.recipients {\n    send(&template, recipient).await?;\n}".into(),
                    }),
                    source: None,
                }
            })
            .collect()
    }
}
