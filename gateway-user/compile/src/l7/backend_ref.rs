//! One backendRef of an HTTPRoute rule: its own fields, then what it names: a `Backend`
//! (`tollgate.dev`) of the revision, or a core `Service` of the cluster ([`super::services`]).
use std::collections::HashMap;

use tollgate_model::route::HTTPBackendRef;
use tollgate_model::Checker;

use tollgate_model::gateway::GATEWAY_API_GROUP;

use super::classes::{Grants, Referrer};
use super::limits::MAX_WEIGHT;
use super::services::Services;
use super::status::reason;
use super::table::WeightedBackend;

/// Group of Tollgate's own kinds.
const TOLLGATE_GROUP: &str = tollgate_model::GROUP;

/// What the backendRefs of a revision can name.
pub(super) struct Backends<'a> {
    /// The `Backend` objects served, by (namespace, name): index into the route table's
    /// backends.
    pub(super) objects: HashMap<(String, String), usize>,
    /// The cluster's Services (Kubernetes mode), and the backends made of them.
    pub(super) services: Services<'a>,
    /// Where the Service backends start in the route table's backends: after every `Backend`
    /// object.
    pub(super) base: usize,
}

/// What a backendRef came to.
pub(super) enum BackendRef {
    /// A Backend of the revision, or a Service port.
    Resolved(WeightedBackend),
    /// Valid in itself, but it names nothing this revision serves: (reason, field, message,
    /// weight).
    Unresolved(&'static str, String, String, u32),
    /// Invalid in itself (recorded in the checker): the rule is dropped.
    Invalid,
}

/// Checks one backendRef: its own fields strictly, then whether it names a Backend or a
/// Service of the route's namespace, or of another one whose ReferenceGrants allow it.
pub(super) fn backend_ref(
    c: &mut Checker<'_, '_>,
    at: &str,
    ns: &str,
    b: &HTTPBackendRef,
    backends: &mut Backends<'_>,
    grants: &Grants<'_>,
) -> BackendRef {
    let before = c.mark();
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let is_backend = (group, kind) == (TOLLGATE_GROUP, "Backend");
    let is_service = (group, kind) == ("", "Service");
    if b.port.is_some() && is_backend {
        c.error(
            format!("{at}.port"),
            "a Backend's endpoints carry their own ports; remove port",
        );
    }
    // The Gateway API: "Port is required when the referent is a Kubernetes Service" (its CRD
    // refuses such a route).
    let service_port = match (is_service, b.port) {
        (true, None) => {
            c.error(
                format!("{at}.port"),
                "missing: a backendRef to a Service must name the Service's port",
            );
            None
        }
        (true, Some(p)) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                c.error(
                    format!("{at}.port"),
                    format!("port {p} is out of range 1-65535"),
                );
                None
            }
        },
        (false, _) => None,
    };
    if b.filters.is_some() {
        c.error(
            format!("{at}.filters"),
            "per-backend filters are not supported yet; put the filters on the rule",
        );
    }
    let weight = match b.weight {
        None => 1,
        Some(w) if (0..=MAX_WEIGHT).contains(&w) => w as u32,
        Some(w) => {
            c.error(
                format!("{at}.weight"),
                format!("{w} is out of range 0-{MAX_WEIGHT}"),
            );
            0
        }
    };
    if !c.clean_since(before) {
        return BackendRef::Invalid;
    }
    if !is_backend && !is_service {
        return BackendRef::Unresolved(
            reason::INVALID_KIND,
            at.to_owned(),
            format!("{group}/{kind}: expected group tollgate.dev, kind Backend, or a core Service"),
            weight,
        );
    }
    // Another namespace needs a ReferenceGrant there (Gateway API `RefNotPermitted`).
    let target_ns = b.namespace.as_deref().unwrap_or(ns);
    let from = Referrer {
        group: GATEWAY_API_GROUP,
        kind: "HTTPRoute",
        namespace: ns,
    };
    if !grants.permits(&from, group, kind, target_ns, &b.name) {
        return BackendRef::Unresolved(
            reason::REF_NOT_PERMITTED,
            format!("{at}.namespace"),
            format!("\"{target_ns}\": no ReferenceGrant in namespace {target_ns} lets HTTPRoutes of namespace {ns} refer to {kind} {}", b.name),
            weight,
        );
    }
    if let Some(port) = service_port {
        return match backends.services.resolve(target_ns, &b.name, port) {
            Ok(index) => BackendRef::Resolved(WeightedBackend {
                backend: backends.base + index,
                weight,
            }),
            Err((why, at_port, message)) => BackendRef::Unresolved(
                why,
                format!("{at}.{}", if at_port { "port" } else { "name" }),
                message,
                weight,
            ),
        };
    }
    match backends
        .objects
        .get(&(target_ns.to_owned(), b.name.clone()))
    {
        Some(&backend) => BackendRef::Resolved(WeightedBackend { backend, weight }),
        None => BackendRef::Unresolved(
            reason::BACKEND_NOT_FOUND,
            format!("{at}.name"),
            format!("no (valid) Backend {target_ns}/{} in this revision", b.name),
            weight,
        ),
    }
}
