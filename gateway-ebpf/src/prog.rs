//! The L4 filter: one XDP program (and the same logic as a TC classifier for interfaces where
//! XDP cannot attach). See `gateway-common` for the map layout and the generation scheme, and
//! `gateway-user/compile/src/l4/tables.rs` for how the tables are built.
//!
//! Verdicts for packets the policy cannot judge (documented in the README, tested):
//! - non-IP frames (ARP, LLDP, ...): pass — L4 policy says nothing about them, and dropping ARP
//!   would cut the node off;
//! - truncated or malformed IPv4/IPv6/TCP/UDP/ICMP headers, first fragments too short to hold
//!   the L4 header (RFC 1858 "tiny fragments"), and IPv6 packets from an IPv4-mapped source:
//!   drop;
//! - stacked VLAN tags, or more than `MAX_EXT_HEADERS` IPv6 extension headers: drop (the program
//!   cannot see what they carry, and passing them would be a way around the policy);
//! - the two drops above only where a rule set is enforced: on an interface no rule set
//!   applies to, or one in audit mode, they pass (counted all the same);
//! - non-first fragments: judged by the rules that name no ports or ICMP types (source and
//!   protocol); if none matches they pass, since their first fragment carried the ports and was
//!   judged, and the stack cannot reassemble them without it;
//! - TCP packets from a failsafe endpoint (the API server the node talks to) whose TCP source
//!   port is the endpoint's: pass before any rule (lock-out protection; banned sources are
//!   still dropped first).
use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::MaybeUninit,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::{classifier, map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use gateway_common::*;

use crate::index::{dir_v4, exact_v6, DirAnswer};
use crate::parse::{parse, Parsed, IPPROTO_TCP, IPPROTO_UDP};

#[map]
static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
static IFACES: HashMap<IfaceKey, IfaceConfig> = HashMap::pinned(MAX_IFACES * 2, 0);
#[map]
static IFACE_TABLE: Array<IfaceConfig> = Array::pinned(2 * FAST_IFINDEX, 0);
#[map]
static SRC_V4: LpmTrie<SrcV4, SrcValue> = LpmTrie::pinned(MAX_SOURCE_ENTRIES, 0);
#[map]
static SRC_V6: LpmTrie<SrcV6, SrcValue> = LpmTrie::pinned(MAX_SOURCE_ENTRIES, 0);
/// The wildcard entries' TCP and UDP port tables as arrays (`gateway_common::port_dir_index`).
#[map]
static PORT_DIR: Array<DirBlock> =
    Array::pinned(2 * DIR_SCOPES * PORT_DIR_CLASSES * PORT_DIR_BLOCKS, 0);
#[map]
static PORT_VERDICTS: Array<Verdict> =
    Array::pinned(2 * DIR_SCOPES * PORT_DIR_CLASSES * PORT_DIR_VERDICTS, 0);
#[map]
static PORTS: LpmTrie<PortKey, Verdict> = LpmTrie::pinned(MAX_PORT_ENTRIES, 0);
#[map]
static LIMITS: Array<LimitConfig> = Array::pinned(2 * MAX_RULE_IDS, 0);
/// The token buckets: an array of sets (see `gateway_common::BucketWay`). An array look-up is
/// inlined by the JIT; the LRU hash map this replaces cost a helper call per packet.
#[map]
static BUCKET_SETS: Array<BucketSet> = Array::pinned(BUCKET_SET_COUNT, 0);
#[map]
static OFFENDERS: LruHashMap<OffenderKey, OffenderValue> = LruHashMap::pinned(MAX_OFFENDERS, 0);
#[map]
static RULE_COUNTERS: PerCpuArray<RuleCounters> = PerCpuArray::pinned(MAX_RULE_IDS, 0);
#[map]
static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(gateway_common::STATS, 0);
/// The blocklist the L7 tier fills (`banOnAbuse`): not policy, no generation. Allocated on
/// insert (BPF_F_NO_PREALLOC): an empty blocklist costs no memory. IPv4 bans are per address;
/// IPv6 bans are prefixes (a /64 by default: one end site, whose addresses a client can rotate
/// through at will), hence a longest-prefix-match trie.
#[map]
static BANS_V4: HashMap<BanKeyV4, BanValue> = HashMap::pinned(MAX_BANS, BPF_F_NO_PREALLOC);
#[map]
static BANS_V6: LpmTrie<BanKeyV6, BanValue> = LpmTrie::pinned(MAX_BANS, 0);
/// Per family, whether the blocklist may hold entries (`gateway_common::BAN_STATE_V4`).
#[map]
static BAN_STATE: Array<u32> = Array::pinned(2, 0);
/// Packets dropped (or passed in audit mode) because their source is banned, per `BAN_*` kind.
#[map]
static BAN_COUNTERS: PerCpuArray<RuleCounters> = PerCpuArray::pinned(BAN_KINDS, 0);

const BPF_F_NO_PREALLOC: u32 = 1;

/// Each CPU's copy of the coarse clock (`tick_clock`). Not pinned: a cache, filled again by the
/// first packet of each jiffy.
#[repr(C)]
struct TickClock {
    /// The jiffy in which `coarse_ns` was read.
    jiffies: u64,
    /// `bpf_ktime_get_coarse_ns` as read then.
    coarse_ns: u64,
}

#[map]
static TICK_CLOCK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

/// The coarse clock (`CLOCK_MONOTONIC_COARSE`), read through the kernel's helper once a jiffy
/// on each CPU: the helper cost 14-15 ns a call where `bpf_jiffies64`, which the verifier
/// inlines into one load, and this per-CPU copy cost 1-2 (round 22 of
/// docs/benchmarks-issue13-part4.md). Within a jiffy the coarse clock does not move, so the
/// copy is the clock, but for one window: the kernel counts the jiffy a moment before it moves
/// the coarse time (`tick_do_update_jiffies64`, then `update_wall_time`), and a read between
/// the two gets the time of the jiffy before. A read equal to the copy is such a read and is
/// not kept; one on a CPU whose copy is older than the jiffy before is kept, and that CPU's
/// clock is then a jiffy later than the coarse clock's own lag until the next jiffy. A later
/// clock only ever judges a bucket emptier than it is (stricter, never looser). The fields are
/// written time first: a program that runs between the two writes on this CPU finds the old
/// jiffy and reads the helper.
#[inline(always)]
fn tick_clock() -> u64 {
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(c) = TICK_CLOCK.get_ptr_mut(0) else {
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    unsafe {
        if (*c).jiffies == jiffies {
            return (*c).coarse_ns;
        }
        let now = bpf_ktime_get_coarse_ns();
        if now != (*c).coarse_ns {
            write_volatile(&mut (*c).coarse_ns, now);
            write_volatile(&mut (*c).jiffies, jiffies);
        }
        now
    }
}

#[inline(always)]
fn count_stat(index: u32, len: u64) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Counts a packet in `slot` of `rule`'s per-CPU counters; returns that slot's packet count on
/// this CPU after it (0 when `rule` is out of range).
#[inline(always)]
fn count_rule(rule: u32, slot: usize, len: u64) -> u64 {
    if let Some(c) = RULE_COUNTERS.get_ptr_mut(rule) {
        if slot < SLOTS {
            unsafe {
                let n = (*c).slots[slot].packets + 1;
                (*c).slots[slot].packets = n;
                (*c).slots[slot].bytes += len;
                return n;
            }
        }
    }
    0
}

/// The kind of the source's ban when it is banned and the ban has not expired. An expired
/// entry is ignored here, whether or not an agent is left to remove it.
///
/// An IPv6 source is judged by the longest banned prefix that contains it. The agent keeps
/// nested bans ordered (a more specific ban never ends before one that contains it, see
/// `dataplane::bans`), so when the longest one has expired, so have all that contain it.
#[inline(always)]
fn banned(p: &Parsed) -> Option<u32> {
    let family = if p.v6 { BAN_STATE_V6 } else { BAN_STATE_V4 };
    match BAN_STATE.get(family) {
        Some(flag) if unsafe { read_volatile(flag) } != 0 => {}
        _ => return None,
    }
    let v = if p.v6 {
        BANS_V6.get(Key::new(128, BanKeyV6 { addr: src_bytes(p) }))
    } else {
        unsafe {
            BANS_V4.get(&BanKeyV4 {
                addr: src_v4(p).to_be_bytes(),
            })
        }
    }?;
    let expires = unsafe { read_volatile(&v.expires_ns) };
    // The coarse clock: a ban held a jiffy or two past its end costs nothing, and a banned
    // source's flood is spared the precise clock's 30 ns a packet (round 22).
    let now = tick_clock();
    if now < expires {
        Some(unsafe { read_volatile(&v.kind) })
    } else {
        None
    }
}

#[inline(always)]
fn count_ban(kind: u32, slot: usize, len: u64) {
    if let Some(c) = BAN_COUNTERS.get_ptr_mut(kind & (BAN_KINDS - 1)) {
        if slot < SLOTS {
            unsafe {
                (*c).slots[slot].packets += 1;
                (*c).slots[slot].bytes += len;
            }
        }
    }
}

#[inline(always)]
fn port_verdict(entry: u32, p: &Parsed) -> Option<&'static Verdict> {
    let key = Key::new(
        64,
        PortKey {
            entry: entry.to_be_bytes(),
            proto: p.proto,
            port: p.port.to_be_bytes(),
            _pad: 0,
        },
    );
    PORTS.get(&key)
}

/// The wildcard entry's verdict for a TCP or UDP packet from its port direct table, when the
/// rule set has one: `Some(verdict or none)`; `None` sends the packet to the `PORTS` trie.
#[inline(always)]
fn wildcard_ports_dir(
    gen: u32,
    iface: &IfaceConfig,
    p: &Parsed,
) -> Option<Option<&'static Verdict>> {
    let class = match p.proto {
        IPPROTO_TCP if iface.flags & IFACE_PORTS_TCP_DIR != 0 => 0,
        IPPROTO_UDP if iface.flags & IFACE_PORTS_UDP_DIR != 0 => 1,
        _ => return None,
    };
    let slot = iface.scope & ID_MASK;
    if slot >= DIR_SCOPES {
        return None;
    }
    let [hi, lo] = p.port.to_be_bytes();
    let block = PORT_DIR.get(port_dir_index(gen, slot, class, 0))?;
    let mut v = unsafe { read_volatile(&block.slots[hi as usize]) };
    if v & DIR_KIND_MASK == DIR_CHUNK {
        let chunk = v & DIR_ID_MASK;
        if chunk + 1 >= PORT_DIR_BLOCKS {
            return None;
        }
        let block = PORT_DIR.get(port_dir_index(gen, slot, class, 1 + chunk))?;
        v = unsafe { read_volatile(&block.slots[lo as usize]) };
    }
    match v & DIR_KIND_MASK {
        DIR_NONE => Some(None),
        DIR_VERDICT => {
            let id = v & DIR_ID_MASK;
            if id >= PORT_DIR_VERDICTS {
                return None;
            }
            Some(Some(
                PORT_VERDICTS.get(port_verdict_index(gen, slot, class, id))?,
            ))
        }
        _ => None,
    }
}

