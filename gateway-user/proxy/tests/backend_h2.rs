//! HTTP/2 to backends (`appProtocol`): an h2c backend (hyper, HTTP/2 only) reached from
//! HTTP/1.1 and h2c clients, one multiplexed connection per endpoint, connections the backend
//! closes replaced, and an HTTP/2 backend over TLS chosen with ALPN (and one that does not
//! speak it refused).
mod harness;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use harness::pki::Ca;
use harness::yaml::{backend, documents, gateway, route, to};
use harness::{Gateway, Options, Secrets};
use tollgate_proxy::Limits;

/// A request as the HTTP/2 backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    authority: Option<String>,
    host: Option<String>,
    target: String,
    body: Bytes,
    forwarded_for: Option<String>,
}

#[derive(Default)]
struct H2State {
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

/// How the test backend serves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// HTTP/2 in cleartext (prior knowledge).
    H2c,
    /// HTTP/2 in cleartext; each connection is closed (GOAWAY) after its first response.
    H2cOneRequest,
    /// TLS with ALPN `h2` offered, then HTTP/2.
    TlsH2,
    /// TLS with ALPN `http/1.1` only, then HTTP/1.1.
    TlsHttp1,
}

async fn answer(req: Request<Incoming>, state: Arc<H2State>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
    };
    let seen = Seen {
        version: parts.version,
        authority: parts.uri.authority().map(|a| a.to_string()),
        host: header("host"),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string()),
        body,
        forwarded_for: header("x-forwarded-for"),
    };
    let text = format!("{:?} {}", seen.version, seen.target);
    state.seen.lock().unwrap().push(seen);
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert("x-backend", "h2".parse().unwrap());
    resp
}

/// A backend on 127.0.0.1 serving as `mode` says; `tls` is its certificate and key.
async fn h2_backend(mode: Mode, tls: Option<harness::pki::Pem>) -> (u16, Arc<H2State>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(H2State::default());
    let acceptor = tls.map(|pem| {
        let mut config = pem.server_config();
        config.alpn_protocols = match mode {
            Mode::TlsHttp1 => vec![b"http/1.1".to_vec()],
            _ => vec![b"h2".to_vec()],
        };
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            s.connections.fetch_add(1, Ordering::Relaxed);
            let state = s.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req, state).await) }
                });
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match (mode, acceptor) {
                    (Mode::H2c, _) => {
                        let _ = h2.serve_connection(TokioIo::new(stream), service).await;
                    }
                    (Mode::H2cOneRequest, _) => {
                        let served = Arc::new(tokio::sync::Notify::new());
                        let done = served.clone();
                        let once = service_fn(move |req| {
                            let service = service.clone();
                            let done = done.clone();
                            async move {
                                let r = hyper::service::Service::call(&service, req).await;
                                done.notify_one();
                                r
                            }
                        });
                        let conn = h2.serve_connection(TokioIo::new(stream), once);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = served.notified() => {}
                        }
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    (Mode::TlsH2, Some(a)) => {
                        let Ok(tls) = a.accept(stream).await else {
                            return;
                        };
                        let _ = h2.serve_connection(TokioIo::new(tls), service).await;
                    }
                    (Mode::TlsHttp1, Some(a)) => {
                        let Ok(tls) = a.accept(stream).await else {
                            return;
                        };
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                    _ => unreachable!("a TLS mode without a certificate"),
                }
            });
        }
    });
    (port, state)
}

/// Gateway `edge`, Backend `app` at `port` with `extra` in its spec, route `app` to it.
fn policy(gateway_port: u16, port: u16, extra: &str) -> String {
    let g = gateway(&[("http", gateway_port, None)]);
    let b = backend("app", &[port], extra);
    let r = route(
        "app",
        &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
    );
    documents(&[&g, &b, &r])
}

const H2C: &str = "  appProtocol: kubernetes.io/h2c\n";

#[tokio::test]
async fn an_h2c_backend_is_reached_from_http1_and_h2c_clients() {
    let (port, state) = h2_backend(Mode::H2c, None).await;
    let gw = Gateway::start(|p| policy(p, port, H2C)).await;

    let r = gw.get("/a/b?x=1").host("shop.test:8080").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.text(), "HTTP/2.0 /a/b?x=1");
    let r = gw
        .request("POST", "/orders")
        .host("shop.test")
        .h2()
        .body("an order")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.text(), "HTTP/2.0 /orders");

    let seen = state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.version, Version::HTTP_2);
        // The client's host is the :authority; no Host header besides it (RFC 9113 8.3.1).
        assert_eq!(s.host, None);
        assert_eq!(s.forwarded_for.as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(seen[0].authority.as_deref(), Some("shop.test:8080"));
    assert_eq!(seen[1].authority.as_deref(), Some("shop.test"));
    assert_eq!(&seen[1].body[..], b"an order");
    assert_eq!(
        gw.count(r#"tollgate_http_requests_total{route="default/app",method="POST",code="200"}"#),
        1
    );
}

#[tokio::test]
async fn requests_to_an_h2c_backend_share_one_connection() {
    let (port, state) = h2_backend(Mode::H2c, None).await;
    let options = Options {
        limits: Limits {
            worker_threads: 1,
            ..Limits::default()
        },
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| policy(p[0], port, H2C)).await;
    let requests = (0..20).map(|i| {
        let req = gw.get(&format!("/n/{i}"));
        async move { req.send().await }
    });
    let replies = futures_util::future::join_all(requests).await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("HTTP/2.0 /n/{i}"));
    }
    assert_eq!(state.seen.lock().unwrap().len(), 20);
    assert_eq!(
        state.connections.load(Ordering::Relaxed),
        1,
        "20 concurrent requests, one multiplexed connection"
    );
}

