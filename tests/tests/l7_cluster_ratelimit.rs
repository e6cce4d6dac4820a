//! Cluster-wide rate limits (`scope: Cluster`) with a real `redis-server` and three real agents
//! (separate processes, labs and ports) sharing one limit: the load spread over them gets the
//! limit within 10% over 10 s while cold keys pass; Redis killed mid-run (fallback within a
//! second, no 5xx, shared again once it is back); Redis stalled with `DEBUG SLEEP` (requests do
//! not wait for it). Each test starts its own redis-server on a free loopback port.
//!
//! Lab tags start with `rl` (this branch: redis-limits).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{metric, status};
use tollgate_tests::l7::{app_and_free, start_agent, Backend};
use tollgate_tests::{require_root, Agent, Lab};

/// A redis-server of this test, on 127.0.0.1; killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        Redis::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// A redis-server on `port` with `extra` arguments (plain `--port` stays on `port` unless
    /// `extra` moves it).
    fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP is refused by default since Redis 7.
                "--enable-debug-command",
                "local",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server (cargo xtask setup installs it): {e}")
            });
        let r = Redis {
            child: Some(child),
            port,
        };
        // A TLS-only server (extra arguments) is waited for by its test, with its own client.
        if extra.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.cli(&["PING"]).trim() != "PONG" {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {port} does not answer"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Redis' clock, in ms.
    fn time_ms(&self) -> u64 {
        let out = self.cli(&["TIME"]);
        let mut it = out.lines().map(|l| l.trim().parse::<u64>().unwrap_or(0));
        let (s, us) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        s * 1000 + us / 1000
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster RateLimitPolicy on route `app`: `requests` per second per `X-Tenant`.
fn cluster_policy(requests: u32, on_failure: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: shared }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]\n  scope: Cluster\n  onBackendFailure: {on_failure}\n  limits:\n    - {{ key: header, header: X-Tenant, requests: {requests}, per: 1s }}\n"
    )
}

/// One GET on a new connection: the status (0: no answer) and how long it took.
fn get(port: u16, tenant: &str) -> (u16, Duration) {
    let started = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, started.elapsed());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "GET /a HTTP/1.1\r\nHost: app.test\r\nX-Tenant: {tenant}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, started.elapsed());
    }
    let mut head = [0u8; 12];
    let code = match s.read_exact(&mut head) {
        Ok(()) => std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    };
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    (code, started.elapsed())
}

/// Counts of answers by class.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
    slowest_us: AtomicU64,
}

impl Tally {
    fn add(&self, code: u16, took: Duration) {
        match code {
            200 => &self.ok,
            429 => &self.limited,
            _ => &self.other,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.slowest_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
    fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
    fn other(&self) -> u64 {
        self.other.load(Ordering::Relaxed)
    }
}

/// Sends `rate` requests per second of tenant `tenant` (a function of the request's number) to
/// `port` until `stop`, into `tally`.
fn load(
    port: u16,
    rate: u32,
    tenant: impl Fn(u64) -> String + Send + 'static,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let gap = Duration::from_secs(1) / rate;
        let started = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = started + gap * n as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let (code, took) = get(port, &tenant(n));
            tally.add(code, took);
            n += 1;
        }
    })
}

/// Three agents on three labs, sharing `redis`, each with its proxy, admin and backend ports.
struct Cluster {
    agents: Vec<Agent>,
    admins: Vec<u16>,
    proxies: Vec<u16>,
    _backends: Vec<Backend>,
    _labs: Vec<Lab>,
}

fn cluster(tag: &str, base: u16, n: usize, redis: &Redis, policy: &str) -> Cluster {
    cluster_with(tag, base, n, &redis.url(), &[], policy)
}

fn cluster_with(
    tag: &str,
    base: u16,
    n: usize,
    url: &str,
    extra: &[&str],
    policy: &str,
) -> Cluster {
    let mut c = Cluster {
        agents: Vec::new(),
        admins: Vec::new(),
        proxies: Vec::new(),
        _backends: Vec::new(),
        _labs: Vec::new(),
    };
    for i in 0..n {
        let (proxy, admin, backend) = (
            base + i as u16 * 3,
            base + i as u16 * 3 + 1,
            base + i as u16 * 3 + 2,
        );
        let lab = Lab::new(&format!("{tag}{i}"), &[]);
        c._backends.push(Backend::start("app", backend));
        lab.write_policy("l7.yaml", &app_and_free(proxy, backend, &[policy]));
        let agents = n.to_string();
        let mut args = vec![
            "--ratelimit-redis",
            url,
            "--ratelimit-agents",
            &agents,
            "--access-log",
            "off",
        ];
        args.extend_from_slice(extra);
        let agent = start_agent(&lab, admin, &[proxy], &args);
        c.agents.push(agent);
        c.admins.push(admin);
        c.proxies.push(proxy);
        c._labs.push(lab);
    }
    for &admin in &c.admins {
        wait_state(admin, "up", Duration::from_secs(5));
    }
    c
}

