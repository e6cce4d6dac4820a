//! HTTP/1.1 to backends, cleartext or TLS: hyper's connection-level client, with the proxy's
//! own pool of idle connections per endpoint and worker thread.
//!
//! Why not hyper-util's pooled client (which the TLS backends used until stop 34): for each
//! request it locks a pool shared by the thread, hashes the pool key, and spawns a task that
//! waits for the connection to be ready again before it goes back to the pool. Relaying with
//! no other work, that cost 12.9 µs of CPU per request where this pool costs 10.7
//! (docs/benchmarks-issue13-part3.md, round 13; through a TLS backend, 0.81x the CPU per
//! request, round 15). Here a connection goes back to its endpoint's idle list (a `Vec`
//! behind a lock only its worker thread takes) when the response body has been read to its
//! end, from the request's own task.
//!
//! Requests with no body (most of an API's traffic) take the lean path ([`lean`]): the
//! request's own task writes the head and reads the response, with no task per connection
//! (docs/benchmarks-issue13-part3.md, round 18). The rest (bodies, `Expect`) goes through
//! hyper's connection-level client, on connections of its own.
//!
//! The rules of a pooled connection, on either path:
//! - it goes back only when its response ended whole: a body left unread, cut off, refused for
//!   its framing or dropped for a retry closes the connection (hyper closes one whose body
//!   receiver is gone), so where one response ended is never a guess;
//! - it is closed after [`crate::Limits::pool_idle_timeout`] unused (the watchdog in the task
//!   that drives a hyper connection, the sweeper of an endpoint's lean ones), and an endpoint
//!   keeps at most
//!   [`crate::Limits::pool_max_idle_per_endpoint`] idle per worker thread;
//! - a request that a reused connection gives back unsent (the backend closed it while idle,
//!   as the request left) is sent again on a new connection, as hyper-util does: none of it
//!   reached the backend.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tracing::debug;

use super::backend_h2::connect_tcp;
use super::backend_tls::TlsBackend;
use super::body::BoxError;
use super::clock::now_ms;
use super::upstream::{Endpoint, Failure};
use super::UpstreamBody;

mod lean;

/// How a pool is run: from [`crate::Limits`].
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Time to connect.
    pub connect_timeout: Duration,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker thread.
    pub max_idle: usize,
}

/// One connection: what sends on it, when it went idle (0: in use), and the TLS settings it
/// was opened with (`None`: cleartext).
struct Conn {
    sender: SendRequest<UpstreamBody>,
    idle_since: Arc<AtomicU64>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Conn {
    /// Whether it was opened the way a request with `tls` is to be sent: cleartext for
    /// cleartext, and for TLS with the very settings (trust anchors, client certificate) of
    /// the revision in force. A Backend's TLS settings are built anew with each revision, so
    /// a connection opened under the previous one is never used under the next (as with a
    /// changed CA, or a Backend that turned to TLS while keeping its endpoints).
    fn opened_as(&self, tls: Option<&TlsBackend>) -> bool {
        opened_as(self.tls.as_ref(), tls)
    }
}

/// Whether a connection opened with the TLS settings `mine` (`None`: cleartext) may carry a
/// request to be sent as `tls` says (see [`Conn::opened_as`]): the same `Arc`, or both none.
fn opened_as(mine: Option<&Arc<rustls::ClientConfig>>, tls: Option<&TlsBackend>) -> bool {
    match (mine, tls) {
        (None, None) => true,
        (Some(mine), Some(t)) => Arc::ptr_eq(mine, &t.http1),
        _ => false,
    }
}

/// The TLS handshake of an HTTP/1.1 connection to a backend with `tls`, within `timeout`. No
/// ALPN (the configuration has none): the server speaks HTTP/1.1.
async fn handshake(
    tcp: tokio::net::TcpStream,
    t: &TlsBackend,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, (Failure, BoxError)> {
    let connector = tokio_rustls::TlsConnector::from(t.http1.clone());
    tokio::time::timeout(timeout, connector.connect(t.h2.name.clone(), tcp))
        .await
        .map_err(|_| (Failure::Tls, "the TLS handshake did not end in time".into()))?
        .map_err(|e| (Failure::Tls, BoxError::from(e)))
}

/// A worker thread's idle connections to one endpoint, on a cache line of their own (the
/// lists of two workers side by side would make their locks share one).
#[repr(align(128))]
#[derive(Default)]
struct Slot(Mutex<Lists>);

/// The idle connections of hyper's client and of the lean path (a connection stays with the
/// one that opened it), and whether a sweeper closes the lean ones that pass the idle timeout.
#[derive(Default)]
struct Lists {
    hyper: Vec<Conn>,
    /// Boxed: a lean connection moves as a pointer between this list and a response body.
    #[allow(clippy::vec_box)]
    lean: Vec<Box<lean::Conn>>,
    sweeping: bool,
}

/// The idle HTTP/1.1 connections of one endpoint, one list per worker thread (a connection is
/// driven by a task of the worker that opened it, and used only by that worker).
pub struct Idle {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").finish_non_exhaustive()
    }
}

impl Default for Idle {
    fn default() -> Self {
        Idle {
            slots: (0..crate::worker_count())
                .map(|_| Slot::default())
                .collect(),
        }
    }
}

impl Idle {
    fn slot_index(&self) -> usize {
        crate::worker() % self.slots.len()
    }

