//! Validate step: the checks an LlmJob must pass before the operator builds its Job.
//!
//! Pure. The API server already enforces the CRD's OpenAPI and CEL rules; [`validate`] re-checks
//! what the build relies on (metadata, exactly one of prompt and messages, a parseable timeout,
//! no reserved environment variable or resource attribute) so that an object that slipped past
//! admission (an older CRD, a hand-edited status) becomes a clear `InvalidSpec` condition instead
//! of a broken pod.
//!
//! [`permitted`] is the tenant policy: what an LlmJob may ask for beyond a plain run (environment
//! from Secrets or ConfigMaps, another ServiceAccount, plain-http `baseURL` outside the cluster).
//! The chart's ValidatingAdmissionPolicy refuses the same at admission; the operator checks again
//! before it creates a Job (defence in depth: the policy may be off, or the object older than
//! it), with the same loosening: cluster-wide flags ([`TenantPolicy`]) and namespace labels
//! ([`labels`]). It never reports on secrets or anything else that needs the cluster: the
//! controller passes the namespace's labels in.

use std::collections::BTreeMap;

use kube::Resource;
use llmjob_crds::env::{self, DEFAULT_TIMEOUT_SECS};
use llmjob_crds::v1alpha1::{
    BatchItem, ChatMessage, DEFAULT_CONCURRENCY, DEFAULT_ITEMS_PER_POD, DEFAULT_PARALLELISM,
    LlmJob, LlmJobSpec, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_CONCURRENCY, RESERVED_ATTRIBUTE_MESSAGE,
    RESERVED_ENV_MESSAGE, TRACEPARENT_ANNOTATION, is_reserved_attribute,
};

use crate::contract::CONFIGMAP_OUTPUT_SCHEME;
use crate::traceparent::{TraceParent, TraceParentError};

/// Longest accepted `spec.run.timeout` (the CRD's bound).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Why an LlmJob cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A metadata field the operator needs is missing.
    #[error("{0} is missing")]
    MissingMetadata(&'static str),
    /// Neither `spec.prompt` nor `spec.messages` is set.
    #[error("set exactly one of spec.prompt and spec.messages (neither is set)")]
    NoPrompt,
    /// Both `spec.prompt` and `spec.messages` are set.
    #[error("set exactly one of spec.prompt and spec.messages (both are set)")]
    PromptAndMessages,
    /// `spec.messages` is an empty list.
    #[error("spec.messages must hold at least one message")]
    NoMessages,
    /// `spec.run.timeout` is not a duration such as `90s`, `5m` or `1h30m` between 1s and 24h.
    #[error(
        "spec.run.timeout {0:?} must be a duration such as 90s, 5m or 1h30m, between 1s and 24h"
    )]
    Timeout(String),
    /// A `spec.pod.env` entry names a variable the operator sets (by prefix or name).
    #[error("{RESERVED_ENV_MESSAGE} (spec.pod.env sets {0})")]
    ReservedEnv(String),
    /// A `spec.telemetry.resourceAttributes` key is one the operator sets.
    #[error("{RESERVED_ATTRIBUTE_MESSAGE} (it sets {0})")]
    ReservedAttribute(String),
    /// A `spec.telemetry.resourceAttributes` value is too long.
    #[error(
        "spec.telemetry.resourceAttributes values must be at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters ({0} is longer)"
    )]
    AttributeTooLong(String),
    /// `spec.openai.baseURL` is not a URL.
    #[error("spec.openai.baseURL {0:?} is not a URL: use e.g. https://api.openai.com/v1")]
    BaseUrl(String),
    /// `spec.batch` is set together with `spec.prompt` or `spec.messages`.
    #[error(
        "spec.batch is exclusive with spec.prompt and spec.messages: a batch's prompts are its items"
    )]
    BatchAndPrompt,
    /// `spec.batch` and `spec.output` do not come together.
    #[error(
        "spec.batch needs spec.output (where the items' results go), and spec.output needs spec.batch"
    )]
    BatchOutput,
    /// `spec.batch` sets neither or both of `items` and `itemsFrom`, or an empty list.
    #[error(
        "set exactly one of spec.batch.items (inline, at least one) and spec.batch.itemsFrom (a ConfigMap key of JSON Lines)"
    )]
    BatchItems,
    /// An inline item sets neither or both of `prompt` and `messages`.
    #[error(
        "each item of spec.batch.items sets exactly one of prompt and messages (item {0} does not)"
    )]
    BatchItem(usize),
    /// `spec.output` sets neither or both of `url` and `configMap`.
    #[error("set exactly one of spec.output.url and spec.output.configMap")]
    Output,
    /// A share of the rate limit would be zero.
    #[error(
        "spec.batch.rateLimit.{0} must be at least spec.batch.parallelism: the limit is shared out between the pods running at once"
    )]
    RateLimit(&'static str),
}

