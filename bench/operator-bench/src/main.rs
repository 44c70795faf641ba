//! `operator-bench`: N LlmJobs through the operator against N equivalent `batch/v1` Jobs created
//! straight through the API, each on a fresh testenv control plane (kube-apiserver,
//! kube-controller-manager, the fake kubelet running the release `llmjob-runner` as pod
//! processes, a collector), both against one in-process `openai-replay` server.
//!
//! Run A: the release `llmjob-operator` watches one namespace; N LlmJobs are created; measured:
//! time until N Jobs exist, until N Jobs are `Complete`, until N LlmJobs are `Succeeded`; the
//! operator's reconciles (its `/metrics`), peak RSS (`VmHWM`) and CPU; the apiserver's request
//! count (`apiserver_request_total`, all clients) and the control plane's CPU.
//! Run B: the pod spec of one Job the operator made (owner references, selector and
//! controller labels stripped, `TRACEPARENT` removed, the collector endpoint pointed at run B's
//! collector) is created N times as plain Jobs; measured: time until N Jobs exist and until N
//! are `Complete`, the same request count and control-plane CPU.
//!
//! Prints a markdown table with both runs, the ratios, and the issue's targets with PASS/MISS.
//! Targets are printed, never asserted (shared, noisy machines). Progress goes to stderr.
//!
//! ```sh
//! cargo build --release -p llmjob-operator -p llmjob-runner -p operator-bench
//! target/release/operator-bench --count 1000
//! ```

mod kills;
mod progress;
mod scrape;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::{ReplayConfig, ReplayServer};
use testenv::env::{RUNNER_IMAGE, TestEnv};
use testenv::process::{ProcessSpec, free_loopback_port};
use tokio::time::Instant;

use crate::progress::{Outcome, Tracker};

/// The API key the replay server requires and the Secrets hold.
const API_KEY: &str = "sk-bench-operator";
/// The label the operator puts on its Jobs (`operator/src/build_job.rs`).
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=llmjob-operator";
/// The label every direct Job of run B carries (to select them).
const DIRECT_LABEL: &str = "bench.llmjob.dev/direct";
/// The issue's targets.
const TARGET_TIME_RATIO: f64 = 1.3;

/// The operator's peak RSS target: 64 MiB for up to 1,000 LlmJobs (the first release's bench),
/// 128 MiB above, up to 10,000 (issue 17).
fn target_rss_mib(count: usize) -> f64 {
    if count <= 1000 { 64.0 } else { 128.0 }
}

/// Compare N LlmJobs (through llmjob-operator) with N direct Jobs, on the real control plane.
#[derive(Debug, Parser)]
#[command(name = "operator-bench", version)]
struct Cli {
    /// LlmJobs in run A, Jobs in run B.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Create calls in flight at once (the same in both runs).
    #[arg(long, default_value_t = 8)]
    create_concurrency: usize,
    /// The prompt of every run (the replay server answers with its recorded reply whatever it is).
    #[arg(long, default_value = "Say hi.")]
    prompt: String,
    /// Give up on a run after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Directory holding the release `llmjob-operator` and `llmjob-runner` (default:
    /// `<target>/release`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Only run A (the operator), for profiling it.
    #[arg(long)]
    only_operator: bool,
    /// Load with faults: SIGKILL the operator this often during run A and start it again at
    /// once; run A is made twice, without and with the kills (no run B), and the bench fails
    /// unless every LlmJob `Succeeded`, with exactly one Job, one call to the API and one
    /// `llm_job.workflow` span in its trace.
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_every: Option<Duration>,
    /// With `--kill-every`: skip the run without kills (the CI test's quick mode).
    #[arg(long, requires = "kill_every")]
    only_kills: bool,
    /// How long after the CRD is installed run A's clock may start at the earliest; 0 for a
    /// quick check that compares no times. kube-controller-manager's garbage collector looks
    /// for new resources in discovery every 30 s (`syncPeriod` in
    /// `cmd/kube-controller-manager/app/core.go`), then syncs a monitor for them. Until it
    /// watches LlmJobs, every Job owned by one costs it a GET of the owner, which a cluster
    /// whose CRD was installed with the operator, long before its LlmJobs, never pays.
    #[arg(long, default_value = "35s", value_parser = humantime::parse_duration)]
    gc_wait: Duration,
}

