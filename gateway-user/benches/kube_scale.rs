//! A large cluster through the Kubernetes source (issue 11's scale targets): the real agent
//! (`tollgate run --source kubernetes`, as the DaemonSet runs it: `--tls-secrets-dir`,
//! `--node-name`) starts against the fake API server of the tests crate holding 10,000
//! HTTPRoutes, each to its own Service (10,000 Services and EndpointSlices), 1,000 TLS Secrets
//! (63 of them served by the Gateway's listeners, the others referenced by nothing) and 100
//! L4Policies. Measured: the time from the agent's start to `/readyz` answering 200 (a
//! revision enforced), its RSS then; and the time from one HTTPRoute's change to the proxy
//! answering by the new route table, probed as a client would (a new HTTP request every
//! millisecond).
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};
use tollgate_tests::l7::Backend;

use super::agent::{spread, Agent, Network, Place, Rebuild};
use super::{blocklist_policy, load_average, sh, yaml_of, Report};

// Names and ports of this benchmark only (other benchmarks and tests may run beside it).
static PLACE: Place = Place {
    net: Network {
        iface: "kmscale0",
        peer: "kmscale1",
        netns: "km-scale",
        base: BASE,
    },
    node: "km-bench-node",
    admin_port: ADMIN,
    kept_log: "/tmp/tollgate-bench-kube-scale-agent.log",
};
const BASE: &str = "/run/tollgate-bench-km-scale";
const ADMIN: u16 = 27495;
const HTTP: u16 = 27480;
const HTTPS: u16 = 27443;
const BACKEND: u16 = 27481;

/// HTTPS listeners of the Gateway, each serving one Secret (a Gateway has at most 64
/// listeners; one is the HTTP listener the routes attach to).
const SERVED_SECRETS: usize = 63;

/// The size of the cluster.
#[derive(Debug, Clone, Copy)]
struct Size {
    routes: usize,
    secrets: usize,
    l4_policies: usize,
}

/// The status code of `GET path` on 127.0.0.1:`port` (a new connection), if it answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Kernel's view of a process's memory: (VmRSS, VmHWM) in KiB.
fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Seconds since midnight of a log line's RFC 3339 UTC `timestamp` (for differences between
/// lines of one run).
fn time_of_day(line: &Value) -> Option<f64> {
    let t = line["timestamp"].as_str()?;
    let clock = t.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = clock.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The route `r{i}`: `path` (a prefix) to Service `s{i}`.
fn route(i: usize, path: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("r{i}"), "namespace": "default"},
        "spec": {"parentRefs": [{"name": "edge", "sectionName": "http"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": format!("s{i}"), "port": 80}],
        }]},
    })
}

/// The cluster: the Gateway, the routes with their Services and slices (every endpoint the
/// one backend), the Secrets, the L4Policies and this node.
fn fill(fake: &FakeApiServer, size: Size) {
    let dir = PathBuf::from(BASE);
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.test",
            "-addext",
            "subjectAltName=DNS:*.bench.test",
            "-keyout",
            key.to_str().expect("UTF-8"),
            "-out",
            cert.to_str().expect("UTF-8"),
        ],
    );
    let b64 = |p: &Path| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).expect("read"))
    };
    let (cert, key) = (b64(&cert), b64(&key));
    for i in 0..size.secrets {
        fake.put(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": format!("tls-{i}"), "namespace": "default"},
            "data": {"tls.crt": cert, "tls.key": key},
        }))
        .expect("a Secret");
    }
    let mut listeners = vec![json!({"name": "http", "port": HTTP, "protocol": "HTTP"})];
    for i in 0..SERVED_SECRETS.min(size.secrets) {
        listeners.push(json!({
            "name": format!("https-{i}"), "port": HTTPS, "protocol": "HTTPS",
            "hostname": format!("h{i}.bench.test"),
            "tls": {"certificateRefs": [{"name": format!("tls-{i}")}]},
        }));
    }
    fake.put(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {"gatewayClassName": "tollgate", "listeners": listeners},
    }))
    .expect("the Gateway");
    for i in 0..size.routes {
        fake.put(route(i, &format!("/svc-{i}"))).expect("a route");
        fake.put(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("s{i}"), "namespace": "default"},
            "spec": {"selector": {"app": format!("s{i}")}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
        }))
        .expect("a Service");
        fake.put(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("s{i}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": format!("s{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": BACKEND, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        }))
        .expect("a slice");
    }
    let rules = 10 * size.l4_policies;
    let policy = blocklist_policy(rules);
    for (i, chunk) in policy.rules.chunks(10).enumerate() {
        let mut p = policy.clone();
        p.name = format!("bench-{i:03}");
        p.rules = chunk.to_vec();
        fake.apply_yaml(&yaml_of(&p)).expect("an L4Policy");
    }
    fake.put(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": PLACE.node, "labels": {"kubernetes.io/hostname": PLACE.node}},
    }))
    .expect("the Node");
}

