//! Unit tests of the reader on hand-written OTLP/JSON lines.

use super::*;

// Shapes as in the OTLP/JSON examples of opentelemetry-proto (examples/*.json), one request
// per line as the file exporter writes them.
const TRACES: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"root","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}},{"key":"n","value":{"intValue":"23"}},{"key":"ratio","value":{"doubleValue":0.5}},{"key":"ok","value":{"boolValue":true}},{"key":"models","value":{"arrayValue":{"values":[{"stringValue":"a"},{"stringValue":"b"}]}}},{"key":"raw","value":{"bytesValue":"aGk="}},{"key":"nested","value":{"kvlistValue":{"values":[{"key":"k","value":{"intValue":7}}]}}}],"status":{"code":2,"message":"boom"},"events":[{"timeUnixNano":"1544712660500000000","name":"exception","attributes":[{"key":"exception.type","value":{"stringValue":"E"}}]}]},{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000002","parentSpanId":"eee19b7ec3c1b174","name":"child","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":"1544712660100000000","endTimeUnixNano":"1544712660200000000","status":{}}]}]}]}
{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[{"traceId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","spanId":"0000000000000003","parentSpanId":"","name":"other","startTimeUnixNano":"1","endTimeUnixNano":"2","status":{"code":1}}]}]}]}
"#;

const METRICS: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeMetrics":[{"scope":{"name":"meter"},"metrics":[{"name":"my.counter","unit":"1","description":"I am a Counter","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"asDouble":5,"startTimeUnixNano":"1544712660300000000","timeUnixNano":"1544712660300000000","attributes":[{"key":"my.counter.attr","value":{"stringValue":"some value"}}]}]}},{"name":"my.gauge","unit":"1","gauge":{"dataPoints":[{"asInt":"10","timeUnixNano":"1544712660300000000"}]}},{"name":"my.histogram","unit":"s","histogram":{"aggregationTemporality":2,"dataPoints":[{"startTimeUnixNano":"1544712660300000000","timeUnixNano":"1544712660300000000","count":"2","sum":2.5,"bucketCounts":["1","1","0"],"explicitBounds":[1,2],"min":0,"max":2,"attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}],"exemplars":[{"asDouble":2,"timeUnixNano":"1544712660300000000","traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}},{"name":"my.exp","exponentialHistogram":{"dataPoints":[]}}]}]}]}
{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{"name":"meter"},"metrics":[{"name":"my.counter","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","dataPoints":[{"asInt":"9"}]}}]}]}]}
"#;

const LOGS: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeLogs":[{"scope":{"name":"my.library"},"logRecords":[{"timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000001","severityNumber":10,"severityText":"Information","traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","body":{"stringValue":"Example log record"},"eventName":"llmjob.run.finished","attributes":[{"key":"int.attribute","value":{"intValue":"10"}}]},{"severityNumber":"SEVERITY_NUMBER_ERROR","traceId":"","spanId":"","body":{"kvlistValue":{"values":[{"key":"a","value":{"boolValue":false}}]}}}]}]}]}
"#;

fn sample() -> Telemetry {
    let mut t = Telemetry::parse_lines("traces", TRACES).unwrap();
    t.extend_from_lines("metrics", METRICS).unwrap();
    t.extend_from_lines("logs", LOGS).unwrap();
    t
}

#[test]
fn spans_are_flattened_with_resource_scope_and_lowercase_ids() {
    let t = sample();
    assert_eq!(t.spans.len(), 3);
    let root = t.span_named("root").unwrap();
    assert_eq!(root.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(root.span_id, "eee19b7ec3c1b174");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.duration(), std::time::Duration::from_secs(1));
    assert_eq!(root.resource.str("service.name"), Some("my.service"));
    assert_eq!(root.scope_name, "my.library");
    assert_eq!(root.scope_version, "1.0.0");
    assert_eq!(root.status.code, StatusCode::Error);
    assert_eq!(root.status.message, "boom");
    let ev = root.event("exception").unwrap();
    assert_eq!(ev.time_unix_nano, 1_544_712_660_500_000_000);
    assert_eq!(ev.attributes.str("exception.type"), Some("E"));

    let child = t.span_named("child").unwrap();
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(child.status.code, StatusCode::Unset);
    assert_eq!(t.children_of(root), vec![child]);
    assert_eq!(t.parent_of(child), Some(root));
    assert_eq!(t.trace(&root.trace_id), vec![root, child]);

    let other = t.span_named("other").unwrap();
    assert_eq!(other.parent_span_id, None, "empty parent id means root");
    assert_eq!(other.kind, SpanKind::Unspecified);
    assert_eq!(other.status.code, StatusCode::Ok);
    assert!(other.resource.is_empty());
}

#[test]
fn every_attribute_type_is_decoded() {
    let t = sample();
    let a = &t.span_named("root").unwrap().attributes;
    assert_eq!(a.str("my.span.attr"), Some("some value"));
    assert_eq!(a.int("n"), Some(23));
    assert_eq!(a.double("ratio"), Some(0.5));
    assert_eq!(a.bool("ok"), Some(true));
    assert_eq!(a.str_array("models"), Some(vec!["a", "b"]));
    assert_eq!(a.get("raw"), Some(&AttrValue::Bytes(b"hi".to_vec())));
    match a.get("nested") {
        Some(AttrValue::KvList(inner)) => assert_eq!(inner.int("k"), Some(7)),
        other => panic!("nested: {other:?}"),
    }
    assert!(a.contains_key("ok"));
    assert!(!a.contains_key("missing"));
    assert_eq!(a.int("my.span.attr"), None, "no type coercion");
    assert_eq!(a.str_array("n"), None);
    assert_eq!(a.keys().next(), Some("my.span.attr"));
    assert_eq!(a.iter().count(), 7);
    assert_eq!(a.into_iter().count(), a.len());
}

