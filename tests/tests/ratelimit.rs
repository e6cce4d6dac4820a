//! A per-source rate limit cuts a flood near its configured rate (generous tolerance: this is
//! a behaviour test, the accuracy is measured by the benchmark), and another source keeps its
//! own bucket.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tollgate_tests::{l4_policy, require_root, Lab, UdpCounter, APPLY_TIMEOUT, POLICY_APPLIED};

const PORT: u16 = 7000;
const RATE: u64 = 200;
const BURST: u64 = 200;
const SEND_RATE: u32 = 1000;
const SENT: u64 = 3000;
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

#[test]
fn rate_limited_source_is_cut_near_its_rate() {
    require_root!();
    let lab = Lab::new("ratelimit", &[OTHER]);
    lab.write_policy(
        "limits.yaml",
        &l4_policy(
            "limits",
            "deny",
            &format!(
                "- name: limited\n  action: allow\n  protocol: UDP\n  ports: [\"{PORT}\"]\n  \
                 rateLimit: {{ packetsPerSecond: {RATE}, burst: {BURST}, per: {{ ipv4Prefix: 32, ipv6Prefix: 64 }} }}\n"
            ),
        ),
    );
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let sink = UdpCounter::start(lab.root_ip(), PORT);

    let started = Instant::now();
    let sent = lab.udp_send(lab.ns_ip(), PORT, SENT, Some(SEND_RATE), 32);
    let elapsed = started.elapsed().as_secs_f64();
    let received = sink.settle(Duration::from_millis(300));
    assert_eq!(sent, SENT);

    let expected = BURST as f64 + RATE as f64 * elapsed;
    println!("sent {sent} in {elapsed:.2}s at {SEND_RATE} pps; received {received}; expected about {expected:.0}");
    assert!(
        (received as f64) > expected * 0.7 && (received as f64) < expected * 1.3,
        "received {received} of {sent}, expected about {expected:.0} (burst {BURST} + {RATE}/s x {elapsed:.2}s)"
    );

    let counters = lab.counters();
    let passed = counters.packets("limited", "pass", "policy");
    let limited = counters.packets("limited", "drop", "ratelimit");
    assert_eq!(
        passed + limited,
        sent,
        "every packet is judged once:\n{counters}"
    );
    assert_eq!(
        passed, received,
        "passed packets are the delivered ones:\n{counters}"
    );

    // Another source has its own bucket, still full: a short burst below BURST all passes.
    let other_sink_before = sink.count();
    let other_sent = lab.udp_send(OTHER, PORT, BURST / 2, Some(SEND_RATE), 32);
    let other_received = sink.settle(Duration::from_millis(300)) - other_sink_before;
    assert_eq!(
        other_received, other_sent,
        "a second source is limited by the first one's bucket"
    );
}
