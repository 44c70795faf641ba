//! `batch-node-bench`: issue 17's scale figure, honestly: ONE batch LlmJob of N items (default
//! 10,000; `spec.batch.itemsFrom` a ConfigMap of JSON Lines, `itemsPerPod` 500, `parallelism` 20,
//! `concurrency` 16, `rateLimit.requestsPerMinute` 12,000) created on a testenv control plane
//! with the real node (kubelet, containerd, runc, kube-proxy, CoreDNS) and the release
//! `llmjob-operator` watching its namespace. The operator makes the input, the Indexed Job and
//! the status; the kubelet runs the runner image (`cargo xtask images`) as containers; the pods
//! call an in-process `openai-replay` server and write their results to versitygw
//! (`testenv::s3`), both reached through Services, with the store's credentials in a Secret.
//!
//! Measured: the wall time from the LlmJob's create call to its `Succeeded` phase, and the
//! pods' span (first container started to last finished); the requests/s the replay server
//! received (its own arrival clock) against the limit, over the run and in the busiest 10 s
//! window; each pod's peak memory from the node's cgroups ([`memory`]); the objects and lines
//! written and the LlmJob's `status.batch` totals and tokens. Prints a markdown table with
//! PASS/MISS lines on stdout ([`figures`]); nothing is asserted on time. Progress on stderr.
//! Exits non-zero when a line is MISS.
//!
//! Needs root (the real node), the tools of `tools/ensure-tools.sh test` (and versitygw), the
//! image archives of `cargo xtask images`, and the release operator:
//!
//! ```sh
//! bash bench/batch/run.sh    # BENCH_MODE=node, the default
//! ```

mod figures;
mod memory;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::{ReplayConfig, ReplayServer};
use testenv::env::TestEnv;
use testenv::images;
use testenv::node::{NodeConfig, services};
use testenv::process::{ManagedProcess, ProcessSpec, free_loopback_port};
use testenv::s3::S3Server;
use tokio::time::Instant;

use crate::figures::Report;

/// The API key the replay server requires and Secret `openai` holds.
const API_KEY: &str = "sk-bench-batch-node";
/// The LlmJob's name (and its Indexed Job's).
const NAME: &str = "bench";
/// The ConfigMap (and key) of the items.
const ITEMS_CONFIG_MAP: &str = "bench-items";
const ITEMS_KEY: &str = "items.jsonl";
/// The bucket and prefix of the results, and the Service and Secret of the store.
const BUCKET: &str = "results";
const PREFIX: &str = "bench";
const S3_SERVICE: &str = "s3";
const S3_SECRET: &str = "results-s3";
/// The label the Job controller puts on an Indexed Job's pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The runner's container in the operator's pods (`operator/src/build_job.rs`).
const RUNNER_CONTAINER: &str = "runner";
/// Upper bound of the waits for the environment's pieces: a guard against a hang.
const SETUP_WAIT: Duration = Duration::from_secs(120);

/// One batch LlmJob of N items through llmjob-operator on the testenv real node.
#[derive(Debug, Parser)]
#[command(name = "batch-node-bench", version)]
struct Cli {
    /// Items in the LlmJob.
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// `spec.batch.itemsPerPod`.
    #[arg(long, default_value_t = 500)]
    items_per_pod: usize,
    /// `spec.batch.parallelism`.
    #[arg(long, default_value_t = 20)]
    parallelism: usize,
    /// `spec.batch.concurrency`.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// `spec.batch.rateLimit.requestsPerMinute`.
    #[arg(long, default_value_t = 12_000)]
    rpm: u64,
    /// Give up on the run after this long (also its `spec.run.timeout`).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How often the pods' memory is read.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    /// Directory holding the release `llmjob-operator` (default: `<target>/release`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[batch-node-bench] {}", msg.as_ref());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.items >= 1 && cli.items_per_pod >= 1 && cli.parallelism >= 1,
        "--items, --items-per-pod and --parallelism must be at least 1"
    );
    anyhow::ensure!(
        cli.rpm >= cli.parallelism as u64,
        "--rpm must be at least --parallelism (admission requires it)"
    );
    let bin_dir = cli
        .bin_dir
        .clone()
        .unwrap_or_else(|| testenv::tools::target_dir().join("release"));
    let operator_bin = bin_dir.join("llmjob-operator");
    anyhow::ensure!(
        operator_bin.is_file(),
        "{} is missing: run `cargo build --release -p llmjob-operator` first",
        operator_bin.display()
    );
    let load_start = testenv::process::loadavg();
    log(format!(
        "{} items, load average {load_start} on {} CPUs; starting the control plane and the real node",
        cli.items,
        std::thread::available_parallelism().map_or(0, usize::from)
    ));
    let node = NodeConfig::built_images(&[images::PAUSE, images::RUNNER])?;
    let env = TestEnv::builder()
        .real_node(node)
        .collector(true)
        .dir_in(
            testenv::tools::target_dir()
                .join("bench")
                .join("batch-node"),
        )
        .start()
        .await
        .context("starting the control plane and the real node")?;
    log(format!("environment up: logs in {}", env.dir().display()));
    let outcome = run(&cli, &env, &operator_bin).await;
    let dir = env.dir().to_owned();
    if let Err(e) = env.shutdown().await {
        log(format!("stopping the environment: {e}"));
    }
    let mut report = outcome.with_context(|| format!("logs in {}", dir.display()))?;
    report.load_start = load_start;
    report.load_end = testenv::process::loadavg();
    println!("{}", report.markdown());
    println!("logs: {}", dir.display());
    anyhow::ensure!(report.passed(), "a line of the table is MISS");
    Ok(())
}

