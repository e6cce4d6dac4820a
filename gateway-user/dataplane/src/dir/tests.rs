//! Unit tests of the IPv4 direct index and the port direct tables.
use super::*;
use gateway_common::{SrcV4, Verdict, EXACT4_LONG_OVERFLOW, EXACT4_SETS, EXACT4_WAYS, SCOPE_BITS};
use ipnet::Ipv4Net;
use proptest::prelude::*;

fn tables(prefixes: &[(u32, Ipv4Net, u32)]) -> Tables {
    let mut t = Tables::default();
    for &(scope, net, entry) in prefixes {
        t.src_v4.insert(
            (
                SCOPE_BITS + u32::from(net.prefix_len()),
                SrcV4 {
                    scope: scope.to_be_bytes(),
                    addr: net.network().octets(),
                },
            ),
            SrcValue {
                entry,
                flags: 0,
                verdict: Verdict::default(),
            },
        );
    }
    t
}

/// The longest prefix of `scope` containing `addr`, as the trie answers.
fn trie(t: &Tables, scope: u32, addr: [u8; 4]) -> Option<SrcValue> {
    t.src_v4
        .iter()
        .filter(|((len, k), _)| {
            let len = len - SCOPE_BITS;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from_be_bytes(k.scope) == scope
                && u32::from_be_bytes(k.addr) & mask == u32::from_be_bytes(addr) & mask
        })
        .max_by_key(|((len, _), _)| *len)
        .map(|(_, v)| *v)
}

fn agrees(t: &Tables, scope: u32, addr: [u8; 4]) {
    let want = trie(t, scope, addr);
    match lookup(t, scope, addr) {
        Answer::None => assert_eq!(None, want, "{addr:?} in scope {scope}"),
        Answer::Leaf(v) => assert_eq!(Some(v), want, "{addr:?} in scope {scope}"),
        Answer::Trie => {}
    }
}

