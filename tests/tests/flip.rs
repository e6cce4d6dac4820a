//! Policy updates are atomic: a packet is judged wholly by the old revision or wholly by the
//! new one. Two revisions of one policy disagree about one flow, S -> UDP P:
//!   A: defaultAction allow + rule `a-deny` (deny S to P)
//!   B: defaultAction deny  + rule `b-allow` (allow S to P)
//! A packet judged by a mix (A's rules with B's default, or the reverse, or a half-written
//! table) would land on a default counter or on no counter. So after flipping A <-> B about 40
//! times under traffic, every packet that reached the program must be on exactly one of
//! a-deny (drop) / b-allow (pass), and none on a default counter.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tollgate_tests::{
    l4_policy, parse_sent, require_root, Lab, UdpCounter, APPLY_TIMEOUT, POLICY_APPLIED,
};

const S: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const P: u16 = 9000;
const FLIPS: usize = 40;
const PACKETS: u64 = 20_000;
/// 2 s of traffic; with FLIP_PAUSE, the flips span about as long.
const SEND_RATE: u32 = 10_000;
const FLIP_PAUSE: Duration = Duration::from_millis(25);

// Both rules exist in both revisions (a rule that disappears and comes back starts its counter
// again, like any Prometheus counter); only what they match changes. 192.0.2.99 sends nothing.
fn policy_a() -> String {
    l4_policy(
        "flip",
        "allow",
        "- name: a-deny\n  action: deny\n  from: [203.0.113.50/32]\n  protocol: UDP\n  ports: [\"9000\"]\n\
         - name: b-allow\n  action: allow\n  from: [192.0.2.99/32]\n  protocol: UDP\n  ports: [\"9000\"]\n",
    )
}

fn policy_b() -> String {
    l4_policy(
        "flip",
        "deny",
        "- name: a-deny\n  action: deny\n  from: [192.0.2.99/32]\n  protocol: UDP\n  ports: [\"9000\"]\n\
         - name: b-allow\n  action: allow\n  from: [203.0.113.50/32]\n  protocol: UDP\n  ports: [\"9000\"]\n",
    )
}

#[test]
fn atomic_flip_under_traffic() {
    require_root!();
    let lab = Lab::new("flip", &[S]);
    lab.write_policy("flip.yaml", &policy_a());
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let sink = UdpCounter::start(lab.root_ip(), P);

    let before = lab.counters();
    let rx_before = lab.rx_packets();
    let sender = lab
        .udp_send_command(S, P, PACKETS, Some(SEND_RATE), 16)
        .spawn()
        .expect("start the UDP sender");

    let started = Instant::now();
    for flip in 0..FLIPS {
        let doc = if flip % 2 == 0 {
            policy_b()
        } else {
            policy_a()
        };
        lab.write_policy("flip.yaml", &doc);
        agent.sighup();
        agent
            .wait_for_log_count(POLICY_APPLIED, flip + 2, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("flip {flip}: {e}"));
        std::thread::sleep(FLIP_PAUSE);
    }
    let flipping = started.elapsed();
    let sent = parse_sent(&sender.wait_with_output().expect("wait for the sender"));
    let delivered = sink.settle(Duration::from_millis(500));
    let after = lab.counters();
    let rx = lab.rx_packets() - rx_before;
    println!("{FLIPS} flips in {flipping:?}; sent {sent}, rx {rx}, delivered {delivered}");

    let delta = |rule: &str, action: &str, reason: &str| {
        after.packets(rule, action, reason) - before.packets(rule, action, reason)
    };
    let a_deny = delta("a-deny", "drop", "policy");
    let b_allow = delta("b-allow", "pass", "policy");
    let defaults = after.default_packets() - before.default_packets();
    println!("a-deny {a_deny}, b-allow {b_allow}, default {defaults}");
    println!("counters before:\n{before}\ncounters after:\n{after}");

    assert_eq!(
        defaults, 0,
        "packets judged by a default action during the flips:\n{after}"
    );
    assert_eq!(
        after.rule_packets("a-deny") - before.rule_packets("a-deny"),
        a_deny,
        "a-deny counted something other than policy drops:\n{after}"
    );
    assert_eq!(
        after.rule_packets("b-allow") - before.rule_packets("b-allow"),
        b_allow,
        "b-allow counted something other than policy passes:\n{after}"
    );
    assert_eq!(
        a_deny + b_allow,
        rx,
        "every packet that reached the program is counted exactly once"
    );
    assert_eq!(
        delivered, b_allow,
        "the passed packets are the delivered ones"
    );
    assert!(
        a_deny > 0 && b_allow > 0,
        "the traffic did not span both revisions"
    );
    assert!(rx <= sent);
}
