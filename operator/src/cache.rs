//! What the operator's watch caches keep of its Jobs and their pods.
//!
//! A reconcile reads a Job and its pods from the scope's caches (see [`crate::fetch`]), and the
//! caches hold every Job and pod the operator made, finished ones included: at 10,000 LlmJobs,
//! what one cached object costs decides the operator's memory. A `Job` or a `Pod` of
//! k8s-openapi is about 2.5 KiB before any of its fields is set (the pod template and the pod
//! spec are inline), so the caches do not hold them: the watches read the API server's objects
//! straight into [`CachedJob`] and [`CachedPod`], which declare only what a reconcile reads
//! (serde skips the rest while parsing), and a reconcile turns them back into a `Job` and its
//! `Pod`s with [`CachedJob::to_job`] and [`CachedPod::to_pod`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

use crate::contract::COMPLETION_INDEX_ANNOTATION;

/// The prefix of the annotations the operator puts on its Jobs (`contract::*_ANNOTATION`).
const OPERATOR_ANNOTATIONS: &str = "llmjob.dev/";

/// A Job of the operator as its cache keeps it: the metadata (not the labels), the spec's scalar
/// settings (not the pod template) and the status.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedJob {
    /// The Job's metadata, without managed fields, labels and annotations ([`CachedJob::prune`]).
    pub metadata: ObjectMeta,
    /// The operator's annotations (`llmjob.dev/...`), as pairs: a map of a few entries costs a
    /// B-tree node of about 0.5 KiB.
    #[serde(skip)]
    pub annotations: Vec<(String, String)>,
    /// The settings of the spec a reconcile reads.
    pub spec: Option<CachedJobSpec>,
    /// The Job's status as the Job controller writes it.
    pub status: Option<JobStatus>,
}

/// The settings of a Job's spec a reconcile reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedJobSpec {
    /// `spec.suspend`.
    pub suspend: Option<bool>,
    /// `spec.activeDeadlineSeconds` (named when the Job fails `DeadlineExceeded`).
    pub active_deadline_seconds: Option<i64>,
    /// `spec.ttlSecondsAfterFinished`.
    pub ttl_seconds_after_finished: Option<i32>,
    /// `spec.completions`.
    pub completions: Option<i32>,
    /// `spec.parallelism`.
    pub parallelism: Option<i32>,
    /// `spec.backoffLimit`.
    pub backoff_limit: Option<i32>,
    /// `spec.completionMode`.
    pub completion_mode: Option<String>,
}

impl CachedJob {
    /// Drops the managed fields and the labels (the watch selects the operator's Jobs by label
    /// on the server; a reconcile reads none), and keeps the operator's own annotations as
    /// pairs: the watch's `modify` step.
    pub fn prune(&mut self) {
        self.metadata.managed_fields = None;
        self.metadata.labels = None;
        self.annotations = self
            .metadata
            .annotations
            .take()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(OPERATOR_ANNOTATIONS))
            .collect();
    }

    /// The Job a reconcile works on (its pod template empty).
    pub fn to_job(&self) -> Job {
        Job {
            metadata: ObjectMeta {
                annotations: (!self.annotations.is_empty())
                    .then(|| self.annotations.iter().cloned().collect()),
                ..self.metadata.clone()
            },
            spec: self.spec.as_ref().map(|s| JobSpec {
                suspend: s.suspend,
                active_deadline_seconds: s.active_deadline_seconds,
                ttl_seconds_after_finished: s.ttl_seconds_after_finished,
                completions: s.completions,
                parallelism: s.parallelism,
                backoff_limit: s.backoff_limit,
                completion_mode: s.completion_mode.clone(),
                ..JobSpec::default()
            }),
            status: self.status.clone(),
        }
    }
}

/// A pod of one of the operator's Jobs as its cache keeps it: what ties it to its Job and
/// LlmJob, its phase and the state of each container (the termination message holds the run's
/// result).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedPod {
    /// The pod's metadata: name, uid, owner references, creation and deletion times (no labels,
    /// no annotations: [`CachedPod::prune`]).
    pub metadata: ObjectMeta,
    /// The `batch.kubernetes.io/job-completion-index` annotation of a pod of an Indexed Job.
    #[serde(skip)]
    pub completion_index: Option<String>,
    /// The pod's phase and containers.
    pub status: Option<CachedPodStatus>,
}

/// What a reconcile reads of a pod's status.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    /// `status.phase`.
    pub phase: Option<String>,
    /// The containers' names and states.
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
}

