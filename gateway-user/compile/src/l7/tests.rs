//! Unit tests of the L7 compiler: YAML in, table or errors out.
use super::table::{HostPattern, RequestView};
use super::*;
use http::HeaderMap;
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

#[test]
fn a_gateway_route_and_backends_compile_to_a_table() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "shop",
            "  hostnames: [shop.example.com]\n  rules:\n    - matches: [{ path: { type: PathPrefix, value: /api } }]\n      backendRefs:\n        - { group: tollgate.dev, kind: Backend, name: a, weight: 90 }\n        - { group: tollgate.dev, kind: Backend, name: b, weight: 10 }\n      timeouts: { request: 10s, backendRequest: 2s }\n      retry: { codes: [503], attempts: 2, backoff: 100ms }\n",
        ),
    ]);
    let t = table(&yaml);
    assert_eq!(t.listen_ports(), [8080]);
    assert_eq!(t.policy.backends.len(), 2);
    let b = &t.policy.backends[1];
    assert_eq!(b.label, "default/b");
    assert_eq!(b.endpoints, ["[2001:db8::1]:9002", "b.internal:9003"]);
    assert_eq!(b.load_balancing, table::LoadBalancing::LeastRequest);
    assert_eq!(
        (b.consecutive_failures, b.ejection_time),
        (3, Duration::from_secs(10))
    );
    let rule = &t.policy.routes[0].rules[0].rule;
    assert_eq!(&*rule.route, "default/shop");
    assert_eq!(rule.total_weight(), 100);
    assert_eq!(
        rule.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(10)),
            backend_request: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(
        rule.retry,
        Retry {
            codes: vec![503],
            attempts: 2,
            backoff: Duration::from_millis(100)
        }
    );
    assert_eq!(
        lookup(&t, "shop.example.com", "/api/orders", &[]).as_deref(),
        Some("default/shop#0")
    );
    assert_eq!(lookup(&t, "shop.example.com", "/apix", &[]), None);
    assert_eq!(lookup(&t, "other.example.com", "/api", &[]), None);
}

#[test]
fn defaults_are_prefix_slash_weight_one_a_30s_request_timeout_and_connect_retries() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("r", &format!("  rules:\n    - {}", TO_A.trim_start())),
    ]));
    let rd = &t.policy.routes[0].rules[0];
    assert!(matches!(&rd.matches[0].path, PathMatch::Prefix(p) if p == "/"));
    assert_eq!(rd.rule.backends[0].weight, 1);
    assert_eq!(rd.rule.timeouts.request, Some(DEFAULT_REQUEST_TIMEOUT));
    assert_eq!(rd.rule.timeouts.backend_request, None);
    assert_eq!(rd.rule.retry.attempts, DEFAULT_CONNECT_RETRIES);
    assert!(rd.rule.retry.codes.is_empty());
    assert_eq!(
        lookup(&t, "anything", "/", &[]).as_deref(),
        Some("default/r#0")
    );
}

#[test]
fn a_zero_timeout_turns_the_timeout_off() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!("  rules:\n    - timeouts: {{ request: 0s }}\n{TO_A}"),
        ),
    ]));
    assert_eq!(t.policy.routes[0].rules[0].rule.timeouts.request, None);
}

#[test]
fn exact_beats_longest_prefix_beats_shorter_prefix_beats_regex() {
    let rules = format!(
        "  rules:\n    - matches: [{{ path: {{ type: RegularExpression, value: '/a/.*' }} }}]\n{TO_A}    - matches: [{{ path: {{ type: PathPrefix, value: /a }} }}]\n{TO_A}    - matches: [{{ path: {{ type: PathPrefix, value: /a/b }} }}]\n{TO_A}    - matches: [{{ path: {{ type: Exact, value: /a/b/c }} }}]\n{TO_A}"
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &route("r", &rules)]));
    assert_eq!(
        lookup(&t, "h", "/a/b/c", &[]).as_deref(),
        Some("default/r#3")
    );
    assert_eq!(
        lookup(&t, "h", "/a/b/d", &[]).as_deref(),
        Some("default/r#2")
    );
    assert_eq!(lookup(&t, "h", "/a/b", &[]).as_deref(), Some("default/r#2"));
    assert_eq!(lookup(&t, "h", "/a/x", &[]).as_deref(), Some("default/r#1"));
    assert_eq!(lookup(&t, "h", "/ab", &[]), None);
}

#[test]
fn regex_matches_the_whole_path() {
    let rules = format!(
        "  rules:\n    - matches: [{{ path: {{ type: RegularExpression, value: '/v[0-9]+/items' }} }}]\n{TO_A}"
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &route("r", &rules)]));
    assert!(lookup(&t, "h", "/v2/items", &[]).is_some());
    assert!(lookup(&t, "h", "/v2/items/x", &[]).is_none());
    assert!(lookup(&t, "h", "/x/v2/items", &[]).is_none());
}

#[test]
fn method_then_more_headers_then_more_query_params_win_on_the_same_path() {
    let rules = format!(
        "  rules:
    - matches: [{{ path: {{ value: /p }} }}]
{TO_A}    - matches: [{{ path: {{ value: /p }}, queryParams: [{{ name: q, value: '1' }}] }}]
{TO_A}    - matches: [{{ path: {{ value: /p }}, headers: [{{ name: x-a, value: '1' }}] }}]
{TO_A}    - matches: [{{ path: {{ value: /p }}, headers: [{{ name: x-a, value: '1' }}, {{ name: X-B, type: RegularExpression, value: 'b+' }}] }}]
{TO_A}    - matches: [{{ path: {{ value: /p }}, method: POST }}]
{TO_A}"
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &route("r", &rules)]));
    let get = |path: &str, h: &[(&str, &str)]| lookup(&t, "h", path, h);
    assert_eq!(get("/p", &[]).as_deref(), Some("default/r#0"));
    assert_eq!(get("/p?q=1", &[]).as_deref(), Some("default/r#1"));
    assert_eq!(
        get("/p?q=1", &[("x-a", "1")]).as_deref(),
        Some("default/r#2")
    );
    assert_eq!(
        get("/p?q=1", &[("x-a", "1"), ("x-b", "bbb")]).as_deref(),
        Some("default/r#3")
    );
    assert_eq!(
        get("/p", &[("x-a", "1"), ("x-b", "bc")]).as_deref(),
        Some("default/r#2"),
        "the regex must match the whole value"
    );
    let post = lookup_method(&t, &http::Method::POST, "h", "/p?q=1", &[("x-a", "1")]);
    assert_eq!(post.as_deref(), Some("default/r#4"));
}

