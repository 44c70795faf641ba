//! Leader election through a `coordination.k8s.io/v1` Lease (`--leader-elect=true`), with
//! [`kube_lease_manager`]: only the holder runs the controllers.
//!
//! A replica that loses the Lease stops with an error (and its pod restarts), as
//! controller-runtime does: continuing could let two replicas create Jobs at once. The Lease is
//! released on a clean shutdown, so a successor takes over without waiting for it to expire.

use std::time::Duration;

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
/// Seconds before expiry at which the holder renews (so renewal happens every 10 s).
pub const RENEW_GRACE_SECS: u64 = 5;
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
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Resolves when the Lease is lost (never while it is held).
    pub async fn lost(&mut self) -> LeaderError {
        // An error means the manager's task ended, which also means the Lease is not renewed.
        let _ = self.state.wait_for(|leader| !*leader).await;
        LeaderError::Lost {
            namespace: self.lease.namespace.clone(),
            name: self.lease.name.clone(),
        }
    }

    /// Releases the Lease (closing the channel makes the manager release it and stop).
    pub async fn release(self) {
        let Leadership { lease, state, task } = self;
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
/// Marks the replica as a ready standby while it waits.
pub async fn acquire(
    client: Client,
    lease: &Lease,
    health: &Health,
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
    tracing::info!(lease = %lease.name, identity = %lease.identity, "became the leader");
    Ok(Some(Leadership {
        lease: lease.clone(),
        state,
        task,
    }))
}
