//! The operator end to end, against a real kube-apiserver + kube-controller-manager (Job and
//! garbage-collector controllers), a real node (kubelet, containerd, runc) running the runner
//! pods from the runner image in namespaces that enforce the restricted Pod Security Standard,
//! the openai-replay server behind a Service and a real OpenTelemetry Collector. The operator
//! is a host process per test (`--watch-namespaces` = the test's namespace).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::ReplayConfig;
use testenv::env::TestEnv;
use testenv::images::{self, ImageArchive};

/// The replay server for namespace `ns`, accepting [`API_KEY`], answering after `delay`.
async fn replay_after(env: &TestEnv, ns: &str, delay: Duration) -> Replay {
    Replay::start(
        env,
        ns,
        ReplayConfig::new().with_api_key(API_KEY).with_delay(delay),
    )
    .await
}

async fn replay(env: &TestEnv, ns: &str) -> Replay {
    replay_after(env, ns, Duration::ZERO).await
}

/// Proves the operator has processed what happened in `ns` so far: creates the LlmJob `marker`
/// and waits until the operator has created its Job. The events before it (a Job's deletion)
/// reached the operator's watches earlier, and their reconciles were queued earlier, so once
/// the marker's Job exists the operator has had its chance to act on them; a check that
/// "nothing happened" after this means something.
async fn operator_caught_up(env: &TestEnv, ns: &str, base_url: &str) {
    create_llmjob(env, ns, llmjob_json("marker", base_url)).await;
    wait_until("the operator to create the marker LlmJob's Job", || async {
        jobs(env, ns)
            .await
            .iter()
            .any(|j| j.name_any() == "marker")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_llmjob_succeeds_with_usage_trace_and_kubernetes_attributes() {
    let env = env().await;
    let ns = namespace_with_secret(env, "ok").await;
    let replay = replay(env, &ns).await;
    let op = Operator::start(env, &ns, &[]).await;

    create_llmjob(env, &ns, llmjob_json("haiku", &replay.base_url())).await;
    let done = wait_for_phase(env, &ns, "haiku", Phase::Succeeded).await;
    let status = done.status.clone().expect("status");

    // Status: result, usage, trace id, conditions, observedGeneration.
    assert_eq!(status.observed_generation, done.metadata.generation);
    assert_eq!(status.job_name.as_deref(), Some("haiku"));
    let result = status
        .result
        .as_ref()
        .expect("the runner's result in the status");
    let usage = result.usage.as_ref().expect("token usage");
    assert!(usage.total_tokens.unwrap_or(0) > 0, "{usage:?}");
    assert_eq!(status.attempts, Some(1));
    let trace_id = status.trace_id.clone().expect("trace id");
    assert_eq!(trace_id.len(), 32);
    assert_eq!(result.trace_id.as_deref(), Some(trace_id.as_str()));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    // Success is reported from the runner's pod, not when the Job controller marks the Job
    // Complete: the completion time is the runner's end, and the Job completes too.
    let job = wait_until("the Job to complete", || async {
        let job = Api::<Job>::namespaced(env.client(), &ns)
            .get("haiku")
            .await
            .ok()?;
        job.status
            .as_ref()?
            .completion_time
            .is_some()
            .then_some(job)
    })
    .await;
    let pods = llmjob_operator::fetch::pods(&Api::namespaced(env.client(), &ns), &job)
        .await
        .expect("listing the Job's pods");
    let runner_end = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone());
    assert_eq!(status.completion_time, runner_end, "{pods:?}");
    let job_done = job.status.and_then(|s| s.completion_time);
    assert!(
        status
            .completion_time
            .as_ref()
            .zip(job_done.as_ref())
            .is_some_and(|(t, j)| t.0 <= j.0)
    );
    let (ready, reason, message) = condition(&done, "Ready").expect("Ready condition");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("True", "Succeeded"),
        "{message}"
    );
    assert!(message.contains("tokens"), "{message}");
    assert_eq!(
        condition(&done, "Reconciling").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(&done, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );

    // Events: the lifecycle is visible in `kubectl describe`.
    wait_for_event(env, &ns, "haiku", "JobCreated").await;
    wait_for_event(env, &ns, "haiku", "Succeeded").await;
    // Each lifecycle event once: the operator reconciles from its watch cache, and a status
    // derived from a stale copy must never repeat an event (a repeat would be a second Event or
    // a series on the first).
    let recorded: Vec<_> =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client(), &ns)
            .list(&Default::default())
            .await
            .expect("listing Events")
            .items
            .into_iter()
            // The Job has the LlmJob's name: the job controller's events are about the Job.
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("LlmJob") && r.name.as_deref() == Some("haiku")
                })
            })
            .map(|e| (e.reason.unwrap_or_default(), e.series.map(|s| s.count)))
            .collect();
    for reason in ["JobCreated", "Succeeded"] {
        let found: Vec<_> = recorded.iter().filter(|(r, _)| r == reason).collect();
        assert_eq!(found.len(), 1, "one {reason} Event: {recorded:?}");
        assert_eq!(found[0].1, None, "a {reason} Event repeated: {recorded:?}");
    }
    // Only the start and the end of the work are reported, as the Job controller does.
    let mut reasons: Vec<_> = recorded.iter().map(|(r, _)| r.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["JobCreated", "Succeeded"], "{recorded:?}");

    // The trace: the operator's launch span parents the run's workflow span, and every run span
    // carries the Kubernetes resource attributes the operator injected.
    let collector = env.collector().expect("collector");
    let telemetry = collector
        .wait_for(WAIT, |t| {
            let spans = t.trace(&trace_id);
            (spans.iter().any(|s| s.name == "llmjob.launch")
                && spans.iter().any(|s| s.name.starts_with("chat ")))
            .then(|| t.clone())
        })
        .await
        .expect("the run's trace in the collector");
    let spans = telemetry.trace(&trace_id);
    let launch = spans
        .iter()
        .find(|s| s.name == "llmjob.launch")
        .expect("launch span");
    assert_eq!(launch.resource.str("service.name"), Some("llmjob-operator"));
    assert_eq!(
        launch.attributes.str("k8s.namespace.name"),
        Some(ns.as_str())
    );
    let workflow = spans
        .iter()
        .find(|s| s.name == "llm_job.workflow")
        .expect("workflow span");
    assert_eq!(
        workflow.parent_span_id.as_deref(),
        Some(launch.span_id.as_str())
    );
    let pods: Vec<Pod> = Api::<Pod>::namespaced(env.client(), &ns)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items;
    let pod = pods.first().expect("the run's pod");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(testenv::node::NODE_NAME)
    );
    // The runner ran in containerd, from the image `cargo xtask images` built.
    let runner = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .expect("the runner's container status");
    assert!(
        runner
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{runner:?}"
    );
    let built = ImageArchive::open(&images::RUNNER).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runner.image_id, built.config_digest, "{runner:?}");
    // `kubectl logs` (apiserver -> kubelet -> containerd's log file) shows the runner's lines.
    let logs = env
        .kubectl(&["logs", "-n", &ns, &pod.name_any()])
        .await
        .expect("kubectl logs");
    let logs_text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.status.success() && !logs_text.trim().is_empty(),
        "kubectl logs of the runner pod: {logs:?}"
    );
    assert!(
        !logs_text.contains(API_KEY),
        "the API key is in the runner's log"
    );
    for span in spans
        .iter()
        .filter(|s| s.resource.str("service.name") == Some("llm-job"))
    {
        let r = &span.resource;
        assert_eq!(
            r.str("k8s.namespace.name"),
            Some(ns.as_str()),
            "{}",
            span.name
        );
        assert_eq!(
            r.str("k8s.pod.name"),
            Some(pod.name_any().as_str()),
            "{}",
            span.name
        );
        assert_eq!(r.str("k8s.pod.uid"), pod.uid().as_deref(), "{}", span.name);
        assert_eq!(r.str("k8s.job.name"), Some("haiku"), "{}", span.name);
        assert_eq!(
            r.str("k8s.node.name"),
            Some(testenv::node::NODE_NAME),
            "{}",
            span.name
        );
        assert_eq!(
            r.str("deployment.environment.name"),
            Some("test"),
            "{}",
            span.name
        );
    }

    // The operator's own metrics count the run's tokens.
    let (code, metrics) = op.get("/metrics").await.expect("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("llmjob_operator_reconciles_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "llmjob_operator_tokens_total{{namespace=\"{ns}\",model=\"gpt-4o-mini\",type=\"input\"}}"
        )),
        "{metrics}"
    );

    // The key never leaves the Secret: not in the status, events, Job or operator log.
    let everything = format!(
        "{}\n{:?}\n{}\n{}",
        serde_json::to_string(&done).unwrap_or_default(),
        events_of(env, &ns, "haiku").await,
        serde_json::to_string(&jobs(env, &ns).await).unwrap_or_default(),
        op.log_text()
    );
    assert!(!everything.contains(API_KEY), "the API key leaked");
    assert!(op.stop().await.success(), "a clean shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_or_key_waits_in_the_pod_until_it_is_created() {
    let env = env().await;
    let ns = env.create_namespace("secret").await.expect("namespace");
    let replay = replay(env, &ns).await;
    let op = Operator::start(env, &ns, &[]).await;

    // No Secret: the Job is created, the kubelet cannot start the runner and says why.
    create_llmjob(env, &ns, llmjob_json("waits", &replay.base_url())).await;
    let blocked = wait_for_stalled(env, &ns, "waits", "SecretNotFound").await;
    assert_eq!(
        blocked.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let (_, _, message) = condition(&blocked, "Stalled").expect("Stalled");
    assert!(
        message.contains(&format!("Secret {ns}/openai")),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "kubectl create secret generic openai -n {ns} --from-literal=api-key="
        )),
        "{message}"
    );
    let note = wait_for_event(env, &ns, "waits", "SecretNotFound").await;
    assert!(
        note.contains("kubectl create secret generic openai"),
        "{note}"
    );
    assert_eq!(jobs(env, &ns).await.len(), 1, "the Job waits in its pod");
    assert!(replay.requests().is_empty(), "nothing ran without the key");

    // The Secret appears without the key: the kubelet retries and names the key.
    let secrets: Api<Secret> = Api::namespaced(env.client(), &ns);
    let wrong: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "openai"},
        "stringData": {"some-other-key": "x"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &wrong)
        .await
        .expect("creating the Secret");
    let blocked = wait_for_stalled(env, &ns, "waits", "SecretKeyNotFound").await;
    assert_eq!(
        blocked.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let (_, _, message) = condition(&blocked, "Stalled").expect("Stalled");
    assert!(
        message.contains(&format!("Secret {ns}/openai has no key \"api-key\"")),
        "{message}"
    );
    assert!(
        !message.contains("some-other-key"),
        "never the keys a Secret holds: {message}"
    );
    let note = wait_for_event(env, &ns, "waits", "SecretKeyNotFound").await;
    assert!(!note.contains("some-other-key"), "{note}");

    // The key is added: the pod starts and the run succeeds, without a second Job.
    secrets
        .patch(
            "openai",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"api-key": API_KEY}})),
        )
        .await
        .expect("adding the key");
    let done = wait_for_phase(env, &ns, "waits", Phase::Succeeded).await;
    assert_eq!(
        condition(&done, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(jobs(env, &ns).await.len(), 1, "one Job for the whole wait");
    assert_eq!(replay.requests().len(), 1);
    assert!(
        !op.log_text().contains(API_KEY),
        "the operator never sees the key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_fails_with_an_actionable_reason() {
    let env = env().await;
    let ns = namespace_with_secret(env, "auth").await;
    let replay = Replay::start(
        env,
        &ns,
        ReplayConfig::new().with_api_key("sk-the-right-one"),
    )
    .await;
    let _op = Operator::start(env, &ns, &[]).await;

    create_llmjob(env, &ns, llmjob_json("denied", &replay.base_url())).await;
    let failed = wait_for_phase(env, &ns, "denied", Phase::Failed).await;
    let (status, reason, message) = condition(&failed, "Failed").expect("Failed condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "AuthenticationFailed")
    );
    assert!(
        message.contains(&format!("Secret {ns}/openai")),
        "{message}"
    );
    assert_eq!(replay.requests().len(), 1, "a 401 is never retried");
    let note = wait_for_event(env, &ns, "denied", "Failed").await;
    assert!(!note.contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_llmjob_cascades_to_its_job_and_pod() {
    let env = env().await;
    let ns = namespace_with_secret(env, "cascade").await;
    // The replay server answers slowly, so the pod is still running when the LlmJob goes.
    let replay = replay_after(env, &ns, Duration::from_secs(30)).await;
    let _op = Operator::start(env, &ns, &[]).await;

    create_llmjob(env, &ns, llmjob_json("doomed", &replay.base_url())).await;
    wait_for_phase(env, &ns, "doomed", Phase::Running).await;
    Api::<LlmJob>::namespaced(env.client(), &ns)
        .delete("doomed", &DeleteParams::foreground())
        .await
        .expect("deleting the LlmJob");
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    wait_until("the Job and its pod to be garbage-collected", || async {
        let no_jobs = jobs(env, &ns).await.is_empty();
        let no_pods = pods
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty();
        (no_jobs && no_pods).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_and_resume() {
    let env = env().await;
    let ns = namespace_with_secret(env, "suspend").await;
    let replay = replay(env, &ns).await;
    let _op = Operator::start(env, &ns, &[]).await;

    let mut manifest = llmjob_json("later", &replay.base_url());
    manifest["spec"]["suspend"] = true.into();
    create_llmjob(env, &ns, manifest).await;
    wait_for_phase(env, &ns, "later", Phase::Suspended).await;
    let job = jobs(env, &ns).await.pop().expect("a suspended Job exists");
    assert_eq!(job.spec.as_ref().and_then(|s| s.suspend), Some(true));
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    assert!(
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .is_empty()
    );
    assert!(replay.requests().is_empty());

    Api::<LlmJob>::namespaced(env.client(), &ns)
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("resuming");
    let done = wait_for_phase(env, &ns, "later", Phase::Succeeded).await;
    assert_eq!(done.status.and_then(|s| s.observed_generation), Some(2));
    wait_for_event(env, &ns, "later", "Resumed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_operator_never_creates_a_second_job() {
    let env = env().await;
    let ns = namespace_with_secret(env, "restart").await;
    let replay = replay_after(env, &ns, Duration::from_secs(3)).await;
    let first = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("once", &replay.base_url())).await;
    wait_until("the Job", || async {
        (!jobs(env, &ns).await.is_empty()).then_some(())
    })
    .await;
    assert!(first.stop().await.success());

    let _second = Operator::start(env, &ns, &[]).await;
    let done = wait_for_phase(env, &ns, "once", Phase::Succeeded).await;
    let all: Vec<Job> = jobs(env, &ns).await;
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(name_of).collect::<Vec<_>>()
    );
    assert_eq!(replay.requests().len(), 1, "one run, one API call");
    assert!(done.status.and_then(|s| s.result).is_some());
}

/// `ttlSecondsAfterFinished: 0` lets the real TTL controller delete the Job the moment it finishes;
/// the outcome must be in the status anyway, and the LlmJob must not read as `JobDeleted`.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_deleted_by_its_ttl_keeps_the_outcome() {
    let env = env().await;
    let ns = namespace_with_secret(env, "ttl").await;
    let replay = replay(env, &ns).await;
    let _op = Operator::start(env, &ns, &[]).await;
    let mut manifest = llmjob_json("short-lived", &replay.base_url());
    manifest["spec"]["run"]["ttlSecondsAfterFinished"] = serde_json::json!(0);
    create_llmjob(env, &ns, manifest).await;
    let done = wait_for_phase(env, &ns, "short-lived", Phase::Succeeded).await;
    let usage = done
        .status
        .as_ref()
        .and_then(|s| s.result.as_ref())
        .and_then(|r| r.usage.clone())
        .expect("the usage survives the Job");
    assert!(usage.total_tokens.unwrap_or_default() > 0, "{usage:?}");
    let requests = replay.requests().len();
    wait_until("the TTL controller to delete the Job", || async {
        jobs(env, &ns).await.is_empty().then_some(())
    })
    .await;
    // Still Succeeded once the Job is gone: its deletion never turns into `JobDeleted`.
    operator_caught_up(env, &ns, &replay.base_url()).await;
    let after = Api::<LlmJob>::namespaced(env.client(), &ns)
        .get("short-lived")
        .await
        .expect("get");
    assert_eq!(after.status.and_then(|s| s.phase), Some(Phase::Succeeded));
    assert_eq!(requests, 1, "one run, one API call");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_deleted_mid_run_fails_the_llmjob_and_is_not_recreated() {
    let env = env().await;
    let ns = namespace_with_secret(env, "jobgone").await;
    let replay = replay_after(env, &ns, Duration::from_secs(30)).await;
    let _op = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("orphan", &replay.base_url())).await;
    wait_for_phase(env, &ns, "orphan", Phase::Running).await;
    Api::<Job>::namespaced(env.client(), &ns)
        .delete("orphan", &DeleteParams::background())
        .await
        .expect("deleting the Job");
    let failed = wait_for_phase(env, &ns, "orphan", Phase::Failed).await;
    let (_, reason, message) = condition(&failed, "Failed").expect("Failed");
    assert_eq!(reason, "JobDeleted", "{message}");
    // The deleted Job is gone for good (the garbage collector removed its pods, then it), and the
    // operator has processed that: it did not create a second one.
    wait_until("the deleted Job to disappear", || async {
        jobs(env, &ns)
            .await
            .iter()
            .all(|j| j.name_any() != "orphan")
            .then_some(())
    })
    .await;
    operator_caught_up(env, &ns, &replay.base_url()).await;
    let names: Vec<String> = jobs(env, &ns).await.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, ["marker"], "no second Job for the LlmJob orphan");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_with_leader_election_run_one_job_and_hand_over() {
    let env = env().await;
    let ns = namespace_with_secret(env, "leader").await;
    let replay = replay(env, &ns).await;
    let lease = format!("--leader-election-lease-name=llmjob-{ns}");
    let args = ["--leader-elect=true", lease.as_str()];
    let first = Operator::start(env, &ns, &args).await;
    let second = Operator::start(env, &ns, &args).await;
    async fn leads(op: &Operator) -> bool {
        op.metric("llmjob_operator_leader").await == Some(1.0)
    }
    let leader_addr = wait_until("one replica to lead", || async {
        let a = leads(&first).await;
        let b = leads(&second).await;
        match (a, b) {
            (true, false) => Some(first.http),
            (false, true) => Some(second.http),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if leader_addr == first.http {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        standby.get("/readyz").await.map(|r| r.1).as_deref(),
        Some("standby")
    );

    create_llmjob(env, &ns, llmjob_json("led", &replay.base_url())).await;
    wait_for_phase(env, &ns, "led", Phase::Succeeded).await;
    assert_eq!(jobs(env, &ns).await.len(), 1);

    // A clean shutdown releases the Lease, and the standby takes over.
    assert!(leader.stop().await.success());
    wait_until("the standby to lead", || async {
        leads(&standby).await.then_some(())
    })
    .await;
    create_llmjob(env, &ns, llmjob_json("after", &replay.base_url())).await;
    wait_for_phase(env, &ns, "after", Phase::Succeeded).await;
    assert_eq!(jobs(env, &ns).await.len(), 2);
}

/// Guarantee (of the harness the other tests stand on): an operator that cannot bind its port,
/// because another process holds it, fails its start at once with the operator's own reason;
/// the holder is never taken for the operator (at 108895f another test's operator answered
/// `/readyz` on a port both had been given, and a test waited 120 s for an operator that had
/// exited).
#[tokio::test(flavor = "multi_thread")]
#[should_panic(expected = "Address already in use")]
async fn an_operator_whose_port_is_taken_fails_its_start_at_once() {
    let env = env().await;
    let ns = namespace(env, "taken").await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken = format!("--http-addr={}", holder.local_addr().expect("its address"));
    // The last --http-addr wins over the harness's own port 0.
    Operator::start(env, &ns, &[&taken]).await;
}
