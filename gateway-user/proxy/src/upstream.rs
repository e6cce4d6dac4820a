//! Backends at run time: their endpoints, which one gets the next request (round robin or
//! least requests), passive health, the retry budget, and what a failed attempt is and
//! whether it may be sent again.
//!
//! Passive health: an endpoint that fails `consecutiveFailures` times in a row is ejected for
//! `ejectionTime`, then tried again, and one more failure ejects it again. Two rules keep it
//! from turning a partial outage into a total one (Envoy's outlier detection is the
//! precedent for both):
//! - the last healthy endpoint of a Backend is never ejected: a Backend with one endpoint
//!   keeps sending it requests, and serves again the moment it is back;
//! - the panic threshold: when fewer than [`PANIC_THRESHOLD_PERCENT`] of a Backend's endpoints
//!   are healthy, health is ignored and every endpoint takes requests (rather than piling
//!   everything onto the few left).
//!
//! This state outlives revisions: a new revision that keeps a Backend (same `namespace/name`
//! and the same endpoints) keeps its health, counters and rotation, so a reload never puts a
//! known-bad endpoint back into rotation.
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use tracing::{debug, info, warn};

use crate::clock::now_ms;

use tollgate_compile::l7::table::{BackendDef, LoadBalancing};

/// Retries in progress at once to a Backend may be this share (percent) of its requests in
/// progress...
pub const RETRY_BUDGET_PERCENT: u32 = 20;
/// ...or this many, whichever is more. The floor is what lets every request have the retries
/// its rule allows while a Backend is not busy: a request's retries follow one another, so at
/// low request rates few are in progress at once (Envoy's `min_retry_concurrency`).
pub const RETRY_BUDGET_MIN_CONCURRENCY: u32 = 10;
/// Below this share (percent) of healthy endpoints, a Backend ignores health and uses all of
/// its endpoints (Envoy's `healthy_panic_threshold`, whose default is the same).
pub const PANIC_THRESHOLD_PERCENT: usize = 50;

/// One endpoint of a backend.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the endpoint is ejected; 0 = never ejected.
    ejected_until: AtomicU64,
    /// Idle HTTP/1.1 connections (cleartext backends), per worker thread.
    pub(crate) h1: crate::backend_h1::Idle,
}

impl Endpoint {
    pub(crate) fn new(authority: String) -> Self {
        Endpoint {
            authority,
            in_flight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            h1: crate::backend_h1::Idle::default(),
        }
    }

    fn healthy(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Requests in flight to this endpoint.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Held while a request to an endpoint is in flight (until its response body ends).
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// One more in flight to the same endpoint (an upgraded connection, which outlives the
    /// request that opened it, is load on the endpoint as long as it lasts).
    pub fn another(&self) -> InFlight {
        self.endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.endpoint.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The retry budget of a Backend: requests and retries in progress now. A budget of
/// concurrency rather than of a rate per second: a rate runs dry after a few requests at low
/// rates (each request's retries count against a whole second), while a concurrency limit
/// only bites when many requests fail at once, which is when retries would pile onto a
/// struggling backend.
#[derive(Debug, Default)]
struct RetryBudget {
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    /// Retries that may be in progress with `requests` requests in progress.
    fn allowed(requests: u32) -> u32 {
        (u64::from(requests) * u64::from(RETRY_BUDGET_PERCENT) / 100)
            .min(u64::from(u32::MAX))
            .max(u64::from(RETRY_BUDGET_MIN_CONCURRENCY)) as u32
    }
}

/// A request to a Backend in progress, for its retry budget (until dropped).
#[derive(Debug)]
pub struct ActiveRequest<'a>(&'a RetryBudget);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in progress (its backoff and its attempt), within the retry budget (until dropped).
#[derive(Debug)]
pub struct ActiveRetry<'a>(&'a RetryBudget);

impl Drop for ActiveRetry<'_> {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend at run time.
#[derive(Debug)]
pub struct BackendRuntime {
    /// The compiled definition.
    pub def: BackendDef,
    /// The endpoints, in definition order.
    pub endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
    budget: RetryBudget,
    /// Taken to decide an ejection, so that two endpoints failing at once cannot both be
    /// ejected as the last healthy ones.
    ejecting: Mutex<()>,
    ejections: prometheus_client::metrics::family::Family<
        BackendLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// The HTTP/2 connections (Backends with an HTTP/2 `appProtocol`).
    pub h2: crate::backend_h2::H2Pool,
}

/// Label of the ejection counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct BackendLabel {
    /// `namespace/name` of the Backend.
    pub backend: String,
}

