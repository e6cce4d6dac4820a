//! Packets per second received on a veth pair with one receiving core: Tollgate's XDP program
//! against an XDP drop-all program and an nftables `netdev ingress` drop, interleaved.
//!
//! # The lab
//!
//! Two network namespaces created here, `tgb-tx` and `tgb-rx`, joined by the veth pair
//! `tgbtx0` / `tgbrx0`. Nothing outside them is touched; [`Lab`]'s `Drop` deletes both (which
//! deletes the pair and every program attached to it) and unmounts the private bpffs, also when
//! a trial panics or fails.
//!
//! # Generator
//!
//! `bench_tx` run with `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`)
//! from a thread that entered `tgb-tx` and is pinned to CPU 0: every frame is redirected out of
//! `tgbtx0`, i.e. handed to `tgbrx0`'s XDP receive ring (`veth_xdp_xmit`).
//!
//! # Receiver: one core
//!
//! `tgbrx0` has one receive queue and NAPI enabled (GRO on, set with the `ETHTOOL_SGRO` ioctl:
//! veth only accepts redirected frames when its peer has NAPI, and the nftables receiver has no
//! XDP program to enable it), switched to threaded NAPI; the NAPI kthread `napi/tgbrx0-*` is
//! pinned to CPU 1 before every trial, and its CPU time over the trial is reported (the core is
//! saturated when it is ~100%).
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tollgate_compile::l4::compile;
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_compile::l4::policy::{Action, Mode, Policy, PortRange, Protocol, RateLimit, Rule};

use crate::Report;

mod lab;
mod receiver;
mod trial;

use lab::{Lab, LabInfo, RT_PRIORITY};
use trial::trial;

const TX_NS: &str = "tgb-tx";
const RX_NS: &str = "tgb-rx";
const TX_IF: &str = "tgbtx0";
const RX_IF: &str = "tgbrx0";
/// MAC of the receiving veth: not the frames' destination (02:00:00:00:00:01), so that frames
/// Tollgate passes are dropped by the stack at its first IPv4 check (PACKET_OTHERHOST).
const RX_MAC: &str = "02:00:00:00:00:aa";
const GEN_CPU: usize = 0;
const RX_CPU: usize = 1;
/// Frame length without the FCS: a 64-byte Ethernet frame.
const FRAME_LEN: usize = 60;
/// Frames per live-frames batch (the kernel's maximum is 256).
const BATCH: u32 = 64;
/// Frames per `BPF_PROG_TEST_RUN` call (~0.1 s at 10 Mpps; the stop flag is checked between calls).
const CHUNK: u32 = 1 << 20;
const WARMUP: Duration = Duration::from_millis(500);
/// How long the program's run-time stats are sampled after each window.
const STATS_WINDOW: Duration = Duration::from_millis(300);

/// Trial length and number of rounds (shorter with `TOLLGATE_BENCH_QUICK=1`).
#[derive(Debug, Clone, Copy)]
struct Plan {
    trial: Duration,
    rounds: usize,
}
/// UDP port of the rate-limited allow rule.
const PASS_PORT: u16 = 9000;

