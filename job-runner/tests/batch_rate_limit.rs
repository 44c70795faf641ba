//! A whole batch's shared rate limit under 429 injection, with the real runner binary: the pods
//! of one Indexed Job are [`PODS`] runner processes started at once with the variables the
//! operator gives them (`JOB_COMPLETION_INDEX` 0..PODS, the same items file, the LlmJob's
//! requests-per-minute divided by the Job's parallelism, one output URL), against one replay
//! server that answers every [`FAIL_EVERY`]-th request 429 with `retry-after-ms`, and a real
//! S3-compatible store (versitygw, `testenv::s3`) for the results.
//!
//! It checks, on the server's own clock (`RecordedRequest::received`, so a slow test machine can
//! only lower the rates seen, except for the jitter of arrivals, allowed for below): the 429s
//! really happened; the whole LlmJob's requests stayed under its limit, over the run and in every
//! two-second window; every item ends succeeded, exactly once, and its result line is in the
//! bucket. Needs `tools/ensure-tools.sh` (versitygw); fails,
//! never skips, without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Runner, replay};
use openai_replay::{Faults, ReplayConfig};
use serde_json::Value;
use testenv::s3::S3Server;

/// Pods of the Indexed Job (its parallelism).
const PODS: u32 = 3;
/// Items per pod (`LLMJOB_ITEMS_PER_POD`).
const PER_POD: u32 = 20;
/// Items in the LlmJob.
const ITEMS: u32 = PODS * PER_POD;
/// The LlmJob's `rateLimit.requestsPerMinute`: 10 requests a second for the whole run.
const LIMIT_RPM: u32 = 600;
/// Items in flight per pod (`LLMJOB_CONCURRENCY`): more than the limit lets through, so the
/// limiter, not the concurrency, sets the pace.
const CONCURRENCY: u32 = 4;
/// Every N-th chat request is answered 429.
const FAIL_EVERY: u32 = 5;
/// The `retry-after-ms` of those 429s.
const RETRY_AFTER: Duration = Duration::from_millis(300);
/// Guard against a hang (the run takes about ten seconds), not a performance target.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

fn item_prompt(n: u32) -> String {
    format!("What is 2 + 2? (item {n})")
}

