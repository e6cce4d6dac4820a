//! GRPCRoute: matching (service, method, headers), the GRPCRoute order of precedence, what its
//! CRD refuses, allowedRoutes.kinds, and the rule for an HTTPRoute and a GRPCRoute that meet
//! on one listener.
use super::*;
use crate::l7::status::{reason, ACCEPTED};
use crate::snapshot::{compile_documents, Snapshot};

fn grpc_route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{ name: {name} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n{spec}"
    )
}

/// The route and rule a gRPC call (`POST`) to `path` gets.
fn call(t: &RouteTable, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    lookup_method(t, &http::Method::POST, "example.com", path, headers)
}

fn snapshot(yaml: &str) -> Snapshot {
    compile_documents(&docs(&[("l7.yaml", yaml)]), None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn service_and_method_match_in_the_grpcroute_order_of_precedence() {
    let r = grpc_route(
        "g",
        &format!(
            "  rules:
    - matches: [{{ method: {{ service: foo.Echo, method: Say }} }}]
{TO_A}    - matches: [{{ method: {{ service: foo.Echo }} }}]
{TO_A}    - matches: [{{ method: {{ method: Say }} }}]
{TO_A}    - matches: [{{ method: {{ type: RegularExpression, service: 'bar\\..*', method: 'S.*' }} }}]
{TO_A}    - {}",
            TO_A.trim_start()
        ),
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &r]));
    let g = |rule: usize| Some(format!("grpc:default/g#{rule}"));
    // Exact service and method, first.
    assert_eq!(call(&t, "/foo.Echo/Say", &[]), g(0));
    // Then the exact service (more characters in a matching service than any other rule).
    assert_eq!(call(&t, "/foo.Echo/Shout", &[]), g(1));
    // Then the exact method: it beats the expression, which counts no characters.
    assert_eq!(call(&t, "/bar.Echo/Say", &[]), g(2));
    assert_eq!(call(&t, "/bar.Echo/Sing", &[]), g(3));
    // No method match: every call that nothing more specific takes.
    assert_eq!(call(&t, "/baz.Echo/Sing", &[]), g(4));
    // Exact values are case-sensitive.
    assert_eq!(call(&t, "/foo.echo/Shout", &[]), g(4));
    // gRPC is POST: other methods reach no GRPCRoute rule.
    assert_eq!(
        lookup_method(&t, &http::Method::GET, "example.com", "/foo.Echo/Say", &[]),
        None
    );
    let rule = &t.policy.routes[0].rules[0].rule;
    assert!(rule.grpc);
    // GRPCRoute has no timeouts: a stream lasts as long as the call.
    assert_eq!(rule.timeouts.request, None);
}

#[test]
fn a_method_match_beats_more_header_matches_and_headers_break_ties() {
    let r = grpc_route(
        "g",
        &format!(
            "  rules:
    - matches: [{{ method: {{ service: foo.Echo }}, headers: [{{ name: x-v, value: '2' }}, {{ name: x-w, value: '1' }}] }}]
{TO_A}    - matches: [{{ method: {{ service: foo.Echo, method: Say }} }}]
{TO_A}    - matches: [{{ method: {{ service: foo.Echo }}, headers: [{{ name: x-v, value: '2' }}] }}]
{TO_A}    - matches: [{{ method: {{ service: foo.Echo }}, headers: [{{ type: RegularExpression, name: X-V, value: '[0-9]+' }}, {{ name: x-v, value: ignored }}] }}]
{TO_A}"
        ),
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &r]));
    let g = |rule: usize| Some(format!("grpc:default/g#{rule}"));
    let both = [("x-v", "2"), ("x-w", "1")];
    // Characters in a matching method come before header matches.
    assert_eq!(call(&t, "/foo.Echo/Say", &both), g(1));
    // Among equal methods, more header matches first.
    assert_eq!(call(&t, "/foo.Echo/Other", &both), g(0));
    assert_eq!(call(&t, "/foo.Echo/Other", &[("x-v", "2")]), g(2));
    // A header named twice: only the first entry counts (the spec), case-insensitively.
    assert_eq!(call(&t, "/foo.Echo/Other", &[("x-v", "7")]), g(3));
    assert_eq!(call(&t, "/foo.Echo/Other", &[("x-v", "a")]), None);
}

