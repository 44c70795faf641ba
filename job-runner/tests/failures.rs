//! Failing runs of the real `llmjob-runner` binary: configuration errors (exit 2, nothing sent
//! anywhere), permanent API errors (exit 3), retries with `Retry-After` and exhausted retries or
//! deadline (exit 4), each checked in the exit code, stderr, the result file, the requests the
//! `openai-replay` server received and the telemetry the collector received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use llmjob_crds::result::RunStatus;
use openai_replay::{Faults, ReplayConfig};
use testenv::telemetry::{Span, StatusCode};

const MODEL: &str = "gpt-4o-mini";

/// Asserts a span failed the contract's way: status ERROR, `error.type`, an `exception` event.
fn assert_failed(span: &Span, error_type: &str) {
    assert_eq!(span.status.code, StatusCode::Error, "{} status", span.name);
    assert!(
        !span.status.message.is_empty(),
        "{}: no description",
        span.name
    );
    assert_eq!(
        span.attributes.str("error.type"),
        Some(error_type),
        "{} error.type",
        span.name
    );
    let exception = span
        .event("exception")
        .unwrap_or_else(|| panic!("{} has no exception event", span.name));
    assert_eq!(
        exception.attributes.str("exception.type"),
        Some(error_type),
        "{}",
        span.name
    );
    assert!(
        exception
            .attributes
            .str("exception.message")
            .is_some_and(|m| !m.is_empty()),
        "{}",
        span.name
    );
}