/// A container's name and state.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedContainerStatus {
    /// The container's name.
    pub name: String,
    /// Waiting (with the kubelet's reason), running, or terminated (with the exit code and the
    /// termination message).
    pub state: Option<ContainerState>,
}

impl CachedPod {
    /// Drops the metadata a reconcile never reads (the watch's `modify` step): managed fields,
    /// finalizers, labels (its Job is its controller owner), the annotations but the completion
    /// index, and each terminated container's id.
    pub fn prune(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.generate_name = None;
        meta.finalizers = None;
        meta.labels = None;
        self.completion_index = meta
            .annotations
            .take()
            .and_then(|mut a| a.remove(COMPLETION_INDEX_ANNOTATION));
        for c in self
            .status
            .iter_mut()
            .flat_map(|s| s.container_statuses.iter_mut().flatten())
        {
            if let Some(t) = c.state.as_mut().and_then(|s| s.terminated.as_mut()) {
                t.container_id = None;
            }
        }
    }

    /// The name of the Job that controls the pod.
    pub fn job_name(&self) -> Option<&str> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "Job")
            .map(|o| o.name.as_str())
    }

    /// The pod a reconcile works on.
    pub fn to_pod(&self) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: self
                    .completion_index
                    .as_ref()
                    .map(|i| BTreeMap::from([(COMPLETION_INDEX_ANNOTATION.to_owned(), i.clone())])),
                ..self.metadata.clone()
            },
            spec: None,
            status: self.status.as_ref().map(|s| PodStatus {
                phase: s.phase.clone(),
                container_statuses: s.container_statuses.as_ref().map(|statuses| {
                    statuses
                        .iter()
                        .map(|c| ContainerStatus {
                            name: c.name.clone(),
                            state: c.state.clone(),
                            ..ContainerStatus::default()
                        })
                        .collect()
                }),
                ..PodStatus::default()
            }),
        }
    }
}

/// Implements [`Resource`] for a cached kind as for the API kind it is read from.
macro_rules! resource_as {
    ($cached:ty, $api:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = <$api as Resource>::Scope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$api>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$api>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$api>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$api>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

resource_as!(CachedJob, Job);
resource_as!(CachedPod, Pod);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::controlled_by;
    use crate::fetch::has_finished_pods;
    use crate::test_fixtures::{cached as read, job, pod};
    use kube::ResourceExt;

    /// A runner pod of an Indexed Job as the API server returns it once finished.
    const FULL_POD: &str = r#"
metadata:
  name: run-1-0-x7k2p
  generateName: run-1-0-
  namespace: n
  uid: pod-1
  resourceVersion: "4711"
  creationTimestamp: "2026-01-02T03:00:00Z"
  labels:
    app.kubernetes.io/managed-by: llmjob-operator
    llmjob.dev/name: run-1
    batch.kubernetes.io/job-name: run-1
    batch.kubernetes.io/controller-uid: job-1
    batch.kubernetes.io/job-completion-index: "0"
    controller-uid: job-1
    job-name: run-1
  annotations:
    batch.kubernetes.io/job-completion-index: "0"
    llmjob.dev/pod-hash: abc123
  finalizers: [batch.kubernetes.io/job-tracking]
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: run-1, uid: job-1, controller: true, blockOwnerDeletion: true}]
  managedFields: [{manager: kubelet, operation: Update, apiVersion: v1}]
spec:
  containers: [{name: runner, image: "ghcr.io/llmjob-dev/llmjob-runner:dev", env: [{name: LLMJOB_MODEL, value: gpt-4o-mini}]}]
  restartPolicy: Never
status:
  phase: Succeeded
  hostIP: 10.0.0.1
  podIP: 10.1.0.7
  qosClass: Burstable
  startTime: "2026-01-02T03:00:01Z"
  conditions: [{type: Ready, status: "False"}]
  containerStatuses:
  - name: runner
    image: "ghcr.io/llmjob-dev/llmjob-runner:dev"
    imageID: "sha256:0123"
    containerID: "containerd://4567"
    ready: false
    restartCount: 0
    started: false
    lastState: {}
    state:
      terminated:
        exitCode: 0
        reason: Completed
        containerID: "containerd://4567"
        startedAt: "2026-01-02T03:00:01Z"
        finishedAt: "2026-01-02T03:00:02Z"
        message: '{"status":"succeeded","traceId":"0af7651916cd43dd8448eb211c80319c","usage":{"promptTokens":9,"completionTokens":12,"totalTokens":21},"attempts":1,"shard":{"index":0,"succeeded":2,"failed":0,"output":"s3://b/part-00000.jsonl"}}'
