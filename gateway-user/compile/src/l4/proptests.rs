//! Property tests: the compiled tables (`compile::l4`) decide every packet exactly as the
//! reference evaluator (`compile::evaluator`) does, on random but valid policy sets.
//!
//! The generators draw from SMALL pools on purpose (nested and overlapping CIDRs, ranges built
//! from a handful of boundaries, a few ICMP types, names that collide across policies) so that
//! overlaps, ties and boundaries really happen in a few thousand cases.
use super::packet::{Packet, L4};
use super::policy::{Action, Mode, Policy, PortRange, Protocol, RateLimit, Rule};
use super::reference::evaluate;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use std::net::IpAddr;

/// Source CIDRs of rules: nested (10/8 ⊃ 10.1/16 ⊃ 10.1.2/24 ⊃ 10.1.2.3/32), catch-alls, and
/// IPv6 (2001:db8::/32 ⊃ 2001:db8:1::/48, ::/0).
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "0.0.0.0/0",
    "192.0.2.0/24",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "::/0",
];

/// Port range boundaries (ranges are built from two of them, so they overlap and touch).
const PORT_BOUNDS: &[u16] = &[1, 21, 22, 23, 80, 443, 1000, 8000, 8999, 65535];

/// ICMP / ICMPv6 types rules select.
const ICMP_TYPES: &[u8] = &[0, 3, 8, 11, 128, 129];

/// Policy names, valid Kubernetes names whose byte order is not the "natural" one:
/// "a" < "a-b" < "a.b" < "a0" < "ab" < "b" < "edge" < "edge-1" ('-' < '.' < digits < letters,
/// and a prefix sorts first).
const POLICY_NAMES: &[&str] = &["a", "a-b", "a.b", "a0", "ab", "b", "edge", "edge-1"];

/// Rule names, valid DNS labels, shared across policies (so (policy, rule) ties are broken by the
/// policy name) and with the same byte-order traps ("a" < "a-1" < "a1" < "ab", "r1" < "r10" < "r2").
const RULE_NAMES: &[&str] = &[
    "a", "a-1", "a1", "ab", "b", "b-2", "ba", "c", "d", "e", "f", "r1", "r10", "r2", "x", "z",
];

/// Packet sources: inside and outside the pool, at every depth of the nesting, IPv4-mapped IPv6.
const SOURCES: &[&str] = &[
    "10.1.2.3",
    "10.1.2.4",
    "10.1.3.1",
    "10.2.0.1",
    "11.0.0.1",
    "192.0.2.9",
    "2001:db8:1::1",
    "2001:db8:2::1",
    "2001:db9::1",
    "::ffff:10.1.2.3",
];

/// Packet destination ports: 0 and each range boundary ±1.
const PACKET_PORTS: &[u16] = &[
    0, 1, 2, 20, 21, 22, 23, 24, 79, 80, 81, 442, 443, 444, 999, 1000, 1001, 7999, 8000, 8001,
    8998, 8999, 9000, 65534, 65535,
];

/// Packet ICMP types: the rule pool plus types no rule names.
const PACKET_ICMP_TYPES: &[u8] = &[0, 3, 4, 8, 11, 128, 129, 135];

/// The data path checks at most this many limits per packet; the generators stay within it by
/// putting at most this many rate limits in a whole policy set.
const MAX_LIMITS_IN_SET: usize = 4;

/// The interfaces the agent is configured with in these tests.
const IFACES: [&str; 2] = ["eth0", "eth1"];

// ---- strategies ----------------------------------------------------------------------------

fn cidr() -> impl Strategy<Value = IpNet> {
    select(CIDRS).prop_map(|s| s.parse::<IpNet>().unwrap())
}

fn port_range() -> impl Strategy<Value = PortRange> {
    (select(PORT_BOUNDS), select(PORT_BOUNDS)).prop_map(|(a, b)| PortRange {
        first: a.min(b),
        last: a.max(b),
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Allow), Just(Action::Deny)]
}

/// Rule actions lean to allow: a catch-all deny hides every other rule of its interface.
fn rule_action() -> impl Strategy<Value = Action> {
    prop_oneof![3 => Just(Action::Allow), 2 => Just(Action::Deny)]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![3 => Just(Mode::Enforce), 1 => Just(Mode::Audit)]
}

/// What a rule selects beyond the source: (protocol, ports, icmp_types), always valid together.
type L4Selector = (Option<Protocol>, Option<Vec<PortRange>>, Option<Vec<u8>>);

fn l4_selector() -> impl Strategy<Value = L4Selector> {
    prop_oneof![
        2 => Just((None, None, None)),
        3 => (select(&[Protocol::Tcp, Protocol::Udp][..]), proptest::option::weighted(0.7, prop::collection::vec(port_range(), 1..=3)))
            .prop_map(|(p, ports)| (Some(p), ports, None)),
        2 => (select(&[Protocol::Icmp, Protocol::Icmpv6][..]), proptest::option::weighted(0.6, prop::collection::vec(select(ICMP_TYPES), 1..=3)))
            .prop_map(|(p, types)| (Some(p), None, types)),
    ]
}