    fn slot(&self) -> &Mutex<Lists> {
        &self.slots[self.slot_index()].0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.slot().lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle lean connection that the backend has not closed, opened
    /// as `tls` says and not about to be closed for idleness; closed, expired and unsuitable
    /// ones are dropped.
    fn take_lean(
        &self,
        idle_timeout: Duration,
        tls: Option<&TlsBackend>,
    ) -> Option<Box<lean::Conn>> {
        let now = now_ms();
        let limit = idle_timeout.as_millis() as u64;
        let mut lists = self.lock();
        while let Some(mut c) = lists.lean.pop() {
            if now.saturating_sub(c.idle_since) < limit && c.opened_as(tls) && c.usable() {
                return Some(c);
            }
        }
        None
    }

    /// A lean connection whose response ended whole, kept unless the endpoint already keeps
    /// `max_idle`; the sweeper started if none runs.
    fn give_back_lean(
        &self,
        endpoint: &Arc<Endpoint>,
        mut conn: Box<lean::Conn>,
        max_idle: usize,
        idle_timeout: Duration,
    ) {
        let mut lists = self.lock();
        if lists.lean.len() >= max_idle {
            // Full: those the backend closed meanwhile make room (looked at only now, not on
            // every give-back).
            lists.lean.retain_mut(|c| c.usable());
            if lists.lean.len() >= max_idle {
                return; // dropped: closed
            }
        }
        // The sweeper runs on this worker's runtime; outside one (a body dropped as its runtime
        // went away) the connection is not kept.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        conn.idle_since = now_ms();
        lists.lean.push(conn);
        if !lists.sweeping {
            lists.sweeping = true;
            drop(lists);
            runtime.spawn(lean::sweep(
                Arc::downgrade(endpoint),
                self.slot_index(),
                idle_timeout,
            ));
        }
    }

    /// The sweeper's round over worker `slot`'s idle lean connections: those idle for `limit`
    /// ms or closed by the backend are dropped; the oldest one's idle time is returned, or
    /// `None` when none is left (and the sweeper ends).
    fn expire_lean(&self, slot: usize, limit: u64) -> Option<u64> {
        let now = now_ms();
        let mut lists = self.slots[slot].0.lock().unwrap_or_else(|e| e.into_inner());
        lists
            .lean
            .retain_mut(|c| now.saturating_sub(c.idle_since) < limit && c.usable());
        let oldest = lists.lean.iter().map(|c| c.idle_since).min();
        if oldest.is_none() {
            lists.sweeping = false;
        }
        oldest
    }

    /// The most recently used idle connection that is open, ready for a request and not about
    /// to be closed for idleness, marked in use. One that is not ready yet (its previous
    /// exchange is not over: a backend that answered before the request body was all sent) is
    /// left for later rather than waited for; closed and expired ones are dropped.
    fn take(&self, idle_timeout: Duration, tls: Option<&TlsBackend>) -> Option<Conn> {
        let now = now_ms();
        let limit = idle_timeout.as_millis() as u64;
        let mut lists = self.lock();
        let list = &mut lists.hyper;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let c = &list[i];
            let since = c.idle_since.load(Ordering::Relaxed);
            if c.sender.is_closed() || now.saturating_sub(since) >= limit || !c.opened_as(tls) {
                list.remove(i);
            } else if c.sender.is_ready() {
                let c = list.remove(i);
                c.idle_since.store(0, Ordering::Relaxed);
                return Some(c);
            }
        }
        None
    }

