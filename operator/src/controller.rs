//! The controller: kube-rs `Controller`s that watch LlmJobs (and their Jobs and the Jobs' pods)
//! and the reconcile that ties the steps together. It never reads a Secret: a missing API-key
//! Secret or key is what the kubelet reports in the runner pod's waiting state.
//!
//! One reconcile, for one LlmJob as the watch cache holds it (its Job and pods from the scope's
//! watch caches too; what is read fresh from the API server, and when, is in [`crate::fetch`]):
//! 0. an LlmJob the operator's types cannot read (stored around the CRD's schema, see
//!    [`WatchedLlmJob`]) → `Stalled` with reason `InvalidSpec` naming the field, written as a
//!    merge patch, one Warning event; every other LlmJob goes on ([`reconcile_unreadable`]);
//! 1. finished (`Succeeded`/`Failed`): nothing runs again; only `observedGeneration` follows;
//! 2. [`validate`](crate::validate) fails → `Stalled` with reason `InvalidSpec`, a Warning event;
//!    before a launch, the tenant policy ([`validate::permitted`], with the namespace's labels
//!    when it matters) refuses → `Stalled` with reason `NotPermitted`, a Warning event;
//!
//! then one of three paths:
//!
//! 3. a Job exists ([`Reconciler::with_job`]): owned by this LlmJob? (else `JobConflict`),
//!    `spec.suspend` follows the LlmJob (unless a Kueue queue owns it), status derived from the
//!    Job and its pods;
//! 4. no Job yet ([`Reconciler::without_job`]): the Job named in the status is gone → `Failed`
//!    (`JobDeleted`), never a second run; else the launch;
//! 5. launch ([`Reconciler::launch`]): the launch span starts, the Job is created by server-side
//!    apply with `TRACEPARENT` = the launch span, and the status follows. A missing API-key
//!    Secret or key leaves the pod waiting (`CreateContainerConfigError`); the status says
//!    `SecretNotFound`/`SecretKeyNotFound` until the kubelet starts the pod (see
//!    [`status::secret_problem`]). A missing `spec.output.credentialsSecretRef` Secret (a
//!    volume) leaves the pod in `ContainerCreating`; the kubelet says why only in a
//!    `FailedMount` Event on the pod, which the reconcile reads once the pod has waited
//!    [`status::MOUNT_GRACE`] (never for a pod that starts), and the status says
//!    `SecretNotFound` the same way.
//!
//! A problem the LlmJob waits on is a [`Blocked`], a failed reconcile an [`Error`]; both name
//! their category as an [`events::Reason`]. The status is written only when it changed, and only
//! a new `metadata.generation` of an LlmJob triggers a reconcile (the operator is the only writer
//! of the status, so its own writes need none); Job and pod events do the rest. Requeue
//! decisions are explicit: a finished LlmJob or an invalid spec waits for a change; a blocked
//! LlmJob that no watch event can wake (a Job create the API server rejected, a conflicting Job
//! without the operator's label) is looked at again after a backoff with jitter
//! ([`blocked_retry_delay`]); one that mounts a Secret (`spec.output.credentialsSecretRef`) is
//! looked at every [`MOUNT_RECHECK`] (or when [`status::MOUNT_GRACE`] ends) until its pod
//! starts, as no pod event tells a pod stuck in `ContainerCreating`; an unfinished
//! one is re-checked every [`RESYNC`] as a safety net;
//! failed reconciles retry with backoff and jitter, never before the API server's `Retry-After`
//! ([`error_retry_delay`]), and a Warning event names an error that persists
//! ([`PERSISTENT_FAILURES`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self as cache, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use llmjob_crds::v1alpha1::condition::{FAILED, READY, STALLED};
use llmjob_crds::v1alpha1::{LlmJob, LlmJobStatus, Phase, TRACEPARENT_ANNOTATION};
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::watch;
use tracing::Instrument;

use crate::build_job::{self, BuildError};
use crate::cache::{CachedJob, CachedPod};
use crate::config::{Config, JobDefaults};
use crate::contract::{self, MANAGED_BY, MANAGED_BY_LABEL};
use crate::events::Reason;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::own_writes::OwnWrites;
use crate::status::{self, Observation};
use crate::telemetry::{self, LaunchInfo, LaunchSpan};
use crate::trace_url::TraceUrlTemplate;
use crate::validate::{self, Input, Items, Refusal, TenantPolicy, Validated, ValidationError};
use crate::{FIELD_MANAGER, apply, events, fetch, input, triggers};

/// How often an unfinished LlmJob is re-checked even without a watch event.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often an LlmJob that mounts a Secret (`spec.output.credentialsSecretRef`) is looked at
/// again while its pod has not started (no pod yet, or in `ContainerCreating` past
/// [`status::MOUNT_GRACE`]): a missing volume Secret is reported within about
/// `MOUNT_GRACE + MOUNT_RECHECK` of the pod's creation.
pub const MOUNT_RECHECK: Duration = Duration::from_secs(20);
/// How soon a reconcile is repeated when a fresh read of the LlmJob still leaves it undecided.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(10);
/// The wait before retrying a reconcile that failed once (halved at most by the jitter).
pub const ERROR_RETRY_MIN: Duration = Duration::from_secs(2);
/// The longest wait between retries of a reconcile that keeps failing.
pub const ERROR_RETRY_MAX: Duration = Duration::from_secs(120);
/// After this many failed reconciles of one LlmJob in a row, a Warning event (reason: the
/// error's category) says what fails: the error persists, it is no blip.
pub const PERSISTENT_FAILURES: u32 = 3;
/// The shortest wait before looking again at a blocked LlmJob that no watch event will wake (a
/// Job create the API server rejected, a conflicting Job the operator does not watch).
pub const BLOCKED_RETRY_MIN: Duration = Duration::from_secs(2);
/// The longest such wait.
pub const BLOCKED_RETRY_MAX: Duration = Duration::from_secs(300);
/// How often the controllers check, once their caches are synced, that the API server answers
/// (`GET /version`); `/readyz` follows the last check.
pub const API_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long one such check may take.
const API_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest wait between two attempts of a watch that fails (the API server is gone): the
/// watches come back within about this long (twice it at most, with the jitter) after the API
/// server does. kube-runtime's default, client-go's, doubles up to 30 s (plus jitter); with the
/// controller applying it a second time to its triggers ([`NoBackoff`] now), the operator stayed
/// idle for 30 s to 80 s after a 10 s outage (docs/reliability.md).
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the LlmJob-by-phase gauge is recomputed from the caches.
const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// An LlmJob as the LlmJob watch reads it: the typed object, or, for an object stored around the
/// CRD's schema (through a served version without validation, a schema change, etcd), the
/// deserialization error and the object's metadata. kube-rs' watcher deserializes a list page as
/// a whole: read as plain [`LlmJob`]s, one such object fails every list and watch of the scope,
/// and no LlmJob of it reconciles again (the store never becomes ready, the operator never
/// ready). Through this guard it is one reconcile that reports it.
pub type WatchedLlmJob = DeserializeGuard<LlmJob>;