#[test]
fn across_routes_precedence_beats_age_and_ties_go_to_the_oldest() {
    let older = grpc_route(
        "a",
        &format!("  rules:\n    - matches: [{{ method: {{ service: foo.Echo }} }}]\n{TO_A}"),
    );
    let exact = grpc_route(
        "b",
        &format!(
            "  rules:\n    - matches: [{{ method: {{ service: foo.Echo, method: Say }} }}]\n{TO_A}"
        ),
    );
    let same = grpc_route(
        "c",
        &format!("  rules:\n    - matches: [{{ method: {{ service: foo.Echo }} }}]\n{TO_A}"),
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &same, &exact, &older]));
    assert_eq!(
        call(&t, "/foo.Echo/Say", &[]).as_deref(),
        Some("grpc:default/b#0")
    );
    assert_eq!(
        call(&t, "/foo.Echo/X", &[]).as_deref(),
        Some("grpc:default/a#0")
    );
}

#[test]
fn what_the_grpcroute_crd_refuses_is_refused_with_the_field() {
    let r = grpc_route(
        "bad",
        &format!(
            "  rules:
    - matches:
        - method: {{ type: Exact }}
        - method: {{ service: 'foo/bar', method: Say }}
        - method: {{ service: foo, method: '9lives' }}
        - method: {{ type: RegularExpression, service: 'foo(' }}
        - headers: [{{ name: x-a, value: '' }}]
{TO_A}    - matches: [{{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}]
{TO_A}"
        ),
    );
    let errs = errors(&all(&[GATEWAY, BACKENDS, &r]));
    let got = places(&errs, "one or both of service and method");
    let o = "GRPCRoute/bad".to_owned();
    assert_eq!(
        got,
        [
            (o.clone(), "spec.rules[0].matches[0].method".to_owned()),
            (
                o.clone(),
                "spec.rules[0].matches[1].method.service".to_owned()
            ),
            (
                o.clone(),
                "spec.rules[0].matches[2].method.method".to_owned()
            ),
            (
                o.clone(),
                "spec.rules[0].matches[3].method.service".to_owned()
            ),
            (
                o.clone(),
                "spec.rules[0].matches[4].headers[0].value".to_owned()
            ),
            (o.clone(), "spec.rules[1].matches".to_owned()),
        ]
    );
    assert!(errs[1].message.contains("valid characters"), "{}", errs[1]);
    assert!(
        errs[3].message.contains("not a valid regular expression"),
        "{}",
        errs[3]
    );
    assert!(errs[5].message.contains('8'), "{}", errs[5]);
}

#[test]
fn a_leading_dot_names_the_same_service_and_extension_refs_answer_500() {
    let r = grpc_route(
        "g",
        &format!(
            "  rules:
    - matches: [{{ method: {{ service: .foo.Echo, method: Say }} }}]
{TO_A}    - matches: [{{ method: {{ service: foo.Echo }} }}]
      filters: [{{ type: ExtensionRef, extensionRef: {{ group: x.dev, kind: F, name: f }} }}]
{TO_A}"
        ),
    );
    let s = snapshot(&all(&[GATEWAY, BACKENDS, &r]));
    assert_eq!(
        call(&s.l7, "/foo.Echo/Say", &[]).as_deref(),
        Some("grpc:default/g#0")
    );
    // The filter is not skipped: its rule answers (an error), the requests stay with it.
    assert_eq!(
        call(&s.l7, "/foo.Echo/X", &[]).as_deref(),
        Some("grpc:default/g#1")
    );
    let rule = &s.l7.policy.routes[0].rules[1].rule;
    assert_eq!(
        rule.failure.as_ref().map(|f| f.reason),
        Some("unresolved_filter")
    );
    let problem = &s.acceptance.partial[0];
    assert_eq!(
        problem.location.field,
        "spec.rules[1].filters[0].extensionRef"
    );
    assert!(problem.message.contains("x.dev/F f"), "{problem}");
}

#[test]
fn listeners_take_grpcroutes_by_default_and_allowed_kinds_decide() {
    let r = grpc_route("g", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let only_http = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ kind: HTTPRoute }] } }",
    );
    let s = snapshot(&all(&[&only_http, BACKENDS, &r]));
    let status = &s.acceptance.routes[0];
    assert_eq!((status.kind, status.served), ("GRPCRoute", false));
    let accepted = &status.parents[0].conditions[0];
    assert_eq!(
        (accepted.type_, accepted.status, accepted.reason),
        (ACCEPTED, "False", reason::NOT_ALLOWED_BY_LISTENERS)
    );
    assert!(
        accepted.message.contains("GRPCRoutes"),
        "{}",
        accepted.message
    );

    let only_grpc = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ group: gateway.networking.k8s.io, kind: GRPCRoute }] } }",
    );
    let s = snapshot(&all(&[&only_grpc, BACKENDS, &r]));
    assert!(s.acceptance.routes[0].served);

    let unknown = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ kind: TCPRoute }] } }",
    );
    let errs = errors(&all(&[&unknown, BACKENDS, &r]));
    places(&errs, "only HTTPRoute and GRPCRoute");
}

