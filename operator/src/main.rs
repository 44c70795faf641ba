//! The `llmjob-operator` binary: parses flags (with `LLMJOB_*` environment fallbacks) and runs
//! the operator. Exit code 0 after a clean shutdown (SIGTERM/SIGINT), 1 on an error (named on
//! stderr), 2 on invalid flags. `llmjob-operator check` checks a running operator instead (the
//! chart's `helm test`): 0 healthy, 1 not.

use std::process::ExitCode;

use clap::Parser;
use llmjob_operator::Config;
use llmjob_operator::config::Command;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Check {
        namespace,
        deployment,
    }) = &config.command
    {
        return match llmjob_operator::check::run(namespace, deployment).await {
            Ok(what) => {
                println!("{what}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("llmjob-operator check: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match llmjob_operator::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmjob-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
