//! `llmjob.dev/v1alpha1` `LlmJob`: the custom resource a user applies to run one traced OpenAI
//! chat completion as a Kubernetes Job.
//!
//! Owns the schema (every field documented for `kubectl explain`, OpenAPI bounds and CEL rules
//! with messages a user can act on) and the status shape. It does no I/O and holds no reconcile
//! logic: the operator builds Jobs from these types and derives the status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::env;
use crate::result::{ItemError, RunResult};

/// The API group of [`LlmJob`].
pub const GROUP: &str = "llmjob.dev";
/// The API version of [`LlmJob`].
pub const VERSION: &str = "v1alpha1";
/// The annotation whose W3C `traceparent` value becomes the parent of the run's trace.
pub const TRACEPARENT_ANNOTATION: &str = "llmjob.dev/traceparent";
/// The Kueue queue label: an LlmJob carrying it gets a suspended Job with the same label, and
/// Kueue decides when it runs.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// The default key of the API-key Secret.
pub const DEFAULT_API_KEY_KEY: &str = "api-key";
/// Upper bound of a prompt or a message's content, in characters (keeps CEL rules cheap and the
/// object well under etcd's limit).
pub const MAX_CONTENT_LENGTH: u32 = 65_536;
/// Upper bound of the number of messages.
pub const MAX_MESSAGES: u32 = 64;
/// Upper bound of the characters of content an LlmJob's input holds in all (the messages' content
/// summed; a batch's inline items' prompts and contents summed): what its input ConfigMap (at
/// most 1 MiB) holds once written as JSON. The operator checks the exact size in bytes before
/// it writes the ConfigMap.
pub const MAX_INPUT_CHARACTERS: u32 = 1_000_000;
/// Upper bound of a batch's inline items (`spec.batch.items`); more go in a ConfigMap
/// (`spec.batch.itemsFrom`).
pub const MAX_INLINE_ITEMS: u32 = 10_000;
/// Upper bound of a batch's pods at once (`spec.batch.parallelism`).
pub const MAX_PARALLELISM: u32 = 1_000;
/// Upper bound of a batch's items in flight in one pod (`spec.batch.concurrency`).
pub const MAX_CONCURRENCY: u32 = 64;
/// Items each pod of a batch takes when `spec.batch.itemsPerPod` is unset.
pub const DEFAULT_ITEMS_PER_POD: u32 = 10;
/// Pods of a batch at once when `spec.batch.parallelism` is unset.
pub const DEFAULT_PARALLELISM: u32 = 1;
/// Items in flight in one pod when `spec.batch.concurrency` is unset.
pub const DEFAULT_CONCURRENCY: u32 = 4;

/// The message of the transition rules that keep the spec immutable.
const IMMUTABLE: &str = "spec is immutable once created, except spec.suspend (and spec.pod, which only affects a Job not yet created): create a new LlmJob to run something else";

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}

fn default_api_key_key() -> String {
    DEFAULT_API_KEY_KEY.to_owned()
}

/// Prefixes of the resource-attribute keys the operator sets (`service.*`, `k8s.*`, `llmjob.*`,
/// `deployment.environment*`): users cannot set or override them through
/// `spec.telemetry.resourceAttributes`, so every run carries the same identifying attributes.
pub const RESERVED_ATTRIBUTE_PREFIXES: &[&str] =
    &["service.", "k8s.", "llmjob.", "deployment.environment"];

/// Longest value of a user resource attribute, in characters.
pub const MAX_ATTRIBUTE_VALUE_LENGTH: usize = 255;

/// Whether a user resource-attribute key is reserved (see [`RESERVED_ATTRIBUTE_PREFIXES`]).
pub fn is_reserved_attribute(key: &str) -> bool {
    RESERVED_ATTRIBUTE_PREFIXES
        .iter()
        .any(|p| key.starts_with(p))
}

/// The message of the rule on reserved resource-attribute keys (the operator's refusal says the
/// same).
pub const RESERVED_ATTRIBUTE_MESSAGE: &str = "spec.telemetry.resourceAttributes must not set service.*, k8s.*, llmjob.* or deployment.environment*: the operator sets those (use spec.telemetry.serviceName / environment)";

/// The message of the rule on reserved environment variables (the operator's refusal says the
/// same).
pub const RESERVED_ENV_MESSAGE: &str = "spec.pod.env must not set a variable the operator sets itself (names starting with OTEL_, LLMJOB_, OPENAI_ or TRACEPARENT, and DEPLOYMENT_ENVIRONMENT, TRACESTATE, TRACELOOP_TRACE_CONTENT): use spec.model, spec.parameters, spec.openai, spec.telemetry or spec.run instead";

