//! The controller: kube-rs `Controller`s that watch LlmJobs (and their Jobs and the Jobs' pods)
//! and the reconcile that ties the steps together. It never reads a Secret: a missing API-key
//! Secret or key is what the kubelet reports in the runner pod's waiting state.
//!
//! One reconcile, for one LlmJob as the watch cache holds it (its Job and pods from the scope's
//! watch caches too; what is read fresh from the API server, and when, is in [`crate::fetch`]):
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
//!    [`status::secret_problem`]).
//!
//! A problem the LlmJob waits on is a [`Blocked`], a failed reconcile an [`Error`]; both name
//! their category as an [`events::Reason`]. The status is written only when it changed, and only
//! a new `metadata.generation` of an LlmJob triggers a reconcile (the operator is the only writer
//! of the status, so its own writes need none); Job and pod events do the rest. Requeue
//! decisions are explicit: a finished LlmJob or an invalid spec waits for a change; a blocked
//! LlmJob that no watch event can wake (a Job create the API server rejected, a conflicting Job
//! without the operator's label) is looked at again after a backoff with jitter
//! ([`blocked_retry_delay`]); an unfinished one is re-checked every [`RESYNC`] as a safety net;
//! errors retry after [`ERROR_REQUEUE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self as cache, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use llmjob_crds::v1alpha1::condition::{FAILED, READY, STALLED};
use llmjob_crds::v1alpha1::{LlmJob, LlmJobStatus, Phase, TRACEPARENT_ANNOTATION};
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::watch;
use tracing::Instrument;

use crate::build_job::{self, BuildError};
use crate::config::{Config, JobDefaults};
use crate::contract::{self, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL};
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
/// How soon a reconcile that failed is retried.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(10);
/// The shortest wait before looking again at a blocked LlmJob that no watch event will wake (a
/// Job create the API server rejected, a conflicting Job the operator does not watch).
pub const BLOCKED_RETRY_MIN: Duration = Duration::from_secs(2);
/// The longest such wait.
pub const BLOCKED_RETRY_MAX: Duration = Duration::from_secs(300);
/// How often the LlmJob-by-phase gauge is recomputed from the caches.
const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// A reconcile failed; it is retried after [`ERROR_REQUEUE`].
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
    pub recorder: Recorder,
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
}

/// The watch caches of one scope's Jobs and pods (only the operator's, by label).
#[derive(Clone)]
pub struct Caches {
    /// The operator's Jobs.
    pub jobs: Store<Job>,
    /// The pods of the operator's Jobs.
    pub pods: Store<Pod>,
}

impl Context {
    /// The context of the configuration.
    pub fn new(client: Client, config: &Config, metrics: Arc<Metrics>, tracer: SdkTracer) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(config.identity()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults: config.job_defaults(),
            policy: config.tenant_policy(),
            metrics,
            tracer,
            caches: None,
            own_writes: OwnWrites::default(),
            trace_url: config.trace_url_template.clone(),
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

/// The LlmJob a pod of one of the operator's Jobs belongs to.
fn llmjob_of_pod(store: &Store<LlmJob>, pod: &Pod) -> Option<ObjectRef<LlmJob>> {
    let namespace = pod.namespace()?;
    let job_name = pod.labels().get(NAME_LABEL)?;
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
                && contract::job_name(&j.name_any()) == *job_name
        })
        .map(|j| ObjectRef::from_obj(j.as_ref()))
}

