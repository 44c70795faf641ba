//! Faults and their guarantees (docs/reliability.md), end to end: the real operator binary
//! against a real kube-apiserver + kube-controller-manager and a real node (kubelet, containerd,
//! runc) running the runner image, each test in its own namespace. Each test names the guarantee
//! it checks; docs/reliability.md lists them with their figures.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use llmjob_crds::v1alpha1::Phase;
use llmjob_operator::contract::NAME_LABEL;
use openai_replay::ReplayConfig;

/// The Job's `Failed` condition reason, once the Job controller has failed it.
async fn job_failure_reason(env: &testenv::env::TestEnv, ns: &str, name: &str) -> String {
    let api: Api<Job> = Api::namespaced(env.client(), ns);
    wait_until(&format!("Job {ns}/{name} to fail"), || async {
        let job = api.get_opt(name).await.ok().flatten()?;
        job.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .map(|c| c.reason.unwrap_or_default())
    })
    .await
}

/// Guarantee: a runner exit code that a retry cannot change (2, a configuration error) fails the
/// Job at once through its `podFailurePolicy`, even with pod retries allowed: one pod, no
/// request to the API, and the LlmJob Failed naming the exit code.
#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_exit_code_fails_the_job_at_once_without_another_pod() {
    let env = env().await;
    let ns = namespace(env, "permanent").await;
    // A key no HTTP header can carry: the runner exits 2 before any request.
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "openai"},
        "stringData": {"api-key": "sk-line\nbreak"}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the Secret");
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let _op = Operator::start(env, &ns, &[]).await;

    let mut manifest = llmjob_json("bad-key", &replay.base_url());
    manifest["spec"]["run"]["backoffLimit"] = serde_json::json!(3);
    create_llmjob(env, &ns, manifest).await;
    let failed = wait_for_phase(env, &ns, "bad-key", Phase::Failed).await;
    let (_, _, message) = condition(&failed, "Failed").expect("Failed condition");
    assert!(message.contains("code 2"), "{message}");

    assert_eq!(
        job_failure_reason(env, &ns, "bad-key").await,
        "PodFailurePolicy",
        "the Job failed on its policy, not after its backoff limit"
    );
    let job = Api::<Job>::namespaced(env.client(), &ns)
        .get("bad-key")
        .await
        .expect("the Job");
    let spec = job.spec.expect("Job spec");
    assert_eq!(spec.backoff_limit, Some(3));
    let rules = spec.pod_failure_policy.expect("a podFailurePolicy").rules;
    assert_eq!(
        rules.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["Ignore", "FailJob"]
    );
    assert_eq!(
        spec.template
            .spec
            .and_then(|p| p.termination_grace_period_seconds),
        Some(llmjob_crds::env::exit::TERMINATION_GRACE_SECS)
    );
    let pods = Api::<Pod>::namespaced(env.client(), &ns)
        .list(&ListParams::default().labels(&format!("{NAME_LABEL}=bad-key")))
        .await
        .expect("listing pods");
    assert_eq!(
        pods.items.len(),
        1,
        "no second pod: {:?}",
        pods.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    assert!(replay.requests().is_empty(), "nothing was sent to the API");
}

