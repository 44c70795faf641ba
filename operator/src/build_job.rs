//! Build step: the `batch/v1` Job that runs an LlmJob, from the LlmJob, the operator's defaults
//! and the launch span's trace context.
//!
//! Pure: no client, no clock, no randomness (the trace context is an input), so the same inputs
//! always give the same Job and every rule is unit-tested. It builds from what
//! [`validate`](crate::validate) accepted and never validates again. It must never produce a Job
//! for a finished LlmJob, never copy the API key (only a `secretKeyRef`), and it owns the order
//! of the pod's environment: `OTEL_RESOURCE_ATTRIBUTES` comes after the downward-API variables it
//! references with `$(VAR)`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use llmjob_crds::env::{self, DEFAULT_MAX_ATTEMPTS, exit};
use llmjob_crds::v1alpha1::{
    AuthStyle, KUEUE_QUEUE_LABEL, LlmJob, RequestParameters, ResponseFormatKind, wire_name,
};

use crate::config::JobDefaults;
use crate::contract::{
    CONTAINER_NAME, LAUNCH_TRACEPARENT_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL,
    POD_HASH_ANNOTATION, SUSPEND_ANNOTATION, is_queued, job_name, owner_reference, pod_hash, queue,
};
use crate::input;
use crate::traceparent::TraceParent;
use crate::validate::{Batch, Input, Items, Validated};

/// Where the runner writes its one-line JSON result: the container's termination-message file.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// UID and GID the runner runs as (the distroless `nonroot` user).
pub const RUNNER_UID: i64 = 65532;
/// Added to the run's deadline for the Job's `activeDeadlineSeconds`: pod scheduling, image pull,
/// runner start-up and the final telemetry flush happen outside the runner's own deadline.
pub const DEADLINE_MARGIN_SECS: u64 = 120;
/// The pod volume of the output's object-store credentials (`spec.output.credentialsSecretRef`).
pub const OUTPUT_CREDENTIALS_VOLUME: &str = "output-credentials";
/// Where the runner finds the output's credentials Secret, one file per key, read-only
/// (`LLMJOB_OUTPUT_CREDENTIALS_DIR`). Mounted, never `envFrom`: the runner reads only the files
/// named as a configuration key of the store, so no key of a tenant's Secret can set one of the
/// runner's variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OPENAI_BASE_URL`, `HTTPS_PROXY`, ...).
pub const OUTPUT_CREDENTIALS_MOUNT_PATH: &str = "/var/run/llmjob/output-credentials";
/// Pod retries of the Job when `spec.run.backoffLimit` is unset: the runner already retries the
/// API call, and a second pod would repeat a call that may have been billed.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 0;

/// The Job's `podFailurePolicy`: a pod disrupted by the cluster (eviction, preemption, a node
/// drained or lost: the `DisruptionTarget` condition) is replaced without counting against
/// `backoffLimit`, since the run did not fail; the runner's permanent exit codes (2
/// configuration, 3 refused or unusable response, 6 a batch shard over the run's failure budget)
/// fail the Job at once, since another pod would
/// fail the same way after calling the API again. Rules apply in order; it needs the pod's
/// `restartPolicy: Never`.
pub fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".to_owned(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".to_owned(),
                    status: Some("True".to_owned()),
                }]),
                on_exit_codes: None,
            },
            PodFailurePolicyRule {
                action: "FailJob".to_owned(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER_NAME.to_owned()),
                    operator: "In".to_owned(),
                    values: exit::PERMANENT_CODES.to_vec(),
                }),
                on_pod_conditions: None,
            },
        ],
    }
}