/// A CEL string literal of `s` (the names and prefixes here hold no quote or backslash).
fn cel_string(s: &str) -> String {
    format!("'{s}'")
}

/// The CEL rule that rejects user environment variables the operator sets itself, by prefix
/// ([`env::RESERVED_PREFIXES`]) and by name ([`env::RESERVED_NAMES`]).
fn reserved_env_rule() -> Rule {
    let prefixes: Vec<String> = env::RESERVED_PREFIXES
        .iter()
        .map(|p| format!("e.name.startsWith({})", cel_string(p)))
        .collect();
    let names: Vec<String> = env::RESERVED_NAMES
        .iter()
        .copied()
        .map(cel_string)
        .collect();
    Rule::new(format!(
        "self.all(e, !({} || e.name in [{}]))",
        prefixes.join(" || "),
        names.join(", ")
    ))
    .message(RESERVED_ENV_MESSAGE)
}

/// The CEL rule that rejects reserved resource-attribute keys ([`RESERVED_ATTRIBUTE_PREFIXES`]).
fn reserved_attribute_rule() -> Rule {
    let prefixes: Vec<String> = RESERVED_ATTRIBUTE_PREFIXES
        .iter()
        .map(|p| format!("k.startsWith({})", cel_string(p)))
        .collect();
    Rule::new(format!("self.all(k, !({}))", prefixes.join(" || ")))
        .message(RESERVED_ATTRIBUTE_MESSAGE)
}

/// The CEL rule that bounds the values of resource attributes.
fn attribute_value_rule() -> Rule {
    Rule::new(format!(
        "self.all(k, size(self[k]) <= {MAX_ATTRIBUTE_VALUE_LENGTH})"
    ))
    .message(kube::core::Message::Message(format!(
        "spec.telemetry.resourceAttributes values must be at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters"
    )))
}

/// An LLM job: one OpenAI chat completion, run as a Kubernetes Job whose pod exports traces,
/// metrics and logs over OTLP. The operator reports the outcome, token usage and trace id in
/// the status.
// clippy reads the repeated `printcolumn(type_ = ...)` keys of the kube attribute as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmjob.dev",
    version = "v1alpha1",
    kind = "LlmJob",
    plural = "llmjobs",
    namespaced,
    shortname = "llmj",
    // Not in `all`: `kubectl delete all --all` must not delete LlmJobs, whose status holds
    // the runs' results (and deleting one deletes its Job and pods).
    category = "llmjob",
    status = "LlmJobStatus",
    derive = "PartialEq",
    doc = "An LLM job: one OpenAI chat completion, run as a Kubernetes Job whose pod exports traces, metrics and logs over OTLP.",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed or Suspended"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(
        name = "Tokens",
        type_ = "integer",
        json_path = ".status.result.usage.totalTokens",
        description = "Total tokens of the run"
    ),
    printcolumn(
        name = "Trace",
        type_ = "string",
        json_path = ".status.traceId",
        priority = 1,
        description = "Trace id of the run"
    ),
    printcolumn(
        name = "Job",
        type_ = "string",
        json_path = ".status.jobName",
        priority = 1
    ),
    printcolumn(
        name = "Trace URL",
        type_ = "string",
        json_path = ".status.traceURL",
        priority = 1,
        description = "Link to the run's trace (set when the operator has --trace-url-template)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.batch) || has(self.prompt) != has(self.messages)").message("set exactly one of spec.prompt and spec.messages (or spec.batch for many prompts)"),
    validation = Rule::new("!has(self.batch) || (!has(self.prompt) && !has(self.messages))").message("spec.batch is exclusive with spec.prompt and spec.messages: a batch's prompts are its items"),
    validation = Rule::new("has(self.batch) == has(self.output)").message("spec.batch needs spec.output (where the items' results go), and spec.output needs spec.batch"),
    validation = Rule::new("!has(self.messages) || self.messages.map(m, size(m.content)).sum() <= 1000000").message("spec.messages hold at most 1000000 characters of content in all (what the run's input ConfigMap holds): use a batch for many prompts").field_path(".messages"),
    validation = Rule::new("has(self.batch) == has(oldSelf.batch) && (!has(self.batch) || self.batch == oldSelf.batch)").message(IMMUTABLE).field_path(".batch"),
    validation = Rule::new("has(self.output) == has(oldSelf.output) && (!has(self.output) || self.output == oldSelf.output)").message(IMMUTABLE).field_path(".output"),
    validation = Rule::new("self.model == oldSelf.model").message(IMMUTABLE).field_path(".model"),
    validation = Rule::new("has(self.prompt) == has(oldSelf.prompt) && (!has(self.prompt) || self.prompt == oldSelf.prompt)").message(IMMUTABLE).field_path(".prompt"),
    validation = Rule::new("has(self.messages) == has(oldSelf.messages) && (!has(self.messages) || self.messages == oldSelf.messages)").message(IMMUTABLE).field_path(".messages"),
    validation = Rule::new("has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)").message(IMMUTABLE).field_path(".parameters"),
    validation = Rule::new("self.openai == oldSelf.openai").message(IMMUTABLE).field_path(".openai"),
    validation = Rule::new("has(self.telemetry) == has(oldSelf.telemetry) && (!has(self.telemetry) || self.telemetry == oldSelf.telemetry)").message(IMMUTABLE).field_path(".telemetry"),
    validation = Rule::new("has(self.run) == has(oldSelf.run) && (!has(self.run) || self.run == oldSelf.run)").message(IMMUTABLE).field_path(".run")
)]
#[serde(rename_all = "camelCase")]
pub struct LlmJobSpec {
    /// The chat model, e.g. `gpt-4o-mini`.
    #[serde(default = "default_model")]
    #[schemars(length(min = 1, max = 256))]
    pub model: String,

