//! Shared by the operator's integration tests: the real control plane and a real node
//! (`testenv`: containerd, runc, the kubelet, kube-proxy, CoreDNS) that runs the runner pods
//! from the runner image `cargo xtask images` built, the CRD, the real operator binary scoped
//! to one test namespace, the openai-replay server behind a Service, and small waiting helpers.
//!
//! One environment per test binary ([`env`]): starting a control plane and a node costs seconds
//! and hundreds of MiB, a test only a namespace. Each test creates its own namespace (enforcing
//! the restricted Pod Security Standard, so the API server checks every pod the operator builds)
//! and runs its own operator process, a host process with `--watch-namespaces=<that namespace>`,
//! so tests share one cluster (and collector) and still never see each other's objects.
//!
//! Needs root, the tools of `tools/ensure-tools.sh` and the image archives of `cargo xtask
//! images`; a missing one fails every test naming it.

#![allow(
    dead_code,
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::{RecordedRequest, ReplayConfig, ReplayServer};
use testenv::env::TestEnv;
use testenv::images;
use testenv::node::{self, NodeConfig, services};
use testenv::process::{ManagedProcess, ProcessSpec};
use tokio::sync::OnceCell;

/// The API key the tests put in Secrets (and look for in places it must never appear).
pub const API_KEY: &str = "sk-test-LEAKCHECK-operator-0123456789";
/// Generous upper bound for waits: a bound against hanging CI, not a performance assertion.
pub const WAIT: Duration = Duration::from_secs(120);

/// The operator's log line that names the address of its `/healthz`, `/readyz` (and plain
/// `/metrics`) server.
const HTTP_SERVING: &str = "serving /healthz and /readyz";

/// The label that makes a namespace enforce the restricted Pod Security Standard.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// The environment shared by this binary's tests (a control plane, a real node that imports the
/// pause and runner images, a collector) with the CRD installed.
///
/// It is never dropped: when the test binary exits, its processes die with it, and the next
/// environment that takes the same node slot removes the containers, mounts and network
/// namespace left behind ([`testenv::node`]).
pub async fn env() -> &'static TestEnv {
    let env = TestEnv::shared_with(|| {
        let node = NodeConfig::built_images(&[images::PAUSE, images::RUNNER])
            .unwrap_or_else(|e| panic!("{e}"));
        TestEnv::builder().real_node(node).collector(true)
    });
    with_crd(env).await
}

/// The environment shared by this binary's tests when they need the API server only (no
/// kubelet: admission), with the CRD installed, and a collector for an [`Operator`] that runs no
/// pod. A test binary uses either this or [`env`], never both: [`TestEnv::shared_with`] starts
/// one environment per process and refuses a second configuration.
pub async fn api_env() -> &'static TestEnv {
    with_crd(TestEnv::shared_with(|| {
        TestEnv::builder().api_only().collector(true)
    }))
    .await
}

/// Installs the CRD into the shared `env` once, and remembers its directory for messages.
async fn with_crd(env: &'static TestEnv) -> &'static TestEnv {
    static CRD: OnceCell<()> = OnceCell::const_new();
    CRD.get_or_init(|| async {
        let _ = ENV_DIR.set(env.dir().to_owned());
        install_crd(&env.client()).await;
    })
    .await;
    env
}

/// The shared environment's directory (its logs), for failure messages.
static ENV_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// ` (logs in <dir>)` once the shared environment runs.
fn logs_hint() -> String {
    ENV_DIR
        .get()
        .map(|d| format!("; logs in {}", d.display()))
        .unwrap_or_default()
}

/// A fresh namespace `<prefix>-<n>-<random>` that enforces the restricted Pod Security Standard.
pub async fn namespace(env: &TestEnv, prefix: &str) -> String {
    let ns = env.create_namespace(prefix).await.expect("namespace");
    Api::<Namespace>::all(env.client())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {POD_SECURITY_ENFORCE: "restricted"}}
            })),
        )
        .await
        .expect("labelling the namespace restricted");
    ns
}

