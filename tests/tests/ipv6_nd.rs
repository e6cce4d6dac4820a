//! IPv6 needs ICMPv6 neighbour discovery (RFC 4861) to reach anyone on the link, and an XDP
//! firewall judges it like any other packet: the example policy (`defaultAction: deny`) allows
//! it, so TCP over IPv6 to the port it allows connects; without that rule the connection times
//! out, and the agent warns about it once per revision.

use std::net::TcpListener;
use std::time::Duration;

use tollgate_tests::{require_root, run_ok, workspace_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

/// The rule examples/edge.yaml allows neighbour discovery with, as written there.
const ND_RULE: &str = "    - name: ipv6-neighbour-discovery";

/// examples/edge.yaml without its neighbour discovery rule.
fn without_nd(edge: &str) -> String {
    let start = edge.find(ND_RULE).expect("the example has an ND rule");
    let rest = &edge[start + ND_RULE.len()..];
    let end = rest
        .find("\n    - ")
        .map_or(edge.len(), |i| start + ND_RULE.len() + i + 1);
    format!("{}{}", &edge[..start], &edge[end..])
}

/// Gives the lab link IPv6 (the lab turns it off): the addresses `prefix::1` (root side) and
/// `prefix::2` (namespace side), without duplicate address detection so they work at once.
fn enable_ipv6(lab: &Lab, prefix: &str) {
    let root = lab.iface().to_owned();
    let ns = lab.config.veth_ns.clone();
    for (key, value) in [("accept_dad", "0"), ("disable_ipv6", "0")] {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{root}/{key}"), value)
            .unwrap_or_else(|e| panic!("{key} on {root}: {e}"));
    }
    for setting in [
        "net.ipv6.conf.all.disable_ipv6=0".to_owned(),
        format!("net.ipv6.conf.{ns}.accept_dad=0"),
        format!("net.ipv6.conf.{ns}.disable_ipv6=0"),
    ] {
        let out = lab.ns_run(&["sysctl", "-qw", &setting]);
        assert!(out.status.success(), "sysctl {setting}: {out:?}");
    }
    run_ok(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{prefix}::1/64"),
            "dev",
            &root,
            "nodad",
        ],
    );
    let out = lab.ns_run(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{prefix}::2/64"),
        "dev",
        &ns,
        "nodad",
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// Forgets the link-layer addresses both sides learnt, so that the next packet needs neighbour
/// discovery again.
fn flush_neighbours(lab: &Lab) {
    run_ok("ip", &["-6", "neigh", "flush", "dev", lab.iface()]);
    let _ = lab.ns_run(&["ip", "-6", "neigh", "flush", "dev", &lab.config.veth_ns]);
}

/// Whether a TCP connection from the namespace to `[addr]:port` opens within 3 s.
fn connects(lab: &Lab, addr: &str, port: u16) -> bool {
    flush_neighbours(lab);
    lab.ns_command("nc", &["-6", "-z", "-w", "3", addr, &port.to_string()])
        .status()
        .expect("run nc")
        .success()
}

#[test]
fn the_example_policy_lets_tcp_over_ipv6_through_and_a_policy_that_drops_nd_is_warned_about() {
    require_root!();
    let lab = Lab::new("ipv6nd", &[]);
    let prefix = format!("fd54:4700:{:x}", lab.config.mac_byte);
    enable_ipv6(&lab, &prefix);
    let server_addr = format!("{prefix}::1");
    // `web` in examples/edge.yaml: TCP 8080 from anyone.
    let listener = TcpListener::bind(format!("[{server_addr}]:8080"))
        .unwrap_or_else(|e| panic!("listen on [{server_addr}]:8080: {e}"));
    std::thread::spawn(move || for _ in listener.incoming() {});
    let edge = std::fs::read_to_string(workspace_root().join("examples/edge.yaml")).unwrap();

    lab.write_policy("edge.yaml", &edge);
    let mut agent = lab.start_agent(&["--admin", "127.0.0.1:19494"]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        connects(&lab, &server_addr, 8080),
        "TCP over IPv6 to an allowed port under the example policy:\n{}",
        agent.log()
    );
    assert!(
        lab.counters().rule_packets("ipv6-neighbour-discovery") > 0,
        "neighbour discovery went through the ND rule: {:?}",
        lab.counters()
    );
    assert_eq!(agent.log_count("policy warning"), 0, "{}", agent.log());

    // The same policy without the ND rule: the connection times out, and the agent says why.
    lab.write_policy("edge.yaml", &without_nd(&edge));
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !connects(&lab, &server_addr, 8080),
        "without the ND rule the neighbours cannot find each other"
    );
    let warning = agent
        .log()
        .lines()
        .find(|l| l.contains("policy warning"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no warning:\n{}", agent.log()));
    assert!(
        warning.contains("edge.yaml: L4Policy/edge: spec.defaultAction")
            && warning.contains("neighbour discovery"),
        "{warning}"
    );
    // Read and applied again (SIGHUP), the same revision is not warned about twice.
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(agent.log_count("policy warning"), 1, "{}", agent.log());

    // Back to the example: connects again.
    lab.write_policy("edge.yaml", &edge);
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 4, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(connects(&lab, &server_addr, 8080), "{}", agent.log());
}

#[test]
fn removing_the_nd_rule_from_the_example_leaves_the_rest() {
    let edge = std::fs::read_to_string(workspace_root().join("examples/edge.yaml")).unwrap();
    let without = without_nd(&edge);
    assert!(!without.contains("ipv6-neighbour-discovery") && !without.contains("ICMPv6"));
    assert!(without.contains("    - name: ping\n"), "{without}");
    assert_eq!(edge.lines().count() - without.lines().count(), 4);
}
