//! Types shared by the kernel programs (`gateway-ebpf`) and the agent (`gateway-user`).
//!
//! Every map key and value is `#[repr(C)]`, made of fixed-width integers and byte arrays, with
//! explicit padding and a size assertion: the kernel hashes and compares raw bytes, so implicit
//! padding would make equal keys differ. Multi-byte fields that take part in LPM prefix matching
//! are stored big-endian (network order) as byte arrays, because the LPM trie matches bits from
//! the first byte's most significant bit.
//!
//! # Generations (atomic policy updates)
//!
//! Every map that describes *policy* (interfaces, source tries, port tables, limits) carries a
//! generation bit in its keys ([`GEN_BIT`]). The program reads [`Config::active_gen`] once per
//! packet and uses it in every lookup, so a packet is judged wholly by one generation. The agent
//! writes the next revision into the inactive generation (a diff against what that half already
//! holds, so a one-rule change writes a handful of entries), flips `active_gen` with one 4-byte
//! store, and waits for an RCU grace period before it touches the old half again.
#![no_std]

/// Top bit of a scope or entry id: the generation (0 or 1) the key belongs to.
pub const GEN_BIT: u32 = 1 << 31;
/// Mask of the id part of a scope or entry id.
pub const ID_MASK: u32 = !GEN_BIT;
/// "No rule" in a [`Verdict`].
pub const NO_RULE: u32 = u32::MAX;
/// Most rate limits one packet can be subject to (the data path checks at most this many).
pub const MAX_LIMITS: usize = 4;

/// Capacity of the per-rule counter array and of rule ids (rules + one default per rule set).
pub const MAX_RULE_IDS: u32 = 1 << 18;
/// Capacity of each source trie (per generation half x 2).
pub const MAX_SOURCE_ENTRIES: u32 = 1 << 19;
/// Capacity of the port table (LPM over entry/protocol/port).
pub const MAX_PORT_ENTRIES: u32 = 1 << 20;
/// Capacity of the interface configuration hash map (interfaces with an index of
/// [`FAST_IFINDEX`] or more; every configured interface is also recorded there).
pub const MAX_IFACES: u32 = 256;
/// Interfaces with an index below this are looked up in the `IFACE_TABLE` array (an inlined
/// array access instead of a hash look-up on every packet).
pub const FAST_IFINDEX: u32 = 4096;
/// Ways per set of the token-bucket table (`BUCKET_SETS`): a source's bucket lives in one of
/// the `BUCKET_WAYS` slots of the set its key hashes to.
pub const BUCKET_WAYS: usize = 4;
/// Sets of the token-bucket table (a power of two: the set is the hash masked).
pub const BUCKET_SET_COUNT: u32 = 1 << 17;
/// Buckets the table holds at once (sources being limited), `BUCKET_SET_COUNT * BUCKET_WAYS`.
pub const MAX_BUCKETS: u32 = BUCKET_SET_COUNT * BUCKET_WAYS as u32;

/// Rule sets (scopes) whose IPv4 sources have a direct index (`SRC4_DIR`): those whose scope
/// id is below this. Others are looked up in the trie alone.
pub const DIR_SCOPES: u32 = 4;
/// Chunks (the /24 slots of one /16, or the address slots of one /24) per generation in
/// `SRC4_CHUNKS`.
pub const DIR_CHUNKS: u32 = 4096;
/// Leaves (source-entry values, both families) per generation in `SRC4_LEAVES`, and as many
/// more in `SRC4_LEAVES_HI` (leaf numbers `DIR_LEAVES` and up; an older program asks the trie
/// for those). The direct index names an entry's leaf by its id, so entries whose id is below
/// [`LEAF_NUMBERS`] can be answered from it; an entry of the exact tables past that takes a
/// leaf number no slot uses.
pub const DIR_LEAVES: u32 = 1 << 16;
/// Leaf numbers per generation: below `DIR_LEAVES` in `SRC4_LEAVES`, the rest in
/// `SRC4_LEAVES_HI`. Why a second array, not a larger one: a pinned map keeps its size, and
/// an agent refuses pins of another layout; a new map is created beside the old ones.
pub const LEAF_NUMBERS: u32 = 2 * DIR_LEAVES;
/// Elements of `SRC4_DIR` per generation: one [`DirBlock`] per (scope, first address byte).
pub const DIR_BLOCKS: u32 = DIR_SCOPES * 256;

