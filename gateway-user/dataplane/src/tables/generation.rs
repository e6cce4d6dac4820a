//! Keys and values as one generation of the maps holds them: [`Tables`](super::Tables) carry
//! no generation bit, and these add it when a generation is written and strip it when one is
//! read back. Apart from the tables' contents because every map's key layout meets here.
use gateway_common::{
    dir_block_index, limit_index, port_dir_index, port_verdict_index, IfaceConfig, IfaceKey,
    PortKey, SrcV4, SrcV6, SrcValue, DIR_CHUNKS, DIR_LEAVES, DIR_SCOPES, EXACT4_SETS, EXACT6_SETS,
    GEN_BIT,
};

/// The generation bit to add for `gen`.
fn gen_bit(gen: u32) -> u32 {
    if gen == 1 {
        GEN_BIT
    } else {
        0
    }
}

fn with_gen_be(be: [u8; 4], gbit: u32) -> [u8; 4] {
    (u32::from_be_bytes(be) | gbit).to_be_bytes()
}

fn without_gen_be(be: [u8; 4]) -> [u8; 4] {
    (u32::from_be_bytes(be) & !GEN_BIT).to_be_bytes()
}

/// The generation a big-endian scope or entry id belongs to.
pub fn gen_of(be: [u8; 4]) -> usize {
    usize::from(u32::from_be_bytes(be) & GEN_BIT != 0)
}

/// Keys and values as stored in generation `gen`.
pub mod for_gen {
    use super::*;

    /// `IFACES` entry.
    pub fn iface(gen: u32, ifindex: u32, v: &IfaceConfig) -> (IfaceKey, IfaceConfig) {
        let b = gen_bit(gen);
        (
            IfaceKey { gen, ifindex },
            IfaceConfig {
                scope: v.scope | b,
                wildcard_entry: v.wildcard_entry | b,
                ..*v
            },
        )
    }
    /// `SRC_V4` entry.
    pub fn src_v4(gen: u32, k: &(u32, SrcV4), v: &SrcValue) -> ((u32, SrcV4), SrcValue) {
        let b = gen_bit(gen);
        (
            (
                k.0,
                SrcV4 {
                    scope: with_gen_be(k.1.scope, b),
                    ..k.1
                },
            ),
            SrcValue {
                entry: v.entry | b,
                ..*v
            },
        )
    }
    /// `SRC_V6` entry.
    pub fn src_v6(gen: u32, k: &(u32, SrcV6), v: &SrcValue) -> ((u32, SrcV6), SrcValue) {
        let b = gen_bit(gen);
        (
            (
                k.0,
                SrcV6 {
                    scope: with_gen_be(k.1.scope, b),
                    ..k.1
                },
            ),
            SrcValue {
                entry: v.entry | b,
                ..*v
            },
        )
    }
    /// `PORTS` key.
    pub fn port(gen: u32, k: &(u32, PortKey)) -> (u32, PortKey) {
        (
            k.0,
            PortKey {
                entry: with_gen_be(k.1.entry, gen_bit(gen)),
                ..k.1
            },
        )
    }
    /// `LIMITS` index.
    pub fn limit(gen: u32, rule: u32) -> u32 {
        limit_index(gen, rule)
    }
    /// `SRC4_DIR` index of block `index` (`scope * 256 + byte`).
    pub fn dir4(gen: u32, index: u32) -> u32 {
        dir_block_index(gen, index / 256, (index % 256) as u8)
    }
    /// `SRC4_CHUNKS` index.
    pub fn chunk4(gen: u32, id: u32) -> u32 {
        gen * DIR_CHUNKS + id
    }
    /// `SRC4_EXACT` index of the set held at `index`.
    pub fn exact4(gen: u32, index: u32) -> u32 {
        gen * EXACT4_SETS + index
    }
    pub fn exact6(gen: u32, index: u32) -> u32 {
        gen * EXACT6_SETS + index
    }
    pub fn lens6(gen: u32, scope: u32) -> u32 {
        gen * DIR_SCOPES + scope
    }
    pub fn filter6(gen: u32, index: u32) -> u32 {
        gen * gateway_common::FILTER6_BLOCKS + index
    }
    /// `PORT_DIR` index of a block held at `index` (generation 0).
    pub fn port_dir(gen: u32, index: u32) -> u32 {
        port_dir_index(gen, 0, 0, 0) + index
    }
    /// `PORT_VERDICTS` index of a verdict held at `index` (generation 0).
    pub fn port_verdict(gen: u32, index: u32) -> u32 {
        port_verdict_index(gen, 0, 0, 0) + index
    }
    /// Where leaf number `leaf` lives (`false`: `SRC4_LEAVES`; `true`: `SRC4_LEAVES_HI`, the
    /// numbers from `DIR_LEAVES` on), its index there, and its value.
    pub fn leaf4(gen: u32, leaf: u32, v: &SrcValue) -> (bool, u32, SrcValue) {
        (
            leaf >= DIR_LEAVES,
            gen * DIR_LEAVES + leaf % DIR_LEAVES,
            SrcValue {
                entry: v.entry | gen_bit(gen),
                ..*v
            },
        )
    }
}

/// Keys and values read from a generation, with the generation stripped.
pub mod strip {
    use super::*;

    /// `IFACES` entry.
    pub fn iface(k: &IfaceKey, v: &IfaceConfig) -> (u32, IfaceConfig) {
        (
            k.ifindex,
            IfaceConfig {
                scope: v.scope & !GEN_BIT,
                wildcard_entry: v.wildcard_entry & !GEN_BIT,
                ..*v
            },
        )
    }
    /// `SRC_V4` entry.
    pub fn src_v4(k: (u32, SrcV4), v: SrcValue) -> ((u32, SrcV4), SrcValue) {
        (
            (
                k.0,
                SrcV4 {
                    scope: without_gen_be(k.1.scope),
                    ..k.1
                },
            ),
            SrcValue {
                entry: v.entry & !GEN_BIT,
                ..v
            },
        )
    }
    /// `SRC_V6` entry.
    pub fn src_v6(k: (u32, SrcV6), v: SrcValue) -> ((u32, SrcV6), SrcValue) {
        (
            (
                k.0,
                SrcV6 {
                    scope: without_gen_be(k.1.scope),
                    ..k.1
                },
            ),
            SrcValue {
                entry: v.entry & !GEN_BIT,
                ..v
            },
        )
    }
    /// `PORTS` key.
    pub fn port(k: (u32, PortKey)) -> (u32, PortKey) {
        (
            k.0,
            PortKey {
                entry: without_gen_be(k.1.entry),
                ..k.1
            },
        )
    }
    /// `SRC4_LEAVES` value.
    pub fn leaf4(v: SrcValue) -> SrcValue {
        SrcValue {
            entry: v.entry & !GEN_BIT,
            ..v
        }
    }
}