/// What the model is asked: exactly one of `spec.prompt`, `spec.messages` and `spec.batch`.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `spec.prompt`.
    Prompt(String),
    /// `spec.messages`, at least one.
    Messages(Vec<ChatMessage>),
    /// `spec.batch` with `spec.output`.
    Batch(Box<Batch>),
}

/// Where a batch's items are.
#[derive(Debug, Clone, PartialEq)]
pub enum Items {
    /// `spec.batch.items`, at least one.
    Inline(Vec<BatchItem>),
    /// `spec.batch.itemsFrom.configMapKeyRef`: a key of a ConfigMap of the namespace.
    ConfigMap {
        /// The ConfigMap.
        name: String,
        /// Its key holding the JSON Lines.
        key: String,
    },
}

/// A batch, with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The items.
    pub items: Items,
    /// How many items there are: the inline list's length; for `itemsFrom`, unknown (`None`)
    /// until the controller has counted the ConfigMap key's lines ([`crate::input::count_items`]).
    pub item_count: Option<u64>,
    /// Items per pod.
    pub items_per_pod: u32,
    /// Pods at once.
    pub parallelism: u32,
    /// Items in flight per pod.
    pub concurrency: u32,
    /// The whole run's requests per minute.
    pub requests_per_minute: Option<u64>,
    /// The whole run's tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Failed items the run tolerates.
    pub max_failed_items: u64,
    /// `LLMJOB_OUTPUT_URL`: `spec.output.url` verbatim, or `configmap://NAME`.
    pub output_url: String,
    /// The Secret mounted in the pods as the object store's configuration
    /// (`spec.output.credentialsSecretRef`).
    pub credentials_secret: Option<String>,
}

impl Batch {
    /// The Indexed Job's completions, `ceil(items / itemsPerPod)`, once the items are counted.
    pub fn completions(&self) -> Option<u64> {
        self.item_count
            .map(|n| n.div_ceil(u64::from(self.items_per_pod.max(1))))
    }
}

