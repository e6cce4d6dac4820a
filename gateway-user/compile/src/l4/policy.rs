//! The validated L4 policy: what the YAML means, with every value checked and parsed.
//! Built from the model's CRD types by `compile::validate`; read by the compiler and by the
//! reference evaluator. Nothing here can be invalid.
use ipnet::IpNet;
use serde::Serialize;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Action {
    /// Admit the packet.
    Allow,
    /// Drop the packet.
    Deny,
}

/// Enforce or audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum Mode {
    /// Drop what the rules say to drop.
    #[default]
    Enforce,
    /// Count what would be dropped; drop nothing.
    Audit,
}

/// L4 protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1), i.e. ICMP over IPv4.
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
        }
    }
    /// The protocol for an IP protocol number, if it is one rules can name.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            1 => Some(Protocol::Icmp),
            58 => Some(Protocol::Icmpv6),
            _ => None,
        }
    }
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        }
    }
}

/// An inclusive range of destination ports (`first <= last`, both in 1..=65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

/// A per-source packet rate limit (validated: pps in 1..=MAX_PPS, burst >= 1, prefixes in range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RateLimit {
    /// Sustained packets per second per bucket.
    pub packets_per_second: u64,
    /// Packets admitted at once from a full bucket.
    pub burst: u64,
    /// IPv4 sources are grouped by this prefix length (0..=32).
    pub ipv4_prefix: u8,
    /// IPv6 sources are grouped by this prefix length (0..=128).
    pub ipv6_prefix: u8,
}

/// Highest `packetsPerSecond` accepted (the data path keeps nanosecond intervals).
pub const MAX_PPS: u64 = 100_000_000;
/// Highest `burst` accepted.
pub const MAX_BURST: u64 = 100_000_000;

/// One rule, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Unique within its policy.
    pub name: String,
    /// Allow or deny.
    pub action: Action,
    /// Source CIDRs (normalised, host bits zero); `None` = any source. Never `Some(empty)`.
    pub from: Option<Vec<IpNet>>,
    /// Protocol; `None` = any.
    pub protocol: Option<Protocol>,
    /// Destination port ranges; only with TCP/UDP. `None` = any port. Never `Some(empty)`.
    pub ports: Option<Vec<PortRange>>,
    /// ICMP/ICMPv6 types; only with ICMP/ICMPv6. `None` = any type. Never `Some(empty)`.
    pub icmp_types: Option<Vec<u8>>,
    /// Rate limit (allow rules only).
    pub rate_limit: Option<RateLimit>,
}

impl Rule {
    /// A rule named `name` that matches every packet (any source, protocol and port), without
    /// a rate limit: the starting point for rules built in code (tests, benchmarks, tools).
    pub fn new(name: impl Into<String>, action: Action) -> Self {
        Rule {
            name: name.into(),
            action,
            from: None,
            protocol: None,
            ports: None,
            icmp_types: None,
            rate_limit: None,
        }
    }
}

/// One `L4Policy`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `metadata.name`, unique in the revision.
    pub name: String,
    /// File it came from (relative to the source root), for error messages.
    pub file: String,
    /// Enforce or audit.
    pub mode: Mode,
    /// What happens when no rule matches.
    pub default_action: Action,
    /// Interfaces it applies to; `None` = all the agent's interfaces.
    pub interfaces: Option<Vec<String>>,
    /// Rules, in file order (order never changes the outcome).
    pub rules: Vec<Rule>,
}
