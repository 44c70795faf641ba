//! One HTTP attempt at the OpenAI chat-completions API: builds the request from the
//! configuration, sends it with the caller's headers (the `traceparent` of the chat span), reads
//! a JSON or server-sent-events response, and classifies failures.
//!
//! The request and response types are `async-openai`'s; the HTTP layer is our own `reqwest`
//! client because each attempt must be a span of its own, `Retry-After` must be read, and the
//! exit code depends on the status: `async-openai`'s client retries internally and hides those.
//! Retrying is the caller's decision ([`crate::retry`]); this module never sleeps.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessage, ChatCompletionStreamOptions,
    CreateChatCompletionRequest, StopConfiguration,
};
use eventsource_stream::{EventStreamError, Eventsource as _};
use futures::StreamExt as _;
use http::HeaderMap;
use llmjob_crds::v1alpha1::ContentCapture;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::{ApiKey, AuthStyle, Config, Connection, Input};

/// The most a successful response (a JSON body or a whole event stream) may take, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How much of an error response's body is read to find its `error` object.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Strings from the server that the runner reports (`id`, `model`, finish reasons, service tier,
/// system fingerprint, the error's `type`/`code`/`param`) are cut to this many bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// An error message or refusal from the server is cut to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// Token usage of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Total tokens (input + output when the server does not say).
    pub total: u64,
    /// Prompt tokens read from the cache, when reported.
    pub cache_read: Option<u64>,
    /// Reasoning tokens, when reported.
    pub reasoning: Option<u64>,
}

/// One choice of a completion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choice {
    /// The choice's `index`.
    pub index: u32,
    /// Its text.
    pub content: Option<String>,
    /// Its `refusal`, when the model refused.
    pub refusal: Option<String>,
    /// Its tool calls (`{"id", "type": "function", "function": {"name", "arguments"}}`), when the
    /// model called tools.
    pub tool_calls: Vec<Value>,
    /// Its finish reason, when the server sent one.
    pub finish_reason: Option<String>,
}

