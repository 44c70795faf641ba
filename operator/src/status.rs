//! Status step: the LlmJob's status derived from what the reconcile observed (its Job and the
//! Job's pods, or a problem), and the server-side apply that writes it to `/status`.
//!
//! [`derive`] is pure: same observation, same status; a condition's `lastTransitionTime` only
//! moves when its `status` changes. It reads the runner's one-line JSON result from the runner
//! container's termination message and never copies anything else out of the pod. [`apply`] is
//! the only writer of the status.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;

use llmjob_crds::result::{RunError, RunResult, RunStatus, TokenUsage};
use llmjob_crds::text;
use llmjob_crds::v1alpha1::condition::{FAILED, READY, RECONCILING, STALLED, SUCCEEDED};
use llmjob_crds::v1alpha1::{BatchStatus, LlmJob, LlmJobStatus, MAX_STATUS_ITEM_ERRORS, Phase};

use crate::FIELD_MANAGER;
use crate::contract::COMPLETION_INDEX_ANNOTATION;
use crate::contract::{
    CONFIGMAP_OUTPUT_SCHEME, CONTAINER_NAME, LAUNCH_TRACEPARENT_ANNOTATION, queue,
};
use crate::events::Reason;
use crate::trace_url::TraceUrlTemplate;
use crate::traceparent::TraceParent;
use crate::triggers::STARTING_REASONS;

/// What the reconcile saw, the input of [`derive`].
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// The LlmJob cannot progress until something changes: an invalid spec, a missing Secret, a
    /// Job of the same name owned by someone else. `reason` is the problem's category, the same
    /// as the reason of the Warning event about it.
    Blocked {
        /// The problem's category.
        reason: Reason,
        /// What is wrong and what to do.
        message: &'a str,
    },
    /// The Job exists (it may have just been created).
    Job {
        /// The Job.
        job: &'a Job,
        /// The Job's pods.
        pods: &'a [Pod],
        /// The messages of the kubelet's `FailedMount` Events about the latest pod, the latest
        /// first: read only once its runner container has waited in `ContainerCreating` for
        /// [`MOUNT_GRACE`] ([`pod_start`]), empty otherwise.
        mount_failures: &'a [String],
    },
    /// The Job named in the status is gone before the operator saw the run finish.
    JobGone {
        /// Its name.
        job_name: &'a str,
    },
}

/// What a suspension costs once the runner pod has started (the condition's message, and so the
/// `Suspended` event's note, ends with it).
pub const SUSPENDED_AFTER_START: &str = ". Its pod had started, so it was stopped mid-run: a call \
     in flight was interrupted and may have been billed, and resuming makes the call again";

/// What the runner container of the Job's pods tells.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunnerState {
    /// The parsed result of the latest finished runner container.
    pub result: Option<RunResult>,
    /// Why the latest termination message could not be parsed.
    pub result_error: Option<String>,
    /// Exit code and reason of the latest finished runner container.
    pub terminated: Option<(i32, Option<String>)>,
    /// Whether a pod is running (or its runner finished and the Job has not caught up yet).
    pub running: bool,
    /// Whether the latest pod succeeded (phase `Succeeded`: the runner exited 0).
    pub succeeded: bool,
    /// Name of the latest pod.
    pub pod_name: Option<String>,
    /// Why the latest pod's runner container is waiting (e.g. `ImagePullBackOff: ...`).
    pub waiting: Option<String>,
    /// The kubelet's message when the latest pod's runner container waits in
    /// `CreateContainerConfigError` (e.g. `secret "openai" not found`).
    pub config_error: Option<String>,
    /// The kubelet's `FailedMount` Event messages about the latest pod, the latest first (e.g.
    /// `MountVolume.SetUp failed for volume "output-credentials" : secret "s3" not found`):
    /// [`Observation::Job`]'s `mount_failures`.
    pub mount_failures: Vec<String>,
    /// When the first runner container started.
    pub started_at: Option<Time>,
    /// When the latest runner container finished.
    pub finished_at: Option<Time>,
}

/// `pods` oldest first (by creation time, then name): the last one is the latest pod.
fn by_creation(pods: &[Pod]) -> Vec<&Pod> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    pods
}

/// How long the runner container of the latest pod may wait in `ContainerCreating`, counted
/// from the pod's creation, before the reconcile reads the pod's `FailedMount` Events: a Secret
/// volume whose Secret is missing (`spec.output.credentialsSecretRef`) keeps the pod there, and
/// the kubelet says why only in an Event. Most pods start well within it, so the happy path
/// reads no Event.
pub const MOUNT_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// The waiting reason of a container whose pod the kubelet is still setting up (volumes, sandbox).
const CONTAINER_CREATING: &str = "ContainerCreating";

/// How far the Job's latest pod is from starting its runner, as [`pod_start`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStart {
    /// No pod yet, or the kubelet has not reported the latest one's runner container (a pod
    /// that is only created, or scheduled).
    Unseen,
    /// The latest pod's runner container waits in `ContainerCreating`.
    Creating {
        /// The pod's name.
        pod: String,
        /// How long the pod has existed (zero for a creation time in the future or unknown).
        age: std::time::Duration,
    },
    /// The runner started, finished, or waits for another reason (which the pod's state says).
    Past,
}

/// Where the latest of `pods` (the pods of one Job) is on its way to starting, at `now`. Neither
/// [`PodStart::Unseen`] nor [`PodStart::Creating`] changes what a pod watch reports (see
/// [`crate::triggers::pod_progress`]), so the reconcile looks again by itself.
pub fn pod_start(pods: &[Pod], now: Timestamp) -> PodStart {
    let Some(pod) = by_creation(pods).last().copied() else {
        return PodStart::Unseen;
    };
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER_NAME))
        .and_then(|c| c.state.as_ref());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let Some(state) = state else {
        return match phase {
            None | Some("Pending") => PodStart::Unseen,
            Some(_) => PodStart::Past,
        };
    };
    let creating = state
        .waiting
        .as_ref()
        .is_some_and(|w| w.reason.as_deref() == Some(CONTAINER_CREATING));
    match (creating, &pod.metadata.name) {
        (true, Some(name)) => PodStart::Creating {
            pod: name.clone(),
            age: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| std::time::Duration::try_from(now.duration_since(t.0)).ok())
                .unwrap_or_default(),
        },
        _ => PodStart::Past,
    }
}

/// Reads the runner containers of `pods` (the pods of one Job).
pub fn runner_state(pods: &[Pod]) -> RunnerState {
    let pods = by_creation(pods);
    let mut state = RunnerState::default();
    let mut latest_terminated: Option<&ContainerStateTerminated> = None;
    for pod in &pods {
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let runner = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER_NAME));
        let cstate = runner.and_then(|c| c.state.as_ref());
        if phase == Some("Running") {
            state.running = true;
        }
        state.succeeded = phase == Some("Succeeded");
        state.pod_name = pod.metadata.name.clone();
        let waiting = cstate.and_then(|s| s.waiting.as_ref());
        state.config_error = waiting
            .filter(|w| w.reason.as_deref() == Some(CONFIG_ERROR_REASON))
            .map(|w| w.message.clone().unwrap_or_default());
        state.waiting = waiting.and_then(|w| {
            w.reason
                .as_deref()
                .filter(|r| !STARTING_REASONS.contains(r))
                .map(|r| match w.message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{r}: {m}"),
                    _ => r.to_owned(),
                })
        });
        let started = cstate.and_then(|s| {
            s.running
                .as_ref()
                .and_then(|r| r.started_at.clone())
                .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.clone()))
        });
        if state.started_at.is_none() {
            state.started_at = started;
        }
        if let Some(t) = cstate.and_then(|s| s.terminated.as_ref()) {
            latest_terminated = Some(t);
            state.running = true;
        }
    }
    if let Some(t) = latest_terminated {
        state.terminated = Some((t.exit_code, t.reason.clone()));
        state.finished_at = t.finished_at.clone();
        match t
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            None => {
                state.result_error =
                    Some("the runner wrote no result (empty termination message)".to_owned())
            }
            // The runtime, not the runner, wrote this message: say what it reported.
            Some(message)
                if t.reason
                    .as_deref()
                    .is_some_and(|r| RUNTIME_REASONS.contains(&r)) =>
            {
                let mut message = message.to_owned();
                text::truncate(&mut message, RUNTIME_MESSAGE_BYTES);
                state.result_error = Some(format!("the container runtime reported: {message}"))
            }
            Some(message) => match RunResult::parse(message) {
                Ok(r) => state.result = Some(r),
                Err(e) => {
                    state.result_error = Some(format!(
                        "the runner's termination message is not a valid result ({e})"
                    ))
                }
            },
        }
    }
    state
}

/// The waiting reason of a container the kubelet cannot configure (a missing Secret, ConfigMap
/// or key; `kuberuntime_container.go: ErrCreateContainerConfig`).
const CONFIG_ERROR_REASON: &str = "CreateContainerConfigError";

/// What a kubelet message about a missing Secret names (`kubelet_pods.go:
/// makeEnvironmentVariables`). The kubelet names the Secret and the key, never the keys the
/// Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MissingSecret<'a> {
    /// `secret "<name>" not found`.
    Secret { name: &'a str },
    /// `couldn't find key <key> in Secret <namespace>/<name>`.
    Key { key: &'a str, name: &'a str },
}

