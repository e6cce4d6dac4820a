//! `tollgate run --config FILE`: settings from a YAML file, flags winning over it.

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::{http_get, l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

#[test]
fn the_agent_runs_on_settings_from_a_config_file() {
    require_root!();
    let lab = Lab::new("config", &[SCANNER]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.yaml");
    // The lab gives --interface and --source as flags: they win over the file's.
    std::fs::write(
        &config,
        "# node settings\ninterface: [tgnotthere0]\nsource: /nonexistent\nadmin: 127.0.0.1:19478\ninterval: 1s\nattach-mode: native\n",
    )
    .unwrap();
    let mut agent = lab.start_agent(&["--config", config.to_str().unwrap()]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, body) = http_get(19478, "/status", "").expect("the admin address from the file");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["interfaces"][0]["name"], lab.iface(), "{status}");
    assert_eq!(status["interfaces"][0]["mode"], "native", "{status}");
    assert_eq!(
        lab.ping(
            SCANNER,
            2,
            Duration::from_millis(20),
            Duration::from_secs(1)
        )
        .received,
        0
    );
    // interval: 1s from the file: a new policy file is picked up within about a second.
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: none\n  action: deny\n  from: [192.0.2.0/24]\n",
        ),
    );
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
}
