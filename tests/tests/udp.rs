//! UDP port rules: ranges are inclusive, a deny inside an allowed range wins, a UDP rule does
//! not open the same TCP port, and everything else meets `defaultAction: deny`.

use std::time::Duration;

use tollgate_tests::{
    l4_policy, require_root, Connect, Lab, UdpCounter, APPLY_TIMEOUT, POLICY_APPLIED,
};

const PER_PORT: u64 = 20;

#[test]
fn udp_port_rules() {
    require_root!();
    let lab = Lab::new("udp", &[]);
    lab.write_policy(
        "udp.yaml",
        &l4_policy(
            "udp",
            "deny",
            "- name: udp-range\n  action: allow\n  protocol: UDP\n  ports: [\"5000-5010\"]\n\
             - name: udp-single\n  action: allow\n  protocol: UDP\n  ports: [\"6000\"]\n\
             - name: no-5005\n  action: deny\n  protocol: UDP\n  ports: [\"5005\"]\n",
        ),
    );
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    // (port, datagrams expected to arrive)
    let cases = [
        (5000, PER_PORT),
        (5010, PER_PORT),
        (5005, 0),
        (5011, 0),
        (6000, PER_PORT),
        (4999, 0),
    ];
    let sinks: Vec<_> = cases
        .iter()
        .map(|&(port, _)| UdpCounter::start(lab.root_ip(), port))
        .collect();
    for &(port, _) in &cases {
        let sent = lab.udp_send(lab.ns_ip(), port, PER_PORT, Some(1000), 32);
        assert_eq!(sent, PER_PORT);
    }
    for (sink, &(port, expected)) in sinks.iter().zip(&cases) {
        let got = sink.settle(Duration::from_millis(300));
        assert_eq!(got, expected, "datagrams received on UDP port {port}");
    }
    assert_eq!(
        lab.tcp_connect(lab.ns_ip(), 5000, Duration::from_secs(1)),
        Connect::TimedOut,
        "a UDP rule must not open TCP 5000"
    );

    let counters = lab.counters();
    assert_eq!(
        counters.packets("udp-range", "pass", "policy"),
        2 * PER_PORT,
        "{counters}"
    );
    assert_eq!(
        counters.packets("udp-single", "pass", "policy"),
        PER_PORT,
        "{counters}"
    );
    assert_eq!(
        counters.packets("no-5005", "drop", "policy"),
        PER_PORT,
        "{counters}"
    );
    let default_dropped = counters.packets("(default)", "drop", "default");
    // 5011 and 4999, and at least one SYN to TCP 5000.
    assert!(
        default_dropped > 2 * PER_PORT,
        "the default action dropped {default_dropped}:\n{counters}"
    );
}
