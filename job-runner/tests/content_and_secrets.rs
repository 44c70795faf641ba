//! What the real `llmjob-runner` binary lets out: prompt and completion text only in content
//! capture mode `full`, their SHA-256 (of exactly what `full` records) in mode `hash`, nothing by
//! default; and the API key never, in any output, on success or on a 401. Checked on the parsed
//! telemetry and, byte for byte, on the collector's raw output files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use openai_replay::ReplayConfig;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use testenv::collector::Collector;
use testenv::telemetry::{LogRecord, Telemetry};

const MODEL: &str = "gpt-4o-mini";
const DETAILS_EVENT: &str = "gen_ai.client.inference.operation.details";

/// Span attributes and log attributes that carry content (`full`) or its hash (`hash`).
const CONTENT_KEYS: [&str; 4] = [
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "traceloop.entity.input",
    "traceloop.entity.output",
];
const HASH_KEYS: [&str; 2] = ["llmjob.input.sha256", "llmjob.output.sha256"];

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Runs a successful job in `mode` against its own collector and returns what it left.
async fn run_in_mode(mode: Option<&str>, service: &str) -> (Run, Collector, Telemetry, String) {
    let collector = collector().await;
    let server = replay(ReplayConfig::new()).await;
    let mut runner = Runner::new(service).openai(&server).otlp_grpc(&collector);
    if let Some(mode) = mode {
        runner = runner.env("LLMJOB_CONTENT_CAPTURE", mode);
    }
    let run = runner.run().await;
    run.assert_exit(0);
    // Stdout follows the spans' policy: the answer only with `full`.
    if mode == Some("full") {
        assert_eq!(run.stdout, format!("{ANSWER}\n"), "the answer with full");
    } else {
        run.assert_summary_without_content(ANSWER);
        let hashes = run.result().output_sha256.is_some();
        assert_eq!(
            run.stdout.contains("output sha256 "),
            hashes,
            "the output hash on stdout exactly when the result has it: {}",
            run.stdout
        );
    }
    let trace_id = run.trace_id();
    let telemetry = wait_for_run(&collector, &trace_id).await;
    (run, collector, telemetry, trace_id)
}

/// The `gen_ai.client.inference.operation.details` log records of a trace.
fn details_logs<'a>(telemetry: &'a Telemetry, trace_id: &str) -> Vec<&'a LogRecord> {
    telemetry
        .logs_for_trace(trace_id)
        .into_iter()
        .filter(|l| {
            l.event_name.as_deref() == Some(DETAILS_EVENT) || l.body_str() == Some(DETAILS_EVENT)
        })
        .collect()
}

