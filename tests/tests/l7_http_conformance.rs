//! The L7 proxy against RFC 9110 and RFC 9112, with the real binary and raw sockets: request
//! targets and methods (absolute, authority and asterisk forms, CONNECT, Max-Forwards), hosts,
//! HTTP/1.0, framing (chunk extensions, trailers, `Expect: 100-continue`, pipelining), the
//! hop-by-hop fields in both directions, the proxy's own answers (`Allow`, `Connection:
//! close`), and what a backend's response may and may not carry through (both
//! `Transfer-Encoding` and `Content-Length`, other transfer codings, a body cut short, 1xx,
//! 204, HEAD). HTTP/2 clients: `l7_http2_conformance.rs`. What is done and what is known to
//! differ: docs/l7-limits.md, "Protocol conformance".
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use tollgate_tests::l7_raw::{read_until_quiet, start};
use tollgate_tests::require_root;

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
    let (text, closed) = read_until_quiet(s);
    Exchange { text, closed }
}

/// As [`exchange`], for requests after which the proxy must close the connection (or that
/// say `Connection: close`): waits up to 3 s.
fn raw(port: u16, request: &str) -> Exchange {
    exchange(port, request.as_bytes(), Duration::from_secs(3))
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
        (
            "absolute form of another scheme",
            "GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
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
    // This hop is added to Via (RFC 9110 7.6.3), after the client's entries, with the
    // protocol the client spoke.
    assert_eq!(seen["headers"]["via"], "1.1 tollgate", "{}", e.text);
    let e = raw(
        PROXY,
        "GET /hop HTTP/1.1\r\nHost: a.example\r\nVia: 1.0 front, 1.1 edge\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        echoed(&e)["headers"]["via"],
        "1.0 front, 1.1 edge, 1.1 tollgate",
        "{}",
        e.text
    );
    let e = raw(PROXY, "GET /hop HTTP/1.0\r\nHost: a.example\r\n\r\n");
    assert_eq!(echoed(&e)["headers"]["via"], "1.0 tollgate", "{}", e.text);
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

    // An HTTP/1.0 client never gets a chunked body: it is delimited by the close.
    let e = raw(PROXY, "GET /chunked HTTP/1.0\r\nHost: raw.example\r\n\r\n");
    assert!(e.text.starts_with("HTTP/1.0 200"), "{}", e.text);
    assert!(e.header("transfer-encoding").is_none(), "{}", e.text);
    assert_eq!(e.body(), "abc", "{}", e.text);
    assert!(e.closed);

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
