//! The IPv4 exact table (`SRC4_EXACT`; the layout is `gateway_common::Exact4Set`'s) in front
//! of and behind the direct index ([`super::dir`]), and the IPv6 exact-prefix table
//! (`SRC6_EXACT`, `SRC6_LENS`; `gateway_common::Exact6Set`) in front of the IPv6 trie. Pure
//! code: it turns the /25–/32 `SRC_V4` entries and the `SRC_V6` entries of a revision into the
//! tables' sets, part of [`Tables`].
//!
//! Why a table of its own: see `Exact4Set`. Every /32 source entry of a rule set with a
//! direct index goes here (the index then holds only the rule set's shorter prefixes, see
//! [`super::dir::slots`]), and every /25–/31 one, which the program probes for a /24 that
//! found no chunk of address slots; one that finds no room marks its set, and the trie, which
//! keeps every entry, answers the addresses that miss there.
//!
//! A set's contents depend on its own addresses alone (they take its ways in address order),
//! so a one-rule change rewrites one set.
use std::collections::BTreeMap;

use gateway_common::{
    dir_longs, dir_slot_leaf, exact4_filter_bit, exact4_long_hash, exact4_tag, exact6_filter_bit,
    exact6_hash, exact6_set, filter6_bit, filter6_hash, Exact4Set, Exact4Way, Exact6Set, Exact6Way,
    Filter6Block, Src6Lens, DIR_SCOPES, EXACT4_ENTRY_MASK, EXACT4_LONG_OVERFLOW, EXACT4_SETS,
    EXACT4_USED, EXACT4_WAYS, EXACT6_LENS, EXACT6_SETS, EXACT6_WAYS, EXACT_NO_LEAF,
    FILTER6_MIN_KEY, SRC6_FILTER_ON,
};
use rustc_hash::FxHashMap as HashMap;

use super::dir::{Answer, Prefix, Room};
use super::tables::Tables;

/// The leaf numbers the ways of the exact tables give their entries: its own id for an
/// entry below the leaves (as the direct index names leaves), else a spare number: one below
/// the leaves that no slot of the direct index and no way names as an entry's own id.
///
/// Why: entry ids grow with the policy, and those of a large blocklist's last entries (its
/// IPv6 ones come after every IPv4 one) pass the `LEAF_NUMBERS` leaves; without a leaf an
/// address found in a table still asks the trie.
#[derive(Debug, Clone, Default)]
pub struct Leaves {
    /// Leaves per generation.
    room: u32,
    /// Leaf number by entry, for the entries past `room` that have one.
    by_entry: HashMap<u32, u32>,
    /// The entry of each of those leaf numbers.
    entry_of: HashMap<u32, u32>,
    /// No entry is past `room`: every entry's number is its id ([`number`] has nothing to do).
    all_own: bool,
}

impl Leaves {
    /// Entries keep their own ids; those past the leaves have none.
    pub fn own(room: Room) -> Self {
        Leaves {
            room: room.leaves,
            ..Leaves::default()
        }
    }

    /// Leaf numbers for `entries` (the exact tables' entries): spare numbers, highest first,
    /// for those past the leaves, in id order, as long as spares last. `named[n]`: number `n`
    /// is an entry's own id that the direct index names.
    pub fn new(room: Room, named: &[bool], entries: impl IntoIterator<Item = u32>) -> Self {
        let mut taken = named.to_vec();
        taken.resize(room.leaves as usize, false);
        // Only the entries past the leaves need sorting (most often none: a sort of every
        // entry was milliseconds at 100,000 rules).
        let mut past = Vec::new();
        for e in entries {
            match taken.get_mut(e as usize) {
                Some(taken) => *taken = true,
                None => past.push(e),
            }
        }
        let mut out = Leaves::own(room);
        if past.is_empty() {
            out.all_own = true;
            return out;
        }
        past.sort_unstable();
        past.dedup();
        let mut spare = (0..room.leaves).rev().filter(|&n| !taken[n as usize]);
        for &e in &past {
            let Some(n) = spare.next() else {
                break;
            };
            out.by_entry.insert(e, n);
            out.entry_of.insert(n, e);
        }
        out
    }

