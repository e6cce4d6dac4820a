//! The packet parser of the L4 filter: Ethernet (one VLAN tag), IPv4 with options, IPv6 with
//! up to `MAX_EXT_HEADERS` extension headers, and the TCP/UDP/ICMP fields the policy reads.
//! Apart from the judgement (`prog.rs`) because it reads only the packet, no map. The verdicts
//! for what it cannot parse are listed at the top of `prog.rs`.
use core::mem;

use gateway_common::{PORT_ICMP_BASE, STAT_MALFORMED, STAT_NON_IP, STAT_UNSUPPORTED};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers skipped before giving up (RFC 8200 recommends an order with at most
/// one of each, so six covers every sane packet).
const MAX_EXT_HEADERS: usize = 6;

/// `$name(p)`: the big-endian field of type `$ty` at `p`, in one load. LLVM's BPF backend
/// splits a load it cannot prove aligned into byte loads, shifts and ors (a packet's fields are
/// 2-byte aligned at best); the kernel allows a packet read at any offset wherever unaligned
/// access is cheap (x86-64, arm64), and elsewhere one whose offset plus `NET_IP_ALIGN` (2) is a
/// multiple of its size, which every load here keeps (ethertype at 12, IPv4 fields at 14 + 4n,
/// ports after a header of 4n bytes). Inline assembly: a Rust read through a misaligned pointer
/// would be undefined behaviour. SAFETY (of the functions): `p` is a packet pointer
/// bounds-checked for the field's size.
macro_rules! packet_load {
    ($name:ident, $ty:ty, $width:literal) => {
        #[inline(always)]
        unsafe fn $name(p: *const u8) -> $ty {
            let v: u64;
            unsafe {
                core::arch::asm!(
                    concat!("{v} = *(", $width, " *)({p} + 0)"),
                    v = out(reg) v,
                    p = in(reg) p,
                    options(readonly, nostack, preserves_flags)
                );
            }
            <$ty>::from_be(v as $ty)
        }
    };
}
packet_load!(be16, u16, "u16");
packet_load!(be32, u32, "u32");

/// What the policy needs from a packet.
pub(crate) struct Parsed {
    pub(crate) v6: bool,
    /// The source address as two big-endian words, bytes 0-7 and 8-15 (IPv4: its 4 bytes in the
    /// top 32 bits of `src_hi`, `src_lo` 0). Words, not a byte array: LLVM kept the array's 16
    /// bytes in 16 registers, spilled them to the stack, and put them together again for every
    /// use (the direct index, the bucket key, the trie keys).
    pub(crate) src_hi: u64,
    pub(crate) src_lo: u64,
    pub(crate) proto: u8,
    /// Port, `PORT_ICMP_BASE + type`, or 0 (no L4 selector).
    pub(crate) port: u16,
    /// TCP source port (0 for anything else): the failsafe matches the API server's replies.
    pub(crate) sport: u16,
    pub(crate) fragment: bool,
}

/// Why a packet could not be parsed: an index into `STATS`.
pub(crate) type Unjudged = u32;

#[inline(always)]
fn ptr_at<T>(data: usize, end: usize, offset: usize) -> Result<*const T, Unjudged> {
    if data + offset + mem::size_of::<T>() > end {
        return Err(STAT_MALFORMED);
    }
    Ok((data + offset) as *const T)
}

#[inline(always)]
pub(crate) fn parse(data: usize, end: usize) -> Result<Parsed, Unjudged> {
    let mut off = ETH_HLEN;
    let eth = unsafe { &*ptr_at::<[u8; ETH_HLEN]>(data, end, 0)? };
    let mut ethertype = unsafe { be16(eth.as_ptr().add(12)) };
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tag = unsafe { &*ptr_at::<[u8; 4]>(data, end, ETH_HLEN)? };
        ethertype = unsafe { be16(tag.as_ptr().add(2)) };
        off += 4;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            return Err(STAT_UNSUPPORTED);
        }
    }
    match ethertype {
        ETH_P_IP => parse_v4(data, end, off),
        ETH_P_IPV6 => parse_v6(data, end, off),
        _ => Err(STAT_NON_IP),
    }
}

