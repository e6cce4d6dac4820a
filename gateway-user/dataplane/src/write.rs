//! Writing one generation of the policy maps: only what differs between what it holds and
//! what it must hold ([`Dataplane::apply`](super::Dataplane::apply) writes the inactive
//! generation, flips, then brings the old one up to date).
use aya::maps::lpm_trie::Key;
use gateway_common::{
    DirBlock, Exact4Set, Exact6Set, Filter6Block, IfaceConfig, IfaceKey, LimitConfig, Src6Lens,
    SrcValue, Verdict, FAST_IFINDEX,
};

use super::tables::{diff, for_gen, side_by_side, Tables, TWO_THREADS_ABOVE};
use super::{map_err, remove_ok, DataplaneError, PolicyMaps};

/// Writes generation `gen` of `m`, which holds `held`, so that it holds `desired`. Returns the
/// number of entries written or removed.
pub(crate) fn write_gen(
    m: &mut PolicyMaps,
    held: &Tables,
    gen: u32,
    desired: &Tables,
) -> Result<usize, DataplaneError> {
    // Each diff probes one map of up to 100,000 entries at random (about 14 ms of a one-rule
    // change to 100,000 rules, measured): with big tables, half of them on a second thread.
    let beside = || {
        (
            diff(&held.src_v4, &desired.src_v4),
            diff(&held.src_v6, &desired.src_v6),
            held.leaves4.diff(&desired.leaves4),
            diff(&held.ports, &desired.ports),
            diff(&held.limits, &desired.limits),
            diff(&held.ifaces, &desired.ifaces),
        )
    };
    let here = || {
        (
            diff(&held.dir4, &desired.dir4),
            diff(&held.chunks4, &desired.chunks4),
            diff(&held.exact4, &desired.exact4),
            diff(&held.exact6, &desired.exact6),
            diff(&held.lens6, &desired.lens6),
            diff(&held.filter6, &desired.filter6),
            diff(&held.port_verdicts, &desired.port_verdicts),
            diff(&held.port_dir, &desired.port_dir),
        )
    };
    let big = held.src_v4.len().max(desired.src_v4.len()) > TWO_THREADS_ABOVE;
    let ((d4, d6, dl, dp, d, di), (dd, dc, dx, dx6, dn6, df6, dpv, dpd)) =
        side_by_side(big, "tollgate-diff", beside, here);
    // Limits and port entries before the source entries and interfaces that lead to them,
    // so that even within this (inactive) generation nothing points at a missing entry.
    for (&rule, v) in &d.upsert {
        m.limits
            .set(for_gen::limit(gen, rule), *v, 0)
            .map_err(map_err("write LIMITS"))?;
    }
    // Port direct tables: verdicts before the blocks that name them.
    for (&i, v) in &dpv.upsert {
        m.port_verdicts
            .set(for_gen::port_verdict(gen, i), **v, 0)
            .map_err(map_err("write PORT_VERDICTS"))?;
    }
    for (&i, v) in &dpd.upsert {
        m.port_dir
            .set(for_gen::port_dir(gen, i), **v, 0)
            .map_err(map_err("write PORT_DIR"))?;
    }
    for (k, v) in &dp.upsert {
        let (p, k) = for_gen::port(gen, k);
        m.ports
            .insert(&Key::new(p, k), *v, 0)
            .map_err(map_err("write PORTS"))?;
    }
    for (k, v) in &d4.upsert {
        let ((p, k), v) = for_gen::src_v4(gen, k, v);
        m.src_v4
            .insert(&Key::new(p, k), v, 0)
            .map_err(map_err("write SRC_V4"))?;
    }
    for (k, v) in &d6.upsert {
        let ((p, k), v) = for_gen::src_v6(gen, k, v);
        m.src_v6
            .insert(&Key::new(p, k), v, 0)
            .map_err(map_err("write SRC_V6"))?;
    }
    // The IPv4 direct index: leaves, then the chunks that name them, then the blocks.
    for &(e, v) in &dl.0 {
        let (hi, i, v) = for_gen::leaf4(gen, e, v);
        m.leaves(hi)
            .set(i, v, 0)
            .map_err(map_err("write SRC4_LEAVES"))?;
    }
    for (&i, v) in &dx.upsert {
        m.src4_exact
            .set(for_gen::exact4(gen, i), **v, 0)
            .map_err(map_err("write SRC4_EXACT"))?;
    }
    // The IPv6 exact table: its sets (after the leaves they name) and its filter, then the
    // lengths that lead to them.
    for (&i, v) in &dx6.upsert {
        m.src6_exact
            .set(for_gen::exact6(gen, i), **v, 0)
            .map_err(map_err("write SRC6_EXACT"))?;
    }
    for (&i, v) in &df6.upsert {
        m.src6_filter
            .set(for_gen::filter6(gen, i), **v, 0)
            .map_err(map_err("write SRC6_FILTER"))?;
    }
    for (&scope, v) in &dn6.upsert {
        m.src6_lens
            .set(for_gen::lens6(gen, scope), **v, 0)
            .map_err(map_err("write SRC6_LENS"))?;
    }
    for (&c, v) in &dc.upsert {
        m.src4_chunks
            .set(for_gen::chunk4(gen, c), **v, 0)
            .map_err(map_err("write SRC4_CHUNKS"))?;
    }
    for (&b, v) in &dd.upsert {
        m.src4_dir
            .set(for_gen::dir4(gen, b), **v, 0)
            .map_err(map_err("write SRC4_DIR"))?;
    }
    for (&i, v) in &di.upsert {
        let (k, v) = for_gen::iface(gen, i, v);
        // The array slot first: it is what packets read for small indexes.
        if k.ifindex < FAST_IFINDEX {
            m.iface_table
                .set(gen * FAST_IFINDEX + k.ifindex, v, 0)
                .map_err(map_err("write IFACE_TABLE"))?;
        }
        m.ifaces.insert(k, v, 0).map_err(map_err("write IFACES"))?;
    }
    for &&i in &di.remove {
        if i < FAST_IFINDEX {
            m.iface_table
                .set(gen * FAST_IFINDEX + i, IfaceConfig::default(), 0)
                .map_err(map_err("clear IFACE_TABLE"))?;
        }
        remove_ok(m.ifaces.remove(&IfaceKey { gen, ifindex: i }))
            .map_err(map_err("delete from IFACES"))?;
    }
    for &&i in &dpd.remove {
        m.port_dir
            .set(for_gen::port_dir(gen, i), DirBlock::default(), 0)
            .map_err(map_err("clear PORT_DIR"))?;
    }
    for &&i in &dpv.remove {
        m.port_verdicts
            .set(for_gen::port_verdict(gen, i), Verdict::default(), 0)
            .map_err(map_err("clear PORT_VERDICTS"))?;
    }
    for &&b in &dd.remove {
        m.src4_dir
            .set(for_gen::dir4(gen, b), DirBlock::default(), 0)
            .map_err(map_err("clear SRC4_DIR"))?;
    }
    for &&i in &dx.remove {
        m.src4_exact
            .set(for_gen::exact4(gen, i), Exact4Set::default(), 0)
            .map_err(map_err("clear SRC4_EXACT"))?;
    }
    for &&scope in &dn6.remove {
        m.src6_lens
            .set(for_gen::lens6(gen, scope), Src6Lens::default(), 0)
            .map_err(map_err("clear SRC6_LENS"))?;
    }
    for &&i in &dx6.remove {
        m.src6_exact
            .set(for_gen::exact6(gen, i), Exact6Set::default(), 0)
            .map_err(map_err("clear SRC6_EXACT"))?;
    }
    for &&i in &df6.remove {
        m.src6_filter
            .set(for_gen::filter6(gen, i), Filter6Block::default(), 0)
            .map_err(map_err("clear SRC6_FILTER"))?;
    }
    for &&c in &dc.remove {
        m.src4_chunks
            .set(for_gen::chunk4(gen, c), DirBlock::default(), 0)
            .map_err(map_err("clear SRC4_CHUNKS"))?;
    }
    for &e in &dl.1 {
        let (hi, i, _) = for_gen::leaf4(gen, e, &SrcValue::default());
        m.leaves(hi)
            .set(i, SrcValue::default(), 0)
            .map_err(map_err("clear SRC4_LEAVES"))?;
    }
    for k in &d4.remove {
        let ((p, k), _) = for_gen::src_v4(gen, k, &SrcValue::default());
        remove_ok(m.src_v4.remove(&Key::new(p, k))).map_err(map_err("delete from SRC_V4"))?;
    }
    for k in &d6.remove {
        let ((p, k), _) = for_gen::src_v6(gen, k, &SrcValue::default());
        remove_ok(m.src_v6.remove(&Key::new(p, k))).map_err(map_err("delete from SRC_V6"))?;
    }
    for k in &dp.remove {
        let (p, k) = for_gen::port(gen, k);
        remove_ok(m.ports.remove(&Key::new(p, k))).map_err(map_err("delete from PORTS"))?;
    }
    for &&rule in &d.remove {
        m.limits
            .set(for_gen::limit(gen, rule), LimitConfig::default(), 0)
            .map_err(map_err("clear LIMITS"))?;
    }
    Ok(d.upsert.len()
        + dp.upsert.len()
        + d4.upsert.len()
        + d6.upsert.len()
        + di.upsert.len()
        + di.remove.len()
        + d4.remove.len()
        + d6.remove.len()
        + dp.remove.len()
        + d.remove.len()
        + dd.upsert.len()
        + dd.remove.len()
        + dc.upsert.len()
        + dc.remove.len()
        + dl.0.len()
        + dl.1.len()
        + dx.upsert.len()
        + dx.remove.len()
        + dx6.upsert.len()
        + dx6.remove.len()
        + dn6.upsert.len()
        + dn6.remove.len()
        + df6.upsert.len()
        + df6.remove.len()
        + dpd.upsert.len()
        + dpd.remove.len()
        + dpv.upsert.len()
        + dpv.remove.len())
}
