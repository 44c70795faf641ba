//! One HTTP attempt at the OpenAI chat-completions API: builds the request from the
//! configuration, sends it with the caller's headers (the `traceparent` of the chat span), reads
//! a JSON or server-sent-events response, and classifies failures.
//!
//! The request and response types are `async-openai`'s; the HTTP layer is our own `reqwest`
//! client because each attempt must be a span of its own, `Retry-After` must be read, and the
//! exit code depends on the status: `async-openai`'s client retries internally and hides those.
//! Retrying is the caller's decision ([`crate::retry`]); this module never sleeps.

use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessage, ChatCompletionStreamOptions,
    CompletionUsage, CreateChatCompletionRequest, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse,
};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::config::{ApiKey, Config, Input};

/// Token usage of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Total tokens.
    pub total: u64,
    /// Prompt tokens read from the cache, when reported.
    pub cache_read: Option<u64>,
    /// Reasoning tokens, when reported.
    pub reasoning: Option<u64>,
}

impl From<&CompletionUsage> for Usage {
    fn from(u: &CompletionUsage) -> Self {
        Usage {
            input: u64::from(u.prompt_tokens),
            output: u64::from(u.completion_tokens),
            total: u64::from(u.total_tokens),
            cache_read: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .map(u64::from),
            reasoning: u
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .map(u64::from),
        }
    }
}

/// A received completion, reduced to what the runner reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// `id` of the response.
    pub id: String,
    /// `model` of the response.
    pub model: String,
    /// Text of the first choice.
    pub content: Option<String>,
    /// Tool calls of the first choice (raw JSON), when the model called tools.
    pub tool_calls: Vec<Value>,
    /// Finish reason of every choice, in index order.
    pub finish_reasons: Vec<String>,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
    /// `service_tier`, when present.
    pub service_tier: Option<String>,
    /// `system_fingerprint`, when present.
    pub system_fingerprint: Option<String>,
    /// Streaming only: time from sending the request to the first chunk.
    pub time_to_first_chunk: Option<Duration>,
}

impl Completion {
    /// What the runner prints: the first choice's text, else its tool calls as JSON.
    pub fn answer(&self) -> String {
        match (&self.content, self.tool_calls.is_empty()) {
            (Some(text), _) => text.clone(),
            (None, false) => Value::Array(self.tool_calls.clone()).to_string(),
            (None, true) => String::new(),
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's error message (secrets removed).
        message: String,
        /// How long the server asked us to wait (`retry-after-ms` / `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No response (or no complete response) within the time left.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The response could not be read or parsed.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The HTTP client could not be built (before any request): a configuration error of the
    /// environment, e.g. a root file system without a CA store. Exit code 2.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl CallError {
    /// The low-cardinality `error.type` of this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            CallError::Status { status, .. } => match status {
                400 => "invalid_request",
                401 => "authentication",
                403 => "permission_denied",
                404 => "not_found",
                408 => "timeout",
                409 => "conflict",
                422 => "unprocessable_entity",
                429 => "rate_limited",
                500..=599 => "server_error",
                _ => "http_error",
            },
            CallError::Timeout(_) => "timeout",
            CallError::Connect(_) => "connection_error",
            CallError::Decode(_) => "invalid_response",
            CallError::Client(_) => "configuration_error",
        }
    }

    /// Whether another attempt may succeed: 408, 409, 429, 5xx, timeouts and connection errors
    /// (the OpenAI SDKs' rule). 400/401/403/404/422 and unreadable responses are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..=599),
            CallError::Timeout(_) | CallError::Connect(_) => true,
            CallError::Decode(_) | CallError::Client(_) => false,
        }
    }

    /// The HTTP status, when there was a response.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The wait the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Builds the chat-completions request body from the configuration.