#[test]
fn repeated_headers_are_matched_joined_with_commas() {
    let rules = format!(
        "  rules:\n    - matches: [{{ headers: [{{ name: x-v, value: 'a,b' }}] }}]\n{TO_A}"
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &route("r", &rules)]));
    assert!(lookup(&t, "h", "/", &[("x-v", "a"), ("x-v", "b")]).is_some());
    assert!(lookup(&t, "h", "/", &[("x-v", "a")]).is_none());
}

#[test]
fn exact_hostnames_beat_wildcards_which_beat_routes_without_hostnames() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("any", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &route(
            "wild",
            &format!("  hostnames: ['*.example.com']\n  rules:\n    - {}", TO_A.trim_start()),
        ),
        &route(
            "deep",
            &format!("  hostnames: ['*.api.example.com']\n  rules:\n    - {}", TO_A.trim_start()),
        ),
        &route(
            "exact",
            &format!(
                "  hostnames: [www.example.com]\n  rules:\n    - matches: [{{ path: {{ value: /only }} }}]\n{TO_A}"
            ),
        ),
    ]);
    let t = table(&yaml);
    assert_eq!(
        lookup(&t, "www.example.com", "/only/x", &[]).as_deref(),
        Some("default/exact#0")
    );
    // The exact host's routes do not match this path: the wildcard's do.
    assert_eq!(
        lookup(&t, "www.example.com", "/other", &[]).as_deref(),
        Some("default/wild#0")
    );
    assert_eq!(
        lookup(&t, "v1.api.example.com", "/", &[]).as_deref(),
        Some("default/deep#0")
    );
    assert_eq!(
        lookup(&t, "example.com", "/", &[]).as_deref(),
        Some("default/any#0")
    );
    assert_eq!(
        lookup(&t, "localhost", "/", &[]).as_deref(),
        Some("default/any#0")
    );
}

#[test]
fn ties_go_to_the_route_first_in_namespace_name_order_then_rule_order() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("zeta", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &route(
            "alpha",
            &format!(
                "  rules:\n    - {}    - {}",
                TO_A.trim_start(),
                TO_A.trim_start()
            ),
        ),
    ]);
    let t = table(&yaml);
    assert_eq!(
        lookup(&t, "h", "/x", &[]).as_deref(),
        Some("default/alpha#0")
    );
}

#[test]
fn an_older_route_wins_a_tie_when_objects_carry_creation_timestamps() {
    let with_ts = |name: &str, ts: &str| {
        route(name, &format!("  rules:\n    - {}", TO_A.trim_start())).replace(
            &format!("metadata: {{ name: {name} }}"),
            &format!("metadata: {{ name: {name}, creationTimestamp: '{ts}' }}"),
        )
    };
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &with_ts("alpha", "2024-05-01T00:00:00Z"),
        &with_ts("zeta", "2024-01-01T00:00:00Z"),
    ]);
    let t = table(&yaml);
    assert_eq!(lookup(&t, "h", "/", &[]).as_deref(), Some("default/zeta#0"));
}

#[test]
fn the_most_specific_listener_isolates_its_routes() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: any, port: 8080, protocol: HTTP }
    - { name: api, port: 8080, protocol: HTTP, hostname: api.example.com }
";
    let yaml = all(&[
        gateway,
        BACKENDS,
        &route(
            "catchall",
            &format!("  rules:\n    - {}", TO_A.trim_start()),
        )
        .replace("[{ name: edge }]", "[{ name: edge, sectionName: any }]"),
        &route(
            "api",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /v1 }} }}]\n{TO_A}"),
        )
        .replace("[{ name: edge }]", "[{ name: edge, sectionName: api }]"),
    ]);
    let t = table(&yaml);
    assert_eq!(
        lookup(&t, "api.example.com", "/v1/x", &[]).as_deref(),
        Some("default/api#0")
    );
    // api.example.com belongs to the api listener: the catch-all listener's routes are not
    // consulted for it.
    assert_eq!(lookup(&t, "api.example.com", "/other", &[]), None);
    assert_eq!(
        lookup(&t, "www.example.com", "/other", &[]).as_deref(),
        Some("default/catchall#0")
    );
}

#[test]
fn route_hostnames_are_narrowed_by_the_listener_hostname() {
    let gateway = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, hostname: '*.example.com' }",
    );
    let yaml = all(&[
        &gateway,
        BACKENDS,
        &route(
            "r",
            &format!(
                "  hostnames: [a.example.com, b.other.com]\n  rules:\n    - {}",
                TO_A.trim_start()
            ),
        ),
    ]);
    let t = table(&yaml);
    assert_eq!(
        t.policy.routes[0].attachments[0].hostnames,
        [HostPattern::parse("a.example.com")]
    );
    assert!(lookup(&t, "a.example.com", "/", &[]).is_some());
    assert!(lookup(&t, "b.other.com", "/", &[]).is_none());
}

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
fn unknown_gateway_and_duplicate_listeners_on_one_port_are_refused() {
    let second = GATEWAY
        .replace("name: edge }", "name: edge2 }")
        .replace("name: http,", "name: other,");
    let yaml = all(&[
        GATEWAY,
        &second,
        BACKENDS,
        &route("r", &format!("  rules:\n    - {}", TO_A.trim_start()))
            .replace("[{ name: edge }]", "[{ name: nowhere }]"),
    ]);
    let errs = errors(&yaml);
    let got = places(
        &errs,
        "already served by listener \"http\" of Gateway default/edge",
    );
    assert_eq!(
        got,
        [
            ("Gateway/edge2".into(), "spec.listeners[0]".into()),
            ("HTTPRoute/r".into(), "spec.parentRefs[0].name".into()),
        ]
    );
}

