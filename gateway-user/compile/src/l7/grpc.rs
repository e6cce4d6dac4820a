//! `GRPCRoute` objects. A gRPC call is an HTTP/2 `POST /<service>/<method>`, so a GRPCRoute is
//! checked for what its own CRD refuses ([`grpc_schema`]), written in its HTTPRoute form
//! ([`as_http_route`]: a method match becomes a path match on `POST`) and then goes through
//! the same checks, parent attachment, failure isolation and status as an HTTPRoute
//! (`super::route`). What differs is set on the result ([`finish`]): its rules are gRPC
//! rules (HTTP/2 to the backend, gRPC statuses for the proxy's own answers, no request
//! timeout, since streams may last), and its matches carry the characters of their exact
//! service and method, which rank them as the GRPCRoute spec says:
//!
//! - `Exact` service and method: the path `/service/method` (`Exact`), first;
//! - `Exact` service only: the path prefix `/service`, before any expression;
//! - everything else (method only, `RegularExpression`, no method match): an expression on
//!   the path, ranked by the characters of the exact service, then of the exact method, then
//!   by the number of header matches.
//!
//! Together with the host groups and the route order of the table this is the spec's order:
//! characters in a matching non-wildcard hostname, in a matching hostname, in a matching
//! service, in a matching method, header matches, then the oldest route, then
//! `namespace/name`, then rule order.
use std::collections::HashSet;
use std::sync::Arc;

use regex::RegexBuilder;
use tollgate_model::grpc_route::{
    GRPCBackendRef, GRPCMethodMatch, GRPCMethodMatchType, GRPCRoute, GRPCRouteFilter,
    GRPCRouteFilterType, GRPCRouteMatch,
};
use tollgate_model::route::{
    FilterType, HTTPBackendRef, HTTPHeaderMatch, HTTPMethod, HTTPPathMatch, HTTPRoute,
    HTTPRouteFilter, HTTPRouteMatch, HTTPRouteRule, HTTPRouteSpec, PathMatchType,
};
use tollgate_model::Checker;

use super::limits::*;
use super::table::RouteDef;

/// Matches per GRPCRoute rule (the CRD's `maxItems`).
pub const MAX_GRPC_MATCHES: usize = 8;
/// Characters of a header match value (the CRD's `maxLength`).
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Characters of a service or method (the CRD's `maxLength`).
pub const MAX_METHOD_LEN: usize = 1024;

/// The `route` label of a GRPCRoute's rules (metrics, access log): `grpc:namespace/name`, so
/// that it never reads as the HTTPRoute of the same name.
pub(super) fn label(ns: &str, name: &str) -> String {
    format!("grpc:{ns}/{name}")
}

/// What the GRPCRoute CRD (its OpenAPI schema and CEL rules) refuses at admission, beyond what
/// the HTTPRoute form is checked for: more than 8 matches in a rule, a method match with
/// neither service nor method, service and method characters of `Exact` matches, lengths, and
/// regular expressions that do not compile (refused here with the route, not per rule: the
/// field they are written in is not the HTTPRoute form's). A route with any of these is left
/// out whole, as an API server would refuse it.
pub(super) fn grpc_schema(c: &mut Checker<'_, '_>, r: &GRPCRoute) {
    for (i, rule) in r
        .spec
        .rules
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = format!("spec.rules[{i}]");
        let matches = rule.matches.as_deref().unwrap_or_default();
        c.count(&format!("{at}.matches"), matches.len(), MAX_GRPC_MATCHES);
        for (j, m) in matches.iter().enumerate() {
            let mat = format!("{at}.matches[{j}]");
            if let Some(method) = &m.method {
                method_schema(c, &format!("{mat}.method"), method);
            }
            for (k, h) in m.headers.as_deref().unwrap_or_default().iter().enumerate() {
                let n = h.value.chars().count();
                if n == 0 || n > MAX_HEADER_VALUE_LEN {
                    c.error(
                        format!("{mat}.headers[{k}].value"),
                        format!(
                            "{n} characters; a header match value has 1-{MAX_HEADER_VALUE_LEN}"
                        ),
                    );
                }
            }
        }
        for (j, b) in rule
            .backend_refs
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let filters = b.filters.as_deref().unwrap_or_default();
            c.count(
                &format!("{at}.backendRefs[{j}].filters"),
                filters.len(),
                MAX_FILTERS,
            );
        }
    }
}

