//! `HTTPRoute` objects: hostnames, parent references (which listeners a route attaches to),
//! rules with their timeouts and retries, and backend references. Matches are checked in
//! [`super::matches`], filters in [`super::filters`].
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tollgate_model::gateway::GATEWAY_API_GROUP;
use tollgate_model::route::{
    FilterType, HTTPBackendRef, HTTPRoute, HTTPRouteMatch, HTTPRouteRule, PathMatchType,
};
use tollgate_model::{names, Checker};

use super::filters::{check_filter_fields, header_modifier, path_modifier};
use super::gateway::{GatewayInfo, ListenerRef};
use super::limits::*;
use super::matches::route_match;
use super::table::{
    Attachment, HostPattern, Redirect, Retry, RouteDef, RouteLimits, Rule, RuleDef, Timeouts,
    UrlRewrite, WeightedBackend,
};
use super::{parse_duration, port, PROXY_REQUEST_HEADERS, PROXY_RESPONSE_HEADERS};

/// Group of Tollgate's own kinds.
const TOLLGATE_GROUP: &str = tollgate_model::GROUP;

/// Checks an HTTPRoute: the listeners it attaches to and its rules, which carry the rate
/// limits, AuthPolicy and body limit of the policies that target the route.
#[allow(clippy::too_many_arguments)]
pub(super) fn route(
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
    let before = c.mark();
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
    if !parents.is_empty() && attachments.is_empty() && c.clean_since(before) {
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
    c.clean_since(before).then(|| RouteDef {
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

/// Checks one rule of a route: matches, filters, backends, timeouts and retries.
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
    let before = c.mark();
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
        after_send: false,
    };
    if let Some(r) = &raw.retry {
        retry.backoff = DEFAULT_RETRY_BACKOFF;
        retry.attempts = DEFAULT_RETRY_ATTEMPTS;
        retry.after_send = true;
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

    c.clean_since(before).then(|| RuleDef {
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

/// Checks one backendRef: a Backend of the route's own namespace, and its weight.
fn backend_ref(
    c: &mut Checker<'_, '_>,
    at: &str,
    ns: &str,
    b: &HTTPBackendRef,
    backends: &HashMap<(String, String), usize>,
) -> Option<WeightedBackend> {
    let before = c.mark();
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
    if !c.clean_since(before) {
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