/// A reconcile failed; it is retried after [`error_retry_delay`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object could not be read.
    #[error("reading {what} failed: {source}")]
    Read {
        /// What was read.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The run's input ConfigMap could not be written.
    #[error("writing the input ConfigMap {namespace}/{name} failed: {source}")]
    Input {
        /// Namespace.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Job could not be created.
    #[error("creating Job {namespace}/{name} failed: {source}")]
    CreateJob {
        /// Namespace.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// `spec.suspend` of the Job could not be changed.
    #[error("setting spec.suspend={suspend} on Job {namespace}/{name} failed: {source}")]
    Suspend {
        /// Namespace.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// The wanted value.
        suspend: bool,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// `spec.ttlSecondsAfterFinished` of the Job could not be set.
    #[error(
        "setting spec.ttlSecondsAfterFinished={ttl} on Job {namespace}/{name} failed: {source}"
    )]
    Ttl {
        /// Namespace.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// The wanted value.
        ttl: i32,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("writing the status of LlmJob {namespace}/{name} failed: {source}")]
    Status {
        /// Namespace.
        namespace: String,
        /// Name of the LlmJob.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Whether the status write failed because the LlmJob changed since it was read.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Status { source: kube::Error::Api(s), .. } if s.is_conflict())
    }

    /// How long the API server asked the operator to wait (`429`/`503` with `Retry-After`,
    /// which kube-rs reads into the `Status`' `details.retryAfterSeconds`).
    pub fn retry_after(&self) -> Option<Duration> {
        let source = match self {
            Error::Read { source, .. }
            | Error::Input { source, .. }
            | Error::CreateJob { source, .. }
            | Error::Suspend { source, .. }
            | Error::Ttl { source, .. }
            | Error::Status { source, .. } => source,
        };
        match source {
            kube::Error::Api(status) => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            _ => None,
        }
    }

    /// The error's category: the label of the reconcile-error metric.
    pub fn category(&self) -> Reason {
        match self {
            Error::Read { .. } => Reason::ReadFailed,
            Error::CreateJob { .. } | Error::Input { .. } => Reason::JobCreateFailed,
            Error::Suspend { .. } => Reason::SuspendFailed,
            Error::Ttl { .. } => Reason::TtlUpdateFailed,
            Error::Status { .. } => Reason::StatusWriteFailed,
        }
    }
}

/// Why an LlmJob cannot progress until something changes. Not a reconcile error: the status says
/// `Stalled` with the problem's [`reason`](Blocked::reason), one Warning event under the same
/// reason names it, and the reconcile waits.
#[derive(Debug, thiserror::Error)]
pub enum Blocked {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No Job can be built from the spec.
    #[error(transparent)]
    Build(BuildError),
    /// The tenant policy refuses the spec in this namespace.
    #[error(transparent)]
    NotPermitted(Refusal),
    /// The ConfigMap key of `spec.batch.itemsFrom` is missing or holds no item; looked at again
    /// with backoff (the operator does not watch ConfigMaps).
    #[error(
        "spec.batch.itemsFrom: ConfigMap {name} {problem}: create it with one JSON item per line          under key {key} (looked at again with backoff)"
    )]
    ItemsMissing {
        /// The ConfigMap.
        name: String,
        /// Its key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A Job of the LlmJob's Job name exists and is not owned by the LlmJob.
    #[error(
        "Job {namespace}/{name} exists and is not owned by this LlmJob: delete that Job, or create \
         the LlmJob under another name"
    )]
    JobConflict {
        /// Namespace.
        namespace: String,
        /// Name of the Job.
        name: String,
    },
    /// The API server refused to create the Job (a quota, an admission webhook or policy, an
    /// invalid object); the create is retried with backoff.
    #[error(
        "the API server rejected Job {namespace}/{name}: {message} (retried with backoff until it \
         is accepted)"
    )]
    JobRejected {
        /// Namespace.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// The API server's message.
        message: String,
    },
}

impl Blocked {
    /// The problem's category: the reason of the `Stalled` condition and of the event.
    pub fn reason(&self) -> Reason {
        match self {
            Blocked::Invalid(_) | Blocked::Build(_) | Blocked::ItemsMissing { .. } => {
                Reason::InvalidSpec
            }
            Blocked::JobConflict { .. } => Reason::JobConflict,
            Blocked::JobRejected { .. } => Reason::JobCreateFailed,
            Blocked::NotPermitted(_) => Reason::NotPermitted,
        }
    }

    /// When to look again, the problem having lasted `elapsed`: an invalid spec waits for a new
    /// one; a conflicting Job (which the operator does not watch: it lacks the operator's label)
    /// and a rejected create (a quota or a policy may change without any event the operator
    /// sees) are looked at again after [`blocked_retry_delay`]; a refusal of the tenant policy
    /// every [`RESYNC`], since a namespace label that allows it triggers no reconcile.
    fn requeue(&self, elapsed: Duration) -> Action {
        match self {
            Blocked::Invalid(_) | Blocked::Build(_) => Action::await_change(),
            Blocked::NotPermitted(_) => Action::requeue(RESYNC),
            Blocked::JobConflict { .. }
            | Blocked::JobRejected { .. }
            | Blocked::ItemsMissing { .. } => {
                Action::requeue(blocked_retry_delay(elapsed, jitter()))
            }
        }
    }
}

/// How long to wait before looking again at an LlmJob blocked for `elapsed` (since its `Stalled`
/// condition turned true): twice that, within [`BLOCKED_RETRY_MIN`] and [`BLOCKED_RETRY_MAX`],
/// scaled by `jitter` (in `[0, 1)`) to between half and all of it, so that the waits at least
/// double and LlmJobs blocked together (one quota) do not retry together.
pub fn blocked_retry_delay(elapsed: Duration, jitter: f64) -> Duration {
    let base = elapsed
        .saturating_mul(2)
        .clamp(BLOCKED_RETRY_MIN, BLOCKED_RETRY_MAX);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// How long to wait before retrying a reconcile that failed `failures` times in a row: twice as
/// long after each failure, from [`ERROR_RETRY_MIN`] to [`ERROR_RETRY_MAX`], scaled by `jitter`
/// (in `[0, 1)`) to between half and all of it, so that LlmJobs failing together (one API
/// outage) do not retry together; and never sooner than the API server's `retry_after`.
pub fn error_retry_delay(failures: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = ERROR_RETRY_MIN
        .saturating_mul(1 << doublings)
        .min(ERROR_RETRY_MAX);
    let delay = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    retry_after.map_or(delay, |server| delay.max(server))
}

/// How far the pod of an LlmJob that mounts a Secret (`spec.output.credentialsSecretRef`) is from
/// starting ([`status::pod_start`]); [`status::PodStart::Past`] for any other LlmJob, whose
/// reconciles read no Event and keep their requeue.
fn mount_wait(llmjob: &LlmJob, pods: &[Pod]) -> status::PodStart {
    let mounts_secret = llmjob
        .spec
        .output
        .as_ref()
        .is_some_and(|o| o.credentials_secret_ref.is_some());
    if mounts_secret {
        status::pod_start(pods, Timestamp::now())
    } else {
        status::PodStart::Past
    }
}

/// `action`, sooner while the pod has not started ([`mount_wait`]): no pod watch event comes
/// until the runner starts (a pod created or in `ContainerCreating` triggers no reconcile, see
/// [`triggers::pod_progress`]), so the reconcile looks again when [`status::MOUNT_GRACE`] ends,
/// or every [`MOUNT_RECHECK`], until the pod starts (its start is a pod event, and it clears a
/// `SecretNotFound` a `FailedMount` Event gave). A finished or suspended run keeps
/// `await_change`.
fn recheck_mount(start: &status::PodStart, action: Action) -> Action {
    let delay = match start {
        status::PodStart::Creating { age, .. } => status::MOUNT_GRACE
            .checked_sub(*age)
            .filter(|d| !d.is_zero())
            .unwrap_or(MOUNT_RECHECK),
        status::PodStart::Unseen => MOUNT_RECHECK,
        status::PodStart::Past => return action,
    };
    if action == Action::await_change() {
        action
    } else {
        Action::requeue(delay)
    }
}

/// How many reconciles of each LlmJob failed in a row (an entry only while they fail).
#[derive(Debug, Clone, Default)]
pub struct FailureStreaks(Arc<std::sync::Mutex<std::collections::HashMap<ObjectRef<LlmJob>, u32>>>);

impl FailureStreaks {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ObjectRef<LlmJob>, u32>> {
        // A panic while holding the lock leaves a plain map: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more failure of `key`'s reconcile; returns how many in a row.
    fn failed(&self, key: ObjectRef<LlmJob>) -> u32 {
        let mut map = self.map();
        let n = map.entry(key).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// `key`'s reconcile succeeded: the streak ends.
    fn succeeded(&self, key: &ObjectRef<LlmJob>) {
        self.map().remove(key);
    }
}

/// The key of `watched`'s failure streak (its namespace and name, also for an unreadable object).
fn streak_key(watched: &WatchedLlmJob) -> ObjectRef<LlmJob> {
    let key = ObjectRef::new(&watched.name_any());
    match watched.namespace() {
        Some(ns) => key.within(&ns),
        None => key,
    }
}

/// A number in `[0, 1)` that differs from call to call (std's randomly keyed hasher: no
/// dependency for a jitter that needs no cryptographic quality).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits, as the fraction of an f64.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The API server's message when it refused a request for good (quota, admission webhook or
/// policy, an invalid object): a 4xx other than `409 Conflict` (the object exists: the next
/// reconcile sees it) and `429 Too Many Requests` (throttling, an ordinary retried error).
fn rejection(error: &kube::Error) -> Option<&str> {
    match error {
        kube::Error::Api(status)
            if (400..500).contains(&status.code) && !matches!(status.code, 409 | 429) =>
        {
            Some(status.message.as_str())
        }
        _ => None,
    }
}

/// What every reconcile shares (one per watched scope: the caches are the scope's).
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// What runs' pods get when their LlmJob leaves a field out.
    pub defaults: JobDefaults,
    /// What LlmJobs may ask for, cluster-wide (namespace labels loosen it).
    pub policy: TenantPolicy,
    /// Publishes Events.
    pub events: events::Publisher,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The tracer of launch spans.
    pub tracer: SdkTracer,
    /// The scope's Jobs and pods as its watches see them; `None` reads the API server.
    pub caches: Option<Caches>,
    /// The operator's own status writes the LlmJob cache does not show yet.
    pub own_writes: OwnWrites,
    /// `--trace-url-template`: fills `status.traceURL` and the finished runs' events.
    pub trace_url: Option<TraceUrlTemplate>,
    /// Failed reconciles in a row, per LlmJob: the error backoff.
    pub failures: FailureStreaks,
    /// `--max-concurrent-reconciles`: reconciles in flight at once per scope (0: no bound).
    pub max_concurrent_reconciles: u16,
}

/// The watch caches of one scope's Jobs and pods (only the operator's, by label).
#[derive(Clone)]
pub struct Caches {
    /// The operator's Jobs.
    pub jobs: Store<CachedJob>,
    /// The pods of the operator's Jobs.
    pub pods: Store<CachedPod>,
}

impl Context {
    /// The context of the configuration.
    pub fn new(client: Client, config: &Config, metrics: Arc<Metrics>, tracer: SdkTracer) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(config.identity()),
        };
        Context {
            events: events::Publisher::new(client.clone(), reporter),
            client,
            defaults: config.job_defaults(),
            policy: config.tenant_policy(),
            metrics,
            tracer,
            caches: None,
            own_writes: OwnWrites::default(),
            trace_url: config.trace_url_template.clone(),
            failures: FailureStreaks::default(),
            max_concurrent_reconciles: config.max_concurrent_reconciles,
        }
    }
}

