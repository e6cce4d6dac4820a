//! The backends of the HTTP conformance tests (`tests/tests/l7_http_conformance.rs`,
//! `l7_http2_conformance.rs`): a backend that answers with raw bytes (framings no HTTP library
//! writes), and an agent that routes to it and to an echo backend.
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::l7::{backend_object, documents, gateway, route_object, start_agent, to, Backend};
use crate::{Agent, Lab};

/// A backend on 127.0.0.1:`port` that answers each request with the raw bytes its path names
/// (the framings a correct HTTP library would never write), on a keep-alive connection.
pub fn raw_backend(port: u16) {
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
                    "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
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
pub fn start(tag: &str, proxy: u16, admin: u16, echo: u16, raw: u16) -> (Lab, Backend, Agent) {
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

/// Reads what comes on `s` until the peer closes it or its read timeout passes without a byte:
/// the bytes, and whether the peer closed (or reset) the connection.
pub fn read_until_quiet(s: &mut TcpStream) -> (String, bool) {
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
    (String::from_utf8_lossy(&out).into_owned(), closed)
}
