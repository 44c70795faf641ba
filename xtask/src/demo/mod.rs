//! `cargo xtask demo`: one command from a fresh machine to an LlmJob's trace on screen.
//!
//! The path a user takes, on the embedded testenv stack with a real node (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler; containerd, runc, the kubelet,
//! kube-proxy and CoreDNS, see `testenv::node`; and a real OpenTelemetry Collector):
//! 1. the Go tools are built (or found in the cache) and `cargo xtask images` builds the
//!    operator's, the runner's and the sandbox's OCI images, which the node imports under the
//!    references `manifests/` uses;
//! 2. the stack starts; the CRD and the operator are installed with `kubectl apply
//!    --server-side -k` from an overlay of `manifests/` (the overlay only points the operator at
//!    the collector's Service, as a user's overlay would point it at theirs). The operator runs
//!    as the Deployment's pod, from its image, and reaches the API server through in-cluster
//!    configuration;
//! 3. namespace `demo` is created, labelled `pod-security.kubernetes.io/enforce=restricted`, the
//!    API-key Secret is created and `manifests/examples/prompt.yaml` is applied; OpenAI is the
//!    local replay server (recorded responses; a host process behind the Service
//!    `openai-replay.testenv-system`) unless `OPENAI_API_KEY` is set, then the real API (or
//!    `OPENAI_BASE_URL`);
//! 4. the real `kubectl get llmjobs -w` shows the LlmJob until it finishes, then `kubectl logs`
//!    of the runner's pod and the operator, the `containerID` and `imageID` of the operator's
//!    and the runner's containers, the run's trace as a waterfall, its GenAI metrics and its log
//!    records, read from the collector's output;
//! 5. the batch ([`batch`]): `manifests/examples/batch.yaml`, 100 items in one LlmJob over an
//!    Indexed Job, its results written to a real S3-compatible store (versitygw, a host process
//!    behind the Service `s3.demo`); the demo prints its batch totals from `status.batch`, the
//!    `openai_call.task` spans under its one trace id, and the result lines in the bucket.
//!
//! Every `kubectl` line on screen is printed by the stack's real kubectl. It fails (non-zero
//! exit) when the run fails, and says why. `--keep` keeps everything the printed instructions
//! use (the stack, the collector and the replay server) up until Ctrl-C, and writes
//! `manifests/examples/messages.yaml` pointed at the same OpenAI server for `kubectl apply`.
//!
//! `--backends` also starts a real Prometheus and Jaeger behind the reference collector
//! pipelines (`testenv::backends`); the demo's collector forwards traces and metrics to them, and
//! the demo prints the usage dashboard's key panels from Prometheus and the trace from Jaeger
//! ([`backends`]); with `--keep` it prints their URLs. Without it nothing changes.

pub mod backends;
pub mod batch;
pub mod report;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::{ReplayConfig, ReplayServer};
use testenv::env::TestEnv;
use testenv::images;
use testenv::node::{self, NodeConfig, services};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Namespace the demo's LlmJob runs in.
pub const NAMESPACE: &str = "demo";
/// The Pod Security Standard namespace [`NAMESPACE`] enforces.
pub const POD_SECURITY: &str = "pod-security.kubernetes.io/enforce=restricted";
/// The replay server's Service (namespace, name), backed by the host process.
const REPLAY_SERVICE: (&str, &str) = ("testenv-system", "openai-replay");
/// Namespace `manifests/` installs the operator into.
const OPERATOR_NAMESPACE: &str = "llmjob-system";
/// The example the demo applies.
const EXAMPLE: &str = "manifests/examples/prompt.yaml";
/// The example `--keep` prepares for the user to apply.
const KEEP_EXAMPLE: &str = "manifests/examples/messages.yaml";
/// The key the replay server accepts (the demo's Secret holds it).
const REPLAY_KEY: &str = "sk-demo-replay-key";
/// Upper bound of each wait: a guard against a hang, not a performance target.
const WAIT: Duration = Duration::from_secs(300);

