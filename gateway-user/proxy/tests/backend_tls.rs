//! HTTP/1.1 to TLS backends (`Backend` `spec.tls`) on the proxy's own pool: requests share a
//! verified connection, a new revision (its TLS settings built anew) never reuses a connection
//! opened under the previous one, a backend whose certificate is not trusted costs no request
//! to it, only the attempt, counted as `tls`, and a handshake that never ends is cut at the
//! connect timeout.
mod harness;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use harness::pki::Ca;
use harness::yaml::{backend, documents, gateway, route, to};
use harness::{Gateway, Options, Secrets};
use tollgate_proxy::Limits;

/// What the backend counted: TLS connections accepted (handshake done), requests served.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTP/1.1 backend over TLS on 127.0.0.1 with `pem`'s certificate (no ALPN), answering
/// `tls <SNI>` to every request.
async fn tls_backend(pem: harness::pki::Pem) -> (u16, Arc<Counts>) {
    let config = pem.server_config();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let service = service_fn(move |_req| {
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    let text = format!("tls {sni}");
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, counts)
}

/// Gateway `edge`, Backend `app` at `port` over TLS trusting `ca`, route `app` to it.
fn policy(gateway_port: u16, port: u16, ca: &str) -> String {
    let g = gateway(&[("http", gateway_port, None)]);
    let b = backend(
        "app",
        &[port],
        &format!("  tls: {{ hostname: app.internal, caCertificateRefs: [{{ name: {ca} }}] }}\n"),
    );
    let r = route(
        "app",
        &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
    );
    documents(&[&g, &b, &r])
}

fn options(ca: &Ca, other: &Ca) -> Options {
    let secrets = Secrets::new();
    secrets.ca("backend-ca", &ca.cert);
    secrets.ca("other-ca", &other.cert);
    Options {
        secrets: Some(secrets),
        // One worker: the idle connections are per worker thread, so the count of
        // connections says whether one was reused.
        limits: Limits {
            worker_threads: 1,
            ..Limits::default()
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn requests_share_a_tls_connection_and_a_new_revision_opens_its_own() {
    let ca = Ca::new("backend CA");
    let other = Ca::new("other CA");
    let (port, counts) = tls_backend(ca.server("app.internal")).await;
    let mut gw =
        Gateway::start_with(options(&ca, &other), |p| policy(p[0], port, "backend-ca")).await;
    for _ in 0..5 {
        let r = gw.get("/a").host("shop.test").send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tls app.internal");
    }
    assert_eq!(
        counts.connections.load(Ordering::SeqCst),
        1,
        "one pooled TLS connection"
    );

    // The same policy again: its TLS settings are built anew (the CA file read again), and a
    // connection verified under the previous revision's is not used under these.
    let yaml = policy(gw.port(), port, "backend-ca");
    gw.apply(&yaml).unwrap();
    for _ in 0..3 {
        let r = gw.get("/b").host("shop.test").send().await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);

    // Now trusting another CA: the backend's certificate no longer checks out, and no
    // connection of the revisions before carries a request there.
    let served = counts.requests.load(Ordering::SeqCst);
    let yaml = policy(gw.port(), port, "other-ca");
    gw.apply(&yaml).unwrap();
    let r = gw.get("/c").host("shop.test").send().await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("TLS handshake"), "{}", r.text());
    assert_eq!(counts.requests.load(Ordering::SeqCst), served);
    assert!(
        gw.count(r#"tollgate_http_upstream_errors_total{route="default/app",reason="tls"}"#) >= 1
    );
}

#[tokio::test]
async fn a_backend_that_never_answers_the_handshake_fails_the_attempt_at_the_connect_timeout() {
    let ca = Ca::new("backend CA");
    let other = Ca::new("other CA");
    // Accepts TCP connections and says nothing: the handshake never ends.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            h.lock().unwrap().push(stream);
        }
    });
    let mut opts = options(&ca, &other);
    opts.limits.connect_timeout = std::time::Duration::from_millis(300);
    let gw = Gateway::start_with(opts, |p| policy(p[0], port, "backend-ca")).await;
    let started = std::time::Instant::now();
    let r = gw.get("/a").host("shop.test").send().await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("TLS handshake"), "{}", r.text());
    // Three attempts (the default retries of a failure with nothing sent), 300 ms each: well
    // before the request timeout (30 s), and not before the handshakes had their time.
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert_eq!(held.lock().unwrap().len(), 3, "one connection per attempt");
    assert_eq!(
        gw.count(r#"tollgate_http_upstream_errors_total{route="default/app",reason="tls"}"#),
        3
    );
}
