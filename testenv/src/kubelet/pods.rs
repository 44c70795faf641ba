//! One worker per pod bound to the node: starts its containers as local processes (all at once),
//! restarts them per `restartPolicy`, reports status on `pods/status`, enforces
//! `activeDeadlineSeconds`, and on deletion stops the processes and removes the pod.
//!
//! Init containers (and so native sidecars) are not run: no pod here has them. A pod that has
//! them stays `Pending` with its containers waiting as `CreateContainerConfigError`, naming the
//! field, instead of running without them.
//!
//! The worker owns everything it starts: dropping (aborting) it kills the processes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use tokio::sync::{mpsc, watch};

use super::env_resolve::{EnvSources, expand, referenced_secrets, resolve_env};
use super::image::{
    ImageSource, build_argv, is_executable_file, resolve_image, unknown_image_message,
};
use super::runner::{ContainerProcess, Launch, ProcessRegistry};
use super::status::{
    ContainerRuntime, PodRuntime, RunState, Terminated, build_status, is_terminal, restart_policy,
};

/// The longest a container gets between SIGTERM and SIGKILL (tests should not wait 30 s).
pub(crate) const MAX_GRACE: Duration = Duration::from_secs(5);
/// How often a container blocked on its configuration (a missing Secret, ...) is retried.
const CONFIG_RETRY: Duration = Duration::from_secs(2);
/// The first restart back-off (the kubelet's is 10 s; tests prefer quick restarts).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the back-off (as in the kubelet).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// The default `terminationMessagePath`.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
/// The most bytes read from a termination-message file.
const MAX_TERMINATION_MESSAGE: u64 = 4096;
/// `FallbackToLogsOnError`: at most this many log lines...
const FALLBACK_LOG_LINES: usize = 80;
/// ...and this many bytes.
const FALLBACK_LOG_BYTES: usize = 2048;

/// Everything the workers share: configuration, API client, the process registry.
pub(crate) struct Shared {
    /// The admin client.
    pub client: Client,
    /// The node's name.
    pub node_name: String,
    /// Image name → binary.
    pub images: HashMap<String, PathBuf>,
    /// Images whose commands run on the host.
    pub host_images: Vec<String>,
    /// Where pod files go.
    pub dir: PathBuf,
    /// All running container processes.
    pub registry: ProcessRegistry,
    /// The part of the host environment containers get (`PATH`, `HOME`, `LANG`).
    pub host_env: Vec<(String, String)>,
}

/// The log file of a container: `<dir>/pods/<namespace>_<pod>_<container>.log`.
pub(crate) fn pod_log_path(dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    dir.join("pods")
        .join(format!("{namespace}_{pod}_{container}.log"))
}

/// The directory of a pod's other files (kubeconfig, termination messages), also the working
/// directory of its processes: `<dir>/pods/<namespace>_<pod>/`.
pub(crate) fn pod_dir(dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    dir.join("pods").join(format!("{namespace}_{pod}"))
}

/// The time now, as the API wants it.
fn now() -> Time {
    Time(Timestamp::now())
}

/// When a container is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

/// How a container's supervision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Stopped,
}

/// Why a container cannot be started yet.
#[derive(Debug)]
enum PrepareError {
    /// The image is unknown: the container waits forever (`ErrImagePull`).
    Image(String),
    /// Retried after [`CONFIG_RETRY`]: waiting with this reason and message.
    Config {
        reason: &'static str,
        message: String,
    },
    /// The process cannot be started: a `StartError` run.
    Start(String),
}

/// A pod-level stop request: `Some(grace)` once the pod's containers must stop.
type StopRx = watch::Receiver<Option<Duration>>;

/// What a container supervisor needs from its pod.
struct PodCtx {
    shared: Arc<Shared>,
    pod_rx: watch::Receiver<Arc<Pod>>,
    namespace: String,
    name: String,
    uid: String,
    dir: PathBuf,
    updates: mpsc::UnboundedSender<(usize, ContainerRuntime)>,
}

impl PodCtx {
    /// Reports the state of container `slot` (its index in `spec.containers`).
    fn report(&self, slot: usize, rt: &ContainerRuntime) {
        // The receiver lives as long as the worker that owns this context.
        let _ = self.updates.send((slot, rt.clone()));
    }

    fn pod(&self) -> Arc<Pod> {
        self.pod_rx.borrow().clone()
    }

    fn log_path(&self, container: &str) -> PathBuf {
        pod_log_path(&self.shared.dir, &self.namespace, &self.name, container)
    }

