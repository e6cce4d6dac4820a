//! The Git source over smart HTTP: `git http-backend` behind nginx with basic auth, over TLS
//! with a CA made for the test, and over plain http. A commit is enforced, a new commit within
//! one interval; a refused password, an unverifiable certificate, a hung server and a fetch
//! over the size cap are reported (in `/status` and `tollgate_policy_apply_failures_total`)
//! while the last good revision stays enforced (checked with real packets).

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tollgate_tests::gitserver::{
    agent_status, apply_failures, assert_dropped, assert_passes, commit, init_repo,
    wait_for_last_error, HttpGitServer, SilentServer, TestCa,
};
use tollgate_tests::{
    http_get, l4_policy, require_root, Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const USER: &str = "deploy";
const PASSWORD: &str = "s3cret-t0ken";

fn deny(cidr: &str) -> Vec<u8> {
    l4_policy(
        "edge",
        "allow",
        &format!("- name: blocked\n  action: deny\n  from: [{cidr}]\n"),
    )
    .into_bytes()
}

fn applied_revision(admin: u16) -> Option<String> {
    agent_status(admin)?["applied"]["id"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn https_with_basic_auth_is_followed_and_a_refused_password_keeps_the_last_good_revision() {
    require_root!();
    let lab = Lab::new("githttps", &[SCANNER, OFFICE]);
    let secrets = tempfile::tempdir().unwrap();
    let ca = TestCa::new(secrets.path(), "tollgate-test-ca");
    let (cert, key) = ca.server_cert("server");
    let server = HttpGitServer::start("githttps", 19500, Some((&cert, &key)), USER, PASSWORD);
    let repo = server.root.join("policy");
    init_repo(&repo);
    let first = commit(
        &repo,
        "policies/edge.yaml",
        &deny("203.0.113.0/24"),
        "block the scanner",
    );
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let url = format!("https://127.0.0.1:{}/policy", server.port);
    let admin = 19501;
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--path",
        "policies",
        "--interval",
        "1s",
        "--git-username",
        USER,
        "--git-password-file",
        password_file.to_str().unwrap(),
        "--git-ca-file",
        ca.cert.to_str().unwrap(),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.logs()));
    assert!(
        agent.log().contains(&format!("revision={first}")),
        "{}",
        agent.log()
    );
    assert_dropped(&lab, SCANNER, "dropped by the revision in force");
    assert_passes(&lab, OFFICE, "allowed by the revision in force");
    // The server saw the configured user, authenticated.
    assert!(
        server.logs().contains(&format!(" - {USER} [")),
        "{}",
        server.logs()
    );

    // A new commit is enforced within one interval.
    let second = commit(
        &repo,
        "policies/edge.yaml",
        &deny("198.51.100.0/24"),
        "block the office instead",
    );
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied_revision(admin).as_deref(), Some(second.as_str()));
    assert_dropped(&lab, OFFICE, "dropped by the revision in force");
    assert_passes(&lab, SCANNER, "allowed by the revision in force");

    // `tollgate diff --repo` reaches the same server with the same flags.
    let diff = |with_credentials: bool| {
        let mut cmd = std::process::Command::new(tollgate_tests::tollgate_bin());
        cmd.args([
            "diff", "--repo", &url, "--path", "policies", &first, &second,
        ]);
        if with_credentials {
            cmd.args(["--git-username", USER, "--git-password-file"])
                .arg(&password_file)
                .arg("--git-ca-file")
                .arg(&ca.cert);
        }
        let out = cmd.output().expect("tollgate diff");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = diff(true);
    assert_eq!(code, Some(1), "changes: {out}");
    assert!(
        out.contains("L4Policy/edge rule blocked") && out.contains("198.51.100.0/24"),
        "{out}"
    );
    let (code, out) = diff(false);
    assert_eq!(code, Some(2), "no CA, no credentials: an error: {out}");

    // The secret on the node goes wrong (read on every fetch): refused with the reason, and
    // the second revision stays enforced while a third commit waits.
    let failures = apply_failures(admin, "source");
    std::fs::write(&password_file, "not-the-token\n").unwrap();
    let third = commit(
        &repo,
        "policies/edge.yaml",
        &deny("203.0.113.0/24"),
        "block the scanner again",
    );
    let error = wait_for_last_error(admin, "authentication failed", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(
        error.contains(&format!("authentication failed for {url} (user {USER})")),
        "{error}"
    );
    assert!(
        !error.contains("not-the-token"),
        "the secret leaks: {error}"
    );
    assert!(
        apply_failures(admin, "source") > failures,
        "counted with reason source"
    );
    assert_eq!(applied_revision(admin).as_deref(), Some(second.as_str()));
    assert_dropped(&lab, OFFICE, "still the second revision");
    assert_passes(&lab, SCANNER, "still the second revision");
    assert!(!agent.log().contains("not-the-token"), "the secret leaks");

    // Put right, the waiting commit is applied.
    std::fs::write(&password_file, PASSWORD).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied_revision(admin).as_deref(), Some(third.as_str()));
    assert_dropped(&lab, SCANNER, "dropped by the revision in force");
    assert!(agent.is_running());
}

#[test]
fn an_https_certificate_that_does_not_verify_is_refused() {
    require_root!();
    let lab = Lab::new("gittls", &[SCANNER]);
    let secrets = tempfile::tempdir().unwrap();
    let ca = TestCa::new(secrets.path(), "tollgate-test-ca");
    let other_ca = TestCa::new(secrets.path(), "some-other-ca");
    let (cert, key) = ca.server_cert("server");
    let server = HttpGitServer::start("gittls", 19502, Some((&cert, &key)), USER, PASSWORD);
    let repo = server.root.join("policy");
    init_repo(&repo);
    commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), "one");
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let url = format!("https://127.0.0.1:{}/policy", server.port);
    let admin = 19503;
    let admin_arg = format!("127.0.0.1:{admin}");
    let base = [
        "--source",
        url.as_str(),
        "--interval",
        "1s",
        "--git-password-file",
        password_file.to_str().unwrap(),
        "--admin",
        admin_arg.as_str(),
    ];

    // Without --git-ca-file (system roots only), and with the wrong CA.
    for ca_file in [None, Some(other_ca.cert.to_str().unwrap())] {
        let mut args = base.to_vec();
        if let Some(file) = ca_file {
            args.extend(["--git-ca-file", file]);
        }
        let mut agent = lab.start_agent(&args);
        let error = wait_for_last_error(
            admin,
            &format!("the TLS certificate of {url} does not verify"),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        assert!(error.contains("refused"), "{error}");
        if let Some(file) = ca_file {
            assert!(error.contains(file), "names the CA file: {error}");
        } else {
            assert!(error.contains("--git-ca-file"), "says what to do: {error}");
        }
        assert!(apply_failures(admin, "source") >= 1);
        assert_eq!(
            http_get(admin, "/readyz", "").map(|(code, _)| code),
            Some(503),
            "nothing is enforced"
        );
        assert_passes(&lab, SCANNER, "nothing is enforced");
        assert!(
            !server.logs().contains("GET /policy/info/refs"),
            "no request went through: {}",
            server.logs()
        );
        assert!(agent.is_running());
        drop(agent);
    }
}

