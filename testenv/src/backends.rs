//! A real Prometheus and a real Jaeger v2 behind a collector that runs the reference pipelines of
//! `manifests/observability/` (`traces-otlp.yaml`, `metrics-prometheus.yaml`, `logs-otlp.yaml`,
//! with Prometheus configured by `prometheus.yml`), all as managed local processes on free
//! loopback ports. Runs export OTLP to [`Backends::otlp_grpc_endpoint`]; the tests and the demo
//! read back through Prometheus's query API ([`Backends::query`]) and Jaeger's
//! ([`Backends::trace`]). The log records go to an OTLP/HTTP endpoint the caller names (a
//! testenv [`crate::collector::Collector`], whose files can be read); without one the pipeline
//! runs the traces and metrics files only.
//!
//! This module owns starting, probing and stopping the three processes; it never edits the
//! reference pipelines (the test must run the files users copy) and knows no metric name.
//!
//! Where things go: `<target>/testenv-logs/backends-<millis>-<pid>-<n>/` holds each process's
//! log (`prometheus.log`, `jaeger.log`, `pipeline.log`), `jaeger.yaml`, and Prometheus's TSDB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::unique_dir;
use crate::process::{self, ManagedProcess, ProcessError, ProcessSpec};
use crate::tools::{self, MissingTool};

/// How long [`Backends::start`] waits for each process to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Backends::shutdown`] waits after SIGTERM before SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Lines of a process's log quoted in errors.
const LOG_TAIL_LINES: usize = 30;
/// The reference pipelines, relative to the workspace root.
pub const PIPELINE_DIR: &str = "manifests/observability";
/// The pipeline files the collector runs, merged in this order.
pub const PIPELINE_FILES: [&str; 3] = [
    "traces-otlp.yaml",
    "metrics-prometheus.yaml",
    "logs-otlp.yaml",
];

/// The logs pipeline of [`PIPELINE_FILES`], left out without a logs endpoint.
const LOGS_PIPELINE: &str = "logs-otlp.yaml";

