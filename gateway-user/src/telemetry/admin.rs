//! The admin HTTP server (`--admin`, default 127.0.0.1:9464): `/metrics` (OpenMetrics text),
//! `/healthz` (the process is alive; never fails because a source is down), `/readyz` (a
//! revision is enforced, on every configured interface) and `/status` (JSON), all GET; and the Git webhook, `POST /hooks/git`
//! ([`super::webhook`]). Anything else is a 404 or 405.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Shared;

/// Default listen address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9464";

/// Open connections to the admin server; over it, new ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one client (an IPv4 address, an IPv6 /64) may hold: a quarter of the port,
/// so that one client holding its connections open (slow webhook bodies, unfinished heads)
/// cannot take the places of the kubelet's probes and Prometheus' scrapes. Over it, a new
/// connection is closed at once.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 16;
/// Largest request head the admin server reads (its requests are a line and a few headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send a request head; also how long a keep-alive connection may wait
/// for its next request.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest life of one admin connection (a scrape reconnects; a slow reader cannot hold a
/// slot for ever).
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route(super::webhook::PATH, post(super::webhook::receive))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // OpenMetrics for the clients that ask for it (Prometheus does), the classic text format
    // for the others.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    // Reading the kernel counters is blocking (one syscall per rule): off the async workers.
    let body = tokio::task::spawn_blocking(move || shared.metrics.render(openmetrics))
        .await
        .unwrap_or_default();
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let (applied, interfaces) = shared
        .status
        .read()
        .map(|s| (s.applied.clone(), s.interfaces.clone()))
        .unwrap_or_default();
    let not_enforced: Vec<String> = interfaces
        .iter()
        .filter(|i| !i.enforced)
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    match applied {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no revision is enforced yet\n",
        )
            .into_response(),
        // A revision in force on some interfaces is not enough: an interface without the
        // program filters nothing.
        Some(_) if !not_enforced.is_empty() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: not enforced on interface {}\n",
                not_enforced.join(", ")
            ),
        )
            .into_response(),
        Some(r) => (
            StatusCode::OK,
            format!("ready: revision {} is enforced\n", r.id),
        )
            .into_response(),
    }
}

/// How many top offenders `/status` lists.
const STATUS_OFFENDERS: usize = 20;

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.status.read().map(|s| s.clone()).unwrap_or_default();
    let pin_dir = shared.pin_dir.clone();
    let (top, bans) = tokio::task::spawn_blocking(move || {
        (
            tollgate_dataplane::offenders::top(&pin_dir, STATUS_OFFENDERS).unwrap_or_default(),
            crate::bans::report(&pin_dir, crate::bans::STATUS_BANS).unwrap_or_default(),
        )
    })
    .await
    .unwrap_or_default();
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    v["next_attempt_in_seconds"] = s
        .next_attempt
        .map(|at| {
            let left = at.saturating_duration_since(std::time::Instant::now());
            serde_json::Value::from((left.as_secs_f64() * 1000.0).round() / 1000.0)
        })
        .unwrap_or_default();
    v["top_offenders"] = serde_json::to_value(top).unwrap_or_default();
    v["bans"] = serde_json::to_value(&bans.bans).unwrap_or_default();
    v["bans_total"] = bans.total.into();
    v["top_offenders_sample_rate"] = tollgate_dataplane::offenders::sample_rate().into();
    if let Some(backend) = shared.ratelimit_backend.get() {
        v["ratelimit_backend"] = serde_json::to_value(backend.status()).unwrap_or_default();
    }
    Json(v).into_response()
}

/// Binds `addr` (so that a taken port is an error at start, not later) and serves until the
/// process ends. The admin port is bounded like the public listeners: at most
/// [`MAX_CONNECTIONS`] connections ([`MAX_CONNECTIONS_PER_SOURCE`] of one client) of at most
/// [`MAX_HEAD_BYTES`] of head each (1 MiB in all), heads within [`HEADER_READ_TIMEOUT`],
/// connections for at most [`CONNECTION_LIFETIME`].
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_router(addr, router(shared)).await
}

/// As [`serve`], for any router (`tollgate controller`'s admin port has the same bounds).
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let sources = Arc::new(Sources::default());
    Ok(tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, source_slot) = match listener.accept().await {
                Ok((stream, peer)) => match sources.take(peer.ip()) {
                    Some(source_slot) => (stream, source_slot),
                    None => {
                        tracing::debug!(%peer, "admin server: the client holds its share of connections; closed");
                        continue;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "admin server: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(source_slot);
                drop(slot);
            });
        }
    }))
}

/// Open admin connections by client ([`MAX_CONNECTIONS_PER_SOURCE`]).
#[derive(Default)]
struct Sources(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection of a client; its place is given back when dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    key: std::net::IpAddr,
}

impl Sources {
    /// A place for a connection from `ip`, if its client holds fewer than its share.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<SourceSlot> {
        use std::net::IpAddr;
        // An IPv6 client is its /64 (one end site, whose addresses it can rotate through).
        let key = match ip {
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(a) & !(u128::MAX >> 64)).into()),
            },
            v4 => v4,
        };
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_default();
        if *n >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.sources.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}
