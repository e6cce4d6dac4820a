//! `tollgate controller`: the leader-elected writer of Gateway API status (crate
//! `tollgate-controller`), with an admin port for its probes and metrics.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Args;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, SignalKind};
use tollgate_controller::lease::LeaseConfig;
use tollgate_controller::write::Metrics;
use tollgate_controller::Health;
use tracing::{error, info};

/// The controller's settings.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The kubeconfig file(s) to reach the API server with (a list separated by `:` as in
    /// KUBECONFIG). Without it, the pod's in-cluster settings (its ServiceAccount).
    #[arg(long, value_name = "PATH", env = "KUBECONFIG")]
    pub kubeconfig: Option<std::ffi::OsString>,
    /// Namespace of the Lease the replicas elect their leader with (the controller's own).
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "POD_NAMESPACE",
        default_value = "tollgate-system"
    )]
    pub lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, value_name = "NAME", default_value = "tollgate-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease (its pod's name, from the downward API).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub identity: Option<String>,
    /// The lease duration in seconds: how long the other replica waits after the leader's
    /// last renewal before taking over (renewals every seventh of it, at least 1 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,
    /// Admin server: /healthz, /readyz and /metrics.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:9092",
        env = "TOLLGATE_ADMIN_ADDRESS"
    )]
    pub admin_address: SocketAddr,
}

struct Admin {
    registry: Registry,
    health: Arc<Health>,
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(a): State<Arc<Admin>>| async move {
                if a.health.synced.load(Ordering::Acquire) {
                    (StatusCode::OK, "ok\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: not every kind is listed yet\n",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(a): State<Arc<Admin>>| async move {
                let mut body = String::new();
                if prometheus_client::encoding::text::encode(&mut body, &a.registry).is_err() {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
                    .into_response()
            }),
        )
        .with_state(admin)
}

/// Runs the controller until SIGTERM or SIGINT; returns the exit code.
pub fn run(args: ControllerArgs) -> anyhow::Result<i32> {
    let paths: Vec<PathBuf> = args
        .kubeconfig
        .as_deref()
        .map(|list| {
            std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let settings = match tollgate_kubernetes::Settings::resolve(&paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tollgate controller: {e}");
            return Ok(2);
        }
    };
    let identity = args
        .identity
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("tollgate-controller-{}", std::process::id()));
    let lease = LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity)
        .with_duration(Duration::from_secs(args.lease_duration_seconds));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-controller")
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = settings.client()?;
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let health = Arc::new(Health::default());
        let admin = Arc::new(Admin {
            registry,
            health: health.clone(),
        });
        if let Err(e) = crate::telemetry::admin::serve_router(args.admin_address, router(admin)).await {
            eprintln!("tollgate controller: admin address {}: {e}", args.admin_address);
            return Ok(2);
        }
        info!(server = %settings.server(), identity = %identity, lease = %format!("{}/{}", lease.namespace, lease.name), admin = %args.admin_address, "controller started");
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let controller = tokio::spawn(tollgate_controller::run(client, lease, metrics, health, stop));
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: giving up the lease and stopping"),
            _ = int.recv() => info!("SIGINT: giving up the lease and stopping"),
        }
        let _ = stop_tx.send(true);
        // The release is one or two requests; a server that does not answer must not hold
        // the pod's termination up for long.
        if tokio::time::timeout(Duration::from_secs(5), controller).await.is_err() {
            error!("the controller did not stop within 5 s");
        }
        Ok(0)
    })
}
