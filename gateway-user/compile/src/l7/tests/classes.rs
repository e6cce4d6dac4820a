//! GatewayClass selection (only Gateways of Tollgate's classes are served; other
//! controllers' Gateways and the route parents naming them are ignored, not reported) and
//! ReferenceGrant (cross-namespace references resolve only when the target's namespace
//! allows them).
use super::*;
use crate::l7::status::{reason, RESOLVED_REFS};
use crate::snapshot::{compile_documents, Snapshot};

fn snapshot(yaml: &str) -> Snapshot {
    compile_documents(&docs(&[("l7.yaml", yaml)]), None).unwrap_or_else(|e| panic!("refused: {e}"))
}

const CLASSES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: tollgate }
spec: { controllerName: tollgate.dev/gateway-controller }
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: other }
spec: { controllerName: example.com/another-gateway }
";

fn gateway(name: &str, class: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: {name} }}
spec:
  gatewayClassName: {class}
  listeners:
    - {{ name: http, port: 8080, protocol: HTTP }}
"
    )
}

fn route_to(name: &str, parents: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: {name} }}
spec:
  parentRefs: {parents}
  rules:
    - matches: [{{ path: {{ value: {path} }} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a }}]
"
    )
}

fn left_out(s: &Snapshot) -> Vec<&str> {
    s.acceptance
        .left_out
        .iter()
        .map(|o| o.object.as_str())
        .collect()
}

#[test]
fn only_gateways_of_tollgates_classes_are_served_and_the_others_are_not_reported() {
    // Both Gateways listen on 8080 without a hostname: were the other controller's served,
    // the two would clash.
    let yaml = all(&[
        CLASSES,
        BACKENDS,
        &gateway("mine", "tollgate"),
        &gateway("theirs", "other"),
        &gateway("nobodys", "no-such-class"),
        &route_to("r-mine", "[{ name: mine }]", "/mine"),
        &route_to("r-theirs", "[{ name: theirs }]", "/theirs"),
        &route_to("r-both", "[{ name: theirs }, { name: mine }]", "/both"),
    ]);
    let s = snapshot(&yaml);
    assert!(s.acceptance.complete(), "{:#?}", s.acceptance.problems());
    assert!(left_out(&s).is_empty(), "{:?}", left_out(&s));
    assert_eq!(
        lookup(&s.l7, "example.com", "/mine", &[]).as_deref(),
        Some("default/r-mine#0")
    );
    assert_eq!(
        lookup(&s.l7, "example.com", "/both", &[]).as_deref(),
        Some("default/r-both#0")
    );
    // Another controller's route is not served by this agent, and not reported either.
    assert_eq!(lookup(&s.l7, "example.com", "/theirs", &[]), None);
    let mut reported: Vec<&str> = s
        .acceptance
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    reported.sort();
    assert_eq!(reported, ["r-both", "r-mine"]);
    // The route with two parents reports only Tollgate's.
    let both = s
        .acceptance
        .routes
        .iter()
        .find(|r| r.name == "r-both")
        .unwrap();
    assert_eq!(both.parents.len(), 1);
    assert_eq!(both.parents[0].parent_ref.name, "mine");
    assert_eq!(s.l7.policy.listeners.len(), 1);
}

#[test]
fn without_any_gateway_class_every_gateway_is_served() {
    let yaml = all(&[
        BACKENDS,
        &gateway("mine", "whatever"),
        &route_to("r", "[{ name: mine }]", "/"),
    ]);
    let s = snapshot(&yaml);
    assert!(s.acceptance.complete(), "{:#?}", s.acceptance.problems());
    assert_eq!(
        lookup(&s.l7, "example.com", "/", &[]).as_deref(),
        Some("default/r#0")
    );
}

#[test]
fn a_broken_gateway_is_reported_only_when_its_class_is_tollgates() {
    let broken = |name: &str, class: &str| {
        // A field this agent does not know, as a newer Gateway API release could add.
        format!("{}  futureField: true\n", gateway(name, class))
    };
    let yaml = all(&[
        CLASSES,
        BACKENDS,
        &broken("theirs", "other"),
        &broken("mine", "tollgate"),
    ]);
    let s = snapshot(&yaml);
    assert_eq!(left_out(&s), ["Gateway/mine"]);
}

#[test]
fn a_tollgate_class_with_parameters_is_left_out_with_its_gateways() {
    let yaml = all(&[
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: tollgate }
spec:
  controllerName: tollgate.dev/gateway-controller
  parametersRef: { group: example.com, kind: Config, name: x }
",
        BACKENDS,
        &gateway("mine", "tollgate"),
    ]);
    let s = snapshot(&yaml);
    assert_eq!(left_out(&s), ["GatewayClass/tollgate", "Gateway/mine"]);
    let problems = s.acceptance.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.location.field == "spec.parametersRef"),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("GatewayClass tollgate is left out")),
        "{problems:#?}"
    );
}

