use super::*;
use http::HeaderName;
use tollgate_compile::l7::table::ClientPrefixes;

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
        scope: LimitScope::Node,
    }
}

const CLIENT_IP: LimitKey = LimitKey::ClientIp(ClientPrefixes { v4: 32, v6: 64 });

fn ip(s: &str) -> KeyValue<'static> {
    let a: IpAddr = s.parse().unwrap();
    KeyValue::Ip(a.into())
}

fn limiter(def: &RateLimitDef, capacity: usize) -> Limiter {
    Limiter::new(def, capacity, Counter::default())
}

#[test]
fn a_full_bucket_allows_the_burst_then_refuses_until_one_interval_passes() {
    let l = limiter(&def("a", CLIENT_IP, 10, 1, 3), 100);
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
    let l = limiter(&def("a", CLIENT_IP, 60, 60, 60), 100);
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
    let l = limiter(&def("c", LimitKey::Consumer, 1, 60, 1), 100);
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
    let l = limiter(&def("t", LimitKey::Header(name.clone()), 1, 60, 1), 100);
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
        KeyValue::of(&CLIENT_IP, client, &a, None),
        KeyValue::Ip(client.into())
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

/// A request of `client` (an address) against `key`, through the same path as the proxy.
fn request(l: &Limiter, key: &LimitKey, client: &str, now: u64) -> bool {
    let h = HeaderMap::new();
    let client: IpAddr = client.parse().unwrap();
    l.acquire_at(KeyValue::of(key, client, &h, None), now)
        .0
        .allowed
}

#[test]
fn rotating_ipv6_addresses_within_a_64_share_one_bucket() {
    // 3 per hour, and a table far smaller than the rotation.
    let l = limiter(&def("a", CLIENT_IP, 3, 3600, 3), 1024);
    let allowed = (0..100_000u32)
        .filter(|&n| {
            let a = format!("2001:db8:1:2:{:x}:{:x}:1:1", n >> 16, n & 0xffff);
            request(&l, &CLIENT_IP, &a, S)
        })
        .count();
    eprintln!("100,000 addresses of one /64: {allowed} allowed");
    assert_eq!(allowed, 3, "one /64 is one client");
    assert_eq!(l.keys(), 1);
    // An IPv4 client and a client of another /64 have their own buckets.
    let others = [
        "192.0.2.1",
        "2001:db8:1:3::1",
        "2001:db8:1:3::2",
        "2001:db8:1:3::3",
    ];
    let served: Vec<bool> = others
        .iter()
        .map(|a| request(&l, &CLIENT_IP, a, S))
        .collect();
    assert_eq!(served, [true, true, true, true]);
    assert!(
        !request(&l, &CLIENT_IP, "2001:db8:1:3::4", S),
        "the other /64's 4th"
    );
    assert!(request(&l, &CLIENT_IP, "192.0.2.2", S));
}

#[test]
fn the_client_prefixes_are_configurable() {
    let per_address = LimitKey::ClientIp(ClientPrefixes { v4: 24, v6: 128 });
    let l = limiter(&def("a", per_address.clone(), 1, 3600, 1), 1024);
    // IPv6 per address: each rotated address is a new client.
    assert!(request(&l, &per_address, "2001:db8::1", S));
    assert!(request(&l, &per_address, "2001:db8::2", S));
    assert!(!request(&l, &per_address, "2001:db8::1", S));
    // IPv4 per /24.
    assert!(request(&l, &per_address, "192.0.2.1", S));
    assert!(!request(&l, &per_address, "192.0.2.200", S));
    assert!(request(&l, &per_address, "192.0.3.1", S));
}

#[test]
fn more_distinct_keys_than_the_table_holds_never_lock_out_a_fresh_key() {
    // The measured attack: 1.3 million distinct values of a header-keyed limit.
    let name = HeaderName::from_static("x-tenant");
    let key = LimitKey::Header(name.clone());
    let l = limiter(&def("t", key.clone(), 1, 3600, 1), MAX_KEYS_PER_LIMIT);
    let mut h = HeaderMap::new();
    let mut allowed = 0u64;
    for n in 0..1_300_000u32 {
        h.insert(&name, HeaderValue::from(n));
        if l.acquire_at(
            KeyValue::of(&key, "192.0.2.1".parse().unwrap(), &h, None),
            S,
        )
        .0
        .allowed
        {
            allowed += 1;
        }
    }
    eprintln!(
        "1.3M distinct keys: {allowed} allowed, {} tracked, {} evicted",
        l.keys(),
        l.evictions()
    );
    assert_eq!(
        allowed, 1_300_000,
        "each distinct value is a client of its own"
    );
    assert!(l.keys() <= MAX_KEYS_PER_LIMIT + SHARDS, "{} keys", l.keys());
    // Each key pushed out was still within its hour: counted.
    assert_eq!(l.evictions(), 1_300_000 - l.keys() as u64);
    // A fresh key is served, once, then limited.
    h.insert(&name, HeaderValue::from_static("fresh"));
    let fresh = KeyValue::of(&key, "192.0.2.1".parse().unwrap(), &h, None);
    assert!(l.acquire_at(fresh, S).0.allowed);
    assert!(!l.acquire_at(fresh, S).0.allowed);
}

#[test]
fn a_full_table_evicts_the_least_recently_used_key() {
    // One key per shard: every new key of a shard pushes the shard's previous one out.
    let l = limiter(&def("a", CLIENT_IP, 1, 3600, 1), SHARDS * 2);
    let keys: Vec<KeyValue<'static>> = (0..2000u32)
        .map(|n| KeyValue::Ip(IpAddr::from(std::net::Ipv4Addr::from(n)).into()))
        .collect();
    // Two keys of the same shard, and a third of that shard.
    let shard = |k: &KeyValue<'_>| (l.hash(*k) >> 60) as usize % SHARDS;
    let same: Vec<KeyValue<'static>> = keys
        .iter()
        .filter(|k| shard(k) == shard(&keys[0]))
        .take(3)
        .copied()
        .collect();
    let [old, recent, new] = same[..] else {
        panic!("three keys of one shard")
    };
    assert!(l.acquire_at(old, S).0.allowed);
    assert!(l.acquire_at(recent, S).0.allowed);
    // `old` is used again (refused, but used): `recent` is now the least recently used.
    assert!(!l.acquire_at(old, S).0.allowed);
    assert!(l.acquire_at(new, S).0.allowed, "a new key is served");
    assert_eq!(l.evictions(), 1);
    assert!(
        !l.acquire_at(old, S).0.allowed,
        "still tracked, still limited"
    );
    assert!(
        l.acquire_at(recent, S).0.allowed,
        "evicted: starts with a fresh bucket"
    );
}

#[test]
fn forgetting_idle_keys_is_not_counted() {
    // Two keys per shard.
    let l = limiter(&def("a", CLIENT_IP, 1, 1, 1), SHARDS * 2);
    for n in 0..1000u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(n));
        l.acquire_at(KeyValue::Ip(addr.into()), S);
    }
    assert_eq!(l.keys(), SHARDS * 2, "every shard is full");
    let busy = l.evictions();
    assert!(busy > 0);
    // Two seconds later every bucket is full again: new keys push out idle keys only.
    for n in 5000..6000u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(n));
        assert!(l.acquire_at(KeyValue::Ip(addr.into()), 3 * S).0.allowed);
    }
    // The first of them pushed idle keys out; the later ones pushed out keys from this
    // very second.
    assert!(l.evictions() - busy < 1000, "{}", l.evictions() - busy);
    assert_eq!(l.keys(), SHARDS * 2);
}

