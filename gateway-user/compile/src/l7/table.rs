//! The compiled L7 policy: validated definitions ([`L7Policy`]) and the index the proxy routes
//! with ([`RouteTable`]). Immutable once built; one `Arc<RouteTable>` per revision.
//!
//! Routing follows the Gateway API (`HTTPRoute` rule precedence):
//! 1. **Listener.** Of the listeners on the request's port, the one whose hostname matches the
//!    request's host most specifically: an exact name, else the longest matching wildcard,
//!    else the listener without a hostname. Only routes attached to that listener are looked
//!    at ("listener isolation"); no listener -> no route.
//! 2. **Host.** Among that listener's routes, rules of routes whose (effective) hostname
//!    matches the host exactly come first, then those of the longest matching wildcard, then
//!    those of routes without hostnames. A later group is only reached when no rule of an
//!    earlier group matches the request.
//! 3. **Match**, within a host group: an `Exact` path match, then `PathPrefix` matches from the
//!    longest prefix to the shortest, then `RegularExpression` matches; among equal paths, a
//!    match with a method first, then more header matches, then more query parameter matches,
//!    then the oldest route (`metadata.creationTimestamp`, when objects carry it), then route
//!    `namespace/name` in alphabetical order, then rule order, then match order. GRPCRoute
//!    matches become paths (`/service/method`) and rank among themselves first by the
//!    characters of their exact service, then of their exact method (see `super::grpc`).
//!
//! None of this loops over all routes: listeners and host groups are found with hash look-ups
//! (an exact name, then one look-up per label of the host for wildcards), exact paths with one
//! hash look-up, prefixes with one look-up per segment of the path, regular expressions with one
//! `RegexSet` pass. Only the candidates that share a path are then checked one by one.
//! [`super::reference`] states the same rules as plain loops over every route; property tests
//! hold this index to it.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use regex::{Regex, RegexSet};
pub use tollgate_model::ratelimit::RateLimitBackendFailure;

/// A hostname pattern of a listener or route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this (lower-case) name.
    Exact(String),
    /// Any name ending in this suffix, which starts with `.` (`*.example.com` is stored as
    /// `.example.com`): one or more labels before it.
    Wildcard(String),
    /// Any host.
    Any,
}

impl HostPattern {
    /// Reads `api.example.com` or `*.example.com` (already validated, any case).
    pub fn parse(s: &str) -> HostPattern {
        let s = s.to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(suffix) => HostPattern::Wildcard(suffix.to_owned()),
            None => HostPattern::Exact(s),
        }
    }

    /// Does `host` (lower-case, without port) match?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
            HostPattern::Any => true,
        }
    }

    /// The pattern as written (`*.example.com`), `*` for any.
    pub fn to_yaml(&self) -> String {
        match self {
            HostPattern::Exact(name) => name.clone(),
            HostPattern::Wildcard(suffix) => format!("*{suffix}"),
            HostPattern::Any => "*".to_owned(),
        }
    }

    /// The names both patterns accept, as one pattern (Gateway API: a route's hostnames are
    /// narrowed by its listener's hostname), or `None` when they share none.
    pub fn intersect(&self, other: &HostPattern) -> Option<HostPattern> {
        use HostPattern::*;
        match (self, other) {
            (Any, x) | (x, Any) => Some(x.clone()),
            (Exact(a), Exact(b)) => (a == b).then(|| Exact(a.clone())),
            (Exact(a), w @ Wildcard(_)) | (w @ Wildcard(_), Exact(a)) => {
                w.matches(a).then(|| Exact(a.clone()))
            }
            (Wildcard(a), Wildcard(b)) => {
                if b.ends_with(&**a) {
                    Some(Wildcard(b.clone()))
                } else if a.ends_with(&**b) {
                    Some(Wildcard(a.clone()))
                } else {
                    None
                }
            }
        }
    }
}

/// Values indexed by host pattern, found in Gateway API precedence order.
#[derive(Debug, Clone)]
pub struct HostIndex<T> {
    exact: HashMap<Box<str>, T>,
    wildcard: HashMap<Box<str>, T>,
    any: Option<T>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
        }
    }
}

