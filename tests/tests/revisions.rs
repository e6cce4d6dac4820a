//! A bad revision is refused whole: the previous policy stays enforced and the agent keeps
//! running; the next good revision is applied.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::{l4_policy, require_root, Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn scanner_pings_answered(lab: &Lab) -> u64 {
    lab.ping(
        SCANNER,
        3,
        Duration::from_millis(50),
        Duration::from_secs(1),
    )
    .received
}

/// SIGHUP, then give the agent time to read, compile and refuse (there is no log line for a
/// refusal in the contract): wait until it logs something new, then a little more.
fn reload_and_let_it_refuse(agent: &mut Agent) {
    let lines = agent.log().lines().count();
    agent.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.log().lines().count() == lines && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
}

#[test]
fn bad_policy_revision_keeps_the_previous_policy_enforced_and_the_agent_running() {
    require_root!();
    let lab = Lab::new("badrev", &[SCANNER]);
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
    assert_eq!(scanner_pings_answered(&lab), 0);

    // 1. A revision whose valid half would let the scanner in, and whose other half is invalid
    //    (a /33): it must be refused whole, not applied in part.
    lab.write_policy("edge.yaml", &l4_policy("edge", "allow", ""));
    lab.write_policy(
        "broken.yaml",
        &l4_policy(
            "broken",
            "allow",
            "- name: bad-cidr\n  action: deny\n  from: [203.0.113.0/33]\n",
        ),
    );
    reload_and_let_it_refuse(&mut agent);
    assert!(
        agent.is_running(),
        "an invalid revision stopped the agent:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.log_count(POLICY_APPLIED),
        1,
        "an invalid revision was applied:\n{}",
        agent.log()
    );
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "an invalid revision was applied in part"
    );

    // 2. Malformed YAML.
    lab.write_policy(
        "broken.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: {name: broken\nspec: [\n",
    );
    reload_and_let_it_refuse(&mut agent);
    assert!(
        agent.is_running(),
        "malformed YAML stopped the agent:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.log_count(POLICY_APPLIED),
        1,
        "malformed YAML was applied:\n{}",
        agent.log()
    );
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "malformed YAML changed what is enforced"
    );
    let allowed = lab.ping(
        lab.ns_ip(),
        3,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
    assert_eq!(
        allowed.received, 3,
        "allowed traffic stopped after a refused revision"
    );

    // 3. The fix is applied.
    lab.remove_policy("broken.yaml");
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scanner_pings_answered(&lab),
        3,
        "the good revision after the bad ones was not applied"
    );
}
