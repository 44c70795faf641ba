//! A fault-injecting HTTPS proxy between a client (the operator) and kube-apiserver, for the
//! fault suite (docs/reliability.md).
//!
//! The client's kubeconfig ([`FaultProxy::kubeconfig`]) points at the proxy: the proxy terminates
//! TLS with a serving certificate from the test control plane's CA ([`crate::certs`]) and
//! re-originates TLS to the API server with the admin client certificate, the identity the
//! tests' operators use. Requests pass through unchanged (hyper on both sides: no hand-written
//! HTTP) unless a [`Rule`] matches them (by verb, resource and path pattern); the first active
//! matching rule's [`Fault`] then applies: an error response (`429` with `Retry-After`, `500`),
//! a dropped connection before the request is forwarded or after it was (the response lost), a
//! watch cut after a while, or a request held until the test releases it. Rules are added and
//! removed while the client runs. Every request is recorded ([`FaultProxy::requests`]) with its
//! verb and resource, so tests count "extra requests under errors" and check when retries came.
//!
//! It serves HTTP/1.1 only (ALPN `http/1.1`): kube-rs speaks it, and a watch is one long
//! chunked response. It must not decide what a test asserts, nor start anything but its own
//! listener task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::certs::{self, CertUsage, Pki};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    /// The serving certificate could not be issued.
    #[error("cannot issue the proxy's serving certificate: {0}")]
    Certs(#[from] certs::CertsError),
    /// A PEM certificate or key could not be read.
    #[error("cannot read the {what} (PEM): {source}")]
    Pem {
        /// Which one.
        what: &'static str,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the TLS configuration.
    #[error("cannot configure TLS ({what}): {source}")]
    Tls {
        /// Server or client side.
        what: &'static str,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The upstream URL is not an `https://host:port` URL.
    #[error("the upstream URL {0:?} is not https://host:port")]
    Upstream(String),
    /// The listener could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The kubeconfig could not be rendered.
    #[error("cannot render the proxy's kubeconfig: {0}")]
    Kubeconfig(#[source] serde_norway::Error),
    /// The kubeconfig could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Which requests a [`Rule`] applies to; every field left unset matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    verb: Option<String>,
    resource: Option<String>,
    path: Option<String>,
}

impl Match {
    /// Any request.
    pub fn any() -> Self {
        Match::default()
    }

    /// Requests of Kubernetes verb `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`) on `resource` (plural, with its subresource:
    /// `llmjobs/status`; `*` for any).
    pub fn verb(verb: &str, resource: &str) -> Self {
        Match {
            verb: Some(verb.to_owned()),
            resource: (resource != "*").then(|| resource.to_owned()),
            path: None,
        }
    }

    /// Also requires the path to match `pattern`, segment by segment, where a segment `*`
    /// matches any one segment: `/apis/batch/v1/namespaces/*/jobs/*`.
    pub fn path(mut self, pattern: &str) -> Self {
        self.path = Some(pattern.to_owned());
        self
    }

    fn matches(&self, request: &RequestInfo) -> bool {
        self.verb.as_ref().is_none_or(|v| *v == request.verb)
            && self
                .resource
                .as_ref()
                .is_none_or(|r| *r == request.resource)
            && self
                .path
                .as_ref()
                .is_none_or(|p| path_matches(p, &request.path))
    }
}

/// `pattern` against `path`, one segment at a time (`*` matches any one segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
}

/// What the proxy does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers `code` (a Kubernetes `Status` body, as the API server writes one) without
    /// forwarding; with `retry_after`, also the `Retry-After` header and
    /// `details.retryAfterSeconds` (as the API server's 429s carry).
    Respond {
        /// The HTTP status code (429, 500, 503...).
        code: u16,
        /// Seconds the client is asked to wait.
        retry_after: Option<u32>,
    },
    /// Closes the connection without forwarding the request: the API server never sees it.
    DropRequest,
    /// Forwards the request, reads the whole response, then closes the connection without
    /// answering: the API server made the change, the client never learns it.
    DropResponse,
    /// Forwards the request and streams the response, then cuts the connection `after` that
    /// long, mid-body (for watches: a watch that breaks).
    CutAfter(Duration),
    /// Holds the request until [`FaultProxy::release_held`]; then forwards it or drops the
    /// connection as the release says.
    Hold,
}

impl Fault {
    /// `429 Too Many Requests` with `Retry-After: seconds`.
    pub fn too_many_requests(seconds: u32) -> Self {
        Fault::Respond {
            code: 429,
            retry_after: Some(seconds),
        }
    }

    /// `500 Internal Server Error`.
    pub fn internal_error() -> Self {
        Fault::Respond {
            code: 500,
            retry_after: None,
        }
    }

    fn name(&self) -> String {
        match self {
            Fault::Respond { code, .. } => code.to_string(),
            Fault::DropRequest => "drop-request".into(),
            Fault::DropResponse => "drop-response".into(),
            Fault::CutAfter(_) => "cut".into(),
            Fault::Hold => "hold".into(),
        }
    }
}

/// A fault for the requests a [`Match`] selects, at most `limit` times (unlimited by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    matcher: Match,
    fault: Fault,
    limit: Option<u64>,
}

