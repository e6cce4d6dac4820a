//! The offline commands, as CI would run them before a merge: `validate` and `diff` exit codes.

use std::process::Command;

use tollgate_tests::gitrepo::git;
use tollgate_tests::{tollgate_bin, workspace_root};

fn run(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new(tollgate_bin())
        .args(args)
        .output()
        .expect("run tollgate");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn diff_exits_like_flux_diff_and_validate_like_a_linter() {
    let examples = workspace_root().join("examples");
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    let edge = std::fs::read_to_string(examples.join("edge.yaml")).unwrap();
    std::fs::write(
        new.join("edge.yaml"),
        edge.replace("203.0.113.0/24", "203.0.113.0/25"),
    )
    .unwrap();

    let (code, out) = run(&["diff".as_ref(), examples.as_os_str(), examples.as_os_str()]);
    assert_eq!(code, 0, "no change: {out}");
    let (code, out) = run(&["diff".as_ref(), examples.as_os_str(), new.as_os_str()]);
    assert_eq!(code, 1, "a change: {out}");
    assert!(
        out.contains("~ L4Policy/edge rule block-scanners") && out.contains("203.0.113.0/25"),
        "{out}"
    );

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("edge.yaml"),
        edge.replace("203.0.113.0/24", "203.0.113.0/99"),
    )
    .unwrap();
    let (code, out) = run(&["diff".as_ref(), examples.as_os_str(), broken.as_os_str()]);
    assert_eq!(code, 2, "an invalid revision is an error: {out}");
    let (code, out) = run(&["validate".as_ref(), broken.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("edge.yaml")
            && out.contains("L4Policy/edge")
            && out.contains("spec.rules[0].from[0]"),
        "{out}"
    );
    let (code, _) = run(&["validate".as_ref(), examples.as_os_str()]);
    assert_eq!(code, 0);
    let (code, _) = run(&["validate".as_ref(), dir.path().join("missing").as_os_str()]);
    assert_eq!(code, 2, "an unreadable path");
}

#[test]
fn every_bad_run_setting_is_reported_at_once_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        "interval: fast\nadmin: nowhere\nattach-mode: sideways\nintreface: [eth0]\n",
    )
    .unwrap();
    let (code, out) = run(&[
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--interval".as_ref(),
        "3d".as_ref(),
        "--interface".as_ref(),
        "tgnonexist0".as_ref(),
    ]);
    assert_eq!(code, 2, "{out}");
    let shown = config.display().to_string();
    for needle in [
        "5 bad setting(s)".to_owned(),
        "--interval: invalid value '3d'".to_owned(),
        format!("{shown}: interval: invalid value 'fast'"),
        format!("{shown}: admin: invalid value 'nowhere'"),
        format!("{shown}: attach-mode: invalid value 'sideways'"),
        format!("{shown}: intreface: unknown setting"),
    ] {
        assert!(out.contains(&needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn diff_compares_two_revisions_of_a_repository_by_path_or_url() {
    let examples = workspace_root().join("examples");
    let edge = std::fs::read_to_string(examples.join("edge.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let commit = |content: &str, message: &str| {
        std::fs::write(repo.join("policies/edge.yaml"), content).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", message]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    let first = commit(&edge, "as the examples");
    git(&repo, &["tag", "v1"]);
    commit(
        &edge.replace("203.0.113.0/24", "203.0.113.0/25"),
        "narrow the scanners",
    );
    let repo_arg = repo.as_os_str();
    let url = format!("file://{}", repo.display());
    let diff = |repo: &std::ffi::OsStr, path: &str, old: &str, new: &str| {
        run(&[
            "diff".as_ref(),
            "--repo".as_ref(),
            repo,
            "--path".as_ref(),
            path.as_ref(),
            old.as_ref(),
            new.as_ref(),
        ])
    };

    // A local path: any revision git rev-parse takes.
    let (code, out) = diff(repo_arg, "policies", "HEAD~1", "HEAD");
    assert_eq!(code, 1, "a change: {out}");
    assert!(
        out.contains("~ L4Policy/edge rule block-scanners") && out.contains("203.0.113.0/25"),
        "{out}"
    );
    let (code, out) = diff(repo_arg, "policies", "main", "main");
    assert_eq!(code, 0, "no change: {out}");
    assert!(out.contains("no changes"), "{out}");
    let (code, out) = diff(repo_arg, "policies", &first, "v1");
    assert_eq!(code, 0, "a commit id and a tag: {out}");
    // The same revisions through the agent's Git source, from a URL: same output.
    let (code, url_out) = diff(url.as_ref(), "policies", "v1", "main");
    assert_eq!(code, 1, "{url_out}");
    let (_, path_out) = diff(repo_arg, "policies", "v1", "main");
    assert_eq!(url_out, path_out);
    let (code, out) = diff(url.as_ref(), "policies", "main~1", "main");
    assert_eq!((code, out.as_str()), (1, path_out.as_str()));

    // Errors exit 2 and say what is wrong.
    let (code, out) = diff(repo_arg, "policies", "v1", "no-such-branch");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no-such-branch"), "{out}");
    let (code, out) = diff(repo_arg, "elsewhere", "v1", "main");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("elsewhere"), "{out}");
    let (code, out) = diff(dir.path().join("nothing").as_os_str(), "", "v1", "main");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("nothing"), "{out}");
    let broken = commit(&edge.replace("203.0.113.0/24", "203.0.113.0/99"), "a typo");
    let (code, out) = diff(repo_arg, "policies", "v1", "HEAD");
    assert_eq!(code, 2, "an invalid revision is an error: {out}");
    assert!(
        out.contains(&broken) && out.contains("edge.yaml") && out.contains("spec.rules[0].from[0]"),
        "{out}"
    );
}
