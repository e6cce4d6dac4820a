//! `L4Policy`: the node firewall, enforced in XDP. This one Rust type is both what the agent reads
//! from Git and the Kubernetes custom resource (the CRD in `manifests/crds/` is generated from it,
//! and its doc comments are what `kubectl explain l4policy.spec` prints).
//!
//! The raw types here are deliberately permissive (CIDRs and ports are strings, numbers are
//! `i64`): `compile::validate` checks every value and says exactly what is wrong and where,
//! which a serde type error could not.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The node firewall: allow/deny rules by source CIDR, protocol, destination port and ICMP type,
/// with optional per-source packet rate limits. Deny wins: a packet matched by any deny rule is
/// dropped, whatever allow rules also match; otherwise a matching allow rule admits it; otherwise
/// `defaultAction` decides. Rule order and file order never change the outcome.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
// clippy mistakes the repeated `type_ = "string"` of two print columns for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "L4Policy",
    plural = "l4policies",
    shortname = "l4p",
    doc = "An L4 node firewall policy, enforced by Tollgate in XDP (cluster-scoped).",
    category = "tollgate",
    derive = "PartialEq",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Default", type_ = "string", json_path = ".spec.defaultAction"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4PolicySpec {
    /// Nodes this policy applies to, by the labels of their Node object (Kubernetes mode, with
    /// the agent's `--node-name`; without it a policy with a nodeSelector is refused; ignored
    /// when the agent reads policy from Git or a directory). Omitted: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Network interfaces the policy is enforced on, e.g. `[eth0]`. Omitted: every interface the
    /// agent is configured to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1, max = 15)))]
    pub interfaces: Option<Vec<String>>,

    /// `enforce` drops what the rules say to drop; `audit` evaluates everything and counts what
    /// would be dropped, but drops nothing.
    #[serde(default)]
    pub mode: L4Mode,

    /// What happens to a packet that no rule matches: `allow` or `deny`. Must agree across all
    /// the policies that apply to one interface.
    #[serde(default = "default_action_allow")]
    pub default_action: L4Action,

    /// The rules. A packet matched by any deny rule is dropped; otherwise one matched by an allow
    /// rule is admitted (within that rule's rate limit); otherwise `defaultAction` decides.
    #[serde(default)]
    pub rules: Vec<L4Rule>,
}

fn default_action_allow() -> L4Action {
    L4Action::Allow
}

/// Enforce or audit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum L4Mode {
    /// Drop what the rules say to drop.
    #[default]
    Enforce,
    /// Count what would be dropped; drop nothing.
    Audit,
}

/// Allow or deny.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum L4Action {
    /// Admit the packet.
    Allow,
    /// Drop the packet.
    Deny,
}

// The CRD schema of an optional enum field takes the enum's description, not the field's, so
// this text is written for `kubectl explain l4policy.spec.rules.protocol`.
/// The protocol a rule matches: `TCP`, `UDP`, `ICMP` (ICMP over IPv4) or `ICMPv6`. Omitted: any
/// protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum L4Protocol {
    /// TCP (IP protocol 6).
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP (IP protocol 17).
    #[serde(rename = "UDP")]
    Udp,
    /// ICMP over IPv4 (IP protocol 1).
    #[serde(rename = "ICMP")]
    Icmp,
    /// ICMPv6 (IPv6 next header 58).
    #[serde(rename = "ICMPv6")]
    Icmpv6,
}

/// One rule. It matches a packet when every field it sets matches; a field left out matches
/// anything.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4Rule {
    /// Name of the rule, unique within the policy: lower-case letters, digits and `-`, at most 63
    /// characters (it names the rule's counters and appears in every error about it).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// `allow` or `deny`. Deny wins over allow, whatever the order.
    pub action: L4Action,

    /// Source CIDRs, IPv4 or IPv6 (`203.0.113.0/24`, `2001:db8::/32`; a bare address means that
    /// one host). The rule matches a packet from any of them. Omitted: any source.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub from: Option<Vec<String>>,

    /// `TCP`, `UDP`, `ICMP` (ICMP over IPv4) or `ICMPv6`. Omitted: any protocol.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub protocol: Option<L4Protocol>,

    /// Destination ports on the node, as strings: single ports (`"22"`) or inclusive ranges
    /// (`"8000-8999"`), each in 1-65535. Only with protocol `TCP` or `UDP`. Omitted: any port.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    #[schemars(inner(regex(pattern = r"^[0-9]+(-[0-9]+)?$")))]
    pub ports: Option<Vec<String>>,

    /// ICMP message types (0-255, e.g. 8 = echo request for ICMP, 128 for ICMPv6). Only with
    /// protocol `ICMP` or `ICMPv6`. Omitted: any type.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    #[schemars(inner(range(min = 0, max = 255)))]
    pub icmp_types: Option<Vec<i64>>,

    /// A per-source packet rate limit on the packets this rule admits (allow rules only). A
    /// packet must be within every limit of every allow rule it matches, or it is dropped and
    /// counted as rate-limited.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub rate_limit: Option<L4RateLimit>,
}

/// A token bucket per source address (or per source prefix, see `per`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4RateLimit {
    /// Sustained packets per second admitted from one source (1-100000000).
    #[schemars(range(min = 1, max = 100_000_000))]
    pub packets_per_second: i64,

    /// Packets admitted at once from a full bucket (1-100000000). Omitted: equal to
    /// `packetsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub burst: Option<i64>,

    /// How sources are grouped into buckets. Omitted: one bucket per IPv4 address and one per
    /// IPv6 /64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<L4RateLimitKey>,
}

/// Source prefix lengths that group source addresses into one bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4RateLimitKey {
    /// IPv4 sources share a bucket per prefix of this length (0-32). Omitted: 32, one bucket per
    /// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub ipv4_prefix: Option<i64>,

    /// IPv6 sources share a bucket per prefix of this length (0-128). Omitted: 64, so that an
    /// attacker cannot escape the limit by rotating addresses inside one /64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub ipv6_prefix: Option<i64>,
}

/// Default IPv4 bucket prefix length (one bucket per address).
pub const DEFAULT_IPV4_PREFIX: u8 = 32;
/// Default IPv6 bucket prefix length (one bucket per /64, the usual end-site allocation).
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A rule field that is there must say something: `from: ~` (or `from:` with its entries
/// commented out) would otherwise read as the field left out, "any source", and open what
/// the rule was meant to narrow. (The Kubernetes API server removes a null field before it
/// stores the object, so there the field is simply absent.)
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(
            "null (a key with no value) is not allowed here: leave the field out to match \
             anything, or give it a value",
        )),
    }
}