    /// A single user message. Set exactly one of `prompt` and `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub prompt: Option<String>,

    /// The full chat, as a list of messages. Set exactly one of `prompt` and `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub messages: Option<Vec<ChatMessage>>,

    /// Many prompts in one run (exclusive with `prompt` and `messages`): the items, how they are
    /// sharded over the pods of an Indexed Job, the run's shared rate limit and how many failed
    /// items it tolerates. Needs `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Box<BatchSpec>>,

    /// Where a batch writes its items' results (JSON Lines, one file or ConfigMap key per
    /// shard). Only with `batch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<OutputSpec>>,

    /// Request parameters of the chat completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Box<RequestParameters>>,

    /// How to reach the OpenAI-compatible API.
    pub openai: OpenAiConnection,

    /// Telemetry of the run. Fields left out take the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Box<TelemetrySpec>>,

    /// Deadline, retries and clean-up of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunControls>,

    /// Pod settings users of Jobs expect: resources, scheduling, identity, labels, extra env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<PodOverrides>>,

    /// Suspend the run: no pod starts while true (and a running pod is stopped). The only field
    /// that may change after creation. Kueue manages this for LlmJobs with a queue label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// Many prompts in one LlmJob: the items, their sharding over an Indexed Job, the run's shared
/// rate limit and its failure budget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.items) != has(self.itemsFrom)").message("set exactly one of spec.batch.items (inline) and spec.batch.itemsFrom (a ConfigMap key of JSON Lines)"),
    validation = Rule::new("!has(self.items) || self.items.map(i, has(i.prompt) ? size(i.prompt) : i.messages.map(m, size(m.content)).sum()).sum() <= 1000000").message("spec.batch.items hold at most 1000000 characters of prompts and message content in all (what the run's input ConfigMap holds): put larger batches in a ConfigMap and use spec.batch.itemsFrom"),
    validation = Rule::new("!has(self.rateLimit) || !has(self.rateLimit.requestsPerMinute) || self.rateLimit.requestsPerMinute >= (has(self.parallelism) ? self.parallelism : 1)").message("spec.batch.rateLimit.requestsPerMinute must be at least spec.batch.parallelism: the limit is shared out between the pods running at once"),
    validation = Rule::new("!has(self.rateLimit) || !has(self.rateLimit.tokensPerMinute) || self.rateLimit.tokensPerMinute >= (has(self.parallelism) ? self.parallelism : 1)").message("spec.batch.rateLimit.tokensPerMinute must be at least spec.batch.parallelism: the limit is shared out between the pods running at once")
)]
pub struct BatchSpec {
    /// The items, inline (at most 10000, 1000000 characters of content in all). Exclusive with
    /// `itemsFrom`. The operator writes them to a ConfigMap it owns, which the pods mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10000))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub items: Option<Vec<BatchItem>>,
    /// The items from a key of a ConfigMap in the LlmJob's namespace holding JSON Lines, one item
    /// (`{"id": "...", "prompt": "..."}` or `{"id": "...", "messages": [...]}`) per line.
    /// Exclusive with `items`. The pods mount that key; the operator does not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_from: Option<ItemsSource>,
    /// Items each pod takes (default 10): the Indexed Job has `ceil(items / itemsPerPod)`
    /// completions and pod `i` takes items `i*itemsPerPod` to `(i+1)*itemsPerPod - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub items_per_pod: Option<u32>,
    /// Pods running at once (default 1, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: Option<u32>,
    /// Items in flight at once in each pod (default 4, at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<u32>,
    /// A rate limit the whole LlmJob keeps: each of the pods running at once gets an equal share
    /// (rounded down). Unset: no limit but the provider's (a 429 still pauses the pod for its
    /// Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Failed items (after their own retries) the run tolerates before it is `Failed` (default
    /// 0: any failed item fails the run). A pod whose own failed items exceed it stops early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000000))]
    pub max_failed_items: Option<u64>,
}