"#;

    /// A Job of the operator as the API server returns it once complete.
    const FULL_JOB: &str = r#"
metadata:
  name: run-1
  namespace: n
  uid: job-1
  labels: {app.kubernetes.io/managed-by: llmjob-operator, llmjob.dev/name: run-1}
  annotations: {example.com/other: x, llmjob.dev/pod-hash: abc123, llmjob.dev/launch-traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
  ownerReferences: [{apiVersion: llmjob.dev/v1alpha1, kind: LlmJob, name: run-1, uid: lj-1, controller: true}]
  managedFields: [{manager: llmjob-operator, operation: Apply, apiVersion: batch/v1}]
spec:
  suspend: false
  activeDeadlineSeconds: 420
  ttlSecondsAfterFinished: 3600
  completions: 1
  parallelism: 1
  backoffLimit: 0
  completionMode: Indexed
  template: {spec: {containers: [{name: runner, image: i}], restartPolicy: Never}}
status:
  succeeded: 1
  completionTime: "2026-01-02T03:00:05Z"
  conditions: [{type: SuccessCriteriaMet, status: "True"}, {type: Complete, status: "True"}]
"#;

    #[test]
    fn a_cached_pod_tells_the_reconcile_everything_the_full_one_does() {
        let full = pod(FULL_POD);
        let mut cached: CachedPod = read(&full);
        cached.prune();
        let pruned = cached.to_pod();
        let job = job(FULL_JOB);

        assert_eq!(
            crate::status::runner_state(std::slice::from_ref(&pruned)),
            crate::status::runner_state(std::slice::from_ref(&full))
        );
        assert!(
            crate::status::runner_state(std::slice::from_ref(&pruned))
                .result
                .is_some()
        );
        assert_eq!(
            crate::triggers::pod_progress(&cached),
            crate::triggers::pod_progress(&read(&full))
        );
        assert!(controlled_by(&pruned, &job));
        assert_eq!(cached.job_name(), Some("run-1"));
        assert!(has_finished_pods(&job, std::slice::from_ref(&pruned)));
        assert_eq!(pruned.creation_timestamp(), full.creation_timestamp());
        assert_eq!(
            pruned
                .annotations()
                .get(COMPLETION_INDEX_ANNOTATION)
                .map(String::as_str),
            Some("0")
        );
        // What goes.
        assert!(pruned.spec.is_none() && pruned.metadata.managed_fields.is_none());
        assert!(pruned.labels().is_empty());
        assert_eq!(pruned.annotations().len(), 1);
        let status = pruned.status.as_ref().expect("a status");
        assert!(status.pod_ip.is_none() && status.conditions.is_none());
        let runner = &status.container_statuses.as_ref().expect("statuses")[0];
        assert!(runner.image.is_empty() && runner.container_id.is_none());
    }

    #[test]
    fn a_cached_job_tells_the_reconcile_everything_the_full_one_does() {
        let full = job(FULL_JOB);
        let mut cached: CachedJob = read(&full);
        cached.prune();
        let pruned = cached.to_job();
        let mut expected = full.clone();
        expected.metadata.managed_fields = None;
        expected.metadata.labels = None;
        if let Some(a) = expected.metadata.annotations.as_mut() {
            a.remove("example.com/other");
        }
        if let Some(spec) = expected.spec.as_mut() {
            spec.template = Default::default();
        }
        assert_eq!(pruned, expected);
        assert_eq!(
            crate::triggers::job_progress(&cached),
            crate::triggers::job_progress(&read(&full))
        );
    }

    #[test]
    fn the_cached_kinds_are_what_they_are_read_from() {
        assert_eq!(
            CachedJob::url_path(&(), Some("n")),
            Job::url_path(&(), Some("n"))
        );
        assert_eq!(
            CachedPod::url_path(&(), Some("n")),
            Pod::url_path(&(), Some("n"))
        );
        assert_eq!(CachedPod::api_version(&()), "v1");
        assert_eq!(CachedJob::kind(&()), "Job");
    }

    #[test]
    fn a_cached_object_is_a_fraction_of_the_full_one() {
        use std::mem::size_of;
        assert!(size_of::<CachedJob>() * 3 < size_of::<Job>());
        assert!(size_of::<CachedPod>() * 4 < size_of::<Pod>());
        assert!(size_of::<CachedContainerStatus>() * 2 < size_of::<ContainerStatus>());
    }
}
