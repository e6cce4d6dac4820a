//! Gateway API failure isolation: a broken L7 object is left out and the rest served; a rule
//! that is invalid in itself is dropped (`PartiallyInvalid`); a backendRef that does not
//! resolve, or a rule without backendRefs, answers 500; a policy left out closes its routes;
//! L4 problems and unreadable documents still refuse the whole revision.
use super::*;
use crate::l7::status::{reason, Condition, ACCEPTED, PARTIALLY_INVALID, RESOLVED_REFS};
use crate::snapshot::{compile_documents, Snapshot};

/// Compiles `files` as the agent does; panics when the revision is refused.
fn snapshot(files: &[(&str, &str)]) -> Snapshot {
    compile_documents(&docs(files), None).unwrap_or_else(|e| panic!("refused: {e}"))
}

fn one(yaml: &str) -> Snapshot {
    snapshot(&[("l7.yaml", yaml)])
}

/// The condition `type_` of the first parent of route `name`.
fn condition<'a>(s: &'a Snapshot, name: &str, type_: &str) -> Option<&'a Condition> {
    let route = s.acceptance.routes.iter().find(|r| r.name == name)?;
    route.parents[0]
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn left_out(s: &Snapshot) -> Vec<&str> {
    s.acceptance
        .left_out
        .iter()
        .map(|o| o.object.as_str())
        .collect()
}

fn routed(s: &Snapshot, path: &str) -> Option<String> {
    lookup(&s.l7, "example.com", path, &[])
}

const TO_B: &str = "      backendRefs: [{ group: tollgate.dev, kind: Backend, name: b }]\n";

#[test]
fn a_broken_route_is_left_out_and_the_other_routes_serve() {
    let good = route(
        "good",
        &format!("  rules:\n    - matches: [{{ path: {{ value: /good }} }}]\n{TO_A}"),
    );
    let bad = route(
        "bad",
        &format!("  hostnames: ['bad host']\n  rules:\n    - matches: [{{ path: {{ value: /bad }} }}]\n{TO_A}"),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &good, &bad]));
    assert_eq!(left_out(&s), ["HTTPRoute/bad"]);
    // What a node reports the revision holds: the route left out counts.
    assert_eq!(s.object_counts.get("HTTPRoute"), Some(&2));
    assert_eq!(s.object_counts.get("Gateway"), Some(&1));
    assert_eq!(s.object_counts.get("L4Policy"), None);
    let problem = &s.acceptance.left_out[0].problems[0];
    assert_eq!(
        (
            problem.location.file.as_str(),
            problem.location.field.as_str()
        ),
        ("l7.yaml", "spec.hostnames[0]")
    );
    assert_eq!(routed(&s, "/good").as_deref(), Some("default/good#0"));
    assert_eq!(routed(&s, "/bad"), None);
    let accepted = condition(&s, "bad", ACCEPTED).unwrap();
    assert_eq!(
        (accepted.status, accepted.reason),
        ("False", reason::UNSUPPORTED_VALUE)
    );
    assert!(
        condition(&s, "good", ACCEPTED).unwrap().is_true(),
        "{:?}",
        s.acceptance.routes
    );
    assert!(!s.acceptance.complete());
}

