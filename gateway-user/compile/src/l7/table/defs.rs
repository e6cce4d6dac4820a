//! The validated definitions of a revision that rules and the proxy refer to: rate limits,
//! authentication, backends, listeners, the routes themselves and bans, gathered in
//! [`L7Policy`]. Apart from `table.rs` because they are plain data; the index built from them
//! is what `table.rs` holds.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::{HostPattern, MatchDef, RateLimitBackendFailure, Rule};

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
