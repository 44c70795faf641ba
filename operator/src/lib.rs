//! llmjob-operator: runs `LlmJob`s (`llmjob.dev/v1alpha1`) as traced `batch/v1` Jobs.
//!
//! The reconcile is a pipeline of small steps, one module each:
//! [`fetch`] (read the LlmJob, its Job and pods) → [`validate`] → [`build_job`] (pure: the Job)
//! → [`apply`] (server-side apply) → [`status`] (pure derivation, then one status patch) → [`events`] (which also owns the reasons every problem is
//! reported under). [`contract`] holds what the steps share about the Job (its name, labels,
//! container) and imports none of them. [`controller`] wires them into kube-rs `Controller`s;
//! [`leader`], [`http`] (health and metrics), [`metrics`] and [`telemetry`] (the operator's own
//! traces and the launch span that parents every run's trace) surround it. [`run`] is the whole
//! operator; `main.rs` only parses flags and calls it (or, for `llmjob-operator check`, the
//! chart's `helm test`, [`check`]).
//!
//! Imports between these modules run one way (`operator/tests/module_graph.rs` fails on a
//! circle and prints the graph).

pub mod apply;
pub mod build_job;
pub mod cache;
pub mod check;
pub mod config;
pub mod contract;
pub mod controller;
pub mod events;
pub mod fetch;
pub mod http;
pub mod input;
pub mod leader;
pub mod metrics;
pub mod own_writes;
pub mod secure_metrics;
pub mod status;
pub mod telemetry;
pub mod trace_url;
pub mod traceparent;
pub mod triggers;
pub mod validate;

#[cfg(test)]
mod test_fixtures;

use std::sync::Arc;

pub use config::Config;

/// The field manager of every write the operator makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "llmjob-operator";

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes client could be configured (no kubeconfig, no in-cluster service account).
    #[error(
        "cannot configure a Kubernetes client: {0} (in a pod: mount a service-account token; \
         outside: set KUBECONFIG)"
    )]
    Client(#[source] kube::Error),
    /// The `LlmJob` CRD is not installed, or the operator may not list LlmJobs.
    #[error(
        "cannot list LlmJobs ({0}): install the CRD (kubectl apply -f crds/) and check the \
         operator's RBAC"
    )]
    Crd(#[source] kube::Error),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// The HTTPS metrics server could not start.
    #[error(transparent)]
    SecureMetrics(#[from] secure_metrics::SecureMetricsError),
    /// Leader election failed.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// The operator's telemetry could not be set up.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
}

/// Runs the operator until SIGTERM/SIGINT (or, with leader election, until leadership is lost):
/// telemetry, the HTTP server, leader election, then the controllers.
pub async fn run(config: Config) -> Result<(), RunError> {
    install_crypto_provider();
    let telemetry = telemetry::Telemetry::init(&config)?;
    let result = run_with_telemetry(config, &telemetry).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "the operator stopped");
    }
    telemetry.shutdown();
    result
}

/// Selects rustls' ring provider for the process. kube (ring) and the OTLP exporter's reqwest
/// (aws-lc-rs) together enable two providers, and rustls then refuses to pick one on its own.
/// Idempotent: a provider installed earlier (by an embedding program or a test) stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn run_with_telemetry(
    config: Config,
    telemetry: &telemetry::Telemetry,
) -> Result<(), RunError> {
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| RunError::Client(kube::Error::InferConfig(e)))?;
    let client = kube::Client::try_from(kube_config.clone()).map_err(RunError::Client)?;
    // With leader election, the controllers write through a fenced client (leader.rs): only
    // while this replica's leadership is confirmed. The Lease and the metrics' auth checks do not.
    let fence = if config.leader_elect {
        leader::Fence::closed()
    } else {
        leader::Fence::open()
    };
    let writer = if config.leader_elect {
        leader::fenced_client(kube_config, fence.clone()).map_err(RunError::Client)?
    } else {
        client.clone()
    };
    controller::check_crd(&client, config.namespaces().as_deref())
        .await
        .map_err(RunError::Crd)?;

    let metrics = Arc::new(metrics::Metrics::new());
    metrics.set_runner_image(&config.runner_image);
    let health = http::Health::default();
    let secure = match config.metrics_secure_addr {
        Some(addr) => {
            let server = secure_metrics::serve(
                addr,
                config.metrics_cert_dir.as_deref(),
                client.clone(),
                metrics.clone(),
            )
            .await?;
            tracing::info!(
                addr = %server.local_addr(),
                self_signed = config.metrics_cert_dir.is_none(),
                "serving /metrics over HTTPS, to authorised clients only"
            );
            Some(server)
        }
        None => None,
    };
    let server = http::serve(
        config.http_addr,
        metrics.clone(),
        health.clone(),
        secure.is_none(),
    )
    .await?;
    tracing::info!(addr = %server.local_addr(), plain_metrics = secure.is_none(), "serving /healthz and /readyz");

    let ctx = Arc::new(controller::Context::new(
        writer,
        &config,
        metrics.clone(),
        telemetry.tracer(),
    ));
    let shutdown = controller::shutdown_signal();
    if config.leader_elect {
        let lease = leader::Lease::new(&config);
        let leadership =
            leader::acquire(client.clone(), &lease, &health, fence, shutdown.clone()).await?;
        let Some(mut leadership) = leadership else {
            tracing::info!("stopped before becoming the leader");
            return Ok(());
        };
        metrics.leader.set(1);
        tokio::select! {
            () = controller::run(ctx, config.namespaces(), health.clone(), shutdown.clone()) => {}
            lost = leadership.lost() => {
                metrics.leader.set(0);
                return Err(lost.into());
            }
        }
        leadership.release().await;
        metrics.leader.set(0);
    } else {
        metrics.leader.set(1);
        controller::run(ctx, config.namespaces(), health.clone(), shutdown).await;
        metrics.leader.set(0);
    }
    server.shutdown().await;
    if let Some(secure) = secure {
        secure.shutdown().await;
    }
    Ok(())
}
