//! In-process test harness of the L7 proxy: no root, no network namespace, no binary. The
//! proxy runs in the test's own tokio runtime, configured the way the agent configures it: the
//! policy is YAML compiled by `tollgate_compile` ([`compile_documents`]), then
//! [`Proxy::prepare`] and [`Proxy::commit`], with the listeners on 127.0.0.1 at ports the OS
//! handed out. Backends ([`backend::Backend`]) are small hyper servers on 127.0.0.1:0 in the
//! same process that record what they received and answer as scripted; the client
//! ([`client::Request`]) is hyper's, over HTTP/1.1 or h2c, or TLS with rustls; credentials and
//! certificates ([`secrets::Secrets`], [`pki::Ca`]) are made by the test in a temporary
//! directory. See docs/testing.md.
//!
//! Each test binary uses a different part of the harness, so the parts one of them leaves
//! unused are not dead code.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod client;
pub mod pki;
pub mod secrets;
pub mod yaml;

use std::net::{IpAddr, Ipv4Addr, TcpListener};

use prometheus_client::registry::Registry;
use tollgate_compile::snapshot::compile_documents;
use tollgate_model::Documents;
use tollgate_proxy::metrics::HttpMetrics;
use tollgate_proxy::{Limits, Proxy, ProxyConfig, ProxyError};

pub use backend::{Backend, Received, Step};
pub use client::{Reply, Request};
pub use secrets::Secrets;

/// How often a start is tried again when another process took one of the ports picked for
/// the listeners between the pick and the proxy's bind.
const BIND_TRIES: usize = 20;

/// A running proxy and what it was started with. Dropping it stops the proxy.
pub struct Gateway {
    proxy: Proxy,
    registry: Registry,
    /// The listener ports, in the order the policy function was given them.
    pub ports: Vec<u16>,
    /// The secrets directory the proxy reads credentials and certificates from.
    pub secrets: Secrets,
    revisions: usize,
}

/// How to start a [`Gateway`].
pub struct Options {
    /// Number of free ports handed to the policy function.
    pub ports: usize,
    /// Limits of the proxy (the binary's defaults unless changed).
    pub limits: Limits,
    /// The secrets directory (an empty one unless given).
    pub secrets: Option<Secrets>,
    /// Peers whose `X-Forwarded-For` is believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ports: 1,
            limits: Limits::default(),
            secrets: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0 by the OS, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Compiles `yaml` as one file of a revision, the way the agent compiles a revision.
pub fn compile(yaml: &str) -> Result<tollgate_compile::snapshot::Snapshot, String> {
    let docs = Documents::inline(&[("policy.yaml", yaml)]);
    compile_documents(&docs, None).map_err(|e| e.to_string())
}

impl Gateway {
    /// A proxy with one listener port, serving `policy(port)`.
    pub async fn start(policy: impl Fn(u16) -> String) -> Gateway {
        Gateway::start_with(Options::default(), |ports| policy(ports[0])).await
    }

    /// A proxy with `options.ports` listener ports, serving `policy(ports)`. Must be called
    /// inside a tokio runtime (the proxy accepts on it).
    pub async fn start_with(options: Options, policy: impl Fn(&[u16]) -> String) -> Gateway {
        let secrets = options.secrets.unwrap_or_default();
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let config = ProxyConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            limits: options.limits,
            tls_secrets_dir: secrets.path().to_owned(),
            trusted_proxies: options.trusted_proxies,
            ..ProxyConfig::default()
        };
        let proxy = Proxy::new(config, metrics);
        for _ in 0..BIND_TRIES {
            let ports: Vec<u16> = (0..options.ports).map(|_| free_port()).collect();
            let yaml = policy(&ports);
            let snapshot = compile(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            match proxy.prepare(&snapshot.l7) {
                Ok(prepared) => {
                    proxy.commit(prepared, "r1");
                    return Gateway {
                        proxy,
                        registry,
                        ports,
                        secrets,
                        revisions: 1,
                    };
                }
                // Someone took the port since it was picked: pick again.
                Err(ProxyError::Listen { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    continue
                }
                Err(e) => panic!("the revision is refused: {e}\n{yaml}"),
            }
        }
        panic!("no free ports for the listeners after {BIND_TRIES} tries");
    }

    /// The first listener port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Applies another revision, as the agent does on a reload: compiled, prepared (its
    /// files loaded, new ports bound), committed. On an error nothing changes, and the error
    /// is returned as the agent would log it.
    pub fn apply(&mut self, yaml: &str) -> Result<(), String> {
        let snapshot = compile(yaml)?;
        let prepared = self
            .proxy
            .prepare(&snapshot.l7)
            .map_err(|e| e.to_string())?;
        self.revisions += 1;
        self.proxy.commit(prepared, &format!("r{}", self.revisions));
        Ok(())
    }

    /// The proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// A request to the first listener port.
    pub fn request(&self, method: &str, path: &str) -> Request {
        Request::new(self.port(), method, path)
    }

    /// A GET to the first listener port.
    pub fn get(&self, path: &str) -> Request {
        self.request("GET", path)
    }

    /// The metrics, in the Prometheus text format (as the admin port serves them).
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encode the metrics");
        text
    }

    /// The value of the series `series` (name and labels exactly as exposed, e.g.
    /// `tollgate_http_requests_total{route="default/app",method="GET",code="200"}`); `None`
    /// when it is not exposed.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics();
        text.lines().find_map(|l| {
            let value = l.strip_prefix(series)?.strip_prefix(' ')?;
            value.split(' ').next()?.parse().ok()
        })
    }

    /// As [`Gateway::metric`], 0 when the series is not exposed (a counter never incremented).
    pub fn count(&self, series: &str) -> u64 {
        self.metric(series).unwrap_or(0.0) as u64
    }
}