/// Asserts a configuration error: exit 2, exactly one line on stderr containing every needle,
/// no stdout, no result file.
fn assert_config_error(run: &Run, needles: &[&str]) {
    run.assert_exit(2);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got {:?}", run.stderr);
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "stderr {:?} does not contain {needle:?}",
            lines[0]
        );
    }
    assert!(!run.stderr.contains(KEY), "the key leaked: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(
        run.result_text.is_none(),
        "a result was written on a config error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_api_key_exits_2_naming_it_and_sends_nothing() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let service = "it-missing-key";
    for key in [None, Some(""), Some("   ")] {
        let mut runner = Runner::new(service)
            .openai(&server)
            .otlp_grpc(&collector)
            .unset("OPENAI_API_KEY");
        if let Some(key) = key {
            runner = runner.env("OPENAI_API_KEY", key);
        }
        let run = runner.run().await;
        assert_config_error(&run, &["OPENAI_API_KEY"]);
        assert!(
            run.stderr
                .contains("Missing required env var: OPENAI_API_KEY"),
            "{}",
            run.stderr
        );
    }
    assert!(
        server.requests().is_empty(),
        "a request reached the server: {:?}",
        server.requests()
    );
    assert_nothing_received_from(&collector, &server, service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_exit_2_naming_the_variable_and_accepted_values() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let service = "it-invalid-values";
    let cases: &[(&str, &str, &str)] = &[
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "foo",
            "grpc or http/protobuf",
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "grpc or http/protobuf",
        ),
        ("LLMJOB_TEMPERATURE", "abc", "a number from 0 to 2"),
        ("LLMJOB_TEMPERATURE", "2.5", "a number from 0 to 2"),
        ("LLMJOB_TOP_P", "2", "a number from 0 to 1"),
        ("LLMJOB_MAX_TOKENS", "0", "a whole number >= 1"),
        ("LLMJOB_SEED", "x", "a whole number"),
        ("LLMJOB_STREAM", "maybe", "true or false"),
        ("LLMJOB_TIMEOUT", "soon", "a duration such as 90s"),
        ("LLMJOB_MAX_ATTEMPTS", "0", "from 1 to 20"),
        ("LLMJOB_CONTENT_CAPTURE", "everything", "none, hash or full"),
        ("OTEL_SDK_DISABLED", "nah", "true"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue", "key1=value1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x", "OTLP endpoint"),
        ("OPENAI_BASE_URL", "not a url", "base URL"),
        ("TRACEPARENT", "00-zz-11-01", "traceparent"),
        ("LLMJOB_MESSAGES", "{\"role\":\"user\"}", "JSON array"),
        ("RUST_LOG", "llmjob_runner=loud", "log filter"),
    ];
    for (name, value, accepted) in cases {
        let mut runner = Runner::new(service).openai(&server).otlp_grpc(&collector);
        if *name == "LLMJOB_MESSAGES" {
            runner = runner.unset("OPENAI_PROMPT");
        }
        let run = runner.env(name, *value).run().await;
        assert_config_error(&run, &[name, accepted]);
    }
    let run = Runner::new(service)
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_MESSAGES", r#"[{"role":"user","content":"hi"}]"#)
        .run()
        .await;
    assert_config_error(&run, &["OPENAI_PROMPT", "LLMJOB_MESSAGES"]);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_nothing_received_from(&collector, &server, service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_exits_3_with_an_authentication_error() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key("sk-replay-expects-another-key")).await;
    let run = Runner::new("it-wrong-key")
        .openai(&server)
        .otlp_grpc(&collector)
        .run()
        .await;
    run.assert_exit(3);
    assert_eq!(run.stdout, "", "no answer on a failure");
    assert_eq!(server.requests().len(), 1, "a 401 is not retried");
    assert_eq!(server.requests()[0].status, 401);

    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.attempts, Some(1));
    let error = result.error.clone().expect("an error in the result");
    assert_eq!(error.kind, "authentication");
    assert_eq!(error.http_status, Some(401));
    assert!(!error.message.is_empty());
    assert!(result.response_id.is_none() && result.usage.is_none());

    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, task, chats) = span_tree(&telemetry, &trace_id, MODEL);
    assert_eq!(chats.len(), 1);
    assert_failed(chats[0], "authentication");
    assert_eq!(
        chats[0].attributes.int("http.response.status_code"),
        Some(401)
    );
    assert_failed(task, "authentication");
    assert_failed(workflow, "authentication");
    assert_eq!(task.attributes.int("llmjob.attempts"), Some(1));

    let failed = logs_starting(&telemetry, &trace_id, "job failed");
    assert_eq!(failed.len(), 1, "one `job failed` record");
    assert_eq!(failed[0].severity_text, "ERROR");
    assert_eq!(
        failed[0].attributes.str("error.type"),
        Some("authentication")
    );
    assert_eq!(
        failed[0].attributes.int("http.response.status_code"),
        Some(401)
    );
    let duration = metric(&telemetry, "gen_ai.client.operation.duration");
    let points = duration.histogram_points().unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0].attributes.str("error.type"),
        Some("authentication")
    );
    assert!(
        telemetry.metric("gen_ai.client.token.usage").is_none(),
        "no token usage without a response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_exits_3_with_not_found() {
    const GONE: &str = "gpt-3.5-turbo-0613";
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let run = Runner::new("it-404")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OPENAI_MODEL", GONE)
        .run()
        .await;
    run.assert_exit(3);
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.attempts, Some(1));
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, "not_found");
    assert_eq!(error.http_status, Some(404));
    // The server's message names the model (it echoes the request): with the default capture
    // only the error's type and code are reported.
    assert_eq!(
        error.message,
        "HTTP 404 (type invalid_request_error, code model_not_found)"
    );

    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, _, chats) = span_tree(&telemetry, &trace_id, GONE);
    assert_failed(chats[0], "not_found");
    assert_eq!(chats[0].attributes.str("gen_ai.request.model"), Some(GONE));
    assert_failed(workflow, "not_found");

    let run = Runner::new("it-404-full")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("OPENAI_MODEL", GONE)
        .env("LLMJOB_CONTENT_CAPTURE", "full")
        .run()
        .await;
    run.assert_exit(3);
    let message = run.result().error.unwrap().message;
    assert!(
        message.contains(GONE),
        "full capture keeps the server's message: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_after_retry_after() {
    let collector = collector().await;
    let server = replay(
        ReplayConfig::new().with_faults(
            Faults::fail_first(2)
                .with_status(429)
                .with_retry_after(Duration::from_secs(1)),
        ),
    )
    .await;
    let run = Runner::new("it-retry-429")
        .openai(&server)
        .otlp_grpc(&collector)
        .run()
        .await;
    run.assert_exit(0);
    run.assert_summary_without_content(ANSWER);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    // Lower bound only: two waits of at least the server's Retry-After.
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);

    let result = run.result();
    assert_eq!(result.status, RunStatus::Succeeded);
    assert_eq!(result.attempts, Some(3));
    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, task, chats) = span_tree(&telemetry, &trace_id, MODEL);
    assert_eq!(chats.len(), 3, "one chat span per attempt");
    for (i, chat) in chats.iter().enumerate() {
        assert_eq!(
            chat.attributes.int("llmjob.attempt"),
            Some(i64::try_from(i + 1).unwrap())
        );
    }
    for chat in &chats[..2] {
        assert_failed(chat, "rate_limited");
        assert_eq!(chat.attributes.int("http.response.status_code"), Some(429));
    }
    assert_eq!(chats[2].status.code, StatusCode::Ok);
    assert_eq!(
        chats[2].attributes.str("gen_ai.response.id"),
        Some(RESPONSE_ID)
    );
    for pair in chats.windows(2) {
        let gap = Duration::from_nanos(
            pair[1]
                .start_unix_nano
                .saturating_sub(pair[0].end_unix_nano),
        );
        assert!(
            gap >= Duration::from_secs(1),
            "attempt {} started {gap:?} after the previous one ended; Retry-After is 1s",
            pair[1].attributes.int("llmjob.attempt").unwrap_or_default()
        );
    }
    assert_ne!(task.status.code, StatusCode::Error);
    assert_ne!(workflow.status.code, StatusCode::Error);
    assert_eq!(task.attributes.int("llmjob.attempts"), Some(3));
    let retries: Vec<_> = task
        .events
        .iter()
        .filter(|e| e.name == "llmjob.retry")
        .collect();
    assert_eq!(retries.len(), 2, "one llmjob.retry event per retry");
    for (i, event) in retries.iter().enumerate() {
        let a = &event.attributes;
        assert_eq!(a.int("llmjob.attempt"), Some(i64::try_from(i + 1).unwrap()));
        assert_eq!(a.str("error.type"), Some("rate_limited"));
        assert_eq!(a.int("http.response.status_code"), Some(429));
        assert!(
            a.int("llmjob.retry.delay_ms").is_some_and(|d| d >= 1000),
            "{a:?}"
        );
    }

    // One WARN record per failed attempt, inside the trace.
    let warnings: Vec<_> = telemetry
        .logs_for_trace(&trace_id)
        .into_iter()
        .filter(|l| l.severity_text == "WARN")
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for w in &warnings {
        assert_eq!(w.attributes.int("http.response.status_code"), Some(429));
        assert!(
            w.attributes
                .int("retry.delay_ms")
                .is_some_and(|d| d >= 1000)
        );
    }
    let finished = logs_starting(&telemetry, &trace_id, "job finished");
    assert_eq!(finished[0].attributes.int("llmjob.attempts"), Some(3));

    let points = metric(&telemetry, "gen_ai.client.operation.duration")
        .histogram_points()
        .unwrap();
    let count = |error: Option<&str>| {
        points
            .iter()
            .filter(|p| p.attributes.str("error.type") == error)
            .map(|p| p.count)
            .sum::<u64>()
    };
    assert_eq!(count(Some("rate_limited")), 2);
    assert_eq!(count(None), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_exhaust_the_attempts_and_exit_4() {
    let collector = collector().await;
    let server =
        replay(ReplayConfig::new().with_faults(Faults::fail_first(10).with_status(500))).await;
    let run = Runner::new("it-exhausted")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_MAX_ATTEMPTS", "3")
        .run()
        .await;
    run.assert_exit(4);
    assert_eq!(run.stdout, "");
    assert_eq!(server.requests().len(), 3, "LLMJOB_MAX_ATTEMPTS=3");
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.attempts, Some(3));
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, "server_error");
    assert_eq!(error.http_status, Some(500));

    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, task, chats) = span_tree(&telemetry, &trace_id, MODEL);
    assert_eq!(chats.len(), 3);
    for chat in &chats {
        assert_failed(chat, "server_error");
    }
    assert_failed(task, "server_error");
    assert_failed(workflow, "server_error");
    assert_eq!(task.attributes.int("llmjob.attempts"), Some(3));
    assert_eq!(
        task.events
            .iter()
            .filter(|e| e.name == "llmjob.retry")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_deadline_gives_up_with_exit_4() {
    let server = replay(
        ReplayConfig::new().with_faults(
            Faults::fail_first(5)
                .with_status(429)
                .with_retry_after(Duration::from_secs(600)),
        ),
    )
    .await;
    let run = Runner::new("it-deadline")
        .openai(&server)
        .env("OTEL_SDK_DISABLED", "true")
        .env("LLMJOB_TIMEOUT", "5s")
        .run()
        .await;
    run.assert_exit(4);
    assert_eq!(server.requests().len(), 1);
    let error = run.result().error.unwrap();
    assert_eq!(error.kind, "rate_limited");
    assert!(
        error.message.contains("LLMJOB_TIMEOUT"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_the_deadline_exits_4_with_a_timeout() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_delay(Duration::from_secs(5))).await;
    let run = Runner::new("it-slow-server")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_TIMEOUT", "1s")
        .run()
        .await;
    run.assert_exit(4);
    assert_eq!(run.stdout, "");
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.attempts, Some(1));
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, "timeout");
    assert_eq!(error.http_status, None);
    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    let (workflow, _, chats) = span_tree(&telemetry, &trace_id, MODEL);
    assert_eq!(chats.len(), 1);
    assert_failed(chats[0], "timeout");
    assert_failed(workflow, "timeout");
}

