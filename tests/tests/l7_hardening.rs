//! The L7 proxy under hostile clients and failing backends, with the real binary: slowloris
//! and slow bodies (slowhttptest), request smuggling and malformed requests written byte by
//! byte on raw sockets, HTTP/2 rapid reset (CVE-2023-44487) from a python3-h2 client, the
//! connection limit, request body size limits (global and per route), and a backend that
//! resets its connection. Each test also checks that the proxy keeps serving normal requests.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_tests::admin::metrics;
use tollgate_tests::l7::{curl, one_route, one_route_with, start_agent, to, Backend, Reply};
use tollgate_tests::l7_raw::read_until_quiet;
use tollgate_tests::{metric_value, require_root, Lab, PYTHON};

fn counter(admin: u16, series: &str) -> u64 {
    metric_value(&metrics(admin), series).unwrap_or(0)
}

/// Writes `request` on a new connection and reads until the proxy closes it (or 3 s pass
/// without a byte). Returns what came back and whether the proxy closed the connection.
fn raw(port: u16, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request).expect("write the request");
    read_until_quiet(&mut s)
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// How many times the backend has seen `path`, this request included.
fn hits(proxy: u16, path: &str) -> u64 {
    let r = curl(&[
        "-H",
        "Host: a.example",
        &format!("http://127.0.0.1:{proxy}{path}"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["hits"].as_u64().expect("hits")
}

#[test]
fn request_smuggling_and_malformed_requests_are_refused_and_never_reach_the_backend() {
    require_root!();
    const PROXY: u16 = 18240;
    const ADMIN: u16 = 19820;
    const BACKEND: u16 = 19821;
    let lab = Lab::new("hdsmug", &[]);
    let _app = Backend::start("app", BACKEND);
    lab.write_policy(
        "l7.yaml",
        &one_route_with(
            PROXY,
            BACKEND,
            &format!(
                "  hostnames: ['a.example']\n  rules:\n    - backendRefs: [{}]\n",
                to("app")
            ),
        ),
    );
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    // The smuggled request every probe tries to slip past the proxy.
    const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n";
    // Both framings: hyper reads the body as chunked, drops the Content-Length, and closes
    // the connection after the response (RFC 9112 section 6.1), so what follows the chunked
    // body is never read as a request, and the backend gets no Content-Length to believe.
    let (text, closed) = raw(
        PROXY,
        format!("POST /clte HTTP/1.1\r\nHost: a.example\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").as_bytes(),
    );
    assert_eq!(statuses(&text), vec![200], "CL.TE:\n{text}");
    assert!(closed, "CL.TE: the proxy must close the connection");
    assert!(
        !text.contains("\"content-length\""),
        "CL.TE: the backend got a Content-Length:\n{text}"
    );
    let (text, closed) = raw(
        PROXY,
        format!("POST /tecl HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()).as_bytes(),
    );
    assert_eq!(statuses(&text), vec![200], "TE.CL:\n{text}");
    assert!(closed, "TE.CL: the proxy must close the connection");
    assert!(
        text.contains("\"body\": \"GET /smuggled HTTP/1.1"),
        "TE.CL: the chunked body is data for the backend, not a request:\n{text}"
    );

    let probes: Vec<(&str, String, u16)> = vec![
        (
            "two different Content-Lengths",
            format!("POST /refused HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            400,
        ),
        (
            "Transfer-Encoding: xchunked",
            format!("POST /refused HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!("POST /refused HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "Transfer-Encoding folded (obs-fold)",
            format!("POST /refused HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "space before the colon",
            format!("POST /refused HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST /refused HTTP/1.0\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "NUL in a header value",
            format!("GET /refused HTTP/1.1\r\nHost: a.example\r\nX-A: a\0b\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "bare CR in a header value",
            format!("GET /refused HTTP/1.1\r\nHost: a.example\r\nX-A: a\rb\r\n\r\n{SMUGGLED}"),
            400,
        ),
        (
            "space in the path",
            format!("GET /refused {SMUGGLED}"),
            400,
        ),
    ];
    // RFC 9112 section 3.2: more than one Host line, or a Host that is not host[:port], is a
    // 400 (from the router, not hyper: so not counted as malformed below).
    let host_probes: Vec<(&str, String, u16)> = vec![
        (
            "two Host lines",
            format!(
                "GET /refused HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n{SMUGGLED}"
            ),
            400,
        ),
        (
            "the same Host line twice",
            format!(
                "GET /refused HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n{SMUGGLED}"
            ),
            400,
        ),
        (
            "a Host that is not host[:port]",
            format!("GET /refused HTTP/1.1\r\nHost: a.example/x\r\n\r\n{SMUGGLED}"),
            400,
        ),
    ];
    // RFC 9112 sections 6.1 and 7: a transfer coding besides `chunked` (which hyper takes
    // when `chunked` is last) is one the proxy does not decode, and would reach the backend
    // unannounced once `Transfer-Encoding` is removed as hop-by-hop: 501, closed (from the
    // router: not counted as malformed either).
    let coding_probes: Vec<(&str, String, u16)> = [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ]
    .into_iter()
    .map(|te| {
        (
            te.trim_end(),
            format!("POST /refused HTTP/1.1\r\nHost: a.example\r\n{te}\r\n3\r\nabc\r\n0\r\n\r\n{SMUGGLED}"),
            501,
        )
    })
    .collect();
    for (name, bytes, want) in probes.iter().chain(&host_probes).chain(&coding_probes) {
        let (text, closed) = raw(PROXY, bytes.as_bytes());
        assert_eq!(
            statuses(&text),
            vec![*want],
            "{name}: one {want} and nothing else, got:\n{text}"
        );
        assert!(closed, "{name}: the proxy must close the connection");
    }
    // A bare LF ends lines (RFC 9112 section 2.2 allows it): one request, not two.
    let (text, _) = raw(
        PROXY,
        b"GET /lf HTTP/1.1\nHost: a.example\nConnection: close\n\n",
    );
    assert_eq!(statuses(&text), vec![200], "{text}");

    // Absolute form: the URI's host wins over Host, for routing and for the backend.
    let (text, _) = raw(
        PROXY,
        b"GET http://b.example/abs HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&text), vec![404], "{text}");
    let (text, _) = raw(
        PROXY,
        b"GET http://a.example/abs HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&text), vec![200], "{text}");
    assert!(
        text.contains("\"host\": \"a.example\""),
        "the backend must see the host the request was routed by:\n{text}"
    );

    assert_eq!(
        hits(PROXY, "/smuggled"),
        1,
        "a smuggled request reached the backend"
    );
    assert_eq!(
        hits(PROXY, "/refused"),
        1,
        "a refused request reached the backend"
    );
    // hyper's own 400s are counted by reason.
    assert!(
        counter(
            ADMIN,
            "tollgate_http_connection_errors_total{reason=\"malformed\"}"
        ) >= probes.len() as u64,
        "{}",
        metrics(ADMIN)
    );
}

/// `slowhttptest` against `url` for at most `seconds`; returns the CSV rows (seconds, closed,
/// pending, connected, service available) and its exit status line.
fn slowhttptest(
    mode: &str,
    url: &str,
    seconds: u32,
    dir: &std::path::Path,
) -> (Vec<Vec<String>>, String) {
    let prefix = dir.join(format!("slow{mode}"));
    let out = Command::new("slowhttptest")
        .args([
            mode,
            "-c",
            "40",
            "-r",
            "40",
            "-i",
            "1",
            "-s",
            "100000",
            "-p",
            "2",
            "-l",
            &seconds.to_string(),
            "-u",
            url,
            "-g",
            "-o",
        ])
        .arg(&prefix)
        .stdin(Stdio::null())
        .output()
        .expect("run slowhttptest");
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap_or_else(|e| {
        panic!(
            "slowhttptest wrote no CSV ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // Its report is coloured: drop the escape sequences.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    let mut chars = stdout.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let exit = plain
        .lines()
        .find(|l| l.contains("Exit status:"))
        .unwrap_or_default()
        .to_owned();
    let rows = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|f| f.trim().to_owned()).collect())
        .collect();
    (rows, exit)
}

#[test]
fn slowloris_and_slow_bodies_are_cut_off_and_normal_requests_still_get_through() {
    require_root!();
    const PROXY: u16 = 18241;
    const ADMIN: u16 = 19822;
    const BACKEND: u16 = 19823;
    let lab = Lab::new("hdslow", &[]);
    let _app = Backend::start("app", BACKEND);
    lab.write_policy(
        "l7.yaml",
        &one_route_with(
            PROXY,
            BACKEND,
            &format!(
                "  rules:\n    - backendRefs: [{}]\n      timeouts: {{ request: 3s }}\n",
                to("app")
            ),
        ),
    );
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--header-read-timeout", "2s", "--access-log", "off"],
    );
    let url = format!("http://127.0.0.1:{PROXY}/");
    let dir = tempfile::tempdir().unwrap();

    for mode in ["-H", "-B"] {
        // A normal client, all through the attack.
        let normal = {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for _ in 0..8 {
                    std::thread::sleep(Duration::from_millis(700));
                    codes.push(curl(&["--max-time", "5", &url]).status);
                }
                codes
            })
        };
        let started = Instant::now();
        let (rows, exit) = slowhttptest(mode, &url, 20, dir.path());
        let codes = normal.join().unwrap();
        assert!(
            codes.iter().all(|&c| c == 200),
            "{mode}: normal requests during the attack got {codes:?}"
        );
        // slowhttptest stops early when the server has closed every connection: the
        // connections opened in the first second are closed 2s (headers) or 3s (request
        // timeout) later.
        assert!(
            exit.contains("No open connections left"),
            "{mode}: the proxy must close every slow connection: {exit:?} {rows:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode}: slow connections lasted {:?}: {rows:?}",
            started.elapsed()
        );
        // Columns: seconds, closed, pending, connected, service available.
        let opened: u64 = rows
            .iter()
            .filter_map(|r| r.get(3)?.parse().ok())
            .max()
            .unwrap_or(0);
        assert!(opened >= 30, "{mode}: the attack did not connect: {rows:?}");
        if mode == "-H" {
            assert!(
                counter(
                    ADMIN,
                    "tollgate_http_connection_errors_total{reason=\"header_timeout\"}"
                ) >= 30,
                "slowloris connections are counted: {}",
                metrics(ADMIN)
            );
        }
        assert!(
            rows.iter()
                .all(|r| r.get(4).map(String::as_str) != Some("0")),
            "{mode}: slowhttptest saw the service unavailable: {rows:?}"
        );
    }
    assert_eq!(curl(&[&url]).status, 200);
}

/// A python3-h2 client: opens an h2c connection, sends `n` HEADERS each followed at once by
/// RST_STREAM, all in one write, then reads until the proxy closes the connection. Prints
/// the GOAWAY error code (or -1) and the number of frames sent.
const RAPID_RESET: &str = r#"
import json, socket, sys
import h2.config, h2.connection, h2.events, h2.exceptions
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
c.initiate_connection()
s.sendall(c.data_to_send())
for i in range(n):
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "GET"), (":path", "/rapid"), (":scheme", "http"), (":authority", "a.example")], end_stream=True)
    c.reset_stream(sid)
try:
    s.sendall(c.data_to_send())
except OSError:
    pass
goaway = -1
try:
    while True:
        data = s.recv(65536)
        if not data:
            break
        try:
            events = c.receive_data(data)
        except h2.exceptions.ProtocolError:
            break
        for e in events:
            if isinstance(e, h2.events.ConnectionTerminated):
                goaway = int(e.error_code)
        s.sendall(c.data_to_send())
except OSError:
    pass
print(json.dumps({"goaway": goaway}))
"#;

#[test]
fn an_http2_rapid_reset_flood_gets_goaway_and_few_requests_reach_the_backend() {
    require_root!();
    const PROXY: u16 = 18242;
    const ADMIN: u16 = 19824;
    const BACKEND: u16 = 19825;
    let lab = Lab::new("hdrst", &[]);
    let _app = Backend::start("app", BACKEND);
    lab.write_policy("l7.yaml", &one_route(PROXY, BACKEND));
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--h2-max-pending-resets", "10", "--access-log", "off"],
    );
    let started = Instant::now();
    let out = Command::new(PYTHON)
        .args(["-c", RAPID_RESET, &PROXY.to_string(), "2000"])
        .output()
        .expect("run the python3-h2 client");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(report.trim()).expect("the client's report");
    // ENHANCE_YOUR_CALM (0xb): the h2 server's answer to too many pending resets.
    assert_eq!(v["goaway"], 11, "{report}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        counter(
            ADMIN,
            "tollgate_http_connection_errors_total{reason=\"other\"}"
        ) >= 1,
        "the flood is counted: {}",
        metrics(ADMIN)
    );
    let seen = hits(PROXY, "/rapid") - 1;
    assert!(
        seen <= 200,
        "{seen} of 2000 reset requests reached the backend"
    );
    let h2 = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{PROXY}/"),
    ]);
    assert_eq!((h2.status, h2.version.as_str()), (200, "HTTP/2"), "{h2:?}");
}

#[test]
fn the_connection_limit_holds_new_connections_until_one_closes() {
    require_root!();
    const PROXY: u16 = 18243;
    const ADMIN: u16 = 19826;
    const BACKEND: u16 = 19827;
    let lab = Lab::new("hdconn", &[]);
    let _app = Backend::start("app", BACKEND);
    lab.write_policy("l7.yaml", &one_route(PROXY, BACKEND));
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--max-connections", "20", "--access-log", "off"],
    );
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let read_status = |s: &mut TcpStream| -> Option<u16> {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        statuses(&String::from_utf8_lossy(&buf[..n]))
            .first()
            .copied()
    };
    // 20 keep-alive connections, each with a request answered (so each is being served).
    let mut open: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", PROXY)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(GET).unwrap();
            assert_eq!(read_status(&mut s), Some(200), "connection {i}");
            s
        })
        .collect();
    // The 21st: the kernel completes the handshake, but the proxy does not serve it.
    let mut extra = TcpStream::connect(("127.0.0.1", PROXY)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    extra.write_all(GET).unwrap();
    assert_eq!(
        read_status(&mut extra),
        None,
        "the 21st connection must wait"
    );
    // One closes: the 21st gets its turn.
    drop(open.pop());
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_status(&mut extra), Some(200));
    drop(extra);
    drop(open);
    // All closed: normal clients are served.
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_eq!(r.status, 200, "{r:?}");
}

