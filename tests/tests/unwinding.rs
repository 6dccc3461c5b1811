//! Whole stacks on release builds without frame pointers (real eBPF).

use perf_audit_tests::*;

/// The frames of a folded line, root first, and its count.
fn parse_folded(line: &str) -> (Vec<&str>, u64) {
    let (stack, count) = line.rsplit_once(' ').expect("folded line has a count");
    (stack.split(';').collect(), count.parse().expect("count"))
}

#[test]
fn plain_release_build_is_unwound_from_main_to_the_hot_function() {
    // `cargo build --release`: debug info on, no frame pointers.
    let bin = fixture("unwind-chain", Build::Release);
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    let pid = target.pid().to_string();
    let run = run_agent(&["--pid", &pid, "cpu", "--duration", "4s"]);
    run.assert_success();
    let report = run.report();
    assert_eq!(report["cpu"]["unwinding"], "dwarf", "auto mode picks dwarf for a binary without frame pointers");
    let completeness = report["cpu"]["stack_completeness_pct"].as_f64().unwrap();
    assert!(completeness >= 95.0, "only {completeness}% of stacks reach main or a thread start");

    // Every stack through `hot` has the chain main -> a -> b -> hot, in
    // that order, directly adjacent.
    let folded = run.file("stacks.folded");
    let mut hot_samples = 0;
    let mut total = 0;
    for line in folded.lines() {
        let (frames, count) = parse_folded(line);
        total += count;
        let Some(hot) = frames.iter().position(|f| *f == "unwind_chain::hot") else { continue };
        hot_samples += count;
        assert!(hot >= 3, "{line}");
        assert_eq!(&frames[hot - 3..=hot], ["unwind_chain::main", "unwind_chain::a", "unwind_chain::b", "unwind_chain::hot"], "{line}");
    }
    assert!(hot_samples * 100 >= total * 80, "hot should dominate: {hot_samples} of {total}");
    assert_eq!(hotspots(&report)[0].0, "unwind_chain::hot");
}

#[test]
fn frame_pointer_builds_use_the_kernel_fast_path() {
    let bin = fixture("unwind-chain", Build::ReleaseFramePointers);
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    let pid = target.pid().to_string();
    let run = run_agent(&["--pid", &pid, "cpu", "--duration", "3s"]);
    run.assert_success();
    let report = run.report();
    assert_eq!(report["cpu"]["unwinding"], "frame-pointer");
    assert_eq!(hotspots(&report)[0].0, "unwind_chain::hot");
    assert!(run.file("report.md").contains("frame pointers"));
}

#[test]
fn forcing_frame_pointers_on_a_plain_build_loses_the_callers() {
    // Guards the reason dwarf mode exists: without frame pointers the
    // kernel walk stops early, and the report says so in its completeness.
    let bin = fixture("unwind-chain", Build::Release);
    let target = Running::spawn(&bin, &["--seconds", "30"]);
    let pid = target.pid().to_string();
    let run = run_agent(&["--pid", &pid, "cpu", "--duration", "3s", "--unwind", "frame-pointer"]);
    run.assert_success();
    let report = run.report();
    assert_eq!(report["cpu"]["unwinding"], "frame-pointer");
    let completeness = report["cpu"]["stack_completeness_pct"].as_f64().unwrap();
    assert!(completeness < 50.0, "a plain build cannot be walked by frame pointers, yet {completeness}% complete");
}
