//! The `llmjob-operator` binary: parses flags (with `LLMJOB_*` environment fallbacks) and runs
//! the operator. Exit code 0 after a clean shutdown (SIGTERM/SIGINT), 1 on an error (named on
//! stderr), 2 on invalid flags.

use std::process::ExitCode;

use clap::Parser;
use llmjob_operator::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match llmjob_operator::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmjob-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
