//! The Git source over ssh: a real sshd on loopback (key-only login, a generated host key,
//! the repository served by `git-upload-pack`). A commit is enforced with an (encrypted) key
//! and a known_hosts file, a new commit within one interval; a host key that changes, an unknown
//! host, a refused key and a server that never answers are refused and reported while the last
//! good revision stays enforced (checked with real packets); a repository that moves to
//! another server is followed at its new URL without a gap.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tollgate_tests::gitserver::{
    agent_status, apply_failures, assert_dropped, assert_passes, commit, git, init_repo,
    ssh_fingerprint, ssh_keygen, wait_for_last_error, SilentServer, SshGitServer,
};
use tollgate_tests::{http_get, l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn deny(cidr: &str) -> Vec<u8> {
    l4_policy(
        "edge",
        "allow",
        &format!("- name: blocked\n  action: deny\n  from: [{cidr}]\n"),
    )
    .into_bytes()
}

/// Fetches of the Git source so far (`tollgate_git_fetch_duration_seconds_count`).
fn fetch_count(admin: u16) -> u64 {
    let (_, metrics) = http_get(admin, "/metrics", "").expect("the admin server answers");
    tollgate_tests::metric_value(&metrics, "tollgate_git_fetch_duration_seconds_count ")
        .unwrap_or(0)
}

fn applied_revision(admin: u16) -> Option<String> {
    agent_status(admin)?["applied"]["id"]
        .as_str()
        .map(str::to_owned)
}

/// Writes a known_hosts file of `lines`; `hashed`: with the host names hashed, as
/// `ssh-keygen -H` leaves them.
fn known_hosts(dir: &Path, name: &str, lines: &[String], hashed: bool) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.concat()).unwrap();
    if hashed {
        tollgate_tests::run_ok("ssh-keygen", &["-q", "-H", "-f", path.to_str().unwrap()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().all(|l| l.starts_with("|1|")), "hashed: {text}");
    }
    path
}

