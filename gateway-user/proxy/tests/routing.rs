//! Routing precedence of the proxy (Gateway API HTTPRoute rules), in process: which backend a
//! request reaches for paths (exact, longest prefix, whole segments, regular expressions),
//! method, headers and query parameters, hostnames (exact, longest wildcard, none; listener
//! isolation), and the tie-breaks (creation time, then namespace/name, then rule order). Rules
//! are listed against their precedence, so that first-listed-wins would fail. Over HTTP/1.1
//! and h2c.
mod harness;

use harness::yaml::{backend, backend_in, documents, gateway, route, route_meta, to};
use harness::{Backend, Gateway};

/// Starts one backend per name.
async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut all = Vec::new();
    for n in names {
        all.push(Backend::start(n).await);
    }
    all
}

/// Backend objects (namespace `default`) for `backends`, named as they are.
fn backend_objects(backends: &[Backend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| backend(&b.name, &[b.port()], ""))
        .collect()
}

/// `(method, host, path, headers)` answered by backend `want` (`None`: 404 from the proxy),
/// over HTTP/1.1 and h2c.
async fn expect(
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    want: Option<&str>,
) {
    for h2 in [false, true] {
        let mut req = gw.request(method, path).host(host);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if h2 {
            req = req.h2();
        }
        let r = req.send().await;
        let what = format!("{method} {host}{path} {headers:?} (h2: {h2})");
        match want {
            Some(b) => assert_eq!((r.status, r.backend()), (200, Some(b)), "{what}: {r:?}"),
            None => assert_eq!((r.status, r.backend()), (404, None), "{what}: {r:?}"),
        }
    }
}

#[tokio::test]
async fn exact_path_beats_the_longest_prefix_which_beats_shorter_prefixes_and_regexes() {
    let b = backends(&["short", "long", "exact", "regex"]).await;
    let rules = format!(
        "  rules:
    - matches: [{{ path: {{ type: PathPrefix, value: /v1 }} }}]
      backendRefs: [{short}]
    - matches: [{{ path: {{ type: RegularExpression, value: '/v1/orders/[0-9]+' }} }}]
      backendRefs: [{regex}]
    - matches: [{{ path: {{ type: RegularExpression, value: '/api/[0-9]+' }} }}]
      backendRefs: [{regex}]
    - matches: [{{ path: {{ type: PathPrefix, value: /v1/orders }} }}]
      backendRefs: [{long}]
    - matches: [{{ path: {{ type: Exact, value: /v1/orders/special }} }}]
      backendRefs: [{exact}]
",
        short = to("short"),
        long = to("long"),
        exact = to("exact"),
        regex = to("regex"),
    );
    let objects = backend_objects(&b);
    let gw = Gateway::start(|port| {
        let g = gateway(&[("http", port, None)]);
        let r = route("paths", &rules);
        let mut docs: Vec<&str> = vec![&g, &r];
        docs.extend(objects.iter().map(String::as_str));
        documents(&docs)
    })
    .await;
    let host = "app.test";
    for (path, want) in [
        ("/v1/orders/special", Some("exact")),
        ("/v1/orders/special/more", Some("long")),
        ("/v1/orders", Some("long")),
        ("/v1/orders/", Some("long")),
        // A prefix matches whole segments only.
        ("/v1/ordersx", Some("short")),
        ("/v1", Some("short")),
        // A prefix, however short, beats a regular expression.
        ("/v1/orders/42", Some("long")),
        ("/api/42", Some("regex")),
        // Regular expressions match the whole path.
        ("/api/42/x", None),
        ("/v2", None),
        ("/", None),
    ] {
        expect(&gw, "GET", host, path, &[], want).await;
    }
    // The path is normalised before routing, and the backend gets the normalised path.
    expect(
        &gw,
        "GET",
        host,
        "/v1/x/../orders/%73pecial",
        &[],
        Some("exact"),
    )
    .await;
    let seen = b[2].last();
    assert_eq!(seen.target, "/v1/orders/special");
    // An encoded slash is refused, not routed.
    let r = gw.get("/v1/orders%2Fspecial").host(host).send().await;
    assert_eq!((r.status, r.backend()), (400, None), "{r:?}");

    assert_eq!(
        gw.count("tollgate_http_requests_total{route=\"none\",method=\"GET\",code=\"404\"}"),
        6,
        "{}",
        gw.metrics()
    );
    assert_eq!(
        gw.count(
            "tollgate_http_requests_total{route=\"default/paths\",method=\"GET\",code=\"200\"}"
        ),
        18
    );
}