#[test]
fn https_listeners_compile_with_their_certificate_secrets() {
    let gateway = GATEWAY.replace(
        "{ name: http, port: 8080, protocol: HTTP }",
        "{ name: https, port: 8443, hostname: a.example.com, protocol: HTTPS, tls: { mode: Terminate, certificateRefs: [{ name: rsa }, { kind: Secret, name: ec, namespace: certs }] } }",
    );
    let t = table(&gateway);
    assert_eq!(t.listen_ports(), [8443]);
    let tls = t.policy.listeners[0].tls.as_ref().expect("tls settings");
    let names: Vec<String> = tls.certificates.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["default/rsa", "certs/ec"]);
    // Plain listeners have none.
    assert!(table(GATEWAY).policy.listeners[0].tls.is_none());
}

#[test]
fn https_listener_errors_name_the_field() {
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ kind: ConfigMap, name: c }] } }
    - { name: b, port: 8444, protocol: HTTPS, tls: { mode: Passthrough, certificateRefs: [{ name: c }] } }
    - { name: c, port: 8445, protocol: HTTPS }
    - { name: d, port: 8446, protocol: HTTPS, tls: { certificateRefs: [{ name: ../../etc }, { name: ok, namespace: Bad_NS }] } }
    - { name: e, port: 8447, protocol: HTTPS, tls: { certificateRefs: [] } }
    - { name: f, port: 8448, protocol: HTTPS, tls: { certificateRefs: [{ name: c }], options: { x: 'v' } } }
    - { name: g, port: 8449, protocol: TLS }
",
    );
    let errs = errors(&gateway);
    let got: Vec<String> = places(&errs, "only core Secrets can hold certificates")
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        got,
        [
            "spec.listeners[0].tls.certificateRefs[0]",
            "spec.listeners[1].tls.mode",
            "spec.listeners[2].tls",
            "spec.listeners[3].tls.certificateRefs[0].name",
            "spec.listeners[3].tls.certificateRefs[1].namespace",
            "spec.listeners[4].tls.certificateRefs",
            "spec.listeners[5].tls.options.x",
            "spec.listeners[6].protocol",
        ]
    );
}

#[test]
fn client_certificate_cas_are_configmaps_in_the_gateway_namespace_by_default() {
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }], frontendValidation: { caCertificateRefs: [{ kind: ConfigMap, name: clients }, { group: '', kind: ConfigMap, name: partners, namespace: pki }] } } }
",
    );
    let t = table(&gateway);
    let tls = t.policy.listeners[0].tls.as_ref().expect("tls settings");
    let names: Vec<String> = tls.client_cas.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["default/clients", "pki/partners"]);

    let bad = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }], frontendValidation: { caCertificateRefs: [{ kind: Secret, name: clients }] } } }
    - { name: b, port: 8444, protocol: HTTPS, tls: { certificateRefs: [{ name: c }], frontendValidation: {} } }
",
    );
    let errs = errors(&bad);
    let got: Vec<String> = places(&errs, "only core ConfigMaps can hold CA certificates")
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        got,
        [
            "spec.listeners[0].tls.frontendValidation.caCertificateRefs[0]",
            "spec.listeners[1].tls.frontendValidation.caCertificateRefs",
        ]
    );
}

#[test]
fn one_port_cannot_mix_http_and_https_listeners() {
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: http, port: 8080, protocol: HTTP }
    - { name: https, port: 8080, hostname: a.example.com, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
",
    );
    let errs = errors(&gateway);
    let got = places(
        &errs,
        "port 8080 is already served as HTTP by listener \"http\" of Gateway default/edge; one port cannot mix HTTP and HTTPS listeners",
    );
    assert_eq!(
        got,
        [("Gateway/edge".into(), "spec.listeners[1].protocol".into())]
    );
}

#[test]
fn services_cross_namespace_refs_and_ports_on_backend_refs_are_refused() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            "  rules:
    - backendRefs:
        - { name: svc, port: 80 }
        - { group: tollgate.dev, kind: Backend, name: a, namespace: other }
        - { group: tollgate.dev, kind: Backend, name: a, port: 80 }
",
        ),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "Kubernetes mode");
    assert_eq!(
        got,
        [
            ("HTTPRoute/r".into(), "spec.rules[0].backendRefs[0]".into()),
            (
                "HTTPRoute/r".into(),
                "spec.rules[0].backendRefs[1].namespace".into()
            ),
            (
                "HTTPRoute/r".into(),
                "spec.rules[0].backendRefs[2].port".into()
            ),
        ]
    );
}

#[test]
fn filters_are_checked() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!(
                "  rules:
    - matches: [{{ path: {{ type: Exact, value: /x }} }}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{ set: [{{ name: x-a, value: '1' }}, {{ name: X-A, value: '2' }}], remove: [host] }}
        - type: URLRewrite
          urlRewrite: {{ path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /y }} }}
        - type: RequestHeaderModifier
          requestHeaderModifier: {{}}
        - type: RequestMirror
          requestMirror: {{ backendRef: {{ name: a }} }}
        - type: ResponseHeaderModifier
          requestHeaderModifier: {{}}
{TO_A}"
            ),
        ),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "named twice");
    let f = |s: &str| {
        (
            "HTTPRoute/r".to_string(),
            format!("spec.rules[0].filters{s}"),
        )
    };
    assert_eq!(
        got,
        [
            f("[0].requestHeaderModifier.set[1].name"),
            f("[0].requestHeaderModifier.remove[0]"),
            f("[1].urlRewrite.path.type"),
            f("[2].type"),
            f("[3].type"),
            f("[4].requestHeaderModifier"),
            f("[4].responseHeaderModifier"),
        ]
    );
    assert!(
        errs[1].message.contains("managed by the proxy"),
        "{}",
        errs[1]
    );
}

