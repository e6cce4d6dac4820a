//! `--log-format json`: one JSON object per line; applies and refusals carry the revision, and
//! a refusal names the file, object and field at fault.

use std::time::Duration;

use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

#[test]
fn json_logs_carry_the_revision_and_the_refused_fields() {
    require_root!();
    let lab = Lab::new("jsonlogs", &[]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&["--log-format", "json", "--admin", "127.0.0.1:19468"]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    lab.write_policy(
        "broken.yaml",
        &l4_policy(
            "other",
            "allow",
            "- name: bad-port\n  action: allow\n  protocol: TCP\n  ports: [\"70000\"]\n",
        ),
    );
    agent.sighup();
    agent
        .wait_for_log("revision refused", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    let log = agent.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let applied = lines
        .iter()
        .find(|l| l["message"] == "policy applied")
        .unwrap_or_else(|| panic!("no apply line:\n{log}"));
    let revision = applied["revision"]
        .as_str()
        .unwrap_or_else(|| panic!("the apply line names no revision: {applied}"));
    assert!(revision.starts_with("dir:"), "{applied}");
    let refused = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("revision refused"))
        })
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    assert_eq!(
        refused["applied"], revision,
        "the refusal says which revision stays enforced: {refused}"
    );
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("broken.yaml")
            && message.contains("L4Policy/other")
            && message.contains("spec.rules[0].ports[0]"),
        "the refusal names file, object and field: {message}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "enforcing on interface" && l["mode"] == "native"),
        "{log}"
    );
}
