//! A real Kubernetes node for the test environment: containerd + runc, the kubelet, kube-proxy
//! (iptables), CoreDNS and kube-scheduler, as host processes started and cleaned up by this
//! module, with pod networking through the CNI bridge plugin. The closest model is Kubernetes'
//! `hack/local-up-cluster.sh`; what differs is that everything of one node lives in its own
//! network namespace, cgroup tree and directory, so environments side by side never collide and
//! the next run starts clean.
//!
//! Two steps, because the control plane must listen where pods can reach it:
//! 1. [`NodeHost::prepare`] takes a slot ([`network::Slot`]), removes what a dead holder of
//!    that slot left behind, and creates the network namespace and the cgroup tree. Its
//!    [`NodeHost::host_ip`] is the address the apiserver and the collector listen on
//!    ([`crate::cluster::ClusterOptions`]).
//! 2. [`Node::start`] writes the configuration and certificates, starts containerd, imports the
//!    OCI archives, applies the cluster objects (CoreDNS's RBAC, the `kube-dns` Service), starts
//!    kube-scheduler (host namespace), the kubelet, kube-proxy and CoreDNS (node namespace), and
//!    waits until the Node is `Ready`.
//!
//! [`Node::shutdown`] (and `Drop`) stop the components, kill and delete every task, kill what is
//! left in the cgroup tree, unmount everything under `node/`, delete the network namespace
//! (which takes the veth pair, the bridge and every iptables rule with it) and remove
//! containerd's and the kubelet's state; the logs stay.
//!
//! Layout under the environment's directory: `node/` holds `containerd.toml`, `pod-logs/`,
//! `cni/` (conf, IPAM state), `pki/`, the kubeconfigs and configurations of each component;
//! containerd's socket, root and state and the kubelet's root dir are in the slot's short
//! runtime directory ([`network::runtime_dir`]: unix socket paths are limited to 107 bytes); the logs are `containerd.log`,
//! `kubelet.log`, `kube-proxy.log`, `kube-scheduler.log` and `coredns.log` next to the
//! control plane's.
//!
//! Requirements: root, cgroup v1 or v2 hierarchies, overlayfs, bridges with br_netfilter,
//! `nsenter` and `ip` (`tools/ensure-tools.sh` checks them and builds or installs the rest).
//! It must not know about the operator, the runner or the tests' images beyond their archives.

pub mod cleanup;
pub mod containerd;
pub mod kubelet;
pub mod network;
pub mod services;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;

use crate::certs::{CertUsage, CertsError};
use crate::cluster::{self, Cluster};
use crate::process::{self, ManagedProcess, ProcessError, ProcessSpec};
use crate::tools::{self, MissingTool};
use crate::wait;

/// The Node's name.
pub const NODE_NAME: &str = "testenv-node";
/// The default sandbox (pause) image reference (`cargo xtask images` builds it).
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10.2";
/// The namespace and name of the collector's Service (ports `otlp-grpc` 4317, `otlp-http` 4318).
pub const COLLECTOR_SERVICE: (&str, &str) = ("testenv-system", "otel-collector");
/// How long the node may take to become Ready (image import and first start included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Grace period of each component on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Lines of a log quoted in errors.
const LOG_TAIL_LINES: usize = 40;

