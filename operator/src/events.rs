//! Kubernetes Events (`events.k8s.io/v1`) on LlmJobs: lifecycle and problems.
//!
//! Owns the reasons: each thing the operator reports is one [`Reason`], which is at once the
//! Event's reason, the reason of the condition a problem sets, and the `category` label of the
//! reconcile-error metric, so the three never disagree. Also owns the one publish helper.
//! Publishing is best effort: a failure is logged and never fails a reconcile. Notes never hold
//! prompt, completion or secret data.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use llmjob_crds::text;
use llmjob_crds::v1alpha1::Phase;

/// Longest Event note, in bytes (the API server refuses more than 1 kB).
const MAX_NOTE_BYTES: usize = 1000;

/// Why the operator reports something: an Event's reason, a condition's reason, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The Job was created.
    JobCreated,
    /// The run finished with a completion.
    Succeeded,
    /// The run ended without a completion.
    Failed,
    /// The run was suspended.
    Suspended,
    /// The run was resumed.
    Resumed,
    /// The spec is invalid (it slipped past admission, e.g. under an older CRD).
    InvalidSpec,
    /// A Job of the LlmJob's Job name exists and is not owned by the LlmJob.
    JobConflict,
    /// The tenant policy refuses the spec (environment from a Secret or ConfigMap, another
    /// ServiceAccount, plain-http baseURL outside the cluster) in the LlmJob's namespace.
    NotPermitted,
    /// A Secret the runner pod needs (the API-key Secret, or one `spec.pod.env` names) does not
    /// exist: the kubelet says so in the pod's waiting state.
    SecretNotFound,
    /// A Secret the runner pod needs exists without the key it names (the kubelet says so).
    SecretKeyNotFound,
    /// `spec.pod` changed after the Job was created: the Job's pod template cannot change, so
    /// the run keeps the pod settings it was created with.
    SpecChangeIgnored,
    /// The `llmjob.dev/traceparent` annotation is invalid; the run starts a new trace.
    InvalidTraceParent,
    /// A reconcile could not read an object (retried).
    ReadFailed,
    /// A reconcile could not create the Job (retried).
    JobCreateFailed,
    /// A reconcile could not change the Job's `spec.suspend` (retried).
    SuspendFailed,
    /// A reconcile could not write the status (retried).
    StatusWriteFailed,
    /// A reconcile could not set the Job's `ttlSecondsAfterFinished` (retried).
    TtlUpdateFailed,
}

impl Reason {
    /// The categories of reconcile errors (`llmjob_operator_reconcile_errors_total{category}`):
    /// the failed API calls a reconcile retries. The metric starts with each at 0, so that
    /// `rate()` over it (the operator dashboard, the reconcile-errors alert) returns 0 rather
    /// than nothing before the first error.
    pub const RECONCILE_ERRORS: [Reason; 5] = [
        Reason::ReadFailed,
        Reason::JobCreateFailed,
        Reason::SuspendFailed,
        Reason::StatusWriteFailed,
        Reason::TtlUpdateFailed,
    ];

    /// The CamelCase reason as users see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::JobCreated => "JobCreated",
            Reason::Succeeded => "Succeeded",
            Reason::Failed => "Failed",
            Reason::Suspended => "Suspended",
            Reason::Resumed => "Resumed",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::JobConflict => "JobConflict",
            Reason::NotPermitted => "NotPermitted",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyNotFound => "SecretKeyNotFound",
            Reason::SpecChangeIgnored => "SpecChangeIgnored",
            Reason::InvalidTraceParent => "InvalidTraceParent",
            Reason::ReadFailed => "ReadFailed",
            Reason::JobCreateFailed => "JobCreateFailed",
            Reason::SuspendFailed => "SuspendFailed",
            Reason::StatusWriteFailed => "StatusWriteFailed",
            Reason::TtlUpdateFailed => "TtlUpdateFailed",
        }
    }

    /// The type of its Event: `Normal` for the run's progress, `Warning` for a problem.
    pub fn event_type(self) -> EventType {
        match self {
            Reason::JobCreated | Reason::Succeeded | Reason::Suspended | Reason::Resumed => {
                EventType::Normal
            }
            _ => EventType::Warning,
        }
    }

    /// Whether its Event can be reported again about the same LlmJob, and is then counted in one
    /// Event's `series` rather than written as a new Event: the problems a retry reports again.
    /// A run's lifecycle (`JobCreated`, `Succeeded`, `Failed`, `Suspended`, `Resumed`) is
    /// reported once per transition.
    pub fn repeats(self) -> bool {
        !matches!(
            self,
            Reason::JobCreated
                | Reason::Succeeded
                | Reason::Failed
                | Reason::Suspended
                | Reason::Resumed
        )
    }

    /// The action of its Event: what the operator was doing.
    pub fn action(self) -> &'static str {
        match self {
            Reason::JobCreated => "Create",
            _ => "Reconcile",
        }
    }
}

