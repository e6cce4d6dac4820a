//! A packet as the L4 policy sees it, and the decision about it. Shared by the reference
//! evaluator, the compiled-table lookup (what the kernel does), `tollgate explain` and the tests.
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// What the L4 policy looks at in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// The L4 selector.
    pub l4: L4,
}

/// The L4 part of a packet that rules can select on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum L4 {
    /// TCP or UDP destination port (0 is possible on the wire and matches no `ports`).
    Port(u16),
    /// ICMP or ICMPv6 type.
    IcmpType(u8),
    /// A protocol without ports or types (anything but TCP, UDP, ICMP, ICMPv6).
    Other,
    /// A non-first fragment: no L4 header, so no port or type.
    Fragment,
}

/// Pass or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Outcome {
    /// The packet goes on into the stack.
    Pass,
    /// The packet is dropped.
    Drop,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    /// A rule decided (deny, or allow).
    Policy,
    /// A rate limit was exceeded (only the data path can say this; the evaluators list limits).
    RateLimit,
    /// No rule matched; `defaultAction` decided.
    Default,
    /// Audit mode: it would have been dropped (by `rule`, or by the default when `rule` is None).
    Audit,
    /// A non-first fragment that no port-less rule matched: passed (its first fragment was judged).
    Fragment,
    /// No policy applies to the interface: passed.
    Unconfigured,
    /// A reply from a failsafe endpoint (the API server): passed before any rule (lock-out
    /// protection, see `l4::failsafe`).
    Failsafe,
    /// A packet no rule can judge (an IPv6 packet from an IPv4-mapped source, which never
    /// appears on the wire): dropped where a rule set is enforced, passed in audit mode.
    Malformed,
}

/// A rule by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RuleRef {
    /// Policy name.
    pub policy: String,
    /// Rule name.
    pub rule: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.policy, self.rule)
    }
}

/// The decision about a packet before rate limiting: the data path then drops it with reason
/// `RateLimit` if it exceeds any of `limits` (checked in order; the first exceeded is counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Pass or drop.
    pub outcome: Outcome,
    /// Why.
    pub reason: Reason,
    /// The deciding rule (None for Default, Fragment, Unconfigured, and an audited default).
    pub rule: Option<RuleRef>,
    /// Rate limits the packet must be within (allow rules with `rateLimit` that match it),
    /// ordered by the most specific matching source prefix first, then by policy and rule name.
    pub limits: Vec<RuleRef>,
}

impl Decision {
    /// The decision on an IPv6 packet from an IPv4-mapped source, which no rule judges:
    /// dropped, or passed where the interface's policies are in audit mode (`audit`).
    pub fn malformed(audit: bool) -> Decision {
        Decision {
            outcome: if audit { Outcome::Pass } else { Outcome::Drop },
            reason: Reason::Malformed,
            rule: None,
            limits: vec![],
        }
    }
}

/// Why a packet description could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read packet {input:?}: {reason}. Expected e.g. 'tcp 203.0.113.7:51000 -> 10.0.0.1:22', 'udp [2001:db8::1]:5353 -> [2001:db8::2]:53', 'icmp 192.0.2.1 -> 10.0.0.1 type 8', 'icmpv6 2001:db8::1 -> 2001:db8::2 type 128', 'proto 47 192.0.2.1 -> 10.0.0.1', or 'fragment tcp 192.0.2.1 -> 10.0.0.1'")]
pub struct PacketParseError {
    /// What was given.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

impl std::str::FromStr for Packet {
    type Err = PacketParseError;

    /// Reads `PROTO SRC[:PORT] -> DST[:PORT] [type N]`; IPv6 with ports in brackets.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Packet::parse_with_source_port(input).map(|(p, _)| p)
    }
}

impl Packet {
    /// Whether the source is an IPv4-mapped IPv6 address (`::ffff:0:0/96`, RFC 4291
    /// 2.5.5.2), which the data path drops unjudged (reason malformed).
    pub fn ipv4_mapped_source(&self) -> bool {
        matches!(self.src, IpAddr::V6(a) if a.to_ipv4_mapped().is_some())
    }

    /// As the `FromStr` implementation, with the source port when one is given (lock-out
    /// protection looks at the TCP source port).
    pub fn parse_with_source_port(input: &str) -> Result<(Packet, Option<u16>), PacketParseError> {
        let err = |reason: &str| PacketParseError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let mut words: Vec<&str> = input.split_whitespace().collect();
        let fragment = words.first() == Some(&"fragment");
        if fragment {
            words.remove(0);
        }
        let (protocol, rest) = match words.as_slice() {
            ["proto", n, rest @ ..] => (
                n.parse::<u8>()
                    .map_err(|_| err("protocol number must be 0-255"))?,
                rest,
            ),
            [p, rest @ ..] => (
                match p.to_ascii_lowercase().as_str() {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "icmpv6" => 58,
                    _ => return Err(err("protocol must be tcp, udp, icmp, icmpv6 or 'proto N'")),
                },
                rest,
            ),
            [] => return Err(err("empty")),
        };
        let (src, arrow, _dst, tail) = match rest {
            [src, arrow, dst, tail @ ..] => (*src, *arrow, *dst, tail),
            _ => return Err(err("expected 'SRC -> DST'")),
        };
        if arrow != "->" {
            return Err(err("expected '->' between source and destination"));
        }
        let (src, src_port) = split_addr(src).ok_or_else(|| err("bad source address"))?;
        let dst_port = split_addr(_dst)
            .ok_or_else(|| err("bad destination address"))?
            .1;
        let l4 = if fragment {
            L4::Fragment
        } else {
            match protocol {
                6 | 17 => L4::Port(
                    dst_port
                        .ok_or_else(|| err("tcp and udp need a destination port (DST:PORT)"))?,
                ),
                1 | 58 => match tail {
                    ["type", t] => {
                        L4::IcmpType(t.parse().map_err(|_| err("ICMP type must be 0-255"))?)
                    }
                    _ => return Err(err("icmp and icmpv6 need 'type N'")),
                },
                _ => L4::Other,
            }
        };
        Ok((Packet { src, protocol, l4 }, src_port))
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn split_addr(s: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse() {
        return Some((ip, None));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:")?;
        return Some((ip.parse().ok()?, Some(port.parse().ok()?)));
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some((
        ip.parse::<std::net::Ipv4Addr>().ok()?.into(),
        Some(port.parse().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_read_from_the_explain_syntax() {
        let p: Packet = "tcp 203.0.113.7:51000 -> 10.0.0.1:22".parse().unwrap();
        assert_eq!(
            p,
            Packet {
                src: "203.0.113.7".parse().unwrap(),
                protocol: 6,
                l4: L4::Port(22)
            }
        );
        let p: Packet = "udp [2001:db8::1]:5353 -> [2001:db8::2]:53"
            .parse()
            .unwrap();
        assert_eq!(p.l4, L4::Port(53));
        let p: Packet = "icmp 192.0.2.1 -> 10.0.0.1 type 8".parse().unwrap();
        assert_eq!(p.l4, L4::IcmpType(8));
        let p: Packet = "fragment udp 192.0.2.1 -> 10.0.0.1".parse().unwrap();
        assert_eq!((p.protocol, p.l4), (17, L4::Fragment));
        let p: Packet = "proto 47 192.0.2.1 -> 10.0.0.1".parse().unwrap();
        assert_eq!((p.protocol, p.l4), (47, L4::Other));
        assert!("tcp 1.2.3.4 -> 5.6.7.8".parse::<Packet>().is_err());
        assert!("sctp 1.2.3.4 -> 5.6.7.8".parse::<Packet>().is_err());
    }
}
