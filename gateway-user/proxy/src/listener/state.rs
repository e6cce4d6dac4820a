//! The state of one client connection ([`ConnState`]): what its idle timeout, the head budget
//! and the bound on responses the client does not take look at; the requests in flight on it
//! ([`ConnGuard`]); and the stream that records its activity ([`ActivityIo`]).
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock::now_ms;

/// The bytes of request heads that all client connections together may hold before a
/// request starts ([`crate::Limits::head_budget`]): each connection is charged what it reads while no
/// request of it is in flight (at most the largest head a request may have), and released when
/// a request starts or the connection ends. A read that would go over the budget ends its
/// connection (`tollgate_http_connection_errors_total{reason="memory_budget"}`): partial
/// heads from many connections (the slow-header attacks) cannot hold more memory than this.
#[derive(Debug)]
pub struct HeadBudget {
    used: AtomicUsize,
    limit: usize,
    per_connection: usize,
}

impl HeadBudget {
    /// A budget of `limit` bytes; a connection is charged at most `per_connection`.
    pub fn new(limit: usize, per_connection: usize) -> Self {
        HeadBudget {
            used: AtomicUsize::new(0),
            limit,
            per_connection,
        }
    }

    /// Bytes charged now, over all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` more bytes to a connection that holds `held`; false (and nothing charged)
    /// when that would go over the budget.
    fn charge(&self, held: &AtomicUsize, n: usize) -> bool {
        let before = held.load(Ordering::Relaxed);
        let add = (before + n).min(self.per_connection).saturating_sub(before);
        if add == 0 {
            return true;
        }
        let used = self.used.fetch_add(add, Ordering::Relaxed) + add;
        if used > self.limit {
            self.used.fetch_sub(add, Ordering::Relaxed);
            return false;
        }
        held.fetch_add(add, Ordering::Relaxed);
        true
    }