#[test]
fn metrics_of_each_type() {
    let t = sample();
    assert_eq!(t.metrics.len(), 5);
    let exports = t.metrics_named("my.counter");
    assert_eq!(exports.len(), 2);
    match &exports[0].data {
        MetricData::Sum {
            temporality,
            monotonic,
            points,
        } => {
            assert_eq!(*temporality, Temporality::Delta);
            assert!(*monotonic);
            assert_eq!(points[0].value, NumberValue::Double(5.0));
            assert_eq!(
                points[0].attributes.str("my.counter.attr"),
                Some("some value")
            );
        }
        other => panic!("{other:?}"),
    }
    let latest = t.metric("my.counter").unwrap();
    assert_eq!(
        latest.resource.len(),
        0,
        "the second export has no resource"
    );
    match &latest.data {
        MetricData::Sum {
            temporality,
            monotonic,
            points,
        } => {
            assert_eq!(*temporality, Temporality::Cumulative);
            assert!(!*monotonic);
            assert_eq!(points[0].value.as_f64(), 9.0);
        }
        other => panic!("{other:?}"),
    }
    let gauge = t.metric("my.gauge").unwrap();
    assert_eq!(
        gauge.number_points().unwrap()[0].value,
        NumberValue::Int(10)
    );
    assert!(gauge.histogram_points().is_none());

    let h = t.metric("my.histogram").unwrap();
    assert_eq!(h.unit, "s");
    assert_eq!(h.resource.str("service.name"), Some("svc"));
    assert_eq!(h.scope_name, "meter");
    let MetricData::Histogram {
        temporality,
        points,
    } = &h.data
    else {
        panic!("{:?}", h.data)
    };
    assert_eq!(*temporality, Temporality::Cumulative);
    let p = &points[0];
    assert_eq!(p.count, 2);
    assert_eq!(p.sum, Some(2.5));
    assert_eq!(p.bucket_counts, vec![1, 1, 0]);
    assert_eq!(p.explicit_bounds, vec![1.0, 2.0]);
    assert_eq!((p.min, p.max), (Some(0.0), Some(2.0)));
    assert_eq!(p.attributes.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(
        p.exemplars[0].trace_id.as_deref(),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(
        t.metric("my.exp").unwrap().data,
        MetricData::Other {
            kind: "exponentialHistogram".into()
        }
    );
}

#[test]
fn logs_with_and_without_trace_context() {
    let t = sample();
    assert_eq!(t.logs.len(), 2);
    let first = &t.logs[0];
    assert_eq!(first.severity_number, 10);
    assert_eq!(first.severity_text, "Information");
    assert_eq!(first.body_str(), Some("Example log record"));
    assert_eq!(first.event_name.as_deref(), Some("llmjob.run.finished"));
    assert_eq!(first.attributes.int("int.attribute"), Some(10));
    assert_eq!(first.observed_time_unix_nano, 1_544_712_660_300_000_001);
    assert_eq!(first.resource.str("service.name"), Some("svc"));
    assert_eq!(first.scope_name, "my.library");
    assert_eq!(first.span_id.as_deref(), Some("eee19b7ec3c1b174"));
    let second = &t.logs[1];
    assert_eq!(second.severity_number, 17);
    assert_eq!(second.trace_id, None, "empty ids are None");
    assert_eq!(second.span_id, None);
    assert_eq!(second.event_name, None);
    assert!(matches!(second.body, Some(AttrValue::KvList(_))));
    assert_eq!(
        t.logs_for_trace("5b8efff798038103d269b633813fc60c").len(),
        1
    );
}

#[test]
fn incomplete_last_line_is_skipped_but_bad_complete_line_is_an_error() {
    let partial = format!("{TRACES}{{\"resourceSpans\":[{{\"resou");
    let t = Telemetry::parse_lines("traces.jsonl", &partial).unwrap();
    assert_eq!(t.spans.len(), 3);

    let bad = format!("{TRACES}{{not json}}\n");
    let err = Telemetry::parse_lines("traces.jsonl", &bad)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("traces.jsonl:3:"), "{err}");

    let bad_int =
        "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"timeUnixNano\":\"soon\"}]}]}]}\n";
    let err = Telemetry::parse_lines("logs.jsonl", bad_int)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("logs.jsonl:1:") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn read_dir_reads_the_three_files_and_tolerates_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        Telemetry::read_dir(dir.path()).unwrap(),
        Telemetry::default()
    );
    std::fs::write(dir.path().join(TRACES_FILE), TRACES).unwrap();
    std::fs::write(dir.path().join(LOGS_FILE), LOGS).unwrap();
    let t = Telemetry::read_dir(dir.path()).unwrap();
    assert_eq!((t.spans.len(), t.metrics.len(), t.logs.len()), (3, 0, 2));
    let summary = t.summary();
    assert!(
        summary.contains("3 spans [\"child\", \"other\", \"root\"]"),
        "{summary}"
    );
    assert!(summary.contains("2 log records"), "{summary}");
}

#[test]
fn serializes_to_readable_json() {
    let t = sample();
    let json = serde_json::to_value(t.span_named("root").unwrap()).unwrap();
    assert_eq!(json["attributes"]["n"], 23);
    assert_eq!(json["attributes"]["models"][1], "b");
    assert_eq!(json["kind"], "Server");
}