/// The openai-replay server on the node's host address, reached by the runner pods through the
/// Service `openai-replay` of the test's namespace (port 80).
pub struct Replay {
    server: ReplayServer,
    url: String,
}

impl Replay {
    /// [`Replay::start`] with the tests' [`API_KEY`], answering each call after `delay`: a run
    /// that stays in flight long enough for a fault to hit it.
    pub async fn delayed(env: &TestEnv, ns: &str, delay: std::time::Duration) -> Replay {
        Replay::start(
            env,
            ns,
            ReplayConfig::new().with_api_key(API_KEY).with_delay(delay),
        )
        .await
    }

    /// Starts the server with `config` (its address is set here) and exposes it in `ns`.
    pub async fn start(env: &TestEnv, ns: &str, config: ReplayConfig) -> Replay {
        let host = env.node().expect("env() starts a real node").host_ip();
        let server = ReplayServer::start(config.with_addr(SocketAddr::new(host, 0)))
            .await
            .expect("starting the openai-replay server");
        let IpAddr::V4(address) = server.addr().ip() else {
            panic!("the replay server listens on {}, not IPv4", server.addr());
        };
        let base = services::host_http_service(
            &env.client(),
            ns,
            "openai-replay",
            address,
            server.addr().port(),
        )
        .await
        .unwrap_or_else(|e| panic!("exposing the replay server: {e}"));
        // The first run must not race kube-proxy (a new Service refuses connections until its
        // endpoints are programmed): each test asserts how many attempts its run took.
        env.node()
            .expect("a real node")
            .wait_for_service(&env.client(), ns, "openai-replay", 80, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}{}", logs_hint()));
        Replay {
            server,
            url: format!("{base}/v1"),
        }
    }

    /// The OpenAI base URL inside the cluster: `http://openai-replay.<ns>.svc/v1`.
    pub fn base_url(&self) -> String {
        self.url.clone()
    }

    /// The requests the server has answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }
}

/// Applies the generated CRD and waits until it is Established.
pub async fn install_crd(client: &Client) {
    testenv::crd::install_llmjob_crd(client, "llmjob-tests")
        .await
        .unwrap_or_else(|e| panic!("installing the CRD: {e}"));
}

/// Polls `f` until it returns `Some`, panicking after [`WAIT`] with `what`.
pub async fn wait_until<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    testenv::wait::until(what, WAIT, f)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", logs_hint()))
}

/// The real operator binary, watching one namespace.
pub struct Operator {
    process: Option<ManagedProcess>,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `llmjob-operator` for `namespace` as a host process, exporting to the shared
    /// collector; its runs use the runner image and export through the collector's Service.
    pub async fn start(env: &TestEnv, namespace: &str, extra_args: &[&str]) -> Operator {
        Operator::launch(env, namespace, &env.kubeconfig_path(), extra_args, &[]).await
    }

    /// [`Operator::start`] reaching the API server through `kubeconfig` (e.g. a
    /// [`testenv::faultproxy::FaultProxy`]'s).
    pub async fn start_with_kubeconfig(
        env: &TestEnv,
        namespace: &str,
        kubeconfig: &std::path::Path,
        extra_args: &[&str],
    ) -> Operator {
        Operator::launch(env, namespace, kubeconfig, extra_args, &[]).await
    }

    /// Like [`Operator::start`], with environment variables set on top (they win over the ones
    /// set here, e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn start_with_env(
        env: &TestEnv,
        namespace: &str,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Operator {
        Operator::launch(
            env,
            namespace,
            &env.kubeconfig_path(),
            extra_args,
            extra_env,
        )
        .await
    }

