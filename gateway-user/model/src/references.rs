//! The Secrets and ConfigMaps a policy object reads: certificates of HTTPS listeners, client
//! CAs, API key and htpasswd files, a JWKS endpoint's CA, a Backend's CAs and client
//! certificate. A directory or Git source leaves them to files under `--tls-secrets-dir`
//! (`NAMESPACE/NAME/FILE`); the Kubernetes source reads them from the API and writes exactly
//! the ones listed here there, so both modes are served by the same file-reading code.
//!
//! The namespace of a reference follows the compiler's rules: a Gateway's `certificateRefs`
//! and `caCertificateRefs` may name one (default: the Gateway's), every other reference is in
//! the referencing object's namespace. A reference the compiler refuses anyway (another group
//! or kind, a name that is not a DNS subdomain, a namespace that is not a DNS label) is not
//! listed: nothing is ever read or written for it, and its object fails its own checks.
use std::collections::HashSet;

use crate::gateway::{FrontendTls, Gateway};
use crate::gateway_class::{Grants, Referrer, CONTROLLER_NAME};
use crate::{names, Located, Object};

/// The kind of object referenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefKind {
    /// A core v1 Secret (its `data`).
    Secret,
    /// A core v1 ConfigMap (its `data`).
    ConfigMap,
}

impl RefKind {
    /// As written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Secret => "Secret",
            RefKind::ConfigMap => "ConfigMap",
        }
    }
}

impl std::fmt::Display for RefKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a referenced object is read for, which decides the data keys (and files) it must hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Use {
    /// A certificate chain and its key (`tls.crt`, `tls.key`): a Gateway listener's
    /// certificate, or a Backend's client certificate. A Secret.
    Certificate,
    /// CA certificates (`ca.crt`): a Gateway's client CAs, a Backend's CAs, a JWKS
    /// endpoint's CA. A ConfigMap.
    CaCertificates,
    /// API keys (`keys`) of an AuthPolicy. A Secret.
    ApiKeys,
    /// An htpasswd file (`htpasswd`) of an AuthPolicy. A Secret.
    Htpasswd,
}

impl Use {
    /// The data keys (and file names) this use reads, every one required.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            // The key before the certificate: the order they are written in (a reader that
            // sees the new key with the old certificate fails and retries; see the writer).
            Use::Certificate => &["tls.key", "tls.crt"],
            Use::CaCertificates => &["ca.crt"],
            Use::ApiKeys => &["keys"],
            Use::Htpasswd => &["htpasswd"],
        }
    }

    /// Why the value of data key `key` cannot serve this use, if it cannot: a certificate or
    /// CA file without a PEM certificate, a key file without a PEM private key. (The Gateway
    /// API wants such a Secret reported as an invalid reference, `InvalidCertificateRef`,
    /// and only its listener left out, not the revision refused.) Other keys are not looked
    /// into here.
    pub fn malformed(self, key: &str, value: &[u8]) -> Option<String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        match (self, key) {
            (Use::Certificate, "tls.crt") | (Use::CaCertificates, "ca.crt") => {
                let mut certificates = CertificateDer::pem_slice_iter(value);
                match certificates.next() {
                    Some(Ok(_)) if certificates.all(|c| c.is_ok()) => None,
                    Some(Ok(_)) | Some(Err(_)) => Some(format!("\"{key}\" is not valid PEM")),
                    None => Some(format!("\"{key}\" holds no PEM certificate")),
                }
            }
            (Use::Certificate, "tls.key") => match PrivateKeyDer::from_pem_slice(value) {
                Ok(_) => None,
                Err(_) => Some(format!("\"{key}\" holds no PEM private key")),
            },
            _ => None,
        }
    }

    /// The kind of object that holds it.
    pub fn kind(self) -> RefKind {
        match self {
            Use::CaCertificates => RefKind::ConfigMap,
            Use::Certificate | Use::ApiKeys | Use::Htpasswd => RefKind::Secret,
        }
    }
}

