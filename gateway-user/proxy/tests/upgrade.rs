//! HTTP/1.1 Upgrade pass-through (RFC 9110 7.8): a real WebSocket client and server
//! (tokio-tungstenite) through the proxy, a backend that refuses, an AuthPolicy on the route,
//! a protocol that is not WebSocket (raw bytes echoed), `Upgrade: h2c` not passed on, the
//! connection limit and the idle timeout of upgraded connections.
mod harness;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use harness::yaml::{one_route, policy};
use harness::{Gateway, Options, Secrets};
use tollgate_proxy::Limits;

/// How long a test waits for one step.
const STEP: Duration = Duration::from_secs(10);

/// What the WebSocket backend saw.
#[derive(Default)]
struct WsSeen {
    /// Headers of each handshake request.
    handshakes: Vec<HeaderMap>,
    /// The close frames it received.
    closes: Vec<(u16, String)>,
}

/// A WebSocket echo backend: text `x` is answered `echo: x`, binary is sent back as is,
/// `push` makes it send three messages of its own, `bye` makes it close (1000, "done").
/// With `refuse`, every handshake is answered 403.
async fn ws_backend(refuse: bool) -> (u16, Arc<Mutex<WsSeen>>) {
    ws_backend_tls(refuse, None).await
}

/// As [`ws_backend`], in TLS with this certificate when given (WebSocket over TLS).
async fn ws_backend_tls(refuse: bool, tls: Option<harness::pki::Pem>) -> (u16, Arc<Mutex<WsSeen>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(WsSeen::default()));
    let acceptor = tls.map(tls_acceptor);
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = s.clone();
            match acceptor.clone() {
                None => {
                    tokio::spawn(serve_ws(stream, refuse, seen));
                }
                Some(a) => {
                    tokio::spawn(async move {
                        if let Ok(tls) = a.accept(stream).await {
                            serve_ws(tls, refuse, seen).await;
                        }
                    });
                }
            }
        }
    });
    (port, seen)
}

/// A TLS acceptor with `pem` (no ALPN: the client's HTTP/1.1).
fn tls_acceptor(pem: harness::pki::Pem) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(Arc::new(pem.server_config()))
}

/// One WebSocket connection of the echo backend.
async fn serve_ws<S>(stream: S, refuse: bool, seen: Arc<Mutex<WsSeen>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let record = seen.clone();
    // The error type is tungstenite's, large or not.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &WsRequest, resp| {
        record
            .lock()
            .unwrap()
            .handshakes
            .push(req.headers().clone());
        if refuse {
            let mut r = ErrorResponse::new(Some("no websockets for you".into()));
            *r.status_mut() = StatusCode::FORBIDDEN;
            return Err(r);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(t) if t.as_str() == "push" => {
                for i in 0..3 {
                    ws.send(Message::text(format!("pushed {i}"))).await.unwrap();
                }
            }
            Message::Text(t) if t.as_str() == "bye" => {
                ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "done".into(),
                }))
                .await
                .unwrap();
            }
            Message::Text(t) => {
                ws.send(Message::text(format!("echo: {t}"))).await.unwrap();
            }
            Message::Binary(b) => ws.send(Message::Binary(b)).await.unwrap(),
            Message::Close(Some(f)) => {
                seen.lock()
                    .unwrap()
                    .closes
                    .push((f.code.into(), f.reason.to_string()));
                // tungstenite answers the close frame on the next poll.
            }
            _ => {}
        }
    }
}

/// A WebSocket client connected through the proxy on `port` to `path`, with `headers`.
async fn ws_client(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        http::Response<Option<Vec<u8>>>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    tokio::time::timeout(STEP, tokio_tungstenite::client_async(req, stream))
        .await
        .expect("the handshake ended in time")
}

async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> String {
    match tokio::time::timeout(STEP, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_messages_cross_the_proxy_both_ways_and_close_frames_pass() {
    let (backend, seen) = ws_backend(false).await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let (mut ws, resp) = ws_client(gw.port(), "/chat?room=1", &[]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(resp
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")));

    // Client to backend and back, text and binary.
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo: hello");
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    match tokio::time::timeout(STEP, ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], &blob[..]),
        other => panic!("expected the binary message back, got {other:?}"),
    }
    // Messages the backend sends on its own.
    ws.send(Message::text("push")).await.unwrap();
    for i in 0..3 {
        assert_eq!(next_text(&mut ws).await, format!("pushed {i}"));
    }
    // The client closes: the backend gets the close frame, the client its answer.
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "client done".into(),
    }))
    .await
    .unwrap();
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the close handshake failed: {e}"),
            Err(_) => panic!("no answer to the close frame"),
        }
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.closes, [(1001, "client done".to_owned())]);
        // The backend got the upgrade as the client asked for it, with the proxy's headers.
        let h = &seen.handshakes[0];
        assert!(h["upgrade"].as_bytes().eq_ignore_ascii_case(b"websocket"));
        assert!(h["connection"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("upgrade"));
        assert!(h.contains_key("sec-websocket-key"));
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }
    // Counted as the request it is.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        gw.count(r#"tollgate_http_requests_total{route="default/app",method="GET",code="101"}"#),
        1
    );
}

