//! The pods' peak memory, read from the host while they run: the node is the testenv real node
//! (`testenv::node`), whose kubelet (cgroup driver `cgroupfs`, cgroup v1) puts every pod in
//! `<hierarchy>/testenv-<slot>/kubepods/[<qos>/]pod<uid>/`, and each container in a directory of
//! its own below that.
//!
//! Two figures per pod, each kept as the largest value seen:
//! - the runner's `VmHWM` (`/proc/<pid>/status`, the peak resident set: the same measure as GNU
//!   time's maximum RSS in the host-process mode), read for each process of the pod's cgroup
//!   whose name is `llmjob-runner`;
//! - the pod cgroup's `memory.max_usage_in_bytes` (cgroup v1's `memory.peak`: what a memory
//!   limit is compared with; it counts the page cache the pod brought in, e.g. the runner
//!   binary's pages for the first pod that reads them, and the pause container).
//!
//! The runner's process and its container's cgroup vanish as soon as it exits, so both are
//! polled; the pod cgroup lives on until the kubelet cleans the pod up, so its figure includes
//! the runner's last moments (its one upload of the results), which a poll of `VmHWM` may miss.
//! It reads files only; it never writes to a cgroup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the cgroup v1 memory hierarchy is mounted.
const MEMORY_HIERARCHY: &str = "/sys/fs/cgroup/memory";
/// The runner's process name (`comm`, at most 15 bytes).
const RUNNER_COMM: &str = "llmjob-runner";

/// The peaks seen so far of one pod, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peaks {
    /// The largest runner `VmHWM` seen.
    pub runner_hwm: u64,
    /// The largest pod cgroup `memory.max_usage_in_bytes` seen.
    pub pod_cgroup: u64,
}

/// Samples the pods of one real node.
#[derive(Debug)]
pub struct Sampler {
    /// `<memory hierarchy>/testenv-<slot>`.
    root: PathBuf,
    /// Pod uid → its cgroup directory, once found.
    dirs: BTreeMap<String, PathBuf>,
    /// Pod uid → its peaks.
    peaks: BTreeMap<String, Peaks>,
}

impl Sampler {
    /// A sampler for the node of slot `slot` (`testenv::node::Node::slot`); fails when the host
    /// has no cgroup v1 memory hierarchy with that node's tree.
    pub fn new(slot: u8) -> anyhow::Result<Self> {
        let root = Path::new(MEMORY_HIERARCHY).join(format!("testenv-{slot}"));
        anyhow::ensure!(
            root.is_dir(),
            "{} is missing: the bench reads the pods' memory from the real node's cgroup v1 tree",
            root.display()
        );
        Ok(Self {
            root,
            dirs: BTreeMap::new(),
            peaks: BTreeMap::new(),
        })
    }

    /// Reads the current figures of the pods `uids` and keeps the largest.
    pub fn sample<'a>(&mut self, uids: impl IntoIterator<Item = &'a str>) {
        for uid in uids {
            let dir = match self.dirs.get(uid) {
                Some(dir) => dir.clone(),
                None => match find_dir(&self.root, &format!("pod{uid}"), 4) {
                    Some(dir) => {
                        self.dirs.insert(uid.to_owned(), dir.clone());
                        dir
                    }
                    None => continue,
                },
            };
            let peaks = self.peaks.entry(uid.to_owned()).or_default();
            if let Some(bytes) = read_u64(&dir.join("memory.max_usage_in_bytes")) {
                peaks.pod_cgroup = peaks.pod_cgroup.max(bytes);
            }
            for pid in pids_below(&dir) {
                let proc = Path::new("/proc").join(pid.to_string());
                let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
                if comm.trim() != RUNNER_COMM {
                    continue;
                }
                if let Some(kib) = std::fs::read_to_string(proc.join("status"))
                    .ok()
                    .as_deref()
                    .and_then(vm_hwm_kib)
                {
                    peaks.runner_hwm = peaks.runner_hwm.max(kib * 1024);
                }
            }
        }
    }

    /// The peaks of each pod seen, by uid.
    pub fn peaks(&self) -> &BTreeMap<String, Peaks> {
        &self.peaks
    }
}

/// A directory named `name` at most `depth` levels below `root`.
fn find_dir(root: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    let dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    if let Some(found) = dirs
        .iter()
        .find(|d| d.file_name().is_some_and(|n| n == name))
    {
        return Some(found.clone());
    }
    if depth == 0 {
        return None;
    }
    dirs.iter().find_map(|d| find_dir(d, name, depth - 1))
}

/// The processes of `dir` and of the cgroups one level below it (the pod's containers).
fn pids_below(dir: &Path) -> Vec<u32> {
    let mut cgroups = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        cgroups.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    cgroups
        .iter()
        .filter_map(|c| std::fs::read_to_string(c.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `VmHWM` in KiB from the text of `/proc/<pid>/status`.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_the_status_text() {
        let status = "Name:\tllmjob-runner\nVmPeak:\t  200000 kB\nVmHWM:\t   14000 kB\nVmRSS:\t   13000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(14_000));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn pod_directories_are_found_below_the_qos_level() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().to_owned();
        let pod = root.join("kubepods").join("burstable").join("podabc");
        std::fs::create_dir_all(pod.join("0123cafe"))?;
        std::fs::write(pod.join("cgroup.procs"), "")?;
        std::fs::write(pod.join("0123cafe").join("cgroup.procs"), "7\n8\n")?;
        assert_eq!(find_dir(&root, "podabc", 4), Some(pod.clone()));
        assert_eq!(find_dir(&root, "podabc", 1), None, "too deep");
        assert_eq!(find_dir(&root, "podxyz", 4), None);
        assert_eq!(pids_below(&pod), vec![7, 8]);
        Ok(())
    }
}