#[test]
fn a_redirect_rule_needs_no_backends_and_may_not_have_any() {
    let redirect = "      filters: [{ type: RequestRedirect, requestRedirect: { scheme: https, statusCode: 301 } }]\n";
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /old }} }}]\n{redirect}"),
        ),
    ]));
    let rule = &t.policy.routes[0].rules[0].rule;
    let r = rule.redirect.as_ref().unwrap();
    assert_eq!(
        (r.scheme.as_deref(), r.status.as_u16()),
        (Some("https"), 301)
    );
    assert!(rule.backends.is_empty());
    let errs = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!("  rules:\n    - {}{TO_A}", redirect.trim_start()),
        ),
    ]));
    places(&errs, "remove its backendRefs");
    let errs = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route("r", "  rules:\n    - matches: []\n"),
    ]));
    places(&errs, "a rule needs backendRefs");
}

#[test]
fn backend_problems_are_named() {
    let yaml = "apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: x, namespace: shop }
spec:
  endpoints:
    - ip: { address: 10.0.0.300, port: 80 }
    - ip: { address: 10.0.0.1, port: 0 }
    - { ip: { address: 10.0.0.1, port: 1 }, fqdn: { hostname: a, port: 1 } }
    - fqdn: { hostname: Bad_Name, port: 80 }
    - ip: { address: 10.0.0.2, port: 80 }
    - ip: { address: 10.0.0.2, port: 80 }
  healthCheck: { passive: { consecutiveFailures: 0, ejectionTime: 10x } }
  tls: { hostname: x.internal }
";
    let errs = errors(yaml);
    let got = places(&errs, "not an IPv4 or IPv6 address");
    let f = |s: &str| ("Backend/shop/x".to_string(), format!("spec.{s}"));
    assert_eq!(
        got,
        [
            f("endpoints[0].ip.address"),
            f("endpoints[1].ip.port"),
            f("endpoints[2]"),
            f("endpoints[3].fqdn.hostname"),
            f("endpoints[5]"),
            f("healthCheck.passive.consecutiveFailures"),
            f("healthCheck.passive.ejectionTime"),
            f("tls.caCertificateRefs"),
        ]
    );
}