impl Choice {
    /// The choice's text, else its tool calls as JSON.
    pub fn answer(&self) -> String {
        match (&self.content, self.tool_calls.is_empty()) {
            (Some(text), _) => text.clone(),
            (None, false) => Value::Array(self.tool_calls.clone()).to_string(),
            (None, true) => String::new(),
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
    /// Every choice, in index order (at least one).
    pub choices: Vec<Choice>,
    /// Finish reason of every choice that has one, in index order.
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
    /// The first choice.
    pub fn first(&self) -> Option<&Choice> {
        self.choices.first()
    }

    /// What the runner prints: with one choice, its text, else its tool calls as JSON; with
    /// several, each under a `[choice N]` line.
    pub fn answer(&self) -> String {
        match self.choices.as_slice() {
            [] => String::new(),
            [only] => only.answer(),
            many => many
                .iter()
                .map(|c| format!("[choice {}]\n{}", c.index, c.answer()))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The `error` object of an OpenAI-shaped error response. `kind`, `code` and `param` are
/// identifiers, reported in every capture mode; `message` is free text that servers fill with
/// parts of the request, reported only with content capture `full`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// `error.type`, e.g. `invalid_request_error`.
    pub kind: Option<String>,
    /// `error.code`, e.g. `invalid_api_key`.
    pub code: Option<String>,
    /// `error.param`, e.g. `messages`.
    pub param: Option<String>,
    /// `error.message` (keys scrubbed, at most [`MAX_MESSAGE_CHARS`] characters).
    pub message: Option<String>,
}

impl ApiError {
    /// Reads the `error` object of a body, when it has one.
    fn from_body(body: &[u8], key: &ApiKey) -> Option<ApiError> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Self::from_value(&value, key)
    }

    fn from_value(value: &Value, key: &ApiKey) -> Option<ApiError> {
        // OpenAI nests it under `error`; vLLM and other FastAPI servers put the same fields at
        // the top level, marked `"object": "error"`.
        let error = value.get("error").filter(|e| e.is_object()).or_else(|| {
            (value.get("object").and_then(Value::as_str) == Some("error")).then_some(value)
        })?;
        let text = |name: &str| match error.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let ident = |name: &str| text(name).map(|s| clip(&scrub(&s, key), MAX_FIELD_BYTES));
        Some(ApiError {
            kind: ident("type"),
            code: ident("code"),
            param: ident("param"),
            message: text("message").map(|m| shorten(&scrub(&m, key))),
        })
    }

    /// `(type …, code …, param …)`, or nothing when the server named none of them.
    fn identifiers(&self) -> String {
        let parts: Vec<String> = [
            ("type", &self.kind),
            ("code", &self.code),
            ("param", &self.param),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name} {v}")))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// Why an attempt failed.
///
/// `Display` never includes text the server wrote freely (error messages, refusals, parser
/// complaints quoting the body): it is what every capture mode may export. [`CallError::describe`]
/// adds that text when the capture mode is `full`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error status (or an `error` event inside a stream).
    #[error("HTTP {status}{}", api.identifiers())]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's `error` object.
        api: ApiError,
        /// How long the server asked us to wait (`retry-after-ms` / `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No response (or no complete response) within the time left.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed, or dropped before the response was complete.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The response was complete but is not a usable chat completion.
    #[error("unexpected response: {reason}")]
    Decode {
        /// What is wrong, in the runner's words.
        reason: String,
        /// The parser's own words, which may quote the body (capture `full` only).
        detail: Option<String>,
    },
    /// The model refused to answer (the first choice carries a `refusal`).
    #[error("the model refused to answer")]
    Refused {
        /// The refusal text (capture `full` only).
        text: String,
    },
    /// The request cannot be built from the configuration.
    #[error("cannot build the request: {0}")]
    Request(String),
    /// The HTTP client could not be built (before any request): a configuration error of the
    /// environment, e.g. a root file system without a CA store. Exit code 2.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The run was cancelled by a signal (SIGTERM, SIGINT) before the call finished: the pod is
    /// being deleted or evicted. Exit code 5.
    #[error("cancelled by {0} before the call finished")]
    Cancelled(&'static str),
}

impl CallError {
    fn decode(reason: impl Into<String>) -> CallError {
        CallError::Decode {
            reason: reason.into(),
            detail: None,
        }
    }

    /// The description exported under `capture`: [`Display`](std::fmt::Display), plus the
    /// server's own text when `capture` is `full`.
    pub fn describe(&self, capture: ContentCapture) -> String {
        let extra = match (capture, self) {
            (ContentCapture::Full, CallError::Status { api, .. }) => api.message.as_deref(),
            (ContentCapture::Full, CallError::Decode { detail, .. }) => detail.as_deref(),
            (ContentCapture::Full, CallError::Refused { text }) => Some(text.as_str()),
            _ => None,
        };
        match extra {
            Some(extra) => format!("{self}: {extra}"),
            None => self.to_string(),
        }
    }

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
            CallError::Decode { .. } => "invalid_response",
            CallError::Refused { .. } => "refusal",
            CallError::Request(_) => "configuration_error",
            CallError::Client(_) => "configuration_error",
            CallError::Cancelled(_) => "cancelled",
        }
    }

    /// Whether another attempt may succeed: 408, 409, 429, 5xx, timeouts and connection errors
    /// (the OpenAI SDKs' rule). 400/401/403/404/422, unusable responses, refusals and requests
    /// that cannot be built are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..=599),
            CallError::Timeout(_) | CallError::Connect(_) => true,
            CallError::Decode { .. }
            | CallError::Refused { .. }
            | CallError::Request(_)
            | CallError::Client(_)
            | CallError::Cancelled(_) => false,
        }
    }

    /// The HTTP status, when there was an error response.
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

/// Builds the chat-completions request body from the configuration, asking `input` (the
/// configuration's own, or a batch item's).
#[allow(deprecated)] // `seed` is deprecated by OpenAI (best effort) but still accepted and documented.
pub fn build_request(config: &Config, input: &Input) -> CreateChatCompletionRequest {
    let messages = match input {
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
        stop: p.stop.clone().map(StopConfiguration::StringArray),
        frequency_penalty: p.frequency_penalty,
        presence_penalty: p.presence_penalty,
        n: p.n,
        tools: p.tools.clone(),
        tool_choice: p.tool_choice.clone(),
        response_format: p.response_format.clone(),
        reasoning_effort: p.reasoning_effort.clone(),
        service_tier: p.service_tier.clone(),
        user: p.user.clone(),
        ..Default::default()
    }
}

/// `{base_url}/chat/completions`, keeping the base URL's query and adding Azure's
/// `api-version` when one is configured (replacing one already in the base URL).
pub fn chat_url(base_url: &Url, api_version: Option<&str>) -> Url {
    let mut url = base_url.clone();
    let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
    url.set_path(&path);
    if let Some(version) = api_version {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "api-version")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("api-version", version);
    }
    url
}

/// `server.address` and `server.port` of a base URL.
pub fn server_of(url: &Url) -> (String, u16) {
    (
        url.host_str().unwrap_or_default().to_owned(),
        url.port_or_known_default().unwrap_or(443),
    )
}

/// The base URL as exported in `gen_ai.openai.api_base`: without `user:password@`, query string
/// or fragment, which may carry credentials.
pub fn api_base(url: &Url) -> String {
    let mut url = url.clone();
    // Both only fail for URLs that cannot have credentials (no host), which have none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// `gen_ai.provider.name` of a base URL, detected as OpenLLMetry's OpenAI instrumentation
/// detects it (a substring of the URL): Azure OpenAI, AWS Bedrock, Google Vertex AI and
/// OpenRouter by their host names; anything else is `openai`. Credentials and the query are
/// removed first, so they cannot change the answer.
pub fn provider_of(url: &Url) -> &'static str {
    let base = api_base(url);
    if base.contains("openai.azure.com") {
        "azure.ai.openai"
    } else if base.contains("amazonaws.com") || base.contains("bedrock") {
        "aws.bedrock"
    } else if base.contains("googleapis.com") || base.contains("vertex") {
        "gcp.vertex_ai"
    } else if base.contains("openrouter.ai") {
        "openrouter"
    } else {
        crate::attributes::PROVIDER
    }
}

/// Shapes of API keys and tokens of common providers. Each must start at a word boundary; a
/// match counts only when it contains a digit or a `*` (see [`scrub`]).
static KEY_SHAPES: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, compiled by a unit test
    regex::Regex::new(
        r"(?x)
        \b(?:
            sk-[A-Za-z0-9_*\-]{6,}                        # OpenAI (sk-, sk-proj-, masked), Anthropic (sk-ant-)
          | (?:AKIA|ASIA)[0-9A-Z]{16}                     # AWS access key id
          | AIza[0-9A-Za-z_\-]{30,}                        # Google API key
          | (?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}       # GitHub tokens
          | github_pat_[A-Za-z0-9_]{20,}                   # GitHub fine-grained tokens
          | hf_[A-Za-z0-9]{20,}                            # Hugging Face
          | gsk_[A-Za-z0-9]{20,}                           # Groq
          | xai-[A-Za-z0-9]{20,}                           # xAI
          | xox[abposr]-[A-Za-z0-9\-]{10,}                 # Slack
          | eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*  # JWT
        )
        | (?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}            # a bearer token
        ",
    )
    .expect("the key-shape pattern compiles")
});