/// Errors from starting, querying or stopping the backends.
#[derive(Debug, thiserror::Error)]
pub enum BackendsError {
    /// `prometheus`, `jaeger` or `otelcol-test` is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// A directory or config file could not be written or read.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Jaeger config could not be rendered.
    #[error("cannot render the Jaeger config: {0}")]
    Config(#[from] serde_norway::Error),
    /// No free port could be found.
    #[error("cannot pick a free loopback port: {0}")]
    Port(#[source] std::io::Error),
    /// Spawning or stopping a process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A process exited or did not answer in time.
    #[error("{name} did not become ready: {reason}; log {log}:\n{tail}")]
    NotReady {
        /// Which process.
        name: String,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// An HTTP request to Prometheus or Jaeger failed.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// Prometheus or Jaeger answered with an error or an unexpected body.
    #[error("{what}: {detail}")]
    Api {
        /// The request.
        what: String,
        /// The status and body, or what was missing from it.
        detail: String,
    },
}

/// One sample of an instant-vector query result: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (with `__name__` when the query kept it).
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// The value.
    pub value: f64,
}

/// The running backends. Killed on drop; [`Backends::shutdown`] stops them gracefully.
#[derive(Debug)]
pub struct Backends {
    pipeline: Option<ManagedProcess>,
    jaeger: Option<ManagedProcess>,
    prometheus: Option<ManagedProcess>,
    prometheus_addr: SocketAddr,
    jaeger_query_addr: SocketAddr,
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Backends {
    /// Starts Prometheus, Jaeger and the reference-pipeline collector under
    /// `<target>/testenv-logs/`; the pipeline sends log records to `logs_endpoint` (an OTLP/HTTP
    /// base URL such as [`crate::collector::Collector::http_endpoint`]), or has no logs pipeline
    /// when it is `None`.
    pub async fn start(logs_endpoint: Option<&str>) -> Result<Self, BackendsError> {
        Self::start_in(&tools::target_dir().join("testenv-logs"), logs_endpoint).await
    }

    /// [`Backends::start`] in a new directory under `parent`.
    pub async fn start_in(
        parent: &Path,
        logs_endpoint: Option<&str>,
    ) -> Result<Self, BackendsError> {
        Self::start_scraping(parent, IpAddr::V4(Ipv4Addr::LOCALHOST), logs_endpoint, &[]).await
    }

    /// [`Backends::start_in`], with the pipeline's OTLP receivers on `listen` (a real node's pods
    /// reach the host on its non-loopback address, see [`crate::node`]) and Prometheus also
    /// scraping `/metrics` of each `(job, address)` in `scrape` every second (e.g. the
    /// operator's HTTP server), beside the reference `prometheus.yml`'s settings.
    pub async fn start_scraping(
        parent: &Path,
        listen: IpAddr,
        logs_endpoint: Option<&str>,
        scrape: &[(&str, SocketAddr)],
    ) -> Result<Self, BackendsError> {
        let prometheus_bin = tools::bin("prometheus")?;
        let jaeger_bin = tools::bin("jaeger")?;
        let otelcol_bin = tools::bin("otelcol-test")?;
        let dir = unique_dir(parent, "backends");
        let prepare = |path: &Path| {
            std::fs::create_dir_all(path).map_err(|source| BackendsError::Prepare {
                path: path.to_owned(),
                source,
            })
        };
        prepare(&dir.join("tsdb"))?;
        let pipelines = tools::workspace_root().join(PIPELINE_DIR);
        let port = || {
            process::free_loopback_port()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .map_err(BackendsError::Port)
        };
        let (prometheus_addr, jaeger_query_addr, jaeger_grpc_query) = (port()?, port()?, port()?);
        let (jaeger_otlp, jaeger_otlp_http) = (port()?, port()?);
        let on_listen = |addr: SocketAddr| SocketAddr::new(listen, addr.port());
        let (otlp_grpc, otlp_http) = (on_listen(port()?), on_listen(port()?));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| BackendsError::Http {
                what: "building the HTTP client".into(),
                source,
            })?;
        let mut backends = Self {
            pipeline: None,
            jaeger: None,
            prometheus: None,
            prometheus_addr,
            jaeger_query_addr,
            otlp_grpc,
            otlp_http,
            dir: dir.clone(),
            http,
        };

        let reference = pipelines.join("prometheus.yml");
        let prometheus_config = if scrape.is_empty() {
            reference
        } else {
            let path = dir.join("prometheus.yml");
            let text =
                std::fs::read_to_string(&reference).map_err(|source| BackendsError::Prepare {
                    path: reference.clone(),
                    source,
                })?;
            let rendered = with_scrape_configs(&text, scrape)?;
            std::fs::write(&path, rendered).map_err(|source| BackendsError::Prepare {
                path: path.clone(),
                source,
            })?;
            path
        };
        let mut config = std::ffi::OsString::from("--config.file=");
        config.push(&prometheus_config);
        let mut tsdb = std::ffi::OsString::from("--storage.tsdb.path=");
        tsdb.push(dir.join("tsdb"));
        let spec = ProcessSpec::new("prometheus", &prometheus_bin, dir.join("prometheus.log"))
            .arg(config)
            .arg(tsdb)
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .arg("--web.enable-otlp-receiver")
            .current_dir(&dir);
        backends.prometheus = Some(ManagedProcess::spawn(spec)?);

        let jaeger_config = dir.join("jaeger.yaml");
        let rendered = render_jaeger_config(
            jaeger_otlp,
            jaeger_otlp_http,
            jaeger_query_addr,
            jaeger_grpc_query,
        )?;
        std::fs::write(&jaeger_config, rendered).map_err(|source| BackendsError::Prepare {
            path: jaeger_config.clone(),
            source,
        })?;
        let mut config = std::ffi::OsString::from("--config=file:");
        config.push(&jaeger_config);
        let spec = ProcessSpec::new("jaeger", &jaeger_bin, dir.join("jaeger.log")).arg(config);
        backends.jaeger = Some(ManagedProcess::spawn(spec)?);

        let mut spec = ProcessSpec::new("pipeline", &otelcol_bin, dir.join("pipeline.log"))
            .env("OTLP_GRPC_LISTEN", otlp_grpc.to_string())
            .env("OTLP_HTTP_LISTEN", otlp_http.to_string())
            .env("OTLP_TRACES_ENDPOINT", jaeger_otlp.to_string())
            .env("OTLP_TRACES_INSECURE", "true")
            .env(
                "PROMETHEUS_OTLP_ENDPOINT",
                format!("http://{prometheus_addr}/api/v1/otlp/v1/metrics"),
            );
        if let Some(endpoint) = logs_endpoint {
            spec = spec.env("OTLP_LOGS_ENDPOINT", endpoint);
        }
        for file in PIPELINE_FILES {
            if file == LOGS_PIPELINE && logs_endpoint.is_none() {
                continue;
            }
            let mut arg = std::ffi::OsString::from("--config=file:");
            arg.push(pipelines.join(file));
            spec = spec.arg(arg);
        }
        // Beside the reference files: no self-telemetry listener on the fixed port 8888.
        spec = spec.arg("--config=yaml:service::telemetry::metrics::level: none");
        backends.pipeline = Some(ManagedProcess::spawn(spec)?);

        backends.wait_ready().await?;
        tracing::debug!(dir = %dir.display(), %prometheus_addr, %jaeger_query_addr, %otlp_grpc, "backends ready");
        Ok(backends)
    }

    async fn wait_ready(&mut self) -> Result<(), BackendsError> {
        let prometheus_ready = format!("{}/-/ready", self.prometheus_url());
        let jaeger_ready = format!("{}/api/services", self.jaeger_url());
        let checks = [
            ("prometheus", Probe::Http(prometheus_ready)),
            ("jaeger", Probe::Http(jaeger_ready)),
            ("pipeline", Probe::Tcp(self.otlp_grpc, self.otlp_http)),
        ];
        for (name, probe) in checks {
            let http = self.http.clone();
            let process = match name {
                "prometheus" => self.prometheus.as_mut(),
                "jaeger" => self.jaeger.as_mut(),
                _ => self.pipeline.as_mut(),
            };
            let Some(process) = process else { continue };
            let log = process.log_path().to_owned();
            let mut process = Some(process);
            let ready = crate::wait::until_ok_or_abort(name, START_TIMEOUT, || {
                let exited = process.as_mut().map(|p| p.try_exit_status()).transpose();
                let (http, probe) = (http.clone(), probe.clone());
                async move {
                    match exited {
                        Err(e) => Err(e.to_string()),
                        Ok(Some(Some(status))) => Err(format!("exited with {status}")),
                        Ok(_) => Ok(probe.check(&http).await),
                    }
                }
            })
            .await;
            let reason = match ready {
                Ok(Ok(())) => continue,
                Err(reason) => reason,
                Ok(Err(last)) => format!("not answering after {START_TIMEOUT:?}: {last}"),
            };
            return Err(BackendsError::NotReady {
                name: name.to_owned(),
                reason,
                tail: process::log_tail(&log, LOG_TAIL_LINES),
                log,
            });
        }
        Ok(())
    }

    /// The reference pipeline's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:40123`: where runs
    /// export.
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://{}", self.otlp_grpc)
    }

    /// The reference pipeline's OTLP/gRPC listening address.
    pub fn otlp_grpc_addr(&self) -> SocketAddr {
        self.otlp_grpc
    }

    /// The reference pipeline's OTLP/HTTP base endpoint.
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://{}", self.otlp_http)
    }

