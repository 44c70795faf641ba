//! The Job contract: how the operator names, labels and recognises the Job (and pods) of an
//! LlmJob. The build step writes these names, the status step and the controller read them.
//!
//! Pure, and a leaf: it imports none of the reconcile's steps, so that they can all import it
//! (validate → contract; build → validate, contract; status → contract).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use llmjob_crds::v1alpha1::{KUEUE_QUEUE_LABEL, LlmJob};
use sha2::{Digest, Sha256};

/// The annotation the Job controller puts on a pod of an Indexed Job: its completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// Label on every Job and pod the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "llmjob-operator";
/// Label naming the LlmJob a Job or pod belongs to (its name, shortened like the Job's name
/// when longer than 63 characters).
pub const NAME_LABEL: &str = "llmjob.dev/name";
/// Annotation on the Job holding the `traceparent` of the operator's launch span: the run's trace
/// is its child, so its trace id is the run's trace id.
pub const LAUNCH_TRACEPARENT_ANNOTATION: &str = "llmjob.dev/launch-traceparent";
/// Annotation on the Job holding the `spec.suspend` the operator last asked for (`true` or
/// `false`). A Job whose `spec.suspend` differs from it was changed by another controller (Kueue
/// suspends the Jobs it manages, also without a queue label under `manageJobsWithoutQueueName`,
/// and resumes them on admission): the operator leaves the field alone until the LlmJob's own
/// `spec.suspend` changes.
pub const SUSPEND_ANNOTATION: &str = "llmjob.dev/suspend";
/// Annotation on the Job holding [`pod_hash`] of the `spec.pod` it was built from. The pod
/// template of a Job cannot change once created, so a later edit of `spec.pod` is not applied to
/// the run: the operator compares the hash and reports such an edit ([`pod_edit_ignored`]).
pub const POD_HASH_ANNOTATION: &str = "llmjob.dev/pod-hash";
/// Name of the runner container.
pub const CONTAINER_NAME: &str = "runner";

/// Longest Job name: the Job controller copies it into the `batch.kubernetes.io/job-name` label,
/// whose values are limited to 63 characters.
const MAX_NAME: usize = 63;
/// Hex digits of the hash that keeps a shortened name unique.
const HASH_LEN: usize = 10;

/// The name of the Job of the LlmJob `name`: the name itself when it has at most 63 characters,
/// else its first characters and a hash of the whole name, so different long names never share
/// a Job.
pub fn job_name(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_owned();
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    let keep = MAX_NAME - HASH_LEN - 1;
    // LlmJob names are DNS subdomains (ASCII), so byte slicing is on character boundaries.
    let prefix = name.get(..keep).unwrap_or(name);
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{}", &hash[..HASH_LEN])
}

/// The scheme of `LLMJOB_OUTPUT_URL` for a batch whose output is a ConfigMap
/// (`configmap://NAME`).
pub const CONFIGMAP_OUTPUT_SCHEME: &str = "configmap://";

/// The owner reference of the objects the operator creates for the LlmJob `name` with `uid`
/// (its Job, its input ConfigMap): the LlmJob is their controller, and garbage collection deletes
/// them with it.
pub fn owner_reference(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: LlmJob::api_version(&()).into_owned(),
        kind: LlmJob::kind(&()).into_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        // Foreground deletion of the LlmJob waits for its Job (needs `update` on
        // llmjobs/finalizers, which the chart's RBAC grants).
        block_owner_deletion: Some(true),
    }
}

/// The Kueue queue of the LlmJob, when it has one: its Job starts suspended and Kueue decides
/// when it runs (the operator then never touches the Job's `spec.suspend`).
pub fn queue(llmjob: &LlmJob) -> Option<&str> {
    llmjob
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(KUEUE_QUEUE_LABEL))
        .map(String::as_str)
        .filter(|q| !q.is_empty())
}

/// Whether the LlmJob is managed by a Kueue queue (see [`queue`]).
pub fn is_queued(llmjob: &LlmJob) -> bool {
    queue(llmjob).is_some()
}

/// The `spec.suspend` to set on the Job of a (not Kueue-labelled) LlmJob, if any: the LlmJob's
/// wish when it differs from what the operator last asked ([`SUSPEND_ANNOTATION`]; a Job without
/// the annotation gets the wish, and the annotation, once). When the operator already asked for
/// the wish, the Job's current value is read as is: a Job suspended or resumed by another
/// controller (Kueue) is never flipped back, so the operator never fights Kueue.
pub fn suspend_to_apply(llmjob: &LlmJob, job: &k8s_openapi::api::batch::v1::Job) -> Option<bool> {
    let want = llmjob.spec.suspend == Some(true);
    let asked = job
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(SUSPEND_ANNOTATION))
        .and_then(|v| v.parse::<bool>().ok());
    (asked != Some(want)).then_some(want)
}

/// A short hash (16 hex digits of SHA-256) of the LlmJob's `spec.pod`, as the Job's
/// [`POD_HASH_ANNOTATION`] records it.
pub fn pod_hash(llmjob: &LlmJob) -> String {
    // The JSON of typed values with ordered maps: the same spec.pod, the same text.
    let json = serde_json::to_string(&llmjob.spec.pod).unwrap_or_default();
    hex::encode(&Sha256::digest(json.as_bytes())[..8])
}