#[test]
fn a_plain_http_fetch_over_the_size_cap_is_refused_and_the_last_revision_stays() {
    require_root!();
    let lab = Lab::new("gitsize", &[SCANNER, OFFICE]);
    let server = HttpGitServer::start("gitsize", 19504, None, USER, PASSWORD);
    let repo = server.root.join("policy");
    init_repo(&repo);
    let first = commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), "one");
    let url = format!("http://127.0.0.1:{}/policy", server.port);
    let admin = 19505;
    // The token from the environment this time.
    let mut agent = Agent::start_with_env(
        &lab,
        &[
            "--source",
            &url,
            "--interval",
            "1s",
            "--git-username",
            USER,
            "--git-password-env",
            "TOLLGATE_TEST_GIT_TOKEN",
            "--git-max-size",
            "1MiB",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
        &[("TOLLGATE_TEST_GIT_TOKEN", PASSWORD)],
    );
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.logs()));
    assert_eq!(applied_revision(admin).as_deref(), Some(first.as_str()));
    assert_eq!(
        agent.log_count("credentials travel in clear"),
        1,
        "warned once: {}",
        agent.log()
    );
    assert_dropped(&lab, SCANNER, "dropped by the revision in force");

    // 3 MiB that do not compress, beside a policy change.
    let mut blob = vec![0u8; 3 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut blob)
        .unwrap();
    commit(&repo, "assets/blob.bin", &blob, "a big file");
    commit(&repo, "edge.yaml", &deny("198.51.100.0/24"), "two");
    let error = wait_for_last_error(admin, "--git-max-size", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(
        error.contains(&format!(
            "fetching {url} received more than --git-max-size 1 MiB (1048576 bytes)"
        )),
        "{error}"
    );
    assert!(apply_failures(admin, "source") >= 1);
    assert_eq!(applied_revision(admin).as_deref(), Some(first.as_str()));
    assert_dropped(&lab, SCANNER, "still the first revision");
    assert_passes(&lab, OFFICE, "still the first revision");
    assert!(agent.is_running());
}

#[test]
fn an_https_server_that_never_answers_times_out() {
    require_root!();
    let lab = Lab::new("githttptime", &[]);
    let port = 19506;
    let silent = SilentServer::start(port);
    let admin = 19507;
    let started = Instant::now();
    let mut agent = lab.start_agent(&[
        "--source",
        &format!("https://127.0.0.1:{port}/policy"),
        "--interval",
        "1s",
        "--git-timeout",
        "2s",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let error = wait_for_last_error(admin, "--git-timeout", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let took = started.elapsed();
    assert!(
        error.contains(&format!(
            "fetching https://127.0.0.1:{port}/policy took longer than --git-timeout 2s"
        )),
        "{error}"
    );
    assert!(
        silent.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the agent connected"
    );
    // Bounded by the timeout (twice it at worst: a read that stalls just before the
    // deadline), not by the default of a minute; generous for a loaded machine.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // The admin server kept answering during the fetch, and the agent runs on.
    assert_eq!(http_get(admin, "/healthz", "").map(|(c, _)| c), Some(200));
    assert!(apply_failures(admin, "source") >= 1);
    assert!(agent.is_running());
}
