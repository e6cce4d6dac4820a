//! Allowed traffic passes, a denied source is dropped, and both are counted.

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::{
    l4_policy, require_root, Connect, Lab, TcpServer, APPLY_TIMEOUT, POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const WEB_PORT: u16 = 8080;

#[test]
fn allowed_ping_and_tcp_pass_denied_source_is_dropped() {
    require_root!();
    let lab = Lab::new("basic", &[SCANNER]);
    let _web = TcpServer::start(lab.root_ip(), WEB_PORT)
        .unwrap_or_else(|e| panic!("listen on {}:{WEB_PORT}: {e}", lab.root_ip()));

    // The lab itself works: before the agent runs, the scanner gets through.
    let before = lab.ping(
        SCANNER,
        2,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
    assert_eq!(
        before.received, 2,
        "the lab does not route the scanner's pings: {before:?}"
    );

    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    let allowed = lab.ping(
        lab.ns_ip(),
        5,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
    assert_eq!(
        allowed.received, 5,
        "pings from an allowed source: {allowed:?}"
    );
    assert_eq!(
        lab.tcp_connect(lab.ns_ip(), WEB_PORT, Duration::from_secs(3)),
        Connect::Connected
    );

    let denied = lab.ping(
        SCANNER,
        5,
        Duration::from_millis(50),
        Duration::from_secs(1),
    );
    assert_eq!(denied.received, 0, "pings from a denied source: {denied:?}");
    assert_eq!(
        lab.tcp_connect(SCANNER, WEB_PORT, Duration::from_secs(1)),
        Connect::TimedOut
    );

    let counters = lab.counters();
    let dropped = counters.packets("block-scanners", "drop", "policy");
    // 5 echo requests and at least one SYN.
    assert!(
        dropped >= 6,
        "block-scanners counted {dropped} drops:\n{counters}"
    );
    let passed = counters.packets("(default)", "pass", "default");
    // 5 echo requests, and the SYN and ACK of the handshake.
    assert!(
        passed >= 7,
        "the default action counted {passed} passes:\n{counters}"
    );
    assert!(agent.is_running(), "the agent exited:\n{}", agent.log());
}
