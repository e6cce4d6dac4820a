//! Never fail open when an interface comes back: an interface deleted and created again (new
//! index, no program) is enforced again within a second, whether the agent runs or was stopped
//! meanwhile; while it is absent the agent is not ready and says so; a program detached
//! behind the agent's back is attached again and counted as drift; and a plain host, where
//! nothing mounted a bpffs, works the first time.

use std::net::Ipv4Addr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::{
    admin, http_get, l4_policy, require_root, run, tollgate_bin, Agent, Lab, APPLY_TIMEOUT,
    POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// What the task promises: a returning interface is enforced again within this.
const BACK_WITHIN: Duration = Duration::from_secs(1);

fn deny_scanners(lab: &Lab) {
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
}

fn scanner_pings_answered(lab: &Lab) -> u64 {
    lab.ping(
        SCANNER,
        3,
        Duration::from_millis(20),
        Duration::from_secs(1),
    )
    .received
}

fn allowed_pings_answered(lab: &Lab) -> u64 {
    lab.ping(
        lab.ns_ip(),
        2,
        Duration::from_millis(20),
        Duration::from_secs(1),
    )
    .received
}

fn readyz(port: u16) -> (u16, String) {
    http_get(port, "/readyz", "").expect("the admin server answers")
}

/// The agent's report of the lab's interface in `/status`.
fn reported(port: u16) -> Value {
    admin::status(port)["interfaces"][0].clone()
}

/// Polls `done` until it holds or `timeout` has passed since `from`; the time from `from`
/// when it first held.
fn time_until(
    from: Instant,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<Duration> {
    loop {
        if done() {
            return Some(from.elapsed());
        }
        if from.elapsed() > timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Watches, on a thread, for the kernel to show an XDP program on the lab's interface; the
/// moment it does (polled every few milliseconds with `ip -j link show`).
fn watch_for_xdp(lab: &Lab, timeout: Duration) -> thread::JoinHandle<Option<Instant>> {
    let iface = lab.iface().to_owned();
    thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let out = run("ip", &["-j", "link", "show", "dev", &iface]);
            let links: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if links[0]["xdp"]["prog"]["id"].as_u64().is_some() {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Checks that the agent reports the interface enforced, at its current index, and is ready.
fn assert_enforced_and_ready(lab: &Lab, port: u16) {
    let ifindex = lab.ifindex().expect("the interface exists");
    let took = time_until(Instant::now(), BACK_WITHIN, || {
        let r = reported(port);
        r["enforced"] == true && r["ifindex"] == ifindex && readyz(port).0 == 200
    });
    assert!(
        took.is_some(),
        "not reported enforced at index {ifindex} and ready: {} / {:?}",
        reported(port),
        readyz(port)
    );
    assert_eq!(reported(port)["mode"], "native", "{}", reported(port));
}

/// Checks that the agent reports the interface absent and is not ready.
fn assert_absent_and_not_ready(lab: &Lab, port: u16) {
    let took = time_until(Instant::now(), BACK_WITHIN, || readyz(port).0 == 503);
    assert!(
        took.is_some(),
        "still ready without {}: {:?}",
        lab.iface(),
        readyz(port)
    );
    let (_, why) = readyz(port);
    assert!(
        why.contains(lab.iface()) && why.contains("absent"),
        "/readyz does not say which interface is missing: {why}"
    );
    let r = reported(port);
    assert_eq!(r["mode"], "absent", "{r}");
    assert_eq!(r["enforced"], false, "{r}");
    assert_eq!(r["ifindex"], Value::Null, "{r}");
    let metric = format!(
        "tollgate_interface_enforced{{interface=\"{}\"}} ",
        lab.iface()
    );
    assert_eq!(
        tollgate_tests::metric_value(&admin::metrics(port), &metric),
        Some(0),
        "{metric}"
    );
}

#[test]
fn an_interface_recreated_while_the_agent_runs_is_enforced_again_within_a_second() {
    require_root!();
    let port = 19850;
    let lab = Lab::new("reatrun", &[SCANNER]);
    deny_scanners(&lab);
    // A long interval: the drift check must not be what brings the program back.
    let mut agent = lab.start_agent(&["--interval", "1h", "--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "the scanner is not filtered"
    );
    let dropped_before = lab.counters().packets("block-scanners", "drop", "policy");

    let mut attach_times = Vec::new();
    for round in 0..5 {
        let old_index = lab.ifindex();
        lab.delete_link();
        assert_absent_and_not_ready(&lab, port);

        let watch = watch_for_xdp(&lab, Duration::from_secs(5));
        let created = lab.add_link();
        let attached = watch.join().expect("the watch thread").unwrap_or_else(|| {
            panic!(
                "round {round}: no program on the re-created interface after 5 s:\n{}",
                agent.log()
            )
        });
        let took = attached.saturating_duration_since(created);
        assert!(
            took <= BACK_WITHIN,
            "round {round}: the program came back after {took:?}"
        );
        attach_times.push(took);
        assert_ne!(lab.ifindex(), old_index, "the interface has a new index");
        assert_eq!(
            scanner_pings_answered(&lab),
            0,
            "round {round}: the scanner gets through the re-created interface"
        );
        assert_eq!(
            allowed_pings_answered(&lab),
            2,
            "round {round}: the allowed address is cut off"
        );
        assert_enforced_and_ready(&lab, port);
    }
    // Real packets, judged by the rule on the new interface (not passed as "unconfigured").
    let dropped_after = lab.counters().packets("block-scanners", "drop", "policy");
    assert!(
        dropped_after >= dropped_before + 15,
        "the scanner's pings on the re-created interfaces were not dropped by the rule: {dropped_before} -> {dropped_after}"
    );
    assert_eq!(
        agent.log_count("enforcing on interface (it appeared)"),
        5,
        "{}",
        agent.log()
    );
    eprintln!(
        "re-created interface -> program attached (kernel read-back): median {:?} of {:?}",
        median(attach_times.clone()),
        attach_times
    );
}

#[test]
fn an_interface_recreated_while_the_agent_is_stopped_is_enforced_when_it_starts() {
    require_root!();
    let port = 19851;
    let lab = Lab::new("reatstop", &[SCANNER]);
    deny_scanners(&lab);
    let admin_addr = format!("127.0.0.1:{port}");
    let mut first = lab.start_agent(&["--admin", &admin_addr]);
    first
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = first.sigterm(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{}", first.log());

    lab.delete_link();
    lab.add_link();
    // The pins are in place, but the link pinned for the old interface is defunct: nothing
    // filters the new one until an agent attaches.
    assert_eq!(lab.xdp_prog_id(), None);
    assert_eq!(scanner_pings_answered(&lab), 3, "nothing should filter yet");

    let started = Instant::now();
    let watch = watch_for_xdp(&lab, APPLY_TIMEOUT);
    let mut second = lab.start_agent(&["--admin", &admin_addr]);
    let attached = watch
        .join()
        .expect("the watch thread")
        .unwrap_or_else(|| panic!("no program on the interface:\n{}", second.log()));
    second
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = second.log();
    assert!(
        log.contains("unpinning a stale link"),
        "the defunct pinned link is not replaced:\n{log}"
    );
    assert!(
        !log.contains("could not adopt"),
        "the agent tried to adopt a defunct link:\n{log}"
    );
    // The rule set was written under the new index when the program was attached, before the
    // first pass: the first pass finds nothing to write.
    let applied = log
        .lines()
        .find(|l| l.contains(POLICY_APPLIED))
        .expect("a policy applied line");
    assert!(
        applied.contains("writes=0"),
        "the rule set was not in place under the new index before the first pass:\n{applied}"
    );
    assert_eq!(scanner_pings_answered(&lab), 0, "the scanner gets through");
    assert_eq!(allowed_pings_answered(&lab), 2);
    assert_enforced_and_ready(&lab, port);
    eprintln!(
        "agent start -> program attached to the re-created interface: {:?}",
        attached.saturating_duration_since(started)
    );
}

#[test]
fn an_agent_started_while_its_interface_is_absent_is_not_ready_until_it_appears() {
    require_root!();
    let port = 19852;
    let lab = Lab::new("reatabs", &[SCANNER]);
    deny_scanners(&lab);
    let admin_addr = format!("127.0.0.1:{port}");
    let mut first = lab.start_agent(&["--admin", &admin_addr]);
    first
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    first.kill9();
    lab.delete_link();

    let mut agent = lab.start_agent(&["--interval", "1h", "--admin", &admin_addr]);
    agent
        .wait_for_log("the interface does not exist", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_absent_and_not_ready(&lab, port);

    let watch = watch_for_xdp(&lab, Duration::from_secs(5));
    let created = lab.add_link();
    let attached = watch
        .join()
        .expect("the watch thread")
        .unwrap_or_else(|| panic!("no program on the new interface:\n{}", agent.log()));
    let took = attached.saturating_duration_since(created);
    assert!(took <= BACK_WITHIN, "the program came after {took:?}");
    assert_eq!(scanner_pings_answered(&lab), 0, "the scanner gets through");
    assert_enforced_and_ready(&lab, port);
    let metric = format!(
        "tollgate_interface_enforced{{interface=\"{}\"}} ",
        lab.iface()
    );
    assert_eq!(
        tollgate_tests::metric_value(&admin::metrics(port), &metric),
        Some(1)
    );
}

/// The id of the link pinned for the lab's interface as `mode_dir` (`xdp-native`, `tcx`),
/// if one is pinned.
fn pinned_link_id(lab: &Lab, mode_dir: &str) -> Option<u64> {
    let pin = lab.pin_dir.join("links").join(mode_dir).join(lab.iface());
    let out = run(
        "bpftool",
        &["-j", "link", "show", "pinned", pin.to_str().unwrap()],
    );
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["id"].as_u64()
}

/// Detaches the link pinned for the lab's interface with `bpftool link detach` and waits
/// until the agent has put a new one in its place (and the kernel shows a program, for
/// XDP); how long that took.
fn detach_and_wait_for_a_new_link(lab: &Lab, agent: &Agent, mode_dir: &str) -> Duration {
    let old = pinned_link_id(lab, mode_dir).expect("a pinned link");
    let detach = run("bpftool", &["link", "detach", "id", &old.to_string()]);
    assert!(
        detach.status.success(),
        "bpftool link detach: {}",
        String::from_utf8_lossy(&detach.stderr)
    );
    let xdp = mode_dir != "tcx";
    time_until(Instant::now(), Duration::from_secs(3), || {
        pinned_link_id(lab, mode_dir).is_some_and(|id| id != old)
            && (!xdp || lab.xdp_prog_id().is_some())
    })
    .unwrap_or_else(|| panic!("no new link after bpftool link detach:\n{}", agent.log()))
}

/// Waits for the scanner to be dropped again (one ping at a time); how long it took.
fn until_scanner_dropped(lab: &Lab, timeout: Duration) -> Option<Duration> {
    time_until(Instant::now(), timeout, || {
        lab.ping(
            SCANNER,
            1,
            Duration::from_millis(10),
            Duration::from_secs(1),
        )
        .received
            == 0
    })
}

#[test]
fn a_program_detached_behind_the_agents_back_is_attached_again_and_counted_as_drift() {
    require_root!();
    let port = 19853;
    let lab = Lab::new("reatdrift", &[SCANNER]);
    deny_scanners(&lab);
    let mut agent = lab.start_agent(&["--interval", "1s", "--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let program = lab.xdp_prog_id().expect("an XDP program");

    // Netlink detaches are refused by the kernel while a bpf_link owns the attachment
    // ("Can't replace active BPF XDP link", EBUSY): nothing to repair.
    let off = run("ip", &["link", "set", "dev", lab.iface(), "xdp", "off"]);
    assert!(
        !off.status.success(),
        "ip link set xdp off detached a link-owned program"
    );
    let net_detach = run("bpftool", &["net", "detach", "xdp", "dev", lab.iface()]);
    assert!(
        !net_detach.status.success(),
        "bpftool net detach detached a link-owned program"
    );
    assert_eq!(lab.xdp_prog_id(), Some(program), "the program was detached");

    let drift = |port| admin::metric(port, "tollgate_policy_drift_corrections_total ");
    let before = drift(port);
    // The ways that do detach it: BPF_LINK_DETACH, and removing the pin (the last reference).
    let back = detach_and_wait_for_a_new_link(&lab, &agent, "xdp-native");
    assert_eq!(scanner_pings_answered(&lab), 0, "the scanner gets through");
    assert!(
        drift(port) > before,
        "the re-attach is not counted as drift"
    );

    let old = pinned_link_id(&lab, "xdp-native").expect("a pinned link");
    let pin = lab.pin_dir.join("links/xdp-native").join(lab.iface());
    std::fs::remove_file(&pin).unwrap();
    time_until(Instant::now(), Duration::from_secs(3), || {
        pinned_link_id(&lab, "xdp-native").is_some_and(|id| id != old)
            && lab.xdp_prog_id().is_some()
    })
    .unwrap_or_else(|| {
        panic!(
            "not attached again after the pin was removed:\n{}",
            agent.log()
        )
    });
    assert_eq!(scanner_pings_answered(&lab), 0, "the scanner gets through");
    assert!(
        drift(port) >= before + 2,
        "both re-attaches are counted as drift"
    );
    let log = agent.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("drift corrected: the program"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in lines {
        assert!(
            line.contains(&format!("interface={}", lab.iface())),
            "the drift line does not name the interface: {line}"
        );
    }
    eprintln!("bpftool link detach -> attached again: {back:?} (--interval 1s)");
}

#[test]
fn a_tcx_program_detached_behind_the_agents_back_is_attached_again() {
    require_root!();
    let port = 19854;
    let lab = Lab::new("reattcx", &[SCANNER]);
    deny_scanners(&lab);
    let mut agent = lab.start_agent(&[
        "--attach-mode",
        "tc",
        "--interval",
        "1s",
        "--admin",
        &format!("127.0.0.1:{port}"),
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "the scanner is not filtered"
    );
    let before = admin::metric(port, "tollgate_policy_drift_corrections_total ");
    detach_and_wait_for_a_new_link(&lab, &agent, "tcx");
    agent
        .wait_for_log("drift corrected: the program", Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{e}"));
    // Packets are the witness that the new link works (this bpftool does not list TCX
    // programs).
    until_scanner_dropped(&lab, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("the scanner is not dropped again:\n{}", agent.log()));
    assert!(admin::metric(port, "tollgate_policy_drift_corrections_total ") > before);
    assert_eq!(reported(port)["mode"], "tc");
    assert_eq!(reported(port)["enforced"], true);
}

#[test]
fn a_host_without_a_bpffs_gets_one_mounted_and_is_enforced() {
    require_root!();
    let port = 19855;
    let lab = Lab::new("nobpffs", &[SCANNER]);
    deny_scanners(&lab);
    // A private mount namespace with an empty tmpfs over /sys/fs/bpf: a host where nothing
    // mounted a bpffs. The agent's mounts die with the namespace, when the agent does.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /sys/fs/bpf && exec \"$0\" \"$@\"",
    ])
    .arg(tollgate_bin())
    .args(["run", "--interface", lab.iface(), "--source"])
    .arg(&lab.source_dir)
    .args(["--pin-dir", "/sys/fs/bpf/tollgate", "--state-dir"])
    .arg(&lab.state_dir)
    .args([
        "--log-format",
        "text",
        "--admin",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut agent = Agent::start_command(&lab, cmd);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains("mounted a bpffs for the pins") && log.contains("mount_point=/sys/fs/bpf"),
        "{log}"
    );
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "the scanner is not filtered"
    );
    assert_enforced_and_ready(&lab, port);
}

#[test]
fn a_pin_dir_whose_mount_point_holds_files_is_refused_in_one_line() {
    require_root!();
    let lab = Lab::new("pinrefuse", &[SCANNER]);
    deny_scanners(&lab);
    // The source directory is not a bpffs and holds the policy: no bpffs goes over it.
    let pin_dir = lab.source_dir.join("tollgate");
    let out = Command::new(tollgate_bin())
        .args(["run", "--interface", lab.iface(), "--source"])
        .arg(&lab.source_dir)
        .arg("--pin-dir")
        .arg(&pin_dir)
        .arg("--state-dir")
        .arg(&lab.state_dir)
        .args(["--admin", "127.0.0.1:19856"])
        .output()
        .expect("run tollgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line:\n{stderr}");
    assert!(
        lines[0].starts_with("error: the pin directory")
            && lines[0].contains(&format!("mount -t bpf bpf {}", lab.source_dir.display())),
        "{stderr}"
    );
    assert!(
        lab.source_dir.join("edge.yaml").exists(),
        "the source was hidden"
    );
    assert_eq!(lab.attached_programs(), Vec::<String>::new());
}

#[test]
fn an_interface_renamed_away_is_not_ready_at_once_and_enforced_when_renamed_back() {
    require_root!();
    let port = 19857;
    let lab = Lab::new("reatname", &[SCANNER]);
    deny_scanners(&lab);
    // A long interval: the link event, which carries the new name, must be what is noticed.
    let mut agent = lab.start_agent(&["--interval", "1h", "--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let away = format!("{}r", lab.iface());
    run_ok_quiet(&["link", "set", "dev", lab.iface(), "down"]);
    run_ok_quiet(&["link", "set", "dev", lab.iface(), "name", &away]);
    assert_absent_and_not_ready(&lab, port);
    run_ok_quiet(&["link", "set", "dev", &away, "name", lab.iface()]);
    run_ok_quiet(&["link", "set", "dev", lab.iface(), "up"]);
    assert_enforced_and_ready(&lab, port);
    assert_eq!(scanner_pings_answered(&lab), 0, "the scanner gets through");
}

fn run_ok_quiet(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