/// Parses the kubelet's `FailedMount` Event message about a Secret volume whose Secret is
/// missing: `MountVolume.SetUp failed for volume "<volume>" : secret "<name>" not found`
/// (`operation_generator.go: GenerateMountVolumeFunc`, the error of `secret.go: SetUpAt`).
/// Returns the volume and the Secret's name.
fn missing_volume_secret(message: &str) -> Option<(&str, &str)> {
    let rest = message
        .trim()
        .strip_prefix("MountVolume.SetUp failed for volume \"")?;
    let (volume, error) = rest.split_once("\" : ")?;
    match missing_secret(error)? {
        MissingSecret::Secret { name } => Some((volume, name)),
        MissingSecret::Key { .. } => None,
    }
}

/// Parses the kubelet's `CreateContainerConfigError` message, if it is about a Secret.
fn missing_secret(message: &str) -> Option<MissingSecret<'_>> {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("secret \"") {
        let name = rest.strip_suffix("\" not found")?;
        return Some(MissingSecret::Secret { name });
    }
    let rest = message.strip_prefix("couldn't find key ")?;
    let (key, object) = rest.split_once(" in Secret ")?;
    let (_, name) = object.split_once('/')?;
    Some(MissingSecret::Key { key, name })
}

/// The Secret problem the runner pod waits on, with a message a user can act on: the kubelet
/// cannot start the runner container because a Secret it needs (the API-key Secret, or one a
/// `spec.pod.env` entry names) or the key it names is missing, or cannot set up the pod because
/// the Secret of a volume (`spec.output.credentialsSecretRef`) is missing. The kubelet retries,
/// so the run starts as soon as the Secret or key exists. The operator reads no Secret: this
/// comes from the pod's waiting state and the kubelet's `FailedMount` Events only, and it never
/// lists the keys a Secret holds.
pub fn secret_problem(llmjob: &LlmJob, runner: &RunnerState) -> Option<(Reason, String)> {
    let namespace = llmjob.namespace().unwrap_or_default();
    let pod = runner.pod_name.as_deref().unwrap_or("?");
    let starts = format!("pod {pod} starts as soon as it exists (the kubelet retries)");
    let Some(problem) = runner.config_error.as_deref().and_then(missing_secret) else {
        let (volume, name) = runner
            .mount_failures
            .iter()
            .find_map(|m| missing_volume_secret(m))?;
        let credentials = llmjob
            .spec
            .output
            .as_ref()
            .and_then(|o| o.credentials_secret_ref.as_ref())
            .is_some_and(|r| r.name == name);
        let message = if credentials {
            format!(
                "Secret {namespace}/{name} (spec.output.credentialsSecretRef) not found: create it \
                 with the object store's configuration keys (e.g. AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY, AWS_REGION for an s3:// output; docs/batches.md); the \
                 pod mounts it, so {starts}"
            )
        } else {
            format!(
                "Secret {namespace}/{name} (mounted as volume {volume:?}) not found: create it; \
                 {starts}"
            )
        };
        return Some((Reason::SecretNotFound, message));
    };
    let api_key = &llmjob.spec.openai.api_key_secret_ref;
    Some(match problem {
        MissingSecret::Secret { name } if name == api_key.name => (
            Reason::SecretNotFound,
            format!(
                "Secret {namespace}/{name} (spec.openai.apiKeySecretRef) not found: create it with \
                 the API key under key {key:?} (kubectl create secret generic {name} -n \
                 {namespace} --from-literal={key}=<API key>); {starts}",
                key = api_key.key
            ),
        ),
        MissingSecret::Secret { name } => (
            Reason::SecretNotFound,
            format!(
                "Secret {namespace}/{name} (named in spec.pod.env) not found: create it; {starts}"
            ),
        ),
        MissingSecret::Key { key, name } if name == api_key.name && key == api_key.key => (
            Reason::SecretKeyNotFound,
            format!(
                "Secret {namespace}/{name} has no key {key:?} (spec.openai.apiKeySecretRef.key): \
                 add the API key to the Secret under {key:?}, or create a new LlmJob whose \
                 apiKeySecretRef.key names the key that holds it; {starts}"
            ),
        ),
        MissingSecret::Key { key, name } => (
            Reason::SecretKeyNotFound,
            format!(
                "Secret {namespace}/{name} has no key {key:?} (named in spec.pod.env): add the key \
                 to the Secret; {starts}"
            ),
        ),
    })
}

/// Terminated reasons under which the container runtime, not the runner, wrote the message
/// (the runner's process never ran).
const RUNTIME_REASONS: &[&str] = &["StartError", "ContainerCannotRun"];

/// How much of a runtime's message goes into a condition.
const RUNTIME_MESSAGE_BYTES: usize = 300;

/// How much of a message goes into a condition.
const CONDITION_MESSAGE_BYTES: usize = 4096;

/// One condition as the derivation wants it: its status, reason and message; [`condition`] adds
/// the times and the generation.
struct WantedCondition {
    status: bool,
    reason: String,
    message: String,
}

impl WantedCondition {
    /// A condition with status `True`.
    fn status_true(reason: &str, message: impl Into<String>) -> Self {
        WantedCondition {
            status: true,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A condition with status `False`.
    fn status_false(reason: &str, message: impl Into<String>) -> Self {
        WantedCondition {
            status: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The five conditions of a status as the derivation wants them.
struct WantedConditions {
    ready: WantedCondition,
    succeeded: WantedCondition,
    failed: WantedCondition,
    reconciling: WantedCondition,
    stalled: WantedCondition,
}

/// The message of the terminal conditions while the run goes on.
const NOT_FINISHED: &str = "The run has not finished";

impl WantedConditions {
    /// A phase that is neither finished nor blocked: `Reconciling` unless suspended.
    fn in_progress(phase: Phase, reason: &str, message: String) -> Self {
        WantedConditions {
            ready: WantedCondition::status_false(reason, message.clone()),
            succeeded: WantedCondition::status_false(reason, NOT_FINISHED),
            failed: WantedCondition::status_false(reason, NOT_FINISHED),
            reconciling: WantedCondition {
                status: phase != Phase::Suspended,
                reason: reason.to_owned(),
                message,
            },
            stalled: WantedCondition::status_false(reason, ""),
        }
    }

    /// Stuck until something changes: `Stalled`.
    fn blocked(reason: &str, message: &str) -> Self {
        WantedConditions {
            ready: WantedCondition::status_false(reason, message),
            succeeded: WantedCondition::status_false(reason, NOT_FINISHED),
            failed: WantedCondition::status_false(reason, NOT_FINISHED),
            reconciling: WantedCondition::status_false(reason, message),
            stalled: WantedCondition::status_true(reason, message),
        }
    }

    /// The run succeeded: `Ready` and `Succeeded`.
    fn succeeded(message: String) -> Self {
        WantedConditions {
            ready: WantedCondition::status_true("Succeeded", message.clone()),
            succeeded: WantedCondition::status_true("Completed", message),
            failed: WantedCondition::status_false("Succeeded", ""),
            reconciling: WantedCondition::status_false("Succeeded", ""),
            stalled: WantedCondition::status_false("Succeeded", ""),
        }
    }

    /// The run failed: `Failed` and `Stalled` (it never runs again).
    fn failed(reason: &str, message: String) -> Self {
        WantedConditions {
            ready: WantedCondition::status_false(reason, message.clone()),
            succeeded: WantedCondition::status_false(reason, ""),
            failed: WantedCondition::status_true(reason, message.clone()),
            reconciling: WantedCondition::status_false(reason, ""),
            stalled: WantedCondition::status_true(reason, message),
        }
    }

    /// The conditions, each with the `lastTransitionTime` of `old` when its status did not
    /// change, in the order of [`llmjob_crds::v1alpha1::condition::ALL`].
    fn into_conditions(
        self,
        old: &[Condition],
        generation: Option<i64>,
        now: &Timestamp,
    ) -> Vec<Condition> {
        [
            (READY, self.ready),
            (SUCCEEDED, self.succeeded),
            (FAILED, self.failed),
            (RECONCILING, self.reconciling),
            (STALLED, self.stalled),
        ]
        .into_iter()
        .map(|(type_, wanted)| condition(old, type_, wanted, generation, now))
        .collect()
    }
}

/// A condition with the `lastTransitionTime` of `old` when its status did not change.
fn condition(
    old: &[Condition],
    type_: &str,
    wanted: WantedCondition,
    generation: Option<i64>,
    now: &Timestamp,
) -> Condition {
    let status = if wanted.status { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(*now));
    let mut message = wanted.message;
    text::truncate(&mut message, CONDITION_MESSAGE_BYTES);
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: wanted.reason,
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The CamelCase condition reason of a runner error type.
pub fn error_reason(kind: &str) -> &'static str {
    match kind {
        "authentication" => "AuthenticationFailed",
        "permission_denied" | "forbidden" => "PermissionDenied",
        "rate_limited" => "RateLimited",
        "timeout" => "Timeout",
        "invalid_request" => "InvalidRequest",
        "not_found" => "NotFound",
        "connection" => "ConnectionFailed",
        k if k.starts_with('5') => "ServerError",
        _ => "RunFailed",
    }
}

/// What a user can do about a runner error.
fn error_hint(llmjob: &LlmJob, kind: &str) -> String {
    let ns = llmjob.namespace().unwrap_or_default();
    let key = &llmjob.spec.openai.api_key_secret_ref;
    match kind {
        "authentication" | "permission_denied" | "forbidden" => format!(
            "Check the API key in Secret {ns}/{} (key {}), then create a new LlmJob.",
            key.name, key.key
        ),
        "rate_limited" => {
            "Every attempt was rate-limited: run again later or raise spec.run.maxAttempts."
                .to_owned()
        }
        "timeout" => {
            "Raise spec.run.timeout, or check that the API is reachable from the pod.".to_owned()
        }
        "invalid_request" | "not_found" => {
            "Check spec.model, spec.parameters and spec.openai.baseURL.".to_owned()
        }
        _ => "See the run's trace and the pod's logs for details.".to_owned(),
    }
}

/// One sentence about a successful result.
fn success_message(result: Option<&RunResult>) -> String {
    let Some(r) = result else {
        return "The run finished".to_owned();
    };
    let mut parts = Vec::new();
    if let Some(total) = r.usage.as_ref().and_then(|u| u.total_tokens) {
        parts.push(format!("{total} tokens"));
    }
    if let Some(reason) = &r.finish_reason {
        parts.push(format!("finish reason {reason}"));
    }
    if let Some(model) = &r.model {
        parts.push(format!("model {model}"));
    }
    if parts.is_empty() {
        "The run finished".to_owned()
    } else {
        format!("The run finished: {}", parts.join(", "))
    }
}

/// Reason and message of a failed result.
fn failure_from_result(llmjob: &LlmJob, r: &RunResult) -> (&'static str, String) {
    let attempts = r
        .attempts
        .map(|a| format!(" after {a} attempt{}", if a == 1 { "" } else { "s" }))
        .unwrap_or_default();
    match &r.error {
        Some(e) => {
            let http = e
                .http_status
                .map(|s| format!(" (HTTP {s})"))
                .unwrap_or_default();
            (
                error_reason(&e.kind),
                format!(
                    "The run failed{attempts}: {}: {}{http}. {}",
                    e.kind,
                    e.message,
                    error_hint(llmjob, &e.kind)
                ),
            )
        }
        None => ("RunFailed", format!("The run failed{attempts}")),
    }
}

/// What the runner's exit code means (the job-runner's contract).
fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "internal error",
        2 => "configuration error",
        3 => "the API refused the request",
        4 => "retries exhausted or deadline passed",
        5 => "cancelled by a signal (the pod was deleted or evicted)",
        137 => "killed",
        _ => "unexpected exit",
    }
}

fn job_condition<'a>(
    job: &'a Job,
    types: &[&str],
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| types.contains(&c.type_.as_str()) && c.status == "True")
        })
}