/// A shutdown trigger shared by the controllers, leader election and the HTTP server.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A trigger fired by hand (tests, embedding): call `send(true)` on the sender.
    pub fn manual() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once shutdown was requested (or the trigger was dropped).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A [`Shutdown`] fired by SIGTERM or SIGINT.
pub fn shutdown_signal() -> Shutdown {
    let (tx, shutdown) = Shutdown::manual();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
                    let _ = ctrl_c.await;
                    let _ = tx.send(true);
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
        // Keep the sender until every receiver saw the value.
        tx.closed().await;
    });
    shutdown
}

/// Checks that LlmJobs can be listed in the watched scope: the CRD is installed and the RBAC
/// allows it. A clear error at start beats a controller that retries forever.
pub async fn check_crd(client: &Client, namespaces: Option<&[String]>) -> Result<(), kube::Error> {
    let api: Api<LlmJob> = match namespaces.and_then(|n| n.first()) {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list_metadata(&ListParams::default().limit(1)).await?;
    Ok(())
}

/// The label selector of the Jobs and pods the operator creates.
fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The backoff of each watch after an error: from 0.8 s, doubling, at most [`WATCH_BACKOFF_MAX`],
/// with jitter (watches failing together do not retry together), starting over after 2 min
/// without an error (as kube-runtime's default does).
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(WATCH_BACKOFF_MAX)
        .with_factor(2.0)
        .without_max_times()
        .with_jitter();
    ResetTimerBackoff::new(builder.into(), Duration::from_secs(120))
}

/// The controllers' trigger backoff: none, as each watch it merges has its own
/// ([`watch_backoff`]), so an error of one watch never delays the events of the others.
struct NoBackoff;

impl Iterator for NoBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoBackoff {
    fn reset(&mut self) {}
}

/// The LlmJob a pod of one of the operator's Jobs belongs to: the LlmJob of its Job's name.
fn llmjob_of_pod(
    store: &Store<WatchedLlmJob>,
    pod: &CachedPod,
) -> Option<ObjectRef<WatchedLlmJob>> {
    let namespace = pod.namespace()?;
    let job_name = pod.job_name()?;
    let direct = ObjectRef::new(job_name).within(&namespace);
    if store.get(&direct).is_some() {
        return Some(direct);
    }
    // A shortened Job name: find the LlmJob whose Job it is.
    store
        .state()
        .iter()
        .find(|j| {
            j.namespace().as_deref() == Some(namespace.as_str())
                && contract::job_name(&j.name_any()) == job_name
        })
        .map(|j| ObjectRef::from_obj(j.as_ref()))
}

/// Runs the controllers (one per watched namespace, or one for the cluster) until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Option<Vec<String>>,
    health: Health,
    shutdown: Shutdown,
) {
    let scopes: Vec<Option<String>> = match namespaces {
        None => vec![None],
        Some(list) => list.into_iter().map(Some).collect(),
    };
    let mut stores = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let ns = scope.as_deref();
        let managed = watcher::Config::default().labels(&managed_selector());
        // LlmJobs: only spec changes (a new generation) trigger a reconcile; the operator is the
        // only writer of the status, so its own status writes need none.
        // Read through `WatchedLlmJob`, so that one unreadable LlmJob fails only its reconcile.
        let (store, llmjob_writer) = cache::store::<WatchedLlmJob>();
        let own_writes = ctx.own_writes.clone();
        let llmjobs = reflector(
            llmjob_writer,
            watcher(
                api::<WatchedLlmJob>(&ctx.client, ns),
                watcher::Config::default(),
            )
            .modify(|j: &mut WatchedLlmJob| j.meta_mut().managed_fields = None),
        )
        .backoff(watch_backoff())
        .inspect_ok(move |event| own_writes.observe(event))
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
        // Jobs and pods are cached: a reconcile reads them from these stores, not the API server.
        let (jobs, job_writer) = cache::store::<CachedJob>();
        let job_events = triggers::on_progress(
            reflector(
                job_writer,
                watcher(api::<CachedJob>(&ctx.client, ns), managed.clone())
                    .modify(CachedJob::prune),
            )
            .backoff(watch_backoff()),
            triggers::job_progress,
        );
        let (pods, pod_writer) = cache::store::<CachedPod>();
        let pod_events = triggers::on_progress(
            reflector(
                pod_writer,
                watcher(api::<CachedPod>(&ctx.client, ns), managed).modify(CachedPod::prune),
            )
            .backoff(watch_backoff()),
            triggers::pod_progress,
        );
        let scope_ctx = Arc::new(Context {
            caches: Some(Caches { jobs, pods }),
            ..(*ctx).clone()
        });
        let controller = Controller::for_stream(llmjobs, store.clone())
            .with_config(controller::Config::default().concurrency(ctx.max_concurrent_reconciles))
            .owns_stream(job_events);
        let pod_store = store.clone();
        // Each watch above backs off on its own errors; the controller would back off the merged
        // triggers again on each (kube-runtime's default, up to 30 s plus jitter), so that one
        // watch's error (a relist after an API server restart) stalls the events of the others.
        let controller = controller
            .watches_stream(pod_events, move |pod: CachedPod| {
                llmjob_of_pod(&pod_store, &pod)
            })
            .trigger_backoff(NoBackoff)
            .graceful_shutdown_on(shutdown.wait());
        stores.push(store);
        let scope_name = scope.clone().unwrap_or_else(|| "all namespaces".to_owned());
        controllers.push(controller.run(reconcile, error_policy, scope_ctx).for_each(
            move |result| {
                if let Err(e) = result {
                    tracing::debug!(scope = %scope_name, error = %e, "controller event");
                }
                std::future::ready(())
            },
        ));
    }

    let ready_stores = stores.clone();
    let api_client = ctx.client.clone();
    let ready = tokio::spawn(async move {
        for store in &ready_stores {
            // The store's readiness future wakes only its latest poller (the Controller polls it
            // too), so it is re-polled with a timeout instead of awaited once.
            loop {
                match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
        }
        health.set_ready();
        tracing::info!("caches synced; reconciling");
        // From now on readiness says whether the API server answers: the watches and reconciles
        // retry on their own, but while it is gone this replica does no work.
        let mut reachable = true;
        let mut tick = tokio::time::interval(API_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let check =
                tokio::time::timeout(API_CHECK_TIMEOUT, api_client.apiserver_version()).await;
            let ok = matches!(check, Ok(Ok(_)));
            if ok == reachable {
                continue;
            }
            reachable = ok;
            if ok {
                health.set_ready();
                tracing::info!("the API server answers again; ready");
            } else {
                health.set_unreachable();
                let error = match check {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {API_CHECK_TIMEOUT:?}"),
                };
                tracing::warn!(%error, "cannot reach the API server; not ready");
            }
        }
    });
    let metrics = ctx.metrics.clone();
    let gauge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_INTERVAL);
        loop {
            tick.tick().await;
            let watched: Vec<Arc<WatchedLlmJob>> = stores.iter().flat_map(|s| s.state()).collect();
            let llmjobs: Vec<&LlmJob> = watched.iter().filter_map(|j| j.0.as_ref().ok()).collect();
            metrics.set_phases(
                llmjobs
                    .iter()
                    .map(|j| j.status.as_ref().and_then(|s| s.phase)),
            );
            metrics.set_oldest_pending(
                llmjobs
                    .iter()
                    .filter(|j| {
                        matches!(
                            j.status.as_ref().and_then(|s| s.phase),
                            None | Some(Phase::Pending)
                        )
                    })
                    .filter_map(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                Timestamp::now(),
            );
        }
    });
    futures::future::join_all(controllers).await;
    ready.abort();
    gauge.abort();
}

