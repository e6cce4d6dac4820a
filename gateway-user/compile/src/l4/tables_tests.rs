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