/// One item of a batch: a prompt or a chat, with an optional id.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.prompt) != has(self.messages)").message("each item of spec.batch.items sets exactly one of prompt and messages"))]
pub struct BatchItem {
    /// The item's id in the results (default: its position in the list, from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub id: Option<String>,
    /// A single user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub prompt: Option<String>,
    /// The full chat, as a list of at most 32 messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub messages: Option<Vec<ChatMessage>>,
}

/// Where a batch's items come from, other than inline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ItemsSource {
    /// A key of a ConfigMap in the LlmJob's namespace holding JSON Lines.
    pub config_map_key_ref: ConfigMapKeySelector,
}

/// A key of a ConfigMap in the LlmJob's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeySelector {
    /// Name of the ConfigMap.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key holding the JSON Lines.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A rate limit shared by all the pods of a batch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per minute the whole LlmJob may send (at least `parallelism`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub requests_per_minute: Option<u64>,
    /// Tokens (prompt and completion) per minute the whole LlmJob may use (at least
    /// `parallelism`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub tokens_per_minute: Option<u64>,
}

/// Where a batch writes its results: an object-store URL or a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.url) != has(self.configMap)").message("set exactly one of spec.output.url and spec.output.configMap"),
    validation = Rule::new("!has(self.credentialsSecretRef) || has(self.url)").message("spec.output.credentialsSecretRef goes with spec.output.url (a ConfigMap output uses the pod's service account)")
)]
pub struct OutputSpec {
    /// An object-store URL (prefix) the pods write `part-NNNNN.jsonl` under: `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` or `file:///dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(s3|gs|az|file)://[^\\\\s]+$')").message("spec.output.url must be an s3://, gs://, az:// or file:// URL, e.g. s3://bucket/results"))]
    pub url: Option<String>,
    /// A Secret in the LlmJob's namespace with the object store's configuration, one key per
    /// setting: the store's usual names, e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ALLOW_HTTP` (or `GOOGLE_SERVICE_ACCOUNT_KEY`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, ...). The pods mount it read-only, never as variables, and
    /// read only the keys that configure the store the URL selects; other keys are ignored. The
    /// operator never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// A ConfigMap in the LlmJob's namespace the pods write key `part-NNNNN.jsonl` of (small
    /// result sets: a ConfigMap holds at most 1 MiB). The pods' service account needs `patch`
    /// on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapRef>,
}

/// A ConfigMap in the LlmJob's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    /// Name of the ConfigMap.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Who speaks a chat message.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// Instructions to the model (newer models' name for `system`).
    Developer,
    /// The user.
    User,
    /// An earlier answer of the model.
    Assistant,
}

/// One chat message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// Who speaks: `system`, `developer`, `user` or `assistant`.
    pub role: Role,
    /// The text of the message.
    #[schemars(length(min = 1, max = 65536))]
    pub content: String,
    /// An optional name of the participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub name: Option<String>,
}

/// Request parameters of the chat completion (unset ones are not sent).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.toolChoice) || self.toolChoice == 'none' || has(self.tools)").message("spec.parameters.toolChoice needs spec.parameters.tools (unless it is none)"),
    validation = Rule::new("!has(self.toolChoice) || self.toolChoice in ['none', 'auto', 'required'] || (has(self.tools) && self.tools.exists(t, t.function.name == self.toolChoice))").message("spec.parameters.toolChoice must be none, auto, required or the name of one of spec.parameters.tools")
)]
pub struct RequestParameters {
    /// Sampling temperature, from 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Nucleus sampling, from 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub top_p: Option<f64>,
    /// Maximum completion tokens, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_tokens: Option<u32>,
    /// Sampling seed, for best-effort reproducible answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stream the answer (server-sent events); adds time-to-first-chunk telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Up to 4 sequences where the model stops generating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub stop: Option<Vec<String>>,
    /// Penalises tokens by how often they already appeared, from -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2.0, max = 2.0))]
    pub frequency_penalty: Option<f64>,
    /// Penalises tokens that already appeared at all, from -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2.0, max = 2.0))]
    pub presence_penalty: Option<f64>,
    /// How many choices to generate (OpenAI's `n`), 1 to 128; all of them are reported (result,
    /// spans). Not named `n`: YAML 1.1 readers (kubectl, Helm) read a key `n` as `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    pub choice_count: Option<u32>,
    /// Functions the model may call instead of answering in text. The answer is then the tool
    /// calls (finish reason `tool_calls`); the run does not execute them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub tools: Option<Vec<Tool>>,
    /// Which tool the model calls: `none`, `auto` (the API's default with tools), `required` (at
    /// least one), or the name of one of `tools` (exactly that one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub tool_choice: Option<String>,
    /// The answer's format: plain text, any JSON object, or JSON following a schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Reasoning effort of reasoning models: `none`, `minimal`, `low`, `medium`, `high` or
    /// `xhigh` (which ones a model accepts varies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Processing tier: `auto`, `default`, `flex`, `scale` or `priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
    /// A stable identifier of the end user (e.g. a hash), sent as `user` to help the provider
    /// detect abuse. Exported in telemetry only with `contentCapture: full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,
}

