//! The pool against a backend on loopback (hyper's server) that counts the connections it
//! accepted and saw closed, and answers by path: `/close` with `Connection: close`,
//! `/stream` with a chunked body of 64 chunks, `/host` with the `Host` it got, else `ok`.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Either, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;
use crate::upstream::ReplayBody;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

type TestBody = Either<
    http_body_util::Full<Bytes>,
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, String>>>>,
>;

async fn backend() -> (String, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut resp = http::Response::new(match req.uri().path() {
                        "/stream" => Either::Right(StreamBody::new(futures_util::stream::iter(
                            (0..64)
                                .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 1024]))))
                                .collect::<Vec<_>>(),
                        ))),
                        "/host" => Either::Left(http_body_util::Full::new(Bytes::from(
                            req.headers()[http::header::HOST].as_bytes().to_vec(),
                        ))),
                        _ => Either::Left(http_body_util::Full::new(Bytes::from_static(b"ok"))),
                    });
                    if req.uri().path() == "/close" {
                        resp.headers_mut()
                            .insert(http::header::CONNECTION, "close".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(resp as http::Response<TestBody>)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn settings() -> PoolSettings {
    PoolSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        max_idle: 8,
    }
}

fn get(path: &str) -> Request<UpstreamBody> {
    let mut req = Request::new(Either::Left(ReplayBody::new(Bytes::new()).0));
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("api.example.com"));
    req
}

async fn read(endpoint: &Arc<Endpoint>, settings: PoolSettings, path: &str) -> Bytes {
    let resp = send(endpoint, settings, None, get(path))
        .await
        .ok()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// Waits (up to 2 s) for `f` to hold: connection closes are seen by the backend's tasks.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test]
async fn a_connection_whose_response_ended_is_used_again() {
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    for _ in 0..5 {
        assert_eq!(read(&endpoint, settings(), "/").await, "ok");
        assert_eq!(
            read(&endpoint, settings(), "/stream").await.len(),
            64 * 1024
        );
    }
    assert_eq!(counts.accepted(), 1);
    assert_eq!(endpoint.h1.idle_here(), 1);
}

#[tokio::test]
async fn a_response_left_unread_or_refused_closes_its_connection() {
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    // Dropped before its end: where the response ends is not known, the connection closes.
    let resp = send(&endpoint, settings(), None, get("/stream"))
        .await
        .ok()
        .unwrap();
    drop(resp);
    assert!(eventually(|| counts.closed() == 1).await);
    assert_eq!(endpoint.h1.idle_here(), 0);
    // Read to its end, but refused (its framing): not used again either.
    let mut resp = send(&endpoint, settings(), None, get("/"))
        .await
        .ok()
        .unwrap();
    resp.body_mut().discard_connection();
    let _ = resp.into_body().collect().await.unwrap();
    assert!(eventually(|| counts.closed() == 2).await);
    assert_eq!(read(&endpoint, settings(), "/").await, "ok");
    assert_eq!(counts.accepted(), 3);
}

#[tokio::test]
async fn a_connection_the_backend_closes_is_not_used_again_and_costs_no_request() {
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    // `Connection: close`: hyper closes it after the response.
    assert_eq!(read(&endpoint, settings(), "/close").await, "ok");
    assert!(eventually(|| counts.closed() == 1).await);
    for _ in 0..3 {
        assert_eq!(read(&endpoint, settings(), "/").await, "ok");
    }
    assert_eq!(counts.accepted(), 2);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_and_beyond_the_cap() {
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let short = PoolSettings {
        idle_timeout: Duration::from_millis(300),
        max_idle: 2,
        ..settings()
    };
    // Three at once: three connections; two are kept when they end, the third is closed.
    let (a, b, c) = tokio::join!(
        send(&endpoint, short, None, get("/")),
        send(&endpoint, short, None, get("/")),
        send(&endpoint, short, None, get("/")),
    );
    let (a, b, c) = (a.ok().unwrap(), b.ok().unwrap(), c.ok().unwrap());
    assert_eq!(counts.accepted(), 3);
    for r in [a, b, c] {
        let _ = r.into_body().collect().await.unwrap();
    }
    assert_eq!(endpoint.h1.idle_here(), 2);
    assert!(eventually(|| counts.closed() == 1).await);
    // Unused for the idle timeout: closed by their watchdog.
    assert!(eventually(|| counts.closed() == 3).await);
    assert_eq!(endpoint.h1.idle_here(), 0);
    assert_eq!(read(&endpoint, short, "/").await, "ok");
    assert_eq!(counts.accepted(), 4);
}

#[tokio::test]
async fn a_connection_in_use_is_not_closed_for_idleness() {
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let short = PoolSettings {
        idle_timeout: Duration::from_millis(200),
        ..settings()
    };
    // Taken and given back more often than the idle timeout: one connection all along.
    for _ in 0..12 {
        assert_eq!(read(&endpoint, short, "/").await, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts.accepted(), 1);
    assert_eq!(counts.closed(), 0);
}

#[tokio::test]
async fn the_host_is_the_requests_or_else_the_endpoints() {
    let (addr, _) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr.clone()));
    assert_eq!(
        read(&endpoint, settings(), "/host").await,
        "api.example.com"
    );
    let mut req = get("/host");
    req.headers_mut().remove(header::HOST);
    let resp = send(&endpoint, settings(), None, req).await.ok().unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, addr.as_bytes());
}

