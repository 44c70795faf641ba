//! Runs one container as a local process: its own process group (the stand-in for the
//! container's cgroup: signals reach every process it started), an environment that holds only
//! what the kubelet module passes (nothing inherited), stdin from `/dev/null`, stdout and stderr
//! appended to the container's log file.
//!
//! [`crate::process::ManagedProcess`] does not fit here: it inherits the test's environment and
//! signals only the process it started. The safety nets are the same: `Drop` kills the group, and
//! `PR_SET_PDEATHSIG` kills the process when the thread that spawned it exits (see
//! [`crate::process`] for that thread caveat). [`ProcessRegistry`] lets the kubelet handle kill
//! every group synchronously when it is dropped.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

/// The process groups of all running containers, shared by the kubelet's tasks and its handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessRegistry {
    groups: Arc<Mutex<BTreeSet<i32>>>,
}

impl ProcessRegistry {
    fn insert(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pgid);
    }

    /// Sends `signal` to every registered process group.
    pub(crate) fn signal_all(&self, signal: Signal) {
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for pgid in groups {
            signal_group(pgid, signal);
        }
    }

    /// `true` when no container process is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// Sends `signal` to process group `pgid` (errors such as "no such process" are ignored: the
/// group is gone).
fn signal_group(pgid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// What to execute for one container run.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment (later entries win).
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: PathBuf,
    /// Where stdout and stderr are appended.
    pub log_path: PathBuf,
}

/// A running container process; dropping it kills its process group.
#[derive(Debug)]
pub(crate) struct ContainerProcess {
    child: Child,
    pgid: i32,
    registry: ProcessRegistry,
}

impl ContainerProcess {
    /// Starts `launch` in a new process group. Must be called inside a tokio runtime.
    pub(crate) fn spawn(launch: &Launch, registry: &ProcessRegistry) -> io::Result<Self> {
        if let Some(dir) = launch.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let stdout = File::options()
            .create(true)
            .append(true)
            .open(&launch.log_path)?;
        let stderr = stdout.try_clone()?;
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        crate::process::kill_with_parent(&mut command);
        let child = command.spawn()?;
        // `id()` is `Some` until the child has been reaped; nothing has waited on it yet. With
        // `process_group(0)` the group id is the child's pid.
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or_default();
        registry.insert(pgid);
        Ok(Self {
            child,
            pgid,
            registry: registry.clone(),
        })
    }

    /// The process id (also the process group id).
    pub(crate) fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the process to exit, then kills what is left of its group (like a container
    /// runtime tearing down the cgroup) and returns the exit code (128 + signal when killed).
    pub(crate) async fn wait(&mut self) -> io::Result<i32> {
        let status = self.child.wait().await;
        signal_group(self.pgid, Signal::KILL);
        status.map(exit_code)
    }

    /// Sends SIGTERM to the group, waits up to `grace`, then SIGKILL; returns the exit code.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> io::Result<i32> {
        signal_group(self.pgid, Signal::TERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                signal_group(self.pgid, Signal::KILL);
                status.map(exit_code)
            }
            Err(_elapsed) => {
                signal_group(self.pgid, Signal::KILL);
                self.child.wait().await.map(exit_code)
            }
        }
    }
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        signal_group(self.pgid, Signal::KILL);
        let _ = self.child.start_kill();
        self.registry.remove(self.pgid);
    }
}

/// The container exit code of `status`: the code, or 128 + the signal number.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &tempfile::TempDir, script: &str) -> Launch {
        Launch {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("ONLY".into(), "this".into())],
            cwd: dir.path().to_path_buf(),
            log_path: dir.path().join("logs/c.log"),
        }
    }

    #[tokio::test]
    async fn environment_is_not_inherited_and_output_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let registry = ProcessRegistry::default();
        let mut p = ContainerProcess::spawn(
            &launch(
                &dir,
                "echo only=$ONLY home=${HOME:-unset} cwd=$(pwd); exit 3",
            ),
            &registry,
        )
        .unwrap();
        assert!(!registry.is_empty());
        assert_eq!(p.wait().await.unwrap(), 3);
        drop(p);
        assert!(registry.is_empty());
        let log = std::fs::read_to_string(dir.path().join("logs/c.log")).unwrap();
        assert!(log.contains("only=this home=unset"), "{log}");
        assert!(
            log.contains(&format!("cwd={}", dir.path().display())),
            "{log}"
        );
    }

    #[tokio::test]
    async fn terminate_reaches_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let registry = ProcessRegistry::default();
        // The shell ignores SIGTERM; its child does not. SIGKILL after the grace period ends both.
        let mut p = ContainerProcess::spawn(
            &launch(
                &dir,
                "trap '' TERM; sleep 300 & echo $! > child.pid; wait; sleep 300",
            ),
            &registry,
        )
        .unwrap();
        let pid_file = dir.path().join("child.pid");
        let child: i32 = crate::wait::until("the child's pid", Duration::from_secs(10), || {
            std::future::ready(
                std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|text| text.trim().parse().ok()),
            )
        })
        .await
        .unwrap();
        let code = p.terminate(Duration::from_millis(500)).await.unwrap();
        assert_eq!(code, 137);
        let stat = format!("/proc/{child}/stat");
        crate::wait::until_ok("the child to be gone", Duration::from_secs(10), || {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            std::future::ready(if state.is_empty() || state.contains(") Z ") {
                Ok(())
            } else {
                Err(format!("child alive: {state}"))
            })
        })
        .await
        .unwrap();
    }
}