#[allow(deprecated)] // `seed` is deprecated by OpenAI (best effort) but still accepted and documented.
pub fn build_request(config: &Config) -> CreateChatCompletionRequest {
    let messages = match &config.input {
        Input::Prompt(prompt) => vec![ChatCompletionRequestMessage::User(
            ChatCompletionRequestUserMessage::from(prompt.as_str()),
        )],
        Input::Messages(messages) => messages.clone(),
    };
    let p = &config.parameters;
    CreateChatCompletionRequest {
        model: config.model.clone(),
        messages,
        temperature: p.temperature,
        top_p: p.top_p,
        max_completion_tokens: p.max_tokens,
        seed: p.seed,
        stream: p.stream.then_some(true),
        stream_options: p.stream.then_some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        ..Default::default()
    }
}

/// `server.address` and `server.port` of a base URL.
pub fn server_of(url: &Url) -> (String, u16) {
    (
        url.host_str().unwrap_or_default().to_owned(),
        url.port_or_known_default().unwrap_or(443),
    )
}

/// Replaces the API key, and anything shaped like an OpenAI key, in a message from the server.
pub fn scrub(message: &str, key: &ApiKey) -> String {
    let mut out = if key.expose().is_empty() {
        message.to_owned()
    } else {
        message.replace(key.expose(), "<redacted>")
    };
    // OpenAI's 401 message quotes a masked key ("sk-abc***xyz"); drop those too.
    while let Some(start) = out.find("sk-") {
        let end = out[start..]
            .find(|c: char| c.is_whitespace() || c == '.' || c == ',' || c == '"' || c == '\'')
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "<redacted>");
    }
    let mut chars = out.chars();
    let short: String = chars.by_ref().take(500).collect();
    if chars.next().is_some() {
        format!("{short}...")
    } else {
        short
    }
}

/// The CA bundle the images carry (`images/`, `cargo xtask images`).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the TLS verifier (rustls-platform-verifier → rustls-native-certs → openssl-probe) looks
/// for CA certificates on Linux when `SSL_CERT_FILE` and `SSL_CERT_DIR` are unset.
const CA_LOCATIONS: &[&str] = &[
    CA_BUNDLE,
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/certs",
];

/// Whether a CA store the verifier can load exists: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set,
/// else one of the standard locations.
fn ca_store_present() -> bool {
    let from_env: Vec<std::path::PathBuf> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .filter_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
        .map(std::path::PathBuf::from)
        .collect();
    if !from_env.is_empty() {
        return from_env.iter().any(|p| p.exists());
    }
    CA_LOCATIONS
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// The error of a failed client construction, with its causes, saying what is missing when the
/// CA store is.
fn client_error(error: &(dyn std::error::Error + 'static), ca_store_present: bool) -> CallError {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    if ca_store_present {
        CallError::Client(chain)
    } else {
        CallError::Client(format!(
            "no CA certificates found ({chain}); the image must carry {CA_BUNDLE} or set SSL_CERT_FILE"
        ))
    }
}

/// The chat-completions client: one per run.
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: Url,
    api_key: ApiKey,
}

