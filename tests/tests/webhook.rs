//! The Git webhook (`POST /hooks/git`): with an interval of an hour, a signed call makes the
//! agent fetch and enforce a new commit at once; bad, missing and oversized calls are refused,
//! counted, and fetch nothing; a burst of 1,000 calls (one delivery replayed) costs two
//! fetches; a GitLab token wakes an agent that reads a directory.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tollgate_tests::admin::{applied, github_signature, metric, post, wait_applied};
use tollgate_tests::gitrepo::{commit, deny, git};
use tollgate_tests::{require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

// Addresses no other test uses: the lab routes them to its veth in the root namespace, and
// tests of other suites may run at the same time.
const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 140);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 140);
const SCANNER2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 141);
const OFFICE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 141);
const SECRET: &str = "webhook-test-secret";
/// The least time between two webhook passes (`telemetry::wake::MIN_GAP` of the agent).
const WEBHOOK_GAP: Duration = Duration::from_secs(10);

fn received(lab: &Lab, from: Ipv4Addr) -> u64 {
    lab.ping(from, 2, Duration::from_millis(20), Duration::from_secs(1))
        .received
}

fn calls(admin: u16, outcome: &str) -> u64 {
    metric(
        admin,
        &format!("tollgate_webhook_calls_total{{outcome=\"{outcome}\"}} "),
    )
}

fn fetches(admin: u16) -> u64 {
    metric(admin, "tollgate_git_fetch_duration_seconds_count ")
}

#[test]
fn a_signed_webhook_call_enforces_a_new_commit_at_once_and_bad_calls_fetch_nothing() {
    require_root!();
    let lab = Lab::new("webhook", &[SCANNER, OFFICE]);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let secret_file = work.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let first = commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), None);
    let admin = 19540;
    let url = format!("file://{}", repo.display());
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--interval",
        "1h",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied(admin), first);
    assert_eq!(received(&lab, SCANNER), 0);
    assert_eq!(received(&lab, OFFICE), 2);

    let second = commit(&repo, "edge.yaml", &deny("198.51.100.0/24"), None);
    let push = br#"{"ref":"refs/heads/main","after":"x"}"#;
    let fetched_before = fetches(admin);

    // Refused calls: a signature over another body, no signature, a wrong token, a body over
    // the limit (announced, never sent), another method.
    let other = github_signature(SECRET, b"another body");
    let refused = [
        post(
            admin,
            "/hooks/git",
            &[("X-Hub-Signature-256", other.as_str())],
            Some(push),
        ),
        post(admin, "/hooks/git", &[], Some(push)),
        post(
            admin,
            "/hooks/git",
            &[("X-Gitlab-Token", "not-the-secret")],
            Some(push),
        ),
    ];
    for (code, body) in &refused {
        assert_eq!(*code, 401, "{body}");
    }
    let (code, body) = post(admin, "/hooks/git", &[("Content-Length", "1048577")], None);
    assert_eq!(code, 413, "{body}");
    let (code, _) = tollgate_tests::http_get(admin, "/hooks/git", "").unwrap();
    assert_eq!(code, 405);
    // Nothing was fetched, and the first commit is still what the kernel enforces.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fetches(admin),
        fetched_before,
        "a refused call fetches nothing"
    );
    assert_eq!(applied(admin), first);
    assert_eq!(received(&lab, OFFICE), 2, "still the first revision");
    assert_eq!(calls(admin, "unauthorized"), 3);
    assert_eq!(calls(admin, "too_large"), 1);
    assert_eq!(calls(admin, "accepted"), 0);

    // A signed call: the second commit is enforced at once (the interval is an hour).
    let signature = github_signature(SECRET, push);
    let sent = Instant::now();
    let (code, body) = post(
        admin,
        "/hooks/git",
        &[
            ("X-Hub-Signature-256", signature.as_str()),
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        Some(push),
    );
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("accepted"), "{body}");
    let took = wait_applied(admin, &second, Duration::from_secs(10));
    eprintln!("webhook call to enforced revision: {took:?} (the target is under 1 s)");
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert_eq!(received(&lab, OFFICE), 0);
    assert_eq!(received(&lab, SCANNER), 2);
    assert_eq!(calls(admin, "accepted"), 1);

    // The same delivery replayed 1,000 times by 10 callers at once, after a quiet spell: its
    // first call is served at once, all the others together by one more pass, a gap after
    // the first one ended.
    let third = commit(&repo, "edge.yaml", &deny("192.0.2.0/24"), None);
    std::thread::sleep(WEBHOOK_GAP);
    let before_burst = fetches(admin);
    let sent = Instant::now();
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let signature = signature.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|_| {
                        post(
                            admin,
                            "/hooks/git",
                            &[("X-Hub-Signature-256", signature.as_str())],
                            Some(push),
                        )
                        .0
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let took = wait_applied(admin, &third, Duration::from_secs(10));
    eprintln!("first call of the burst to enforced revision: {took:?}");
    for caller in burst {
        assert!(caller.join().unwrap().iter().all(|&code| code == 202));
    }
    let burst_took = sent.elapsed();
    assert!(
        burst_took < WEBHOOK_GAP,
        "the burst must end within the gap to be one burst: it took {burst_took:?}"
    );
    assert_eq!(calls(admin, "accepted"), 1001);
    // The pass that the rest of the burst joined runs a gap after the first: wait for it,
    // and a while longer for any other.
    std::thread::sleep(WEBHOOK_GAP + Duration::from_secs(3));
    let passes = fetches(admin) - before_burst;
    eprintln!("1,000 calls in {burst_took:?}: {passes} fetches");
    assert_eq!(passes, 2, "1,000 calls gave {passes} fetches");
    assert_eq!(
        agent.log_count("webhook: a fetch and reconcile pass is scheduled"),
        3,
        "one log line per pass, not per call"
    );
    assert!(agent.is_running());
}

#[test]
fn a_gitlab_token_wakes_an_agent_that_reads_a_directory() {
    require_root!();
    let lab = Lab::new("webhookdir", &[SCANNER2, OFFICE2]);
    let admin = 19541;
    // The secret comes from the environment the agent inherits.
    std::env::set_var("TOLLGATE_TEST_WEBHOOK_SECRET", SECRET);
    lab.write_policy("edge.yaml", &deny("203.0.113.0/24"));
    let mut agent = lab.start_agent(&[
        "--interval",
        "1h",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--webhook-secret-env",
        "TOLLGATE_TEST_WEBHOOK_SECRET",
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let first = applied(admin);
    assert_eq!(received(&lab, OFFICE2), 2);

    lab.write_policy("edge.yaml", &deny("198.51.100.0/24"));
    let (code, _) = post(
        admin,
        "/hooks/git",
        &[("X-Gitlab-Token", "webhook-test-secreT")],
        Some(b"{}"),
    );
    assert_eq!(code, 401);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(applied(admin), first, "a refused call reads nothing");
    assert_eq!(received(&lab, OFFICE2), 2);

    let (code, body) = post(
        admin,
        "/hooks/git",
        &[("X-Gitlab-Token", SECRET), ("X-Gitlab-Event", "Push Hook")],
        Some(b"{}"),
    );
    assert_eq!(code, 202, "{body}");
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(applied(admin), first);
    assert_eq!(received(&lab, OFFICE2), 0);
    assert_eq!(received(&lab, SCANNER2), 2);
}
