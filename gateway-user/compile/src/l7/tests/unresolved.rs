//! Secrets and ConfigMaps the Kubernetes source could not resolve (`Cluster::unresolved`):
//! only what references them is left out, never served without the certificate, client CA or
//! credential it names; the rest of the revision serves.
use std::sync::Arc;

use super::*;
use crate::snapshot::{compile_documents, Snapshot};
use tollgate_model::cluster::{Cluster, Unresolved};
use tollgate_model::references::Use;

fn missing(namespace: &str, name: &str, use_: Use) -> Unresolved {
    Unresolved {
        namespace: namespace.into(),
        name: name.into(),
        use_,
        why: format!("{} {namespace}/{name} does not exist", use_.kind()),
    }
}

fn compiled(yaml: &str, unresolved: Vec<Unresolved>) -> Snapshot {
    let mut d = docs(&[("kubernetes:/default/objects", yaml)]);
    d.cluster = Some(Arc::new(Cluster {
        unresolved,
        ..Cluster::default()
    }));
    compile_documents(&d, None).unwrap_or_else(|e| panic!("refused: {e}"))
}

fn listeners(s: &Snapshot) -> Vec<String> {
    s.l7.policy
        .listeners
        .iter()
        .map(|l| format!("{}/{}", l.gateway, l.name))
        .collect()
}

/// Gateway `default/edge`: HTTP on 8080, HTTPS `a` (8443, Secret `cert-a`) and `b` (8444,
/// Secret `cert-b`), client CAs from ConfigMap `ca-default` and, on 8444, `ca-b`.
const TLS_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: 8080, protocol: HTTP }
    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: cert-a }] } }
    - { name: b, port: 8444, protocol: HTTPS, tls: { certificateRefs: [{ name: cert-b }] } }
  tls:
    frontend:
      default: { validation: { caCertificateRefs: [{ group: '', kind: ConfigMap, name: ca-default }] } }
      perPort:
        - port: 8444
          tls: { validation: { caCertificateRefs: [{ group: '', kind: ConfigMap, name: ca-b }] } }
";

#[test]
fn a_missing_certificate_leaves_out_its_listener_and_the_gateways_others_serve() {
    let all_there = compiled(TLS_GATEWAY, Vec::new());
    assert_eq!(
        listeners(&all_there),
        ["default/edge/http", "default/edge/a", "default/edge/b"]
    );
    let s = compiled(
        TLS_GATEWAY,
        vec![missing("default", "cert-a", Use::Certificate)],
    );
    assert_eq!(listeners(&s), ["default/edge/http", "default/edge/b"]);
    assert!(s.acceptance.left_out.is_empty());
    let p = &s.acceptance.partial;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].location.field,
        "spec.listeners[1].tls.certificateRefs[0]"
    );
    assert!(
        p[0].message
            .contains("Secret default/cert-a does not exist"),
        "{p:?}"
    );
    // The same Secret name for another use (an API key file) is not this reference.
    let s = compiled(
        TLS_GATEWAY,
        vec![missing("default", "cert-a", Use::ApiKeys)],
    );
    assert_eq!(listeners(&s).len(), 3);
}

#[test]
fn a_missing_client_ca_leaves_out_the_https_listeners_it_covers_only() {
    // The default CAs cover listener `a` (8443); port 8444 has its own.
    let s = compiled(
        TLS_GATEWAY,
        vec![missing("default", "ca-default", Use::CaCertificates)],
    );
    assert_eq!(listeners(&s), ["default/edge/http", "default/edge/b"]);
    let p = &s.acceptance.partial;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].location.field, "spec.listeners[1]");
    assert!(
        p[0].message
            .contains("spec.tls.frontend.default.validation.caCertificateRefs[0]"),
        "{p:?}"
    );
    assert!(p[0]
        .message
        .contains("ConfigMap default/ca-default does not exist"));
    let s = compiled(
        TLS_GATEWAY,
        vec![missing("default", "ca-b", Use::CaCertificates)],
    );
    assert_eq!(listeners(&s), ["default/edge/http", "default/edge/a"]);
    assert!(s.acceptance.partial[0]
        .message
        .contains("spec.tls.frontend.perPort[0].tls.validation.caCertificateRefs[0]"));
}

