//! A typed reader over the collector's JSON-lines output (`traces.jsonl`, `metrics.jsonl`,
//! `logs.jsonl`, one OTLP/JSON export request per line): flattens resource → scope → item into
//! [`Span`], [`Metric`] and [`LogRecord`] values that tests can assert on directly.
//!
//! It only reads: rendering (waterfalls etc.) belongs to its users. OTLP/JSON quirks handled here:
//! ids are lower-case hex strings (an empty id means "none"), 64-bit integers arrive as strings,
//! enums as numbers (their proto names are accepted too), bytes as base64, and absent fields take
//! their proto defaults. A final line without its newline is still being written and is skipped;
//! any other line that does not parse is an error naming the file and line.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// File names the collector writes, one per signal.
pub const TRACES_FILE: &str = "traces.jsonl";
/// See [`TRACES_FILE`].
pub const METRICS_FILE: &str = "metrics.jsonl";
/// See [`TRACES_FILE`].
pub const LOGS_FILE: &str = "logs.jsonl";

/// Errors reading the collector's output.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line is not an OTLP/JSON export request.
    #[error("{source_name}:{line}: not an OTLP/JSON export request: {message}")]
    Parse {
        /// The file (or other source) name.
        source_name: String,
        /// The 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
}

// ------------------------------------------------------------------------------------------------
// Attributes

/// An attribute (or log body) value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// `stringValue`.
    String(String),
    /// `boolValue`.
    Bool(bool),
    /// `intValue` (a string on the wire).
    Int(i64),
    /// `doubleValue`.
    Double(f64),
    /// `arrayValue`.
    Array(Vec<AttrValue>),
    /// `bytesValue` (base64 on the wire, decoded here).
    Bytes(Vec<u8>),
    /// `kvlistValue`.
    KvList(Attributes),
    /// A value with none of the fields set.
    Empty,
}

impl AttrValue {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an int value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, if this is a double value (ints are not converted).
    pub fn as_double(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// The boolean, if this is a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// Key/value attributes in the order they were sent (a later duplicate key wins on lookup).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes(Vec<(String, AttrValue)>);

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl Attributes {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The string value of `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(AttrValue::as_str)
    }

    /// The integer value of `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(AttrValue::as_int)
    }

    /// The double value of `key`.
    pub fn double(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(AttrValue::as_double)
    }

    /// The boolean value of `key`.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(AttrValue::as_bool)
    }

    /// The value of `key` if it is an array of strings.
    pub fn str_array(&self, key: &str) -> Option<Vec<&str>> {
        match self.get(key)? {
            AttrValue::Array(items) => items.iter().map(AttrValue::as_str).collect(),
            _ => None,
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The (key, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a AttrValue);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a AttrValue)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<(String, AttrValue)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, AttrValue)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

// ------------------------------------------------------------------------------------------------
// Traces

/// `Span.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SpanKind {
    /// 0 or absent.
    Unspecified,
    /// 1.
    Internal,
    /// 2.
    Server,
    /// 3.
    Client,
    /// 4.
    Producer,
    /// 5.
    Consumer,
}

/// `Status.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StatusCode {
    /// 0 or absent.
    Unset,
    /// 1.
    Ok,
    /// 2.
    Error,
}

/// A span's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// The description (usually only set for errors).
    pub message: String,
}

/// A span event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Its name (e.g. `exception`).
    pub name: String,
    /// When it happened.
    pub time_unix_nano: u64,
    /// Its attributes.
    pub attributes: Attributes,
}

/// A span link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// The linked trace (hex).
    pub trace_id: String,
    /// The linked span (hex).
    pub span_id: String,
    /// Its attributes.
    pub attributes: Attributes,
}

/// One span with its resource and scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span name.
    pub name: String,
    /// The kind.
    pub kind: SpanKind,
    /// Start time.
    pub start_unix_nano: u64,
    /// End time.
    pub end_unix_nano: u64,
    /// Span attributes.
    pub attributes: Attributes,
    /// Resource attributes (`service.name`, ...).
    pub resource: Attributes,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// Instrumentation scope version.
    pub scope_version: String,
    /// Status.
    pub status: Status,
    /// Events.
    pub events: Vec<Event>,
    /// Links.
    pub links: Vec<Link>,
}

impl Span {
    /// End minus start (zero if the end precedes the start).
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }

    /// The first event called `name`.
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }
}

// ------------------------------------------------------------------------------------------------
// Metrics

/// Aggregation temporality of sums and histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Temporality {
    /// 0 or absent.
    Unspecified,
    /// 1.
    Delta,
    /// 2.
    Cumulative,
}

