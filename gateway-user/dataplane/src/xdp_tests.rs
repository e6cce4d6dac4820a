//! Level 2: the real XDP program, run by the kernel on crafted packets (`BPF_PROG_TEST_RUN`),
//! checked against the reference evaluator. Needs root (CI runs as root); skipped otherwise.
use std::collections::BTreeMap;
use std::time::Duration;

use super::counters;
use super::testrun::{frame, FrameOptions, TestRig, TEST_RUN_INTERFACE, XDP_DROP, XDP_PASS};
use tollgate_compile::l4::compile;
use tollgate_compile::l4::packet::{Decision, Outcome, Packet, Reason, L4};
use tollgate_compile::l4::policy::{Action, Mode, Policy, PortRange, Protocol, RateLimit, Rule};
use tollgate_compile::l4::reference::evaluate;

pub(crate) fn rule(name: &str, action: Action) -> Rule {
    Rule::new(name, action)
}

pub(crate) fn from(mut r: Rule, cidrs: &[&str]) -> Rule {
    r.from = Some(cidrs.iter().map(|c| c.parse().unwrap()).collect());
    r
}

fn proto(mut r: Rule, p: Protocol, ports: &[(u16, u16)]) -> Rule {
    r.protocol = Some(p);
    if !ports.is_empty() {
        r.ports = Some(
            ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
        );
    }
    r
}

pub(crate) fn policy(name: &str, default_action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        file: format!("{name}.yaml"),
        mode: Mode::Enforce,
        default_action,
        interfaces: None,
        rules,
    }
}

/// The example of docs/policy.md plus IPv6, ICMP and UDP rules, over two files.
fn example_policies() -> Vec<Policy> {
    let mut ping = proto(rule("ping", Action::Allow), Protocol::Icmp, &[]);
    ping.icmp_types = Some(vec![8, 0]);
    let mut ping6 = proto(rule("ping6", Action::Allow), Protocol::Icmpv6, &[]);
    ping6.icmp_types = Some(vec![128, 129, 135, 136]);
    let mut https = proto(
        rule("https", Action::Allow),
        Protocol::Tcp,
        &[(443, 443), (8000, 8999)],
    );
    https.rate_limit = Some(RateLimit {
        packets_per_second: 100_000_000,
        burst: 100_000_000,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    });
    vec![
        policy(
            "edge",
            Action::Deny,
            vec![
                from(
                    rule("block-scanners", Action::Deny),
                    &["203.0.113.0/24", "2001:db8:bad::/48"],
                ),
                proto(
                    from(
                        rule("ssh-from-office", Action::Allow),
                        &["198.51.100.0/24", "2001:db8:0ff::/48"],
                    ),
                    Protocol::Tcp,
                    &[(22, 22)],
                ),
                proto(rule("no-ssh", Action::Deny), Protocol::Tcp, &[(22, 22)]),
                https,
            ],
        ),
        policy(
            "services",
            Action::Deny,
            vec![
                ping,
                ping6,
                proto(rule("dns", Action::Allow), Protocol::Udp, &[(53, 53)]),
                proto(
                    from(rule("office-udp", Action::Allow), &["198.51.100.0/24"]),
                    Protocol::Udp,
                    &[(1000, 2000)],
                ),
                from(rule("gre-from-peer", Action::Allow), &["192.0.2.0/24"]),
            ],
        ),
    ]
}

fn packets() -> Vec<Packet> {
    let sources = [
        "203.0.113.7",
        "198.51.100.10",
        "192.0.2.9",
        "10.9.9.9",
        "2001:db8:bad::1",
        "2001:db8:ff::5",
        "2001:db8:1::1",
    ];
    let mut out = Vec::new();
    for s in sources {
        let src = s.parse().unwrap();
        for port in [
            0, 1, 22, 53, 80, 443, 444, 999, 1000, 2000, 2001, 8000, 8999, 9000, 65535,
        ] {
            out.push(Packet {
                src,
                protocol: 6,
                l4: L4::Port(port),
            });
            out.push(Packet {
                src,
                protocol: 17,
                l4: L4::Port(port),
            });
        }
        for t in [0, 3, 8, 128, 129, 135] {
            out.push(Packet {
                src,
                protocol: if src.is_ipv4() { 1 } else { 58 },
                l4: L4::IcmpType(t),
            });
        }
        out.push(Packet {
            src,
            protocol: 47,
            l4: L4::Other,
        });
        out.push(Packet {
            src,
            protocol: 6,
            l4: L4::Fragment,
        });
        out.push(Packet {
            src,
            protocol: 17,
            l4: L4::Fragment,
        });
    }
    out
}

