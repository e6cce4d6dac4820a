//! The L4 compiler: validated `Policy` values -> [`L4Snapshot`], the tables the kernel reads.
//!
//! # How a packet is judged (and why the tables look like this)
//!
//! The data path does at most three lookups, none of which loops over rules:
//!
//! 1. `IFACES[(gen, ifindex)]` -> the rule set of the interface (its scope, default, mode).
//! 2. The source trie of the packet's family, keyed by `(scope, source address)`: the longest
//!    source prefix named by any rule of the set ("source entry"). Its port table holds the
//!    merged verdicts of every rule whose `from` contains that prefix — a rule with `from:
//!    10.0.0.0/8` is also present in the entry of `10.1.0.0/16` — so the longest match alone is
//!    enough.
//! 3. The port table (an LPM trie over `(entry, protocol, port)`) of that source entry, and of
//!    the set's *wildcard* entry, which holds the rules that name no source. Keeping those apart
//!    means that adding or changing a rule without `from` rewrites only the wildcard entries, not
//!    the entries of every source prefix.
//!
//! Port ranges become prefixes over the 16-bit port field (a range is at most 30 prefixes);
//! overlapping ranges are first cut into elementary intervals, each with the merged verdict of
//! the rules covering it, so the trie's entries never overlap within a protocol.
//!
//! The two verdicts are combined exactly as the reference evaluator specifies: a deny from
//! either side drops (the source side first, because its rules are more specific); otherwise an
//! allow passes, subject to the rate limits of both sides (source side first); otherwise the
//! default decides (non-first fragments pass instead).
//!
//! In front of all this, lock-out protection ([`super::failsafe`]): an exact-address entry
//! may carry a failsafe TCP port, and the replies from it pass before any rule.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::failsafe::Failsafe;
use super::packet::{Decision, Outcome, Packet, Reason, RuleRef, L4};
use super::policy::{Action, Mode, Policy, Protocol, RateLimit, Rule};
use gateway_common::{
    MAX_LIMITS, MAX_PORT_ENTRIES, MAX_RULE_IDS, MAX_SOURCE_ENTRIES, PORT_ICMP_BASE,
};
use tollgate_model::{PolicyError, PolicyErrors};

/// Index of a rule in [`L4Snapshot::rules`].
pub type RuleIdx = usize;

/// Rule name used for the counters of a rule set's default action.
pub const DEFAULT_RULE_NAME: &str = "(default)";

/// What a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RuleKind {
    /// An allow rule.
    Allow,
    /// A deny rule.
    Deny,
    /// The default action of rule set `set`.
    Default {
        /// Index in [`L4Snapshot::sets`].
        set: usize,
    },
}

/// A rule (or a set's default) as the data path counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// Policy name (for a default: the set's policy names joined by `+`).
    pub policy: String,
    /// Rule name (for a default: [`DEFAULT_RULE_NAME`]).
    pub rule: String,
    /// File the rule came from (empty for a default).
    pub file: String,
    /// Allow, deny or default.
    pub kind: RuleKind,
    /// Rate limit of an allow rule.
    pub rate_limit: Option<RateLimit>,
}

impl RuleInfo {
    /// The rule by name.
    pub fn rule_ref(&self) -> RuleRef {
        RuleRef {
            policy: self.policy.clone(),
            rule: self.rule.clone(),
        }
    }
}

/// The merged verdict of the rules of one source entry for one protocol/port range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SymVerdict {
    /// First matching deny rule.
    pub deny: Option<RuleIdx>,
    /// First matching allow rule.
    pub allow: Option<RuleIdx>,
    /// Matching allow rules with rate limits, in attribution order (empty when `deny`).
    pub limits: Vec<RuleIdx>,
}

impl SymVerdict {
    fn is_empty(&self) -> bool {
        self.deny.is_none() && self.allow.is_none()
    }
}

/// One entry of a port table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PortEntry {
    /// `None`: any protocol (the trie prefix covers the entry id only).
    pub proto: Option<u8>,
    /// Prefix over the 16-bit port field, `(value, length 0..=16)`; always `Some` when `proto`
    /// is, `None` otherwise.
    pub port_prefix: Option<(u16, u8)>,
    /// The verdict.
    pub verdict: SymVerdict,
}

