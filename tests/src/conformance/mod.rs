//! The Gateway API conformance runner's library: the scenarios of `tests/conformance/` (written
//! for Tollgate from the upstream suite's HTTPRoute tests, see `docs/conformance/README.md`),
//! the checks of each request's expectations, and the `ConformanceReport` (the upstream shape,
//! `conformance/apis/v1` of kubernetes-sigs/gateway-api) built from the outcomes. The run
//! itself (agent, backends, reloads) is `tests/tests/conformance.rs`.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod client;
pub mod h2c;

use client::{Request, Response};

/// The Gateway API release and channel the scenarios were written against.
pub const GATEWAY_API_VERSION: &str = "v1.6.0";
/// The channel: only standard-channel features are claimed.
pub const GATEWAY_API_CHANNEL: &str = "standard";
/// The features every GATEWAY-HTTP implementation must support; a test that needs any other
/// feature is an Extended one.
pub const CORE_FEATURES: [&str; 3] = ["Gateway", "HTTPRoute", "ReferenceGrant"];
/// The namespace of the base Gateways and of the backends a scenario names without one.
pub const INFRA_NAMESPACE: &str = "gateway-conformance-infra";
/// The port of Gateway `same-namespace`, where requests go unless they say otherwise.
pub const DEFAULT_PORT: u16 = 28080;

/// `tests/conformance/` of the workspace.
pub fn data_dir() -> PathBuf {
    crate::workspace_root().join("tests/conformance")
}

/// One scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Upstream's ShortName (also the file name).
    pub name: String,
    /// Upstream's feature list for the test.
    pub features: Vec<String>,
    /// The policy objects (YAML documents), applied with `base.yaml`.
    pub objects: String,
    /// The requests and their expectations.
    pub requests: Vec<Value>,
    /// Later revisions of the same scenario (`then`: objects and requests each), applied in
    /// turn after the first one's requests: a grant removed, say.
    pub then: Vec<(String, Vec<Value>)>,
    /// Where it came from (file name, for messages).
    pub file: String,
    /// It tests an experimental-channel feature: run, but left out of the (standard-channel)
    /// report.
    pub experimental: bool,
    /// A product bug this scenario is known to fail on (`knownFailure`): it runs, and is
    /// reported failed, but does not fail the run; once it passes, the run fails until the
    /// mark is removed.
    pub known_failure: Option<String>,
}

impl Scenario {
    /// Core unless one of its features is not a core feature.
    pub fn is_core(&self) -> bool {
        is_core(&self.features)
    }
}

fn is_core(features: &[String]) -> bool {
    features.iter().all(|f| CORE_FEATURES.contains(&f.as_str()))
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be a list"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{what}: {s} is not a string"))
        })
        .collect()
}

/// Reads one scenario file; every problem names the file and the field.
pub fn load_scenario(path: &Path) -> Result<Scenario, String> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let field = |name: &str| doc.get(name).ok_or_else(|| format!("{file}: no `{name}`"));
    let name = field("name")?
        .as_str()
        .ok_or_else(|| format!("{file}: `name` is not a string"))?
        .to_owned();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != name {
        return Err(format!("{file}: `name` {name} is not the file's name"));
    }
    let features = strings(field("features")?, &format!("{file}: features"))?;
    let objects = field("objects")?
        .as_str()
        .ok_or_else(|| format!("{file}: `objects` is not a string"))?
        .to_owned();
    serde_saphyr::from_multiple::<Value>(&objects)
        .map_err(|e| format!("{file}: `objects` is not YAML: {e}"))?;
    let requests = requests_of(&doc, &file)?;
    let mut then = Vec::new();
    for (i, step) in doc["then"].as_array().into_iter().flatten().enumerate() {
        let objects = step["objects"]
            .as_str()
            .ok_or_else(|| format!("{file}: then[{i}]: no `objects`"))?
            .to_owned();
        serde_saphyr::from_multiple::<Value>(&objects)
            .map_err(|e| format!("{file}: then[{i}].objects is not YAML: {e}"))?;
        then.push((objects, requests_of(step, &format!("{file}: then[{i}]"))?));
    }
    for key in doc
        .as_object()
        .map(|o| o.keys().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if ![
            "name",
            "features",
            "upstream",
            "description",
            "objects",
            "requests",
            "then",
            "channel",
            "knownFailure",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("{file}: unknown field `{key}`"));
        }
    }
    let experimental = match doc.get("channel").and_then(Value::as_str) {
        None | Some("standard") => false,
        Some("experimental") => true,
        Some(other) => {
            return Err(format!(
                "{file}: channel {other:?} is neither standard nor experimental"
            ))
        }
    };
    let known_failure = doc
        .get("knownFailure")
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{file}: `knownFailure` is not a string"))
        })
        .transpose()?;
    Ok(Scenario {
        name,
        features,
        objects,
        requests,
        then,
        file,
        experimental,
        known_failure,
    })
}

