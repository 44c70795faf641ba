//! Runs the custom OpenTelemetry Collector (`otelcol-test`, built by `tools/ensure-tools.sh`) on
//! free loopback ports, with OTLP gRPC + HTTP receivers and one JSON-lines file per signal, and
//! reads what it received through [`crate::telemetry`].
//!
//! Where things go: every collector gets its own directory
//! `<target>/testenv-logs/collector-<millis>-<pid>-<n>/` holding `otelcol.yaml`, `otelcol.log`
//! (the collector's stdout/stderr) and `out/{traces,metrics,logs}.jsonl`. The directory is kept
//! after the test (it is small), so a failing test can point at it; `cargo clean` removes it.
//! [`Collector::start_in`] chooses another parent directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::unique_dir;
use crate::process::{self, ManagedProcess, ProcessError, ProcessSpec};
use crate::telemetry::{Telemetry, TelemetryError};
use crate::tools::{self, MissingTool};

/// How long [`Collector::start`] waits for both receivers to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Collector::wait_for`] re-reads the output files (the one polling interval of
/// [`crate::wait`]).
pub use crate::wait::POLL_INTERVAL;
/// How long [`Collector::shutdown`] waits after SIGTERM before SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Lines of the collector's log quoted in errors.
const LOG_TAIL_LINES: usize = 30;
/// The exporter that forwards traces and metrics ([`Collector::start_forwarding`]).
const FORWARD_EXPORTER: &str = "otlp_grpc/forward";
/// Attempts at finding two free ports the collector can bind.
const PORT_ATTEMPTS: usize = 3;

/// Errors from starting, reading or waiting on the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// `otelcol-test` is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// The working directory or config file could not be written.
    #[error("cannot prepare the collector directory {path}: {source}")]
    Prepare {
        /// The path that could not be written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config could not be rendered.
    #[error("cannot render the collector config: {0}")]
    Config(#[from] serde_norway::Error),
    /// No free port could be found.
    #[error("cannot pick a free loopback port: {0}")]
    Port(#[source] std::io::Error),
    /// Spawning or stopping the process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The collector exited or did not open its ports in time.
    #[error("collector did not become ready: {reason}; log {log}:\n{tail}")]
    NotReady {
        /// What went wrong.
        reason: String,
        /// The collector's log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The output files could not be parsed.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// [`Collector::wait_for`] timed out.
    #[error(
        "timed out after {timeout:?} waiting for telemetry in {dir}; received so far: {summary}"
    )]
    Timeout {
        /// The timeout.
        timeout: Duration,
        /// The collector's output directory.
        dir: PathBuf,
        /// What had arrived (span names, metric names, log count).
        summary: String,
    },
}

/// A running `otelcol-test`. Killed on drop; [`Collector::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct Collector {
    process: Option<ManagedProcess>,
    grpc: SocketAddr,
    http: SocketAddr,
    dir: PathBuf,
    output_dir: PathBuf,
    log_path: PathBuf,
}

impl Collector {
    /// Starts a collector under `<target>/testenv-logs/` (see the module docs).
    pub async fn start() -> Result<Self, CollectorError> {
        Self::start_in(&tools::target_dir().join("testenv-logs")).await
    }

