//! Unit tests of the L7 compiler: YAML in, table or errors out. The helpers and the tests of
//! the revision as a whole are here; the tests of each kind are in the module of its name.
mod auth;
mod backend;
mod classes;
mod gateway;
mod grpc;
mod isolation;
mod ratelimit;
mod route;
mod routing;
mod services;
mod traffic;
mod unresolved;

use super::table::{HostPattern, RequestView};
use super::*;
use http::HeaderMap;
use std::time::Duration;
use tollgate_model::names;
use tollgate_model::Documents;

fn docs(files: &[(&str, &str)]) -> Documents {
    Documents::inline(files)
}

fn compile_yaml(yaml: &str) -> Result<RouteTable, PolicyErrors> {
    let objects = tollgate_model::parse(&docs(&[("l7.yaml", yaml)]))?;
    compile(&objects)
}

fn table(yaml: &str) -> RouteTable {
    compile_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> Vec<PolicyError> {
    match compile_yaml(yaml) {
        Ok(_) => panic!("expected errors, the revision compiled"),
        Err(PolicyErrors(e)) => e,
    }
}

/// (object, field) of every error, and panics unless one message contains `needle`.
fn places(errors: &[PolicyError], needle: &str) -> Vec<(String, String)> {
    assert!(
        errors.iter().any(|e| e.message.contains(needle)),
        "no error says {needle:?}: {errors:#?}"
    );
    errors
        .iter()
        .map(|e| (e.location.object.clone(), e.location.field.clone()))
        .collect()
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: 8080, protocol: HTTP }
";

const BACKENDS: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: a }
spec:
  endpoints:
    - ip: { address: 127.0.0.1, port: 9001 }
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: b }
spec:
  endpoints:
    - ip: { address: '2001:db8::1', port: 9002 }
    - fqdn: { hostname: b.internal, port: 9003 }
  loadBalancer: { type: LeastRequest }
  healthCheck: { passive: { consecutiveFailures: 3, ejectionTime: 10s } }
";

fn route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n{spec}"
    )
}

fn all(parts: &[&str]) -> String {
    parts.join("---\n")
}

/// The `namespace/name` and rule index of the route a GET to port 8080 gets.
fn lookup(t: &RouteTable, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    lookup_method(t, &http::Method::GET, host, path, headers)
}

fn lookup_method(
    t: &RouteTable,
    method: &http::Method,
    host: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let req = RequestView {
        host,
        path,
        method,
        headers: &map,
        query,
    };
    let found = t.ports.get(&8080)?.route(&req);
    // The index and the reference semantics agree on every lookup of these tests too.
    let reference = reference::decide(&t.policy, 8080, &req);
    assert_eq!(
        found.map(|c| (c.rule.route.to_string(), c.rule.index, c.match_index)),
        reference.map(|d| (d.route, d.rule, d.matched)),
        "index and reference disagree on {host} {path_and_query}"
    );
    found.map(|c| format!("{}#{}", c.rule.route, c.rule.index))
}

const TO_A: &str = "      backendRefs: [{ group: tollgate.dev, kind: Backend, name: a }]\n";

fn limit_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

const TARGET_A: &str =
    "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n";

fn auth_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

const TO_A_RULES: &str =
    "  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: a }]\n";

#[test]
fn errors_name_the_file_object_and_field_and_come_all_at_once() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "bad",
            "  rules:
    - matches: [{ path: { type: RegularExpression, value: '/a(' } }]
      backendRefs: [{ group: tollgate.dev, kind: Backend, name: nope }]
    - matches: [{ path: { value: /a/../b } }]
      backendRefs: [{ group: tollgate.dev, kind: Backend, name: a, weight: -1 }]
