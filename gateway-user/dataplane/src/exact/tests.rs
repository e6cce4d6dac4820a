use super::*;
use gateway_common::exact4_set;

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
    let sets = sets(&prefixes);
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
    assert_eq!(super::sets(&prefixes), sets);
}

#[test]
fn an_entry_without_a_leaf_keeps_its_way_and_sends_only_its_address_to_the_trie() {
    let room = Room {
        leaves: 10,
        ..Room::default()
    };
    let mut sets = sets(&[p(0, 0x0a00_0001, 3), p(0, 0x0a00_0002, 10)]);
    number(&mut sets, &mut HashMap::default(), &Leaves::own(room));
    assert!(sets.values().all(|s| s.overflow == 0));
    let tags: Vec<u32> = sets
        .values()
        .flat_map(|s| s.ways.iter().map(|w| w.tag & EXACT4_ENTRY_MASK))
        .filter(|&e| e != 0)
        .collect();
    assert!(
        tags.contains(&3) && tags.contains(&EXACT_NO_LEAF),
        "{tags:?}"
    );
    assert_eq!(
        leaf_numbers(&sets, &HashMap::default()).collect::<Vec<_>>(),
        vec![3]
    );
    let t = Tables {
        exact4: sets,
        ..Tables::default()
    };
    assert_eq!(lookup(&t, 0, 0x0a00_0002), Some(Answer::Trie));
    assert_eq!(lookup(&t, 0, 0x0a00_0003), None);
}