/// Asserts that neither the prompt nor the answer is anywhere in the collector's files or the
/// result file.
fn assert_no_text(run: &Run, collector: &Collector, mode: &str) {
    for text in [PROMPT, ANSWER] {
        let files = collector_files_containing(collector, text);
        assert!(
            files.is_empty(),
            "capture {mode}: {text:?} found in {files:?}"
        );
        let result = run.result_text.as_deref().unwrap();
        assert!(
            !result.contains(text),
            "capture {mode}: {text:?} in the result {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_capture_exports_no_content() {
    let (run, collector, telemetry, trace_id) = run_in_mode(None, "it-capture-none").await;
    assert_no_text(&run, &collector, "none");
    for span in telemetry.trace(&trace_id) {
        for key in CONTENT_KEYS.iter().chain(&HASH_KEYS) {
            assert!(!span.attributes.contains_key(key), "{key} on {}", span.name);
        }
    }
    assert!(details_logs(&telemetry, &trace_id).is_empty());
    let result = run.result();
    assert!(result.input_sha256.is_none() && result.output_sha256.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_capture_exports_the_messages() {
    let (run, collector, telemetry, trace_id) = run_in_mode(Some("full"), "it-capture-full").await;
    let (workflow, task, chats) = span_tree(&telemetry, &trace_id, MODEL);
    let chat = chats[0];
    let input = chat
        .attributes
        .str("gen_ai.input.messages")
        .expect("gen_ai.input.messages on the chat span");
    let output = chat
        .attributes
        .str("gen_ai.output.messages")
        .expect("gen_ai.output.messages on the chat span");
    // The GenAI conventions' message schema.
    let input_json: Value = serde_json::from_str(input).unwrap();
    assert_eq!(
        input_json,
        json!([{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}])
    );
    let output_json: Value = serde_json::from_str(output).unwrap();
    assert_eq!(
        output_json,
        json!([{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "stop"}])
    );
    for span in [workflow, task] {
        assert_eq!(
            span.attributes.str("traceloop.entity.input"),
            Some(input),
            "{}",
            span.name
        );
        assert_eq!(
            span.attributes.str("traceloop.entity.output"),
            Some(output),
            "{}",
            span.name
        );
    }
    let details = details_logs(&telemetry, &trace_id);
    assert_eq!(details.len(), 1, "one {DETAILS_EVENT} record");
    assert_eq!(
        details[0].attributes.str("gen_ai.input.messages"),
        Some(input)
    );
    assert_eq!(
        details[0].attributes.str("gen_ai.output.messages"),
        Some(output)
    );
    assert_eq!(
        details[0].span_id.as_deref(),
        Some(workflow.span_id.as_str())
    );
    // Telemetry holds the text (so the byte search of the other tests can find it)...
    assert!(!collector_files_containing(&collector, PROMPT).is_empty());
    assert!(!collector_files_containing(&collector, ANSWER).is_empty());
    // ...but the result never does.
    let result = run.result();
    let text = run.result_text.as_deref().unwrap();
    assert!(!text.contains(PROMPT) && !text.contains(ANSWER), "{text}");
    assert!(result.input_sha256.is_none() && result.output_sha256.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_capture_exports_the_sha256_of_what_full_records() {
    // What `full` records for the same prompt and fixture...
    let (_, _, full, full_trace) = run_in_mode(Some("full"), "it-capture-full-ref").await;
    let (_, _, chats) = span_tree(&full, &full_trace, MODEL);
    let input = chats[0].attributes.str("gen_ai.input.messages").unwrap();
    let output = chats[0].attributes.str("gen_ai.output.messages").unwrap();
    let (input_sha, output_sha) = (sha256_hex(input), sha256_hex(output));

    // ...and its hashes in `hash` mode, with no text anywhere.
    let (run, collector, telemetry, trace_id) = run_in_mode(Some("hash"), "it-capture-hash").await;
    assert_no_text(&run, &collector, "hash");
    let (workflow, task, chats) = span_tree(&telemetry, &trace_id, MODEL);
    let chat = chats[0];
    assert_eq!(
        chat.attributes.str("llmjob.input.sha256"),
        Some(input_sha.as_str())
    );
    assert_eq!(
        chat.attributes.str("llmjob.output.sha256"),
        Some(output_sha.as_str())
    );
    for span in [workflow, task, chat] {
        for key in CONTENT_KEYS {
            assert!(!span.attributes.contains_key(key), "{key} on {}", span.name);
        }
    }
    let details = details_logs(&telemetry, &trace_id);
    assert_eq!(details.len(), 1, "one {DETAILS_EVENT} record");
    let a = &details[0].attributes;
    assert_eq!(a.str("llmjob.input.sha256"), Some(input_sha.as_str()));
    assert_eq!(a.str("llmjob.output.sha256"), Some(output_sha.as_str()));
    for key in CONTENT_KEYS {
        assert!(!a.contains_key(key), "{key} in the details log");
    }
    let result = run.result();
    assert_eq!(result.input_sha256.as_deref(), Some(input_sha.as_str()));
    assert_eq!(result.output_sha256.as_deref(), Some(output_sha.as_str()));
}

/// Asserts the key is in none of the run's outputs nor the collector's files.
fn assert_no_key(run: &Run, collector: &Collector, what: &str) {
    assert!(!run.stdout.contains(KEY), "{what}: key on stdout");
    assert!(
        !run.stderr.contains(KEY),
        "{what}: key on stderr:\n{}",
        run.stderr
    );
    let result = run
        .result_text
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no result file"));
    assert!(!result.contains(KEY), "{what}: key in the result {result}");
    let files = collector_files_containing(collector, KEY);
    assert!(files.is_empty(), "{what}: key in {files:?}");
    // Not even the part after the `sk-` prefix.
    let tail = &KEY["sk-".len()..];
    assert!(
        !run.stderr.contains(tail) && !result.contains(tail),
        "{what}"
    );
    assert!(
        collector_files_containing(collector, tail).is_empty(),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_leaks_nowhere_on_success() {
    // Full capture and trace-level logging: the most the runner ever emits.
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let run = Runner::new("it-leak-success")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_CONTENT_CAPTURE", "full")
        .env("RUST_LOG", "trace")
        .run()
        .await;
    run.assert_exit(0);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        server.requests()[0].status,
        200,
        "the key was sent and accepted"
    );
    wait_for_run(&collector, &run.trace_id()).await;
    assert_no_key(&run, &collector, "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_leaks_nowhere_on_a_401() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key("sk-replay-wants-another-key")).await;
    let run = Runner::new("it-leak-401")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_CONTENT_CAPTURE", "full")
        .env("RUST_LOG", "trace")
        .run()
        .await;
    run.assert_exit(3);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].status, 401);
    let telemetry = wait_for_run(&collector, &run.trace_id()).await;
    assert!(
        telemetry
            .spans
            .iter()
            .any(|s| s.event("exception").is_some()),
        "the error was exported"
    );
    assert_no_key(&run, &collector, "401");
}