/// Whether the Job reached its end (its pods may still be terminating).
pub fn job_finished(job: &Job) -> bool {
    job_condition(
        job,
        &["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"],
    )
    .is_some()
}

/// The trace id of the Job's launch span (the run's trace id).
fn launch_trace_id(job: &Job) -> Option<String> {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAUNCH_TRACEPARENT_ANNOTATION))
        .and_then(|v| TraceParent::parse(v).ok())
        .map(|tp| tp.trace_id_hex())
}

/// The error type of a batch whose failed items exceed `spec.batch.maxFailedItems`.
pub const TOO_MANY_FAILED_ITEMS: &str = "too_many_failed_items";

/// A batch's progress from the termination messages of its pods (one shard per completion index;
/// of several pods of one index, the latest with a result counts) and, once every shard reported
/// or the Job ended, the run's result: the shards' usage, attempts and items summed, `Failed`
/// when the failed items exceed `spec.batch.maxFailedItems`.
pub fn batch_progress(
    llmjob: &LlmJob,
    job: &Job,
    pods: &[Pod],
) -> (BatchStatus, Option<RunResult>) {
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut shards: BTreeMap<u32, RunResult> = BTreeMap::new();
    for pod in sorted {
        let Some(result) = runner_state(std::slice::from_ref(pod)).result else {
            continue;
        };
        let index = result.shard.as_ref().map(|s| s.index).or_else(|| {
            pod.annotations()
                .get(COMPLETION_INDEX_ANNOTATION)
                .and_then(|i| i.parse().ok())
        });
        if let Some(index) = index {
            shards.insert(index, result);
        }
    }
    let spec = llmjob.spec.batch.as_ref();
    let max_failed = spec.and_then(|b| b.max_failed_items).unwrap_or(0);
    let output = match llmjob.spec.output.as_ref() {
        Some(o) => o.url.clone().or_else(|| {
            o.config_map
                .as_ref()
                .map(|c| format!("{CONFIGMAP_OUTPUT_SCHEME}{}", c.name))
        }),
        None => None,
    };
    let mut progress = BatchStatus {
        items: spec
            .and_then(|b| b.items.as_ref())
            .map(|items| items.len() as u64),
        shards: job
            .spec
            .as_ref()
            .and_then(|s| s.completions)
            .and_then(|c| u32::try_from(c).ok()),
        shards_done: u32::try_from(shards.len()).unwrap_or(u32::MAX),
        output,
        ..BatchStatus::default()
    };
    let mut usage = TokenUsage::default();
    let mut attempts: Option<u32> = None;
    let mut duration_ms: Option<u64> = None;
    let mut trace_id = None;
    let add = |total: &mut Option<u64>, part: Option<u64>| {
        if let Some(p) = part {
            *total = Some(total.unwrap_or(0).saturating_add(p));
        }
    };
    for result in shards.values() {
        if let Some(shard) = &result.shard {
            progress.succeeded = progress.succeeded.saturating_add(shard.succeeded);
            progress.failed = progress.failed.saturating_add(shard.failed);
            for e in &shard.item_errors {
                if progress.item_errors.len() < MAX_STATUS_ITEM_ERRORS {
                    progress.item_errors.push(e.clone());
                }
            }
        }
        if let Some(u) = &result.usage {
            add(&mut usage.input_tokens, u.input_tokens);
            add(&mut usage.output_tokens, u.output_tokens);
            add(&mut usage.total_tokens, u.total_tokens);
        }
        if let Some(a) = result.attempts {
            attempts = Some(attempts.unwrap_or(0).saturating_add(a));
        }
        duration_ms = duration_ms.max(result.duration_ms);
        trace_id = trace_id.or_else(|| result.trace_id.clone());
    }
    let all_reported = progress.shards.is_some_and(|n| progress.shards_done >= n);
    if shards.is_empty() || !(all_reported || job_finished(job)) {
        return (progress, None);
    }
    let too_many = progress.failed > max_failed;
    let error = too_many.then(|| {
        let first = progress
            .item_errors
            .first()
            .map(|e| {
                format!(
                    "; first: item {}: {}: {}",
                    e.id, e.error.kind, e.error.message
                )
            })
            .unwrap_or_default();
        RunError {
            kind: TOO_MANY_FAILED_ITEMS.to_owned(),
            message: format!(
                "{} items failed, more than spec.batch.maxFailedItems ({max_failed}){first}",
                progress.failed
            ),
            http_status: None,
        }
    });
    let result = RunResult {
        status: if too_many {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        },
        trace_id,
        span_id: None,
        response_id: None,
        model: None,
        finish_reason: None,
        finish_reasons: Vec::new(),
        usage: Some(usage),
        duration_ms,
        attempts,
        input_sha256: None,
        output_sha256: None,
        error,
        shard: None,
    };
    (progress, Some(result))
}

/// Derives the status of `llmjob` from an observation, at time `now`.
pub fn derive(llmjob: &LlmJob, observation: Observation<'_>, now: Timestamp) -> LlmJobStatus {
    let old = llmjob.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = llmjob.meta().generation;

    let wanted = match observation {
        Observation::Blocked { reason, message } => {
            status.phase = Some(blocked_phase(old.phase));
            WantedConditions::blocked(reason.as_str(), message)
        }
        Observation::JobGone { job_name } => {
            status.completion_time = old.completion_time.clone().or(Some(Time(now)));
            match old.result.as_ref() {
                Some(r) if r.status == RunStatus::Succeeded => {
                    status.phase = Some(Phase::Succeeded);
                    WantedConditions::succeeded(success_message(Some(r)))
                }
                Some(r) => {
                    status.phase = Some(Phase::Failed);
                    let (reason, message) = failure_from_result(llmjob, r);
                    WantedConditions::failed(reason, message)
                }
                None => {
                    status.phase = Some(Phase::Failed);
                    WantedConditions::failed(
                        "JobDeleted",
                        format!(
                            "Job {job_name} was deleted before the run finished, so its result is \
                             unknown; the operator never starts a second run: create a new LlmJob \
                             to run again"
                        ),
                    )
                }
            }
        }
        Observation::Job {
            job,
            pods,
            mount_failures,
        } => derive_from_job(llmjob, &old, &mut status, job, pods, mount_failures, now),
    };

    status.conditions = wanted.into_conditions(&old.conditions, llmjob.meta().generation, &now);
    status
}

/// The phase of a blocked LlmJob that was in `old`: a running or suspended run stays so.
fn blocked_phase(old: Option<Phase>) -> Phase {
    match old {
        Some(p @ (Phase::Running | Phase::Suspended)) => p,
        _ => Phase::Pending,
    }
}

/// The status of an LlmJob the operator's types cannot read (stored around the CRD's schema),
/// from the status it had: `Stalled` with reason `InvalidSpec` and `message`, at `generation`. A
/// finished run keeps its outcome: only `observedGeneration` follows.
pub fn unreadable(
    old: &LlmJobStatus,
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> LlmJobStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    if old.phase.is_some_and(Phase::is_finished) {
        for c in &mut status.conditions {
            c.observed_generation = generation;
        }
        return status;
    }
    status.phase = Some(blocked_phase(old.phase));
    status.conditions = WantedConditions::blocked(Reason::InvalidSpec.as_str(), message)
        .into_conditions(&old.conditions, generation, &now);
    status
}