/// The schema of a JSON object of any shape (a JSON Schema, a function's parameters), kept as
/// written: the API server cannot describe JSON Schema structurally.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A tool the model may call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// The kind of tool: `function` (the only one).
    #[serde(rename = "type")]
    pub kind: ToolKind,
    /// The function.
    pub function: FunctionTool,
}

/// The kind of a tool.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    /// A function with JSON arguments.
    Function,
}

/// A function the model may call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionTool {
    /// The function's name: letters, digits, `_` and `-`, at most 64.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-zA-Z0-9_-]{1,64}$"))]
    pub name: String,
    /// What the function does, for the model to decide when to call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// The arguments, as a JSON Schema object (kept as written, e.g.
    /// `{type: object, properties: {location: {type: string}}, required: [location]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether the model must follow `parameters` exactly (structured outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// The answer's format.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.type == 'json_schema') == has(self.jsonSchema)").message("spec.parameters.responseFormat.jsonSchema is required with type json_schema, and only then"))]
pub struct ResponseFormat {
    /// `text`, `json_object` (any JSON object) or `json_schema` (JSON following `jsonSchema`).
    #[serde(rename = "type")]
    pub kind: ResponseFormatKind,
    /// The schema the answer follows, with `type: json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// The kind of response format.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatKind {
    /// Plain text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema,
}

/// A named JSON Schema for structured outputs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JsonSchemaFormat {
    /// The schema's name: letters, digits, `_` and `-`, at most 64.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-zA-Z0-9_-]{1,64}$"))]
    pub name: String,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// The JSON Schema of the answer (kept as written).
    #[schemars(schema_with = "free_form_object")]
    pub schema: serde_json::Map<String, serde_json::Value>,
    /// Whether the model must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Reasoning effort of reasoning models.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// No reasoning.
    None,
    /// Minimal reasoning.
    Minimal,
    /// Low effort.
    Low,
    /// Medium effort.
    Medium,
    /// High effort.
    High,
    /// Extra-high effort.
    Xhigh,
}

/// Processing tier of the request.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTier {
    /// The project's setting.
    Auto,
    /// Standard processing.
    Default,
    /// Cheaper, slower processing.
    Flex,
    /// Scale-tier processing.
    Scale,
    /// Faster processing.
    Priority,
}

/// How the API key is sent.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AuthStyle {
    /// `Authorization: Bearer KEY` (OpenAI and most compatible servers).
    #[default]
    #[serde(rename = "bearer")]
    Bearer,
    /// `api-key: KEY` (Azure OpenAI's key authentication).
    #[serde(rename = "api-key")]
    ApiKey,
}

impl AuthStyle {
    /// The value of `LLMJOB_AUTH_STYLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStyle::Bearer => "bearer",
            AuthStyle::ApiKey => "api-key",
        }
    }
}

/// The wire name of a serialisable enum value: `flex` for [`ServiceTier::Flex`], `low` for
/// async-openai's `ReasoningEffort::Low`.
pub fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// How to reach the OpenAI-compatible API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiConnection {
    /// The Secret (in the LlmJob's namespace) holding the API key. The key reaches the pod only as
    /// a `secretKeyRef`; the operator never copies, logs or exports it.
    pub api_key_secret_ref: SecretKeySelector,
    /// Base URL of an OpenAI-compatible server, e.g. `https://api.openai.com/v1` (the default) or
    /// `http://vllm.models.svc:8000/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "baseURL")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("spec.openai.baseURL must be an http:// or https:// URL, e.g. https://api.openai.com/v1"))]
    pub base_url: Option<String>,
    /// OpenAI organisation id, sent as the `OpenAI-Organization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[!-~]{1,256}$"))]
    pub organization: Option<String>,
    /// OpenAI project id, sent as the `OpenAI-Project` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[!-~]{1,256}$"))]
    pub project: Option<String>,
    /// Azure OpenAI's `api-version` query parameter, e.g. `2024-10-21`. With Azure, `baseURL` is
    /// the deployment URL, e.g. `https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub api_version: Option<String>,
    /// How the key is sent: `bearer` (`Authorization: Bearer`) or `api-key` (the `api-key`
    /// header of Azure OpenAI). Default: `api-key` for `*.openai.azure.com` URLs, else `bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_style: Option<AuthStyle>,
}