fn batch(spec: &LlmJobSpec) -> Result<Option<Batch>, ValidationError> {
    let (batch, output) = match (&spec.batch, &spec.output) {
        (None, None) => return Ok(None),
        (Some(b), Some(o)) => (b, o),
        _ => return Err(ValidationError::BatchOutput),
    };
    if spec.prompt.is_some() || spec.messages.is_some() {
        return Err(ValidationError::BatchAndPrompt);
    }
    let items = match (&batch.items, &batch.items_from) {
        (Some(items), None) if !items.is_empty() => {
            if let Some(i) = items
                .iter()
                .position(|i| i.prompt.is_some() == i.messages.is_some())
            {
                return Err(ValidationError::BatchItem(i + 1));
            }
            Items::Inline(items.clone())
        }
        (None, Some(from)) => Items::ConfigMap {
            name: from.config_map_key_ref.name.clone(),
            key: from.config_map_key_ref.key.clone(),
        },
        _ => return Err(ValidationError::BatchItems),
    };
    let output_url = match (&output.url, &output.config_map) {
        (Some(url), None) => url.clone(),
        (None, Some(cm)) => format!("{CONFIGMAP_OUTPUT_SCHEME}{}", cm.name),
        _ => return Err(ValidationError::Output),
    };
    let parallelism = batch.parallelism.unwrap_or(DEFAULT_PARALLELISM).max(1);
    let limits = batch.rate_limit.clone().unwrap_or_default();
    for (field, limit) in [
        ("requestsPerMinute", limits.requests_per_minute),
        ("tokensPerMinute", limits.tokens_per_minute),
    ] {
        if limit.is_some_and(|l| l < u64::from(parallelism)) {
            return Err(ValidationError::RateLimit(field));
        }
    }
    let item_count = match &items {
        Items::Inline(list) => Some(list.len() as u64),
        Items::ConfigMap { .. } => None,
    };
    Ok(Some(Batch {
        items,
        item_count,
        items_per_pod: batch.items_per_pod.unwrap_or(DEFAULT_ITEMS_PER_POD).max(1),
        parallelism,
        concurrency: batch
            .concurrency
            .unwrap_or(DEFAULT_CONCURRENCY)
            .clamp(1, MAX_CONCURRENCY),
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        max_failed_items: batch.max_failed_items.unwrap_or(0),
        output_url,
        credentials_secret: output
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.clone()),
    }))
}

/// What the later steps need from a valid LlmJob.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The prompt or the messages.
    pub input: Input,
    /// The run's deadline in seconds.
    pub timeout_secs: u64,
    /// The trace context of the `llmjob.dev/traceparent` annotation, when it holds a valid one.
    pub parent: Option<TraceParent>,
    /// Why the annotation was ignored, when it is set but invalid (the run then starts a new
    /// trace; this is a warning, not an error).
    pub parent_error: Option<TraceParentError>,
}

/// Checks the LlmJob.
pub fn validate(llmjob: &LlmJob) -> Result<Validated, ValidationError> {
    let meta = llmjob.meta();
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ValidationError::MissingMetadata("metadata.name"))?;
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ValidationError::MissingMetadata("metadata.namespace"))?;
    let uid = meta
        .uid
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ValidationError::MissingMetadata("metadata.uid"))?;
    let input = match (
        batch(&llmjob.spec)?,
        &llmjob.spec.prompt,
        &llmjob.spec.messages,
    ) {
        (Some(b), _, _) => Input::Batch(Box::new(b)),
        (None, None, None) => return Err(ValidationError::NoPrompt),
        (None, Some(_), Some(_)) => return Err(ValidationError::PromptAndMessages),
        (None, None, Some(m)) if m.is_empty() => return Err(ValidationError::NoMessages),
        (None, Some(prompt), None) => Input::Prompt(prompt.clone()),
        (None, None, Some(messages)) => Input::Messages(messages.clone()),
    };
    let timeout_secs = match llmjob.spec.run.as_ref().and_then(|r| r.timeout.as_deref()) {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) => parse_timeout(t).ok_or_else(|| ValidationError::Timeout(t.to_owned()))?,
    };
    if let Some(pod) = &llmjob.spec.pod
        && let Some(var) = pod.env.iter().find(|v| env::is_reserved(&v.name))
    {
        return Err(ValidationError::ReservedEnv(var.name.clone()));
    }
    if let Some(telemetry) = &llmjob.spec.telemetry {
        for (key, value) in &telemetry.resource_attributes {
            if is_reserved_attribute(key) {
                return Err(ValidationError::ReservedAttribute(key.clone()));
            }
            if value.chars().count() > MAX_ATTRIBUTE_VALUE_LENGTH {
                return Err(ValidationError::AttributeTooLong(key.clone()));
            }
        }
    }
    if let Some(base_url) = &llmjob.spec.openai.base_url
        && !matches!(url::Url::parse(base_url), Ok(u) if u.has_host() && matches!(u.scheme(), "http" | "https"))
    {
        return Err(ValidationError::BaseUrl(base_url.clone()));
    }
    let (parent, parent_error) = match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACEPARENT_ANNOTATION))
    {
        None => (None, None),
        Some(v) => match TraceParent::parse(v) {
            Ok(tp) => (Some(tp), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(Validated {
        name,
        namespace,
        uid,
        input,
        timeout_secs,
        parent,
        parent_error,
    })
}

/// The namespace labels with which a platform team allows, in one namespace, what the tenant
/// policy refuses by default. The chart's ValidatingAdmissionPolicy reads the same labels
/// (`namespaceObject.metadata.labels`); only `true` allows.
pub mod labels {
    /// Allows `spec.pod.env[].valueFrom.secretKeyRef` and `configMapKeyRef`.
    pub const ALLOW_ENV_REFS: &str = "llmjob.dev/allow-env-refs";
    /// Allows any ServiceAccount of the namespace in `spec.pod.serviceAccountName`.
    pub const ALLOW_SERVICE_ACCOUNTS: &str = "llmjob.dev/allow-service-accounts";
    /// Allows a plain-http `spec.openai.baseURL` to a host outside the cluster.
    pub const ALLOW_INSECURE_BASE_URL: &str = "llmjob.dev/allow-insecure-base-url";
}

/// The tenant policy, cluster-wide: what every namespace allows (operator flags, the chart's
/// `tenancy.*` values). A namespace label ([`labels`]) allows more in that namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// `secretKeyRef`/`configMapKeyRef` in `spec.pod.env` everywhere (`--allow-env-refs`).
    pub allow_env_refs: bool,
    /// Any ServiceAccount everywhere (`--allow-service-accounts`).
    pub allow_service_accounts: bool,
    /// Plain-http `baseURL` to any host everywhere (`--allow-insecure-base-url`).
    pub allow_insecure_base_url: bool,
    /// The runner pods' ServiceAccount (`--runner-service-account`), always allowed.
    pub runner_service_account: Option<String>,
    /// The cluster's DNS domain (`--cluster-domain`): `*.svc.<domain>` hosts are in the cluster.
    pub cluster_domain: String,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy {
            allow_env_refs: false,
            allow_service_accounts: false,
            allow_insecure_base_url: false,
            runner_service_account: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
        }
    }
}

