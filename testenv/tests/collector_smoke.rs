//! End-to-end check of the collector harness: a real `otelcol-test` receives a span, a histogram
//! and a log record from the Rust OTLP exporters (gRPC and HTTP/protobuf), and
//! `testenv::telemetry` reads them back from the JSON-lines files.
//!
//! Needs `bash tools/ensure-tools.sh`; fails (never skips) when the collector is missing.

use std::time::Duration;

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use testenv::collector::Collector;
use testenv::telemetry::{MetricData, SpanKind, StatusCode, Temporality};

const WAIT: Duration = Duration::from_secs(20);

async fn start_collector() -> Collector {
    match Collector::start().await {
        Ok(c) => c,
        Err(e) => panic!("cannot start the collector: {e}"),
    }
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(KeyValue::new("deployment.environment.name", "test"))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_span_histogram_and_log_arrive_linked() {
    let collector = start_collector().await;
    let endpoint = collector.grpc_endpoint();

    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource("smoke-grpc"))
        .with_batch_exporter(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .unwrap(),
        )
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource("smoke-grpc"))
        .with_periodic_exporter(
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .unwrap(),
        )
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource("smoke-grpc"))
        .with_batch_exporter(
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .unwrap(),
        )
        .build();

    // A parent and a child span, a log record inside the child, a histogram measurement.
    let tracer = tracer_provider.tracer("smoke-scope");
    let mut parent = tracer
        .span_builder("smoke.parent")
        .with_kind(opentelemetry::trace::SpanKind::Server)
        .with_attributes([
            KeyValue::new("smoke.tokens", 42_i64),
            KeyValue::new("smoke.model", "gpt-test"),
        ])
        .start(&tracer);
    parent.add_event("smoke.started", vec![KeyValue::new("attempt", 1_i64)]);
    let parent_cx = Context::current().with_span(parent);
    let mut child = tracer.start_with_context("smoke.child", &parent_cx);
    let child_ctx = child.span_context().clone();
    let logger = logger_provider.logger("smoke-scope");
    let mut record = logger.create_log_record();
    record.set_event_name("smoke.event");
    record.set_severity_number(Severity::Warn);
    record.set_severity_text("WARN");
    record.set_body("something happened".into());
    record.add_attribute("smoke.key", "value");
    record.set_trace_context(
        child_ctx.trace_id(),
        child_ctx.span_id(),
        Some(child_ctx.trace_flags()),
    );
    logger.emit(record);
    child.set_status(opentelemetry::trace::Status::error("child failed"));
    child.end();
    parent_cx.span().end();

    let histogram = meter_provider
        .meter("smoke-scope")
        .f64_histogram("smoke.duration")
        .with_unit("s")
        .with_boundaries(vec![0.1, 1.0, 10.0])
        .build();
    histogram.record(0.5, &[KeyValue::new("smoke.op", "chat")]);
    histogram.record(2.0, &[KeyValue::new("smoke.op", "chat")]);

    tracer_provider.force_flush().unwrap();
    meter_provider.force_flush().unwrap();
    logger_provider.force_flush().unwrap();

    let trace_id = child_ctx.trace_id().to_string();
    let telemetry = collector
        .wait_for(WAIT, |t| {
            let ready = t.span_named("smoke.parent").is_some()
                && t.span_named("smoke.child").is_some()
                && t.metric("smoke.duration").is_some()
                && !t.logs.is_empty();
            ready.then(|| t.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let parent = telemetry.span_named("smoke.parent").unwrap();
    let child = telemetry.span_named("smoke.child").unwrap();
    assert_eq!(parent.trace_id, trace_id);
    assert_eq!(parent.parent_span_id, None);
    assert_eq!(parent.kind, SpanKind::Server);
    assert_eq!(parent.scope_name, "smoke-scope");
    assert_eq!(parent.attributes.int("smoke.tokens"), Some(42));
    assert_eq!(parent.attributes.str("smoke.model"), Some("gpt-test"));
    assert_eq!(parent.resource.str("service.name"), Some("smoke-grpc"));
    assert_eq!(
        parent.resource.str("deployment.environment.name"),
        Some("test")
    );
    assert_eq!(
        parent
            .event("smoke.started")
            .unwrap()
            .attributes
            .int("attempt"),
        Some(1)
    );
    assert!(parent.end_unix_nano >= parent.start_unix_nano);
    assert_eq!(telemetry.children_of(parent), vec![child]);
    assert_eq!(child.status.code, StatusCode::Error);
    assert_eq!(child.status.message, "child failed");
    assert_eq!(telemetry.trace(&trace_id).len(), 2);

    let metric = telemetry.metric("smoke.duration").unwrap();
    assert_eq!(metric.unit, "s");
    assert_eq!(metric.resource.str("service.name"), Some("smoke-grpc"));
    let MetricData::Histogram {
        temporality,
        points,
    } = &metric.data
    else {
        panic!("not a histogram: {metric:?}");
    };
    assert_eq!(*temporality, Temporality::Cumulative);
    assert_eq!(points.len(), 1);
    let point = &points[0];
    assert_eq!(point.attributes.str("smoke.op"), Some("chat"));
    assert_eq!(point.count, 2);
    assert_eq!(point.sum, Some(2.5));
    assert_eq!(point.explicit_bounds, vec![0.1, 1.0, 10.0]);
    assert_eq!(point.bucket_counts, vec![0, 1, 1, 0]);
    assert_eq!((point.min, point.max), (Some(0.5), Some(2.0)));

    let logs = telemetry.logs_for_trace(&trace_id);
    assert_eq!(logs.len(), 1, "{:?}", telemetry.logs);
    let log = logs[0];
    assert_eq!(log.span_id.as_deref(), Some(child.span_id.as_str()));
    assert_eq!(log.event_name.as_deref(), Some("smoke.event"));
    assert_eq!(log.severity_number, 13);
    assert_eq!(log.severity_text, "WARN");
    assert_eq!(log.body_str(), Some("something happened"));
    assert_eq!(log.attributes.str("smoke.key"), Some("value"));
    assert_eq!(log.resource.str("service.name"), Some("smoke-grpc"));

    tracer_provider.shutdown().unwrap();
    meter_provider.shutdown().unwrap();
    logger_provider.shutdown().unwrap();
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_span_and_log_arrive() {
    let collector = start_collector().await;
    let base = collector.http_endpoint();

    // Simple (synchronous) processors: the export runs on the calling thread, inside this
    // runtime, which the async HTTP client needs.
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource("smoke-http"))
        .with_simple_exporter(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/traces"))
                .build()
                .unwrap(),
        )
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource("smoke-http"))
        .with_simple_exporter(
            opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/logs"))
                .build()
                .unwrap(),
        )
        .build();

    let trace_id = tokio::task::spawn_blocking(move || {
        let tracer = tracer_provider.tracer("smoke-http-scope");
        let trace_id = tracer.in_span("smoke.http", |cx| {
            cx.span().set_attribute(KeyValue::new("smoke.flag", true));
            let logger = logger_provider.logger("smoke-http-scope");
            let mut record = logger.create_log_record();
            record.set_body("over http".into());
            let sc = cx.span().span_context().clone();
            record.set_trace_context(sc.trace_id(), sc.span_id(), None);
            logger.emit(record);
            sc.trace_id().to_string()
        });
        tracer_provider.shutdown().unwrap();
        logger_provider.shutdown().unwrap();
        trace_id
    })
    .await
    .unwrap();

    let (span, log_body) = collector
        .wait_for(WAIT, |t| {
            let span = t.span_named("smoke.http")?.clone();
            let log = t
                .logs_for_trace(&span.trace_id)
                .first()?
                .body_str()?
                .to_owned();
            Some((span, log))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(span.trace_id, trace_id);
    assert_eq!(span.attributes.bool("smoke.flag"), Some(true));
    assert_eq!(span.resource.str("service.name"), Some("smoke-http"));
    assert_eq!(span.kind, SpanKind::Internal);
    assert_eq!(log_body, "over http");
    collector.shutdown().await.unwrap();
}

#[tokio::test]
async fn wait_for_times_out_with_a_summary() {
    let collector = start_collector().await;
    let err = collector
        .wait_for(Duration::from_millis(300), |t| {
            t.span_named("never").cloned()
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("0 spans"), "{err}");
    assert!(
        err.contains(&collector.output_dir().display().to_string()),
        "{err}"
    );
    collector.shutdown().await.unwrap();
}