fn requests_of(doc: &Value, file: &str) -> Result<Vec<Value>, String> {
    let requests = doc["requests"]
        .as_array()
        .ok_or_else(|| format!("{file}: `requests` is not a list"))?
        .clone();
    if requests.is_empty() {
        return Err(format!("{file}: no requests"));
    }
    for (i, r) in requests.iter().enumerate() {
        for key in r
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !["request", "expect", "description"].contains(&key.as_str()) {
                return Err(format!("{file}: requests[{i}]: unknown field `{key}`"));
            }
        }
        if !r["request"].is_object() {
            return Err(format!("{file}: requests[{i}]: no `request`"));
        }
    }
    Ok(requests)
}

/// Every scenario of `dir/scenarios`, by name.
pub fn load_scenarios(dir: &Path) -> Result<Vec<Scenario>, String> {
    let scenarios_dir = dir.join("scenarios");
    let mut paths: Vec<PathBuf> = fs::read_dir(&scenarios_dir)
        .map_err(|e| format!("{}: {e}", scenarios_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_scenario(p)).collect()
}

/// A test of the profile not run, with why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Upstream's ShortName.
    pub name: String,
    /// Its features.
    pub features: Vec<String>,
    /// Why it is not run.
    pub reason: String,
}

/// `skipped.yaml`: the profile's tests not run (`skipped`, in the report) and the extended
/// features not claimed (`unsupportedFeatures`).
#[derive(Debug, Clone, Default)]
pub struct SkipList {
    /// Tests of the GATEWAY-HTTP profile that are not run.
    pub skipped: Vec<Skipped>,
    /// Extended features of the profile that Tollgate does not claim, with why.
    pub unsupported_features: Vec<(String, String)>,
}

/// Reads `skipped.yaml`.
pub fn load_skip_list(path: &Path) -> Result<SkipList, String> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let mut list = SkipList::default();
    let entries = |key: &str| -> Result<Vec<Value>, String> {
        Ok(doc
            .get(key)
            .map(|v| {
                v.as_array()
                    .cloned()
                    .ok_or(format!("{file}: `{key}` is not a list"))
            })
            .transpose()?
            .unwrap_or_default())
    };
    for (i, e) in entries("skipped")?.iter().enumerate() {
        let text_of = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{file}: skipped[{i}]: no `{k}`"))
        };
        list.skipped.push(Skipped {
            name: text_of("name")?,
            features: strings(
                e.get("features").unwrap_or(&Value::Null),
                &format!("{file}: skipped[{i}].features"),
            )?,
            reason: text_of("reason")?,
        });
    }
    for (i, e) in entries("unsupportedFeatures")?.iter().enumerate() {
        let name = e.get("name").and_then(Value::as_str);
        let reason = e.get("reason").and_then(Value::as_str);
        match (name, reason) {
            (Some(n), Some(r)) => list.unsupported_features.push((n.into(), r.into())),
            _ => {
                return Err(format!(
                    "{file}: unsupportedFeatures[{i}]: needs `name` and `reason`"
                ))
            }
        }
    }
    Ok(list)
}

/// A backend name as the echo backends answer it: `namespace/name`, the namespace
/// [`INFRA_NAMESPACE`] when the scenario leaves it out.
pub fn qualified(name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("{INFRA_NAMESPACE}/{name}")
    }
}

/// One echo backend that a revision names: a `Backend` object with one endpoint on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EchoBackend {
    /// `namespace/name`.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Spoken to in h2c (`appProtocol: kubernetes.io/h2c`).
    pub h2c: bool,
}

/// The Backends of `yaml` whose endpoints are on 127.0.0.1 (the echo backends to start).
pub fn echo_backends(yaml: &str) -> Result<Vec<EchoBackend>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in docs.iter().filter(|d| d["kind"] == "Backend") {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = format!("{ns}/{}", d["metadata"]["name"].as_str().unwrap_or(""));
        let h2c = d["spec"]["appProtocol"] == "kubernetes.io/h2c";
        for e in d["spec"]["endpoints"].as_array().into_iter().flatten() {
            if e["ip"]["address"] != "127.0.0.1" {
                continue;
            }
            let port = e["ip"]["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("Backend {name}: endpoint without a port"))?;
            out.push(EchoBackend {
                name: name.clone(),
                port,
                h2c,
            });
        }
    }
    Ok(out)
}

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

/// The ports a scenario's requests go to.
pub fn request_ports(requests: &[Value]) -> BTreeSet<u16> {
    requests.iter().map(|r| port_of(&r["request"])).collect()
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

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// Its features.
    pub features: Vec<String>,
    /// Empty when it passed.
    pub failures: Vec<String>,
    /// An experimental-channel test: not in the report.
    pub experimental: bool,
}