#[inline(always)]
fn source_entry(gen: u32, iface: &IfaceConfig, p: &Parsed) -> Option<&'static SrcValue> {
    let scope = iface.scope;
    let slot = scope & ID_MASK;
    if p.v6 {
        if iface.flags & IFACE_SRC6_EXACT != 0 && slot < DIR_SCOPES {
            match exact_v6(gen, slot, p) {
                DirAnswer::None => return None,
                DirAnswer::Leaf(v) => return Some(v),
                DirAnswer::Trie => {}
            }
        }
        let key = Key::new(
            SCOPE_BITS + 128,
            SrcV6 {
                scope: scope.to_be_bytes(),
                addr: src_bytes(p),
            },
        );
        return SRC_V6.get(&key);
    }
    if iface.flags & (IFACE_SRC4_DIR | IFACE_SRC4_EXACT) != 0 && slot < DIR_SCOPES {
        let exact = iface.flags & IFACE_SRC4_EXACT != 0;
        match dir_v4(gen, slot, p, exact) {
            DirAnswer::None => return None,
            DirAnswer::Leaf(v) => return Some(v),
            DirAnswer::Trie => {}
        }
    }
    let key = Key::new(
        SCOPE_BITS + 32,
        SrcV4 {
            scope: scope.to_be_bytes(),
            addr: src_v4(p).to_be_bytes(),
        },
    );
    SRC_V4.get(&key)
}

