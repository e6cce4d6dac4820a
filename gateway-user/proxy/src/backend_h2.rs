//! HTTP/2 to backends (`Backend` `appProtocol: kubernetes.io/h2c` or `tollgate.dev/h2`): one
//! multiplexed connection per endpoint and worker thread, opened on first use and opened again
//! once the backend closed it (GOAWAY, reset, keep-alive ping unanswered). In cleartext the
//! connection starts with the HTTP/2 preface (prior knowledge, RFC 9113 3.3); in TLS the
//! handshake offers ALPN `h2` only, and a server that does not select it fails the attempt as
//! a TLS failure (nothing was sent).
//!
//! hyper's connection-level client is used rather than hyper-util's pooled one because the
//! latter takes the address to connect to from the request's URI, which in HTTP/2 is also
//! the `:authority` the backend sees: a proxy must send the client's host there (RFC 9113
//! 8.3.1), not the endpoint's address.
//!
//! The connection of an endpoint is kept in its [`H2Pool`] entry, which belongs to the
//! [`super::upstream::BackendRuntime`], so that it outlives revisions that keep the Backend.
//! An entry remembers the TLS configuration it was opened with: a revision that loads new
//! certificates gets new connections.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tracing::debug;

use super::body::BoxError;
use super::upstream::Failure;
use super::UpstreamBody;

/// How often an HTTP/2 connection to a backend is pinged, and how long an answer may take,
/// before it is given up (a dead peer that never sent GOAWAY is found within about 30 s).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// See [`KEEP_ALIVE_INTERVAL`].
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What TLS to speak to an HTTP/2 backend.
#[derive(Clone)]
pub struct H2Tls {
    /// The Backend's rustls configuration with ALPN `h2`.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI, and the name the certificate must be valid for.
    pub name: ServerName<'static>,
}

/// One connection in a pool entry.
struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// The TLS configuration it was opened with (`None`: cleartext).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Which connection of the entry this is (the first is 0).
    id: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// The HTTP/2 connections of one Backend, by worker thread and endpoint.
#[derive(Default)]
pub struct H2Pool {
    slots: Mutex<HashMap<(usize, String), Slot>>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool").finish_non_exhaustive()
    }
}

/// Why an attempt on an HTTP/2 connection failed: what it means for retries, and the error.
pub struct H2Error {
    /// What kind of failure.
    pub failure: Failure,
    /// The cause (for the log).
    pub error: BoxError,
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

fn fail(failure: Failure, error: impl Into<BoxError>) -> H2Error {
    H2Error {
        failure,
        error: error.into(),
    }
}

impl H2Pool {
    /// Sends `req` to `authority` on the connection of this worker thread (`worker`), opening
    /// one first when there is none or it has closed. Concurrent requests wait for one
    /// connection to be opened rather than each opening their own. A request the connection
    /// gives back unsent (it was closing: GOAWAY, or the backend closed it while idle) is sent
    /// once more on a new connection, as hyper-util's pooled client does: nothing of it
    /// reached the backend.
    pub async fn send(
        &self,
        worker: usize,
        authority: &str,
        tls: Option<&H2Tls>,
        connect_timeout: Duration,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, H2Error> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry((worker, authority.to_owned()))
                .or_default()
                .clone()
        };
        let mut stale = None;
        loop {
            let (id, mut sender) = {
                let mut conn = slot.lock().await;
                let usable = conn.as_ref().is_some_and(|c| {
                    Some(c.id) != stale
                        && !c.sender.is_closed()
                        && match (&c.tls, tls) {
                            (None, None) => true,
                            (Some(a), Some(b)) => Arc::ptr_eq(a, &b.config),
                            _ => false,
                        }
                });
                if !usable {
                    let id = conn.as_ref().map_or(0, |c| c.id + 1);
                    *conn = Some(Conn {
                        sender: connect(authority, tls, connect_timeout).await?,
                        tls: tls.map(|t| t.config.clone()),
                        id,
                    });
                }
                match conn.as_ref() {
                    Some(c) => (c.id, c.sender.clone()),
                    None => return Err(fail(Failure::Connect, "no connection")),
                }
            };
            let retry = stale.is_none();
            // Waits while the connection is at the backend's SETTINGS_MAX_CONCURRENT_STREAMS;
            // an error here means it closed before the request was handed to it.
            if let Err(e) = sender.ready().await {
                if retry {
                    stale = Some(id);
                    continue;
                }
                return Err(fail(Failure::NotSent, e));
            }
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    // The client may be on HTTP/1.1: the version is the proxy's, not the
                    // backend's.
                    *resp.version_mut() = http::Version::HTTP_11;
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if retry => {
                        debug!(endpoint = %authority, error = %e.error(), "HTTP/2 connection closed before the request was sent; sending it on a new one");
                        req = unsent;
                        stale = Some(id);
                    }
                    unsent => {
                        let error = e.into_error();
                        let failure = if unsent.is_some() || error.is_canceled() {
                            Failure::NotSent
                        } else if error.is_parse() {
                            Failure::InvalidResponse
                        } else {
                            Failure::Reset
                        };
                        return Err(fail(failure, error));
                    }
                },
            }
        }
    }
}

