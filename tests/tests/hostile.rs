//! Hostile input against the real agent, inside a memory cgroup with the install's 512 MiB
//! limit: the agent must survive each input without being OOM-killed, with the revision in
//! force still enforced (L4 and L7) and the proxy serving. Each test is one measured attack of
//! the hardening review; the assertion names the bound.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{metrics, status};
use tollgate_tests::cgroup::{MemoryCgroup, AGENT_MEMORY_LIMIT};
use tollgate_tests::l7::{app_and_free, curl, one_route, wait_for_port, Backend};
use tollgate_tests::{metric_value, require_root, Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

/// Raises this process's open-file limit to its hard limit (the attacks open thousands of
/// connections).
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// An agent in a 512 MiB memory cgroup, with one L7 route (the proxy on `proxy`, the admin
/// server on `admin`), the revision applied.
struct Fixture {
    cgroup: MemoryCgroup,
    lab: Lab,
    agent: Agent,
    _backend: Backend,
    proxy: u16,
    admin: u16,
    applied: String,
    /// A path of the proxy that needs no credentials.
    open_path: &'static str,
}

impl Fixture {
    fn start(tag: &str, proxy: u16, admin: u16, backend: u16, extra: &[&str]) -> Fixture {
        Self::start_with(
            tag,
            proxy,
            admin,
            backend,
            &one_route(proxy, backend),
            "/",
            extra,
        )
    }

    /// As [`Fixture::start`], with `policy` as the revision (routes to Backend `app`), and
    /// `open_path` a path it serves without credentials.
    fn start_with(
        tag: &str,
        proxy: u16,
        admin: u16,
        backend: u16,
        policy: &str,
        open_path: &'static str,
        extra: &[&str],
    ) -> Fixture {
        let cgroup = MemoryCgroup::new(tag, AGENT_MEMORY_LIMIT);
        let lab = Lab::new(tag, &[]);
        let backend_server = Backend::start("app", backend);
        lab.write_policy("l7.yaml", policy);
        let admin_addr = format!("127.0.0.1:{admin}");
        let mut args = vec!["--gateway-address", "127.0.0.1", "--admin", &admin_addr];
        args.extend_from_slice(extra);
        let mut agent = Agent::start_in(&cgroup, &lab, &args);
        agent
            .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        wait_for_port(&mut agent, proxy);
        let applied = status(admin)["applied"]["id"]
            .as_str()
            .expect("an applied revision")
            .to_owned();
        let f = Fixture {
            cgroup,
            lab,
            agent,
            _backend: backend_server,
            proxy,
            admin,
            applied,
            open_path,
        };
        f.assert_serving("before the attack");
        f
    }

    /// The agent lives, was never OOM-killed, keeps the revision it had, and the proxy serves.
    fn assert_survived(&mut self, what: &str) {
        assert_eq!(
            self.cgroup.oom_kills(),
            0,
            "{what}: the agent was OOM-killed (peak {} MiB); its log:\n{}",
            self.cgroup.peak() >> 20,
            self.agent.log()
        );
        assert!(
            self.agent.is_running(),
            "{what}: the agent exited; its log:\n{}",
            self.agent.log()
        );
        assert_eq!(
            status(self.admin)["applied"]["id"].as_str(),
            Some(self.applied.as_str()),
            "{what}: the revision in force changed"
        );
        self.assert_serving(what);
    }

    fn assert_serving(&self, what: &str) {
        let r = curl(&[&format!(
            "http://127.0.0.1:{}{}",
            self.proxy, self.open_path
        )]);
        assert_eq!(r.status, 200, "{what}: the proxy does not serve: {r:?}");
    }

    fn metric(&self, series: &str) -> u64 {
        metric_value(&metrics(self.admin), series).unwrap_or(0)
    }
}

/// Opens `n` connections to `port` and writes `head` (an unfinished request head) on each,
/// keeping them open. Connections the server refuses or closes are dropped. Once the
/// listener's accept queue is full, the kernel drops further SYNs and a connect waits out its
/// retries (1 s, 3 s, 7 s, ...): the connections that cannot be made cost the agent nothing, so
/// the attack stops at the first few connects that do not complete at once (they made the
/// admin port's test take 155 s).
fn partial_heads(port: u16, n: usize, head: &[u8]) -> Vec<TcpStream> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut open = Vec::with_capacity(n);
    let mut stalled = 0;
    for _ in 0..n {
        let mut s = match TcpStream::connect_timeout(&address, Duration::from_millis(250)) {
            Ok(s) => {
                stalled = 0;
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                stalled += 1;
                if stalled == 3 {
                    break;
                }
                continue;
            }
            Err(_) => continue,
        };
        s.set_write_timeout(Some(Duration::from_millis(200))).ok();
        if s.write_all(head).is_ok() {
            open.push(s);
        }
    }
    open
}