impl BackendRuntime {
    fn new(
        def: BackendDef,
        endpoints: Vec<Arc<Endpoint>>,
        next: usize,
        ejections: &Ejections,
    ) -> Self {
        BackendRuntime {
            def,
            endpoints,
            next: AtomicUsize::new(next),
            budget: RetryBudget::default(),
            ejecting: Mutex::new(()),
            ejections: ejections.clone(),
            h2: Default::default(),
        }
    }

    /// Counts a request in progress (for the retry budget) until the guard drops.
    pub fn request(&self) -> ActiveRequest<'_> {
        self.budget.requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(&self.budget)
    }

    /// A retry, if the budget has room for one more in progress: at most
    /// [`RETRY_BUDGET_PERCENT`] of the requests in progress, or
    /// [`RETRY_BUDGET_MIN_CONCURRENCY`], whichever is more.
    pub fn try_retry(&self) -> Option<ActiveRetry<'_>> {
        let allowed = RetryBudget::allowed(self.budget.requests.load(Ordering::Relaxed));
        self.budget
            .retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .ok()
            .map(|_| ActiveRetry(&self.budget))
    }

    /// Is the Backend in panic (too few healthy endpoints: every endpoint takes requests)?
    fn panicking(&self, now: u64) -> bool {
        let healthy = self.endpoints.iter().filter(|e| e.healthy(now)).count();
        healthy * 100 < PANIC_THRESHOLD_PERCENT * self.endpoints.len()
    }

    /// Picks an endpoint and marks it in flight: one not in `tried` (indexes) if there is one,
    /// else one tried before. Ejected endpoints are left out, unless the Backend is in panic.
    /// `None` only for a Backend without endpoints.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, InFlight)> {
        let now = now_ms();
        let panic = self.panicking(now);
        let usable = |i: &usize| panic || self.endpoints[*i].healthy(now);
        let i = self
            .choose(|i| usable(i) && !tried.contains(i))
            .or_else(|| self.choose(usable))?;
        let endpoint = self.endpoints[i].clone();
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((i, InFlight { endpoint }))
    }

    /// The endpoint the algorithm picks among those `usable`.
    fn choose(&self, usable: impl Fn(&usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        match self.def.load_balancing {
            LoadBalancing::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|i| usable(i))
            }
            LoadBalancing::LeastRequest => {
                let candidates: Vec<usize> = (0..n).filter(|i| usable(i)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    len => {
                        // Power of two choices: two distinct random candidates, the one with
                        // fewer requests in flight.
                        let a = fastrand::usize(..len);
                        let b = (a + 1 + fastrand::usize(..len - 1)) % len;
                        let (a, b) = (candidates[a], candidates[b]);
                        Some(
                            if self.endpoints[b].in_flight() < self.endpoints[a].in_flight() {
                                b
                            } else {
                                a
                            },
                        )
                    }
                }
            }
        }
    }

    /// Records a success of endpoint `i`.
    pub fn success(&self, i: usize) {
        self.endpoints[i]
            .consecutive_failures
            .store(0, Ordering::Relaxed);
    }

    /// Records a failure of endpoint `i`; ejects it at the threshold, unless it is the last
    /// healthy endpoint of the Backend.
    pub fn failure(&self, i: usize) {
        let e = &self.endpoints[i];
        let threshold = self.def.consecutive_failures;
        let failures = e.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold {
            return;
        }
        let _deciding = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let others_healthy = self
            .endpoints
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.healthy(now));
        if e.healthy(now) && !others_healthy {
            // Ejecting it would leave the Backend nothing to send to: a request tried on it
            // may succeed (the endpoint is back), one refused without trying cannot.
            debug!(
                backend = %self.def.label,
                endpoint = %e.authority,
                failures,
                "endpoint not ejected: it is the last healthy one"
            );
            return;
        }
        // Back from an ejection, one more failure is enough to eject it again.
        e.consecutive_failures
            .store(threshold.saturating_sub(1), Ordering::Relaxed);
        let until = now + self.def.ejection_time.as_millis() as u64;
        let previous = e.ejected_until.swap(until, Ordering::Relaxed);
        if previous <= now {
            self.ejections
                .get_or_create(&BackendLabel {
                    backend: self.def.label.clone(),
                })
                .inc();
            warn!(
                backend = %self.def.label,
                endpoint = %e.authority,
                failures,
                ejected_for = ?self.def.ejection_time,
                "endpoint ejected after consecutive failures"
            );
        }
    }

    /// Endpoints not ejected now.
    pub fn healthy_endpoints(&self) -> usize {
        let now = now_ms();
        self.endpoints.iter().filter(|e| e.healthy(now)).count()
    }
}

