//! Forwarding to backends, in process: status-code retries (`retry.codes`, `retry.attempts`)
//! counted at the backend, a request body sent again on a retry, no retry without the rule
//! asking, a connection closed after the request was sent (retried only for an idempotent
//! request of a rule with a retry stanza, else 503), connection failures retried on another
//! endpoint (and how many times on a single dead one, then 503), the per-attempt timeout
//! (504; retried with a retry stanza), and a response body cut off at the deadline.
mod harness;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use harness::yaml::{backend, documents, gateway, route, to};
use harness::{Backend, Gateway, Step};
use tokio::net::TcpSocket;

/// Endpoints are never ejected in these tests: the scripted failures would otherwise take the
/// backend out of rotation and change what is being counted.
const NO_EJECTION: &str = "  healthCheck: { passive: { consecutiveFailures: 100 } }\n";

fn upstream_errors(gw: &Gateway, route: &str, reason: &str) -> u64 {
    gw.count(&format!(
        "tollgate_http_upstream_errors_total{{route=\"{route}\",reason=\"{reason}\"}}"
    ))
}

/// A route `name` for host `host` to Backend `backend`, with `extra` on its one rule.
fn host_route(name: &str, host: &str, backend: &str, extra: &str) -> String {
    route(
        name,
        &format!(
            "  hostnames: [{host}]\n  rules:\n    - backendRefs: [{}]\n{extra}",
            to(backend)
        ),
    )
}

#[tokio::test]
async fn status_codes_are_retried_as_the_rule_says_and_counted_at_the_backend() {
    let app = Backend::start("app").await;
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], NO_EJECTION),
            &host_route(
                "retried",
                "retried.test",
                "app",
                "      retry: { codes: [503], attempts: 2, backoff: 10ms }\n",
            ),
            &host_route("plain", "plain.test", "app", ""),
        ])
    })
    .await;
    let get = |host: &str| gw.get("/r").host(host);

    // Fails once, then succeeds: 200 after 2 attempts.
    app.fail(1, 503);
    let r = get("retried.test").send().await;
    assert_eq!((r.status, app.count()), (200, 2), "{r:?}");
    // Fails twice: the two retries are used, the third attempt succeeds.
    app.fail(2, 503);
    let r = get("retried.test").send().await;
    assert_eq!((r.status, app.count()), (200, 5), "{r:?}");
    // Fails three times: retries exhausted, the backend's 503 is passed on.
    app.fail(3, 503);
    let r = get("retried.test").send().await;
    assert_eq!(
        (r.status, r.backend(), app.count()),
        (503, Some("app"), 8),
        "{r:?}"
    );
    // A status not in `codes` is not retried.
    app.fail(1, 500);
    let r = get("retried.test").send().await;
    assert_eq!((r.status, app.count()), (500, 9), "{r:?}");
    // A rule without `retry.codes`: the 503 is passed on at once.
    app.fail(1, 503);
    let r = get("plain.test").send().await;
    assert_eq!((r.status, app.count()), (503, 10), "{r:?}");
    // A small body is buffered and sent again with the retry, whole.
    app.fail(1, 503);
    let r = gw
        .request("POST", "/r")
        .host("retried.test")
        .body("payload")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.received();
    let bodies: Vec<&[u8]> = seen[10..].iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [b"payload", b"payload"]);
    assert!(seen[10..].iter().all(|r| r.method == "POST" && r.complete));
    // Each client request is counted once, with the status it got, however many attempts
    // it took.
    for (method, code, n) in [
        ("GET", 200, 2),
        ("GET", 503, 1),
        ("GET", 500, 1),
        ("POST", 200, 1),
    ] {
        let series = format!(
            "tollgate_http_requests_total{{route=\"default/retried\",method=\"{method}\",code=\"{code}\"}}"
        );
        assert_eq!(gw.count(&series), n, "{series}");
    }
}

#[tokio::test]
async fn a_connection_closed_after_the_request_was_sent_is_retried_only_when_that_is_safe() {
    let app = Backend::start("app").await;
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], NO_EJECTION),
            &host_route(
                "app",
                "app.test",
                "app",
                "      retry: { codes: [503], attempts: 2, backoff: 10ms }\n",
            ),
            &host_route("plain", "plain.test", "app", ""),
        ])
    })
    .await;
    // A GET is idempotent (RFC 9110 9.2.2) and the rule has a retry stanza: sent again.
    app.script([Step::Close]);
    let r = gw.get("/x").host("app.test").send().await;
    assert_eq!((r.status, r.backend()), (200, Some("app")), "{r:?}");
    assert_eq!(app.count(), 2);
    assert_eq!(upstream_errors(&gw, "default/app", "reset"), 1);
    // A POST whose body was sent may have been acted on: never sent twice; 503, as for every
    // request no response could be had for (Envoy's "reset before headers" answer).
    app.script([Step::Close]);
    let r = gw
        .request("POST", "/order")
        .host("app.test")
        .body("pay once")
        .send()
        .await;
    assert_eq!((r.status, r.backend()), (503, None), "{r:?}");
    assert_eq!(app.count(), 3);
    assert_eq!(upstream_errors(&gw, "default/app", "reset"), 2);
    // Without a retry stanza nothing that was sent is retried, not even a GET.
    app.script([Step::Close]);
    let r = gw.get("/x").host("plain.test").send().await;
    assert_eq!((r.status, r.backend()), (503, None), "{r:?}");
    assert_eq!(app.count(), 4);
    // The next request gets a new connection and an answer.
    let r = gw.get("/x").host("app.test").send().await;
    assert_eq!((r.status, app.count()), (200, 5), "{r:?}");
}

