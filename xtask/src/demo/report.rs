//! Renders what the collector received for one run, for people: the trace as a waterfall (names,
//! offsets, durations, nesting, key attributes), the GenAI metrics, and the log records that carry
//! the trace id. Pure: it reads a [`Telemetry`] snapshot and returns text.

use std::fmt::Write as _;

use testenv::telemetry::{AttrValue, Metric, Span, StatusCode, Telemetry};

/// Width of the waterfall's bar column.
const BAR_WIDTH: usize = 32;

/// Attributes worth showing next to a span, in this order (absent ones are skipped).
const KEY_ATTRIBUTES: &[&str] = &[
    "llmjob.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.id",
    "server.address",
    "llmjob.attempts",
    "http.response.status_code",
    "error.type",
];

/// Resource attributes shown once in the trace header.
const KEY_RESOURCE: &[&str] = &[
    "service.name",
    "deployment.environment.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.job.name",
    "k8s.node.name",
];

/// Renders the trace `trace_id` as a waterfall, or says that no span of it was received.
pub fn waterfall(telemetry: &Telemetry, trace_id: &str) -> String {
    let spans = telemetry.trace(trace_id);
    let mut out = String::new();
    let Some(first) = spans.first() else {
        let _ = writeln!(out, "no span of trace {trace_id} reached the collector");
        return out;
    };
    let start = first.start_unix_nano;
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
    let total = end.saturating_sub(start).max(1);

    let _ = writeln!(
        out,
        "trace {trace_id}  ({} spans, {})",
        spans.len(),
        millis(total)
    );
    // Roots: spans whose parent was not received (the operator's launch span, or a TRACEPARENT
    // parent that lives elsewhere).
    let mut rows = Vec::new();
    for root in spans.iter().filter(|s| telemetry.parent_of(s).is_none()) {
        collect_rows(telemetry, root, 0, &mut rows);
    }
    let name_width = rows
        .iter()
        .map(|(depth, s)| depth * 3 + s.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    for (depth, span) in &rows {
        let indent = if *depth == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(depth - 1))
        };
        let label = format!("{indent}{}", span.name);
        let offset = span.start_unix_nano.saturating_sub(start);
        let duration = span.end_unix_nano.saturating_sub(span.start_unix_nano);
        let _ = writeln!(
            out,
            "  {label:<name_width$}  {:<8}  {:>9}  {:>9}  {}",
            kind(span),
            format!("+{}", millis(offset)),
            millis(duration),
            bar(offset, duration, total),
        );
        let service = span.resource.str("service.name").unwrap_or("?");
        let mut details = vec![format!("service={service}")];
        details.extend(
            KEY_ATTRIBUTES
                .iter()
                .filter_map(|k| span.attributes.get(k).map(|v| format!("{k}={}", show(v)))),
        );
        if span.status.code == StatusCode::Error {
            details.push(format!("status=ERROR {:?}", span.status.message));
        }
        let pad = " ".repeat(2 + depth * 3 + 3);
        let _ = writeln!(out, "{pad}{}", details.join("  "));
    }
    // Resource attributes of the runner's spans (the workflow span), once.
    if let Some(run) = spans.iter().find(|s| s.name == "llm_job.workflow") {
        let resource: Vec<String> = KEY_RESOURCE
            .iter()
            .filter_map(|k| run.resource.str(k).map(|v| format!("{k}={v}")))
            .collect();
        let _ = writeln!(out, "  resource of the run: {}", resource.join("  "));
    }
    out
}

fn collect_rows<'a>(
    telemetry: &'a Telemetry,
    span: &'a Span,
    depth: usize,
    rows: &mut Vec<(usize, &'a Span)>,
) {
    rows.push((depth, span));
    for child in telemetry.children_of(span) {
        collect_rows(telemetry, child, depth + 1, rows);
    }
}

fn kind(span: &Span) -> String {
    format!("{:?}", span.kind).to_uppercase()
}

