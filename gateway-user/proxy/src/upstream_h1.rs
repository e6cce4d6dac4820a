//! HTTP/1.1 to cleartext backends: keep-alive connections pooled per worker thread and
//! endpoint, each driven by the request that uses it, with no task of its own.
//!
//! hyper-util's pooled client runs a dispatch task per connection (the request is handed to
//! it through a channel, its response handed back through another), and one more task per
//! request to put the connection back into the pool once the response body ends: two or three
//! task wake-ups per request on top of the client connection's own. Here the request's future
//! polls hyper's connection-level state machine (`hyper::client::conn::http1`) alongside the
//! response future while it waits for the response head, and the response body
//! ([`BackendBody`]) polls it while the body is read, so the bytes are read and written by the
//! task that serves the client connection. The body puts the connection back into its pool
//! when it is dropped after its end; a body dropped before its end (the client went away, the
//! request timed out) closes the connection, since the rest of that response would be read as
//! the next one's.
//!
//! An idle connection is polled by no one. It is checked when it is taken out of the pool:
//! polled once, so a backend that closed it meanwhile is seen (the read returns end of file)
//! and the connection is dropped instead of used; and a sweep every [`SWEEP_INTERVAL`] drops
//! connections idle for longer than `pool_idle_timeout` or closed by their backend. A request
//! that the connection gives back unsent (the backend closed it as the request was handed
//! over) is sent again on another connection, as hyper-util's client does; a request that may
//! have left is not (the router's retry rules decide).
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::backend_h2::connect_tcp;
use super::body::BoxError;
use super::upstream::Failure;
use super::UpstreamBody;

/// How often a pool drops the connections idle for too long or closed by their backend.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, UpstreamBody>>>;

/// One connection to an endpoint.
struct Conn {
    sender: http1::SendRequest<UpstreamBody>,
    /// hyper's state machine of the connection (reads, writes); `None` once it has ended
    /// (closed by either side, or failed).
    driver: Option<Driver>,
    /// When it was put back into the pool.
    idle_since: Instant,
    /// The endpoint (`host:port`): its key in the pool.
    key: Arc<str>,
}

impl Conn {
    /// Moves the connection's bytes; false once the connection has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(d) = self.driver.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                // Ended (closed or failed): dropping it closes the socket; a request waiting
                // on it gets its error.
                self.driver = None;
            }
        }
        self.driver.is_some()
    }

    /// Can a new request be sent on it now? Polls it first: an idle connection its backend
    /// closed ends here, and an open one signals that it wants the next request.
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

/// The idle connections of one worker thread, by endpoint (`host:port`).
pub struct Pool {
    idle: Mutex<HashMap<Arc<str>, Vec<Conn>>>,
    idle_timeout: Duration,
    max_idle_per_endpoint: usize,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_connections())
            .finish()
    }
}

