//! Backends: endpoints, health checks and backend TLS.
use super::*;
use crate::l7::table::{BackendCa, BackendTlsDef, SecretRef};

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

fn proto_backend(name: &str, extra: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  endpoints:\n    - ip: {{ address: 127.0.0.1, port: 9443 }}\n{extra}")
}

#[test]
fn app_protocol_chooses_the_http_version_and_must_agree_with_tls() {
    use crate::l7::table::BackendProtocol;
    let tls = "  tls: { hostname: a.internal, wellKnownCACertificates: System }\n";
    let t = table(&all(&[
        GATEWAY,
        &proto_backend("a", "  appProtocol: kubernetes.io/h2c\n"),
        &proto_backend("b", &format!("{tls}  appProtocol: tollgate.dev/h2\n")),
        &proto_backend("c", "  appProtocol: kubernetes.io/ws\n"),
        &proto_backend("d", &format!("{tls}  appProtocol: kubernetes.io/wss\n")),
        &proto_backend("e", ""),
        &route("a", TO_A_RULES),
    ]));
    let protocols: Vec<BackendProtocol> = t.policy.backends.iter().map(|b| b.protocol).collect();
    assert_eq!(
        protocols,
        [
            BackendProtocol::Http2,
            BackendProtocol::Http2,
            BackendProtocol::Http1,
            BackendProtocol::Http1,
            BackendProtocol::Http1,
        ]
    );

    let e = errors(&all(&[
        GATEWAY,
        &proto_backend("a", &format!("{tls}  appProtocol: kubernetes.io/h2c\n")),
        &proto_backend("b", "  appProtocol: tollgate.dev/h2\n"),
        &proto_backend("c", &format!("{tls}  appProtocol: kubernetes.io/ws\n")),
        &proto_backend("d", "  appProtocol: kubernetes.io/wss\n"),
        &proto_backend("e", "  appProtocol: http2\n"),
        &route("a", TO_A_RULES),
    ]));
    let at = |name: &str| {
        e.iter()
            .find(|e| e.location.object == format!("Backend/{name}"))
            .unwrap_or_else(|| panic!("no error for Backend {name}: {e:#?}"))
    };
    assert!(at("a").message.contains("use tollgate.dev/h2"), "{e:#?}");
    assert!(at("b").message.contains("spec.tls is not set"), "{e:#?}");
    assert!(at("c").message.contains("use kubernetes.io/wss"), "{e:#?}");
    assert!(at("d").message.contains("spec.tls is not set"), "{e:#?}");
    assert!(
        at("e").message.contains("\"http2\" is not a protocol"),
        "{e:#?}"
    );
    for name in ["a", "b", "c", "d", "e"] {
        assert_eq!(at(name).location.field, "spec.appProtocol");
    }
}
