//! Warnings: what a valid revision does that is almost never meant. They do not refuse the
//! revision (it may be exactly what the operator wants); `tollgate validate` prints them and the
//! agent logs them once per revision.
//!
//! One so far: a policy that drops ICMPv6 neighbour discovery (RFC 4861: router and neighbour
//! solicitations and advertisements, redirects). Without it IPv6 neighbours cannot find each
//! other's link-layer addresses, so every IPv6 exchange the policy allows (TCP to an allowed
//! port, say) times out. ARP, its IPv4 counterpart, is not IP and always passes, which is why
//! a default-deny policy that works over IPv4 fails over IPv6.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use super::packet::{Outcome, Packet, Reason, L4};
use super::policy::{Mode, Policy, Protocol};
use super::L4Snapshot;
use crate::snapshot::ANY_OTHER_INTERFACE;
use tollgate_model::PolicyError;

/// The ICMPv6 types of neighbour discovery (RFC 4861 section 4): router solicitation (133) and
/// advertisement (134), neighbour solicitation (135) and advertisement (136), redirect (137).
pub const NEIGHBOUR_DISCOVERY: [u8; 5] = [133, 134, 135, 136, 137];

/// The sources neighbour discovery comes from: a link-local address (RFC 4861 section 4), and
/// the unspecified address, which router solicitations and duplicate address detection use
/// before an address is configured (RFC 4862 section 5.4.2).
fn sources(icmp_type: u8) -> Vec<IpAddr> {
    let link_local = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    match icmp_type {
        133 | 135 => vec![link_local, IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
        _ => vec![link_local],
    }
}

/// What drops some neighbour discovery: the default action of a policy (`rule: None`), or one
/// of its deny rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Culprit {
    policy: String,
    rule: Option<String>,
}

