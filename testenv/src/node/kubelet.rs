//! The real kubelet's configuration (`KubeletConfiguration`, `kubelet.config.k8s.io/v1beta1`)
//! and flags. What each setting is for:
//!
//! * `failCgroupV1: false`: kubelet 1.35+ refuses cgroup v1 hosts unless told otherwise.
//! * `cgroupDriver: cgroupfs` (containerd's `SystemdCgroup = false`), `cgroupRoot:
//!   /testenv-<slot>`: every pod of this node lives below that one cgroup tree, which
//!   [`super::cleanup`] kills and removes.
//! * `authentication`: client certificates from testenv's CA (the apiserver's
//!   `--kubelet-client-certificate`) and webhook (bearer tokens); anonymous off.
//!   `authorization: Webhook` (SubjectAccessReview, as kubeadm does).
//! * `tlsCertFile`/`tlsPrivateKeyFile`: a serving certificate for the node IP and name, signed
//!   by testenv's CA, which the apiserver verifies (`--kubelet-certificate-authority`), so
//!   `kubectl logs` works without skipping TLS verification.
//! * `clusterDNS`/`clusterDomain`: the CoreDNS Service IP and `cluster.local`.
//! * eviction thresholds near zero (100 MiB of disk, 1 MiB of memory) and image GC off: a dev
//!   box's disk is often fuller than the defaults (10 % free) or even 1 % allow, and a node under
//!   disk pressure evicts the tests' pods and is tainted against new ones.
//! * `podLogsDir`, `--root-dir`: under the environment's directory, not `/var/log/pods` and
//!   `/var/lib/kubelet`.
//!
//! It must not start processes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The kubelet's port on the node IP (the default; each node has its own network namespace).
pub const KUBELET_PORT: u16 = 10250;

/// What [`render_config`] needs.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The node IP: the kubelet serves on it.
    pub node_ip: Ipv4Addr,
    /// containerd's endpoint, `unix://...`.
    pub runtime_endpoint: &'a str,
    /// The CA that signs client certificates.
    pub client_ca_file: &'a Path,
    /// The serving certificate and key.
    pub tls_cert_file: &'a Path,
    /// Its key.
    pub tls_key_file: &'a Path,
    /// The cluster DNS Service IP.
    pub cluster_dns: Ipv4Addr,
    /// The cgroup tree of this node's pods.
    pub cgroup_root: &'a str,
    /// Where container logs go.
    pub pod_logs_dir: &'a Path,
    /// The resolv.conf pods with `dnsPolicy: Default` get (and the upstream of `ClusterFirst`).
    pub resolv_conf: &'a Path,
}

/// The `KubeletConfiguration` YAML.
pub fn render_config(s: &Settings<'_>) -> Result<String, serde_norway::Error> {
    let config = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": s.cgroup_root,
        "containerRuntimeEndpoint": s.runtime_endpoint,
        "address": s.node_ip.to_string(),
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": s.client_ca_file },
        },
        "authorization": { "mode": "Webhook" },
        "tlsCertFile": s.tls_cert_file,
        "tlsPrivateKeyFile": s.tls_key_file,
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "clusterDNS": [s.cluster_dns.to_string()],
        "clusterDomain": "cluster.local",
        "resolvConf": s.resolv_conf,
        "podLogsDir": s.pod_logs_dir,
        "failSwapOn": false,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "100Mi",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "100Mi",
        },
        "evictionPressureTransitionPeriod": "5s",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "volumeStatsAggPeriod": "0s",
        "maxPods": 110,
        "containerLogMaxSize": "10Mi",
    });
    serde_norway::to_string(&config)
}

/// The SANs of the kubelet's serving certificate: the node IP and name.
pub fn serving_sans(node_ip: Ipv4Addr, node_name: &str) -> Vec<String> {
    vec![node_ip.to_string(), node_name.to_owned()]
}

/// The node's kubelet directories under `node_dir`.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `--root-dir`.
    pub root: PathBuf,
    /// `podLogsDir`.
    pub pod_logs: PathBuf,
    /// `kubelet.yaml`.
    pub config: PathBuf,
    /// `kubelet.kubeconfig` (the node's client certificate).
    pub kubeconfig: PathBuf,
    /// Serving certificate.
    pub serving_cert: PathBuf,
    /// Serving key.
    pub serving_key: PathBuf,
}

impl Paths {
    /// The paths under `node_dir`.
    pub fn under(node_dir: &Path) -> Self {
        Self {
            root: node_dir.join("kubelet"),
            pod_logs: node_dir.join("pod-logs"),
            config: node_dir.join("kubelet.yaml"),
            kubeconfig: node_dir.join("kubelet.kubeconfig"),
            serving_cert: node_dir.join("pki").join("kubelet.crt"),
            serving_key: node_dir.join("pki").join("kubelet.key"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_allows_cgroup_v1_and_uses_the_webhook() {
        let yaml = render_config(&Settings {
            node_ip: Ipv4Addr::new(10, 201, 0, 2),
            runtime_endpoint: "unix:///x/containerd.sock",
            client_ca_file: Path::new("/x/ca.crt"),
            tls_cert_file: Path::new("/x/kubelet.crt"),
            tls_key_file: Path::new("/x/kubelet.key"),
            cluster_dns: Ipv4Addr::new(10, 0, 0, 10),
            cgroup_root: "/testenv-0",
            pod_logs_dir: Path::new("/x/pod-logs"),
            resolv_conf: Path::new("/x/resolv.conf"),
        })
        .unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(doc["failCgroupV1"], false);
        assert_eq!(doc["cgroupDriver"], "cgroupfs");
        assert_eq!(doc["authorization"]["mode"], "Webhook");
        assert_eq!(doc["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(doc["clusterDNS"][0], "10.0.0.10");
        assert_eq!(doc["address"], "10.201.0.2");
    }
}