/// Logs and counts a failed reconcile, and retries it after [`error_retry_delay`]; at the
/// [`PERSISTENT_FAILURES`]th failure in a row, a Warning event (reason: the error's category)
/// names the error on the LlmJob. An event, not a condition: the failing call may be the status
/// write itself.
pub fn error_policy(llmjob: Arc<WatchedLlmJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let reason = error.category();
    let category = reason.as_str();
    ctx.metrics.error(category);
    let failures = ctx.failures.failed(streak_key(&llmjob));
    let delay = error_retry_delay(failures, error.retry_after(), jitter());
    tracing::warn!(
        namespace = %llmjob.namespace().unwrap_or_default(),
        name = %llmjob.name_any(),
        error = %error,
        category,
        failures,
        retry_in = ?delay,
        "reconcile failed; retrying"
    );
    if failures == PERSISTENT_FAILURES {
        let note = format!(
            "{error} ({failures} failed reconciles in a row; retried with backoff, next in {:.1} s)",
            delay.as_secs_f64()
        );
        let events = ctx.events.clone();
        tokio::spawn(async move { events.publish(llmjob.as_ref(), reason, note).await });
    }
    Action::requeue(delay)
}

/// Reconciles one LlmJob (see the module documentation for the steps).
pub async fn reconcile(watched: Arc<WatchedLlmJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = watched.namespace().unwrap_or_default();
    let name = watched.name_any();
    let span = tracing::info_span!(
        "reconcile",
        "k8s.namespace.name" = %namespace,
        "llmjob.name" = %name,
        "llmjob.phase" = tracing::field::Empty,
    );
    let started = Instant::now();
    let key = streak_key(&watched);
    ctx.metrics.reconciles.inc();
    let _in_flight = ctx.metrics.in_flight();
    let result = match &watched.0 {
        Ok(llmjob) => {
            Reconciler {
                ctx: &ctx,
                namespace: &namespace,
                name: &name,
                cached_rv: llmjob.resource_version(),
                llmjobs: Api::namespaced(ctx.client.clone(), &namespace),
                jobs: Api::namespaced(ctx.client.clone(), &namespace),
            }
            .run(Arc::new(llmjob.clone()))
            .instrument(span)
            .await
        }
        Err(invalid) => {
            reconcile_unreadable(&watched, &invalid.error, &ctx)
                .instrument(span)
                .await
        }
    };
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.failures.succeeded(&key);
    }
    result
}

/// Reports an LlmJob the operator's types cannot read, once per generation (once per operator
/// start when its status cannot record it): `Stalled` with reason `InvalidSpec` naming the field
/// and the error, and one Warning event; then it waits for
/// a change (its deletion, or a valid spec). The object is read again untyped, for the field's
/// path and the status it has. The status is written as a JSON merge patch, conditional on that
/// `resourceVersion`: a server-side apply converts the stored object to the schema's type first,
/// which fails for an object that does not match it. When the API server refuses any status for
/// the object (a CEL rule of the schema reads the malformed field), the event alone reports it.
async fn reconcile_unreadable(
    watched: &WatchedLlmJob,
    error: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let namespace = watched.namespace().unwrap_or_default();
    let name = watched.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &ApiResource::erase::<LlmJob>(&()),
    );
    let object = match api.get_opt(&name).await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(Error::Read {
                what: format!("LlmJob {namespace}/{name}"),
                source,
            });
        }
    };
    // Readable again (fixed since the watch saw it): its watch event brings it back.
    let Some(problem) = unreadable_reason(&object, error) else {
        return Ok(Action::await_change());
    };
    let generation = object.metadata.generation;
    let old: LlmJobStatus = object
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    if status::reports_unreadable(&old, generation) {
        tracing::debug!(%problem, "the unreadable LlmJob is already reported");
        return Ok(Action::await_change());
    }
    let message = format!(
        "the operator cannot read this LlmJob: {problem}. It was stored around the CRD's schema \
         (e.g. through a version without validation) and runs nothing: delete it and create a \
         valid one"
    );
    let new = status::unreadable(&old, generation, &message, Timestamp::now());
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": object.metadata.resource_version },
        "status": new,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await;
    match written {
        Ok(_) => tracing::warn!(%message, "cannot read the LlmJob; reported it in its status"),
        // A status write is validated against the whole object: a CEL rule that reads the
        // malformed field cannot be evaluated, and the API server refuses any status. The event
        // alone reports it then (again after an operator restart: nothing records it).
        Err(kube::Error::Api(s)) if s.code == 422 => tracing::warn!(
            %message,
            refusal = %s.message,
            "cannot read the LlmJob, and the API server refuses a status for it; an event reports it"
        ),
        Err(source) => {
            return Err(Error::Status {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            });
        }
    }
    ctx.events
        .publish(watched, Reason::InvalidSpec, message)
        .await;
    Ok(Action::await_change())
}

/// Why the operator's types cannot read `object`, with the path of the field
/// (`spec.run.maxAttempts: invalid type: ...`), or `None` if they can; `error` (the watch's
/// message) when the path cannot be found.
fn unreadable_reason(object: &DynamicObject, error: &str) -> Option<String> {
    let Ok(value) = serde_json::to_value(object) else {
        return Some(hide_values(error));
    };
    match serde_path_to_error::deserialize::<_, LlmJob>(value) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "{}: {}",
            e.path(),
            hide_values(&e.inner().to_string())
        )),
    }
}

