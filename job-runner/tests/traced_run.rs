//! A successful run of the real `llmjob-runner` binary against `openai-replay` and a real
//! OpenTelemetry Collector: the answer, the result file and every span, attribute, metric and
//! log record that `docs/job-runner.md` promises, over OTLP/gRPC and OTLP/HTTP, joined
//! to a `TRACEPARENT`, streamed, with the SDK disabled and with the collector down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use llmjob_crds::result::RunStatus;
use openai_replay::ReplayConfig;
use testenv::telemetry::{Attributes, Span, StatusCode, Telemetry, Temporality};

const MODEL: &str = "gpt-4o-mini";

/// The resource every signal must carry.
fn assert_resource(resource: &Attributes, service: &str, what: &str) {
    assert_eq!(resource.str("service.name"), Some(service), "{what}");
    assert_eq!(
        resource.str("service.version"),
        Some(env!("CARGO_PKG_VERSION")),
        "{what}"
    );
    assert_eq!(
        resource.str("deployment.environment.name"),
        Some("it-env"),
        "{what}"
    );
    assert_eq!(
        resource.str("deployment.environment"),
        Some("it-env"),
        "{what}"
    );
    assert!(
        resource
            .str("service.instance.id")
            .is_some_and(|id| !id.is_empty()),
        "{what}: service.instance.id"
    );
    assert_eq!(
        resource.str("telemetry.sdk.name"),
        Some("opentelemetry"),
        "{what}"
    );
    assert_eq!(
        resource.str("telemetry.sdk.language"),
        Some("rust"),
        "{what}"
    );
    assert!(
        resource
            .str("telemetry.sdk.version")
            .is_some_and(|v| !v.is_empty()),
        "{what}: telemetry.sdk.version"
    );
    assert_eq!(resource.str("k8s.pod.name"), Some("x"), "{what}");
    assert_eq!(resource.str("team"), Some("a,b"), "{what}: percent-decoded");
}

fn assert_ok(span: &Span) {
    assert_ne!(
        span.status.code,
        StatusCode::Error,
        "{} failed: {}",
        span.name,
        span.status.message
    );
}

