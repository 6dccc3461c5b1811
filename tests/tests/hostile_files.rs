//! The audited process's files are untrusted input (issue 24, rows 4-7):
//! a `.debug_info` claiming 1 TiB compressed, a `.gnu_debuglink` naming a
//! FIFO beside the binary, 4 corrupt bytes of DWARF (in the binary or in
//! its separate debug file), and `symbolize` given another build's debug
//! file. Each against the real agent on the cpu-burner fixture (its hot
//! function `cpu_burner::hot_spin` takes ~90% of the CPU).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use perf_audit_tests::*;
use serde_json::Value;

fn audit(bin: &Path, extra: &[&str]) -> AgentRun {
    let bin = bin.to_str().unwrap();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["cpu", "--duration", "3s", "--", bin, "--seconds", "20"]);
    run_agent(&args)
}

fn executable(report: &Value) -> &Value {
    let objects = report["symbols"].as_array().expect("report.json lists the objects' symbols");
    objects.iter().find(|o| o["executable"] == true).unwrap_or_else(|| panic!("no executable in {objects:?}"))
}

fn assert_hot_spin_named(report: &Value) {
    let hs = hotspots(report);
    assert_eq!(hs[0].0, "cpu_burner::hot_spin", "hotspots: {hs:?}");
    assert!(hs[0].1 > 60.0, "{hs:?}");
}

/// `(file offset, size, sh_flags)` of section `name` of an ELF64 file.
fn section(data: &[u8], name: &str) -> (usize, usize, u64) {
    let u16_at = |at: usize| u16::from_le_bytes(data[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 0x18) as usize;
    (0..shnum)
        .map(header)
        .find(|h| {
            let start = strtab + u32_at(*h);
            let end = start + data[start..].iter().position(|b| *b == 0).unwrap();
            &data[start..end] == name.as_bytes()
        })
        .map(|h| (u64_at(h + 0x18) as usize, u64_at(h + 0x20) as usize, u64_at(h + 8)))
        .unwrap_or_else(|| panic!("no {name} section"))
}

fn objcopy(args: &[&std::ffi::OsStr]) {
    let out = Command::new("objcopy").args(args).output().expect("objcopy (binutils) is installed");
    assert!(out.status.success(), "objcopy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// 4 bytes of the first unit header of `.debug_info` changed (its abbrev
/// offset and address size).
fn corrupt_debug_info(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let (offset, size, _) = section(&data, ".debug_info");
    assert!(size > 16);
    data[offset + 6..offset + 10].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    std::fs::write(path, data).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// A stripped cpu-burner whose `.gnu_debuglink` names `cpu-burner.debug`,
/// and that name beside it is a FIFO (nobody ever writes to it).
fn debuglink_to_fifo(dir: &Path) -> PathBuf {
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), dir, DebugFileLayout::DebugLink);
    std::fs::remove_dir_all(dir.join(".debug")).unwrap();
    mkfifo(&dir.join("cpu-burner.debug"));
    bin
}

#[test]
fn row4_compressed_debug_info_claiming_a_terabyte_is_named_from_the_symbol_table() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("cpu-burner");
    objcopy(&["--compress-debug-sections=zlib".as_ref(), fixture("cpu-burner", Build::Release).as_os_str(), bin.as_os_str()]);
    let mut data = std::fs::read(&bin).unwrap();
    let (offset, _, flags) = section(&data, ".debug_info");
    assert!(flags & 0x800 != 0, "SHF_COMPRESSED");
    data[offset + 8..offset + 16].copy_from_slice(&(1u64 << 40).to_le_bytes()); // Elf64_Chdr.ch_size
    std::fs::write(&bin, data).unwrap();

    let run = audit(&bin, &[]);
    run.assert_success();
    let report = run.report();
    assert_hot_spin_named(&report);
    let exe = executable(&report);
    assert_eq!((exe["symbols"].as_bool(), exe["line_info"].as_bool()), (Some(true), Some(false)), "{exe}");
    let problems = exe["problems"].to_string();
    assert!(problems.contains(".debug_info") && problems.contains("1024 GiB"), "{exe}");
    assert!(run.file("report.md").contains("**Debug info of `cpu-burner` not used**"));
}

#[test]
fn row5_debuglink_naming_a_fifo_neither_blocks_the_audit_nor_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = debuglink_to_fifo(tmp.path());

    // Ends by itself: 3 s of collection plus a bounded margin.
    let run = audit(&bin, &[]);
    run.assert_success();
    assert!(run.elapsed < Duration::from_secs(30), "took {:?}", run.elapsed);
    let report = run.report();
    let hs = hotspots(&report);
    assert!(hs[0].0.starts_with("cpu-burner+0x"), "stripped, no debug file: {hs:?}");
    assert_eq!(executable(&report)["debug_file"], Value::Null);

    // SIGTERM mid-audit: a partial report, promptly.
    let out = tmp.path().join("interrupted");
    let target = Running::spawn(&bin, &["--seconds", "90"]);
    let pid = target.pid().to_string();
    let mut agent = spawn_agent(&["--pid", &pid, "cpu", "--duration", "60s"], &out);
    wait_attached(agent.id());
    let signalled = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(30) {
            let _ = agent.kill();
            panic!("the agent did not end within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "partial report, exit 0");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["end_reason"], "interrupted", "{}", report["end_reason"]);
    drop(target);
}

#[test]
fn row5_the_daemon_stops_on_sigterm_with_a_fifo_debuglink_process_running() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = debuglink_to_fifo(tmp.path());
    let target = Running::spawn(&bin, &["--seconds", "60"]);
    let pid = target.pid().to_string();
    let mut daemon = Daemon::start(&["--pid", &pid, "--window", "2s"]);
    // Two windows symbolized (a stuck open would hang the first).
    std::thread::sleep(Duration::from_secs(5));
    let (status, _) = daemon.get("/metrics");
    assert_eq!(status, 200);
    let start = Instant::now();
    let code = daemon.terminate();
    assert_eq!(code, 0, "{}", daemon.stderr());
    assert!(start.elapsed() < Duration::from_secs(15), "stopped after {:?}", start.elapsed());
    drop(target);
}

#[test]
fn row6_corrupt_dwarf_in_the_binary_keeps_the_hot_function_named_and_says_line_info_was_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("cpu-burner");
    std::fs::copy(fixture("cpu-burner", Build::Release), &bin).unwrap();
    corrupt_debug_info(&bin);
    let run = audit(&bin, &[]);
    run.assert_success();
    let report = run.report();
    assert_hot_spin_named(&report);
    let exe = executable(&report);
    assert_eq!((exe["symbols"].as_bool(), exe["line_info"].as_bool()), (Some(true), Some(false)), "{exe}");
    assert!(exe["problems"].to_string().contains("DWARF"), "{exe}");
    assert!(run.file("report.md").contains("**Debug info of `cpu-burner` not used**"));
}

