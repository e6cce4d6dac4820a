//! `RateLimitPolicy` objects: their limits (key, requests, window, burst) and `banOnAbuse`,
//! which AuthPolicies share.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tollgate_model::ban::{BanClientIp, DEFAULT_BAN_IPV6_PREFIX, MIN_BAN_IPV6_PREFIX};
use tollgate_model::ratelimit::{
    ClientIpBuckets, RateLimitKey, RateLimitMode, RateLimitPolicy, RateLimitScope,
};
use tollgate_model::Checker;

use super::limits::*;
use super::parse_duration;
use super::table::{BanDef, ClientPrefixes, LimitKey, LimitScope, RateLimitDef};
use super::targets::check_target_refs;

/// Checks a RateLimitPolicy; returns the names of the routes it targets and its limits.
pub(super) fn rate_limit_policy(
    c: &mut Checker<'_, '_>,
    ns: &str,
    name: &str,
    p: &RateLimitPolicy,
    routes: &HashSet<(&str, &str)>,
    route_auth: &HashMap<(String, String), usize>,
) -> Option<(Vec<String>, Vec<RateLimitDef>, Option<BanDef>)> {
    let before = c.mark();
    let spec = &p.spec;
    let targets = check_target_refs(
        c,
        ns,
        "a RateLimitPolicy",
        "limits",
        &spec.target_refs,
        routes,
    );
    if spec.limits.is_empty() {
        c.error(
            "spec.limits",
            "empty: a RateLimitPolicy needs at least one limit",
        );
    }
    c.count("spec.limits", spec.limits.len(), MAX_LIMITS);
    let label: Arc<str> = format!("{ns}/{name}").into();
    let shadow = spec.mode == RateLimitMode::Shadow;
    let scope = match (spec.scope, spec.on_backend_failure) {
        (RateLimitScope::Node, None) => LimitScope::Node,
        (RateLimitScope::Node, Some(_)) => {
            c.error(
                "spec.onBackendFailure",
                "only with scope: Cluster (a node limit has no shared counters to lose); remove it, or set scope: Cluster",
            );
            LimitScope::Node
        }
        (RateLimitScope::Cluster, f) => LimitScope::Cluster {
            on_failure: f.unwrap_or_default(),
        },
    };
    let mut defs = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in spec.limits.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        let limit_name = match &l.name {
            Some(n) => {
                if let Err(why) = tollgate_model::names::dns_label(n) {
                    c.error(format!("{at}.name"), format!("\"{n}\" {why}"));
                }
                n.clone()
            }
            None if spec.limits.len() == 1 => name.to_owned(),
            None => format!("{name}-{i}"),
        };
        if !names.insert(limit_name.clone()) {
            c.error(
                format!("{at}.name"),
                format!("two limits of this policy are named \"{limit_name}\""),
            );
        }
        let key = match (l.key, &l.header) {
            (RateLimitKey::Consumer, Some(_)) => {
                c.error(
                    format!("{at}.header"),
                    "only with key: header; remove it, or set key: header",
                );
                None
            }
            (RateLimitKey::Consumer, None) => {
                let unauthenticated: Vec<&str> = targets
                    .iter()
                    .filter(|t| !route_auth.contains_key(&(ns.to_owned(), (*t).clone())))
                    .map(String::as_str)
                    .collect();
                if unauthenticated.is_empty() {
                    Some(LimitKey::Consumer)
                } else {
                    c.error(
                        format!("{at}.key"),
                        format!(
                            "consumer: limits per consumer need an AuthPolicy to identify consumers, and no AuthPolicy targets HTTPRoute {}",
                            unauthenticated
                                .iter()
                                .map(|t| format!("{ns}/{t}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            }
            (RateLimitKey::Header, None) => {
                c.error(
                    format!("{at}.header"),
                    "missing: key: header needs the name of the header whose value is the key",
                );
                None
            }
            (RateLimitKey::Header, Some(h)) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => Some(LimitKey::Header(name)),
                Err(_) => {
                    c.error(
                        format!("{at}.header"),
                        format!("\"{h}\" is not a valid HTTP header name"),
                    );
                    None
                }
            },
            (RateLimitKey::ClientIp, Some(_)) => {
                c.error(
                    format!("{at}.header"),
                    "only with key: header; remove it, or set key: header",
                );
                None
            }
            (RateLimitKey::ClientIp, None) => {
                client_prefixes(c, &at, l.client_ip.as_ref()).map(LimitKey::ClientIp)
            }
        };
        if l.client_ip.is_some() && l.key != RateLimitKey::ClientIp {
            c.error(
                format!("{at}.clientIP"),
                "only with key: clientIP; remove it, or set key: clientIP",
            );
        }
        let count = |c: &mut Checker<'_, '_>, field: &str, n: i64| {
            if (1..=MAX_LIMIT_REQUESTS).contains(&n) {
                Some(n as u32)
            } else {
                c.error(
                    format!("{at}.{field}"),
                    format!("{n} is out of range 1-{MAX_LIMIT_REQUESTS}"),
                );
                None
            }
        };
        let requests = count(c, "requests", l.requests);
        let burst = match l.burst {
            Some(b) => count(c, "burst", b),
            None => requests,
        };
        // A cluster limit counts fixed windows of `per` in Redis: `requests` per window may
        // come at once, and no other burst can be honoured.
        if let (LimitScope::Cluster { .. }, Some(b), Some(r)) = (scope, l.burst, requests) {
            if b != i64::from(r) {
                c.error(
                    format!("{at}.burst"),
                    format!("{b}: a scope: Cluster limit counts fixed windows of `per`, where all `requests` may come at once; omit burst, or set it to requests ({r})"),
                );
            }
        }
        let per = match parse_duration(&l.per) {
            Ok(d) if d.is_zero() || d.subsec_nanos() != 0 => {
                c.error(
                    format!("{at}.per"),
                    format!(
                        "\"{}\" must be a whole number of seconds, at least 1s (like 1s, 1m, 1h)",
                        l.per
                    ),
                );
                None
            }
            Ok(d) if d > MAX_LIMIT_WINDOW => {
                c.error(
                    format!("{at}.per"),
                    format!("\"{}\" is longer than 24h", l.per),
                );
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                c.error(format!("{at}.per"), why);
                None
            }
        };
        if let (Some(key), Some(requests), Some(burst), Some(per)) = (key, requests, burst, per) {
            defs.push(RateLimitDef {
                policy: label.clone(),
                index: i,
                name: limit_name,
                key,
                requests,
                per,
                burst,
                shadow,
                scope,
            });
        }
    }
    let ban = spec.ban_on_abuse.as_ref().and_then(|b| {
        ban_on_abuse(
            c,
            "rejections",
            b.rejections,
            &b.within,
            &b.block_for,
            b.client_ip.as_ref(),
        )
    });
    c.clean_since(before).then_some((targets, defs, ban))
}

/// Checks the `clientIP` of a limit at `at` (omitted: the defaults).
fn client_prefixes(
    c: &mut Checker<'_, '_>,
    at: &str,
    buckets: Option<&ClientIpBuckets>,
) -> Option<ClientPrefixes> {
    let mut out = ClientPrefixes::default();
    let Some(b) = buckets else {
        return Some(out);
    };
    let before = c.mark();
    for (field, value, max, slot) in [
        ("ipv4Prefix", b.ipv4_prefix, 32, &mut out.v4),
        ("ipv6Prefix", b.ipv6_prefix, 128, &mut out.v6),
    ] {
        match value {
            None => {}
            Some(n) if (0..=max).contains(&n) => *slot = n as u8,
            Some(n) => c.error(
                format!("{at}.clientIP.{field}"),
                format!("{n} is out of range 0-{max}"),
            ),
        }
    }
    c.clean_since(before).then_some(out)
}

/// Checks a `banOnAbuse` (`count_field` is `failures` or `rejections`).
pub(super) fn ban_on_abuse(
    c: &mut Checker<'_, '_>,
    count_field: &str,
    count: i64,
    within: &str,
    block_for: &str,
    client_ip: Option<&BanClientIp>,
) -> Option<BanDef> {
    let before = c.mark();
    if !(1..=MAX_BAN_THRESHOLD).contains(&count) {
        c.error(
            format!("spec.banOnAbuse.{count_field}"),
            format!("{count} is out of range 1-{MAX_BAN_THRESHOLD}"),
        );
    }
    let mut duration = |field: &str, value: &str| match parse_duration(value) {
        Ok(d) if d < Duration::from_secs(1) || d > MAX_BAN_DURATION => {
            c.error(
                format!("spec.banOnAbuse.{field}"),
                format!("\"{value}\" is out of range 1s-24h"),
            );
            Duration::ZERO
        }
        Ok(d) => d,
        Err(why) => {
            c.error(format!("spec.banOnAbuse.{field}"), why);
            Duration::ZERO
        }
    };
    let within = duration("within", within);
    let block_for = duration("blockFor", block_for);
    let ipv6_prefix = match client_ip.and_then(|b| b.ipv6_prefix) {
        None => DEFAULT_BAN_IPV6_PREFIX,
        Some(n) if (i64::from(MIN_BAN_IPV6_PREFIX)..=128).contains(&n) => n as u8,
        Some(n) => {
            c.error(
                "spec.banOnAbuse.clientIP.ipv6Prefix",
                format!(
                    "{n} is out of range {MIN_BAN_IPV6_PREFIX}-128 (a shorter prefix would ban whole providers for one client)"
                ),
            );
            0
        }
    };
    c.clean_since(before).then_some(BanDef {
        threshold: count as u32,
        within,
        block_for,
        ipv6_prefix,
    })
}
