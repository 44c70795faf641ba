//! Reads and validates the runner's configuration from environment variables.
//!
//! The names and defaults come from [`llmjob_crds::env`], the contract the operator injects; this
//! module owns parsing and validation only. Every invalid value is a [`ConfigError`] naming the
//! variable and the accepted values (the binary prints it and exits with code 2). Nothing here
//! performs I/O beyond reading the variables and the prompt or messages file through the
//! functions it is given, so it is unit-tested with plain maps.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionToolChoiceOption, ChatCompletionTools,
    ReasoningEffort, ResponseFormat, ServiceTier,
};
use llmjob_crds::env::{self, Var};
use llmjob_crds::v1alpha1::{ContentCapture, OtlpProtocol};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use url::Url;

use crate::items::{self, Shard};
use crate::limiter::Limits;
use crate::output::{self, Output};

/// Upper bound of `LLMJOB_MAX_ATTEMPTS`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// The largest prompt or messages file read (`OPENAI_PROMPT_FILE`, `LLMJOB_MESSAGES_FILE`): a
/// ConfigMap holds at most 1 MiB.
pub const MAX_INPUT_FILE_BYTES: u64 = 1024 * 1024;
/// Upper bound of `LLMJOB_N` (OpenAI's).
pub const MAX_CHOICES: u8 = 128;
/// Upper bound of `LLMJOB_USER`, in characters.
pub const MAX_USER_CHARS: usize = 256;

/// A configuration error: which variable, what was wrong, what is accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("Missing required env var: {name} ({help})")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What it means.
        help: &'static str,
    },
    /// A variable has a value that cannot be used.
    #[error("invalid {name}={value:?}: {reason}; accepted: {help}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// The offending value (never the API key: that one is only ever reported as missing).
        value: String,
        /// What is wrong with it.
        reason: String,
        /// The accepted values.
        help: &'static str,
    },
    /// A secret variable has a value that cannot be used; the value is never quoted.
    #[error("invalid {name}: {reason} (the value is not shown)")]
    InvalidSecret {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file named by a variable cannot be used; the file's content is never quoted.
    #[error("invalid {name}={path:?}: {reason}; accepted: {help}")]
    File {
        /// The variable.
        name: &'static str,
        /// The path it names.
        path: String,
        /// What is wrong with the file.
        reason: String,
        /// The accepted values.
        help: &'static str,
    },
    /// Two variables that exclude each other are both set.
    #[error("{first} and {second} are both set: set only one of them")]
    Conflict {
        /// One variable.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
}

impl ConfigError {
    fn invalid(var: &Var, value: &str, reason: impl fmt::Display) -> Self {
        ConfigError::Invalid {
            name: var.name,
            value: shorten(value),
            reason: reason.to_string(),
            help: var.help,
        }
    }
}

/// Quotes at most 120 characters of a bad value (a messages array can be long).
fn shorten(value: &str) -> String {
    llmjob_crds::text::shorten_chars(value, 120)
}

/// The OpenAI API key. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One user message (`OPENAI_PROMPT`).
    Prompt(String),
    /// A full messages array (`LLMJOB_MESSAGES`).
    Messages(Vec<ChatCompletionRequestMessage>),
}

/// How the API key is sent (one definition, shared with the CRD).
pub use llmjob_crds::v1alpha1::AuthStyle;

/// Request parameters that were set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters {
    /// `temperature`.
    pub temperature: Option<f32>,
    /// `top_p`.
    pub top_p: Option<f32>,
    /// `max_completion_tokens`.
    pub max_tokens: Option<u32>,
    /// `seed`.
    pub seed: Option<i64>,
    /// Stream the response.
    pub stream: bool,
    /// `stop`: 1 to 4 sequences.
    pub stop: Option<Vec<String>>,
    /// `frequency_penalty`.
    pub frequency_penalty: Option<f32>,
    /// `presence_penalty`.
    pub presence_penalty: Option<f32>,
    /// `n`: how many choices.
    pub n: Option<u8>,
    /// `tools`.
    pub tools: Option<Vec<ChatCompletionTools>>,
    /// `tool_choice`.
    pub tool_choice: Option<ChatCompletionToolChoiceOption>,
    /// `response_format`.
    pub response_format: Option<ResponseFormat>,
    /// `reasoning_effort`.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// `service_tier`.
    pub service_tier: Option<ServiceTier>,
    /// `user`: the end user's identifier.
    pub user: Option<String>,
}

/// The connection settings besides the base URL and the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
    /// Azure OpenAI's `api-version` query parameter.
    pub api_version: Option<String>,
    /// How the key is sent.
    pub auth_style: AuthStyle,
}

/// Telemetry settings.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `OTEL_SDK_DISABLED=true`: spans are still created (the result keeps a trace id) but nothing
    /// is exported.
    pub disabled: bool,
    /// `service.name`.
    pub service_name: String,
    /// `deployment.environment.name`.
    pub environment: String,
    /// OTLP endpoint with a scheme.
    pub endpoint: Url,
    /// OTLP transport.
    pub protocol: OtlpProtocol,
    /// Pairs of `OTEL_RESOURCE_ATTRIBUTES`, decoded, in order.
    pub resource_attributes: Vec<(String, String)>,
    /// The parent context from `TRACEPARENT`/`TRACESTATE`, if any.
    pub parent: Option<Context>,
}

/// The runner's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API key.
    pub api_key: ApiKey,
    /// Base URL of the OpenAI-compatible API, without a trailing slash.
    pub base_url: Url,
    /// Headers, query and key style of the requests.
    pub connection: Connection,
    /// The requested model.
    pub model: String,
    /// The prompt or messages.
    pub input: Input,
    /// Request parameters.
    pub parameters: Parameters,
    /// Overall deadline for all attempts.
    pub timeout: Duration,
    /// Attempts on retryable failures.
    pub max_attempts: u32,
    /// Content capture mode.
    pub capture: ContentCapture,
    /// Where the one-line result is written; `None` when the default path is not usable here
    /// (outside Kubernetes and not set explicitly).
    pub result_path: Option<PathBuf>,
    /// Telemetry settings.
    pub telemetry: TelemetryConfig,
    /// Batch mode (`LLMJOB_ITEMS_FILE` set): the shard's items, limits and output; `input` is
    /// then unused.
    pub batch: Option<BatchConfig>,
}