/// Runs the veth benchmark and adds its section to the report.
pub fn run(report: &mut Report) {
    const TITLE: &str = "Mpps received on a veth pair, one receiving core";
    if unsafe { libc::geteuid() } != 0 {
        report.section(
            TITLE,
            "Not measured: needs root (network namespaces, XDP).\n".to_string(),
        );
        return;
    }
    let plan = if report.quick() {
        Plan {
            trial: Duration::from_secs(1),
            rounds: 2,
        }
    } else {
        Plan {
            trial: Duration::from_secs(2),
            rounds: 5,
        }
    };
    match measure(plan) {
        Ok(md) => report.section(TITLE, md),
        Err(e) => {
            eprintln!("veth benchmark failed: {e:#}");
            report.section(
                TITLE,
                format!("Not measured: the benchmark failed: `{e:#}`\n"),
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    TollgateDeny,
    TollgatePlain,
    TollgatePass,
    TollgateLimited,
    DropAll,
    Nftables,
}

impl Receiver {
    const ALL: [Receiver; 6] = [
        Receiver::TollgateDeny,
        Receiver::TollgatePlain,
        Receiver::TollgatePass,
        Receiver::TollgateLimited,
        Receiver::DropAll,
        Receiver::Nftables,
    ];

    fn name(self) -> &'static str {
        match self {
            Receiver::TollgateDeny => "tollgate-deny",
            Receiver::TollgatePlain => "tollgate-pass",
            Receiver::TollgatePass => "tollgate-ratelimit-pass",
            Receiver::TollgateLimited => "tollgate-ratelimited",
            Receiver::DropAll => "xdp-drop-all",
            Receiver::Nftables => "nftables-drop",
        }
    }

    /// The Tollgate rule that counts this receiver's packets, and the action it counts.
    fn counted(self) -> Option<(&'static str, &'static str)> {
        match self {
            Receiver::TollgateDeny => Some(("block-scanners", "drop")),
            Receiver::TollgatePlain => Some(("bench-plain", "pass")),
            Receiver::TollgatePass => Some(("bench-udp", "pass")),
            Receiver::TollgateLimited => Some(("bench-slow", "drop")),
            Receiver::DropAll | Receiver::Nftables => None,
        }
    }

    /// The generated source: each Tollgate case has a source of its own rule.
    fn packet(self) -> Packet {
        let src = match self {
            Receiver::TollgatePass => "198.51.100.10",
            Receiver::TollgatePlain => "192.0.2.7",
            Receiver::TollgateLimited => "100.64.0.7",
            _ => "203.0.113.7",
        };
        Packet {
            src: src.parse().expect("address"),
            protocol: 17,
            l4: L4::Port(PASS_PORT),
        }
    }
}

/// One trial's figures.
#[derive(Debug, Clone, Copy)]
struct Trial {
    /// Packets the receiver counted per second, in millions.
    rx_mpps: f64,
    /// Frames the generator offered per second, in millions.
    tx_mpps: f64,
    /// Share of one CPU the receiving NAPI thread used over the trial.
    napi_busy: f64,
    /// Mean run time of the receiver's XDP program per packet (kernel BPF stats, measured
    /// after the window so that the stats' own cost does not touch the Mpps).
    prog_ns: Option<f64>,
}

fn measure(plan: Plan) -> Result<String> {
    let lab = Lab::new()?;
    let snapshot = compile(&policies(), &[RX_IF.to_string()])
        .map_err(|e| anyhow!("compile the benchmark policy: {e}"))?;
    let mut results: Vec<(Receiver, Vec<Trial>)> =
        Receiver::ALL.iter().map(|&r| (r, Vec::new())).collect();
    for round in 0..plan.rounds {
        for i in 0..Receiver::ALL.len() {
            let r = Receiver::ALL[(i + round) % Receiver::ALL.len()];
            let t = trial(&lab, r, &snapshot, plan.trial)
                .with_context(|| format!("round {}, {}", round + 1, r.name()))?;
            eprintln!(
                "veth round {}/{} {:<24} rx {:6.2} Mpps  offered {:6.2} Mpps  napi thread {:3.0}% of a core  program {:?} ns/packet",
                round + 1,
                plan.rounds,
                r.name(),
                t.rx_mpps,
                t.tx_mpps,
                t.napi_busy * 100.0,
                t.prog_ns.map(|n| n.round())
            );
            results
                .iter_mut()
                .find(|(x, _)| *x == r)
                .expect("receiver")
                .1
                .push(t);
        }
    }
    let info = lab.info.clone();
    drop(lab);
    Ok(render(&results, &info, plan))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn render(results: &[(Receiver, Vec<Trial>)], info: &LabInfo, plan: Plan) -> String {
    let med = |r: Receiver| -> f64 {
        results
            .iter()
            .find(|(x, _)| *x == r)
            .map(|(_, t)| median(&t.iter().map(|t| t.rx_mpps).collect::<Vec<_>>()))
            .unwrap_or(f64::NAN)
    };
    let nft = med(Receiver::Nftables);
    let drop_all = med(Receiver::DropAll);
    let mut md = String::new();
    md.push_str("| receiver | Mpps (median) | min–max | vs nftables-drop | vs xdp-drop-all | offered Mpps (generator average, median) | receiving core busy (median) | XDP program ns/packet (median) |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, trials) in results {
        let rx: Vec<f64> = trials.iter().map(|t| t.rx_mpps).collect();
        let tx: Vec<f64> = trials.iter().map(|t| t.tx_mpps).collect();
        let busy: Vec<f64> = trials.iter().map(|t| t.napi_busy).collect();
        let ns: Vec<f64> = trials.iter().filter_map(|t| t.prog_ns).collect();
        let ns = if ns.is_empty() {
            "–".to_string()
        } else {
            format!("{:.0}", median(&ns))
        };
        let m = median(&rx);
        let min = rx.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        md.push_str(&format!(
            "| {} | {:.2} | {:.2}–{:.2} | {:.2}x | {:.0}% | {:.2} | {:.0}% | {} |\n",
            r.name(),
            m,
            min,
            max,
            m / nft,
            100.0 * m / drop_all,
            median(&tx),
            100.0 * median(&busy),
            ns
        ));
    }
    let deny = med(Receiver::TollgateDeny);
    let pass = med(Receiver::TollgatePass);
    md.push_str(&format!(
        "\nTargets (issue 13): deny >= 3.5x nftables-drop and >= 80% of xdp-drop-all; pass through a rate limit >= 2x nftables-drop. \
         Measured: deny {:.2}x nftables, {:.0}% of drop-all; pass through a rate limit {:.2}x nftables, {:.0}% of drop-all.\n",
        deny / nft,
        100.0 * deny / drop_all,
        pass / nft,
        100.0 * pass / drop_all
    ));
    md.push_str(&format!(
        "\nMethod. Kernel {kernel}, {cpus} CPUs. Two network namespaces (`{TX_NS}`, `{RX_NS}`) joined by a veth pair \
         (`{TX_IF}` -> `{RX_IF}`, one RX queue). Generator: the `bench_tx` XDP program run with `BPF_PROG_TEST_RUN` in \
         live-frames mode (batch {BATCH}, {CHUNK} frames per call, in a loop) from a thread in `{TX_NS}` pinned to CPU {GEN_CPU} \
         (SCHED_FIFO {RT_PRIORITY}); \
         it redirects every frame out of `{TX_IF}` into `{RX_IF}`'s XDP ring. \"Offered\" is what the generator sent; \
         frames the receiver's ring had no room for are dropped by veth before any receiver sees them. \
         Frames: {FRAME_LEN} bytes + FCS = 64-byte Ethernet frames, IPv4/UDP to port {PASS_PORT}, from 203.0.113.7 \
         (tollgate-deny, xdp-drop-all, nftables-drop), 192.0.2.7 (tollgate-pass), 198.51.100.10 (tollgate-ratelimit-pass) or \
         100.64.0.7 (tollgate-ratelimited). \
         Receiving core: NAPI enabled on `{RX_IF}` (GRO on, `ETHTOOL_SGRO`), threaded NAPI (`/sys/class/net/{RX_IF}/threaded` = 1), \
         the NAPI kthread ({napi}) pinned to CPU {RX_CPU} with `sched_setaffinity` and made SCHED_FIFO {RT_PRIORITY} before every trial \
         (so that other work on the machine does not share the two cores during a trial); \
         the last column is that thread's CPU time over the trial. \
         Receivers, each attached to `{RX_IF}` in turn: the four tollgate-* are Tollgate's XDP program \
         (native mode, `Dataplane::attach_all`) with one policy of {nrules} rules over {ncidrs} CIDRs, default deny, \
         whose `block-scanners` rule denies 203.0.113.0/24, whose `bench-plain` rule allows UDP {PASS_PORT} from 192.0.2.0/24 \
         (no limit), whose `bench-udp` rule allows UDP {PASS_PORT} from \
         198.51.100.0/24 with a rate limit of 100M packets/s per /32 (never triggered: a pass through the token bucket), \
         and whose `bench-slow` rule allows UDP {PASS_PORT} from 100.64.0.0/24 at 1 packet/s per /32 (all but one packet a second \
         dropped by the limit), counted with `counters::read` on those rules; passed frames go up `{RX_NS}`'s stack, which drops them at once \
         (their destination MAC is not `{RX_IF}`'s: PACKET_OTHERHOST in `ip_rcv`), so that case includes building the skb \
         (veth GRO path) and that drop. xdp-drop-all is `bench_drop` (native mode, counts per CPU). nftables-drop has no XDP \
         program: `table netdev tgb {{ chain ingress {{ type filter hook ingress device {RX_IF} priority 0; counter drop; }} }}` \
         in `{RX_NS}`, counted by its counter. Received Mpps = receiver's count over a {trial} s window, read after a \
         {warmup} ms warm-up with traffic already flowing. {rounds} rounds, the order of receivers rotated each round; \
         median and min–max over the rounds. \
         The last column is the receiver's XDP program alone: `run_time_ns / run_cnt` from the kernel's BPF run-time \
         statistics (`BPF_ENABLE_STATS`), switched on for {stats} ms after each measured window (they add a little \
         per packet, so never during it).\n",
        kernel = info.kernel,
        cpus = info.cpus,
        napi = info.napi,
        nrules = info.nrules,
        ncidrs = info.ncidrs,
        trial = plan.trial.as_secs_f64(),
        rounds = plan.rounds,
        stats = STATS_WINDOW.as_millis(),
        warmup = WARMUP.as_millis(),
    ));
    md
}

// ---------------------------------------------------------------------------------------------
// Policy

fn rule(name: &str, action: Action) -> Rule {
    Rule::new(name, action)
}

fn policies() -> Vec<Policy> {
    let net = |s: &str| s.parse().expect("cidr");
    let mut scanners = rule("block-scanners", Action::Deny);
    scanners.from = Some(vec![net("203.0.113.0/24"), net("2001:db8:bad::/48")]);
    // Some bulk: 1,000 denied /24s in 10.0.0.0/8.
    let mut blocklist = rule("blocklist", Action::Deny);
    blocklist.from = Some(
        (0..1000u32)
            .map(|i| net(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect(),
    );
    let mut ssh = rule("ssh-from-office", Action::Allow);
    ssh.from = Some(vec![net("198.51.100.0/24")]);
    ssh.protocol = Some(Protocol::Tcp);
    ssh.ports = Some(vec![PortRange {
        first: 22,
        last: 22,
    }]);
    let mut https = rule("https", Action::Allow);
    https.protocol = Some(Protocol::Tcp);
    https.ports = Some(vec![
        PortRange {
            first: 443,
            last: 443,
        },
        PortRange {
            first: 8000,
            last: 8999,
        },
    ]);
    let mut dns = rule("dns", Action::Allow);
    dns.protocol = Some(Protocol::Udp);
    dns.ports = Some(vec![PortRange {
        first: 53,
        last: 53,
    }]);
    let mut ping = rule("ping", Action::Allow);
    ping.protocol = Some(Protocol::Icmp);
    ping.icmp_types = Some(vec![0, 8]);
    let mut udp = rule("bench-udp", Action::Allow);
    udp.from = Some(vec![net("198.51.100.0/24")]);
    udp.protocol = Some(Protocol::Udp);
    udp.ports = Some(vec![PortRange {
        first: PASS_PORT,
        last: PASS_PORT,
    }]);
    udp.rate_limit = Some(RateLimit {
        packets_per_second: 100_000_000,
        burst: 100_000_000,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    });
    let mut plain = rule("bench-plain", Action::Allow);
    plain.from = Some(vec![net("192.0.2.0/24")]);
    plain.protocol = Some(Protocol::Udp);
    plain.ports = udp.ports.clone();
    let mut slow = rule("bench-slow", Action::Allow);
    slow.from = Some(vec![net("100.64.0.0/24")]);
    slow.protocol = Some(Protocol::Udp);
    slow.ports = udp.ports.clone();
    slow.rate_limit = Some(RateLimit {
        packets_per_second: 1,
        burst: 1,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    });
    vec![Policy {
        name: "bench".into(),
        file: "bench.yaml".into(),
        mode: Mode::Enforce,
        default_action: Action::Deny,
        interfaces: None,
        rules: vec![scanners, blocklist, ssh, https, dns, ping, udp, plain, slow],
    }]
}
