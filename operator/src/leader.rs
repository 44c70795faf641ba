//! Leader election through a `coordination.k8s.io/v1` Lease (`--leader-elect=true`), with
//! [`kube_lease_manager`]: only the holder runs the controllers.
//!
//! A replica that loses the Lease stops with an error (and its pod restarts), as
//! controller-runtime does: continuing could let two replicas create Jobs at once. So does a
//! leader whose renewals stop landing for [`RENEW_DEADLINE`] (cut off from the API server, or
//! paused): it stops before its Lease can expire, not once it reads another holder. The Lease is
//! released on a clean shutdown, so a successor takes over without waiting for it to expire.
//!
//! A leader that is paused (SIGSTOP, a frozen VM, a long GC-like stall) cannot notice anything
//! until it runs again, and then its queued reconciles would run before the check above. So its
//! writes go through a [`Fence`]: a client layer ([`fenced_client`]) that refuses every request
//! other than a read once [`RENEW_DEADLINE`] has passed since the last renewal it confirmed, by
//! the monotonic clock, which keeps running while the process is stopped. The Lease itself is
//! renewed through an unfenced client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::FIELD_MANAGER;
use crate::config::Config;
use crate::controller::Shutdown;
use crate::http::Health;

/// Seconds a Lease stays valid without renewal (controller-runtime's default).
pub const LEASE_DURATION_SECS: u64 = 15;
/// Seconds before expiry at which the holder renews (so renewal happens every 5 s).
pub const RENEW_GRACE_SECS: u64 = 10;
/// How long the leader keeps reconciling after its last renewal that landed (controller-runtime's
/// default `RenewDeadline`): less than [`LEASE_DURATION_SECS`], so a leader cut off from the API
/// server stops before its Lease expires and a standby can take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader reads its Lease to check that its renewals land.
const RENEW_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a clean shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Leader election failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be created or read.
    #[error(
        "leader election with Lease {namespace}/{name} failed: {source} (check the operator's RBAC \
         for coordination.k8s.io leases in {namespace})"
    )]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The cause.
        #[source]
        source: LeaseManagerError,
    },
    /// This replica could not confirm a renewal of its Lease within [`RENEW_DEADLINE`].
    #[error(
        "no renewal of Lease {namespace}/{name} landed for {age:?} (renew deadline \
         {RENEW_DEADLINE:?}); stopping before the Lease expires and another replica takes over"
    )]
    RenewDeadline {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// Time since the last renewal that landed.
        age: Duration,
    },
    /// This replica held the Lease and lost it.
    #[error(
        "lost the leadership (Lease {namespace}/{name}); stopping so that only the new leader reconciles"
    )]
    Lost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
}

/// A write refused by the [`Fence`]: this replica has not confirmed its leadership recently
/// enough for the request to be sent.
#[derive(Debug, thiserror::Error)]
#[error(
    "not sent: {method} {path} (this replica has not confirmed a renewal of its Lease within the \
     renew deadline {RENEW_DEADLINE:?}, so another replica may lead)"
)]
pub struct Fenced {
    /// The request's method.
    pub method: http::Method,
    /// The request's path.
    pub path: String,
}

/// Until when this replica's writes may reach the API server: shared by the leader-election
/// task, which moves it forward with each renewal it confirms, and the [`fenced_client`], which
/// checks it before every request. A replica without leader election is never fenced.
#[derive(Debug, Clone)]
pub struct Fence(Option<Arc<Mutex<Option<Instant>>>>);

impl Fence {
    /// Writes always pass (no leader election).
    pub fn open() -> Self {
        Fence(None)
    }

    /// Writes pass only once [`Fence::extend`] allowed them (a standby until it leads).
    pub fn closed() -> Self {
        Fence(Some(Arc::new(Mutex::new(None))))
    }

    /// Lets writes pass until `until` (never moves it back).
    pub fn extend(&self, until: Instant) {
        if let Some(state) = &self.0 {
            let mut state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.is_none_or(|current| current < until) {
                *state = Some(until);
            }
        }
    }

    /// Refuses every write from now on (the leadership ended).
    pub fn close(&self) {
        if let Some(state) = &self.0 {
            *state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// Whether a write may be sent at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        match &self.0 {
            None => true,
            Some(state) => state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|until| now < until),
        }
    }

    /// Checks one request: reads (`GET`, including watches, `HEAD`, `OPTIONS`) always pass.
    pub fn check<B>(&self, request: http::Request<B>) -> Result<http::Request<B>, Fenced> {
        let read = matches!(
            *request.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if read || self.allows(Instant::now()) {
            Ok(request)
        } else {
            Err(Fenced {
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            })
        }
    }
}

