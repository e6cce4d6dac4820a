//! The IPv4 direct index in front of the source trie (`SRC4_DIR`, `SRC4_CHUNKS`,
//! `SRC4_LEAVES`; the layout is `gateway_common::DirBlock`'s). Pure code: it turns the
//! `SRC_V4` entries of a revision into the index's contents, part of [`Tables`].
//!
//! Why: a trie look-up is a helper call whose cost grows with the number of prefixes, paid by
//! every packet; an array read is inlined by the JIT. For each rule set with a small enough
//! scope id, every /16 of the address space gets a slot saying which source entry is the
//! longest match of all its addresses (a leaf), that none is (the common case for traffic
//! that no rule names by source), or that its /24s differ (a chunk of 256 more slots); a /24
//! that holds a longer prefix gets a chunk of 256 address slots in turn, while chunks last;
//! a /24 left without one names the lengths of its /25–/31s, which the exact table holds
//! ([`super::exact`]), and its own longest match. The trie keeps every entry, so whatever the
//! index cannot hold (more chunks or entries than it has room for) says "ask the trie" and is
//! answered there, correctly, at the old cost.
//!
//! The index is a function of the `SRC_V4` entries and of where the previous revision put its
//! chunks: a /16 keeps its chunk id from one revision to the next, so that a one-rule change
//! rewrites a few blocks, not every chunk after it.
use std::collections::{BTreeMap, BTreeSet};

use gateway_common::{
    dir_longs, dir_longs_slot, dir_slot_leaf, DirBlock, SrcValue, Verdict, DIR_CHUNK, DIR_CHUNKS,
    DIR_ID_MASK, DIR_KIND_MASK, DIR_LEAF, DIR_NONE, DIR_SCOPES, DIR_SINGLES, DIR_TRIE, DIR_VERDICT,
    LEAF_NUMBERS, PORT_DIR_BLOCKS, PORT_DIR_VERDICTS,
};

use rustc_hash::FxHashMap as HashMap;

use super::tables::Tables;

/// How much room the index has (the kernel's arrays; smaller in tests).
#[derive(Debug, Clone, Copy)]
pub struct Room {
    /// Chunks per generation.
    pub chunks: u32,
    /// Leaves per generation (entry ids below this can be leaves).
    pub leaves: u32,
}

impl Default for Room {
    fn default() -> Self {
        Room {
            chunks: DIR_CHUNKS,
            leaves: LEAF_NUMBERS,
        }
    }
}

/// A chunk's place: (scope, /16) for a chunk of /24 slots, (scope, /24) for a chunk of
/// address slots.
type ChunkKey = (u32, u32);

/// The chunk ids `prev`'s index gives to /16s and to /24s.
fn chunk_ids(prev: &Tables) -> (HashMap<ChunkKey, u32>, HashMap<ChunkKey, u32>) {
    let (mut l2, mut l3) = (HashMap::default(), HashMap::default());
    for (&index, block) in &prev.dir4 {
        let (scope, byte0) = (index / 256, index % 256);
        for (byte1, &slot) in block.slots.iter().enumerate() {
            if slot & DIR_KIND_MASK == DIR_CHUNK {
                l2.insert((scope, byte0 << 8 | byte1 as u32), slot & DIR_ID_MASK);
            }
        }
    }
    for (&(scope, hi16), id) in &l2 {
        let Some(block) = prev.chunks4.get(id) else {
            continue;
        };
        for (byte2, &slot) in block.slots.iter().enumerate() {
            if slot & DIR_KIND_MASK == DIR_CHUNK {
                l3.insert((scope, hi16 << 8 | byte2 as u32), slot & DIR_ID_MASK);
            }
        }
    }
    (l2, l3)
}

