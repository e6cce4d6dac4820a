//! Helpers for Tollgate's privileged end-to-end tests (network namespaces, real packets, the real binary; docs/testing.md).
//!
//! A [`Lab`] is one throw-away network namespace joined to the root namespace by a veth pair,
//! with its own addresses, its own bpffs (so pins never mix with another lab's or the host's)
//! and its own state and source directories. The agent ([`Agent`]) runs the real `tollgate`
//! binary in the ROOT namespace, attached to the root-side end of the pair: `ip netns exec`
//! gives a fresh `/sys`, so a bpffs mounted in the root namespace would not be visible from
//! inside a test namespace. Test traffic is sent from inside the namespace towards the root-side
//! address, and listeners for it live in the test process itself (which is in the root namespace).
//!
//! Everything a lab creates is removed in `Drop`, also when the test panics, and a stale lab with
//! the same name left by a killed earlier run is removed before a new one is built.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod admin;
pub mod cgroup;
pub mod cluster_limits;
pub mod conformance;
pub mod gitrepo;
pub mod gitserver;
pub mod kube_fake;
pub mod l7;

/// Debian's python3. `python3-scapy` is installed for it, and a pyenv shim earlier on `PATH`
/// may point at another interpreter without it.
pub const PYTHON: &str = "/usr/bin/python3";

/// True when the process runs as root (every test here needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the test, loudly and with the reason, when it does not run as root: every test here
/// creates network namespaces, veths and eBPF programs, and one that "passed" without doing so
/// would say nothing. (This crate is outside the workspace's default members: a plain
/// `cargo test` does not run it; `cargo xtask test` does, as root.)
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::is_root(),
            "this end-to-end test needs root (network namespaces, veth pairs, eBPF): run it as root, e.g. `sudo -E cargo xtask test`"
        );
    };
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The `tollgate` binary under test: `$TOLLGATE_BIN`, else the one built beside this test
/// executable (`<target>/debug/tollgate`, which follows `CARGO_TARGET_DIR`), else
/// `<workspace>/target/debug/tollgate`.
pub fn tollgate_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(bin);
    }
    // A test executable lives in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let candidate = profile_dir.join("tollgate");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    workspace_root().join("target/debug/tollgate")
}

/// Runs a command to completion; panics (with the command line) only if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{program} {}`: {e}", args.join(" ")))
}