/// A slot of the IPv4 direct index: no source entry of the rule set contains any address of
/// the block (the all-zero value, so that a cleared slot means nothing matches).
pub const DIR_NONE: u32 = 0;
/// A slot: every address of the block has this source entry as its longest match; its value
/// is leaf `slot & DIR_ID_MASK` of `SRC4_LEAVES` (the entry id).
pub const DIR_LEAF: u32 = 1 << 30;
/// A slot: its addresses are told apart by chunk `slot & DIR_ID_MASK` of `SRC4_CHUNKS` (a /16's
/// /24s, or a /24's addresses).
pub const DIR_CHUNK: u32 = 2 << 30;
/// A slot: ask the trie (the index had no room for the block's chunk or entry). In a /24 slot
/// (a chunk of a /16), unless its bits at [`DIR_LONGS_SHIFT`] name prefix lengths: see there.
pub const DIR_TRIE: u32 = 3 << 30;
/// In a `DIR_TRIE` slot of a /24 that found no chunk of address slots, bit `len - 25` at this
/// shift: `SRC4_EXACT` holds a /`len` (25 to 31) of the rule set inside this /24, and the
/// slot's bits under [`DIR_BASE_MASK`] are the /24's own longest match (0: none; `n + 1`:
/// leaf `n`). The program probes those lengths, longest first; the first network found is
/// the longest match, and with none the base answers (a set that overflowed asks the trie).
/// All zero (what an older agent writes): the trie answers, as a program of an older build
/// does whatever the bits.
///
/// Why: a blocklist of 100,000 prefixes has /25–/31s in tens of thousands of /24s, ten times
/// the chunks; a probe per length of the /24 is a few inlined reads, the trie a helper call
/// whose cost grows with the policy.
pub const DIR_LONGS_SHIFT: u32 = 22;
/// See [`DIR_LONGS_SHIFT`].
pub const DIR_BASE_MASK: u32 = (1 << DIR_LONGS_SHIFT) - 1;
const _: () =
    assert!(LEAF_NUMBERS < DIR_BASE_MASK && (0x7f << DIR_LONGS_SHIFT) & !DIR_ID_MASK == 0);

/// A /24 slot whose /25–/31 prefixes are in `SRC4_EXACT` ([`DIR_LONGS_SHIFT`]): `longs` has bit
/// `len - 25` for each of their lengths (not 0), `base` is the /24's own longest match.
#[inline(always)]
pub const fn dir_longs_slot(longs: u32, base: Option<u32>) -> u32 {
    let base = match base {
        Some(leaf) => leaf + 1,
        None => 0,
    };
    DIR_TRIE | (longs & 0x7f) << DIR_LONGS_SHIFT | base & DIR_BASE_MASK
}

/// The lengths a /24 slot names in `SRC4_EXACT` (bit `len - 25`, [`DIR_LONGS_SHIFT`]); 0 for
/// any other slot.
#[inline(always)]
pub const fn dir_longs(slot: u32) -> u32 {
    if slot & DIR_KIND_MASK == DIR_TRIE {
        (slot >> DIR_LONGS_SHIFT) & 0x7f
    } else {
        0
    }
}

/// The leaf number a direct-index slot names: that of a `DIR_LEAF` slot, or the base of a
/// /24 slot with lengths in `SRC4_EXACT` ([`DIR_LONGS_SHIFT`]).
#[inline(always)]
pub const fn dir_slot_leaf(slot: u32) -> Option<u32> {
    if slot & DIR_KIND_MASK == DIR_LEAF {
        Some(slot & DIR_ID_MASK)
    } else if dir_longs(slot) != 0 && slot & DIR_BASE_MASK != 0 {
        Some((slot & DIR_BASE_MASK) - 1)
    } else {
        None
    }
}
/// Mask of a slot's kind.
pub const DIR_KIND_MASK: u32 = 3 << 30;
/// Mask of a slot's leaf or chunk id.
pub const DIR_ID_MASK: u32 = !(DIR_KIND_MASK | DIR_SINGLES);
/// Flag of a /16 slot (`SRC4_DIR`), whatever its kind: the rule set has a /32 source in this
/// /16, so the program looks the address up in `SRC4_EXACT` first. Addresses of the other /16s
/// skip that look-up.
pub const DIR_SINGLES: u32 = 1 << 29;

/// Value of the IPv4 direct index arrays (`SRC4_DIR`, `SRC4_CHUNKS`): 256 slots (`DIR_*`),
/// indexed by the next byte of the source address.
///
/// The source trie is a helper call per packet whose cost grows with the number of prefixes
/// (measured in docs/benchmarks.md); an array read is inlined by the JIT. A packet reads
/// `SRC4_DIR[gen, scope, byte 0].slots[byte 1]` (a /16); for a /16 that holds longer
/// prefixes, `SRC4_CHUNKS[gen, chunk].slots[byte 2]` (a /24); for a /24 that holds prefixes
/// longer than /24 (a /32 blocklist entry, a failsafe address), one more chunk by byte 3.
/// The trie keeps every entry: a slot the index had no room for says `DIR_TRIE`, and the trie
/// answers as before.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirBlock {
    /// `DIR_*` kind | id, by address byte.
    pub slots: [u32; 256],
}
const _: () = assert!(core::mem::size_of::<DirBlock>() == 1024);

impl Default for DirBlock {
    fn default() -> Self {
        Self {
            slots: [DIR_NONE; 256],
        }
    }
}

