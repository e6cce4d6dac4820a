//! The blocklist as one [`super::BanMaps`] handle last read it, plus its own writes since:
//! what a new ban covers, what covers it, and which entries are nearest to expiry, without a
//! system call per entry. Pure bookkeeping, so that it can be tested without a kernel.
use std::collections::{BTreeMap, BTreeSet};

use super::{BanEntry, BanTarget};

/// Entries by target, by expiry (per family) and the IPv6 prefix lengths in use.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: BTreeMap<BanTarget, BanEntry>,
    /// `(expires_ns, target)`, `[IPv4, IPv6]`.
    by_expiry: [BTreeSet<(u64, BanTarget)>; 2],
    /// IPv6 prefix lengths of the entries, with how many entries have each: a target's covers
    /// are found with one look-up per length in use (usually /64 and /128), not 128.
    v6_lengths: BTreeMap<u8, usize>,
}

fn family(t: &BanTarget) -> usize {
    usize::from(t.is_v6())
}

impl Index {
    /// An index of `entries`.
    pub(crate) fn of(entries: impl IntoIterator<Item = BanEntry>) -> Index {
        let mut index = Index::default();
        for e in entries {
            index.insert(e);
        }
        index
    }

    /// Adds `e`, replacing the entry of the same target.
    pub(crate) fn insert(&mut self, e: BanEntry) {
        let t = e.address;
        self.remove(&t);
        self.by_expiry[family(&t)].insert((e.expires_ns, t));
        if t.is_v6() {
            *self.v6_lengths.entry(t.prefix_len()).or_default() += 1;
        }
        self.entries.insert(t, e);
    }

    /// Removes the entry of `t`.
    pub(crate) fn remove(&mut self, t: &BanTarget) -> Option<BanEntry> {
        let e = self.entries.remove(t)?;
        self.by_expiry[family(t)].remove(&(e.expires_ns, *t));
        if t.is_v6() {
            if let Some(n) = self.v6_lengths.get_mut(&t.prefix_len()) {
                *n -= 1;
                if *n == 0 {
                    self.v6_lengths.remove(&t.prefix_len());
                }
            }
        }
        Some(e)
    }

    /// The entry of `t`.
    pub(crate) fn get(&self, t: &BanTarget) -> Option<&BanEntry> {
        self.entries.get(t)
    }

    /// Entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry of the family of `like` that expires first, other than `like` itself.
    pub(crate) fn nearest_expiry(&self, like: &BanTarget) -> Option<BanTarget> {
        self.by_expiry[family(like)]
            .iter()
            .map(|(_, t)| *t)
            .find(|t| t != like)
    }

    /// The entries strictly inside `t`.
    pub(crate) fn inside(&self, t: &BanTarget) -> Vec<&BanEntry> {
        if !t.is_v6() {
            return Vec::new();
        }
        let (lo, hi) = t.span();
        self.entries
            .range(lo..=hi)
            .map(|(_, e)| e)
            .filter(|e| t.strictly_contains(&e.address))
            .collect()
    }

    /// The entries that strictly contain `t`, longest prefix first.
    pub(crate) fn containing(&self, t: &BanTarget) -> Vec<&BanEntry> {
        self.v6_lengths
            .keys()
            .rev()
            .filter(|&&len| len < t.prefix_len())
            .filter_map(|&len| t.truncated(len))
            .filter_map(|c| self.entries.get(&c))
            .collect()
    }

    /// Entries that an entry containing them outlasts: they can only hide it (the XDP program
    /// sees the longest matching prefix, and an expired entry bans nothing), and removing them
    /// bans nothing less. What the rule "a more specific ban never ends before one that
    /// contains it" removes; the ban task's own writes keep it, this catches bans made by hand
    /// meanwhile.
    pub(crate) fn outlasted(&self) -> Vec<BanTarget> {
        self.entries
            .values()
            .filter(|e| {
                self.containing(&e.address)
                    .iter()
                    .any(|c| c.expires_ns > e.expires_ns)
            })
            .map(|e| e.address)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::BanKind;

    fn e(t: &str, expires_ns: u64) -> BanEntry {
        BanEntry {
            address: t.parse().unwrap(),
            policy: "ns/p".into(),
            reason: BanKind::Auth,
            banned_at_unix: 0,
            expires_ns,
        }
    }

    fn t(s: &str) -> BanTarget {
        s.parse().unwrap()
    }

    #[test]
    fn nearest_expiry_is_per_family_and_never_the_new_target() {
        let i = Index::of([
            e("192.0.2.1", 30),
            e("192.0.2.2", 10),
            e("2001:db8::/64", 5),
            e("2001:db8:0:1::/64", 20),
        ]);
        assert_eq!(i.nearest_expiry(&t("192.0.2.9")), Some(t("192.0.2.2")));
        assert_eq!(i.nearest_expiry(&t("192.0.2.2")), Some(t("192.0.2.1")));
        assert_eq!(
            i.nearest_expiry(&t("2001:db8:9::1")),
            Some(t("2001:db8::/64"))
        );
    }

    #[test]
    fn inside_and_containing_follow_the_prefixes() {
        let mut i = Index::of([
            e("2001:db8::/48", 100),
            e("2001:db8:0:1::/64", 50),
            e("2001:db8:0:1::7", 40),
            e("2001:db8:0:2::7", 40),
            e("2001:db9::1", 40),
        ]);
        let inside: Vec<String> = i
            .inside(&t("2001:db8:0:1::/64"))
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(inside, ["2001:db8:0:1::7"]);
        assert_eq!(i.inside(&t("2001:db8::/48")).len(), 3);
        let containing: Vec<String> = i
            .containing(&t("2001:db8:0:1::7"))
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(containing, ["2001:db8:0:1::/64", "2001:db8::/48"]);
        // The /48 outlasts everything inside it.
        let mut out = i.outlasted();
        out.sort();
        assert_eq!(
            out,
            [
                t("2001:db8:0:1::/64"),
                t("2001:db8:0:1::7"),
                t("2001:db8:0:2::7")
            ]
        );
        i.remove(&t("2001:db8::/48"));
        assert_eq!(i.outlasted(), [t("2001:db8:0:1::7")]);
        assert_eq!(i.len(), 4);
        i.remove(&t("2001:db8:0:1::/64"));
        assert!(i.outlasted().is_empty());
    }
}
