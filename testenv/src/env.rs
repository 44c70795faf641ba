//! The harness the integration tests and the demo use: one [`TestEnv`] is a control plane
//! ([`crate::cluster`]), a node that runs its pods, and optionally an OpenTelemetry Collector
//! ([`crate::collector`]), all logging into one directory. The node is a real one from
//! [`crate::node`] ([`TestEnvBuilder::real_node`]: containerd, runc, the kubelet), the fake
//! kubelet of [`crate::kubelet`] running pods as local processes (the default; the operator
//! bench's thousands of pods), or none ([`TestEnvBuilder::api_only`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), testenv::env::EnvError> {
//! use testenv::env::TestEnv;
//! use testenv::images;
//! use testenv::node::NodeConfig;
//! let node = NodeConfig::built_images(&[images::PAUSE, images::RUNNER])
//!     .expect("run `cargo xtask images`");
//! let env = TestEnv::builder()
//!     .real_node(node)
//!     .collector(true)
//!     .start()
//!     .await?;
//! let ns = env.create_namespace("smoke").await?;
//! let out = env.kubectl(&["get", "pods", "-n", &ns]).await?;
//! env.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Where things go: `<target>/testenv-logs/env-<millis>-<pid>-<n>/` holds `etcd.log`,
//! `kube-apiserver.log`, `kube-controller-manager.log`, `pki/`, `kubeconfig`, the node's logs and
//! `node/`, or with the fake kubelet `pods/` (one log per container,
//! `<ns>_<pod>_<container>.log`), and `collector-*/`. The path is printed to stderr on start
//! (`testenv: logs in ...`) and named by every start error. It is kept after the run.
//!
//! Tests share one environment per test binary through [`TestEnv::shared_with`] and isolate
//! themselves with [`TestEnv::create_namespace`]. It must not hold test logic (assertions,
//! fixtures).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::cluster::{self, Cluster, ClusterError, ClusterOptions};
use crate::collector::{Collector, CollectorError};
use crate::kubelet::{Kubelet, KubeletConfig, KubeletError, KubeletHandle};
use crate::node::{Node, NodeConfig, NodeError, NodeHost};
use crate::process::unique_dir;
use crate::tools::{self, MissingTool};

/// The job-runner's image (without tag), as the operator bench maps it to a binary on the fake
/// kubelet ([`TestEnvBuilder::image`]).
pub const RUNNER_IMAGE: &str = "ghcr.io/llmjob-dev/llmjob-runner";
/// The label every namespace made by [`TestEnv::create_namespace`] carries.
pub const NAMESPACE_LABEL: &str = "testenv.llmjob.dev/test-namespace";
/// How long [`TestEnv::create_namespace`] waits for the namespace's `default` ServiceAccount.
pub const NAMESPACE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the tokens made by [`TestEnv::client_as_service_account`].
const TOKEN_SECONDS: i64 = 3600;

/// Errors from starting or using the test environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Something failed while starting; the logs are in `dir`.
    #[error("cannot start the test environment (logs in {dir}): {source}")]
    Start {
        /// The environment's directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: Box<EnvError>,
    },
    /// A tool is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// The control plane failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The fake kubelet failed to start.
    #[error("the fake kubelet failed to start: {0}")]
    Kubelet(#[from] KubeletError),
    /// The collector failed.
    #[error(transparent)]
    Collector(#[from] CollectorError),
    /// The real node failed.
    #[error("the real node failed: {0}")]
    Node(#[from] NodeError),
    /// The environment's directory could not be created.
    #[error("cannot create {path}: {source}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
    /// Waiting for a condition timed out.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        timeout: Duration,
    },
    /// kubectl could not be run.
    #[error("cannot run kubectl: {0}")]
    Kubectl(#[source] std::io::Error),
    /// The shared environment failed to start (the same message for every test of the binary).
    #[error("the shared test environment failed to start: {0}")]
    Shared(String),
    /// A test asked for the shared environment with another configuration than the one it was
    /// started with: one test binary has one shared environment (split the tests into binaries).
    #[error(
        "this test binary's shared environment was started as {started}, but a test asked for {asked}: \
         a test binary has one shared environment; move the test to a binary of its own"
    )]
    SharedMismatch {
        /// The configuration the environment was started with.
        started: String,
        /// The configuration asked for.
        asked: String,
    },
}