#[test]
fn a_backend_ref_that_does_not_resolve_answers_500_for_its_rule_and_the_rest_serves() {
    let r = route(
        "r",
        &format!(
            "  rules:
    - matches: [{{ path: {{ value: /ok }} }}]
{TO_A}    - matches: [{{ path: {{ value: /missing }} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: nope }}]
    - matches: [{{ path: {{ value: /half }} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a, weight: 1 }}, {{ group: example.com, kind: Bucket, name: x, weight: 3 }}]
    - matches: [{{ path: {{ value: /other-ns }} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: a, namespace: elsewhere }}]
"
        ),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &r]));
    assert!(
        s.acceptance.left_out.is_empty(),
        "{:?}",
        s.acceptance.left_out
    );
    let rules = &s.l7.policy.routes[0].rules;
    assert_eq!(rules.len(), 4, "every rule is served");
    assert_eq!(
        (
            rules[0].rule.backends.len(),
            rules[0].rule.unresolved_weight
        ),
        (1, 0)
    );
    assert_eq!(
        (
            rules[1].rule.backends.len(),
            rules[1].rule.unresolved_weight
        ),
        (0, 1)
    );
    assert_eq!(
        rules[1].rule.pick_backend(0),
        None,
        "a 500 for every request"
    );
    // One part in four goes to the Backend, three to the unknown kind: answered 500.
    assert_eq!(
        (
            rules[2].rule.backends.len(),
            rules[2].rule.unresolved_weight
        ),
        (1, 3)
    );
    assert_eq!(rules[2].rule.total_weight(), 4);
    assert_eq!(rules[3].rule.unresolved_weight, 1);

    let resolved = condition(&s, "r", RESOLVED_REFS).unwrap();
    assert_eq!(
        (resolved.status, resolved.reason),
        ("False", reason::BACKEND_NOT_FOUND)
    );
    assert!(
        resolved
            .message
            .contains("spec.rules[1].backendRefs[0].name"),
        "{resolved:?}"
    );
    assert!(condition(&s, "r", ACCEPTED).unwrap().is_true());
    let fields: Vec<&str> = s
        .acceptance
        .partial
        .iter()
        .map(|e| e.location.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.rules[1].backendRefs[0].name",
            "spec.rules[2].backendRefs[1]",
            "spec.rules[3].backendRefs[0].namespace",
        ]
    );
    assert!(s.acceptance.partial[1].message.contains("answered 500"));
}

#[test]
fn unknown_kinds_and_other_namespaces_have_their_own_reasons() {
    for (backend_ref, want) in [
        (
            "{ group: example.com, kind: Bucket, name: x }",
            reason::INVALID_KIND,
        ),
        ("{ name: svc, port: 80 }", reason::BACKEND_NOT_FOUND),
        (
            "{ group: tollgate.dev, kind: Backend, name: a, namespace: other }",
            reason::REF_NOT_PERMITTED,
        ),
    ] {
        let r = route(
            "r",
            &format!("  rules:\n    - backendRefs: [{backend_ref}]\n"),
        );
        let s = one(&all(&[GATEWAY, BACKENDS, &r]));
        let c = condition(&s, "r", RESOLVED_REFS).unwrap();
        assert_eq!((c.status, c.reason), ("False", want), "{backend_ref}");
        assert_eq!(s.l7.policy.routes.len(), 1, "the route is served");
    }
}

#[test]
fn a_rule_without_backend_refs_answers_500() {
    let r = route(
        "r",
        &format!("  rules:\n    - matches: [{{ path: {{ value: /none }} }}]\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}"),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &r]));
    let rules = &s.l7.policy.routes[0].rules;
    let failure = rules[0].rule.failure.as_ref().expect("answers 500");
    assert_eq!(failure.reason, "no_backend_refs");
    assert!(rules[1].rule.failure.is_none());
    // Nothing to resolve: ResolvedRefs stays True; the rule is reported all the same.
    assert!(condition(&s, "r", RESOLVED_REFS).unwrap().is_true());
    assert_eq!(
        s.acceptance.partial[0].location.field,
        "spec.rules[0].backendRefs"
    );
}

