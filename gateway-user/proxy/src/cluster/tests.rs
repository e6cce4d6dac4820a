//! Unit tests of cluster limits: leases, windows, fallback modes, key names, batch sizes, the
//! sweep (no Redis: refills are driven by hand, as the sync task drives them).
use super::*;
use http::HeaderName;
use tollgate_compile::l7::table::{LimitKey, LimitScope};

const MS: u64 = 1_000_000;

fn def(requests: u32) -> RateLimitDef {
    RateLimitDef {
        policy: "default/shared".into(),
        index: 0,
        name: "shared".into(),
        key: LimitKey::Header(HeaderName::from_static("x-tenant")),
        requests,
        per: Duration::from_secs(1),
        burst: requests,
        shadow: false,
        scope: LimitScope::Cluster {
            on_failure: RateLimitBackendFailure::Local,
        },
    }
}

fn limit(
    requests: u32,
    agents: u32,
    on_failure: RateLimitBackendFailure,
    up: bool,
) -> Arc<ClusterLimit> {
    let backend = Backend::start(
        ClusterSettings {
            redis: None,
            agents,
            agents_from: AgentsFrom::Default,
        },
        ClusterMetrics::default(),
    );
    if up {
        // As the sync task does once Redis answers (no queue here: refills are driven by
        // hand with take_sync and apply).
        backend.set_up(true, None);
    }
    Arc::new(ClusterLimit::new(&def(requests), on_failure, backend, 1000))
}

fn key(v: &str) -> KeyValue<'_> {
    KeyValue::Header(Some(v.as_bytes()))
}

fn hash(l: &ClusterLimit, v: &str) -> u64 {
    crate::limit::hash_key(&l.hasher, key(v))
}

#[test]
fn a_lease_is_spent_locally_and_a_used_up_window_refuses_until_it_ends() {
    let l = limit(10, 1, RateLimitBackendFailure::Local, true);
    let t0 = 1000 * MS;
    // No lease yet: this node's share decides, and the request is owed to the window.
    let (v, taken) = l.acquire_at(key("a"), t0);
    assert!(v.allowed);
    assert_eq!(taken.basis(), Basis::LocalShare);
    let h = hash(&l, "a");
    let (name, want, debt) = l.take_sync(h, t0).unwrap();
    assert_eq!(
        (want, debt),
        (1, 1),
        "a new key asks for one token and pays its debt"
    );
    assert!(name.starts_with("tollgate:rl:{"), "{name}");
    // Redis grants 5 of a window counted 6, ending in 400 ms.
    l.apply(h, t0, 5, 6, 400, 1);
    for left in (0..5).rev() {
        let (v, taken) = l.acquire_at(key("a"), t0 + MS);
        assert!(v.allowed);
        assert_eq!(taken.basis(), Basis::SharedWindow);
        // What the window has left as last heard (4) plus the lease.
        assert_eq!(v.remaining, 4 + left);
        assert_eq!(v.reset, Duration::from_millis(399));
    }
    // Redis: nothing left this window.
    l.apply(h, t0 + 2 * MS, 0, 10, 300, 1);
    let (v, taken) = l.acquire_at(key("a"), t0 + 3 * MS);
    assert!(!v.allowed);
    assert_eq!(taken.basis(), Basis::SharedWindow);
    assert_eq!(v.retry_after, Duration::from_millis(299));
    // The window ends: the key is decided again (by the share until Redis answers).
    let (v, taken) = l.acquire_at(key("a"), t0 + 303 * MS);
    assert!(v.allowed);
    assert_eq!(taken.basis(), Basis::LocalShare);
}