/// The top `bits` bits of a u64 set.
#[inline(always)]
pub(crate) fn mask64(bits: u8) -> u64 {
    match bits {
        0 => 0,
        64.. => u64::MAX,
        b => u64::MAX << (64 - b as u32),
    }
}

/// The IPv4 source address.
#[inline(always)]
pub(crate) fn src_v4(p: &Parsed) -> u32 {
    (p.src_hi >> 32) as u32
}

/// The source address as bytes (IPv4 in the first 4), for the keys of the hash maps and tries.
#[inline(always)]
fn src_bytes(p: &Parsed) -> [u8; 16] {
    words_bytes(p.src_hi, p.src_lo)
}

#[inline(always)]
fn words_bytes(hi: u64, lo: u64) -> [u8; 16] {
    let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// The source truncated to `prefix` bits as two big-endian words (IPv4 in the top 32 bits of
/// the first): the token-bucket table's key, compared and hashed without a byte loop.
#[inline(always)]
fn prefix_words(p: &Parsed, prefix: u8) -> (u64, u64) {
    if p.v6 {
        (
            p.src_hi & mask64(prefix),
            p.src_lo & mask64(prefix.saturating_sub(64)),
        )
    } else {
        (p.src_hi & mask64(prefix.min(32)), 0)
    }
}

/// The index of the way of `set` that holds the bucket of this key, if one does.
#[inline(always)]
fn lookup_way(set: *mut BucketSet, rule: u32, family: u16, hi: u64, lo: u64) -> Option<usize> {
    let ways = unsafe { &mut (*set).ways };
    let mut w = 0;
    while w < BUCKET_WAYS {
        let way = &mut ways[w];
        if way.addr_hi == hi && way.addr_lo == lo && way.rule == rule && way.family == family {
            return Some(w);
        }
        w += 1;
    }
    None
}

/// What replacing a way costs, as a number to minimise: empty (0), then full again (1: its
/// source gets the same verdicts without it), then `2 + score` (the source that has sent least
/// since it took the way); ties go to the bucket nearest to full (lowest TAT, in ~ms units).
#[inline(always)]
fn replacement_cost(way: &BucketWay, now: u64) -> u64 {
    let tat = way.tat;
    let rank = if way.family == 0 {
        0
    } else if tat <= now {
        1
    } else {
        2 + way.score as u64
    };
    (rank << 32) | ((tat >> 20) & 0xffff_ffff)
}

/// The way of `set` holding the bucket of this key: the one that already does (its score
/// bumped), else a way the key takes over, its bucket full (see `BucketWay` for the
/// replacement rule). Returns the way's index. Two CPUs may race on a set; the worst outcome
/// is a bucket written twice or lost, which gives one source a full bucket again (the same as
/// an eviction), never another key's verdict: a way is matched on the whole key.
#[inline(always)]
fn find_way(set: *mut BucketSet, rule: u32, family: u16, hi: u64, lo: u64, now: u64) -> usize {
    let ways = unsafe { &mut (*set).ways };
    if let Some(w) = lookup_way(set, rule, family, hi, lo) {
        let way = &mut ways[w & (BUCKET_WAYS - 1)];
        let score = way.score;
        if score < BUCKET_SCORE_MAX {
            way.score = score + 1;
        }
        return w;
    }
    // A miss: a tournament of the four ways (three comparisons, so that the verifier walks
    // eight paths here, not sixteen).
    const _: () = assert!(BUCKET_WAYS == 4);
    let c0 = replacement_cost(&ways[0], now);
    let c1 = replacement_cost(&ways[1], now);
    let c2 = replacement_cost(&ways[2], now);
    let c3 = replacement_cost(&ways[3], now);
    let (a, ca) = if c1 < c0 { (1, c1) } else { (0, c0) };
    let (b, cb) = if c3 < c2 { (3, c3) } else { (2, c2) };
    let (victim, cost) = if cb < ca { (b, cb) } else { (a, ca) };
    if cost >> 32 >= 2 {
        count_stat(STAT_BUCKET_EVICTED, 0);
    }
    let way = &mut ways[victim & (BUCKET_WAYS - 1)];
    way.rule = rule;
    way.family = family;
    way.score = 1;
    way.addr_hi = hi;
    way.addr_lo = lo;
    // A full bucket: the next conforming arrival is now.
    unsafe { write_volatile(&mut way.tat, now) };
    victim
}

/// The packet's rate limits, source side first (the compiler guarantees at most `MAX_LIMITS`),
/// and how many there are. Only the first `n` are written, and only they are read
/// (`check_limits`): initialising the array would cost a `memset` call, a byte loop in BPF,
/// measured at tens of ns per packet. The verifier allows the read of a slot it cannot prove
/// written for a program loaded with CAP_PERFMON, which the agent needs anyway.
#[inline(always)]
fn gather_limits(
    v1: Option<&Verdict>,
    v2: Option<&Verdict>,
) -> ([MaybeUninit<u32>; MAX_LIMITS], usize) {
    let mut ids = [MaybeUninit::<u32>::uninit(); MAX_LIMITS];
    let mut n = 0usize;
    // One side at a time, not a loop over both: LLVM folds the two options of such a loop
    // into an OR of the two pointers, which the verifier refuses.
    if let Some(v) = v1 {
        add_limits(&mut ids, &mut n, v);
    }
    if let Some(v) = v2 {
        add_limits(&mut ids, &mut n, v);
    }
    (ids, n)
}

#[inline(always)]
fn add_limits(ids: &mut [MaybeUninit<u32>; MAX_LIMITS], n: &mut usize, v: &Verdict) {
    let mut i = 0;
    while i < MAX_LIMITS {
        if i < v.n_limits as usize && *n < MAX_LIMITS {
            ids[*n].write(v.limits[i]);
            *n += 1;
        }
        i += 1;
    }
}

/// Where the bucket of `rule`'s limit for this packet lives: the limit, the set, and the key.
struct BucketRef {
    cfg: &'static LimitConfig,
    set: *mut BucketSet,
    family: u16,
    hi: u64,
    lo: u64,
}

/// `rule`'s limit in this generation, if it has one.
#[inline(always)]
fn limit_config(gen: u32, rule: u32) -> Option<&'static LimitConfig> {
    let cfg = LIMITS.get(limit_index(gen, rule))?;
    if cfg.interval_ns == 0 {
        return None;
    }
    Some(cfg)
}