/// One warning per policy (or deny rule) that makes `l4` drop ICMPv6 neighbour discovery on an
/// interface in enforce mode, naming the interfaces and the types it drops.
pub fn neighbour_discovery(policies: &[Policy], l4: &L4Snapshot) -> Vec<PolicyError> {
    let mut found: BTreeMap<Culprit, (BTreeSet<u8>, BTreeSet<&str>)> = BTreeMap::new();
    for interface in l4.interfaces.keys() {
        for icmp_type in NEIGHBOUR_DISCOVERY {
            for src in sources(icmp_type) {
                let packet = Packet {
                    src,
                    protocol: Protocol::Icmpv6.number(),
                    l4: L4::IcmpType(icmp_type),
                };
                let decision = l4.decide(interface, &packet);
                if decision.outcome != Outcome::Drop {
                    continue;
                }
                let culprits: Vec<Culprit> = match (decision.reason, decision.rule) {
                    (Reason::Policy, Some(rule)) => vec![Culprit {
                        policy: rule.policy,
                        rule: Some(rule.rule),
                    }],
                    // The default of every enforcing policy that applies here (they agree).
                    _ => policies
                        .iter()
                        .filter(|p| p.mode == Mode::Enforce)
                        .filter(|p| {
                            p.interfaces
                                .as_ref()
                                .is_none_or(|list| list.iter().any(|i| i == interface))
                        })
                        .map(|p| Culprit {
                            policy: p.name.clone(),
                            rule: None,
                        })
                        .collect(),
                };
                for c in culprits {
                    let entry = found.entry(c).or_default();
                    entry.0.insert(icmp_type);
                    entry.1.insert(interface);
                }
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(culprit, (types, interfaces))| {
            let policy = policies.iter().find(|p| p.name == culprit.policy)?;
            let types = types
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let on = interfaces
                .iter()
                .map(|i| match *i {
                    ANY_OTHER_INTERFACE => "any interface no policy names".to_owned(),
                    name => name.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let consequence = "IPv6 neighbours cannot resolve each other's addresses, so IPv6 \
                               traffic the rules allow times out";
            let (field, message) = match &culprit.rule {
                None => (
                    "spec.defaultAction".to_owned(),
                    format!(
                        "deny drops ICMPv6 neighbour discovery (types {types}) on {on}: \
                         {consequence}; allow it with a rule such as {{ name: ipv6-nd, action: \
                         allow, protocol: ICMPv6, icmpTypes: [133, 134, 135, 136, 137] }}"
                    ),
                ),
                Some(rule) => {
                    let index = policy.rules.iter().position(|r| &r.name == rule)?;
                    (
                        format!("spec.rules[{index}]"),
                        format!(
                            "the deny rule \"{rule}\" drops ICMPv6 neighbour discovery (types \
                             {types}) on {on}: {consequence}; narrow it (its protocol, or its \
                             sources) to leave ICMPv6 types 133-137 alone"
                        ),
                    )
                }
            };
            Some(PolicyError::new(
                &policy.file,
                format!("L4Policy/{}", policy.name),
                field,
                message,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::snapshot::compile_documents;
    use tollgate_model::Documents;

    fn warnings(rules: &str, default: &str, interfaces: Option<&[String]>) -> Vec<String> {
        let yaml = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: {{ name: edge }}\nspec:\n  defaultAction: {default}\n  rules:\n{rules}"
        );
        let docs = Documents::inline(&[("edge.yaml", &yaml)]);
        compile_documents(&docs, interfaces)
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const WEB: &str = "    - { name: web, action: allow, protocol: TCP, ports: [\"8080\"] }\n";
    const ND: &str =
        "    - { name: nd, action: allow, protocol: ICMPv6, icmpTypes: [133, 134, 135, 136, 137] }\n";

    #[test]
    fn a_default_deny_without_neighbour_discovery_is_warned_about() {
        let w = warnings(WEB, "deny", Some(&["eth0".to_owned()]));
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with(
                "edge.yaml: L4Policy/edge: spec.defaultAction: deny drops ICMPv6 neighbour \
                 discovery (types 133, 134, 135, 136, 137) on eth0: "
            ),
            "{w:#?}"
        );
        // Validation (every interface a node could have) names "any other interface".
        let w = warnings(WEB, "deny", None);
        assert!(
            w[0].contains(" on any interface no policy names: "),
            "{w:#?}"
        );
    }

    #[test]
    fn allowing_neighbour_discovery_or_a_default_allow_is_not_warned_about() {
        assert!(warnings(&format!("{WEB}{ND}"), "deny", None).is_empty());
        assert!(warnings(WEB, "allow", None).is_empty());
        // Any ICMPv6 from link-local addresses is enough too.
        let link_local =
            "    - { name: ll, action: allow, from: [\"fe80::/10\", \"::/128\"], protocol: ICMPv6 }\n";
        assert!(warnings(&format!("{WEB}{link_local}"), "deny", None).is_empty());
        // Audit mode drops nothing.
        let yaml = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: a }\nspec: { mode: audit, defaultAction: deny, rules: [] }\n";
        let docs = Documents::inline(&[("a.yaml", yaml)]);
        assert!(compile_documents(&docs, None).unwrap().warnings.is_empty());
    }

    #[test]
    fn partial_neighbour_discovery_and_deny_rules_are_named() {
        // Neighbour solicitation and advertisement only: no router discovery, no redirects, and
        // duplicate address detection (from ::) is not allowed either.
        let ns_na = "    - { name: nd, action: allow, from: [\"fe80::/10\"], protocol: ICMPv6, icmpTypes: [135, 136] }\n";
        let w = warnings(&format!("{WEB}{ns_na}"), "deny", Some(&["eth0".to_owned()]));
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("(types 133, 134, 135, 137)"), "{w:#?}");
        let deny = "    - { name: no-icmpv6, action: deny, protocol: ICMPv6 }\n";
        let w = warnings(&format!("{ND}{deny}"), "allow", Some(&["eth0".to_owned()]));
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with(
                "edge.yaml: L4Policy/edge: spec.rules[1]: the deny rule \"no-icmpv6\" drops"
            ),
            "{w:#?}"
        );
    }
}
