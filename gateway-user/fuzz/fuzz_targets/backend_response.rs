//! Backend responses on the proxy's lean HTTP/1.1 client path, in process: the input is what a
//! backend answers to a request with no body (GET, or HEAD), which the proxy parses (httparse)
//! and relays by its framing: Content-Length, chunked with trailers, the close; 1xx interim
//! responses dropped; no body for HEAD, 204, 304. The first input byte picks the method (even:
//! HEAD, odd: GET, so that a seed starting with `G` or `H` says which), the rest is the
//! backend's answer. Whatever the bytes, the proxy answers and closes within a few seconds and
//! never panics (libFuzzer aborts on a panic in any thread). Oracle: when an independent parser
//! (httparse) reads a complete final response head whose framing the proxy must refuse (RFC
//! 9112 section 6.3; see `must_refuse`), the client gets a 502 or nothing, never the backend's
//! response.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_model::Documents;
use tollgate_proxy::metrics::HttpMetrics;
use tollgate_proxy::{Limits, Proxy, ProxyConfig};

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: Proxy,
    port: u16,
    /// What the backend answers to the next request: the current input.
    answer: Arc<Mutex<Bytes>>,
}

/// The route table: a listener, a Backend on loopback, one route to it for `a.example`.
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
  hostnames: [a.example]
  rules:
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]
"
    )
}

/// The backend: for each connection, reads one request head, writes the current answer and
/// closes (which ends a close-delimited body, and any other body cut short). The head is read
/// whole first so that nothing is left unread at the close, which would reset the connection
/// and could discard the answer before the proxy reads it.
async fn backend(listener: tokio::net::TcpListener, answer: Arc<Mutex<Bytes>>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return, // the proxy gave up: nothing to answer
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            // Taken once the request came: it was sent after its iteration set the answer.
            let bytes = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // The proxy may stop reading (a head it refused): a failed write is fine.
            let _ = stream.write_all(&bytes).await;
        });
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // libFuzzer's main is not Rust's, which ignores SIGPIPE (as the agent does): without
        // this, a write to a socket the other side closed would kill the harness.
        // SAFETY: setting a signal's disposition to SIG_IGN runs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let answer = Arc::new(Mutex::new(Bytes::new()));
        let (proxy, port) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the backend");
            let backend_port = listener.local_addr().unwrap().port();
            tokio::spawn(backend(listener, answer.clone()));
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let docs = Documents::inline(&[("l7.yaml", &policy(port, backend_port))]);
            let snapshot = tollgate_compile::snapshot::compile_documents(&docs, None)
                .unwrap_or_else(|e| panic!("the fuzz policy compiles: {e}"));
            let config = ProxyConfig {
                address: [127, 0, 0, 1].into(),
                // No pooled backend connections: the backend closes each one after its
                // answer, so a pooled one is stale, and whether the proxy has seen the close
                // before the next request takes it is a race (a reused one that turns out
                // closed after the request was written is answered 503, not 502). Every
                // request on a new connection keeps the oracle exact.
                limits: Limits {
                    pool_max_idle_per_endpoint: 0,
                    ..Limits::default()
                },
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
            answer,
        }
    })
}

/// Why the proxy must refuse `answer` (a 502, never a relay), when httparse reads its first
/// head as a complete final response (2xx to 5xx: an interim one would be dropped and the
/// next one judged, which this oracle leaves alone). Only cases the proxy refuses whatever
/// else the head holds (any other fault of the head is a 502 too):
/// - `Transfer-Encoding` with a coding in it, and `Content-Length` (RFC 9112 section 6.1: a
///   sender must not send both; the router refuses it for any status and method);
/// - two `Content-Length` values that are numbers and differ, without `Transfer-Encoding`
///   (which would override it), when the length frames the body: not for HEAD, 204 or 304
///   (RFC 9112 section 6.3, rules 1 and 5).
fn must_refuse(answer: &[u8], head_request: bool) -> Option<&'static str> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut response = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = response.parse(answer) else {
        return None;
    };
    let code = response.code?;
    if !(200..600).contains(&code) {
        return None;
    }
    let values = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    let has_length = values("content-length").next().is_some();
    let has_coding = values("transfer-encoding")
        .any(|v| v.split(|&b| b == b',').any(|c| !c.trim_ascii().is_empty()));
    if has_coding && has_length {
        return Some("Transfer-Encoding with Content-Length");
    }
    if head_request || code == 204 || code == 304 || values("transfer-encoding").next().is_some() {
        return None;
    }
    let mut numbers = values("content-length").filter_map(|v| {
        let digits = !v.is_empty() && v.iter().all(u8::is_ascii_digit);
        digits.then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())?
    });
    let first = numbers.next()?;
    numbers
        .any(|n| n != first)
        .then_some("two different Content-Length values")
}

/// The status of the first response in `out`, if it is an HTTP/1 response.
fn first_status(out: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(out.get(..12)?).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    rest.parse().ok()
}

/// How long an iteration may take: the backend answers at once and closes, so the proxy has
/// all it will ever get within milliseconds; a proxy still silent and open after this is stuck.
const DEADLINE: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (head_request, answer) = match data.split_first() {
        Some((&first, rest)) => (first % 2 == 0, rest),
        None => (false, data),
    };
    *h.answer.lock().unwrap_or_else(|e| e.into_inner()) = Bytes::copy_from_slice(answer);
    // `Connection: close` (hop-by-hop: the backend never sees it) so that the proxy closes the
    // client connection after its answer: the end of the answer is the end of the stream, with
    // no guess at when a kept-alive connection has said all it will.
    let request = format!(
        "{} /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        if head_request { "HEAD" } else { "GET" }
    );
    let out = h.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let serve = h.proxy.serve_stream(h.port, server, peer);
        let talk = async {
            let mut out = Vec::new();
            // The proxy may close before reading the request: a failed write is an answer.
            if client.write_all(request.as_bytes()).await.is_ok() {
                let _ = client.read_to_end(&mut out).await;
            }
            out
        };
        let ((), out) = tokio::time::timeout(DEADLINE, async { tokio::join!(serve, talk) })
            .await
            .unwrap_or_else(|_| {
                panic!("the proxy neither answered nor closed within {DEADLINE:?}")
            });
        out
    });
    // No answer at all is a refusal too (the connection closed without a response).
    if let Some(why) = must_refuse(answer, head_request) {
        let status = first_status(&out);
        assert!(
            out.is_empty() || status == Some(502),
            "{why}: answered with {status:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
});