    /// Prometheus's base URL (its HTTP API; this build has no web UI assets).
    pub fn prometheus_url(&self) -> String {
        format!("http://{}", self.prometheus_addr)
    }

    /// Jaeger's query base URL (`/api/traces/{id}`, `/api/v3/...`; the UI at `/trace/{id}`).
    pub fn jaeger_url(&self) -> String {
        format!("http://{}", self.jaeger_query_addr)
    }

    /// The directory holding the logs, the Jaeger config and the TSDB.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An instant PromQL query at the current time. A vector gives one [`Sample`] per series, a
    /// scalar one sample without labels.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, BackendsError> {
        let what = format!("Prometheus query {promql:?}");
        let url = format!("{}/api/v1/query", self.prometheus_url());
        let body = self.get_json(&what, &url, &[("query", promql)]).await?;
        parse_query_result(&body).map_err(|detail| BackendsError::Api { what, detail })
    }

    /// How many series Prometheus holds for the series selector `matcher` (e.g.
    /// `{__name__=~"gen_ai_.*"}`), over its whole retention.
    pub async fn series_count(&self, matcher: &str) -> Result<usize, BackendsError> {
        let what = format!("Prometheus series {matcher:?}");
        let url = format!("{}/api/v1/series", self.prometheus_url());
        let body = self
            .get_json(&what, &url, &[("match[]", matcher), ("start", "0")])
            .await?;
        body.get("data")
            .and_then(|d| d.as_array())
            .map(Vec::len)
            .ok_or_else(|| BackendsError::Api {
                what,
                detail: format!("no data array in {body}"),
            })
    }

    /// The trace `trace_id` (32 hex digits) from Jaeger's query API (`/api/traces/{id}`, the
    /// JSON the Jaeger UI reads): `data[0]` with its `spans` and `processes`. A trace Jaeger does
    /// not hold (yet) is an [`BackendsError::Api`] error.
    pub async fn trace(&self, trace_id: &str) -> Result<serde_json::Value, BackendsError> {
        let what = format!("Jaeger trace {trace_id}");
        let url = format!("{}/api/traces/{trace_id}", self.jaeger_url());
        let body = self.get_json(&what, &url, &[]).await?;
        body.get("data")
            .and_then(|d| d.get(0))
            .cloned()
            .ok_or_else(|| BackendsError::Api {
                what,
                detail: format!("no trace in {body}"),
            })
    }

    async fn get_json(
        &self,
        what: &str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, BackendsError> {
        let http_err = |source| BackendsError::Http {
            what: what.to_owned(),
            source,
        };
        let url = url::Url::parse_with_params(url, query).map_err(|e| BackendsError::Api {
            what: what.to_owned(),
            detail: format!("bad URL {url}: {e}"),
        })?;
        let response = self.http.get(url).send().await.map_err(http_err)?;
        let status = response.status();
        let text = response.text().await.map_err(http_err)?;
        if !status.is_success() {
            return Err(BackendsError::Api {
                what: what.to_owned(),
                detail: format!("{status}: {text}"),
            });
        }
        serde_json::from_str(&text).map_err(|e| BackendsError::Api {
            what: what.to_owned(),
            detail: format!("{e} in {text}"),
        })
    }

    /// Stops the pipeline first (it flushes to the backends), then Jaeger and Prometheus:
    /// SIGTERM, then SIGKILL after [`SHUTDOWN_GRACE`].
    pub async fn shutdown(mut self) -> Result<(), BackendsError> {
        for process in [
            self.pipeline.take(),
            self.jaeger.take(),
            self.prometheus.take(),
        ]
        .into_iter()
        .flatten()
        {
            process.stop(SHUTDOWN_GRACE).await?;
        }
        Ok(())
    }
}

