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
pub mod jwks;
pub mod reference;
pub mod table;

#[cfg(test)]
mod proptests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::{Regex, RegexBuilder};

pub use table::RouteTable;
use table::{
    ApiKeyDef, Attachment, AuthDef, BackendCa, BackendDef, BackendTlsDef, BanDef, HeaderMatch,
    HeaderModifier, HostPattern, JwksDef, JwtProviderDef, KeyLocation, L7Policy, LimitKey,
    ListenerDef, ListenerTls, LoadBalancing, MatchDef, PathMatch, PathModifier, QueryMatch,
    RateLimitDef, Redirect, Retry, RouteDef, RouteLimits, Rule, RuleDef, SecretRef, Timeouts,
    TokenLocation, UrlRewrite, ValueMatch, WeightedBackend,
};
use tollgate_model::auth::{AuthPolicy, CertificateField, CredentialRef};
use tollgate_model::backend::{
    Backend, BackendObjectRef, BackendTls, LoadBalancerType, WellKnownCaCertificates,
};
use tollgate_model::gateway::{Gateway, Listener, GATEWAY_API_GROUP};
use tollgate_model::ratelimit::{RateLimitKey, RateLimitMode, RateLimitPolicy};
use tollgate_model::route::{
    FilterType, HTTPBackendRef, HTTPHeaderFilter, HTTPPathModifier, HTTPRoute, HTTPRouteFilter,
    HTTPRouteMatch, HTTPRouteRule, PathMatchType, PathModifierType, ValueMatchType,
};
use tollgate_model::traffic::BackendTrafficPolicy;
use tollgate_model::BanKind;
use tollgate_model::{names, PolicyError, PolicyErrors};
use tollgate_model::{Located, Object};

/// Listeners per Gateway (the Gateway API's limit).
pub const MAX_LISTENERS: usize = 64;
/// Parent references per route (the Gateway API's limit).
pub const MAX_PARENT_REFS: usize = 32;
/// Hostnames per route (the Gateway API's limit).
pub const MAX_HOSTNAMES: usize = 16;
/// Rules per route (the Gateway API's limit).
pub const MAX_RULES: usize = 16;
/// Matches per rule (the Gateway API's limit).
pub const MAX_MATCHES: usize = 64;
/// Header or query parameter matches per match (the Gateway API's limit).
pub const MAX_VALUE_MATCHES: usize = 16;
/// Filters per rule (the Gateway API's limit).
pub const MAX_FILTERS: usize = 16;
/// Backend references per rule (the Gateway API's limit).
pub const MAX_BACKEND_REFS: usize = 16;
/// Highest backend weight (the Gateway API's limit).
pub const MAX_WEIGHT: i64 = 1_000_000;
/// Endpoints per Backend.
pub const MAX_ENDPOINTS: usize = 1024;
/// Longest regular expression accepted.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled size limit of one regular expression (bounds memory and matching time).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Certificate references per listener (the Gateway API's limit).
pub const MAX_CERTIFICATE_REFS: usize = 64;
/// CA certificate references per listener (the Gateway API's limit).
pub const MAX_CA_CERTIFICATE_REFS: usize = 8;
/// Most retries a rule may ask for.
pub const MAX_RETRY_ATTEMPTS: i64 = 10;

/// Target references per RateLimitPolicy.
pub const MAX_TARGET_REFS: usize = 16;
/// Limits per RateLimitPolicy.
pub const MAX_LIMITS: usize = 16;
/// Highest `requests` and `burst` of a rate limit.
pub const MAX_LIMIT_REQUESTS: i64 = 1_000_000_000;
/// Longest `per` of a rate limit.
pub const MAX_LIMIT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Request timeout of a rule that sets none (`timeouts.request`; `0s` turns it off).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries after a failed connection when a rule has no `retry` (another endpoint is tried;
/// nothing was sent, so this is safe for every method).
pub const DEFAULT_CONNECT_RETRIES: u32 = 2;
/// Wait between retries when `retry.backoff` is not set.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Consecutive failures that eject an endpoint when a Backend sets none.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// How long an endpoint stays ejected when a Backend sets none.
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(30);

/// Group of Tollgate's own kinds.
const TOLLGATE_GROUP: &str = tollgate_model::GROUP;

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

/// Where an object is, for messages.
struct At<'a> {
    file: &'a str,
    object: &'a str,
}

struct Checker<'a, 'e> {
    at: At<'a>,
    errors: &'e mut Vec<PolicyError>,
}

impl<'a, 'e> Checker<'a, 'e> {
    /// A checker whose errors name object `o`.
    fn of<T>(o: &'a Located<T>, errors: &'e mut Vec<PolicyError>) -> Self {
        Checker {
            at: At {
                file: &o.file,
                object: &o.object,
            },
            errors,
        }
    }

    fn error(&mut self, field: impl Into<String>, message: impl std::fmt::Display) {
        self.errors.push(PolicyError::new(
            self.at.file,
            self.at.object,
            field,
            message,
        ));
    }

    fn count(&mut self, field: &str, n: usize, max: usize) {
        if n > max {
            self.error(field, format!("{n} entries, more than the limit of {max}"));
        }
    }
}

/// A Gateway's listener, as routes see it.
struct ListenerRef {
    index: usize,
    name: String,
    port: u16,
    hostname: HostPattern,
    all_namespaces: bool,
}

struct GatewayInfo {
    namespace: String,
    listeners: Vec<ListenerRef>,
}

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
            errors.push(PolicyError::new(
                &o.file,
                &o.object,
                "metadata.name",
                format!(
                    "{} {ns}/{} is defined twice (also in {} as {})",
                    key.0, key.2, first.file, first.object
                ),
            ));
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

fn backend(c: &mut Checker<'_, '_>, label: &str, b: &Backend) -> Option<BackendDef> {
    let before = c.errors.len();
    let spec = &b.spec;
    if spec.endpoints.is_empty() {
        c.error(
            "spec.endpoints",
            "empty: a Backend needs at least one endpoint",
        );
    }
    c.count("spec.endpoints", spec.endpoints.len(), MAX_ENDPOINTS);
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in spec.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        let authority = match (&e.ip, &e.fqdn) {
            (Some(ip), None) => {
                let port = port(c, &format!("{at}.ip.port"), ip.port);
                match tollgate_model::net::parse_addr(&ip.address) {
                    Ok(IpAddr::V4(a)) => port.map(|p| format!("{a}:{p}")),
                    Ok(IpAddr::V6(a)) => port.map(|p| format!("[{a}]:{p}")),
                    Err(why) => {
                        c.error(format!("{at}.ip.address"), why);
                        None
                    }
                }
            }
            (None, Some(f)) => {
                let port = port(c, &format!("{at}.fqdn.port"), f.port);
                if let Err(why) = names::hostname(&f.hostname, false) {
                    c.error(
                        format!("{at}.fqdn.hostname"),
                        format!("\"{}\" {why}", f.hostname),
                    );
                    None
                } else {
                    port.map(|p| format!("{}:{p}", f.hostname))
                }
            }
            _ => {
                c.error(&at, "set exactly one of ip or fqdn");
                None
            }
        };
        if let Some(a) = authority {
            if !seen.insert(a.clone()) {
                c.error(&at, format!("endpoint {a} is listed twice"));
            }
            endpoints.push(a);
        }
    }
    let load_balancing = match spec.load_balancer.as_ref().map(|l| l.type_) {
        None | Some(LoadBalancerType::RoundRobin) => LoadBalancing::RoundRobin,
        Some(LoadBalancerType::LeastRequest) => LoadBalancing::LeastRequest,
    };
    let passive = spec.health_check.as_ref().and_then(|h| h.passive.as_ref());
    let consecutive_failures = match passive.and_then(|p| p.consecutive_failures) {
        None => DEFAULT_CONSECUTIVE_FAILURES,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            c.error(
                "spec.healthCheck.passive.consecutiveFailures",
                format!("{n} is out of range 1-1000"),
            );
            DEFAULT_CONSECUTIVE_FAILURES
        }
    };
    let ejection_time = match passive.and_then(|p| p.ejection_time.as_deref()) {
        None => DEFAULT_EJECTION_TIME,
        Some(s) => match parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                c.error(
                    "spec.healthCheck.passive.ejectionTime",
                    "must be more than zero",
                );
                DEFAULT_EJECTION_TIME
            }
            Err(why) => {
                c.error("spec.healthCheck.passive.ejectionTime", why);
                DEFAULT_EJECTION_TIME
            }
        },
    };
    let ns = label.split_once('/').map_or("", |(ns, _)| ns);
    let tls = spec.tls.as_ref().and_then(|t| backend_tls(c, ns, t));
    (c.errors.len() == before).then(|| BackendDef {
        label: label.to_owned(),
        endpoints,
        load_balancing,
        consecutive_failures,
        ejection_time,
        tls,
    })
}

