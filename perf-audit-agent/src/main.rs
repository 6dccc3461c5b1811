//! `perf-audit-agent`: parse, plan, run, print where the report is.

use clap::Parser as _;
use perf_audit_agent::{
    cli::{Cli, Command},
    engine,
    error::{Error, ErrorKind, exit_code},
    plan::AuditPlan,
};

/// `diff OLD NEW`: one stderr line per regressed metric, the output
/// directory as the last stdout line, exit 8 on regression.
fn diff(args: perf_audit_agent::cli::DiffArgs) -> i32 {
    let plan = match perf_audit_agent::diff::DiffPlan::from_args(args) {
        Ok(plan) => plan,
        Err(e) => return fail_in(Some("diff"), e),
    };
    match perf_audit_agent::diff::run(&plan) {
        Ok(output) => {
            let regressions = output.regression_lines();
            for line in &regressions {
                eprintln!("{line}");
            }
            println!("{}", output.out_dir.display());
            if regressions.is_empty() { exit_code::OK } else { exit_code::REGRESSION }
        }
        Err(e) => fail_in(Some("diff"), e),
    }
}

/// `symbolize AUDIT`: one stderr line per object named, the output
/// directory as the last stdout line.
fn symbolize(args: perf_audit_agent::cli::SymbolizeArgs) -> i32 {
    match perf_audit_agent::resymbolize::run(&args) {
        Ok(output) => {
            for (object, debug, frames) in &output.named {
                eprintln!("perf-audit: {object}: {frames} frames named from {}", debug.display());
            }
            println!("{}", output.out_dir.display());
            exit_code::OK
        }
        Err(e) => fail_in(Some("symbolize"), e),
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        None => audit(cli.audit),
        Some(Command::Daemon(args)) => daemon(args),
        Some(Command::Diff(args)) => diff(args),
        Some(Command::Symbolize(args)) => symbolize(args),
    };
    std::process::exit(code);
}

fn fail(e: Error) -> i32 {
    fail_in(None, e)
}

/// Prints the error with the fix of the subcommand it came from.
fn fail_in(subcommand: Option<&str>, e: Error) -> i32 {
    eprintln!("error: {}", e.display_in(subcommand));
    e.kind.exit_code()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

fn audit(args: perf_audit_agent::cli::Args) -> i32 {
    let plan = match AuditPlan::from_args(args) {
        Ok(plan) => plan,
        Err(e) => return fail(e),
    };
    match runtime().block_on(engine::run(plan)) {
        Ok(output) => {
            // What to fix first, on stderr; the last stdout line is the
            // report directory, for scripts.
            for line in perf_audit_agent::report::summary::terminal(&output.report) {
                eprintln!("perf-audit: {line}");
            }
            eprintln!("perf-audit: open {}", output.out_dir.join("report.html").display());
            println!("{}", output.out_dir.display());
            exit_code::OK
        }
        Err(e) => fail(e),
    }
}

fn daemon(args: perf_audit_agent::cli::DaemonArgs) -> i32 {
    let config = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                return fail_in(Some("daemon"), Error::new(ErrorKind::Usage, format!("cannot read config file {}: {e}", path.display())));
            }
        },
        None => None,
    };
    let plan = match perf_audit_agent::daemon::plan::DaemonPlan::from_args(args, config.as_deref()) {
        Ok(plan) => plan,
        Err(e) => return fail_in(Some("daemon"), e),
    };
    // Two workers: HTTP stays responsive while the collector symbolizes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match runtime.block_on(perf_audit_agent::daemon::run(plan)) {
        Ok(()) => exit_code::OK,
        Err(e) => fail_in(Some("daemon"), e),
    }
}
