//! Cluster-wide rate limits (`RateLimitPolicy` `scope: Cluster`): the counters live in Redis (or
//! Valkey), and no request waits for it.
//!
//! # The shared window
//! Redis counts fixed windows of `per`, numbered by Redis' own clock (`TIME` inside the script,
//! so the agents' clocks do not have to agree): key `tollgate:rl:{<hash>}:<window>`. Fixed
//! windows rather than a sliding log or counter because a batch of tokens taken from a window
//! belongs to that window alone: an agent can hold tokens without double counting, drop them
//! exactly when the window ends, and answer `RateLimit` (`r`, `t`) and `Retry-After` from the
//! window's real count and end. The price, documented: a key may send `requests` at the end of
//! one window and `requests` again at the start of the next.
//!
//! # No round trip per request
//! Each agent keeps, per (limit, key), a *lease*: tokens Redis granted it from the current
//! window ([`KeyState`]). A request takes a token from the lease. When the lease falls to half
//! a batch, the key is queued for the sync task ([`redis`]) which asks Redis for the next batch
//! (an atomic Lua script: grant at most what the window has left, and say which window), many
//! keys per round, rounds at least [`ROUND_GAP`] apart.
//! The batch is the key's request rate on this agent times [`LEASE_HORIZON`], at least one and at
//! most `requests / (4 × agents)`, so a hot key syncs a few times per horizon whatever its rate
//! and a cold key takes one token at a time. A key with no lease yet (its first request, or a
//! sync on its way) is decided by this node's share of the limit (a token bucket of `requests /
//! agents`), and what that admits is charged to the window with the next sync. Once Redis has
//! said the window is used up, requests are refused until it ends.
//!
//! # Failure
//! On a Redis Cluster, a primary that does not answer marks only its slots down ([`slots`]).
//! Otherwise a sync or health check that fails or takes longer than [`SYNC_TIMEOUT`] marks the
//! backend down: from then on, keys without a lease follow their policy's `onBackendFailure` (`local`:
//! this node's share, `requests / agents` per window of Redis' clock as last seen, counting
//! what the agent admitted in that window before; `allow`; `deny`: 429), `/status`, `tollgate_ratelimit_cluster_fallback`
//! and a log line say so, and the task reconnects with exponential backoff. Requests never wait
//! for any of it: the decision is a lock and a few integer operations in every case.
//!
//! # Bounds
//! Keys tracked per limit: [`MAX_CLUSTER_KEYS`] (least recently used out; idle keys whose
//! window ended are swept every [`SWEEP_EVERY`]). Redis keys expire one second after their
//! window. Key names in Redis are a SHA-256 of (policy, limit, key value), truncated to 128
//! bits: no consumer name or address is stored (an IPv4 address can still be found again by
//! hashing all 2^32 of them; the hash hides, it does not encrypt).
mod backend;
mod metrics;
pub mod redis;
pub mod settings;
pub mod slots;

use std::collections::hash_map::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustc_hash::FxBuildHasher;
use schnellru::{ByLength, LruMap};
use sha2::{Digest, Sha256};

use crate::limit::{KeyValue, Limiter, Verdict};
use crate::metrics::PolicyLabel;
use tollgate_compile::l7::table::{RateLimitBackendFailure, RateLimitDef};

pub use self::backend::{AgentsFrom, Backend, BackendStatus, ClusterSettings};
pub use self::metrics::{ClusterMetrics, LimitedLabels};
pub use self::settings::{RedisSettings, SettingsError};
pub use self::slots::NodeDownStatus;

