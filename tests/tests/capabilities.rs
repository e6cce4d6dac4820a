//! The DaemonSet's capabilities, measured: the real agent, run with exactly the capability set
//! of `manifests/install/base/daemonset.yaml` (read from the file) and nothing else, loads its
//! eBPF programs, attaches XDP to a test veth, pins into a bpffs, binds an L7 listener on a
//! port below 1024 and serves /healthz and /readyz; and without any one of those capabilities
//! it does not, with an error that says what was refused. So the set is enough, and minimal.
//!
//! The process is set up as a container runtime sets up a Kubernetes container with
//! `runAsUser: 0`, `capabilities: {drop: [ALL], add: [...]}`, `allowPrivilegeEscalation:
//! false`: `setpriv` limits the bounding set (and so what root gets at exec) and the inheritable
//! set to the list, and sets no_new_privs. Root-owned files stay readable (uid 0), but
//! CAP_DAC_OVERRIDE, CAP_SYS_ADMIN and the rest are gone.
//!
//! Needs root (network namespaces, eBPF, setpriv); `cargo xtask test` runs it.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::l7::one_route;
use tollgate_tests::{
    http_get, l4_policy, require_root, tollgate_bin, workspace_root, Agent, Connect, Lab,
    POLICY_APPLIED,
};

/// The privileged port the L7 listener binds (below 1024: CAP_NET_BIND_SERVICE).
const LISTENER_PORT: u16 = 80;
/// The admin server's port (loopback).
const ADMIN_PORT: u16 = 19_731;
/// How long a run may take to enforce and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a run with a capability short is given (the full set's run prints how long it took).
const SHORT_TIMEOUT: Duration = Duration::from_secs(12);
/// The admin port of the non-root test (tests may run in parallel under a plain cargo test).
const ADMIN_PORT_NON_ROOT: u16 = 19_732;

/// The agent container's `capabilities.add`, from the DaemonSet itself.
fn daemonset_capabilities() -> Vec<String> {
    let path = workspace_root().join("manifests/install/base/daemonset.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let ds: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    let agent = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "tollgate")
        .expect("the tollgate container");
    let sc = &agent["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["runAsUser"], 0,
        "the test runs the agent as uid 0, as the DaemonSet does"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    sc["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("a capability name").to_owned())
        .collect()
}

/// `setpriv`'s form of a capability list: `-all,+bpf,+net_admin`.
fn setpriv_caps(caps: &[String]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        s.push_str(",+");
        s.push_str(&c.to_ascii_lowercase());
    }
    s
}

/// What one run of the agent achieved.
#[derive(Debug, Default)]
struct Outcome {
    applied: bool,
    attached: bool,
    pinned: bool,
    listening: bool,
    healthz: bool,
    readyz: bool,
    /// The agent's error and warning lines (what it said was refused).
    errors: Vec<String>,
}

impl Outcome {
    fn all(&self) -> bool {
        self.applied
            && self.attached
            && self.pinned
            && self.listening
            && self.healthz
            && self.readyz
    }
}

/// Runs the agent on a fresh lab with exactly `caps`, and reports what worked.
fn run_with(tag: &str, caps: &[String], timeout: Duration) -> Outcome {
    let lab = Lab::new(tag, &[]);
    let gateway_address = lab.root_ip().to_string();
    lab.write_policy(
        "policy.yaml",
        &format!(
            "{}---\n{}",
            l4_policy(
                "edge",
                "allow",
                "- { name: web, action: allow, protocol: TCP, ports: [\"80\"] }\n"
            ),
            one_route(LISTENER_PORT, 1)
        ),
    );
    let set = setpriv_caps(caps);
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--inh-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--no-new-privs")
        .arg("--")
        .arg(tollgate_bin())
        .args(["run", "--interface", lab.iface(), "--source"])
        .arg(&lab.source_dir)
        .arg("--pin-dir")
        .arg(&lab.pin_dir)
        .arg("--state-dir")
        .arg(&lab.state_dir)
        .args([
            "--log-format",
            "text",
            "--gateway-address",
            &gateway_address,
        ])
        .args(["--admin", &format!("127.0.0.1:{ADMIN_PORT}")]);
    let mut agent = Agent::start_command(&lab, cmd);
    let outcome = observe(&lab, &mut agent, ADMIN_PORT, timeout);
    drop(agent);
    outcome
}

/// Waits until the agent enforces and serves everything, exits, or runs out of time; then
/// looks at each piece.
fn observe(lab: &Lab, agent: &mut Agent, admin: u16, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut o = Outcome::default();
    loop {
        let running = agent.is_running();
        o.applied = agent.log_count(POLICY_APPLIED) > 0;
        o.attached = lab.xdp_prog_id().is_some();
        o.pinned = !lab.pinned_files().is_empty();
        o.healthz = running && matches!(http_get(admin, "/healthz", ""), Some((200, _)));
        o.readyz = running && matches!(http_get(admin, "/readyz", ""), Some((200, _)));
        o.listening = running
            && lab.tcp_connect(lab.ns_ip(), LISTENER_PORT, Duration::from_millis(500))
                == Connect::Connected;
        if o.all() || !running || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(300));
    }
    // The lines that name a refusal (an error may span several lines: the cause is on its
    // own); else the error and warning lines, for the report.
    let log = agent.log();
    o.errors = log
        .lines()
        .filter(|l| REFUSALS.iter().any(|r| l.contains(r)))
        .map(str::to_owned)
        .collect();
    if o.errors.is_empty() {
        o.errors = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.starts_with("error:"))
            .map(str::to_owned)
            .collect();
    }
    o
}

