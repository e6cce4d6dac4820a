//! `banOnAbuse`: counts the failures (401s of an AuthPolicy, 429s of a RateLimitPolicy) of
//! each client and, when one crosses its policy's threshold, asks the agent's ban task to put
//! it into the XDP blocklist. The proxy never writes kernel maps itself: requests go through a
//! bounded channel ([`BAN_QUEUE`]); when it is full the ban is dropped and counted
//! (`tollgate_ban_requests_dropped_total`).
//!
//! A client is its network ([`client_prefix`]): an IPv4 address, or the IPv6 prefix of the
//! policy's `clientIP.ipv6Prefix` (a /64 by default), since one end site can rotate through
//! the addresses of its /64 at will. Failures are counted and the ban is made per network.
//!
//! Counting is per policy and network, in a fixed window that starts at its first failure
//! (`within`); the counter is forgotten when the window ends or the client is banned. Memory
//! is bounded: at most [`MAX_TRACKED`] clients per policy, in [`SHARDS`] mutex-guarded shards,
//! each a least-recently-failed map: a client failing for the first time in a full shard takes
//! the place of the one whose last failure is oldest (its count is lost; counted in
//! `tollgate_http_abuse_evictions_total{policy}` when its window had not ended). A flood of new
//! clients thus costs O(1) each and never stops the counting of a client that keeps failing.
//! Only failures touch this state: a successful request costs nothing.
//!
//! Never banned (checked before counting): loopback addresses, unspecified addresses, and
//! addresses inside a `--trusted-proxy` or `--never-ban` CIDR. An IPv6 prefix that holds such
//! an address (or overlaps such a CIDR) is narrowed to the client's own address.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use schnellru::{ByLength, LruMap};
use tokio::sync::mpsc;

use crate::client_prefix::client_prefix;
use crate::metrics::PolicyLabel;
use tollgate_compile::l7::table::{BanDef, BanKey, L7Policy};
use tollgate_model::BanKind;

/// Clients whose failures are counted at once, per policy.
pub const MAX_TRACKED: usize = 100_000;
/// Shards of a policy's counters.
pub const SHARDS: usize = 16;
/// Ban requests waiting for the ban task at most.
pub const BAN_QUEUE: usize = 1024;

/// A source to ban, from the proxy to the ban task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRequest {
    /// What to ban: the client's address (IPv4), or its IPv6 prefix.
    pub prefix: IpNet,
    /// The address of the request that crossed the threshold (for the log).
    pub address: IpAddr,
    /// Who bans.
    pub kind: BanKind,
    /// `namespace/name` of the policy.
    pub policy: Arc<str>,
    /// The route of the request that crossed the threshold (for the log).
    pub route: Arc<str>,
    /// How long.
    pub block_for: Duration,
    /// Failures counted.
    pub failures: u32,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// The failure counters of one policy.
struct Tracker {
    shards: Vec<Mutex<LruMap<IpNet, Window, ByLength>>>,
    per_shard: usize,
    /// Counts forgotten before their window ended.
    evictions: Counter,
}

