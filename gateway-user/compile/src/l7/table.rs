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
//!
//! The parts: `table/host.rs` (host patterns and the index by host), `table/matching.rs` (the
//! conditions of a match, checked on each candidate), `table/rule.rs` (what a rule does),
//! `table/defs.rs` (the definitions rules refer to, and [`L7Policy`]); this file holds the index
//! by path and the [`RouteTable`] built from them.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::RegexSet;
pub use tollgate_model::ratelimit::RateLimitBackendFailure;

mod defs;
mod host;
mod matching;
mod rule;
pub use defs::{
    ApiKeyDef, Attachment, AuthDef, BackendCa, BackendDef, BackendProtocol, BackendTlsDef, BanDef,
    BanKey, ClientPrefixes, JwksDef, JwtProviderDef, KeyLocation, L7Policy, LimitKey, LimitScope,
    ListenerDef, ListenerTls, LoadBalancing, RateLimitDef, RouteDef, RouteLimits, RuleDef,
    SecretRef, TokenLocation,
};
pub use host::{HostIndex, HostPattern};
pub use matching::{
    prefix_matches, query_param, HeaderMatch, MatchDef, PathMatch, QueryMatch, RequestView,
    ValueMatch,
};
pub use rule::{
    BackendRefFilters, HeaderModifier, Mirror, PathModifier, Redirect, Retry, Rule, RuleFailure,
    Timeouts, UrlRewrite, WeightedBackend,
};

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

    /// Sorts each bucket by precedence and builds the regex set. The buckets are cut to their
    /// length: a bucket nearly always holds one candidate, and a `Vec`'s first push makes room
    /// for four (about 5 MB of a 10,000-route table, docs/benchmarks-issue13.md round 6).
    fn finish(&mut self) -> Result<(), regex::Error> {
        for list in self.exact.values_mut().chain(self.prefix.values_mut()) {
            list.sort_by_key(|c| c.order);
            list.shrink_to_fit();
        }
        self.exact.shrink_to_fit();
        self.prefix.shrink_to_fit();
        self.regex.sort_by_key(|c| c.order);
        self.regex.shrink_to_fit();
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
        self.listeners.get_mut(pattern)
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
