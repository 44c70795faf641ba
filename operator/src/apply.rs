//! Apply step: creates the Job by server-side apply, flips its `spec.suspend`, and sets its
//! `spec.ttlSecondsAfterFinished` once the outcome is recorded.
//!
//! The Job is applied once, when it does not exist yet: its pod template is immutable and holds
//! the launch span's `TRACEPARENT`, so later reconciles never re-apply it (a new operator
//! version or flag value never tries to change a running Job). Afterwards only `spec.suspend`
//! is patched, and only for LlmJobs that no Kueue queue manages, so Kueue alone owns the field of
//! queued Jobs after creation.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::FIELD_MANAGER;
use crate::contract::SUSPEND_ANNOTATION;

/// Creates `job` by server-side apply with the operator's field manager.
pub async fn create_job(api: &Api<Job>, job: &Job) -> Result<Job, kube::Error> {
    let name = job.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(job),
    )
    .await
}

/// Sets the Job's `spec.ttlSecondsAfterFinished` (a merge patch): only once the run's outcome is
/// in the LlmJob's status, so that the TTL controller never deletes a result nobody read.
pub async fn set_ttl(api: &Api<Job>, name: &str, ttl: i32) -> Result<Job, kube::Error> {
    let patch = serde_json::json!({ "spec": { "ttlSecondsAfterFinished": ttl } });
    merge_patch(api, name, &patch).await
}

/// Sets the Job's `spec.suspend` and records the wish in [`SUSPEND_ANNOTATION`] (a merge patch,
/// so it never drops any other field).
pub async fn set_suspend(api: &Api<Job>, name: &str, suspend: bool) -> Result<Job, kube::Error> {
    let patch = serde_json::json!({
        "metadata": { "annotations": { SUSPEND_ANNOTATION: suspend.to_string() } },
        "spec": { "suspend": suspend },
    });
    merge_patch(api, name, &patch).await
}

/// A merge patch of Job `name` under the operator's field manager.
async fn merge_patch(
    api: &Api<Job>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<Job, kube::Error> {
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(patch),
    )
    .await
}