/// Guarantee: a Job create the API server rejects (here a ResourceQuota allowing no Jobs in the
/// namespace) is visible on the LlmJob: `Stalled` with reason `JobCreateFailed` and the API
/// server's message, one Warning Event with it; the create is retried with backoff and succeeds
/// once the quota is lifted, which clears the condition.
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_job_create_is_reported_and_retried_until_accepted() {
    let env = env().await;
    let ns = namespace_with_secret(env, "quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client(), &ns);
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "no-jobs"},
        "spec": {"hard": {"count/jobs.batch": "0"}}
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("creating the ResourceQuota");
    // The quota controller computes its status; admission enforces it from then on.
    wait_until("the quota controller to compute the quota", || async {
        let q = quotas.get("no-jobs").await.ok()?;
        q.status?
            .hard?
            .contains_key("count/jobs.batch")
            .then_some(())
    })
    .await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let _op = Operator::start(env, &ns, &[]).await;

    create_llmjob(env, &ns, llmjob_json("over-quota", &replay.base_url())).await;
    let blocked = wait_for_stalled(env, &ns, "over-quota", "JobCreateFailed").await;
    let (_, _, message) = condition(&blocked, "Stalled").expect("Stalled");
    assert!(
        message.contains("no-jobs") && message.contains("quota"),
        "the API server's message: {message}"
    );
    assert_eq!(
        blocked.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let note = wait_for_event(env, &ns, "over-quota", "JobCreateFailed").await;
    assert!(note.contains("no-jobs"), "{note}");
    assert!(jobs(env, &ns).await.is_empty());

    quotas
        .delete("no-jobs", &DeleteParams::default())
        .await
        .expect("lifting the quota");
    let done = wait_for_phase(env, &ns, "over-quota", Phase::Succeeded).await;
    assert_eq!(
        condition(&done, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(jobs(env, &ns).await.len(), 1);
    assert_eq!(replay.requests().len(), 1, "one run");
    let warnings = events_of(env, &ns, "over-quota")
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "JobCreateFailed")
        .count();
    assert_eq!(
        warnings, 1,
        "one Event for the rejection, not one per retry"
    );
}

/// Guarantee: `JobConflict` clears once the conflicting Job is deleted, as its message advises,
/// although that Job (without the operator's label) is outside the operator's watches: the
/// blocked LlmJob is looked at again with backoff, and then runs.
#[tokio::test(flavor = "multi_thread")]
async fn job_conflict_clears_when_the_conflicting_job_is_deleted() {
    let env = env().await;
    let ns = namespace_with_secret(env, "conflict").await;
    // Somebody else's Job of the LlmJob's name, suspended so that it runs nothing.
    let theirs: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "taken"},
        "spec": {
            "suspend": true,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "registry.invalid/none:1"}]
            }}
        }
    }))
    .expect("a Job");
    let job_api: Api<Job> = Api::namespaced(env.client(), &ns);
    job_api
        .create(&PostParams::default(), &theirs)
        .await
        .expect("creating the conflicting Job");
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let _op = Operator::start(env, &ns, &[]).await;

    create_llmjob(env, &ns, llmjob_json("taken", &replay.base_url())).await;
    let blocked = wait_for_stalled(env, &ns, "taken", "JobConflict").await;
    let (_, _, message) = condition(&blocked, "Stalled").expect("Stalled");
    assert!(message.contains("delete that Job"), "{message}");

    job_api
        .delete("taken", &DeleteParams::background())
        .await
        .expect("deleting the conflicting Job");
    let done = wait_for_phase(env, &ns, "taken", Phase::Succeeded).await;
    assert_eq!(
        condition(&done, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    let jobs = jobs(env, &ns).await;
    assert_eq!(jobs.len(), 1);
    assert!(
        llmjob_operator::contract::controlled_by(&jobs[0], &done),
        "the Job is now the LlmJob's"
    );
}

/// Guarantee: the outcome is recorded before the Job can be collected. With
/// `ttlSecondsAfterFinished: 0` and the operator down while the run finishes, the Job stays: it
/// gets its TTL only once the outcome is in the status. The restarted operator records
/// `Succeeded` with the result, then sets the TTL, and the TTL controller deletes the Job.
#[tokio::test(flavor = "multi_thread")]
async fn the_outcome_is_recorded_before_the_job_can_expire() {
    let env = env().await;
    let ns = namespace_with_secret(env, "expire").await;
    let replay = Replay::delayed(env, &ns, std::time::Duration::from_secs(3)).await;
    let first = Operator::start(env, &ns, &[]).await;
    let mut manifest = llmjob_json("expires", &replay.base_url());
    manifest["spec"]["run"]["ttlSecondsAfterFinished"] = serde_json::json!(0);
    create_llmjob(env, &ns, manifest).await;
    let job_api: Api<Job> = Api::namespaced(env.client(), &ns);
    let created = wait_until("the Job", || async {
        job_api.get_opt("expires").await.ok().flatten()
    })
    .await;
    assert_eq!(
        created.spec.and_then(|s| s.ttl_seconds_after_finished),
        None,
        "no TTL before the outcome is recorded"
    );
    assert!(first.stop().await.success());

    // The run finishes while no operator runs; the Job completes and is not collected.
    let completed = wait_until("the Job to complete", || async {
        let job = job_api.get_opt("expires").await.ok().flatten()?;
        (job.status.as_ref()?.succeeded == Some(1)).then_some(job)
    })
    .await;
    assert_eq!(
        completed.spec.and_then(|s| s.ttl_seconds_after_finished),
        None
    );

    let _second = Operator::start(env, &ns, &[]).await;
    let done = wait_for_phase(env, &ns, "expires", Phase::Succeeded).await;
    let usage = done
        .status
        .as_ref()
        .and_then(|s| s.result.as_ref())
        .and_then(|r| r.usage.clone())
        .expect("the result, read from the pod before the Job expired");
    assert!(usage.total_tokens.unwrap_or_default() > 0, "{usage:?}");
    wait_until("the TTL controller to delete the Job", || async {
        job_api
            .get_opt("expires")
            .await
            .ok()
            .and_then(|j| j.is_none().then_some(()))
    })
    .await;
    assert_eq!(replay.requests().len(), 1, "one run, one API call");
}

/// Guarantee: the operator never fights Kueue over `spec.suspend`. Kueue suspends the Jobs it
/// manages, also without a queue label (`manageJobsWithoutQueueName`, a default LocalQueue); the
/// operator reads the suspension from the Job and never flips it back. Kueue itself does not run
/// here: the test suspends the Job as Kueue's controller would (a patch of `spec.suspend`).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_suspended_by_another_controller_stays_suspended() {
    let env = env().await;
    let ns = namespace_with_secret(env, "kueue").await;
    // The API answers after a minute: the run is in flight when "Kueue" suspends it.
    let replay = Replay::delayed(env, &ns, std::time::Duration::from_secs(60)).await;
    let _op = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("managed", &replay.base_url())).await;
    wait_for_phase(env, &ns, "managed", Phase::Running).await;

    let job_api: Api<Job> = Api::namespaced(env.client(), &ns);
    job_api
        .patch(
            "managed",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspending the Job as Kueue would");
    // The operator saw the suspended Job (the status says so) and left it suspended.
    let suspended = wait_for_phase(env, &ns, "managed", Phase::Suspended).await;
    let (_, _, message) = condition(&suspended, "Ready").expect("Ready");
    assert!(message.contains("another controller"), "{message}");
    let job = job_api.get("managed").await.expect("the Job");
    assert_eq!(
        job.spec.and_then(|s| s.suspend),
        Some(true),
        "the operator flipped the Job back"
    );
}