/// Errors of the real node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A tool is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path (or program).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// Every slot is held by a living environment.
    #[error("all {slots} node slots in {dir} are held by running environments")]
    NoSlot {
        /// How many slots exist.
        slots: u8,
        /// Where their locks live.
        dir: PathBuf,
    },
    /// A certificate could not be issued.
    #[error("cannot issue the node's certificates: {0}")]
    Certs(#[from] CertsError),
    /// A configuration could not be rendered.
    #[error("cannot render a configuration: {0}")]
    Render(#[from] serde_norway::Error),
    /// A process could not be spawned or stopped.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
    /// A Service did not answer from inside the node in time.
    #[error("{what} did not accept connections from the node in time (last seen: {last})")]
    ServiceUnreachable {
        /// The Service and port.
        what: String,
        /// The last attempt's outcome.
        last: String,
    },
    /// A component exited or did not become ready in time.
    #[error("{component} did not become ready: {reason}\nlog {log} (last lines):\n{tail}")]
    NotReady {
        /// The component.
        component: &'static str,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
}

/// What the node runs: the OCI archives to import and the sandbox image's reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// OCI image-layout archives imported into containerd (each names its reference).
    pub images: Vec<PathBuf>,
    /// The pause image's reference; one of `images` must carry it.
    pub sandbox_image: String,
}

impl NodeConfig {
    /// Imports the archives `cargo xtask images` built of `images` (include
    /// [`crate::images::PAUSE`], the sandbox), with the default sandbox image; the error names
    /// `cargo xtask images` when an archive is missing.
    pub fn built_images(
        images: &[crate::images::Image],
    ) -> Result<Self, crate::images::ImageError> {
        Ok(Self {
            images: images
                .iter()
                .map(crate::images::archive)
                .collect::<Result<_, _>>()?,
            ..Self::default()
        })
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            sandbox_image: DEFAULT_SANDBOX_IMAGE.to_owned(),
        }
    }
}

/// Step 1: the node's slot, network namespace and cgroup tree, before the control plane starts.
#[derive(Debug)]
pub struct NodeHost {
    slot: network::Slot,
    addresses: network::Addresses,
    cgroup_root: String,
    node_dir: PathBuf,
    /// containerd's and the kubelet's state and sockets ([`network::runtime_dir`]).
    runtime_dir: PathBuf,
    torn_down: bool,
}

impl NodeHost {
    /// Takes a slot, cleans what a dead previous holder left, creates the network namespace
    /// and the cgroup tree. `env_dir` is the environment's directory.
    pub fn prepare(env_dir: &Path) -> Result<Self, NodeError> {
        let (slot, previous) = network::Slot::acquire(env_dir)?;
        let n = slot.number();
        let addresses = network::Addresses::of_slot(n);
        let cgroup_root = cleanup::cgroup_root(n);
        let runtime_dir = network::runtime_dir(n);
        // The lock is ours, so whoever held it is gone: remove what it left.
        remove_leftovers(&addresses, &cgroup_root, previous.as_deref());
        clear_runtime_dir(&runtime_dir);
        let node_dir = env_dir.join("node");
        let mut host = Self {
            slot,
            addresses,
            cgroup_root,
            node_dir,
            runtime_dir,
            torn_down: false,
        };
        for dir in [&host.node_dir, &host.runtime_dir] {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        if let Err(e) =
            network::create(&host.addresses).and_then(|()| cleanup::create_tree(&host.cgroup_root))
        {
            host.teardown();
            return Err(e);
        }
        Ok(host)
    }

    /// The host end's address: where the apiserver and the collector must listen.
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(self.addresses.host_ip)
    }

    /// The node IP.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.addresses.node_ip
    }

    /// The slot's number (see [`network`]).
    pub fn slot(&self) -> u8 {
        self.slot.number()
    }

    /// The slot's names and addresses.
    pub fn addresses(&self) -> &network::Addresses {
        &self.addresses
    }

    /// Kills the cgroup tree, unmounts `node/`, deletes the namespace. Idempotent.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        remove_leftovers(&self.addresses, &self.cgroup_root, None);
        let _ = cleanup::unmount_under(&self.node_dir);
        // Free the disk (image layers, volumes); the logs and configuration stay in `node/`.
        clear_runtime_dir(&self.runtime_dir);
    }
}

