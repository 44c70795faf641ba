//! The fault suite between the operator and the API server (issue 19; docs/reliability.md): the
//! real operator binary reaches the real kube-apiserver through `testenv::faultproxy`, which
//! fails chosen requests (429 with `Retry-After`, 500, dropped connections, cut watches) or holds
//! them while the test SIGKILLs the operator. The runs execute on the real node with the runner
//! image. Each test states the guarantee it checks; the figures it prints (`FIGURES ...`) go to
//! docs/reliability.md.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};
use llmjob_crds::v1alpha1::Phase;
use llmjob_operator::controller::{ERROR_RETRY_MIN, PERSISTENT_FAILURES};
use openai_replay::ReplayConfig;
use testenv::env::TestEnv;
use testenv::faultproxy::{Fault, FaultProxy, Match, Release, RequestInfo, Rule};

/// A fault proxy in front of the shared environment's API server, and the kubeconfig that
/// points at it (in the environment's directory, named for the namespace).
async fn proxy(env: &TestEnv, ns: &str) -> (FaultProxy, std::path::PathBuf) {
    let cluster = env.cluster().expect("a control plane");
    let proxy = FaultProxy::start(env.api_server_url(), cluster.pki())
        .await
        .unwrap_or_else(|e| panic!("starting the fault proxy: {e}"));
    let kubeconfig = env.dir().join(format!("kubeconfig-faultproxy-{ns}"));
    proxy
        .write_kubeconfig(&kubeconfig)
        .unwrap_or_else(|e| panic!("{e}"));
    (proxy, kubeconfig)
}

/// The requests whose path ends with `/<name>` or `/<name>/status`, of `verb` on `resource`.
fn requests_for<'a>(
    requests: &'a [RequestInfo],
    verb: &str,
    resource: &str,
    name: &str,
) -> Vec<&'a RequestInfo> {
    let object = format!("/{name}");
    let status = format!("/{name}/status");
    requests
        .iter()
        .filter(|r| r.verb == verb && r.resource == resource)
        .filter(|r| r.path.ends_with(&object) || r.path.ends_with(&status))
        .collect()
}

/// `(verb, resource) -> count` of `requests`, for the figures.
fn tally(requests: &[RequestInfo]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts
            .entry(format!("{} {}", r.verb, r.resource))
            .or_default() += 1;
    }
    counts
}