type Ejections = prometheus_client::metrics::family::Family<
    BackendLabel,
    prometheus_client::metrics::counter::Counter,
>;

/// Backend runtimes by definition, kept across revisions.
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<String, Arc<BackendRuntime>>>,
}

impl Registry {
    /// The runtimes for a revision's backends (in its order): existing ones are reused when
    /// their endpoints are unchanged; settings (algorithm, thresholds) come from the new
    /// definition. Backends the revision no longer has are forgotten.
    pub fn resolve(&self, defs: &[BackendDef], ejections: &Ejections) -> Vec<Arc<BackendRuntime>> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(defs.len());
        let mut next = HashMap::with_capacity(defs.len());
        for def in defs {
            let runtime = match map.get(&def.label) {
                Some(old) if old.def == *def => old.clone(),
                Some(old) => {
                    // Keep the state of endpoints that stay.
                    let endpoints = def
                        .endpoints
                        .iter()
                        .map(|a| {
                            old.endpoints
                                .iter()
                                .find(|e| &e.authority == a)
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Endpoint::new(a.clone())))
                        })
                        .collect();
                    info!(backend = %def.label, "backend changed");
                    Arc::new(BackendRuntime::new(
                        def.clone(),
                        endpoints,
                        old.next.load(Ordering::Relaxed),
                        ejections,
                    ))
                }
                None => Arc::new(BackendRuntime::new(
                    def.clone(),
                    def.endpoints
                        .iter()
                        .map(|a| Arc::new(Endpoint::new(a.clone())))
                        .collect(),
                    0,
                    ejections,
                )),
            };
            next.insert(def.label.clone(), runtime.clone());
            out.push(runtime);
        }
        *map = next;
        out
    }
}

/// How long to wait before retry number `n` (1-based): the rule's backoff, doubled for each
/// retry up to 8 times the backoff, plus up to 50% random jitter. Never less than the backoff
/// (the Gateway API: the base interval of the backoff).
pub fn backoff(base: Duration, n: u32) -> Duration {
    if base.is_zero() {
        return base;
    }
    let factor = 1u32 << n.saturating_sub(1).min(3);
    let d = (base * factor).min(base * 10);
    d + d.mul_f64(fastrand::f64() * 0.5)
}