/// Checks a Backend's `spec.tls`.
fn backend_tls(c: &mut Checker<'_, '_>, ns: &str, t: &BackendTls) -> Option<BackendTlsDef> {
    let before = c.errors.len();
    if let Err(why) = names::hostname(&t.hostname, false) {
        c.error("spec.tls.hostname", format!("\"{}\" {why}", t.hostname));
    }
    let check_ref = |c: &mut Checker<'_, '_>, at: &str, r: &BackendObjectRef, kind: &str| {
        let group = r.group.as_deref().unwrap_or("");
        let k = r.kind.as_deref().unwrap_or(kind);
        if !group.is_empty() || k != kind {
            c.error(
                at,
                format!("{group}/{k}: only a core {kind} can be named here"),
            );
        }
        // The name becomes a directory under --tls-secrets-dir: no `..` or `/`.
        if let Err(why) = names::dns_subdomain(&r.name) {
            c.error(format!("{at}.name"), format!("\"{}\" {why}", r.name));
        }
        SecretRef {
            namespace: ns.to_owned(),
            name: r.name.clone(),
        }
    };
    let ca = match (&t.ca_certificate_refs, t.well_known_ca_certificates) {
        (Some(refs), None) if !refs.is_empty() => {
            c.count(
                "spec.tls.caCertificateRefs",
                refs.len(),
                MAX_CA_CERTIFICATE_REFS,
            );
            BackendCa::Refs(
                refs.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        check_ref(
                            c,
                            &format!("spec.tls.caCertificateRefs[{i}]"),
                            r,
                            "ConfigMap",
                        )
                    })
                    .collect(),
            )
        }
        (None, Some(WellKnownCaCertificates::System)) => BackendCa::System,
        (Some(_), Some(_)) => {
            c.error(
                "spec.tls",
                "set exactly one of caCertificateRefs or wellKnownCACertificates",
            );
            BackendCa::System
        }
        _ => {
            c.error(
                "spec.tls.caCertificateRefs",
                "missing: name the ConfigMaps with the CA certificates, or set wellKnownCACertificates: System",
            );
            BackendCa::System
        }
    };
    let client_certificate = t
        .client_certificate_ref
        .as_ref()
        .map(|r| check_ref(c, "spec.tls.clientCertificateRef", r, "Secret"));
    (c.errors.len() == before).then(|| BackendTlsDef {
        hostname: t.hostname.clone(),
        ca,
        client_certificate,
    })
}

fn port(c: &mut Checker<'_, '_>, field: &str, value: i64) -> Option<u16> {
    match u16::try_from(value) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            c.error(field, format!("port {value} is out of range 1-65535"));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn gateway(
    c: &mut Checker<'_, '_>,
    ns: &str,
    name: &str,
    g: &Gateway,
    policy: &mut L7Policy,
    taken: &mut BTreeMap<(u16, HostPattern), (String, String)>,
    schemes: &mut BTreeMap<u16, (bool, String, String)>,
) -> GatewayInfo {
    let spec = &g.spec;
    let mut info = GatewayInfo {
        namespace: ns.to_owned(),
        listeners: Vec::new(),
    };
    if spec.gateway_class_name.is_empty() {
        c.error("spec.gatewayClassName", "empty; name the GatewayClass");
    }
    if spec.addresses.is_some() {
        c.error(
            "spec.addresses",
            "not supported yet: the agent listens on its --gateway-address",
        );
    }
    if spec.listeners.is_empty() {
        c.error(
            "spec.listeners",
            "empty: a Gateway needs at least one listener",
        );
    }
    c.count("spec.listeners", spec.listeners.len(), MAX_LISTENERS);
    let mut names = HashSet::new();
    // Listener errors are collected per listener; a listener with errors is left out, so that
    // routes naming it are not reported a second time as "unknown listener".
    for (i, l) in spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let before = c.errors.len();
        if let Err(why) = names::section_name(&l.name) {
            c.error(format!("{at}.name"), format!("\"{}\" {why}", l.name));
        } else if !names.insert(l.name.as_str()) {
            c.error(
                format!("{at}.name"),
                format!("duplicate listener name \"{}\"", l.name),
            );
        }
        let port = port(c, &format!("{at}.port"), l.port);
        let hostname = match &l.hostname {
            None => HostPattern::Any,
            Some(h) => match names::hostname(h, true) {
                Ok(()) => HostPattern::parse(h),
                Err(why) => {
                    c.error(format!("{at}.hostname"), format!("\"{h}\" {why}"));
                    HostPattern::Any
                }
            },
        };
        let tls = listener_protocol(c, &at, ns, l);
        let all_namespaces = allowed_routes(c, &at, l);
        if c.errors.len() != before {
            continue;
        }
        let Some(port) = port else { continue };
        let gw = format!("{ns}/{name}");
        if let Some((other_gw, other_listener)) = taken.get(&(port, hostname.clone())) {
            c.error(
                &at,
                format!(
                    "port {port} with hostname \"{}\" is already served by listener \"{other_listener}\" of Gateway {other_gw}; listeners on one port need distinct hostnames",
                    hostname.to_yaml()
                ),
            );
            continue;
        }
        // A port speaks TLS or it does not: the first bytes of a connection cannot tell which
        // listener it is for.
        if let Some((other_tls, other_gw, other_listener)) = schemes.get(&port) {
            if *other_tls != tls.is_some() {
                let name = |t: bool| if t { "HTTPS" } else { "HTTP" };
                c.error(
                    format!("{at}.protocol"),
                    format!(
                        "port {port} is already served as {} by listener \"{other_listener}\" of Gateway {other_gw}; one port cannot mix HTTP and HTTPS listeners",
                        name(*other_tls)
                    ),
                );
                continue;
            }
        } else {
            schemes.insert(port, (tls.is_some(), gw.clone(), l.name.clone()));
        }
        taken.insert((port, hostname.clone()), (gw.clone(), l.name.clone()));
        policy.listeners.push(ListenerDef {
            gateway: gw,
            name: l.name.clone(),
            port,
            hostname: hostname.clone(),
            tls,
        });
        info.listeners.push(ListenerRef {
            index: policy.listeners.len() - 1,
            name: l.name.clone(),
            port,
            hostname,
            all_namespaces,
        });
    }
    info
}

/// Checks the protocol and TLS settings of a listener; returns its TLS settings (`None` for
/// HTTP, and for HTTPS listeners with errors).
fn listener_protocol(
    c: &mut Checker<'_, '_>,
    at: &str,
    gateway_ns: &str,
    l: &Listener,
) -> Option<ListenerTls> {
    match l.protocol.as_str() {
        "HTTP" => {
            if l.tls.is_some() {
                c.error(
                    format!("{at}.tls"),
                    "tls is only for HTTPS listeners; this one is HTTP",
                );
            }
            None
        }
        "HTTPS" => {
            let Some(tls) = &l.tls else {
                c.error(
                    format!("{at}.tls"),
                    "missing: an HTTPS listener needs tls.certificateRefs",
                );
                return None;
            };
            let before = c.errors.len();
            match tls.mode.as_deref() {
                None | Some("Terminate") => {}
                Some(other) => c.error(
                    format!("{at}.tls.mode"),
                    format!("\"{other}\": only Terminate is supported"),
                ),
            }
            if let Some(options) = &tls.options {
                if let Some(key) = options.keys().next() {
                    c.error(
                        format!("{at}.tls.options.{key}"),
                        "unknown option: Tollgate reads no TLS options",
                    );
                }
            }
            let mut certificates = Vec::new();
            match &tls.certificate_refs {
                None => c.error(
                    format!("{at}.tls.certificateRefs"),
                    "missing: name the Secret with the certificate and key",
                ),
                Some(refs) if refs.is_empty() => c.error(
                    format!("{at}.tls.certificateRefs"),
                    "empty: name the Secret with the certificate and key",
                ),
                Some(refs) => {
                    c.count(
                        &format!("{at}.tls.certificateRefs"),
                        refs.len(),
                        MAX_CERTIFICATE_REFS,
                    );
                    for (j, r) in refs.iter().enumerate() {
                        let f = format!("{at}.tls.certificateRefs[{j}]");
                        let group = r.group.as_deref().unwrap_or("");
                        let kind = r.kind.as_deref().unwrap_or("Secret");
                        if !group.is_empty() || kind != "Secret" {
                            c.error(
                                &f,
                                format!("{group}/{kind}: only core Secrets can hold certificates"),
                            );
                        }
                        // The names become directory names under --tls-secrets-dir: only DNS
                        // labels/subdomains, so that no `..` or `/` can leave it.
                        if let Err(why) = names::dns_subdomain(&r.name) {
                            c.error(format!("{f}.name"), format!("\"{}\" {why}", r.name));
                        }
                        let namespace = r.namespace.as_deref().unwrap_or(gateway_ns);
                        if let Err(why) = names::dns_label(namespace) {
                            c.error(format!("{f}.namespace"), format!("\"{namespace}\" {why}"));
                        }
                        certificates.push(SecretRef {
                            namespace: namespace.to_owned(),
                            name: r.name.clone(),
                        });
                    }
                }
            }
            let mut client_cas = Vec::new();
            if let Some(v) = &tls.frontend_validation {
                let at = format!("{at}.tls.frontendValidation.caCertificateRefs");
                match &v.ca_certificate_refs {
                    None => c.error(&at, "missing: name the ConfigMap with the CA certificates"),
                    Some(refs) if refs.is_empty() => {
                        c.error(&at, "empty: name the ConfigMap with the CA certificates")
                    }
                    Some(refs) => {
                        c.count(&at, refs.len(), MAX_CA_CERTIFICATE_REFS);
                        for (j, r) in refs.iter().enumerate() {
                            let f = format!("{at}[{j}]");
                            if !r.group.is_empty() || r.kind != "ConfigMap" {
                                c.error(
                                    &f,
                                    format!(
                                        "{}/{}: only core ConfigMaps can hold CA certificates",
                                        r.group, r.kind
                                    ),
                                );
                            }
                            if let Err(why) = names::dns_subdomain(&r.name) {
                                c.error(format!("{f}.name"), format!("\"{}\" {why}", r.name));
                            }
                            let namespace = r.namespace.as_deref().unwrap_or(gateway_ns);
                            if let Err(why) = names::dns_label(namespace) {
                                c.error(format!("{f}.namespace"), format!("\"{namespace}\" {why}"));
                            }
                            client_cas.push(SecretRef {
                                namespace: namespace.to_owned(),
                                name: r.name.clone(),
                            });
                        }
                    }
                }
            }
            (c.errors.len() == before).then_some(ListenerTls {
                certificates,
                client_cas,
            })
        }
        other => {
            c.error(
                format!("{at}.protocol"),
                format!("\"{other}\" is not supported; Tollgate serves HTTP and HTTPS"),
            );
            None
        }
    }
}

