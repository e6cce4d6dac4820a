//! The receivers a trial attaches to `tgbrx0` in turn (Tollgate's XDP program, an XDP
//! drop-all program, an nftables `netdev ingress` drop), the packets each has counted and its
//! program's run-time statistics. Apart from the lab and the trial because each receiver is
//! set up, read and removed its own way.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::PerCpuArray;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use tollgate_compile::l4::L4Snapshot;
use tollgate_dataplane::testrun::BENCH_OBJECT;
use tollgate_dataplane::{self as dataplane, counters, AttachMode, Dataplane};

use super::lab::{in_ns, Lab};
use super::{Receiver, RX_IF, RX_NS};

/// The XDP program `name` of a bench object (`BENCH_OBJECT`), loaded into the kernel.
pub(super) fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no {name}"))?
        .try_into()?;
    prog.load().with_context(|| format!("load {name}"))?;
    Ok(prog)
}

/// A receiver attached to `tgbrx0`; detached when dropped.
// One per benchmark run: the loaded Dataplane is not worth a Box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Attached {
    Tollgate {
        dp: Option<Dataplane>,
        pin: PathBuf,
        state: tempfile::TempDir,
        rule: &'static str,
        action: &'static str,
    },
    DropAll {
        ebpf: Ebpf,
    },
    Nftables,
}

impl Attached {
    /// Attaches `r` (on a thread inside `tgb-rx`).
    pub(super) fn new(lab: &Lab, r: Receiver, snapshot: &L4Snapshot) -> Result<Attached> {
        match r {
            Receiver::TollgateDeny
            | Receiver::TollgatePlain
            | Receiver::TollgatePass
            | Receiver::TollgateLimited => {
                let pin = lab.pin_dir();
                let _ = dataplane::detach(&pin);
                let state = tempfile::tempdir().context("state dir")?;
                let (rule, action) = r.counted().expect("a Tollgate receiver");
                // Built before the Dataplane so that a failure below still detaches via Drop.
                let mut a = Attached::Tollgate {
                    dp: None,
                    pin: pin.clone(),
                    state,
                    rule,
                    action,
                };
                if let Attached::Tollgate { dp, state, .. } = &mut a {
                    let mut d = Dataplane::load(&pin, state.path())
                        .map_err(|e| anyhow!("load Tollgate: {e}"))?;
                    d.apply(snapshot)
                        .map_err(|e| anyhow!("apply the benchmark policy: {e}"))?;
                    d.attach_all(&[RX_IF.to_string()], AttachMode::Native)
                        .map_err(|e| anyhow!("attach Tollgate (native) to {RX_IF}: {e}"))?;
                    *dp = Some(d);
                }
                Ok(a)
            }
            Receiver::DropAll => {
                let mut ebpf = EbpfLoader::new()
                    .load(BENCH_OBJECT)
                    .context("load the bench object")?;
                let prog = load_xdp(&mut ebpf, "bench_drop")?;
                prog.attach(RX_IF, XdpMode::Driver)
                    .context("attach bench_drop (native)")?;
                Ok(Attached::DropAll { ebpf })
            }
            Receiver::Nftables => {
                let _ = in_ns(RX_NS, "nft", &["delete", "table", "netdev", "tgb"]);
                let mut child = Command::new("ip")
                    .args(["netns", "exec", RX_NS, "nft", "-f", "-"])
                    .stdin(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("run nft")?;
                let a = Attached::Nftables;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(
                        format!("table netdev tgb {{\n  chain ingress {{\n    type filter hook ingress device {RX_IF} priority 0;\n    counter drop\n  }}\n}}\n")
                            .as_bytes(),
                    )
                    .context("write the nft ruleset")?;
                let out = child.wait_with_output().context("wait for nft")?;
                if !out.status.success() {
                    bail!(
                        "nft -f failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(a)
            }
        }
    }

    /// Cumulative (run time, run count) of the receiver's XDP program (BPF_ENABLE_STATS on).
    pub(super) fn prog_stats(&mut self) -> Result<Option<(Duration, u64)>> {
        let prog = match self {
            Attached::Tollgate { dp, .. } => dp
                .as_mut()
                .expect("loaded")
                .ebpf_mut()
                .program(dataplane::XDP_PROGRAM)
                .ok_or_else(|| anyhow!("no Tollgate XDP program"))?,
            Attached::DropAll { ebpf } => ebpf
                .program("bench_drop")
                .ok_or_else(|| anyhow!("no bench_drop"))?,
            Attached::Nftables => return Ok(None),
        };
        let info = prog.info().context("program info")?;
        Ok(Some((info.run_time(), info.run_count())))
    }

    /// Packets the receiver has counted so far.
    pub(super) fn count(&self) -> Result<u64> {
        match self {
            Attached::Tollgate {
                pin,
                state,
                rule,
                action,
                ..
            } => {
                let rep = counters::read(pin, state.path())
                    .map_err(|e| anyhow!("read Tollgate counters: {e}"))?;
                Ok(rep
                    .rules
                    .iter()
                    .filter(|c| c.rule == *rule && c.action == *action)
                    .map(|c| c.packets)
                    .sum())
            }
            Attached::DropAll { ebpf } => {
                let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
                    ebpf.map("BENCH_COUNT")
                        .ok_or_else(|| anyhow!("no BENCH_COUNT"))?,
                )?;
                Ok(map.get(&0, 0)?.iter().sum())
            }
            Attached::Nftables => {
                let out = in_ns(RX_NS, "nft", &["list", "chain", "netdev", "tgb", "ingress"])?;
                let n = out
                    .split("packets ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("no counter in `nft list chain`: {out}"))?;
                Ok(n)
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        match self {
            Attached::Tollgate { dp, pin, .. } => {
                *dp = None;
                let _ = dataplane::detach(pin);
            }
            Attached::DropAll { .. } => {} // the link goes with the Ebpf
            Attached::Nftables => {
                let _ = in_ns(RX_NS, "nft", &["delete", "table", "netdev", "tgb"]);
            }
        }
    }
}
