//! The run result: one line of JSON the job-runner writes to the container's termination-message
//! file (`LLMJOB_RESULT_PATH`) and the operator copies into `LlmJob.status`.
//!
//! It never holds prompt or completion content, nor secrets. Its serialised form must stay under
//! [`MAX_BYTES`], the kubelet's limit for a termination message.

use serde::{Deserialize, Serialize};

use crate::text;

/// The kubelet keeps at most 4096 bytes of a termination message.
pub const MAX_BYTES: usize = 4096;

/// Outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The completion was received.
    Succeeded,
    /// The run ended without a completion.
    Failed,
}

/// Token usage reported by the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Prompt (input) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Completion (output) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Total tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    /// Low-cardinality error class, the same value as the spans' `error.type`
    /// (e.g. `authentication`, `rate_limited`, `timeout`, `invalid_request`, `500`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human-readable message. Never secrets. The server's own error text (which servers
    /// fill with parts of the request) appears only under content capture `full`; otherwise the
    /// message names the server's error type, code and param.
    pub message: String,
    /// The HTTP status of the last attempt, when there was a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// The one-line JSON result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// Outcome of the run.
    pub status: RunStatus,
    /// Trace id (32 hex digits) of the run's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Span id (16 hex digits) of the run's root (`llm_job.workflow`) span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// The API's response id (`chatcmpl-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// The model that answered (`gen_ai.response.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Finish reason of the first choice (`stop`, `length`, `tool_calls`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Finish reason of every choice, in index order, when the run asked for several (`n` > 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finish_reasons: Vec<String>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// Wall time of the run in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// HTTP attempts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Hex SHA-256 of the input messages (content capture `hash` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_sha256: Option<String>,
    /// Hex SHA-256 of the output messages (content capture `hash` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    /// Why the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// A batch shard's totals (batch mode only; `usage` and `attempts` are then the shard's sums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardResult>,
}

/// What one shard (one pod of an Indexed Job) of a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardResult {
    /// The shard's index (`JOB_COMPLETION_INDEX`).
    pub index: u32,
    /// Items of the shard that succeeded.
    pub succeeded: u64,
    /// Items of the shard that failed after their own retries.
    pub failed: u64,
    /// Where the shard's results were written (an object URL, or `configmap://NAME/KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The shard's first item errors, in item order (at most a few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub item_errors: Vec<ItemError>,
}

/// Why one batch item failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    /// The item's `id` (its line number, from 1, when the item has none).
    pub id: String,
    /// The error, as a run's.
    pub error: RunError,
}

impl RunResult {
    /// Serialises the result as one line of JSON no longer than [`MAX_BYTES`]. What does not fit is
    /// given up in this order, each step at most once, so the loop always ends: a shard's item
    /// errors lose their messages, the error message is shortened (on a character boundary), the
    /// content hashes are dropped, the server's strings (`responseId`, `model`, `finishReason`,
    /// `finishReasons`, the error's `type`) and the shard's item error ids and types and its
    /// output location are cut to 256 bytes, then dropped (the item errors too), then the error
    /// message; what is left (status, ids, numbers, the shard's counts) always fits.
    pub fn to_line(&self) -> String {
        const FIELD_CUT: usize = 256;
        let serialise =
            |r: &RunResult| serde_json::to_string(r).unwrap_or_else(|_| String::from("{}"));
        let mut result = self.clone();
        let mut line = serialise(&result);
        if line.len() > MAX_BYTES
            && let Some(shard) = result.shard.as_mut()
        {
            for item in &mut shard.item_errors {
                item.error.message.clear();
            }
            line = serialise(&result);
        }
        for step in 0..=5u8 {
            if line.len() <= MAX_BYTES {
                return line;
            }
            match step {
                0 => {
                    if let Some(err) = result.error.as_mut() {
                        let excess = line.len() - MAX_BYTES + text::ELLIPSIS.len();
                        let keep = err.message.len().saturating_sub(excess);
                        text::truncate(&mut err.message, keep);
                    }
                }
                1 => {
                    result.input_sha256 = None;
                    result.output_sha256 = None;
                }
                2 => {
                    for field in [
                        &mut result.response_id,
                        &mut result.model,
                        &mut result.finish_reason,
                    ]
                    .into_iter()
                    .flatten()
                    .chain(result.finish_reasons.iter_mut())
                    {
                        text::truncate(field, FIELD_CUT);
                    }
                    if let Some(err) = result.error.as_mut() {
                        text::truncate(&mut err.kind, FIELD_CUT);
                    }
                    if let Some(shard) = result.shard.as_mut() {
                        for item in &mut shard.item_errors {
                            text::truncate(&mut item.id, FIELD_CUT);
                            text::truncate(&mut item.error.kind, FIELD_CUT);
                        }
                        if let Some(output) = shard.output.as_mut() {
                            text::truncate(output, FIELD_CUT);
                        }
                    }
                }
                3 => {
                    result.response_id = None;
                    result.model = None;
                    result.finish_reason = None;
                    result.finish_reasons.clear();
                    if let Some(shard) = result.shard.as_mut() {
                        shard.item_errors.clear();
                        shard.output = None;
                    }
                }
                4 => {
                    if let Some(err) = result.error.as_mut() {
                        err.message.clear();
                    }
                }
                _ => {
                    // Only the status, the ids and numbers can be left: a few hundred bytes.
                    result.error = None;
                    result.trace_id = result.trace_id.filter(|t| t.len() <= 64);
                    result.span_id = result.span_id.filter(|t| t.len() <= 64);
                    let line = serialise(&result);
                    return if line.len() <= MAX_BYTES {
                        line
                    } else {
                        serialise(&RunResult::status_only(result.status))
                    };
                }
            }
            line = serialise(&result);
        }
        line
    }

