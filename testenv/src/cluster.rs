//! The control plane of the test environment: etcd, kube-apiserver and kube-controller-manager as
//! local processes on free loopback ports, with a throw-away PKI ([`crate::certs`]) and an admin
//! kubeconfig. No scheduler and no kubelet: the fake kubelet ([`crate::kubelet`]) binds and runs
//! pods, or a real node ([`crate::node`]) brings both; [`crate::env`] puts them together.
//! [`Cluster::start_with`] and [`ClusterOptions`] serve the real node: a non-loopback address,
//! the Node authorizer and the kubelet client certificate.
//!
//! What [`Cluster::start`] does, in order (docs/test-infra.md explains each flag):
//! 1. generates the PKI into `<dir>/pki/`;
//! 2. starts etcd (data in a temporary directory on `/dev/shm` when it exists, `--unsafe-no-fsync`)
//!    and waits until its client port accepts connections;
//! 3. starts kube-apiserver, writes `<dir>/kubeconfig` (admin client certificate, CN=`admin`,
//!    O=`system:masters`) and polls `/readyz` with it until it answers `ok`;
//! 4. starts kube-controller-manager with the controllers the tests rely on (Jobs, garbage
//!    collection, namespaces, service accounts and their tokens, ...) and waits until the
//!    `default` ServiceAccount exists in namespace `default`, which proves the controllers run.
//!
//! Each process logs to `<dir>/<name>.log`; every readiness error quotes the log's tail and path.
//! [`Cluster::shutdown`] stops the processes in reverse order; dropping a [`Cluster`] kills them.
//! Ports are picked free and retried when another process took one first.
//!
//! It must not know about pods, images or the collector.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::{self, CertUsage, CertsError, Pki, PkiFiles};
use crate::process::{self, ManagedProcess, ProcessError, ProcessSpec};
use crate::tools::{self, MissingTool};
use crate::wait;

/// How long each component may take to become ready (generous: the machines have 2 cores, and
/// several test binaries may start control planes at once).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`Cluster::shutdown`] waits after SIGTERM before SIGKILL, per process.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// The Service IP range given to the apiserver (its first IP is in the serving certificate).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
/// The service-account token issuer (and default audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The controllers kube-controller-manager runs (the full names `kube-controller-manager --help`
/// lists for 1.36; the short aliases such as `job` are accepted too).
///
/// * Jobs and their clean-up: `job`, `cronjob`, `ttl-after-finished`, `garbage-collector`
///   (owner references, cascading deletion).
/// * Namespaces: `namespace` (deletion), `serviceaccount` (the `default` ServiceAccount, needed
///   by the ServiceAccount admission plugin), `serviceaccount-token`,
///   `root-ca-certificate-publisher` (`kube-root-ca.crt` in every namespace).
/// * RBAC: `clusterrole-aggregation` fills the aggregated `admin`/`edit`/`view` ClusterRoles.
/// * Workloads: `deployment`, `replicaset`.
/// * `resourcequota`: computes a ResourceQuota's usage (its status), without which the API
///   server's quota admission does not enforce it (a quota that forbids Jobs is a fault the
///   operator's tests inject).
/// * `pod-garbage-collector`: safe because the fake kubelet registers its Node (podgc deletes
///   pods bound to nodes that do not exist, after 40 s). `node-lifecycle` is left out: it would
///   taint and evict the pods of a node whose heartbeats stop.
pub const CONTROLLERS: &[&str] = &[
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
];
/// The controllers a real node ([`crate::node`]) needs on top of [`CONTROLLERS`]: EndpointSlices
/// for Services with selectors (kube-proxy and CoreDNS read them), the mirroring of
/// selector-less Endpoints, and `node-lifecycle`, which removes the
/// `node.kubernetes.io/not-ready:NoSchedule` taint the kubelet registers its Node with once the
/// Node is Ready (without it nothing is ever scheduled).
pub const NODE_CONTROLLERS: &[&str] = &[
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "node-lifecycle-controller",
];
/// The apiserver's client identity towards kubelets (`--kubelet-client-certificate`), bound to
/// `cluster-admin` through its group.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// How [`Cluster::start_with`] differs from the loopback-only control plane of [`Cluster::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The address kube-apiserver binds and advertises (it is added to its serving
    /// certificate). `127.0.0.1` for the fake kubelet; a real node's pods need an address they
    /// can reach, and then the `kubernetes` Service's endpoints are reconciled to it.
    pub address: IpAddr,
    /// Serve a real kubelet: `--authorization-mode=Node,RBAC`, the NodeRestriction admission
    /// plugin, a client certificate for `kubectl logs`/`exec` towards kubelets (which must serve
    /// certificates from this CA), and [`NODE_CONTROLLERS`].
    pub real_node: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            real_node: false,
        }
    }
}

