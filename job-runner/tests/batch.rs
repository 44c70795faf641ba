//! Batch mode of the real `llmjob-runner` binary against a real `openai-replay` server and a real
//! OpenTelemetry Collector: shards of one batch as one trace (a workflow span per pod, a task
//! span per item), the results written through `object_store` to a `file://` URL in item order,
//! the failed-items budget (exit 0 within it, exit 6 over it), and the pod-wide rate limit held
//! while a 429 with `Retry-After` pauses the whole shard, counted on the replay server's own
//! clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use llmjob_crds::result::RunStatus;
use openai_replay::{Faults, ReplayConfig, ReplayServer};
use serde_json::Value;
use testenv::collector::Collector;

/// The launch context every pod of the run gets (the operator's launch span).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `n` prompt items, ids `item-1`..; every third has no id (its line number is its id).
fn items(n: usize) -> String {
    (1..=n)
        .map(|i| {
            if i % 3 == 0 {
                format!("{{\"prompt\":\"{PROMPT} #{i}\"}}\n")
            } else {
                format!("{{\"id\":\"item-{i}\",\"prompt\":\"{PROMPT} #{i}\"}}\n")
            }
        })
        .collect()
}

/// An item the replay server refuses with its recorded 400 (an `image_url` content part): a
/// permanent failure of that item only.
fn bad_item(id: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"messages\":[{{\"role\":\"user\",\"content\":[{{\"type\":\"image_url\",\"image_url\":{{\"url\":\"https://example.invalid/x.png\"}}}}]}}]}}\n"
    )
}

/// A batch runner: the items file written into `dir`, results to `file://{dir}/out`.
fn batch_runner(
    service: &str,
    server: &ReplayServer,
    collector: &Collector,
    dir: &Path,
    items: &str,
) -> Runner {
    let path = dir.join("items.jsonl");
    std::fs::write(&path, items).unwrap();
    Runner::new(service)
        .openai(server)
        .otlp_grpc(collector)
        .unset("OPENAI_PROMPT")
        .env("LLMJOB_ITEMS_FILE", path.display().to_string())
        .env("LLMJOB_OUTPUT_URL", format!("file://{}/out", dir.display()))
}

