//! Gateway API failure isolation, served in process: a rule whose backendRef does not
//! resolve answers 500 while the route's other rules serve; a rule without backendRefs
//! answers 500; an invalid rule is dropped (404 for what only it matched); a route broken in
//! one object is left out while another route serves; a route whose AuthPolicy was left out
//! answers 500 rather than serve unauthenticated. Over HTTP/1.1 and h2c.
mod harness;

use harness::yaml::{backend, documents, gateway, policy, route, to};
use harness::{Backend, Gateway};

/// GETs `path` over HTTP/1.1 and h2c; returns the status and the backend that answered.
async fn get(gw: &Gateway, path: &str) -> Vec<(u16, Option<String>)> {
    let mut out = Vec::new();
    for h2 in [false, true] {
        let mut req = gw.get(path);
        if h2 {
            req = req.h2();
        }
        let r = req.send().await;
        out.push((r.status, r.backend().map(str::to_owned)));
    }
    out
}

fn both(status: u16, backend: Option<&str>) -> Vec<(u16, Option<String>)> {
    vec![(status, backend.map(str::to_owned)); 2]
}

#[tokio::test]
async fn a_route_with_a_broken_rule_serves_its_other_rules_and_500_for_the_unresolved_one() {
    let app = Backend::start("app").await;
    let app_port = app.port();
    let yaml = move |port: u16| {
        documents(&[
            &gateway(&[("http", port, None)]),
            &backend("app", &[app_port], ""),
            &route(
                "shop",
                &format!(
                    "  rules:
    - matches: [{{ path: {{ value: /ok }} }}]
      backendRefs: [{}]
    - matches: [{{ path: {{ value: /missing }} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: not-there }}]
    - matches: [{{ path: {{ value: /unknown-kind }} }}]
      backendRefs: [{{ group: example.com, kind: Bucket, name: b }}]
    - matches: [{{ path: {{ value: /none }} }}]
    - matches: [{{ path: {{ type: RegularExpression, value: '/bad(' }} }}]
      backendRefs: [{}]
",
                    to("app"),
                    to("app")
                ),
            ),
        ])
    };
    let gw = Gateway::start(yaml).await;
    // What the proxy serves is this revision, applied in part.
    let snapshot = harness::compile(&yaml(gw.port())).unwrap();
    let route = &snapshot.acceptance.routes[0];
    let conditions: Vec<(&str, &str, &str)> = route.parents[0]
        .conditions
        .iter()
        .map(|c| (c.type_, c.status, c.reason))
        .collect();
    assert_eq!(
        conditions,
        [
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
            ("PartiallyInvalid", "True", "UnsupportedValue"),
        ]
    );

    assert_eq!(get(&gw, "/ok").await, both(200, Some("app")));
    assert_eq!(get(&gw, "/missing").await, both(500, None));
    assert_eq!(get(&gw, "/unknown-kind").await, both(500, None));
    assert_eq!(get(&gw, "/none").await, both(500, None));
    // The dropped rule is not served: nothing else matches its path.
    assert_eq!(get(&gw, "/bad").await, both(404, None));
    let r = gw.get("/missing").send().await;
    assert!(r.text().contains("not in the revision"), "{r:?}");
    assert_eq!(
        gw.count(
            "tollgate_http_upstream_errors_total{route=\"default/shop\",reason=\"unresolved_backend\"}"
        ),
        5, // /missing three times, /unknown-kind twice
    );
    assert_eq!(
        gw.count(
            "tollgate_http_upstream_errors_total{route=\"default/shop\",reason=\"no_backend_refs\"}"
        ),
        2
    );
}

#[tokio::test]
async fn a_route_broken_in_one_object_is_left_out_while_another_route_serves() {
    let app = Backend::start("app").await;
    let app_port = app.port();
    let yaml = move |port: u16| {
        documents(&[
            &gateway(&[("http", port, None)]),
            &backend("app", &[app_port], ""),
            &route(
                "good",
                &format!(
                    "  rules:\n    - matches: [{{ path: {{ value: /good }} }}]\n      backendRefs: [{}]\n",
                    to("app")
                ),
            ),
            // The CRD forbids '[' in a PathPrefix: the whole route is left out.
            &route(
                "bad",
                &format!(
                    "  rules:\n    - matches: [{{ path: {{ value: '/my[/]path01' }} }}]\n      backendRefs: [{}]\n    - matches: [{{ path: {{ value: /bad }} }}]\n      backendRefs: [{}]\n",
                    to("app"),
                    to("app")
                ),
            ),
            // A route whose AuthPolicy is broken answers 500: never served without it.
            &route(
                "guarded",
                &format!(
                    "  rules:\n    - matches: [{{ path: {{ value: /guarded }} }}]\n      backendRefs: [{}]\n",
                    to("app")
                ),
            ),
            &policy(
                "AuthPolicy",
                "guard",
                "guarded",
                "  apiKey: { header: 'not a header', credentialRefs: [{ name: keys }] }\n",
            ),
        ])
    };
    let gw = Gateway::start(yaml).await;
    let snapshot = harness::compile(&yaml(gw.port())).unwrap();
    let left_out: Vec<&str> = snapshot
        .acceptance
        .left_out
        .iter()
        .map(|o| o.object.as_str())
        .collect();
    assert_eq!(left_out, ["AuthPolicy/guard", "HTTPRoute/bad"]);
    assert_eq!(get(&gw, "/good").await, both(200, Some("app")));
    assert_eq!(get(&gw, "/bad").await, both(404, None));
    assert_eq!(get(&gw, "/guarded").await, both(500, None));
    let r = gw.get("/guarded").send().await;
    assert!(r.text().contains("AuthPolicy default/guard"), "{r:?}");
}