/// `None` when `rule` has no limit in this generation.
#[inline(always)]
fn bucket_ref(gen: u32, seed: u32, rule: u32, p: &Parsed) -> Option<BucketRef> {
    bucket_at(limit_config(gen, rule)?, seed, rule, p)
}

/// The bucket of the limit `cfg` of `rule` for this packet.
#[inline(always)]
fn bucket_at(cfg: &'static LimitConfig, seed: u32, rule: u32, p: &Parsed) -> Option<BucketRef> {
    let (family, prefix) = if p.v6 {
        (6, cfg.prefix_v6)
    } else {
        (4, cfg.prefix_v4)
    };
    let (hi, lo) = prefix_words(p, prefix);
    let set = BUCKET_SETS.get_ptr_mut(bucket_set(seed, rule, family, hi, lo))?;
    Some(BucketRef {
        cfg,
        set,
        family,
        hi,
        lo,
    })
}

/// Decides on the packet's rate limits: `NO_RULE` when it is within all of them (tokens are
/// then taken from every bucket), else the first exceeded limit's rule id (nothing is taken).
///
/// Buckets are GCRA cells shared by all CPUs: the check reads the theoretical arrival time
/// (TAT); the charge is an atomic add, so two CPUs admitting packets from the same source at
/// once both pay. Only the margin can race (both see the last token), which admits one extra
/// packet at most per race — measured within the ±10% target in docs/benchmarks.md.
#[inline(always)]
fn check_limits(
    gen: u32,
    seed: u32,
    ids: &[MaybeUninit<u32>; MAX_LIMITS],
    n: usize,
    p: &Parsed,
) -> u32 {
    // The clock, read once per packet, at its first limit: the coarse one (no time stamp
    // counter read, which costs a third of this path on some hosts) when that is the packet's
    // only limit and it tolerates a tick (`LIMIT_COARSE_CLOCK`), the coarse one first for a
    // slow limit (`LIMIT_COARSE_FIRST`), else the precise one. Read before the bucket's
    // look-up: `rdtsc` waits for the loads in flight.
    let mut now = 0u64;
    // `now` is the coarse clock, to be checked with a margin and then read precisely
    // (`LIMIT_COARSE_FIRST`).
    let mut coarse_first = false;
    let mut i = 0;
    while i < MAX_LIMITS {
        if i >= n {
            break;
        }
        // SAFETY: `gather_limits` wrote the first `n`, and `i < n`.
        let rule = unsafe { ids[i].assume_init() };
        i += 1;
        let Some(cfg) = limit_config(gen, rule) else {
            continue;
        };
        if now == 0 {
            now = if n == 1 && cfg.flags & LIMIT_COARSE_CLOCK != 0 {
                tick_clock()
            } else if n == 1 && cfg.flags & LIMIT_COARSE_FIRST != 0 {
                coarse_first = true;
                tick_clock()
            } else {
                unsafe { bpf_ktime_get_ns() }
            };
        }
        let Some(b) = bucket_at(cfg, seed, rule, p) else {
            continue;
        };
        let way = find_way(b.set, rule, b.family, b.hi, b.lo, now) & (BUCKET_WAYS - 1);
        let cell = unsafe { &mut (*b.set).ways[way].tat as *mut u64 };
        let tat = unsafe { read_volatile(cell) };
        if coarse_first {
            // The precise time is below the coarse one plus the margin: a packet over the
            // limit even then is over it now. Else the precise clock decides (and charges).
            let late = now + b.cfg.coarse_margin_ms as u64 * 1_000_000;
            if tat > late && tat - late > b.cfg.tolerance_ns {
                return rule;
            }
            now = unsafe { bpf_ktime_get_ns() };
        }
        if tat > now && tat - now > b.cfg.tolerance_ns {
            return rule;
        }
        if n == 1 {
            // The common case, one limit: charge at once.
            charge(cell, now, b.cfg.interval_ns);
            return NO_RULE;
        }
    }
    // Within every limit: charge them all, finding each bucket again (kept between the
    // passes, way indexes would multiply the paths the verifier walks, and pointers spilled
    // into a stack array are not tracked; a bucket another CPU replaced meanwhile is skipped).
    let mut i = 0;
    while i < MAX_LIMITS {
        if i >= n {
            break;
        }
        // SAFETY: `gather_limits` wrote the first `n`, and `i < n`.
        let rule = unsafe { ids[i].assume_init() };
        i += 1;
        let Some(b) = bucket_ref(gen, seed, rule, p) else {
            continue;
        };
        if let Some(w) = lookup_way(b.set, rule, b.family, b.hi, b.lo) {
            let cell = unsafe { &mut (*b.set).ways[w & (BUCKET_WAYS - 1)].tat as *mut u64 };
            charge(cell, now, b.cfg.interval_ns);
        }
    }
    NO_RULE
}

