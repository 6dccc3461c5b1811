//! `unused-index`: an index that no scan has used since the statistics
//! were reset (`pg_stat_user_indexes.idx_scan = 0`), and that enforces no
//! constraint. It costs disk, cache and a write on every insert. P2.
//! Only with the evidence of `database::thresholds`: a table large enough
//! that the planner would use an index, read often enough during a long
//! enough audit (a GIN index on a 60-row table looks unused and is not),
//! and no statement seen during the audit whose plan would read through it
//! once the table is large (`thresholds::AT_SCALE_METHOD`).

use super::{Category, Complexity, Evidence, Finding, Level, Rule, Severity};

#[derive(Default)]
pub struct UnusedIndex;

impl Rule for UnusedIndex {
    fn id(&self) -> &'static str {
        "unused-index"
    }

    fn check(&self, evidence: &Evidence<'_>) -> Vec<Finding> {
        let Some(db) = evidence.database else { return Vec::new() };
        crate::database::thresholds::droppable(db)
            .into_iter()
            .map(|(u, read)| Finding {
                rule: self.id().to_string(),
                severity: Severity::P2,
                category: Category::Database,
                title: format!("Unused index {}", u.index),
                function: format!("index {}", u.index),
                file: None,
                line: None,
                evidence: format!(
                    "{} on {} ({:.1} KiB): 0 scans since statistics were reset, none during the {:.0} s audit (`{}`); {read}",
                    u.index,
                    u.table,
                    u.size_bytes as f64 / 1024.0,
                    db.window_s,
                    u.definition
                ),
                recommendation: format!("drop it if no rare job needs it: `{}`", u.drop_sql),
                impact: Level::Low,
                complexity: Complexity::Easy,
                estimated_gain: format!("{:.1} KiB of disk and cache, and one index write less per insert", u.size_bytes as f64 / 1024.0),
                ranking: format!("P2: costs writes and space, never speeds up a read; advised when: {}", crate::database::thresholds::unused_rule()),
                code_fix: None,
                source: None,
            })
            .collect()
    }
}
