//! `cargo xtask demo --backends`: what the run left in a real Prometheus and Jaeger, fed by the
//! demo's collector through the reference pipelines of `manifests/observability/`
//! ([`testenv::backends`]): the current values of the usage dashboard's key panels, and the
//! run's trace as Jaeger's query API returns it. Rendering is pure ([`trace_tree`]); the waits
//! and queries are here too, as the demo's only I/O with the backends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use testenv::backends::{Backends, Sample};

/// How long to wait for the run's metrics (the pipeline forwards every 15 s) and its trace.
const WAIT: Duration = Duration::from_secs(90);

/// The usage dashboard's key panels, as current values: title and PromQL over the cumulative
/// series (a single run has one point per series, so there is no rate yet).
const PANELS: &[(&str, &str)] = &[
    (
        "tokens by model, namespace and type",
        "sum by (gen_ai_request_model, k8s_namespace_name, gen_ai_token_type) (gen_ai_client_token_usage_sum)",
    ),
    (
        "requests by model and error.type",
        "sum by (gen_ai_request_model, error_type) (gen_ai_client_operation_duration_seconds_count)",
    ),
    (
        "p50 operation duration (s)",
        "histogram_quantile(0.5, sum by (le, gen_ai_request_model) (gen_ai_client_operation_duration_seconds_bucket))",
    ),
    (
        "p95 operation duration (s)",
        "histogram_quantile(0.95, sum by (le, gen_ai_request_model) (gen_ai_client_operation_duration_seconds_bucket))",
    ),
    (
        "choices by finish reason",
        "sum by (gen_ai_response_finish_reason) (gen_ai_client_generation_choices_total)",
    ),
];