#[inline(always)]
fn charge(cell: *mut u64, now: u64, interval: u64) {
    unsafe {
        if read_volatile(cell) < now {
            // Idle bucket: restart the schedule from now.
            write_volatile(cell, now + interval);
        } else {
            // The result is unused, so this is a plain BPF atomic add (XADD), which every
            // BPF CPU version has. (The BPF target offers no `AtomicU64::fetch_add`.)
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(cell, interval);
        }
    }
}

/// The rule set of interface `ifindex` in generation `gen`; `None` when none applies to it.
#[inline(always)]
fn iface_config(gen: u32, ifindex: u32) -> Option<&'static IfaceConfig> {
    // Most interfaces have a small index: an array slot, which the JIT inlines; the hash map
    // holds the others.
    let iface = if ifindex < FAST_IFINDEX {
        IFACE_TABLE.get(gen * FAST_IFINDEX + ifindex)
    } else {
        unsafe { IFACES.get(&IfaceKey { gen, ifindex }) }
    };
    match iface {
        Some(i) if i.flags & IFACE_CONFIGURED != 0 => Some(i),
        _ => None,
    }
}

/// The verdict on a packet the parser could not judge (`stat` says why): non-IP passes; the
/// rest is dropped where a rule set is enforced, and passes on an interface no rule set
/// applies to (which passes everything) or in audit mode (which drops nothing). A function of
/// its own, not inlined: the verifier walks it once, not once per way out of the parser.
#[inline(never)]
fn unjudged(stat: u32, ifindex: u32, len: u64) -> u32 {
    count_stat(stat, len);
    if stat == STAT_NON_IP {
        return ACTION_PASS;
    }
    let gen = match CONFIG.get(0) {
        Some(c) => unsafe { read_volatile(&c.active_gen) },
        None => 0,
    };
    match iface_config(gen, ifindex) {
        Some(i) if i.flags & IFACE_AUDIT == 0 => ACTION_DROP,
        _ => ACTION_PASS,
    }
}

