//! The database profile's model and analyses: the frontend protocol parsed
//! into executions ([`wire`]), the server's statistics as plain values
//! ([`stats`]), N+1 detection ([`analysis`]), chatty requests ([`chatty`]), index reasoning over
//! `EXPLAIN` plans ([`advice`]) and the section's tables ([`section`]).

pub mod advice;
pub mod analysis;
pub mod chatty;
pub mod section;
pub mod stats;
pub mod thresholds;
pub mod wire;
