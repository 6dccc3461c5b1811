//! The database profile's model and analyses: the frontend protocol parsed
//! into executions ([`wire`]), the server's statistics as plain values
//! ([`stats`]), N+1 detection ([`analysis`]), chatty requests ([`chatty`]), transactions held open
//! ([`transactions`]), rows re-read ([`rereads`]), pool pressure ([`pool`]), index reasoning over
//! `EXPLAIN` plans ([`advice`]), the section's tables ([`section`]) and
//! the text of statements prepared before the audit ([`recovery`]), and
//! the check that a statement text is one plannable statement ([`sql_text`]);
//! report.json's `database` section types ([`schema`], re-exported by
//! `crate::report`: the report depends on them, not the reverse).

pub mod advice;
pub mod analysis;
pub mod chatty;
pub mod dialect;
pub mod fuzzing;
pub mod pool;
pub mod recovery;
pub mod rereads;
pub mod schema;
pub mod section;
pub mod sql_text;
pub mod stats;
pub mod thresholds;
pub mod transactions;
pub mod wire;