/// A number that is an int or a double on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NumberValue {
    /// `asInt`.
    Int(i64),
    /// `asDouble`.
    Double(f64),
}

impl NumberValue {
    /// The value as f64 (ints converted).
    pub fn as_f64(&self) -> f64 {
        match *self {
            NumberValue::Int(i) => i as f64,
            NumberValue::Double(d) => d,
        }
    }
}

/// An exemplar attached to a data point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exemplar {
    /// When it was recorded.
    pub time_unix_nano: u64,
    /// The measurement.
    pub value: NumberValue,
    /// The trace it was recorded in.
    pub trace_id: Option<String>,
    /// The span it was recorded in.
    pub span_id: Option<String>,
    /// Attributes filtered out of the point.
    pub filtered_attributes: Attributes,
}

/// A sum or gauge data point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumberPoint {
    /// Point attributes.
    pub attributes: Attributes,
    /// Start of the aggregation window.
    pub start_time_unix_nano: u64,
    /// End of the window.
    pub time_unix_nano: u64,
    /// The value.
    pub value: NumberValue,
    /// Exemplars.
    pub exemplars: Vec<Exemplar>,
}

/// A histogram data point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramPoint {
    /// Point attributes.
    pub attributes: Attributes,
    /// Start of the aggregation window.
    pub start_time_unix_nano: u64,
    /// End of the window.
    pub time_unix_nano: u64,
    /// Number of measurements.
    pub count: u64,
    /// Their sum, if recorded.
    pub sum: Option<f64>,
    /// Per-bucket counts (one more than `explicit_bounds`).
    pub bucket_counts: Vec<u64>,
    /// Bucket upper bounds.
    pub explicit_bounds: Vec<f64>,
    /// Smallest measurement, if recorded.
    pub min: Option<f64>,
    /// Largest measurement, if recorded.
    pub max: Option<f64>,
    /// Exemplars.
    pub exemplars: Vec<Exemplar>,
}

/// The data of a metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MetricData {
    /// An explicit-bucket histogram.
    Histogram {
        /// Temporality.
        temporality: Temporality,
        /// Points.
        points: Vec<HistogramPoint>,
    },
    /// A sum (counter or up-down counter).
    Sum {
        /// Temporality.
        temporality: Temporality,
        /// Whether it only increases.
        monotonic: bool,
        /// Points.
        points: Vec<NumberPoint>,
    },
    /// A gauge.
    Gauge {
        /// Points.
        points: Vec<NumberPoint>,
    },
    /// A type this reader does not flatten (`exponentialHistogram`, `summary`, or none).
    Other {
        /// The JSON field name of the type.
        kind: String,
    },
}

/// One metric from one export, with its resource and scope. A metric exported periodically
/// appears once per export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Its name.
    pub name: String,
    /// Its unit (UCUM, e.g. `s`, `{token}`).
    pub unit: String,
    /// Its description.
    pub description: String,
    /// Resource attributes.
    pub resource: Attributes,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// The data.
    pub data: MetricData,
}

impl Metric {
    /// The points if this is a histogram.
    pub fn histogram_points(&self) -> Option<&[HistogramPoint]> {
        match &self.data {
            MetricData::Histogram { points, .. } => Some(points),
            _ => None,
        }
    }

    /// The points if this is a sum or a gauge.
    pub fn number_points(&self) -> Option<&[NumberPoint]> {
        match &self.data {
            MetricData::Sum { points, .. } | MetricData::Gauge { points } => Some(points),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Logs

/// One log record with its resource and scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// When the event happened (0 if unknown).
    pub time_unix_nano: u64,
    /// When it was observed.
    pub observed_time_unix_nano: u64,
    /// Severity number (1–24; 9 = INFO, 13 = WARN, 17 = ERROR; 0 = unspecified).
    pub severity_number: i32,
    /// Severity text (e.g. `INFO`).
    pub severity_text: String,
    /// The body.
    pub body: Option<AttrValue>,
    /// The event name (OTLP 1.5+ `eventName`), if set.
    pub event_name: Option<String>,
    /// Record attributes.
    pub attributes: Attributes,
    /// The trace it belongs to.
    pub trace_id: Option<String>,
    /// The span it belongs to.
    pub span_id: Option<String>,
    /// Resource attributes.
    pub resource: Attributes,
    /// Instrumentation scope name.
    pub scope_name: String,
}

impl LogRecord {
    /// The body if it is a string.
    pub fn body_str(&self) -> Option<&str> {
        self.body.as_ref().and_then(AttrValue::as_str)
    }
}

// ------------------------------------------------------------------------------------------------
// The collection

/// Everything read from the collector's output files, in file order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Telemetry {
    /// All spans.
    pub spans: Vec<Span>,
    /// All metrics (one entry per metric per export).
    pub metrics: Vec<Metric>,
    /// All log records.
    pub logs: Vec<LogRecord>,
}

impl Telemetry {
    /// Reads `traces.jsonl`, `metrics.jsonl` and `logs.jsonl` from `dir` (missing files are empty).
    pub fn read_dir(dir: &Path) -> Result<Self, TelemetryError> {
        let mut all = Telemetry::default();
        for name in [TRACES_FILE, METRICS_FILE, LOGS_FILE] {
            let path = dir.join(name);
            let text = match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(TelemetryError::Read { path, source }),
            };
            all.extend_from_lines(&path.display().to_string(), &text)?;
        }
        Ok(all)
    }