/// The implementation named in the report.
pub struct Implementation<'a> {
    /// Maintainer.
    pub organization: &'a str,
    /// Project name.
    pub project: &'a str,
    /// Where to read about it.
    pub url: &'a str,
    /// The version tested.
    pub version: &'a str,
    /// How to reach the maintainers.
    pub contact: &'a [&'a str],
}

#[derive(Default)]
struct Level {
    passed: Vec<String>,
    failed: Vec<String>,
    skipped: Vec<(String, String)>,
}

impl Level {
    fn result(&self) -> &'static str {
        if !self.failed.is_empty() {
            "failure"
        } else if !self.skipped.is_empty() {
            "partial"
        } else {
            "success"
        }
    }

    fn write(&self, out: &mut String, indent: &str) {
        out.push_str(&format!("{indent}result: {}\n", self.result()));
        out.push_str(&format!("{indent}statistics:\n"));
        out.push_str(&format!("{indent}  Failed: {}\n", self.failed.len()));
        out.push_str(&format!("{indent}  Passed: {}\n", self.passed.len()));
        out.push_str(&format!("{indent}  Skipped: {}\n", self.skipped.len()));
        if !self.skipped.is_empty() {
            // The upstream shape lists names only; the reasons ride along as comments.
            out.push_str(&format!("{indent}skippedTests:\n"));
            for (name, reason) in &self.skipped {
                out.push_str(&format!("{indent}  - {name}  # {reason}\n"));
            }
        }
        if !self.failed.is_empty() {
            out.push_str(&format!("{indent}failedTests:\n"));
            for name in &self.failed {
                out.push_str(&format!("{indent}  - {name}\n"));
            }
        }
    }
}

/// The report, in the upstream `ConformanceReport` shape (YAML), for one run: `outcomes` of the
/// scenarios run, `skips` for the rest. The first line is the date, so that two runs can be
/// compared without it.
pub fn report(
    implementation: &Implementation<'_>,
    date: &str,
    outcomes: &[Outcome],
    skips: &SkipList,
) -> String {
    let (mut core, mut extended) = (Level::default(), Level::default());
    let mut supported = BTreeSet::new();
    for o in outcomes.iter().filter(|o| !o.experimental) {
        let level = if is_core(&o.features) {
            &mut core
        } else {
            supported.extend(
                o.features
                    .iter()
                    .filter(|f| !CORE_FEATURES.contains(&f.as_str()))
                    .cloned(),
            );
            &mut extended
        };
        if o.failures.is_empty() {
            level.passed.push(o.name.clone());
        } else {
            level.failed.push(o.name.clone());
        }
    }
    let unsupported: BTreeSet<String> = skips
        .unsupported_features
        .iter()
        .map(|(f, _)| f.clone())
        .collect();
    for s in &skips.skipped {
        // A test of an unsupported feature is not run and not counted, as upstream does.
        if s.features.iter().any(|f| unsupported.contains(f)) {
            continue;
        }
        let level = if is_core(&s.features) {
            &mut core
        } else {
            &mut extended
        };
        level.skipped.push((s.name.clone(), s.reason.clone()));
    }
    for level in [&mut core, &mut extended] {
        level.passed.sort();
        level.failed.sort();
        level.skipped.sort();
    }
    let summary = format!(
        "Core tests {}: {} passed, {} failed, {} skipped. Extended tests {}: {} passed, {} failed, {} skipped.",
        word(core.result()),
        core.passed.len(),
        core.failed.len(),
        core.skipped.len(),
        word(extended.result()),
        extended.passed.len(),
        extended.failed.len(),
        extended.skipped.len(),
    );
    let mut out = format!("date: \"{date}\"\n");
    out.push_str(
        "# Written by tests/tests/conformance.rs from the scenarios in tests/conformance/\n",
    );
    out.push_str(
        "# (`cargo xtask conformance` regenerates it; docs/conformance/README.md explains it).\n",
    );
    out.push_str("apiVersion: gateway.networking.k8s.io/v1\n");
    out.push_str("kind: ConformanceReport\n");
    out.push_str(&format!("gatewayAPIChannel: {GATEWAY_API_CHANNEL}\n"));
    out.push_str(&format!("gatewayAPIVersion: {GATEWAY_API_VERSION}\n"));
    out.push_str("implementation:\n  contact:\n");
    for c in implementation.contact {
        out.push_str(&format!("    - {c}\n"));
    }
    out.push_str(&format!(
        "  organization: {}\n  project: {}\n  url: {}\n  version: {}\n",
        implementation.organization,
        implementation.project,
        implementation.url,
        implementation.version
    ));
    out.push_str("mode: default\n");
    out.push_str("profiles:\n  - name: GATEWAY-HTTP\n");
    out.push_str(&format!("    summary: \"{summary}\"\n"));
    out.push_str("    core:\n");
    core.write(&mut out, "      ");
    out.push_str("    extended:\n");
    extended.write(&mut out, "      ");
    out.push_str("      supportedFeatures:\n");
    for f in &supported {
        out.push_str(&format!("        - {f}\n"));
    }
    if !skips.unsupported_features.is_empty() {
        out.push_str("      unsupportedFeatures:\n");
        let mut list = skips.unsupported_features.clone();
        list.sort();
        for (f, reason) in &list {
            out.push_str(&format!("        - {f}  # {reason}\n"));
        }
    }
    out
}