    fn termination_file(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.termination-log"))
    }
}

/// Waits until a stop is requested and returns its grace period (zero if the worker is gone).
async fn stop_requested(stop: &mut StopRx) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

/// Sleeps for `duration`; `true` if a stop was requested first.
async fn sleep_or_stop(stop: &mut StopRx, duration: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        _ = stop_requested(stop) => true,
    }
}

/// The grace period for stopping `pod`: its deletion grace period, else
/// `terminationGracePeriodSeconds` (30 s by default), at most [`MAX_GRACE`].
pub(crate) fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE)
}

/// The termination message of a finished run: the first 4096 bytes of the message file; with
/// `FallbackToLogsOnError`, a failed run with an empty file reports the end of its log.
pub(crate) fn termination_message(
    container: &Container,
    message_file: &Path,
    log_file: &Path,
    exit_code: i32,
) -> Option<String> {
    let mut bytes = Vec::new();
    if let Ok(file) = std::fs::File::open(message_file) {
        let _ = file.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut bytes);
    }
    let message = String::from_utf8_lossy(&bytes).into_owned();
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if message.is_empty() && fallback && exit_code != 0 {
        let log = crate::process::log_tail(log_file, FALLBACK_LOG_LINES);
        let tail = llmjob_crds::text::tail(&log, FALLBACK_LOG_BYTES);
        return (!tail.is_empty()).then(|| tail.to_owned());
    }
    (!message.is_empty()).then_some(message)
}

/// The decoded data of a Secret.
fn secret_data(secret: Secret) -> BTreeMap<String, String> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Everything short of spawning: image, environment, argv.
async fn prepare(ctx: &PodCtx, container: &Container) -> Result<Launch, PrepareError> {
    let shared = &ctx.shared;
    let image = container.image.as_deref().unwrap_or_default();
    let source = resolve_image(image, &shared.images, &shared.host_images)
        .ok_or_else(|| PrepareError::Image(unknown_image_message(image)))?;
    if let ImageSource::Binary(binary) = &source
        && !is_executable_file(binary)
    {
        return Err(PrepareError::Start(format!(
            "image \"{image}\" is mapped to {}, which is not an executable file: build it first \
             (e.g. `cargo build -p <package>`)",
            binary.display()
        )));
    }
    let pod = ctx.pod();
    let config_error = |message: String| PrepareError::Config {
        reason: "CreateContainerConfigError",
        message,
    };

    let mut sources = EnvSources::default();
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), &ctx.namespace);
    for name in referenced_secrets(container) {
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(|e| config_error(format!("cannot read secret \"{name}\": {e}")))?;
        sources.secrets.insert(name, secret.map(secret_data));
    }
    let mut env =
        resolve_env(&pod, container, &sources).map_err(|e| config_error(e.to_string()))?;

    // The termination-message path becomes a real file on the host.
    let message_path = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_TERMINATION_PATH);
    let host_message_path = ctx.termination_file(&container.name);
    let host_message = host_message_path.to_string_lossy().into_owned();
    for (_, value) in &mut env {
        if value == message_path {
            value.clone_from(&host_message);
        }
    }

    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let rewrite = |s: &String| expand(s, lookup).replace(message_path, &host_message);
    let command: Vec<String> = container.command.iter().flatten().map(rewrite).collect();
    let args: Vec<String> = container.args.iter().flatten().map(rewrite).collect();

    let mut full_env = shared.host_env.clone();
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| ctx.name.clone());
    full_env.push(("HOSTNAME".to_owned(), hostname));
    full_env.extend(env.iter().cloned());
    let path_var = full_env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    let argv = build_argv(&source, &command, &args, &path_var, is_executable_file)
        .map_err(PrepareError::Start)?;
    Ok(Launch {
        program: argv.program,
        args: argv.args,
        env: full_env,
        cwd: ctx.dir.clone(),
        log_path: ctx.log_path(&container.name),
    })
}

/// The result of one run.
struct RunResult {
    terminated: Terminated,
    stopped: bool,
    ran_for: Duration,
}

