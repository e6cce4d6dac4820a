//! The reference evaluator: what the L4 policy means, written for clarity, not speed.
//!
//! It loops over policies and rules with no clever data structure. It is the oracle the
//! compiler (`compile::l4`) and the eBPF program are tested against, so every step below
//! implements one sentence of the specification, quoted in the comment above it.
use super::packet::{Decision, Outcome, Packet, Reason, RuleRef, L4};
use super::policy::{Action, Mode, Policy, Rule};
use std::cmp::Ordering;

/// The decision the L4 policy makes about `packet` arriving on `interface` (before rate limiting:
/// the limits it must be within are listed in `Decision::limits`).
pub fn evaluate(policies: &[Policy], interface: &str, packet: &Packet) -> Decision {
    // 1. "The policies that apply to `interface` are those with `interfaces == None` or whose
    //    list contains it."
    let applying: Vec<&Policy> = policies
        .iter()
        .filter(|p| applies_to(p, interface))
        .collect();
    // 1. "If none apply: Pass, reason Unconfigured, no rule, no limits."
    let Some(first_policy) = applying.first() else {
        return Decision {
            outcome: Outcome::Pass,
            reason: Reason::Unconfigured,
            rule: None,
            limits: vec![],
        };
    };

    // An IPv6 packet from an IPv4-mapped source is never judged by the rules: a dual-stack
    // socket would see it as from the IPv4 address inside, which IPv4 rules would not see.
    if packet.ipv4_mapped_source() {
        return Decision::malformed(first_policy.mode == Mode::Audit);
    }

    // 2. "A rule matches a packet when every field it sets matches."
    let mut matching: Vec<Match<'_>> = Vec::new();
    for policy in &applying {
        for rule in &policy.rules {
            if let Some(specificity) = rule_matches(rule, packet) {
                matching.push(Match {
                    policy: &policy.name,
                    rule,
                    specificity,
                });
            }
        }
    }
    // 3. "Among several matching rules, the first is the one with the highest specificity, then
    //    the smallest (policy name, rule name) in lexicographic byte order."
    matching.sort_by(attribution_order);

    // 4. "Deny wins: if any deny rule matches → Drop, reason Policy, rule = the first matching
    //    deny rule (order of step 3), limits = []."
    let decision = if let Some(deny) = matching.iter().find(|m| m.rule.action == Action::Deny) {
        Decision {
            outcome: Outcome::Drop,
            reason: Reason::Policy,
            rule: Some(deny.rule_ref()),
            limits: vec![],
        }
    }
    // 5. "Otherwise, if any allow rule matches → Pass, reason Policy, rule = the first matching
    //    allow rule, limits = every matching allow rule that has a rate_limit, in the order of
    //    step 3."
    else if let Some(allow) = matching.iter().find(|m| m.rule.action == Action::Allow) {
        let limits = matching
            .iter()
            .filter(|m| m.rule.action == Action::Allow && m.rule.rate_limit.is_some())
            .map(Match::rule_ref)
            .collect();
        Decision {
            outcome: Outcome::Pass,
            reason: Reason::Policy,
            rule: Some(allow.rule_ref()),
            limits,
        }
    }
    // 6. "Otherwise, if packet.l4 is Fragment → Pass, reason Fragment, rule None (non-first
    //    fragments carry no ports; the first fragment was judged; only port-less rules can judge
    //    them)."
    else if packet.l4 == L4::Fragment {
        Decision {
            outcome: Outcome::Pass,
            reason: Reason::Fragment,
            rule: None,
            limits: vec![],
        }
    }
    // 7. "Otherwise the default action of the applying policies decides (they agree; ... the
    //    evaluator may assume they agree and use the first applying policy's): Allow → Pass,
    //    reason Default, rule None; Deny → Drop, reason Default, rule None."
    else {
        let outcome = match first_policy.default_action {
            Action::Allow => Outcome::Pass,
            Action::Deny => Outcome::Drop,
        };
        Decision {
            outcome,
            reason: Reason::Default,
            rule: None,
            limits: vec![],
        }
    };

    // 8. "Audit: if the applying policies are in audit mode (they agree too) and the decision so
    //    far is Drop (reason Policy or Default) → Pass, reason Audit, same rule (None for the
    //    default). Rate limits of allowed packets are unchanged by audit."
    if first_policy.mode == Mode::Audit && decision.outcome == Outcome::Drop {
        return Decision {
            outcome: Outcome::Pass,
            reason: Reason::Audit,
            ..decision
        };
    }
    decision
}

