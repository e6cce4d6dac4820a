//! What becomes of a backend's answer on its way to the client, in process, against a backend
//! that writes raw bytes (answers no HTTP library would write), on both HTTP/1.1 backend paths
//! (GET: the lean path; POST with a body: hyper's client): an unasked `101` and a status past
//! 599 are answered 502 and their connection is not used again (RFC 9110 sections 15.2.2, 15);
//! an HTTP/1.0 backend's answer reaches the client in HTTP/1.1 on a connection it keeps (RFC
//! 9110 section 2.5); trailers reach HTTP/2 clients without the fields a trailer may not carry
//! (RFC 9110 sections 6.5.1, 7.6.1; RFC 9113 section 8.2.2); identical `Content-Length`
//! values (two fields, or a list) reach clients as one (RFC 9110 section 8.6).
mod harness;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use harness::yaml::one_route;
use harness::Gateway;
use http::{HeaderMap, Method, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The answer to a request for `path`, and whether the backend closes the connection after it.
fn answer(path: &str) -> (&'static [u8], bool) {
    match path {
        "/101" => (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
            false,
        ),
        "/600" => (b"HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\n\r\nok", false),
        "/999" => (b"HTTP/1.1 999 Beyond\r\nContent-Length: 2\r\n\r\nok", false),
        "/http10-length" => (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nold-1", false),
        "/http10-close" => (b"HTTP/1.0 200 OK\r\n\r\nold-2", true),
        "/trailers" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n2\r\nhi\r\n0\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nTE: gzip\r\nUpgrade: x\r\nContent-Length: 9\r\nContent-Type: text/html\r\nSet-Cookie: a=b\r\nAuthorization: Basic eA==\r\nHost: evil.example\r\nX-Sum: 13\r\n\r\n",
            false,
        ),
        "/cl-twice" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/cl-list" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", false),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    }
}

/// The paths whose answers the proxy refuses.
const REFUSED: [&str; 3] = ["/101", "/600", "/999"];

