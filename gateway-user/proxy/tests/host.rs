//! The request's host, in process: exact bytes go through hyper's HTTP/1 parser (and an h2c
//! client) into the proxy's router ([`Proxy::serve_stream`]), with a real backend on loopback
//! that echoes the `Host` it was sent. RFC 9112 section 3.2 (one valid `Host`, required in
//! HTTP/1.1), section 3.2.2 (absolute form), RFC 9110 section 4.2.4 (userinfo), RFC 9113
//! section 8.3.1 (`Host` against `:authority`); and the request-target forms against
//! `Max-Forwards` (RFC 9112 section 3.2, RFC 9110 section 7.6.2).
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use tollgate_model::Documents;
use tollgate_proxy::metrics::HttpMetrics;
use tollgate_proxy::{Proxy, ProxyConfig};

/// A backend that answers 200 with the `Host` it got, and remembers the paths it saw.
async fn backend() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        log.lock().await.push(req.uri().path().to_owned());
                        let host = req
                            .headers()
                            .get_all(http::header::HOST)
                            .iter()
                            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                            .collect::<Vec<_>>()
                            .join(",");
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                            "host={host}"
                        )))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, seen)
}

/// A free loopback port for the Gateway listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A proxy routing `a.example` on `port` to a backend on `backend`.
fn proxy(port: u16, backend: u16) -> Proxy {
    let yaml = format!(
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
  rules: [{{ backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}] }}]
"
    );
    let docs = Documents::inline(&[("l7.yaml", &yaml)]);
    let snapshot = tollgate_compile::snapshot::compile_documents(&docs, None)
        .unwrap_or_else(|e| panic!("the test policy compiles: {e}"));
    let config = ProxyConfig {
        address: [127, 0, 0, 1].into(),
        ..ProxyConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let proxy = Proxy::new(config, HttpMetrics::register(&mut registry));
    let prepared = proxy.prepare(&snapshot.l7).expect("bind the listener");
    proxy.commit(prepared, "test");
    proxy
}

/// Writes `request` on a fresh connection, with `Connection: close` added after the request
/// line, and returns everything the proxy answered before it closed the connection. (The
/// write side stays open: hyper drops a request whose client half-closes before the answer.)
async fn raw(proxy: &Proxy, port: u16, request: &[u8]) -> String {
    let line_end = request
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a request line")
        + 2;
    let mut bytes = request[..line_end].to_vec();
    bytes.extend_from_slice(b"Connection: close\r\n");
    bytes.extend_from_slice(&request[line_end..]);
    exact(proxy, port, &bytes).await
}

