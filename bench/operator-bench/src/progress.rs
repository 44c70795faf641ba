//! Follows the objects of one namespace with a watch and records when the N-th object appeared
//! and when the N-th object reached its end state. One watch per kind, started (and synced)
//! before the first object is created, so counting costs one request rather than a list per poll.
//!
//! It only observes: it never writes to the cluster.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished.
    Running,
    /// Finished well (a Job `Complete`, an LlmJob `Succeeded`).
    Done,
    /// Finished badly (a Job `Failed`, an LlmJob `Failed`), with the object's reason and message.
    Failed(String),
}

#[derive(Debug, Default)]
struct State {
    synced: bool,
    seen: HashSet<String>,
    done: HashSet<String>,
    /// Name to why it failed.
    failed: HashMap<String, String>,
    all_seen_at: Option<Instant>,
    all_done_at: Option<Instant>,
}

/// Counts of a [`Tracker`] at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Objects seen.
    pub seen: usize,
    /// Objects finished well.
    pub done: usize,
    /// Objects finished badly.
    pub failed: usize,
}

/// A watch on one kind in one namespace, counting objects against a target.
pub struct Tracker {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
    target: usize,
    what: String,
}

impl Tracker {
    /// Starts watching `api` (objects selected by `label_selector`, if any) and waits until the
    /// watch has listed what exists. `outcome` classifies an object.
    pub async fn start<K>(
        what: impl Into<String>,
        api: Api<K>,
        label_selector: Option<&str>,
        target: usize,
        outcome: fn(&K) -> Outcome,
    ) -> anyhow::Result<Tracker>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let mut config = watcher::Config::default();
        if let Some(selector) = label_selector {
            config = config.labels(selector);
        }
        let task = {
            let state = state.clone();
            let changed = changed.clone();
            tokio::spawn(async move {
                let mut events = watcher::watcher(api, config).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { continue };
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        Event::Apply(obj) | Event::InitApply(obj) => {
                            let name = obj.name_any();
                            s.seen.insert(name.clone());
                            match outcome(&obj) {
                                Outcome::Done => {
                                    s.done.insert(name);
                                }
                                Outcome::Failed(why) => {
                                    s.failed.insert(name, why);
                                }
                                Outcome::Running => {}
                            }
                            let now = Instant::now();
                            if s.all_seen_at.is_none() && s.seen.len() >= target {
                                s.all_seen_at = Some(now);
                            }
                            if s.all_done_at.is_none() && s.done.len() >= target {
                                s.all_done_at = Some(now);
                            }
                        }
                        // A finished Job or LlmJob is not deleted during a run; a deleted one
                        // stays counted.
                        Event::Delete(_) | Event::Init => {}
                        Event::InitDone => s.synced = true,
                    }
                    drop(s);
                    changed.notify_waiters();
                }
            })
        };
        let tracker = Tracker {
            state,
            changed,
            task,
            target,
            what: what.into(),
        };
        tracker
            .wait(Duration::from_secs(60), |s| s.synced, "its watch to sync")
            .await?;
        Ok(tracker)
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        let s = self.lock();
        Counts {
            seen: s.seen.len(),
            done: s.done.len(),
            failed: s.failed.len(),
        }
    }

    /// When the target number of objects had been seen.
    pub fn all_seen_at(&self) -> Option<Instant> {
        self.lock().all_seen_at
    }

    /// Waits until `target` objects finished well; fails early when any failed, and after
    /// `timeout`.
    pub async fn wait_all_done(&self, timeout: Duration) -> anyhow::Result<Instant> {
        let target = self.target;
        self.wait(
            timeout,
            |s| s.done.len() >= target || !s.failed.is_empty(),
            "all to finish",
        )
        .await?;
        let s = self.lock();
        if let Some((name, why)) = s.failed.iter().next() {
            anyhow::bail!(
                "{}: {} failed (e.g. {name}: {why}); {} of {target} done",
                self.what,
                s.failed.len(),
                s.done.len()
            );
        }
        s.all_done_at
            .ok_or_else(|| anyhow::anyhow!("{}: done without a time", self.what))
    }

    /// Waits until the target number of objects exists.
    pub async fn wait_all_seen(&self, timeout: Duration) -> anyhow::Result<Instant> {
        let target = self.target;
        self.wait(timeout, |s| s.seen.len() >= target, "all to exist")
            .await?;
        self.all_seen_at()
            .ok_or_else(|| anyhow::anyhow!("{}: seen without a time", self.what))
    }

    async fn wait(
        &self,
        timeout: Duration,
        ready: impl Fn(&State) -> bool,
        what: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Register before checking, so a change between the check and the wait is not lost.
            let notified = self.changed.notified();
            if ready(&self.lock()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let c = self.counts();
                anyhow::bail!(
                    "{}: timed out after {timeout:?} waiting for {what} ({} seen, {} done, {} failed of {})",
                    self.what,
                    c.seen,
                    c.done,
                    c.failed,
                    self.target
                );
            }
            // Wake up at least once a second to check the deadline.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
