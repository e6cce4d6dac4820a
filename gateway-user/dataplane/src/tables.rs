//! The exact map contents of a revision, computed from a snapshot and the id table. Pure code
//! (no kernel). [`Tables`] carry no generation: the generation bit is added to keys and ids
//! when a generation is written ([`Tables::for_gen`]), so one value describes either half and
//! the diff between two revisions is computed once.
use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use gateway_common::{
    port_dir_index, port_verdict_index, src_failsafe_flags, DirBlock, Exact4Set, Exact6Set,
    IfaceConfig, LimitConfig, PortKey, Src6Lens, SrcV4, SrcV6, SrcValue, Verdict, DIR_SCOPES,
    IFACE_AUDIT, IFACE_DEFAULT_DROP, IFACE_PORTS_TCP_DIR, IFACE_PORTS_UDP_DIR, IFACE_SRC4_DIR,
    IFACE_SRC4_EXACT, IFACE_SRC6_EXACT, IFACE_WILDCARD_UNIFORM, LIMIT_COARSE_CLOCK,
    LIMIT_COARSE_FIRST, MAX_LIMITS, NO_RULE, PORT_PREFIX_ANY_PROTO, PORT_PREFIX_PROTO, SCOPE_BITS,
    SRC_UNIFORM,
};

mod assign;
mod generation;
mod leaves;
pub use assign::{assign_ids, assign_ids_after, Assigned, PrevAssignment};
pub use generation::{for_gen, gen_of, strip};
pub use leaves::Leaves4;
use tollgate_compile::l4::policy::{Action, Mode};
use tollgate_compile::l4::{L4Snapshot, PortTable, RuleKind, SymVerdict};

/// Map contents of a revision, without generation bits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    /// `IFACES`, by interface index.
    pub ifaces: HashMap<u32, IfaceConfig>,
    /// `SRC_V4`, by (prefix length, key data).
    pub src_v4: HashMap<(u32, SrcV4), SrcValue>,
    /// `SRC_V6`.
    pub src_v6: HashMap<(u32, SrcV6), SrcValue>,
    /// `PORTS`.
    pub ports: HashMap<(u32, PortKey), Verdict>,
    /// `LIMITS`, by rule id.
    pub limits: HashMap<u32, LimitConfig>,
    /// `SRC4_DIR`, the blocks that are not all `DIR_NONE`, by index within a generation
    /// (`scope * 256 + first address byte`). See [`super::dir`].
    pub dir4: HashMap<u32, DirBlock>,
    /// `SRC4_CHUNKS`, by chunk id.
    pub chunks4: HashMap<u32, DirBlock>,
    /// `SRC4_LEAVES`, by leaf number: the `SRC_V4` and `SRC_V6` values the index and the exact
    /// tables name (an entry's own id, or a spare number: see `exact::Leaves`).
    pub leaves4: Leaves4,
    /// `SRC4_EXACT`, the sets that are not empty, by index within a generation. See
    /// [`super::exact`].
    pub exact4: HashMap<u32, Exact4Set>,
    /// `SRC6_EXACT`, the sets that are not empty, by index within a generation, and
    /// `SRC6_LENS`, by scope (those with a length). See [`super::exact`].
    pub exact6: HashMap<u32, Exact6Set>,
    pub lens6: HashMap<u32, Src6Lens>,
    /// `SRC6_FILTER`, the blocks that are not empty, by index within a generation.
    pub filter6: HashMap<u32, gateway_common::Filter6Block>,
    /// `PORT_DIR`, the blocks that are not all `DIR_NONE`, by index in generation 0
    /// (`port_dir_index(0, ..)`). See [`super::dir::ports`].
    pub port_dir: HashMap<u32, DirBlock>,
    /// `PORT_VERDICTS`, by index in generation 0.
    pub port_verdicts: HashMap<u32, Verdict>,
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
}

