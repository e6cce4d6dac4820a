//! The IPv4 direct index (`super::dir`) in the real program: packets judged through it agree
//! with the reference evaluator, revision after revision (both generations, chunk ids kept
//! and reused), and a policy too big for it is still judged right (the trie answers). Run by
//! the kernel on crafted packets (`BPF_PROG_TEST_RUN`); needs root.
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::testrun::{frame, FrameOptions, TestRig, TEST_RUN_INTERFACE, XDP_DROP, XDP_PASS};
use tollgate_compile::l4::compile;
use tollgate_compile::l4::packet::{Outcome, Packet, L4};
use tollgate_compile::l4::policy::{Action, Mode, Policy, PortRange, Protocol, Rule};
use tollgate_compile::l4::reference::evaluate;

/// xorshift64: reproducible pseudo-random numbers without a dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(super) fn policy(rules: Vec<Rule>, default_action: Action) -> Policy {
    Policy {
        name: "dir".into(),
        file: "dir.yaml".into(),
        mode: Mode::Enforce,
        default_action,
        interfaces: None,
        rules,
    }
}

/// Rules from nested and neighbouring IPv4 prefixes of every length (/0 to /32) inside a few
/// /8s, deny or allow, some with a port, so that /16 slots, chunks, leaves and trie slots all
/// occur.
fn random_rules(rng: &mut Rng, n: usize) -> Vec<Rule> {
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::new();
    while rules.len() < n {
        let r = rng.next();
        let len = match r % 10 {
            0 => (r >> 8) as u8 % 9,          // /0-/8
            1..=3 => 9 + (r >> 8) as u8 % 8,  // /9-/16
            4..=7 => 17 + (r >> 8) as u8 % 8, // /17-/24
            _ => 25 + (r >> 8) as u8 % 8,     // /25-/32
        };
        let b0 = [10u32, 172, 192][(r >> 16) as usize % 3];
        let addr = (b0 << 24) | ((rng.next() as u32) & 0x00_07_0f_ff);
        let net = Ipv4Net::new(addr.into(), len).unwrap().trunc();
        if !seen.insert(net) {
            continue;
        }
        // Deny wins over allow whatever the prefix lengths (the reference's rule), so short
        // denies would hide everything inside them: they are rare, and the longer a prefix
        // the likelier a deny, so that each length decides some packets.
        let action = if u64::from(len) * 3 > (r >> 40) % 100 + 20 {
            Action::Deny
        } else {
            Action::Allow
        };
        let mut rule = Rule::new(format!("r{}", rules.len()), action);
        rule.from = Some(vec![net.into()]);
        if r >> 48 & 3 == 0 {
            rule.protocol = Some(Protocol::Tcp);
            rule.ports = Some(vec![PortRange {
                first: 443,
                last: 443,
            }]);
        }
        rules.push(rule);
    }
    rules
}

/// Sources at the edges of every rule's prefix and just outside them, and random ones.
fn sources(rules: &[Rule], rng: &mut Rng) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for r in rules {
        for net in r.from.iter().flatten() {
            if let ipnet::IpNet::V4(n) = net {
                let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1), lo | 0x80] {
                    out.push(Ipv4Addr::from(a));
                }
            }
        }
    }
    for _ in 0..200 {
        let b0 = [10u32, 172, 192, 11][rng.next() as usize % 4];
        out.push(Ipv4Addr::from(
            (b0 << 24) | ((rng.next() as u32) & 0x00_07_0f_ff),
        ));
    }
    out
}

/// The kernel's verdict on `p` is the reference evaluator's.
pub(super) fn agrees(rig: &mut TestRig, policies: &[Policy], p: &Packet, context: &str) {
    let want = match evaluate(policies, TEST_RUN_INTERFACE, p).outcome {
        Outcome::Drop => XDP_DROP,
        _ => XDP_PASS,
    };
    let got = rig
        .run(&frame(p, FrameOptions::default()))
        .unwrap_or_else(|e| panic!("test run: {e}"));
    assert_eq!(got, want, "{context}{p:?}");
}

/// The kernel's verdicts on TCP 443 and UDP 53 from every source of `srcs` are the
/// evaluator's.
pub(super) fn check<A: Into<IpAddr> + Copy>(
    rig: &mut TestRig,
    policies: &[Policy],
    srcs: &[A],
    context: &str,
) {
    for &src in srcs {
        for (protocol, port) in [(6u8, 443u16), (17, 53)] {
            let p = Packet {
                src: src.into(),
                protocol,
                l4: L4::Port(port),
            };
            agrees(rig, policies, &p, context);
        }
    }
}

