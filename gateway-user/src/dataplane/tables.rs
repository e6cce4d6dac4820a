//! The exact map contents of one generation, computed from a snapshot and the id table. Pure
//! code (no kernel): the diff against what a generation holds is what gets written.
use std::collections::HashMap;

use aya::maps::lpm_trie::Key;
use gateway_common::{
    limit_index, IfaceConfig, IfaceKey, LimitConfig, PortKey, SrcV4, SrcV6, SrcValue, Verdict,
    GEN_BIT, IFACE_AUDIT, IFACE_DEFAULT_DROP, IFACE_WILDCARD_UNIFORM, MAX_LIMITS, MAX_RULE_IDS,
    MAX_SOURCE_ENTRIES, NO_RULE, PORT_PREFIX_ANY_PROTO, PORT_PREFIX_PROTO, SCOPE_BITS, SRC_UNIFORM,
};

use super::ids::Ids;
use crate::compile::l4::{L4Snapshot, PortTable, RuleKind, SymVerdict};
use crate::compile::policy::{Action, Mode};

/// Map contents of one generation, keyed as in the kernel (LPM keys as `(prefix_len, data)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenTables {
    /// `IFACES`.
    pub ifaces: HashMap<IfaceKey, IfaceConfig>,
    /// `SRC_V4`.
    pub src_v4: HashMap<(u32, SrcV4), SrcValue>,
    /// `SRC_V6`.
    pub src_v6: HashMap<(u32, SrcV6), SrcValue>,
    /// `PORTS`.
    pub ports: HashMap<(u32, PortKey), Verdict>,
    /// `LIMITS`, by array index ([`limit_index`]); absent = all zero.
    pub limits: HashMap<u32, LimitConfig>,
}

/// Why the tables could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// An id space is full.
    #[error("out of {what} ids (capacity {capacity})")]
    IdsExhausted {
        /// Which space.
        what: &'static str,
        /// Its capacity.
        capacity: u32,
    },
    /// An interface the snapshot names has no index.
    #[error("interface {name} does not exist")]
    NoSuchInterface {
        /// Its name.
        name: String,
    },
}

/// Key of an LPM entry as stored in [`GenTables`].
pub fn lpm<K: aya::Pod>(key: &Key<K>) -> (u32, K) {
    (key.prefix_len(), key.data())
}

/// Names of the rule ids: `policy/rule`.
pub fn rule_name(policy: &str, rule: &str) -> String {
    format!("{policy}/{rule}")
}

/// Gives every rule, set and entry of `snapshot` an id (keeping existing ones). Returns the
/// rule ids handed out afresh, whose counters must be zeroed before the generation is used.
pub fn assign_ids(ids: &mut Ids, snapshot: &L4Snapshot) -> Result<Vec<u32>, TablesError> {
    let rule_names: Vec<String> = snapshot
        .rules
        .iter()
        .map(|r| rule_name(&r.policy, &r.rule))
        .collect();
    let fresh = ids
        .rules
        .sync(rule_names.iter().map(String::as_str), MAX_RULE_IDS)
        .ok_or(TablesError::IdsExhausted {
            what: "rule",
            capacity: MAX_RULE_IDS,
        })?;
    ids.scopes
        .sync(
            snapshot.sets.iter().map(|s| s.key.as_str()),
            MAX_SOURCE_ENTRIES,
        )
        .ok_or(TablesError::IdsExhausted {
            what: "rule set",
            capacity: MAX_SOURCE_ENTRIES,
        })?;
    let entry_names: Vec<String> = snapshot
        .sets
        .iter()
        .flat_map(|s| {
            std::iter::once(entry_name(&s.key, None))
                .chain(
                    s.v4.keys()
                        .map(|n| entry_name(&s.key, Some(&n.to_string()))),
                )
                .chain(
                    s.v6.keys()
                        .map(|n| entry_name(&s.key, Some(&n.to_string()))),
                )
        })
        .collect();
    ids.entries
        .sync(entry_names.iter().map(String::as_str), MAX_SOURCE_ENTRIES)
        .ok_or(TablesError::IdsExhausted {
            what: "source entry",
            capacity: MAX_SOURCE_ENTRIES,
        })?;
    Ok(fresh)
}

fn entry_name(set: &str, cidr: Option<&str>) -> String {
    format!("{set}|{}", cidr.unwrap_or("*"))
}

