//! The gRPC side of the GRPCRoute scenarios: the backends are gRPC echo servers and the calls
//! are made by a real gRPC client, both grpcio (`tests/grpc/echo.py`, in the venv `cargo xtask
//! setup` makes under the target directory, or the Python `TOLLGATE_GRPC_PYTHON` names).
//!
//! A scenario request with `grpc:` is one call (`repeat` times):
//!
//! ```yaml
//! - request: { port: 28089, grpc: { method: /pkg.Service/Method, authority: foo.example, metadata: { version: two } } }
//!   expect: { backend: grpc-infra-backend-v1 }          # or grpcStatus: UNIMPLEMENTED
//! ```
//!
//! `expect`: `grpcStatus` (the call's gRPC status code name, default `OK`), `backend` (which
//! echo server answered: a name or a list), `distribution` and `tolerance` over `repeat`
//! calls, as for HTTP requests.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{qualified, DEFAULT_PORT};

/// The Python with grpcio.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_GRPC_PYTHON") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("xtask-venv/bin/python")
}

/// The grpcio echo server and client (`tests/grpc/echo.py`).
pub fn script() -> PathBuf {
    crate::workspace_root().join("tests/grpc/echo.py")
}

/// A gRPC echo server answering as `name` (`namespace/name`), stopped when dropped.
pub struct GrpcBackend(Child);

impl GrpcBackend {
    /// Starts it on 127.0.0.1:`port` and waits until it accepts connections.
    pub fn start(name: &str, port: u16) -> GrpcBackend {
        let python = python();
        assert!(
            python.is_file(),
            "{} is missing: run `cargo xtask setup` (it installs grpcio into that venv), or set TOLLGATE_GRPC_PYTHON to a python with grpcio",
            python.display()
        );
        let child = Command::new(&python)
            .arg(script())
            .args(["server", &port.to_string(), name])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start the gRPC echo server {name}: {e}"));
        let backend = GrpcBackend(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(200),
        )
        .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the gRPC echo server {name} did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        backend
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The call a `grpc:` request describes, for the client.
fn call_of(grpc: &Value) -> Value {
    let metadata: Vec<(String, String)> = match &grpc["metadata"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap_or_default().to_owned(),
                    p[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut call = json!({
        "method": grpc["method"],
        "metadata": metadata,
        "request": "conformance",
    });
    if let Some(a) = grpc["authority"].as_str() {
        call["authority"] = a.into();
    }
    call
}

fn describe(port: u16, grpc: &Value) -> String {
    let mut s = format!("gRPC {}", grpc["method"].as_str().unwrap_or("?"));
    if let Some(a) = grpc["authority"].as_str() {
        s.push_str(&format!(" to {a}"));
    }
    s.push_str(&format!(" (port {port})"));
    if let Some(map) = grpc["metadata"].as_object() {
        for (k, v) in map {
            s.push_str(&format!(" [{k}: {}]", v.as_str().unwrap_or_default()));
        }
    }
    s
}

/// Runs one `grpc:` entry of a scenario's `requests`; the failures, each starting with the
/// call.
pub fn run(entry: &Value) -> Vec<String> {
    let r = &entry["request"];
    let expect = &entry["expect"];
    let grpc = &r["grpc"];
    let port = r["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_PORT);
    let what = describe(port, grpc);
    let repeat = r["repeat"].as_u64().unwrap_or(1).max(1);
    let calls: Vec<Value> = (0..repeat).map(|_| call_of(grpc)).collect();
    let results = match make_calls(port, &calls) {
        Ok(r) => r,
        Err(e) => return vec![format!("{what}: {e}")],
    };
    let want_code = expect["grpcStatus"].as_str().unwrap_or("OK");
    let want_backend: Vec<String> = match &expect["backend"] {
        Value::String(s) => vec![qualified(s)],
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(qualified)
            .collect(),
        _ => vec![],
    };
    let mut failures = Vec::new();
    let mut answered_by: BTreeMap<String, u64> = BTreeMap::new();
    for result in &results {
        let code = result["code"].as_str().unwrap_or("?");
        // The echo server answers "NAME|/full/Method|...".
        let backend = result["response"]
            .as_str()
            .and_then(|r| r.split('|').next())
            .map(str::to_owned);
        if let Some(b) = &backend {
            *answered_by.entry(b.clone()).or_default() += 1;
        }
        if code != want_code {
            failures.push(format!(
                "{what}: gRPC status: expected {want_code}, got {code} ({})",
                result["details"].as_str().unwrap_or_default()
            ));
            break;
        }
        if want_code != "OK" && backend.is_some() {
            failures.push(format!(
                "{what}: expected the proxy's own answer, got backend {}",
                backend.unwrap_or_default()
            ));
            break;
        }
        if !want_backend.is_empty() && !backend.as_ref().is_some_and(|b| want_backend.contains(b)) {
            failures.push(format!(
                "{what}: backend: expected {}, got {}",
                want_backend.join(" or "),
                backend.unwrap_or_else(|| "no echo server's answer".into())
            ));
            break;
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
    failures
}

/// Makes `calls` to 127.0.0.1:`port` with the grpcio client (each a JSON object: `method`,
/// `metadata` as pairs, `request`, `authority`); one result per call (`code`, `details`,
/// `response`, `initial`).
pub fn make_calls(port: u16, calls: &[Value]) -> Result<Vec<Value>, String> {
    let python = python();
    if !python.is_file() {
        return Err(format!(
            "{} is missing: run `cargo xtask setup` (it installs grpcio into that venv), or set TOLLGATE_GRPC_PYTHON",
            python.display()
        ));
    }
    let out = Command::new(&python)
        .arg(script())
        .args([
            "client",
            &format!("127.0.0.1:{port}"),
            &Value::from(calls.to_vec()).to_string(),
        ])
        .output()
        .map_err(|e| format!("run the gRPC client: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the gRPC client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("the gRPC client said {l:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if results.len() != calls.len() {
        return Err(format!(
            "the gRPC client answered {} of {} calls",
            results.len(),
            calls.len()
        ));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_request_becomes_one_call_with_its_metadata_and_authority() {
        let grpc: Value = serde_saphyr::from_str(
            "{ method: /a.B/C, authority: foo.example, metadata: { version: two } }",
        )
        .unwrap();
        assert_eq!(
            call_of(&grpc),
            json!({"method": "/a.B/C", "metadata": [["version", "two"]], "request": "conformance", "authority": "foo.example"})
        );
        assert_eq!(
            describe(28089, &grpc),
            "gRPC /a.B/C to foo.example (port 28089) [version: two]"
        );
    }
}