/// Index in `SRC4_DIR` of the block of rule set slot `scope` (below [`DIR_SCOPES`]) for
/// addresses whose first byte is `byte0`.
#[inline(always)]
pub const fn dir_block_index(gen: u32, scope: u32, byte0: u8) -> u32 {
    gen * DIR_BLOCKS + scope * 256 + byte0 as u32
}

/// Sets per generation of the IPv4 exact-address table (`SRC4_EXACT`; a power of two).
pub const EXACT4_SETS: u32 = 1 << 15;
/// Ways per set of `SRC4_EXACT`.
pub const EXACT4_WAYS: usize = 7;
/// `Exact4Way::tag` (and `Exact6Way::tag`) of a way in use; its scope is `(tag >> 24) & 3`,
/// its leaf number `tag & EXACT4_ENTRY_MASK`, and in `SRC4_EXACT` `32 - len` of its prefix is
/// at [`EXACT4_LEN_SHIFT`] ([`exact4_tag`]).
pub const EXACT4_USED: u32 = 1 << 31;
/// Mask of a way's leaf number (below [`LEAF_NUMBERS`], or [`EXACT_NO_LEAF`]).
pub const EXACT4_ENTRY_MASK: u32 = (1 << 24) - 1;
/// The leaf number of a way (`SRC4_EXACT`, `SRC6_EXACT`) whose entry has no leaf (its id is
/// [`LEAF_NUMBERS`] or more, and no spare number was left): an address that matches it asks the
/// trie. The way still says that
/// the network is here, so the other addresses of its set need not.
pub const EXACT_NO_LEAF: u32 = EXACT4_ENTRY_MASK;
const _: () = assert!(LEAF_NUMBERS < EXACT_NO_LEAF);

/// Where `Exact4Way::tag` holds `32 - len` of its prefix: 0 for a /32 (the tag a build that
/// knew only /32s wrote and compares with), 1 to 7 for a /31 to a /25.
pub const EXACT4_LEN_SHIFT: u32 = 26;
/// `Exact4Set::overflow` has bit `EXACT4_LONG_OVERFLOW + scope` when a /25–/31 of the scope
/// found no way in the set: apart from the /32s' bit, so that their look-up, which an older
/// program makes too, is not sent to the trie by longer prefixes.
pub const EXACT4_LONG_OVERFLOW: u32 = 8;

/// The tag of a way of `SRC4_EXACT` (leaf number 0) holding a /`len` (25 to 32) of rule set
/// slot `scope`.
#[inline(always)]
pub const fn exact4_tag(scope: u32, len: u32) -> u32 {
    EXACT4_USED | (32 - len) << EXACT4_LEN_SHIFT | scope << 24
}

/// One network of `SRC4_EXACT`: a /25–/32 source entry of a rule set (see [`Exact4Set`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Exact4Way {
    /// The network address, as a number (`u32::from_be_bytes` of its bytes).
    pub addr: u32,
    /// [`exact4_tag`] | leaf number; 0: an empty way.
    pub tag: u32,
}

/// Value of `SRC4_EXACT`: the /32 source entries of the rule sets with a direct index, by a
/// hash of (scope, address) ([`exact4_set`]), in front of the direct index.
///
/// Why: a blocklist of single addresses (the common kind: abuse lists, fail2ban) has its /32s
/// spread over the whole address space, so nearly every /16 would need a chunk of /24s and
/// every /32 a chunk of its own (2 KiB per address); with more than about 2,000 of them the
/// index runs out of chunks, and every address of a /16 without one asks the trie, named or
/// not. In this table a /32 costs one way of 8 bytes, looked up with inlined array reads; the
/// direct index then holds the prefixes of /31 and shorter only.
///
/// A /32 that finds no way (a full set) sets its scope's bit in `overflow`: an address of that
/// scope that misses in such a set asks the trie.
///
/// The rule sets' /25–/31 prefixes are here too, by a hash of (scope, length, network)
/// ([`exact4_long_hash`]), their length in the tag; they are probed only for the /24s that
/// found no chunk of address slots ([`DIR_LONGS_SHIFT`]). All of them, not only those: the
/// sets are then placed without waiting for the direct index, and a chunk given or taken
/// from one revision to the next rewrites no set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Exact4Set {
    /// Bit `scope`: a /32 of that scope hashed here had no way; a miss asks the trie. Bit
    /// [`EXACT4_LONG_OVERFLOW`] + `scope`: the same for a /25–/31.
    pub overflow: u32,
    /// Bit [`exact4_filter_bit`] of every address the ways hold: an address whose bit is clear
    /// is not here, and the ways are not compared (most addresses of a /16 that holds a /32
    /// are not /32s themselves).
    pub filter: u32,
    pub ways: [Exact4Way; EXACT4_WAYS],
}
const _: () = assert!(core::mem::size_of::<Exact4Set>() == 64);

