//! One duration format for every policy field (the Gateway API's, GEP-2257): the same text
//! means the same duration wherever it is written, and text that is not a duration is refused
//! the same way in every field. (Before, `clockSkew` and `refreshInterval` used the command
//! line's parser: `clockSkew: 30` was accepted, `refreshInterval: 1m30s` refused.)
use std::time::Duration;

use tollgate_compile::l7::table::{JwksDef, RouteTable};
use tollgate_compile::snapshot::compile_documents;
use tollgate_model::{BanKind, Documents};

/// A revision whose every duration field is `d`.
fn revision(d: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge }}
spec:
  gatewayClassName: tollgate
  listeners: [{{ name: http, port: 18000, protocol: HTTP }}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: {{ name: app }}
spec:
  endpoints: [{{ ip: {{ address: 127.0.0.1, port: 9001 }} }}]
  healthCheck: {{ passive: {{ consecutiveFailures: 3, ejectionTime: "{d}" }} }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: app }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]
      timeouts: {{ request: "{d}", backendRequest: "{d}" }}
      retry: {{ codes: [503], attempts: 1, backoff: "{d}" }}
---
apiVersion: tollgate.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{ name: limits }}
spec:
  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]
  limits: [{{ name: per-client, key: clientIP, requests: 10, per: "{d}" }}]
  banOnAbuse: {{ rejections: 10, within: "{d}", blockFor: "{d}" }}
---
apiVersion: tollgate.dev/v1alpha1
kind: AuthPolicy
metadata: {{ name: auth }}
spec:
  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]
  jwt:
    providers:
      - name: idp
        jwks: {{ uri: "https://idp.example/jwks.json", refreshInterval: "{d}" }}
        clockSkew: "{d}"
  banOnAbuse: {{ failures: 10, within: "{d}", blockFor: "{d}" }}
"#
    )
}

/// The route table, or every problem (one a line): those that refuse the revision and those
/// that leave an object out (a bad duration is the object's own problem).
fn compile(d: &str) -> Result<RouteTable, String> {
    let docs = Documents::inline(&[("all.yaml", &revision(d))]);
    let s = compile_documents(&docs, None).map_err(|e| e.to_string())?;
    if !s.acceptance.complete() {
        return Err(s
            .acceptance
            .problems()
            .iter()
            .map(|p| format!("{p}\n"))
            .collect());
    }
    Ok((*s.l7).clone())
}

/// Every duration field of a compiled revision, by its field path.
fn durations(t: &RouteTable) -> Vec<(&'static str, Duration)> {
    let p = &t.policy;
    let rule = &p.routes[0].rules[0].rule;
    let provider = &p.auth[0].jwt[0];
    let refresh = match &provider.jwks {
        JwksDef::Uri { refresh, .. } => *refresh,
        other => panic!("a uri JWKS, got {other:?}"),
    };
    let ban = |kind: BanKind| {
        p.bans
            .iter()
            .find(|((k, _), _)| *k == kind)
            .map(|(_, b)| b)
            .expect("a ban")
    };
    vec![
        ("Backend ejectionTime", p.backends[0].ejection_time),
        ("timeouts.request", rule.timeouts.request.expect("request")),
        (
            "timeouts.backendRequest",
            rule.timeouts.backend_request.expect("backendRequest"),
        ),
        ("retry.backoff", rule.retry.backoff),
        ("RateLimitPolicy per", p.rate_limits[0].per),
        (
            "RateLimitPolicy banOnAbuse.within",
            ban(BanKind::Ratelimit).within,
        ),
        (
            "RateLimitPolicy banOnAbuse.blockFor",
            ban(BanKind::Ratelimit).block_for,
        ),
        ("AuthPolicy banOnAbuse.within", ban(BanKind::Auth).within),
        (
            "AuthPolicy banOnAbuse.blockFor",
            ban(BanKind::Auth).block_for,
        ),
        ("jwks.refreshInterval", refresh),
        ("clockSkew", provider.clock_skew),
    ]
}

/// (Values every field accepts: their ranges differ, e.g. `clockSkew` is at most 5 minutes and
/// a rate limit's `per` is whole seconds.)
#[test]
fn the_same_text_is_the_same_duration_in_every_field() {
    for (text, want) in [
        ("1m30s", Duration::from_secs(90)),
        ("90s", Duration::from_secs(90)),
        ("2m", Duration::from_secs(120)),
        ("1m0s", Duration::from_secs(60)),
        ("60000ms", Duration::from_secs(60)),
    ] {
        let table = compile(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        for (field, got) in durations(&table) {
            assert_eq!(got, want, "{field}: {text:?}");
        }
    }
}

#[test]
fn text_that_is_not_a_duration_is_refused_in_every_field() {
    // A bare number (the old command-line form), a unit the format does not have, a fraction.
    for text in ["30", "1d", "1.5s", "1s1m"] {
        let e = compile(text).expect_err(text);
        for field in [
            "ejectionTime",
            "timeouts.request",
            "timeouts.backendRequest",
            "retry.backoff",
            "limits[0].per",
            "banOnAbuse.within",
            "banOnAbuse.blockFor",
            "jwks.refreshInterval",
            "clockSkew",
        ] {
            assert!(
                e.lines()
                    .any(|l| l.contains(field) && l.contains("is not a duration like")),
                "{text:?}: {field} not refused with the duration message:\n{e}"
            );
        }
    }
}
