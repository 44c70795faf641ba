//! The operator's own telemetry: logs on stderr (text or JSON), its reconcile spans over OTLP,
//! and the launch span that parents every run's trace.
//!
//! Where spans go: `OTEL_EXPORTER_OTLP_ENDPOINT` (and `OTEL_EXPORTER_OTLP_PROTOCOL`) when set,
//! else the runs' default endpoint (`--default-otlp-endpoint`), so that a run's trace and the
//! operator's launch span that parents it land in the same backend. `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turns the export off (spans are still created, so runs still get
//! a trace id). `OTEL_SERVICE_NAME` defaults to `llmjob-operator`; `OTEL_RESOURCE_ATTRIBUTES` is
//! honoured.

use std::time::Duration;

use llmjob_crds::v1alpha1::OtlpProtocol;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};
use crate::traceparent::TraceParent;

/// Instrumentation scope of the operator's spans.
pub const SCOPE: &str = "llmjob-operator";
/// Name of the span under which the operator creates a run's Job; the run's `llm_job.workflow`
/// span is its child.
pub const LAUNCH_SPAN: &str = "llmjob.launch";
/// Log filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,kube=warn,tower=warn,hyper=warn,opentelemetry=warn";
/// Timeout of one OTLP export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the operator's telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` is not a valid filter.
    #[error("RUST_LOG={value:?} is not a valid log filter: {reason}")]
    Filter {
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` has a value the operator does not speak.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported: use grpc or http/protobuf")]
    Protocol(String),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP span exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Where the operator's spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Not exported.
    Off,
    /// Exported over OTLP.
    Otlp {
        /// Endpoint (with a scheme).
        endpoint: String,
        /// Protocol.
        protocol: OtlpProtocol,
    },
}

/// Decides the export from the environment (`lookup`) and the operator's defaults.
pub fn export_from(
    lookup: impl Fn(&str) -> Option<String>,
    config: &Config,
) -> Result<Export, TelemetryError> {
    let get = |k: &str| {
        lookup(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(Export::Off);
    }
    let (endpoint, protocol) = match get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    {
        Some(endpoint) => {
            let protocol = match get("OTEL_EXPORTER_OTLP_PROTOCOL") {
                None => OtlpProtocol::Grpc,
                Some(name) => {
                    OtlpProtocol::from_name(&name).ok_or(TelemetryError::Protocol(name))?
                }
            };
            (endpoint, protocol)
        }
        None => (
            config.default_otlp_endpoint.clone(),
            config.default_otlp_protocol,
        ),
    };
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("http://{endpoint}")
    };
    Ok(Export::Otlp { endpoint, protocol })
}

/// The operator's tracer provider; shut it down before exit to flush the last spans.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global `tracing` subscriber (stderr + OpenTelemetry) and builds the tracer.
    pub fn init(config: &Config) -> Result<Self, TelemetryError> {
        let export = export_from(|k| std::env::var(k).ok(), config)?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
            resource = resource.with_service_name(SCOPE);
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        if let Export::Otlp { endpoint, protocol } = &export {
            builder = builder.with_batch_exporter(span_exporter(endpoint, *protocol)?);
        }
        let provider = builder.build();

        let filter_text = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
        let filter = EnvFilter::try_new(&filter_text).map_err(|e| TelemetryError::Filter {
            value: filter_text.clone(),
            reason: e.to_string(),
        })?;
        let fmt = match config.log_format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(std::io::stderr)
                .boxed(),
        };
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(SCOPE));
        // Tests may call this twice in one process: the first subscriber stays.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(otel)
            .try_init();
        match &export {
            Export::Off => tracing::info!("the operator's spans are not exported"),
            Export::Otlp { endpoint, protocol } => {
                tracing::info!(%endpoint, protocol = ?protocol, "exporting the operator's spans over OTLP")
            }
        }
        Ok(Telemetry { provider })
    }

    /// The tracer of launch spans.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SCOPE)
    }

    /// Flushes and stops the export (bounded by the exporter's timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            eprintln!("llmjob-operator: flushing the operator's spans failed: {e}");
        }
    }
}

fn span_exporter(
    endpoint: &str,
    protocol: OtlpProtocol,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let built = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    };
    built.map_err(|source| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        source,
    })
}

/// What the launch span describes.
#[derive(Debug, Clone)]
pub struct LaunchInfo<'a> {
    /// Namespace of the LlmJob.
    pub namespace: &'a str,
    /// Name of the LlmJob.
    pub name: &'a str,
    /// Uid of the LlmJob.
    pub uid: &'a str,
    /// The Job about to be created.
    pub job_name: &'a str,
    /// The requested model.
    pub model: &'a str,
    /// The LlmJob's `llmjob.dev/traceparent`, when valid: the launch span becomes its child.
    pub parent: Option<TraceParent>,
}

/// A started launch span; [`LaunchSpan::end`] records the outcome of the Job creation.
pub struct LaunchSpan {
    span: opentelemetry_sdk::trace::Span,
    traceparent: TraceParent,
}

impl LaunchSpan {
    /// Starts the launch span, linked to the current reconcile span (`link`).
    pub fn start(tracer: &SdkTracer, info: &LaunchInfo<'_>, link: Option<SpanContext>) -> Self {
        let parent = match info.parent {
            Some(tp) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(tp.trace_id),
                SpanId::from_bytes(tp.span_id),
                if tp.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut builder = tracer
            .span_builder(LAUNCH_SPAN)
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("k8s.namespace.name", info.namespace.to_owned()),
                KeyValue::new("k8s.job.name", info.job_name.to_owned()),
                KeyValue::new("llmjob.name", info.name.to_owned()),
                KeyValue::new("llmjob.uid", info.uid.to_owned()),
                KeyValue::new("gen_ai.request.model", info.model.to_owned()),
            ]);
        if let Some(link) = link.filter(SpanContext::is_valid) {
            builder = builder.with_links(vec![opentelemetry::trace::Link::with_context(link)]);
        }
        let span = builder.start_with_context(tracer, &parent);
        let sc = span.span_context();
        let traceparent = TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        };
        LaunchSpan { span, traceparent }
    }

    /// The `traceparent` the run's pod gets.
    pub fn traceparent(&self) -> TraceParent {
        self.traceparent
    }

    /// Ends the span, as an error when the Job could not be created.
    pub fn end(mut self, error: Option<&str>) {
        if let Some(e) = error {
            self.span.set_status(Status::error(e.to_owned()));
            self.span
                .set_attribute(KeyValue::new("error.type", "JobCreateFailed"));
        }
        self.span.end();
    }
}

/// The span context of the current `tracing` span (the reconcile), if it is being traced.
pub fn current_span_context() -> Option<SpanContext> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn config() -> Config {
        Config::parse_from(["llmjob-operator", "--default-otlp-endpoint=collector:4317"])
    }

    fn export(vars: &[(&str, &str)]) -> Result<Export, TelemetryError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        export_from(|k| map.get(k).cloned(), &config())
    }

    #[test]
    fn export_defaults_to_the_runs_endpoint() {
        assert_eq!(
            export(&[]).unwrap(),
            Export::Otlp {
                endpoint: "http://collector:4317".into(),
                protocol: OtlpProtocol::Grpc
            }
        );
        assert_eq!(
            export(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            ])
            .unwrap(),
            Export::Otlp {
                endpoint: "https://otel:4318".into(),
                protocol: OtlpProtocol::HttpProtobuf
            }
        );
        assert_eq!(
            export(&[("OTEL_SDK_DISABLED", "true")]).unwrap(),
            Export::Off
        );
        assert_eq!(
            export(&[("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            Export::Off
        );
        assert!(
            export(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            ])
            .is_err()
        );
    }

    #[test]
    fn launch_span_joins_the_annotation_trace() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let parent =
            TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let info = LaunchInfo {
            namespace: "ns",
            name: "a",
            uid: "u",
            job_name: "a",
            model: "gpt-4o-mini",
            parent: Some(parent),
        };
        let span = LaunchSpan::start(&tracer, &info, None);
        let tp = span.traceparent();
        assert_eq!(tp.trace_id, parent.trace_id);
        assert_ne!(tp.span_id, parent.span_id);
        assert!(tp.sampled);
        span.end(None);

        let root = LaunchSpan::start(
            &tracer,
            &LaunchInfo {
                parent: None,
                ..info
            },
            None,
        );
        assert_ne!(root.traceparent().trace_id, parent.trace_id);
        assert_ne!(root.traceparent().trace_id, [0; 16]);
        root.end(Some("boom"));
    }
}
