//! What a matched rule does: its filters (header changes, rewrites, redirects, mirrors), its
//! weighted backends, timeouts and retries, and the limits and authentication it applies
//! ([`Rule`]). Apart from `table.rs` because this is what the proxy acts on once the index has
//! found the rule.
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::RouteLimits;

/// Header changes of `RequestHeaderModifier` / `ResponseHeaderModifier`.
#[derive(Debug, Clone, Default)]
pub struct HeaderModifier {
    /// Replace (or add).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append to the existing values (`Set-Cookie`: a field of its own).
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Delete.
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the changes: set, then add, then remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            // Set-Cookie values cannot be joined (RFC 9110 5.3): one field each.
            if name == header::SET_COOKIE || !headers.contains_key(name) {
                headers.append(name.clone(), value.clone());
                continue;
            }
            // Every value already there is kept: all of them and the new one become one
            // comma-separated value, the Gateway API's example (`foo` add `bar`: `foo,bar`).
            let mut bytes = Vec::new();
            for old in headers.get_all(name) {
                bytes.extend_from_slice(old.as_bytes());
                bytes.push(b',');
            }
            bytes.extend_from_slice(value.as_bytes());
            match HeaderValue::from_bytes(&bytes) {
                Ok(joined) => {
                    headers.insert(name.clone(), joined);
                }
                Err(_) => {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A path change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched `PathPrefix`.
    Prefix(String),
}

impl PathModifier {
    /// The new path for `path` (normalised), which matched `prefix` when this is a
    /// [`PathModifier::Prefix`] (the compiler only allows it on rules whose matches are all
    /// `PathPrefix`).
    pub fn apply(&self, path: &str, prefix: Option<&str>) -> String {
        match self {
            PathModifier::Full(p) => p.clone(),
            PathModifier::Prefix(replacement) => {
                let prefix = prefix.unwrap_or("/");
                let rest = if prefix == "/" {
                    path
                } else {
                    path.strip_prefix(prefix).unwrap_or(path)
                };
                let rest = if rest == "/" && prefix == "/" {
                    ""
                } else {
                    rest
                };
                let mut out = replacement.trim_end_matches('/').to_owned();
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

/// `URLRewrite`.
#[derive(Debug, Clone, Default)]
pub struct UrlRewrite {
    /// New Host.
    pub hostname: Option<HeaderValue>,
    /// New path.
    pub path: Option<PathModifier>,
}

/// `RequestRedirect`.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// `http` or `https`; `None`: the request's.
    pub scheme: Option<String>,
    /// `None`: the request's host.
    pub hostname: Option<String>,
    /// `None`: the request's path.
    pub path: Option<PathModifier>,
    /// `None`: derived as the Gateway API says (the scheme's port, or the listener's).
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
}

/// Timeouts of a rule (`None`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the arrival of the request to the end of the response, retries included.
    pub request: Option<Duration>,
    /// One attempt to a backend, to the end of its response.
    pub backend_request: Option<Duration>,
}

/// Retries of a rule.
///
/// What is retried (Gateway API `HTTPRouteRetry`): a connection that could not be made
/// (refused, connect timeout, TLS handshake), always, since nothing was sent; `codes`; and,
/// when `after_send`, a per-try timeout (`timeouts.backendRequest`) or a connection closed
/// before the response started, which may have reached the backend, so only for an
/// idempotent method (RFC 9110 9.2.2) or a request body none of which was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Backend status codes that are retried.
    pub codes: Vec<u16>,
    /// Retries after the first attempt (connection failures count too).
    pub attempts: u32,
    /// Wait before the first retry (it doubles for the next ones).
    pub backoff: Duration,
    /// Failures after the request was sent (per-try timeout, a reset before the response)
    /// are retried too: the rule has a `retry` stanza. Without one, only connections that
    /// could not be made are retried (the Gateway API: implementations SHOULD NOT retry by
    /// default where the request may have been processed).
    pub after_send: bool,
}

/// A backend of a rule, by index into [`RouteTable::backends`].
#[derive(Debug, Clone)]
pub struct WeightedBackend {
    /// Index into [`L7Policy::backends`] / [`RouteTable::backends`].
    pub backend: usize,
    /// Share of the requests.
    pub weight: u32,
    /// The backendRef's own filters: applied only to the requests sent to it.
    pub filters: Option<Arc<BackendRefFilters>>,
}

// Two backendRefs are equal when they name the same backend with the same weight and the same
// filters (the same compiled object: filters are compared by identity).
impl PartialEq for WeightedBackend {
    fn eq(&self, other: &Self) -> bool {
        self.backend == other.backend
            && self.weight == other.weight
            && match (&self.filters, &other.filters) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for WeightedBackend {}

/// The filters of one backendRef (Gateway API: header modifiers; applied after the rule's).
#[derive(Debug, Clone, Default)]
pub struct BackendRefFilters {
    /// Request header changes.
    pub request_headers: Option<HeaderModifier>,
    /// Response header changes.
    pub response_headers: Option<HeaderModifier>,
}

/// One rule of an HTTPRoute, compiled: what happens to a request it matches.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `namespace/name` of the route: the `route` label of the metrics.
    pub route: Arc<str>,
    /// Position in the route's `rules`.
    pub index: usize,
    // The filters below are boxed: most rules set none of them, and inline they were more
    // than half of a rule's 600 bytes (docs/benchmarks-issue13.md, round 6).
    /// Request header changes.
    pub request_headers: Option<Box<HeaderModifier>>,
    /// Response header changes.
    pub response_headers: Option<Box<HeaderModifier>>,
    /// Host/path rewrite.
    pub rewrite: Option<Box<UrlRewrite>>,
    /// Redirect instead of forwarding.
    pub redirect: Option<Box<Redirect>>,
    /// Cross-origin requests: preflights answered, CORS headers on responses.
    pub cors: Option<Arc<crate::l7::cors::Cors>>,
    /// Backends that get a copy of (a share of) the requests (`RequestMirror`).
    pub mirrors: Vec<Mirror>,
    /// Backends and weights (empty with a redirect, and when no backendRef resolved).
    pub backends: Vec<WeightedBackend>,
    /// The weight of the backendRefs that did not resolve (a Backend that does not exist, an
    /// unknown kind, another namespace): the share of requests that would have gone to them
    /// is answered 500, as the Gateway API requires.
    pub unresolved_weight: u32,
    /// Set when every request the rule matches is answered 500 (no backendRefs and no
    /// redirect; an `ExtensionRef` filter; a policy that targets the route was left out).
    pub failure: Option<RuleFailure>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries.
    pub retry: Retry,
    /// The rate limits of the route (from the RateLimitPolicies that target it).
    pub rate_limits: RouteLimits,
    /// The AuthPolicy of the route (index into [`L7Policy::auth`]), if one targets it.
    pub auth: Option<usize>,
    /// The largest request body, from the route's BackendTrafficPolicy (`None`: the proxy's
    /// default, `--max-request-body`).
    pub max_request_body: Option<u64>,
    /// A GRPCRoute rule: requests go to the backend in HTTP/2 whatever its `appProtocol`,
    /// and the answers the proxy makes itself are gRPC statuses.
    pub grpc: bool,
}

/// One `RequestMirror` of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Index into [`L7Policy::backends`].
    pub backend: usize,
    /// `numerator / denominator` of the requests are copied.
    pub numerator: u32,
    /// At least 1.
    pub denominator: u32,
}

impl Mirror {
    /// Whether the request with `roll` (uniform in `0..denominator`) is copied.
    pub fn selects(&self, roll: u32) -> bool {
        roll < self.numerator
    }
}

/// Why a rule answers 500 to every request it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// Short label for the access log and metrics (`no_backend_refs`, `unresolved_filter`,
    /// `policy_left_out`).
    pub reason: &'static str,
    /// For people: the body of the 500.
    pub message: Arc<str>,
}

impl Rule {
    /// Picks a backend in proportion to the weights, with `roll` uniform in
    /// `0..total weight`; `None` when every weight is 0 or the roll falls in the share of
    /// the backendRefs that did not resolve (the request is answered 500).
    pub fn pick_backend(&self, roll: u64) -> Option<usize> {
        self.pick(roll).map(|b| b.backend)
    }

    /// As [`Rule::pick_backend`], the backendRef itself (with its filters).
    pub fn pick(&self, roll: u64) -> Option<&WeightedBackend> {
        let mut left = roll;
        for b in &self.backends {
            if left < u64::from(b.weight) {
                return Some(b);
            }
            left -= u64::from(b.weight);
        }
        None
    }

    /// Sum of the weights, those of unresolved backendRefs included.
    pub fn total_weight(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| u64::from(b.weight))
            .sum::<u64>()
            + u64::from(self.unresolved_weight)
    }
}
