//! The real `llmjob-runner` binary against hostile and odd servers (`openai_replay::Hostile`):
//! absurd headers, bodies that are not JSON or stop halfway, oversized fields and bodies, enum
//! values the schema does not list, empty choices and refusals, errors inside a stream, dropped
//! and dripping streams, and error messages that echo the request. Each test checks the exit
//! code, the result file and that neither the API key nor (outside `full` capture) the prompt
//! reached stdout, stderr, the result or the collector. Also the configuration errors a server
//! cannot cause (a key no header can carry, a blank or non-UTF-8 prompt), the base URL's
//! credentials, and the bounded flush against a collector that never answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use llmjob_crds::result::{RunResult, RunStatus};
use openai_replay::{HOSTILE_ANSWER, Hostile, REFUSAL, ReplayConfig, ReplayServer};
use testenv::collector::Collector;
use testenv::telemetry::{StatusCode, Telemetry};

const MODEL: &str = "gpt-4o-mini";

/// One run against a server misbehaving as `hostile`, with the default capture unless `vars`
/// set one; waits for its telemetry.
async fn run_against(
    hostile: Hostile,
    service: &str,
    vars: &[(&str, &str)],
) -> (Run, Collector, ReplayServer, Telemetry) {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_hostile(hostile)).await;
    let (run, telemetry) = run_with(&collector, &server, service, vars).await;
    (run, collector, server, telemetry)
}

async fn run_with(
    collector: &Collector,
    server: &ReplayServer,
    service: &str,
    vars: &[(&str, &str)],
) -> (Run, Telemetry) {
    let mut runner = Runner::new(service).openai(server).otlp_grpc(collector);
    for (name, value) in vars {
        runner = runner.env(name, *value);
    }
    let run = runner.run().await;
    assert_ne!(run.code, Some(101), "the runner panicked:\n{}", run.stderr);
    let telemetry = wait_for_run(collector, &run.trace_id()).await;
    (run, telemetry)
}

/// The failed result's error, checking the status and the exit code.
fn failed(run: &Run, exit: i32, error_type: &str) -> RunResult {
    run.assert_exit(exit);
    assert_eq!(run.stdout, "", "no answer on a failure");
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    let error = result.error.clone().expect("an error in the result");
    assert_eq!(error.kind, error_type, "{error:?}");
    result
}