/// A key of a Secret in the LlmJob's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key in the Secret whose value is the API key (default `api-key`).
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// OTLP protocol.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Every protocol.
    pub const ALL: [OtlpProtocol; 2] = [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf];

    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// The protocol a value of `OTEL_EXPORTER_OTLP_PROTOCOL` names (spelled exactly as
    /// [`as_str`](Self::as_str) spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// Prompt and completion capture in telemetry.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum ContentCapture {
    /// No prompt or completion text in telemetry (the default).
    #[default]
    None,
    /// SHA-256 hashes of prompt and completion, so equal inputs can be found without the text.
    Hash,
    /// The full messages, following the GenAI semantic conventions.
    Full,
}

impl ContentCapture {
    /// Every mode.
    pub const ALL: [ContentCapture; 3] = [
        ContentCapture::None,
        ContentCapture::Hash,
        ContentCapture::Full,
    ];

    /// The value of `LLMJOB_CONTENT_CAPTURE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentCapture::None => "none",
            ContentCapture::Hash => "hash",
            ContentCapture::Full => "full",
        }
    }

    /// The mode a value of `LLMJOB_CONTENT_CAPTURE` names (spelled exactly as
    /// [`as_str`](Self::as_str) spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Telemetry of the run. Fields left out take the operator's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// `service.name` of the run's telemetry (default `llm-job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub service_name: Option<String>,
    /// `deployment.environment.name` of the run's telemetry (default: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub environment: Option<String>,
    /// OTLP endpoint, e.g. `http://otel-collector.observability:4317` (default: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https?://)?[^/?#\\\\s]+')").message("spec.telemetry.endpoint must be host:port or an http(s):// URL, e.g. http://otel-collector:4317"))]
    pub endpoint: Option<String>,
    /// OTLP protocol: `grpc` or `http/protobuf` (default: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
    /// Extra resource attributes of the run's telemetry (added to `OTEL_RESOURCE_ATTRIBUTES`),
    /// values of at most 255 characters. Keys the operator sets (`service.*`, `k8s.*`,
    /// `llmjob.*`, `deployment.environment*`) are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(
        validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9_.-]{1,255}$'))").message("spec.telemetry.resourceAttributes keys must be 1-255 characters of letters, digits, '.', '_' or '-'"),
        validation = reserved_attribute_rule(),
        validation = attribute_value_rule()
    )]
    pub resource_attributes: BTreeMap<String, String>,
    /// Prompt and completion capture: `none` (default), `hash` or `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_capture: Option<ContentCapture>,
}

/// Deadline, retries and clean-up of the run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunControls {
    /// Deadline for all attempts, e.g. `90s`, `5m`, `1h` (default `5m`); the Job's
    /// `activeDeadlineSeconds` is set a little above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"),
        length(min = 2, max = 16)
    )]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("spec.run.timeout must be between 1s and 24h, e.g. 90s or 5m"))]
    pub timeout: Option<String>,
    /// Attempts of the API call on retryable failures (429, 5xx, timeouts), 1 to 20 (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: Option<u32>,
    /// Pod retries of the Job, 0 to 10 (default 0: the runner already retries the API call, and
    /// a second pod would repeat a call that may have been billed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
    /// Seconds after the run finishes before its Job and pod are deleted (the LlmJob and its
    /// status stay). Unset: they stay until the LlmJob is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Pod settings users of Jobs expect.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Compute resources of the runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Service account of the pod (default: the operator's runner ServiceAccount, else the
    /// namespace's `default` without a token mounted). Another one is refused unless the
    /// cluster's LlmJob admission policy allows it in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Pull secrets for the runner image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Priority class of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra labels of the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra environment variables of the runner container. Names starting with `OTEL_`,
    /// `LLMJOB_`, `OPENAI_` or `TRACEPARENT` (and the other variables the operator sets) are
    /// rejected: use the matching spec fields. `valueFrom.secretKeyRef` and `configMapKeyRef` are
    /// refused unless the cluster's LlmJob admission policy allows them in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Atomic, validation = reserved_env_rule())]
    pub env: Vec<EnvVar>,
}