/// One reference from a policy object to a Secret or ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// Namespace of the referenced object.
    pub namespace: String,
    /// Name of the referenced object.
    pub name: String,
    /// What it is read for (its kind is `use_.kind()`).
    pub use_: Use,
    /// The referencing field, as compile errors name it (`spec.listeners[0].tls.certificateRefs[0]`).
    pub field: String,
}

impl Reference {
    /// The kind of the referenced object.
    pub fn kind(&self) -> RefKind {
        self.use_.kind()
    }
}

/// Every kind whose objects may reference Secrets or ConfigMaps, or decide whether a
/// reference counts ([`in_revision`]): a source need not parse the others to know what to read.
pub const REFERENCING_KINDS: [&str; 5] = [
    "Gateway",
    "AuthPolicy",
    "Backend",
    "GatewayClass",
    "ReferenceGrant",
];

/// The references of the objects of a revision that the compiler may resolve, each with the
/// index of its object: as [`references`], but of the Gateways only those of a GatewayClass
/// this agent serves (every Gateway when the revision holds no GatewayClass; a class of
/// Tollgate's with `parametersRef` serves none), and of a Gateway's references to another
/// namespace only those a ReferenceGrant there permits. The others are the compiler's to
/// report (or, for another implementation's Gateways, to ignore); nothing is read for them.
pub fn in_revision(objects: &[&Located<Object>]) -> Vec<(usize, Reference)> {
    let mut any_class = false;
    let mut served: HashSet<&str> = HashSet::new();
    for o in objects {
        if let Object::GatewayClass(c) = &o.value {
            any_class = true;
            if c.spec.controller_name == CONTROLLER_NAME && c.spec.parameters_ref.is_none() {
                served.insert(o.value.name());
            }
        }
    }
    let grants = Grants::of(objects.iter().copied());
    let mut out = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let from_ns = o.value.namespace().unwrap_or_default();
        if let Object::Gateway(g) = &o.value {
            if any_class && !served.contains(g.spec.gateway_class_name.as_str()) {
                continue;
            }
        }
        for r in references(&o.value) {
            let permitted = match &o.value {
                Object::Gateway(_) => grants.permits(
                    &Referrer {
                        group: crate::gateway::GATEWAY_API_GROUP,
                        kind: "Gateway",
                        namespace: from_ns,
                    },
                    "",
                    r.kind().as_str(),
                    &r.namespace,
                    &r.name,
                ),
                // Every other reference is within the object's namespace.
                _ => true,
            };
            if permitted {
                out.push((i, r));
            }
        }
    }
    out
}

