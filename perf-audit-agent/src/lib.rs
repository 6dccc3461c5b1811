//! perf-audit agent: audits a running Rust service with eBPF.
//!
//! The binary (`main.rs`) is glue: [`cli`] parses, [`plan`] validates,
//! [`engine`] runs one audit. See ARCHITECTURE.md for the codemap and the
//! invariants (the profile model does no I/O; renderers are deterministic;
//! only orchestration is async).

pub mod bench;
pub mod ci_workflow;
pub mod cli;
pub mod console;
pub mod daemon;
pub mod database;
pub mod diff;
pub mod engine;
pub mod error;
pub mod findings;
pub mod kernel;
pub mod load;
pub mod memory;
pub mod plan;
pub mod postgres;
pub mod profile;
pub mod render;
pub mod report;
pub mod symbolize;
pub mod syscalls;
pub mod target;
pub mod unwind;