/// The port table of one source entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PortTable {
    /// Entries; no two overlap at the same prefix length.
    pub entries: Vec<PortEntry>,
    /// Lock-out protection (exact-address entries only): TCP packets whose source port is
    /// this pass before any rule.
    pub failsafe_port: Option<u16>,
}

/// The tables of one rule set: the policies that apply to a group of interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSet {
    /// Canonical name: the policy names, sorted, joined by `+`.
    pub key: String,
    /// The policies.
    pub policies: Vec<String>,
    /// Agreed default action.
    pub default_action: Action,
    /// Agreed mode.
    pub mode: Mode,
    /// The rule id counting the default action.
    pub default_rule: RuleIdx,
    /// IPv4 source entries.
    pub v4: BTreeMap<Ipv4Net, PortTable>,
    /// IPv6 source entries.
    pub v6: BTreeMap<Ipv6Net, PortTable>,
    /// Rules without `from`.
    pub wildcard: PortTable,
}

/// The compiled L4 policy of one revision: everything the maps must hold, by name (the
/// data plane gives rules, sets and entries stable numeric ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L4Snapshot {
    /// Rules sorted by (policy, rule), then one default per set.
    pub rules: Vec<RuleInfo>,
    /// Rule sets.
    pub sets: Vec<RuleSet>,
    /// Interface name -> index in `sets`. Interfaces with no applicable policy are absent.
    pub interfaces: BTreeMap<String, usize>,
    /// The failsafe endpoints in force (lock-out protection), in every set.
    pub failsafe: Vec<Failsafe>,
}

/// The port-field value the data path uses for a packet.
pub fn port_field(l4: L4) -> u16 {
    match l4 {
        L4::Port(p) => p,
        L4::IcmpType(t) => PORT_ICMP_BASE + u16::from(t),
        L4::Other | L4::Fragment => 0,
    }
}

impl PortTable {
    /// The verdict for a protocol and port field, by longest prefix (as the kernel's trie).
    pub fn lookup(&self, proto: u8, port: u16) -> Option<&SymVerdict> {
        let mut best: Option<(u32, &SymVerdict)> = None;
        for e in &self.entries {
            let len = match (e.proto, e.port_prefix) {
                (None, _) => 0,
                (Some(p), Some((value, len)))
                    if p == proto && prefix_contains(value, len, port) =>
                {
                    8 + u32::from(len)
                }
                _ => continue,
            };
            if best.is_none_or(|(l, _)| len > l) {
                best = Some((len, &e.verdict));
            }
        }
        best.map(|(_, v)| v)
    }
}

fn prefix_contains(value: u16, len: u8, port: u16) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u16::MAX << (16 - u32::from(len));
    (port & mask) == (value & mask)
}

impl L4Snapshot {
    /// Decision for `packet` arriving on `interface`, read from the tables exactly as the data
    /// path reads them (before rate limiting).
    /// The source port is not known here: lock-out protection does not apply (see
    /// [`L4Snapshot::decide_with_source_port`]).
    pub fn decide(&self, interface: &str, packet: &Packet) -> Decision {
        self.decide_with_source_port(interface, packet, None)
    }

    /// The failsafe port of the exact-address entry of `src` in the set of `interface`, if
    /// lock-out protection covers it there.
    pub fn failsafe_port(&self, interface: &str, src: IpAddr) -> Option<u16> {
        let set = &self.sets[*self.interfaces.get(interface)?];
        match src {
            IpAddr::V4(a) => set.v4.get(&Ipv4Net::from(a))?.failsafe_port,
            IpAddr::V6(a) => set.v6.get(&Ipv6Net::from(a))?.failsafe_port,
        }
    }