/// Options of `cargo xtask demo`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep the stack running after the run, until Ctrl-C.
    pub keep: bool,
    /// Use the tools and images already built (the end-to-end test, after `cargo xtask images`).
    pub no_build: bool,
    /// Also run Prometheus and Jaeger behind the reference collector pipelines.
    pub backends: bool,
}

/// Where OpenAI is.
enum OpenAi {
    /// The replay server, and its URL inside the cluster (through its Service).
    Replay(ReplayServer, String),
    Real {
        key: String,
        base_url: Option<String>,
    },
}

impl OpenAi {
    fn describe(&self) -> String {
        match self {
            OpenAi::Replay(s, url) => format!(
                "the local replay server at {} (recorded responses; set OPENAI_API_KEY to call the real API), {url} inside the cluster",
                s.base_url()
            ),
            OpenAi::Real { base_url, .. } => format!(
                "the real API at {} (OPENAI_API_KEY is set)",
                base_url.as_deref().unwrap_or("https://api.openai.com/v1")
            ),
        }
    }
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs the demo.
pub fn run(root: &Path, options: &Options) -> Result<()> {
    if !options.no_build {
        crate::tools(root, if options.backends { "backends" } else { "demo" })?;
        step("building the images of the operator and the job-runner: cargo xtask images");
        // Only the images the demo runs (not the tests' probe).
        let names: Vec<String> = images::ALL.iter().map(|i| i.name.to_owned()).collect();
        crate::images::run(root, &names)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(root, options))
}

async fn demo(root: &Path, options: &Options) -> Result<()> {
    let node = NodeConfig::built_images(&images::ALL)?;

    step(
        "starting the stack: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a real node (containerd, runc, the kubelet, kube-proxy, CoreDNS) and an OpenTelemetry Collector",
    );
    let started = std::time::Instant::now();
    let backends = if options.backends {
        step(
            "starting Prometheus 3 and Jaeger v2 behind the reference collector pipelines (manifests/observability/)",
        );
        Some(
            testenv::backends::Backends::start(None)
                .await
                .context("starting Prometheus and Jaeger")?,
        )
    } else {
        None
    };
    let mut builder = TestEnv::builder().real_node(node).collector(true);
    if let Some(backends) = &backends {
        builder = builder.collector_forward_to(backends.otlp_grpc_endpoint());
    }
    let env = builder.start().await.context("starting the stack")?;
    if let Some(node) = env.node() {
        eprintln!(
            "node {} Ready {:.1} s after its start ({:.1} s for the whole stack)",
            node::NODE_NAME,
            node.ready_after().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    let result = demo_on(root, &env, backends.as_ref(), options).await;
    if let Err(e) = env.shutdown().await {
        eprintln!("demo: stopping the stack: {e}");
    }
    if let Some(backends) = backends
        && let Err(e) = backends.shutdown().await
    {
        eprintln!("demo: stopping Prometheus and Jaeger: {e}");
    }
    result
}

async fn demo_on(
    root: &Path,
    env: &TestEnv,
    backends: Option<&testenv::backends::Backends>,
    options: &Options,
) -> Result<()> {
    let collector = env.collector().context("the stack runs a collector")?;

    step(
        "installing the CRD and the operator: kubectl apply --server-side -k (an overlay of manifests/)",
    );
    let overlay = write_overlay(root, env, &collector_in_cluster())?;
    kubectl(
        env,
        &["apply", "--server-side", "-k", &overlay.to_string_lossy()],
    )
    .await?;
    wait_for_operator(env).await?;
    eprintln!("the operator is Available in namespace {OPERATOR_NAMESPACE}");
    let node = env.node().context("the demo runs on a real node")?;

    let openai = match std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
    {
        Some(key) => OpenAi::Real {
            key,
            base_url: std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|u| !u.is_empty()),
        },
        None => {
            let server = ReplayServer::start(
                ReplayConfig::new()
                    .with_api_key(REPLAY_KEY)
                    .with_addr(SocketAddr::new(node.host_ip(), 0)),
            )
            .await
            .context("starting the OpenAI replay server")?;
            let url = expose_replay(env, &server).await?;
            OpenAi::Replay(server, url)
        }
    };
    step(&format!("OpenAI is {}", openai.describe()));

    step(&format!(
        "creating namespace {NAMESPACE}, the API-key Secret and the LlmJob from {EXAMPLE}"
    ));
    kubectl(env, &["create", "namespace", NAMESPACE]).await?;
    kubectl(env, &["label", "namespace", NAMESPACE, POD_SECURITY]).await?;
    print!(
        "{}",
        kubectl(env, &["get", "namespace", NAMESPACE, "--show-labels"]).await?
    );
    let llmjob = example(root, EXAMPLE, &openai)?;
    let secret_name = llmjob.spec.openai.api_key_secret_ref.name.clone();
    let secret_key = llmjob.spec.openai.api_key_secret_ref.key.clone();
    let key = match &openai {
        OpenAi::Replay(..) => REPLAY_KEY.to_owned(),
        OpenAi::Real { key, .. } => key.clone(),
    };
    create_secret(env, &secret_name, &secret_key, &key).await?;
    let name = llmjob.name_any();
    // The watch starts before the apply, so it shows every phase from the first.
    let watch = Watch::start(env).await?;
    eprint!(
        "{}",
        kubectl_apply(env, &serde_norway::to_string(&llmjob)?)
            .await
            .context("applying the LlmJob")?
    );

    step(&format!(
        "watching it: kubectl get llmjobs -n {NAMESPACE} -w"
    ));
    watch.until_finished(&name).await?;
    let done = Api::<LlmJob>::namespaced(env.client(), NAMESPACE)
        .get(&name)
        .await
        .context("reading the finished LlmJob")?;

    let status = done.status.clone().unwrap_or_default();
    let phase = status.phase;
    step("the LlmJob, with its trace id and token usage: kubectl get llmjobs -o wide");
    print!(
        "{}",
        kubectl(env, &["get", "llmjobs", "-n", NAMESPACE, "-o", "wide"]).await?
    );
    if let Some(usage) = status.result.as_ref().and_then(|r| r.usage.as_ref()) {
        println!(
            "tokens: {} input + {} output = {} total",
            usage.input_tokens.unwrap_or_default(),
            usage.output_tokens.unwrap_or_default(),
            usage.total_tokens.unwrap_or_default()
        );
    }
    let runner_pod = first_pod(env).await;
    let runner_log = match &runner_pod {
        Some(pod) => kubectl(env, &["logs", "-n", NAMESPACE, pod]).await?,
        None => String::new(),
    };
    let answer: Vec<&str> = runner_log
        .lines()
        .filter(|l| !l.contains(" INFO ") && !l.contains(" WARN "))
        .collect();
    if !answer.is_empty() {
        println!(
            "\nthe pod's stdout (the answer only with contentCapture: full):\n{}",
            answer.join("\n")
        );
    }
    step("the pods' logs, through the API server and the kubelet");
    if let Some(pod) = &runner_pod {
        println!("$ kubectl logs -n {NAMESPACE} {pod}");
        print!("{runner_log}");
    }
    let operator_log = [
        "logs",
        "-n",
        OPERATOR_NAMESPACE,
        "deploy/llmjob-operator",
        "--tail=5",
    ];
    println!("$ kubectl {}", operator_log.join(" "));
    print!("{}", kubectl(env, &operator_log).await?);
    step("where the containers ran: each pod's node, containerID and imageID");
    println!("containers:");
    for namespace in [OPERATOR_NAMESPACE, NAMESPACE] {
        print!("{}", containers(env, namespace).await?);
    }

    if let Some(trace_id) = status.trace_id.clone() {
        let telemetry = collector
            .wait_for(Duration::from_secs(30), |t| {
                let spans = t.trace(&trace_id);
                let complete = spans.iter().any(|s| s.name == "llm_job.workflow")
                    && spans.iter().any(|s| s.name == "llmjob.launch");
                let metrics = !t.metrics_named("gen_ai.client.token.usage").is_empty()
                    || phase == Some(Phase::Failed);
                (complete && metrics).then(|| t.clone())
            })
            .await
            .or_else(|_| collector.read())
            .context("reading the collector's output")?;
        step("the run's trace, as received by the collector");
        print!("{}", report::waterfall(&telemetry, &trace_id));
        step("its GenAI metrics");
        print!("{}", report::metrics(&telemetry, &trace_id));
        step("its log records (with their trace and span ids)");
        print!("{}", report::logs(&telemetry, &trace_id));
        eprintln!(
            "\nthe collector's output: {} (traces.jsonl, metrics.jsonl, logs.jsonl)",
            collector.output_dir().display()
        );
        if let Some(backends) = backends {
            step("the usage dashboard's key panels, now, from Prometheus");
            backends::print_panels(backends).await?;
            step(&format!(
                "the run's trace from Jaeger: GET /api/traces/{trace_id}"
            ));
            let trace = backends::fetch_trace(backends, &trace_id).await?;
            print!("{}", backends::trace_tree(&trace));
        }
    }

    if phase != Some(Phase::Succeeded) {
        let why = done
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
            })
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "no Failed condition".to_owned());
        bail!("the LlmJob {NAMESPACE}/{name} failed: {why}");
    }
    eprintln!("\ndemo: the LlmJob succeeded");

    let base_url = match &openai {
        OpenAi::Replay(_, url) => Some(url.clone()),
        OpenAi::Real { base_url, .. } => base_url.clone(),
    };
    // Held until the end: the --keep instructions name the object store.
    let (outcome, s3) = batch::run(root, env, base_url.as_deref()).await?;
    if outcome.phase != "Succeeded" {
        bail!(
            "the batch LlmJob {NAMESPACE}/{} ended {}",
            outcome.name,
            outcome.phase
        );
    }
    eprintln!(
        "\ndemo: the batch succeeded: {} task spans under trace {}, {} result lines",
        outcome.task_spans, outcome.trace_id, outcome.output_lines
    );
    if options.keep {
        if let Some(s3) = &s3 {
            println!(
                "  object store: versitygw at {} (bucket {}; data in {})",
                s3.endpoint(),
                s3.bucket(),
                s3.dir().display()
            );
        }
        // Here, while `openai` (the replay server) is still alive: the instructions use it.
        keep(root, env, backends, &openai).await?;
    } else {
        eprintln!(
            "(run `cargo xtask demo --keep` to keep the stack up and apply your own LlmJobs)"
        );
    }
    Ok(())
}

