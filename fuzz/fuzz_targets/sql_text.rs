//! The statement-text validator and helpers: see
//! `perf_audit_analysis::database::fuzzing::sql_text`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| perf_audit_analysis::database::fuzzing::sql_text(data));