#[tokio::test]
async fn on_one_path_a_method_beats_headers_which_beat_fewer_headers_then_query_params() {
    let b = backends(&[
        "plain",
        "query",
        "one-header",
        "two-headers",
        "method",
        "deeper",
    ])
    .await;
    let rules = format!(
        "  rules:
    - matches: [{{ path: {{ value: /m }} }}]
      backendRefs: [{plain}]
    - matches: [{{ path: {{ value: /m }}, queryParams: [{{ name: q, value: '1' }}] }}]
      backendRefs: [{query}]
    - matches: [{{ path: {{ value: /m }}, headers: [{{ name: x-a, value: '1' }}] }}]
      backendRefs: [{one}]
    - matches: [{{ path: {{ value: /m }}, headers: [{{ name: x-a, value: '1' }}, {{ name: x-b, value: '1' }}] }}]
      backendRefs: [{two}]
    - matches: [{{ path: {{ value: /m }}, method: POST }}]
      backendRefs: [{method}]
    - matches: [{{ path: {{ value: /m/deeper }} }}]
      backendRefs: [{deeper}]
",
        plain = to("plain"),
        query = to("query"),
        one = to("one-header"),
        two = to("two-headers"),
        method = to("method"),
        deeper = to("deeper"),
    );
    let objects = backend_objects(&b);
    let gw = Gateway::start(|port| {
        let g = gateway(&[("http", port, None)]);
        let r = route("conditions", &rules);
        let mut docs: Vec<&str> = vec![&g, &r];
        docs.extend(objects.iter().map(String::as_str));
        documents(&docs)
    })
    .await;
    let both = [("x-a", "1"), ("x-b", "1")];
    for (method, path, headers, want) in [
        ("POST", "/m?q=1", &both[..], "method"),
        ("POST", "/m", &[][..], "method"),
        ("GET", "/m?q=1", &both[..], "two-headers"),
        ("GET", "/m?q=1", &both[..1], "one-header"),
        ("GET", "/m?q=1", &[][..], "query"),
        ("GET", "/m?q=2", &[][..], "plain"),
        ("GET", "/m", &[("x-a", "2")][..], "plain"),
        ("GET", "/m", &both[1..], "plain"),
        // A longer path comes before any of these conditions.
        ("POST", "/m/deeper?q=1", &both[..], "deeper"),
    ] {
        expect(&gw, method, "app.test", path, headers, Some(want)).await;
    }
}

#[tokio::test]
async fn an_exact_hostname_beats_the_longest_wildcard_then_routes_without_hostnames() {
    let b = backends(&["exact-host", "wild", "deeper-wild", "any", "iso"]).await;
    let mut objects = backend_objects(&b);
    let rule = |m: &str, to_: &str| {
        format!(
            "    - matches: [{{ path: {{ {m} }} }}]\n      backendRefs: [{}]\n",
            to(to_)
        )
    };
    let on_http = |r: String| {
        r.replace(
            "namespace: default }]",
            "namespace: default, sectionName: http }]",
        )
    };
    objects.push(on_http(route(
        "exact",
        &format!(
            "  hostnames: [a.example.com]\n  rules:\n{}",
            rule("value: /e", "exact-host")
        ),
    )));
    objects.push(on_http(route(
        "wild",
        &format!(
            "  hostnames: ['*.example.com']\n  rules:\n{}{}",
            rule("value: /", "wild"),
            rule("type: Exact, value: /e/exact", "wild")
        ),
    )));
    objects.push(on_http(route(
        "deeper",
        &format!(
            "  hostnames: ['*.api.example.com']\n  rules:\n{}",
            rule("value: /", "deeper-wild")
        ),
    )));
    objects.push(on_http(route(
        "any",
        &format!("  rules:\n{}", rule("value: /", "any")),
    )));
    // A listener of its own for iso.test on the same port: only its routes serve that host.
    objects.push(
        route(
            "isolated",
            &format!("  rules:\n{}", rule("value: /only", "iso")),
        )
        .replace(
            "namespace: default }]",
            "namespace: default, sectionName: iso }]",
        ),
    );
    let gw = Gateway::start(|port| {
        let g = gateway(&[("http", port, None), ("iso", port, Some("iso.test"))]);
        let mut docs: Vec<&str> = vec![&g];
        docs.extend(objects.iter().map(String::as_str));
        documents(&docs)
    })
    .await;
    for (host, path, want) in [
        ("a.example.com", "/e", Some("exact-host")),
        // Hosts compare in lower case, without port or trailing dot.
        ("A.Example.COM.:8080", "/e/x", Some("exact-host")),
        // The exact host's routes come first even where a wildcard route has an exact path.
        ("a.example.com", "/e/exact", Some("exact-host")),
        // No rule of the exact host matches: the wildcard's routes are next.
        ("a.example.com", "/x", Some("wild")),
        ("b.example.com", "/e", Some("wild")),
        ("x.b.example.com", "/", Some("wild")),
        // The longest wildcard first.
        ("v.api.example.com", "/", Some("deeper-wild")),
        ("api.example.com", "/", Some("wild")),
        // A wildcard needs at least one label before its suffix.
        ("example.com", "/e", Some("any")),
        ("other.test", "/", Some("any")),
        // Listener isolation: iso.test is the iso listener's, whose route has /only.
        ("iso.test", "/only", Some("iso")),
        ("iso.test", "/", None),
    ] {
        expect(&gw, "GET", host, path, &[], want).await;
    }
}