#[test]
fn an_httproute_and_a_grpcroute_that_meet_on_a_listener_the_older_wins() {
    let h = route("h", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let g = grpc_route("g", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let with_ts = |doc: &str, name: &str, ts: &str| {
        doc.replace(
            &format!("metadata: {{ name: {name} }}"),
            &format!("metadata: {{ name: {name}, creationTimestamp: '{ts}' }}"),
        )
    };
    // The GRPCRoute is older: the HTTPRoute is not accepted.
    let s = snapshot(&all(&[
        GATEWAY,
        BACKENDS,
        &with_ts(&h, "h", "2026-01-02T00:00:00Z"),
        &with_ts(&g, "g", "2026-01-01T00:00:00Z"),
    ]));
    let h_status = s.acceptance.routes.iter().find(|r| r.name == "h").unwrap();
    assert!(!h_status.served);
    let c = &h_status.parents[0].conditions[0];
    assert_eq!(
        (c.type_, c.status, c.reason),
        (ACCEPTED, "False", reason::CONFLICTED)
    );
    assert!(c.message.contains("GRPCRoute default/g"), "{}", c.message);
    assert_eq!(
        call(&s.l7, "/any.Svc/M", &[]).as_deref(),
        Some("grpc:default/g#0")
    );
    assert_eq!(
        s.acceptance
            .left_out
            .iter()
            .map(|o| o.object.as_str())
            .collect::<Vec<_>>(),
        ["HTTPRoute/h"]
    );

    // No timestamps: by namespace/name, `g` before `h`. With hostnames that do not meet, both
    // serve.
    let h2 = h.replace("spec:\n", "spec:\n  hostnames: [web.example.com]\n");
    let g2 = g.replace("spec:\n", "spec:\n  hostnames: [api.example.com]\n");
    let s = snapshot(&all(&[GATEWAY, BACKENDS, &h2, &g2]));
    assert!(s.acceptance.routes.iter().all(|r| r.served));
    assert!(s.acceptance.left_out.is_empty());
    // A wildcard meets the name it covers.
    let g3 = g.replace("spec:\n", "spec:\n  hostnames: ['*.example.com']\n");
    let s = snapshot(&all(&[GATEWAY, BACKENDS, &h2, &g3]));
    let h_status = s.acceptance.routes.iter().find(|r| r.name == "h").unwrap();
    assert!(!h_status.served);
}

#[test]
fn a_grpcroute_needs_a_referencegrant_for_grpcroutes_and_no_httproute_policy_applies() {
    let r = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: { name: g, namespace: default }\nspec:\n  parentRefs: [{ name: edge }]\n  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: a, namespace: other }]\n";
    let backend = "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: a, namespace: other }\nspec:\n  endpoints: [{ ip: { address: 127.0.0.1, port: 9001 } }]\n";
    let grant = |kind: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{ name: g, namespace: other }}\nspec:\n  from: [{{ group: gateway.networking.k8s.io, kind: {kind}, namespace: default }}]\n  to: [{{ group: tollgate.dev, kind: Backend }}]\n")
    };
    let s = snapshot(&all(&[GATEWAY, backend, r, &grant("HTTPRoute")]));
    let rule = &s.l7.policy.routes[0].rules[0].rule;
    assert!(rule.backends.is_empty() && rule.unresolved_weight == 1);
    assert!(s.acceptance.partial[0]
        .message
        .contains("GRPCRoutes of namespace default"));
    let s = snapshot(&all(&[GATEWAY, backend, r, &grant("GRPCRoute")]));
    assert_eq!(s.l7.policy.routes[0].rules[0].rule.backends.len(), 1);

    // A RateLimitPolicy names HTTPRoutes: one of the same name as the GRPCRoute is not it.
    let limit = limit_policy(
        "l",
        "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: g }]\n  limits: [{ key: clientIP, requests: 1, per: 1s }]\n",
    );
    let g = grpc_route("g", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let s = compile_documents(
        &docs(&[("l7.yaml", &all(&[GATEWAY, BACKENDS, &g, &limit]))]),
        None,
    )
    .unwrap();
    assert!(s.l7.policy.routes[0].rules[0]
        .rule
        .rate_limits
        .limits
        .is_empty());
}

