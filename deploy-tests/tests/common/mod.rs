//! Shared by the in-cluster install tests (`helm_install.rs`, `kustomize_apply.rs`): a real control
//! plane and a real node ([`testenv::node`]: containerd, runc, the kubelet, kube-proxy, CoreDNS)
//! that imports the chart's two images as `cargo xtask images` built them, an OpenTelemetry
//! Collector (the Service `otel-collector.testenv-system`), the openai-replay server (a host
//! process behind the Service `openai-replay.testenv-system`), the example Secret and LlmJob from
//! `manifests/examples/`, and the checks every install must pass. Needs root, the tools of
//! `tools/ensure-tools.sh` and the image archives; a missing one fails the test naming it.
//!
//! Each test starts its own [`TestEnv`]: an install is cluster-wide (CRD, ClusterRole, an operator
//! watching every namespace), so two installs in one control plane would reconcile each other's
//! LlmJobs. The user-facing steps run through the real `helm` and `kubectl`, as a user would.

#![allow(
    dead_code,
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::{ReplayConfig, ReplayServer};
use testenv::env::TestEnv;
use testenv::images;
use testenv::node::{self, NodeConfig, services};

/// Generous upper bound for waits: a guard against a hung CI run, not a performance assertion.
pub const WAIT: Duration = Duration::from_secs(120);
/// `--timeout` for `helm --wait` and `kubectl wait` (the same bound as [`WAIT`]).
pub const WAIT_FLAG: &str = "120s";
/// Name of the example LlmJob (`manifests/examples/prompt.yaml`).
pub const EXAMPLE_JOB: &str = "haiku";

