//! The matches of an `HTTPRoute` rule: path values in the normal form requests are matched in,
//! header and query parameter matches, and regular expressions (anchored, bounded in size).
use std::collections::HashSet;

use http::{HeaderName, Method};
use regex::{Regex, RegexBuilder};
use tollgate_model::route::{HTTPRouteMatch, PathMatchType, ValueMatchType};
use tollgate_model::Checker;

use super::limits::*;
use super::table::{HeaderMatch, MatchDef, PathMatch, QueryMatch, ValueMatch};

/// Checks one match of a rule: path, headers, query parameters and method.
pub(super) fn route_match(
    c: &mut Checker<'_, '_>,
    at: &str,
    m: &HTTPRouteMatch,
) -> Option<MatchDef> {
    let before = c.mark();
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
        // The Gateway API: only the first entry of an equivalent name (header names compare
        // case-insensitively, as `HeaderName`s do) is considered; the others are ignored.
        if !names.insert(name.clone()) {
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
        // As for headers, only the first entry of a name counts (query parameter names are
        // compared exactly).
        if !names.insert(q.name.as_str()) {
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
    if !c.clean_since(before) {
        return None;
    }
    Some(MatchDef {
        path: path?,
        method,
        headers,
        query,
        grpc_chars: (0, 0),
    })
}

/// A header or query parameter value: exact, or an anchored regular expression.
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
pub(super) fn anchored_regex(c: &mut Checker<'_, '_>, field: &str, pattern: &str) -> Option<Regex> {
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
pub(super) fn check_path_value(c: &mut Checker<'_, '_>, field: &str, value: &str) -> bool {
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
