//! Sending a scenario's requests and checking the answers against its expectations.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{self, Request, Response};
use super::{qualified, DEFAULT_PORT, INFRA_NAMESPACE};

/// What the requests of a run need besides themselves.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The echo backends, to read what they were sent (mirrors).
    pub backends: BackendPorts,
    /// The agent's `--tls-secrets-dir` (client certificates are Secrets there too).
    pub secrets: PathBuf,
    /// The CA of the HTTPS listeners' certificate.
    pub server_ca: PathBuf,
}

impl Context {
    /// The certificate and key of Secret `gateway-conformance-infra/name`.
    pub fn client_certificate(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.secrets.join(INFRA_NAMESPACE).join(name);
        (dir.join("tls.crt"), dir.join("tls.key"))
    }
}

/// Where the echo backends listen, to read what they were sent (mirrors).
#[derive(Debug, Clone, Default)]
pub struct BackendPorts(pub BTreeMap<String, u16>);

impl BackendPorts {
    /// The requests backend `name` answered since it was last cleared (method, path, host).
    pub fn seen(&self, name: &str) -> Result<Vec<Value>, String> {
        self.log(name, "/__echo/requests")
    }

    /// Empties every backend's log.
    pub fn clear(&self) {
        for name in self.0.keys() {
            let _ = self.log(name, "/__echo/requests?clear");
        }
    }

    fn log(&self, name: &str, path: &str) -> Result<Vec<Value>, String> {
        let port = *self
            .0
            .get(&qualified(name))
            .ok_or_else(|| format!("no echo backend {name}"))?;
        let r = client::send(&Request {
            port,
            method: "GET".into(),
            host: "127.0.0.1".into(),
            path: path.into(),
            ..Request::default()
        })?;
        serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .ok_or_else(|| format!("backend {name}: its log is not a JSON list: {:?}", r.body))
    }
}

/// The ports a scenario's requests go to and expect an answer on, which the runner waits for.
/// A request that expects no response (`noResponse`: a listener left out) may go to a port
/// nothing listens on, and is not waited for.
pub fn request_ports(requests: &[Value]) -> BTreeSet<u16> {
    requests
        .iter()
        .filter(|r| r["expect"]["noResponse"] != true)
        .map(|r| port_of(&r["request"]))
        .collect()
}