#[test]
fn row6_a_corrupt_separate_debug_file_keeps_the_hot_function_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), tmp.path(), DebugFileLayout::BuildId);
    let debug = walk_debug(&tmp.path().join("debug"));
    corrupt_debug_info(&debug);
    let run = audit(&bin, &["--debug-dir", tmp.path().join("debug").to_str().unwrap()]);
    run.assert_success();
    let report = run.report();
    assert_hot_spin_named(&report);
    let exe = executable(&report);
    assert_eq!(exe["line_info"], false, "{exe}");
    assert!(exe["problems"].to_string().contains("DWARF"), "{exe}");
}

fn walk_debug(dir: &Path) -> PathBuf {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return walk_debug(&path);
        }
        if path.extension().is_some_and(|e| e == "debug") {
            return path;
        }
    }
    panic!("no .debug file under {}", dir.display())
}

fn symbolize(audit: &Path, extra: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(agent_bin()).arg("symbolize").arg(audit).args(extra).output().expect("run symbolize")
}

#[test]
fn row7_symbolize_refuses_a_debug_file_of_another_build_or_without_build_id_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = split_debug_info(&fixture("cpu-burner", Build::Release), tmp.path(), DebugFileLayout::BuildId);
    let own_debug = walk_debug(&tmp.path().join("debug"));
    let run = audit(&bin, &[]);
    run.assert_success();

    // Another binary's debug file (another fixture, its own build-id).
    let other_dir = tmp.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    split_debug_info(&fixture("ctx-switch", Build::Release), &other_dir, DebugFileLayout::BuildId);
    let other_debug = walk_debug(&other_dir.join("debug"));
    let out = symbolize(&run.out_dir, &["--debug-file".as_ref(), other_debug.as_os_str(), "--out".as_ref(), tmp.path().join("a").as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("is not the debug file of `cpu-burner`") && stderr.contains("--force-debug-file"), "{stderr}");
    assert!(!tmp.path().join("a").exists(), "nothing written");

    // The right build's debug file without its build-id note, in a --debug-dir.
    let named_dir = tmp.path().join("by-name");
    std::fs::create_dir_all(&named_dir).unwrap();
    let no_id = named_dir.join("cpu-burner.debug");
    objcopy(&["--remove-section=.note.gnu.build-id".as_ref(), own_debug.as_os_str(), no_id.as_os_str()]);
    let out = symbolize(&run.out_dir, &["--debug-dir".as_ref(), named_dir.as_os_str(), "--out".as_ref(), tmp.path().join("b").as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("has no build-id"), "{stderr}");

    // Forced: used, with a warning.
    let forced = tmp.path().join("c");
    let out = symbolize(
        &run.out_dir,
        &["--debug-dir".as_ref(), named_dir.as_os_str(), "--force-debug-file".as_ref(), "--out".as_ref(), forced.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning:") && stderr.contains("has no build-id") && stderr.contains("--force-debug-file"), "{stderr}");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(forced.join("report.json")).unwrap()).unwrap();
    assert_hot_spin_named(&after);

    // The matching debug file given with --debug-file is accepted.
    let out = symbolize(&run.out_dir, &["--debug-file".as_ref(), own_debug.as_os_str(), "--out".as_ref(), tmp.path().join("d").as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
