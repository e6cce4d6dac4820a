//! The IPv6 exact-prefix table (`SRC6_EXACT`, `SRC6_LENS`) and the filter in front of its long
//! levels (`SRC6_FILTER`): their layouts and hashes, shared by the program and the agent.
/// Sets per generation of the IPv6 exact-prefix table (`SRC6_EXACT`; a power of two).
pub const EXACT6_SETS: u32 = 1 << 14;
/// Ways per set of `SRC6_EXACT`.
pub const EXACT6_WAYS: usize = 5;
/// Most distinct IPv6 prefix lengths a rule set may have for `SRC6_EXACT` to answer for it
/// (one probe per length, longest first); a rule set with more is left to the trie.
pub const EXACT6_LENS: usize = 8;

/// One prefix of `SRC6_EXACT`: an IPv6 source entry of a rule set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Exact6Way {
    /// The network address's first 64 bits, as a number (`u64::from_be_bytes`).
    pub hi: u64,
    /// Its last 64 bits.
    pub lo: u64,
    /// [`EXACT4_USED`](crate::EXACT4_USED) | scope << 24 | leaf number; 0: an empty way.
    pub tag: u32,
    /// The prefix length, 0-128.
    pub len: u32,
}

/// Value of `SRC6_EXACT`: the IPv6 source entries of the rule sets with a direct index, by a
/// hash of (scope, prefix length, network address) ([`exact6_hash`]).
///
/// Why: an IPv6 source trie look-up is a helper call that walks up to 128 levels (76-95 ns
/// per packet at 10,000-100,000 rules, measured); an IPv6 blocklist names few prefix lengths
/// (/128 hosts, /64 subnets, /48 sites, /32 providers). The program masks the source to each
/// length the rule set has ([`Src6Lens`]), longest first, and probes one set per length with
/// inlined array reads: the first hit is the longest match.
///
/// A prefix that finds no room sets its scope's bit in `overflow`, and a probe that misses in
/// such a set asks the trie, which holds every entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Exact6Set {
    /// Bit `scope`: a prefix of that scope hashed here had no way; a miss asks the trie.
    pub overflow: u32,
    /// Bit [`exact6_filter_bit`] of every prefix the ways hold (as `Exact4Set::filter`).
    pub filter: u32,
    pub ways: [Exact6Way; EXACT6_WAYS],
}
const _: () = assert!(core::mem::size_of::<Exact6Set>() == 128);

/// Value of `SRC6_LENS` (index `gen * DIR_SCOPES + scope`): the IPv6 prefix lengths of a rule
/// set's source entries, longest first, for the probes of `SRC6_EXACT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Src6Lens {
    /// How many of `lens` are in use.
    pub count: u32,
    /// [`SRC6_FILTER_ON`] | key length << 8 | long levels: the rule set's networks of the
    /// first `long` levels (those of the key length and longer) have their first key-length
    /// bits in `SRC6_FILTER` ([`Filter6Block`]); 0: no filter (fewer than two long levels, or
    /// an older agent wrote this, which left the field as padding), every level is probed.
    pub filter: u32,
    /// Prefix lengths, longest first.
    pub lens: [u8; EXACT6_LENS],
}
const _: () = assert!(core::mem::size_of::<Src6Lens>() == 16);

/// `Src6Lens::filter` of a rule set whose long levels are in `SRC6_FILTER`.
pub const SRC6_FILTER_ON: u32 = 1 << 31;
/// The shortest key length of `SRC6_FILTER`: shorter levels are always probed (a key that
/// short would be shared by most addresses, and prune nothing).
pub const FILTER6_MIN_KEY: u32 = 32;
/// Bits per generation of `SRC6_FILTER` (a power of two): 2^21, so that even 100,000 networks
/// leave about 95% of the bits clear.
pub const FILTER6_BITS_LOG: u32 = 21;
/// Words (64 bits) per `SRC6_FILTER` value.
pub const FILTER6_BLOCK_WORDS: usize = 64;
/// `SRC6_FILTER` values per generation.
pub const FILTER6_BLOCKS: u32 = 1 << (FILTER6_BITS_LOG - 12);
const _: () = assert!(FILTER6_BLOCK_WORDS * 64 == 1 << 12);

/// Value of `SRC6_FILTER` (`FILTER6_BLOCKS` per generation): a bit per [`filter6_bit`] of the
/// first key-length bits ([`Src6Lens::filter`]) of every network of the long levels of
/// `SRC6_EXACT`, by rule set. A clear bit says that no network of those levels contains the
/// address, so that they are not probed.
///
/// Why: IPv6 traffic that no prefix covers (most of it, for a blocklist) otherwise probes
/// every level (44-52 ns per packet at eight levels, measured), each a hash and a set read,
/// where one hash and one bit tell that most addresses are far from every listed network.
/// Every network placed is in the filter, those that found no way in their set too, so that
/// the set's overflow still sends such an address to the trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Filter6Block {
    pub words: [u64; FILTER6_BLOCK_WORDS],
}
const _: () = assert!(core::mem::size_of::<Filter6Block>() == 512);

impl Default for Filter6Block {
    fn default() -> Self {
        Self {
            words: [0; FILTER6_BLOCK_WORDS],
        }
    }
}

/// The hash of a key of `SRC6_FILTER`: the first `len` bits of an address (`hi`, `lo`,
/// already masked) of rule set slot `scope`. One multiplication (Fibonacci hashing), not the
/// three of [`exact6_hash`]: the filter is read before every probe, hits included, and a bit
/// that two keys share costs only the probes it fails to rule out.
#[inline(always)]
pub const fn filter6_hash(scope: u32, len: u32, hi: u64, lo: u64) -> u32 {
    let x = hi ^ lo.rotate_left(29) ^ ((scope as u64) << 8 | len as u64) << 48;
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Where the bit of a key whose [`filter6_hash`] is `h` is: (block within a generation, word,
/// bit in the word), from the hash's high bits (the best mixed of a multiplication).
#[inline(always)]
pub const fn filter6_bit(h: u32) -> (u32, usize, u64) {
    let i = h >> (32 - FILTER6_BITS_LOG);
    (
        i >> 12,
        ((i >> 6) as usize) & (FILTER6_BLOCK_WORDS - 1),
        1 << (i & 63),
    )
}

/// The hash of an IPv6 network (`hi`, `lo`: its address, already masked to `len` bits) of rule
/// set slot `scope`: the MurmurHash3 64-bit finaliser of the words folded together, so that
/// neighbouring networks spread. Its low bits choose the set, the next five the filter bit.
#[inline(always)]
pub const fn exact6_hash(scope: u32, len: u32, hi: u64, lo: u64) -> u32 {
    let mut h = hi
        ^ lo.rotate_left(29)
        ^ ((scope as u64) << 8 | len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// The set of `SRC6_EXACT` (within a generation) of a network whose [`exact6_hash`] is `h`.
#[inline(always)]
pub const fn exact6_set(h: u32) -> u32 {
    h & (EXACT6_SETS - 1)
}

/// The bit of `Exact6Set::filter` of a network whose [`exact6_hash`] is `h`.
#[inline(always)]
pub const fn exact6_filter_bit(h: u32) -> u32 {
    1 << ((h >> EXACT6_SETS.trailing_zeros()) & 31)
}