    /// As [`L4Snapshot::decide`], for a packet whose TCP source port is `source_port` (when
    /// known): the replies of a failsafe endpoint pass before any rule, as in the data path.
    pub fn decide_with_source_port(
        &self,
        interface: &str,
        packet: &Packet,
        source_port: Option<u16>,
    ) -> Decision {
        if let (6, L4::Port(_), Some(sport)) = (packet.protocol, packet.l4, source_port) {
            if self.failsafe_port(interface, packet.src) == Some(sport) {
                return Decision {
                    outcome: Outcome::Pass,
                    reason: Reason::Failsafe,
                    rule: None,
                    limits: vec![],
                };
            }
        }
        let Some(&set_idx) = self.interfaces.get(interface) else {
            return Decision {
                outcome: Outcome::Pass,
                reason: Reason::Unconfigured,
                rule: None,
                limits: vec![],
            };
        };
        let set = &self.sets[set_idx];
        if packet.ipv4_mapped_source() {
            return Decision::malformed(set.mode == Mode::Audit);
        }
        let entry = match packet.src {
            IpAddr::V4(a) => set
                .v4
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, t)| t),
            IpAddr::V6(a) => set
                .v6
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, t)| t),
        };
        let port = port_field(packet.l4);
        let v1 = entry.and_then(|t| t.lookup(packet.protocol, port));
        let v2 = set.wildcard.lookup(packet.protocol, port);
        let rule = |i: RuleIdx| Some(self.rules[i].rule_ref());
        let mut decision = if let Some(d) = v1.and_then(|v| v.deny).or(v2.and_then(|v| v.deny)) {
            Decision {
                outcome: Outcome::Drop,
                reason: Reason::Policy,
                rule: rule(d),
                limits: vec![],
            }
        } else if let Some(a) = v1.and_then(|v| v.allow).or(v2.and_then(|v| v.allow)) {
            let limits = v1
                .into_iter()
                .chain(v2)
                .flat_map(|v| v.limits.iter())
                .map(|&i| self.rules[i].rule_ref())
                .collect();
            Decision {
                outcome: Outcome::Pass,
                reason: Reason::Policy,
                rule: rule(a),
                limits,
            }
        } else if packet.l4 == L4::Fragment {
            Decision {
                outcome: Outcome::Pass,
                reason: Reason::Fragment,
                rule: None,
                limits: vec![],
            }
        } else {
            let outcome = match set.default_action {
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
        if set.mode == Mode::Audit && decision.outcome == Outcome::Drop {
            decision.outcome = Outcome::Pass;
            decision.reason = Reason::Audit;
        }
        decision
    }

    /// Number of source-trie entries (both families, all sets).
    pub fn source_entries(&self) -> usize {
        self.sets.iter().map(|s| s.v4.len() + s.v6.len()).sum()
    }

    /// Number of port-table entries (all sets).
    pub fn port_entries(&self) -> usize {
        self.sets
            .iter()
            .map(|s| {
                s.wildcard.entries.len()
                    + s.v4
                        .values()
                        .chain(s.v6.values())
                        .map(|t| t.entries.len())
                        .sum::<usize>()
            })
            .sum()
    }
}

/// A rule of a set, with where it came from.
struct SetRule<'a> {
    idx: RuleIdx,
    rule: &'a Rule,
}

/// Compiles the policies for an agent whose interfaces are `interfaces`. Every problem of the
/// revision is reported at once.
pub fn compile(policies: &[Policy], interfaces: &[String]) -> Result<L4Snapshot, PolicyErrors> {
    compile_with_failsafe(policies, interfaces, &[])
}

