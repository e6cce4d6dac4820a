//! Cluster-wide rate limits (`scope: Cluster`) with a real standalone `redis-server` and three
//! real agents (separate processes, labs and ports) sharing one limit: the load spread over them
//! gets the limit within 10% over 10 s while cold keys pass, and while 10,000 cold keys come at
//! once; Redis killed mid-run (fallback
//! within a second, no 5xx, shared again once it is back); Redis stalled with `DEBUG SLEEP`
//! (requests do not wait for it); an agent restarted; TLS with a password. Each test starts its
//! own redis-server on a free loopback port. Redis Cluster and Sentinel:
//! `l7_cluster_ratelimit_topologies.rs`; the measurements: `l7_cluster_ratelimit_bench.rs`;
//! the helpers: `tests/src/cluster_limits.rs`.
//!
//! Lab tags start with `rl` (the branch that built them: redis-limits).
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{metric, status};
use tollgate_tests::cluster_limits::{
    align_to_window, allowed_per_second_over_whole_windows, cluster, cluster_in_state,
    cluster_policy, cluster_with, codes_in_one_window, free_port, get, hot_and_cold_over_windows,
    load, state, tls_and_password, wait_all, wait_state, Access, Redis, Tally, TestCa,
};
use tollgate_tests::require_root;

