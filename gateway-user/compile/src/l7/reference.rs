//! The reference semantics of L7 routing, written as plainly as the Gateway API states them and
//! with no index at all: every listener, route, rule and match is looked at. Slow on purpose;
//! property tests compare [`super::table::RouteTable`] with it. Also the answer `tollgate
//! explain` can give for a request without building an index.
use std::cmp::Reverse;

use super::table::{HostPattern, L7Policy, PathMatch, RequestView};

/// Which match of which rule of which route a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `namespace/name` of the route.
    pub route: String,
    /// Rule index in the route.
    pub rule: usize,
    /// Match index in the rule.
    pub matched: usize,
}

/// How specifically a hostname pattern matches a host: smaller is more specific. "Precedence
/// must be given to rules from the HTTPRoute with the largest number of: characters in a
/// matching non-wildcard hostname; characters in a matching hostname." A route without
/// hostnames comes last.
fn host_rank(pattern: &HostPattern) -> (u8, Reverse<usize>) {
    match pattern {
        HostPattern::Exact(name) => (0, Reverse(name.len())),
        HostPattern::Wildcard(suffix) => (1, Reverse(suffix.len())),
        HostPattern::Any => (2, Reverse(0)),
    }
}

/// The listener of `port` that serves `host`: the most specific hostname that matches it.
fn listener_for(policy: &L7Policy, port: u16, host: &str) -> Option<usize> {
    policy
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.port == port && l.hostname.matches(host))
        .min_by_key(|(_, l)| host_rank(&l.hostname))
        .map(|(i, _)| i)
}

/// The route, rule and match a request to `port` gets, or `None` (404).
pub fn decide(policy: &L7Policy, port: u16, req: &RequestView<'_>) -> Option<Decision> {
    let listener = listener_for(policy, port, req.host)?;
    let mut best = None;
    for route in &policy.routes {
        for att in route.attachments.iter().filter(|a| a.listener == listener) {
            for host in att.hostnames.iter().filter(|h| h.matches(req.host)) {
                for (ri, rule) in route.rules.iter().enumerate() {
                    for (mi, m) in rule.matches.iter().enumerate() {
                        if !m.matches(req) {
                            continue;
                        }
                        // "Exact" path match, then "Prefix" path match with the largest number
                        // of characters, then (implementation-specific) regular expressions.
                        let path_rank = match &m.path {
                            PathMatch::Exact(_) => (0, Reverse(0)),
                            PathMatch::Prefix(p) => (1, Reverse(p.len())),
                            PathMatch::Regex(_) => (2, Reverse(0)),
                        };
                        let key = (
                            host_rank(host),
                            path_rank,
                            // GRPCRoute: characters in a matching service, then method.
                            Reverse(m.grpc_chars.0),
                            Reverse(m.grpc_chars.1),
                            // Method match; largest number of header matches; largest number
                            // of query param matches.
                            m.method.is_none(),
                            Reverse(m.headers.len()),
                            Reverse(m.query.len()),
                            // The oldest route, then alphabetical by namespace/name (`order`),
                            // then the first rule and the first match in list order.
                            route.order,
                            ri,
                            mi,
                        );
                        let decision = Decision {
                            route: route.label.to_string(),
                            rule: ri,
                            matched: mi,
                        };
                        if best.as_ref().is_none_or(|(k, _)| key < *k) {
                            best = Some((key, decision));
                        }
                    }
                }
            }
        }
    }
    best.map(|(_, d)| d)
}
