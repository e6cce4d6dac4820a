//! Request rate limits (`RateLimitPolicy`): one keyed GCRA limiter per limit.
//!
//! GCRA (the generic cell rate algorithm, ITU-T I.371) is a token bucket that keeps one number
//! per key: the theoretical arrival time (TAT) of the next request if the key sent at exactly
//! the allowed rate. A key that is not in the map has a full bucket. With `interval = per /
//! requests` and `tolerance = interval × burst`, a request at `now` is allowed when
//! `max(TAT, now) + interval - now <= tolerance`, and then moves TAT to that sum.
//!
//! `key: clientIP` counts a client by its network ([`client_prefix`]): an IPv6 /64 by default,
//! since one end site can rotate through the addresses of its /64 at will.
//!
//! Memory is bounded: keys are hashed with a per-limiter random SipHash key (so a client cannot
//! aim for collisions) and only the 64-bit hash is stored, in [`SHARDS`] mutex-guarded shards
//! of at most `capacity / SHARDS` entries, each a least-recently-used map (`schnellru`). A new
//! key that finds its shard full takes the place of the key used least recently (any request,
//! allowed or refused, is a use: a client that keeps hammering stays tracked and stays
//! refused). A flood of new keys therefore never locks other new keys out; the price is that a
//! key pushed out while its bucket was not yet full again comes back with a full bucket. Such
//! evictions are counted in `tollgate_http_ratelimit_evictions_total{policy}`; forgetting a key
//! whose bucket is full again changes nothing and is not counted.
//!
//! State outlives revisions: [`Registry::resolve`] hands a new revision the limiter of the
//! previous one when the limit (policy, name, key, requests, per, burst, scope) is unchanged.
//!
//! A `scope: Cluster` limit is decided by its [`ClusterLimit`] instead (leases of a window
//! counted in Redis, see [`crate::cluster`]).
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustc_hash::FxBuildHasher;
use schnellru::{ByLength, LruMap};
use smallvec::SmallVec;
use tracing::info;

use crate::client_prefix::client_prefix;
use crate::cluster::{Backend, Basis, ClusterLimit, LimitedLabels, Taken};
use crate::metrics::PolicyLabel;
use tollgate_compile::l7::table::{LimitKey, LimitScope, RateLimitDef, RouteLimits};

/// Shards of a limiter's key map (a power of two).
pub const SHARDS: usize = 16;
/// Keys tracked per limit (default of [`Registry::new`]): 100,000 keys take about 3 MB.
pub const MAX_KEYS_PER_LIMIT: usize = 100_000;

/// The key of one request for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyValue<'a> {
    /// The client's network (its address, or the prefix that holds it).
    Ip(IpNet),
    /// The header's value (the first one when it is repeated), or `None` when it is missing:
    /// every request without the header shares one bucket.
    Header(Option<&'a [u8]>),
    /// The authenticated consumer (`None` cannot happen on a route with an AuthPolicy, which
    /// `key: consumer` needs; such requests would share one bucket).
    Consumer(Option<&'a str>),
}

impl<'a> KeyValue<'a> {
    /// The key `def` uses for a request from `client` with `headers`.
    pub fn of(
        key: &LimitKey,
        client: IpAddr,
        headers: &'a HeaderMap,
        consumer: Option<&'a str>,
    ) -> KeyValue<'a> {
        match key {
            LimitKey::ClientIp(p) => KeyValue::Ip(client_prefix(client, p.v4, p.v6)),
            LimitKey::Header(name) => KeyValue::Header(headers.get(name).map(|v| v.as_bytes())),
            LimitKey::Consumer => KeyValue::Consumer(consumer),
        }
    }
}

/// What one limit said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Within the limit (and counted).
    pub allowed: bool,
    /// Requests the key may still send at once.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

/// GCRA: the verdict for a request at `now` on a bucket whose TAT is `tat`, and the new TAT
/// when it is allowed. All times in nanoseconds on one clock.
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> (Verdict, Option<u64>) {
    let start = tat.max(now);
    let next = start.saturating_add(interval);
    let used = next - now;
    if used > tolerance {
        let verdict = Verdict {
            allowed: false,
            remaining: 0,
            reset: Duration::from_nanos(start - now),
            retry_after: Duration::from_nanos(used - tolerance),
        };
        (verdict, None)
    } else {
        let verdict = Verdict {
            allowed: true,
            remaining: (tolerance - used) / interval,
            reset: Duration::from_nanos(used),
            retry_after: Duration::ZERO,
        };
        (verdict, Some(next))
    }
}