/// Fills `t.dir4`, `t.chunks4` and `t.leaves4` from `t.src_v4`, keeping the chunk ids `prev`
/// gave to /16s and /24s that still need one. What an apply does (`tables::build`, which runs
/// [`slots`] on a thread of its own), in one call, for the tests.
#[cfg(test)]
pub(crate) fn build(t: &mut Tables, prev: &Tables, room: Room) {
    use gateway_common::SCOPE_BITS;
    let prefixes: Vec<Prefix> = t
        .src_v4
        .iter()
        .map(|((len, key), value)| Prefix {
            scope: u32::from_be_bytes(key.scope),
            addr: u32::from_be_bytes(key.addr),
            len: len - SCOPE_BITS,
            entry: value.entry,
        })
        .collect();
    let singles: Vec<Prefix> = prefixes
        .iter()
        .filter(|p| super::exact::exact4_len(p.len))
        .copied()
        .collect();
    let prefixes6: Vec<super::exact::Prefix6> = t
        .src_v6
        .iter()
        .map(|((len, key), value)| {
            let bits = u128::from_be_bytes(key.addr);
            super::exact::Prefix6 {
                scope: u32::from_be_bytes(key.scope),
                hi: (bits >> 64) as u64,
                lo: bits as u64,
                len: len - SCOPE_BITS,
                entry: value.entry,
            }
        })
        .collect();
    t.exact4 = super::exact::sets(&singles);
    let six = super::exact::sets6(&prefixes6);
    (t.lens6, t.exact6, t.filter6) = (six.lens, six.sets, six.filter);
    let (dir4, chunks4) = slots(prefixes, prev, room);
    let named = named(&dir4, &chunks4, room);
    let exact_leaves = super::exact::Leaves::new(
        room,
        &named,
        singles
            .iter()
            .map(|p| p.entry)
            .chain(prefixes6.iter().map(|p| p.entry)),
    );
    super::exact::number(&mut t.exact4, &mut t.exact6, &exact_leaves);
    t.dir4 = dir4;
    t.chunks4 = chunks4;
    let values = values_by_entry(t);
    leaves(t, named, &exact_leaves, &values);
}

/// An IPv4 source entry of a rule set, as the index sees it.
#[derive(Debug, Clone, Copy)]
pub struct Prefix {
    /// Scope id (no generation bit).
    pub scope: u32,
    /// Network address.
    pub addr: u32,
    /// Prefix length, 0-32.
    pub len: u32,
    /// Entry id (no generation bit).
    pub entry: u32,
}

