//! Spawns and supervises the local server processes of the test environment (etcd,
//! kube-apiserver, kube-controller-manager, the collector): one log file per process, death of
//! the child when the test process dies, a graceful stop (SIGTERM, grace period, SIGKILL), and
//! the small readiness helpers they all need (a free loopback port, the address a server logged,
//! "does this port accept TCP").
//!
//! It knows nothing about any particular program: callers build a [`ProcessSpec`] and wait for
//! their own readiness condition.
//!
//! Lifetime guarantees, strongest first:
//! 1. [`ManagedProcess::stop`] — SIGTERM, wait up to the grace period, then SIGKILL and reap.
//! 2. `Drop` — sends SIGKILL synchronously (best effort; tokio reaps the zombie in the background).
//! 3. `PR_SET_PDEATHSIG(SIGKILL)` — the kernel kills the child when the *thread* that spawned it
//!    exits, which covers a test binary that panics, is killed, or calls `exit` without running
//!    destructors. Caveat: it is tied to the spawning thread, not the whole process. Spawn
//!    long-lived processes from a thread that lives as long as they should (the test's own thread
//!    or a runtime worker thread; never from `spawn_blocking`, whose threads exit when idle).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::process::{Child, Command};

/// Errors from spawning or stopping a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("cannot create the log file {path} for `{name}`: {source}")]
    LogFile {
        /// The process's name.
        name: String,
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The program could not be started.
    #[error("cannot start `{name}` ({program}): {source}")]
    Spawn {
        /// The process's name.
        name: String,
        /// The program that was executed.
        program: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Waiting for or signalling the process failed.
    #[error("cannot stop `{name}` (pid {pid}): {source}")]
    Stop {
        /// The process's name.
        name: String,
        /// Its process id.
        pid: u32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// What to run: program, arguments, environment, working directory and where its output goes.
///
/// ```no_run
/// # async fn demo() -> Result<(), testenv::process::ProcessError> {
/// use testenv::process::{ManagedProcess, ProcessSpec};
/// let spec = ProcessSpec::new("etcd", "/path/to/etcd", "/tmp/etcd.log")
///     .arg("--data-dir")
///     .arg("/tmp/etcd-data")
///     .env("ETCD_UNSUPPORTED_ARCH", "amd64");
/// let etcd = ManagedProcess::spawn(spec)?;
/// // ... wait for readiness ...
/// etcd.stop(std::time::Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    log_path: PathBuf,
}

impl ProcessSpec {
    /// A process called `name` (used in errors) running `program`, with stdout and stderr
    /// appended to `log_path` (its parent directory is created). The environment is inherited.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            log_path: log_path.into(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets one environment variable for the child (on top of the inherited environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// A running child process that is killed when dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log_path: PathBuf,
    child: Child,
}

impl ManagedProcess {
    /// Starts the process described by `spec`. Must be called inside a tokio runtime.
    pub fn spawn(spec: ProcessSpec) -> Result<Self, ProcessError> {
        let log_err = |source| ProcessError::LogFile {
            name: spec.name.clone(),
            path: spec.log_path.clone(),
            source,
        };
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(log_err)?;
        }
        let stdout = File::options()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(log_err)?;
        let stderr = stdout.try_clone().map_err(log_err)?;

        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        if let Some(dir) = &spec.current_dir {
            command.current_dir(dir);
        }
        kill_with_parent(&mut command);
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        // `id()` is `Some` until the child has been reaped, and nothing has waited on it yet.
        let pid = child.id().unwrap_or_default();
        Ok(Self {
            name: spec.name,
            pid,
            log_path: spec.log_path,
            child,
        })
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file holding the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `max_lines` lines of the log file (empty if it cannot be read).
    pub fn log_tail(&self, max_lines: usize) -> String {
        log_tail(&self.log_path, max_lines)
    }

    /// `Some(status)` if the process has exited, `None` while it runs.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        self.child.try_wait().map_err(|source| ProcessError::Stop {
            name: self.name.clone(),
            pid: self.pid,
            source,
        })
    }

    /// Sends `SIGKILL` at once (no chance to clean up, as when a node dies or the OOM killer
    /// strikes) and reaps the process. Returns the exit status.
    pub async fn kill(mut self) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        let stop_err = |source| ProcessError::Stop {
            name: self.name.clone(),
            pid: self.pid,
            source,
        };
        self.child.kill().await.map_err(stop_err)?;
        self.child.wait().await.map_err(stop_err)
    }

    /// Sends `SIGTERM`, waits up to `grace` for the process to exit, then sends `SIGKILL` and
    /// reaps it. Returns the exit status.
    pub async fn stop(mut self, grace: Duration) -> Result<ExitStatus, ProcessError> {
        let stop_err = |name: &str, pid, source| ProcessError::Stop {
            name: name.to_owned(),
            pid,
            source,
        };
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            // ESRCH means it exited in between; the wait below collects the status.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.map_err(|e| stop_err(&self.name, self.pid, e)),
            Err(_elapsed) => {
                tracing::warn!(name = %self.name, pid = self.pid, ?grace, "no exit after SIGTERM; sending SIGKILL");
                self.child
                    .kill()
                    .await
                    .map_err(|e| stop_err(&self.name, self.pid, e))?;
                self.child
                    .wait()
                    .await
                    .map_err(|e| stop_err(&self.name, self.pid, e))
            }
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // Best effort: the process may already have exited. `kill_on_drop` would do the same,
        // doing it here makes the intent explicit and independent of that flag.
        let _ = self.child.start_kill();
    }
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits (see the module
/// docs for the thread caveat). The one place of this `unsafe` block: the kubelet's container
/// processes use it too.
#[allow(unsafe_code)]
pub(crate) fn kill_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before `exec`. It only performs the `prctl`
    // and `getppid` system calls through rustix (no allocation, no locks, nothing that is not
    // async-signal-safe), touches no memory shared with the parent and returns an io::Error on
    // failure, which makes `spawn` fail cleanly.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // If the parent already died before the prctl, the signal will never come: bail out.
            if rustix::process::getppid().is_none() {
                return Err(io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// The last `max_lines` lines of the file at `path` (reads at most its last 64 KiB; empty string
/// if it cannot be read).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// A loopback TCP port that was free a moment ago (bound to port 0, then released), and that this
/// process has not handed out before: two tests starting servers at the same instant never get
/// the same port (the kernel can give a released port out again at once). Another process can
/// still take it before the caller binds it: callers retry on "address already in use", and a
/// server that can bind port 0 and report its address is better off doing that
/// ([`logged_addr`]).
pub fn free_loopback_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    unseen_port(&mut handed_out, || {
        TcpListener::bind(("127.0.0.1", 0)).and_then(|l| Ok((l.local_addr()?.port(), l)))
    })
}

/// Attempts at finding a port [`free_loopback_port`] has not handed out before.
const PORT_ATTEMPTS: usize = 64;

/// The first port `bind` returns that is not in `seen`, which it joins. Each binding is held
/// until the search ends, so the kernel cannot return the same port twice within it.
fn unseen_port<L>(
    seen: &mut BTreeSet<u16>,
    mut bind: impl FnMut() -> io::Result<(u16, L)>,
) -> io::Result<u16> {
    let mut held = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let (port, listener) = bind()?;
        if seen.insert(port) {
            return Ok(port);
        }
        held.push(listener);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no loopback port not handed out before in {PORT_ATTEMPTS} attempts"),
    ))
}