/// The collector's OTLP/gRPC endpoint inside the cluster: its Service.
fn collector_in_cluster() -> String {
    let (namespace, name) = node::COLLECTOR_SERVICE;
    format!("http://{name}.{namespace}.svc:4317")
}

/// Makes the replay server (listening on the node's host address) the Service
/// [`REPLAY_SERVICE`], port 80; returns its base URL inside the cluster.
async fn expose_replay(env: &TestEnv, server: &ReplayServer) -> Result<String> {
    let IpAddr::V4(address) = server.addr().ip() else {
        bail!("the replay server listens on {}, not IPv4", server.addr());
    };
    let (namespace, name) = REPLAY_SERVICE;
    let base = services::host_http_service(
        &env.client(),
        namespace,
        name,
        address,
        server.addr().port(),
    )
    .await
    .context("exposing the replay server as a Service")?;
    Ok(format!("{base}/v1"))
}

/// One line per container of each pod in `namespace`: the pod, its node, the `containerID`
/// and the `imageID` the kubelet reports.
async fn containers(env: &TestEnv, namespace: &str) -> Result<String> {
    let pods = Api::<Pod>::namespaced(env.client(), namespace)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the pods of namespace {namespace}"))?;
    let mut out = String::new();
    for pod in &pods.items {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("-");
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for c in statuses {
            out.push_str(&format!(
                "pod {namespace}/{} container {} node {node}\n  image {}\n  containerID {}\n  imageID {}\n",
                pod.name_any(),
                c.name,
                c.image,
                c.container_id.as_deref().unwrap_or("-"),
                c.image_id
            ));
        }
    }
    Ok(out)
}