/// A request head of `size` bytes that never ends (no blank line).
fn endless_head(size: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Pad: ".to_vec();
    head.resize(size, b'a');
    head
}

/// How many of `conns` the server has closed.
fn closed(conns: &mut [TcpStream]) -> usize {
    let mut n = 0;
    for s in conns.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(1))).ok();
        let mut b = [0u8; 512];
        match s.read(&mut b) {
            Ok(_) => n += 1, // an answer (431, 408) or the end of the stream: closed
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => n += 1, // reset
        }
    }
    n
}

/// Partial request heads of 60 KB on 10,000 connections (measured before: 72 KB held per
/// connection, OOM at about 9,000). The head budget (64 MiB) closes connections instead, also
/// with a connection limit raised to 10,000.
#[test]
fn partial_heads_on_a_public_listener_stay_within_the_head_budget() {
    require_root!();
    let fds = raise_fd_limit();
    assert!(fds > 11_000, "the test needs 11,000 open files, has {fds}");
    let mut f = Fixture::start(
        "hheads",
        18700,
        19950,
        19951,
        &["--max-connections", "10000"],
    );
    let head = endless_head(60 * 1024);
    let started = Instant::now();
    let mut conns = partial_heads(f.proxy, 10_000, &head);
    let written = conns.len();
    std::thread::sleep(Duration::from_secs(1));
    let peak = f.cgroup.peak();
    f.assert_survived("10,000 partial heads");
    let budget_closed = f.metric("tollgate_http_connection_errors_total{reason=\"memory_budget\"}");
    eprintln!(
        "10,000 partial 60 KB heads in {:?}: {written} written, {budget_closed} closed by the head budget, {} closed seen by the client, cgroup peak {} MiB",
        started.elapsed(),
        closed(&mut conns),
        peak >> 20
    );
    assert!(
        budget_closed > 0,
        "64 MiB of partial heads were held without the budget closing any connection"
    );
    assert!(
        peak < AGENT_MEMORY_LIMIT * 3 / 4,
        "the agent used {} MiB under partial heads",
        peak >> 20
    );
    drop(conns);
    f.assert_survived("after the connections closed");
    drop(f.lab);
}

