//! The lean HTTP/1.1 exchange: a request with no body, written to a pooled connection by the
//! request's own task, its response head parsed with httparse and its body relayed by its
//! framing. No task per connection, no channel, no callback: where hyper's connection-level
//! client wakes its connection's task to write the request and again to read the response,
//! then the request's task through a channel, this path reads and writes from the task that
//! waits for the answer (docs/benchmarks-issue13-part3.md, round 18).
//!
//! What it takes, and what it leaves to hyper's client ([`eligible`]): requests with no body
//! and a method whose request may be sent again when a reused connection turns out closed
//! (RFC 9110 section 9.2.2), with no `Expect` and no `Transfer-Encoding`. Bodies, `Expect`,
//! upgrades and HTTP/2 go the other ways.
//!
//! The response, as RFC 9112 section 6.3 frames it: no body for a `HEAD` request, a 204 or a
//! 304; chunked when `Transfer-Encoding` ends with `chunked`; else delimited by the close when
//! there is a `Transfer-Encoding` (the router refuses both of these unless `chunked` is alone
//! and without `Content-Length`); else `Content-Length` (several must agree, else 502); else
//! the close; chunk-size lines are read at least as strictly as hyper's decoder reads them
//! ([`chunk`]). Interim responses (1xx but 101) are read and dropped. The limits are hyper's
//! client's: a head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields.
//!
//! The connection goes back to its endpoint's idle list only when the body ended whole, where
//! its framing said, with nothing read past it, on an HTTP/1.1 response that did not say
//! `Connection: close`; anything else closes it.
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tracing::debug;

use super::{PoolSettings, SendError};
use crate::backend_h2::connect_tcp;
use crate::backend_tls::TlsBackend;
use crate::body::BoxError;
use crate::clock::now_ms;
use crate::upstream::{Endpoint, Failure};
use crate::UpstreamBody;

mod chunk;

/// The longest response head (and trailer section) read: hyper's client's default buffer
/// limit, so that a backend's answer is judged the same on either path.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The most fields in a response head: hyper's client's default.
pub const MAX_HEADERS: usize = 100;
/// The most interim (1xx) responses before the final one.
const MAX_INTERIM: usize = 16;
/// The longest chunk-size line (with its extensions) read.
const MAX_CHUNK_LINE: usize = 4096;
/// What a read asks room for.
const READ_SIZE: usize = 8192;

/// Whether the lean path takes `req`: no body, a method that may be sent again, no `Expect`,
/// no `Transfer-Encoding`, and a `Content-Length` (if any) of 0.
pub fn eligible(req: &Request<UpstreamBody>) -> bool {
    use http_body::Body as _;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) && req.body().is_end_stream()
        && !req.headers().contains_key(header::EXPECT)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
        && req
            .headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes() == b"0")
}

/// A connection's byte stream.
enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A pooled connection of the lean path: its stream, what was read and not yet used, the
/// buffer request heads are written into, when it went idle, and the TLS settings it was
/// opened with (`None`: cleartext). Boxed once, when opened, and moved as a pointer between
/// the pool and the response body: the body is part of every response, which is moved
/// several times on its way to hyper's server.
pub struct Conn {
    io: Io,
    read: BytesMut,
    write: Vec<u8>,
    pub(super) idle_since: u64,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Closed or failed while idle.
    broken: bool,
}

impl Conn {
    /// See [`super::Conn::opened_as`].
    pub(super) fn opened_as(&self, tls: Option<&TlsBackend>) -> bool {
        super::opened_as(self.tls.as_ref(), tls)
    }

    /// Whether the backend has neither closed it nor sent anything unasked while it was idle:
    /// a read that would wait. It costs no system call unless the socket became readable
    /// since the last read (the runtime keeps its readiness).
    /// What it found stays found: bytes read are kept (so the next look sees them too), a
    /// close or an error is remembered.
    pub(super) fn usable(&mut self) -> bool {
        if self.broken || !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut buf) {
            Poll::Pending => true,
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                self.read.extend_from_slice(buf.filled());
                false
            }
            Poll::Ready(_) => {
                self.broken = true;
                false
            }
        }
    }
}