/// Writes `bytes` on a fresh connection and returns everything the proxy answered before it
/// closed the connection.
async fn exact(proxy: &Proxy, port: u16, bytes: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let peer: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let serve = proxy.serve_stream(port, server, peer);
    let talk = async {
        client.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        out
    };
    let ((), out): ((), Vec<u8>) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(serve, talk) })
            .await
            .expect("the proxy answers and closes within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| response.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.x response: {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_headers_are_checked_as_rfc_9112_section_3_2_says() {
    let (backend_port, seen) = backend().await;
    let port = free_port();
    let proxy = proxy(port, backend_port);

    let ok = raw(&proxy, port, b"GET /ok HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.ends_with("host=a.example"), "{ok}");

    let refused: &[(&str, &[u8])] = &[
        (
            "two Host lines, the first one routable",
            b"GET /refused HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
        (
            "the same Host twice",
            b"GET /refused HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        ),
        (
            "two Host lines in HTTP/1.0",
            b"GET /refused HTTP/1.0\r\nHost: a.example\r\nhost: a.example\r\n\r\n",
        ),
        ("no Host in HTTP/1.1", b"GET /refused HTTP/1.1\r\n\r\n"),
        (
            "no Host in HTTP/1.1, absolute form",
            b"GET http://a.example/refused HTTP/1.1\r\n\r\n",
        ),
        (
            "a path in Host",
            b"GET /refused HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
        ),
        (
            "userinfo in Host",
            b"GET /refused HTTP/1.1\r\nHost: u@a.example\r\n\r\n",
        ),
        (
            "a space in Host",
            b"GET /refused HTTP/1.1\r\nHost: a.example b\r\n\r\n",
        ),
        (
            "a port out of range",
            b"GET /refused HTTP/1.1\r\nHost: a.example:65536\r\n\r\n",
        ),
        (
            "a port that is not a number",
            b"GET /refused HTTP/1.1\r\nHost: a.example:http\r\n\r\n",
        ),
        (
            "a bracketed name that is not IPv6",
            b"GET /refused HTTP/1.1\r\nHost: [a.example]\r\n\r\n",
        ),
        (
            "a bad percent escape",
            b"GET /refused HTTP/1.1\r\nHost: a%zz.example\r\n\r\n",
        ),
        (
            "userinfo in the request target",
            b"GET http://u:p@a.example/refused HTTP/1.1\r\nHost: a.example\r\n\r\n",
        ),
    ];
    for (name, request) in refused {
        let response = raw(&proxy, port, request).await;
        assert_eq!(status(&response), 400, "{name}:\n{response}");
    }

    // Valid forms: the default port spelled out, an empty port, a trailing dot, upper case.
    for host in ["a.example:80", "a.example:", "a.example.", "A.Example"] {
        let request = format!("GET /ok HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let response = raw(&proxy, port, request.as_bytes()).await;
        assert_eq!(status(&response), 200, "Host: {host}\n{response}");
    }
    // Absolute form: Host is ignored (RFC 9112 section 3.2.2 says MUST), the target's
    // authority routes the request and is what the backend is sent.
    let response = raw(
        &proxy,
        port,
        b"GET http://a.example/ok HTTP/1.1\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(status(&response), 200, "{response}");
    assert!(response.ends_with("host=a.example"), "{response}");

    // The connection is closed after such a 400: what follows is never read as a request.
    let response = exact(
        &proxy,
        port,
        b"GET /refused HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\nGET /refused HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status(&response), response.matches("HTTP/1.1 ").count()),
        (400, 1),
        "{response}"
    );

    assert!(
        !seen.lock().await.iter().any(|p| p == "/refused"),
        "a refused request reached the backend: {:?}",
        seen.lock().await
    );
}

/// Found by the http_head fuzz target: hyper answers nothing (it closes the connection) when a
/// request it cannot read is followed by the HTTP/2 preface, taking the client for an h2 one.
/// That is still a refusal: the request never reaches the router or the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_followed_by_the_http2_preface_is_closed_unanswered_and_never_routed() {
    let (backend_port, seen) = backend().await;
    let port = free_port();
    let proxy = proxy(port, backend_port);
    let response = exact(
        &proxy,
        port,
        b"GET q#x HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    )
    .await;
    assert_eq!(response, "");
    // Without the preface, hyper's own 400.
    let response = exact(&proxy, port, b"GET q#x HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(status(&response), 400, "{response}");
    assert!(seen.lock().await.is_empty(), "{:?}", seen.lock().await);
}

/// Sends one HTTP/2 (h2c, prior knowledge) GET for `uri` with the given `host` headers;
/// returns the status.
async fn h2(proxy: &Proxy, port: u16, uri: &str, hosts: &[&str]) -> u16 {
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer: SocketAddr = "192.0.2.10:40001".parse().unwrap();
    let serve = proxy.serve_stream(port, server, peer);
    let talk = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let mut request = http::Request::get(uri);
        for h in hosts {
            request = request.header(http::header::HOST, *h);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("an h2 response");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    };
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            _ = serve => panic!("the connection ended before the response"),
            s = talk => s,
        }
    })
    .await;
    result.expect("the proxy answers within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_host_header_must_name_the_authority_of_the_request() {
    let (backend_port, _) = backend().await;
    let port = free_port();
    let proxy = proxy(port, backend_port);
    assert_eq!(h2(&proxy, port, "http://a.example/", &[]).await, 200);
    assert_eq!(
        h2(&proxy, port, "http://a.example/", &["a.example"]).await,
        200
    );
    assert_eq!(
        h2(&proxy, port, "http://a.example/", &["a.example:80"]).await,
        200
    );
    assert_eq!(
        h2(&proxy, port, "http://a.example/", &["b.example"]).await,
        400
    );
    assert_eq!(
        h2(&proxy, port, "http://a.example/", &["a.example:81"]).await,
        400
    );
    assert_eq!(
        h2(
            &proxy,
            port,
            "http://a.example/",
            &["a.example", "a.example"]
        )
        .await,
        400
    );
}

/// The request-target forms are checked before `Max-Forwards: 0` makes the proxy the final
/// recipient of a TRACE or OPTIONS (RFC 9112 section 3.2: the asterisk form is for OPTIONS only,
/// the authority form for CONNECT only): such a request gets 400, not an answer or an echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_zero_does_not_answer_a_target_form_the_method_may_not_use() {
    let (backend_port, seen) = backend().await;
    let port = free_port();
    let proxy = proxy(port, backend_port);

    let refused: &[(&str, &[u8])] = &[
        (
            "TRACE * with Max-Forwards: 0",
            b"TRACE * HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n",
        ),
        (
            "OPTIONS in authority form with Max-Forwards: 0",
            b"OPTIONS a.example:80 HTTP/1.1\r\nHost: a.example:80\r\nMax-Forwards: 0\r\n\r\n",
        ),
        (
            "TRACE in authority form with Max-Forwards: 0",
            b"TRACE a.example:80 HTTP/1.1\r\nHost: a.example:80\r\nMax-Forwards: 0\r\n\r\n",
        ),
        ("TRACE *", b"TRACE * HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        (
            "OPTIONS in authority form",
            b"OPTIONS a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\n",
        ),
    ];
    for (name, request) in refused {
        let response = raw(&proxy, port, request).await;
        assert_eq!(status(&response), 400, "{name}:\n{response}");
        assert!(
            !response.contains("message/http") && !response.contains("allow:"),
            "{name}:\n{response}"
        );
    }

    // What Max-Forwards: 0 is for still works: OPTIONS * and an OPTIONS or TRACE of a path
    // are answered by the proxy.
    for request in [
        &b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n"[..],
        b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"OPTIONS /mf HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n",
    ] {
        let response = raw(&proxy, port, request).await;
        assert_eq!(status(&response), 200, "{response}");
        assert!(
            response.contains("allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"),
            "{response}"
        );
    }
    let response = raw(
        &proxy,
        port,
        b"TRACE /mf HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&response), 200, "{response}");
    assert!(response.contains("message/http"), "{response}");

    assert!(seen.lock().await.is_empty(), "{:?}", seen.lock().await);
}
