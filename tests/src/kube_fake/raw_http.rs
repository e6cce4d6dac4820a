//! A minimal blocking HTTP/1.1 client for the unit tests: the raw protocol (status lines,
//! chunked watch streams) as a client sees it, without kube's interpretation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::FakeApiServer;

pub(super) fn open(
    fake: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> TcpStream {
    let mut stream =
        TcpStream::connect(fake.addr()).unwrap_or_else(|e| panic!("connect {}: {e}", fake.addr()));
    let auth = fake
        .token()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: fake\r\nUser-Agent: unit-test/1.0\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    stream
}

/// Reads one HTTP/1.1 response head; returns the status and whether the body is chunked.
pub(super) fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, bool, Option<usize>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        chunked |= l == "transfer-encoding: chunked";
        if let Some(n) = l.strip_prefix("content-length: ") {
            length = n.parse().ok();
        }
    }
    (status, chunked, length)
}

/// One request, the whole answer: (status, JSON body or Null).
pub(super) fn call(
    fake: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let mut reader = BufReader::new(open(fake, method, path, content_type, body));
    let (status, chunked, length) = read_head(&mut reader);
    let mut raw = Vec::new();
    if chunked {
        let mut w = WatchReader {
            reader,
            buf: Vec::new(),
        };
        while w.fill().unwrap_or(false) {}
        raw = w.buf;
    } else if let Some(n) = length {
        raw.resize(n, 0);
        reader.read_exact(&mut raw).expect("body");
    }
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

pub(super) fn get(fake: &FakeApiServer, path: &str) -> (u16, Value) {
    call(fake, "GET", path, "application/json", "")
}

pub(super) fn post(fake: &FakeApiServer, path: &str, body: Value) -> (u16, Value) {
    call(fake, "POST", path, "application/json", &body.to_string())
}

/// Reads newline-delimited watch events from a chunked response.
pub(super) struct WatchReader {
    reader: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl WatchReader {
    pub(super) fn start(fake: &FakeApiServer, path: &str) -> (u16, WatchReader) {
        let stream = open(fake, "GET", path, "application/json", "");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut reader = BufReader::new(stream);
        let (status, _, _) = read_head(&mut reader);
        (
            status,
            WatchReader {
                reader,
                buf: Vec::new(),
            },
        )
    }

    /// Reads one chunk into `buf`; false at the end of the stream.
    pub(super) fn fill(&mut self) -> std::io::Result<bool> {
        let mut size = String::new();
        if self.reader.read_line(&mut size)? == 0 {
            return Ok(false);
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return Ok(false);
        }
        let mut chunk = vec![0; n + 2];
        self.reader.read_exact(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    /// The next event, or None when the stream ended.
    pub(super) fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON watch event"));
            }
            if !self.fill().expect("read the watch stream") {
                return None;
            }
        }
    }

    pub(super) fn all(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next()).collect()
    }
}