const SHOP_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: shop }
spec:
  parentRefs: [{ name: edge, namespace: default }]
  rules:
    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: api, namespace: backends }]
";

const SHOP_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - name: http
      port: 8080
      protocol: HTTP
      allowedRoutes: { namespaces: { from: All } }
";

const API_BACKEND: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: api, namespace: backends }
spec:
  endpoints:
    - ip: { address: 127.0.0.1, port: 9001 }
";

fn grant(from_kind: &str, from_ns: &str, to: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{ name: g, namespace: backends }}
spec:
  from: [{{ group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns} }}]
  to: [{to}]
"
    )
}

fn resolved(s: &Snapshot) -> (&'static str, &'static str) {
    let route = s.acceptance.routes.iter().find(|r| r.name == "r").unwrap();
    let c = route.parents[0]
        .conditions
        .iter()
        .find(|c| c.type_ == RESOLVED_REFS)
        .unwrap();
    (c.status, c.reason)
}

#[test]
fn a_backend_ref_to_another_namespace_resolves_only_with_a_matching_grant() {
    let base = [SHOP_GATEWAY, API_BACKEND, SHOP_ROUTE];
    // No grant.
    let s = snapshot(&all(&base));
    assert_eq!(resolved(&s), ("False", reason::REF_NOT_PERMITTED));
    assert!(s.acceptance.problems().iter().any(|p| p
        .message
        .contains("no ReferenceGrant in namespace backends")));
    // Grants that do not match: another kind or namespace of referrer, another name, another kind of target.
    for wrong in [
        grant(
            "HTTPRoute",
            "other",
            "{ group: tollgate.dev, kind: Backend }",
        ),
        grant("Gateway", "shop", "{ group: tollgate.dev, kind: Backend }"),
        grant(
            "HTTPRoute",
            "shop",
            "{ group: tollgate.dev, kind: Backend, name: not-api }",
        ),
        grant("HTTPRoute", "shop", "{ group: '', kind: Service }"),
        grant(
            "HTTPRoute",
            "shop",
            "{ group: tollgate.dev, kind: Backend }",
        )
        .replace("namespace: backends", "namespace: shop"),
    ] {
        let s = snapshot(&all(&[&base[..], &[wrong.as_str()]].concat()));
        assert_eq!(
            resolved(&s),
            ("False", reason::REF_NOT_PERMITTED),
            "{wrong}"
        );
    }
    // A grant for every Backend, and one for this Backend by name.
    for right in [
        grant(
            "HTTPRoute",
            "shop",
            "{ group: tollgate.dev, kind: Backend }",
        ),
        grant(
            "HTTPRoute",
            "shop",
            "{ group: tollgate.dev, kind: Backend, name: api }",
        ),
        grant(
            "HTTPRoute",
            "shop",
            "{ group: tollgate.dev, kind: Backend, name: api }",
        )
        .replace("v1beta1", "v1"),
    ] {
        let s = snapshot(&all(&[&base[..], &[right.as_str()]].concat()));
        assert_eq!(resolved(&s), ("True", reason::RESOLVED_REFS), "{right}");
        assert!(s.acceptance.complete(), "{:#?}", s.acceptance.problems());
        assert_eq!(
            lookup(&s.l7, "example.com", "/", &[]).as_deref(),
            Some("shop/r#0")
        );
    }
}

#[test]
fn a_certificate_in_another_namespace_needs_a_grant_for_gateways() {
    let gw = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - name: https
      port: 8443
      protocol: HTTPS
      tls: { certificateRefs: [{ name: cert, namespace: backends }] }
    - { name: http, port: 8080, protocol: HTTP }
";
    let s = snapshot(gw);
    let problems = s.acceptance.problems();
    assert!(
        problems.iter().any(|p| p.location.field
            == "spec.listeners[0].tls.certificateRefs[0].namespace"
            && p.message.contains("RefNotPermitted")),
        "{problems:#?}"
    );
    assert_eq!(
        s.l7.policy.listeners.len(),
        1,
        "only the HTTP listener serves"
    );
    // The Gateway API's reason, for the listener's ResolvedRefs.
    let refs: Vec<_> = s
        .acceptance
        .listener_refs
        .iter()
        .map(|r| (r.listener, r.field.as_str(), r.reason))
        .collect();
    assert_eq!(
        refs,
        [(
            0,
            "spec.listeners[0].tls.certificateRefs[0].namespace",
            crate::l7::status::listener_reason::REF_NOT_PERMITTED
        )]
    );
    let with_grant = all(&[
        gw,
        &grant(
            "Gateway",
            "default",
            "{ group: '', kind: Secret, name: cert }",
        ),
    ]);
    let s = snapshot(&with_grant);
    assert!(s.acceptance.complete(), "{:#?}", s.acceptance.problems());
    assert_eq!(s.l7.policy.listeners.len(), 2);
}