/// Judges one packet: `ACTION_PASS` or `ACTION_DROP`.
#[inline(always)]
fn judge(data: usize, end: usize, ifindex: u32, len: u64) -> u32 {
    let p = match parse(data, end) {
        Ok(p) => p,
        Err(stat) => return unjudged(stat, ifindex, len),
    };
    // The one read of the generation: every lookup below uses this value, so the packet is
    // judged wholly by one revision even if the agent flips generations meanwhile.
    let (gen, seed) = match CONFIG.get(0) {
        Some(c) => unsafe { (read_volatile(&c.active_gen), read_volatile(&c.bucket_seed)) },
        None => (0, 0),
    };
    let iface = iface_config(gen, ifindex);
    let audit = match iface {
        Some(i) => i.flags & IFACE_AUDIT != 0,
        None => false,
    };
    // The blocklist first, on every attached interface (one with L7 routes but no L4 rule
    // set too): a banned source is dropped before any policy lookup. In audit mode the drop
    // is counted and the packet judged on as usual.
    if let Some(kind) = banned(&p) {
        if audit {
            count_ban(kind, SLOT_AUDIT, len);
        } else {
            count_ban(kind, SLOT_DROP, len);
            return ACTION_DROP;
        }
    }
    let Some(iface) = iface else {
        count_stat(STAT_UNCONFIGURED, len);
        return ACTION_PASS;
    };
    // The source side: the longest source prefix any rule names. Its verdict is in the trie
    // value itself when its rules name no protocol (a blocklist), else in the port table.
    let src = source_entry(gen, iface, &p);
    // Lock-out protection, before any rule: the TCP replies of the node's API server (an
    // exact-address entry marked failsafe, whose TCP source port is the server's) pass. Only
    // TCP with that source port, so the address gains nothing else. Bans were checked above
    // and still apply: the blocklist is filled by hand or by the L7 tier, never by the policy.
    if let Some(sv) = src {
        let flags = sv.flags;
        if flags & SRC_FAILSAFE != 0
            && p.proto == IPPROTO_TCP
            && !p.fragment
            && p.sport == src_failsafe_port(flags)
        {
            count_stat(STAT_FAILSAFE, len);
            return ACTION_PASS;
        }
    }
    let v1 = match src {
        Some(sv) if sv.flags & SRC_UNIFORM != 0 => Some(&sv.verdict),
        Some(sv) => port_verdict(sv.entry, &p),
        None => None,
    };
    // Deny wins, and the source side's rules are the more specific: no need to look further.
    if let Some(v) = v1 {
        if v.deny_rule != NO_RULE {
            return drop_or_audit(v.deny_rule, SLOT_DROP, audit, len, &p, seed);
        }
    }
    let v2 = if iface.flags & IFACE_WILDCARD_UNIFORM != 0 {
        Some(&iface.wildcard)
    } else {
        match wildcard_ports_dir(gen, iface, &p) {
            Some(v) => v,
            None => port_verdict(iface.wildcard_entry, &p),
        }
    };
    if let Some(v) = v2 {
        if v.deny_rule != NO_RULE {
            return drop_or_audit(v.deny_rule, SLOT_DROP, audit, len, &p, seed);
        }
    }

    let mut allow = NO_RULE;
    if let Some(v) = v1 {
        allow = v.allow_rule;
    }
    if allow == NO_RULE {
        if let Some(v) = v2 {
            allow = v.allow_rule;
        }
    }
    if allow == NO_RULE {
        if p.fragment {
            count_stat(STAT_FRAGMENT_PASS, len);
            return ACTION_PASS;
        }
        if iface.flags & IFACE_DEFAULT_DROP != 0 {
            return drop_or_audit(iface.default_rule, SLOT_DROP, audit, len, &p, seed);
        }
        count_rule(iface.default_rule, SLOT_PASS, len);
        return ACTION_PASS;
    }

    // Rate limits of both sides, source side first; the compiler guarantees at most MAX_LIMITS.
    let (ids, n) = gather_limits(v1, v2);
    if n > 0 {
        let exceeded = check_limits(gen, seed, &ids, n, &p);
        if exceeded != NO_RULE {
            return drop_or_audit(exceeded, SLOT_RATELIMIT, audit, len, &p, seed);
        }
    }
    count_rule(allow, SLOT_PASS, len);
    ACTION_PASS
}