/// What the pod watcher learnt of one pod.
#[derive(Debug, Clone, Default)]
struct PodSeen {
    phase: String,
    /// The runner container's start and finish, milliseconds since the epoch.
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
}

/// Everything between a running environment and the report.
async fn run(cli: &Cli, env: &TestEnv, operator_bin: &Path) -> anyhow::Result<Report> {
    let client = env.client();
    let node = env.node().context("the environment runs a real node")?;
    testenv::crd::install_llmjob_crd(&client, "batch-node-bench").await?;
    let ns = env.create_namespace("bench-batch").await?;
    // The restricted Pod Security Standard, as in the operator's tests: the API server checks
    // every pod the operator builds.
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
            })),
        )
        .await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "openai"},
        "stringData": {"api-key": API_KEY}
    }))?;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;

    // The replay server and the object store on the node's host address, behind Services.
    let host = node.host_ip();
    let replay = ReplayServer::start(
        ReplayConfig::new()
            .with_api_key(API_KEY)
            .with_addr(SocketAddr::new(host, 0)),
    )
    .await?;
    let IpAddr::V4(replay_ip) = replay.addr().ip() else {
        anyhow::bail!("the replay server listens on {}, not IPv4", replay.addr());
    };
    let replay_base = services::host_http_service(
        &client,
        &ns,
        "openai-replay",
        replay_ip,
        replay.addr().port(),
    )
    .await?;
    let s3 = S3Server::start_in(env.dir(), host, BUCKET).await?;
    s3.expose(&client, &ns, S3_SERVICE, S3_SECRET).await?;
    for service in ["openai-replay", S3_SERVICE] {
        node.wait_for_service(&client, &ns, service, 80, SETUP_WAIT)
            .await?;
    }

    // The items: one ConfigMap key of JSON Lines.
    let items: String = (1..=cli.items)
        .map(|n| {
            serde_json::json!({"id": format!("item-{n}"), "prompt": format!("What is 2 + 2? (item {n})")})
                .to_string()
                + "\n"
        })
        .collect();
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ITEMS_CONFIG_MAP},
        "data": {ITEMS_KEY: items}
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &config_map)
        .await
        .context("creating the items ConfigMap")?;

    let mut operator = start_operator(env, &ns, operator_bin).await?;
    let outcome = measure(cli, env, &ns, &replay_base, &s3, &mut operator).await;
    let operator_hwm_mib = std::fs::read_to_string(format!("/proc/{}/status", operator.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0);
    if let Ok(Some(status)) = operator.try_exit_status() {
        log(format!("the operator exited early: {status}"));
    }
    let requests = replay.requests();
    if let Err(e) = operator.stop(Duration::from_secs(15)).await {
        log(format!("stopping the operator: {e}"));
    }
    let (mut report, created) = outcome?;
    let mut chats: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    chats.sort_by_key(|r| r.received);
    report.requests_not_ok = chats.iter().filter(|r| r.status != 200).count();
    report.requests = chats
        .iter()
        .map(|r| r.received.saturating_duration_since(created.into_std()))
        .collect();
    report.operator_hwm_mib = operator_hwm_mib;
    let keys = s3.list(PREFIX).await?;
    report.objects = keys.len();
    report.lines = s3.lines(PREFIX).await?.len();
    if let Err(e) = replay.shutdown().await {
        log(format!("stopping the replay server: {e}"));
    }
    if let Err(e) = s3.shutdown().await {
        log(format!("stopping versitygw: {e}"));
    }
    Ok(report)
}

