//! LlmJobs run by the real operator (on the shared control plane, pods as local processes),
//! exporting through the reference collector pipelines of `manifests/observability/` to a real
//! Prometheus and Jaeger (`testenv::backends`), with Prometheus also scraping the operator's
//! `/metrics`. Checks that the token totals in Prometheus equal the sum of the LlmJobs'
//! `status.result.usage`, that Jaeger holds a run's trace by `status.traceId`, and that every
//! query users are given over the operator's own metrics (the pipeline README's, the chart's
//! dashboards' and alert rules', `testenv::promql`) returns data; the queries over the runs'
//! metrics are `job-runner/tests/backends.rs`'s.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use llmjob_crds::v1alpha1::Phase;
use openai_replay::{ReplayConfig, ReplayServer};
use testenv::backends::Backends;

/// How long Prometheus and Jaeger may take to show what the runs exported (the pipeline forwards
/// metrics every 15 s): a bound against a hang.
const SETTLE: Duration = Duration::from_secs(90);
/// The operator's scrape job in Prometheus.
const JOB: &str = "llmjob-operator";

#[tokio::test(flavor = "multi_thread")]
async fn llmjobs_and_the_operator_reach_prometheus_and_jaeger() {
    let env = env().await;
    let ns = namespace_with_secret(env, "backends").await;
    let replay = ReplayServer::start(ReplayConfig::new().with_api_key(API_KEY))
        .await
        .expect("replay server");
    let op = Operator::start(env, &ns, &[]).await;
    let backends = Backends::start_scraping(
        &testenv::tools::target_dir().join("testenv-logs"),
        None,
        &[(JOB, op.http)],
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start Prometheus, Jaeger and the pipeline: {e}"));

    let names: Vec<String> = (0..3).map(|i| format!("usage-{i}")).collect();
    for (name, team) in names.iter().zip(["nlp", "search", "nlp"]) {
        let mut manifest = llmjob_json(name, &replay.base_url());
        manifest["spec"]["telemetry"] = serde_json::json!({
            "endpoint": backends.otlp_grpc_endpoint(),
            "resourceAttributes": {"team": team},
        });
        create_llmjob(env, &ns, manifest).await;
    }
    let (mut input, mut output, mut trace_id) = (0u64, 0u64, None);
    for name in &names {
        let done = wait_for_phase(env, &ns, name, Phase::Succeeded).await;
        let status = done.status.expect("status");
        let usage = status
            .result
            .and_then(|r| r.usage)
            .expect("status.result.usage");
        input += usage.input_tokens.expect("input tokens");
        output += usage.output_tokens.expect("output tokens");
        trace_id = trace_id.or(status.trace_id);
    }

    // The token totals of this namespace equal the LlmJobs' usage.
    let query = |token_type: &str| {
        format!(
            r#"sum(gen_ai_client_token_usage_sum{{k8s_namespace_name="{ns}",gen_ai_token_type="{token_type}"}})"#
        )
    };
    let want = (Some(input as f64), Some(output as f64));
    let backends = &backends;
    let value = |q: String| async move {
        backends
            .query(&q)
            .await
            .map(|s| s.first().map(|s| s.value))
            .map_err(|e| e.to_string())
    };
    testenv::wait::until_ok(
        "the LlmJobs' token totals in Prometheus",
        SETTLE,
        || async {
            let got = (value(query("input")).await?, value(query("output")).await?);
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}, want {want:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; backends in {}", backends.dir().display()));

    // Prometheus scrapes the operator.
    let up = format!(r#"up{{job="{JOB}"}} == 1"#);
    testenv::wait::until_ok("Prometheus scraping the operator", SETTLE, || async {
        match backends.query(&up).await {
            Ok(samples) if !samples.is_empty() => Ok(()),
            Ok(_) => Err("not up yet".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Every query over the operator's metrics returns data.
    let root = testenv::tools::workspace_root();
    let mut queries =
        testenv::promql::markdown_queries(&root.join("manifests/observability/README.md"))
            .unwrap_or_else(|e| panic!("{e}"));
    queries.extend(
        testenv::promql::chart_queries(&root.join("charts/llmjob-operator"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    queries.retain(|q| !q.promql.contains("gen_ai_"));
    for q in &queries {
        testenv::wait::until_ok(&q.origin, SETTLE, || async {
            match backends.query(&q.promql).await {
                Ok(samples) if !samples.is_empty() => Ok(()),
                Ok(_) => Err(format!("{} returned no data", q.promql)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    // Jaeger holds a run's trace by its status.traceId.
    let trace_id = trace_id.expect("status.traceId");
    let trace = testenv::wait::until_ok("the run's trace in Jaeger", SETTLE, || async {
        let trace = backends.trace(&trace_id).await.map_err(|e| e.to_string())?;
        let names: Vec<String> = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["operationName"].as_str().map(str::to_owned))
            .collect();
        if ["llm_job.workflow", "openai_call.task", "chat gpt-4o-mini"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
        {
            Ok(trace)
        } else {
            Err(format!("spans so far: {names:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trace["traceID"].as_str(), Some(trace_id.as_str()));

    op.stop().await;
}
