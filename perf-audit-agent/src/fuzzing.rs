//! Entry points for fuzzing the readers of target-controlled files and
//! `/proc` text (issue 24), shared by the cargo-fuzz crate
//! (`fuzz-files/`, nightly) and the stable harness below, which replays
//! its seed corpus and mutations of it for a few seconds in every
//! `cargo test`. Each entry point must return for any input: no panic, no
//! allocation beyond the input's size times a constant, no blocking open.

use std::path::{Path, PathBuf};

use crate::{
    debuginfo::{ObjectFacts, debug_file_candidates, find_debug_file},
    safe_file,
};

/// The ELF reading path on hostile bytes: the facts (build-id, symbol
/// table, debug link, segments, `.eh_frame_hdr`, compressed sections'
/// claimed sizes), then the same bytes as a file in `dir`: the safe open,
/// the DWARF hazards, and the debug-file lookup it drives (its debug link
/// name is the input's).
pub fn elf_input(data: &[u8], dir: &Path) {
    if let Some(facts) = ObjectFacts::parse(data) {
        for offset in [0, 1, 0x1000, u64::MAX / 2, u64::MAX] {
            let start = facts.function_start(offset);
            if let Some(vaddr) = facts.vaddr_of(offset) {
                let _ = vaddr;
            }
            let _ = start;
        }
        let _ = facts.load_segments();
    }
    if let Ok(elf) = object::File::parse(data) {
        let _ = safe_file::oversized_compressed_section(&elf, data.len() as u64);
    }
    let _ = safe_file::claimed_uncompressed_size(data, true, true, true);
    let _ = safe_file::claimed_uncompressed_size(data, false, false, false);
    // The corpus's debug link names `fifo.debug`: a FIFO beside the binary
    // (issue 24 row 5), which every lookup must refuse without blocking.
    let fifo = dir.join("fifo.debug");
    if std::fs::symlink_metadata(&fifo).is_err()
        && let Ok(c) = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
    {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    }
    let object = dir.join("svc");
    if std::fs::write(&object, data).is_err() {
        return;
    }
    let _ = safe_file::dwarf_hazard(&object);
    if let Some(facts) = ObjectFacts::read(&object) {
        let dirs: Vec<PathBuf> = vec![dir.join("debug")];
        for candidate in debug_file_candidates(&object, &facts, &dirs) {
            assert!(candidate.starts_with(dir) || candidate.starts_with("/usr/lib/debug"), "{candidate:?} outside the search dirs");
        }
        let _ = find_debug_file(&object, &facts, &dirs);
    }
}

/// The `/proc` text parsers on hostile text: maps lines, `net/tcp{,6}`,
/// fd link names, `cgroup`.
pub fn proc_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for m in crate::target::parse_maps(&text, std::process::id()) {
        assert!(m.path.as_os_str().len() <= text.len() + 64);
    }
    let v4 = crate::database::sockets::parse_tcp_table(&text, false);
    let v6 = crate::database::sockets::parse_tcp_table(&text, true);
    assert!(v4.len() <= text.lines().count() && v6.len() <= text.lines().count());
    for line in text.lines() {
        let _ = crate::database::sockets::socket_inode(line);
        let _ = crate::daemon::cgroup::parse_cgroup_path(line);
    }
    let _ = crate::daemon::cgroup::parse_proc_cgroup(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz-files/corpus").join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(!out.is_empty(), "{} holds the seed corpus", dir.display());
        out.sort();
        out
    }

    /// xorshift64*: reproducible mutations without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A seed with a few bytes changed, cut, or with bytes inserted.
    fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(8) {
            match rng.below(4) {
                0 | 1 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                2 if !v.is_empty() => v.truncate(rng.below(v.len())),
                _ => {
                    let i = rng.below(v.len() + 1);
                    let bytes = rng.next().to_le_bytes();
                    v.splice(i..i, bytes[..1 + rng.below(8)].iter().copied());
                }
            }
        }
        v
    }

    fn replay(target: &str, budget: Duration, run: impl Fn(&[u8])) -> usize {
        let seeds = corpus(target);
        for seed in &seeds {
            run(seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seeds.len() as u64);
        let start = Instant::now();
        let mut runs = seeds.len();
        while start.elapsed() < budget {
            let seed = &seeds[rng.below(seeds.len())];
            run(&mutate(seed, &mut rng));
            runs += 1;
        }
        runs
    }

    #[test]
    fn elf_reading_survives_its_corpus_and_mutations() {
        let dir = std::env::temp_dir().join(format!("perf-audit-fuzz-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runs = replay("elf_files", Duration::from_secs(3), |data| elf_input(data, &dir));
        std::fs::remove_dir_all(&dir).unwrap();
        eprintln!("elf_files: {runs} inputs");
    }

    #[test]
    fn proc_parsers_survive_their_corpus_and_mutations() {
        let runs = replay("proc_text", Duration::from_secs(2), proc_input);
        eprintln!("proc_text: {runs} inputs");
    }
}