/// The Secrets and ConfigMaps `object` reads, in field order (see the module documentation).
pub fn references(object: &Object) -> Vec<Reference> {
    let ns = object.namespace().unwrap_or(crate::DEFAULT_NAMESPACE);
    let mut out = Vec::new();
    let mut push = |namespace: &str, name: &str, use_: Use, field: String| {
        if names::dns_subdomain(name).is_ok() && names::dns_label(namespace).is_ok() {
            out.push(Reference {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                use_,
                field,
            });
        }
    };
    match object {
        Object::Gateway(g) => gateway(g, ns, &mut push),
        Object::AuthPolicy(p) => {
            let s = &p.spec;
            for (i, r) in s
                .api_key
                .iter()
                .flat_map(|k| &k.credential_refs)
                .enumerate()
            {
                let f = format!("spec.apiKey.credentialRefs[{i}]");
                push(ns, &r.name, Use::ApiKeys, f);
            }
            for (i, r) in s
                .basic_auth
                .iter()
                .flat_map(|b| &b.credential_refs)
                .enumerate()
            {
                let f = format!("spec.basicAuth.credentialRefs[{i}]");
                push(ns, &r.name, Use::Htpasswd, f);
            }
            for (i, p) in s.jwt.iter().flat_map(|j| &j.providers).enumerate() {
                if let Some(r) = &p.jwks.ca_certificate_ref {
                    let f = format!("spec.jwt.providers[{i}].jwks.caCertificateRef");
                    push(ns, &r.name, Use::CaCertificates, f);
                }
            }
        }
        Object::Backend(b) => {
            if let Some(tls) = &b.spec.tls {
                let core = |group: &Option<String>, kind: &Option<String>, default: &str| {
                    group.as_deref().unwrap_or("").is_empty()
                        && kind.as_deref().unwrap_or(default) == default
                };
                for (i, r) in tls.ca_certificate_refs.iter().flatten().enumerate() {
                    if core(&r.group, &r.kind, "ConfigMap") {
                        let f = format!("spec.tls.caCertificateRefs[{i}]");
                        push(ns, &r.name, Use::CaCertificates, f);
                    }
                }
                if let Some(r) = &tls.client_certificate_ref {
                    if core(&r.group, &r.kind, "Secret") {
                        let f = "spec.tls.clientCertificateRef".to_owned();
                        push(ns, &r.name, Use::Certificate, f);
                    }
                }
            }
        }
        Object::L4Policy(_)
        | Object::GatewayClass(_)
        | Object::ReferenceGrant(_)
        | Object::Namespace(_)
        | Object::HTTPRoute(_)
        | Object::GRPCRoute(_)
        | Object::RateLimitPolicy(_)
        | Object::BackendTrafficPolicy(_) => {}
    }
    out
}

