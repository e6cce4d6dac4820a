//! The top offenders: source prefixes with the most drops, from a bounded, sampled map;
//! shown by `tollgate top` and in `/status`, never as metric labels.

use std::net::Ipv4Addr;
use std::process::Command;

use tollgate_tests::{l4_policy, require_root, tollgate_bin, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

#[test]
fn top_lists_the_prefixes_with_the_most_drops_with_estimates_near_the_truth() {
    require_root!();
    let lab = Lab::new("top", &[SCANNER, OFFICE]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n\
             - name: slow\n  action: allow\n  from: [198.51.100.0/24]\n  protocol: UDP\n  ports: [\"9000\"]\n  rateLimit: { packetsPerSecond: 10, burst: 10 }\n",
        ),
    );
    let mut agent = lab.start_agent(&["--admin", "127.0.0.1:19467"]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    let (scanner_sent, office_sent) = (4000u64, 2000u64);
    lab.udp_send(SCANNER, 5000, scanner_sent, None, 16);
    lab.udp_send(OFFICE, 9000, office_sent, None, 16);

    let out = Command::new(tollgate_bin())
        .args(["top", "--format", "json", "--pin-dir"])
        .arg(&lab.pin_dir)
        .output()
        .expect("tollgate top");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = top.as_array().expect("a list");
    assert_eq!(
        rows[0]["prefix"], "203.0.113.0/24",
        "the scanner's prefix leads: {top}"
    );
    // One drop in 64 is sampled: 4000 drops give about 62 samples; allow +-50% (several sigma).
    let dropped = rows[0]["dropped"].as_u64().unwrap();
    assert!(
        (2000..=6000).contains(&dropped),
        "estimate {dropped} for {scanner_sent} drops: {top}"
    );
    let office = rows
        .iter()
        .find(|r| r["prefix"] == "198.51.100.0/24")
        .unwrap_or_else(|| panic!("office prefix missing: {top}"));
    let limited = office["ratelimited"].as_u64().unwrap();
    assert!(
        (900..=3000).contains(&limited),
        "about {} rate-limited: {top}",
        office_sent - 10
    );
    assert_eq!(office["dropped"], 0);

    let status = Command::new("curl")
        .args(["-sf", "http://127.0.0.1:19467/status"])
        .output()
        .expect("curl");
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("/status is JSON");
    assert_eq!(
        status["top_offenders"][0]["prefix"], "203.0.113.0/24",
        "{status}"
    );

    let text = Command::new(tollgate_bin())
        .args(["top", "--pin-dir"])
        .arg(&lab.pin_dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("203.0.113.0/24"));
    assert!(agent.is_running());
}
