//! The status of the policies attached to HTTPRoutes (AuthPolicy, RateLimitPolicy,
//! BackendTrafficPolicy): GEP-713 `status.ancestors`. Apart from [`super`] for its length.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tollgate_compile::l7::status as route_status;
use tollgate_compile::l7::Acceptance;

use super::{
    condition, is_ours, left_out, problems_text, Desired, ObjectKey, ObjectView, Plan,
    GATEWAY_GROUP, MAX_ANCESTORS,
};
use crate::CONTROLLER_NAME;

/// A policy attached to HTTPRoutes (GEP-713): one `PolicyAncestorStatus` per Gateway a
/// targeted route is attached to, `Accepted` with the GEP's reasons; a target that does not
/// exist is named as its own ancestor with `Accepted=False, TargetNotFound`, one of another
/// kind with `Invalid`; a route of the cluster attached to none of our Gateways gets no entry.
/// One entry per ancestorRef.
pub(super) fn policy(
    key: &ObjectKey,
    view: &ObjectView,
    acceptance: &Acceptance,
    ours: &BTreeSet<(String, String)>,
    objects: &BTreeMap<ObjectKey, ObjectView>,
) -> Desired {
    let g = view.generation;
    let ns = key.namespace.clone().unwrap_or_default();
    let accepted = match left_out(acceptance, key) {
        Some(o) => {
            let text = problems_text(o);
            // Two policies of one kind on one route: GEP-713's Conflicted.
            let reason = if o
                .problems
                .iter()
                .any(|e| e.message.contains("a route has at most one"))
            {
                "Conflicted"
            } else {
                "Invalid"
            };
            condition(
                "Accepted",
                false,
                reason,
                &format!("left out of the revision: {text}"),
                g,
            )
        }
        None => condition("Accepted", true, "Accepted", "the policy applies", g),
    };
    let mut ancestors: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    // Targets that cannot be judged as routes of ours, with the reason and message of their
    // entry (named as their own ancestor).
    let mut unusable: BTreeMap<(String, String, String), (&str, String)> = BTreeMap::new();
    for t in view.object["spec"]["targetRefs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(group), Some(kind), Some(name)) =
            (t["group"].as_str(), t["kind"].as_str(), t["name"].as_str())
        else {
            continue;
        };
        let route = acceptance.routes.iter().find(|r| {
            group == GATEWAY_GROUP
                && kind == "HTTPRoute"
                && r.kind == "HTTPRoute"
                && r.namespace == ns
                && r.name == name
        });
        match route {
            Some(r) => {
                for p in r.parents.iter().filter(|p| {
                    is_ours(&p.parent_ref, ours)
                        && p.conditions
                            .iter()
                            .any(|c| c.type_ == route_status::ACCEPTED && c.is_true())
                }) {
                    let r = &p.parent_ref;
                    ancestors.insert((
                        r.group.clone(),
                        r.kind.clone(),
                        r.namespace.clone(),
                        r.name.clone(),
                    ));
                }
            }
            // Not a kind policies target: the policy is left out for it, and its entry says
            // so (not "does not exist": it may well exist).
            None if group != GATEWAY_GROUP || kind != "HTTPRoute" => {
                unusable.insert(
                    (group.to_owned(), kind.to_owned(), name.to_owned()),
                    (
                        "Invalid",
                        format!("{group}/{kind}: policies target HTTPRoutes (group {GATEWAY_GROUP}, kind HTTPRoute)"),
                    ),
                );
            }
            // An HTTPRoute of the cluster that is not among the compiled routes is attached to
            // no Gateway of ours: another controller's to report, no entry of ours.
            None if objects.contains_key(&ObjectKey {
                kind: "HTTPRoute".to_owned(),
                namespace: Some(ns.clone()),
                name: name.to_owned(),
            }) => {}
            None => {
                unusable.insert(
                    (group.to_owned(), kind.to_owned(), name.to_owned()),
                    (
                        "TargetNotFound",
                        format!("{kind} {ns}/{name} does not exist"),
                    ),
                );
            }
        }
    }
    let mut entries: Vec<Value> = ancestors
        .into_iter()
        .map(|(group, kind, namespace, name)| {
            json!({
                "ancestorRef": {"group": group, "kind": kind, "namespace": namespace, "name": name},
                "controllerName": CONTROLLER_NAME,
                "conditions": [accepted.clone()],
            })
        })
        .collect();
    for ((group, kind, name), (reason, message)) in unusable {
        let ancestor = json!({"group": group, "kind": kind, "namespace": ns, "name": name});
        // One entry per ancestorRef and controller (GEP-713's map key): a Gateway that is
        // already an ancestor through a route keeps that entry.
        if entries.iter().any(|e| e["ancestorRef"] == ancestor) {
            continue;
        }
        entries.push(json!({
            "ancestorRef": ancestor,
            "controllerName": CONTROLLER_NAME,
            "conditions": [condition("Accepted", false, reason, &message, g)],
        }));
    }
    entries.truncate(MAX_ANCESTORS);
    Desired {
        key: key.clone(),
        plan: Plan::Shared {
            list: "ancestors",
            ref_field: "ancestorRef",
            entries,
        },
    }
}
