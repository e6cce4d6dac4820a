//! Listening sockets and connections: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the
//! same port (hyper-util's `auto` server), or on HTTPS ports, TLS first (the listener chosen by
//! SNI, HTTP/2 or HTTP/1.1 by ALPN, a bounded handshake time, failures counted by reason), with the limits of [`super::Limits`]: header size and
//! count, header-read timeout (slowloris), idle timeout, HTTP/2 streams, and a cap on open
//! connections (at it, each accepting worker holds the connection it accepted last, unserved,
//! and accepts no more until one closes; the kernel's backlog holds the rest).
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::clock::now_ms;
use super::tls::{TlsListener, TlsPort};
use super::{Core, Limits};

mod state;

use state::{ActivityIo, HeadBudgetSpent};
pub use state::{ConnGuard, ConnState, HeadBudget, InFlightBudget};

/// Where a request came in.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's socket address.
    pub peer: SocketAddr,
    /// The peer as the forwarded headers see it (its address, whether it is a trusted proxy).
    pub hop: super::forwarded::Peer,
    /// The listening port (which Gateway listeners serve it).
    pub port: u16,
    /// Activity, for the idle timeout.
    pub state: Arc<ConnState>,
    /// On an HTTPS listener: the listener the TLS server name (SNI) chose, and its port's
    /// listeners as they were at the handshake.
    pub tls: Option<TlsConn>,
}

/// What the TLS handshake of a connection chose.
#[derive(Debug, Clone)]
pub struct TlsConn {
    /// The HTTPS listeners of the port at the handshake.
    pub port: Arc<TlsPort>,
    /// The listener chosen by SNI.
    pub listener: Arc<TlsListener>,
    /// The client certificate the handshake verified (HTTPS listeners of a Gateway with `spec.tls.frontend` validation),
    /// read for AuthPolicy's `clientCertificate`; `None` without one, or when it cannot be
    /// parsed.
    pub client_certificate: Option<Arc<super::auth::PeerCertificate>>,
}

impl TlsConn {
    /// Whether a request for `host` belongs on this connection: the listener `host` would
    /// choose as a server name is the one the handshake chose. Otherwise a client could
    /// shake hands with one listener and then ask for another listener's host, escaping that
    /// listener's client certificate requirement (answered 421 Misdirected Request).
    pub fn covers(&self, host: &str) -> bool {
        self.port
            .select(Some(host))
            .is_some_and(|l| Arc::ptr_eq(l, &self.listener))
    }
}

/// The server side of hyper, configured with the limits.
pub fn server_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(PolledTimer)
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
        // What a client may send ahead of what the proxy passed on, per stream and per
        // connection: the memory a connection's unread request bodies can hold.
        .initial_stream_window_size(limits.h2_receive_window)
        .initial_connection_window_size(limits.h2_receive_window)
        // Detects dead peers. Its PINGs and their ACKs do not make a connection busy: an
        // HTTP/2 connection's idleness is counted from its last request (`ConnState::idle_ms`).
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// hyper's timer for the HTTP/1.1 header read timeout (its only use of a timer on HTTP/1.1
/// server connections): a deadline looked at each time the connection is polled, with no
/// registration in tokio's timer wheel. With hyper-util's `TokioTimer`, every request head
/// (the wait for the next request of a keep-alive connection among them) created a timer
/// entry, registered it, and removed it, and when its deadline was the runtime's earliest the
/// registration woke the runtime's driver through its eventfd: 0.13 `write`s per request under
/// load, and the `epoll_wait` they cut short (docs/benchmarks-issue13-part3.md, round 14).
///
/// Such a deadline wakes nothing by itself: [`serve_http`]'s tick polls the connection at
/// least every quarter of the header read timeout, so a head that does not come is refused at
/// most a quarter of the timeout late (and at once when a byte of it comes after the deadline).
///
/// Its clock is the coarse one ([`crate::clock`]): a deadline of seconds gains nothing from
/// the precise clock, which hyper read about twice per request through this timer (`now` for
/// each head's deadline, the deadline's poll each time it finds no complete head yet).
#[derive(Clone, Copy, Debug)]
struct PolledTimer;

impl hyper::rt::Timer for PolledTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(crate::clock::instant() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PolledDeadline(deadline))
    }

    fn now(&self) -> std::time::Instant {
        crate::clock::instant()
    }
}

