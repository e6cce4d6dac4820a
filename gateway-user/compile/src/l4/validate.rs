//! Raw `L4Policy` objects -> validated [`Policy`] values. Every value is checked here, and every
//! problem of the revision is reported (file, object, exact field path, the offending value
//! quoted), never just the first: whoever fixes the revision should need one round, not ten.
use super::policy::{
    Action, Mode, Policy, PortRange, Protocol, RateLimit, Rule, MAX_BURST, MAX_PPS,
};
use ipnet::IpNet;
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use tollgate_model::cluster::NodeLabels;
use tollgate_model::l4::{
    self, L4Action, L4Mode, L4Protocol, L4RateLimit, L4Rule, DEFAULT_IPV4_PREFIX,
    DEFAULT_IPV6_PREFIX,
};
use tollgate_model::{Checker, PolicyError, PolicyErrors};
use tollgate_model::{Located, Object};

/// Most rules one revision may hold (all policies together): a bound on map sizes and compile
/// time, far above any hand-written policy.
pub const MAX_RULES: usize = tollgate_model::limits::MAX_L4_RULES;

/// Longest rule name (a DNS label, RFC 1123).
pub const MAX_RULE_NAME: usize = 63;

/// Longest interface name Linux accepts (`IFNAMSIZ` is 16 with the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;

/// Validates every `L4Policy` of a revision; returns them sorted by name, or every problem found.
pub fn validate(objects: &[Located<Object>]) -> Result<Vec<Policy>, PolicyErrors> {
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new(); // policy name -> files
    for located in objects {
        // The L7 kinds are validated by `compile::l7`.
        if let Object::L4Policy(p) = &located.value {
            let name = located.value.name();
            seen.entry(name).or_default().push(&located.file);
            let mut c = Checker::of(located, &mut errors);
            if let Some(policy) = policy(&mut c, name, &p.spec) {
                policies.push(policy);
            }
        }
    }

    // Policy names are unique in a revision: each copy is reported, naming the other files.
    for located in objects {
        if !matches!(located.value, Object::L4Policy(_)) {
            continue;
        }
        let name = located.value.name();
        let files = &seen[name];
        if files.len() > 1 {
            let others: Vec<String> = files
                .iter()
                .filter(|f| **f != located.file)
                .map(|f| f.to_string())
                .collect();
            let elsewhere = if others.is_empty() {
                "this file".to_string()
            } else {
                others.join(", ")
            };
            Checker::of(located, &mut errors).error(
                "metadata.name",
                format!(
                    "\"{name}\" is defined {} times in this revision (also in {elsewhere})",
                    files.len()
                ),
            );
        }
    }

    policies.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.file.cmp(&b.file)));
    let mut total = 0usize;
    for p in &policies {
        total += p.rules.len();
        if total > MAX_RULES {
            let all: usize = policies.iter().map(|p| p.rules.len()).sum();
            errors.push(PolicyError::new(
                &p.file,
                format!("L4Policy/{}", p.name),
                "spec.rules",
                format!("the revision has {all} rules, more than the limit of {MAX_RULES}; this policy's {} rules cross it", p.rules.len()),
            ));
            break;
        }
    }

    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(PolicyErrors(errors))
    }
}

/// The names of the L4Policies of `objects` whose `nodeSelector` does not select `node`: they
/// are not enforced on it. A policy without a nodeSelector applies to every node. Call it on
/// objects [`validate`] accepted (a selector that does not read selects nothing here, so a
/// mistaken caller leaves a policy out rather than enforcing it on a node it does not name).
pub fn not_for_node(objects: &[Located<Object>], node: &NodeLabels) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|located| match &located.value {
            Object::L4Policy(p) => {
                let selector = p.spec.node_selector.as_ref()?;
                let selects = Selector::try_from(selector.clone())
                    .map(|s| s.matches(&node.labels))
                    .unwrap_or(false);
                (!selects).then(|| located.value.name().to_string())
            }
            _ => None,
        })
        .collect()
}

