//! Unit tests of `l4/validate.rs`.
use super::*;
use tollgate_model::parse;
use tollgate_model::Documents;

fn docs(files: &[(&str, &str)]) -> Documents {
    Documents::inline(files)
}

fn run(files: &[(&str, &str)]) -> Result<Vec<Policy>, PolicyErrors> {
    let objects = parse(&docs(files)).unwrap_or_else(|e| panic!("parse: {e}"));
    validate(&objects)
}

fn errors(files: &[(&str, &str)]) -> Vec<PolicyError> {
    match run(files) {
        Ok(p) => panic!("expected errors, got {p:#?}"),
        Err(PolicyErrors(e)) => e,
    }
}

/// A policy named `name` with the given rule lines (flow mappings).
fn policy(name: &str, rules: &[&str]) -> String {
    let rules: String = rules.iter().map(|r| format!("    - {r}\n")).collect();
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: {{ name: {name} }}\nspec:\n  rules:\n{rules}")
}

/// The one error of a one-rule policy: (field, message).
fn rule_error(rule: &str) -> (String, String) {
    let mut e = errors(&[("p.yaml", &policy("p", &[rule]))]);
    assert_eq!(e.len(), 1, "{e:#?}");
    let e = e.remove(0);
    assert_eq!(
        (e.location.file.as_str(), e.location.object.as_str()),
        ("p.yaml", "L4Policy/p")
    );
    (e.location.field, e.message)
}

fn assert_rule_error(rule: &str, field: &str, message_has: &[&str]) {
    let (f, m) = rule_error(rule);
    assert_eq!(f, field, "{m}");
    for part in message_has {
        assert!(m.contains(part), "message {m:?} should contain {part:?}");
    }
}

const DESIGN_EXAMPLE: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: L4Policy                      # node firewall, enforced in XDP
metadata: { name: edge }
spec:
  nodeSelector: { matchLabels: { role: edge } }   # Kubernetes mode; ignored standalone
  interfaces: [eth0]                 # optional; default: the agent's configured interfaces
  mode: enforce                      # enforce | audit (count would-be drops, drop nothing)
  defaultAction: allow               # what happens when no rule matches
  rules:
    - name: block-scanners
      action: deny
      from: [203.0.113.0/24, "2001:db8:bad::/48"]
    - name: ssh-from-office
      action: allow
      from: [198.51.100.0/24]
      protocol: TCP
      ports: ["22"]
    - name: no-ssh
      action: deny
      protocol: TCP
      ports: ["22"]
    - name: https
      action: allow
      protocol: TCP
      ports: ["443", "8000-8999"]
      rateLimit: { packetsPerSecond: 2000, burst: 4000, per: { ipv4Prefix: 32, ipv6Prefix: 64 } }
"#;

#[test]
fn the_design_example_becomes_the_expected_policy() {
    let policies = run(&[("edge.yaml", DESIGN_EXAMPLE)]).unwrap_or_else(|e| panic!("{e}"));
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let rule = |name: &str, action| Rule {
        name: name.into(),
        action,
        from: None,
        protocol: None,
        ports: None,
        icmp_types: None,
        rate_limit: None,
    };
    let expected = Policy {
        name: "edge".into(),
        file: "edge.yaml".into(),
        mode: Mode::Enforce,
        default_action: Action::Allow,
        interfaces: Some(vec!["eth0".into()]),
        rules: vec![
            Rule {
                from: Some(vec![net("203.0.113.0/24"), net("2001:db8:bad::/48")]),
                ..rule("block-scanners", Action::Deny)
            },
            Rule {
                from: Some(vec![net("198.51.100.0/24")]),
                protocol: Some(Protocol::Tcp),
                ports: Some(vec![PortRange {
                    first: 22,
                    last: 22,
                }]),
                ..rule("ssh-from-office", Action::Allow)
            },
            Rule {
                protocol: Some(Protocol::Tcp),
                ports: Some(vec![PortRange {
                    first: 22,
                    last: 22,
                }]),
                ..rule("no-ssh", Action::Deny)
            },
            Rule {
                protocol: Some(Protocol::Tcp),
                ports: Some(vec![
                    PortRange {
                        first: 443,
                        last: 443,
                    },
                    PortRange {
                        first: 8000,
                        last: 8999,
                    },
                ]),
                rate_limit: Some(RateLimit {
                    packets_per_second: 2000,
                    burst: 4000,
                    ipv4_prefix: 32,
                    ipv6_prefix: 64,
                }),
                ..rule("https", Action::Allow)
            },
        ],
    };
    assert_eq!(policies, vec![expected]);
}