/// Lines of a log quoted in errors.
const LOG_TAIL_LINES: usize = 40;
/// Attempts at starting a process on free ports before giving up.
const PORT_ATTEMPTS: usize = 3;

/// Errors from starting or stopping the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd, kube-apiserver or kube-controller-manager is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// The PKI could not be generated or written.
    #[error("cannot create the control plane's certificates: {0}")]
    Certs(#[from] CertsError),
    /// A directory or file of the environment could not be written.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No free port could be found.
    #[error("cannot pick a free loopback port: {0}")]
    Port(#[source] std::io::Error),
    /// Spawning or stopping a process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A component exited or did not become ready in time.
    #[error("{component} did not become ready: {reason}\nlog {log} (last lines):\n{tail}")]
    NotReady {
        /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
        component: &'static str,
        /// What went wrong.
        reason: String,
        /// The component's log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The kubeconfig could not be rendered.
    #[error("cannot render the kubeconfig: {0}")]
    RenderKubeconfig(#[from] serde_norway::Error),
    /// The kubeconfig could not be turned into a client configuration.
    #[error("cannot load the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The kube error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kube client could not be built.
    #[error("cannot build a kube client for {url}: {source}")]
    Client {
        /// The apiserver URL.
        url: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
}

/// How long each step of [`Cluster::start`] took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimings {
    /// PKI generation and writing.
    pub certs: Duration,
    /// etcd spawn → client port open.
    pub etcd: Duration,
    /// kube-apiserver spawn → `/readyz` ok.
    pub apiserver: Duration,
    /// kube-controller-manager spawn → `default` ServiceAccount present.
    pub controller_manager: Duration,
    /// The whole of [`Cluster::start`].
    pub total: Duration,
}

/// A running control plane. Killed on drop; [`Cluster::shutdown`] stops it gracefully.
pub struct Cluster {
    // Stopped in this order by `shutdown` and `Drop`.
    controller_manager: Option<ManagedProcess>,
    /// Behind a lock so that [`Cluster::stop_apiserver`] and [`Cluster::start_apiserver_again`]
    /// work on a shared environment; never held across an `await`.
    apiserver: std::sync::Mutex<Option<ManagedProcess>>,
    /// How kube-apiserver was started: [`Cluster::start_apiserver_again`] starts it again so.
    apiserver_spec: ProcessSpec,
    etcd: Option<ManagedProcess>,
    etcd_data: Option<tempfile::TempDir>,
    dir: PathBuf,
    pki: Pki,
    pki_files: PkiFiles,
    api_server_url: String,
    kubeconfig_path: PathBuf,
    client: kube::Client,
    timings: StartTimings,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("api_server_url", &self.api_server_url)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager with their logs, PKI and
    /// kubeconfig in `dir` (created if missing) and returns once the controllers run. Must be
    /// called inside a tokio runtime whose threads outlive the cluster (see [`crate::process`]).
    pub async fn start(dir: &Path) -> Result<Self, ClusterError> {
        Self::start_with(dir, &ClusterOptions::default()).await
    }

    /// Like [`Cluster::start`], configured by `options` (a real node needs a non-loopback
    /// address and the node authorizer).
    pub async fn start_with(dir: &Path, options: &ClusterOptions) -> Result<Self, ClusterError> {
        let started = Instant::now();
        let etcd_bin = tools::bin("etcd")?;
        let apiserver_bin = tools::bin("kube-apiserver")?;
        let kcm_bin = tools::bin("kube-controller-manager")?;
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Prepare {
            path: dir.to_owned(),
            source,
        })?;
        let mut timings = StartTimings::default();

        let step = Instant::now();
        let extra_sans: Vec<String> = if options.address.is_loopback() {
            Vec::new()
        } else {
            vec![options.address.to_string()]
        };
        let pki = Pki::generate_with_sans(&extra_sans)?;
        let pki_files = pki.write_to(&dir.join("pki"))?;
        if options.real_node {
            let client = pki.issue(
                KUBELET_CLIENT_USER,
                Some(certs::ADMIN_GROUP),
                &[],
                CertUsage::Client,
            )?;
            certs::write_pem(&kubelet_client_cert(&pki_files), &client.cert_pem, false)?;
            certs::write_pem(&kubelet_client_key(&pki_files), &client.key_pem, true)?;
        }
        timings.certs = step.elapsed();

        let step = Instant::now();
        let etcd_data = etcd_data_dir()?;
        let (etcd, etcd_url) = start_etcd(&etcd_bin, dir, etcd_data.path()).await?;
        timings.etcd = step.elapsed();
        tracing::debug!(url = %etcd_url, elapsed = ?timings.etcd, "etcd ready");

        let step = Instant::now();
        let kubeconfig_path = dir.join("kubeconfig");
        let (apiserver, apiserver_spec, api_server_url, client) = start_apiserver(
            &apiserver_bin,
            dir,
            &etcd_url,
            &pki,
            &pki_files,
            &kubeconfig_path,
            options,
        )
        .await?;
        timings.apiserver = step.elapsed();
        tracing::debug!(url = %api_server_url, elapsed = ?timings.apiserver, "kube-apiserver ready");

        // From here on the processes live in `cluster`, so an early return kills them all.
        let mut cluster = Self {
            controller_manager: None,
            apiserver: std::sync::Mutex::new(Some(apiserver)),
            apiserver_spec,
            etcd: Some(etcd),
            etcd_data: Some(etcd_data),
            dir: dir.to_owned(),
            pki,
            pki_files,
            api_server_url,
            kubeconfig_path,
            client,
            timings,
        };

        let step = Instant::now();
        let kcm = start_controller_manager(
            &kcm_bin,
            dir,
            &cluster.kubeconfig_path,
            &cluster.pki_files,
            options.real_node,
        )?;
        cluster.controller_manager = Some(kcm);
        cluster.wait_for_controllers().await?;
        cluster.timings.controller_manager = step.elapsed();
        cluster.timings.total = started.elapsed();
        tracing::debug!(timings = ?cluster.timings, "control plane ready");
        Ok(cluster)
    }

    /// Waits until the serviceaccount controller has created `default/default`.
    async fn wait_for_controllers(&mut self) -> Result<(), ClusterError> {
        let accounts: kube::Api<ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), "default");
        let log = self.dir.join("kube-controller-manager.log");
        let mut kcm = self.controller_manager.as_mut();
        let accounts = &accounts;
        let log_ref = &log;
        let ready =
            wait::until_ok_or_abort("ServiceAccount default/default", START_TIMEOUT, || {
                let exited = kcm.as_mut().map(|p| p.try_exit_status()).transpose();
                async move {
                    match exited {
                        Err(e) => return Err(ClusterError::from(e)),
                        Ok(Some(Some(status))) => {
                            return Err(not_ready(
                                "kube-controller-manager",
                                format!("exited with {status}"),
                                log_ref,
                            ));
                        }
                        Ok(_) => {}
                    }
                    Ok(match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not created yet".to_owned()),
                        Err(e) => Err(format!("cannot read it: {e}")),
                    })
                }
            })
            .await?;
        ready.map_err(|e| {
            not_ready(
                "kube-controller-manager",
                format!(
                    "after {START_TIMEOUT:?}: {}: {}",
                    e.what,
                    e.last.unwrap_or_default()
                ),
                &log,
            )
        })
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig (`<dir>/kubeconfig`), usable by kubectl and [`kube::Config`].
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The apiserver's URL, `https://<address>:<port>` (`127.0.0.1` unless
    /// [`ClusterOptions::address`] says otherwise).
    pub fn api_server_url(&self) -> &str {
        &self.api_server_url
    }

    /// The CA certificate (PEM) that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca.cert_pem
    }

    /// The generated PKI (certificates and keys, PEM).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The PEM files of the PKI.
    pub fn pki_files(&self) -> &PkiFiles {
        &self.pki_files
    }

    /// The directory holding the logs, PKI and kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the start took, step by step.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// Name and process id of each running process, in stop order.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let apiserver = self.apiserver_lock();
        [&self.controller_manager, &*apiserver, &self.etcd]
            .into_iter()
            .flatten()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    fn apiserver_lock(&self) -> std::sync::MutexGuard<'_, Option<ManagedProcess>> {
        // A panic elsewhere while holding the lock leaves the process handle valid.
        self.apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after [`SHUTDOWN_GRACE`]) and leaves etcd
    /// and its data, kube-controller-manager and any node running: the API server is gone for
    /// every client until [`Cluster::start_apiserver_again`]. Does nothing when it is stopped.
    pub async fn stop_apiserver(&self) -> Result<(), ClusterError> {
        let process = self.apiserver_lock().take();
        if let Some(process) = process {
            process.stop(SHUTDOWN_GRACE).await?;
        }
        Ok(())
    }

    /// Starts kube-apiserver again after [`Cluster::stop_apiserver`], with the same flags, port
    /// (the URL and kubeconfig stay valid), certificates and etcd data, and returns once its
    /// `/readyz` says ok. Does nothing when it runs.
    pub async fn start_apiserver_again(&self) -> Result<(), ClusterError> {
        if self.apiserver_lock().is_some() {
            return Ok(());
        }
        let mut process = ManagedProcess::spawn(self.apiserver_spec.clone())?;
        wait_for_readyz(&mut process, &self.client).await?;
        let mut slot = self.apiserver_lock();
        if slot.is_none() {
            *slot = Some(process);
        }
        Ok(())
    }

    /// Stops kube-controller-manager, kube-apiserver and etcd, in that order (SIGTERM, then
    /// SIGKILL after [`SHUTDOWN_GRACE`]), and removes etcd's data. The logs stay.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        let mut first_error = None;
        for process in [
            self.controller_manager.take(),
            self.apiserver
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = process.stop(SHUTDOWN_GRACE).await {
                first_error.get_or_insert(e);
            }
        }
        drop(self.etcd_data.take());
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL in dependency order (each ManagedProcess kills its child when dropped), then
        // remove etcd's data directory.
        drop(self.controller_manager.take());
        drop(
            self.apiserver
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        drop(self.etcd.take());
        drop(self.etcd_data.take());
    }
}