impl Rule {
    /// `fault` for every request `matcher` selects, until the rule is removed.
    pub fn new(matcher: Match, fault: Fault) -> Self {
        Rule {
            matcher,
            fault,
            limit: None,
        }
    }

    /// Applies to the first `n` matching requests only (later ones pass).
    pub fn times(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }
}

/// Identifies an added rule, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// What happens to held requests when they are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Forward them to the API server (late).
    Forward,
    /// Close their connections without forwarding: the API server never sees them.
    Drop,
}

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// When it arrived.
    pub at: Instant,
    /// The HTTP method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), as the API server's audit log names it.
    pub verb: String,
    /// The resource, with its subresource (`llmjobs/status`); for a non-resource path, the path.
    pub resource: String,
    /// The fault applied to it (`429`, `500`, `drop-request`, `drop-response`, `cut`, `hold`),
    /// if any.
    pub fault: Option<String>,
}

struct ActiveRule {
    id: RuleId,
    rule: Rule,
    applied: u64,
}

#[derive(Default)]
struct State {
    rules: Vec<ActiveRule>,
    requests: Vec<RequestInfo>,
    held: Vec<(RequestInfo, oneshot::Sender<Release>)>,
}

struct Shared {
    state: Mutex<State>,
    next_rule: AtomicU64,
    upstream: Uri,
    client: HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running proxy; dropping it stops the listener (open connections end with their tasks).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca_pem: String,
    pki: Pki,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts the proxy on `127.0.0.1:<free port>`, forwarding to `upstream`
    /// (`https://host:port`, the API server of the control plane whose `pki` this is). Must be
    /// called inside a tokio runtime, which then runs it.
    pub async fn start(upstream: &str, pki: &Pki) -> Result<FaultProxy, FaultProxyError> {
        let upstream_uri: Uri = upstream
            .parse()
            .map_err(|_| FaultProxyError::Upstream(upstream.to_owned()))?;
        if upstream_uri.scheme_str() != Some("https") || upstream_uri.authority().is_none() {
            return Err(FaultProxyError::Upstream(upstream.to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pem_err = |what| move |source| FaultProxyError::Pem { what, source };
        let tls_err = |what| move |source| FaultProxyError::Tls { what, source };

        // Serving side: a certificate of the test CA for the loopback address.
        let serving = pki.issue(
            "faultproxy",
            None,
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
            CertUsage::Server,
        )?;
        let serving_chain = vec![
            CertificateDer::from_pem_slice(serving.cert_pem.as_bytes())
                .map_err(pem_err("serving certificate"))?,
        ];
        let serving_key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
            .map_err(pem_err("serving key"))?;
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err("server"))?
            .with_no_client_auth()
            .with_single_cert(serving_chain, serving_key)
            .map_err(tls_err("server"))?;
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

        // Upstream side: the test CA as the only root, the admin client certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes())
                    .map_err(pem_err("CA certificate"))?,
            )
            .map_err(tls_err("upstream roots"))?;
        let admin_chain = vec![
            CertificateDer::from_pem_slice(pki.admin.cert_pem.as_bytes())
                .map_err(pem_err("admin certificate"))?,
        ];
        let admin_key = PrivateKeyDer::from_pem_slice(pki.admin.key_pem.as_bytes())
            .map_err(pem_err("admin key"))?;
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err("client"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(admin_chain, admin_key)
            .map_err(tls_err("client"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config)
            .https_only()
            .enable_http1()
            .build();
        let client = HttpClient::builder(TokioExecutor::new()).build(connector);

        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(FaultProxyError::Bind)?;
        let addr = listener.local_addr().map_err(FaultProxyError::Bind)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            next_rule: AtomicU64::new(1),
            upstream: upstream_uri,
            client,
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            ca_pem: pki.ca.cert_pem.clone(),
            pki: pki.clone(),
            task,
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// An admin kubeconfig (the test CA, the admin client certificate) whose server is the proxy.
    pub fn kubeconfig(&self) -> Result<String, FaultProxyError> {
        crate::cluster::render_client_kubeconfig(
            &self.url(),
            &self.ca_pem,
            certs::ADMIN_USER,
            &self.pki.admin,
        )
        .map_err(FaultProxyError::Kubeconfig)
    }

    /// Writes [`kubeconfig`](Self::kubeconfig) to `path` (mode 0600: it holds a private key).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> Result<(), FaultProxyError> {
        let yaml = self.kubeconfig()?;
        certs::write_pem(path, &yaml, true).map_err(|e| match e {
            certs::CertsError::Write { path, source } => FaultProxyError::Write { path, source },
            other => FaultProxyError::Certs(other),
        })
    }

    /// An admin kube client that reaches the API server through the proxy. Must be called
    /// inside a tokio runtime (the client is bound to it).
    pub async fn client(&self) -> Result<kube::Client, crate::cluster::ClusterError> {
        let yaml = crate::cluster::render_client_kubeconfig(
            &self.url(),
            &self.ca_pem,
            certs::ADMIN_USER,
            &self.pki.admin,
        )?;
        crate::cluster::client_from_kubeconfig(
            &yaml,
            std::path::Path::new("<faultproxy>"),
            &self.url(),
        )
        .await
    }

    /// Adds a rule; it applies from the next request on. Rules are tried in the order added.
    pub fn add(&self, rule: Rule) -> RuleId {
        let id = RuleId(self.shared.next_rule.fetch_add(1, Ordering::Relaxed));
        self.shared.state().rules.push(ActiveRule {
            id,
            rule,
            applied: 0,
        });
        id
    }

    /// Removes a rule; requests it holds stay held until [`release_held`](Self::release_held).
    pub fn remove(&self, id: RuleId) {
        self.shared.state().rules.retain(|r| r.id != id);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.shared.state().rules.clear();
    }

    /// The requests held now.
    pub fn held(&self) -> Vec<RequestInfo> {
        self.shared
            .state()
            .held
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Releases every held request; returns how many there were.
    pub fn release_held(&self, release: Release) -> usize {
        let held = std::mem::take(&mut self.shared.state().held);
        let n = held.len();
        for (_, tx) in held {
            // The client may have gone: then nobody waits for the answer.
            let _ = tx.send(release);
        }
        n
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.state().requests.clone()
    }

    /// How many requests of `verb` on `resource` were received.
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.release_held(Release::Drop);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "faultproxy: accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(error = %e, "faultproxy: TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            // An injected drop ends the connection with an error: expected, not logged loudly.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, "faultproxy: connection ended");
            }
        });
    }
}

