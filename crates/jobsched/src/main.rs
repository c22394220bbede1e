//! `jobsched`: one binary for every role (api, worker, controller, migrate, dev, CLI client).

mod cli;
mod client_cmd;
mod commands;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = <cli::Cli as clap::Parser>::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