    /// Starts a collector in a new directory under `parent`, listening on 127.0.0.1.
    pub async fn start_in(parent: &Path) -> Result<Self, CollectorError> {
        Self::start_on(parent, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts a collector in a new directory under `parent`, listening on `address` (a real
    /// node's pods reach the host on a non-loopback address; see [`crate::node`]).
    pub async fn start_on(parent: &Path, address: IpAddr) -> Result<Self, CollectorError> {
        Self::start_forwarding(parent, address, None).await
    }

    /// [`Collector::start_on`], also forwarding traces and metrics over OTLP/gRPC (plaintext) to
    /// `forward`, e.g. the reference pipelines of [`crate::backends::Backends`], when given.
    pub async fn start_forwarding(
        parent: &Path,
        address: IpAddr,
        forward: Option<&str>,
    ) -> Result<Self, CollectorError> {
        let binary = tools::bin("otelcol-test")?;
        let dir = unique_dir(parent, "collector");
        let output_dir = dir.join("out");
        std::fs::create_dir_all(&output_dir).map_err(|source| CollectorError::Prepare {
            path: output_dir.clone(),
            source,
        })?;
        let config_path = dir.join("otelcol.yaml");
        let log_path = dir.join("otelcol.log");

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let grpc = SocketAddr::new(
                address,
                process::free_loopback_port().map_err(CollectorError::Port)?,
            );
            let http = SocketAddr::new(
                address,
                process::free_loopback_port().map_err(CollectorError::Port)?,
            );
            if grpc == http {
                continue;
            }
            let config = render_config(grpc, http, &output_dir, forward)?;
            std::fs::write(&config_path, config).map_err(|source| CollectorError::Prepare {
                path: config_path.clone(),
                source,
            })?;
            let mut config_arg = std::ffi::OsString::from("--config=file:");
            config_arg.push(&config_path);
            let spec = ProcessSpec::new("otelcol-test", &binary, &log_path).arg(config_arg);
            let process = ManagedProcess::spawn(spec)?;
            let mut collector = Self {
                process: Some(process),
                grpc,
                http,
                dir: dir.clone(),
                output_dir: output_dir.clone(),
                log_path: log_path.clone(),
            };
            match collector.wait_ready().await {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), %grpc, %http, "collector ready");
                    return Ok(collector);
                }
                Err(err) => {
                    let clash = matches!(&err, CollectorError::NotReady { tail, .. } if tail.contains("address already in use"));
                    drop(collector);
                    if !clash {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| CollectorError::NotReady {
            reason: "no two distinct free ports found".into(),
            log: log_path.clone(),
            tail: String::new(),
        }))
    }

    async fn wait_ready(&mut self) -> Result<(), CollectorError> {
        let (grpc, http) = (self.grpc, self.http);
        let mut process = self.process.as_mut();
        let ready = crate::wait::until_ok_or_abort("the OTLP ports", START_TIMEOUT, || {
            let exited = process.as_mut().map(|p| p.try_exit_status()).transpose();
            async move {
                match exited {
                    Err(e) => Err(CollectorError::from(e)),
                    Ok(Some(Some(status))) => Err(CollectorError::NotReady {
                        reason: format!("otelcol-test exited with {status}"),
                        log: PathBuf::new(),
                        tail: String::new(),
                    }),
                    Ok(_)
                        if process::accepts_tcp(grpc).await && process::accepts_tcp(http).await =>
                    {
                        Ok(Ok(()))
                    }
                    Ok(_) => Ok(Err("not accepting yet")),
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(()),
            // The exit, with the log's path and tail filled in.
            Err(CollectorError::NotReady { reason, .. }) => Err(self.not_ready(reason)),
            Err(e) => Err(e),
            Ok(Err(_)) => Err(self.not_ready(format!(
                "ports {grpc} (gRPC) and {http} (HTTP) not accepting after {START_TIMEOUT:?}"
            ))),
        }
    }

    fn not_ready(&self, reason: String) -> CollectorError {
        CollectorError::NotReady {
            reason,
            log: self.log_path.clone(),
            tail: process::log_tail(&self.log_path, LOG_TAIL_LINES),
        }
    }

    /// The OTLP/gRPC listening address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The OTLP/HTTP listening address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The OTLP/gRPC endpoint, e.g. `http://127.0.0.1:40123` (plaintext).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The OTLP/HTTP base endpoint, e.g. `http://127.0.0.1:40124` (signal paths `/v1/traces`,
    /// `/v1/metrics`, `/v1/logs` are appended by exporters that take `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The directory holding this collector's config, log and output.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding `traces.jsonl`, `metrics.jsonl` and `logs.jsonl`.
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// The collector's own log (stdout + stderr; the debug exporter logs a line per batch).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything written to the output files so far (the exporter flushes every 100 ms).
    pub fn read(&self) -> Result<Telemetry, CollectorError> {
        Ok(Telemetry::read_dir(&self.output_dir)?)
    }

    /// Polls the output every [`POLL_INTERVAL`] until `f` returns `Some`, or fails after
    /// `timeout` with a summary of what did arrive.
    ///
    /// ```no_run
    /// # async fn demo(c: &testenv::collector::Collector) -> Result<(), testenv::collector::CollectorError> {
    /// let span = c
    ///     .wait_for(std::time::Duration::from_secs(10), |t| t.span_named("llm.request").cloned())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Telemetry) -> Option<T>,
    ) -> Result<T, CollectorError> {
        // A read error (a line the collector is still writing) is retried like a miss.
        crate::wait::until_ok("telemetry", timeout, || {
            std::future::ready(match self.read() {
                Ok(telemetry) => f(&telemetry).ok_or_else(|| telemetry.summary()),
                Err(e) => Err(e.to_string()),
            })
        })
        .await
        .map_err(|e| CollectorError::Timeout {
            timeout,
            dir: self.output_dir.clone(),
            summary: e.last.unwrap_or_default(),
        })
    }

    /// Stops the collector: SIGTERM (it flushes its exporters), then SIGKILL after
    /// [`SHUTDOWN_GRACE`]. The output files stay readable afterwards.
    pub async fn shutdown(mut self) -> Result<(), CollectorError> {
        if let Some(process) = self.process.take() {
            process.stop(SHUTDOWN_GRACE).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The collector config: OTLP in on the two ports, one file exporter per signal (JSON lines,
/// flushed every 100 ms), the debug exporter into the log, no self-telemetry listener; with
/// `forward`, traces and metrics also go to that OTLP/gRPC endpoint.
fn render_config(
    grpc: SocketAddr,
    http: SocketAddr,
    output_dir: &Path,
    forward: Option<&str>,
) -> Result<String, serde_norway::Error> {
    let file = |name: &str| {
        serde_json::json!({
            "path": output_dir.join(name),
            "format": "json",
            "flush_interval": "100ms",
        })
    };
    let pipeline = |exporter: &str, forwarded: bool| {
        let mut exporters = vec![exporter, "debug"];
        if forwarded && forward.is_some() {
            exporters.push(FORWARD_EXPORTER);
        }
        serde_json::json!({ "receivers": ["otlp"], "exporters": exporters })
    };
    let mut config = serde_json::json!({
        "receivers": { "otlp": { "protocols": {
            "grpc": { "endpoint": grpc.to_string() },
            "http": { "endpoint": http.to_string() },
        }}},
        "exporters": {
            "file/traces": file("traces.jsonl"),
            "file/metrics": file("metrics.jsonl"),
            "file/logs": file("logs.jsonl"),
            "debug": { "verbosity": "basic" },
        },
        "service": {
            "telemetry": { "metrics": { "level": "none" } },
            "pipelines": {
                "traces": pipeline("file/traces", true),
                "metrics": pipeline("file/metrics", true),
                "logs": pipeline("file/logs", false),
            },
        },
    });
    if let Some(endpoint) = forward {
        config["exporters"][FORWARD_EXPORTER] =
            serde_json::json!({ "endpoint": endpoint, "tls": { "insecure": true } });
    }
    serde_norway::to_string(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_ports_files_and_no_self_metrics() {
        let yaml =
            render_config(loopback(1111), loopback(2222), Path::new("/tmp/x y"), None).unwrap();
        let v: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(
            v["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
            "127.0.0.1:1111"
        );
        assert_eq!(
            v["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
            "127.0.0.1:2222"
        );
        assert_eq!(v["exporters"]["file/logs"]["path"], "/tmp/x y/logs.jsonl");
        assert_eq!(v["service"]["telemetry"]["metrics"]["level"], "none");
        assert_eq!(
            v["service"]["pipelines"]["metrics"]["exporters"][0],
            "file/metrics"
        );
    }

    #[test]
    fn forwarding_adds_an_otlp_exporter_to_traces_and_metrics() {
        let yaml = render_config(
            loopback(1),
            loopback(2),
            Path::new("/o"),
            Some("http://127.0.0.1:3"),
        )
        .unwrap();
        let v: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(
            v["exporters"][FORWARD_EXPORTER]["endpoint"],
            "http://127.0.0.1:3"
        );
        let exporters = |p: &str| v["service"]["pipelines"][p]["exporters"].clone();
        assert_eq!(exporters("traces")[2], FORWARD_EXPORTER);
        assert_eq!(exporters("metrics")[2], FORWARD_EXPORTER);
        assert_eq!(exporters("logs").as_sequence().map(Vec::len), Some(2));
    }

    #[test]
    fn unique_dirs_differ() {
        let a = unique_dir(Path::new("/x"), "collector");
        let b = unique_dir(Path::new("/x"), "collector");
        assert_ne!(a, b);
    }
}
