//! The IPv6 exact-prefix table (`super::exact::sets6`, `SRC6_EXACT`/`SRC6_LENS`) in the real
//! program: IPv6 sources judged through it agree with the reference evaluator, revision after
//! revision (a crowded set that overflows, a rule set with too many prefix lengths for the
//! table, one with no IPv6 source at all; the filter in front of the long levels), and a
//! second agent reads back what the first wrote. Run by the kernel on crafted packets
//! (`BPF_PROG_TEST_RUN`); needs root.
use std::net::Ipv6Addr;

use gateway_common::{
    exact6_hash, exact6_set, EXACT6_LENS, EXACT6_WAYS, IFACE_SRC6_EXACT, SRC6_FILTER_ON,
};
use ipnet::Ipv6Net;

use super::dir_tests::{apply_policy, assert_read_back, check, Rng};
use super::testrun::TestRig;
use tollgate_compile::l4::policy::{Action, PortRange, Protocol, Rule};

fn net(bits: u128, len: u8) -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::from(bits), len).unwrap().trunc()
}

fn rule(name: String, action: Action, n: Ipv6Net) -> Rule {
    let mut r = Rule::new(name, action);
    r.from = Some(vec![n.into()]);
    r
}

/// An allow of TCP 443 only from `n` (an entry with a port table of its own).
fn allow_443(name: String, n: Ipv6Net) -> Rule {
    let mut r = rule(name, Action::Allow, n);
    r.protocol = Some(Protocol::Tcp);
    r.ports = Some(vec![PortRange {
        first: 443,
        last: 443,
    }]);
    r
}

/// Nested /32, /48, /64 and /128 networks in two /32s: mostly denies, some allows of TCP 443
/// only (an entry with a port table), so that a longer prefix inside a shorter one decides.
fn nested_rules(rng: &mut Rng) -> Vec<Rule> {
    let bases: [u128; 2] = [0x2001_0db8 << 96, 0x2a00_1450 << 96];
    let mut nets = vec![net(bases[0], 32)];
    for i in 0..1_200u128 {
        let base = bases[(i % 2) as usize];
        let r = u128::from(rng.next());
        let (bits, len) = match i % 4 {
            // /48s: 256 possible per /32, so /64s and /128s land in some.
            0 => (base | (r & 0xff) << 80, 48),
            1 | 2 => (base | (r & 0xff) << 80 | (r >> 8 & 0x3) << 64, 64),
            _ => (
                base | (r & 0xff) << 80 | (r >> 8 & 0x3) << 64 | r >> 16 & 0xff,
                128,
            ),
        };
        nets.push(net(bits, len));
    }
    nets.sort_unstable();
    nets.dedup();
    nets.into_iter()
        .enumerate()
        .map(|(i, n)| {
            if i % 5 == 0 {
                allow_443(format!("a{i}"), n)
            } else {
                rule(format!("d{i}"), Action::Deny, n)
            }
        })
        .collect()
}

/// /64s of rule set slot 0 that share one set of the table, found by search.
fn crowded(n: usize) -> Vec<Ipv6Net> {
    let hi0 = 0x2001_0db8_ffff_0000u64;
    let target = exact6_set(exact6_hash(0, 64, hi0, 0));
    (hi0..)
        .filter(|&hi| exact6_set(exact6_hash(0, 64, hi, 0)) == target)
        .take(n)
        .map(|hi| net(u128::from(hi) << 64, 64))
        .collect()
}

