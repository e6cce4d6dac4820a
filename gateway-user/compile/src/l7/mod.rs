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
//! built yet (Services outside Kubernetes mode, mirrors to them), each with a message that
//! says so; and cross-namespace references no ReferenceGrant allows (`classes`, which also
//! decides which Gateways are this agent's by their GatewayClass). Services resolve only in
//! Kubernetes mode, through the cluster's EndpointSlices that come with the documents
//! (`services`; `backend_ref` checks each backendRef). The certificate files of HTTPS
//! listeners are read when the revision is applied (`proxy::tls`), not here: compiling is a
//! pure function of the documents.
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
mod backend_ref;
mod classes;
mod conflicts;
pub mod cors;
mod filters;
mod gateway;
mod grpc;
pub mod jwks;
mod limits;
mod matches;
mod parents;
mod ratelimit;
pub mod reference;
mod route;
mod route_schema;
mod services;
pub mod status;
pub mod table;
mod targets;
mod traffic;

/// The Gateway API's order of precedence between objects of a kind: the oldest
/// (`creationTimestamp`) first, one with a timestamp before one without, then alphabetically
/// by "{namespace}/{name}" as one string (`a-b/x` comes before `a/y`, as `-` sorts before
/// `/`), then by kind (an HTTPRoute and a GRPCRoute of one name).
fn gateway_api_order(a: &Located<Object>, b: &Located<Object>) -> std::cmp::Ordering {
    let ts = |o: &Located<Object>| o.value.creation_timestamp().copied();
    fn label(o: &Located<Object>) -> impl Iterator<Item = u8> + '_ {
        let ns = o.value.namespace().unwrap_or_default();
        ns.bytes()
            .chain(std::iter::once(b'/'))
            .chain(o.value.name().bytes())
    }
    match (ts(a), ts(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => label(a)
            .cmp(label(b))
            .then_with(|| a.value.kind().cmp(b.value.kind())),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tollgate_model::cluster::{Cluster, Unresolved};
use tollgate_model::ratelimit::RateLimitMode;
use tollgate_model::BanKind;
use tollgate_model::{Checker, LeftOut, PolicyError, PolicyErrors};
use tollgate_model::{Located, Object};

use auth::auth_policy;
use backend::backend;
use backend_ref::Backends;
use classes::{Classes, Grants};
use gateway::{gateway, GatewayInfo, Namespaces};
pub use limits::*;
use ratelimit::rate_limit_policy;
use route::{route, Refs, RoutePolicies};
use services::Services;
pub use status::Acceptance;
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

/// Compiles every L7 object of a revision (other kinds are ignored), strictly: any problem,
/// even one that failure isolation would leave out on its own ([`compile_isolated`]), refuses
/// the whole revision. For tests and tools that want all or nothing.
pub fn compile(objects: &[Located<Object>]) -> Result<RouteTable, PolicyErrors> {
    let (table, acceptance) = compile_isolated(objects, &[])?;
    if acceptance.complete() {
        Ok(table)
    } else {
        Err(PolicyErrors(acceptance.problems()))
    }
}

/// Compiles every L7 object of a revision with the Gateway API's failure isolation: a broken
/// object is left out, an invalid rule is dropped, an unresolved backendRef answers 500, and
/// the rest is served; [`Acceptance`] says what and why. `left_out` are the objects the parse
/// already left out (they count as absent, and the routes a left-out policy targets answer
/// 500). Fails only when the route index cannot be built (the regular expressions of the
/// revision together exceed the size limit): that concerns no single object.
pub fn compile_isolated(
    objects: &[Located<Object>],
    left_out: &[LeftOut],
) -> Result<(RouteTable, Acceptance), PolicyErrors> {
    compile_isolated_in(objects, left_out, None, &[])
}

/// As [`compile_isolated`], with the Services and EndpointSlices of the cluster the revision
/// comes from (Kubernetes mode), which backendRefs to Services resolve through; `None`: no
/// Service resolves. `unresolved`: the Secrets and ConfigMaps the source could not resolve
/// (the cluster's [`Cluster::unresolved`], or a directory's or Git's files under
/// `--tls-secrets-dir` that cannot be read: [`tollgate_model::Documents::unresolved`]); what
/// references them is left out.
pub fn compile_isolated_in(
    objects: &[Located<Object>],
    left_out: &[LeftOut],
    cluster: Option<&Cluster>,
    unresolved: &[Unresolved],
) -> Result<(RouteTable, Acceptance), PolicyErrors> {
    let (policy, acceptance) = validate(objects, left_out, cluster, unresolved);
    let first_route = objects
        .iter()
        .find(|o| matches!(o.value, Object::HTTPRoute(_)));
    let table = RouteTable::build(policy).map_err(|e| {
        let (file, object) = first_route.map_or(("", ""), |o| (o.file.as_str(), o.object.as_str()));
        PolicyErrors(vec![PolicyError::new(
            file,
            object,
            "spec.rules",
            format!("the regular expressions of this revision do not fit together: {e}"),
        )])
    })?;
    Ok((table, acceptance))
}

/// Leaves object `o` out of the revision with its `problems`; `targets` are the routes it
/// guards (for policies).
fn leave_out(
    acceptance: &mut Acceptance,
    o: &Located<Object>,
    problems: Vec<PolicyError>,
    targets: Vec<String>,
) {
    acceptance.left_out.push(LeftOut {
        kind: o.value.kind(),
        namespace: o.value.namespace().unwrap_or_default().to_owned(),
        name: o.value.name().to_owned(),
        file: o.file.clone(),
        object: o.object.clone(),
        problems,
        targets,
        gateway_class: None,
    });
}

/// The references of `o` to Secrets and ConfigMaps that the source could not resolve
/// (`list`: [`Cluster::unresolved`] in Kubernetes mode, the unreadable files of a directory or
/// Git revision), as (referencing field, why). A file that is there but does not parse is not
/// among them: it refuses the revision when it is applied.
fn unresolved(o: &Located<Object>, list: &[Unresolved]) -> Vec<(String, String)> {
    if list.is_empty() {
        return Vec::new();
    }
    tollgate_model::references::references(&o.value)
        .into_iter()
        .filter_map(|r| Unresolved::find(list, &r).map(|why| (r.field.clone(), why.to_owned())))
        .collect()
}

/// The names in a policy's targetRefs (all of them: a route a broken policy may have meant
/// is closed rather than served without it).
fn target_names(refs: &[tollgate_model::ratelimit::PolicyTargetReference]) -> Vec<String> {
    refs.iter().map(|t| t.name.clone()).collect()
}

/// Checks every L7 object of a revision, in the order their references need (Backends and
/// Gateways, then the policies, then the routes that use them all); returns what is served
/// and what was left out.
fn validate(
    objects: &[Located<Object>],
    parsed_left_out: &[LeftOut],
    cluster: Option<&Cluster>,
    unresolved_refs: &[Unresolved],
) -> (L7Policy, Acceptance) {
    let mut policy = L7Policy::default();
    let mut acceptance = Acceptance::default();
    let classes = Classes::of(objects, parsed_left_out, &mut acceptance);
    let grants = Grants::of(objects);
    let namespaces = Namespaces::of(objects);
    // A broken Gateway of another controller's class is not this agent's to report.
    acceptance.left_out.extend(
        parsed_left_out
            .iter()
            .filter(|l| {
                !l.gateway_class
                    .as_deref()
                    .is_some_and(|c| classes.foreign(c))
            })
            .cloned(),
    );
    // The Gateways of other controllers' classes, by (namespace, name): not served, not
    // reported, and route parentRefs to them are not this agent's either.
    let foreign: HashSet<(&str, &str)> = objects
        .iter()
        .filter_map(|o| match &o.value {
            Object::Gateway(g) if classes.foreign(&g.spec.gateway_class_name) => {
                Some((o.value.namespace().unwrap_or_default(), o.value.name()))
            }
            _ => None,
        })
        .collect();

    // Names are unique per kind and namespace: a second object of the same name is left out
    // (the first, in file order, is served).
    let mut seen: HashMap<(&str, &str, &str), &Located<Object>> = HashMap::new();
    let mut duplicates: HashSet<usize> = HashSet::new();
    for (index, o) in objects.iter().enumerate() {
        let Some(ns) = o.value.namespace() else {
            continue;
        };
        let key = (o.value.kind(), ns, o.value.name());
        if let Some(first) = seen.get(&key) {
            let mut errors = Vec::new();
            Checker::of(o, &mut errors).error(
                "metadata.name",
                format!(
                    "{} {ns}/{} is defined twice (also in {} as {}); this copy is left out",
                    key.0, key.2, first.file, first.object
                ),
            );
            let targets = match &o.value {
                Object::AuthPolicy(p) => target_names(&p.spec.target_refs),
                Object::RateLimitPolicy(p) => target_names(&p.spec.target_refs),
                Object::BackendTrafficPolicy(p) => target_names(&p.spec.target_refs),
                _ => Vec::new(),
            };
            leave_out(&mut acceptance, o, errors, targets);
            duplicates.insert(index);
        } else {
            seen.insert(key, o);
        }
    }
    let live = || {
        objects
            .iter()
            .enumerate()
            .filter(|(i, _)| !duplicates.contains(i))
            .map(|(_, o)| o)
    };

    // Backends.
    let mut backends: HashMap<(String, String), usize> = HashMap::new();
    for o in live() {
        if let Object::Backend(b) = &o.value {
            let ns = o.value.namespace().unwrap_or_default().to_owned();
            let name = o.value.name().to_owned();
            let mut errors = Vec::new();
            let mut c = Checker::of(o, &mut errors);
            let def = backend(&mut c, &format!("{ns}/{name}"), b);
            // A CA or client certificate the source could not resolve leaves the Backend out
            // (the routes to it answer 500) rather than connect to it without them.
            for (field, why) in unresolved(o, unresolved_refs) {
                c.error(field, why);
            }
            match def {
                Some(def) if errors.is_empty() => {
                    policy.backends.push(def);
                    backends.insert((ns, name), policy.backends.len() - 1);
                }
                _ => leave_out(&mut acceptance, o, errors, Vec::new()),
            }
        }
    }

    // What backendRefs name: those Backends, and the cluster's Services (whose backends come
    // after them in the table, made as routes name them).
    let mut backends = Backends {
        objects: backends,
        services: Services::new(cluster),
        base: policy.backends.len(),
    };

    // Gateways and their listeners (a broken listener is left out on its own), in Gateway API
    // order (oldest first, then by "{namespace}/{name}"): of two Gateways' listeners that
    // conflict on one port, the older one's is served, as the Gateway API's conflict rule
    // wants ("prefer not to break things that are working"), whatever file either is in.
    let mut gateways: HashMap<(String, String), GatewayInfo> = HashMap::new();
    let mut taken: BTreeMap<(u16, HostPattern), (String, String)> = BTreeMap::new();
    // Per port: whether it speaks TLS, and the first listener that said so.
    let mut schemes: BTreeMap<u16, (bool, String, String)> = BTreeMap::new();
    let mut gateway_objects: Vec<&Located<Object>> = live()
        .filter(|o| matches!(o.value, Object::Gateway(_)))
        .collect();
    gateway_objects.sort_by(|a, b| gateway_api_order(a, b));
    for o in gateway_objects {
        if let Object::Gateway(g) = &o.value {
            let ns = o.value.namespace().unwrap_or_default().to_owned();
            let name = o.value.name().to_owned();
            if foreign.contains(&(ns.as_str(), name.as_str())) {
                continue;
            }
            let mut errors = Vec::new();
            if classes.is_broken(&g.spec.gateway_class_name) {
                Checker::of(o, &mut errors).error(
                    "spec.gatewayClassName",
                    format!(
                        "GatewayClass {} is left out of the revision (see its problems); its Gateways are not served",
                        g.spec.gateway_class_name
                    ),
                );
                leave_out(&mut acceptance, o, errors, Vec::new());
                continue;
            }
            let info = gateway(
                &mut Checker::of(o, &mut errors),
                &mut acceptance,
                &ns,
                &name,
                g,
                &mut policy,
                &mut taken,
                &mut schemes,
                &grants,
                &unresolved(o, unresolved_refs),
            );
            match info {
                Some(info) if errors.is_empty() => {
                    gateways.insert((ns, name), info);
                }
                _ => leave_out(&mut acceptance, o, errors, Vec::new()),
            }
        }
    }

    // Every route of the revision by (namespace, name), those left out at parse included: a
    // policy naming one of them names something that exists.
    let route_names: HashSet<(&str, &str)> = objects
        .iter()
        .filter(|o| matches!(o.value, Object::HTTPRoute(_)))
        .map(|o| (o.value.namespace().unwrap_or_default(), o.value.name()))
        .chain(
            parsed_left_out
                .iter()
                .filter(|o| o.kind == "HTTPRoute")
                .map(|o| (o.namespace.as_str(), o.name.as_str())),
        )
        .collect();

    // AuthPolicies (by namespace/name): at most one per route.
    let mut auth_policies: Vec<&Located<Object>> = live()
        .filter(|o| matches!(o.value, Object::AuthPolicy(_)))
        .collect();
    auth_policies.sort_by_key(|o| (o.value.namespace(), o.value.name()));
    let mut route_auth: HashMap<(String, String), usize> = HashMap::new();
    for o in auth_policies {
        let Object::AuthPolicy(p) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let mut errors = Vec::new();
        let mut c = Checker::of(o, &mut errors);
        let checked = auth_policy(&mut c, ns, o.value.name(), p, &route_names);
        // Credentials the source could not resolve leave the policy out, and the routes it
        // targets answer 500: they are never served without the authentication meant for them.
        for (field, why) in unresolved(o, unresolved_refs) {
            c.error(field, why);
        }
        if let Some((targets, _, _)) = &checked {
            for (i, t) in targets.iter().enumerate() {
                if let Some(&other) = route_auth.get(&(ns.to_owned(), t.clone())) {
                    c.error(
                        format!("spec.targetRefs[{i}].name"),
                        format!(
                            "HTTPRoute {ns}/{t} already has AuthPolicy {}: a route has at most one",
                            policy.auth[other].policy
                        ),
                    );
                }
            }
        }
        match checked {
            Some((targets, def, ban)) if errors.is_empty() => {
                let index = policy.auth.len();
                for t in targets {
                    route_auth.insert((ns.to_owned(), t), index);
                }
                if let Some(ban) = ban {
                    policy.bans.insert((BanKind::Auth, def.policy.clone()), ban);
                }
                policy.auth.push(def);
            }
            _ => leave_out(
                &mut acceptance,
                o,
                errors,
                target_names(&p.spec.target_refs),
            ),
        }
    }

    // RateLimitPolicies (by namespace/name, so that a route's limits have one order).
    let mut limit_policies: Vec<&Located<Object>> = live()
        .filter(|o| matches!(o.value, Object::RateLimitPolicy(_)))
        .collect();
    limit_policies.sort_by_key(|o| (o.value.namespace(), o.value.name()));
    let mut route_limits: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for o in limit_policies {
        let Object::RateLimitPolicy(p) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let mut errors = Vec::new();
        let checked = rate_limit_policy(
            &mut Checker::of(o, &mut errors),
            ns,
            o.value.name(),
            p,
            &route_names,
            &route_auth,
        );
        match checked {
            Some((targets, defs, ban)) if errors.is_empty() => {
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
            _ => leave_out(
                &mut acceptance,
                o,
                errors,
                target_names(&p.spec.target_refs),
            ),
        }
    }

    // BackendTrafficPolicies: at most one per route.
    let mut traffic_policies: Vec<&Located<Object>> = live()
        .filter(|o| matches!(o.value, Object::BackendTrafficPolicy(_)))
        .collect();
    traffic_policies.sort_by_key(|o| (o.value.namespace(), o.value.name()));
    let mut route_traffic: HashMap<(String, String), (String, Option<u64>)> = HashMap::new();
    for o in traffic_policies {
        let Object::BackendTrafficPolicy(p) = &o.value else {
            continue;
        };
        let ns = o.value.namespace().unwrap_or_default();
        let mut errors = Vec::new();
        let mut c = Checker::of(o, &mut errors);
        let checked = traffic_policy(&mut c, ns, p, &route_names);
        if let Some((targets, _)) = &checked {
            for (i, t) in targets.iter().enumerate() {
                if let Some((other, _)) = route_traffic.get(&(ns.to_owned(), t.clone())) {
                    c.error(
                        format!("spec.targetRefs[{i}].name"),
                        format!(
                            "HTTPRoute {ns}/{t} already has BackendTrafficPolicy {ns}/{other}: a route has at most one"
                        ),
                    );
                }
            }
        }
        match checked {
            Some((targets, max_body)) if errors.is_empty() => {
                for t in targets {
                    route_traffic.insert((ns.to_owned(), t), (o.value.name().to_owned(), max_body));
                }
            }
            _ => leave_out(
                &mut acceptance,
                o,
                errors,
                target_names(&p.spec.target_refs),
            ),
        }
    }

    // The routes a left-out policy targets answer 500: serving them without the policy meant
    // to guard them could let through what it refuses.
    let mut guarded: HashMap<(String, String), String> = HashMap::new();
    for o in &acceptance.left_out {
        for t in &o.targets {
            guarded
                .entry((o.namespace.clone(), t.clone()))
                .or_insert_with(|| format!("{} {}/{}", o.kind, o.namespace, o.name));
        }
    }

    // Routes of both kinds, in Gateway API order: oldest first, then alphabetically by
    // "{namespace}/{name}" as one string (the order also decides which of an HTTPRoute and a
    // GRPCRoute that meet on a listener is accepted). One string, not the namespace and then
    // the name: `a-b/x` comes before `a/y`, as `-` sorts before `/`.
    let mut routes: Vec<&Located<Object>> = live()
        .filter(|o| matches!(o.value, Object::HTTPRoute(_) | Object::GRPCRoute(_)))
        .collect();
    routes.sort_by(|a, b| gateway_api_order(a, b));
    let mut kinds_on = conflicts::KindsOnListeners::default();
    for o in routes {
        let ns = o.value.namespace().unwrap_or_default();
        let no_limits = RouteLimits::default();
        let mut errors = Vec::new();
        let order = policy.routes.len() as u32;
        let mut refs = Refs {
            namespaces: &namespaces,
            backends: &mut backends,
            grants: &grants,
            kind: o.value.kind(),
        };
        let outcome = match &o.value {
            Object::HTTPRoute(r) => {
                let Some(r) = classes::without_foreign_parents(r, ns, &foreign) else {
                    continue;
                };
                let key = (ns.to_owned(), o.value.name().to_owned());
                let limits = RouteLimits::new(
                    route_limits.remove(&key).unwrap_or_default(),
                    &policy.rate_limits,
                );
                let policies = RoutePolicies {
                    limits: &limits,
                    auth: route_auth.get(&key).copied(),
                    max_request_body: route_traffic.get(&key).and_then(|(_, m)| *m),
                    left_out: guarded.get(&key).map(String::as_str),
                };
                route(
                    &mut Checker::of(o, &mut errors),
                    ns,
                    format!("{ns}/{}", o.value.name()),
                    order,
                    &r,
                    &|c| route_schema::route_schema(c, &r),
                    &gateways,
                    &mut refs,
                    &policies,
                )
            }
            Object::GRPCRoute(g) => {
                let http = grpc::as_http_route(g);
                let Some(http) = classes::without_foreign_parents(&http, ns, &foreign) else {
                    continue;
                };
                // Tollgate's policies target HTTPRoutes only: none applies to a GRPCRoute.
                let policies = RoutePolicies {
                    limits: &no_limits,
                    auth: None,
                    max_request_body: None,
                    left_out: None,
                };
                let mut outcome = route(
                    &mut Checker::of(o, &mut errors),
                    ns,
                    grpc::label(ns, o.value.name()),
                    order,
                    &http,
                    &|c| {
                        grpc::grpc_schema(c, g);
                        route_schema::route_schema(c, &http);
                    },
                    &gateways,
                    &mut refs,
                    &policies,
                );
                if let Some(def) = &mut outcome.def {
                    grpc::finish(def, g);
                }
                outcome
            }
            _ => continue,
        };
        let mut outcome = outcome;
        if errors.is_empty() {
            kinds_on.settle(o, &policy.listeners, &mut outcome, &mut errors);
        }
        acceptance.routes.push(outcome.status);
        for key in std::mem::take(&mut outcome.unserved) {
            *acceptance.unserved_attached.entry(key).or_default() += 1;
        }
        match outcome.def {
            Some(def) if errors.is_empty() => {
                policy.routes.push(def);
                acceptance.partial.extend(outcome.partial);
            }
            _ => leave_out(&mut acceptance, o, errors, Vec::new()),
        }
    }
    policy.backends.append(&mut backends.services.defs);
    // Kept for the revision's life: no room for routes that will never come.
    policy.routes.shrink_to_fit();
    (policy, acceptance)
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
