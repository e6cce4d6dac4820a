//! The L7 half of the compiler: `Gateway`, `HTTPRoute`, `Backend`, `RateLimitPolicy` and `AuthPolicy` objects
//! -> one immutable [`RouteTable`] (each rule carries the rate limits of its route). Every value is checked and every problem of the revision is reported with
//! its file, object and field, as for `L4Policy`; a revision with any problem is refused whole.
//!
//! What is refused here (besides malformed values): references to Gateways, listeners or
//! Backends the revision does not hold; two listeners on one port with the same hostname; a
//! route that ends up attached to no listener (no listener allows its namespace, or its
//! hostnames meet none of the listeners'); regular expressions that do not compile; path values
//! that requests could never equal once normalised; weights out of range; filters used twice or
//! on the wrong match type; a port with both HTTP and HTTPS listeners; features that are not
//! built yet (Services, cross-namespace references, mirrors), each with a message that says so.
//! The certificate files of HTTPS listeners are read when the revision is applied
//! (`proxy::tls`), not here: compiling is a pure function of the documents.
//!
//! [`compile`] and `validate` (the order kinds are checked in, and what each needs of the
//! others) are here; each kind is checked in its own module: `gateway` (listeners, TLS
//! certificate references, allowedRoutes), `route` (parents, rules, backend references) with
//! `matches` (paths, headers, query parameters, regular expressions) and `filters`, `backend`
//! (endpoints, backend TLS), `auth` (AuthPolicy, JWT providers), `ratelimit` (RateLimitPolicy,
//! banOnAbuse), `traffic` (BackendTrafficPolicy), `targets` (the targetRefs of every policy);
//! their limits and defaults are in `limits`, re-exported here. [`table`] is what they build.
mod auth;
mod backend;
mod filters;
mod gateway;
pub mod jwks;
mod limits;
mod matches;
mod ratelimit;
pub mod reference;
mod route;
pub mod table;
mod targets;
mod traffic;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tollgate_model::ratelimit::RateLimitMode;
use tollgate_model::BanKind;
use tollgate_model::{Checker, PolicyError, PolicyErrors};
use tollgate_model::{Located, Object};

use auth::auth_policy;
use backend::backend;
use gateway::{gateway, GatewayInfo};
pub use limits::*;
use ratelimit::rate_limit_policy;
use route::route;
pub use table::RouteTable;
use table::{HostPattern, L7Policy, RouteLimits};
pub use tollgate_model::units::parse_duration;
use traffic::traffic_policy;