/// The phase of an LlmJob.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, waiting for its pod (or for a Secret, or for admission by a queue).
    Pending,
    /// The pod runs.
    Running,
    /// The completion was received.
    Succeeded,
    /// The run ended without a completion.
    Failed,
    /// `spec.suspend` is true (or a queue has not admitted it yet).
    Suspended,
}

impl Phase {
    /// Whether the run is over and will never run again.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// The CamelCase name of the phase, as in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Suspended => "Suspended",
        }
    }
}

/// The types of the conditions in `status.conditions`, following kstatus: every status holds
/// each of them once.
pub mod condition {
    /// The run succeeded (kstatus' readiness).
    pub const READY: &str = "Ready";
    /// The run finished with a completion (terminal).
    pub const SUCCEEDED: &str = "Succeeded";
    /// The run finished without a completion (terminal).
    pub const FAILED: &str = "Failed";
    /// The operator is still working towards the end of the run (kstatus).
    pub const RECONCILING: &str = "Reconciling";
    /// The LlmJob cannot progress until something changes (kstatus).
    pub const STALLED: &str = "Stalled";
    /// Every condition type, in the order the status lists them.
    pub const ALL: [&str; 5] = [READY, SUCCEEDED, FAILED, RECONCILING, STALLED];
}

/// The observed state of an LlmJob.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LlmJobStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: `Ready` (the run succeeded), `Succeeded`, `Failed`, `Reconciling` (work in
    /// progress) and `Stalled` (stuck until something changes), following kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the Job that runs (or ran) this LlmJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the run's pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// HTTP attempts the run made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Trace id (32 hex digits) of the run's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Link to the run's trace in your trace UI (Jaeger, Grafana, a vendor): the operator's
    /// `--trace-url-template` (chart value `traceURLTemplate`) with `{traceId}` replaced by
    /// `traceId`. Unset when the operator has no template.
    #[serde(default, rename = "traceURL", skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    /// The run's result as reported by the runner: response id, model, finish reason, token
    /// usage, duration and, on failure, the error. Never prompt or completion content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RunResult>>,
    /// A batch's progress and totals (batch LlmJobs only); `result` then holds the shards' sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Box<BatchStatus>>,
}

/// Most item errors a batch's status lists.
pub const MAX_STATUS_ITEM_ERRORS: usize = 5;

/// A batch's progress and totals, summed over the shards that finished.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    /// Items of the batch, when the operator knows them (inline items); unset for `itemsFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// Items that succeeded, in the shards that finished.
    pub succeeded: u64,
    /// Items that failed after their own retries, in the shards that finished.
    pub failed: u64,
    /// Shards (pods of the Indexed Job) that reported their result.
    pub shards_done: u32,
    /// Shards of the run (the Indexed Job's completions), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    /// Where the results are written (`spec.output.url`, or `configmap://NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The first item errors, in shard and item order (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub item_errors: Vec<ItemError>,
}

/// The `LlmJob` CustomResourceDefinition as installed: [`kube::CustomResourceExt::crd`] with the
/// integer formats schemars emits for unsigned types (`uint32`, ...), which the API server does not
/// know and warns about on every apply, replaced by the Kubernetes ones (`int32`/`int64`).
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = LlmJob::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            fix_formats(schema);
        }
    }
    crd
}