fn port_of(r: &Value) -> u16 {
    r["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_PORT)
}

/// The request a scenario entry describes.
pub fn request_of(r: &Value) -> Request {
    let port = port_of(r);
    let mut headers = Vec::new();
    match &r["headers"] {
        Value::Object(map) => {
            for (k, v) in map {
                headers.push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
            }
        }
        // A list of [name, value] pairs: repeated headers, in order.
        Value::Array(list) => {
            for pair in list {
                headers.push((
                    pair[0].as_str().unwrap_or_default().to_owned(),
                    pair[1].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        _ => {}
    }
    Request {
        port,
        method: r["method"].as_str().unwrap_or("GET").to_owned(),
        host: r["host"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("127.0.0.1:{port}")),
        path: r["path"].as_str().unwrap_or("/").to_owned(),
        headers,
        body: r["body"].as_str().unwrap_or_default().to_owned(),
    }
}

fn describe(req: &Request) -> String {
    let mut s = format!("{} http://{}{}", req.method, req.host, req.path);
    if req.port != DEFAULT_PORT || !req.host.ends_with(&format!(":{}", req.port)) {
        s.push_str(&format!(" (port {})", req.port));
    }
    for (k, v) in &req.headers {
        s.push_str(&format!(" [{k}: {v}]"));
    }
    s
}

/// What the echo backend said it saw, when the body is its JSON.
fn echo_of(resp: &Response) -> Option<Value> {
    serde_json::from_str::<Value>(&resp.body)
        .ok()
        .filter(|v| v.get("backend").is_some())
}

/// Checks one response against `expect`; the failures, each naming the expectation and what
/// came back.
pub fn check(expect: &Value, resp: &Response) -> Vec<String> {
    let mut failures = Vec::new();
    // One status, or a list of acceptable ones.
    let statuses: Vec<u64> = match &expect["status"] {
        Value::Array(list) => list.iter().filter_map(Value::as_u64).collect(),
        v => vec![v.as_u64().unwrap_or(200)],
    };
    if !statuses.contains(&u64::from(resp.status)) {
        failures.push(format!(
            "status: expected {statuses:?}, got {}",
            resp.status
        ));
    }
    let squeeze = expect["ignoreWhitespace"] == true;
    let same = |got: &str, want: &str| {
        if squeeze {
            got.split_whitespace().collect::<String>()
                == want.split_whitespace().collect::<String>()
        } else {
            got == want
        }
    };
    let echo = echo_of(resp);
    let seen = |what: &str| echo.as_ref().map(|e| e[what].clone());
    let want_backend: Vec<String> = match &expect["backend"] {
        Value::String(s) => vec![qualified(s)],
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(qualified)
            .collect(),
        _ => vec![],
    };
    if !want_backend.is_empty() {
        let got = seen("backend").and_then(|b| b.as_str().map(str::to_owned));
        if !got.as_ref().is_some_and(|g| want_backend.contains(g)) {
            failures.push(format!(
                "backend: expected {}, got {}",
                want_backend.join(" or "),
                got.unwrap_or_else(|| "no echo backend's answer".into())
            ));
        }
    }
    // A redirect, an error or a CORS preflight must be the proxy's own answer.
    if expect["backend"] == Value::Null
        && (expect["location"].is_string() || expect["noBackend"] == true)
    {
        if let Some(b) = seen("backend") {
            failures.push(format!("expected the proxy's own answer, got backend {b}"));
        }
    }
    for (key, what) in [
        ("path", "path"),
        ("host", "host"),
        ("method", "method"),
        ("protocol", "protocol"),
    ] {
        let Some(want) = expect[key].as_str() else {
            continue;
        };
        let got = match key {
            "host" => seen("headers").map(|h| h["host"].clone()),
            _ => seen(what),
        };
        if got.as_ref().and_then(Value::as_str) != Some(want) {
            failures.push(format!(
                "the backend's {what}: expected {want:?}, got {}",
                got.map(|g| g.to_string())
                    .unwrap_or_else(|| "no echo backend's answer".into())
            ));
        }
    }
    if let Some(headers) = expect["headers"].as_object() {
        let got = seen("headers").unwrap_or(Value::Null);
        for (name, want) in headers {
            let value = &got[name.to_ascii_lowercase()];
            let ok = match want {
                Value::Null => value.is_null(),
                _ => value.as_str() == want.as_str(),
            };
            if !ok {
                failures.push(format!(
                    "request header {name} at the backend: expected {}, got {}",
                    if want.is_null() {
                        "none".into()
                    } else {
                        want.to_string()
                    },
                    if value.is_null() {
                        "none".into()
                    } else {
                        value.to_string()
                    }
                ));
            }
        }
    }
    if let Some(headers) = expect["responseHeaders"].as_object() {
        for (name, want) in headers {
            let value = resp.header(&name.to_ascii_lowercase());
            // A value, null (absent), or a list of acceptable values.
            let ok = match (want, value.as_deref()) {
                (Value::Null, v) => v.is_none(),
                (Value::Array(list), Some(v)) => {
                    list.iter().filter_map(Value::as_str).any(|w| same(v, w))
                }
                (w, Some(v)) => w.as_str().is_some_and(|w| same(v, w)),
                (_, None) => false,
            };
            if !ok {
                failures.push(format!(
                    "response header {name}: expected {}, got {}",
                    if want.is_null() {
                        "none".into()
                    } else {
                        want.to_string()
                    },
                    value
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_else(|| "none".into())
                ));
            }
        }
    }
    // The backend that answered is the one a header it received names (a backendRef's own
    // RequestHeaderModifier says which backendRef the request went through).
    if let Some(header) = expect["backendNamedBy"].as_str() {
        let named =
            seen("headers").and_then(|h| h[header.to_ascii_lowercase()].as_str().map(qualified));
        let answered = seen("backend").and_then(|b| b.as_str().map(str::to_owned));
        if named.is_none() || named != answered {
            failures.push(format!(
                "request header {header} at the backend names {named:?}, but {answered:?} answered"
            ));
        }
    }
    if let Some(want) = expect["location"].as_str() {
        let got = resp.header("location");
        if got.as_deref() != Some(want) {
            failures.push(format!("Location: expected {want:?}, got {got:?}"));
        }
    }
    failures
}

/// Runs one entry of a scenario's `requests`; the failures, each starting with the request.
pub fn run_request(entry: &Value, ctx: &Context) -> Vec<String> {
    if entry["request"].get("grpc").is_some() {
        return super::grpc::run(entry);
    }
    let backends = &ctx.backends;
    let r = &entry["request"];
    let expect = &entry["expect"];
    let req = request_of(r);
    let what = describe(&req);
    let repeat = r["repeat"].as_u64().unwrap_or(1).max(1);
    let mut failures = Vec::new();

    if let Some(message) = r["websocket"].as_str() {
        match client::websocket(&req, message) {
            Ok((resp, echoed)) => {
                let mut f = check(&with_status(expect, 101), &resp);
                if resp.status == 101 && echoed != message {
                    f.push(format!("WebSocket: sent {message:?}, got back {echoed:?}"));
                }
                failures.extend(f.into_iter().map(|f| format!("{what}: {f}")));
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
        return failures;
    }

    let mut answered_by: BTreeMap<String, u64> = BTreeMap::new();
    let tls = r["serverName"].as_str().map(|server_name| client::Tls {
        server_name,
        ca: &ctx.server_ca,
        client: r["clientCertificate"]
            .as_str()
            .map(|name| ctx.client_certificate(name)),
    });
    let what = match (&tls, r["clientCertificate"].as_str()) {
        (Some(t), Some(c)) => format!(
            "{what} over TLS with server name {} and client certificate {c}",
            t.server_name
        ),
        (Some(t), None) => format!("{what} over TLS with server name {}", t.server_name),
        (None, _) => what,
    };
    for _ in 0..repeat {
        let sent = match &tls {
            Some(tls) => client::send_tls(&req, tls),
            None => client::send(&req),
        };
        // The connection must fail before any HTTP response (a refused client certificate).
        // No HTTP response at all: the listener is not served (refused, reset, or a failed
        // handshake).
        if expect["noResponse"] == true {
            if let Ok(resp) = sent {
                failures.push(format!(
                    "{what}: expected no response (the listener not served), got a {} response",
                    resp.status
                ));
            }
            continue;
        }
        if expect["tlsFailure"] == true {
            match sent {
                Ok(resp) => failures.push(format!(
                    "{what}: expected the TLS connection to fail, got a {} response",
                    resp.status
                )),
                // The server's refusal, not a client that could not even start (a certificate
                // file it could not read, say): curl names TLS (OpenSSL's "SSL") or the alert.
                Err(e) if !(e.contains("SSL") || e.contains("alert") || e.contains("TLS")) => {
                    failures.push(format!(
                        "{what}: expected the server to refuse the TLS connection, got: {e}"
                    ))
                }
                Err(_) => {}
            }
            continue;
        }
        match sent {
            Ok(resp) => {
                if let Some(b) =
                    echo_of(&resp).and_then(|e| e["backend"].as_str().map(str::to_owned))
                {
                    *answered_by.entry(b).or_default() += 1;
                }
                let f = check(expect, &resp);
                if !f.is_empty() {
                    failures.extend(f.into_iter().map(|f| format!("{what}: {f}")));
                    break;
                }
            }
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                break;
            }
        }
    }
    if !failures.is_empty() {
        return failures;
    }
    let tolerance = expect["tolerance"].as_f64().unwrap_or(0.1);
    if let Some(shares) = expect["distribution"].as_object() {
        for (name, share) in shares {
            let want = share.as_f64().unwrap_or(0.0);
            let got = *answered_by.get(&qualified(name)).unwrap_or(&0) as f64 / repeat as f64;
            if (got - want).abs() > tolerance {
                failures.push(format!(
                    "{what} x{repeat}: backend {name} answered {got:.3} of them, expected {want} ± {tolerance} (all: {answered_by:?})"
                ));
            }
        }
    }
    if let Some(mirrors) = expect["mirroredTo"].as_array() {
        for m in mirrors.iter().filter_map(Value::as_str) {
            match wait_for_mirrored(backends, m, &req, repeat) {
                Ok(()) => {}
                Err(e) => failures.push(format!("{what}: mirror {m}: {e}")),
            }
        }
    }
    if let Some(share) = expect["mirroredShare"].as_object() {
        let name = share["backend"].as_str().unwrap_or_default();
        let want = share["share"].as_f64().unwrap_or(0.0);
        // Copies are fire and forget: give the last ones time to arrive.
        thread::sleep(Duration::from_millis(500));
        match backends.seen(name) {
            Ok(seen) => {
                let n = seen
                    .iter()
                    .filter(|s| s["path"] == req.path.as_str())
                    .count();
                let got = n as f64 / repeat as f64;
                if (got - want).abs() > tolerance {
                    failures.push(format!(
                        "{what} x{repeat}: mirror {name} got {n} copies ({got:.3}), expected a share of {want} ± {tolerance}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: mirror {name}: {e}")),
        }
    }
    failures
}

fn with_status(expect: &Value, status: u64) -> Value {
    let mut e = expect.clone();
    if e.get("status").is_none() {
        if let Some(o) = e.as_object_mut() {
            o.insert("status".into(), status.into());
        } else {
            e = serde_json::json!({ "status": status });
        }
    }
    e
}

/// Waits (3 s at most: copies are sent after the response) until mirror `name` has seen
/// `repeat` copies of `req` (same method and path).
fn wait_for_mirrored(
    backends: &BackendPorts,
    name: &str,
    req: &Request,
    repeat: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let seen = backends.seen(name)?;
        let copies = seen
            .iter()
            .filter(|s| s["method"] == req.method.as_str() && s["path"] == req.path.as_str())
            .count() as u64;
        if copies >= repeat {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "expected {repeat} copies of {} {}, saw {copies}; its log: {seen:?}",
                req.method, req.path
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Is something accepting connections on 127.0.0.1:`port`?
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_are_checked_against_the_echo_and_the_response() {
        let resp = Response {
            status: 200,
            headers: vec![("x-r".into(), "1".into())],
            body: r#"{"backend":"gateway-conformance-infra/infra-backend-v1","path":"/a?b=1","method":"GET","headers":{"host":"h","x-a":"1"}}"#.into(),
        };
        let ok: Value = serde_saphyr::from_str(
            "{ backend: infra-backend-v1, path: /a?b=1, host: h, headers: { X-A: '1', x-b: null }, responseHeaders: { X-R: '1', x-s: null } }",
        )
        .unwrap();
        assert_eq!(check(&ok, &resp), Vec::<String>::new());
        let bad: Value = serde_saphyr::from_str(
            "{ status: 404, backend: infra-backend-v2, path: /b, headers: { x-a: null }, responseHeaders: { x-r: '2' }, location: http://x/ }",
        )
        .unwrap();
        let f = check(&bad, &resp);
        assert_eq!(f.len(), 6, "{f:?}");
        assert!(f[0].contains("expected [404], got 200"), "{f:?}");
        assert!(f[1].contains("infra-backend-v2"), "{f:?}");
    }
}
