//! Termination of the real `llmjob-runner` binary by a signal, as the kubelet stops a deleted or
//! evicted pod: SIGTERM (or SIGINT) cancels the in-flight call or the wait before a retry, and the
//! runner still writes its result (`error.type=cancelled`), flushes its telemetry and exits 5
//! (`docs/job-runner.md`, Every exit path), well within the pod's grace period.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use llmjob_crds::env::exit;
use llmjob_crds::result::RunStatus;
use openai_replay::{Faults, ReplayConfig, ReplayServer};
use testenv::telemetry::StatusCode;

const MODEL: &str = "gpt-4o-mini";
/// The runner pod's grace period: the runner must be gone well before the kubelet's SIGKILL.
const GRACE: Duration = Duration::from_secs(exit::TERMINATION_GRACE_SECS as u64);

/// Completes once the replay server has received `n` requests.
async fn requests_received(server: &ReplayServer, n: usize) {
    testenv::wait::until("the runner's request", Duration::from_secs(30), || async {
        (server.requests().len() >= n).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Asserts the cancelled run's exit code, result, stderr and exported spans.
async fn assert_cancelled(run: &Run, collector: &testenv::collector::Collector, signal: &str) {
    run.assert_exit(exit::CANCELLED);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(&format!("{signal} received")),
        "{}",
        run.stderr
    );
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, "cancelled");
    assert!(error.message.contains(signal), "{}", error.message);
    let trace_id = result.trace_id.unwrap();
    let telemetry = wait_for_run(collector, &trace_id).await;
    let (workflow, task, _) = span_tree(&telemetry, &trace_id, MODEL);
    for span in [workflow, task] {
        assert_eq!(span.status.code, StatusCode::Error, "{}", span.name);
        assert_eq!(span.attributes.str("error.type"), Some("cancelled"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_call_writes_a_cancelled_result_flushes_and_exits_5() {
    let collector = collector().await;
    // The API takes a minute: the signal arrives while the call is in flight.
    let server = replay(ReplayConfig::new().with_delay(Duration::from_secs(60))).await;
    let run = Runner::new("it-sigterm")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_TIMEOUT", "5m")
        .run_signalled(RUN_TIMEOUT, requests_received(&server, 1), "TERM")
        .await;
    assert_cancelled(&run, &collector, "SIGTERM").await;
    // A figure for docs/reliability.md, not an assertion (no timed assertions): the exit comes
    // well within the pod's grace period.
    eprintln!(
        "SIGTERM to exit: the run took {:?} in all (grace period {GRACE:?})",
        run.elapsed
    );
    assert_eq!(run.result().attempts, Some(1));
    let telemetry = wait_for_run(&collector, &run.trace_id()).await;
    let (_, _, chats) = span_tree(&telemetry, &run.trace_id(), MODEL);
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].attributes.str("error.type"), Some("cancelled"));
    assert_eq!(server.requests().len(), 1, "no retry after a cancellation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_waiting_to_retry_cancels_without_another_attempt() {
    let collector = collector().await;
    // A 429 asking for a minute's wait: the signal arrives before the second attempt.
    let server = replay(
        ReplayConfig::new().with_faults(
            Faults::fail_first(1)
                .with_status(429)
                .with_retry_after(Duration::from_secs(60)),
        ),
    )
    .await;
    let run = Runner::new("it-sigint")
        .openai(&server)
        .otlp_grpc(&collector)
        .env("LLMJOB_TIMEOUT", "5m")
        .run_signalled(RUN_TIMEOUT, requests_received(&server, 1), "INT")
        .await;
    assert_cancelled(&run, &collector, "SIGINT").await;
    assert_eq!(run.result().attempts, Some(1));
    assert_eq!(server.requests().len(), 1, "no attempt after the signal");
}