#[test]
fn a_route_in_another_namespace_needs_the_listener_to_allow_it() {
    let route_ns = route("r", &format!("  rules:\n    - {}", TO_A.trim_start()))
        .replace(
            "metadata: { name: r }",
            "metadata: { name: r, namespace: shop }",
        )
        .replace("[{ name: edge }]", "[{ name: edge, namespace: default }]");
    let backend_ns = BACKENDS.replace(
        "metadata: { name: a }",
        "metadata: { name: a, namespace: shop }",
    );
    let errs = errors(&all(&[GATEWAY, &backend_ns, &route_ns]));
    assert_eq!(
        places(&errs, "only accept routes from namespace default"),
        [("HTTPRoute/shop/r".into(), "spec.parentRefs[0]".into())]
    );
    let open = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }",
    );
    let t = table(&all(&[&open, &backend_ns, &route_ns]));
    assert_eq!(lookup(&t, "h", "/", &[]).as_deref(), Some("shop/r#0"));
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
    assert_eq!(objects, ["L4Policy/edge", "HTTPRoute/r"]);
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
fn ten_thousand_routes_compile_and_route_as_the_reference_does() {
    // 5,000 routes by hostname and 5,000 by path prefix, each with an exact and a header
    // match too, on one listener.
    let mut yaml = vec![GATEWAY.to_owned(), BACKENDS.to_owned()];
    for i in 0..10_000 {
        let spec = if i % 2 == 0 {
            format!("  hostnames: [svc{i}.example.com]\n  rules:\n    - matches: [{{ path: {{ value: /api }} }}, {{ path: {{ type: Exact, value: /health }} }}]\n{TO_A}")
        } else {
            format!("  rules:\n    - matches: [{{ path: {{ value: /svc/{i} }} }}, {{ path: {{ value: /svc/{i}/admin }}, headers: [{{ name: x-admin, value: 'yes' }}] }}]\n{TO_A}")
        };
        yaml.push(route(&format!("r{i}"), &spec));
    }
    let started = std::time::Instant::now();
    let objects = tollgate_model::parse(&docs(&[("l7.yaml", &yaml.join("---\n"))])).unwrap();
    let parsed = started.elapsed();
    let t = compile(&objects).unwrap_or_else(|e| panic!("{e}"));
    let compiled = started.elapsed() - parsed;
    assert_eq!(t.policy.routes.len(), 10_000);
    assert_eq!(t.candidates(), 20_000);
    let mut rng = 12345u64;
    let mut next = move |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let started = std::time::Instant::now();
    for _ in 0..500 {
        let i = next(10_000);
        let (host, path) = match next(4) {
            0 => (format!("svc{i}.example.com"), "/api/x".to_owned()),
            1 => (format!("svc{i}.example.com"), "/health".to_owned()),
            2 => ("any.example.com".to_owned(), format!("/svc/{i}/admin/x")),
            _ => ("any.example.com".to_owned(), format!("/svc/{i}x")),
        };
        let admin = if next(2) == 0 {
            vec![("x-admin", "yes")]
        } else {
            vec![]
        };
        // `lookup` checks the index against the reference on every call.
        let _ = lookup(&t, &host, &path, &admin);
    }
    eprintln!(
        "10,000 routes: parsed in {parsed:?}, compiled in {compiled:?}; 500 look-ups (each checked against the reference) in {:?}",
        started.elapsed()
    );
    assert_eq!(
        lookup(&t, "svc42.example.com", "/api/v1", &[]).as_deref(),
        Some("default/r42#0")
    );
    assert_eq!(
        lookup(
            &t,
            "x.example.com",
            "/svc/4243/admin",
            &[("x-admin", "yes")]
        )
        .as_deref(),
        Some("default/r4243#0")
    );
    assert_eq!(lookup(&t, "x.example.com", "/svc/4243x", &[]), None);
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

fn limit_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

const TARGET_A: &str =
    "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n";

#[test]
fn rate_limit_policies_attach_to_every_rule_of_their_routes_in_name_order() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "a",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}    - matches: [{{ path: {{ value: /b }} }}]\n{TO_A}"),
        ),
        &route("free", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "zz",
            &format!("{TARGET_A}  mode: shadow\n  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n"),
        ),
        &limit_policy(
            "aa",
            &format!("{TARGET_A}  limits:\n    - {{ key: clientIP, requests: 100, per: 1m, burst: 150 }}\n    - {{ name: tenant, key: header, header: X-Tenant, requests: 10, per: 1h }}\n"),
        ),
    ]));
    let defs = &t.policy.rate_limits;
    let summary: Vec<_> = defs
        .iter()
        .map(|d| {
            (
                d.policy.to_string(),
                d.name.clone(),
                d.requests,
                d.per.as_secs(),
                d.burst,
                d.shadow,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("default/aa".into(), "aa-0".into(), 100, 60, 150, false),
            ("default/aa".into(), "tenant".into(), 10, 3600, 10, false),
            ("default/zz".into(), "zz".into(), 5, 1, 5, true),
        ]
    );
    assert_eq!(
        defs[1].key,
        table::LimitKey::Header(HeaderName::from_static("x-tenant"))
    );
    let rule_of = |path: &str| {
        let headers = HeaderMap::new();
        let req = RequestView {
            host: "x",
            path,
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        t.ports[&8080].route(&req).unwrap().rule.clone()
    };
    for path in ["/a", "/b"] {
        let r = rule_of(path);
        assert_eq!(r.rate_limits.limits, [0, 1, 2], "{path}");
        // The shadow limit is not announced.
        assert_eq!(
            r.rate_limits.policy_header.as_ref().unwrap(),
            "\"aa-0\";q=100;w=60, \"tenant\";q=10;w=3600"
        );
    }
    assert!(rule_of("/other").rate_limits.limits.is_empty());
}

#[test]
fn invalid_rate_limit_policies_are_refused_with_the_field_at_fault() {
    let limits = "  limits:
    - { key: clientIP, requests: 0, per: 1s }
    - { key: clientIP, requests: 1, per: 500ms }
    - { key: clientIP, requests: 1, per: 2d }
    - { key: header, requests: 1, per: 1s }
    - { key: clientIP, header: x-a, requests: 1, per: 1s }
    - { key: consumer, requests: 1, per: 1s }
    - { key: header, header: 'bad header', requests: 1, per: 1s, burst: 0 }
    - { name: same, key: clientIP, requests: 1, per: 25h }
    - { name: same, key: clientIP, requests: 1, per: 0s }
";
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "bad",
            &format!("  targetRefs:\n    - {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: nope }}\n    - {{ group: tollgate.dev, kind: Backend, name: a }}\n    - {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }}\n    - {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }}\n{limits}"),
        ),
        &limit_policy("empty", "  targetRefs: []\n  limits: []\n"),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "need an AuthPolicy");
    let f = |field: &str| ("RateLimitPolicy/bad".to_string(), field.to_string());
    let e = |field: &str| ("RateLimitPolicy/empty".to_string(), field.to_string());
    assert_eq!(
        got,
        [
            f("spec.targetRefs[0].name"),
            f("spec.targetRefs[1]"),
            f("spec.targetRefs[3].name"),
            f("spec.limits[0].requests"),
            f("spec.limits[1].per"),
            f("spec.limits[2].per"),
            f("spec.limits[3].header"),
            f("spec.limits[4].header"),
            f("spec.limits[5].key"),
            f("spec.limits[6].header"),
            f("spec.limits[6].burst"),
            f("spec.limits[7].per"),
            f("spec.limits[8].name"),
            f("spec.limits[8].per"),
            e("spec.targetRefs"),
            e("spec.limits"),
        ]
    );
    let message = |field: &str| {
        errs.iter()
            .find(|x| x.location.object == "RateLimitPolicy/bad" && x.location.field == field)
            .unwrap()
            .message
            .clone()
    };
    assert!(message("spec.targetRefs[0].name").contains("no HTTPRoute default/nope"));
    assert!(message("spec.limits[1].per").contains("whole number of seconds"));
    assert!(message("spec.limits[2].per").contains("not a duration"));
    assert!(message("spec.limits[7].per").contains("longer than 24h"));
    assert!(message("spec.limits[3].header").contains("key: header needs"));
    assert!(message("spec.limits[5].key").contains("no AuthPolicy targets HTTPRoute default/a"));
    assert!(errs.iter().all(|x| x.location.file == "l7.yaml"));
}

fn auth_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

#[test]
fn auth_policies_attach_to_their_routes_and_let_limits_count_per_consumer() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "a",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}"),
        ),
        &route("free", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "keys",
            &format!("{TARGET_A}  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: k1 }}, {{ name: k2 }}] }}\n  basicAuth: {{ credentialRefs: [{{ name: users }}] }}\n"),
        ),
        &limit_policy(
            "per-consumer",
            &format!("{TARGET_A}  limits: [{{ key: consumer, requests: 5, per: 1s }}]\n"),
        ),
    ]));
    assert_eq!(t.policy.auth.len(), 1);
    let def = &t.policy.auth[0];
    assert_eq!(&*def.policy, "default/keys");
    let key = def.api_key.as_ref().unwrap();
    assert_eq!(
        key.location,
        table::KeyLocation::Header(HeaderName::from_static("x-api-key"))
    );
    let names: Vec<String> = key
        .files
        .iter()
        .chain(&def.basic)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, ["default/k1", "default/k2", "default/users"]);
    assert_eq!(t.policy.rate_limits[0].key, table::LimitKey::Consumer);
    let rule_of = |path: &str| {
        let headers = HeaderMap::new();
        let req = RequestView {
            host: "x",
            path,
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        t.ports[&8080].route(&req).unwrap().rule.clone()
    };
    assert_eq!(rule_of("/a").auth, Some(0));
    assert_eq!(rule_of("/other").auth, None);
}