/// The cluster domain when `--cluster-domain` is not given.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What the tenant policy refuses, and how a platform team allows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A user variable takes its value from a Secret or a ConfigMap.
    #[error(
        "spec.pod.env[{index}] ({name}) reads a {kind} through valueFrom, which LlmJobs may not do \
         in this namespace; {}",
        how_to_allow(labels::ALLOW_ENV_REFS, "--allow-env-refs", "tenancy.allowEnvRefs")
    )]
    EnvRef {
        /// Index of the entry in `spec.pod.env`.
        index: usize,
        /// The variable's name.
        name: String,
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
    },
    /// The pod would run as a ServiceAccount other than the runner's.
    #[error(
        "spec.pod.serviceAccountName {name:?} is not the runner's ServiceAccount ({}), and LlmJobs \
         may not choose their identity in this namespace; {}",
        runner.as_deref().unwrap_or("none configured"),
        how_to_allow(labels::ALLOW_SERVICE_ACCOUNTS, "--allow-service-accounts", "tenancy.allowServiceAccounts")
    )]
    ServiceAccount {
        /// The ServiceAccount asked for.
        name: String,
        /// The runner's ServiceAccount, if one is configured.
        runner: Option<String>,
    },
    /// The API key would go in clear text to a host outside the cluster.
    #[error(
        "spec.openai.baseURL sends the API key over plain http to {host}, a host outside the \
         cluster (in-cluster hosts end in .svc or .svc.<cluster domain>); use https, or {}",
        how_to_allow(
            labels::ALLOW_INSECURE_BASE_URL,
            "--allow-insecure-base-url",
            "tenancy.allowInsecureBaseURL"
        )
    )]
    InsecureBaseUrl {
        /// The URL's host.
        host: String,
    },
}