fn expected_action(d: &Decision) -> u32 {
    if d.outcome == Outcome::Drop {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// Which counter a decision must land on: (policy, rule, action, reason).
fn expected_counter(
    policies: &[Policy],
    d: &Decision,
) -> Option<(String, String, &'static str, &'static str)> {
    let default_key = || {
        let mut names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        names.join("+")
    };
    match (d.reason, &d.rule) {
        (Reason::Policy, Some(r)) => Some((
            r.policy.clone(),
            r.rule.clone(),
            if d.outcome == Outcome::Drop {
                "drop"
            } else {
                "pass"
            },
            "policy",
        )),
        (Reason::Default, None) => Some((
            default_key(),
            "(default)".into(),
            if d.outcome == Outcome::Drop {
                "drop"
            } else {
                "pass"
            },
            "default",
        )),
        (Reason::Audit, Some(r)) => Some((r.policy.clone(), r.rule.clone(), "pass", "audit")),
        (Reason::Audit, None) => Some((default_key(), "(default)".into(), "pass", "audit")),
        _ => None,
    }
}

fn counter_map(
    rig: &TestRig,
    state: &std::path::Path,
) -> BTreeMap<(String, String, String, String), u64> {
    counters::read(&rig.pin_dir(), state)
        .unwrap_or_else(|e| panic!("read counters: {e}"))
        .rules
        .into_iter()
        .map(|r| {
            (
                (r.policy, r.rule, r.action.to_owned(), r.reason.to_owned()),
                r.packets,
            )
        })
        .collect()
}

/// Runs every packet in every framing through the kernel and through the evaluator.
fn check_against_evaluator(rig: &mut TestRig, policies: &[Policy], state: &std::path::Path) {
    let snapshot =
        compile(policies, &[TEST_RUN_INTERFACE.into()]).unwrap_or_else(|e| panic!("compile: {e}"));
    rig.apply(&snapshot)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let mut expected: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    let framings = [
        FrameOptions::default(),
        FrameOptions {
            vlan: Some(42),
            ..Default::default()
        },
        FrameOptions {
            ipv4_options: 12,
            ipv6_ext_headers: 3,
            ..Default::default()
        },
    ];
    for p in packets() {
        let d = evaluate(policies, TEST_RUN_INTERFACE, &p);
        for opts in framings {
            let f = frame(&p, opts);
            let got = rig.run(&f).unwrap_or_else(|e| panic!("test run: {e}"));
            assert_eq!(
                got,
                expected_action(&d),
                "packet {p:?} framed {opts:?}: kernel said {got}, evaluator {d:?}"
            );
            if let Some((pol, r, a, reason)) = expected_counter(policies, &d) {
                *expected
                    .entry((pol, r, a.into(), reason.into()))
                    .or_default() += 1;
            }
        }
    }
    let got = counter_map(rig, state);
    assert_eq!(
        got, expected,
        "per-rule counters must attribute every packet to the rule the evaluator names"
    );
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn xdp_program_agrees_with_the_reference_evaluator_on_crafted_packets() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let state = rig.state_dir();
    check_against_evaluator(&mut rig, &example_policies(), &state);
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn audit_mode_passes_what_enforce_mode_drops_and_counts_it() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let state = rig.state_dir();
    let mut policies = example_policies();
    for p in &mut policies {
        p.mode = Mode::Audit;
    }
    check_against_evaluator(&mut rig, &policies, &state);
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn packets_the_policy_cannot_judge_get_their_documented_verdicts() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let policies = vec![policy(
        "p",
        Action::Allow,
        vec![from(
            rule("deny-all-from-test-net", Action::Deny),
            &["203.0.113.0/24"],
        )],
    )];
    rig.apply(&compile(&policies, &[TEST_RUN_INTERFACE.into()]).unwrap())
        .unwrap();
    let tcp = Packet {
        src: "198.51.100.1".parse().unwrap(),
        protocol: 6,
        l4: L4::Port(80),
    };
    let udp6 = Packet {
        src: "2001:db8::9".parse().unwrap(),
        protocol: 17,
        l4: L4::Port(53),
    };
    let ok = frame(&tcp, FrameOptions::default());
    assert_eq!(rig.run(&ok).unwrap(), XDP_PASS);

    // Non-IP (ARP): pass.
    let mut arp = ok[..12].to_vec();
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(rig.run(&arp).unwrap(), XDP_PASS, "ARP passes");

    // Truncated anywhere inside the IP or TCP header: drop.
    for cut in [14, 20, 33, 34, 40, 53] {
        let f = frame(
            &tcp,
            FrameOptions {
                truncate: Some(cut),
                ..Default::default()
            },
        );
        assert_eq!(
            rig.run(&f).unwrap(),
            XDP_DROP,
            "IPv4/TCP cut at {cut} bytes is malformed"
        );
    }
    for cut in [20, 53, 54, 60] {
        let f = frame(
            &udp6,
            FrameOptions {
                truncate: Some(cut),
                ..Default::default()
            },
        );
        assert_eq!(
            rig.run(&f).unwrap(),
            XDP_DROP,
            "IPv6/UDP cut at {cut} bytes is malformed"
        );
    }
    // IPv4 header length below 20: drop.
    let mut bad = ok.clone();
    bad[14] = 0x44;
    assert_eq!(rig.run(&bad).unwrap(), XDP_DROP, "IHL 4 is malformed");
    // Wrong IP version in an IPv4 frame: drop.
    let mut bad = ok.clone();
    bad[14] = 0x65;
    assert_eq!(
        rig.run(&bad).unwrap(),
        XDP_DROP,
        "version 6 in an IPv4 frame is malformed"
    );

    // Stacked VLAN tags: drop (unsupported).
    let mut qinq = ok[..12].to_vec();
    qinq.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20]);
    qinq.extend_from_slice(&ok[12..]);
    assert_eq!(rig.run(&qinq).unwrap(), XDP_DROP, "QinQ is unsupported");

    // Six IPv6 extension headers are skipped; seven are refused.
    let six = frame(
        &udp6,
        FrameOptions {
            ipv6_ext_headers: 6,
            ..Default::default()
        },
    );
    assert_eq!(
        rig.run(&six).unwrap(),
        XDP_PASS,
        "six extension headers are parsed"
    );
    let seven = frame(
        &udp6,
        FrameOptions {
            ipv6_ext_headers: 7,
            ..Default::default()
        },
    );
    assert_eq!(
        rig.run(&seven).unwrap(),
        XDP_DROP,
        "seven extension headers are refused"
    );

    // A first fragment too short to hold the TCP header (RFC 1858 tiny fragment): drop.
    let mut tiny = frame(
        &tcp,
        FrameOptions {
            first_fragment: true,
            ..Default::default()
        },
    );
    tiny.truncate(14 + 20 + 8);
    assert_eq!(rig.run(&tiny).unwrap(), XDP_DROP, "tiny first fragment");
    // A well-formed first fragment is judged like any packet.
    let first = frame(
        &tcp,
        FrameOptions {
            first_fragment: true,
            ..Default::default()
        },
    );
    assert_eq!(rig.run(&first).unwrap(), XDP_PASS);

    // An IPv6 packet from an IPv4-mapped source (a dual-stack socket would see it as from
    // 203.0.113.7, which the rule set denies): drop, whatever the address inside.
    let mapped = |v4: &str| {
        let v4: std::net::Ipv4Addr = v4.parse().unwrap();
        frame(
            &Packet {
                src: v4.to_ipv6_mapped().into(),
                protocol: 17,
                l4: L4::Port(53),
            },
            FrameOptions::default(),
        )
    };
    assert_eq!(rig.run(&mapped("203.0.113.7")).unwrap(), XDP_DROP);
    assert_eq!(rig.run(&mapped("198.51.100.1")).unwrap(), XDP_DROP);

    let state = rig.state_dir();
    let stats = counters::read(&rig.pin_dir(), &state).unwrap().stats;
    assert_eq!(stats.non_ip, 1);
    assert_eq!(stats.malformed, 6 + 4 + 2 + 1 + 2);
    assert_eq!(stats.unsupported, 2);

    // Where no rule set is enforced, what cannot be judged passes: in audit mode (which
    // drops nothing), and on an interface no rule set applies to. Counted all the same.
    let unjudged = [bad, qinq, seven, tiny, mapped("203.0.113.7")];
    let mut audit = policies.clone();
    audit[0].mode = Mode::Audit;
    let elsewhere = compile(&policies, &["tg-not-here0".into()]).unwrap();
    for (what, tables) in [
        (
            "audit",
            compile(&audit, &[TEST_RUN_INTERFACE.into()]).unwrap(),
        ),
        ("no rule set", elsewhere),
    ] {
        rig.apply(&tables).unwrap();
        for (i, f) in unjudged.iter().enumerate() {
            assert_eq!(rig.run(f).unwrap(), XDP_PASS, "{what}: packet {i} passes");
        }
    }
    let after = counters::read(&rig.pin_dir(), &state).unwrap().stats;
    assert_eq!(after.malformed, stats.malformed + 2 * 3);
    assert_eq!(after.unsupported, stats.unsupported + 2 * 2);
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn non_first_fragments_are_judged_only_by_rules_without_ports() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let policies = vec![policy(
        "p",
        Action::Deny,
        vec![
            from(rule("scanners", Action::Deny), &["203.0.113.0/24"]),
            proto(rule("dns", Action::Allow), Protocol::Udp, &[(53, 53)]),
        ],
    )];
    rig.apply(&compile(&policies, &[TEST_RUN_INTERFACE.into()]).unwrap())
        .unwrap();
    let frag = |src: &str| {
        frame(
            &Packet {
                src: src.parse().unwrap(),
                protocol: 17,
                l4: L4::Fragment,
            },
            FrameOptions::default(),
        )
    };
    assert_eq!(
        rig.run(&frag("203.0.113.9")).unwrap(),
        XDP_DROP,
        "a port-less deny drops fragments"
    );
    assert_eq!(
        rig.run(&frag("198.51.100.1")).unwrap(),
        XDP_PASS,
        "no port-less rule: the fragment passes"
    );
    assert_eq!(
        rig.run(&frag("2001:db8::1")).unwrap(),
        XDP_PASS,
        "IPv6 fragment header, offset > 0"
    );
    let state = rig.state_dir();
    assert_eq!(
        counters::read(&rig.pin_dir(), &state)
            .unwrap()
            .stats
            .fragment_pass,
        2
    );
}