/// Configures a [`TestEnv`]; see [`TestEnv::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TestEnvBuilder {
    images: BTreeMap<String, PathBuf>,
    host_images: Vec<String>,
    collector: bool,
    collector_forward: Option<String>,
    parent_dir: Option<PathBuf>,
    real_node: Option<NodeConfig>,
    api_only: bool,
}

impl TestEnvBuilder {
    /// Runs containers of `image` (name without tag or digest) as the local `binary`.
    pub fn image(mut self, image: impl Into<String>, binary: impl Into<PathBuf>) -> Self {
        self.images.insert(image.into(), binary.into());
        self
    }

    /// Runs containers of `image` (name without tag or digest) by executing their `command` +
    /// `args` on the host (e.g. `busybox` with `sh -c ...`).
    pub fn host_image(mut self, image: impl Into<String>) -> Self {
        self.host_images.push(image.into());
        self
    }

    /// Makes the collector (when enabled) also forward traces and metrics over OTLP/gRPC to
    /// `endpoint`, e.g. [`crate::backends::Backends::otlp_grpc_endpoint`] (the demo's
    /// `--backends`).
    pub fn collector_forward_to(mut self, endpoint: impl Into<String>) -> Self {
        self.collector_forward = Some(endpoint.into());
        self
    }

    /// Also starts an OpenTelemetry Collector ([`TestEnv::collector`]).
    pub fn collector(mut self, enabled: bool) -> Self {
        self.collector = enabled;
        self
    }

    /// Runs pods on a real node ([`crate::node`]: containerd, runc, the kubelet, kube-proxy,
    /// CoreDNS, kube-scheduler) instead of the fake kubelet, with `config`'s OCI archives
    /// imported. The apiserver and the collector then listen on the node's host address
    /// ([`TestEnv::api_server_url`]), and the collector is also the Service
    /// [`crate::node::COLLECTOR_SERVICE`]. [`TestEnvBuilder::image`] and
    /// [`TestEnvBuilder::host_image`] only apply to the fake kubelet.
    pub fn real_node(mut self, config: NodeConfig) -> Self {
        self.real_node = Some(config);
        self
    }

    /// Starts no kubelet at all, neither the fake one nor a real node: the control plane (and the
    /// collector, if asked) only, for tests of the API server alone (admission, CRD upgrades).
    /// Pods stay `Pending`. [`TestEnvBuilder::real_node`] wins over it.
    pub fn api_only(mut self) -> Self {
        self.api_only = true;
        self
    }

    /// Puts the environment's directory under `parent` instead of `<target>/testenv-logs/`.
    pub fn dir_in(mut self, parent: impl Into<PathBuf>) -> Self {
        self.parent_dir = Some(parent.into());
        self
    }

    /// Starts the control plane, the fake kubelet and (if asked) the collector. Must run inside
    /// a tokio runtime whose threads outlive the environment (its processes die with the thread
    /// that spawned them; see [`crate::process`]).
    pub async fn start(self) -> Result<TestEnv, EnvError> {
        let parent = self
            .parent_dir
            .clone()
            .unwrap_or_else(|| tools::target_dir().join("testenv-logs"));
        let dir = unique_dir(&parent, "env");
        std::fs::create_dir_all(&dir).map_err(|source| EnvError::Prepare {
            path: dir.clone(),
            source,
        })?;
        eprintln!("testenv: logs in {}", dir.display());
        self.start_in(&dir).await.map_err(|source| EnvError::Start {
            dir: dir.clone(),
            source: Box::new(source),
        })
    }

