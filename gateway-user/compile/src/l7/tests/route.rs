//! HTTPRoute rules: backend references, filters, redirects.
use super::*;

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
            // Invalid in itself: the rule is dropped, and its references are reported with it.
            (
                "HTTPRoute/r".into(),
                "spec.rules[0].backendRefs[2].port".into()
            ),
            (
                "HTTPRoute/r".into(),
                "spec.rules[0].backendRefs[0].name".into()
            ),
            (
                "HTTPRoute/r".into(),
                "spec.rules[0].backendRefs[1].namespace".into()
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
            // The CRD's rule (ReplacePrefixMatch needs one PathPrefix match) comes first.
            f("[1].urlRewrite.path.type"),
            f("[0].requestHeaderModifier.set[1].name"),
            f("[0].requestHeaderModifier.remove[0]"),
            f("[2].type"),
            // A mirror to a Service must name its port, as a backendRef to one must.
            f("[3].requestMirror.backendRef.port"),
            f("[4].requestHeaderModifier"),
            f("[4].responseHeaderModifier"),
        ]
    );
    assert!(
        errs[2].message.contains("managed by the proxy"),
        "{}",
        errs[2]
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
    // Without backendRefs (and without a redirect) the rule answers 500, as the Gateway API
    // says; the strict compile reports it.
    places(&errs, "no backendRefs (and no RequestRedirect)");
}

#[test]
fn an_empty_replace_prefix_match_removes_the_prefix_in_rewrites_and_redirects() {
    let rewrite = "      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: '' } } }]\n";
    let redirect = "      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: '' } } }]\n";
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!(
                "  rules:\n    - matches: [{{ path: {{ value: /foo }} }}]\n{rewrite}{TO_A}    - matches: [{{ path: {{ value: /old }} }}]\n{redirect}"
            ),
        ),
    ]));
    // The Gateway API's table: /foo/bar -> /bar, /foo/ -> /, /foo -> /.
    for (prefix, cases) in [
        (
            "/foo",
            [("/foo/bar", "/bar"), ("/foo/", "/"), ("/foo", "/")],
        ),
        (
            "/old",
            [("/old/bar", "/bar"), ("/old/", "/"), ("/old", "/")],
        ),
    ] {
        for (path, want) in cases {
            let map = HeaderMap::new();
            let req = RequestView {
                host: "h",
                path,
                method: &http::Method::GET,
                headers: &map,
                query: None,
            };
            let c = t.ports[&8080].route(&req).expect("routed");
            assert_eq!(c.prefix(), Some(prefix));
            let modifier = match (&c.rule.rewrite, &c.rule.redirect) {
                (Some(r), None) => r.path.as_ref(),
                (None, Some(r)) => r.path.as_ref(),
                other => panic!("{other:?}"),
            };
            assert_eq!(
                modifier.expect("a path modifier").apply(path, c.prefix()),
                want,
                "{path}"
            );
        }
    }
    // A full path must still be one.
    let errs = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "r",
            &format!("  rules:\n    - filters: [{{ type: URLRewrite, urlRewrite: {{ path: {{ type: ReplaceFullPath, replaceFullPath: '' }} }} }}]\n{TO_A}"),
        ),
    ]));
    places(&errs, "not a valid path");
}

#[test]
fn a_route_without_rules_has_the_crds_default_rule_every_path_answered_500() {
    // As the API server stores it (the CRD's default): one rule, every path, no backends.
    let s = crate::snapshot::compile_documents(
        &docs(&[("l7.yaml", &all(&[GATEWAY, BACKENDS, &route("r", "")]))]),
        None,
    )
    .unwrap_or_else(|e| panic!("refused: {e}"));
    assert_eq!(
        lookup(&s.l7, "h", "/any/path", &[]).as_deref(),
        Some("default/r#0")
    );
    let rule = &s.l7.policy.routes[0].rules[0].rule;
    assert!(rule.backends.is_empty());
    // Answered 500 by the proxy (`RuleFailure`).
    assert_eq!(
        rule.failure.as_ref().map(|f| f.reason),
        Some("no_backend_refs"),
        "{:?}",
        rule.failure
    );
    // An empty list is not omitted: no rule, and said so.
    let errs = errors(&all(&[GATEWAY, BACKENDS, &route("r", "  rules: []\n")]));
    assert_eq!(
        places(&errs, "a route needs at least one rule"),
        [("HTTPRoute/r".to_owned(), "spec.rules".to_owned())]
    );
}
