//! `perf-audit-agent`: parse, plan, run, print where the report is.

use clap::Parser as _;
use perf_audit_agent::{cli::Args, engine, error::exit_code, plan::AuditPlan};

fn main() {
    let args = Args::parse();
    let code = match AuditPlan::from_args(args) {
        Err(e) => {
            eprintln!("error: {e}");
            e.kind.exit_code()
        }
        Ok(plan) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime can be built");
            match runtime.block_on(engine::run(plan)) {
                Ok(output) => {
                    // The last line is the report directory, for scripts.
                    println!("{}", output.out_dir.display());
                    exit_code::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.kind.exit_code()
                }
            }
        }
    };
    std::process::exit(code);
}