/// Batch mode's configuration (`LLMJOB_ITEMS_FILE` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// The pod's shard of the items (`JOB_COMPLETION_INDEX`, `LLMJOB_ITEMS_PER_POD`).
    pub shard: Shard,
    /// Items in flight at once (`LLMJOB_CONCURRENCY`).
    pub concurrency: usize,
    /// The pod's share of the run's rate limits.
    pub limits: Limits,
    /// Failed items the run tolerates (`LLMJOB_MAX_FAILED_ITEMS`).
    pub max_failed_items: u64,
    /// Where the shard's results go (`LLMJOB_OUTPUT_URL`).
    pub output: Output,
    /// The directory of the object store's configuration, one file per key
    /// (`LLMJOB_OUTPUT_CREDENTIALS_DIR`, the mounted output Secret).
    pub output_credentials: Option<PathBuf>,
}

/// Upper bound of `LLMJOB_CONCURRENCY`.
pub const MAX_CONCURRENCY: u32 = 64;

/// Reads variables through a lookup function (the process environment in production, a map in
/// tests). Empty values count as unset, as in the OpenTelemetry specification.
struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn raw(&self, var: &Var) -> Option<String> {
        (self.lookup)(var.name).filter(|v| !v.trim().is_empty())
    }

    fn or_default(&self, var: &Var) -> String {
        self.raw(var)
            .or_else(|| var.default.map(str::to_owned))
            .unwrap_or_default()
    }

    fn parse<T>(
        &self,
        var: &Var,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(var).or_else(|| var.default.map(str::to_owned)) {
            None => Ok(None),
            Some(value) => parse(value.trim())
                .map(Some)
                .map_err(|reason| ConfigError::invalid(var, &value, reason)),
        }
    }

    fn bool(&self, var: &Var) -> Result<Option<bool>, ConfigError> {
        self.parse(var, parse_bool)
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("not a boolean".to_owned()),
    }
}

fn parse_ranged_f32(min: f32, max: f32) -> impl Fn(&str) -> Result<f32, String> {
    move |value| {
        let v: f32 = value.parse().map_err(|_| "not a number".to_owned())?;
        if v.is_finite() && (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(format!("out of range {min}..={max}"))
        }
    }
}

fn parse_ranged_u32(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |value| {
        let v: u32 = value.parse().map_err(|_| "not a whole number".to_owned())?;
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(format!("out of range {min}..={max}"))
        }
    }
}

/// Parses a URL, adding `http://` when the value has no scheme (as the reference job accepts
/// `collector:4317`).
fn parse_url_lenient(value: &str) -> Result<Url, String> {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(url)
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, values
/// percent-decoded (W3C Baggage octet rules, as the OpenTelemetry specification says).
pub fn parse_resource_attributes(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, val)) = item.split_once('=') else {
            return Err(format!("{item:?} is not key=value"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        let decoded = percent_encoding::percent_decode_str(val.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {key:?} is not UTF-8 once percent-decoded"))?;
        pairs.push((key.to_owned(), decoded.into_owned()));
    }
    Ok(pairs)
}

/// The value of the first of `keys` present in the resource attributes.
fn attribute(pairs: &[(String, String)], keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        })
        .filter(|v| !v.is_empty())
}

fn parse_traceparent(traceparent: &str, tracestate: Option<&str>) -> Result<Context, String> {
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        Ok(cx)
    } else {
        Err(
            "not a valid W3C traceparent (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)"
                .to_owned(),
        )
    }
}

fn parse_messages(value: &str) -> Result<Vec<ChatCompletionRequestMessage>, String> {
    let messages: Vec<ChatCompletionRequestMessage> = serde_json::from_str(value)
        .map_err(|e| format!("not a JSON array of chat messages: {e}"))?;
    if messages.is_empty() {
        return Err("the array is empty".to_owned());
    }
    Ok(messages)
}

/// How a bare name is read as JSON.
#[derive(Clone, Copy)]
enum Name {
    /// As the JSON string of the name (`"auto"`).
    String,
    /// As `{"type": name}` (`response_format`), a JSON object being accepted too.
    Tagged,
    /// As the JSON string, a JSON object being accepted too (`tool_choice`).
    StringOrObject,
}

/// Parses a value that is one of `names` or, when `how` allows, a JSON object, into `T`.
fn parse_name_or_json<T: serde::de::DeserializeOwned>(
    names: &[&str],
    how: Name,
) -> impl Fn(&str) -> Result<T, String> {
    move |value| {
        if value.starts_with('{') {
            if matches!(how, Name::String) {
                return Err("not one of the accepted names".to_owned());
            }
            serde_json::from_str(value).map_err(|e| format!("not a valid JSON object: {e}"))
        } else if names.contains(&value) {
            let json = match how {
                Name::Tagged => serde_json::json!({ "type": value }),
                Name::String | Name::StringOrObject => serde_json::Value::String(value.to_owned()),
            };
            serde_json::from_value(json).map_err(|e| e.to_string())
        } else {
            Err("unknown value".to_owned())
        }
    }
}

fn parse_stop(value: &str) -> Result<Vec<String>, String> {
    let stop: Vec<String> = if value.starts_with('[') {
        serde_json::from_str(value).map_err(|e| format!("not a JSON array of strings: {e}"))?
    } else {
        vec![value.to_owned()]
    };
    if stop.is_empty() || stop.len() > 4 {
        return Err(format!("{} sequences", stop.len()));
    }
    if stop.iter().any(String::is_empty) {
        return Err("an empty sequence".to_owned());
    }
    Ok(stop)
}

fn parse_tools(value: &str) -> Result<Vec<ChatCompletionTools>, String> {
    let tools: Vec<ChatCompletionTools> =
        serde_json::from_str(value).map_err(|e| format!("not a JSON array of tools: {e}"))?;
    if tools.is_empty() {
        return Err("the array is empty".to_owned());
    }
    Ok(tools)
}

fn parse_user(value: &str) -> Result<String, String> {
    if value.chars().count() > MAX_USER_CHARS {
        return Err(format!("longer than {MAX_USER_CHARS} characters"));
    }
    Ok(value.to_owned())
}

/// A header value: visible ASCII only, so it cannot smuggle a line break into the request.
fn parse_header_value(value: &str) -> Result<String, String> {
    if value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("not 1 to 256 visible ASCII characters".to_owned());
    }
    Ok(value.to_owned())
}

