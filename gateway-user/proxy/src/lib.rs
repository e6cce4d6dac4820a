//! The L7 proxy: one listening socket per Gateway listener port, HTTP/1.1 and h2c on each,
//! routing with the revision's [`RouteTable`], forwarding to Backends over pooled keep-alive
//! connections (hyper-util's client).
//!
//! Hot reload: the revision in force is one `Arc<Active>` in an [`ArcSwap`]. Each request loads
//! it once and keeps it to the end, so a swap never splits a request across revisions. A new
//! revision is installed in two steps, so that a port that cannot be bound refuses the
//! revision before anything changes: [`Proxy::prepare`] binds the sockets of new ports (and
//! fails, changing nothing, if one cannot be bound), then [`Proxy::commit`] swaps the table in,
//! starts accepting on the new ports and stops the ports the revision no longer has (their
//! open connections finish the requests in flight, then close). Ports that stay keep their
//! sockets and connections.
//!
//! Each port has one listening socket per worker thread (an `SO_REUSEPORT` group, see
//! [`bind_workers`]): the kernel spreads new connections over the workers, and a connection is
//! accepted by the worker that serves it, never handed from one thread to another.
//!
//! HTTPS listeners: see [`tls`]. Their certificates are loaded by `prepare` (a bad file refuses
//! the revision) and reloaded by a timer when their files change. The credential files of
//! AuthPolicies ([`auth`]) are loaded and reloaded the same way.
pub mod abuse;
pub mod access_log;
pub mod auth;
pub mod backend_h1;
pub mod backend_h2;
pub mod backend_tls;
pub mod body;
pub mod client_prefix;
pub mod clock;
pub mod cluster;
pub mod decide;
pub mod forwarded;
pub mod grpc;
pub mod host;
pub mod limit;
pub mod listener;
pub mod metrics;
mod mirror;
pub mod router;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::Either;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::HttpMetrics;
use access_log::{AccessLog, Sampler};
use tollgate_compile::l7::RouteTable;
use upstream::BackendRuntime;

/// The body of requests sent to backends: buffered (replayable) or streamed (and cut off
/// at the route's body size limit).
pub type UpstreamBody = Either<upstream::ReplayBody, body::LimitedBody>;

/// Default address the listeners bind (`--gateway-address`).
pub const DEFAULT_GATEWAY_ADDRESS: &str = "0.0.0.0";

/// Limits of the proxy. Each is a named constant below with its default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes; HTTP/2: header list size.
    pub max_header_bytes: usize,
    /// Most request headers (HTTP/1.1).
    pub max_headers: usize,
    /// Time a client has to send a complete request head (slowloris); also bounds how long
    /// an HTTP/1.1 keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before the proxy accepted them, at once, before the
    /// connection is closed (rapid reset, CVE-2023-44487).
    pub h2_max_pending_reset_streams: usize,
    /// Bytes of request bodies an HTTP/2 client may send ahead of what the proxy has passed on:
    /// the initial flow-control window of each stream and of the connection (RFC 9113 section
    /// 6.9), so the most one connection's unread bodies can hold. At least 65,535 (HTTP/2's
    /// own initial connection window, which cannot be made smaller).
    pub h2_receive_window: u32,
    /// Open client connections, over all listeners.
    pub max_connections: usize,
    /// Bytes of request heads all client connections together may hold before their requests
    /// start ([`listener::HeadBudget`]).
    pub head_budget: usize,
    /// Memory the requests waiting for their responses together may hold for their heads
    /// ([`listener::InFlightBudget`]): each is charged its head twice (the client's, and the
    /// copy sent to the backend) and [`IN_FLIGHT_OVERHEAD`] until its response begins; a
    /// request over it is answered 503.
    pub in_flight_budget: usize,
    /// Time to connect to a backend endpoint.
    pub connect_timeout: Duration,
    /// Idle pooled connections to backends are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per endpoint.
    pub pool_max_idle_per_endpoint: usize,
    /// Time a client has to complete the TLS handshake on an HTTPS listener.
    pub tls_handshake_timeout: Duration,
    /// Threads that serve client connections, each with its own single-threaded runtime and
    /// backend connection pool (a connection stays on one thread: no hand-over between threads
    /// for each request). Default: one per CPU.
    pub worker_threads: usize,
    /// Request bodies up to this size (with a known length) are buffered so that a retry can
    /// send them again; larger or streamed bodies are sent once.
    pub max_retry_body: usize,
    /// Largest request body, in bytes, of a route whose `BackendTrafficPolicy` sets no
    /// `requestBody.maxSize`: 413 when `Content-Length` says more, the upstream request cut
    /// off when a streamed body grows past it.
    pub max_request_body: u64,
}

