//! `llmjob-operator check`: a one-shot health check of an installed operator, run by the Helm
//! chart's `helm test` pod from the operator's own image (so the test needs no other image).
//!
//! It asks the Kubernetes API, as the test pod's ServiceAccount, two questions: is the LlmJob
//! CRD served (the same list the operator makes at start, [`controller::check_crd`]), and does
//! the operator's Deployment have a ready replica (a replica is ready when its readiness probe,
//! `/readyz`, answers: caches synced, or a leader-election standby). It never writes anything.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};

use crate::controller;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No Kubernetes client could be configured.
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// LlmJobs cannot be listed: the CRD is missing, or the check's RBAC is.
    #[error(
        "cannot list LlmJobs in {namespace} ({source}): is the CRD llmjobs.llmjob.dev installed?"
    )]
    Crd {
        /// The namespace listed.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The operator's Deployment cannot be read.
    #[error("cannot read Deployment {namespace}/{name}: {source}")]
    Deployment {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// No replica of the operator is ready.
    #[error(
        "Deployment {namespace}/{name} has no ready replica ({replicas} wanted): see \
         `kubectl -n {namespace} describe deployment {name}` and the operator's log"
    )]
    NotReady {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Replicas it wants.
        replicas: i32,
    },
}

/// Checks the operator of Deployment `namespace/name`; on success, says what was checked.
pub async fn run(namespace: &str, name: &str) -> Result<String, CheckError> {
    crate::install_crypto_provider();
    let client = Client::try_default().await.map_err(CheckError::Client)?;
    controller::check_crd(&client, Some(&[namespace.to_owned()]))
        .await
        .map_err(|source| CheckError::Crd {
            namespace: namespace.to_owned(),
            source,
        })?;
    let deployments: Api<Deployment> = Api::namespaced(client, namespace);
    let deployment = deployments
        .get(name)
        .await
        .map_err(|source| CheckError::Deployment {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready < 1 {
        return Err(CheckError::NotReady {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            replicas,
        });
    }
    Ok(format!(
        "ok: the LlmJob CRD is served and Deployment {namespace}/{name} has {ready}/{replicas} ready replicas"
    ))
}
