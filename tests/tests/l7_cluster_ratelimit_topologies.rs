//! Cluster-wide rate limits on a Redis Cluster (`redis+cluster://`, three primaries made by
//! `redis-cli --cluster create`) and through a Sentinel (`redis+sentinel://`): agents share one
//! limit through them, a primary killed mid-run engages the fallback with no 5xx, and the limits
//! are shared again once the cluster is whole; a Sentinel failover is followed. Every Redis
//! process is the test's own, on free loopback ports.
//!
//! Lab tags start with `rc` (this branch: redis-cluster); agent ports 18600-18649.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{metric, status};
use tollgate_tests::cluster_limits::{
    align_to_window, allowed_per_second_over_whole_windows, cluster_policy, cluster_with, get,
    load, wait_state, Redis, RedisCluster, Sentinel, Tally,
};
use tollgate_tests::require_root;

#[test]
fn three_agents_share_one_limit_on_a_redis_cluster_and_fall_back_when_a_primary_dies() {
    require_root!();
    const LIMIT: u32 = 40;
    const SECONDS: u64 = 6;
    let mut rc = RedisCluster::start(3);
    let url = rc.url();
    let c = cluster_with(
        "rcclu",
        18600,
        3,
        &url,
        &[],
        &cluster_policy(LIMIT, "local"),
    );
    let s = status(c.admins[0]);
    assert_eq!(s["ratelimit_backend"]["topology"], "cluster", "{s}");
    assert_eq!(s["ratelimit_backend"]["address"], url.as_str(), "{s}");

    // Shared: the hot key at 3 x the limit spread evenly, and cold keys (each sent once, so
    // spread over every slot and so every primary) at the same time.
    align_to_window(&rc.nodes[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let hot = Arc::new(Tally::default());
    let cold = Arc::new(Tally::default());
    let mut threads = Vec::new();
    for &proxy in &c.proxies {
        threads.push(load(
            proxy,
            LIMIT,
            |_| "hot".into(),
            stop.clone(),
            hot.clone(),
        ));
        threads.push(load(
            proxy,
            20,
            move |n| format!("cold-{proxy}-{n}"),
            stop.clone(),
            cold.clone(),
        ));
    }
    thread::sleep(Duration::from_secs(SECONDS));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let expected = u64::from(LIMIT) * SECONDS;
    println!(
        "Redis Cluster: hot key {} allowed, {} limited, {} other over {SECONDS}s (limit {expected}); cold keys {} allowed, {} limited, {} other",
        hot.ok(),
        hot.limited(),
        hot.other(),
        cold.ok(),
        cold.limited(),
        cold.other()
    );
    assert_eq!((hot.other(), cold.other()), (0, 0), "only 200 and 429");
    let allowed = hot.ok() as f64;
    assert!(
        (allowed - expected as f64).abs() <= expected as f64 * 0.10,
        "the hot key got {allowed} over {SECONDS}s; the shared limit is {expected}"
    );
    assert_eq!(cold.limited(), 0, "a cold key's first request is allowed");
    // Every primary holds windows: each script went to its key's slot (a node refuses a key of
    // a slot it does not serve, with MOVED).
    let per_node = rc.keys_per_node();
    let counts: Vec<usize> = per_node.iter().map(Vec::len).collect();
    println!("lease keys per primary: {counts:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "keys per primary: {counts:?}"
    );
    for k in per_node.iter().flatten() {
        assert!(k.starts_with("tollgate:rl:{"), "{k}");
        assert!(!k.contains("hot") && !k.contains("cold"), "{k}");
    }
    assert_eq!(
        metric(c.admins[0], "tollgate_ratelimit_cluster_fallback"),
        0
    );

    // One primary killed: its slots are gone, the agents fall back to their share, and no
    // request fails because of it.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = c
        .proxies
        .iter()
        .map(|&p| load(p, LIMIT, |_| "t".into(), stop.clone(), tally.clone()))
        .collect();
    thread::sleep(Duration::from_secs(2));
    rc.nodes[0].kill();
    let killed = Instant::now();
    let mut engaged = Vec::new();
    for &admin in &c.admins {
        wait_state(admin, "down", Duration::from_secs(3));
        engaged.push(killed.elapsed());
    }
    println!("fallback engaged after {engaged:?}");
    assert!(
        engaged.iter().all(|d| *d <= Duration::from_secs(1)),
        "fallback engaged after {engaged:?}"
    );
    let s = status(c.admins[1]);
    assert_eq!(s["ratelimit_backend"]["fallback"], true, "{s}");
    assert!(s["ratelimit_backend"]["last_error"].is_string(), "{s}");
    assert!(c.agents[1]
        .log()
        .contains("limits fall back to onBackendFailure"));
    // Each agent admits its share (LIMIT / 3, rounded down) per window of Redis' clock, so
    // the three together no more than LIMIT per window (a token bucket per agent would admit
    // one bucket more in the window Redis fails in).
    let rate = allowed_per_second_over_whole_windows(&tally, 3);
    println!("allowed while a primary is down: {rate:.1}/s over 3 whole windows (limit {LIMIT}/s)");
    assert!(
        rate > f64::from(LIMIT) * 0.6 && rate <= f64::from(LIMIT) * 1.1,
        "{rate:.1}/s allowed while a primary is down"
    );

    // The primary is back (same node, same slots): shared again.
    rc.restart(0);
    let restarted = Instant::now();
    rc.wait_ok(Duration::from_secs(20));
    for &admin in &c.admins {
        wait_state(admin, "up", Duration::from_secs(15));
    }
    println!(
        "shared again {:?} after the primary came back",
        restarted.elapsed()
    );
    thread::sleep(Duration::from_millis(1500));
    let keys: usize = rc.keys_per_node().iter().map(Vec::len).sum();
    assert!(keys > 0, "no windows in the cluster after it came back");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "{} allowed, {} limited, {} other",
        tally.ok(),
        tally.limited(),
        tally.other()
    );
    assert_eq!(
        tally.other(),
        0,
        "no 5xx (nor anything but 200/429) because of Redis"
    );
    assert!(c.agents[0]
        .log()
        .contains("Redis reachable, limits are shared"));
}

#[test]
fn agents_find_the_primary_through_a_sentinel_and_follow_a_failover() {
    require_root!();
    const NAME: &str = "rcmain";
    let mut primary = Redis::start();
    let replica = Redis::start_with(
        tollgate_tests::cluster_limits::free_port(),
        &["--replicaof", "127.0.0.1", &primary.port.to_string()],
    );
    let sentinel = Sentinel::start(NAME, primary.port);
    let url = format!("redis+sentinel://127.0.0.1:{}/{NAME}", sentinel.port);
    let c = cluster_with("rcsen", 18630, 2, &url, &[], &cluster_policy(5, "deny"));
    let s = status(c.admins[0]);
    assert_eq!(s["ratelimit_backend"]["topology"], "sentinel", "{s}");

    // Within one window: 5 allowed over both agents, the rest refused from the shared window.
    align_to_window(&primary);
    let codes: Vec<u16> = (0..8).map(|i| get(c.proxies[i % 2], "sen").0).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 5, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200 || c == 429), "{codes:?}");
    assert!(
        primary
            .cli(&["--scan", "--pattern", "tollgate:rl:*"])
            .lines()
            .count()
            > 0,
        "the windows are on the primary the Sentinel names"
    );

    // The primary dies: the Sentinel promotes the replica, and the agents follow. The Sentinel
    // must know the replica first (it learns replicas from the primary's INFO, every 10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
        && sentinel
            .cli(&["SENTINEL", "replicas", NAME])
            .lines()
            .any(|l| l.trim() == replica.port.to_string()))
    {
        assert!(
            Instant::now() < deadline,
            "the Sentinel does not know the replica after 30 s"
        );
        thread::sleep(Duration::from_millis(200));
    }
    primary.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while sentinel.primary_port(NAME) != Some(replica.port) {
        assert!(Instant::now() < deadline, "no failover after 30 s");
        thread::sleep(Duration::from_millis(100));
    }
    println!("failover after {:?}", killed.elapsed());
    for &admin in &c.admins {
        wait_state(admin, "up", Duration::from_secs(10));
    }
    println!(
        "agents up on the new primary {:?} after the kill",
        killed.elapsed()
    );
    // Shared again, on the new primary: a fresh key gets 5 in one window over both agents.
    align_to_window(&replica);
    let codes: Vec<u16> = (0..8).map(|i| get(c.proxies[i % 2], "after").0).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 5, "{codes:?}");
    assert!(
        replica
            .cli(&["--scan", "--pattern", "tollgate:rl:*"])
            .lines()
            .count()
            > 0,
        "the windows are on the promoted replica"
    );
}