/// A port bound on 127.0.0.1 but not listening: connecting to it is refused, and no other
/// process can take it while the socket lives.
fn dead_port() -> (TcpSocket, u16) {
    let s = TcpSocket::new_v4().expect("a socket");
    s.bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
    let port = s.local_addr().expect("address").port();
    (s, port)
}

#[tokio::test]
async fn refused_connections_are_retried_on_another_endpoint_or_the_same_one() {
    let live = Backend::start("live").await;
    let (_dead, dead) = dead_port();
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("mixed", &[dead, live.port()], NO_EJECTION),
            &backend("gone", &[dead], NO_EJECTION),
            &backend("gone-once", &[dead], NO_EJECTION),
            &host_route("mixed", "mixed.test", "mixed", ""),
            &host_route("gone", "gone.test", "gone", ""),
            &host_route(
                "gone-once",
                "once.test",
                "gone-once",
                "      retry: { attempts: 0 }\n",
            ),
        ])
    })
    .await;
    // Two endpoints, one dead: every request is answered by the live one, with its target and
    // all its headers (an attempt that could not connect gives the request back whole).
    for i in 0..6 {
        let r = gw
            .get(&format!("/{i}/./x?n={i}"))
            .host("mixed.test")
            .header("x-request-id", &format!("req-{i}"))
            .send()
            .await;
        assert_eq!((r.status, r.backend()), (200, Some("live")), "{i}: {r:?}");
        let seen = live.last();
        assert_eq!(seen.target, format!("/{i}/x?n={i}"));
        assert_eq!(
            seen.header("x-request-id").as_deref(),
            Some(&*format!("req-{i}"))
        );
        assert_eq!(seen.header("host").as_deref(), Some("mixed.test"));
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(live.count(), 6);
    let refused = upstream_errors(&gw, "default/mixed", "connect");
    assert!(
        (1..=6).contains(&refused),
        "the dead endpoint was tried {refused} times"
    );
    // A single dead endpoint: the first attempt and the 2 default retries, then 503 (no
    // response could be had: the Gateway API's HTTPRouteRetryConnectionError).
    let r = gw.get("/").host("gone.test").send().await;
    assert_eq!((r.status, r.backend()), (503, None), "{r:?}");
    assert_eq!(upstream_errors(&gw, "default/gone", "connect"), 3);
    // `attempts: 0`: tried once.
    let r = gw.get("/").host("once.test").send().await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(upstream_errors(&gw, "default/gone-once", "connect"), 1);
}

#[tokio::test]
async fn a_backend_slower_than_the_attempt_timeout_gets_a_504_and_the_retry_stanza_decides() {
    let app = Backend::start("app").await;
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], NO_EJECTION),
            &host_route(
                "slow",
                "slow.test",
                "app",
                "      timeouts: { backendRequest: 200ms }\n",
            ),
            &host_route(
                "retried",
                "retried.test",
                "app",
                "      timeouts: { backendRequest: 200ms }\n      retry: { codes: [503], attempts: 2, backoff: 10ms }\n",
            ),
        ])
    })
    .await;
    // No retry stanza: one attempt, 504 at the per-try timeout.
    app.script([Step::Delay(Duration::from_secs(3))]);
    let started = Instant::now();
    let r = gw.get("/").host("slow.test").send().await;
    let took = started.elapsed();
    assert_eq!((r.status, r.backend()), (504, None), "{r:?}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(app.count(), 1);
    assert_eq!(upstream_errors(&gw, "default/slow", "timeout"), 1);
    // With one (HTTPRouteRetryBackendTimeout): the GET is tried again and the second answer,
    // in time, is served.
    app.script([Step::Delay(Duration::from_secs(3))]);
    let r = gw.get("/").host("retried.test").send().await;
    assert_eq!((r.status, r.backend()), (200, Some("app")), "{r:?}");
    assert_eq!(app.count(), 3);
    assert_eq!(upstream_errors(&gw, "default/retried", "timeout"), 1);
}

/// A backend that answers `200` with `Content-Length: 100` at once, then sends the body a byte
/// every 50 ms (5 s in all).
async fn dribbling_backend() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                    .await;
                for _ in 0..100 {
                    if s.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_response_body_slower_than_the_deadline_is_cut_off_at_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The deadline of the request timeout, then of the per-attempt timeout: both go on from
    // the response head to its body.
    for timeouts in ["{ request: 600ms }", "{ backendRequest: 600ms }"] {
        let port = dribbling_backend().await;
        let gw = Gateway::start(|p| {
            documents(&[
                &gateway(&[("http", p, None)]),
                &backend("app", &[port], ""),
                &route(
                    "app",
                    &format!(
                        "  rules:\n    - backendRefs: [{}]\n      timeouts: {timeouts}\n",
                        to("app")
                    ),
                ),
            ])
        })
        .await;
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, gw.port()))
            .await
            .unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut got)).await;
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(
            read.is_ok(),
            "{timeouts}: the response was not cut off: {text}"
        );
        assert!(text.starts_with("HTTP/1.1 200 "), "{timeouts}: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(
            !body.is_empty() && body.len() < 100,
            "{timeouts}: {} bytes of the body: {text}",
            body.len()
        );
        assert!(
            took >= Duration::from_millis(550) && took < Duration::from_millis(2000),
            "{timeouts}: cut off after {took:?}"
        );
    }
}
