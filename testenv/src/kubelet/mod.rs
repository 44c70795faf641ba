//! A fake kubelet that runs pods as local processes, so that Jobs, Deployments and the operator's
//! runner pods really execute against the test control plane (there is no container runtime and
//! no kube-scheduler).
//!
//! What it does:
//! * registers Node [`KubeletConfig::node_name`] (Ready, 8 CPUs, 32Gi, 110 pods), renews its Lease
//!   in `kube-node-lease` and its Ready heartbeat every 10 s ([`node`]);
//! * binds every pod waiting for the default scheduler to that node ([`scheduler`]);
//! * for each pod on the node ([`pods`]): starts all containers, each as a process in its own
//!   process group; restarts them per `restartPolicy` (back-off 1 s
//!   doubling to 60 s); reports `pods/status` like the kubelet (phase, conditions, container states
//!   with exit codes and termination messages); enforces `activeDeadlineSeconds`
//!   (`DeadlineExceeded`); on deletion sends SIGTERM, SIGKILL after
//!   `min(grace period, 5 s)`, then deletes the pod with grace period 0.
//!
//! How a container becomes a process:
//! * **Image** ([`image`]): the name without tag/digest is looked up in
//!   [`KubeletConfig::images`] (the binary is the entrypoint; `args` are passed; `command` is
//!   ignored unless `command[0]` names the same binary file, whose other words then precede
//!   `args`), then in [`KubeletConfig::host_images`] (`command + args` run on the host, argv\[0\]
//!   found through `PATH`). Unknown images wait in `ErrImagePull` / `ImagePullBackOff` with a
//!   message saying how to map them.
//! * **Environment** ([`env_resolve`]): exactly what the kubelet would give the container (`env`
//!   with `$(VAR)` expansion, `secretKeyRef` and `fieldRef`), plus `PATH`, `HOME` and `LANG` from
//!   the host and `HOSTNAME` (the pod's hostname); nothing else is inherited. A missing Secret or key leaves the container waiting in
//!   `CreateContainerConfigError` with the kubelet's message, retried every 2 s.
//!   `$(VAR)` references in `command`/`args` are expanded too.
//! * **Service account**: none. The pods it runs (the operator bench's runners, its own tests'
//!   shell pods) never call the API server; what does runs on the real node ([`crate::node`]).
//! * **Termination message**: the container's `terminationMessagePath` (default
//!   `/dev/termination-log`) becomes `<dir>/pods/<ns>_<pod>/<container>.termination-log`; every env
//!   value equal to the path and every occurrence of it in `command`/`args` is rewritten to that
//!   file, read (4096 bytes at most) when the process exits. `FallbackToLogsOnError` uses the log's
//!   last 80 lines when the file is empty and the process failed.
//! * **Output**: stdout and stderr go to `<dir>/pods/<ns>_<pod>_<container>.log`
//!   ([`KubeletHandle::pod_log_path`]), appended across restarts. The working directory is
//!   `<dir>/pods/<ns>_<pod>/`.
//!
//! Not emulated (no pod run here needs them; a pod that uses the first four waits in
//! `CreateContainerConfigError` naming the field): init containers and native sidecars,
//! `envFrom`, `configMapKeyRef`, `resourceFieldRef`; volumes (paths in a container are host paths), probes (a running container is
//! ready), resource limits, security contexts, service links, `kubectl logs/exec` (no kubelet API
//! server), node selectors/affinity/taints (one node takes everything).

mod env_resolve;
mod image;
mod node;
mod pods;
mod runner;
mod scheduler;
mod status;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use self::pods::Shared;
use self::runner::ProcessRegistry;

/// The field manager of every write the kubelet makes.
pub(crate) const FIELD_MANAGER: &str = "testenv-kubelet";
/// How long [`KubeletHandle::shutdown`] lets pod workers stop their processes.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Patch parameters with the kubelet's field manager.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// What the kubelet needs: a client, its node name, how to run images, and where files go.
#[derive(Clone)]
pub struct KubeletConfig {
    /// An admin client of the cluster.
    pub client: kube::Client,
    /// The Node to register and run pods for (e.g. `testenv-node`).
    pub node_name: String,
    /// Image name without tag or digest → the local binary that is its entrypoint (e.g.
    /// `ghcr.io/llmjob-dev/llmjob-runner` → `target/debug/llmjob-runner`).
    pub images: HashMap<String, PathBuf>,
    /// Image names whose container `command` + `args` run directly on the host (e.g. `busybox`:
    /// `["sh", "-c", "echo hi"]` runs the host's `sh`).
    pub host_images: Vec<String>,
    /// Where pod logs and files go (`<dir>/pods/...`).
    pub dir: PathBuf,
}