/// A client for `config` whose writes pass only while `fence` allows them (see the module
/// documentation). The controllers and their Events use it; the Lease does not.
pub fn fenced_client(config: kube::Config, fence: Fence) -> Result<Client, kube::Error> {
    let layer = tower::filter::FilterLayer::new(move |request| fence.check(request));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

/// Until when a renewal at `renewed` (the Lease's `renewTime`, written by this replica's clock)
/// lets this replica write, read back when the wall clock said `read_wall` and the monotonic
/// clock `read_at`: [`RENEW_DEADLINE`] after the renewal, on the monotonic clock. A renewal time
/// ahead of the reader's clock counts as made at the read.
pub fn fence_until(renewed: Timestamp, read_wall: Timestamp, read_at: Instant) -> Instant {
    let age = Duration::try_from(read_wall.duration_since(renewed)).unwrap_or_default();
    read_at + RENEW_DEADLINE.saturating_sub(age)
}

/// Which Lease, and who this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Name of the Lease.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
}

impl Lease {
    /// The Lease of the configuration.
    pub fn new(config: &Config) -> Self {
        Lease {
            name: config.leader_election_lease_name.clone(),
            namespace: config.leader_election_namespace.clone(),
            identity: config.identity(),
        }
    }
}

/// This replica holds the Lease.
pub struct Leadership {
    lease: Lease,
    client: Client,
    fence: Fence,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// The `renewTime` of `lease` when `identity` holds it: a renewal of ours that landed.
pub fn our_renewal(
    lease: &k8s_openapi::api::coordination::v1::Lease,
    identity: &str,
) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    (spec.holder_identity.as_deref() == Some(identity))
        .then(|| spec.renew_time.as_ref().map(|t| t.0))
        .flatten()
}

/// Whether a leader must give up: its last renewal that landed (as read back from the Lease) is
/// older than [`RENEW_DEADLINE`] at `now`, or none is known. A renewal time ahead of `now` (the
/// clocks of the writer and reader are the same replica's) counts as fresh.
pub fn must_give_up(last_renewal: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let Some(renewed) = last_renewal else {
        return Some(Duration::ZERO);
    };
    let age = Duration::try_from(now.duration_since(renewed)).unwrap_or_default();
    (age > RENEW_DEADLINE).then_some(age)
}

impl Leadership {
    /// Resolves when the Lease is lost (never while it is held): another holder was seen, the
    /// election task ended, or no renewal of ours landed within [`RENEW_DEADLINE`] (read back
    /// from the Lease every [`RENEW_CHECK_INTERVAL`]; a read that fails keeps the last known
    /// renewal, so a replica cut off from the API server gives up in time).
    pub async fn lost(&mut self) -> LeaderError {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.lease.namespace);
        let lease = self.lease.clone();
        let fence = self.fence.clone();
        let deadline = async move {
            // Just became the leader: its acquisition was a renewal that landed.
            let mut last = Some(Timestamp::now());
            let mut tick = tokio::time::interval(RENEW_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let (read_wall, read_at) = (Timestamp::now(), Instant::now());
                if let Ok(Ok(read)) =
                    tokio::time::timeout(RENEW_CHECK_INTERVAL, api.get(&lease.name)).await
                {
                    let ours = our_renewal(&read, &lease.identity);
                    if let Some(renewed) = ours {
                        fence.extend(fence_until(renewed, read_wall, read_at));
                    }
                    last = ours.or(last);
                }
                if let Some(age) = must_give_up(last, Timestamp::now()) {
                    return age;
                }
            }
        };
        let lost = tokio::select! {
            // An error means the manager's task ended, which also means the Lease is not renewed.
            _ = self.state.wait_for(|leader| !*leader) => LeaderError::Lost {
                namespace: self.lease.namespace.clone(),
                name: self.lease.name.clone(),
            },
            age = deadline => LeaderError::RenewDeadline {
                namespace: self.lease.namespace.clone(),
                name: self.lease.name.clone(),
                age,
            },
        };
        self.fence.close();
        lost
    }

    /// Releases the Lease (closing the channel makes the manager release it and stop).
    pub async fn release(self) {
        let Leadership {
            lease,
            state,
            task,
            fence,
            ..
        } = self;
        fence.close();
        drop(state);
        match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => tracing::info!(lease = %lease.name, "released the leadership"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the Lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader-election task failed"),
            Err(_) => tracing::warn!("releasing the Lease timed out; it expires on its own"),
        }
    }
}