impl Drop for NodeHost {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes what slot `addresses` may have left: processes and cgroups of `cgroup_root`, the
/// mounts under `<previous env>/node`, and the network namespace.
fn remove_leftovers(addresses: &network::Addresses, cgroup_root: &str, previous: Option<&Path>) {
    let _ = cleanup::kill_tree(cgroup_root);
    if let Some(env_dir) = previous {
        let node_dir = env_dir.join("node");
        let _ = cleanup::unmount_under(&node_dir);
        for dir in ["containerd/root", "containerd/state", "kubelet"] {
            let _ = std::fs::remove_dir_all(node_dir.join(dir));
        }
    }
    network::delete(addresses);
}

/// Unmounts what is mounted under a slot's runtime directory (overlay root filesystems, volumes)
/// and removes it. Best effort.
fn clear_runtime_dir(runtime_dir: &Path) {
    let _ = cleanup::unmount_under(runtime_dir);
    let _ = std::fs::remove_dir_all(runtime_dir);
}

/// A running node. Stopped and cleaned up by [`Node::shutdown`] or on drop.
pub struct Node {
    // Stopped in this order.
    coredns: Option<ManagedProcess>,
    proxy: Option<ManagedProcess>,
    kubelet: Option<ManagedProcess>,
    scheduler: Option<ManagedProcess>,
    containerd: Option<ManagedProcess>,
    ctr: PathBuf,
    containerd_paths: containerd::Paths,
    host: NodeHost,
    ready_after: Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("host", &self.host)
            .field("ready_after", &self.ready_after)
            .finish_non_exhaustive()
    }
}

/// The tool binaries of the node.
struct Binaries {
    kubelet: PathBuf,
    scheduler: PathBuf,
    proxy: PathBuf,
    containerd: PathBuf,
    ctr: PathBuf,
    runc: PathBuf,
    coredns: PathBuf,
    cni: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self, MissingTool> {
        // The shim and iptables are found through PATH (the tools directory comes first).
        tools::bin("containerd-shim-runc-v2")?;
        tools::bin("iptables")?;
        let cni = tools::bin_dir().join("cni");
        if !cni.join("bridge").is_file() {
            return Err(MissingTool {
                name: "cni/bridge".into(),
                path: cni.join("bridge"),
            });
        }
        Ok(Self {
            kubelet: tools::bin("kubelet")?,
            scheduler: tools::bin("kube-scheduler")?,
            proxy: tools::bin("kube-proxy")?,
            containerd: tools::bin("containerd")?,
            ctr: tools::bin("ctr")?,
            runc: tools::bin("runc")?,
            coredns: tools::bin("coredns")?,
            cni,
        })
    }
}

impl Node {
    /// Step 2: starts the node against `cluster` (started with
    /// [`crate::cluster::ClusterOptions`] `{ address: host.host_ip(), real_node: true }`),
    /// logging into `log_dir`, and waits until the Node is Ready.
    pub async fn start(
        host: NodeHost,
        cluster: &Cluster,
        log_dir: &Path,
        config: &NodeConfig,
    ) -> Result<Self, NodeError> {
        let started = Instant::now();
        let bins = Binaries::find()?;
        let node_dir = host.node_dir.clone();
        let addresses = host.addresses.clone();
        let containerd_paths = containerd::Paths {
            // The configuration stays with the logs; state and sockets go to the short runtime
            // directory (socket path lengths, see `network::RUNTIME_DIR`).
            config: node_dir.join("containerd.toml"),
            ..containerd::Paths::under(&host.runtime_dir)
        };
        let mut node = Self {
            coredns: None,
            proxy: None,
            kubelet: None,
            scheduler: None,
            containerd: None,
            ctr: bins.ctr.clone(),
            containerd_paths: containerd_paths.clone(),
            host,
            ready_after: Duration::ZERO,
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| NodeError::Io { path, source }
        };
        let write = |path: &Path, contents: &str| -> Result<(), NodeError> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(path, contents).map_err(io(path))
        };

        // CNI: one bridge network on the slot's pod range, IPAM state under node/.
        let cni_conf_dir = node_dir.join("cni").join("net.d");
        write(
            &cni_conf_dir.join("10-testenv.conflist"),
            &render_cni_conflist(&addresses.pod_cidr, &node_dir.join("cni").join("ipam")),
        )?;