/// Whether `status` already says, at `generation`, what [`unreadable`] writes (so that a
/// restart or a Job event reports nothing twice).
pub fn reports_unreadable(status: &LlmJobStatus, generation: Option<i64>) -> bool {
    status.observed_generation == generation
        && (status.phase.is_some_and(Phase::is_finished)
            || status.conditions.iter().any(|c| {
                c.type_ == STALLED && c.status == "True" && c.reason == Reason::InvalidSpec.as_str()
            }))
}

fn derive_from_job(
    llmjob: &LlmJob,
    old: &LlmJobStatus,
    status: &mut LlmJobStatus,
    job: &Job,
    pods: &[Pod],
    mount_failures: &[String],
    now: Timestamp,
) -> WantedConditions {
    let job_name = job.name_any();
    let mut runner = runner_state(pods);
    runner.mount_failures = mount_failures.to_vec();
    status.job_name = Some(job_name.clone());
    // The result is copied when the Job finishes. For an LlmJob with `ttlSecondsAfterFinished` it
    // is copied as soon as the runner has written it too; the Job only gets its TTL once the
    // outcome is in the status (the controller's `expire_after_outcome`), so it cannot be
    // deleted first, even while the operator is down.
    let ttl = llmjob
        .spec
        .run
        .as_ref()
        .and_then(|r| r.ttl_seconds_after_finished)
        .is_some();
    // A pod that succeeded with a successful result is the run's success, and final: the Job has
    // one completion and never restarts a succeeded pod. It is reported at once, not when the Job
    // controller gets to mark the Job `Complete` (seconds later on a busy cluster). A failed
    // attempt waits for the Job's verdict, as the Job may retry it.
    // A batch: one pod is one shard, never the run's end; its totals are the shards' sums.
    let batch = llmjob
        .spec
        .batch
        .as_ref()
        .map(|_| batch_progress(llmjob, job, pods));
    let pod_succeeded = batch.is_none()
        && runner.succeeded
        && runner
            .result
            .as_ref()
            .is_some_and(|r| r.status == RunStatus::Succeeded);
    if let Some((progress, result)) = batch {
        status.batch = Some(Box::new(progress));
        if job_finished(job) {
            status.result = result.map(Box::new);
        }
    } else if runner.result.is_some() && (ttl || pod_succeeded || job_finished(job)) {
        status.result = runner.result.clone().map(Box::new);
    }
    if let Some(a) = status.result.as_ref().and_then(|r| r.attempts) {
        status.attempts = Some(a);
    }
    status.trace_id = status
        .result
        .as_ref()
        .and_then(|r| r.trace_id.clone())
        .or_else(|| launch_trace_id(job))
        .or_else(|| old.trace_id.clone());
    if status.start_time.is_none() {
        status.start_time = runner.started_at.clone();
    }

    let complete = job_condition(job, &["Complete", "SuccessCriteriaMet"]);
    let job_failed = job_condition(job, &["Failed", "FailureTarget"]);
    let result_failed = status
        .result
        .as_ref()
        .is_some_and(|r| r.status == RunStatus::Failed);

    if pod_succeeded || complete.is_some() || job_failed.is_some() {
        status.completion_time = old
            .completion_time
            .clone()
            .or_else(|| runner.finished_at.clone())
            .or_else(|| job.status.as_ref().and_then(|s| s.completion_time.clone()))
            .or_else(|| job_failed.and_then(|c| c.last_transition_time.clone()))
            .or(Some(Time(now)));
    }

    if pod_succeeded || (complete.is_some() && !result_failed) {
        status.phase = Some(Phase::Succeeded);
        let mut message = success_message(status.result.as_deref());
        if let Some(b) = &status.batch {
            message.push_str(&format!(
                "; {} items succeeded, {} failed, results in {}",
                b.succeeded,
                b.failed,
                b.output.as_deref().unwrap_or("?")
            ));
        }
        if let Some(e) = &runner.result_error {
            message.push_str(&format!(" ({e}; no usage recorded)"));
        }
        return WantedConditions::succeeded(message);
    }
    if complete.is_some() || job_failed.is_some() {
        status.phase = Some(Phase::Failed);
        if let Some(r) = status
            .result
            .as_ref()
            .filter(|r| r.status == RunStatus::Failed)
        {
            let (reason, message) = failure_from_result(llmjob, r);
            return WantedConditions::failed(reason, message);
        }
        let cond = job_failed.or(complete);
        let job_reason = cond.and_then(|c| c.reason.clone()).unwrap_or_default();
        let job_message = cond.and_then(|c| c.message.clone()).unwrap_or_default();
        let mut message = match job_reason.as_str() {
            "DeadlineExceeded" => format!(
                "Job {job_name} exceeded its deadline (activeDeadlineSeconds {}): raise \
                 spec.run.timeout or check why the pod did not finish",
                job.spec
                    .as_ref()
                    .and_then(|s| s.active_deadline_seconds)
                    .unwrap_or_default()
            ),
            _ => format!("Job {job_name} failed: {job_reason} {job_message}")
                .trim_end()
                .to_owned(),
        };
        if let Some((code, reason)) = &runner.terminated {
            message.push_str(&format!(
                "; the runner exited with code {code} ({}{})",
                exit_meaning(*code),
                reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(e) = &runner.result_error {
            message.push_str(&format!("; {e}"));
        }
        // The pod never started because a Secret or key was missing: say so, the deadline is
        // only the consequence.
        if runner.terminated.is_none()
            && let Some(waited) = old
                .conditions
                .iter()
                .find(|c| c.type_ == STALLED)
                .filter(|_| pod_problem(old).is_some())
        {
            message.push_str(&format!(
                "; the runner never started: {} ({})",
                waited.message, waited.reason
            ));
        }
        let reason = match job_reason.as_str() {
            "DeadlineExceeded" => "DeadlineExceeded",
            _ => "RunFailed",
        };
        return WantedConditions::failed(reason, message);
    }

    let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    if suspended {
        status.phase = Some(Phase::Suspended);
        let mut message = match queue(llmjob) {
            Some(queue) => format!("Job {job_name} waits for admission by Kueue queue {queue}"),
            None if llmjob.spec.suspend == Some(true) => {
                format!("spec.suspend is true: Job {job_name} is suspended")
            }
            // Kueue (managing Jobs without a queue label, or a default LocalQueue) or another
            // controller suspended it: the operator leaves the field to it.
            None => format!(
                "Job {job_name} is suspended by another controller (e.g. Kueue waiting for \
                 admission); the operator leaves its spec.suspend alone"
            ),
        };
        // Suspended after its pod started: the suspension is honoured (the way to stop spending),
        // and its price is said where the user looks.
        if status.start_time.is_some() {
            message.push_str(SUSPENDED_AFTER_START);
        }
        return WantedConditions::in_progress(Phase::Suspended, "Suspended", message);
    }
    if let Some((reason, message)) = secret_problem(llmjob, &runner) {
        status.phase = Some(Phase::Pending);
        return WantedConditions::blocked(reason.as_str(), &message);
    }
    if runner.running {
        status.phase = Some(Phase::Running);
        let pod = runner.pod_name.as_deref().unwrap_or("?");
        return WantedConditions::in_progress(
            Phase::Running,
            "Running",
            format!("Job {job_name} is running (pod {pod})"),
        );
    }
    status.phase = Some(Phase::Pending);
    // A pod that is merely being created or scheduled says nothing new (and is not worth a status
    // write); one that waits for a reason (an image pull, a missing key) is named with it.
    let message = match (&runner.pod_name, &runner.waiting) {
        (Some(pod), Some(waiting)) => {
            format!("Job {job_name} created; pod {pod} is waiting: {waiting}")
        }
        _ => format!("Job {job_name} created; waiting for its pod to start"),
    };
    WantedConditions::in_progress(Phase::Pending, "Pending", message)
}

/// Sets `status.traceURL` from the trace id and the operator's template. Without a template, or
/// before the trace id is known, the link the status already has stays (a link written under an
/// earlier template still points at the trace).
pub fn link_trace(status: &mut LlmJobStatus, template: Option<&TraceUrlTemplate>) {
    if let Some(url) = template
        .zip(status.trace_id.as_deref())
        .and_then(|(t, id)| t.render(id))
    {
        status.trace_url = Some(url);
    }
}

/// The problem `status` reports as `Stalled` while the run is not finished, of those
/// [`derive`] reads from the Job's pods (a missing Secret or key): the reason of the Warning event
/// about it.
pub fn pod_problem(status: &LlmJobStatus) -> Option<Reason> {
    if status.phase.is_some_and(Phase::is_finished) {
        return None;
    }
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == STALLED && c.status == "True")?;
    [Reason::SecretNotFound, Reason::SecretKeyNotFound]
        .into_iter()
        .find(|r| r.as_str() == stalled.reason)
}

/// Writes `status` to the LlmJob's `/status` by server-side apply with the operator's field
/// manager, forced (the operator is the only writer of the status).
///
/// With `resource_version`, the write is conditional: it fails with `409 Conflict` when the
/// LlmJob changed since that version, so a status derived from a stale copy is never written.
pub async fn apply(
    api: &Api<LlmJob>,
    name: &str,
    resource_version: Option<&str>,
    status: &LlmJobStatus,
) -> Result<LlmJob, kube::Error> {
    let mut patch = serde_json::json!({
        "apiVersion": LlmJob::api_version(&()),
        "kind": LlmJob::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({ "name": name, "resourceVersion": rv });
    }
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{job, llmjob, pod};

    const LLMJOB: &str = r#"
metadata: {name: haiku, namespace: team-a, uid: u-1, generation: 2}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: openai, key: api-key}}}
"#;

    fn now() -> Timestamp {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn later() -> Timestamp {
        "2026-01-02T04:00:00Z".parse().unwrap()
    }

    const JOB_META: &str = r#"
metadata:
  name: haiku
  namespace: team-a
  uid: job-uid
  annotations: {llmjob.dev/launch-traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01}
"#;

    fn job_with(rest: &str) -> Job {
        job(&format!("{JOB_META}{rest}"))
    }

    fn runner_pod(name: &str, created: &str, state: &str, phase: &str) -> Pod {
        pod(&format!(
            r#"
metadata: {{name: {name}, namespace: team-a, creationTimestamp: "{created}"}}
status:
  phase: {phase}
  containerStatuses:
    - name: runner
      image: runner
      imageID: ""
      ready: false
      restartCount: 0
      state: {state}
"#
        ))
    }

    const SUCCESS: &str = r#"{"status":"succeeded","traceId":"1111111111111111111111111111111a","responseId":"chatcmpl-1","model":"gpt-4o-mini-2024-07-18","finishReason":"stop","usage":{"inputTokens":23,"outputTokens":8,"totalTokens":31},"durationMs":12,"attempts":1}"#;

    fn terminated(code: i32, message: &str) -> String {
        format!(
            "{{terminated: {{exitCode: {code}, reason: {}, message: {}, startedAt: \"2026-01-02T03:00:00Z\", finishedAt: \"2026-01-02T03:00:02Z\"}}}}",
            if code == 0 { "Completed" } else { "Error" },
            serde_json::to_string(message).unwrap()
        )
    }

    /// The status derived from a Job and its pods at `at`, with no `FailedMount` Events.
    fn derive_job(lj: &LlmJob, job: &Job, pods: &[Pod], at: Timestamp) -> LlmJobStatus {
        derive(
            lj,
            Observation::Job {
                job,
                pods,
                mount_failures: &[],
            },
            at,
        )
    }

    /// The status derived from a Job with one pod, now.
    fn derive_one(lj: &LlmJob, job: &Job, pod: Pod) -> LlmJobStatus {
        derive_job(lj, job, &[pod], now())
    }

    fn cond<'a>(s: &'a LlmJobStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn just_created_is_pending() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {suspend: false, template: {}}\n");
        let s = derive_job(&lj, &j, &[], now());
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.job_name.as_deref(), Some("haiku"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(
            s.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, RECONCILING).status, "True");
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(cond(&s, READY).observed_generation, Some(2));
        assert_eq!(s.conditions.len(), 5);
    }

    #[test]
    fn waiting_pod_is_named_in_the_message() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            "{waiting: {reason: ImagePullBackOff, message: back-off pulling}}",
            "Pending",
        );
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Pending));
        assert!(
            cond(&s, RECONCILING)
                .message
                .contains("pod haiku-abcde is waiting: ImagePullBackOff: back-off pulling"),
            "{:?}",
            cond(&s, RECONCILING)
        );
    }

    #[test]
    fn running() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            "{running: {startedAt: \"2026-01-02T03:00:01Z\"}}",
            "Running",
        );
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(
            s.start_time,
            Some(Time("2026-01-02T03:00:01Z".parse().unwrap()))
        );
        assert_eq!(cond(&s, RECONCILING).reason, "Running");
    }

    #[test]
    fn succeeded_with_the_result() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {template: {}}\nstatus: {succeeded: 1, conditions: [{type: SuccessCriteriaMet, status: \"True\"}, {type: Complete, status: \"True\"}]}\n",
        );
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(0, SUCCESS),
            "Succeeded",
        );
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Succeeded));
        let r = s.result.as_ref().unwrap();
        assert_eq!(r.response_id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(r.usage.as_ref().unwrap().total_tokens, Some(31));
        assert_eq!(s.attempts, Some(1));
        assert_eq!(
            s.trace_id.as_deref(),
            Some("1111111111111111111111111111111a"),
            "the result's trace id wins"
        );
        assert_eq!(
            s.completion_time,
            Some(Time("2026-01-02T03:00:02Z".parse().unwrap()))
        );
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, SUCCEEDED).status, "True");
        assert!(cond(&s, SUCCEEDED).message.contains("31 tokens"));
        assert_eq!(cond(&s, FAILED).status, "False");
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert_eq!(cond(&s, STALLED).status, "False");
    }

    #[test]
    fn a_succeeded_pod_is_the_runs_success_before_the_job_catches_up() {
        let active = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let done = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(0, SUCCESS),
            "Succeeded",
        );
        let s = derive_one(&llmjob(LLMJOB), &active, done.clone());
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(
            s.result.as_ref().unwrap().response_id.as_deref(),
            Some("chatcmpl-1")
        );
        assert_eq!(
            s.completion_time,
            Some(Time("2026-01-02T03:00:02Z".parse().unwrap())),
            "the runner's end, not the Job's"
        );
        assert_eq!(cond(&s, READY).status, "True");

        // The Job controller then lands on the same status (no second write) or, when the
        // deadline passed before it counted the pod, fails the Job: the run still succeeded.
        for job_status in [
            "{succeeded: 1, conditions: [{type: Complete, status: \"True\"}]}",
            "{failed: 1, conditions: [{type: Failed, status: \"True\", reason: DeadlineExceeded}]}",
        ] {
            let j = job_with(&format!("spec: {{template: {{}}}}\nstatus: {job_status}\n"));
            assert_eq!(derive_one(&llmjob(LLMJOB), &j, done.clone()), s);
        }

        // A pod that exited 0 without a valid result waits for the Job.
        let no_result = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(0, "not json"),
            "Succeeded",
        );
        let s = derive_one(&llmjob(LLMJOB), &active, no_result);
        assert_eq!(s.phase, Some(Phase::Running));
        assert!(s.result.is_none());
    }

    #[test]
    fn a_failed_attempts_result_is_kept_before_the_job_decides_and_after_it_is_gone() {
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let failure = r#"{"status":"failed","attempts":1,"error":{"type":"rate_limited","message":"slow down","httpStatus":429}}"#;
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(4, failure),
            "Failed",
        );
        // The Job may retry a failed attempt: the phase waits for its verdict, and without a TTL
        // the Job stays, so the result is copied when it finishes (one write less).
        let s = derive_one(&llmjob(LLMJOB), &j, p.clone());
        assert_eq!(s.phase, Some(Phase::Running));
        assert!(s.result.is_none(), "copied when the Job finishes");

        // With a TTL the Job may vanish right after finishing: copied as soon as the runner
        // finished, so that the outcome survives the Job.
        let lj = llmjob(&LLMJOB.replace(
            "prompt: hi,",
            "prompt: hi, run: {ttlSecondsAfterFinished: 0},",
        ));
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Running));
        assert!(s.result.is_some(), "copied as soon as the runner finished");

        let mut lj2 = lj.clone();
        lj2.status = Some(s);
        let s2 = derive(&lj2, Observation::JobGone { job_name: "haiku" }, later());
        assert_eq!(s2.phase, Some(Phase::Failed));
        assert_eq!(cond(&s2, FAILED).reason, "RateLimited");
    }

    #[test]
    fn failed_401_names_the_error_and_the_secret() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {template: {}}\nstatus: {failed: 1, conditions: [{type: Failed, status: \"True\", reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}]}\n",
        );
        let msg = r#"{"status":"failed","traceId":"2222222222222222222222222222222b","attempts":1,"error":{"type":"authentication","message":"Incorrect API key provided","httpStatus":401}}"#;
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(3, msg),
            "Failed",
        );
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Failed));
        let c = cond(&s, FAILED);
        assert_eq!(c.status, "True");
        assert_eq!(c.reason, "AuthenticationFailed");
        assert!(
            c.message.contains("Incorrect API key provided"),
            "{}",
            c.message
        );
        assert!(c.message.contains("HTTP 401"), "{}", c.message);
        assert!(c.message.contains("team-a/openai"), "{}", c.message);
        assert_eq!(cond(&s, STALLED).status, "True");
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, SUCCEEDED).status, "False");
        assert_eq!(
            s.trace_id.as_deref(),
            Some("2222222222222222222222222222222b")
        );
    }

    #[test]
    fn malformed_termination_message() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {template: {}}\nstatus: {failed: 1, conditions: [{type: Failed, status: \"True\", reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}]}\n",
        );
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(1, "panicked at src/main.rs:1"),
            "Failed",
        );
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Failed));
        assert!(s.result.is_none());
        let c = cond(&s, FAILED);
        assert_eq!(c.reason, "RunFailed");
        assert!(
            c.message.contains("exited with code 1 (internal error"),
            "{}",
            c.message
        );
        assert!(c.message.contains("not a valid result"), "{}", c.message);
        assert_eq!(
            s.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c"),
            "the launch trace id stays"
        );
    }

    #[test]
    fn a_runner_that_could_not_start_reports_the_runtimes_message() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {template: {}}\nstatus: {failed: 1, conditions: [{type: Failed, status: \"True\", reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}]}\n",
        );
        let cause = format!(
            "exec: \"/llmjob-runner\": permission denied{}",
            " x".repeat(400)
        );
        let state = terminated(128, &cause).replace("reason: Error", "reason: StartError");
        let p = runner_pod("haiku-abcde", "2026-01-02T03:00:00Z", &state, "Failed");
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Failed));
        let c = cond(&s, FAILED);
        assert!(
            c.message.contains(
                "StartError); the container runtime reported: exec: \"/llmjob-runner\": permission denied"
            ),
            "{}",
            c.message
        );
        assert!(!c.message.contains("not a valid result"), "{}", c.message);
        assert!(
            c.message.len() < 600,
            "the runtime's message is cut: {}",
            c.message
        );
    }

    #[test]
    fn succeeded_job_with_malformed_message_still_succeeds() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {template: {}}\nstatus: {conditions: [{type: Complete, status: \"True\"}]}\n",
        );
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &terminated(0, "{not json"),
            "Succeeded",
        );
        let s = derive_one(&lj, &j, p);
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert!(cond(&s, SUCCEEDED).message.contains("not a valid result"));
    }

    #[test]
    fn deadline_exceeded_without_result() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {activeDeadlineSeconds: 420, template: {}}\nstatus: {conditions: [{type: Failed, status: \"True\", reason: DeadlineExceeded, lastTransitionTime: \"2026-01-02T03:07:00Z\"}]}\n",
        );
        let s = derive_job(&lj, &j, &[], now());
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, FAILED).reason, "DeadlineExceeded");
        assert!(cond(&s, FAILED).message.contains("420"));
        assert_eq!(
            s.completion_time,
            Some(Time("2026-01-02T03:07:00Z".parse().unwrap()))
        );
    }

    #[test]
    fn the_latest_pod_wins() {
        let lj = llmjob(LLMJOB);
        let j = job_with(
            "spec: {template: {}}\nstatus: {conditions: [{type: Complete, status: \"True\"}]}\n",
        );
        let first = runner_pod(
            "haiku-1",
            "2026-01-02T03:00:00Z",
            &terminated(
                4,
                r#"{"status":"failed","attempts":4,"error":{"type":"rate_limited","message":"429"}}"#,
            ),
            "Failed",
        );
        let second = runner_pod(
            "haiku-2",
            "2026-01-02T03:01:00Z",
            &terminated(0, SUCCESS),
            "Succeeded",
        );
        let s = derive_job(&lj, &j, &[second, first], now());
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(s.attempts, Some(1));
    }

    #[test]
    fn suspended_and_queued() {
        let j = job_with("spec: {suspend: true, template: {}}\n");
        let s = derive_job(&llmjob(LLMJOB), &j, &[], now());
        assert_eq!(s.phase, Some(Phase::Suspended));
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert!(cond(&s, READY).message.contains("spec.suspend"));
        assert!(
            !cond(&s, READY).message.contains("billed"),
            "a run that never started costs nothing"
        );

        // Suspended after its pod started (the status holds the start time): the price is said.
        let mut started = llmjob(LLMJOB);
        started.status = Some(LlmJobStatus {
            phase: Some(Phase::Running),
            start_time: Some(Time(now())),
            ..Default::default()
        });
        let s = derive_job(&started, &j, &[], later());
        assert_eq!(s.phase, Some(Phase::Suspended));
        let message = &cond(&s, READY).message;
        assert!(message.ends_with(SUSPENDED_AFTER_START), "{message}");
        assert!(message.contains("may have been billed"), "{message}");

        let queued = llmjob(
            r#"
metadata: {name: haiku, namespace: team-a, uid: u-1, labels: {kueue.x-k8s.io/queue-name: q1}}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: openai}}}
"#,
        );
        let s = derive_job(&queued, &j, &[], now());
        assert_eq!(s.phase, Some(Phase::Suspended));
        assert!(cond(&s, READY).message.contains("Kueue queue q1"));

        let not_asked = llmjob(
            r#"
metadata: {name: haiku, namespace: team-a, uid: u-1}
spec: {prompt: hi, suspend: false, openai: {apiKeySecretRef: {name: openai}}}
"#,
        );
        let s = derive_job(&not_asked, &j, &[], now());
        assert_eq!(s.phase, Some(Phase::Suspended));
        assert!(
            cond(&s, READY).message.contains("another controller"),
            "{}",
            cond(&s, READY).message
        );
    }

    /// kstatus' verdict for a custom resource with the standard conditions (its generic rules:
    /// an old `observedGeneration` or `Reconciling=True` is InProgress, `Stalled=True` is
    /// Failed, anything else Current), which Flux's `wait: true` and `kubectl`-free GitOps waits
    /// use.
    fn kstatus(s: &LlmJobStatus, generation: Option<i64>) -> &'static str {
        let is_true = |t: &str| {
            s.conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        if s.observed_generation != generation || is_true(RECONCILING) {
            "InProgress"
        } else if is_true(STALLED) {
            "Failed"
        } else {
            "Current"
        }
    }

    /// A suspended or queued LlmJob is where its spec (or its queue) puts it: a GitOps wait ends
    /// (kstatus Current, Argo CD `Suspended` from the phase), while `Ready` keeps meaning "the
    /// run succeeded", so `kubectl wait --for=condition=Ready` still waits for the result (see
    /// docs/reliability.md). A running one is in progress.
    #[test]
    fn gitops_waits_end_while_suspended_or_queued_but_ready_means_succeeded() {
        let suspended_job = job_with("spec: {suspend: true, template: {}}\n");
        let queued = llmjob(
            r#"
metadata: {name: haiku, namespace: team-a, uid: u-1, generation: 2, labels: {kueue.x-k8s.io/queue-name: q1}}
spec: {prompt: hi, openai: {apiKeySecretRef: {name: openai}}}
"#,
        );
        for lj in [llmjob(LLMJOB), queued] {
            let s = derive_job(&lj, &suspended_job, &[], now());
            assert_eq!(s.phase, Some(Phase::Suspended));
            assert_eq!(kstatus(&s, lj.meta().generation), "Current");
            assert_eq!(cond(&s, STALLED).status, "False");
            assert_eq!(cond(&s, READY).status, "False");
            assert_eq!(cond(&s, READY).reason, "Suspended");
        }
        let running = job_with("status: {active: 1}\n");
        let lj = llmjob(LLMJOB);
        let s = derive_job(&lj, &running, &[], now());
        assert_eq!(kstatus(&s, lj.meta().generation), "InProgress");
    }

    #[test]
    fn blocked_by_a_job_conflict() {
        let lj = llmjob(LLMJOB);
        let msg = "Job team-a/haiku exists and is not owned by this LlmJob";
        let s = derive(
            &lj,
            Observation::Blocked {
                reason: Reason::JobConflict,
                message: msg,
            },
            now(),
        );
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(cond(&s, STALLED).status, "True");
        assert_eq!(cond(&s, STALLED).reason, "JobConflict");
        assert_eq!(cond(&s, STALLED).message, msg);
        assert_eq!(cond(&s, READY).reason, "JobConflict");
        assert!(s.job_name.is_none());
    }

    /// A pod whose runner waits in `CreateContainerConfigError` with the kubelet's `message`.
    fn config_error_pod(message: &str) -> Pod {
        runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            &format!(
                "{{waiting: {{reason: CreateContainerConfigError, message: {}}}}}",
                serde_json::to_string(message).unwrap()
            ),
            "Pending",
        )
    }

    #[test]
    fn the_kubelets_missing_secret_is_secret_not_found_until_the_pod_runs() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let s = derive_one(&lj, &j, config_error_pod("secret \"openai\" not found"));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.job_name.as_deref(), Some("haiku"));
        let stalled = cond(&s, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "SecretNotFound")
        );
        assert!(
            stalled.message.contains("Secret team-a/openai"),
            "{stalled:?}"
        );
        assert!(
            stalled
                .message
                .contains("kubectl create secret generic openai -n team-a --from-literal=api-key="),
            "{stalled:?}"
        );
        assert!(
            stalled.message.contains("pod haiku-abcde starts"),
            "{stalled:?}"
        );
        assert_eq!(pod_problem(&s), Some(Reason::SecretNotFound));

        // The Secret appeared: the kubelet started the container, the run goes on.
        assert_runs_once_started(lj, s, &j, "haiku-abcde");
    }

    /// Once the missing Secret appeared and the kubelet started pod `pod_name` of `job`, the run
    /// of `lj` (whose status was `stalled`) goes on: `Running`, no longer `Stalled`.
    fn assert_runs_once_started(lj: LlmJob, stalled: LlmJobStatus, job: &Job, pod_name: &str) {
        let mut lj = lj;
        lj.status = Some(stalled);
        let running = runner_pod(
            pod_name,
            "2026-01-02T03:00:00Z",
            "{running: {startedAt: \"2026-01-02T03:01:00Z\"}}",
            "Running",
        );
        let s = derive_one(&lj, job, running);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(pod_problem(&s), None);
    }

    #[test]
    fn the_kubelets_missing_key_is_secret_key_not_found_without_other_keys() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let s = derive_one(
            &lj,
            &j,
            config_error_pod("couldn't find key api-key in Secret team-a/openai"),
        );
        assert_eq!(s.phase, Some(Phase::Pending));
        let stalled = cond(&s, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "SecretKeyNotFound")
        );
        assert!(
            stalled
                .message
                .contains("Secret team-a/openai has no key \"api-key\""),
            "{stalled:?}"
        );
        assert!(
            stalled.message.contains("apiKeySecretRef.key"),
            "{stalled:?}"
        );
        assert!(!stalled.message.contains("its keys"), "{stalled:?}");
        assert_eq!(pod_problem(&s), Some(Reason::SecretKeyNotFound));
    }

    #[test]
    fn a_secret_of_the_pod_env_is_named_as_such() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let s = derive_one(&lj, &j, config_error_pod("secret \"extra\" not found"));
        let stalled = cond(&s, STALLED);
        assert_eq!(stalled.reason, "SecretNotFound");
        assert!(
            stalled
                .message
                .contains("Secret team-a/extra (named in spec.pod.env)"),
            "{stalled:?}"
        );
        let s = derive_one(
            &lj,
            &j,
            config_error_pod("couldn't find key k in Secret team-a/openai"),
        );
        let stalled = cond(&s, STALLED);
        assert_eq!(stalled.reason, "SecretKeyNotFound");
        assert!(
            stalled.message.contains("(named in spec.pod.env)"),
            "{stalled:?}"
        );
    }

    #[test]
    fn a_deadline_passed_while_waiting_for_the_secret_names_it() {
        let mut lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        lj.status = Some(derive_one(
            &lj,
            &j,
            config_error_pod("secret \"openai\" not found"),
        ));
        let failed = job_with(
            "spec: {template: {}, activeDeadlineSeconds: 720}\nstatus: {failed: 1, conditions: [{type: Failed, status: \"True\", reason: DeadlineExceeded}]}\n",
        );
        let s = derive_job(&lj, &failed, &[], now());
        assert_eq!(s.phase, Some(Phase::Failed));
        let f = cond(&s, FAILED);
        assert_eq!(f.reason, "DeadlineExceeded");
        assert!(
            f.message
                .contains("the runner never started: Secret team-a/openai"),
            "{f:?}"
        );
        assert!(f.message.ends_with("(SecretNotFound)"), "{f:?}");
    }

    #[test]
    fn other_config_errors_stay_a_waiting_pod() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let s = derive_one(&lj, &j, config_error_pod("configmap \"cfg\" not found"));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(cond(&s, STALLED).status, "False");
        assert!(
            cond(&s, RECONCILING)
                .message
                .contains("waiting: CreateContainerConfigError: configmap \"cfg\" not found")
        );
        assert_eq!(pod_problem(&s), None);
    }

    /// A batch LlmJob whose s3 output names the credentials Secret `s3`.
    const S3_BATCH: &str = r#"