/// Guarantee: an evicted runner pod (the `DisruptionTarget` condition) is not the run's failure:
/// the runner, cancelled by SIGTERM, exits 5 with its result, the Job's `podFailurePolicy`
/// ignores the pod, and a new pod runs the call again, although `backoffLimit` is 0. The LlmJob
/// succeeds with one Job; the API was called twice (the disruption's documented price).
#[tokio::test(flavor = "multi_thread")]
async fn an_evicted_pod_is_replaced_without_failing_the_run() {
    let env = env().await;
    let ns = namespace_with_secret(env, "evict").await;
    let replay = Replay::delayed(env, &ns, std::time::Duration::from_secs(5)).await;
    let _op = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("evicted", &replay.base_url())).await;
    // The first pod's call is in flight.
    wait_until("the first pod's request", || async {
        (!replay.requests().is_empty()).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let selector = ListParams::default().labels(&format!("{NAME_LABEL}=evicted"));
    let first = pods.list(&selector).await.expect("pods").items;
    assert_eq!(first.len(), 1);
    pods.evict(&first[0].name_any(), &Default::default())
        .await
        .expect("evicting the runner pod");

    let done = wait_for_phase(env, &ns, "evicted", Phase::Succeeded).await;
    assert!(
        done.status.and_then(|s| s.result).is_some(),
        "the second pod's result"
    );
    let job = Api::<Job>::namespaced(env.client(), &ns)
        .get("evicted")
        .await
        .expect("the Job");
    assert_eq!(job.spec.and_then(|s| s.backoff_limit), Some(0));
    assert_eq!(jobs(env, &ns).await.len(), 1, "one Job");
    assert_eq!(
        replay.requests().len(),
        2,
        "the evicted call, then the new pod's"
    );
}

/// Guarantee: suspending a run whose pod has started stops it (suspension is the user's explicit
/// wish to stop spending, and batches need it mid-run), and says what that costs: the `Suspended`
/// condition and Event say that the call in flight was interrupted, may have been billed, and is
/// made again on resume. Resumed, the same Job runs a new pod (the interrupted one does not count
/// against `backoffLimit: 0`) and the run succeeds: two API calls.
#[tokio::test(flavor = "multi_thread")]
async fn suspending_a_started_run_stops_it_and_says_the_call_may_be_billed_and_made_again() {
    let env = env().await;
    let ns = namespace_with_secret(env, "suspend-mid").await;
    // Long enough that the first call is still in flight when the pod is stopped.
    let replay = Replay::delayed(env, &ns, std::time::Duration::from_secs(20)).await;
    let _op = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("interrupted", &replay.base_url())).await;
    wait_until("the first pod's request", || async {
        (!replay.requests().is_empty()).then_some(())
    })
    .await;
    // The operator has seen the pod start (the status holds its start time).
    wait_for_phase(env, &ns, "interrupted", Phase::Running).await;

    let llmjobs: Api<llmjob_crds::v1alpha1::LlmJob> = Api::namespaced(env.client(), &ns);
    let suspend = |value: bool| {
        let llmjobs = llmjobs.clone();
        async move {
            llmjobs
                .patch(
                    "interrupted",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"suspend": value}})),
                )
                .await
                .expect("patching spec.suspend")
        }
    };
    suspend(true).await;
    let suspended = wait_for_phase(env, &ns, "interrupted", Phase::Suspended).await;
    let (_, reason, message) = condition(&suspended, "Ready").expect("Ready");
    assert_eq!(reason, "Suspended");
    assert!(
        message.contains("may have been billed") && message.contains("again"),
        "{message}"
    );
    let note = wait_for_event(env, &ns, "interrupted", "Suspended").await;
    assert!(note.contains("may have been billed"), "{note}");
    // The Job controller stopped the pod.
    let job_api: Api<Job> = Api::namespaced(env.client(), &ns);
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let selector = ListParams::default().labels(&format!("{NAME_LABEL}=interrupted"));
    wait_until("the interrupted pod to be stopped", || async {
        let job = job_api.get("interrupted").await.ok()?;
        let active = job.status.and_then(|s| s.active).unwrap_or_default();
        let running = pods
            .list(&selector)
            .await
            .ok()?
            .items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        (active == 0 && !running).then_some(())
    })
    .await;
    assert_eq!(replay.requests().len(), 1, "no call while suspended");

    suspend(false).await;
    let done = wait_for_phase(env, &ns, "interrupted", Phase::Succeeded).await;
    assert!(done.status.and_then(|s| s.result).is_some());
    wait_for_event(env, &ns, "interrupted", "Resumed").await;
    let job = job_api.get("interrupted").await.expect("the Job");
    assert_eq!(job.spec.and_then(|s| s.backoff_limit), Some(0));
    assert_eq!(jobs(env, &ns).await.len(), 1, "one Job");
    assert_eq!(
        replay.requests().len(),
        2,
        "the interrupted call, then the resumed run's"
    );
}