/// Starts `launch`, reports it running, waits for its exit (or a stop).
async fn run_once(
    ctx: &PodCtx,
    slot: usize,
    container: &Container,
    launch: &Launch,
    rt: &mut ContainerRuntime,
    stop: &mut StopRx,
) -> RunResult {
    let message_file = ctx.termination_file(&container.name);
    let prepared = std::fs::create_dir_all(&ctx.dir)
        .and_then(|()| std::fs::write(&message_file, b""))
        .map_err(|e| format!("cannot create {}: {e}", message_file.display()));
    let spawned = prepared.and_then(|()| {
        ContainerProcess::spawn(launch, &ctx.shared.registry)
            .map_err(|e| format!("cannot start {}: {e}", launch.program.display()))
    });
    let mut process = match spawned {
        Ok(process) => process,
        Err(message) => {
            return RunResult {
                terminated: start_error(message),
                stopped: false,
                ran_for: Duration::ZERO,
            };
        }
    };
    let started_at = now();
    let clock = tokio::time::Instant::now();
    let container_id = format!("testenv://{}", process.pid());
    tracing::info!(namespace = %ctx.namespace, pod = %ctx.name, container = %container.name,
        pid = process.pid(), program = %launch.program.display(), "container started");
    rt.container_id = Some(container_id.clone());
    rt.image_id = format!("testenv://{}", launch.program.display());
    rt.state = RunState::Running {
        started_at: started_at.clone(),
    };
    ctx.report(slot, rt);

    enum Ended {
        Exited(std::io::Result<i32>),
        Stop(Duration),
    }
    let ended = tokio::select! {
        status = process.wait() => Ended::Exited(status),
        grace = stop_requested(stop) => Ended::Stop(grace),
    };
    let (status, stopped) = match ended {
        Ended::Exited(status) => (status, false),
        Ended::Stop(grace) => (process.terminate(grace).await, true),
    };
    drop(process);
    let exit_code = status.unwrap_or_else(|e| {
        tracing::warn!(container = %container.name, error = %e, "cannot wait for the container process");
        255
    });
    tracing::info!(namespace = %ctx.namespace, pod = %ctx.name, container = %container.name,
        exit_code, stopped, "container exited");
    RunResult {
        terminated: Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: termination_message(container, &message_file, &launch.log_path, exit_code),
            started_at: Some(started_at),
            finished_at: now(),
            container_id: Some(container_id),
        },
        stopped,
        ran_for: clock.elapsed(),
    }
}

/// A run that never started (kubelet's `StartError`, exit code 128).
fn start_error(message: String) -> Terminated {
    Terminated {
        exit_code: 128,
        reason: "StartError".to_owned(),
        message: Some(message),
        started_at: None,
        finished_at: now(),
        container_id: None,
    }
}

/// Runs one container until it is done for good (per `restart`) or stopped.
async fn supervise(
    ctx: Arc<PodCtx>,
    slot: usize,
    container: Container,
    restart: Restart,
    mut stop: StopRx,
) -> Outcome {
    let mut rt = ContainerRuntime::waiting("ContainerCreating");
    let mut backoff = INITIAL_BACKOFF;
    loop {
        if stop.borrow().is_some() {
            return Outcome::Stopped;
        }
        ctx.report(slot, &rt);
        let prepared = tokio::select! {
            prepared = prepare(&ctx, &container) => prepared,
            _ = stop_requested(&mut stop) => return Outcome::Stopped,
        };
        let run = match prepared {
            Ok(launch) => run_once(&ctx, slot, &container, &launch, &mut rt, &mut stop).await,
            Err(PrepareError::Image(message)) => {
                tracing::warn!(pod = %ctx.name, container = %container.name, %message, "unknown image");
                rt.state = RunState::Waiting {
                    reason: "ErrImagePull".to_owned(),
                    message: Some(message.clone()),
                };
                ctx.report(slot, &rt);
                if sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                    return Outcome::Stopped;
                }
                let image = container.image.clone().unwrap_or_default();
                rt.state = RunState::Waiting {
                    reason: "ImagePullBackOff".to_owned(),
                    message: Some(format!("Back-off pulling image \"{image}\": {message}")),
                };
                ctx.report(slot, &rt);
                stop_requested(&mut stop).await;
                return Outcome::Stopped;
            }
            Err(PrepareError::Config { reason, message }) => {
                tracing::info!(pod = %ctx.name, container = %container.name, reason, %message, "container waiting");
                rt.state = RunState::Waiting {
                    reason: reason.to_owned(),
                    message: Some(message),
                };
                ctx.report(slot, &rt);
                if sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                    return Outcome::Stopped;
                }
                continue;
            }
            Err(PrepareError::Start(message)) => RunResult {
                terminated: start_error(message),
                stopped: false,
                ran_for: Duration::ZERO,
            },
        };

        let exit_code = run.terminated.exit_code;
        rt.state = RunState::Terminated(run.terminated.clone());
        ctx.report(slot, &rt);
        if run.stopped {
            return Outcome::Stopped;
        }
        let again = match restart {
            Restart::Always => true,
            Restart::OnFailure => exit_code != 0,
            Restart::Never => false,
        };
        if !again {
            return if exit_code == 0 {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
        }
        if run.ran_for >= BACKOFF_RESET {
            backoff = INITIAL_BACKOFF;
        }
        rt.last_state = Some(run.terminated.clone());
        rt.state = RunState::Waiting {
            reason: "CrashLoopBackOff".to_owned(),
            message: Some(format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.as_secs(),
                container.name,
                ctx.name,
                ctx.namespace,
                ctx.uid
            )),
        };
        ctx.report(slot, &rt);
        if sleep_or_stop(&mut stop, backoff).await {
            rt.state = RunState::Terminated(run.terminated);
            ctx.report(slot, &rt);
            return Outcome::Stopped;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        rt.restart_count += 1;
    }
}