    /// The leaf number a way holds for `entry`; [`EXACT_NO_LEAF`] when it has none.
    pub fn of(&self, entry: u32) -> u32 {
        if entry < self.room {
            entry
        } else {
            self.by_entry.get(&entry).copied().unwrap_or(EXACT_NO_LEAF)
        }
    }

    /// The entry whose value leaf number `leaf` holds.
    pub fn entry(&self, leaf: u32) -> u32 {
        if self.entry_of.is_empty() {
            // The common case: every entry below the leaf numbers (a look-up per leaf, of
            // 131,072, is milliseconds).
            return leaf;
        }
        self.entry_of.get(&leaf).copied().unwrap_or(leaf)
    }
}

/// Whether `SRC4_EXACT` holds a prefix of length `len`: /25 to /32 (see `Exact4Set`).
pub fn exact4_len(len: u32) -> bool {
    (25..=32).contains(&len)
}

/// The sets of `SRC4_EXACT` for the /25–/32s among `prefixes` (those of scopes beyond
/// `DIR_SCOPES` are ignored), by index within a generation. In a set, the /32s take the ways
/// first (their look-up is the commoner: every address of a /16 that holds one), then the
/// longer prefixes before the shorter; each kind that finds no way marks its overflow bit.
pub fn sets(prefixes: &[Prefix]) -> HashMap<u32, Exact4Set> {
    // Sorted by one number: set, then 32 - length, scope and address (tens of thousands of
    // prefixes at 100,000 rules: a sort of tuples cost twice as much).
    const _: () = assert!(EXACT4_SETS <= 1 << 24 && DIR_SCOPES <= 4);
    let mut keyed: Vec<(u64, u32, &Prefix)> = prefixes
        .iter()
        .filter(|p| exact4_len(p.len) && p.scope < DIR_SCOPES)
        .map(|p| {
            let h = exact4_long_hash(p.scope, p.len, p.addr);
            let set = u64::from(h & (EXACT4_SETS - 1));
            let order = set << 37 | u64::from(32 - p.len) << 34 | u64::from(p.scope) << 32;
            (order | u64::from(p.addr), h, p)
        })
        .collect();
    keyed.sort_unstable_by_key(|&(order, _, _)| order);
    let mut out = HashMap::with_capacity_and_hasher(keyed.len(), Default::default());
    for members in keyed.chunk_by(|a, b| a.0 >> 37 == b.0 >> 37) {
        let mut set = Exact4Set::default();
        let mut used = 0;
        for &(_, h, p) in members {
            if used == EXACT4_WAYS {
                set.overflow |= if p.len == 32 {
                    1 << p.scope
                } else {
                    1 << (EXACT4_LONG_OVERFLOW + p.scope)
                };
                continue;
            }
            set.filter |= exact4_filter_bit(h);
            set.ways[used] = Exact4Way {
                addr: p.addr,
                tag: exact4_tag(p.scope, p.len) | p.entry,
            };
            used += 1;
        }
        out.insert((members[0].0 >> 37) as u32, set);
    }
    out
}

/// Gives the ways of `exact4` and `exact6`, as [`sets`] and [`sets6`] make them (with entry
/// ids), their leaf numbers ([`Leaves::of`]). Separate from the placing, which does not
/// depend on the numbers, so that the placing can run before the direct index is known.
pub fn number(
    exact4: &mut HashMap<u32, Exact4Set>,
    exact6: &mut HashMap<u32, Exact6Set>,
    leaves: &Leaves,
) {
    if leaves.all_own {
        return;
    }
    let renumber = |tag: &mut u32| {
        if *tag & EXACT4_USED != 0 {
            *tag = *tag & !EXACT4_ENTRY_MASK | leaves.of(*tag & EXACT4_ENTRY_MASK);
        }
    };
    for set in exact4.values_mut() {
        set.ways.iter_mut().for_each(|w| renumber(&mut w.tag));
    }
    for set in exact6.values_mut() {
        set.ways.iter_mut().for_each(|w| renumber(&mut w.tag));
    }
}