#[inline(always)]
fn parse_v4(data: usize, end: usize, off: usize) -> Result<Parsed, Unjudged> {
    // Fixed header: 20 bytes.
    let hdr = ptr_at::<[u8; 20]>(data, end, off)?;
    let hdr = unsafe { &*hdr };
    if hdr[0] >> 4 != 4 {
        return Err(STAT_MALFORMED);
    }
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(STAT_MALFORMED);
    }
    let frag = unsafe { be16(hdr.as_ptr().add(6)) } & 0x1fff;
    let proto = hdr[9];
    let src_hi = u64::from(unsafe { be32(hdr.as_ptr().add(12)) }) << 32;
    // Options included: the whole header must be there.
    ptr_at::<u8>(data, end, off + ihl - 1)?;
    if frag != 0 {
        return Ok(Parsed {
            v6: false,
            src_hi,
            src_lo: 0,
            proto,
            port: 0,
            sport: 0,
            fragment: true,
        });
    }
    let (port, sport) = l4_selector(data, end, off + ihl, proto)?;
    Ok(Parsed {
        v6: false,
        src_hi,
        src_lo: 0,
        proto,
        port,
        sport,
        fragment: false,
    })
}

#[inline(always)]
fn parse_v6(data: usize, end: usize, off: usize) -> Result<Parsed, Unjudged> {
    let hdr = ptr_at::<[u8; 40]>(data, end, off)?;
    let hdr = unsafe { &*hdr };
    if hdr[0] >> 4 != 6 {
        return Err(STAT_MALFORMED);
    }
    // Four 32-bit loads (not two of 64: behind a VLAN tag the address is only 4-byte aligned).
    let word = |i: usize| u64::from(unsafe { be32(hdr.as_ptr().add(i)) });
    let src_hi = word(8) << 32 | word(12);
    let src_lo = word(16) << 32 | word(20);
    // An IPv4-mapped source (::ffff:0:0/96) never appears on the wire (RFC 4291 2.5.5.2), yet
    // a dual-stack socket reports it as the IPv4 address inside: judged as IPv6, it would
    // pass every IPv4 rule and ban aimed at that address. One test of one word: two tests
    // would leave the verifier a path where `src_hi` is the constant 0, which it cannot prune
    // against the others, and every IPv6 path after the parse would be walked twice.
    if src_hi | (src_lo >> 32 ^ 0xffff) == 0 {
        return Err(STAT_MALFORMED);
    }
    let mut next = hdr[6];
    let mut l4 = off + 40;
    let mut fragment = false;
    let mut skipped = 0;
    loop {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let h = unsafe { &*ptr_at::<[u8; 4]>(data, end, l4)? };
                next = h[0];
                l4 += (h[1] as usize + 1) * 8;
            }
            // Fragment header: 8 bytes; offset in the top 13 bits of bytes 2-3.
            44 => {
                let h = unsafe { &*ptr_at::<[u8; 4]>(data, end, l4)? };
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                next = h[0];
                l4 += 8;
                if offset != 0 {
                    fragment = true;
                    break;
                }
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let h = unsafe { &*ptr_at::<[u8; 4]>(data, end, l4)? };
                next = h[0];
                l4 += (h[1] as usize + 2) * 4;
            }
            _ => break,
        }
        skipped += 1;
        if skipped >= MAX_EXT_HEADERS {
            // One more extension header than we skip: refuse rather than guess.
            if matches!(next, 0 | 43 | 44 | 51 | 60) {
                return Err(STAT_UNSUPPORTED);
            }
            break;
        }
    }
    if fragment {
        return Ok(Parsed {
            v6: true,
            src_hi,
            src_lo,
            proto: next,
            port: 0,
            sport: 0,
            fragment: true,
        });
    }
    let (port, sport) = l4_selector(data, end, l4, next)?;
    Ok(Parsed {
        v6: true,
        src_hi,
        src_lo,
        proto: next,
        port,
        sport,
        fragment: false,
    })
}

/// The port field for the port table (destination port, or `PORT_ICMP_BASE + type`) and the
/// TCP source port (0 for other protocols; the failsafe check reads it). The whole minimal L4
/// header must be present. Every read goes through the pointer that was bounds-checked (the
/// verifier does not relate a recomputed pointer to the checked one).
#[inline(always)]
fn l4_selector(data: usize, end: usize, off: usize, proto: u8) -> Result<(u16, u16), Unjudged> {
    match proto {
        IPPROTO_TCP => {
            let h = unsafe { &*ptr_at::<[u8; 20]>(data, end, off)? };
            Ok(unsafe { (be16(h.as_ptr().add(2)), be16(h.as_ptr())) })
        }
        IPPROTO_UDP => {
            let h = unsafe { &*ptr_at::<[u8; 8]>(data, end, off)? };
            Ok((unsafe { be16(h.as_ptr().add(2)) }, 0))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h = unsafe { &*ptr_at::<[u8; 4]>(data, end, off)? };
            Ok((PORT_ICMP_BASE + h[0] as u16, 0))
        }
        _ => Ok((0, 0)),
    }
}