    /// Parses JSON lines (any mix of traces, metrics and logs requests). `source_name` is used
    /// in errors. A last line without a trailing newline is treated as still being written and
    /// skipped.
    pub fn parse_lines(source_name: &str, text: &str) -> Result<Self, TelemetryError> {
        let mut all = Telemetry::default();
        all.extend_from_lines(source_name, text)?;
        Ok(all)
    }

    fn extend_from_lines(&mut self, source_name: &str, text: &str) -> Result<(), TelemetryError> {
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        for (index, line) in complete.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let request: wire::ExportRequest =
                serde_json::from_str(line).map_err(|e| TelemetryError::Parse {
                    source_name: source_name.to_owned(),
                    line: index + 1,
                    message: e.to_string(),
                })?;
            request
                .flatten_into(self)
                .map_err(|message| TelemetryError::Parse {
                    source_name: source_name.to_owned(),
                    line: index + 1,
                    message,
                })?;
        }
        Ok(())
    }

    /// The spans of one trace, ordered by start time.
    pub fn trace(&self, trace_id: &str) -> Vec<&Span> {
        let mut spans: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        spans.sort_by_key(|s| s.start_unix_nano);
        spans
    }

    /// The first span called `name`.
    pub fn span_named(&self, name: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.name == name)
    }

    /// The span with this trace and span id.
    pub fn span(&self, trace_id: &str, span_id: &str) -> Option<&Span> {
        self.spans
            .iter()
            .find(|s| s.trace_id == trace_id && s.span_id == span_id)
    }

    /// The direct children of `parent`, ordered by start time.
    pub fn children_of(&self, parent: &Span) -> Vec<&Span> {
        let mut spans: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| {
                s.trace_id == parent.trace_id
                    && s.parent_span_id.as_deref() == Some(parent.span_id.as_str())
            })
            .collect();
        spans.sort_by_key(|s| s.start_unix_nano);
        spans
    }

    /// The parent of `span`, if it was received.
    pub fn parent_of(&self, span: &Span) -> Option<&Span> {
        self.span(&span.trace_id, span.parent_span_id.as_deref()?)
    }

    /// The most recent export of the metric called `name` (cumulative metrics are exported
    /// repeatedly; the last one holds the latest totals).
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().rev().find(|m| m.name == name)
    }

    /// Every export of the metric called `name`, in file order.
    pub fn metrics_named(&self, name: &str) -> Vec<&Metric> {
        self.metrics.iter().filter(|m| m.name == name).collect()
    }

    /// The log records that carry `trace_id`.
    pub fn logs_for_trace(&self, trace_id: &str) -> Vec<&LogRecord> {
        self.logs
            .iter()
            .filter(|l| l.trace_id.as_deref() == Some(trace_id))
            .collect()
    }

    /// A one-line description of what was received, for error messages: distinct span names,
    /// distinct metric names and the number of log records.
    pub fn summary(&self) -> String {
        fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
            let mut v: Vec<&str> = names.collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        let spans = distinct(self.spans.iter().map(|s| s.name.as_str()));
        let metrics = distinct(self.metrics.iter().map(|m| m.name.as_str()));
        let log_events = distinct(self.logs.iter().filter_map(|l| l.event_name.as_deref()));
        format!(
            "{} spans {:?}; {} metric exports {:?}; {} log records (event names {:?})",
            self.spans.len(),
            spans,
            self.metrics.len(),
            metrics,
            self.logs.len(),
            log_events
        )
    }
}

mod wire;

#[cfg(test)]
mod tests;
