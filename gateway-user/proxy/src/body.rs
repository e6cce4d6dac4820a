//! The response body the proxy sends: a backend's body or one the proxy wrote, counted as it
//! goes, cut off when the request's deadline passes, and reported (metrics, access log) once
//! it ends, or is dropped because the client went away.
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::backend_h1::BackendBody;

use super::access_log::{self, Entry};
use super::listener::ConnGuard;
use super::upstream::InFlight;
use super::Core;
use crate::metrics::RouteLabel;

/// Errors a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the bytes come from.
enum Source {
    Upstream(BackendBody),
    Full(Full<Bytes>),
}

/// The response body of every request.
pub struct ResponseBody {
    source: Source,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    sent: u64,
    done: Option<Completion>,
}

/// The request timeout passed while the response body was being sent.
#[derive(Debug, thiserror::Error)]
#[error("the request timeout passed while the response was being sent")]
pub struct DeadlinePassed;

impl ResponseBody {
    /// A body the proxy wrote. Bound, like a backend's, to end in time: within the idle
    /// timeout (it has no request timeout), else the connection is closed (a client that does
    /// not take it would keep its connection busy, never idle).
    pub fn full(bytes: impl Into<Bytes>, mut done: Completion) -> Self {
        let bound = crate::clock::now_ms() + done.core.limits.idle_timeout.as_millis() as u64;
        done._conn.bound(bound);
        ResponseBody {
            source: Source::Full(Full::new(bytes.into())),
            deadline: None,
            sent: 0,
            done: Some(done),
        }
    }

    /// A backend's body, cut off when `deadline` fires (the timer of the attempt that
    /// brought it, already running). The timer is looked at only when hyper polls the body,
    /// which it does not while the client leaves what was sent untaken (an HTTP/2
    /// flow-control window at 0, an HTTP/1.1 socket not read): the deadline is also given to
    /// the connection, whose tick closes it when the body is still there past it.
    pub fn upstream(
        body: BackendBody,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        mut done: Completion,
    ) -> Self {
        if let Some(d) = &deadline {
            done._conn
                .bound(crate::clock::ms_of(d.deadline().into_std()));
        }
        // The backend has answered: the request's head is no longer held.
        done._conn.uncharge();
        ResponseBody {
            source: Source::Upstream(body),
            deadline,
            sent: 0,
            done: Some(done),
        }
    }

