//! The IPv4 exact-address table (`SRC4_EXACT`; the layout is `gateway_common::Exact4Set`'s)
//! in front of the direct index ([`super::dir`]). Pure code: it turns the /32 `SRC_V4`
//! entries of a revision into the table's sets, part of [`Tables`].
//!
//! Why a table of its own: see `Exact4Set`. Every /32 source entry of a rule set with a
//! direct index goes here (the index then holds only the rule set's shorter prefixes, see
//! [`super::dir::slots`]); one that finds no room marks its set, and the trie, which keeps
//! every entry, answers the addresses that miss there.
//!
//! A set's contents depend on its own addresses alone (they take its ways in address order),
//! so a one-rule change rewrites one set.
use std::collections::BTreeMap;

use gateway_common::{
    exact4_filter_bit, exact4_hash, exact4_set, Exact4Set, Exact4Way, DIR_SCOPES,
    EXACT4_ENTRY_MASK, EXACT4_USED, EXACT4_WAYS,
};
use rustc_hash::FxHashMap as HashMap;

use super::dir::{Answer, Prefix, Room};
use super::tables::Tables;

/// The sets of `SRC4_EXACT` for the /32s among `prefixes` (those of scopes beyond
/// `DIR_SCOPES` are ignored), by index within a generation.
pub fn sets(prefixes: &[Prefix], room: Room) -> HashMap<u32, Exact4Set> {
    let mut by_set: BTreeMap<u32, Vec<&Prefix>> = BTreeMap::new();
    for p in prefixes {
        if p.len == 32 && p.scope < DIR_SCOPES {
            by_set
                .entry(exact4_set(p.scope, p.addr))
                .or_default()
                .push(p);
        }
    }
    let mut out = HashMap::with_capacity_and_hasher(by_set.len(), Default::default());
    for (index, mut members) in by_set {
        members.sort_unstable_by_key(|p| (p.scope, p.addr));
        let mut set = Exact4Set::default();
        let mut used = 0;
        for p in members {
            // An entry the index has no leaf for is answered by the trie, like one that finds
            // no way.
            if used == EXACT4_WAYS || p.entry >= room.leaves || p.entry > EXACT4_ENTRY_MASK {
                set.overflow |= 1 << p.scope;
                continue;
            }
            set.filter |= exact4_filter_bit(exact4_hash(p.scope, p.addr));
            set.ways[used] = Exact4Way {
                addr: p.addr,
                tag: EXACT4_USED | p.scope << 24 | p.entry,
            };
            used += 1;
        }
        out.insert(index, set);
    }
    out
}

/// What the table says about `addr` in rule set `scope`: `Some` for a /32 it holds
/// (`Leaf`) or for a miss in a set that overflowed for the scope (`Trie`); `None` sends the
/// address on to the direct index. What the program does (`exact_v4` in gateway-ebpf), for the
/// tests.
pub fn lookup(t: &Tables, scope: u32, addr: u32) -> Option<Answer> {
    let set = t.exact4.get(&exact4_set(scope, addr))?;
    let want = EXACT4_USED | scope << 24;
    // The filter says which addresses cannot be here: their ways are not compared.
    let maybe = set.filter & exact4_filter_bit(exact4_hash(scope, addr)) != 0;
    let found = set
        .ways
        .iter()
        .find(|w| maybe && w.addr == addr && w.tag & !EXACT4_ENTRY_MASK == want);
    if let Some(way) = found {
        return Some(
            t.leaves4
                .get(&(way.tag & EXACT4_ENTRY_MASK))
                .map_or(Answer::Trie, |v| Answer::Leaf(*v)),
        );
    }
    (set.overflow & (1 << scope) != 0).then_some(Answer::Trie)
}

/// The entry ids the ways of `sets` name.
pub fn entries(sets: &HashMap<u32, Exact4Set>) -> impl Iterator<Item = u32> + '_ {
    sets.values().flat_map(|s| {
        s.ways
            .iter()
            .filter(|w| w.tag & EXACT4_USED != 0)
            .map(|w| w.tag & EXACT4_ENTRY_MASK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(scope: u32, addr: u32, entry: u32) -> Prefix {
        Prefix {
            scope,
            addr,
            len: 32,
            entry,
        }
    }

    /// Addresses of `scope` that share one set, found by search.
    fn colliding(scope: u32, n: usize) -> Vec<u32> {
        let target = exact4_set(scope, 0x0a00_0001);
        (0x0a00_0001u32..)
            .filter(|&a| exact4_set(scope, a) == target)
            .take(n)
            .collect()
    }

    #[test]
    fn only_slash_32s_of_indexed_scopes_are_placed_and_a_full_set_overflows() {
        let addrs = colliding(1, EXACT4_WAYS + 2);
        let mut prefixes: Vec<Prefix> = addrs
            .iter()
            .enumerate()
            .map(|(i, &a)| p(1, a, i as u32))
            .collect();
        prefixes.push(Prefix {
            len: 24,
            ..p(1, 0x0b00_0000, 99)
        });
        prefixes.push(p(DIR_SCOPES, 0x0c00_0001, 98));
        let sets = sets(&prefixes, Room::default());
        assert_eq!(
            sets.len(),
            1,
            "one set: the /24 and the scope without index are not placed"
        );
        let set = sets.values().next().unwrap();
        assert_eq!(set.overflow, 1 << 1);
        assert!(set.ways.iter().all(|w| w.tag & EXACT4_USED != 0));
        // The lowest addresses took the ways, whatever the order given.
        let placed: Vec<u32> = set.ways.iter().map(|w| w.addr).collect();
        assert_eq!(placed, addrs[..EXACT4_WAYS]);
        prefixes.reverse();
        assert_eq!(super::sets(&prefixes, Room::default()), sets);
    }

    #[test]
    fn an_entry_without_a_leaf_overflows_its_set() {
        let room = Room {
            leaves: 10,
            ..Room::default()
        };
        let sets = sets(&[p(0, 0x0a00_0001, 3), p(0, 0x0a00_0002, 10)], room);
        let overflowed: Vec<&Exact4Set> = sets.values().filter(|s| s.overflow != 0).collect();
        assert_eq!(overflowed.len(), 1);
        assert!(overflowed[0].ways.iter().all(|w| w.tag & EXACT4_USED == 0));
        assert_eq!(entries(&sets).collect::<Vec<_>>(), vec![3]);
    }
}