/// A lifecycle event for a phase change, if the change deserves one.
///
/// Like the Job controller (`SuccessfulCreate`, `Completed`), the operator reports the start of
/// the work and its end, not each step between: the pod's start is in the `Running` phase, the
/// status' `startTime` and the pod's own events, and every Event is one more write to etcd.
pub fn for_transition(old: Option<Phase>, new: Phase) -> Option<Reason> {
    if old == Some(new) {
        return None;
    }
    match new {
        Phase::Running | Phase::Pending if old == Some(Phase::Suspended) => Some(Reason::Resumed),
        Phase::Running | Phase::Pending => None,
        Phase::Succeeded => Some(Reason::Succeeded),
        Phase::Failed => Some(Reason::Failed),
        Phase::Suspended => Some(Reason::Suspended),
    }
}

/// The note of a lifecycle event with the run's trace link (`status.traceURL`) at its end, the
/// note cut first so the link is never cut off.
pub fn with_trace_link(note: String, trace_url: Option<&str>) -> String {
    let Some(url) = trace_url else { return note };
    let link = format!(" Trace: {url}");
    let mut note = note;
    text::truncate(&mut note, MAX_NOTE_BYTES.saturating_sub(link.len()));
    note.push_str(&link);
    note
}

/// Publishes the operator's Events (kube-runtime's [`Recorder`]).
///
/// The recorder keeps every Event it published for 6 minutes, to count a repeat in the first
/// one's `series`. That is what a problem reported on each retry needs ([`Reason::repeats`]);
/// a lifecycle Event happens once per run, and keeping it would cost about 1.5 KiB per LlmJob
/// started or finished in the last 6 minutes (15 MiB at 10,000 runs in that time). Those go
/// through a recorder of their own, which keeps nothing once the Event is written.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
    /// The recorder of the Events that repeat.
    repeating: Recorder,
}

impl Publisher {
    /// A publisher that reports as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Publisher {
            repeating: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    /// Publishes an event about `llmjob` (an LlmJob, or one the operator cannot read, by its
    /// metadata); failures are logged, not returned.
    pub async fn publish(
        &self,
        llmjob: &impl Resource<DynamicType = ()>,
        reason: Reason,
        note: String,
    ) {
        let mut note = note;
        text::truncate(&mut note, MAX_NOTE_BYTES);
        let reference = llmjob.object_ref(&());
        let event = Event {
            type_: reason.event_type(),
            reason: reason.as_str().to_owned(),
            note: Some(note),
            action: reason.action().to_owned(),
            secondary: None,
        };
        let published = if reason.repeats() {
            self.repeating.publish(&event, &reference).await
        } else {
            Recorder::new(self.client.clone(), self.reporter.clone())
                .publish(&event, &reference)
                .await
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, reason = reason.as_str(), "publishing an event failed");
        }
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
            Some(Reason::Resumed)
        );
        assert_eq!(
            for_transition(Some(Phase::Suspended), Phase::Pending),
            Some(Reason::Resumed)
        );
        assert_eq!(for_transition(None, Phase::Failed), Some(Reason::Failed));
        assert_eq!(Reason::Failed.event_type(), EventType::Warning);
        assert_eq!(for_transition(None, Phase::Pending), None);
    }

    #[test]
    fn the_trace_link_ends_the_note_and_is_never_cut() {
        let url = "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            with_trace_link("The run finished: 31 tokens".into(), Some(url)),
            format!("The run finished: 31 tokens Trace: {url}")
        );
        assert_eq!(with_trace_link("done".into(), None), "done");
        let long = with_trace_link("x".repeat(3000), Some(url));
        assert!(long.len() <= MAX_NOTE_BYTES, "{}", long.len());
        assert!(long.ends_with(&format!("... Trace: {url}")), "{long}");
    }

    #[test]
    fn reasons_as_users_see_them() {
        assert_eq!(Reason::JobCreated.as_str(), "JobCreated");
        assert_eq!(Reason::JobCreated.event_type(), EventType::Normal);
        assert_eq!(Reason::JobCreated.action(), "Create");
        assert_eq!(Reason::SecretKeyNotFound.as_str(), "SecretKeyNotFound");
        assert_eq!(Reason::SecretKeyNotFound.event_type(), EventType::Warning);
        assert_eq!(Reason::SecretKeyNotFound.action(), "Reconcile");
        assert_eq!(Reason::StatusWriteFailed.as_str(), "StatusWriteFailed");
    }

    #[test]
    fn only_problems_are_counted_in_a_series() {
        for once in [
            Reason::JobCreated,
            Reason::Succeeded,
            Reason::Failed,
            Reason::Suspended,
            Reason::Resumed,
        ] {
            assert!(!once.repeats(), "{once:?}");
        }
        for reason in Reason::RECONCILE_ERRORS {
            assert!(reason.repeats(), "{reason:?}");
        }
        assert!(Reason::SecretNotFound.repeats());
        assert!(Reason::NotPermitted.repeats());
    }
}