/// Why an attempt to a backend brought no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (refused, connect timeout): nothing was sent.
    Connect,
    /// The TLS handshake failed: nothing was sent.
    Tls,
    /// The request never left: the connection closed before it was written (hyper gives it
    /// back canceled).
    NotSent,
    /// The connection closed or was reset before the response head was complete.
    Reset,
    /// The backend's response could not be parsed.
    InvalidResponse,
    /// No response head within the per-try timeout (`timeouts.backendRequest`).
    Timeout,
}

impl Failure {
    /// What an error of hyper's connection-level client means.
    pub fn of_hyper(error: &hyper::Error) -> Failure {
        if error.is_canceled() {
            Failure::NotSent
        } else if error.is_parse() {
            Failure::InvalidResponse
        } else {
            Failure::Reset
        }
    }

    /// May an attempt that failed so be sent again? Connections that were never made, or
    /// requests that never left, always (nothing reached the backend). A timeout or a connection lost before the response may have
    /// reached the backend, and may have been applied: only when the rule has a `retry`
    /// stanza (`after_send`), and then only for an idempotent method or a request whose body
    /// was not sent, none of it (RFC 9110 9.2.2: a client SHOULD NOT automatically retry a
    /// non-idempotent request unless it knows it was never applied).
    pub fn retryable(self, after_send: bool, method: &Method, body_sent: bool) -> bool {
        match self {
            Failure::Connect | Failure::Tls | Failure::NotSent => true,
            Failure::Reset | Failure::InvalidResponse | Failure::Timeout => {
                after_send && (method.is_idempotent() || !body_sent)
            }
        }
    }
}

/// A buffered request body, sent again on each attempt; records whether the backend was
/// handed any of it (see [`Failure::retryable`]).
#[derive(Debug)]
pub struct ReplayBody {
    data: Option<Bytes>,
    /// `None` for an empty body (most requests): there is nothing to hand over, so nothing to
    /// record, and no shared flag to allocate.
    sent: Option<Arc<AtomicBool>>,
}

/// Whether an attempt's [`ReplayBody`] was handed to the connection.
#[derive(Debug, Clone)]
pub struct BodySent(Option<Arc<AtomicBool>>);

impl BodySent {
    /// Was any of the body handed over (or was there none: the request was whole with its
    /// head)? Handed over does not mean received; not handed over means not received.
    pub fn get(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.load(Ordering::Relaxed))
    }

    /// A body that counts as sent (a streamed body, which is never retried anyway).
    pub fn always() -> BodySent {
        BodySent(None)
    }
}