metadata: {name: haiku, namespace: team-a, uid: u-1, generation: 1}
spec:
  openai: {apiKeySecretRef: {name: openai}}
  batch: {items: [{prompt: a}, {prompt: b}]}
  output: {url: "s3://results/run", credentialsSecretRef: {name: s3}}
"#;

    /// The kubelet's `FailedMount` message for volume `volume` whose Secret `name` is missing.
    fn mount_failure(volume: &str, name: &str) -> String {
        format!("MountVolume.SetUp failed for volume \"{volume}\" : secret \"{name}\" not found")
    }

    /// A pod whose runner waits in `ContainerCreating` since 03:00:00.
    fn creating() -> Pod {
        runner_pod(
            "haiku-0-abcde",
            "2026-01-02T03:00:00Z",
            "{waiting: {reason: ContainerCreating}}",
            "Pending",
        )
    }

    #[test]
    fn the_latest_pod_tells_how_far_the_start_is() {
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        let creating_since = |secs| PodStart::Creating {
            pod: "haiku-0-abcde".to_owned(),
            age: std::time::Duration::from_secs(secs),
        };
        assert_eq!(
            pod_start(&[creating()], at("2026-01-02T03:00:25Z")),
            creating_since(25)
        );
        // A clock behind the API server's: no age, not past the grace.
        assert_eq!(
            pod_start(&[creating()], at("2026-01-02T02:59:00Z")),
            creating_since(0)
        );
        let running = runner_pod(
            "haiku-0-fghij",
            "2026-01-02T03:01:00Z",
            "{running: {startedAt: \"2026-01-02T03:01:05Z\"}}",
            "Running",
        );
        let now = at("2026-01-02T03:05:00Z");
        // The latest pod decides: an older pod still creating is not read about.
        assert_eq!(
            pod_start(&[creating(), running.clone()], now),
            PodStart::Past
        );
        assert_eq!(pod_start(&[running], now), PodStart::Past);
        assert_eq!(
            pod_start(&[config_error_pod("secret \"openai\" not found")], now),
            PodStart::Past
        );
        // No pod yet, or one the kubelet has not reported on.
        assert_eq!(pod_start(&[], now), PodStart::Unseen);
        let created = pod("metadata: {name: p, namespace: team-a}\nstatus: {phase: Pending}");
        assert_eq!(pod_start(&[created], now), PodStart::Unseen);
        let failed = pod("metadata: {name: p, namespace: team-a}\nstatus: {phase: Failed}");
        assert_eq!(pod_start(&[failed], now), PodStart::Past);
    }

    #[test]
    fn a_missing_output_credentials_secret_is_secret_not_found_until_the_pod_runs() {
        let lj = llmjob(S3_BATCH);
        let j = job_with("spec: {completions: 1, template: {}}\nstatus: {active: 1}\n");
        let failures = [
            // The latest first: the kubelet's timeout says nothing about the Secret.
            "Unable to attach or mount volumes: unmounted volumes=[output-credentials], \
             unattached volumes=[]: timed out waiting for the condition"
                .to_owned(),
            mount_failure("output-credentials", "s3"),
        ];
        let s = derive(
            &lj,
            Observation::Job {
                job: &j,
                pods: &[creating()],
                mount_failures: &failures,
            },
            now(),
        );
        assert_eq!(s.phase, Some(Phase::Pending));
        let stalled = cond(&s, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "SecretNotFound")
        );
        assert!(
            stalled.message.starts_with(
                "Secret team-a/s3 (spec.output.credentialsSecretRef) not found: create it"
            ),
            "{stalled:?}"
        );
        assert!(
            stalled
                .message
                .contains("pod haiku-0-abcde starts as soon as it exists"),
            "{stalled:?}"
        );
        assert_eq!(pod_problem(&s), Some(Reason::SecretNotFound));

        // Without the Events (not read yet, or read before the kubelet wrote one), the pod is
        // only being created.
        let waiting = derive_one(&lj, &j, creating());
        assert_eq!(cond(&waiting, STALLED).status, "False");
        assert!(
            cond(&waiting, RECONCILING)
                .message
                .contains("waiting for its pod to start"),
            "{:?}",
            cond(&waiting, RECONCILING)
        );

        // The Secret appeared: the kubelet mounted it and started the runner.
        assert_runs_once_started(lj, s, &j, "haiku-0-abcde");
    }

    #[test]
    fn another_volumes_missing_secret_names_the_volume() {
        let lj = llmjob(S3_BATCH);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let s = derive(
            &lj,
            Observation::Job {
                job: &j,
                pods: &[creating()],
                mount_failures: &[mount_failure("certs", "ca")],
            },
            now(),
        );
        let stalled = cond(&s, STALLED);
        assert_eq!(stalled.reason, "SecretNotFound");
        assert!(
            stalled
                .message
                .starts_with("Secret team-a/ca (mounted as volume \"certs\") not found"),
            "{stalled:?}"
        );
    }

    #[test]
    fn a_missing_api_key_secret_outranks_a_mount_failure() {
        let lj = llmjob(S3_BATCH);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let s = derive(
            &lj,
            Observation::Job {
                job: &j,
                pods: &[config_error_pod("secret \"openai\" not found")],
                mount_failures: &[mount_failure("output-credentials", "s3")],
            },
            now(),
        );
        assert!(
            cond(&s, STALLED)
                .message
                .contains("(spec.openai.apiKeySecretRef)"),
            "{:?}",
            cond(&s, STALLED)
        );
    }

    #[test]
    fn kubelet_messages_parse() {
        assert_eq!(
            missing_secret("secret \"a-b\" not found"),
            Some(MissingSecret::Secret { name: "a-b" })
        );
        assert_eq!(
            missing_secret("couldn't find key k.1 in Secret ns/a-b"),
            Some(MissingSecret::Key {
                key: "k.1",
                name: "a-b"
            })
        );
        assert_eq!(
            missing_secret("couldn't find key k in ConfigMap ns/a"),
            None
        );
        assert_eq!(missing_secret("secret \"a\" is forbidden"), None);
        assert_eq!(
            missing_volume_secret(
                "MountVolume.SetUp failed for volume \"output-credentials\" : secret \"s-3\" not found"
            ),
            Some(("output-credentials", "s-3"))
        );
        // The secret manager's error before the pod is registered, and other volume errors.
        assert_eq!(
            missing_volume_secret(
                "MountVolume.SetUp failed for volume \"v\" : object \"ns\"/\"s\" not registered"
            ),
            None
        );
        assert_eq!(
            missing_volume_secret(
                "MountVolume.SetUp failed for volume \"v\" : configmap \"c\" not found"
            ),
            None
        );
    }

    #[test]
    fn the_trace_link_follows_the_trace_id() {
        let template = TraceUrlTemplate::parse("http://jaeger:16686/trace/{traceId}").unwrap();
        let mut s = LlmJobStatus::default();
        link_trace(&mut s, Some(&template));
        assert_eq!(s.trace_url, None, "no trace id yet, no link");
        s.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
        link_trace(&mut s, None);
        assert_eq!(s.trace_url, None, "no template, no link");
        link_trace(&mut s, Some(&template));
        assert_eq!(
            s.trace_url.as_deref(),
            Some("http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c")
        );
        link_trace(&mut s, None);
        assert!(s.trace_url.is_some(), "a link written earlier stays");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["traceURL"],
            "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn job_gone_without_result_fails_and_never_reruns() {
        let mut lj = llmjob(LLMJOB);
        lj.status = Some(LlmJobStatus {
            phase: Some(Phase::Running),
            job_name: Some("haiku".into()),
            ..LlmJobStatus::default()
        });
        let s = derive(&lj, Observation::JobGone { job_name: "haiku" }, now());
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, FAILED).reason, "JobDeleted");
        assert_eq!(s.completion_time, Some(Time(now())));
    }

    #[test]
    fn transition_times_move_only_on_status_changes() {
        let lj = llmjob(LLMJOB);
        let j = job_with("spec: {template: {}}\nstatus: {active: 1}\n");
        let first = derive_job(&lj, &j, &[], now());
        let mut lj2 = lj.clone();
        lj2.status = Some(first.clone());
        // Same state later: nothing moves, so the derived status is equal (no write).
        let again = derive_job(&lj2, &j, &[], later());
        assert_eq!(again, first);
        // Running later: reason and message change, status of Reconciling stays True.
        let p = runner_pod(
            "haiku-abcde",
            "2026-01-02T03:00:00Z",
            "{running: {}}",
            "Running",
        );
        let running = derive_job(&lj2, &j, &[p], later());
        assert_eq!(
            cond(&running, RECONCILING).last_transition_time,
            Time(now())
        );
        assert_eq!(cond(&running, RECONCILING).reason, "Running");
        // Succeeded later: Ready flips, so its time moves.
        let mut lj3 = lj.clone();
        lj3.status = Some(running);
        let done = job_with(
            "spec: {template: {}}\nstatus: {conditions: [{type: Complete, status: \"True\"}]}\n",
        );
        let s = derive_job(&lj3, &done, &[], later());
        assert_eq!(cond(&s, READY).last_transition_time, Time(later()));
        assert_eq!(cond(&s, STALLED).last_transition_time, Time(now()));
    }

    #[test]
    fn an_unreadable_llmjob_is_stalled_once_per_generation_and_a_finished_one_keeps_its_outcome() {
        let message = "the operator cannot read this LlmJob: spec.run.maxAttempts: invalid type";
        let fresh = LlmJobStatus::default();
        let s = unreadable(&fresh, Some(3), message, now());
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.observed_generation, Some(3));
        let stalled = cond(&s, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(stalled.message, message);
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert!(reports_unreadable(&s, Some(3)));
        assert!(
            !reports_unreadable(&s, Some(4)),
            "a new generation is looked at"
        );
        assert!(!reports_unreadable(&fresh, Some(3)));
        assert_eq!(
            unreadable(&s, Some(3), message, later()),
            s,
            "the same problem later changes nothing (no new transition time)"
        );
        let done = LlmJobStatus {
            phase: Some(Phase::Succeeded),
            observed_generation: Some(2),
            ..Default::default()
        };
        let s = unreadable(&done, Some(3), message, now());
        assert_eq!(s.phase, Some(Phase::Succeeded), "the outcome stays");
        assert!(s.conditions.is_empty());
        assert_eq!(s.observed_generation, Some(3));
        assert!(reports_unreadable(&s, Some(3)));
    }

    #[test]
    fn error_reasons() {
        assert_eq!(error_reason("authentication"), "AuthenticationFailed");
        assert_eq!(error_reason("503"), "ServerError");
        assert_eq!(error_reason("weird"), "RunFailed");
    }

    const BATCH: &str = r#"