/// One probe of the table for the /`len` network `net` of rule set `scope`: `Some` with its
/// leaf when a way holds it, or `Trie` for a miss in a set whose bit `overflow` is set; `None`
/// for a miss. What the program does (`exact_v4_probe` in gateway-ebpf), for the tests.
fn probe(t: &Tables, scope: u32, len: u32, net: u32, overflow: u32) -> Option<Answer> {
    let h = exact4_long_hash(scope, len, net);
    let set = t.exact4.get(&(h & (EXACT4_SETS - 1)))?;
    let want = exact4_tag(scope, len);
    // The filter says which networks cannot be here: their ways are not compared.
    let maybe = set.filter & exact4_filter_bit(h) != 0;
    let found = set
        .ways
        .iter()
        .find(|w| maybe && w.addr == net && w.tag & !EXACT4_ENTRY_MASK == want);
    if let Some(way) = found {
        return Some(
            t.leaves4
                .get(&(way.tag & EXACT4_ENTRY_MASK))
                .map_or(Answer::Trie, |v| Answer::Leaf(*v)),
        );
    }
    (set.overflow & overflow != 0).then_some(Answer::Trie)
}

/// What the table says about `addr` in rule set `scope`: `Some` for a /32 it holds
/// (`Leaf`) or for a miss in a set that overflowed for the scope (`Trie`); `None` sends the
/// address on to the direct index. What the program does (`exact_v4` in gateway-ebpf), for the
/// tests.
pub fn lookup(t: &Tables, scope: u32, addr: u32) -> Option<Answer> {
    probe(t, scope, 32, addr, 1 << scope)
}

/// What the table says about `addr` in rule set `scope` whose /24 slot `v` names lengths of
/// the table (`gateway_common::dir_longs`): the longest of its networks that contains
/// `addr`, else the /24's base; `Trie` for a miss in a set that overflowed for the scope.
/// What the program does (`exact_v4_longs` in gateway-ebpf), for the tests.
pub fn lookup_longs(t: &Tables, scope: u32, addr: u32, v: u32) -> Answer {
    for len in (25..32).rev() {
        if dir_longs(v) & (1 << (len - 25)) == 0 {
            continue;
        }
        let net = addr & (u32::MAX << (32 - len));
        if let Some(found) = probe(t, scope, len, net, 1 << (EXACT4_LONG_OVERFLOW + scope)) {
            return found;
        }
    }
    match dir_slot_leaf(v) {
        Some(n) => t.leaves4.get(&n).map_or(Answer::Trie, |v| Answer::Leaf(*v)),
        None => Answer::None,
    }
}

/// The leaf numbers the ways of `exact4` and `exact6` name (those without a leaf left out).
pub fn leaf_numbers<'a>(
    exact4: &'a HashMap<u32, Exact4Set>,
    exact6: &'a HashMap<u32, Exact6Set>,
) -> impl Iterator<Item = u32> + 'a {
    let tags4 = exact4.values().flat_map(|s| s.ways.iter().map(|w| w.tag));
    let tags6 = exact6.values().flat_map(|s| s.ways.iter().map(|w| w.tag));
    tags4
        .chain(tags6)
        .filter(|t| t & EXACT4_USED != 0)
        .map(|t| t & EXACT4_ENTRY_MASK)
        .filter(|&n| n != EXACT_NO_LEAF)
}

/// An IPv6 source entry of a rule set, as the exact-prefix table sees it.
#[derive(Debug, Clone, Copy)]
pub struct Prefix6 {
    /// Scope id (no generation bit).
    pub scope: u32,
    /// Network address, first and last 64 bits (`u64::from_be_bytes`).
    pub hi: u64,
    pub lo: u64,
    /// Prefix length, 0-128.
    pub len: u32,
    /// Entry id (no generation bit).
    pub entry: u32,
}

/// Most networks one rule set may put in `SRC6_EXACT` once its prefixes are expanded to its
/// levels ([`lens6`]): half the table, so that sets rarely overflow.
pub const EXACT6_BUDGET: u64 = EXACT6_SETS as u64 * EXACT6_WAYS as u64 / 2;

