//! Hostile input against the real agent, inside a memory cgroup with the install's 512 MiB
//! limit: the agent must survive each input without being OOM-killed, with the revision in
//! force still enforced (L4 and L7) and the proxy serving. Each test is one measured attack of
//! the hardening review; the assertion names the bound.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{metrics, status};
use tollgate_tests::cgroup::{MemoryCgroup, AGENT_MEMORY_LIMIT};
use tollgate_tests::l7::{curl, one_route, wait_for_port, Backend};
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
}

impl Fixture {
    fn start(tag: &str, proxy: u16, admin: u16, backend: u16, extra: &[&str]) -> Fixture {
        let cgroup = MemoryCgroup::new(tag, AGENT_MEMORY_LIMIT);
        let lab = Lab::new(tag, &[]);
        let backend_server = Backend::start("app", backend);
        lab.write_policy("l7.yaml", &one_route(proxy, backend));
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
        let r = curl(&[&format!("http://127.0.0.1:{}/", self.proxy)]);
        assert_eq!(r.status, 200, "{what}: the proxy does not serve: {r:?}");
    }

    fn metric(&self, series: &str) -> u64 {
        metric_value(&metrics(self.admin), series).unwrap_or(0)
    }
}

/// Opens `n` connections to `port` and writes `head` (an unfinished request head) on each,
/// keeping them open. Connections the server refuses or closes are dropped.
fn partial_heads(port: u16, n: usize, head: &[u8]) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
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
/// connection, OOM at about 9,000). The head budget (64 MiB) closes connections instead.
#[test]
fn partial_heads_on_a_public_listener_stay_within_the_head_budget() {
    require_root!();
    let fds = raise_fd_limit();
    assert!(fds > 11_000, "the test needs 11,000 open files, has {fds}");
    let mut f = Fixture::start("hheads", 18700, 19950, 19951, &[]);
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
        "2,000 partial admin heads: cgroup peak {} MiB, {dropped} dropped by the server within 7 s",
        peak >> 20
    );
    f.assert_survived("the admin port attack");
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
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the hostile revision was not refused within 60 s; log:\n{}",
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
