//! Stand-alone runner for the benchmark library (the same options as `jobsched bench`).
//!
//! `cargo run --release -p jobsched-bench --example bench -- --jobsched-bin target/release/jobsched`

use clap::Parser;
use std::process::ExitCode;

/// jobsched benchmark.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(flatten)]
    args: jobsched_bench::BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(jobsched_bench::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