",
        ),
        &route("orphan", &format!("  rules:\n    - {}", TO_A.trim_start()))
            .replace("[{ name: edge }]", "[{ name: edge, sectionName: nope }]"),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "not a valid regular expression");
    assert_eq!(
        got,
        [
            (
                "HTTPRoute/bad".into(),
                "spec.rules[0].matches[0].path.value".into()
            ),
            (
                "HTTPRoute/bad".into(),
                "spec.rules[0].backendRefs[0].name".into()
            ),
            (
                "HTTPRoute/bad".into(),
                "spec.rules[1].matches[0].path.value".into()
            ),
            (
                "HTTPRoute/bad".into(),
                "spec.rules[1].backendRefs[0].weight".into()
            ),
            (
                "HTTPRoute/orphan".into(),
                "spec.parentRefs[0].sectionName".into()
            ),
        ]
    );
    assert!(errs.iter().all(|e| e.location.file == "l7.yaml"));
    assert!(errs[2].message.contains("write \"/b\""), "{}", errs[2]);
    assert!(
        errs[1].message.contains("no (valid) Backend default/nope"),
        "{}",
        errs[1]
    );
}

#[test]
fn duplicate_objects_are_refused_per_kind_and_namespace() {
    let errs = errors(&all(&[GATEWAY, GATEWAY, BACKENDS]));
    assert_eq!(
        places(&errs, "defined twice"),
        [("Gateway/edge".into(), "metadata.name".into())]
    );
    // Same name, another kind or namespace: fine.
    let other_ns = BACKENDS.split("---\n").next().unwrap().replace(
        "metadata: { name: a }",
        "metadata: { name: a, namespace: x }",
    );
    let b = "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: edge }\nspec: { endpoints: [{ ip: { address: 10.0.0.1, port: 80 } }] }\n";
    table(&all(&[GATEWAY, BACKENDS, &other_ns, b]));
}

#[test]
fn unknown_fields_of_l7_kinds_are_named_by_the_model() {
    let e = tollgate_model::parse(&docs(&[(
        "g.yaml",
        &GATEWAY.replace("protocol: HTTP }", "protocol: HTTP, hostnme: x }"),
    )]))
    .unwrap_err();
    assert_eq!(
        (
            e.0[0].location.object.as_str(),
            e.0[0].location.field.as_str()
        ),
        ("Gateway/edge", "spec.listeners[0].hostnme")
    );
    let e = tollgate_model::parse(&docs(&[(
        "r.yaml",
        &route(
            "r",
            "  rules:\n    - matches: [{ path: { type: Prefix } }]\n",
        ),
    )]))
    .unwrap_err();
    assert_eq!(e.0[0].location.field, "spec.rules[0].matches[0].path.type");
    assert!(e.0[0].message.contains("PathPrefix"), "{}", e.0[0]);
}