/// What the cold start measured.
struct ColdStart {
    /// From the agent's start to `/readyz` answering 200 (s).
    to_ready: f64,
    /// From the agent's first log line to "every kind is listed" (s), by the log's clock.
    to_listed: f64,
    /// The first revision's breakdown (ms): read (the source's first read waits for every
    /// kind's first list; the Secrets are written), parse + compile, apply until enforced.
    first: Rebuild,
    /// From `/readyz` 200 to a route answering 200 through the proxy (ms).
    ready_to_serving: f64,
    /// RSS and its peak when ready (KiB).
    rss: (u64, u64),
}

/// One route change: ms from the store to the proxy's first answer by the new route, and the
/// agent's breakdown of the rebuild.
#[derive(Debug, Clone, Copy)]
struct Change {
    to_served: f64,
    rebuild: Rebuild,
}

struct Run {
    /// First, so that the agent stops before the fake API server.
    agent: Agent,
    fake: FakeApiServer,
    _backend: Backend,
}

/// Starts the agent on a filled cluster and measures until it is ready and serving.
fn cold_start(size: Size) -> (Run, ColdStart) {
    PLACE.net.setup();
    let backend = Backend::start("km-bench", BACKEND);
    let fake = FakeApiServer::start(tollgate_kinds());
    fill(&fake, size);
    let started = Instant::now();
    let agent = Agent::start(&PLACE, &fake, &["--gateway-address", "127.0.0.1"]);
    let mut run = Run {
        agent,
        fake,
        _backend: backend,
    };
    let deadline = started + Duration::from_secs(120);
    while http_status(ADMIN, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready in 120 s:\n{}",
            run.agent.log_text()
        );
        assert!(
            run.agent.child.try_wait().ok().flatten().is_none(),
            "the agent exited:\n{}",
            run.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let to_ready = started.elapsed().as_secs_f64();
    let rss = rss_of(run.agent.child.id());
    let ready = Instant::now();
    // The revision enforced holds the routes: the last one answers (its backend's 200).
    let path = format!("/svc-{}", size.routes - 1);
    while http_status(HTTP, &path) != Some(200) {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "{path} is not served:\n{}",
            run.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready_to_serving = ready.elapsed().as_secs_f64() * 1e3;
    let lines = run.agent.log_lines();
    let first = lines.first().and_then(time_of_day);
    let listed = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("every kind is listed"))
        })
        .and_then(time_of_day);
    let revision = run
        .agent
        .applied()
        .into_iter()
        .next()
        .expect("a revision applied");
    let cold = ColdStart {
        to_ready,
        to_listed: match (first, listed) {
            (Some(a), Some(b)) => (b - a).rem_euclid(86_400.0),
            _ => f64::NAN,
        },
        first: Rebuild::of(&revision),
        ready_to_serving,
        rss,
    };
    (run, cold)
}