/// The index's blocks and chunks for `prefixes` (those of scopes beyond `DIR_SCOPES` are
/// ignored, and so are the /32s: they are in the exact table, [`super::exact`], which the
/// program reads first; the /25–/31s of a /24 that gets no chunk are there too, and its slot
/// names their lengths). Needs nothing else of the revision, so that an apply computes it on a
/// thread of its own while the rest of the tables are built ([`super::tables::build`]).
pub fn slots(
    mut prefixes: Vec<Prefix>,
    prev: &Tables,
    room: Room,
) -> (HashMap<u32, DirBlock>, HashMap<u32, DirBlock>) {
    let mut dir4 = HashMap::default();
    // Sized up front: growing a map of 1 KiB values copies them.
    let mut chunks4 = HashMap::with_capacity_and_hasher(room.chunks as usize, Default::default());
    prefixes.retain(|p| p.scope < DIR_SCOPES);
    let (singles, mut prefixes): (Vec<Prefix>, Vec<Prefix>) =
        prefixes.into_iter().partition(|p| p.len == 32);
    // Shorter prefixes first: a longer one painted later is the longer match where the two
    // overlap (prefixes are nested or disjoint).
    prefixes.sort_unstable_by_key(|p| (p.scope, p.len, p.addr));
    let leaf = |entry: u32| {
        if entry < room.leaves {
            DIR_LEAF | entry
        } else {
            DIR_TRIE
        }
    };
    // Per scope: the /16 slots; the /24 slots of every /16 that needs them (level 2). The
    // prefixes longer than /24 are painted into address slots (level 3) only for the /24s that
    // get a chunk: with 100,000 rules tens of thousands of /24s hold one, far more than the
    // room for chunks.
    let mut l1: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut level2: BTreeMap<ChunkKey, [u32; 256]> = BTreeMap::new();
    let mut long: Vec<&Prefix> = Vec::new();
    for p in &prefixes {
        let slots = l1.entry(p.scope).or_insert_with(|| vec![DIR_NONE; 1 << 16]);
        let hi16 = p.addr >> 16;
        if p.len <= 16 {
            let n = 1usize << (16 - p.len);
            slots[hi16 as usize..hi16 as usize + n].fill(leaf(p.entry));
            continue;
        }
        // Every shorter prefix has been painted: the slot above is the longest match of the
        // addresses no longer prefix covers.
        let base = slots[hi16 as usize];
        let chunk = level2.entry((p.scope, hi16)).or_insert([base; 256]);
        let byte2 = ((p.addr >> 8) & 0xff) as usize;
        if p.len <= 24 {
            let n = 1usize << (24 - p.len);
            chunk[byte2..byte2 + n].fill(leaf(p.entry));
        } else {
            long.push(p);
        }
    }
    // The /24s with longer prefixes, in order, each with its slot in the /16's chunk (its
    // longest match of at most 24 bits) and its prefixes, shortest first (a stable sort keeps
    // the length order).
    long.sort_by_key(|p| (p.scope, p.addr >> 8));
    let mut level3: Vec<(ChunkKey, u32, &[&Prefix])> = Vec::new();
    let mut rest = long.as_slice();
    while let Some(first) = rest.first() {
        let key = (first.scope, first.addr >> 8);
        let n = rest
            .iter()
            .take_while(|p| (p.scope, p.addr >> 8) == key)
            .count();
        let above =
            &mut level2.get_mut(&(key.0, key.1 >> 8)).expect("painted")[(key.1 & 0xff) as usize];
        let group = &rest[..n];
        if group.iter().all(|p| leaf(p.entry) == *above) {
            // Nothing to tell apart (entries the index has no leaf for, in a /24 that asks
            // the trie already).
        } else {
            level3.push((key, *above, group));
            *above = PENDING;
        }
        rest = &rest[n..];
    }
    // A chunk whose 256 slots agree is no chunk: the slot above says it.
    level2.retain(|&(scope, hi16), slots| {
        if slots[0] != PENDING && slots.iter().all(|&s| s == slots[0]) {
            l1.get_mut(&scope).expect("scope painted")[hi16 as usize] = slots[0];
            false
        } else {
            true
        }
    });
    // Chunk ids: kept where the previous revision had one, else the lowest free; a /16 or /24
    // left without one (no room) asks the trie. The /16s' chunks first: they lead to the rest.
    let (old2, old3) = chunk_ids(prev);
    let mut used = BTreeSet::new();
    let mut keep = |key: &ChunkKey, old: &HashMap<ChunkKey, u32>| {
        let id = *old.get(key)?;
        (id < room.chunks && used.insert(id)).then_some(id)
    };
    let given2: HashMap<ChunkKey, u32> = level2
        .keys()
        .filter_map(|k| Some((*k, keep(k, &old2)?)))
        .collect();
    let given3: HashMap<ChunkKey, u32> = level3
        .iter()
        .filter_map(|(k, _, _)| Some((*k, keep(k, &old3)?)))
        .collect();
    let mut free = (0..room.chunks).filter(|id| !used.contains(id));
    let mut placed2: HashMap<ChunkKey, u32> = HashMap::default();
    for (key, slots) in &level2 {
        let l1_slot = &mut l1.get_mut(&key.0).expect("scope painted")[key.1 as usize];
        match given2.get(key).copied().or_else(|| free.next()) {
            Some(id) => {
                *l1_slot = DIR_CHUNK | id;
                chunks4.insert(id, DirBlock { slots: *slots });
                placed2.insert(*key, id);
            }
            None => *l1_slot = DIR_TRIE,
        }
    }
    for (key, base, group) in &level3 {
        let Some(&above) = placed2.get(&(key.0, key.1 >> 8)) else {
            continue; // Its /16 asks the trie.
        };
        let slot = match given3.get(key).copied().or_else(|| free.next()) {
            // No chunk: the lengths of the /24's prefixes in the exact table, where they all
            // are, and its own longest match (unless that has no leaf: then the trie).
            None if *base & DIR_KIND_MASK != DIR_TRIE => {
                let longs = group.iter().fold(0, |m, p| m | 1 << (p.len - 25));
                dir_longs_slot(longs, dir_slot_leaf(*base))
            }
            Some(id) => {
                let mut chunk = DirBlock {
                    slots: [*base; 256],
                };
                for p in group.iter() {
                    let start = (p.addr & 0xff) as usize;
                    chunk.slots[start..start + (1usize << (32 - p.len))].fill(leaf(p.entry));
                }
                chunks4.insert(id, chunk);
                DIR_CHUNK | id
            }
            None => DIR_TRIE,
        };
        chunks4.get_mut(&above).expect("placed").slots[(key.1 & 0xff) as usize] = slot;
    }
    // The /16s that hold a /32 (in the exact table) say so, whatever their slot.
    for p in &singles {
        let slots = l1.entry(p.scope).or_insert_with(|| vec![DIR_NONE; 1 << 16]);
        slots[(p.addr >> 16) as usize] |= DIR_SINGLES;
    }
    for (scope, slots) in &l1 {
        for (byte0, block) in slots.chunks_exact(256).enumerate() {
            if block.iter().any(|&s| s != DIR_NONE) {
                let mut b = DirBlock::default();
                b.slots.copy_from_slice(block);
                dir4.insert(scope * 256 + byte0 as u32, b);
            }
        }
    }
    // Kept until the next revision (the chunk ids it reuses): the room sized up front is 8 MiB
    // of 1 KiB values, which a policy with few long prefixes never fills.
    chunks4.shrink_to_fit();
    (dir4, chunks4)
}