/// The pod's containers, start to end.
async fn run_containers(ctx: Arc<PodCtx>, spec: PodSpec, stop: StopRx) {
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        let rt = ContainerRuntime {
            state: RunState::Waiting {
                reason: "CreateContainerConfigError".to_owned(),
                message: Some("initContainers are not supported by the testenv kubelet".to_owned()),
            },
            ..ContainerRuntime::waiting("CreateContainerConfigError")
        };
        for slot in 0..spec.containers.len() {
            ctx.report(slot, &rt);
        }
        return;
    }
    let restart = match restart_policy(&spec) {
        "Never" => Restart::Never,
        "OnFailure" => Restart::OnFailure,
        _ => Restart::Always,
    };
    join_all(spec.containers.iter().enumerate().map(|(slot, container)| {
        supervise(ctx.clone(), slot, container.clone(), restart, stop.clone())
    }))
    .await;
}

/// Reports the pod's status on `pods/status`, skipping unchanged reports.
struct StatusWriter {
    api: Api<Pod>,
    name: String,
    uid: String,
    runtime: PodRuntime,
    conditions: Vec<PodCondition>,
    last_sent: Option<serde_json::Value>,
}

impl StatusWriter {
    fn set(&mut self, slot: usize, rt: ContainerRuntime) {
        if let Some(target) = self.runtime.main.get_mut(slot) {
            *target = rt;
        }
    }