impl<T> HostIndex<T> {
    /// The value for `pattern`, created with `make` when missing.
    pub fn entry(&mut self, pattern: &HostPattern, make: impl FnOnce() -> T) -> &mut T {
        match pattern {
            HostPattern::Exact(name) => self.exact.entry(name.as_str().into()).or_insert_with(make),
            HostPattern::Wildcard(suffix) => self
                .wildcard
                .entry(suffix.as_str().into())
                .or_insert_with(make),
            HostPattern::Any => self.any.get_or_insert_with(make),
        }
    }

    /// The value for exactly `pattern`.
    pub fn get(&self, pattern: &HostPattern) -> Option<&T> {
        match pattern {
            HostPattern::Exact(name) => self.exact.get(name.as_str()),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix.as_str()),
            HostPattern::Any => self.any.as_ref(),
        }
    }

    /// Every value whose pattern matches `host`, most specific first: the exact name, then
    /// wildcards from the longest suffix to the shortest, then the catch-all.
    pub fn matching<'a, 'h>(
        &'a self,
        host: &'h str,
    ) -> impl Iterator<Item = &'a T> + use<'a, 'h, T> {
        let exact = self.exact.get(host);
        let wildcards = host
            .char_indices()
            .filter(|&(i, c)| c == '.' && i > 0)
            .filter_map(move |(i, _)| self.wildcard.get(&host[i..]));
        exact.into_iter().chain(wildcards).chain(self.any.as_ref())
    }

    /// The most specific value whose pattern matches `host`.
    pub fn best<'a>(&'a self, host: &str) -> Option<&'a T> {
        self.matching(host).next()
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(self.any.as_ref())
    }

    /// Every (pattern, value).
    pub fn iter(&self) -> impl Iterator<Item = (HostPattern, &T)> {
        self.exact
            .iter()
            .map(|(k, v)| (HostPattern::Exact(k.to_string()), v))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(k, v)| (HostPattern::Wildcard(k.to_string()), v)),
            )
            .chain(self.any.iter().map(|v| (HostPattern::Any, v)))
    }
}

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

/// Header changes of `RequestHeaderModifier` / `ResponseHeaderModifier`.
#[derive(Debug, Clone, Default)]
pub struct HeaderModifier {
    /// Replace (or add).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append (to an existing value, with `,`).
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
            let joined = match headers.get(name) {
                Some(old) => {
                    let mut bytes = old.as_bytes().to_vec();
                    bytes.push(b',');
                    bytes.extend_from_slice(value.as_bytes());
                    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| value.clone())
                }
                None => value.clone(),
            };
            headers.insert(name.clone(), joined);
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
    /// Request header changes.
    pub request_headers: Option<HeaderModifier>,
    /// Response header changes.
    pub response_headers: Option<HeaderModifier>,
    /// Host/path rewrite.
    pub rewrite: Option<UrlRewrite>,
    /// Redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// Cross-origin requests: preflights answered, CORS headers on responses.
    pub cors: Option<Arc<super::cors::Cors>>,
    /// Backends that get a copy of (a share of) the requests (`RequestMirror`).
    pub mirrors: Vec<Mirror>,
    /// Backends and weights (empty with a redirect, and when no backendRef resolved).
    pub backends: Vec<WeightedBackend>,
    /// The weight of the backendRefs that did not resolve (a Backend that does not exist, an
    /// unknown kind, another namespace): the share of requests that would have gone to them
    /// is answered 500, as the Gateway API requires.
    pub unresolved_weight: u32,
    /// Set when every request the rule matches is answered 500 (no backendRefs and no
    /// redirect; a policy that targets the route was left out).
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
    /// Short label for the access log and metrics (`no_backend_refs`, `policy_left_out`).
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

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's IP address, grouped by prefix.
    ClientIp(ClientPrefixes),
    /// The value of this request header (requests without it share one bucket).
    Header(HeaderName),
    /// The consumer the route's AuthPolicy authenticated.
    Consumer,
}

/// Prefix lengths that group client addresses into one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientPrefixes {
    /// IPv4 (0-32).
    pub v4: u8,
    /// IPv6 (0-128).
    pub v6: u8,
}

impl Default for ClientPrefixes {
    /// One bucket per IPv4 address and per IPv6 /64.
    fn default() -> Self {
        ClientPrefixes {
            v4: tollgate_model::ratelimit::DEFAULT_IPV4_PREFIX,
            v6: tollgate_model::ratelimit::DEFAULT_IPV6_PREFIX,
        }
    }
}

