//! The Git server goes away: enforcement continues, the failures are reported (`/status`,
//! metrics), the agent retries with backoff (1 s, 2 s, 4 s, ... even with an interval of an
//! hour), an agent restarted meanwhile enforces the last good revision at once, and a commit
//! pushed meanwhile is enforced soon after the server is back.

use std::net::Ipv4Addr;
use std::time::Duration;

use tollgate_tests::admin::{applied, metric, post, status, wait_applied};
use tollgate_tests::gitrepo::{commit, deny, git, GitDaemon};
use tollgate_tests::{require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 144);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 144);

fn received(lab: &Lab, from: Ipv4Addr) -> u64 {
    lab.ping(from, 2, Duration::from_millis(20), Duration::from_secs(1))
        .received
}

#[test]
fn an_unreachable_git_server_is_retried_with_backoff_and_the_agent_recovers() {
    require_root!();
    let lab = Lab::new("gitoutage", &[SCANNER, OFFICE]);
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("policy");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), None);
    let (port, admin) = (19542, 19543);
    let daemon = GitDaemon::start(base.path(), port);
    let url = format!("git://127.0.0.1:{port}/policy");
    let admin_addr = format!("127.0.0.1:{admin}");
    let args = [
        "--source",
        url.as_str(),
        "--interval",
        "1h",
        "--admin",
        admin_addr.as_str(),
        "--detach-on-exit",
    ];
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied(admin), first);
    let healthy = status(admin);
    assert_eq!(healthy["consecutive_failures"], 0, "{healthy}");
    let next = healthy["next_attempt_in_seconds"].as_f64().unwrap();
    assert!(
        next > 3000.0,
        "healthy: the next pass is an interval away: {healthy}"
    );
    // Without a secret the webhook is off, and says so.
    let (code, body) = post(admin, "/hooks/git", &[], Some(b"{}"));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("--webhook-secret"), "{body}");
    assert_eq!(
        metric(admin, "tollgate_webhook_calls_total{outcome=\"disabled\"} "),
        1
    );

    // The server goes away; a commit is pushed meanwhile; SIGHUP asks for a pass now.
    drop(daemon);
    let second = commit(&repo, "edge.yaml", &deny("198.51.100.0/24"), None);
    agent.sighup();
    // Failures at 0 s, then 1 s and 3 s later (backoff), not an hour later.
    agent
        .wait_for_log_count("retrying with backoff", 3, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    let failing = status(admin);
    let failures = failing["consecutive_failures"].as_u64().unwrap();
    assert!(failures >= 3, "{failing}");
    let next = failing["next_attempt_in_seconds"].as_f64().unwrap();
    assert!(
        next <= 8.0,
        "retried soon, not after the interval: {failing}"
    );
    let error = failing["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("cannot reach") && error.contains(&format!("127.0.0.1:{port}")),
        "the failure names the source: {failing}"
    );
    assert_eq!(failing["applied"]["id"], first.as_str(), "{failing}");
    assert!(
        metric(
            admin,
            "tollgate_policy_apply_failures_total{reason=\"source\"} "
        ) >= 1
    );
    // Enforcement goes on.
    assert_eq!(received(&lab, SCANNER), 0);
    assert_eq!(received(&lab, OFFICE), 2);

    // Restarted while the server is still down, after a reboot (stopped and detached, so
    // nothing stays pinned): the last good revision saved on the node at once, and retries.
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
    assert_eq!(applied(admin), first);
    assert_eq!(
        tollgate_tests::http_get(admin, "/readyz", "").map(|(c, _)| c),
        Some(200)
    );
    agent
        .wait_for_log_count("retrying with backoff", 2, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received(&lab, SCANNER), 0);
    assert_eq!(received(&lab, OFFICE), 2);

    // The server comes back: the next retry (at most 8 s later) enforces the new commit.
    let _daemon = GitDaemon::start(base.path(), port);
    wait_applied(admin, &second, Duration::from_secs(20));
    let recovered = status(admin);
    assert_eq!(recovered["consecutive_failures"], 0, "{recovered}");
    assert!(recovered["last_error"].is_null(), "{recovered}");
    assert!(
        recovered["next_attempt_in_seconds"].as_f64().unwrap() > 3000.0,
        "back to the interval: {recovered}"
    );
    assert!(agent.log().contains("the source can be read again"));
    assert_eq!(received(&lab, OFFICE), 0);
    assert_eq!(received(&lab, SCANNER), 2);
}
