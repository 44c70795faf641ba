//! The pod's service account identity, as a kubeconfig file.
//!
//! A real kubelet mounts a projected token at `/var/run/secrets/kubernetes.io/serviceaccount` and
//! the container runtime sets `KUBERNETES_SERVICE_HOST/PORT`, which in-cluster clients combine.
//! Processes on the host can neither see that path nor reach a Service IP, so instead the kubelet
//! module requests a token bound to the pod (TokenRequest, the API server's default audience),
//! writes a kubeconfig (server URL, cluster CA, token, the pod's namespace) into the pod's
//! directory and points `KUBECONFIG` at it. `KUBERNETES_SERVICE_HOST` is deliberately *not* set:
//! `kube::Client::try_default()` would then try the in-cluster files first and fail.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};

/// Lifetime asked for the token (the tests never outlive it; it is not refreshed).
const TOKEN_SECONDS: i64 = 24 * 3600;

/// Whether the pod gets a token: `spec.automountServiceAccountToken`, else the ServiceAccount's
/// own setting, else yes.
pub(crate) fn wants_token(
    pod_setting: Option<bool>,
    service_account_setting: Option<bool>,
) -> bool {
    pod_setting.or(service_account_setting).unwrap_or(true)
}

/// The kubeconfig text (JSON, which every kubeconfig reader accepts as YAML).
pub(crate) fn kubeconfig(
    server: &str,
    ca_pem: &str,
    namespace: &str,
    user: &str,
    token: &str,
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": user, "namespace": namespace}}],
        "current-context": "testenv",
    });
    // A `serde_json::Value` always serializes.
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// Requests a token for the pod's service account and writes `<pod_dir>/kubeconfig`. `Ok(None)`
/// when the pod has no service account or opted out. The error is a status message.
pub(crate) async fn service_account_kubeconfig(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    server: &str,
    ca_pem: &str,
) -> Result<Option<PathBuf>, String> {
    let spec = pod.spec.as_ref();
    let Some(sa_name) = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    let pod_setting = spec.and_then(|s| s.automount_service_account_token);
    if pod_setting == Some(false) {
        return Ok(None);
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let account = accounts
        .get_opt(&sa_name)
        .await
        .map_err(|e| format!("cannot read serviceaccount \"{sa_name}\": {e}"))?
        .ok_or_else(|| format!("serviceaccount \"{sa_name}\" not found"))?;
    if !wants_token(pod_setting, account.automount_service_account_token) {
        return Ok(None);
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let response: TokenRequest = accounts
        .create_subresource("token", &sa_name, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("cannot request a token for serviceaccount \"{sa_name}\": {e}"))?;
    let token = response.status.and_then(|s| s.token).ok_or_else(|| {
        format!("the token request for serviceaccount \"{sa_name}\" returned no token")
    })?;
    let text = kubeconfig(
        server,
        ca_pem,
        &namespace,
        &format!("system:serviceaccount:{namespace}:{sa_name}"),
        &token,
    );
    let path = pod_dir.join("kubeconfig");
    write_private(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Some(path))
}

/// Writes `text` to `path` with mode 0600.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_out_rules() {
        assert!(wants_token(None, None));
        assert!(!wants_token(None, Some(false)));
        assert!(wants_token(Some(true), Some(false)));
        assert!(!wants_token(Some(false), Some(true)));
    }

    #[test]
    fn kubeconfig_parses() {
        let text = kubeconfig(
            "https://127.0.0.1:6443",
            "PEM",
            "ns1",
            "system:serviceaccount:ns1:sa",
            "tok",
        );
        let parsed: kube::config::Kubeconfig = serde_norway::from_str(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("testenv"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("UEVN"));
        let context = parsed.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.namespace.as_deref(), Some("ns1"));
    }
}
