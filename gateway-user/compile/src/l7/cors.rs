//! The `CORS` filter of an HTTPRoute rule (Gateway API v1.6, GEP-1767): checked here, and the
//! decisions the proxy asks of it (is this origin allowed, what does a preflight answer, what
//! does a response carry) made here too, so that they are a pure function of the rule.
//!
//! - A **preflight** (an `OPTIONS` request with `Origin` and `Access-Control-Request-Method`)
//!   is answered by the proxy itself, never forwarded: 200 with the CORS headers when the
//!   origin is allowed; 403 without them when it is not.
//! - Any other request with an allowed `Origin` is forwarded as usual, and its response gets
//!   `Access-Control-Allow-Origin` (the request's origin, echoed: with `Vary: Origin`, this is
//!   right for `*` with or without credentials), `Access-Control-Allow-Credentials` and
//!   `Access-Control-Expose-Headers` as configured. A request from another origin gets none.
//! - With `allowCredentials`, a wildcard (`*`) in `allowMethods` or `allowHeaders` is answered
//!   with what the preflight asked for, since browsers do not honour `*` for requests with
//!   credentials.
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use tollgate_model::route::HTTPCORSFilter;
use tollgate_model::{names, Checker};

/// Most entries in each list of the filter (the CRD's bound).
const MAX_ENTRIES: usize = 64;
/// The methods a CORS filter may name (the CRD's enum), besides `*`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// `maxAge` when the filter does not say.
const DEFAULT_MAX_AGE: i64 = 5;

