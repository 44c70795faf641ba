//! The HTTP server: binds, routes, answers from the fixture catalog, injects faults, records
//! requests and stops gracefully. Choosing a fixture is [`crate::select`]'s job, error texts are
//! [`crate::openai_error`]'s; this module only wires them to HTTP.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use crate::fixtures::{Catalog, FIXTURE_NAMES, Fixture, FixtureBody, catalog};
use crate::record::{RecordedRequest, presented_key, redacted_headers};
use crate::{Faults, Hostile, ReplayConfig, ReplayError, Scenario, openai_error, select};

/// How long a stopping server lets open responses finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Request bodies up to this size are accepted (images may be sent inline as base64).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A running replay server.
///
/// It runs on a thread of its own with its own single-threaded tokio runtime, so it keeps
/// answering whatever the caller does: a `#[tokio::test]` on the current-thread runtime that
/// blocks on a child process, a plain `#[test]` (see [`start_blocking`](Self::start_blocking)),
/// or another runtime altogether.
///
/// It stops when [`shutdown`](ReplayServer::shutdown) is awaited or when dropped: it stops
/// accepting at once and lets open responses finish (at most 10 s, then they are cut); `drop`
/// does not wait for that.
#[derive(Debug)]
pub struct ReplayServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: Option<oneshot::Receiver<std::io::Result<()>>>,
}

impl ReplayServer {
    /// Binds `config.addr` and starts serving.
    ///
    /// Fails when the address cannot be bound, the fixed fixture is unknown, or the fault status
    /// is not in 400..=599. The server runs on its own thread (see [`ReplayServer`]), so this
    /// needs no particular runtime; it is `async` for symmetry with
    /// [`shutdown`](Self::shutdown).
    pub async fn start(config: ReplayConfig) -> Result<ReplayServer, ReplayError> {
        ReplayServer::start_blocking(config)
    }

    /// [`start`](Self::start) for callers without an async context (plain `#[test]`s). It only
    /// binds a socket and spawns a thread, so it is also fine to call from async code.
    pub fn start_blocking(config: ReplayConfig) -> Result<ReplayServer, ReplayError> {
        validate_faults(&config.faults)?;
        let catalog = catalog()?;
        let fixed = match &config.scenario {
            Scenario::Auto => None,
            Scenario::Fixed(name) => {
                Some(
                    catalog
                        .get(name)
                        .ok_or_else(|| ReplayError::UnknownFixture {
                            name: name.clone(),
                            known: FIXTURE_NAMES.join(", "),
                        })?,
                )
            }
        };
        let bind_error = |source| ReplayError::Bind {
            addr: config.addr,
            source,
        };
        let listener = std::net::TcpListener::bind(config.addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(ReplayError::LocalAddr)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ReplayError::Runtime)?;
        let shared = Arc::new(Shared {
            catalog,
            api_key: config.api_key,
            fixed,
            hostile: config.hostile,
            delay: config.delay,
            chunk_delay: config.chunk_delay,
            faults: Mutex::new(FaultState {
                faults: config.faults,
                failed: 0,
                after_first: 0,
            }),
            requests: Mutex::new(Vec::new()),
            next_request_id: AtomicU64::new(1),
        });
        let app = router(Arc::clone(&shared));
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("openai-replay {addr}"))
            .spawn(move || {
                let result = runtime.block_on(serve(listener, app, stop_rx));
                // The owner may be gone (dropped without `shutdown`): nobody to tell then.
                let _ = done_tx.send(result);
            })
            .map_err(ReplayError::Runtime)?;
        tracing::debug!(%addr, "openai-replay started");
        Ok(ReplayServer {
            addr,
            shared,
            stop,
            done: Some(done),
        })
    }

    /// The address the server listens on (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL of this server, e.g. `http://127.0.0.1:41234/v1`. An unspecified
    /// listening address (`0.0.0.0`, `::`) is given as the loopback address.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// Every request answered so far (except `GET /healthz`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Replaces the injected faults; the count of failed requests starts again from zero.
    pub fn set_faults(&self, faults: Faults) -> Result<(), ReplayError> {
        validate_faults(&faults)?;
        let mut state = lock(&self.shared.faults);
        state.faults = faults;
        state.failed = 0;
        state.after_first = 0;
        Ok(())
    }

    /// Stops accepting connections, lets open responses finish (at most 10 s, then they are cut)
    /// and waits until the server has ended and its port is closed.
    pub async fn shutdown(mut self) -> Result<(), ReplayError> {
        self.stop.send_replace(true);
        let Some(done) = self.done.take() else {
            return Ok(());
        };
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ReplayError::Serve(e)),
            Err(_) => Err(ReplayError::Task(
                "the server thread ended without reporting (it panicked)".to_owned(),
            )),
        }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Resolves once a stop was asked for (or the owner is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender was dropped: stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves until stopped, then lets open responses finish for at most [`SHUTDOWN_GRACE`].
async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let graceful = axum::serve(listener, app).with_graceful_shutdown(stopped(stop.clone()));
    let deadline = async {
        stopped(stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("open responses still running {SHUTDOWN_GRACE:?} after the stop; cut");
    };
    tokio::select! {
        result = graceful => result,
        () = deadline => Ok(()),
    }
}

fn validate_faults(faults: &Faults) -> Result<(), ReplayError> {
    if (400..=599).contains(&faults.status) {
        Ok(())
    } else {
        Err(ReplayError::InvalidFaultStatus(faults.status))
    }
}

/// Locks a mutex, ignoring poisoning: the guarded data (a counter, a log) stays consistent even
/// if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct FaultState {
    faults: Faults,
    /// Requests failed of the first `fail_first`.
    failed: u32,
    /// Requests seen after the first `fail_first` (every `fail_every`-th of them fails).
    after_first: u32,
}