#[test]
fn invalid_auth_policies_are_refused_with_the_field_at_fault() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &route("b", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "bad",
            "  targetRefs:\n    - { group: gateway.networking.k8s.io, kind: HTTPRoute, name: nope }\n    - { group: tollgate.dev, kind: Backend, name: a }\n    - { group: gateway.networking.k8s.io, kind: HTTPRoute, name: b }\n  apiKey: { header: X-Api-Key, query: key, credentialRefs: [{ name: Bad/Name }, { name: k }, { name: k }] }\n  jwt: { providers: [] }\n  banOnAbuse: { failures: 0, within: 500ms, blockFor: 25h }\n",
        ),
        &auth_policy("empty", "  targetRefs: []\n"),
        &auth_policy(
            "first",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n  apiKey: { header: Host, credentialRefs: [] }\n",
        ),
        &auth_policy(
            "ok",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n  basicAuth: { credentialRefs: [{ name: u }] }\n",
        ),
        &auth_policy(
            "twice",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n  apiKey: { query: 'a&b', credentialRefs: [{ name: k }] }\n",
        ),
        &auth_policy(
            "zz",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n  basicAuth: { credentialRefs: [{ name: u }] }\n",
        ),
        &limit_policy(
            "per-consumer",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: b }]\n  limits: [{ key: consumer, requests: 5, per: 1s }]\n",
        ),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "out of range 1s-24h");
    let at = |object: &str, field: &str| (format!("AuthPolicy/{object}"), field.to_string());
    assert_eq!(
        got,
        [
            at("bad", "spec.targetRefs[0].name"),
            at("bad", "spec.targetRefs[1]"),
            at("bad", "spec.banOnAbuse.failures"),
            at("bad", "spec.banOnAbuse.within"),
            at("bad", "spec.banOnAbuse.blockFor"),
            at("bad", "spec.apiKey.credentialRefs[0].name"),
            at("bad", "spec.apiKey.credentialRefs[2].name"),
            at("bad", "spec.apiKey"),
            at("bad", "spec.jwt.providers"),
            at("empty", "spec.targetRefs"),
            at("empty", "spec"),
            at("first", "spec.apiKey.credentialRefs"),
            at("first", "spec.apiKey.header"),
            at("twice", "spec.apiKey.query"),
            at("zz", "spec.targetRefs[0].name"),
            (
                "RateLimitPolicy/per-consumer".to_string(),
                "spec.limits[0].key".to_string()
            ),
        ]
    );
    let message = |object: &str, field: &str| {
        errs.iter()
            .find(|x| {
                x.location.object == format!("AuthPolicy/{object}") && x.location.field == field
            })
            .unwrap()
            .message
            .clone()
    };
    assert!(message("zz", "spec.targetRefs[0].name").contains("already has AuthPolicy default/ok"));
    assert!(message("bad", "spec.apiKey").contains("exactly one of header or query"));
    assert!(message("first", "spec.apiKey.header").contains("\"Host\""));
    assert!(errs.iter().all(|x| x.location.file == "l7.yaml"));
}

const JWKS_ED25519: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

#[test]
fn jwt_client_certificate_and_allowed_consumers_compile() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "jwt",
            &format!(
                "  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }}]\n  jwt:\n    providers:\n      - name: idp\n        issuer: https://idp.example.com\n        audiences: [orders]\n        jwks: {{ uri: 'https://idp.example.com/jwks.json', refreshInterval: 10m, caCertificateRef: {{ name: idp-ca }} }}\n        consumerClaim: client_id\n        claimToHeaders: [{{ claim: tenant, header: X-Tenant }}]\n        clockSkew: 0s\n      - name: local\n        jwks: {{ inline: '{JWKS_ED25519}' }}\n        extractFrom: {{ query: token }}\n  clientCertificate: {{ consumerFrom: SubjectAltNameDNS }}\n  allowedConsumers: [alice, bob]\n"
            ),
        ),
    ]));
    let def = &t.policy.auth[0];
    assert_eq!(def.jwt.len(), 2);
    let idp = &def.jwt[0];
    assert_eq!(idp.issuer.as_deref(), Some("https://idp.example.com"));
    assert_eq!(idp.audiences, ["orders"]);
    assert_eq!(
        idp.jwks,
        table::JwksDef::Uri {
            url: "https://idp.example.com/jwks.json".into(),
            ca: Some(table::SecretRef {
                namespace: "default".into(),
                name: "idp-ca".into()
            }),
            refresh: Duration::from_secs(600),
        }
    );
    assert_eq!(idp.consumer_claim, "client_id");
    assert_eq!(
        idp.claim_headers,
        [("tenant".to_string(), HeaderName::from_static("x-tenant"))]
    );
    assert_eq!(idp.location, table::TokenLocation::Bearer);
    assert_eq!(idp.clock_skew, Duration::ZERO);
    let local = &def.jwt[1];
    assert_eq!(local.consumer_claim, "sub");
    assert_eq!(local.clock_skew, Duration::from_secs(60));
    assert_eq!(local.location, table::TokenLocation::Query("token".into()));
    assert!(matches!(local.jwks, table::JwksDef::Inline(_)));
    assert_eq!(
        def.client_certificate,
        Some(tollgate_model::auth::CertificateField::SubjectAltNameDNS)
    );
    let allowed: Vec<&str> = def
        .allowed_consumers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| &**c)
        .collect();
    assert_eq!(allowed, ["alice", "bob"]);
}