/// The CEL rules of `GRPCMethodMatch`.
fn method_schema(c: &mut Checker<'_, '_>, at: &str, m: &GRPCMethodMatch) {
    if m.service.is_none() && m.method.is_none() {
        c.error(
            at,
            "one or both of service and method must be specified (leave method out to match every call)",
        );
        return;
    }
    let exact = m.type_.unwrap_or(GRPCMethodMatchType::Exact) == GRPCMethodMatchType::Exact;
    for (field, value) in [("service", &m.service), ("method", &m.method)] {
        let Some(value) = value else { continue };
        let f = format!("{at}.{field}");
        if value.chars().count() > MAX_METHOD_LEN {
            c.error(&f, format!("longer than {MAX_METHOD_LEN} characters"));
            continue;
        }
        if exact {
            let ok = if field == "service" {
                valid_service(value)
            } else {
                valid_method(value)
            };
            if !ok {
                let pattern = if field == "service" {
                    r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$"
                } else {
                    "^[A-Za-z_][A-Za-z_0-9]*$"
                };
                c.error(
                    f,
                    format!(
                        "\"{value}\": an Exact {field} must only contain valid characters (matching {pattern}); for an expression, use type: RegularExpression"
                    ),
                );
            }
        } else if let Err(e) = regex(value) {
            let why = e.to_string();
            let last = why
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&why)
                .trim()
                .to_owned();
            c.error(
                f,
                format!("\"{value}\" is not a valid regular expression: {last}"),
            );
        }
    }
}

/// A service or method expression, anchored, within the size limit of every expression.
fn regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn compiles(pattern: &str) -> bool {
    pattern.chars().count() <= MAX_METHOD_LEN && regex(pattern).is_ok()
}

/// A fully qualified service name as the CRD allows it: dot-separated identifiers (letters,
/// digits, `_`, not starting with a digit), an optional leading dot.
fn valid_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(valid_identifier)
}