/// Keys tracked per cluster limit (least recently used out).
pub const MAX_CLUSTER_KEYS: usize = 100_000;
/// How long a batch should last at the key's current rate on this agent.
pub const LEASE_HORIZON: Duration = Duration::from_millis(100);
/// Longest a sync (one round) or health check may take before the backend counts as down.
pub const SYNC_TIMEOUT: Duration = Duration::from_millis(250);
/// Keys whose sync is waiting, at most (more are synced on a later request).
pub const SYNC_QUEUE: usize = 65_536;
/// Keys synced in one round, at most.
pub const MAX_PIPELINE: usize = 512;
/// Least time from the start of one round to the start of the next: a round has a cost of its
/// own (a command, a wake-up of the sync task, Redis parsing a script call), so keys queued
/// within it go out together. A hot key asks for its next batch at half a lease that lasts
/// [`LEASE_HORIZON`], long before it runs out; a new key waits on this node's share meanwhile.
pub const ROUND_GAP: Duration = Duration::from_millis(2);
/// Health check interval when no sync ran.
pub const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// Sweep of idle keys.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Reconnect backoff: first wait and cap.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Reconnect backoff cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// `Retry-After` of a request refused by `onBackendFailure: deny`.
pub const DENY_RETRY: Duration = Duration::from_secs(1);

const SHARDS: usize = 16;

/// A key whose lease should be refilled.
#[derive(Debug)]
pub(crate) struct SyncRequest {
    limit: Arc<ClusterLimit>,
    hash: u64,
}

/// One key's lease and what the agent knows of its shared window.
#[derive(Debug, Clone)]
pub(crate) struct KeyState {
    /// `tollgate:rl:{<hash>}`, without the window number.
    redis_key: Arc<str>,
    /// Its Redis Cluster slot.
    slot: u16,
    /// Tokens granted by Redis, from the window ending at `window_end`, not used yet.
    lease: u32,
    /// Requests admitted without a lease (this node's share), not yet charged to the window.
    debt: u32,
    /// Redis' number of the window of the lease (`TIME` / `per`); 0: none yet.
    window: u64,
    /// End of the window of the lease (ns on the limit's clock); 0: unknown or over.
    window_end: u64,
    /// The window's count in Redis at the last answer.
    shared_used: u64,
    /// Redis said the window is used up.
    full: bool,
    /// A sync is queued or in flight.
    pending: bool,
    /// Requests since the last sync was sent (for the rate).
    demand: u32,
    /// When the last sync was sent (ns).
    last_sync: u64,
    /// Requests per second on this agent (smoothed).
    rate: f64,
    /// Last request (ns).
    last_use: u64,
    /// The window (numbered on this agent's clock, aligned with Redis' windows as last seen)
    /// that `admitted` counts.
    local_window: u64,
    /// Requests this agent admitted for the key in `local_window`, on any basis: while Redis
    /// is down, `onBackendFailure: local` admits up to the share minus these.
    admitted: u32,
}

impl KeyState {
    /// What this agent admitted for the key in the window `now` falls in (of `limit`'s
    /// windows).
    fn admitted_in_window(&mut self, limit: &ClusterLimit, now: u64) -> u32 {
        limit.local_window_end(self, now);
        self.admitted
    }
}

type Keys = LruMap<u64, KeyState, ByLength, FxBuildHasher>;

/// The cluster side of one limit: leases per key.
pub struct ClusterLimit {
    def: RateLimitDef,
    on_failure: RateLimitBackendFailure,
    backend: Arc<Backend>,
    shards: Box<[Mutex<Keys>]>,
    per_shard: usize,
    hasher: RandomState,
    /// This node's share, for the agent count it was made for.
    share: arc_swap::ArcSwap<Share>,
    /// Keys tracked, at most.
    capacity: usize,
    /// The origin of this limit's clock.
    origin: Instant,
    /// Where Redis' windows end on this agent's clock: `window_end % per` of the last answer
    /// (ns; 0 until Redis has answered once).
    phase: AtomicU64,
    /// The window in milliseconds (what the script takes).
    per_ms: u64,
    /// The prefix of the Redis key names' hash: policy and limit.
    prefix: Vec<u8>,
    keys_gauge: Gauge,
}

