//! `RateLimitPolicy` (`tollgate.dev/v1alpha1`): request rate limits attached to HTTPRoutes with
//! `targetRefs` (Gateway API policy attachment, as Envoy Gateway does). This type is also the
//! CRD (`manifests/crds/ratelimitpolicy.yaml`). Values are checked by `compile::l7`.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Token-bucket limits on the requests of the HTTPRoutes named in `targetRefs`. A request must
/// be within every limit of every policy that targets its route; one that is not gets `429 Too
/// Many Requests` (in `enforce` mode).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    plural = "ratelimitpolicies",
    namespaced,
    doc = "Request rate limits of Tollgate's L7 proxy, attached to HTTPRoutes.",
    category = "tollgate",
    derive = "PartialEq",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// The HTTPRoutes (in the policy's namespace) whose requests are limited (1-16).
    pub target_refs: Vec<PolicyTargetReference>,

    /// The limits (1-16). A request must be within all of them.
    pub limits: Vec<RateLimit>,

    /// `enforce` (the default): refuse requests over a limit with 429. `shadow`: let them
    /// through, and count them in `tollgate_http_ratelimited_total` and the access log.
    #[serde(default)]
    pub mode: RateLimitMode,

    /// Puts a client address refused with 429 too often into the XDP blocklist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_on_abuse: Option<super::ban::RateLimitBanOnAbuse>,

    /// `Node` (the default): each agent enforces the limits on its own, so behind a load
    /// balancer over N nodes a key gets up to N times them. `Cluster`: the limits hold across
    /// every agent, counted in Redis (the agent's `--ratelimit-redis`) in fixed windows of
    /// `per`; `burst` must then be omitted or equal `requests`.
    #[serde(default)]
    pub scope: RateLimitScope,

    /// With `scope: Cluster`, what the limits do while the agent cannot reach Redis (or has
    /// none configured): `local` (the default) enforces each limit's share on this node alone
    /// (`requests` divided by the agent's `--ratelimit-agents`), `allow` lets every request
    /// through, `deny` refuses every request with 429. Only with `scope: Cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_backend_failure: Option<RateLimitBackendFailure>,
}

/// Where the limits of a policy are counted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RateLimitScope {
    /// On each node, on its own.
    #[default]
    Node,
    /// Across every node, in Redis.
    Cluster,
}

/// What a `scope: Cluster` limit does while its shared counters cannot be reached.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitBackendFailure {
    /// Enforce this node's share of the limit (`requests / --ratelimit-agents`).
    #[default]
    Local,
    /// Let every request through.
    Allow,
    /// Refuse every request with 429.
    Deny,
}

/// A reference to the object a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target: `gateway.networking.k8s.io`.
    pub group: String,
    /// Kind of the target: `HTTPRoute`.
    pub kind: String,
    /// Name of the HTTPRoute, in the policy's namespace.
    pub name: String,
}

/// What a limit counts requests by: each distinct value has its own bucket.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitKey {
    /// The client's IP address (the socket peer, or `X-Forwarded-For` when the peer is a
    /// trusted proxy).
    #[serde(rename = "clientIP")]
    ClientIp,
    /// The value of the request header named in `header`. Requests without that header share
    /// one bucket of their own.
    #[serde(rename = "header")]
    Header,
    /// The authenticated consumer. Needs an AuthPolicy, which is not built yet: refused.
    #[serde(rename = "consumer")]
    Consumer,
}

/// One token-bucket limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Name of the limit in the `RateLimit-Policy` and `RateLimit` response headers (a DNS
    /// label). Omitted: the policy's name when it has one limit, else `<policy>-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `clientIP`, `header` or `consumer` (not built yet).
    pub key: RateLimitKey,
    /// How client addresses are grouped into buckets (only with `key: clientIP`). Omitted: one
    /// bucket per IPv4 address and one per IPv6 /64, so that a client cannot escape the limit by
    /// rotating through the addresses of its /64.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpBuckets>,
    /// The request header whose value is the key (only with `key: header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Requests allowed per `per`, per key (1-1000000000): the rate at which the bucket
    /// refills.
    pub requests: i64,
    /// The window: a whole number of seconds as a duration (`1s`, `1m`, `1h`, `1m30s`; at most
    /// 24h).
    pub per: String,
    /// Requests a full bucket allows at once (1-1000000000). Omitted: `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<i64>,
}

/// Prefix lengths that group client addresses into one bucket (as an L4Policy's
/// `rateLimit.per`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientIpBuckets {
    /// IPv4 clients share a bucket per prefix of this length (0-32). Omitted: 32, one bucket per
    /// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub ipv4_prefix: Option<i64>,

    /// IPv6 clients share a bucket per prefix of this length (0-128). Omitted: 64, the usual
    /// end-site allocation. Link-local clients (fe80::/10) always have a bucket each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub ipv6_prefix: Option<i64>,
}

/// Default IPv4 bucket prefix length of `key: clientIP` (one bucket per address).
pub const DEFAULT_IPV4_PREFIX: u8 = super::l4::DEFAULT_IPV4_PREFIX;
/// Default IPv6 bucket prefix length of `key: clientIP` (one bucket per /64), as for L4 limits.
pub const DEFAULT_IPV6_PREFIX: u8 = super::l4::DEFAULT_IPV6_PREFIX;

/// Whether a policy refuses requests or only counts them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitMode {
    /// Refuse requests over a limit with 429.
    #[default]
    Enforce,
    /// Let every request through; count those a limit would have refused.
    Shadow,
}