/// Where a request carries its API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// In this request header.
    Header(HeaderName),
    /// In this query parameter.
    Query(String),
}

/// The API-key check of an AuthPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyDef {
    /// Where the key is.
    pub location: KeyLocation,
    /// The key files (`<secrets dir>/<namespace>/<name>/keys`).
    pub files: Vec<SecretRef>,
}

/// An `AuthPolicy`, compiled. Its files are read by `proxy::auth` when the revision is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthDef {
    /// `namespace/name` of the policy.
    pub policy: Arc<str>,
    /// API keys.
    pub api_key: Option<ApiKeyDef>,
    /// htpasswd files of basic authentication (`<secrets dir>/<namespace>/<name>/htpasswd`);
    /// empty: no basic authentication.
    pub basic: Vec<SecretRef>,
    /// JWT providers, tried in order; empty: no JWT authentication.
    pub jwt: Vec<JwtProviderDef>,
    /// Client certificate authentication: the field naming the consumer.
    pub client_certificate: Option<tollgate_model::auth::CertificateField>,
    /// The consumers allowed through; `None`: any authenticated one.
    pub allowed_consumers: Option<Vec<Arc<str>>>,
}

/// Where a request carries its JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// This request header (an optional `Bearer ` prefix is dropped).
    Header(HeaderName),
    /// This query parameter.
    Query(String),
}

/// Where a JWT provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksDef {
    /// Fetched from this `http` or `https` URL every `refresh`; `ca`: a ConfigMap whose
    /// `ca.crt` is trusted besides the system's roots.
    Uri {
        /// The URL.
        url: String,
        /// The extra CA.
        ca: Option<SecretRef>,
        /// How often the set is fetched again.
        refresh: Duration,
    },
    /// The JWKS JSON (checked by the compiler).
    Inline(Arc<str>),
}

/// A JWT provider of an AuthPolicy, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtProviderDef {
    /// Name.
    pub name: String,
    /// The `iss` required, if any.
    pub issuer: Option<String>,
    /// The `aud` values accepted (any one); empty: not checked.
    pub audiences: Vec<String>,
    /// The keys.
    pub jwks: JwksDef,
    /// The claim naming the consumer.
    pub consumer_claim: String,
    /// Claims sent as request headers.
    pub claim_headers: Vec<(String, HeaderName)>,
    /// Where the token is.
    pub location: TokenLocation,
    /// Clock skew allowed on `exp` and `nbf`.
    pub clock_skew: Duration,
}

/// One limit of a `RateLimitPolicy`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDef {
    /// `namespace/name` of the policy: the `policy` label of the metric.
    pub policy: Arc<str>,
    /// Position in the policy's `limits`.
    pub index: usize,
    /// Name in the `RateLimit-Policy` and `RateLimit` headers.
    pub name: String,
    /// What requests are counted by.
    pub key: LimitKey,
    /// Requests per `per` (the refill rate).
    pub requests: u32,
    /// The window (a whole number of seconds, at least one).
    pub per: Duration,
    /// Requests a full bucket allows at once.
    pub burst: u32,
    /// Count requests over the limit, refuse none.
    pub shadow: bool,
    /// Where the limit is counted.
    pub scope: LimitScope,
}

/// Where a limit is counted (`RateLimitPolicy` `scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitScope {
    /// By this node alone (a token bucket per key).
    #[default]
    Node,
    /// Across the agents that share a Redis, in fixed windows of `per`.
    Cluster {
        /// What the limit does while Redis cannot be reached.
        on_failure: RateLimitBackendFailure,
    },
}

impl RateLimitDef {
    /// Whether the limit is counted across the cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.scope, LimitScope::Cluster { .. })
    }

    /// The `RateLimit-Policy` item of this limit (draft-ietf-httpapi-ratelimit-headers-09):
    /// `"name";q=requests;w=seconds`.
    pub fn policy_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.requests,
            self.per.as_secs()
        )
    }
}

/// The rate limits that apply to a route's requests.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    /// Indexes into [`L7Policy::rate_limits`]: a request must be within every one of them.
    pub limits: Vec<usize>,
    /// The `RateLimit-Policy` response header: the items of the enforced limits (shadow limits
    /// stay invisible to clients); `None` when there are none.
    pub policy_header: Option<HeaderValue>,
}

