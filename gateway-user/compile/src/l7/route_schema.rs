//! The checks of an `HTTPRoute` that the Gateway API's CRD (its OpenAPI schema and CEL rules)
//! makes at admission: a Kubernetes API server refuses such an object whole, so here too it is
//! left out whole (not one rule of it). What the API server accepts and only an
//! implementation can judge (a regular expression, a header the proxy owns, a backend that
//! does not exist) is checked per rule in [`super::route`].
use std::collections::HashSet;

use tollgate_model::route::{
    FilterType, HTTPPathModifier, HTTPRoute, HTTPRouteMatch, PathMatchType, PathModifierType,
};
use tollgate_model::{names, Checker};

use super::limits::*;

/// Checks what the CRD checks of a route's rules: counts, rule names, path characters,
/// `ReplacePrefixMatch` with exactly one `PathPrefix` match, a redirect without backendRefs,
/// and at most [`MAX_ROUTE_MATCHES`] matches across the rules.
pub(super) fn route_schema(c: &mut Checker<'_, '_>, r: &HTTPRoute) {
    let rules = r.spec.rules.as_deref().unwrap_or_default();
    c.count("spec.rules", rules.len(), MAX_RULES);
    let mut rule_names = HashSet::new();
    let mut total_matches = 0;
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(name) = &rule.name {
            if let Err(why) = names::section_name(name) {
                c.error(format!("{at}.name"), format!("\"{name}\" {why}"));
            } else if !rule_names.insert(name.as_str()) {
                c.error(
                    format!("{at}.name"),
                    format!("duplicate rule name \"{name}\""),
                );
            }
        }
        let matches = rule.matches.as_deref().unwrap_or_default();
        total_matches += matches.len();
        c.count(&format!("{at}.matches"), matches.len(), MAX_MATCHES);
        for (j, m) in matches.iter().enumerate() {
            path_characters(c, &format!("{at}.matches[{j}].path.value"), m);
        }
        let filters = rule.filters.as_deref().unwrap_or_default();
        c.count(&format!("{at}.filters"), filters.len(), MAX_FILTERS);
        let refs = rule.backend_refs.as_deref().unwrap_or_default();
        c.count(&format!("{at}.backendRefs"), refs.len(), MAX_BACKEND_REFS);
        for (j, f) in filters.iter().enumerate() {
            let fat = format!("{at}.filters[{j}]");
            let path = match f.type_ {
                FilterType::URLRewrite => f
                    .url_rewrite
                    .as_ref()
                    .and_then(|u| u.path.as_ref())
                    .map(|p| (format!("{fat}.urlRewrite.path"), p)),
                FilterType::RequestRedirect => {
                    if !refs.is_empty() {
                        c.error(
                            format!("{at}.backendRefs"),
                            "a rule with a RequestRedirect answers with the redirect; remove its backendRefs",
                        );
                    }
                    f.request_redirect
                        .as_ref()
                        .and_then(|r| r.path.as_ref())
                        .map(|p| (format!("{fat}.requestRedirect.path"), p))
                }
                _ => None,
            };
            if let Some((field, p)) = path {
                replace_prefix_needs_one_prefix(c, &field, p, matches);
            }
        }
    }
    if total_matches > MAX_ROUTE_MATCHES {
        c.error(
            "spec.rules",
            format!(
                "{total_matches} matches across the route's rules, more than the limit of {MAX_ROUTE_MATCHES} (the Gateway API's: 16 rules of up to 64 matches each are allowed, but not more than {MAX_ROUTE_MATCHES} matches in all); split the route"
            ),
        );
    }
}

/// The CRD's rule for `ReplacePrefixMatch`: the rule has exactly one match, a `PathPrefix`
/// one (an omitted `matches` is one `PathPrefix /` match), so the prefix it replaces is never
/// in doubt.
fn replace_prefix_needs_one_prefix(
    c: &mut Checker<'_, '_>,
    at: &str,
    p: &HTTPPathModifier,
    matches: &[HTTPRouteMatch],
) {
    if p.type_ != PathModifierType::ReplacePrefixMatch {
        return;
    }
    let kind = |m: &HTTPRouteMatch| {
        m.path
            .as_ref()
            .and_then(|p| p.type_)
            .unwrap_or(PathMatchType::PathPrefix)
    };
    let ok = match matches {
        [] => true,
        [one] => kind(one) == PathMatchType::PathPrefix,
        _ => false,
    };
    if !ok {
        c.error(
            format!("{at}.type"),
            format!(
                "ReplacePrefixMatch needs the rule to have exactly one match, and a PathPrefix one (the Gateway API's rule); this rule has {}: split it into one rule per prefix",
                match matches {
                    [one] => format!("one {:?} match", kind(one)),
                    _ => format!("{} matches", matches.len()),
                }
            ),
        );
    }
}

/// The CRD's pattern for `Exact` and `PathPrefix` values:
/// `^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$` (RFC 3986 path characters and
/// percent escapes). `/my[/]path01` or `/^` look like regular expressions and are refused.
fn path_characters(c: &mut Checker<'_, '_>, at: &str, m: &HTTPRouteMatch) {
    let Some(path) = &m.path else { return };
    if path.type_ == Some(PathMatchType::RegularExpression) {
        return;
    }
    let Some(value) = &path.value else { return };
    if value.is_empty() {
        c.error(at, "empty; a path starts with /");
        return;
    }
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |k: usize| bytes.get(k).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                c.error(
                    at,
                    format!("\"{value}\": a % starts an escape of two hex digits (write % as %25)"),
                );
                return;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&b)) {
            let ch = value[i..].chars().next().unwrap_or('?');
            let hint = if "[]^{}|\\".contains(ch) {
                " (for a regular expression, use type: RegularExpression)"
            } else {
                ""
            };
            c.error(
                at,
                format!(
                    "\"{value}\" holds '{}', which an {:?} path may not (the Gateway API allows letters, digits, -._~!$&'()*+,;=:@/ and %XX escapes){hint}",
                    ch.escape_default(),
                    path.type_.unwrap_or(PathMatchType::PathPrefix)
                ),
            );
            return;
        }
        i += 1;
    }
}