#[test]
fn ipv6_lengths_are_probed_longest_first_and_lengths_too_far_apart_leave_the_rule_set_to_the_trie()
{
    let l = lens6([64, 48, 128, 64, 0]).unwrap();
    assert_eq!((l.count, &l.lens[..4]), (4, &[128u8, 64, 48, 0][..]));
    assert_eq!(lens6([]).unwrap(), Src6Lens::default());
    // Nine lengths: the one with the fewest prefixes is expanded to the next.
    let mut lens: Vec<u32> = (48..=56).flat_map(|l| [l; 1000]).collect();
    lens.retain(|&l| l != 49);
    lens.push(49);
    let l = lens6(lens).unwrap();
    assert_eq!(l.lens, [56, 55, 54, 53, 52, 51, 50, 48]);
    // Lengths 16 apart: an expansion would need 65,536 networks per prefix.
    let spread = || (0..=EXACT6_LENS as u32).map(|i| 16 * i);
    assert!(lens6(spread()).is_none());
    // A scope whose lengths the table cannot take is not placed; the other is.
    let p6 = |scope, len, hi| Prefix6 {
        scope,
        hi,
        lo: 0,
        len,
        entry: 1,
    };
    let mut prefixes: Vec<Prefix6> = spread().map(|len| p6(0, len, 0)).collect();
    prefixes.push(p6(1, 64, 0x2001_0db8_0000_0001));
    let six = sets6(&prefixes);
    assert_eq!(six.lens.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(leaf_numbers(&HashMap::default(), &six.sets).count(), 1);
}

#[test]
fn a_full_ipv6_set_overflows_and_keeps_its_longest_prefixes() {
    let target = exact6_set(exact6_hash(2, 64, 1, 0));
    let mut prefixes: Vec<Prefix6> = (1u64..)
        .filter(|&hi| exact6_set(exact6_hash(2, 64, hi, 0)) == target)
        .take(EXACT6_WAYS + 1)
        .enumerate()
        .map(|(i, hi)| Prefix6 {
            scope: 2,
            hi,
            lo: 0,
            len: 64,
            entry: i as u32,
        })
        .collect();
    // And a /128 elsewhere: two long levels, so that the rule set has a filter (of /64s).
    prefixes.push(Prefix6 {
        scope: 2,
        hi: 0x2a00_1450_0000_0001,
        lo: 1,
        len: 128,
        entry: 99,
    });
    let six = sets6(&prefixes);
    assert_eq!(six.sets.len(), 2);
    assert_eq!(six.sets[&target].overflow, 1 << 2);
    // The filter holds every network, the one that found no way too: an address of it
    // must reach the set, whose overflow sends it to the trie.
    assert_eq!(six.lens[&2].filter, SRC6_FILTER_ON | 64 << 8 | 2);
    for p in &prefixes {
        let (block, word, bit) = filter6_key(2, 64, u128::from(p.hi) << 64);
        assert_ne!(six.filter[&block].words[word] & bit, 0, "{:x}", p.hi);
    }
    prefixes.reverse();
    assert_eq!(sets6(&prefixes).sets, six.sets, "order-independent");
}

#[test]
fn the_filter_is_keyed_by_the_shortest_long_level_and_holds_the_long_levels_only() {
    let l = |lens: &[u8]| {
        let mut out = Src6Lens {
            count: lens.len() as u32,
            ..Src6Lens::default()
        };
        out.lens[..lens.len()].copy_from_slice(lens);
        out
    };
    assert_eq!(
        filter6(&l(&[128, 64, 48, 16, 0])),
        SRC6_FILTER_ON | 48 << 8 | 3
    );
    assert_eq!(filter6(&l(&[64, 32])), SRC6_FILTER_ON | 32 << 8 | 2);
    assert_eq!(filter6(&l(&[64, 16])), 0, "one long level: no filter");
    assert_eq!(filter6(&l(&[31, 0])), 0, "no level of 32 bits or more");
    assert_eq!(filter6(&l(&[])), 0);
    // A /128, a /56 and a /16: the key is 56 bits; the /16 is probed whatever the filter.
    let net = |hi: u64, lo: u64| u128::from(hi) << 64 | u128::from(lo);
    let prefixes = [
        (0x2001_0db8_0000_0001, 5, 128),
        (0x2001_0db8_0000_0200, 0, 56),
        (0x2002_0000_0000_0000, 0, 16),
    ]
    .map(|(hi, lo, len)| Prefix6 {
        scope: 3,
        hi,
        lo,
        len,
        entry: len,
    });
    let six = sets6(&prefixes);
    assert_eq!(six.lens[&3].filter, SRC6_FILTER_ON | 56 << 8 | 2);
    let set = |a: u128| {
        let (block, word, bit) = filter6_key(3, 56, a);
        six.filter
            .get(&block)
            .is_some_and(|b| b.words[word] & bit != 0)
    };
    // The /128 and the /56 by their first 56 bits; the /16 not at all.
    assert!(set(net(0x2001_0db8_0000_0001, 5)));
    assert!(
        set(net(0x2001_0db8_0000_0001, 0xffff)),
        "same 56 bits as the /128"
    );
    assert!(set(net(0x2001_0db8_0000_02ff, 1)));
    let bits: u32 = six
        .filter
        .values()
        .flat_map(|b| b.words.iter())
        .map(|w| w.count_ones())
        .sum();
    assert_eq!(bits, 2);
    // Another scope's key of the same address is another bit (of the 2^21).
    let (block, word, bit) = filter6_key(4, 56, net(0x2001_0db8_0000_0001, 5));
    assert!(six
        .filter
        .get(&block)
        .is_none_or(|b| b.words[word] & bit == 0));
}

#[test]
fn an_expanded_prefix_gives_way_to_a_longer_one_at_its_level() {
    // A /61 and a /63 inside it, at level 63: the /61 becomes four /63s, one of them the
    // /63's.
    let mut prefixes = vec![Prefix6 {
        scope: 0,
        hi: 0x2001_0db8_0000_0000,
        lo: 0,
        len: 61,
        entry: 1,
    }];
    // Four /63s: expanding them to /64 would add four networks, the /61 to /63 three.
    for hi in [
        0x2001_0db8_0000_0002,
        0x2001_0db8_0000_0010,
        0x2001_0db8_0000_0012,
        0x2001_0db8_0000_0014,
    ] {
        prefixes.push(Prefix6 {
            hi,
            len: 63,
            entry: 2,
            ..prefixes[0]
        });
    }
    // Seven more lengths, ten prefixes each: expanding any of them costs more.
    for (i, len) in [64u32, 70, 80, 90, 100, 110, 120].into_iter().enumerate() {
        for j in 0..10u64 {
            prefixes.push(Prefix6 {
                hi: 0x2001_0db8_0001_0000 + ((i as u64) << 8 | j),
                lo: 0,
                len,
                entry: 3,
                ..prefixes[0]
            });
        }
    }
    let six = sets6(&prefixes);
    assert!(!six.lens[&0].lens.contains(&61), "{:?}", six.lens[&0]);
    let at63: Vec<(u64, u32)> = six
        .sets
        .values()
        .flat_map(|s| s.ways.iter())
        .filter(|w| w.len == 63)
        .map(|w| (w.hi, w.tag & EXACT4_ENTRY_MASK))
        .collect();
    let mut at63 = at63;
    at63.sort_unstable();
    assert_eq!(
        at63,
        vec![
            (0x2001_0db8_0000_0000, 1),
            (0x2001_0db8_0000_0002, 2),
            (0x2001_0db8_0000_0004, 1),
            (0x2001_0db8_0000_0006, 1),
            (0x2001_0db8_0000_0010, 2),
            (0x2001_0db8_0000_0012, 2),
            (0x2001_0db8_0000_0014, 2)
        ]
    );
}

#[test]
fn entries_past_the_leaves_take_the_highest_numbers_no_one_names() {
    let room = Room {
        leaves: 8,
        ..Room::default()
    };
    // The index names 7 and 5; exact entries 2 (its own id) and 9, 11, 12, 13 (past them).
    let mut named = vec![false; 8];
    named[7] = true;
    named[5] = true;
    let leaves = Leaves::new(room, &named, [13, 2, 9, 11, 12, 2]);
    let got: Vec<u32> = [2, 9, 11, 12, 13, 4].map(|e| leaves.of(e)).to_vec();
    assert_eq!(got, vec![2, 6, 4, 3, 1, 4]);
    assert_eq!(leaves.entry(6), 9);
    assert_eq!(leaves.entry(5), 5);
    // Numbers run out: the last entries have no leaf.
    let few = Leaves::new(room, &[true; 8], [8, 9]);
    assert_eq!((few.of(8), few.of(9)), (EXACT_NO_LEAF, EXACT_NO_LEAF));
}

#[test]
fn the_fast_path_counts_ways_overflows_missing_leaves_and_rule_sets_left_to_the_trie() {
    let room = Room {
        leaves: 10,
        ..Room::default()
    };
    let target = exact4_set(0, 0x0a00_0001);
    let crowded: Vec<Prefix> = (0x0a00_0001u32..)
        .filter(|&a| exact4_set(0, a) == target)
        .take(EXACT4_WAYS + 1)
        .enumerate()
        .map(|(i, a)| p(0, a, i as u32 + 5))
        .collect();
    let v6 = |scope, len| Prefix6 {
        scope,
        hi: 0x2001_0db8_0000_0000,
        lo: 0,
        len,
        entry: 1,
    };
    // Scope 1: two networks; scope 2: nine lengths 16 apart (left to the trie).
    let mut prefixes6 = vec![v6(1, 48), v6(1, 64)];
    prefixes6.extend((0..=EXACT6_LENS as u32).map(|i| v6(2, 16 * i)));
    let mut t = Tables {
        exact4: sets(&crowded),
        ..Tables::default()
    };
    let six = sets6(&prefixes6);
    (t.lens6, t.exact6, t.filter6) = (six.lens, six.sets, six.filter);
    number(&mut t.exact4, &mut t.exact6, &Leaves::own(room));
    for p in &prefixes6 {
        let key = gateway_common::SrcV6 {
            scope: p.scope.to_be_bytes(),
            addr: (u128::from(p.hi) << 64).to_be_bytes(),
        };
        t.src_v6.insert((32 + p.len, key), Default::default());
    }
    let f = fast_path(&t);
    assert_eq!(
        f,
        FastPath {
            exact_v4_ways: EXACT4_WAYS,
            exact_v4_overflowed_sets: 1,
            exact_v6_ways: 2,
            exact_v6_overflowed_sets: 0,
            // The /48 and the /64 under one key of 48 bits.
            exact_v6_filter_bits: 1,
            // Entries 10 and 11 of the crowded set are past the 10 leaves.
            ways_without_leaf: 2,
            leaves: 0,
            ipv6_rule_sets_on_trie: 1,
        }
    );
}