    /// Idle connections kept now, for this worker thread (tests).
    pub fn idle_here(&self) -> usize {
        let mut lists = self.lock();
        let hyper = lists.hyper.iter().filter(|c| !c.sender.is_closed()).count();
        let mut lean = 0;
        for c in lists.lean.iter_mut() {
            lean += usize::from(c.usable());
        }
        hyper + lean
    }
}

/// A connection in use, given back to its endpoint's idle list by [`BackendBody`] when the
/// response ended whole.
struct Checkin {
    conn: Conn,
    endpoint: Arc<Endpoint>,
    max_idle: usize,
}

impl Checkin {
    fn give_back(self) {
        if self.conn.sender.is_closed() {
            return;
        }
        let mut lists = self.endpoint.h1.lock();
        let list = &mut lists.hyper;
        list.retain(|c| !c.sender.is_closed());
        if list.len() >= self.max_idle {
            return; // dropped: its task ends, and the socket is closed
        }
        self.conn.idle_since.store(now_ms(), Ordering::Relaxed);
        list.push(self.conn);
    }
}

/// A backend's response body; an HTTP/1.1 pooled connection goes back to its pool when the
/// body has been read to its end (or dropped at its end, as hyper's server does once a body
/// says it has ended), and is closed otherwise.
pub struct BackendBody(Inner);

enum Inner {
    /// From hyper's client (HTTP/2, and HTTP/1.1 requests with a body).
    Hyper {
        inner: Incoming,
        checkin: Option<Checkin>,
    },
    /// From the lean path.
    Lean(lean::Body),
}

impl From<Incoming> for BackendBody {
    fn from(inner: Incoming) -> Self {
        BackendBody(Inner::Hyper {
            inner,
            checkin: None,
        })
    }
}

impl BackendBody {
    fn lean(body: lean::Body) -> Self {
        BackendBody(Inner::Lean(body))
    }