/// Writes the demo's kustomize overlay of `manifests/` under the target directory.
fn write_overlay(root: &Path, env: &TestEnv, collector: &str) -> Result<PathBuf> {
    let dir = env.dir().join("overlay");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifests = relative(&dir, &root.join("manifests"));
    let args = [
        format!("--default-otlp-endpoint={collector}"),
        "--default-environment=demo".to_owned(),
    ];
    let ops: Vec<serde_json::Value> = args
        .iter()
        .map(|a| serde_json::json!({"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a}))
        .chain(std::iter::once(serde_json::json!({
            "op": "add", "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": collector}
        })))
        .collect();
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [manifests],
        "patches": [{
            "target": {"kind": "Deployment", "name": "llmjob-operator"},
            "patch": serde_json::to_string(&ops)?,
        }],
    });
    let path = dir.join("kustomization.yaml");
    std::fs::write(&path, serde_norway::to_string(&kustomization)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(dir)
}

/// `to` relative to `from` (kustomize wants relative resource paths).
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

async fn kubectl(env: &TestEnv, args: &[&str]) -> Result<String> {
    let out = env.kubectl(args).await?;
    kubectl_stdout(args, &out)
}

async fn wait_for_operator(env: &TestEnv) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(env.client(), OPERATOR_NAMESPACE);
    let available = testenv::wait::until(
        "the operator's Deployment to be Available",
        WAIT,
        || async {
            let conditions = api
                .get_opt("llmjob-operator")
                .await
                .ok()??
                .status?
                .conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
                .then_some(())
        },
    )
    .await;
    if let Err(e) = available {
        let log = kubectl(
            env,
            &[
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                "deploy/llmjob-operator",
                "--tail=20",
            ],
        )
        .await
        .unwrap_or_else(|e| format!("(no log: {e:#})"));
        bail!(
            "{e}; the stack's logs are in {}; the operator's log:\n{log}",
            env.dir().display()
        );
    }
    Ok(())
}