/// Request headers the proxy owns: filters may not touch them.
const PROXY_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-tollgate-consumer",
];
/// Response headers the proxy owns.
const PROXY_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Compiles every Gateway, HTTPRoute, Backend and RateLimitPolicy of a revision (other kinds
/// are ignored).
pub fn compile(objects: &[Located<Object>]) -> Result<RouteTable, PolicyErrors> {
    let mut errors = Vec::new();
    let policy = validate(objects, &mut errors);
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let first_route = objects
        .iter()
        .find(|o| matches!(o.value, Object::HTTPRoute(_)));
    RouteTable::build(policy).map_err(|e| {
        let (file, object) = first_route.map_or(("", ""), |o| (o.file.as_str(), o.object.as_str()));
        PolicyErrors(vec![PolicyError::new(
            file,
            object,
            "spec.rules",
            format!("the regular expressions of this revision do not fit together: {e}"),
        )])
    })
}

/// Checks every L7 object of a revision, in the order their references need (Backends and
/// Gateways, then the policies, then the routes that use them all); records every problem in
/// `errors` and returns what was valid.
fn validate(objects: &[Located<Object>], errors: &mut Vec<PolicyError>) -> L7Policy {
    let mut policy = L7Policy::default();

    // Names are unique per kind and namespace.
    let mut seen: HashMap<(&str, &str, &str), &Located<Object>> = HashMap::new();
    for o in objects {
        let Some(ns) = o.value.namespace() else {
            continue;
        };
        let key = (o.value.kind(), ns, o.value.name());
        if let Some(first) = seen.get(&key) {
            Checker::of(o, errors).error(
                "metadata.name",
                format!(
                    "{} {ns}/{} is defined twice (also in {} as {})",
                    key.0, key.2, first.file, first.object
                ),
            );
        } else {
            seen.insert(key, o);
        }
    }

    // Backends.
    let mut backends: HashMap<(String, String), usize> = HashMap::new();
    for o in objects {
        if let Object::Backend(b) = &o.value {
            let ns = o.value.namespace().unwrap_or_default().to_owned();
            let name = o.value.name().to_owned();
            if backends.contains_key(&(ns.clone(), name.clone())) {
                continue; // a duplicate, reported above
            }
            let mut c = Checker::of(o, errors);
            if let Some(def) = backend(&mut c, &format!("{ns}/{name}"), b) {
                backends.entry((ns, name)).or_insert_with(|| {
                    policy.backends.push(def);
                    policy.backends.len() - 1
                });
            }
        }
    }

    // Gateways and their listeners.
    let mut gateways: HashMap<(String, String), GatewayInfo> = HashMap::new();
    let mut taken: BTreeMap<(u16, HostPattern), (String, String)> = BTreeMap::new();
    // Per port: whether it speaks TLS, and the first listener that said so.
    let mut schemes: BTreeMap<u16, (bool, String, String)> = BTreeMap::new();
    for o in objects {
        if let Object::Gateway(g) = &o.value {
            let ns = o.value.namespace().unwrap_or_default().to_owned();
            let name = o.value.name().to_owned();
            if gateways.contains_key(&(ns.clone(), name.clone())) {
                continue; // a duplicate, reported above
            }
            let mut c = Checker::of(o, errors);
            let info = gateway(&mut c, &ns, &name, g, &mut policy, &mut taken, &mut schemes);
            gateways.entry((ns, name)).or_insert(info);
        }
    }

    // RateLimitPolicies (by namespace/name, so that a route's limits have one order).
    let route_names: HashSet<(&str, &str)> = objects
        .iter()
        .filter(|o| matches!(o.value, Object::HTTPRoute(_)))
        .map(|o| (o.value.namespace().unwrap_or_default(), o.value.name()))
        .collect();
    // AuthPolicies (by namespace/name): at most one per route.
    let mut auth_policies: Vec<&Located<Object>> = objects
        .iter()
        .filter(|o| matches!(o.value, Object::AuthPolicy(_)))
        .collect();
    auth_policies.sort_by_key(|o| (o.value.namespace(), o.value.name()));
    auth_policies.dedup_by_key(|o| (o.value.namespace(), o.value.name())); // duplicates: reported above
    let mut route_auth: HashMap<(String, String), usize> = HashMap::new();
    for o in auth_policies {
        let Object::AuthPolicy(p) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let mut c = Checker::of(o, errors);
        let Some((targets, def, ban)) = auth_policy(&mut c, ns, o.value.name(), p, &route_names)
        else {
            continue;
        };
        let index = policy.auth.len();
        let mut ok = true;
        for (i, t) in targets.iter().enumerate() {
            if let Some(&other) = route_auth.get(&(ns.to_owned(), t.clone())) {
                c.error(
                    format!("spec.targetRefs[{i}].name"),
                    format!(
                        "HTTPRoute {ns}/{t} already has AuthPolicy {}: a route has at most one",
                        policy.auth[other].policy
                    ),
                );
                ok = false;
            }
        }
        if ok {
            for t in targets {
                route_auth.insert((ns.to_owned(), t), index);
            }
            if let Some(ban) = ban {
                policy.bans.insert((BanKind::Auth, def.policy.clone()), ban);
            }
            policy.auth.push(def);
        }
    }

    let mut limit_policies: Vec<&Located<Object>> = objects
        .iter()
        .filter(|o| matches!(o.value, Object::RateLimitPolicy(_)))
        .collect();
    limit_policies.sort_by_key(|o| (o.value.namespace(), o.value.name()));
    limit_policies.dedup_by_key(|o| (o.value.namespace(), o.value.name())); // duplicates: reported above
    let mut route_limits: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for o in limit_policies {
        let Object::RateLimitPolicy(p) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let mut c = Checker::of(o, errors);
        if let Some((targets, defs, ban)) =
            rate_limit_policy(&mut c, ns, o.value.name(), p, &route_names, &route_auth)
        {
            // Shadow limits refuse nothing, so they never ban.
            if let (Some(ban), false) = (ban, p.spec.mode == RateLimitMode::Shadow) {
                let label: Arc<str> = format!("{ns}/{}", o.value.name()).into();
                policy.bans.insert((BanKind::Ratelimit, label), ban);
            }
            let first = policy.rate_limits.len();
            policy.rate_limits.extend(defs);
            let indexes: Vec<usize> = (first..policy.rate_limits.len()).collect();
            for t in targets {
                route_limits
                    .entry((ns.to_owned(), t))
                    .or_default()
                    .extend(&indexes);
            }
        }
    }

    // BackendTrafficPolicies: at most one per route.
    let mut traffic_policies: Vec<&Located<Object>> = objects
        .iter()
        .filter(|o| matches!(o.value, Object::BackendTrafficPolicy(_)))
        .collect();
    traffic_policies.sort_by_key(|o| (o.value.namespace(), o.value.name()));
    traffic_policies.dedup_by_key(|o| (o.value.namespace(), o.value.name())); // duplicates: reported above
    let mut route_traffic: HashMap<(String, String), (String, Option<u64>)> = HashMap::new();
    for o in traffic_policies {
        let Object::BackendTrafficPolicy(p) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let mut c = Checker::of(o, errors);
        let Some((targets, max_body)) = traffic_policy(&mut c, ns, p, &route_names) else {
            continue;
        };
        let mut ok = true;
        for (i, t) in targets.iter().enumerate() {
            if let Some((other, _)) = route_traffic.get(&(ns.to_owned(), t.clone())) {
                c.error(
                    format!("spec.targetRefs[{i}].name"),
                    format!(
                        "HTTPRoute {ns}/{t} already has BackendTrafficPolicy {ns}/{other}: a route has at most one"
                    ),
                );
                ok = false;
            }
        }
        if ok {
            for t in targets {
                route_traffic.insert((ns.to_owned(), t), (o.value.name().to_owned(), max_body));
            }
        }
    }

    // Routes, in Gateway API order: oldest first, then by namespace/name.
    let mut routes: Vec<&Located<Object>> = objects
        .iter()
        .filter(|o| matches!(o.value, Object::HTTPRoute(_)))
        .collect();
    routes.sort_by(|a, b| {
        let ts = |o: &Located<Object>| o.value.creation_timestamp().copied();
        fn label(o: &Located<Object>) -> (Option<&str>, &str) {
            (o.value.namespace(), o.value.name())
        }
        match (ts(a), ts(b)) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => label(a).cmp(&label(b)),
        }
    });
    let mut labels = HashSet::new();
    for o in routes {
        let Object::HTTPRoute(r) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let label = format!("{ns}/{}", o.value.name());
        if !labels.insert(label.clone()) {
            continue; // reported as a duplicate above
        }
        let mut c = Checker::of(o, errors);
        let order = policy.routes.len() as u32;
        let limits = RouteLimits::new(
            route_limits
                .remove(&(ns.to_owned(), o.value.name().to_owned()))
                .unwrap_or_default(),
            &policy.rate_limits,
        );
        let auth = route_auth
            .get(&(ns.to_owned(), o.value.name().to_owned()))
            .copied();
        let max_body = route_traffic
            .get(&(ns.to_owned(), o.value.name().to_owned()))
            .and_then(|(_, m)| *m);
        if let Some(def) = route(
            &mut c, ns, label, order, r, &gateways, &backends, &limits, auth, max_body,
        ) {
            policy.routes.push(def);
        }
    }
    policy
}

/// A port number (listeners, endpoints, redirects): 1-65535.
fn port(c: &mut Checker<'_, '_>, field: &str, value: i64) -> Option<u16> {
    match u16::try_from(value) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            c.error(field, format!("port {value} is out of range 1-65535"));
            None
        }
    }
}
