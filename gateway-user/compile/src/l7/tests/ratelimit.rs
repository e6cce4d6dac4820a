//! RateLimitPolicies and banOnAbuse.
use std::time::Duration;

use http::{HeaderName, Method};

use super::*;

#[test]
fn rate_limit_policies_attach_to_every_rule_of_their_routes_in_name_order() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "a",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}    - matches: [{{ path: {{ value: /b }} }}]\n{TO_A}"),
        ),
        &route("free", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "zz",
            &format!("{TARGET_A}  mode: shadow\n  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n"),
        ),
        &limit_policy(
            "aa",
            &format!("{TARGET_A}  limits:\n    - {{ key: clientIP, requests: 100, per: 1m, burst: 150 }}\n    - {{ name: tenant, key: header, header: X-Tenant, requests: 10, per: 1h }}\n"),
        ),
    ]));
    let defs = &t.policy.rate_limits;
    let summary: Vec<_> = defs
        .iter()
        .map(|d| {
            (
                d.policy.to_string(),
                d.name.clone(),
                d.requests,
                d.per.as_secs(),
                d.burst,
                d.shadow,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("default/aa".into(), "aa-0".into(), 100, 60, 150, false),
            ("default/aa".into(), "tenant".into(), 10, 3600, 10, false),
            ("default/zz".into(), "zz".into(), 5, 1, 5, true),
        ]
    );
    assert_eq!(
        defs[1].key,
        table::LimitKey::Header(HeaderName::from_static("x-tenant"))
    );
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
    for path in ["/a", "/b"] {
        let r = rule_of(path);
        assert_eq!(r.rate_limits.limits, [0, 1, 2], "{path}");
        // The shadow limit is not announced.
        assert_eq!(
            r.rate_limits.policy_header.as_ref().unwrap(),
            "\"aa-0\";q=100;w=60, \"tenant\";q=10;w=3600"
        );
    }
    assert!(rule_of("/other").rate_limits.limits.is_empty());
}

#[test]
fn invalid_rate_limit_policies_are_refused_with_the_field_at_fault() {
    let limits = "  limits:
    - { key: clientIP, requests: 0, per: 1s }
    - { key: clientIP, requests: 1, per: 500ms }
    - { key: clientIP, requests: 1, per: 2d }
    - { key: header, requests: 1, per: 1s }
    - { key: clientIP, header: x-a, requests: 1, per: 1s }
    - { key: consumer, requests: 1, per: 1s }
    - { key: header, header: 'bad header', requests: 1, per: 1s, burst: 0 }
    - { name: same, key: clientIP, requests: 1, per: 25h }
    - { name: same, key: clientIP, requests: 1, per: 0s }
";
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "bad",
            &format!("  targetRefs:\n    - {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: nope }}\n    - {{ group: tollgate.dev, kind: Backend, name: a }}\n    - {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }}\n    - {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: a }}\n{limits}"),
        ),
        &limit_policy("empty", "  targetRefs: []\n  limits: []\n"),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "need an AuthPolicy");
    let f = |field: &str| ("RateLimitPolicy/bad".to_string(), field.to_string());
    let e = |field: &str| ("RateLimitPolicy/empty".to_string(), field.to_string());
    assert_eq!(
        got,
        [
            f("spec.targetRefs[0].name"),
            f("spec.targetRefs[1]"),
            f("spec.targetRefs[3].name"),
            f("spec.limits[0].requests"),
            f("spec.limits[1].per"),
            f("spec.limits[2].per"),
            f("spec.limits[3].header"),
            f("spec.limits[4].header"),
            f("spec.limits[5].key"),
            f("spec.limits[6].header"),
            f("spec.limits[6].burst"),
            f("spec.limits[7].per"),
            f("spec.limits[8].name"),
            f("spec.limits[8].per"),
            e("spec.targetRefs"),
            e("spec.limits"),
            // The routes the broken policies target answer 500 (fail closed).
            ("HTTPRoute/a".to_string(), String::new()),
        ]
    );
    let message = |field: &str| {
        errs.iter()
            .find(|x| x.location.object == "RateLimitPolicy/bad" && x.location.field == field)
            .unwrap()
            .message
            .clone()
    };
    assert!(message("spec.targetRefs[0].name").contains("no HTTPRoute default/nope"));
    assert!(message("spec.limits[1].per").contains("whole number of seconds"));
    assert!(message("spec.limits[2].per").contains("not a duration"));
    assert!(message("spec.limits[7].per").contains("longer than 24h"));
    assert!(message("spec.limits[3].header").contains("key: header needs"));
    assert!(message("spec.limits[5].key").contains("no AuthPolicy targets HTTPRoute default/a"));
    assert!(errs.iter().all(|x| x.location.file == "l7.yaml"));
}