/// Default [`Limits::max_header_bytes`]: 64 KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default [`Limits::max_headers`].
pub const MAX_HEADERS: usize = 100;
/// Default [`Limits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::idle_timeout`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Limits::h2_max_concurrent_streams`].
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default [`Limits::h2_max_pending_reset_streams`] (hyper's default).
pub const H2_MAX_PENDING_RESET_STREAMS: usize = 20;
/// Default and least [`Limits::h2_receive_window`]: HTTP/2's own initial window (RFC 9113
/// section 6.9.2), where hyper's is 1 MiB a stream and 1 MiB a connection: 16 times the
/// request body a connection can park in the proxy while its backend does not read
/// (docs/operations.md, "Memory budget", has the measured figures). nginx reads 64 KiB of a
/// stream's body ahead (`http2_body_preread_size`), and Envoy's edge settings give a stream
/// 64 KiB.
pub const H2_RECEIVE_WINDOW: u32 = 65_535;
/// Default [`Limits::max_connections`]: what fits the memory budget (docs/operations.md,
/// "Memory budget"): a keep-alive connection that has carried a request holds about 34 KB
/// (hyper's read and write buffers and the allocator's share), so 4,096 of them take about
/// 136 MiB of the agent's 512 MiB.
pub const MAX_CONNECTIONS: usize = 4_096;
/// Default [`Limits::head_budget`]: 64 MiB, an eighth of the agent's 512 MiB memory limit
/// (docs/operations.md, "Memory budget"): about a thousand connections each holding a
/// largest-possible partial head, or tens of thousands holding ordinary ones.
pub const HEAD_BUDGET: usize = 64 * 1024 * 1024;
/// Default [`Limits::in_flight_budget`]: 128 MiB, a quarter of the agent's memory limit. An
/// HTTP/2 client can have 100 streams in flight on one connection, each with a head of up to
/// 64 KiB that HPACK lets it send in a few bytes (a header indexed once, referred to by one
/// byte): 70 such connections held 570 MB before this budget. With ordinary heads (about 1
/// KiB) it admits about 7,000 requests at once, with 64 KiB ones about 900.
pub const IN_FLIGHT_BUDGET: usize = 128 * 1024 * 1024;
/// What a request in flight is charged beyond its head: its share of the backend
/// connection's buffers and of the proxy's own state (measured: about 12 KB a stream with
/// small heads).
pub const IN_FLIGHT_OVERHEAD: usize = 16 * 1024;
/// Default [`Limits::connect_timeout`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`Limits::pool_idle_timeout`]: shorter than the keep-alive timeout of common
/// backends (nginx 75s), so that the proxy, not the backend, closes an idle connection (a
/// backend closing one just as a request is sent on it would cost that request).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Limits::pool_max_idle_per_endpoint`].
pub const POOL_MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Default [`Limits::max_retry_body`]: 64 KiB.
pub const MAX_RETRY_BODY: usize = 64 * 1024;
/// Default [`Limits::max_request_body`]: 10 MiB.
pub const MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            h2_max_concurrent_streams: H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_reset_streams: H2_MAX_PENDING_RESET_STREAMS,
            h2_receive_window: H2_RECEIVE_WINDOW,
            max_connections: MAX_CONNECTIONS,
            head_budget: HEAD_BUDGET,
            in_flight_budget: IN_FLIGHT_BUDGET,
            connect_timeout: CONNECT_TIMEOUT,
            pool_idle_timeout: POOL_IDLE_TIMEOUT,
            pool_max_idle_per_endpoint: POOL_MAX_IDLE_PER_ENDPOINT,
            max_retry_body: MAX_RETRY_BODY,
            worker_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_request_body: MAX_REQUEST_BODY,
            tls_handshake_timeout: tls::HANDSHAKE_TIMEOUT,
        }
    }
}

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address the listeners bind (every Gateway listener port on it).
    pub address: IpAddr,
    /// Peers whose `X-Forwarded-For` is believed (never banned by `banOnAbuse`).
    pub trusted_proxies: Vec<IpNet>,
    /// Addresses `banOnAbuse` never bans (`--never-ban`), besides loopback and
    /// `trusted_proxies`.
    pub never_ban: Vec<IpNet>,
    /// Which requests are logged.
    pub access_log: AccessLog,
    /// Limits.
    pub limits: Limits,
    /// Directory of the Secrets that HTTPS listeners (`NS/NAME/tls.crt`, `tls.key`) and
    /// AuthPolicies (`NS/NAME/keys`, `NS/NAME/htpasswd`) name.
    pub tls_secrets_dir: PathBuf,
    /// Where `scope: Cluster` rate limits keep their counters.
    pub cluster: cluster::ClusterSettings,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            address: IpAddr::from([0, 0, 0, 0]),
            trusted_proxies: Vec::new(),
            never_ban: Vec::new(),
            access_log: AccessLog::On,
            limits: Limits::default(),
            tls_secrets_dir: PathBuf::from(tls::DEFAULT_TLS_SECRETS_DIR),
            cluster: cluster::ClusterSettings::default(),
        }
    }
}