#[test]
fn an_invalid_rule_is_dropped_and_the_route_is_partially_invalid() {
    let r = route(
        "r",
        &format!(
            "  rules:
    - matches: [{{ path: {{ value: /ok }} }}]
{TO_A}    - matches: [{{ path: {{ type: RegularExpression, value: '/a(' }} }}]
{TO_A}    - matches: [{{ path: {{ value: /ok2 }} }}]
      filters: [{{ type: RequestHeaderModifier, requestHeaderModifier: {{ set: [{{ name: host, value: x }}] }} }}]
{TO_B}"
        ),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &r]));
    let indexes: Vec<usize> = s.l7.policy.routes[0]
        .rules
        .iter()
        .map(|r| r.rule.index)
        .collect();
    assert_eq!(indexes, [0], "rules 1 and 2 are dropped");
    let c = condition(&s, "r", PARTIALLY_INVALID).unwrap();
    assert_eq!((c.status, c.reason), ("True", reason::UNSUPPORTED_VALUE));
    assert!(
        c.message
            .starts_with("Dropped Rule(s): spec.rules[1], spec.rules[2]"),
        "{c:?}"
    );
    assert!(condition(&s, "r", ACCEPTED).unwrap().is_true());
    assert_eq!(routed(&s, "/ok").as_deref(), Some("default/r#0"));
    assert_eq!(routed(&s, "/ok2"), None);
    let problem = &s.acceptance.partial[0];
    assert_eq!(problem.location.object, "HTTPRoute/r");
    assert_eq!(
        problem.location.field,
        "spec.rules[1].matches[0].path.value"
    );
    assert!(problem.message.starts_with("rule dropped"), "{problem}");
}

#[test]
fn a_route_none_of_whose_rules_is_valid_is_left_out() {
    let r = route(
        "r",
        &format!("  rules:\n    - matches: [{{ path: {{ type: RegularExpression, value: '(' }} }}]\n{TO_A}"),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &r]));
    assert_eq!(left_out(&s), ["HTTPRoute/r"]);
    assert!(s.l7.policy.routes.is_empty());
}

#[test]
fn a_broken_backend_is_left_out_and_the_rules_naming_it_answer_500() {
    let backends = BACKENDS.replace("port: 9001", "port: 0");
    let r = route(
        "r",
        &format!("  rules:\n    - matches: [{{ path: {{ value: /a }} }}]\n{TO_A}    - matches: [{{ path: {{ value: /b }} }}]\n{TO_B}"),
    );
    let s = one(&all(&[GATEWAY, &backends, &r]));
    assert_eq!(left_out(&s), ["Backend/a"]);
    let rules = &s.l7.policy.routes[0].rules;
    assert_eq!(rules[0].rule.unresolved_weight, 1);
    assert_eq!(rules[1].rule.backends.len(), 1);
}

#[test]
fn a_broken_policy_is_left_out_and_the_routes_it_targets_answer_500() {
    let protected = route("a", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let open = route("b", &format!("  rules:\n    - {}", TO_B.trim_start())).replace(
        "[{ name: edge }]",
        "[{ name: edge }]\n  hostnames: [b.example.com]",
    );
    let policy = auth_policy(
        "p",
        &format!(
            "{TARGET_A}  apiKey: {{ header: 'bad header', credentialRefs: [{{ name: k }}] }}\n"
        ),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &protected, &open, &policy]));
    assert_eq!(left_out(&s), ["AuthPolicy/p"]);
    let a =
        s.l7.policy
            .routes
            .iter()
            .find(|r| &*r.label == "default/a")
            .unwrap();
    let failure = a.rules[0].rule.failure.as_ref().expect("closed");
    assert_eq!(failure.reason, "policy_left_out");
    assert!(
        failure.message.contains("AuthPolicy default/p"),
        "{failure:?}"
    );
    let b =
        s.l7.policy
            .routes
            .iter()
            .find(|r| &*r.label == "default/b")
            .unwrap();
    assert!(b.rules[0].rule.failure.is_none());
    let c = condition(&s, "a", crate::l7::status::POLICIES_APPLIED).unwrap();
    assert_eq!((c.status, c.reason), ("False", reason::POLICY_LEFT_OUT));

    // The same when the policy fails its schema (the parse leaves it out): its targets are
    // still read.
    let policy = auth_policy(
        "p",
        &format!("{TARGET_A}  apiKey: {{ credentialRefs: [{{ name: k }}] }}\n  colour: red\n"),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &protected, &policy]));
    assert_eq!(left_out(&s), ["AuthPolicy/p"]);
    assert_eq!(
        s.acceptance.left_out[0].problems[0].location.field,
        "spec.colour"
    );
    assert!(s.l7.policy.routes[0].rules[0].rule.failure.is_some());
}