/// Checks that the Lease may be patched (a server-side dry run of the patch the election makes).
/// The election library only logs its errors and retries forever; without this check a replica
/// lacking RBAC would wait as a "ready" standby indefinitely instead of failing visibly.
async fn preflight(client: &Client, lease: &Lease) -> Result<(), LeaseManagerError> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &lease.namespace);
    let patch = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease.name},
    });
    api.patch(
        &lease.name,
        &PatchParams::apply(&format!("{FIELD_MANAGER}-preflight")).dry_run(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Waits until this replica holds the Lease (`Some`) or `shutdown` fires first (`None`).
/// Marks the replica as a ready standby while it waits. `client` must not be fenced (it renews
/// the Lease); `fence` opens once this replica leads.
pub async fn acquire(
    client: Client,
    lease: &Lease,
    health: &Health,
    fence: Fence,
    shutdown: Shutdown,
) -> Result<Option<Leadership>, LeaderError> {
    let err = |source| LeaderError::Lease {
        namespace: lease.namespace.clone(),
        name: lease.name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(RENEW_GRACE_SECS)
        .with_field_manager(format!("{FIELD_MANAGER}-{}", lease.identity))
        .with_create_mode(LeaseCreateMode::AutoCreate)
        .build()
        .await
        .map_err(err)?;
    preflight(&client, lease).await.map_err(err)?;
    let (mut state, task) = manager.watch().await;
    health.set_standby();
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting for the leadership");
    let became_leader = tokio::select! {
        changed = state.wait_for(|leader| *leader) => Some(changed.is_ok()),
        () = shutdown.wait() => None,
    };
    let Some(became_leader) = became_leader else {
        drop(state);
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, task).await;
        return Ok(None);
    };
    if !became_leader {
        return match task.await {
            Ok(Err(e)) => Err(err(e)),
            _ => Err(LeaderError::Lost {
                namespace: lease.namespace.clone(),
                name: lease.name.clone(),
            }),
        };
    }
    // The acquisition was a renewal that landed.
    fence.extend(Instant::now() + RENEW_DEADLINE);
    tracing::info!(lease = %lease.name, identity = %lease.identity, "became the leader");
    Ok(Some(Leadership {
        lease: lease.clone(),
        client,
        fence,
        state,
        task,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Option<&str>) -> k8s_openapi::api::coordination::v1::Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": holder, "renewTime": renewed}
        }))
        .unwrap()
    }

    #[test]
    fn only_our_own_renewal_counts() {
        let t = "2026-12-05T20:00:00.000000Z";
        let mine = our_renewal(&lease("me", Some(t)), "me").unwrap();
        assert_eq!(mine, t.parse::<Timestamp>().unwrap());
        assert_eq!(our_renewal(&lease("other", Some(t)), "me"), None);
        assert_eq!(our_renewal(&lease("me", None), "me"), None);
    }

    #[test]
    fn the_fence_passes_reads_and_passes_writes_only_until_the_renew_deadline() {
        let request = |method: http::Method| {
            http::Request::builder()
                .method(method)
                .uri("/apis/batch/v1/namespaces/n/jobs")
                .body(())
                .unwrap()
        };
        // Without leader election nothing is fenced.
        assert!(Fence::open().check(request(http::Method::POST)).is_ok());
        // A standby writes nothing, and reads everything (its watches).
        let fence = Fence::closed();
        assert!(fence.check(request(http::Method::GET)).is_ok());
        let refused = fence.check(request(http::Method::PATCH)).unwrap_err();
        assert_eq!(refused.method, http::Method::PATCH);
        assert!(
            refused
                .to_string()
                .contains("/apis/batch/v1/namespaces/n/jobs")
        );
        // Leading: writes pass until the deadline, which never moves back.
        let now = Instant::now();
        fence.extend(now + Duration::from_secs(60));
        fence.extend(now);
        assert!(fence.check(request(http::Method::POST)).is_ok());
        assert!(fence.allows(now + Duration::from_secs(59)));
        // Paused past it (the monotonic clock runs while the process is stopped): refused.
        assert!(!fence.allows(now + Duration::from_secs(60)));
        fence.close();
        assert!(fence.check(request(http::Method::DELETE)).is_err());
        assert!(fence.check(request(http::Method::GET)).is_ok());
    }

    #[test]
    fn a_confirmed_renewal_fences_writes_at_the_renew_deadline_after_it() {
        let renewed: Timestamp = "2026-12-05T20:00:00Z".parse().unwrap();
        let at = |secs: i64| renewed + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        let now = Instant::now();
        assert_eq!(fence_until(renewed, at(0), now), now + RENEW_DEADLINE);
        assert_eq!(
            fence_until(renewed, at(4), now),
            now + RENEW_DEADLINE - Duration::from_secs(4)
        );
        // Read back too late: no time left. A renewal ahead of the clock counts as made now.
        assert_eq!(fence_until(renewed, at(30), now), now);
        assert_eq!(fence_until(renewed, at(-3), now), now + RENEW_DEADLINE);
    }

    #[test]
    fn the_leader_gives_up_past_the_renew_deadline() {
        let renewed: Timestamp = "2026-12-05T20:00:00Z".parse().unwrap();
        let at = |secs: i64| renewed + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        // Renewals land every 5 s: a renewal up to the deadline old keeps the leadership.
        assert_eq!(must_give_up(Some(renewed), at(0)), None);
        assert_eq!(must_give_up(Some(renewed), at(10)), None);
        assert_eq!(
            must_give_up(Some(renewed), at(11)),
            Some(Duration::from_secs(11))
        );
        // A renewal time ahead of now (clock steps) is fresh; none known gives up.
        assert_eq!(must_give_up(Some(renewed), at(-3)), None);
        assert_eq!(must_give_up(None, at(0)), Some(Duration::ZERO));
        // It stops before the Lease can expire, and renewals come well within the deadline.
        assert!(RENEW_DEADLINE < Duration::from_secs(LEASE_DURATION_SECS));
        assert!(Duration::from_secs(LEASE_DURATION_SECS - RENEW_GRACE_SECS) < RENEW_DEADLINE);
    }
}