/// Applies `rules` as one policy with `default_action`; returns the policy, for [`check`].
pub(super) fn apply_policy(
    rig: &mut TestRig,
    rules: &[Rule],
    default_action: Action,
) -> [Policy; 1] {
    let policies = [policy(rules.to_vec(), default_action)];
    let snapshot =
        compile(&policies, &[TEST_RUN_INTERFACE.into()]).unwrap_or_else(|e| panic!("compile: {e}"));
    rig.apply(&snapshot)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    policies
}

/// A second agent started on the same pins reads back what the rig's agent holds.
pub(super) fn assert_read_back(rig: &mut TestRig, context: &str) {
    let again = rig
        .second_loader()
        .unwrap_or_else(|e| panic!("second loader: {e}"));
    assert!(again.held == rig.dataplane().held, "{context}read back");
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn sources_judged_through_the_index_agree_with_the_evaluator_across_revisions() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut rules = random_rules(&mut rng, 300);
    for revision in 0..6 {
        let default_action = if revision % 2 == 0 {
            Action::Allow
        } else {
            Action::Deny
        };
        let policies = [policy(rules.clone(), default_action)];
        let snapshot = compile(&policies, &[TEST_RUN_INTERFACE.into()])
            .unwrap_or_else(|e| panic!("compile: {e}"));
        rig.apply(&snapshot)
            .unwrap_or_else(|e| panic!("apply: {e}"));
        let srcs = sources(&rules, &mut rng);
        check(&mut rig, &policies, &srcs, "");
        // The next revision: a third of the rules replaced, so that chunks come and go.
        let fresh = random_rules(&mut rng, 100);
        for (i, mut r) in fresh.into_iter().enumerate() {
            r.name = format!("v{revision}-{i}");
            let at = (rng.next() as usize) % rules.len();
            rules[at] = r;
        }
    }
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_policy_too_big_for_the_index_is_judged_by_the_trie() {
    // 70,000 /20s: more /16s needing a chunk than the index has (4,096 per generation), and
    // entry ids past its leaves (65,536).
    let n = 70_000u32;
    let rules: Vec<Rule> = (0..n)
        .map(|i| {
            // /20 number i, starting at 1.0.0.0, skipping nothing: 16 per /16.
            let net = Ipv4Net::new(Ipv4Addr::from((1u32 << 24) + (i << 12)), 20).unwrap();
            let mut r = Rule::new(format!("deny-{i}"), Action::Deny);
            r.from = Some(vec![net.into()]);
            r
        })
        .collect();
    // Every third /20 left out, so that addresses between them pass.
    let rules: Vec<Rule> = rules
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 1)
        .map(|(_, r)| r)
        .collect();
    let policies = [policy(rules, Action::Allow)];
    let snapshot =
        compile(&policies, &[TEST_RUN_INTERFACE.into()]).unwrap_or_else(|e| panic!("compile: {e}"));
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(&snapshot)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let srcs: Vec<Ipv4Addr> = (0..600)
        .map(|_| Ipv4Addr::from((1u32 << 24) + (rng.next() as u32 % (n << 12))))
        .chain([
            Ipv4Addr::new(1, 0, 0, 0),
            Ipv4Addr::from((1u32 << 24) + (n << 12) - 1),
            Ipv4Addr::from((1u32 << 24) + (n << 12)),
        ])
        .collect();
    check(&mut rig, &policies, &srcs, "");
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_longer_prefix_inside_a_slash24_wins_over_the_shorter_ones_around_it() {
    let rule = |name: &str, action, net: &str| {
        let mut r = Rule::new(name, action);
        r.from = Some(vec![net.parse().unwrap()]);
        r
    };
    let policies = [policy(
        vec![
            rule("allow-8", Action::Allow, "10.0.0.0/8"),
            rule("deny-28", Action::Deny, "10.1.2.16/28"),
            rule("deny-32", Action::Deny, "172.16.5.5/32"),
            rule("deny-20", Action::Deny, "192.168.16.0/20"),
            rule("allow-24", Action::Allow, "192.168.17.0/24"),
        ],
        Action::Deny,
    )];
    let snapshot =
        compile(&policies, &[TEST_RUN_INTERFACE.into()]).unwrap_or_else(|e| panic!("compile: {e}"));
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(&snapshot)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let srcs: Vec<Ipv4Addr> = [
        "10.1.2.15",
        "10.1.2.16",
        "10.1.2.31",
        "10.1.2.32",
        "172.16.5.4",
        "172.16.5.5",
        "172.16.5.6",
        "192.168.16.1",
        "192.168.17.1",
        "192.168.31.255",
        "192.168.32.0",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    check(&mut rig, &policies, &srcs, "");
}

/// Rules without a source on random TCP and UDP port ranges (the wildcard entry's port
/// tables), some of them over the direct table's room, and packets on every range's edges.
#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn ports_judged_through_the_direct_tables_agree_with_the_evaluator() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    for revision in 0..8 {
        // Few rules fit the direct tables; many ranges spread over the port space do not
        // (more chunks than a table has), and the trie answers.
        let n = if revision % 4 == 3 { 40 } else { 6 };
        let mut rules = Vec::new();
        let mut edges = vec![0u16, 1, 65535];
        for i in 0..n {
            let r = rng.next();
            let first = (r % 65536) as u16;
            let width = match r >> 20 & 3 {
                0 => 0,
                1 => (r >> 24) as u16 % 16,
                2 => (r >> 24) as u16 % 2048,
                _ => (r >> 24) as u16,
            };
            let last = first.saturating_add(width);
            let first = first.max(1);
            let action = if r >> 40 & 1 == 0 {
                Action::Deny
            } else {
                Action::Allow
            };
            let protocol = if r >> 41 & 1 == 0 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let mut rule = Rule::new(format!("p{revision}-{i}"), action);
            rule.protocol = Some(protocol);
            rule.ports = Some(vec![PortRange { first, last }]);
            rules.push(rule);
            edges.extend([first, last, first - 1, last.saturating_add(1)]);
        }
        if revision % 2 == 1 {
            // An any-protocol rule under the port rules: the tables' base verdict.
            let mut any = Rule::new(format!("any-{revision}"), Action::Allow);
            any.from = None;
            rules.push(any);
        }
        let default_action = if revision % 3 == 0 {
            Action::Allow
        } else {
            Action::Deny
        };
        let policies = [policy(rules, default_action)];
        let snapshot = compile(&policies, &[TEST_RUN_INTERFACE.into()])
            .unwrap_or_else(|e| panic!("compile: {e}"));
        rig.apply(&snapshot)
            .unwrap_or_else(|e| panic!("apply: {e}"));
        for _ in 0..100 {
            edges.push(rng.next() as u16);
        }
        for &port in &edges {
            for (protocol, l4) in [(6u8, L4::Port(port)), (17, L4::Port(port))] {
                let p = Packet {
                    src: "192.0.2.1".parse().unwrap(),
                    protocol,
                    l4,
                };
                agrees(&mut rig, &policies, &p, &format!("revision {revision}: "));
            }
        }
        // Non-first fragments and ICMP take their usual ways.
        for p in [
            Packet {
                src: "192.0.2.1".parse().unwrap(),
                protocol: 6,
                l4: L4::Fragment,
            },
            Packet {
                src: "192.0.2.1".parse().unwrap(),
                protocol: 1,
                l4: L4::IcmpType(8),
            },
        ] {
            agrees(&mut rig, &policies, &p, &format!("revision {revision}: "));
        }
    }
}