#[test]
fn a_broken_gateway_takes_its_routes_and_a_broken_listener_only_itself() {
    // A Gateway-level problem leaves the Gateway out; its routes find no parent.
    let gateway = GATEWAY.replace("gatewayClassName: tollgate", "gatewayClassName: ''");
    let r = route("r", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let s = one(&all(&[&gateway, BACKENDS, &r]));
    assert_eq!(left_out(&s), ["Gateway/edge", "HTTPRoute/r"]);
    let c = condition(&s, "r", ACCEPTED).unwrap();
    assert_eq!((c.status, c.reason), ("False", reason::NO_MATCHING_PARENT));

    // A listener-level problem leaves that listener out; the other one serves.
    let gateway = GATEWAY.replace(
        "    - { name: http, port: 8080, protocol: HTTP }\n",
        "    - { name: http, port: 8080, protocol: HTTP }\n    - { name: odd, port: 8081, protocol: UDP }\n",
    );
    let s = one(&all(&[&gateway, BACKENDS, &r]));
    assert!(s.acceptance.left_out.is_empty());
    assert_eq!(s.l7.policy.listeners.len(), 1);
    assert_eq!(
        s.acceptance.partial[0].location.field,
        "spec.listeners[1].protocol"
    );
    assert!(condition(&s, "r", ACCEPTED).unwrap().is_true());
}

#[test]
fn a_route_with_one_good_parent_serves_and_reports_the_other() {
    let r = route("r", &format!("  rules:\n    - {}", TO_A.trim_start()))
        .replace("[{ name: edge }]", "[{ name: edge }, { name: gone }]");
    let s = one(&all(&[GATEWAY, BACKENDS, &r]));
    assert_eq!(s.l7.policy.routes.len(), 1);
    let parents = &s.acceptance.routes[0].parents;
    assert!(parents[0].conditions[0].is_true());
    assert_eq!(
        (
            parents[1].conditions[0].status,
            parents[1].conditions[0].reason
        ),
        ("False", reason::NO_MATCHING_PARENT)
    );
    assert_eq!(parents[1].parent_ref.name, "gone");
    assert_eq!(
        s.acceptance.partial[0].location.field,
        "spec.parentRefs[1].name"
    );
}

#[test]
fn a_route_left_out_keeps_each_refusing_parents_own_reason() {
    let other = GATEWAY.replace("name: edge }", "name: other }").replace(
        "{ name: http, port: 8080, protocol: HTTP }",
        "{ name: http, port: 8081, hostname: a.example.com, protocol: HTTP }",
    );
    let r = route(
        "r",
        &format!("  hostnames: [b.example.com]\n  rules:\n    - matches: [{{ path: {{ type: RegularExpression, value: '(' }} }}]\n{TO_A}"),
    )
    .replace("[{ name: edge }]", "[{ name: edge }, { name: other }, { name: gone }]");
    let s = one(&all(&[GATEWAY, &other, BACKENDS, &r]));
    assert_eq!(left_out(&s), ["HTTPRoute/r"]);
    let reasons: Vec<(&str, &str)> = s.acceptance.routes[0]
        .parents
        .iter()
        .map(|p| (p.conditions[0].status, p.conditions[0].reason))
        .collect();
    // Only the parent that took the route is told it is left out.
    assert_eq!(
        reasons,
        [
            ("False", reason::UNSUPPORTED_VALUE),
            ("False", reason::NO_MATCHING_LISTENER_HOSTNAME),
            ("False", reason::NO_MATCHING_PARENT),
        ]
    );
}

#[test]
fn an_extension_ref_filter_is_not_skipped_its_requests_are_answered_500() {
    let r = route(
        "r",
        &format!(
            "  rules:
    - matches: [{{ path: {{ value: / }} }}]
{TO_A}    - matches: [{{ path: {{ value: /admin }} }}]
      filters:
        - {{ type: ExtensionRef, extensionRef: {{ group: example.com, kind: Guard, name: g }} }}
        - {{ type: ExtensionRef, extensionRef: {{ group: example.com, kind: Log, name: l }} }}
{TO_B}    - matches: [{{ path: {{ value: /split }} }}]
      backendRefs:
        - {{ group: tollgate.dev, kind: Backend, name: a, weight: 1 }}
        - {{ group: tollgate.dev, kind: Backend, name: b, weight: 3, filters: [{{ type: ExtensionRef, extensionRef: {{ group: example.com, kind: Guard, name: g }} }}] }}
"
        ),
    );
    let s = one(&all(&[GATEWAY, BACKENDS, &r]));
    // /admin/x stays with its rule, which answers 500; it does not fall through to `/`.
    assert_eq!(routed(&s, "/admin/x").as_deref(), Some("default/r#1"));
    let rules = &s.l7.policy.routes[0].rules;
    let failure = rules[1].rule.failure.as_ref().expect("answers 500");
    assert_eq!(failure.reason, "unresolved_filter");
    assert!(
        failure.message.contains("example.com/Guard g"),
        "{failure:?}"
    );
    assert!(rules[0].rule.failure.is_none());
    // On a backendRef: the requests sent to that backend are answered 500.
    assert_eq!(
        (
            rules[2].rule.backends.len(),
            rules[2].rule.unresolved_weight
        ),
        (1, 3)
    );
    assert!(rules[2].rule.failure.is_none());
    // Accepted, with ResolvedRefs=False (a reference to a kind Tollgate does not serve).
    assert!(condition(&s, "r", ACCEPTED).unwrap().is_true());
    assert!(condition(&s, "r", PARTIALLY_INVALID).is_none());
    let resolved = condition(&s, "r", RESOLVED_REFS).unwrap();
    assert_eq!(
        (resolved.status, resolved.reason),
        ("False", reason::INVALID_KIND)
    );
    let fields: Vec<&str> = s
        .acceptance
        .partial
        .iter()
        .map(|e| e.location.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.rules[2].backendRefs[1].filters[0].extensionRef",
            "spec.rules[1].filters[0].extensionRef",
            "spec.rules[1].filters[1].extensionRef",
        ]
    );
    assert!(
        s.acceptance.partial[1].message.contains("answered 500"),
        "{:?}",
        s.acceptance.partial
    );
}