/// Installs rustls' `ring` provider as the process default (kube and reqwest together enable
/// both `ring` and `aws-lc-rs`, and rustls then refuses to pick one). Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds an admin kube client from a kubeconfig file's contents.
pub async fn client_from_kubeconfig(
    yaml: &str,
    path: &Path,
    url: &str,
) -> Result<kube::Client, ClusterError> {
    let config = config_from_kubeconfig(yaml, path).await?;
    kube::Client::try_from(config).map_err(|source| ClusterError::Client {
        url: url.to_owned(),
        source,
    })
}

/// The client configuration of a kubeconfig (read from `path`, for errors), with a 5 s connect
/// timeout.
pub async fn config_from_kubeconfig(yaml: &str, path: &Path) -> Result<kube::Config, ClusterError> {
    install_crypto_provider();
    let kubeconfig_err = |source| ClusterError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(kubeconfig_err)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(kubeconfig_err)?;
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

/// Prefix of etcd's data directories; the owning process id follows it.
const ETCD_DATA_PREFIX: &str = "testenv-etcd-";

/// etcd's data directory: on tmpfs when `/dev/shm` exists (much faster than disk on slow VMs),
/// named `testenv-etcd-<pid>-<random>`. Directories of processes that are gone (a shared
/// environment is never dropped, so its directory outlives the test binary) are removed first:
/// on tmpfs they would hold memory until reboot.
fn etcd_data_dir() -> Result<tempfile::TempDir, ClusterError> {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    remove_stale_etcd_dirs(&parent);
    let prefix = format!("{ETCD_DATA_PREFIX}{}-", std::process::id());
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix);
        // etcd warns about anything wider than 0700.
        b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        b
    };
    builder
        .tempdir_in(&parent)
        .or_else(|_| builder.tempdir())
        .map_err(|source| ClusterError::Prepare {
            path: parent.clone(),
            source,
        })
}

