//! The debug-file lookup and ELF reading path on hostile bytes
//! (perf_audit_agent::fuzzing::elf_input).
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

static DIR: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("perf-audit-fuzz-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    perf_audit_agent::fuzzing::elf_input(data, dir);
});