/// The map contents for generation `gen` (0 or 1). `ifindex` resolves interface names.
pub fn build(
    snapshot: &L4Snapshot,
    ids: &Ids,
    gen: u32,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<GenTables, TablesError> {
    let gbit = if gen == 1 { GEN_BIT } else { 0 };
    let rule_id = |i: usize| {
        let r = &snapshot.rules[i];
        ids.rules
            .get(&rule_name(&r.policy, &r.rule))
            .expect("ids assigned before build")
    };
    let mut t = GenTables::default();
    for (set_idx, set) in snapshot.sets.iter().enumerate() {
        let scope = ids.scopes.get(&set.key).expect("ids assigned") | gbit;
        let entry = |cidr: Option<String>| {
            ids.entries
                .get(&entry_name(&set.key, cidr.as_deref()))
                .expect("ids assigned")
                | gbit
        };
        let wildcard = entry(None);
        let mut flags = 0;
        if set.default_action == Action::Deny {
            flags |= IFACE_DEFAULT_DROP;
        }
        if set.mode == Mode::Audit {
            flags |= IFACE_AUDIT;
        }
        let wildcard_verdict = match uniform(&set.wildcard) {
            Some(v) => {
                flags |= IFACE_WILDCARD_UNIFORM;
                verdict(&v, &rule_id)
            }
            None => {
                port_entries(&mut t, wildcard, &set.wildcard, &rule_id);
                Verdict::default()
            }
        };
        for (name, _) in snapshot.interfaces.iter().filter(|(_, &s)| s == set_idx) {
            let index =
                ifindex(name).ok_or_else(|| TablesError::NoSuchInterface { name: name.clone() })?;
            t.ifaces.insert(
                IfaceKey {
                    gen,
                    ifindex: index,
                },
                IfaceConfig {
                    scope,
                    wildcard_entry: wildcard,
                    default_rule: rule_id(set.default_rule),
                    flags,
                    wildcard: wildcard_verdict,
                },
            );
        }
        let sb = scope.to_be_bytes();
        for (net, table) in &set.v4 {
            let e = entry(Some(net.to_string()));
            let value = source_value(&mut t, e, table, &rule_id);
            t.src_v4.insert(
                (
                    SCOPE_BITS + u32::from(net.prefix_len()),
                    SrcV4 {
                        scope: sb,
                        addr: net.network().octets(),
                    },
                ),
                value,
            );
        }
        for (net, table) in &set.v6 {
            let e = entry(Some(net.to_string()));
            let value = source_value(&mut t, e, table, &rule_id);
            t.src_v6.insert(
                (
                    SCOPE_BITS + u32::from(net.prefix_len()),
                    SrcV6 {
                        scope: sb,
                        addr: net.network().octets(),
                    },
                ),
                value,
            );
        }
    }
    for (i, r) in snapshot.rules.iter().enumerate() {
        if let (RuleKind::Allow, Some(l)) = (r.kind, r.rate_limit) {
            let interval_ns = (1_000_000_000 / l.packets_per_second).max(1);
            t.limits.insert(
                limit_index(gen, rule_id(i)),
                LimitConfig {
                    interval_ns,
                    tolerance_ns: interval_ns.saturating_mul(l.burst.saturating_sub(1)),
                    prefix_v4: l.ipv4_prefix,
                    prefix_v6: l.ipv6_prefix,
                    _pad: [0; 6],
                },
            );
        }
    }
    Ok(t)
}

/// The single verdict of a port table whose rules name no protocol (or that is empty).
fn uniform(table: &PortTable) -> Option<SymVerdict> {
    match table.entries.as_slice() {
        [] => Some(SymVerdict::default()),
        [e] if e.proto.is_none() => Some(e.verdict.clone()),
        _ => None,
    }
}

/// The trie value of a source entry; writes its port table unless its verdict is uniform.
fn source_value(
    t: &mut GenTables,
    entry: u32,
    table: &PortTable,
    rule_id: &dyn Fn(usize) -> u32,
) -> SrcValue {
    match uniform(table) {
        Some(v) => SrcValue {
            entry,
            flags: SRC_UNIFORM,
            verdict: verdict(&v, rule_id),
        },
        None => {
            port_entries(t, entry, table, rule_id);
            SrcValue {
                entry,
                flags: 0,
                verdict: Verdict::default(),
            }
        }
    }
}

fn port_entries(t: &mut GenTables, entry: u32, table: &PortTable, rule_id: &dyn Fn(usize) -> u32) {
    for e in &table.entries {
        let (prefix, proto, port) = match (e.proto, e.port_prefix) {
            (Some(p), Some((value, len))) => (PORT_PREFIX_PROTO + u32::from(len), p, value),
            _ => (PORT_PREFIX_ANY_PROTO, 0, 0),
        };
        t.ports.insert(
            (
                prefix,
                PortKey {
                    entry: entry.to_be_bytes(),
                    proto,
                    port: port.to_be_bytes(),
                    _pad: 0,
                },
            ),
            verdict(&e.verdict, rule_id),
        );
    }
}

fn verdict(v: &SymVerdict, rule_id: &dyn Fn(usize) -> u32) -> Verdict {
    let mut out = Verdict {
        deny_rule: v.deny.map_or(NO_RULE, rule_id),
        allow_rule: v.allow.map_or(NO_RULE, rule_id),
        n_limits: v.limits.len().min(MAX_LIMITS) as u32,
        ..Verdict::default()
    };
    for (slot, &l) in out.limits.iter_mut().zip(&v.limits) {
        *slot = rule_id(l);
    }
    out
}

/// What to write to bring a map from `current` to `desired`.
pub struct Diff<K, V> {
    /// Entries to insert or overwrite.
    pub upsert: Vec<(K, V)>,
    /// Keys to delete.
    pub remove: Vec<K>,
}

/// Computes the writes that turn `current` into `desired`.
pub fn diff<K: Copy + Eq + std::hash::Hash, V: Copy + PartialEq>(
    current: &HashMap<K, V>,
    desired: &HashMap<K, V>,
) -> Diff<K, V> {
    let upsert = desired
        .iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let remove = current
        .keys()
        .filter(|k| !desired.contains_key(k))
        .copied()
        .collect();
    Diff { upsert, remove }
}