impl ReplayBody {
    /// One attempt's copy of `data`, and what tells whether it was sent.
    pub fn new(data: Bytes) -> (ReplayBody, BodySent) {
        if data.is_empty() {
            return (
                ReplayBody {
                    data: None,
                    sent: None,
                },
                BodySent(None),
            );
        }
        let sent = Arc::new(AtomicBool::new(false));
        let body = ReplayBody {
            data: Some(data),
            sent: Some(sent.clone()),
        };
        (body, BodySent(Some(sent)))
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| {
            if let Some(sent) = &self.sent {
                sent.store(true, Ordering::Relaxed);
            }
            Ok(Frame::data(d))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(endpoints: usize, lb: LoadBalancing, failures: u32) -> BackendDef {
        BackendDef {
            label: "default/b".into(),
            endpoints: (0..endpoints)
                .map(|i| format!("127.0.0.1:{}", 9000 + i))
                .collect(),
            load_balancing: lb,
            consecutive_failures: failures,
            ejection_time: Duration::from_millis(200),
            tls: None,
            protocol: Default::default(),
        }
    }

    fn runtime(endpoints: usize, lb: LoadBalancing, failures: u32) -> Arc<BackendRuntime> {
        Registry::default()
            .resolve(&[def(endpoints, lb, failures)], &Default::default())
            .remove(0)
    }

    fn picked(b: &BackendRuntime, tried: &[usize]) -> usize {
        b.pick(tried).expect("an endpoint").0
    }

    #[test]
    fn round_robin_takes_each_endpoint_in_turn_and_prefers_untried_ones() {
        let b = runtime(3, LoadBalancing::RoundRobin, 5);
        let picks: Vec<usize> = (0..6).map(|_| picked(&b, &[])).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(picked(&b, &[0, 1]), 2);
        // All tried: one of them again rather than none.
        assert!(b.pick(&[0, 1, 2]).is_some());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let b = runtime(2, LoadBalancing::LeastRequest, 5);
        let (busy, _held) = b.pick(&[]).unwrap();
        for _ in 0..20 {
            let (i, _g) = b.pick(&[]).unwrap();
            assert_ne!(i, busy, "the endpoint with a request in flight was picked");
        }
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let b = runtime(1, LoadBalancing::RoundRobin, 5);
        let (_, g) = b.pick(&[]).unwrap();
        assert_eq!(b.endpoints[0].in_flight(), 1);
        drop(g);
        assert_eq!(b.endpoints[0].in_flight(), 0);
    }

    #[test]
    fn consecutive_failures_eject_an_endpoint_for_a_while_then_one_failure_ejects_it_again() {
        let b = runtime(2, LoadBalancing::RoundRobin, 3);
        b.failure(0);
        b.failure(0);
        b.success(0);
        b.failure(0);
        b.failure(0);
        assert_eq!(b.healthy_endpoints(), 2, "a success resets the count");
        b.failure(0);
        assert_eq!(b.healthy_endpoints(), 1);
        for _ in 0..4 {
            assert_eq!(picked(&b, &[]), 1, "an ejected endpoint is skipped");
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(b.healthy_endpoints(), 2, "back after the ejection time");
        b.failure(0);
        assert_eq!(
            b.healthy_endpoints(),
            1,
            "on probation: one failure ejects again"
        );
    }

    #[test]
    fn the_last_healthy_endpoint_is_never_ejected() {
        let one = runtime(1, LoadBalancing::RoundRobin, 2);
        for _ in 0..10 {
            one.failure(0);
        }
        assert_eq!(one.healthy_endpoints(), 1);
        assert_eq!(picked(&one, &[]), 0);

        let two = runtime(2, LoadBalancing::LeastRequest, 2);
        for _ in 0..10 {
            two.failure(0);
            two.failure(1);
        }
        assert_eq!(two.healthy_endpoints(), 1, "one of the two stays");
        // Endpoint 0 went first; 1 is the one left, and takes every request.
        for _ in 0..10 {
            assert_eq!(picked(&two, &[]), 1);
        }
    }

    #[test]
    fn the_last_healthy_endpoint_is_kept_when_endpoints_fail_at_once() {
        let b = Arc::new(runtime(8, LoadBalancing::RoundRobin, 1));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        b.failure(i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.healthy_endpoints(), 1);
    }

    #[test]
    fn below_the_panic_threshold_every_endpoint_takes_requests() {
        let b = runtime(4, LoadBalancing::RoundRobin, 1);
        b.failure(0);
        assert_eq!(b.healthy_endpoints(), 3);
        let mut seen = [0; 4];
        for _ in 0..40 {
            seen[picked(&b, &[])] += 1;
        }
        assert_eq!(seen[0], 0, "75% healthy: the ejected one is skipped");
        b.failure(1);
        let mut seen = [0; 4];
        for _ in 0..40 {
            seen[picked(&b, &[])] += 1;
        }
        assert_eq!(
            seen[0] + seen[1],
            0,
            "50% healthy is not below the threshold"
        );
        b.failure(2);
        assert_eq!(b.healthy_endpoints(), 1);
        let mut seen = [0; 4];
        for _ in 0..40 {
            seen[picked(&b, &[])] += 1;
        }
        assert_eq!(seen, [10, 10, 10, 10], "25% healthy: panic, all of them");
        // Untried endpoints still come first within a request.
        assert_eq!(picked(&b, &[0, 1, 2]), 3);
    }

    #[test]
    fn the_retry_budget_allows_the_floor_whatever_the_requests() {
        let b = runtime(1, LoadBalancing::RoundRobin, 5);
        // One request at a time, each retried up to 10 times: always allowed.
        for _ in 0..100 {
            let _request = b.request();
            for _ in 0..10 {
                assert!(b.try_retry().is_some());
            }
        }
        // Retries held at once, with few requests in progress: the floor.
        let _request = b.request();
        let held: Vec<_> = (0..100).filter_map(|_| b.try_retry()).collect();
        assert_eq!(held.len(), RETRY_BUDGET_MIN_CONCURRENCY as usize);
        drop(held);
        assert!(b.try_retry().is_some(), "a retry that ends frees its place");
    }

    #[test]
    fn the_retry_budget_caps_retries_at_a_share_of_the_requests_in_progress() {
        let b = runtime(1, LoadBalancing::RoundRobin, 5);
        let requests: Vec<_> = (0..500).map(|_| b.request()).collect();
        let held: Vec<_> = (0..500).filter_map(|_| b.try_retry()).collect();
        assert_eq!(held.len(), 100, "20% of 500");
        drop(held);
        drop(requests);
        assert_eq!(b.budget.requests.load(Ordering::Relaxed), 0);
        assert_eq!(b.budget.retries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_new_revision_keeps_the_health_of_endpoints_that_stay() {
        let reg = Registry::default();
        let fam = Default::default();
        let def = |eps: &[&str]| BackendDef {
            label: "default/b".into(),
            endpoints: eps.iter().map(|s| s.to_string()).collect(),
            load_balancing: LoadBalancing::RoundRobin,
            consecutive_failures: 1,
            ejection_time: Duration::from_secs(60),
            tls: None,
            protocol: Default::default(),
        };
        let first = reg.resolve(&[def(&["10.0.0.1:80", "10.0.0.2:80"])], &fam);
        first[0].failure(0);
        let same = reg.resolve(&[def(&["10.0.0.1:80", "10.0.0.2:80"])], &fam);
        assert!(Arc::ptr_eq(&first[0], &same[0]));
        let changed = reg.resolve(&[def(&["10.0.0.1:80", "10.0.0.3:80"])], &fam);
        assert_eq!(changed[0].healthy_endpoints(), 1, "10.0.0.1 stays ejected");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let base = Duration::from_millis(100);
        for n in 1..8 {
            let d = backoff(base, n);
            assert!(d >= base && d <= base * 15, "{n}: {d:?}");
        }
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn what_is_retried_follows_the_gateway_api_and_rfc_9110() {
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        for f in [Failure::Connect, Failure::Tls, Failure::NotSent] {
            for after_send in [false, true] {
                assert!(
                    f.retryable(after_send, &post, true),
                    "{f:?}: nothing was sent"
                );
            }
        }
        for f in [Failure::Reset, Failure::InvalidResponse, Failure::Timeout] {
            assert!(
                !f.retryable(false, &get, true),
                "{f:?}: not without a retry stanza"
            );
            assert!(f.retryable(true, &get, true), "{f:?}: GET is idempotent");
            assert!(f.retryable(true, &put, true), "{f:?}: PUT is idempotent");
            assert!(
                !f.retryable(true, &post, true),
                "{f:?}: POST may have been applied"
            );
            assert!(
                f.retryable(true, &post, false),
                "{f:?}: its body never left"
            );
        }
    }

    #[test]
    fn a_replay_body_tells_whether_it_was_handed_over() {
        use http_body_util::BodyExt;
        let (body, sent) = ReplayBody::new(Bytes::from_static(b"order"));
        assert!(!sent.get());
        assert_eq!(body.size_hint().exact(), Some(5));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&bytes[..], b"order");
        assert!(sent.get());
        let (empty, sent) = ReplayBody::new(Bytes::new());
        assert!(empty.is_end_stream());
        assert!(
            sent.get(),
            "a request without a body is whole with its head"
        );
    }
}
