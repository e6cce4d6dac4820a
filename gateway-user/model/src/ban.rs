//! `banOnAbuse` of `AuthPolicy` and `RateLimitPolicy`: L7 -> L4 escalation. A client address
//! that fails too often is put into the XDP blocklist for a while (see
//! the dataplane's blocklist). Values are checked by the L7 compiler.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bans a client address (the one the proxy decides on: the socket peer, or `X-Forwarded-For`
/// from a `--trusted-proxy` peer) that fails authentication `failures` times within `within`
/// on the policy's routes: its packets are then dropped by the XDP program for `blockFor`. The
/// request that crosses the threshold still gets its 401; the following packets are dropped.
/// Never banned: loopback addresses, addresses inside a `--trusted-proxy` or `--never-ban`
/// CIDR.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthBanOnAbuse {
    /// Authentication failures (401s) that trigger a ban (1-1000000).
    pub failures: i64,
    /// The window the failures are counted in, from the first one (1s-24h, like `60s`, `5m`).
    pub within: String,
    /// How long the ban lasts (1s-24h, like `10m`).
    pub block_for: String,
}

/// Bans a client address whose requests are refused with 429 `rejections` times within
/// `within` by this policy's limits: its packets are then dropped by the XDP program for
/// `blockFor`. `mode: shadow` never bans. Same exemptions as an AuthPolicy's `banOnAbuse`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitBanOnAbuse {
    /// Requests refused with 429 that trigger a ban (1-1000000).
    pub rejections: i64,
    /// The window the rejections are counted in, from the first one (1s-24h).
    pub within: String,
    /// How long the ban lasts (1s-24h).
    pub block_for: String,
}

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