/// Why no Job could be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The LlmJob already finished: it never runs again.
    #[error("the LlmJob already finished ({0}); it never runs again")]
    Finished(&'static str),
    /// The messages could not be encoded as JSON.
    #[error("spec.messages could not be encoded as JSON: {0}")]
    Messages(#[source] serde_json::Error),
    /// The run's input does not fit its ConfigMap, or could not be encoded.
    #[error("{0}")]
    Input(#[source] input::InputError),
    /// A batch's items from a ConfigMap were not counted before the build.
    #[error("the items of spec.batch.itemsFrom were not counted")]
    ItemsNotCounted,
    /// A request parameter (tools, stop sequences) could not be encoded as JSON.
    #[error("spec.parameters.{field} could not be encoded as JSON: {source}")]
    Parameters {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Whether the Job is created suspended: queued for Kueue, or `spec.suspend: true`.
pub fn starts_suspended(llmjob: &LlmJob) -> bool {
    is_queued(llmjob) || llmjob.spec.suspend == Some(true)
}

/// Escapes a literal for an env var `value`: the kubelet expands `$(VAR)` and turns `$$` into
/// `$`, so every `$` is doubled to reach the runner unchanged.
pub fn escape_env_value(value: &str) -> String {
    value.replace('$', "$$")
}

/// Percent-encodes a value of `OTEL_RESOURCE_ATTRIBUTES` as the OpenTelemetry specification asks
/// (W3C Baggage octets: `,`, `=`, `;`, `\`, `"`, `%`, spaces, controls and non-ASCII are encoded).
/// `$` is encoded too, so the kubelet never expands a value.
pub fn encode_attribute_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let plain =
            matches!(b, 0x21 | 0x23 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C | 0x3E..=0x5B | 0x5D..=0x7E);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of `OTEL_RESOURCE_ATTRIBUTES`: the pod's Kubernetes identity (as `$(VAR)` references
/// to the downward-API variables, so they must come earlier in the env list), the Job, the
/// LlmJob, then the user's `spec.telemetry.resourceAttributes`, values percent-encoded.
pub fn resource_attributes(llmjob: &LlmJob, job_name: &str, uid: &str) -> String {
    let mut pairs: Vec<(String, String)> = vec![
        (
            "k8s.namespace.name".into(),
            format!("$({})", env::downward::POD_NAMESPACE),
        ),
        (
            "k8s.pod.name".into(),
            format!("$({})", env::downward::POD_NAME),
        ),
        (
            "k8s.pod.uid".into(),
            format!("$({})", env::downward::POD_UID),
        ),
        (
            "k8s.node.name".into(),
            format!("$({})", env::downward::NODE_NAME),
        ),
        ("k8s.job.name".into(), encode_attribute_value(job_name)),
        (
            "llmjob.name".into(),
            encode_attribute_value(&llmjob.meta().name.clone().unwrap_or_default()),
        ),
        ("llmjob.uid".into(), encode_attribute_value(uid)),
    ];
    if let Some(telemetry) = &llmjob.spec.telemetry {
        for (k, v) in &telemetry.resource_attributes {
            pairs.push((encode_attribute_value(k), encode_attribute_value(v)));
        }
    }
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn literal(name: &str, value: impl AsRef<str>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(escape_env_value(value.as_ref())),
        value_from: None,
    }
}

fn field_ref(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The variables of the request options of `spec.parameters` that are set, in the contract's
/// order: JSON for the stop sequences, tools, a named tool choice and a JSON-schema format.
fn option_vars(p: &RequestParameters) -> Result<Vec<EnvVar>, BuildError> {
    fn json(field: &'static str, value: &impl serde::Serialize) -> Result<String, BuildError> {
        serde_json::to_string(value).map_err(|source| BuildError::Parameters { field, source })
    }
    let mut vars = Vec::new();
    if let Some(stop) = &p.stop {
        vars.push(literal(env::LLMJOB_STOP.name, json("stop", stop)?));
    }
    if let Some(v) = p.frequency_penalty {
        vars.push(literal(env::LLMJOB_FREQUENCY_PENALTY.name, v.to_string()));
    }
    if let Some(v) = p.presence_penalty {
        vars.push(literal(env::LLMJOB_PRESENCE_PENALTY.name, v.to_string()));
    }
    if let Some(n) = p.choice_count {
        vars.push(literal(env::LLMJOB_N.name, n.to_string()));
    }
    if let Some(tools) = &p.tools {
        vars.push(literal(env::LLMJOB_TOOLS.name, json("tools", tools)?));
    }
    if let Some(choice) = &p.tool_choice {
        let value = match choice.as_str() {
            "none" | "auto" | "required" => choice.clone(),
            name => serde_json::json!({"type": "function", "function": {"name": name}}).to_string(),
        };
        vars.push(literal(env::LLMJOB_TOOL_CHOICE.name, value));
    }
    if let Some(format) = &p.response_format {
        let value = match &format.json_schema {
            Some(schema) if format.kind == ResponseFormatKind::JsonSchema => {
                let mut object = serde_json::json!({"name": schema.name, "schema": schema.schema});
                if let Some(d) = &schema.description {
                    object["description"] = serde_json::Value::from(d.clone());
                }
                if let Some(strict) = schema.strict {
                    object["strict"] = serde_json::Value::from(strict);
                }
                serde_json::json!({"type": "json_schema", "json_schema": object}).to_string()
            }
            _ => wire_name(&format.kind),
        };
        vars.push(literal(env::LLMJOB_RESPONSE_FORMAT.name, value));
    }
    if let Some(effort) = p.reasoning_effort {
        vars.push(literal(
            env::LLMJOB_REASONING_EFFORT.name,
            wire_name(&effort),
        ));
    }
    if let Some(tier) = p.service_tier {
        vars.push(literal(env::LLMJOB_SERVICE_TIER.name, wire_name(&tier)));
    }
    if let Some(user) = &p.user {
        vars.push(literal(env::LLMJOB_USER.name, user));
    }
    Ok(vars)
}

/// The runner container's environment, in order.
fn environment(
    llmjob: &LlmJob,
    valid: &Validated,
    defaults: &JobDefaults,
    launch: &TraceParent,
    job_name: &str,
) -> Result<Vec<EnvVar>, BuildError> {
    let spec = &llmjob.spec;
    let telemetry = spec.telemetry.clone().unwrap_or_default();
    let run = spec.run.clone().unwrap_or_default();
    let key = &spec.openai.api_key_secret_ref;

    let mut vars = vec![EnvVar {
        name: env::OPENAI_API_KEY.name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: key.name.clone(),
                key: key.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }];
    if let Some(url) = &spec.openai.base_url {
        vars.push(literal(env::OPENAI_BASE_URL.name, url));
    }
    let openai = &spec.openai;
    for (var, value) in [
        (&env::OPENAI_ORG_ID, openai.organization.as_deref()),
        (&env::OPENAI_PROJECT_ID, openai.project.as_deref()),
        (&env::OPENAI_API_VERSION, openai.api_version.as_deref()),
        (
            &env::LLMJOB_AUTH_STYLE,
            openai.auth_style.map(AuthStyle::as_str),
        ),
    ] {
        if let Some(value) = value {
            vars.push(literal(var.name, value));
        }
    }
    vars.push(literal(env::OPENAI_MODEL.name, &spec.model));
    match &valid.input {
        Input::Prompt(prompt) if input::fits_env(env::OPENAI_PROMPT.name, prompt) => {
            vars.push(literal(env::OPENAI_PROMPT.name, prompt))
        }
        // Too large for one environment string: the input ConfigMap holds it.
        Input::Prompt(_) => vars.push(literal(
            env::OPENAI_PROMPT_FILE.name,
            input_file(input::PROMPT_KEY),
        )),
        Input::Messages(messages) => {
            let json = input::messages_json(messages).map_err(BuildError::Messages)?;
            if input::fits_env(env::LLMJOB_MESSAGES.name, &json) {
                vars.push(literal(env::LLMJOB_MESSAGES.name, json));
            } else {
                vars.push(literal(
                    env::LLMJOB_MESSAGES_FILE.name,
                    input_file(input::MESSAGES_KEY),
                ));
            }
        }
        Input::Batch(batch) => vars.extend(batch_vars(batch)?),
    }
    if let Some(p) = &spec.parameters {
        if let Some(t) = p.temperature {
            vars.push(literal(env::LLMJOB_TEMPERATURE.name, t.to_string()));
        }
        if let Some(t) = p.top_p {
            vars.push(literal(env::LLMJOB_TOP_P.name, t.to_string()));
        }
        if let Some(m) = p.max_tokens {
            vars.push(literal(env::LLMJOB_MAX_TOKENS.name, m.to_string()));
        }
        if let Some(s) = p.seed {
            vars.push(literal(env::LLMJOB_SEED.name, s.to_string()));
        }
        if let Some(s) = p.stream {
            vars.push(literal(env::LLMJOB_STREAM.name, s.to_string()));
        }
        vars.extend(option_vars(p)?);
    }
    vars.push(literal(
        env::LLMJOB_TIMEOUT.name,
        format!("{}s", valid.timeout_secs),
    ));
    vars.push(literal(
        env::LLMJOB_MAX_ATTEMPTS.name,
        run.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).to_string(),
    ));
    vars.push(literal(
        env::LLMJOB_CONTENT_CAPTURE.name,
        telemetry.content_capture.unwrap_or_default().as_str(),
    ));
    vars.push(literal(
        env::LLMJOB_RESULT_PATH.name,
        TERMINATION_MESSAGE_PATH,
    ));
    vars.push(literal(
        env::OTEL_SERVICE_NAME.name,
        telemetry
            .service_name
            .as_deref()
            .unwrap_or(&defaults.service_name),
    ));
    vars.push(literal(
        env::DEPLOYMENT_ENVIRONMENT.name,
        telemetry
            .environment
            .as_deref()
            .unwrap_or(&defaults.environment),
    ));
    vars.push(literal(
        env::OTEL_EXPORTER_OTLP_ENDPOINT.name,
        telemetry
            .endpoint
            .as_deref()
            .unwrap_or(&defaults.otlp_endpoint),
    ));
    vars.push(literal(
        env::OTEL_EXPORTER_OTLP_PROTOCOL.name,
        telemetry
            .protocol
            .unwrap_or(defaults.otlp_protocol)
            .as_str(),
    ));
    vars.push(literal(env::TRACEPARENT.name, launch.to_string()));
    vars.push(field_ref(env::downward::POD_NAME, "metadata.name"));
    vars.push(field_ref(
        env::downward::POD_NAMESPACE,
        "metadata.namespace",
    ));
    vars.push(field_ref(env::downward::POD_UID, "metadata.uid"));
    vars.push(field_ref(env::downward::NODE_NAME, "spec.nodeName"));
    // Not escaped: the `$(VAR)` references are meant for the kubelet, and every literal part
    // is percent-encoded (no `$` left).
    vars.push(EnvVar {
        name: env::OTEL_RESOURCE_ATTRIBUTES.name.to_owned(),
        value: Some(resource_attributes(llmjob, job_name, &valid.uid)),
        value_from: None,
    });
    // The user's variables, verbatim (CEL and the validate step reject the names the operator
    // sets; the tenant policy, references to Secrets and ConfigMaps unless allowed).
    if let Some(pod) = &spec.pod {
        vars.extend(pod.env.iter().cloned());
    }
    Ok(vars)
}

/// The input file the runner reads, under the input volume.
fn input_file(key: &str) -> String {
    format!("{}/{key}", input::MOUNT_PATH)
}

/// The variables of a batch: the items file, the sharding, the pod's share of the rate limit
/// (the run's limit divided by the pods running at once, rounded down), the failure budget and
/// the output.
fn batch_vars(batch: &Batch) -> Result<Vec<EnvVar>, BuildError> {
    let completions = batch.completions().ok_or(BuildError::ItemsNotCounted)?;
    let pods_at_once = u64::from(batch.parallelism).min(completions).max(1);
    let mut vars = vec![
        literal(env::LLMJOB_ITEMS_FILE.name, input_file(input::ITEMS_KEY)),
        literal(
            env::LLMJOB_ITEMS_PER_POD.name,
            batch.items_per_pod.to_string(),
        ),
        literal(env::LLMJOB_CONCURRENCY.name, batch.concurrency.to_string()),
    ];
    for (var, limit) in [
        (&env::LLMJOB_REQUESTS_PER_MINUTE, batch.requests_per_minute),
        (&env::LLMJOB_TOKENS_PER_MINUTE, batch.tokens_per_minute),
    ] {
        if let Some(limit) = limit {
            // Admission requires limit >= parallelism, so a share is at least 1.
            vars.push(literal(var.name, (limit / pods_at_once).max(1).to_string()));
        }
    }
    vars.push(literal(
        env::LLMJOB_MAX_FAILED_ITEMS.name,
        batch.max_failed_items.to_string(),
    ));
    vars.push(literal(env::LLMJOB_OUTPUT_URL.name, &batch.output_url));
    if batch.credentials_secret.is_some() {
        vars.push(literal(
            env::LLMJOB_OUTPUT_CREDENTIALS_DIR.name,
            OUTPUT_CREDENTIALS_MOUNT_PATH,
        ));
    }
    Ok(vars)
}

/// Seconds a batch may take: each wave of pods (`parallelism` at once) runs its items
/// `concurrency` at a time, each within the per-item deadline, and no faster than its share of
/// the request limit allows.
fn batch_deadline_secs(batch: &Batch, item_timeout_secs: u64) -> u64 {
    let completions = batch.completions().unwrap_or(1).max(1);
    let at_once = u64::from(batch.parallelism).clamp(1, completions);
    let waves = completions.div_ceil(at_once);
    let per_pod_items = u64::from(batch.items_per_pod);
    let mut per_pod =
        per_pod_items.div_ceil(u64::from(batch.concurrency.max(1))) * item_timeout_secs;
    if let Some(rpm) = batch.requests_per_minute {
        let share = (rpm / at_once).max(1);
        per_pod += (per_pod_items * 60).div_ceil(share);
    }
    waves.saturating_mul(per_pod)
}

/// The pod volume of the run's input, when it has one: the operator's input ConfigMap (inline
/// items, a large prompt or messages) or the user's ConfigMap key of items, as [`input::ITEMS_KEY`].
fn input_volume(valid: &Validated) -> Result<Option<Volume>, BuildError> {
    let source = match &valid.input {
        Input::Batch(batch) => match &batch.items {
            Items::ConfigMap { name, key } => Some((name.clone(), key.clone())),
            Items::Inline(_) => None,
        },
        _ => None,
    };
    let (name, key) = match source {
        Some(s) => s,
        None => match input::contents(valid).map_err(BuildError::Input)? {
            Some((key, _)) => (input::config_map_name(&valid.name), key.to_owned()),
            None => return Ok(None),
        },
    };
    let path = match &valid.input {
        Input::Batch(_) => input::ITEMS_KEY.to_owned(),
        _ => key.clone(),
    };
    Ok(Some(Volume {
        name: input::VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.clone(),
            items: Some(vec![KeyToPath {
                key,
                path,
                mode: None,
            }]),
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }))
}

/// Builds the Job that runs `llmjob`, which [`validate`](crate::validate::validate) accepted as
/// `valid`. `launch` is the trace context of the operator's launch span; the run's trace becomes
/// its child through `TRACEPARENT`.
pub fn build_job(
    llmjob: &LlmJob,
    valid: &Validated,
    defaults: &JobDefaults,
    launch: &TraceParent,
) -> Result<Job, BuildError> {
    if let Some(phase) = llmjob.status.as_ref().and_then(|s| s.phase)
        && phase.is_finished()
    {
        return Err(BuildError::Finished(phase.as_str()));
    }
    let name = job_name(&valid.name);
    let owner = owner_reference(&valid.name, &valid.uid);
    let pod = llmjob.spec.pod.clone().unwrap_or_default();
    let run = llmjob.spec.run.clone().unwrap_or_default();

    let mut job_labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (NAME_LABEL.to_owned(), name.clone()),
    ]);
    if let Some(queue) = queue(llmjob) {
        job_labels.insert(KUEUE_QUEUE_LABEL.to_owned(), queue.to_owned());
    }
    let mut pod_labels = pod.labels.clone();
    pod_labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    pod_labels.insert(NAME_LABEL.to_owned(), name.clone());

    let env = environment(llmjob, valid, defaults, launch, &name)?;
    let batch = match &valid.input {
        Input::Batch(b) => Some(b.as_ref()),
        _ => None,
    };
    let input_volume = input_volume(valid)?;
    let mut volume_mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity("16Mi".to_owned())),
        }),
        ..Volume::default()
    }];
    if let Some(volume) = input_volume {
        volume_mounts.push(VolumeMount {
            name: input::VOLUME.to_owned(),
            mount_path: input::MOUNT_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(volume);
    }
    // The object store's credentials: the Secret mounted read-only, one file per key, where
    // `LLMJOB_OUTPUT_CREDENTIALS_DIR` points (the operator never reads it). Its keys never
    // become variables: the runner reads only the store's configuration keys from the files.
    if let Some(secret) = batch.and_then(|b| b.credentials_secret.clone()) {
        volume_mounts.push(VolumeMount {
            name: OUTPUT_CREDENTIALS_VOLUME.to_owned(),
            mount_path: OUTPUT_CREDENTIALS_MOUNT_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: OUTPUT_CREDENTIALS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(defaults.runner_image.clone()),
        image_pull_policy: Some(defaults.pull_policy.as_str().to_owned()),
        env: Some(env),
        resources: pod.resources.clone(),
        termination_message_path: Some(TERMINATION_MESSAGE_PATH.to_owned()),
        termination_message_policy: Some("File".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUNNER_UID),
            run_as_group: Some(RUNNER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let service_account = pod
        .service_account_name
        .clone()
        .or_else(|| defaults.service_account.clone());
    let pod_spec = PodSpec {
        // `podFailurePolicy` requires `Never`.
        restart_policy: Some("Never".to_owned()),
        // On SIGTERM the runner cancels its call, writes the result and flushes telemetry
        // within this bound (docs/job-runner.md, exit code 5).
        termination_grace_period_seconds: Some(exit::TERMINATION_GRACE_SECS),
        containers: vec![container],
        service_account_name: service_account.clone(),
        // No token in the pod unless the LlmJob or the operator's configuration names an
        // identity: the runner never talks to the API server.
        automount_service_account_token: service_account.is_none().then_some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNNER_UID),
            run_as_group: Some(RUNNER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
        tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
        affinity: pod.affinity.clone(),
        image_pull_secrets: (!pod.image_pull_secrets.is_empty())
            .then(|| pod.image_pull_secrets.clone()),
        priority_class_name: pod.priority_class_name.clone(),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    let deadline = match batch {
        Some(b) => batch_deadline_secs(b, valid.timeout_secs),
        None => valid.timeout_secs,
    }
    .saturating_add(DEADLINE_MARGIN_SECS);
    // A batch is an Indexed Job: pod `i` runs shard `i` (`JOB_COMPLETION_INDEX`).
    let (completion_mode, completions, parallelism) = match batch {
        Some(b) => {
            let completions = b.completions().ok_or(BuildError::ItemsNotCounted)?;
            let completions = i32::try_from(completions).unwrap_or(i32::MAX);
            let parallelism = i32::try_from(b.parallelism)
                .unwrap_or(i32::MAX)
                .min(completions);
            (Some("Indexed".to_owned()), completions, parallelism)
        }
        None => (None, 1, 1),
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(valid.namespace.clone()),
            labels: Some(job_labels),
            annotations: Some(BTreeMap::from([
                (LAUNCH_TRACEPARENT_ANNOTATION.to_owned(), launch.to_string()),
                (
                    SUSPEND_ANNOTATION.to_owned(),
                    starts_suspended(llmjob).to_string(),
                ),
                (POD_HASH_ANNOTATION.to_owned(), pod_hash(llmjob)),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(run.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT)),
            active_deadline_seconds: Some(i64::try_from(deadline).unwrap_or(i64::MAX)),
            // Never at creation: a Job the TTL controller may delete could take the run's result
            // with it while the operator is down. The reconcile sets `spec.run.
            // ttlSecondsAfterFinished` (a mutable field) once the outcome is in the status.
            ttl_seconds_after_finished: None,
            suspend: Some(starts_suspended(llmjob)),
            // A retry starts only once the previous pod is gone: never two runs at once.
            // (also the only value `podFailurePolicy` allows).
            pod_replacement_policy: Some("Failed".to_owned()),
            pod_failure_policy: Some(pod_failure_policy()),
            completion_mode,
            completions: Some(completions),
            parallelism: Some(parallelism),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod.annotations.is_empty()).then(|| pod.annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::llmjob;

    fn tp() -> TraceParent {
        TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The Job of a valid LlmJob.
    fn build_from(lj: &LlmJob) -> Result<Job, BuildError> {
        let valid = crate::validate::validate(lj).unwrap_or_else(|e| panic!("{e}"));
        build_job(lj, &valid, &JobDefaults::default(), &tp())
    }

    fn build(yaml: &str) -> Job {
        build_from(&llmjob(yaml)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn env_of(job: &Job) -> Vec<EnvVar> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    }

    fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    fn position(env: &[EnvVar], name: &str) -> usize {
        env.iter()
            .position(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    const PROMPT: &str = r#"
metadata: {name: haiku, namespace: team-a, uid: 6f1c5b2e-0000-4000-8000-000000000001, generation: 1}
spec:
  model: gpt-4o-mini
  prompt: "Write a haiku about $(HOME) and $$5"
  openai:
    apiKeySecretRef: {name: openai, key: token}
    baseURL: http://replay.default:8080/v1
  parameters: {temperature: 0.5, maxTokens: 64, stream: true}
  telemetry:
    serviceName: haiku-svc
    resourceAttributes: {team: "a,b=c", cost.center: "42 %"}
    contentCapture: hash
  run: {timeout: 1m30s, maxAttempts: 2, backoffLimit: 1, ttlSecondsAfterFinished: 600}
  pod:
    env: [{name: EXTRA, value: "$(LLMJOB_POD_NAME)"}]
    labels: {app.kubernetes.io/managed-by: someone-else, team: a}
    annotations: {note: x}
    nodeSelector: {disk: ssd}
"#;

    #[test]
    fn job_from_a_prompt() {
        let job = build(PROMPT);
        assert_eq!(job.metadata.name.as_deref(), Some("haiku"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "LlmJob");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(owner.uid, "6f1c5b2e-0000-4000-8000-000000000001");
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[NAME_LABEL], "haiku");
        assert!(!labels.contains_key(KUEUE_QUEUE_LABEL));

        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        assert_eq!(spec.active_deadline_seconds, Some(90 + 120));
        assert_eq!(
            spec.ttl_seconds_after_finished, None,
            "the TTL is set once the outcome is recorded, never at creation"
        );
        assert_eq!(spec.suspend, Some(false));
        let template = &spec.template;
        let pod_labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(
            pod_labels[MANAGED_BY_LABEL], MANAGED_BY,
            "the operator's labels win"
        );
        assert_eq!(pod_labels["team"], "a");
        let pod = template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.termination_grace_period_seconds, Some(15));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(crate::config::DEFAULT_RUNNER_IMAGE)
        );
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn env_contract_and_order() {
        let env = env_of(&build(PROMPT));
        let key = env.iter().find(|e| e.name == "OPENAI_API_KEY").unwrap();
        assert!(key.value.is_none(), "the API key is never copied");
        let sel = key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("openai", "token"));

        assert_eq!(
            value(&env, "OPENAI_BASE_URL"),
            Some("http://replay.default:8080/v1")
        );
        assert_eq!(value(&env, "OPENAI_MODEL"), Some("gpt-4o-mini"));
        assert_eq!(
            value(&env, "OPENAI_PROMPT"),
            Some("Write a haiku about $$(HOME) and $$$$5"),
            "a `$` in a literal is escaped for the kubelet"
        );
        assert!(value(&env, "LLMJOB_MESSAGES").is_none());
        assert_eq!(value(&env, "LLMJOB_TEMPERATURE"), Some("0.5"));
        assert_eq!(value(&env, "LLMJOB_MAX_TOKENS"), Some("64"));
        assert_eq!(value(&env, "LLMJOB_STREAM"), Some("true"));
        assert!(value(&env, "LLMJOB_TOP_P").is_none());
        assert_eq!(value(&env, "LLMJOB_TIMEOUT"), Some("90s"));
        assert_eq!(value(&env, "LLMJOB_MAX_ATTEMPTS"), Some("2"));
        assert_eq!(value(&env, "LLMJOB_CONTENT_CAPTURE"), Some("hash"));
        assert_eq!(
            value(&env, "LLMJOB_RESULT_PATH"),
            Some("/dev/termination-log")
        );
        assert_eq!(value(&env, "OTEL_SERVICE_NAME"), Some("haiku-svc"));
        assert_eq!(value(&env, "DEPLOYMENT_ENVIRONMENT"), Some("development"));
        assert_eq!(
            value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://collector:4317")
        );
        assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"), Some("grpc"));
        assert_eq!(
            value(&env, "TRACEPARENT"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(
            value(&env, "OTEL_RESOURCE_ATTRIBUTES"),
            Some(
                "k8s.namespace.name=$(LLMJOB_POD_NAMESPACE),k8s.pod.name=$(LLMJOB_POD_NAME),\
                 k8s.pod.uid=$(LLMJOB_POD_UID),k8s.node.name=$(LLMJOB_NODE_NAME),\
                 k8s.job.name=haiku,llmjob.name=haiku,\
                 llmjob.uid=6f1c5b2e-0000-4000-8000-000000000001,\
                 cost.center=42%20%25,team=a%2Cb%3Dc"
            )
        );
        let attrs = position(&env, "OTEL_RESOURCE_ATTRIBUTES");
        for downward in [
            "LLMJOB_POD_NAME",
            "LLMJOB_POD_NAMESPACE",
            "LLMJOB_POD_UID",
            "LLMJOB_NODE_NAME",
        ] {
            assert!(
                position(&env, downward) < attrs,
                "{downward} must come before OTEL_RESOURCE_ATTRIBUTES"
            );
        }
        let node = env.iter().find(|e| e.name == "LLMJOB_NODE_NAME").unwrap();
        assert_eq!(
            node.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
        let last = env.last().unwrap();
        assert_eq!(
            (last.name.as_str(), last.value.as_deref()),
            ("EXTRA", Some("$(LLMJOB_POD_NAME)")),
            "user env comes last, verbatim"
        );
        // Every name appears once.
        let mut names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
    }

    #[test]
    fn messages_and_defaults() {
        let job = build(
            r#"
metadata: {name: chat, namespace: default, uid: u-1}
spec:
  messages:
    - {role: system, content: be brief}
    - {role: user, content: hi, name: bob}
  openai: {apiKeySecretRef: {name: openai}}
  telemetry: {endpoint: "otel:4318", protocol: http/protobuf, environment: prod}
"#,
        );
        let env = env_of(&job);
        assert_eq!(
            value(&env, "LLMJOB_MESSAGES"),
            Some(
                r#"[{"role":"system","content":"be brief"},{"role":"user","content":"hi","name":"bob"}]"#
            )
        );
        assert!(value(&env, "OPENAI_PROMPT").is_none());
        assert!(value(&env, "OPENAI_BASE_URL").is_none());
        assert_eq!(value(&env, "OPENAI_MODEL"), Some("gpt-4o-mini"));
        assert_eq!(value(&env, "LLMJOB_TIMEOUT"), Some("300s"));
        assert_eq!(value(&env, "LLMJOB_MAX_ATTEMPTS"), Some("4"));
        assert_eq!(value(&env, "LLMJOB_CONTENT_CAPTURE"), Some("none"));
        assert_eq!(value(&env, "OTEL_SERVICE_NAME"), Some("llm-job"));
        assert_eq!(value(&env, "DEPLOYMENT_ENVIRONMENT"), Some("prod"));
        assert_eq!(
            value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("otel:4318")
        );
        assert_eq!(
            value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"),
            Some("http/protobuf")
        );
        let key = env.iter().find(|e| e.name == "OPENAI_API_KEY").unwrap();
        let sel = key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(sel.key, "api-key");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(300 + 120));
        assert_eq!(spec.ttl_seconds_after_finished, None);
    }

    #[test]
    fn kueue_queued_jobs_start_suspended_with_the_label() {
        let job = build(
            r#"
metadata: {name: q, namespace: default, uid: u-2, labels: {kueue.x-k8s.io/queue-name: user-queue}}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: openai}}}
"#,
        );
        assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[KUEUE_QUEUE_LABEL],
            "user-queue"
        );
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[SUSPEND_ANNOTATION],
            "true",
            "what the operator asked for, so that Kueue's later changes are told apart"
        );
    }

    #[test]
    fn suspended_llmjob_starts_suspended() {
        let job = build(
            r#"
metadata: {name: s, namespace: default, uid: u-3}
spec: {prompt: hi, suspend: true, openai: {apiKeySecretRef: {name: openai}}}
"#,
        );
        assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
    }

    #[test]
    fn service_account_keeps_the_token_default() {
        let job = build(
            r#"
metadata: {name: sa, namespace: default, uid: u-4}
spec:
  prompt: hi
  openai: {apiKeySecretRef: {name: openai}}
  pod:
    serviceAccountName: runner
    imagePullSecrets: [{name: regcred}]
    priorityClassName: low
    tolerations: [{key: gpu, operator: Exists}]
    resources: {limits: {memory: 64Mi}}
"#,
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("runner"));
        assert_eq!(pod.automount_service_account_token, None);
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(pod.priority_class_name.as_deref(), Some("low"));
        assert_eq!(pod.tolerations.unwrap().len(), 1);
        assert!(pod.containers[0].resources.is_some());
    }

    #[test]
    fn the_runner_service_account_is_the_default_identity() {
        let lj = llmjob(
            "metadata: {name: r, namespace: default, uid: u-6}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: openai}}}",
        );
        let valid = crate::validate::validate(&lj).unwrap_or_else(|e| panic!("{e}"));
        let defaults = JobDefaults {
            service_account: Some("llm-runner".to_owned()),
            ..JobDefaults::default()
        };
        let job = build_job(&lj, &valid, &defaults, &tp()).unwrap_or_else(|e| panic!("{e}"));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("llm-runner"));
        assert_eq!(pod.automount_service_account_token, None);
    }

    #[test]
    fn a_finished_llmjob_never_yields_a_job() {
        for phase in ["Succeeded", "Failed"] {
            let lj = llmjob(&format!(
                r#"
metadata: {{name: done, namespace: default, uid: u-5}}
spec: {{prompt: hi, openai: {{apiKeySecretRef: {{name: openai}}}}}}
status: {{phase: {phase}}}
"#
            ));
            assert!(
                matches!(build_from(&lj), Err(BuildError::Finished(_))),
                "{phase}"
            );
        }
    }

    #[test]
    fn request_options_and_connection_settings_become_the_runners_variables() {
        let env = env_of(&build(
            r#"
metadata: {name: opts, namespace: default, uid: u-6}
spec:
  prompt: weather?
  openai:
    apiKeySecretRef: {name: openai}
    baseURL: https://res.openai.azure.com/openai/deployments/gpt-4o
    organization: org-1
    project: proj_2
    apiVersion: 2024-10-21
    authStyle: api-key
  parameters:
    stop: [END, "$(HOME)"]
    frequencyPenalty: 0.5
    presencePenalty: -1
    choiceCount: 3
    tools:
    - type: function
      function:
        name: get_weather
        description: The weather
        parameters: {type: object, properties: {location: {type: string}}, required: [location]}
        strict: true
    toolChoice: get_weather
    responseFormat:
      type: json_schema
      jsonSchema: {name: answer, schema: {type: object}, strict: true}
    reasoningEffort: low
    serviceTier: flex
    user: user-42
"#,
        ));
        let json = |name: &str| -> serde_json::Value {
            serde_json::from_str(value(&env, name).unwrap_or_else(|| panic!("{name} missing")))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert_eq!(value(&env, "OPENAI_ORG_ID"), Some("org-1"));
        assert_eq!(value(&env, "OPENAI_PROJECT_ID"), Some("proj_2"));
        assert_eq!(value(&env, "OPENAI_API_VERSION"), Some("2024-10-21"));
        assert_eq!(value(&env, "LLMJOB_AUTH_STYLE"), Some("api-key"));
        assert_eq!(
            json("LLMJOB_STOP"),
            serde_json::json!(["END", "$$(HOME)"]),
            "$ is escaped for the kubelet"
        );
        assert_eq!(value(&env, "LLMJOB_FREQUENCY_PENALTY"), Some("0.5"));
        assert_eq!(value(&env, "LLMJOB_PRESENCE_PENALTY"), Some("-1"));
        assert_eq!(value(&env, "LLMJOB_N"), Some("3"));
        assert_eq!(
            json("LLMJOB_TOOLS"),
            serde_json::json!([{"type": "function", "function": {
                "name": "get_weather", "description": "The weather", "strict": true,
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"]}}}])
        );
        assert_eq!(
            json("LLMJOB_TOOL_CHOICE"),
            serde_json::json!({"type": "function", "function": {"name": "get_weather"}})
        );
        assert_eq!(
            json("LLMJOB_RESPONSE_FORMAT"),
            serde_json::json!({"type": "json_schema", "json_schema":
                {"name": "answer", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(value(&env, "LLMJOB_REASONING_EFFORT"), Some("low"));
        assert_eq!(value(&env, "LLMJOB_SERVICE_TIER"), Some("flex"));
        assert_eq!(value(&env, "LLMJOB_USER"), Some("user-42"));

        let env = env_of(&build(
            r#"
metadata: {name: opts2, namespace: default, uid: u-7}
spec:
  prompt: hi
  openai: {apiKeySecretRef: {name: openai}}
  parameters:
    tools: [{type: function, function: {name: f}}]
    toolChoice: required
    responseFormat: {type: json_object}
"#,
        ));
        assert_eq!(value(&env, "LLMJOB_TOOL_CHOICE"), Some("required"));
        assert_eq!(value(&env, "LLMJOB_RESPONSE_FORMAT"), Some("json_object"));
        for unset in [
            "OPENAI_ORG_ID",
            "OPENAI_API_VERSION",
            "LLMJOB_AUTH_STYLE",
            "LLMJOB_STOP",
            "LLMJOB_N",
            "LLMJOB_USER",
            "LLMJOB_SERVICE_TIER",
        ] {
            assert!(env.iter().all(|e| e.name != unset), "{unset} set");
        }
    }

    #[test]
    fn disruptions_are_ignored_and_permanent_exit_codes_fail_the_job_at_once() {
        let spec = build(PROMPT).spec.unwrap();
        assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
        let rules = spec.pod_failure_policy.unwrap().rules;
        assert_eq!(rules.len(), 2);
        let (ignore, fail) = (&rules[0], &rules[1]);
        assert_eq!(ignore.action, "Ignore", "disruptions come first");
        let conditions = ignore.on_pod_conditions.as_ref().unwrap();
        assert_eq!(conditions[0].type_, "DisruptionTarget");
        assert_eq!(conditions[0].status.as_deref(), Some("True"));
        assert_eq!(fail.action, "FailJob");
        let codes = fail.on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.container_name.as_deref(), Some("runner"));
        assert_eq!(codes.operator, "In");
        assert_eq!(
            codes.values,
            vec![2, 3, 6],
            "6: a batch shard over the failure budget"
        );
        assert!(
            !codes.values.contains(&exit::CANCELLED),
            "a cancelled run is not a permanent failure"
        );
    }

    #[test]
    fn attribute_encoding() {
        assert_eq!(encode_attribute_value("plain.value-1_x"), "plain.value-1_x");
        assert_eq!(
            encode_attribute_value("a b,c=d;e\"f\\g%"),
            "a%20b%2Cc%3Dd%3Be%22f%5Cg%25"
        );
        assert_eq!(encode_attribute_value("$(X)"), "%24(X)");
        assert_eq!(encode_attribute_value("é"), "%C3%A9");
    }

    const BATCH: &str = r#"
metadata: {name: many, namespace: team-a, uid: u-9}
spec:
  openai: {apiKeySecretRef: {name: openai}}
  batch:
    items: [{prompt: a}, {prompt: b}, {prompt: c}, {prompt: d}, {prompt: e}, {prompt: f}, {prompt: g}]
    itemsPerPod: 3
    parallelism: 2
    concurrency: 8
    rateLimit: {requestsPerMinute: 61, tokensPerMinute: 10001}
    maxFailedItems: 2
  output: {url: "s3://results/run-1", credentialsSecretRef: {name: s3-creds}}
  run: {timeout: 1m}
"#;

    fn pod_of(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn a_batch_is_an_indexed_job_with_the_shard_variables() {
        let job = build(BATCH);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(spec.completions, Some(3), "ceil(7 / 3)");
        assert_eq!(spec.parallelism, Some(2));
        assert_eq!(spec.pod_failure_policy, Some(pod_failure_policy()));
        let env = env_of(&job);
        assert_eq!(
            value(&env, "LLMJOB_ITEMS_FILE"),
            Some("/var/run/llmjob/input/items.jsonl")
        );
        assert_eq!(value(&env, "LLMJOB_ITEMS_PER_POD"), Some("3"));
        assert_eq!(value(&env, "LLMJOB_CONCURRENCY"), Some("8"));
        assert_eq!(
            value(&env, "LLMJOB_REQUESTS_PER_MINUTE"),
            Some("30"),
            "61 / 2 pods"
        );
        assert_eq!(value(&env, "LLMJOB_TOKENS_PER_MINUTE"), Some("5000"));
        assert_eq!(value(&env, "LLMJOB_MAX_FAILED_ITEMS"), Some("2"));
        assert_eq!(value(&env, "LLMJOB_OUTPUT_URL"), Some("s3://results/run-1"));
        assert_eq!(value(&env, "LLMJOB_TIMEOUT"), Some("60s"), "per item");
        for absent in ["OPENAI_PROMPT", "LLMJOB_MESSAGES", "JOB_COMPLETION_INDEX"] {
            assert!(env.iter().all(|e| e.name != absent), "{absent}");
        }
        let container = &pod_of(&job).containers[0];
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "input")
            .unwrap();
        assert_eq!(mount.mount_path, "/var/run/llmjob/input");
        assert_eq!(mount.read_only, Some(true));
        let volume = pod_of(&job)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "input")
            .unwrap();
        let cm = volume.config_map.as_ref().unwrap();
        assert_eq!(cm.name, "many-input");
        assert_eq!(cm.items.as_ref().unwrap()[0].key, "items.jsonl");
        // 2 waves of pods, each 3 items 8 at a time (60 s) and 3 requests at 30 a minute (6 s).
        assert_eq!(
            spec.active_deadline_seconds,
            Some(2 * (60 + 6) + DEADLINE_MARGIN_SECS as i64)
        );
    }

    #[test]
    fn the_output_credentials_are_mounted_never_variables() {
        let job = build(BATCH);
        let pod = pod_of(&job);
        let container = &pod.containers[0];
        assert!(
            container.env_from.is_none(),
            "no key of the Secret may become a variable"
        );
        assert_eq!(
            value(&env_of(&job), "LLMJOB_OUTPUT_CREDENTIALS_DIR"),
            Some("/var/run/llmjob/output-credentials")
        );
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "output-credentials")
            .unwrap();
        assert_eq!(mount.mount_path, "/var/run/llmjob/output-credentials");
        assert_eq!(mount.read_only, Some(true));
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "output-credentials")
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("s3-creds"));
        assert_eq!(secret.optional, Some(false));
        assert_eq!(secret.items, None, "every key, each a file");

        // Without a Secret (a ConfigMap output, or a store configured another way): neither.
        let job = build(&BATCH.replace(", credentialsSecretRef: {name: s3-creds}", ""));
        let pod = pod_of(&job);
        assert!(value(&env_of(&job), "LLMJOB_OUTPUT_CREDENTIALS_DIR").is_none());
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.name != "output-credentials")
        );
        assert!(pod.containers[0].env_from.is_none());
    }

    #[test]
    fn a_small_batch_runs_no_more_pods_than_shards_and_splits_the_limit_between_them() {
        let yaml = BATCH
            .replace("parallelism: 2", "parallelism: 10")
            .replace("requestsPerMinute: 61", "requestsPerMinute: 100")
            .replace("tokensPerMinute: 10001", "tokensPerMinute: 100");
        let job = build(&yaml);
        assert_eq!(job.spec.as_ref().unwrap().parallelism, Some(3));
        let env = env_of(&job);
        assert_eq!(value(&env, "LLMJOB_REQUESTS_PER_MINUTE"), Some("33"));
        assert_eq!(value(&env, "LLMJOB_TOKENS_PER_MINUTE"), Some("33"));
    }

    #[test]
    fn items_from_a_config_map_mount_its_key_once_counted() {
        let lj = llmjob(
            r#"
metadata: {name: many, namespace: team-a, uid: u-9}
spec:
  openai: {apiKeySecretRef: {name: openai}}
  batch: {itemsFrom: {configMapKeyRef: {name: prompts, key: all.jsonl}}}
  output: {configMap: {name: results}}
"#,
        );
        assert!(
            matches!(build_from(&lj), Err(BuildError::ItemsNotCounted)),
            "completions need the count"
        );
        let mut valid = crate::validate::validate(&lj).unwrap();
        if let Input::Batch(b) = &mut valid.input {
            b.item_count = Some(25);
        }
        let job = build_job(&lj, &valid, &JobDefaults::default(), &tp()).unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(
            spec.completions,
            Some(3),
            "ceil(25 / 10) with the default itemsPerPod"
        );
        assert_eq!(spec.parallelism, Some(1));
        let env = env_of(&job);
        assert_eq!(
            value(&env, "LLMJOB_OUTPUT_URL"),
            Some("configmap://results")
        );
        assert_eq!(value(&env, "LLMJOB_CONCURRENCY"), Some("4"));
        assert!(env.iter().all(|e| e.name != "LLMJOB_REQUESTS_PER_MINUTE"));
        assert!(pod_of(&job).containers[0].env_from.is_none());
        let volume = pod_of(&job)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "input")
            .unwrap();
        let cm = volume.config_map.as_ref().unwrap();
        assert_eq!(cm.name, "prompts");
        let item = &cm.items.as_ref().unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("all.jsonl", "items.jsonl")
        );
    }

    #[test]
    fn a_prompt_too_large_for_the_environment_is_read_from_the_input_config_map() {
        let big = "é".repeat(70_000);
        let job = build(&format!(
            "metadata: {{name: big, namespace: ns, uid: u}}\nspec: {{prompt: \"{big}\", openai: {{apiKeySecretRef: {{name: o}}}}}}\n"
        ));
        let env = env_of(&job);
        assert!(env.iter().all(|e| e.name != "OPENAI_PROMPT"));
        assert_eq!(
            value(&env, "OPENAI_PROMPT_FILE"),
            Some("/var/run/llmjob/input/prompt")
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode, None);
        assert_eq!(spec.completions, Some(1));
        let volume = pod_of(&job)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "input")
            .unwrap();
        assert_eq!(volume.config_map.as_ref().unwrap().name, "big-input");
    }

    #[test]
    fn a_small_prompts_job_has_no_input_volume() {
        let job = build(PROMPT);
        let pod = pod_of(&job);
        assert_eq!(pod.volumes.as_ref().unwrap().len(), 1);
        assert!(pod.containers[0].env_from.is_none());
        assert_eq!(job.spec.as_ref().unwrap().completion_mode, None);
    }
}