#[test]
fn three_agents_share_one_limit_within_ten_percent_while_cold_keys_pass() {
    require_root!();
    const LIMIT: u32 = 40;
    const SECONDS: u64 = 10;
    let redis = Redis::start();
    let c = cluster("rlshare", 18460, 3, &redis, &cluster_policy(LIMIT, "local"));

    // The hot key at 3 x the limit, spread evenly; cold keys, each sent once, at the same time.
    let (hot, cold) = hot_and_cold_over_windows(&c, &redis, LIMIT, 20, SECONDS);
    let expected = u64::from(LIMIT) * SECONDS;
    let commands: Vec<u64> = c
        .admins
        .iter()
        .map(|&a| metric(a, "tollgate_ratelimit_redis_commands_total"))
        .collect();
    println!(
        "hot key: {} allowed, {} limited, {} other over {SECONDS}s at {} req/s (limit {LIMIT}/s: {expected}); cold keys: {} allowed, {} limited, {} other; Redis commands per agent: {commands:?}",
        hot.ok(),
        hot.limited(),
        hot.other(),
        3 * LIMIT,
        cold.ok(),
        cold.limited(),
        cold.other()
    );
    assert_eq!(
        (hot.other(), cold.other()),
        (0, 0),
        "no answer but 200 or 429"
    );
    let allowed = hot.ok() as f64;
    assert!(
        (allowed - expected as f64).abs() <= expected as f64 * 0.10,
        "the hot key got {allowed} over {SECONDS}s; the shared limit is {expected}"
    );
    assert!(hot.limited() > 0);
    assert_eq!(
        cold.limited(),
        0,
        "a key's first request is within its limit"
    );
    assert!(cold.ok() > 300, "the cold load ran: {}", cold.ok());

    // Redis holds hashed key names only: no tenant in them.
    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    assert!(keys.lines().count() > 0, "no keys in Redis");
    for k in keys.lines() {
        assert!(k.starts_with("tollgate:rl:{"), "{k}");
        assert!(!k.contains("hot") && !k.contains("cold"), "{k}");
        let ttl: i64 = redis.cli(&["PTTL", k]).trim().parse().unwrap_or(-3);
        assert!(
            (0..=2000).contains(&ttl) || ttl == -2,
            "{k} expires in {ttl} ms"
        );
    }
    // Telemetry: requests limited by scope and basis, round trips, keys, fallback off.
    let m = tollgate_tests::admin::metrics(c.admins[0]);
    assert!(
        m.contains("tollgate_ratelimit_limited_total{scope=\"cluster\",basis=\"shared_window\"}"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_ratelimit_redis_round_trip_seconds_count"),
        "{m}"
    );
    assert!(m.contains("tollgate_ratelimit_cluster_fallback 0"), "{m}");
    assert!(
        m.contains("tollgate_ratelimit_cluster_keys{policy=\"default/shared\"}"),
        "{m}"
    );
    drop(c);
}

/// One hot key at 3 x the limit and 10,000 cold keys at once (each sent once, by two load
/// threads per agent, as fast as the agents answer): the hot key keeps the shared limit within
/// 10% over the whole windows of the run, no cold key is refused or fails, and each agent sends
/// Redis fewer commands than it got requests (new keys share sync rounds).
#[test]
fn one_hot_key_and_ten_thousand_cold_keys_at_once() {
    require_root!();
    const LIMIT: u32 = 40;
    const COLD: u64 = 10_000;
    let redis = Redis::start();
    let c = cluster("rlcold", 18530, 3, &redis, &cluster_policy(LIMIT, "local"));
    let before: Vec<u64> = c
        .admins
        .iter()
        .map(|&a| metric(a, "tollgate_ratelimit_redis_commands_total"))
        .collect();
    align_to_window(&redis);
    let started = redis.time_ms();
    let stop = Arc::new(AtomicBool::new(false));
    let hot = Arc::new(Tally::default());
    let cold = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let hot_threads: Vec<_> = c
        .proxies
        .iter()
        .map(|&proxy| {
            load(
                proxy,
                LIMIT, // 3 x the limit over the three agents
                |_| "hot".into(),
                stop.clone(),
                hot.clone(),
            )
        })
        .collect();
    let cold_threads: Vec<_> = c
        .proxies
        .iter()
        .flat_map(|&proxy| [proxy, proxy])
        .map(|proxy| {
            let (next, cold) = (next.clone(), cold.clone());
            thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= COLD {
                    return;
                }
                let (code, took) = get(proxy, &format!("cold-{n}"));
                cold.add(code, took);
            })
        })
        .collect();
    for t in cold_threads {
        t.join().expect("a cold load thread");
    }
    // The hot key runs on to the end of the window the cold keys ended in: whole windows.
    align_to_window(&redis);
    stop.store(true, Ordering::Relaxed);
    for t in hot_threads {
        t.join().expect("a hot load thread");
    }
    let windows = (redis.time_ms() - started + 500) / 1000;
    let expected = u64::from(LIMIT) * windows;
    let commands: Vec<u64> = c
        .admins
        .iter()
        .zip(&before)
        .map(|(&a, b)| metric(a, "tollgate_ratelimit_redis_commands_total") - b)
        .collect();
    println!(
        "{COLD} cold keys over {windows} windows: {} allowed, {} limited, {} other; hot key: {} allowed (limit {expected}), {} limited, {} other; Redis commands per agent: {commands:?}",
        cold.ok(),
        cold.limited(),
        cold.other(),
        hot.ok(),
        hot.limited(),
        hot.other()
    );
    assert_eq!(
        (cold.ok(), cold.limited(), cold.other()),
        (COLD, 0, 0),
        "every cold key's one request is within its limit"
    );
    assert_eq!(hot.other(), 0, "no answer but 200 or 429");
    let allowed = hot.ok() as f64;
    assert!(
        (allowed - expected as f64).abs() <= expected as f64 * 0.10,
        "the hot key got {allowed} over {windows} windows; the shared limit is {expected}"
    );
    // Requests per agent: about a third of the cold keys plus its part of the hot key.
    let requests = (COLD + hot.ok() + hot.limited()) / 3;
    for (i, n) in commands.iter().enumerate() {
        assert!(
            *n < requests,
            "agent {i} sent {n} Redis commands for about {requests} requests"
        );
    }
    drop(c);
}