    /// Releases what a connection holds.
    fn release(&self, held: &AtomicUsize) {
        let n = held.swap(0, Ordering::Relaxed);
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The memory all requests in flight may hold for their heads ([`crate::Limits::in_flight_budget`]).
/// The head budget above covers heads being read; once a request starts, its head lives on
/// (decoded, and copied for the backend) until its response ends, and an HTTP/2 client can
/// keep 100 of them per connection for a few bytes each (HPACK). Each request is charged
/// when it starts ([`ConnGuard::charge`]) and released when its response begins
/// ([`ConnGuard::uncharge`]) or it ends; one that would go over is answered 503 at once.
#[derive(Debug)]
pub struct InFlightBudget {
    used: AtomicUsize,
    limit: usize,
}

impl InFlightBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        InFlightBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// What a request is charged: its head twice (the client's, decoded, and the copy for
    /// the backend) and [`crate::IN_FLIGHT_OVERHEAD`].
    pub fn cost<B>(req: &http::Request<B>) -> usize {
        // RFC 9113 section 6.5.2's measure of a header list: name, value and 32 bytes a field.
        let fields: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let uri = req.uri();
        let head = fields
            + uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        2 * head + crate::IN_FLIGHT_OVERHEAD
    }

    /// Charges `n` bytes; false (and nothing charged) when that would go over the budget.
    fn take(&self, n: usize) -> bool {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        if used > self.limit {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The error a read returns when the head budget is spent (found again by
/// [`super::connection_error_reason`]).
#[derive(Debug)]
pub(super) struct HeadBudgetSpent;

impl std::fmt::Display for HeadBudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request-head memory budget of all connections is spent")
    }
}

impl std::error::Error for HeadBudgetSpent {}

/// The bytes hyper-util reads to tell HTTP/1.1 from HTTP/2 (the length of HTTP/2's preface).
pub(super) const SNIFFED: usize = 24;

/// HTTP/2's connection preface (RFC 9113 section 3.4), which hyper-util sniffs for.
const H2_PREFACE: &[u8; SNIFFED] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// [`ConnState::proto`]: not known yet, or HTTP/1.1 (the first bytes were not HTTP/2's
/// preface; also a connection whose first request came in fewer bytes than the preface).
const PROTO_UNKNOWN: u8 = 0;
const PROTO_H1: u8 = 1;
/// The first bytes were HTTP/2's preface: the connection is HTTP/2 (h2c or ALPN `h2`).
const PROTO_H2: u8 = 2;

/// Activity of one connection, for the idle timeout, the head budget, and the responses the
/// client does not take.
#[derive(Debug)]
pub struct ConnState {
    /// When a byte last moved either way (HTTP/1.1's idleness; a tunnel's).
    last_activity: AtomicU64,
    /// When a request last started or ended: HTTP/2's idleness. Bytes cannot measure it
    /// there: the server's keep-alive PING and the client's automatic ACK (or its SETTINGS,
    /// WINDOW_UPDATE, PING frames) move bytes with no request at all, which would keep a
    /// connection that never sends one open forever, holding a place under the connection
    /// limit.
    last_stream: AtomicU64,
    /// Bytes read from the client before its first request, counted up to [`SNIFFED`];
    /// [`SNIFFED`] once a request has begun (the connection is past hyper-util's sniffing).
    early: AtomicUsize,
    /// `PROTO_*`: whether the first bytes were HTTP/2's preface.
    proto: AtomicU8,
    in_flight: AtomicUsize,
    /// Head bytes charged to the budget.
    head: AtomicUsize,
    budget: Arc<HeadBudget>,
    /// The deadlines ([`now_ms`] scale) of the responses in flight whose body is being sent
    /// ([`ConnGuard::bound`]). A body checks its deadline only when hyper polls it, and hyper
    /// stops polling while the client does not take what was sent (an HTTP/2 flow-control
    /// window left at 0, an HTTP/1.1 socket not read): the connection's tick looks here
    /// instead ([`ConnState::overdue`]). A lock, taken twice per response, held for a push or
    /// a search of a few entries: HTTP/2's streams run as tasks of their own on either of the
    /// runtime's threads, so two may meet here, rarely and briefly. A slot per stream taken
    /// with one compare-and-swap measured the same (docs/benchmarks-issue13-part3.md, round
    /// 21), so the simpler form stays. Inline up to 4 (an HTTP/1.1 connection has one at a
    /// time): no allocation but on an HTTP/2 connection with more than 4 responses at once,
    /// once.
    deadlines: Mutex<SmallVec<[u64; 4]>>,
}

impl ConnState {
    /// A new connection's state, charging `budget`.
    pub fn new(budget: Arc<HeadBudget>) -> Self {
        let now = now_ms();
        ConnState {
            last_activity: AtomicU64::new(now),
            last_stream: AtomicU64::new(now),
            early: AtomicUsize::new(0),
            proto: AtomicU8::new(PROTO_UNKNOWN),
            in_flight: AtomicUsize::new(0),
            head: AtomicUsize::new(0),
            budget,
            deadlines: Mutex::new(SmallVec::new()),
        }
    }

    /// How long no byte has moved on the connection.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_activity.load(Ordering::Relaxed)))
    }

    /// Whether the connection sent nothing, or no more than part of HTTP/2's preface.
    pub(super) fn before_first_bytes(&self) -> bool {
        self.early.load(Ordering::Relaxed) < SNIFFED
    }

    /// Whether no request is in flight on the connection.
    pub(super) fn no_request(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// How long, at `now`, the connection has been idle by its protocol's measure (whether a
    /// request is in flight is the caller's): on HTTP/2 since a request last started or ended
    /// (frames without a request do not count); on HTTP/1.1 since a byte last moved (bytes
    /// with no request in flight are a head, which the header read timeout bounds).
    pub(super) fn idle_ms(&self, now: u64) -> u64 {
        let since = if self.proto.load(Ordering::Relaxed) == PROTO_H2 {
            &self.last_stream
        } else {
            &self.last_activity
        };
        now.saturating_sub(since.load(Ordering::Relaxed))
    }

    /// Whether a response in flight has a deadline at or before `at`: its body is still there
    /// past the request timeout, which it would have been cut off at had hyper polled it, so
    /// the client is not taking it.
    pub(super) fn overdue(&self, at: u64) -> bool {
        let deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        deadlines.iter().any(|&d| d <= at)
    }

    /// Notes the first bytes a connection read (`bytes`, read after `early` others): the
    /// protocol is HTTP/2 when they are its preface.
    fn sniff(&self, early: usize, bytes: &[u8]) {
        if self.proto.load(Ordering::Relaxed) != PROTO_UNKNOWN {
            return;
        }
        let n = bytes.len().min(SNIFFED - early);
        if bytes[..n] != H2_PREFACE[early..early + n] {
            self.proto.store(PROTO_H1, Ordering::Relaxed);
        } else if early + n == SNIFFED {
            self.proto.store(PROTO_H2, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        self.budget.release(&self.head);
    }
}

/// Held by a request while it is in flight on its connection (until its response body ends).
pub struct ConnGuard {
    state: Arc<ConnState>,
    /// The deadline [`ConnGuard::bound`] put in [`ConnState::deadlines`]; 0 for none.
    deadline: u64,
    /// What [`ConnGuard::charge`] took from the in-flight budget, released on drop.
    charged: Option<(Arc<InFlightBudget>, usize)>,
}

impl ConnGuard {
    /// Marks a request in flight on `state`: its head is complete, so what the connection read
    /// for it is no longer charged to the head budget.
    pub fn new(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.last_stream.store(now_ms(), Ordering::Relaxed);
        state.early.store(SNIFFED, Ordering::Relaxed);
        state.budget.release(&state.head);
        ConnGuard {
            state,
            deadline: 0,
            charged: None,
        }
    }

    /// Charges the request's `bytes` to `budget` for as long as it is in flight; false when
    /// the budget has no room (the request is to be refused). Once per request.
    pub fn charge(&mut self, budget: &Arc<InFlightBudget>, bytes: usize) -> bool {
        debug_assert!(self.charged.is_none(), "one charge per request");
        if !budget.take(bytes) {
            return false;
        }
        self.charged = Some((budget.clone(), bytes));
        true
    }

    /// Gives back what [`ConnGuard::charge`] took: the response has begun, the request's head
    /// has been sent and dropped (what is left is the body's flow, which its own windows
    /// bound), so that long-lived streams (gRPC, server-sent events) hold no share.
    pub fn uncharge(&mut self) {
        if let Some((budget, n)) = self.charged.take() {
            budget.used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The response is bound to end by `deadline` ([`now_ms`] scale; past it, its connection
    /// is closed if it is still in flight: [`ConnState::overdue`]). Once per request.
    pub fn bound(&mut self, deadline: u64) {
        debug_assert_eq!(self.deadline, 0, "one deadline per request");
        let deadline = deadline.max(1);
        self.state
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(deadline);
        self.deadline = deadline;
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let now = now_ms();
        if self.deadline != 0 {
            let mut deadlines = self
                .state
                .deadlines
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Equal deadlines are alike: any one of them goes.
            if let Some(i) = deadlines.iter().position(|&d| d == self.deadline) {
                deadlines.swap_remove(i);
            }
        }
        self.state.last_activity.store(now, Ordering::Relaxed);
        self.state.last_stream.store(now, Ordering::Relaxed);
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.uncharge();
    }
}

/// A stream (TCP, or TLS over TCP) that records when bytes last moved.
pub(super) struct ActivityIo<S> {
    pub(super) stream: S,
    pub(super) state: Arc<ConnState>,
}

impl<S> ActivityIo<S> {
    fn touch(&self) {
        self.state.last_activity.store(now_ms(), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && read > 0 {
            self.touch();
            let early = self.state.early.load(Ordering::Relaxed);
            if early < SNIFFED {
                self.state.sniff(early, &buf.filled()[before..]);
                self.state
                    .early
                    .store((early + read).min(SNIFFED), Ordering::Relaxed);
            }
            // Bytes read while no request is in flight belong to a head (or, on HTTP/2, to
            // frames before the next request): charged, up to one head's worth.
            let state = &self.state;
            if state.in_flight.load(Ordering::Relaxed) == 0
                && !state.budget.charge(&state.head, read)
            {
                return Poll::Ready(Err(std::io::Error::other(HeadBudgetSpent)));
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_hold_their_deadline_until_dropped() {
        let state = Arc::new(ConnState::new(Arc::new(HeadBudget::new(1024, 64))));
        let mut guards: Vec<ConnGuard> = (0..6).map(|_| ConnGuard::new(state.clone())).collect();
        for (i, g) in guards.iter_mut().enumerate() {
            g.bound(1000 + i as u64);
        }
        assert!(state.overdue(1000));
        assert!(!state.overdue(999));
        // Dropped oldest first: the earliest deadline left rises with them.
        for i in 0..6u64 {
            assert!(state.overdue(1000 + i) && !state.overdue(999 + i));
            guards.remove(0);
        }
        assert!(!state.overdue(u64::MAX));
        assert!(state.no_request());
        // Two responses with the same deadline: the one left keeps it.
        let mut a = ConnGuard::new(state.clone());
        let mut b = ConnGuard::new(state.clone());
        a.bound(5);
        b.bound(5);
        drop(a);
        assert!(state.overdue(5));
        drop(b);
        assert!(!state.overdue(u64::MAX));
    }
}