/// What one run measured.
#[derive(Debug, Default)]
struct RunFigures {
    /// Submitting all create calls.
    submitted: Duration,
    /// Until N Jobs existed.
    jobs_created: Duration,
    /// Until N Jobs were Complete.
    jobs_complete: Duration,
    /// Until N LlmJobs were Succeeded (run A only).
    llmjobs_succeeded: Option<Duration>,
    /// apiserver_request_total, after minus before.
    api_requests: f64,
    /// The same by resource and verb.
    api_by_resource: BTreeMap<String, f64>,
    /// CPU seconds of each control-plane process during the run.
    control_plane_cpu: BTreeMap<String, f64>,
    /// Run A: the operator's reconciles, errors, peak RSS (bytes) and CPU seconds (not with
    /// `--kill-every`).
    operator: Option<OperatorFigures>,
    /// Run A with `--kill-every`: how often the operator was SIGKILLed.
    kills: usize,
    /// Run A with `--kill-every`: the outcome's checks.
    checks: Option<kills::Checks>,
}

#[derive(Debug, Default)]
struct OperatorFigures {
    reconciles: f64,
    reconcile_errors: f64,
    /// Reads of an LlmJob from the API server instead of the watch cache.
    fresh_reads: f64,
    peak_rss: u64,
    cpu: f64,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[operator-bench] {}", msg.as_ref());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.count >= 1, "--count must be at least 1");
    let bin_dir = cli
        .bin_dir
        .clone()
        .unwrap_or_else(|| testenv::tools::target_dir().join("release"));
    let operator_bin = release_binary(&bin_dir, "llmjob-operator")?;
    let runner_bin = release_binary(&bin_dir, "llmjob-runner")?;
    let load_start = testenv::process::loadavg();
    log(format!(
        "count {}, load average {load_start} on {} CPUs",
        cli.count,
        std::thread::available_parallelism().map_or(0, usize::from)
    ));

    let replay = ReplayServer::start(ReplayConfig::new().with_api_key(API_KEY)).await?;

    if let Some(every) = cli.kill_every {
        let baseline = if cli.only_kills {
            None
        } else {
            Some(
                run_operator(&cli, &operator_bin, &runner_bin, &replay, None)
                    .await?
                    .0,
            )
        };
        let (killed, _) =
            run_operator(&cli, &operator_bin, &runner_bin, &replay, Some(every)).await?;
        let load_end = testenv::process::loadavg();
        replay.shutdown().await?;
        let passed = kills::print_report(
            &cli,
            every,
            baseline.as_ref(),
            &killed,
            &load_start,
            &load_end,
        );
        anyhow::ensure!(passed, "load with faults: a check missed (see the table)");
        return Ok(());
    }
    let (a, template) = run_operator(&cli, &operator_bin, &runner_bin, &replay, None).await?;
    let b = if cli.only_operator {
        None
    } else {
        Some(run_direct(&cli, &runner_bin, &template).await?)
    };
    let load_end = testenv::process::loadavg();
    replay.shutdown().await?;

    print_report(&cli, &a, b.as_ref(), &load_start, &load_end);
    Ok(())
}

fn release_binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run `cargo build --release -p llmjob-operator -p llmjob-runner` first",
        path.display()
    );
    // Absolute: the fake kubelet starts each pod's process in the pod's own directory.
    std::fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))
}

/// Starts a fresh control plane with the runner image and a collector.
async fn start_env(runner_bin: &Path) -> anyhow::Result<TestEnv> {
    let env = TestEnv::builder()
        .image(RUNNER_IMAGE, runner_bin)
        .collector(true)
        .dir_in(testenv::tools::target_dir().join("bench").join("operator"))
        .start()
        .await?;
    Ok(env)
}