/// The validated policy, or `None` when any of it is invalid (the errors are recorded).
fn policy(c: &mut Checker<'_, '_>, name: &str, spec: &l4::L4PolicySpec) -> Option<Policy> {
    let before = c.mark();
    // Checked in every mode, so that `tollgate validate` in CI refuses a selector the API
    // server would refuse too; whether it is applied is `not_for_node`'s business.
    if let Some(selector) = &spec.node_selector {
        crate::selector::label_selector(c, "spec.nodeSelector", selector);
    }
    let interfaces = spec.interfaces.as_ref().map(|list| interfaces(c, list));
    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut names: HashSet<&str> = HashSet::new();
    for (i, raw) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if !raw.name.is_empty() && !names.insert(&raw.name) {
            c.error(
                format!("{at}.name"),
                format!(
                    "duplicate rule name \"{}\"; rule names are unique within a policy",
                    raw.name
                ),
            );
        }
        if let Some(rule) = rule(c, &at, raw) {
            rules.push(rule);
        }
    }
    c.clean_since(before).then(|| Policy {
        name: name.to_string(),
        file: c.file().to_string(),
        mode: match spec.mode {
            L4Mode::Enforce => Mode::Enforce,
            L4Mode::Audit => Mode::Audit,
        },
        default_action: action(spec.default_action),
        interfaces,
        rules,
    })
}

fn interfaces(c: &mut Checker<'_, '_>, list: &[String]) -> Vec<String> {
    if list.is_empty() {
        c.error(
            "spec.interfaces",
            "empty list; omit interfaces to use the agent's interfaces",
        );
    }
    let mut seen = HashSet::new();
    for (j, name) in list.iter().enumerate() {
        let at = format!("spec.interfaces[{j}]");
        if name.is_empty()
            || name.len() > MAX_INTERFACE_NAME
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            c.error(at, format!("\"{name}\" is not an interface name (1-{MAX_INTERFACE_NAME} characters, no '/' or spaces)"));
        } else if !seen.insert(name) {
            c.error(at, format!("interface \"{name}\" is listed twice"));
        }
    }
    list.to_vec()
}