/// The revision in force, as requests see it.
pub struct Active {
    /// The routing table.
    pub table: Arc<RouteTable>,
    /// Backend runtimes, aligned with `table.policy.backends`.
    pub backends: Vec<Arc<BackendRuntime>>,
    /// Rate limiters, aligned with `table.policy.rate_limits`.
    pub limiters: Vec<Arc<limit::Limiter>>,
    /// The revision id.
    pub revision: String,
    /// HTTPS ports and their listeners; a port not here speaks plain HTTP.
    pub tls: BTreeMap<u16, Arc<tls::TlsPort>>,
    /// Credentials, aligned with `table.policy.auth`.
    pub auth: Vec<Arc<auth::AuthRuntime>>,
    /// TLS clients, aligned with `backends` (`None`: plain HTTP).
    pub backend_tls: Vec<Option<backend_tls::TlsBackend>>,
}

/// What every connection and request shares.
pub struct Core {
    state: ArcSwap<Active>,
    config: ProxyConfig,
    limits: Limits,
    metrics: HttpMetrics,
    sampler: Sampler,
    /// How the HTTP/1.1 connections to cleartext backends are pooled ([`backend_h1`]: per
    /// endpoint and worker thread, so that a request and the backend connection it uses live
    /// on the same thread).
    h1_pool: backend_h1::PoolSettings,
    workers: Workers,
    /// Per-route series handles ([`metrics::RouteSeries`]), one per worker thread.
    series: Vec<Mutex<metrics::RouteSeries>>,
    /// The route name of requests no route matched: one `Arc` for all of them, so that
    /// they share one entry of [`metrics::RouteSeries`] (and no allocation per request).
    no_route: Arc<str>,
    server: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    head_budget: Arc<listener::HeadBudget>,
    in_flight: Arc<listener::InFlightBudget>,
    registry: upstream::Registry,
    rate_limits: limit::Registry,
    certs: tls::CertStore,
    credentials: auth::AuthStore,
    abuse: abuse::Abuse,
}

/// Why a revision's listeners cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A port could not be bound.
    #[error("cannot listen on {address} for {listeners}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The Gateway listeners on that port (`namespace/gateway/listener`).
        listeners: String,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key of an HTTPS listener cannot be loaded.
    #[error("cannot load the TLS certificate of {0}")]
    Certificate(Box<tls::ListenerCertError>),
    /// A credential file of an AuthPolicy cannot be loaded.
    #[error("cannot load the credentials of {0}")]
    Credentials(Box<auth::PolicyFileError>),
    /// A CA or client certificate of a Backend's TLS settings cannot be loaded.
    #[error("{0}")]
    BackendTls(Box<backend_tls::BackendTlsError>),
}

/// Sockets bound for a revision, not yet serving.
pub struct Prepared {
    table: Arc<RouteTable>,
    /// Per port, one listening socket per worker thread.
    sockets: Vec<(u16, Vec<std::net::TcpListener>)>,
    tls: tls::PreparedTls,
    auth: Vec<Arc<auth::AuthRuntime>>,
    backend_tls: Vec<Option<backend_tls::TlsBackend>>,
}