impl Pool {
    /// An empty pool: idle connections are closed after `idle_timeout`, at most
    /// `max_idle_per_endpoint` are kept per endpoint, and a connection must be made within
    /// `connect_timeout`.
    pub fn new(
        idle_timeout: Duration,
        max_idle_per_endpoint: usize,
        connect_timeout: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            max_idle_per_endpoint,
            connect_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Conn>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Idle connections kept now, over all endpoints.
    pub fn idle_connections(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// An idle connection to `authority` that can take a request now (the most recently used
    /// first: its backend is the least likely to have closed it).
    fn checkout(&self, authority: &str, cx: &mut Context<'_>) -> Option<Conn> {
        let mut idle = self.lock();
        let list = idle.get_mut(authority)?;
        let mut unusable = Vec::new();
        let mut found = None;
        while let Some(mut c) = list.pop() {
            if c.idle_since.elapsed() < self.idle_timeout && c.usable(cx) {
                found = Some(c);
                break;
            }
            unusable.push(c);
        }
        drop(idle);
        // Closed outside the lock.
        drop(unusable);
        found
    }

    /// Puts a connection whose response has ended back, unless the endpoint has its fill.
    fn checkin(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.lock();
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() < self.max_idle_per_endpoint {
            list.push(conn);
            return;
        }
        drop(idle);
        drop(conn);
    }

    /// Drops the connections idle for longer than the timeout or closed by their backend.
    fn sweep(&self, cx: &mut Context<'_>) {
        let mut gone = Vec::new();
        let mut idle = self.lock();
        for list in idle.values_mut() {
            let mut i = 0;
            while i < list.len() {
                let c = &mut list[i];
                if c.idle_since.elapsed() >= self.idle_timeout || !c.drive(cx) {
                    gone.push(list.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        idle.retain(|_, list| !list.is_empty());
        drop(idle);
        drop(gone);
    }

    /// Sweeps the pool every [`SWEEP_INTERVAL`] (at most every `idle_timeout`) until `stop`.
    pub async fn sweeper(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL.min(self.idle_timeout).max(
            // A zero timeout would make the interval panic; such a pool keeps nothing long.
            Duration::from_millis(10),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            std::future::poll_fn(|cx| {
                self.sweep(cx);
                Poll::Ready(())
            })
            .await;
        }
    }

    /// A new connection to `authority`.
    async fn connect(&self, authority: &str) -> Result<Conn, (Failure, BoxError)> {
        let tcp = connect_tcp(authority, self.connect_timeout)
            .await
            .map_err(|e| (Failure::Connect, e))?;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| (Failure::Connect, BoxError::from(e)))?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
            idle_since: Instant::now(),
            key: Arc::from(authority),
        })
    }

    /// Sends `req` to `authority` (`host:port`) on an idle connection of this pool, or a new
    /// one. The request's URI is sent in origin form, and a request without `Host` gets the
    /// endpoint's (as hyper-util's client does). The response body drives the connection and
    /// brings it back.
    pub async fn send(
        self: &Arc<Self>,
        authority: &str,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<BackendBody>, (Failure, BoxError)> {
        origin_form(&mut req, authority);
        loop {
            let idle = std::future::poll_fn(|cx| Poll::Ready(self.checkout(authority, cx))).await;
            let reused = idle.is_some();
            let mut conn = match idle {
                Some(c) => c,
                None => self.connect(authority).await?,
            };
            let mut sent = std::pin::pin!(conn.sender.try_send_request(req));
            let result = std::future::poll_fn(|cx| {
                // The connection first: it writes the request and reads the response.
                conn.drive(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => {
                    return Ok(resp.map(|body| BackendBody {
                        body,
                        conn: Some((conn, self.clone())),
                        ended: false,
                        error: None,
                    }))
                }
                Err(mut e) => match e.take_message() {
                    // Given back unsent on a connection that had served before: its backend
                    // closed it as the request was handed over. Another connection.
                    Some(back) if reused => req = back,
                    _ => {
                        let error = e.into_error();
                        return Err((Failure::of_hyper(&error), BoxError::from(error)));
                    }
                },
            }
        }
    }
}

/// The URI of an HTTP/1.1 request to an origin server is its path and query (RFC 9112 3.2.1);
/// the `Host` header, when the request has none, names the endpoint.
fn origin_form(req: &mut Request<UpstreamBody>, authority: &str) {
    let path = match req.uri().path_and_query() {
        Some(p) if p.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(p.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
    *req.uri_mut() = path;
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
}

/// A backend's response body; for a pooled HTTP/1.1 connection, also the connection, driven
/// while the body is read and put back into its pool once the body has ended.
pub struct BackendBody {
    body: Incoming,
    conn: Option<(Conn, Arc<Pool>)>,
    /// The body returned its end.
    ended: bool,
    /// An error found while driving the connection, handed over on the next poll.
    error: Option<hyper::Error>,
}

impl std::fmt::Debug for BackendBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendBody")
            .field("pooled", &self.conn.is_some())
            .field("ended", &self.ended)
            .finish()
    }
}

impl From<Incoming> for BackendBody {
    fn from(body: Incoming) -> Self {
        BackendBody {
            body,
            conn: None,
            ended: false,
            error: None,
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        // What the connection has read already first; then the connection is driven (it
        // reads more, and sends the rest of a request body still going out), and the body
        // asked again for what that brought.
        let polled = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => match this.conn.as_mut() {
                Some((c, _)) => {
                    c.drive(cx);
                    match Pin::new(&mut this.body).poll_frame(cx) {
                        Poll::Ready(Some(Err(e))) => {
                            // The connection failed (a reset mid-body) while hyper's server may
                            // still hold what this body gave it so far, the response head
                            // included, unwritten: an error now would end the client's
                            // connection without them. The error comes on the next poll, after
                            // the server has written what it holds.
                            this.error = Some(e);
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                        polled => polled,
                    }
                }
                None => Poll::Pending,
            },
            ready => ready,
        };
        if matches!(polled, Poll::Ready(None)) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        if let Some((conn, pool)) = self.conn.take() {
            // Only after the whole response was read may the next request use the
            // connection; a connection that has ended is of no use.
            if self.is_end_stream() && conn.driver.is_some() {
                pool.checkin(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that answers each request on a connection with `answer(n)` (n counts the
    /// requests of all connections, from 0); counts the connections it accepted.
    async fn backend(
        answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        backend_closing(answer, false).await
    }

    /// [`backend`], closing each connection after its first answer when `close`.
    async fn backend_closing(
        answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
        close: bool,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let (answer, requests) = (answer.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // One request head (these tests send no bodies).
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply = answer(requests.fetch_add(1, Ordering::SeqCst));
                            if reply.is_empty() {
                                return; // close without an answer
                            }
                            if s.write_all(&reply).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn request(path: &str) -> Request<UpstreamBody> {
        let mut req = Request::new(http_body_util::Either::Left(
            crate::upstream::ReplayBody::new(Bytes::new()).0,
        ));
        *req.uri_mut() = format!("http://ignored.example{path}").parse().unwrap();
        req
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    async fn body_of(resp: Response<BackendBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_has_ended() {
        let (addr, accepted) = backend(|_| OK.to_vec()).await;
        let pool = Pool::new(Duration::from_secs(30), 8, Duration::from_secs(1));
        for _ in 0..5 {
            let resp = pool.send(&addr, request("/a")).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(&body_of(resp).await[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
        assert_eq!(pool.idle_connections(), 1);
    }

    #[tokio::test]
    async fn a_chunked_body_and_a_bodiless_response_give_the_connection_back() {
        let (addr, accepted) = backend(|n| match n % 2 {
            0 => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                .to_vec(),
            _ => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        })
        .await;
        let pool = Pool::new(Duration::from_secs(30), 8, Duration::from_secs(1));
        for i in 0..4 {
            let resp = pool.send(&addr, request("/")).await.unwrap();
            if i % 2 == 0 {
                assert_eq!(&body_of(resp).await[..], b"ok");
            } else {
                assert_eq!(resp.status(), 204);
                drop(resp); // never polled, as hyper's server does with a 204
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (addr, accepted) =
            backend(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec()).await;
        let pool = Pool::new(Duration::from_secs(30), 8, Duration::from_secs(1));
        let resp = pool.send(&addr, request("/")).await.unwrap();
        drop(resp);
        assert_eq!(pool.idle_connections(), 0);
        let _ = pool.send(&addr, request("/")).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_not_used() {
        let (addr, accepted) = backend_closing(|_| OK.to_vec(), true).await;
        let pool = Pool::new(Duration::from_secs(30), 8, Duration::from_secs(1));
        for _ in 0..3 {
            let resp = pool.send(&addr, request("/")).await.unwrap();
            assert_eq!(&body_of(resp).await[..], b"ok");
            // The backend's close reaches the idle connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "a new connection each time"
        );
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_by_the_sweep() {
        let (addr, accepted) = backend(|_| OK.to_vec()).await;
        let pool = Pool::new(Duration::from_millis(100), 8, Duration::from_secs(1));
        let stop = CancellationToken::new();
        tokio::spawn(pool.clone().sweeper(stop.clone()));
        let resp = pool.send(&addr, request("/")).await.unwrap();
        body_of(resp).await;
        assert_eq!(pool.idle_connections(), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(pool.idle_connections(), 0, "swept");
        let resp = pool.send(&addr, request("/")).await.unwrap();
        body_of(resp).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        stop.cancel();
    }

    #[tokio::test]
    async fn at_most_the_idle_limit_is_kept_per_endpoint() {
        let (addr, _) = backend(|_| OK.to_vec()).await;
        let pool = Pool::new(Duration::from_secs(30), 2, Duration::from_secs(1));
        // Five at once: five connections, of which two stay.
        let responses: Vec<_> =
            futures_util::future::join_all((0..5).map(|_| pool.send(&addr, request("/")))).await;
        for r in responses {
            body_of(r.unwrap()).await;
        }
        assert_eq!(pool.idle_connections(), 2);
    }

    #[tokio::test]
    async fn failures_are_classified_for_the_retry_rules() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let pool = Pool::new(Duration::from_secs(30), 8, Duration::from_secs(1));
        let (f, _) = pool.send(&dead, request("/")).await.unwrap_err();
        assert_eq!(f, Failure::Connect);

        let (garbage, _) = backend(|_| b"SMTP ready\r\n\r\n".to_vec()).await;
        let (f, _) = pool.send(&garbage, request("/")).await.unwrap_err();
        assert_eq!(f, Failure::InvalidResponse);

        // A fresh connection closed without an answer: the request may have been applied.
        let (silent, _) = backend(|_| Vec::new()).await;
        let (f, _) = pool.send(&silent, request("/")).await.unwrap_err();
        assert_eq!(f, Failure::Reset);
    }

    #[tokio::test]
    async fn the_request_goes_out_in_origin_form_with_a_host() {
        let mut req = request("/p?q=1");
        origin_form(&mut req, "10.0.0.1:8080");
        assert_eq!(req.uri().to_string(), "/p?q=1");
        assert_eq!(req.headers()[header::HOST], "10.0.0.1:8080");
        let mut req = request("/");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("shop.example"));
        origin_form(&mut req, "10.0.0.1:8080");
        assert_eq!(req.uri().to_string(), "/");
        assert_eq!(req.headers()[header::HOST], "shop.example");
    }
}