#[tokio::test]
async fn ties_go_to_the_oldest_route_then_namespace_and_name_then_rule_order() {
    let names = [
        "ts-older",
        "ts-newer",
        "ts-none",
        "ns-a-zeta",
        "ns-b-alpha",
        "alpha",
        "beta",
        "rule-0",
        "rule-1",
    ];
    let b = backends(&names).await;
    let mut objects: Vec<String> = b
        .iter()
        .filter(|b| !b.name.starts_with("ns-"))
        .map(|b| backend(&b.name, &[b.port()], ""))
        .collect();
    objects.push(backend_in("a-ns", "ns-a-zeta", &[b[3].port()], ""));
    objects.push(backend_in("b-ns", "ns-b-alpha", &[b[4].port()], ""));
    let one = |path: &str, to_: &str| {
        format!(
            "  rules:\n    - matches: [{{ path: {{ value: {path} }} }}]\n      backendRefs: [{}]\n",
            to(to_)
        )
    };
    // Creation time first: the older route wins though its name sorts last; a route with a
    // timestamp comes before one without.
    objects.push(route_meta(
        "name: a-newer, creationTimestamp: '2024-05-01T00:00:00Z'",
        &one("/t", "ts-newer"),
    ));
    objects.push(route_meta(
        "name: z-older, creationTimestamp: '2024-01-01T00:00:00Z'",
        &one("/t", "ts-older"),
    ));
    objects.push(route_meta("name: a-none", &one("/t", "ts-none")));
    // Then namespace, then name.
    objects.push(route_meta(
        "name: alpha, namespace: b-ns",
        &one("/n", "ns-b-alpha"),
    ));
    objects.push(route_meta(
        "name: zeta, namespace: a-ns",
        &one("/n", "ns-a-zeta"),
    ));
    objects.push(route("beta", &one("/n2", "beta")));
    objects.push(route("alpha", &one("/n2", "alpha")));
    // Then the order of rules in one route.
    objects.push(route(
        "rules",
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /r }} }}]\n      backendRefs: [{}]\n    - matches: [{{ path: {{ value: /r }} }}]\n      backendRefs: [{}]\n",
            to("rule-0"),
            to("rule-1")
        ),
    ));
    let gw = Gateway::start(|port| {
        let g = gateway(&[("http", port, None)]);
        let mut docs: Vec<&str> = vec![&g];
        docs.extend(objects.iter().map(String::as_str));
        documents(&docs)
    })
    .await;
    for (path, want) in [
        ("/t", "ts-older"),
        ("/n", "ns-a-zeta"),
        ("/n2", "alpha"),
        ("/r", "rule-0"),
    ] {
        expect(&gw, "GET", "app.test", path, &[], Some(want)).await;
    }
    // The metrics name the route that won.
    assert_eq!(
        gw.count("tollgate_http_requests_total{route=\"a-ns/zeta\",method=\"GET\",code=\"200\"}"),
        2,
        "{}",
        gw.metrics()
    );
    for other in ["ts-newer", "ts-none", "ns-b-alpha", "beta", "rule-1"] {
        let backend = b.iter().find(|b| b.name == other).unwrap();
        assert_eq!(backend.count(), 0, "{other} got requests");
    }
}
