//! The environment-variable contract between the operator and the job-runner.
//!
//! Every variable the job-runner reads is named here, with its default. The operator uses these
//! constants to build a run's pod environment and the job-runner uses them to read its
//! configuration, so the two can never drift apart. The meaning of each name is documented in
//! `docs/job-runner.md` (its table is generated from [`ALL`]); names may be added but never change
//! meaning.
//!
//! Parsing and validation live in the job-runner (`job-runner/src/config.rs`); this module only
//! names things and their defaults.

/// An environment variable of the contract: its name, its default (if any) and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    /// The variable's name, e.g. `OPENAI_MODEL`.
    pub name: &'static str,
    /// The value used when the variable is unset or empty; `None` when there is no default.
    pub default: Option<&'static str>,
    /// One line for humans: what the variable means and which values it accepts.
    pub help: &'static str,
}

macro_rules! vars {
    ($( $(#[$doc:meta])* $ident:ident = $name:literal, $default:expr, $help:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $ident: Var = Var { name: $name, default: $default, help: $help };
        )*
        /// Every variable of the contract, in documentation order.
        pub const ALL: &[Var] = &[$($ident),*];
    };
}

// The contract's defaults are numbers for the operator and text for the runner's variables: each
// is written once, in a macro, and both forms are made from it.
macro_rules! default_timeout_secs {
    () => {
        300
    };
}
macro_rules! default_max_attempts {
    () => {
        4
    };
}

/// The run's deadline in seconds when `LLMJOB_TIMEOUT` (`spec.run.timeout`) is unset.
pub const DEFAULT_TIMEOUT_SECS: u64 = default_timeout_secs!();
/// Attempts of the API call when `LLMJOB_MAX_ATTEMPTS` (`spec.run.maxAttempts`) is unset.
pub const DEFAULT_MAX_ATTEMPTS: u32 = default_max_attempts!();

/// The prompt used when neither `OPENAI_PROMPT` nor `LLMJOB_MESSAGES` is set (the same request the
/// Python reference job makes).
pub const DEFAULT_PROMPT: &str = "Write a haiku about OpenTelemetry.";

vars! {
    /// The OpenAI API key. Required; the operator only ever injects it as a `secretKeyRef`.
    OPENAI_API_KEY = "OPENAI_API_KEY", None,
        "OpenAI API key (required; never logged or exported)";
    /// Base URL of any OpenAI-compatible server.
    OPENAI_BASE_URL = "OPENAI_BASE_URL", Some("https://api.openai.com/v1"),
        "base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1";
    /// The OpenAI organisation, sent as `OpenAI-Organization` (the OpenAI SDKs' variable).
    OPENAI_ORG_ID = "OPENAI_ORG_ID", None,
        "OpenAI organisation id, sent as the OpenAI-Organization header";
    /// The OpenAI project, sent as `OpenAI-Project` (the OpenAI SDKs' variable).
    OPENAI_PROJECT_ID = "OPENAI_PROJECT_ID", None,
        "OpenAI project id, sent as the OpenAI-Project header";
    /// Azure OpenAI's `api-version` query parameter (the Azure OpenAI SDKs' variable).
    OPENAI_API_VERSION = "OPENAI_API_VERSION", None,
        "api-version query parameter of Azure OpenAI, e.g. 2024-10-21";
    /// How the API key is sent.
    LLMJOB_AUTH_STYLE = "LLMJOB_AUTH_STYLE", None,
        "how the key is sent: bearer (Authorization: Bearer) or api-key (api-key header); default api-key for *.openai.azure.com URLs, else bearer";
    /// The chat model.
    OPENAI_MODEL = "OPENAI_MODEL", Some("gpt-4o-mini"),
        "chat model name";
    /// A single user message.
    OPENAI_PROMPT = "OPENAI_PROMPT", Some(DEFAULT_PROMPT),
        "one user message (exclusive with LLMJOB_MESSAGES)";
    /// A file holding the one user message (e.g. a mounted ConfigMap key), instead of
    /// `OPENAI_PROMPT`.
    OPENAI_PROMPT_FILE = "OPENAI_PROMPT_FILE", None,
        "path of a UTF-8 file holding the user message, e.g. a mounted ConfigMap key (exclusive with OPENAI_PROMPT and the messages)";
    /// A JSON array of chat messages, instead of `OPENAI_PROMPT`.
    LLMJOB_MESSAGES = "LLMJOB_MESSAGES", None,
        "JSON array of chat messages [{\"role\":\"system|developer|user|assistant\",\"content\":\"...\"}] (exclusive with OPENAI_PROMPT)";
    /// A file holding the JSON array of chat messages, instead of `LLMJOB_MESSAGES`.
    LLMJOB_MESSAGES_FILE = "LLMJOB_MESSAGES_FILE", None,
        "path of a UTF-8 file holding the JSON array of chat messages (exclusive with LLMJOB_MESSAGES and the prompt)";
    /// Sampling temperature.
    LLMJOB_TEMPERATURE = "LLMJOB_TEMPERATURE", None,
        "sampling temperature, a number from 0 to 2";
    /// Nucleus sampling.
    LLMJOB_TOP_P = "LLMJOB_TOP_P", None,
        "nucleus sampling, a number from 0 to 1";
    /// Maximum completion tokens.
    LLMJOB_MAX_TOKENS = "LLMJOB_MAX_TOKENS", None,
        "maximum completion tokens, a whole number >= 1";
    /// Sampling seed.
    LLMJOB_SEED = "LLMJOB_SEED", None,
        "sampling seed, a whole number";
    /// Stop sequences.
    LLMJOB_STOP = "LLMJOB_STOP", None,
        "stop sequences: a JSON array of 1 to 4 strings, or one plain string";
    /// Frequency penalty.
    LLMJOB_FREQUENCY_PENALTY = "LLMJOB_FREQUENCY_PENALTY", None,
        "frequency penalty, a number from -2 to 2";
    /// Presence penalty.
    LLMJOB_PRESENCE_PENALTY = "LLMJOB_PRESENCE_PENALTY", None,
        "presence penalty, a number from -2 to 2";
    /// Number of choices.
    LLMJOB_N = "LLMJOB_N", None,
        "number of choices to generate, a whole number from 1 to 128";
    /// Tools the model may call.
    LLMJOB_TOOLS = "LLMJOB_TOOLS", None,
        "JSON array of tools [{\"type\":\"function\",\"function\":{\"name\":\"...\",\"parameters\":{...}}}]";
    /// Which tool the model calls.
    LLMJOB_TOOL_CHOICE = "LLMJOB_TOOL_CHOICE", None,
        "none, auto, required, or a JSON object such as {\"type\":\"function\",\"function\":{\"name\":\"...\"}} (needs LLMJOB_TOOLS unless none)";
    /// The answer's format.
    LLMJOB_RESPONSE_FORMAT = "LLMJOB_RESPONSE_FORMAT", None,
        "text, json_object, or a JSON object {\"type\":\"json_schema\",\"json_schema\":{\"name\":\"...\",\"schema\":{...},\"strict\":true}}";
    /// Reasoning effort of reasoning models.
    LLMJOB_REASONING_EFFORT = "LLMJOB_REASONING_EFFORT", None,
        "reasoning effort: none, minimal, low, medium, high or xhigh";
    /// Service tier.
    LLMJOB_SERVICE_TIER = "LLMJOB_SERVICE_TIER", None,
        "service tier: auto, default, flex, scale or priority";
    /// End-user identifier sent as `user`.
    LLMJOB_USER = "LLMJOB_USER", None,
        "end-user identifier sent as user (at most 256 characters; exported only with full capture)";
    /// Stream the response (server-sent events).
    LLMJOB_STREAM = "LLMJOB_STREAM", Some("false"),
        "stream the response: true or false";
    /// Overall deadline for all attempts.
    LLMJOB_TIMEOUT = "LLMJOB_TIMEOUT", Some(concat!(default_timeout_secs!(), "s")),
        "overall deadline for all attempts, a duration such as 90s, 5m or 1h";
    /// Attempts on retryable failures.
    LLMJOB_MAX_ATTEMPTS = "LLMJOB_MAX_ATTEMPTS", Some(concat!(default_max_attempts!())),
        "attempts on retryable failures (429, 5xx, timeouts), a whole number from 1 to 20";
    /// Content capture mode.
    LLMJOB_CONTENT_CAPTURE = "LLMJOB_CONTENT_CAPTURE", Some("none"),
        "prompt/completion capture in telemetry: none, hash or full";
    /// A JSON Lines file of batch items: switches the runner to batch mode.
    LLMJOB_ITEMS_FILE = "LLMJOB_ITEMS_FILE", None,
        "path of a JSON Lines file of batch items, one {\"id\":\"...\",\"prompt\":\"...\"} or {\"id\":\"...\",\"messages\":[...]} per line; switches to batch mode (exclusive with the prompt and messages variables)";
    /// Items per shard of a batch.
    LLMJOB_ITEMS_PER_POD = "LLMJOB_ITEMS_PER_POD", None,
        "batch items each shard takes, a whole number >= 1: shard i takes items i*N to (i+1)*N-1; default all items (one shard)";
    /// The shard a pod of an Indexed Job runs (set by Kubernetes, not by the operator).
    JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX", Some("0"),
        "the batch shard this pod runs, a whole number >= 0 (Kubernetes sets it in an Indexed Job)";
    /// Items in flight at once in one pod.
    LLMJOB_CONCURRENCY = "LLMJOB_CONCURRENCY", Some("4"),
        "batch items in flight at once in this pod, a whole number from 1 to 64";
    /// This pod's share of the run's request rate limit.
    LLMJOB_REQUESTS_PER_MINUTE = "LLMJOB_REQUESTS_PER_MINUTE", None,
        "requests per minute this pod may send (its share of spec.batch.rateLimit), a whole number >= 1; unset: no limit";
    /// This pod's share of the run's token rate limit.
    LLMJOB_TOKENS_PER_MINUTE = "LLMJOB_TOKENS_PER_MINUTE", None,
        "tokens per minute this pod may use (its share of spec.batch.rateLimit), a whole number >= 1; unset: no limit";
    /// Failed items the whole run tolerates.
    LLMJOB_MAX_FAILED_ITEMS = "LLMJOB_MAX_FAILED_ITEMS", Some("0"),
        "failed batch items the whole run tolerates; a pod whose own failed items exceed it stops and exits 6";
    /// Where a batch's per-item results go.
    LLMJOB_OUTPUT_URL = "LLMJOB_OUTPUT_URL", None,
        "where each shard writes its items' results as JSON Lines: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///dir or configmap://NAME (object-store credentials from LLMJOB_OUTPUT_CREDENTIALS_DIR, else the store's usual variables, e.g. AWS_ACCESS_KEY_ID)";
    /// The mounted directory of the output's object-store credentials
    /// (`spec.output.credentialsSecretRef`, one file per key).
    LLMJOB_OUTPUT_CREDENTIALS_DIR = "LLMJOB_OUTPUT_CREDENTIALS_DIR", None,
        "directory of the object store's configuration, one file per key (the mounted output Secret): only files named as a configuration key of the store LLMJOB_OUTPUT_URL selects (AWS_ACCESS_KEY_ID, aws_endpoint, GOOGLE_SERVICE_ACCOUNT_KEY, AZURE_STORAGE_ACCOUNT_KEY, ...) are read, and they win over the same keys in the environment; other files are ignored";
    /// Where the one-line JSON result is written.
    LLMJOB_RESULT_PATH = "LLMJOB_RESULT_PATH", Some("/dev/termination-log"),
        "file the one-line JSON result is written to (the container termination-message path)";
    /// `service.name` of the run's telemetry.
    OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME", Some("llm-job"),
        "service.name of the run's telemetry";
    /// `deployment.environment.name` of the run's telemetry.
    DEPLOYMENT_ENVIRONMENT = "DEPLOYMENT_ENVIRONMENT", Some("development"),
        "deployment.environment.name of the run's telemetry";
    /// OTLP endpoint, with or without a scheme.
    OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT", Some("http://collector:4317"),
        "OTLP endpoint, with or without a scheme (http:// assumed)";
    /// OTLP protocol.
    OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL", Some("grpc"),
        "OTLP protocol: grpc or http/protobuf";
    /// Extra resource attributes.
    OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES", None,
        "extra resource attributes, key1=value1,key2=value2 (values percent-encoded)";
    /// Disable all telemetry export.
    OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED", Some("false"),
        "true: run without exporting telemetry";
    /// W3C trace context the run joins.
    TRACEPARENT = "TRACEPARENT", None,
        "W3C traceparent; the run's root span becomes its child";
    /// W3C trace state accompanying `TRACEPARENT`.
    TRACESTATE = "TRACESTATE", None,
        "W3C tracestate accompanying TRACEPARENT";
    /// Standard GenAI content-capture switch, honoured when `LLMJOB_CONTENT_CAPTURE` is unset.
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None,
        "true means full capture, false none (when LLMJOB_CONTENT_CAPTURE is unset)";
    /// Traceloop's content-capture switch, honoured when `LLMJOB_CONTENT_CAPTURE` is unset.
    TRACELOOP_TRACE_CONTENT = "TRACELOOP_TRACE_CONTENT", None,
        "true means full capture, false none (when LLMJOB_CONTENT_CAPTURE is unset)";
    /// Log filter for the runner's stderr and OTLP logs.
    RUST_LOG = "RUST_LOG", Some("info"),
        "log filter, e.g. info or llmjob_runner=debug";
}

/// Prefixes of the variables the operator sets or the runner reads: a user variable
/// (`spec.pod.env`) whose name starts with one is refused, so no user variable can change the
/// runner's configuration, its OTLP export (`OTEL_EXPORTER_OTLP_HEADERS`, ...) or its trace.
pub const RESERVED_PREFIXES: &[&str] = &["OTEL_", "LLMJOB_", "OPENAI_", "TRACEPARENT"];

/// Variables of the contract that no [`RESERVED_PREFIXES`] entry covers and users may not set
/// either (`RUST_LOG`, the log filter, is the one variable of the contract users may set).
pub const RESERVED_NAMES: &[&str] = &[
    DEPLOYMENT_ENVIRONMENT.name,
    TRACESTATE.name,
    TRACELOOP_TRACE_CONTENT.name,
    JOB_COMPLETION_INDEX.name,
];

/// Whether a user environment variable named `name` is refused: it starts with a
/// [`RESERVED_PREFIXES`] entry or is one of [`RESERVED_NAMES`].
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) || RESERVED_NAMES.contains(&name)
}