/// See [`PolledTimer`].
struct PolledDeadline(std::time::Instant);

impl std::future::Future for PolledDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if crate::clock::instant() >= self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl hyper::rt::Sleep for PolledDeadline {}

/// How often a connection's task looks at it: for the idle timeout, and to poll the header
/// read timeout's deadline ([`PolledTimer`]); a quarter of the shorter of the two, at least
/// 100 ms.
fn tick_period(limits: &Limits) -> Duration {
    (limits.idle_timeout.min(limits.header_read_timeout) / 4).max(Duration::from_millis(100))
}

/// Accepts connections on `listener` until `stop` is cancelled, and serves them on this
/// thread's runtime (a proxy worker's: each worker accepts on its own socket of the port).
pub async fn accept_loop(
    core: Arc<Core>,
    port: u16,
    listener: std::net::TcpListener,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            warn!(port, %error, "cannot accept on a listening socket");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin.
                warn!(port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Its place under the connection limit, taken once it is accepted: a place taken
        // before, while waiting, would be held by every worker's loop of every port. At the
        // limit the loop waits here with this one connection, unserved, and accepts no more
        // (the kernel's backlog holds the rest) until a connection closes.
        let permit = tokio::select! {
            p = core.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore is closed: shutting down
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        // Served to the end on this thread.
        let core = core.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(core, port, stream, peer, stop).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    core: Arc<Core>,
    port: u16,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let tls_port = core.state.load().tls.get(&port).cloned();
    let Some(tls_port) = tls_port else {
        serve_http(core, port, stream, peer, None, stop).await;
        return;
    };
    let timeout = core.limits.tls_handshake_timeout;
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(|e| super::tls::failure_reason(&e))?;
        let hello = start.client_hello();
        let listener = tls_port.select(hello.server_name()).cloned();
        let config = match &listener {
            Some(l) => l.config.clone(),
            None => tls_port.reject(),
        };
        let result = start.into_stream(config).await;
        match (result, listener) {
            (Ok(s), Some(listener)) => {
                // Only a verifier (`spec.tls.frontend` validation) asks for certificates, and rustls keeps
                // them only once they are verified.
                let client_certificate = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| super::auth::PeerCertificate::from_der(leaf))
                    .map(Arc::new);
                Ok((
                    s,
                    TlsConn {
                        port: tls_port.clone(),
                        listener,
                        client_certificate,
                    },
                ))
            }
            // The reject configuration never completes a handshake.
            (_, None) => Err("unknown_sni"),
            (Err(e), _) => Err(super::tls::failure_reason(&e)),
        }
    };
    let reason = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok((stream, tls))) => {
            serve_http(core, port, stream, peer, Some(tls), stop).await;
            return;
        }
        Ok(Err(reason)) => reason,
        Err(_) => "timeout",
    };
    debug!(%peer, port, reason, "TLS handshake failed");
    core.metrics
        .tls_handshake_failures
        .get_or_create(&super::tls::failure_labels(reason))
        .inc();
}

