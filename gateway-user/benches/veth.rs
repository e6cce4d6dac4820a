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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::PerCpuArray;
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_compile::l4::policy::{Action, Mode, Policy, PortRange, Protocol, RateLimit, Rule};
use tollgate_compile::l4::{compile, L4Snapshot};
use tollgate_dataplane::testrun::{frame, mount_bpffs, umount, FrameOptions, BENCH_OBJECT};
use tollgate_dataplane::{self as dataplane, counters, AttachMode, Dataplane};

use crate::Report;

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

// ---------------------------------------------------------------------------------------------
// The lab: namespaces, veth pair, bpffs; all removed on drop.

#[derive(Debug, Clone)]
struct LabInfo {
    kernel: String,
    cpus: usize,
    napi: String,
    nrules: usize,
    ncidrs: usize,
}

struct Lab {
    bpffs: PathBuf,
    mounted: bool,
    info: LabInfo,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, cmd];
    all.extend_from_slice(args);
    sh("ip", &all)
}

fn delete_namespaces() {
    for ns in [TX_NS, RX_NS] {
        if Path::new("/run/netns").join(ns).exists() {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

impl Lab {
    fn new() -> Result<Lab> {
        // Leftovers of an interrupted run (SIGKILL skips Drop): they are ours by name.
        delete_namespaces();
        let bpffs = PathBuf::from(format!("/run/tollgate-veth-bench-{}", std::process::id()));
        let mut lab = Lab {
            bpffs,
            mounted: false,
            info: LabInfo {
                kernel: String::new(),
                cpus: 0,
                napi: String::new(),
                nrules: 0,
                ncidrs: 0,
            },
        };
        lab.info.kernel = sh("uname", &["-r"])?.trim().to_string();
        lab.info.cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        if lab.info.cpus < 2 {
            bail!(
                "needs 2 CPUs (one generating, one receiving), found {}",
                lab.info.cpus
            );
        }
        let p = policies();
        lab.info.nrules = p.iter().map(|p| p.rules.len()).sum();
        lab.info.ncidrs = p
            .iter()
            .flat_map(|p| &p.rules)
            .map(|r| r.from.as_ref().map_or(0, |f| f.len()))
            .sum();

        std::fs::create_dir_all(&lab.bpffs)
            .with_context(|| format!("create {}", lab.bpffs.display()))?;
        mount_bpffs(&lab.bpffs).map_err(|e| anyhow!("{e}"))?;
        lab.mounted = true;

        sh("ip", &["netns", "add", TX_NS])?;
        sh("ip", &["netns", "add", RX_NS])?;
        for ns in [TX_NS, RX_NS] {
            // No IPv6 chatter (router solicitations, MLD) to count.
            in_ns(ns, "sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            in_ns(
                ns,
                "sysctl",
                &["-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            )?;
        }
        sh(
            "ip",
            &[
                "link",
                "add",
                TX_IF,
                "netns",
                TX_NS,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                RX_IF,
                "netns",
                RX_NS,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
            ],
        )?;
        sh(
            "ip",
            &["-n", RX_NS, "link", "set", RX_IF, "address", RX_MAC],
        )?;
        sh(
            "ip",
            &["-n", TX_NS, "addr", "add", "198.18.0.2/24", "dev", TX_IF],
        )?;
        sh(
            "ip",
            &["-n", RX_NS, "addr", "add", "198.18.0.1/24", "dev", RX_IF],
        )?;
        sh("ip", &["-n", TX_NS, "link", "set", TX_IF, "up"])?;
        sh("ip", &["-n", RX_NS, "link", "set", RX_IF, "up"])?;
        // NAPI on the receiving veth without an XDP program (the nftables case): GRO on.
        in_netns(RX_NS, || set_gro(RX_IF, true))?;
        in_ns(
            RX_NS,
            "sh",
            &["-c", &format!("echo 1 > /sys/class/net/{RX_IF}/threaded")],
        )
        .context("switch to threaded NAPI")?;
        let threaded = in_ns(RX_NS, "cat", &[&format!("/sys/class/net/{RX_IF}/threaded")])?;
        if threaded.trim() != "1" {
            bail!(
                "threaded NAPI did not switch on for {RX_IF} (threaded = {})",
                threaded.trim()
            );
        }
        let pids = napi_threads()?;
        lab.info.napi = pids
            .iter()
            .map(|(pid, comm)| format!("`{comm}`, pid {pid}"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("veth lab ready: NAPI threads {}", lab.info.napi);
        Ok(lab)
    }

    fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("pins")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = dataplane::detach(&self.pin_dir());
        delete_namespaces();
        if self.mounted {
            umount(&self.bpffs);
        }
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}

/// Runs `f` on a thread that entered network namespace `ns` (so that interface names, ifindexes
/// and ioctls are those of `ns`); the caller's namespace is untouched.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn enter_netns(ns: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    use std::os::fd::AsRawFd;
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    Ok(())
}

/// Real-time priority (SCHED_FIFO) for the generator and the receiving NAPI thread, so that
/// whatever else runs on the machine (builds) does not take their cores during a trial.
const RT_PRIORITY: libc::c_int = 50;

fn make_realtime(pid: libc::pid_t) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("SCHED_FIFO for pid {pid}"));
    }
    Ok(())
}

fn pin_to_cpu(pid: libc::pid_t, cpu: usize) -> Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pin pid {pid} to CPU {cpu}"));
        }
    }
    Ok(())
}