    /// The one way the tests start an operator: [`Operator::start`] with its API server reached
    /// through `kubeconfig` and `extra_env` set on top.
    async fn launch(
        env: &TestEnv,
        namespace: &str,
        kubeconfig: &std::path::Path,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Operator {
        // Port 0, read back from the log: a port picked here and passed on could be taken by a
        // test running beside this one, whose operator would then answer this one's /readyz.
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let collector = env.collector().expect("the shared env runs a collector");
        let (collector_ns, collector_name) = node::COLLECTOR_SERVICE;
        let log = env
            .dir()
            .join("operators")
            .join(format!("{namespace}-{n}.log"));
        let spec = ProcessSpec::new(
            format!("llmjob-operator ({namespace})"),
            env!("CARGO_BIN_EXE_llmjob-operator"),
            &log,
        )
        .arg(format!("--runner-image={}", images::RUNNER.reference()))
        .arg("--runner-image-pull-policy=Never")
        .arg(format!(
            "--default-otlp-endpoint=http://{collector_name}.{collector_ns}.svc:4317"
        ))
        .arg("--default-environment=test")
        .arg(format!("--watch-namespaces={namespace}"))
        .arg("--http-addr=127.0.0.1:0")
        .args(extra_args)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", namespace)
        .env("RUST_LOG", "info,llmjob_operator=debug")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint());
        let spec = extra_env
            .iter()
            .fold(spec, |spec, (key, value)| spec.env(key, value));
        let mut process = ManagedProcess::spawn(spec).expect("spawning the operator");
        // Ready: its own address logged and `/readyz` there answering 200. It exiting first
        // (e.g. a port it cannot bind) fails the test at once, with its log.
        let what = format!("the operator's /readyz (log: {})", log.display());
        let http = testenv::wait::until_ok_or_abort(&what, WAIT, || {
            let exited = process.try_exit_status().expect("the operator's status");
            let addr = testenv::process::logged_addr(&log, HTTP_SERVING);
            async move {
                if let Some(status) = exited {
                    return Err(status);
                }
                let Some(addr) = addr else {
                    return Ok(Err("no address logged yet".to_owned()));
                };
                Ok(testenv::http::get_ok(addr, "/readyz").await.map(|_| addr))
            }
        })
        .await
        .unwrap_or_else(|status| {
            panic!(
                "the operator exited ({status}) before it was ready: {}",
                testenv::process::log_tail(&log, 20)
            )
        })
        .unwrap_or_else(|e| panic!("{e}{}", logs_hint()));
        Operator {
            process: Some(process),
            http,
            log,
        }
    }

    /// The address the operator logged for `message` (a line such as "serving /metrics over
    /// HTTPS"): where a server it was told to start on port 0 listens.
    pub fn logged_addr(&self, message: &str) -> SocketAddr {
        testenv::process::logged_addr(&self.log, message)
            .unwrap_or_else(|| panic!("no {message:?} address in {}", self.log.display()))
    }

    /// `GET path` on the operator's HTTP server: status and body.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        testenv::http::get(self.http, path).await.ok()
    }

    /// The value of an unlabelled metric on the operator's `/metrics` (e.g.
    /// `llmjob_operator_leader`); `None` while it does not answer or has no such sample.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").pid()
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, `KILL`) to the operator.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid());
    }

    /// Its exit status once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process
            .as_mut()
            .expect("running")
            .try_exit_status()
            .expect("reading the operator's exit status")
    }

    /// The operator's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it with SIGKILL (a crash: nothing is cleaned up or flushed).
    pub async fn kill(mut self) {
        let process = self.process.take().expect("running");
        process.kill().await.expect("killing the operator");
    }

    /// Stops it with SIGTERM (a clean shutdown) and returns its exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let process = self.process.take().expect("running");
        process
            .stop(Duration::from_secs(15))
            .await
            .expect("stopping the operator")
    }
}

/// A [`namespace`] with the API-key Secret `openai` (key `api-key`).
pub async fn namespace_with_secret(env: &TestEnv, prefix: &str) -> String {
    let ns = namespace(env, prefix).await;
    create_secret(env, &ns, "openai").await;
    ns
}

/// Creates Secret `name` holding [`API_KEY`] under `api-key`.
pub async fn create_secret(env: &TestEnv, ns: &str, name: &str) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"api-key": API_KEY}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the Secret");
}

