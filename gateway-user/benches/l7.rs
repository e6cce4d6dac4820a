//! The L7 proxy against nginx and haproxy doing the same work, and what 10,000 routes cost.
//!
//! # The work
//!
//! One route (`/api`, any host) to one backend, an API-key check on a request header, a
//! per-client-address rate limit that never triggers, `X-Forwarded-For`/`-Proto` to the backend,
//! keep-alive connections to the backend, no access log. Each gateway listens on loopback with
//! plain HTTP and with TLS (one ECDSA P-256 certificate for `bench.local`; ALPN h2 and
//! http/1.1); the backend is nginx answering `200 ok` on loopback (two workers).
//!
//! - **Tollgate**: the real agent (`tollgate run`, release build) with a Gateway (HTTP and HTTPS
//!   listeners), a Backend, an HTTPRoute `bench` (`/api`) and nine other routes (so ten routes), an
//!   AuthPolicy (API keys, one salted SHA-256 line) and a RateLimitPolicy (`clientIP`, 10^9 a
//!   second), from a directory source; `--access-log off`. Its XDP program sits on a veth pair
//!   this benchmark creates (the agent needs an interface); the HTTP traffic is loopback.
//! - **nginx**: two workers; `map` of the header to the key, `limit_req` on
//!   `$binary_remote_addr`, `proxy_pass` to an `upstream` with `keepalive`.
//! - **haproxy**: two threads; `req.hdr(x-api-key)` check, a stick table with `http_req_rate`,
//!   `option forwardfor`, `http-reuse always`.
//!
//! # Load
//!
//! h2load (nghttp2) for every protocol, one thread: HTTP/1.1 with 64 connections, HTTP/1.1 over
//! TLS with 64 connections, HTTP/2 over TLS with 8 connections of 16 concurrent streams. Each
//! trial: 1 s warm-up, then a timed window; the rounds interleave the gateways (rotating who goes
//! first). Latency percentiles come from h2load's per-request log. The CPU time each gateway's
//! processes and the load generator used during a trial is read from `/proc` and from `wait4`,
//! which tells which side is the bottleneck: the 2 cores are shared by generator, gateway and
//! backend.
//!
//! # Routes
//!
//! A second agent serves the same revision plus 9,990 more routes (10,000 in all); both agents run
//! side by side, are loaded in turn with the same HTTP/1.1 load, and their resident memory is
//! read afterwards. The route lookup itself is also timed in-process on the compiled table.
use std::fmt::Write as _;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};
use tollgate_compile::l7::table::RequestView;
use tollgate_compile::snapshot::compile_documents;
use tollgate_model::{Documents, Revision, SourceFile};

use super::{sh, Report};
use crate::l7_load::{h2load, interleaved, stats, Trial};

pub(crate) const BASE: &str = "/run/tollgate-bench-l7";
/// Logs of the processes the benchmark starts (kept after the run).
const LOGS: &str = "/tmp/tollgate-bench-l7-logs";
const NETNS: &str = "tgb-l7";
const BACKEND: u16 = 19901;
pub(crate) const API_KEY: &str = "bench-key-5b0c7a6e1f";
pub(crate) const HOST: &str = "bench.local";

/// A gateway under test.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Gw {
    Tollgate,
    Nginx,
    Haproxy,
}

impl Gw {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Gw::Tollgate => "tollgate",
            Gw::Nginx => "nginx",
            Gw::Haproxy => "haproxy",
        }
    }
    pub(crate) fn http_port(self) -> u16 {
        match self {
            Gw::Tollgate => 19911,
            Gw::Nginx => 19921,
            Gw::Haproxy => 19931,
        }
    }
    pub(crate) fn tls_port(self) -> u16 {
        self.http_port() + 1
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Proto {
    Http1,
    Tls1,
    H2,
}

impl Proto {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Proto::Http1 => "HTTP/1.1",
            Proto::Tls1 => "HTTP/1.1 + TLS",
            Proto::H2 => "HTTP/2 + TLS",
        }
    }
}

fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}: see {LOGS}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long after the last trial the gateways' memory is read.
const MEMORY_SETTLE: Duration = Duration::from_secs(3);

