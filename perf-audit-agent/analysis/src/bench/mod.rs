//! `--bench`: criterion's results read from their JSON ([`criterion`]) and
//! the report's benchmark table ([`markdown`]). Running `cargo bench` is the
//! agent's job.

pub mod criterion;
pub mod markdown;

pub use criterion::{BenchVerdict, BenchmarkRow};