#[test]
fn invalid_jwt_providers_are_refused_with_the_field_at_fault() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "bad",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }]\n  jwt:\n    providers:\n      - name: idp\n        issuer: ''\n        jwks: { uri: 'ftp://idp.example.com/jwks', inline: '{}' }\n        clockSkew: 10m\n      - name: idp\n        jwks: { uri: 'http://idp.example.com/jwks', refreshInterval: 1s, caCertificateRef: { name: ca } }\n        claimToHeaders: [{ claim: sub, header: X-Tollgate-Consumer }, { claim: '', header: 'bad header' }]\n        extractFrom: { header: X-Token, query: token }\n      - name: inline\n        jwks: { inline: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}' }\n        clockSkew: soon\n      - name: notjson\n        jwks: { inline: 'nope' }\n        extractFrom: { query: 'a&b' }\n  allowedConsumers: ['bad id', alice, alice]\n",
        ),
    ]);
    let errs = errors(&yaml);
    let got: Vec<String> = errs
        .iter()
        .filter(|e| e.location.object == "AuthPolicy/bad")
        .map(|e| e.location.field.clone())
        .collect();
    assert_eq!(
        got,
        [
            "spec.jwt.providers[0].issuer",
            "spec.jwt.providers[0].jwks",
            "spec.jwt.providers[0].clockSkew",
            "spec.jwt.providers[1].name",
            "spec.jwt.providers[1].jwks.refreshInterval",
            "spec.jwt.providers[1].jwks.caCertificateRef",
            "spec.jwt.providers[1].claimToHeaders[0].header",
            "spec.jwt.providers[1].claimToHeaders[1].claim",
            "spec.jwt.providers[1].claimToHeaders[1].header",
            "spec.jwt.providers[1].extractFrom",
            "spec.jwt.providers[2].jwks.inline",
            "spec.jwt.providers[2].clockSkew",
            "spec.jwt.providers[3].jwks.inline",
            "spec.jwt.providers[3].extractFrom.query",
            "spec.allowedConsumers[0]",
            "spec.allowedConsumers[2]",
        ]
    );
    let message = |field: &str| {
        errs.iter()
            .find(|x| x.location.field == field)
            .unwrap()
            .message
            .clone()
    };
    assert!(message("spec.jwt.providers[0].jwks").contains("exactly one of uri or inline"));
    assert!(message("spec.jwt.providers[0].clockSkew").contains("5m"));
    assert!(message("spec.jwt.providers[2].jwks.inline").contains("no usable key"));
    assert!(message("spec.jwt.providers[3].jwks.inline").contains("not JSON"));
    assert!(message("spec.allowedConsumers[0]").contains("letters, digits"));
    assert!(errs.iter().all(|x| x.location.file == "l7.yaml"));

    // A claim header may not be one that carries credentials.
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "clash",
            &format!("  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }}]\n  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: k }}] }}\n  jwt:\n    providers:\n      - {{ name: a, jwks: {{ inline: '{JWKS_ED25519}' }}, extractFrom: {{ header: X-Token }}, claimToHeaders: [{{ claim: sub, header: x-api-key }}] }}\n      - {{ name: b, jwks: {{ inline: '{JWKS_ED25519}' }}, claimToHeaders: [{{ claim: sub, header: X-Sub }}, {{ claim: t, header: X-TOKEN }}] }}\n"),
        ),
    ]);
    let errs = errors(&yaml);
    let got: Vec<&str> = errs.iter().map(|e| e.location.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "spec.jwt.providers[0].claimToHeaders[0].header",
            "spec.jwt.providers[1].claimToHeaders[1].header"
        ]
    );
    assert!(
        errs[0].message.contains("carries credentials"),
        "{}",
        errs[0].message
    );
}

#[test]
fn ban_on_abuse_compiles_per_policy_and_shadow_limits_never_ban() {
    use tollgate_model::BanKind;
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "keys",
            &format!("{TARGET_A}  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: k }}] }}\n  banOnAbuse: {{ failures: 20, within: 60s, blockFor: 10m }}\n"),
        ),
        &limit_policy(
            "limits",
            &format!("{TARGET_A}  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n  banOnAbuse: {{ rejections: 100, within: 1m, blockFor: 24h }}\n"),
        ),
        &limit_policy(
            "shadow",
            &format!("{TARGET_A}  mode: shadow\n  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n  banOnAbuse: {{ rejections: 1, within: 1s, blockFor: 1s }}\n"),
        ),
    ]));
    let auth = t.policy.bans[&(BanKind::Auth, "default/keys".into())];
    assert_eq!(auth.threshold, 20);
    assert_eq!(auth.within, Duration::from_secs(60));
    assert_eq!(auth.block_for, Duration::from_secs(600));
    let limit = t.policy.bans[&(BanKind::Ratelimit, "default/limits".into())];
    assert_eq!(limit.threshold, 100);
    assert_eq!(limit.block_for, Duration::from_secs(24 * 3600));
    assert_eq!(t.policy.bans.len(), 2, "a shadow policy never bans");
}

#[test]
fn ban_on_abuse_of_a_rate_limit_policy_is_checked() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "limits",
            &format!("{TARGET_A}  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n  banOnAbuse: {{ rejections: -1, within: forever, blockFor: 0s }}\n"),
        ),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "out of range 1s-24h");
    let at = |field: &str| ("RateLimitPolicy/limits".to_string(), field.to_string());
    assert_eq!(
        got,
        [
            at("spec.banOnAbuse.rejections"),
            at("spec.banOnAbuse.within"),
            at("spec.banOnAbuse.blockFor"),
        ]
    );
}