/// The admin port under partial heads, idle connections and slowloris (measured before: no
/// header timeout, no idle timeout, no connection limit, ~520 KB per partial head, OOM after 904
/// connections). Now: 64 connections of at most 16 KiB of head each; heads within 5 s.
#[test]
fn the_admin_port_bounds_connections_heads_and_time() {
    require_root!();
    raise_fd_limit();
    let mut f = Fixture::start("hadmin", 18701, 19952, 19953, &[]);
    let head = endless_head(15 * 1024);
    let mut conns = partial_heads(f.admin, 2_000, &head);
    let opened = conns.len();
    // The admin server takes 64; the rest wait in the listener's accept queue (128 here).
    assert!(
        opened > 64 + 64,
        "only {opened} connections to the admin port were opened"
    );
    std::thread::sleep(Duration::from_secs(1));
    let peak = f.cgroup.peak();
    assert!(
        peak < 256 << 20,
        "the agent used {} MiB under 2,000 admin connections",
        peak >> 20
    );
    // A head over 16 KiB is refused outright.
    let mut big = TcpStream::connect(("127.0.0.1", f.admin)).expect("connect");
    let _ = big.write_all(&endless_head(64 * 1024));
    // Within the header timeout (5 s) and a little, every partial head is dropped and the
    // admin port answers again.
    std::thread::sleep(Duration::from_secs(6));
    let dropped = closed(&mut conns);
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(15);
    let healthy = loop {
        let ok = curl(&["-m", "2", &format!("http://127.0.0.1:{}/healthz", f.admin)]).status == 200;
        if ok || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(healthy, "the admin port does not answer after the attack");
    eprintln!(
        "{opened} partial admin heads: cgroup peak {} MiB, {dropped} dropped by the server within 7 s",
        peak >> 20
    );
    f.assert_survived("the admin port attack");
}

/// 64 webhook calls from one client whose bodies never arrive, no secret needed (measured
/// before: every place of the admin port held for 60 s, `/healthz` failing all that time,
/// long enough for the kubelet's liveness probe to restart the agent). Now: one client holds
/// at most 16 connections, a body has 10 s to arrive (408), and the probes from elsewhere
/// are answered throughout.
#[test]
fn slow_webhook_bodies_from_one_client_leave_the_probes_their_places() {
    require_root!();
    let work = tempfile::tempdir().expect("a temporary directory");
    let secret = work.path().join("webhook-secret");
    std::fs::write(&secret, "s3cret-for-the-test\n").expect("write the secret");
    let secret = secret.to_str().expect("a UTF-8 path").to_owned();
    let mut f = Fixture::start(
        "hhook",
        18706,
        19962,
        19963,
        &["--webhook-secret-file", &secret],
    );
    let head = b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0";
    let conns = partial_heads(f.admin, 64, head);
    std::thread::sleep(Duration::from_millis(500));
    // The server closed all but 16 of them at once.
    let mut open: Vec<TcpStream> = conns
        .into_iter()
        .filter_map(|mut c| (closed(std::slice::from_mut(&mut c)) == 0).then_some(c))
        .collect();
    assert_eq!(open.len(), 16, "connections of one client left open");
    let started = Instant::now();
    for _ in 0..4 {
        let r = curl(&[
            "-m",
            "2",
            "--interface",
            "127.0.0.2",
            &format!("http://127.0.0.1:{}/healthz", f.admin),
        ]);
        assert_eq!(r.status, 200, "/healthz from another client: {r:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The bodies that never came are answered 408 once their 10 s are up.
    let mut answers = Vec::new();
    for c in open.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("a read timeout");
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 408")),
        "{answers:?} after {:?}",
        started.elapsed()
    );
    f.assert_survived("slow webhook bodies");
}

/// As many idle keep-alive clients as the default connection limit allows (4,096, less the few
/// the test itself needs), each after one answered request: what an open connection costs the
/// agent, measured (about 34 KB with a release build), and the 512 MiB limit far away.
#[test]
fn the_default_connection_limit_of_idle_keep_alive_clients_fits_in_the_memory_limit() {
    require_root!();
    let fds = raise_fd_limit();
    assert!(fds > 11_000, "the test needs 11,000 open files, has {fds}");
    let mut f = Fixture::start("hidle", 18702, 19954, 19955, &[]);
    // `--max-connections`'s default (tollgate_proxy::MAX_CONNECTIONS), less the connections of
    // the fixture's own checks.
    let n = 4_096 - 6;
    let before = f.cgroup.current();
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", f.proxy))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let mut answer = [0u8; 4096];
        let got = s.read(&mut answer).unwrap_or(0);
        assert!(
            answer[..got].starts_with(b"HTTP/1.1 200"),
            "connection {i}: {:?}",
            String::from_utf8_lossy(&answer[..got])
        );
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = f.cgroup.current();
    let peak = f.cgroup.peak();
    let per_connection = held.saturating_sub(before) / n as u64;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", f.agent.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("agent {rss}; cgroup memory.stat:\n{}", f.cgroup.stat());
    eprintln!(
        "{n} idle keep-alive connections opened in {:?}: cgroup {} MiB before, {} MiB with them open ({per_connection} bytes each), peak {} MiB",
        started.elapsed(),
        before >> 20,
        held >> 20,
        peak >> 20
    );
    assert!(
        peak < AGENT_MEMORY_LIMIT / 2,
        "the agent used {} MiB for {n} idle connections",
        peak >> 20
    );
    f.assert_survived("the idle connections");
    drop(conns);
    drop(f.lab);
}

/// Requests a second answered on `path` of `port` over one keep-alive connection for `time`,
/// each with `header` (`Name: value`, or empty); and how many were answered with `status`.
fn rate(port: u16, path: &str, header: &str, status: u16, time: Duration) -> (f64, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n{header}\r\n");
    let want = format!("HTTP/1.1 {status}");
    let (mut answered, mut matched) = (0u64, 0u64);
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    while started.elapsed() < time {
        if s.write_all(request.as_bytes()).is_err() {
            s = TcpStream::connect(("127.0.0.1", port)).expect("reconnect");
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            continue;
        }
        // Small answers (a few hundred bytes) come in one read on loopback.
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                s = TcpStream::connect(("127.0.0.1", port)).expect("reconnect");
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            }
            Ok(n) => {
                answered += 1;
                if buf[..n].starts_with(want.as_bytes()) {
                    matched += 1;
                }
            }
        }
    }
    (answered as f64 / started.elapsed().as_secs_f64(), matched)
}

