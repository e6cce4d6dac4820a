//! [`Lab`]: one test's network namespace, veth pair, addresses, private bpffs and agent
//! directories, and what a test does through them (traffic from inside the namespace, policy
//! files, `tollgate counters`). Apart from the crate root because it is most of the crate: the
//! root keeps the process helpers and the re-exports every test imports.

use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    parse_sent, run, run_ok, run_quiet, tollgate_bin, Agent, Connect, Counters, PingStats, PYTHON,
};

/// The names and addresses of one lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Network namespace name.
    pub netns: String,
    /// Root-side veth (the agent attaches here). At most 15 bytes.
    pub veth_root: String,
    /// Namespace-side veth. At most 15 bytes.
    pub veth_ns: String,
    /// Address of the root-side veth (the destination of test traffic).
    pub root_ip: Ipv4Addr,
    /// Primary address of the namespace-side veth.
    pub ns_ip: Ipv4Addr,
    /// Prefix length of the lab link.
    pub prefix_len: u8,
    /// Extra source addresses (added as /32 on the namespace side, routed back from the root
    /// namespace through the veth) used to play different clients.
    pub sources: Vec<Ipv4Addr>,
    /// Directory holding everything else: the bpffs mount, state, source, logs.
    pub base_dir: PathBuf,
    /// Second-to-last byte of the veth MAC addresses (keeps labs apart).
    pub mac_byte: u8,
    /// The agent's `--source` directory; `None`: `<base_dir>/source`, created and removed
    /// with the lab.
    pub source_dir: Option<PathBuf>,
}

impl LabConfig {
    /// Names for a test lab: namespace `tgt-<tag>`, veths `tg<tag>0`/`tg<tag>1`, link
    /// 198.18.N.1/24 (root side) and 198.18.N.2/24 (namespace side), with N derived from the
    /// tag, and everything else under `/run/tollgate-test-<tag>`.
    ///
    /// `tag` must be short (at most 11 bytes, letters and digits): interface names are limited
    /// to 15 bytes.
    pub fn for_test(tag: &str, sources: &[Ipv4Addr]) -> LabConfig {
        assert!(
            !tag.is_empty() && tag.len() <= 11 && tag.bytes().all(|b| b.is_ascii_alphanumeric()),
            "lab tag {tag:?} must be 1-11 ASCII letters or digits"
        );
        // FNV-1a: a stable, tag-derived subnet 198.18.1.0/24 ..= 198.18.250.0/24.
        let hash = tag.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let n = (hash % 250) as u8 + 1;
        LabConfig {
            netns: format!("tgt-{tag}"),
            veth_root: format!("tg{tag}0"),
            veth_ns: format!("tg{tag}1"),
            root_ip: Ipv4Addr::new(198, 18, n, 1),
            ns_ip: Ipv4Addr::new(198, 18, n, 2),
            prefix_len: 24,
            sources: sources.to_vec(),
            base_dir: PathBuf::from(format!("/run/tollgate-test-{tag}")),
            mac_byte: n,
            source_dir: None,
        }
    }
}

/// One lab: a network namespace, a veth pair into it, addresses, a private bpffs and the
/// agent's directories. Dropping it removes all of it.
pub struct Lab {
    /// The names and addresses it was built from.
    pub config: LabConfig,
    /// Where the private bpffs is mounted.
    pub bpffs: PathBuf,
    /// The agent's `--pin-dir` (inside [`Lab::bpffs`]; the agent creates it).
    pub pin_dir: PathBuf,
    /// The agent's `--state-dir`.
    pub state_dir: PathBuf,
    /// The agent's `--source` directory (policies are written here).
    pub source_dir: PathBuf,
    agent_count: std::cell::Cell<u32>,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab").field("config", &self.config).finish()
    }
}

impl Lab {
    /// Builds a test lab named after `tag` (see [`LabConfig::for_test`]).
    pub fn new(tag: &str, sources: &[Ipv4Addr]) -> Lab {
        Lab::with_config(LabConfig::for_test(tag, sources))
    }

