//! perf-audit agent: audits a running Rust service with eBPF.
//!
//! The binary (`main.rs`) is glue: [`cli`] parses, [`plan`] validates,
//! [`engine`] runs one audit. See ARCHITECTURE.md for the codemap and the
//! invariants (the profile model does no I/O; renderers are deterministic;
//! only orchestration is async).

pub mod allocator;
pub mod bench;
pub mod cli;
pub mod collect;
pub mod console;
pub mod daemon;
pub mod database;
pub mod debuginfo;
pub mod diff;
pub mod elf_worker;
pub mod engine;
pub mod fuzzing;
pub mod kernel;
pub mod load;
pub mod memory;
pub mod naming;
pub mod overhead;
pub mod plan;
pub mod postgres;
pub mod priority;
pub mod resymbolize;
pub mod safe_file;
pub mod symbolize;
pub mod target;
pub mod unwind;

// The pure core, re-exported under the paths the agent has always used.
pub use perf_audit_analysis::{error, findings, health, profile, render, report, report::ci_workflow, resymbolize as resymbolize_core, syscalls};