/// A /24 slot whose chunk of address slots is being decided (never left in a table: every
/// one becomes `DIR_CHUNK | id` or `DIR_TRIE`).
const PENDING: u32 = DIR_CHUNK | DIR_ID_MASK;

/// The leaf numbers (entry ids) the slots of `dir4` and `chunks4` name, as flags by number.
pub fn named(
    dir4: &HashMap<u32, DirBlock>,
    chunks4: &HashMap<u32, DirBlock>,
    room: Room,
) -> Vec<bool> {
    let mut named = vec![false; room.leaves as usize];
    for block in dir4.values().chain(chunks4.values()) {
        for &s in &block.slots {
            if let Some(n) = dir_slot_leaf(s) {
                named[n as usize] = true;
            }
        }
    }
    named
}

/// The `SRC_V4` and `SRC_V6` values of `t` by entry id, what [`leaves`] copies (`tables::build`
/// gathers them while the index thread is still at work).
pub fn values_by_entry(t: &Tables) -> Vec<Option<SrcValue>> {
    let mut out: Vec<Option<SrcValue>> = Vec::new();
    for value in t.src_v4.values().chain(t.src_v6.values()) {
        let i = value.entry as usize;
        if out.len() <= i {
            out.resize(i + 1, None);
        }
        out[i] = Some(*value);
    }
    out
}