/// An LlmJob manifest (JSON) asking the replay server at `base_url` for a haiku.
pub fn llmjob_json(name: &str, base_url: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "llmjob.dev/v1alpha1",
        "kind": "LlmJob",
        "metadata": {"name": name},
        "spec": {
            "model": "gpt-4o-mini",
            "prompt": "Write a haiku about OpenTelemetry.",
            "openai": {"apiKeySecretRef": {"name": "openai"}, "baseURL": base_url},
            "run": {"timeout": "60s", "maxAttempts": 2}
        }
    })
}

/// Creates an LlmJob from JSON.
pub async fn create_llmjob(env: &TestEnv, ns: &str, manifest: serde_json::Value) -> LlmJob {
    let llmjob: LlmJob = serde_json::from_value(manifest).expect("an LlmJob");
    Api::<LlmJob>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &llmjob)
        .await
        .expect("creating the LlmJob")
}

/// Waits until the LlmJob reaches `phase` and returns it; a timeout shows the last status seen.
pub async fn wait_for_phase(env: &TestEnv, ns: &str, name: &str, phase: Phase) -> LlmJob {
    wait_for_phase_within(env, ns, name, phase, WAIT).await
}

/// [`wait_for_phase`] with another bound than [`WAIT`] (e.g. for a kubelet that retries with a
/// backoff of up to two minutes).
pub async fn wait_for_phase_within(
    env: &TestEnv,
    ns: &str,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> LlmJob {
    let api: Api<LlmJob> = Api::namespaced(env.client(), ns);
    let what = format!("LlmJob {ns}/{name} to reach {phase:?}");
    testenv::wait::until_ok(&what, timeout, || async {
        match api.get(name).await {
            Ok(j) if j.status.as_ref().and_then(|s| s.phase) == Some(phase) => Ok(j),
            Ok(j) => Err(format!(
                "status {}",
                serde_json::to_string_pretty(&j.status).unwrap_or_default()
            )),
            Err(e) => Err(format!("reading it: {e}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", logs_hint()))
}

/// The Jobs in `ns`.
pub async fn jobs(env: &TestEnv, ns: &str) -> Vec<Job> {
    Api::<Job>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing Jobs")
        .items
}

/// The Events about the LlmJob `name` in `ns`: (type, reason, note). Not those about its Job of
/// the same name (the Job controller's `Suspended`, `Resumed`, `Completed`).
pub async fn events_of(env: &TestEnv, ns: &str, name: &str) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.name.as_deref() == Some(name) && r.kind.as_deref() == Some("LlmJob")
            })
        })
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until an Event with `reason` exists for the LlmJob.
pub async fn wait_for_event(env: &TestEnv, ns: &str, name: &str, reason: &str) -> String {
    let what = format!("an Event {reason} on LlmJob {ns}/{name}");
    wait_until(&what, || async {
        events_of(env, ns, name)
            .await
            .into_iter()
            .find(|(_, r, _)| r == reason)
            .map(|(_, _, note)| note)
    })
    .await
}

/// The LlmJob, once its `Stalled` condition is true with `reason`.
pub async fn wait_for_stalled(env: &TestEnv, ns: &str, name: &str, reason: &str) -> LlmJob {
    let api: Api<LlmJob> = Api::namespaced(env.client(), ns);
    wait_until(&format!("LlmJob {ns}/{name} Stalled with {reason}"), || {
        let api = api.clone();
        async move {
            let lj = api.get_opt(name).await.ok().flatten()?;
            let (status, r, _) = condition(&lj, "Stalled")?;
            (status == "True" && r == reason).then_some(lj)
        }
    })
    .await
}

/// The condition `type_` of the LlmJob: (status, reason, message).
pub fn condition(llmjob: &LlmJob, type_: &str) -> Option<(String, String, String)> {
    llmjob
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Name of an object, for messages.
pub fn name_of<K: ResourceExt>(k: &K) -> String {
    k.name_any()
}