/// Serde's message with the strings it quotes from the object (`invalid type: string "..."`,
/// `unknown variant `...``) hidden: the object bypassed admission, so a field may hold what
/// belongs in a Secret (an API key written where `apiKeySecretRef` goes), and the message goes to
/// an event, the status and the log. Numbers, types and field names stay.
fn hide_values(message: &str) -> String {
    const HIDDEN: &str = "(value hidden)";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let string = rest.find("string \"").map(|i| (i, "string \"", '"'));
        let variant = rest.find("variant `").map(|i| (i, "variant `", '`'));
        let next = match (string, variant) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((at, opening, close)) = next else {
            out.push_str(rest);
            return out;
        };
        let start = at + opening.len();
        out.push_str(&rest[..at]);
        out.push_str(&opening[..opening.len() - 1]);
        out.push_str(HIDDEN);
        // Serde writes the string with Debug escapes: it ends at the first unescaped quote.
        let mut escaped = false;
        let end = rest[start..].char_indices().find_map(|(i, c)| {
            let found = !escaped && c == close;
            escaped = !escaped && c == '\\';
            found.then_some(start + i + c.len_utf8())
        });
        match end {
            Some(end) => rest = &rest[end..],
            None => return out,
        }
    }
}

/// Where one pass of a reconcile ended.
enum Step {
    /// Done, with the requeue decision.
    Done(Action),
    /// The decision needs the LlmJob as stored now, not the watch cache's copy.
    NeedsFresh,
}

/// One reconcile of one LlmJob.
struct Reconciler<'a> {
    ctx: &'a Context,
    namespace: &'a str,
    name: &'a str,
    /// The `resourceVersion` of the watch cache's copy this reconcile started from.
    cached_rv: Option<String>,
    /// The LlmJobs of the namespace.
    llmjobs: Api<LlmJob>,
    /// The Jobs of the namespace.
    jobs: Api<Job>,
}