#[test]
fn ban_on_abuse_compiles_per_policy_and_shadow_limits_never_ban() {
    use tollgate_model::BanKind;
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &auth_policy(
            "keys",
            &format!("{TARGET_A}  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: k }}] }}\n  banOnAbuse: {{ failures: 20, within: 60s, blockFor: 10m }}\n"),
        ),
        &limit_policy(
            "limits",
            &format!("{TARGET_A}  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n  banOnAbuse: {{ rejections: 100, within: 1m, blockFor: 24h }}\n"),
        ),
        &limit_policy(
            "shadow",
            &format!("{TARGET_A}  mode: shadow\n  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n  banOnAbuse: {{ rejections: 1, within: 1s, blockFor: 1s }}\n"),
        ),
    ]));
    let auth = t.policy.bans[&(BanKind::Auth, "default/keys".into())];
    assert_eq!(auth.threshold, 20);
    assert_eq!(auth.within, Duration::from_secs(60));
    assert_eq!(auth.block_for, Duration::from_secs(600));
    let limit = t.policy.bans[&(BanKind::Ratelimit, "default/limits".into())];
    assert_eq!(limit.threshold, 100);
    assert_eq!(limit.block_for, Duration::from_secs(24 * 3600));
    assert_eq!(t.policy.bans.len(), 2, "a shadow policy never bans");
}

#[test]
fn ban_on_abuse_of_a_rate_limit_policy_is_checked() {
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "limits",
            &format!("{TARGET_A}  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n  banOnAbuse: {{ rejections: -1, within: forever, blockFor: 0s }}\n"),
        ),
    ]);
    let errs = errors(&yaml);
    let got = places(&errs, "out of range 1s-24h");
    let at = |field: &str| ("RateLimitPolicy/limits".to_string(), field.to_string());
    assert_eq!(
        got,
        [
            at("spec.banOnAbuse.rejections"),
            at("spec.banOnAbuse.within"),
            at("spec.banOnAbuse.blockFor"),
            // The routes the broken policies target answer 500 (fail closed).
            ("HTTPRoute/a".to_string(), String::new()),
        ]
    );
}
#[test]
fn client_ip_prefixes_default_to_a_64_and_are_checked() {
    use crate::l7::table::{ClientPrefixes, LimitKey};
    use tollgate_model::BanKind;
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "limits",
            &format!("{TARGET_A}  limits:\n    - {{ name: d, key: clientIP, requests: 5, per: 1s }}\n    - {{ name: w, key: clientIP, clientIP: {{ ipv4Prefix: 24, ipv6Prefix: 48 }}, requests: 5, per: 1s }}\n  banOnAbuse: {{ rejections: 100, within: 1m, blockFor: 1h, clientIP: {{ ipv6Prefix: 56 }} }}\n"),
        ),
        &auth_policy(
            "keys",
            &format!("{TARGET_A}  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: k }}] }}\n  banOnAbuse: {{ failures: 20, within: 60s, blockFor: 10m }}\n"),
        ),
    ]));
    let keys: Vec<&LimitKey> = t.policy.rate_limits.iter().map(|l| &l.key).collect();
    assert_eq!(
        keys,
        [
            &LimitKey::ClientIp(ClientPrefixes { v4: 32, v6: 64 }),
            &LimitKey::ClientIp(ClientPrefixes { v4: 24, v6: 48 }),
        ]
    );
    assert_eq!(
        t.policy.bans[&(BanKind::Ratelimit, "default/limits".into())].ipv6_prefix,
        56
    );
    assert_eq!(
        t.policy.bans[&(BanKind::Auth, "default/keys".into())].ipv6_prefix,
        64
    );

    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "bad",
            &format!("{TARGET_A}  limits:\n    - {{ key: clientIP, clientIP: {{ ipv4Prefix: 33, ipv6Prefix: -1 }}, requests: 5, per: 1s }}\n    - {{ key: header, header: x-a, clientIP: {{ ipv6Prefix: 64 }}, requests: 5, per: 1s }}\n  banOnAbuse: {{ rejections: 100, within: 1m, blockFor: 1h, clientIP: {{ ipv6Prefix: 32 }} }}\n"),
        ),
    ]);
    let errs = errors(&yaml);
    let at = |field: &str| ("RateLimitPolicy/bad".to_string(), field.to_string());
    assert_eq!(
        places(&errs, "out of range"),
        [
            at("spec.limits[0].clientIP.ipv4Prefix"),
            at("spec.limits[0].clientIP.ipv6Prefix"),
            at("spec.limits[1].clientIP"),
            at("spec.banOnAbuse.clientIP.ipv6Prefix"),
            // The routes the broken policies target answer 500 (fail closed).
            ("HTTPRoute/a".to_string(), String::new()),
        ]
    );
    assert!(
        errs.iter().any(|e| e.message.contains("48-128")),
        "{errs:?}"
    );
}

