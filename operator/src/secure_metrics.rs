//! `/metrics` over HTTPS with authentication and authorisation, as controller-runtime's
//! `WithAuthenticationAndAuthorization` filter serves it: the client's bearer token is checked
//! with a `TokenReview`, and the user it names must be allowed `get` on the non-resource URL
//! `/metrics` (a `SubjectAccessReview`). No token or a token the API server rejects: 401; a user
//! without the permission: 403.
//!
//! Owns the TLS listener (a certificate from `--metrics-cert-dir`, `tls.crt` and `tls.key` as a
//! cert-manager or `kubernetes.io/tls` Secret holds them, else a self-signed one generated at
//! start) and the two reviews. Health endpoints stay on the plain server ([`crate::http`]) for
//! the kubelet's probes. Never logs a token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::http::{Server, metrics_response};
use crate::metrics::Metrics;

/// The path, and the non-resource URL a client must be allowed to `get`.
pub const METRICS_PATH: &str = "/metrics";

/// The secure metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SecureMetricsError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for HTTPS /metrics: {source} (set --metrics-secure-addr)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key could not be read.
    #[error(
        "cannot read the metrics serving certificate {path}: {reason} (--metrics-cert-dir must hold tls.crt and tls.key in PEM)"
    )]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No self-signed certificate could be generated.
    #[error("cannot generate a self-signed metrics certificate: {0}")]
    SelfSigned(String),
    /// rustls refused the certificate and key.
    #[error("the metrics serving certificate and key do not fit together: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the serving certificate comes from.
fn tls_config(cert_dir: Option<&Path>) -> Result<rustls::ServerConfig, SecureMetricsError> {
    let (certs, key) = match cert_dir {
        Some(dir) => {
            let cert_path = dir.join("tls.crt");
            let key_path = dir.join("tls.key");
            let certs = CertificateDer::pem_file_iter(&cert_path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| SecureMetricsError::Certificate {
                    path: cert_path.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(SecureMetricsError::Certificate {
                    path: cert_path,
                    reason: "no certificate in the file".to_owned(),
                });
            }
            let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                SecureMetricsError::Certificate {
                    path: key_path,
                    reason: e.to_string(),
                }
            })?;
            (certs, key)
        }
        None => {
            let names = vec!["localhost".to_owned(), "llmjob-operator-metrics".to_owned()];
            let generated = rcgen::generate_simple_self_signed(names)
                .map_err(|e| SecureMetricsError::SelfSigned(e.to_string()))?;
            let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
                .map_err(|e| SecureMetricsError::SelfSigned(e.to_owned()))?;
            (vec![generated.cert.der().clone()], key)
        }
    };
    Ok(rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

/// A TCP listener that hands out TLS streams (handshakes that fail or take longer than 10 s are
/// dropped).
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[derive(Clone)]
struct SecureState {
    client: Client,
    metrics: Arc<Metrics>,
}

/// The verdict on a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and allowed.
    Allowed,
    /// No token, or one the API server does not authenticate (401).
    Unauthenticated,
    /// Authenticated, not allowed `get` on `/metrics` (403).
    Forbidden,
}

/// The bearer token of an `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reviews `token` with the API server: who it is (TokenReview), and whether that user may `get`
/// `/metrics` (SubjectAccessReview).
pub async fn review(client: &Client, token: Option<&str>) -> Result<Verdict, kube::Error> {
    let Some(token) = token else {
        return Ok(Verdict::Unauthenticated);
    };
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = reviewed.status.unwrap_or_default();
    let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
        return Ok(Verdict::Unauthenticated);
    };
    let access = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(METRICS_PATH.to_owned()),
                verb: Some("get".to_owned()),
            }),
            resource_attributes: None,
        },
        ..SubjectAccessReview::default()
    };
    let decided = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &access)
        .await?;
    Ok(match decided.status {
        Some(s) if s.allowed => Verdict::Allowed,
        _ => Verdict::Forbidden,
    })
}

async fn secure_metrics(State(state): State<SecureState>, headers: HeaderMap) -> Response {
    match review(&state.client, bearer(&headers)).await {
        Ok(Verdict::Allowed) => metrics_response(&state.metrics),
        Ok(Verdict::Unauthenticated) => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
        Ok(Verdict::Forbidden) => (
            StatusCode::FORBIDDEN,
            "Forbidden: the user may not get the non-resource URL /metrics",
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "reviewing a metrics request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the token could not be reviewed",
            )
                .into_response()
        }
    }
}

/// Binds `addr` and serves `/metrics` over HTTPS in the background, each request reviewed with
/// `client`. `cert_dir` holds `tls.crt` and `tls.key`; `None` generates a self-signed
/// certificate.
pub async fn serve(
    addr: SocketAddr,
    cert_dir: Option<&Path>,
    client: Client,
    metrics: Arc<Metrics>,
) -> Result<Server, SecureMetricsError> {
    let config = tls_config(cert_dir)?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| SecureMetricsError::Listen { addr, source })?;
    let local = tcp
        .local_addr()
        .map_err(|source| SecureMetricsError::Listen { addr, source })?;
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let app = Router::new()
        .route(METRICS_PATH, get(secure_metrics))
        .with_state(SecureState { client, metrics });
    Ok(Server::spawn(local, listener, app, "HTTPS metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn certificates_from_a_directory_or_self_signed() {
        crate::install_crypto_provider();
        assert!(tls_config(None).is_ok());
        let dir = std::env::temp_dir().join(format!("llmjob-metrics-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        std::fs::write(dir.join("tls.crt"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), generated.signing_key.serialize_pem()).unwrap();
        assert!(tls_config(Some(&dir)).is_ok());
        std::fs::write(dir.join("tls.key"), "not a key").unwrap();
        let err = tls_config(Some(&dir)).err().unwrap().to_string();
        assert!(
            err.contains("tls.key") && err.contains("--metrics-cert-dir"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