/// Guarantee: when the API server fails the operator's calls (Job creates whose connection
/// drops, then 500 on every Job create, then a
/// create whose answer is lost, 429 with `Retry-After` on status writes, watches of Jobs cut
/// mid-stream), reconciles back off (each retry of a failing create waits at least the doubling
/// backoff's lower bound), `Retry-After` is honoured (no status write of an LlmJob sooner than
/// the 429 asked), the persistent error is shown on each LlmJob (a Warning event
/// `JobCreateFailed` at the third failure in a row), and once the faults stop every LlmJob
/// Succeeds with exactly one Job and one run.
#[tokio::test(flavor = "multi_thread")]
async fn api_errors_back_off_honour_retry_after_are_reported_and_the_runs_complete() {
    const NAMES: [&str; 3] = ["fault-a", "fault-b", "fault-c"];
    const RETRY_AFTER: u32 = 2;
    let env = env().await;
    let ns = namespace_with_secret(env, "apifaults").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let (proxy, kubeconfig) = proxy(env, &ns).await;
    // The operator's first watches of Jobs break after a second (a watch lasts minutes: the
    // rule is in place before they start).
    let watch_cut = proxy.add(
        Rule::new(
            Match::verb("watch", "jobs"),
            Fault::CutAfter(Duration::from_secs(1)),
        )
        .times(3),
    );
    let _op = Operator::start_with_kubeconfig(env, &ns, &kubeconfig, &[]).await;

    // Job creates (a server-side apply: PATCH of the Job) fail: the first three lose their
    // connection before the API server sees them, every later one is answered 500.
    let create_dropped = proxy
        .add(Rule::new(Match::verb("patch", "jobs"), Fault::DropRequest).times(NAMES.len() as u64));
    let create_fails = proxy.add(Rule::new(
        Match::verb("patch", "jobs"),
        Fault::internal_error(),
    ));
    let started = Instant::now();
    for name in NAMES {
        create_llmjob(env, &ns, llmjob_json(name, &replay.base_url())).await;
    }
    // The persistent error is shown on every LlmJob.
    for name in NAMES {
        let note = wait_for_event(env, &ns, name, "JobCreateFailed").await;
        assert!(
            note.contains(&format!("creating Job {ns}/{name}")),
            "{note}"
        );
        assert!(
            note.contains(&format!("{PERSISTENT_FAILURES} failed reconciles in a row")),
            "{note}"
        );
    }
    assert!(jobs(env, &ns).await.is_empty(), "no Job while creates fail");
    let during = proxy.requests();
    proxy.remove(create_dropped);
    proxy.remove(create_fails);
    let faults_stopped = Instant::now();

    // The create backs off: each retry waits at least the lower bound of its backoff (half of
    // 2 s doubling), from the failed request's arrival to the next one's.
    for name in NAMES {
        let creates = requests_for(&during, "patch", "jobs", name);
        assert!(
            creates.len() >= PERSISTENT_FAILURES as usize,
            "{name}: {creates:?}"
        );
        for (k, pair) in creates.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let floor = ERROR_RETRY_MIN * (1u32 << k) / 2;
            assert!(
                gap >= floor,
                "{name}: create retry {} came {gap:?} after the failure, before its backoff {floor:?}",
                k + 1
            );
        }
    }

    // Now: one create's answer is lost (the Job is created, the operator does not learn it),
    // and status writes are throttled with Retry-After.
    let lost = proxy.add(Rule::new(Match::verb("patch", "jobs"), Fault::DropResponse).times(1));
    let throttled = proxy.add(
        Rule::new(
            Match::verb("patch", "llmjobs/status"),
            Fault::too_many_requests(RETRY_AFTER),
        )
        .times(6),
    );
    let mut all_jobs_at = None;
    for name in NAMES {
        wait_for_phase(env, &ns, name, Phase::Succeeded).await;
        if all_jobs_at.is_none() && jobs(env, &ns).await.len() == NAMES.len() {
            all_jobs_at = Some(faults_stopped.elapsed());
        }
    }
    let recovered = faults_stopped.elapsed();
    let requests = proxy.requests();
    proxy.remove(lost);
    proxy.remove(throttled);
    proxy.remove(watch_cut);

    // Retry-After honoured: after a 429, the next status write of that LlmJob comes no sooner.
    let retry_after = Duration::from_secs(RETRY_AFTER.into());
    let mut throttled_writes = 0;
    for name in NAMES {
        let writes = requests_for(&requests, "patch", "llmjobs/status", name);
        for pair in writes.windows(2) {
            if pair[0].fault.as_deref() == Some("429") {
                throttled_writes += 1;
                let gap = pair[1].at - pair[0].at;
                assert!(
                    gap >= retry_after,
                    "{name}: status written again {gap:?} after a 429 asking for {retry_after:?}"
                );
            }
        }
    }
    assert!(
        throttled_writes > 0,
        "a status write was throttled and retried"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.fault.as_deref() == Some("drop-response")),
        "a create's answer was lost"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.fault.as_deref() == Some("cut"))
            .count()
            > 0,
        "a watch of Jobs was cut"
    );

    // Exactly one Job and one run each.
    let jobs = jobs(env, &ns).await;
    let mut job_names: Vec<String> = jobs.iter().map(ResourceExt::name_any).collect();
    job_names.sort();
    assert_eq!(job_names, NAMES, "one Job per LlmJob");
    assert_eq!(replay.requests().len(), NAMES.len(), "one run per LlmJob");

    let create_failures = during
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "jobs")
        .count();
    let dropped = during
        .iter()
        .filter(|r| r.fault.as_deref() == Some("drop-request"))
        .count();
    assert_eq!(dropped, NAMES.len(), "creates whose connection was dropped");
    eprintln!(
        "FIGURES api-errors: {create_failures} failed Job creates ({dropped} dropped, the rest \
         500) for {n} LlmJobs until each had failed {PERSISTENT_FAILURES} times ({fault:.1} s); \
         {throttled_writes} status writes retried after a 429; all Jobs {jobs:.1} s and all Succeeded {recovered:.1} s \
         after the 500s stopped; requests under the 500s: {during:?}; all requests: {all:?}",
        n = NAMES.len(),
        fault = (faults_stopped - started).as_secs_f64(),
        jobs = all_jobs_at.unwrap_or(recovered).as_secs_f64(),
        recovered = recovered.as_secs_f64(),
        during = tally(&during),
        all = tally(&requests),
    );
}

