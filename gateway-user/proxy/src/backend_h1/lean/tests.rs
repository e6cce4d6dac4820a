//! The lean path against a scripted backend on raw sockets: answers no HTTP library would
//! write, counted connections, and the request heads as they arrived.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Either};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::backend_h1::{send, BackendBody, PoolSettings};
use crate::upstream::ReplayBody;

/// What the backend does with a request: the bytes it writes, then whether it closes.
type Script = fn(&str, usize) -> (Vec<u8>, bool);

#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    heads: StdMutex<Vec<String>>,
}

/// A backend that answers each request head by `script(path, n)` (`n`: the request's number
/// on its connection, from 1).
async fn backend(script: Script) -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            s.accepted.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut n = 0;
                loop {
                    let end = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut buf = [0u8; 4096];
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => pending.extend_from_slice(&buf[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end);
                    n += 1;
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    s.heads.lock().unwrap().push(head);
                    let (answer, close) = script(&path, n);
                    if tcp.write_all(&answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn settings() -> PoolSettings {
    PoolSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        max_idle: 8,
    }
}

fn request(method: Method, path: &str) -> Request<UpstreamBody> {
    let mut req = Request::new(Either::Left(ReplayBody::new(Bytes::new()).0));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("api.example.com"));
    req
}

/// The response's status, body and trailers (an error as `Err`).
async fn fetch(
    endpoint: &Arc<Endpoint>,
    method: Method,
    path: &str,
) -> Result<(Response<()>, Bytes, Option<HeaderMap>), String> {
    let resp = send(endpoint, settings(), None, request(method, path))
        .await
        .map_err(|e| format!("{:?}: {}", e.failure, e.error))?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok((
        Response::from_parts(parts, ()),
        collected.to_bytes(),
        trailers,
    ))
}

fn script(path: &str, n: usize) -> (Vec<u8>, bool) {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nx-sum: 13\r\n\r\n".to_vec(),
            false,
        ),
        "/chunked-plain" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        "/eof" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the close".to_vec(), true),
        "/interim" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal".to_vec(),
            false,
        ),
        "/interim-flood" => (
            b"HTTP/1.1 103 Early Hints\r\n\r\n"
                .repeat(MAX_INTERIM + 1)
                .into_iter()
                .chain(ok.clone())
                .collect(),
            false,
        ),
        "/head" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec(),
            false,
        ),
        "/204" => (
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n".to_vec(),
            false,
        ),
        "/two-cl" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc".to_vec(),
            false,
        ),
        "/same-cl" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/bad-cl" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok".to_vec(),
            false,
        ),
        "/extra" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n".to_vec(),
            false,
        ),
        "/close" => (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/http10" => (
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/short" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(),
            true,
        ),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n".to_vec(),
            false,
        ),
        "/huge-chunk" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n".to_vec(),
            false,
        ),
        // Chunk-size lines without a digit, or with a control character in an extension.
        "/chunk-no-digit" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\r\n\r\n".to_vec(),
            false,
        ),
        "/chunk-ext-only" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n;x\r\n\r\n".to_vec(),
            false,
        ),
        "/chunk-ext-lf" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;a\nb\r\nhi\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        "/chunk-ext-ctl" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;a\x01b\r\nhi\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        // What hyper's decoder takes: whitespace before an extension, a quoted string with a
        // tab and a space, and leading zeros past 16 digits.
        "/chunk-ext-ok" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 \t;a=\"x\ty z\"\r\nhi\r\n000000000000000000001\r\n!\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        "/600" => (
            b"HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/999" => (
            b"HTTP/1.1 999 Beyond\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/big-head" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..MAX_HEAD / 1000 + 1 {
                head.extend_from_slice(format!("x-f{i}: {}\r\n", "v".repeat(1000)).as_bytes());
            }
            head.extend_from_slice(b"content-length: 0\r\n\r\n");
            (head, false)
        }
        "/many-fields" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..=MAX_HEADERS {
                head.extend_from_slice(format!("x-f{i}: v\r\n").as_bytes());
            }
            head.extend_from_slice(b"content-length: 0\r\n\r\n");
            (head, false)
        }
        "/garbage" => (b"SMTP ready\r\n\r\n".to_vec(), false),
        "/101" => (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec(),
            false,
        ),
        "/no-reason" => (
            b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/latin1-reason" => (
            b"HTTP/1.1 200 \x96kay\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/empty-value" => (
            b"HTTP/1.1 200 OK\r\nx-empty:\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/head-two-cl" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n".to_vec(),
            false,
        ),
        "/reason" => (
            b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        // Keep-alive, then gone as the second request arrives (a backend's idle timeout
        // racing the request): nothing answered.
        "/once" if n == 2 => (Vec::new(), true),
        _ => (ok, false),
    }
}

