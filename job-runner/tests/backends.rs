//! Many runs of the real `llmjob-runner` binary, exporting to a collector that runs the reference
//! pipelines of `manifests/observability/` unchanged, in front of a real Prometheus 3 and a real
//! Jaeger v2 (`testenv::backends`); the log records go on to a testenv collector.
//!
//! Each run is a host process with its own pod name, pod uid, job name and LlmJob uid in its
//! resource (as the operator sets them), spread over three namespaces, two models and two teams;
//! a few fail with 429. The test checks what a user of those backends relies on:
//! - the token totals in Prometheus equal the sum of the runs' `usage` from their result files;
//! - the number of series per metric after 2N runs is the number after N (bounded by model ×
//!   namespace × team, not by runs);
//! - every PromQL query of the pipeline README, of the chart's dashboards (Grafana JSON) and of
//!   its PrometheusRule (rendered with `helm template`) returns data when it reads the runs'
//!   metrics;
//! - Jaeger holds a run's trace by its id, as the tree
//!   `llm_job.workflow → openai_call.task → chat {model}`;
//! - the run's log records reached the logs backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use llmjob_crds::result::RunStatus;
use openai_replay::{Faults, ReplayConfig};
use testenv::backends::Backends;

/// Runs per batch: the series are counted after N and after 2N runs.
const N: usize = 100;
/// Runs at once (the machine has two cores).
const PARALLEL: usize = 6;
/// Every this-many runs one goes to the failing (429) server.
const FAIL_EVERY: usize = 10;
const NAMESPACES: [&str; 3] = ["research", "prod", "batch"];
const MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4.1"];
const TEAMS: [&str; 2] = ["nlp", "search"];
/// How long Prometheus may take to show what the runs exported: a bound against a hang.
const SETTLE: Duration = Duration::from_secs(90);
/// The runs' metrics in Prometheus (the OTLP receiver's names: dots to underscores, units and
/// `_total` as suffixes).
const RUN_METRICS: &str = r#"{__name__=~"gen_ai_.+"}"#;

/// What one batch of runs added up to.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    input: u64,
    output: u64,
    succeeded: usize,
    failed: usize,
}

/// The `i`-th run: distinct per-run identities, a namespace/model/team cycle, every
/// [`FAIL_EVERY`]-th run against the failing server.
async fn one_run(
    i: usize,
    endpoint: &str,
    ok: &openai_replay::ReplayServer,
    failing: &openai_replay::ReplayServer,
) -> (RunResultSummary, Option<String>) {
    let (ns, model, team) = (
        NAMESPACES[i % NAMESPACES.len()],
        MODELS[i % MODELS.len()],
        TEAMS[(i / 6) % TEAMS.len()],
    );
    let uid = format!("00000000-0000-4000-8000-{i:012}");
    let attributes = format!(
        "k8s.namespace.name={ns},k8s.pod.name=run-{i}-x7k2p,k8s.pod.uid={uid},k8s.node.name=node-{},\
         k8s.job.name=run-{i},llmjob.name=run-{i},llmjob.uid={uid},team={team}",
        i % 4
    );
    let fails = i % FAIL_EVERY == FAIL_EVERY - 1;
    let run = Runner::new("llm-batch")
        .openai(if fails { failing } else { ok })
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_RESOURCE_ATTRIBUTES", attributes)
        .env("DEPLOYMENT_ENVIRONMENT", "it-backends")
        .env("OPENAI_MODEL", model)
        .env("LLMJOB_MAX_ATTEMPTS", "2")
        .run()
        .await;
    run.assert_exit(if fails { 4 } else { 0 });
    let result = run.result();
    let usage = result.usage.clone().unwrap_or_default();
    let summary = RunResultSummary {
        succeeded: result.status == RunStatus::Succeeded,
        input: usage.input_tokens.unwrap_or(0),
        output: usage.output_tokens.unwrap_or(0),
    };
    (summary, result.trace_id)
}

#[derive(Debug)]
struct RunResultSummary {
    succeeded: bool,
    input: u64,
    output: u64,
}

/// Runs `range` ([`PARALLEL`] at a time) and adds up their usage; returns one successful run's
/// trace id and model.
async fn batch(
    range: std::ops::Range<usize>,
    endpoint: &str,
    ok: &Arc<openai_replay::ReplayServer>,
    failing: &Arc<openai_replay::ReplayServer>,
) -> (Totals, Option<(String, String)>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for i in range {
        let (limit, endpoint, ok, failing) = (
            limit.clone(),
            endpoint.to_owned(),
            ok.clone(),
            failing.clone(),
        );
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            (i, one_run(i, &endpoint, &ok, &failing).await)
        });
    }
    let mut totals = Totals::default();
    let mut sample = None;
    while let Some(done) = set.join_next().await {
        let (i, (run, trace_id)) = done.expect("a run task panicked");
        totals.input += run.input;
        totals.output += run.output;
        if run.succeeded {
            totals.succeeded += 1;
            if sample.is_none() {
                sample = trace_id.map(|t| (t, MODELS[i % MODELS.len()].to_owned()));
            }
        } else {
            totals.failed += 1;
        }
    }
    (totals, sample)
}