    fn finish(&mut self, aborted: bool) {
        if let Some(done) = self.done.take() {
            done.finish(self.sent, aborted);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                if let Some(done) = this.done.as_mut() {
                    done.reason = "timeout";
                }
                this.finish(true);
                return Poll::Ready(Some(Err(Box::new(DeadlinePassed))));
            }
        }
        let polled = match &mut this.source {
            Source::Upstream(b) => Pin::new(b).poll_frame(cx),
            Source::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        };
        match polled {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_mut() {
                    // A backend's trailers, on any path: what a trailer may not carry is not
                    // passed on (an HTTP/2 client's stream would be reset for a hop-by-hop one).
                    crate::forwarded::strip_trailers(trailers);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // A gRPC call whose request grew past the body limit after the backend had
                // begun to answer: the call ends with gRPC's status for a message too large
                // in the trailers, as the proxy's own answer before the response would say
                // (a reset would read INTERNAL to the client).
                let grpc_too_large = this
                    .done
                    .as_ref()
                    .is_some_and(|d| d.grpc && d.body.as_ref().is_some_and(|b| b.too_large()));
                if let Some(done) = this.done.as_mut() {
                    done.reason = "reset";
                }
                this.finish(true);
                if grpc_too_large {
                    this.source = Source::Full(Full::new(Bytes::new()));
                    let mut trailers = crate::grpc::trailers_only(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        "the request is larger than the route's body limit",
                    );
                    trailers.remove(http::header::CONTENT_TYPE);
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(b) => b.is_end_stream(),
            Source::Full(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(b) => b.size_hint(),
            Source::Full(b) => b.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the connection closed).
        let ended = self.is_end_stream();
        self.finish(!ended);
    }
}

/// Everything reported about a request once its response ends.
pub struct Completion {
    pub(crate) core: Arc<Core>,
    /// `namespace/name` or `none`.
    pub route: Arc<str>,
    /// The method.
    pub method: Method,
    /// The status sent.
    pub status: u16,
    /// When the request arrived.
    pub started: Instant,
    /// The endpoint that answered, held in flight until the body ends.
    pub upstream: Option<InFlight>,
    /// The client's address.
    pub client: IpAddr,
    /// The host (lower-case, no port).
    pub host: String,
    /// The normalised path (or the raw one when it could not be normalised).
    pub path: String,
    /// Why the proxy answered itself, or `-`.
    pub reason: &'static str,
    /// A gRPC call: the proxy's own answers are gRPC statuses ([`crate::grpc`]).
    pub grpc: bool,
    /// What the route's rate limits said: `-` (none), `ok`, `refused` or `shadow`.
    pub ratelimit: &'static str,
    /// The policy of the limit that refused (or would have refused) the request.
    pub ratelimit_policy: Option<Arc<str>>,
    /// The authenticated consumer.
    pub consumer: Option<Arc<str>>,
    /// The request body streamed to the backend, if one was: a response cut off because the
    /// body grew past the limit is counted as such.
    pub body: Option<Arc<BodyState>>,
    pub(crate) _conn: ConnGuard,
    /// Counted and logged ([`Completion::finish`]); one dropped without it is a request the
    /// client abandoned before its response began (a stream reset, a connection closed).
    pub(crate) recorded: bool,
}

/// The status counted and logged for a request the client abandoned before any response
/// began (nginx's "client closed request"): it is no HTTP status, and never sent.
pub const CLIENT_CLOSED: u16 = 499;

impl Drop for Completion {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        // Abandoned before the response began (its future dropped): counted and logged too,
        // so that rapid resets of accepted streams, or clients that give up on a slow
        // backend, show in the metrics and the access log.
        self.status = CLIENT_CLOSED;
        self.reason = "client_closed";
        self.record(0, true);
    }
}

/// The method label: one of a fixed set, or `OTHER`, so that the label stays bounded.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

impl Completion {
    fn finish(mut self, bytes: u64, aborted: bool) {
        self.record(bytes, aborted);
        self.recorded = true;
    }

    fn record(&mut self, bytes: u64, aborted: bool) {
        let elapsed = self.started.elapsed();
        let metrics = &self.core.metrics;
        if aborted && self.body.as_ref().is_some_and(|b| b.too_large()) {
            // The backend had started answering when the body went over the limit.
            self.reason = "body_too_large";
            metrics
                .body_too_large
                .get_or_create(&RouteLabel {
                    route: self.route.to_string(),
                })
                .inc();
        }
        self.core.route_series().record(
            metrics,
            &self.route,
            method_label(&self.method),
            self.status,
            elapsed.as_secs_f64(),
        );
        if self.core.sampler.should_log(self.status) {
            let client = self.client.to_string();
            access_log::emit(&Entry {
                route: &self.route,
                method: self.method.as_str(),
                host: &self.host,
                path: &self.path,
                status: self.status,
                latency_ms: elapsed.as_secs_f64() * 1000.0,
                upstream: self
                    .upstream
                    .as_ref()
                    .map_or("-", |u| u.endpoint().authority.as_str()),
                bytes,
                client: &client,
                reason: self.reason,
                ratelimit: self.ratelimit,
                ratelimit_policy: self.ratelimit_policy.as_deref().unwrap_or("-"),
                consumer: self.consumer.as_deref().unwrap_or("-"),
                aborted,
            });
        }
    }
}

/// What became of a request body being streamed to a backend (see [`LimitedBody`]).
#[derive(Debug, Default)]
pub struct BodyState(std::sync::atomic::AtomicU8);

impl BodyState {
    const STREAMING: u8 = 0;
    const COMPLETE: u8 = 1;
    const TOO_LARGE: u8 = 2;
    const CLIENT_ERROR: u8 = 3;

    fn set(&self, v: u8) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The whole body has been read from the client (or there was none to stream).
    pub fn set_complete(&self) {
        self.set(Self::COMPLETE);
    }

    /// The body grew past the limit and was cut off.
    pub fn too_large(&self) -> bool {
        self.get() == Self::TOO_LARGE
    }