fn rate_limit() -> impl Strategy<Value = RateLimit> {
    (
        1u64..=1000,
        1u64..=2000,
        select(&[24u8, 32][..]),
        select(&[48u8, 64, 128][..]),
    )
        .prop_map(
            |(packets_per_second, burst, ipv4_prefix, ipv6_prefix)| RateLimit {
                packets_per_second,
                burst,
                ipv4_prefix,
                ipv6_prefix,
            },
        )
}

/// A rule with the given name. Deny rules never get a rate limit; allow rules may (capped later).
fn rule(name: &'static str) -> impl Strategy<Value = Rule> {
    (
        rule_action(),
        proptest::option::weighted(0.6, prop::collection::vec(cidr(), 1..=3)),
        l4_selector(),
        proptest::option::weighted(0.3, rate_limit()),
    )
        .prop_map(
            move |(action, from, (protocol, ports, icmp_types), rate_limit)| Rule {
                name: name.to_string(),
                action,
                from,
                protocol,
                ports,
                icmp_types,
                rate_limit: if action == Action::Allow {
                    rate_limit
                } else {
                    None
                },
            },
        )
}

/// 0–12 rules with names unique in the policy, in random file order.
fn rules() -> impl Strategy<Value = Vec<Rule>> {
    (0usize..=12)
        .prop_flat_map(|n| subsequence(RULE_NAMES, n).prop_shuffle())
        .prop_flat_map(|names| names.into_iter().map(rule).collect::<Vec<_>>())
}

/// Which interfaces a policy lists.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ifaces {
    All,
    Eth0,
    Eth1,
    Both,
}

impl Ifaces {
    fn list(self) -> Option<Vec<String>> {
        match self {
            Ifaces::All => None,
            Ifaces::Eth0 => Some(vec!["eth0".into()]),
            Ifaces::Eth1 => Some(vec!["eth1".into()]),
            Ifaces::Both => Some(vec!["eth0".into(), "eth1".into()]),
        }
    }
}

/// Keeps the first `MAX_LIMITS_IN_SET` rate limits of the set (in policy then file order) and
/// removes the others, so that no packet can meet more limits than the data path checks.
fn cap_limits(policies: &mut [Policy]) {
    let mut seen = 0;
    for rule in policies.iter_mut().flat_map(|p| p.rules.iter_mut()) {
        if rule.rate_limit.is_some() {
            if seen < MAX_LIMITS_IN_SET {
                seen += 1;
            } else {
                rule.rate_limit = None;
            }
        }
    }
}

/// 1–4 policies with distinct names; interfaces None for all; one mode and default for all.
fn policies_everywhere() -> impl Strategy<Value = Vec<Policy>> {
    (
        (1usize..=4).prop_flat_map(|n| {
            (
                subsequence(POLICY_NAMES, n).prop_shuffle(),
                prop::collection::vec(rules(), n),
            )
        }),
        mode(),
        action(),
    )
        .prop_map(|((names, rule_sets), mode, default_action)| {
            let mut policies: Vec<Policy> = names
                .into_iter()
                .zip(rule_sets)
                .map(|(name, rules)| Policy {
                    name: name.to_string(),
                    file: format!("policies/{name}.yaml"),
                    mode,
                    default_action,
                    interfaces: None,
                    rules,
                })
                .collect();
            cap_limits(&mut policies);
            policies
        })
}

/// 1–4 policies with distinct names, some listing interfaces. eth0 and eth1 each have one mode
/// and default; when some policy applies to both, the two interfaces share them.
fn policies_with_interfaces() -> impl Strategy<Value = Vec<Policy>> {
    let ifaces = prop_oneof![
        Just(Ifaces::All),
        Just(Ifaces::Eth0),
        Just(Ifaces::Eth1),
        Just(Ifaces::Both)
    ];
    (
        (1usize..=4).prop_flat_map(move |n| {
            (
                subsequence(POLICY_NAMES, n).prop_shuffle(),
                prop::collection::vec(rules(), n),
                prop::collection::vec(ifaces.clone(), n),
            )
        }),
        (mode(), action()),
        (mode(), action()),
    )
        .prop_map(|((names, rule_sets, ifaces), eth0, mut eth1)| {
            if ifaces
                .iter()
                .any(|i| matches!(i, Ifaces::All | Ifaces::Both))
            {
                eth1 = eth0;
            }
            let mut policies: Vec<Policy> = names
                .into_iter()
                .zip(rule_sets)
                .zip(ifaces)
                .map(|((name, rules), ifaces)| {
                    let (mode, default_action) = if ifaces == Ifaces::Eth1 { eth1 } else { eth0 };
                    Policy {
                        name: name.to_string(),
                        file: format!("policies/{name}.yaml"),
                        mode,
                        default_action,
                        interfaces: ifaces.list(),
                        rules,
                    }
                })
                .collect();
            cap_limits(&mut policies);
            policies
        })
}