/// The map contents of `snapshot` with the ids of `assigned`, and the rule set (`IFACES`
/// value) of every interface by name. `ifindex` resolves interface names; an interface without
/// an index (it does not exist now) gets no `IFACES` entry. `prev` is what the maps hold now
/// (its IPv4 direct index chunks keep their places, see [`super::dir`]).
pub fn build(
    snapshot: &L4Snapshot,
    assigned: &Assigned,
    ifindex: &dyn Fn(&str) -> Option<u32>,
    prev: &Tables,
) -> Result<(Tables, BTreeMap<String, IfaceConfig>), TablesError> {
    // The IPv4 direct index needs only the prefixes and their ids: it is computed beside the
    // rest (about 20 ms of a 100,000-rule apply, measured; the machine has two cores).
    let room = super::dir::Room::default();
    // The IPv4 prefixes of the indexed rule sets.
    let prefixes = || -> Vec<super::dir::Prefix> {
        snapshot
            .sets
            .iter()
            .enumerate()
            .filter(|&(i, _)| assigned.scopes[i] < DIR_SCOPES)
            .flat_map(|(i, set)| {
                set.v4
                    .keys()
                    .zip(&assigned.v4[i])
                    .map(move |(net, &entry)| super::dir::Prefix {
                        scope: assigned.scopes[i],
                        addr: u32::from(net.network()),
                        len: u32::from(net.prefix_len()),
                        entry,
                    })
            })
            .collect()
    };
    let prefixes6 = || -> Vec<super::exact::Prefix6> {
        snapshot
            .sets
            .iter()
            .enumerate()
            .filter(|&(i, _)| assigned.scopes[i] < DIR_SCOPES)
            .flat_map(|(i, set)| {
                set.v6
                    .keys()
                    .zip(&assigned.v6[i])
                    .map(move |(net, &entry)| {
                        let bits = u128::from(net.network());
                        super::exact::Prefix6 {
                            scope: assigned.scopes[i],
                            hi: (bits >> 64) as u64,
                            lo: bits as u64,
                            len: u32::from(net.prefix_len()),
                            entry,
                        }
                    })
            })
            .collect()
    };
    let start = std::time::Instant::now();
    // Where the build spends its time (TOLLGATE_LOG=debug), beside `Dataplane::apply`'s steps.
    let mark = |step: &str| {
        tracing::debug!(
            step,
            elapsed_us = start.elapsed().as_micros() as u64,
            "tables::build"
        )
    };
    // On the index thread: the direct index and the exact tables (their placing needs no
    // leaf numbers). Here: the other tables, and their values by entry id for the leaves.
    // (A third thread for the exact tables, measured: no faster on two cores.)
    let index = || {
        // All of them: the /16 slots say which hold /32s.
        let prefixes = prefixes();
        // The /32s, and the /25–/31s that a /24 without a chunk sends there, for the IPv4
        // exact table: a second walk of the revision's prefixes costs more than this copy.
        let singles: Vec<super::dir::Prefix> = prefixes
            .iter()
            .filter(|p| super::exact::exact4_len(p.len))
            .copied()
            .collect();
        let exact6 = super::exact::sets6(&prefixes6());
        mark("index thread: IPv6 exact table");
        let (dir4, chunks4) = super::dir::slots(prefixes, prev, room);
        let named = super::dir::named(&dir4, &chunks4, room);
        mark("index thread: IPv4 index");
        let exact4 = super::exact::sets(&singles);
        mark("index thread: IPv4 exact table");
        (singles, dir4, chunks4, named, exact4, exact6)
    };
    let ((singles, dir4, chunks4, named, mut exact4, six), result) =
        side_by_side(true, "tollgate-dir", index, || {
            let result = build_tables(snapshot, assigned, ifindex).map(|(t, by_name)| {
                let values = super::dir::values_by_entry(&t);
                (t, by_name, values)
            });
            mark("tries, port tables and values");
            result
        });
    let super::exact::Sets6 {
        lens: lens6,
        sets: mut exact6,
        filter: filter6,
    } = six;
    // The exact tables' entries take the leaf numbers the direct index leaves free.
    let leaves = super::exact::Leaves::new(
        room,
        &named,
        singles.iter().map(|p| p.entry).chain(
            exact6
                .values()
                .flat_map(|s| s.ways.iter())
                .filter(|w| w.tag & gateway_common::EXACT4_USED != 0)
                .map(|w| w.tag & gateway_common::EXACT4_ENTRY_MASK),
        ),
    );
    super::exact::number(&mut exact4, &mut exact6, &leaves);
    mark("leaf numbers");
    let (mut t, by_name, values) = result?;
    t.dir4 = dir4;
    t.chunks4 = chunks4;
    t.exact4 = exact4;
    t.exact6 = exact6;
    t.lens6 = lens6;
    t.filter6 = filter6;
    super::dir::leaves(&mut t, named, &leaves, &values);
    mark("leaves");
    Ok((t, by_name))
}