/// Removes the API key, and anything shaped like a provider's key or a bearer token, from text
/// the server wrote; the result has at most [`MAX_MESSAGE_CHARS`] characters plus `...`.
///
/// A shape only matches at a word boundary and only when the match holds a digit or a `*` (real
/// keys are random, masked ones show `***`), so ordinary words such as `task-runner` or
/// `sk-learn` are kept. The literal key is replaced when it is at least 8 characters long
/// (shorter values would redact ordinary text and are no secret worth the name).
pub fn scrub(message: &str, key: &ApiKey) -> String {
    let literal = key.expose();
    let replaced = if literal.len() >= 8 {
        message.replace(literal, "<redacted>")
    } else {
        message.to_owned()
    };
    KEY_SHAPES
        .replace_all(&replaced, |caps: &regex::Captures<'_>| {
            let token = &caps[0];
            if token.bytes().any(|b| b.is_ascii_digit() || b == b'*') {
                "<redacted>".to_owned()
            } else {
                token.to_owned()
            }
        })
        .into_owned()
}

/// At most [`MAX_MESSAGE_CHARS`] characters, `...` marking a cut.
fn shorten(text: &str) -> String {
    llmjob_crds::text::shorten_chars(text, MAX_MESSAGE_CHARS)
}

/// At most `max` bytes, cut on a character boundary.
fn clip(text: &str, max: usize) -> String {
    text[..llmjob_crds::text::floor_char_boundary(text, max)].to_owned()
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
    let chain = with_causes(error);
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
    /// The key's header, and the organisation and project headers.
    headers: HeaderMap,
}

impl ChatClient {
    /// A client for `{base_url}/chat/completions` (with `api-version` for Azure), sending the key
    /// as `connection.auth_style` says and the organisation and project headers when set.
    pub fn new(
        base_url: &Url,
        api_key: ApiKey,
        connection: &Connection,
    ) -> Result<Self, CallError> {
        let url = chat_url(base_url, connection.api_version.as_deref());
        let header = |value: String| {
            let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
                CallError::Request("a header value holds characters a header cannot carry".into())
            })?;
            value.set_sensitive(true);
            Ok::<_, CallError>(value)
        };
        let mut headers = HeaderMap::new();
        match connection.auth_style {
            AuthStyle::Bearer => headers.insert(
                http::header::AUTHORIZATION,
                header(format!("Bearer {}", api_key.expose()))?,
            ),
            AuthStyle::ApiKey => headers.insert("api-key", header(api_key.expose().to_owned())?),
        };
        if let Some(org) = &connection.organization {
            headers.insert("openai-organization", header(org.clone())?);
        }
        if let Some(project) = &connection.project {
            headers.insert("openai-project", header(project.clone())?);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("llmjob-runner/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| client_error(&e, ca_store_present()))?;
        Ok(ChatClient {
            http,
            url,
            api_key,
            headers,
        })
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
        let mut response = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .headers(headers)
            .json(request)
            .send()
            .await
            .map_err(|e| classify_transport(e, &self.api_key))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            // A body cut short still tells the status; what it says is best effort.
            let body = read_capped(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            let api = ApiError::from_body(&body, &self.api_key).unwrap_or_default();
            return Err(CallError::Status {
                status: status.as_u16(),
                api,
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
            let body = match read_capped(&mut response, MAX_RESPONSE_BYTES + 1).await {
                Ok(body) if body.len() > MAX_RESPONSE_BYTES => return Err(too_large()),
                Ok(body) => body,
                Err(e) => return Err(classify_transport(e, &self.api_key)),
            };
            parse_response(&body)
        }
    }
}

fn too_large() -> CallError {
    CallError::decode(format!(
        "the response is larger than {} MiB",
        MAX_RESPONSE_BYTES / (1024 * 1024)
    ))
}

/// Reads a body up to `cap` bytes (stopping there).
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Ok(body)
}

/// The text of an error and its sources, without the request URL (which may carry
/// credentials), scrubbed.
fn error_chain(error: reqwest::Error, key: &ApiKey) -> String {
    shorten(&scrub(&with_causes(&error.without_url()), key))
}

/// An error's message followed by its causes' messages, `: `-separated.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn classify_transport(error: reqwest::Error, key: &ApiKey) -> CallError {
    if error.is_timeout() {
        CallError::Timeout(Duration::ZERO)
    } else if error.is_builder() {
        CallError::Request(error_chain(error, key))
    } else if error.is_decode() {
        CallError::Decode {
            reason: "the body could not be decoded".to_owned(),
            detail: Some(error_chain(error, key)),
        }
    } else {
        // Connecting, sending, and reading a body that ends early (`is_body`): the connection
        // failed, and another attempt may get through.
        CallError::Connect(error_chain(error, key))
    }
}