fn fix_formats(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    schema.format = match schema.format.take().as_deref() {
        Some("uint8" | "uint16" | "uint32" | "int8" | "int16") => Some("int32".to_owned()),
        Some("uint64" | "uint") => Some("int64".to_owned()),
        other => other.map(str::to_owned),
    };
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        fix_formats(child);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        fix_formats(items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        fix_formats(extra);
    }
    for child in schema
        .all_of
        .iter_mut()
        .chain(schema.any_of.iter_mut())
        .chain(schema.one_of.iter_mut())
        .flatten()
    {
        fix_formats(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn installed_crd_uses_kubernetes_integer_formats() {
        let yaml = serde_norway::to_string(&crd()).unwrap_or_default();
        assert!(
            !yaml.contains("format: uint"),
            "unknown integer format left in the CRD"
        );
        assert!(yaml.contains("format: int32"));
    }

    /// kubectl, Helm and most GitOps tools read YAML 1.1, where an unquoted `n`, `y`, `on`, `no`
    /// and the like are booleans: a field named so becomes `false`/`true` in users' manifests and
    /// in the chart's copy of the CRD (found with `n`, now `choiceCount`).
    #[test]
    fn no_field_name_is_a_yaml_1_1_boolean_or_null() {
        const AMBIGUOUS: &[&str] = &[
            "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
        ];
        fn walk(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                        for (name, schema) in props {
                            if AMBIGUOUS.contains(&name.to_ascii_lowercase().as_str()) {
                                found.push(format!("{path}.{name}"));
                            }
                            walk(schema, &format!("{path}.{name}"), found);
                        }
                    }
                    for (key, child) in map {
                        if key != "properties" {
                            walk(child, path, found);
                        }
                    }
                }
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|item| walk(item, path, found))
                }
                _ => {}
            }
        }
        let schema = serde_json::to_value(crd()).unwrap_or_default();
        let mut found = Vec::new();
        walk(&schema, "", &mut found);
        assert!(schema.get("spec").is_some(), "the CRD serialises");
        assert!(
            found.is_empty(),
            "YAML 1.1 reads these field names as booleans or null: {found:?}"
        );
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = LlmJob::crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.short_names, Some(vec!["llmj".to_owned()]));
        // `all` would make `kubectl delete all --all` delete every LlmJob and its result.
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["llmjob".to_owned()]),
            "LlmJob must not be in the `all` category"
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Status",
                "Model",
                "Tokens",
                "Trace",
                "Job",
                "Trace URL",
                "Age"
            ]
        );
        let trace_url = version
            .additional_printer_columns
            .iter()
            .flatten()
            .find(|c| c.name == "Trace URL")
            .unwrap();
        assert_eq!(trace_url.json_path, ".status.traceURL");
        assert_eq!(trace_url.priority, Some(1), "a column of -o wide only");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }

    #[test]
    fn spec_round_trips_with_defaults() {
        let yaml =
            "model: gpt-4o-mini\nprompt: hi\nopenai:\n  apiKeySecretRef:\n    name: openai\n";
        let spec: LlmJobSpec = match serde_norway::from_str(yaml) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(spec.openai.api_key_secret_ref.key, DEFAULT_API_KEY_KEY);
        let json = serde_json::to_value(&spec).unwrap_or_default();
        assert_eq!(json["openai"]["apiKeySecretRef"]["key"], "api-key");
        assert!(json.get("messages").is_none());
    }

    #[test]
    fn every_field_is_documented() {
        let crd = serde_json::to_value(LlmJob::crd()).unwrap_or_default();
        let mut undocumented = Vec::new();
        walk(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut undocumented,
        );
        assert!(
            undocumented.is_empty(),
            "fields without a description: {undocumented:?}"
        );
    }

    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                // metadata and apiVersion/kind are documented by Kubernetes itself.
                if !["apiVersion", "kind", "metadata"].contains(&name.as_str())
                    && sub.get("description").is_none()
                {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }

    #[test]
    fn protocol_and_capture_names_round_trip() {
        for p in OtlpProtocol::ALL {
            assert_eq!(OtlpProtocol::from_name(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap_or_default(), p.as_str());
        }
        for c in ContentCapture::ALL {
            assert_eq!(ContentCapture::from_name(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap_or_default(), c.as_str());
        }
        assert_eq!(OtlpProtocol::from_name("http/json"), None);
        assert_eq!(ContentCapture::from_name("Full"), None);
    }

    #[test]
    fn phase_names_are_the_serialised_ones() {
        for phase in [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Suspended,
        ] {
            assert_eq!(
                serde_json::to_value(phase).unwrap_or_default(),
                phase.as_str()
            );
        }
    }

    #[test]
    fn reserved_env_rule_names_the_contract() {
        let rule = serde_json::to_string(&reserved_env_rule()).unwrap_or_default();
        assert!(
            rule.contains("startsWith('OTEL_')")
                && rule.contains("startsWith('TRACEPARENT')")
                && rule.contains("'TRACESTATE'"),
            "{rule}"
        );
        assert!(!rule.contains("RUST_LOG"), "{rule}");
    }

    #[test]
    fn reserved_attributes() {
        for key in [
            "service.name",
            "service.version",
            "k8s.pod.name",
            "llmjob.name",
            "llmjob.uid",
            "deployment.environment",
            "deployment.environment.name",
        ] {
            assert!(is_reserved_attribute(key), "{key}");
        }
        for key in ["team", "cost.center", "servicename", "deployment.region"] {
            assert!(!is_reserved_attribute(key), "{key}");
        }
        let rule = serde_json::to_string(&reserved_attribute_rule()).unwrap_or_default();
        assert!(rule.contains("startsWith('llmjob.')"), "{rule}");
    }
}