fn millis(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn bar(offset: u64, duration: u64, total: u64) -> String {
    let scale = |n: u64| ((n as f64 / total as f64) * BAR_WIDTH as f64).round() as usize;
    let lead = scale(offset).min(BAR_WIDTH - 1);
    let len = scale(duration).clamp(1, BAR_WIDTH - lead);
    format!("{}{}", " ".repeat(lead), "█".repeat(len))
}

fn show(value: &AttrValue) -> String {
    match value {
        AttrValue::String(s) => s.clone(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Double(d) => format!("{d}"),
        AttrValue::Array(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(","))
        }
        AttrValue::Bytes(b) => format!("<{} bytes>", b.len()),
        AttrValue::KvList(kv) => format!(
            "{{{}}}",
            kv.iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        AttrValue::Empty => String::new(),
    }
}

/// The GenAI metric names the runner exports.
const GENAI_METRICS: &[&str] = &[
    "gen_ai.client.token.usage",
    "gen_ai.client.operation.duration",
    "gen_ai.client.operation.time_to_first_chunk",
    "gen_ai.client.generation.choices",
];

/// Renders the latest export of each GenAI metric that came from the same run (same
/// `service.instance.id`) as the trace's workflow span.
pub fn metrics(telemetry: &Telemetry, trace_id: &str) -> String {
    let instance = telemetry
        .trace(trace_id)
        .into_iter()
        .find(|s| s.name == "llm_job.workflow")
        .and_then(|s| s.resource.str("service.instance.id").map(str::to_owned));
    let mut out = String::new();
    for name in GENAI_METRICS {
        let latest = telemetry.metrics_named(name).into_iter().rev().find(|m| {
            instance.is_none() || m.resource.str("service.instance.id") == instance.as_deref()
        });
        if let Some(metric) = latest {
            render_metric(&mut out, metric);
        }
    }
    if out.is_empty() {
        out.push_str("no GenAI metric of this run reached the collector\n");
    }
    out
}

fn render_metric(out: &mut String, metric: &Metric) {
    let _ = writeln!(out, "  {} [{}]", metric.name, metric.unit);
    if let Some(points) = metric.histogram_points() {
        for p in points {
            let mean = p.sum.map(|s| s / p.count.max(1) as f64);
            let _ = writeln!(
                out,
                "    count={} sum={} mean={}  {}",
                p.count,
                p.sum
                    .map(|s| format!("{s:.4}"))
                    .unwrap_or_else(|| "-".into()),
                mean.map(|m| format!("{m:.4}"))
                    .unwrap_or_else(|| "-".into()),
                point_attributes(&p.attributes),
            );
        }
    } else if let Some(points) = metric.number_points() {
        for p in points {
            let _ = writeln!(
                out,
                "    value={}  {}",
                p.value.as_f64(),
                point_attributes(&p.attributes)
            );
        }
    }
}

fn point_attributes(attributes: &testenv::telemetry::Attributes) -> String {
    let shown = [
        "gen_ai.token.type",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.finish_reason",
        "error.type",
    ];
    shown
        .iter()
        .filter_map(|k| attributes.get(k).map(|v| format!("{k}={}", show(v))))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Renders the log records that carry `trace_id`, with their span ids.
pub fn logs(telemetry: &Telemetry, trace_id: &str) -> String {
    let mut records = telemetry.logs_for_trace(trace_id);
    records.sort_by_key(|l| l.time_unix_nano.max(l.observed_time_unix_nano));
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no log record of this trace reached the collector\n");
    }
    for record in records {
        let attributes: Vec<String> = record
            .attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("code.") && !k.starts_with("log."))
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect();
        let _ = writeln!(
            out,
            "  {:<5} {}  trace={} span={}  {}",
            record.severity_text,
            record
                .body_str()
                .or(record.event_name.as_deref())
                .unwrap_or(""),
            record.trace_id.as_deref().unwrap_or("-"),
            record.span_id.as_deref().unwrap_or("-"),
            attributes.join(" "),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    fn sample() -> Telemetry {
        let spans = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"llm-job"}},{"key":"service.instance.id","value":{"stringValue":"run-1"}},{"key":"k8s.pod.name","value":{"stringValue":"haiku-abc"}}]},"scopeSpans":[{"scope":{"name":"llmjob-runner"},"spans":[
{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00000000000000a1","parentSpanId":"00000000000000f0","name":"llm_job.workflow","kind":1,"startTimeUnixNano":"1000000000","endTimeUnixNano":"1100000000","attributes":[]},
{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00000000000000a2","parentSpanId":"00000000000000a1","name":"openai_call.task","kind":1,"startTimeUnixNano":"1010000000","endTimeUnixNano":"1090000000","attributes":[{"key":"llmjob.attempts","value":{"intValue":"1"}}]},
{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00000000000000a3","parentSpanId":"00000000000000a2","name":"chat gpt-4o-mini","kind":3,"startTimeUnixNano":"1020000000","endTimeUnixNano":"1080000000","attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":"23"}},{"key":"gen_ai.response.finish_reasons","value":{"arrayValue":{"values":[{"stringValue":"stop"}]}}}]}
]}]}]}
"#;
        let metrics = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.instance.id","value":{"stringValue":"run-1"}}]},"scopeMetrics":[{"scope":{"name":"llmjob-runner"},"metrics":[{"name":"gen_ai.client.token.usage","unit":"{token}","histogram":{"aggregationTemporality":2,"dataPoints":[{"attributes":[{"key":"gen_ai.token.type","value":{"stringValue":"input"}}],"count":"1","sum":23,"bucketCounts":["0","1"],"explicitBounds":[16]}]}}]}]}]}
"#;
        let logs = r#"{"resourceLogs":[{"resource":{"attributes":[]},"scopeLogs":[{"scope":{"name":"llmjob-runner"},"logRecords":[{"timeUnixNano":"1050000000","severityNumber":9,"severityText":"INFO","body":{"stringValue":"job finished"},"attributes":[{"key":"gen_ai.usage.output_tokens","value":{"intValue":"8"}}],"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00000000000000a1"}]}]}]}
"#;
        // One export request per line, as the collector's file exporter writes them.
        let one_line = |s: &str| format!("{}\n", s.replace('\n', ""));
        let text = format!("{}{}{}", one_line(spans), one_line(metrics), one_line(logs));
        match Telemetry::parse_lines("sample", &text) {
            Ok(t) => t,
            Err(e) => panic!("sample does not parse: {e}"),
        }
    }

    #[test]
    fn waterfall_nests_spans_and_shows_key_attributes() {
        let text = waterfall(&sample(), TRACE);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!("trace {TRACE}  (3 spans, 100.0 ms)")),
            "{text}"
        );
        assert!(
            lines[1].trim_start().starts_with("llm_job.workflow"),
            "{text}"
        );
        assert!(lines[3].contains("└─ openai_call.task"), "{text}");
        assert!(
            lines[5].contains("   └─ chat gpt-4o-mini") && lines[5].contains("CLIENT"),
            "{text}"
        );
        assert!(text.contains("gen_ai.usage.input_tokens=23"), "{text}");
        assert!(
            text.contains("gen_ai.response.finish_reasons=[stop]"),
            "{text}"
        );
        assert!(text.contains("llmjob.attempts=1"), "{text}");
        assert!(text.contains("k8s.pod.name=haiku-abc"), "{text}");
    }

    #[test]
    fn unknown_trace_is_said_plainly() {
        assert!(
            waterfall(&sample(), "ffffffffffffffffffffffffffffffff").contains("no span of trace")
        );
    }

    #[test]
    fn metrics_and_logs_of_the_run() {
        let t = sample();
        let m = metrics(&t, TRACE);
        assert!(m.contains("gen_ai.client.token.usage [{token}]"), "{m}");
        assert!(
            m.contains("count=1 sum=23.0000") && m.contains("gen_ai.token.type=input"),
            "{m}"
        );
        let l = logs(&t, TRACE);
        assert!(
            l.contains("INFO  job finished") && l.contains(&format!("trace={TRACE}")),
            "{l}"
        );
        assert!(l.contains("gen_ai.usage.output_tokens=8"), "{l}");
    }
}