/// Step 1: does `policy` apply to `interface`?
fn applies_to(policy: &Policy, interface: &str) -> bool {
    match &policy.interfaces {
        None => true,
        Some(list) => list.iter().any(|i| i == interface),
    }
}

/// A matching rule with what step 3 orders it by.
struct Match<'a> {
    policy: &'a str,
    rule: &'a Rule,
    specificity: i16,
}

impl Match<'_> {
    fn rule_ref(&self) -> RuleRef {
        RuleRef {
            policy: self.policy.to_string(),
            rule: self.rule.name.clone(),
        }
    }
}

/// Step 3: highest specificity first, then the smallest (policy name, rule name), compared as
/// bytes (`str`'s `Ord` is lexicographic byte order).
fn attribution_order(a: &Match<'_>, b: &Match<'_>) -> Ordering {
    b.specificity.cmp(&a.specificity).then_with(|| {
        (a.policy.as_bytes(), a.rule.name.as_bytes())
            .cmp(&(b.policy.as_bytes(), b.rule.name.as_bytes()))
    })
}

/// Step 2: `Some(specificity)` when `rule` matches `packet`, `None` when it does not.
fn rule_matches(rule: &Rule, packet: &Packet) -> Option<i16> {
    // 2. "`from`: any of the CIDRs contains packet.src; an IPv4 CIDR never contains an IPv6
    //    address and vice versa, including IPv4-mapped IPv6 addresses."
    // 3. "its specificity is the longest prefix length among its `from` CIDRs that contain the
    //    source, or -1 when it has no `from`."
    let specificity = match &rule.from {
        None => -1,
        Some(cidrs) => {
            let longest = cidrs
                .iter()
                .filter(|net| cidr_contains(net, &packet.src))
                .map(|net| i16::from(net.prefix_len()))
                .max();
            longest?
        }
    };
    // 2. "`protocol`: its number == packet.protocol; ICMP is protocol 1 and ICMPv6 is 58, whatever
    //    the IP version."
    if let Some(protocol) = rule.protocol {
        if protocol.number() != packet.protocol {
            return None;
        }
    }
    // 2. "`ports`: packet.l4 is Port(p) with p in one of the inclusive ranges; a Fragment, Other
    //    or IcmpType never matches a rule that sets ports."
    if let Some(ranges) = &rule.ports {
        let L4::Port(p) = packet.l4 else { return None };
        if !ranges.iter().any(|r| r.first <= p && p <= r.last) {
            return None;
        }
    }
    // 2. "`icmp_types`: packet.l4 is IcmpType(t) with t in the list; Fragment never matches."
    if let Some(types) = &rule.icmp_types {
        let L4::IcmpType(t) = packet.l4 else {
            return None;
        };
        if !types.contains(&t) {
            return None;
        }
    }
    // 2. "A rule with no protocol/ports/icmp_types matches any l4 (including Fragment and Other)."
    Some(specificity)
}

