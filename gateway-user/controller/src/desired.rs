//! The status each object should have, computed from what the agents make of the cluster
//! ([`Outcome`]) and what the nodes report ([`NodeView`]). Pure: times and the merge with what
//! an object's status holds now are [`crate::merge`]'s.
//!
//! Conditions are written without `lastTransitionTime` here; `observedGeneration` is the
//! generation of the object the outcome was compiled from.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use tollgate_compile::l7::status::{self as route_status, ParentRef};
use tollgate_compile::l7::Acceptance;

use crate::outcome::{NodeView, Outcome};
use crate::CONTROLLER_NAME;

/// Gateway API group.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// metav1.Condition's `message` limit.
const MAX_MESSAGE: usize = 32768;
/// GEP-713 and Tollgate's CRDs: at most 16 ancestors per policy.
pub const MAX_ANCESTORS: usize = 16;
/// Gateway API: at most 32 parents per route.
pub const MAX_PARENTS: usize = 32;

/// An object whose status the controller writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Its kind (`Gateway`, `HTTPRoute`, `AuthPolicy`, `RateLimitPolicy`,
    /// `BackendTrafficPolicy`, `L4Policy`).
    pub kind: String,
    /// Its namespace (none for L4Policy).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced object.
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind: kind.into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// `Kind/namespace/name`, for logs.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// How one object's status is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The whole status is the controller's (a Gateway's, an L4Policy's): server-side apply of
    /// these top-level fields to `/status`.
    Owned(Map<String, Value>),
    /// The controller's entries of a list other controllers write too (an HTTPRoute's
    /// `status.parents`, a policy's `status.ancestors`), each naming its parent in `ref_field`
    /// and its controller in `controllerName`.
    Shared {
        /// `parents` or `ancestors`.
        list: &'static str,
        /// `parentRef` or `ancestorRef`.
        ref_field: &'static str,
        /// The controller's entries (every other controller's are kept as they are).
        entries: Vec<Value>,
    },
}

/// The status one object should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Which object.
    pub key: ObjectKey,
    /// What to write.
    pub plan: Plan,
}

/// What the controller knows of one object it may write.
#[derive(Debug, Clone)]
pub struct ObjectView {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The object as JSON (spec read for listener names and policy targets).
    pub object: Value,
}

/// One condition (without `lastTransitionTime`).
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    let mut message = message.to_owned();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    let mut c = json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
    });
    if let Some(g) = generation {
        c["observedGeneration"] = g.into();
    }
    c
}

/// Every status to write for `objects`, from `outcome` and `nodes`.
pub fn plans(
    objects: &BTreeMap<ObjectKey, ObjectView>,
    outcome: &Outcome,
    nodes: &[NodeView],
) -> Vec<Desired> {
    let mut out = Vec::new();
    // The GatewayClasses that name this controller, and their Gateways: the only ones whose
    // status (and whose entries in routes' and policies' status) it writes.
    let classes: BTreeSet<&str> = objects
        .iter()
        .filter(|(k, v)| {
            k.kind == "GatewayClass" && v.object["spec"]["controllerName"] == CONTROLLER_NAME
        })
        .map(|(k, _)| k.name.as_str())
        .collect();
    let ours: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|(k, v)| {
            k.kind == "Gateway"
                && v.object["spec"]["gatewayClassName"]
                    .as_str()
                    .is_some_and(|c| classes.contains(c))
        })
        .map(|(k, _)| (k.namespace.clone().unwrap_or_default(), k.name.clone()))
        .collect();
    for (key, view) in objects.iter().filter(|(k, _)| k.kind == "GatewayClass") {
        if classes.contains(key.name.as_str()) {
            out.push(gateway_class(key, view));
        }
    }
    if let Some(acceptance) = &outcome.acceptance {
        for (key, view) in objects {
            match key.kind.as_str() {
                "Gateway" => {
                    let name = (key.namespace.clone().unwrap_or_default(), key.name.clone());
                    if ours.contains(&name) {
                        out.push(gateway(key, view, acceptance, outcome, nodes));
                    }
                }
                "HTTPRoute" => {
                    if let Some(d) = route(key, view, acceptance, &ours) {
                        out.push(d);
                    }
                }
                "AuthPolicy" | "RateLimitPolicy" | "BackendTrafficPolicy" => {
                    out.push(policy(key, view, acceptance, &ours))
                }
                _ => {}
            }
        }
    }
    for (key, view) in objects.iter().filter(|(k, _)| k.kind == "L4Policy") {
        out.push(l4_policy(key, view, outcome, nodes));
    }
    out
}

