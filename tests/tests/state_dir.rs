//! The agent's state directory is its user's alone: the last good revision and the id table are
//! written 0600, directories (the Git mirror included) are 0700, and what an older agent left
//! world-readable is tightened at start.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use tollgate_tests::gitrepo::{commit, deny, git};
use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every entry under `dir` (and `dir`) that group or others can access, with its mode.
fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            found.push((path.clone(), meta.permissions().mode() & 0o7777));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[test]
fn the_state_directory_is_private_and_what_an_older_agent_left_is_tightened() {
    require_root!();
    let lab = Lab::new("statedir", &[]);
    // What an older agent (or an operator's umask 022) left behind: all world-readable.
    let state = &lab.state_dir;
    let old_mirror = state.join("git/0123456789abcdef/objects/ab");
    std::fs::create_dir_all(&old_mirror).unwrap();
    std::fs::write(old_mirror.join("cdef"), "old object").unwrap();
    set_mode(&old_mirror.join("cdef"), 0o644);
    for dir in [
        old_mirror.clone(),
        state.join("git/0123456789abcdef/objects"),
        state.join("git/0123456789abcdef"),
        state.join("git"),
        state.clone(),
    ] {
        set_mode(&dir, 0o755);
    }
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&[]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(state), 0o700);
    assert_eq!(mode(&state.join("last-good.json")), 0o600);
    assert_eq!(mode(&state.join("ids.json")), 0o600);
    assert_eq!(mode(&old_mirror), 0o700);
    assert_eq!(mode(&old_mirror.join("cdef")), 0o600);
    assert_eq!(open_to_others(state), vec![], "{}", agent.log());
}

#[test]
fn the_git_mirror_is_private() {
    require_root!();
    let lab = Lab::new("statedirgit", &[]);
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let first = commit(
        repo.path(),
        "policies/edge.yaml",
        &deny("203.0.113.0/24"),
        None,
    );
    let url = format!("file://{}", repo.path().display());
    let mut agent = lab.start_agent(&[
        "--source",
        &url,
        "--ref",
        "main",
        "--path",
        "policies",
        "--admin",
        "127.0.0.1:19493",
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(agent.log().contains(&first), "{}", agent.log());
    assert!(
        lab.state_dir.join("git").is_dir(),
        "no mirror under {}",
        lab.state_dir.display()
    );
    assert_eq!(open_to_others(&lab.state_dir), vec![], "{}", agent.log());
}