/// Waits until Prometheus's input and output token sums are exactly `want`.
async fn wait_for_totals(backends: &Backends, want: Totals) {
    let query = |token_type: &str| {
        format!(r#"sum(gen_ai_client_token_usage_sum{{gen_ai_token_type="{token_type}"}})"#)
    };
    let (input_q, output_q) = (query("input"), query("output"));
    let seen = testenv::wait::until_ok("the token totals in Prometheus", SETTLE, || async {
        let input = backends.query(&input_q).await.map_err(|e| e.to_string())?;
        let output = backends.query(&output_q).await.map_err(|e| e.to_string())?;
        let value = |s: &[testenv::backends::Sample]| s.first().map(|s| s.value);
        let got = (value(&input), value(&output));
        if got == (Some(want.input as f64), Some(want.output as f64)) {
            Ok(got)
        } else {
            Err(format!(
                "input {:?}, output {:?}; want {} and {}",
                got.0, got.1, want.input, want.output
            ))
        }
    })
    .await;
    if let Err(e) = seen {
        panic!(
            "{e}\npipeline log: {}",
            backends.dir().join("pipeline.log").display()
        );
    }
}

/// Series per metric name among the runs' metrics.
async fn series_per_metric(backends: &Backends) -> BTreeMap<String, f64> {
    backends
        .query(&format!("count by (__name__) ({RUN_METRICS})"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            let name = s.labels["__name__"].as_str().unwrap().to_owned();
            (name, s.value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_reach_prometheus_and_jaeger_through_the_reference_pipelines() {
    let logs_backend = collector().await;
    let backends = Backends::start(Some(&logs_backend.http_endpoint()))
        .await
        .unwrap_or_else(|e| panic!("cannot start Prometheus, Jaeger and the pipeline: {e}"));
    let ok = Arc::new(replay(ReplayConfig::new().with_api_key(KEY)).await);
    let failing = Arc::new(
        replay(
            ReplayConfig::new().with_api_key(KEY).with_faults(
                Faults::fail_first(u32::MAX)
                    .with_status(429)
                    .with_retry_after(Duration::from_millis(10)),
            ),
        )
        .await,
    );
    let endpoint = backends.otlp_grpc_endpoint();

    // N runs: the totals match and the series exist.
    let (first, sample) = batch(0..N, &endpoint, &ok, &failing).await;
    assert!(first.succeeded > 0 && first.failed > 0, "{first:?}");
    assert!(first.input > 0 && first.output > 0, "{first:?}");
    wait_for_totals(&backends, first).await;
    let after_n = series_per_metric(&backends).await;
    for metric in [
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_token_usage_bucket",
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_client_generation_choices_total",
    ] {
        assert!(
            after_n.contains_key(metric),
            "{metric} is not in Prometheus: {after_n:?}"
        );
    }

    // 2N runs: the totals are the sums over all runs, the series did not grow.
    let (second, _) = batch(N..2 * N, &endpoint, &ok, &failing).await;
    let all = Totals {
        input: first.input + second.input,
        output: first.output + second.output,
        succeeded: first.succeeded + second.succeeded,
        failed: first.failed + second.failed,
    };
    wait_for_totals(&backends, all).await;
    let successes = backends
        .query(r#"sum(gen_ai_client_operation_duration_seconds_count{error_type=""})"#)
        .await
        .unwrap();
    assert_eq!(
        successes.first().map(|s| s.value),
        Some(all.succeeded as f64),
        "successful operations counted once per run"
    );
    let after_2n = series_per_metric(&backends).await;
    assert_eq!(
        after_2n,
        after_n,
        "series per metric after {} runs vs after {N}",
        2 * N
    );
    // Bounded by the combinations, and no per-run label survived.
    let labels = backends
        .query("group by (k8s_namespace_name, team, gen_ai_request_model, instance, k8s_pod_name, llmjob_uid) (gen_ai_client_token_usage_sum)")
        .await
        .unwrap();
    assert!(!labels.is_empty());
    for sample in &labels {
        for per_run in ["k8s_pod_name", "llmjob_uid"] {
            assert!(
                !sample.labels.contains_key(per_run),
                "{per_run} reached Prometheus: {:?}",
                sample.labels
            );
        }
        assert!(
            sample.labels.get("instance").is_none_or(|v| v == ""),
            "{:?}",
            sample.labels
        );
        assert!(
            sample.labels.contains_key("k8s_namespace_name") && sample.labels.contains_key("team")
        );
    }
    assert!(
        labels.len() <= NAMESPACES.len() * MODELS.len() * TEAMS.len(),
        "{labels:?}"
    );

    // Every query users are given returns data.
    let queries = queries_to_check();
    assert!(
        !queries.is_empty(),
        "no PromQL found in the README, dashboards or rules"
    );
    let mut empty = Vec::new();
    for (origin, query) in &queries {
        match backends.query(query).await {
            Ok(samples) if !samples.is_empty() => {}
            Ok(_) => empty.push(format!("{origin}: {query} returned no data")),
            Err(e) => empty.push(format!("{origin}: {e}")),
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    // Jaeger: the run's trace by its id, as a tree.
    let (trace_id, model) = sample.expect("a successful run with a trace id");
    let trace = testenv::wait::until_ok("the trace in Jaeger", SETTLE, || async {
        let trace = backends.trace(&trace_id).await.map_err(|e| e.to_string())?;
        let spans = trace["spans"].as_array().map(Vec::len).unwrap_or(0);
        if spans >= 3 {
            Ok(trace)
        } else {
            Err(format!("{spans} spans so far"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_tree(&trace, &format!("chat {model}"));

    // The log records went on to the logs backend.
    logs_backend
        .wait_for(SETTLE, |t| {
            t.logs_for_trace(&trace_id).iter().find_map(|l| {
                l.body_str()
                    .filter(|b| b.starts_with("job finished"))
                    .map(str::to_owned)
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    backends.shutdown().await.unwrap();
}

/// Asserts the Jaeger trace is `llm_job.workflow → openai_call.task → <chat>`, each a child of
/// the one before (Jaeger's `CHILD_OF` references), the root without a parent in the trace.
fn assert_tree(trace: &serde_json::Value, chat: &str) {
    let spans = trace["spans"].as_array().unwrap();
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s["operationName"] == name)
            .unwrap_or_else(|| {
                let names: Vec<_> = spans.iter().map(|s| s["operationName"].clone()).collect();
                panic!("no span {name:?} in Jaeger's trace: {names:?}")
            })
    };
    let parent = |span: &serde_json::Value| {
        span["references"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["refType"] == "CHILD_OF")
            .map(|r| r["spanID"].as_str().unwrap().to_owned())
    };
    let (workflow, task, call) = (
        by_name("llm_job.workflow"),
        by_name("openai_call.task"),
        by_name(chat),
    );
    assert_eq!(
        parent(workflow),
        None,
        "the workflow is the root: {workflow}"
    );
    assert_eq!(parent(task).as_deref(), workflow["spanID"].as_str());
    assert_eq!(parent(call).as_deref(), task["spanID"].as_str());
    let process = &trace["processes"][workflow["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], "llm-batch", "{process}");
}

/// Every PromQL query users are given that reads the runs' metrics (`gen_ai_*`): the pipeline
/// README's, the chart's dashboards' and its alert rules' ([`testenv::promql`]). The others read
/// the operator's own metrics, scraped from the operator: `operator/tests/backends.rs` runs those.
fn queries_to_check() -> Vec<(String, String)> {
    testenv::promql::user_queries(&testenv::tools::workspace_root())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|q| q.promql.contains("gen_ai_"))
        .map(|q| (q.origin, q.promql))
        .collect()
}

#[test]
fn rules_are_rendered_with_their_enable_flag() {
    // A chart shaped like the operator's: the PrometheusRule only renders with its flag set.
    let chart = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = chart.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Chart.yaml",
        "apiVersion: v2\nname: rules-probe\nversion: 0.1.0\n",
    );
    write("values.yaml", "alerts:\n  enabled: false\n");
    let template = "{{- if .Values.alerts.enabled }}\napiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: x\nspec:\n  groups:\n    - name: g\n      rules:\n        - alert: TooManyFailures\n          expr: sum(rate(gen_ai_client_operation_duration_seconds_count{error_type!=\"\"}[5m])) > 0.1\n        - record: not_an_alert\n          expr: vector(1)\n{{- end }}\n";
    write("templates/rules.yaml", template);
    let path = chart.path().join("templates/rules.yaml");
    let flag = testenv::promql::enable_flag(template).unwrap();
    assert_eq!(flag, "alerts.enabled");
    let rules = testenv::promql::rendered_alerts(chart.path(), &path, &flag).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, "TooManyFailures");
    assert_eq!(
        testenv::promql::without_threshold(&rules[0].1),
        r#"sum(rate(gen_ai_client_operation_duration_seconds_count{error_type!=""}[5m]))"#
    );
}