/// The MurmurHash3 finaliser of `addr` of rule set slot `scope`, so that neighbouring
/// addresses spread: its low bits choose the set ([`exact4_set`]), the next five the filter bit
/// ([`exact4_filter_bit`]).
#[inline(always)]
pub const fn exact4_hash(scope: u32, addr: u32) -> u32 {
    let mut h = addr ^ scope.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The set of `SRC4_EXACT` (within a generation) that holds `addr` of rule set slot `scope`.
#[inline(always)]
pub const fn exact4_set(scope: u32, addr: u32) -> u32 {
    exact4_hash(scope, addr) & (EXACT4_SETS - 1)
}

/// [`exact4_hash`] of the /`len` network `addr` (25 to 32) of rule set slot `scope`: the
/// length is hashed in, so that a network and its first address do not share a set; a /32's
/// is [`exact4_hash`]'s, as a program that knows only /32s computes it.
#[inline(always)]
pub const fn exact4_long_hash(scope: u32, len: u32, addr: u32) -> u32 {
    exact4_hash(scope | (32 - len) << 8, addr)
}

/// The bit of `Exact4Set::filter` of an address whose [`exact4_hash`] is `h`.
#[inline(always)]
pub const fn exact4_filter_bit(h: u32) -> u32 {
    1 << ((h >> EXACT4_SETS.trailing_zeros()) & 31)
}

mod exact6;
pub use exact6::*;

/// Port direct tables (`PORT_DIR`): blocks per (generation, rule set slot, protocol class),
/// the first indexed by the port's high byte, the others chunks indexed by its low byte.
pub const PORT_DIR_BLOCKS: u32 = 16;
/// Verdicts per (generation, rule set slot, protocol class) in `PORT_VERDICTS`.
pub const PORT_DIR_VERDICTS: u32 = 64;
/// Protocol classes with a port direct table: 0 TCP, 1 UDP.
pub const PORT_DIR_CLASSES: u32 = 2;
/// A slot of a port direct table: verdict `slot & DIR_ID_MASK` of the table's verdicts.
/// (`DIR_NONE`: no port-table entry matches; `DIR_CHUNK`: see the chunk.)
pub const DIR_VERDICT: u32 = 1 << 30;

/// Index in `PORT_DIR` of block `block` (0: by high byte; 1 + chunk id) of the table of rule
/// set slot `scope`, protocol class `class`.
#[inline(always)]
pub const fn port_dir_index(gen: u32, scope: u32, class: u32, block: u32) -> u32 {
    ((gen * DIR_SCOPES + scope) * PORT_DIR_CLASSES + class) * PORT_DIR_BLOCKS + block
}

/// Index in `PORT_VERDICTS` of verdict `id` of the table of rule set slot `scope`, protocol
/// class `class`.
#[inline(always)]
pub const fn port_verdict_index(gen: u32, scope: u32, class: u32, id: u32) -> u32 {
    ((gen * DIR_SCOPES + scope) * PORT_DIR_CLASSES + class) * PORT_DIR_VERDICTS + id
}

/// Value of the single-entry `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The generation (0 or 1) packets are judged by.
    pub active_gen: u32,
    /// The key of the token-bucket table's hash ([`bucket_set`]): random, chosen by the first
    /// agent that finds it 0, and kept with the pinned maps so that a restarted agent finds its
    /// buckets where they were. Secret, so that a sender cannot pick sources that share a set.
    pub bucket_seed: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 8);

/// Key of the `IFACES` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// Generation (0 or 1).
    pub gen: u32,
    /// Interface index the packet arrived on.
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<IfaceKey>() == 8);

/// The interface's default action drops.
pub const IFACE_DEFAULT_DROP: u32 = 1;
/// The interface's policies are in audit mode: drops are counted, never done.
pub const IFACE_AUDIT: u32 = 2;
/// The interface is configured in this generation (a zeroed `IFACE_TABLE` slot is not).
pub const IFACE_CONFIGURED: u32 = 8;
/// `IfaceConfig::wildcard` holds the wildcard entry's verdict for every protocol and port: no
/// port-table lookup is needed for it.
pub const IFACE_WILDCARD_UNIFORM: u32 = 4;
/// The rule set's IPv4 sources have a direct index (`SRC4_DIR`) in this generation: its scope
/// id is below [`DIR_SCOPES`]. Without the flag (a generation written by an older agent) the
/// trie alone answers.
pub const IFACE_SRC4_DIR: u32 = 16;
/// The wildcard entry's TCP port table is in `PORT_DIR` (class 0) in this generation: a packet
/// reads two array slots instead of the `PORTS` trie. Set only for rule sets whose scope id is
/// below [`DIR_SCOPES`] and whose table fits ([`PORT_DIR_BLOCKS`], [`PORT_DIR_VERDICTS`]).
pub const IFACE_PORTS_TCP_DIR: u32 = 32;
/// As [`IFACE_PORTS_TCP_DIR`], for UDP (class 1).
pub const IFACE_PORTS_UDP_DIR: u32 = 64;
/// As [`IFACE_SRC4_DIR`], for a rule set that has /32 sources: they are in `SRC4_EXACT`, looked
/// up first for an address whose /16 slot has [`DIR_SINGLES`], and the direct index holds its
/// shorter prefixes only. A separate flag, not an
/// addition to `IFACE_SRC4_DIR`: a program of an older build, which knows nothing of
/// `SRC4_EXACT`, sees neither and asks the trie, which holds every entry.
pub const IFACE_SRC4_EXACT: u32 = 128;
/// The rule set's IPv6 sources are in `SRC6_EXACT` in this generation, with their prefix
/// lengths in `SRC6_LENS` (its scope id is below [`DIR_SCOPES`] and it has at most
/// [`EXACT6_LENS`] lengths). Without the flag the trie answers.
pub const IFACE_SRC6_EXACT: u32 = 256;

