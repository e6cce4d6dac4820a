//! Lock-out protection: endpoints the node must keep reaching whatever the L4 policy says.
//!
//! L4 rules are stateless: they judge every packet arriving on the node, the replies of the
//! connections the node opened included. A `defaultAction: deny` policy (or a deny rule that
//! covers the API server's address) would drop the API server's replies and cut the agent and
//! the kubelet off the cluster. Calico's failsafe ports are the precedent: a few (address, TCP
//! port) endpoints are let through before the policy is consulted.
//!
//! How it is compiled: every rule set gets an exact-address source entry (/32 or /128) per
//! failsafe address, marked with the endpoint's TCP port. Its port table is the merged verdict
//! of the rules whose `from` contains the address (as for any nested prefix), so every packet
//! but the failsafe ones is judged exactly as without it. The data path passes a TCP packet
//! from that address whose TCP *source* port is the endpoint's port (a reply of the server)
//! before any rule; bans (the blocklist) are checked before and still apply.
//!
//! This is a separate layer in front of the policy: the reference evaluator
//! ([`super::reference`]) knows nothing of it and stays the judge of what the rules mean.
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::Serialize;
use tollgate_model::PolicyError;

/// The object name of the warnings about failsafe endpoints (they come from the node, not
/// from a policy object).
pub const FAILSAFE_OBJECT: &str = "(failsafe endpoints)";

/// An endpoint the node must keep reaching: the replies from `addr`, TCP source port `port`,
/// pass whatever the policy says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Failsafe {
    /// The server's address (replies come from it).
    pub addr: IpAddr,
    /// The server's TCP port (the replies' source port).
    pub port: u16,
    /// Where it comes from (`--failsafe`, `kubeconfig`, `EndpointSlice default/kubernetes`...),
    /// for `explain`, `validate` and `/status`.
    pub origin: String,
}

impl fmt::Display for Failsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tcp {} ({})",
            SocketAddr::new(self.addr, self.port),
            self.origin
        )
    }
}

/// Why a failsafe endpoint could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read failsafe endpoint {input:?}: expected ADDR:PORT with an IP address and a TCP port 1-65535, e.g. 192.0.2.10:6443 or [2001:db8::10]:6443")]
pub struct FailsafeParseError {
    /// What was given.
    pub input: String,
}

impl FromStr for Failsafe {
    type Err = FailsafeParseError;

    /// Reads `ADDR:PORT` (`[V6]:PORT`); the origin is `--failsafe`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FailsafeParseError { input: s.into() };
        let sa: SocketAddr = s.trim().parse().map_err(|_| err())?;
        if sa.port() == 0 {
            return Err(err());
        }
        Ok(Failsafe::new(sa.ip(), sa.port(), "--failsafe"))
    }
}

impl Failsafe {
    /// An endpoint. IPv4-mapped IPv6 addresses are stored as IPv4: the data path sees the
    /// packet's own family.
    pub fn new(addr: IpAddr, port: u16, origin: impl Into<String>) -> Self {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        Failsafe {
            addr,
            port,
            origin: origin.into(),
        }
    }
}

