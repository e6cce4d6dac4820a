//! Unit tests of `l4/tables.rs`.
use super::*;
use crate::l4::policy::PortRange;

fn rule(name: &str, action: Action) -> Rule {
    Rule::new(name, action)
}

fn policy(name: &str, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        file: format!("{name}.yaml"),
        mode: Mode::Enforce,
        default_action: Action::Allow,
        interfaces: None,
        rules,
    }
}

fn tcp(src: &str, port: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        protocol: 6,
        l4: L4::Port(port),
    }
}

#[test]
fn range_prefixes_cover_exactly() {
    for (lo, hi) in [
        (0u32, 65535u32),
        (1, 65535),
        (22, 22),
        (8000, 8999),
        (1, 1023),
        (443, 444),
        (65535, 65535),
    ] {
        let ps = range_prefixes(lo, hi);
        let mut covered = 0u32;
        for &(v, len) in &ps {
            let size = 1u32 << (16 - u32::from(len));
            assert_eq!(u32::from(v) % size, 0, "aligned");
            assert!(u32::from(v) >= lo && u32::from(v) + size - 1 <= hi);
            covered += size;
        }
        assert_eq!(covered, hi - lo + 1, "{lo}-{hi}: {ps:?}");
        assert!(ps.len() <= 30);
    }
}

#[test]
fn deny_beats_allow_and_nested_prefixes_inherit_rules() {
    let mut deny = rule("deny-8", Action::Deny);
    deny.from = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    deny.protocol = Some(Protocol::Tcp);
    deny.ports = Some(vec![PortRange {
        first: 22,
        last: 22,
    }]);
    let mut allow = rule("allow-24", Action::Allow);
    allow.from = Some(vec!["10.1.2.0/24".parse().unwrap()]);
    let s = compile(&[policy("p", vec![deny, allow])], &["eth0".into()]).unwrap();
    let d = s.decide("eth0", &tcp("10.1.2.3", 22));
    assert_eq!(
        (d.outcome, d.rule.unwrap().rule.as_str()),
        (Outcome::Drop, "deny-8")
    );
    let d = s.decide("eth0", &tcp("10.1.2.3", 23));
    assert_eq!(
        (d.outcome, d.rule.unwrap().rule.as_str()),
        (Outcome::Pass, "allow-24")
    );
    let d = s.decide("eth0", &tcp("10.9.9.9", 23));
    assert_eq!(d.reason, Reason::Default);
    assert_eq!(
        s.decide("eth1", &tcp("10.9.9.9", 23)).reason,
        Reason::Unconfigured
    );
}

#[test]
fn a_rule_without_source_lives_only_in_the_wildcard_table() {
    let mut by_src = rule("by-src", Action::Deny);
    by_src.from = Some(vec!["192.0.2.0/24".parse().unwrap()]);
    let mut https = rule("https", Action::Allow);
    https.protocol = Some(Protocol::Tcp);
    https.ports = Some(vec![PortRange {
        first: 443,
        last: 443,
    }]);
    let s = compile(&[policy("p", vec![by_src, https])], &["eth0".into()]).unwrap();
    let set = &s.sets[0];
    assert_eq!(set.v4.values().next().unwrap().entries.len(), 1);
    assert!(!set.wildcard.entries.is_empty());
}

#[test]
fn more_than_four_limits_on_one_packet_is_refused_with_the_rules_named() {
    let rules = (0..5)
        .map(|i| {
            let mut r = rule(&format!("l{i}"), Action::Allow);
            r.rate_limit = Some(RateLimit {
                packets_per_second: 10,
                burst: 10,
                ipv4_prefix: 32,
                ipv6_prefix: 64,
            });
            r
        })
        .collect();
    let err = compile(&[policy("p", rules)], &["eth0".into()]).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].message.contains("p/l4"), "{err}");

    // Five limited TCP rules, three on a source's side and two on the wildcard's, whose port
    // ranges all meet at one port only (1000): refused; moved apart by one port, accepted.
    let limited = |i: usize, ranges: &[(u16, u16)]| {
        let mut r = rule(&format!("p{i}"), Action::Allow);
        if i < 3 {
            r.from = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        }
        r.protocol = Some(Protocol::Tcp);
        r.ports = Some(
            ranges
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
        );
        r.rate_limit = Some(RateLimit {
            packets_per_second: 10,
            burst: 10,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        });
        r
    };
    let meeting: Vec<Rule> = (0..5u16)
        .map(|i| limited(i.into(), &[(900 + i, 1000), (2000 + 10 * i, 2005 + 10 * i)]))
        .collect();
    let err = compile(&[policy("q", meeting)], &["eth0".into()]).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].message.contains("5 rate limits"), "{err}");
    let apart: Vec<Rule> = (0..5u16)
        .map(|i| {
            let first = if i == 4 {
                (1001, 1100)
            } else {
                (900 + i, 1000)
            };
            limited(i.into(), &[first, (2000 + 10 * i, 2005 + 10 * i)])
        })
        .collect();
    compile(&[policy("q", apart)], &["eth0".into()]).unwrap();
}