/// The address a server logged it listens on: the `addr=<ip:port>` field of the first line of
/// the log at `path` that contains `message` (e.g. the operator's "serving /healthz and
/// /readyz"). Started with port 0, a server binds a port nobody else holds, and this reads it
/// back: unlike [`free_loopback_port`], no other process can take the port in between, or
/// answer on it. `None` until such a line is there.
pub fn logged_addr(path: &Path, message: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.contains(message))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))?
        .parse()
        .ok()
}

/// `true` if something accepts TCP connections on `addr` (connect timeout 200 ms).
pub async fn accepts_tcp(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// A fresh directory `<prefix>-<millis>-<pid>[-<n>]` under `parent`, unique across processes and
/// within this one (the test environment's, the collector's and the backends' directories).
pub(crate) fn unique_dir(parent: &Path, prefix: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    if n == 0 {
        parent.join(format!("{prefix}-{millis}-{pid}"))
    } else {
        parent.join(format!("{prefix}-{millis}-{pid}-{n}"))
    }
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg` (`?` where it cannot be read), which a
/// bench prints beside its figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("logs").join("out.log")
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_status_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ProcessSpec::new("sh", "/bin/sh", temp_log(&dir))
            .args(["-c", "echo out-$GREETING; echo err >&2; exit 3"])
            .env("GREETING", "hello");
        let mut p = ManagedProcess::spawn(spec).unwrap();
        let status = crate::wait::until("sh to exit", Duration::from_secs(10), || {
            std::future::ready(p.try_exit_status().unwrap())
        })
        .await
        .unwrap();
        assert_eq!(status.code(), Some(3));
        let log = p.log_tail(10);
        assert!(log.contains("out-hello"), "{log}");
        assert!(log.contains("err"), "{log}");
    }

    #[tokio::test]
    async fn stop_uses_sigterm_then_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        // Obeys SIGTERM: ends by the signal.
        let p = ManagedProcess::spawn(
            ProcessSpec::new("sleep", "/bin/sleep", temp_log(&dir)).arg("60"),
        )
        .unwrap();
        let status = p.stop(Duration::from_secs(10)).await.unwrap();
        assert_eq!(status.signal(), Some(15));
        // Ignores SIGTERM: needs SIGKILL after the grace period.
        let p = ManagedProcess::spawn(
            ProcessSpec::new("stubborn", "/bin/sh", temp_log(&dir))
                .args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]),
        )
        .unwrap();
        crate::wait::until("sh to get ready", Duration::from_secs(10), || {
            std::future::ready(p.log_tail(5).contains("ready").then_some(()))
        })
        .await
        .unwrap();
        let status = p.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(status.signal(), Some(9));
    }

    #[tokio::test]
    async fn drop_kills_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = ManagedProcess::spawn(
            ProcessSpec::new("sleep", "/bin/sleep", temp_log(&dir)).arg("60"),
        )
        .unwrap();
        let pid = p.pid();
        drop(p);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        // Gone, or a zombie waiting for tokio's reaper.
        crate::wait::until_ok(
            &format!("pid {pid} to be gone"),
            Duration::from_secs(10),
            || {
                let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
                std::future::ready(if state.is_empty() || state.contains(") Z ") {
                    Ok(())
                } else {
                    Err(format!("alive: {state}"))
                })
            },
        )
        .await
        .unwrap();
    }

    #[test]
    fn child_dies_with_the_spawning_thread() {
        let dir = tempfile::tempdir().unwrap();
        let log = temp_log(&dir);
        // Spawn from a thread that then exits without running the destructor: only
        // PR_SET_PDEATHSIG can kill the child.
        let pid = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let p =
                    ManagedProcess::spawn(ProcessSpec::new("sleep", "/bin/sleep", log).arg("60"))
                        .unwrap();
                let pid = p.pid();
                std::mem::forget(p);
                pid
            })
        })
        .join()
        .unwrap();
        let stat = PathBuf::from(format!("/proc/{pid}/stat"));
        let what = format!("pid {pid} to die with its parent thread");
        let gone = crate::wait::until_ok(&what, Duration::from_secs(10), || {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            std::future::ready(if state.is_empty() || state.contains(") Z ") {
                Ok(())
            } else {
                Err(format!("alive: {state}"))
            })
        });
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(gone)
            .unwrap();
    }

    #[tokio::test]
    async fn spawn_error_names_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let err = ManagedProcess::spawn(ProcessSpec::new(
            "nothing",
            "/nonexistent/program",
            temp_log(&dir),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/program"), "{err}");
    }

    #[test]
    fn logged_addr_reads_the_addr_field_of_the_first_matching_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        assert_eq!(logged_addr(&log, "serving"), None, "no log yet");
        std::fs::write(
            &log,
            "2026-12-06T07:54:02Z  INFO app: starting addr=10.0.0.1:1\n\
             2026-12-06T07:54:02Z  INFO app: serving /readyz addr=127.0.0.1:41527 plain=true\n\
             2026-12-06T07:54:03Z  INFO app: serving /readyz addr=127.0.0.1:2\n",
        )
        .unwrap();
        assert_eq!(
            logged_addr(&log, "serving /readyz"),
            Some(([127, 0, 0, 1], 41527).into())
        );
        assert_eq!(logged_addr(&log, "listening"), None, "no such line");
        std::fs::write(&log, "INFO app: serving /readyz addr=nowhere\n").unwrap();
        assert_eq!(logged_addr(&log, "serving"), None, "not an address");
    }

    #[test]
    fn a_port_is_handed_out_once() {
        let mut seen = BTreeSet::new();
        let mut kernel = [7, 7, 8, 7, 8, 9].into_iter();
        let mut bind = || Ok((kernel.next().unwrap(), ()));
        assert_eq!(unseen_port(&mut seen, &mut bind).unwrap(), 7);
        assert_eq!(
            unseen_port(&mut seen, &mut bind).unwrap(),
            8,
            "7 again is skipped"
        );
        assert_eq!(unseen_port(&mut seen, &mut bind).unwrap(), 9);
        let mut same = || Ok((7, ()));
        let err = unseen_port(&mut seen, &mut same).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let mut failing = || Err::<(u16, ()), _>(io::Error::other("no sockets"));
        assert_eq!(
            unseen_port(&mut seen, &mut failing)
                .unwrap_err()
                .to_string(),
            "no sockets"
        );
    }

    #[tokio::test]
    async fn free_port_is_bindable_and_detected() {
        let port = free_loopback_port().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(!accepts_tcp(addr).await);
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        assert!(accepts_tcp(addr).await);
    }
}