/// The proxy.
pub struct Proxy {
    core: Arc<Core>,
    listeners: Mutex<BTreeMap<u16, CancellationToken>>,
    /// Stops the certificate reload timer.
    reloader: CancellationToken,
}

impl Proxy {
    /// A proxy with no listeners yet. Must be called inside a tokio runtime.
    pub fn new(config: ProxyConfig, metrics: HttpMetrics) -> Proxy {
        raise_fd_limit();
        let limits = config.limits.clone();
        let workers = Workers::start(limits.worker_threads);
        let h1_pool = backend_h1::PoolSettings {
            connect_timeout: limits.connect_timeout,
            idle_timeout: limits.pool_idle_timeout,
            max_idle: limits.pool_max_idle_per_endpoint,
        };
        let rate_limits = limit::Registry::with_backend(
            limit::MAX_KEYS_PER_LIMIT,
            metrics.ratelimit_evictions.clone(),
            cluster::Backend::start(config.cluster.clone(), metrics.cluster.clone()),
        );
        let abuse = abuse::Abuse::new(None, abuse::MAX_TRACKED, metrics.abuse_evictions.clone());
        let core = Core {
            state: ArcSwap::from_pointee(Active {
                table: Arc::new(RouteTable::default()),
                backends: Vec::new(),
                limiters: Vec::new(),
                revision: String::new(),
                tls: BTreeMap::new(),
                auth: Vec::new(),
                backend_tls: Vec::new(),
            }),
            sampler: Sampler::new(config.access_log),
            series: (0..workers.len())
                .map(|_| Mutex::new(metrics::RouteSeries::default()))
                .collect(),
            no_route: Arc::from(router::NO_ROUTE),
            server: listener::server_builder(&limits),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            head_budget: Arc::new(listener::HeadBudget::new(
                limits.head_budget,
                limits.max_header_bytes.max(8192),
            )),
            in_flight: Arc::new(listener::InFlightBudget::new(limits.in_flight_budget)),
            limits,
            registry: upstream::Registry::default(),
            certs: tls::CertStore::new(
                config.tls_secrets_dir.clone(),
                metrics.tls_reload_failures.clone(),
            ),
            credentials: auth::AuthStore::with_metrics(
                config.tls_secrets_dir.clone(),
                metrics.jwks.clone(),
            ),
            config,
            metrics,
            h1_pool,
            workers,
            rate_limits,
            abuse,
        };
        let core = Arc::new(core);
        let reloader = CancellationToken::new();
        tokio::spawn(reload_certificates(core.clone(), reloader.clone()));
        Proxy {
            core,
            listeners: Mutex::new(BTreeMap::new()),
            reloader,
        }
    }

    /// Loads the certificates of the HTTPS listeners of `table` and binds its ports that are
    /// not listening yet. Changes nothing that serves requests; on failure, the sockets bound
    /// so far are closed again.
    pub fn prepare(&self, table: &Arc<RouteTable>) -> Result<Prepared, ProxyError> {
        let tls = self
            .core
            .certs
            .load(table)
            .map_err(ProxyError::Certificate)?;
        let auth = self
            .core
            .credentials
            .load(table)
            .map_err(|e| ProxyError::Credentials(Box::new(e)))?;
        let backend_tls =
            backend_tls::clients(&self.core.config.tls_secrets_dir, &table.policy.backends)
                .map_err(ProxyError::BackendTls)?;
        let open = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut sockets = Vec::new();
        for port in table.listen_ports() {
            if open.contains_key(&port) {
                continue;
            }
            let address = SocketAddr::new(self.core.config.address, port);
            let listeners = bind_workers(address, self.core.workers.len()).map_err(|source| {
                ProxyError::Listen {
                    address,
                    listeners: table
                        .policy
                        .listeners
                        .iter()
                        .filter(|l| l.port == port)
                        .map(|l| format!("listener \"{}\" of Gateway {}", l.name, l.gateway))
                        .collect::<Vec<_>>()
                        .join(", "),
                    source,
                }
            })?;
            sockets.push((port, listeners));
        }
        Ok(Prepared {
            table: table.clone(),
            sockets,
            tls,
            auth,
            backend_tls,
        })
    }