/// The item number a recorded request asked about, from its prompt.
fn item_of(body: Option<&Value>) -> Option<u32> {
    let text = body?.pointer("/messages/0/content")?.as_str()?;
    text.rsplit("(item ")
        .next()?
        .trim_end_matches(')')
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stays_under_its_shared_limit_through_429s_and_every_item_succeeds() {
    let faults = Faults::fail_every(FAIL_EVERY)
        .with_status(429)
        .with_retry_after(RETRY_AFTER);
    let server = replay(ReplayConfig::new().with_faults(faults)).await;
    let s3 = S3Server::start("results")
        .await
        .unwrap_or_else(|e| panic!("cannot start versitygw: {e}"));

    let dir = tempfile::tempdir().expect("temporary directory");
    let items_file = dir.path().join("items.jsonl");
    let items: String = (1..=ITEMS)
        .map(|n| {
            format!(
                "{{\"id\":\"item-{n}\",\"prompt\":\"{}\"}}\n",
                item_prompt(n)
            )
        })
        .collect();
    std::fs::write(&items_file, items).expect("writing the items file");
    // The operator's split: the LlmJob's limit divided by the Job's effective parallelism.
    let share = LIMIT_RPM / PODS;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let runs = (0..PODS).map(|index| {
        let mut runner = Runner::new("batch-rate-limit")
            .unset("OPENAI_PROMPT")
            .openai(&server)
            .env("LLMJOB_ITEMS_FILE", items_file.display().to_string())
            .env("LLMJOB_ITEMS_PER_POD", PER_POD.to_string())
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("LLMJOB_CONCURRENCY", CONCURRENCY.to_string())
            .env("LLMJOB_REQUESTS_PER_MINUTE", share.to_string())
            .env("LLMJOB_MAX_FAILED_ITEMS", "0")
            // Every 429 is another attempt of its item; far more than a 1-in-5 fault needs.
            .env("LLMJOB_MAX_ATTEMPTS", "20")
            .env("LLMJOB_OUTPUT_URL", s3.url("run-1"))
            .env("TRACEPARENT", traceparent);
        for (key, value) in s3.credentials_env(&s3.endpoint()) {
            runner = runner.env(&key, value);
        }
        runner.run_within(RUN_DEADLINE)
    });
    let runs = futures::future::join_all(runs).await;

    // Every pod finished its shard within budget.
    let mut succeeded = 0;
    for (index, run) in runs.iter().enumerate() {
        run.assert_exit(0);
        let shard = run
            .result()
            .shard
            .unwrap_or_else(|| panic!("pod {index}: no shard totals in {:?}", run.result_text));
        assert_eq!(shard.failed, 0, "pod {index}: {shard:?}");
        succeeded += shard.succeeded;
    }
    assert_eq!(succeeded, u64::from(ITEMS), "items succeeded over all pods");

    // The server saw the 429s, and exactly one success per item.
    let chats: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    let throttled = chats.iter().filter(|r| r.status == 429).count();
    assert!(
        throttled >= (ITEMS / FAIL_EVERY) as usize,
        "{throttled} requests answered 429 of {}",
        chats.len()
    );
    let mut successes: BTreeMap<u32, usize> = BTreeMap::new();
    for r in chats.iter().filter(|r| r.status == 200) {
        let item = item_of(r.body.as_ref())
            .unwrap_or_else(|| panic!("a request without an item prompt: {:?}", r.body));
        *successes.entry(item).or_default() += 1;
    }
    assert_eq!(successes.len(), ITEMS as usize, "items answered 200");
    assert!(
        successes.values().all(|&n| n == 1),
        "an item answered twice: {successes:?}"
    );

    // The whole LlmJob's rate, 429s and retries included, on the server's clock.
    let mut arrivals: Vec<_> = chats.iter().map(|r| r.received).collect();
    arrivals.sort();
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    let span = last.duration_since(first);
    let pods = PODS as usize;
    // P evenly spaced streams of at most `share` a minute fit at most `n - P` of their intervals
    // (60/share s) into the span. The server sees arrivals, not sends: a request delayed on its
    // way shortens the span seen by that delay, allowed for by JITTER.
    const JITTER: Duration = Duration::from_millis(250);
    let achieved = (arrivals.len() - pods) as f64 / (span + JITTER).as_secs_f64() * 60.0;
    eprintln!(
        "{} requests ({throttled} answered 429) in {:.2} s: {achieved:.0} requests/min, limit {LIMIT_RPM}",
        arrivals.len(),
        span.as_secs_f64()
    );
    assert!(
        achieved <= f64::from(LIMIT_RPM),
        "{achieved:.0} requests/min over the run, limit {LIMIT_RPM}"
    );
    // In any window, each pod's stream holds at most one request more than its share of the
    // window (its phase), and one more for arrival jitter. Without the limiter, the 12 requests
    // in flight are answered at once and the window holds hundreds.
    let window = Duration::from_secs(2);
    let allowed = (f64::from(LIMIT_RPM) * window.as_secs_f64() / 60.0).floor() as usize + 2 * pods;
    for (i, start) in arrivals.iter().enumerate() {
        let in_window = arrivals[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < window)
            .count();
        assert!(
            in_window <= allowed,
            "{in_window} requests in the {window:?} from request {i}, at most {allowed} allowed"
        );
    }

    // Every item's result line is in the bucket, once, succeeded.
    let lines = s3.lines("run-1").await.expect("reading the results");
    let keys = s3.list("run-1").await.expect("listing the results");
    assert_eq!(
        keys,
        (0..PODS)
            .map(|i| format!("run-1/part-{i:05}.jsonl"))
            .collect::<Vec<_>>()
    );
    assert_eq!(lines.len(), ITEMS as usize, "{lines:?}");
    for (n, line) in (1..=ITEMS).zip(&lines) {
        let result: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(result["id"], format!("item-{n}"), "{line}");
        assert_eq!(result["status"], "succeeded", "{line}");
        assert_eq!(
            result["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
    }
    s3.shutdown().await.expect("stopping versitygw");
}