/// A TCP connection to `authority` (`host:port`; a name is resolved), within `timeout`.
pub async fn connect_tcp(authority: &str, timeout: Duration) -> Result<TcpStream, BoxError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection to {authority} within {timeout:?}"),
            )
        })??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens an HTTP/2 connection and starts driving it on this thread's runtime.
async fn connect(
    authority: &str,
    tls: Option<&H2Tls>,
    timeout: Duration,
) -> Result<SendRequest<UpstreamBody>, H2Error> {
    let tcp = connect_tcp(authority, timeout)
        .await
        .map_err(|e| fail(Failure::Connect, e))?;
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let handshake = match tls {
        None => {
            let (sender, conn) = builder
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| fail(Failure::Connect, e))?;
            spawn_connection(authority, conn);
            sender
        }
        Some(t) => {
            let connector = tokio_rustls::TlsConnector::from(t.config.clone());
            let stream = tokio::time::timeout(timeout, connector.connect(t.name.clone(), tcp))
                .await
                .map_err(|_| fail(Failure::Tls, "the TLS handshake did not end in time"))?
                .map_err(|e| fail(Failure::Tls, e))?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(fail(
                    Failure::Tls,
                    "the backend did not select HTTP/2 (ALPN h2) in the TLS handshake",
                ));
            }
            let (sender, conn) = builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail(Failure::Connect, e))?;
            spawn_connection(authority, conn);
            sender
        }
    };
    Ok(handshake)
}

fn spawn_connection<F>(authority: &str, conn: F)
where
    F: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
{
    let authority = authority.to_owned();
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            debug!(endpoint = %authority, %error, "HTTP/2 connection to the backend ended");
        }
    });
}

/// `req` (whose URI is the endpoint's, and whose `Host` is what the backend should see) as
/// HTTP/2 wants it: the host in the URI, where hyper takes `:authority` from, and no `Host`
/// header (RFC 9113 8.3.1: a client must not send a `Host` that differs from `:authority`).
/// Without a `Host`, the endpoint's address stays the authority. `None` when the `Host` cannot
/// be an authority (the listener's checks refuse such hosts before this).
pub fn with_authority<B>(mut req: Request<B>) -> Option<Request<B>> {
    if let Some(host) = req.headers_mut().remove(http::header::HOST) {
        let authority = http::uri::Authority::try_from(host.as_bytes()).ok()?;
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(authority);
        *req.uri_mut() = http::Uri::from_parts(parts).ok()?;
    }
    *req.version_mut() = http::Version::HTTP_2;
    Some(req)
}