    /// A result with only its status (the base of results that fill a few fields).
    pub fn status_only(status: RunStatus) -> RunResult {
        RunResult {
            status,
            trace_id: None,
            span_id: None,
            response_id: None,
            model: None,
            finish_reason: None,
            finish_reasons: Vec::new(),
            usage: None,
            duration_ms: None,
            attempts: None,
            input_sha256: None,
            output_sha256: None,
            error: None,
            shard: None,
        }
    }

    /// Parses a termination message. Leading/trailing whitespace is ignored.
    pub fn parse(message: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(message.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_omits_absent_fields() {
        let r = RunResult {
            status: RunStatus::Succeeded,
            shard: None,
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            span_id: None,
            response_id: Some("chatcmpl-1".into()),
            model: Some("gpt-4o-mini-2024-07-18".into()),
            finish_reason: Some("stop".into()),
            finish_reasons: Vec::new(),
            usage: Some(TokenUsage {
                input_tokens: Some(23),
                output_tokens: Some(8),
                total_tokens: Some(31),
            }),
            duration_ms: Some(12),
            attempts: Some(1),
            input_sha256: None,
            output_sha256: None,
            error: None,
        };
        let line = r.to_line();
        assert!(!line.contains("spanId"));
        assert!(line.contains(r#""usage":{"inputTokens":23,"outputTokens":8,"totalTokens":31}"#));
        assert_eq!(RunResult::parse(&line).ok(), Some(r));
    }

    #[test]
    fn long_errors_are_cut_to_fit() {
        let r = RunResult {
            status: RunStatus::Failed,
            shard: None,
            trace_id: None,
            span_id: None,
            response_id: None,
            model: None,
            finish_reason: None,
            finish_reasons: Vec::new(),
            usage: None,
            duration_ms: None,
            attempts: Some(4),
            input_sha256: None,
            output_sha256: None,
            error: Some(RunError {
                kind: "500".into(),
                message: "é".repeat(5000),
                http_status: Some(500),
            }),
        };
        let line = r.to_line();
        assert!(line.len() <= MAX_BYTES, "{}", line.len());
        let parsed = RunResult::parse(&line).map_err(|e| e.to_string());
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn oversized_server_strings_are_cut_and_the_loop_ends() {
        let r = RunResult {
            status: RunStatus::Succeeded,
            shard: None,
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            span_id: Some("b7ad6b7169203331".into()),
            response_id: Some("i".repeat(10_000)),
            model: Some("m\u{1}".repeat(5_000)),
            finish_reason: Some("\"".repeat(3_000)),
            finish_reasons: vec!["r".repeat(3_000); 128],
            usage: None,
            duration_ms: Some(1),
            attempts: Some(1),
            input_sha256: None,
            output_sha256: None,
            error: Some(RunError {
                kind: "k".repeat(9_000),
                message: "\u{0}".repeat(9_000),
                http_status: None,
            }),
        };
        let line = r.to_line();
        assert!(line.len() <= MAX_BYTES, "{}", line.len());
        let parsed = RunResult::parse(&line).map_err(|e| e.to_string());
        assert_eq!(
            parsed.map(|p| (p.status, p.trace_id)),
            Ok((RunStatus::Succeeded, r.trace_id.clone()))
        );
    }
}