#[test]
fn an_auth_policy_without_its_credentials_is_left_out_and_its_routes_answer_500() {
    let protected = route("a", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let open = route("b", &format!("  rules:\n    - {}", TO_A.trim_start())).replace(
        "[{ name: edge }]",
        "[{ name: edge }]\n  hostnames: [b.example.com]",
    );
    let policy = auth_policy(
        "p",
        &format!(
            "{TARGET_A}  apiKey: {{ header: x-api-key, credentialRefs: [{{ name: keys }}] }}\n"
        ),
    );
    let yaml = all(&[GATEWAY, BACKENDS, &protected, &open, &policy]);
    let served = compiled(&yaml, Vec::new());
    assert!(served.acceptance.left_out.is_empty());
    assert_eq!(served.l7.policy.auth.len(), 1);

    let s = compiled(&yaml, vec![missing("default", "keys", Use::ApiKeys)]);
    assert!(s.l7.policy.auth.is_empty());
    let out = &s.acceptance.left_out;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].object, "AuthPolicy/p");
    assert_eq!(out[0].targets, ["a"]);
    assert_eq!(
        out[0].problems[0].location.field,
        "spec.apiKey.credentialRefs[0]"
    );
    let route = |label: &str| {
        s.l7.policy
            .routes
            .iter()
            .find(|r| &*r.label == label)
            .unwrap()
    };
    let failure = route("default/a").rules[0]
        .rule
        .failure
        .as_ref()
        .expect("closed");
    assert_eq!(failure.reason, "policy_left_out");
    assert!(route("default/b").rules[0].rule.failure.is_none());
}

#[test]
fn a_backend_without_its_ca_is_left_out_and_rules_naming_it_answer_500() {
    let backend = "apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: a }
spec:
  endpoints:
    - ip: { address: 127.0.0.1, port: 9001 }
  tls: { hostname: a.internal, caCertificateRefs: [{ name: backend-ca }] }
";
    let r = route("r", TO_A_RULES);
    let yaml = all(&[GATEWAY, backend, &r]);
    assert!(compiled(&yaml, Vec::new()).acceptance.left_out.is_empty());
    let s = compiled(
        &yaml,
        vec![missing("default", "backend-ca", Use::CaCertificates)],
    );
    let out: Vec<&str> = s
        .acceptance
        .left_out
        .iter()
        .map(|o| o.object.as_str())
        .collect();
    assert_eq!(out, ["Backend/a"]);
    assert_eq!(s.l7.policy.routes[0].rules[0].rule.unresolved_weight, 1);
}

/// A directory or Git revision carries its unreadable files in `Documents::unresolved`, with
/// no cluster (Services still do not resolve): the same listener is left out, the same way.
#[test]
fn a_directorys_unreadable_certificate_file_leaves_out_its_listener_alone() {
    let mut d = docs(&[("gateway.yaml", TLS_GATEWAY)]);
    d.unresolved = vec![missing("default", "cert-b", Use::Certificate)];
    let s = compile_documents(&d, None).unwrap_or_else(|e| panic!("refused: {e}"));
    assert_eq!(listeners(&s), ["default/edge/http", "default/edge/a"]);
    let problems = tollgate_model::PolicyErrors(s.acceptance.problems()).to_string();
    assert!(
        problems.contains("spec.listeners[2].tls.certificateRefs[0]")
            && problems.contains("Secret default/cert-b does not exist"),
        "{problems}"
    );
    assert!(d.cluster.is_none());
}

#[test]
fn routes_attach_to_a_listener_whose_certificate_is_missing_and_are_counted_not_served() {
    // Gateway API `GatewayWithAttachedRoutes`: attachedRoutes "MUST be set for Listeners with
    // condition Accepted: false", so a route still attaches to a listener left out for a
    // missing Secret; nothing is served through it, and its Gateway is not left out even
    // when that is its only listener.
    let yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: tls-only }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: tls, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: gone }] } }
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: app }
spec:
  endpoints: [{ ip: { address: 127.0.0.1, port: 9001 } }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r }
spec:
  parentRefs: [{ name: tls-only, sectionName: tls }]
  rules:
    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]
";
    let s = compiled(yaml, vec![missing("default", "gone", Use::Certificate)]);
    assert!(listeners(&s).is_empty());
    assert!(
        s.acceptance.left_out.is_empty(),
        "{:?}",
        s.acceptance.left_out
    );
    assert_eq!(
        s.acceptance
            .unserved_attached
            .get(&("default/tls-only".to_owned(), "tls".to_owned())),
        Some(&1)
    );
    let route = &s.acceptance.routes[0];
    let accepted = &route.parents[0].conditions[0];
    assert!(accepted.is_true(), "{route:?}");
    // Served nowhere: the route table has it with no listener.
    assert!(s.l7.policy.routes.iter().all(|r| r.attachments.is_empty()));
    // A listener with a problem of its own (a bad hostname) takes no routes.
    let bad = yaml.replace(
        "{ name: tls, port: 8443,",
        "{ name: tls, hostname: 'Bad_Host', port: 8443,",
    );
    let s = compiled(&bad, vec![missing("default", "gone", Use::Certificate)]);
    assert!(s.acceptance.unserved_attached.is_empty());
    assert_eq!(
        s.acceptance.left_out.len(),
        2,
        "{:?}",
        s.acceptance.left_out
    );
}
