//! Sets up the run's telemetry: the resource, OTLP exporters for traces, metrics and logs (gRPC
//! or HTTP/protobuf), the GenAI metric instruments, and the `tracing` subscriber that writes
//! human-readable lines to stderr and bridges the runner's own events to OTLP log records.
//! Also owns the bounded flush at exit.
//!
//! It must never change the run's outcome: exporter failures are reported on stderr, and
//! [`Telemetry::shutdown`] returns within its budget whatever the collector does.

use std::time::Duration;

use llmjob_crds::v1alpha1::OtlpProtocol;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::attributes as attr;
use crate::config::TelemetryConfig;

/// The instrumentation scope of everything the runner emits.
pub const SCOPE: &str = "llmjob-runner";
/// Per-request timeout of the exporters.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Total time allowed for flushing at exit.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(5);
/// `gen_ai.client.token.usage` buckets (the conventions' advice).
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.client.operation.duration` and time-to-first-chunk buckets (the conventions' advice).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The default log filter: our events at info, the SDK's own only when something is wrong.
pub const DEFAULT_FILTER: &str =
    "info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// Errors while setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An exporter could not be built.
    #[error("cannot build the OTLP {signal} exporter for {endpoint}: {source}")]
    Exporter {
        /// traces, metrics or logs.
        signal: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// `RUST_LOG` is not a valid filter.
    #[error(
        "invalid RUST_LOG={value:?}: {reason}; accepted: a log filter such as info or llmjob_runner=debug"
    )]
    Filter {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Shuts one pipeline down, returning what went wrong.
type FlushJob = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// The GenAI client metrics.
#[derive(Debug, Clone)]
pub struct Instruments {
    /// `gen_ai.client.token.usage`.
    pub token_usage: Histogram<u64>,
    /// `gen_ai.client.operation.duration`.
    pub duration: Histogram<f64>,
    /// `gen_ai.client.operation.time_to_first_chunk`.
    pub time_to_first_chunk: Histogram<f64>,
    /// `gen_ai.client.generation.choices`.
    pub choices: Counter<u64>,
}

/// The run's telemetry pipeline.
pub struct Telemetry {
    /// The tracer of the run's spans.
    pub tracer: SdkTracer,
    /// The metric instruments.
    pub instruments: Instruments,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    logger_provider: SdkLoggerProvider,
}

/// Builds the resource shared by traces, metrics and logs. Precedence: `service.name` and the
/// deployment environment from the configuration over the same keys in
/// `OTEL_RESOURCE_ATTRIBUTES`, over the defaults.
pub fn resource(cfg: &TelemetryConfig) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new(attr::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
            KeyValue::new(attr::SERVICE_INSTANCE_ID, uuid::Uuid::new_v4().to_string()),
        ])
        .with_attributes(
            cfg.resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attributes([
            KeyValue::new(attr::SERVICE_NAME, cfg.service_name.clone()),
            KeyValue::new(attr::DEPLOYMENT_ENVIRONMENT_NAME, cfg.environment.clone()),
            KeyValue::new(attr::DEPLOYMENT_ENVIRONMENT, cfg.environment.clone()),
        ])
        .build()
}

fn endpoint_for(cfg: &TelemetryConfig, signal_path: &str) -> String {
    let base = cfg.endpoint.as_str().trim_end_matches('/');
    match cfg.protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf => format!("{base}/{signal_path}"),
    }
}

macro_rules! exporter {
    ($kind:ty, $cfg:expr, $signal:literal, $path:literal) => {{
        let endpoint = endpoint_for($cfg, $path);
        let built = match $cfg.protocol {
            OtlpProtocol::Grpc => <$kind>::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            OtlpProtocol::HttpProtobuf => <$kind>::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        };
        built.map_err(|source| TelemetryError::Exporter {
            signal: $signal,
            endpoint,
            source,
        })?
    }};
}

impl Telemetry {
    /// Builds the providers and installs the global `tracing` subscriber. With
    /// `OTEL_SDK_DISABLED=true` spans and metrics are still recorded in-process (so the result
    /// has a trace id) but nothing is exported.
    pub fn init(cfg: &TelemetryConfig, log_filter: Option<&str>) -> Result<Self, TelemetryError> {
        let filter_text = log_filter.unwrap_or(DEFAULT_FILTER);
        let filter = |text: &str| {
            EnvFilter::try_new(text).map_err(|e| TelemetryError::Filter {
                value: text.to_owned(),
                reason: e.to_string(),
            })
        };
        let stderr_filter = filter(filter_text)?;
        let otlp_filter = filter(filter_text)?;

        let resource = resource(cfg);
        let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut meter_builder = SdkMeterProvider::builder().with_resource(resource.clone());
        let mut logger_builder = SdkLoggerProvider::builder().with_resource(resource);
        if !cfg.disabled {
            tracer_builder = tracer_builder.with_batch_exporter(exporter!(
                opentelemetry_otlp::SpanExporter,
                cfg,
                "traces",
                "v1/traces"
            ));
            meter_builder = meter_builder.with_reader(
                PeriodicReader::builder(exporter!(
                    opentelemetry_otlp::MetricExporter,
                    cfg,
                    "metrics",
                    "v1/metrics"
                ))
                .with_interval(Duration::from_secs(30))
                .build(),
            );
            logger_builder = logger_builder.with_batch_exporter(exporter!(
                opentelemetry_otlp::LogExporter,
                cfg,
                "logs",
                "v1/logs"
            ));
        }
        let tracer_provider = tracer_builder.build();
        let meter_provider = meter_builder.build();
        let logger_provider = logger_builder.build();

        // Only the runner's own events become OTLP log records: the SDK's internal logs would
        // otherwise feed back into the exporter they describe.
        let bridge = OpenTelemetryTracingBridge::new(&logger_provider)
            .with_filter(otlp_filter)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("llmjob_runner")
            }));
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(stderr_filter);
        // A second init (tests calling `run` twice in one process) keeps the first subscriber.
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(bridge)
            .try_init();

        let meter = meter_provider.meter(SCOPE);
        let instruments = Instruments {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            time_to_first_chunk: meter
                .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
                .with_unit("s")
                .with_description("Time to receive the first chunk of a streamed response")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            choices: meter
                .u64_counter("gen_ai.client.generation.choices")
                .with_unit("{choice}")
                .with_description("Number of choices returned by chat completions")
                .build(),
        };
        let tracer = tracer_provider.tracer(SCOPE);
        Ok(Telemetry {
            tracer,
            instruments,
            tracer_provider,
            meter_provider,
            logger_provider,
        })
    }

    /// Flushes and shuts down the three pipelines, concurrently, within `budget` in total. Never
    /// fails the run: returns the problems found (as text for stderr), empty when everything was
    /// exported.
    ///
    /// Each provider shuts down on a thread of its own, not a runtime's blocking pool: a runtime
    /// waits for its blocking tasks when it is dropped, so an exporter stuck past the budget
    /// would hold the process. A thread still running when the budget is spent is abandoned and
    /// ends with the process.
    pub async fn shutdown(self, budget: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + budget;
        let Telemetry {
            tracer_provider,
            meter_provider,
            logger_provider,
            ..
        } = self;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut problems = Vec::new();
        let jobs: [(&'static str, FlushJob); 3] = [
            (
                "traces",
                Box::new(move || {
                    tracer_provider
                        .shutdown_with_timeout(budget)
                        .map_err(|e| e.to_string())
                }),
            ),
            (
                "metrics",
                Box::new(move || {
                    meter_provider
                        .shutdown_with_timeout(budget)
                        .map_err(|e| e.to_string())
                }),
            ),
            (
                "logs",
                Box::new(move || {
                    logger_provider
                        .shutdown_with_timeout(budget)
                        .map_err(|e| e.to_string())
                }),
            ),
        ];
        let mut pending = Vec::new();
        for (signal, job) in jobs {
            let tx = tx.clone();
            let runtime = runtime.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("flush {signal}"))
                .spawn(move || {
                    let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    // The receiver may be gone (budget spent): nobody to tell then.
                    let _ = tx.send((signal, job()));
                });
            match spawned {
                Ok(_) => pending.push(signal),
                Err(e) => problems.push(format!("{signal}: cannot start the flush thread: {e}")),
            }
        }
        drop(tx);
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((signal, result))) => {
                    pending.retain(|s| *s != signal);
                    if let Err(e) = result {
                        problems.push(format!("{signal}: {e}"));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    problems.push(format!(
                        "export of {} did not finish within {budget:?}; giving up on it",
                        pending.join(", ")
                    ));
                    break;
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_wins_over_resource_attributes() {
        let cfg = TelemetryConfig {
            disabled: true,
            service_name: "svc".into(),
            environment: "prod".into(),
            endpoint: url::Url::parse("http://127.0.0.1:4317").unwrap_or_else(|_| unreachable!()),
            protocol: OtlpProtocol::Grpc,
            resource_attributes: vec![
                ("service.name".into(), "other".into()),
                ("k8s.pod.name".into(), "p".into()),
            ],
            parent: None,
        };
        let r = resource(&cfg);
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("svc"));
        assert_eq!(get("deployment.environment.name").as_deref(), Some("prod"));
        assert_eq!(get("deployment.environment").as_deref(), Some("prod"));
        assert_eq!(get("k8s.pod.name").as_deref(), Some("p"));
        assert_eq!(get("telemetry.sdk.language").as_deref(), Some("rust"));
        assert!(get("service.instance.id").is_some());
    }

    #[test]
    fn http_endpoints_get_signal_paths() {
        let mut cfg = TelemetryConfig {
            disabled: false,
            service_name: String::new(),
            environment: String::new(),
            endpoint: url::Url::parse("http://c:4318/").unwrap_or_else(|_| unreachable!()),
            protocol: OtlpProtocol::HttpProtobuf,
            resource_attributes: vec![],
            parent: None,
        };
        assert_eq!(endpoint_for(&cfg, "v1/traces"), "http://c:4318/v1/traces");
        cfg.protocol = OtlpProtocol::Grpc;
        assert_eq!(endpoint_for(&cfg, "v1/traces"), "http://c:4318");
    }
}
