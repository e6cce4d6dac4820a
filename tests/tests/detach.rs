//! Stopping the agent: SIGTERM leaves enforcement in place; `--detach-on-exit` and
//! `tollgate detach` remove every program, link and map.

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn deny_scanners(lab: &Lab) {
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
}

fn scanner_pings_answered(lab: &Lab) -> u64 {
    lab.ping(
        SCANNER,
        3,
        Duration::from_millis(50),
        Duration::from_secs(1),
    )
    .received
}

#[test]
fn detach_on_exit_removes_everything() {
    require_root!();
    let lab = Lab::new("detachexit", &[SCANNER]);
    deny_scanners(&lab);
    let mut agent = lab.start_agent(&["--detach-on-exit"]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "the scanner is not filtered"
    );

    let status = agent.sigterm(Duration::from_secs(15));
    let status = status.unwrap_or_else(|| panic!("the agent ignored SIGTERM:\n{}", agent.log()));
    assert!(
        status.success(),
        "the agent exited with {status}:\n{}",
        agent.log()
    );
    assert_eq!(
        lab.pinned_files(),
        Vec::<std::path::PathBuf>::new(),
        "pins left behind"
    );
    assert_eq!(
        lab.attached_programs(),
        Vec::<String>::new(),
        "programs left attached"
    );
    assert_eq!(
        scanner_pings_answered(&lab),
        3,
        "traffic is still filtered after detach"
    );
}

#[test]
fn sigterm_without_detach_leaves_the_policy_enforced() {
    require_root!();
    let lab = Lab::new("sigterm", &[SCANNER]);
    deny_scanners(&lab);
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    let status = agent.sigterm(Duration::from_secs(15));
    let status = status.unwrap_or_else(|| panic!("the agent ignored SIGTERM:\n{}", agent.log()));
    assert!(
        status.success(),
        "the agent exited with {status}:\n{}",
        agent.log()
    );
    assert!(
        !lab.pinned_files().is_empty(),
        "SIGTERM without --detach-on-exit removed the pins"
    );
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "enforcement stopped with the agent"
    );
}

#[test]
fn detach_command_removes_what_a_killed_agent_left() {
    require_root!();
    let lab = Lab::new("detachcmd", &[SCANNER]);
    deny_scanners(&lab);
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    agent.kill9();
    assert_eq!(
        scanner_pings_answered(&lab),
        0,
        "enforcement stopped with the agent"
    );

    let out = lab.detach();
    assert!(
        out.status.success(),
        "tollgate detach failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lab.pinned_files(),
        Vec::<std::path::PathBuf>::new(),
        "pins left behind"
    );
    assert_eq!(
        lab.attached_programs(),
        Vec::<String>::new(),
        "programs left attached"
    );
    assert_eq!(
        scanner_pings_answered(&lab),
        3,
        "traffic is still filtered after detach"
    );
}