/// Creates the LlmJob and follows it to the end: its phase, its pods (and their memory), its
/// status. Returns the report so far and when the create call returned.
async fn measure(
    cli: &Cli,
    env: &TestEnv,
    ns: &str,
    replay_base: &str,
    s3: &S3Server,
    operator: &mut ManagedProcess,
) -> anyhow::Result<(Report, Instant)> {
    let client = env.client();
    let node = env.node().context("the environment runs a real node")?;
    let llmjobs: Api<LlmJob> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let llmjob: LlmJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "llmjob.dev/v1alpha1",
        "kind": "LlmJob",
        "metadata": {"name": NAME},
        "spec": {
            "model": "gpt-4o-mini",
            "openai": {"apiKeySecretRef": {"name": "openai"}, "baseURL": format!("{replay_base}/v1")},
            "run": {"timeout": format!("{}s", cli.timeout.as_secs().max(1)), "maxAttempts": 2},
            "batch": {
                "itemsFrom": {"configMapKeyRef": {"name": ITEMS_CONFIG_MAP, "key": ITEMS_KEY}},
                "itemsPerPod": cli.items_per_pod,
                "parallelism": cli.parallelism,
                "concurrency": cli.concurrency,
                "rateLimit": {"requestsPerMinute": cli.rpm}
            },
            "output": {"url": s3.url(PREFIX), "credentialsSecretRef": {"name": S3_SECRET}}
        }
    }))?;
    let mut sampler = memory::Sampler::new(node.slot())?;
    let shards = cli.items.div_ceil(cli.items_per_pod);
    log(format!(
        "creating LlmJob {ns}/{NAME}: {} items, {shards} pods of {} at parallelism {}, {} requests/min, output {}",
        cli.items,
        cli.items_per_pod,
        cli.parallelism,
        cli.rpm,
        s3.url(PREFIX)
    ));
    llmjobs.create(&PostParams::default(), &llmjob).await?;
    let created = Instant::now();

    // Until the LlmJob is finished: its phase and its pods' memory read every `sample_every`,
    // its pods listed every second.
    let selector = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={NAME}"));
    let mut seen: BTreeMap<String, PodSeen> = BTreeMap::new();
    let mut tick = tokio::time::interval(cli.sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let list_every =
        (Duration::from_secs(1).as_millis() / cli.sample_every.as_millis().max(1)).max(1) as u64;
    let mut ticks: u64 = 0;
    let done = loop {
        tick.tick().await;
        let uids: Vec<String> = seen
            .iter()
            .filter(|(_, p)| p.phase != "Succeeded" && p.phase != "Failed")
            .map(|(uid, _)| uid.clone())
            .collect();
        sampler.sample(uids.iter().map(String::as_str));
        ticks += 1;
        if ticks.is_multiple_of(list_every) {
            // The pods that ended since the last list get a last read of their pod cgroup.
            for pod in pods.list(&selector).await?.items {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                seen.insert(uid, pod_seen(&pod));
            }
            sampler.sample(
                uids.iter()
                    .filter(|uid| {
                        seen.get(*uid)
                            .is_some_and(|p| p.phase == "Succeeded" || p.phase == "Failed")
                    })
                    .map(String::as_str),
            );
        }
        let current = llmjobs.get(NAME).await?;
        let phase = current.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(Phase::Succeeded | Phase::Failed)) {
            break current;
        }
        anyhow::ensure!(
            created.elapsed() < cli.timeout,
            "LlmJob {ns}/{NAME} not finished after {:?}: status {}",
            cli.timeout,
            serde_json::to_string(&current.status).unwrap_or_default()
        );
        if let Some(status) = operator.try_exit_status()? {
            anyhow::bail!(
                "the operator exited ({status}); log {}",
                operator.log_path().display()
            );
        }
        if ticks.is_multiple_of(list_every * 10) {
            let ended = seen.values().filter(|p| p.phase == "Succeeded").count();
            log(format!(
                "{:.0} s: {} pods seen, {ended} succeeded",
                created.elapsed().as_secs_f64(),
                seen.len()
            ));
        }
    };
    let create_to_succeeded = created.elapsed();
    log(format!(
        "LlmJob finished ({:?}) after {:.1} s",
        done.status.as_ref().and_then(|s| s.phase),
        create_to_succeeded.as_secs_f64()
    ));
    // The last pods' state (their containers' finish times).
    for pod in pods.list(&selector).await?.items {
        if let Some(uid) = pod.metadata.uid.clone() {
            seen.insert(uid, pod_seen(&pod));
        }
    }

    let status = done.status.clone().unwrap_or_default();
    let batch = status.batch.clone().unwrap_or_default();
    let started = seen.values().filter_map(|p| p.started_ms).min();
    let finished = seen.values().filter_map(|p| p.finished_ms).max();
    let every_pod_timed = seen
        .values()
        .all(|p| p.started_ms.is_some() && p.finished_ms.is_some());
    let pods_span = match (started, finished) {
        (Some(s), Some(f)) if every_pod_timed && f >= s => Some(Duration::from_millis(
            u64::try_from(f - s).unwrap_or_default(),
        )),
        _ => None,
    };
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let peaks = sampler.peaks();
    let report = Report {
        items: cli.items,
        items_per_pod: cli.items_per_pod,
        parallelism: cli.parallelism,
        rpm: cli.rpm,
        concurrency: cli.concurrency,
        shards,
        create_to_succeeded,
        pods_span,
        pods_seen: seen.len(),
        pods_succeeded: seen.values().filter(|p| p.phase == "Succeeded").count(),
        runner_hwm_mib: peaks
            .values()
            .filter(|p| p.runner_hwm > 0)
            .map(|p| mib(p.runner_hwm))
            .collect(),
        pod_cgroup_peak_mib: peaks
            .values()
            .filter(|p| p.pod_cgroup > 0)
            .map(|p| mib(p.pod_cgroup))
            .collect(),
        status_succeeded: batch.succeeded,
        status_failed: batch.failed,
        status_shards_done: batch.shards_done,
        status_shards: batch.shards,
        status_tokens: status
            .result
            .as_ref()
            .and_then(|r| r.usage.as_ref())
            .and_then(|u| u.total_tokens),
        phase: status
            .phase
            .map_or_else(|| "-".to_owned(), |p| format!("{p:?}")),
        output: s3.url(PREFIX),
        date: date_utc(),
        ..Report::default()
    };
    Ok((report, created))
}

