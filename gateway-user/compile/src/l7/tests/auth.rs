//! AuthPolicies: API keys, basic auth, JWT providers, client certificates, allowedConsumers.
use std::time::Duration;

use http::{HeaderName, Method};

use super::*;

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
            // The routes the broken policies target answer 500 (fail closed).
            ("HTTPRoute/a".to_string(), String::new()),
            ("HTTPRoute/b".to_string(), String::new()),
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
            "spec.jwt.providers[1].claimToHeaders[1].header",
            "", // HTTPRoute/a answers 500 without its AuthPolicy
        ]
    );
    assert!(
        errs[0].message.contains("carries credentials"),
        "{}",
        errs[0].message
    );
}
