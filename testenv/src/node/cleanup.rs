//! What the real node leaves on the host besides its network namespace, and how it is removed:
//! the cgroup tree `/testenv-<slot>` in every cgroup v1 hierarchy (the kubelet's `cgroupRoot`:
//! every pod and container lives below it, and containerd with its shims in `runtime/` below it),
//! and the mounts under the environment's `node/` directory (overlay root filesystems, the pods'
//! network namespaces, the kubelet's tmpfs volumes).
//!
//! Killing every process of the tree is the one way to stop containers whose shim or containerd
//! is gone (shims daemonize, so the test process's death does not reach them). It must not touch
//! a cgroup or mount that is not under those two roots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::NodeError;

/// Where the cgroup v1 hierarchies are mounted.
const CGROUP_FS: &str = "/sys/fs/cgroup";
/// How long [`kill_tree`] keeps killing before it gives up.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The kubelet's `cgroupRoot` for slot `n`.
pub fn cgroup_root(n: u8) -> String {
    format!("/testenv-{n}")
}

/// The cgroup v1 hierarchies (directories of `/sys/fs/cgroup` holding a `cgroup.procs`).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_FS) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").is_file() && !p.join("cgroup.controllers").exists())
        .collect();
    found.sort();
    found
}

/// Creates `<root>` and `<root>/runtime` in every hierarchy (cpuset needs its CPUs and memory
/// nodes copied from the parent before a task may join).
pub fn create_tree(root: &str) -> Result<(), NodeError> {
    for hierarchy in hierarchies() {
        let mut parent = hierarchy.clone();
        for part in [root.trim_start_matches('/'), "runtime"] {
            let dir = parent.join(part);
            std::fs::create_dir_all(&dir).map_err(|source| NodeError::Io {
                path: dir.clone(),
                source,
            })?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = std::fs::read_to_string(parent.join(file)) {
                    let path = dir.join(file);
                    std::fs::write(&path, value.trim()).map_err(|source| NodeError::Io {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
            parent = dir;
        }
    }
    Ok(())
}

/// Moves process `pid` into `<root>/runtime` of every hierarchy (its future children follow).
pub fn join_runtime(root: &str, pid: u32) -> Result<(), NodeError> {
    for hierarchy in hierarchies() {
        let procs = hierarchy
            .join(root.trim_start_matches('/'))
            .join("runtime")
            .join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|source| NodeError::Io {
            path: procs.clone(),
            source,
        })?;
    }
    Ok(())
}

/// All directories of `root`'s tree in `hierarchy`, deepest first.
fn tree(hierarchy: &Path, root: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&entry.path(), out);
                }
            }
        }
        out.push(dir.to_owned());
    }
    let top = hierarchy.join(root.trim_start_matches('/'));
    let mut out = Vec::new();
    if top.is_dir() {
        walk(&top, &mut out);
    }
    out
}

/// SIGKILLs every process in `root`'s tree until none is left (or 10 s pass),
/// then removes the tree from every hierarchy. Best effort; returns what could not be removed.
pub fn kill_tree(root: &str) -> Vec<PathBuf> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let mut alive = 0;
        for hierarchy in hierarchies() {
            for dir in tree(&hierarchy, root) {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    alive += 1;
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
        }
        if alive == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut left = Vec::new();
    for hierarchy in hierarchies() {
        for dir in tree(&hierarchy, root) {
            // A cgroup whose last task just died can be busy for a moment.
            let mut removed = false;
            for _ in 0..20 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    removed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            if !removed {
                left.push(dir);
            }
        }
    }
    left
}

/// Unmounts (lazily, deepest first) every mount point under `dir`. Best effort; returns the
/// mount points that could not be unmounted.
pub fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
        .into_iter()
        .filter(|p| rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH).is_err())
        .filter(|p| p.exists())
        .collect()
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn cgroup_roots_differ_per_slot() {
        assert_eq!(cgroup_root(3), "/testenv-3");
        assert_ne!(cgroup_root(1), cgroup_root(2));
    }
}