/// Resident memory (VmRSS, VmHWM) of `pid` in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Everything the benchmark starts; stopped and removed on drop (also on a panic).
struct Setup {
    children: Vec<(String, Child)>,
    ifaces: Vec<String>,
}

impl Setup {
    fn cleanup() {
        for i in ["tgbl7a0", "tgbl7b0"] {
            let _ = Command::new("ip").args(["link", "del", i]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        let _ = Command::new("umount").arg(format!("{BASE}/bpf")).output();
        let _ = std::fs::remove_dir_all(BASE);
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> u32 {
        let _ = std::fs::create_dir_all(LOGS);
        let log = std::fs::File::create(format!("{LOGS}/{name}.log")).expect("log file");
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        pid
    }

    fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("started")
            .1
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in &self.ifaces {
            let _ = Command::new("ip").args(["link", "del", i]).output();
        }
        Setup::cleanup();
    }
}

/// The YAML of the Tollgate revision: the bench route, its policies and `routes - 1` other routes.
fn tollgate_revision(routes: usize, http: u16, tls: u16) -> String {
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: edge }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n\
         \x20   - {{ name: http, port: {http}, protocol: HTTP }}\n\
         \x20   - {{ name: https, port: {tls}, protocol: HTTPS, hostname: {HOST}, tls: {{ mode: Terminate, certificateRefs: [{{ kind: Secret, name: bench-tls }}] }} }}\n\
         ---\napiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: app }}\nspec:\n  endpoints:\n    - ip: {{ address: 127.0.0.1, port: {BACKEND} }}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: bench }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n\
         \x20   - matches: [{{ path: {{ type: PathPrefix, value: /api }} }}]\n      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]\n\
         ---\napiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{ name: bench-auth }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: bench }}]\n\
         \x20 apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: bench-keys }}] }}\n\
         ---\napiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: bench-limit }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: bench }}]\n\
         \x20 limits:\n    - {{ name: per-client, key: clientIP, requests: 1000000000, per: 1s }}\n"
    );
    for i in 1..routes {
        let _ = write!(
            y,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: svc-{i:05} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n\
             \x20   - matches: [{{ path: {{ type: PathPrefix, value: /svc-{i:05} }} }}]\n      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]\n"
        );
    }
    y
}

/// The key file line of [`API_KEY`] (`consumer:sha256:salt:hash`).
fn key_line() -> String {
    let salt = b"bench-salt-0001";
    let mut h = Sha256::new();
    h.update(salt);
    h.update(API_KEY.as_bytes());
    format!(
        "bench:sha256:{}:{}\n",
        hex::encode(salt),
        hex::encode(h.finalize())
    )
}