    /// Builds a lab from explicit names and addresses, first removing any stale lab that
    /// uses the same names.
    pub fn with_config(config: LabConfig) -> Lab {
        let base = config.base_dir.clone();
        let lab = Lab {
            bpffs: base.join("bpf"),
            pin_dir: base.join("bpf").join("tollgate"),
            state_dir: base.join("state"),
            source_dir: config
                .source_dir
                .clone()
                .unwrap_or_else(|| base.join("source")),
            config,
            agent_count: std::cell::Cell::new(0),
        };
        lab.teardown();
        // From here on, a panic drops `lab`, which removes what was built so far.
        lab.build();
        lab
    }

    fn build(&self) {
        let c = &self.config;
        for dir in [&self.bpffs, &self.state_dir, &self.source_dir] {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        run_ok("mount", &["-t", "bpf", "bpf", path_str(&self.bpffs)]);
        run_ok("ip", &["netns", "add", &c.netns]);
        self.add_link();
    }

    /// Deletes the veth pair (both ends: the namespace's goes with it), as an operator
    /// reconfiguring the interface would; [`Lab::add_link`] creates it again.
    pub fn delete_link(&self) {
        run_ok("ip", &["link", "del", &self.config.veth_root]);
    }

    /// Creates the veth pair with its addresses, routes and neighbours, and waits until it is
    /// up. Returns the moment `ip link add` returned: when the interface exists again.
    pub fn add_link(&self) -> Instant {
        let c = &self.config;
        let mac_root = format!("02:54:47:00:{:02x}:01", c.mac_byte);
        let mac_ns = format!("02:54:47:00:{:02x}:02", c.mac_byte);
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &c.veth_root,
                "address",
                &mac_root,
                "type",
                "veth",
                "peer",
                "name",
                &c.veth_ns,
                "address",
                &mac_ns,
                "netns",
                &c.netns,
            ],
        );
        let created = Instant::now();
        // No IPv6 on the lab link: router solicitations, MLD reports and DAD probes would
        // otherwise reach the program and show up in counters the tests compare exactly.
        let _ = fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", c.veth_root),
            "1",
        );
        self.ns_run_quiet(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", c.veth_ns),
        ]);
        self.ns_run_quiet(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);

        let root_cidr = format!("{}/{}", c.root_ip, c.prefix_len);
        let ns_cidr = format!("{}/{}", c.ns_ip, c.prefix_len);
        run_ok("ip", &["addr", "add", &root_cidr, "dev", &c.veth_root]);
        run_ok(
            "ip",
            &["-n", &c.netns, "addr", "add", &ns_cidr, "dev", &c.veth_ns],
        );
        for src in &c.sources {
            let cidr = format!("{src}/32");
            run_ok(
                "ip",
                &["-n", &c.netns, "addr", "add", &cidr, "dev", &c.veth_ns],
            );
        }
        run_ok("ip", &["-n", &c.netns, "link", "set", "lo", "up"]);
        run_ok("ip", &["-n", &c.netns, "link", "set", &c.veth_ns, "up"]);
        run_ok("ip", &["link", "set", &c.veth_root, "up"]);
        // Replies to the extra sources go back through the veth.
        for src in &c.sources {
            let cidr = format!("{src}/32");
            run_ok("ip", &["route", "replace", &cidr, "dev", &c.veth_root]);
        }
        // Static neighbours: no ARP on the link, so the packets crossing it are exactly the
        // ones a test sends (ARP would pass as non-IP, but it would muddy packet counts).
        let ns_ip = c.ns_ip.to_string();
        for ip in std::iter::once(ns_ip).chain(c.sources.iter().map(|s| s.to_string())) {
            run_ok(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &mac_ns,
                    "dev",
                    &c.veth_root,
                    "nud",
                    "permanent",
                ],
            );
        }
        let root_ip = c.root_ip.to_string();
        run_ok(
            "ip",
            &[
                "-n",
                &c.netns,
                "neigh",
                "replace",
                &root_ip,
                "lladdr",
                &mac_root,
                "dev",
                &c.veth_ns,
                "nud",
                "permanent",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let operstate = format!("/sys/class/net/{}/operstate", c.veth_root);
        while fs::read_to_string(&operstate)
            .map(|s| s.trim() != "up")
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                panic!("{} did not come up", c.veth_root);
            }
            thread::sleep(Duration::from_millis(20));
        }
        created
    }

    /// The index of the root-side veth now (`None` while it does not exist).
    pub fn ifindex(&self) -> Option<u32> {
        fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.config.veth_root))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The id of the XDP program the kernel shows on the root-side veth, in any mode
    /// (`ip -j link show`), if there is one.
    pub fn xdp_prog_id(&self) -> Option<u64> {
        let out = run("ip", &["-j", "link", "show", "dev", &self.config.veth_root]);
        let links: Value = serde_json::from_slice(&out.stdout).ok()?;
        links[0]["xdp"]["prog"]["id"].as_u64()
    }

    /// Removes everything a lab with these names may have left: agents it started (found
    /// through their pid files), pins, the namespace and veth, the bpffs mount, the directory.
    fn teardown(&self) {
        let c = &self.config;
        kill_recorded_agents(&c.base_dir, &self.pin_dir);
        if self.pin_dir.exists() {
            let bin = tollgate_bin();
            if bin.is_file() {
                run_quiet(
                    path_str(&bin),
                    &["detach", "--pin-dir", path_str(&self.pin_dir)],
                );
            }
        }
        run_quiet("ip", &["netns", "del", &c.netns]);
        run_quiet("ip", &["link", "del", &c.veth_root]);
        for src in &c.sources {
            // Normally gone with the device; a route left on another device is not ours.
            let cidr = format!("{src}/32");
            run_quiet("ip", &["route", "del", &cidr, "dev", &c.veth_root]);
        }
        if is_mount_point(&self.bpffs) && !run_quiet("umount", &[path_str(&self.bpffs)]) {
            run_quiet("umount", &["-l", path_str(&self.bpffs)]);
        }
        if c.base_dir.exists() && !is_mount_point(&self.bpffs) {
            let _ = fs::remove_dir_all(&c.base_dir);
        }
    }

    /// The network namespace's name.
    pub fn netns(&self) -> &str {
        &self.config.netns
    }

    /// The root-side interface, where the agent attaches.
    pub fn iface(&self) -> &str {
        &self.config.veth_root
    }

    /// The destination address of test traffic (root side).
    pub fn root_ip(&self) -> Ipv4Addr {
        self.config.root_ip
    }

    /// The namespace's primary address.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.config.ns_ip
    }

    /// A command that runs `program args` inside the namespace.
    pub fn ns_command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.config.netns, program])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `args[0] args[1..]` inside the namespace to completion.
    pub fn ns_run(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a command");
        self.ns_command(program, rest).output().unwrap_or_else(|e| {
            panic!(
                "ip netns exec {} {}: {e}",
                self.config.netns,
                args.join(" ")
            )
        })
    }

    fn ns_run_quiet(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", self.config.netns.as_str()];
        full.extend_from_slice(args);
        run_quiet("ip", &full);
    }

    /// Pings the root-side address from `from` (an address of the namespace): `count` echo
    /// requests `interval` apart, waiting at most `wait` for the last reply.
    pub fn ping(
        &self,
        from: Ipv4Addr,
        count: u32,
        interval: Duration,
        wait: Duration,
    ) -> PingStats {
        let out = self
            .ping_command(from, count, interval, wait)
            .output()
            .expect("start ping");
        PingStats::parse(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|| {
            panic!(
                "cannot read ping's summary: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The ping command of [`Lab::ping`], to run in the background (stdout piped; read it with
    /// [`PingStats::from_child`]).
    pub fn ping_command(
        &self,
        from: Ipv4Addr,
        count: u32,
        interval: Duration,
        wait: Duration,
    ) -> Command {
        let interval = format!("{:.3}", interval.as_secs_f64());
        let wait = format!("{}", wait.as_secs().max(1));
        let count = count.to_string();
        let from = from.to_string();
        let dst = self.config.root_ip.to_string();
        let mut cmd = self.ns_command(
            "ping",
            &[
                "-n", "-q", "-c", &count, "-i", &interval, "-W", &wait, "-I", &from, &dst,
            ],
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// `python3 -c script <from> <root-side address> <port> rest...` inside the namespace: the
    /// scripts that send test traffic from `from` to the root side.
    fn python_to_root(&self, script: &str, from: Ipv4Addr, port: u16, rest: &[&str]) -> Command {
        let (from, root, port) = (
            from.to_string(),
            self.config.root_ip.to_string(),
            port.to_string(),
        );
        let mut args = vec!["-c", script, &from, &root, &port];
        args.extend_from_slice(rest);
        self.ns_command(PYTHON, &args)
    }

    /// Opens a TCP connection from `from` to the root-side address on `port`.
    pub fn tcp_connect(&self, from: Ipv4Addr, port: u16, timeout: Duration) -> Connect {
        const SCRIPT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[4]))
s.bind((sys.argv[1], 0))
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"#;
        let out = self
            .python_to_root(SCRIPT, from, port, &[&timeout.as_secs_f64().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("python in {}: {e}", self.config.netns));
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim() {
            "connected" => Connect::Connected,
            "refused" => Connect::Refused,
            "timeout" => Connect::TimedOut,
            other => Connect::Error(format!("{other}{}", String::from_utf8_lossy(&out.stderr))),
        }
    }

    /// Sends `count` UDP datagrams of `size` bytes from `from` to the root-side address on
    /// `port`, paced at `rate` packets per second (`None`: as fast as python goes).
    pub fn udp_send(
        &self,
        from: Ipv4Addr,
        port: u16,
        count: u64,
        rate: Option<u32>,
        size: usize,
    ) -> u64 {
        let out = self
            .udp_send_command(from, port, count, rate, size)
            .output()
            .expect("start the UDP sender");
        parse_sent(&out)
    }

    /// The command of [`Lab::udp_send`], to run in the background; it prints the number of
    /// datagrams sent (read it with [`parse_sent`] on its output).
    pub fn udp_send_command(
        &self,
        from: Ipv4Addr,
        port: u16,
        count: u64,
        rate: Option<u32>,
        size: usize,
    ) -> Command {
        const SCRIPT: &str = r#"
import socket, sys, time
src, dst, port, count, rate, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
payload = b"t" * size
sent = 0
start = time.monotonic()
for i in range(count):
    if rate > 0:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    while True:
        try:
            s.sendto(payload, (dst, port))
            break
        except BlockingIOError:
            time.sleep(0.0005)
        except OSError as e:
            if e.errno == 105:  # ENOBUFS: the qdisc is full; retry so the count stays exact
                time.sleep(0.0005)
                continue
            raise
    sent += 1
print(sent)
"#;
        let mut cmd = self.python_to_root(
            SCRIPT,
            from,
            port,
            &[
                &count.to_string(),
                &rate.unwrap_or(0).to_string(),
                &size.to_string(),
            ],
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Writes a policy file into the source directory atomically (write aside, then rename),
    /// so the agent never reads half a file.
    pub fn write_policy(&self, file_name: &str, yaml: &str) {
        let aside = self.config.base_dir.join(format!(".{file_name}.tmp"));
        fs::write(&aside, yaml).unwrap_or_else(|e| panic!("write {}: {e}", aside.display()));
        let dest = self.source_dir.join(file_name);
        fs::rename(&aside, &dest).unwrap_or_else(|e| panic!("rename to {}: {e}", dest.display()));
    }

    /// Removes a policy file from the source directory.
    pub fn remove_policy(&self, file_name: &str) {
        let path = self.source_dir.join(file_name);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// `tollgate counters --format json` for this lab's pins.
    pub fn counters(&self) -> Counters {
        let bin = tollgate_bin();
        let out = run(
            path_str(&bin),
            &[
                "counters",
                "--pin-dir",
                path_str(&self.pin_dir),
                "--state-dir",
                path_str(&self.state_dir),
                "--format",
                "json",
            ],
        );
        if !out.status.success() {
            panic!(
                "tollgate counters failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "tollgate counters printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        Counters(value)
    }

    /// `tollgate detach --pin-dir` for this lab.
    pub fn detach(&self) -> Output {
        let bin = tollgate_bin();
        run(
            path_str(&bin),
            &["detach", "--pin-dir", path_str(&self.pin_dir)],
        )
    }

    /// Packets received by the root-side veth (as `ip -s link` shows them).
    pub fn rx_packets(&self) -> u64 {
        read_stat(&self.config.veth_root, "rx_packets")
    }

    /// Every file (program, link, map) pinned anywhere in this lab's bpffs, except the
    /// `maps.debug` and `progs.debug` iterators the kernel puts in every new bpffs.
    pub fn pinned_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.bpffs.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                } else if !(dir == self.bpffs
                    && KERNEL_BPFFS_FILES.iter().any(|f| path.ends_with(f)))
                {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    }

    /// BPF programs attached to the root-side veth (XDP or TC), one line each, as `bpftool net
    /// show dev` lists them; empty when nothing is attached.
    pub fn attached_programs(&self) -> Vec<String> {
        let iface = &self.config.veth_root;
        let out = run_ok("bpftool", &["net", "show", "dev", iface]);
        out.lines()
            .filter(|line| line.starts_with(&format!("{iface}(")))
            .map(str::to_owned)
            .collect()
    }

    /// Starts the agent on this lab (see [`Agent::start`]).
    pub fn start_agent(&self, extra_args: &[&str]) -> Agent {
        Agent::start(self, extra_args)
    }

    pub(crate) fn next_agent_log(&self) -> PathBuf {
        let n = self.agent_count.get() + 1;
        self.agent_count.set(n);
        self.config.base_dir.join(format!("agent-{n}.log"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let Some(wanted) = path.to_str() else {
        return false;
    };
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(wanted))
}

fn read_stat(iface: &str, name: &str) -> u64 {
    let path = format!("/sys/class/net/{iface}/statistics/{name}");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

pub(crate) const PID_FILE: &str = "agents.pid";

/// Files the kernel creates at the root of every new bpffs (the preloaded BPF iterators).
const KERNEL_BPFFS_FILES: [&str; 2] = ["maps.debug", "progs.debug"];

/// Kills agents that an earlier (killed) run of this lab started, and nothing else: a pid from
/// the lab's pid file is only killed while its command line still names this lab's pin dir.
fn kill_recorded_agents(base_dir: &Path, pin_dir: &Path) {
    let Ok(pids) = fs::read_to_string(base_dir.join(PID_FILE)) else {
        return;
    };
    let pin = pin_dir.to_string_lossy();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" run ") && cmdline.contains(pin.as_ref()) {
            // SAFETY: plain kill(2) on a pid we started earlier.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_fit_interface_name_limits_and_stay_in_the_benchmark_range() {
        let c = LabConfig::for_test("abcdefghijk", &[]);
        assert!(c.veth_root.len() <= 15 && c.veth_ns.len() <= 15);
        assert_eq!(c.root_ip.octets()[..2], [198, 18]);
        assert_ne!(c.root_ip.octets()[2], 0, "198.18.0.0/24 is the demo's");
    }
}