/// The `SRC6_LENS` value of a rule set whose IPv6 prefixes have the lengths `lens` (one per
/// prefix), if the table can answer for it; none is fine: every IPv6 source then misses
/// without a trie look-up. The rule set's `IFACE_SRC6_EXACT` flag and the placing of its
/// prefixes ([`sets6`]) both follow from this.
///
/// The program probes one length per level, so a rule set with more than `EXACT6_LENS`
/// lengths has its prefixes expanded (a /50 is four /52s): the levels are the lengths, at
/// most `EXACT6_LENS` of them and always including the longest, that need the fewest
/// networks, each prefix expanded to the shortest level at or above its length. When even
/// the best choice needs more than [`EXACT6_BUDGET`] networks, the trie answers.
pub fn lens6(lens: impl IntoIterator<Item = u32>) -> Option<Src6Lens> {
    let mut counts = std::collections::BTreeMap::<u32, u64>::new();
    for len in lens {
        *counts.entry(len).or_default() += 1;
    }
    let (ls, cs): (Vec<u32>, Vec<u64>) = counts.into_iter().unzip();
    let n = ls.len();
    let levels = if n <= EXACT6_LENS {
        ls
    } else {
        // cost(j, i): the networks of the lengths ls[j..=i] expanded to ls[i].
        let over = EXACT6_BUDGET + 1;
        let cost = |j: usize, i: usize| -> u64 {
            let mut sum = 0u64;
            for t in j..=i {
                let shift = ls[i] - ls[t];
                let each = if shift >= 32 { over } else { cs[t] << shift };
                sum = sum.saturating_add(each).min(over);
            }
            sum
        };
        // best[k][i]: the fewest networks for ls[..=i] with k + 1 levels, the last at ls[i];
        // from[k][i]: where the level before it is.
        let mut best = vec![vec![over; n]; EXACT6_LENS];
        let mut from = vec![vec![usize::MAX; n]; EXACT6_LENS];
        for (i, b) in best[0].iter_mut().enumerate() {
            *b = cost(0, i);
        }
        for k in 1..EXACT6_LENS {
            for i in k..n {
                for j in (k - 1)..i {
                    let c = best[k - 1][j].saturating_add(cost(j + 1, i)).min(over);
                    if c < best[k][i] {
                        best[k][i] = c;
                        from[k][i] = j;
                    }
                }
            }
        }
        let k = (0..EXACT6_LENS).min_by_key(|&k| best[k][n - 1])?;
        if best[k][n - 1] > EXACT6_BUDGET {
            return None;
        }
        let (mut levels, mut k, mut i) = (Vec::new(), k, n - 1);
        loop {
            levels.push(ls[i]);
            if k == 0 {
                break;
            }
            (k, i) = (k - 1, from[k][i]);
        }
        levels
    };
    let mut out = Src6Lens {
        count: levels.len() as u32,
        ..Src6Lens::default()
    };
    let mut levels = levels;
    levels.sort_unstable_by(|a, b| b.cmp(a));
    for (slot, len) in out.lens.iter_mut().zip(levels) {
        *slot = len as u8;
    }
    Some(out)
}

