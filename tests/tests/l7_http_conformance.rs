//! The L7 proxy against RFC 9110 and RFC 9112, with the real binary and raw sockets: request
//! targets and methods (absolute, authority and asterisk forms, CONNECT, Max-Forwards), hosts,
//! HTTP/1.0, framing (chunk extensions, trailers, `Expect: 100-continue`, pipelining), the
//! hop-by-hop fields in both directions, the proxy's own answers (`Allow`, `Connection:
//! close`), and what a backend's response may and may not carry through (both
//! `Transfer-Encoding` and `Content-Length`, other transfer codings, a body cut short, 1xx,
//! 204, HEAD). What is done and what is known to differ: docs/l7-gateway.md, "Protocol
//! conformance".
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tollgate_tests::l7::{
    backend_object, documents, gateway, route_object, start_agent, to, Backend,
};
use tollgate_tests::{require_root, Agent, Lab};

/// What came back on one connection: the bytes, and whether the proxy closed it.
struct Exchange {
    text: String,
    closed: bool,
}

impl Exchange {
    /// The status codes of the responses, in order.
    fn statuses(&self) -> Vec<u16> {
        self.text
            .split('\n')
            .filter(|l| l.starts_with("HTTP/1."))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// The value of header `name` in the first response (lower-case names, as hyper writes).
    fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The first response's body (up to the next response, if any).
    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Writes `request` on a new connection and reads until the proxy closes it, or `quiet`
/// passes without a byte.
fn exchange(port: u16, request: &[u8], quiet: Duration) -> Exchange {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(quiet)).unwrap();
    s.write_all(request).expect("write the request");
    read_all(&mut s)
}

fn read_all(s: &mut TcpStream) -> Exchange {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true, // reset
        }
    };
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// As [`exchange`], for requests after which the proxy must close the connection (or that
/// say `Connection: close`): waits up to 3 s.
fn raw(port: u16, request: &str) -> Exchange {
    exchange(port, request.as_bytes(), Duration::from_secs(3))
}

/// A backend on 127.0.0.1:`port` that answers each request with the raw bytes its path names
/// (the framings a correct HTTP library would never write), on a keep-alive connection.
fn raw_backend(port: u16) {
    // A port of an earlier run may take a moment to be free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => break l,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("bind the raw backend on {port}: {e}; again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("bind the raw backend on {port}: {e}"),
        }
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || loop {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let response: &[u8] = match path.as_str() {
                    "/te-and-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                    "/gzip-te" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
                    "/gzip-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                    "/bad-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc",
                    "/two-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                    "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
                    "/short-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                    "/204" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                    "/hop" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-named\r\nX-Named: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: foo\r\nTrailer: x-t\r\nX-Kept: 1\r\n\r\nok",
                    "/103" => b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    "/eof" => b"HTTP/1.1 200 OK\r\n\r\nuntil-eof",
                    _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                };
                let _ = s.write_all(response);
                let _ = s.flush();
                // Keep-alive, as a backend would, except where the close ends the body (or
                // cuts it short).
                if ["/short", "/short-chunked", "/eof"].contains(&path.as_str()) {
                    return;
                }
            });
        }
    });
}

/// An agent whose listener on `proxy` routes `a.example` to an echo backend on `echo` (but
/// `/moved`, redirected) and `raw.example` to a [`raw_backend`] on `raw`.
fn start(tag: &str, proxy: u16, admin: u16, echo: u16, raw: u16) -> (Lab, Backend, Agent) {
    let lab = Lab::new(tag, &[]);
    let app = Backend::start("app", echo);
    raw_backend(raw);
    lab.write_policy(
        "l7.yaml",
        &documents(&[
            &gateway(&[("http", proxy, None)]),
            &backend_object("app", &[echo], ""),
            &backend_object("raw", &[raw], ""),
            &route_object(
                "app",
                &format!(
                    "  hostnames: ['a.example']\n  rules:\n    - backendRefs: [{}]\n    - matches: [{{ path: {{ type: Exact, value: /moved }} }}]\n      filters:\n        - type: RequestRedirect\n          requestRedirect: {{ hostname: b.example, statusCode: 301 }}\n",
                    to("app")
                ),
            ),
            &route_object(
                "raw",
                &format!(
                    "  hostnames: ['raw.example']\n  rules:\n    - backendRefs: [{}]\n",
                    to("raw")
                ),
            ),
        ]),
    );
    let agent = start_agent(&lab, admin, &[proxy], &[]);
    (lab, app, agent)
}