#[test]
fn disagreeing_default_actions_on_one_interface_are_refused() {
    let a = policy("a", vec![]);
    let mut b = policy("b", vec![]);
    b.default_action = Action::Deny;
    let err = compile(&[a.clone(), b.clone()], &["eth0".into()]).unwrap_err();
    assert!(err.0[0].location.field == "spec.defaultAction", "{err}");
    // On different interfaces they may differ.
    let mut a2 = a;
    a2.interfaces = Some(vec!["eth0".into()]);
    b.interfaces = Some(vec!["eth1".into()]);
    compile(&[a2, b], &["eth0".into(), "eth1".into()]).unwrap();
}

#[test]
fn a_revision_bigger_than_the_maps_is_refused_with_a_clear_error() {
    // One rule naming more source prefixes than half the source trie (one generation).
    let n = MAX_SOURCE_ENTRIES as usize / 2 + 1;
    let mut big = rule("huge", Action::Deny);
    big.from = Some(
        (0..n as u32)
            .map(|i| IpNet::V4(Ipv4Net::new((0x0a00_0000 + i).into(), 32).unwrap()))
            .collect(),
    );
    let err = compile(&[policy("p", vec![big])], &["eth0".into()]).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0].message.contains("source prefixes") && err.0[0].message.contains("at most"),
        "{err}"
    );
}

#[test]
fn many_and_overlapping_port_ranges_in_one_rule_compile_exactly() {
    // Every other port (32,768 ranges: measured before at 3.4 s in a release build, the
    // ranges checked one by one for each of 65,536 intervals), then ranges that overlap and
    // touch, against a deny of a few ports and the reference evaluator.
    let mut odd = rule("odd", Action::Allow);
    odd.protocol = Some(Protocol::Tcp);
    odd.ports = Some(
        (1..=u16::MAX)
            .step_by(2)
            .map(|p| PortRange { first: p, last: p })
            .collect(),
    );
    let mut overlapping = rule("overlapping", Action::Allow);
    overlapping.from = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    overlapping.protocol = Some(Protocol::Tcp);
    overlapping.ports = Some(
        [
            (100, 200),
            (150, 160),
            (201, 210),
            (190, 300),
            (400, 400),
            (401, 401),
        ]
        .map(|(first, last)| PortRange { first, last })
        .to_vec(),
    );
    let mut deny = rule("deny", Action::Deny);
    deny.protocol = Some(Protocol::Tcp);
    deny.ports = Some(vec![PortRange {
        first: 299,
        last: 301,
    }]);
    let mut p = policy("p", vec![odd, overlapping, deny]);
    p.default_action = Action::Deny;
    let started = std::time::Instant::now();
    let s = compile(std::slice::from_ref(&p), &["eth0".into()]).unwrap();
    let took = started.elapsed();
    for src in ["10.1.2.3", "192.0.2.1"] {
        for port in [
            0, 1, 2, 99, 100, 101, 150, 200, 201, 210, 211, 298, 299, 300, 301, 302, 399,
        ]
        .into_iter()
        .chain([400, 401, 402, 65534, 65535])
        {
            let packet = tcp(src, port);
            assert_eq!(
                s.decide("eth0", &packet),
                crate::l4::reference::evaluate(std::slice::from_ref(&p), "eth0", &packet),
                "{src} port {port}"
            );
        }
    }
    eprintln!("compiled in {took:?}");
}