    async fn start_in(self, dir: &Path) -> Result<TestEnv, EnvError> {
        // Fail on a missing kubectl now rather than in the middle of a test.
        tools::bin("kubectl")?;
        let host = match &self.real_node {
            Some(_) => Some(NodeHost::prepare(dir)?),
            None => None,
        };
        let options = match &host {
            Some(host) => ClusterOptions {
                address: host.host_ip(),
                real_node: true,
            },
            None => ClusterOptions::default(),
        };
        let cluster = Cluster::start_with(dir, &options).await?;
        let collector = if self.collector {
            Some(
                Collector::start_forwarding(
                    dir,
                    options.address,
                    self.collector_forward.as_deref(),
                )
                .await?,
            )
        } else {
            None
        };
        let (kubelet, node) = match (host, self.real_node) {
            (Some(host), Some(config)) => {
                let node = Node::start(host, &cluster, dir, &config).await?;
                if let Some(collector) = &collector {
                    expose_collector(&cluster, collector, node.host_ip()).await?;
                }
                (None, Some(node))
            }
            _ if self.api_only => (None, None),
            _ => (
                Some(start_kubelet(&cluster, dir, self.images, self.host_images).await?),
                None,
            ),
        };
        let kubeconfig_path = cluster.kubeconfig_path().to_owned();
        let kubeconfig =
            std::fs::read_to_string(&kubeconfig_path).map_err(|source| EnvError::Prepare {
                path: kubeconfig_path.clone(),
                source,
            })?;
        let config = cluster::config_from_kubeconfig(&kubeconfig, &kubeconfig_path).await?;
        Ok(TestEnv {
            config,
            client: cluster.client(),
            dir: dir.to_owned(),
            kubelet,
            node,
            collector,
            cluster: Some(cluster),
        })
    }
}

/// Makes the collector the Service [`crate::node::COLLECTOR_SERVICE`] (ports `otlp-grpc` 4317
/// and `otlp-http` 4318), backed by its ports on `host_ip`.
async fn expose_collector(
    cluster: &Cluster,
    collector: &Collector,
    host_ip: std::net::IpAddr,
) -> Result<(), EnvError> {
    let std::net::IpAddr::V4(address) = host_ip else {
        return Ok(());
    };
    let (namespace, name) = crate::node::COLLECTOR_SERVICE;
    crate::node::services::host_service(
        &cluster.client(),
        namespace,
        name,
        None,
        address,
        &[
            crate::node::services::HostPort {
                name: "otlp-grpc",
                protocol: "TCP",
                port: 4317,
                target: collector.grpc_addr().port(),
            },
            crate::node::services::HostPort {
                name: "otlp-http",
                protocol: "TCP",
                port: 4318,
                target: collector.http_addr().port(),
            },
        ],
    )
    .await?;
    Ok(())
}

/// The one place that starts the fake kubelet.
async fn start_kubelet(
    cluster: &Cluster,
    dir: &Path,
    images: BTreeMap<String, PathBuf>,
    host_images: Vec<String>,
) -> Result<KubeletHandle, KubeletError> {
    Kubelet::start(KubeletConfig {
        client: cluster.client(),
        // The same name as the real node's, so tests read one constant whichever runs.
        node_name: crate::node::NODE_NAME.into(),
        images: images.into_iter().collect(),
        host_images,
        // The kubelet writes `<dir>/pods/<ns>_<pod>_<container>.log`.
        dir: dir.to_owned(),
    })
    .await
}

