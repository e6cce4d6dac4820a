//! The limits and defaults of the L7 kinds: each a named constant, so that messages, docs and
//! tests say the same number. Re-exported by [`super`] (`l7::MAX_LISTENERS`, ...).
use std::time::Duration;

/// Listeners per Gateway (the Gateway API's limit).
pub const MAX_LISTENERS: usize = 64;
/// Parent references per route (the Gateway API's limit).
pub const MAX_PARENT_REFS: usize = 32;
/// Hostnames per route (the Gateway API's limit).
pub const MAX_HOSTNAMES: usize = 16;
/// Rules per route (the Gateway API's limit).
pub const MAX_RULES: usize = 16;
/// Matches per rule (the Gateway API's limit).
pub const MAX_MATCHES: usize = 64;
/// Matches across all the rules of a route (the Gateway API's CEL rule on `spec.rules`).
pub const MAX_ROUTE_MATCHES: usize = 128;
/// Header or query parameter matches per match (the Gateway API's limit).
pub const MAX_VALUE_MATCHES: usize = 16;
/// Filters per rule (the Gateway API's limit).
pub const MAX_FILTERS: usize = 16;
/// Backend references per rule (the Gateway API's limit).
pub const MAX_BACKEND_REFS: usize = 16;
/// Highest backend weight (the Gateway API's limit).
pub const MAX_WEIGHT: i64 = 1_000_000;
/// Endpoints per Backend.
pub const MAX_ENDPOINTS: usize = 1024;
/// Longest regular expression accepted.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled size limit of one regular expression (bounds memory and matching time).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Certificate references per listener (the Gateway API's limit).
pub const MAX_CERTIFICATE_REFS: usize = 64;
/// CA certificate references per listener (the Gateway API's limit).
pub const MAX_CA_CERTIFICATE_REFS: usize = 8;
/// Most retries a rule may ask for.
pub const MAX_RETRY_ATTEMPTS: i64 = 10;

/// Target references per RateLimitPolicy.
pub const MAX_TARGET_REFS: usize = 16;
/// Limits per RateLimitPolicy.
pub const MAX_LIMITS: usize = 16;
/// Highest `requests` and `burst` of a rate limit.
pub const MAX_LIMIT_REQUESTS: i64 = 1_000_000_000;
/// Longest `per` of a rate limit.
pub const MAX_LIMIT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Request timeout of a rule that sets none (`timeouts.request`; `0s` turns it off).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries after a failed connection when a rule has no `retry` (another endpoint is tried;
/// nothing was sent, so this is safe for every method).
pub const DEFAULT_CONNECT_RETRIES: u32 = 2;
/// Retries of a rule whose `retry` stanza sets no `attempts`.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Wait before the first retry when `retry.backoff` is not set (Envoy's default base
/// interval; it doubles for each further retry).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Consecutive failures that eject an endpoint when a Backend sets none.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// How long an endpoint stays ejected when a Backend sets none.
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(30);

/// Credential files per AuthPolicy method.
pub const MAX_CREDENTIAL_REFS: usize = 16;
/// Largest `requestBody.maxSize` of a BackendTrafficPolicy.
pub const MAX_REQUEST_BODY_LIMIT: u64 = 64 << 30;
/// Consumers in an AuthPolicy's `allowedConsumers`.
pub const MAX_ALLOWED_CONSUMERS: usize = 1024;
/// JWT providers per AuthPolicy.
pub const MAX_JWT_PROVIDERS: usize = 8;
/// Largest clock skew a JWT provider may allow.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Clock skew of a JWT provider that sets none.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// JWKS refresh interval of a provider that sets none.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Most failures a `banOnAbuse` can count to.
pub const MAX_BAN_THRESHOLD: i64 = 1_000_000;
/// Longest `banOnAbuse.within` and `banOnAbuse.blockFor`.
pub const MAX_BAN_DURATION: Duration = Duration::from_secs(24 * 3600);
