//! The OTLP/JSON wire shapes (only the fields [`super`] flattens; unknown fields are ignored)
//! and their conversion into the flat types.

use base64::Engine as _;
use serde::Deserialize;

use super::{
    AttrValue, Attributes, Event, Exemplar, HistogramPoint, Link, LogRecord, Metric, MetricData,
    NumberPoint, NumberValue, Span, SpanKind, Status, StatusCode, Telemetry, Temporality,
};

/// A number that protojson may send as a JSON number or a string (64-bit ints, NaN, ...).
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(super) enum Num {
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

impl Num {
    fn u64(&self) -> Result<u64, String> {
        match self {
            Num::Int(i) => u64::try_from(*i).map_err(|e| format!("{i}: {e}")),
            Num::UInt(u) => Ok(*u),
            Num::Float(f) => Err(format!("expected an integer, got {f}")),
            Num::Str(s) => s.parse().map_err(|e| format!("{s:?}: {e}")),
        }
    }

    fn i64(&self) -> Result<i64, String> {
        match self {
            Num::Int(i) => Ok(*i),
            Num::UInt(u) => i64::try_from(*u).map_err(|e| format!("{u}: {e}")),
            Num::Float(f) => Err(format!("expected an integer, got {f}")),
            Num::Str(s) => s.parse().map_err(|e| format!("{s:?}: {e}")),
        }
    }

    fn f64(&self) -> Result<f64, String> {
        match self {
            Num::Int(i) => Ok(*i as f64),
            Num::UInt(u) => Ok(*u as f64),
            Num::Float(f) => Ok(*f),
            Num::Str(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => s.parse().map_err(|e| format!("{s:?}: {e}")),
            },
        }
    }
}

fn opt_u64(n: &Option<Num>) -> Result<u64, String> {
    n.as_ref().map_or(Ok(0), Num::u64)
}

/// An enum sent as its number or its proto name.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(super) enum EnumRepr {
    Number(i64),
    Name(String),
}

fn enum_value(e: &Option<EnumRepr>, names: &[&str]) -> Result<i64, String> {
    match e {
        None => Ok(0),
        Some(EnumRepr::Number(n)) => Ok(*n),
        Some(EnumRepr::Name(name)) => names
            .iter()
            .position(|n| n == name)
            .map(|p| p as i64)
            .ok_or_else(|| format!("unknown enum value {name:?}")),
    }
}