        // containerd.
        std::fs::create_dir_all(&containerd_paths.dir).map_err(io(&containerd_paths.dir))?;
        write(
            &containerd_paths.config,
            &containerd::render_config(
                &containerd_paths,
                &containerd::Settings {
                    runc: &bins.runc,
                    cni_bin_dir: &bins.cni,
                    cni_conf_dir: &cni_conf_dir,
                    sandbox_image: &config.sandbox_image,
                },
            ),
        )?;
        let spec = in_netns(
            &addresses,
            "containerd",
            &bins.containerd,
            log_dir.join("containerd.log"),
        )
        .arg("--config")
        .arg(&containerd_paths.config);
        let containerd = ManagedProcess::spawn(spec)?;
        cleanup::join_runtime(&node.host.cgroup_root, containerd.pid())?;
        node.containerd = Some(containerd);
        node.wait_for_containerd().await?;
        for archive in &config.images {
            containerd::import(&bins.ctr, &containerd_paths, archive)?;
        }

        // Identities and kubeconfigs.
        let pki = cluster.pki();
        let url = cluster.api_server_url().to_owned();
        let kubelet_paths = kubelet::Paths {
            // `--root-dir` holds the device-plugin and pod-resources sockets.
            root: node.host.runtime_dir.join("kubelet"),
            ..kubelet::Paths::under(&node_dir)
        };
        let serving = pki.issue(
            NODE_NAME,
            None,
            &kubelet::serving_sans(addresses.node_ip, NODE_NAME),
            CertUsage::Server,
        )?;
        write(&kubelet_paths.serving_cert, &serving.cert_pem)?;
        crate::certs::write_pem(&kubelet_paths.serving_key, &serving.key_pem, true)?;
        let kubeconfig =
            |user: &str, group: Option<&str>, file: &str| -> Result<PathBuf, NodeError> {
                let identity = pki.issue(user, group, &[], CertUsage::Client)?;
                let path = node_dir.join(file);
                let yaml =
                    cluster::render_client_kubeconfig(&url, &pki.ca.cert_pem, user, &identity)?;
                write(&path, &yaml)?;
                Ok(path)
            };
        let node_user = format!("system:node:{NODE_NAME}");
        let kubelet_kubeconfig =
            kubeconfig(&node_user, Some("system:nodes"), "kubelet.kubeconfig")?;
        let proxy_kubeconfig = kubeconfig("system:kube-proxy", None, "kube-proxy.kubeconfig")?;
        let scheduler_kubeconfig =
            kubeconfig("system:kube-scheduler", None, "kube-scheduler.kubeconfig")?;
        let coredns_kubeconfig = kubeconfig(services::COREDNS_USER, None, "coredns.kubeconfig")?;

        // Cluster objects: CoreDNS may read Services, kube-dns points at it.
        let client = cluster.client();
        services::coredns_rbac(&client).await?;
        services::host_service(
            &client,
            "kube-system",
            "kube-dns",
            Some(services::CLUSTER_DNS_IP),
            addresses.node_ip,
            &[
                services::HostPort {
                    name: "dns",
                    protocol: "UDP",
                    port: 53,
                    target: 53,
                },
                services::HostPort {
                    name: "dns-tcp",
                    protocol: "TCP",
                    port: 53,
                    target: 53,
                },
            ],
        )
        .await?;

        // kube-scheduler (host namespace: it only talks to the apiserver).
        let spec = ProcessSpec::new(
            "kube-scheduler",
            &bins.scheduler,
            log_dir.join("kube-scheduler.log"),
        )
        .arg(flag("kubeconfig", &scheduler_kubeconfig))
        .arg("--leader-elect=false")
        .arg("--secure-port=0")
        .arg("--v=1");
        node.scheduler = Some(ManagedProcess::spawn(spec)?);

