//! Reading back what the policy maps hold, and comparing it with what they must hold: the
//! adoption of a restarted agent ([`Dataplane::load`]) and the drift check
//! ([`Dataplane::drift_probe`], [`Dataplane::repair_drift`]). Apart from the rest of the
//! loader because it is the one place that walks every map, entry by entry.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_common::{DirBlock, SrcValue, FAST_IFINDEX};

use super::tables::{self, Tables};
#[cfg(doc)]
use super::Dataplane;
use super::{map_err, tables_lpm, DataplaneError, PolicyMaps};

/// What [`Dataplane::repair_drift`] found and put back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DriftRepair {
    /// Map entries written or removed.
    pub corrected: usize,
    /// Entries found different, per map.
    pub maps: BTreeMap<&'static str, usize>,
    /// The rules (`policy/rule`) the drifted entries belong to, as far as an entry names them
    /// (what it holds now or what it must hold).
    pub rules: BTreeSet<String>,
}

impl DriftRepair {
    /// True when nothing had drifted.
    pub fn is_empty(&self) -> bool {
        self.corrected == 0
    }
}

/// Counts the entries of `actual` that differ from `expected`, per map, and collects the rule
/// ids their values (in either table) name.
pub(crate) fn drifted_entries(
    actual: &Tables,
    expected: &Tables,
    maps: &mut BTreeMap<&'static str, usize>,
    rules: &mut BTreeSet<u32>,
) {
    fn verdict_rules(v: &gateway_common::Verdict, rules: &mut BTreeSet<u32>) {
        let n = (v.n_limits as usize).min(v.limits.len());
        for id in [v.deny_rule, v.allow_rule]
            .into_iter()
            .chain(v.limits[..n].iter().copied())
        {
            if id != gateway_common::NO_RULE {
                rules.insert(id);
            }
        }
    }
    fn compare<K: Eq + std::hash::Hash, V: PartialEq>(
        name: &'static str,
        actual: &rustc_hash::FxHashMap<K, V>,
        expected: &rustc_hash::FxHashMap<K, V>,
        maps: &mut BTreeMap<&'static str, usize>,
        mut rules_of: impl FnMut(&V),
    ) {
        let mut n = 0;
        for (k, v) in actual {
            if expected.get(k) != Some(v) {
                n += 1;
                rules_of(v);
                if let Some(e) = expected.get(k) {
                    rules_of(e);
                }
            }
        }
        for (k, e) in expected {
            if !actual.contains_key(k) {
                n += 1;
                rules_of(e);
            }
        }
        if n > 0 {
            *maps.entry(name).or_default() += n;
        }
    }
    let mut ids = BTreeSet::new();
    compare("IFACES", &actual.ifaces, &expected.ifaces, maps, |v| {
        ids.insert(v.default_rule);
        verdict_rules(&v.wildcard, &mut ids);
    });
    compare("SRC_V4", &actual.src_v4, &expected.src_v4, maps, |v| {
        verdict_rules(&v.verdict, &mut ids)
    });
    compare("SRC_V6", &actual.src_v6, &expected.src_v6, maps, |v| {
        verdict_rules(&v.verdict, &mut ids)
    });
    compare("PORTS", &actual.ports, &expected.ports, maps, |v| {
        verdict_rules(v, &mut ids)
    });
    compare("SRC4_DIR", &actual.dir4, &expected.dir4, maps, |_| {});
    compare(
        "PORT_DIR",
        &actual.port_dir,
        &expected.port_dir,
        maps,
        |_| {},
    );
    compare(
        "PORT_VERDICTS",
        &actual.port_verdicts,
        &expected.port_verdicts,
        maps,
        |v| verdict_rules(v, &mut ids),
    );
    compare(
        "SRC4_CHUNKS",
        &actual.chunks4,
        &expected.chunks4,
        maps,
        |_| {},
    );
    compare("SRC4_EXACT", &actual.exact4, &expected.exact4, maps, |_| {});
    compare("SRC6_EXACT", &actual.exact6, &expected.exact6, maps, |_| {});
    compare("SRC6_LENS", &actual.lens6, &expected.lens6, maps, |_| {});
    compare(
        "SRC6_FILTER",
        &actual.filter6,
        &expected.filter6,
        maps,
        |_| {},
    );
    // The leaves are a vector by number (`tables::Leaves4`), compared with its own diff.
    let (changed, gone) = actual.leaves4.diff(&expected.leaves4);
    for &(n, e) in &changed {
        verdict_rules(&e.verdict, &mut ids);
        if let Some(a) = actual.leaves4.get(&n) {
            verdict_rules(&a.verdict, &mut ids);
        }
    }
    for n in &gone {
        if let Some(a) = actual.leaves4.get(n) {
            verdict_rules(&a.verdict, &mut ids);
        }
    }
    if changed.len() + gone.len() > 0 {
        *maps.entry("SRC4_LEAVES").or_default() += changed.len() + gone.len();
    }
    // LIMITS is keyed by rule id.
    let mut limit_ids = BTreeSet::new();
    for (k, v) in &actual.limits {
        if expected.limits.get(k) != Some(v) {
            limit_ids.insert(*k);
        }
    }
    for k in expected.limits.keys() {
        if !actual.limits.contains_key(k) {
            limit_ids.insert(*k);
        }
    }
    if !limit_ids.is_empty() {
        *maps.entry("LIMITS").or_default() += limit_ids.len();
    }
    ids.extend(limit_ids);
    ids.remove(&gateway_common::NO_RULE);
    rules.extend(ids);
}

