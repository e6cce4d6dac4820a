//! Request rate limits (`RateLimitPolicy`): one keyed GCRA limiter per limit.
//!
//! GCRA (the generic cell rate algorithm, ITU-T I.371) is a token bucket that keeps one number
//! per key: the theoretical arrival time (TAT) of the next request if the key sent at exactly
//! the allowed rate. A key that is not in the map has a full bucket. With `interval = per /
//! requests` and `tolerance = interval × burst`, a request at `now` is allowed when
//! `max(TAT, now) + interval - now <= tolerance`, and then moves TAT to that sum.
//!
//! Memory is bounded: keys are hashed with a per-limiter random SipHash key (so a client cannot
//! aim for collisions) and only the 64-bit hash is stored, in [`SHARDS`] mutex-guarded shards of
//! at most `capacity / SHARDS` entries. A full shard first forgets idle keys (whose bucket is
//! full again: forgetting them changes nothing); when every key in it is still active, a new key
//! is counted in the shard's one overflow bucket, shared by all such keys. So a flood of distinct
//! keys can never give anyone a fresh bucket: it only makes the newcomers share one.
//!
//! State outlives revisions: [`Registry::resolve`] hands a new revision the limiter of the
//! previous one when the limit (policy, name, key, requests, per, burst) is unchanged.
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use rustc_hash::FxHashMap;
use tracing::info;

use tollgate_compile::l7::table::{LimitKey, RateLimitDef, RouteLimits};

/// Shards of a limiter's key map (a power of two).
pub const SHARDS: usize = 16;
/// Keys tracked per limit (default of [`Registry::new`]): 100,000 keys take about 3 MB.
pub const MAX_KEYS_PER_LIMIT: usize = 100_000;

/// The key of one request for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyValue<'a> {
    /// The client's address.
    Ip(IpAddr),
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
            LimitKey::ClientIp => KeyValue::Ip(client),
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

/// Where a key's state is kept, to give a token back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Its own entry.
    Key(u64),
    /// The overflow bucket of a full shard.
    Overflow(usize),
}

#[derive(Debug, Default)]
struct Shard {
    tats: FxHashMap<u64, u64>,
    /// TAT of the bucket shared by keys that found the shard full of active keys.
    overflow: u64,
    /// No entry can be idle before this time: a full shard does not sweep again until then.
    sweep_after: u64,
}

/// The buckets of one limit.
#[derive(Debug)]
pub struct Limiter {
    interval: u64,
    tolerance: u64,
    per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    origin: Instant,
    /// `requests`, `per` and `burst` and the key it was made for.
    def: RateLimitDef,
}