/// Guarantee: a `spec.pod` edit made after the Job exists is reported, not silently dropped. The
/// Job's pod template cannot change, so the run keeps the pod it was created with; one Warning
/// Event `SpecChangeIgnored` says so and what to do, and `observedGeneration` follows the edit
/// (the operator saw it).
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_edit_after_the_job_exists_is_reported_and_not_applied() {
    let env = env().await;
    let ns = namespace_with_secret(env, "pod-edit").await;
    let replay = Replay::delayed(env, &ns, std::time::Duration::from_secs(5)).await;
    let _op = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("edited", &replay.base_url())).await;
    wait_for_phase(env, &ns, "edited", Phase::Running).await;

    Api::<llmjob_crds::v1alpha1::LlmJob>::namespaced(env.client(), &ns)
        .patch(
            "edited",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"pod": {"labels": {"team": "late"}}}})),
        )
        .await
        .expect("editing spec.pod");
    let note = wait_for_event(env, &ns, "edited", "SpecChangeIgnored").await;
    assert!(
        note.contains("spec.pod") && note.contains("Create a new LlmJob"),
        "{note}"
    );
    let done = wait_for_phase(env, &ns, "edited", Phase::Succeeded).await;
    assert_eq!(done.status.and_then(|s| s.observed_generation), Some(2));
    let pods = Api::<Pod>::namespaced(env.client(), &ns)
        .list(&ListParams::default().labels(&format!("{NAME_LABEL}=edited")))
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 1);
    assert!(
        !pods.items[0].labels().contains_key("team"),
        "the run's pod kept its settings"
    );
    let reports = events_of(env, &ns, "edited")
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "SpecChangeIgnored")
        .count();
    assert_eq!(reports, 1, "one Event for the edit");
    assert_eq!(replay.requests().len(), 1);
}
