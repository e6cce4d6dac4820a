//! The measurements of docs/benchmarks.md ("Cluster-wide rate limits"), with real agents and a
//! real redis-server (ignored by default: minutes long). Helpers: `tests/src/cluster_limits.rs`.
//!
//! Lab tags start with `rl`.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::admin::metric;
use tollgate_tests::cluster_limits::{
    cluster_policy, cluster_with, get_path, hot_and_cold_over_windows, load, node_policy_on_free,
    percentile, Redis, RedisCluster, Tally,
};
use tollgate_tests::require_root;

/// The measurements of docs/benchmarks.md ("Cluster-wide rate limits"): accuracy with 1 and 3
/// agents over a minute (within 5%) on a standalone Redis and with 3 agents on a Redis Cluster,
/// Redis commands per second per agent with 1, 1,000 and 10,000 active keys on both, and the
/// latency of a cluster-limited route next to a node-limited one. About 6 minutes; run with
/// `--ignored --nocapture`.
#[test]
#[ignore = "a benchmark: about 6 minutes"]
fn bench_cluster_limits() {
    require_root!();
    const LIMIT: u32 = 40;
    const SECONDS: u64 = 60;
    let mut table = Vec::new();
    for (agents, on_cluster) in [(1usize, false), (3, false), (3, true), (1, true)] {
        let policies = format!(
            "{}---\n{}",
            cluster_policy(LIMIT, "local"),
            node_policy_on_free()
        );
        // A standalone redis-server, or a Redis Cluster of three primaries.
        let (redis, rc) = if on_cluster {
            (None, Some(RedisCluster::start(3)))
        } else {
            (Some(Redis::start()), None)
        };
        let url = match (&redis, &rc) {
            (Some(r), _) => r.url(),
            (_, Some(rc)) => rc.url(),
            _ => unreachable!(),
        };
        let topology = if on_cluster {
            "Redis Cluster (3 primaries)"
        } else {
            "standalone Redis"
        };
        let c = cluster_with(
            &format!("rlbench{agents}"),
            18490,
            agents,
            &url,
            &[],
            &policies,
        );
        let clock = redis
            .as_ref()
            .or(rc.as_ref().map(|rc| &rc.nodes[0]))
            .expect("a Redis");
        if !(on_cluster && agents == 1) {
            // Accuracy: the hot key at 3 x the limit, spread evenly, for a minute of whole windows.
            let (hot, _) = hot_and_cold_over_windows(&c, clock, LIMIT, 0, SECONDS);
            let expected = u64::from(LIMIT) * SECONDS;
            let error = (hot.ok() as f64 - expected as f64) / expected as f64 * 100.0;
            table.push(format!(
            "| accuracy, {topology}, {agents} agent(s), hot key at {} req/s, limit {LIMIT}/s, {SECONDS} s | {} allowed of {expected} ({error:+.1}%), {} refused, {} other |",
            3 * LIMIT,
            hot.ok(),
            hot.limited(),
            hot.other()
        ));
            assert!(error.abs() <= 5.0, "{error:+.1}% with {agents} agents");
            assert_eq!(hot.other(), 0);
        }
        if agents == 1 {
            // Redis traffic: `keys` active keys, requested in turn at a fixed total rate.
            for keys in [1u64, 1_000, 10_000] {
                let proxy = c.proxies[0];
                let before = metric(c.admins[0], "tollgate_ratelimit_redis_commands_total");
                let stop = Arc::new(AtomicBool::new(false));
                let tally = Arc::new(Tally::default());
                let rate = 300;
                let t = load(
                    proxy,
                    rate,
                    move |n| format!("k{}", n % keys),
                    stop.clone(),
                    tally.clone(),
                );
                let started = Instant::now();
                thread::sleep(Duration::from_secs(10));
                stop.store(true, Ordering::Relaxed);
                t.join().unwrap();
                let secs = started.elapsed().as_secs_f64();
                let commands =
                    metric(c.admins[0], "tollgate_ratelimit_redis_commands_total") - before;
                table.push(format!(
                    "| Redis traffic, {topology}, 1 agent, {keys} key(s) in turn, {:.0} req/s | {:.0} commands/s ({:.2} per request) |",
                    (tally.ok() + tally.limited()) as f64 / secs,
                    commands as f64 / secs,
                    commands as f64 / (tally.ok() + tally.limited()).max(1) as f64
                ));
            }
        }
        if agents == 1 && !on_cluster {
            // Latency: one request at a time, alternating a cluster-limited route (/a) and a
            // node-limited one (/free), each with a key of its own.
            let (mut cluster_t, mut node_t) = (Vec::new(), Vec::new());
            for n in 0..2000 {
                let key = format!("lat{}", n % 50);
                let (code, t) = get_path(c.proxies[0], "/a", &key);
                assert_eq!(code, 200);
                cluster_t.push(t);
                let (code, t) = get_path(c.proxies[0], "/free", &key);
                assert_eq!(code, 200);
                node_t.push(t);
            }
            cluster_t.sort();
            node_t.sort();
            table.push(format!(
                "| latency, 1 agent, 2000 requests each, new connection per request | cluster-limited p50 {:?} p99 {:?}; node-limited p50 {:?} p99 {:?} |",
                percentile(&cluster_t, 0.5),
                percentile(&cluster_t, 0.99),
                percentile(&node_t, 0.5),
                percentile(&node_t, 0.99)
            ));
        }
        drop(c);
    }
    println!("\n| measurement | result |\n|---|---|");
    for row in table {
        println!("{row}");
    }
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Accuracy with 10 agents (separate processes on this machine) over a minute (docs/benchmarks.md,
/// "Cluster-wide rate limits"). About 90 s; run with `--ignored --nocapture`.
#[test]
#[ignore = "a benchmark: about 90 s"]
fn bench_cluster_limits_ten_agents() {
    require_root!();
    const LIMIT: u32 = 100;
    const SECONDS: u64 = 60;
    const AGENTS: usize = 10;
    let redis = Redis::start();
    let c = cluster_with(
        "rlb10",
        18700,
        AGENTS,
        &redis.url(),
        &[],
        &cluster_policy(LIMIT, "local"),
    );
    // The hot key at 3 x the limit, spread evenly over the ten agents.
    let (hot, _) = hot_and_cold_over_windows(&c, &redis, LIMIT, 0, SECONDS);
    let expected = u64::from(LIMIT) * SECONDS;
    let error = (hot.ok() as f64 - expected as f64) / expected as f64 * 100.0;
    println!(
        "| accuracy, standalone Redis, {AGENTS} agents, hot key at {} req/s, limit {LIMIT}/s, {SECONDS} s | {} allowed of {expected} ({error:+.1}%), {} refused, {} other; load average {} |",
        3 * LIMIT,
        hot.ok(),
        hot.limited(),
        hot.other(),
        load_average()
    );
    // What refused: the shared window used up, or this agent's share (no lease at hand, the
    // share of the window used).
    for basis in ["shared_window", "local_share"] {
        let refused: u64 = c
            .admins
            .iter()
            .map(|&a| {
                metric(
                    a,
                    &format!(
                        "tollgate_ratelimit_limited_total{{scope=\"cluster\",basis=\"{basis}\"}}"
                    ),
                )
            })
            .sum();
        println!("refused on basis {basis}: {refused}");
    }
    assert!(error.abs() <= 5.0, "{error:+.1}% with {AGENTS} agents");
    assert_eq!(hot.other(), 0);
}

/// Redis traffic of one agent with 10,000 and 100,000 active keys, each requested in turn by
/// four load threads (docs/benchmarks.md, "Cluster-wide rate limits"): commands per second
/// sent, and the Redis server's CPU time. About 2 minutes; run with `--ignored --nocapture`.
#[test]
#[ignore = "a benchmark: about 2 minutes"]
fn bench_cluster_limits_many_keys() {
    require_root!();
    const THREADS: u64 = 4;
    let redis = Redis::start();
    let c = cluster_with(
        "rlbkeys",
        18700,
        1,
        &redis.url(),
        &[],
        &cluster_policy(100, "local"),
    );
    let redis_cpu = || -> f64 {
        redis
            .cli(&["INFO", "cpu"])
            .lines()
            .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
            .sum()
    };
    for (keys, seconds) in [(10_000u64, 30u64), (100_000, 60)] {
        let before = metric(c.admins[0], "tollgate_ratelimit_redis_commands_total");
        let cpu_before = redis_cpu();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                load(
                    c.proxies[0],
                    500,
                    move |n| format!("k{keys}-{}", (n * THREADS + t) % keys),
                    stop.clone(),
                    tally.clone(),
                )
            })
            .collect();
        let started = Instant::now();
        thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let requests = tally.ok() + tally.limited();
        let commands = metric(c.admins[0], "tollgate_ratelimit_redis_commands_total") - before;
        let cpu = redis_cpu() - cpu_before;
        println!(
            "| Redis traffic, standalone Redis, 1 agent, {keys} keys in turn, {:.0} req/s for {secs:.0} s | {:.0} commands/s ({:.3} per request); Redis CPU {:.1} us per request; load average {} |",
            requests as f64 / secs,
            commands as f64 / secs,
            commands as f64 / requests.max(1) as f64,
            cpu * 1e6 / requests.max(1) as f64,
            load_average()
        );
        assert_eq!(tally.other(), 0);
    }
}