impl RouteLimits {
    /// The limits `limits` (indexes into `defs`), with their header.
    pub fn new(limits: Vec<usize>, defs: &[RateLimitDef]) -> RouteLimits {
        let items: Vec<String> = limits
            .iter()
            .map(|&i| &defs[i])
            .filter(|d| !d.shadow)
            .map(RateLimitDef::policy_item)
            .collect();
        let policy_header = (!items.is_empty())
            .then(|| HeaderValue::from_str(&items.join(", ")).ok())
            .flatten();
        RouteLimits {
            limits,
            policy_header,
        }
    }
}

/// How a backend spreads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancing {
    /// In turn.
    RoundRobin,
    /// Fewer in flight, of two random picks.
    LeastRequest,
}

/// A `Backend`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendDef {
    /// `namespace/name`.
    pub label: String,
    /// `host:port` authorities (`10.0.0.1:80`, `[2001:db8::1]:80`, `orders.internal:80`).
    pub endpoints: Vec<String>,
    /// Algorithm.
    pub load_balancing: LoadBalancing,
    /// Consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint stays out.
    pub ejection_time: Duration,
    /// TLS to the endpoints; `None`: plain HTTP.
    pub tls: Option<BackendTlsDef>,
    /// The HTTP version spoken to the endpoints (`appProtocol`).
    pub protocol: BackendProtocol,
}

/// The HTTP version a Backend's endpoints are spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendProtocol {
    /// HTTP/1.1 (the default; `kubernetes.io/ws`, `kubernetes.io/wss`).
    #[default]
    Http1,
    /// HTTP/2: with prior knowledge in cleartext (`kubernetes.io/h2c`), or in TLS with ALPN
    /// `h2` (`tollgate.dev/h2`).
    Http2,
}

/// A Backend's `spec.tls`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTlsDef {
    /// SNI, and the name the endpoints' certificates must be valid for.
    pub hostname: String,
    /// The trust anchors.
    pub ca: BackendCa,
    /// The client certificate presented (mutual TLS).
    pub client_certificate: Option<SecretRef>,
}

/// Where a Backend's trust anchors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendCa {
    /// The system's trust store.
    System,
    /// The `ca.crt` of these ConfigMaps.
    Refs(Vec<SecretRef>),
}

/// A listener, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerDef {
    /// `namespace/name` of its Gateway.
    pub gateway: String,
    /// Listener name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// Hostname ([`HostPattern::Any`] when it has none).
    pub hostname: HostPattern,
    /// TLS termination (`HTTPS` listeners); `None` for plain `HTTP`.
    pub tls: Option<ListenerTls>,
}

/// TLS settings of an `HTTPS` listener, validated. The files they name are read by the proxy
/// when the revision is applied (compiling stays a pure function of the documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The certificate Secrets, in order (several serve different key types, e.g. ECDSA and
    /// RSA; the first one the client can use is served).
    pub certificates: Vec<SecretRef>,
    /// ConfigMaps of CA certificates that client certificates must chain to (mTLS); empty:
    /// no client certificate is asked for.
    pub client_cas: Vec<SecretRef>,
}

/// A Secret (or ConfigMap) named by a listener: `namespace/name` (standalone, a directory of
/// files).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    /// Namespace (the Gateway's unless the reference names one).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A route attached to a listener, with the hostnames it serves there (its own, narrowed by the
/// listener's).
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Index into [`L7Policy::listeners`].
    pub listener: usize,
    /// Effective hostnames (never empty; `[Any]` when neither side names one).
    pub hostnames: Vec<HostPattern>,
}

/// A rule and its matches.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// What it does.
    pub rule: Arc<Rule>,
    /// When it applies (never empty: the default is one `PathPrefix /` match).
    pub matches: Vec<Arc<MatchDef>>,
}

/// An HTTPRoute, validated.
#[derive(Debug, Clone)]
pub struct RouteDef {
    /// `namespace/name`.
    pub label: Arc<str>,
    /// Position in the route order (oldest first, then by `namespace/name`).
    pub order: u32,
    /// Listeners it is attached to.
    pub attachments: Vec<Attachment>,
    /// Its rules.
    pub rules: Vec<RuleDef>,
}

