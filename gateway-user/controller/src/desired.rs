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

#[path = "desired_tollgate.rs"]
mod tollgate;
use tollgate::{backend, l4_policy};
#[path = "desired_policy.rs"]
mod policy;
use policy::policy;

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
    /// Its kind (`GatewayClass`, `Gateway`, `HTTPRoute`, `GRPCRoute`, `AuthPolicy`,
    /// `RateLimitPolicy`, `BackendTrafficPolicy`, `Backend`, `L4Policy`).
    pub kind: String,
    /// Its namespace (none for the cluster-scoped GatewayClass and L4Policy).
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
    /// The whole status is the controller's (a GatewayClass's, a Gateway's, a Backend's, an
    /// L4Policy's): server-side apply of these top-level fields to `/status`.
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
    /// The status fields the controller owns are given up: a Gateway that left Tollgate's
    /// class keeps no condition of Tollgate's. A server-side apply with no status at all,
    /// which the API server answers by removing the fields only this field manager owned.
    Release,
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
    /// Its `managedFields` hold status fields of the controller's field manager (it wrote
    /// this object's status and still owns some of it).
    pub status_owned: bool,
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
    if let Some(acceptance) = &outcome.acceptance {
        for (key, view) in objects.iter().filter(|(k, _)| k.kind == "GatewayClass") {
            if classes.contains(key.name.as_str()) {
                out.push(gateway_class(key, view, acceptance));
            }
        }
        for (key, view) in objects {
            match key.kind.as_str() {
                "Gateway" => {
                    let name = (key.namespace.clone().unwrap_or_default(), key.name.clone());
                    if ours.contains(&name) {
                        out.push(gateway(key, view, acceptance, outcome, nodes));
                    } else if view.status_owned {
                        // It left Tollgate's class (or the class left this controller): its
                        // status is another implementation's now, nothing of ours may stay.
                        out.push(Desired {
                            key: key.clone(),
                            plan: Plan::Release,
                        });
                    }
                }
                "HTTPRoute" | "GRPCRoute" => {
                    if let Some(d) = route(key, view, acceptance, &ours) {
                        out.push(d);
                    }
                }
                "AuthPolicy" | "RateLimitPolicy" | "BackendTrafficPolicy" => {
                    out.push(policy(key, view, acceptance, &ours, objects))
                }
                "Backend" => out.push(backend(key, view, acceptance)),
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
    // Problems of one listener left out on its own, by index (a listener that is served may
    // have notes: the route kinds it ignores).
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
                    if names.get(i).is_some_and(|n| served.contains(n)) {
                        continue;
                    }
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
            let invalid_parameters = o.problems.iter().any(|e| {
                e.location
                    .field
                    .starts_with("spec.infrastructure.parametersRef")
            });
            let reason = if unsupported_address {
                "UnsupportedAddress"
            } else if invalid_parameters {
                "InvalidParameters"
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
            // The compiler's reasons for this listener's references that do not resolve, by
            // field under the listener.
            let own = format!("spec.listeners[{i}]");
            let refs: Vec<(&str, &str, &str)> = acceptance
                .listener_refs
                .iter()
                .filter(|r| r.file == file && r.listener == i)
                .filter_map(|r| {
                    let tail = r.field.strip_prefix(&own)?;
                    Some((tail, r.reason, r.message.as_str()))
                })
                .collect();
            let conditions = listener_conditions(
                listener_problems.get(&i).map(Vec::as_slice),
                &refs,
                whole.is_some(),
                served.contains(name) && programmed > 0,
                &k_of_n,
                g,
            );
            json!({
                "name": name,
                "supportedKinds": supported_kinds(&view.object["spec"]["listeners"][i]),
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

/// The four conditions of one listener, from its problems (field under the listener, message)
/// and the compiler's reasons for its references that do not resolve (field under the
/// listener, reason, message).
fn listener_conditions(
    problems: Option<&[(String, String)]>,
    refs: &[(&str, &str, &str)],
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
        // Served with references that do not resolve: route kinds it ignores.
        let resolved = match refs.first() {
            Some((_, reason, _)) => {
                let text = refs
                    .iter()
                    .map(|(f, _, m)| format!("spec.listeners[]{f}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                condition("ResolvedRefs", false, reason, &text, g)
            }
            None => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every reference resolved",
                g,
            ),
        };
        return vec![
            condition("Accepted", true, "Accepted", "the listener is valid", g),
            condition("Conflicted", false, "NoConflicts", "no conflicts", g),
            resolved,
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
    // A client CA of `spec.tls.frontend` that cannot be read is reported on each listener it
    // covers, the field named first in the message.
    let client_ca = has(&|f, m| f.is_empty() && m.contains("spec.tls.frontend."));
    // The reason of the first reference that does not resolve: the compiler's when it gives
    // one (RefNotPermitted, InvalidRouteKinds), else told by the field.
    let reason_of = |f: &str, m: &str| -> Option<&str> {
        if let Some((_, reason, _)) = refs.iter().find(|(rf, _, _)| *rf == f) {
            Some(reason)
        } else if f.starts_with(".tls.certificateRefs") {
            Some("InvalidCertificateRef")
        } else if f.is_empty() && m.contains("spec.tls.frontend.") {
            Some("InvalidCACertificateRef")
        } else if f.starts_with(".allowedRoutes.kinds") {
            Some("InvalidRouteKinds")
        } else {
            None
        }
    };
    let refs = problems.iter().find_map(|(f, m)| reason_of(f, m));
    let accepted_reason = if let Some(c) = conflict {
        c
    } else if has(&|f, _| f == ".protocol") {
        "UnsupportedProtocol"
    } else if has(&|f, _| f == ".port") {
        "PortUnavailable"
    } else if client_ca {
        "NoValidCACertificate"
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

/// A GatewayClass that names this controller: `Accepted`, unless the agents leave it out
/// (`InvalidParameters` for a `parametersRef`: Tollgate takes no parameters).
fn gateway_class(key: &ObjectKey, view: &ObjectView, acceptance: &Acceptance) -> Desired {
    // By name only (`left_out` compares namespaces; a class has none).
    let left_out = acceptance
        .left_out
        .iter()
        .find(|o| o.kind == "GatewayClass" && o.name == key.name);
    let accepted = match left_out {
        None => condition(
            "Accepted",
            true,
            "Accepted",
            "Tollgate serves the Gateways of this class",
            view.generation,
        ),
        Some(o) => {
            let parameters = o
                .problems
                .iter()
                .any(|e| e.location.field.starts_with("spec.parametersRef"));
            condition(
                "Accepted",
                false,
                if parameters {
                    "InvalidParameters"
                } else {
                    "Invalid"
                },
                &format!("left out of the revision: {}", problems_text(o)),
                view.generation,
            )
        }
    };
    let mut status = Map::new();
    status.insert("conditions".into(), json!([accepted]));
    Desired {
        key: key.clone(),
        plan: Plan::Owned(status),
    }
}

/// The route kinds a listener takes (`supportedKinds`): for HTTP and HTTPS, those of
/// `allowedRoutes.kinds` that Tollgate serves (HTTPRoute, GRPCRoute; the others make the
/// listener's `ResolvedRefs=False`, `InvalidRouteKinds`), or both when it names none, as the
/// compiler attaches them; for other protocols none.
fn supported_kinds(listener: &Value) -> Value {
    const SERVED: [&str; 2] = ["HTTPRoute", "GRPCRoute"];
    if !matches!(listener["protocol"].as_str(), Some("HTTP" | "HTTPS")) {
        return json!([]);
    }
    let named = listener["allowedRoutes"]["kinds"]
        .as_array()
        .filter(|k| !k.is_empty());
    let kinds: Vec<&str> = match named {
        None => SERVED.to_vec(),
        Some(list) => {
            let mut kinds = Vec::new();
            for k in list {
                let group = k["group"].as_str().unwrap_or(GATEWAY_GROUP);
                if let Some(kind) = SERVED.iter().find(|s| k["kind"] == **s) {
                    if group == GATEWAY_GROUP && !kinds.contains(kind) {
                        kinds.push(*kind);
                    }
                }
            }
            kinds
        }
    };
    Value::Array(
        kinds
            .into_iter()
            .map(|kind| json!({"group": GATEWAY_GROUP, "kind": kind}))
            .collect(),
    )
}

/// An HTTPRoute or a GRPCRoute: one `RouteParentStatus` per parentRef to one of this
/// controller's Gateways, with the compiler's conditions (a parent that is no Gateway of ours,
/// or none at all, is another implementation's to report, or nobody's).
fn route(
    key: &ObjectKey,
    view: &ObjectView,
    acceptance: &Acceptance,
    ours: &BTreeSet<(String, String)>,
) -> Option<Desired> {
    let g = view.generation;
    let status = acceptance.routes.iter().find(|r| {
        r.kind == key.kind
            && Some(r.namespace.as_str()) == key.namespace.as_deref()
            && r.name == key.name
    });
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
        // Not among the compiled routes and not left out: it names none of this controller's
        // Gateways (any more). No entry: one written when it did is removed, as the Gateway
        // API asks ("entries ... populated with their ControllerName are cleaned up when
        // they are no longer necessary"); nothing is written when there is none.
        None if left_out(acceptance, key).is_none() => Vec::new(),
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

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
