//! `banOnAbuse`: counts the failures (401s of an AuthPolicy, 429s of a RateLimitPolicy) of
//! each client address and, when one crosses its policy's threshold, asks the agent's ban task
//! to put it into the XDP blocklist. The proxy never writes kernel maps itself: requests go
//! through a bounded channel ([`BAN_QUEUE`]); when it is full the ban is dropped and counted
//! (`tollgate_ban_requests_dropped_total`).
//!
//! Counting is per policy and address, in a fixed window that starts at the address's first
//! failure (`within`); the counter is forgotten when the window ends or the address is
//! banned. Memory is bounded: at most [`MAX_TRACKED`] addresses per policy, in [`SHARDS`]
//! mutex-guarded shards; a full shard forgets expired windows first, then its oldest window.
//! Only failures touch this state: a successful request costs nothing.
//!
//! Never banned (checked before counting): loopback addresses, unspecified addresses, and
//! addresses inside a `--trusted-proxy` or `--never-ban` CIDR.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use tollgate_compile::l7::table::{BanDef, BanKey, L7Policy};
use tollgate_model::BanKind;

/// Addresses whose failures are counted at once, per policy.
pub const MAX_TRACKED: usize = 100_000;
/// Shards of a policy's counters.
pub const SHARDS: usize = 16;
/// Ban requests waiting for the ban task at most.
pub const BAN_QUEUE: usize = 1024;

/// A source to ban, from the proxy to the ban task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRequest {
    /// The client address.
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
    shards: Vec<Mutex<FxHashMap<IpAddr, Window>>>,
    per_shard: usize,
}

impl Tracker {
    fn new(capacity: usize) -> Tracker {
        Tracker {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, a: IpAddr) -> usize {
        let h = match a {
            IpAddr::V4(v) => u32::from(v) as u64,
            IpAddr::V6(v) => {
                let x = u128::from(v);
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        // Mix, so that neighbouring addresses spread over the shards.
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
    }

    /// Counts one failure of `a` at `now`; true when it reaches `def.threshold` (the counter
    /// is then forgotten).
    fn fail(&self, a: IpAddr, def: &BanDef, now: Instant) -> Option<u32> {
        let mut shard = self.shards[self.shard(a)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !shard.contains_key(&a) && shard.len() >= self.per_shard {
            shard.retain(|_, w| now.duration_since(w.start) < def.within);
            if shard.len() >= self.per_shard {
                if let Some(oldest) = shard.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k) {
                    shard.remove(&oldest);
                }
            }
        }
        let w = shard.entry(a).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(w.start) >= def.within {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        w.count += 1;
        if w.count >= def.threshold {
            let n = w.count;
            shard.remove(&a);
            return Some(n);
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

/// The failure counters of every policy with a `banOnAbuse`, kept across revisions.
pub struct Abuse {
    banner: std::sync::OnceLock<Banner>,
    trackers: Mutex<HashMap<BanKey, Arc<Tracker>>>,
    capacity: usize,
}

impl Default for Abuse {
    fn default() -> Self {
        Abuse::new(None, MAX_TRACKED)
    }
}

impl Abuse {
    /// Counters of at most `capacity` addresses per policy; `banner: None` counts but bans
    /// nothing (no data plane).
    pub fn new(banner: Option<Banner>, capacity: usize) -> Abuse {
        let cell = std::sync::OnceLock::new();
        if let Some(b) = banner {
            let _ = cell.set(b);
        }
        Abuse {
            banner: cell,
            trackers: Mutex::new(HashMap::new()),
            capacity,
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
        let exempt_cidrs = self.banner.get().map(|b| b.exempt.as_slice());
        if exempt(client, exempt_cidrs.unwrap_or_default()) {
            return None;
        }
        let tracker = self
            .trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(Tracker::new(self.capacity)))
            .clone();
        let failures = tracker.fail(client, def, Instant::now())?;
        let request = BanRequest {
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
                tracing::warn!(address = %client, policy = %policy, "ban request dropped: the ban task's queue is full");
            }
        }
        Some(request)
    }

    /// Addresses counted for `policy` now (tests).
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
        }
    }

    fn bans(d: BanDef) -> HashMap<BanKey, BanDef> {
        HashMap::from([((BanKind::Auth, Arc::from("ns/p")), d)])
    }

    #[test]
    fn the_threshold_failure_sends_one_ban_and_the_count_restarts() {
        let (tx, mut rx) = mpsc::channel(8);
        let abuse = Abuse::new(Some(Banner::new(tx, vec![], Counter::default())), 1000);
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
        let t = Tracker::new(100);
        let d = BanDef {
            threshold: 2,
            within: Duration::from_millis(50),
            block_for: Duration::from_secs(1),
        };
        let a: IpAddr = "2001:db8::1".parse().unwrap();
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
        let abuse = Abuse::new(Some(Banner::new(tx, cidrs, Counter::default())), 1000);
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
        let t = Tracker::new(SHARDS * 4);
        let d = def(100, 60);
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.fail(IpAddr::from(i.to_be_bytes()), &d, now);
        }
        assert!(t.len() <= SHARDS * 4, "{}", t.len());

        let (tx, _rx) = mpsc::channel(1);
        let dropped = Counter::default();
        let abuse = Abuse::new(Some(Banner::new(tx, vec![], dropped.clone())), 1000);
        let b = bans(def(1, 60));
        let p: Arc<str> = "ns/p".into();
        let r: Arc<str> = "ns/r".into();
        for i in 1..=3u8 {
            abuse.fail(&b, BanKind::Auth, &p, &r, IpAddr::from([192, 0, 2, i]));
        }
        assert_eq!(dropped.get(), 2, "one queued, two dropped");
    }
}
