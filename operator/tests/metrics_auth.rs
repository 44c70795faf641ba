//! `/metrics` over HTTPS with authentication and authorisation, against the real API server: the
//! real operator binary with `--metrics-secure-addr` (a self-signed certificate) answers a
//! ServiceAccount token whose user may `get` the non-resource URL `/metrics` with the metrics,
//! another ServiceAccount's token with 403, no token (or a bad one) with 401; the plain port keeps
//! `/readyz` and no longer serves `/metrics`.

mod common;

use common::*;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// A token of ServiceAccount `ns/name` (created if missing), from the TokenRequest API.
#[allow(clippy::expect_used)]
async fn token(env: &testenv::env::TestEnv, ns: &str, name: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(env.client(), ns);
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}
    }))
    .expect("a ServiceAccount");
    api.patch(
        name,
        &PatchParams::apply("llmjob-tests"),
        &Patch::Apply(&sa),
    )
    .await
    .expect("creating the ServiceAccount");
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}
    }))
    .expect("a TokenRequest");
    let issued: TokenRequest = api
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("requesting a token");
    issued.status.and_then(|s| s.token).expect("a token")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_metrics_need_a_token_allowed_to_get_metrics() {
    llmjob_operator::install_crypto_provider();
    let env = api_env().await;
    let ns = env
        .create_namespace("metrics-auth")
        .await
        .expect("namespace");

    // What a Prometheus ServiceAccount gets: `get` on the non-resource URL /metrics.
    let role_name = format!("{ns}-metrics-reader");
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role_name},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    }))
    .expect("a ClusterRole");
    Api::<ClusterRole>::all(env.client())
        .patch(
            &role_name,
            &PatchParams::apply("llmjob-tests"),
            &Patch::Apply(&role),
        )
        .await
        .expect("the ClusterRole");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": ns}]
    }))
    .expect("a ClusterRoleBinding");
    Api::<ClusterRoleBinding>::all(env.client())
        .patch(
            &role_name,
            &PatchParams::apply("llmjob-tests"),
            &Patch::Apply(&binding),
        )
        .await
        .expect("the ClusterRoleBinding");
    let allowed = token(env, &ns, "scraper").await;
    let other = token(env, &ns, "nobody").await;

    let operator = Operator::start(env, &ns, &["--metrics-secure-addr=127.0.0.1:0"]).await;
    let secure = operator.logged_addr("serving /metrics over HTTPS");
    let url = format!("https://{secure}/metrics");
    // The certificate is self-signed (no --metrics-cert-dir): the client does not verify it.
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTPS client");
    let get = |token: Option<String>| {
        let mut request = client.get(&url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move {
            let response = request.send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.unwrap_or_default()))
        }
    };

    let (status, body) = wait_until("the token with the ClusterRole to get the metrics", || {
        let get = get(Some(allowed.clone()));
        async move { get.await.filter(|(s, _)| *s == 200) }
    })
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("llmjob_operator_reconciles_total"), "{body}");
    assert_eq!(
        get(Some(other.clone())).await.map(|r| r.0),
        Some(403),
        "a token without the ClusterRole"
    );
    assert_eq!(get(None).await.map(|r| r.0), Some(401), "no token");
    assert_eq!(
        get(Some("not-a-token".to_owned())).await.map(|r| r.0),
        Some(401),
        "a token the API server does not authenticate"
    );
    // The probes stay plain; /metrics is not served there any more.
    assert_eq!(operator.get("/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(operator.get("/metrics").await.map(|r| r.0), Some(404));
    operator.stop().await;
}