#[test]
fn ssh_with_a_key_and_known_hosts_is_followed_and_a_changed_host_key_is_refused() {
    require_root!();
    let lab = Lab::new("gitssh", &[SCANNER, OFFICE]);
    // Two host keys; known_hosts lists only the ed25519 one, so the agent must ask the server
    // for that type (libssh2 would otherwise take the ECDSA key first).
    let mut server = SshGitServer::start("gitssh", 19510, &["ecdsa", "ed25519"]);
    let repo = server.dir.file("repos/policy");
    init_repo(&repo);
    let first = commit(
        &repo,
        "policies/edge.yaml",
        &deny("203.0.113.0/24"),
        "block the scanner",
    );
    let known = known_hosts(
        &server.dir.path,
        "known_hosts",
        &[server.known_hosts_line(1)],
        true,
    );
    // The client key is encrypted; its passphrase comes from a file.
    tollgate_tests::run_ok(
        "ssh-keygen",
        &[
            "-q",
            "-p",
            "-N",
            "key passphrase",
            "-f",
            server.client_key.to_str().unwrap(),
        ],
    );
    let passphrase = server.dir.file("passphrase");
    std::fs::write(&passphrase, "key passphrase\n").unwrap();
    let url = server.url(&repo);
    let admin = 19511;
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--path",
        "policies",
        "--interval",
        "1s",
        "--git-ssh-key",
        server.client_key.to_str().unwrap(),
        "--git-ssh-key-passphrase-file",
        passphrase.to_str().unwrap(),
        "--git-known-hosts",
        known.to_str().unwrap(),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\nsshd:\n{}", server.log()));
    assert_eq!(applied_revision(admin).as_deref(), Some(first.as_str()));
    assert_dropped(&lab, SCANNER, "dropped by the revision in force");
    assert_passes(&lab, OFFICE, "allowed by the revision in force");
    assert!(
        server.log().contains("Accepted publickey for root"),
        "{}",
        server.log()
    );

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

    // The server comes back with another host key (a man-in-the-middle, as far as anyone
    // can tell): refused, naming both fingerprints; the second revision stays enforced.
    let old_fingerprint = ssh_fingerprint(&server.dir.path, &server.host_keys[1]);
    server.restart_with_new_host_keys(&["ed25519"]);
    let new_fingerprint = ssh_fingerprint(&server.dir.path, &server.host_keys[0]);
    assert_ne!(old_fingerprint, new_fingerprint);
    let failures = apply_failures(admin, "source");
    let error = wait_for_last_error(admin, "has changed", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(
        error.contains("host key of [127.0.0.1]:19510 has changed"),
        "{error}"
    );
    assert!(
        error.contains(&format!("presented ssh-ed25519 {new_fingerprint}")),
        "{error}"
    );
    assert!(
        error.contains(&format!("ssh-ed25519 {old_fingerprint} (line 1)")),
        "{error}"
    );
    assert!(apply_failures(admin, "source") > failures);
    // A commit made now (a fetch that began before the restart may still have been served by
    // the old server's session; from here on every fetch meets the new key) is not applied.
    commit(
        &repo,
        "policies/edge.yaml",
        &deny("203.0.113.0/24"),
        "block the scanner again",
    );
    let fetches = fetch_count(admin);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fetch_count(admin) < fetches + 2 {
        assert!(Instant::now() < deadline, "the agent stopped fetching");
        std::thread::sleep(Duration::from_millis(100));
    }
    let error = agent_status(admin).expect("status")["last_error"].to_string();
    assert!(error.contains("has changed"), "{error}");
    assert_eq!(applied_revision(admin).as_deref(), Some(second.as_str()));
    assert_dropped(&lab, OFFICE, "still the second revision");
    assert_passes(&lab, SCANNER, "still the second revision");
    assert!(
        !server.log().contains("Accepted publickey"),
        "no login on the new server: {}",
        server.log()
    );
    // known_hosts is never written.
    assert_eq!(std::fs::read_to_string(&known).unwrap().lines().count(), 1);
    assert!(agent.is_running());
}

#[test]
fn an_unknown_host_a_refused_key_and_a_missing_known_hosts_are_refused() {
    require_root!();
    let lab = Lab::new("gitsshunk", &[SCANNER]);
    let server = SshGitServer::start("gitsshunk", 19512, &["ed25519"]);
    let repo = server.dir.file("repos/policy");
    init_repo(&repo);
    commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), "one");
    let url = server.url(&repo);
    let admin = 19513;
    let admin_arg = format!("127.0.0.1:{admin}");
    let key = server.client_key.to_str().unwrap().to_owned();
    let fingerprint = ssh_fingerprint(&server.dir.path, &server.host_keys[0]);
    let refused = |known: &Path, key: &str, needle: &str| -> String {
        let mut agent = lab.start_agent(&[
            "--source",
            &url,
            "--interval",
            "1s",
            "--git-ssh-key",
            key,
            "--git-known-hosts",
            known.to_str().unwrap(),
            "--admin",
            &admin_arg,
        ]);
        let error = wait_for_last_error(admin, needle, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        assert!(apply_failures(admin, "source") >= 1);
        assert_eq!(
            http_get(admin, "/readyz", "").map(|(code, _)| code),
            Some(503),
            "nothing is enforced"
        );
        assert_passes(&lab, SCANNER, "nothing is enforced");
        assert!(agent.is_running());
        error
    };

    // An empty known_hosts, and one that knows the key under another port only.
    let empty = known_hosts(&server.dir.path, "empty", &[], false);
    let error = refused(&empty, &key, "is not in");
    assert!(
        error.contains(&format!(
            "host key of [127.0.0.1]:19512 is not in {}",
            empty.display()
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("ssh-ed25519 {fingerprint}")),
        "{error}"
    );
    let other_port = known_hosts(
        &server.dir.path,
        "other_port",
        &[format!("127.0.0.1 {}\n", server.host_keys[0])],
        false,
    );
    refused(&other_port, &key, "host key of [127.0.0.1]:19512 is not in");
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "never written"
    );

    // A known host, a key the server does not accept.
    let good = known_hosts(
        &server.dir.path,
        "known_hosts",
        &[server.known_hosts_line(0)],
        false,
    );
    let stranger = server.dir.file("stranger_ed25519");
    ssh_keygen(&stranger, "ed25519");
    let error = refused(&good, stranger.to_str().unwrap(), "authentication failed");
    assert!(
        error.contains(&format!("authentication failed for {url} (user root)")),
        "{error}"
    );
    assert!(error.contains("stranger_ed25519"), "names the key: {error}");

    // No known_hosts at all: the agent does not start.
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--git-ssh-key",
        &key,
        "--admin",
        &admin_arg,
    ]);
    let status = agent
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the agent runs without known_hosts:\n{}", agent.log()));
    assert!(!status.success());
    assert!(
        agent
            .log()
            .contains("an ssh source needs --git-known-hosts"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_repository_moved_to_another_ssh_server_stays_enforced_and_is_followed_there() {
    require_root!();
    let lab = Lab::new("gitsshmove", &[SCANNER, OFFICE]);
    let mut old_server = SshGitServer::start("gitsshold", 19514, &["ed25519"]);
    let new_server = SshGitServer::start("gitsshnew", 19515, &["ed25519"]);
    let old_repo = old_server.dir.file("repos/policy");
    init_repo(&old_repo);
    let first = commit(&old_repo, "edge.yaml", &deny("203.0.113.0/24"), "one");
    let known = known_hosts(
        &new_server.dir.path,
        "known_hosts",
        &[
            old_server.known_hosts_line(0),
            new_server.known_hosts_line(0),
        ],
        false,
    );
    let key = old_server.client_key.to_str().unwrap().to_owned();
    // The same client key is accepted by both servers.
    std::fs::copy(
        old_server.dir.file("authorized_keys"),
        new_server.dir.file("authorized_keys"),
    )
    .unwrap();
    let admin = format!("127.0.0.1:{}", 19516);
    let args = |url: &str| -> Vec<String> {
        [
            "--source",
            url,
            "--interval",
            "1s",
            "--git-ssh-key",
            &key,
            "--git-known-hosts",
            known.to_str().unwrap(),
            "--admin",
            &admin,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let old_args = args(&old_server.url(&old_repo));
    let mut agent = lab.start_agent(&old_args.iter().map(String::as_str).collect::<Vec<_>>());
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_dropped(&lab, SCANNER, "dropped by the revision in force");
    drop(agent);

    // The repository moves to another server, under another path; the old one goes away.
    let new_repo = new_server.dir.file("repos/moved/edge-policy");
    std::fs::create_dir_all(new_repo.parent().unwrap()).unwrap();
    git(
        &new_server.dir.path,
        &[
            "clone",
            "-q",
            old_repo.to_str().unwrap(),
            new_repo.to_str().unwrap(),
        ],
    );
    old_server.stop();
    std::fs::remove_dir_all(&old_repo).unwrap();

    let new_url = new_server.url(&new_repo);
    let new_args = args(&new_url);
    let mut agent = lab.start_agent(&new_args.iter().map(String::as_str).collect::<Vec<_>>());
    // Enforced all along (the pinned maps), before the new URL is even read.
    assert_dropped(&lab, SCANNER, "a gap in enforcement");
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\nsshd:\n{}", new_server.log()));
    assert!(
        agent.log().contains(&format!("revision={first}")),
        "{}",
        agent.log()
    );
    let status = agent_status(19516).expect("status");
    assert!(
        status["applied"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(&new_url)),
        "{status}"
    );
    assert_dropped(&lab, SCANNER, "dropped by the revision in force");

    // New commits come from the new URL.
    let second = commit(&new_repo, "edge.yaml", &deny("198.51.100.0/24"), "two");
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied_revision(19516).as_deref(), Some(second.as_str()));
    assert_dropped(&lab, OFFICE, "dropped by the revision in force");
    assert_passes(&lab, SCANNER, "allowed by the revision in force");
    assert!(!agent.log().contains("force-push"), "{}", agent.log());
}

#[test]
fn an_ssh_server_that_never_answers_times_out() {
    require_root!();
    let lab = Lab::new("gitsshtime", &[]);
    let port = 19517;
    let silent = SilentServer::start(port);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let public = ssh_keygen(&key, "ed25519");
    let known = known_hosts(
        dir.path(),
        "known_hosts",
        &[format!("[127.0.0.1]:{port} {public}\n")],
        false,
    );
    let admin = 19518;
    let url = format!("ssh://git@127.0.0.1:{port}/policy.git");
    let started = Instant::now();
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--interval",
        "1s",
        "--git-timeout",
        "2s",
        "--git-ssh-key",
        key.to_str().unwrap(),
        "--git-known-hosts",
        known.to_str().unwrap(),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let error = wait_for_last_error(admin, "--git-timeout", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(
        error,
        format!("git: fetching {url} took longer than --git-timeout 2s; aborted")
    );
    assert!(silent.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(http_get(admin, "/healthz", "").map(|(c, _)| c), Some(200));
    assert!(apply_failures(admin, "source") >= 1);
    assert!(agent.is_running());
}