/// What an exchange failed with. [`Failure::NotSent`]: the request head could not be written
/// (the backend had closed the connection: it got none of the request whole, which may go
/// again).
struct ExchangeError {
    failure: Failure,
    error: BoxError,
}

impl ExchangeError {
    fn invalid(why: &'static str) -> Self {
        ExchangeError {
            failure: Failure::InvalidResponse,
            error: why.into(),
        }
    }
}

/// Sends `req` (eligible, origin-form target, `Host` set) to `endpoint`: on an idle lean
/// connection of this worker thread when there is one, else on a new one; when the head
/// cannot be written to a reused one (the backend closed it as it was taken), once more on a
/// new one, as hyper's client path does with a request its connection gives back unsent. A
/// connection that closes after the head was written is a reset (the backend may have acted
/// on the request), for the router's retry rules to judge.
///
/// Its future is part of every request's (see `router::forward::forward` on their size): an
/// `async` block, and the connect, which most requests do not do, boxed.
#[allow(clippy::manual_async_fn)]
pub fn send<'a>(
    endpoint: &'a Arc<Endpoint>,
    settings: PoolSettings,
    tls: Option<&'a TlsBackend>,
    req: Request<UpstreamBody>,
) -> impl Future<Output = Result<Response<super::BackendBody>, SendError>> + Send + use<'a> {
    async move {
        let head_only = req.method() == Method::HEAD;
        let mut reuse = true;
        loop {
            let taken = if reuse {
                endpoint.h1.take_lean(settings.idle_timeout, tls)
            } else {
                None
            };
            let reused = taken.is_some();
            let mut conn = match taken {
                Some(c) => c,
                None => match Box::pin(connect(&endpoint.authority, settings, tls)).await {
                    Ok(c) => c,
                    Err((failure, error)) => {
                        return Err(SendError {
                            failure,
                            error,
                            unsent: Some(Box::new(req)),
                        })
                    }
                },
            };
            encode_head(&req, &mut conn.write);
            match exchange(&mut conn, head_only).await {
                Ok((parts, framing, reusable)) => {
                    let body = Body {
                        conn: Some(conn),
                        state: framing,
                        reusable,
                        home: Arc::downgrade(endpoint),
                        max_idle: settings.max_idle,
                        idle_timeout: settings.idle_timeout,
                    };
                    return Ok(Response::from_parts(parts, super::BackendBody::lean(body)));
                }
                Err(e) if reused && e.failure == Failure::NotSent => {
                    debug!(endpoint = %endpoint.authority, error = %e.error, "pooled connection closed before the request was written; sending it on a new one");
                    reuse = false;
                }
                Err(e) => {
                    let unsent = (e.failure == Failure::NotSent).then(|| Box::new(req));
                    return Err(SendError {
                        failure: e.failure,
                        error: e.error,
                        unsent,
                    });
                }
            }
        }
    }
}

