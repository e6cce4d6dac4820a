//! GRPCRoute end to end: the real agent serving a GRPCRoute from its directory source, real
//! gRPC servers behind it and a real gRPC client in front (grpcio, `tests/grpc/echo.py`, from
//! the venv `cargo xtask setup` makes): unary calls and a bidirectional stream relayed message
//! by message, service, method and header matching, a weighted split, header modifiers both
//! ways, and the UNIMPLEMENTED a call no rule matches gets.
use std::process::Command;

use serde_json::{json, Value};
use tollgate_tests::conformance::grpc::{python, script, GrpcBackend};
use tollgate_tests::l7::{backend_object, documents, gateway, start_agent, to};
use tollgate_tests::{require_root, Lab};

// Ports of this file only (other end-to-end files use 18xxx/19xxx).
const PROXY: u16 = 28451;
const ADMIN: u16 = 28452;
const V1: u16 = 28453;
const V2: u16 = 28454;
const CANARY: u16 = 28455;

/// Makes `calls` through the gateway; one result per call.
fn calls(calls: Value) -> Vec<Value> {
    let out = Command::new(python())
        .arg(script())
        .args(["client", &format!("127.0.0.1:{PROXY}"), &calls.to_string()])
        .output()
        .expect("run the gRPC client");
    assert!(
        out.status.success(),
        "the gRPC client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn unary(method: &str, metadata: &[(&str, &str)], request: &str) -> Value {
    json!({ "method": method, "metadata": metadata, "request": request })
}

fn policy() -> String {
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{ name: echo }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    # Exact service and method, and a header: version 2 goes to v2.
    - matches:
        - method: {{ service: test.Echo, method: Unary }}
          headers: [{{ name: x-version, value: '2' }}]
      backendRefs: [{v2}]
    # The rest of the service goes to v1, with header changes both ways.
    - matches: [{{ method: {{ service: test.Echo }} }}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{ set: [{{ name: x-added, value: by-tollgate }}] }}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {{ remove: [x-secret], add: [{{ name: x-route, value: echo }}] }}
      backendRefs: [{v1}]
    # A method of any service, by expression; split 80/20 by weight.
    - matches: [{{ method: {{ type: RegularExpression, service: 'test\\.Split.*', method: 'Call' }} }}]
      backendRefs:
        - {{ group: tollgate.dev, kind: Backend, name: v1, weight: 80 }}
        - {{ group: tollgate.dev, kind: Backend, name: canary, weight: 20 }}
",
        v1 = to("v1"),
        v2 = to("v2"),
    );
    documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("v1", &[V1], ""),
        &backend_object("v2", &[V2], ""),
        &backend_object("canary", &[CANARY], ""),
        &route,
    ])
}

#[test]
fn grpc_calls_are_matched_split_filtered_and_streamed() {
    require_root!();
    let lab = Lab::new("grl7grpc", &[]);
    let _v1 = GrpcBackend::start("v1", V1);
    let _v2 = GrpcBackend::start("v2", V2);
    let _canary = GrpcBackend::start("canary", CANARY);
    lab.write_policy("l7.yaml", &policy());
    // A body limit of 64 KiB, which one stream below passes after its answer has begun.
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--access-log", "off", "--max-request-body", "65536"],
    );

    let r = calls(json!([
        unary("/test.Echo/Unary", &[("x-version", "2")], "hello"),
        unary("/test.Echo/Unary", &[("x-version", "3")], "hello"),
        unary("/test.Echo/Other", &[], "x"),
        unary("/test.Nope/Unary", &[], "x"),
        { "method": "/test.Echo/Chat", "stream": ["a", "b", "c"] },
    ]));
    // Service, method and header: the exact rule with the header.
    assert_eq!(r[0]["code"], "OK", "{}", r[0]);
    assert_eq!(r[0]["response"], "v2|/test.Echo/Unary|-|2|hello");
    // Another header value: the service rule, with its request header set...
    assert_eq!(r[1]["response"], "v1|/test.Echo/Unary|by-tollgate|3|hello");
    // ...and its response headers changed.
    assert_eq!(r[1]["initial"]["x-route"], "echo", "{}", r[1]);
    assert_eq!(r[1]["initial"]["x-backend"], "v1");
    assert!(r[1]["initial"].get("x-secret").is_none(), "{}", r[1]);
    assert_eq!(r[2]["response"], "v1|/test.Echo/Other|by-tollgate|-|x");
    // No rule: UNIMPLEMENTED, as a gRPC server without the method would answer.
    assert_eq!(r[3]["code"], "UNIMPLEMENTED", "{}", r[3]);
    // A bidirectional stream: each message is sent only after the answer to the one before
    // came back, so a proxy that waited for the whole request would hang it.
    assert_eq!(r[4]["code"], "OK", "{}", r[4]);
    assert_eq!(r[4]["responses"], json!(["v1|a", "v1|b", "v1|c"]));

    // A stream that passes the body limit after its first answers: the call ends with
    // RESOURCE_EXHAUSTED in the trailers, as a message too large would (not a reset, which
    // the client reads as INTERNAL); what was answered before stays answered.
    let big = "m".repeat(40_000);
    let r = calls(json!([{ "method": "/test.Echo/Chat", "stream": ["a", big, big, "z"] }]));
    // (The messages, 40 kB each, are left out of the failure messages.)
    assert_eq!(r[0]["code"], "RESOURCE_EXHAUSTED", "{}", r[0]["details"]);
    assert_eq!(r[0]["responses"][0], "v1|a", "{}", r[0]["details"]);

    // The weighted split, over 200 unary calls on one channel.
    let split: Vec<Value> = (0..200)
        .map(|i| {
            unary(
                if i % 2 == 0 {
                    "/test.Split/Call"
                } else {
                    "/test.SplitTwo/Call"
                },
                &[],
                "w",
            )
        })
        .collect();
    let r = calls(Value::Array(split));
    assert!(r.iter().all(|c| c["code"] == "OK"), "{r:?}");
    let canary = r
        .iter()
        .filter(|c| c["initial"]["x-backend"] == "canary")
        .count();
    eprintln!("weighted split: canary answered {canary} of 200 calls (weight 20%)");
    // Binomial(200, 0.2): mean 40, standard deviation 5.7; 15..=65 is beyond 4.4 of them.
    assert!(
        (15..=65).contains(&canary),
        "canary got {canary} of 200 (weight 20%)"
    );
    // The method expression matches only `Call`.
    let r = calls(json!([unary("/test.Split/Other", &[], "w")]));
    assert_eq!(r[0]["code"], "UNIMPLEMENTED", "{}", r[0]);
}