/// Value of the `IFACES` hash map and of the `IFACE_TABLE` array (index
/// `gen * FAST_IFINDEX + ifindex`): which rule set judges packets arriving on an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Scope id (with the generation bit) of the rule set in the source tries.
    pub scope: u32,
    /// Entry id (with the generation bit) holding the rules that name no source.
    pub wildcard_entry: u32,
    /// Rule id counting packets decided by `defaultAction`.
    pub default_rule: u32,
    /// `IFACE_*` flags.
    pub flags: u32,
    /// The wildcard entry's verdict when `IFACE_WILDCARD_UNIFORM` is set.
    pub wildcard: Verdict,
}
const _: () = assert!(core::mem::size_of::<IfaceConfig>() == 48);

/// `SrcValue::verdict` holds the entry's verdict for every protocol and port (its rules name
/// no protocol): no port-table lookup is needed. A blocklist entry is the common case.
pub const SRC_UNIFORM: u32 = 1;
/// Lock-out protection: a TCP packet from this (/32 or /128) source whose TCP *source* port is
/// [`src_failsafe_port`] passes before any rule is looked at (the replies of the node's
/// connection to its API server; `defaultAction: deny` must not cut the node off). Other
/// packets from the address are judged by the entry as usual.
pub const SRC_FAILSAFE: u32 = 2;
/// Shift of the failsafe TCP source port in `SrcValue::flags` (the upper 16 bits): the value
/// layout stays as it is.
pub const SRC_FAILSAFE_PORT_SHIFT: u32 = 16;

/// The `SrcValue::flags` bits that mark a failsafe entry for TCP source port `port`.
#[inline(always)]
pub const fn src_failsafe_flags(port: u16) -> u32 {
    SRC_FAILSAFE | ((port as u32) << SRC_FAILSAFE_PORT_SHIFT)
}

/// The failsafe TCP source port carried by `SrcValue::flags` (meaningful with `SRC_FAILSAFE`).
#[inline(always)]
pub const fn src_failsafe_port(flags: u32) -> u16 {
    (flags >> SRC_FAILSAFE_PORT_SHIFT) as u16
}

/// Value of the source tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcValue {
    /// Entry id (with the generation bit) of the entry's port table.
    pub entry: u32,
    /// `SRC_*` flags; the upper 16 bits hold the failsafe port when `SRC_FAILSAFE` is set.
    pub flags: u32,
    /// The verdict when `SRC_UNIFORM` is set.
    pub verdict: Verdict,
}
const _: () = assert!(core::mem::size_of::<SrcValue>() == 40);

/// Data of an IPv4 source-trie key: scope (big-endian) then the address. Prefix length is
/// `32 + cidr prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcV4 {
    /// Scope id with generation bit, big-endian.
    pub scope: [u8; 4],
    /// IPv4 source address, network order.
    pub addr: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<SrcV4>() == 8);

/// Data of an IPv6 source-trie key: scope (big-endian) then the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcV6 {
    /// Scope id with generation bit, big-endian.
    pub scope: [u8; 4],
    /// IPv6 source address, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SrcV6>() == 20);

/// Bits of the scope prefix in source-trie keys.
pub const SCOPE_BITS: u32 = 32;

/// Data of a port-table key: entry id (big-endian, with generation bit), IP protocol, then the
/// destination port (TCP/UDP) or `PORT_ICMP_BASE + type` (ICMP/ICMPv6), big-endian.
/// Prefix length: 32 = any protocol, 40 = this protocol, any port, 40 + n = port prefix.
/// The last byte is padding and never part of a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// Entry id with generation bit, big-endian.
    pub entry: [u8; 4],
    /// IP protocol number (IPv4 protocol / IPv6 next header after extension headers).
    pub proto: u8,
    /// Port or ICMP selector, big-endian.
    pub port: [u8; 2],
    /// Explicit padding, always zero.
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<PortKey>() == 8);

/// Port-table prefix length that matches any protocol.
pub const PORT_PREFIX_ANY_PROTO: u32 = 32;
/// Port-table prefix length that matches one protocol, any port.
pub const PORT_PREFIX_PROTO: u32 = 40;
/// ICMP types live at `PORT_ICMP_BASE + type` in the port field, so that the port value 0 stays
/// free to mean "no L4 selector" (non-first fragments) for every protocol.
pub const PORT_ICMP_BASE: u16 = 256;

