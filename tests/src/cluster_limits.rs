//! Helpers of the cluster rate limit tests (`l7_cluster_ratelimit*`): redis-servers of a test
//! (standalone, a Redis Cluster of three primaries, a Sentinel), agents sharing them, and a
//! paced load of one request per connection with a tally of the answers.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::status;
use crate::l7::{app_and_free, start_agent, Backend};
use crate::{Agent, Lab};

/// A redis-server of this test, on 127.0.0.1; killed when dropped.
pub struct Redis {
    child: Option<Child>,
    /// The port.
    pub port: u16,
    /// Its working directory (a replica's or primary's RDB of a full sync lands there, not in
    /// the source tree).
    _dir: tempfile::TempDir,
    /// What `redis-cli` needs to reach it besides the port (TLS, password).
    client: Vec<String>,
}

/// How a test's redis-servers are reached: TLS with a test CA, a password.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The test CA and the server's certificate (for 127.0.0.1): TLS only, no plain port.
    pub tls: Option<std::sync::Arc<TestCa>>,
    /// `requirepass` (and `masterauth`, for replicas and cluster failovers).
    pub password: Option<String>,
}

impl Access {
    /// redis-server arguments for a server on `port`.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(ca) = &self.tls {
            let p = |f: &str| ca.path(f);
            a.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                p("srv.crt"),
                "--tls-key-file".into(),
                p("srv.key"),
                "--tls-ca-cert-file".into(),
                p("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
                // Between the nodes too (cluster bus, replication).
                "--tls-cluster".into(),
                "yes".into(),
                "--tls-replication".into(),
                "yes".into(),
            ]);
        }
        if let Some(pw) = &self.password {
            a.extend(["--requirepass", pw, "--masterauth", pw].map(String::from));
        }
        a
    }

    /// redis-cli arguments besides the port.
    fn client_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(ca) = &self.tls {
            a.extend(["--tls".into(), "--cacert".into(), ca.path("ca.crt")]);
        }
        if let Some(pw) = &self.password {
            a.extend(["--no-auth-warning", "-a", pw].map(String::from));
        }
        a
    }
}