/// The request head, as hyper's client writes it: the method, the origin-form target,
/// `HTTP/1.1`, the fields as they are (lowercase names), no body framing (there is no body).
fn encode_head(req: &Request<UpstreamBody>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads into `buf` (room for [`READ_SIZE`] more made first): how many bytes came, 0 at the
/// end of the stream.
fn poll_fill(io: &mut Io, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Writes the head in `conn.write` and reads the response head: its parts, the body's framing,
/// and whether the connection may be used again after the body.
async fn exchange(
    conn: &mut Conn,
    head_only: bool,
) -> Result<(http::response::Parts, State, bool), ExchangeError> {
    let unwritten = |e: io::Error| ExchangeError {
        failure: Failure::NotSent,
        error: e.into(),
    };
    let reset = |e: io::Error| ExchangeError {
        failure: Failure::Reset,
        error: e.into(),
    };
    let Conn {
        io, read, write, ..
    } = conn;
    io.write_all(write).await.map_err(unwritten)?;
    io.flush().await.map_err(unwritten)?;
    let mut interim = 0;
    loop {
        if !read.is_empty() {
            match parse_head(read, head_only)? {
                Head::Final(parsed) => return Ok(parsed),
                Head::Interim => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(ExchangeError::invalid(
                            "the backend sent too many interim responses",
                        ));
                    }
                    continue;
                }
                Head::Partial if read.len() >= MAX_HEAD => {
                    return Err(ExchangeError::invalid(
                        "the backend's response head is too large",
                    ));
                }
                Head::Partial => {}
            }
        }
        let n = std::future::poll_fn(|cx| poll_fill(io, cx, read))
            .await
            .map_err(reset)?;
        if n == 0 {
            return Err(ExchangeError {
                failure: Failure::Reset,
                error: "the backend closed the connection before the response head was whole"
                    .into(),
            });
        }
    }
}

/// What the start of the read buffer holds.
enum Head {
    /// The final response (its head taken out of the buffer): its parts, the body's framing,
    /// whether the connection may be used again.
    Final((http::response::Parts, State, bool)),
    /// An interim response, taken out and dropped.
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// Parses the response head at the start of `read`.
fn parse_head(read: &mut BytesMut, head_only: bool) -> Result<Head, ExchangeError> {
    // Field positions within the head, so that the values can be slices of it (no copy).
    // Left uninitialised: filling 100 empty slots (3.2 KB) per response showed in the profile.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        read,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::invalid(
                "the backend's response head has too many fields",
            ))
        }
        Err(_) => {
            return Err(ExchangeError::invalid(
                "the backend's response head could not be parsed",
            ))
        }
    };
    let code = response.code.unwrap_or(0);
    // 100 to 599 (RFC 9110 section 15; `http` takes up to 999), as on hyper's path (router).
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|_| code < 600)
        .ok_or_else(|| ExchangeError::invalid("the backend's response has an invalid status"))?;
    if status.is_informational() {
        if code == 101 {
            return Err(ExchangeError::invalid(
                "the backend switched protocols without being asked to",
            ));
        }
        read.advance(len);
        return Ok(Head::Interim);
    }
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = read.as_ptr() as usize;
    let reason = response.reason.unwrap_or("");
    let custom_reason = !reason.is_empty() && status.canonical_reason() != Some(reason);
    // A slice of the head; httparse gives an empty reason (none, or not UTF-8) as a static
    // `""` from elsewhere, so only a non-empty one is placed.
    let reason_at = (offset(base, reason.as_bytes()), reason.len());
    let mut fields: smallvec::SmallVec<[(HeaderName, usize, usize); 24]> =
        smallvec::SmallVec::new();
    for h in response.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            ExchangeError::invalid("the backend's response has an invalid field name")
        })?;
        fields.push((name, offset(base, h.value), h.value.len()));
    }
    let head = read.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, at, n) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + n)).map_err(|_| {
            ExchangeError::invalid("the backend's response has an invalid field value")
        })?;
        headers.append(name, value);
    }
    let (state, framed) = framing(&headers, status, head_only)?;
    let reusable = framed
        && version == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    if custom_reason {
        let (at, n) = reason_at;
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(head.slice(at..at + n)) {
            parts.extensions.insert(r);
        }
    }
    Ok(Head::Final((parts, state, reusable)))
}

/// Where `part`, a slice of the buffer at `base`, starts in it (0 for an empty one, which
/// httparse may give from elsewhere).
fn offset(base: usize, part: &[u8]) -> usize {
    if part.is_empty() {
        0
    } else {
        part.as_ptr() as usize - base
    }
}

