//! The lab itself, without any agent: every source is routed both ways, TCP and UDP work, and
//! the packets crossing the veth are exactly the ones a test sends (the flip test relies on it).

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::{require_root, Connect, Lab, TcpServer, UdpCounter};

const SOURCES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 70),
    Ipv4Addr::new(198, 51, 100, 70),
];

#[test]
fn lab_routes_every_source_and_counts_only_what_tests_send() {
    require_root!();
    let lab = Lab::new("lab", &SOURCES);
    assert!(lab.pinned_files().is_empty());
    assert!(lab.attached_programs().is_empty());

    for source in std::iter::once(lab.ns_ip()).chain(SOURCES) {
        let ping = lab.ping(source, 2, Duration::from_millis(50), Duration::from_secs(2));
        assert_eq!(ping.received, 2, "pings from {source}: {ping:?}");
    }

    let _server = TcpServer::start(lab.root_ip(), 8081).expect("listen");
    assert_eq!(
        lab.tcp_connect(SOURCES[0], 8081, Duration::from_secs(3)),
        Connect::Connected
    );
    assert_eq!(
        lab.tcp_connect(SOURCES[0], 8082, Duration::from_secs(3)),
        Connect::Refused
    );

    let sink = UdpCounter::start(lab.root_ip(), 9001);
    let rx_before = lab.rx_packets();
    let sent = lab.udp_send(SOURCES[1], 9001, 500, None, 16);
    assert_eq!(sent, 500);
    assert_eq!(sink.settle(Duration::from_millis(300)), 500);
    assert_eq!(
        lab.rx_packets() - rx_before,
        500,
        "only the test's datagrams cross the veth"
    );
}