fn file_of(key: &ObjectKey) -> String {
    match &key.namespace {
        Some(ns) => format!("kubernetes:/{ns}/{}/{}", key.kind, key.name),
        None => format!("kubernetes:/{}/{}", key.kind, key.name),
    }
}

fn left_out<'a>(
    acceptance: &'a Acceptance,
    key: &ObjectKey,
) -> Option<&'a tollgate_model::LeftOut> {
    acceptance.left_out.iter().find(|o| {
        o.kind == key.kind
            && Some(o.namespace.as_str()) == key.namespace.as_deref()
            && o.name == key.name
    })
}

fn problems_text(o: &tollgate_model::LeftOut) -> String {
    o.problems
        .iter()
        .map(|e| {
            if e.location.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.location.field, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A Gateway: `Accepted`, `Programmed` ("k/n nodes programmed"), and per listener
/// `attachedRoutes`, `supportedKinds` and `Accepted` / `Conflicted` / `ResolvedRefs` /
/// `Programmed`.
fn gateway(
    key: &ObjectKey,
    view: &ObjectView,
    acceptance: &Acceptance,
    outcome: &Outcome,
    nodes: &[NodeView],
) -> Desired {
    let g = view.generation;
    let label = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    );
    let file = file_of(key);
    let served = outcome.listeners.get(&label).cloned().unwrap_or_default();
    let programmed = nodes.iter().filter(|n| n.programs(&label, &served)).count();
    let k_of_n = format!("{programmed}/{} nodes programmed", nodes.len());
    let names: Vec<String> = view.object["spec"]["listeners"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| l["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    // Problems of one listener (it is left out on its own), by index.
    let mut listener_problems: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    let whole = left_out(acceptance, key);
    let problems = whole
        .map(|o| o.problems.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(
            acceptance
                .partial
                .iter()
                .filter(|e| e.location.file == file)
                .cloned(),
        );
    for e in problems {
        if let Some(rest) = e.location.field.strip_prefix("spec.listeners[") {
            if let Some((index, tail)) = rest.split_once(']') {
                if let Ok(i) = index.parse::<usize>() {
                    listener_problems
                        .entry(i)
                        .or_default()
                        .push((tail.to_owned(), e.message.clone()));
                }
            }
        }
    }
    let (accepted, programmed_condition) = match whole {
        Some(o) => {
            let unsupported_address = o
                .problems
                .iter()
                .any(|e| e.location.field.starts_with("spec.addresses"));
            let reason = if unsupported_address {
                "UnsupportedAddress"
            } else if !listener_problems.is_empty()
                && !names.is_empty()
                && listener_problems.len() == names.len()
            {
                "ListenersNotValid"
            } else {
                "Invalid"
            };
            let text = format!("left out of the revision: {}", problems_text(o));
            (
                condition("Accepted", false, reason, &text, g),
                condition("Programmed", false, "Invalid", &text, g),
            )
        }
        None => {
            let accepted = if listener_problems.is_empty() {
                condition("Accepted", true, "Accepted", "the Gateway is valid", g)
            } else {
                condition(
                    "Accepted",
                    true,
                    "ListenersNotValid",
                    &format!(
                        "{} of {} listeners are left out (see their conditions)",
                        listener_problems.len(),
                        names.len()
                    ),
                    g,
                )
            };
            let programmed = if programmed > 0 {
                condition("Programmed", true, "Programmed", &k_of_n, g)
            } else {
                condition("Programmed", false, "Pending", &k_of_n, g)
            };
            (accepted, programmed)
        }
    };
    let listeners: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let attached = outcome
                .attached
                .get(&(label.clone(), name.clone()))
                .copied()
                .unwrap_or(0);
            let conditions = listener_conditions(
                listener_problems.get(&i).map(Vec::as_slice),
                whole.is_some(),
                served.contains(name) && programmed > 0,
                &k_of_n,
                g,
            );
            json!({
                "name": name,
                "supportedKinds": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}],
                "attachedRoutes": attached,
                "conditions": conditions,
            })
        })
        .collect();
    let mut status = Map::new();
    status.insert("conditions".into(), json!([accepted, programmed_condition]));
    status.insert("listeners".into(), Value::Array(listeners));
    Desired {
        key: key.clone(),
        plan: Plan::Owned(status),
    }
}

/// The four conditions of one listener, from its problems (field under the listener, message).
fn listener_conditions(
    problems: Option<&[(String, String)]>,
    gateway_left_out: bool,
    programmed: bool,
    k_of_n: &str,
    g: Option<i64>,
) -> Vec<Value> {
    let Some(problems) = problems.filter(|p| !p.is_empty()) else {
        if gateway_left_out {
            let m = "the Gateway is left out of the revision";
            return vec![
                condition("Accepted", false, "Pending", m, g),
                condition("Conflicted", false, "NoConflicts", "no conflicts", g),
                condition(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "every reference resolved",
                    g,
                ),
                condition("Programmed", false, "Invalid", m, g),
            ];
        }
        return vec![
            condition("Accepted", true, "Accepted", "the listener is valid", g),
            condition("Conflicted", false, "NoConflicts", "no conflicts", g),
            condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every reference resolved",
                g,
            ),
            if programmed {
                condition("Programmed", true, "Programmed", k_of_n, g)
            } else {
                condition("Programmed", false, "Pending", k_of_n, g)
            },
        ];
    };
    let text = problems
        .iter()
        .map(|(f, m)| format!("spec.listeners[]{f}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let has = |pred: &dyn Fn(&str, &str) -> bool| problems.iter().any(|(f, m)| pred(f, m));
    let conflict = if has(&|f, m| f == ".protocol" && m.contains("already served")) {
        Some("ProtocolConflict")
    } else if has(&|f, m| f.is_empty() && m.contains("already served")) {
        Some("HostnameConflict")
    } else {
        None
    };
    let refs = if has(&|f, _| f.starts_with(".tls.certificateRefs")) {
        Some("InvalidCertificateRef")
    } else if has(&|f, _| f.starts_with(".allowedRoutes.kinds")) {
        Some("InvalidRouteKinds")
    } else {
        None
    };
    let accepted_reason = if let Some(c) = conflict {
        c
    } else if has(&|f, _| f == ".protocol") {
        "UnsupportedProtocol"
    } else if has(&|f, _| f == ".port") {
        "PortUnavailable"
    } else {
        "UnsupportedValue"
    };
    vec![
        condition("Accepted", false, accepted_reason, &text, g),
        match conflict {
            Some(reason) => condition("Conflicted", true, reason, &text, g),
            None => condition("Conflicted", false, "NoConflicts", "no conflicts", g),
        },
        match refs {
            Some(reason) => condition("ResolvedRefs", false, reason, &text, g),
            None => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every reference resolved",
                g,
            ),
        },
        condition("Programmed", false, "Invalid", &text, g),
    ]
}

fn parent_ref_json(p: &ParentRef) -> Value {
    let mut v = json!({
        "group": p.group,
        "kind": p.kind,
        "namespace": p.namespace,
        "name": p.name,
    });
    if let Some(s) = &p.section_name {
        v["sectionName"] = s.clone().into();
    }
    if let Some(port) = p.port {
        v["port"] = port.into();
    }
    v
}

/// Whether `p` names one of this controller's Gateways.
fn is_ours(p: &ParentRef, ours: &BTreeSet<(String, String)>) -> bool {
    p.group == GATEWAY_GROUP
        && p.kind == "Gateway"
        && ours.contains(&(p.namespace.clone(), p.name.clone()))
}

/// A GatewayClass that names this controller: `Accepted`.
fn gateway_class(key: &ObjectKey, view: &ObjectView) -> Desired {
    let mut status = Map::new();
    status.insert(
        "conditions".into(),
        json!([condition(
            "Accepted",
            true,
            "Accepted",
            "Tollgate serves the Gateways of this class",
            view.generation
        )]),
    );
    Desired {
        key: key.clone(),
        plan: Plan::Owned(status),
    }
}

/// An HTTPRoute: one `RouteParentStatus` per parentRef to one of this controller's Gateways,
/// with the compiler's conditions (a parent that is no Gateway of ours, or none at all, is
/// another implementation's to report, or nobody's).
fn route(
    key: &ObjectKey,
    view: &ObjectView,
    acceptance: &Acceptance,
    ours: &BTreeSet<(String, String)>,
) -> Option<Desired> {
    let g = view.generation;
    let status = acceptance
        .routes
        .iter()
        .find(|r| Some(r.namespace.as_str()) == key.namespace.as_deref() && r.name == key.name);
    let entries: Vec<Value> = match status {
        Some(s) => s
            .parents
            .iter()
            .filter(|p| is_ours(&p.parent_ref, ours))
            .take(MAX_PARENTS)
            .map(|p| {
                json!({
                    "parentRef": parent_ref_json(&p.parent_ref),
                    "controllerName": CONTROLLER_NAME,
                    "conditions": p.conditions.iter().map(|c| condition(c.type_, c.is_true(), c.reason, &c.message, g)).collect::<Vec<_>>(),
                })
            })
            .collect(),
        // Left out before the compiler saw it (it does not parse): every parent is told why.
        None => {
            let o = left_out(acceptance, key)?;
            let text = format!("left out of the revision: {}", problems_text(o));
            let ns = key.namespace.clone().unwrap_or_default();
            view.object["spec"]["parentRefs"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .take(MAX_PARENTS)
                        .filter_map(|p| {
                            let name = p["name"].as_str()?;
                            let r = ParentRef {
                                group: p["group"].as_str().unwrap_or(GATEWAY_GROUP).to_owned(),
                                kind: p["kind"].as_str().unwrap_or("Gateway").to_owned(),
                                namespace: p["namespace"].as_str().unwrap_or(&ns).to_owned(),
                                name: name.to_owned(),
                                section_name: p["sectionName"].as_str().map(str::to_owned),
                                port: p["port"].as_i64(),
                            };
                            if !is_ours(&r, ours) {
                                return None;
                            }
                            Some(json!({
                                "parentRef": parent_ref_json(&r),
                                "controllerName": CONTROLLER_NAME,
                                "conditions": [condition(route_status::ACCEPTED, false, route_status::reason::UNSUPPORTED_VALUE, &text, g)],
                            }))
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    Some(Desired {
        key: key.clone(),
        plan: Plan::Shared {
            list: "parents",
            ref_field: "parentRef",
            entries,
        },
    })
}

/// A policy attached to HTTPRoutes (GEP-713): one `PolicyAncestorStatus` per Gateway a
/// targeted route is attached to, `Accepted` with the GEP's reasons; a target that does not
/// exist is named as its own ancestor with `Accepted=False, TargetNotFound`.
fn policy(
    key: &ObjectKey,
    view: &ObjectView,
    acceptance: &Acceptance,
    ours: &BTreeSet<(String, String)>,
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
    let mut missing: BTreeSet<(String, String, String)> = BTreeSet::new();
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
            group == GATEWAY_GROUP && kind == "HTTPRoute" && r.namespace == ns && r.name == name
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
            None => {
                missing.insert((group.to_owned(), kind.to_owned(), name.to_owned()));
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
    for (group, kind, name) in missing {
        entries.push(json!({
            "ancestorRef": {"group": group, "kind": kind, "namespace": ns, "name": name},
            "controllerName": CONTROLLER_NAME,
            "conditions": [condition("Accepted", false, "TargetNotFound", &format!("{kind} {ns}/{name} does not exist"), g)],
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

/// An L4Policy: `Accepted` (it compiles), the nodes enforcing it (ready, and not refusing it),
/// and `Programmed` ("k/n nodes enforce it").
fn l4_policy(key: &ObjectKey, view: &ObjectView, outcome: &Outcome, nodes: &[NodeView]) -> Desired {
    let g = view.generation;
    let problems = outcome.l4_problems.get(&file_of(key));
    let enforcing = nodes
        .iter()
        .filter(|n| {
            n.ready
                && !n
                    .refused
                    .contains(&("L4Policy".to_owned(), String::new(), key.name.clone()))
        })
        .count();
    let k_of_n = format!("{enforcing}/{} nodes enforce it", nodes.len());
    let accepted = match problems {
        Some(p) => condition("Accepted", false, "Invalid", &p.join("; "), g),
        None => condition("Accepted", true, "Accepted", "the policy compiles", g),
    };
    let programmed = if problems.is_none() && enforcing > 0 && enforcing == nodes.len() {
        condition("Programmed", true, "Programmed", &k_of_n, g)
    } else {
        condition("Programmed", false, "Pending", &k_of_n, g)
    };
    let mut status = Map::new();
    if let Some(g) = g {
        status.insert("observedGeneration".into(), g.into());
    }
    status.insert("nodesEnforcing".into(), (enforcing as i64).into());
    status.insert("conditions".into(), json!([accepted, programmed]));
    Desired {
        key: key.clone(),
        plan: Plan::Owned(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::compile;
    use std::collections::BTreeSet;
    use tollgate_model::{Documents, ParseCache};

    const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: tollgate, generation: 1 }\nspec:\n  controllerName: tollgate.dev/gateway-controller\n";
    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge, namespace: ns, generation: 2 }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - { name: http, port: 8080, protocol: HTTP }\n    - { name: bad, port: 8081, protocol: UDP }\n";
    const BACKEND: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: app, namespace: ns }\nspec:\n  endpoints:\n    - ip: { address: 127.0.0.1, port: 9000 }\n";

    fn route(name: &str, backend: &str, generation: i64) -> String {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name}, namespace: ns, generation: {generation} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {backend} }}]\n")
    }

    fn limit(name: &str, target: &str) -> String {
        format!("apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name}, namespace: ns, generation: 1 }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: {target} }}]\n  limits:\n    - {{ key: clientIP, requests: 3, per: 1m }}\n")
    }

    /// Compiles the YAML objects as the controller does and returns every plan by object.
    fn run(yaml: &[String], nodes: &[NodeView]) -> BTreeMap<String, Desired> {
        let mut files = Vec::new();
        let mut objects = BTreeMap::new();
        for text in yaml {
            let v: Value = serde_saphyr::from_str(text).unwrap();
            let kind = v["kind"].as_str().unwrap().to_owned();
            let ns = v["metadata"]["namespace"].as_str().map(str::to_owned);
            let name = v["metadata"]["name"].as_str().unwrap().to_owned();
            let key = ObjectKey {
                kind,
                namespace: ns,
                name,
            };
            // The agents do not read GatewayClasses: the compiler never sees them.
            if key.kind != "GatewayClass" {
                files.push((file_of(&key), text.clone()));
            }
            objects.insert(
                key,
                ObjectView {
                    generation: v["metadata"]["generation"].as_i64(),
                    object: v,
                },
            );
        }
        let inline: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let outcome = compile(&mut ParseCache::default(), &Documents::inline(&inline));
        plans(&objects, &outcome, nodes)
            .into_iter()
            .map(|d| (d.key.label(), d))
            .collect()
    }

    fn shared(d: &Desired) -> &Vec<Value> {
        match &d.plan {
            Plan::Shared { entries, .. } => entries,
            other => panic!("{other:?}"),
        }
    }

    fn owned(d: &Desired) -> &Map<String, Value> {
        match &d.plan {
            Plan::Owned(fields) => fields,
            other => panic!("{other:?}"),
        }
    }

    fn find<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
        conditions
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} in {conditions}"))
    }

    fn node(name: &str, ready: bool, listeners: &[&str]) -> NodeView {
        NodeView {
            name: name.into(),
            ready,
            listeners: listeners.iter().map(|l| l.to_string()).collect(),
            refused: BTreeSet::new(),
        }
    }

    #[test]
    fn a_route_is_accepted_with_resolved_refs_and_its_generation() {
        let nodes = [node("a", true, &["ns/edge/http"]), node("b", false, &[])];
        let plans = run(
            &[
                CLASS.into(),
                GATEWAY.into(),
                BACKEND.into(),
                route("r", "app", 3),
            ],
            &nodes,
        );
        let parents = shared(&plans["HTTPRoute/ns/r"]);
        assert_eq!(parents.len(), 1);
        let p = &parents[0];
        assert_eq!(p["controllerName"], CONTROLLER_NAME);
        assert_eq!(
            p["parentRef"],
            json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": "ns", "name": "edge"})
        );
        let accepted = find(&p["conditions"], "Accepted");
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&json!("True"), &json!("Accepted"))
        );
        assert_eq!(accepted["observedGeneration"], 3);
        let resolved = find(&p["conditions"], "ResolvedRefs");
        assert_eq!(
            (&resolved["status"], &resolved["reason"]),
            (&json!("True"), &json!("ResolvedRefs"))
        );

        // The Gateway: accepted with one listener left out, programmed on 1 of 2 nodes.
        let gw = owned(&plans["Gateway/ns/edge"]);
        let accepted = find(&gw["conditions"], "Accepted");
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&json!("True"), &json!("ListenersNotValid"))
        );
        let programmed = find(&gw["conditions"], "Programmed");
        assert_eq!(programmed["status"], "True");
        assert_eq!(programmed["message"], "1/2 nodes programmed");
        assert_eq!(programmed["observedGeneration"], 2);
        let http = &gw["listeners"][0];
        assert_eq!(http["name"], "http");
        assert_eq!(http["attachedRoutes"], 1);
        assert_eq!(
            http["supportedKinds"],
            json!([{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}])
        );
        assert_eq!(find(&http["conditions"], "Accepted")["status"], "True");
        let bad = &gw["listeners"][1];
        assert_eq!(bad["attachedRoutes"], 0);
        let bad_accepted = find(&bad["conditions"], "Accepted");
        assert_eq!(
            (&bad_accepted["status"], &bad_accepted["reason"]),
            (&json!("False"), &json!("UnsupportedProtocol"))
        );
        assert_eq!(find(&bad["conditions"], "Programmed")["status"], "False");
    }

    #[test]
    fn a_broken_backend_ref_is_resolved_refs_false() {
        let plans = run(
            &[
                CLASS.into(),
                GATEWAY.into(),
                BACKEND.into(),
                route("r", "missing", 1),
            ],
            &[],
        );
        let p = &shared(&plans["HTTPRoute/ns/r"])[0];
        assert_eq!(find(&p["conditions"], "Accepted")["status"], "True");
        let resolved = find(&p["conditions"], "ResolvedRefs");
        assert_eq!(
            (&resolved["status"], &resolved["reason"]),
            (&json!("False"), &json!("BackendNotFound"))
        );
        assert!(
            resolved["message"].as_str().unwrap().contains("missing"),
            "{resolved}"
        );
        // No node programs the Gateway: Programmed=False, "0/0".
        let gw = owned(&plans["Gateway/ns/edge"]);
        let programmed = find(&gw["conditions"], "Programmed");
        assert_eq!(
            (&programmed["status"], &programmed["message"]),
            (&json!("False"), &json!("0/0 nodes programmed"))
        );
    }

    #[test]
    fn a_policy_names_the_gateways_of_its_routes_as_ancestors() {
        let plans = run(
            &[
                CLASS.into(),
                GATEWAY.into(),
                BACKEND.into(),
                route("r", "app", 1),
                limit("ok", "r"),
                limit("lost", "nope"),
            ],
            &[],
        );
        let ok = shared(&plans["RateLimitPolicy/ns/ok"]);
        assert_eq!(ok.len(), 1);
        assert_eq!(
            ok[0]["ancestorRef"],
            json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": "ns", "name": "edge"})
        );
        assert_eq!(ok[0]["controllerName"], CONTROLLER_NAME);
        let accepted = find(&ok[0]["conditions"], "Accepted");
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&json!("True"), &json!("Accepted"))
        );
        assert_eq!(accepted["observedGeneration"], 1);
        let lost = shared(&plans["RateLimitPolicy/ns/lost"]);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0]["ancestorRef"]["kind"], "HTTPRoute");
        assert_eq!(lost[0]["ancestorRef"]["name"], "nope");
        assert_eq!(
            find(&lost[0]["conditions"], "Accepted")["reason"],
            "TargetNotFound"
        );
    }

    #[test]
    fn an_l4_policy_counts_the_ready_nodes_that_do_not_refuse_it() {
        let edge = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge, generation: 4 }\nspec:\n  defaultAction: allow\n  rules: []\n".to_owned();
        let mut refusing = node("c", true, &[]);
        refusing
            .refused
            .insert(("L4Policy".into(), String::new(), "edge".into()));
        let nodes = [node("a", true, &[]), node("b", false, &[]), refusing];
        let plans = run(&[edge], &nodes);
        let s = owned(&plans["L4Policy/edge"]);
        assert_eq!(s["observedGeneration"], 4);
        assert_eq!(s["nodesEnforcing"], 1);
        assert_eq!(find(&s["conditions"], "Accepted")["status"], "True");
        let programmed = find(&s["conditions"], "Programmed");
        assert_eq!(
            (&programmed["status"], &programmed["message"]),
            (&json!("False"), &json!("1/3 nodes enforce it"))
        );

        let broken = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge, generation: 5 }\nspec:\n  defaultAction: sometimes\n  rules: []\n".to_owned();
        let plans = run(&[broken], &[]);
        let accepted = find(&owned(&plans["L4Policy/edge"])["conditions"], "Accepted").clone();
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&json!("False"), &json!("Invalid"))
        );
        assert!(
            accepted["message"]
                .as_str()
                .unwrap()
                .contains("defaultAction"),
            "{accepted}"
        );
    }

    #[test]
    fn only_gateways_of_a_class_naming_this_controller_get_status_and_route_entries() {
        let other_class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: other }\nspec:\n  controllerName: example.com/other\n";
        let foreign = GATEWAY
            .replace("name: edge", "name: foreign")
            .replace("gatewayClassName: tollgate", "gatewayClassName: other")
            .replace("port: 8080", "port: 9080")
            .replace("port: 8081", "port: 9081");
        let both = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: both, namespace: ns, generation: 1 }\nspec:\n  parentRefs: [{ name: edge }, { name: foreign }]\n  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]\n";
        let plans = run(
            &[
                CLASS.into(),
                other_class.into(),
                GATEWAY.into(),
                foreign,
                BACKEND.into(),
                both.into(),
                limit("l", "both"),
            ],
            &[],
        );
        assert!(plans.contains_key("Gateway/ns/edge"));
        assert!(
            !plans.contains_key("Gateway/ns/foreign"),
            "{:?}",
            plans.keys()
        );
        assert!(!plans.contains_key("GatewayClass/other"));
        let accepted = find(
            &owned(&plans["GatewayClass/tollgate"])["conditions"],
            "Accepted",
        )
        .clone();
        assert_eq!(
            (&accepted["status"], &accepted["observedGeneration"]),
            (&json!("True"), &json!(1))
        );
        let parents = shared(&plans["HTTPRoute/ns/both"]);
        assert_eq!(parents.len(), 1, "{parents:?}");
        assert_eq!(parents[0]["parentRef"]["name"], "edge");
        let ancestors = shared(&plans["RateLimitPolicy/ns/l"]);
        assert_eq!(ancestors.len(), 1, "{ancestors:?}");
        assert_eq!(ancestors[0]["ancestorRef"]["name"], "edge");
    }
}
