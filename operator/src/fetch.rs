//! Fetch step: reads the LlmJob, its Job and the Job's pods. Read-only.
//!
//! The LlmJob is read from the API server (its status is the base of the next one, and a stale
//! copy would repeat events). The Job and pods come from the controller's watch caches while the
//! run is in progress; the decision "create the Job" and the final read of a finished run's pods
//! go to the API server, so a Job created a moment ago, or a termination message just written,
//! is never missed.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use llmjob_crds::v1alpha1::LlmJob;

/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The LlmJob as stored now; `None` when it was deleted.
pub async fn llmjob(api: &Api<LlmJob>, name: &str) -> Result<Option<LlmJob>, kube::Error> {
    api.get_opt(name).await
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

/// The pods of `job` in a watch cache of the operator's pods.
pub fn cached_pods(store: &Store<Pod>, job: &Job) -> Vec<Pod> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace() == job.namespace() && controlled_by(p, job))
        .map(|p| Pod::clone(p))
        .collect()
}

/// The Job `name` of `namespace` in a watch cache of the operator's Jobs.
pub fn cached_job(store: &Store<Job>, namespace: &str, name: &str) -> Option<Job> {
    store
        .get(&ObjectRef::new(name).within(namespace))
        .map(|j| Job::clone(&j))
}

fn controlled_by(pod: &Pod, job: &Job) -> bool {
    let uid = job.uid();
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}