/// As [`compile`], with lock-out protection for `failsafe` (see [`super::failsafe`]; the list
/// is expected from [`super::failsafe::in_force`]: of two endpoints on one address, the first
/// is kept).
pub fn compile_with_failsafe(
    policies: &[Policy],
    interfaces: &[String],
    failsafe: &[Failsafe],
) -> Result<L4Snapshot, PolicyErrors> {
    let mut failsafe_in_force: Vec<Failsafe> = Vec::new();
    for f in failsafe {
        if f.port != 0 && !failsafe_in_force.iter().any(|k| k.addr == f.addr) {
            failsafe_in_force.push(f.clone());
        }
    }
    let mut errors = Vec::new();

    // Rules sorted by (policy, rule): their index order is the name order used for attribution.
    let mut named: Vec<(&Policy, &Rule)> = policies
        .iter()
        .flat_map(|p| p.rules.iter().map(move |r| (p, r)))
        .collect();
    named.sort_by(|a, b| (&a.0.name, &a.1.name).cmp(&(&b.0.name, &b.1.name)));
    let mut rules: Vec<RuleInfo> = named
        .iter()
        .map(|(p, r)| RuleInfo {
            policy: p.name.clone(),
            rule: r.name.clone(),
            file: p.file.clone(),
            kind: match r.action {
                Action::Allow => RuleKind::Allow,
                Action::Deny => RuleKind::Deny,
            },
            rate_limit: r.rate_limit,
        })
        .collect();
    let index_of: HashMap<(&str, &str), RuleIdx> = named
        .iter()
        .enumerate()
        .map(|(i, (p, r))| ((p.name.as_str(), r.name.as_str()), i))
        .collect();

    // Group interfaces by the exact list of policies that apply to them.
    let mut groups: BTreeMap<Vec<usize>, Vec<&String>> = BTreeMap::new();
    for iface in interfaces {
        let applying: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.interfaces.as_ref().is_none_or(|l| l.contains(iface)))
            .map(|(i, _)| i)
            .collect();
        if !applying.is_empty() {
            groups.entry(applying).or_default().push(iface);
        }
    }

    let mut sets = Vec::new();
    let mut iface_sets = BTreeMap::new();
    for (applying, ifaces) in groups {
        let set_policies: Vec<&Policy> = applying.iter().map(|&i| &policies[i]).collect();
        check_agreement(&set_policies, &ifaces, &mut errors);
        let first = set_policies[0];
        let mut names: Vec<String> = set_policies.iter().map(|p| p.name.clone()).collect();
        names.sort();
        let key = names.join("+");
        let default_rule = rules.len();
        rules.push(RuleInfo {
            policy: key.clone(),
            rule: DEFAULT_RULE_NAME.to_owned(),
            file: String::new(),
            kind: RuleKind::Default { set: sets.len() },
            rate_limit: None,
        });
        let set_rules: Vec<SetRule> = set_policies
            .iter()
            .flat_map(|p| p.rules.iter().map(move |r| (p, r)))
            .map(|(p, r)| SetRule {
                idx: index_of[&(p.name.as_str(), r.name.as_str())],
                rule: r,
            })
            .collect();
        let set = build_set(
            key,
            names,
            first.default_action,
            first.mode,
            default_rule,
            &set_rules,
            &rules,
            &failsafe_in_force,
            &mut errors,
        );
        for iface in ifaces {
            iface_sets.insert(iface.clone(), sets.len());
        }
        sets.push(set);
    }

    let snapshot = L4Snapshot {
        rules,
        sets,
        interfaces: iface_sets,
        failsafe: failsafe_in_force,
    };
    check_capacity(&snapshot, &mut errors);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        errors.sort_by(|a, b| a.location.cmp(&b.location));
        errors.dedup();
        Err(PolicyErrors(errors))
    }
}