/// A method name as the CRD allows it: one identifier.
fn valid_method(s: &str) -> bool {
    valid_identifier(s)
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The HTTPRoute form of a GRPCRoute: the same parents, hostnames, filters and backends; each
/// match a `POST` with the path its method match selects ([`method_path`]) and its header
/// matches (a header named again, in any case, is ignored, as the spec says). A rule without
/// matches gets one match of every gRPC call. Only valid values are turned into paths:
/// invalid ones are [`grpc_schema`]'s to report.
pub(super) fn as_http_route(r: &GRPCRoute) -> HTTPRoute {
    let rules = r.spec.rules.as_ref().map(|rules| {
        rules
            .iter()
            .map(|rule| {
                let matches: Vec<HTTPRouteMatch> = match rule.matches.as_deref() {
                    Some(list) if !list.is_empty() => list.iter().map(http_match).collect(),
                    _ => vec![http_match(&GRPCRouteMatch {
                        method: None,
                        headers: None,
                    })],
                };
                HTTPRouteRule {
                    name: rule.name.clone(),
                    matches: Some(matches),
                    filters: rule
                        .filters
                        .as_ref()
                        .map(|f| f.iter().map(http_filter).collect()),
                    backend_refs: rule
                        .backend_refs
                        .as_ref()
                        .map(|b| b.iter().map(http_backend_ref).collect()),
                    timeouts: None,
                    retry: None,
                }
            })
            .collect()
    });
    let mut out = HTTPRoute::new(
        r.metadata.name.as_deref().unwrap_or_default(),
        HTTPRouteSpec {
            parent_refs: r.spec.parent_refs.clone(),
            hostnames: r.spec.hostnames.clone(),
            rules,
        },
    );
    out.metadata = r.metadata.clone();
    out
}

fn http_match(m: &GRPCRouteMatch) -> HTTPRouteMatch {
    let mut seen = HashSet::new();
    let headers: Vec<HTTPHeaderMatch> = m
        .headers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|h| seen.insert(h.name.to_ascii_lowercase()))
        .map(|h| HTTPHeaderMatch {
            type_: h.type_,
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect();
    let (type_, value) = method_path(m.method.as_ref());
    HTTPRouteMatch {
        path: Some(HTTPPathMatch {
            type_: Some(type_),
            value: Some(value),
        }),
        headers: (!headers.is_empty()).then_some(headers),
        query_params: None,
        method: Some(HTTPMethod::POST),
    }
}

/// An identifier of the path: one segment, no `/`.
const SEGMENT: &str = "[^/]+";

/// The path match of a method match (see the module's documentation for the order).
fn method_path(m: Option<&GRPCMethodMatch>) -> (PathMatchType, String) {
    let Some(m) = m else {
        return (
            PathMatchType::RegularExpression,
            format!("/{SEGMENT}/{SEGMENT}"),
        );
    };
    let exact = m.type_.unwrap_or(GRPCMethodMatchType::Exact) == GRPCMethodMatchType::Exact;
    if exact {
        // A leading dot (a fully qualified protobuf name) is not sent on the wire.
        let service = m
            .service
            .as_deref()
            .filter(|s| valid_service(s))
            .map(|s| s.strip_prefix('.').unwrap_or(s));
        let method = m.method.as_deref().filter(|s| valid_method(s));
        return match (service, method) {
            (Some(s), Some(m)) => (PathMatchType::Exact, format!("/{s}/{m}")),
            (Some(s), None) => (PathMatchType::PathPrefix, format!("/{s}")),
            // Identifiers hold no regular expression syntax.
            (None, Some(m)) => (PathMatchType::RegularExpression, format!("/{SEGMENT}/{m}")),
            (None, None) => (
                PathMatchType::RegularExpression,
                format!("/{SEGMENT}/{SEGMENT}"),
            ),
        };
    }
    // A service never holds a `/`, so on a gRPC path (two segments) each expression meets
    // its own segment.
    let part = |p: &Option<String>| match p.as_deref() {
        Some(p) if !p.is_empty() && compiles(p) => format!("(?:{p})"),
        _ => SEGMENT.to_owned(),
    };
    (
        PathMatchType::RegularExpression,
        format!("/{}/{}", part(&m.service), part(&m.method)),
    )
}

fn http_filter(f: &GRPCRouteFilter) -> HTTPRouteFilter {
    HTTPRouteFilter {
        type_: match f.type_ {
            GRPCRouteFilterType::RequestHeaderModifier => FilterType::RequestHeaderModifier,
            GRPCRouteFilterType::ResponseHeaderModifier => FilterType::ResponseHeaderModifier,
            GRPCRouteFilterType::RequestMirror => FilterType::RequestMirror,
            GRPCRouteFilterType::ExtensionRef => FilterType::ExtensionRef,
        },
        request_header_modifier: f.request_header_modifier.clone(),
        response_header_modifier: f.response_header_modifier.clone(),
        url_rewrite: None,
        request_redirect: None,
        request_mirror: f.request_mirror.clone(),
        cors: None,
        extension_ref: f.extension_ref.clone(),
    }
}

fn http_backend_ref(b: &GRPCBackendRef) -> HTTPBackendRef {
    HTTPBackendRef {
        group: b.group.clone(),
        kind: b.kind.clone(),
        name: b.name.clone(),
        namespace: b.namespace.clone(),
        port: b.port,
        weight: b.weight,
        filters: b
            .filters
            .as_ref()
            .map(|f| f.iter().map(http_filter).collect()),
    }
}

/// Makes the rules of a GRPCRoute's compiled HTTPRoute form gRPC rules: HTTP/2 to the backend,
/// gRPC answers, no request timeout (a stream lasts as long as the call; GRPCRoute has no
/// timeouts), and the GRPCRoute precedence of each match.
pub(super) fn finish(def: &mut RouteDef, r: &GRPCRoute) {
    let rules = r.spec.rules.as_deref().unwrap_or_default();
    for rd in &mut def.rules {
        let rule = Arc::make_mut(&mut rd.rule);
        rule.grpc = true;
        rule.timeouts.request = None;
        rule.timeouts.backend_request = None;
        let raw = rules
            .get(rule.index)
            .and_then(|r| r.matches.as_deref())
            .unwrap_or_default();
        for (j, m) in rd.matches.iter_mut().enumerate() {
            let chars = raw.get(j).map_or((0, 0), |g| precedence(g.method.as_ref()));
            Arc::make_mut(m).grpc_chars = chars;
        }
    }
}

/// (characters of the exact service, of the exact method) of a method match; expressions
/// count 0 (their precedence is implementation-specific: exact values go first).
fn precedence(m: Option<&GRPCMethodMatch>) -> (usize, usize) {
    match m {
        Some(m) if m.type_.unwrap_or(GRPCMethodMatchType::Exact) == GRPCMethodMatchType::Exact => (
            m.service.as_deref().map_or(0, str::len),
            m.method.as_deref().map_or(0, str::len),
        ),
        _ => (0, 0),
    }
}