    /// The connection is not to be used again (its response's framing was refused).
    pub fn discard_connection(&mut self) {
        match &mut self.0 {
            Inner::Hyper { checkin, .. } => *checkin = None,
            Inner::Lean(b) => b.discard_connection(),
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Hyper { inner, checkin } => {
                let polled = Pin::new(inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(c) = checkin.take() {
                            c.give_back();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => *checkin = None,
                    _ => {}
                }
                polled.map_err(BoxError::from)
            }
            Inner::Lean(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Hyper { inner, .. } => inner.is_end_stream(),
            Inner::Lean(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Hyper { inner, .. } => inner.size_hint(),
            Inner::Lean(b) => b.size_hint(),
        }
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        // A lean body gives its connection back by itself.
        if let Inner::Hyper { inner, checkin } = &mut self.0 {
            if inner.is_end_stream() {
                if let Some(c) = checkin.take() {
                    c.give_back();
                }
            }
        }
    }
}

/// Why [`send`] brought no response.
pub struct SendError {
    /// What kind of failure.
    pub failure: Failure,
    /// The cause (for the log).
    pub error: BoxError,
    /// The request, when none of it was sent (no connection could be made, or the connection
    /// gave it back), as it was given to [`send`]: another attempt can take it rather than a
    /// copy made in case.
    pub unsent: Option<Box<Request<UpstreamBody>>>,
}

/// Sends `req` (origin-form target) to `endpoint` over HTTP/1.1, over TLS with the Backend's
/// settings when `tls`: on an idle connection of this worker thread when there is one, else on
/// a new one. `Host` is set to the endpoint's address when the request has none (HTTP/1.1
/// requires one).
#[allow(clippy::manual_async_fn)] // the future's size: see `router::forward::forward`
pub fn send<'a>(
    endpoint: &'a Arc<Endpoint>,
    settings: PoolSettings,
    tls: Option<&'a TlsBackend>,
    mut req: Request<UpstreamBody>,
) -> impl Future<Output = Result<Response<BackendBody>, SendError>> + Send + use<'a> {
    async move {
        let added_host = !req.headers().contains_key(header::HOST);
        if added_host {
            if let Ok(v) = HeaderValue::from_str(&endpoint.authority) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        // The request as it came, for another attempt (to another endpoint: not its Host).
        let give_back = |mut req: Request<UpstreamBody>| {
            if added_host {
                req.headers_mut().remove(header::HOST);
            }
            Some(Box::new(req))
        };
        if lean::eligible(&req) {
            return lean::send(endpoint, settings, tls, req)
                .await
                .map_err(|mut e| {
                    e.unsent = e.unsent.and_then(|r| give_back(*r));
                    e
                });
        }
        loop {
            let (mut conn, reused) = match endpoint.h1.take(settings.idle_timeout, tls) {
                Some(c) => (c, true),
                // Boxed: a new connection's future (TLS handshake included) is the largest
                // part of this one, and most requests reuse a connection.
                None => match Box::pin(connect(&endpoint.authority, settings, tls)).await {
                    Ok(c) => (c, false),
                    Err((failure, error)) => {
                        return Err(SendError {
                            failure,
                            error,
                            unsent: give_back(req),
                        })
                    }
                },
            };
            // A new connection is ready once hyper's task has started it (a pooled one already
            // is); an error: it has closed.
            if let Err(e) = conn.sender.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError {
                    failure: Failure::NotSent,
                    error: e.into(),
                    unsent: give_back(req),
                });
            }
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    let checkin = Checkin {
                        conn,
                        endpoint: endpoint.clone(),
                        max_idle: settings.max_idle,
                    };
                    return Ok(resp.map(|inner| {
                        BackendBody(Inner::Hyper {
                            inner,
                            checkin: Some(checkin),
                        })
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        debug!(endpoint = %endpoint.authority, error = %e.error(), "pooled connection closed before the request was sent; sending it on another");
                        req = unsent;
                    }
                    unsent => {
                        let error = e.into_error();
                        let failure = if unsent.is_some() {
                            Failure::NotSent
                        } else {
                            Failure::of_hyper(&error)
                        };
                        return Err(SendError {
                            failure,
                            error: error.into(),
                            unsent: unsent.and_then(give_back),
                        });
                    }
                },
            }
        }
    }
}

/// Opens a connection (the TCP connection, then the TLS handshake when `tls`, each within the
/// connect timeout) and starts driving it on this thread's runtime.
async fn connect(
    authority: &str,
    settings: PoolSettings,
    tls: Option<&TlsBackend>,
) -> Result<Conn, (Failure, BoxError)> {
    let tcp = connect_tcp(authority, settings.connect_timeout)
        .await
        .map_err(|e| (Failure::Connect, e))?;
    match tls {
        None => start(TokioIo::new(tcp), authority, settings, None).await,
        Some(t) => {
            let stream = handshake(tcp, t, settings.connect_timeout).await?;
            start(
                TokioIo::new(stream),
                authority,
                settings,
                Some(t.http1.clone()),
            )
            .await
        }
    }
}

/// Starts HTTP/1.1 on an open connection, in a task of this thread's runtime that drives it
/// and closes it when it has been idle for the idle timeout.
async fn start<I>(
    io: I,
    authority: &str,
    settings: PoolSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Conn, (Failure, BoxError)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| (Failure::Connect, BoxError::from(e)))?;
    let idle_since = Arc::new(AtomicU64::new(0));
    let watched = idle_since.clone();
    let authority = authority.to_owned();
    let idle_timeout = settings.idle_timeout;
    tokio::spawn(async move {
        tokio::pin!(conn);
        // Wakes once per idle timeout at most, not per request: a connection that went idle at
        // `since` is closed at `since + idle_timeout` unless it was taken meanwhile.
        let mut wake = tokio::time::Instant::now() + idle_timeout;
        loop {
            tokio::select! {
                biased;
                ended = conn.as_mut() => {
                    if let Err(error) = ended {
                        debug!(endpoint = %authority, %error, "HTTP/1.1 connection to the backend ended");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(wake) => {
                    let since = watched.load(Ordering::Relaxed);
                    let now = now_ms();
                    let limit = idle_timeout.as_millis() as u64;
                    if since != 0 && now.saturating_sub(since) >= limit {
                        debug!(endpoint = %authority, "idle HTTP/1.1 connection to the backend closed");
                        return;
                    }
                    // In use: looked at again one timeout (at least a second) later.
                    let left = if since == 0 { limit.max(1000) } else { since + limit - now };
                    wake = tokio::time::Instant::now() + Duration::from_millis(left.max(1));
                }
            }
        }
    });
    Ok(Conn {
        sender,
        idle_since,
        tls,
    })
}

#[cfg(test)]
mod tests;
