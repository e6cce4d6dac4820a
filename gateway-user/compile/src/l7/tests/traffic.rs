//! BackendTrafficPolicies: the request body limit.
use super::*;

fn traffic_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{ name: {name} }}\nspec:\n{spec}")
}

#[test]
fn a_backend_traffic_policy_sets_the_body_limit_of_every_rule_of_its_routes() {
    let t = table(&all(&[
        GATEWAY,
        BACKENDS,
        &route(
            "a",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}    - matches: [{{ path: {{ value: /b }} }}]\n{TO_A}"),
        ),
        &route(
            "c",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /c }} }}]\n{TO_A}"),
        ),
        &traffic_policy("small", &format!("{TARGET_A}  requestBody: {{ maxSize: 1MiB }}\n")),
    ]));
    for r in &t.policy.routes {
        for rule in &r.rules {
            let want = (&*r.label == "default/a").then_some(1 << 20);
            assert_eq!(rule.rule.max_request_body, want, "{}", r.label);
        }
    }
}

#[test]
fn backend_traffic_policy_errors_name_the_field() {
    let e = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", TO_A_RULES),
        &traffic_policy(
            "bad",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 1.5MiB }}\n"),
        ),
        &traffic_policy(
            "huge",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 65GiB }}\n"),
        ),
        &traffic_policy(
            "nowhere",
            "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: zz }]\n",
        ),
    ]));
    let p = places(&e, "64GiB");
    for want in [
        ("BackendTrafficPolicy/bad", "spec.requestBody.maxSize"),
        ("BackendTrafficPolicy/huge", "spec.requestBody.maxSize"),
        ("BackendTrafficPolicy/nowhere", "spec.targetRefs[0].name"),
    ] {
        assert!(
            p.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {p:?}"
        );
    }
    // Two policies on one route.
    let e = errors(&all(&[
        GATEWAY,
        BACKENDS,
        &route("a", TO_A_RULES),
        &traffic_policy(
            "one",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 1MiB }}\n"),
        ),
        &traffic_policy(
            "two",
            &format!("{TARGET_A}  requestBody: {{ maxSize: 2MiB }}\n"),
        ),
    ]));
    assert_eq!(
        places(&e, "at most one"),
        vec![
            (
                "BackendTrafficPolicy/two".to_owned(),
                "spec.targetRefs[0].name".to_owned()
            ),
            // The route answers 500 rather than serve without the policy that was left out.
            ("HTTPRoute/a".to_owned(), String::new()),
        ]
    );
}
