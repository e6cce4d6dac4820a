//! The last good revision survives a restart without pins (a reboot): an agent started while its
//! source gives no valid revision enforces the revision saved in its state directory at once.

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

#[test]
fn an_agent_started_without_a_valid_source_enforces_the_last_good_revision() {
    require_root!();
    let lab = Lab::new("lastgood", &[SCANNER]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&["--detach-on-exit", "--admin", "127.0.0.1:19471"]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Stop and detach: like a reboot, nothing is pinned any more.
    agent
        .sigterm(Duration::from_secs(10))
        .expect("the agent stops on SIGTERM");
    assert!(
        lab.pinned_files().is_empty(),
        "detached: {:?}",
        lab.pinned_files()
    );
    assert_eq!(
        lab.ping(
            SCANNER,
            2,
            Duration::from_millis(20),
            Duration::from_secs(1)
        )
        .received,
        2,
        "nothing filters now"
    );

    // The source is gone (an unmounted volume, an unreachable repository).
    lab.remove_policy("edge.yaml");
    let mut agent = lab.start_agent(&["--admin", "127.0.0.1:19471"]);
    agent
        .wait_for_log("enforcing the last good revision", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let denied = lab.ping(
        SCANNER,
        3,
        Duration::from_millis(20),
        Duration::from_secs(1),
    );
    assert_eq!(
        denied.received, 0,
        "the last good revision is enforced: {denied:?}"
    );
    assert!(
        agent.log().contains("no policy files"),
        "the source failure is reported:\n{}",
        agent.log()
    );
}