/// `ETHTOOL_SGRO` on `iface` of the calling thread's namespace (no ethtool binary needed).
fn set_gro(iface: &str, on: bool) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GGRO: u32 = 0x2b;
    const ETHTOOL_SGRO: u32 = 0x2c;
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCETHTOOL");
    }
    let ioctl = |cmd: u32, data: u32| -> std::io::Result<u32> {
        let mut v = EthtoolValue { cmd, data };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: &mut v as *mut _ as *mut libc::c_void,
            _pad: [0; 16],
        };
        for (d, s) in req
            .name
            .iter_mut()
            .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        if unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(v.data)
    };
    let r = ioctl(ETHTOOL_SGRO, on as u32).and_then(|_| ioctl(ETHTOOL_GGRO, 0));
    unsafe { libc::close(fd) };
    let got = r.with_context(|| format!("set GRO on {iface}"))?;
    if (got != 0) != on {
        bail!("GRO on {iface} is {got} after setting it to {on}");
    }
    Ok(())
}

/// The receiving veth's NAPI kthreads (`napi/tgbrx0-<id>`; comm is cut at 15 characters).
fn napi_threads() -> Result<Vec<(libc::pid_t, String)>> {
    let prefix = format!("napi/{RX_IF}-");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").context("read /proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if comm.starts_with(&prefix) {
            out.push((pid, comm.to_string()));
        }
    }
    if out.is_empty() {
        bail!("no threaded NAPI kthread named {prefix}* found");
    }
    Ok(out)
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: libc::pid_t) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f
        .get(11)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("utime of {pid}"))?;
    let stime: u64 = f
        .get(12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("stime of {pid}"))?;
    Ok(utime + stime)
}

// ---------------------------------------------------------------------------------------------
// Receivers

/// A receiver attached to `tgbrx0`; detached when dropped.
// One per benchmark run: the loaded Dataplane is not worth a Box.
#[allow(clippy::large_enum_variant)]
enum Attached {
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
    fn new(lab: &Lab, r: Receiver, snapshot: &L4Snapshot) -> Result<Attached> {
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
                let prog: &mut Xdp = ebpf
                    .program_mut("bench_drop")
                    .ok_or_else(|| anyhow!("no bench_drop"))?
                    .try_into()?;
                prog.load().context("load bench_drop")?;
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
    fn prog_stats(&mut self) -> Result<Option<(Duration, u64)>> {
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
    fn count(&self) -> Result<u64> {
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

// ---------------------------------------------------------------------------------------------
// Generator

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
        let prog: &mut Xdp = ebpf
            .program_mut("bench_tx")
            .ok_or_else(|| anyhow!("no bench_tx"))?
            .try_into()?;
        prog.load().context("load bench_tx")?;
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

// ---------------------------------------------------------------------------------------------
// One trial

fn trial(lab: &Lab, r: Receiver, snapshot: &L4Snapshot, length: Duration) -> Result<Trial> {
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
