//! The pure core of perf-audit: evidence in, a [`report::Report`] out.
//!
//! The agent's probe layer collects raw evidence from the kernel and the
//! target (stack counts, probe counters, database statistics, wire
//! messages), unwinds and symbolizes it, and hands it here as plain values.
//! This crate turns it into a report, in pipeline order:
//!
//! - **model**: [`profile`] (symbolized stacks with counts), [`evidence`]
//!   (raw counters), [`memory::types`], [`database::wire`] (the frontend
//!   protocol parsed into executions), [`database::stats`];
//! - **analyze**: [`profile::hotspots`], [`profile::async_runtime`],
//!   [`memory::analysis`] and [`memory::faults`], [`database::analysis`]
//!   (N+1) and [`database::advice`] (index reasoning), then the
//!   [`findings`] rules, each a small type;
//! - **report**: [`report::schema`] (every type of `report.json`), the
//!   renderers (markdown, HTML, alerts, CI workflow, flamegraphs through
//!   [`render`]) and [`diff`] (two reports compared).
//!
//! No I/O, no clocks, no async runtime: the crate does not depend on aya,
//! tokio, sqlx, hyper or tonic, and never touches the filesystem
//! (`tests/tests/architecture.rs` checks both). Every analysis is testable
//! with hand-built evidence.

pub mod audit;
pub mod bench;
pub mod database;
pub mod diff;
pub mod error;
pub mod evidence;
pub mod findings;
pub mod health;
pub mod load;
pub mod memory;
pub mod profile;
pub mod render;
pub mod report;
pub mod resymbolize;
pub mod syscalls;
#[cfg(test)]
pub(crate) mod test_evidence;