impl Tracker {
    fn new(capacity: usize, evictions: Counter) -> Tracker {
        let per_shard = capacity.div_ceil(SHARDS).clamp(1, u32::MAX as usize);
        Tracker {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruMap::new(ByLength::new(per_shard as u32))))
                .collect(),
            per_shard,
            evictions,
        }
    }

    fn shard(&self, n: &IpNet) -> usize {
        let h = match n.network() {
            IpAddr::V4(v) => u32::from(v) as u64,
            IpAddr::V6(v) => {
                let x = u128::from(v);
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        // Mix, so that neighbouring networks spread over the shards.
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
    }

    /// Counts one failure of client `n` at `now`; the count when it reaches
    /// `def.threshold` (the counter is then forgotten).
    fn fail(&self, n: IpNet, def: &BanDef, now: Instant) -> Option<u32> {
        let mut shard = self.shards[self.shard(&n)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // `get` marks the client as the most recent to fail.
        let count = match shard.get(&n) {
            Some(w) => {
                if now.duration_since(w.start) >= def.within {
                    *w = Window {
                        start: now,
                        count: 0,
                    };
                }
                w.count += 1;
                w.count
            }
            None => {
                if shard.len() >= self.per_shard {
                    if let Some((_, w)) = shard.pop_oldest() {
                        if now.duration_since(w.start) < def.within {
                            self.evictions.inc();
                        }
                    }
                }
                shard.insert(
                    n,
                    Window {
                        start: now,
                        count: 1,
                    },
                );
                1
            }
        };
        if count >= def.threshold {
            shard.remove(&n);
            return Some(count);
        }
        None
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Where bans go, and who is never banned.
pub struct Banner {
    tx: mpsc::Sender<BanRequest>,
    exempt: Vec<IpNet>,
    dropped: Counter,
}

impl Banner {
    /// Sends bans to `tx`; never bans addresses in `exempt` (the `--trusted-proxy` and
    /// `--never-ban` CIDRs) or loopback addresses; counts lost requests in `dropped`.
    pub fn new(tx: mpsc::Sender<BanRequest>, exempt: Vec<IpNet>, dropped: Counter) -> Banner {
        Banner {
            tx,
            exempt,
            dropped,
        }
    }
}

/// True when `a` is never banned.
pub fn exempt(a: IpAddr, cidrs: &[IpNet]) -> bool {
    let a = a.to_canonical();
    a.is_loopback() || a.is_unspecified() || cidrs.iter().any(|n| n.contains(&a))
}

/// True when the network `n` holds an address that is never banned: a loopback or unspecified
/// address, or part of one of `cidrs`.
pub fn holds_exempt(n: &IpNet, cidrs: &[IpNet]) -> bool {
    static SPECIAL: std::sync::LazyLock<[IpNet; 4]> = std::sync::LazyLock::new(|| {
        ["127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128"].map(|c| c.parse().expect("a CIDR"))
    });
    let overlaps = |c: &IpNet| n.contains(c) || c.contains(n);
    SPECIAL.iter().chain(cidrs).any(overlaps)
}

/// The failure counters of every policy with a `banOnAbuse`, kept across revisions.
pub struct Abuse {
    banner: std::sync::OnceLock<Banner>,
    trackers: Mutex<HashMap<BanKey, Arc<Tracker>>>,
    capacity: usize,
    /// `tollgate_http_abuse_evictions_total{policy}`.
    evictions: Family<PolicyLabel, Counter>,
}

impl Default for Abuse {
    fn default() -> Self {
        Abuse::new(None, MAX_TRACKED, Family::default())
    }
}

impl Abuse {
    /// Counters of at most `capacity` clients per policy, whose evictions are counted in
    /// `evictions`; `banner: None` counts but bans nothing (no data plane).
    pub fn new(
        banner: Option<Banner>,
        capacity: usize,
        evictions: Family<PolicyLabel, Counter>,
    ) -> Abuse {
        let cell = std::sync::OnceLock::new();
        if let Some(b) = banner {
            let _ = cell.set(b);
        }
        Abuse {
            banner: cell,
            trackers: Mutex::new(HashMap::new()),
            capacity,
            evictions,
        }
    }

    /// Sends bans to `banner` from now on (once; false if one is installed already).
    pub fn install(&self, banner: Banner) -> bool {
        self.banner.set(banner).is_ok()
    }

    /// Forgets the counters of policies that are gone or no longer ban.
    pub fn retain(&self, policy: &L7Policy) {
        self.trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| policy.bans.contains_key(k));
    }

    /// Counts a failure of `client` against `policy` (a no-op when the policy has no
    /// `banOnAbuse` or the address is exempt); sends a ban when it crosses the threshold.
    /// Returns the request sent, if any.
    pub fn fail(
        &self,
        bans: &HashMap<BanKey, BanDef>,
        kind: BanKind,
        policy: &Arc<str>,
        route: &Arc<str>,
        client: IpAddr,
    ) -> Option<BanRequest> {
        if bans.is_empty() {
            return None;
        }
        let key = (kind, policy.clone());
        let def = bans.get(&key)?;
        let client = client.to_canonical();
        let exempt_cidrs = self
            .banner
            .get()
            .map(|b| b.exempt.as_slice())
            .unwrap_or_default();
        if exempt(client, exempt_cidrs) {
            return None;
        }
        let mut prefix = client_prefix(client, 32, def.ipv6_prefix);
        if holds_exempt(&prefix, exempt_cidrs) {
            prefix = IpNet::from(client);
        }
        let tracker = self
            .trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| {
                let evictions = self
                    .evictions
                    .get_or_create(&PolicyLabel {
                        policy: policy.to_string(),
                    })
                    .clone();
                Arc::new(Tracker::new(self.capacity, evictions))
            })
            .clone();
        let failures = tracker.fail(prefix, def, Instant::now())?;
        let request = BanRequest {
            prefix,
            address: client,
            kind,
            policy: policy.clone(),
            route: route.clone(),
            block_for: def.block_for,
            failures,
        };
        if let Some(b) = self.banner.get() {
            if b.tx.try_send(request.clone()).is_err() {
                b.dropped.inc();
                tracing::warn!(address = %client, prefix = %prefix, policy = %policy, "ban request dropped: the ban task's queue is full");
            }
        }
        Some(request)
    }

    /// Clients counted for `policy` now (tests).
    pub fn tracked(&self, kind: BanKind, policy: &str) -> usize {
        self.trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(kind, Arc::from(policy)))
            .map_or(0, |t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(threshold: u32, within: u64) -> BanDef {
        BanDef {
            threshold,
            within: Duration::from_secs(within),
            block_for: Duration::from_secs(10),
            ipv6_prefix: 64,
        }
    }

    fn abuse(tx: mpsc::Sender<BanRequest>, exempt: Vec<IpNet>, capacity: usize) -> Abuse {
        let banner = Banner::new(tx, exempt, Counter::default());
        Abuse::new(Some(banner), capacity, Family::default())
    }

    fn bans(d: BanDef) -> HashMap<BanKey, BanDef> {
        HashMap::from([((BanKind::Auth, Arc::from("ns/p")), d)])
    }

    #[test]
    fn the_threshold_failure_sends_one_ban_and_the_count_restarts() {
        let (tx, mut rx) = mpsc::channel(8);
        let abuse = abuse(tx, vec![], 1000);
        let b = bans(def(3, 60));
        let p: Arc<str> = "ns/p".into();
        let r: Arc<str> = "ns/r".into();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(abuse.fail(&b, BanKind::Auth, &p, &r, a).is_none());
        assert!(abuse.fail(&b, BanKind::Auth, &p, &r, a).is_none());
        let sent = abuse
            .fail(&b, BanKind::Auth, &p, &r, a)
            .expect("third failure bans");
        assert_eq!(sent.address, a);
        assert_eq!(sent.block_for, Duration::from_secs(10));
        assert_eq!(rx.try_recv().unwrap(), sent);
        assert!(
            abuse.fail(&b, BanKind::Auth, &p, &r, a).is_none(),
            "counting restarts"
        );
        // Another policy kind, or a policy without banOnAbuse: nothing counted.
        assert!(abuse.fail(&b, BanKind::Ratelimit, &p, &r, a).is_none());
        assert_eq!(abuse.tracked(BanKind::Ratelimit, "ns/p"), 0);
    }

    #[test]
    fn a_window_restarts_after_within() {
        let t = Tracker::new(100, Counter::default());
        let d = BanDef {
            threshold: 2,
            within: Duration::from_millis(50),
            block_for: Duration::from_secs(1),
            ipv6_prefix: 64,
        };
        let a: IpNet = "2001:db8::/64".parse().unwrap();
        let now = Instant::now();
        assert_eq!(t.fail(a, &d, now), None);
        assert_eq!(
            t.fail(a, &d, now + Duration::from_millis(60)),
            None,
            "new window"
        );
        assert_eq!(t.fail(a, &d, now + Duration::from_millis(70)), Some(2));
    }

    #[test]
    fn loopback_trusted_and_never_ban_addresses_are_exempt() {
        let cidrs: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        for a in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "0.0.0.0",
        ] {
            assert!(exempt(a.parse().unwrap(), &cidrs), "{a}");
        }
        assert!(!exempt("192.0.2.1".parse().unwrap(), &cidrs));
        let (tx, mut rx) = mpsc::channel(8);
        let abuse = abuse(tx, cidrs, 1000);
        let b = bans(def(1, 60));
        let p: Arc<str> = "ns/p".into();
        let r: Arc<str> = "ns/r".into();
        assert!(abuse
            .fail(&b, BanKind::Auth, &p, &r, "10.9.9.9".parse().unwrap())
            .is_none());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn memory_is_bounded_and_a_full_queue_counts_the_lost_ban() {
        let t = Tracker::new(SHARDS * 4, Counter::default());
        let d = def(100, 60);
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.fail(IpNet::from(IpAddr::from(i.to_be_bytes())), &d, now);
        }
        assert!(t.len() <= SHARDS * 4, "{}", t.len());

        let (tx, _rx) = mpsc::channel(1);
        let dropped = Counter::default();
        let abuse = Abuse::new(
            Some(Banner::new(tx, vec![], dropped.clone())),
            1000,
            Family::default(),
        );
        let b = bans(def(1, 60));
        let p: Arc<str> = "ns/p".into();
        let r: Arc<str> = "ns/r".into();
        for i in 1..=3u8 {
            abuse.fail(&b, BanKind::Auth, &p, &r, IpAddr::from([192, 0, 2, i]));
        }
        assert_eq!(dropped.get(), 2, "one queued, two dropped");
    }

    #[test]
    fn rotating_ipv6_addresses_within_a_64_are_counted_and_banned_together() {
        let (tx, mut rx) = mpsc::channel(8);
        let abuse = abuse(tx, vec![], 1000);
        let b = bans(def(5, 60));
        let p: Arc<str> = "ns/p".into();
        let r: Arc<str> = "ns/r".into();
        // The measured attack: a new address of one /64 for each failure.
        let mut sent = Vec::new();
        for n in 0..64_293u32 {
            let a: IpAddr = format!("2001:db8:1:2:{:x}:{:x}::1", n >> 16, n & 0xffff)
                .parse()
                .unwrap();
            if let Some(req) = abuse.fail(&b, BanKind::Auth, &p, &r, a) {
                sent.push((n, req));
            }
        }
        // Banned at the 5th failure, then counted again from zero: 64,293 / 5 requests (the
        // ban task takes the first; a banned /64 sends no more in real life).
        eprintln!(
            "64,293 failures from one /64: first ban after {} failures, {} bans asked",
            sent[0].0 + 1,
            sent.len()
        );
        assert_eq!(sent.len(), 64_293 / 5);
        let (n, first) = &sent[0];
        assert_eq!(*n, 4);
        assert_eq!(first.prefix, "2001:db8:1:2::/64".parse::<IpNet>().unwrap());
        assert_eq!(first.failures, 5);
        assert_eq!(rx.try_recv().unwrap(), *first);
        // Another /64 and an IPv4 client are clients of their own.
        for a in ["2001:db8:1:3::1", "192.0.2.1"] {
            assert!(abuse
                .fail(&b, BanKind::Auth, &p, &r, a.parse().unwrap())
                .is_none());
        }
    }

    #[test]
    fn a_prefix_that_holds_a_never_ban_address_is_narrowed_to_the_client() {
        let (tx, _rx) = mpsc::channel(8);
        let never: Vec<IpNet> = vec!["2001:db8:1:2::53/128".parse().unwrap()];
        let abuse = abuse(tx, never, 1000);
        let b = bans(def(1, 60));
        let p: Arc<str> = "ns/p".into();
        let r: Arc<str> = "ns/r".into();
        let req = abuse
            .fail(
                &b,
                BanKind::Auth,
                &p,
                &r,
                "2001:db8:1:2::7".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(req.prefix, "2001:db8:1:2::7/128".parse::<IpNet>().unwrap());
        // ::/64 holds ::1 (loopback).
        let req = abuse
            .fail(&b, BanKind::Auth, &p, &r, "::7".parse().unwrap())
            .unwrap();
        assert_eq!(req.prefix, "::7/128".parse::<IpNet>().unwrap());
        assert!(holds_exempt(&"::/64".parse().unwrap(), &[]));
        assert!(!holds_exempt(&"2001:db8::/64".parse().unwrap(), &[]));
    }

    #[test]
    fn a_client_that_keeps_failing_is_banned_through_a_flood_of_new_clients() {
        // Four clients per shard; a flood of one-off clients, and one that fails every 16th.
        let evictions = Counter::default();
        let t = Tracker::new(SHARDS * 4, evictions.clone());
        let d = def(10, 600);
        let now = Instant::now();
        let abuser: IpNet = "198.51.100.7/32".parse().unwrap();
        let mut banned_at = None;
        for i in 0..100_000u32 {
            if i % 16 == 0 {
                if let Some(n) = t.fail(abuser, &d, now) {
                    banned_at = Some((i, n));
                    break;
                }
            } else {
                t.fail(IpNet::from(IpAddr::from(i.to_be_bytes())), &d, now);
            }
        }
        assert_eq!(banned_at, Some((144, 10)), "the 10th failure bans");
        assert!(t.len() <= SHARDS * 4);
        assert!(evictions.get() > 0, "the flood pushed one-off clients out");
    }
}