impl Run {
    /// Moves route `r{index}` to the path `/changed-{n}`; returns what it took until the proxy
    /// answers there.
    fn change(&mut self, index: usize, n: usize) -> Change {
        // A single change after a quiet spell.
        std::thread::sleep(Duration::from_millis(400));
        let path = format!("/changed-{n}");
        assert_eq!(
            http_status(HTTP, &path),
            Some(404),
            "{path} is not routed yet"
        );
        let before = self.agent.applied().len();
        self.fake
            .put(route(index, &path))
            .expect("the route changed");
        let stored = Instant::now();
        while http_status(HTTP, &path) != Some(200) {
            assert!(
                stored.elapsed() < Duration::from_secs(30),
                "{path} never served:\n{}",
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let to_served = stored.elapsed().as_secs_f64() * 1e3;
        Change {
            to_served,
            rebuild: self.agent.rebuild_after(before),
        }
    }
}

/// The section of docs/benchmarks.md.
pub fn run(report: &mut Report) {
    let size = if report.quick() {
        Size {
            routes: 1_000,
            secrets: 100,
            l4_policies: 10,
        }
    } else {
        Size {
            routes: 10_000,
            secrets: 1_000,
            l4_policies: 100,
        }
    };
    let rounds = if report.quick() { 3 } else { 15 };
    let load_before = load_average();
    let (mut run, cold) = cold_start(size);
    let watches = (run.fake.open_watch_count(), run.fake.peak_open_watches());
    let by_resource: Vec<String> = run
        .fake
        .open_watches()
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    // The agent's RSS after each change (MiB): whether rebuilds keep memory or it levels off.
    let mut rss_series = Vec::new();
    let changes: Vec<Change> = (0..rounds)
        .map(|n| {
            let c = run.change(size.routes / 2, n);
            rss_series.push(format!(
                "{:.0}",
                rss_of(run.agent.child.id()).0 as f64 / 1024.0
            ));
            c
        })
        .collect();
    let rss_after = rss_of(run.agent.child.id());
    let load_after = load_average();
    drop(run);

    let stat = |f: fn(&Change) -> f64| spread(changes.iter().map(f).collect());
    let (med, lo, hi) = stat(|c| c.to_served);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let md = format!(
        "Cluster: {routes} HTTPRoutes (each to its own Service: {routes} Services and EndpointSlices), {secrets} TLS Secrets \
         ({served} served by the Gateway's listeners), {l4} L4Policies of 10 rules, one Gateway, this node's Node.\n\n\
         | measure | result | target |\n|---|---:|---|\n\
         | agent start → `/readyz` 200 | {ready:.2} s | ≤ 5 s |\n\
         | of which: start → every kind listed (agent's log) | {listed:.2} s | |\n\
         | first revision: read (from the wait for the first lists on) / parse + compile / apply until enforced | {first_read:.0} / {compile:.0} / {apply:.0} ms | |\n\
         | `/readyz` 200 → a route answers 200 | {serving:.0} ms | |\n\
         | agent RSS when ready (peak until then) | {rss:.0} MiB ({hwm:.0} MiB) | ≤ 256 MiB |\n\
         | agent RSS after the route changes (peak) | {rss2:.0} MiB ({hwm2:.0} MiB) | |\n\
         | one HTTPRoute changed → served, p50 ({rounds} trials) | {med:.0} ms | ≤ 500 ms |\n\
         | max / min | {hi:.0} / {lo:.0} ms | |\n\
         | the rebuild, p50: read / parse + compile / apply until enforced | {read:.0} / {rcompile:.0} / {rapply:.0} ms | |\n\
         | watch connections open when ready (most at once) | {open} ({peak}) | ≤ 15 |\n\n\
         Agent RSS after each route change, MiB: {rss_series}.\n\n\
         Watches by resource: {by_resource}.\n\n\
         Machine load average (1, 5, 15 min) before: {load_before}; after: {load_after}.\n\n\
         Method. The fake API server of the tests crate (in the benchmark's process, plain HTTP on loopback) holds the \
         cluster before the agent starts (release build, `--source kubernetes --node-name --tls-secrets-dir`, the proxy \
         on 127.0.0.1, XDP on a veth). The clock starts when the agent is spawned and stops at the first 200 of \
         `/readyz` (probed every 5 ms), which answers 200 once a revision is enforced; RSS and its peak (VmRSS, VmHWM) \
         are read from /proc then. Each route change, after 0.4 s of quiet, stores HTTPRoute `r{half}` moved to a new \
         path (`/changed-N`, 404 before); the clock stops at the first 200 on that path, each probe a new HTTP/1.1 \
         connection to the proxy (every 1 ms). The breakdowns come from the agent's log line for the revision.\n",
        routes = size.routes,
        secrets = size.secrets,
        served = SERVED_SECRETS.min(size.secrets),
        l4 = size.l4_policies,
        ready = cold.to_ready,
        listed = cold.to_listed,
        first_read = cold.first.read,
        compile = cold.first.compile,
        apply = cold.first.apply,
        serving = cold.ready_to_serving,
        rss = mib(cold.rss.0),
        hwm = mib(cold.rss.1),
        rss2 = mib(rss_after.0),
        hwm2 = mib(rss_after.1),
        read = stat(|c| c.rebuild.read).0,
        rcompile = stat(|c| c.rebuild.compile).0,
        rapply = stat(|c| c.rebuild.apply).0,
        open = watches.0,
        peak = watches.1,
        by_resource = by_resource.join(", "),
        rss_series = rss_series.join(", "),
        half = size.routes / 2,
    );
    report.section("Kubernetes source: a large cluster", md);
}