/// The whole span tree of a successful non-streaming run; returns (workflow, task, chat).
fn assert_success_tree<'a>(
    telemetry: &'a Telemetry,
    trace_id: &str,
    port: u16,
) -> (&'a Span, &'a Span, &'a Span) {
    let (workflow, task, chats) = span_tree(telemetry, trace_id, MODEL);
    assert_eq!(chats.len(), 1, "one attempt, one chat span");
    let chat = chats[0];
    for span in [workflow, task, chat] {
        assert_ok(span);
        assert_eq!(
            span.attributes.str("traceloop.workflow.name"),
            Some("llm_job"),
            "{}",
            span.name
        );
    }
    assert_eq!(
        workflow.attributes.str("traceloop.span.kind"),
        Some("workflow")
    );
    assert_eq!(
        workflow.attributes.str("traceloop.entity.name"),
        Some("llm_job")
    );
    assert_eq!(task.attributes.str("traceloop.span.kind"), Some("task"));
    assert_eq!(
        task.attributes.str("traceloop.entity.name"),
        Some("openai_call")
    );
    assert_eq!(task.attributes.int("llmjob.attempts"), Some(1));

    let a = &chat.attributes;
    assert_eq!(a.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(a.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(a.str("gen_ai.system"), Some("openai"));
    assert_eq!(a.str("llm.request.type"), Some("chat"));
    assert_eq!(a.str("traceloop.entity.path"), Some("openai_call"));
    assert_eq!(a.str("gen_ai.request.model"), Some(MODEL));
    assert_eq!(a.str("server.address"), Some("127.0.0.1"));
    assert_eq!(a.int("server.port"), Some(i64::from(port)));
    assert_eq!(
        a.str("gen_ai.openai.api_base"),
        Some(format!("http://127.0.0.1:{port}/v1").as_str())
    );
    assert_eq!(a.str("gen_ai.response.id"), Some(RESPONSE_ID));
    assert_eq!(a.str("gen_ai.response.model"), Some(RESPONSE_MODEL));
    assert_eq!(
        a.str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop"])
    );
    assert_eq!(a.str("openai.response.service_tier"), Some("default"));
    assert_eq!(
        a.str("openai.response.system_fingerprint"),
        Some("fp_560af6e559")
    );
    assert_eq!(a.int("gen_ai.usage.input_tokens"), Some(23));
    assert_eq!(a.int("gen_ai.usage.output_tokens"), Some(8));
    assert_eq!(a.int("llm.usage.total_tokens"), Some(31));
    // The recording reports cached and reasoning tokens (both 0).
    assert_eq!(a.int("gen_ai.usage.cache_read.input_tokens"), Some(0));
    assert_eq!(a.int("gen_ai.usage.reasoning.output_tokens"), Some(0));
    assert_eq!(a.bool("gen_ai.request.stream"), Some(false));
    assert_eq!(a.bool("llm.is_streaming"), Some(false));
    (workflow, task, chat)
}

/// Metric attributes common to every GenAI metric of a successful call.
fn assert_metric_attributes(attrs: &Attributes, port: u16) {
    assert_eq!(attrs.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(attrs.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(attrs.str("gen_ai.request.model"), Some(MODEL));
    assert_eq!(attrs.str("gen_ai.response.model"), Some(RESPONSE_MODEL));
    assert_eq!(attrs.str("server.address"), Some("127.0.0.1"));
    assert_eq!(attrs.int("server.port"), Some(i64::from(port)));
    assert!(!attrs.contains_key("error.type"));
}

fn assert_histogram(telemetry: &Telemetry, name: &str, unit: &str, bounds: &[f64]) {
    let m = metric(telemetry, name);
    assert_eq!(m.unit, unit, "{name} unit");
    assert!(
        matches!(
            m.data,
            testenv::telemetry::MetricData::Histogram {
                temporality: Temporality::Cumulative,
                ..
            }
        ),
        "{name} is not a cumulative histogram: {:?}",
        m.data
    );
    for point in m.histogram_points().unwrap() {
        assert_eq!(point.explicit_bounds, bounds, "{name} buckets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_exports_the_contract_span_tree_metrics_logs_and_result() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let port = server.addr().port();
    let service = "it-success";
    let run = Runner::new(service)
        .openai(&server)
        .otlp_grpc(&collector)
        .env("DEPLOYMENT_ENVIRONMENT", "it-env")
        .env("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=x,team=a%2Cb")
        .env("OPENAI_MODEL", MODEL)
        .env("LLMJOB_TEMPERATURE", "0.5")
        .env("LLMJOB_TOP_P", "0.25")
        .env("LLMJOB_MAX_TOKENS", "64")
        .env("LLMJOB_SEED", "42")
        .run()
        .await;

    run.assert_exit(0);
    run.assert_summary_without_content(ANSWER);

    // The result file.
    let result = run.result();
    assert_eq!(result.status, RunStatus::Succeeded);
    let trace_id = result.trace_id.clone().expect("traceId");
    assert_eq!(trace_id.len(), 32);
    assert_eq!(result.response_id.as_deref(), Some(RESPONSE_ID));
    assert_eq!(result.model.as_deref(), Some(RESPONSE_MODEL));
    assert_eq!(result.finish_reason.as_deref(), Some("stop"));
    let usage = result.usage.clone().expect("usage");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (Some(23), Some(8), Some(31))
    );
    assert_eq!(result.attempts, Some(1));
    assert!(result.duration_ms.is_some());
    assert!(result.error.is_none());
    assert!(result.input_sha256.is_none() && result.output_sha256.is_none());
    let text = run.result_text.as_deref().unwrap();
    assert!(
        !text.contains(ANSWER) && !text.contains(PROMPT),
        "content in {text}"
    );

    // The request the server received: parameters and the chat span's traceparent.
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].body.clone().expect("a JSON body");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["messages"][0]["content"], PROMPT);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["top_p"], 0.25);
    assert_eq!(body["max_completion_tokens"], 64);
    assert_eq!(body["seed"], 42);

    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, task, chat) = assert_success_tree(&telemetry, &trace_id, port);
    assert_eq!(
        workflow.parent_span_id, None,
        "the workflow span is the root"
    );
    assert_eq!(result.span_id.as_deref(), Some(workflow.span_id.as_str()));
    assert_eq!(
        requests[0].header("traceparent"),
        Some(format!("00-{trace_id}-{}-01", chat.span_id).as_str()),
        "the request carries the chat span's trace context"
    );
    let a = &chat.attributes;
    assert_eq!(a.double("gen_ai.request.temperature"), Some(0.5));
    assert_eq!(a.double("gen_ai.request.top_p"), Some(0.25));
    assert_eq!(a.int("gen_ai.request.max_tokens"), Some(64));
    assert_eq!(a.int("gen_ai.request.seed"), Some(42));
    assert!(
        telemetry.spans.iter().all(|s| s.trace_id == trace_id),
        "one trace per run"
    );
    for span in [workflow, task, chat] {
        assert_resource(&span.resource, service, &span.name);
        assert!(
            !span
                .attributes
                .keys()
                .any(|k| k.starts_with("gen_ai.input") || k.starts_with("traceloop.entity.input")),
            "content captured by default on {}",
            span.name
        );
    }

    // Metrics.
    assert_histogram(
        &telemetry,
        "gen_ai.client.token.usage",
        "{token}",
        &TOKEN_BUCKETS,
    );
    let tokens = metric(&telemetry, "gen_ai.client.token.usage");
    assert_resource(&tokens.resource, service, "token usage metric");
    let points = tokens.histogram_points().unwrap();
    assert_eq!(points.len(), 2, "one point per token type");
    for (kind, count) in [("input", 23.0), ("output", 8.0)] {
        let point = points
            .iter()
            .find(|p| p.attributes.str("gen_ai.token.type") == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} token point"));
        assert_metric_attributes(&point.attributes, port);
        assert_eq!(point.count, 1);
        assert_eq!(point.sum, Some(count));
    }
    assert_histogram(
        &telemetry,
        "gen_ai.client.operation.duration",
        "s",
        &DURATION_BUCKETS,
    );
    let duration = metric(&telemetry, "gen_ai.client.operation.duration");
    let points = duration.histogram_points().unwrap();
    assert_eq!(points.len(), 1);
    assert_metric_attributes(&points[0].attributes, port);
    assert!(!points[0].attributes.contains_key("gen_ai.token.type"));
    assert_eq!(points[0].count, 1);
    assert!(
        telemetry
            .metric("gen_ai.client.operation.time_to_first_chunk")
            .is_none(),
        "time to first chunk is for streaming only"
    );
    let choices = metric(&telemetry, "gen_ai.client.generation.choices");
    assert_eq!(choices.unit, "{choice}");
    let points = choices.number_points().expect("a sum");
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0].attributes.str("gen_ai.response.finish_reason"),
        Some("stop")
    );
    assert_eq!(points[0].value.as_f64(), 1.0);
    assert_metric_attributes(&points[0].attributes, port);

    // Logs: correlated with the workflow span, structured, with the same resource.
    let started = logs_starting(&telemetry, &trace_id, "job started");
    assert_eq!(started.len(), 1, "one `job started` record");
    let started = started[0];
    assert_eq!(started.span_id.as_deref(), Some(workflow.span_id.as_str()));
    assert_eq!(started.severity_text, "INFO");
    assert_eq!(started.attributes.str("gen_ai.request.model"), Some(MODEL));
    assert_eq!(
        started.attributes.int("prompt_chars"),
        Some(i64::try_from(PROMPT.chars().count()).unwrap())
    );
    assert_resource(&started.resource, service, "job started log");
    let finished = logs_starting(&telemetry, &trace_id, "job finished");
    assert_eq!(finished.len(), 1, "one `job finished` record");
    let finished = finished[0];
    assert_eq!(finished.span_id.as_deref(), Some(workflow.span_id.as_str()));
    let f = &finished.attributes;
    assert_eq!(f.str("gen_ai.response.id"), Some(RESPONSE_ID));
    assert_eq!(f.str("gen_ai.response.model"), Some(RESPONSE_MODEL));
    assert_eq!(f.str("gen_ai.response.finish_reasons"), Some("stop"));
    assert_eq!(f.int("gen_ai.usage.input_tokens"), Some(23));
    assert_eq!(f.int("gen_ai.usage.output_tokens"), Some(8));
    assert_eq!(f.int("llmjob.attempts"), Some(1));
    assert!(f.int("duration_ms").is_some());
    // The same events in human-readable form on stderr, and no export problem.
    assert!(run.stderr.contains("job started"), "{}", run.stderr);
    assert!(run.stderr.contains("job finished"), "{}", run.stderr);
    assert!(!run.stderr.contains("export failed"), "{}", run.stderr);
    // Same instance id on every signal of the run.
    let instance = workflow.resource.str("service.instance.id");
    assert_eq!(tokens.resource.str("service.instance.id"), instance);
    assert_eq!(finished.resource.str("service.instance.id"), instance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_records_time_to_first_chunk_and_usage() {
    let collector = collector().await;
    let server =
        replay(ReplayConfig::new().with_chunk_delay(std::time::Duration::from_millis(5))).await;
    let run = Runner::new("it-stream")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_STREAM", "true")
        .run()
        .await;
    run.assert_exit(0);
    run.assert_summary_without_content(STREAM_ANSWER);
    let result = run.result();
    assert_eq!(result.response_id.as_deref(), Some(STREAM_RESPONSE_ID));
    let usage = result
        .usage
        .clone()
        .expect("usage from the include_usage chunk");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (Some(23), Some(8), Some(31))
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].body.clone().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(
        requests[0].fixture.as_deref(),
        Some("chat_stream_include_usage")
    );

    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (_, _, chats) = span_tree(&telemetry, &trace_id, MODEL);
    let a = &chats[0].attributes;
    assert_eq!(a.bool("gen_ai.request.stream"), Some(true));
    assert_eq!(a.bool("llm.is_streaming"), Some(true));
    assert_eq!(a.str("gen_ai.response.id"), Some(STREAM_RESPONSE_ID));
    assert_eq!(
        a.str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop"])
    );
    assert_eq!(a.int("gen_ai.usage.input_tokens"), Some(23));
    assert_eq!(a.int("gen_ai.usage.output_tokens"), Some(8));
    let ttfc = a
        .double("gen_ai.response.time_to_first_chunk")
        .expect("gen_ai.response.time_to_first_chunk on the chat span");
    assert!(ttfc > 0.0, "{ttfc}");

    assert_histogram(
        &telemetry,
        "gen_ai.client.operation.time_to_first_chunk",
        "s",
        &DURATION_BUCKETS,
    );
    let points = metric(&telemetry, "gen_ai.client.operation.time_to_first_chunk")
        .histogram_points()
        .unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count, 1);
    let tokens = metric(&telemetry, "gen_ai.client.token.usage");
    let sums: Vec<(Option<&str>, Option<f64>)> = tokens
        .histogram_points()
        .unwrap()
        .iter()
        .map(|p| (p.attributes.str("gen_ai.token.type"), p.sum))
        .collect();
    assert!(sums.contains(&(Some("input"), Some(23.0))), "{sums:?}");
    assert!(sums.contains(&(Some("output"), Some(8.0))), "{sums:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_makes_the_workflow_a_child_of_the_callers_span() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-traceparent")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("TRACEPARENT", format!("00-{TRACE}-{PARENT}-01"))
        .run()
        .await;
    run.assert_exit(0);
    assert_eq!(run.trace_id(), TRACE);
    let telemetry = wait_for_run(&collector, TRACE).await;
    let (workflow, _, chats) = span_tree(&telemetry, TRACE, MODEL);
    assert_eq!(workflow.parent_span_id.as_deref(), Some(PARENT));
    assert_eq!(
        run.result().span_id.as_deref(),
        Some(workflow.span_id.as_str())
    );
    let traceparent = server.requests()[0]
        .header("traceparent")
        .map(str::to_owned);
    assert_eq!(
        traceparent,
        Some(format!("00-{TRACE}-{}-01", chats[0].span_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_protobuf_delivers_the_same_telemetry() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let port = server.addr().port();
    let run = Runner::new("it-http")
        .openai(&server)
        .otlp_http(&collector)
        .env("DEPLOYMENT_ENVIRONMENT", "it-env")
        .env("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=x,team=a%2Cb")
        .run()
        .await;
    run.assert_exit(0);
    assert!(!run.stderr.contains("export failed"), "{}", run.stderr);
    let trace_id = run.trace_id();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, _, _) = assert_success_tree(&telemetry, &trace_id, port);
    assert_resource(&workflow.resource, "it-http", "workflow over HTTP");
    assert_eq!(
        metric(&telemetry, "gen_ai.client.token.usage")
            .histogram_points()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(logs_starting(&telemetry, &trace_id, "job started").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_disabled_runs_exports_nothing_and_keeps_a_trace_id() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let service = "it-sdk-disabled";
    let run = Runner::new(service)
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OTEL_SDK_DISABLED", "true")
        .run()
        .await;
    run.assert_exit(0);
    run.assert_summary_without_content(ANSWER);
    let result = run.result();
    assert_eq!(result.status, RunStatus::Succeeded);
    let trace_id = result.trace_id.expect("a trace id even without export");
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "0".repeat(32));
    assert_eq!(server.requests().len(), 1);
    assert!(!run.stderr.contains("export failed"), "{}", run.stderr);
    assert_nothing_received_from(&collector, &server, service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_changes_neither_the_exit_code_nor_the_answer() {
    for protocol in ["grpc", "http/protobuf"] {
        let server = replay(ReplayConfig::new()).await;
        let port = testenv::process::free_loopback_port().expect("a free port");
        let run = Runner::new("it-collector-down")
            .openai(&server)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .run()
            .await;
        // RUN_TIMEOUT bounds the run only so that a hang fails; no timing is asserted.
        run.assert_exit(0);
        run.assert_summary_without_content(ANSWER);
        assert_eq!(run.result().status, RunStatus::Succeeded, "{protocol}");
        assert_eq!(server.requests().len(), 1, "{protocol}");
        assert!(
            run.stderr.contains("telemetry export failed"),
            "{protocol}: the export failure is not reported on stderr:\n{}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_changes_neither_the_exit_code_nor_the_answer() {
    // Accepts connections and holds them open without ever answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let blackhole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    for protocol in ["grpc", "http/protobuf"] {
        let server = replay(ReplayConfig::new()).await;
        let run = Runner::new("it-collector-stuck")
            .openai(&server)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .run()
            .await;
        // Finishing at all (within RUN_TIMEOUT) is the check; no timing is asserted.
        run.assert_exit(0);
        run.assert_summary_without_content(ANSWER);
        assert_eq!(run.result().status, RunStatus::Succeeded, "{protocol}");
        assert!(
            run.stderr.contains("telemetry export failed"),
            "{protocol}: the export failure is not reported on stderr:\n{}",
            run.stderr
        );
    }
    blackhole.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_a_scheme_is_accepted() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let endpoint = collector.grpc_endpoint();
    let run = Runner::new("it-no-scheme")
        .openai(&server)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            endpoint.trim_start_matches("http://"),
        )
        .run()
        .await;
    run.assert_exit(0);
    let trace_id = run.trace_id();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    span_tree(&telemetry, &trace_id, MODEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_array_is_sent_as_given() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let messages = r#"[{"role":"developer","content":"Be brief."},{"role":"user","content":"What is 2 + 2?"}]"#;
    let run = Runner::new("it-messages")
        .openai(&server)
        .otlp_grpc(&collector)
        .unset("OPENAI_PROMPT")
        .env("LLMJOB_MESSAGES", messages)
        .run()
        .await;
    run.assert_exit(0);
    run.assert_summary_without_content(ANSWER);
    let body = server.requests()[0].body.clone().unwrap();
    let sent: serde_json::Value = serde_json::from_str(messages).unwrap();
    assert_eq!(body["messages"], sent);
    let trace_id = run.trace_id();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let started = logs_starting(&telemetry, &trace_id, "job started");
    assert_eq!(started[0].attributes.int("messages"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_result_path_is_reported_and_changes_nothing() {
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-result-path")
        .openai(&server)
        .env("OTEL_SDK_DISABLED", "true")
        .env("LLMJOB_RESULT_PATH", "/nonexistent-dir/termination-log")
        .run()
        .await;
    run.assert_exit(0);
    run.assert_summary_without_content(ANSWER);
    assert!(
        run.stderr.contains("LLMJOB_RESULT_PATH") && run.stderr.contains("/nonexistent-dir"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_traceparent_is_honoured() {
    const TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
    const PARENT: &str = "10f067aa0ba902b8";
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-unsampled")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("TRACEPARENT", format!("00-{TRACE}-{PARENT}-00"))
        .run()
        .await;
    run.assert_exit(0);
    assert_eq!(run.trace_id(), TRACE);
    let traceparent = server.requests()[0]
        .header("traceparent")
        .map(str::to_owned);
    assert!(
        traceparent
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("00-{TRACE}-")) && t.ends_with("-00")),
        "{traceparent:?}"
    );
    // Logs and metrics still arrive; the spans follow the caller's sampling decision.
    let telemetry = collector
        .wait_for(TELEMETRY_WAIT, |t| {
            let done = !logs_starting(t, TRACE, "job finished").is_empty()
                && t.metric("gen_ai.client.operation.duration").is_some();
            done.then(|| t.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        telemetry.spans.is_empty(),
        "spans of an unsampled trace were exported: {}",
        telemetry.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recognised_provider_url_names_the_provider() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    // "vertex" in the URL is how OpenLLMetry recognises Google Vertex AI; the replay server
    // answers the unknown path with its 404, which is enough to see the request's attributes.
    let base = server.base_url().replace("/v1", "/vertex/v1");
    let run = Runner::new("it-provider")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OPENAI_BASE_URL", base)
        .run()
        .await;
    run.assert_exit(3);
    let trace_id = run.trace_id();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (_, _, chats) = span_tree(&telemetry, &trace_id, MODEL);
    assert_eq!(
        chats[0].attributes.str("gen_ai.provider.name"),
        Some("gcp.vertex_ai")
    );
    assert_eq!(
        chats[0].attributes.str("gen_ai.system"),
        Some("gcp.vertex_ai")
    );
    let duration = metric(&telemetry, "gen_ai.client.operation.duration");
    let points = duration.histogram_points().unwrap();
    assert_eq!(
        points[0].attributes.str("gen_ai.provider.name"),
        Some("gcp.vertex_ai")
    );
}