impl ChatClient {
    /// A client for `{base_url}/chat/completions`.
    pub fn new(base_url: &Url, api_key: ApiKey) -> Result<Self, CallError> {
        let url = Url::parse(&format!(
            "{}/chat/completions",
            base_url.as_str().trim_end_matches('/')
        ))
        .map_err(|e| CallError::Connect(format!("invalid base URL: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("llmjob-runner/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| client_error(&e, ca_store_present()))?;
        Ok(ChatClient { http, url, api_key })
    }

    /// Sends one attempt. `timeout` bounds the whole exchange, including reading the stream.
    pub async fn send(
        &self,
        request: &CreateChatCompletionRequest,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Completion, CallError> {
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.exchange(request, headers, started)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    async fn exchange(
        &self,
        request: &CreateChatCompletionRequest,
        headers: HeaderMap,
        started: Instant,
    ) -> Result<Completion, CallError> {
        let response = self
            .http
            .post(self.url.clone())
            .bearer_auth(self.api_key.expose())
            .headers(headers)
            .json(request)
            .send()
            .await
            .map_err(|e| classify_transport(&e, &self.api_key))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            return Err(CallError::Status {
                status: status.as_u16(),
                message: scrub(&api_error_message(&body, status), &self.api_key),
                retry_after,
            });
        }
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            read_stream(response, started, &self.api_key).await
        } else {
            let body = response
                .bytes()
                .await
                .map_err(|e| classify_transport(&e, &self.api_key))?;
            let parsed: CreateChatCompletionResponse = serde_json::from_slice(&body)
                .map_err(|e| CallError::Decode(format!("not a chat completion: {e}")))?;
            Ok(from_response(parsed))
        }
    }
}

fn classify_transport(error: &reqwest::Error, key: &ApiKey) -> CallError {
    if error.is_timeout() {
        CallError::Timeout(Duration::ZERO)
    } else if error.is_decode() || error.is_body() {
        CallError::Decode(scrub(&error.to_string(), key))
    } else {
        // Walk the source chain: reqwest's top-level message alone ("error sending request")
        // does not say why.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        CallError::Connect(scrub(&message, key))
    }
}

/// The `error.message` of an OpenAI-shaped error body, else the status text.
fn api_error_message(body: &str, status: reqwest::StatusCode) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
}

/// Reads `retry-after-ms` (OpenAI's, milliseconds) or `Retry-After` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn finish_reason_str<T: serde::Serialize>(reason: &T) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[allow(deprecated)] // `system_fingerprint` is deprecated by OpenAI but still returned and reported.
fn from_response(response: CreateChatCompletionResponse) -> Completion {
    let mut choices = response.choices;
    choices.sort_by_key(|c| c.index);
    let first = choices.first();
    Completion {
        content: first.and_then(|c| c.message.content.clone()),
        tool_calls: first
            .and_then(|c| c.message.tool_calls.as_ref())
            .map(|calls| {
                calls
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default(),
        finish_reasons: choices
            .iter()
            .filter_map(|c| c.finish_reason.as_ref().map(finish_reason_str))
            .collect(),
        usage: response.usage.as_ref().map(Usage::from),
        service_tier: response.service_tier.as_ref().map(finish_reason_str),
        system_fingerprint: response.system_fingerprint,
        id: response.id,
        model: response.model,
        time_to_first_chunk: None,
    }
}

/// Accumulates a streamed completion chunk by chunk.
#[derive(Default)]
struct StreamAccumulator {
    completion: Completion,
    content: String,
    saw_content: bool,
    finish: std::collections::BTreeMap<u32, String>,
    tool_calls: std::collections::BTreeMap<u32, Value>,
}

impl StreamAccumulator {
    #[allow(deprecated)] // see `from_response`
    fn push(&mut self, chunk: CreateChatCompletionStreamResponse) {
        let c = &mut self.completion;
        if c.id.is_empty() {
            c.id = chunk.id;
        }
        if c.model.is_empty() {
            c.model = chunk.model;
        }
        if let Some(tier) = chunk.service_tier.as_ref() {
            c.service_tier = Some(finish_reason_str(tier));
        }
        if chunk.system_fingerprint.is_some() {
            c.system_fingerprint = chunk.system_fingerprint;
        }
        if let Some(usage) = chunk.usage.as_ref() {
            c.usage = Some(Usage::from(usage));
        }
        for choice in chunk.choices {
            if let Some(reason) = choice.finish_reason.as_ref() {
                self.finish.insert(choice.index, finish_reason_str(reason));
            }
            if choice.index != 0 {
                continue;
            }
            if let Some(text) = choice.delta.content {
                self.saw_content = true;
                self.content.push_str(&text);
            }
            for call in choice.delta.tool_calls.unwrap_or_default() {
                let entry = self.tool_calls.entry(call.index).or_insert_with(|| {
                    serde_json::json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                });
                if let Some(id) = call.id {
                    entry["id"] = Value::String(id);
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name {
                        entry["function"]["name"] = Value::String(name);
                    }
                    if let Some(args) = function.arguments {
                        let so_far = entry["function"]["arguments"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        entry["function"]["arguments"] = Value::String(so_far + &args);
                    }
                }
            }
        }
    }

    fn finish(mut self) -> Completion {
        self.completion.content = self.saw_content.then_some(self.content);
        self.completion.tool_calls = self.tool_calls.into_values().collect();
        self.completion.finish_reasons = self.finish.into_values().collect();
        self.completion
    }
}

async fn read_stream(
    response: reqwest::Response,
    started: Instant,
    key: &ApiKey,
) -> Result<Completion, CallError> {
    let mut events = response.bytes_stream().eventsource();
    let mut acc = StreamAccumulator::default();
    let mut first_chunk = None;
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = event
            .map_err(|e| CallError::Decode(scrub(&format!("stream interrupted: {e}"), key)))?;
        if event.data.trim() == "[DONE]" {
            done = true;
            break;
        }
        if let Ok(value) = serde_json::from_str::<Value>(&event.data)
            && let Some(message) = value.pointer("/error/message").and_then(Value::as_str)
        {
            return Err(CallError::Status {
                status: 500,
                message: scrub(message, key),
                retry_after: None,
            });
        }
        let chunk: CreateChatCompletionStreamResponse = serde_json::from_str(&event.data)
            .map_err(|e| CallError::Decode(format!("not a chat completion chunk: {e}")))?;
        if first_chunk.is_none() && !chunk.choices.is_empty() {
            first_chunk = Some(started.elapsed());
        }
        acc.push(chunk);
    }
    if !done && acc.finish.is_empty() {
        return Err(CallError::Decode(
            "the stream ended before the completion finished".to_owned(),
        ));
    }
    let mut completion = acc.finish();
    completion.time_to_first_chunk = first_chunk;
    Ok(completion)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn classification_follows_the_exit_code_table() {
        let status = |s| CallError::Status {
            status: s,
            message: String::new(),
            retry_after: None,
        };
        for s in [400, 401, 403, 404, 422] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        assert_eq!(status(401).error_type(), "authentication");
        assert_eq!(status(429).error_type(), "rate_limited");
        assert_eq!(status(503).error_type(), "server_error");
        assert!(CallError::Timeout(Duration::ZERO).is_retryable());
        assert!(!CallError::Decode(String::new()).is_retryable());
        assert!(!CallError::Client(String::new()).is_retryable());
        assert_eq!(
            CallError::Client(String::new()).error_type(),
            "configuration_error"
        );
    }

    #[test]
    fn a_client_error_names_the_missing_ca_store() {
        let cause = std::io::Error::other("builder error");
        let err = client_error(&cause, false).to_string();
        assert!(
            err.starts_with(
                "cannot build the HTTP client: no CA certificates found (builder error)"
            ),
            "{err}"
        );
        assert!(
            err.contains(CA_BUNDLE) && err.contains("SSL_CERT_FILE"),
            "{err}"
        );
        let err = client_error(&cause, true).to_string();
        assert_eq!(err, "cannot build the HTTP client: builder error");
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn scrub_removes_keys() {
        let key = ApiKey::new("sk-proj-abcdef123456");
        let s = scrub(
            "Incorrect API key provided: sk-proj-***3456. You can find",
            &key,
        );
        assert!(!s.contains("sk-"), "{s}");
        let s = scrub("echo sk-proj-abcdef123456 here", &key);
        assert!(!s.contains("abcdef123456"), "{s}");
    }

    #[test]
    fn streamed_chunks_accumulate() {
        let mut acc = StreamAccumulator::default();
        for data in [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ] {
            acc.push(serde_json::from_str(data).unwrap());
        }
        let c = acc.finish();
        assert_eq!(c.content.as_deref(), Some("Hello"));
        assert_eq!(c.finish_reasons, vec!["stop"]);
        assert_eq!(c.usage.unwrap().total, 5);
        assert_eq!(c.id, "c1");
    }
}