#[test]
fn path_values_with_characters_the_crd_forbids_leave_the_route_out() {
    for value in ["/my[/]path01", "/[]", "/^", "/a b", "/50%", "/a|b"] {
        let r = route(
            "r",
            &format!("  rules:\n    - matches: [{{ path: {{ type: PathPrefix, value: '{value}' }} }}]\n{TO_A}"),
        );
        let s = one(&all(&[GATEWAY, BACKENDS, &r]));
        assert_eq!(left_out(&s), ["HTTPRoute/r"], "{value}");
        let p = &s.acceptance.left_out[0].problems[0];
        assert_eq!(
            p.location.field, "spec.rules[0].matches[0].path.value",
            "{value}"
        );
        assert!(p.message.contains(value), "{p}");
        assert_eq!(
            s.acceptance.left_out[0].problems.len(),
            1,
            "one message per field: {:?}",
            s.acceptance.left_out[0].problems
        );
    }
    // Exact too; and escapes and the RFC 3986 sub-delimiters are fine.
    let r = route(
        "r",
        &format!("  rules:\n    - matches: [{{ path: {{ type: Exact, value: '/^' }} }}]\n{TO_A}"),
    );
    assert_eq!(
        left_out(&one(&all(&[GATEWAY, BACKENDS, &r]))),
        ["HTTPRoute/r"]
    );
    let r = route(
        "r",
        &format!("  rules:\n    - matches: [{{ path: {{ value: \"/a-b_c~d!$&'()*+,;=:@%C3%A9\" }} }}]\n{TO_A}"),
    );
    assert!(one(&all(&[GATEWAY, BACKENDS, &r]))
        .acceptance
        .left_out
        .is_empty());
}

