//! Backends at run time: their endpoints, which one gets the next request (round robin or
//! least requests), passive health (an endpoint that fails `consecutiveFailures` times in a row
//! is ejected for `ejectionTime`, then tried again, and one more failure ejects it again) and a
//! retry budget.
//!
//! This state outlives revisions: a new revision that keeps a Backend (same `namespace/name`
//! and the same endpoints) keeps its health, counters and rotation, so a reload never puts a
//! known-bad endpoint back into rotation.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use tollgate_compile::l7::table::{BackendDef, LoadBalancing};

/// Retries may add this share of a backend's requests...
pub const RETRY_BUDGET_RATIO: f64 = 0.2;
/// ...or this many retries per second, whichever is more.
pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;

/// Milliseconds since the first call (a monotonic clock that fits in an atomic).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // +1 so that 0 can mean "never".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One endpoint of a backend.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the endpoint is ejected; 0 = never ejected.
    ejected_until: AtomicU64,
}

impl Endpoint {
    fn new(authority: String) -> Self {
        Endpoint {
            authority,
            in_flight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
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
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts requests and retries per one-second window.
#[derive(Debug, Default)]
struct RetryBudget {
    window: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    fn roll(&self, now: u64) {
        let second = now / 1000;
        let seen = self.window.load(Ordering::Relaxed);
        if seen != second
            && self
                .window
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    fn request(&self) {
        self.roll(now_ms());
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry(&self) -> bool {
        self.roll(now_ms());
        let requests = self.requests.load(Ordering::Relaxed);
        let allowed =
            ((f64::from(requests) * RETRY_BUDGET_RATIO) as u32).max(RETRY_BUDGET_MIN_PER_SECOND);
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .is_ok()
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
    ejections: prometheus_client::metrics::family::Family<
        BackendLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// Label of the ejection counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct BackendLabel {
    /// `namespace/name` of the Backend.
    pub backend: String,
}

/// Why no endpoint could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// Every endpoint is ejected.
    AllEjected,
    /// Every healthy endpoint was tried already for this request.
    AllTried,
}

impl BackendRuntime {
    /// Counts a request (for the retry budget).
    pub fn request(&self) {
        self.budget.request();
    }

    /// May one more retry be sent (within the budget)? Takes the retry when it may.
    pub fn try_retry(&self) -> bool {
        self.budget.try_retry()
    }

    /// Picks an endpoint that is healthy and not in `tried` (indexes), and marks it in flight.
    pub fn pick(&self, tried: &[usize]) -> Result<(usize, InFlight), NoEndpoint> {
        let now = now_ms();
        let usable = |i: &usize| !tried.contains(i) && self.endpoints[*i].healthy(now);
        let n = self.endpoints.len();
        let chosen = match self.def.load_balancing {
            LoadBalancing::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(usable)
            }
            LoadBalancing::LeastRequest => {
                let candidates: Vec<usize> = (0..n).filter(usable).collect();
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
        };
        match chosen {
            Some(i) => {
                let endpoint = self.endpoints[i].clone();
                endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok((i, InFlight { endpoint }))
            }
            None if (0..n).any(|i| self.endpoints[i].healthy(now)) => Err(NoEndpoint::AllTried),
            None => Err(NoEndpoint::AllEjected),
        }
    }

    /// Records a success of endpoint `i`.
    pub fn success(&self, i: usize) {
        self.endpoints[i]
            .consecutive_failures
            .store(0, Ordering::Relaxed);
    }

    /// Records a failure of endpoint `i`; ejects it at the threshold.
    pub fn failure(&self, i: usize) {
        let e = &self.endpoints[i];
        let threshold = self.def.consecutive_failures;
        let failures = e.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= threshold {
            // Back from an ejection, one more failure is enough to eject it again.
            e.consecutive_failures
                .store(threshold.saturating_sub(1), Ordering::Relaxed);
            let until = now_ms() + self.def.ejection_time.as_millis() as u64;
            let previous = e.ejected_until.swap(until, Ordering::Relaxed);
            if previous <= now_ms() {
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
    }

    /// Endpoints not ejected now.
    pub fn healthy_endpoints(&self) -> usize {
        let now = now_ms();
        self.endpoints.iter().filter(|e| e.healthy(now)).count()
    }
}

/// Backend runtimes by definition, kept across revisions.
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<String, Arc<BackendRuntime>>>,
}

impl Registry {
    /// The runtimes for a revision's backends (in its order): existing ones are reused when
    /// their endpoints are unchanged; settings (algorithm, thresholds) come from the new
    /// definition. Backends the revision no longer has are forgotten.
    pub fn resolve(
        &self,
        defs: &[BackendDef],
        ejections: &prometheus_client::metrics::family::Family<
            BackendLabel,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Vec<Arc<BackendRuntime>> {
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
                    Arc::new(BackendRuntime {
                        def: def.clone(),
                        endpoints,
                        next: AtomicUsize::new(old.next.load(Ordering::Relaxed)),
                        budget: RetryBudget::default(),
                        ejections: ejections.clone(),
                    })
                }
                None => Arc::new(BackendRuntime {
                    def: def.clone(),
                    endpoints: def
                        .endpoints
                        .iter()
                        .map(|a| Arc::new(Endpoint::new(a.clone())))
                        .collect(),
                    next: AtomicUsize::new(0),
                    budget: RetryBudget::default(),
                    ejections: ejections.clone(),
                }),
            };
            next.insert(def.label.clone(), runtime.clone());
            out.push(runtime);
        }
        *map = next;
        out
    }
}

/// How long to wait before retry number `n` (1-based): the rule's backoff, doubled each
/// time, with up to 50% random jitter, at most 10 times the backoff.
pub fn backoff(base: Duration, n: u32) -> Duration {
    if base.is_zero() {
        return base;
    }
    let factor = 1u32 << n.saturating_sub(1).min(3);
    let d = (base * factor).min(base * 10);
    d + d.mul_f64(fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(endpoints: usize, lb: LoadBalancing, failures: u32) -> BackendRuntime {
        let def = BackendDef {
            label: "default/b".into(),
            endpoints: (0..endpoints)
                .map(|i| format!("127.0.0.1:{}", 9000 + i))
                .collect(),
            load_balancing: lb,
            consecutive_failures: failures,
            ejection_time: Duration::from_millis(200),
            tls: None,
        };
        Registry::default()
            .resolve(&[def], &Default::default())
            .remove(0)
            .as_ref()
            .clone_for_test()
    }

    impl BackendRuntime {
        fn clone_for_test(&self) -> BackendRuntime {
            BackendRuntime {
                def: self.def.clone(),
                endpoints: self.endpoints.clone(),
                next: AtomicUsize::new(0),
                budget: RetryBudget::default(),
                ejections: self.ejections.clone(),
            }
        }
    }

    #[test]
    fn round_robin_takes_each_endpoint_in_turn_and_skips_tried_ones() {
        let b = runtime(3, LoadBalancing::RoundRobin, 5);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&[]).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let (i, _g) = b.pick(&[0, 1]).unwrap();
        assert_eq!(i, 2);
        assert_eq!(b.pick(&[0, 1, 2]).unwrap_err(), NoEndpoint::AllTried);
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
            assert_eq!(b.pick(&[]).unwrap().0, 1, "an ejected endpoint is skipped");
        }
        b.failure(1);
        b.failure(1);
        b.failure(1);
        assert_eq!(b.pick(&[]).unwrap_err(), NoEndpoint::AllEjected);
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
    fn the_retry_budget_allows_a_minimum_then_a_share_of_requests() {
        let b = runtime(1, LoadBalancing::RoundRobin, 5);
        let allowed = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(allowed, RETRY_BUDGET_MIN_PER_SECOND as usize);
        for _ in 0..1000 {
            b.request();
        }
        // The window may roll over between the two loops; either way the share holds.
        let more = (0..1000).filter(|_| b.try_retry()).count();
        assert!((190..=200).contains(&more), "{more}");
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
}