#[tokio::test]
async fn only_requests_without_a_body_that_may_go_again_take_the_lean_path() {
    assert!(eligible(&request(Method::GET, "/")));
    assert!(eligible(&request(Method::HEAD, "/")));
    assert!(eligible(&request(Method::OPTIONS, "/")));
    assert!(eligible(&request(Method::DELETE, "/")));
    assert!(!eligible(&request(Method::POST, "/")));
    assert!(!eligible(&request(Method::PUT, "/")));
    let mut r = request(Method::GET, "/");
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    assert!(eligible(&r));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    assert!(!eligible(&r));
    let mut r = request(Method::GET, "/");
    r.headers_mut()
        .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
    assert!(!eligible(&r));
    let mut r = request(Method::GET, "/");
    *r.body_mut() = Either::Left(ReplayBody::new(Bytes::from_static(b"x")).0);
    assert!(!eligible(&r));
}

#[tokio::test]
async fn the_request_head_is_written_as_hyper_writes_it() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let mut req = request(Method::GET, "/a/b?c=d&e");
    req.headers_mut()
        .append("x-multi", HeaderValue::from_static("1"));
    req.headers_mut()
        .append("x-multi", HeaderValue::from_static("2"));
    let resp = send(&endpoint, settings(), None, req).await.ok().unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(
        seen.heads.lock().unwrap()[0],
        "GET /a/b?c=d&e HTTP/1.1\r\nhost: api.example.com\r\nx-multi: 1\r\nx-multi: 2\r\n\r\n"
    );
}

#[tokio::test]
async fn chunked_bodies_are_decoded_with_their_trailers_and_the_connection_kept() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let (resp, body, trailers) = fetch(&endpoint, Method::GET, "/chunked").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key(header::TRANSFER_ENCODING));
    assert_eq!(body, "abc0123456789");
    assert_eq!(trailers.unwrap()["x-sum"], "13");
    let (_, body, trailers) = fetch(&endpoint, Method::GET, "/chunked-plain")
        .await
        .unwrap();
    assert_eq!(body, "hi");
    assert!(trailers.is_none());
    assert_eq!(fetch(&endpoint, Method::GET, "/").await.unwrap().1, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(endpoint.h1.idle_here(), 1);
}

#[tokio::test]
async fn bodies_without_a_known_end_are_read_to_the_close_and_the_connection_not_kept() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    for path in ["/eof", "/close", "/http10", "/extra"] {
        let (resp, body, _) = fetch(&endpoint, Method::GET, path).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let want = if path == "/eof" {
            "until the close"
        } else {
            "ok"
        };
        assert_eq!(body, want, "{path}");
        assert_eq!(endpoint.h1.idle_here(), 0, "{path}: kept");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn interim_responses_are_dropped_and_a_flood_of_them_refused() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let (resp, body, _) = fetch(&endpoint, Method::GET, "/interim").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("link"));
    assert_eq!(body, "final");
    assert_eq!(fetch(&endpoint, Method::GET, "/").await.unwrap().1, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    let e = fetch(&endpoint, Method::GET, "/interim-flood")
        .await
        .unwrap_err();
    assert!(e.starts_with("InvalidResponse"), "{e}");
    let e = fetch(&endpoint, Method::GET, "/101").await.unwrap_err();
    assert!(e.starts_with("InvalidResponse"), "{e}");
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_their_content_length_says() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let (resp, body, _) = fetch(&endpoint, Method::HEAD, "/head").await.unwrap();
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "100");
    assert!(body.is_empty());
    let (resp, body, _) = fetch(&endpoint, Method::GET, "/204").await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    // The connection stayed in step: the next answer is the next request's.
    assert_eq!(fetch(&endpoint, Method::GET, "/").await.unwrap().1, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn content_lengths_must_agree_and_be_digits() {
    let (addr, _) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    for path in ["/two-cl", "/bad-cl"] {
        let e = fetch(&endpoint, Method::GET, path).await.unwrap_err();
        assert!(e.starts_with("InvalidResponse"), "{path}: {e}");
    }
    // Even where the length frames nothing (RFC 9112 section 6.3, point 5).
    let e = fetch(&endpoint, Method::HEAD, "/head-two-cl")
        .await
        .unwrap_err();
    assert!(e.starts_with("InvalidResponse"), "{e}");
    assert_eq!(
        fetch(&endpoint, Method::GET, "/same-cl").await.unwrap().1,
        "ok"
    );
}

#[tokio::test]
async fn malformed_and_oversized_answers_are_invalid_responses_or_body_errors() {
    let (addr, _) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    for path in ["/big-head", "/many-fields", "/garbage"] {
        let e = fetch(&endpoint, Method::GET, path).await.unwrap_err();
        assert!(e.starts_with("InvalidResponse"), "{path}: {e}");
    }
    // A head that came whole, then a body that breaks: the body ends with an error.
    for path in ["/short", "/bad-chunk", "/huge-chunk"] {
        let e = fetch(&endpoint, Method::GET, path).await.unwrap_err();
        assert!(!e.starts_with("InvalidResponse"), "{path}: {e}");
        assert_eq!(endpoint.h1.idle_here(), 0, "{path}: kept");
    }
}

#[tokio::test]
async fn a_reason_phrase_of_its_own_is_kept() {
    let (addr, _) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let (resp, _, _) = fetch(&endpoint, Method::GET, "/reason").await.unwrap();
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"Fine Thanks");
    let (resp, _, _) = fetch(&endpoint, Method::GET, "/").await.unwrap();
    assert!(resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .is_none());
    // No reason at all, or one that is not UTF-8 (httparse gives those as an empty reason
    // from outside the head: found by the `backend_response` fuzz target), and an empty field
    // value.
    for path in ["/no-reason", "/latin1-reason", "/empty-value"] {
        let (resp, body, _) = fetch(&endpoint, Method::GET, path).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
        assert_eq!(body, "ok", "{path}");
    }
    let (resp, _, _) = fetch(&endpoint, Method::GET, "/empty-value").await.unwrap();
    assert_eq!(resp.headers()["x-empty"], "");
}

