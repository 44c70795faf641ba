//! Kubernetes Events (`events.k8s.io/v1`) on LlmJobs: lifecycle and problems.
//!
//! Owns the event reasons and the one publish helper. Publishing is best effort: a failure is
//! logged and never fails a reconcile. Notes never hold prompt, completion or secret data.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use llmjob_crds::v1alpha1::{LlmJob, Phase};

/// The Job was created.
pub const JOB_CREATED: &str = "JobCreated";
/// The run finished with a completion.
pub const SUCCEEDED: &str = "Succeeded";
/// The run ended without a completion.
pub const FAILED: &str = "Failed";
/// The run was suspended.
pub const SUSPENDED: &str = "Suspended";
/// The run was resumed.
pub const RESUMED: &str = "Resumed";

/// A lifecycle event for a phase change, if the change deserves one.
///
/// Like the Job controller (`SuccessfulCreate`, `Completed`), the operator reports the start of
/// the work and its end, not each step between: the pod's start is in the `Running` phase, the
/// status' `startTime` and the pod's own events, and every Event is one more write to etcd.
pub fn for_transition(old: Option<Phase>, new: Phase) -> Option<(EventType, &'static str)> {
    if old == Some(new) {
        return None;
    }
    match new {
        Phase::Running | Phase::Pending if old == Some(Phase::Suspended) => {
            Some((EventType::Normal, RESUMED))
        }
        Phase::Running | Phase::Pending => None,
        Phase::Succeeded => Some((EventType::Normal, SUCCEEDED)),
        Phase::Failed => Some((EventType::Warning, FAILED)),
        Phase::Suspended => Some((EventType::Normal, SUSPENDED)),
    }
}

/// Publishes an event about `llmjob`; failures are logged, not returned.
pub async fn publish(
    recorder: &Recorder,
    llmjob: &LlmJob,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let reference = llmjob.object_ref(&());
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, reason, "publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        assert_eq!(for_transition(Some(Phase::Running), Phase::Running), None);
        assert_eq!(for_transition(Some(Phase::Pending), Phase::Running), None);
        assert_eq!(
            for_transition(Some(Phase::Suspended), Phase::Running),
            Some((EventType::Normal, RESUMED))
        );
        assert_eq!(
            for_transition(Some(Phase::Suspended), Phase::Pending),
            Some((EventType::Normal, RESUMED))
        );
        assert_eq!(
            for_transition(None, Phase::Failed),
            Some((EventType::Warning, FAILED))
        );
        assert_eq!(for_transition(None, Phase::Pending), None);
    }
}