#[test]
fn client_ip_prefixes_default_to_a_64_and_are_checked() {
    use crate::l7::table::{ClientPrefixes, LimitKey};
    use tollgate_model::BanKind;
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "limits",
            &format!("{TARGET_A}  limits:\n    - {{ name: d, key: clientIP, requests: 5, per: 1s }}\n    - {{ name: w, key: clientIP, clientIP: {{ ipv4Prefix: 24, ipv6Prefix: 48 }}, requests: 5, per: 1s }}\n  banOnAbuse: {{ rejections: 100, within: 1m, blockFor: 1h, clientIP: {{ ipv6Prefix: 56 }} }}\n"),
        ),
        &auth_policy(
            "keys",
            &format!("{TARGET_A}  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: k }}] }}\n  banOnAbuse: {{ failures: 20, within: 60s, blockFor: 10m }}\n"),
        ),
    ]));
    let keys: Vec<&LimitKey> = t.policy.rate_limits.iter().map(|l| &l.key).collect();
    assert_eq!(
        keys,
        [
            &LimitKey::ClientIp(ClientPrefixes { v4: 32, v6: 64 }),
            &LimitKey::ClientIp(ClientPrefixes { v4: 24, v6: 48 }),
        ]
    );
    assert_eq!(
        t.policy.bans[&(BanKind::Ratelimit, "default/limits".into())].ipv6_prefix,
        56
    );
    assert_eq!(
        t.policy.bans[&(BanKind::Auth, "default/keys".into())].ipv6_prefix,
        64
    );

    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "bad",
            &format!("{TARGET_A}  limits:\n    - {{ key: clientIP, clientIP: {{ ipv4Prefix: 33, ipv6Prefix: -1 }}, requests: 5, per: 1s }}\n    - {{ key: header, header: x-a, clientIP: {{ ipv6Prefix: 64 }}, requests: 5, per: 1s }}\n  banOnAbuse: {{ rejections: 100, within: 1m, blockFor: 1h, clientIP: {{ ipv6Prefix: 32 }} }}\n"),
        ),
    ]);
    let errs = errors(&yaml);
    let at = |field: &str| ("RateLimitPolicy/bad".to_string(), field.to_string());
    assert_eq!(
        places(&errs, "out of range"),
        [
            at("spec.limits[0].clientIP.ipv4Prefix"),
            at("spec.limits[0].clientIP.ipv6Prefix"),
            at("spec.limits[1].clientIP"),
            at("spec.banOnAbuse.clientIP.ipv6Prefix"),
        ]
    );
    assert!(
        errs.iter().any(|e| e.message.contains("48-128")),
        "{errs:?}"
    );
}

fn traffic_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

#[test]
fn a_backend_traffic_policy_sets_the_body_limit_of_every_rule_of_its_routes() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "a",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}    - matches: [{{ path: {{ value: /b }} }}]\n{TO_A}"),
        ),
        &route(
            "c",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /c }} }}]\n{TO_A}"),
        ),
        &traffic_policy("small", &format!("{TARGET_A}  requestBody: {{ maxSize: 1MiB }}\n")),
    ]));
    for r in &t.policy.routes {
        for rule in &r.rules {
            let want = (&*r.label == "default/a").then_some(1 << 20);
            assert_eq!(rule.rule.max_request_body, want, "{}", r.label);
        }
    }
}

#[test]
fn backend_traffic_policy_errors_name_the_field() {
    let e = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", TO_A_RULES),
        &traffic_policy(
            "bad",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 1.5MiB }}\n"),
        ),
        &traffic_policy(
            "huge",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 65GiB }}\n"),
        ),
        &traffic_policy(
            "nowhere",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: zz }]\n",
        ),
    ]));
    let p = places(&e, "64GiB");
    for want in [
        ("BackendTrafficPolicy/bad", "spec.requestBody.maxSize"),
        ("BackendTrafficPolicy/huge", "spec.requestBody.maxSize"),
        ("BackendTrafficPolicy/nowhere", "spec.targetRefs[0].name"),
    ] {
        assert!(
            p.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {p:?}"
        );
    }
    // Two policies on one route.
    let e = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", TO_A_RULES),
        &traffic_policy(
            "one",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 1MiB }}\n"),
        ),
        &traffic_policy(
            "two",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 2MiB }}\n"),
        ),
    ]));
    assert_eq!(
        places(&e, "at most one"),
        vec![(
            "BackendTrafficPolicy/two".to_owned(),
            "spec.targetRefs[0].name".to_owned()
        )]
    );
}

const TO_A_RULES: &str =
    "  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: a }]\n";

fn tls_backend(name: &str, tls: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  endpoints:\n    - ip: {{ address: 127.0.0.1, port: 9443 }}\n  tls: {tls}\n")
}

#[test]
fn backend_tls_compiles_with_its_ca_refs_or_the_system_roots() {
    let t = table(&all(&[
        GATEWAY,
        &tls_backend(
            "a",
            "{ hostname: a.internal, caCertificateRefs: [{ name: ca }], clientCertificateRef: { name: me } }",
        ),
        &tls_backend("b", "{ hostname: b.internal, wellKnownCACertificates: System }"),
        &route("a", TO_A_RULES),
    ]));
    let secret = |name: &str| SecretRef {
        namespace: "default".into(),
        name: name.into(),
    };
    assert_eq!(
        t.policy.backends[0].tls,
        Some(BackendTlsDef {
            hostname: "a.internal".into(),
            ca: BackendCa::Refs(vec![secret("ca")]),
            client_certificate: Some(secret("me")),
        })
    );
    assert_eq!(
        t.policy.backends[1].tls.as_ref().map(|t| &t.ca),
        Some(&BackendCa::System)
    );
}

#[test]
fn backend_tls_errors_name_the_field() {
    let e = errors(&all(&[
        GATEWAY,
        &tls_backend("a", "{ hostname: '*.x', caCertificateRefs: [{ name: ../etc }] }"),
        &tls_backend("b", "{ hostname: b.internal }"),
        &tls_backend(
            "c",
            "{ hostname: c.internal, caCertificateRefs: [{ name: ca }], wellKnownCACertificates: System }",
        ),
        &tls_backend(
            "d",
            "{ hostname: d.internal, caCertificateRefs: [{ kind: Secret, name: ca }], clientCertificateRef: { kind: ConfigMap, name: me } }",
        ),
        &route("a", TO_A_RULES),
    ]));
    let p = places(
        &e,
        "exactly one of caCertificateRefs or wellKnownCACertificates",
    );
    for want in [
        ("Backend/a", "spec.tls.hostname"),
        ("Backend/a", "spec.tls.caCertificateRefs[0].name"),
        ("Backend/b", "spec.tls.caCertificateRefs"),
        ("Backend/c", "spec.tls"),
        ("Backend/d", "spec.tls.caCertificateRefs[0]"),
        ("Backend/d", "spec.tls.clientCertificateRef"),
    ] {
        assert!(
            p.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {p:?}"
        );
    }
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