/// Each network's first and last address, the addresses just outside it and one inside, for
/// every `step`th rule; and random addresses in the two /32s.
fn sources(rules: &[Rule], step: usize, rng: &mut Rng) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for r in rules.iter().step_by(step) {
        let Some(ipnet::IpNet::V6(n)) = r.from.as_ref().and_then(|f| f.first()).copied() else {
            continue;
        };
        let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
        let inside = match (last - first).checked_add(1) {
            Some(size) => first + u128::from(rng.next()) % size,
            None => u128::from(rng.next()),
        };
        for a in [
            first,
            last,
            first.wrapping_sub(1),
            last.wrapping_add(1),
            inside,
        ] {
            out.push(Ipv6Addr::from(a));
        }
    }
    for base in [0x2001_0db8u128 << 96, 0x2a00_1450 << 96] {
        for _ in 0..100 {
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            out.push(Ipv6Addr::from(base | r >> 32 & ((1 << 96) - 1)));
        }
    }
    out
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn ipv6_sources_judged_through_the_exact_table_agree_with_the_evaluator() {
    let mut rng = Rng(0x3c6e_f372_fe94_f82b);
    let mut rules = nested_rules(&mut rng);
    // One set overfilled (its scope slot is 0: one rule set): the prefixes that find no way
    // are answered by the trie.
    let crowded = crowded(EXACT6_WAYS + 3);
    for (i, &n) in crowded[..EXACT6_WAYS + 2].iter().enumerate() {
        rules.push(rule(format!("c{i}"), Action::Deny, n));
    }
    // More lengths than the table probes: some are expanded to the next level. Nested
    // networks, allows of TCP 443 around denies, so that a network expanded with the wrong
    // entry passes or drops what it should not.
    let mut many = rules.clone();
    for (i, len) in (0..EXACT6_LENS as u8).map(|i| 100 + 3 * i).enumerate() {
        let n = net(0x2001_0db8_0000_0001 << 64 | 0x5555 << 16, len);
        many.push(if i % 2 == 0 {
            allow_443(format!("m{i}"), n)
        } else {
            rule(format!("m{i}"), Action::Deny, n)
        });
    }
    // Lengths 16 apart, more than the table probes: any expansion would need 65,536 networks
    // for one prefix, more than the table's budget, so the trie answers.
    let spread: Vec<Rule> = (0..=EXACT6_LENS as u8)
        .map(|i| {
            let len = 16 * i;
            rule(
                format!("s{i}"),
                if i % 2 == 0 {
                    Action::Deny
                } else {
                    Action::Allow
                },
                net(0x2001_0db8_0000_0002 << 64 | 0xffff, len),
            )
        })
        .collect();
    let none: Vec<Rule> = vec![{
        let mut r = Rule::new("v4-only", Action::Deny);
        r.from = Some(vec!["192.0.2.0/24".parse().unwrap()]);
        r
    }];
    let mut srcs = sources(&many, 7, &mut rng);
    srcs.extend(sources(&many[many.len() - EXACT6_LENS..], 1, &mut rng));
    srcs.extend(sources(&spread, 1, &mut rng));
    for n in &crowded {
        srcs.push(n.network());
        srcs.push(Ipv6Addr::from(u128::from(n.network()) | 0xabcd));
    }
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    // (rules, default action, whether the rule set has the table's flag, whether the table
    // holds any prefix)
    for (revision, (rules, default_action, indexed, sets)) in [
        (&rules, Action::Allow, true, true),
        (&many, Action::Deny, true, true),
        (&spread, Action::Allow, false, false),
        (&none, Action::Deny, true, false),
        (&rules, Action::Deny, true, true),
        (&none, Action::Allow, true, false),
    ]
    .into_iter()
    .enumerate()
    {
        let context = format!("revision {revision}: ");
        let policies = apply_policy(&mut rig, rules, default_action);
        check(&mut rig, &policies, &srcs, &context);
        let dp = rig.dataplane();
        let held = dp.held[dp.active_gen as usize].clone();
        let flags: Vec<u32> = held.ifaces.values().map(|c| c.flags).collect();
        assert!(
            !flags.is_empty() && flags.iter().all(|f| (f & IFACE_SRC6_EXACT != 0) == indexed),
            "revision {revision}: flags {flags:?}"
        );
        assert_eq!(
            !held.exact6.is_empty(),
            sets,
            "revision {revision}: sets {}",
            held.exact6.len()
        );
        if revision == 1 {
            let lens = held.lens6.values().next().expect("the rule set's lengths");
            assert_eq!(lens.count as usize, EXACT6_LENS, "levels {lens:?}");
        }
        if revision == 0 {
            assert!(
                held.exact6.values().any(|s| s.overflow == 1),
                "the crowded set overflowed"
            );
        }
        assert_read_back(&mut rig, &context);
    }
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn ipv6_entries_past_the_leaves_take_spare_leaves_or_are_judged_by_the_trie() {
    // 10,000 IPv4 /24s, one per /16 from 1.0.0.0 on: more /16s needing a chunk than the index
    // has, so the entry ids of many are named by no slot and are spare leaf numbers. 10,000
    // /16s from 100.0.0.0 on, each a slot's leaf, and 60,000 /32s from 150.0.0.0 on, each a
    // way's: named. Then 70,000 IPv6 /64s, every other /64 from 2001:db8::: their entry ids
    // come after the IPv4 ones, many past the leaf numbers (131,072); some take the spare
    // numbers, and there are too few for the rest.
    let v4 = |name: String, addr: u32, len: u8| {
        let mut r = Rule::new(name, Action::Deny);
        let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(addr), len);
        r.from = Some(vec![net.unwrap().into()]);
        r
    };
    let mut rules: Vec<Rule> = (0..10_000u32)
        .map(|i| v4(format!("v4-{i}"), (1 << 24) + (i << 16), 24))
        .chain((0..10_000u32).map(|i| v4(format!("v4-16-{i}"), (100 << 24) + (i << 16), 16)))
        .chain((0..60_000u32).map(|i| v4(format!("v4-32-{i}"), (150 << 24) + i * 7, 32)))
        .collect();
    let n = 70_000u128;
    let base = 0x2001_0db8u128 << 96;
    // Every other one an allow of TCP 443 (the default denies): a leaf holding another
    // entry's value drops what it should pass.
    rules.extend((0..n).map(|i| {
        let n = net(base | (2 * i) << 64, 64);
        if i % 2 == 0 {
            rule(format!("d{i}"), Action::Deny, n)
        } else {
            allow_443(format!("a{i}"), n)
        }
    }));
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let policies = apply_policy(&mut rig, &rules, Action::Deny);
    let dp = rig.dataplane();
    let held = &dp.held[dp.active_gen as usize];
    let leaves: Vec<u32> = held
        .exact6
        .values()
        .flat_map(|s| s.ways.iter())
        .filter(|w| w.tag != 0)
        .map(|w| w.tag & gateway_common::EXACT4_ENTRY_MASK)
        .collect();
    let none = leaves
        .iter()
        .filter(|&&l| l == gateway_common::EXACT_NO_LEAF)
        .count();
    // A spare: a leaf whose value is another entry's.
    let spare = leaves
        .iter()
        .filter(|&&l| held.leaves4.get(&l).is_some_and(|v| v.entry != l))
        .count();
    assert!(
        none > 0 && spare > 0,
        "{none} ways without a leaf, {spare} on spares, of {}",
        leaves.len()
    );
    let mut rng = Rng(0x510e_527f_ade6_82d1);
    let srcs = (0..600)
        .map(|_| {
            let r = u128::from(rng.next());
            base | (r % (2 * n)) << 64 | r >> 40
        })
        .chain([base, base | (2 * n - 1) << 64, base | (2 * n) << 64]);
    let srcs: Vec<Ipv6Addr> = srcs.map(Ipv6Addr::from).collect();
    check(&mut rig, &policies, &srcs, "");
    assert_read_back(&mut rig, "");
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn ipv6_sources_the_filter_rules_out_are_still_judged_by_the_short_levels_and_the_trie() {
    // Levels /128, /64 (long: the filter's key is 64 bits) and /16 (short: probed whatever
    // the filter says). /64s and /128s spread over the address space, some inside the /16;
    // a set overfilled with /64s, each the only network of its key, so that the one that
    // found no way is reached only through the filter's bit of its own.
    let mut rng = Rng(0x9b05_688c_2b3e_6c1f);
    let short = net(0x2400u128 << 112, 16);
    let mut rules = vec![rule("short".into(), Action::Deny, short)];
    for i in 0..600u128 {
        let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
        // One in four inside the /16, the rest anywhere.
        let bits = if i % 4 == 0 {
            u128::from(short.network()) | r >> 16
        } else {
            r
        };
        let n = net(bits, if i % 3 == 0 { 128 } else { 64 });
        rules.push(if i % 2 == 0 {
            allow_443(format!("a{i}"), n)
        } else {
            rule(format!("d{i}"), Action::Deny, n)
        });
    }
    let crowded = crowded(EXACT6_WAYS + 2);
    for (i, &n) in crowded.iter().enumerate() {
        rules.push(rule(format!("c{i}"), Action::Deny, n));
    }
    let mut srcs = sources(&rules, 1, &mut rng);
    for n in &crowded {
        srcs.push(Ipv6Addr::from(u128::from(n.network()) | 0x77));
    }
    for _ in 0..300 {
        let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
        srcs.push(Ipv6Addr::from(r));
        srcs.push(Ipv6Addr::from(u128::from(short.network()) | r >> 16));
    }
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    for (revision, default_action) in [Action::Allow, Action::Deny].into_iter().enumerate() {
        let context = format!("revision {revision}: ");
        let policies = apply_policy(&mut rig, &rules, default_action);
        let dp = rig.dataplane();
        let held = dp.held[dp.active_gen as usize].clone();
        let (&scope, lens) = held.lens6.iter().next().expect("the rule set's lengths");
        assert_eq!(lens.count, 3, "{lens:?}");
        assert_eq!(lens.filter, SRC6_FILTER_ON | 64 << 8 | 2, "{lens:?}");
        assert!(
            held.exact6.values().any(|s| s.overflow != 0),
            "the crowded set overflowed"
        );
        // Most sources are ruled out by the filter: what this test is about.
        let ruled_out = srcs
            .iter()
            .filter(|&&a| {
                let (block, word, bit) = crate::exact::filter6_key(scope, 64, u128::from(a));
                held.filter6
                    .get(&block)
                    .is_none_or(|b| b.words[word] & bit == 0)
            })
            .count();
        assert!(
            ruled_out * 3 > srcs.len(),
            "{ruled_out} of {} ruled out",
            srcs.len()
        );
        check(&mut rig, &policies, &srcs, &context);
        assert_read_back(&mut rig, &context);
    }
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_filter_cleared_behind_the_agents_back_is_put_back() {
    use super::testrun::{frame, FrameOptions, XDP_DROP, XDP_PASS};
    use tollgate_compile::l4::packet::{Packet, L4};
    let denied = net(0x2001_0db8_0001_0002u128 << 64, 64);
    let rules = vec![
        rule("d64".into(), Action::Deny, denied),
        rule("d128".into(), Action::Deny, net(0x2a00_1450 << 96 | 1, 128)),
    ];
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    apply_policy(&mut rig, &rules, Action::Allow);
    let packet = frame(
        &Packet {
            src: Ipv6Addr::from(u128::from(denied.network()) | 0x99).into(),
            protocol: 17,
            l4: L4::Port(53),
        },
        FrameOptions::default(),
    );
    assert_eq!(rig.run(&packet).unwrap(), XDP_DROP);
    // Every block of the active generation's filter zeroed, as `bpftool map update` would.
    let gen = rig.dataplane().active_gen();
    let map = super::open_pinned(&rig.pin_dir(), "SRC6_FILTER").unwrap();
    let mut filter: aya::maps::Array<_, gateway_common::Filter6Block> =
        aya::maps::Array::try_from(map).unwrap();
    for i in 0..gateway_common::FILTER6_BLOCKS {
        let index = crate::tables::for_gen::filter6(gen, i);
        filter
            .set(index, gateway_common::Filter6Block::default(), 0)
            .unwrap();
    }
    // The /64 is ruled out before it is probed: the drift loosens enforcement...
    assert_eq!(rig.run(&packet).unwrap(), XDP_PASS);
    // ...until the drift check puts the filter back.
    let report = rig.dataplane().repair_drift().unwrap();
    assert!(
        report.maps.get("SRC6_FILTER").is_some_and(|&n| n > 0),
        "{report:?}"
    );
    assert_eq!(rig.run(&packet).unwrap(), XDP_DROP);
    assert!(
        rig.dataplane().repair_drift().unwrap().is_empty(),
        "put back"
    );
}
