//! The generator (`bench_tx` in live-frames mode from a thread in `tgb-tx`) and one trial: a
//! receiver attached, the generator running, the receiver's count over the window. Apart from
//! the plan and the report because it is the measurement itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use tollgate_compile::l4::L4Snapshot;
use tollgate_dataplane as dataplane;
use tollgate_dataplane::testrun::{frame, FrameOptions, BENCH_OBJECT};

use super::lab::{cpu_ticks, enter_netns, in_netns, make_realtime, napi_threads, pin_to_cpu, Lab};
use super::receiver::{load_xdp, Attached};
use super::{
    Receiver, Trial, BATCH, CHUNK, FRAME_LEN, GEN_CPU, RX_CPU, RX_NS, STATS_WINDOW, TX_IF, TX_NS,
    WARMUP,
};

/// Sends frames out of `tgbtx0` until `stop`; returns (frames sent, time).
fn generate(
    pkt: Vec<u8>,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Result<(u64, Duration)> {
    let setup = || -> Result<Ebpf> {
        enter_netns(TX_NS)?;
        pin_to_cpu(0, GEN_CPU)?;
        make_realtime(0)?;
        let ifindex = dataplane::if_index(TX_IF).ok_or_else(|| anyhow!("no {TX_IF} in {TX_NS}"))?;
        let mut ebpf = EbpfLoader::new()
            .override_global("TX_IFINDEX", &ifindex, true)
            .load(BENCH_OBJECT)
            .context("load bench_tx")?;
        load_xdp(&mut ebpf, "bench_tx")?;
        Ok(ebpf)
    };
    let mut ebpf = match setup() {
        Ok(e) => {
            let _ = ready.send(Ok(()));
            e
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
    };
    let prog: &mut Xdp = ebpf.program_mut("bench_tx").expect("loaded").try_into()?;
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&pkt);
        opts.repeat = CHUNK;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(BATCH);
        prog.test_run(opts)
            .context("BPF_PROG_TEST_RUN (live frames)")?;
        sent += u64::from(CHUNK);
    }
    Ok((sent, start.elapsed()))
}

pub(super) fn trial(
    lab: &Lab,
    r: Receiver,
    snapshot: &L4Snapshot,
    length: Duration,
) -> Result<Trial> {
    let mut attached = in_netns(RX_NS, || Attached::new(lab, r, snapshot))?;
    // NAPI threads may be recreated when XDP programs come and go: pin them now.
    let napi = napi_threads()?;
    for &(pid, _) in &napi {
        pin_to_cpu(pid, RX_CPU)?;
        make_realtime(pid)?;
    }
    let mut pkt = frame(&r.packet(), FrameOptions::default());
    pkt.resize(FRAME_LEN, 0);
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| -> Result<Trial> {
        let gen = s.spawn(|| generate(pkt, &stop, ready_tx));
        // Stop the generator however this scope is left.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let guard = StopOnDrop(&stop);
        ready_rx
            .recv()
            .map_err(|_| anyhow!("generator thread died"))??;
        std::thread::sleep(WARMUP);
        let sample = || -> Result<(u64, Instant)> {
            let before = Instant::now();
            let c = attached.count()?;
            let after = Instant::now();
            Ok((c, before + (after - before) / 2))
        };
        let ticks = |napi: &[(libc::pid_t, String)]| -> u64 {
            napi.iter().filter_map(|&(p, _)| cpu_ticks(p).ok()).sum()
        };
        let k0 = ticks(&napi);
        let (c0, t0) = sample()?;
        std::thread::sleep(length);
        let (c1, t1) = sample()?;
        let k1 = ticks(&napi);
        // The program's own cost per packet, with run-time stats on for a short while (they
        // cost a little per packet, so only after the measured window).
        let prog_ns = {
            let _stats =
                aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
            let a = attached.prog_stats()?;
            std::thread::sleep(STATS_WINDOW);
            let b = attached.prog_stats()?;
            match (a, b) {
                (Some((ta, na)), Some((tb, nb))) if nb > na => {
                    Some((tb - ta).as_nanos() as f64 / (nb - na) as f64)
                }
                _ => None,
            }
        };
        drop(guard);
        let (sent, gen_time) = gen
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        let secs = (t1 - t0).as_secs_f64();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        if c1 <= c0 {
            bail!("the receiver counted nothing ({c0} -> {c1}); generator sent {sent}");
        }
        Ok(Trial {
            rx_mpps: (c1 - c0) as f64 / secs / 1e6,
            tx_mpps: sent as f64 / gen_time.as_secs_f64() / 1e6,
            napi_busy: (k1.saturating_sub(k0)) as f64 / hz / secs,
            prog_ns,
        })
    })
}