/// Checks `allowedRoutes`; returns whether routes from every namespace may attach.
fn allowed_routes(c: &mut Checker<'_, '_>, at: &str, l: &Listener) -> bool {
    let Some(allowed) = &l.allowed_routes else {
        return false;
    };
    if let Some(kinds) = &allowed.kinds {
        for (j, k) in kinds.iter().enumerate() {
            let group = k.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
            if group != GATEWAY_API_GROUP || k.kind != "HTTPRoute" {
                c.error(
                    format!("{at}.allowedRoutes.kinds[{j}]"),
                    format!("{group}/{}: only HTTPRoute is supported", k.kind),
                );
            }
        }
    }
    let Some(ns) = &allowed.namespaces else {
        return false;
    };
    match ns.from.as_deref() {
        None | Some("Same") => {
            if ns.selector.is_some() {
                c.error(
                    format!("{at}.allowedRoutes.namespaces.selector"),
                    "a selector needs from: Selector",
                );
            }
            false
        }
        Some("All") => true,
        Some("Selector") => {
            c.error(
                format!("{at}.allowedRoutes.namespaces.from"),
                "Selector is not supported: the standalone agent has no namespace labels (use Same or All)",
            );
            false
        }
        Some(other) => {
            c.error(
                format!("{at}.allowedRoutes.namespaces.from"),
                format!("\"{other}\": expected Same, All or Selector"),
            );
            false
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn route(
    c: &mut Checker<'_, '_>,
    ns: &str,
    label: String,
    order: u32,
    r: &HTTPRoute,
    gateways: &HashMap<(String, String), GatewayInfo>,
    backends: &HashMap<(String, String), usize>,
    limits: &RouteLimits,
    auth: Option<usize>,
    max_request_body: Option<u64>,
) -> Option<RouteDef> {
    let before = c.errors.len();
    let spec = &r.spec;

    // Hostnames.
    let mut hostnames = Vec::new();
    if let Some(list) = &spec.hostnames {
        c.count("spec.hostnames", list.len(), MAX_HOSTNAMES);
        for (i, h) in list.iter().enumerate() {
            match names::hostname(h, true) {
                Ok(()) => hostnames.push(HostPattern::parse(h)),
                Err(why) => c.error(format!("spec.hostnames[{i}]"), format!("\"{h}\" {why}")),
            }
        }
    }

    // Parents.
    let mut attachments: BTreeMap<usize, Vec<HostPattern>> = BTreeMap::new();
    let parents = spec.parent_refs.as_deref().unwrap_or_default();
    if parents.is_empty() {
        c.error(
            "spec.parentRefs",
            "missing: name the Gateway (and optionally the listener) this route attaches to",
        );
    }
    c.count("spec.parentRefs", parents.len(), MAX_PARENT_REFS);
    for (i, p) in parents.iter().enumerate() {
        let at = format!("spec.parentRefs[{i}]");
        let group = p.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_API_GROUP || kind != "Gateway" {
            c.error(
                &at,
                format!("{group}/{kind}: a route attaches to a {GATEWAY_API_GROUP} Gateway"),
            );
            continue;
        }
        let gw_ns = p.namespace.as_deref().unwrap_or(ns);
        let Some(gw) = gateways.get(&(gw_ns.to_owned(), p.name.clone())) else {
            c.error(
                format!("{at}.name"),
                format!("no Gateway {gw_ns}/{} in this revision", p.name),
            );
            continue;
        };
        let mut candidates: Vec<&ListenerRef> = gw.listeners.iter().collect();
        if let Some(section) = &p.section_name {
            candidates.retain(|l| &l.name == section);
            if candidates.is_empty() {
                c.error(
                    format!("{at}.sectionName"),
                    format!(
                        "Gateway {gw_ns}/{} has no (valid) listener \"{section}\"",
                        p.name
                    ),
                );
                continue;
            }
        }
        if let Some(want) = p.port {
            candidates.retain(|l| i64::from(l.port) == want);
            if candidates.is_empty() {
                c.error(
                    format!("{at}.port"),
                    format!(
                        "Gateway {gw_ns}/{} has no such listener on port {want}",
                        p.name
                    ),
                );
                continue;
            }
        }
        let allowed: Vec<&ListenerRef> = candidates
            .into_iter()
            .filter(|l| l.all_namespaces || gw.namespace == ns)
            .collect();
        if allowed.is_empty() {
            c.error(
                &at,
                format!("the listeners of Gateway {gw_ns}/{} only accept routes from namespace {} (allowedRoutes.namespaces.from)", p.name, gw.namespace),
            );
            continue;
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
            if !effective.is_empty() {
                attached_here = true;
                let set = attachments.entry(l.index).or_default();
                for h in effective {
                    if !set.contains(&h) {
                        set.push(h);
                    }
                }
            }
        }
        if !attached_here {
            c.error(
                &at,
                format!("none of the route's hostnames is served by the listeners of Gateway {gw_ns}/{} it names", p.name),
            );
        }
    }
    if !parents.is_empty() && attachments.is_empty() && c.errors.len() == before {
        c.error("spec.parentRefs", "the route is attached to no listener");
    }

    // Rules.
    let raw_rules = spec.rules.as_deref().unwrap_or_default();
    if raw_rules.is_empty() {
        c.error(
            "spec.rules",
            "missing: a route needs at least one rule with backendRefs (or a RequestRedirect)",
        );
    }
    c.count("spec.rules", raw_rules.len(), MAX_RULES);
    let mut rules = Vec::new();
    let mut rule_names = HashSet::new();
    let route_label: Arc<str> = label.as_str().into();
    for (i, raw) in raw_rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(name) = &raw.name {
            if let Err(why) = names::section_name(name) {
                c.error(format!("{at}.name"), format!("\"{name}\" {why}"));
            } else if !rule_names.insert(name.as_str()) {
                c.error(
                    format!("{at}.name"),
                    format!("duplicate rule name \"{name}\""),
                );
            }
        }
        if let Some(rule) = rule(
            c,
            &at,
            i,
            ns,
            &route_label,
            raw,
            backends,
            limits,
            auth,
            max_request_body,
        ) {
            rules.push(rule);
        }
    }
    (c.errors.len() == before).then(|| RouteDef {
        label: route_label,
        order,
        attachments: attachments
            .into_iter()
            .map(|(listener, hostnames)| Attachment {
                listener,
                hostnames,
            })
            .collect(),
        rules,
    })
}

#[allow(clippy::too_many_arguments)]
fn rule(
    c: &mut Checker<'_, '_>,
    at: &str,
    index: usize,
    ns: &str,
    route: &Arc<str>,
    raw: &HTTPRouteRule,
    backends: &HashMap<(String, String), usize>,
    limits: &RouteLimits,
    auth: Option<usize>,
    max_request_body: Option<u64>,
) -> Option<RuleDef> {
    let before = c.errors.len();
    // Matches.
    let default_match = [HTTPRouteMatch {
        path: None,
        headers: None,
        query_params: None,
        method: None,
    }];
    let raw_matches: &[HTTPRouteMatch] = match &raw.matches {
        Some(m) if !m.is_empty() => m,
        _ => &default_match,
    };
    c.count(&format!("{at}.matches"), raw_matches.len(), MAX_MATCHES);
    let mut matches = Vec::new();
    for (j, m) in raw_matches.iter().enumerate() {
        if let Some(m) = route_match(c, &format!("{at}.matches[{j}]"), m) {
            matches.push(Arc::new(m));
        }
    }
    let all_prefix = raw_matches.iter().all(|m| {
        m.path
            .as_ref()
            .and_then(|p| p.type_)
            .unwrap_or(PathMatchType::PathPrefix)
            == PathMatchType::PathPrefix
    });

    // Filters.
    let filters = raw.filters.as_deref().unwrap_or_default();
    c.count(&format!("{at}.filters"), filters.len(), MAX_FILTERS);
    let mut seen_types = HashSet::new();
    let mut request_headers = None;
    let mut response_headers = None;
    let mut rewrite = None;
    let mut redirect = None;
    for (j, f) in filters.iter().enumerate() {
        let fat = format!("{at}.filters[{j}]");
        if !seen_types.insert(format!("{:?}", f.type_)) {
            c.error(
                format!("{fat}.type"),
                format!(
                    "{:?} is given twice; each filter type may appear once per rule",
                    f.type_
                ),
            );
            continue;
        }
        check_filter_fields(c, &fat, f);
        match f.type_ {
            FilterType::RequestHeaderModifier => {
                if let Some(h) = &f.request_header_modifier {
                    request_headers = header_modifier(
                        c,
                        &format!("{fat}.requestHeaderModifier"),
                        h,
                        PROXY_REQUEST_HEADERS,
                    );
                }
            }
            FilterType::ResponseHeaderModifier => {
                if let Some(h) = &f.response_header_modifier {
                    response_headers = header_modifier(
                        c,
                        &format!("{fat}.responseHeaderModifier"),
                        h,
                        PROXY_RESPONSE_HEADERS,
                    );
                }
            }
            FilterType::URLRewrite => {
                if let Some(u) = &f.url_rewrite {
                    let hostname = u.hostname.as_ref().and_then(|h| {
                        match names::hostname(h, false).and_then(|()| {
                            HeaderValue::from_str(h)
                                .map_err(|_| "is not a valid Host value".to_string())
                        }) {
                            Ok(v) => Some(v),
                            Err(why) => {
                                c.error(
                                    format!("{fat}.urlRewrite.hostname"),
                                    format!("\"{h}\" {why}"),
                                );
                                None
                            }
                        }
                    });
                    let path = u.path.as_ref().and_then(|p| {
                        path_modifier(c, &format!("{fat}.urlRewrite.path"), p, all_prefix)
                    });
                    rewrite = Some(UrlRewrite { hostname, path });
                }
            }
            FilterType::RequestRedirect => {
                if let Some(r) = &f.request_redirect {
                    let rat = format!("{fat}.requestRedirect");
                    let scheme = r.scheme.as_ref().and_then(|s| match s.as_str() {
                        "http" | "https" => Some(s.clone()),
                        other => {
                            c.error(
                                format!("{rat}.scheme"),
                                format!("\"{other}\": expected http or https"),
                            );
                            None
                        }
                    });
                    let hostname =
                        r.hostname
                            .as_ref()
                            .and_then(|h| match names::hostname(h, false) {
                                Ok(()) => Some(h.clone()),
                                Err(why) => {
                                    c.error(format!("{rat}.hostname"), format!("\"{h}\" {why}"));
                                    None
                                }
                            });
                    let path = r
                        .path
                        .as_ref()
                        .and_then(|p| path_modifier(c, &format!("{rat}.path"), p, all_prefix));
                    let port = r.port.and_then(|p| port(c, &format!("{rat}.port"), p));
                    let status = match r.status_code.unwrap_or(302) {
                        s @ (301 | 302 | 303 | 307 | 308) => {
                            StatusCode::from_u16(s as u16).unwrap_or(StatusCode::FOUND)
                        }
                        other => {
                            c.error(
                                format!("{rat}.statusCode"),
                                format!("{other}: expected 301, 302, 303, 307 or 308"),
                            );
                            StatusCode::FOUND
                        }
                    };
                    redirect = Some(Redirect {
                        scheme,
                        hostname,
                        path,
                        port,
                        status,
                    });
                }
            }
            FilterType::RequestMirror | FilterType::CORS | FilterType::ExtensionRef => {
                c.error(
                    format!("{fat}.type"),
                    format!("{:?} filters are not supported yet", f.type_),
                );
            }
        }
    }
    if rewrite.is_some() && redirect.is_some() {
        c.error(
            format!("{at}.filters"),
            "URLRewrite and RequestRedirect cannot both be used in one rule",
        );
    }

    // Backends.
    let refs = raw.backend_refs.as_deref().unwrap_or_default();
    c.count(&format!("{at}.backendRefs"), refs.len(), MAX_BACKEND_REFS);
    let mut weighted = Vec::new();
    for (j, b) in refs.iter().enumerate() {
        if let Some(w) = backend_ref(c, &format!("{at}.backendRefs[{j}]"), ns, b, backends) {
            weighted.push(w);
        }
    }
    match (refs.is_empty(), redirect.is_some()) {
        (true, false) => c.error(
            format!("{at}.backendRefs"),
            "missing: a rule needs backendRefs (or a RequestRedirect filter)",
        ),
        (false, true) => c.error(
            format!("{at}.backendRefs"),
            "a rule with a RequestRedirect answers with the redirect; remove its backendRefs",
        ),
        _ => {}
    }

    // Timeouts.
    let mut timeouts = Timeouts {
        request: Some(DEFAULT_REQUEST_TIMEOUT),
        backend_request: None,
    };
    if let Some(t) = &raw.timeouts {
        let mut read = |field: &str, value: &Option<String>| -> Option<Option<Duration>> {
            let s = value.as_ref()?;
            match parse_duration(s) {
                Ok(d) if d.is_zero() => Some(None),
                Ok(d) => Some(Some(d)),
                Err(why) => {
                    c.error(format!("{at}.timeouts.{field}"), why);
                    None
                }
            }
        };
        if let Some(d) = read("request", &t.request) {
            timeouts.request = d;
        }
        if let Some(d) = read("backendRequest", &t.backend_request) {
            timeouts.backend_request = d;
        }
        if let (Some(req), Some(backend)) = (timeouts.request, timeouts.backend_request) {
            if backend > req {
                c.error(
                    format!("{at}.timeouts.backendRequest"),
                    format!(
                        "{backend:?} is longer than the request timeout ({req:?}); it must not be"
                    ),
                );
            }
        }
    }

    // Retries.
    let mut retry = Retry {
        codes: Vec::new(),
        attempts: DEFAULT_CONNECT_RETRIES,
        backoff: Duration::ZERO,
    };
    if let Some(r) = &raw.retry {
        retry.backoff = DEFAULT_RETRY_BACKOFF;
        retry.attempts = 1;
        if let Some(codes) = &r.codes {
            for (k, &code) in codes.iter().enumerate() {
                if (400..=599).contains(&code) {
                    retry.codes.push(code as u16);
                } else {
                    c.error(
                        format!("{at}.retry.codes[{k}]"),
                        format!("{code} is out of range 400-599"),
                    );
                }
            }
        }
        if let Some(n) = r.attempts {
            if (0..=MAX_RETRY_ATTEMPTS).contains(&n) {
                retry.attempts = n as u32;
            } else {
                c.error(
                    format!("{at}.retry.attempts"),
                    format!("{n} is out of range 0-{MAX_RETRY_ATTEMPTS}"),
                );
            }
        }
        if let Some(b) = &r.backoff {
            match parse_duration(b) {
                Ok(d) => retry.backoff = d,
                Err(why) => c.error(format!("{at}.retry.backoff"), why),
            }
        }
    }

    (c.errors.len() == before).then(|| RuleDef {
        rule: Arc::new(Rule {
            route: route.clone(),
            index,
            request_headers,
            response_headers,
            rewrite,
            redirect,
            backends: weighted,
            timeouts,
            retry,
            rate_limits: limits.clone(),
            auth,
            max_request_body,
        }),
        matches,
    })
}

/// Credential files per AuthPolicy method.
pub const MAX_CREDENTIAL_REFS: usize = 16;

/// Checks a policy's `spec.targetRefs` (HTTPRoutes of namespace `ns`, each named once) and
/// returns the names of the routes it targets. `kind` is "an AuthPolicy", ...; `purpose` what
/// the policy does to its routes ("protects", "limits").
fn check_target_refs(
    c: &mut Checker<'_, '_>,
    ns: &str,
    kind: &str,
    purpose: &str,
    refs: &[tollgate_model::ratelimit::PolicyTargetReference],
    routes: &HashSet<(&str, &str)>,
) -> Vec<String> {
    if refs.is_empty() {
        c.error(
            "spec.targetRefs",
            format!("empty: name the HTTPRoutes this policy {purpose}"),
        );
    }
    c.count("spec.targetRefs", refs.len(), MAX_TARGET_REFS);
    let mut targets: Vec<String> = Vec::new();
    for (i, t) in refs.iter().enumerate() {
        let at = format!("spec.targetRefs[{i}]");
        if t.group != GATEWAY_API_GROUP || t.kind != "HTTPRoute" {
            c.error(
                &at,
                format!(
                    "{}/{}: {kind} targets HTTPRoutes (group {GATEWAY_API_GROUP}, kind HTTPRoute)",
                    t.group, t.kind
                ),
            );
        } else if !routes.contains(&(ns, t.name.as_str())) {
            c.error(
                format!("{at}.name"),
                format!(
                    "no HTTPRoute {ns}/{} in this revision (a policy targets routes of its own namespace)",
                    t.name
                ),
            );
        } else if targets.contains(&t.name) {
            c.error(
                format!("{at}.name"),
                format!("HTTPRoute {ns}/{} is named twice", t.name),
            );
        } else {
            targets.push(t.name.clone());
        }
    }
    targets
}

/// Largest `requestBody.maxSize` of a BackendTrafficPolicy.
pub const MAX_REQUEST_BODY_LIMIT: u64 = 64 << 30;

/// Checks a BackendTrafficPolicy; returns the names of the routes it targets and their body
/// size limit.
fn traffic_policy(
    c: &mut Checker<'_, '_>,
    ns: &str,
    p: &BackendTrafficPolicy,
    routes: &HashSet<(&str, &str)>,
) -> Option<(Vec<String>, Option<u64>)> {
    let before = c.errors.len();
    let spec = &p.spec;
    let targets = check_target_refs(
        c,
        ns,
        "a BackendTrafficPolicy",
        "applies to",
        &spec.target_refs,
        routes,
    );
    let mut max_body = None;
    if let Some(b) = &spec.request_body {
        match tollgate_model::units::parse_size(&b.max_size) {
            Ok(n) if n <= MAX_REQUEST_BODY_LIMIT => max_body = Some(n),
            Ok(_) => c.error(
                "spec.requestBody.maxSize",
                format!("{:?} is more than the most allowed, 64GiB", b.max_size),
            ),
            Err(why) => c.error("spec.requestBody.maxSize", why),
        }
    }
    (c.errors.len() == before).then_some((targets, max_body))
}

/// Checks an AuthPolicy; returns the names of the routes it targets and the policy.
fn auth_policy(
    c: &mut Checker<'_, '_>,
    ns: &str,
    name: &str,
    p: &AuthPolicy,
    routes: &HashSet<(&str, &str)>,
) -> Option<(Vec<String>, AuthDef, Option<BanDef>)> {
    let before = c.errors.len();
    let spec = &p.spec;
    let targets = check_target_refs(
        c,
        ns,
        "an AuthPolicy",
        "protects",
        &spec.target_refs,
        routes,
    );
    let ban = spec
        .ban_on_abuse
        .as_ref()
        .and_then(|b| ban_on_abuse(c, "failures", b.failures, &b.within, &b.block_for));
    if spec.api_key.is_none()
        && spec.basic_auth.is_none()
        && spec.jwt.is_none()
        && spec.client_certificate.is_none()
    {
        c.error(
            "spec",
            "no method: set apiKey, basicAuth, jwt or clientCertificate (with several, any one is enough)",
        );
    }
    let refs = |c: &mut Checker<'_, '_>, at: &str, list: &[CredentialRef]| -> Vec<SecretRef> {
        if list.is_empty() {
            c.error(at, "empty: name at least one credential Secret");
        }
        c.count(at, list.len(), MAX_CREDENTIAL_REFS);
        let mut out: Vec<SecretRef> = Vec::new();
        for (i, r) in list.iter().enumerate() {
            if let Err(why) = tollgate_model::names::dns_label(&r.name) {
                c.error(format!("{at}[{i}].name"), format!("\"{}\" {why}", r.name));
                continue;
            }
            let s = SecretRef {
                namespace: ns.to_owned(),
                name: r.name.clone(),
            };
            if out.contains(&s) {
                c.error(
                    format!("{at}[{i}].name"),
                    format!("Secret {s} is named twice"),
                );
            } else {
                out.push(s);
            }
        }
        out
    };
    let api_key = spec.api_key.as_ref().and_then(|k| {
        let files = refs(c, "spec.apiKey.credentialRefs", &k.credential_refs);
        let location = match (&k.header, &k.query) {
            (Some(h), None) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if PROXY_REQUEST_HEADERS.contains(&n.as_str()) || n == http::header::AUTHORIZATION => {
                    c.error(
                        "spec.apiKey.header",
                        format!("\"{h}\" is a header the proxy or basic auth owns; pick another (like X-Api-Key)"),
                    );
                    None
                }
                Ok(n) => Some(KeyLocation::Header(n)),
                Err(_) => {
                    c.error(
                        "spec.apiKey.header",
                        format!("\"{h}\" is not a valid HTTP header name"),
                    );
                    None
                }
            },
            (None, Some(q))
                if !q.is_empty()
                    && q.len() <= 64
                    && q.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
            {
                Some(KeyLocation::Query(q.clone()))
            }
            (None, Some(q)) => {
                c.error(
                    "spec.apiKey.query",
                    format!("\"{q}\" is not a query parameter name (1-64 letters, digits, . _ -)"),
                );
                None
            }
            _ => {
                c.error("spec.apiKey", "set exactly one of header or query");
                None
            }
        };
        location.map(|location| ApiKeyDef { location, files })
    });
    let basic = spec
        .basic_auth
        .as_ref()
        .map(|b| refs(c, "spec.basicAuth.credentialRefs", &b.credential_refs))
        .unwrap_or_default();
    let jwt = spec
        .jwt
        .as_ref()
        .map(|j| jwt_providers(c, ns, j))
        .unwrap_or_default();
    // Claim headers are removed from requests before credentials are read: none may be a
    // header that carries credentials.
    if let Some(j) = &spec.jwt {
        let lower = |h: &str| h.to_ascii_lowercase();
        let mut carriers: Vec<String> = Vec::new();
        if let Some(h) = spec.api_key.as_ref().and_then(|k| k.header.as_deref()) {
            carriers.push(lower(h));
        }
        for p in &j.providers {
            if let Some(h) = p.extract_from.as_ref().and_then(|l| l.header.as_deref()) {
                carriers.push(lower(h));
            }
        }
        for (i, p) in j.providers.iter().enumerate() {
            for (k, ch) in p.claim_to_headers.iter().enumerate() {
                if carriers.contains(&lower(&ch.header)) {
                    c.error(
                        format!("spec.jwt.providers[{i}].claimToHeaders[{k}].header"),
                        format!(
                            "\"{}\" carries credentials (apiKey or extractFrom); a claim header is removed from requests first",
                            ch.header
                        ),
                    );
                }
            }
        }
    }
    let client_certificate = spec
        .client_certificate
        .as_ref()
        .map(|cc| cc.consumer_from.unwrap_or(CertificateField::CommonName));
    let allowed_consumers = spec.allowed_consumers.as_ref().map(|list| {
        let at = "spec.allowedConsumers";
        if list.is_empty() {
            c.error(
                at,
                "empty: list the consumers allowed, or remove allowedConsumers to allow any",
            );
        }
        c.count(at, list.len(), MAX_ALLOWED_CONSUMERS);
        let mut out: Vec<Arc<str>> = Vec::new();
        for (i, id) in list.iter().enumerate() {
            if let Err(why) = tollgate_model::names::consumer_id(id) {
                c.error(format!("{at}[{i}]"), format!("\"{id}\": {why}"));
            } else if out.iter().any(|o| **o == **id) {
                c.error(format!("{at}[{i}]"), format!("\"{id}\" is listed twice"));
            } else {
                out.push(id.as_str().into());
            }
        }
        out
    });
    (c.errors.len() == before).then(|| {
        (
            targets,
            AuthDef {
                policy: format!("{ns}/{name}").into(),
                api_key,
                basic,
                jwt,
                client_certificate,
                allowed_consumers,
            },
            ban,
        )
    })
}

/// Consumers in an AuthPolicy's `allowedConsumers`.
pub const MAX_ALLOWED_CONSUMERS: usize = 1024;
/// JWT providers per AuthPolicy.
pub const MAX_JWT_PROVIDERS: usize = 8;
/// Largest clock skew a JWT provider may allow.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Clock skew of a JWT provider that sets none.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// JWKS refresh interval of a provider that sets none.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// A duration of a policy field (`0s` allowed when `zero`), or why not: the Gateway API's
/// format, as every policy duration.
fn policy_duration(text: &str, zero: bool) -> Result<Duration, String> {
    if zero {
        parse_duration(text)
    } else {
        tollgate_model::units::parse_nonzero_duration(text)
    }
}

/// Checks the `jwt` of an AuthPolicy.
fn jwt_providers(
    c: &mut Checker<'_, '_>,
    ns: &str,
    j: &tollgate_model::auth::JwtAuth,
) -> Vec<JwtProviderDef> {
    if j.providers.is_empty() {
        c.error("spec.jwt.providers", "empty: name at least one provider");
    }
    c.count("spec.jwt.providers", j.providers.len(), MAX_JWT_PROVIDERS);
    let mut out: Vec<JwtProviderDef> = Vec::new();
    for (i, p) in j.providers.iter().enumerate() {
        let at = format!("spec.jwt.providers[{i}]");
        let before = c.errors.len();
        if let Err(why) = tollgate_model::names::dns_label(&p.name) {
            c.error(format!("{at}.name"), format!("\"{}\" {why}", p.name));
        } else if j.providers[..i].iter().any(|o| o.name == p.name) {
            c.error(
                format!("{at}.name"),
                format!("provider \"{}\" is named twice", p.name),
            );
        }
        if p.issuer.as_deref().is_some_and(str::is_empty) {
            c.error(
                format!("{at}.issuer"),
                "empty: name the issuer, or remove issuer to accept any",
            );
        }
        c.count(&format!("{at}.audiences"), p.audiences.len(), 16);
        if p.audiences.iter().any(String::is_empty) {
            c.error(format!("{at}.audiences"), "an audience is empty");
        }
        let jwks = match (&p.jwks.uri, &p.jwks.inline) {
            (Some(uri), None) => {
                let refresh = match &p.jwks.refresh_interval {
                    None => Some(DEFAULT_JWKS_REFRESH),
                    Some(t) => match policy_duration(t, false) {
                        Ok(d)
                            if (Duration::from_secs(30)..=Duration::from_secs(86_400))
                                .contains(&d) =>
                        {
                            Some(d)
                        }
                        Ok(_) => {
                            c.error(
                                format!("{at}.jwks.refreshInterval"),
                                format!("\"{t}\" is out of range (30s-24h)"),
                            );
                            None
                        }
                        Err(why) => {
                            c.error(format!("{at}.jwks.refreshInterval"), why);
                            None
                        }
                    },
                };
                let ca = p.jwks.ca_certificate_ref.as_ref().and_then(|r| {
                    match tollgate_model::names::dns_label(&r.name) {
                        Ok(()) => Some(SecretRef {
                            namespace: ns.to_owned(),
                            name: r.name.clone(),
                        }),
                        Err(why) => {
                            c.error(
                                format!("{at}.jwks.caCertificateRef.name"),
                                format!("\"{}\" {why}", r.name),
                            );
                            None
                        }
                    }
                });
                match url::Url::parse(uri) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.host_str().is_some_and(|h| !h.is_empty())
                            && u.username().is_empty()
                            && u.password().is_none()
                            && u.fragment().is_none()
                            && uri.len() <= 2048 =>
                    {
                        if p.jwks.ca_certificate_ref.is_some() && u.scheme() != "https" {
                            c.error(
                                format!("{at}.jwks.caCertificateRef"),
                                "a CA only applies to an https uri",
                            );
                        }
                        refresh.map(|refresh| JwksDef::Uri {
                            url: u.to_string(),
                            ca,
                            refresh,
                        })
                    }
                    _ => {
                        c.error(
                            format!("{at}.jwks.uri"),
                            format!("\"{uri}\" is not an http:// or https:// URL with a host (no user info, no fragment, at most 2048 characters)"),
                        );
                        None
                    }
                }
            }
            (None, Some(inline)) => {
                if p.jwks.refresh_interval.is_some() || p.jwks.ca_certificate_ref.is_some() {
                    c.error(
                        format!("{at}.jwks"),
                        "refreshInterval and caCertificateRef only apply to a uri",
                    );
                }
                match crate::l7::jwks::parse_jwks(inline.as_bytes()) {
                    Ok(_) => Some(JwksDef::Inline(inline.as_str().into())),
                    Err(why) => {
                        c.error(format!("{at}.jwks.inline"), why);
                        None
                    }
                }
            }
            _ => {
                c.error(format!("{at}.jwks"), "set exactly one of uri or inline");
                None
            }
        };
        let consumer_claim = p.consumer_claim.clone().unwrap_or_else(|| "sub".into());
        if consumer_claim.is_empty() || consumer_claim.len() > 256 {
            c.error(
                format!("{at}.consumerClaim"),
                "a claim name is 1-256 characters",
            );
        }
        c.count(
            &format!("{at}.claimToHeaders"),
            p.claim_to_headers.len(),
            16,
        );
        let mut claim_headers: Vec<(String, HeaderName)> = Vec::new();
        for (k, ch) in p.claim_to_headers.iter().enumerate() {
            let hat = format!("{at}.claimToHeaders[{k}]");
            if ch.claim.is_empty() || ch.claim.len() > 256 {
                c.error(format!("{hat}.claim"), "a claim name is 1-256 characters");
            }
            match HeaderName::from_bytes(ch.header.as_bytes()) {
                Ok(n)
                    if PROXY_REQUEST_HEADERS.contains(&n.as_str())
                        || n == http::header::AUTHORIZATION
                        || n == http::header::COOKIE =>
                {
                    c.error(
                        format!("{hat}.header"),
                        format!("\"{}\" is a header the proxy owns or credentials travel in; pick another (like X-Jwt-Sub)", ch.header),
                    );
                }
                Ok(n) if claim_headers.iter().any(|(_, h)| *h == n) => {
                    c.error(
                        format!("{hat}.header"),
                        format!("header \"{}\" is named twice", ch.header),
                    );
                }
                Ok(n) => claim_headers.push((ch.claim.clone(), n)),
                Err(_) => c.error(
                    format!("{hat}.header"),
                    format!("\"{}\" is not a valid HTTP header name", ch.header),
                ),
            }
        }
        let location = match &p.extract_from {
            None => Some(TokenLocation::Bearer),
            Some(l) => {
                match (&l.header, &l.query) {
                    (Some(h), None) => match HeaderName::from_bytes(h.as_bytes()) {
                        Ok(n) if PROXY_REQUEST_HEADERS.contains(&n.as_str()) => {
                            c.error(
                                format!("{at}.extractFrom.header"),
                                format!("\"{h}\" is a header the proxy owns"),
                            );
                            None
                        }
                        Ok(n) if n == http::header::AUTHORIZATION => Some(TokenLocation::Bearer),
                        Ok(n) => Some(TokenLocation::Header(n)),
                        Err(_) => {
                            c.error(
                                format!("{at}.extractFrom.header"),
                                format!("\"{h}\" is not a valid HTTP header name"),
                            );
                            None
                        }
                    },
                    (None, Some(q))
                        if !q.is_empty()
                            && q.len() <= 64
                            && q.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
                    {
                        Some(TokenLocation::Query(q.clone()))
                    }
                    (None, Some(q)) => {
                        c.error(
                        format!("{at}.extractFrom.query"),
                        format!("\"{q}\" is not a query parameter name (1-64 letters, digits, . _ -)"),
                    );
                        None
                    }
                    _ => {
                        c.error(
                            format!("{at}.extractFrom"),
                            "set exactly one of header or query",
                        );
                        None
                    }
                }
            }
        };
        let clock_skew = match &p.clock_skew {
            None => Some(DEFAULT_CLOCK_SKEW),
            Some(t) => match policy_duration(t, true) {
                Ok(d) if d <= MAX_CLOCK_SKEW => Some(d),
                Ok(_) => {
                    c.error(
                        format!("{at}.clockSkew"),
                        format!("\"{t}\" is more than the 5m allowed"),
                    );
                    None
                }
                Err(why) => {
                    c.error(format!("{at}.clockSkew"), why);
                    None
                }
            },
        };
        if c.errors.len() != before {
            continue;
        }
        if let (Some(jwks), Some(location), Some(clock_skew)) = (jwks, location, clock_skew) {
            out.push(JwtProviderDef {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                jwks,
                consumer_claim,
                claim_headers,
                location,
                clock_skew,
            });
        }
    }
    out
}