/// Names of the pod-level variables the operator fills from the downward API and references from
/// `OTEL_RESOURCE_ATTRIBUTES` with `$(VAR)`. They are not read by the runner directly.
pub mod downward {
    /// `metadata.name` of the pod.
    pub const POD_NAME: &str = "LLMJOB_POD_NAME";
    /// `metadata.namespace` of the pod.
    pub const POD_NAMESPACE: &str = "LLMJOB_POD_NAMESPACE";
    /// `metadata.uid` of the pod.
    pub const POD_UID: &str = "LLMJOB_POD_UID";
    /// `spec.nodeName` of the pod.
    pub const NODE_NAME: &str = "LLMJOB_NODE_NAME";
}

/// The runner's exit codes the operator acts on (the job-runner's contract, `docs/job-runner.md`).
pub mod exit {
    /// A configuration error: the same pod would fail the same way again.
    pub const CONFIG: i32 = 2;
    /// The API refused the request permanently, or answered with nothing usable.
    pub const PERMANENT: i32 = 3;
    /// The run was cancelled by SIGTERM or SIGINT (the pod was deleted or evicted) before it
    /// finished; the result says `error.type=cancelled`.
    pub const CANCELLED: i32 = 5;
    /// A batch shard's own failed items exceeded the run's budget (`LLMJOB_MAX_FAILED_ITEMS`):
    /// the run has failed whatever the other shards do, and a retry would bill its items again.
    pub const TOO_MANY_FAILED_ITEMS: i32 = 6;
    /// The codes that fail the Job at once (its `podFailurePolicy`): a retry cannot succeed.
    pub const PERMANENT_CODES: [i32; 3] = [CONFIG, PERMANENT, TOO_MANY_FAILED_ITEMS];
    /// Seconds the runner needs after SIGTERM: it cancels the in-flight call at once, writes the
    /// result, and flushes telemetry within its 5 s budget (`FLUSH_BUDGET`). The runner pod's
    /// `terminationGracePeriodSeconds`, with a margin for a slow node.
    pub const TERMINATION_GRACE_SECS: i64 = 15;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let len = names.len();
        names.dedup();
        assert_eq!(len, names.len(), "duplicate variable name in the contract");
    }

    #[test]
    fn every_variable_but_the_log_filter_is_reserved() {
        for var in ALL {
            assert_eq!(
                is_reserved(var.name),
                var.name != RUST_LOG.name,
                "{}",
                var.name
            );
        }
        for name in [
            downward::POD_NAME,
            downward::POD_NAMESPACE,
            downward::POD_UID,
            downward::NODE_NAME,
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OPENAI_ORG_ID",
            "TRACEPARENT_X",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["RUST_LOG", "HTTPS_PROXY", "MY_OTEL_THING", "TRACE"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn reference_defaults_hold() {
        assert_eq!(OPENAI_MODEL.default, Some("gpt-4o-mini"));
        assert_eq!(OTEL_SERVICE_NAME.default, Some("llm-job"));
        assert_eq!(
            OTEL_EXPORTER_OTLP_ENDPOINT.default,
            Some("http://collector:4317")
        );
        assert_eq!(DEPLOYMENT_ENVIRONMENT.default, Some("development"));
        assert!(OPENAI_API_KEY.default.is_none());
        assert_eq!(LLMJOB_TIMEOUT.default, Some("300s"));
        assert_eq!(LLMJOB_MAX_ATTEMPTS.default, Some("4"));
        assert_eq!((DEFAULT_TIMEOUT_SECS, DEFAULT_MAX_ATTEMPTS), (300, 4));
    }
}