fn parse_auth_style(value: &str) -> Result<AuthStyle, String> {
    match value {
        "bearer" => Ok(AuthStyle::Bearer),
        "api-key" => Ok(AuthStyle::ApiKey),
        _ => Err("unknown style".to_owned()),
    }
}

/// Reads a prompt or messages file: at most [`MAX_INPUT_FILE_BYTES`], UTF-8, not blank.
pub fn read_input_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} MiB",
            MAX_INPUT_FILE_BYTES / (1024 * 1024)
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not valid UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        return Err("the file is empty or blank".to_owned());
    }
    Ok(text)
}

fn parse_capture(value: &str) -> Result<ContentCapture, String> {
    ContentCapture::from_name(&value.to_ascii_lowercase()).ok_or_else(|| "unknown mode".to_owned())
}

fn parse_protocol(value: &str) -> Result<OtlpProtocol, String> {
    match value {
        "http/json" => Err("http/json is not supported by this runner".to_owned()),
        _ => OtlpProtocol::from_name(value).ok_or_else(|| "unknown protocol".to_owned()),
    }
}

/// The error for a variable whose value is not UTF-8 (`lossy` is the value with the bad bytes
/// replaced; the API key is never quoted).
fn not_unicode(var: &Var, lossy: &str) -> ConfigError {
    const REASON: &str = "not valid UTF-8";
    if var.name == env::OPENAI_API_KEY.name {
        ConfigError::InvalidSecret {
            name: var.name,
            reason: REASON,
        }
    } else {
        ConfigError::invalid(var, lossy, REASON)
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

impl Config {
    /// Reads the configuration from the process environment. A variable of the contract whose
    /// value is not UTF-8 is an error (it is not silently treated as unset).
    pub fn from_env() -> Result<Self, ConfigError> {
        for var in env::ALL {
            if let Err(std::env::VarError::NotUnicode(value)) = std::env::var(var.name) {
                return Err(not_unicode(var, &value.to_string_lossy()));
            }
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable name to its value), reading the
    /// prompt or messages file, when one is named, with [`read_input_file`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_sources(lookup, read_input_file)
    }

    /// Reads the configuration through `lookup`, and a named prompt or messages file through
    /// `read_file` (its text, or why it cannot be used).
    pub fn from_sources(
        lookup: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&Path) -> Result<String, String>,
    ) -> Result<Self, ConfigError> {
        let env = Env { lookup };

        let api_key = env.raw(&env::OPENAI_API_KEY).ok_or(ConfigError::Missing {
            name: env::OPENAI_API_KEY.name,
            help: env::OPENAI_API_KEY.help,
        })?;
        let mut base_url = env
            .parse(&env::OPENAI_BASE_URL, |v| {
                let url = Url::parse(v).map_err(|e| e.to_string())?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err("not an http(s) URL".to_owned());
                }
                Ok(url)
            })?
            .ok_or(ConfigError::Missing {
                name: env::OPENAI_BASE_URL.name,
                help: env::OPENAI_BASE_URL.help,
            })?;
        let trimmed = base_url.path().trim_end_matches('/').to_owned();
        base_url.set_path(&trimmed);

        let model = env.or_default(&env::OPENAI_MODEL).trim().to_owned();

        // A blank prompt is a mistake (an empty ConfigMap key, a template that rendered to
        // nothing), not a request for the default prompt: unset the variable for that.
        if let Some(blank) = (env.lookup)(env::OPENAI_PROMPT.name).filter(|v| v.trim().is_empty()) {
            return Err(ConfigError::invalid(
                &env::OPENAI_PROMPT,
                &blank,
                "the prompt is blank (unset OPENAI_PROMPT to send the default prompt)",
            ));
        }
        // At most one of the four sources of the input.
        let sources = [
            &env::OPENAI_PROMPT,
            &env::OPENAI_PROMPT_FILE,
            &env::LLMJOB_MESSAGES,
            &env::LLMJOB_MESSAGES_FILE,
            &env::LLMJOB_ITEMS_FILE,
        ];
        let set: Vec<&Var> = sources
            .into_iter()
            .filter(|v| env.raw(v).is_some())
            .collect();
        if let [first, second, ..] = set.as_slice() {
            return Err(ConfigError::Conflict {
                first: first.name,
                second: second.name,
            });
        }
        let file_text = |var: &Var| -> Result<Option<String>, ConfigError> {
            match env.raw(var) {
                None => Ok(None),
                Some(path) => {
                    read_file(Path::new(&path))
                        .map(Some)
                        .map_err(|reason| ConfigError::File {
                            name: var.name,
                            path: shorten(&path),
                            reason,
                            help: var.help,
                        })
                }
            }
        };
        let input = if let Some(prompt) = env.raw(&env::OPENAI_PROMPT) {
            Input::Prompt(prompt)
        } else if let Some(prompt) = file_text(&env::OPENAI_PROMPT_FILE)? {
            Input::Prompt(prompt)
        } else if let Some(messages) = env.parse(&env::LLMJOB_MESSAGES, parse_messages)? {
            Input::Messages(messages)
        } else if let Some(text) = file_text(&env::LLMJOB_MESSAGES_FILE)? {
            // The file's content is never quoted (it is the prompt): the parser's position only,
            // not its words, which quote the text.
            let file_error = |reason: String| ConfigError::File {
                name: env::LLMJOB_MESSAGES_FILE.name,
                path: shorten(&env.raw(&env::LLMJOB_MESSAGES_FILE).unwrap_or_default()),
                reason,
                help: env::LLMJOB_MESSAGES_FILE.help,
            };
            let messages: Vec<ChatCompletionRequestMessage> =
                serde_json::from_str(&text).map_err(|e| {
                    file_error(format!(
                        "not a JSON array of chat messages (line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?;
            if messages.is_empty() {
                return Err(file_error("the array is empty".to_owned()));
            }
            Input::Messages(messages)
        } else {
            Input::Prompt(env::DEFAULT_PROMPT.to_owned())
        };

        let batch = match env.raw(&env::LLMJOB_ITEMS_FILE) {
            None => None,
            Some(path) => Some(batch_config(&env, &path, &read_file)?),
        };

        let parameters = Parameters {
            temperature: env.parse(&env::LLMJOB_TEMPERATURE, parse_ranged_f32(0.0, 2.0))?,
            top_p: env.parse(&env::LLMJOB_TOP_P, parse_ranged_f32(0.0, 1.0))?,
            max_tokens: env.parse(&env::LLMJOB_MAX_TOKENS, parse_ranged_u32(1, u32::MAX))?,
            seed: env.parse(&env::LLMJOB_SEED, |v| {
                v.parse::<i64>()
                    .map_err(|_| "not a whole number".to_owned())
            })?,
            stream: env.bool(&env::LLMJOB_STREAM)?.unwrap_or(false),
            stop: env.parse(&env::LLMJOB_STOP, parse_stop)?,
            frequency_penalty: env
                .parse(&env::LLMJOB_FREQUENCY_PENALTY, parse_ranged_f32(-2.0, 2.0))?,
            presence_penalty: env
                .parse(&env::LLMJOB_PRESENCE_PENALTY, parse_ranged_f32(-2.0, 2.0))?,
            n: env
                .parse(&env::LLMJOB_N, parse_ranged_u32(1, u32::from(MAX_CHOICES)))?
                .map(|n| u8::try_from(n).unwrap_or(MAX_CHOICES)),
            tools: env.parse(&env::LLMJOB_TOOLS, parse_tools)?,
            tool_choice: env.parse(
                &env::LLMJOB_TOOL_CHOICE,
                parse_name_or_json(&["none", "auto", "required"], Name::StringOrObject),
            )?,
            response_format: env.parse(
                &env::LLMJOB_RESPONSE_FORMAT,
                parse_name_or_json(&["text", "json_object"], Name::Tagged),
            )?,
            reasoning_effort: env.parse(
                &env::LLMJOB_REASONING_EFFORT,
                parse_name_or_json(
                    &["none", "minimal", "low", "medium", "high", "xhigh"],
                    Name::String,
                ),
            )?,
            service_tier: env.parse(
                &env::LLMJOB_SERVICE_TIER,
                parse_name_or_json(
                    &["auto", "default", "flex", "scale", "priority"],
                    Name::String,
                ),
            )?,
            user: env.parse(&env::LLMJOB_USER, parse_user)?,
        };
        // A tool choice other than `none` names tools that must be there.
        if parameters.tools.is_none()
            && let Some(choice) = &parameters.tool_choice
            && !matches!(
                choice,
                ChatCompletionToolChoiceOption::Mode(
                    async_openai::types::chat::ToolChoiceOptions::None
                )
            )
        {
            return Err(ConfigError::invalid(
                &env::LLMJOB_TOOL_CHOICE,
                &env.raw(&env::LLMJOB_TOOL_CHOICE).unwrap_or_default(),
                "LLMJOB_TOOLS is not set",
            ));
        }
        let connection = Connection {
            organization: env.parse(&env::OPENAI_ORG_ID, parse_header_value)?,
            project: env.parse(&env::OPENAI_PROJECT_ID, parse_header_value)?,
            api_version: env.parse(&env::OPENAI_API_VERSION, parse_header_value)?,
            auth_style: env
                .parse(&env::LLMJOB_AUTH_STYLE, parse_auth_style)?
                .unwrap_or_else(|| {
                    if crate::openai::provider_of(&base_url) == "azure.ai.openai" {
                        AuthStyle::ApiKey
                    } else {
                        AuthStyle::Bearer
                    }
                }),
        };

        let timeout = env
            .parse(&env::LLMJOB_TIMEOUT, parse_duration)?
            .unwrap_or(Duration::from_secs(env::DEFAULT_TIMEOUT_SECS));
        let max_attempts = env
            .parse(
                &env::LLMJOB_MAX_ATTEMPTS,
                parse_ranged_u32(1, MAX_ATTEMPTS_LIMIT),
            )?
            .unwrap_or(env::DEFAULT_MAX_ATTEMPTS);

        // LLMJOB_CONTENT_CAPTURE wins; otherwise the standard switches, when set explicitly.
        let capture = match env.raw(&env::LLMJOB_CONTENT_CAPTURE) {
            Some(_) => env
                .parse(&env::LLMJOB_CONTENT_CAPTURE, parse_capture)?
                .unwrap_or_default(),
            None => {
                let genai = env.bool(&env::OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)?;
                let traceloop = env.bool(&env::TRACELOOP_TRACE_CONTENT)?;
                match genai.or(traceloop) {
                    Some(true) => ContentCapture::Full,
                    _ => ContentCapture::None,
                }
            }
        };

        // The default path is the container's termination-message file; outside a pod (no
        // KUBERNETES_SERVICE_HOST) it is only used when set explicitly.
        let result_path = match env.raw(&env::LLMJOB_RESULT_PATH) {
            Some(path) => Some(PathBuf::from(path)),
            None if (env.lookup)("KUBERNETES_SERVICE_HOST").is_some() => {
                env::LLMJOB_RESULT_PATH.default.map(PathBuf::from)
            }
            None => None,
        };

        let disabled = env.bool(&env::OTEL_SDK_DISABLED)?.unwrap_or(false);
        let endpoint = env
            .parse(&env::OTEL_EXPORTER_OTLP_ENDPOINT, parse_url_lenient)?
            .ok_or(ConfigError::Missing {
                name: env::OTEL_EXPORTER_OTLP_ENDPOINT.name,
                help: env::OTEL_EXPORTER_OTLP_ENDPOINT.help,
            })?;
        let protocol = env
            .parse(&env::OTEL_EXPORTER_OTLP_PROTOCOL, parse_protocol)?
            .unwrap_or(OtlpProtocol::Grpc);
        let resource_attributes = env
            .parse(&env::OTEL_RESOURCE_ATTRIBUTES, parse_resource_attributes)?
            .unwrap_or_default();
        let tracestate = env.raw(&env::TRACESTATE);
        let parent = env.parse(&env::TRACEPARENT, |v| {
            parse_traceparent(v, tracestate.as_deref())
        })?;

        let api_key = api_key.trim().to_owned();
        if http::HeaderValue::from_str(&format!("Bearer {api_key}")).is_err() {
            return Err(ConfigError::InvalidSecret {
                name: env::OPENAI_API_KEY.name,
                reason: "it holds characters an HTTP header cannot carry (control characters or line breaks)",
            });
        }

        Ok(Config {
            api_key: ApiKey(api_key),
            base_url,
            connection,
            model,
            input,
            parameters,
            timeout,
            max_attempts,
            capture,
            result_path,
            telemetry: TelemetryConfig {
                disabled,
                service_name: env
                    .raw(&env::OTEL_SERVICE_NAME)
                    .or_else(|| attribute(&resource_attributes, &["service.name"]))
                    .unwrap_or_else(|| env.or_default(&env::OTEL_SERVICE_NAME)),
                environment: env
                    .raw(&env::DEPLOYMENT_ENVIRONMENT)
                    .or_else(|| {
                        attribute(
                            &resource_attributes,
                            &["deployment.environment.name", "deployment.environment"],
                        )
                    })
                    .unwrap_or_else(|| env.or_default(&env::DEPLOYMENT_ENVIRONMENT)),
                endpoint,
                protocol,
                resource_attributes,
                parent,
            },
            batch,
        })
    }
}

/// Reads batch mode's variables and picks the pod's shard out of the items file at `path`.
fn batch_config<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    path: &str,
    read_file: &impl Fn(&Path) -> Result<String, String>,
) -> Result<BatchConfig, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        name: env::LLMJOB_ITEMS_FILE.name,
        path: shorten(path),
        reason,
        help: env::LLMJOB_ITEMS_FILE.help,
    };
    let per_pod = env.parse(&env::LLMJOB_ITEMS_PER_POD, |v| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| "not a whole number >= 1".to_owned())
    })?;
    let index = env
        .parse(&env::JOB_COMPLETION_INDEX, parse_ranged_u32(0, u32::MAX))?
        .unwrap_or(0);
    let concurrency = env
        .parse(
            &env::LLMJOB_CONCURRENCY,
            parse_ranged_u32(1, MAX_CONCURRENCY),
        )?
        .unwrap_or(4);
    let limits = Limits {
        requests_per_minute: env.parse(
            &env::LLMJOB_REQUESTS_PER_MINUTE,
            parse_ranged_u32(1, u32::MAX),
        )?,
        tokens_per_minute: env.parse(
            &env::LLMJOB_TOKENS_PER_MINUTE,
            parse_ranged_u32(1, u32::MAX),
        )?,
    };
    let max_failed_items = env
        .parse(&env::LLMJOB_MAX_FAILED_ITEMS, |v| {
            v.parse::<u64>()
                .map_err(|_| "not a whole number >= 0".to_owned())
        })?
        .unwrap_or(0);
    let output =
        env.parse(&env::LLMJOB_OUTPUT_URL, output::parse)?
            .ok_or(ConfigError::Missing {
                name: env::LLMJOB_OUTPUT_URL.name,
                help: env::LLMJOB_OUTPUT_URL.help,
            })?;
    let output_credentials = env
        .raw(&env::LLMJOB_OUTPUT_CREDENTIALS_DIR)
        .map(|dir| PathBuf::from(dir.trim()));
    let text = read_file(Path::new(path)).map_err(file_error)?;
    let shard = items::shard(&text, index, per_pod).map_err(file_error)?;
    Ok(BatchConfig {
        shard,
        concurrency: usize::try_from(concurrency).unwrap_or(1),
        limits,
        max_failed_items,
        output,
        output_credentials,
    })
}

