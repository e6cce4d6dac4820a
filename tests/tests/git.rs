//! The Git source: a commit is enforced, a new commit within one interval, a bad commit is
//! refused while the previous revision stays enforced; over file:// and over git daemon.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use tollgate_tests::gitrepo::{commit, deny, git, GitDaemon};
use tollgate_tests::{require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

/// Runs the scenario against `url` (a repository whose working copy is `repo`).
fn follows_commits(lab: &Lab, repo: &Path, url: &str, admin: u16) {
    let first = commit(repo, "policies/edge.yaml", &deny("203.0.113.0/24"), None);
    let mut agent = lab.start_agent(&[
        "--source",
        url,
        "--ref",
        "main",
        "--path",
        "policies",
        "--interval",
        "1s",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains(&format!("revision={first}")),
        "the revision is the commit:\n{}",
        agent.log()
    );
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
    assert_eq!(
        lab.ping(OFFICE, 2, Duration::from_millis(20), Duration::from_secs(1))
            .received,
        2
    );

    // A new commit is enforced within one interval.
    let second = commit(repo, "policies/edge.yaml", &deny("198.51.100.0/24"), None);
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains(&format!("revision={second}")),
        "{}",
        agent.log()
    );
    assert_eq!(
        lab.ping(OFFICE, 2, Duration::from_millis(20), Duration::from_secs(1))
            .received,
        0
    );
    assert_eq!(
        lab.ping(
            SCANNER,
            2,
            Duration::from_millis(20),
            Duration::from_secs(1)
        )
        .received,
        2
    );

    // A bad commit is refused; the previous revision stays enforced.
    let bad = commit(repo, "policies/edge.yaml", &deny("198.51.100.0/33"), None);
    agent
        .wait_for_log("revision refused", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(agent.log().contains("198.51.100.0/33"), "{}", agent.log());
    assert_eq!(
        lab.ping(OFFICE, 2, Duration::from_millis(20), Duration::from_secs(1))
            .received,
        0,
        "still the second revision"
    );
    // Recorded as the last attempted revision, with why; the applied one is the second.
    let status = tollgate_tests::admin::status(admin);
    assert_eq!(status["applied"]["id"], second.as_str(), "{status}");
    assert_eq!(status["attempted"]["id"], bad.as_str(), "{status}");
    assert_eq!(status["attempted"]["refused"], "invalid", "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("198.51.100.0/33")),
        "{status}"
    );
    // The log line of an applied revision breaks its time down.
    let applied_line = agent
        .log()
        .lines()
        .find(|l| l.contains(&format!("revision={second}")) && l.contains("policy applied"))
        .map(str::to_owned)
        .expect("the second revision's log line");
    for field in ["fetch_ms=", "read_ms=", "compile_ms=", "to_enforced_ms="] {
        assert!(applied_line.contains(field), "{field} in {applied_line}");
    }
    let (_, metrics) = tollgate_tests::http_get(admin, "/metrics", "").expect("admin server");
    let fetches: u64 =
        tollgate_tests::metric_value(&metrics, "tollgate_git_fetch_duration_seconds_count ")
            .unwrap_or_else(|| panic!("no fetch histogram:\n{metrics}"));
    assert!(fetches >= 3, "every interval fetches: {fetches}");
    assert!(agent.is_running());
}

#[test]
fn a_git_repository_over_file_url_is_followed_commit_by_commit() {
    require_root!();
    let lab = Lab::new("gitfile", &[SCANNER, OFFICE]);
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    follows_commits(
        &lab,
        repo.path(),
        &format!("file://{}", repo.path().display()),
        19472,
    );
}

#[test]
fn a_git_repository_served_by_git_daemon_is_followed() {
    require_root!();
    let lab = Lab::new("gitdaemon", &[SCANNER, OFFICE]);
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("policy");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let daemon = GitDaemon::start(base.path(), 19418);
    follows_commits(&lab, &repo, &daemon.url("policy"), 19473);
}

#[test]
fn a_ref_forced_back_is_refused_unless_rewinds_are_allowed() {
    require_root!();
    let lab = Lab::new("gitrewind", &[SCANNER, OFFICE]);
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let url = format!("file://{}", repo.display());
    let first = commit(repo, "edge.yaml", &deny("203.0.113.0/24"), None);
    let args = [
        "--source",
        url.as_str(),
        "--interval",
        "1s",
        "--admin",
        "127.0.0.1:19474",
    ];
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let second = commit(repo, "edge.yaml", &deny("198.51.100.0/24"), None);
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    // Force the branch back to the first commit: refused, the second stays enforced.
    git(repo, &["reset", "-q", "--hard", &first]);
    agent
        .wait_for_log("force-push back or sideways", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains(&second) && agent.log().contains(&first),
        "{}",
        agent.log()
    );
    assert_eq!(
        lab.ping(OFFICE, 2, Duration::from_millis(20), Duration::from_secs(1))
            .received,
        0,
        "still the second revision"
    );
    // Restarted, the agent still refuses it (the commit in force is saved on the node).
    drop(agent);
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log("force-push back or sideways", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(agent);

    // With --allow-ref-rewind it is applied.
    let mut with = args.to_vec();
    with.push("--allow-ref-rewind");
    let mut agent = lab.start_agent(&with);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains(&format!("revision={first}")),
        "{}",
        agent.log()
    );
    assert_eq!(
        lab.ping(OFFICE, 2, Duration::from_millis(20), Duration::from_secs(1))
            .received,
        2
    );
}

/// A token in the source URL's query (`?private_token=...`) and a password in its userinfo
/// never reach the log, `/status` or `/metrics`: the URL is shown with them masked, libgit2's
/// errors included (it quotes the path it was given, query and all).
#[test]
fn a_token_or_password_in_the_source_url_is_shown_nowhere() {
    require_root!();
    const TOKEN: &str = "tok3n-SECRET-9f2c";
    const PASSWORD: &str = "passw0rd-SECRET-71ad";
    let lab = Lab::new("gitsecret", &[]);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), None);
    let admin = 19545;
    let url = format!("file://{}?private_token={TOKEN}", repo.display());
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--interval",
        "1s",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    // libgit2 takes the query for part of the path: every pass fails, and says so.
    agent
        .wait_for_log_count("retrying with backoff", 2, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = tollgate_tests::admin::status(admin).to_string();
    let metrics = tollgate_tests::admin::metrics(admin);
    let log = agent.log();
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("the log", &log),
    ] {
        assert!(!text.contains(TOKEN), "{what} shows the token:\n{text}");
    }
    assert!(status.contains("?***"), "{status}");
    assert!(log.contains("?***"), "{log}");
    agent.sigterm(Duration::from_secs(10));

    // A password is refused at start, without being printed.
    let url = format!("https://deploy:{PASSWORD}@127.0.0.1:1/policy.git");
    let mut agent = lab.start_agent(&["--source", &url, "--admin", "127.0.0.1:19546"]);
    assert!(
        agent.wait_exit(Duration::from_secs(20)).is_some(),
        "the agent refuses the URL and stops"
    );
    let log = agent.log();
    assert!(log.contains("carries a password"), "{log}");
    assert!(
        log.contains("https://deploy:***@127.0.0.1:1/policy.git"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
}