#[test]
fn a_new_window_voids_the_old_lease_and_a_refund_returns_the_token() {
    let l = limit(100, 1, RateLimitBackendFailure::Local, true);
    let t0 = 1000 * MS;
    l.acquire_at(key("a"), t0);
    let h = hash(&l, "a");
    l.take_sync(h, t0);
    l.apply(h, t0, 3, 4, 100, 1);
    let (_, taken) = l.acquire_at(key("a"), t0);
    l.refund(&taken);
    assert_eq!(l.shard(h).peek(&h).unwrap().lease, 3);
    // The lease's window is over: its tokens are void.
    let (_, taken) = l.acquire_at(key("a"), t0 + 150 * MS);
    assert_eq!(taken.basis(), Basis::LocalShare);
    assert_eq!(l.shard(h).peek(&h).unwrap().lease, 0);
}

#[test]
fn windows_are_told_apart_by_number_not_by_a_late_answer() {
    let l = limit(100, 1, RateLimitBackendFailure::Local, true);
    let t0 = 1000 * MS;
    l.acquire_at(key("a"), t0);
    let h = hash(&l, "a");
    let lease = |l: &ClusterLimit| l.shard(h).peek(&h).unwrap().lease;
    l.take_sync(h, t0);
    // Window 7: 3 tokens, ending 400 ms from t0.
    l.apply(h, t0, 3, 4, 400, 7);
    assert_eq!(lease(&l), 3);
    // An answer of the same window that came back 20 ms slower: it seems to end later, but it
    // is the same window, so the lease adds up, and the earlier end is kept.
    l.take_sync(h, t0 + 10 * MS);
    l.apply(h, t0 + 40 * MS, 2, 6, 380, 7);
    assert_eq!(lease(&l), 5);
    let (v, _) = l.acquire_at(key("a"), t0 + 50 * MS);
    assert_eq!(v.reset, Duration::from_millis(350));
    assert_eq!(lease(&l), 4);
    // Window 8 comes: the lease of 7 is void, the new one counts.
    l.apply(h, t0 + 60 * MS, 2, 2, 999, 8);
    assert_eq!(lease(&l), 2);
    // A late answer of window 7 grants nothing now.
    l.apply(h, t0 + 70 * MS, 3, 9, 1, 7);
    assert_eq!(lease(&l), 2);
    assert!(!l.shard(h).peek(&h).unwrap().full);
    // Redis' clock went back by more than a window (a failover): its windows count from now on.
    l.apply(h, t0 + 80 * MS, 4, 4, 500, 5);
    assert_eq!(lease(&l), 4);
    l.apply(h, t0 + 90 * MS, 1, 5, 490, 5);
    assert_eq!(lease(&l), 5);
}

#[test]
fn without_redis_each_limit_follows_its_on_backend_failure() {
    let t0 = 1000 * MS;
    // local: this agent's share, 10 / 2 agents.
    let l = limit(10, 2, RateLimitBackendFailure::Local, false);
    let allowed = (0..20)
        .filter(|_| l.acquire_at(key("a"), t0).0.allowed)
        .count();
    assert_eq!(allowed, 5);
    assert_eq!(l.acquire_at(key("a"), t0).1.basis(), Basis::LocalShare);
    assert_eq!(
        l.shard(hash(&l, "a")).peek(&hash(&l, "a")).unwrap().debt,
        0,
        "nothing is owed to a Redis that is down"
    );
    // allow: everything.
    let l = limit(10, 2, RateLimitBackendFailure::Allow, false);
    assert!((0..100).all(|_| l.acquire_at(key("a"), t0).0.allowed));
    // deny: 429, retry in a second.
    let l = limit(10, 2, RateLimitBackendFailure::Deny, false);
    let (v, taken) = l.acquire_at(key("a"), t0);
    assert!(!v.allowed);
    assert_eq!(
        (v.retry_after, taken.basis()),
        (DENY_RETRY, Basis::BackendFailure)
    );
}