#[cfg(test)]
mod tests {

    use std::collections::HashMap;

    use super::*;

    /// Files the tests' configurations may name: `/files/NAME` holds these texts.
    fn fake_file(path: &Path) -> Result<String, String> {
        match path.to_str() {
            Some("/files/prompt.txt") => Ok("PROMPT FROM FILE".to_owned()),
            Some("/files/messages.json") => Ok(
                r#"[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]"#
                    .to_owned(),
            ),
            Some("/files/items.jsonl") => Ok(
                "{\"id\":\"a\",\"prompt\":\"one\"}\n{\"prompt\":\"two\"}\n{\"prompt\":\"three\"}\n"
                    .to_owned(),
            ),
            Some("/files/not-messages.json") => {
                Ok(r#"{"role":"user","content":"SECRET"}"#.to_owned())
            }
            _ => Err("cannot open the file: No such file or directory".to_owned()),
        }
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_sources(|name| map.get(name).cloned(), fake_file)
    }

    fn err(vars: &[(&str, &str)]) -> String {
        config(vars)
            .expect_err("configuration should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_match_the_reference_job() {
        let c = config(&[("OPENAI_API_KEY", "sk-test")]).unwrap();
        assert_eq!(c.model, "gpt-4o-mini");
        assert_eq!(c.input, Input::Prompt(env::DEFAULT_PROMPT.to_owned()));
        assert_eq!(c.base_url.as_str(), "https://api.openai.com/v1");
        assert_eq!(c.telemetry.service_name, "llm-job");
        assert_eq!(c.telemetry.environment, "development");
        assert_eq!(c.telemetry.endpoint.as_str(), "http://collector:4317/");
        assert_eq!(c.telemetry.protocol, OtlpProtocol::Grpc);
        assert_eq!(c.capture, ContentCapture::None);
        assert_eq!(c.max_attempts, 4);
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert!(
            c.result_path.is_none(),
            "outside a pod the default result path is not written"
        );
        assert!(!c.parameters.stream);
    }

    #[test]
    fn missing_or_empty_key_names_the_variable() {
        assert!(err(&[]).starts_with("Missing required env var: OPENAI_API_KEY"));
        assert!(
            err(&[("OPENAI_API_KEY", "  ")])
                .starts_with("Missing required env var: OPENAI_API_KEY")
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let c = config(&[("OPENAI_API_KEY", "sk-secret-value")]).unwrap();
        assert!(!format!("{c:?}").contains("sk-secret-value"));
        assert_eq!(c.api_key.expose(), "sk-secret-value");
    }

    #[test]
    fn endpoint_is_accepted_with_or_without_a_scheme() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector.obs:4317"),
        ])
        .unwrap();
        assert_eq!(c.telemetry.endpoint.as_str(), "http://collector.obs:4317/");
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com"),
        ])
        .unwrap();
        assert_eq!(c.telemetry.endpoint.as_str(), "https://otel.example.com/");
        assert!(
            err(&[
                ("OPENAI_API_KEY", "k"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")
            ])
            .contains("OTEL_EXPORTER_OTLP_ENDPOINT")
        );
    }

    #[test]
    fn invalid_values_name_the_variable_and_accepted_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("LLMJOB_TEMPERATURE", "3", "0 to 2"),
            ("LLMJOB_TEMPERATURE", "hot", "0 to 2"),
            ("LLMJOB_TOP_P", "1.5", "0 to 1"),
            ("LLMJOB_MAX_TOKENS", "0", ">= 1"),
            ("LLMJOB_SEED", "x", "whole number"),
            ("LLMJOB_STREAM", "maybe", "true or false"),
            ("LLMJOB_TIMEOUT", "soon", "duration"),
            ("LLMJOB_TIMEOUT", "0s", "duration"),
            ("LLMJOB_MAX_ATTEMPTS", "0", "1 to 20"),
            ("LLMJOB_MAX_ATTEMPTS", "21", "1 to 20"),
            ("LLMJOB_CONTENT_CAPTURE", "everything", "none, hash or full"),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/json",
                "grpc or http/protobuf",
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "udp",
                "grpc or http/protobuf",
            ),
            ("OTEL_SDK_DISABLED", "nah", "true:"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue", "key1=value1"),
            ("TRACEPARENT", "00-zz-11-01", "traceparent"),
            ("LLMJOB_MESSAGES", "{\"role\":\"user\"}", "JSON array"),
            ("LLMJOB_MESSAGES", "[]", "JSON array"),
            ("OPENAI_BASE_URL", "not a url", "base URL"),
        ];
        for (name, value, accepted) in cases {
            let message = err(&[("OPENAI_API_KEY", "k"), (name, value)]);
            assert!(message.contains(name), "{name}={value}: {message}");
            assert!(message.contains(accepted), "{name}={value}: {message}");
        }
    }

    #[test]
    fn prompt_and_messages_exclude_each_other() {
        let message = err(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_PROMPT", "hi"),
            ("LLMJOB_MESSAGES", r#"[{"role":"user","content":"hi"}]"#),
        ]);
        assert!(
            message.contains("OPENAI_PROMPT and LLMJOB_MESSAGES"),
            "{message}"
        );
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            (
                "LLMJOB_MESSAGES",
                r#"[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}]"#,
            ),
        ])
        .unwrap();
        assert!(matches!(c.input, Input::Messages(ref m) if m.len() == 2));
    }

    #[test]
    fn capture_precedence() {
        let mode = |vars: &[(&str, &str)]| {
            let mut all = vec![("OPENAI_API_KEY", "k")];
            all.extend_from_slice(vars);
            config(&all).unwrap().capture
        };
        assert_eq!(mode(&[]), ContentCapture::None);
        assert_eq!(
            mode(&[("TRACELOOP_TRACE_CONTENT", "true")]),
            ContentCapture::Full
        );
        assert_eq!(
            mode(&[("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")]),
            ContentCapture::Full
        );
        assert_eq!(
            mode(&[("TRACELOOP_TRACE_CONTENT", "false")]),
            ContentCapture::None
        );
        assert_eq!(
            mode(&[
                ("LLMJOB_CONTENT_CAPTURE", "hash"),
                ("TRACELOOP_TRACE_CONTENT", "true")
            ]),
            ContentCapture::Hash
        );
    }

    #[test]
    fn resource_attributes_are_percent_decoded() {
        let pairs = parse_resource_attributes("k8s.pod.name=p-1, team=a%2Cb ,,x=%20y").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("k8s.pod.name".to_owned(), "p-1".to_owned()),
                ("team".to_owned(), "a,b".to_owned()),
                ("x".to_owned(), " y".to_owned()),
            ]
        );
    }

    #[test]
    fn traceparent_becomes_the_parent_context() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            (
                "TRACEPARENT",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ])
        .unwrap();
        let parent = c.telemetry.parent.unwrap();
        assert_eq!(
            parent.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn explicit_result_path_and_in_pod_default() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("LLMJOB_RESULT_PATH", "/tmp/r.json"),
        ])
        .unwrap();
        assert_eq!(c.result_path.unwrap(), PathBuf::from("/tmp/r.json"));
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ])
        .unwrap();
        assert_eq!(
            c.result_path.unwrap(),
            PathBuf::from("/dev/termination-log")
        );
    }

    #[test]
    fn service_name_precedence() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment.name=staging",
            ),
        ])
        .unwrap();
        assert_eq!(c.telemetry.service_name, "from-attrs");
        assert_eq!(c.telemetry.environment, "staging");
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("OTEL_SERVICE_NAME", "explicit"),
            ("DEPLOYMENT_ENVIRONMENT", "prod"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment.name=staging",
            ),
        ])
        .unwrap();
        assert_eq!(c.telemetry.service_name, "explicit");
        assert_eq!(c.telemetry.environment, "prod");
    }

    #[test]
    fn a_key_a_header_cannot_carry_is_a_configuration_error() {
        let message = err(&[("OPENAI_API_KEY", "sk-abc\ndef")]);
        assert!(message.starts_with("invalid OPENAI_API_KEY"), "{message}");
        assert!(!message.contains("sk-abc"), "{message}");
    }

    #[test]
    fn a_blank_prompt_is_a_configuration_error() {
        for blank in ["", "   ", "\n\t"] {
            let message = err(&[("OPENAI_API_KEY", "k"), ("OPENAI_PROMPT", blank)]);
            assert!(message.contains("OPENAI_PROMPT"), "{message}");
            assert!(message.contains("blank"), "{message}");
        }
    }

    #[test]
    fn non_utf8_values_are_named() {
        let e = not_unicode(&env::OPENAI_PROMPT, "a\u{fffd}b").to_string();
        assert!(e.contains("OPENAI_PROMPT") && e.contains("UTF-8"), "{e}");
        let e = not_unicode(&env::OPENAI_API_KEY, "sk-\u{fffd}secret").to_string();
        assert!(e.contains("OPENAI_API_KEY") && !e.contains("secret"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        #[test]
        fn any_values_give_a_config_or_an_error(
            values in proptest::collection::vec("\\PC{0,24}|[0-9a-z./:_ -]{0,16}", env::ALL.len()),
        ) {
            let vars: Vec<(&str, &str)> = env::ALL
                .iter()
                .zip(values.iter())
                .map(|(var, value)| (var.name, value.as_str()))
                .collect();
            let _ = config(&vars);
        }

        #[test]
        fn any_duration_is_handled(value in "[0-9]{1,30}(ns|us|ms|s|m|h|d|w|y)?") {
            let _ = parse_duration(&value);
        }
    }

    #[test]
    fn request_options_are_parsed() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("LLMJOB_STOP", r#"["END", "\n\n"]"#),
            ("LLMJOB_FREQUENCY_PENALTY", "-1.5"),
            ("LLMJOB_PRESENCE_PENALTY", "0.5"),
            ("LLMJOB_N", "3"),
            (
                "LLMJOB_TOOLS",
                r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#,
            ),
            ("LLMJOB_TOOL_CHOICE", "required"),
            ("LLMJOB_RESPONSE_FORMAT", "json_object"),
            ("LLMJOB_REASONING_EFFORT", "low"),
            ("LLMJOB_SERVICE_TIER", "flex"),
            ("LLMJOB_USER", "user-1234"),
        ])
        .unwrap();
        let p = &c.parameters;
        assert_eq!(p.stop, Some(vec!["END".to_owned(), "\n\n".to_owned()]));
        assert_eq!(
            (p.frequency_penalty, p.presence_penalty),
            (Some(-1.5), Some(0.5))
        );
        assert_eq!(p.n, Some(3));
        assert_eq!(p.tools.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            p.tool_choice,
            Some(ChatCompletionToolChoiceOption::Mode(
                async_openai::types::chat::ToolChoiceOptions::Required
            ))
        );
        assert_eq!(p.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(p.reasoning_effort, Some(ReasoningEffort::Low));
        assert_eq!(p.service_tier, Some(ServiceTier::Flex));
        assert_eq!(p.user.as_deref(), Some("user-1234"));

        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("LLMJOB_STOP", "END"),
            (
                "LLMJOB_RESPONSE_FORMAT",
                r#"{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object"},"strict":true}}"#,
            ),
        ])
        .unwrap();
        assert_eq!(c.parameters.stop, Some(vec!["END".to_owned()]));
        assert!(matches!(
            c.parameters.response_format,
            Some(ResponseFormat::JsonSchema { ref json_schema }) if json_schema.name == "answer"
        ));
    }

    #[test]
    fn invalid_request_options_name_the_variable() {
        let tools = r#"[{"type":"function","function":{"name":"f"}}]"#;
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("LLMJOB_STOP", "[]")], "LLMJOB_STOP"),
            (
                &[("LLMJOB_STOP", r#"["a","b","c","d","e"]"#)],
                "LLMJOB_STOP",
            ),
            (&[("LLMJOB_FREQUENCY_PENALTY", "2.5")], "-2 to 2"),
            (&[("LLMJOB_PRESENCE_PENALTY", "loud")], "-2 to 2"),
            (&[("LLMJOB_N", "0")], "1 to 128"),
            (&[("LLMJOB_N", "129")], "1 to 128"),
            (&[("LLMJOB_TOOLS", "[]")], "LLMJOB_TOOLS"),
            (&[("LLMJOB_TOOLS", r#"[{"name":"f"}]"#)], "LLMJOB_TOOLS"),
            (
                &[("LLMJOB_TOOL_CHOICE", "sometimes"), ("LLMJOB_TOOLS", tools)],
                "LLMJOB_TOOL_CHOICE",
            ),
            (&[("LLMJOB_TOOL_CHOICE", "auto")], "LLMJOB_TOOLS is not set"),
            (&[("LLMJOB_RESPONSE_FORMAT", "yaml")], "json_object"),
            (
                &[("LLMJOB_RESPONSE_FORMAT", r#"{"type":"json_schema"}"#)],
                "json_schema",
            ),
            (&[("LLMJOB_REASONING_EFFORT", "extreme")], "minimal"),
            (&[("LLMJOB_REASONING_EFFORT", r#"{"a":1}"#)], "minimal"),
            (&[("LLMJOB_SERVICE_TIER", "gold")], "priority"),
            (&[("LLMJOB_USER", &"u".repeat(257))], "LLMJOB_USER"),
            (&[("OPENAI_ORG_ID", "org 1")], "OPENAI_ORG_ID"),
            (&[("OPENAI_PROJECT_ID", "proj\u{e9}")], "OPENAI_PROJECT_ID"),
            (&[("OPENAI_API_VERSION", "2024 10")], "OPENAI_API_VERSION"),
            (&[("LLMJOB_AUTH_STYLE", "basic")], "bearer"),
        ];
        for (vars, expected) in cases {
            let mut all = vec![("OPENAI_API_KEY", "k")];
            all.extend_from_slice(vars);
            let message = err(&all);
            assert!(message.contains(vars[0].0), "{vars:?}: {message}");
            assert!(message.contains(expected), "{vars:?}: {message}");
        }
        // `none` needs no tools.
        assert!(config(&[("OPENAI_API_KEY", "k"), ("LLMJOB_TOOL_CHOICE", "none")]).is_ok());
    }

    #[test]
    fn connection_headers_and_azure_defaults() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_ORG_ID", "org-123"),
            ("OPENAI_PROJECT_ID", "proj_456"),
        ])
        .unwrap();
        assert_eq!(c.connection.organization.as_deref(), Some("org-123"));
        assert_eq!(c.connection.project.as_deref(), Some("proj_456"));
        assert_eq!(c.connection.auth_style, AuthStyle::Bearer);
        let azure = [
            ("OPENAI_API_KEY", "k"),
            (
                "OPENAI_BASE_URL",
                "https://res.openai.azure.com/openai/deployments/gpt-4o",
            ),
            ("OPENAI_API_VERSION", "2024-10-21"),
        ];
        let c = config(&azure).unwrap();
        assert_eq!(c.connection.auth_style, AuthStyle::ApiKey);
        assert_eq!(c.connection.api_version.as_deref(), Some("2024-10-21"));
        let mut bearer = azure.to_vec();
        bearer.push(("LLMJOB_AUTH_STYLE", "bearer"));
        assert_eq!(
            config(&bearer).unwrap().connection.auth_style,
            AuthStyle::Bearer
        );
        let c = config(&[("OPENAI_API_KEY", "k"), ("LLMJOB_AUTH_STYLE", "api-key")]).unwrap();
        assert_eq!(c.connection.auth_style, AuthStyle::ApiKey);
    }

    #[test]
    fn prompt_and_messages_come_from_files() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_PROMPT_FILE", "/files/prompt.txt"),
        ])
        .unwrap();
        assert_eq!(c.input, Input::Prompt("PROMPT FROM FILE".to_owned()));
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("LLMJOB_MESSAGES_FILE", "/files/messages.json"),
        ])
        .unwrap();
        assert!(matches!(c.input, Input::Messages(ref m) if m.len() == 2));

        let message = err(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_PROMPT_FILE", "/files/missing"),
        ]);
        assert!(
            message.starts_with("invalid OPENAI_PROMPT_FILE=\"/files/missing\": cannot open"),
            "{message}"
        );
        let message = err(&[
            ("OPENAI_API_KEY", "k"),
            ("LLMJOB_MESSAGES_FILE", "/files/not-messages.json"),
        ]);
        assert!(message.contains("LLMJOB_MESSAGES_FILE"), "{message}");
        assert!(message.contains("not a JSON array"), "{message}");
        assert!(
            !message.contains("SECRET"),
            "the file's content is never quoted: {message}"
        );

        for (a, b) in [
            ("OPENAI_PROMPT", "OPENAI_PROMPT_FILE"),
            ("OPENAI_PROMPT_FILE", "LLMJOB_MESSAGES_FILE"),
            ("LLMJOB_MESSAGES", "LLMJOB_MESSAGES_FILE"),
            ("OPENAI_PROMPT_FILE", "LLMJOB_MESSAGES"),
        ] {
            let value = |name: &str| {
                if name == "LLMJOB_MESSAGES" {
                    r#"[{"role":"user","content":"hi"}]"#
                } else if name.ends_with("_FILE") {
                    "/files/prompt.txt"
                } else {
                    "hi"
                }
            };
            let message = err(&[("OPENAI_API_KEY", "k"), (a, value(a)), (b, value(b))]);
            assert!(message.contains("are both set"), "{a} {b}: {message}");
            assert!(message.contains(a) && message.contains(b), "{message}");
        }
    }

    #[test]
    fn input_files_are_bounded_utf8_and_not_blank() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert_eq!(
            read_input_file(&write("ok", "héllo\n".as_bytes())).unwrap(),
            "héllo\n"
        );
        let e = read_input_file(&write("blank", b" \n\t")).unwrap_err();
        assert!(e.contains("blank"), "{e}");
        let e = read_input_file(&write("latin1", b"caf\xe9")).unwrap_err();
        assert!(e.contains("not valid UTF-8"), "{e}");
        let big = vec![b'a'; usize::try_from(MAX_INPUT_FILE_BYTES).unwrap() + 1];
        let e = read_input_file(&write("big", &big)).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let e = read_input_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.starts_with("cannot open the file"), "{e}");
        let e = read_input_file(dir.path()).unwrap_err();
        assert!(e.starts_with("cannot read the file"), "{e}");
    }

    #[test]
    fn batch_mode_reads_its_shard_limits_and_output() {
        let c = config(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("LLMJOB_ITEMS_FILE", "/files/items.jsonl"),
            ("LLMJOB_ITEMS_PER_POD", "2"),
            ("JOB_COMPLETION_INDEX", "1"),
            ("LLMJOB_REQUESTS_PER_MINUTE", "30"),
            ("LLMJOB_MAX_FAILED_ITEMS", "3"),
            ("LLMJOB_OUTPUT_URL", "s3://bucket/run"),
            (
                "LLMJOB_OUTPUT_CREDENTIALS_DIR",
                "/var/run/llmjob/output-credentials",
            ),
        ])
        .unwrap();
        let batch = c.batch.unwrap();
        assert_eq!(batch.shard.index, 1);
        assert_eq!(batch.shard.total_items, 3);
        assert_eq!(batch.shard.items.len(), 1);
        assert_eq!(batch.shard.items[0].id, "3");
        assert_eq!(batch.concurrency, 4);
        assert_eq!(batch.limits.requests_per_minute, Some(30));
        assert_eq!(batch.limits.tokens_per_minute, None);
        assert_eq!(batch.max_failed_items, 3);
        assert!(matches!(batch.output, Output::Store(ref u) if u.as_str() == "s3://bucket/run"));
        assert_eq!(
            batch.output_credentials.as_deref(),
            Some(Path::new("/var/run/llmjob/output-credentials"))
        );
        // Without LLMJOB_ITEMS_FILE the batch variables change nothing.
        let single = config(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("LLMJOB_CONCURRENCY", "1000"),
        ])
        .unwrap();
        assert!(single.batch.is_none());
    }

    #[test]
    fn batch_mode_errors_name_the_variable() {
        let base = [
            ("OPENAI_API_KEY", "sk-test"),
            ("LLMJOB_ITEMS_FILE", "/files/items.jsonl"),
            ("LLMJOB_OUTPUT_URL", "configmap://results"),
        ];
        let with = |extra: (&str, &str)| {
            let mut vars = base.to_vec();
            vars.push(extra);
            err(&vars)
        };
        assert!(with(("LLMJOB_CONCURRENCY", "65")).contains("LLMJOB_CONCURRENCY"));
        assert!(with(("LLMJOB_CONCURRENCY", "0")).contains("LLMJOB_CONCURRENCY"));
        assert!(with(("LLMJOB_ITEMS_PER_POD", "0")).contains("LLMJOB_ITEMS_PER_POD"));
        assert!(with(("LLMJOB_REQUESTS_PER_MINUTE", "0")).contains("LLMJOB_REQUESTS_PER_MINUTE"));
        assert!(with(("LLMJOB_MAX_FAILED_ITEMS", "-1")).contains("LLMJOB_MAX_FAILED_ITEMS"));
        assert!(with(("LLMJOB_OUTPUT_URL", "http://x/y")).contains("LLMJOB_OUTPUT_URL"));
        let empty = with(("JOB_COMPLETION_INDEX", "2"));
        assert!(
            empty.contains("LLMJOB_ITEMS_FILE") && empty.contains("shard 2 is empty"),
            "{empty}"
        );
        assert!(with(("OPENAI_PROMPT", "hi")).contains("are both set"));
        assert!(err(&base[..2]).contains("Missing required env var: LLMJOB_OUTPUT_URL"));
        let missing = err(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("LLMJOB_ITEMS_FILE", "/files/none.jsonl"),
            ("LLMJOB_OUTPUT_URL", "file:///out"),
        ]);
        assert!(missing.contains("LLMJOB_ITEMS_FILE"), "{missing}");
    }

    #[test]
    fn base_url_loses_its_trailing_slash() {
        let c = config(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
        ])
        .unwrap();
        assert_eq!(c.base_url.as_str(), "http://127.0.0.1:9/v1");
    }
}
