//! The LlmJob CRD on a test control plane: applied from the crds crate's generated definition,
//! and waited for until the API server serves it.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::wait::{self, TimedOut};

/// The CRD's name.
pub const NAME: &str = "llmjobs.llmjob.dev";

/// How long the API server may take to establish the CRD.
pub const ESTABLISH_WAIT: Duration = Duration::from_secs(60);

/// Why the CRD could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The server-side apply was refused.
    #[error("cannot apply the LlmJob CRD: {0}")]
    Apply(#[source] kube::Error),
    /// Reading it back failed.
    #[error("cannot read the LlmJob CRD back: {0}")]
    Read(#[source] kube::Error),
    /// It was not `Established` in time.
    #[error(transparent)]
    NotEstablished(#[from] TimedOut),
}

/// Applies the generated LlmJob CRD (`llmjob_crds::v1alpha1::crd()`) with server-side apply as
/// `manager`, and waits until it is `Established`.
pub async fn install_llmjob_crd(client: &Client, manager: &str) -> Result<(), CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        NAME,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&llmjob_crds::v1alpha1::crd()),
    )
    .await
    .map_err(CrdError::Apply)?;
    let established = wait::until_ok_or_abort(
        "the LlmJob CRD to be Established",
        ESTABLISH_WAIT,
        || async {
            let crd = api.get(NAME).await.map_err(CrdError::Read)?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok::<_, CrdError>(if established { Ok(()) } else { Err("not yet") })
        },
    )
    .await?;
    Ok(established?)
}
