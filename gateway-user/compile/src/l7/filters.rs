//! The filters of an `HTTPRoute` rule: each sets the field of its type and no other; header
//! modifiers leave the headers the proxy owns alone; path modifiers write paths in normal form.
use std::collections::HashSet;

use http::{HeaderName, HeaderValue};
use tollgate_model::route::{
    FilterType, HTTPHeaderFilter, HTTPPathModifier, HTTPRouteFilter, PathModifierType,
};
use tollgate_model::Checker;

use super::matches::check_path_value;
use super::table::{HeaderModifier, PathModifier};

/// A filter sets the field of its type and no other.
pub(super) fn check_filter_fields(c: &mut Checker<'_, '_>, at: &str, f: &HTTPRouteFilter) {
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

/// Why an `ExtensionRef` filter cannot be resolved: Tollgate has no custom filters. The
/// Gateway API says such a filter "MUST NOT be skipped": the requests it would have processed
/// are answered 500 instead.
pub(super) fn unresolved_extension(f: &HTTPRouteFilter) -> String {
    let part = |key: &str| {
        f.extension_ref
            .as_ref()
            .and_then(|r| r[key].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    format!(
        "ExtensionRef {}/{} {} cannot be resolved: Tollgate has no custom filters",
        part("group"),
        part("kind"),
        part("name")
    )
}

/// Checks a Request- or ResponseHeaderModifier; `reserved` are the headers the proxy owns.
pub(super) fn header_modifier(
    c: &mut Checker<'_, '_>,
    at: &str,
    h: &HTTPHeaderFilter,
    reserved: &[&str],
) -> Option<HeaderModifier> {
    let before = c.mark();
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
    c.clean_since(before).then_some(m)
}

/// Checks the path of a URLRewrite or RequestRedirect (that ReplacePrefixMatch has exactly
/// one PathPrefix match to replace is checked with the CRD's rules, in `route_schema`).
pub(super) fn path_modifier(
    c: &mut Checker<'_, '_>,
    at: &str,
    p: &HTTPPathModifier,
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
            let Some(v) = &p.replace_prefix_match else {
                c.error(format!("{at}.replacePrefixMatch"), "missing");
                return None;
            };
            // The empty string removes the prefix (the Gateway API's table: /foo/bar with
            // prefix /foo becomes /bar, /foo and /foo/ become /).
            (v.is_empty() || check_path_value(c, &format!("{at}.replacePrefixMatch"), v))
                .then(|| PathModifier::Prefix(v.clone()))
        }
    }
}