#[tokio::test]
async fn the_backend_can_close_a_websocket() {
    let (backend, _) = ws_backend(false).await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let (mut ws, _) = ws_client(gw.port(), "/", &[]).await.unwrap();
    ws.send(Message::text("bye")).await.unwrap();
    match tokio::time::timeout(STEP, ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => {
            assert_eq!(f.code, CloseCode::Normal);
            assert_eq!(f.reason.as_str(), "done");
        }
        other => panic!("expected the backend's close frame, got {other:?}"),
    }
    // After the close handshake the stream ends.
    let end =
        tokio::time::timeout(STEP, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(end.is_ok(), "the connection did not end after the close");
}

#[tokio::test]
async fn a_backend_that_refuses_the_upgrade_has_its_answer_relayed() {
    let (backend, seen) = ws_backend(true).await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    match ws_client(gw.port(), "/chat", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            // tungstenite keeps the body as it came (chunked through the proxy).
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("no websockets for you"), "{body:?}");
            assert!(resp.headers().get("upgrade").is_none());
        }
        other => panic!("expected the backend's 403, got {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().handshakes.len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        gw.count(r#"tollgate_http_requests_total{route="default/app",method="GET",code="403"}"#),
        1
    );
}

#[tokio::test]
async fn an_upgrade_on_a_route_with_an_auth_policy_needs_the_key() {
    let (backend, seen) = ws_backend(false).await;
    let secrets = Secrets::new();
    secrets.api_keys("keys", &[("app-1", "k-123")]);
    let auth = policy(
        "AuthPolicy",
        "app-auth",
        "app",
        "  apiKey: { header: X-Api-Key, credentialRefs: [{ name: keys }] }\n",
    );
    let options = Options {
        secrets: Some(secrets),
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| one_route(p[0], backend, &[&auth])).await;
    match ws_client(gw.port(), "/chat", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    match ws_client(gw.port(), "/chat", &[("x-api-key", "wrong")]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    assert!(
        seen.lock().unwrap().handshakes.is_empty(),
        "the backend saw an unauthenticated upgrade"
    );
    let (mut ws, _) = ws_client(gw.port(), "/chat", &[("x-api-key", "k-123")])
        .await
        .unwrap();
    ws.send(Message::text("in")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo: in");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.handshakes[0]["x-tollgate-consumer"], "app-1");
}

/// What the raw echo backend saw: the headers of each request.
type RawSeen = Arc<Mutex<Vec<HeaderMap>>>;

/// A backend that upgrades every request to `echo/1` (answering 101 with that `Upgrade`, or
/// without it when the request has `X-Forget-Upgrade`) and then sends back every byte it
/// reads; a request without `Upgrade` gets 200 `plain`.
async fn raw_echo_backend() -> (u16, RawSeen) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: RawSeen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = s.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(req.headers().clone());
                        if !req.headers().contains_key("upgrade") {
                            return Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"plain"),
                            )));
                        }
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(up) = on.await else { return };
                            let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        });
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        if !req.headers().contains_key("x-forget-upgrade") {
                            resp.headers_mut()
                                .insert("upgrade", "echo/1".parse().unwrap());
                        }
                        resp.headers_mut()
                            .insert("connection", "upgrade".parse().unwrap());
                        resp.headers_mut()
                            .insert("x-echo", "ready".parse().unwrap());
                        Ok(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, seen)
}

/// Sends `head` (a request head, CRLF line ends, ending with an empty line) to the proxy and
/// reads the response head; returns it (as text) and the connection.
async fn raw_request(port: u16, head: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(STEP, s.read(&mut byte))
            .await
            .expect("the response head in time")
            .unwrap();
        assert!(
            n == 1,
            "the connection closed in the response head: {got:?}"
        );
        got.push(byte[0]);
    }
    (String::from_utf8(got).unwrap(), s)
}