/// Rules (or source entries) above which the ids merge and the comparison of the tables run
/// on two threads ([`side_by_side`]); below, a thread costs more than it saves.
pub(crate) const TWO_THREADS_ABOVE: usize = 10_000;

/// Runs `beside` on a thread of its own named `name` while `here` runs on this one, when
/// `parallel` (below some size a thread costs more than it saves), and returns both results.
/// Without a thread to be had, both run here, one after the other. A panic on the thread goes
/// on here.
pub(crate) fn side_by_side<A: Send, B>(
    parallel: bool,
    name: &str,
    beside: impl Fn() -> A + Sync,
    here: impl FnOnce() -> B,
) -> (A, B) {
    std::thread::scope(|s| {
        let thread = parallel.then(|| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(s, &beside)
        });
        match thread {
            Some(Ok(handle)) => {
                let b = here();
                let a = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (a, b)
            }
            _ => (beside(), here()),
        }
    })
}

/// [`build`] but for the IPv4 direct index.
fn build_tables(
    snapshot: &L4Snapshot,
    assigned: &Assigned,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<(Tables, BTreeMap<String, IfaceConfig>), TablesError> {
    let rule_id = |i: usize| assigned.rules[i];
    // Sized up front: growing a 100,000-entry map doubles the work of filling it.
    fn cap<K, V>(n: usize) -> HashMap<K, V> {
        HashMap::with_capacity_and_hasher(n, Default::default())
    }
    let mut by_name = BTreeMap::new();
    let mut t = Tables {
        ifaces: cap(snapshot.interfaces.len()),
        src_v4: cap(snapshot.sets.iter().map(|s| s.v4.len()).sum()),
        src_v6: cap(snapshot.sets.iter().map(|s| s.v6.len()).sum()),
        ports: cap(snapshot.port_entries()),
        limits: cap(snapshot
            .rules
            .iter()
            .filter(|r| r.rate_limit.is_some())
            .count()),
        ..Tables::default()
    };
    for (set_idx, set) in snapshot.sets.iter().enumerate() {
        let scope = assigned.scopes[set_idx];
        let wildcard = assigned.wildcard[set_idx];
        let mut flags = gateway_common::IFACE_CONFIGURED;
        if set.default_action == Action::Deny {
            flags |= IFACE_DEFAULT_DROP;
        }
        if set.mode == Mode::Audit {
            flags |= IFACE_AUDIT;
        }
        if scope < DIR_SCOPES {
            // A rule set with /32 sources has them in the exact table, and its direct index
            // lacks them: it takes the flag that tells the program to look there first.
            flags |= if set.v4.keys().any(|n| n.prefix_len() == 32) {
                IFACE_SRC4_EXACT
            } else {
                IFACE_SRC4_DIR
            };
            // Its IPv6 sources are in the exact-prefix table unless it has too many lengths.
            if super::exact::lens6(set.v6.keys().map(|n| u32::from(n.prefix_len()))).is_some() {
                flags |= IFACE_SRC6_EXACT;
            }
        }
        let wildcard_verdict = match uniform(&set.wildcard) {
            Some(v) => {
                flags |= IFACE_WILDCARD_UNIFORM;
                verdict(&v, &rule_id)
            }
            None => {
                port_entries(&mut t, wildcard, &set.wildcard, &rule_id);
                if scope < DIR_SCOPES {
                    flags |= port_dirs(&mut t, scope, &set.wildcard, &rule_id);
                }
                Verdict::default()
            }
        };
        let config = IfaceConfig {
            scope,
            wildcard_entry: wildcard,
            default_rule: rule_id(set.default_rule),
            flags,
            wildcard: wildcard_verdict,
        };
        for (name, _) in snapshot.interfaces.iter().filter(|(_, &s)| s == set_idx) {
            by_name.insert(name.clone(), config);
            if let Some(index) = ifindex(name) {
                t.ifaces.insert(index, config);
            }
        }
        let sb = scope.to_be_bytes();
        for ((net, table), &e) in set.v4.iter().zip(&assigned.v4[set_idx]) {
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
        for ((net, table), &e) in set.v6.iter().zip(&assigned.v6[set_idx]) {
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
            let tolerance_ns = interval_ns.saturating_mul(l.burst.saturating_sub(1));
            t.limits.insert(
                rule_id(i),
                LimitConfig {
                    interval_ns,
                    tolerance_ns,
                    prefix_v4: l.ipv4_prefix,
                    prefix_v6: l.ipv6_prefix,
                    ..limit_clock(interval_ns, tolerance_ns, crate::clock::coarse_tick_ns())
                },
            );
        }
    }
    Ok((t, by_name))
}

/// The clock fields of a limit (`flags`, `coarse_margin_ms`; the rest zero) on a node whose
/// coarse clock ticks every `tick` ns: the coarse clock when the tolerance holds a tick, the
/// coarse clock first when the interval is longer than the margin, else the precise one.
pub fn limit_clock(interval_ns: u64, tolerance_ns: u64, tick: Option<u64>) -> LimitConfig {
    let Some(tick) = tick else {
        return LimitConfig::default();
    };
    if tolerance_ns >= tick {
        return LimitConfig {
            flags: LIMIT_COARSE_CLOCK,
            ..LimitConfig::default()
        };
    }
    let margin_ms = tick.div_ceil(1_000_000) + 1;
    match u8::try_from(margin_ms) {
        Ok(m) if interval_ns > margin_ms * 1_000_000 => LimitConfig {
            flags: LIMIT_COARSE_FIRST,
            coarse_margin_ms: m,
            ..LimitConfig::default()
        },
        _ => LimitConfig::default(),
    }
}

/// Writes the TCP and UDP port direct tables of a rule set's wildcard entry (scope id below
/// `DIR_SCOPES`), those that fit, into `t`; returns the `IFACE_PORTS_*_DIR` flags of those
/// written. The `PORTS` entries are written all the same (the trie answers other protocols,
/// and tables that do not fit).
fn port_dirs(t: &mut Tables, scope: u32, table: &PortTable, rule_id: &dyn Fn(usize) -> u32) -> u32 {
    let base = table
        .entries
        .iter()
        .find(|e| e.proto.is_none())
        .map(|e| verdict(&e.verdict, rule_id));
    let mut flags = 0;
    for (class, proto, flag) in [
        (0, 6u8, IFACE_PORTS_TCP_DIR),
        (1, 17u8, IFACE_PORTS_UDP_DIR),
    ] {
        let prefixes: Vec<((u16, u8), Verdict)> = table
            .entries
            .iter()
            .filter(|e| e.proto == Some(proto))
            .filter_map(|e| Some((e.port_prefix?, verdict(&e.verdict, rule_id))))
            .collect();
        let Some(super::dir::PortDir { blocks, verdicts }) = super::dir::ports(base, &prefixes)
        else {
            continue;
        };
        for (b, block) in blocks {
            t.port_dir.insert(port_dir_index(0, scope, class, b), block);
        }
        for (i, v) in verdicts {
            t.port_verdicts
                .insert(port_verdict_index(0, scope, class, i), v);
        }
        flags |= flag;
    }
    flags
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
/// A failsafe entry carries its TCP port in the upper half of the flags.
fn source_value(
    t: &mut Tables,
    entry: u32,
    table: &PortTable,
    rule_id: &dyn Fn(usize) -> u32,
) -> SrcValue {
    let failsafe = table.failsafe_port.map_or(0, src_failsafe_flags);
    match uniform(table) {
        Some(v) => SrcValue {
            entry,
            flags: SRC_UNIFORM | failsafe,
            verdict: verdict(&v, rule_id),
        },
        None => {
            port_entries(t, entry, table, rule_id);
            SrcValue {
                entry,
                flags: failsafe,
                verdict: Verdict::default(),
            }
        }
    }
}

fn port_entries(t: &mut Tables, entry: u32, table: &PortTable, rule_id: &dyn Fn(usize) -> u32) {
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
pub struct Diff<'a, K, V> {
    /// Entries to insert or overwrite.
    pub upsert: Vec<(&'a K, &'a V)>,
    /// Keys to delete.
    pub remove: Vec<&'a K>,
}

/// Computes the writes that turn `current` into `desired`.
pub fn diff<'a, K: Eq + std::hash::Hash, V: PartialEq>(
    current: &'a HashMap<K, V>,
    desired: &'a HashMap<K, V>,
) -> Diff<'a, K, V> {
    let mut found = 0;
    let upsert = desired
        .iter()
        .filter(|(k, v)| {
            let held = current.get(k);
            found += usize::from(held.is_some());
            held != Some(v)
        })
        .collect();
    // When every key `current` holds was found in `desired`, nothing is to be removed: the
    // second pass of probes (half of a diff's cost, which is random probes of maps of up to
    // 100,000 entries) is skipped.
    let remove = if found == current.len() {
        Vec::new()
    } else {
        current
            .keys()
            .filter(|k| !desired.contains_key(k))
            .collect()
    };
    Diff { upsert, remove }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_takes_the_coarse_clock_when_it_tolerates_a_tick_and_takes_it_first_when_slow() {
        let tick = Some(4_000_000);
        // Burst tolerance of a tick or more: the coarse clock.
        assert_eq!(
            limit_clock(1_000, 4_000_000, tick).flags,
            LIMIT_COARSE_CLOCK
        );
        // Less tolerance, an interval longer than the margin (4 ms rounded up, plus 1 ms).
        let slow = limit_clock(5_000_001, 0, tick);
        assert_eq!((slow.flags, slow.coarse_margin_ms), (LIMIT_COARSE_FIRST, 5));
        // A fast limit, or no known tick: the precise clock.
        assert_eq!(limit_clock(5_000_000, 0, tick), LimitConfig::default());
        assert_eq!(limit_clock(1_000_000_000, 0, None), LimitConfig::default());
        // An odd tick (300 Hz) rounds up.
        assert_eq!(
            limit_clock(1_000_000_000, 0, Some(3_333_333)).coarse_margin_ms,
            5
        );
    }

    #[test]
    fn a_diff_removes_the_keys_that_are_gone_even_when_as_many_come() {
        let map = |kv: &[(u32, u32)]| -> HashMap<u32, u32> { kv.iter().copied().collect() };
        let sorted = |d: Diff<'_, u32, u32>| {
            let mut up: Vec<(u32, u32)> = d.upsert.iter().map(|(&k, &v)| (k, v)).collect();
            let mut rm: Vec<u32> = d.remove.iter().map(|&&k| k).collect();
            up.sort();
            rm.sort();
            (up, rm)
        };
        let held = map(&[(1, 10), (2, 20), (3, 30)]);
        // As many keys, one of them new: the one gone is removed.
        let desired = map(&[(1, 10), (2, 21), (4, 40)]);
        assert_eq!(
            sorted(diff(&held, &desired)),
            (vec![(2, 21), (4, 40)], vec![3])
        );
        // Every key kept (one changed, one added): nothing removed.
        let desired = map(&[(1, 10), (2, 21), (3, 30), (5, 50)]);
        assert_eq!(
            sorted(diff(&held, &desired)),
            (vec![(2, 21), (5, 50)], vec![])
        );
        // Fewer keys.
        assert_eq!(sorted(diff(&held, &map(&[(2, 20)]))), (vec![], vec![1, 3]));
        assert_eq!(sorted(diff(&held, &held)), (vec![], vec![]));
    }

    use crate::ids::Ids;
    use tollgate_compile::l4::compile;
    use tollgate_compile::l4::policy::{Policy, Rule};

    fn policy(rules: &[(&str, &str)]) -> Policy {
        Policy {
            name: "p".into(),
            file: "p.yaml".into(),
            mode: Mode::Enforce,
            default_action: Action::Allow,
            interfaces: None,
            rules: rules
                .iter()
                .map(|(name, cidr)| Rule {
                    name: (*name).into(),
                    action: Action::Deny,
                    from: Some(vec![cidr.parse().unwrap()]),
                    protocol: None,
                    ports: None,
                    icmp_types: None,
                    rate_limit: None,
                })
                .collect(),
        }
    }

    /// A full id space refuses the revision with its own name and capacity, on both paths
    /// (the careful one, and the merge after a previous revision), and changes nothing.
    #[test]
    fn a_full_id_space_is_named_with_its_own_capacity() {
        let ifaces = ["eth0".to_owned()];
        let small = compile(&[policy(&[("a", "10.0.0.0/8")])], &ifaces).unwrap();
        let mut base = Ids::default();
        let prev = PrevAssignment::new(&small, &assign_ids(&mut base, &small).unwrap());
        let bigger = compile(
            &[policy(&[("a", "10.0.0.0/8"), ("b", "192.0.2.0/24")])],
            &ifaces,
        )
        .unwrap();
        // Every rule id taken by other names: rule "b" finds none.
        let mut full_rules = base.clone();
        for i in 0..gateway_common::MAX_RULE_IDS {
            if full_rules
                .rules
                .id("filler", &i.to_string(), gateway_common::MAX_RULE_IDS)
                .is_err()
            {
                break;
            }
        }
        // Every source entry id taken: the entry of 192.0.2.0/24 finds none.
        let mut full_entries = base.clone();
        for i in 0..gateway_common::MAX_SOURCE_ENTRIES {
            let net = ipnet::IpNet::new(std::net::Ipv6Addr::from(u128::from(i)).into(), 128);
            let key = crate::ids::EntryKey::Net(net.unwrap());
            if full_entries
                .entries
                .id("filler", &key, gateway_common::MAX_SOURCE_ENTRIES)
                .is_err()
            {
                break;
            }
        }
        for (ids, what, capacity) in [
            (&full_rules, "rule", 1 << 18),
            (&full_entries, "source entry", 1 << 19),
        ] {
            for merged in [false, true] {
                let mut ids = ids.clone();
                let before = ids.clone();
                let err = if merged {
                    assign_ids_after(&mut ids, &bigger, &prev).err()
                } else {
                    assign_ids(&mut ids, &bigger).err()
                };
                let err = err.expect("a full space refuses the revision");
                assert_eq!(
                    err.to_string(),
                    format!("out of {what} ids (capacity {capacity})"),
                    "merged: {merged}"
                );
                assert_eq!(ids.rules.get("p", &"b".to_owned()), None);
                assert_eq!(
                    ids.rules.get("p", &"a".to_owned()),
                    before.rules.get("p", &"a".to_owned())
                );
            }
        }
    }

    #[test]
    fn merged_ids_equal_looked_up_ids_and_release_what_is_gone() {
        merged_ids_equal_looked_up_ids(0);
    }

    /// The same with more rules than `TWO_THREADS_ABOVE`, where the rules' half and the sets' half
    /// of the merge run on two threads.
    #[test]
    fn merged_ids_equal_looked_up_ids_when_merged_on_two_threads() {
        merged_ids_equal_looked_up_ids(12_000);
    }

    fn merged_ids_equal_looked_up_ids(filler: usize) {
        let ifaces = ["eth0".to_owned()];
        let fill: Vec<(String, String)> = (0..filler)
            .map(|i| (format!("f{i}"), format!("11.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        let with_fill = |rules: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = rules.to_vec();
            all.extend(fill.iter().map(|(n, c)| (n.as_str(), c.as_str())));
            policy(&all)
        };
        let a = compile(
            &[with_fill(&[
                ("a", "10.0.0.0/8"),
                ("b", "10.1.0.0/16"),
                ("c", "192.0.2.0/24"),
                ("d", "2001:db8::/32"),
            ])],
            &ifaces,
        )
        .unwrap();
        // b changes its prefix, c goes, e comes.
        let b = compile(
            &[with_fill(&[
                ("a", "10.0.0.0/8"),
                ("b", "10.2.0.0/16"),
                ("d", "2001:db8::/32"),
                ("e", "198.51.100.0/24"),
            ])],
            &ifaces,
        )
        .unwrap();
        let mut ids = Ids::default();
        let first = assign_ids(&mut ids, &a).unwrap();
        let prev = PrevAssignment::new(&a, &first);
        let mut merged_ids = ids.clone();
        let merged = assign_ids_after(&mut merged_ids, &b, &prev).unwrap();
        let mut looked_up_ids = ids.clone();
        let looked_up = assign_ids(&mut looked_up_ids, &b).unwrap();
        assert_eq!(merged.rules, looked_up.rules);
        assert_eq!(merged.fresh_rules, looked_up.fresh_rules);
        assert_eq!(
            (merged.scopes.clone(), merged.wildcard.clone()),
            (looked_up.scopes.clone(), looked_up.wildcard.clone())
        );
        assert_eq!(
            (merged.v4.clone(), merged.v6.clone()),
            (looked_up.v4.clone(), looked_up.v6.clone())
        );
        // The names of the two paths are the same afterwards.
        let names = |i: &Ids| {
            let mut v: Vec<String> = i
                .rules
                .iter()
                .map(|(p, r, id)| format!("{p}/{r}={id}"))
                .collect();
            v.extend(i.entries.iter().map(|(s, k, id)| format!("{s}|{k:?}={id}")));
            v.sort();
            v
        };
        assert_eq!(names(&merged_ids), names(&looked_up_ids));
        assert!(
            merged_ids.rules.get("p", &"c".to_owned()).is_none(),
            "c is released"
        );
        assert_eq!(
            merged_ids.rules.get("p", &"a".to_owned()),
            ids.rules.get("p", &"a".to_owned()),
            "a keeps its id"
        );
    }
}