/// A non-negative, finite number of seconds as a duration, saturating at [`Duration::MAX`].
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// Reads `retry-after-ms` (OpenAI's, milliseconds) or `Retry-After` (seconds or an HTTP date).
/// Values that are not numbers, negative, infinite or not dates are ignored; absurdly large ones
/// saturate (and then exceed any deadline).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(wait) = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(wait);
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

// The wire format, read leniently: every field optional, enum-like values (finish reasons,
// service tiers) as plain strings, unknown fields ignored. Compatible servers differ in all of
// these, and none of the differences makes an answer unusable.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<WireTokenDetails>,
    completion_tokens_details: Option<WireTokenDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireTokenDetails {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let input = u.prompt_tokens.unwrap_or(0);
        let output = u.completion_tokens.unwrap_or(0);
        Usage {
            input,
            output,
            total: u.total_tokens.unwrap_or(input.saturating_add(output)),
            cache_read: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            reasoning: u
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireResponse {
    id: Option<String>,
    model: Option<String>,
    choices: Option<Vec<WireChoice>>,
    usage: Option<WireUsage>,
    service_tier: Option<String>,
    system_fingerprint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireChoice {
    index: Option<u32>,
    message: Option<WireMessage>,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMessage {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<Value>>,
}

/// The `reason`, with serde's own words (which may quote the body) as the detail.
fn not_json(what: &str, e: &serde_json::Error) -> CallError {
    let reason = match e.classify() {
        serde_json::error::Category::Io | serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Eof => "JSON that ends early",
        serde_json::error::Category::Data => "JSON of the wrong shape",
    };
    CallError::Decode {
        reason: format!(
            "{what} is {reason} (line {}, column {})",
            e.line(),
            e.column()
        ),
        detail: Some(shorten(&e.to_string())),
    }
}

fn clip_opt(text: Option<String>) -> Option<String> {
    text.map(|t| clip(&t, MAX_FIELD_BYTES))
}

/// Parses a non-streamed response body. A body without choices is not a completion.
pub fn parse_response(body: &[u8]) -> Result<Completion, CallError> {
    let response: WireResponse =
        serde_json::from_slice(body).map_err(|e| not_json("the response", &e))?;
    let mut choices = response.choices.unwrap_or_default();
    if choices.is_empty() {
        return Err(CallError::decode("the response has no choices"));
    }
    choices.sort_by_key(|c| c.index.unwrap_or(0));
    let choices: Vec<Choice> = choices
        .into_iter()
        .enumerate()
        .map(|(position, c)| {
            let message = c.message.unwrap_or_default();
            Choice {
                index: c
                    .index
                    .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
                content: message.content,
                refusal: message.refusal.filter(|r| !r.is_empty()),
                tool_calls: message.tool_calls.unwrap_or_default(),
                finish_reason: clip_opt(c.finish_reason),
            }
        })
        .collect();
    let finish_reasons = choices
        .iter()
        .filter_map(|c| c.finish_reason.clone())
        .collect();
    Ok(Completion {
        id: clip(&response.id.unwrap_or_default(), MAX_FIELD_BYTES),
        model: clip(&response.model.unwrap_or_default(), MAX_FIELD_BYTES),
        choices,
        finish_reasons,
        usage: response.usage.map(Usage::from),
        service_tier: clip_opt(response.service_tier),
        system_fingerprint: clip_opt(response.system_fingerprint),
        time_to_first_chunk: None,
    })
}

/// One streamed tool call being assembled.
#[derive(Debug, Default)]
struct ToolCallParts {
    id: String,
    name: String,
    arguments: String,
}

/// One streamed choice being assembled.
#[derive(Debug, Default)]
struct ChoiceParts {
    content: String,
    saw_content: bool,
    refusal: String,
    finish: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallParts>,
}

/// The most choices a stream may carry (OpenAI's limit of `n`); chunks for other indexes are
/// ignored, so a hostile stream cannot grow the map without bound.
const MAX_STREAM_CHOICES: u32 = 128;

/// Accumulates a streamed completion chunk by chunk.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    completion: Completion,
    saw_choice: bool,
    choices: BTreeMap<u32, ChoiceParts>,
}

impl StreamAccumulator {
    /// Adds one chunk.
    fn push(&mut self, chunk: WireResponse) {
        let c = &mut self.completion;
        if c.id.is_empty()
            && let Some(id) = chunk.id
        {
            c.id = clip(&id, MAX_FIELD_BYTES);
        }
        if c.model.is_empty()
            && let Some(model) = chunk.model
        {
            c.model = clip(&model, MAX_FIELD_BYTES);
        }
        if chunk.service_tier.is_some() {
            c.service_tier = clip_opt(chunk.service_tier);
        }
        if chunk.system_fingerprint.is_some() {
            c.system_fingerprint = clip_opt(chunk.system_fingerprint);
        }
        if let Some(usage) = chunk.usage {
            c.usage = Some(Usage::from(usage));
        }
        for choice in chunk.choices.unwrap_or_default() {
            self.saw_choice = true;
            let index = choice.index.unwrap_or(0);
            if index >= MAX_STREAM_CHOICES {
                continue;
            }
            let parts = self.choices.entry(index).or_default();
            if let Some(reason) = choice.finish_reason {
                parts.finish = Some(clip(&reason, MAX_FIELD_BYTES));
            }
            let delta = choice.delta.or(choice.message).unwrap_or_default();
            if let Some(text) = delta.content {
                parts.saw_content = true;
                parts.content.push_str(&text);
            }
            if let Some(text) = delta.refusal {
                parts.refusal.push_str(&text);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = parts.tool_calls.entry(index).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    entry.id = id.to_owned();
                }
                if let Some(function) = call.get("function") {
                    if let Some(name) = function.get("name").and_then(Value::as_str) {
                        entry.name = name.to_owned();
                    }
                    if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                        entry.arguments.push_str(args);
                    }
                }
            }
        }
    }

    /// Whether any choice has a finish reason (the answer is complete even without `[DONE]`).
    fn finished(&self) -> bool {
        self.choices.values().any(|c| c.finish.is_some())
    }

    /// The completion so far.
    fn finish(mut self) -> Completion {
        self.completion.choices = self
            .choices
            .into_iter()
            .map(|(index, parts)| Choice {
                index,
                content: parts.saw_content.then_some(parts.content),
                refusal: (!parts.refusal.is_empty()).then_some(parts.refusal),
                tool_calls: parts
                    .tool_calls
                    .into_values()
                    .map(|t| {
                        serde_json::json!({"id": t.id, "type": "function",
                            "function": {"name": t.name, "arguments": t.arguments}})
                    })
                    .collect(),
                finish_reason: parts.finish,
            })
            .collect();
        self.completion.finish_reasons = self
            .completion
            .choices
            .iter()
            .filter_map(|c| c.finish_reason.clone())
            .collect();
        self.completion
    }
}

/// What one server-sent event means.
enum Event {
    /// `[DONE]`: the stream is complete.
    Done,
    /// A chunk was added.
    Chunk {
        /// It carried at least one choice.
        has_choices: bool,
    },
}

/// Handles the data of one server-sent event.
fn stream_event(acc: &mut StreamAccumulator, data: &str, key: &ApiKey) -> Result<Event, CallError> {
    if data.trim() == "[DONE]" {
        return Ok(Event::Done);
    }
    let value: Value = serde_json::from_str(data).map_err(|e| not_json("a stream event", &e))?;
    if let Some(api) = ApiError::from_value(&value, key) {
        // An error event after the 200: the server failed mid-answer.
        return Err(CallError::Status {
            status: 500,
            api,
            retry_after: None,
        });
    }
    let chunk: WireResponse =
        serde_json::from_value(value).map_err(|e| not_json("a stream event", &e))?;
    let has_choices = chunk.choices.as_ref().is_some_and(|c| !c.is_empty());
    acc.push(chunk);
    Ok(Event::Chunk { has_choices })
}

/// Why the byte stream stopped early.
#[derive(Debug, thiserror::Error)]
enum StreamStop {
    #[error("{0}")]
    Transport(reqwest::Error),
    #[error("the stream is larger than the limit")]
    TooLarge,
}

async fn read_stream(
    response: reqwest::Response,
    started: Instant,
    key: &ApiKey,
) -> Result<Completion, CallError> {
    let mut total = 0usize;
    let bytes = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(StreamStop::Transport)?;
        total = total.saturating_add(chunk.len());
        if total > MAX_RESPONSE_BYTES {
            Err(StreamStop::TooLarge)
        } else {
            Ok(chunk)
        }
    });
    let mut events = bytes.eventsource();
    let mut acc = StreamAccumulator::default();
    let mut first_chunk = None;
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(EventStreamError::Transport(StreamStop::TooLarge)) => return Err(too_large()),
            Err(EventStreamError::Transport(StreamStop::Transport(e))) => {
                return Err(classify_transport(e, key));
            }
            Err(e) => {
                return Err(CallError::Decode {
                    reason: "the event stream is malformed".to_owned(),
                    detail: Some(shorten(&scrub(&e.to_string(), key))),
                });
            }
        };
        match stream_event(&mut acc, &event.data, key)? {
            Event::Done => {
                done = true;
                break;
            }
            Event::Chunk { has_choices } => {
                if first_chunk.is_none() && has_choices {
                    first_chunk = Some(started.elapsed());
                }
            }
        }
    }
    finish_stream(acc, done, first_chunk)
}