    /// Puts a prepared revision in force (see the module documentation).
    pub fn commit(&self, prepared: Prepared, revision: &str) {
        let table = prepared.table;
        let backends = self
            .core
            .registry
            .resolve(&table.policy.backends, &self.core.metrics.ejections);
        let limiters = self.core.rate_limits.resolve(&table.policy.rate_limits);
        let cluster_limits = table.policy.rate_limits.iter().any(|d| d.is_cluster());
        self.core.rate_limits.backend().set_in_force(cluster_limits);
        if self.core.config.cluster.redis.is_none() {
            let mut warned = std::collections::BTreeSet::new();
            for def in table.policy.rate_limits.iter().filter(|d| d.is_cluster()) {
                if warned.insert(def.policy.clone()) {
                    warn!(policy = %def.policy, "RateLimitPolicy has scope: Cluster and no --ratelimit-redis is set: its limits follow onBackendFailure on this node");
                }
            }
        }
        self.core.abuse.retain(&table.policy);
        let ports = table.listen_ports();
        self.core.certs.commit(&prepared.tls);
        self.core.state.store(Arc::new(Active {
            table,
            backends,
            limiters,
            revision: revision.to_owned(),
            tls: prepared.tls.ports,
            auth: prepared.auth,
            backend_tls: prepared.backend_tls,
        }));
        let mut open = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for (port, sockets) in prepared.sockets {
            let stop = CancellationToken::new();
            // Socket i is accepted on by worker i (one socket when there are no worker threads:
            // accepted on the agent's runtime, as the workers' fallback serves there).
            for (worker, socket) in self.core.workers.handles.iter().zip(sockets) {
                worker.spawn(listener::accept_loop(
                    self.core.clone(),
                    port,
                    socket,
                    stop.clone(),
                ));
            }
            info!(address = %SocketAddr::new(self.core.config.address, port), "HTTP listener open");
            open.insert(port, stop);
        }
        let gone: Vec<u16> = open
            .keys()
            .copied()
            .filter(|p| !ports.contains(p))
            .collect();
        for port in gone {
            if let Some(stop) = open.remove(&port) {
                stop.cancel();
                info!(address = %SocketAddr::new(self.core.config.address, port), "HTTP listener closed (no longer in the revision)");
            }
        }
    }

    /// Where cluster rate limits keep their counters (its state is part of `/status`).
    pub fn ratelimit_backend(&self) -> Arc<cluster::Backend> {
        self.core.rate_limits.backend().clone()
    }

    /// Sends the bans of `banOnAbuse` to `tx` (the ban task, which owns the blocklist maps);
    /// a ban that finds the queue full is dropped and counted in `dropped`. Without this, the
    /// proxy counts failures but bans nothing. Exempt: loopback, `trusted_proxies`,
    /// `never_ban`.
    pub fn send_bans_to(
        &self,
        tx: tokio::sync::mpsc::Sender<abuse::BanRequest>,
        dropped: prometheus_client::metrics::counter::Counter,
    ) {
        let mut exempt = self.core.config.trusted_proxies.clone();
        exempt.extend(self.core.config.never_ban.iter().copied());
        self.core
            .abuse
            .install(abuse::Banner::new(tx, exempt, dropped));
    }

    /// Serves one connection accepted elsewhere as if it had arrived on `port` from `peer`, in
    /// plain HTTP (HTTP/1.1 or h2c, whatever the port's listeners say about TLS), on the
    /// caller's runtime, outside the connection limit; returns when the connection ends. This
    /// is the path every accepted connection takes after its TLS handshake, so that tests and
    /// the fuzzer can drive hyper's parser and the router with exact bytes, in process.
    pub async fn serve_stream<S>(&self, port: u16, stream: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        listener::serve_http(
            self.core.clone(),
            port,
            stream,
            peer,
            None,
            CancellationToken::new(),
        )
        .await
    }

    /// The ports listening now.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// The revision the proxy routes with.
    pub fn revision(&self) -> String {
        self.core.state.load().revision.clone()
    }

    /// Stops accepting on every port, lets the requests in flight finish, and returns when
    /// every connection is closed or `timeout` has passed (whatever is still open then is cut
    /// when the process exits). Returns the connections still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        for (_, stop) in
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|e| e.into_inner()))
        {
            stop.cancel();
        }
        let max = self.core.limits.max_connections;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open = max - self.core.connections.available_permits();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long a stopping agent waits for requests in flight (SIGTERM, SIGINT).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Drop for Proxy {
    fn drop(&mut self) {
        self.reloader.cancel();
        self.core.workers.stop.cancel();
        for stop in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            stop.cancel();
        }
    }
}

