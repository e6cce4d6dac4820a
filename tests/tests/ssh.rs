//! "SSH only from the office": with deny winning over allow, this is an allow rule for the
//! office plus `defaultAction: deny`, not an allow rule plus a deny-22 rule (which would also
//! drop the office).

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::{
    l4_policy, require_root, Connect, Lab, TcpServer, APPLY_TIMEOUT, POLICY_APPLIED,
};

const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 44);
const SSH: u16 = 22;

#[test]
fn ssh_only_from_office() {
    require_root!();
    let lab = Lab::new("ssh", &[OFFICE, ELSEWHERE]);
    // If something else already listens on port 22, it answers instead: the test only asks
    // whether the SYN reached the host.
    let _ssh = TcpServer::start(lab.root_ip(), SSH).ok();
    lab.write_policy(
        "ssh.yaml",
        &l4_policy(
            "ssh",
            "deny",
            "- name: ssh-from-office\n  action: allow\n  from: [198.51.100.0/24]\n  protocol: TCP\n  ports: [\"22\"]\n\
             - name: ping\n  action: allow\n  protocol: ICMP\n",
        ),
    );
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    let office = lab.tcp_connect(OFFICE, SSH, Duration::from_secs(3));
    assert!(office.reached_host(), "ssh from the office: {office:?}");
    for source in [lab.ns_ip(), ELSEWHERE] {
        let outcome = lab.tcp_connect(source, SSH, Duration::from_secs(1));
        assert_eq!(outcome, Connect::TimedOut, "ssh from {source}");
    }
    // Everyone may still ping (the ICMP rule), so the drops above are about port 22.
    let ping = lab.ping(
        ELSEWHERE,
        3,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
    assert_eq!(ping.received, 3, "pings from {ELSEWHERE}: {ping:?}");

    let counters = lab.counters();
    let office_passed = counters.packets("ssh-from-office", "pass", "policy");
    assert!(
        office_passed >= 1,
        "ssh-from-office counted {office_passed}:\n{counters}"
    );
    let default_dropped = counters.packets("(default)", "drop", "default");
    assert!(
        default_dropped >= 2,
        "the default action dropped {default_dropped}:\n{counters}"
    );
    assert_eq!(counters.packets("ping", "pass", "policy"), 3, "{counters}");
}