#[test]
fn l4_and_l7_errors_are_reported_together() {
    let l4 = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec:\n  rules:\n    - { name: x, action: allow, protocol: TCP, ports: [\"0\"] }\n";
    let bad_route = route(
        "r",
        "  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: nope }]\n",
    );
    let err = crate::snapshot::compile_documents(
        &docs(&[("l4.yaml", l4), ("l7.yaml", &all(&[GATEWAY, &bad_route]))]),
        None,
    )
    .unwrap_err();
    let objects: Vec<_> = err.0.iter().map(|e| e.location.object.as_str()).collect();
    // The L4 problem refuses the revision; the route's unresolved backendRef alone would
    // not (its rule answers 500), so only the L4Policy is named.
    assert_eq!(objects, ["L4Policy/edge"]);
}

#[test]
fn gateway_api_durations_are_read() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1m1s1ms"), Ok(Duration::from_millis(61_001)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for bad in [
        "", "10", "1.5s", "s", "1d", "1s1m", "1s1s", "123456s", "-1s", " 1s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn hostnames_are_lower_case_dns_names_or_wildcards() {
    assert!(names::hostname("api.example.com", true).is_ok());
    assert!(names::hostname("*.example.com", true).is_ok());
    assert!(names::hostname("*.example.com", false).is_err());
    assert!(names::hostname("API.example.com", true).is_err());
    assert!(names::hostname("10.0.0.1", true).is_err());
    assert!(names::hostname("a..b", true).is_err());
    assert!(names::hostname("-a.b", true).is_err());
    assert!(names::hostname("a.*.b", true).is_err());
}

#[test]
fn the_example_routes_as_the_readme_says() {
    let docs = example_documents();
    let snapshot = crate::snapshot::compile_documents(&docs, None)
        .unwrap_or_else(|e| panic!("examples/ does not compile: {e}"));
    let t = &snapshot.l7;
    assert_eq!(t.listen_ports(), [18000]);
    use http::Method;
    let at = |method: Method, host: &str, path: &str| {
        let headers = HeaderMap::new();
        let req = RequestView {
            host,
            path,
            method: &method,
            headers: &headers,
            query: None,
        };
        t.ports[&18000]
            .route(&req)
            .map(|c| format!("{}#{}", c.rule.route, c.rule.index))
    };
    assert_eq!(
        at(Method::POST, "api.example.com", "/v1/orders").as_deref(),
        Some("shop/orders#0")
    );
    assert_eq!(
        at(Method::GET, "api.example.com", "/v1/orders/7").as_deref(),
        Some("shop/orders#1")
    );
    assert_eq!(
        at(Method::GET, "api.example.com", "/v0/orders").as_deref(),
        Some("shop/orders#2")
    );
    // No rule of the exact host matches /static: the wildcard route's does.
    assert_eq!(
        at(Method::GET, "api.example.com", "/static/app.js").as_deref(),
        Some("shop/web#0")
    );
    assert_eq!(
        at(Method::GET, "www.example.com", "/").as_deref(),
        Some("shop/web#1")
    );
    assert_eq!(at(Method::GET, "example.org", "/"), None);
    // examples/l7/grpc.yaml: gRPC calls on a host of their own.
    let grpc = |path: &str, headers: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = RequestView {
            host: "grpc.example.net",
            path,
            method: &Method::POST,
            headers: &map,
            query: None,
        };
        t.ports[&18000]
            .route(&req)
            .map(|c| format!("{}#{}", c.rule.route, c.rule.index))
    };
    assert_eq!(
        grpc("/shop.v1.Orders/Create", &[("x-tenant", "beta")]).as_deref(),
        Some("grpc:shop/orders-grpc#0")
    );
    assert_eq!(
        grpc("/shop.v1.Orders/Create", &[]).as_deref(),
        Some("grpc:shop/orders-grpc#1")
    );
    assert_eq!(grpc("/shop.v1.Other/Create", &[]), None);
    // examples/l7/limits.yaml limits every rule of shop/orders, and nothing else.
    let limits = |host: &str, path: &str| {
        let headers = HeaderMap::new();
        let req = RequestView {
            host,
            path,
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        let rule = t.ports[&18000].route(&req).unwrap().rule.clone();
        rule.rate_limits
            .policy_header
            .as_ref()
            .map(|h| h.to_str().unwrap().to_owned())
    };
    assert_eq!(
        limits("api.example.com", "/v1/orders/7").as_deref(),
        Some("\"per-client\";q=20;w=1, \"per-app\";q=600;w=60")
    );
    assert_eq!(limits("www.example.com", "/"), None);
    // ... and bans abusers.
    let ban = t.policy.bans[&(
        tollgate_model::BanKind::Ratelimit,
        "shop/orders-limits".into(),
    )];
    assert_eq!(
        (ban.threshold, ban.within, ban.block_for),
        (200, Duration::from_secs(60), Duration::from_secs(600))
    );
}

/// The YAML files of the repository's examples/ (recursively), read as a directory source
/// would read them; the compiler itself never reads files.
fn example_documents() -> Documents {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let rel = path.strip_prefix(root).expect("under root");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push((rel.to_string_lossy().replace('\\', "/"), text));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    Documents::inline(&refs)
}