/// The trace's workflow span failed with `error_type`.
fn assert_workflow_failed(telemetry: &Telemetry, run: &Run, error_type: &str) {
    let (workflow, _, _) = span_tree(telemetry, &run.trace_id(), MODEL);
    assert_eq!(workflow.status.code, StatusCode::Error);
    assert_eq!(workflow.attributes.str("error.type"), Some(error_type));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_retry_after_values_neither_panic_nor_wait() {
    let collector = collector().await;
    // Waits too long for any deadline: give up after the first attempt.
    for value in [
        "1e308",
        "99999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let server =
            replay(ReplayConfig::new().with_hostile(Hostile::RetryAfter(value.into()))).await;
        let (run, _) = run_with(
            &collector,
            &server,
            "it-retry-after-huge",
            &[("LLMJOB_TIMEOUT", "10s"), ("LLMJOB_MAX_ATTEMPTS", "3")],
        )
        .await;
        let result = failed(&run, 4, "rate_limited");
        assert_eq!(result.attempts, Some(1), "{value}");
        assert!(
            result.error.unwrap().message.contains("LLMJOB_TIMEOUT"),
            "{value}: the message names the deadline"
        );
    }
    // Not a wait at all: ignored, the runner's own backoff applies.
    for value in ["-5", "NaN", "inf", "soon"] {
        let server =
            replay(ReplayConfig::new().with_hostile(Hostile::RetryAfter(value.into()))).await;
        let (run, _) = run_with(
            &collector,
            &server,
            "it-retry-after-junk",
            &[("LLMJOB_MAX_ATTEMPTS", "2")],
        )
        .await;
        let result = failed(&run, 4, "rate_limited");
        assert_eq!(result.attempts, Some(2), "{value}");
        assert_eq!(server.requests().len(), 2, "{value}");
        assert_no_leaks(&run, &collector, &[KEY, PROMPT], value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_exits_3_with_invalid_response() {
    let (run, collector, server, telemetry) =
        run_against(Hostile::NonJson, "it-non-json", &[]).await;
    let result = failed(&run, 3, "invalid_response");
    assert!(
        result.error.unwrap().message.contains("not JSON"),
        "{:?}",
        run.result_text
    );
    assert_eq!(server.requests().len(), 1, "not retried");
    assert_workflow_failed(&telemetry, &run, "invalid_response");
    assert_no_leaks(&run, &collector, &[KEY, PROMPT, "nginx"], "non-json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_is_a_connection_error_and_retried() {
    let (run, collector, server, telemetry) = run_against(
        Hostile::TruncatedBody,
        "it-truncated",
        &[("LLMJOB_MAX_ATTEMPTS", "2")],
    )
    .await;
    let result = failed(&run, 4, "connection_error");
    assert_eq!(result.attempts, Some(2));
    assert_eq!(server.requests().len(), 2);
    assert_workflow_failed(&telemetry, &run, "connection_error");
    assert_no_leaks(
        &run,
        &collector,
        &[KEY, PROMPT, HOSTILE_ANSWER],
        "truncated",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_fails_with_a_clear_error() {
    let (run, collector, _server, telemetry) = run_against(
        Hostile::OversizedBody(17 * 1024 * 1024),
        "it-oversized-body",
        &[],
    )
    .await;
    let result = failed(&run, 3, "invalid_response");
    let message = result.error.unwrap().message;
    assert!(message.contains("larger than 16 MiB"), "{message}");
    assert_workflow_failed(&telemetry, &run, "invalid_response");
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "oversized body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fields_are_cut_and_the_result_still_fits() {
    let (run, collector, _server, telemetry) = run_against(
        Hostile::OversizedFields(100_000),
        "it-oversized-fields",
        &[],
    )
    .await;
    run.assert_exit(0);
    run.assert_summary_without_content(HOSTILE_ANSWER);
    // `run.result()` checks one line of at most 4096 bytes.
    let result = run.result();
    assert_eq!(result.status, RunStatus::Succeeded);
    let (_, _, chats) = span_tree(&telemetry, &run.trace_id(), MODEL);
    let model = chats[0].attributes.str("gen_ai.response.model").unwrap();
    assert_eq!(model, "m".repeat(256), "cut to 256 bytes");
    assert_no_leaks(
        &run,
        &collector,
        &[KEY, PROMPT, &"m".repeat(257)],
        "oversized fields",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_enum_values_and_missing_fields_are_accepted() {
    let (run, collector, _server, telemetry) =
        run_against(Hostile::UnknownEnums, "it-unknown-enums", &[]).await;
    run.assert_exit(0);
    run.assert_summary_without_content(HOSTILE_ANSWER);
    let result = run.result();
    assert_eq!(result.finish_reason.as_deref(), Some("eos_token"));
    let usage = result.usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (Some(12), Some(5), Some(17)),
        "the total is the sum when the server leaves it out"
    );
    let (_, _, chats) = span_tree(&telemetry, &run.trace_id(), MODEL);
    let attrs = &chats[0].attributes;
    assert_eq!(attrs.str("openai.response.service_tier"), Some("flex-2"));
    assert_eq!(
        attrs.str_array("gen_ai.response.finish_reasons"),
        Some(vec!["eos_token"])
    );
    assert!(attrs.str("openai.response.system_fingerprint").is_none());
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "unknown enums");
    assert!(
        collector_files_containing(&collector, HOSTILE_ANSWER).is_empty(),
        "the answer reached the collector without capture"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_choices_is_a_failure_not_an_empty_answer() {
    let (run, collector, server, telemetry) =
        run_against(Hostile::EmptyChoices, "it-empty-choices", &[]).await;
    let result = failed(&run, 3, "invalid_response");
    assert!(result.error.unwrap().message.contains("no choices"));
    assert_workflow_failed(&telemetry, &run, "invalid_response");
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "empty choices");

    let (run, _) = run_with(
        &collector,
        &replay(ReplayConfig::new().with_hostile(Hostile::DoneOnly)).await,
        "it-done-only",
        &[("LLMJOB_STREAM", "true")],
    )
    .await;
    let result = failed(&run, 3, "invalid_response");
    assert!(result.error.unwrap().message.contains("no choices"));
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "done only");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_fails_with_exit_3_and_its_text_only_in_full_capture() {
    let (run, collector, server, telemetry) =
        run_against(Hostile::Refusal, "it-refusal", &[]).await;
    let result = failed(&run, 3, "refusal");
    assert_eq!(result.error.unwrap().message, "the model refused to answer");
    assert_eq!(server.requests().len(), 1, "a refusal is not retried");
    let (workflow, _, chats) = span_tree(&telemetry, &run.trace_id(), MODEL);
    assert_eq!(chats[0].status.code, StatusCode::Error);
    assert_eq!(chats[0].attributes.str("error.type"), Some("refusal"));
    assert_eq!(
        chats[0].attributes.int("gen_ai.usage.output_tokens"),
        Some(5),
        "the response is still recorded"
    );
    assert_eq!(workflow.attributes.str("error.type"), Some("refusal"));
    assert_no_leaks(&run, &collector, &[KEY, PROMPT, REFUSAL], "refusal");

    let (run, _) = run_with(
        &collector,
        &server,
        "it-refusal-full",
        &[("LLMJOB_CONTENT_CAPTURE", "full")],
    )
    .await;
    let result = failed(&run, 3, "refusal");
    assert!(result.error.unwrap().message.contains(REFUSAL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_inside_a_stream_is_retried_and_its_echo_leaks_nowhere() {
    let (run, collector, server, telemetry) = run_against(
        Hostile::StreamError,
        "it-stream-error",
        &[("LLMJOB_STREAM", "true"), ("LLMJOB_MAX_ATTEMPTS", "2")],
    )
    .await;
    let result = failed(&run, 4, "server_error");
    assert_eq!(result.attempts, Some(2));
    assert_eq!(server.requests().len(), 2);
    let message = result.error.unwrap().message;
    assert!(message.contains("code stream_failed"), "{message}");
    assert_workflow_failed(&telemetry, &run, "server_error");
    assert_no_leaks(
        &run,
        &collector,
        &[KEY, PROMPT, "validation error"],
        "stream error",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_a_connection_error() {
    let (run, collector, server, telemetry) = run_against(
        Hostile::StreamDrop,
        "it-stream-drop",
        &[("LLMJOB_STREAM", "true"), ("LLMJOB_MAX_ATTEMPTS", "2")],
    )
    .await;
    let result = failed(&run, 4, "connection_error");
    assert_eq!(result.attempts, Some(2));
    assert_eq!(server.requests().len(), 2);
    assert_workflow_failed(&telemetry, &run, "connection_error");
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "stream drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_is_cut_by_the_deadline() {
    let (run, collector, _server, telemetry) = run_against(
        Hostile::SlowDrip(Duration::from_millis(50)),
        "it-slow-drip",
        &[("LLMJOB_STREAM", "true"), ("LLMJOB_TIMEOUT", "2s")],
    )
    .await;
    let result = failed(&run, 4, "timeout");
    assert_eq!(result.attempts, Some(1));
    assert_workflow_failed(&telemetry, &run, "timeout");
    assert_no_leaks(&run, &collector, &[KEY, PROMPT], "slow drip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_that_echo_the_request_reach_telemetry_only_with_full_capture() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_hostile(Hostile::EchoError(400))).await;
    for mode in ["none", "hash"] {
        let (run, telemetry) = run_with(
            &collector,
            &server,
            &format!("it-echo-{mode}"),
            &[("LLMJOB_CONTENT_CAPTURE", mode)],
        )
        .await;
        let result = failed(&run, 3, "invalid_request");
        assert_eq!(
            result.error.unwrap().message,
            "HTTP 400 (type invalid_request_error, code invalid_value, param messages)",
            "{mode}: the error's type, code and param only"
        );
        assert_workflow_failed(&telemetry, &run, "invalid_request");
        assert_no_leaks(&run, &collector, &[KEY, PROMPT, "validation error"], mode);
    }
    // With full capture the message goes out, but never the key it quotes.
    let (run, _) = run_with(
        &collector,
        &server,
        "it-echo-full",
        &[("LLMJOB_CONTENT_CAPTURE", "full")],
    )
    .await;
    let result = failed(&run, 3, "invalid_request");
    let message = result.error.unwrap().message;
    assert!(message.contains("validation error"), "{message}");
    assert!(message.contains("Bearer <redacted>"), "{message}");
    assert_no_leaks(&run, &collector, &[KEY], "full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_urls_credentials_are_not_exported() {
    const PASSWORD: &str = "PASSWORD-CANARY-2718";
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let base = server
        .base_url()
        .replacen("http://", &format!("http://user:{PASSWORD}@"), 1);
    let (run, telemetry) = run_with(
        &collector,
        &server,
        "it-base-credentials",
        &[("OPENAI_BASE_URL", &base)],
    )
    .await;
    run.assert_exit(0);
    let (_, _, chats) = span_tree(&telemetry, &run.trace_id(), MODEL);
    assert_eq!(
        chats[0].attributes.str("gen_ai.openai.api_base"),
        Some(server.base_url().as_str())
    );
    assert_no_leaks(&run, &collector, &[KEY, PROMPT, PASSWORD], "base URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_keys_and_prompts_are_configuration_errors() {
    let server = replay(ReplayConfig::new()).await;
    let cases: Vec<(Runner, &str)> = vec![
        (
            Runner::new("it-bad-key").env("OPENAI_API_KEY", format!("{KEY}\nX-Injected: 1")),
            "OPENAI_API_KEY",
        ),
        (
            Runner::new("it-blank-prompt").env("OPENAI_PROMPT", "   "),
            "OPENAI_PROMPT",
        ),
        (
            Runner::new("it-non-utf8-prompt").env_bytes("OPENAI_PROMPT", b"caf\xe9 PROMPT"),
            "OPENAI_PROMPT",
        ),
        (
            Runner::new("it-non-utf8-key").env_bytes("OPENAI_API_KEY", b"sk-\xff-SECRET-BYTES"),
            "OPENAI_API_KEY",
        ),
    ];
    for (runner, name) in cases {
        let run = runner
            .openai(&server)
            .env("OTEL_SDK_DISABLED", "true")
            .run()
            .await;
        run.assert_exit(2);
        assert!(run.stderr.contains(name), "{}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(!run.stderr.contains(KEY) && !run.stderr.contains("SECRET-BYTES"));
        assert!(run.result_text.is_none());
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_delays_the_exit_by_at_most_the_flush_budget() {
    // Accepts connections and holds them open without ever answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let blackhole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let server = replay(ReplayConfig::new()).await;
    for protocol in ["grpc", "http/protobuf"] {
        // The documented bound is 5 s for all three pipelines together; the deadline leaves
        // room for starting the process and the API call on a loaded machine, and stays below
        // the three budgets in a row (15 s) that the runner used to take.
        let run = Runner::new("it-collector-bound")
            .openai(&server)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .run_within(Duration::from_secs(11))
            .await;
        run.assert_exit(0);
        assert_eq!(run.result().status, RunStatus::Succeeded, "{protocol}");
        assert!(
            run.stderr.contains("telemetry export failed"),
            "{protocol}: {}",
            run.stderr
        );
        eprintln!("{protocol}: exited after {:?}", run.elapsed);
    }
    blackhole.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_too_large_for_the_clock_does_not_panic() {
    let collector = collector().await;
    // Accepted by the parser, far beyond what `Instant` can add: the deadline saturates. A failed
    // attempt (the retry decision reads the deadline) and a successful run.
    let server = replay(ReplayConfig::new().with_hostile(Hostile::RetryAfter("1e15".into()))).await;
    let (run, _) = run_with(
        &collector,
        &server,
        "it-huge-timeout",
        &[
            ("LLMJOB_TIMEOUT", "500000000y"),
            ("LLMJOB_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let result = failed(&run, 4, "rate_limited");
    assert_eq!(result.attempts, Some(1));
    let server = replay(ReplayConfig::new()).await;
    let (run, _) = run_with(
        &collector,
        &server,
        "it-huge-timeout-ok",
        &[("LLMJOB_TIMEOUT", "500000000y")],
    )
    .await;
    run.assert_exit(0);
    run.assert_summary_without_content(ANSWER);
}