/// The common tail of a refusal: how to allow it per namespace and cluster-wide.
fn how_to_allow(label: &str, flag: &str, value: &str) -> String {
    format!(
        "a cluster admin can allow it with the namespace label {label}=true, or cluster-wide with \
         the chart value {value}=true (operator flag {flag})"
    )
}

/// Whether the namespace label `label` is `true`.
fn allowed_by(namespace_labels: &BTreeMap<String, String>, label: &str) -> bool {
    namespace_labels.get(label).is_some_and(|v| v == "true")
}

/// Whether `host` (of a parsed URL) is inside the cluster: a Service name ending in `.svc` or
/// `.svc.<cluster domain>`, or a loopback address (the pod itself).
pub fn is_cluster_host(host: &url::Host<&str>, cluster_domain: &str) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost"
                || d.ends_with(".svc")
                || d.ends_with(&format!(".svc.{}", cluster_domain.trim_matches('.')))
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Checks `llmjob` against the tenant policy: `policy` cluster-wide, loosened by the labels of
/// the LlmJob's namespace. The first refusal, in spec order.
pub fn permitted(
    llmjob: &LlmJob,
    policy: &TenantPolicy,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let spec = &llmjob.spec;
    if let Some(base_url) = &spec.openai.base_url
        && !policy.allow_insecure_base_url
        && !allowed_by(namespace_labels, labels::ALLOW_INSECURE_BASE_URL)
        && let Ok(url) = url::Url::parse(base_url)
        && url.scheme() == "http"
        && let Some(host) = url.host()
        && !is_cluster_host(&host, &policy.cluster_domain)
    {
        return Err(Refusal::InsecureBaseUrl {
            host: host.to_string(),
        });
    }
    let Some(pod) = &spec.pod else {
        return Ok(());
    };
    if !policy.allow_env_refs && !allowed_by(namespace_labels, labels::ALLOW_ENV_REFS) {
        for (index, var) in pod.env.iter().enumerate() {
            let from = var.value_from.as_ref();
            let kind = if from.is_some_and(|f| f.secret_key_ref.is_some()) {
                "Secret"
            } else if from.is_some_and(|f| f.config_map_key_ref.is_some()) {
                "ConfigMap"
            } else {
                continue;
            };
            return Err(Refusal::EnvRef {
                index,
                name: var.name.clone(),
                kind,
            });
        }
    }
    if let Some(name) = &pod.service_account_name
        && policy.runner_service_account.as_ref() != Some(name)
        && !policy.allow_service_accounts
        && !allowed_by(namespace_labels, labels::ALLOW_SERVICE_ACCOUNTS)
    {
        return Err(Refusal::ServiceAccount {
            name: name.clone(),
            runner: policy.runner_service_account.clone(),
        });
    }
    Ok(())
}