fn word(result: &str) -> &'static str {
    match result {
        "success" => "succeeded",
        "partial" => "partially succeeded",
        _ => "failed",
    }
}

/// The report without its date line, to compare two runs.
pub fn without_date(report: &str) -> String {
    report
        .lines()
        .filter(|l| !l.starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, features: &[&str], ok: bool) -> Outcome {
        Outcome {
            name: name.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            failures: if ok { vec![] } else { vec!["status".into()] },
            experimental: false,
        }
    }

    const IMPL: Implementation<'static> = Implementation {
        organization: "o",
        project: "p",
        url: "u",
        version: "0.1.0",
        contact: &["c"],
    };

    #[test]
    fn the_report_counts_core_and_extended_and_skips() {
        let outcomes = [
            outcome("A", &["Gateway", "HTTPRoute"], true),
            outcome("B", &["Gateway", "HTTPRoute", "ReferenceGrant"], false),
            outcome("C", &["Gateway", "HTTPRoute", "HTTPRouteCORS"], true),
            Outcome {
                experimental: true,
                ..outcome("X", &["Gateway", "HTTPRoute", "HTTPRouteRetry"], false)
            },
        ];
        let skips = SkipList {
            skipped: vec![
                Skipped {
                    name: "D".into(),
                    features: vec!["Gateway".into()],
                    reason: "status".into(),
                },
                Skipped {
                    name: "E".into(),
                    features: vec!["Gateway".into(), "GatewayStaticAddresses".into()],
                    reason: "not built".into(),
                },
            ],
            unsupported_features: vec![("GatewayStaticAddresses".into(), "no addresses".into())],
        };
        let r = report(&IMPL, "2026-12-04T00:00:00Z", &outcomes, &skips);
        assert!(r.starts_with("date: \"2026-12-04T00:00:00Z\"\n"), "{r}");
        assert!(r.contains("    core:\n      result: failure\n      statistics:\n        Failed: 1\n        Passed: 1\n        Skipped: 1\n"), "{r}");
        assert!(
            r.contains(
                "      skippedTests:\n        - D  # status\n      failedTests:\n        - B\n"
            ),
            "{r}"
        );
        assert!(r.contains("    extended:\n      result: success\n"), "{r}");
        assert!(
            r.contains("      supportedFeatures:\n        - HTTPRouteCORS\n"),
            "{r}"
        );
        assert!(
            r.contains("        - GatewayStaticAddresses  # no addresses\n"),
            "{r}"
        );
        // E needs an unsupported feature: neither run nor counted as skipped.
        assert!(!r.contains("- E"), "{r}");
        // X is an experimental-channel test: not in a standard-channel report.
        assert!(!r.contains("- X") && !r.contains("HTTPRouteRetry"), "{r}");
        let parsed: Value = serde_saphyr::from_str(&r).unwrap();
        assert_eq!(parsed["kind"], "ConformanceReport");
        assert_eq!(parsed["profiles"][0]["core"]["statistics"]["Passed"], 1);
        assert_eq!(
            without_date(&r),
            without_date(&r.replace("2026-12-04", "2027-01-01"))
        );
    }

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

    #[test]
    fn the_committed_scenarios_and_skip_list_load() {
        let dir = data_dir();
        let scenarios = load_scenarios(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(scenarios.len() > 20, "{} scenarios", scenarios.len());
        let skips = load_skip_list(&dir.join("skipped.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let mut names = BTreeSet::new();
        for s in &scenarios {
            assert!(names.insert(s.name.clone()), "{} twice", s.name);
            let base = fs::read_to_string(dir.join("base.yaml")).unwrap();
            echo_backends(&format!("{base}---\n{}", s.objects))
                .unwrap_or_else(|e| panic!("{}: {e}", s.file));
        }
        for s in &skips.skipped {
            assert!(
                names.insert(s.name.clone()),
                "{} both run and skipped",
                s.name
            );
        }
    }
}
