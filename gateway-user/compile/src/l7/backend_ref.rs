//! One backendRef of an HTTPRoute rule: its own fields, then what it names: a `Backend`
//! (`tollgate.dev`) of the revision, or a core `Service` of the cluster ([`super::services`]).
use std::collections::HashMap;

use std::sync::Arc;

use tollgate_model::route::{FilterType, HTTPBackendRef, HTTPRouteFilter};
use tollgate_model::Checker;

use tollgate_model::gateway::GATEWAY_API_GROUP;

use super::classes::{Grants, Referrer};
use super::filters::{check_filter_fields, header_modifier, unresolved_extension};
use super::limits::MAX_WEIGHT;
use super::services::Services;
use super::status::reason;
use super::table::{BackendRefFilters, WeightedBackend};
use super::{PROXY_REQUEST_HEADERS, PROXY_RESPONSE_HEADERS};

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
    route_kind: &'static str,
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
    let (filters, extension) = backend_filters(c, at, b.filters.as_deref().unwrap_or_default());
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
    // An ExtensionRef filter is not skipped (the Gateway API): the requests this backendRef
    // would get are answered 500.
    if let Some((field, why)) = extension {
        return BackendRef::Unresolved(reason::INVALID_KIND, field, why, weight);
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
        kind: route_kind,
        namespace: ns,
    };
    if !grants.permits(&from, group, kind, target_ns, &b.name) {
        return BackendRef::Unresolved(
            reason::REF_NOT_PERMITTED,
            format!("{at}.namespace"),
            format!("\"{target_ns}\": no ReferenceGrant in namespace {target_ns} lets {route_kind}s of namespace {ns} refer to {kind} {}", b.name),
            weight,
        );
    }
    if let Some(port) = service_port {
        return match backends.services.resolve(target_ns, &b.name, port) {
            Ok(index) => BackendRef::Resolved(WeightedBackend {
                backend: backends.base + index,
                weight,
                filters,
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
        Some(&backend) => BackendRef::Resolved(WeightedBackend {
            backend,
            weight,
            filters,
        }),
        None => BackendRef::Unresolved(
            reason::BACKEND_NOT_FOUND,
            format!("{at}.name"),
            format!("no (valid) Backend {target_ns}/{} in this revision", b.name),
            weight,
        ),
    }
}

/// Checks the filters of a backendRef: `RequestHeaderModifier` and `ResponseHeaderModifier`,
/// each at most once (the Gateway API's Extended support); they apply to the requests sent to
/// this backend only, after the rule's own. Also returns the first `ExtensionRef` filter
/// (field, why it cannot be resolved).
fn backend_filters(
    c: &mut Checker<'_, '_>,
    at: &str,
    filters: &[HTTPRouteFilter],
) -> (Option<Arc<BackendRefFilters>>, Option<(String, String)>) {
    if filters.is_empty() {
        return (None, None);
    }
    let mut out = BackendRefFilters::default();
    let mut extension = None;
    let mut seen = std::collections::HashSet::new();
    for (i, f) in filters.iter().enumerate() {
        let fat = format!("{at}.filters[{i}]");
        // ExtensionRef "can be used multiple times" (the Gateway API).
        if f.type_ != FilterType::ExtensionRef && !seen.insert(format!("{:?}", f.type_)) {
            c.error(
                format!("{fat}.type"),
                format!(
                    "{:?} is given twice; each filter type may appear once per backendRef",
                    f.type_
                ),
            );
            continue;
        }
        check_filter_fields(c, &fat, f);
        match (&f.type_, &f.request_header_modifier, &f.response_header_modifier) {
            (FilterType::RequestHeaderModifier, Some(h), _) => {
                out.request_headers = header_modifier(
                    c,
                    &format!("{fat}.requestHeaderModifier"),
                    h,
                    PROXY_REQUEST_HEADERS,
                );
            }
            (FilterType::ResponseHeaderModifier, _, Some(h)) => {
                out.response_headers = header_modifier(
                    c,
                    &format!("{fat}.responseHeaderModifier"),
                    h,
                    PROXY_RESPONSE_HEADERS,
                );
            }
            (FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier, _, _) => {}
            (FilterType::ExtensionRef, _, _) => {
                extension.get_or_insert_with(|| {
                    (format!("{fat}.extensionRef"), unresolved_extension(f))
                });
            }
            (other, _, _) => c.error(
                format!("{fat}.type"),
                format!("{other:?} is not supported on a backendRef (RequestHeaderModifier and ResponseHeaderModifier are); put it on the rule"),
            ),
        }
    }
    (Some(Arc::new(out)), extension)
}