/// A private CA of a test and a server certificate it signed for 127.0.0.1 and localhost
/// (`ca.crt`, `srv.crt`, `srv.key` in its directory), made with `openssl`.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA and server certificate, valid one day.
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = dir.path();
        let run = |line: &str| openssl(d, &line.split(' ').collect::<Vec<_>>());
        run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj /CN=rl-test-ca -days 1");
        run("req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost");
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("san.ext");
        run("x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 1 -extfile san.ext");
        TestCa { dir }
    }

    /// The path of one of its files.
    pub fn path(&self, file: &str) -> String {
        self.dir
            .path()
            .join(file)
            .to_str()
            .expect("a UTF-8 path")
            .to_owned()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A free port on 127.0.0.1 (free now: the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Redis {
    /// A standalone redis-server on a free port.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// A standalone redis-server on `port`.
    pub fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// A redis-server on `port` with `extra` arguments (plain `--port` stays on `port` unless
    /// `extra` moves it).
    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        Redis::start_as(port, &Access::default(), extra)
    }

    /// A redis-server on `port` reached as `access` says (TLS: on `port`, no plain port), with
    /// `extra` arguments.
    pub fn start_as(port: u16, access: &Access, extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let child = Command::new("redis-server")
            .args([
                "--dir",
                dir.path().to_str().expect("a UTF-8 path"),
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
            .args(access.server_args(port))
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
            _dir: dir,
            client: access.client_args(),
        };
        // Port 0 (no plain port, TLS set up by `extra`) is waited for by its test.
        if port != 0 {
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

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p PORT ARGS...` (with TLS and password if the server wants them): its
    /// output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.client)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Redis' clock, in ms.
    pub fn time_ms(&self) -> u64 {
        let out = self.cli(&["TIME"]);
        let mut it = out.lines().map(|l| l.trim().parse::<u64>().unwrap_or(0));
        let (s, us) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        s * 1000 + us / 1000
    }

    /// SIGKILL, and wait.
    pub fn kill(&mut self) {
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
pub fn cluster_policy(requests: u32, on_failure: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: shared }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]\n  scope: Cluster\n  onBackendFailure: {on_failure}\n  limits:\n    - {{ key: header, header: X-Tenant, requests: {requests}, per: 1s }}\n"
    )
}

/// One GET on a new connection: the status (0: no answer) and how long it took.
pub fn get(port: u16, tenant: &str) -> (u16, Duration) {
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
pub struct Tally {
    ok: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
    /// The slowest answer, in µs.
    pub slowest_us: AtomicU64,
}

impl Tally {
    /// Counts one answer.
    pub fn add(&self, code: u16, took: Duration) {
        match code {
            200 => &self.ok,
            429 => &self.limited,
            _ => &self.other,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.slowest_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }
    /// 200s.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
    /// 429s.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
    /// Anything else (no answer, 5xx, ...).
    pub fn other(&self) -> u64 {
        self.other.load(Ordering::Relaxed)
    }
}

/// Sends `rate` requests per second of tenant `tenant` (a function of the request's number) to
/// `port` until `stop`, into `tally`.
pub fn load(
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
pub struct Cluster {
    /// The agents.
    pub agents: Vec<Agent>,
    /// Their admin ports.
    pub admins: Vec<u16>,
    /// Their proxy ports.
    pub proxies: Vec<u16>,
    _backends: Vec<Backend>,
    /// Their labs.
    pub labs: Vec<Lab>,
}

/// `n` agents sharing the standalone `redis` (see [`cluster_with`]).
pub fn cluster(tag: &str, base: u16, n: usize, redis: &Redis, policy: &str) -> Cluster {
    cluster_with(tag, base, n, &redis.url(), &[], policy)
}

/// `n` agents on labs `TAG0`.., each with proxy, admin and backend ports `base + 3i`, `+1`,
/// `+2`, all on `--ratelimit-redis URL` with `extra` flags; waits until each says Redis is up.
pub fn cluster_with(
    tag: &str,
    base: u16,
    n: usize,
    url: &str,
    extra: &[&str],
    policy: &str,
) -> Cluster {
    cluster_in_state(tag, base, n, url, extra, policy, "up")
}

/// [`cluster_with`], waiting until each agent says Redis is `state` (`down`: an agent that
/// cannot reach or log in to Redis).
pub fn cluster_in_state(
    tag: &str,
    base: u16,
    n: usize,
    url: &str,
    extra: &[&str],
    policy: &str,
    state: &str,
) -> Cluster {
    let mut c = Cluster {
        agents: Vec::new(),
        admins: Vec::new(),
        proxies: Vec::new(),
        _backends: Vec::new(),
        labs: Vec::new(),
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
        c.labs.push(lab);
    }
    for &admin in &c.admins {
        wait_state(admin, state, Duration::from_secs(5));
    }
    c
}

/// The hot key `hot` at 3 x `limit` per second, spread evenly over the agents of `c`, and
/// `cold_per_agent` cold keys per second on each agent (`cold-PROXY-N`, each sent once: over
/// every slot of a Redis Cluster), for `seconds` whole windows of `clock` (a `per: 1s` limit):
/// the tallies of the hot key and of the cold keys.
pub fn hot_and_cold_over_windows(
    c: &Cluster,
    clock: &Redis,
    limit: u32,
    cold_per_agent: u32,
    seconds: u64,
) -> (Arc<Tally>, Arc<Tally>) {
    align_to_window(clock);
    let stop = Arc::new(AtomicBool::new(false));
    let hot = Arc::new(Tally::default());
    let cold = Arc::new(Tally::default());
    let per_agent = 3 * limit / c.proxies.len() as u32;
    let mut threads = Vec::new();
    for &proxy in &c.proxies {
        threads.push(load(
            proxy,
            per_agent,
            |_| "hot".into(),
            stop.clone(),
            hot.clone(),
        ));
        if cold_per_agent > 0 {
            threads.push(load(
                proxy,
                cold_per_agent,
                move |n| format!("cold-{proxy}-{n}"),
                stop.clone(),
                cold.clone(),
            ));
        }
    }
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread");
    }
    (hot, cold)
}

/// The statuses of `n` requests of one key, spread over the agents of `c` in turn, all within
/// one window of `clock` (a `per: 1s` limit) and with Redis up for every agent throughout:
/// started on a window's boundary, and sent again with a fresh key (`KEY-1`, ...) if they ran
/// into the next window or an agent's Redis state changed meanwhile (a command that timed out
/// on a loaded machine puts an agent in its fallback for a moment, which says nothing about
/// sharing), 3 tries.
pub fn codes_in_one_window(clock: &Redis, c: &Cluster, key: &str, n: usize) -> Vec<u16> {
    for attempt in 0..3 {
        align_to_window(clock);
        let window = clock.time_ms() / 1000;
        let started = Instant::now();
        let key = if attempt == 0 {
            key.to_owned()
        } else {
            format!("{key}-{attempt}")
        };
        let codes: Vec<u16> = (0..n)
            .map(|i| get(c.proxies[i % c.proxies.len()], &key).0)
            .collect();
        let in_window = clock.time_ms() / 1000 == window;
        let unsteady: Vec<serde_json::Value> = c
            .admins
            .iter()
            .map(|&a| status(a)["ratelimit_backend"].clone())
            .filter(|b| {
                b["state"] != "up"
                    || b["since_seconds"]
                        .as_f64()
                        .is_none_or(|s| s < started.elapsed().as_secs_f64())
            })
            .collect();
        if in_window && unsteady.is_empty() {
            return codes;
        }
        if !unsteady.is_empty() {
            eprintln!("Redis was not up throughout for an agent, again: {unsteady:?}");
        }
    }
    panic!("{n} requests never fit in one window of Redis' clock with Redis up throughout");
}

/// The flags of a `rediss...://` Redis with a private CA and a password file.
pub fn tls_and_password<'a>(ca_file: &'a str, password_file: &'a str) -> [&'a str; 4] {
    [
        "--ratelimit-redis-ca-file",
        ca_file,
        "--ratelimit-redis-password-file",
        password_file,
    ]
}

/// The state of the agent's Redis, from `/status`.
pub fn state(admin: u16) -> String {
    status(admin)["ratelimit_backend"]["state"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

/// Waits until `/status` shows `want`; returns how long it took.
pub fn wait_state(admin: u16, want: &str, timeout: Duration) -> Duration {
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

/// Waits until every agent's `/status` shows `want` (each within `timeout`); returns, for each,
/// how long after `since` it did.
pub fn wait_all(admins: &[u16], want: &str, since: Instant, timeout: Duration) -> Vec<Duration> {
    admins
        .iter()
        .map(|&admin| {
            wait_state(admin, want, timeout);
            since.elapsed()
        })
        .collect()
}

/// Sleeps until Redis' clock starts a new second (the limit's windows are Redis' seconds).
pub fn align_to_window(redis: &Redis) {
    let ms = redis.time_ms() % 1000;
    thread::sleep(Duration::from_millis(1000 - ms + 5));
}

/// 200s counted over `windows` whole windows of one second on the system clock (the windows of
/// a `per: 1s` limit: the test's Redis runs on this machine, so its clock is this one): the
/// rate per second.
pub fn allowed_per_second_over_whole_windows(tally: &Tally, windows: u32) -> f64 {
    allowed_per_second_of_each(&[tally], windows)[0]
}

/// [`allowed_per_second_over_whole_windows`] of several tallies over the same windows.
pub fn allowed_per_second_of_each(tallies: &[&Tally], windows: u32) -> Vec<f64> {
    let into = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_micros()
    };
    // 20 ms into a window: answers to requests of the window before are in.
    let offset = Duration::from_millis(20);
    let wait = |now_us: u32| {
        let us = (1_000_000 + offset.as_micros() as u64 - u64::from(now_us)) % 1_000_000;
        Duration::from_micros(us)
    };
    thread::sleep(wait(into(std::time::SystemTime::now())));
    let started = Instant::now();
    let before: Vec<u64> = tallies.iter().map(|t| t.ok()).collect();
    // Until the same point of the window `windows` later (a second wait for the next window
    // would take a whole one more if the first one ran late).
    thread::sleep(
        (started + Duration::from_secs(windows.into())).saturating_duration_since(Instant::now()),
    );
    tallies
        .iter()
        .zip(before)
        .map(|(t, b)| (t.ok() - b) as f64 / f64::from(windows))
        .collect()
}

/// `openssl` with `args`, in `dir`.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
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

/// A node-scoped RateLimitPolicy on route `free` that never triggers (the comparison route).
pub fn node_policy_on_free() -> String {
    "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: local }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: free }]\n  limits:\n    - { key: header, header: X-Tenant, requests: 1000000, per: 1s }\n".to_owned()
}

/// One GET of `path` on a new connection; its status and duration.
pub fn get_path(port: u16, path: &str, tenant: &str) -> (u16, Duration) {
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

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A Redis Cluster of `n` primaries (no replicas) on free loopback ports, made with `redis-cli
/// --cluster create`; its nodes keep their `nodes.conf` in a temporary directory so that a
/// killed node can be started again as the same node.
pub struct RedisCluster {
    /// The nodes, in the order of `redis-cli --cluster create` (slots split evenly in order).
    pub nodes: Vec<Redis>,
    dir: tempfile::TempDir,
    access: Access,
}

impl RedisCluster {
    /// `n` (at least 3) primaries, waited for until every node says `cluster_state:ok`.
    pub fn start(n: usize) -> RedisCluster {
        RedisCluster::start_as(n, Access::default())
    }

    /// [`RedisCluster::start`], the nodes reached (by clients and by each other) as `access`
    /// says.
    pub fn start_as(n: usize, access: Access) -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut c = RedisCluster {
            nodes: Vec::new(),
            dir,
            access,
        };
        for _ in 0..n {
            let port = free_port();
            let node = c.start_node(port);
            c.nodes.push(node);
        }
        let addrs: Vec<String> = c
            .nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(c.access.client_args())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c.wait_ok(Duration::from_secs(20));
        c
    }

    fn start_node(&self, port: u16) -> Redis {
        let conf = self.dir.path().join(format!("nodes-{port}.conf"));
        Redis::start_as(
            port,
            &self.access,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().expect("a UTF-8 path"),
                // A dead primary is marked failed after 1 s (the default is 15 s).
                "--cluster-node-timeout",
                "1000",
                // The other primaries keep serving their slots while one is down (by default
                // they refuse every key then, and every key falls back).
                "--cluster-require-full-coverage",
                "no",
                "--dir",
                self.dir.path().to_str().expect("a UTF-8 path"),
            ],
        )
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster is not ok after {timeout:?}: {}",
                    n.cli(&["CLUSTER", "INFO"])
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts node `i` again (same port, same `nodes.conf`: it rejoins as itself).
    pub fn restart(&mut self, i: usize) {
        let port = self.nodes[i].port;
        self.nodes[i] = self.start_node(port);
    }

    /// `redis+cluster://` (`rediss+cluster://` with TLS) with every node as a seed.
    pub fn url(&self) -> String {
        format!(
            "{}+cluster://{}",
            if self.access.tls.is_some() {
                "rediss"
            } else {
                "redis"
            },
            self.nodes
                .iter()
                .map(|r| format!("127.0.0.1:{}", r.port))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// One tenant (`PREFIX<n>`) per node whose windows that node holds, learnt by sending each
    /// candidate's first request through `proxy` alone and seeing where its window appears.
    pub fn tenant_per_node(&self, proxy: u16, prefix: &str) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; self.nodes.len()];
        for n in 0..200 {
            if found.iter().all(Option::is_some) {
                break;
            }
            let tenant = format!("{prefix}{n}");
            // Sets of names, not counts: windows of earlier tenants expire meanwhile.
            let before = self.keys_per_node();
            assert_eq!(get(proxy, &tenant).0, 200, "the first request of {tenant}");
            let deadline = Instant::now() + Duration::from_secs(2);
            let node = loop {
                let now = self.keys_per_node();
                if let Some(i) =
                    (0..now.len()).find(|&i| now[i].iter().any(|k| !before[i].contains(k)))
                {
                    break i;
                }
                assert!(
                    Instant::now() < deadline,
                    "the window of {tenant} appears on no node"
                );
                thread::sleep(Duration::from_millis(10));
            };
            found[node].get_or_insert(tenant);
        }
        found
            .into_iter()
            .map(|t| t.expect("a tenant on every node within 200 tries"))
            .collect()
    }

    /// Lease keys held by each node (`--scan` on a node lists that node's keys only).
    pub fn keys_per_node(&self) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|n| {
                n.cli(&["--scan", "--pattern", "tollgate:rl:*"])
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }
}

/// A Sentinel (`redis-server --sentinel`) watching one primary as `name`, with quorum 1; killed
/// when dropped.
pub struct Sentinel {
    child: Option<Child>,
    /// The port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// A Sentinel on a free port, waited for until it names the primary on `primary_port`.
    pub fn start(name: &str, primary_port: u16) -> Sentinel {
        Sentinel::start_with(name, primary_port, None)
    }

    /// [`Sentinel::start`], logging in to the primary and replicas with `auth_pass` (`sentinel
    /// auth-pass`).
    pub fn start_with(name: &str, primary_port: u16, auth_pass: Option<&str>) -> Sentinel {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        // The Sentinel rewrites its file: it must be writable and its own.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {primary_port} 1\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n{}",
                dir.path().display(),
                auth_pass
                    .map(|p| format!("sentinel auth-pass {name} {p}\n"))
                    .unwrap_or_default()
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel: {e}"));
        let s = Sentinel {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", name]);
            if out.lines().nth(1).map(str::trim) == Some(&primary_port.to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinel on {port} does not name the primary: {out}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// `redis-cli -p PORT ARGS...`: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the primary it names now.
    pub fn primary_port(&self, name: &str) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", name])
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