/// A blocklist of single addresses spread over the address space (the exact table,
/// `super::exact`), with more /32s hashed to one set than it has ways (the trie answers them),
/// beside shorter prefixes (the direct index); then a revision without any /32 and one with
/// them back. The kernel agrees with the evaluator on every /32, its neighbours, the other
/// addresses of the full set and random sources; a second agent reads back what was written.
#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn single_addresses_judged_through_the_exact_table_agree_with_the_evaluator() {
    use gateway_common::{exact4_set, EXACT4_WAYS, IFACE_SRC4_DIR, IFACE_SRC4_EXACT};
    let mut rng = Rng(0xbb67_ae85_84ca_a73b);
    let deny = |name: String, net: Ipv4Net| {
        let mut r = Rule::new(name, Action::Deny);
        r.from = Some(vec![net.into()]);
        r
    };
    let mut singles: Vec<u32> = (0..8_000).map(|_| rng.next() as u32).collect();
    // Addresses sharing one set (its scope slot is 0: one rule set), two more than its ways.
    let target = exact4_set(0, 0x0a0a_0a0a);
    let crowded: Vec<u32> = (0x0a0a_0a0au32..)
        .filter(|&a| exact4_set(0, a) == target)
        .take(EXACT4_WAYS + 4)
        .collect();
    singles.extend(&crowded[..EXACT4_WAYS + 2]);
    singles.sort_unstable();
    singles.dedup();
    let mut rules: Vec<Rule> = singles
        .iter()
        .map(|&a| deny(format!("s{a}"), Ipv4Net::new(a.into(), 32).unwrap()))
        .collect();
    // Shorter prefixes around some of the singles (the direct index beside the table).
    for (i, &a) in singles.iter().step_by(401).enumerate() {
        rules.push(deny(
            format!("p{i}"),
            Ipv4Net::new(a.into(), 24).unwrap().trunc(),
        ));
    }
    // A /32 with a port table of its own: with a default of deny, only it lets TCP 443 in.
    let mut allow = Rule::new("allow-one", Action::Allow);
    allow.from = Some(vec!["198.51.100.7/32".parse().unwrap()]);
    allow.protocol = Some(Protocol::Tcp);
    allow.ports = Some(vec![PortRange {
        first: 443,
        last: 443,
    }]);
    rules.push(allow);
    let mut srcs: Vec<Ipv4Addr> = Vec::new();
    for &a in singles.iter().step_by(23).chain(&crowded) {
        for s in [a, a.wrapping_sub(1), a.wrapping_add(1)] {
            srcs.push(s.into());
        }
    }
    srcs.extend((0..500).map(|_| Ipv4Addr::from(rng.next() as u32)));
    srcs.extend(["198.51.100.7", "198.51.100.8"].map(|s| s.parse::<Ipv4Addr>().unwrap()));
    let without: Vec<Rule> = rules
        .iter()
        .filter(|r| r.name.starts_with('p'))
        .cloned()
        .collect();
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    for (revision, (rules, default_action, flag)) in [
        (&rules, Action::Allow, IFACE_SRC4_EXACT),
        (&without, Action::Deny, IFACE_SRC4_DIR),
        (&rules, Action::Deny, IFACE_SRC4_EXACT),
        (&rules, Action::Allow, IFACE_SRC4_EXACT),
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
            !flags.is_empty()
                && flags
                    .iter()
                    .all(|f| f & (IFACE_SRC4_DIR | IFACE_SRC4_EXACT) == flag),
            "revision {revision}: flags {flags:?}"
        );
        assert_eq!(held.exact4.is_empty(), flag == IFACE_SRC4_DIR);
        assert_read_back(&mut rig, &context);
    }
}

