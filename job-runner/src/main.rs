//! `llmjob-runner`: runs one traced OpenAI chat completion and exits with a documented code
//! (0 success, 1 internal error, including a panic, 2 configuration error, 3 permanent API error,
//! 4 retries exhausted or deadline passed, 5 cancelled by SIGTERM/SIGINT, 6 a batch shard's failed
//! items exceeded the run's budget). See `docs/job-runner.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use llmjob_crds::env;
use llmjob_runner::config::Config;
use llmjob_runner::shutdown::Shutdown;
use llmjob_runner::telemetry::{FLUSH_BUDGET, Telemetry};
use llmjob_runner::workflow::{self, Exit};
use llmjob_runner::{batch, crash, result_file};

fn main() -> ExitCode {
    // `--help` and `--version` print and exit 0; any other argument is a usage error (exit 2, the
    // configuration-error code). The runner takes its configuration from the environment only.
    cli().get_matches();
    crash::install_hook();
    // A panic during the run is caught in `run` (result written, telemetry flushed); one anywhere
    // else still exits with the internal-error code, not Rust's 101.
    std::panic::catch_unwind(start).unwrap_or_else(|_| ExitCode::from(Exit::Internal.code()))
}

fn start() -> ExitCode {
    // Configuration first: a bad value exits 2 before anything is sent anywhere.
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("llmjob-runner: {e}");
            return ExitCode::from(Exit::Config.code());
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmjob-runner: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Internal.code());
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let log_filter = std::env::var(env::RUST_LOG.name)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let telemetry = match Telemetry::init(&config.telemetry, log_filter.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("llmjob-runner: {e}");
            return ExitCode::from(Exit::Config.code());
        }
    };

    // SIGTERM/SIGINT cancel the call; the result is still written and telemetry flushed below,
    // within the pod's grace period (`llmjob_crds::env::exit::TERMINATION_GRACE_SECS`).
    let shutdown = match Shutdown::on_signals() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("llmjob-runner: cannot listen for termination signals: {e}");
            return ExitCode::from(Exit::Internal.code());
        }
    };
    let outcome = match &config.batch {
        None => crash::guarded(workflow::run(&config, &telemetry, &shutdown)).await,
        Some(batch) => crash::guarded(batch::run(&config, batch, &telemetry, &shutdown)).await,
    };

    if let Some(text) = &outcome.stdout {
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            eprintln!("llmjob-runner: cannot write to stdout");
        }
    }
    if let Some(path) = &config.result_path
        && let Err(e) = result_file::write(path, &outcome.result)
    {
        let var = env::LLMJOB_RESULT_PATH.name;
        eprintln!(
            "llmjob-runner: cannot write the result to {} ({var}): {e}",
            path.display()
        );
    }
    for problem in telemetry.shutdown(FLUSH_BUDGET).await {
        eprintln!("llmjob-runner: telemetry export failed: {problem}");
    }
    ExitCode::from(outcome.exit.code())
}

/// The command line: no arguments, only `--help` (usage, the environment contract of
/// [`env::ALL`] and the exit codes) and `--version`.
fn cli() -> clap::Command {
    clap::Command::new("llmjob-runner")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Runs one traced OpenAI chat completion and exports its traces, metrics and logs \
             over OTLP. Configured by environment variables only; the operator sets them in the \
             Job's pod.",
        )
        .after_help(env_help())
}

/// The `--help` text after the usage: every variable of the contract with its default, then the
/// exit codes.
fn env_help() -> String {
    let width = env::ALL.iter().map(|var| var.name.len()).max().unwrap_or(0);
    let mut text = String::from("Environment variables:\n");
    for var in env::ALL {
        let default = var
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "  {:width$}  {}{default}", var.name, var.help);
    }
    text.push_str("\nExit codes:\n");
    for (exit, meaning) in [
        (Exit::Success, "the completion was received"),
        (Exit::Internal, "internal error (a bug), including a panic"),
        (
            Exit::Config,
            "configuration error (a bad or missing variable)",
        ),
        (Exit::Permanent, "the API refused the request permanently"),
        (
            Exit::Exhausted,
            "retryable failures exhausted or the deadline passed",
        ),
        (
            Exit::Cancelled,
            "cancelled by SIGTERM or SIGINT before the run finished",
        ),
        (
            Exit::TooManyFailedItems,
            "batch mode: this shard's failed items exceeded LLMJOB_MAX_FAILED_ITEMS",
        ),
    ] {
        let _ = writeln!(text, "  {}  {meaning}", exit.code());
    }
    text
}