/// Drops what the reconcile never reads from a cached Job (managed fields, the pod template), so
/// that caching thousands of Jobs stays cheap.
fn prune_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// Drops what the reconcile never reads from a cached pod: it needs the metadata that ties the pod
/// to its Job and LlmJob, the phase and the container statuses.
fn prune_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = None;
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
    }
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
        let (store, llmjob_writer) = cache::store::<LlmJob>();
        let own_writes = ctx.own_writes.clone();
        let llmjobs = reflector(
            llmjob_writer,
            watcher(api::<LlmJob>(&ctx.client, ns), watcher::Config::default())
                .modify(|j: &mut LlmJob| j.metadata.managed_fields = None),
        )
        .default_backoff()
        .inspect_ok(move |event| own_writes.observe(event))
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
        // Jobs and pods are cached: a reconcile reads them from these stores, not the API server.
        let (jobs, job_writer) = cache::store::<Job>();
        let job_events = triggers::on_progress(
            reflector(
                job_writer,
                watcher(api::<Job>(&ctx.client, ns), managed.clone()).modify(prune_job),
            )
            .default_backoff(),
            triggers::job_progress,
        );
        let (pods, pod_writer) = cache::store::<Pod>();
        let pod_events = triggers::on_progress(
            reflector(
                pod_writer,
                watcher(api::<Pod>(&ctx.client, ns), managed).modify(prune_pod),
            )
            .default_backoff(),
            triggers::pod_progress,
        );
        let scope_ctx = Arc::new(Context {
            caches: Some(Caches { jobs, pods }),
            ..(*ctx).clone()
        });
        let controller = Controller::for_stream(llmjobs, store.clone()).owns_stream(job_events);
        let pod_store = store.clone();
        let controller = controller
            .watches_stream(pod_events, move |pod: Pod| llmjob_of_pod(&pod_store, &pod))
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
    });
    let metrics = ctx.metrics.clone();
    let gauge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_INTERVAL);
        loop {
            tick.tick().await;
            let llmjobs: Vec<Arc<LlmJob>> = stores.iter().flat_map(|s| s.state()).collect();
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

/// Logs and counts a failed reconcile, and retries it after [`ERROR_REQUEUE`].
pub fn error_policy(llmjob: Arc<LlmJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let category = error.category().as_str();
    ctx.metrics.error(category);
    tracing::warn!(
        namespace = %llmjob.namespace().unwrap_or_default(),
        name = %llmjob.name_any(),
        error = %error,
        category,
        "reconcile failed; retrying"
    );
    Action::requeue(ERROR_REQUEUE)
}

/// Reconciles one LlmJob (see the module documentation for the steps).
pub async fn reconcile(llmjob: Arc<LlmJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = llmjob.namespace().unwrap_or_default();
    let name = llmjob.name_any();
    let span = tracing::info_span!(
        "reconcile",
        "k8s.namespace.name" = %namespace,
        "llmjob.name" = %name,
        "llmjob.phase" = tracing::field::Empty,
    );
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let _in_flight = ctx.metrics.in_flight();
    let result = Reconciler {
        ctx: &ctx,
        namespace: &namespace,
        name: &name,
        cached_rv: llmjob.resource_version(),
        llmjobs: Api::namespaced(ctx.client.clone(), &namespace),
        jobs: Api::namespaced(ctx.client.clone(), &namespace),
    }
    .run(llmjob)
    .instrument(span)
    .await;
    ctx.metrics.reconciled(started.elapsed());
    result
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
                if let Some(job) = self.ctx.caches.as_ref().and_then(|c| {
                    fetch::cached_job(&c.jobs, self.namespace, &contract::job_name(self.name))
                }) && contract::controlled_by(&job, llmjob)
                {
                    self.expire_after_outcome(llmjob, &job).await?;
                }
                return self.follow_generation(llmjob, old).await.map(Step::Done);
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
        self.observe(
            llmjob,
            Observation::Job {
                job: &job,
                pods: &pods,
            },
        )
        .await
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
        self.observe(
            llmjob,
            Observation::Job {
                job: &created,
                pods: &[],
            },
        )
        .await
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
        events::publish(&self.ctx.recorder, llmjob, reason, note).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{llmjob, pod};

    #[test]
    fn pods_map_to_their_llmjob() {
        let long = "a".repeat(70);
        let (reader, mut writer) = kube::runtime::reflector::store::<LlmJob>();
        for name in ["short", long.as_str()] {
            let lj = llmjob(&format!(
                "metadata: {{name: {name}, namespace: n, uid: u-{name}}}\nspec: {{prompt: hi, openai: {{apiKeySecretRef: {{name: s}}}}}}"
            ));
            writer.apply_watcher_event(&watcher::Event::Apply(lj));
        }
        let p = pod(&format!(
            "metadata: {{name: p, namespace: n, labels: {{{NAME_LABEL}: short}}}}"
        ));
        assert_eq!(
            llmjob_of_pod(&reader, &p),
            Some(ObjectRef::new("short").within("n"))
        );
        let p = pod(&format!(
            "metadata: {{name: p, namespace: n, labels: {{{NAME_LABEL}: {}}}}}",
            contract::job_name(&long)
        ));
        assert_eq!(
            llmjob_of_pod(&reader, &p),
            Some(ObjectRef::new(&long).within("n"))
        );
        let stranger = pod("metadata: {name: p, namespace: other}");
        assert_eq!(llmjob_of_pod(&reader, &stranger), None);
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
