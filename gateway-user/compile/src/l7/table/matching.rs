//! The conditions of one match of a rule (path, method, headers, query parameters) and the
//! request they are checked against ([`RequestView`]). Apart from `table.rs` because the
//! index files matches by their path only; the other conditions are checked here, on each
//! candidate it finds.
use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// A path condition.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The normalised path equals this.
    Exact(String),
    /// The normalised path starts with these whole segments (stored without a trailing `/`,
    /// except the root `/`).
    Prefix(String),
    /// The normalised path matches this expression in full (it is anchored).
    Regex(Regex),
}

impl PathMatch {
    /// Does the (normalised) path match?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => prefix_matches(p, path),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// Gateway API `PathPrefix`: element by element, so `/api` matches `/api`, `/api/` and
/// `/api/x`, and not `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A header or query parameter value condition.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// Matches in full (anchored).
    Regex(Regex),
}

impl ValueMatch {
    /// Does `value` match?
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == value,
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

/// A header condition.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// Its value (several values of the header are joined with `,`).
    pub value: ValueMatch,
}

/// A query parameter condition.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Parameter name (case-sensitive, compared after percent-decoding).
    pub name: String,
    /// Its value (the first occurrence, percent-decoded).
    pub value: ValueMatch,
}

/// One `matches[]` entry of a rule: every condition must hold.
#[derive(Debug, Clone)]
pub struct MatchDef {
    /// Path.
    pub path: PathMatch,
    /// Method, if any.
    pub method: Option<Method>,
    /// Headers.
    pub headers: Vec<HeaderMatch>,
    /// Query parameters.
    pub query: Vec<QueryMatch>,
    /// For a GRPCRoute match: the characters of its `Exact` service and method, which rank
    /// it ahead of the route's other matches on the same path (GRPCRoute precedence).
    /// `(0, 0)` for HTTPRoute matches and for regular expressions.
    pub grpc_chars: (usize, usize),
}

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Host, lower-case, without port or trailing dot.
    pub host: &'a str,
    /// Normalised path ([`tollgate_model::http_path::normalize`]).
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Raw query string (after `?`), if any.
    pub query: Option<&'a str>,
}

impl MatchDef {
    /// Do the conditions other than the path hold?
    pub fn conditions_match(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        self.headers.iter().all(|h| header_matches(h, req.headers))
            && self
                .query
                .iter()
                .all(|q| match query_param(req.query, &q.name) {
                    Some(v) => q.value.matches(&v),
                    None => false,
                })
    }

    /// Does the whole match hold?
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path) && self.conditions_match(req)
    }
}

fn header_matches(h: &HeaderMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&h.name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Ok(first) = first.to_str() else {
        return false;
    };
    match values.next() {
        None => h.value.matches(first),
        Some(second) => {
            let mut joined = String::from(first);
            for v in std::iter::once(second).chain(values) {
                let Ok(v) = v.to_str() else {
                    return false;
                };
                joined.push(',');
                joined.push_str(v);
            }
            h.value.matches(&joined)
        }
    }
}

/// The first value of query parameter `name` in `query`, percent-decoded (`+` is not a space:
/// this is RFC 3986, not form encoding). A parameter without `=` has the empty value.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    for pair in query?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_encoding::percent_decode_str(k).decode_utf8_lossy() == name {
            return Some(percent_encoding::percent_decode_str(v).decode_utf8_lossy());
        }
    }
    None
}
