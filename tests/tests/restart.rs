//! Enforcement lives in the kernel, not in the agent: killing the agent with SIGKILL leaves the
//! pinned programs and maps enforcing, and a restarted agent adopts them without a gap.

use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;

use tollgate_tests::{l4_policy, require_root, Lab, PingStats, APPLY_TIMEOUT, POLICY_APPLIED};

const DENIED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// 4 s of pings every 10 ms, from each source, across the kill and the restart.
const PINGS: u32 = 400;

#[test]
fn enforcement_survives_kill_9_and_restart_adopts_without_gap() {
    require_root!();
    let lab = Lab::new("restart", &[DENIED]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let blocked_before = lab.counters().packets("block", "drop", "policy");

    let interval = Duration::from_millis(10);
    let denied = lab
        .ping_command(DENIED, PINGS, interval, Duration::from_secs(1))
        .spawn()
        .expect("ping");
    let allowed = lab
        .ping_command(lab.ns_ip(), PINGS, interval, Duration::from_secs(1))
        .spawn()
        .expect("ping");

    thread::sleep(Duration::from_millis(800));
    agent.kill9();
    assert!(
        !lab.pinned_files().is_empty(),
        "SIGKILL must leave the pins in place"
    );
    assert!(
        !lab.attached_programs().is_empty(),
        "SIGKILL must leave the program attached"
    );
    thread::sleep(Duration::from_millis(700));

    let mut restarted = lab.start_agent(&[]);
    restarted
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    let denied = PingStats::from_child(denied);
    let allowed = PingStats::from_child(allowed);
    assert_eq!(
        denied.received, 0,
        "denied pings got through during the kill/restart: {denied:?}"
    );
    assert_eq!(
        allowed.received, allowed.transmitted,
        "allowed pings were lost during the kill/restart: {allowed:?}"
    );

    // Every denied echo request was judged and counted, before, between and after the agents.
    let blocked_after = lab.counters().packets("block", "drop", "policy");
    assert_eq!(
        blocked_after - blocked_before,
        denied.transmitted,
        "block counted {} of {} denied pings",
        blocked_after - blocked_before,
        denied.transmitted
    );
    // And it keeps counting under the restarted agent.
    let more = lab.ping(DENIED, 5, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!(more.received, 0);
    assert_eq!(
        lab.counters().packets("block", "drop", "policy"),
        blocked_after + 5
    );
    assert!(
        restarted.is_running(),
        "the restarted agent exited:\n{}",
        restarted.log()
    );
}
