//! containerd for the real node: its configuration (everything under the environment's
//! `node/containerd/`, nothing under `/var/lib/containerd` or `/run/containerd` that another
//! containerd could share), the OCI archive import, and stopping every task before containerd
//! stops.
//!
//! Configuration (`config.toml`, version 3, containerd 2.x): overlayfs snapshotter; runc from
//! the tools directory with the cgroupfs driver (`SystemdCgroup = false`, the kubelet's
//! `cgroupDriver: cgroupfs`) and its state in `state/runc`; the CNI plugins of the tools
//! directory with one conf file written by [`super::Node`]; the sandbox image pinned to the
//! pause reference; the pods' network namespaces under `state/netns`; NRI off (its socket path
//! is machine-wide); no registry is ever contacted: images come from `ctr images import`.
//! `restrict_oom_score_adj`: the kubelet asks for `oom_score_adj` -998 for sandboxes, and a
//! root without `CAP_SYS_RESOURCE` (this kind of machine) may not lower it; runc then dies with
//! "can't get final child's PID from pipe: EOF" (its log says "failed to update
//! /proc/self/oom_score_adj: Permission denied"). Restricted, containerd never asks for less
//! than its own score.
//!
//! It must not talk to the API server.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::NodeError;

/// The containerd namespace the CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The paths of one containerd.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `node/containerd/`.
    pub dir: PathBuf,
    /// `config.toml`.
    pub config: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// `root/` (content, snapshots, metadata).
    pub root: PathBuf,
    /// `state/` (tasks, runc state, pod network namespaces).
    pub state: PathBuf,
}

impl Paths {
    /// The paths under `node_dir/containerd`.
    pub fn under(node_dir: &Path) -> Self {
        let dir = node_dir.join("containerd");
        Self {
            config: dir.join("config.toml"),
            socket: dir.join("containerd.sock"),
            root: dir.join("root"),
            state: dir.join("state"),
            dir,
        }
    }

    /// `unix://<socket>`, the kubelet's `containerRuntimeEndpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

/// What [`render_config`] needs besides the paths.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The runc binary.
    pub runc: &'a Path,
    /// The directory holding the CNI plugins.
    pub cni_bin_dir: &'a Path,
    /// The directory holding the CNI configuration.
    pub cni_conf_dir: &'a Path,
    /// The pause image's full reference.
    pub sandbox_image: &'a str,
}

/// `config.toml`.
pub fn render_config(paths: &Paths, settings: &Settings<'_>) -> String {
    let q = |p: &Path| toml_string(&p.to_string_lossy());
    format!(
        r#"# Written by testenv::node. See testenv/src/node/containerd.rs.
version = 3
root = {root}
state = {state}
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = {socket}

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = {opt}

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = {sandbox}

  [plugins.'io.containerd.cri.v1.runtime']
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = {runc}
          Root = {runc_root}
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [{cni_bin}]
      conf_dir = {cni_conf}
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"#,
        root = q(&paths.root),
        state = q(&paths.state),
        socket = q(&paths.socket),
        opt = q(&paths.root.join("opt")),
        sandbox = toml_string(settings.sandbox_image),
        runc = q(settings.runc),
        runc_root = q(&paths.state.join("runc")),
        cni_bin = q(settings.cni_bin_dir),
        cni_conf = q(settings.cni_conf_dir),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// Runs `ctr --address <socket> --namespace k8s.io <args>` to completion and returns stdout.
pub fn ctr(ctr_bin: &Path, paths: &Paths, args: &[&str]) -> Result<String, NodeError> {
    let output = Command::new(ctr_bin)
        .arg("--address")
        .arg(&paths.socket)
        .arg("--namespace")
        .arg(CRI_NAMESPACE)
        .args(args)
        .output()
        .map_err(|source| NodeError::Io {
            path: ctr_bin.to_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NodeError::Command {
            command: format!("ctr {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Imports an OCI image-layout archive (the reference comes from its index's
/// `org.opencontainers.image.ref.name` annotation) and unpacks it for the overlayfs snapshotter.
pub fn import(ctr_bin: &Path, paths: &Paths, archive: &Path) -> Result<(), NodeError> {
    let archive_arg = OsString::from(archive);
    let archive = archive_arg.to_string_lossy();
    ctr(
        ctr_bin,
        paths,
        &["images", "import", "--platform", "linux/amd64", &archive],
    )
    .map(|_| ())
}

/// Kills and deletes every task (containers and pod sandboxes) in the CRI namespace, so their
/// shims exit and their mounts go. Best effort: what remains is killed through the cgroup tree.
pub fn delete_all_tasks(ctr_bin: &Path, paths: &Paths) {
    let Ok(listing) = ctr(ctr_bin, paths, &["tasks", "list", "--quiet"]) else {
        return;
    };
    let ids: Vec<&str> = listing.split_whitespace().collect();
    for id in &ids {
        let _ = ctr(
            ctr_bin,
            paths,
            &["tasks", "kill", "--all", "--signal", "SIGKILL", id],
        );
    }
    for id in &ids {
        let _ = ctr(ctr_bin, paths, &["tasks", "delete", "--force", id]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_under_the_node_directory() {
        let paths = Paths::under(Path::new("/env/node"));
        let config = render_config(
            &paths,
            &Settings {
                runc: Path::new("/tools/runc"),
                cni_bin_dir: Path::new("/tools/cni"),
                cni_conf_dir: Path::new("/env/node/cni/net.d"),
                sandbox_image: "registry.k8s.io/pause:3.10.2",
            },
        );
        assert!(config.starts_with("# Written by"));
        assert!(config.contains("version = 3"));
        assert!(config.contains("root = \"/env/node/containerd/root\""));
        assert!(config.contains("address = \"/env/node/containerd/containerd.sock\""));
        assert!(config.contains("sandbox = \"registry.k8s.io/pause:3.10.2\""));
        assert!(config.contains("SystemdCgroup = false"));
        assert!(!config.contains("/var/lib/containerd"));
        assert_eq!(
            paths.endpoint(),
            "unix:///env/node/containerd/containerd.sock"
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