/// The `SRC6_LENS` values (by scope, the non-empty ones) and `SRC6_EXACT` sets (by index
/// within a generation) of `prefixes`, each expanded to its rule set's level ([`lens6`]):
/// those of scopes beyond `DIR_SCOPES`, or of a rule set the table cannot answer for, are
/// left to the trie.
pub fn sets6(prefixes: &[Prefix6]) -> Sets6 {
    let mut by_scope: BTreeMap<u32, Vec<&Prefix6>> = BTreeMap::new();
    for p in prefixes.iter().filter(|p| p.scope < DIR_SCOPES) {
        by_scope.entry(p.scope).or_default().push(p);
    }
    let mut lens = HashMap::default();
    let mut filter: HashMap<u32, Filter6Block> = HashMap::default();
    let mut placed: Vec<Prefix6> = Vec::new();
    for (scope, members) in by_scope {
        let Some(mut l) = lens6(members.iter().map(|p| p.len)) else {
            continue;
        };
        l.filter = filter6(&l);
        lens.insert(scope, l);
        let levels = &l.lens[..l.count as usize];
        // (level, network, prefix length, entry) of every network an expansion makes (a
        // sorted vector: a map costs several times as much at 20,000 networks); where two
        // meet, the longest prefix's.
        let mut expanded: Vec<(u32, u128, u32, u32)> = Vec::with_capacity(members.len());
        for p in members {
            let level = levels
                .iter()
                .map(|&l| u32::from(l))
                .filter(|&l| l >= p.len)
                .min()
                .expect("the longest length is a level");
            let network = u128::from(p.hi) << 64 | u128::from(p.lo);
            for k in 0..1u128 << (level - p.len) {
                let sub = network | k.checked_shl(128 - level).unwrap_or(0);
                expanded.push((level, sub, p.len, p.entry));
            }
        }
        expanded.sort_unstable_by_key(|&(level, net, len, _)| (level, net, std::cmp::Reverse(len)));
        expanded.dedup_by_key(|&mut (level, net, _, _)| (level, net));
        // Every network of the long levels, placed in a way or not (an overflowed set must
        // still be reached, for its overflow to send the address to the trie).
        if l.filter & SRC6_FILTER_ON != 0 {
            let key = (l.filter >> 8) & 0xff;
            for &(level, net, _, _) in &expanded {
                if level >= key {
                    let (block, word, bit) = filter6_key(scope, key, net);
                    filter.entry(block).or_default().words[word] |= bit;
                }
            }
        }
        placed.extend(
            expanded
                .into_iter()
                .map(|(len, network, _, entry)| Prefix6 {
                    scope,
                    hi: (network >> 64) as u64,
                    lo: network as u64,
                    len,
                    entry,
                }),
        );
    }
    // By set; in a set, longest first, so that a crowded set keeps the networks probed first,
    // then by network, so that a set depends on its own networks alone.
    let mut keyed: Vec<(u32, u32, Prefix6)> = placed
        .into_iter()
        .map(|p| {
            let h = exact6_hash(p.scope, p.len, p.hi, p.lo);
            (exact6_set(h), h, p)
        })
        .collect();
    keyed.sort_unstable_by_key(|&(set, _, p)| (set, std::cmp::Reverse(p.len), p.scope, p.hi, p.lo));
    let mut out = HashMap::with_capacity_and_hasher(keyed.len(), Default::default());
    for members in keyed.chunk_by(|a, b| a.0 == b.0) {
        let mut set = Exact6Set::default();
        let mut used = 0;
        for &(_, h, p) in members {
            if used == EXACT6_WAYS {
                set.overflow |= 1 << p.scope;
                continue;
            }
            set.filter |= exact6_filter_bit(h);
            set.ways[used] = Exact6Way {
                hi: p.hi,
                lo: p.lo,
                tag: EXACT4_USED | p.scope << 24 | p.entry,
                len: p.len,
            };
            used += 1;
        }
        out.insert(members[0].0, set);
    }
    Sets6 {
        lens,
        sets: out,
        filter,
    }
}

/// What [`sets6`] makes of a generation's IPv6 prefixes.
#[derive(Debug, Default)]
pub struct Sets6 {
    /// `SRC6_LENS`, by scope (those with a length).
    pub lens: HashMap<u32, Src6Lens>,
    /// `SRC6_EXACT`, the sets that are not empty, by index within a generation.
    pub sets: HashMap<u32, Exact6Set>,
    /// `SRC6_FILTER`, the blocks that are not empty, by index within a generation.
    pub filter: HashMap<u32, Filter6Block>,
}

/// `Src6Lens::filter` of a rule set with the levels of `l`: the key is the shortest level of
/// at least `FILTER6_MIN_KEY` bits, and the levels it covers are that one and the longer ones
/// (the first of `lens`, longest first); 0 (no filter) with fewer than two such levels, where
/// the filter's hash and bit would cost what the one probe they rule out does.
pub fn filter6(l: &Src6Lens) -> u32 {
    let levels = &l.lens[..l.count as usize];
    let long = levels
        .iter()
        .take_while(|&&len| u32::from(len) >= FILTER6_MIN_KEY)
        .count();
    match long {
        0 | 1 => 0,
        n => SRC6_FILTER_ON | u32::from(levels[n - 1]) << 8 | n as u32,
    }
}