#[tokio::test]
async fn a_pooled_connection_closed_after_the_request_arrived_is_a_reset_not_sent_again() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    assert_eq!(
        fetch(&endpoint, Method::GET, "/once").await.unwrap().1,
        "ok"
    );
    // The backend closes the kept connection once this request has arrived, answering
    // nothing: it may have acted on it, so the router's retry rules decide, not the pool.
    let e = fetch(&endpoint, Method::GET, "/once").await.unwrap_err();
    assert!(e.starts_with("Reset"), "{e}");
    assert_eq!(seen.heads.lock().unwrap().len(), 2);
    assert_eq!(fetch(&endpoint, Method::GET, "/").await.unwrap().1, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_the_connection_and_one_read_to_its_end_does_not() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let resp = send(
        &endpoint,
        settings(),
        None,
        request(Method::GET, "/chunked"),
    )
    .await
    .ok()
    .unwrap();
    let mut body: BackendBody = resp.into_body();
    // One frame read, the rest left.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(endpoint.h1.idle_here(), 0);
    assert_eq!(fetch(&endpoint, Method::GET, "/").await.unwrap().1, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(endpoint.h1.idle_here(), 1);
}

#[test]
fn a_chunk_size_line_needs_a_hex_digit_and_no_control_character_in_its_extension() {
    use chunk::{size_line, Malformed};
    assert_eq!(size_line(b"1a\r\nx"), Ok(Some((4, 0x1a))));
    assert_eq!(size_line(b"0\r\n"), Ok(Some((3, 0))));
    assert_eq!(size_line(b"5 \t;a=1;b=\"c d\"\r\n"), Ok(Some((17, 5))));
    assert_eq!(size_line(b"ffffffffffffffff\r\n"), Ok(Some((18, u64::MAX))));
    assert_eq!(size_line(b"00000000000000000001\r\n"), Ok(Some((22, 1))));
    // Not whole yet.
    for partial in [&b"1"[..], b"1a", b"1 ", b"1;ext", b"1;ext\r", b"1\r"] {
        assert_eq!(size_line(partial), Ok(None), "{partial:?}");
    }
    for bad in [
        &b"\r\n"[..],
        b";x\r\n",
        b" 1\r\n",
        b"x\r\n",
        b"1\n",
        b"1 2\r\n",
        b"1\rx",
        b"1;a\nb\r\n",
        b"1;a\x00\r\n",
        b"1;a\x7f\r\n",
        b"1;a\rb\r\n",
        b"10000000000000000\r\n",
    ] {
        assert_eq!(size_line(bad), Err(Malformed), "{bad:?}");
    }
}

#[tokio::test]
async fn chunk_size_lines_hyper_would_refuse_fail_the_body_and_close_the_connection() {
    let (addr, seen) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    let (_, body, _) = fetch(&endpoint, Method::GET, "/chunk-ext-ok")
        .await
        .unwrap();
    assert_eq!(body, "hi!");
    assert_eq!(endpoint.h1.idle_here(), 1);
    let paths = [
        "/chunk-no-digit",
        "/chunk-ext-only",
        "/chunk-ext-lf",
        "/chunk-ext-ctl",
    ];
    for (i, path) in paths.into_iter().enumerate() {
        let e = fetch(&endpoint, Method::GET, path).await.unwrap_err();
        assert!(e.contains("malformed"), "{path}: {e}");
        assert_eq!(endpoint.h1.idle_here(), 0, "{path}: kept");
        // Each was sent on the connection kept before it, which was then closed.
        assert_eq!(seen.accepted.load(Ordering::SeqCst), i + 1, "{path}");
        assert_eq!(fetch(&endpoint, Method::GET, "/").await.unwrap().1, "ok");
    }
}

#[tokio::test]
async fn statuses_past_599_are_invalid_responses() {
    let (addr, _) = backend(script).await;
    let endpoint = Arc::new(Endpoint::new(addr));
    for path in ["/600", "/999"] {
        let e = fetch(&endpoint, Method::GET, path).await.unwrap_err();
        assert!(e.starts_with("InvalidResponse"), "{path}: {e}");
        assert_eq!(endpoint.h1.idle_here(), 0, "{path}: kept");
    }
}