/// The LlmJob `name` has Succeeded with one Job of its name recorded in the status; the replay
/// server answered one call: one run.
async fn assert_ran_once(env: &TestEnv, ns: &str, name: &str, replay: &Replay) {
    let done = wait_for_phase(env, ns, name, Phase::Succeeded).await;
    let status = done.status.expect("a status");
    assert_eq!(status.job_name.as_deref(), Some(name), "{status:?}");
    let tokens = status
        .result
        .as_ref()
        .and_then(|r| r.usage.as_ref())
        .and_then(|u| u.total_tokens);
    assert!(
        tokens.unwrap_or_default() > 0,
        "the usage is recorded: {status:?}"
    );
    let jobs = jobs(env, ns).await;
    assert_eq!(
        jobs.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
        [name],
        "exactly one Job"
    );
    assert_eq!(replay.requests().len(), 1, "one run, one API call");
    let created: Vec<_> = events_of(env, ns, name)
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "JobCreated")
        .collect();
    assert_eq!(created.len(), 1, "one JobCreated event: {created:?}");
}

/// Guarantee: an operator SIGKILLed between the Job create and the status write that records
/// it (the status write held in the proxy, never delivered) creates no second Job after its
/// restart: one Job, one run, and the status of that run.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_between_job_create_and_status_write_runs_once() {
    let env = env().await;
    let ns = namespace_with_secret(env, "killcreate").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let (proxy, kubeconfig) = proxy(env, &ns).await;
    let op = Operator::start_with_kubeconfig(env, &ns, &kubeconfig, &[]).await;
    proxy.add(Rule::new(
        Match::verb("patch", "llmjobs/status"),
        Fault::Hold,
    ));
    create_llmjob(env, &ns, llmjob_json("held", &replay.base_url())).await;
    let job_api: Api<Job> = Api::namespaced(env.client(), &ns);
    wait_until("the Job created and the status write held", || async {
        let job = job_api.get_opt("held").await.ok().flatten()?;
        (!proxy.held().is_empty()).then_some(job)
    })
    .await;
    op.kill().await;
    assert_eq!(
        proxy.release_held(Release::Drop),
        1,
        "one status write held"
    );
    proxy.clear();
    let held = Api::<llmjob_crds::v1alpha1::LlmJob>::namespaced(env.client(), &ns)
        .get("held")
        .await
        .expect("the LlmJob");
    assert_eq!(
        held.status.as_ref().and_then(|s| s.job_name.as_deref()),
        None,
        "the status does not name the Job yet"
    );

    let restart = Instant::now();
    let _restarted = Operator::start_with_kubeconfig(env, &ns, &kubeconfig, &[]).await;
    assert_ran_once(env, &ns, "held", &replay).await;
    eprintln!(
        "FIGURES sigkill-held: Succeeded {:.1} s after the restart (the operator's start included)",
        restart.elapsed().as_secs_f64()
    );
}

