//! The parents of a route: which listeners of the Gateways it names it attaches to, or the
//! Gateway API's reason it does not (apart from `route.rs`, which checks the rest of a route).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use tollgate_model::gateway::GATEWAY_API_GROUP;
use tollgate_model::route::ParentReference;

use super::gateway::{GatewayInfo, ListenerRef, Namespaces, UNSERVED};
use super::status::{reason, ParentRef};
use super::table::HostPattern;

/// The parent a route names, defaults filled in.
pub(super) fn parent_ref(ns: &str, p: &ParentReference) -> ParentRef {
    ParentRef {
        group: p
            .group
            .clone()
            .unwrap_or_else(|| GATEWAY_API_GROUP.to_owned()),
        kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
        namespace: p.namespace.clone().unwrap_or_else(|| ns.to_owned()),
        name: p.name.clone(),
        section_name: p.section_name.clone(),
        port: p.port,
    }
}

/// Attaches a route to the listeners of one parent (adding them to `attachments`; a listener
/// not served for references that do not resolve, to `unserved` as (`namespace/gateway`,
/// listener), for its count), or says why not: (field under the parentRef, Gateway API
/// reason, message).
#[allow(clippy::too_many_arguments)]
pub(super) fn parent(
    ns: &str,
    route_kind: &'static str,
    p: &ParentReference,
    gateways: &HashMap<(String, String), GatewayInfo>,
    namespaces: &Namespaces,
    hostnames: &[HostPattern],
    attachments: &mut BTreeMap<usize, Vec<HostPattern>>,
    unserved: &mut BTreeSet<(String, String)>,
) -> Result<(), (&'static str, &'static str, String)> {
    let group = p.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
    let kind = p.kind.as_deref().unwrap_or("Gateway");
    if group != GATEWAY_API_GROUP || kind != "Gateway" {
        return Err((
            "",
            reason::NO_MATCHING_PARENT,
            format!("{group}/{kind}: a route attaches to a {GATEWAY_API_GROUP} Gateway"),
        ));
    }
    let gw_ns = p.namespace.as_deref().unwrap_or(ns);
    let Some(gw) = gateways.get(&(gw_ns.to_owned(), p.name.clone())) else {
        return Err((
            ".name",
            reason::NO_MATCHING_PARENT,
            format!("no (valid) Gateway {gw_ns}/{} in this revision", p.name),
        ));
    };
    let mut candidates: Vec<&ListenerRef> = gw.listeners.iter().chain(&gw.unserved).collect();
    if let Some(section) = &p.section_name {
        candidates.retain(|l| &l.name == section);
        if candidates.is_empty() {
            return Err((
                ".sectionName",
                reason::NO_MATCHING_PARENT,
                format!(
                    "Gateway {gw_ns}/{} has no (valid) listener \"{section}\"",
                    p.name
                ),
            ));
        }
    }
    if let Some(want) = p.port {
        candidates.retain(|l| i64::from(l.port) == want);
        if candidates.is_empty() {
            return Err((
                ".port",
                reason::NO_MATCHING_PARENT,
                format!(
                    "Gateway {gw_ns}/{} has no such listener on port {want}",
                    p.name
                ),
            ));
        }
    }
    // The Gateway API's reason for a listener whose allowedRoutes.kinds leave the route's
    // kind out is NotAllowedByListeners, as for namespaces.
    candidates.retain(|l| l.kinds.contains(&route_kind));
    if candidates.is_empty() {
        return Err((
            "",
            reason::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "the listeners of Gateway {gw_ns}/{} do not accept {route_kind}s (allowedRoutes.kinds)",
                p.name
            ),
        ));
    }
    let allowed: Vec<&ListenerRef> = candidates
        .into_iter()
        .filter(|l| l.allowed.admits(&gw.namespace, ns, namespaces))
        .collect();
    if allowed.is_empty() {
        return Err((
            "",
            reason::NOT_ALLOWED_BY_LISTENERS,
            format!("the listeners of Gateway {gw_ns}/{} do not accept routes from namespace {ns} (allowedRoutes.namespaces: from Same is the Gateway's namespace, {}; from Selector, the namespaces whose labels match)", p.name, gw.namespace),
        ));
    }
    let mut attached_here = false;
    for l in allowed {
        let effective: Vec<HostPattern> = if hostnames.is_empty() {
            vec![l.hostname.clone()]
        } else {
            hostnames
                .iter()
                .filter_map(|h| l.hostname.intersect(h))
                .collect()
        };
        if !effective.is_empty() && l.index == UNSERVED {
            attached_here = true;
            unserved.insert((format!("{gw_ns}/{}", p.name), l.name.clone()));
        } else if !effective.is_empty() {
            attached_here = true;
            let set = attachments.entry(l.index).or_default();
            for h in effective {
                if !set.contains(&h) {
                    set.push(h);
                }
            }
        }
    }
    if attached_here {
        Ok(())
    } else {
        Err((
            "",
            reason::NO_MATCHING_LISTENER_HOSTNAME,
            format!("none of the route's hostnames is served by the listeners of Gateway {gw_ns}/{} it names", p.name),
        ))
    }
}