fn nginx_backend_conf() -> String {
    format!(
        "worker_processes 2;\npid {BASE}/backend.pid;\nerror_log {BASE}/backend-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {BASE}/tmp;\n  proxy_temp_path {BASE}/tmp;\n  fastcgi_temp_path {BASE}/tmp;\n  uwsgi_temp_path {BASE}/tmp;\n  scgi_temp_path {BASE}/tmp;\n\
         \x20 keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
         \x20 server {{\n    listen 127.0.0.1:{BACKEND} backlog=4096;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

fn nginx_proxy_conf() -> String {
    let (http, tls) = (Gw::Nginx.http_port(), Gw::Nginx.tls_port());
    format!(
        "worker_processes 2;\npid {BASE}/nginx.pid;\nerror_log {BASE}/nginx-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {BASE}/tmp;\n  proxy_temp_path {BASE}/tmp;\n  fastcgi_temp_path {BASE}/tmp;\n  uwsgi_temp_path {BASE}/tmp;\n  scgi_temp_path {BASE}/tmp;\n\
         \x20 keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
         \x20 limit_req_zone $binary_remote_addr zone=perclient:10m rate=1000000r/s;\n\
         \x20 map $http_x_api_key $api_key_ok {{ \"{API_KEY}\" 1; default 0; }}\n\
         \x20 upstream app {{ server 127.0.0.1:{BACKEND}; keepalive 128; keepalive_requests 10000000; }}\n\
         \x20 server {{\n    listen 127.0.0.1:{http} backlog=4096;\n    listen 127.0.0.1:{tls} ssl http2 backlog=4096;\n\
         \x20   ssl_certificate {BASE}/tls.crt;\n    ssl_certificate_key {BASE}/tls.key;\n\
         \x20   location /api {{\n      if ($api_key_ok = 0) {{ return 401; }}\n      limit_req zone=perclient burst=1000000 nodelay;\n\
         \x20     proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         \x20     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n  }}\n}}\n"
    )
}

fn haproxy_conf() -> String {
    let (http, tls) = (Gw::Haproxy.http_port(), Gw::Haproxy.tls_port());
    format!(
        "global\n  nbthread 2\n  maxconn 8000\n  pidfile {BASE}/haproxy.pid\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  option http-keep-alive\n\
         frontend fe\n  bind 127.0.0.1:{http}\n  bind 127.0.0.1:{tls} ssl crt {BASE}/haproxy.pem alpn h2,http/1.1\n\
         \x20 stick-table type ip size 100k expire 10s store http_req_rate(1s)\n\
         \x20 http-request track-sc0 src\n\
         \x20 http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 1000000000 }}\n\
         \x20 http-request deny deny_status 401 unless {{ req.hdr(x-api-key) -m str {API_KEY} }}\n\
         \x20 option forwardfor\n\
         \x20 http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n\
         \x20 http-request set-header X-Forwarded-Proto http unless {{ ssl_fc }}\n\
         \x20 default_backend app\n\
         backend app\n  http-reuse always\n  server s1 127.0.0.1:{BACKEND} maxconn 1000\n"
    )
}

/// Starts a Tollgate agent named `name` on its own veth interface with a revision of `routes`.
fn start_agent(
    setup: &mut Setup,
    name: &str,
    iface: &str,
    routes: usize,
    ports: (u16, u16),
    admin: u16,
) -> u32 {
    let peer = format!("{}p", &iface[..iface.len() - 1]);
    sh(
        "ip",
        &["link", "add", iface, "type", "veth", "peer", "name", &peer],
    );
    setup.ifaces.push(iface.to_owned());
    sh("ip", &["link", "set", &peer, "netns", NETNS]);
    sh("ip", &["link", "set", iface, "up"]);
    let dir = format!("{BASE}/{name}");
    std::fs::create_dir_all(format!("{dir}/policy")).expect("mkdir");
    std::fs::write(
        format!("{dir}/policy/gateway.yaml"),
        tollgate_revision(routes, ports.0, ports.1),
    )
    .expect("write the revision");
    let pid = setup.spawn(
        name,
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--interface", iface, "--source"])
            .arg(format!("{dir}/policy"))
            .args(["--pin-dir", &format!("{BASE}/bpf/{name}")])
            .args(["--state-dir", &format!("{dir}/state")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--gateway-address", "127.0.0.1"])
            .args(["--tls-secrets-dir", &format!("{BASE}/secrets")])
            .args(["--access-log", "off", "--detach-on-exit"])
            .env("TOLLGATE_LOG", "warn"),
    );
    let child = setup.child(name);
    wait_listening(ports.0, name, child);
    wait_listening(ports.1, name, child);
    pid
}

fn start(setup: &mut Setup) -> (u32, u32, u32, u32, u32) {
    Setup::cleanup();
    std::fs::create_dir_all(format!("{BASE}/tmp")).expect("mkdir");
    std::fs::create_dir_all(format!("{BASE}/bpf")).expect("mkdir");
    sh("mount", &["-t", "bpf", "bpf", &format!("{BASE}/bpf")]);
    sh("ip", &["netns", "add", NETNS]);
    // One certificate for all three.
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{BASE}/tls.key"),
            "-out",
            &format!("{BASE}/tls.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={HOST}"),
            "-addext",
            &format!("subjectAltName=DNS:{HOST}"),
        ],
    );
    let crt = std::fs::read_to_string(format!("{BASE}/tls.crt")).expect("crt");
    let key = std::fs::read_to_string(format!("{BASE}/tls.key")).expect("key");
    std::fs::write(format!("{BASE}/haproxy.pem"), format!("{crt}{key}")).expect("pem");
    let secret = format!("{BASE}/secrets/default/bench-tls");
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::write(format!("{secret}/tls.crt"), &crt).expect("write");
    std::fs::write(format!("{secret}/tls.key"), &key).expect("write");
    let keys = format!("{BASE}/secrets/default/bench-keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    std::fs::write(format!("{keys}/keys"), key_line()).expect("write");

    std::fs::write(format!("{BASE}/backend.conf"), nginx_backend_conf()).expect("write");
    let backend = setup.spawn(
        "backend",
        Command::new("nginx").args([
            "-p",
            BASE,
            "-c",
            &format!("{BASE}/backend.conf"),
            "-g",
            "daemon off;",
        ]),
    );
    wait_listening(BACKEND, "backend nginx", setup.child("backend"));
    std::fs::write(format!("{BASE}/nginx.conf"), nginx_proxy_conf()).expect("write");
    let nginx = setup.spawn(
        "nginx",
        Command::new("nginx").args([
            "-p",
            BASE,
            "-c",
            &format!("{BASE}/nginx.conf"),
            "-g",
            "daemon off;",
        ]),
    );
    wait_listening(Gw::Nginx.tls_port(), "nginx", setup.child("nginx"));
    std::fs::write(format!("{BASE}/haproxy.cfg"), haproxy_conf()).expect("write");
    let haproxy = setup.spawn(
        "haproxy",
        Command::new("haproxy").args(["-db", "-f", &format!("{BASE}/haproxy.cfg")]),
    );
    wait_listening(Gw::Haproxy.tls_port(), "haproxy", setup.child("haproxy"));
    let tollgate = start_agent(
        setup,
        "tollgate",
        "tgbl7a0",
        10,
        (Gw::Tollgate.http_port(), Gw::Tollgate.tls_port()),
        19941,
    );
    let tollgate_10k = start_agent(
        setup,
        "tollgate-10k",
        "tgbl7b0",
        10_000,
        (19951, 19952),
        19942,
    );
    (backend, nginx, haproxy, tollgate, tollgate_10k)
}

/// Checks that every gateway does the work: 200 with the key, 401 without it.
fn check_work(port: u16, tls: bool, what: &str) {
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{HOST}:{port}/api/check");
    let resolve = format!("{HOST}:{port}:127.0.0.1");
    for (key, want) in [(Some(API_KEY), "200"), (None, "401")] {
        let mut args = vec![
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &resolve,
        ];
        let header = format!("x-api-key: {}", key.unwrap_or(""));
        if key.is_some() {
            args.extend(["-H", &header]);
        }
        args.push(&url);
        let code = sh("curl", &args);
        assert_eq!(code, want, "{what} {url} with key {key:?}");
    }
}

/// ns per lookup of `path` in the compiled table of a revision with `routes` routes.
fn lookup_ns(routes: usize, path: &str) -> f64 {
    let docs = Documents {
        revision: Revision {
            id: "bench".into(),
            source: "routes".into(),
        },
        files: vec![SourceFile {
            path: "gateway.yaml".into(),
            content: tollgate_revision(routes, 18000, 18443),
        }],
        cluster: None,
        unresolved: Vec::new(),
    };
    let snapshot =
        compile_documents(&docs, Some(&["bench0".to_owned()])).expect("the revision compiles");
    let port = snapshot.l7.ports.get(&18000).expect("the HTTP port");
    let headers = HeaderMap::new();
    let view = RequestView {
        host: HOST,
        path,
        method: &Method::GET,
        headers: &headers,
        query: None,
    };
    let n = 1_000_000u32;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut hits = 0usize;
        for _ in 0..n {
            hits += usize::from(
                std::hint::black_box(port)
                    .route(std::hint::black_box(&view))
                    .is_some(),
            );
        }
        samples.push(t.elapsed().as_nanos() as f64 / n as f64);
        std::hint::black_box(hits);
    }
    stats(&samples)
}

/// The section of docs/benchmarks.md.
pub fn run(report: &mut Report) {
    let quick = report.quick();
    let rounds: usize = if quick { 2 } else { 5 };
    let secs = if quick { 3 } else { 6 };
    let mut setup = Setup {
        children: Vec::new(),
        ifaces: Vec::new(),
    };
    let (backend, nginx, haproxy, tollgate, tollgate_10k) = start(&mut setup);
    let gws = [Gw::Tollgate, Gw::Nginx, Gw::Haproxy];
    for gw in gws {
        check_work(gw.http_port(), false, gw.name());
        check_work(gw.tls_port(), true, gw.name());
    }
    check_work(19951, false, "tollgate-10k");
    let pid_of = |gw: Gw| match gw {
        Gw::Tollgate => tollgate,
        Gw::Nginx => nginx,
        Gw::Haproxy => haproxy,
    };
    let protos = [Proto::Http1, Proto::Tls1, Proto::H2];
    let mut direct = Vec::new();
    let mut routes_trials: [Vec<Trial>; 2] = [Vec::new(), Vec::new()];
    let results = interleaved(
        rounds,
        &protos,
        &gws,
        |round, proto, gw, port| {
            let t = h2load(proto, port, secs, &[pid_of(gw)], backend, None);
            eprintln!(
                "round {round} {} {}: {:.0} req/s p50 {:.2} ms p99 {:.2} ms errors {} (gateway cpu {:.2}s, h2load {:.2}s, backend {:.2}s)",
                proto.name(), gw.name(), t.rps, t.p50_ms, t.p99_ms, t.errors, t.gateway_cpu, t.generator_cpu, t.backend_cpu
            );
            t
        },
        |round| {
            direct.push(h2load(Proto::Http1, BACKEND, secs, &[], backend, None));
            let agents = [(Gw::Tollgate.http_port(), tollgate), (19951, tollgate_10k)];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for idx in order {
                let (port, pid) = agents[idx];
                routes_trials[idx].push(h2load(Proto::Http1, port, secs, &[pid], backend, None));
            }
        },
    );
    // Latency at a fixed offered load: half of nginx's median throughput of each protocol.
    let nginx_max: Vec<f64> = (0..3)
        .map(|pi| stats(&results[pi][1].iter().map(|t| t.rps).collect::<Vec<_>>()))
        .collect();
    let fixed = crate::l7_latency::run(
        &protos,
        &gws,
        &nginx_max,
        &|gw| pid_of(gw),
        backend,
        rounds,
        secs,
    );
    // Resident memory once the load is over, not while the last trial's connections are
    // being torn down: every process gets the same few seconds (the agent hands freed memory
    // back within about two, `gateway_user::alloc::spawn_purger`; mem.sh settles 5 s).
    std::thread::sleep(MEMORY_SETTLE);
    let mem10 = memory_kib(tollgate);
    let mem10k = memory_kib(tollgate_10k);
    let nginx_mem: u64 = nginx_tree_rss(nginx);
    let haproxy_mem = memory_kib(haproxy);
    drop(setup);

    let mut md = String::from(
        "| protocol | gateway | requests/s (median) | vs nginx | p50 ms | p99 ms | failed | gateway CPU µs/request | gateway CPU busy | h2load CPU busy | backend CPU busy |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (pi, proto) in protos.iter().enumerate() {
        let nginx_rps = stats(&results[pi][1].iter().map(|t| t.rps).collect::<Vec<_>>());
        for (gi, gw) in gws.iter().enumerate() {
            let ts = &results[pi][gi];
            let rps = stats(&ts.iter().map(|t| t.rps).collect::<Vec<_>>());
            let p50 = stats(&ts.iter().map(|t| t.p50_ms).collect::<Vec<_>>());
            let p99 = stats(&ts.iter().map(|t| t.p99_ms).collect::<Vec<_>>());
            let errors: u64 = ts.iter().map(|t| t.errors).sum();
            let us = stats(
                &ts.iter()
                    .map(|t| t.gateway_cpu * 1e6 / (t.rps * secs as f64).max(1.0))
                    .collect::<Vec<_>>(),
            );
            let busy = |f: &dyn Fn(&Trial) -> f64| {
                stats(&ts.iter().map(|t| f(t) / t.secs * 100.0).collect::<Vec<_>>())
            };
            let _ = writeln!(
                md,
                "| {} | {} | {rps:.0} | {:.2}x | {p50:.2} | {p99:.2} | {errors} | {us:.0} | {:.0}% | {:.0}% | {:.0}% |",
                proto.name(),
                gw.name(),
                rps / nginx_rps,
                busy(&|t| t.gateway_cpu),
                busy(&|t| t.generator_cpu),
                busy(&|t| t.backend_cpu),
            );
        }
    }
    let direct_rps = stats(&direct.iter().map(|t| t.rps).collect::<Vec<_>>());
    let direct_p99 = stats(&direct.iter().map(|t| t.p99_ms).collect::<Vec<_>>());
    let _ = write!(
        md,
        "\nFor scale: h2load straight to the backend (no gateway, HTTP/1.1, same settings): {direct_rps:.0} requests/s, p99 {direct_p99:.2} ms.\n\n\
         CPU busy is CPU time over wall time of the trial (200% = both cores). {rounds} rounds of {secs} s trials (after 1 s of warm-up \
         each), gateways interleaved and the order rotated each round; medians over rounds; \"failed\" is every request that did not \
         get a 2xx, summed over rounds. Load: h2load, one thread; HTTP/1.1: 64 connections; HTTP/2: 8 connections x 16 streams. \
         The work (each gateway): route `/api`, API key in `X-Api-Key`, a per-client-address rate limit that does not trigger, \
         X-Forwarded-For/-Proto, keep-alive to one nginx backend, no access log. Configurations: `gateway-user/benches/l7.rs`.\n"
    );
    report.section("L7 proxy against nginx and haproxy", md);
    report.section("L7 latency at half of nginx's throughput", fixed);

    let r10 = stats(&routes_trials[0].iter().map(|t| t.rps).collect::<Vec<_>>());
    let r10k = stats(&routes_trials[1].iter().map(|t| t.rps).collect::<Vec<_>>());
    let us = |ts: &[Trial]| {
        stats(
            &ts.iter()
                .map(|t| t.gateway_cpu * 1e6 / (t.rps * secs as f64).max(1.0))
                .collect::<Vec<_>>(),
        )
    };
    let lookups: Vec<(usize, f64, f64, f64)> = [10usize, 10_000]
        .into_iter()
        .map(|n| {
            (
                n,
                lookup_ns(n, "/api/orders"),
                lookup_ns(n, &format!("/svc-{:05}/x", n - 1)),
                lookup_ns(n, "/nothing/here"),
            )
        })
        .collect();
    let mut md = String::from(
        "| routes | agent resident memory (VmRSS) | peak (VmHWM) | HTTP/1.1 requests/s through it (median) | agent CPU µs/request | route lookup ns: `/api/orders` | last route added | no route (404) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (n, (rss, hwm), rps, cpu, lk) in [
        (10, mem10, r10, us(&routes_trials[0]), lookups[0]),
        (10_000, mem10k, r10k, us(&routes_trials[1]), lookups[1]),
    ] {
        let _ = writeln!(
            md,
            "| {n} | {:.1} MiB | {:.1} MiB | {rps:.0} | {cpu:.0} | {:.0} | {:.0} | {:.0} |",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            lk.1,
            lk.2,
            lk.3
        );
    }
    let _ = write!(
        md,
        "\nTwo agents side by side: the revision above (10 routes) and the same plus 9,990 HTTPRoutes (`/svc-NNNNN` prefixes, \
         10,000 in all, one 2.4 MiB file), each on its own veth interface and ports; loaded in turn with the same HTTP/1.1 load \
         ({rounds} rounds, {secs} s each); memory read {} s after the load (the agent process: proxy, compiled tables, eBPF maps \
         handles, the admin server). For comparison after the same load: nginx (master and 2 workers) {:.1} MiB, haproxy \
         {:.1} MiB resident. The route lookup is timed in-process on the compiled table (the per-port index the proxy \
         uses: host, then path), median of 5 x 10^6 lookups.\n",
        MEMORY_SETTLE.as_secs(),
        nginx_mem as f64 / 1024.0,
        haproxy_mem.0 as f64 / 1024.0,
    );
    report.section(
        "L7 routes: memory and routing cost at 10 and 10,000 routes",
        md,
    );
}

/// Resident memory of nginx's master and workers, in KiB.
fn nginx_tree_rss(master: u32) -> u64 {
    let mut total = memory_kib(master).0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid: u32 = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0);
            if ppid == master {
                total += memory_kib(p).0;
            }
        }
    }
    total
}