/// Step 2: an IPv4 CIDR contains only IPv4 addresses, an IPv6 CIDR only IPv6 addresses (an
/// IPv4-mapped IPv6 address is an IPv6 address: `10.0.0.0/8` does not contain `::ffff:10.0.0.1`).
fn cidr_contains(net: &ipnet::IpNet, addr: &std::net::IpAddr) -> bool {
    use ipnet::IpNet;
    use std::net::IpAddr;
    match (net, addr) {
        (IpNet::V4(n), IpAddr::V4(a)) => n.contains(a),
        (IpNet::V6(n), IpAddr::V6(a)) => n.contains(a),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l4::policy::{PortRange, Protocol, RateLimit};
    use ipnet::IpNet;
    use std::net::IpAddr;

    // ---- builders -------------------------------------------------------------------------

    fn policy(name: &str, default_action: Action, rules: Vec<Rule>) -> Policy {
        Policy {
            name: name.into(),
            file: format!("{name}.yaml"),
            mode: Mode::Enforce,
            default_action,
            interfaces: None,
            rules,
        }
    }

    fn rule(name: &str, action: Action) -> Rule {
        Rule::new(name, action)
    }

    fn from(mut r: Rule, cidrs: &[&str]) -> Rule {
        r.from = Some(
            cidrs
                .iter()
                .map(|c| c.parse::<IpNet>().unwrap().trunc())
                .collect(),
        );
        r
    }

    fn tcp_ports(mut r: Rule, ranges: &[(u16, u16)]) -> Rule {
        r.protocol = Some(Protocol::Tcp);
        r.ports = Some(
            ranges
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
        );
        r
    }

    fn limited(mut r: Rule) -> Rule {
        r.rate_limit = Some(RateLimit {
            packets_per_second: 10,
            burst: 20,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        });
        r
    }

    fn pkt(src: &str, protocol: u8, l4: L4) -> Packet {
        Packet {
            src: src.parse::<IpAddr>().unwrap(),
            protocol,
            l4,
        }
    }

    fn tcp(src: &str, port: u16) -> Packet {
        pkt(src, 6, L4::Port(port))
    }

    fn rref(policy: &str, rule: &str) -> RuleRef {
        RuleRef {
            policy: policy.into(),
            rule: rule.into(),
        }
    }

    fn decision(
        outcome: Outcome,
        reason: Reason,
        rule: Option<RuleRef>,
        limits: Vec<RuleRef>,
    ) -> Decision {
        Decision {
            outcome,
            reason,
            rule,
            limits,
        }
    }

    // ---- tests ----------------------------------------------------------------------------

    #[test]
    fn deny_beats_allow_across_files() {
        let allow = policy(
            "a-allow",
            Action::Allow,
            vec![tcp_ports(rule("ssh", Action::Allow), &[(22, 22)])],
        );
        let deny = policy(
            "b-deny",
            Action::Allow,
            vec![from(rule("scanners", Action::Deny), &["203.0.113.0/24"])],
        );
        let p = tcp("203.0.113.7", 22);
        let want = decision(
            Outcome::Drop,
            Reason::Policy,
            Some(rref("b-deny", "scanners")),
            vec![],
        );
        assert_eq!(evaluate(&[allow.clone(), deny.clone()], "eth0", &p), want);
        assert_eq!(evaluate(&[deny, allow.clone()], "eth0", &p), want);
        // A source outside the deny CIDR is allowed by the other file's rule.
        let other = tcp("198.51.100.1", 22);
        assert_eq!(
            evaluate(&[allow], "eth0", &other),
            decision(
                Outcome::Pass,
                Reason::Policy,
                Some(rref("a-allow", "ssh")),
                vec![]
            )
        );
    }

    #[test]
    fn rule_order_does_not_matter() {
        let rules = vec![
            from(
                tcp_ports(rule("office-ssh", Action::Allow), &[(22, 22)]),
                &["198.51.100.0/24"],
            ),
            tcp_ports(rule("no-ssh", Action::Deny), &[(22, 22)]),
            limited(tcp_ports(
                rule("https", Action::Allow),
                &[(443, 443), (8000, 8999)],
            )),
            from(rule("scanners", Action::Deny), &["203.0.113.0/24"]),
        ];
        let packets = [
            tcp("198.51.100.1", 22),
            tcp("1.2.3.4", 443),
            tcp("203.0.113.1", 8000),
            tcp("1.2.3.4", 80),
        ];
        let forward = policy("p", Action::Allow, rules.clone());
        let mut reversed_rules = rules;
        reversed_rules.reverse();
        let backward = policy("p", Action::Allow, reversed_rules);
        for p in &packets {
            assert_eq!(
                evaluate(std::slice::from_ref(&forward), "eth0", p),
                evaluate(std::slice::from_ref(&backward), "eth0", p),
                "{p:?}"
            );
        }
        // And the deny still wins over the more specific allow.
        assert_eq!(
            evaluate(&[forward], "eth0", &packets[0]),
            decision(
                Outcome::Drop,
                Reason::Policy,
                Some(rref("p", "no-ssh")),
                vec![]
            )
        );
    }

    #[test]
    fn default_allow_passes_unmatched_packets() {
        let p = policy(
            "p",
            Action::Allow,
            vec![tcp_ports(rule("ssh", Action::Deny), &[(22, 22)])],
        );
        assert_eq!(
            evaluate(&[p], "eth0", &tcp("10.0.0.1", 80)),
            decision(Outcome::Pass, Reason::Default, None, vec![])
        );
    }

    #[test]
    fn default_deny_drops_unmatched_packets() {
        let p = policy(
            "p",
            Action::Deny,
            vec![tcp_ports(rule("ssh", Action::Allow), &[(22, 22)])],
        );
        assert_eq!(
            evaluate(std::slice::from_ref(&p), "eth0", &tcp("10.0.0.1", 80)),
            decision(Outcome::Drop, Reason::Default, None, vec![])
        );
        assert_eq!(
            evaluate(&[p], "eth0", &tcp("10.0.0.1", 22)),
            decision(
                Outcome::Pass,
                Reason::Policy,
                Some(rref("p", "ssh")),
                vec![]
            )
        );
    }

    #[test]
    fn an_ipv4_mapped_source_is_dropped_unjudged_where_enforced_and_passed_in_audit() {
        // Allow everything from the mapped address's IPv4 network, deny its neighbour: the
        // IPv6 packet is judged by neither.
        let mut p = policy(
            "p",
            Action::Allow,
            vec![
                from(rule("scanners", Action::Deny), &["203.0.113.0/24"]),
                from(rule("friends", Action::Allow), &["198.51.100.0/24", "::/0"]),
            ],
        );
        for src in [
            "::ffff:203.0.113.7",
            "::ffff:198.51.100.1",
            "::ffff:0.0.0.0",
        ] {
            assert_eq!(
                evaluate(std::slice::from_ref(&p), "eth0", &tcp(src, 443)),
                decision(Outcome::Drop, Reason::Malformed, None, vec![]),
                "{src}"
            );
        }
        // IPv4-compatible and NAT64 sources are ordinary IPv6 sources.
        for src in ["::203.0.113.7", "64:ff9b::cb00:7107"] {
            assert_eq!(
                evaluate(std::slice::from_ref(&p), "eth0", &tcp(src, 443)).reason,
                Reason::Policy,
                "{src}"
            );
        }
        p.mode = Mode::Audit;
        assert_eq!(
            evaluate(
                std::slice::from_ref(&p),
                "eth0",
                &tcp("::ffff:203.0.113.7", 443)
            ),
            decision(Outcome::Pass, Reason::Malformed, None, vec![])
        );
        // Where no policy applies, it passes like everything else.
        p.interfaces = Some(vec!["eth1".into()]);
        assert_eq!(
            evaluate(&[p], "eth0", &tcp("::ffff:203.0.113.7", 443)).reason,
            Reason::Unconfigured
        );
    }

    #[test]
    fn audit_turns_drops_into_audit_passes() {
        let mut p = policy(
            "p",
            Action::Deny,
            vec![
                from(rule("scanners", Action::Deny), &["203.0.113.0/24"]),
                limited(tcp_ports(rule("web", Action::Allow), &[(443, 443)])),
            ],
        );
        p.mode = Mode::Audit;
        let ps = [p];
        // A rule's drop becomes an audit pass naming the rule.
        assert_eq!(
            evaluate(&ps, "eth0", &tcp("203.0.113.1", 443)),
            decision(
                Outcome::Pass,
                Reason::Audit,
                Some(rref("p", "scanners")),
                vec![]
            )
        );
        // The default's drop becomes an audit pass with no rule.
        assert_eq!(
            evaluate(&ps, "eth0", &tcp("10.0.0.1", 80)),
            decision(Outcome::Pass, Reason::Audit, None, vec![])
        );
        // Allowed packets keep their rate limits.
        assert_eq!(
            evaluate(&ps, "eth0", &tcp("10.0.0.1", 443)),
            decision(
                Outcome::Pass,
                Reason::Policy,
                Some(rref("p", "web")),
                vec![rref("p", "web")]
            )
        );
        // Fragments are passed for their own reason, not audited.
        assert_eq!(
            evaluate(&ps, "eth0", &pkt("10.0.0.1", 6, L4::Fragment)),
            decision(Outcome::Pass, Reason::Fragment, None, vec![])
        );
    }

    #[test]
    fn port_ranges_are_inclusive_at_both_ends() {
        let p = [policy(
            "p",
            Action::Deny,
            vec![tcp_ports(rule("web", Action::Allow), &[(8000, 8999)])],
        )];
        let allowed = decision(
            Outcome::Pass,
            Reason::Policy,
            Some(rref("p", "web")),
            vec![],
        );
        let dropped = decision(Outcome::Drop, Reason::Default, None, vec![]);
        assert_eq!(evaluate(&p, "eth0", &tcp("10.0.0.1", 7999)), dropped);
        assert_eq!(evaluate(&p, "eth0", &tcp("10.0.0.1", 8000)), allowed);
        assert_eq!(evaluate(&p, "eth0", &tcp("10.0.0.1", 8500)), allowed);
        assert_eq!(evaluate(&p, "eth0", &tcp("10.0.0.1", 8999)), allowed);
        assert_eq!(evaluate(&p, "eth0", &tcp("10.0.0.1", 9000)), dropped);
        // The protocol must match too: UDP 8000 is not TCP 8000.
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 17, L4::Port(8000))),
            dropped
        );
        // Port 0 matches no range.
        let all = [policy(
            "p",
            Action::Deny,
            vec![tcp_ports(rule("all", Action::Allow), &[(1, 65535)])],
        )];
        assert_eq!(evaluate(&all, "eth0", &tcp("10.0.0.1", 0)), dropped);
        assert_eq!(
            evaluate(&all, "eth0", &tcp("10.0.0.1", 65535)).outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn icmp_types_match_by_protocol_number_and_type() {
        let mut echo = rule("echo", Action::Allow);
        echo.protocol = Some(Protocol::Icmp);
        echo.icmp_types = Some(vec![8]);
        let mut v6 = rule("any-icmpv6", Action::Allow);
        v6.protocol = Some(Protocol::Icmpv6);
        let p = [policy("p", Action::Deny, vec![echo, v6])];
        let dropped = decision(Outcome::Drop, Reason::Default, None, vec![]);
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 1, L4::IcmpType(8))),
            decision(
                Outcome::Pass,
                Reason::Policy,
                Some(rref("p", "echo")),
                vec![]
            )
        );
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 1, L4::IcmpType(0))),
            dropped
        );
        // ICMP (1) over IPv6 is still protocol 1: the rule matches by number, whatever the version.
        assert_eq!(
            evaluate(&p, "eth0", &pkt("2001:db8::1", 1, L4::IcmpType(8))).rule,
            Some(rref("p", "echo"))
        );
        // ICMPv6 with no types matches every type, over either IP version.
        assert_eq!(
            evaluate(&p, "eth0", &pkt("2001:db8::1", 58, L4::IcmpType(128))).rule,
            Some(rref("p", "any-icmpv6"))
        );
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 58, L4::IcmpType(3))).rule,
            Some(rref("p", "any-icmpv6"))
        );
        // A fragment never matches a rule with icmp types; it does match a protocol-only rule.
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 1, L4::Fragment)),
            decision(Outcome::Pass, Reason::Fragment, None, vec![])
        );
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 58, L4::Fragment)).rule,
            Some(rref("p", "any-icmpv6"))
        );
    }

    #[test]
    fn fragments_are_only_judged_by_port_less_rules() {
        let ssh_deny = tcp_ports(rule("no-ssh", Action::Deny), &[(22, 22)]);
        let p = [policy("p", Action::Deny, vec![ssh_deny.clone()])];
        let frag = pkt("203.0.113.1", 6, L4::Fragment);
        // A rule with ports cannot judge a fragment, and neither can the default: it passes.
        assert_eq!(
            evaluate(&p, "eth0", &frag),
            decision(Outcome::Pass, Reason::Fragment, None, vec![])
        );
        // A port-less rule can.
        let q = [policy(
            "p",
            Action::Allow,
            vec![
                ssh_deny.clone(),
                from(rule("scanners", Action::Deny), &["203.0.113.0/24"]),
            ],
        )];
        assert_eq!(
            evaluate(&q, "eth0", &frag),
            decision(
                Outcome::Drop,
                Reason::Policy,
                Some(rref("p", "scanners")),
                vec![]
            )
        );
        let mut tcp_only = rule("tcp", Action::Deny);
        tcp_only.protocol = Some(Protocol::Tcp);
        let r = [policy("p", Action::Allow, vec![tcp_only])];
        assert_eq!(evaluate(&r, "eth0", &frag).rule, Some(rref("p", "tcp")));
        assert_eq!(
            evaluate(&r, "eth0", &pkt("203.0.113.1", 17, L4::Fragment)).reason,
            Reason::Fragment
        );
        // Other (e.g. GRE) never matches a rule with ports but matches port-less rules.
        assert_eq!(
            evaluate(&p, "eth0", &pkt("10.0.0.1", 47, L4::Other)),
            decision(Outcome::Drop, Reason::Default, None, vec![])
        );
    }

    #[test]
    fn ipv6_64_cidr_contains_its_addresses_only() {
        let p = [policy(
            "p",
            Action::Allow,
            vec![from(rule("bad", Action::Deny), &["2001:db8:1:2::/64"])],
        )];
        let denied = decision(
            Outcome::Drop,
            Reason::Policy,
            Some(rref("p", "bad")),
            vec![],
        );
        let passed = decision(Outcome::Pass, Reason::Default, None, vec![]);
        assert_eq!(evaluate(&p, "eth0", &tcp("2001:db8:1:2::1", 80)), denied);
        assert_eq!(
            evaluate(&p, "eth0", &tcp("2001:db8:1:2:ffff:ffff:ffff:ffff", 80)),
            denied
        );
        assert_eq!(evaluate(&p, "eth0", &tcp("2001:db8:1:3::", 80)), passed);
        assert_eq!(evaluate(&p, "eth0", &tcp("10.0.0.1", 80)), passed);
        // IPv4 CIDRs never contain IPv6 addresses, and vice versa; an IPv4-mapped source is
        // judged by neither (dropped unjudged).
        let q = [policy(
            "q",
            Action::Allow,
            vec![from(rule("v4", Action::Deny), &["0.0.0.0/0"])],
        )];
        assert_eq!(evaluate(&q, "eth0", &tcp("2001:db8::1", 80)), passed);
        let malformed = decision(Outcome::Drop, Reason::Malformed, None, vec![]);
        assert_eq!(evaluate(&q, "eth0", &tcp("::ffff:10.0.0.1", 80)), malformed);
        let r = [policy(
            "r",
            Action::Allow,
            vec![from(rule("v6", Action::Deny), &["::/0"])],
        )];
        assert_eq!(evaluate(&r, "eth0", &tcp("10.0.0.1", 80)), passed);
        assert_eq!(evaluate(&r, "eth0", &tcp("::ffff:10.0.0.1", 80)), malformed);
    }

    #[test]
    fn attribution_picks_the_most_specific_source() {
        let rules = vec![
            rule("any", Action::Allow),
            from(rule("wide", Action::Allow), &["10.0.0.0/8"]),
            // Its longest containing prefix is /24 (the /32 does not contain the source).
            from(
                rule("narrow", Action::Allow),
                &["10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32"],
            ),
        ];
        let p = [policy("p", Action::Deny, rules)];
        assert_eq!(
            evaluate(&p, "eth0", &tcp("10.1.2.4", 80)).rule,
            Some(rref("p", "narrow"))
        );
        assert_eq!(
            evaluate(&p, "eth0", &tcp("10.9.0.1", 80)).rule,
            Some(rref("p", "wide"))
        );
        assert_eq!(
            evaluate(&p, "eth0", &tcp("11.0.0.1", 80)).rule,
            Some(rref("p", "any"))
        );
        // Among deny rules too; ties broken by (policy, rule) name.
        let a = policy(
            "b",
            Action::Allow,
            vec![from(rule("a", Action::Deny), &["10.0.0.0/8"])],
        );
        let b = policy(
            "a",
            Action::Allow,
            vec![
                from(rule("z", Action::Deny), &["10.0.0.0/8"]),
                rule("y", Action::Deny),
            ],
        );
        assert_eq!(
            evaluate(&[a, b], "eth0", &tcp("10.1.1.1", 80)).rule,
            Some(rref("a", "z"))
        );
        // Byte order: '-' < digits < letters, and a prefix sorts first.
        let c = policy(
            "p",
            Action::Allow,
            vec![
                rule("ab", Action::Deny),
                rule("a1", Action::Deny),
                rule("a-b", Action::Deny),
            ],
        );
        assert_eq!(
            evaluate(std::slice::from_ref(&c), "eth0", &tcp("10.1.1.1", 80)).rule,
            Some(rref("p", "a-b"))
        );
        let d = policy(
            "p",
            Action::Allow,
            vec![rule("a-b", Action::Deny), rule("a", Action::Deny)],
        );
        assert_eq!(
            evaluate(&[d], "eth0", &tcp("10.1.1.1", 80)).rule,
            Some(rref("p", "a"))
        );
        // The policy name compares first, byte by byte too: "p-x/z" before "p1/a".
        let e = policy("p1", Action::Allow, vec![rule("a", Action::Deny)]);
        let f = policy("p-x", Action::Allow, vec![rule("z", Action::Deny)]);
        assert_eq!(
            evaluate(&[e, f], "eth0", &tcp("10.1.1.1", 80)).rule,
            Some(rref("p-x", "z"))
        );
    }

    #[test]
    fn limits_are_listed_in_attribution_order() {
        let p1 = policy(
            "p1",
            Action::Deny,
            vec![
                limited(rule("any", Action::Allow)),
                limited(from(rule("v4-16", Action::Allow), &["10.1.0.0/16"])),
                from(rule("no-limit", Action::Allow), &["10.1.2.0/24"]),
                limited(tcp_ports(rule("other-port", Action::Allow), &[(22, 22)])),
            ],
        );
        let p2 = policy(
            "p0",
            Action::Deny,
            vec![limited(from(rule("z", Action::Allow), &["10.1.0.0/16"]))],
        );
        assert_eq!(
            evaluate(&[p1, p2], "eth0", &tcp("10.1.2.3", 80)),
            decision(
                Outcome::Pass,
                Reason::Policy,
                Some(rref("p1", "no-limit")),
                vec![rref("p0", "z"), rref("p1", "v4-16"), rref("p1", "any")]
            )
        );
    }

    #[test]
    fn limits_are_dropped_when_a_deny_matches() {
        let p = policy(
            "p",
            Action::Allow,
            vec![
                limited(rule("any", Action::Allow)),
                tcp_ports(rule("ssh", Action::Deny), &[(22, 22)]),
            ],
        );
        assert_eq!(
            evaluate(&[p], "eth0", &tcp("10.1.2.3", 22)),
            decision(
                Outcome::Drop,
                Reason::Policy,
                Some(rref("p", "ssh")),
                vec![]
            )
        );
    }

    #[test]
    fn unconfigured_interface_passes() {
        assert_eq!(
            evaluate(&[], "eth0", &tcp("10.0.0.1", 22)),
            decision(Outcome::Pass, Reason::Unconfigured, None, vec![])
        );
        let mut p = policy("p", Action::Deny, vec![rule("all", Action::Deny)]);
        p.interfaces = Some(vec!["eth1".into()]);
        assert_eq!(
            evaluate(&[p], "eth0", &tcp("10.0.0.1", 22)),
            decision(Outcome::Pass, Reason::Unconfigured, None, vec![])
        );
    }

    #[test]
    fn interfaces_lists_select_the_policies_that_apply() {
        let mut only_eth1 = policy(
            "eth1-only",
            Action::Allow,
            vec![tcp_ports(rule("no-ssh", Action::Deny), &[(22, 22)])],
        );
        only_eth1.interfaces = Some(vec!["eth1".into(), "eth2".into()]);
        let everywhere = policy(
            "everywhere",
            Action::Allow,
            vec![tcp_ports(rule("no-telnet", Action::Deny), &[(23, 23)])],
        );
        let ps = [only_eth1, everywhere];
        assert_eq!(
            evaluate(&ps, "eth0", &tcp("10.0.0.1", 22)),
            decision(Outcome::Pass, Reason::Default, None, vec![])
        );
        assert_eq!(
            evaluate(&ps, "eth1", &tcp("10.0.0.1", 22)).rule,
            Some(rref("eth1-only", "no-ssh"))
        );
        assert_eq!(
            evaluate(&ps, "eth2", &tcp("10.0.0.1", 22)).rule,
            Some(rref("eth1-only", "no-ssh"))
        );
        assert_eq!(
            evaluate(&ps, "eth0", &tcp("10.0.0.1", 23)).rule,
            Some(rref("everywhere", "no-telnet"))
        );
        assert_eq!(
            evaluate(&ps, "eth1", &tcp("10.0.0.1", 23)).rule,
            Some(rref("everywhere", "no-telnet"))
        );
    }
}