#[tokio::test]
async fn no_backend_listening_is_a_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let endpoint = Arc::new(Endpoint::new(addr));
    // The request comes back as it was given, for another attempt: no copy of it is needed.
    let mut req = get("/");
    req.headers_mut().remove(header::HOST);
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("7"));
    match send(&endpoint, settings(), None, req).await {
        Err(e) => {
            assert_eq!(e.failure, Failure::Connect);
            let unsent = e.unsent.expect("the request given back");
            assert_eq!(unsent.headers()["x-request-id"], "7");
            assert!(
                !unsent.headers().contains_key(header::HOST),
                "the Host the pool added for this endpoint must not go to another"
            );
        }
        Ok(_) => panic!("a response from a closed port"),
    }
}

/// A backend on raw sockets that answers each request with `ok` and closes the connection
/// `linger` after each answer, without saying so (as a backend's keep-alive timeout does).
async fn closing_backend(linger: Duration) -> (String, Arc<Counts>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(linger).await;
                drop(tcp);
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_skipped_and_costs_no_request() {
    let (addr, counts) = closing_backend(Duration::from_millis(20)).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    for round in 1..=3 {
        assert_eq!(read(&endpoint, settings(), "/").await, "ok");
        // Closed by the backend while idle in the pool, with nothing said: the connection's
        // task sees the close, and the next request goes on a new connection.
        assert!(eventually(|| counts.closed() == round).await);
        assert!(
            eventually(|| endpoint.h1.idle_here() == 0).await,
            "a closed connection counted as idle"
        );
    }
    assert_eq!(counts.accepted(), 3);
}

#[tokio::test]
async fn an_endpoint_dropped_closes_its_idle_connections_at_once() {
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    assert_eq!(read(&endpoint, settings(), "/").await, "ok");
    assert_eq!(endpoint.h1.idle_here(), 1);
    // A revision that drops the endpoint closes its idle connections then (their tasks end
    // when the pool lets go of them), not at the idle timeout (30 s).
    drop(endpoint);
    assert!(eventually(|| counts.closed() == 1).await);
}

fn post(path: &str) -> Request<UpstreamBody> {
    let mut req = get(path);
    *req.method_mut() = http::Method::POST;
    *req.body_mut() = Either::Left(ReplayBody::new(Bytes::from_static(b"a body")).0);
    req
}

#[tokio::test]
async fn requests_with_a_body_go_through_hyper_on_connections_of_their_own_kept_by_the_same_rules()
{
    let (addr, counts) = backend().await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let short = PoolSettings {
        idle_timeout: Duration::from_millis(300),
        ..settings()
    };
    for _ in 0..3 {
        let resp = send(&endpoint, short, None, post("/")).await.ok().unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(counts.accepted(), 1);
    // A request without a body takes the lean path, which keeps connections of its own.
    assert_eq!(read(&endpoint, short, "/").await, "ok");
    assert_eq!(counts.accepted(), 2);
    assert_eq!(endpoint.h1.idle_here(), 2);
    let resp = send(&endpoint, short, None, post("/")).await.ok().unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(counts.accepted(), 2);
    // Both closed after the idle timeout: hyper's by its connection's task, the lean one by
    // the sweeper.
    assert!(eventually(|| counts.closed() == 2).await);
    assert_eq!(endpoint.h1.idle_here(), 0);
}
