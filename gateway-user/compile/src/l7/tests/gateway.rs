//! Gateways: listeners, HTTPS and client certificate references, allowedRoutes.
use super::*;

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
    // The Secret in another namespace is allowed there by a ReferenceGrant.
    let t = table(&all(&[&gateway, &grant("certs", "Secret")]));
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
    // Gateway API v1.6: spec.tls.frontend.default for every HTTPS listener, perPort for the
    // listeners of one port (an entry without validation turns it off there).
    let listeners =
        "    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
    - { name: b, port: 9443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
    - { name: c, port: 10443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
    - { name: plain, port: 8080, protocol: HTTP }
";
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        &format!("{listeners}  tls:
    frontend:
      default:
        validation: {{ caCertificateRefs: [{{ kind: ConfigMap, name: clients }}, {{ group: '', kind: ConfigMap, name: partners, namespace: pki }}] }}
      perPort:
        - {{ port: 9443, tls: {{ validation: {{ mode: AllowValidOnly, caCertificateRefs: [{{ kind: ConfigMap, name: nine }}] }} }} }}
        - {{ port: 10443, tls: {{}} }}
"),
    );
    let t = table(&all(&[&gateway, &grant("pki", "ConfigMap")]));
    let cas = |i: usize| -> Vec<String> {
        let tls = t.policy.listeners[i].tls.as_ref().expect("tls settings");
        tls.client_cas.iter().map(|s| s.to_string()).collect()
    };
    assert_eq!(cas(0), ["default/clients", "pki/partners"]);
    assert_eq!(cas(1), ["default/nine"]);
    assert!(cas(2).is_empty());
    assert!(t.policy.listeners[3].tls.is_none());

    let bad = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        &format!("{listeners}  tls:
    frontend:
      default:
        validation: {{ caCertificateRefs: [{{ kind: Secret, name: clients }}] }}
      perPort:
        - {{ port: 9443, tls: {{ validation: {{ mode: AllowInsecureFallback, caCertificateRefs: [] }} }} }}
        - {{ port: 9443, tls: {{}} }}
"),
    );
    let errs = errors(&bad);
    let got: Vec<String> = places(&errs, "only core ConfigMaps can hold CA certificates")
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    // A CA reference of the wrong kind is a problem of the HTTPS listeners it would verify
    // clients for (here a and c, which take the default), not of the Gateway.
    assert_eq!(
        got,
        [
            "spec.tls.frontend.perPort[0].tls.validation.mode",
            "spec.tls.frontend.perPort[0].tls.validation.caCertificateRefs",
            "spec.tls.frontend.perPort[1].port",
            "spec.listeners[0]",
            "spec.listeners[2]",
        ]
    );
    assert!(
        errs[0]
            .message
            .contains("AllowInsecureFallback is not supported"),
        "{}",
        errs[0]
    );
}

#[test]
fn a_client_ca_of_the_wrong_kind_or_not_granted_leaves_out_only_its_listeners() {
    // Gateway API `GatewayInvalidFrontendClientCertificateValidation`: per-port CAs that
    // cannot be used leave out the listeners of their port (ResolvedRefs=False with the
    // reason, Accepted=False NoValidCACertificate), the Gateway's other listeners serve.
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }
",
        "    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
    - { name: kind, port: 9443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
    - { name: grant, port: 10443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }] } }
  tls:
    frontend:
      default:
        validation: { caCertificateRefs: [{ kind: ConfigMap, name: clients }] }
      perPort:
        - { port: 9443, tls: { validation: { caCertificateRefs: [{ kind: Service, name: svc }] } } }
        - { port: 10443, tls: { validation: { caCertificateRefs: [{ kind: ConfigMap, name: cm, namespace: other }] } } }