/// Fills `t.leaves4`: for each leaf number some slot of `t.dir4`/`t.chunks4` (`named`, as
/// [`named`] gives them) or some way of `t.exact4`/`t.exact6` names, the value (`values`, by
/// entry id, as [`values_by_entry`] gives them) of its entry (`leaves` says which entry a
/// spare number was given to).
pub fn leaves(
    t: &mut Tables,
    mut named: Vec<bool>,
    leaves: &super::exact::Leaves,
    values: &[Option<SrcValue>],
) {
    t.leaves4.clear();
    for n in super::exact::leaf_numbers(&t.exact4, &t.exact6) {
        named[n as usize] = true;
    }
    t.leaves4
        .reserve_numbers(named.iter().rposition(|&named| named).map_or(0, |n| n + 1));
    for (n, _) in named.iter().enumerate().filter(|&(_, &named)| named) {
        let entry = leaves.entry(n as u32) as usize;
        if let Some(value) = values.get(entry).and_then(Option::as_ref) {
            t.leaves4.insert(n as u32, *value);
        }
    }
}

/// A port direct table, as [`ports`] builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortDir {
    /// Blocks by number within the table (0: by high byte; 1 + chunk id).
    pub blocks: Vec<(u32, DirBlock)>,
    /// Verdicts by id within the table.
    pub verdicts: Vec<(u32, Verdict)>,
}

/// The port direct table of one protocol of a rule set's wildcard entry: its blocks (0: by
/// the port's high byte, then chunks by the low byte) and its verdicts, by index; `None` when
/// it does not fit (more chunks or distinct verdicts than a table has room for), and the
/// `PORTS` trie answers as before.
///
/// `base` is the verdict of the entry's any-protocol rules, `prefixes` the protocol's port
/// prefixes `(value, length)` with their verdicts: the trie's longest match is the longest
/// port prefix containing the port, else `base`.
pub fn ports(base: Option<Verdict>, prefixes: &[((u16, u8), Verdict)]) -> Option<PortDir> {
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut id_of = |v: Verdict| -> Option<u32> {
        let id = match verdicts.iter().position(|w| *w == v) {
            Some(i) => i,
            None => {
                verdicts.push(v);
                verdicts.len() - 1
            }
        };
        (id < PORT_DIR_VERDICTS as usize).then_some(DIR_VERDICT | id as u32)
    };
    let mut slots = vec![DIR_NONE; 1 << 16];
    if let Some(b) = base {
        slots.fill(id_of(b)?);
    }
    let mut sorted: Vec<&((u16, u8), Verdict)> = prefixes.iter().collect();
    sorted.sort_by_key(|((_, len), _)| *len);
    for &&((value, len), v) in &sorted {
        let n = 1usize << (16 - u32::from(len.min(16)));
        let start = usize::from(value) & !(n - 1);
        slots[start..start + n].fill(id_of(v)?);
    }
    let mut blocks = Vec::new();
    let mut top = DirBlock::default();
    for (hi, part) in slots.chunks_exact(256).enumerate() {
        if part.iter().all(|&s| s == part[0]) {
            top.slots[hi] = part[0];
            continue;
        }
        let chunk = blocks.len() as u32;
        if chunk + 1 >= PORT_DIR_BLOCKS {
            return None;
        }
        top.slots[hi] = DIR_CHUNK | chunk;
        let mut b = DirBlock::default();
        b.slots.copy_from_slice(part);
        blocks.push((1 + chunk, b));
    }
    if top != DirBlock::default() {
        blocks.push((0, top));
    }
    // Only the verdicts some slot names (a verdict painted over everywhere is not written:
    // what the kernel holds is then exactly what packets can reach, which the drift check
    // reads back).
    let named: BTreeSet<u32> = blocks
        .iter()
        .flat_map(|(_, b)| b.slots.iter())
        .filter(|&&s| s & DIR_KIND_MASK == DIR_VERDICT)
        .map(|&s| s & DIR_ID_MASK)
        .collect();
    let verdicts = verdicts
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .filter(|(i, _)| named.contains(i))
        .collect();
    Some(PortDir { blocks, verdicts })
}