/// Waits for the run's token usage in Prometheus, then prints each panel's current values.
pub async fn print_panels(backends: &Backends) -> Result<()> {
    let (_, first) = PANELS[0];
    testenv::wait::until_ok("the run's token usage in Prometheus", WAIT, || async {
        match backends.query(first).await {
            Ok(samples) if !samples.is_empty() => Ok(()),
            Ok(_) => Err("no series yet".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .context("Prometheus did not receive the run's metrics")?;
    for (title, promql) in PANELS {
        let samples = backends
            .query(promql)
            .await
            .with_context(|| format!("querying {promql}"))?;
        print!("{}", panel(title, &samples));
    }
    Ok(())
}

/// One panel: its title, then a line per series (its labels, its value).
fn panel(title: &str, samples: &[Sample]) -> String {
    let mut out = format!("{title}\n");
    if samples.is_empty() {
        out.push_str("  (no data)\n");
    }
    for sample in samples {
        let labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        let labels = if labels.is_empty() {
            "total".to_owned()
        } else {
            labels.join(" ")
        };
        let _ = writeln!(out, "  {labels:<72} {}", format_value(sample.value));
    }
    out
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// Waits until Jaeger holds the whole trace: the operator's `llmjob.launch` span (exported on
/// the operator's own batch schedule, so it may arrive after the run's), the run's workflow and its
/// `chat` span; then returns it.
pub async fn fetch_trace(backends: &Backends, trace_id: &str) -> Result<serde_json::Value> {
    testenv::wait::until_ok("the run's trace in Jaeger", WAIT, || async {
        let trace = backends.trace(trace_id).await.map_err(|e| e.to_string())?;
        let names = span_names(&trace);
        if names.iter().any(|n| n == "llmjob.launch")
            && names.iter().any(|n| n == "llm_job.workflow")
            && names.iter().any(|n| n.starts_with("chat"))
        {
            Ok(trace)
        } else {
            Err(format!("spans so far: {names:?}"))
        }
    })
    .await
    .context("Jaeger did not receive the run's trace")
}

fn span_names(trace: &serde_json::Value) -> Vec<String> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["operationName"].as_str().map(str::to_owned))
        .collect()
}

/// The trace as Jaeger returned it (`/api/traces/{id}`), as an indented tree: each span with its
/// service, duration and the spans it links to (`FOLLOWS_FROM` references, e.g. the operator's
/// launch span).
pub fn trace_tree(trace: &serde_json::Value) -> String {
    let spans: Vec<&serde_json::Value> = trace["spans"].as_array().into_iter().flatten().collect();
    let id = |s: &serde_json::Value| s["spanID"].as_str().unwrap_or_default().to_owned();
    let parent = |s: &serde_json::Value| {
        s["references"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["refType"] == "CHILD_OF" && r["traceID"] == s["traceID"])
            .and_then(|r| r["spanID"].as_str())
            .map(str::to_owned)
    };
    let known: Vec<String> = spans.iter().map(|s| id(s)).collect();
    let mut children: BTreeMap<Option<String>, Vec<&serde_json::Value>> = BTreeMap::new();
    for span in &spans {
        let p = parent(span).filter(|p| known.contains(p));
        children.entry(p).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s["startTime"].as_u64().unwrap_or(0));
    }
    let mut out = format!(
        "trace {} ({} spans)\n",
        trace["traceID"].as_str().unwrap_or_default(),
        spans.len()
    );
    let mut stack: Vec<(usize, &serde_json::Value)> = children
        .get(&None)
        .into_iter()
        .flatten()
        .rev()
        .map(|s| (0, *s))
        .collect();
    while let Some((depth, span)) = stack.pop() {
        let service =
            trace["processes"][span["processID"].as_str().unwrap_or_default()]["serviceName"]
                .as_str()
                .unwrap_or_default();
        let micros = span["duration"].as_u64().unwrap_or(0);
        let _ = write!(
            out,
            "{:indent$}{}  [{service}] {:.1} ms",
            "",
            span["operationName"].as_str().unwrap_or_default(),
            micros as f64 / 1000.0,
            indent = depth * 2 + 2
        );
        for link in span["references"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["refType"] == "FOLLOWS_FROM")
        {
            let _ = write!(
                out,
                "  (linked to span {} of trace {})",
                link["spanID"].as_str().unwrap_or_default(),
                link["traceID"].as_str().unwrap_or_default()
            );
        }
        out.push('\n');
        if let Some(kids) = children.get(&Some(id(span))) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_tree_nests_children_and_shows_links() {
        let trace = serde_json::json!({
            "traceID": "t1",
            "processes": {"p1": {"serviceName": "llm-job"}},
            "spans": [
                {"traceID": "t1", "spanID": "c", "operationName": "chat gpt-4o-mini", "processID": "p1",
                 "startTime": 3, "duration": 1500, "references": [{"refType": "CHILD_OF", "traceID": "t1", "spanID": "b"}]},
                {"traceID": "t1", "spanID": "a", "operationName": "llm_job.workflow", "processID": "p1",
                 "startTime": 1, "duration": 3000,
                 "references": [{"refType": "FOLLOWS_FROM", "traceID": "t0", "spanID": "l"}]},
                {"traceID": "t1", "spanID": "b", "operationName": "openai_call.task", "processID": "p1",
                 "startTime": 2, "duration": 2000, "references": [{"refType": "CHILD_OF", "traceID": "t1", "spanID": "a"}]},
            ]
        });
        let tree = trace_tree(&trace);
        let lines: Vec<&str> = tree.lines().collect();
        assert_eq!(lines[0], "trace t1 (3 spans)");
        assert!(
            lines[1].starts_with("  llm_job.workflow  [llm-job] 3.0 ms"),
            "{tree}"
        );
        assert!(lines[1].contains("linked to span l of trace t0"), "{tree}");
        assert!(lines[2].starts_with("    openai_call.task"), "{tree}");
        assert!(
            lines[3].starts_with("      chat gpt-4o-mini  [llm-job] 1.5 ms"),
            "{tree}"
        );
    }

    #[test]
    fn panels_show_labels_and_values() {
        let sample = Sample {
            labels: serde_json::from_value(serde_json::json!({"gen_ai_token_type": "input"}))
                .unwrap(),
            value: 23.0,
        };
        let text = panel("tokens", &[sample]);
        assert!(
            text.starts_with("tokens\n  gen_ai_token_type=input"),
            "{text}"
        );
        assert!(text.trim_end().ends_with(" 23"), "{text}");
        assert!(panel("x", &[]).contains("(no data)"));
    }
}
