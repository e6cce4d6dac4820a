//! `banOnAbuse` of `AuthPolicy` and `RateLimitPolicy`: L7 -> L4 escalation. A client address
//! that fails too often is put into the XDP blocklist for a while (see
//! the dataplane's blocklist). Values are checked by the L7 compiler.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bans a client (the address the proxy decides on: the socket peer, or `X-Forwarded-For`
/// from a `--trusted-proxy` peer) that fails authentication `failures` times within `within`
/// on the policy's routes: its packets are then dropped by the XDP program for `blockFor`. The
/// request that crosses the threshold still gets its 401; the following packets are dropped.
/// An IPv4 client is counted and banned per address, an IPv6 client per /64 (see `clientIP`).
/// Never banned: loopback addresses, addresses inside a `--trusted-proxy` or `--never-ban`
/// CIDR (an IPv6 prefix that holds one is narrowed to the client's own address).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthBanOnAbuse {
    /// Authentication failures (401s) that trigger a ban (1-1000000).
    pub failures: i64,
    /// The window the failures are counted in, from the first one (1s-24h, like `60s`, `5m`).
    pub within: String,
    /// How long the ban lasts (1s-24h, like `10m`).
    pub block_for: String,
    /// How IPv6 clients are grouped. Omitted: per /64.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<BanClientIp>,
}

/// Bans a client whose requests are refused with 429 `rejections` times within `within` by
/// this policy's limits: its packets are then dropped by the XDP program for `blockFor`.
/// `mode: shadow` never bans. Clients are grouped as for an AuthPolicy's `banOnAbuse` (IPv4 per
/// address, IPv6 per /64 unless `clientIP` says otherwise), with the same exemptions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitBanOnAbuse {
    /// Requests refused with 429 that trigger a ban (1-1000000).
    pub rejections: i64,
    /// The window the rejections are counted in, from the first one (1s-24h).
    pub within: String,
    /// How long the ban lasts (1s-24h).
    pub block_for: String,
    /// How IPv6 clients are grouped. Omitted: per /64.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<BanClientIp>,
}

/// How `banOnAbuse` groups IPv6 clients: their failures are counted together and they are
/// banned together, as one prefix. IPv4 clients are always counted and banned per address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BanClientIp {
    /// The IPv6 prefix length (48-128; 128 is one address per client). Omitted: 64, the usual
    /// end-site allocation, whose addresses one client can rotate through at will. Shorter than
    /// 48 would ban whole providers for one client. Link-local clients (fe80::/10) are always
    /// counted and banned per address: a prefix would cut off every neighbour on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 48, max = 128))]
    pub ipv6_prefix: Option<i64>,
}

/// Shortest IPv6 prefix `banOnAbuse.clientIP.ipv6Prefix` accepts.
pub const MIN_BAN_IPV6_PREFIX: u8 = 48;
/// Default IPv6 prefix of `banOnAbuse`.
pub const DEFAULT_BAN_IPV6_PREFIX: u8 = 64;

/// Who made a ban: the `rule` label of its packet counters and the `reason` of `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BanKind {
    /// An AuthPolicy's `banOnAbuse`: too many authentication failures.
    Auth,
    /// A RateLimitPolicy's `banOnAbuse`: too many requests refused with 429.
    Ratelimit,
    /// `tollgate bans add`.
    Manual,
}

impl BanKind {
    /// The label value (`auth`, `ratelimit`, `manual`).
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::Auth => "auth",
            BanKind::Ratelimit => "ratelimit",
            BanKind::Manual => "manual",
        }
    }
}