pub(crate) async fn serve_http<S>(
    core: Arc<Core>,
    port: u16,
    stream: S,
    peer: SocketAddr,
    tls: Option<TlsConn>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new(core.head_budget.clone()));
    let info = Arc::new(ConnInfo {
        peer,
        hop: super::forwarded::Peer::new(peer.ip(), &core.config.trusted_proxies),
        port,
        state: state.clone(),
        tls,
    });
    let io = TokioIo::new(ActivityIo {
        stream,
        state: state.clone(),
    });
    let handler_core = core.clone();
    // hyper's HTTP/1.1 dispatcher keeps a box the size of the service's future for the whole
    // life of the connection, request or not: the router's future is a few KB, so it is boxed
    // on its own, only while a request is in flight (measured: about 4 KB less for each idle
    // keep-alive connection; docs/operations.md, "Memory budget").
    let service = service_fn(move |req| {
        let core = handler_core.clone();
        let info = info.clone();
        let handling: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            Box::pin(super::router::handle(core, info, req));
        async move { Ok::<_, std::convert::Infallible>(handling.await) }
    });
    // With upgrades: an HTTP/1.1 connection whose request the backend upgraded (101) is handed
    // to the tunnel of [`super::upgrade`], and this connection's future ends.
    let conn = core.server.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = core.limits.idle_timeout.as_millis() as u64;
    let period = tick_period(&core.limits);
    // Also what polls the header read timeout (see [`PolledTimer`]): it keeps ticking while
    // the connection closes, so a head that never ends cannot hold a closing connection.
    let mut tick = tokio::time::interval(period);
    let opened = std::time::Instant::now();
    let mut closing = false;
    // When the connection is dropped if it has not closed by itself: a graceful shutdown waits
    // for the client (HTTP/2: its ACK of the shutdown's PING; both: that it takes what is
    // still to be written), which a hostile client never does.
    let mut close_by: Option<u64> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    let reason = connection_error_reason(&*error);
                    debug!(%peer, port, %error, reason, "connection ended with an error");
                    connection_error(&core, reason);
                }
                return;
            }
            _ = stop.cancelled(), if !closing => {
                // The listener is gone from the revision: finish what is in flight, then close.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => {
                let now = now_ms();
                if close_by.is_some_and(|at| now >= at) {
                    // Dropped: hyper's connection and, with it, the responses still in flight
                    // (their bodies, and the backend connections those hold).
                    debug!(%peer, port, "connection closed after its graceful shutdown's time");
                    return;
                }
                // hyper times each request head from when it starts waiting for it, which is
                // after hyper-util has told HTTP/1.1 from HTTP/2 by the first bytes (up to the
                // 24 of HTTP/2's preface), with no timer: a connection that sends nothing, or
                // dribbles a preface, gets the same time, not the idle timeout's.
                if !closing
                    && state.before_first_bytes()
                    && opened.elapsed() >= core.limits.header_read_timeout
                {
                    debug!(%peer, port, "nothing sent within the header read timeout");
                    connection_error(&core, "header_timeout");
                    return;
                }
                if !closing && state.no_request() && state.idle_ms(now) >= idle {
                    debug!(%peer, port, "idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    close_by = Some(now + idle);
                }
                // A response still in flight a tick past its request timeout is one the
                // client does not take (see `ConnState::deadlines`): hyper no longer polls
                // its body, which would otherwise hold its backend connection, and its
                // connection (busy, never idle), for as long as the client likes. Closed even
                // while closing for another reason: a graceful shutdown waits for it. The
                // connection is told (HTTP/2: GOAWAY) and dropped at the next tick: hyper has
                // no way to reset one stream from outside it, so the other streams of the
                // connection go too.
                let late = now.saturating_sub(period.as_millis() as u64);
                if close_by.is_none_or(|at| at > now) && state.overdue(late) {
                    debug!(%peer, port, "a response not taken by the client within its request timeout");
                    connection_error(&core, "response_stalled");
                    if !closing {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    close_by = Some(now + 1);
                }
            }
        }
    }
}

/// Counts a client connection ended for `reason` (see [`connection_error_reason`]).
fn connection_error(core: &Core, reason: &str) {
    core.metrics
        .connection_errors
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: reason.to_owned(),
        })
        .inc();
}

/// The `reason` label of a connection the HTTP layer ended with `error`: `malformed` (a
/// request hyper could not parse: bad framing, bad characters, smuggling attempts; answered
/// 400), `head_too_large` (431), `header_timeout` (the head did not arrive within
/// `--header-read-timeout`: slowloris), `incomplete` (the client went away mid-message), or
/// `memory_budget` (the connection's head would have gone over the head budget of all
/// connections), or `other` (HTTP/2 protocol errors, I/O errors). [`serve_http`] counts two
/// more itself: `header_timeout` for a connection that sends nothing in time, and
/// `response_stalled` for one whose client does not take a response within its request
/// timeout.
pub fn connection_error_reason(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<HeadBudgetSpent>().is_some() {
            return "memory_budget";
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<HeadBudgetSpent>())
            {
                return "memory_budget";
            }
        }
        cause = e.source();
    }
    match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_parse_too_large() => "head_too_large",
        Some(e) if e.is_parse() => "malformed",
        Some(e) if e.is_timeout() => "header_timeout",
        Some(e) if e.is_incomplete_message() => "incomplete",
        _ => "other",
    }
}