/// What both generations of the kernel maps hold, without generation bits.
pub(crate) fn read_tables(
    maps: &PolicyMaps,
    limit_slots: &[Vec<u32>; 2],
) -> Result<[Tables; 2], DataplaneError> {
    use tables::{gen_of, strip};
    let mut held: [Tables; 2] = Default::default();
    for item in maps.ifaces.iter() {
        let (k, v) = item.map_err(map_err("read IFACES"))?;
        let (i, v) = strip::iface(&k, &v);
        held[(k.gen & 1) as usize].ifaces.insert(i, v);
    }
    for item in maps.src_v4.iter() {
        let (k, v) = item.map_err(map_err("read SRC_V4"))?;
        let (k, v) = (tables_lpm(&k), v);
        let gen = gen_of(k.1.scope);
        let (k, v) = strip::src_v4(k, v);
        held[gen].src_v4.insert(k, v);
    }
    for item in maps.src_v6.iter() {
        let (k, v) = item.map_err(map_err("read SRC_V6"))?;
        let k = tables_lpm(&k);
        let gen = gen_of(k.1.scope);
        let (k, v) = strip::src_v6(k, v);
        held[gen].src_v6.insert(k, v);
    }
    for item in maps.ports.iter() {
        let (k, v) = item.map_err(map_err("read PORTS"))?;
        let k = tables_lpm(&k);
        let gen = gen_of(k.1.entry);
        held[gen].ports.insert(strip::port(k), v);
    }
    // LIMITS is an array of 2 x MAX_RULE_IDS slots: only `limit_slots` are read.
    for gen in 0..2u32 {
        for &id in &limit_slots[gen as usize] {
            let v = maps
                .limits
                .get(&tables::for_gen::limit(gen, id), 0)
                .map_err(map_err("read LIMITS"))?;
            if v.interval_ns != 0 {
                held[gen as usize].limits.insert(id, v);
            }
        }
    }
    // The IPv4 direct index: every block, then the chunks and leaves the blocks name (packets
    // reach no other, so whatever else the arrays hold is harmless and not read).
    for (gen, tables) in held.iter_mut().enumerate() {
        let gen = gen as u32;
        tables.dir4 = nonempty(
            &maps.src4_dir,
            gateway_common::DIR_BLOCKS,
            "SRC4_DIR",
            |b| tables::for_gen::dir4(gen, b),
        )?;
        let named = |blocks: &mut dyn Iterator<Item = &DirBlock>, kind: u32| {
            let mut ids = BTreeSet::new();
            for block in blocks {
                for &s in &block.slots {
                    if s & gateway_common::DIR_KIND_MASK == kind {
                        ids.insert(s & gateway_common::DIR_ID_MASK);
                    }
                }
            }
            ids
        };
        // Chunks of /24 slots (named by blocks), then chunks of address slots (named by those).
        let mut next = named(&mut tables.dir4.values(), gateway_common::DIR_CHUNK);
        for _level in 0..2 {
            let mut below = BTreeSet::new();
            for c in next {
                if c >= gateway_common::DIR_CHUNKS || tables.chunks4.contains_key(&c) {
                    continue;
                }
                let block = maps
                    .src4_chunks
                    .get(&tables::for_gen::chunk4(gen, c), 0)
                    .map_err(map_err("read SRC4_CHUNKS"))?;
                below.extend(named(
                    &mut std::iter::once(&block),
                    gateway_common::DIR_CHUNK,
                ));
                tables.chunks4.insert(c, block);
            }
            next = below;
        }
        // Every set of the exact tables: any source may hash to any set, and a set the agent
        // believes empty is not cleared by the next revision.
        tables.exact4 = nonempty(
            &maps.src4_exact,
            gateway_common::EXACT4_SETS,
            "SRC4_EXACT",
            |i| tables::for_gen::exact4(gen, i),
        )?;
        tables.exact6 = nonempty(
            &maps.src6_exact,
            gateway_common::EXACT6_SETS,
            "SRC6_EXACT",
            |i| tables::for_gen::exact6(gen, i),
        )?;
        tables.lens6 = nonempty(
            &maps.src6_lens,
            gateway_common::DIR_SCOPES,
            "SRC6_LENS",
            |s| tables::for_gen::lens6(gen, s),
        )?;
        tables.filter6 = nonempty(
            &maps.src6_filter,
            gateway_common::FILTER6_BLOCKS,
            "SRC6_FILTER",
            |i| tables::for_gen::filter6(gen, i),
        )?;
        let mut leaves: BTreeSet<u32> = tables
            .dir4
            .values()
            .chain(tables.chunks4.values())
            .flat_map(|b| {
                b.slots
                    .iter()
                    .filter_map(|&s| gateway_common::dir_slot_leaf(s))
            })
            .collect();
        leaves.extend(crate::exact::leaf_numbers(&tables.exact4, &tables.exact6));
        for e in leaves {
            if e >= gateway_common::LEAF_NUMBERS {
                continue;
            }
            let (hi, i, _) = tables::for_gen::leaf4(gen, e, &SrcValue::default());
            let (leaves, what) = if hi {
                (&maps.src4_leaves_hi, "read SRC4_LEAVES_HI")
            } else {
                (&maps.src4_leaves, "read SRC4_LEAVES")
            };
            let v = leaves.get(&i, 0).map_err(map_err(what))?;
            tables.leaves4.insert(e, tables::strip::leaf4(v));
        }
    }
    // The port direct tables: every block, then the verdicts the blocks name.
    for (gen, tables) in held.iter_mut().enumerate() {
        use gateway_common::{
            DIR_ID_MASK, DIR_KIND_MASK, DIR_VERDICT, PORT_DIR_BLOCKS, PORT_DIR_VERDICTS,
        };
        let gen = gen as u32;
        let tables_per_gen = gateway_common::DIR_SCOPES * gateway_common::PORT_DIR_CLASSES;
        for i in 0..tables_per_gen * PORT_DIR_BLOCKS {
            let block = maps
                .port_dir
                .get(&tables::for_gen::port_dir(gen, i), 0)
                .map_err(map_err("read PORT_DIR"))?;
            if block == DirBlock::default() {
                continue;
            }
            // Verdict ids are per table (every PORT_DIR_BLOCKS blocks).
            let table = i / PORT_DIR_BLOCKS;
            for &s in &block.slots {
                let id = s & DIR_ID_MASK;
                if s & DIR_KIND_MASK == DIR_VERDICT && id < PORT_DIR_VERDICTS {
                    let at = table * PORT_DIR_VERDICTS + id;
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        tables.port_verdicts.entry(at)
                    {
                        let v = maps
                            .port_verdicts
                            .get(&tables::for_gen::port_verdict(gen, at), 0)
                            .map_err(map_err("read PORT_VERDICTS"))?;
                        e.insert(v);
                    }
                }
            }
            tables.port_dir.insert(i, block);
        }
    }
    // Interfaces with a small index are read by packets from IFACE_TABLE: a slot that
    // disagrees with IFACES is drift too (recorded as a missing IFACES entry, so that the
    // repair rewrites both).
    for (gen, tables) in held.iter_mut().enumerate() {
        let gen = gen as u32;
        let known: Vec<u32> = tables
            .ifaces
            .keys()
            .copied()
            .filter(|&i| i < FAST_IFINDEX)
            .collect();
        for i in known {
            let slot = maps
                .iface_table
                .get(&(gen * FAST_IFINDEX + i), 0)
                .map_err(map_err("read IFACE_TABLE"))?;
            let (_, expected) = tables::for_gen::iface(gen, i, &tables.ifaces[&i]);
            if slot != expected {
                tables.ifaces.remove(&i);
            }
        }
    }
    Ok(held)
}