#[test]
fn redis_key_names_are_the_same_on_every_agent_and_name_no_key() {
    let a = limit(10, 1, RateLimitBackendFailure::Local, false);
    let b = limit(10, 1, RateLimitBackendFailure::Local, false);
    let name = a.redis_key(key("tenant-42"));
    assert_eq!(
        name,
        b.redis_key(key("tenant-42")),
        "agents meet on one key"
    );
    assert_ne!(name, a.redis_key(key("tenant-43")));
    assert_ne!(a.redis_key(KeyValue::Header(None)), a.redis_key(key("")));
    assert!(!name.contains("tenant"), "{name}");
    assert_eq!(name.len(), "tollgate:rl:{}".len() + 32, "{name}");
}

#[test]
fn the_batch_follows_the_keys_rate_within_its_bounds() {
    // 1000 per second over 2 agents: at most 1000 / (4 x 2) = 125 tokens at once.
    let l = limit(1000, 2, RateLimitBackendFailure::Local, true);
    let t0 = 1000 * MS;
    let h = hash(&l, "a");
    l.acquire_at(key("a"), t0);
    assert_eq!(l.take_sync(h, t0).unwrap().1, 1, "a new key: one token");
    // 51 requests in 100 ms (the first one counts: its sync came too soon to tell a rate):
    // 510/s, averaged with the rate known before (0): 255/s x 100 ms = 25.5, rounded up.
    for i in 0..50 {
        l.acquire_at(key("a"), t0 + i * 2 * MS);
    }
    assert_eq!(l.take_sync(h, t0 + 100 * MS).unwrap().1, 26);
    // A flood: capped.
    for _ in 0..100_000 {
        l.acquire_at(key("a"), t0 + 150 * MS);
    }
    assert_eq!(l.take_sync(h, t0 + 200 * MS).unwrap().1, 125);
}

#[test]
fn idle_keys_are_swept_once_their_window_is_over() {
    let l = limit(10, 1, RateLimitBackendFailure::Local, false);
    let t0 = 1000 * MS;
    for n in 0..100 {
        l.acquire_at(key(&format!("k{n}")), t0);
    }
    l.sweep(t0 + 500 * MS);
    assert_eq!(l.keys(), 100, "used within the last window");
    l.sweep(t0 + 1000 * MS);
    assert_eq!(l.keys(), 0);
    assert_eq!(l.keys_gauge.get(), 0);
}

#[test]
fn the_local_fallback_admits_the_share_per_redis_window_counting_what_was_admitted_before() {
    // 30 per second over 3 agents: a share of 10 per window.
    let l = limit(30, 3, RateLimitBackendFailure::Local, true);
    let t0 = 1000 * MS;
    let h = hash(&l, "a");
    // Redis' windows end at 400 ms past each second of this clock (learned from any key).
    let hb = hash(&l, "b");
    l.acquire_at(key("b"), t0 - 10 * MS);
    l.take_sync(hb, t0 - 10 * MS).unwrap();
    l.apply(hb, t0 - 10 * MS, 1, 1, 410, 1);
    // Redis grants key a 8 tokens of the window that ends 400 ms from t0.
    l.acquire_at(key("a"), t0);
    l.take_sync(h, t0).unwrap();
    l.apply(h, t0, 8, 9, 400, 1);
    for i in 1..=8 {
        assert!(l.acquire_at(key("a"), t0 + i * MS).0.allowed);
    }
    // Redis fails: 9 admitted in this window already, so one more within the share.
    l.backend.set_up(false, Some("down".into()));
    let now = t0 + 100 * MS;
    let (v, taken) = l.acquire_at(key("a"), now);
    assert!(v.allowed);
    assert_eq!(taken.basis(), Basis::LocalShare);
    let (v, _) = l.acquire_at(key("a"), now);
    assert!(!v.allowed, "the share of this window is used up");
    assert_eq!(
        v.retry_after,
        Duration::from_millis(300),
        "until Redis' window ends"
    );
    // The next window of Redis' clock: the share again, no more (no bucket left over).
    let next = t0 + 400 * MS;
    let allowed = (0..30)
        .filter(|_| l.acquire_at(key("a"), next).0.allowed)
        .count();
    assert_eq!(allowed, 10);
    let later = t0 + 1399 * MS;
    assert!(!l.acquire_at(key("a"), later).0.allowed, "same window");
    let allowed = (0..30)
        .filter(|_| l.acquire_at(key("a"), t0 + 1400 * MS).0.allowed)
        .count();
    assert_eq!(allowed, 10, "the window after");
}

