//! The source indexes in front of the source tries (see `gateway_common::DirBlock`,
//! `Exact4Set`, `Exact6Set`): inlined array reads that answer what a trie look-up, a helper
//! call whose cost grows with the policy, would. Anything they cannot answer says
//! [`DirAnswer::Trie`], and `prog::source_entry` asks the trie, which holds every entry.
use core::ptr::read_volatile;

use aya_ebpf::{macros::map, maps::Array};
use gateway_common::*;

use crate::parse::Parsed;
use crate::prog::{mask64, src_v4};

/// The IPv4 direct index in front of `SRC_V4` (see `gateway_common::DirBlock`): per generation,
/// `DIR_BLOCKS` blocks of /16 slots, `DIR_CHUNKS` blocks of /24 slots, and the source-entry
/// values the slots name (`DIR_LEAVES`, by leaf number: an entry id for the index).
#[map]
static SRC4_DIR: Array<DirBlock> = Array::pinned(2 * DIR_BLOCKS, 0);
#[map]
static SRC4_CHUNKS: Array<DirBlock> = Array::pinned(2 * DIR_CHUNKS, 0);
#[map]
static SRC4_LEAVES: Array<SrcValue> = Array::pinned(2 * DIR_LEAVES, 0);
/// Leaf numbers `DIR_LEAVES` to `LEAF_NUMBERS` (see `gateway_common::LEAF_NUMBERS`).
#[map]
static SRC4_LEAVES_HI: Array<SrcValue> = Array::pinned(2 * DIR_LEAVES, 0);
/// The /32 sources of the rule sets with a direct index, in front of it (see
/// `gateway_common::Exact4Set`): `EXACT4_SETS` sets per generation.
#[map]
static SRC4_EXACT: Array<Exact4Set> = Array::pinned(2 * EXACT4_SETS, 0);
/// The IPv6 sources of the rule sets with a direct index, in front of `SRC_V6` (see
/// `gateway_common::Exact6Set`): `EXACT6_SETS` sets per generation, and each rule set's prefix
/// lengths (`SRC6_LENS`). Their values are leaves of `SRC4_LEAVES`, by leaf number, as the
/// IPv4 index's are.
#[map]
static SRC6_EXACT: Array<Exact6Set> = Array::pinned(2 * EXACT6_SETS, 0);
#[map]
static SRC6_LENS: Array<Src6Lens> = Array::pinned(2 * DIR_SCOPES, 0);
/// The filter in front of the long levels of `SRC6_EXACT` (see `gateway_common::Filter6Block`):
/// `FILTER6_BLOCKS` per generation.
#[map]
static SRC6_FILTER: Array<Filter6Block> = Array::pinned(2 * FILTER6_BLOCKS, 0);
/// What the IPv4 direct index says about a source.
pub(crate) enum DirAnswer {
    /// No source entry of the rule set contains it.
    None,
    /// Its longest match.
    Leaf(&'static SrcValue),
    /// Ask the trie.
    Trie,
}

/// One probe of `SRC4_EXACT` for the /`len` network `net` of rule set slot `slot`: `Some` with
/// its leaf when a way holds it, or `Trie` for a miss in a set whose bit `overflow` says that
/// a network of its kind found no way there (or for a set out of range); `None` for a miss.
#[inline(always)]
fn exact_v4_probe(gen: u32, slot: u32, len: u32, net: u32, overflow: u32) -> Option<DirAnswer> {
    let h = exact4_long_hash(slot, len, net);
    let Some(set) = SRC4_EXACT.get(gen * EXACT4_SETS + (h & (EXACT4_SETS - 1))) else {
        return Some(DirAnswer::Trie);
    };
    if unsafe { read_volatile(&set.filter) } & exact4_filter_bit(h) != 0 {
        let want = exact4_tag(slot, len);
        let mut w = 0;
        while w < EXACT4_WAYS {
            let way = &set.ways[w];
            let tag = unsafe { read_volatile(&way.tag) };
            if unsafe { read_volatile(&way.addr) } == net && tag & !EXACT4_ENTRY_MASK == want {
                return Some(dir_leaf(gen, tag & EXACT4_ENTRY_MASK));
            }
            w += 1;
        }
    }
    if unsafe { read_volatile(&set.overflow) } & overflow != 0 {
        return Some(DirAnswer::Trie);
    }
    None
}

/// The exact-address table (`gateway_common::Exact4Set`): `Leaf` for a /32 source of rule set
/// slot `slot`, `Trie` for a miss in a set that overflowed for it, `None` for a miss (the
/// direct index then decides).
#[inline(always)]
fn exact_v4(gen: u32, slot: u32, addr: u32) -> DirAnswer {
    exact_v4_probe(gen, slot, 32, addr, 1 << slot).unwrap_or(DirAnswer::None)
}

/// The /25–/31 networks of `SRC4_EXACT` inside the /24 of `addr`, whose slot `v` (of kind
/// `DIR_TRIE`) names their lengths and the /24's own longest match (`DIR_LONGS_SHIFT`): each
/// length probed, longest first; the first network found is the longest match, and with none
/// the base answers. A miss in a set that overflowed for the slot asks the trie.
#[inline(always)]
fn exact_v4_longs(gen: u32, slot: u32, addr: u32, v: u32) -> DirAnswer {
    let longs = dir_longs(v);
    let mut i = 0u32;
    while i < 7 {
        // Bit 6 is a /31.
        let bit = 6 - i;
        i += 1;
        if longs & (1 << bit) == 0 {
            continue;
        }
        let len = 25 + bit;
        let net = addr & (u32::MAX << (32 - len));
        let overflow = 1 << (EXACT4_LONG_OVERFLOW + slot);
        if let Some(found) = exact_v4_probe(gen, slot, len, net, overflow) {
            return found;
        }
    }
    match v & DIR_BASE_MASK {
        0 => DirAnswer::None,
        base => dir_leaf(gen, base - 1),
    }
}

/// Leaf number `leaf` (from a direct-index slot or an exact table's way); one past the leaves
/// (`EXACT_NO_LEAF` among them) asks the trie.
#[inline(always)]
fn dir_leaf(gen: u32, leaf: u32) -> DirAnswer {
    let value = if leaf < DIR_LEAVES {
        SRC4_LEAVES.get(gen * DIR_LEAVES + leaf)
    } else if leaf < LEAF_NUMBERS {
        SRC4_LEAVES_HI.get(gen * DIR_LEAVES + leaf - DIR_LEAVES)
    } else {
        None
    };
    match value {
        Some(v) => DirAnswer::Leaf(v),
        None => DirAnswer::Trie,
    }
}

/// Whether `SRC6_FILTER` says that no network of the long levels of rule set slot `slot`
/// (`filter`: its `Src6Lens::filter`, with `SRC6_FILTER_ON`) contains the source; anything
/// unexpected says no, and the levels are probed.
#[inline(always)]
fn filtered_out(gen: u32, slot: u32, filter: u32, p: &Parsed) -> bool {
    let key = ((filter >> 8) & 0xff) as u8;
    if key > 128 {
        return false;
    }
    let h = filter6_hash(
        slot,
        key as u32,
        p.src_hi & mask64(key),
        p.src_lo & mask64(key.saturating_sub(64)),
    );
    let (block, word, bit) = filter6_bit(h);
    match SRC6_FILTER.get(gen * FILTER6_BLOCKS + block) {
        Some(b) => (unsafe { read_volatile(&b.words[word]) } & bit) == 0,
        None => false,
    }
}

/// The IPv6 exact-prefix table (`gateway_common::Exact6Set`): the source masked to each
/// prefix length of rule set slot `slot`, longest first; the first network found is the
/// longest match (`Leaf`). A miss in a set that overflowed for the slot asks the trie, as does
/// anything unexpected; a miss at every length is `None`. The long levels are skipped when
/// `SRC6_FILTER` says that none of their networks contains the source.
#[inline(always)]
pub(crate) fn exact_v6(gen: u32, slot: u32, p: &Parsed) -> DirAnswer {
    let Some(lens) = SRC6_LENS.get(gen * DIR_SCOPES + slot) else {
        return DirAnswer::Trie;
    };
    let count = unsafe { read_volatile(&lens.count) } as usize;
    let filter = unsafe { read_volatile(&lens.filter) };
    let want = EXACT4_USED | slot << 24;
    let mut i = 0;
    if filter & SRC6_FILTER_ON != 0 && filtered_out(gen, slot, filter, p) {
        i = (filter & 0xff) as usize;
    }
    while i < EXACT6_LENS {
        if i >= count {
            break;
        }
        let len = unsafe { read_volatile(&lens.lens[i]) };
        let (hi, lo) = (
            p.src_hi & mask64(len),
            p.src_lo & mask64(len.saturating_sub(64)),
        );
        let h = exact6_hash(slot, len as u32, hi, lo);
        let Some(set) = SRC6_EXACT.get(gen * EXACT6_SETS + exact6_set(h)) else {
            return DirAnswer::Trie;
        };
        if unsafe { read_volatile(&set.filter) } & exact6_filter_bit(h) != 0 {
            let mut w = 0;
            while w < EXACT6_WAYS {
                let way = &set.ways[w];
                let tag = unsafe { read_volatile(&way.tag) };
                if unsafe { read_volatile(&way.hi) } == hi
                    && unsafe { read_volatile(&way.lo) } == lo
                    && unsafe { read_volatile(&way.len) } == len as u32
                    && tag & !EXACT4_ENTRY_MASK == want
                {
                    return dir_leaf(gen, tag & EXACT4_ENTRY_MASK);
                }
                w += 1;
            }
        }
        if unsafe { read_volatile(&set.overflow) } & (1 << slot) != 0 {
            return DirAnswer::Trie;
        }
        i += 1;
    }
    DirAnswer::None
}

/// Slot `byte` of the chunk a `DIR_CHUNK` slot names; `None` for an id out of range.
#[inline(always)]
fn dir_chunk(gen: u32, slot: u32, byte: u8) -> Option<u32> {
    let chunk = slot & DIR_ID_MASK;
    if chunk >= DIR_CHUNKS {
        return None;
    }
    let block = SRC4_CHUNKS.get(gen * DIR_CHUNKS + chunk)?;
    Some(unsafe { read_volatile(&block.slots[byte as usize]) })
}

/// The IPv4 direct index (`gateway_common::DirBlock`): the /16 slot, then the chunks below
/// it. Anything unexpected (an id out of range, a third chunk) asks the trie, which is always
/// right. With `exact` (the rule set's /32s are in `SRC4_EXACT`, not in the index), an address
/// whose /16 slot says `DIR_SINGLES` is looked up there first: a /32 is the longest match
/// there is. A /24 slot that names lengths of `SRC4_EXACT` sends the address there
/// ([`exact_v4_longs`]), whatever `exact` says: only an agent that writes them names them.
#[inline(always)]
pub(crate) fn dir_v4(gen: u32, slot: u32, p: &Parsed, exact: bool) -> DirAnswer {
    let addr = src_v4(p);
    let [b0, b1, b2, b3] = addr.to_be_bytes();
    let Some(block) = SRC4_DIR.get(dir_block_index(gen, slot, b0)) else {
        return DirAnswer::Trie;
    };
    let mut v = unsafe { read_volatile(&block.slots[b1 as usize]) };
    if exact && v & DIR_SINGLES != 0 {
        match exact_v4(gen, slot, addr) {
            DirAnswer::None => {}
            found => return found,
        }
    }
    // Up to two chunks: a /16's /24s, then a /24's addresses.
    if v & DIR_KIND_MASK == DIR_CHUNK {
        v = match dir_chunk(gen, v, b2) {
            Some(v) => v,
            None => return DirAnswer::Trie,
        };
        if v & DIR_KIND_MASK == DIR_CHUNK {
            v = match dir_chunk(gen, v, b3) {
                Some(v) => v,
                None => return DirAnswer::Trie,
            };
        }
    }
    match v & DIR_KIND_MASK {
        DIR_NONE => DirAnswer::None,
        DIR_LEAF => dir_leaf(gen, v & DIR_ID_MASK),
        DIR_TRIE if dir_longs(v) != 0 => exact_v4_longs(gen, slot, addr, v),
        _ => DirAnswer::Trie,
    }
}