#[test]
fn unknown_fields_and_filter_types_of_a_grpcroute_are_refused_by_name() {
    let r = grpc_route(
        "g",
        &format!("  rules:\n    - timeouts: {{ request: 1s }}\n{TO_A}"),
    );
    let errs = tollgate_model::parse(&docs(&[("l7.yaml", &all(&[GATEWAY, BACKENDS, &r]))]))
        .unwrap_err()
        .0;
    assert!(
        errs.iter().any(|e| e.location.object == "GRPCRoute/g"
            && e.location.field.contains("spec.rules[0]")
            && e.message.contains("timeouts")),
        "{errs:#?}"
    );
    let r = grpc_route(
        "g",
        &format!("  rules:\n    - filters: [{{ type: URLRewrite }}]\n{TO_A}"),
    );
    let errs = tollgate_model::parse(&docs(&[("l7.yaml", &all(&[GATEWAY, BACKENDS, &r]))]))
        .unwrap_err()
        .0;
    assert!(
        errs.iter()
            .any(|e| e.location.field.contains("filters[0].type")),
        "{errs:#?}"
    );
}

#[test]
fn a_route_that_loses_one_listener_to_the_other_kind_keeps_the_other_parent() {
    let gateways = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: 8080, protocol: HTTP }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: other }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: 8081, protocol: HTTP }
";
    // `a` (an HTTPRoute) comes first by name and takes the listener of `edge`.
    let h = route("a", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let g = grpc_route("b", &format!("  rules:\n    - {}", TO_A.trim_start())).replace(
        "parentRefs: [{ name: edge }]",
        "parentRefs: [{ name: edge }, { name: other }]",
    );
    let s = snapshot(&all(&[gateways, BACKENDS, &h, &g]));
    let b = s.acceptance.routes.iter().find(|r| r.name == "b").unwrap();
    assert!(b.served);
    let accepted = |i: usize| {
        b.parents[i]
            .conditions
            .iter()
            .find(|c| c.type_ == ACCEPTED)
            .map(|c| (c.status, c.reason))
    };
    assert_eq!(accepted(0), Some(("False", reason::CONFLICTED)));
    assert_eq!(accepted(1), Some(("True", reason::ACCEPTED)));
    assert!(s
        .acceptance
        .partial
        .iter()
        .any(|p| p.location.object == "GRPCRoute/b" && p.message.contains("HTTPRoute default/a")));
    // The GRPCRoute serves on the other Gateway's port only.
    assert_eq!(call(&s.l7, "/x.Y/Z", &[]).as_deref(), Some("default/a#0"));
    let listeners: Vec<u16> = s.l7.policy.routes[1]
        .attachments
        .iter()
        .map(|a| s.l7.policy.listeners[a.listener].port)
        .collect();
    assert_eq!(listeners, [8081]);
}