#[test]
fn requests_without_a_lease_stay_within_the_share_per_window_even_if_the_backend_flaps() {
    // 30 per second over 3 agents: a share of 10 per window; no answer from Redis yet.
    let l = limit(30, 3, RateLimitBackendFailure::Local, true);
    let t0 = 1000 * MS;
    let allowed = (0..20)
        .filter(|_| l.acquire_at(key("a"), t0).0.allowed)
        .count();
    assert_eq!(allowed, 10);
    // Half a window later the bucket has refilled by half, and Redis went down and came back
    // (a Redis Cluster with a primary down does that): still the same window, still used up.
    l.backend.set_up(false, Some("down".into()));
    l.backend.set_up(true, None);
    let (v, taken) = l.acquire_at(key("a"), t0 + 500 * MS);
    assert!(!v.allowed);
    assert_eq!(taken.basis(), Basis::LocalShare);
    assert_eq!(v.retry_after, Duration::from_millis(500));
    l.backend.set_up(false, Some("down".into()));
    assert!(!l.acquire_at(key("a"), t0 + 600 * MS).0.allowed);
    // The next window.
    assert!(l.acquire_at(key("a"), t0 + 1000 * MS).0.allowed);
}

#[test]
fn keys_on_a_dead_primary_fall_back_and_the_others_stay_shared() {
    let l = limit(10, 2, RateLimitBackendFailure::Deny, true);
    let t0 = 1000 * MS;
    // Two keys on different slots; the primary of "a"'s slot is down.
    let (a, b) = (
        "a",
        (0..100)
            .map(|i| format!("b{i}"))
            .find(|b| {
                slots::slot_of(&l.redis_key(key(b))) != slots::slot_of(&l.redis_key(key("a")))
            })
            .unwrap(),
    );
    let slot_a = slots::slot_of(&l.redis_key(key(a)));
    let changes = l.backend.set_nodes(&[
        slots::NodeCheck {
            node: "127.0.0.1:7000".into(),
            ranges: vec![(slot_a, slot_a)],
            error: Some("Connection refused".into()),
        },
        slots::NodeCheck {
            node: "127.0.0.1:7001".into(),
            ranges: vec![(0, slot_a.saturating_sub(1)), (slot_a + 1, 16383)],
            error: None,
        },
    ]);
    assert_eq!(changes.went_down, ["127.0.0.1:7000"]);
    l.backend.set_in_force(true);
    assert!(l.backend.in_fallback());
    // (`state` is `partial` with Redis configured: the end-to-end test.)
    let s = l.backend.status();
    assert_eq!((s.nodes_down.len(), s.nodes_down[0].slots), (1, 1));
    // "a": onBackendFailure deny.
    let (v, taken) = l.acquire_at(key(a), t0);
    assert!(!v.allowed);
    assert_eq!(taken.basis(), Basis::BackendFailure);
    // "b": shared as usual (the share until its first lease, then the lease).
    let (v, taken) = l.acquire_at(key(&b), t0);
    assert!(v.allowed);
    assert_eq!(taken.basis(), Basis::LocalShare);
    let hb = hash(&l, &b);
    let (_, want, debt) = l.take_sync(hb, t0).unwrap();
    l.apply(hb, t0, want, u64::from(debt + want), 500, 1);
    let (v, taken) = l.acquire_at(key(&b), t0 + MS);
    assert!(v.allowed);
    assert_eq!(taken.basis(), Basis::SharedWindow);
    // The primary answers again: "a" is shared again.
    assert_eq!(l.backend.set_nodes(&[]).came_back, ["127.0.0.1:7000"]);
    assert!(l.backend.status().nodes_down.is_empty());
    assert!(!l.backend.in_fallback());
    let (v, taken) = l.acquire_at(key(a), t0 + 2 * MS);
    assert!(v.allowed);
    assert_eq!(taken.basis(), Basis::LocalShare);
}