/// The endpoints in force, in the order given, and what was left out: the same endpoint
/// twice is kept once (silently: several origins often agree); a second port on an address
/// already protected is left out with a warning (a source entry carries one port), as is port 0.
pub fn in_force(list: &[Failsafe]) -> (Vec<Failsafe>, Vec<PolicyError>) {
    let mut kept: Vec<Failsafe> = Vec::new();
    let mut warnings = Vec::new();
    for f in list {
        if f.port == 0 {
            warnings.push(PolicyError::new(
                &f.origin,
                FAILSAFE_OBJECT,
                "",
                format!("failsafe endpoint {} has port 0: ignored", f.addr),
            ));
            continue;
        }
        match kept.iter().find(|k| k.addr == f.addr) {
            Some(k) if k.port == f.port => {}
            Some(k) => warnings.push(PolicyError::new(
                &f.origin,
                FAILSAFE_OBJECT,
                "",
                format!(
                    "failsafe endpoint {f} is not protected: {} is protected for TCP port {} already ({}), and one address gets one port",
                    f.addr, k.port, k.origin
                ),
            )),
            None => kept.push(f.clone()),
        }
    }
    (kept, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_as_addr_colon_port() {
        let f: Failsafe = "192.0.2.10:6443".parse().unwrap();
        assert_eq!(
            (f.addr, f.port, f.origin.as_str()),
            ("192.0.2.10".parse().unwrap(), 6443, "--failsafe")
        );
        let f: Failsafe = "[2001:db8::10]:443".parse().unwrap();
        assert_eq!(f.addr, "2001:db8::10".parse::<IpAddr>().unwrap());
        let f: Failsafe = "[::ffff:192.0.2.1]:443".parse().unwrap();
        assert_eq!(f.addr, "192.0.2.1".parse::<IpAddr>().unwrap());
        for bad in [
            "192.0.2.10",
            "192.0.2.10:0",
            "kubernetes:443",
            "192.0.2.10:70000",
            "",
        ] {
            assert!(bad.parse::<Failsafe>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_second_port_on_one_address_is_left_out_with_a_warning() {
        let a = Failsafe::new("192.0.2.10".parse().unwrap(), 6443, "kubeconfig");
        let same = Failsafe::new("192.0.2.10".parse().unwrap(), 6443, "EndpointSlice");
        let other_port = Failsafe::new("192.0.2.10".parse().unwrap(), 443, "--failsafe");
        let other = Failsafe::new("192.0.2.11".parse().unwrap(), 443, "--failsafe");
        let (kept, warnings) = in_force(&[a.clone(), same, other_port, other.clone()]);
        assert_eq!(kept, vec![a, other]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert_eq!(w.location.file, "--failsafe");
        assert!(
            w.message.contains("192.0.2.10:443")
                && w.message.contains("6443")
                && w.message.contains("kubeconfig"),
            "{}",
            w.message
        );
    }

    mod compiled {
        use super::super::Failsafe;
        use crate::l4::packet::{Outcome, Packet, Reason, L4};
        use crate::l4::policy::{Action, Mode, Policy, PortRange, Protocol, Rule};
        use crate::l4::{compile, compile_with_failsafe};
        use ipnet::{Ipv4Net, Ipv6Net};

        fn deny_all_but_ssh(rules: Vec<Rule>) -> Policy {
            let mut ssh = Rule::new("ssh", Action::Allow);
            ssh.protocol = Some(Protocol::Tcp);
            ssh.ports = Some(vec![PortRange {
                first: 22,
                last: 22,
            }]);
            let mut rules = rules;
            rules.push(ssh);
            Policy {
                name: "edge".into(),
                file: "edge.yaml".into(),
                mode: Mode::Enforce,
                default_action: Action::Deny,
                interfaces: None,
                rules,
            }
        }

        fn deny_from(name: &str, cidr: &str) -> Rule {
            let mut r = Rule::new(name, Action::Deny);
            r.from = Some(vec![cidr.parse().unwrap()]);
            r
        }

        fn tcp(src: &str, dport: u16) -> Packet {
            Packet {
                src: src.parse().unwrap(),
                protocol: 6,
                l4: L4::Port(dport),
            }
        }

        fn api() -> Vec<Failsafe> {
            vec![
                Failsafe::new("10.0.0.1".parse().unwrap(), 6443, "kubeconfig"),
                Failsafe::new("fd00::1".parse().unwrap(), 443, "--failsafe"),
            ]
        }

        #[test]
        fn every_set_gets_an_exact_entry_that_judges_other_packets_as_before() {
            // Two sets (eth0: edge; eth1: edge + other), a deny over the API server's /8.
            let mut edge = deny_all_but_ssh(vec![deny_from("no-10", "10.0.0.0/8")]);
            edge.interfaces = None;
            let mut other = deny_all_but_ssh(vec![]);
            other.name = "other".into();
            other.interfaces = Some(vec!["eth1".into()]);
            let ifaces = ["eth0".to_string(), "eth1".to_string()];
            let policies = [edge, other];
            let plain = compile(&policies, &ifaces).unwrap();
            let s = compile_with_failsafe(&policies, &ifaces, &api()).unwrap();
            assert_eq!(s.failsafe, api());
            assert_eq!(s.sets.len(), 2);
            for set in &s.sets {
                let host4 = Ipv4Net::new("10.0.0.1".parse().unwrap(), 32).unwrap();
                let host6 = Ipv6Net::new("fd00::1".parse().unwrap(), 128).unwrap();
                assert_eq!(set.v4[&host4].failsafe_port, Some(6443));
                assert_eq!(set.v6[&host6].failsafe_port, Some(443));
                // Only the exact entries carry the port.
                let marked = set
                    .v4
                    .values()
                    .filter(|t| t.failsafe_port.is_some())
                    .count();
                assert_eq!(marked, 1);
            }
            for iface in ["eth0", "eth1"] {
                // The server's replies pass, by lock-out protection.
                let d = s.decide_with_source_port(iface, &tcp("10.0.0.1", 40000), Some(6443));
                assert_eq!((d.outcome, d.reason), (Outcome::Pass, Reason::Failsafe));
                let d = s.decide_with_source_port(iface, &tcp("fd00::1", 40000), Some(443));
                assert_eq!((d.outcome, d.reason), (Outcome::Pass, Reason::Failsafe));
                // Everything else from it is judged as without the failsafe: the deny of
                // 10.0.0.0/8 still covers it (on eth0) or the default (on eth1).
                for (src, dport, sport) in [
                    ("10.0.0.1", 40000, Some(6444)),
                    ("10.0.0.1", 22, Some(50000)),
                    ("10.0.0.1", 6443, None),
                    ("10.0.0.2", 40000, Some(6443)),
                    ("fd00::1", 22, Some(444)),
                ] {
                    let p = tcp(src, dport);
                    assert_eq!(
                        s.decide_with_source_port(iface, &p, sport),
                        plain.decide(iface, &p),
                        "{iface} {p:?} from port {sport:?}"
                    );
                }
                // UDP from the server's port is not a TCP reply.
                let udp = Packet {
                    protocol: 17,
                    ..tcp("10.0.0.1", 40000)
                };
                assert_eq!(
                    s.decide_with_source_port(iface, &udp, Some(6443)).outcome,
                    Outcome::Drop
                );
            }
            assert_eq!(
                s.decide_with_source_port("eth0", &tcp("10.0.0.1", 40000), Some(6444))
                    .rule
                    .unwrap()
                    .rule,
                "no-10"
            );
        }

        #[test]
        fn a_rule_naming_the_exact_address_shares_its_entry_and_keeps_its_verdict() {
            let policies = [deny_all_but_ssh(vec![deny_from("no-api", "10.0.0.1/32")])];
            let ifaces = ["eth0".to_string()];
            let plain = compile(&policies, &ifaces).unwrap();
            let s = compile_with_failsafe(&policies, &ifaces, &api()).unwrap();
            let host = Ipv4Net::new("10.0.0.1".parse().unwrap(), 32).unwrap();
            let (with, without) = (&s.sets[0].v4[&host], &plain.sets[0].v4[&host]);
            assert_eq!(with.entries, without.entries);
            assert_eq!(with.failsafe_port, Some(6443));
            assert_eq!(s.sets[0].v4.len(), plain.sets[0].v4.len());
            let d = s.decide_with_source_port("eth0", &tcp("10.0.0.1", 40000), Some(6443));
            assert_eq!(d.reason, Reason::Failsafe);
            let d = s.decide_with_source_port("eth0", &tcp("10.0.0.1", 22), Some(1234));
            assert_eq!(
                (d.outcome, d.rule.unwrap().rule.as_str()),
                (Outcome::Drop, "no-api")
            );
        }

        #[test]
        fn the_first_port_of_an_address_wins_and_the_second_is_reported() {
            let docs = tollgate_model::Documents::inline(&[(
                "edge.yaml",
                "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata:\n  name: edge\nspec:\n  defaultAction: deny\n  rules: []\n",
            )]);
            let both = [
                Failsafe::new("10.0.0.1".parse().unwrap(), 6443, "kubeconfig"),
                Failsafe::new("10.0.0.1".parse().unwrap(), 443, "--failsafe"),
            ];
            let s = crate::snapshot::compile_documents_for_node(
                &mut Default::default(),
                &docs,
                Some(&["eth0".to_string()]),
                &both,
            )
            .unwrap();
            assert_eq!(s.l4.failsafe, both[..1].to_vec());
            assert_eq!(
                s.l4.failsafe_port("eth0", "10.0.0.1".parse().unwrap()),
                Some(6443)
            );
            assert!(
                s.warnings
                    .iter()
                    .any(|w| w.location.file == "--failsafe" && w.message.contains("6443")),
                "{:?}",
                s.warnings
            );
            let d =
                s.l4.decide_with_source_port("eth0", &tcp("10.0.0.1", 40000), Some(443));
            assert_eq!(d.outcome, Outcome::Drop);
        }
    }
}
