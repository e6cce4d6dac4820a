//! Host names in routing: [`HostPattern`] (an exact name, a wildcard or any host) and
//! [`HostIndex`], which finds the values filed under patterns in Gateway API precedence with
//! hash look-ups (one per label of the host). Apart from `table.rs` because both listeners and
//! host groups use it, and it knows nothing of paths or rules.
use std::collections::HashMap;

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

impl<T> HostIndex<T> {
    /// The value for exactly `pattern`, to change it.
    pub(super) fn get_mut(&mut self, pattern: &HostPattern) -> Option<&mut T> {
        match pattern {
            HostPattern::Exact(n) => self.exact.get_mut(n.as_str()),
            HostPattern::Wildcard(s) => self.wildcard.get_mut(s.as_str()),
            HostPattern::Any => self.any.as_mut(),
        }
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(self.any.as_mut())
    }
}
