//! Rate limits (`RateLimitPolicy`) and request body limits (`BackendTrafficPolicy`
//! `requestBody.maxSize`, else the proxy's `max_request_body`), in process: 429 with
//! `Retry-After` and the `RateLimit` / `RateLimit-Policy` headers, buckets per header value,
//! shadow mode; 413 for a `Content-Length` over the limit and for a body without a length that
//! grows past it, over HTTP/1.1 and HTTP/2; nothing over a limit reaches the backend.
mod harness;

use bytes::Bytes;
use harness::backend::Step;
use harness::yaml::{app_and_free, policy};
use harness::{Backend, Gateway, Options};
use std::time::Duration;
use tollgate_proxy::Limits;

fn limit_policy(name: &str, route: &str, mode: &str, limits: &[&str]) -> String {
    let mut spec = format!("  mode: {mode}\n  limits:\n");
    for l in limits {
        spec.push_str(&format!("    - {l}\n"));
    }
    policy("RateLimitPolicy", name, route, &spec)
}

#[tokio::test]
async fn a_burst_is_allowed_then_429_with_retry_after_and_ratelimit_headers() {
    let app = Backend::start("app").await;
    let per_client = limit_policy(
        "per-client",
        "app",
        "enforce",
        &["{ key: clientIP, requests: 3, per: 1m }"],
    );
    let gw = Gateway::start(|p| app_and_free(p, app.port(), &[&per_client])).await;

    for remaining in [2, 1, 0] {
        let r = gw.get("/a").send().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"per-client\";q=3;w=60"),
            "{r:?}"
        );
        let rl = r.header("ratelimit").unwrap_or_default();
        assert!(
            rl.starts_with(&format!("\"per-client\";r={remaining};t=")),
            "{r:?}"
        );
        assert_eq!(r.header("retry-after"), None, "{r:?}");
    }
    for h2 in [false, true] {
        let mut req = gw.get("/a");
        if h2 {
            req = req.h2();
        }
        let r = req.send().await;
        assert_eq!(r.status, 429, "{r:?}");
        // 3 a minute: a request every 20 s.
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in whole seconds: {r:?}"));
        assert!((1..=20).contains(&retry), "{r:?}");
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"per-client\";r=0;t={retry}").as_str()),
            "{r:?}"
        );
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"per-client\";q=3;w=60")
        );
        assert!(r.text().contains("per-client"), "{r:?}");
    }
    assert_eq!(app.count(), 3, "a refused request reached the backend");
    // A route without limits: neither limited nor decorated.
    let r = gw.get("/free").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.header("ratelimit"), r.header("ratelimit-policy")),
        (None, None)
    );

    assert_eq!(
        gw.count(
            "tollgate_http_ratelimited_total{route=\"default/app\",policy=\"default/per-client\"}"
        ),
        2
    );
    assert_eq!(
        gw.count("tollgate_http_requests_total{route=\"default/app\",method=\"GET\",code=\"429\"}"),
        2
    );
}

#[tokio::test]
async fn each_header_value_has_a_bucket_requests_without_it_share_one_and_shadow_refuses_nothing() {
    let app = Backend::start("app").await;
    let per_tenant = limit_policy(
        "per-tenant",
        "app",
        "enforce",
        &["{ key: header, header: X-Tenant, requests: 1, per: 1m }"],
    );
    let trial = limit_policy(
        "trial",
        "free",
        "shadow",
        &["{ key: clientIP, requests: 1, per: 1h }"],
    );
    let gw = Gateway::start(|p| app_and_free(p, app.port(), &[&per_tenant, &trial])).await;
    let status = |tenant: Option<&'static str>| {
        let mut req = gw.get("/a");
        if let Some(t) = tenant {
            req = req.header("x-tenant", t);
        }
        async move { req.send().await.status }
    };
    assert_eq!(status(Some("a")).await, 200);
    assert_eq!(status(Some("a")).await, 429);
    assert_eq!(status(Some("b")).await, 200);
    // Leaving the header out does not escape the limit: one bucket for all such requests.
    assert_eq!(status(None).await, 200);
    assert_eq!(status(None).await, 429);
    assert_eq!(app.count(), 3);

    // Shadow mode: over the limit, let through, undecorated, counted.
    for _ in 0..3 {
        let r = gw.get("/free").send().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            (r.header("ratelimit"), r.header("retry-after")),
            (None, None)
        );
    }
    assert_eq!(
        gw.count(
            "tollgate_http_ratelimited_total{route=\"default/free\",policy=\"default/trial\"}"
        ),
        2
    );
    assert_eq!(
        gw.count(
            "tollgate_http_ratelimited_total{route=\"default/app\",policy=\"default/per-tenant\"}"
        ),
        2
    );
}