/// Guarantee: an operator SIGKILLed during a status write (the API server applied it, the
/// answer was lost) creates no second Job after its restart: one Job, one run, the status of
/// that run.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_status_write_runs_once() {
    let env = env().await;
    let ns = namespace_with_secret(env, "killstatus").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let (proxy, kubeconfig) = proxy(env, &ns).await;
    let op = Operator::start_with_kubeconfig(env, &ns, &kubeconfig, &[]).await;
    proxy.add(Rule::new(Match::verb("patch", "llmjobs/status"), Fault::DropResponse).times(1));
    create_llmjob(env, &ns, llmjob_json("lost", &replay.base_url())).await;
    wait_until("the first status write, its answer lost", || async {
        proxy
            .requests()
            .iter()
            .any(|r| r.fault.as_deref() == Some("drop-response"))
            .then_some(())
    })
    .await;
    op.kill().await;
    proxy.clear();
    let written = Api::<llmjob_crds::v1alpha1::LlmJob>::namespaced(env.client(), &ns)
        .get("lost")
        .await
        .expect("the LlmJob");
    assert_eq!(
        written.status.as_ref().and_then(|s| s.job_name.as_deref()),
        Some("lost"),
        "the API server applied the write whose answer was lost"
    );

    let restart = Instant::now();
    let _restarted = Operator::start_with_kubeconfig(env, &ns, &kubeconfig, &[]).await;
    assert_ran_once(env, &ns, "lost", &replay).await;
    eprintln!(
        "FIGURES sigkill-lost: Succeeded {:.1} s after the restart (the operator's start included)",
        restart.elapsed().as_secs_f64()
    );
}

/// Guarantee: `--max-concurrent-reconciles` bounds the reconciles in flight. With a bound of 2
/// and every Job create held at the API server, two creates wait there and the other LlmJobs
/// wait for a free slot: no third create arrives and the operator's `reconciles_in_flight`
/// gauge says 2. Once the API server answers, every LlmJob Succeeds with one Job and one run.
#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_reconciles_bounds_the_reconciles_in_flight() {
    const NAMES: [&str; 5] = ["bound-a", "bound-b", "bound-c", "bound-d", "bound-e"];
    const BOUND: usize = 2;
    let env = env().await;
    let ns = namespace_with_secret(env, "bounded").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let (proxy, kubeconfig) = proxy(env, &ns).await;
    let op = Operator::start_with_kubeconfig(
        env,
        &ns,
        &kubeconfig,
        &[&format!("--max-concurrent-reconciles={BOUND}")],
    )
    .await;
    let hold = proxy.add(Rule::new(Match::verb("patch", "jobs"), Fault::Hold));
    for name in NAMES {
        create_llmjob(env, &ns, llmjob_json(name, &replay.base_url())).await;
    }
    wait_until("the first Job creates held", || async {
        (proxy.held().len() >= BOUND).then_some(())
    })
    .await;
    // Unbounded, all five reconciles reach their create within a second of the LlmJobs'
    // creation; give the others time to show up if the bound did not hold.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held: Vec<_> = proxy.held().iter().map(|r| r.path.clone()).collect();
    assert_eq!(held.len(), BOUND, "creates in flight: {held:?}");
    assert_eq!(
        op.metric("llmjob_operator_reconciles_in_flight").await,
        Some(BOUND as f64),
        "the gauge of reconciles in flight"
    );

    proxy.remove(hold);
    assert_eq!(proxy.release_held(Release::Forward), BOUND);
    for name in NAMES {
        wait_for_phase(env, &ns, name, Phase::Succeeded).await;
    }
    let mut created: Vec<_> = jobs(env, &ns).await.iter().map(name_of).collect();
    created.sort();
    assert_eq!(created, NAMES, "one Job per LlmJob");
    assert_eq!(replay.requests().len(), NAMES.len(), "one call per LlmJob");
}