#[tokio::test]
async fn a_connection_the_backend_closes_is_replaced() {
    let (port, state) = h2_backend(Mode::H2cOneRequest, None).await;
    let gw = Gateway::start(|p| policy(p, port, H2C)).await;
    for i in 0..5 {
        let r = gw.get(&format!("/{i}")).send().await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        // Let the GOAWAY arrive, or not: either way the request must not fail.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(state.seen.lock().unwrap().len(), 5);
    // A request sent right after a response (no pause) may reach the backend before its
    // GOAWAY leaves, on the closing connection, which then still serves it; after a pause the
    // GOAWAY has arrived and the request needs a new connection. So requests 0, 1 and 3 open
    // one each, and 2 and 4 may or may not.
    let connections = state.connections.load(Ordering::Relaxed);
    assert!(
        (3..=5).contains(&connections),
        "5 requests to a backend that closes each connection after one response: {connections} connections"
    );
}

#[tokio::test]
async fn an_h2c_backend_that_is_down_answers_503() {
    let port = harness::free_port();
    let gw = Gateway::start(|p| policy(p, port, H2C)).await;
    let r = gw.get("/").send().await;
    assert_eq!(r.status, 503, "{}", r.text());
    // Each attempt (the first and the retries a connection never made always gets) counted.
    assert!(
        gw.count(r#"tollgate_http_upstream_errors_total{route="default/app",reason="connect"}"#)
            >= 1
    );
}

fn tls_backend_spec(protocol: &str) -> String {
    format!("  tls: {{ hostname: h2.internal, caCertificateRefs: [{{ name: backend-ca }}] }}\n  appProtocol: {protocol}\n")
}

#[tokio::test]
async fn a_tls_backend_is_spoken_to_in_http2_chosen_by_alpn() {
    let ca = Ca::new("backend CA");
    let (port, state) = h2_backend(Mode::TlsH2, Some(ca.server("h2.internal"))).await;
    let secrets = Secrets::new();
    secrets.ca("backend-ca", &ca.cert);
    let options = Options {
        secrets: Some(secrets),
        limits: Limits {
            worker_threads: 1,
            ..Limits::default()
        },
        ..Options::default()
    };
    let spec = tls_backend_spec("tollgate.dev/h2");
    let gw = Gateway::start_with(options, |p| policy(p[0], port, &spec)).await;
    for client_h2 in [false, true] {
        let req = gw.get("/secure").host("api.test");
        let req = if client_h2 { req.h2() } else { req };
        let r = req.send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "HTTP/2.0 /secure");
    }
    let seen = state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(seen[0].authority.as_deref(), Some("api.test"));
    assert_eq!(state.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_tls_backend_that_does_not_select_h2_fails_the_attempt_as_tls() {
    let ca = Ca::new("backend CA");
    let (port, state) = h2_backend(Mode::TlsHttp1, Some(ca.server("h2.internal"))).await;
    let secrets = Secrets::new();
    secrets.ca("backend-ca", &ca.cert);
    let options = Options {
        secrets: Some(secrets),
        ..Options::default()
    };
    let spec = tls_backend_spec("tollgate.dev/h2");
    let gw = Gateway::start_with(options, |p| policy(p[0], port, &spec)).await;
    let r = gw.get("/secure").send().await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("TLS"), "{}", r.text());
    assert!(state.seen.lock().unwrap().is_empty());
    assert!(
        gw.count(r#"tollgate_http_upstream_errors_total{route="default/app",reason="tls"}"#) >= 1
    );

    // The same server as an HTTP/1.1 TLS backend (`kubernetes.io/wss`) serves.
    let secrets = Secrets::new();
    secrets.ca("backend-ca", &ca.cert);
    let options = Options {
        secrets: Some(secrets),
        ..Options::default()
    };
    let spec = tls_backend_spec("kubernetes.io/wss");
    let gw = Gateway::start_with(options, |p| policy(p[0], port, &spec)).await;
    let r = gw.get("/secure").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "HTTP/1.1 /secure");
}