        // The kubelet.
        let resolv_conf = node_dir.join("resolv.conf");
        write(
            &resolv_conf,
            "# testenv: pods resolve cluster names through CoreDNS only (no upstream)\n",
        )?;
        let kubelet_config = kubelet::render_config(&kubelet::Settings {
            node_ip: addresses.node_ip,
            runtime_endpoint: &containerd_paths.endpoint(),
            client_ca_file: &cluster.pki_files().ca_cert,
            tls_cert_file: &kubelet_paths.serving_cert,
            tls_key_file: &kubelet_paths.serving_key,
            cluster_dns: services::CLUSTER_DNS_IP,
            cgroup_root: &node.host.cgroup_root,
            pod_logs_dir: &kubelet_paths.pod_logs,
            resolv_conf: &resolv_conf,
        })?;
        write(&kubelet_paths.config, &kubelet_config)?;
        std::fs::create_dir_all(&kubelet_paths.root).map_err(io(&kubelet_paths.root))?;
        std::fs::create_dir_all(&kubelet_paths.pod_logs).map_err(io(&kubelet_paths.pod_logs))?;
        let spec = in_netns(
            &addresses,
            "kubelet",
            &bins.kubelet,
            log_dir.join("kubelet.log"),
        )
        .arg(flag("config", &kubelet_paths.config))
        .arg(flag("kubeconfig", &kubelet_kubeconfig))
        .arg(flag("root-dir", &kubelet_paths.root))
        .arg(flag("hostname-override", NODE_NAME))
        .arg(flag("node-ip", addresses.node_ip.to_string()))
        .arg("--v=1");
        node.kubelet = Some(ManagedProcess::spawn(spec)?);

        // kube-proxy.
        let proxy_config = node_dir.join("kube-proxy.yaml");
        write(
            &proxy_config,
            &services::render_proxy_config(&proxy_kubeconfig, NODE_NAME, &addresses.pod_cidr)?,
        )?;
        let spec = in_netns(
            &addresses,
            "kube-proxy",
            &bins.proxy,
            log_dir.join("kube-proxy.log"),
        )
        .arg(flag("config", &proxy_config))
        .arg("--v=1");
        node.proxy = Some(ManagedProcess::spawn(spec)?);

        // CoreDNS on the node IP.
        let corefile = node_dir.join("Corefile");
        write(
            &corefile,
            &services::render_corefile(addresses.node_ip, &coredns_kubeconfig),
        )?;
        let spec = in_netns(
            &addresses,
            "coredns",
            &bins.coredns,
            log_dir.join("coredns.log"),
        )
        .arg("-conf")
        .arg(&corefile);
        node.coredns = Some(ManagedProcess::spawn(spec)?);