/// How the kernel's refusals read in the agent's log (EPERM, EACCES).
const REFUSALS: [&str; 2] = ["Operation not permitted", "Permission denied"];

fn setpriv_present() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_daemonset_capabilities_are_enough_and_each_one_is_needed() {
    require_root!();
    assert!(setpriv_present(), "setpriv (util-linux) is missing");
    let caps = daemonset_capabilities();
    eprintln!("the DaemonSet's capabilities: {caps:?}");

    let started = Instant::now();
    let full = run_with("capall", &caps, READY_TIMEOUT);
    eprintln!("ready with all of them after {:?}", started.elapsed());
    eprintln!("with all of them: {full:?}");
    assert!(
        full.all(),
        "the agent does not work with the DaemonSet's capabilities {caps:?}: {full:#?}"
    );

    let mut report = Vec::new();
    for (i, dropped) in caps.iter().enumerate() {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        let o = run_with(&format!("capw{i}"), &fewer, SHORT_TIMEOUT);
        eprintln!("without {dropped}: {o:#?}");
        assert!(
            !o.all(),
            "the agent works without CAP_{dropped}: the DaemonSet's set is not minimal ({o:#?})"
        );
        // What failed must be said, not silently skipped: an error line naming the refusal.
        assert!(
            o.errors
                .iter()
                .any(|l| REFUSALS.iter().any(|r| l.contains(r))),
            "without CAP_{dropped} the agent said nothing about a refused operation: {o:#?}"
        );
        report.push(format!(
            "without {dropped}: applied={} attached={} pinned={} listening={} healthz={} readyz={}; first error: {}",
            o.applied,
            o.attached,
            o.pinned,
            o.listening,
            o.healthz,
            o.readyz,
            o.errors.first().map(String::as_str).unwrap_or("-")
        ));
    }
    eprintln!("capability report:\n  {}", report.join("\n  "));
}

/// The lab paths a non-root agent must own.
fn chown_tree(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    assert!(status.success(), "chown {}", path.display());
}

/// With a runtime that sets ambient capabilities (Kubernetes does not, yet), the same set works
/// for the image's non-root user (uid 65532) too, given that it owns the pin and state
/// directories.
#[test]
fn a_non_root_user_with_the_same_ambient_capabilities_runs_the_agent_too() {
    require_root!();
    assert!(setpriv_present(), "setpriv (util-linux) is missing");
    let caps = daemonset_capabilities();
    let lab = Lab::new("capnonroot", &[]);
    let uid = 65_532;
    let gateway_address = lab.root_ip().to_string();
    lab.write_policy("policy.yaml", &one_route(LISTENER_PORT, 1));
    for dir in [&lab.bpffs, &lab.state_dir, &lab.source_dir] {
        chown_tree(dir, uid);
    }
    // The binary must be reachable by that user: a copy beside the lab.
    let bin: PathBuf = lab.config.base_dir.join("tollgate");
    std::fs::copy(tollgate_bin(), &bin).expect("copy the binary");
    let set = setpriv_caps(&caps);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
    ])
    .arg(format!("--inh-caps={set}"))
    .arg(format!("--ambient-caps={set}"))
    .arg(format!("--bounding-set={set}"))
    .arg("--no-new-privs")
    .arg("--")
    .arg(&bin)
    .args(["run", "--interface", lab.iface(), "--source"])
    .arg(&lab.source_dir)
    .arg("--pin-dir")
    .arg(&lab.pin_dir)
    .arg("--state-dir")
    .arg(&lab.state_dir)
    .args([
        "--log-format",
        "text",
        "--gateway-address",
        &gateway_address,
    ])
    .args(["--admin", &format!("127.0.0.1:{ADMIN_PORT_NON_ROOT}")]);
    let mut agent = Agent::start_command(&lab, cmd);
    let o = observe(&lab, &mut agent, ADMIN_PORT_NON_ROOT, READY_TIMEOUT);
    assert!(
        o.all(),
        "as uid {uid} with ambient {caps:?}: {o:#?}\n{}",
        agent.log()
    );
}
