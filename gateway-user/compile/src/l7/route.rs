//! `HTTPRoute` objects: hostnames, parent references (which listeners a route attaches to),
//! rules with their timeouts and retries, and backend references. Parents are attached in
//! [`super::parents`], matches checked in [`super::matches`], filters in [`super::filters`].
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tollgate_model::route::{
    FilterType, HTTPBackendRef, HTTPRequestMirrorFilter, HTTPRoute, HTTPRouteMatch, HTTPRouteRule,
};
use tollgate_model::{names, Checker, PolicyError};

use super::backend_ref::{backend_ref, BackendRef, Backends};
use super::classes::Grants;
use super::filters::{check_filter_fields, header_modifier, path_modifier, unresolved_extension};
use super::gateway::{GatewayInfo, Namespaces};
use super::limits::*;
use super::matches::route_match;
use super::parents::{parent, parent_ref};
use super::status::{self, reason, Condition, ParentStatus, RouteStatus};
use super::table::{
    Attachment, HostPattern, Mirror, Redirect, Retry, RouteDef, RouteLimits, Rule, RuleDef,
    RuleFailure, Timeouts, UrlRewrite,
};
use super::{parse_duration, port, PROXY_REQUEST_HEADERS, PROXY_RESPONSE_HEADERS};

/// What an HTTPRoute compiled into: the route (`None` when it is left out), its status per
/// parent, and the problems that leave only part of it out (dropped rules, rules that answer
/// 500, parents it could not attach to).
pub(super) struct RouteOutcome {
    pub(super) def: Option<RouteDef>,
    pub(super) status: RouteStatus,
    pub(super) partial: Vec<PolicyError>,
    /// The listeners not served (references that do not resolve) it attached to, as
    /// (`namespace/gateway`, listener): counted in their `attachedRoutes`.
    pub(super) unserved: BTreeSet<(String, String)>,
}

/// What the references of a route may resolve to.
pub(super) struct Refs<'a, 'b> {
    /// Namespace labels, for listeners that select routes' namespaces.
    pub(super) namespaces: &'a Namespaces,
    /// What backendRefs may name: Backends and, in Kubernetes mode, Services.
    pub(super) backends: &'a mut Backends<'b>,
    /// The ReferenceGrants, for backendRefs to another namespace.
    pub(super) grants: &'a Grants<'a>,
    /// The kind of the route (`HTTPRoute`, `GRPCRoute`): what ReferenceGrants must name and
    /// what its status says it is.
    pub(super) kind: &'static str,
}

/// What a route takes from the policies that target it.
pub(super) struct RoutePolicies<'a> {
    /// Its rate limits.
    pub(super) limits: &'a RouteLimits,
    /// Its AuthPolicy.
    pub(super) auth: Option<usize>,
    /// Its BackendTrafficPolicy's body limit.
    pub(super) max_request_body: Option<u64>,
    /// A policy targeting it that was left out (`Kind namespace/name`): the route answers 500.
    pub(super) left_out: Option<&'a str>,
}