/// The request's Kubernetes verb and resource, from its method, path and query.
fn classify(method: &Method, path: &str, query: Option<&str>) -> (String, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, resource, tail @ ..] => {
            let mut v = vec![*resource];
            v.extend_from_slice(tail);
            v
        }
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => (path.to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => method.as_str(),
    };
    (verb.to_lowercase(), resource)
}

/// The error a service returns to make hyper close the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("faultproxy: connection dropped on purpose ({0})")]
struct Dropped(&'static str);

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query());
    let mut info = RequestInfo {
        at: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        verb,
        resource,
        fault: None,
    };
    let fault = {
        let mut state = shared.state();
        let fault = state
            .rules
            .iter_mut()
            .find(|r| r.rule.limit.is_none_or(|l| r.applied < l) && r.rule.matcher.matches(&info))
            .map(|r| {
                r.applied += 1;
                r.rule.fault.clone()
            });
        info.fault = fault.as_ref().map(Fault::name);
        state.requests.push(info.clone());
        fault
    };
    match fault {
        None => forward(&shared, req).await,
        Some(Fault::Respond { code, retry_after }) => Ok(status_response(code, retry_after)),
        Some(Fault::DropRequest) => Err(Dropped("before forwarding").into()),
        Some(Fault::DropResponse) => {
            let response = forward(&shared, req).await?;
            // The whole answer is read: the API server has finished the request.
            let _ = response.into_body().collect().await;
            Err(Dropped("response lost").into())
        }
        Some(Fault::CutAfter(after)) => {
            let response = forward(&shared, req).await?;
            let (parts, body) = response.into_parts();
            let deadline = tokio::time::sleep(after);
            let frames = BodyStream::new(body)
                .take_until(deadline)
                .chain(futures::stream::once(async {
                    Err::<Frame<Bytes>, BoxError>(Dropped("cut mid-response").into())
                }));
            Ok(Response::from_parts(
                parts,
                BodyExt::boxed(StreamBody::new(frames)),
            ))
        }
        Some(Fault::Hold) => {
            let (tx, rx) = oneshot::channel();
            shared.state().held.push((info, tx));
            match rx.await {
                Ok(Release::Forward) => forward(&shared, req).await,
                Ok(Release::Drop) | Err(_) => Err(Dropped("held, then dropped").into()),
            }
        }
    }
}

