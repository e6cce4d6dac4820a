//! The agent, as the benchmarks that run it whole start it: on a veth interface of its own,
//! with its pins on a bpffs of its own ([`Network`]: push.rs, kube.rs, kube_scale.rs); and, for
//! the Kubernetes benchmarks, started as the DaemonSet runs it (`tollgate run --source kubernetes
//! --node-name --tls-secrets-dir`) against the fake API server of the tests crate, stopped with
//! its log kept and its network removed when dropped, and what its log says of each revision
//! ([`Agent`]). Shared because these benchmarks set up, start, stop and read the agent the same
//! way; each names its own interface, namespace, directory and ports, so that they can run
//! beside other benchmarks and tests.
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::kube_fake::FakeApiServer;

use super::{median, sh};

/// The network of one benchmark's agent: a veth pair, its peer in a namespace, and a directory
/// with a bpffs for the pins; names of that benchmark only.
pub struct Network {
    /// The veth interface the agent attaches to.
    pub iface: &'static str,
    /// Its peer, moved into `netns`.
    pub peer: &'static str,
    /// The network namespace of the peer.
    pub netns: &'static str,
    /// The agent's directory: pins (on a bpffs mounted at `bpf`), state, log and the rest of
    /// the benchmark's files.
    pub base: &'static str,
}

impl Network {
    /// Removes what a run left: the interface, the namespace, the bpffs and the directory.
    pub fn cleanup(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", self.iface])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", self.netns])
            .output();
        let _ = Command::new("umount")
            .arg(format!("{}/bpf", self.base))
            .output();
        let _ = std::fs::remove_dir_all(self.base);
    }

    /// After a cleanup: a bpffs for the pins, and the veth pair up, its peer in the namespace.
    pub fn setup(&self) {
        self.cleanup();
        let (base, netns, iface, peer) = (self.base, self.netns, self.iface, self.peer);
        std::fs::create_dir_all(format!("{base}/bpf")).expect("mkdir");
        sh("mount", &["-t", "bpf", "bpf", &format!("{base}/bpf")]);
        sh("ip", &["netns", "add", netns]);
        sh(
            "ip",
            &["link", "add", iface, "type", "veth", "peer", "name", peer],
        );
        sh("ip", &["link", "set", peer, "netns", netns]);
        sh("ip", &["link", "set", iface, "up"]);
        sh(
            "ip",
            &["netns", "exec", netns, "ip", "link", "set", peer, "up"],
        );
    }
}

/// Where one Kubernetes benchmark's agent runs: its network and names of that benchmark only.
pub struct Place {
    /// The interface, namespace and directory.
    pub net: Network,
    /// The Node the agent runs for (so that it watches its Node too).
    pub node: &'static str,
    /// The admin server's port.
    pub admin_port: u16,
    /// Where the agent's log of the last run is kept.
    pub kept_log: &'static str,
}

/// The agent, running; killed when dropped, its log then kept at [`Place::kept_log`] and its
/// place cleaned up.
pub struct Agent {
    /// The process.
    pub child: Child,
    /// Its log (JSON lines).
    pub log: PathBuf,
    place: &'static Place,
}

impl Agent {
    /// Starts the agent at `place`, watching `fake`, with `extra` arguments for `tollgate run`.
    pub fn start(place: &'static Place, fake: &FakeApiServer, extra: &[&str]) -> Agent {
        let base = place.net.base;
        let kubeconfig = format!("{base}/kubeconfig");
        fake.write_kubeconfig(Path::new(&kubeconfig))
            .expect("kubeconfig");
        let log = PathBuf::from(format!("{base}/agent.log"));
        let (secrets, pins, state) = (
            format!("{base}/secrets"),
            format!("{base}/bpf/tollgate"),
            format!("{base}/state"),
        );
        let admin = format!("127.0.0.1:{}", place.admin_port);
        let mut args = vec![
            "--interface",
            place.net.iface,
            "--source",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--node-name",
            place.node,
            "--tls-secrets-dir",
            &secrets,
            "--interval",
            "30s",
            "--pin-dir",
            &pins,
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(extra);
        args.extend(["--admin", &admin]);
        let child = spawn_agent(&log, &args);
        Agent { child, log, place }
    }

    /// The log, as it is now, for a failed assertion.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's JSON log lines.
    pub fn log_lines(&self) -> Vec<Value> {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .collect()
    }

    /// The log lines of the revisions applied so far.
    pub fn applied(&self) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|v| v["message"] == "policy applied")
            .collect()
    }

    /// What the agent's log says of the revision applied after the first `before` ones, once it
    /// is there (the log line may come a moment after the revision is enforced).
    pub fn rebuild_after(&self, before: usize) -> Rebuild {
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let lines = self.applied();
            if lines.len() > before {
                break lines[before].clone();
            }
            assert!(Instant::now() < deadline, "no log line for the revision");
            std::thread::sleep(Duration::from_millis(10));
        };
        Rebuild::of(&line)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::copy(&self.log, self.place.kept_log);
        self.place.net.cleanup();
    }
}

/// Starts `tollgate run` with `args` and what every benchmark adds: JSON logs at `info` into
/// `log` (read for each revision's breakdown) and `--detach-on-exit`.
pub fn spawn_agent(log: &Path, args: &[&str]) -> Child {
    let log_file = std::fs::File::create(log).expect("log");
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("run")
        .args(args)
        .args(["--log-format", "json", "--detach-on-exit"])
        .env("TOLLGATE_LOG", "info")
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start the agent")
}

/// The agent's breakdown of one revision (ms), from its log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuild {
    /// Reading the source into a revision.
    pub read: f64,
    /// Parse + compile.
    pub compile: f64,
    /// The apply, until enforced.
    pub apply: f64,
}

impl Rebuild {
    /// From a "policy applied" log line.
    pub fn of(line: &Value) -> Rebuild {
        let ms = |k: &str| line[k].as_f64().unwrap_or(f64::NAN);
        Rebuild {
            read: ms("read_ms"),
            compile: ms("compile_ms"),
            apply: ms("to_enforced_ms"),
        }
    }
}

/// (median, min, max) of `values`.
pub fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(&mut values), lo, hi)
}