/// A root file system without a CA store (here: `SSL_CERT_FILE` and `SSL_CERT_DIR`, which the
/// TLS verifier honours, pointing at paths that do not exist): the HTTP client cannot be built.
/// That is a configuration error (exit 2) that says what is missing, with nothing sent, not a
/// `connection_error` (it was "connection failed: builder error", exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ca_store_is_a_configuration_error_that_names_it() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("no-such-bundle.crt");
    let run = Runner::new("it-no-ca-store")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("SSL_CERT_FILE", missing.to_string_lossy())
        .env(
            "SSL_CERT_DIR",
            empty.path().join("no-such-dir").to_string_lossy(),
        )
        .run()
        .await;
    run.assert_exit(2);
    assert_eq!(run.stdout, "");
    assert!(server.requests().is_empty(), "nothing may be sent");
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.attempts, Some(0));
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, "configuration_error");
    assert!(
        error
            .message
            .starts_with("cannot build the HTTP client: no CA certificates found"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains(
            "the image must carry /etc/ssl/certs/ca-certificates.crt or set SSL_CERT_FILE"
        ),
        "{}",
        error.message
    );
    let trace_id = result.trace_id.unwrap();
    // No attempt, so no duration metric: wait for the workflow span and the closing log record.
    let telemetry = collector
        .wait_for(Duration::from_secs(20), |t| {
            let failed_log = t
                .logs_for_trace(&trace_id)
                .iter()
                .any(|l| l.body_str().is_some_and(|b| b.starts_with("job failed")));
            let root = t
                .trace(&trace_id)
                .iter()
                .any(|s| s.name == "llm_job.workflow");
            (failed_log && root).then(|| t.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let workflow = telemetry
        .trace(&trace_id)
        .into_iter()
        .find(|s| s.name == "llm_job.workflow")
        .expect("the workflow span");
    assert_failed(workflow, "configuration_error");
}