fn too_large(gw: &Gateway, route: &str) -> u64 {
    gw.count(&format!(
        "tollgate_http_request_body_too_large_total{{route=\"{route}\"}}"
    ))
}

/// The backend's request count once it has stopped changing: the backend records a request
/// the proxy cut off when it sees that connection close, which may come after the client
/// already has its 413 (and, the proxy answering sooner, the next request has started).
async fn settled_count(app: &Backend) -> usize {
    let mut last = app.count();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = app.count();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// `n` bytes in chunks of `size`.
fn chunks(n: usize, size: usize) -> Vec<Bytes> {
    (0..n.div_ceil(size))
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; size.min(n - i * size)]))
        .collect()
}

/// Route `app`'s body limit: 1 KiB (a BackendTrafficPolicy).
fn app_body_limit_1kib() -> String {
    policy(
        "BackendTrafficPolicy",
        "small",
        "app",
        "  requestBody: { maxSize: 1KiB }\n",
    )
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_with_or_without_a_length() {
    let app = Backend::start("app").await;
    // Route app: 1 KiB (its BackendTrafficPolicy); route free: the proxy's limit, 4 KiB.
    let small = app_body_limit_1kib();
    let mut options = Options::default();
    options.limits.max_request_body = 4096;
    let gw = Gateway::start_with(options, |p| app_and_free(p[0], app.port(), &[&small])).await;

    for (path, limit, route) in [("/a", 1024, "default/app"), ("/free", 4096, "default/free")] {
        for h2 in [false, true] {
            let post = || {
                let r = gw.request("POST", path);
                if h2 {
                    r.h2()
                } else {
                    r
                }
            };
            let what = format!("{path} h2 {h2}");
            let before = (settled_count(&app).await, too_large(&gw, route));
            // At the limit, with a length and without: passed on whole.
            let r = post().body(vec![b'x'; limit]).send().await;
            assert_eq!((r.status, r.backend()), (200, Some("app")), "{what}: {r:?}");
            assert_eq!((app.last().body.len(), app.last().complete), (limit, true));
            assert_eq!(app.last().header("content-length"), Some(limit.to_string()));
            let r = post().chunked(chunks(limit, 300)).send().await;
            assert_eq!(r.status, 200, "{what}: {r:?}");
            let seen = app.last();
            assert_eq!(
                (seen.body.to_vec(), seen.complete),
                (chunks(limit, 300).concat(), true)
            );
            // One byte over, by Content-Length: 413 and the backend never hears of it.
            let r = post().body(vec![b'x'; limit + 1]).send().await;
            assert_eq!((r.status, r.backend()), (413, None), "{what}: {r:?}");
            assert_eq!(app.count(), before.0 + 2, "{what}");
            // Over, without a length: cut off on the way, 413, and the backend never gets a
            // whole body.
            let r = post().chunked(chunks(limit + 500, 300)).send().await;
            assert_eq!((r.status, r.backend()), (413, None), "{what}: {r:?}");
            assert!(
                app.received()
                    .iter()
                    .all(|r| r.body.len() <= limit || !r.complete),
                "{what}: a body over the limit reached the backend whole"
            );
            assert_eq!(too_large(&gw, route), before.1 + 2, "{what}");
        }
    }
}

/// A raw HTTP/2 connection to the proxy (prior knowledge), driven on a task of its own.
async fn h2_connection(port: u16) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A GET on the connection: its answer tells that every frame the proxy sent before it has
/// been read.
async fn h2_get(client: &mut h2::client::SendRequest<Bytes>, port: u16, path: &str) -> u16 {
    let request = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    response.await.unwrap().status().as_u16()
}

/// Whether the proxy has reset the stream of `body`, among the frames read so far.
fn assert_not_reset(body: &mut h2::SendStream<Bytes>, what: &str) {
    use futures_util::FutureExt as _;
    let reset = std::future::poll_fn(|cx| std::task::Poll::Ready(body.poll_reset(cx)))
        .now_or_never()
        .unwrap();
    assert!(
        reset.is_pending(),
        "{what}: the stream was reset: {reset:?}"
    );
}

/// Answers made without the whole body over HTTP/2 (a body cut off at the limit: 413; over a
/// rate limit: 429): the client gets the answer, and the stream is not reset while the client
/// is still sending (some clients, curl 7.88 among them, take a `RST_STREAM` that follows a complete
/// response for a failed request and show no answer); what it sends after the answer is read
/// and dropped, and the stream ends cleanly.
#[tokio::test]
async fn http2_answers_made_without_the_whole_body_do_not_reset_the_stream() {
    let app = Backend::start("app").await;
    let small = app_body_limit_1kib();
    let once = limit_policy(
        "once",
        "free",
        "enforce",
        &["{ key: clientIP, requests: 1, per: 1h }"],
    );
    let gw = Gateway::start(|p| app_and_free(p, app.port(), &[&small, &once])).await;
    let port = gw.port();
    let mut client = h2_connection(port).await;
    // The route `free`'s one request.
    assert_eq!(h2_get(&mut client, port, "/free").await, 200);

    for (path, status) in [("/a", 413), ("/free", 429)] {
        let request = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.reserve_capacity(4096);
        body.send_data(Bytes::from(vec![b'x'; 2000]), false)
            .unwrap();
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), response)
            .await
            .expect("an answer before the body's end")
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let mut answer = response.into_body();
        while let Some(chunk) = answer.data().await {
            chunk.unwrap();
        }

        // Every frame the proxy sent before the GET's answer has been read: no reset.
        assert_eq!(h2_get(&mut client, port, "/a").await, 200);
        assert_not_reset(&mut body, path);

        // The rest of the body: read and dropped; the stream ends without a reset.
        body.send_data(Bytes::from(vec![b'y'; 3000]), true).unwrap();
        assert_eq!(h2_get(&mut client, port, "/a").await, 200);
        assert_not_reset(&mut body, path);
    }
    assert!(
        app.received()
            .iter()
            .all(|r| r.body.len() <= 1024 || !r.complete),
        "a body over the limit reached the backend whole"
    );
}