/// A namespace holding the API-key Secret `openai`.
async fn namespace(env: &TestEnv, prefix: &str) -> anyhow::Result<String> {
    let ns = env.create_namespace(prefix).await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "openai"},
        "stringData": {"api-key": API_KEY}
    }))?;
    Api::<Secret>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(ns)
}

/// CPU seconds so far of each control-plane process.
fn control_plane_cpu(env: &TestEnv) -> BTreeMap<String, f64> {
    env.cluster()
        .map(|c| c.processes())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, scrape::cpu_seconds(pid).ok()?)))
        .collect()
}

fn delta_map(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Creates `count` objects with at most `concurrency` calls in flight.
async fn create_all<K, F>(
    api: &Api<K>,
    count: usize,
    concurrency: usize,
    make: F,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    F: Fn(usize) -> anyhow::Result<K>,
{
    let objects = (0..count).map(&make).collect::<anyhow::Result<Vec<K>>>()?;
    futures::stream::iter(objects)
        .map(|obj| async move { api.create(&PostParams::default(), &obj).await })
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(())
}

/// One dry-run create, before the clock starts: the first create of a kind on a fresh apiserver
/// pays for warming its handler and admission (for the CRD: schema and CEL rules), about 2 s
/// here, which would otherwise land in run A's figures alone.
async fn warm_up<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&params, obj).await?;
    Ok(())
}