/// A packet whose L4 part is consistent with its protocol, or a non-first fragment.
fn packet() -> impl Strategy<Value = Packet> {
    let l4 = prop_oneof![
        4 => (select(&[6u8, 17][..]), select(PACKET_PORTS)).prop_map(|(p, port)| (p, L4::Port(port))),
        3 => (select(&[1u8, 58][..]), select(PACKET_ICMP_TYPES)).prop_map(|(p, t)| (p, L4::IcmpType(t))),
        1 => Just((47u8, L4::Other)),
        2 => select(&[6u8, 17, 1, 58, 47][..]).prop_map(|p| (p, L4::Fragment)),
    ];
    (select(SOURCES), l4).prop_map(|(src, (protocol, l4))| Packet {
        src: src.parse::<IpAddr>().unwrap(),
        protocol,
        l4,
    })
}

fn packets() -> impl Strategy<Value = Vec<Packet>> {
    prop::collection::vec(packet(), 1..=12)
}

// ---- properties ----------------------------------------------------------------------------

/// The compiled snapshot decides each packet on each interface exactly as the evaluator does.
fn compiled_agrees(policies: &[Policy], packets: &[Packet]) -> Result<(), TestCaseError> {
    let configured: Vec<String> = IFACES.iter().map(|s| s.to_string()).collect();
    let snapshot = match super::tables::compile(policies, &configured) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the compiler refused a valid policy set: {e}"
            )))
        }
    };
    for iface in IFACES {
        for packet in packets {
            let compiled = snapshot.decide(iface, packet);
            let reference = evaluate(policies, iface, packet);
            prop_assert_eq!(
                compiled,
                reference,
                "interface {} packet {:?}",
                iface,
                packet
            );
        }
    }
    Ok(())
}

/// Reordering policies and the rules inside them never changes a decision.
fn order_free(policies: &[Policy], packets: &[Packet]) -> Result<(), TestCaseError> {
    let mut reversed: Vec<Policy> = policies.to_vec();
    reversed.reverse();
    for p in &mut reversed {
        p.rules.reverse();
    }
    for iface in IFACES {
        for packet in packets {
            prop_assert_eq!(
                evaluate(policies, iface, packet),
                evaluate(&reversed, iface, packet)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compiled_tables_decide_like_the_evaluator(policies in policies_everywhere(), packets in packets()) {
        compiled_agrees(&policies, &packets)?;
    }

    #[test]
    fn compiled_tables_decide_like_the_evaluator_with_interface_lists(policies in policies_with_interfaces(), packets in packets()) {
        compiled_agrees(&policies, &packets)?;
    }

    #[test]
    fn the_evaluator_ignores_policy_and_rule_order(policies in prop_oneof![policies_everywhere(), policies_with_interfaces()], packets in packets()) {
        order_free(&policies, &packets)?;
    }
}

/// The generators are worth something only if they reach every kind of decision: every reason,
/// both outcomes, one and several limits, and audited rules.
#[test]
fn the_generators_reach_every_kind_of_decision() {
    use super::packet::Reason;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::BTreeMap;

    let mut runner = TestRunner::new(Config::default()); // deterministic seed
    let strategy = (
        prop_oneof![policies_everywhere(), policies_with_interfaces()],
        packets(),
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut note = |what: &str| *seen.entry(what.to_string()).or_default() += 1;
    for _ in 0..500 {
        let (policies, packets) = strategy.new_tree(&mut runner).unwrap().current();
        for iface in IFACES {
            for packet in &packets {
                let d = evaluate(&policies, iface, packet);
                note(&format!("{:?}/{:?}", d.outcome, d.reason));
                match d.limits.len() {
                    0 => {}
                    1 => note("one limit"),
                    _ => note("several limits"),
                }
                if d.rule.is_some() && d.reason == Reason::Audit {
                    note("audited rule");
                }
            }
        }
    }
    let want = [
        "Pass/Policy",
        "Drop/Policy",
        "Pass/Default",
        "Drop/Default",
        "Pass/Audit",
        "Pass/Fragment",
        "Pass/Unconfigured",
        "one limit",
        "several limits",
        "audited rule",
    ];
    for w in want {
        assert!(
            seen.get(w).copied().unwrap_or(0) >= 20,
            "the generators rarely reach {w}: {seen:?}"
        );
    }
    eprintln!("decisions reached: {seen:?}");
}
