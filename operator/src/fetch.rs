//! Fetch step: reads the LlmJob, its Job and the Job's pods (and, for the tenant policy, its
//! namespace's labels). Read-only.
//!
//! A reconcile works on the watch caches: the LlmJob as the controller's store holds it, its Job
//! and the Job's pods from the scope's pruned caches. The API server is asked only where a cache
//! that is behind would lead to a wrong decision: the decision "create the Job" reads the LlmJob
//! and the Job fresh (a finished LlmJob never runs again), a status write found stale is redone on
//! a fresh LlmJob (see the controller), and a finished Job whose finished pods are not all in the
//! cache yet has its pods listed, so a termination message just written is never missed.
//!
//! One read is not about the operator's objects: the kubelet's `FailedMount` Events about a pod
//! that stays in `ContainerCreating` ([`failed_mounts`]), the only place the kubelet says that a
//! volume's Secret is missing. It is made only for such a pod (see the controller).

use k8s_openapi::api::batch::v1::Job;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use llmjob_crds::v1alpha1::LlmJob;

use crate::cache::{CachedJob, CachedPod};
use crate::contract::controlled_by;

/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The LlmJob as stored now; `None` when it was deleted.
pub async fn llmjob(api: &Api<LlmJob>, name: &str) -> Result<Option<LlmJob>, kube::Error> {
    api.get_opt(name).await
}

/// The labels of namespace `name` (empty when it has none, or is gone). Read only when the
/// tenant policy refuses an LlmJob without them: a namespace label may allow it.
pub async fn namespace_labels(
    api: &Api<Namespace>,
    name: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|ns| ns.metadata.labels)
        .unwrap_or_default())
}

/// The Job named `name`, if it exists.
pub async fn job(api: &Api<Job>, name: &str) -> Result<Option<Job>, kube::Error> {
    api.get_opt(name).await
}

/// The pods of `job`: labelled with its name and controlled by it (its uid).
pub async fn pods(api: &Api<Pod>, job: &Job) -> Result<Vec<Pod>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={}", job.name_any()));
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| controlled_by(p, job))
        .collect())
}

/// The messages of the kubelet's `FailedMount` Events about pod `pod` (core/v1 Events, which the
/// kubelet writes; field selectors `involvedObject.*` and `reason` are served by the API server
/// for them), the latest first.
pub async fn failed_mounts(api: &Api<Event>, pod: &str) -> Result<Vec<String>, kube::Error> {
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={pod},reason=FailedMount"
    ));
    let mut events = api.list(&lp).await?.items;
    // An aggregated Event's lastTimestamp moves on each repeat; an events.k8s.io writer sets
    // eventTime (and series) instead.
    events.sort_by_key(|e| {
        std::cmp::Reverse(
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        )
    });
    Ok(events.into_iter().filter_map(|e| e.message).collect())
}

/// The pods of `job` in a watch cache of the operator's pods. A scan of the cache, so it
/// allocates nothing per pod it passes over (it runs on every reconcile).
pub fn cached_pods(store: &Store<CachedPod>, job: &Job) -> Vec<Pod> {
    store
        .state()
        .iter()
        .filter(|p| p.meta().namespace == job.meta().namespace && controlled_by(p.as_ref(), job))
        .map(|p| p.to_pod())
        .collect()
}

/// The Job `name` of `namespace` in a watch cache of the operator's Jobs.
pub fn cached_job(store: &Store<CachedJob>, namespace: &str, name: &str) -> Option<Job> {
    store
        .get(&ObjectRef::new(name).within(namespace))
        .map(|j| j.to_job())
}

/// Whether `pods` hold every pod the finished `job` counts as succeeded or failed, each with its
/// final state (so the result in the termination message is there).
pub fn has_finished_pods(job: &Job, pods: &[Pod]) -> bool {
    let status = job.status.as_ref();
    // Pods the Job controller has seen finish but not counted yet (it adds `SuccessCriteriaMet` or
    // `FailureTarget` while they are still listed here) count too.
    let uncounted = status
        .and_then(|s| s.uncounted_terminated_pods.as_ref())
        .map(|u| u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len))
        .unwrap_or(0);
    let counted = usize::try_from(
        status.and_then(|s| s.succeeded).unwrap_or(0) + status.and_then(|s| s.failed).unwrap_or(0),
    )
    .unwrap_or(0)
        + uncounted;
    let finished = pods
        .iter()
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .count();
    counted > 0 && finished >= counted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{cached, job, pod};

    const OWNER: &str = "ownerReferences: [{apiVersion: batch/v1, kind: Job, name: j, uid: job-1, controller: true}]";

    fn job_with(status: &str) -> Job {
        job(&format!(
            "metadata: {{name: j, namespace: n, uid: job-1}}\nstatus: {status}"
        ))
    }

    fn pod_in(name: &str, phase: &str) -> Pod {
        pod(&format!(
            "metadata: {{name: {name}, namespace: n, {OWNER}}}\nstatus: {{phase: {phase}}}"
        ))
    }

    #[test]
    fn finished_pods_must_cover_what_the_job_counts() {
        let done = job_with("{succeeded: 1}");
        assert!(has_finished_pods(&done, &[pod_in("a", "Succeeded")]));
        // The cache has not seen the pod finish yet.
        assert!(!has_finished_pods(&done, &[pod_in("a", "Running")]));
        assert!(!has_finished_pods(&done, &[]));
        // A retry: one failed and one succeeded pod, both needed.
        let retried = job_with("{succeeded: 1, failed: 1}");
        assert!(!has_finished_pods(&retried, &[pod_in("b", "Succeeded")]));
        assert!(has_finished_pods(
            &retried,
            &[pod_in("a", "Failed"), pod_in("b", "Succeeded")]
        ));
        // Success criteria met, the pod not counted yet (the Job controller's first step).
        let uncounted = job_with("{uncountedTerminatedPods: {succeeded: [pod-uid]}}");
        assert!(has_finished_pods(&uncounted, &[pod_in("a", "Succeeded")]));
        assert!(!has_finished_pods(&uncounted, &[]));
        // A Job that finished without a pod (a deadline before any ran) is listed fresh.
        assert!(!has_finished_pods(&job_with("{}"), &[]));
    }

    #[test]
    fn cached_pods_are_the_jobs_own() {
        let (reader, mut writer) = kube::runtime::reflector::store::<CachedPod>();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(cached(&pod_in(
            "mine", "Running",
        ))));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(cached(&pod(
            "metadata: {name: other, namespace: n}",
        ))));
        let pods = cached_pods(&reader, &job_with("{}"));
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].name_any(), "mine");
    }
}