/// The pod's phase and its runner container's start and finish.
fn pod_seen(pod: &Pod) -> PodSeen {
    let status = pod.status.clone().unwrap_or_default();
    let runner = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == RUNNER_CONTAINER);
    let state = runner.and_then(|c| c.state);
    let terminated = state.as_ref().and_then(|s| s.terminated.clone());
    let started = terminated
        .as_ref()
        .and_then(|t| t.started_at.clone())
        .or_else(|| state.as_ref()?.running.as_ref()?.started_at.clone());
    PodSeen {
        phase: status.phase.unwrap_or_default(),
        started_ms: started.map(|t| t.0.as_millisecond()),
        finished_ms: terminated
            .and_then(|t| t.finished_at)
            .map(|t| t.0.as_millisecond()),
    }
}

/// Today's date (UTC), from the API's clock type.
fn date_utc() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .to_string()
        .chars()
        .take(10)
        .collect()
}

/// Starts the release operator for `ns` as a host process, exporting to the environment's
/// collector, its runs on the runner image; returns once its `/readyz` answers 200.
async fn start_operator(
    env: &TestEnv,
    ns: &str,
    operator_bin: &Path,
) -> anyhow::Result<ManagedProcess> {
    let collector = env
        .collector()
        .context("the environment runs a collector")?;
    let (collector_ns, collector_name) = testenv::node::COLLECTOR_SERVICE;
    let http: SocketAddr = ([127, 0, 0, 1], free_loopback_port()?).into();
    let spec = ProcessSpec::new(
        "llmjob-operator (bench)",
        operator_bin,
        env.dir().join("operator.log"),
    )
    .arg(format!("--runner-image={}", images::RUNNER.reference()))
    .arg("--runner-image-pull-policy=Never")
    .arg(format!(
        "--default-otlp-endpoint=http://{collector_name}.{collector_ns}.svc:4317"
    ))
    .arg("--default-environment=bench")
    .arg(format!("--watch-namespaces={ns}"))
    .arg(format!("--http-addr={http}"))
    .env("KUBECONFIG", env.kubeconfig_path())
    .env("POD_NAMESPACE", ns)
    .env("RUST_LOG", "info")
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint());
    let operator = ManagedProcess::spawn(spec)?;
    testenv::wait::until_ok("the operator's /readyz", SETUP_WAIT, || {
        testenv::http::get_ok(http, "/readyz")
    })
    .await
    .with_context(|| format!("operator log {}", operator.log_path().display()))?;
    log(format!("operator ready (pid {})", operator.pid()));
    Ok(operator)
}
