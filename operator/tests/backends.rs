//! LlmJobs run by the real operator (its pods on the shared real node), exporting through the reference collector pipelines of `manifests/observability/` to a real
//! Prometheus and Jaeger (`testenv::backends`), with Prometheus also scraping the operator's
//! `/metrics`. Checks that the token totals in Prometheus equal the sum of the LlmJobs'
//! `status.result.usage`, that Jaeger holds a run's trace by `status.traceId`, and that every
//! query users are given over the operator's own metrics (the pipeline README's, the chart's
//! dashboards' and alert rules', `testenv::promql`) returns data (an `absent(...)` alert: its
//! selector does), with one LlmJob whose Secret is missing so that the error series exist; the
//! queries over the runs' metrics are `job-runner/tests/backends.rs`'s. One LlmJob fails (its key is
//! refused) and one waits for a missing Secret, so that the failure and waiting series exist.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use llmjob_crds::v1alpha1::Phase;
use openai_replay::ReplayConfig;
use testenv::backends::Backends;
use testenv::node::services::{self, HostPort};

/// How long Prometheus and Jaeger may take to show what the runs exported (the pipeline forwards
/// metrics every 15 s): a bound against a hang.
const SETTLE: Duration = Duration::from_secs(90);
/// The operator's scrape job in Prometheus.
const JOB: &str = "llmjob-operator";

#[tokio::test(flavor = "multi_thread")]
async fn llmjobs_and_the_operator_reach_prometheus_and_jaeger() {
    let env = env().await;
    let ns = namespace_with_secret(env, "backends").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let op = Operator::start(env, &ns, &[]).await;
    let node = env.node().expect("env() starts a real node");
    let backends = Backends::start_scraping(
        &testenv::tools::target_dir().join("testenv-logs"),
        node.host_ip(),
        None,
        &[(JOB, op.http)],
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start Prometheus, Jaeger and the pipeline: {e}"));
    // The pods reach the pipeline through a Service, as they would reach a user's collector.
    let std::net::IpAddr::V4(host) = node.host_ip() else {
        panic!("the node's host address is not IPv4");
    };
    services::host_service(
        &env.client(),
        &ns,
        "otlp-pipeline",
        None,
        host,
        &[HostPort {
            name: "otlp-grpc",
            protocol: "TCP",
            port: 4317,
            target: backends.otlp_grpc_addr().port(),
        }],
    )
    .await
    .unwrap_or_else(|e| panic!("exposing the pipeline: {e}"));
    node.wait_for_service(&env.client(), &ns, "otlp-pipeline", 4317, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!("http://otlp-pipeline.{ns}.svc:4317");

    // An LlmJob that waits (its Secret is missing) and one that fails (the server refuses its
    // key), so that the Pending and Failed series exist.
    let mut broken = llmjob_json("no-secret", &replay.base_url());
    broken["spec"]["openai"]["apiKeySecretRef"]["name"] = serde_json::json!("missing");
    create_llmjob(env, &ns, broken).await;
    let wrong: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-key"},
        "stringData": {"api-key": "sk-not-the-replay-servers-key"}
    }))
    .expect("secret");
    kube::Api::namespaced(env.client(), &ns)
        .create(&kube::api::PostParams::default(), &wrong)
        .await
        .expect("creating the Secret");
    let mut refused = llmjob_json("refused", &replay.base_url());
    refused["spec"]["openai"]["apiKeySecretRef"]["name"] = serde_json::json!("wrong-key");
    refused["spec"]["telemetry"] = serde_json::json!({"endpoint": endpoint});
    create_llmjob(env, &ns, refused).await;

    let names: Vec<String> = (0..3).map(|i| format!("usage-{i}")).collect();
    for (name, team) in names.iter().zip(["nlp", "search", "nlp"]) {
        let mut manifest = llmjob_json(name, &replay.base_url());
        manifest["spec"]["telemetry"] = serde_json::json!({
            "endpoint": endpoint,
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
    let mut queries = testenv::promql::user_queries(&testenv::tools::workspace_root())
        .unwrap_or_else(|e| panic!("{e}"));
    queries.retain(|q| !q.promql.contains("gen_ai_"));
    // Every query returns data: the error counters start at 0, the alerts are evaluated without
    // their thresholds, and the runs above leave every phase's series.
    wait_for_phase(env, &ns, "refused", Phase::Failed).await;
    let mut failures = Vec::new();
    for q in &queries {
        // `absent(x)` is empty while x exists: check x.
        let promql = absent_selector(&q.promql).unwrap_or(&q.promql);
        let found = testenv::wait::until_ok(&q.origin, SETTLE, || async {
            match backends.query(promql).await {
                Ok(samples) if !samples.is_empty() => Ok(()),
                Ok(_) => Err(format!("{promql} returned no data")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        if let Err(e) = found {
            failures.push(format!("{}: {e}", q.origin));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

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

/// `x` of an expression `absent(x)` (whole), if it is one.
fn absent_selector(promql: &str) -> Option<&str> {
    promql
        .trim()
        .strip_prefix("absent(")
        .and_then(|rest| rest.strip_suffix(')'))
}

#[test]
fn absent_alerts_check_their_selector() {
    assert_eq!(
        absent_selector(r#"absent(up{job="x"})"#),
        Some(r#"up{job="x"}"#)
    );
    assert_eq!(absent_selector("up == 0"), None);
}