impl Reconciler<'_> {
    fn read_error(&self, what: &str) -> impl FnOnce(kube::Error) -> Error + use<> {
        let what = format!("{what} {}/{}", self.namespace, self.name);
        move |source| Error::Read { what, source }
    }

    /// Reconciles from the watch cache's copy of the LlmJob, and reads it fresh from the API
    /// server only when the cache may be behind and that matters: before a Job is created (a
    /// finished LlmJob must never run again), and when a status write finds that the copy was
    /// stale (a `Conflict`: every status write is conditional on the copy's `resourceVersion`,
    /// so events, which follow status changes, never repeat).
    async fn run(&self, cached: Arc<LlmJob>) -> Result<Action, Error> {
        let mut llmjob = Arc::unwrap_or_clone(self.ctx.own_writes.newest(cached));
        let mut fresh = false;
        loop {
            let outcome = self.step(&llmjob, fresh).await;
            let reason = match &outcome {
                Ok(Step::NeedsFresh) => "create",
                Err(e) if e.is_conflict() => "conflict",
                _ => "",
            };
            if reason.is_empty() || fresh {
                return match outcome? {
                    Step::Done(action) => Ok(action),
                    // A fresh copy never asks for another one.
                    Step::NeedsFresh => Ok(Action::requeue(ERROR_REQUEUE)),
                };
            }
            self.ctx.metrics.fresh_read(reason);
            match fetch::llmjob(&self.llmjobs, self.name)
                .await
                .map_err(self.read_error("LlmJob"))?
            {
                Some(j) => llmjob = j,
                None => return Ok(Action::await_change()),
            }
            fresh = true;
        }
    }

    /// One pass over `llmjob`; `fresh` tells whether it was just read from the API server.
    /// After the checks every LlmJob goes through, it takes one of three paths:
    /// [`with_job`](Self::with_job), [`without_job`](Self::without_job) (which may
    /// [`launch`](Self::launch)).
    async fn step(&self, llmjob: &LlmJob, fresh: bool) -> Result<Step, Error> {
        if llmjob.meta().deletion_timestamp.is_some() {
            // Garbage collection deletes the Job and its pod with the LlmJob.
            return Ok(Step::Done(Action::await_change()));
        }
        let old = llmjob.status.clone().unwrap_or_default();
        if let Some(phase) = old.phase {
            tracing::Span::current().record("llmjob.phase", phase.as_str());
            if phase.is_finished() {
                // The outcome is recorded: the Job may now expire (again after a restart that
                // came between the status write and the TTL's).
                let job = self
                    .ctx
                    .caches
                    .as_ref()
                    .and_then(|c| {
                        fetch::cached_job(&c.jobs, self.namespace, &contract::job_name(self.name))
                    })
                    .filter(|job| contract::controlled_by(job, llmjob));
                if let Some(job) = &job {
                    self.expire_after_outcome(llmjob, job).await?;
                }
                let ignored = job.filter(|job| self.pod_edit_ignored(llmjob, job));
                let action = self.follow_generation(llmjob, old).await?;
                if let Some(job) = ignored {
                    self.report_pod_edit(llmjob, &job).await;
                }
                return Ok(Step::Done(action));
            }
        }
        let valid = match validate::validate(llmjob) {
            Ok(v) => v,
            Err(e) => return self.blocked(llmjob, e.into()).await.map(Step::Done),
        };

        let job_name = contract::job_name(self.name);
        let cached = self
            .ctx
            .caches
            .as_ref()
            .and_then(|c| fetch::cached_job(&c.jobs, self.namespace, &job_name));
        let existing = match cached {
            Some(job) => Some(job),
            // Not in the cache: no Job yet, or the cache is behind. The decision to create it
            // is made on a fresh LlmJob and a fresh read of the Job.
            None if !fresh => return Ok(Step::NeedsFresh),
            None => fetch::job(&self.jobs, &job_name)
                .await
                .map_err(self.read_error("Job of LlmJob"))?,
        };
        let action = match existing {
            Some(job) => self.with_job(llmjob, job).await?,
            None => self.without_job(llmjob, &valid, job_name).await?,
        };
        Ok(Step::Done(action))
    }

    /// The Job exists: it must be this LlmJob's; its `spec.suspend` follows the LlmJob's; the
    /// status follows the Job and its pods.
    async fn with_job(&self, llmjob: &LlmJob, mut job: Job) -> Result<Action, Error> {
        let job_name = job.name_any();
        if !contract::controlled_by(&job, llmjob) {
            let conflict = Blocked::JobConflict {
                namespace: self.namespace.to_owned(),
                name: job_name,
            };
            return self.blocked(llmjob, conflict).await;
        }
        // Only a new wish of the LlmJob is applied: a Job that Kueue (or another controller)
        // suspended or resumed is read as it is, never flipped back.
        if !contract::is_queued(llmjob)
            && !status::job_finished(&job)
            && let Some(want) = contract::suspend_to_apply(llmjob, &job)
        {
            job = apply::set_suspend(&self.jobs, &job_name, want)
                .await
                .map_err(|source| Error::Suspend {
                    namespace: self.namespace.to_owned(),
                    name: job_name.clone(),
                    suspend: want,
                    source,
                })?;
        }
        let ignored = self.pod_edit_ignored(llmjob, &job);
        let cached_pods = self.ctx.caches.as_ref().and_then(|c| {
            let pods = fetch::cached_pods(&c.pods, &job);
            // A finished run's result is in its pod's termination message: the cache must
            // hold every pod the Job counts as finished, else they are read fresh.
            (!status::job_finished(&job) || fetch::has_finished_pods(&job, &pods)).then_some(pods)
        });
        let pods = match cached_pods {
            Some(pods) => pods,
            None => {
                let pods_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                fetch::pods(&pods_api, &job)
                    .await
                    .map_err(self.read_error("pods of LlmJob"))?
            }
        };
        // A pod the kubelet cannot set up (the Secret of its `spec.output.credentialsSecretRef`
        // volume is missing) stays in `ContainerCreating` and says why only in a `FailedMount`
        // Event on the pod. Those are read only for an LlmJob that mounts such a Secret, whose
        // pod has waited `MOUNT_GRACE`: a reconcile of a pod that starts, or of an LlmJob without
        // the Secret, reads no Event (the operator is benchmarked at 10,000 LlmJobs).
        let start = mount_wait(llmjob, &pods);
        let mount_failures = match &start {
            status::PodStart::Creating { pod, age } if *age >= status::MOUNT_GRACE => {
                let events: Api<Event> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                fetch::failed_mounts(&events, pod)
                    .await
                    .map_err(self.read_error("FailedMount Events of the pod of LlmJob"))?
            }
            _ => Vec::new(),
        };
        let action = self
            .observe(
                llmjob,
                Observation::Job {
                    job: &job,
                    pods: &pods,
                    mount_failures: &mount_failures,
                },
            )
            .await?;
        let action = recheck_mount(&start, action);
        if ignored {
            self.report_pod_edit(llmjob, &job).await;
        }
        Ok(action)
    }

    /// Whether this generation of the LlmJob, not yet observed, changed `spec.pod` after its Job
    /// was created ([`contract::pod_edit_ignored`]): once the status observes the generation, it
    /// is reported by [`report_pod_edit`](Self::report_pod_edit), once.
    fn pod_edit_ignored(&self, llmjob: &LlmJob, job: &Job) -> bool {
        let observed = llmjob.status.as_ref().and_then(|s| s.observed_generation);
        observed != llmjob.meta().generation && contract::pod_edit_ignored(llmjob, job)
    }

    /// Says, with a Warning event, that a `spec.pod` edit is not applied to the run: the status'
    /// `observedGeneration` means that the operator saw the generation, not that the pod has it.
    async fn report_pod_edit(&self, llmjob: &LlmJob, job: &Job) {
        let message = format!(
            "spec.pod changed after Job {} was created: the run keeps the pod settings it was \
             created with (a Job's pod template cannot change), although observedGeneration \
             follows the edit. Create a new LlmJob to run with the new settings",
            job.name_any()
        );
        tracing::warn!(%message, "a spec.pod edit is not applied");
        self.event(llmjob, Reason::SpecChangeIgnored, message).await;
    }

    /// No Job yet: a Job the status names is gone (the run ends, never runs twice); else the
    /// launch. Whether the API-key Secret exists is the kubelet's to say (see
    /// [`status::secret_problem`]): the operator never reads a Secret.
    async fn without_job(
        &self,
        llmjob: &LlmJob,
        valid: &Validated,
        job_name: String,
    ) -> Result<Action, Error> {
        let old_job = llmjob.status.as_ref().and_then(|s| s.job_name.as_deref());
        if let Some(gone) = old_job {
            return self
                .observe(llmjob, Observation::JobGone { job_name: gone })
                .await;
        }
        self.launch(llmjob, valid, job_name).await
    }

    /// Creates the Job under a new launch span, whose trace context the run's trace continues,
    /// once the tenant policy permits the LlmJob.
    async fn launch(
        &self,
        llmjob: &LlmJob,
        valid: &Validated,
        job_name: String,
    ) -> Result<Action, Error> {
        if let Err(refusal) = self.permitted(llmjob).await? {
            return self.blocked(llmjob, Blocked::NotPermitted(refusal)).await;
        }
        // A batch's items from a ConfigMap are counted (the Indexed Job's completions); the
        // pods mount the key, the operator keeps nothing of it.
        let counted;
        let valid = match &valid.input {
            Input::Batch(batch) if batch.item_count.is_none() => {
                let Items::ConfigMap { name, key } = &batch.items else {
                    return Ok(Action::await_change());
                };
                let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                let text = input::read_items(&api, name, key)
                    .await
                    .map_err(self.read_error("ConfigMap of spec.batch.itemsFrom of LlmJob"))?;
                let count = text.as_deref().map(input::count_items);
                let problem = match count {
                    None => Some("or its key is missing"),
                    Some(0) => Some("holds no item under its key"),
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    let missing = Blocked::ItemsMissing {
                        name: name.clone(),
                        key: key.clone(),
                        problem,
                    };
                    return self.blocked(llmjob, missing).await;
                }
                let mut with_count = valid.clone();
                if let Input::Batch(b) = &mut with_count.input {
                    b.item_count = count;
                }
                counted = with_count;
                &counted
            }
            _ => valid,
        };
        let launch = LaunchSpan::start(
            &self.ctx.tracer,
            &LaunchInfo {
                namespace: self.namespace,
                name: self.name,
                uid: &valid.uid,
                job_name: &job_name,
                model: &llmjob.spec.model,
                parent: valid.parent,
            },
            telemetry::current_span_context(),
        );
        let job =
            match build_job::build_job(llmjob, valid, &self.ctx.defaults, &launch.traceparent()) {
                Ok(job) => job,
                Err(BuildError::Finished(_)) => {
                    launch.end(None);
                    return Ok(Action::await_change());
                }
                Err(
                    e @ (BuildError::Messages(_)
                    | BuildError::Parameters { .. }
                    | BuildError::Input(_)
                    | BuildError::ItemsNotCounted),
                ) => {
                    launch.end(Some(&e.to_string()));
                    return self.blocked(llmjob, Blocked::Build(e)).await;
                }
            };
        // The input ConfigMap first, so the pod never waits for it.
        match input::config_map(valid) {
            Ok(None) => {}
            Ok(Some(config_map)) => {
                let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                if let Err(source) = input::apply(&api, &config_map).await {
                    launch.end(Some(&source.to_string()));
                    return Err(Error::Input {
                        namespace: self.namespace.to_owned(),
                        name: input::config_map_name(self.name),
                        source,
                    });
                }
            }
            Err(e) => {
                let e = BuildError::Input(e);
                launch.end(Some(&e.to_string()));
                return self.blocked(llmjob, Blocked::Build(e)).await;
            }
        }
        let created = match apply::create_job(&self.jobs, &job).await {
            Ok(created) => created,
            Err(source) => {
                launch.end(Some(&source.to_string()));
                // Refused for good (until a quota or policy changes): said on the LlmJob.
                if let Some(message) = rejection(&source) {
                    let rejected = Blocked::JobRejected {
                        namespace: self.namespace.to_owned(),
                        name: job_name,
                        message: message.to_owned(),
                    };
                    return self.blocked(llmjob, rejected).await;
                }
                return Err(Error::CreateJob {
                    namespace: self.namespace.to_owned(),
                    name: job_name,
                    source,
                });
            }
        };
        let trace_id = launch.traceparent().trace_id_hex();
        launch.end(None);
        tracing::info!(job = %job_name, trace_id = %trace_id, "created the Job");
        self.event(
            llmjob,
            Reason::JobCreated,
            format!("Created Job {job_name}; the run's trace id is {trace_id}"),
        )
        .await;
        if let Some(e) = &valid.parent_error {
            self.event(
                llmjob,
                Reason::InvalidTraceParent,
                format!(
                    "annotation {TRACEPARENT_ANNOTATION} ignored ({e}); the run starts a new trace"
                ),
            )
            .await;
        }
        let action = self
            .observe(
                llmjob,
                Observation::Job {
                    job: &created,
                    pods: &[],
                    mount_failures: &[],
                },
            )
            .await?;
        Ok(recheck_mount(&mount_wait(llmjob, &[]), action))
    }

    /// The tenant policy's verdict: cluster-wide first, and only when that refuses, with the
    /// labels of the LlmJob's namespace (read fresh: a label just added counts).
    async fn permitted(&self, llmjob: &LlmJob) -> Result<Result<(), Refusal>, Error> {
        let policy = &self.ctx.policy;
        if validate::permitted(llmjob, policy, &Default::default()).is_ok() {
            return Ok(Ok(()));
        }
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let labels = fetch::namespace_labels(&namespaces, self.namespace)
            .await
            .map_err(|source| Error::Read {
                what: format!("namespace {}", self.namespace),
                source,
            })?;
        Ok(validate::permitted(llmjob, policy, &labels))
    }

    /// A finished LlmJob never runs again: only `observedGeneration` follows spec edits.
    async fn follow_generation(&self, llmjob: &LlmJob, old: LlmJobStatus) -> Result<Action, Error> {
        let generation = llmjob.meta().generation;
        if old.observed_generation != generation {
            let mut new = old;
            new.observed_generation = generation;
            for c in &mut new.conditions {
                c.observed_generation = generation;
            }
            self.write_status(llmjob, &new).await?;
        }
        Ok(Action::await_change())
    }

    /// The LlmJob cannot progress until something changes: status `Stalled`, one Warning event
    /// when the reason is new.
    async fn blocked(&self, llmjob: &LlmJob, problem: Blocked) -> Result<Action, Error> {
        let reason = problem.reason();
        let message = problem.to_string();
        let old = llmjob.status.clone().unwrap_or_default();
        let stalled_since = old
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED && c.status == "True" && c.reason == reason.as_str())
            .map(|c| c.last_transition_time.0);
        let already = stalled_since.is_some();
        let new = status::derive(
            llmjob,
            Observation::Blocked {
                reason,
                message: &message,
            },
            Timestamp::now(),
        );
        if new != old {
            self.write_status(llmjob, &new).await?;
        }
        if !already {
            tracing::warn!(reason = reason.as_str(), %message, "the LlmJob cannot run yet");
            self.event(llmjob, reason, message).await;
        }
        if reason == Reason::JobCreateFailed {
            self.ctx.metrics.error(reason.as_str());
        }
        let elapsed = stalled_since
            .map(|since| Timestamp::now().duration_since(since))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        Ok(problem.requeue(elapsed))
    }

    /// Derives and writes the status from an observation; events and metrics for transitions.
    async fn observe(
        &self,
        llmjob: &LlmJob,
        observation: Observation<'_>,
    ) -> Result<Action, Error> {
        let old = llmjob.status.clone().unwrap_or_default();
        let mut new = status::derive(llmjob, observation, Timestamp::now());
        status::link_trace(&mut new, self.ctx.trace_url.as_ref());
        if new != old {
            self.write_status(llmjob, &new).await?;
        }
        let Some(phase) = new.phase else {
            return Ok(Action::requeue(RESYNC));
        };
        if phase.is_finished()
            && let Observation::Job { job, .. } = observation
        {
            self.expire_after_outcome(llmjob, job).await?;
        }
        tracing::Span::current().record("llmjob.phase", phase.as_str());
        // A problem the kubelet reports in the pod (a missing Secret or key): one Warning event
        // when it is new, as for a problem the operator finds itself.
        if let Some(reason) = status::pod_problem(&new)
            && status::pod_problem(&old) != Some(reason)
        {
            let note = new
                .conditions
                .iter()
                .find(|c| c.type_ == STALLED)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            tracing::warn!(reason = reason.as_str(), message = %note, "the run waits");
            self.event(llmjob, reason, note).await;
        }
        if let Some(reason) = events::for_transition(old.phase, phase) {
            let condition = if phase == Phase::Failed {
                FAILED
            } else {
                READY
            };
            let note = new
                .conditions
                .iter()
                .find(|c| c.type_ == condition)
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("The LlmJob is {}", phase.as_str()));
            let note = if phase.is_finished() {
                events::with_trace_link(note, new.trace_url.as_deref())
            } else {
                note
            };
            tracing::info!(
                from = old.phase.map(Phase::as_str).unwrap_or("none"),
                to = phase.as_str(),
                "phase changed"
            );
            self.event(llmjob, reason, note).await;
        }
        if phase.is_finished() && !old.phase.is_some_and(Phase::is_finished) {
            if let Some(result) = &new.result {
                self.ctx
                    .metrics
                    .count_tokens(self.namespace, &llmjob.spec.model, result);
            }
            let condition = if phase == Phase::Failed {
                FAILED
            } else {
                READY
            };
            let reason = new
                .conditions
                .iter()
                .find(|c| c.type_ == condition)
                .map_or(phase.as_str(), |c| c.reason.as_str());
            self.ctx
                .metrics
                .count_run(self.namespace, phase, reason, new.attempts);
            return Ok(Action::await_change());
        }
        Ok(match phase {
            Phase::Succeeded | Phase::Failed | Phase::Suspended => Action::await_change(),
            Phase::Pending | Phase::Running => Action::requeue(RESYNC),
        })
    }

    /// Sets the Job's `ttlSecondsAfterFinished` to `spec.run.ttlSecondsAfterFinished`, once the
    /// outcome is in the status (the Job is created without it: see [`build_job`]).
    async fn expire_after_outcome(&self, llmjob: &LlmJob, job: &Job) -> Result<(), Error> {
        let Some(ttl) = llmjob
            .spec
            .run
            .as_ref()
            .and_then(|r| r.ttl_seconds_after_finished)
        else {
            return Ok(());
        };
        if job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) == Some(ttl) {
            return Ok(());
        }
        let name = job.name_any();
        apply::set_ttl(&self.jobs, &name, ttl)
            .await
            .map_err(|source| Error::Ttl {
                namespace: self.namespace.to_owned(),
                name,
                ttl,
                source,
            })?;
        Ok(())
    }

    /// Writes the status, on condition that the LlmJob is still at `base`'s `resourceVersion`.
    async fn write_status(&self, base: &LlmJob, new: &LlmJobStatus) -> Result<(), Error> {
        let base_rv = base.resource_version();
        let written = status::apply(&self.llmjobs, self.name, base_rv.as_deref(), new)
            .await
            .map_err(|source| Error::Status {
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
                source,
            })?;
        self.ctx
            .own_writes
            .record([base_rv, self.cached_rv.clone()], written);
        Ok(())
    }

    async fn event(&self, llmjob: &LlmJob, reason: Reason, note: String) {
        self.ctx.events.publish(llmjob, reason, note).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{cached, llmjob, pod};

    #[test]
    fn watches_retry_within_seconds_after_an_outage() {
        let delays: Vec<Duration> = watch_backoff().take(20).collect();
        assert_eq!(delays.len(), 20, "it never gives up");
        // The jitter adds at most the delay itself.
        assert!(
            delays.iter().all(|d| *d <= 2 * WATCH_BACKOFF_MAX),
            "{delays:?}"
        );
        assert!(delays[0] >= Duration::from_millis(800), "{delays:?}");
        assert!(
            delays[10..].iter().all(|d| *d >= WATCH_BACKOFF_MAX),
            "{delays:?}"
        );
    }

    #[test]
    fn an_llmjob_mounting_a_secret_is_looked_at_until_its_pod_starts() {
        let with_secret = llmjob(
            "metadata: {name: b, namespace: n, uid: u}\nspec: {openai: {apiKeySecretRef: {name: o}}, batch: {items: [{prompt: x}]}, output: {url: \"s3://b/p\", credentialsSecretRef: {name: s3}}}",
        );
        let without = llmjob(
            "metadata: {name: b, namespace: n, uid: u}\nspec: {openai: {apiKeySecretRef: {name: o}}, batch: {items: [{prompt: x}]}, output: {url: \"s3://b/p\"}}",
        );
        // No pod yet (the launch), or one the kubelet has not reported on: a pod event may never
        // come, so the LlmJob with a Secret to mount is looked at again.
        assert_eq!(mount_wait(&with_secret, &[]), status::PodStart::Unseen);
        assert_eq!(mount_wait(&without, &[]), status::PodStart::Past);
        let resync = Action::requeue(RESYNC);
        assert_eq!(
            recheck_mount(&status::PodStart::Unseen, resync.clone()),
            Action::requeue(MOUNT_RECHECK)
        );
        let creating = |secs| status::PodStart::Creating {
            pod: "b-0-x".to_owned(),
            age: Duration::from_secs(secs),
        };
        // Looked at when the grace ends, then every MOUNT_RECHECK.
        assert_eq!(
            recheck_mount(&creating(5), resync.clone()),
            Action::requeue(status::MOUNT_GRACE - Duration::from_secs(5))
        );
        assert_eq!(
            recheck_mount(&creating(20), resync.clone()),
            Action::requeue(MOUNT_RECHECK)
        );
        assert_eq!(
            recheck_mount(&creating(600), resync.clone()),
            Action::requeue(MOUNT_RECHECK)
        );
        // A started pod, or a finished or suspended run, keeps its requeue.
        assert_eq!(
            recheck_mount(&status::PodStart::Past, resync.clone()),
            resync
        );
        assert_eq!(
            recheck_mount(&creating(600), Action::await_change()),
            Action::await_change()
        );
        let running = pod(
            "metadata: {name: b-0-x, namespace: n}\nstatus: {phase: Running, containerStatuses: [{name: runner, image: i, imageID: '', ready: true, restartCount: 0, state: {running: {}}}]}",
        );
        assert_eq!(mount_wait(&with_secret, &[running]), status::PodStart::Past);
    }

    #[test]
    fn pods_map_to_their_llmjob() {
        let long = "a".repeat(70);
        let (reader, mut writer) = kube::runtime::reflector::store::<WatchedLlmJob>();
        for name in ["short", long.as_str()] {
            let lj = llmjob(&format!(
                "metadata: {{name: {name}, namespace: n, uid: u-{name}}}\nspec: {{prompt: hi, openai: {{apiKeySecretRef: {{name: s}}}}}}"
            ));
            writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(lj))));
        }
        let owned_by = |job: &str| -> CachedPod {
            cached(&pod(&format!(
                "metadata: {{name: p, namespace: n, ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: {job}, uid: j, controller: true}}]}}"
            )))
        };
        let p = owned_by("short");
        assert_eq!(
            llmjob_of_pod(&reader, &p),
            Some(ObjectRef::new("short").within("n"))
        );
        let p = owned_by(&contract::job_name(&long));
        assert_eq!(
            llmjob_of_pod(&reader, &p),
            Some(ObjectRef::new(&long).within("n"))
        );
        let stranger: CachedPod = cached(&pod("metadata: {name: p, namespace: other}"));
        assert_eq!(llmjob_of_pod(&reader, &stranger), None);
    }

    #[test]
    fn an_unreadable_llmjob_is_named_by_its_field() {
        let bad: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "llmjob.dev/v1alpha1", "kind": "LlmJob",
            "metadata": {"name": "bad", "namespace": "n"},
            "spec": {
                "prompt": "hi",
                "openai": {"apiKeySecretRef": {"name": "s"}},
                "run": {"maxAttempts": "twice"}
            }
        }))
        .unwrap();
        let reason = unreadable_reason(&bad, "the watch's message").unwrap();
        assert_eq!(
            reason,
            "spec.run.maxAttempts: invalid type: string (value hidden), expected u32"
        );
        let mut fixed = bad.clone();
        fixed.data["spec"]["run"]["maxAttempts"] = 2.into();
        assert_eq!(unreadable_reason(&fixed, "the watch's message"), None);
    }

    #[test]
    fn values_quoted_by_serde_are_hidden() {
        assert_eq!(
            hide_values(r#"invalid type: string "sk-secret \"quoted\" x", expected struct S"#),
            "invalid type: string (value hidden), expected struct S"
        );
        assert_eq!(
            hide_values("unknown variant `sk-secret`, expected `bearer` or `api-key`"),
            "unknown variant (value hidden), expected `bearer` or `api-key`"
        );
        assert_eq!(
            hide_values("invalid type: integer `42`, expected a string"),
            "invalid type: integer `42`, expected a string"
        );
        assert_eq!(hide_values("string \"cut"), "string (value hidden)");
    }

    #[test]
    fn blocked_retries_back_off_with_jitter_within_bounds() {
        let secs = Duration::from_secs;
        // The first look again comes soon, later ones as long again as the problem lasted.
        assert_eq!(blocked_retry_delay(Duration::ZERO, 0.0), secs(1));
        assert!(blocked_retry_delay(Duration::ZERO, 0.999_999) < secs(2));
        assert_eq!(blocked_retry_delay(secs(16), 0.0), secs(16));
        assert_eq!(blocked_retry_delay(secs(16), 0.5), secs(24));
        // Capped: a quota held for a day is looked at every 2.5 to 5 minutes.
        assert_eq!(blocked_retry_delay(secs(86_400), 0.0), secs(150));
        assert!(blocked_retry_delay(secs(86_400), 1.0) <= BLOCKED_RETRY_MAX);
        // Successive delays grow while the problem lasts.
        let mut elapsed = Duration::ZERO;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let delay = blocked_retry_delay(elapsed, 0.0);
            delays.push(delay);
            elapsed += delay;
        }
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert!(delays[7] >= delays[0] * 8, "{delays:?}");
    }

    #[test]
    fn failed_reconciles_back_off_with_jitter_and_honour_retry_after() {
        let secs = Duration::from_secs;
        // The first retry within 1-2 s, then twice as long each time, capped at 1-2 min.
        assert_eq!(error_retry_delay(1, None, 0.0), secs(1));
        assert!(error_retry_delay(1, None, 0.999_999) < secs(2));
        assert_eq!(error_retry_delay(2, None, 0.0), secs(2));
        assert_eq!(error_retry_delay(4, None, 0.5), secs(12));
        assert_eq!(error_retry_delay(50, None, 0.0), ERROR_RETRY_MAX / 2);
        assert!(error_retry_delay(u32::MAX, None, 1.0) <= ERROR_RETRY_MAX);
        // Jitter spreads LlmJobs failing together.
        assert_ne!(
            error_retry_delay(3, None, 0.1),
            error_retry_delay(3, None, 0.9)
        );
        // The API server's Retry-After is a floor, whatever the backoff says.
        assert_eq!(error_retry_delay(1, Some(secs(7)), 0.0), secs(7));
        assert_eq!(error_retry_delay(5, Some(secs(7)), 0.0), secs(16));

        let throttled = Error::Status {
            namespace: "n".into(),
            name: "a".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code: 429,
                details: Some(
                    serde_json::from_value(serde_json::json!({"retryAfterSeconds": 7})).unwrap(),
                ),
                ..Default::default()
            })),
        };
        assert_eq!(throttled.retry_after(), Some(secs(7)));
        let internal = Error::CreateJob {
            namespace: "n".into(),
            name: "a".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code: 500,
                ..Default::default()
            })),
        };
        assert_eq!(internal.retry_after(), None);
    }

    #[test]
    fn failure_streaks_count_until_a_reconcile_succeeds() {
        let streaks = FailureStreaks::default();
        let a = ObjectRef::new("a").within("n");
        let b = ObjectRef::new("b").within("n");
        assert_eq!(streaks.failed(a.clone()), 1);
        assert_eq!(streaks.failed(a.clone()), 2);
        assert_eq!(streaks.failed(b.clone()), 1);
        streaks.succeeded(&a);
        assert_eq!(streaks.failed(a), 1);
        assert_eq!(streaks.failed(b), 2);
    }

    #[test]
    fn jitter_is_a_fraction_that_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        let first = draws[0];
        assert!(draws.iter().any(|j| *j != first), "{draws:?}");
    }

    #[test]
    fn which_create_errors_are_rejections() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: format!("refused with {code}"),
                ..Default::default()
            }))
        };
        for code in [400, 403, 422] {
            assert_eq!(
                rejection(&api(code)),
                Some(format!("refused with {code}").as_str())
            );
        }
        for code in [409, 429, 500, 503] {
            assert_eq!(rejection(&api(code)), None, "{code} is retried as an error");
        }
    }

    #[test]
    fn only_an_invalid_spec_waits_for_a_change() {
        let conflict = Blocked::JobConflict {
            namespace: "n".into(),
            name: "j".into(),
        };
        let rejected = Blocked::JobRejected {
            namespace: "n".into(),
            name: "j".into(),
            message: "exceeded quota".into(),
        };
        assert_eq!(rejected.reason(), Reason::JobCreateFailed);
        assert!(rejected.to_string().contains("exceeded quota"));
        for problem in [conflict, rejected] {
            let action = problem.requeue(Duration::from_secs(10));
            assert_ne!(action, Action::await_change(), "{problem}");
        }
    }

    #[tokio::test]
    async fn shutdown_fires_once_triggered() {
        let (tx, shutdown) = Shutdown::manual();
        let waiting = tokio::spawn(shutdown.wait());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        // Already fired: resolves at once.
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .unwrap();
    }
}