/// Checks a RateLimitPolicy; returns the names of the routes it targets and its limits.
fn rate_limit_policy(
    c: &mut Checker<'_, '_>,
    ns: &str,
    name: &str,
    p: &RateLimitPolicy,
    routes: &HashSet<(&str, &str)>,
    route_auth: &HashMap<(String, String), usize>,
) -> Option<(Vec<String>, Vec<RateLimitDef>, Option<BanDef>)> {
    let before = c.errors.len();
    let spec = &p.spec;
    let targets = check_target_refs(
        c,
        ns,
        "a RateLimitPolicy",
        "limits",
        &spec.target_refs,
        routes,
    );
    if spec.limits.is_empty() {
        c.error(
            "spec.limits",
            "empty: a RateLimitPolicy needs at least one limit",
        );
    }
    c.count("spec.limits", spec.limits.len(), MAX_LIMITS);
    let label: Arc<str> = format!("{ns}/{name}").into();
    let shadow = spec.mode == RateLimitMode::Shadow;
    let mut defs = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in spec.limits.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        let limit_name = match &l.name {
            Some(n) => {
                if let Err(why) = tollgate_model::names::dns_label(n) {
                    c.error(format!("{at}.name"), format!("\"{n}\" {why}"));
                }
                n.clone()
            }
            None if spec.limits.len() == 1 => name.to_owned(),
            None => format!("{name}-{i}"),
        };
        if !names.insert(limit_name.clone()) {
            c.error(
                format!("{at}.name"),
                format!("two limits of this policy are named \"{limit_name}\""),
            );
        }
        let key = match (l.key, &l.header) {
            (RateLimitKey::Consumer, Some(_)) => {
                c.error(
                    format!("{at}.header"),
                    "only with key: header; remove it, or set key: header",
                );
                None
            }
            (RateLimitKey::Consumer, None) => {
                let unauthenticated: Vec<&str> = targets
                    .iter()
                    .filter(|t| !route_auth.contains_key(&(ns.to_owned(), (*t).clone())))
                    .map(String::as_str)
                    .collect();
                if unauthenticated.is_empty() {
                    Some(LimitKey::Consumer)
                } else {
                    c.error(
                        format!("{at}.key"),
                        format!(
                            "consumer: limits per consumer need an AuthPolicy to identify consumers, and no AuthPolicy targets HTTPRoute {}",
                            unauthenticated
                                .iter()
                                .map(|t| format!("{ns}/{t}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            }
            (RateLimitKey::Header, None) => {
                c.error(
                    format!("{at}.header"),
                    "missing: key: header needs the name of the header whose value is the key",
                );
                None
            }
            (RateLimitKey::Header, Some(h)) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => Some(LimitKey::Header(name)),
                Err(_) => {
                    c.error(
                        format!("{at}.header"),
                        format!("\"{h}\" is not a valid HTTP header name"),
                    );
                    None
                }
            },
            (RateLimitKey::ClientIp, Some(_)) => {
                c.error(
                    format!("{at}.header"),
                    "only with key: header; remove it, or set key: header",
                );
                None
            }
            (RateLimitKey::ClientIp, None) => Some(LimitKey::ClientIp),
        };
        let count = |c: &mut Checker<'_, '_>, field: &str, n: i64| {
            if (1..=MAX_LIMIT_REQUESTS).contains(&n) {
                Some(n as u32)
            } else {
                c.error(
                    format!("{at}.{field}"),
                    format!("{n} is out of range 1-{MAX_LIMIT_REQUESTS}"),
                );
                None
            }
        };
        let requests = count(c, "requests", l.requests);
        let burst = match l.burst {
            Some(b) => count(c, "burst", b),
            None => requests,
        };
        let per = match parse_duration(&l.per) {
            Ok(d) if d.is_zero() || d.subsec_nanos() != 0 => {
                c.error(
                    format!("{at}.per"),
                    format!(
                        "\"{}\" must be a whole number of seconds, at least 1s (like 1s, 1m, 1h)",
                        l.per
                    ),
                );
                None
            }
            Ok(d) if d > MAX_LIMIT_WINDOW => {
                c.error(
                    format!("{at}.per"),
                    format!("\"{}\" is longer than 24h", l.per),
                );
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                c.error(format!("{at}.per"), why);
                None
            }
        };
        if let (Some(key), Some(requests), Some(burst), Some(per)) = (key, requests, burst, per) {
            defs.push(RateLimitDef {
                policy: label.clone(),
                index: i,
                name: limit_name,
                key,
                requests,
                per,
                burst,
                shadow,
            });
        }
    }
    let ban = spec
        .ban_on_abuse
        .as_ref()
        .and_then(|b| ban_on_abuse(c, "rejections", b.rejections, &b.within, &b.block_for));
    (c.errors.len() == before).then_some((targets, defs, ban))
}

/// Most failures a `banOnAbuse` can count to.
pub const MAX_BAN_THRESHOLD: i64 = 1_000_000;
/// Longest `banOnAbuse.within` and `banOnAbuse.blockFor`.
pub const MAX_BAN_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Checks a `banOnAbuse` (`count_field` is `failures` or `rejections`).
fn ban_on_abuse(
    c: &mut Checker<'_, '_>,
    count_field: &str,
    count: i64,
    within: &str,
    block_for: &str,
) -> Option<BanDef> {
    let before = c.errors.len();
    if !(1..=MAX_BAN_THRESHOLD).contains(&count) {
        c.error(
            format!("spec.banOnAbuse.{count_field}"),
            format!("{count} is out of range 1-{MAX_BAN_THRESHOLD}"),
        );
    }
    let mut duration = |field: &str, value: &str| match parse_duration(value) {
        Ok(d) if d < Duration::from_secs(1) || d > MAX_BAN_DURATION => {
            c.error(
                format!("spec.banOnAbuse.{field}"),
                format!("\"{value}\" is out of range 1s-24h"),
            );
            Duration::ZERO
        }
        Ok(d) => d,
        Err(why) => {
            c.error(format!("spec.banOnAbuse.{field}"), why);
            Duration::ZERO
        }
    };
    let within = duration("within", within);
    let block_for = duration("blockFor", block_for);
    (c.errors.len() == before).then_some(BanDef {
        threshold: count as u32,
        within,
        block_for,
    })
}

/// A filter sets the field of its type and no other.
fn check_filter_fields(c: &mut Checker<'_, '_>, at: &str, f: &HTTPRouteFilter) {
    let set: [(&str, bool, FilterType); 7] = [
        (
            "requestHeaderModifier",
            f.request_header_modifier.is_some(),
            FilterType::RequestHeaderModifier,
        ),
        (
            "responseHeaderModifier",
            f.response_header_modifier.is_some(),
            FilterType::ResponseHeaderModifier,
        ),
        (
            "urlRewrite",
            f.url_rewrite.is_some(),
            FilterType::URLRewrite,
        ),
        (
            "requestRedirect",
            f.request_redirect.is_some(),
            FilterType::RequestRedirect,
        ),
        (
            "requestMirror",
            f.request_mirror.is_some(),
            FilterType::RequestMirror,
        ),
        ("cors", f.cors.is_some(), FilterType::CORS),
        (
            "extensionRef",
            f.extension_ref.is_some(),
            FilterType::ExtensionRef,
        ),
    ];
    for (field, present, ty) in set {
        if ty == f.type_ && !present {
            c.error(
                format!("{at}.{field}"),
                format!(
                    "missing: a {:?} filter needs its settings in {field}",
                    f.type_
                ),
            );
        }
        if ty != f.type_ && present {
            c.error(
                format!("{at}.{field}"),
                format!("only for {ty:?} filters; this one is {:?}", f.type_),
            );
        }
    }
}

fn header_modifier(
    c: &mut Checker<'_, '_>,
    at: &str,
    h: &HTTPHeaderFilter,
    reserved: &[&str],
) -> Option<HeaderModifier> {
    let before = c.errors.len();
    let mut m = HeaderModifier::default();
    let mut names = HashSet::new();
    let mut name = |c: &mut Checker<'_, '_>, field: String, raw: &str| -> Option<HeaderName> {
        let Ok(n) = HeaderName::from_bytes(raw.as_bytes()) else {
            c.error(field, format!("\"{raw}\" is not a valid header name"));
            return None;
        };
        if reserved.contains(&n.as_str()) || n.as_str().starts_with("proxy-") {
            c.error(
                field,
                format!("\"{raw}\" is managed by the proxy and cannot be changed by a filter"),
            );
            return None;
        }
        if !names.insert(n.clone()) {
            c.error(
                field,
                format!("header \"{raw}\" is named twice in this filter"),
            );
            return None;
        }
        Some(n)
    };
    for (list, field, out) in [(&h.set, "set", &mut m.set), (&h.add, "add", &mut m.add)] {
        for (i, header) in list.iter().flatten().enumerate() {
            let f = format!("{at}.{field}[{i}]");
            let n = name(c, format!("{f}.name"), &header.name);
            match HeaderValue::from_str(&header.value) {
                Ok(v) => {
                    if let Some(n) = n {
                        out.push((n, v));
                    }
                }
                Err(_) => c.error(
                    format!("{f}.value"),
                    "not a valid header value (control characters?)",
                ),
            }
        }
    }
    for (i, raw) in h.remove.iter().flatten().enumerate() {
        if let Some(n) = name(c, format!("{at}.remove[{i}]"), raw) {
            m.remove.push(n);
        }
    }
    (c.errors.len() == before).then_some(m)
}

fn path_modifier(
    c: &mut Checker<'_, '_>,
    at: &str,
    p: &HTTPPathModifier,
    all_prefix: bool,
) -> Option<PathModifier> {
    match p.type_ {
        PathModifierType::ReplaceFullPath => {
            if p.replace_prefix_match.is_some() {
                c.error(
                    format!("{at}.replacePrefixMatch"),
                    "only with type ReplacePrefixMatch",
                );
            }
            let Some(v) = &p.replace_full_path else {
                c.error(format!("{at}.replaceFullPath"), "missing");
                return None;
            };
            check_path_value(c, &format!("{at}.replaceFullPath"), v)
                .then(|| PathModifier::Full(v.clone()))
        }
        PathModifierType::ReplacePrefixMatch => {
            if p.replace_full_path.is_some() {
                c.error(
                    format!("{at}.replaceFullPath"),
                    "only with type ReplaceFullPath",
                );
            }
            if !all_prefix {
                c.error(
                    format!("{at}.type"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                );
            }
            let Some(v) = &p.replace_prefix_match else {
                c.error(format!("{at}.replacePrefixMatch"), "missing");
                return None;
            };
            check_path_value(c, &format!("{at}.replacePrefixMatch"), v)
                .then(|| PathModifier::Prefix(v.clone()))
        }
    }
}

fn backend_ref(
    c: &mut Checker<'_, '_>,
    at: &str,
    ns: &str,
    b: &HTTPBackendRef,
    backends: &HashMap<(String, String), usize>,
) -> Option<WeightedBackend> {
    let before = c.errors.len();
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let is_backend = (group, kind) == (TOLLGATE_GROUP, "Backend");
    match (group, kind) {
        (TOLLGATE_GROUP, "Backend") => {}
        ("", "Service") => c.error(
            at,
            format!("Service \"{}\": Services are resolved in Kubernetes mode, which is not built yet; use group: tollgate.dev, kind: Backend", b.name),
        ),
        _ => c.error(
            at,
            format!("{group}/{kind}: expected group tollgate.dev, kind Backend"),
        ),
    }
    if let Some(other) = b.namespace.as_deref().filter(|n| *n != ns) {
        c.error(
            format!("{at}.namespace"),
            format!("\"{other}\": references to another namespace need ReferenceGrants, which are not supported yet"),
        );
    }
    if b.port.is_some() && is_backend {
        c.error(
            format!("{at}.port"),
            "a Backend's endpoints carry their own ports; remove port",
        );
    }
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
    if c.errors.len() != before {
        return None;
    }
    match backends.get(&(ns.to_owned(), b.name.clone())) {
        Some(&backend) => Some(WeightedBackend { backend, weight }),
        None => {
            c.error(
                format!("{at}.name"),
                format!("no (valid) Backend {ns}/{} in this revision", b.name),
            );
            None
        }
    }
}

fn route_match(c: &mut Checker<'_, '_>, at: &str, m: &HTTPRouteMatch) -> Option<MatchDef> {
    let before = c.errors.len();
    let kind = m
        .path
        .as_ref()
        .and_then(|p| p.type_)
        .unwrap_or(PathMatchType::PathPrefix);
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".to_owned());
    let field = format!("{at}.path.value");
    let path = match kind {
        PathMatchType::Exact => {
            check_path_value(c, &field, &value).then(|| PathMatch::Exact(value.clone()))
        }
        PathMatchType::PathPrefix => check_path_value(c, &field, &value).then(|| {
            let trimmed = value.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }),
        PathMatchType::RegularExpression => anchored_regex(c, &field, &value).map(PathMatch::Regex),
    };

    let mut headers = Vec::new();
    let list = m.headers.as_deref().unwrap_or_default();
    c.count(&format!("{at}.headers"), list.len(), MAX_VALUE_MATCHES);
    let mut names = HashSet::new();
    for (i, h) in list.iter().enumerate() {
        let f = format!("{at}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            c.error(
                format!("{f}.name"),
                format!("\"{}\" is not a valid header name", h.name),
            );
            continue;
        };
        if !names.insert(name.clone()) {
            c.error(
                format!("{f}.name"),
                format!("header \"{}\" is matched twice in this match", h.name),
            );
            continue;
        }
        if let Some(value) = value_match(c, &format!("{f}.value"), h.type_, &h.value) {
            headers.push(HeaderMatch { name, value });
        }
    }

    let mut query = Vec::new();
    let list = m.query_params.as_deref().unwrap_or_default();
    c.count(&format!("{at}.queryParams"), list.len(), MAX_VALUE_MATCHES);
    let mut names = HashSet::new();
    for (i, q) in list.iter().enumerate() {
        let f = format!("{at}.queryParams[{i}]");
        if q.name.is_empty() {
            c.error(format!("{f}.name"), "empty");
            continue;
        }
        if !names.insert(q.name.as_str()) {
            c.error(
                format!("{f}.name"),
                format!(
                    "query parameter \"{}\" is matched twice in this match",
                    q.name
                ),
            );
            continue;
        }
        if let Some(value) = value_match(c, &format!("{f}.value"), q.type_, &q.value) {
            query.push(QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
    }
    let method = m
        .method
        .map(|m| Method::from_bytes(m.as_str().as_bytes()).unwrap_or(Method::GET));
    if c.errors.len() != before {
        return None;
    }
    Some(MatchDef {
        path: path?,
        method,
        headers,
        query,
    })
}

fn value_match(
    c: &mut Checker<'_, '_>,
    field: &str,
    kind: Option<ValueMatchType>,
    value: &str,
) -> Option<ValueMatch> {
    match kind.unwrap_or(ValueMatchType::Exact) {
        ValueMatchType::Exact => Some(ValueMatch::Exact(value.to_owned())),
        ValueMatchType::RegularExpression => anchored_regex(c, field, value).map(ValueMatch::Regex),
    }
}

/// Compiles a regular expression that must match a whole value.
fn anchored_regex(c: &mut Checker<'_, '_>, field: &str, pattern: &str) -> Option<Regex> {
    if pattern.len() > MAX_REGEX_LEN {
        c.error(
            field,
            format!(
                "a regular expression of {} characters, longer than the limit of {MAX_REGEX_LEN}",
                pattern.len()
            ),
        );
        return None;
    }
    match RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            let why = e.to_string();
            // The parser's message repeats the pattern (with our anchors) over several lines;
            // its last line says what is wrong.
            let last = why
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&why);
            c.error(
                field,
                format!(
                    "\"{pattern}\" is not a valid regular expression: {}",
                    last.trim()
                ),
            );
            None
        }
    }
}

/// An `Exact`/`PathPrefix` value or a rewrite target: requests are normalised before they are
/// matched, so a value that normalisation would change could never match.
fn check_path_value(c: &mut Checker<'_, '_>, field: &str, value: &str) -> bool {
    if value
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '?' || ch == '#')
    {
        c.error(
            field,
            format!("\"{value}\" is not a path: no spaces, control characters, ? or #"),
        );
        return false;
    }
    match tollgate_model::http_path::normalize(value) {
        Err(why) => {
            c.error(field, format!("\"{value}\" is not a valid path: {why}"));
            false
        }
        Ok(normal) if normal != value => {
            c.error(
                field,
                format!("\"{value}\" is not in normal form; requests are normalised before they are matched, so write \"{normal}\""),
            );
            false
        }
        Ok(_) => true,
    }
}

pub use tollgate_model::units::parse_duration;

#[cfg(test)]
mod tests;