#[test]
fn redis_killed_mid_run_falls_back_within_a_second_with_no_5xx_and_shares_again_when_back() {
    require_root!();
    const LIMIT: u32 = 30;
    let mut redis = Redis::start();
    let port = redis.port;
    let c = cluster("rlkill", 18470, 3, &redis, &cluster_policy(LIMIT, "local"));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = c
        .proxies
        .iter()
        .map(|&p| load(p, LIMIT, |_| "t".into(), stop.clone(), tally.clone()))
        .collect();
    thread::sleep(Duration::from_secs(2));

    redis.kill();
    let engaged = wait_all(&c.admins, "down", Instant::now(), Duration::from_secs(2));
    println!("fallback engaged after {engaged:?}");
    assert!(
        engaged.iter().all(|d| *d <= Duration::from_secs(1)),
        "fallback engaged after {engaged:?}"
    );
    let s = status(c.admins[0]);
    assert_eq!(s["ratelimit_backend"]["fallback"], true, "{s}");
    assert!(s["ratelimit_backend"]["last_error"].is_string(), "{s}");
    assert!(metric(c.admins[0], "tollgate_ratelimit_cluster_fallback") == 1);
    assert!(c.agents[0]
        .log()
        .contains("limits fall back to onBackendFailure"));
    // Each agent admits its share (LIMIT / 3, rounded down) per window of Redis' clock, so
    // the three together no more than LIMIT per window (a token bucket per agent would admit
    // one bucket more in the window Redis fails in).
    let rate = allowed_per_second_over_whole_windows(&tally, 3);
    println!("allowed while down: {rate:.1}/s over 3 whole windows (limit {LIMIT}/s)");
    assert!(
        rate > f64::from(LIMIT) * 0.6 && rate <= f64::from(LIMIT) * 1.1,
        "{rate:.1}/s allowed while down"
    );

    let back = Redis::start_on(port);
    let back_after = wait_all(&c.admins, "up", Instant::now(), Duration::from_secs(8));
    println!("shared again {back_after:?} after Redis came back");
    // Shared again: the counters are in Redis once more.
    thread::sleep(Duration::from_millis(1500));
    let keys = back.cli(&["--scan", "--pattern", "tollgate:rl:*"]);
    assert!(keys.lines().count() > 0, "no counters in the new Redis");
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
fn a_stalled_redis_does_not_slow_requests() {
    require_root!();
    let redis = Redis::start();
    let c = cluster("rlslow", 18480, 1, &redis, &cluster_policy(1000, "allow"));
    let proxy = c.proxies[0];
    // Baseline.
    let base = Tally::default();
    for n in 0..50 {
        let (code, took) = get(proxy, &format!("b{n}"));
        base.add(code, took);
    }
    // Redis stalls for 2 s; keys keep arriving (each new key wants a sync).
    let r = redis.url();
    let port = redis.port.to_string();
    let sleeper = thread::spawn(move || {
        let _ = r;
        Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "2"])
            .output()
    });
    thread::sleep(Duration::from_millis(50));
    let stalled = Tally::default();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1800) {
        let (code, took) = get(proxy, &format!("s{n}"));
        stalled.add(code, took);
        n += 1;
    }
    let saw_down = state(c.admins[0]) == "down";
    let _ = sleeper.join();
    let (base_us, stalled_us) = (
        base.slowest_us.load(Ordering::Relaxed),
        stalled.slowest_us.load(Ordering::Relaxed),
    );
    println!(
        "slowest request: {base_us} us before, {stalled_us} us while Redis slept ({} requests, {} ok, {} other); fallback seen: {saw_down}",
        n,
        stalled.ok(),
        stalled.other()
    );
    assert_eq!(stalled.other() + base.other(), 0);
    assert_eq!(
        stalled.ok(),
        n,
        "onBackendFailure: allow lets everything through"
    );
    // The bound: no request waits for Redis (250 ms is the sync timeout; a request that waited
    // for a stalled Redis would take 2 s).
    assert!(
        stalled_us < base_us + 100_000,
        "slowest {stalled_us} us while Redis slept, {base_us} us before"
    );
    assert!(
        saw_down,
        "a 2 s stall is a failure (sync timeout {:?})",
        Duration::from_millis(250)
    );
    wait_state(c.admins[0], "up", Duration::from_secs(8));
}

