//! The /proc text parsers on hostile text (perf_audit_agent::fuzzing::proc_input).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    perf_audit_agent::fuzzing::proc_input(data);
});
