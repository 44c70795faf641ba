//! Fetch step: reads the LlmJob, its Job and the Job's pods straight from the API server.
//!
//! Reads go to the API server, not to a cache, so a reconcile never acts on a stale view (the
//! decision "create the Job" must see a Job created a moment ago). Read-only.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
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
    let uid = job.uid();
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .collect())
}
