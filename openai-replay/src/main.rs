//! `openai-replay`: the replay server as a command, for the local demo and manual testing.
//! Prints one line, `openai-replay listening on http://ADDR/v1`, to stdout once it listens; logs
//! requests to stderr (never the API key); stops on SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use openai_replay::{FIXTURE_NAMES, Faults, Hostile, ReplayConfig, ReplayServer, Scenario};

/// An OpenAI-compatible server that answers with recorded OpenAI responses.
#[derive(Debug, Parser)]
#[command(name = "openai-replay", version, about)]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    addr: SocketAddr,

    /// Require this API key as `Authorization: Bearer KEY` (otherwise any key is accepted).
    #[arg(long, env = "OPENAI_REPLAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Always answer chat requests with this fixture instead of choosing one from the request.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(FIXTURE_NAMES))]
    fixture: Option<String>,

    /// Fail the first N chat requests with --fail-status.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: u32,

    /// After the first --fail-first, fail every N-th chat request too (0: none).
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_every: u32,

    /// HTTP status of the injected failures (400-599).
    #[arg(long, value_name = "S", default_value_t = 500, value_parser = clap::value_parser!(u16).range(400..=599))]
    fail_status: u16,

    /// Send `retry-after-ms` (and `retry-after`, rounded up to seconds) with injected failures.
    #[arg(long, value_name = "MS")]
    retry_after_ms: Option<u64>,

    /// Misbehave instead of answering from the fixtures: retry-after=VALUE, non-json,
    /// truncated-body, oversized-body=BYTES, oversized-fields=BYTES, unknown-enums,
    /// empty-choices, refusal, stream-error, stream-drop, done-only, slow-drip=MS,
    /// echo-error=STATUS (after the key check and --fail-first).
    #[arg(long, value_name = "BEHAVIOUR")]
    hostile: Option<Hostile>,

    /// Wait this long before answering each chat request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,

    /// Wait this long between two server-sent events of a streamed answer.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    chunk_delay_ms: u64,
}

impl Cli {
    fn config(self) -> ReplayConfig {
        ReplayConfig {
            api_key: self.api_key,
            scenario: self.fixture.map_or(Scenario::Auto, Scenario::Fixed),
            faults: Faults {
                fail_first: self.fail_first,
                fail_every: self.fail_every,
                status: self.fail_status,
                retry_after: self.retry_after_ms.map(Duration::from_millis),
            },
            hostile: self.hostile,
            delay: Duration::from_millis(self.delay_ms),
            chunk_delay: Duration::from_millis(self.chunk_delay_ms),
            addr: self.addr,
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot watch SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch Ctrl-C")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let server = ReplayServer::start(cli.config()).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "openai-replay listening on http://{}/v1",
            server.addr()
        )
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    }
    stop_signal().await?;
    tracing::info!("stopping");
    server.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_the_config() {
        let cli = Cli::parse_from([
            "openai-replay",
            "--addr",
            "127.0.0.1:0",
            "--fixture",
            "chat_basic",
            "--fail-first",
            "2",
            "--fail-status",
            "429",
            "--retry-after-ms",
            "1500",
            "--delay-ms",
            "5",
            "--chunk-delay-ms",
            "7",
            "--hostile",
            "retry-after=1e308",
        ]);
        let config = cli.config();
        assert_eq!(config.scenario, Scenario::Fixed("chat_basic".into()));
        assert_eq!(
            config.faults,
            Faults::fail_first(2)
                .with_status(429)
                .with_retry_after(Duration::from_millis(1500))
        );
        assert_eq!(config.delay, Duration::from_millis(5));
        assert_eq!(config.chunk_delay, Duration::from_millis(7));
        assert_eq!(config.hostile, Some(Hostile::RetryAfter("1e308".into())));
        assert!(Cli::try_parse_from(["openai-replay", "--hostile", "nope"]).is_err());
        assert!(Cli::try_parse_from(["openai-replay", "--fixture", "nope"]).is_err());
        assert!(Cli::try_parse_from(["openai-replay", "--fail-status", "200"]).is_err());
    }
}