/// The elements of array `map` (`n` per generation, at `index(i)`) that are not all zero, by
/// `i`: one system call each.
fn nonempty<T: aya::Pod + Default + PartialEq>(
    map: &aya::maps::Array<aya::maps::MapData, T>,
    n: u32,
    name: &str,
    index: impl Fn(u32) -> u32,
) -> Result<rustc_hash::FxHashMap<u32, T>, DataplaneError> {
    let mut out = rustc_hash::FxHashMap::default();
    for i in 0..n {
        let v = map
            .get(&index(i), 0)
            .map_err(map_err(format!("read {name}")))?;
        if v != T::default() {
            out.insert(i, v);
        }
    }
    Ok(out)
}

/// See [`Dataplane::drift_probe`].
pub struct DriftProbe {
    pub(crate) maps: PolicyMaps,
    pub(crate) expected: [Arc<Tables>; 2],
    pub(crate) limit_slots: [Vec<u32>; 2],
}

impl DriftProbe {
    /// True when the maps hold something else than the agent believes. Blocking (one or two
    /// system calls per entry). An apply between the probe's creation and its read can make it
    /// report drift that is not there; the repair that follows compares again.
    pub fn drifted(&self) -> Result<bool, DataplaneError> {
        let actual = read_tables(&self.maps, &self.limit_slots)?;
        Ok(actual[0] != *self.expected[0] || actual[1] != *self.expected[1])
    }
}