/// Errors from starting the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The pod directory could not be created.
    #[error("cannot create the kubelet directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Node could not be created or marked Ready.
    #[error("cannot register node {node}: {source}")]
    RegisterNode {
        /// The node's name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The node's Lease (or its namespace) could not be written.
    #[error("cannot write the node lease of {node} in kube-node-lease: {source}")]
    Lease {
        /// The node's name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The fake kubelet; see the module docs.
#[derive(Debug)]
pub struct Kubelet;

impl Kubelet {
    /// Registers the node and starts the heartbeat and the pod watch. Must be called inside a
    /// tokio runtime; container processes die with the runtime thread that spawned them (see
    /// [`crate::process`]), so use a runtime that outlives them.
    pub async fn start(cfg: KubeletConfig) -> Result<KubeletHandle, KubeletError> {
        let pods_dir = cfg.dir.join("pods");
        std::fs::create_dir_all(&pods_dir).map_err(|source| KubeletError::Dir {
            path: pods_dir.clone(),
            source,
        })?;
        let host_env = ["PATH", "HOME", "LANG"]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
            .collect();
        let ready_since = Time(Timestamp::now());
        let node_uid = node::register(&cfg.client, &cfg.node_name, &ready_since).await?;
        tracing::info!(node = %cfg.node_name, dir = %cfg.dir.display(), "kubelet registered its node");

        let registry = ProcessRegistry::default();
        let shared = Arc::new(Shared {
            client: cfg.client.clone(),
            node_name: cfg.node_name.clone(),
            images: cfg.images,
            host_images: cfg.host_images,
            dir: cfg.dir.clone(),
            registry: registry.clone(),
            host_env,
        });
        let tasks = TaskList::default();
        let heartbeat = tokio::spawn(node::heartbeat(
            cfg.client,
            cfg.node_name,
            node_uid,
            ready_since,
        ));
        let dispatcher = tokio::spawn(dispatch(shared, tasks.clone()));
        Ok(KubeletHandle {
            dir: cfg.dir,
            dispatcher,
            heartbeat,
            tasks,
            registry,
        })
    }
}

/// The running kubelet. Dropping it aborts its tasks and SIGKILLs every container process;
/// [`KubeletHandle::shutdown`] stops them more gently first.
#[derive(Debug)]
pub struct KubeletHandle {
    dir: PathBuf,
    dispatcher: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    tasks: TaskList,
    registry: ProcessRegistry,
}

impl KubeletHandle {
    /// The log file of a container: `<dir>/pods/<namespace>_<pod>_<container>.log`.
    pub fn pod_log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        pods::pod_log_path(&self.dir, namespace, pod, container)
    }

    /// Stops watching pods, lets every pod worker stop its processes (SIGTERM, then SIGKILL) for
    /// up to 10 s, then kills whatever is left. Pod statuses are not updated.
    pub async fn shutdown(self) {
        self.heartbeat.abort();
        self.dispatcher.abort();
        // Dropping the dispatcher drops every worker's pod channel: workers take that as "pod
        // gone" and stop their containers.
        // A timeout is no error here: Drop aborts what is left and kills the remaining process
        // groups.
        let _ = crate::wait::until("the pod workers to stop", SHUTDOWN_TIMEOUT, || {
            std::future::ready(
                (self.tasks.all_finished() && self.registry.is_empty()).then_some(()),
            )
        })
        .await;
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.dispatcher.abort();
        self.tasks.abort_all();
        self.registry.signal_all(rustix::process::Signal::KILL);
    }
}

/// Abort handles of the pod workers and binding tasks.
#[derive(Debug, Clone, Default)]
struct TaskList(Arc<Mutex<Vec<AbortHandle>>>);

impl TaskList {
    fn push(&self, handle: AbortHandle) {
        let mut tasks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn all_finished(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .all(AbortHandle::is_finished)
    }

    fn abort_all(&self) {
        for task in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            task.abort();
        }
    }
}

/// A pod worker: its task and the channel carrying the pod's latest version.
struct Worker {
    pod: watch::Sender<Arc<Pod>>,
    task: JoinHandle<()>,
}

/// Watches all pods: binds unscheduled ones, starts a worker per pod on the node, forwards
/// updates, and drops the worker's channel when its pod is gone.
async fn dispatch(shared: Arc<Shared>, tasks: TaskList) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    let binding: Arc<Mutex<HashSet<String>>> = Arc::default();

    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                on_pod(&shared, &tasks, &mut workers, &binding, pod);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = listing.take() {
                    workers.retain(|uid, _| seen.contains(uid));
                }
            }
            Ok(Event::Apply(pod)) => on_pod(&shared, &tasks, &mut workers, &binding, pod),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    workers.remove(uid);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
        workers.retain(|_, w| !w.task.is_finished());
    }
}

fn on_pod(
    shared: &Arc<Shared>,
    tasks: &TaskList,
    workers: &mut HashMap<String, Worker>,
    binding: &Arc<Mutex<HashSet<String>>>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    if node.is_empty() {
        if scheduler::should_bind(&pod)
            && binding
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid.clone())
        {
            let client = shared.client.clone();
            let node_name = shared.node_name.clone();
            let binding = binding.clone();
            let task = tokio::spawn(async move {
                scheduler::bind(client, pod, node_name).await;
                binding
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&uid);
            });
            tasks.push(task.abort_handle());
        }
        return;
    }
    if node != shared.node_name {
        return;
    }
    match workers.get(&uid) {
        Some(worker) => {
            worker.pod.send_replace(Arc::new(pod));
        }
        None => {
            let (tx, rx) = watch::channel(Arc::new(pod));
            let task = tokio::spawn(pods::run_pod(shared.clone(), rx));
            tasks.push(task.abort_handle());
            workers.insert(uid, Worker { pod: tx, task });
        }
    }
}