        node.wait_ready(&client).await?;
        node.ready_after = started.elapsed();
        Ok(node)
    }

    /// Polls containerd's socket (`ctr version`) until it answers.
    async fn wait_for_containerd(&mut self) -> Result<(), NodeError> {
        let log = self
            .containerd
            .as_ref()
            .map(|p| p.log_path().to_owned())
            .unwrap_or_default();
        let log_ref = &log;
        let (ctr, paths) = (&self.ctr, &self.containerd_paths);
        let mut containerd = self.containerd.as_mut();
        let ready = wait::until_ok_or_abort("containerd's socket", READY_TIMEOUT, || {
            let exited = containerd.as_mut().map(|p| p.try_exit_status()).transpose();
            async move {
                match exited {
                    Err(e) => Err(NodeError::from(e)),
                    Ok(Some(Some(status))) => Err(not_ready(
                        "containerd",
                        format!("exited with {status}"),
                        log_ref,
                    )),
                    Ok(_) => Ok(containerd::ctr(ctr, paths, &["version"]).map(|_| ())),
                }
            }
        })
        .await?;
        ready.map_err(|e| not_ready("containerd", e.last.unwrap_or_default(), &log))
    }

    /// Waits until the Node is Ready and CoreDNS accepts TCP on the node IP; fails early when a
    /// component exits.
    async fn wait_ready(&mut self, client: &kube::Client) -> Result<(), NodeError> {
        let nodes: kube::Api<NodeObject> = kube::Api::all(client.clone());
        let dns = SocketAddr::new(IpAddr::V4(self.host.addresses.node_ip), 53);
        let kubelet_log = self
            .kubelet
            .as_ref()
            .map(|p| p.log_path().to_owned())
            .unwrap_or_default();
        let mut processes = [
            ("containerd", self.containerd.as_mut()),
            ("kube-scheduler", self.scheduler.as_mut()),
            ("kubelet", self.kubelet.as_mut()),
            ("kube-proxy", self.proxy.as_mut()),
            ("coredns", self.coredns.as_mut()),
        ];
        let nodes = &nodes;
        let ready = wait::until_ok_or_abort("the Node to be Ready", READY_TIMEOUT, || {
            // Checked before the async part: the first component that exited, if any.
            let mut exited = Ok(None);
            for (name, process) in processes.iter_mut() {
                if let Some(process) = process.as_mut() {
                    match process.try_exit_status() {
                        Ok(Some(status)) => {
                            exited = Ok(Some(not_ready(
                                name,
                                format!("exited with {status}"),
                                process.log_path(),
                            )));
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            exited = Err(NodeError::from(e));
                            break;
                        }
                    }
                }
            }
            async move {
                if let Some(error) = exited? {
                    return Err(error);
                }
                Ok(match nodes.get_opt(NODE_NAME).await {
                    Ok(Some(node)) if node_is_ready(&node) => {
                        if process::accepts_tcp(dns).await {
                            Ok(())
                        } else {
                            Err(format!("CoreDNS not accepting on {dns}"))
                        }
                    }
                    Ok(Some(_)) => Err(format!("Node {NODE_NAME} not Ready yet")),
                    Ok(None) => Err(format!("Node {NODE_NAME} not registered yet")),
                    Err(e) => Err(format!("cannot read Node {NODE_NAME}: {e}")),
                })
            }
        })
        .await?;
        ready.map_err(|e| {
            not_ready(
                "kubelet",
                format!("after {READY_TIMEOUT:?}: {}", e.last.unwrap_or_default()),
                &kubelet_log,
            )
        })
    }

    /// The slot's number (names `testenv-<slot>`, see [`network`]).
    pub fn slot(&self) -> u8 {
        self.host.slot()
    }

    /// How long [`Node::start`] took until the Node was Ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The node IP.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.host.node_ip()
    }

    /// The host end's address (where the apiserver and collector listen).
    pub fn host_ip(&self) -> IpAddr {
        self.host.host_ip()
    }

    /// Waits until Service `namespace/name` accepts TCP connections on `port` from inside the
    /// node's network namespace, i.e. until kube-proxy has programmed its endpoints: a Service
    /// applied a moment ago refuses connections (kube-proxy's REJECT rule for a Service without
    /// endpoints) until kube-proxy's next sync. Each attempt connects with bash's `/dev/tcp`
    /// through `nsenter --net`.
    pub async fn wait_for_service(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let what = format!("Service {namespace}/{name} port {port}");
        let services: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(client.clone(), namespace);
        let netns = self.host.addresses.nsenter_net_arg();
        wait::until_ok(&what, timeout, || async {
            let service = services
                .get(name)
                .await
                .map_err(|e| format!("cannot read the Service: {e}"))?;
            let ip = service
                .spec
                .and_then(|s| s.cluster_ip)
                .ok_or_else(|| "no cluster IP yet".to_owned())?;
            let mut child = tokio::process::Command::new("nsenter")
                .arg(&netns)
                .args(["--", "bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run nsenter: {e}"))?;
            // A dropped packet would hang the connect: one second per attempt.
            match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("connecting to {ip}:{port}: {status}")),
                Ok(Err(e)) => Err(format!("waiting for nsenter: {e}")),
                Err(_) => Err(format!("connecting to {ip}:{port}: no answer within 1 s")),
            }
        })
        .await
        .map_err(|e| NodeError::ServiceUnreachable {
            what,
            last: e.last.unwrap_or_else(|| "nothing".to_owned()),
        })
    }

    /// Runs `ctr` against this node's containerd in the CRI namespace (`k8s.io`).
    pub fn ctr(&self, args: &[&str]) -> Result<String, NodeError> {
        containerd::ctr(&self.ctr, &self.containerd_paths, args)
    }

    /// Name and process id of each running component, in stop order.
    pub fn processes(&self) -> Vec<(String, u32)> {
        [
            &self.coredns,
            &self.proxy,
            &self.kubelet,
            &self.scheduler,
            &self.containerd,
        ]
        .into_iter()
        .flatten()
        .map(|p| (p.name().to_owned(), p.pid()))
        .collect()
    }

    /// Stops CoreDNS, kube-proxy, the kubelet and kube-scheduler, deletes every container,
    /// stops containerd and removes the node from the host. The logs stay.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let mut first_error = None;
        for process in [
            self.coredns.take(),
            self.proxy.take(),
            self.kubelet.take(),
            self.scheduler.take(),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = process.stop(SHUTDOWN_GRACE).await {
                first_error.get_or_insert(e);
            }
        }
        containerd::delete_all_tasks(&self.ctr, &self.containerd_paths);
        if let Some(process) = self.containerd.take()
            && let Err(e) = process.stop(SHUTDOWN_GRACE).await
        {
            first_error.get_or_insert(e);
        }
        self.host.teardown();
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL the components (each ManagedProcess does on drop), then the containers
        // through the cgroup tree, then the mounts and the namespace (NodeHost's drop).
        drop(self.coredns.take());
        drop(self.proxy.take());
        drop(self.kubelet.take());
        drop(self.scheduler.take());
        drop(self.containerd.take());
    }
}

