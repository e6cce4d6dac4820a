//! Talking to a running agent's admin port: `/status`, `/metrics` and the webhook; and the plain
//! HTTP GET and the exposition reading they rest on (also used on other loopback servers, such as
//! Prometheus).
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP/1.1 POST to `path` on loopback `port`: status code and body. With `body: None`,
/// only the headers are sent (a `Content-Length` among `headers` announces a body that never
/// comes): the answer to the headers alone.
pub fn post(port: u16, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        s.write_all(body).unwrap();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    status_and_body(&String::from_utf8_lossy(&raw))
}

/// The status code (0 when there is none) and the body of a raw HTTP/1.1 response.
fn status_and_body(raw: &str) -> (u16, String) {
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The GitHub-style signature header value of `body`: `sha256=<hex HMAC-SHA256>`, computed by
/// the openssl command (an implementation independent of the agent's).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .trim()
        .rsplit("= ")
        .next()
        .unwrap_or_else(|| panic!("openssl printed {text:?}"));
    assert_eq!(hex.len(), 64, "openssl printed {text:?}");
    format!("sha256={hex}")
}

/// The agent's `/status`.
pub fn status(admin: u16) -> serde_json::Value {
    let (code, body) = http_get(admin, "/status", "").expect("admin server");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// The revision in force, from `/status`.
pub fn applied(admin: u16) -> String {
    status(admin)["applied"]["id"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits until `/status` shows `commit` in force; returns how long it took.
pub fn wait_applied(admin: u16, commit: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if applied(admin) == commit {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{commit} not applied after {timeout:?}; /status: {}",
            status(admin)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The agent's `/metrics` text.
pub fn metrics(admin: u16) -> String {
    http_get(admin, "/metrics", "")
        .expect("the admin server answers")
        .1
}

/// A value of the agent's `/metrics` (0 when the series is absent).
pub fn metric(admin: u16, prefix: &str) -> u64 {
    metric_value(&metrics(admin), prefix).unwrap_or(0)
}

/// A plain HTTP/1.1 GET on loopback (the admin server, Prometheus): the status code and the
/// body. `headers` are extra header lines, each ending in `\r\n`. `None` when nothing answers.
pub fn http_get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    Some(status_and_body(&raw))
}

/// The value of the first sample line of a metrics exposition that starts with `prefix` (a
/// metric name with its labels, or followed by a space).
pub fn metric_value(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