/// Value of the port table: what the rules of one source entry say about one protocol/port range.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// The deny rule that matches (most specific source, then name order), or [`NO_RULE`].
    pub deny_rule: u32,
    /// The allow rule that matches (same order), or [`NO_RULE`].
    pub allow_rule: u32,
    /// How many of `limits` are used.
    pub n_limits: u32,
    /// Rule ids whose rate limits apply, in order (most specific source first).
    pub limits: [u32; MAX_LIMITS],
    /// Explicit padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Verdict>() == 32);

impl Default for Verdict {
    fn default() -> Self {
        Self {
            deny_rule: NO_RULE,
            allow_rule: NO_RULE,
            n_limits: 0,
            limits: [NO_RULE; MAX_LIMITS],
            _pad: 0,
        }
    }
}

/// Index in the `LIMITS` array of a rule's limit in a generation.
#[inline(always)]
pub const fn limit_index(gen: u32, rule: u32) -> u32 {
    gen * MAX_RULE_IDS + rule
}

/// Value of the `LIMITS` array: a rate limit as a GCRA (virtual-scheduling token bucket).
/// All zero (`interval_ns == 0`) means no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LimitConfig {
    /// Nanoseconds per token (1e9 / packetsPerSecond).
    pub interval_ns: u64,
    /// Burst tolerance: `(burst - 1) * interval_ns`.
    pub tolerance_ns: u64,
    /// IPv4 bucket prefix length.
    pub prefix_v4: u8,
    /// IPv6 bucket prefix length.
    pub prefix_v6: u8,
    /// [`LIMIT_COARSE_CLOCK`], [`LIMIT_COARSE_FIRST`] or 0 (an older agent's slot: 0, the
    /// precise clock).
    pub flags: u8,
    /// With [`LIMIT_COARSE_FIRST`]: milliseconds by which the coarse clock may lag the precise
    /// one (a tick, rounded up, and one more). Was padding, which older agents wrote as 0.
    pub coarse_margin_ms: u8,
    /// Explicit padding.
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<LimitConfig>() == 24);

/// The limit's burst tolerance holds at least one tick of the node's coarse clock
/// (`CLOCK_MONOTONIC_COARSE`): a packet checked against it alone may be timed by
/// `bpf_ktime_get_coarse_ns`, which reads no time stamp counter. The coarse clock lags by up to
/// a tick and moves a tick at a time, which such a bucket absorbs (the rate stays exact); a
/// bucket with less tolerance (burst 1 at more than one packet per tick) would admit one
/// packet per tick, so it keeps the precise clock.
pub const LIMIT_COARSE_CLOCK: u8 = 1;
/// A limit without a tick's tolerance whose interval is longer than
/// `LimitConfig::coarse_margin_ms` (a slow limit: fewer packets a second than ticks): a packet
/// checked against it alone is first timed by the coarse clock. If it is over the limit even at
/// that time plus the margin, it is over it at the precise time too, and is dropped without a
/// read of the time stamp counter (a flood far over its limit, the common case for a slow
/// limit); otherwise the precise clock decides and charges, as without the flag.
pub const LIMIT_COARSE_FIRST: u8 = 2;

/// One bucket of the token-bucket table: a GCRA cell for one (limited rule, truncated source).
/// Buckets carry no generation: an unrelated policy update never resets them.
///
/// The table (`BUCKET_SETS`) is an array of sets of [`BUCKET_WAYS`] buckets, not a hash map:
/// an array look-up is a few loads the JIT inlines, where a hash or LRU map look-up is a helper
/// call (about 150 ns of the 265 ns pass path, measured in docs/benchmarks.md). A source's
/// bucket is in the set [`bucket_set`] names; a new source takes an empty way, else one whose
/// bucket is full again (nothing is lost: a full bucket and no bucket admit the same), else the
/// way with the lowest `score`, so that a flood of new sources replaces its own buckets and
/// not those of sources that keep sending.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketWay {
    /// Rule id of the limit.
    pub rule: u32,
    /// 4 or 6; 0 marks an empty way.
    pub family: u16,
    /// Packets that found this bucket, saturating at [`BUCKET_SCORE_MAX`]: the replacement
    /// rule's measure of a source that keeps sending.
    pub score: u16,
    /// Source truncated to the limit's prefix, bytes 0-7 (big-endian; IPv4 in the top 32 bits).
    pub addr_hi: u64,
    /// Source truncated to the limit's prefix, bytes 8-15 (big-endian; 0 for IPv4).
    pub addr_lo: u64,
    /// Theoretical arrival time (ns, `bpf_ktime_get_ns` clock) of the next conforming packet.
    pub tat: u64,
}
const _: () = assert!(core::mem::size_of::<BucketWay>() == 32);