",
    );
    let objects = tollgate_model::parse(&docs(&[("g.yaml", &gateway)])).unwrap();
    let (t, acceptance) = compile_isolated(&objects, &[]).unwrap();
    let served: Vec<&str> = t.policy.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(served, ["a"]);
    assert!(acceptance.left_out.is_empty(), "{:?}", acceptance.left_out);
    let reasons: Vec<(usize, &str, &str)> = acceptance
        .listener_refs
        .iter()
        .map(|r| (r.listener, r.field.as_str(), r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "spec.listeners[1]", "InvalidCACertificateKind"),
            (2, "spec.listeners[2]", "RefNotPermitted"),
        ]
    );
    let partial: Vec<&str> = acceptance
        .partial
        .iter()
        .map(|e| e.location.field.as_str())
        .collect();
    assert_eq!(partial, ["spec.listeners[1]", "spec.listeners[2]"]);
    assert!(
        acceptance.partial[1]
            .message
            .contains("spec.tls.frontend.perPort[1].tls.validation.caCertificateRefs[0].namespace"),
        "{:?}",
        acceptance.partial
    );
}

#[test]
fn the_old_listener_frontend_validation_is_refused_with_where_it_moved() {
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: c }], frontendValidation: { caCertificateRefs: [{ kind: ConfigMap, name: clients }] } } }
    - { name: plain, port: 8080, protocol: HTTP }
",
    );
    let errs = errors(&gateway);
    assert_eq!(
        places(&errs, "spec.tls.frontend.default.validation"),
        [(
            "Gateway/edge".to_string(),
            "spec.listeners[0].tls.frontendValidation".to_string()
        )]
    );
    // Isolated, the listener is left out (never served without the client certificates it
    // asked for); the Gateway's other listener serves.
    let objects = tollgate_model::parse(&docs(&[("g.yaml", &gateway)])).unwrap();
    let (t, acceptance) = compile_isolated(&objects, &[]).unwrap();
    assert_eq!(t.policy.listeners.len(), 1);
    assert_eq!(t.policy.listeners[0].name, "plain");
    assert!(acceptance.left_out.is_empty());
    assert!(
        acceptance.partial[0]
            .message
            .starts_with("listener left out"),
        "{:?}",
        acceptance.partial
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
        places(&errs, "do not accept routes from namespace shop"),
        [("HTTPRoute/shop/r".into(), "spec.parentRefs[0]".into())]
    );
    let open = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }",
    );
    let t = table(&all(&[&open, &backend_ns, &route_ns]));
    assert_eq!(lookup(&t, "h", "/", &[]).as_deref(), Some("shop/r#0"));
}

/// A ReferenceGrant in `namespace` letting Gateways of `default` refer to its objects of `kind`.
fn grant(namespace: &str, kind: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{ name: gateways, namespace: {namespace} }}
spec:
  from: [{{ group: gateway.networking.k8s.io, kind: Gateway, namespace: default }}]
  to: [{{ group: '', kind: {kind} }}]
"
    )
}

#[test]
fn a_listener_serves_the_route_kinds_it_can_and_notes_the_others() {
    let r = route("r", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let mixed = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ kind: HTTPRoute }, { kind: TCPRoute }] } }",
    );
    let s = crate::snapshot::compile_documents(
        &docs(&[("l7.yaml", &all(&[&mixed, BACKENDS, &r]))]),
        None,
    )
    .unwrap_or_else(|e| panic!("refused: {e}"));
    // The Gateway API: the valid kinds are kept, and HTTPRoutes attach.
    assert_eq!(s.l7.policy.listeners.len(), 1);
    assert_eq!(lookup(&s.l7, "h", "/", &[]).as_deref(), Some("default/r#0"));
    let p = &s.acceptance.partial;
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(
        p[0].location.field,
        "spec.listeners[0].allowedRoutes.kinds[1]"
    );
    assert!(
        p[0].message
            .starts_with("ignored, the listener takes HTTPRoute"),
        "{p:#?}"
    );
    let refs = &s.acceptance.listener_refs;
    assert_eq!(refs.len(), 1, "{refs:#?}");
    assert_eq!(
        (refs[0].listener, refs[0].field.as_str(), refs[0].reason),
        (
            0,
            "spec.listeners[0].allowedRoutes.kinds[1]",
            status::listener_reason::INVALID_ROUTE_KINDS
        )
    );
    // With no kind it can serve, the listener is refused.
    let unknown = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ kind: TCPRoute }, { group: example.com, kind: HTTPRoute }] } }",
    );
    let errs = errors(&all(&[&unknown, BACKENDS, &r]));
    let got: Vec<String> = places(&errs, "only HTTPRoute and GRPCRoute")
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        got[..2],
        [
            "spec.listeners[0].allowedRoutes.kinds[0]",
            "spec.listeners[0].allowedRoutes.kinds[1]"
        ]
    );
}