/// The completion of a stream that ended (`done`: with `[DONE]`).
fn finish_stream(
    acc: StreamAccumulator,
    done: bool,
    first_chunk: Option<Duration>,
) -> Result<Completion, CallError> {
    if !done && !acc.finished() {
        return Err(CallError::Connect(
            "the stream ended before the completion finished".to_owned(),
        ));
    }
    if !acc.saw_choice {
        return Err(CallError::decode("the stream carried no choices"));
    }
    let mut completion = acc.finish();
    completion.time_to_first_chunk = first_chunk;
    Ok(completion)
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;

    use super::*;

    fn status(s: u16) -> CallError {
        CallError::Status {
            status: s,
            api: ApiError::default(),
            retry_after: None,
        }
    }

    #[test]
    fn classification_follows_the_exit_code_table() {
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
        assert!(CallError::Connect(String::new()).is_retryable());
        assert!(!CallError::decode("x").is_retryable());
        assert!(!CallError::Refused { text: "no".into() }.is_retryable());
        assert!(!CallError::Request("x".into()).is_retryable());
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
    fn server_text_is_described_only_with_full_capture() {
        let key = ApiKey::new("sk-test-LEAKCHECK-1234567890");
        let body = br#"{"error":{"message":"Invalid URL in prompt: http://secret.example/ECHO","type":"invalid_request_error","param":"messages","code":"invalid_value"}}"#;
        let api = ApiError::from_body(body, &key).unwrap();
        let e = CallError::Status {
            status: 400,
            api,
            retry_after: None,
        };
        for mode in [ContentCapture::None, ContentCapture::Hash] {
            let text = e.describe(mode);
            assert_eq!(
                text,
                "HTTP 400 (type invalid_request_error, code invalid_value, param messages)"
            );
        }
        assert!(
            e.describe(ContentCapture::Full)
                .ends_with("secret.example/ECHO")
        );
        let refused = CallError::Refused {
            text: "I cannot".into(),
        };
        assert_eq!(
            refused.describe(ContentCapture::Hash),
            "the model refused to answer"
        );
        assert!(refused.describe(ContentCapture::Full).contains("I cannot"));
        let err = parse_response(br#"{"choices": "ECHO-ME"}"#).unwrap_err();
        assert!(
            !err.describe(ContentCapture::None).contains("ECHO"),
            "{err:?}"
        );
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
        for absurd in ["1e300", "18446744073709551616", "99999999999999999999999"] {
            h.insert("retry-after", absurd.parse().unwrap());
            assert_eq!(retry_after(&h), Some(Duration::MAX), "{absurd}");
        }
        for ignored in ["-1", "NaN", "inf", "1e400"] {
            h.insert("retry-after", ignored.parse().unwrap());
            assert_eq!(retry_after(&h), None, "{ignored}");
        }
    }

    #[test]
    fn scrub_removes_keys_and_keeps_words() {
        let key = ApiKey::new("sk-proj-abcdef123456");
        let s = scrub(
            "Incorrect API key provided: sk-proj-***3456. You can find",
            &key,
        );
        assert!(!s.contains("sk-"), "{s}");
        assert!(s.ends_with("<redacted>. You can find"), "{s}");
        let s = scrub("echo sk-proj-abcdef123456 here", &key);
        assert!(!s.contains("abcdef123456"), "{s}");
        for secret in [
            "sk-ant-api03-AbCdEf0123456789",
            "AKIAIOSFODNN7EXAMPLE",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "ghp_0123456789abcdefghijABCDEFGHIJ",
            "hf_0123456789abcdefghijABCDEFGHIJ",
            "Bearer abc.def-123456",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        ] {
            let s = scrub(&format!("token {secret} rejected"), &ApiKey::new("k"));
            assert_eq!(s, "token <redacted> rejected", "{secret}");
        }
        for words in [
            "the task-runner failed",
            "use sk-learn or desk-top",
            "ask-me-anything about risk-free",
            "Bearer tokens are described in RFC",
        ] {
            assert_eq!(scrub(words, &ApiKey::new("k")), words);
        }
        assert_eq!(
            scrub("a k in a kettle", &ApiKey::new("k")),
            "a k in a kettle",
            "a short key does not redact letters"
        );
    }

    #[test]
    fn api_base_drops_credentials_and_query() {
        let url = Url::parse("https://user:pass@llm.example:8443/v1?api-key=SECRET#frag").unwrap();
        assert_eq!(api_base(&url), "https://llm.example:8443/v1");
    }

    #[test]
    fn the_provider_is_detected_from_the_base_url() {
        let provider = |u: &str| provider_of(&Url::parse(u).unwrap());
        assert_eq!(provider("https://api.openai.com/v1"), "openai");
        assert_eq!(provider("http://127.0.0.1:8089/v1"), "openai");
        assert_eq!(
            provider("https://my.openai.azure.com/openai/deployments/d"),
            "azure.ai.openai"
        );
        assert_eq!(
            provider("https://bedrock-runtime.us-east-1.amazonaws.com/openai/v1"),
            "aws.bedrock"
        );
        assert_eq!(
            provider("https://us-central1-aiplatform.googleapis.com/v1/projects/p"),
            "gcp.vertex_ai"
        );
        assert_eq!(provider("https://openrouter.ai/api/v1"), "openrouter");
        assert_eq!(
            provider("https://u:bedrock@llm.example/v1?vertex=1"),
            "openai",
            "neither credentials nor the query count"
        );
    }

    #[test]
    fn lenient_parsing_keeps_good_answers() {
        let c = parse_response(
            br#"{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"eos_token"}],
                "usage":{"prompt_tokens":3,"completion_tokens":2},"service_tier":"flex-2"}"#,
        )
        .unwrap();
        assert_eq!(c.finish_reasons, vec!["eos_token"]);
        assert_eq!(c.service_tier.as_deref(), Some("flex-2"));
        assert_eq!(c.usage.unwrap().total, 5);
        assert_eq!(c.answer(), "hi");
        let c = parse_response(br#"{"choices":[{"message":{"content":"ok"}}]}"#).unwrap();
        assert_eq!((c.id.as_str(), c.answer().as_str()), ("", "ok"));
    }

    #[test]
    fn empty_choices_and_refusals_are_reported() {
        assert!(matches!(
            parse_response(br#"{"id":"x","choices":[]}"#),
            Err(CallError::Decode { .. })
        ));
        let c = parse_response(
            br#"{"choices":[{"index":0,"message":{"content":null,"refusal":"I can't help"},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].refusal.as_deref(), Some("I can't help"));
        let acc = StreamAccumulator::default();
        assert!(matches!(
            finish_stream(acc, true, None),
            Err(CallError::Decode { .. })
        ));
        let acc = StreamAccumulator::default();
        assert!(matches!(
            finish_stream(acc, false, None),
            Err(CallError::Connect(_))
        ));
    }

    #[test]
    fn oversized_fields_are_clipped() {
        let body = format!(
            r#"{{"id":"{}","model":"{}","choices":[{{"message":{{"content":"a"}},"finish_reason":"stop"}}]}}"#,
            "i".repeat(100_000),
            "é".repeat(50_000)
        );
        let c = parse_response(body.as_bytes()).unwrap();
        assert!(c.id.len() <= MAX_FIELD_BYTES && c.model.len() <= MAX_FIELD_BYTES);
    }

    #[test]
    fn streamed_chunks_accumulate() {
        let key = ApiKey::new("k");
        let mut acc = StreamAccumulator::default();
        for data in [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo","tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ] {
            assert!(matches!(
                stream_event(&mut acc, data, &key),
                Ok(Event::Chunk { .. })
            ));
        }
        assert!(matches!(
            stream_event(&mut acc, " [DONE]", &key),
            Ok(Event::Done)
        ));
        let c = finish_stream(acc, true, None).unwrap();
        assert_eq!(c.choices[0].content.as_deref(), Some("Hello"));
        assert_eq!(c.finish_reasons, vec!["stop"]);
        assert_eq!(c.usage.unwrap().total, 5);
        assert_eq!(c.id, "c1");
        assert_eq!(
            c.choices[0].tool_calls[0]["function"]["arguments"],
            "{\"a\":1}"
        );
        let mut acc = StreamAccumulator::default();
        let err = stream_event(
            &mut acc,
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
            &key,
        );
        assert!(matches!(err, Err(CallError::Status { status: 500, .. })));
    }

    #[test]
    fn the_request_carries_every_option_set() {
        let vars = [
            ("OPENAI_API_KEY", "k"),
            ("LLMJOB_STOP", "END"),
            ("LLMJOB_FREQUENCY_PENALTY", "0.5"),
            ("LLMJOB_PRESENCE_PENALTY", "-0.5"),
            ("LLMJOB_N", "2"),
            (
                "LLMJOB_TOOLS",
                r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#,
            ),
            (
                "LLMJOB_TOOL_CHOICE",
                r#"{"type":"function","function":{"name":"f"}}"#,
            ),
            ("LLMJOB_RESPONSE_FORMAT", "json_object"),
            ("LLMJOB_REASONING_EFFORT", "high"),
            ("LLMJOB_SERVICE_TIER", "priority"),
            ("LLMJOB_USER", "u-1"),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        let body = serde_json::to_value(build_request(&config, &config.input)).unwrap();
        assert_eq!(body["stop"], serde_json::json!(["END"]));
        assert_eq!(body["frequency_penalty"], 0.5);
        assert_eq!(body["presence_penalty"], -0.5);
        assert_eq!(body["n"], 2);
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "f");
        assert_eq!(
            body["tool_choice"],
            serde_json::json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(
            body["response_format"],
            serde_json::json!({"type": "json_object"})
        );
        assert_eq!(body["reasoning_effort"], "high");
        assert_eq!(body["service_tier"], "priority");
        assert_eq!(body["user"], "u-1");
        let plain =
            Config::from_lookup(|name| (name == "OPENAI_API_KEY").then(|| "k".to_owned())).unwrap();
        let body = serde_json::to_value(build_request(&plain, &plain.input)).unwrap();
        for unset in [
            "stop",
            "n",
            "tools",
            "tool_choice",
            "response_format",
            "user",
            "service_tier",
        ] {
            assert!(body.get(unset).is_none(), "{unset} sent unset: {body}");
        }
    }

    #[test]
    fn the_chat_url_keeps_the_query_and_adds_the_api_version() {
        let url = |base: &str, version: Option<&str>| {
            chat_url(&Url::parse(base).unwrap(), version).to_string()
        };
        assert_eq!(
            url("http://127.0.0.1:9/v1", None),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(
            url(
                "https://res.openai.azure.com/openai/deployments/gpt-4o/",
                Some("2024-10-21")
            ),
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            url("https://x.example/v1?api-version=old&tenant=a", Some("new")),
            "https://x.example/v1/chat/completions?tenant=a&api-version=new"
        );
        assert_eq!(
            url("https://x.example/v1?tenant=a", None),
            "https://x.example/v1/chat/completions?tenant=a"
        );
    }

    #[test]
    fn several_choices_are_all_kept() {
        let c = parse_response(
            br#"{"id":"x","choices":[
                {"index":1,"message":{"content":"two"},"finish_reason":"length"},
                {"index":0,"message":{"content":"one"},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(c.finish_reasons, vec!["stop", "length"]);
        assert_eq!(c.choices.len(), 2);
        assert_eq!(c.answer(), "[choice 0]\none\n[choice 1]\ntwo");
        let key = ApiKey::new("k");
        let mut acc = StreamAccumulator::default();
        for data in [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"o"}},{"index":1,"delta":{"content":"t"}}]}"#,
            r#"{"id":"c","choices":[{"index":1,"delta":{"content":"wo"},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"ne"},"finish_reason":"length"}]}"#,
            r#"{"id":"c","choices":[{"index":999999,"delta":{"content":"ignored"}}]}"#,
        ] {
            assert!(stream_event(&mut acc, data, &key).is_ok());
        }
        let c = finish_stream(acc, true, None).unwrap();
        assert_eq!(c.finish_reasons, vec!["length", "stop"]);
        assert_eq!(c.choices.len(), 2, "an index beyond 128 is ignored");
        assert_eq!(c.choices[1].content.as_deref(), Some("two"));
    }

    #[test]
    fn the_key_shape_pattern_compiles() {
        assert!(KEY_SHAPES.is_match("sk-0123456789"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn parsing_any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_response(&body);
        }

        #[test]
        fn parsing_json_shaped_bodies_never_panics(
            id in ".{0,40}",
            reason in proptest::option::of(".{0,20}"),
            total in proptest::option::of(any::<u64>()),
            prompt in proptest::option::of(any::<u64>()),
            n in 0usize..4,
        ) {
            let choices: Vec<Value> = (0..n)
                .map(|i| serde_json::json!({"index": i, "message": {"content": id}, "finish_reason": reason}))
                .collect();
            let body = serde_json::json!({"id": id, "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": prompt, "total_tokens": total}});
            let parsed = parse_response(body.to_string().as_bytes());
            prop_assert_eq!(parsed.is_ok(), n > 0);
        }

        #[test]
        fn any_stream_event_is_handled(data in ".{0,300}", json_ish in "\\{\"(id|choices|error|usage)\":.{0,60}\\}") {
            let key = ApiKey::new("sk-test-0123456789");
            let mut acc = StreamAccumulator::default();
            let _ = stream_event(&mut acc, &data, &key);
            let _ = stream_event(&mut acc, &json_ish, &key);
            let _ = finish_stream(acc, false, None);
        }

        #[test]
        fn any_sse_byte_stream_is_handled(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let key = ApiKey::new("k");
            let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
            let events = futures::executor::block_on(stream.eventsource().collect::<Vec<_>>());
            let mut acc = StreamAccumulator::default();
            for event in events.into_iter().flatten() {
                if stream_event(&mut acc, &event.data, &key).is_err() {
                    break;
                }
            }
            let _ = finish_stream(acc, true, None);
        }

        #[test]
        fn any_retry_after_value_is_handled(value in "[ -~]{0,40}", ms in "[ -~]{0,40}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = value.parse() {
                h.insert("retry-after", v);
            }
            let _ = retry_after(&h);
            if let Ok(v) = ms.parse() {
                h.insert("retry-after-ms", v);
            }
            let _ = retry_after(&h);
        }

        #[test]
        fn any_number_as_retry_after_is_handled(secs in any::<f64>()) {
            let mut h = HeaderMap::new();
            h.insert("retry-after", secs.to_string().parse().unwrap());
            let wait = retry_after(&h);
            prop_assert_eq!(wait.is_some(), secs.is_finite() && secs >= 0.0);
        }

        #[test]
        fn scrub_never_panics_and_removes_the_key(prefix in ".{0,40}", suffix in ".{0,40}") {
            let key = ApiKey::new("sk-test-0123456789");
            let text = format!("{prefix}sk-test-0123456789{suffix}");
            let out = scrub(&text, &key);
            prop_assert!(!out.contains("sk-test-0123456789"));
        }
    }
}