#[inline(always)]
fn drop_or_audit(rule: u32, slot: usize, audit: bool, len: u64, p: &Parsed, seed: u32) -> u32 {
    if audit {
        count_rule(rule, SLOT_AUDIT, len);
        ACTION_PASS
    } else {
        let n = count_rule(rule, slot, len);
        if sampled(n, seed) {
            note_offender(p, slot == SLOT_RATELIMIT);
        }
        ACTION_DROP
    }
}

/// Whether the drop that made a rule slot's per-CPU count `n` is one of the one in
/// 2^OFFENDER_SAMPLE_SHIFT that `note_offender` records. No helper call (a random number was
/// one per drop): `n` plus the secret seed, times 2^32/golden ratio (a Fibonacci hash), falls in
/// the first 2^-OFFENDER_SAMPLE_SHIFT of the u32 range. That is a permutation of the u32
/// counts, so exactly one count in 2^OFFENDER_SAMPLE_SHIFT is sampled over 2^32, evenly spread
/// (a golden-ratio sequence, not a period of 64), so that sources whose drops alternate in any
/// fixed pattern are each sampled at the same rate; and a sender that does not know the seed
/// cannot tell which of its drops are. `n == 0` (no counter) samples nothing.
#[inline(always)]
fn sampled(n: u64, seed: u32) -> bool {
    n != 0
        && (n as u32).wrapping_add(seed).wrapping_mul(0x9e37_79b9) >> (32 - OFFENDER_SAMPLE_SHIFT)
            == 0
}