/// Where a key's state is kept, to give a token back: the key's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u64);

/// What a limit took for a request, to give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A node limit's bucket.
    Bucket(Slot),
    /// A cluster limit's lease or share.
    Cluster(Taken),
}

/// The hash of `key` under `hasher` (a per-limiter random SipHash key).
pub(crate) fn hash_key(hasher: &RandomState, key: KeyValue<'_>) -> u64 {
    let mut h = hasher.build_hasher();
    match key {
        KeyValue::Ip(net) => {
            0u8.hash(&mut h);
            net.hash(&mut h);
        }
        KeyValue::Header(None) => 1u8.hash(&mut h),
        KeyValue::Header(Some(v)) => {
            2u8.hash(&mut h);
            v.hash(&mut h);
        }
        KeyValue::Consumer(None) => 3u8.hash(&mut h),
        KeyValue::Consumer(Some(c)) => {
            4u8.hash(&mut h);
            c.hash(&mut h);
        }
    }
    h.finish()
}

/// TATs by key hash, least recently used first out. The hashes are SipHash outputs already:
/// the map's own hasher only has to spread them.
type Keys = LruMap<u64, u64, ByLength, FxBuildHasher>;

/// The buckets of one limit.
pub struct Limiter {
    interval: u64,
    tolerance: u64,
    per_shard: usize,
    shards: Box<[Mutex<Keys>]>,
    hasher: RandomState,
    origin: Instant,
    /// Keys forgotten to make room while their bucket was not full again.
    evictions: Counter,
    /// `requests`, `per` and `burst` and the key it was made for.
    def: RateLimitDef,
    /// A `scope: Cluster` limit: decided there, not by the buckets above.
    cluster: Option<Arc<ClusterLimit>>,
    /// `tollgate_ratelimit_limited_total{scope,basis}`.
    limited: Family<LimitedLabels, Counter>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("def", &self.def)
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for `def` that tracks at most `capacity` keys (rounded up to a multiple of
    /// [`SHARDS`]) and counts in `evictions` the keys it forgets before their bucket is full.
    pub fn new(def: &RateLimitDef, capacity: usize, evictions: Counter) -> Limiter {
        let interval = (def.per.as_nanos() as u64 / u64::from(def.requests)).max(1);
        let per_shard = capacity.div_ceil(SHARDS).clamp(1, u32::MAX as usize);
        Limiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(def.burst)),
            per_shard,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(LruMap::with_hasher(
                        ByLength::new(per_shard as u32),
                        FxBuildHasher,
                    ))
                })
                .collect(),
            hasher: RandomState::new(),
            origin: Instant::now(),
            evictions,
            def: def.clone(),
            cluster: None,
            limited: Family::default(),
        }
    }

    /// A limiter for `def` whose `scope: Cluster` goes through `backend`, counting the
    /// requests it limits in `limited`.
    pub fn with_scope(
        def: &RateLimitDef,
        capacity: usize,
        evictions: Counter,
        backend: &Arc<Backend>,
        limited: Family<LimitedLabels, Counter>,
    ) -> Limiter {
        let mut l = Limiter::new(def, capacity, evictions);
        if let LimitScope::Cluster { on_failure } = def.scope {
            l.cluster = Some(Arc::new(ClusterLimit::new(
                def,
                on_failure,
                backend.clone(),
                capacity.min(crate::cluster::MAX_CLUSTER_KEYS),
            )));
        }
        l.limited = limited;
        l
    }

    /// Decides a request of `key` now, by the bucket or the cluster's lease.
    pub fn decide(&self, key: KeyValue<'_>) -> (Verdict, Token) {
        let (verdict, token, scope, basis) = match &self.cluster {
            Some(c) => {
                let (v, taken) = c.acquire_at(key, c.now());
                (v, Token::Cluster(taken), "cluster", taken.basis())
            }
            None => {
                let (v, slot) = self.acquire(key);
                (v, Token::Bucket(slot), "node", Basis::Bucket)
            }
        };
        if !verdict.allowed {
            self.limited
                .get_or_create(&LimitedLabels {
                    scope,
                    basis: basis.label(),
                })
                .inc();
        }
        (verdict, token)
    }

    /// Gives back what [`Limiter::decide`] took.
    pub fn give_back(&self, token: Token) {
        match (token, &self.cluster) {
            (Token::Bucket(slot), _) => self.refund(slot),
            (Token::Cluster(taken), Some(c)) => c.refund(&taken),
            (Token::Cluster(_), None) => {}
        }
    }

    /// The cluster side of a `scope: Cluster` limit.
    pub fn cluster(&self) -> Option<&Arc<ClusterLimit>> {
        self.cluster.as_ref()
    }

    /// Nanoseconds on this limiter's clock.
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn hash(&self, key: KeyValue<'_>) -> u64 {
        hash_key(&self.hasher, key)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Keys> {
        self.shards[(hash >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request of `key` at `now` when it is within the limit.
    pub fn acquire_at(&self, key: KeyValue<'_>, now: u64) -> (Verdict, Slot) {
        let hash = self.hash(key);
        let mut keys = self.shard(hash);
        let (interval, tolerance) = (self.interval, self.tolerance);
        // `get` marks the key as the most recently used, refused or not.
        if let Some(tat) = keys.get(&hash) {
            let (verdict, next) = gcra(*tat, now, interval, tolerance);
            if let Some(n) = next {
                *tat = n;
            }
            return (verdict, Slot(hash));
        }
        let (verdict, next) = gcra(0, now, interval, tolerance);
        if let Some(n) = next {
            if keys.len() >= self.per_shard {
                if let Some((_, tat)) = keys.pop_oldest() {
                    if tat > now {
                        self.evictions.inc();
                    }
                }
            }
            keys.insert(hash, n);
        }
        (verdict, Slot(hash))
    }

    /// Counts a request of `key` now when it is within the limit.
    pub fn acquire(&self, key: KeyValue<'_>) -> (Verdict, Slot) {
        self.acquire_at(key, self.now())
    }

    /// Gives back the token an allowed request took (another limit refused the request).
    pub fn refund(&self, slot: Slot) {
        let interval = self.interval;
        if let Some(tat) = self.shard(slot.0).peek_mut(&slot.0) {
            *tat = tat.saturating_sub(interval);
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Keys forgotten so far to make room while their bucket was not full again.
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }

    fn same_bucket(&self, def: &RateLimitDef) -> bool {
        let a = &self.def;
        (
            &a.policy, &a.name, &a.key, a.requests, a.per, a.burst, a.scope,
        ) == (
            &def.policy,
            &def.name,
            &def.key,
            def.requests,
            def.per,
            def.burst,
            def.scope,
        )
    }
}

/// A limit's identity across revisions: `namespace/name` of its policy, and its name.
type LimitId = (Arc<str>, String);

/// Limiters by limit, kept across revisions.
#[derive(Debug)]
pub struct Registry {
    capacity: usize,
    limiters: Mutex<HashMap<LimitId, Arc<Limiter>>>,
    /// `tollgate_http_ratelimit_evictions_total{policy}`.
    evictions: Family<PolicyLabel, Counter>,
    /// Where `scope: Cluster` limits keep their counters.
    backend: Arc<Backend>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(MAX_KEYS_PER_LIMIT, Family::default())
    }
}

impl Registry {
    /// A registry whose limiters track at most `capacity` keys each and count their evictions
    /// in `evictions`; no Redis (cluster limits run in their `onBackendFailure` mode).
    pub fn new(capacity: usize, evictions: Family<PolicyLabel, Counter>) -> Registry {
        let backend = Backend::start(Default::default(), Default::default());
        Registry::with_backend(capacity, evictions, backend)
    }

    /// As [`Registry::new`], with cluster limits on `backend`.
    pub fn with_backend(
        capacity: usize,
        evictions: Family<PolicyLabel, Counter>,
        backend: Arc<Backend>,
    ) -> Registry {
        Registry {
            capacity,
            limiters: Mutex::default(),
            evictions,
            backend,
        }
    }

    /// Where cluster limits keep their counters.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The limiters of a revision's limits (in its order): the previous revision's limiter of
    /// a limit whose policy, name, key, requests, per and burst are unchanged (its buckets go
    /// on), a new one otherwise. Limiters of limits the revision no longer has are dropped.
    pub fn resolve(&self, defs: &[RateLimitDef]) -> Vec<Arc<Limiter>> {
        let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(defs.len());
        let out = defs
            .iter()
            .map(|def| {
                let id = (def.policy.clone(), def.name.clone());
                let limiter = match map.get(&id) {
                    Some(old) if old.same_bucket(def) => old.clone(),
                    old => {
                        if old.is_some() {
                            info!(policy = %def.policy, limit = %def.name, "rate limit changed: its buckets start full");
                        }
                        let evictions = self
                            .evictions
                            .get_or_create(&PolicyLabel {
                                policy: def.policy.to_string(),
                            })
                            .clone();
                        Arc::new(Limiter::with_scope(
                            def,
                            self.capacity,
                            evictions,
                            &self.backend,
                            self.backend.metrics().limited.clone(),
                        ))
                    }
                };
                next.insert(id, limiter.clone());
                limiter
            })
            .collect();
        *map = next;
        out
    }
}

/// What the limits of a route said about one request.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The enforced limit that refused the request (index into the revision's limits), and
    /// when to retry.
    pub refused: Option<(usize, Duration)>,
    /// Shadow limits that would have refused it.
    pub shadow_refused: Vec<usize>,
    /// The `RateLimit` response header (enforced limits only).
    pub header: Option<HeaderValue>,
}

/// Whole seconds, rounded up (what `Retry-After` and `t=` carry).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Checks a request against every limit of its route. A request must be within all of them:
/// when an enforced limit refuses it, the tokens the others took are given back.
pub fn evaluate(
    defs: &[RateLimitDef],
    limiters: &[Arc<Limiter>],
    route: &RouteLimits,
    client: IpAddr,
    headers: &HeaderMap,
    consumer: Option<&str>,
) -> Outcome {
    let mut outcome = Outcome::default();
    // Both on the stack for the common route (a few limits, short names): this runs on every
    // limited request, and a growing heap buffer was three allocations of it.
    let mut taken: SmallVec<[(usize, Token); 4]> = SmallVec::new();
    // The `RateLimit` header, written in one buffer (its items joined by ", ").
    let mut header: SmallVec<[u8; 128]> = SmallVec::new();
    for &i in &route.limits {
        let (Some(def), Some(limiter)) = (defs.get(i), limiters.get(i)) else {
            continue; // cannot happen: the proxy resolves one limiter per limit
        };
        let (verdict, slot) = limiter.decide(KeyValue::of(&def.key, client, headers, consumer));
        if verdict.allowed {
            taken.push((i, slot));
            if !def.shadow {
                push_rate_limit_item(&mut header, &def.name, verdict.remaining, verdict.reset);
            }
        } else if def.shadow {
            outcome.shadow_refused.push(i);
        } else {
            for (j, slot) in taken.drain(..) {
                limiters[j].give_back(slot);
            }
            outcome.refused = Some((i, verdict.retry_after));
            header.clear();
            push_rate_limit_item(&mut header, &def.name, 0, verdict.retry_after);
            break;
        }
    }
    if !header.is_empty() {
        // One copy, into the value's own buffer.
        outcome.header = HeaderValue::from_bytes(&header).ok();
    }
    outcome
}

/// Appends one item of the `RateLimit` header (draft-ietf-httpapi-ratelimit-headers-09),
/// `"name";r=remaining;t=seconds`, to `header` (after `, ` when it has one).
fn push_rate_limit_item(
    header: &mut SmallVec<[u8; 128]>,
    name: &str,
    remaining: u64,
    reset: Duration,
) {
    // By hand with `itoa`: `write!` went through `core::fmt`, about 1% of the proxy's user
    // time per request (a profile of stop 38).
    let mut digits = itoa::Buffer::new();
    if !header.is_empty() {
        header.extend_from_slice(b", ");
    }
    header.push(b'"');
    header.extend_from_slice(name.as_bytes());
    header.extend_from_slice(b"\";r=");
    header.extend_from_slice(digits.format(remaining).as_bytes());
    header.extend_from_slice(b";t=");
    header.extend_from_slice(digits.format(ceil_secs(reset)).as_bytes());
}

#[cfg(test)]
mod tests;
