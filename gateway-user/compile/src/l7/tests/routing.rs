//! Which route, rule and match a request gets: precedence, hostnames, listeners, order.
use std::time::Duration;

use super::*;
use crate::l7::table::{PathMatch, Retry, Timeouts};

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
            backoff: Duration::from_millis(100),
            after_send: true,
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
fn an_empty_retry_stanza_retries_once_after_send_with_the_default_backoff() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!("  rules:\n    - {}      retry: {{}}\n", TO_A.trim_start()),
        ),
    ]));
    assert_eq!(
        t.policy.routes[0].rules[0].rule.retry,
        Retry {
            codes: vec![],
            attempts: DEFAULT_RETRY_ATTEMPTS,
            backoff: DEFAULT_RETRY_BACKOFF,
            after_send: true,
        }
    );
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
    assert!(
        !rd.rule.retry.after_send,
        "without a retry stanza, only connections that could not be made are retried"
    );
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
fn a_match_naming_a_header_or_query_parameter_again_considers_the_first_entry_only() {
    // The Gateway API: later entries of an equivalent name are ignored (header names compare
    // case-insensitively, query parameter names exactly).
    let rules = format!(
        "  rules:
    - matches: [{{ path: {{ value: /h }}, headers: [{{ name: x-a, value: '1' }}, {{ name: X-A, value: '2' }}] }}]
{TO_A}    - matches: [{{ path: {{ value: /q }}, queryParams: [{{ name: q, value: '1' }}, {{ name: q, value: '2' }}, {{ name: Q, value: '3' }}] }}]
{TO_A}"
    );
    let t = table(&all(&[GATEWAY, BACKENDS, &route("r", &rules)]));
    assert_eq!(t.policy.routes[0].rules.len(), 2, "no rule is dropped");
    let get = |path: &str, h: &[(&str, &str)]| lookup(&t, "h", path, h);
    assert_eq!(get("/h", &[("x-a", "1")]).as_deref(), Some("default/r#0"));
    assert_eq!(get("/h", &[("x-a", "2")]), None);
    assert_eq!(get("/q?q=1&Q=3", &[]).as_deref(), Some("default/r#1"));
    assert_eq!(get("/q?q=2&Q=3", &[]), None);
    assert_eq!(get("/q?q=1", &[]), None, "Q is another parameter");
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
fn ties_between_namespaces_compare_namespace_slash_name_as_one_string() {
    // "a-b/p" < "a/q" ('-' sorts before '/'), though namespace "a" < "a-b".
    let ns = |ns: &str, name: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  endpoints:\n    - ip: {{ address: 127.0.0.1, port: 9001 }}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  parentRefs: [{{ name: edge, namespace: default }}]\n  rules:\n    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {name} }}]\n"
        )
    };
    let gateway = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }",
    );
    let t = table(&all(&[&gateway, &ns("a", "q"), &ns("a-b", "p")]));
    assert_eq!(lookup(&t, "h", "/", &[]).as_deref(), Some("a-b/p#0"));
}