/// The state of the agent's Redis, from `/status`.
fn state(admin: u16) -> String {
    status(admin)["ratelimit_backend"]["state"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

/// Waits until `/status` shows `want`; returns how long it took.
fn wait_state(admin: u16, want: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let s = state(admin);
        if s == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "ratelimit_backend is {s}, not {want}, after {timeout:?}: {}",
            status(admin)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sleeps until Redis' clock starts a new second (the limit's windows are Redis' seconds).
fn align_to_window(redis: &Redis) {
    let ms = redis.time_ms() % 1000;
    thread::sleep(Duration::from_millis(1000 - ms + 5));
}

#[test]
fn three_agents_share_one_limit_within_ten_percent_while_cold_keys_pass() {
    require_root!();
    const LIMIT: u32 = 40;
    const SECONDS: u64 = 10;
    let redis = Redis::start();
    let c = cluster("rlshare", 18460, 3, &redis, &cluster_policy(LIMIT, "local"));

    align_to_window(&redis);
    let stop = Arc::new(AtomicBool::new(false));
    let hot = Arc::new(Tally::default());
    let cold = Arc::new(Tally::default());
    let mut threads = Vec::new();
    // The hot key at 3 x the limit, spread evenly; cold keys, each sent once, at the same time.
    for &proxy in &c.proxies {
        threads.push(load(
            proxy,
            LIMIT,
            |_| "hot".into(),
            stop.clone(),
            hot.clone(),
        ));
        let p = proxy;
        threads.push(load(
            p,
            20,
            move |n| format!("cold-{p}-{n}"),
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
    let killed = Instant::now();
    let mut engaged = Vec::new();
    for &admin in &c.admins {
        wait_state(admin, "down", Duration::from_secs(2));
        engaged.push(killed.elapsed());
    }
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
    // While down: each agent enforces its share (LIMIT / 3 per second), so the three together
    // still allow about LIMIT per second.
    let before = (tally.ok(), Instant::now());
    thread::sleep(Duration::from_secs(3));
    let rate = (tally.ok() - before.0) as f64 / before.1.elapsed().as_secs_f64();
    println!("allowed while Redis is down: {rate:.1}/s (limit {LIMIT}/s)");
    assert!(
        rate > f64::from(LIMIT) * 0.6 && rate < f64::from(LIMIT) * 1.4,
        "{rate:.1}/s allowed while down"
    );

    let back = Redis::start_on(port);
    let restarted = Instant::now();
    for &admin in &c.admins {
        wait_state(admin, "up", Duration::from_secs(8));
    }
    println!(
        "shared again {:?} after Redis came back",
        restarted.elapsed()
    );
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
    let restarted = c._labs[2].start_agent(&[
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

/// `openssl` with `args`, in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rediss_with_a_private_ca_and_a_password_file_shares_the_limit() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=rl-test-ca",
            "-days",
            "1",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    std::fs::write(d.join("password"), "rl-s3cret\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let (crt, key, ca, pw) = (
        path("srv.crt"),
        path("srv.key"),
        path("ca.crt"),
        path("password"),
    );
    let tls_port = port.to_string();
    let _redis = Redis::start_with(
        0,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &crt,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "rl-s3cret",
        ],
    );
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &ca,
                "-p",
                &tls_port,
                "--no-auth-warning",
                "-a",
                "rl-s3cret",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli(&["PING"]).trim() != "PONG" {
        assert!(
            Instant::now() < deadline,
            "redis-server with TLS does not answer"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let url = format!("rediss://127.0.0.1:{port}");
    let c = cluster_with(
        "rltls",
        18500,
        1,
        &url,
        &[
            "--ratelimit-redis-ca-file",
            &ca,
            "--ratelimit-redis-password-file",
            &pw,
        ],
        &cluster_policy(5, "deny"),
    );
    // Within one window of Redis' clock: 5 allowed, the rest refused from the shared window.
    let us: u64 = cli(&["TIME"])
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    thread::sleep(Duration::from_micros(1_005_000 - us % 1_000_000));
    let codes: Vec<u16> = (0..8).map(|_| get(c.proxies[0], "tls").0).collect();
    let ok = codes.iter().filter(|&&c| c == 200).count();
    assert_eq!(ok, 5, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200 || c == 429), "{codes:?}");
    assert!(
        cli(&["--scan", "--pattern", "tollgate:rl:*"])
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
    let c = {
        let lab = Lab::new("rltlsno", &[]);
        let _b = Backend::start("app", 18505);
        lab.write_policy(
            "l7.yaml",
            &app_and_free(18503, 18505, &[&cluster_policy(5, "deny")]),
        );
        let agent = start_agent(
            &lab,
            18504,
            &[18503],
            &[
                "--ratelimit-redis",
                &url,
                "--ratelimit-redis-password-file",
                &pw,
            ],
        );
        thread::sleep(Duration::from_millis(500));
        let s = status(18504);
        assert_eq!(s["ratelimit_backend"]["state"], "down", "{s}");
        assert_eq!(s["ratelimit_backend"]["fallback"], true, "{s}");
        // onBackendFailure: deny.
        assert_eq!(get(18503, "x").0, 429);
        (agent, lab)
    };
    drop(c);
}

/// A node-scoped RateLimitPolicy on route `free` that never triggers (the comparison route).
fn node_policy_on_free() -> String {
    "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: local }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: free }]\n  limits:\n    - { key: header, header: X-Tenant, requests: 1000000, per: 1s }\n".to_owned()
}

/// One GET of `path` on a new connection; its status and duration.
fn get_path(port: u16, path: &str, tenant: &str) -> (u16, Duration) {
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))) else {
        return (0, started.elapsed());
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: app.test\r\nX-Tenant: {tenant}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let code = std::str::from_utf8(out.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The measurements of docs/benchmarks.md ("Cluster-wide rate limits"): accuracy with 1 and 3
/// agents over a minute (within 5%), Redis commands per second per agent with 1,000 and 10,000
/// active keys, and the latency of a cluster-limited route next to a node-limited one. About 3
/// minutes; run with `--ignored --nocapture`.
#[test]
#[ignore = "a benchmark: about 3 minutes"]
fn bench_cluster_limits() {
    require_root!();
    const LIMIT: u32 = 40;
    const SECONDS: u64 = 60;
    let mut table = Vec::new();
    for agents in [1usize, 3] {
        let redis = Redis::start();
        let policies = format!(
            "{}---\n{}",
            cluster_policy(LIMIT, "local"),
            node_policy_on_free()
        );
        let c = cluster(
            &format!("rlbench{agents}"),
            18490,
            agents,
            &redis,
            &policies,
        );
        // Accuracy: the hot key at 3 x the limit, spread evenly, for a minute of whole windows.
        align_to_window(&redis);
        let stop = Arc::new(AtomicBool::new(false));
        let hot = Arc::new(Tally::default());
        let per_agent = (3 * LIMIT) / agents as u32;
        let threads: Vec<_> = c
            .proxies
            .iter()
            .map(|&p| load(p, per_agent, |_| "hot".into(), stop.clone(), hot.clone()))
            .collect();
        thread::sleep(Duration::from_secs(SECONDS));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let expected = u64::from(LIMIT) * SECONDS;
        let error = (hot.ok() as f64 - expected as f64) / expected as f64 * 100.0;
        table.push(format!(
            "| accuracy, {agents} agent(s), hot key at {} req/s, limit {LIMIT}/s, {SECONDS} s | {} allowed of {expected} ({error:+.1}%), {} refused, {} other |",
            3 * LIMIT,
            hot.ok(),
            hot.limited(),
            hot.other()
        ));
        assert!(error.abs() <= 5.0, "{error:+.1}% with {agents} agents");
        assert_eq!(hot.other(), 0);
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
                    "| Redis traffic, 1 agent, {keys} key(s) in turn, {:.0} req/s | {:.0} commands/s ({:.2} per request) |",
                    (tally.ok() + tally.limited()) as f64 / secs,
                    commands as f64 / secs,
                    commands as f64 / (tally.ok() + tally.limited()).max(1) as f64
                ));
            }
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