/// CPU time (user and system) `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// A 61,440-byte API key against a 10,000-line key file, from eight connections at once
/// (measured before: 356 ms of CPU a request, and an unauthenticated route on the same proxy
/// fell from 14,468 to 2 requests a second). Such a key is now refused before any hashing, a
/// wrong key of ordinary length costs one hash, and the other route keeps serving.
#[test]
fn long_api_keys_against_a_large_key_file_do_not_starve_other_routes() {
    require_root!();
    let secrets = tempfile::tempdir().expect("a temporary directory");
    let keys = secrets.path().join("default/keys");
    std::fs::create_dir_all(&keys).expect("create the key directory");
    // 10,000 consumers, one salt (as `tollgate` writes key files), SHA-256(salt || key).
    let script = "import hashlib,sys\nsalt=bytes.fromhex('00112233445566778899aabbccddeeff')\nfor i in range(10000):\n    k=('key-%05d' % i).encode()\n    print('c%d:sha256:%s:%s' % (i, salt.hex(), hashlib.sha256(salt+k).hexdigest()))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
    std::fs::write(keys.join("keys"), &out.stdout).expect("write the key file");
    let (proxy, backend) = (18704, 19959);
    let auth = "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: { name: app-auth }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n  apiKey: { header: X-Api-Key, credentialRefs: [{ name: keys }] }\n";
    let secrets_dir = secrets.path().display().to_string();
    let mut f = Fixture::start_with(
        "hkeys",
        proxy,
        19958,
        backend,
        &app_and_free(proxy, backend, &[auth]),
        "/free",
        &["--tls-secrets-dir", &secrets_dir, "--access-log", "off"],
    );
    let window = Duration::from_secs(3);
    let (good, ok) = rate(
        proxy,
        "/a",
        "X-Api-Key: key-09999\r\n",
        200,
        Duration::from_millis(300),
    );
    assert!(
        ok > 0,
        "the last key of the file is not accepted ({good} req/s)"
    );
    let (quiet, _) = rate(proxy, "/free", "", 200, window);
    let long_key = format!("X-Api-Key: {}\r\n", "k".repeat(61_440));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, long_key) = (stop.clone(), long_key.clone());
            std::thread::spawn(move || {
                let mut refused = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    refused += rate(proxy, "/a", &long_key, 401, Duration::from_millis(500)).1;
                }
                refused
            })
        })
        .collect();
    let cpu_before = cpu_time(f.agent.pid());
    std::thread::sleep(Duration::from_millis(300));
    let (attacked, served) = rate(proxy, "/free", "", 200, window);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused: u64 = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    let cpu = cpu_time(f.agent.pid()).saturating_sub(cpu_before);
    let per_request = cpu / (refused + served).max(1) as u32;
    let peak = f.cgroup.peak();
    eprintln!(
        "unauthenticated route: {quiet:.0} req/s alone, {attacked:.0} req/s while 8 connections sent {refused} requests with 61,440-byte keys (all 401) against 10,000 keys; agent CPU {cpu:?} in all, {per_request:?} a request; cgroup peak {} MiB",
        peak >> 20
    );
    // Before, a long key cost 356 ms of CPU at 10,000 keys (every line hashed with it) and the
    // other route fell 7,000-fold. The bound is on the agent's CPU time, not on rates (which a
    // busy machine moves): a long key now costs what parsing 60 KB of headers costs, well
    // under a millisecond; 5 ms leaves room for a debug build on a loaded machine. The other
    // route keeps being served.
    assert!(
        per_request < Duration::from_millis(5),
        "{per_request:?} of CPU a request under the long-key flood"
    );
    assert!(
        served > 0,
        "the unauthenticated route was not served at all"
    );
    f.assert_survived("the long-key flood");
    drop(f.lab);
}