/// POSTs `size` bytes to `path`: with Content-Length, or chunked, or over HTTP/2 without a
/// length (curl -T from a pipe).
fn post(proxy: u16, path: &str, size: usize, how: &str) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, vec![b'x'; size]).unwrap();
    let url = format!("http://127.0.0.1:{proxy}{path}");
    let at = format!("@{}", file.display());
    match how {
        "length" => curl(&["--data-binary", &at, &url]),
        "chunked" => curl(&[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &at,
            &url,
        ]),
        "h2" => {
            let out = Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "cat {} | curl -sS -i --max-time 15 --http2-prior-knowledge -T - {url}",
                        file.display()
                    ),
                ])
                .output()
                .expect("run curl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let status = text
                .lines()
                .find(|l| l.starts_with("HTTP/"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0);
            Reply {
                status,
                version: "HTTP/2".into(),
                headers: vec![],
                body: text,
                error: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        other => panic!("{other}"),
    }
}

#[test]
fn bodies_over_the_route_limit_or_the_global_default_get_413() {
    require_root!();
    const PROXY: u16 = 18244;
    const ADMIN: u16 = 19828;
    const BACKEND: u16 = 19829;
    let lab = Lab::new("hdbody", &[]);
    let _app = Backend::start("app", BACKEND);
    let policy = "apiVersion: tollgate.dev/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: { name: small }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n  requestBody: { maxSize: 1KiB }\n";
    lab.write_policy(
        "l7.yaml",
        &tollgate_tests::l7::app_and_free(PROXY, BACKEND, &[policy]),
    );
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--max-request-body", "4KiB", "--access-log", "off"],
    );
    let too_large = |route: &str| {
        counter(
            ADMIN,
            &format!("tollgate_http_request_body_too_large_total{{route=\"default/{route}\"}}"),
        )
    };

    // Route `app`: its policy's 1 KiB.
    for how in ["length", "chunked", "h2"] {
        let r = post(PROXY, "/a", 1000, how);
        assert_eq!(r.status, 200, "{how}: {r:?}");
        if how != "h2" {
            assert_eq!(r.json()["body"].as_str().map(str::len), Some(1000), "{how}");
        }
        let before = too_large("app");
        let r = post(PROXY, "/a", 2000, how);
        assert_eq!(r.status, 413, "{how}: {r:?}");
        assert_eq!(too_large("app"), before + 1, "{how}");
    }
    // Route `free`: the global 4 KiB.
    for how in ["length", "chunked", "h2"] {
        let r = post(PROXY, "/free", 3000, how);
        assert_eq!(r.status, 200, "{how}: {r:?}");
        let r = post(PROXY, "/free", 5000, how);
        assert_eq!(r.status, 413, "{how}: {r:?}");
    }
    assert_eq!(too_large("free"), 3);

    // A backend that answers before the body is over the limit: the response is cut off,
    // and counted.
    let mut s = TcpStream::connect(("127.0.0.1", PROXY)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 3000, "y".repeat(3000));
    s.write_all(
        format!("POST /free/early HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}")
            .as_bytes(),
    )
    .unwrap();
    let mut head = [0u8; 512];
    let n = s.read(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..n]).into_owned();
    assert_eq!(statuses(&text), vec![200], "{text}");
    s.write_all(chunk.as_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = format!("{text}{}", String::from_utf8_lossy(&rest));
    assert!(
        !text.contains("early-answer"),
        "the response must be cut off: {text}"
    );
    assert_eq!(too_large("free"), 4);
    // The backend never saw a body over the limit, and the proxy still serves.
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{PROXY}/free")]).status,
        200
    );
}

