//! Helpers for the L7 proxy's end-to-end tests: small Python HTTP backends that echo what they
//! received, curl as the client, and the YAML of Gateways, routes and Backends.
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED, PYTHON};

/// The backend: a Python `ThreadingHTTPServer` (HTTP/1.1, keep-alive) that answers every
/// method with JSON: its name, the method, the path it received, the headers (lower-case
/// names; repeated headers joined with ", "), the body, and how many times it has seen that
/// path. It also sends hop-by-hop headers of its own (`Connection: keep-alive, X-Hop`,
/// `X-Hop`, `Keep-Alive`), which the proxy must not pass on.
///
/// Like the Gateway API conformance suite's echo server, it also honours `?delay=D` (`D` in
/// `ms` or `s`: the answer waits that long), `?responseCode=C&succeedAfter=N` (the first N
/// requests to that exact target are answered C), and `X-Echo-Set-Header: Name:value,...`
/// (it answers with those response headers), keeps a log of the requests it answered (method,
/// path, Host; the first 10,000) that `GET /__echo/requests` (sent to it directly; `?clear`
/// empties it) returns, and answers a WebSocket handshake (`Upgrade: websocket`) with 101 and
/// then echoes every text or binary message until the client closes.
///
/// Paths: `/status/NNN...` answers NNN; `/flaky/...` answers 503 on the 1st, 3rd, ... request
/// to that path and 200 on the others; `/slow/MS...` answers after MS milliseconds;
/// `/reset/head...` resets the connection in the middle of the status line, `/reset/body...`
/// after the headers and part of the body; a path with `/early` answers before reading the
/// body (the head and part of the body at once, the rest 3 s later). Chunked request bodies
/// are read too. Mode `hang`
/// never answers.
const BACKEND_SCRIPT: &str = r#"
import base64, hashlib, json, socket, struct, sys, threading, time, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name, host, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
hits = {}
seen = []
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def delay_of(path):
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    for d in query.get("delay", []):
        if d.endswith("ms"):
            return int(d[:-2]) / 1000
        if d.endswith("s"):
            return float(d[:-1])
    return 0
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY, Nagle holds the body back until
    # the proxy's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    def log_message(self, *args):
        pass
    def answer(self):
        if self.path.startswith("/__echo/requests"):
            with lock:
                body = json.dumps(seen).encode()
                if "clear" in self.path:
                    seen.clear()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with lock:
            # Bounded: load tests send far more requests than anyone reads the log of.
            if len(seen) < 10000:
                seen.append({"method": self.command, "path": self.path,
                             "host": self.headers.get("Host", "")})
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path.startswith("/reset/head"):
            # A status line cut short, then a TCP reset: no response at all.
            self.wfile.write(b"HTTP/1.1 200 O")
            return self.reset()
        if "/early" in self.path:
            # Answers before reading the body: the head and part of the body, the rest later.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nearly")
            self.wfile.flush()
            time.sleep(3)
            self.wfile.write(b"-answer")
            self.close_connection = True
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
        if self.path.startswith("/reset/body"):
            # Headers and part of the body, then a TCP reset.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
            return self.reset()
        if mode == "hang":
            time.sleep(3600)
            return
        with lock:
            n = hits.get(self.path, 0) + 1
            hits[self.path] = n
        status = 200
        parts = self.path.split("?")[0].split("/")
        if len(parts) > 2 and parts[1] == "status":
            status = int(parts[2])
        if len(parts) > 1 and parts[1] == "flaky" and n % 2 == 1:
            status = 503
        if len(parts) > 2 and parts[1] == "slow":
            time.sleep(int(parts[2]) / 1000)
        time.sleep(delay_of(self.path))
        # As upstream's echo server: `?responseCode=500&succeedAfter=2` fails the first 2
        # requests to this exact target (path and query) with that code, then succeeds.
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if "responseCode" in query and n <= int(query.get("succeedAfter", ["0"])[0]):
            status = int(query["responseCode"][0])
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        body = json.dumps({"backend": name, "method": self.command, "path": self.path,
                           "headers": headers, "body": data.decode("utf-8", "replace"),
                           "hits": n}).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", name)
        # As upstream's echo server: response headers the request asks for ("Name:value,...").
        for pair in self.headers.get("X-Echo-Set-Header", "").split(","):
            if ":" in pair:
                k, v = pair.split(":", 1)
                self.send_header(k.strip(), v.strip())
        self.send_header("Connection", "keep-alive, X-Hop")
        self.send_header("X-Hop", "must-not-pass")
        self.send_header("Keep-Alive", "timeout=60")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def websocket(self):
        # RFC 6455 section 4.2.2: the accept value proves the key was read.
        key = self.headers.get("Sec-WebSocket-Key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                return
            if opcode in (1, 2):
                # Server frames are not masked (RFC 6455 section 5.1); messages here are short.
                self.wfile.write(bytes([0x80 | opcode, len(data)]) + data)
                self.wfile.flush()
    def reset(self):
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    def handle_error(self, request, client_address):
        # A proxy that cut a request short (body too large, client gone) is not news.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)
Server((host, port), Handler).serve_forever()
"#;

/// A running backend; dropping it stops it.
pub struct Backend {
    child: Child,
    /// Its name (in every answer, and in the `X-Backend` response header).
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Backend {
    /// An echo backend on 127.0.0.1:`port`.
    pub fn start(name: &str, port: u16) -> Backend {
        Backend::start_mode(name, port, "echo")
    }

    /// A backend that accepts requests and never answers.
    pub fn hanging(name: &str, port: u16) -> Backend {
        Backend::start_mode(name, port, "hang")
    }

    fn start_mode(name: &str, port: u16, mode: &str) -> Backend {
        let child = Command::new(PYTHON)
            .args([
                "-c",
                BACKEND_SCRIPT,
                name,
                "127.0.0.1",
                &port.to_string(),
                mode,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start the Python backend {name}: {e}"));
        let mut backend = Backend {
            child,
            name: name.to_owned(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(200),
        )
        .is_err()
        {
            if let Ok(Some(status)) = backend.child.try_wait() {
                panic!("the Python backend {name} on port {port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the Python backend {name} does not listen on port {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        backend
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code (0: no answer at all).
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2`.
    pub version: String,
    /// Response headers (names lower-case), in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// curl's stderr (why there was no answer).
    pub error: String,
}

impl Reply {
    /// The first value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the reply when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// Which backend answered (from the JSON body).
    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A header the backend received.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

/// Runs `curl -sS -i --max-time 15 <args>` and parses the (last) response.
pub fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "15"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    parse_reply(&raw, error)
}

/// As [`curl`], from inside `lab`'s network namespace (the request crosses the lab's veth).
pub fn curl_in(lab: &Lab, args: &[&str]) -> Reply {
    let mut all = vec!["-sS", "-i", "--max-time", "15"];
    all.extend_from_slice(args);
    let out = lab
        .ns_command("curl", &all)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl in {}: {e}", lab.netns()));
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    parse_reply(&raw, error)
}

fn parse_reply(raw: &str, error: String) -> Reply {
    let mut rest = raw;
    loop {
        let Some((head, body)) = rest.split_once("\r\n\r\n") else {
            return Reply {
                status: 0,
                version: String::new(),
                headers: vec![],
                body: rest.to_owned(),
                error,
            };
        };
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let mut words = status_line.split_whitespace();
        let version = words.next().unwrap_or_default().to_owned();
        let status: u16 = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Reply {
            status,
            version,
            headers,
            body: body.to_owned(),
            error,
        };
    }
}

/// A Gateway named `edge` with one HTTP listener per `(name, port, hostname)`.
pub fn gateway(listeners: &[(&str, u16, Option<&str>)]) -> String {
    let mut y = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n",
    );
    for (name, port, host) in listeners {
        y.push_str(&format!(
            "    - {{ name: {name}, port: {port}, protocol: HTTP"
        ));
        if let Some(h) = host {
            y.push_str(&format!(", hostname: '{h}'"));
        }
        y.push_str(" }\n");
    }
    y
}

/// A Backend named `name` with endpoints on 127.0.0.1 at `ports`; `extra` is more of its
/// spec (indented two spaces).
pub fn backend_object(name: &str, ports: &[u16], extra: &str) -> String {
    let mut y = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  endpoints:\n"
    );
    for p in ports {
        y.push_str(&format!("    - ip: {{ address: 127.0.0.1, port: {p} }}\n"));
    }
    y.push_str(extra);
    y
}

/// An HTTPRoute named `name` attached to Gateway `edge`, with `spec` (indented two spaces)
/// after its parentRefs.
pub fn route_object(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n{spec}"
    )
}

/// A backendRefs entry for Backend `name`.
pub fn to(name: &str) -> String {
    format!("{{ group: tollgate.dev, kind: Backend, name: {name} }}")
}

/// Joins documents into one multi-document file.
pub fn documents(docs: &[&str]) -> String {
    docs.join("---\n")
}

/// The HTTPRoute `app`: every request to Backend `app`.
pub fn app_route() -> String {
    route_object(
        "app",
        &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
    )
}

/// A revision with Gateway `edge` on `proxy`, Backend `app` on `backend` and route `app` (`/`)
/// to it.
pub fn one_route(proxy: u16, backend: u16) -> String {
    one_route_with(
        proxy,
        backend,
        &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
    )
}

/// As [`one_route`], with `spec` (indented two spaces) as the spec of route `app`.
pub fn one_route_with(proxy: u16, backend: u16, spec: &str) -> String {
    documents(&[
        &gateway(&[("http", proxy, None)]),
        &backend_object("app", &[backend], ""),
        &route_object("app", spec),
    ])
}

/// A revision with Gateway `edge` on `proxy`, Backend `app` on `backend`, route `app` (`/`) and
/// route `free` (`/free`), both to `app`, followed by `policies`.
pub fn app_and_free(proxy: u16, backend: u16, policies: &[&str]) -> String {
    let g = gateway(&[("http", proxy, None)]);
    let b = backend_object("app", &[backend], "");
    let app = app_route();
    let free = route_object(
        "free",
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /free }} }}]\n      backendRefs: [{}]\n",
            to("app")
        ),
    );
    let mut docs: Vec<&str> = vec![&g, &b, &app, &free];
    docs.extend_from_slice(policies);
    documents(&docs)
}

/// Starts the agent on `lab` with the proxy on 127.0.0.1 and the admin server on
/// `admin_port`, and waits until it has applied a revision and opened `ports`.
pub fn start_agent(lab: &Lab, admin_port: u16, ports: &[u16], extra: &[&str]) -> Agent {
    let admin = format!("127.0.0.1:{admin_port}");
    let mut args = vec!["--gateway-address", "127.0.0.1", "--admin", &admin];
    args.extend_from_slice(extra);
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    for port in ports {
        wait_for_port(&mut agent, *port);
    }
    agent
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(agent: &mut Agent, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(agent.is_running(), "the agent exited:\n{}", agent.log());
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port}; the agent's log:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Is the port free (nothing accepts connections on 127.0.0.1:`port`)?
pub fn port_is_closed(port: u16) -> bool {
    matches!(
        TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(500),
        ),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// The access log lines (JSON) of an agent's log.
pub fn access_log(agent: &Agent) -> Vec<Value> {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("\"tollgate::access\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Installs `files` (`(file name, source)`) as Secret or ConfigMap `default/name` in the secrets
/// directory `secrets` (each file replaced in place, as `cp` would).
pub fn install_secret(secrets: &std::path::Path, name: &str, files: &[(&str, &std::path::Path)]) {
    let dir = secrets.join("default").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    for (file, from) in files {
        std::fs::copy(from, dir.join(file))
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_after_a_100_continue() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/2 404 \r\ncontent-type: text/plain\r\nX-A: b\r\n\r\nnope\n";
        let r = parse_reply(raw, String::new());
        assert_eq!((r.status, r.version.as_str()), (404, "HTTP/2"));
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body, "nope\n");
        assert_eq!(parse_reply("", String::new()).status, 0);
    }

    #[test]
    fn l7_documents_are_built() {
        let g = gateway(&[
            ("http", 18080, None),
            ("api", 18080, Some("api.example.com")),
        ]);
        assert!(
            g.contains("- { name: api, port: 18080, protocol: HTTP, hostname: 'api.example.com' }"),
            "{g}"
        );
        let b = backend_object("a", &[1, 2], "");
        assert_eq!(b.matches("- ip:").count(), 2);
    }
}