/// What an HTTP/2 client may send ahead of what the proxy passed on: the flow-control window
/// the proxy grants a stream, shared by the connection's streams, is `h2_receive_window`
/// (HTTP/2's own 65,535 by default; hyper's 1 MiB would let each of 4,096 connections park
/// 1 MiB of request body in the proxy).
#[tokio::test]
async fn an_http2_client_may_send_one_receive_window_ahead() {
    /// The send capacity a new POST stream gets on a fresh connection to `port`, when it asks
    /// for 4 MiB: all the windows allow, once the proxy's SETTINGS are in.
    async fn granted(port: u16) -> usize {
        let mut client = h2_connection(port).await;
        // The proxy's SETTINGS (and any window update) are in once a request has its answer.
        assert_eq!(h2_get(&mut client, port, "/a").await, 200);
        let request = http::Request::post(format!("http://127.0.0.1:{port}/a"))
            .body(())
            .unwrap();
        let (_response, mut body) = client.send_request(request, false).unwrap();
        body.reserve_capacity(4 << 20);
        let mut capacity = 0;
        // Capacity comes in steps as windows open; it stops where the windows end.
        while let Ok(Some(Ok(now))) = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            std::future::poll_fn(|cx| body.poll_capacity(cx)),
        )
        .await
        {
            capacity = capacity.max(now);
        }
        capacity.max(body.capacity())
    }
    let app = Backend::start("app").await;
    let gw = Gateway::start(|p| app_and_free(p, app.port(), &[])).await;
    assert_eq!(granted(gw.port()).await, 65_535);

    let mut options = Options::default();
    // Wider, by the setting (under the h2 client's own 400 KiB send buffer, which also caps
    // what it reports).
    options.limits.h2_receive_window = 256 << 10;
    let wide = Gateway::start_with(options, |p| app_and_free(p[0], app.port(), &[])).await;
    assert_eq!(granted(wide.port()).await, 256 << 10);
}