/// Checks an HTTPRoute (or a GRPCRoute in its HTTPRoute form, `super::grpc`) with Gateway API
/// failure isolation: a problem the CRD would refuse the object for (`schema`, for an
/// HTTPRoute `route_schema`), or no parent or no valid rule, leaves the route out (the
/// problems are recorded in `c`); a rule that is invalid in itself is dropped
/// (`PartiallyInvalid`); a backendRef that does not resolve makes its share of the rule's
/// requests answer 500 (`ResolvedRefs=False`).
#[allow(clippy::too_many_arguments)]
pub(super) fn route(
    c: &mut Checker<'_, '_>,
    ns: &str,
    label: String,
    order: u32,
    r: &HTTPRoute,
    schema: &dyn Fn(&mut Checker<'_, '_>),
    gateways: &HashMap<(String, String), GatewayInfo>,
    refs: &mut Refs<'_, '_>,
    policies: &RoutePolicies<'_>,
) -> RouteOutcome {
    let before = c.mark();
    let spec = &r.spec;
    let mut partial = Vec::new();

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
    schema(c);

    // Parents: each is accepted or not on its own.
    let mut attachments: BTreeMap<usize, Vec<HostPattern>> = BTreeMap::new();
    let mut unserved = BTreeSet::new();
    let parents = spec.parent_refs.as_deref().unwrap_or_default();
    if parents.is_empty() {
        c.error(
            "spec.parentRefs",
            "missing: name the Gateway (and optionally the listener) this route attaches to",
        );
    }
    c.count("spec.parentRefs", parents.len(), MAX_PARENT_REFS);
    let mut accepted = Vec::with_capacity(parents.len());
    for (i, p) in parents.iter().enumerate() {
        let at = format!("spec.parentRefs[{i}]");
        let result = parent(
            ns,
            refs.kind,
            p,
            gateways,
            refs.namespaces,
            &hostnames,
            &mut attachments,
            &mut unserved,
        );
        accepted.push(match result {
            Ok(()) => Condition::new(
                status::ACCEPTED,
                true,
                reason::ACCEPTED,
                "the route is attached to this parent",
            ),
            Err((field, why, message)) => {
                partial.push(PolicyError::new(
                    c.file(),
                    c.object(),
                    format!("{at}{field}"),
                    format!("not attached to this parent: {message}"),
                ));
                Condition::new(status::ACCEPTED, false, why, message)
            }
        });
    }

    // Rules: each checked on its own, so that an invalid one is dropped and the rest serve.
    // Omitted, they are the CRD's default, as the API server would store them: one rule
    // matching every path, with no backends (so answered 500, as any rule without backends).
    let default_rules;
    let raw_rules = match spec.rules.as_deref() {
        Some(rules) => rules,
        None => {
            default_rules = [HTTPRouteRule::default()];
            &default_rules[..]
        }
    };
    if raw_rules.is_empty() {
        c.error(
            "spec.rules",
            "empty: a route needs at least one rule (without `rules` at all, it has one rule matching every path)",
        );
    }
    let mut rules = Vec::new();
    let mut dropped: Vec<PolicyError> = Vec::new();
    let mut unresolved: Vec<(&'static str, PolicyError)> = Vec::new();
    let route_label: Arc<str> = label.as_str().into();
    for (i, raw) in raw_rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut errors = Vec::new();
        let mut rc = Checker::new(c.file(), c.object(), &mut errors);
        let mut rule_unresolved = Vec::new();
        let rule = rule(
            &mut rc,
            &at,
            i,
            ns,
            &route_label,
            raw,
            refs,
            policies,
            &mut rule_unresolved,
        );
        match rule {
            Some(rule) if errors.is_empty() => {
                rules.push(rule);
                unresolved.extend(rule_unresolved);
            }
            _ => {
                // A dropped rule's references are reported with it.
                errors.extend(rule_unresolved.into_iter().map(|(_, e)| e));
                dropped.extend(errors)
            }
        }
    }
    let object_errors: HashSet<String> = c
        .problems_since(before)
        .iter()
        .map(|e| e.location.field.clone())
        .collect();
    let schema_ok = c.clean_since(before);
    // Attached only to listeners that are not served, the route is valid, and served nowhere.
    let any_parent = !attachments.is_empty() || !unserved.is_empty();

    // The route is left out when the CRD would refuse it, when it attaches nowhere, or when
    // none of its rules is valid: every problem goes to `c`.
    let left_out_why = if !schema_ok {
        Some(
            c.problems_since(before)
                .first()
                .map(|e| format!("{}: {}", e.location.field, e.message))
                .unwrap_or_default(),
        )
    } else if !any_parent && !parents.is_empty() {
        Some("the route is attached to no listener".to_owned())
    } else if rules.is_empty() && !raw_rules.is_empty() {
        Some("none of its rules is valid".to_owned())
    } else {
        None
    };
    if let Some(why) = left_out_why {
        // Every problem of a route left out is reported with it: why no parent took it, and
        // the problems of its rules (but a field the schema pass named is not named twice).
        if schema_ok && !any_parent {
            for p in partial.drain(..) {
                c.error(p.location.field, p.message);
            }
        }
        for e in dropped {
            if !object_errors.contains(&e.location.field) {
                c.error(e.location.field, e.message);
            }
        }
        // A parent that took the route is told why it is left out; the others keep the
        // reason they did not take it for.
        let conditions = |accepted: &Condition| {
            if accepted.is_true() {
                vec![Condition::new(
                    status::ACCEPTED,
                    false,
                    reason::UNSUPPORTED_VALUE,
                    format!("left out of the revision: {why}"),
                )]
            } else {
                vec![accepted.clone()]
            }
        };
        return RouteOutcome {
            def: None,
            status: RouteStatus {
                kind: refs.kind,
                namespace: ns.to_owned(),
                name: r.metadata.name.clone().unwrap_or_default(),
                file: c.file().to_owned(),
                served: false,
                parents: parents
                    .iter()
                    .zip(&accepted)
                    .map(|(p, a)| ParentStatus {
                        parent_ref: parent_ref(ns, p),
                        conditions: conditions(a),
                    })
                    .collect(),
            },
            partial: Vec::new(),
            unserved: BTreeSet::new(),
        };
    }

    // Served, maybe in part. An ExtensionRef filter of a served rule cannot be resolved (its
    // rule answers 500): a reference to a kind Tollgate does not serve.
    let mut extensions = Vec::new();
    for rule in &rules {
        let i = rule.rule.index;
        let filters = raw_rules[i].filters.as_deref().unwrap_or_default();
        for (j, f) in filters.iter().enumerate() {
            if f.type_ == FilterType::ExtensionRef {
                extensions.push(PolicyError::new(
                    c.file(),
                    c.object(),
                    format!("spec.rules[{i}].filters[{j}].extensionRef"),
                    unresolved_extension(f),
                ));
            }
        }
    }
    let mut conditions = Vec::new();
    let first = unresolved
        .first()
        .map(|(why, e)| (*why, e))
        .or_else(|| extensions.first().map(|e| (reason::INVALID_KIND, e)));
    let resolved = match first {
        None => Condition::new(
            status::RESOLVED_REFS,
            true,
            reason::RESOLVED_REFS,
            "every backendRef resolved",
        ),
        Some((why, e)) => Condition::new(
            status::RESOLVED_REFS,
            false,
            why,
            format!("{}: {}", e.location.field, e.message),
        ),
    };
    conditions.push(resolved);
    for (_, e) in unresolved {
        partial.push(PolicyError {
            message: format!(
                "its share of the rule's requests is answered 500: {}",
                e.message
            ),
            ..e
        });
    }
    for e in extensions {
        partial.push(PolicyError {
            message: format!("the rule's requests are answered 500: {}", e.message),
            ..e
        });
    }
    if !dropped.is_empty() {
        let mut fields: Vec<String> = dropped
            .iter()
            .map(|e| {
                let f = &e.location.field;
                f.find(']').map_or(f.clone(), |end| f[..=end].to_owned())
            })
            .collect();
        fields.dedup();
        conditions.push(Condition::new(
            status::PARTIALLY_INVALID,
            true,
            reason::UNSUPPORTED_VALUE,
            format!(
                "Dropped Rule(s): {}; {}",
                fields.join(", "),
                dropped
                    .iter()
                    .map(|e| format!("{}: {}", e.location.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
        for e in dropped {
            partial.push(PolicyError {
                message: format!("rule dropped, the route's other rules serve: {}", e.message),
                ..e
            });
        }
    }
    for rule in &rules {
        if let Some(f) = &rule.rule.failure {
            if f.reason == NO_BACKEND_REFS {
                partial.push(PolicyError::new(
                    c.file(),
                    c.object(),
                    format!("spec.rules[{}].backendRefs", rule.rule.index),
                    f.message.to_string(),
                ));
            }
        }
    }
    if let Some(policy) = policies.left_out {
        let message = format!(
            "every request of this route is answered 500: {policy}, which targets it, was left out of the revision (serving without it could let through what it refuses)"
        );
        partial.push(PolicyError::new(c.file(), c.object(), "", &message));
        conditions.push(Condition::new(
            status::POLICIES_APPLIED,
            false,
            reason::POLICY_LEFT_OUT,
            message,
        ));
    }
    let status = RouteStatus {
        kind: refs.kind,
        namespace: ns.to_owned(),
        name: r.metadata.name.clone().unwrap_or_default(),
        file: c.file().to_owned(),
        served: true,
        parents: parents
            .iter()
            .zip(accepted)
            .map(|(p, a)| ParentStatus {
                parent_ref: parent_ref(ns, p),
                conditions: std::iter::once(a)
                    .chain(conditions.iter().cloned())
                    .collect(),
            })
            .collect(),
    };
    // Kept for the revision's life: the rules and (below) the attachments' host names are cut
    // to their length (most routes have one rule and one hostname per listener, in vectors
    // whose first push made room for four).
    rules.shrink_to_fit();
    RouteOutcome {
        def: Some(RouteDef {
            label: route_label,
            order,
            attachments: attachments
                .into_iter()
                .map(|(listener, mut hostnames)| {
                    hostnames.shrink_to_fit();
                    Attachment {
                        listener,
                        hostnames,
                    }
                })
                .collect(),
            rules,
        }),
        status,
        partial,
        unserved,
    }
}

/// The failure label of a rule without backendRefs.
const NO_BACKEND_REFS: &str = "no_backend_refs";
/// The failure label of a rule with a filter that cannot be resolved (`ExtensionRef`).
const UNRESOLVED_FILTER: &str = "unresolved_filter";

/// Checks one rule of a route: matches, filters, backends, timeouts and retries.
#[allow(clippy::too_many_arguments)]
fn rule(
    c: &mut Checker<'_, '_>,
    at: &str,
    index: usize,
    ns: &str,
    route: &Arc<str>,
    raw: &HTTPRouteRule,
    refs: &mut Refs<'_, '_>,
    policies: &RoutePolicies<'_>,
    unresolved: &mut Vec<(&'static str, PolicyError)>,
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
    let mut matches = Vec::new();
    for (j, m) in raw_matches.iter().enumerate() {
        if let Some(m) = route_match(c, &format!("{at}.matches[{j}]"), m) {
            matches.push(Arc::new(m));
        }
    }

    // Filters.
    let filters = raw.filters.as_deref().unwrap_or_default();
    let mut seen_types = HashSet::new();
    let mut request_headers = None;
    let mut response_headers = None;
    let mut rewrite = None;
    let mut redirect = None;
    let mut cors = None;
    let mut mirrors = Vec::new();
    let mut extension = None;
    for (j, f) in filters.iter().enumerate() {
        let fat = format!("{at}.filters[{j}]");
        // A rule may mirror to several backends, and have several ExtensionRef filters; every
        // other filter type is given once.
        if !matches!(
            f.type_,
            FilterType::RequestMirror | FilterType::ExtensionRef
        ) && !seen_types.insert(format!("{:?}", f.type_))
        {
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
                    let path = u
                        .path
                        .as_ref()
                        .and_then(|p| path_modifier(c, &format!("{fat}.urlRewrite.path"), p));
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
                        .and_then(|p| path_modifier(c, &format!("{rat}.path"), p));
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
            FilterType::CORS => {
                if let Some(f) = &f.cors {
                    cors = super::cors::cors(c, &format!("{fat}.cors"), f).map(Arc::new);
                }
            }
            FilterType::RequestMirror => {
                if let Some(m) = &f.request_mirror {
                    let mat = format!("{fat}.requestMirror");
                    if let Some(mirror) = mirror(c, &mat, ns, m, refs, unresolved) {
                        mirrors.push(mirror);
                    }
                }
            }
            // Not skipped, as the Gateway API requires: the rule answers 500 (below), and
            // `route` reports the reference.
            FilterType::ExtensionRef => {
                extension.get_or_insert_with(|| unresolved_extension(f));
            }
        }
    }
    if rewrite.is_some() && redirect.is_some() {
        c.error(
            format!("{at}.filters"),
            "URLRewrite and RequestRedirect cannot both be used in one rule",
        );
    }

    // Backends: a reference that does not resolve takes its share of the requests to a 500
    // (the Gateway API's rule), the others serve.
    let backend_refs = raw.backend_refs.as_deref().unwrap_or_default();
    let mut weighted = Vec::new();
    let mut unresolved_weight = 0u32;
    for (j, b) in backend_refs.iter().enumerate() {
        let bat = format!("{at}.backendRefs[{j}]");
        match backend_ref(c, &bat, ns, b, refs.backends, refs.grants, refs.kind) {
            BackendRef::Resolved(w) => weighted.push(w),
            BackendRef::Unresolved(why, field, message, weight) => {
                unresolved_weight = unresolved_weight.saturating_add(weight);
                unresolved.push((why, PolicyError::new(c.file(), c.object(), field, message)));
            }
            BackendRef::Invalid => {}
        }
    }
    let failure = if let Some(policy) = policies.left_out {
        Some(RuleFailure {
            reason: "policy_left_out",
            message: format!("{policy}, which guards this route, was left out of the revision")
                .into(),
        })
    } else if let Some(why) = extension {
        Some(RuleFailure {
            reason: UNRESOLVED_FILTER,
            message: format!("{why}: the requests this rule matches are answered 500").into(),
        })
    } else if backend_refs.is_empty() && redirect.is_none() {
        Some(RuleFailure {
            reason: NO_BACKEND_REFS,
            message: "this rule has no backendRefs (and no RequestRedirect): the requests it matches are answered 500".into(),
        })
    } else {
        None
    };

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
            request_headers: request_headers.map(Box::new),
            response_headers: response_headers.map(Box::new),
            rewrite: rewrite.map(Box::new),
            redirect: redirect.map(Box::new),
            cors,
            mirrors,
            backends: weighted,
            unresolved_weight,
            failure,
            timeouts,
            retry,
            rate_limits: policies.limits.clone(),
            auth: policies.auth,
            max_request_body: policies.max_request_body,
            grpc: false,
        }),
        matches,
    })
}

/// Checks a `RequestMirror` filter: its share, and its backend, resolved as a backendRef is.
/// A backend that does not resolve is reported (`ResolvedRefs=False`) and mirrored to by no
/// request; the rule serves as if the filter were not there.
fn mirror(
    c: &mut Checker<'_, '_>,
    at: &str,
    ns: &str,
    m: &HTTPRequestMirrorFilter,
    refs: &mut Refs<'_, '_>,
    unresolved: &mut Vec<(&'static str, PolicyError)>,
) -> Option<Mirror> {
    let before = c.mark();
    let (numerator, denominator) = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            c.error(at, "set percent or fraction, not both");
            (0, 1)
        }
        (Some(p), None) if (0..=100).contains(&p) => (p as u32, 100),
        (Some(p), None) => {
            c.error(
                format!("{at}.percent"),
                format!("{p} is out of range 0-100"),
            );
            (0, 1)
        }
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if !(1..=i64::from(i32::MAX)).contains(&d) {
                c.error(
                    format!("{at}.fraction.denominator"),
                    format!("{d} is out of range 1-{}", i32::MAX),
                );
                (0, 1)
            } else if !(0..=d).contains(&f.numerator) {
                c.error(
                    format!("{at}.fraction.numerator"),
                    format!("{} is out of range 0-{d} (the denominator)", f.numerator),
                );
                (0, 1)
            } else {
                (f.numerator as u32, d as u32)
            }
        }
        (None, None) => (1, 1),
    };
    let b = &m.backend_ref;
    let as_ref = HTTPBackendRef {
        group: b.group.clone(),
        kind: b.kind.clone(),
        name: b.name.clone(),
        namespace: b.namespace.clone(),
        port: b.port,
        weight: None,
        filters: None,
    };
    let resolved = backend_ref(
        c,
        &format!("{at}.backendRef"),
        ns,
        &as_ref,
        refs.backends,
        refs.grants,
        refs.kind,
    );
    if !c.clean_since(before) {
        return None;
    }
    match resolved {
        BackendRef::Resolved(w) => Some(Mirror {
            backend: w.backend,
            numerator,
            denominator,
        }),
        BackendRef::Unresolved(why, field, message, _) => {
            unresolved.push((
                why,
                PolicyError::new(
                    c.file(),
                    c.object(),
                    field,
                    format!("{message} (the mirror is not used)"),
                ),
            ));
            None
        }
        BackendRef::Invalid => None,
    }
}