/// Most a [`BucketWay::score`] counts to.
pub const BUCKET_SCORE_MAX: u16 = u16::MAX;

/// Value of the `BUCKET_SETS` array: one set of ways.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketSet {
    /// The ways, in no particular order.
    pub ways: [BucketWay; BUCKET_WAYS],
}
const _: () = assert!(core::mem::size_of::<BucketSet>() == 128);

/// One round of a 64-bit mixer (the finaliser of MurmurHash3): every input bit reaches every
/// output bit, cheaply (two multiplications) in the BPF instruction set.
#[inline(always)]
const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The set of the token-bucket table that holds the bucket of (`rule`, `family`, source prefix
/// `addr_hi`/`addr_lo`), keyed by [`Config::bucket_seed`]. Not a cryptographic hash: the seed
/// is what keeps a sender from choosing sources that share one set (it sees no output of the
/// hash), as in the kernel's own hash tables.
#[inline(always)]
pub const fn bucket_set(seed: u32, rule: u32, family: u16, addr_hi: u64, addr_lo: u64) -> u32 {
    let k = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut h = mix64(k ^ ((rule as u64) << 16) ^ family as u64);
    h = mix64(h ^ addr_hi);
    h = mix64(h ^ addr_lo.wrapping_add(k));
    (h >> 32) as u32 & (BUCKET_SET_COUNT - 1)
}

/// Capacity of the `OFFENDERS` LRU map (source prefixes whose drops are tracked).
pub const MAX_OFFENDERS: u32 = 16384;
/// IPv4 sources are grouped by this prefix in `OFFENDERS`.
pub const OFFENDER_PREFIX_V4: u8 = 24;
/// IPv6 sources are grouped by this prefix in `OFFENDERS`.
pub const OFFENDER_PREFIX_V6: u8 = 48;
/// One dropped packet in `2^OFFENDER_SAMPLE_SHIFT` is recorded in `OFFENDERS` (with that
/// weight): the map is an estimate that costs one map update per 64 drops, not one per drop.
pub const OFFENDER_SAMPLE_SHIFT: u32 = 6;

/// Key of the `OFFENDERS` LRU map: a source prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffenderKey {
    /// 4 or 6.
    pub family: u32,
    /// The source truncated to `OFFENDER_PREFIX_V4`/`_V6` (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<OffenderKey>() == 20);

/// Value of the `OFFENDERS` map: sampled estimates of what a source prefix had dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffenderValue {
    /// Packets dropped by a deny rule or the default action (estimate).
    pub dropped: u64,
    /// Packets dropped by a rate limit (estimate).
    pub ratelimited: u64,
}
const _: () = assert!(core::mem::size_of::<OffenderValue>() == 16);

/// A packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frame as received).
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

/// Slot in [`RuleCounters`]: passed by this rule (an allow rule, or a default allow).
pub const SLOT_PASS: usize = 0;
/// Slot: dropped by this rule (a deny rule, or a default deny).
pub const SLOT_DROP: usize = 1;
/// Slot: dropped because this rule's rate limit was exceeded.
pub const SLOT_RATELIMIT: usize = 2;
/// Slot: would have been dropped by this rule (deny, default deny or rate limit) in audit mode.
pub const SLOT_AUDIT: usize = 3;
/// Number of slots.
pub const SLOTS: usize = 4;

/// Value of the per-CPU `RULE_COUNTERS` array, indexed by rule id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Indexed by `SLOT_*`.
    pub slots: [Counter; SLOTS],
}
const _: () = assert!(core::mem::size_of::<RuleCounters>() == 64);

/// Index in the per-CPU `STATS` array: non-IP frames (ARP, LLDP...), passed.
pub const STAT_NON_IP: u32 = 0;
/// Malformed or truncated IP/L4 headers, dropped.
pub const STAT_MALFORMED: u32 = 1;
/// Non-first fragments that no port-less rule judged, passed.
pub const STAT_FRAGMENT_PASS: u32 = 2;
/// Packets on an interface with no rule set in the active generation, passed.
pub const STAT_UNCONFIGURED: u32 = 3;
/// Unsupported encapsulation (stacked VLAN tags, too many IPv6 extension headers), dropped.
pub const STAT_UNSUPPORTED: u32 = 4;
/// Unused since the token buckets are an array (a bucket can no longer fail to be created);
/// the index stays reserved so that the `STATS` map keeps its layout.
pub const STAT_BUCKET_ERROR: u32 = 5;
/// TCP replies from a failsafe endpoint (the API server), passed whatever the policy says.
pub const STAT_FAILSAFE: u32 = 6;
/// Not a packet count: buckets of sources still being limited (not yet full again) that a new
/// source's bucket replaced, because every way of their set was in use (`BucketWay`). Each one
/// gives its source a full bucket again, so a high rate means the table is too small for the
/// sources being limited, or a flood of new sources.
pub const STAT_BUCKET_EVICTED: u32 = 7;
/// Number of `STAT_*` indexes.
pub const STATS: u32 = 8;