/// Removes `testenv-etcd-<pid>-*` directories under `parent` whose process no longer exists
/// (best effort).
fn remove_stale_etcd_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(ETCD_DATA_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `<pki>/apiserver-kubelet-client.crt`: the apiserver's client certificate towards kubelets.
fn kubelet_client_cert(files: &PkiFiles) -> PathBuf {
    files.dir.join("apiserver-kubelet-client.crt")
}

/// Its key.
fn kubelet_client_key(files: &PkiFiles) -> PathBuf {
    files.dir.join("apiserver-kubelet-client.key")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn free_port() -> Result<u16, ClusterError> {
    process::free_loopback_port().map_err(ClusterError::Port)
}

fn not_ready(component: &'static str, reason: String, log: &Path) -> ClusterError {
    ClusterError::NotReady {
        component,
        reason,
        log: log.to_owned(),
        tail: process::log_tail(log, LOG_TAIL_LINES),
    }
}

fn flag(name: &str, value: impl AsRef<std::ffi::OsStr>) -> OsString {
    let mut s = OsString::from(format!("--{name}="));
    s.push(value.as_ref());
    s
}

/// `true` when a readiness failure was a port clash worth retrying on other ports.
fn port_clash(err: &ClusterError) -> bool {
    matches!(err, ClusterError::NotReady { tail, .. } if tail.contains("address already in use"))
}

async fn start_etcd(
    binary: &Path,
    dir: &Path,
    data_dir: &Path,
) -> Result<(ManagedProcess, String), ClusterError> {
    let log = dir.join("etcd.log");
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let spec = ProcessSpec::new("etcd", binary, &log)
            .arg(flag("data-dir", data_dir))
            .arg(flag("listen-client-urls", &url))
            .arg(flag("advertise-client-urls", &url))
            // Port 0: the peer port is never used by a single member, and 0 cannot clash.
            .arg("--listen-peer-urls=http://127.0.0.1:0")
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let mut etcd = ManagedProcess::spawn(spec)?;
        match wait_for_port(&mut etcd, "etcd", loopback(port)).await {
            Ok(()) => return Ok((etcd, url)),
            Err(e) if port_clash(&e) => {
                drop(etcd);
                // A failed member may have left a half-initialised data dir behind.
                clear_dir(data_dir)?;
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| not_ready("etcd", "no free port".into(), &log)))
}

fn clear_dir(dir: &Path) -> Result<(), ClusterError> {
    let prepare = |source| ClusterError::Prepare {
        path: dir.to_owned(),
        source,
    };
    std::fs::remove_dir_all(dir).map_err(prepare)?;
    std::fs::create_dir_all(dir).map_err(prepare)
}

async fn wait_for_port(
    process: &mut ManagedProcess,
    component: &'static str,
    addr: SocketAddr,
) -> Result<(), ClusterError> {
    let log = process.log_path().to_owned();
    let log_ref = &log;
    let ready = wait::until_ok_or_abort(&format!("{addr} to accept"), START_TIMEOUT, || {
        let exited = process.try_exit_status();
        async move {
            match exited {
                Err(e) => Err(ClusterError::from(e)),
                Ok(Some(status)) => Err(not_ready(
                    component,
                    format!("exited with {status}"),
                    log_ref,
                )),
                Ok(None) if process::accepts_tcp(addr).await => Ok(Ok(())),
                Ok(None) => Ok(Err("connection refused")),
            }
        }
    })
    .await?;
    ready.map_err(|_| {
        not_ready(
            component,
            format!("{addr} not accepting connections after {START_TIMEOUT:?}"),
            &log,
        )
    })
}

async fn start_apiserver(
    binary: &Path,
    dir: &Path,
    etcd_url: &str,
    pki: &Pki,
    files: &PkiFiles,
    kubeconfig_path: &Path,
    options: &ClusterOptions,
) -> Result<(ManagedProcess, ProcessSpec, String, kube::Client), ClusterError> {
    let log = dir.join("kube-apiserver.log");
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        let url = format!("https://{}", SocketAddr::new(options.address, port));
        let mut spec = ProcessSpec::new("kube-apiserver", binary, &log)
            .arg(flag("etcd-servers", etcd_url))
            .arg(flag("bind-address", options.address.to_string()))
            .arg(flag("advertise-address", options.address.to_string()))
            .arg(flag("secure-port", port.to_string()))
            .arg(flag("cert-dir", &files.dir))
            .arg(flag("tls-cert-file", &files.apiserver_cert))
            .arg(flag("tls-private-key-file", &files.apiserver_key))
            .arg(flag("client-ca-file", &files.ca_cert))
            .arg(flag("service-cluster-ip-range", SERVICE_CLUSTER_IP_RANGE))
            .arg(flag("service-account-issuer", SERVICE_ACCOUNT_ISSUER))
            .arg(flag(
                "service-account-key-file",
                &files.service_account_public_key,
            ))
            .arg(flag(
                "service-account-signing-key-file",
                &files.service_account_key,
            ))
            .arg("--allow-privileged=true")
            // One client at a time in tests: API Priority and Fairness only costs start time.
            .arg("--enable-priority-and-fairness=false")
            .arg("--profiling=false")
            .arg("--v=1");
        if options.address.is_loopback() {
            // The `kubernetes` Service would get 127.0.0.1 endpoints, which validation rejects
            // (log noise on every reconcile); without a real node nothing talks to that Service.
            spec = spec.arg("--endpoint-reconciler-type=none");
        }
        if options.real_node {
            // The node authorizer and NodeRestriction limit each kubelet to its own Node and
            // pods, as in a real cluster; kubelets serve certificates from this CA, and the
            // apiserver presents its own client certificate to them (`kubectl logs`, `exec`).
            spec = spec
                .arg("--authorization-mode=Node,RBAC")
                .arg("--enable-admission-plugins=NodeRestriction")
                .arg(flag(
                    "kubelet-client-certificate",
                    kubelet_client_cert(files),
                ))
                .arg(flag("kubelet-client-key", kubelet_client_key(files)))
                .arg(flag("kubelet-certificate-authority", &files.ca_cert))
                .arg("--kubelet-preferred-address-types=InternalIP");
        } else {
            spec = spec.arg("--authorization-mode=RBAC");
        }
        let mut apiserver = ManagedProcess::spawn(spec.clone())?;
        let kubeconfig = render_kubeconfig(&url, pki)?;
        std::fs::write(kubeconfig_path, &kubeconfig).map_err(|source| ClusterError::Prepare {
            path: kubeconfig_path.to_owned(),
            source,
        })?;
        let client = client_from_kubeconfig(&kubeconfig, kubeconfig_path, &url).await?;
        match wait_for_readyz(&mut apiserver, &client).await {
            Ok(()) => return Ok((apiserver, spec, url, client)),
            Err(e) if port_clash(&e) => {
                drop(apiserver);
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| not_ready("kube-apiserver", "no free port".into(), &log)))
}

async fn wait_for_readyz(
    apiserver: &mut ManagedProcess,
    client: &kube::Client,
) -> Result<(), ClusterError> {
    let log = apiserver.log_path().to_owned();
    let log_ref = &log;
    let ready = wait::until_ok_or_abort("/readyz", START_TIMEOUT, || {
        let exited = apiserver.try_exit_status();
        async move {
            match exited {
                Err(e) => return Err(ClusterError::from(e)),
                Ok(Some(status)) => {
                    return Err(not_ready(
                        "kube-apiserver",
                        format!("exited with {status}"),
                        log_ref,
                    ));
                }
                Ok(None) => {}
            }
            Ok(match http::Request::get("/readyz").body(Vec::new()) {
                Ok(request) => match client.request_text(request).await {
                    Ok(body) if body.trim() == "ok" => Ok(()),
                    Ok(body) => Err(format!("/readyz answered {body:?}")),
                    Err(e) => Err(format!("/readyz: {e}")),
                },
                Err(e) => Err(format!("cannot build the /readyz request: {e}")),
            })
        }
    })
    .await?;
    ready.map_err(|e| {
        not_ready(
            "kube-apiserver",
            format!(
                "not ready after {START_TIMEOUT:?}; last: {}",
                e.last.unwrap_or_default()
            ),
            &log,
        )
    })
}

/// The admin kubeconfig: the CA, the admin client certificate and key embedded as data, one
/// context `testenv` with namespace `default`.
pub fn render_kubeconfig(url: &str, pki: &Pki) -> Result<String, serde_norway::Error> {
    render_client_kubeconfig(url, &pki.ca.cert_pem, certs::ADMIN_USER, &pki.admin)
}

/// A kubeconfig for the client certificate `identity` of user `user` (the kubelet's,
/// kube-proxy's, ...): the CA and the certificate and key embedded as data, one context
/// `testenv` with namespace `default`.
pub fn render_client_kubeconfig(
    url: &str,
    ca_pem: &str,
    user: &str,
    identity: &certs::CertKey,
) -> Result<String, serde_norway::Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "testenv",
            "cluster": {
                "server": url,
                "certificate-authority-data": b64(ca_pem),
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(&identity.cert_pem),
                "client-key-data": b64(&identity.key_pem),
            },
        }],
        "contexts": [{
            "name": "testenv",
            "context": { "cluster": "testenv", "user": user, "namespace": "default" },
        }],
        "current-context": "testenv",
    });
    serde_norway::to_string(&config)
}