    /// The client failed to send the whole body (it went away, or broke the framing).
    pub fn client_error(&self) -> bool {
        self.get() == Self::CLIENT_ERROR
    }

    /// The client has not sent the whole body yet.
    pub fn incomplete(&self) -> bool {
        self.get() == Self::STREAMING
    }
}

/// A request body streamed to a backend, cut off with [`BodyTooLarge`] once more than `limit`
/// bytes have come (HTTP/1.1 chunks or HTTP/2 DATA frames alike). The error aborts the
/// upstream request; `state` tells the proxy why it failed, so that a client's fault (a body
/// too large, too slow or broken) is never blamed on the backend.
pub struct LimitedBody {
    inner: ClientBody,
    remaining: u64,
    state: Arc<BodyState>,
}

/// A request body grew past the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the route's limit")]
pub struct BodyTooLarge;

impl LimitedBody {
    /// `inner`, cut off after `limit` bytes; `state` records how it ended.
    pub fn new(inner: ClientBody, limit: u64, state: Arc<BodyState>) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            state,
        }
    }
}

/// How much of a request body the proxy does not use [`ClientBody`] reads, at most, and for
/// how long.
pub const DISCARD_BYTES: u64 = 1 << 20;
/// See [`DISCARD_BYTES`].
pub const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// A client's request body (hyper's), which, dropped before its end over HTTP/2, is read to its
/// end and dropped on a task of its own, up to [`DISCARD_BYTES`] or [`DISCARD_TIME`], whichever
/// comes first: whenever the proxy answers without the whole body (413 for its length or cut
/// off at the limit, 401, 404, 429...).
///
/// Why: over HTTP/2 a request body dropped unread makes the stream reset after the response
/// (`RST_STREAM` with `NO_ERROR`, RFC 9113 section 8.1), which some clients still uploading
/// take for a failed request, dropping the response (curl 7.88: "Empty reply from server"
/// where the answer was 413). Read to its end, the stream ends cleanly. The bounds keep a
/// client from making the proxy read an endless body: past them, the stream is reset as
/// before. Not when the client waits for `100 Continue` (reading the body would ask for it),
/// and not over HTTP/1, whose connection is closed after such an answer (`router::handle`).
pub struct ClientBody {
    inner: Option<Incoming>,
    discard: bool,
}

impl ClientBody {
    /// The body of `req`, discarded when dropped early if the request is HTTP/2 and does not
    /// wait for `100 Continue`.
    pub fn of(req: http::Request<Incoming>) -> http::Request<ClientBody> {
        // A request without a body (most) has nothing to discard: no header look-up.
        let discard = !req.body().is_end_stream()
            && req.version() >= http::Version::HTTP_2
            && !req.headers().contains_key(http::header::EXPECT);
        req.map(|inner| ClientBody {
            inner: Some(inner),
            discard,
        })
    }

    /// Gives the body up now, as a drop does: the rest is discarded (see above), and this
    /// body reads as ended.
    pub fn give_up(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.discard || body.is_end_stream() {
            return;
        }
        // Outside a runtime (never in the proxy), the body is simply dropped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut body = body;
            let mut read = 0u64;
            let _ = tokio::time::timeout(DISCARD_TIME, async {
                while read <= DISCARD_BYTES {
                    match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                        Some(Ok(frame)) => {
                            read += frame.data_ref().map_or(0, |d| d.len() as u64);
                        }
                        Some(Err(_)) | None => return,
                    }
                }
            })
            .await;
        });
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.give_up();
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx).map_ok(|mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    // A client's trailers (HTTP/2 on to an HTTP/2 backend; HTTP/1.1 drops
                    // them): what no trailer may carry would have the backend reset the
                    // stream, and the consumer field is only ever the proxy's.
                    crate::forwarded::strip_trailers(trailers);
                    trailers.remove(crate::auth::CONSUMER_HEADER);
                }
                frame
            }),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.remaining = 0;
                        this.state.set(BodyState::TOO_LARGE);
                        this.inner.give_up();
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= n;
                }
                if this.inner.is_end_stream() {
                    this.state.set_complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.set(BodyState::CLIENT_ERROR);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.state.set_complete();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