#[test]
fn cluster_scope_carries_its_failure_mode_and_refuses_what_a_fixed_window_cannot_honour() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "node",
            &format!("{TARGET_A}  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n"),
        ),
        &limit_policy(
            "shared",
            &format!("{TARGET_A}  scope: Cluster\n  limits: [{{ key: clientIP, requests: 5, per: 1s, burst: 5 }}]\n"),
        ),
        &limit_policy(
            "strict",
            &format!("{TARGET_A}  scope: Cluster\n  onBackendFailure: deny\n  limits: [{{ key: clientIP, requests: 5, per: 1m }}]\n"),
        ),
    ]));
    let scopes: Vec<_> = t
        .policy
        .rate_limits
        .iter()
        .map(|d| (d.policy.to_string(), d.scope, d.is_cluster()))
        .collect();
    assert_eq!(
        scopes,
        [
            ("default/node".into(), table::LimitScope::Node, false),
            (
                "default/shared".into(),
                table::LimitScope::Cluster {
                    on_failure: table::RateLimitBackendFailure::Local
                },
                true
            ),
            (
                "default/strict".into(),
                table::LimitScope::Cluster {
                    on_failure: table::RateLimitBackendFailure::Deny
                },
                true
            ),
        ]
    );
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "bad",
            &format!("{TARGET_A}  onBackendFailure: allow\n  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n"),
        ),
        &limit_policy(
            "burst",
            &format!("{TARGET_A}  scope: Cluster\n  limits: [{{ key: clientIP, requests: 5, per: 1s, burst: 10 }}]\n"),
        ),
    ]);
    let errs = errors(&yaml);
    let found: Vec<_> = errs
        .iter()
        .filter(|e| e.location.object.starts_with("RateLimitPolicy/"))
        .map(|e| (e.location.object.as_str(), e.location.field.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("RateLimitPolicy/bad", "spec.onBackendFailure"),
            ("RateLimitPolicy/burst", "spec.limits[0].burst"),
        ]
    );
    assert!(errs
        .iter()
        .any(|e| e.message.contains("only with scope: Cluster")));
    // Names from another casing are refused by the strict parser, not guessed.
    let yaml = all(&[
        GATEWAY,
        BACKENDS,
        &route("a", &format!("  rules:\n    - {}", TO_A.trim_start())),
        &limit_policy(
            "typo",
            &format!("{TARGET_A}  scope: cluster\n  limits: [{{ key: clientIP, requests: 5, per: 1s }}]\n"),
        ),
    ]);
    assert!(errors(&yaml)
        .iter()
        .any(|e| e.location.object == "RateLimitPolicy/typo"));
}
