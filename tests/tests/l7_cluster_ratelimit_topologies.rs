//! Cluster-wide rate limits on a Redis Cluster (`redis+cluster://`, three primaries made by
//! `redis-cli --cluster create`) and through a Sentinel (`redis+sentinel://`): agents share one
//! limit through them; a primary killed mid-run takes only its own slots' keys into fallback
//! (the keys of the other primaries stay shared), with no 5xx, and they are shared again once
//! the cluster is whole; a Sentinel failover is followed. Every Redis process is the test's own,
//! on free loopback ports.
//!
//! Lab tags start with `rc` (this branch: redis-cluster); agent ports 18600-18649.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{metric, status};
use tollgate_tests::cluster_limits::{
    align_to_window, allowed_per_second_of_each, cluster_in_state, cluster_policy, cluster_with,
    codes_in_one_window, get, hot_and_cold_over_windows, load, tls_and_password, wait_all,
    wait_state, Access, Redis, RedisCluster, Sentinel, Tally, TestCa,
};
use tollgate_tests::require_root;

#[test]
fn three_agents_share_one_limit_on_a_redis_cluster_and_only_a_dead_primarys_keys_fall_back() {
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
    let (hot, cold) = hot_and_cold_over_windows(&c, &rc.nodes[0], LIMIT, 20, SECONDS);
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

    // One primary killed: only the keys of its slots fall back; the keys of the other
    // primaries stay shared, and no request fails because of it. A tenant whose windows the
    // killed primary holds, and two whose windows another one holds.
    let dead = rc.tenant_per_node(c.proxies[0], "dead")[0].clone();
    let alive = rc.tenant_per_node(c.proxies[0], "alive");
    let (alive_one, alive_all) = (alive[1].clone(), alive[2].clone());
    let dead_node = format!("127.0.0.1:{}", rc.nodes[0].port);
    rc.nodes[0].kill();
    // An idle agent checks its primaries every 250 ms.
    let engaged = wait_all(&c.admins, "partial", Instant::now(), Duration::from_secs(3));
    println!("primary {dead_node} found down after {engaged:?}");
    assert!(
        engaged.iter().all(|d| *d <= Duration::from_secs(1)),
        "found down after {engaged:?}"
    );
    let s = status(c.admins[1]);
    assert_eq!(s["ratelimit_backend"]["fallback"], true, "{s}");
    assert_eq!(
        s["ratelimit_backend"]["nodes_down"][0]["node"],
        dead_node.as_str(),
        "{s}"
    );
    assert!(
        s["ratelimit_backend"]["nodes_down"][0]["slots"].as_u64() > Some(5000),
        "{s}"
    );
    assert_eq!(
        metric(c.admins[1], "tollgate_ratelimit_cluster_fallback"),
        1
    );
    assert!(c.agents[1]
        .log()
        .contains("a Redis Cluster primary is unreachable; the keys of its slots fall back"));
    // Through agent 0 alone, twice the limit: a key of a live primary gets the whole shared
    // limit, the dead primary's key this agent's share (LIMIT / 3). Through all three agents,
    // the limit of a live primary's key holds across them.
    let stop = Arc::new(AtomicBool::new(false));
    let (one, all, fallen) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let mut threads = Vec::new();
    for (tenant, tally) in [(&alive_one, &one), (&dead, &fallen)] {
        let tenant = tenant.clone();
        threads.push(load(
            c.proxies[0],
            2 * LIMIT,
            move |_| tenant.clone(),
            stop.clone(),
            (*tally).clone(),
        ));
    }
    for &proxy in &c.proxies {
        let tenant = alive_all.clone();
        threads.push(load(
            proxy,
            LIMIT,
            move |_| tenant.clone(),
            stop.clone(),
            all.clone(),
        ));
    }
    thread::sleep(Duration::from_millis(1500));
    let rates = allowed_per_second_of_each(&[&one, &all, &fallen], 3);
    println!(
        "a primary down, over 3 whole windows (limit {LIMIT}/s): a live primary's key through one agent {:.1}/s, through three {:.1}/s; the dead primary's key {:.1}/s",
        rates[0], rates[1], rates[2]
    );
    let within = |rate: f64, of: f64| (rate - of).abs() <= of * 0.10;
    assert!(
        within(rates[0], f64::from(LIMIT)),
        "a live primary's key through one agent: {:.1}/s",
        rates[0]
    );
    assert!(
        within(rates[1], f64::from(LIMIT)),
        "a live primary's key through three agents: {:.1}/s",
        rates[1]
    );
    assert!(
        within(rates[2], f64::from(LIMIT / 3)),
        "the dead primary's key: {:.1}/s (this agent's share)",
        rates[2]
    );

    // The primary is back (same node, same slots): every key is shared again.
    rc.restart(0);
    let restarted = Instant::now();
    rc.wait_ok(Duration::from_secs(20));
    let back_after = wait_all(&c.admins, "up", restarted, Duration::from_secs(15));
    println!("shared again {back_after:?} after the primary came back");
    thread::sleep(Duration::from_millis(1500));
    let rates = allowed_per_second_of_each(&[&fallen], 2);
    println!("the key of the primary back: {:.1}/s", rates[0]);
    assert!(
        within(rates[0], f64::from(LIMIT)),
        "the key of the primary back, through one agent: {:.1}/s",
        rates[0]
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for (what, t) in [("one", &one), ("all", &all), ("fallen", &fallen)] {
        println!(
            "{what}: {} allowed, {} limited, {} other",
            t.ok(),
            t.limited(),
            t.other()
        );
        assert_eq!(
            t.other(),
            0,
            "no 5xx (nor anything but 200/429) because of Redis"
        );
    }
    assert!(c.agents[0]
        .log()
        .contains("a Redis Cluster primary answers again"));
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

/// Two agents, one window of Redis' clock: `LIMIT` allowed of 8 over both, the rest 429.
fn one_window_is_shared(c: &tollgate_tests::cluster_limits::Cluster, clock: &Redis, key: &str) {
    let codes = codes_in_one_window(clock, c, key, 8);
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 5, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200 || c == 429), "{codes:?}");
}