/// Progress lines every few seconds until `done` resolves.
fn report_progress(
    label: &'static str,
    trackers: Vec<(&'static str, &Tracker)>,
    t0: Instant,
) -> String {
    let parts: Vec<String> = trackers
        .iter()
        .map(|(what, t)| {
            let c = t.counts();
            format!("{what} {}/{}/{}", c.seen, c.done, c.failed)
        })
        .collect();
    format!(
        "{label} t={:.0}s seen/done/failed: {} (load {})",
        t0.elapsed().as_secs_f64(),
        parts.join(", "),
        testenv::process::loadavg()
    )
}

/// Run A: N LlmJobs through the operator; with `kill_every`, the operator is SIGKILLed that often
/// (and started again at once) from the first create until every LlmJob and Job has finished,
/// and the outcome is checked ([`kills::Checks`]).
async fn run_operator(
    cli: &Cli,
    operator_bin: &Path,
    runner_bin: &Path,
    replay: &ReplayServer,
    kill_every: Option<Duration>,
) -> anyhow::Result<(RunFigures, Job)> {
    let base_url = &replay.base_url();
    log("run A (operator): starting a control plane");
    let env = start_env(runner_bin).await?;
    let client = env.client();
    testenv::crd::install_llmjob_crd(&client, "operator-bench").await?;
    let crd_installed = Instant::now();
    let ns = namespace(&env, "bench-operator").await?;
    let collector = env
        .collector()
        .context("the environment runs a collector")?
        .grpc_endpoint();

    let port = free_loopback_port()?;
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    let spec = ProcessSpec::new(
        "llmjob-operator (bench)",
        operator_bin,
        env.dir().join("operator.log"),
    )
    .arg(format!("--runner-image={RUNNER_IMAGE}:dev"))
    .arg("--runner-image-pull-policy=Never")
    .arg(format!("--default-otlp-endpoint={collector}"))
    .arg("--default-environment=bench")
    .arg(format!("--watch-namespaces={ns}"))
    .arg(format!("--http-addr={http}"))
    .env("KUBECONFIG", env.kubeconfig_path())
    .env("POD_NAMESPACE", &ns)
    .env("RUST_LOG", "info")
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector);
    let mut operator = kills::Operator::spawn(spec)?;
    testenv::wait::until_ok("the operator's /readyz", Duration::from_secs(60), || {
        testenv::http::get_ok(http, "/readyz")
    })
    .await
    .with_context(|| format!("operator log {}", operator.log_path().display()))?;
    log(format!(
        "run A: operator ready (pid {}), namespace {ns}",
        operator.pid().unwrap_or_default()
    ));

    let jobs = Tracker::start(
        "run A Jobs",
        Api::<Job>::namespaced(client.clone(), &ns),
        Some(MANAGED_SELECTOR),
        cli.count,
        job_outcome,
    )
    .await?;
    let llmjobs = Tracker::start(
        "run A LlmJobs",
        Api::<LlmJob>::namespaced(client.clone(), &ns),
        None,
        cli.count,
        llmjob_outcome,
    )
    .await?;

    let llmjob_api = Api::<LlmJob>::namespaced(client.clone(), &ns);
    warm_up(
        &llmjob_api,
        &llmjob(cli.count, &cli.prompt, base_url, cli.timeout)?,
    )
    .await?;
    let gc_wait = (crd_installed + cli.gc_wait).saturating_duration_since(Instant::now());
    if !gc_wait.is_zero() {
        log(format!(
            "run A: waiting {gc_wait:.0?} for the garbage collector to watch LlmJobs"
        ));
        tokio::time::sleep(gc_wait).await;
    }
    let api_before = scrape::apiserver_metrics(&client).await?;
    let cpu_before = control_plane_cpu(&env);
    replay.clear_requests();
    let t0 = Instant::now();
    log(format!("run A: creating {} LlmJobs", cli.count));
    let work = async {
        let submitting = async {
            create_all(&llmjob_api, cli.count, cli.create_concurrency, |i| {
                llmjob(i, &cli.prompt, base_url, cli.timeout)
            })
            .await?;
            anyhow::Ok(Instant::now())
        };
        let submitted = with_progress(submitting, || {
            report_progress("run A", vec![("Jobs", &jobs), ("LlmJobs", &llmjobs)], t0)
        })
        .await?;
        let submitted = submitted - t0;
        let jobs_created = jobs.wait_all_seen(cli.timeout).await? - t0;
        log(format!(
            "run A: {} Jobs exist after {jobs_created:.1?}",
            cli.count
        ));
        let all_done = async {
            let succeeded = llmjobs.wait_all_done(cli.timeout).await?;
            let complete = jobs.wait_all_done(cli.timeout).await?;
            anyhow::Ok((succeeded, complete))
        };
        let (succeeded, complete) = with_progress(all_done, || {
            report_progress("run A", vec![("Jobs", &jobs), ("LlmJobs", &llmjobs)], t0)
        })
        .await?;
        anyhow::Ok((submitted, jobs_created, succeeded - t0, complete - t0))
    };
    let (submitted, jobs_created, succeeded, complete) = match kill_every {
        None => work.await?,
        Some(every) => {
            tokio::pin!(work);
            tokio::select! {
                out = &mut work => out?,
                err = operator.kill_every(every) => return Err(err),
            }
        }
    };
    log(format!(
        "run A: all LlmJobs Succeeded after {succeeded:.1?}"
    ));
    let cpu_after = control_plane_cpu(&env);
    let api_after = scrape::apiserver_metrics(&client).await?;

    // With kills, the operator's counters and peak RSS would cover only its last life.
    let operator_figures = match kill_every {
        None => Some(operator_figures(&operator, http).await?),
        Some(_) => None,
    };
    // In the load-with-faults mode, the run without kills is checked like the one with them.
    let checks = match cli.kill_every {
        Some(_) => {
            let telemetry = env
                .collector()
                .context("the environment runs a collector")?;
            Some(kills::Checks::run(&client, &ns, telemetry, replay, cli.count).await?)
        }
        None => None,
    };

    // The template for run B: one of the operator's Jobs.
    let template = Api::<Job>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(MANAGED_SELECTOR).limit(1))
        .await?
        .items
        .into_iter()
        .next()
        .context("no Job made by the operator")?;
    let kill_count = operator.kills();
    let status = operator.stop(Duration::from_secs(15)).await?;
    log(format!(
        "run A: operator stopped ({status}); stopping the control plane"
    ));
    drop((jobs, llmjobs));
    let figures = RunFigures {
        submitted,
        jobs_created,
        jobs_complete: complete,
        llmjobs_succeeded: Some(succeeded),
        api_requests: scrape::sum(&api_after, "apiserver_request_total")
            - scrape::sum(&api_before, "apiserver_request_total"),
        api_by_resource: delta_map(
            &scrape::requests_by_resource_and_verb(&api_after),
            &scrape::requests_by_resource_and_verb(&api_before),
        ),
        control_plane_cpu: delta_map(&cpu_after, &cpu_before),
        operator: operator_figures,
        kills: kill_count,
        checks,
    };
    let template = strip_for_direct(template, &collector);
    env.shutdown().await?;
    Ok((figures, template))
}