#[test]
fn policies_come_out_sorted_by_name() {
    let rule = "{ name: r, action: allow }";
    let names: Vec<String> = run(&[
        ("a.yaml", &policy("zeta", &[rule])),
        ("b.yaml", &policy("alpha", &[rule])),
    ])
    .unwrap()
    .into_iter()
    .map(|p| p.name)
    .collect();
    assert_eq!(names, ["alpha", "zeta"]);
}

#[test]
fn rate_limit_defaults_are_burst_equal_to_rate_and_prefixes_32_and_64() {
    let p = run(&[(
        "p.yaml",
        &policy(
            "p",
            &["{ name: r, action: allow, rateLimit: { packetsPerSecond: 50 } }"],
        ),
    )])
    .unwrap();
    assert_eq!(
        p[0].rules[0].rate_limit,
        Some(RateLimit {
            packets_per_second: 50,
            burst: 50,
            ipv4_prefix: 32,
            ipv6_prefix: 64
        })
    );
}

#[test]
fn bare_addresses_are_single_hosts() {
    let p = run(&[(
        "p.yaml",
        &policy(
            "p",
            &[r#"{ name: r, action: deny, from: [192.0.2.7, "2001:db8::1"] }"#],
        ),
    )])
    .unwrap();
    let from: Vec<String> = p[0].rules[0]
        .from
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(from, ["192.0.2.7/32", "2001:db8::1/128"]);
}

#[test]
fn a_bad_cidr_is_quoted() {
    assert_rule_error(
        "{ name: r, action: deny, from: [10.0.0.0/8, 300.1.2.0/24] }",
        "spec.rules[0].from[1]",
        &["\"300.1.2.0/24\"", "not an IPv4 or IPv6 CIDR"],
    );
    assert_rule_error(
        "{ name: r, action: deny, from: [10.0.0.0/33] }",
        "spec.rules[0].from[0]",
        &["\"10.0.0.0/33\""],
    );
}

#[test]
fn addresses_must_be_canonical_and_ipv4_is_never_written_as_ipv6() {
    assert_rule_error(
        "{ name: r, action: deny, from: [010.1.1.1/32] }",
        "spec.rules[0].from[0]",
        &["\"010.1.1.1/32\" has a leading zero", "10.1.1.1/32"],
    );
    assert_rule_error(
        "{ name: r, action: deny, from: [\"::ffff:1.2.3.4/128\"] }",
        "spec.rules[0].from[0]",
        &["IPv4-mapped", "write 1.2.3.4/32"],
    );
    assert_rule_error(
        "{ name: r, action: deny, from: [10.0.0.0/08] }",
        "spec.rules[0].from[0]",
        &["write 10.0.0.0/8"],
    );
    assert_rule_error(
        "{ name: r, action: deny, from: [\"10.1\"] }",
        "spec.rules[0].from[0]",
        &["shorthand"],
    );
}

#[test]
fn host_bits_suggest_the_network() {
    assert_rule_error(
        "{ name: r, action: deny, from: [10.0.0.1/24] }",
        "spec.rules[0].from[0]",
        &["\"10.0.0.1/24\" has host bits set; did you mean 10.0.0.0/24?"],
    );
    assert_rule_error(
        r#"{ name: r, action: deny, from: ["2001:db8::1/32"] }"#,
        "spec.rules[0].from[0]",
        &["did you mean 2001:db8::/32?"],
    );
}

#[test]
fn an_empty_from_is_refused() {
    assert_rule_error(
        "{ name: r, action: deny, from: [] }",
        "spec.rules[0].from",
        &["omit from to match any source"],
    );
}

#[test]
fn ports_out_of_range_are_refused() {
    assert_rule_error(
        r#"{ name: r, action: allow, protocol: TCP, ports: ["0"] }"#,
        "spec.rules[0].ports[0]",
        &["port 0 in \"0\" is out of range 1-65535"],
    );
    assert_rule_error(
        r#"{ name: r, action: allow, protocol: UDP, ports: ["22", "1-65536"] }"#,
        "spec.rules[0].ports[1]",
        &["65536", "out of range"],
    );
    assert_rule_error(
        r#"{ name: r, action: allow, protocol: UDP, ports: ["99999999999999999999"] }"#,
        "spec.rules[0].ports[0]",
        &["out of range"],
    );
}

#[test]
fn malformed_ports_are_refused() {
    for bad in ["", "x", "22-", "-22", "+22", " 22", "1-2-3", "22/tcp"] {
        let rule = format!(r#"{{ name: r, action: allow, protocol: TCP, ports: ["{bad}"] }}"#);
        assert_rule_error(&rule, "spec.rules[0].ports[0]", &[&format!("\"{bad}\"")]);
    }
}

#[test]
fn a_reversed_port_range_is_refused() {
    assert_rule_error(
        r#"{ name: r, action: allow, protocol: TCP, ports: ["9000-8000"] }"#,
        "spec.rules[0].ports[0]",
        &["reversed", "\"8000-9000\""],
    );
}

#[test]
fn empty_ports_and_icmp_types_are_refused() {
    assert_rule_error(
        "{ name: r, action: allow, protocol: TCP, ports: [] }",
        "spec.rules[0].ports",
        &["omit ports"],
    );
    assert_rule_error(
        "{ name: r, action: allow, protocol: ICMP, icmpTypes: [] }",
        "spec.rules[0].icmpTypes",
        &["omit icmpTypes"],
    );
}

#[test]
fn ports_need_tcp_or_udp() {
    assert_rule_error(
        r#"{ name: r, action: allow, protocol: ICMP, ports: ["22"] }"#,
        "spec.rules[0].ports",
        &["protocol ICMP"],
    );
    assert_rule_error(
        r#"{ name: r, action: allow, ports: ["22"] }"#,
        "spec.rules[0].ports",
        &["no protocol"],
    );
}

#[test]
fn icmp_types_need_icmp_or_icmpv6() {
    assert_rule_error(
        "{ name: r, action: allow, protocol: TCP, icmpTypes: [8] }",
        "spec.rules[0].icmpTypes",
        &["protocol TCP"],
    );
    let ok = run(&[(
        "p.yaml",
        &policy(
            "p",
            &["{ name: r, action: allow, protocol: ICMPv6, icmpTypes: [128, 0, 255] }"],
        ),
    )])
    .unwrap();
    assert_eq!(ok[0].rules[0].icmp_types, Some(vec![128, 0, 255]));
}

#[test]
fn icmp_types_out_of_range_are_refused() {
    assert_rule_error(
        "{ name: r, action: allow, protocol: ICMP, icmpTypes: [8, 256] }",
        "spec.rules[0].icmpTypes[1]",
        &["256", "0-255"],
    );
    assert_rule_error(
        "{ name: r, action: allow, protocol: ICMP, icmpTypes: [-1] }",
        "spec.rules[0].icmpTypes[0]",
        &["-1"],
    );
}

#[test]
fn rate_limit_on_a_deny_rule_is_refused() {
    assert_rule_error(
        "{ name: r, action: deny, rateLimit: { packetsPerSecond: 10 } }",
        "spec.rules[0].rateLimit",
        &["allow rule", "denies"],
    );
}

#[test]
fn rate_limit_bounds_are_checked() {
    assert_rule_error(
        "{ name: r, action: allow, rateLimit: { packetsPerSecond: 0 } }",
        "spec.rules[0].rateLimit.packetsPerSecond",
        &["0 is out of range 1-100000000"],
    );
    assert_rule_error(
        "{ name: r, action: allow, rateLimit: { packetsPerSecond: 100000001 } }",
        "spec.rules[0].rateLimit.packetsPerSecond",
        &["100000001"],
    );
    assert_rule_error(
        "{ name: r, action: allow, rateLimit: { packetsPerSecond: 1, burst: 0 } }",
        "spec.rules[0].rateLimit.burst",
        &["0 is out of range"],
    );
    assert_rule_error(
        "{ name: r, action: allow, rateLimit: { packetsPerSecond: 1, burst: -3 } }",
        "spec.rules[0].rateLimit.burst",
        &["-3"],
    );
}

#[test]
fn rate_limit_prefixes_out_of_range_are_refused() {
    assert_rule_error(
        "{ name: r, action: allow, rateLimit: { packetsPerSecond: 1, per: { ipv4Prefix: 33 } } }",
        "spec.rules[0].rateLimit.per.ipv4Prefix",
        &["33 is out of range 0-32"],
    );
    assert_rule_error(
        "{ name: r, action: allow, rateLimit: { packetsPerSecond: 1, per: { ipv6Prefix: 129 } } }",
        "spec.rules[0].rateLimit.per.ipv6Prefix",
        &["129 is out of range 0-128"],
    );
}

#[test]
fn rule_names_must_be_dns_labels() {
    assert_rule_error(
        "{ name: Block_SSH, action: deny }",
        "spec.rules[0].name",
        &["\"Block_SSH\""],
    );
    assert_rule_error(
        "{ name: '', action: deny }",
        "spec.rules[0].name",
        &["empty"],
    );
    assert_rule_error(
        "{ name: -x, action: deny }",
        "spec.rules[0].name",
        &["\"-x\""],
    );
    let long = "a".repeat(64);
    assert_rule_error(
        &format!("{{ name: {long}, action: deny }}"),
        "spec.rules[0].name",
        &["63"],
    );
}

#[test]
fn duplicate_rule_names_are_refused() {
    let e = errors(&[(
        "p.yaml",
        &policy(
            "p",
            &[
                "{ name: r, action: deny }",
                "{ name: s, action: deny }",
                "{ name: r, action: allow }",
            ],
        ),
    )]);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].location.field, "spec.rules[2].name");
    assert!(
        e[0].message.contains("duplicate rule name \"r\""),
        "{}",
        e[0]
    );
}