/// The body's framing (RFC 9112 section 6.3), and whether where it ends is known without the
/// close (else the connection is not used again). An invalid or conflicting `Content-Length`
/// is refused whatever the status and method (section 6.3, point 5: a proxy answers 502), even
/// where it frames nothing (`HEAD`, 204, 304): hyper's server would not send it on.
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_only: bool,
) -> Result<(State, bool), ExchangeError> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    // With a Transfer-Encoding the router refuses any Content-Length (and the connection).
    let length = if te { None } else { content_length(headers)? };
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((State::Done, true));
    }
    if te {
        let last_chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|c| c.trim_ascii())
            .rfind(|c| !c.is_empty())
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Ok(if last_chunked {
            let alone = !headers.contains_key(header::CONTENT_LENGTH);
            (State::Chunk(Chunk::Size), alone)
        } else {
            (State::Close, false)
        });
    }
    Ok(match length {
        Some(0) => (State::Done, true),
        Some(n) => (State::Length(n), true),
        None => (State::Close, false),
    })
}

/// The `Content-Length`, if any: every value (and every element of a list) the same digits.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ExchangeError> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    ExchangeError::invalid("the backend's response has an invalid Content-Length")
                })?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::invalid(
                    "the backend's response has conflicting Content-Length values",
                ));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Where the body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left (`Content-Length`).
    Length(u64),
    /// A chunked body.
    Chunk(Chunk),
    /// Everything until the backend closes.
    Close,
    /// Ended whole.
    Done,
    /// Failed: the error is returned at the next poll (see [`Body::fail`]), then it is over.
    Failed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Within a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

/// A lean response body: read from its connection by whoever polls it (the client's
/// connection task), the connection given back to its endpoint when the body ended whole.
pub struct Body {
    conn: Option<Box<Conn>>,
    state: State,
    reusable: bool,
    /// The endpoint the connection goes back to (not kept alive by a body in flight: a
    /// revision that drops it closes the connection).
    home: Weak<Endpoint>,
    max_idle: usize,
    idle_timeout: std::time::Duration,
}

impl Body {
    /// The connection is not to be used again (the body can still be read).
    pub fn discard_connection(&mut self) {
        self.reusable = false;
    }

    pub fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The body ended whole: the connection goes back when it may.
    fn ended(&mut self) {
        self.state = State::Done;
        self.give_back();
    }

    fn give_back(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !self.reusable || !conn.read.is_empty() {
            return; // closed: its end is not known, or it sent more than its response
        }
        if let Some(endpoint) = self.home.upgrade() {
            endpoint
                .h1
                .give_back_lean(&endpoint, conn, self.max_idle, self.idle_timeout);
        }
    }