/// A backend on 127.0.0.1 that answers each request (its body read by `Content-Length`) as
/// [`answer`] says, on keep-alive connections; and how many of its connections the proxy
/// closed right after an answer it refuses (one of [`REFUSED`]).
async fn raw_backend() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut last = String::new();
                let closed = |last: &str| {
                    if REFUSED.contains(&last) {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                };
                loop {
                    let end = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut buf = [0u8; 4096];
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return closed(&last),
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while pending.len() < end + length {
                        let mut buf = [0u8; 4096];
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return closed(&last),
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    pending.drain(..end + length);
                    last = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (bytes, close) = answer(&last);
                    if s.write_all(bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (port, dropped)
}

/// A request of the test: GET without a body, POST with one (the other backend path).
fn request(method: &Method, path: &str, port: u16) -> http::Request<Full<Bytes>> {
    let body = if method == Method::POST {
        Bytes::from_static(b"body")
    } else {
        Bytes::new()
    };
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut().insert(
        http::header::HOST,
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    req
}

/// An HTTP/1.1 connection to the proxy that requests can be sent on, one after the other.
async fn h1_connection(port: u16) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends `method path` to the proxy on a new HTTP/2 connection (`:authority` from the target,
/// no `Host`); the response head.
async fn h2_exchange(
    method: &Method,
    path: &str,
    port: u16,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = request(method, path, port);
    req.headers_mut().remove(http::header::HOST);
    *req.uri_mut() = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
    *req.version_mut() = Version::HTTP_2;
    sender.send_request(req).await
}

/// Sends `method path` on `sender`: the status, the version and the body.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &Method,
    path: &str,
    port: u16,
) -> (u16, Version, Bytes) {
    sender.ready().await.unwrap_or_else(|e| {
        panic!("{method} {path}: the proxy closed the connection before it: {e}")
    });
    let resp = sender
        .send_request(request(method, path, port))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, body)
}

fn invalid_responses(gw: &Gateway) -> u64 {
    gw.count(
        "tollgate_http_upstream_errors_total{route=\"default/app\",reason=\"invalid_response\"}",
    )
}

#[tokio::test]
async fn an_unasked_101_or_a_status_past_599_is_a_502_and_its_connection_is_closed() {
    let (backend, dropped) = raw_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let port = gw.port();
    let mut errors = 0;
    for method in [Method::GET, Method::POST] {
        for path in REFUSED {
            let mut client = h1_connection(port).await;
            // A first request leaves a connection to the backend in the pool, which the
            // refused answer may come on.
            assert_eq!(exchange(&mut client, &method, "/", port).await.0, 200);
            let (status, _, body) = exchange(&mut client, &method, path, port).await;
            assert_eq!(status, 502, "{method} {path}: {body:?}");
            errors += 1;
            assert_eq!(invalid_responses(&gw), errors, "{method} {path}");
            // The connection it came on is closed, not kept for another request.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while dropped.load(Ordering::SeqCst) < errors as usize {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{method} {path}: the backend connection was kept"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // (The proxy's own answer to a request with a body closes the client's connection.)
            let mut client = h1_connection(port).await;
            assert_eq!(exchange(&mut client, &method, "/", port).await.0, 200);
        }
    }
}

#[tokio::test]
async fn an_http10_answer_reaches_the_client_in_http11_on_a_connection_it_keeps() {
    let (backend, _) = raw_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let port = gw.port();
    for method in [Method::GET, Method::POST] {
        for (path, want) in [("/http10-length", "old-1"), ("/http10-close", "old-2")] {
            let mut client = h1_connection(port).await;
            let (status, version, body) = exchange(&mut client, &method, path, port).await;
            assert_eq!(
                (status, version),
                (200, Version::HTTP_11),
                "{method} {path}"
            );
            assert_eq!(body, want, "{method} {path}");
            // The same connection serves the next request.
            let (status, version, body) = exchange(&mut client, &method, "/", port).await;
            assert_eq!(
                (status, version),
                (200, Version::HTTP_11),
                "{method} {path}"
            );
            assert_eq!(body, "ok", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn trailers_reach_http2_clients_without_the_fields_a_trailer_may_not_carry() {
    let (backend, _) = raw_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let port = gw.port();
    for method in [Method::GET, Method::POST] {
        let resp = h2_exchange(&method, "/trailers", port).await.unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let collected = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method}: the stream was reset: {e}"));
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(collected.to_bytes(), "hi", "{method}");
        let mut want = HeaderMap::new();
        want.insert("x-sum", "13".parse().unwrap());
        assert_eq!(trailers, want, "{method}");
    }
}

#[tokio::test]
async fn identical_content_lengths_reach_clients_of_both_protocols_as_one() {
    // Before, an HTTP/2 client got both fields (or "2, 2") and refused the response
    // (curl: PROTOCOL_ERROR), and an HTTP/1.1 client got the list as sent.
    let (backend, _) = raw_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let port = gw.port();
    for path in ["/cl-twice", "/cl-list"] {
        for method in [Method::GET, Method::POST] {
            let resp = h2_exchange(&method, path, port)
                .await
                .unwrap_or_else(|e| panic!("{method} {path} over HTTP/2: {e}"));
            assert_eq!(resp.status(), 200, "{method} {path}");
            let lengths: Vec<_> = resp.headers().get_all("content-length").iter().collect();
            assert_eq!(lengths, ["2"], "{method} {path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok", "{method} {path}");

            let mut h1 = h1_connection(port).await;
            h1.ready().await.unwrap();
            let resp = h1.send_request(request(&method, path, port)).await.unwrap();
            let lengths: Vec<_> = resp.headers().get_all("content-length").iter().collect();
            assert_eq!(lengths, ["2"], "{method} {path} over HTTP/1.1");
        }
    }
}
