//! The frontend-protocol parser and per-connection state: see
//! `perf_audit_analysis::database::fuzzing::wire` for the input format.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| perf_audit_analysis::database::fuzzing::wire(data));