#[test]
fn replace_prefix_match_needs_exactly_one_path_prefix_match() {
    let rewrite = "      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]\n";
    let redirect = "      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]\n";
    for (matches, ok) in [
        ("", true),
        ("      matches: [{ path: { value: /old } }]\n", true),
        (
            "      matches: [{ path: { value: /a } }, { path: { value: /b } }]\n",
            false,
        ),
        (
            "      matches: [{ path: { type: Exact, value: /a } }]\n",
            false,
        ),
    ] {
        for (filter, backends) in [(rewrite, TO_A), (redirect, "")] {
            let r = route(
                "r",
                &format!("  rules:\n    - name: x\n{matches}{filter}{backends}"),
            );
            let s = one(&all(&[GATEWAY, BACKENDS, &r]));
            assert_eq!(s.acceptance.left_out.is_empty(), ok, "{matches}{filter}");
            if !ok {
                let p = &s.acceptance.left_out[0].problems[0];
                assert!(p.location.field.ends_with(".path.type"), "{p}");
                assert!(p.message.contains("exactly one match"), "{p}");
            }
        }
    }
}

#[test]
fn more_than_128_matches_across_a_route_leave_it_out() {
    let rule = |n: usize, from: usize| {
        let matches: Vec<String> = (from..from + n)
            .map(|i| format!("{{ path: {{ value: /p{i} }} }}"))
            .collect();
        format!("    - matches: [{}]\n{TO_A}", matches.join(", "))
    };
    let two = |a: usize, b: usize| route("r", &format!("  rules:\n{}{}", rule(a, 0), rule(b, 100)));
    let s = one(&all(&[GATEWAY, BACKENDS, &two(64, 64)]));
    assert!(s.acceptance.left_out.is_empty(), "128 is the limit");
    let s = one(&all(&[GATEWAY, BACKENDS, &two(64, 65)]));
    assert_eq!(left_out(&s), ["HTTPRoute/r"]);
    let p = &s.acceptance.left_out[0].problems;
    assert!(
        p.iter()
            .any(|e| e.location.field == "spec.rules" && e.message.contains("129 matches")),
        "{p:?}"
    );
}

#[test]
fn a_second_object_of_the_same_name_is_left_out_and_the_first_serves() {
    let first = route("r", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let second = route("r", &format!("  rules:\n    - {}", TO_B.trim_start()));
    let s = snapshot(&[
        ("a.yaml", &all(&[GATEWAY, BACKENDS, &first])),
        ("b.yaml", &second),
    ]);
    assert_eq!(left_out(&s), ["HTTPRoute/r"]);
    assert_eq!(s.acceptance.left_out[0].file, "b.yaml");
    assert_eq!(s.l7.policy.routes[0].rules[0].rule.backends[0].backend, 0);
}

#[test]
fn l4_problems_and_unreadable_documents_still_refuse_the_whole_revision() {
    let r = route("r", &format!("  rules:\n    - {}", TO_A.trim_start()));
    let l7 = all(&[GATEWAY, BACKENDS, &r]);
    let l4 = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec:\n  rules:\n    - { name: x, action: allow, protocol: TCP, ports: [\"0\"] }\n";
    let e = compile_documents(&docs(&[("l4.yaml", l4), ("l7.yaml", &l7)]), None).unwrap_err();
    assert_eq!(e.0[0].location.object, "L4Policy/edge");
    // An L4Policy that fails its schema, and a document whose objects cannot be known.
    for broken in [
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec: { rules: [], colour: red }\n",
        "kind: HTTPRoute\nmetadata: { name: [oops\n",
    ] {
        assert!(
            compile_documents(&docs(&[("x.yaml", broken), ("l7.yaml", &l7)]), None).is_err(),
            "{broken}"
        );
    }
    // An L7 object that fails its own schema is left out on its own.
    let s = snapshot(&[
        ("x.yaml", &r.replace("rules:", "rulez:")),
        ("l7.yaml", &all(&[GATEWAY, BACKENDS])),
    ]);
    assert_eq!(left_out(&s), ["HTTPRoute/r"]);
}
