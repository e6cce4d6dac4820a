//! The Git server goes down: enforcement continues and the failure is reported; an agent
//! restarted (after a reboot: nothing pinned) while it is down enforces the last good revision
//! at once; when the server is back, new commits are applied again.

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::gitrepo::{commit, git, GitDaemon};
use tollgate_tests::{
    http_get, l4_policy, metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const ADMIN: u16 = 19476;
const DAEMON: u16 = 19477;

fn deny(cidr: &str) -> String {
    l4_policy(
        "edge",
        "allow",
        &format!("- name: blocked\n  action: deny\n  from: [{cidr}]\n"),
    )
}

fn received(lab: &Lab, from: Ipv4Addr) -> u64 {
    lab.ping(from, 2, Duration::from_millis(20), Duration::from_secs(1))
        .received
}

fn status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/status", "").expect("admin server");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

#[test]
fn a_git_server_outage_never_loosens_enforcement() {
    require_root!();
    let lab = Lab::new("gitdown", &[SCANNER, OFFICE]);
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("policy");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(
        &repo,
        "edge.yaml",
        &deny("203.0.113.0/24"),
        "block the scanner",
    );
    let mut daemon = GitDaemon::start(base.path(), DAEMON);
    let url = daemon.url("policy");
    let admin = format!("127.0.0.1:{ADMIN}");
    let args = [
        "--source",
        url.as_str(),
        "--interval",
        "1s",
        "--detach-on-exit",
        "--admin",
        admin.as_str(),
    ];
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received(&lab, SCANNER), 0);
    assert_eq!(received(&lab, OFFICE), 2);

    // The server goes down: the failure is reported, the revision stays enforced.
    daemon.stop();
    agent
        .wait_for_log("revision refused", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let s = status(ADMIN);
    assert_eq!(s["applied"]["id"], first.as_str(), "{s}");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(&url), "the error names the source: {s}");
    let (_, metrics) = http_get(ADMIN, "/metrics", "").expect("admin server");
    let failures = metric_value(
        &metrics,
        "tollgate_policy_apply_failures_total{reason=\"source\"} ",
    )
    .unwrap_or_else(|| panic!("no source failure counted:\n{metrics}"));
    assert!(failures >= 1);
    let (code, _) = http_get(ADMIN, "/readyz", "").expect("admin server");
    assert_eq!(code, 200, "still ready: a revision is enforced");
    let (code, _) = http_get(ADMIN, "/healthz", "").expect("admin server");
    assert_eq!(code, 200, "alive although Git is down");
    assert_eq!(received(&lab, SCANNER), 0, "still enforced");
    assert_eq!(received(&lab, OFFICE), 2);

    // Like a reboot while the server is down: stop and detach (nothing stays pinned), start
    // again. The saved last good revision is enforced at once.
    agent
        .sigterm(Duration::from_secs(10))
        .expect("the agent stops on SIGTERM");
    assert!(lab.pinned_files().is_empty(), "{:?}", lab.pinned_files());
    assert_eq!(
        received(&lab, SCANNER),
        2,
        "nothing filters between the runs"
    );
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log("enforcing the last good revision", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        received(&lab, SCANNER),
        0,
        "the last good revision is enforced"
    );
    let s = status(ADMIN);
    assert_eq!(s["applied"]["id"], first.as_str(), "{s}");
    assert!(
        s["last_error"].as_str().unwrap_or_default().contains(&url),
        "{s}"
    );

    // The server comes back with a new commit: it is applied.
    let second = commit(
        &repo,
        "edge.yaml",
        &deny("198.51.100.0/24"),
        "block the office",
    );
    let _daemon = GitDaemon::start(base.path(), DAEMON);
    agent
        .wait_for_log(&format!("revision={second}"), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received(&lab, OFFICE), 0);
    assert_eq!(received(&lab, SCANNER), 2);
    assert!(agent.is_running());
}