    async fn flush(&mut self, pod: &Pod) {
        let previous = if self.conditions.is_empty() {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
        } else {
            self.conditions.clone()
        };
        let status = build_status(pod, &self.runtime, &previous, &now());
        // The uid makes the patch fail rather than touch a new pod with the same name.
        let body = serde_json::json!({ "metadata": { "uid": self.uid }, "status": status });
        if self.last_sent.as_ref() == Some(&body) {
            return;
        }
        for attempt in 1..=5_u64 {
            match self
                .api
                .patch_status(&self.name, &super::patch_params(), &Patch::Strategic(&body))
                .await
            {
                Ok(_) => {
                    tracing::debug!(pod = %self.name, phase = ?status.phase, "pod status reported");
                    self.conditions = status.conditions.unwrap_or_default();
                    self.last_sent = Some(body);
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.name, attempt, error = %e, "cannot report pod status");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
    }
}

/// Deletes the pod with grace period 0 (the kubelet's final delete).
async fn final_delete(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for attempt in 1..=5_u64 {
        match api.delete(name, &params).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = %name, attempt, error = %e, "cannot delete pod");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
}

/// The worker of one pod: runs until the pod is gone from the API (its sender is dropped).
pub(crate) async fn run_pod(shared: Arc<Shared>, mut pod_rx: watch::Receiver<Arc<Pod>>) {
    let pod = pod_rx.borrow_and_update().clone();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(now);
    let mut writer = StatusWriter {
        api: api.clone(),
        name: name.clone(),
        uid: uid.clone(),
        runtime: PodRuntime::new(&spec, start_time.clone()),
        conditions: Vec::new(),
        last_sent: None,
    };
    let already_terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(is_terminal);

    let mut pod_gone = false;
    if !already_terminal {
        tracing::info!(%namespace, pod = %name, "starting pod");
        writer.flush(&pod).await;
        let (updates_tx, mut updates_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(None::<Duration>);
        let ctx = Arc::new(PodCtx {
            shared: shared.clone(),
            pod_rx: pod_rx.clone(),
            dir: pod_dir(&shared.dir, &namespace, &name),
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            updates: updates_tx,
        });
        let program = run_containers(ctx, spec.clone(), stop_rx);
        tokio::pin!(program);
        let deadline = spec.active_deadline_seconds.map(|seconds| {
            let elapsed = Timestamp::now().duration_since(start_time.0);
            let remaining = Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
                .saturating_sub(elapsed.try_into().unwrap_or(Duration::ZERO));
            tokio::time::Instant::now() + remaining
        });
        let deadline_sleep = tokio::time::sleep_until(
            deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365)),
        );
        tokio::pin!(deadline_sleep);
        let mut deadline_armed = deadline.is_some();
        let mut stop_requested = false;
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = stop_tx.send(Some(grace_period(&pod)));
            stop_requested = true;
        }
        loop {
            tokio::select! {
                () = &mut program => break,
                update = updates_rx.recv() => {
                    if let Some((slot, rt)) = update {
                        writer.set(slot, rt);
                        // A pod that is gone (or a kubelet shutting down) gets no more reports.
                        if !pod_gone {
                            let latest = pod_rx.borrow().clone();
                            writer.flush(&latest).await;
                        }
                    }
                }
                changed = pod_rx.changed(), if !pod_gone => {
                    if changed.is_err() {
                        pod_gone = true;
                        let _ = stop_tx.send(Some(Duration::ZERO));
                        stop_requested = true;
                    } else {
                        let latest = pod_rx.borrow_and_update().clone();
                        if latest.metadata.deletion_timestamp.is_some() && !stop_requested {
                            tracing::info!(%namespace, pod = %name, "pod deleted: stopping its containers");
                            let _ = stop_tx.send(Some(grace_period(&latest)));
                            stop_requested = true;
                        }
                    }
                }
                () = &mut deadline_sleep, if deadline_armed => {
                    deadline_armed = false;
                    if !stop_requested {
                        tracing::info!(%namespace, pod = %name, "activeDeadlineSeconds exceeded: stopping the pod");
                        writer.runtime.deadline_exceeded = true;
                        let _ = stop_tx.send(Some(grace_period(&pod_rx.borrow())));
                        stop_requested = true;
                    }
                }
            }
        }
        while let Ok((slot, rt)) = updates_rx.try_recv() {
            writer.set(slot, rt);
        }
        writer.runtime.stopped = stop_requested;
        if pod_gone {
            return;
        }
        let latest = pod_rx.borrow().clone();
        writer.flush(&latest).await;
        tracing::info!(%namespace, pod = %name, "pod finished");
    }

    // Finished: wait for the pod's deletion, then remove it for good.
    let mut deleted = false;
    loop {
        let deleting = pod_rx
            .borrow_and_update()
            .metadata
            .deletion_timestamp
            .is_some();
        if deleting && !deleted {
            final_delete(&api, &name, &uid).await;
            deleted = true;
        }
        if pod_rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_harness_convention() {
        let dir = Path::new("/tmp/env");
        assert_eq!(
            pod_log_path(dir, "ns", "p", "c"),
            PathBuf::from("/tmp/env/pods/ns_p_c.log")
        );
        assert_eq!(pod_dir(dir, "ns", "p"), PathBuf::from("/tmp/env/pods/ns_p"));
    }

    #[test]
    fn grace_is_capped() {
        let mut pod: Pod = serde_norway::from_str(
            "metadata: {name: p}\nspec: {containers: [], terminationGracePeriodSeconds: 2}",
        )
        .unwrap();
        assert_eq!(grace_period(&pod), Duration::from_secs(2));
        pod.spec.as_mut().unwrap().termination_grace_period_seconds = None;
        assert_eq!(grace_period(&pod), MAX_GRACE);
        pod.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(grace_period(&pod), Duration::ZERO);
    }

    #[test]
    fn termination_messages() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        let log = dir.path().join("log");
        let mut c: Container = serde_norway::from_str("{name: c}").unwrap();
        std::fs::write(&log, "line1\nboom\n").unwrap();
        assert_eq!(termination_message(&c, &msg, &log, 1), None);
        c.termination_message_policy = Some("FallbackToLogsOnError".into());
        assert_eq!(
            termination_message(&c, &msg, &log, 1).as_deref(),
            Some("line1\nboom")
        );
        assert_eq!(termination_message(&c, &msg, &log, 0), None);
        std::fs::write(&msg, "x".repeat(5000)).unwrap();
        assert_eq!(termination_message(&c, &msg, &log, 1).unwrap().len(), 4096);
    }
}