/// The JSON the echo backend answered with (the first response's body).
fn echoed(e: &Exchange) -> serde_json::Value {
    let body = e.body();
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!("no answer of the echo backend:\n{}", e.text);
        });
    serde_json::from_str(json).expect("the echo backend's JSON")
}

#[test]
fn request_targets_methods_and_hosts_follow_rfc_9112_and_9110() {
    require_root!();
    const PROXY: u16 = 18560;
    const ADMIN: u16 = 19860;
    const ECHO: u16 = 19861;
    const RAW: u16 = 19862;
    let (_lab, _app, _agent) = start("httptarget", PROXY, ADMIN, ECHO, RAW);

    // Absolute form: the target's authority wins, and is the Host the backend gets.
    let e = raw(
        PROXY,
        "GET http://a.example/abs HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    let seen = echoed(&e);
    assert_eq!(seen["path"], "/abs");
    assert_eq!(seen["headers"]["host"], "a.example", "{}", e.text);

    // Authority form is for CONNECT only; CONNECT is not served (405, Allow, closed).
    let e = raw(
        PROXY,
        "GET a.example:80 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![400], "{}", e.text);
    let e = raw(
        PROXY,
        "CONNECT a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\nGET /after HTTP/1.1\r\nHost: a.example\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![405], "CONNECT:\n{}", e.text);
    let allow = e.header("allow").unwrap_or_default();
    assert!(
        allow.contains("GET") && !allow.contains("CONNECT"),
        "{}",
        e.text
    );
    assert_eq!(
        e.header("connection").as_deref(),
        Some("close"),
        "{}",
        e.text
    );
    assert!(e.closed, "the connection after CONNECT must close");

    // Asterisk form: OPTIONS only, answered by the proxy with Allow.
    let e = raw(
        PROXY,
        "OPTIONS * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "OPTIONS *:\n{}", e.text);
    assert!(
        e.header("allow").is_some_and(|a| a.contains("OPTIONS")),
        "{}",
        e.text
    );
    assert_eq!(
        e.header("content-length").as_deref(),
        Some("0"),
        "{}",
        e.text
    );
    let e = raw(
        PROXY,
        "GET * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![400], "GET *:\n{}", e.text);

    // Max-Forwards (RFC 9110 7.6.2): 0 on OPTIONS or TRACE: the proxy answers; otherwise
    // decremented. TRACE reflects the request, credentials left out.
    let e = raw(
        PROXY,
        "OPTIONS /mf HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert!(
        e.header("allow").is_some(),
        "not the proxy's answer:\n{}",
        e.text
    );
    assert!(e.header("x-backend").is_none(), "forwarded:\n{}", e.text);
    let e = raw(
        PROXY,
        "TRACE /mf HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\nAuthorization: Bearer secret\r\nX-Probe: 1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert_eq!(e.header("content-type").as_deref(), Some("message/http"));
    assert!(e.body().starts_with("TRACE /mf HTTP/1.1\r\n"), "{}", e.text);
    assert!(e.body().contains("x-probe: 1"), "{}", e.text);
    assert!(
        !e.body().contains("secret"),
        "credentials reflected:\n{}",
        e.text
    );
    let e = raw(
        PROXY,
        "OPTIONS /mf HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 5\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert_eq!(echoed(&e)["headers"]["max-forwards"], "4", "{}", e.text);

    // Methods: a bad token is 400; an extension method is forwarded.
    let e = raw(PROXY, "G(T / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(e.statuses(), vec![400], "{}", e.text);
    assert!(e.closed);
    let e = raw(
        PROXY,
        "PURGE /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    // (Python's server answers 501 to methods it does not know.)
    assert!(
        e.text.contains("Unsupported method ('PURGE')"),
        "{}",
        e.text
    );

    // Over-long request lines and header sections: 431 and closed, never a reset.
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "a".repeat(70_000)
    );
    let e = raw(PROXY, &long_line);
    assert_eq!(e.statuses(), vec![431], "long request line:\n{}", e.text);
    assert!(e.closed);
    let long_field = format!(
        "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    let e = raw(PROXY, &long_field);
    assert_eq!(e.statuses(), vec![431], "long header section:\n{}", e.text);
    assert_eq!(e.header("connection").as_deref(), Some("close"));
    assert!(e.closed);

    // HTTP/1.0: no Host needed; closed after the answer unless keep-alive is asked for.
    let e = raw(PROXY, "GET /h10 HTTP/1.0\r\n\r\n");
    assert_eq!(e.statuses(), vec![404], "{}", e.text);
    assert!(e.closed, "HTTP/1.0 without keep-alive must be closed");
    let e = raw(PROXY, "GET /h10 HTTP/1.0\r\nHost: a.example\r\n\r\n");
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert!(e.text.starts_with("HTTP/1.0 200"), "{}", e.text);
    assert!(e.closed);
    let e = exchange(
        PROXY,
        b"GET /h10 HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n",
        Duration::from_secs(1),
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert_eq!(e.header("connection").as_deref(), Some("keep-alive"));
    assert!(!e.closed, "HTTP/1.0 keep-alive asked for must be kept");

    // HTTP/1.1 hosts: missing, twice: 400 and closed.
    for (what, req) in [
        ("no Host", "GET / HTTP/1.1\r\n\r\n"),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        ),
        (
            "absolute form without Host",
            "GET http://a.example/ HTTP/1.1\r\n\r\n",
        ),
    ] {
        let e = raw(PROXY, req);
        assert_eq!(e.statuses(), vec![400], "{what}:\n{}", e.text);
        assert_eq!(e.header("connection").as_deref(), Some("close"), "{what}");
        assert!(e.closed, "{what}");
    }
}

#[test]
fn framing_and_hop_by_hop_fields_follow_rfc_9112_and_9110() {
    require_root!();
    const PROXY: u16 = 18561;
    const ADMIN: u16 = 19863;
    const ECHO: u16 = 19864;
    const RAW: u16 = 19865;
    let (_lab, _app, _agent) = start("httpframe", PROXY, ADMIN, ECHO, RAW);

    // Chunk extensions are dropped, the body passes; trailers are dropped.
    let e = raw(
        PROXY,
        "POST /chunked HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    let seen = echoed(&e);
    assert_eq!(seen["body"], "abc");

    // Expect: 100-continue: the proxy says 100, then the body goes through.
    let mut s = TcpStream::connect(("127.0.0.1", PROXY)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"POST /expect HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("100 Continue");
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    s.write_all(b"abc").unwrap();
    let e = read_all(&mut s);
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert_eq!(echoed(&e)["body"], "abc");
    // ... and a request the proxy refuses gets its answer without waiting for the body, and
    // the connection closed (the body is not read).
    let e = raw(
        PROXY,
        "POST /expect HTTP/1.1\r\nHost: nowhere.example\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![404], "{}", e.text);
    assert!(!e.text.contains("100 Continue"), "{}", e.text);
    assert_eq!(
        e.header("connection").as_deref(),
        Some("close"),
        "{}",
        e.text
    );
    assert!(e.closed);

    // Proxy-made answers to requests with a body: Connection: close, then closed, so that the
    // unread body is never read as a request.
    for (what, req, status) in [
        (
            "413",
            "POST /big HTTP/1.1\r\nHost: a.example\r\nContent-Length: 99999999999\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n",
            413,
        ),
        (
            "404",
            "POST /x HTTP/1.1\r\nHost: nowhere.example\r\nContent-Length: 43\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n",
            404,
        ),
        (
            "a redirect",
            "POST /moved HTTP/1.1\r\nHost: a.example\r\nContent-Length: 43\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n",
            301,
        ),
        (
            "broken chunked body",
            "POST /broken HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
    ] {
        let e = raw(PROXY, req);
        assert_eq!(e.statuses(), vec![status], "{what}:\n{}", e.text);
        assert_eq!(e.header("connection").as_deref(), Some("close"), "{what}:\n{}", e.text);
        assert!(e.closed, "{what}");
    }

    // A GET with a body: forwarded with it.
    let e = raw(
        PROXY,
        "GET /get-body HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(echoed(&e)["body"], "abc", "{}", e.text);

    // Pipelined requests: answered in order.
    let e = raw(
        PROXY,
        "GET /p1 HTTP/1.1\r\nHost: a.example\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a.example\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200, 200, 200], "{}", e.text);
    let order: Vec<usize> = ["\"/p1\"", "\"/p2\"", "\"/p3\""]
        .iter()
        .map(|p| e.text.find(p).expect("each pipelined answer"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", e.text);

    // Hop-by-hop fields of the request never reach the backend.
    let e = raw(
        PROXY,
        "GET /hop HTTP/1.1\r\nHost: a.example\r\nConnection: x-named, close\r\nX-Named: 1\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nUpgrade: foo/1\r\nTrailer: x\r\nX-Kept: 1\r\n\r\n",
    );
    let seen = echoed(&e);
    for h in [
        "connection",
        "x-named",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "trailer",
    ] {
        assert!(
            seen["headers"][h].is_null(),
            "{h} reached the backend:\n{}",
            e.text
        );
    }
    assert_eq!(seen["headers"]["x-kept"], "1");
    // ... nor those of the response the client (the echo backend sends `Connection:
    // keep-alive, X-Hop`, `X-Hop` and `Keep-Alive`; the raw one more).
    assert!(
        e.header("x-hop").is_none() && e.header("keep-alive").is_none(),
        "{}",
        e.text
    );
    let e = raw(
        PROXY,
        "GET /hop HTTP/1.1\r\nHost: raw.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    for h in [
        "x-named",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert!(e.header(h).is_none(), "{h} reached the client:\n{}", e.text);
    }
    assert_eq!(e.header("x-kept").as_deref(), Some("1"));

    // Invalid field names and values, obs-fold, whitespace before the colon: 400, closed.
    for (what, req) in [
        (
            "a control character in a value",
            "GET / HTTP/1.1\r\nHost: a.example\r\nX-Bad: a\x01b\r\n\r\n",
        ),
        (
            "a delimiter in a name",
            "GET / HTTP/1.1\r\nHost: a.example\r\nX(Bad: a\r\n\r\n",
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: a.example\r\nX-Fold: a\r\n b\r\n\r\n",
        ),
        (
            "space before the colon",
            "GET / HTTP/1.1\r\nHost: a.example\r\nX-Sp : 1\r\n\r\n",
        ),
        (
            "a signed Content-Length",
            "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: +1\r\n\r\nx",
        ),
    ] {
        let e = raw(PROXY, req);
        assert_eq!(e.statuses(), vec![400], "{what}:\n{}", e.text);
        assert!(e.closed, "{what}");
    }
}

#[test]
fn backend_responses_are_relayed_only_when_their_framing_is_sound() {
    require_root!();
    const PROXY: u16 = 18562;
    const ADMIN: u16 = 19866;
    const ECHO: u16 = 19867;
    const RAW: u16 = 19868;
    let (_lab, _app, _agent) = start("httpresp", PROXY, ADMIN, ECHO, RAW);
    let get = |path: &str, method: &str| {
        raw(
            PROXY,
            &format!("{method} {path} HTTP/1.1\r\nHost: raw.example\r\nConnection: close\r\n\r\n"),
        )
    };

    // Framings that cannot be relayed: 502, never the backend's body.
    for path in [
        "/te-and-cl",
        "/gzip-te",
        "/gzip-chunked",
        "/bad-cl",
        "/two-cl",
    ] {
        let e = get(path, "GET");
        assert_eq!(e.statuses(), vec![502], "{path}:\n{}", e.text);
        assert!(
            e.header("transfer-encoding").is_none(),
            "{path}:\n{}",
            e.text
        );
        assert!(
            !e.text.contains("hel") && !e.text.contains("abc"),
            "{path}:\n{}",
            e.text
        );
    }

    // A body cut short: the client's connection is closed, even though it asked for
    // keep-alive, and the body is not completed.
    for path in ["/short", "/short-chunked"] {
        let e = exchange(
            PROXY,
            format!("GET {path} HTTP/1.1\r\nHost: raw.example\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(e.statuses(), vec![200], "{path}:\n{}", e.text);
        assert!(e.closed, "{path}: the connection must close:\n{}", e.text);
        assert!(
            !e.text.ends_with("0\r\n\r\n"),
            "{path}: completed:\n{}",
            e.text
        );
    }

    // 204: no body, no Content-Length; 1xx from the backend are not relayed; a body delimited
    // by the backend's close is re-framed; Date is always there.
    let e = get("/204", "GET");
    assert_eq!(e.statuses(), vec![204], "{}", e.text);
    assert!(e.header("content-length").is_none(), "{}", e.text);
    assert!(e.text.ends_with("\r\n\r\n"), "{}", e.text);
    let e = get("/103", "GET");
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert!(e.header("date").is_some());
    let e = get("/eof", "GET");
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert!(e.text.contains("until-eof"), "{}", e.text);

    // HEAD: the headers of the GET, no body.
    let e = raw(
        PROXY,
        "HEAD / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![200], "{}", e.text);
    assert!(e.header("content-length").is_some(), "{}", e.text);
    assert_eq!(e.body(), "", "{}", e.text);

    // The proxy's own answers carry Date and a body that says why.
    let e = raw(
        PROXY,
        "GET / HTTP/1.1\r\nHost: nowhere.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(e.statuses(), vec![404], "{}", e.text);
    assert!(e.header("date").is_some(), "{}", e.text);
    assert_eq!(
        e.header("content-length"),
        Some(e.body().len().to_string()),
        "{}",
        e.text
    );
}

/// A python3-h2 client (its own checks off, so that it can send malformed requests): one h2c
/// connection per request, from `sys.argv[2]` (JSON: a list of `[name, [[field, value]...]]`).
/// Prints, per name, the response's status, headers and body, or the code of the stream's (or
/// the connection's) reset.
const H2_CLIENT: &str = r#"
import json, socket, sys
import h2.config, h2.connection, h2.events, h2.exceptions
port, cases = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name, fields in cases:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8",
        validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [tuple(f) for f in fields], end_stream=True)
    s.sendall(c.data_to_send())
    r = {"status": None, "headers": {}, "body": "", "reset": None}
    done = False
    try:
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    for k, v in e.headers:
                        if k == ":status":
                            r["status"] = int(v)
                        else:
                            r["headers"][k] = v
                elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    r["body"] += e.data.decode("utf-8", "replace")
                    c.acknowledge_received_data(e.flow_controlled_length, sid)
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    done = True
                elif isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                    r["reset"] = int(e.error_code)
                    done = True
                elif isinstance(e, h2.events.ConnectionTerminated):
                    r["reset"] = int(e.error_code)
                    done = True
            s.sendall(c.data_to_send())
    except (OSError, h2.exceptions.ProtocolError) as e:
        r["error"] = str(e)
    s.close()
    out[name] = r
print(json.dumps(out))
"#;

#[test]
fn http2_requests_follow_rfc_9113_and_the_same_rules_as_http1() {
    require_root!();
    const PROXY: u16 = 18563;
    const ADMIN: u16 = 19869;
    const ECHO: u16 = 19870;
    const RAW: u16 = 19871;
    let (_lab, _app, _agent) = start("httph2", PROXY, ADMIN, ECHO, RAW);
    let get = |host: &str, path: &str, more: &[(&str, &str)]| {
        let mut f: Vec<(String, String)> = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", host),
            (":path", path),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        f.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("plain", get("a.example", "/h2", &[])),
        (
            "te-trailers",
            get("a.example", "/h2", &[("te", "trailers")]),
        ),
        (
            "connection",
            get("a.example", "/h2", &[("connection", "keep-alive")]),
        ),
        (
            "keep-alive",
            get("a.example", "/h2", &[("keep-alive", "5")]),
        ),
        (
            "proxy-connection",
            get("a.example", "/h2", &[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            get("a.example", "/h2", &[("transfer-encoding", "chunked")]),
        ),
        (
            "upgrade",
            get("a.example", "/h2", &[("upgrade", "websocket")]),
        ),
        ("te-gzip", get("a.example", "/h2", &[("te", "gzip")])),
        (
            "upper-case name",
            get("a.example", "/h2", &[("X-Upper", "1")]),
        ),
        (
            "host disagreeing",
            get("a.example", "/h2", &[("host", "b.example")]),
        ),
        (
            "connect",
            vec![
                (":method".into(), "CONNECT".into()),
                (":authority".into(), "a.example:443".into()),
            ],
        ),
        (
            "options *",
            vec![
                (":method".into(), "OPTIONS".into()),
                (":scheme".into(), "http".into()),
                (":authority".into(), "a.example".into()),
                (":path".into(), "*".into()),
            ],
        ),
        ("response hop-by-hop", get("raw.example", "/hop", &[])),
        ("response te-and-cl", get("raw.example", "/te-and-cl", &[])),
    ];
    let arg = serde_json::to_string(&cases).unwrap();
    let out = std::process::Command::new(tollgate_tests::PYTHON)
        .args(["-c", H2_CLIENT, &PROXY.to_string(), &arg])
        .output()
        .expect("run the python3-h2 client");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(report.trim()).expect("the client's report");

    assert_eq!(r["plain"]["status"], 200, "{report}");
    // `TE: trailers` is the one TE allowed (RFC 9113 8.2.2); hop-by-hop, it is not forwarded.
    assert_eq!(r["te-trailers"]["status"], 200, "{report}");
    let seen: serde_json::Value =
        serde_json::from_str(r["te-trailers"]["body"].as_str().unwrap()).unwrap();
    assert!(seen["headers"]["te"].is_null(), "{report}");
    // Connection-specific fields, another TE, upper-case names: malformed (RFC 9113 8.2.1,
    // 8.2.2): the stream is reset with PROTOCOL_ERROR (1), nothing reaches the backend.
    for case in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te-gzip",
        "upper-case name",
    ] {
        assert_eq!(r[case]["reset"], 1, "{case}: {report}");
        assert!(r[case]["status"].is_null(), "{case}: {report}");
    }
    // A Host naming another authority than :authority (RFC 9113 8.3.1): 400.
    assert_eq!(r["host disagreeing"]["status"], 400, "{report}");
    // CONNECT: 405 with Allow, as in HTTP/1.1; OPTIONS *: 200 with Allow.
    assert_eq!(r["connect"]["status"], 405, "{report}");
    assert!(r["connect"]["headers"]["allow"].is_string(), "{report}");
    assert_eq!(r["options *"]["status"], 200, "{report}");
    assert!(r["options *"]["headers"]["allow"].is_string(), "{report}");
    // Backend responses: hop-by-hop fields removed; a framing that cannot be relayed: 502.
    assert_eq!(r["response hop-by-hop"]["status"], 200, "{report}");
    for h in [
        "x-named",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "connection",
    ] {
        assert!(
            r["response hop-by-hop"]["headers"][h].is_null(),
            "{h}: {report}"
        );
    }
    assert_eq!(r["response te-and-cl"]["status"], 502, "{report}");
}