impl Limiter {
    /// A limiter for `def` that tracks at most `capacity` keys (rounded up to a multiple of
    /// [`SHARDS`]).
    pub fn new(def: &RateLimitDef, capacity: usize) -> Limiter {
        let interval = (def.per.as_nanos() as u64 / u64::from(def.requests)).max(1);
        Limiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(def.burst)),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            origin: Instant::now(),
            def: def.clone(),
        }
    }

    /// Nanoseconds on this limiter's clock.
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn hash(&self, key: KeyValue<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match key {
            KeyValue::Ip(ip) => {
                0u8.hash(&mut h);
                ip.hash(&mut h);
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

    /// Counts a request of `key` at `now` when it is within the limit.
    pub fn acquire_at(&self, key: KeyValue<'_>, now: u64) -> (Verdict, Slot) {
        let hash = self.hash(key);
        let index = (hash >> 60) as usize % SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        let (interval, tolerance) = (self.interval, self.tolerance);
        if let Some(tat) = shard.tats.get_mut(&hash) {
            let (verdict, next) = gcra(*tat, now, interval, tolerance);
            if let Some(n) = next {
                *tat = n;
            }
            return (verdict, Slot::Key(hash));
        }
        if shard.tats.len() >= self.per_shard && now >= shard.sweep_after {
            // Forget idle keys (full buckets); remember when the next one can become idle.
            let mut earliest = u64::MAX;
            shard.tats.retain(|_, tat| {
                let keep = *tat > now;
                if keep {
                    earliest = earliest.min(*tat);
                }
                keep
            });
            shard.sweep_after = earliest;
        }
        if shard.tats.len() >= self.per_shard {
            let (verdict, next) = gcra(shard.overflow, now, interval, tolerance);
            if let Some(n) = next {
                shard.overflow = n;
            }
            return (verdict, Slot::Overflow(index));
        }
        let (verdict, next) = gcra(0, now, interval, tolerance);
        if let Some(n) = next {
            shard.tats.insert(hash, n);
            shard.sweep_after = shard.sweep_after.min(n);
        }
        (verdict, Slot::Key(hash))
    }

    /// Counts a request of `key` now when it is within the limit.
    pub fn acquire(&self, key: KeyValue<'_>) -> (Verdict, Slot) {
        self.acquire_at(key, self.now())
    }

    /// Gives back the token an allowed request took (another limit refused the request).
    pub fn refund(&self, slot: Slot) {
        let index = match slot {
            Slot::Key(hash) => (hash >> 60) as usize % SHARDS,
            Slot::Overflow(i) => i,
        };
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        let interval = self.interval;
        match slot {
            Slot::Key(hash) => {
                if let Some(tat) = shard.tats.get_mut(&hash) {
                    *tat = tat.saturating_sub(interval);
                }
            }
            Slot::Overflow(_) => shard.overflow = shard.overflow.saturating_sub(interval),
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }

    fn same_bucket(&self, def: &RateLimitDef) -> bool {
        let a = &self.def;
        (&a.policy, &a.name, &a.key, a.requests, a.per, a.burst)
            == (
                &def.policy,
                &def.name,
                &def.key,
                def.requests,
                def.per,
                def.burst,
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
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(MAX_KEYS_PER_LIMIT)
    }
}

impl Registry {
    /// A registry whose limiters track at most `capacity` keys each.
    pub fn new(capacity: usize) -> Registry {
        Registry {
            capacity,
            limiters: Mutex::default(),
        }
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
                        Arc::new(Limiter::new(def, self.capacity))
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
    let mut taken: Vec<(usize, Slot)> = Vec::new();
    let mut items: Vec<String> = Vec::new();
    for &i in &route.limits {
        let (Some(def), Some(limiter)) = (defs.get(i), limiters.get(i)) else {
            continue; // cannot happen: the proxy resolves one limiter per limit
        };
        let (verdict, slot) = limiter.acquire(KeyValue::of(&def.key, client, headers, consumer));
        if verdict.allowed {
            taken.push((i, slot));
            if !def.shadow {
                items.push(rate_limit_item(&def.name, verdict.remaining, verdict.reset));
            }
        } else if def.shadow {
            outcome.shadow_refused.push(i);
        } else {
            for (j, slot) in taken.drain(..) {
                limiters[j].refund(slot);
            }
            outcome.refused = Some((i, verdict.retry_after));
            items = vec![rate_limit_item(&def.name, 0, verdict.retry_after)];
            break;
        }
    }
    if !items.is_empty() {
        outcome.header = HeaderValue::from_str(&items.join(", ")).ok();
    }
    outcome
}

/// One item of the `RateLimit` header (draft-ietf-httpapi-ratelimit-headers-09):
/// `"name";r=remaining;t=seconds`.
pub fn rate_limit_item(name: &str, remaining: u64, reset: Duration) -> String {
    format!("\"{name}\";r={remaining};t={}", ceil_secs(reset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    const S: u64 = 1_000_000_000;

    fn def(name: &str, key: LimitKey, requests: u32, per: u64, burst: u32) -> RateLimitDef {
        RateLimitDef {
            policy: "default/p".into(),
            index: 0,
            name: name.into(),
            key,
            requests,
            per: Duration::from_secs(per),
            burst,
            shadow: false,
        }
    }

    fn ip(s: &str) -> KeyValue<'static> {
        KeyValue::Ip(s.parse().unwrap())
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses_until_one_interval_passes() {
        let l = Limiter::new(&def("a", LimitKey::ClientIp, 10, 1, 3), 100);
        let t0 = 5 * S;
        let got: Vec<_> = (0..4)
            .map(|_| l.acquire_at(ip("192.0.2.1"), t0).0)
            .collect();
        assert_eq!(
            got.iter()
                .map(|v| (v.allowed, v.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        // 10 per second: one request every 100 ms.
        assert_eq!(got[3].retry_after, Duration::from_millis(100));
        assert_eq!(got[2].reset, Duration::from_millis(300));
        assert!(!l.acquire_at(ip("192.0.2.1"), t0 + 99_000_000).0.allowed);
        let v = l.acquire_at(ip("192.0.2.1"), t0 + 100_000_000).0;
        assert_eq!((v.allowed, v.remaining), (true, 0));
        // After the whole burst time the bucket is full again.
        let v = l.acquire_at(ip("192.0.2.1"), t0 + 10 * S).0;
        assert_eq!((v.allowed, v.remaining), (true, 2));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_never_beyond_the_burst() {
        let l = Limiter::new(&def("a", LimitKey::ClientIp, 60, 60, 60), 100);
        let t0 = S;
        for _ in 0..60 {
            assert!(l.acquire_at(ip("192.0.2.1"), t0).0.allowed);
        }
        let v = l.acquire_at(ip("192.0.2.1"), t0).0;
        assert_eq!(
            (v.allowed, v.retry_after, v.reset),
            (false, Duration::from_secs(1), Duration::from_secs(60))
        );
        // 2.5 s later: two requests refilled.
        let later = t0 + 2 * S + S / 2;
        assert!(l.acquire_at(ip("192.0.2.1"), later).0.allowed);
        assert!(l.acquire_at(ip("192.0.2.1"), later).0.allowed);
        assert!(!l.acquire_at(ip("192.0.2.1"), later).0.allowed);
        // An hour later: the burst, not more.
        let idle = t0 + 3600 * S;
        assert_eq!(
            (0..100)
                .filter(|_| l.acquire_at(ip("192.0.2.1"), idle).0.allowed)
                .count(),
            60
        );
    }

    #[test]
    fn each_consumer_has_its_own_bucket_whatever_its_address() {
        let l = Limiter::new(&def("c", LimitKey::Consumer, 1, 60, 1), 100);
        let headers = HeaderMap::new();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let key = |c| KeyValue::of(&LimitKey::Consumer, client, &headers, c);
        assert_eq!(key(Some("app-1")), KeyValue::Consumer(Some("app-1")));
        assert!(l.acquire_at(key(Some("app-1")), S).0.allowed);
        assert!(!l.acquire_at(key(Some("app-1")), S).0.allowed);
        // Same address, another consumer: a bucket of its own.
        assert!(l.acquire_at(key(Some("app-2")), S).0.allowed);
        assert!(!l.acquire_at(key(Some("app-2")), S).0.allowed);
    }

    #[test]
    fn keys_have_their_own_buckets_and_a_missing_header_is_one_bucket() {
        let name = HeaderName::from_static("x-tenant");
        let l = Limiter::new(&def("t", LimitKey::Header(name.clone()), 1, 60, 1), 100);
        let mut a = HeaderMap::new();
        a.insert(&name, HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.insert(&name, HeaderValue::from_static("b"));
        let none = HeaderMap::new();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let key = |h| KeyValue::of(&LimitKey::Header(name.clone()), client, h, None);
        assert_eq!(key(&a), KeyValue::Header(Some(b"a")));
        assert_eq!(key(&none), KeyValue::Header(None));
        assert_eq!(
            KeyValue::of(&LimitKey::ClientIp, client, &a, None),
            KeyValue::Ip(client)
        );
        for h in [&a, &b, &none] {
            assert!(l.acquire_at(key(h), S).0.allowed);
            assert!(!l.acquire_at(key(h), S).0.allowed);
        }
        // An empty value is a value, not a missing header.
        let mut empty = HeaderMap::new();
        empty.insert(&name, HeaderValue::from_static(""));
        assert!(l.acquire_at(key(&empty), S).0.allowed);
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_never_gets_fresh_buckets() {
        let l = Limiter::new(&def("a", LimitKey::ClientIp, 1, 3600, 1), 64);
        let mut allowed = 0;
        for n in 0..10_000u32 {
            let addr = IpAddr::from(std::net::Ipv6Addr::from(u128::from(n) + 1));
            if l.acquire_at(KeyValue::Ip(addr), S).0.allowed {
                allowed += 1;
            }
        }
        assert!(l.keys() <= 64, "{} keys tracked", l.keys());
        // Tracked keys each got their one request; the others shared one bucket per shard.
        assert!(allowed <= 64 + SHARDS, "{allowed} allowed");
        // A key that got in stays limited.
        let first = KeyValue::Ip(IpAddr::from(std::net::Ipv6Addr::from(1u128)));
        assert!(!l.acquire_at(first, S).0.allowed);
    }

    #[test]
    fn idle_keys_are_forgotten_when_their_shard_is_full() {
        // Four keys per shard.
        let l = Limiter::new(&def("a", LimitKey::ClientIp, 1, 1, 1), SHARDS * 4);
        for n in 0..1000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(n));
            l.acquire_at(KeyValue::Ip(addr), S);
        }
        assert_eq!(l.keys(), SHARDS * 4, "every shard is full");
        // Two seconds later every bucket is full again: new keys get their own buckets (four
        // new keys fit in any one shard, however they hash).
        let later = 3 * S;
        for n in 5000..5004u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(n));
            let (verdict, slot) = l.acquire_at(KeyValue::Ip(addr), later);
            assert!(verdict.allowed);
            assert!(matches!(slot, Slot::Key(_)), "{slot:?}");
        }
    }

    #[test]
    fn a_refused_request_takes_nothing_from_the_other_limits() {
        let defs = vec![
            def("wide", LimitKey::ClientIp, 100, 60, 100),
            def("narrow", LimitKey::ClientIp, 2, 60, 2),
        ];
        let limiters: Vec<_> = defs
            .iter()
            .map(|d| Arc::new(Limiter::new(d, 100)))
            .collect();
        let route = RouteLimits::new(vec![0, 1], &defs);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let h = HeaderMap::new();
        let o = evaluate(&defs, &limiters, &route, client, &h, None);
        assert!(o.refused.is_none());
        assert_eq!(o.header.unwrap(), "\"wide\";r=99;t=1, \"narrow\";r=1;t=30");
        evaluate(&defs, &limiters, &route, client, &h, None);
        for _ in 0..5 {
            let o = evaluate(&defs, &limiters, &route, client, &h, None);
            let (i, retry) = o.refused.unwrap();
            assert_eq!((i, ceil_secs(retry)), (1, 30));
            assert_eq!(o.header.unwrap(), "\"narrow\";r=0;t=30");
        }
        // "wide" counted the two allowed requests only.
        let v = limiters[0].acquire(KeyValue::Ip(client)).0;
        assert_eq!(v.remaining, 97);
        assert_eq!(
            route.policy_header.unwrap(),
            "\"wide\";q=100;w=60, \"narrow\";q=2;w=60"
        );
    }

    #[test]
    fn shadow_limits_count_but_neither_refuse_nor_show_headers() {
        let mut d = def("s", LimitKey::ClientIp, 1, 60, 1);
        d.shadow = true;
        let defs = vec![d];
        let limiters = vec![Arc::new(Limiter::new(&defs[0], 100))];
        let route = RouteLimits::new(vec![0], &defs);
        assert!(route.policy_header.is_none());
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let h = HeaderMap::new();
        let first = evaluate(&defs, &limiters, &route, client, &h, None);
        assert!(first.refused.is_none() && first.shadow_refused.is_empty());
        assert!(first.header.is_none());
        let second = evaluate(&defs, &limiters, &route, client, &h, None);
        assert!(second.refused.is_none());
        assert_eq!(second.shadow_refused, [0]);
    }

    #[test]
    fn a_reload_keeps_the_buckets_of_unchanged_limits_only() {
        let r = Registry::new(100);
        let a = def("a", LimitKey::ClientIp, 1, 60, 1);
        let b = def("b", LimitKey::ClientIp, 1, 60, 1);
        let first = r.resolve(&[a.clone(), b.clone()]);
        let mut shadowed = a.clone();
        shadowed.shadow = true;
        shadowed.index = 3;
        let mut changed = b.clone();
        changed.requests = 2;
        let second = r.resolve(&[shadowed, changed]);
        assert!(
            Arc::ptr_eq(&first[0], &second[0]),
            "mode and position are not the bucket"
        );
        assert!(!Arc::ptr_eq(&first[1], &second[1]));
        let third = r.resolve(&[b]);
        assert!(!Arc::ptr_eq(&second[1], &third[0]));
        let fourth = r.resolve(&[a]);
        assert!(
            !Arc::ptr_eq(&first[0], &fourth[0]),
            "a limit that went away starts over"
        );
    }

    #[test]
    fn header_items_round_up_to_whole_seconds() {
        assert_eq!(
            rate_limit_item("p", 3, Duration::from_millis(1)),
            "\"p\";r=3;t=1"
        );
        assert_eq!(rate_limit_item("p", 0, Duration::ZERO), "\"p\";r=0;t=0");
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
