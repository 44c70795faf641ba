//! The operator's HTTP server: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
//! (Prometheus/OpenMetrics text), plain HTTP. With `--metrics-secure-addr`, `/metrics` moves to
//! the HTTPS server of [`crate::secure_metrics`] and answers 404 here; the probes stay plain.
//!
//! `/healthz` answers while the process serves requests. `/readyz` answers 200 once the
//! controllers' caches are synced, or while this replica waits as a leader-election standby
//! (a standby is healthy and ready to take over), and 503 before that, and while the
//! controllers cannot reach the API server (its last check failed; see
//! [`crate::controller::API_CHECK_INTERVAL`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for /healthz, /readyz and /metrics: {source} (set --http-addr)")]
pub struct HttpError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

// 0 (the default): starting, caches not synced.
const STANDBY: u8 = 1;
const READY: u8 = 2;
const UNREACHABLE: u8 = 3;

/// Readiness shared between the controllers, leader election and the server.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    /// This replica waits for the leader-election Lease.
    pub fn set_standby(&self) {
        self.0.store(STANDBY, Ordering::SeqCst);
    }

    /// The controllers' caches are synced.
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
    }

    /// The controllers cannot reach the API server (until [`Health::set_ready`] again).
    pub fn set_unreachable(&self) {
        self.0.store(UNREACHABLE, Ordering::SeqCst);
    }

    /// What `/readyz` says: `Ok` with the state's name when ready, else `Err` with why not.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        match self.0.load(Ordering::SeqCst) {
            STANDBY => Ok("standby"),
            READY => Ok("ready"),
            UNREACHABLE => Err("cannot reach the API server"),
            _ => Err("starting: caches not synced"),
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
    /// Whether `/metrics` is served here (false when it is served over HTTPS instead).
    plain_metrics: bool,
}

/// The router, for tests and [`serve`]; `plain_metrics` false answers `/metrics` with 404 (it is
/// served by [`crate::secure_metrics`] instead).
pub fn router(metrics: Arc<Metrics>, health: Health, plain_metrics: bool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState {
            metrics,
            health,
            plain_metrics,
        })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(s) => (StatusCode::OK, s),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    if !state.plain_metrics {
        return (
            StatusCode::NOT_FOUND,
            "/metrics is served over HTTPS only (--metrics-secure-addr)",
        )
            .into_response();
    }
    metrics_response(&state.metrics)
}

/// The metrics as an OpenMetrics response.
pub(crate) fn metrics_response(metrics: &Metrics) -> Response {
    match metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `app` on `listener` (bound to `addr`) in the background until
    /// [`Server::shutdown`]; `what` names the server in the log if it fails.
    pub(crate) fn spawn<L>(addr: SocketAddr, listener: L, app: Router, what: &'static str) -> Self
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the {what} server failed");
            }
        });
        Server { addr, stop, task }
    }

    /// The address it listens on (the port is known even with `--http-addr=...:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves in the background (`/metrics` too when `plain_metrics`).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    plain_metrics: bool,
) -> Result<Server, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError { addr, source })?;
    let app = router(metrics, health, plain_metrics);
    Ok(Server::spawn(local, listener, app, "HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (code, body)
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconciles.inc();
        let health = Health::default();
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            health.clone(),
            true,
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        health.set_standby();
        assert_eq!(get(addr, "/readyz").await, (200, "standby".to_owned()));
        health.set_ready();
        assert_eq!(get(addr, "/readyz").await, (200, "ready".to_owned()));
        health.set_unreachable();
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "cannot reach the API server".to_owned())
        );
        health.set_ready();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("llmjob_operator_reconciles_total 1"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        server.shutdown().await;
        // With HTTPS metrics, the plain server keeps the probes and drops /metrics.
        let server = serve("127.0.0.1:0".parse().unwrap(), metrics, health, false)
            .await
            .unwrap();
        assert_eq!(get(server.local_addr(), "/healthz").await.0, 200);
        assert_eq!(get(server.local_addr(), "/metrics").await.0, 404);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap();
        let err = serve(addr, Arc::new(Metrics::new()), Health::default(), true)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("--http-addr"), "{err}");
    }
}