/// The `SRC6_FILTER` bit of `network` (any length of at least `key` bits) of rule set slot
/// `scope` under a key of `key` bits (`FILTER6_MIN_KEY` to 128): [`filter6_bit`] of its first
/// `key` bits, as the program hashes them.
pub fn filter6_key(scope: u32, key: u32, network: u128) -> (u32, usize, u64) {
    let masked = network & (u128::MAX << (128 - key));
    filter6_bit(filter6_hash(
        scope,
        key,
        (masked >> 64) as u64,
        masked as u64,
    ))
}

/// How full the exact tables of one generation are: what an operator watches to see a
/// blocklist outgrow the fast path (`/status` `fast_path`, `tollgate_map_entries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FastPath {
    /// Ways in use of `SRC4_EXACT` (IPv4 /25–/32 sources).
    pub exact_v4_ways: usize,
    /// Sets of `SRC4_EXACT` that had more networks than ways: an address of a /16 holding
    /// /32s (or of a /24 probing the set for a /25–/31) that misses in one asks the trie.
    pub exact_v4_overflowed_sets: usize,
    /// Ways in use of `SRC6_EXACT` (IPv6 networks, after expansion).
    pub exact_v6_ways: usize,
    /// Sets of `SRC6_EXACT` that had more networks than ways.
    pub exact_v6_overflowed_sets: usize,
    /// Bits set in `SRC6_FILTER` (of 2^21): the more, the fewer IPv6 sources it rules out
    /// before the levels are probed.
    pub exact_v6_filter_bits: usize,
    /// Ways of either table whose entry has no leaf: the addresses they hold ask the trie.
    pub ways_without_leaf: usize,
    /// Leaves in use (`SRC4_LEAVES`, both families).
    pub leaves: usize,
    /// Rule sets with IPv6 sources the exact table does not answer for (lengths too far
    /// apart to expand, or past the rule sets the tables serve): their IPv6 sources ask the
    /// trie.
    pub ipv6_rule_sets_on_trie: usize,
}

/// [`FastPath`] of `t`.
pub fn fast_path(t: &Tables) -> FastPath {
    let tag = |tag: u32| {
        (
            tag & EXACT4_USED != 0,
            tag & EXACT4_ENTRY_MASK == EXACT_NO_LEAF,
        )
    };
    let ways4 = t
        .exact4
        .values()
        .flat_map(|s| s.ways.iter().map(|w| tag(w.tag)));
    let ways6 = t
        .exact6
        .values()
        .flat_map(|s| s.ways.iter().map(|w| tag(w.tag)));
    let (mut v4, mut v6, mut no_leaf) = (0, 0, 0);
    for (used, none) in ways4 {
        v4 += usize::from(used);
        no_leaf += usize::from(used && none);
    }
    for (used, none) in ways6 {
        v6 += usize::from(used);
        no_leaf += usize::from(used && none);
    }
    // The rule sets with IPv6 sources, by scope; those the table answers for have lengths.
    let with_v6: std::collections::BTreeSet<u32> = t
        .src_v6
        .keys()
        .map(|(_, k)| u32::from_be_bytes(k.scope))
        .collect();
    FastPath {
        exact_v4_ways: v4,
        exact_v4_overflowed_sets: t.exact4.values().filter(|s| s.overflow != 0).count(),
        exact_v6_ways: v6,
        exact_v6_overflowed_sets: t.exact6.values().filter(|s| s.overflow != 0).count(),
        exact_v6_filter_bits: t
            .filter6
            .values()
            .flat_map(|b| b.words.iter())
            .map(|w| w.count_ones() as usize)
            .sum(),
        ways_without_leaf: no_leaf,
        leaves: t.leaves4.len(),
        ipv6_rule_sets_on_trie: with_v6.iter().filter(|s| !t.lens6.contains_key(s)).count(),
    }
}

#[cfg(test)]
mod tests;