fn gateway(g: &Gateway, ns: &str, push: &mut impl FnMut(&str, &str, Use, String)) {
    let https = |port: Option<i64>| {
        g.spec
            .listeners
            .iter()
            .any(|l| l.protocol == "HTTPS" && port.is_none_or(|p| p == l.port))
    };
    for (i, l) in g.spec.listeners.iter().enumerate() {
        if l.protocol != "HTTPS" {
            continue;
        }
        let refs = l
            .tls
            .iter()
            .flat_map(|t| t.certificate_refs.iter().flatten());
        for (j, r) in refs.enumerate() {
            let core = r.group.as_deref().unwrap_or("").is_empty()
                && r.kind.as_deref().unwrap_or("Secret") == "Secret";
            if core {
                let f = format!("spec.listeners[{i}].tls.certificateRefs[{j}]");
                push(
                    r.namespace.as_deref().unwrap_or(ns),
                    &r.name,
                    Use::Certificate,
                    f,
                );
            }
        }
    }
    let Some(frontend) = g.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return;
    };
    let mut cas = |at: String, tls: &FrontendTls| {
        let refs = tls
            .validation
            .iter()
            .flat_map(|v| v.ca_certificate_refs.iter().flatten());
        for (j, r) in refs.enumerate() {
            if r.group.is_empty() && r.kind == "ConfigMap" {
                let f = format!("{at}.validation.caCertificateRefs[{j}]");
                push(
                    r.namespace.as_deref().unwrap_or(ns),
                    &r.name,
                    Use::CaCertificates,
                    f,
                );
            }
        }
    };
    // Only where an HTTPS listener uses them: a port's entry replaces the default there.
    let per_port = frontend.per_port.as_deref().unwrap_or_default();
    let default_used = g
        .spec
        .listeners
        .iter()
        .any(|l| l.protocol == "HTTPS" && !per_port.iter().any(|p| p.port == l.port));
    if default_used {
        cas("spec.tls.frontend.default".to_owned(), &frontend.default);
    }
    for (i, p) in per_port.iter().enumerate() {
        if https(Some(p.port)) {
            cas(format!("spec.tls.frontend.perPort[{i}].tls"), &p.tls);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_and_key_data_without_pem_is_malformed() {
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(Use::Certificate.malformed("tls.crt", cert), None);
        assert_eq!(Use::Certificate.malformed("tls.key", key), None);
        assert_eq!(Use::CaCertificates.malformed("ca.crt", cert), None);
        // Upstream's GatewayInvalidTLSConfiguration Secret: "Hello world" as both.
        let hello = b"Hello world\n";
        let e = Use::Certificate.malformed("tls.crt", hello).unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = Use::Certificate.malformed("tls.key", hello).unwrap();
        assert!(e.contains("no PEM private key"), "{e}");
        // A key where the certificate belongs, a broken block after a good one.
        assert!(Use::Certificate.malformed("tls.crt", key).is_some());
        let broken = [
            &cert[..],
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        ]
        .concat();
        assert!(Use::CaCertificates.malformed("ca.crt", &broken).is_some());
        // Credentials are not looked into here.
        assert_eq!(Use::ApiKeys.malformed("keys", hello), None);
    }
    use crate::{parse, Documents};

    fn refs(yaml: &str) -> Vec<(String, String, Use, String)> {
        let objects = parse(&Documents::inline(&[("o.yaml", yaml)])).expect("valid object");
        references(&objects[0].value)
            .into_iter()
            .map(|r| (r.namespace, r.name, r.use_, r.field))
            .collect()
    }

    fn r(ns: &str, name: &str, use_: Use, field: &str) -> (String, String, Use, String) {
        (ns.into(), name.into(), use_, field.into())
    }

    #[test]
    fn a_gateway_reads_its_certificates_and_the_client_cas_its_https_listeners_use() {
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: gw, namespace: edge }
spec:
  gatewayClassName: tollgate
  listeners:
  - { name: http, port: 80, protocol: HTTP }
  - name: a
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs:
      - { name: cert-a }
      - { name: cert-b, namespace: certs, kind: Secret, group: "" }
      - { name: not-a-secret, kind: ConfigMap }
      - { name: Bad_Name }
  - name: b
    port: 8443
    protocol: HTTPS
    tls: { certificateRefs: [{ name: cert-c }] }
  tls:
    frontend:
      default:
        validation: { caCertificateRefs: [{ kind: ConfigMap, group: "", name: ca-default }] }
      perPort:
      - port: 8443
        tls:
          validation:
            caCertificateRefs:
            - { kind: ConfigMap, group: "", name: ca-port, namespace: other }
            - { kind: Secret, group: "", name: wrong-kind }
      - port: 9443
        tls: { validation: { caCertificateRefs: [{ kind: ConfigMap, group: "", name: unused }] } }
"#;
        assert_eq!(
            refs(yaml),
            vec![
                r(
                    "edge",
                    "cert-a",
                    Use::Certificate,
                    "spec.listeners[1].tls.certificateRefs[0]"
                ),
                r(
                    "certs",
                    "cert-b",
                    Use::Certificate,
                    "spec.listeners[1].tls.certificateRefs[1]"
                ),
                r(
                    "edge",
                    "cert-c",
                    Use::Certificate,
                    "spec.listeners[2].tls.certificateRefs[0]"
                ),
                r(
                    "edge",
                    "ca-default",
                    Use::CaCertificates,
                    "spec.tls.frontend.default.validation.caCertificateRefs[0]"
                ),
                r(
                    "other",
                    "ca-port",
                    Use::CaCertificates,
                    "spec.tls.frontend.perPort[0].tls.validation.caCertificateRefs[0]"
                ),
            ]
        );
    }

    #[test]
    fn policies_and_backends_read_from_their_own_namespace_and_the_default_one_when_unnamed() {
        let auth = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AuthPolicy
metadata: { name: p }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: r }]
  apiKey: { header: x-api-key, credentialRefs: [{ name: keys-a }, { name: keys-b }] }
  basicAuth: { credentialRefs: [{ name: users }] }
  jwt:
    providers:
    - { name: one, jwks: { uri: "https://idp.example/jwks", caCertificateRef: { name: idp-ca } } }
    - { name: two, jwks: { inline: "{}" } }
