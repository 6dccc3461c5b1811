//! The database profile's model and analyses: the frontend protocol parsed
//! into executions ([`wire`]), the server's statistics as plain values
//! ([`stats`]), N+1 detection ([`analysis`]) and index reasoning over
//! `EXPLAIN` plans ([`advice`]).

pub mod advice;
pub mod analysis;
pub mod stats;
pub mod wire;