/// State shared by the handlers.
#[derive(Debug)]
struct Shared {
    catalog: &'static Catalog,
    api_key: Option<String>,
    fixed: Option<&'static Fixture>,
    hostile: Option<Hostile>,
    delay: Duration,
    chunk_delay: Duration,
    faults: Mutex<FaultState>,
    requests: Mutex<Vec<RecordedRequest>>,
    next_request_id: AtomicU64,
}

/// What to answer.
enum Reply {
    /// A recorded exchange.
    Fixture(&'static Fixture),
    /// A JSON body written here (errors, model lists).
    Json {
        status: StatusCode,
        body: String,
        headers: HeaderMap,
    },
    /// A misbehaviour, answered as [`Hostile::respond`] builds it.
    Hostile(Response),
}

impl Reply {
    fn json(status: StatusCode, body: String) -> Reply {
        Reply::Json {
            status,
            body,
            headers: HeaderMap::new(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Reply::Fixture(f) => f.status,
            Reply::Json { status, .. } => *status,
            Reply::Hostile(response) => response.status(),
        }
    }

    fn fixture(&self) -> Option<&'static str> {
        match self {
            Reply::Fixture(f) => Some(f.name),
            Reply::Json { .. } | Reply::Hostile(_) => None,
        }
    }
}

impl Shared {
    /// The 401 reply when a key is required and the request does not carry it (as a bearer
    /// token, or in Azure OpenAI's `api-key` header).
    fn reject_unauthorized(&self, headers: &HeaderMap) -> Option<Reply> {
        let expected = self.api_key.as_deref()?;
        let presented = presented_key(headers);
        (presented != Some(expected)).then(|| {
            Reply::json(
                StatusCode::UNAUTHORIZED,
                openai_error::invalid_api_key(presented),
            )
        })
    }

    /// The injected fault for this request, if one is still due.
    fn take_fault(&self) -> Option<Faults> {
        let mut state = lock(&self.faults);
        if state.failed < state.faults.fail_first {
            state.failed += 1;
            return Some(state.faults);
        }
        let every = state.faults.fail_every;
        if every == 0 {
            return None;
        }
        state.after_first += 1;
        state
            .after_first
            .is_multiple_of(every)
            .then_some(state.faults)
    }

    fn chat_reply(&self, headers: &HeaderMap, body: Option<&Value>) -> Reply {
        if let Some(reply) = self.reject_unauthorized(headers) {
            return reply;
        }
        if let Some(faults) = self.take_fault() {
            return fault_reply(&faults);
        }
        if let Some(hostile) = &self.hostile {
            return Reply::Hostile(hostile.respond(body, headers));
        }
        let Some(body) = body.filter(|b| b.is_object()) else {
            return Reply::json(StatusCode::BAD_REQUEST, openai_error::invalid_json());
        };
        if !body.get("model").is_some_and(Value::is_string) {
            return Reply::json(StatusCode::BAD_REQUEST, openai_error::missing_model());
        }
        let fixture = match self.fixed {
            Some(fixture) => Some(fixture),
            None => self
                .catalog
                .get(select::auto_fixture(body, &self.catalog.not_found_models)),
        };
        match fixture {
            Some(fixture) => Reply::Fixture(fixture),
            // Unreachable: every name `auto_fixture` returns is in the catalog (unit-tested).
            None => Reply::json(StatusCode::INTERNAL_SERVER_ERROR, openai_error::fault(500)),
        }
    }

