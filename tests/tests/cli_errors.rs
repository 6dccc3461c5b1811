//! Every subcommand's errors carry their own fix: one stderr line
//! `error: <what> (fix: <how>)`, and the fix is the one of the subcommand
//! that failed (never `diff`'s "two audit output directories" on a
//! `symbolize` error). No eBPF needed: each case fails before any probe.

use std::process::Command;

use perf_audit_tests::agent_bin;

/// Runs the agent, expects failure with `code`, returns its one error line.
fn error_line(args: &[&str], code: i32) -> String {
    let out = Command::new(agent_bin()).args(args).output().expect("run the agent");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected: {stderr}");
    let line = lines[0].to_string();
    assert!(line.starts_with("error: ") && line.contains(" (fix: ") && line.ends_with(')'), "{args:?}: {line}");
    line
}

fn fix_of(line: &str) -> &str {
    &line[line.find(" (fix: ").expect("a fix") + 7..line.len() - 1]
}

#[test]
fn each_subcommands_errors_name_their_own_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-audit");
    let missing = missing.to_str().unwrap();

    // symbolize: not an audit directory.
    let line = error_line(&["symbolize", missing], 2);
    let fix = fix_of(&line);
    assert!(fix.contains("perf-audit-agent symbolize DIR"), "{line}");
    assert!(!fix.contains("two audit"), "symbolize carries diff's fix: {line}");

    // symbolize: an audit whose objects all had symbols: no debug file to use.
    let audit = tmp.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    std::fs::write(audit.join("report.json"), "{}").unwrap();
    std::fs::write(audit.join("stacks.folded"), "main;work 3\n").unwrap();
    let line = error_line(&["symbolize", audit.to_str().unwrap()], 2);
    assert!(line.contains("no debug file found"), "{line}");
    let fix = fix_of(&line);
    assert!(fix.contains("--debug-dir") && !fix.contains("two audit"), "{line}");

    // diff: its inputs, then its own usage errors.
    let line = error_line(&["diff", missing, missing], 2);
    assert!(fix_of(&line).contains("two audit output directories"), "{line}");
    let line = error_line(&["diff", audit.to_str().unwrap(), audit.to_str().unwrap(), "--max-regression", "lots"], 2);
    assert_eq!(fix_of(&line), "see `perf-audit-agent diff --help`", "{line}");

    // daemon: its usage errors point at its own help.
    let line = error_line(&["daemon", "--frequency", "0"], 2);
    assert!(line.contains("--frequency 0"), "{line}");
    assert_eq!(fix_of(&line), "see `perf-audit-agent daemon --help`", "{line}");

    // The audit itself: a pid that does not exist.
    let line = error_line(&["--pid", "999999999", "cpu"], 3);
    assert!(fix_of(&line).contains("start it first"), "{line}");
}
