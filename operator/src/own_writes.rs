//! The operator's own status writes, remembered until the LlmJob watch cache shows them.
//!
//! A reconcile works on the watch cache's copy of an LlmJob, and the watch event of the
//! operator's own status write arrives a few milliseconds after the write. A reconcile triggered
//! in between (a Job or pod event right after the Job was created, or the Job controller's
//! `SuccessCriteriaMet` and `Complete` updates in a row) would see the copy from before the write,
//! derive the same change again and have its conditional write refused as a `Conflict`, costing a
//! refused write and a fresh read. With this memo it starts from the object the write returned.
//!
//! The memo only ever picks the newer of two copies the operator already holds: every status
//! write stays conditional on the `resourceVersion` it was derived from, so a wrong pick costs a
//! `Conflict` and a fresh read, never a wrong status or a repeated event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use llmjob_crds::v1alpha1::LlmJob;

/// How many older versions of one LlmJob are remembered (a reconcile adds at most two).
const MAX_OLDER: usize = 8;

/// The LlmJobs as the operator's last status write left them, by object; shared by the
/// reconciles and the LlmJob watch (clones share the memo).
#[derive(Clone, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<ObjectRef<LlmJob>, Written>>>);

/// One LlmJob after the operator's write, and the versions known to be older than it.
struct Written {
    llmjob: Arc<LlmJob>,
    older: Vec<String>,
}

impl OwnWrites {
    /// The newer of the watch cache's copy and the operator's own last write: the write while the
    /// cache still shows a version from before it, else the cache's copy.
    pub fn newest(&self, cached: Arc<LlmJob>) -> Arc<LlmJob> {
        let Ok(memo) = self.0.lock() else {
            return cached;
        };
        let Some(rv) = cached.resource_version() else {
            return cached;
        };
        match memo.get(&ObjectRef::from_obj(cached.as_ref())) {
            Some(w) if w.llmjob.uid() == cached.uid() && w.older.contains(&rv) => w.llmjob.clone(),
            _ => cached,
        }
    }

    /// Remembers `written`, the object a status write returned; `older` are versions of it known
    /// to be older (the write's base and the cache's copy at the start of the reconcile).
    pub fn record(&self, older: impl IntoIterator<Item = Option<String>>, mut written: LlmJob) {
        let Ok(mut memo) = self.0.lock() else {
            return;
        };
        written.metadata.managed_fields = None;
        let key = ObjectRef::from_obj(&written);
        let mut known: Vec<String> = memo
            .remove(&key)
            .filter(|w| w.llmjob.uid() == written.uid())
            .map(|w| {
                let mut older = w.older;
                older.extend(w.llmjob.resource_version());
                older
            })
            .unwrap_or_default();
        known.extend(older.into_iter().flatten());
        known.retain(|rv| Some(rv) != written.resource_version().as_ref());
        known.dedup();
        if known.len() > MAX_OLDER {
            known.drain(..known.len() - MAX_OLDER);
        }
        memo.insert(
            key,
            Written {
                llmjob: Arc::new(written),
                older: known,
            },
        );
    }

    /// Follows the LlmJob watch (of [`LlmJob`]s, or of the controller's
    /// [`WatchedLlmJob`](crate::controller::WatchedLlmJob)s, by their metadata): a remembered
    /// write is forgotten once the cache shows it, or a version it does not know, or the LlmJob
    /// is deleted.
    pub fn observe<K: Resource>(&self, event: &watcher::Event<K>) {
        let Ok(mut memo) = self.0.lock() else {
            return;
        };
        if memo.is_empty() {
            return;
        }
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                let key = key_of(obj);
                let stale = memo.get(&key).is_some_and(|w| {
                    obj.resource_version()
                        .is_none_or(|rv| !w.older.contains(&rv) || w.llmjob.uid() != obj.uid())
                });
                if stale {
                    memo.remove(&key);
                }
            }
            watcher::Event::Delete(obj) => {
                memo.remove(&key_of(obj));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// How many writes are remembered.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    /// Whether no write is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The memo's key of an LlmJob read as any type.
fn key_of(obj: &impl Resource) -> ObjectRef<LlmJob> {
    let key = ObjectRef::new(&obj.name_any());
    match obj.namespace() {
        Some(ns) => key.within(&ns),
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::llmjob;

    fn at(rv: &str, phase: &str) -> LlmJob {
        llmjob(&format!(
            "metadata: {{name: a, namespace: n, uid: u-1, resourceVersion: '{rv}'}}\n\
             spec: {{prompt: hi, openai: {{apiKeySecretRef: {{name: s}}}}}}\n\
             status: {{phase: {phase}}}"
        ))
    }

    fn rv(j: &LlmJob) -> String {
        j.resource_version().unwrap_or_default()
    }

    #[test]
    fn the_write_wins_until_the_cache_shows_it() {
        let memo = OwnWrites::default();
        let cached = Arc::new(at("10", "Pending"));
        // Nothing written: the cache's copy.
        assert_eq!(rv(&memo.newest(cached.clone())), "10");
        memo.record([Some("10".to_owned())], at("11", "Running"));
        // The cache is behind: the write.
        assert_eq!(rv(&memo.newest(cached.clone())), "11");
        // A second write on top of the first; the cache is still at 10.
        memo.record([Some("11".to_owned())], at("12", "Succeeded"));
        assert_eq!(rv(&memo.newest(cached.clone())), "12");
        assert_eq!(rv(&memo.newest(Arc::new(at("11", "Running")))), "12");
        // The cache caught up (the watch delivered 11, then 12).
        memo.observe(&watcher::Event::Apply(at("11", "Running")));
        assert_eq!(memo.len(), 1);
        memo.observe(&watcher::Event::Apply(at("12", "Succeeded")));
        assert!(memo.is_empty());
        assert_eq!(rv(&memo.newest(cached)), "10");
    }

    #[test]
    fn a_version_it_does_not_know_is_the_caches() {
        let memo = OwnWrites::default();
        memo.record([Some("10".to_owned())], at("11", "Running"));
        // The LlmJob moved on (a spec edit after the write): the cache's copy, and the memo goes.
        let newer = Arc::new(at("13", "Running"));
        assert_eq!(rv(&memo.newest(newer.clone())), "13");
        memo.observe(&watcher::Event::Apply(at("13", "Running")));
        assert!(memo.is_empty());
    }

    #[test]
    fn a_recreated_llmjob_is_not_confused_with_the_old_one() {
        let memo = OwnWrites::default();
        memo.record([Some("10".to_owned())], at("11", "Succeeded"));
        let mut recreated = at("10", "Pending");
        recreated.metadata.uid = Some("u-2".into());
        assert_eq!(
            memo.newest(Arc::new(recreated.clone())).uid().as_deref(),
            Some("u-2")
        );
        memo.observe(&watcher::Event::Apply(recreated));
        assert!(memo.is_empty());
    }

    #[test]
    fn deletion_forgets() {
        let memo = OwnWrites::default();
        memo.record([Some("10".to_owned())], at("11", "Running"));
        memo.observe(&watcher::Event::Delete(at("11", "Running")));
        assert!(memo.is_empty());
    }
}