/// Allow rule `limited`: UDP port 9000, 100 packets/s, burst 20, buckets per `/ipv4_prefix`
/// (IPv6: /64).
fn limited_udp_9000(ipv4_prefix: u8) -> Rule {
    let mut limited = proto(
        rule("limited", Action::Allow),
        Protocol::Udp,
        &[(9000, 9000)],
    );
    limited.rate_limit = Some(RateLimit {
        packets_per_second: 100,
        burst: 20,
        ipv4_prefix,
        ipv6_prefix: 64,
    });
    limited
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn rate_limit_admits_the_burst_then_drops_then_refills() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let limited = limited_udp_9000(24);
    rig.apply(
        &compile(
            &[policy("p", Action::Allow, vec![limited])],
            &[TEST_RUN_INTERFACE.into()],
        )
        .unwrap(),
    )
    .unwrap();
    let pkt = |src: &str| {
        frame(
            &Packet {
                src: src.parse().unwrap(),
                protocol: 17,
                l4: L4::Port(9000),
            },
            FrameOptions::default(),
        )
    };
    let a = pkt("192.0.2.1");
    let passed = (0..100)
        .filter(|_| rig.run(&a).unwrap() == XDP_PASS)
        .count();
    assert!(
        (20..=21).contains(&passed),
        "a full bucket admits the burst (20), then drops: {passed}"
    );
    // Same /24: same bucket. Another /24: its own bucket.
    assert_eq!(
        rig.run(&pkt("192.0.2.200")).unwrap(),
        XDP_DROP,
        "same /24 shares the bucket"
    );
    assert_eq!(
        rig.run(&pkt("192.0.3.1")).unwrap(),
        XDP_PASS,
        "another /24 has its own bucket"
    );
    // 100 pps: after 200 ms about 20 more tokens.
    std::thread::sleep(Duration::from_millis(200));
    let refilled = (0..100)
        .filter(|_| rig.run(&a).unwrap() == XDP_PASS)
        .count();
    assert!(
        (15..=26).contains(&refilled),
        "about 20 tokens after 200 ms at 100 pps: {refilled}"
    );
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_rate_limit_changed_behind_the_agents_back_is_put_back_and_named() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let limited = limited_udp_9000(32);
    let deny = from(rule("deny", Action::Deny), &["203.0.113.0/24"]);
    rig.apply(
        &compile(
            &[policy("p", Action::Allow, vec![limited, deny])],
            &[TEST_RUN_INTERFACE.into()],
        )
        .unwrap(),
    )
    .unwrap();
    assert!(rig.dataplane().repair_drift().unwrap().is_empty());
    // The probe (made before the change, read after it, as the agent's thread would).
    let probe = rig.dataplane().drift_probe().unwrap();
    assert!(!probe.drifted().unwrap(), "nothing changed yet");
    let id = rig
        .dataplane()
        .ids()
        .rules
        .get("p", &"limited".to_owned())
        .expect("the limited rule's id");
    let gen = rig.dataplane().active_gen();
    // Zero the rule's limit in the active generation, as `bpftool map update` would.
    let map = rig.pin_dir().join("maps/LIMITS");
    let key = gateway_common::limit_index(gen, id).to_le_bytes();
    let mut args: Vec<String> = vec!["map".into(), "update".into(), "pinned".into()];
    args.push(map.display().to_string());
    args.push("key".into());
    args.extend(key.iter().map(|b| b.to_string()));
    args.push("value".into());
    args.extend(std::iter::repeat_n("0".to_owned(), 24));
    let out = std::process::Command::new("bpftool")
        .args(&args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(probe.drifted().unwrap(), "the probe sees the change");
    let report = rig.dataplane().repair_drift().unwrap();
    assert_eq!(report.maps.get("LIMITS"), Some(&1), "{report:?}");
    assert!(report.rules.contains("p/limited"), "{report:?}");
    assert!(
        rig.dataplane().repair_drift().unwrap().is_empty(),
        "put back"
    );
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_one_rule_change_writes_only_a_few_entries() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let mut rules: Vec<Rule> = (0..2000)
        .map(|i| {
            from(
                rule(&format!("deny-{i}"), Action::Deny),
                &[&format!("10.{}.{}.0/24", i / 256, i % 256)],
            )
        })
        .collect();
    rules.push(proto(
        rule("https", Action::Allow),
        Protocol::Tcp,
        &[(443, 443)],
    ));
    let first = compile(
        &[policy("big", Action::Allow, rules.clone())],
        &[TEST_RUN_INTERFACE.into()],
    )
    .unwrap();
    let stats = rig.apply(&first).unwrap();
    assert!(
        stats.writes > 2000,
        "the first apply writes everything: {stats:?}"
    );
    rules[1000] = from(rule("deny-1000", Action::Deny), &["172.16.0.0/24"]);
    let second = compile(
        &[policy("big", Action::Allow, rules)],
        &[TEST_RUN_INTERFACE.into()],
    )
    .unwrap();
    let stats = rig.apply(&second).unwrap();
    assert!(
        stats.writes <= 8,
        "one changed rule rewrites a handful of entries: {stats:?}"
    );
    assert_eq!(
        rig.run(&frame(
            &Packet {
                src: "172.16.0.9".parse().unwrap(),
                protocol: 6,
                l4: L4::Port(1)
            },
            FrameOptions::default()
        ))
        .unwrap(),
        XDP_DROP
    );
    assert_eq!(
        rig.run(&frame(
            &Packet {
                src: "10.3.232.9".parse().unwrap(),
                protocol: 6,
                l4: L4::Port(1)
            },
            FrameOptions::default()
        ))
        .unwrap(),
        XDP_PASS
    );
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_packet_is_judged_wholly_by_one_revision_while_revisions_flip() {
    // A: default allow, deny S:P (rule a-deny). B: default deny, allow S:P (rule b-allow), and
    // every other rule differs too. A mix of the two generations would send S:P to a default
    // counter (A's source entry with B's interface config, or the reverse) or to a rule of the
    // wrong revision; whole-revision judgement sends it only to a-deny or b-allow.
    let s = "198.51.100.7";
    // Both rules exist in both revisions (so their ids and counters live on); only what they
    // match changes.
    let a = vec![policy(
        "flip",
        Action::Allow,
        vec![
            proto(
                from(rule("a-deny", Action::Deny), &["198.51.100.0/24"]),
                Protocol::Udp,
                &[(5000, 5000)],
            ),
            proto(
                from(rule("b-allow", Action::Allow), &["192.0.2.0/24"]),
                Protocol::Udp,
                &[(5000, 5000)],
            ),
        ],
    )];
    let b = vec![policy(
        "flip",
        Action::Deny,
        vec![
            proto(
                from(rule("a-deny", Action::Deny), &["192.0.2.0/24"]),
                Protocol::Udp,
                &[(5000, 5000)],
            ),
            proto(
                from(rule("b-allow", Action::Allow), &["198.51.100.0/25"]),
                Protocol::Udp,
                &[(5000, 5000)],
            ),
        ],
    )];
    let ifaces = [TEST_RUN_INTERFACE.to_owned()];
    let (sa, sb) = (compile(&a, &ifaces).unwrap(), compile(&b, &ifaces).unwrap());
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(&sa).unwrap();
    let mut runner = rig
        .second_loader()
        .unwrap_or_else(|e| panic!("second program: {e}"));
    let f = frame(
        &Packet {
            src: s.parse().unwrap(),
            protocol: 17,
            l4: L4::Port(5000),
        },
        FrameOptions::default(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stop2, batches2) = (stop.clone(), batches.clone());
    let sender = std::thread::spawn(move || {
        let xdp: &mut aya::programs::Xdp = runner
            .ebpf_mut()
            .program_mut(super::XDP_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let mut sent = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut out = vec![0u8; f.len() + 64];
            let mut opts = aya::programs::TestRunOptions::new();
            opts.data_in = Some(&f);
            opts.data_out = Some(&mut out);
            opts.repeat = 1000;
            aya::programs::TestRun::test_run(xdp, opts).unwrap();
            sent += 1000;
            batches2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        sent
    });
    // Each flip waits for a new batch of packets, so the traffic spans every revision.
    let wait_for_batch = || {
        let seen = batches.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while batches.load(std::sync::atomic::Ordering::Relaxed) == seen
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    wait_for_batch();
    for i in 0..100 {
        rig.apply(if i % 2 == 0 { &sb } else { &sa }).unwrap();
        wait_for_batch();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let state = rig.state_dir();
    let got = counter_map(&rig, &state);
    let a_deny = got
        .get(&(
            "flip".into(),
            "a-deny".into(),
            "drop".into(),
            "policy".into(),
        ))
        .copied()
        .unwrap_or(0);
    let b_allow = got
        .get(&(
            "flip".into(),
            "b-allow".into(),
            "pass".into(),
            "policy".into(),
        ))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        a_deny + b_allow,
        sent,
        "every packet judged by exactly one whole revision; counters: {got:?}"
    );
    assert!(
        a_deny > 0 && b_allow > 0,
        "both revisions judged packets (the flips happened under traffic): {got:?}"
    );
    assert_eq!(got.len(), 2, "no packet reached any other counter: {got:?}");
}