#[test]
fn a_listener_selecting_namespaces_by_label_admits_only_their_routes() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - name: http
      port: 8080
      protocol: HTTP
      allowedRoutes:
        namespaces:
          from: Selector
          selector:
            matchLabels: { team: shop }
            matchExpressions: [{ key: stage, operator: NotIn, values: [test] }]
";
    let namespace = |name: &str, labels: &str| {
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {name}, labels: {{ {labels} }} }}\nspec: {{ finalizers: [kubernetes] }}\n")
    };
    let route_in = |ns: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: r, namespace: {ns} }}
spec:
  parentRefs: [{{ name: edge, namespace: default }}]
  hostnames: [{ns}.example.com]
  rules:
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a }}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: {{ name: a, namespace: {ns} }}
spec:
  endpoints:
    - ip: {{ address: 127.0.0.1, port: 9001 }}
"
        )
    };
    let yaml = all(&[
        gateway,
        &namespace("shop", "team: shop"),
        &namespace("shop-test", "team: shop, stage: test"),
        &namespace("blog", "team: blog"),
        &route_in("shop"),
        &route_in("shop-test"),
        &route_in("blog"),
        // A namespace without a Namespace object has no labels but its name.
        &route_in("unlabelled"),
    ]);
    let s = snapshot(&yaml);
    let attached = |ns: &str| lookup(&s.l7, &format!("{ns}.example.com"), "/", &[]).is_some();
    assert!(attached("shop"));
    assert!(!attached("shop-test"));
    assert!(!attached("blog"));
    assert!(!attached("unlabelled"));
    let refused = s
        .acceptance
        .routes
        .iter()
        .find(|r| r.namespace == "blog")
        .unwrap();
    assert_eq!(
        refused.parents[0].conditions[0].reason,
        reason::NOT_ALLOWED_BY_LISTENERS
    );

    // The label every namespace carries selects by name.
    let by_name = gateway.replace(
        "matchLabels: { team: shop }",
        "matchLabels: { kubernetes.io/metadata.name: unlabelled }",
    );
    let s = snapshot(&all(&[
        &by_name,
        &route_in("unlabelled"),
        &route_in("blog"),
    ]));
    assert!(lookup(&s.l7, "unlabelled.example.com", "/", &[]).is_some());
    assert!(lookup(&s.l7, "blog.example.com", "/", &[]).is_none());
}

#[test]
fn a_namespace_selector_is_ignored_unless_from_is_selector() {
    // The Gateway API: the selector "is ignored for other values of From".
    for (from, route_ns, attached) in [
        ("All", "shop", true),
        ("Same", "shop", false),
        ("Same", "default", true),
    ] {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge }}
spec:
  gatewayClassName: tollgate
  listeners:
    - name: http
      port: 8080
      protocol: HTTP
      allowedRoutes: {{ namespaces: {{ from: {from}, selector: {{ matchLabels: {{ team: nobody }} }} }} }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: r, namespace: {route_ns} }}
spec:
  parentRefs: [{{ name: edge, namespace: default }}]
  rules:
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a }}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: {{ name: a, namespace: {route_ns} }}
spec:
  endpoints:
    - ip: {{ address: 127.0.0.1, port: 9001 }}
"
        );
        let s = snapshot(&yaml);
        assert!(
            !s.acceptance
                .problems()
                .iter()
                .any(|p| p.location.object == "Gateway/edge"),
            "from: {from}: {:#?}",
            s.acceptance.problems()
        );
        assert_eq!(s.l7.policy.listeners.len(), 1, "from: {from}");
        assert_eq!(
            lookup(&s.l7, "h", "/", &[]).is_some(),
            attached,
            "from: {from}, a route of {route_ns}"
        );
    }
}

#[test]
fn invalid_selectors_leave_the_listener_out_with_the_field() {
    for (selector, field) in [
        (
            "{ matchExpressions: [{ key: a, operator: In, values: [] }] }",
            "matchExpressions[0].values",
        ),
        (
            "{ matchExpressions: [{ key: a, operator: Exists, values: [x] }] }",
            "matchExpressions[0].values",
        ),
        (
            "{ matchExpressions: [{ key: a, operator: Near }] }",
            "matchExpressions[0].operator",
        ),
        (
            "{ matchExpressions: [{ key: 'a b', operator: Exists }] }",
            "matchExpressions[0].key",
        ),
        ("{ matchLabels: { team: 'x y' } }", "matchLabels.team"),
    ] {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge }}