/// A running test environment. Dropping it kills everything (kubelet and its pods first, then the
/// collector, then the control plane); [`TestEnv::shutdown`] stops it gracefully.
pub struct TestEnv {
    // Dropped in this order.
    kubelet: Option<KubeletHandle>,
    node: Option<Node>,
    collector: Option<Collector>,
    cluster: Option<Cluster>,
    config: kube::Config,
    client: kube::Client,
    dir: PathBuf,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("dir", &self.dir)
            .field("cluster", &self.cluster)
            .field("collector", &self.collector)
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// A builder with no images mapped, no host images and no collector.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// The environment shared by all tests of this test binary, started on first use with the
    /// configuration of the first caller's `configure`. A later caller whose `configure` gives
    /// another configuration gets an error (a panic here), never silently the first one.
    ///
    /// The environment runs on a dedicated thread with its own tokio runtime, so it outlives the
    /// runtime of each `#[tokio::test]`; its clients work from any runtime. It is never dropped:
    /// its processes die with the test binary (parent-death signal), and the next start removes
    /// etcd data directories left behind by dead processes.
    ///
    /// # Panics
    /// If the environment cannot start; every test that asks for it then fails with the same
    /// message (which names the missing tool or the log directory).
    pub fn shared_with(configure: impl FnOnce() -> TestEnvBuilder) -> &'static TestEnv {
        match Self::try_shared_with(configure) {
            Ok(env) => env,
            Err(e) => panic!("{e}"),
        }
    }

    /// The non-panicking form of [`TestEnv::shared_with`].
    pub fn try_shared_with(
        configure: impl FnOnce() -> TestEnvBuilder,
    ) -> Result<&'static TestEnv, EnvError> {
        static SHARED: OnceLock<(String, Result<TestEnv, String>)> = OnceLock::new();
        let builder = configure();
        let asked = format!("{builder:?}");
        let (started, env) = SHARED.get_or_init(|| (asked.clone(), start_on_own_thread(builder)));
        if *started != asked {
            return Err(EnvError::SharedMismatch {
                started: started.clone(),
                asked,
            });
        }
        env.as_ref().map_err(|e| EnvError::Shared(e.clone()))
    }

    /// An admin client (`system:masters`), new at each call and bound to the calling tokio
    /// runtime. hyper keeps each pooled connection on the runtime that opened it, so one client
    /// shared by tests on different runtimes fails ("runtime dropped the dispatch task") once
    /// the test that opened a connection ends. Call it once per test or task, not per request.
    /// Must be called inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        // Building a client from a configuration that built one before cannot fail; if it ever
        // did, the environment's own client is still a working client.
        kube::Client::try_from(self.config.clone()).unwrap_or_else(|_| self.client.clone())
    }

    /// The admin kubeconfig (`<dir>/kubeconfig`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn api_server_url(&self) -> &str {
        self.cluster
            .as_ref()
            .map(Cluster::api_server_url)
            .unwrap_or_default()
    }

    /// The environment's directory (logs, PKI, kubeconfig, pod logs, collector output).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The control plane.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The real node, if the builder asked for one ([`TestEnvBuilder::real_node`]).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The collector, if the builder asked for one.
    pub fn collector(&self) -> Option<&Collector> {
        self.collector.as_ref()
    }

    /// Creates a namespace named `<prefix>-<n>-<random>` (unique across processes), labelled
    /// [`NAMESPACE_LABEL`], and waits until its `default` ServiceAccount exists (pods are
    /// rejected by the ServiceAccount admission plugin before that). Returns the name.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, EnvError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}-{}", random_suffix());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| EnvError::Api {
                what: format!("cannot create namespace {name}"),
                source,
            })?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), &name);
        // An API error is retried until the deadline, then named as the last thing seen.
        crate::wait::until_ok(
            &format!("ServiceAccount {name}/default"),
            NAMESPACE_READY_TIMEOUT,
            || async {
                match accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("not created yet".to_owned()),
                    Err(e) => Err(format!("cannot read it: {e}")),
                }
            },
        )
        .await
        .map_err(|e| EnvError::Timeout {
            what: format!(
                "{} (last seen: {}; see {}/kube-controller-manager.log)",
                e.what,
                e.last.as_deref().unwrap_or("nothing"),
                self.dir.display()
            ),
            timeout: NAMESPACE_READY_TIMEOUT,
        })?;
        Ok(name)
    }

    /// Runs the built kubectl with `--kubeconfig` set to the admin kubeconfig.
    pub async fn kubectl(&self, args: &[&str]) -> Result<std::process::Output, EnvError> {
        self.kubectl_command(args)?
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(EnvError::Kubectl)
    }

    /// The built kubectl with `--kubeconfig` set to the admin kubeconfig and `args`, not started:
    /// for feeding it stdin or reading its output as it comes (`kubectl get -w`).
    pub fn kubectl_command(&self, args: &[&str]) -> Result<tokio::process::Command, EnvError> {
        let mut command = tokio::process::Command::new(tools::bin("kubectl")?);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .args(args)
            .kill_on_drop(true);
        Ok(command)
    }

    /// The path of a container's log: `<dir>/pods/<ns>_<pod>_<container>.log`.
    pub fn pod_log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        match &self.kubelet {
            Some(kubelet) => kubelet.pod_log_path(namespace, pod, container),
            None => self
                .dir
                .join("pods")
                .join(format!("{namespace}_{pod}_{container}.log")),
        }
    }

    /// A container's stdout and stderr so far (empty if it has not written anything yet).
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        std::fs::read(self.pod_log_path(namespace, pod, container))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// A client authenticated as ServiceAccount `namespace/name` (a one-hour token from the
    /// TokenRequest API), for checking RBAC as a workload would see it.
    pub async fn client_as_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client, EnvError> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let response = Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|source| EnvError::Api {
                what: format!("cannot request a token for ServiceAccount {namespace}/{name}"),
                source,
            })?;
        let token = response.status.and_then(|s| s.token).unwrap_or_default();
        let ca = self
            .cluster
            .as_ref()
            .map(|c| c.ca_pem().to_owned())
            .unwrap_or_default();
        let url = self.api_server_url().to_owned();
        let yaml = service_account_kubeconfig(&url, &ca, namespace, name, &token)
            .map_err(ClusterError::from)?;
        let path = self.dir.join(format!("kubeconfig-sa-{namespace}-{name}"));
        Ok(cluster::client_from_kubeconfig(&yaml, &path, &url).await?)
    }

    /// Stops the kubelet (and its pods), the collector and the control plane, in that order.
    /// The directory and its logs stay.
    pub async fn shutdown(mut self) -> Result<(), EnvError> {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
        let node_result = match self.node.take() {
            Some(node) => node.shutdown().await,
            None => Ok(()),
        };
        let collector = self.collector.take().map(Collector::shutdown);
        let cluster = self.cluster.take().map(Cluster::shutdown);
        let mut result = node_result.map_err(EnvError::from);
        if let Some(stop) = collector
            && let Err(e) = stop.await
        {
            result = Err(e.into());
        }
        if let Some(stop) = cluster
            && let Err(e) = stop.await
        {
            result = result.and(Err(e.into()));
        }
        result
    }
}