fn hex_id(id: &str) -> Option<String> {
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ExportRequest {
    resource_spans: Vec<ResourceSpans>,
    resource_metrics: Vec<ResourceMetrics>,
    resource_logs: Vec<ResourceLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Resource {
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Scope {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: AnyValue,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AnyValue {
    string_value: Option<String>,
    bool_value: Option<bool>,
    int_value: Option<Num>,
    double_value: Option<Num>,
    array_value: Option<ArrayValue>,
    kvlist_value: Option<KvListValue>,
    bytes_value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ArrayValue {
    values: Vec<AnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KvListValue {
    values: Vec<KeyValue>,
}

fn attrs(kvs: &[KeyValue]) -> Result<Attributes, String> {
    kvs.iter()
        .map(|kv| Ok((kv.key.clone(), value(&kv.value)?)))
        .collect()
}

fn value(v: &AnyValue) -> Result<AttrValue, String> {
    Ok(if let Some(s) = &v.string_value {
        AttrValue::String(s.clone())
    } else if let Some(b) = v.bool_value {
        AttrValue::Bool(b)
    } else if let Some(i) = &v.int_value {
        AttrValue::Int(i.i64()?)
    } else if let Some(d) = &v.double_value {
        AttrValue::Double(d.f64()?)
    } else if let Some(a) = &v.array_value {
        AttrValue::Array(a.values.iter().map(value).collect::<Result<_, _>>()?)
    } else if let Some(kv) = &v.kvlist_value {
        AttrValue::KvList(attrs(&kv.values)?)
    } else if let Some(b) = &v.bytes_value {
        AttrValue::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("bytesValue {b:?}: {e}"))?,
        )
    } else {
        AttrValue::Empty
    })
}

// --- traces

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceSpans {
    resource: Resource,
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeSpans {
    scope: Scope,
    spans: Vec<WireSpan>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: Option<EnumRepr>,
    start_time_unix_nano: Option<Num>,
    end_time_unix_nano: Option<Num>,
    attributes: Vec<KeyValue>,
    events: Vec<WireEvent>,
    links: Vec<WireLink>,
    status: WireStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireEvent {
    time_unix_nano: Option<Num>,
    name: String,
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireLink {
    trace_id: String,
    span_id: String,
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireStatus {
    message: String,
    code: Option<EnumRepr>,
}

const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
const TEMPORALITIES: &[&str] = &[
    "AGGREGATION_TEMPORALITY_UNSPECIFIED",
    "AGGREGATION_TEMPORALITY_DELTA",
    "AGGREGATION_TEMPORALITY_CUMULATIVE",
];
const SEVERITIES: &[&str] = &[
    "SEVERITY_NUMBER_UNSPECIFIED",
    "SEVERITY_NUMBER_TRACE",
    "SEVERITY_NUMBER_TRACE2",
    "SEVERITY_NUMBER_TRACE3",
    "SEVERITY_NUMBER_TRACE4",
    "SEVERITY_NUMBER_DEBUG",
    "SEVERITY_NUMBER_DEBUG2",
    "SEVERITY_NUMBER_DEBUG3",
    "SEVERITY_NUMBER_DEBUG4",
    "SEVERITY_NUMBER_INFO",
    "SEVERITY_NUMBER_INFO2",
    "SEVERITY_NUMBER_INFO3",
    "SEVERITY_NUMBER_INFO4",
    "SEVERITY_NUMBER_WARN",
    "SEVERITY_NUMBER_WARN2",
    "SEVERITY_NUMBER_WARN3",
    "SEVERITY_NUMBER_WARN4",
    "SEVERITY_NUMBER_ERROR",
    "SEVERITY_NUMBER_ERROR2",
    "SEVERITY_NUMBER_ERROR3",
    "SEVERITY_NUMBER_ERROR4",
    "SEVERITY_NUMBER_FATAL",
    "SEVERITY_NUMBER_FATAL2",
    "SEVERITY_NUMBER_FATAL3",
    "SEVERITY_NUMBER_FATAL4",
];

fn span_kind(n: i64) -> SpanKind {
    match n {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn status_code(n: i64) -> StatusCode {
    match n {
        1 => StatusCode::Ok,
        2 => StatusCode::Error,
        _ => StatusCode::Unset,
    }
}

fn temporality(n: i64) -> Temporality {
    match n {
        1 => Temporality::Delta,
        2 => Temporality::Cumulative,
        _ => Temporality::Unspecified,
    }
}

// --- metrics

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceMetrics {
    resource: Resource,
    scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeMetrics {
    scope: Scope,
    metrics: Vec<WireMetric>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireMetric {
    name: String,
    description: String,
    unit: String,
    gauge: Option<WireNumbers>,
    sum: Option<WireNumbers>,
    histogram: Option<WireHistogram>,
    exponential_histogram: Option<serde::de::IgnoredAny>,
    summary: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireNumbers {
    data_points: Vec<WireNumberPoint>,
    aggregation_temporality: Option<EnumRepr>,
    is_monotonic: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireNumberPoint {
    attributes: Vec<KeyValue>,
    start_time_unix_nano: Option<Num>,
    time_unix_nano: Option<Num>,
    as_double: Option<Num>,
    as_int: Option<Num>,
    exemplars: Vec<WireExemplar>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireHistogram {
    data_points: Vec<WireHistogramPoint>,
    aggregation_temporality: Option<EnumRepr>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireHistogramPoint {
    attributes: Vec<KeyValue>,
    start_time_unix_nano: Option<Num>,
    time_unix_nano: Option<Num>,
    count: Option<Num>,
    sum: Option<Num>,
    bucket_counts: Vec<Num>,
    explicit_bounds: Vec<Num>,
    min: Option<Num>,
    max: Option<Num>,
    exemplars: Vec<WireExemplar>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireExemplar {
    filtered_attributes: Vec<KeyValue>,
    time_unix_nano: Option<Num>,
    as_double: Option<Num>,
    as_int: Option<Num>,
    span_id: String,
    trace_id: String,
}

fn number(as_int: &Option<Num>, as_double: &Option<Num>) -> Result<NumberValue, String> {
    match (as_int, as_double) {
        (Some(i), _) => Ok(NumberValue::Int(i.i64()?)),
        (None, Some(d)) => Ok(NumberValue::Double(d.f64()?)),
        // protojson omits a zero value.
        (None, None) => Ok(NumberValue::Int(0)),
    }
}

fn exemplars(list: &[WireExemplar]) -> Result<Vec<Exemplar>, String> {
    list.iter()
        .map(|e| {
            Ok(Exemplar {
                time_unix_nano: opt_u64(&e.time_unix_nano)?,
                value: number(&e.as_int, &e.as_double)?,
                trace_id: hex_id(&e.trace_id),
                span_id: hex_id(&e.span_id),
                filtered_attributes: attrs(&e.filtered_attributes)?,
            })
        })
        .collect()
}

fn number_points(points: &[WireNumberPoint]) -> Result<Vec<NumberPoint>, String> {
    points
        .iter()
        .map(|p| {
            Ok(NumberPoint {
                attributes: attrs(&p.attributes)?,
                start_time_unix_nano: opt_u64(&p.start_time_unix_nano)?,
                time_unix_nano: opt_u64(&p.time_unix_nano)?,
                value: number(&p.as_int, &p.as_double)?,
                exemplars: exemplars(&p.exemplars)?,
            })
        })
        .collect()
}

fn metric_data(m: &WireMetric) -> Result<MetricData, String> {
    if let Some(h) = &m.histogram {
        let points = h
            .data_points
            .iter()
            .map(|p| {
                Ok(HistogramPoint {
                    attributes: attrs(&p.attributes)?,
                    start_time_unix_nano: opt_u64(&p.start_time_unix_nano)?,
                    time_unix_nano: opt_u64(&p.time_unix_nano)?,
                    count: opt_u64(&p.count)?,
                    sum: p.sum.as_ref().map(Num::f64).transpose()?,
                    bucket_counts: p
                        .bucket_counts
                        .iter()
                        .map(Num::u64)
                        .collect::<Result<_, _>>()?,
                    explicit_bounds: p
                        .explicit_bounds
                        .iter()
                        .map(Num::f64)
                        .collect::<Result<_, _>>()?,
                    min: p.min.as_ref().map(Num::f64).transpose()?,
                    max: p.max.as_ref().map(Num::f64).transpose()?,
                    exemplars: exemplars(&p.exemplars)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(MetricData::Histogram {
            temporality: temporality(enum_value(&h.aggregation_temporality, TEMPORALITIES)?),
            points,
        })
    } else if let Some(s) = &m.sum {
        Ok(MetricData::Sum {
            temporality: temporality(enum_value(&s.aggregation_temporality, TEMPORALITIES)?),
            monotonic: s.is_monotonic,
            points: number_points(&s.data_points)?,
        })
    } else if let Some(g) = &m.gauge {
        Ok(MetricData::Gauge {
            points: number_points(&g.data_points)?,
        })
    } else if m.exponential_histogram.is_some() {
        Ok(MetricData::Other {
            kind: "exponentialHistogram".into(),
        })
    } else if m.summary.is_some() {
        Ok(MetricData::Other {
            kind: "summary".into(),
        })
    } else {
        Ok(MetricData::Other {
            kind: String::new(),
        })
    }
}

// --- logs

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceLogs {
    resource: Resource,
    scope_logs: Vec<ScopeLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeLogs {
    scope: Scope,
    log_records: Vec<WireLogRecord>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireLogRecord {
    time_unix_nano: Option<Num>,
    observed_time_unix_nano: Option<Num>,
    severity_number: Option<EnumRepr>,
    severity_text: String,
    body: Option<AnyValue>,
    attributes: Vec<KeyValue>,
    trace_id: String,
    span_id: String,
    event_name: String,
}

impl ExportRequest {
    pub(super) fn flatten_into(self, out: &mut Telemetry) -> Result<(), String> {
        for rs in &self.resource_spans {
            let resource = attrs(&rs.resource.attributes)?;
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.spans.push(Span {
                        trace_id: s.trace_id.to_ascii_lowercase(),
                        span_id: s.span_id.to_ascii_lowercase(),
                        parent_span_id: hex_id(&s.parent_span_id),
                        name: s.name.clone(),
                        kind: span_kind(enum_value(&s.kind, SPAN_KINDS)?),
                        start_unix_nano: opt_u64(&s.start_time_unix_nano)?,
                        end_unix_nano: opt_u64(&s.end_time_unix_nano)?,
                        attributes: attrs(&s.attributes)?,
                        resource: resource.clone(),
                        scope_name: ss.scope.name.clone(),
                        scope_version: ss.scope.version.clone(),
                        status: Status {
                            code: status_code(enum_value(&s.status.code, STATUS_CODES)?),
                            message: s.status.message.clone(),
                        },
                        events: s
                            .events
                            .iter()
                            .map(|e| {
                                Ok(Event {
                                    name: e.name.clone(),
                                    time_unix_nano: opt_u64(&e.time_unix_nano)?,
                                    attributes: attrs(&e.attributes)?,
                                })
                            })
                            .collect::<Result<_, String>>()?,
                        links: s
                            .links
                            .iter()
                            .map(|l| {
                                Ok(Link {
                                    trace_id: l.trace_id.to_ascii_lowercase(),
                                    span_id: l.span_id.to_ascii_lowercase(),
                                    attributes: attrs(&l.attributes)?,
                                })
                            })
                            .collect::<Result<_, String>>()?,
                    });
                }
            }
        }
        for rm in &self.resource_metrics {
            let resource = attrs(&rm.resource.attributes)?;
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    out.metrics.push(Metric {
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        description: m.description.clone(),
                        resource: resource.clone(),
                        scope_name: sm.scope.name.clone(),
                        data: metric_data(m)?,
                    });
                }
            }
        }
        for rl in &self.resource_logs {
            let resource = attrs(&rl.resource.attributes)?;
            for sl in &rl.scope_logs {
                for l in &sl.log_records {
                    out.logs.push(LogRecord {
                        time_unix_nano: opt_u64(&l.time_unix_nano)?,
                        observed_time_unix_nano: opt_u64(&l.observed_time_unix_nano)?,
                        severity_number: i32::try_from(enum_value(&l.severity_number, SEVERITIES)?)
                            .map_err(|e| e.to_string())?,
                        severity_text: l.severity_text.clone(),
                        body: l.body.as_ref().map(value).transpose()?,
                        event_name: (!l.event_name.is_empty()).then(|| l.event_name.clone()),
                        attributes: attrs(&l.attributes)?,
                        trace_id: hex_id(&l.trace_id),
                        span_id: hex_id(&l.span_id),
                        resource: resource.clone(),
                        scope_name: sl.scope.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}
