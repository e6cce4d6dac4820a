//! The conformance runner's HTTP client: one HTTP/1.1 request per connection over a plain
//! socket (`Connection: close`), so that the request is exactly what the scenario wrote (its
//! Host, its headers, its method) and the response is read as it came (every header, in order),
//! and a WebSocket handshake and one echoed message (RFC 6455).
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

/// How long a request may take before it counts as unanswered.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The Host header (none when empty).
    pub host: String,
    /// The request target (path and query).
    pub path: String,
    /// More headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body (sent with a Content-Length when not empty).
    pub body: String,
}

/// One response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked bodies decoded).
    pub body: String,
}

impl Response {
    /// Every value of a header, joined with ", " as a repeated header reads (RFC 9110 5.3).
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    Ok(stream)
}

fn head(req: &Request, extra: &[(&str, &str)]) -> String {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    if !req.host.is_empty() {
        out.push_str(&format!("Host: {}\r\n", req.host));
    }
    for (k, v) in &req.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out
}

/// Sends `req` and reads the whole response.
pub fn send(req: &Request) -> Result<Response, String> {
    let mut stream = connect(req.port)?;
    let length = req.body.len().to_string();
    let mut extra = vec![("Connection", "close")];
    if !req.body.is_empty() {
        extra.push(("Content-Length", &length));
    }
    let mut raw = head(req, &extra);
    raw.push_str("\r\n");
    raw.push_str(&req.body);
    stream
        .write_all(raw.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut data = Vec::new();
    // A reset after a complete response still leaves the response in `data`.
    if let Err(e) = stream.read_to_end(&mut data) {
        if data.is_empty() {
            return Err(format!("no response: {e}"));
        }
    }
    parse(&data, req.method == "HEAD")
}

/// TLS settings of a request.
#[derive(Debug, Clone)]
pub struct Tls<'a> {
    /// The server name (SNI, and the URL's host, which the certificate must be valid for).
    pub server_name: &'a str,
    /// The CA the server's certificate must chain to.
    pub ca: &'a std::path::Path,
    /// A client certificate and its key, to present.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Sends `req` over TLS with curl (HTTP/1.1), the certificate checked against `tls.ca` for
/// `tls.server_name`. `Err` when there is no HTTP response (a failed handshake among others).
pub fn send_tls(req: &Request, tls: &Tls<'_>) -> Result<Response, String> {
    let server_name = tls.server_name;
    let url = format!("https://{server_name}:{}{}", req.port, req.path);
    let connect_to = format!("{server_name}:{}:127.0.0.1:{}", req.port, req.port);
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-i", "--http1.1", "--max-time", "15", "--cacert"])
        .arg(tls.ca)
        .arg("--connect-to")
        .arg(&connect_to)
        .args(["-X", &req.method]);
    if let Some((cert, key)) = &tls.client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if !req.host.is_empty() {
        cmd.args(["-H", &format!("Host: {}", req.host)]);
    }
    for (k, v) in &req.headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if !req.body.is_empty() {
        cmd.args(["--data-binary", &req.body]);
    }
    let out = cmd
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if out.stdout.is_empty() {
        return Err(format!(
            "no response: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // curl has decoded the body already.
    parse_inner(&out.stdout, req.method == "HEAD", false)
}

/// Parses one HTTP/1.1 response (1xx interim responses skipped).
pub fn parse(data: &[u8], head_only: bool) -> Result<Response, String> {
    parse_inner(data, head_only, true)
}

fn parse_inner(data: &[u8], head_only: bool, decode: bool) -> Result<Response, String> {
    let mut rest = data;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| {
                format!(
                    "no complete response head in {:?}",
                    String::from_utf8_lossy(rest)
                )
            })?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        if (100..200).contains(&status) && status != 101 {
            rest = body;
            continue;
        }
        let chunked = decode
            && headers.iter().any(|(k, v)| {
                k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked")
            });
        let body = if head_only {
            Vec::new()
        } else if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        };
        return Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunked body cut short")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("a chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The key of RFC 6455 section 1.3's example, and the accept value it must be answered with.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opens a WebSocket through the proxy with `req` (its method, host, path and headers), sends
/// `message` as one masked text frame and returns the handshake's response and the text
/// message that came back.
pub fn websocket(req: &Request, message: &str) -> Result<(Response, String), String> {
    let mut stream = connect(req.port)?;
    let mut raw = head(
        req,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", WS_KEY),
        ],
    );
    raw.push_str("\r\n");
    stream
        .write_all(raw.as_bytes())
        .map_err(|e| format!("cannot send the handshake: {e}"))?;
    // The handshake's response head, read byte by byte so that no frame byte is taken with it.
    let mut head_bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !head_bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head_bytes.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(format!("no handshake response: {e}")),
        }
    }
    let response = parse(&head_bytes, true)?;
    if response.status != 101 {
        return Ok((response, String::new()));
    }
    if response.header("sec-websocket-accept").as_deref() != Some(WS_ACCEPT) {
        return Err(format!(
            "the 101 does not carry Sec-WebSocket-Accept {WS_ACCEPT}: {response:?}"
        ));
    }
    // The text message, then a binary one (as upstream's test does): each must come back
    // whole, in a frame of the same type.
    let text = exchange(&mut stream, 0x1, message.as_bytes())?;
    let binary = [1u8, 2, 3, 4, 5, 6, 7];
    let back = exchange(&mut stream, 0x2, &binary)?;
    if back != binary {
        return Err(format!(
            "sent the binary message {binary:?}, got back {back:?}"
        ));
    }
    // A close frame, so the backend ends its side cleanly.
    let _ = stream.write_all(&[0x88, 0x80, 0, 0, 0, 0]);
    Ok((response, String::from_utf8_lossy(&text).into_owned()))
}

/// Sends one short masked frame of `opcode` (a client's frames are masked, RFC 6455 5.3) and
/// reads the server's answer, which must be one unmasked frame of the same opcode.
fn exchange(stream: &mut TcpStream, opcode: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
    assert!(payload.len() < 126, "a short message: one length byte");
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream
        .write_all(&frame)
        .map_err(|e| format!("cannot send the message: {e}"))?;
    let mut header = [0u8; 2];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("no message back: {e}"))?;
    if header[0] != 0x80 | opcode || header[1] & 0x80 != 0 || header[1] & 0x7F >= 126 {
        return Err(format!(
            "not a short unmasked frame of opcode {opcode} from the server: {header:?}"
        ));
    }
    let mut echoed = vec![0u8; usize::from(header[1] & 0x7F)];
    stream
        .read_exact(&mut echoed)
        .map_err(|e| format!("the message back was cut short: {e}"))?;
    Ok(echoed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_chunked_and_after_interim_ones() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse(raw, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a").as_deref(), Some("1, 2"));
        assert_eq!(r.body, "abcde");
        let r = parse(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!(r.status, 101);
        assert!(parse(b"HTTP/1.1 200 OK\r\n", false).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            false
        )
        .is_err());
    }
}