#[tokio::test]
async fn a_protocol_other_than_websocket_is_passed_through_byte_for_byte() {
    let (backend, seen) = raw_echo_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let (head, mut s) = raw_request(
        gw.port(),
        "GET /raw HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, X-Drop\r\nX-Drop: 1\r\nUpgrade: echo/1\r\n\r\n",
    )
    .await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101 "), "{head}");
    assert!(lower.contains("\r\nupgrade: echo/1\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(lower.contains("\r\nx-echo: ready\r\n"), "{head}");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let writer = async {
        w.write_all(&payload).await.unwrap();
    };
    let mut back = vec![0u8; payload.len()];
    let reader = async {
        tokio::time::timeout(STEP, r.read_exact(&mut back))
            .await
            .expect("the echo in time")
            .unwrap();
    };
    tokio::join!(writer, reader);
    assert_eq!(back, payload);
    // The client's half-close reaches the backend, whose close reaches the client.
    w.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(STEP, r.read_to_end(&mut rest))
        .await
        .expect("the end in time")
        .unwrap();
    assert_eq!(n, 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["upgrade"], "echo/1");
    assert_eq!(seen[0]["connection"], "upgrade");
    assert!(
        !seen[0].contains_key("x-drop"),
        "a header the client's Connection named reached the backend"
    );
}

#[tokio::test]
async fn h2c_is_never_asked_of_a_backend() {
    let (backend, seen) = raw_echo_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let (head, _s) = raw_request(
        gw.port(),
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    {
        let seen = seen.lock().unwrap();
        assert!(!seen[0].contains_key("upgrade"), "{:?}", seen[0]);
        assert!(!seen[0].contains_key("http2-settings"), "{:?}", seen[0]);
    }
    // With another protocol beside it, only that one is passed on.
    let (head, _s) = raw_request(
        gw.port(),
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: h2c, echo/1\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(seen.lock().unwrap()[1]["upgrade"], "echo/1");
    // An Upgrade without the connection option is no upgrade request (RFC 9110 7.8).
    let (head, _s) = raw_request(
        gw.port(),
        "GET /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: echo/1\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(!seen.lock().unwrap()[2].contains_key("upgrade"));
}

#[tokio::test]
async fn upgraded_connections_count_against_the_connection_limit_and_idle_out() {
    let (backend, _) = raw_echo_backend().await;
    let options = Options {
        limits: Limits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| one_route(p[0], backend, &[])).await;
    let upgrade =
        "GET /raw HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo/1\r\n\r\n";
    // Each tunnel holds a place, and so does the connection asking for the next one: of 4
    // places, at most 3 tunnels, then 503.
    let mut tunnels = Vec::new();
    let refused = loop {
        let (head, stream) = raw_request(gw.port(), upgrade).await;
        if head.starts_with("HTTP/1.1 101 ") {
            tunnels.push(stream);
            assert!(tunnels.len() <= 3, "more tunnels than the limit allows");
            continue;
        }
        break head;
    };
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(!tunnels.is_empty());
    assert!(
        gw.count(
            r#"tollgate_http_upstream_errors_total{route="default/app",reason="upgrade_limit"}"#
        ) >= 1
    );
    // Closed tunnels give their places back (a client connection gives its own back a moment
    // after its 101: asked again until the upgrade goes through).
    drop(tunnels);
    let tunnel = || async {
        for _ in 0..50 {
            let (head, stream) = raw_request(gw.port(), upgrade).await;
            if head.starts_with("HTTP/1.1 101 ") {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the places of the closed tunnels were not given back");
    };
    let mut ta = tunnel().await;
    let mut tb = tunnel().await;

    // Kept busy, a tunnel outlives the idle timeout; left quiet, it is closed.
    for _ in 0..4 {
        ta.write_all(b"tick").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(STEP, ta.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"tick");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), tb.read_to_end(&mut rest))
        .await
        .expect("the idle tunnel was closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_websocket_to_a_tls_backend_goes_over_tls() {
    let ca = harness::pki::Ca::new("backend CA");
    let (backend, seen) = ws_backend_tls(false, Some(ca.server("ws.internal"))).await;
    let secrets = Secrets::new();
    secrets.ca("backend-ca", &ca.cert);
    let options = Options {
        secrets: Some(secrets),
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| {
        let g = harness::yaml::gateway(&[("http", p[0], None)]);
        let b = harness::yaml::backend(
            "app",
            &[backend],
            "  tls: { hostname: ws.internal, caCertificateRefs: [{ name: backend-ca }] }\n  appProtocol: kubernetes.io/wss\n",
        );
        let r = harness::yaml::route(
            "app",
            &format!("  rules:\n    - backendRefs: [{}]\n", harness::yaml::to("app")),
        );
        harness::yaml::documents(&[&g, &b, &r])
    })
    .await;
    let (mut ws, _) = ws_client(gw.port(), "/secure", &[]).await.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo: over tls");
    assert_eq!(seen.lock().unwrap().handshakes.len(), 1);
}

#[tokio::test]
async fn a_101_that_does_not_say_what_it_switches_to_is_a_bad_gateway() {
    let (backend, _) = raw_echo_backend().await;
    let gw = Gateway::start(|p| one_route(p, backend, &[])).await;
    let (head, _s) = raw_request(
        gw.port(),
        "GET /raw HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo/1\r\nX-Forget-Upgrade: 1\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
}