/// The password in a file for `--ratelimit-redis-password-file`.
fn password_file(dir: &tempfile::TempDir, password: &str) -> String {
    let path = dir.path().join("password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_redis_cluster_with_tls_and_a_password_shares_the_limit() {
    require_root!();
    const PASSWORD: &str = "rc-tls-s3cret";
    let ca = Arc::new(TestCa::new());
    let rc = RedisCluster::start_as(
        3,
        Access {
            tls: Some(ca.clone()),
            password: Some(PASSWORD.into()),
        },
    );
    let url = rc.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(&dir, PASSWORD);
    let ca_file = ca.path("ca.crt");
    let c = cluster_with(
        "rctls",
        18610,
        2,
        &url,
        &tls_and_password(&ca_file, &pw),
        &cluster_policy(5, "deny"),
    );
    let s = status(c.admins[0]);
    assert_eq!(s["ratelimit_backend"]["topology"], "cluster", "{s}");
    assert_eq!(s["ratelimit_backend"]["state"], "up", "{s}");
    one_window_is_shared(&c, &rc.nodes[0], "tls");
    // Keys on every primary (each reached over TLS, with the password): cold keys spread.
    for n in 0..60 {
        assert_eq!(get(c.proxies[n % 2], &format!("spread-{n}")).0, 200);
    }
    thread::sleep(Duration::from_millis(300));
    let counts: Vec<usize> = rc.keys_per_node().iter().map(Vec::len).collect();
    println!("lease keys per primary over TLS: {counts:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "keys per primary: {counts:?}"
    );
    for a in &c.agents {
        assert!(!a.log().contains(PASSWORD), "the password is never logged");
    }
    // Without the password file, the agent cannot log in: down, and onBackendFailure (deny).
    drop(c);
    let c = cluster_in_state(
        "rctlsno",
        18616,
        1,
        &url,
        &["--ratelimit-redis-ca-file", &ca_file],
        &cluster_policy(5, "deny"),
        "down",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = status(c.admins[0]);
        if s["ratelimit_backend"]["last_error"].is_string() || Instant::now() > deadline {
            break s;
        }
        thread::sleep(Duration::from_millis(50));
    };
    // The server's NOAUTH, or (on a loaded machine: a TLS handshake with each seed node
    // first) the connection's time bound running out before it.
    assert!(
        s["ratelimit_backend"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("NOAUTH")
                || e.contains("uthentication")
                || e.contains("no answer within")),
        "{s}"
    );
    assert_eq!(s["ratelimit_backend"]["state"], "down", "{s}");
    assert_eq!(get(c.proxies[0], "x").0, 429);
}

#[test]
fn a_sentinel_names_a_primary_that_wants_a_password_and_the_agents_log_in() {
    require_root!();
    const NAME: &str = "rcauth";
    const PASSWORD: &str = "rc-sen-s3cret";
    let access = Access {
        tls: None,
        password: Some(PASSWORD.into()),
    };
    let primary = Redis::start_as(tollgate_tests::cluster_limits::free_port(), &access, &[]);
    // The Sentinel logs in to the primary with `sentinel auth-pass`; the agents with the
    // password file (the Sentinel itself wants none).
    let sentinel = Sentinel::start_with(NAME, primary.port, Some(PASSWORD));
    let url = format!("redis+sentinel://127.0.0.1:{}/{NAME}", sentinel.port);
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(&dir, PASSWORD);
    let c = cluster_with(
        "rcauth",
        18640,
        2,
        &url,
        &["--ratelimit-redis-password-file", &pw],
        &cluster_policy(5, "deny"),
    );
    let s = status(c.admins[0]);
    assert_eq!(s["ratelimit_backend"]["topology"], "sentinel", "{s}");
    one_window_is_shared(&c, &primary, "auth");
    assert!(
        primary
            .cli(&["--scan", "--pattern", "tollgate:rl:*"])
            .lines()
            .count()
            > 0,
        "the windows are on the primary the Sentinel names"
    );
    for a in &c.agents {
        assert!(!a.log().contains(PASSWORD), "the password is never logged");
    }
}