/// `true` when the Node's `Ready` condition is `True` and the node-lifecycle controller has
/// removed the `node.kubernetes.io/not-ready` taint (until then nothing is scheduled).
fn node_is_ready(node: &NodeObject) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
    ready && !tainted
}

/// A process running `binary` inside the node's network namespace (`nsenter --net`, which
/// execs it: the process id is the component's), with the tools directory first on PATH (the
/// runc shim, iptables, conntrack).
fn in_netns(
    addresses: &network::Addresses,
    name: &str,
    binary: &Path,
    log: PathBuf,
) -> ProcessSpec {
    let mut path = OsString::from(tools::bin_dir());
    if let Some(inherited) = std::env::var_os("PATH") {
        path.push(":");
        path.push(inherited);
    }
    ProcessSpec::new(name, "nsenter", log)
        .arg(addresses.nsenter_net_arg())
        .arg("--")
        .arg(binary)
        .env("PATH", path)
}

/// The CNI configuration: the bridge plugin (`cni0`, gateway, masquerade for traffic leaving
/// the pod range, hairpin so a pod reaches itself through its Service) with host-local IPAM on
/// `pod_cidr`, and portmap.
fn render_cni_conflist(pod_cidr: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "testenv",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir,
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
    .to_string()
}

fn flag(name: &str, value: impl AsRef<std::ffi::OsStr>) -> OsString {
    let mut s = OsString::from(format!("--{name}="));
    s.push(value.as_ref());
    s
}

fn not_ready(component: &'static str, reason: String, log: &Path) -> NodeError {
    NodeError::NotReady {
        component,
        reason,
        log: log.to_owned(),
        tail: process::log_tail(log, LOG_TAIL_LINES),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cni_conflist_uses_the_slot_range_and_private_ipam_state() {
        let conf = render_cni_conflist("10.202.4.0/24", Path::new("/env/node/cni/ipam"));
        let doc: serde_json::Value = serde_json::from_str(&conf).unwrap();
        assert_eq!(doc["plugins"][0]["type"], "bridge");
        assert_eq!(
            doc["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.202.4.0/24"
        );
        assert_eq!(doc["plugins"][0]["ipam"]["dataDir"], "/env/node/cni/ipam");
        assert_eq!(doc["plugins"][1]["type"], "portmap");
    }
}