/// A list of the filter: every value (`*`), or these.
#[derive(Debug, Clone, PartialEq)]
enum List {
    Any,
    Some(HeaderValue),
    None,
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq)]
struct OriginPattern {
    scheme: String,
    /// The host, lower case; for `*.example.com`, `.example.com`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// A checked CORS filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    /// `None`: every origin.
    origins: Option<Vec<OriginPattern>>,
    credentials: bool,
    methods: List,
    headers: List,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// `scheme://host[:port]`, split; `None` when it is not of that shape.
fn split_origin(origin: &str) -> Option<(String, String, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().ok()?)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    // "If not included, port 80 is assumed for http scheme origins, and port 443 is assumed
    // for https origins" (HTTPCORSFilter): a default port written out is the same origin.
    let port = match (scheme.as_str(), port) {
        ("http", Some(80)) | ("https", Some(443)) => None,
        (_, p) => p,
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

impl OriginPattern {
    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.scheme == scheme
            && self.port == port
            && if self.wildcard {
                host.len() > self.host.len() && host.ends_with(&self.host)
            } else {
                self.host == host
            }
    }
}

impl Cors {
    /// Whether requests from `origin` (the `Origin` header's value) are allowed.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        match &self.origins {
            None => !origin.is_empty(),
            Some(patterns) => match split_origin(origin) {
                Some((scheme, host, port)) => {
                    patterns.iter().any(|p| p.matches(&scheme, &host, port))
                }
                None => false,
            },
        }
    }

    /// The headers of the answer to a preflight from an allowed `origin`.
    pub fn preflight(&self, origin: &HeaderValue, request: &HeaderMap) -> HeaderMap {
        let mut h = HeaderMap::new();
        self.common(origin, &mut h);
        let asked = |name: HeaderName| request.get(name).cloned();
        let wildcard = HeaderValue::from_static("*");
        let methods = match &self.methods {
            List::Any if self.credentials => asked(header::ACCESS_CONTROL_REQUEST_METHOD),
            List::Any => Some(wildcard.clone()),
            List::Some(v) => Some(v.clone()),
            List::None => None,
        };
        if let Some(v) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        let headers = match &self.headers {
            List::Any if self.credentials => asked(header::ACCESS_CONTROL_REQUEST_HEADERS),
            List::Any => Some(wildcard),
            List::Some(v) => Some(v.clone()),
            List::None => None,
        };
        if let Some(v) = headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h
    }

    /// Adds the CORS headers to the response of a request from an allowed `origin`.
    pub fn respond(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        self.common(origin, h);
    }

    fn common(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        let expose = match &self.expose {
            // With credentials a `*` would be read as a header named `*` (the Fetch
            // standard), and the Gateway API forbids it: the response's own header names
            // are listed instead (none for a preflight).
            Some(v) if self.credentials && v == "*" => exposed_names(h),
            other => other.clone(),
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        // The answer depends on the origin: caches must keep one per origin.
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

/// The names of a response's headers that a page may not read without
/// `Access-Control-Expose-Headers`, comma-separated (`None` when there are none): all but the
/// CORS-safelisted response headers, and `Set-Cookie`, which a page never reads.
fn exposed_names(h: &HeaderMap) -> Option<HeaderValue> {
    const SAFELISTED: [HeaderName; 8] = [
        header::CACHE_CONTROL,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::PRAGMA,
        header::SET_COOKIE,
    ];
    let names: Vec<&str> = h
        .keys()
        .filter(|k| !SAFELISTED.contains(k))
        .map(HeaderName::as_str)
        .collect();
    if names.is_empty() {
        return None;
    }
    HeaderValue::from_str(&names.join(", ")).ok()
}

/// Checks a rule's CORS filter at `at` (`spec.rules[i].filters[j].cors`).
pub(super) fn cors(c: &mut Checker<'_, '_>, at: &str, f: &HTTPCORSFilter) -> Option<Cors> {
    let before = c.mark();
    let origins = f.allow_origins.as_deref().unwrap_or_default();
    c.count(&format!("{at}.allowOrigins"), origins.len(), MAX_ENTRIES);
    let mut patterns = Vec::new();
    let mut any_origin = false;
    for (i, o) in origins.iter().enumerate() {
        let field = format!("{at}.allowOrigins[{i}]");
        if o == "*" {
            any_origin = true;
            continue;
        }
        match split_origin(o) {
            Some((scheme, host, port)) => {
                let (wildcard, bare) = match host.strip_prefix("*.") {
                    Some(rest) => (true, rest),
                    None => (false, host.as_str()),
                };
                let ip = bare.starts_with('[') || bare.parse::<std::net::IpAddr>().is_ok();
                if !ip {
                    if let Err(why) = names::hostname(bare, false) {
                        c.error(&field, format!("\"{o}\": the host {why}"));
                        continue;
                    }
                }
                if scheme != "http" && scheme != "https" {
                    c.error(&field, format!("\"{o}\": the scheme must be http or https"));
                    continue;
                }
                patterns.push(OriginPattern {
                    scheme,
                    host: if wildcard {
                        format!(".{bare}")
                    } else {
                        bare.to_owned()
                    },
                    wildcard,
                    port,
                });
            }
            None => c.error(
                &field,
                format!(
                    "\"{o}\": expected scheme://host[:port] (the host may start with *.), or *"
                ),
            ),
        }
    }
    if any_origin && origins.len() > 1 {
        c.error(
            format!("{at}.allowOrigins"),
            "* allows every origin: it must be the only entry",
        );
    }

    let methods = list(
        c,
        &format!("{at}.allowMethods"),
        f.allow_methods.as_deref(),
        |m| {
            METHODS
                .contains(&m)
                .then_some(())
                .ok_or_else(|| format!("expected one of {} or *", METHODS.join(", ")))
        },
    );
    let headers = list(
        c,
        &format!("{at}.allowHeaders"),
        f.allow_headers.as_deref(),
        header_name,
    );
    let expose = match list(
        c,
        &format!("{at}.exposeHeaders"),
        f.expose_headers.as_deref(),
        header_name,
    ) {
        List::Any => Some(HeaderValue::from_static("*")),
        List::Some(v) => Some(v),
        List::None => None,
    };
    let max_age = match f.max_age {
        None => DEFAULT_MAX_AGE,
        Some(a) if (1..=i64::from(i32::MAX)).contains(&a) => a,
        Some(a) => {
            c.error(
                format!("{at}.maxAge"),
                format!("{a} is out of range 1-{}", i32::MAX),
            );
            DEFAULT_MAX_AGE
        }
    };
    c.clean_since(before).then(|| Cors {
        origins: (!any_origin).then_some(patterns),
        credentials: f.allow_credentials.unwrap_or(false),
        methods,
        headers,
        expose,
        max_age: HeaderValue::from(max_age),
    })
}

fn header_name(name: &str) -> Result<(), String> {
    HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| "is not a valid header name".to_owned())
}

/// Checks one list of names (`*` alone, or names `check` accepts, no duplicates) and joins it
/// into one header value.
fn list(
    c: &mut Checker<'_, '_>,
    at: &str,
    entries: Option<&[String]>,
    check: impl Fn(&str) -> Result<(), String>,
) -> List {
    let entries = entries.unwrap_or_default();
    c.count(at, entries.len(), MAX_ENTRIES);
    if entries.iter().any(|e| e == "*") {
        if entries.len() > 1 {
            c.error(at, "* allows everything: it must be the only entry");
        }
        return List::Any;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if let Err(why) = check(e) {
            c.error(format!("{at}[{i}]"), format!("\"{e}\" {why}"));
        } else if !seen.insert(e.to_ascii_lowercase()) {
            c.error(format!("{at}[{i}]"), format!("\"{e}\" is given twice"));
        }
    }
    if entries.is_empty() {
        return List::None;
    }
    match HeaderValue::from_str(&entries.join(", ")) {
        Ok(v) => List::Some(v),
        Err(_) => List::None,
    }
}