#[test]
fn a_count_of_nodes_sets_the_share_unless_the_flag_did() {
    let l = limit(30, 1, RateLimitBackendFailure::Local, false);
    let t0 = 1000 * MS;
    let admitted = |l: &Arc<ClusterLimit>, tenant: &str, t: u64| {
        (0..40)
            .filter(|_| l.acquire_at(key(tenant), t).0.allowed)
            .count()
    };
    // One agent: the whole limit per window while Redis is down.
    assert_eq!(admitted(&l, "a", t0), 30);
    let s = l.backend.status();
    assert_eq!((s.agents, s.agents_from), (1, AgentsFrom::Default));
    // Three Nodes: a share of 10, at once (a new key; an old one keeps what it had admitted).
    assert_eq!(l.backend.set_node_count(Ok(3)), Some(3));
    assert_eq!(l.backend.set_node_count(Ok(3)), None, "no change");
    assert_eq!(admitted(&l, "b", t0), 10);
    assert_eq!(l.share().max_batch, 2, "30 / (4 x 3)");
    // A failed count keeps the last one, and says why.
    assert_eq!(l.backend.set_node_count(Err("403 Forbidden".into())), None);
    let s = l.backend.status();
    assert_eq!((s.agents, s.agents_from), (3, AgentsFrom::KubernetesNodes));
    assert_eq!(s.agents_count_error.as_deref(), Some("403 Forbidden"));
    assert!(s.agents_counted_seconds_ago.is_some());
    // --ratelimit-agents: never replaced.
    let flagged = Backend::start(
        ClusterSettings {
            redis: None,
            agents: 2,
            agents_from: AgentsFrom::Flag,
        },
        ClusterMetrics::default(),
    );
    assert!(!flagged.counts_nodes());
    assert_eq!(flagged.set_node_count(Ok(7)), None);
    let s = flagged.status();
    assert_eq!((s.agents, s.agents_from), (2, AgentsFrom::Flag));
}

#[test]
fn requests_admitted_on_the_share_while_a_refill_is_in_flight_are_paid_by_its_grant() {
    // One agent, 5 per window, 8 requests 2 ms apart, one sync in flight at a time, answered
    // `lag` requests later, as Redis' script answers: the debt is added to the window's count,
    // then at most what is left is granted. While a sync is in flight and the lease is empty,
    // the share admits requests (owed to the window); a grant in flight must not be spent on
    // top of them, or the window admits more than its limit (6 of 5 seen end to end).
    for lag in 1..=4 {
        let l = limit(5, 1, RateLimitBackendFailure::Local, true);
        let h = hash(&l, "a");
        let window_end = 1400 * MS;
        let mut used = 0u64;
        let mut in_flight: Option<(usize, u32, u32)> = None;
        let mut allowed = 0;
        for i in 0..8 {
            let now = 1100 * MS + i as u64 * 2 * MS;
            if l.acquire_at(key("a"), now).0.allowed {
                allowed += 1;
            }
            if let Some((sent, want, debt)) = in_flight {
                if i >= sent + lag {
                    in_flight = None;
                    used += u64::from(debt);
                    let grant = u64::from(want).min(5u64.saturating_sub(used));
                    used += grant;
                    l.apply(h, now, grant as u32, used, (window_end - now) / MS, 1);
                }
            }
            if in_flight.is_none() {
                let (_, want, debt) = l.take_sync(h, now).unwrap();
                in_flight = Some((i, want, debt));
            }
        }
        assert_eq!(allowed, 5, "lag {lag}: Redis counted {used}");
    }
}