/// The entry id of a leaf; `Err(())` for the trie.
fn entry(a: Answer) -> Result<Option<u32>, ()> {
    match a {
        Answer::None => Ok(None),
        Answer::Leaf(v) => Ok(Some(v.entry)),
        Answer::Trie => Err(()),
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn prefixes_of_every_length_are_answered_by_slots_and_chunks() {
    let mut t = tables(&[
        (0, net("10.0.0.0/8"), 1),
        (0, net("10.1.0.0/16"), 2),
        (0, net("10.2.3.0/24"), 3),
        (0, net("10.2.4.7/32"), 4),
        (0, net("10.2.4.16/28"), 6),
        (1, net("0.0.0.0/0"), 5),
    ]);
    build(&mut t, &Tables::default(), Room::default());
    let leaf = |e| entry(lookup(&t, 0, e));
    assert_eq!(leaf([10, 9, 9, 9]), Ok(Some(1)));
    assert_eq!(leaf([10, 1, 200, 1]), Ok(Some(2)));
    assert_eq!(leaf([10, 2, 3, 1]), Ok(Some(3)));
    assert_eq!(leaf([10, 2, 5, 1]), Ok(Some(1)));
    // A /24 with a /28 in it has a chunk of address slots; the /32 is in the exact table.
    assert_eq!(leaf([10, 2, 4, 1]), Ok(Some(1)));
    assert_eq!(leaf([10, 2, 4, 7]), Ok(Some(4)));
    assert_eq!(leaf([10, 2, 4, 8]), Ok(Some(1)));
    assert_eq!(leaf([10, 2, 4, 16]), Ok(Some(6)));
    assert_eq!(leaf([10, 2, 4, 31]), Ok(Some(6)));
    assert_eq!(leaf([10, 2, 4, 32]), Ok(Some(1)));
    // The /32 and the /28 (which its /24's chunk answers: the table's copy is not probed).
    assert_eq!(t.exact4.len(), 2);
    // Only the /16 that holds the /32 sends its addresses to the exact table.
    let flagged: Vec<(u32, usize)> = t
        .dir4
        .iter()
        .flat_map(|(&b, block)| {
            (0..256)
                .filter(|&i| block.slots[i] & DIR_SINGLES != 0)
                .map(move |i| (b, i))
        })
        .collect();
    assert_eq!(flagged, [(10, 2)]);
    assert_eq!(leaf([11, 0, 0, 1]), Ok(None));
    assert_eq!(entry(lookup(&t, 1, [192, 0, 2, 1])), Ok(Some(5)));
    assert_eq!(
        lookup(&t, 2, [10, 0, 0, 1]),
        Answer::None,
        "no entries, no blocks"
    );
    // Two chunks (10.2/16, 10.2.4/24); 10.1/16 is uniform, so it needs none.
    assert_eq!(t.chunks4.len(), 2);
}

#[test]
fn a_slash24_without_room_for_its_chunk_is_answered_by_the_exact_table() {
    let mut t = tables(&[
        (0, net("10.2.4.6/31"), 1),
        (0, net("10.2.5.0/24"), 2),
        (0, net("10.2.5.64/26"), 3),
        (0, net("10.2.5.96/28"), 4),
        (0, net("10.2.5.100/30"), 5),
        (0, net("10.2.0.0/16"), 6),
    ]);
    // One chunk: the /16's, so neither /24 gets a chunk of address slots.
    let one = Room {
        chunks: 1,
        leaves: 65_536,
    };
    build(&mut t, &Tables::default(), one);
    assert_eq!(t.chunks4.len(), 1);
    let leaf = |t: &Tables, a| entry(lookup(t, 0, a));
    // The /31, and the /16 around it (the /24's base).
    assert_eq!(leaf(&t, [10, 2, 4, 7]), Ok(Some(1)));
    assert_eq!(leaf(&t, [10, 2, 4, 5]), Ok(Some(6)));
    assert_eq!(leaf(&t, [10, 2, 4, 8]), Ok(Some(6)));
    // Nested: the longest that contains the address, else the /24 itself.
    assert_eq!(leaf(&t, [10, 2, 5, 101]), Ok(Some(5)));
    assert_eq!(leaf(&t, [10, 2, 5, 104]), Ok(Some(4)));
    assert_eq!(leaf(&t, [10, 2, 5, 65]), Ok(Some(3)));
    assert_eq!(leaf(&t, [10, 2, 5, 1]), Ok(Some(2)));
    assert_eq!(leaf(&t, [10, 2, 6, 7]), Ok(Some(6)));
    // The slot names the /24's lengths and its base.
    let chunk = t.chunks4.values().next().unwrap();
    assert_eq!(
        chunk.slots[5],
        dir_longs_slot(1 << 1 | 1 << 3 | 1 << 5, Some(2))
    );
    assert_eq!(dir_slot_leaf(chunk.slots[4]), Some(6));

    // Without a /16 around it, an address of no prefix is answered: none.
    let mut t = tables(&[(0, net("10.2.4.6/31"), 1), (0, net("10.2.5.0/24"), 2)]);
    build(&mut t, &Tables::default(), one);
    assert_eq!(leaf(&t, [10, 2, 4, 7]), Ok(Some(1)));
    assert_eq!(leaf(&t, [10, 2, 4, 9]), Ok(None));
    // A base with no leaf (its entry past the leaves) leaves the /24 to the trie.
    let mut t = tables(&[(0, net("10.2.4.6/31"), 1), (0, net("10.2.4.0/24"), 70)]);
    build(
        &mut t,
        &Tables::default(),
        Room {
            chunks: 1,
            leaves: 64,
        },
    );
    assert_eq!(leaf(&t, [10, 2, 4, 7]), Err(()));
}

#[test]
fn a_long_prefix_that_finds_no_way_sends_its_sets_misses_to_the_trie() {
    // Eight /30s of one scope in one set: the eighth finds no way.
    let target = gateway_common::exact4_long_hash(0, 30, 0x0a00_0000) & (EXACT4_SETS - 1);
    let crowded: Vec<u32> = (0..1u32 << 22)
        .map(|i| 0x0a00_0000 | i << 2)
        .filter(|&a| gateway_common::exact4_long_hash(0, 30, a) & (EXACT4_SETS - 1) == target)
        .take(EXACT4_WAYS + 1)
        .collect();
    let prefixes: Vec<(u32, Ipv4Net, u32)> = crowded
        .iter()
        .enumerate()
        .map(|(i, &a)| (0, Ipv4Net::new(a.into(), 30).unwrap(), i as u32 + 1))
        .collect();
    let mut t = tables(&prefixes);
    build(
        &mut t,
        &Tables::default(),
        Room {
            chunks: 0,
            leaves: 65_536,
        },
    );
    let set = &t.exact4[&target];
    assert_eq!(set.overflow, 1 << EXACT4_LONG_OVERFLOW, "not the /32s' bit");
    // With no chunk at all, the /16s ask the trie; the table is what a /24 slot would probe.
    let last = *crowded.last().unwrap();
    let slot = dir_longs_slot(1 << 5, None);
    assert_eq!(
        super::super::exact::lookup_longs(&t, 0, last | 1, slot),
        Answer::Trie
    );
    let first = crowded[0];
    assert_eq!(
        entry(super::super::exact::lookup_longs(&t, 0, first | 3, slot)),
        Ok(Some(1))
    );
}

#[test]
fn scopes_beyond_the_index_are_left_to_the_trie() {
    let mut t = tables(&[(DIR_SCOPES, net("10.0.0.0/8"), 1)]);
    build(&mut t, &Tables::default(), Room::default());
    assert!(t.dir4.is_empty() && t.leaves4.is_empty());
}

#[test]
fn without_room_the_trie_answers() {
    let mut t = tables(&[
        (0, net("10.2.3.0/24"), 1),
        (0, net("10.3.3.0/24"), 2),
        (0, net("172.16.0.0/12"), 70_000),
    ]);
    build(
        &mut t,
        &Tables::default(),
        Room {
            chunks: 1,
            leaves: 65_536,
        },
    );
    assert_eq!(t.chunks4.len(), 1);
    let got: Vec<_> = [[10, 2, 3, 1], [10, 3, 3, 1], [172, 17, 0, 1]]
        .iter()
        .map(|a| entry(lookup(&t, 0, *a)))
        .collect();
    assert_eq!(got, [Ok(Some(1)), Err(()), Err(())]);
}

#[test]
fn a_slash16_keeps_its_chunk_id_across_revisions() {
    let mut a = tables(&[(0, net("10.9.3.0/24"), 1)]);
    build(&mut a, &Tables::default(), Room::default());
    let mut b = tables(&[(0, net("10.1.3.0/24"), 2), (0, net("10.9.3.0/24"), 1)]);
    build(&mut b, &a, Room::default());
    // 10.9/16 keeps chunk 0 although 10.1/16 sorts before it.
    assert_eq!(entry(lookup(&b, 0, [10, 9, 3, 1])), Ok(Some(1)));
    assert_eq!(b.chunks4.get(&0), a.chunks4.get(&0));
    assert_eq!(b.dir4.len(), 1);
    assert_eq!(b.chunks4.len(), 2);
}

fn verdict(rule: u32) -> Verdict {
    Verdict {
        allow_rule: rule,
        ..Verdict::default()
    }
}

/// The `PORTS` trie's answer: the longest port prefix containing `port`, else `base`.
fn port_trie(
    base: Option<Verdict>,
    prefixes: &[((u16, u8), Verdict)],
    port: u16,
) -> Option<Verdict> {
    prefixes
        .iter()
        .filter(|((value, len), _)| {
            let mask = if *len == 0 {
                0
            } else {
                u16::MAX << (16 - u32::from(*len))
            };
            port & mask == value & mask
        })
        .max_by_key(|((_, len), _)| *len)
        .map(|(_, v)| *v)
        .or(base)
}

#[test]
fn a_port_table_that_does_not_fit_is_left_to_the_trie() {
    // Ports 0, 256, 512, ...: one chunk per high byte.
    let spread: Vec<_> = (0..PORT_DIR_BLOCKS as u16)
        .map(|i| ((i << 8 | 1, 16), verdict(1)))
        .collect();
    assert!(ports(None, &spread).is_none(), "one chunk too many");
    assert!(ports(None, &spread[..PORT_DIR_BLOCKS as usize - 1]).is_some());
    let distinct: Vec<_> = (0..=PORT_DIR_VERDICTS as u16)
        .map(|i| ((i, 16), verdict(u32::from(i))))
        .collect();
    assert!(ports(None, &distinct).is_none(), "one verdict too many");
    assert!(ports(None, &distinct[..PORT_DIR_VERDICTS as usize]).is_some());
}

proptest! {
    /// A port direct table answers every port as the trie does.
    #[test]
    fn the_port_table_agrees_with_the_trie(
        base in prop::option::of(0u32..3),
        raw in prop::collection::vec((any::<u16>(), 0u8..=16, 0u32..6), 0..12),
        probes in prop::collection::vec(any::<u16>(), 32),
    ) {
        let mut prefixes: Vec<((u16, u8), Verdict)> = Vec::new();
        for (value, len, rule) in raw {
            let mask = if len == 0 { 0 } else { u16::MAX << (16 - u32::from(len)) };
            let key = (value & mask, len);
            if prefixes.iter().all(|(k, _)| *k != key) {
                prefixes.push((key, verdict(rule)));
            }
        }
        let base = base.map(verdict);
        let Some(table) = ports(base, &prefixes) else {
            return Ok(());
        };
        let mut all: Vec<u16> = probes;
        for ((value, len), _) in &prefixes {
            let n = 1u32 << (16 - u32::from(*len));
            all.push(*value);
            all.push((u32::from(*value) + n - 1) as u16);
            all.push(value.wrapping_sub(1));
            all.push((u32::from(*value) + n) as u16);
        }
        for port in all {
            prop_assert_eq!(port_lookup(&table, port), port_trie(base, &prefixes, port), "port {}", port);
        }
    }
}

fn prefix() -> impl Strategy<Value = (u32, Ipv4Net, u32)> {
    // Few distinct high bytes, so that prefixes nest and share /16s and /24s.
    (
        0u32..2,
        0u8..=32,
        prop::sample::select(vec![10u8, 11, 192]),
        any::<u32>(),
    )
        .prop_map(|(scope, len, b0, rest)| {
            let addr = (u32::from(b0) << 24) | (rest & 0x03_03_ff);
            let net = Ipv4Net::new(addr.into(), len).unwrap().trunc();
            (scope, net, 0)
        })
}

proptest! {
    /// Wherever the index answers, it answers what the trie would.
    #[test]
    fn the_index_agrees_with_the_trie(
        mut prefixes in prop::collection::vec(prefix(), 0..40),
        probes in prop::collection::vec((0u32..3, prop::sample::select(vec![10u8, 11, 192]), any::<u32>()), 64),
        chunks in 1u32..4,
    ) {
        for (i, p) in prefixes.iter_mut().enumerate() {
            p.2 = i as u32 * 3;
        }
        let mut t = tables(&prefixes);
        let room = Room { chunks, leaves: 60 };
        build(&mut t, &Tables::default(), room);
        prop_assert!(t.chunks4.len() as u32 <= chunks);
        prop_assert!(t.leaves4.keys().all(|e| e < room.leaves));
        for (scope, b0, rest) in probes {
            let a = ((u32::from(b0) << 24) | (rest & 0x03_03_ff)).to_be_bytes();
            agrees(&t, scope, a);
        }
        // Every address of every prefix, at its ends.
        for (scope, net, _) in &prefixes {
            agrees(&t, *scope, net.network().octets());
            agrees(&t, *scope, net.broadcast().octets());
        }
    }
}