#[test]
fn a_refused_request_takes_nothing_from_the_other_limits() {
    let defs = vec![
        def("wide", CLIENT_IP, 100, 60, 100),
        def("narrow", CLIENT_IP, 2, 60, 2),
    ];
    let limiters: Vec<_> = defs.iter().map(|d| Arc::new(limiter(d, 100))).collect();
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
    let v = limiters[0].acquire(KeyValue::Ip(client.into())).0;
    assert_eq!(v.remaining, 97);
    assert_eq!(
        route.policy_header.unwrap(),
        "\"wide\";q=100;w=60, \"narrow\";q=2;w=60"
    );
}

#[test]
fn shadow_limits_count_but_neither_refuse_nor_show_headers() {
    let mut d = def("s", CLIENT_IP, 1, 60, 1);
    d.shadow = true;
    let defs = vec![d];
    let limiters = vec![Arc::new(limiter(&defs[0], 100))];
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
    let r = Registry::new(100, Family::default());
    let a = def("a", CLIENT_IP, 1, 60, 1);
    let b = def("b", CLIENT_IP, 1, 60, 1);
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

fn rate_limit_item(name: &str, remaining: u64, reset: Duration) -> String {
    let mut item = SmallVec::new();
    push_rate_limit_item(&mut item, name, remaining, reset);
    String::from_utf8(item.to_vec()).unwrap()
}

/// Items past the buffer's room on the stack go on as well.
#[test]
fn a_long_header_is_whole() {
    let long = "n".repeat(150);
    let mut header = SmallVec::new();
    push_rate_limit_item(&mut header, "a", 1, Duration::from_secs(1));
    push_rate_limit_item(&mut header, &long, 2, Duration::from_secs(2));
    assert_eq!(
        String::from_utf8(header.to_vec()).unwrap(),
        format!("\"a\";r=1;t=1, \"{long}\";r=2;t=2")
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