    /// A failure: the connection is closed, and the error comes at the next poll. Why not at
    /// once: hyper's server polls a body for as long as it has frames ready, and drops what it
    /// has buffered when one fails. A body cut short by the backend is read to its cut in
    /// one go here (the data and the close are both there), so the client would get nothing,
    /// not even the head; as with hyper's client (which learns of the close a wake-up later),
    /// the server first gets a chance to send what came, then learns of the failure.
    fn fail(
        &mut self,
        why: &'static str,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.state = State::Failed(why);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.state {
                State::Done => {
                    self.give_back();
                    return Poll::Ready(None);
                }
                State::Failed(why) => {
                    self.state = State::Done; // the connection is already gone
                    return Poll::Ready(Some(Err(why.into())));
                }
                _ => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                // Never so: a body without its connection has ended (or failed).
                return self.fail("the connection to the backend was let go", cx);
            };
            let read = &mut conn.read;
            match self.state {
                State::Done | State::Failed(_) => unreachable!("handled above"),
                State::Length(left) | State::Chunk(Chunk::Data(left)) if !read.is_empty() => {
                    let take = left.min(read.len() as u64);
                    let data = read.split_to(take as usize).freeze();
                    let left = left - take;
                    match self.state {
                        State::Length(_) if left == 0 => self.ended(),
                        State::Length(_) => self.state = State::Length(left),
                        _ if left == 0 => self.state = State::Chunk(Chunk::DataEnd),
                        _ => self.state = State::Chunk(Chunk::Data(left)),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close if !read.is_empty() => {
                    let data = read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunk(Chunk::Size) if !read.is_empty() => match chunk::size_line(read) {
                    Ok(Some((n, size))) => {
                        read.advance(n);
                        self.state = State::Chunk(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    Ok(None) if read.len() < MAX_CHUNK_LINE => {}
                    Ok(None) => {
                        return self.fail("a chunk-size line from the backend is too long", cx)
                    }
                    Err(chunk::Malformed) => {
                        return self.fail("the backend's chunked body is malformed", cx)
                    }
                },
                State::Chunk(Chunk::DataEnd) if read.len() >= 2 => {
                    if &read[..2] != b"\r\n" {
                        return self.fail("the backend's chunked body is malformed", cx);
                    }
                    read.advance(2);
                    self.state = State::Chunk(Chunk::Size);
                    continue;
                }
                State::Chunk(Chunk::Trailers) if !read.is_empty() => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(read, &mut slots) {
                        Ok(httparse::Status::Complete((n, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) else {
                                    return self
                                        .fail("the backend's trailer section is malformed", cx);
                                };
                                trailers.append(name, value);
                            }
                            read.advance(n);
                            self.ended();
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => {}
                        Ok(httparse::Status::Partial) => {
                            return self.fail("the backend's trailer section is too large", cx)
                        }
                        Err(_) => {
                            return self.fail("the backend's trailer section is malformed", cx)
                        }
                    }
                }
                _ => {}
            }
            // More bytes are needed.
            let conn = self.conn.as_mut().expect("checked above");
            match ready!(poll_fill(&mut conn.io, cx, &mut conn.read)) {
                Ok(0) if self.state == State::Close => {
                    self.conn = None; // ended by the close: the connection is done
                    self.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return self.fail(
                        "the backend closed the connection before the end of the body",
                        cx,
                    )
                }
                Ok(_) => {}
                Err(_) => {
                    return self.fail("the connection to the backend failed during the body", cx)
                }
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // A body with nothing to read (HEAD, 204, 304, an empty one) is dropped unpolled.
        if self.state == State::Done {
            self.give_back();
        }
    }
}

/// Opens a connection (the TCP connection, then the TLS handshake when `tls`, each within the
/// connect timeout).
async fn connect(
    authority: &str,
    settings: PoolSettings,
    tls: Option<&TlsBackend>,
) -> Result<Box<Conn>, (Failure, BoxError)> {
    let tcp = connect_tcp(authority, settings.connect_timeout)
        .await
        .map_err(|e| (Failure::Connect, e))?;
    let (io, tls) = match tls {
        None => (Io::Tcp(tcp), None),
        Some(t) => {
            let stream = super::handshake(tcp, t, settings.connect_timeout).await?;
            (Io::Tls(Box::new(stream)), Some(t.http1.clone()))
        }
    };
    Ok(Box::new(Conn {
        io,
        read: BytesMut::new(),
        write: Vec::with_capacity(512),
        idle_since: 0,
        tls,
        broken: false,
    }))
}

/// The sweeper of one worker's idle lean connections to an endpoint: no task drives an idle
/// lean connection, so one task per endpoint and worker closes those that passed the idle
/// timeout, waking at the oldest's deadline, and ends when none is left.
pub(super) async fn sweep(
    endpoint: Weak<Endpoint>,
    slot: usize,
    idle_timeout: std::time::Duration,
) {
    let limit = idle_timeout.as_millis() as u64;
    let mut wait = idle_timeout;
    loop {
        tokio::time::sleep(wait).await;
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        let oldest = endpoint.h1.expire_lean(slot, limit);
        match oldest {
            None => return, // none left: the next give-back starts another sweeper
            Some(since) => {
                let due = (since + limit).saturating_sub(now_ms()).max(1);
                wait = std::time::Duration::from_millis(due);
            }
        }
    }
}

#[cfg(test)]
mod tests;