/// Writes a revision file and asks the agent to read it (SIGHUP); waits until it is refused.
fn refused(f: &mut Fixture, file: &str, text: &str) -> Duration {
    let before = f.metric("tollgate_policy_apply_failures_total{reason=\"invalid\"}")
        + f.metric("tollgate_policy_apply_failures_total{reason=\"source\"}");
    std::fs::write(f.lab.source_dir.join(file), text).expect("write the hostile file");
    let started = Instant::now();
    f.agent.sighup();
    loop {
        let now = f.metric("tollgate_policy_apply_failures_total{reason=\"invalid\"}")
            + f.metric("tollgate_policy_apply_failures_total{reason=\"source\"}");
        if now > before {
            return started.elapsed();
        }
        // A generous bound for a debug build on a slow, busy host: 1,000,000 rules are read
        // and parsed before the revision's rule count refuses them (over 60 s on the VM of
        // stop 21, beside the rest of the suite). What is asserted is the refusal, the agent's
        // survival and its memory, not a time.
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the hostile revision was not refused within 240 s; log:\n{}",
            f.agent.log()
        );
        assert!(f.agent.is_running(), "the agent exited:\n{}", f.agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alias_bomb(name: &str) -> String {
    let mut lines = vec!["a0: &a0 [x, x, x, x, x, x, x, x, x, x]".to_owned()];
    for i in 1..12 {
        let p = format!("*a{}", i - 1);
        lines.push(format!("a{i}: &a{i} [{}]", vec![p; 10].join(", ")));
    }
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: {{ name: {name} }}\nspec:\n  x:\n{}\n",
        lines
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// 50 KB of YAML alias bombs (measured before: 41.7 s of one pass; SIGTERM took 47.7 s).
#[test]
fn alias_bombs_are_refused_quickly_and_sigterm_is_honoured() {
    require_root!();
    let mut f = Fixture::start("halias", 18702, 19954, 19955, &[]);
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 50 * 1024 {
        text.push_str(&alias_bomb(&format!("bomb{i}")));
        text.push_str("---\n");
        i += 1;
    }
    let took = refused(&mut f, "bombs.yaml", &text);
    eprintln!("{i} alias bombs ({} bytes) refused in {took:?}", text.len());
    f.assert_survived("alias bombs");
    assert!(
        f.agent.log().contains("alias"),
        "the refusal does not name the aliases"
    );
    // A pass on the bombs again, and SIGTERM in the middle of it: the agent stops within 2 s.
    std::fs::write(
        f.lab.source_dir.join("bombs2.yaml"),
        text.replace("bomb", "other"),
    )
    .expect("write");
    f.agent.sighup();
    std::thread::sleep(Duration::from_millis(50));
    let asked = Instant::now();
    let exited = f.agent.sigterm(Duration::from_secs(10));
    assert!(
        exited.is_some(),
        "SIGTERM did not stop the agent within 10 s"
    );
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} to stop the agent during a pass over alias bombs"
    );
}

/// A policy file emptied (a truncated write) and a rule whose `from:` lost its entries
/// (measured before: both applied, the first removing the file's objects, the second opening
/// the rule to every source): both refused, the revision in force kept, each error naming
/// the file and field.
#[test]
fn an_emptied_file_and_a_rule_field_without_a_value_are_refused() {
    require_root!();
    let mut f = Fixture::start("hblank", 18705, 19960, 19961, &[]);
    refused(&mut f, "l7.yaml", "# the routes were here\n");
    f.assert_survived("an emptied policy file");
    let last_error = status(f.admin)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last_error.contains("l7.yaml") && last_error.contains("holds no YAML document"),
        "{last_error}"
    );
    // The routes back, and an L4 rule meant for one network whose list was commented out.
    std::fs::write(f.lab.source_dir.join("l7.yaml"), one_route(f.proxy, 19961)).expect("write");
    let edge = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\n\
                spec:\n  defaultAction: deny\n  rules:\n    - name: ssh\n      action: allow\n\
                \x20     protocol: TCP\n      ports: [\"22\"]\n      from:\n      #  - 192.0.2.0/24\n";
    refused(&mut f, "edge.yaml", edge);
    f.assert_survived("a rule field without a value");
    let last_error = status(f.admin)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last_error.contains("edge.yaml: L4Policy/edge: spec.rules[0].from: null"),
        "{last_error}"
    );
}