/// Starts `builder` on a new thread that keeps its runtime (and so the environment's tasks and
/// processes) alive for the rest of the process.
fn start_on_own_thread(builder: TestEnvBuilder) -> Result<TestEnv, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("testenv-shared".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("testenv-shared-rt")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot build a tokio runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let result = builder.start().await.map_err(|e| e.to_string());
                let failed = result.is_err();
                let _ = tx.send(result);
                if !failed {
                    // Keep this thread (the processes' parent-death anchor) and the runtime
                    // (the kubelet's and the clients' tasks) alive until the process exits.
                    std::future::pending::<()>().await;
                }
            });
        });
    if let Err(e) = spawned {
        return Err(format!("cannot spawn the testenv thread: {e}"));
    }
    rx.recv()
        .unwrap_or_else(|_| Err("the testenv thread died while starting".into()))
}

/// A kubeconfig that authenticates with a bearer token.
fn service_account_kubeconfig(
    url: &str,
    ca_pem: &str,
    namespace: &str,
    name: &str,
    token: &str,
) -> Result<String, serde_norway::Error> {
    use base64::Engine as _;
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "testenv",
            "cluster": {
                "server": url,
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
        }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{
            "name": "testenv",
            "context": { "cluster": "testenv", "user": user, "namespace": namespace },
        }],
        "current-context": "testenv",
    });
    serde_norway::to_string(&config)
}

/// Five random lower-case hex digits (from the standard library's randomly seeded hasher).
fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:05x}", hasher.finish() & 0xfffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_suffixes_are_dns_labels_and_differ() {
        let a = random_suffix();
        let b = random_suffix();
        assert_eq!(a.len(), 5);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn env_dirs_differ_within_a_process() {
        let a = unique_dir(Path::new("/x"), "env");
        let b = unique_dir(Path::new("/x"), "env");
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("env-"));
    }

    #[test]
    fn service_account_kubeconfig_carries_the_token() {
        let yaml =
            service_account_kubeconfig("https://127.0.0.1:1", "PEM", "ns", "sa", "tok").unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(kubeconfig.auth_infos[0].name, "system:serviceaccount:ns:sa");
        assert!(yaml.contains("tok"));
    }
}