/// Drops first, then passes: verdict codes returned by the shared evaluation (not XDP codes).
pub const ACTION_PASS: u32 = 0;
/// Drop the packet.
pub const ACTION_DROP: u32 = 1;

/// Capacity of each blocklist map (`BANS_V4`, `BANS_V6`): entries per address family. When a
/// family's map is full, the agent makes room for a new ban by removing the entry nearest to
/// its expiry (the kernel itself refuses the insert: E2BIG for the hash, ENOSPC for the trie).
pub const MAX_BANS: u32 = 1 << 16;
/// `BanValue::kind`: banned by an AuthPolicy's `banOnAbuse` (too many 401s).
pub const BAN_AUTH: u32 = 0;
/// `BanValue::kind`: banned by a RateLimitPolicy's `banOnAbuse` (too many 429s).
pub const BAN_RATELIMIT: u32 = 1;
/// `BanValue::kind`: banned by hand (`tollgate bans add`).
pub const BAN_MANUAL: u32 = 2;
/// Entries of the per-CPU `BAN_COUNTERS` array (one per kind; the program masks the kind).
pub const BAN_KINDS: u32 = 4;
/// Bytes of `BanValue::policy`.
pub const BAN_POLICY_BYTES: usize = 96;

/// Index in the `BAN_STATE` array of the IPv4 blocklist's flag, [`BAN_STATE_V6`] the IPv6 one's.
/// A flag is non-zero while its family's blocklist may hold entries: the program looks a
/// source up in a blocklist only then (a hash or trie look-up is a helper call, paid by every
/// packet while the blocklist is empty, as it nearly always is). Writers set it after every
/// insert; a sweep that finds the family empty clears it, reads the map again, and sets it back
/// if a ban arrived meanwhile, so a ban is never hidden by a clear.
pub const BAN_STATE_V4: u32 = 0;
/// Index in the `BAN_STATE` array of the IPv6 blocklist's flag.
pub const BAN_STATE_V6: u32 = 1;

/// Key of the `BANS_V4` hash map: a banned IPv4 source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BanKeyV4 {
    /// IPv4 source address, network order.
    pub addr: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<BanKeyV4>() == 4);

/// Data of the `BANS_V6` LPM trie key: a banned IPv6 prefix (the key's prefix length, 0-128,
/// says how many leading bits count; the bits after it are zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BanKeyV6 {
    /// IPv6 prefix, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BanKeyV6>() == 16);

/// Value of the blocklist maps. The blocklist is not policy: it carries no generation, a
/// revision never touches it, and the agent's drift check ignores it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanValue {
    /// The ban ends at this `bpf_ktime_get_ns` time (CLOCK_MONOTONIC, ns): from then on the
    /// program ignores the entry, whether or not an agent is there to remove it.
    pub expires_ns: u64,
    /// When the ban was made (Unix seconds; for reports only).
    pub banned_at_unix: u64,
    /// `BAN_*`: the `BAN_COUNTERS` slot its drops are counted in.
    pub kind: u32,
    /// The prefix length of the entry's own key (32 in `BANS_V4`): a look-up in the trie
    /// answers with the value of the longest matching prefix, and this says which one it was.
    pub prefix_len: u32,
    /// `namespace/name` of the policy that banned (UTF-8, zero-padded, cut at
    /// `BAN_POLICY_BYTES`); `manual` for a ban by hand.
    pub policy: [u8; BAN_POLICY_BYTES],
}
const _: () = assert!(core::mem::size_of::<BanValue>() == 120);

impl Default for BanValue {
    fn default() -> Self {
        Self {
            expires_ns: 0,
            banned_at_unix: 0,
            kind: 0,
            prefix_len: 0,
            policy: [0; BAN_POLICY_BYTES],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), made of integers and byte arrays, with no implicit padding
    // (checked by the size assertions above).
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for IfaceKey {}
    unsafe impl aya::Pod for IfaceConfig {}
    unsafe impl aya::Pod for SrcV4 {}
    unsafe impl aya::Pod for SrcV6 {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for Verdict {}
    unsafe impl aya::Pod for SrcValue {}
    unsafe impl aya::Pod for OffenderKey {}
    unsafe impl aya::Pod for OffenderValue {}
    unsafe impl aya::Pod for LimitConfig {}
    unsafe impl aya::Pod for BucketWay {}
    unsafe impl aya::Pod for BucketSet {}
    unsafe impl aya::Pod for DirBlock {}
    unsafe impl aya::Pod for Exact4Set {}
    unsafe impl aya::Pod for Exact6Set {}
    unsafe impl aya::Pod for Src6Lens {}
    unsafe impl aya::Pod for Filter6Block {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for RuleCounters {}
    unsafe impl aya::Pod for BanKeyV4 {}
    unsafe impl aya::Pod for BanKeyV6 {}
    unsafe impl aya::Pod for BanValue {}
}