#[test]
fn infrastructure_labels_are_accepted_and_a_parameters_ref_leaves_the_gateway_out() {
    // Tollgate creates no resources for a Gateway: labels and annotations have nothing to go
    // on; it reads no parameters kind, so a parametersRef cannot resolve (InvalidParameters).
    let labelled = GATEWAY.replace(
        "  listeners:\n",
        "  infrastructure: { labels: { team: a }, annotations: { note: b } }\n  listeners:\n",
    );
    assert!(labelled.contains("infrastructure"));
    assert_eq!(table(&labelled).policy.listeners.len(), 1);
    let with_ref = GATEWAY.replace(
        "  listeners:\n",
        "  infrastructure: { parametersRef: { group: invalid.io, kind: InvalidParameters, name: invalid } }\n  listeners:\n",
    );
    let errs = errors(&with_ref);
    assert_eq!(
        places(&errs, "InvalidParameters"),
        [(
            "Gateway/edge".to_string(),
            "spec.infrastructure.parametersRef".to_string()
        )]
    );
}

/// A Gateway of one HTTP listener on 8080 (no hostname), in namespace `ns`, created at `ts`.
fn gateway_at(ns: &str, name: &str, ts: Option<&str>) -> String {
    let ts = ts
        .map(|t| format!(", creationTimestamp: \"{t}\""))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: {name}, namespace: {ns}{ts} }}
spec:
  gatewayClassName: tollgate
  listeners:
    - {{ name: http, port: 8080, protocol: HTTP }}
"
    )
}

#[test]
fn of_two_gateways_conflicting_on_a_port_the_older_is_served_whatever_the_file_order() {
    // The Gateway API's conflict rule: the oldest wins, then "{namespace}/{name}". A new
    // Gateway in a file read first must not take the port of one that is serving.
    let served = |files: &[(&str, &str)]| -> (String, Vec<String>) {
        let objects = tollgate_model::parse(&docs(files)).unwrap();
        let (t, acceptance) = compile_isolated(&objects, &[]).unwrap();
        assert_eq!(t.policy.listeners.len(), 1);
        let left: Vec<String> = acceptance
            .left_out
            .iter()
            .map(|o| o.object.clone())
            .collect();
        (t.policy.listeners[0].gateway.clone(), left)
    };
    let old = gateway_at("default", "edge", Some("2030-01-01T00:00:00Z"));
    let new = gateway_at("aaa-team", "intruder", Some("2031-01-01T00:00:00Z"));
    for files in [
        [
            ("0-intruder.yaml", new.as_str()),
            ("1-edge.yaml", old.as_str()),
        ],
        [
            ("0-edge.yaml", old.as_str()),
            ("1-intruder.yaml", new.as_str()),
        ],
    ] {
        let (gw, left) = served(&files);
        assert_eq!(gw, "default/edge");
        assert_eq!(left, ["Gateway/aaa-team/intruder"]);
    }
    // Without timestamps: by "{namespace}/{name}".
    let a = gateway_at("b", "gx", None);
    let b = gateway_at("a", "gy", None);
    let (gw, _) = served(&[("0.yaml", &a), ("1.yaml", &b)]);
    assert_eq!(gw, "a/gy");
}

#[test]
fn indistinct_listeners_of_one_gateway_are_all_left_out() {
    // "The implementation MUST NOT pick one conflicting Listener as the winner."
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: one, port: 8080, protocol: HTTP, hostname: dup.test }
    - { name: two, port: 8080, protocol: HTTP, hostname: dup.test }
    - { name: other, port: 8080, protocol: HTTP, hostname: other.test }
",
    );
    let objects = tollgate_model::parse(&docs(&[("g.yaml", &gateway)])).unwrap();
    let (t, acceptance) = compile_isolated(&objects, &[]).unwrap();
    let served: Vec<&str> = t.policy.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(served, ["other"]);
    let partial: Vec<(&str, bool)> = acceptance
        .partial
        .iter()
        .map(|e| {
            (
                e.location.field.as_str(),
                e.message.contains("already served"),
            )
        })
        .collect();
    assert_eq!(
        partial,
        [("spec.listeners[0]", true), ("spec.listeners[1]", true)]
    );
}
