//! Request heads on the proxy's real HTTP path, in process: the input is one client connection's
//! bytes, served by `Proxy::serve_stream` (hyper's server, HTTP/1.1 or h2c by the preface, then
//! the router: host checks, path normalisation, route matching, filters, forwarding to a
//! loopback backend). Whatever the bytes, the proxy answers or closes within a few seconds and
//! never panics (libFuzzer aborts on a panic in any thread). Oracle: when an independent parser
//! (httparse) reads a complete first request with more than one Host line, the answer to it is
//! a 4xx (RFC 9112 section 3.2: 400) or none, never a routed response.
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_model::Documents;
use tollgate_proxy::metrics::HttpMetrics;
use tollgate_proxy::{Proxy, ProxyConfig};

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: Proxy,
    port: u16,
}

/// The route table: a listener, a Backend on loopback, and rules that exercise the router's
/// match kinds and filters.
fn policy(port: u16, backend: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge }}
spec:
  gatewayClassName: tollgate
  listeners: [{{ name: http, port: {port}, protocol: HTTP }}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: {{ name: app }}
spec: {{ endpoints: [{{ ip: {{ address: 127.0.0.1, port: {backend} }} }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: app }}
spec:
  parentRefs: [{{ name: edge }}]
  hostnames: [a.example, '*.w.example']
  rules:
    - matches:
        - {{ path: {{ type: PathPrefix, value: /api }}, method: POST }}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{ set: [{{ name: x-write, value: 'true' }}], remove: [x-drop] }}
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]
    - matches:
        - {{ path: {{ type: Exact, value: /old }} }}
      filters:
        - type: RequestRedirect
          requestRedirect: {{ scheme: https, hostname: new.example, statusCode: 302 }}
    - matches:
        - {{ path: {{ type: PathPrefix, value: /v0 }} }}
      filters:
        - type: RequestRedirect
          requestRedirect: {{ path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /v1 }}, statusCode: 301 }}
    - matches:
        - path: {{ type: PathPrefix, value: /static }}
          headers: [{{ name: x-v, value: '2' }}]
          queryParams: [{{ name: q, value: x }}]
      filters:
        - type: URLRewrite
          urlRewrite: {{ hostname: b.internal, path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /assets }} }}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {{ set: [{{ name: cache-control, value: 'max-age=1' }}] }}
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]
"
    )
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // libFuzzer's main is not Rust's, which ignores SIGPIPE (as the agent does): without
        // this, a write to a socket the backend closed would kill the harness.
        // SAFETY: setting a signal's disposition to SIG_IGN runs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (proxy, port) = runtime.block_on(async {
            // The backend: 200 with a small body, for whatever it is sent.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the backend");
            let backend = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let service = service_fn(|_req| async {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let docs = Documents::inline(&[("l7.yaml", &policy(port, backend))]);
            let snapshot = tollgate_compile::snapshot::compile_documents(&docs, None)
                .unwrap_or_else(|e| panic!("the fuzz policy compiles: {e}"));
            let config = ProxyConfig {
                address: [127, 0, 0, 1].into(),
                ..ProxyConfig::default()
            };
            let mut registry = prometheus_client::registry::Registry::default();
            let proxy = Proxy::new(config, HttpMetrics::register(&mut registry));
            let prepared = proxy.prepare(&snapshot.l7).expect("bind the listener");
            proxy.commit(prepared, "fuzz");
            (proxy, port)
        });
        Harness {
            runtime,
            proxy,
            port,
        }
    })
}

/// The first request of `data` as httparse reads it, when it is complete: how many Host lines.
fn host_lines(data: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(data) {
        Ok(httparse::Status::Complete(_)) => Some(
            request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"))
                .count(),
        ),
        _ => None,
    }
}

/// The status of the first response in `out`, if it is an HTTP/1 response.
fn first_status(out: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(out.get(..12)?).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    rest.parse().ok()
}

/// Written after the input: it completes a head left open (`\r\n\r\n`) and is then a request
/// the proxy answers and closes the connection after, so that a complete input ends at once.
/// (Half-closing instead would not do: hyper drops a request whose client half-closes before
/// the answer, so the router would never run.)
const SENTINEL: &[u8] =
    b"\r\n\r\nGET /fuzz-end HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";

/// How long the proxy may stay silent, its input all written, before the harness closes its
/// side: an input can leave the proxy waiting for bytes that will never come (a body shorter
/// than its Content-Length swallows the sentinel).
const STALL: Duration = Duration::from_millis(50);

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let out = h.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let serve = h.proxy.serve_stream(h.port, server, peer);
        let talk = async {
            let mut out = Vec::new();
            // The proxy may close before reading everything: a failed write is an answer.
            if client.write_all(data).await.is_ok() && client.write_all(SENTINEL).await.is_ok() {
                let mut buf = [0u8; 8192];
                loop {
                    match tokio::time::timeout(STALL, client.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return out,
                        Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                        Err(_) => break, // stalled
                    }
                }
            }
            let _ = client.shutdown().await;
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let ((), out) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(serve, talk) })
                .await
                .unwrap_or_else(|_| panic!("the proxy neither answered nor closed within 10 s"));
        out
    });
    // No answer at all is a refusal too: hyper closes without one when a request it cannot
    // read is followed by the HTTP/2 preface (it takes the client for an h2 one).
    if let Some(hosts) = host_lines(data).filter(|&n| n > 1) {
        let status = first_status(&out);
        assert!(
            out.is_empty() || status.is_some_and(|s| (400..500).contains(&s)),
            "{hosts} Host lines answered with {status:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
});
