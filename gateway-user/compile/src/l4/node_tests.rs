//! `spec.nodeSelector`: which node enforces which L4Policy, through the whole compile stage.
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::snapshot::{compile_documents, Snapshot};
use tollgate_model::cluster::{Cluster, NodeLabels};
use tollgate_model::{Documents, PolicyError, PolicyErrors};

/// A policy named `name` denying TCP port 22 from everywhere, with `selector` (a flow
/// mapping) as its nodeSelector when given.
fn policy(name: &str, selector: Option<&str>) -> String {
    let selector = selector
        .map(|s| format!("  nodeSelector: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: {{ name: {name} }}\nspec:\n{selector}  rules:\n    - {{ name: ssh, action: deny, from: [0.0.0.0/0], protocol: TCP, ports: [\"22\"] }}\n"
    )
}

/// The documents of `policies` as Kubernetes mode reads them, on a node with `labels`
/// (`None`: a directory or Git revision, which knows no node).
fn docs(policies: &[(&str, String)], labels: Option<&[(&str, &str)]>) -> Documents {
    let files: Vec<(String, &str)> = policies
        .iter()
        .map(|(name, text)| (format!("kubernetes:/L4Policy/{name}"), text.as_str()))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(f, t)| (f.as_str(), *t)).collect();
    let mut d = Documents::inline(&files);
    d.cluster = labels.map(|labels| {
        Arc::new(Cluster {
            node: Some(NodeLabels {
                name: "node-a".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            }),
            ..Cluster::default()
        })
    });
    d
}

fn compiled(d: &Documents) -> Snapshot {
    compile_documents(d, None).unwrap_or_else(|e| panic!("refused: {e}"))
}

/// The policies the L4 tables enforce on some interface.
fn enforced(s: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> =
        s.l4.sets
            .iter()
            .flat_map(|set| set.policies.iter().cloned())
            .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_policy_whose_selector_matches_the_node_is_enforced() {
    let d = docs(
        &[
            ("labels", policy("labels", Some("{ matchLabels: { role: edge } }"))),
            (
                "expr",
                policy(
                    "expr",
                    Some("{ matchExpressions: [{ key: zone, operator: In, values: [a, b] }, { key: gpu, operator: DoesNotExist }] }"),
                ),
            ),
            ("everywhere", policy("everywhere", None)),
            ("empty", policy("empty", Some("{}"))),
        ],
        Some(&[("role", "edge"), ("zone", "b")]),
    );
    let s = compiled(&d);
    assert!(s.not_for_this_node.is_empty(), "{:?}", s.not_for_this_node);
    assert_eq!(enforced(&s), ["empty", "everywhere", "expr", "labels"]);
    assert_eq!(s.policies.len(), 4);
}

#[test]
fn a_policy_whose_selector_does_not_match_the_node_is_left_out() {
    let d = docs(
        &[
            (
                "edge",
                policy("edge", Some("{ matchLabels: { role: edge } }")),
            ),
            (
                "not-b",
                policy(
                    "not-b",
                    Some("{ matchExpressions: [{ key: zone, operator: NotIn, values: [b] }] }"),
                ),
            ),
            ("everywhere", policy("everywhere", None)),
        ],
        Some(&[("role", "worker"), ("zone", "b")]),
    );
    let s = compiled(&d);
    assert_eq!(
        s.not_for_this_node.iter().collect::<Vec<_>>(),
        ["edge", "not-b"]
    );
    assert_eq!(enforced(&s), ["everywhere"]);
    let names: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["everywhere"]);
    // Still counted as content of the revision.
    assert_eq!(s.object_counts["L4Policy"], 3);
}

/// A node whose Node object does not exist has no labels: a matchLabels selector leaves
/// the policy out, a DoesNotExist selector keeps it.
#[test]
fn a_node_without_labels_is_selected_only_by_selectors_that_need_none() {
    let d = docs(
        &[
            (
                "edge",
                policy("edge", Some("{ matchLabels: { role: edge } }")),
            ),
            (
                "no-gpu",
                policy(
                    "no-gpu",
                    Some("{ matchExpressions: [{ key: gpu, operator: DoesNotExist }] }"),
                ),
            ),
        ],
        Some(&[]),
    );
    let s = compiled(&d);
    assert_eq!(s.not_for_this_node.iter().collect::<Vec<_>>(), ["edge"]);
    assert_eq!(enforced(&s), ["no-gpu"]);
}

/// A directory or Git revision knows no node: the selector is ignored and the policy is
/// enforced (docs/policy.md), as before nodeSelector was applied in Kubernetes mode.
#[test]
fn without_the_node_the_selector_is_ignored() {
    let d = docs(
        &[(
            "edge",
            policy("edge", Some("{ matchLabels: { role: edge } }")),
        )],
        None,
    );
    let s = compiled(&d);
    assert!(s.not_for_this_node.is_empty());
    assert_eq!(enforced(&s), ["edge"]);
    // A cluster without the node (an agent without --node-name, the controller) is the same.
    let mut d = d;
    d.cluster = Some(Arc::new(Cluster::default()));
    let s = compiled(&d);
    assert!(s.not_for_this_node.is_empty());
    assert_eq!(enforced(&s), ["edge"]);
}

/// An invalid selector refuses the revision in every mode (as any L4 problem), naming the
/// object and the field.
#[test]
fn an_invalid_selector_refuses_the_revision() {
    let cases = [
        (
            "{ matchLabels: { \"bad key!\": x } }",
            "spec.nodeSelector.matchLabels",
        ),
        (
            "{ matchLabels: { role: \"-bad\" } }",
            "spec.nodeSelector.matchLabels.role",
        ),
        (
            "{ matchExpressions: [{ key: role, operator: In }] }",
            "spec.nodeSelector.matchExpressions[0].values",
        ),
        (
            "{ matchExpressions: [{ key: role, operator: Exists, values: [a] }] }",
            "spec.nodeSelector.matchExpressions[0].values",
        ),
        (
            "{ matchExpressions: [{ key: role, operator: Equals, values: [a] }] }",
            "spec.nodeSelector.matchExpressions[0].operator",
        ),
    ];
    for (selector, field) in cases {
        for labels in [None, Some(&[("role", "edge")][..])] {
            let d = docs(&[("p", policy("p", Some(selector)))], labels);
            let errors: Vec<PolicyError> = match compile_documents(&d, None) {
                Ok(_) => panic!("{selector} accepted"),
                Err(PolicyErrors(e)) => e,
            };
            assert_eq!(errors.len(), 1, "{selector}: {errors:?}");
            assert_eq!(errors[0].location.object, "L4Policy/p", "{selector}");
            assert_eq!(errors[0].location.field, field, "{selector}: {errors:?}");
        }
    }
}
