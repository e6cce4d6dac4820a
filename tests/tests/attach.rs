//! Attach modes: XDP in driver mode, generic (skb) XDP, and TC ingress (TCX) all enforce the
//! same policy; `auto` falls back from driver mode where a device has no native XDP, and one
//! agent enforces on several interfaces.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn scanner_policy() -> String {
    l4_policy(
        "edge",
        "allow",
        "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
    )
}

/// Runs the agent in `mode` and checks that the scanner is dropped and the lab address passes.
fn enforces_in_mode(
    tag: &str,
    mode: &str,
    expect_log: &str,
    expect_bpftool: Option<&str>,
    expect_pin: &str,
) {
    let lab = Lab::new(tag, &[SCANNER]);
    lab.write_policy("edge.yaml", &scanner_policy());
    let mut agent = lab.start_agent(&["--attach-mode", mode]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains(expect_log),
        "the agent does not say it attached with {expect_log}:\n{log}"
    );
    if let Some(expect_bpftool) = expect_bpftool {
        let attached = lab.attached_programs().join("\n");
        assert!(
            attached.contains(expect_bpftool),
            "bpftool does not show a {expect_bpftool} program:\n{attached}"
        );
    }
    let pins: Vec<String> = lab
        .pinned_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let link = format!("links/{expect_pin}/{}", lab.iface());
    assert!(
        pins.iter().any(|p| p.ends_with(&link)),
        "no pinned link {link}: {pins:?}"
    );

    let allowed = lab.ping(
        lab.ns_ip(),
        3,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
    assert_eq!(
        allowed.received, 3,
        "{mode}: pings from an allowed source: {allowed:?}"
    );
    let denied = lab.ping(
        SCANNER,
        3,
        Duration::from_millis(50),
        Duration::from_secs(1),
    );
    assert_eq!(
        denied.received, 0,
        "{mode}: pings from a denied source: {denied:?}"
    );
    let counters = lab.counters();
    assert!(
        counters.packets("block-scanners", "drop", "policy") >= 3,
        "{mode}:\n{counters}"
    );
}

#[test]
fn tc_ingress_enforces_the_same_policy() {
    require_root!();
    // Debian's bpftool 7.1 does not list TCX links under `net show`; the pinned link says it.
    enforces_in_mode("attachtc", "tc", "mode=\"tc\"", None, "tcx");
}

#[test]
fn generic_xdp_enforces_the_same_policy() {
    require_root!();
    enforces_in_mode(
        "attachgen",
        "generic",
        "mode=\"generic\"",
        Some(" generic id "),
        "xdp-generic",
    );
}

#[test]
fn native_xdp_enforces_the_same_policy() {
    require_root!();
    enforces_in_mode(
        "attachdrv",
        "native",
        "mode=\"native\"",
        Some(" driver id "),
        "xdp-native",
    );
}

/// A bridge device (no driver-mode XDP; this kernel has no dummy driver), removed on drop.
struct Dummy(String);

impl Dummy {
    fn new(name: &str) -> Dummy {
        let _ = Command::new("ip").args(["link", "del", name]).output();
        let out = Command::new("ip")
            .args(["link", "add", name, "type", "bridge"])
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "create bridge {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = Command::new("ip")
            .args(["link", "set", name, "up"])
            .output();
        Dummy(name.to_owned())
    }
}

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn auto_falls_back_to_generic_where_there_is_no_native_xdp_and_enforces_several_interfaces() {
    require_root!();
    let lab = Lab::new("attachauto", &[SCANNER]);
    let dummy = Dummy::new("tgatbr0");
    lab.write_policy("edge.yaml", &scanner_policy());
    let mut agent = lab.start_agent(&["--interface", &dummy.0]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "enforcing on interface interface={} mode=\"native\"",
            lab.iface()
        )),
        "the veth gets driver-mode XDP:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "enforcing on interface interface={} mode=\"generic\"",
            dummy.0
        )),
        "the bridge, which has no driver-mode XDP, falls back to generic XDP:\n{log}"
    );
    assert!(
        log.contains("fell_back_from"),
        "the fallback is logged with the reason:\n{log}"
    );
    let denied = lab.ping(
        SCANNER,
        3,
        Duration::from_millis(50),
        Duration::from_secs(1),
    );
    assert_eq!(denied.received, 0, "the veth still enforces: {denied:?}");
    drop(agent);
    drop(dummy);
}