/// Checks the certificate and credential files every [`tls::RELOAD_INTERVAL`] until `stop`.
async fn reload_certificates(core: Arc<Core>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(tls::RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // File reads block: off the async workers.
        let c = core.clone();
        let _ = tokio::task::spawn_blocking(move || {
            c.certs.check();
            c.credentials.check();
        })
        .await;
    }
}

/// Listen backlog of each port.
const BACKLOG: u32 = 1024;

/// A listening socket on `address` (not registered with any runtime: the worker that accepts
/// on it does that), with `SO_REUSEPORT` when it is one of a group.
fn listening_socket(
    address: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // A restarted agent must be able to bind while connections of the old one linger.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

/// Binds `address` once per worker thread (`workers` sockets): with more than one, an
/// `SO_REUSEPORT` group, which the kernel balances new connections over.
///
/// `SO_REUSEPORT` lets any other socket with the option, of the same user (root, for a
/// second agent), join the group and silently take a share of the connections, where a plain
/// bind fails with "address in use". So the port is first bound alone, without the option:
/// that bind fails, as a plain one would, when anything holds the port, a group included; the
/// group is bound right after this socket closes. A second agent does the same and finds the
/// port taken. What this leaves open: a process that binds the port with `SO_REUSEPORT` in
/// the moment between the two binds, or later without binding alone first, joins the group
/// (the kernel has no option to close a group; a socket filter could only steer connections
/// within it).
fn bind_workers(
    address: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let alone = listening_socket(address, false)?;
    if workers <= 1 {
        return Ok(vec![alone]);
    }
    drop(alone);
    (0..workers)
        .map(|_| listening_socket(address, true))
        .collect()
}

/// Raises the soft limit on open files to the hard limit: every client and backend
/// connection is a file, and the usual soft limit (1024) is far below
/// [`MAX_CONNECTIONS`].
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let old = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                warn!(soft = old, "could not raise the open files limit");
            }
        }
    }
}

thread_local! {
    /// Index of the proxy worker thread this is (0 on every other thread).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The proxy's worker threads: each runs a single-threaded tokio runtime that accepts client
/// connections on its own listening socket of each port and serves them, and the backend
/// connections those requests open. A connection and its requests stay on one thread, so a
/// request never waits for another thread to wake up (the multi-threaded runtime's work
/// stealing cost about a sixth of the proxy's CPU time in context switches under load;
/// docs/benchmarks.md).
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stop: CancellationToken,
}

impl Workers {
    fn start(n: usize) -> Workers {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        WORKER_COUNT.fetch_max(n.max(1), std::sync::atomic::Ordering::Relaxed);
        for i in 0..n.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-proxy-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(i));
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(error) => {
                            warn!(%error, "cannot start a proxy worker runtime");
                            return;
                        }
                    };
                    let _ = tx.send(rt.handle().clone());
                    rt.block_on(stop.cancelled());
                });
            if let Err(error) = spawned {
                warn!(%error, "cannot start a proxy worker thread");
                continue;
            }
            if let Ok(handle) = rx.recv() {
                handles.push(handle);
            }
        }
        if handles.is_empty() {
            // Serve on the agent's own runtime rather than not at all.
            handles.push(tokio::runtime::Handle::current());
        }
        Workers { handles, stop }
    }

    fn len(&self) -> usize {
        self.handles.len()
    }
}

/// Index of the proxy worker thread this runs on (0 on every other thread).
pub(crate) fn worker() -> usize {
    WORKER.with(|w| w.get())
}

/// The most worker threads started by a proxy of this process (at least 1): the number of
/// per-worker slots that per-endpoint state needs.
static WORKER_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// See [`WORKER_COUNT`].
pub(crate) fn worker_count() -> usize {
    WORKER_COUNT.load(std::sync::atomic::Ordering::Relaxed)
}

impl Core {
    /// The series handles of the worker thread this runs on (other threads share the first
    /// worker's; the lock is uncontended on the request path).
    fn route_series(&self) -> std::sync::MutexGuard<'_, metrics::RouteSeries> {
        self.series[worker() % self.series.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