fn start_controller_manager(
    binary: &Path,
    dir: &Path,
    kubeconfig: &Path,
    files: &PkiFiles,
    real_node: bool,
) -> Result<ManagedProcess, ClusterError> {
    let controllers: Vec<&str> = if real_node {
        CONTROLLERS
            .iter()
            .chain(NODE_CONTROLLERS)
            .copied()
            .collect()
    } else {
        CONTROLLERS.to_vec()
    };
    let spec = ProcessSpec::new(
        "kube-controller-manager",
        binary,
        dir.join("kube-controller-manager.log"),
    )
    .arg(flag("kubeconfig", kubeconfig))
    .arg(flag("controllers", controllers.join(",")))
    .arg(flag(
        "service-account-private-key-file",
        &files.service_account_key,
    ))
    .arg(flag("root-ca-file", &files.ca_cert))
    .arg("--leader-elect=false")
    // Each controller talks to the apiserver as its own ServiceAccount, with the RBAC rules of a
    // real cluster (so a missing permission shows up here as it would there).
    .arg("--use-service-account-credentials=true")
    // No HTTPS endpoint: nothing scrapes it, and port 0 cannot clash.
    .arg("--secure-port=0")
    // The default 20 QPS slows namespace deletion and garbage collection in busy test runs.
    .arg("--kube-api-qps=100")
    .arg("--kube-api-burst=200")
    .arg("--v=1");
    Ok(ManagedProcess::spawn(spec)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_embeds_the_admin_identity() {
        let pki = Pki::generate().unwrap();
        let yaml = render_kubeconfig("https://127.0.0.1:1234", &pki).unwrap();
        let kubeconfig = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(kubeconfig.current_context.as_deref(), Some("testenv"));
        let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:1234"));
        assert!(yaml.contains("client-key-data"));
    }

    #[test]
    fn not_ready_names_the_component_log_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kube-apiserver.log");
        std::fs::write(&log, "line 1\nerror: bad flag --nope\n").unwrap();
        let message =
            not_ready("kube-apiserver", "exited with exit status: 1".into(), &log).to_string();
        assert!(
            message.contains("kube-apiserver did not become ready"),
            "{message}"
        );
        assert!(message.contains(&log.display().to_string()), "{message}");
        assert!(message.contains("error: bad flag --nope"), "{message}");
    }

    #[test]
    fn port_clash_is_detected_from_the_log() {
        let clash = ClusterError::NotReady {
            component: "etcd",
            reason: "exited".into(),
            log: PathBuf::from("/x"),
            tail: "listen tcp 127.0.0.1:1: bind: address already in use".into(),
        };
        assert!(port_clash(&clash));
        let other = ClusterError::NotReady {
            component: "etcd",
            reason: "exited".into(),
            log: PathBuf::from("/x"),
            tail: "panic".into(),
        };
        assert!(!port_clash(&other));
    }
}