spec:
  gatewayClassName: tollgate
  listeners:
    - name: http
      port: 8080
      protocol: HTTP
      allowedRoutes: {{ namespaces: {{ from: Selector, selector: {selector} }} }}
"
        );
        let s = snapshot(&yaml);
        let problems = s.acceptance.problems();
        let want = format!("spec.listeners[0].allowedRoutes.namespaces.selector.{field}");
        assert!(
            problems.iter().any(|p| p.location.field == want),
            "{selector}: {problems:#?}"
        );
    }
    // from: Selector without a selector.
    let s = snapshot(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: 8080, protocol: HTTP, allowedRoutes: { namespaces: { from: Selector } } }
",
    );
    assert!(s
        .acceptance
        .problems()
        .iter()
        .any(|p| p.message.contains("needs a label selector")));
}

#[test]
fn cors_filters_are_checked_as_the_crd_and_its_rules_would() {
    let with = |cors: &str| {
        all(&[
            BACKENDS,
            &gateway("edge", "tollgate"),
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: r }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - filters: [{{ type: CORS, cors: {cors} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a }}]
"
            ),
        ])
    };
    let ok = snapshot(&with(
        "{ allowOrigins: ['https://*.example.com', 'http://localhost:3000'], allowMethods: [GET, POST], allowHeaders: ['*'], maxAge: 600 }",
    ));
    assert!(ok.acceptance.complete(), "{:#?}", ok.acceptance.problems());
    for (cors, field) in [
        (
            "{ allowOrigins: ['*', 'https://a.example.com'] }",
            "allowOrigins",
        ),
        ("{ allowOrigins: ['example.com'] }", "allowOrigins[0]"),
        ("{ allowOrigins: ['ftp://example.com'] }", "allowOrigins[0]"),
        (
            "{ allowOrigins: ['https://exa mple.com'] }",
            "allowOrigins[0]",
        ),
        (
            "{ allowOrigins: ['https://example.com/path'] }",
            "allowOrigins[0]",
        ),
        ("{ allowMethods: [GET, '*'] }", "allowMethods"),
        ("{ allowMethods: [FETCH] }", "allowMethods[0]"),
        ("{ allowMethods: [GET, GET] }", "allowMethods[1]"),
        ("{ allowHeaders: ['bad header'] }", "allowHeaders[0]"),
        ("{ maxAge: 0 }", "maxAge"),
    ] {
        let s = snapshot(&with(cors));
        let want = format!("spec.rules[0].filters[0].cors.{field}");
        let problems = s.acceptance.problems();
        assert!(
            problems.iter().any(|p| p.location.field == want),
            "{cors}: {problems:#?}"
        );
    }
}

#[test]
fn backend_ref_filters_are_header_modifiers_checked_like_the_rules() {
    let with = |filters: &str| {
        all(&[
            BACKENDS,
            &gateway("edge", "tollgate"),
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: r }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a, filters: {filters} }}]
"
            ),
        ])
    };
    let ok = snapshot(&with(
        "[{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-a, value: '1' }] } }, { type: ResponseHeaderModifier, responseHeaderModifier: { remove: [server] } }]",
    ));
    assert!(ok.acceptance.complete(), "{:#?}", ok.acceptance.problems());
    let picked = ok.l7.policy.routes[0].rules[0].rule.pick(0).unwrap();
    let f = picked.filters.as_ref().expect("the backendRef's filters");
    assert!(f.request_headers.is_some() && f.response_headers.is_some());
    for (filters, field) in [
        (
            "[{ type: URLRewrite, urlRewrite: { hostname: x.example.com } }]",
            "backendRefs[0].filters[0].type",
        ),
        (
            "[{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: host, value: x }] } }]",
            "backendRefs[0].filters[0].requestHeaderModifier.set[0].name",
        ),
        (
            "[{ type: RequestHeaderModifier, requestHeaderModifier: {} }, { type: RequestHeaderModifier, requestHeaderModifier: {} }]",
            "backendRefs[0].filters[1].type",
        ),
    ] {
        let s = snapshot(&with(filters));
        let want = format!("spec.rules[0].{field}");
        let problems = s.acceptance.problems();
        assert!(
            problems.iter().any(|p| p.location.field == want),
            "{filters}: {problems:#?}"
        );
    }
}