#[tokio::test]
async fn requests_in_flight_over_the_memory_budget_are_answered_503_until_room_is_made() {
    // The heads of requests in flight are charged to a budget (twice the head and 16 KiB
    // each): HTTP/2 lets a client keep 100 large heads in flight per connection for a few
    // bytes each (HPACK), so without it 70 connections held 570 MB.
    let app = Backend::start("app").await;
    app.script([
        Step::Delay(Duration::from_millis(1500)),
        Step::Delay(Duration::from_millis(1500)),
    ]);
    let options = Options {
        // Room for two requests with a 2,000-byte header (about 21 KB each), not three.
        limits: Limits {
            in_flight_budget: 50_000,
            ..Limits::default()
        },
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| app_and_free(p[0], app.port(), &[])).await;
    let big = "x".repeat(2000);
    let slow = |h2: bool| {
        let mut r = gw.get("/a").header("x-big", &big);
        if h2 {
            r = r.h2();
        }
        r.send()
    };
    let third = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        slow(true).await
    };
    let (a, b, c) = tokio::join!(slow(false), slow(true), third);
    assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
    assert_eq!(c.status, 503, "{c:?}");
    assert_eq!(c.header("retry-after"), Some("1"), "{c:?}");
    assert_eq!(
        app.count(),
        2,
        "the refused request never reached the backend"
    );
    // Their responses ended: the room is back.
    let d = slow(false).await;
    assert_eq!(d.status, 200, "{d:?}");
}

#[tokio::test]
async fn a_response_that_has_begun_holds_no_share_of_the_in_flight_budget() {
    // Streams that last (gRPC, server-sent events) must not fill the budget: the charge ends
    // when the response head arrives. A backend that sends a head and the first chunk, then
    // keeps the body open.
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut tcp,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            )
            .await;
            held.push(tcp);
        }
    });
    let options = Options {
        limits: Limits {
            in_flight_budget: 50_000,
            ..Limits::default()
        },
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| app_and_free(p[0], port, &[])).await;
    let big = "x".repeat(2000);
    // Three streams open at once, each past its response head: the budget has room for two
    // heads, so the third is admitted only because the first two gave theirs back.
    let mut streams = Vec::new();
    for i in 0..3 {
        let tcp = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, gw.port()))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/a")
            .header("host", "app.test")
            .header("x-big", &big)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "stream {i}");
        streams.push((sender, resp));
    }
}

#[tokio::test]
async fn requests_abandoned_before_their_response_are_counted_as_499() {
    // A client that resets its stream (or closes its connection) while the backend works
    // used to leave no trace: no access-log line, no count (rapid resets of accepted
    // streams reached the backend unseen).
    let app = Backend::start("app").await;
    app.script([
        Step::Delay(Duration::from_millis(1500)),
        Step::Delay(Duration::from_millis(1500)),
    ]);
    let gw = Gateway::start(|p| app_and_free(p, app.port(), &[])).await;
    let series = "tollgate_http_requests_total{route=\"default/app\",method=\"GET\",code=\"499\"}";
    assert_eq!(gw.count(series), 0);
    for h2 in [false, true] {
        let mut r = gw.get("/a");
        if h2 {
            r = r.h2();
        }
        // Given up after 200 ms: the request's future (and its connection) is dropped.
        let gave_up = tokio::time::timeout(Duration::from_millis(200), r.send()).await;
        assert!(gave_up.is_err(), "the backend answers after 1.5 s");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.count(series) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.count(series), 2, "{}", gw.metrics());
}