/// Every L7 object of a revision, validated: what the index is built from, and what the
/// reference matcher reads.
#[derive(Debug, Clone, Default)]
pub struct L7Policy {
    /// Every listener of every Gateway.
    pub listeners: Vec<ListenerDef>,
    /// Every route, in route order.
    pub routes: Vec<RouteDef>,
    /// Every Backend.
    pub backends: Vec<BackendDef>,
    /// Every limit of every RateLimitPolicy.
    pub rate_limits: Vec<RateLimitDef>,
    /// Every AuthPolicy.
    pub auth: Vec<AuthDef>,
    /// The `banOnAbuse` of every policy that has one, by who bans and `namespace/name`.
    pub bans: HashMap<BanKey, BanDef>,
}

/// Who bans (`auth` or `ratelimit`) and the `namespace/name` of the policy: the key of a
/// `banOnAbuse`.
pub type BanKey = (tollgate_model::BanKind, Arc<str>);

/// A policy's `banOnAbuse`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanDef {
    /// Failures (401s or 429s) from one client (address or IPv6 prefix) that trigger a ban.
    pub threshold: u32,
    /// The window they are counted in (from the first one).
    pub within: Duration,
    /// How long the ban lasts.
    pub block_for: Duration,
    /// IPv6 clients are counted and banned per prefix of this length (48-128); IPv4 clients
    /// per address.
    pub ipv6_prefix: u8,
}

/// The precedence of a candidate among those that share its path: smaller first.
type Order = (
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    u32,
    usize,
    usize,
);

/// One match of one rule, where the index files it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The rule.
    pub rule: Arc<Rule>,
    /// The match.
    pub matched: Arc<MatchDef>,
    /// Position of the match in the rule's `matches`.
    pub match_index: usize,
    order: Order,
    regex_index: usize,
}

impl Candidate {
    fn new(route: &RouteDef, rule: &RuleDef, match_index: usize) -> Candidate {
        let m = &rule.matches[match_index];
        Candidate {
            rule: rule.rule.clone(),
            matched: m.clone(),
            match_index,
            order: (
                std::cmp::Reverse(m.grpc_chars.0),
                std::cmp::Reverse(m.grpc_chars.1),
                m.method.is_none(),
                std::cmp::Reverse(m.headers.len()),
                std::cmp::Reverse(m.query.len()),
                route.order,
                rule.rule.index,
                match_index,
            ),
            regex_index: 0,
        }
    }

    /// The `PathPrefix` this candidate matched with, for `ReplacePrefixMatch`.
    pub fn prefix(&self) -> Option<&str> {
        match &self.matched.path {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

/// The candidates of one host group, by path.
#[derive(Debug, Clone, Default)]
pub struct PathIndex {
    exact: HashMap<Box<str>, Vec<Candidate>>,
    prefix: HashMap<Box<str>, Vec<Candidate>>,
    regex: Vec<Candidate>,
    regex_set: Option<RegexSet>,
}

impl PathIndex {
    fn add(&mut self, c: Candidate) {
        match &c.matched.path {
            PathMatch::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(c),
            PathMatch::Prefix(p) => self.prefix.entry(p.as_str().into()).or_default().push(c),
            PathMatch::Regex(_) => self.regex.push(c),
        }
    }

    /// Sorts each bucket by precedence and builds the regex set.
    fn finish(&mut self) -> Result<(), regex::Error> {
        for list in self.exact.values_mut().chain(self.prefix.values_mut()) {
            list.sort_by_key(|c| c.order);
        }
        self.regex.sort_by_key(|c| c.order);
        if !self.regex.is_empty() {
            let patterns: Vec<String> = self
                .regex
                .iter()
                .map(|c| match &c.matched.path {
                    PathMatch::Regex(re) => re.as_str().to_owned(),
                    _ => unreachable!("only regex candidates are in the regex list"),
                })
                .collect();
            for (i, c) in self.regex.iter_mut().enumerate() {
                c.regex_index = i;
            }
            self.regex_set = Some(RegexSet::new(patterns)?);
        }
        Ok(())
    }

    /// The first candidate, in precedence order, that the request matches.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Candidate> {
        fn first<'s>(
            list: Option<&'s Vec<Candidate>>,
            req: &RequestView<'_>,
        ) -> Option<&'s Candidate> {
            list?.iter().find(|c| c.matched.conditions_match(req))
        }
        if let Some(c) = first(self.exact.get(req.path), req) {
            return Some(c);
        }
        // Prefixes, longest first: the path without a trailing slash, then each shorter
        // run of whole segments, down to the root.
        let mut p = req.path.trim_end_matches('/');
        loop {
            let key = if p.is_empty() { "/" } else { p };
            if let Some(c) = first(self.prefix.get(key), req) {
                return Some(c);
            }
            if p.is_empty() {
                break;
            }
            p = &p[..p.rfind('/').unwrap_or(0)];
        }
        let set = self.regex_set.as_ref()?;
        let hits = set.matches(req.path);
        if !hits.matched_any() {
            return None;
        }
        self.regex
            .iter()
            .find(|c| hits.matched(c.regex_index) && c.matched.conditions_match(req))
    }

    fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>()
            + self.prefix.values().map(Vec::len).sum::<usize>()
            + self.regex.len()
    }
}

/// One listener's routes.
#[derive(Debug, Clone)]
pub struct ListenerRoutes {
    /// Index into [`L7Policy::listeners`].
    pub listener: usize,
    /// Host groups.
    pub hosts: HostIndex<PathIndex>,
}

impl ListenerRoutes {
    /// The rule for a request that reached this listener.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Candidate> {
        self.hosts.matching(req.host).find_map(|g| g.find(req))
    }
}

/// One port's listeners.
#[derive(Debug, Clone, Default)]
pub struct PortRoutes {
    /// Listeners by hostname.
    pub listeners: HostIndex<ListenerRoutes>,
}

impl PortRoutes {
    /// The listener that serves `host`, and the rule for the request, if any.
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Candidate> {
        self.listeners.best(req.host)?.find(req)
    }
}

/// The routing index of a revision, with the definitions it was built from.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// By listening port.
    pub ports: BTreeMap<u16, PortRoutes>,
    /// The validated definitions.
    pub policy: L7Policy,
}

impl RouteTable {
    /// Builds the index. Fails only when a `RegexSet` cannot be built from expressions that
    /// each compiled alone (a size limit).
    pub fn build(policy: L7Policy) -> Result<RouteTable, regex::Error> {
        let mut ports: BTreeMap<u16, PortRoutes> = BTreeMap::new();
        for (i, l) in policy.listeners.iter().enumerate() {
            ports
                .entry(l.port)
                .or_default()
                .listeners
                .entry(&l.hostname, || ListenerRoutes {
                    listener: i,
                    hosts: HostIndex::default(),
                });
        }
        for route in &policy.routes {
            for att in &route.attachments {
                let l = &policy.listeners[att.listener];
                let Some(port) = ports.get_mut(&l.port) else {
                    continue;
                };
                let Some(lr) = port.listeners_mut(&l.hostname) else {
                    continue;
                };
                for host in &att.hostnames {
                    let group = lr.hosts.entry(host, PathIndex::default);
                    for rule in &route.rules {
                        for m in 0..rule.matches.len() {
                            group.add(Candidate::new(route, rule, m));
                        }
                    }
                }
            }
        }
        for port in ports.values_mut() {
            for lr in port.listeners.values_mut() {
                for group in lr.hosts.values_mut() {
                    group.finish()?;
                }
            }
        }
        Ok(RouteTable { ports, policy })
    }

    /// The listening ports.
    pub fn listen_ports(&self) -> Vec<u16> {
        self.ports.keys().copied().collect()
    }

    /// Candidates filed in the index (a route attached to two listeners counts twice).
    pub fn candidates(&self) -> usize {
        self.ports
            .values()
            .flat_map(|p| p.listeners.values())
            .flat_map(|l| l.hosts.values())
            .map(PathIndex::len)
            .sum()
    }
}

impl PortRoutes {
    fn listeners_mut(&mut self, pattern: &HostPattern) -> Option<&mut ListenerRoutes> {
        match pattern {
            HostPattern::Exact(n) => self.listeners.exact.get_mut(n.as_str()),
            HostPattern::Wildcard(s) => self.listeners.wildcard.get_mut(s.as_str()),
            HostPattern::Any => self.listeners.any.as_mut(),
        }
    }
}

impl<T> HostIndex<T> {
    fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(self.any.as_mut())
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