/// `kubectl apply --server-side -f -` of `yaml`; returns what kubectl printed.
async fn kubectl_apply(env: &TestEnv, yaml: &str) -> Result<String> {
    let args = ["apply", "--server-side", "-f", "-"];
    let mut child = env
        .kubectl_command(&args)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    let mut stdin = child.stdin.take().context("kubectl's stdin")?;
    stdin.write_all(yaml.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    kubectl_stdout(&args, &out)
}

/// The real `kubectl get llmjobs -w` in the demo's namespace, its lines echoed as they come.
struct Watch {
    // Held so that kubectl is killed (`kill_on_drop`) when the watch is done.
    _child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Watch {
    async fn start(env: &TestEnv) -> Result<Self> {
        let mut child = env
            .kubectl_command(&["get", "llmjobs", "-n", NAMESPACE, "-w"])?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Only "No resources found in demo namespace." before the first LlmJob.
            .stderr(Stdio::null())
            .spawn()
            .context("starting `kubectl get llmjobs -w`")?;
        let stdout = child.stdout.take().context("kubectl's stdout")?;
        Ok(Self {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Prints kubectl's rows until one shows LlmJob `name` finished (its STATUS column).
    async fn until_finished(mut self, name: &str) -> Result<()> {
        // The STATUS column prints the phase as its variant name (`Phase` serialises as such).
        let finished = [Phase::Succeeded, Phase::Failed].map(|p| format!("{p:?}"));
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await? {
                println!("{line}");
                let mut columns = line.split_whitespace();
                if columns.next() == Some(name)
                    && columns
                        .next()
                        .is_some_and(|s| finished.iter().any(|f| f == s))
                {
                    return Ok(());
                }
            }
            bail!("`kubectl get llmjobs -w` ended before the LlmJob finished")
        })
        .await
        .with_context(|| format!("the LlmJob did not finish within {WAIT:?}"))?
    }
}

/// An example LlmJob, in the demo's namespace, pointed at the replay server when used.
fn example(root: &Path, example: &str, openai: &OpenAi) -> Result<LlmJob> {
    let path = root.join(example);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut llmjob: LlmJob =
        serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    llmjob.metadata.namespace = Some(NAMESPACE.to_owned());
    llmjob.spec.openai.base_url = match openai {
        OpenAi::Replay(_, url) => Some(url.clone()),
        OpenAi::Real { base_url, .. } => base_url.clone(),
    };
    Ok(llmjob)
}

async fn create_secret(env: &TestEnv, name: &str, key: &str, value: &str) -> Result<()> {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "stringData": {key: value}
    }))?;
    // Through stdin: the key never appears in a command line.
    let applied = kubectl_apply(env, &serde_norway::to_string(&secret)?)
        .await
        .context("creating the API-key Secret")?;
    eprint!("{applied}");
    Ok(())
}