/// `defaultAction` and `mode` must agree across the policies of one interface.
fn check_agreement(set: &[&Policy], ifaces: &[&String], errors: &mut Vec<PolicyError>) {
    let first = set[0];
    let on = ifaces
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    for p in &set[1..] {
        if p.default_action != first.default_action {
            errors.push(PolicyError::new(
                &p.file,
                format!("L4Policy/{}", p.name),
                "spec.defaultAction",
                format!(
                    "defaultAction {:?} disagrees with {:?} of L4Policy/{} ({}); policies that apply to the same interface ({on}) must agree",
                    p.default_action, first.default_action, first.name, first.file
                ),
            ));
        }
        if p.mode != first.mode {
            errors.push(PolicyError::new(
                &p.file,
                format!("L4Policy/{}", p.name),
                "spec.mode",
                format!(
                    "mode {:?} disagrees with {:?} of L4Policy/{} ({}); policies that apply to the same interface ({on}) must agree",
                    p.mode, first.mode, first.name, first.file
                ),
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_set(
    key: String,
    policies: Vec<String>,
    default_action: Action,
    mode: Mode,
    default_rule: RuleIdx,
    set_rules: &[SetRule],
    infos: &[RuleInfo],
    failsafe: &[Failsafe],
    errors: &mut Vec<PolicyError>,
) -> RuleSet {
    // Source CIDR -> the rules naming it.
    let mut by_cidr: HashMap<IpNet, Vec<usize>> = HashMap::new();
    let mut wildcard_rules = Vec::new();
    for (i, sr) in set_rules.iter().enumerate() {
        match &sr.rule.from {
            None => wildcard_rules.push((i, -1)),
            Some(from) => {
                for net in from {
                    let list = by_cidr.entry(*net).or_default();
                    if !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
    }
    let wildcard = port_table(set_rules, &wildcard_rules);

    let mut v4 = BTreeMap::new();
    let mut v6 = BTreeMap::new();
    let mut cidrs: BTreeSet<IpNet> = by_cidr.keys().copied().collect();
    // Each failsafe address gets an exact-address entry (merged with a rule's entry of that
    // very prefix). The ancestor walk below gives it the rules of every prefix containing it,
    // so it judges every other packet as the entry it shadows would.
    cidrs.extend(failsafe.iter().map(|f| IpNet::from(f.addr)));
    for net in cidrs {
        // Every rule with a CIDR containing `net` (walk `net`'s ancestors), with the most
        // specific such CIDR as its specificity.
        let mut members: Vec<(usize, i32)> = Vec::new();
        for len in (0..=net.prefix_len()).rev() {
            let ancestor = truncate(net, len);
            if let Some(list) = by_cidr.get(&ancestor) {
                for &i in list {
                    if !members.iter().any(|(j, _)| *j == i) {
                        members.push((i, i32::from(len)));
                    }
                }
            }
        }
        let mut table = port_table(set_rules, &members);
        table.failsafe_port = failsafe
            .iter()
            .find(|f| net.prefix_len() == net.max_prefix_len() && net.addr() == f.addr)
            .map(|f| f.port);
        match net {
            IpNet::V4(n) => {
                v4.insert(n, table);
            }
            IpNet::V6(n) => {
                v6.insert(n, table);
            }
        }
    }
    let set = RuleSet {
        key,
        policies,
        default_action,
        mode,
        default_rule,
        v4,
        v6,
        wildcard,
    };
    check_limits(&set, infos, errors);
    set
}

fn truncate(net: IpNet, len: u8) -> IpNet {
    match net {
        IpNet::V4(n) => IpNet::V4(
            Ipv4Net::new(n.network(), len)
                .expect("len <= own prefix")
                .trunc(),
        ),
        IpNet::V6(n) => IpNet::V6(
            Ipv6Net::new(n.network(), len)
                .expect("len <= own prefix")
                .trunc(),
        ),
    }
}

/// The 16-bit port-field ranges a rule covers for `proto` (empty: the rule does not match it).
fn rule_ranges(rule: &Rule, proto: u8) -> Vec<(u16, u16)> {
    match rule.protocol {
        None => vec![(0, u16::MAX)],
        Some(p) if p.number() != proto => vec![],
        Some(Protocol::Tcp | Protocol::Udp) => match &rule.ports {
            None => vec![(0, u16::MAX)],
            Some(ports) => ports.iter().map(|r| (r.first, r.last)).collect(),
        },
        Some(Protocol::Icmp | Protocol::Icmpv6) => match &rule.icmp_types {
            None => vec![(0, u16::MAX)],
            Some(types) => types
                .iter()
                .map(|&t| (PORT_ICMP_BASE + u16::from(t), PORT_ICMP_BASE + u16::from(t)))
                .collect(),
        },
    }
}

/// `ranges` sorted, with those that overlap or touch made one.
fn merged(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Builds the port table for the rules `members` (indexes into `set_rules`, with specificity).
fn port_table(set_rules: &[SetRule], members: &[(usize, i32)]) -> PortTable {
    // Attribution order: most specific source first, then (policy, rule) name = rule index.
    let mut ordered: Vec<(i32, RuleIdx, &Rule)> = members
        .iter()
        .map(|&(i, s)| (s, set_rules[i].idx, set_rules[i].rule))
        .collect();
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

    let verdict_of = |covering: &mut dyn Iterator<Item = (RuleIdx, &Rule)>| {
        let mut v = SymVerdict::default();
        for (idx, rule) in covering {
            match rule.action {
                Action::Deny => {
                    v.deny.get_or_insert(idx);
                }
                Action::Allow => {
                    v.allow.get_or_insert(idx);
                    if rule.rate_limit.is_some() {
                        v.limits.push(idx);
                    }
                }
            }
        }
        if v.deny.is_some() {
            v.limits.clear();
        }
        v
    };

    let mut entries = Vec::new();
    // Rules without a protocol: the any-protocol entry (prefix 32).
    let any = verdict_of(
        &mut ordered
            .iter()
            .filter(|(_, _, r)| r.protocol.is_none())
            .map(|(_, i, r)| (*i, *r)),
    );
    if !any.is_empty() {
        entries.push(PortEntry {
            proto: None,
            port_prefix: None,
            verdict: any.clone(),
        });
    }
    let protos: BTreeSet<u8> = ordered
        .iter()
        .filter_map(|(_, _, r)| r.protocol.map(Protocol::number))
        .collect();
    for proto in protos {
        // Elementary intervals between every range boundary. Each rule's ranges merged and
        // sorted, so that whether it covers an interval is one binary search: a rule with
        // 30,000 ports checked range by range made 65,536 intervals cost seconds.
        let ranges: Vec<Vec<(u16, u16)>> = ordered
            .iter()
            .map(|(_, _, r)| merged(rule_ranges(r, proto)))
            .collect();
        let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65536]);
        for (a, b) in ranges.iter().flatten() {
            cuts.insert(u32::from(*a));
            cuts.insert(u32::from(*b) + 1);
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut intervals: Vec<(u32, u32, SymVerdict)> = Vec::new();
        for w in cuts.windows(2) {
            let (lo, hi) = (w[0], w[1] - 1);
            let v = verdict_of(
                &mut ordered
                    .iter()
                    .zip(&ranges)
                    .filter(|(_, rs)| {
                        // The last range starting at or before `lo`: an elementary interval
                        // is inside one range or outside them all.
                        let i = rs.partition_point(|&(a, _)| u32::from(a) <= lo);
                        i > 0 && hi <= u32::from(rs[i - 1].1)
                    })
                    .map(|((_, i, r), _)| (*i, *r)),
            );
            match intervals.last_mut() {
                Some(last) if last.2 == v && last.1 + 1 == lo => last.1 = hi,
                _ => intervals.push((lo, hi, v)),
            }
        }
        // Intervals that say the same as the any-protocol entry need no entry of their own:
        // the trie falls back to it.
        for (lo, hi, v) in intervals {
            if v == any {
                continue;
            }
            for (value, len) in range_prefixes(lo, hi) {
                entries.push(PortEntry {
                    proto: Some(proto),
                    port_prefix: Some((value, len)),
                    verdict: v.clone(),
                });
            }
        }
    }
    PortTable {
        entries,
        failsafe_port: None,
    }
}

/// The minimal list of prefixes `(value, len)` over 16 bits covering `lo..=hi`.
pub fn range_prefixes(lo: u32, hi: u32) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let mut start = lo;
    while start <= hi {
        // Largest aligned block starting at `start` that fits.
        let mut size = if start == 0 {
            1u32 << 16
        } else {
            1u32 << start.trailing_zeros().min(16)
        };
        while start + size - 1 > hi {
            size >>= 1;
        }
        let len = 16 - size.trailing_zeros();
        out.push((start as u16, len as u8));
        start += size;
    }
    out
}

/// A packet can be subject to at most `MAX_LIMITS` rate limits: check every combination of a
/// source entry's verdicts with the wildcard's, per protocol and port interval.
fn check_limits(set: &RuleSet, infos: &[RuleInfo], errors: &mut Vec<PolicyError>) {
    let empty = PortTable::default();
    let tables = std::iter::once(&empty)
        .chain(set.v4.values())
        .chain(set.v6.values());
    let mut reported: BTreeSet<Vec<RuleIdx>> = BTreeSet::new();
    let limit_rules = |t: &PortTable| -> BTreeSet<RuleIdx> {
        t.entries
            .iter()
            .flat_map(|e| e.verdict.limits.iter().copied())
            .collect()
    };
    let wildcard_limits = limit_rules(&set.wildcard);
    let wildcard = PortIndex::new(&set.wildcard);
    for table in tables {
        // A packet's limits are some of the limited rules of the two tables: with no more
        // of those than the data path checks, no point can have too many (most rule sets;
        // the walk below looks a verdict up at every point, up to 131,072 of them).
        let mut both = limit_rules(table);
        both.extend(wildcard_limits.iter().copied());
        if both.len() <= MAX_LIMITS {
            continue;
        }
        let index = PortIndex::new(table);
        // The points where either table's verdict can change: every prefix start and end.
        let mut points: BTreeSet<(Option<u8>, u16)> = BTreeSet::new();
        for e in table.entries.iter().chain(&set.wildcard.entries) {
            if let (Some(p), Some((value, len))) = (e.proto, e.port_prefix) {
                let size = 1u32 << (16 - u32::from(len));
                // Each region of the combined partition starts at a prefix start or just
                // after a prefix end.
                points.insert((Some(p), value));
                let after = u32::from(value) + size;
                if after <= u32::from(u16::MAX) {
                    points.insert((Some(p), after as u16));
                }
            } else {
                points.insert((None, 0));
            }
        }
        for (proto, port) in points {
            let proto = proto.unwrap_or(255);
            let v1 = index.lookup(proto, port);
            let v2 = wildcard.lookup(proto, port);
            if v1
                .and_then(|v| v.deny)
                .or(v2.and_then(|v| v.deny))
                .is_some()
            {
                continue;
            }
            let limits: Vec<RuleIdx> = v1
                .into_iter()
                .chain(v2)
                .flat_map(|v| v.limits.iter().copied())
                .collect();
            if limits.len() > MAX_LIMITS && reported.insert(limits.clone()) {
                let first = &infos[limits[0]];
                let names: Vec<String> = limits
                    .iter()
                    .map(|&i| infos[i].rule_ref().to_string())
                    .collect();
                errors.push(PolicyError::new(
                    &first.file,
                    format!("L4Policy/{}", first.policy),
                    "spec.rules",
                    format!(
                        "{} rate limits can apply to one packet ({}); the data path checks at most {MAX_LIMITS}: merge them or make them disjoint",
                        limits.len(),
                        names.join(", ")
                    ),
                ));
            }
        }
    }
}

/// [`PortTable::lookup`] by binary search, for the tables [`port_table`] builds: per protocol,
/// prefixes that do not overlap (those of disjoint intervals), and one any-protocol entry.
struct PortIndex<'a> {
    any: Option<&'a SymVerdict>,
    /// (protocol, first port) -> (last port, verdict).
    prefixes: BTreeMap<(u8, u16), (u16, &'a SymVerdict)>,
}

impl<'a> PortIndex<'a> {
    fn new(table: &'a PortTable) -> Self {
        let mut index = PortIndex {
            any: None,
            prefixes: BTreeMap::new(),
        };
        for e in &table.entries {
            match (e.proto, e.port_prefix) {
                (Some(p), Some((value, len))) => {
                    let last = u32::from(value) + (1u32 << (16 - u32::from(len))) - 1;
                    index.prefixes.insert((p, value), (last as u16, &e.verdict));
                }
                _ => index.any = Some(&e.verdict),
            }
        }
        index
    }

    fn lookup(&self, proto: u8, port: u16) -> Option<&'a SymVerdict> {
        match self.prefixes.range(..=(proto, port)).next_back() {
            Some((&(p, _), &(last, v))) if p == proto && port <= last => Some(v),
            _ => self.any,
        }
    }
}

fn check_capacity(s: &L4Snapshot, errors: &mut Vec<PolicyError>) {
    // Each generation gets half of the policy maps (the other half holds the previous revision).
    let checks = [
        ("rules", s.rules.len(), MAX_RULE_IDS as usize),
        (
            "source prefixes",
            s.source_entries(),
            MAX_SOURCE_ENTRIES as usize / 2,
        ),
        (
            "port table entries",
            s.port_entries(),
            MAX_PORT_ENTRIES as usize / 2,
        ),
    ];
    for (what, n, cap) in checks {
        if n > cap {
            errors.push(PolicyError::new(
                "(revision)",
                "(all L4Policy objects)",
                "",
                format!("this revision needs {n} {what}; the data path holds at most {cap}"),
            ));
        }
    }
}

#[cfg(test)]
#[path = "tables_tests.rs"]
mod tests;
