//! The lab: the namespaces `tgb-tx` and `tgb-rx`, the veth pair between them and a private
//! bpffs, all removed on drop; and the system calls that place the generator and the receiving
//! NAPI thread (namespaces, CPU affinity, real-time priority, GRO, CPU time). Apart from the
//! benchmark's plan and report because it is the setting the trials run in, not a measurement.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use tollgate_dataplane as dataplane;
use tollgate_dataplane::testrun::{mount_bpffs, umount};

use super::{policies, RX_IF, RX_MAC, RX_NS, TX_IF, TX_NS};

#[derive(Debug, Clone)]
pub(super) struct LabInfo {
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) napi: String,
    pub(super) nrules: usize,
    pub(super) ncidrs: usize,
}

pub(super) struct Lab {
    bpffs: PathBuf,
    mounted: bool,
    pub(super) info: LabInfo,
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

pub(super) fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<String> {
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
    pub(super) fn new() -> Result<Lab> {
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

    pub(super) fn pin_dir(&self) -> PathBuf {
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
pub(super) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

pub(super) fn enter_netns(ns: &str) -> Result<()> {
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
pub(super) const RT_PRIORITY: libc::c_int = 50;

pub(super) fn make_realtime(pid: libc::pid_t) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("SCHED_FIFO for pid {pid}"));
    }
    Ok(())
}

pub(super) fn pin_to_cpu(pid: libc::pid_t, cpu: usize) -> Result<()> {
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
pub(super) fn napi_threads() -> Result<Vec<(libc::pid_t, String)>> {
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
pub(super) fn cpu_ticks(pid: libc::pid_t) -> Result<u64> {
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