async fn first_pod(env: &TestEnv) -> Option<String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.client(), NAMESPACE);
    pods.list(&Default::default())
        .await
        .ok()?
        .items
        .first()
        .map(ResourceExt::name_any)
}

/// Keeps the stack up until Ctrl-C, printing how to use it. Everything the instructions name
/// (the stack, the collector, the OpenAI server in `openai`) is alive until then.
async fn keep(
    root: &Path,
    env: &TestEnv,
    backends: Option<&testenv::backends::Backends>,
    openai: &OpenAi,
) -> Result<()> {
    let llmjob = example(root, KEEP_EXAMPLE, openai)?;
    let file = env.dir().join(KEEP_EXAMPLE);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&file, serde_norway::to_string(&llmjob)?)
        .with_context(|| format!("writing {}", file.display()))?;

    println!("\nthe stack stays up; press Ctrl-C to stop it.");
    println!("  export KUBECONFIG={}", env.kubeconfig_path().display());
    println!(
        "  export PATH={}:$PATH    # the stack's kubectl",
        testenv::tools::bin_dir().display()
    );
    if let Some(c) = env.collector() {
        println!(
            "  collector: OTLP gRPC {}  OTLP HTTP {}  output {}",
            c.grpc_endpoint(),
            c.http_endpoint(),
            c.output_dir().display()
        );
    }
    if let Some(b) = backends {
        println!(
            "  Prometheus: {}  (HTTP API, e.g. {}/api/v1/query?query=gen_ai_client_token_usage_sum; no web UI in this build)",
            b.prometheus_url(),
            b.prometheus_url()
        );
        println!(
            "  Jaeger: {}  (query API, e.g. {}/api/traces/<traceId>)",
            b.jaeger_url(),
            b.jaeger_url()
        );
        println!(
            "  the reference pipelines: OTLP gRPC {} (logs: {})",
            b.otlp_grpc_endpoint(),
            b.dir().display()
        );
    }
    if let OpenAi::Replay(server, url) = openai {
        println!(
            "  OpenAI: the replay server at {} ({url} inside the cluster; Secret openai-api-key in namespace {NAMESPACE} holds its key)",
            server.base_url()
        );
    }
    println!("  kubectl get llmj -A");
    println!(
        "  kubectl apply -f {}    # {KEEP_EXAMPLE} in namespace {NAMESPACE}, spec.openai.baseURL set to the same OpenAI server",
        file.display()
    );
    println!("  kubectl get pods -n {NAMESPACE}; kubectl logs -n {NAMESPACE} <pod>");
    println!("  logs: {}", env.dir().display());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("demo: stopping the stack");
    Ok(())
}

/// kubectl's stdout, or an error quoting its stderr when it failed.
fn kubectl_stdout(args: &[&str], out: &std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`kubectl {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/w/target/x/overlay"), Path::new("/w/manifests")),
            "../../../manifests"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/b")), "b");
    }
}