/// Whether the LlmJob's `spec.pod` differs from the one its Job was built from: an edit made
/// after the Job was created, which the Job's immutable pod template never gets. A Job without
/// the annotation (created by an older operator) tells nothing.
pub fn pod_edit_ignored(llmjob: &LlmJob, job: &k8s_openapi::api::batch::v1::Job) -> bool {
    job.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_HASH_ANNOTATION))
        .is_some_and(|built| *built != pod_hash(llmjob))
}

/// Whether `owner` is the controller of `child` (by uid): a Job of its LlmJob, a pod of its Job.
pub fn controlled_by(child: &impl Resource, owner: &impl Resource) -> bool {
    let uid = owner.meta().uid.as_ref();
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{job, llmjob};

    #[test]
    fn job_names() {
        assert_eq!(job_name("haiku"), "haiku");
        let long = "a".repeat(63);
        assert_eq!(job_name(&long), long);
        let longer = format!("{}-x", "b".repeat(70));
        let name = job_name(&longer);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("bbbb"));
        assert_ne!(name, job_name(&format!("{}-y", "b".repeat(70))));
        assert_eq!(name, job_name(&longer), "deterministic");
        let dashed = format!("{}-{}", "c".repeat(51), "d".repeat(20));
        assert!(!job_name(&dashed).contains("--"));
    }

    #[test]
    fn queued_by_a_non_empty_queue_label() {
        let spec = "spec: {prompt: hi, openai: {apiKeySecretRef: {name: o}}}";
        let queued = llmjob(&format!(
            "metadata: {{name: a, labels: {{kueue.x-k8s.io/queue-name: q1}}}}\n{spec}"
        ));
        assert_eq!(queue(&queued), Some("q1"));
        assert!(is_queued(&queued));
        let empty = llmjob(&format!(
            "metadata: {{name: a, labels: {{kueue.x-k8s.io/queue-name: \"\"}}}}\n{spec}"
        ));
        assert!(!is_queued(&empty));
        assert!(!is_queued(&llmjob(&format!(
            "metadata: {{name: a}}\n{spec}"
        ))));
    }

    #[test]
    fn the_operator_applies_only_a_new_suspend_wish() {
        let lj = |suspend: bool| {
            llmjob(&format!(
                "metadata: {{name: a}}\nspec: {{prompt: hi, suspend: {suspend}, openai: {{apiKeySecretRef: {{name: s}}}}}}"
            ))
        };
        let job_of = |asked: Option<bool>, suspend: bool| {
            let annotations = asked
                .map(|a| format!("annotations: {{{SUSPEND_ANNOTATION}: \"{a}\"}}"))
                .unwrap_or_default();
            job(&format!(
                "metadata: {{name: a, {annotations}}}\nspec: {{suspend: {suspend}, template: {{}}}}"
            ))
        };
        // Kueue suspended the Job the operator created running: left alone.
        assert_eq!(
            suspend_to_apply(&lj(false), &job_of(Some(false), true)),
            None
        );
        // Kueue resumed the Job of a queued run the operator created suspended: left alone too.
        assert_eq!(
            suspend_to_apply(&lj(true), &job_of(Some(true), false)),
            None
        );
        // The user suspends, then resumes: each new wish is applied.
        assert_eq!(
            suspend_to_apply(&lj(true), &job_of(Some(false), false)),
            Some(true)
        );
        assert_eq!(
            suspend_to_apply(&lj(false), &job_of(Some(true), true)),
            Some(false)
        );
        // A Job from before the annotation gets the wish once.
        assert_eq!(
            suspend_to_apply(&lj(false), &job_of(None, true)),
            Some(false)
        );
    }

    #[test]
    fn a_pod_edit_after_the_job_is_created_is_found() {
        let lj = |labels: &str| {
            llmjob(&format!(
                "metadata: {{name: a}}\nspec: {{prompt: hi, openai: {{apiKeySecretRef: {{name: s}}}}, pod: {{labels: {{{labels}}}}}}}"
            ))
        };
        let built = lj("team: a");
        let job_of = |hash: Option<String>| {
            let annotations = hash
                .map(|h| format!("annotations: {{{POD_HASH_ANNOTATION}: '{h}'}}"))
                .unwrap_or_default();
            job(&format!("metadata: {{name: a, {annotations}}}"))
        };
        let job = job_of(Some(pod_hash(&built)));
        assert_eq!(pod_hash(&built).len(), 16);
        assert!(!pod_edit_ignored(&built, &job), "unchanged");
        assert!(pod_edit_ignored(&lj("team: b"), &job), "a label changed");
        let mut suspended = built.clone();
        suspended.spec.suspend = Some(true);
        assert!(!pod_edit_ignored(&suspended, &job), "only spec.pod counts");
        assert!(
            !pod_edit_ignored(&lj("team: b"), &job_of(None)),
            "an older Job"
        );
    }

    #[test]
    fn ownership_is_by_uid() {
        let lj = llmjob(
            "metadata: {name: a, namespace: n, uid: u-1}\nspec: {prompt: hi, openai: {apiKeySecretRef: {name: s}}}",
        );
        let mine = job(
            "metadata: {name: a, ownerReferences: [{apiVersion: llmjob.dev/v1alpha1, kind: LlmJob, name: a, uid: u-1, controller: true}]}",
        );
        let other = job(
            "metadata: {name: a, ownerReferences: [{apiVersion: llmjob.dev/v1alpha1, kind: LlmJob, name: a, uid: u-2, controller: true}]}",
        );
        let none = job("metadata: {name: a}");
        assert!(controlled_by(&mine, &lj));
        assert!(!controlled_by(&other, &lj));
        assert!(!controlled_by(&none, &lj));
    }
}