/// The operator's reconciles, errors, fresh reads, peak RSS and CPU, read once its reconciles
/// have settled.
async fn operator_figures(
    operator: &kills::Operator,
    http: SocketAddr,
) -> anyhow::Result<OperatorFigures> {
    let pid = operator.pid().context("the operator runs")?;
    // Reconciles triggered by the last status changes may still be queued: wait until the
    // counter is still for 3 s (at most 30 s) before reading it.
    let mut metrics = testenv::http::get_ok(http, "/metrics")
        .await
        .map_err(anyhow::Error::msg)?;
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    let mut still_since = Instant::now();
    while Instant::now() < settle_deadline && still_since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = testenv::http::get_ok(http, "/metrics")
            .await
            .map_err(anyhow::Error::msg)?;
        if scrape::sum(&now, "llmjob_operator_reconciles_total")
            != scrape::sum(&metrics, "llmjob_operator_reconciles_total")
        {
            still_since = Instant::now();
        }
        metrics = now;
    }
    Ok(OperatorFigures {
        reconciles: scrape::sum(&metrics, "llmjob_operator_reconciles_total"),
        reconcile_errors: scrape::sum(&metrics, "llmjob_operator_reconcile_errors_total"),
        fresh_reads: scrape::sum(&metrics, "llmjob_operator_fresh_reads_total"),
        peak_rss: scrape::peak_rss(pid)?,
        cpu: scrape::cpu_seconds(pid)?,
    })
}

/// Run B: N copies of the operator's Job, created directly.
async fn run_direct(cli: &Cli, runner_bin: &Path, template: &Job) -> anyhow::Result<RunFigures> {
    log("run B (direct Jobs): starting a control plane");
    let env = start_env(runner_bin).await?;
    let client = env.client();
    let ns = namespace(&env, "bench-direct").await?;
    let collector = env
        .collector()
        .context("the environment runs a collector")?
        .grpc_endpoint();
    let template = retarget(template, &collector)?;
    let jobs = Tracker::start(
        "run B Jobs",
        Api::<Job>::namespaced(client.clone(), &ns),
        Some(&format!("{DIRECT_LABEL}=true")),
        cli.count,
        job_outcome,
    )
    .await?;
    let job_api = Api::<Job>::namespaced(client.clone(), &ns);
    warm_up(&job_api, &direct_job(&template, cli.count)?).await?;
    let api_before = scrape::apiserver_metrics(&client).await?;
    let cpu_before = control_plane_cpu(&env);
    let t0 = Instant::now();
    log(format!("run B: creating {} Jobs", cli.count));
    let submitting = async {
        create_all(&job_api, cli.count, cli.create_concurrency, |i| {
            direct_job(&template, i)
        })
        .await?;
        anyhow::Ok(Instant::now())
    };
    let submitted = with_progress(submitting, || {
        report_progress("run B", vec![("Jobs", &jobs)], t0)
    })
    .await?
        - t0;
    let jobs_created = jobs.wait_all_seen(cli.timeout).await? - t0;
    log(format!(
        "run B: {} Jobs exist after {jobs_created:.1?}",
        cli.count
    ));
    let complete = with_progress(jobs.wait_all_done(cli.timeout), || {
        report_progress("run B", vec![("Jobs", &jobs)], t0)
    })
    .await?
        - t0;
    log(format!("run B: all Jobs Complete after {complete:.1?}"));
    let cpu_after = control_plane_cpu(&env);
    let api_after = scrape::apiserver_metrics(&client).await?;
    drop(jobs);
    env.shutdown().await?;
    Ok(RunFigures {
        submitted,
        jobs_created,
        jobs_complete: complete,
        llmjobs_succeeded: None,
        api_requests: scrape::sum(&api_after, "apiserver_request_total")
            - scrape::sum(&api_before, "apiserver_request_total"),
        api_by_resource: delta_map(
            &scrape::requests_by_resource_and_verb(&api_after),
            &scrape::requests_by_resource_and_verb(&api_before),
        ),
        control_plane_cpu: delta_map(&cpu_after, &cpu_before),
        operator: None,
        kills: 0,
        checks: None,
    })
}

