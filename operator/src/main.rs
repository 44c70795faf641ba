//! The `llmjob-operator` binary: parses flags (with `LLMJOB_*` environment fallbacks) and runs
//! the operator. Exit code 0 after a clean shutdown (SIGTERM/SIGINT), 1 on an error (named on
//! stderr), 2 on invalid flags. `llmjob-operator check` checks a running operator instead (the
//! chart's `helm test`): 0 healthy, 1 not.

use std::process::ExitCode;

use clap::Parser;
use llmjob_operator::Config;
use llmjob_operator::config::Command;

/// jemalloc instead of glibc's malloc: the operator keeps every watched LlmJob, Job and pod in
/// memory as tens of small allocations each, which jemalloc's size classes hold without glibc's
/// per-chunk header, and it returns freed pages to the system after a delay where glibc keeps
/// them in per-thread arenas. At 10,000 LlmJobs this is the difference docs/benchmarks.md
/// measures.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
