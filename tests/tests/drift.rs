//! Drift: kernel map entries deleted behind the agent's back (here with bpftool) are put back
//! within one interval, logged and counted; enforcement resumes.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use tollgate_tests::{
    http_get, l4_policy, metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// The keys of a pinned map, as bpftool prints them (hex bytes).
fn keys(map: &std::path::Path) -> Vec<Vec<String>> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(map)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap().trim_start_matches("0x").to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn entries_deleted_with_bpftool_are_restored_within_one_interval() {
    require_root!();
    let port = 19470;
    let lab = Lab::new("drift", &[SCANNER]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&["--interval", "1s", "--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
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

    // Delete the scanner's source entries (both generations) behind the agent's back.
    let map = lab.pin_dir.join("maps/SRC_V4");
    let before = keys(&map);
    assert_eq!(
        before.len(),
        2,
        "one source entry per generation: {before:?}"
    );
    for key in &before {
        let out = Command::new("bpftool")
            .args(["map", "delete", "pinned"])
            .arg(&map)
            .arg("key")
            .arg("hex")
            .args(key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bpftool map delete: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(keys(&map).is_empty());

    agent
        .wait_for_log("drift corrected", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut after = keys(&map);
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "the entries are back");
    let denied = lab.ping(
        SCANNER,
        3,
        Duration::from_millis(20),
        Duration::from_secs(1),
    );
    assert_eq!(denied.received, 0, "the scanner is dropped again");
    let (_, text) = http_get(port, "/metrics", "").expect("admin server");
    let corrected: u64 = metric_value(&text, "tollgate_policy_drift_corrections_total ")
        .unwrap_or_else(|| panic!("no drift counter:\n{text}"));
    assert!(corrected >= 2, "{corrected} corrections counted");
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("drift corrected"))
        .expect("a drift log line");
    assert!(
        line.contains("revision=dir:"),
        "the drift log line names the revision:\n{line}"
    );
    assert!(
        line.contains("rules=edge/block-scanners") && line.contains("maps=SRC_V4:2"),
        "the drift log line names the map and the rule of the entries:\n{line}"
    );
}