/// How [`Backends::start`] knows a process is up.
#[derive(Debug, Clone)]
enum Probe {
    /// A GET answering 2xx.
    Http(String),
    /// Both ports accepting TCP connections.
    Tcp(SocketAddr, SocketAddr),
}

impl Probe {
    async fn check(&self, http: &reqwest::Client) -> Result<(), String> {
        match self {
            Probe::Http(url) => match http.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url}: {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            },
            Probe::Tcp(a, b) => {
                if process::accepts_tcp(*a).await && process::accepts_tcp(*b).await {
                    Ok(())
                } else {
                    Err(format!("{a} and {b} not both accepting"))
                }
            }
        }
    }
}

/// The samples of a `/api/v1/query` answer (`vector` or `scalar`).
fn parse_query_result(body: &serde_json::Value) -> Result<Vec<Sample>, String> {
    let data = body
        .get("data")
        .ok_or_else(|| format!("no data in {body}"))?;
    let value_of = |pair: &serde_json::Value| {
        pair.get(1)
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no value in {pair}"))
    };
    match data.get("resultType").and_then(|t| t.as_str()) {
        Some("vector") => data
            .get("result")
            .and_then(|r| r.as_array())
            .ok_or_else(|| format!("no result in {body}"))?
            .iter()
            .map(|s| {
                Ok(Sample {
                    labels: s
                        .get("metric")
                        .and_then(|m| m.as_object())
                        .cloned()
                        .unwrap_or_default(),
                    value: value_of(s.get("value").unwrap_or(&serde_json::Value::Null))?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: serde_json::Map::new(),
            value: value_of(data.get("result").unwrap_or(&serde_json::Value::Null))?,
        }]),
        other => Err(format!("unexpected result type {other:?} in {body}")),
    }
}

/// The reference Prometheus settings plus one static scrape job per `(job, address)`, scraped
/// every second.
fn with_scrape_configs(
    reference: &str,
    scrape: &[(&str, SocketAddr)],
) -> Result<String, serde_norway::Error> {
    let mut config: serde_json::Value = serde_norway::from_str(reference)?;
    config["scrape_configs"] = scrape
        .iter()
        .map(|(job, addr)| {
            serde_json::json!({
                "job_name": job,
                "scrape_interval": "1s",
                "static_configs": [{ "targets": [addr.to_string()] }],
            })
        })
        .collect();
    serde_norway::to_string(&config)
}

/// Jaeger v2's config: OTLP in on two ports, traces in memory, the query API (HTTP and gRPC) on
/// two more, no self-telemetry listener.
fn render_jaeger_config(
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    query_http: SocketAddr,
    query_grpc: SocketAddr,
) -> Result<String, serde_norway::Error> {
    let config = serde_json::json!({
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": { "traces": {
                "receivers": ["otlp"],
                "processors": ["batch"],
                "exporters": ["jaeger_storage_exporter"],
            }},
            "telemetry": { "metrics": { "level": "none" } },
        },
        "extensions": {
            "jaeger_query": {
                "storage": { "traces": "memstore" },
                "http": { "endpoint": query_http.to_string() },
                "grpc": { "endpoint": query_grpc.to_string() },
            },
            "jaeger_storage": { "backends": { "memstore": { "memory": { "max_traces": 100000 } } } },
        },
        "receivers": { "otlp": { "protocols": {
            "grpc": { "endpoint": otlp_grpc.to_string() },
            "http": { "endpoint": otlp_http.to_string() },
        }}},
        "processors": { "batch": {} },
        "exporters": { "jaeger_storage_exporter": { "trace_storage": "memstore" } },
    });
    serde_norway::to_string(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vectors_and_scalars() {
        let vector = serde_json::json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {"__name__": "up", "job": "x"}, "value": [1.5, "42"]}]}});
        let samples = parse_query_result(&vector).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[0].labels["job"], "x");
        let scalar = serde_json::json!({"data": {"resultType": "scalar", "result": [1.5, "7"]}});
        assert_eq!(parse_query_result(&scalar).unwrap()[0].value, 7.0);
        let matrix = serde_json::json!({"data": {"resultType": "matrix", "result": []}});
        assert!(parse_query_result(&matrix).is_err());
    }

    #[test]
    fn scrape_jobs_are_added_to_the_reference_settings() {
        let yaml = with_scrape_configs(
            "otlp:\n  promote_all_resource_attributes: true\n",
            &[("op", SocketAddr::from(([127, 0, 0, 1], 9)))],
        )
        .unwrap();
        let v: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(v["otlp"]["promote_all_resource_attributes"], true);
        assert_eq!(v["scrape_configs"][0]["job_name"], "op");
        assert_eq!(
            v["scrape_configs"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:9"
        );
    }

    #[test]
    fn jaeger_config_names_the_ports_and_memory_store() {
        let a = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let yaml = render_jaeger_config(a(1), a(2), a(3), a(4)).unwrap();
        let v: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(
            v["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
            "127.0.0.1:1"
        );
        assert_eq!(
            v["extensions"]["jaeger_query"]["http"]["endpoint"],
            "127.0.0.1:3"
        );
        assert_eq!(
            v["exporters"]["jaeger_storage_exporter"]["trace_storage"],
            "memstore"
        );
    }
}