/// Sends the request on to the API server and streams its answer back.
async fn forward(shared: &Shared, req: Request<Incoming>) -> Result<Response<ProxyBody>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let mut uri = shared.upstream.clone().into_parts();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = Uri::from_parts(uri)?;
    // The client named the proxy; hyper names the API server from the URI.
    parts.headers.remove(http::header::HOST);
    let response = shared
        .client
        .request(Request::from_parts(parts, body))
        .await?;
    Ok(response.map(|b| b.map_err(BoxError::from).boxed()))
}

/// A Kubernetes `Status` answer, as the API server writes one.
fn status_response(code: u16, retry_after: Option<u32>) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = match code {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let mut body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("faultproxy: injected {code}"),
        "reason": reason,
        "code": code,
    });
    if let Some(seconds) = retry_after {
        body["details"] = serde_json::json!({ "retryAfterSeconds": seconds });
    }
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_as_the_api_server_would() {
        let c = |m: Method, p: &str, q: Option<&str>| {
            let (v, r) = classify(&m, p, q);
            format!("{v} {r}")
        };
        let lj = "/apis/llmjob.dev/v1alpha1/namespaces/ns/llmjobs";
        assert_eq!(c(Method::GET, lj, None), "list llmjobs");
        assert_eq!(c(Method::GET, lj, Some("watch=true&rv=1")), "watch llmjobs");
        assert_eq!(c(Method::GET, &format!("{lj}/a"), None), "get llmjobs");
        assert_eq!(
            c(Method::PATCH, &format!("{lj}/a/status"), None),
            "patch llmjobs/status"
        );
        assert_eq!(
            c(Method::PATCH, "/apis/batch/v1/namespaces/ns/jobs/a", None),
            "patch jobs"
        );
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces/ns/pods", None),
            "create pods"
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/ns", None),
            "get namespaces"
        );
        assert_eq!(c(Method::GET, "/api/v1/nodes", None), "list nodes");
        assert_eq!(c(Method::GET, "/version", None), "list /version");
    }

    #[test]
    fn rules_match_by_verb_resource_and_path() {
        let info = |verb: &str, resource: &str, path: &str| RequestInfo {
            at: Instant::now(),
            method: Method::PATCH,
            path: path.into(),
            verb: verb.into(),
            resource: resource.into(),
            fault: None,
        };
        let status = info(
            "patch",
            "llmjobs/status",
            "/apis/llmjob.dev/v1alpha1/namespaces/n/llmjobs/a/status",
        );
        assert!(Match::any().matches(&status));
        assert!(Match::verb("patch", "llmjobs/status").matches(&status));
        assert!(Match::verb("patch", "*").matches(&status));
        assert!(!Match::verb("patch", "jobs").matches(&status));
        assert!(!Match::verb("get", "llmjobs/status").matches(&status));
        let only_a = "/apis/llmjob.dev/v1alpha1/namespaces/*/llmjobs/a/status";
        assert!(Match::any().path(only_a).matches(&status));
        let only_b = "/apis/llmjob.dev/v1alpha1/namespaces/*/llmjobs/b/status";
        assert!(!Match::any().path(only_b).matches(&status));
        assert!(!Match::any().path("/apis/*").matches(&status));
    }

    #[test]
    fn injected_errors_look_like_the_api_servers() {
        let r = status_response(429, Some(3));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "3");
        let r = status_response(500, None);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!r.headers().contains_key(http::header::RETRY_AFTER));
    }
}