/// The verdict a port direct table (as [`ports`] returns it) gives for `port`: what the
/// program does (`wildcard_ports_dir` in gateway-ebpf), for the tests.
pub fn port_lookup(table: &PortDir, port: u16) -> Option<Verdict> {
    let slot = |i: u32, byte: u8| {
        table
            .blocks
            .iter()
            .find(|(b, _)| *b == i)
            .map_or(DIR_NONE, |(_, b)| b.slots[byte as usize])
    };
    let [hi, lo] = port.to_be_bytes();
    let mut v = slot(0, hi);
    if v & DIR_KIND_MASK == DIR_CHUNK {
        v = slot(1 + (v & DIR_ID_MASK), lo);
    }
    match v & DIR_KIND_MASK {
        DIR_VERDICT => table
            .verdicts
            .iter()
            .find(|(i, _)| *i == v & DIR_ID_MASK)
            .map(|(_, v)| *v),
        _ => None,
    }
}

/// What the index says about a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No source entry of the rule set contains it.
    None,
    /// The entry that is its longest match.
    Leaf(SrcValue),
    /// Ask the trie.
    Trie,
}

/// What the index gives for `addr` in rule set `scope`, the exact table first: what the
/// program does (`exact_v4`, then `dir_v4` in gateway-ebpf), for the tests.
pub fn lookup(t: &Tables, scope: u32, addr: [u8; 4]) -> Answer {
    let slot =
        |block: Option<&DirBlock>, byte: u8| block.map_or(DIR_NONE, |b| b.slots[byte as usize]);
    let mut v = slot(t.dir4.get(&(scope * 256 + u32::from(addr[0]))), addr[1]);
    if v & DIR_SINGLES != 0 {
        if let Some(answer) = super::exact::lookup(t, scope, u32::from_be_bytes(addr)) {
            return answer;
        }
    }
    for byte in [addr[2], addr[3]] {
        if v & DIR_KIND_MASK != DIR_CHUNK {
            break;
        }
        match t.chunks4.get(&(v & DIR_ID_MASK)) {
            Some(chunk) => v = slot(Some(chunk), byte),
            None => return Answer::Trie,
        }
    }
    match v & DIR_KIND_MASK {
        DIR_NONE => Answer::None,
        DIR_LEAF => t
            .leaves4
            .get(&(v & DIR_ID_MASK))
            .map_or(Answer::Trie, |v| Answer::Leaf(*v)),
        DIR_TRIE if dir_longs(v) != 0 => {
            super::exact::lookup_longs(t, scope, u32::from_be_bytes(addr), v)
        }
        _ => Answer::Trie,
    }
}

#[cfg(test)]
mod tests;

/// What building the index costs at 100,000 prefixes (an apply rebuilds it): run by hand with
/// `cargo test --release -p tollgate-dataplane dir_build_cost -- --ignored --nocapture`.
#[cfg(test)]
#[test]
#[ignore = "a measurement, not a test"]
fn dir_build_cost() {
    use gateway_common::{SrcV4, Verdict, SCOPE_BITS};
    let mut t = Tables::default();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for entry in 0..100_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 16 + (seed >> 8) as u32 % 17;
        let mask = u32::MAX << (32 - len);
        let addr = (0x0a00_0000 | (seed >> 32) as u32 & 0x00ff_ffff) & mask;
        t.src_v4.insert(
            (
                SCOPE_BITS + len,
                SrcV4 {
                    scope: 0u32.to_be_bytes(),
                    addr: addr.to_be_bytes(),
                },
            ),
            SrcValue {
                entry,
                flags: 0,
                verdict: Verdict::default(),
            },
        );
    }
    let prev = {
        let mut p = t.clone();
        build(&mut p, &Tables::default(), Room::default());
        p
    };
    for _ in 0..3 {
        let start = std::time::Instant::now();
        build(&mut t, &prev, Room::default());
        eprintln!(
            "dir::build of {} prefixes: {:?} ({} blocks, {} chunks, {} leaves)",
            t.src_v4.len(),
            start.elapsed(),
            t.dir4.len(),
            t.chunks4.len(),
            t.leaves4.len()
        );
    }
}