"#;
        assert_eq!(
            refs(auth),
            vec![
                r(
                    "default",
                    "keys-a",
                    Use::ApiKeys,
                    "spec.apiKey.credentialRefs[0]"
                ),
                r(
                    "default",
                    "keys-b",
                    Use::ApiKeys,
                    "spec.apiKey.credentialRefs[1]"
                ),
                r(
                    "default",
                    "users",
                    Use::Htpasswd,
                    "spec.basicAuth.credentialRefs[0]"
                ),
                r(
                    "default",
                    "idp-ca",
                    Use::CaCertificates,
                    "spec.jwt.providers[0].jwks.caCertificateRef"
                ),
            ]
        );
        let backend = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: b, namespace: shop }
spec:
  endpoints: [{ ip: { address: 10.0.0.1, port: 443 } }]
  tls:
    hostname: api.shop.example
    caCertificateRefs: [{ name: shop-ca }, { kind: Secret, name: wrong }]
    clientCertificateRef: { name: shop-client }
"#;
        assert_eq!(
            refs(backend),
            vec![
                r(
                    "shop",
                    "shop-ca",
                    Use::CaCertificates,
                    "spec.tls.caCertificateRefs[0]"
                ),
                r(
                    "shop",
                    "shop-client",
                    Use::Certificate,
                    "spec.tls.clientCertificateRef"
                ),
            ]
        );
    }

    #[test]
    fn only_served_gateways_and_granted_namespaces_are_read() {
        let gw = |name: &str, class: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: {name}, namespace: edge }}\nspec:\n  gatewayClassName: {class}\n  listeners:\n  - {{ name: a, port: 443, protocol: HTTPS, tls: {{ certificateRefs: [{{ name: own }}, {{ name: granted, namespace: certs }}, {{ name: other, namespace: certs }}, {{ name: x, namespace: elsewhere }}] }} }}\n"
            )
        };
        let class = |name: &str, controller: &str| {
            format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{ name: {name} }}\nspec: {{ controllerName: {controller} }}\n")
        };
        let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: { name: g, namespace: certs }\nspec:\n  from: [{ group: gateway.networking.k8s.io, kind: Gateway, namespace: edge }]\n  to: [{ group: '', kind: Secret, name: granted }]\n";
        let read = |files: &[(&str, String)]| {
            let inline: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
            let objects = parse(&Documents::inline(&inline)).expect("valid objects");
            let refs: Vec<&Located<Object>> = objects.iter().collect();
            in_revision(&refs)
                .into_iter()
                .map(|(i, r)| format!("{} {}/{}", objects[i].object, r.namespace, r.name))
                .collect::<Vec<_>>()
        };
        let ours = gw("ours", "tollgate");
        let theirs = gw("theirs", "other-impl");
        // Without any GatewayClass every Gateway is served; without a grant only the own
        // namespace is read.
        assert_eq!(
            read(&[("a", ours.clone()), ("b", theirs.clone())]),
            ["Gateway/edge/ours edge/own", "Gateway/edge/theirs edge/own"]
        );
        let files = [
            ("a", ours),
            ("b", theirs),
            ("c", class("tollgate", CONTROLLER_NAME)),
            ("d", class("other-impl", "example.com/other")),
            ("e", grant.to_owned()),
        ];
        assert_eq!(
            read(&files),
            [
                "Gateway/edge/ours edge/own",
                "Gateway/edge/ours certs/granted"
            ]
        );
    }

    #[test]
    fn every_referencing_kind_is_listed_and_the_others_read_nothing() {
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r }\nspec: {}\n";
        assert!(refs(route).is_empty());
        assert!(!REFERENCING_KINDS.contains(&"HTTPRoute"));
        for use_ in [
            Use::Certificate,
            Use::CaCertificates,
            Use::ApiKeys,
            Use::Htpasswd,
        ] {
            assert!(!use_.keys().is_empty());
        }
        assert_eq!(Use::Certificate.keys(), &["tls.key", "tls.crt"]);
        assert_eq!(Use::CaCertificates.kind(), RefKind::ConfigMap);
    }
}