#[test]
fn duplicate_policy_names_across_files_name_both_files() {
    let rule = "{ name: r, action: allow }";
    let e = errors(&[
        ("a.yaml", &policy("edge", &[rule])),
        ("sub/b.yaml", &policy("edge", &[rule])),
        ("c.yaml", &policy("other", &[rule])),
    ]);
    let got: Vec<_> = e
        .iter()
        .map(|e| {
            (
                e.location.file.as_str(),
                e.location.object.as_str(),
                e.location.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a.yaml", "L4Policy/edge", "metadata.name"),
            ("sub/b.yaml", "L4Policy/edge", "metadata.name")
        ]
    );
    assert!(
        e[0].message.contains("sub/b.yaml") && e[1].message.contains("a.yaml"),
        "{e:#?}"
    );
}

#[test]
fn interfaces_are_checked() {
    let spec = |list: &str| {
        policy("p", &["{ name: r, action: allow }"])
            .replace("spec:\n", &format!("spec:\n  interfaces: {list}\n"))
    };
    let e = errors(&[("p.yaml", &spec("[]"))]);
    assert_eq!(e[0].location.field, "spec.interfaces");
    let e = errors(&[("p.yaml", &spec("[eth0, eth0, a-name-that-is-far-too-long]"))]);
    let fields: Vec<_> = e.iter().map(|e| e.location.field.as_str()).collect();
    assert_eq!(fields, ["spec.interfaces[1]", "spec.interfaces[2]"]);
}

#[test]
fn every_problem_of_every_policy_is_reported() {
    let a = policy(
        "a",
        &[
            "{ name: r, action: deny, from: [10.0.0.1/8], rateLimit: { packetsPerSecond: 0 } }",
            r#"{ name: s, action: allow, protocol: ICMP, ports: ["70000"] }"#,
        ],
    );
    let b = policy(
        "b",
        &["{ name: BAD, action: allow, protocol: TCP, icmpTypes: [300] }"],
    );
    let e = errors(&[("a.yaml", &a), ("b.yaml", &b)]);
    let got: Vec<_> = e
        .iter()
        .map(|e| format!("{}: {}", e.location.file, e.location.field))
        .collect();
    assert_eq!(
        got,
        [
            "a.yaml: spec.rules[0].from[0]",
            "a.yaml: spec.rules[0].rateLimit",
            "a.yaml: spec.rules[0].rateLimit.packetsPerSecond",
            "a.yaml: spec.rules[1].ports",
            "a.yaml: spec.rules[1].ports[0]",
            "b.yaml: spec.rules[0].name",
            "b.yaml: spec.rules[0].icmpTypes",
            "b.yaml: spec.rules[0].icmpTypes[0]",
        ]
    );
}

#[test]
fn more_rules_than_the_revision_limit_are_refused() {
    let rule = |i: usize| L4Rule {
        name: format!("r{i}"),
        action: L4Action::Allow,
        from: None,
        protocol: None,
        ports: None,
        icmp_types: None,
        rate_limit: None,
    };
    let object = |name: &str, n: usize| {
        let spec = l4::L4PolicySpec {
            node_selector: None,
            interfaces: None,
            mode: L4Mode::Enforce,
            default_action: L4Action::Allow,
            rules: (0..n).map(rule).collect(),
        };
        Located {
            file: format!("{name}.yaml"),
            object: format!("L4Policy/{name}"),
            value: Object::L4Policy(l4::L4Policy::new(name, spec)),
        }
    };
    validate(&[object("a", MAX_RULES / 2), object("b", MAX_RULES / 2)]).unwrap();
    let e = validate(&[object("a", MAX_RULES / 2), object("b", MAX_RULES / 2 + 1)])
        .unwrap_err()
        .0;
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(
        (e[0].location.object.as_str(), e[0].location.field.as_str()),
        ("L4Policy/b", "spec.rules")
    );
    assert!(
        e[0].message.contains(&format!("{} rules", MAX_RULES + 1)),
        "{}",
        e[0]
    );
}