/// This node's share of a cluster limit, for one agent count.
struct Share {
    agents: u32,
    /// A token bucket of `requests / agents`: keys without a lease while Redis is up (a new
    /// key's first requests).
    bucket: Limiter,
    /// This node's share per window: `onBackendFailure: local` while Redis is down.
    requests: u32,
    /// Most tokens asked for at once: `requests / (4 × agents)`.
    max_batch: u32,
}

impl Share {
    fn new(def: &RateLimitDef, agents: u32, capacity: usize) -> Share {
        let agents = agents.max(1);
        let mut share = def.clone();
        share.requests = (def.requests / agents).max(1);
        share.burst = (def.burst / agents).max(1);
        Share {
            agents,
            bucket: Limiter::new(&share, capacity, Counter::default()),
            requests: share.requests,
            max_batch: (def.requests / (4 * agents)).max(1),
        }
    }
}

impl std::fmt::Debug for ClusterLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLimit")
            .field("def", &self.def)
            .finish_non_exhaustive()
    }
}

impl ClusterLimit {
    /// The cluster side of `def` (a `scope: Cluster` limit), tracking at most `capacity` keys.
    pub fn new(
        def: &RateLimitDef,
        on_failure: RateLimitBackendFailure,
        backend: Arc<Backend>,
        capacity: usize,
    ) -> ClusterLimit {
        let per_shard = capacity.div_ceil(SHARDS).clamp(1, u32::MAX as usize);
        let mut prefix = Vec::new();
        for part in [def.policy.as_bytes(), def.name.as_bytes()] {
            prefix.extend_from_slice(&(part.len() as u32).to_be_bytes());
            prefix.extend_from_slice(part);
        }
        let keys_gauge = backend
            .metrics
            .keys
            .get_or_create(&PolicyLabel {
                policy: def.policy.to_string(),
            })
            .clone();
        ClusterLimit {
            share: arc_swap::ArcSwap::from_pointee(Share::new(def, backend.agents(), capacity)),
            capacity,
            origin: Instant::now(),
            phase: AtomicU64::new(0),
            per_ms: def.per.as_millis() as u64,
            on_failure,
            backend,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(LruMap::with_hasher(
                        ByLength::new(per_shard as u32),
                        FxBuildHasher,
                    ))
                })
                .collect(),
            per_shard,
            hasher: RandomState::new(),
            prefix,
            keys_gauge,
            def: def.clone(),
        }
    }

    /// This node's share for the agent count now (made again when the count changed: the
    /// buckets of keys without a lease start full again, once per change).
    fn share(&self) -> Arc<Share> {
        let agents = self.backend.agents();
        let share = self.share.load_full();
        if share.agents == agents {
            return share;
        }
        let share = Arc::new(Share::new(&self.def, agents, self.capacity));
        self.share.store(share.clone());
        share
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Keys> {
        self.shards[(hash >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The Redis key of `key`: a hash of policy, limit and value, in a Redis Cluster hash tag
    /// so that every window of a key lives in one slot.
    fn redis_key(&self, key: KeyValue<'_>) -> Arc<str> {
        let mut h = Sha256::new();
        h.update(&self.prefix);
        match key {
            KeyValue::Ip(net) => {
                h.update([0]);
                h.update(net.to_string().as_bytes());
            }
            KeyValue::Header(None) => h.update([1]),
            KeyValue::Header(Some(v)) => {
                h.update([2]);
                h.update(v);
            }
            KeyValue::Consumer(None) => h.update([3]),
            KeyValue::Consumer(Some(c)) => {
                h.update([4]);
                h.update(c.as_bytes());
            }
        }
        let digest = h.finalize();
        format!("tollgate:rl:{{{}}}", hex::encode(&digest[..16])).into()
    }

    /// Decides a request of `key` at `now` (ns on [`ClusterLimit::now`]'s clock); what it took
    /// can be given back with [`ClusterLimit::refund`].
    pub fn acquire_at(self: &Arc<Self>, key: KeyValue<'_>, now: u64) -> (Verdict, Taken) {
        let hash = crate::limit::hash_key(&self.hasher, key);
        let mut share_slot = None;
        let mut keys = self.shard(hash);
        if keys.peek(&hash).is_none() {
            if keys.len() >= self.per_shard {
                keys.pop_oldest();
            }
            let redis_key = self.redis_key(key);
            keys.insert(
                hash,
                KeyState {
                    slot: slots::slot_of(&redis_key),
                    redis_key,
                    lease: 0,
                    debt: 0,
                    window: 0,
                    window_end: 0,
                    shared_used: 0,
                    full: false,
                    pending: false,
                    demand: 0,
                    last_sync: now,
                    rate: 0.0,
                    last_use: now,
                    local_window: 0,
                    admitted: 0,
                },
            );
        }
        let Some(st) = keys.get(&hash) else {
            // Cannot happen: inserted above under the same lock. Decide by the share.
            drop(keys);
            let (v, slot) = self.share().bucket.acquire_at(key, now);
            let taken = Taken {
                hash,
                basis: Basis::LocalShare,
                share: Some(slot),
            };
            return (v, taken);
        };
        if st.window_end != 0 && now >= st.window_end {
            // The window of the lease is over: its tokens count for nothing now.
            st.lease = 0;
            st.full = false;
            st.window_end = 0;
            st.shared_used = 0;
        }
        st.last_use = now;
        st.demand = st.demand.saturating_add(1);
        let up = self.backend.is_up_for(st.slot);
        let share = self.share();
        let requests = u64::from(self.def.requests);
        let (verdict, basis) = if st.lease > 0 {
            st.lease -= 1;
            let left = requests.saturating_sub(st.shared_used) + u64::from(st.lease);
            (
                Verdict {
                    allowed: true,
                    remaining: left,
                    reset: Duration::from_nanos(st.window_end.saturating_sub(now)),
                    retry_after: Duration::ZERO,
                },
                Basis::SharedWindow,
            )
        } else if up && st.full {
            let wait = Duration::from_nanos(st.window_end.saturating_sub(now).max(1));
            (
                Verdict {
                    allowed: false,
                    remaining: 0,
                    reset: wait,
                    retry_after: wait,
                },
                Basis::SharedWindow,
            )
        } else if up && st.admitted_in_window(self, now) < share.requests {
            // No lease yet: the share's token bucket, within the share per window (below), and
            // owed to the window.
            let (v, slot) = share.bucket.acquire_at(key, now);
            share_slot = Some(slot);
            if v.allowed {
                st.debt = st.debt.saturating_add(1);
            }
            (v, Basis::LocalShare)
        } else if up || self.on_failure == RateLimitBackendFailure::Local {
            // The share per window of Redis' clock, minus what this agent already admitted in
            // it (leases included). A token bucket alone would admit a full bucket more in the
            // window Redis fails in (and after each idle spell), so N agents would overshoot the
            // limit by a share each; and a backend that flaps (a Redis Cluster with a primary
            // down connects, then fails its first sync) would reopen the bucket each time.
            let end = self.local_window_end(st, now);
            let reset = Duration::from_nanos(end.saturating_sub(now).max(1));
            if st.admitted < share.requests {
                (
                    Verdict {
                        allowed: true,
                        remaining: u64::from(share.requests - st.admitted - 1),
                        reset,
                        retry_after: Duration::ZERO,
                    },
                    Basis::LocalShare,
                )
            } else {
                (
                    Verdict {
                        allowed: false,
                        remaining: 0,
                        reset,
                        retry_after: reset,
                    },
                    Basis::LocalShare,
                )
            }
        } else if self.on_failure == RateLimitBackendFailure::Allow {
            (
                Verdict {
                    allowed: true,
                    remaining: requests,
                    reset: Duration::ZERO,
                    retry_after: Duration::ZERO,
                },
                Basis::BackendFailure,
            )
        } else {
            (
                Verdict {
                    allowed: false,
                    remaining: 0,
                    reset: DENY_RETRY,
                    retry_after: DENY_RETRY,
                },
                Basis::BackendFailure,
            )
        };
        if verdict.allowed {
            self.local_window_end(st, now);
            st.admitted = st.admitted.saturating_add(1);
        }
        // Refill before the lease runs out: at half a batch.
        if up && !st.pending && !st.full && st.lease <= self.batch(st, now) / 2 {
            st.pending = true;
            drop(keys);
            let queued = self.backend.enqueue(SyncRequest {
                limit: self.clone(),
                hash,
            });
            if !queued {
                if let Some(st) = self.shard(hash).peek_mut(&hash) {
                    st.pending = false;
                }
            }
        }
        let taken = Taken {
            hash,
            basis,
            share: share_slot,
        };
        (verdict, taken)
    }

    /// Gives back the token of an allowed request another limit refused.
    pub fn refund(&self, taken: &Taken) {
        let hash = taken.hash;
        if let Some(st) = self.shard(hash).peek_mut(&hash) {
            st.admitted = st.admitted.saturating_sub(1);
        }
        match taken.basis {
            Basis::SharedWindow => {
                if let Some(st) = self.shard(hash).peek_mut(&hash) {
                    st.lease = st.lease.saturating_add(1);
                }
            }
            Basis::LocalShare => {
                if let Some(st) = self.shard(hash).peek_mut(&hash) {
                    st.debt = st.debt.saturating_sub(1);
                }
                if let Some(slot) = taken.share {
                    self.share.load().bucket.refund(slot);
                }
            }
            Basis::Bucket | Basis::BackendFailure => {}
        }
    }

    /// Moves `st` to the window `now` falls in (windows of `per` aligned with Redis' as last
    /// seen: the phase of the last answer) and returns that window's end.
    fn local_window_end(&self, st: &mut KeyState, now: u64) -> u64 {
        let per = self.per_ms.max(1) * 1_000_000;
        let phase = self.phase.load(Ordering::Relaxed) % per;
        // Window n covers [phase + (n - 1) per, phase + n per).
        let n = (now + per - phase) / per;
        if st.local_window != n {
            st.local_window = n;
            st.admitted = 0;
        }
        phase + n * per
    }

    /// Tokens to ask for: the key's rate times the horizon, 1 to `max_batch`.
    fn batch(&self, st: &KeyState, now: u64) -> u32 {
        let elapsed = now.saturating_sub(st.last_sync) as f64 / 1e9;
        // Under a millisecond since the last sync (a new key): too short to tell a rate, and a
        // new key is most often a cold one.
        let rate = if elapsed > 0.001 {
            (st.rate + f64::from(st.demand) / elapsed) / 2.0
        } else {
            st.rate
        };
        ((rate * LEASE_HORIZON.as_secs_f64()).ceil() as u32).clamp(1, self.share().max_batch)
    }

    /// Takes what a sync of `hash` sends: the key name, tokens wanted, debt. `None`: the key is
    /// gone.
    fn take_sync(&self, hash: u64, now: u64) -> Option<(Arc<str>, u32, u32)> {
        let mut keys = self.shard(hash);
        let want = {
            let st = keys.peek(&hash)?;
            self.batch(st, now)
        };
        let st = keys.peek_mut(&hash)?;
        let elapsed = now.saturating_sub(st.last_sync) as f64 / 1e9;
        if elapsed > 0.001 {
            st.rate = (st.rate + f64::from(st.demand) / elapsed) / 2.0;
            st.demand = 0;
            st.last_sync = now;
        }
        let debt = std::mem::take(&mut st.debt);
        Some((st.redis_key.clone(), want, debt))
    }

    /// Applies Redis' answer for `hash` at `now`: `grant` tokens of window number `window`,
    /// counted `used`, ending in `left_ms`.
    ///
    /// Windows are told apart by their number, not by where they seem to end: `now + left_ms`
    /// is late by the answer's trip back, which varies from one answer to the next on a busy
    /// node, so comparing ends would take a slow answer for a new window and void tokens that
    /// Redis counted as used (with 10 agents that lost about 8% of the limit).
    fn apply(&self, hash: u64, now: u64, grant: u32, used: u64, left_ms: u64, window: u64) {
        if let Some(st) = self.shard(hash).peek_mut(&hash) {
            st.pending = false;
            if window + 1 == st.window {
                // An answer from the window this key has just moved past (a sync sent before
                // the turn; a sync takes less than a window, at least 1 s): its tokens are void.
                return;
            }
            // Each answer's end is late by its trip back: the earliest is the best estimate.
            let end = now + left_ms * 1_000_000;
            if window != st.window {
                // A new window, or Redis' clock went back by more than a window (a failover to
                // a primary whose clock is behind): its numbers are the truth from now on.
                // A new window: the old lease is void.
                st.window = window;
                st.lease = 0;
                st.window_end = end;
            } else if st.window_end == 0 || end < st.window_end {
                st.window_end = end;
            }
            self.phase.store(
                st.window_end % (self.per_ms.max(1) * 1_000_000),
                Ordering::Relaxed,
            );
            // Requests the share admitted while this sync was in flight are owed to the window;
            // the grant pays them first (Redis counted its tokens), so that they are not charged
            // again and the lease does not admit as many more on top: that went over the limit
            // by the requests admitted during a refill.
            let pay = grant.min(st.debt);
            st.debt -= pay;
            st.lease = st.lease.saturating_add(grant - pay);
            st.shared_used = used;
            st.full = used >= u64::from(self.def.requests);
        }
    }

    /// A sync of `hash` failed: it may be asked again.
    fn failed(&self, hash: u64) {
        if let Some(st) = self.shard(hash).peek_mut(&hash) {
            st.pending = false;
            st.debt = 0;
        }
    }

    /// Forgets keys idle since their window ended; updates the keys gauge.
    fn sweep(&self, now: u64) {
        let mut total = 0;
        for shard in self.shards.iter() {
            let mut keys = shard.lock().unwrap_or_else(|e| e.into_inner());
            let idle: Vec<u64> = keys
                .iter()
                .filter(|(_, st)| {
                    !st.pending
                        && st.debt == 0
                        && (st.window_end == 0 || now >= st.window_end)
                        && now.saturating_sub(st.last_use) >= self.def.per.as_nanos() as u64
                })
                .map(|(h, _)| *h)
                .collect();
            for h in idle {
                keys.remove(&h);
            }
            total += keys.len();
        }
        self.keys_gauge.set(total as i64);
    }

    /// Nanoseconds on this limit's clock.
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// The limit.
    pub fn def(&self) -> &RateLimitDef {
        &self.def
    }
}

/// What a cluster limit took for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    hash: u64,
    basis: Basis,
    share: Option<crate::limit::Slot>,
}

impl Taken {
    /// What the request was decided on.
    pub fn basis(&self) -> Basis {
        self.basis
    }
}

/// What a limit decided a request on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// A node limit's token bucket.
    Bucket,
    /// A lease from the shared window, or the window's being used up.
    SharedWindow,
    /// This node's share of a cluster limit.
    LocalShare,
    /// `onBackendFailure: allow` or `deny`.
    BackendFailure,
}

impl Basis {
    /// The `basis` label.
    pub fn label(self) -> &'static str {
        match self {
            Basis::Bucket => "bucket",
            Basis::SharedWindow => "shared_window",
            Basis::LocalShare => "local_share",
            Basis::BackendFailure => "backend_failure",
        }
    }
}

#[cfg(test)]
mod tests;