#[test]
fn a_backend_that_resets_mid_response_gets_503_or_a_cut_response_and_nothing_hangs() {
    require_root!();
    const PROXY: u16 = 18245;
    const ADMIN: u16 = 19830;
    const BACKEND: u16 = 19831;
    let lab = Lab::new("hdreset", &[]);
    let _app = Backend::start("app", BACKEND);
    lab.write_policy("l7.yaml", &one_route(PROXY, BACKEND));
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);
    let url = |p: &str| format!("http://127.0.0.1:{PROXY}{p}");
    let resets = || {
        counter(
            ADMIN,
            "tollgate_http_upstream_errors_total{route=\"default/app\",reason=\"reset\"}",
        )
    };

    // Reset before a complete status line: 503 (no response; not retried without a retry
    // stanza), counted once.
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let before = resets();
        let started = Instant::now();
        let r = curl(&[version, &url("/reset/head")]);
        assert_eq!(r.status, 503, "{version}: {r:?}");
        assert_eq!(resets(), before + 1, "{version}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Reset after the headers: the response is cut off; the client learns it at once.
    let started = Instant::now();
    let r = curl(&[&url("/reset/body")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !r.error.is_empty() && !r.body.contains("partial\n"),
        "the client must see the response cut off: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = curl(&["--http2-prior-knowledge", &url("/reset/body")]);
    assert!(
        !r.error.is_empty(),
        "HTTP/2: the stream must be reset: {r:?}"
    );
    // And normal requests are still served.
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[version, &url("/ok")]);
        assert_eq!(r.status, 200, "{version}: {r:?}");
    }
}