/// The result lines of shard `index`.
fn output_lines(dir: &Path, index: u32) -> Vec<Value> {
    let path: PathBuf = dir.join(format!("out/part-{index:05}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the results {} were not written: {e}", path.display()));
    assert!(text.ends_with('\n'), "JSON Lines end with a newline");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_one_trace_with_a_task_per_item_and_their_results_in_item_order() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let items = items(12);
    let service = "it-batch-shards";
    // Three pods of an Indexed Job: 5 + 5 + 2 items, the same launch context for each.
    let mut results = Vec::new();
    for index in 0..3u32 {
        let run = batch_runner(service, &server, &collector, dir.path(), &items)
            .env("LLMJOB_ITEMS_PER_POD", "5")
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("LLMJOB_CONCURRENCY", "3")
            .env("TRACEPARENT", TRACEPARENT)
            .run()
            .await;
        run.assert_exit(0);
        assert!(
            !run.stdout.contains(ANSWER) && !run.stdout.contains(PROMPT),
            "no content on stdout: {}",
            run.stdout
        );
        results.push(run.result());
    }
    for (index, result) in results.iter().enumerate() {
        let expected = if index == 2 { 2 } else { 5 };
        assert_eq!(result.status, RunStatus::Succeeded);
        assert_eq!(result.trace_id.as_deref(), Some(TRACE_ID));
        assert_eq!(result.attempts, Some(expected as u32));
        let shard = result.shard.as_ref().expect("a shard in the result");
        assert_eq!(
            (shard.index, shard.succeeded, shard.failed),
            (index as u32, expected, 0)
        );
        assert_eq!(
            shard.output.as_deref(),
            Some(format!("file://{}/out/part-{index:05}.jsonl", dir.path().display()).as_str())
        );
        assert!(shard.item_errors.is_empty());
        // The fixture's usage (23 in, 8 out), summed over the shard's items.
        let usage = result.usage.as_ref().unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (Some(23 * expected), Some(8 * expected), Some(31 * expected))
        );
    }

    // One trace: a workflow span per pod under the launch span, a task span per item under its
    // pod's workflow, a chat span under each task.
    let telemetry = collector
        .wait_for(TELEMETRY_WAIT, |t| {
            let trace = t.trace(TRACE_ID);
            let tasks = trace
                .iter()
                .filter(|s| s.name == "openai_call.task")
                .count();
            let chats = trace.iter().filter(|s| s.name.starts_with("chat ")).count();
            (tasks == 12 && chats == 12).then(|| t.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let trace = telemetry.trace(TRACE_ID);
    let workflows: Vec<_> = trace
        .iter()
        .filter(|s| s.name == "llm_job.workflow")
        .collect();
    assert_eq!(workflows.len(), 3);
    for w in &workflows {
        assert_eq!(w.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    }
    let tasks: Vec<_> = trace
        .iter()
        .filter(|s| s.name == "openai_call.task")
        .collect();
    for task in &tasks {
        let parent = task.parent_span_id.as_deref();
        let workflow = workflows
            .iter()
            .find(|w| Some(w.span_id.as_str()) == parent)
            .unwrap_or_else(|| panic!("task {} is not under a workflow", task.span_id));
        let index = task.attributes.int("llmjob.item.index").unwrap();
        assert_eq!(
            workflow.attributes.int("llmjob.shard.index"),
            Some(index / 5),
            "item {index} ran in its shard"
        );
        assert!(task.attributes.str("llmjob.item.id").is_some());
        let chats = trace
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(task.span_id.as_str()))
            .count();
        assert_eq!(chats, 1, "one chat span under task {}", task.span_id);
    }
    // Capture none: the prompts are in neither spans nor logs.
    for s in &trace {
        assert!(
            !format!("{:?}", s.attributes).contains("PROMPT-CANARY"),
            "{}",
            s.name
        );
    }

    // The results: every item once, in item order, with its answer (the product, whatever the
    // capture mode), its usage and its task span.
    let mut all = Vec::new();
    for index in 0..3 {
        all.extend(output_lines(dir.path(), index));
    }
    assert_eq!(all.len(), 12);
    for (i, line) in all.iter().enumerate() {
        let n = i + 1;
        let id = if n % 3 == 0 {
            n.to_string()
        } else {
            format!("item-{n}")
        };
        assert_eq!(line["id"], Value::from(id), "{line}");
        assert_eq!(line["index"], Value::from(i), "{line}");
        assert_eq!(line["status"], "succeeded", "{line}");
        assert_eq!(line["response"]["content"], ANSWER, "{line}");
        assert_eq!(line["response"]["id"], RESPONSE_ID, "{line}");
        assert_eq!(line["response"]["model"], RESPONSE_MODEL, "{line}");
        assert_eq!(line["response"]["finishReason"], "stop", "{line}");
        assert_eq!(line["usage"]["totalTokens"], 31, "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert_eq!(line["traceId"], TRACE_ID, "{line}");
        let span_id = line["spanId"].as_str().unwrap();
        let task = tasks
            .iter()
            .find(|t| t.span_id == span_id)
            .unwrap_or_else(|| panic!("no task span {span_id}"));
        assert_eq!(task.attributes.int("llmjob.item.index"), Some(i as i64));
        assert!(line.get("error").is_none(), "{line}");
    }
    // Each item was asked its own prompt.
    let prompts: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| {
            r.body.as_ref()?["messages"][0]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(prompts.len(), 12);
    for i in 1..=12 {
        assert!(prompts.contains(&format!("{PROMPT} #{i}")), "prompt {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_items_within_the_budget_exit_0_and_over_it_exit_6() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let service = "it-batch-budget";
    // good, bad, good, bad, good, good
    let lines = items(6)
        .lines()
        .map(|l| format!("{l}\n"))
        .collect::<Vec<_>>();
    let text = [
        lines[0].clone(),
        bad_item("bad-1"),
        lines[2].clone(),
        bad_item("bad-2"),
        lines[4].clone(),
        lines[5].clone(),
    ]
    .concat();

    // Within the budget: every item runs, the failures are in the results and the totals.
    let dir = tempfile::tempdir().unwrap();
    let run = batch_runner(service, &server, &collector, dir.path(), &text)
        .env("LLMJOB_MAX_FAILED_ITEMS", "2")
        .env("LLMJOB_CONCURRENCY", "1")
        .run()
        .await;
    run.assert_exit(0);
    let result = run.result();
    assert_eq!(result.status, RunStatus::Succeeded);
    let shard = result.shard.unwrap();
    assert_eq!((shard.succeeded, shard.failed), (4, 2));
    let errors: Vec<(&str, &str)> = shard
        .item_errors
        .iter()
        .map(|e| (e.id.as_str(), e.error.kind.as_str()))
        .collect();
    assert_eq!(
        errors,
        [("bad-1", "invalid_request"), ("bad-2", "invalid_request")]
    );
    let out = output_lines(dir.path(), 0);
    assert_eq!(out.len(), 6);
    let statuses: Vec<&str> = out.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "succeeded",
            "failed",
            "succeeded",
            "failed",
            "succeeded",
            "succeeded"
        ]
    );
    assert_eq!(out[1]["error"]["type"], "invalid_request");
    assert_eq!(out[1]["error"]["httpStatus"], 400);
    assert_eq!(out[1]["attempts"], 1, "a permanent error is not retried");
    assert_eq!(server.requests().len(), 6);

    // Over the budget: the shard stops starting items once its failures exceed it, writes what
    // ran and exits 6 (the operator fails the Job at once).
    server.clear_requests();
    let dir = tempfile::tempdir().unwrap();
    let run = batch_runner(service, &server, &collector, dir.path(), &text)
        .env("LLMJOB_MAX_FAILED_ITEMS", "1")
        .env("LLMJOB_CONCURRENCY", "1")
        .env("TRACEPARENT", TRACEPARENT)
        .run()
        .await;
    run.assert_exit(6);
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    let error = result.error.as_ref().unwrap();
    assert_eq!(error.kind, "too_many_failed_items");
    assert!(
        error.message.contains("LLMJOB_MAX_FAILED_ITEMS"),
        "{error:?}"
    );
    let shard = result.shard.as_ref().unwrap();
    assert_eq!((shard.succeeded, shard.failed), (2, 2));
    assert_eq!(output_lines(dir.path(), 0).len(), 4);
    assert_eq!(server.requests().len(), 4, "items 5 and 6 were not sent");
    // The pod's workflow span failed with the budget's error type.
    let telemetry = collector
        .wait_for(TELEMETRY_WAIT, |t| {
            t.trace(TRACE_ID)
                .iter()
                .any(|s| s.name == "llm_job.workflow")
                .then(|| t.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let trace = telemetry.trace(TRACE_ID);
    let workflow = trace.iter().find(|s| s.name == "llm_job.workflow").unwrap();
    assert_eq!(
        workflow.attributes.str("error.type"),
        Some("too_many_failed_items")
    );
    assert_eq!(workflow.attributes.int("llmjob.shard.failed"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_the_whole_shard_and_the_request_rate_never_exceeds_the_share() {
    const RPM: u32 = 300;
    const RETRY_AFTER: Duration = Duration::from_secs(1);
    let interval = Duration::from_secs(60) / RPM;
    let collector = collector().await;
    let server = replay(
        ReplayConfig::new().with_api_key(KEY).with_faults(
            Faults::fail_first(1)
                .with_status(429)
                .with_retry_after(RETRY_AFTER),
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let run = batch_runner("it-batch-rate", &server, &collector, dir.path(), &items(20))
        .env("LLMJOB_CONCURRENCY", "8")
        .env("LLMJOB_REQUESTS_PER_MINUTE", RPM.to_string())
        .run()
        .await;
    run.assert_exit(0);
    let shard = run.result().shard.unwrap();
    assert_eq!((shard.succeeded, shard.failed), (20, 0));
    let out = output_lines(dir.path(), 0);
    assert_eq!(out.len(), 20);
    let retried = out.iter().filter(|l| l["attempts"] == 2).count();
    let once = out.iter().filter(|l| l["attempts"] == 1).count();
    assert_eq!(
        (retried, once),
        (1, 19),
        "one item was retried after its 429"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 21, "20 items and one retry");
    let mut times: Vec<_> = requests.iter().map(|r| r.received).collect();
    times.sort();
    // Counted on the server's clock, in every window starting at a request. The limiter spaces
    // the moments it lets requests go by 60 s / RPM; one request whose trip to the server took
    // longer than the next one's can bring them closer at the server, hence the one extra.
    let in_window = |start: std::time::Instant, length: Duration| {
        times
            .iter()
            .filter(|t| **t >= start && **t < start + length)
            .count()
    };
    let second = Duration::from_secs(1);
    let per_second = (second.as_millis() / interval.as_millis()) as usize;
    for t in &times {
        assert!(
            in_window(*t, Duration::from_secs(60)) <= RPM as usize,
            "more than {RPM} requests in a minute"
        );
        let n = in_window(*t, second);
        assert!(
            n <= per_second + 1,
            "{n} requests within a second of one another, the share allows {per_second}"
        );
    }
    // The 429 paused every item of the pod, not only the one that got it: besides one request
    // the limiter may have let go before the 429 reached the runner, nothing arrived during the
    // pause (unpaused, the share would have let about five through).
    let throttled = requests.iter().find(|r| r.status == 429).unwrap();
    let during_pause = requests
        .iter()
        .filter(|r| {
            r.received > throttled.received && r.received < throttled.received + RETRY_AFTER
        })
        .count();
    assert!(
        during_pause <= 1,
        "{during_pause} requests arrived during the 1 s pause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_output_gets_one_key_per_shard_by_server_side_apply() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{Api, PostParams};

    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = testenv::cluster::Cluster::start(&dir.path().join("cluster"))
        .await
        .unwrap_or_else(|e| panic!("cannot start the test control plane: {e}"));
    // A fresh namespace, made the kubeconfig's current one: the runner writes into its own
    // namespace, as a pod writes into the pod's.
    let namespace = format!("batch-cm-{}", uuid::Uuid::new_v4().simple());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let mut kubeconfig: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(cluster.kubeconfig_path()).unwrap())
            .unwrap();
    for context in kubeconfig["contexts"].as_array_mut().unwrap() {
        context["context"]["namespace"] = serde_json::Value::from(namespace.clone());
    }
    let kubeconfig_path = dir.path().join("kubeconfig-ns");
    std::fs::write(
        &kubeconfig_path,
        serde_norway::to_string(&kubeconfig).unwrap(),
    )
    .unwrap();

    let run_shard = |index: u32| {
        batch_runner("it-batch-cm", &server, &collector, dir.path(), &items(4))
            .env("LLMJOB_ITEMS_PER_POD", "2")
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("LLMJOB_OUTPUT_URL", "configmap://batch-results")
            .env("KUBECONFIG", kubeconfig_path.display().to_string())
            .run()
    };
    for index in [0, 1, 0] {
        let run = run_shard(index).await;
        run.assert_exit(0);
        assert_eq!(
            run.result().shard.unwrap().output.as_deref(),
            Some(format!("configmap://batch-results/part-{index:05}.jsonl").as_str())
        );
    }
    let cm = Api::<ConfigMap>::namespaced(cluster.client(), &namespace)
        .get("batch-results")
        .await
        .unwrap();
    let data = cm.data.unwrap_or_default();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["part-00000.jsonl", "part-00001.jsonl"],
        "shard 0's rerun kept shard 1's key"
    );
    for (key, first_index) in [("part-00000.jsonl", 0), ("part-00001.jsonl", 2)] {
        let lines: Vec<Value> = data[key]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{key}");
        assert_eq!(lines[0]["index"], first_index, "{key}");
        assert_eq!(lines[1]["response"]["content"], ANSWER, "{key}");
    }
    let managers: Vec<String> = cm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    for shard in ["llmjob-runner-shard-0", "llmjob-runner-shard-1"] {
        assert!(managers.iter().any(|m| m == shard), "{managers:?}");
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_output_gets_one_object_per_shard_and_refused_credentials_exit_2() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let s3 = testenv::s3::S3Server::start("results")
        .await
        .unwrap_or_else(|e| panic!("cannot start the S3 server: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let credentials = s3.credentials_env(&s3.endpoint());
    let runner = |index: u32| {
        let mut runner = batch_runner("it-batch-s3", &server, &collector, dir.path(), &items(5))
            .env("LLMJOB_ITEMS_PER_POD", "3")
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("LLMJOB_OUTPUT_URL", s3.url("run-1"));
        for (name, value) in &credentials {
            runner = runner.env(name, value.clone());
        }
        runner
    };
    for index in [0, 1] {
        let run = runner(index).run().await;
        run.assert_exit(0);
        assert_eq!(
            run.result().shard.unwrap().output.as_deref(),
            Some(format!("s3://results/run-1/part-{index:05}.jsonl").as_str())
        );
    }
    assert_eq!(
        s3.list("run-1").await.unwrap(),
        ["run-1/part-00000.jsonl", "run-1/part-00001.jsonl"]
    );
    let lines = s3.lines("run-1").await.unwrap();
    assert_eq!(lines.len(), 5);
    for (i, line) in lines.iter().enumerate() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["index"], i, "{line}");
        assert_eq!(line["response"]["content"], ANSWER, "{line}");
    }

    // A secret the store refuses: the items ran, but their results cannot be written; a retry
    // could not write them either, so the shard exits 2 and names the object, never the secret.
    let run = runner(0)
        .env("AWS_SECRET_ACCESS_KEY", "wrong-SECRET-0123456789")
        .run()
        .await;
    run.assert_exit(2);
    let result = run.result();
    assert_eq!(result.status, RunStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, "output");
    assert!(
        error
            .message
            .contains("s3://results/run-1/part-00000.jsonl"),
        "{}",
        error.message
    );
    for text in [&run.stderr, &run.stdout, &error.message] {
        assert!(!text.contains("wrong-SECRET"), "the secret leaked: {text}");
        assert!(
            !text.contains(s3.secret_access_key()),
            "the secret leaked: {text}"
        );
    }
    assert!(result.shard.unwrap().output.is_none());

    // The credentials as the operator gives them to a pod: the Secret mounted one file per key
    // (LLMJOB_OUTPUT_CREDENTIALS_DIR), values ending in a newline as `kubectl create secret
    // --from-file` leaves them. Its AWS keys win over the wrong secret in the environment; the
    // files named like the runner's own variables are ignored (the run exports its trace and
    // calls the API as configured) and named, never their values.
    let secrets = tempfile::tempdir().unwrap();
    for (name, value) in &credentials {
        std::fs::write(secrets.path().join(name), format!("{value}\n")).unwrap();
    }
    for (name, value) in [
        ("OPENAI_BASE_URL", "http://127.0.0.1:9/hijacked-v1"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=hijacked-HEADER",
        ),
    ] {
        std::fs::write(secrets.path().join(name), value).unwrap();
    }
    let run = runner(1)
        .env("AWS_SECRET_ACCESS_KEY", "wrong-SECRET-0123456789")
        .env("LLMJOB_OUTPUT_URL", s3.url("mounted"))
        .env(
            "LLMJOB_OUTPUT_CREDENTIALS_DIR",
            secrets.path().display().to_string(),
        )
        .run()
        .await;
    run.assert_exit(0);
    assert_eq!(
        run.result().shard.unwrap().output.as_deref(),
        Some("s3://results/mounted/part-00001.jsonl")
    );
    assert_eq!(s3.lines("mounted").await.unwrap().len(), 2, "items 4 and 5");
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("output credentials: ignoring"))
        .unwrap_or_else(|| panic!("no warning about the ignored files in\n{}", run.stderr));
    assert!(
        warning.contains("OPENAI_BASE_URL") && warning.contains("OTEL_EXPORTER_OTLP_HEADERS"),
        "{warning}"
    );
    for text in [&run.stderr, &run.stdout] {
        for secret in ["hijacked", s3.secret_access_key()] {
            assert!(!text.contains(secret), "a credentials file leaked: {text}");
        }
    }
    s3.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_capture_applies_to_each_item() {
    let collector = collector().await;
    let server = replay(ReplayConfig::new().with_api_key(KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    // One trace per mode.
    for (n, capture) in [(1, "full"), (2, "none")] {
        let trace_id = format!("{n:0>32}");
        let traceparent = TRACEPARENT.replace(TRACE_ID, &trace_id);
        let run = batch_runner(
            "it-batch-capture",
            &server,
            &collector,
            dir.path(),
            &items(3),
        )
        .env("LLMJOB_CONTENT_CAPTURE", capture)
        .env("TRACEPARENT", traceparent)
        .run()
        .await;
        run.assert_exit(0);
        let telemetry = collector
            .wait_for(TELEMETRY_WAIT, |t| {
                let tasks = t
                    .trace(&trace_id)
                    .iter()
                    .filter(|s| s.name == "openai_call.task")
                    .count();
                (tasks == 3).then(|| t.clone())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let trace = telemetry.trace(&trace_id);
        for task in trace.iter().filter(|s| s.name == "openai_call.task") {
            let index = task.attributes.int("llmjob.item.index").unwrap();
            let input = task.attributes.str("traceloop.entity.input");
            let chat = trace
                .iter()
                .find(|s| s.parent_span_id.as_deref() == Some(task.span_id.as_str()))
                .unwrap();
            let messages = chat.attributes.str("gen_ai.input.messages");
            match capture {
                // Each item's own prompt on its own spans.
                "full" => {
                    let own = format!("{PROMPT} #{}", index + 1);
                    assert!(input.is_some_and(|i| i.contains(&own)), "{input:?}");
                    assert!(messages.is_some_and(|m| m.contains(&own)), "{messages:?}");
                    assert!(
                        chat.attributes
                            .str("gen_ai.output.messages")
                            .is_some_and(|m| m.contains(ANSWER))
                    );
                }
                _ => assert!(input.is_none() && messages.is_none()),
            }
        }
        // The answers are in the results either way: they are the product.
        let out = output_lines(dir.path(), 0);
        assert!(out.iter().all(|l| l["response"]["content"] == ANSWER));
    }
}