#[test]
fn an_agent_killed_and_restarted_mid_run_keeps_the_shared_limit() {
    require_root!();
    const LIMIT: u32 = 40;
    const SECONDS: u64 = 10;
    let redis = Redis::start();
    let mut c = cluster("rlrest", 18510, 3, &redis, &cluster_policy(LIMIT, "local"));
    align_to_window(&redis);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let hot = Arc::new(Tally::default());
    let threads: Vec<_> = c
        .proxies
        .iter()
        .map(|&p| load(p, LIMIT, |_| "hot".into(), stop.clone(), hot.clone()))
        .collect();
    thread::sleep(Duration::from_secs(3));
    // SIGKILL: the agent's lease (at most requests / (4 x agents) tokens) dies with it.
    c.agents[2].kill9();
    let url = redis.url();
    let admin = format!("127.0.0.1:{}", c.admins[2]);
    let restarted = c.labs[2].start_agent(&[
        "--gateway-address",
        "127.0.0.1",
        "--admin",
        &admin,
        "--ratelimit-redis",
        &url,
        "--ratelimit-agents",
        "3",
        "--access-log",
        "off",
    ]);
    c.agents[2] = restarted;
    tollgate_tests::l7::wait_for_port(&mut c.agents[2], c.proxies[2]);
    wait_state(c.admins[2], "up", Duration::from_secs(5));
    // Run whole windows: at least SECONDS, and two more after the restart.
    let windows = SECONDS.max(started.elapsed().as_secs() + 3);
    thread::sleep(
        (started + Duration::from_secs(windows)).saturating_duration_since(Instant::now()),
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let expected = u64::from(LIMIT) * windows;
    println!(
        "hot key: {} allowed, {} limited, {} without an answer (the agent being restarted) over {windows} windows; expected {expected}",
        hot.ok(),
        hot.limited(),
        hot.other()
    );
    // Never above the shared limit (plus one share for the restarted agent's first requests,
    // decided before its first refill), and below it by no more than the lost batch and the
    // refills of the windows the other agents did not use up.
    let allowed = hot.ok() as f64;
    assert!(
        allowed <= (expected + u64::from(LIMIT / 3)) as f64,
        "{allowed} allowed, limit {expected}"
    );
    assert!(
        allowed >= expected as f64 * 0.9,
        "{allowed} allowed, limit {expected}"
    );
}

#[test]
fn rediss_with_a_private_ca_and_a_password_file_shares_the_limit() {
    require_root!();
    let ca = Arc::new(TestCa::new());
    let access = Access {
        tls: Some(ca.clone()),
        password: Some("rl-s3cret".into()),
    };
    let redis = Redis::start_as(free_port(), &access, &[]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password").to_str().unwrap().to_owned();
    std::fs::write(&pw, "rl-s3cret\n").unwrap();
    let ca_file = ca.path("ca.crt");
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let c = cluster_with(
        "rltls",
        18500,
        1,
        &url,
        &tls_and_password(&ca_file, &pw),
        &cluster_policy(5, "deny"),
    );
    // Within one window of Redis' clock: 5 allowed, the rest refused from the shared window.
    let codes = codes_in_one_window(&redis, &c, "tls", 8);
    let ok = codes.iter().filter(|&&c| c == 200).count();
    assert_eq!(ok, 5, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200 || c == 429), "{codes:?}");
    assert!(
        redis
            .cli(&["--scan", "--pattern", "tollgate:rl:*"])
            .lines()
            .count()
            > 0
    );
    assert!(
        !c.agents[0].log().contains("rl-s3cret"),
        "the password is never logged"
    );
    // Without the CA the server is not trusted: the agent starts and says Redis is down.
    drop(c);
    let c = cluster_in_state(
        "rltlsno",
        18503,
        1,
        &url,
        &["--ratelimit-redis-password-file", &pw],
        &cluster_policy(5, "deny"),
        "down",
    );
    thread::sleep(Duration::from_millis(500));
    let s = status(c.admins[0]);
    assert_eq!(s["ratelimit_backend"]["state"], "down", "{s}");
    assert_eq!(s["ratelimit_backend"]["fallback"], true, "{s}");
    // onBackendFailure: deny.
    assert_eq!(get(c.proxies[0], "x").0, 429);
    drop(c);
}