    fn record(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Option<Value>,
        reply: &Reply,
    ) {
        let status = reply.status().as_u16();
        let fixture = reply.fixture();
        tracing::info!(
            method = %method,
            path = uri.path(),
            status,
            fixture = fixture.unwrap_or("-"),
            "request"
        );
        lock(&self.requests).push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: redacted_headers(headers),
            body,
            fixture: fixture.map(str::to_owned),
            status,
            received: std::time::Instant::now(),
        });
    }

    fn request_id(&self) -> HeaderValue {
        let n = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("req_{n:032x}"))
            .unwrap_or_else(|_| HeaderValue::from_static("req_0"))
    }

    fn respond(&self, reply: Reply) -> Response {
        match reply {
            Reply::Fixture(fixture) => {
                let body = match &fixture.body {
                    FixtureBody::Json(text) => Body::from(text.as_str()),
                    FixtureBody::Sse(events) => sse_body(events, self.chunk_delay),
                };
                let mut response = Response::new(body);
                *response.status_mut() = fixture.status;
                response.headers_mut().extend(fixture.headers.clone());
                response
            }
            Reply::Json {
                status,
                body,
                headers,
            } => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(HeaderName::from_static("x-request-id"), self.request_id());
                h.extend(headers);
                response
            }
            Reply::Hostile(response) => response,
        }
    }
}

/// Replays recorded events one by one, `chunk_delay` apart.
fn sse_body(events: &'static [&'static str], chunk_delay: Duration) -> Body {
    let stream =
        futures::stream::iter(events.iter().enumerate()).then(move |(i, event)| async move {
            if i > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            Ok::<_, Infallible>(Bytes::from_static(event.as_bytes()))
        });
    Body::from_stream(stream)
}

fn fault_reply(faults: &Faults) -> Reply {
    let status = StatusCode::from_u16(faults.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Some(wait) = faults.retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let millis = wait.as_nanos().div_ceil(1_000_000);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        headers.insert(
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
        );
    }
    Reply::Json {
        status,
        body: openai_error::fault(faults.status),
        headers,
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        // Azure OpenAI's deployment URL form (`?api-version=` is recorded, not checked).
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(chat),
        )
        .route("/v1/models", get(list_models))
        .route("/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/models/{model}", get(get_model))
        .route("/healthz", get(healthz))
        .fallback(invalid_url)
        .method_not_allowed_fallback(invalid_url)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let reply = shared.chat_reply(&headers, parsed.as_ref());
    shared.record(&method, &uri, &headers, parsed, &reply);
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    shared.respond(reply)
}

fn model_object(id: &str, created: i64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "openai"})
}

async fn list_models(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let reply = shared.reject_unauthorized(&headers).unwrap_or_else(|| {
        let data: Vec<Value> = shared
            .catalog
            .models
            .iter()
            .map(|m| model_object(&m.id, m.created))
            .collect();
        let list = json!({"object": "list", "data": data});
        Reply::json(StatusCode::OK, pretty(&list))
    });
    shared.record(&method, &uri, &headers, None, &reply);
    shared.respond(reply)
}

async fn get_model(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let reply = shared.reject_unauthorized(&headers).unwrap_or_else(|| {
        match shared.catalog.models.iter().find(|m| m.id == model) {
            Some(m) => Reply::json(StatusCode::OK, pretty(&model_object(&m.id, m.created))),
            None => Reply::json(StatusCode::NOT_FOUND, openai_error::model_not_found(&model)),
        }
    });
    shared.record(&method, &uri, &headers, None, &reply);
    shared.respond(reply)
}

async fn healthz() -> impl IntoResponse {
    "ok"
}

async fn invalid_url(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = Reply::json(
        StatusCode::NOT_FOUND,
        openai_error::invalid_url(method.as_str(), uri.path()),
    );
    shared.record(
        &method,
        &uri,
        &headers,
        serde_json::from_slice(&body).ok(),
        &reply,
    );
    shared.respond(reply)
}

fn pretty(value: &Value) -> String {
    // Serialising a `Value` cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn retry_after_headers_round_up() {
        let reply = fault_reply(
            &Faults::fail_first(1)
                .with_status(429)
                .with_retry_after(Duration::from_millis(1500)),
        );
        let Reply::Json {
            status, headers, ..
        } = reply
        else {
            panic!("not JSON");
        };
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["retry-after-ms"], "1500");
        let Reply::Json { headers, .. } = fault_reply(&Faults::fail_first(1)) else {
            panic!("not JSON");
        };
        assert!(headers.is_empty());
    }

    #[test]
    fn every_auto_choice_is_in_the_catalog() {
        let catalog = catalog().unwrap();
        for name in FIXTURE_NAMES {
            assert!(catalog.get(name).is_some());
        }
    }
}