/// Awaits `fut`, logging `line()` every 5 s; returns when it finished.
async fn with_progress<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
    line: impl Fn() -> String,
) -> anyhow::Result<T> {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => log(line()),
        }
    }
}

/// LlmJob number `i`.
///
/// Its `spec.run.timeout` (the Job's `activeDeadlineSeconds`, which counts from the Job's start,
/// while its pod waits its turn too) is the bench's own `--timeout`: at 10,000 on a loaded
/// machine, pods waited longer than the former 120 s and their Jobs failed `DeadlineExceeded`.
/// Run B's Jobs copy it with the rest of the template.
fn llmjob(i: usize, prompt: &str, base_url: &str, timeout: Duration) -> anyhow::Result<LlmJob> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "llmjob.dev/v1alpha1",
        "kind": "LlmJob",
        "metadata": {"name": format!("bench-{i:05}")},
        "spec": {
            "model": "gpt-4o-mini",
            "prompt": prompt,
            "openai": {"apiKeySecretRef": {"name": "openai"}, "baseURL": base_url},
            "run": {"timeout": format!("{}s", timeout.as_secs().clamp(1, 24 * 3600)), "maxAttempts": 2}
        }
    }))?)
}

fn job_outcome(job: &Job) -> Outcome {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let find = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if find("Complete").is_some() {
        Outcome::Done
    } else if let Some(failed) = find("Failed") {
        Outcome::Failed(why(failed.reason.as_deref(), failed.message.as_deref()))
    } else {
        Outcome::Running
    }
}

fn llmjob_outcome(llmjob: &LlmJob) -> Outcome {
    match llmjob.status.as_ref().and_then(|s| s.phase) {
        Some(Phase::Succeeded) => Outcome::Done,
        Some(Phase::Failed) => {
            let failed = llmjob.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
            });
            Outcome::Failed(why(
                failed.map(|c| c.reason.as_str()),
                failed.map(|c| c.message.as_str()),
            ))
        }
        _ => Outcome::Running,
    }
}

/// "reason: message" of a `Failed` condition, for the bench's error.
fn why(reason: Option<&str>, message: Option<&str>) -> String {
    format!(
        "{}: {}",
        reason.unwrap_or("no reason"),
        message.unwrap_or("no message")
    )
}

/// The operator's Job as a plain Job: no owner, no server-set fields, no selector or controller
/// labels (the job controller sets them again), no `TRACEPARENT` (there is no launch span). The
/// collector endpoint of run A is replaced by a placeholder that [`retarget`] fills in.
fn strip_for_direct(mut job: Job, collector_a: &str) -> Job {
    let labels = job.metadata.labels.take().unwrap_or_default();
    job.metadata = Default::default();
    job.metadata.labels = Some(
        labels
            .into_iter()
            .filter(|(k, _)| !is_controller_label(k))
            .chain([(DIRECT_LABEL.to_owned(), "true".to_owned())])
            .collect(),
    );
    job.status = None;
    if let Some(spec) = job.spec.as_mut() {
        spec.selector = None;
        spec.manual_selector = None;
        if let Some(meta) = spec.template.metadata.as_mut()
            && let Some(labels) = meta.labels.as_mut()
        {
            labels.retain(|k, _| !is_controller_label(k));
        }
        if let Some(pod) = spec.template.spec.as_mut() {
            for container in &mut pod.containers {
                if let Some(env) = container.env.as_mut() {
                    env.retain(|e| e.name != "TRACEPARENT");
                    for var in env.iter_mut() {
                        if var.value.as_deref() == Some(collector_a) {
                            var.value = Some(COLLECTOR_PLACEHOLDER.to_owned());
                        }
                    }
                }
            }
        }
    }
    job
}