fn rule(c: &mut Checker<'_, '_>, at: &str, raw: &L4Rule) -> Option<Rule> {
    let before = c.mark();
    if let Err(why) = check_rule_name(&raw.name) {
        c.error(format!("{at}.name"), format!("\"{}\" {why}", raw.name));
    }
    let action = action(raw.action);
    let from = raw
        .from
        .as_ref()
        .map(|list| cidrs(c, &format!("{at}.from"), list));
    let protocol = raw.protocol.map(protocol);

    let ports = raw.ports.as_ref().map(|list| {
        let field = format!("{at}.ports");
        if !matches!(protocol, Some(Protocol::Tcp | Protocol::Udp)) {
            let got = protocol.map_or("no protocol".to_string(), |p| {
                format!("protocol {}", p.as_str())
            });
            c.error(
                &field,
                format!("ports need protocol TCP or UDP, this rule has {got}"),
            );
        }
        if list.is_empty() {
            c.error(&field, "empty list; omit ports to match any port");
        }
        list.iter()
            .enumerate()
            .filter_map(|(j, s)| {
                parse_ports(s)
                    .map_err(|why| c.error(format!("{field}[{j}]"), why))
                    .ok()
            })
            .collect::<Vec<_>>()
    });

    let icmp_types = raw.icmp_types.as_ref().map(|list| {
        let field = format!("{at}.icmpTypes");
        if !matches!(protocol, Some(Protocol::Icmp | Protocol::Icmpv6)) {
            let got = protocol.map_or("no protocol".to_string(), |p| {
                format!("protocol {}", p.as_str())
            });
            c.error(
                &field,
                format!("icmpTypes need protocol ICMP or ICMPv6, this rule has {got}"),
            );
        }
        if list.is_empty() {
            c.error(&field, "empty list; omit icmpTypes to match any ICMP type");
        }
        list.iter()
            .enumerate()
            .filter_map(|(j, &t)| match u8::try_from(t) {
                Ok(t) => Some(t),
                Err(_) => {
                    c.error(
                        format!("{field}[{j}]"),
                        format!("ICMP type {t} is out of range 0-255"),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });

    let rate_limit = raw.rate_limit.as_ref().and_then(|limit| {
        let field = format!("{at}.rateLimit");
        if action == Action::Deny {
            c.error(
                &field,
                "a rate limit applies to the packets an allow rule admits; this rule denies",
            );
        }
        rate_limit(c, &field, limit)
    });

    c.clean_since(before).then(|| Rule {
        name: raw.name.clone(),
        action,
        from,
        protocol,
        ports,
        icmp_types,
        rate_limit,
    })
}

fn cidrs(c: &mut Checker<'_, '_>, field: &str, list: &[String]) -> Vec<IpNet> {
    if list.is_empty() {
        c.error(
            field,
            "empty list matches no source; omit from to match any source",
        );
    }
    list.iter()
        .enumerate()
        .filter_map(|(j, s)| {
            tollgate_model::net::parse_cidr(s)
                .map_err(|why| c.error(format!("{field}[{j}]"), why))
                .ok()
        })
        .collect()
}

fn rate_limit(c: &mut Checker<'_, '_>, field: &str, raw: &L4RateLimit) -> Option<RateLimit> {
    let before = c.mark();
    let pps = bounded(
        c,
        &format!("{field}.packetsPerSecond"),
        raw.packets_per_second,
        1,
        MAX_PPS,
    );
    let burst = match raw.burst {
        Some(b) => bounded(c, &format!("{field}.burst"), b, 1, MAX_BURST),
        None => pps,
    };
    let per = raw.per.as_ref();
    let v4 = match per.and_then(|p| p.ipv4_prefix) {
        Some(len) => bounded(c, &format!("{field}.per.ipv4Prefix"), len, 0, 32),
        None => Some(u64::from(DEFAULT_IPV4_PREFIX)),
    };
    let v6 = match per.and_then(|p| p.ipv6_prefix) {
        Some(len) => bounded(c, &format!("{field}.per.ipv6Prefix"), len, 0, 128),
        None => Some(u64::from(DEFAULT_IPV6_PREFIX)),
    };
    if !c.clean_since(before) {
        return None;
    }
    Some(RateLimit {
        packets_per_second: pps?,
        burst: burst?,
        ipv4_prefix: u8::try_from(v4?).ok()?,
        ipv6_prefix: u8::try_from(v6?).ok()?,
    })
}

fn bounded(c: &mut Checker<'_, '_>, field: &str, value: i64, min: u64, max: u64) -> Option<u64> {
    match u64::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            c.error(field, format!("{value} is out of range {min}-{max}"));
            None
        }
    }
}

fn action(a: L4Action) -> Action {
    match a {
        L4Action::Allow => Action::Allow,
        L4Action::Deny => Action::Deny,
    }
}

fn protocol(p: L4Protocol) -> Protocol {
    match p {
        L4Protocol::Tcp => Protocol::Tcp,
        L4Protocol::Udp => Protocol::Udp,
        L4Protocol::Icmp => Protocol::Icmp,
        L4Protocol::Icmpv6 => Protocol::Icmpv6,
    }
}

/// Rule names are DNS labels (RFC 1123): they name counters and metrics.
fn check_rule_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty; every rule needs a name".into());
    }
    tollgate_model::names::rule_name(name, MAX_RULE_NAME)
}

/// `"22"` or `"8000-8999"`, ports in 1..=65535, a range not reversed.
fn parse_ports(s: &str) -> Result<PortRange, String> {
    let port = |p: &str| -> Result<u16, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "\"{s}\" is not a port or port range (like \"22\" or \"8000-8999\")"
            ));
        }
        match p.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            _ => Err(format!("port {p} in \"{s}\" is out of range 1-65535")),
        }
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!(
            "port range \"{s}\" is reversed; did you mean \"{last}-{first}\"?"
        ));
    }
    Ok(PortRange { first, last })
}

#[cfg(test)]
mod tests {
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
        assert_rule_error("{ name: r, action: allow, rateLimit: { packetsPerSecond: 1, per: { ipv4Prefix: 33 } } }", "spec.rules[0].rateLimit.per.ipv4Prefix", &["33 is out of range 0-32"]);
        assert_rule_error("{ name: r, action: allow, rateLimit: { packetsPerSecond: 1, per: { ipv6Prefix: 129 } } }", "spec.rules[0].rateLimit.per.ipv6Prefix", &["129 is out of range 0-128"]);
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
}