metadata: {name: haiku, namespace: team-a, uid: u-1, generation: 1}
spec:
  openai: {apiKeySecretRef: {name: openai}}
  batch:
    items: [{prompt: a}, {prompt: b}, {prompt: c}, {prompt: d}, {prompt: e}]
    itemsPerPod: 2
    maxFailedItems: 1
  output: {url: "s3://results/run"}
"#;

    /// The termination message of shard `index` of a batch.
    fn shard_line(index: u32, succeeded: u64, failed: u64, tokens: u64) -> String {
        let errors: Vec<String> = (0..failed)
            .map(|i| {
                format!(
                    r#"{{"id":"{index}-{i}","error":{{"type":"rate_limited","message":"429"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"status":"{}","traceId":"1111111111111111111111111111111a","usage":{{"inputTokens":{tokens},"outputTokens":1,"totalTokens":{}}},"attempts":{},"durationMs":{},"shard":{{"index":{index},"succeeded":{succeeded},"failed":{failed},"output":"s3://results/run/part-{index:05}.jsonl","itemErrors":[{}]}}}}"#,
            if failed > 1 { "failed" } else { "succeeded" },
            tokens + 1,
            succeeded + failed,
            100 * u64::from(index + 1),
            errors.join(",")
        )
    }

    fn shard_pod(index: u32, created: &str, line: &str, code: i32) -> Pod {
        let mut p = runner_pod(
            &format!("haiku-{index}-{created}"),
            created,
            &terminated(code, line),
            if code == 0 { "Succeeded" } else { "Failed" },
        );
        p.metadata.annotations = Some(BTreeMap::from([(
            COMPLETION_INDEX_ANNOTATION.to_owned(),
            index.to_string(),
        )]));
        p
    }

    #[test]
    fn a_batch_runs_until_every_shard_reported_and_sums_them() {
        let lj = llmjob(BATCH);
        let running = job_with(
            "spec: {completions: 3, parallelism: 3, template: {}}\nstatus: {active: 2, succeeded: 1}\n",
        );
        let first = shard_pod(0, "2026-01-02T03:00:00Z", &shard_line(0, 2, 0, 10), 0);
        let s = derive_one(&lj, &running, first.clone());
        assert_eq!(s.phase, Some(Phase::Running), "one shard is not the run");
        assert!(s.result.is_none());
        let b = s.batch.as_ref().unwrap();
        assert_eq!(
            (b.items, b.succeeded, b.failed, b.shards_done, b.shards),
            (Some(5), 2, 0, 1, Some(3))
        );
        assert_eq!(b.output.as_deref(), Some("s3://results/run"));

        let complete = job_with(
            "spec: {completions: 3, parallelism: 3, template: {}}\nstatus: {succeeded: 3, conditions: [{type: SuccessCriteriaMet, status: \"True\"}, {type: Complete, status: \"True\"}]}\n",
        );
        let pods = [
            first,
            // Shard 1 was retried: the later pod's result counts.
            shard_pod(1, "2026-01-02T03:00:00Z", &shard_line(1, 0, 2, 5), 1),
            shard_pod(1, "2026-01-02T03:00:05Z", &shard_line(1, 1, 1, 7), 0),
            shard_pod(2, "2026-01-02T03:00:00Z", &shard_line(2, 1, 0, 3), 0),
        ];
        let s = derive_job(&lj, &complete, &pods, now());
        assert_eq!(
            s.phase,
            Some(Phase::Succeeded),
            "1 failed item is within the budget"
        );
        let b = s.batch.as_ref().unwrap();
        assert_eq!((b.succeeded, b.failed, b.shards_done), (4, 1, 3));
        assert_eq!(b.item_errors.len(), 1);
        assert_eq!(b.item_errors[0].id, "1-0");
        let r = s.result.as_ref().unwrap();
        let usage = r.usage.as_ref().unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (Some(20), Some(3), Some(23))
        );
        assert_eq!(r.attempts, Some(5));
        assert_eq!(s.attempts, Some(5));
        assert_eq!(r.duration_ms, Some(300));
        assert_eq!(
            s.trace_id.as_deref(),
            Some("1111111111111111111111111111111a")
        );
        assert!(
            cond(&s, SUCCEEDED)
                .message
                .contains("4 items succeeded, 1 failed"),
            "{:?}",
            cond(&s, SUCCEEDED)
        );
    }

    #[test]
    fn a_batch_over_its_failure_budget_fails_with_the_first_item_errors() {
        let lj = llmjob(BATCH);
        let complete = job_with(
            "spec: {completions: 3, template: {}}\nstatus: {succeeded: 3, conditions: [{type: Complete, status: \"True\"}]}\n",
        );
        // Each shard within the budget alone, over it together.
        let pods = [
            shard_pod(0, "2026-01-02T03:00:00Z", &shard_line(0, 1, 1, 1), 0),
            shard_pod(1, "2026-01-02T03:00:00Z", &shard_line(1, 1, 1, 1), 0),
            shard_pod(2, "2026-01-02T03:00:00Z", &shard_line(2, 1, 0, 1), 0),
        ];
        let s = derive_job(&lj, &complete, &pods, now());
        assert_eq!(s.phase, Some(Phase::Failed));
        let failed = cond(&s, FAILED);
        assert!(
            failed
                .message
                .contains("2 items failed, more than spec.batch.maxFailedItems (1)")
                && failed.message.contains("first: item 0-0: rate_limited"),
            "{failed:?}"
        );
        assert_eq!(s.batch.as_ref().unwrap().item_errors.len(), 2);
        assert_eq!(
            s.result.as_ref().unwrap().error.as_ref().unwrap().kind,
            TOO_MANY_FAILED_ITEMS
        );
    }

    #[test]
    fn a_batch_lists_at_most_five_item_errors() {
        let lj = llmjob(&BATCH.replace("maxFailedItems: 1", "maxFailedItems: 100"));
        let failed_job = job_with(
            "spec: {completions: 2, template: {}}\nstatus: {failed: 1, conditions: [{type: Failed, status: \"True\", reason: PodFailurePolicy}]}\n",
        );
        let pods = [
            shard_pod(0, "2026-01-02T03:00:00Z", &shard_line(0, 0, 4, 1), 6),
            shard_pod(1, "2026-01-02T03:00:00Z", &shard_line(1, 0, 4, 1), 6),
        ];
        let s = derive_job(&lj, &failed_job, &pods, now());
        assert_eq!(s.phase, Some(Phase::Failed), "the Job failed");
        let b = s.batch.as_ref().unwrap();
        assert_eq!(b.failed, 8);
        let ids: Vec<_> = b.item_errors.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["0-0", "0-1", "0-2", "0-3", "1-0"]);
    }
}