const COLLECTOR_PLACEHOLDER: &str = "$COLLECTOR";

fn is_controller_label(key: &str) -> bool {
    matches!(
        key,
        "controller-uid"
            | "job-name"
            | "batch.kubernetes.io/controller-uid"
            | "batch.kubernetes.io/job-name"
    )
}

/// The template with run B's collector endpoint.
fn retarget(template: &Job, collector: &str) -> anyhow::Result<Job> {
    let text = serde_json::to_string(template)?.replace(COLLECTOR_PLACEHOLDER, collector);
    let job: Job = serde_json::from_str(&text)?;
    anyhow::ensure!(
        text.contains(collector),
        "the operator's Job has no OTLP endpoint to retarget"
    );
    Ok(job)
}

/// Direct Job number `i`.
fn direct_job(template: &Job, i: usize) -> anyhow::Result<Job> {
    let mut job = template.clone();
    job.metadata.name = Some(format!("direct-{i:05}"));
    Ok(job)
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn print_report(
    cli: &Cli,
    a: &RunFigures,
    b: Option<&RunFigures>,
    load_start: &str,
    load_end: &str,
) {
    let n = cli.count as f64;
    let mut out = Vec::new();
    out.push(format!(
        "### llmjob-operator vs direct Jobs ({} each, create concurrency {})",
        cli.count, cli.create_concurrency
    ));
    out.push(String::new());
    out.push("| measure | A: LlmJobs via operator | B: direct Jobs | A/B | target | |".into());
    out.push("|---|---|---|---|---|---|".into());
    let ratio_row = |label: &str, va: Duration, vb: Option<Duration>, target: bool| {
        let (b_text, ratio, verdict) = match vb {
            Some(vb) => {
                let r = va.as_secs_f64() / vb.as_secs_f64().max(1e-9);
                let verdict = if target {
                    if r <= TARGET_TIME_RATIO {
                        "PASS"
                    } else {
                        "MISS"
                    }
                } else {
                    ""
                };
                (secs(vb), format!("{r:.2}×"), verdict)
            }
            None => ("—".into(), "—".into(), ""),
        };
        let target_text = if target {
            format!("≤ {TARGET_TIME_RATIO}×")
        } else {
            String::new()
        };
        format!(
            "| {label} (s) | {} | {b_text} | {ratio} | {target_text} | {verdict} |",
            secs(va)
        )
    };
    out.push(ratio_row(
        "all create calls returned",
        a.submitted,
        b.map(|b| b.submitted),
        false,
    ));
    out.push(ratio_row(
        "all Jobs created",
        a.jobs_created,
        b.map(|b| b.jobs_created),
        true,
    ));
    out.push(ratio_row(
        "all Jobs Complete",
        a.jobs_complete,
        b.map(|b| b.jobs_complete),
        false,
    ));
    if let Some(s) = a.llmjobs_succeeded {
        out.push(ratio_row(
            "all complete (A: LlmJobs Succeeded)",
            s,
            b.map(|b| b.jobs_complete),
            true,
        ));
    }
    if let Some(op) = &a.operator {
        out.push(format!(
            "| reconciles per LlmJob | {:.2} ({:.0} reconciles, {:.0} errors) | — | | | |",
            op.reconciles / n,
            op.reconciles,
            op.reconcile_errors
        ));
        out.push(format!(
            "| fresh LlmJob reads per LlmJob (create decision + stale-cache conflicts) | {:.2} | — | | | |",
            op.fresh_reads / n
        ));
        let rss = op.peak_rss as f64 / 1_048_576.0;
        let target = target_rss_mib(cli.count);
        out.push(format!(
            "| operator peak RSS (MiB, VmHWM) | {rss:.1} | — | | < {target} | {} |",
            if rss < target { "PASS" } else { "MISS" }
        ));
        out.push(format!(
            "| operator CPU user+sys (s) | {:.1} ({:.1} ms per LlmJob) | — | | | |",
            op.cpu,
            op.cpu * 1000.0 / n
        ));
    }
    let b_req = b.map(|b| b.api_requests);
    out.push(format!(
        "| API requests per object (all clients) | {:.1} | {} | {} | | |",
        a.api_requests / n,
        b_req.map_or("—".into(), |r| format!("{:.1}", r / n)),
        b_req.map_or("—".into(), |r| format!(
            "{:.2}×",
            a.api_requests / r.max(1.0)
        )),
    ));
    if let Some(r) = b_req {
        out.push(format!(
            "| API requests per LlmJob added by the operator (A − B) | {:.1} | | | | |",
            (a.api_requests - r) / n
        ));
    }
    let cp = |f: &RunFigures| f.control_plane_cpu.values().sum::<f64>();
    out.push(format!(
        "| control-plane CPU (s: apiserver + KCM + etcd) | {:.1} | {} | {} | | |",
        cp(a),
        b.map_or("—".into(), |b| format!("{:.1}", cp(b))),
        b.map_or("—".into(), |b| format!("{:.2}×", cp(a) / cp(b).max(1e-9))),
    ));
    out.push(String::new());

    // Where the requests went.
    out.push(
        "API requests by resource and verb (apiserver_request_total delta, all clients):".into(),
    );
    out.push(String::new());
    out.push("| resource | verb | A | B | A − B | (A − B) / N |".into());
    out.push("|---|---|---|---|---|---|".into());
    let empty = BTreeMap::new();
    let b_by = b.map_or(&empty, |b| &b.api_by_resource);
    let mut keys: Vec<&String> = a.api_by_resource.keys().chain(b_by.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.sort_by(|x, y| {
        let v = |k: &String| {
            a.api_by_resource
                .get(k)
                .copied()
                .unwrap_or(0.0)
                .max(b_by.get(k).copied().unwrap_or(0.0))
        };
        v(y).total_cmp(&v(x))
    });
    // Rows of at least 1% of N requests (10 at least); the rest summed.
    let floor = (n / 100.0).max(10.0);
    let (mut rest_a, mut rest_b, mut rest_rows) = (0.0, 0.0, 0);
    for k in keys {
        let va = a.api_by_resource.get(k).copied().unwrap_or(0.0);
        let vb = b_by.get(k).copied().unwrap_or(0.0);
        if va.max(vb) >= floor {
            let (resource, verb) = k.rsplit_once(' ').unwrap_or((k.as_str(), ""));
            out.push(format!(
                "| {resource} | {verb} | {va:.0} | {vb:.0} | {:+.0} | {:.2} |",
                va - vb,
                (va - vb) / n
            ));
        } else {
            rest_a += va;
            rest_b += vb;
            rest_rows += 1;
        }
    }
    if rest_rows > 0 {
        out.push(format!(
            "| ({rest_rows} smaller rows) | | {rest_a:.0} | {rest_b:.0} | {:+.0} | {:.2} |",
            rest_a - rest_b,
            (rest_a - rest_b) / n
        ));
    }
    out.push(String::new());
    let cpu_line = |label: &str, f: &RunFigures| {
        let parts: Vec<String> = f
            .control_plane_cpu
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} s"))
            .collect();
        format!("{label}: {}", parts.join(", "))
    };
    out.push(format!("Control-plane CPU, {}.", cpu_line("run A", a)));
    if let Some(b) = b {
        out.push(format!("Control-plane CPU, {}.", cpu_line("run B", b)));
    }
    out.push(format!(
        "Load average (1/5/15 min): start {load_start}, end {load_end}; {} CPUs. Runs: A then B, each on a fresh control plane.",
        std::thread::available_parallelism().map_or(0, usize::from)
    ));
    println!("{}", out.join("\n"));
}