/// /25–/31 prefixes in more /24s than the index has chunks for (`SRC4_EXACT`, probed by the
/// lengths a /24's slot names): nested in each other and in /24s and /16s of their own, some
/// with a port table, eight /30s more than a set holds in one set (the trie answers them);
/// three revisions, a third of the /24s replaced between them, the default flipped. The kernel
/// agrees with the evaluator on the edges of every 11th prefix, the crowded set and random
/// sources; most of the /24s are answered through the table; a second agent reads back what
/// was written.
#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn long_prefixes_beyond_the_chunks_judged_through_the_exact_table_agree_with_the_evaluator() {
    use gateway_common::{dir_longs, exact4_long_hash, EXACT4_SETS, EXACT4_WAYS};
    let mut rng = Rng(0x3c6e_f372_fe94_f82b);
    let rule = |name: String, action, net: Ipv4Net| {
        let mut r = Rule::new(name, action);
        r.from = Some(vec![net.into()]);
        r
    };
    // The rules of /24 number `n` (its address's middle bytes), of revision `rev`.
    let slash24 = |rng: &mut Rng, rev: usize, n: u32| -> Vec<Rule> {
        let base = 0x0a00_0000 | (n & 0xffff) << 8;
        let r = rng.next();
        let len = 25 + (r % 7) as u8;
        let at = base | (r >> 8) as u32 & 0xff;
        let action = if r >> 20 & 1 == 0 {
            Action::Deny
        } else {
            Action::Allow
        };
        let net = Ipv4Net::new(at.into(), len).unwrap().trunc();
        let mut out = vec![rule(format!("l{rev}-{n}"), action, net)];
        if r >> 21 & 3 == 0 {
            // TCP 443 only: the entry has a port table.
            out[0].protocol = Some(Protocol::Tcp);
            out[0].ports = Some(vec![PortRange {
                first: 443,
                last: 443,
            }]);
        }
        if r >> 23 & 3 == 0 && len < 31 {
            // A longer prefix inside it, of the other action.
            let inner = Ipv4Net::new(at.into(), len + 1 + (r >> 25) as u8 % (31 - len))
                .unwrap()
                .trunc();
            let other = if action == Action::Deny {
                Action::Allow
            } else {
                Action::Deny
            };
            out.push(rule(format!("i{rev}-{n}"), other, inner));
        }
        if r >> 27 & 3 == 0 {
            // The /24 itself, allowed: the base of its slot.
            let net = Ipv4Net::new(base.into(), 24).unwrap();
            out.push(rule(format!("b{rev}-{n}"), Action::Allow, net));
        }
        out
    };
    let mut picks: Vec<u32> = Vec::new();
    while picks.len() < 6_000 {
        let n = rng.next() as u32 & 0xffff;
        if !picks.contains(&n) {
            picks.push(n);
        }
    }
    let mut by24: Vec<Vec<Rule>> = picks.iter().map(|&n| slash24(&mut rng, 0, n)).collect();
    // Eight /30s more than a set's ways, in one set of scope slot 0 (the only rule set).
    let target = exact4_long_hash(0, 30, 0x0b00_0000) & (EXACT4_SETS - 1);
    let crowded: Vec<u32> = (0..1u32 << 22)
        .map(|i| 0x0b00_0000 | i << 2)
        .filter(|&a| exact4_long_hash(0, 30, a) & (EXACT4_SETS - 1) == target)
        .take(EXACT4_WAYS + 8)
        .collect();
    let crowd: Vec<Rule> = crowded
        .iter()
        .map(|&a| {
            rule(
                format!("c{a}"),
                Action::Deny,
                Ipv4Net::new(a.into(), 30).unwrap(),
            )
        })
        .collect();
    let around = [
        rule(
            "allow-10-3".into(),
            Action::Allow,
            "10.3.0.0/16".parse().unwrap(),
        ),
        rule(
            "deny-10-4".into(),
            Action::Deny,
            "10.4.0.0/16".parse().unwrap(),
        ),
        // Each crowded /30's /24 with a long prefix of its own, so that no chunk is spared.
        rule(
            "allow-11".into(),
            Action::Allow,
            "11.0.0.0/8".parse().unwrap(),
        ),
    ];
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    for revision in 0..3 {
        let default_action = if revision == 1 {
            Action::Deny
        } else {
            Action::Allow
        };
        let mut rules: Vec<Rule> = by24.iter().flatten().cloned().collect();
        rules.extend(crowd.iter().cloned());
        rules.extend(around.iter().cloned());
        let context = format!("revision {revision}: ");
        let policies = apply_policy(&mut rig, &rules, default_action);
        let mut srcs: Vec<Ipv4Addr> = Vec::new();
        for r in rules.iter().step_by(11).chain(&crowd) {
            for net in r.from.iter().flatten() {
                if let ipnet::IpNet::V4(n) = net {
                    let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                    for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                        srcs.push(a.into());
                    }
                }
            }
        }
        srcs.extend((0..500).map(|_| Ipv4Addr::from(0x0a00_0000 | rng.next() as u32 & 0xffffff)));
        check(&mut rig, &policies, &srcs, &context);
        // Most /24s are answered by the table, not by a chunk or the trie.
        let dp = rig.dataplane();
        let held = &dp.held[dp.active_gen as usize];
        let longs = held
            .chunks4
            .values()
            .flat_map(|c| c.slots.iter())
            .filter(|&&s| dir_longs(s) != 0)
            .count();
        assert!(longs > 1_500, "{context}{longs} /24 slots name lengths");
        assert!(
            held.exact4.values().any(|s| s.overflow != 0),
            "{context}the crowded set overflowed"
        );
        assert_read_back(&mut rig, &context);
        // The next revision: a third of the /24s replaced.
        for (i, rules) in by24.iter_mut().enumerate() {
            if i % 3 == revision {
                let n = rng.next() as u32 & 0xffff;
                *rules = slash24(&mut rng, revision + 1, n);
            }
        }
    }
}