/// Runs a command and returns its stdout; panics with its stderr when it fails.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command for cleanup: failures are expected (the thing may already be gone) and ignored.
fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

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
        let out = self.ns_run(&[
            PYTHON,
            "-c",
            SCRIPT,
            &from.to_string(),
            &self.config.root_ip.to_string(),
            &port.to_string(),
            &format!("{}", timeout.as_secs_f64()),
        ]);
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
        let mut cmd = self.ns_command(
            PYTHON,
            &[
                "-c",
                SCRIPT,
                &from.to_string(),
                &self.config.root_ip.to_string(),
                &port.to_string(),
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

    fn next_agent_log(&self) -> PathBuf {
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

const PID_FILE: &str = "agents.pid";

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

/// Reads the count printed by the UDP sender command.
pub fn parse_sent(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "UDP sender failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The outcome of a TCP connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed: the SYN and the ACK got through.
    Connected,
    /// A RST came back: the SYN reached the host, where nothing listens.
    Refused,
    /// Nothing came back: the SYN was dropped (by the program, when the lab is healthy).
    TimedOut,
    /// Anything else (with what the client printed).
    Error(String),
}

impl Connect {
    /// True when the SYN reached the host's stack (connected or refused).
    pub fn reached_host(&self) -> bool {
        matches!(self, Connect::Connected | Connect::Refused)
    }
}

/// `ping`'s summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u64,
    /// Echo replies received.
    pub received: u64,
}

impl PingStats {
    /// Parses "N packets transmitted, M received" out of ping's output.
    pub fn parse(output: &str) -> Option<PingStats> {
        let line = output.lines().find(|l| l.contains("packets transmitted"))?;
        let mut numbers = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().ok());
        Some(PingStats {
            transmitted: numbers.next()??,
            received: numbers.next()??,
        })
    }

    /// Waits for a ping started from [`Lab::ping_command`] and parses its summary.
    pub fn from_child(child: Child) -> PingStats {
        let out = child.wait_with_output().expect("wait for ping");
        PingStats::parse(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|| {
            panic!(
                "cannot read ping's summary: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The output of `tollgate counters --format json`.
#[derive(Debug, Clone)]
pub struct Counters(pub Value);

impl Counters {
    fn rules(&self) -> impl Iterator<Item = &Value> {
        self.0["rules"].as_array().into_iter().flatten()
    }

    /// Packets counted for `rule` with `action` (pass|drop) and `reason`
    /// (policy|ratelimit|default|audit), summed over policies; 0 when the row is absent.
    pub fn packets(&self, rule: &str, action: &str, reason: &str) -> u64 {
        self.rules()
            .filter(|r| r["rule"] == rule && r["action"] == action && r["reason"] == reason)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Packets counted for `rule`, whatever the action and reason.
    pub fn rule_packets(&self, rule: &str) -> u64 {
        self.rules()
            .filter(|r| r["rule"] == rule)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Packets counted by the default action (rule "(default)"), whatever the verdict.
    pub fn default_packets(&self) -> u64 {
        self.rules()
            .filter(|r| r["rule"] == "(default)" || r["reason"] == "default")
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// A global statistic (`non_ip`, `malformed`, `fragment_pass`, `unconfigured`, `unsupported`).
    pub fn stat(&self, name: &str) -> u64 {
        self.0["stats"][name].as_u64().unwrap_or(0)
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            serde_json::to_string_pretty(&self.0).unwrap_or_default()
        )
    }
}

/// The real `tollgate run`, started in the root namespace on a lab's root-side veth, with
/// stdout and stderr captured to a file. Dropping it kills it (SIGKILL).
pub struct Agent {
    child: Child,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Agent {
    /// Starts `tollgate run --interface <lab veth> --source <lab source> --pin-dir <lab pins>
    /// --state-dir <lab state> --log-format text <extra_args>` with [`tollgate_bin`].
    pub fn start(lab: &Lab, extra_args: &[&str]) -> Agent {
        Agent::start_with(&tollgate_bin(), lab, extra_args)
    }

    /// As [`Agent::start`], with extra environment variables (settings read from the
    /// environment, such as a secret named by `--git-password-env`).
    pub fn start_with_env(lab: &Lab, extra_args: &[&str], env: &[(&str, &str)]) -> Agent {
        Agent::spawn(&tollgate_bin(), lab, extra_args, env)
    }

    /// As [`Agent::start`], with another binary (the demo runs the release build).
    pub fn start_with(bin: &Path, lab: &Lab, extra_args: &[&str]) -> Agent {
        Agent::spawn(bin, lab, extra_args, &[])
    }

    /// As [`Agent::start`], inside `cgroup` (moved there as soon as it is started, before it
    /// has read its policy).
    pub fn start_in(cgroup: &cgroup::MemoryCgroup, lab: &Lab, extra_args: &[&str]) -> Agent {
        let agent = Agent::spawn(&tollgate_bin(), lab, extra_args, &[]);
        cgroup.add(agent.pid());
        agent
    }

    fn spawn(bin: &Path, lab: &Lab, extra_args: &[&str], env: &[(&str, &str)]) -> Agent {
        assert!(
            bin.is_file(),
            "no tollgate binary at {} (build it first)",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--interface", lab.iface(), "--source"])
            .arg(&lab.source_dir)
            .arg("--pin-dir")
            .arg(&lab.pin_dir)
            .arg("--state-dir")
            .arg(&lab.state_dir)
            .args(["--log-format", "text"])
            .args(extra_args)
            .envs(env.iter().copied());
        Agent::start_command(lab, cmd)
    }

    /// Starts `cmd`, a `tollgate run` the test put together itself (through a wrapper such as
    /// `unshare`, or with other directories), with its output in the lab's next agent log.
    pub fn start_command(lab: &Lab, mut cmd: Command) -> Agent {
        let log_path = lab.next_agent_log();
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone the log file");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        // Recorded so that a later run can end this agent if this run is killed.
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.config.base_dir.join(PID_FILE))
        {
            let _ = writeln!(f, "{}", child.id());
        }
        Agent {
            child,
            log_path,
            exited: None,
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The number of log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until at least `count` log lines contain `needle`. Fails early, with the log,
    /// when the agent exits.
    pub fn wait_for_log_count(
        &mut self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(needle) >= count {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!(
                    "the agent exited ({:?}) before logging {count} x {needle:?}; its log:\n{}",
                    self.exited,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {count} x {needle:?} in the agent's log after {timeout:?}; its log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped (is_running checks).
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if self.is_running() {
            self.signal(libc::SIGKILL);
        }
        if let Ok(status) = self.child.wait() {
            self.exited.get_or_insert(status);
        }
    }

    /// SIGTERM, and wait at most `timeout` for it to exit.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            self.signal(libc::SIGTERM);
        }
        self.wait_exit(timeout)
    }

    /// SIGHUP: re-read the source directory now.
    pub fn sighup(&mut self) {
        assert!(
            self.is_running(),
            "SIGHUP to an agent that has exited:\n{}",
            self.log()
        );
        self.signal(libc::SIGHUP);
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.exited
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of the agent's log ({}):",
                self.log_path.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("---");
        }
        self.kill9();
    }
}

/// A UDP socket in the root namespace that counts the datagrams it receives, in a thread
/// (so the socket buffer never overflows and hides drops).
pub struct UdpCounter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpCounter {
    /// Binds `ip:port` and starts counting.
    pub fn start(ip: Ipv4Addr, port: u16) -> UdpCounter {
        let socket = UdpSocket::bind(SocketAddrV4::new(ip, port))
            .unwrap_or_else(|e| panic!("bind udp {ip}:{port}: {e}"));
        set_rcvbuf(&socket, 8 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        UdpCounter {
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until no datagram has arrived for `quiet`, then returns the count.
    pub fn settle(&self, quiet: Duration) -> u64 {
        let mut last = self.count();
        let mut since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = self.count();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return now;
            }
        }
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_rcvbuf(socket: &UdpSocket, bytes: libc::c_int) {
    // SO_RCVBUFFORCE (root only) goes past net.core.rmem_max; fall back to SO_RCVBUF.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a valid fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &bytes as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// A TCP listener in the root namespace that accepts and closes connections in a thread.
pub struct TcpServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `ip:port`; `Err` when the port is taken (some other listener will answer,
    /// which is as good for tests that only ask whether a SYN reached the host).
    pub fn start(ip: Ipv4Addr, port: u16) -> io::Result<TcpServer> {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(TcpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Formats an `L4Policy` document (the helpers below keep the tests' policies short).
pub fn l4_policy(name: &str, default_action: &str, rules_yaml: &str) -> String {
    let mut doc = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata:\n  name: {name}\nspec:\n  mode: enforce\n  defaultAction: {default_action}\n"
    );
    if rules_yaml.trim().is_empty() {
        doc.push_str("  rules: []\n");
    } else {
        doc.push_str("  rules:\n");
        for line in rules_yaml.trim_matches('\n').lines() {
            doc.push_str("    ");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    doc
}

/// How long tests wait for the agent to enforce a revision.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The log line the agent prints once a revision is enforced.
pub const POLICY_APPLIED: &str = "policy applied";

/// A plain HTTP/1.1 GET on loopback (the admin server, Prometheus): the status code and the
/// body. `headers` are extra header lines, each ending in `\r\n`. `None` when nothing answers.
pub fn http_get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of the first sample line of a metrics exposition that starts with `prefix` (a
/// metric name with its labels, or followed by a space).
pub fn metric_value(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_is_parsed_with_and_without_loss() {
        let ok = "--- 198.18.0.1 ping statistics ---\n5 packets transmitted, 5 received, 0% packet loss, time 41ms\n";
        assert_eq!(
            PingStats::parse(ok),
            Some(PingStats {
                transmitted: 5,
                received: 5
            })
        );
        let lost = "10 packets transmitted, 0 received, 100% packet loss, time 95ms\n";
        assert_eq!(
            PingStats::parse(lost),
            Some(PingStats {
                transmitted: 10,
                received: 0
            })
        );
        let errors = "3 packets transmitted, 0 received, +3 errors, 100% packet loss\n";
        assert_eq!(
            PingStats::parse(errors),
            Some(PingStats {
                transmitted: 3,
                received: 0
            })
        );
    }

    #[test]
    fn lab_names_fit_interface_name_limits_and_stay_in_the_benchmark_range() {
        let c = LabConfig::for_test("abcdefghijk", &[]);
        assert!(c.veth_root.len() <= 15 && c.veth_ns.len() <= 15);
        assert_eq!(c.root_ip.octets()[..2], [198, 18]);
        assert_ne!(c.root_ip.octets()[2], 0, "198.18.0.0/24 is the demo's");
    }

    #[test]
    fn counters_sum_rows_by_rule_action_and_reason() {
        let c = Counters(serde_json::json!({
            "rules": [
                {"policy":"a","rule":"r","action":"drop","reason":"policy","packets":3,"bytes":1},
                {"policy":"b","rule":"r","action":"drop","reason":"policy","packets":4,"bytes":1},
                {"policy":"a","rule":"(default)","action":"pass","reason":"default","packets":5,"bytes":1}
            ],
            "stats": {"non_ip": 2}
        }));
        assert_eq!(c.packets("r", "drop", "policy"), 7);
        assert_eq!(c.packets("r", "pass", "policy"), 0);
        assert_eq!(c.default_packets(), 5);
        assert_eq!(c.stat("non_ip"), 2);
        assert_eq!(c.stat("malformed"), 0);
    }

    #[test]
    fn policy_documents_indent_their_rules() {
        let doc = l4_policy(
            "p",
            "allow",
            "- name: r\n  action: deny\n  from: [203.0.113.0/24]\n",
        );
        assert!(
            doc.contains("  rules:\n    - name: r\n      action: deny\n"),
            "{doc}"
        );
    }
}