/// Parses a timeout of the CRD's pattern `([0-9]+h)?([0-9]+m)?([0-9]+s)?` into seconds, between
/// 1s and 24h. humantime reads the duration; it accepts more than the pattern (days, spaces,
/// units in any order), so the shape is checked first.
pub fn parse_timeout(value: &str) -> Option<u64> {
    let mut last_unit = None;
    for part in value.split_inclusive(['h', 'm', 's']) {
        let digits = part.strip_suffix(['h', 'm', 's'])?;
        let unit = part.get(digits.len()..)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Each unit once, in the order h, m, s (which is alphabetical).
        if last_unit.is_some_and(|last| last >= unit) {
            return None;
        }
        last_unit = Some(unit);
    }
    last_unit?;
    let secs = humantime::parse_duration(value).ok()?.as_secs();
    (1..=MAX_TIMEOUT_SECS).contains(&secs).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::llmjob;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("90s"), Some(90));
        assert_eq!(parse_timeout("5m"), Some(300));
        assert_eq!(parse_timeout("1h30m"), Some(5400));
        assert_eq!(parse_timeout("1h2m3s"), Some(3723));
        assert_eq!(parse_timeout("24h"), Some(86400));
        for bad in [
            "",
            "0s",
            "25h",
            "5",
            "m",
            "1s1h",
            "1m1m",
            "1.5s",
            "-1s",
            "1d",
            "1h 30m",
            "1é",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn valid_llmjob() {
        let v = validate(&llmjob(
            r#"
metadata:
  name: a
  namespace: ns
  uid: u
  annotations: {llmjob.dev/traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, run: {timeout: 2m}}
"#,
        ))
        .unwrap();
        assert_eq!(v.timeout_secs, 120);
        assert_eq!(v.input, Input::Prompt("hi".to_owned()));
        assert_eq!(
            v.parent.map(|p| p.trace_id_hex()).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert!(v.parent_error.is_none());
    }

    #[test]
    fn an_invalid_traceparent_is_a_warning() {
        let v = validate(&llmjob(
            r#"
metadata: {name: a, namespace: ns, uid: u, annotations: {llmjob.dev/traceparent: nope}}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}
"#,
        ))
        .unwrap();
        assert!(v.parent.is_none());
        assert!(v.parent_error.is_some());
    }

    #[test]
    fn invalid_llmjobs() {
        let cases = [
            (
                "metadata: {namespace: ns, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::MissingMetadata("metadata.name"),
            ),
            (
                "metadata: {name: a, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::MissingMetadata("metadata.namespace"),
            ),
            (
                "metadata: {name: a, namespace: ns}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::MissingMetadata("metadata.uid"),
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::NoPrompt,
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {prompt: hi, messages: [{role: user, content: x}], openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::PromptAndMessages,
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {messages: [], openai: {apiKeySecretRef: {name: o}}}",
                ValidationError::NoMessages,
            ),
            (
                "metadata: {name: a, namespace: ns, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, run: {timeout: 2d}}",
                ValidationError::Timeout("2d".into()),
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(validate(&llmjob(yaml)), Err(want), "{yaml}");
        }
    }

    #[test]
    fn batches_that_slipped_past_admission_are_invalid() {
        let head = "metadata: {name: a, namespace: ns, uid: u}\nspec: {openai: {apiKeySecretRef: {name: o}}, ";
        let cases = [
            (
                "batch: {items: [{prompt: x}]}}",
                ValidationError::BatchOutput,
            ),
            (
                "prompt: hi, output: {url: \"s3://b/p\"}}",
                ValidationError::BatchOutput,
            ),
            (
                "prompt: hi, batch: {items: [{prompt: x}]}, output: {url: \"s3://b/p\"}}",
                ValidationError::BatchAndPrompt,
            ),
            (
                "batch: {items: []}, output: {url: \"s3://b/p\"}}",
                ValidationError::BatchItems,
            ),
            (
                "batch: {items: [{prompt: x}, {id: two}]}, output: {url: \"s3://b/p\"}}",
                ValidationError::BatchItem(2),
            ),
            (
                "batch: {items: [{prompt: x}]}, output: {}}",
                ValidationError::Output,
            ),
            (
                "batch: {items: [{prompt: x}], parallelism: 3, rateLimit: {tokensPerMinute: 2}}, output: {url: \"s3://b/p\"}}",
                ValidationError::RateLimit("tokensPerMinute"),
            ),
        ];
        for (rest, want) in cases {
            let yaml = format!("{head}{rest}");
            assert_eq!(validate(&llmjob(&yaml)), Err(want), "{yaml}");
        }
    }

    #[test]
    fn a_batch_takes_its_defaults() {
        let v = validate(&llmjob(
            "metadata: {name: a, namespace: ns, uid: u}\nspec: {openai: {apiKeySecretRef: {name: o}}, batch: {items: [{prompt: x}, {prompt: y}]}, output: {configMap: {name: r}}}",
        ))
        .unwrap();
        let Input::Batch(b) = v.input else {
            panic!("{:?}", v.input)
        };
        assert_eq!(
            (
                b.item_count,
                b.items_per_pod,
                b.parallelism,
                b.concurrency,
                b.max_failed_items
            ),
            (Some(2), 10, 1, 4, 0)
        );
        assert_eq!(b.completions(), Some(1));
        assert_eq!(b.output_url, "configmap://r");
        assert_eq!((b.requests_per_minute, b.credentials_secret), (None, None));
    }

    #[test]
    fn reserved_env_and_attributes_are_invalid() {
        let cases = [
            (
                "spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, pod: {env: [{name: OTEL_EXPORTER_OTLP_HEADERS, value: x}]}}",
                ValidationError::ReservedEnv("OTEL_EXPORTER_OTLP_HEADERS".into()),
            ),
            (
                "spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, pod: {env: [{name: TRACEPARENT2, value: x}]}}",
                ValidationError::ReservedEnv("TRACEPARENT2".into()),
            ),
            (
                "spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, telemetry: {resourceAttributes: {llmjob.name: x}}}",
                ValidationError::ReservedAttribute("llmjob.name".into()),
            ),
            (
                "spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, telemetry: {resourceAttributes: {service.version: x}}}",
                ValidationError::ReservedAttribute("service.version".into()),
            ),
            (
                "spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}, baseURL: 'http://'}}",
                ValidationError::BaseUrl("http://".into()),
            ),
        ];
        for (spec, want) in cases {
            let yaml = format!("metadata: {{name: a, namespace: ns, uid: u}}\n{spec}");
            assert_eq!(validate(&llmjob(&yaml)), Err(want), "{yaml}");
        }
        let long = "x".repeat(MAX_ATTRIBUTE_VALUE_LENGTH + 1);
        let yaml = format!(
            "metadata: {{name: a, namespace: ns, uid: u}}\nspec: {{prompt: hi, openai: {{apiKeySecretRef: {{name: o}}}}, telemetry: {{resourceAttributes: {{team: {long}}}}}}}"
        );
        assert_eq!(
            validate(&llmjob(&yaml)),
            Err(ValidationError::AttributeTooLong("team".into()))
        );
        let ok = "metadata: {name: a, namespace: ns, uid: u}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}, pod: {env: [{name: RUST_LOG, value: debug}]}, telemetry: {resourceAttributes: {team: ml}}}";
        assert!(validate(&llmjob(ok)).is_ok());
    }

    /// An LlmJob whose spec has `openai` and `pod` as given (YAML flow mappings).
    fn tenant(openai: &str, pod: &str) -> LlmJob {
        llmjob(&format!(
            "metadata: {{name: a, namespace: ns, uid: u}}\nspec: {{prompt: hi, openai: {openai}, pod: {pod}}}"
        ))
    }

    fn ns_labels(label: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(label.to_owned(), "true".to_owned())])
    }

    #[test]
    fn the_tenant_policy_refuses_and_each_refusal_can_be_loosened() {
        let key = "{apiKeySecretRef: {name: o}}";
        let none = BTreeMap::new();
        let strict = TenantPolicy::default();
        let cases = [
            (
                tenant(
                    key,
                    "{env: [{name: A, value: x}, {name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
                ),
                Refusal::EnvRef {
                    index: 1,
                    name: "TOKEN".into(),
                    kind: "Secret",
                },
                labels::ALLOW_ENV_REFS,
                TenantPolicy {
                    allow_env_refs: true,
                    ..TenantPolicy::default()
                },
            ),
            (
                tenant(
                    key,
                    "{env: [{name: C, valueFrom: {configMapKeyRef: {name: c, key: k}}}]}",
                ),
                Refusal::EnvRef {
                    index: 0,
                    name: "C".into(),
                    kind: "ConfigMap",
                },
                labels::ALLOW_ENV_REFS,
                TenantPolicy {
                    allow_env_refs: true,
                    ..TenantPolicy::default()
                },
            ),
            (
                tenant(key, "{serviceAccountName: deployer}"),
                Refusal::ServiceAccount {
                    name: "deployer".into(),
                    runner: None,
                },
                labels::ALLOW_SERVICE_ACCOUNTS,
                TenantPolicy {
                    allow_service_accounts: true,
                    ..TenantPolicy::default()
                },
            ),
            (
                tenant(
                    "{apiKeySecretRef: {name: o}, baseURL: 'http://evil.example:8080/v1'}",
                    "{}",
                ),
                Refusal::InsecureBaseUrl {
                    host: "evil.example".into(),
                },
                labels::ALLOW_INSECURE_BASE_URL,
                TenantPolicy {
                    allow_insecure_base_url: true,
                    ..TenantPolicy::default()
                },
            ),
            (
                tenant(
                    "{apiKeySecretRef: {name: o}, baseURL: 'http://10.0.0.7/v1'}",
                    "{}",
                ),
                Refusal::InsecureBaseUrl {
                    host: "10.0.0.7".into(),
                },
                labels::ALLOW_INSECURE_BASE_URL,
                TenantPolicy {
                    allow_insecure_base_url: true,
                    ..TenantPolicy::default()
                },
            ),
        ];
        for (job, want, label, loose) in cases {
            let got = permitted(&job, &strict, &none);
            assert_eq!(got, Err(want.clone()));
            let message = want.to_string();
            assert!(message.contains(&format!("{label}=true")), "{message}");
            assert!(
                message.contains("spec."),
                "the message names the field: {message}"
            );
            assert_eq!(
                permitted(&job, &strict, &ns_labels(label)),
                Ok(()),
                "{label}"
            );
            assert_eq!(permitted(&job, &loose, &none), Ok(()), "{loose:?}");
            // Another namespace label, or a label that is not `true`, allows nothing.
            let other = BTreeMap::from([(label.to_owned(), "yes".to_owned())]);
            assert!(permitted(&job, &strict, &other).is_err(), "{label}=yes");
        }
    }

    #[test]
    fn what_the_tenant_policy_lets_through() {
        let strict = TenantPolicy::default();
        let none = BTreeMap::new();
        for (openai, pod) in [
            (
                "{apiKeySecretRef: {name: o}}",
                "{env: [{name: A, value: x}, {name: P, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]}",
            ),
            (
                "{apiKeySecretRef: {name: o}, baseURL: 'https://api.example.com/v1'}",
                "{}",
            ),
            (
                "{apiKeySecretRef: {name: o}, baseURL: 'http://vllm.models.svc:8000/v1'}",
                "{}",
            ),
            (
                "{apiKeySecretRef: {name: o}, baseURL: 'http://VLLM.models.svc.cluster.local./v1'}",
                "{}",
            ),
            (
                "{apiKeySecretRef: {name: o}, baseURL: 'http://127.0.0.1:8080/v1'}",
                "{}",
            ),
            (
                "{apiKeySecretRef: {name: o}, baseURL: 'http://[::1]:8080/v1'}",
                "{}",
            ),
            (
                "{apiKeySecretRef: {name: o}, baseURL: 'http://localhost:8080/v1'}",
                "{}",
            ),
        ] {
            assert_eq!(
                permitted(&tenant(openai, pod), &strict, &none),
                Ok(()),
                "{openai} {pod}"
            );
        }
        for refused in [
            "http://svc.evil.example/v1",
            "http://models.svc.other.domain/v1",
            "http://127.evil.example/v1",
        ] {
            let job = tenant(
                &format!("{{apiKeySecretRef: {{name: o}}, baseURL: '{refused}'}}"),
                "{}",
            );
            assert!(permitted(&job, &strict, &none).is_err(), "{refused}");
        }
        let runner = TenantPolicy {
            runner_service_account: Some("llm-runner".into()),
            cluster_domain: "corp.internal".into(),
            ..TenantPolicy::default()
        };
        let job = tenant(
            "{apiKeySecretRef: {name: o}}",
            "{serviceAccountName: llm-runner}",
        );
        assert_eq!(permitted(&job, &runner, &none), Ok(()));
        let job = tenant(
            "{apiKeySecretRef: {name: o}, baseURL: 'http://m.ns.svc.corp.internal/v1'}",
            "{}",
        );
        assert_eq!(permitted(&job, &runner, &none), Ok(()));
    }
}