/// Records a sampled drop (`sampled`) in the top-offenders map, with the weight
/// 2^OFFENDER_SAMPLE_SHIFT: bounded memory (an LRU of source prefixes) and a bounded cost per
/// dropped packet.
#[inline(always)]
fn note_offender(p: &Parsed, ratelimited: bool) {
    let weight = 1u64 << OFFENDER_SAMPLE_SHIFT;
    let (family, prefix) = if p.v6 {
        (6, OFFENDER_PREFIX_V6)
    } else {
        (4, OFFENDER_PREFIX_V4)
    };
    let key = OffenderKey {
        family,
        addr: {
            let (hi, lo) = prefix_words(p, prefix);
            words_bytes(hi, lo)
        },
    };
    match OFFENDERS.get_ptr_mut(&key) {
        Some(v) => unsafe {
            if ratelimited {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut (*v).ratelimited, weight);
            } else {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut (*v).dropped, weight);
            }
        },
        None => {
            let value = if ratelimited {
                OffenderValue {
                    dropped: 0,
                    ratelimited: weight,
                }
            } else {
                OffenderValue {
                    dropped: weight,
                    ratelimited: 0,
                }
            };
            let _ = OFFENDERS.insert(&key, &value, 1 /* BPF_NOEXIST */);
        }
    }
}

/// XDP entry point.
#[xdp]
pub fn tollgate_xdp(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match judge(data, end, ifindex, (end - data) as u64) {
        ACTION_DROP => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// TC ingress entry point (fallback where XDP cannot attach). Same judgement.
#[classifier]
pub fn tollgate_tc(ctx: TcContext) -> i32 {
    let len = ctx.len();
    // Headers may sit outside the linear part of the skb: pull what the parser can read
    // (Ethernet + VLAN + IPv6 + 6 extension headers + L4 fits easily in 256 bytes).
    let _ = ctx.pull_data(if len < 256 { len } else { 256 });
    let data = ctx.data();
    let end = ctx.data_end();
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match judge(data, end, ifindex, len as u64) {
        ACTION_DROP => TC_ACT_SHOT,
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
