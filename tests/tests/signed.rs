//! `--verify-commits`: with an allowed_signers file, a commit signed (by git and ssh-keygen) with
//! an allowed key is enforced; an unsigned commit and one signed by another key, pushed on top,
//! are refused and reported while the signed revision keeps being enforced, packet for packet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tollgate_tests::admin::{applied, metric, status, wait_applied};
use tollgate_tests::gitrepo::{commit, deny, git};
use tollgate_tests::{require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 146);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 146);

fn received(lab: &Lab, from: Ipv4Addr) -> u64 {
    lab.ping(from, 2, Duration::from_millis(20), Duration::from_secs(1))
        .received
}

/// An ed25519 key pair made by ssh-keygen: the private key file and the public key line.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&file)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    (file, public.trim().to_owned())
}

#[test]
fn only_commits_signed_by_an_allowed_key_are_enforced() {
    require_root!();
    let lab = Lab::new("gitsigned", &[SCANNER, OFFICE]);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let (ops, ops_public) = keygen(work.path(), "ops");
    let (intruder, _) = keygen(work.path(), "intruder");
    let signers = work.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("# who may change node policy\nops@example.com namespaces=\"git\" {ops_public}\n"),
    )
    .unwrap();
    let url = format!("file://{}", repo.display());
    let admin = 19544;
    let args = [
        "--source",
        url.as_str(),
        "--interval",
        "1s",
        "--admin",
        "127.0.0.1:19544",
        "--verify-commits",
        signers.to_str().unwrap(),
    ];

    // A bad allowed_signers file stops the agent at start, naming the file and the line.
    let broken = work.path().join("broken_signers");
    std::fs::write(
        &broken,
        format!("ops@example.com {ops_public}\nops@example.com ssh-ed25519 AAAAnotakey\n"),
    )
    .unwrap();
    let mut bad = args.to_vec();
    let last = bad.len() - 1;
    bad[last] = broken.to_str().unwrap();
    let mut agent = lab.start_agent(&bad);
    let exit = agent.wait_exit(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "{exit:?}: {}",
        agent.log()
    );
    assert!(agent.log().contains("broken_signers:2"), "{}", agent.log());
    drop(agent);

    let first = commit(&repo, "edge.yaml", &deny("203.0.113.0/24"), Some(&ops));
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied(admin), first);
    assert!(
        agent.log().contains("commit signature verified")
            && agent.log().contains("ops@example.com"),
        "{}",
        agent.log()
    );
    assert_eq!(received(&lab, SCANNER), 0);
    assert_eq!(received(&lab, OFFICE), 2);

    // Unsigned, on top: refused; the signed revision stays.
    let unsigned = commit(&repo, "edge.yaml", &deny("198.51.100.0/24"), None);
    agent
        .wait_for_log("is not signed", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(agent.log().contains(&unsigned), "{}", agent.log());
    let s = status(admin);
    assert_eq!(s["applied"]["id"], first.as_str(), "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("not signed"),
        "{s}"
    );
    assert_eq!(
        metric(
            admin,
            "tollgate_policy_apply_failures_total{reason=\"unverified\"} "
        ),
        1
    );
    assert_eq!(received(&lab, OFFICE), 2, "still the signed revision");
    assert_eq!(received(&lab, SCANNER), 0);

    // Signed by a key that is not allowed: refused too.
    let forged = commit(
        &repo,
        "edge.yaml",
        &deny("198.51.100.0/25"),
        Some(&intruder),
    );
    agent
        .wait_for_log("which is not in", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(agent.log().contains(&forged), "{}", agent.log());
    assert_eq!(applied(admin), first);
    assert_eq!(
        metric(
            admin,
            "tollgate_policy_apply_failures_total{reason=\"unverified\"} "
        ),
        2
    );
    assert_eq!(received(&lab, OFFICE), 2, "still the signed revision");

    // The next commit signed by the allowed key is enforced.
    let signed = commit(&repo, "edge.yaml", &deny("198.51.100.0/24"), Some(&ops));
    wait_applied(admin, &signed, Duration::from_secs(10));
    assert_eq!(received(&lab, OFFICE), 0);
    assert_eq!(received(&lab, SCANNER), 2);
    assert!(agent.is_running());
}