/// Polls `f` until it returns `Some`, panicking after [`WAIT`] with `what`.
pub async fn wait_until<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    testenv::wait::until(what, WAIT, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the real `helm` with `--kubeconfig` and its cache, config and data homes in `home`.
pub async fn helm(env: &TestEnv, home: &std::path::Path, args: &[&str]) -> String {
    let kubeconfig = env.kubeconfig_path().to_string_lossy().into_owned();
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--kubeconfig".to_owned(), kubeconfig]);
    let home = home.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let dirs: Vec<(String, String)> = ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"]
            .iter()
            .map(|k| ((*k).to_owned(), home.join(k).to_string_lossy().into_owned()))
            .collect();
        let env: Vec<(&str, &str)> = dirs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = deploy_tests::run_tool("helm", &args, &deploy_tests::root(), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("the helm task")
}

/// A binary of this workspace, or a panic saying how to build it.
pub fn workspace_binary(name: &str) -> PathBuf {
    testenv::tools::cargo_bin(name, name)
        .unwrap_or_else(|e| panic!("{e}\nrun `cargo build -p {name}` first."))
}

/// A control plane, a real node that imports the images of `cargo xtask images` (pause, the
/// operator and the runner, under the references the chart and `manifests/` use), and a
/// collector.
pub async fn start_env() -> TestEnv {
    let node = NodeConfig::built_images(&images::ALL).unwrap_or_else(|e| panic!("{e}"));
    TestEnv::builder()
        .real_node(node)
        .collector(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The collector's OTLP/gRPC endpoint as pods reach it: its Service.
pub fn collector_grpc() -> String {
    let (namespace, name) = node::COLLECTOR_SERVICE;
    format!("http://{name}.{namespace}.svc:4317")
}

/// Runs `kubectl <args>` with the admin kubeconfig and returns stdout; panics with stderr and
/// stdout when it fails.
pub async fn kubectl(env: &TestEnv, args: &[&str]) -> String {
    let out = env
        .kubectl(args)
        .await
        .unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`kubectl {}` failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{stdout}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kubectl auth can-i <verb> <resource> --as=system:serviceaccount:<sa_ns>:<sa> <scope>`:
/// whether the ServiceAccount holds the permission (`scope` is `-A` or `-n <ns>`).
pub async fn can_i(
    env: &TestEnv,
    sa: (&str, &str),
    verb: &str,
    resource: &str,
    scope: &[&str],
) -> bool {
    let user = format!("--as=system:serviceaccount:{}:{}", sa.0, sa.1);
    let mut args = vec!["auth", "can-i", verb, resource, user.as_str()];
    args.extend_from_slice(scope);
    let out = env.kubectl(&args).await.expect("kubectl auth can-i");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "`kubectl {}` answered {answer:?}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The one running operator pod in `ns` (label `app.kubernetes.io/name=llmjob-operator`).
pub async fn operator_pod(env: &TestEnv, ns: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(env.client(), ns);
    let params = ListParams::default().labels("app.kubernetes.io/name=llmjob-operator");
    wait_until(&format!("a running operator pod in {ns}"), || async {
        let list = pods.list(&params).await.ok()?;
        let running: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        match running.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    })
    .await
}

/// `kubectl logs` of the operator pod `pod` in `ns` (apiserver -> kubelet -> containerd's log).
pub async fn operator_log(env: &TestEnv, ns: &str, pod: &str) -> String {
    kubectl(env, &["logs", "-n", ns, pod, "-c", "operator"]).await
}

/// Waits until the leader-election Lease `ns/name` is held by `pod`.
pub async fn wait_for_leader(env: &TestEnv, ns: &str, name: &str, pod: &str) {
    let leases: Api<Lease> = Api::namespaced(env.client(), ns);
    wait_until(&format!("Lease {ns}/{name} held by {pod}"), || async {
        let lease = leases.get_opt(name).await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some(pod)).then_some(())
    })
    .await;
}

/// The API key of the example Secret (`manifests/examples/secret.yaml`, a placeholder): the
/// replay server is told to expect it, so the Secret is applied unchanged.
pub fn example_api_key() -> String {
    let text = std::fs::read_to_string(example("secret.yaml")).unwrap();
    let secret: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    secret["stringData"]["api-key"]
        .as_str()
        .expect("secret.yaml: stringData.api-key")
        .to_owned()
}

/// `manifests/examples/<file>`.
pub fn example(file: &str) -> PathBuf {
    deploy_tests::manifests_dir().join("examples").join(file)
}

/// The openai-replay server, expecting the example Secret's key, and its base URL inside the
/// cluster.
pub struct Replay {
    /// The server, on the node's host address.
    pub server: ReplayServer,
    /// `http://openai-replay.testenv-system.svc/v1`: its Service.
    pub url: String,
}

/// Starts the openai-replay server on the node's host address and makes it the Service
/// `testenv-system/openai-replay` (port 80), as the collector is.
pub async fn replay(env: &TestEnv) -> Replay {
    let host = env.node().expect("start_env starts a real node").host_ip();
    let server = ReplayServer::start(
        ReplayConfig::new()
            .with_api_key(example_api_key())
            .with_addr(SocketAddr::new(host, 0)),
    )
    .await
    .expect("starting the openai-replay server");
    let IpAddr::V4(address) = server.addr().ip() else {
        panic!("the replay server listens on {}, not IPv4", server.addr());
    };
    let base = services::host_http_service(
        &env.client(),
        "testenv-system",
        "openai-replay",
        address,
        server.addr().port(),
    )
    .await
    .unwrap_or_else(|e| panic!("exposing the replay server: {e}"));
    Replay {
        server,
        url: format!("{base}/v1"),
    }
}

/// Applies the example Secret unchanged and the example LlmJob (`prompt.yaml`) with
/// `spec.openai.baseURL` pointing at the replay server into `ns` with kubectl, as a user would,
/// and waits until the LlmJob succeeds. Checks the status a user reads (usage, trace id) and
/// returns the LlmJob.
pub async fn run_example(env: &TestEnv, ns: &str, replay: &Replay, dir: &Path) -> LlmJob {
    let secret = example("secret.yaml");
    kubectl(env, &["apply", "-n", ns, "-f", &secret.to_string_lossy()]).await;

    let text = std::fs::read_to_string(example("prompt.yaml")).unwrap();
    let mut job: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(job["metadata"]["name"], EXAMPLE_JOB, "prompt.yaml's LlmJob");
    job["spec"]["openai"]["baseURL"] = serde_norway::Value::from(replay.url.clone());
    let file = dir.join("prompt.yaml");
    std::fs::write(&file, serde_norway::to_string(&job).unwrap()).unwrap();
    kubectl(env, &["apply", "-n", ns, "-f", &file.to_string_lossy()]).await;

    let api: Api<LlmJob> = Api::namespaced(env.client(), ns);
    let what = format!("LlmJob {ns}/{EXAMPLE_JOB} to succeed");
    let done = testenv::wait::until_ok(&what, WAIT, || async {
        match api.get(EXAMPLE_JOB).await {
            Ok(j) if j.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded) => Ok(j),
            Ok(j) => Err(format!(
                "status {}",
                serde_json::to_string_pretty(&j.status).unwrap_or_default()
            )),
            Err(e) => Err(format!("reading it: {e}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = done.status.clone().expect("status");
    let usage = status
        .result
        .as_ref()
        .and_then(|r| r.usage.as_ref())
        .expect("token usage in status.result");
    assert!(usage.total_tokens.unwrap_or(0) > 0, "{usage:?}");
    let trace_id = status.trace_id.as_deref().expect("status.traceId");
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "status.traceId {trace_id:?}"
    );
    assert_eq!(
        replay.server.requests().len(),
        1,
        "one chat completion reached the replay server"
    );
    done
}

/// Waits until the collector holds the operator's `llmjob.launch` span of `trace_id`, exported by
/// the operator pod `pod`: its `OTEL_*` settings come from the install, and its resource names
/// the pod (`k8s.pod.name` from `$(POD_NAME)` in `OTEL_RESOURCE_ATTRIBUTES`).
pub async fn wait_for_operator_span(env: &TestEnv, trace_id: &str, pod: &str) {
    let collector = env.collector().expect("collector");
    let found = collector
        .wait_for(WAIT, |t| {
            t.trace(trace_id)
                .iter()
                .find(|s| s.name == "llmjob.launch")
                .map(|s| {
                    (
                        s.resource.str("service.name").map(str::to_owned),
                        s.resource.str("k8s.pod.name").map(str::to_owned),
                    )
                })
        })
        .await
        .unwrap_or_else(|e| panic!("the operator's launch span of trace {trace_id}: {e}"));
    assert_eq!(found.0.as_deref(), Some("llmjob-operator"));
    assert_eq!(
        found.1.as_deref(),
        Some(pod),
        "k8s.pod.name of the operator's spans"
    );
}

/// Asserts that the operator never got an authorization error (a 403 from the API server says
/// "forbidden", a 401 "unauthorized"): the install's RBAC covers everything it did. Also that the
/// log does not hold the API key.
pub fn assert_no_rbac_denials(log: &str, what: &str) {
    let denials: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden")
                || l.contains("unauthorized")
                || l.split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == "403")
        })
        .collect();
    assert!(
        denials.is_empty(),
        "{what}: the operator was denied by the API server:\n{}",
        denials.join("\n")
    );
    assert!(
        !log.trim().is_empty(),
        "{what}: the operator's log is empty (wrong pod or container?)"
    );
    assert!(
        !log.contains(&example_api_key()),
        "{what}: the API key is in the operator's log"
    );
}
