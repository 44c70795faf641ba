//! Which Job and pod watch events trigger a reconcile of their LlmJob.
//!
//! A run's Job and pod change many times (the Job controller writes the Job's status three times,
//! the kubelet the pod's about as often, bindings and finalizers come and go), and most changes
//! say nothing the status is made of. Each watched object is reduced to a *progress* hash of the
//! fields [`crate::status::derive`] reads; an event passes only when that hash changed, or when
//! the object was deleted (a deleted Job must be seen: its LlmJob may end `JobDeleted`). A new
//! object is compared with an empty one of its kind, so a Job the operator has just created, or
//! a pod that is only scheduled, triggers nothing.
//!
//! kube-runtime's `predicate_filter` is not used here because it drops deletions whose object
//! did not change, and passes every object the first time it is seen.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::cache::{CachedJob, CachedPod};

/// Waiting reasons of a container that is merely starting (they never show in the status).
pub const STARTING_REASONS: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// The objects of a watch whose `progress` changed, and every deleted object.
pub fn on_progress<K, S>(
    events: S,
    progress: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Default + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let baseline = progress(&K::default());
    let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
    events.filter_map(move |event| {
        let passed = match event {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let now = progress(&obj);
                let before = seen.insert(ObjectRef::from_obj(&obj), now);
                (now != before.unwrap_or(baseline)).then_some(Ok(obj))
            }
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&ObjectRef::from_obj(&obj));
                Some(Ok(obj))
            }
            // A relist: what was seen before may be gone without a deletion event.
            Ok(watcher::Event::Init) => {
                seen.clear();
                None
            }
            Ok(watcher::Event::InitDone) => None,
        };
        std::future::ready(passed)
    })
}

/// What about a Job can change its LlmJob's status: `spec.suspend`, the conditions, the counts
/// of finished pods, the completion time and a pending deletion (not `active`/`ready`, which the
/// pods tell first).
pub fn job_progress(job: &CachedJob) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let status = job.status.as_ref();
    job.spec.as_ref().and_then(|s| s.suspend).hash(&mut h);
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        (&c.type_, &c.status).hash(&mut h);
    }
    status.and_then(|s| s.succeeded).hash(&mut h);
    status.and_then(|s| s.failed).hash(&mut h);
    status
        .and_then(|s| s.completion_time.as_ref())
        .map(|t| t.0.as_second())
        .hash(&mut h);
    job.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// What about a pod can change its LlmJob's status: the phase and the runner's state (a binding,
/// the Job controller removing its finalizer, or a container that is merely being created
/// change nothing).
pub fn pod_progress(pod: &CachedPod) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.phase.as_deref())
        .filter(|p| *p != "Pending")
        .hash(&mut h);
    for c in status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        let state = c.state.as_ref();
        let running = state.and_then(|s| s.running.as_ref()).is_some();
        let waiting = state
            .and_then(|s| s.waiting.as_ref())
            .filter(|w| {
                !w.reason
                    .as_deref()
                    .is_some_and(|r| STARTING_REASONS.contains(&r))
            })
            .map(|w| (&w.reason, &w.message));
        let terminated = state
            .and_then(|s| s.terminated.as_ref())
            .map(|t| (t.exit_code, &t.message));
        if running || waiting.is_some() || terminated.is_some() {
            (&c.name, running, waiting, terminated).hash(&mut h);
        }
    }
    pod.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{cached, job, pod};
    use futures::stream;

    /// How many of `events` trigger a reconcile.
    fn passed<K>(events: Vec<watcher::Event<K>>, progress: fn(&K) -> u64) -> usize
    where
        K: Resource<DynamicType = ()> + Default + Send + 'static,
    {
        let s = on_progress(stream::iter(events.into_iter().map(Ok)), progress);
        futures::executor::block_on(s.collect::<Vec<_>>()).len()
    }

    fn j(status: &str) -> CachedJob {
        cached(&job(&format!(
            "metadata: {{name: j, namespace: n}}\nstatus: {status}"
        )))
    }

    #[test]
    fn a_jobs_life_triggers_on_what_the_status_reads() {
        use watcher::Event::{Apply, Delete};
        let events = vec![
            // Just created by the operator: nothing to see.
            Apply(j("{}")),
            // The Job controller counts the active pod: the pods tell that first.
            Apply(j("{active: 1, ready: 0}")),
            Apply(j("{active: 1, ready: 1}")),
            // Success criteria met, then complete: both pass.
            Apply(j(
                "{active: 0, conditions: [{type: SuccessCriteriaMet, status: 'True'}]}",
            )),
            Apply(j(
                "{succeeded: 1, completionTime: '2026-01-02T03:04:05Z', conditions: [{type: SuccessCriteriaMet, status: 'True'}, {type: Complete, status: 'True'}]}",
            )),
            // The same state again (a resync): nothing.
            Apply(j(
                "{succeeded: 1, completionTime: '2026-01-02T03:04:05Z', conditions: [{type: SuccessCriteriaMet, status: 'True'}, {type: Complete, status: 'True'}]}",
            )),
            // Deleted without a change: passes.
            Delete(j("{}")),
        ];
        assert_eq!(passed(events, job_progress), 3);
    }

    #[test]
    fn suspend_and_deletion_pass() {
        use watcher::Event::{Apply, Delete};
        let suspended: CachedJob = cached(&job(
            "metadata: {name: j, namespace: n}\nspec: {suspend: true, template: {}}",
        ));
        let resumed: CachedJob = cached(&job(
            "metadata: {name: j, namespace: n}\nspec: {suspend: false, template: {}}",
        ));
        let events = vec![Apply(suspended), Apply(resumed.clone()), Delete(resumed)];
        assert_eq!(passed(events, job_progress), 3);
    }

    fn p(status: &str) -> CachedPod {
        cached(&pod(&format!(
            "metadata: {{name: p, namespace: n}}\nstatus: {status}"
        )))
    }

    #[test]
    fn a_pods_life_triggers_on_its_runner() {
        use watcher::Event::{Apply, InitApply};
        let events = vec![
            // Created, bound, container being created: nothing to see.
            Apply(p("{}")),
            Apply(p("{phase: Pending}")),
            Apply(p(
                "{phase: Pending, containerStatuses: [{name: runner, image: i, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ContainerCreating}}}]}",
            )),
            // A real problem: passes.
            Apply(p(
                "{phase: Pending, containerStatuses: [{name: runner, image: i, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ImagePullBackOff, message: no}}}]}",
            )),
            Apply(p(
                "{phase: Running, containerStatuses: [{name: runner, image: i, imageID: '', ready: true, restartCount: 0, state: {running: {}}}]}",
            )),
            Apply(p(
                "{phase: Succeeded, containerStatuses: [{name: runner, image: i, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, message: '{}'}}}]}",
            )),
            // After a relist the same state passes once more (the map was cleared).
            watcher::Event::Init,
            InitApply(p(
                "{phase: Succeeded, containerStatuses: [{name: runner, image: i, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, message: '{}'}}}]}",
            )),
            watcher::Event::InitDone,
        ];
        assert_eq!(passed(events, pod_progress), 4);
    }
}