/// 200,000 empty YAML documents (measured before: one 33 MB error line and a 33 MB /status).
#[test]
fn a_flood_of_broken_documents_gives_a_bounded_report() {
    require_root!();
    let mut f = Fixture::start("hempty", 18703, 19956, 19957, &[]);
    let text = "--- {}\n".repeat(200_000);
    refused(&mut f, "empty.yaml", &text);
    f.assert_survived("200,000 broken documents");
    let s = status(f.admin).to_string();
    assert!(
        s.len() < 256 * 1024,
        "/status is {} bytes after the refusal",
        s.len()
    );
    let longest = f.agent.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 * 1024, "a log line of {longest} bytes");
    let last_error = status(f.admin)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last_error.contains("more"),
        "the report does not count the problems it leaves out: {last_error:.300}"
    );
}

/// 13 files of 15.9 MB each (measured before: accepted, 804 MB RSS) and 1,000,000 rules
/// (refused only after full parsing, 810 MB): both refused inside the memory limit.
#[test]
fn oversized_revisions_are_refused_within_the_memory_limit() {
    require_root!();
    let mut f = Fixture::start("hbig", 18704, 19958, 19959, &[]);
    // 1,000,000 rules in 10 files of 100,000 (each file under the per-file limit).
    let rule = |i: usize| {
        format!(
            "    - {{ name: r{i}, action: deny, from: [\"10.{}.{}.{}/32\"] }}\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )
    };
    for file in 0..10 {
        let mut text = format!("apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: {{ name: big{file} }}\nspec:\n  rules:\n");
        for i in 0..100_000 {
            text.push_str(&rule(file * 100_000 + i));
        }
        if file < 9 {
            std::fs::write(f.lab.source_dir.join(format!("big{file}.yaml")), text).expect("write");
        } else {
            refused(&mut f, &format!("big{file}.yaml"), &text);
        }
    }
    let peak = f.cgroup.peak();
    f.assert_survived("1,000,000 rules");
    eprintln!("1,000,000 rules refused; cgroup peak {} MiB", peak >> 20);
    for file in 0..10 {
        let _ = std::fs::remove_file(f.lab.source_dir.join(format!("big{file}.yaml")));
    }
    // 13 files of 15.9 MB.
    let filler = format!("# {}\n", "x".repeat(1000));
    let mut text = String::new();
    while text.len() < 15_900_000 {
        text.push_str(&filler);
    }
    for file in 0..12 {
        std::fs::write(f.lab.source_dir.join(format!("pad{file}.yaml")), &text).expect("write");
    }
    refused(&mut f, "pad12.yaml", &text);
    f.assert_survived("13 files of 15.9 MB");
    assert!(
        f.agent
            .log()
            .contains("more than the limit of 67108864 bytes for one revision"),
        "the refusal does not name the revision size limit"
    );
    eprintln!(
        "13 x 15.9 MB refused; cgroup peak {} MiB",
        f.cgroup.peak() >> 20
    );
}
