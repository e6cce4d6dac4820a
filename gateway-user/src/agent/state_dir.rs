//! The agent's state directory (`--state-dir`) is its user's alone: the last good revision (what
//! the node lets through, and from where), the data plane's id table and the Git mirror (with
//! its ssh host key preferences). Files are written 0600 and directories 0700 by the writers
//! (`tollgate_source::last_good`, `tollgate_dataplane::ids`); at start the agent tightens what an
//! older version or an operator left looser, and sets its umask so that what libgit2 writes in
//! the mirror is private too.
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use tracing::{info, warn};

/// The directory under the state directory that holds the Git mirrors.
pub const GIT_DIR: &str = "git";

/// The entries the agent writes in the state directory (with their temporary files). A new
/// file or directory the agent keeps there must be added here: any other entry makes the
/// directory count as shared, and then its own mode is left as it is.
fn ours(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    [
        tollgate_source::last_good::FILE,
        tollgate_dataplane::ids::IDS_FILE,
        GIT_DIR,
    ]
    .contains(&name)
}

/// Files and directories created from now on get no permission for group and others (the
/// umask is per process: everything the agent creates, the Git mirror included).
pub fn private_umask() {
    // SAFETY: umask only changes the calling process's file mode creation mask.
    unsafe { libc::umask(0o077) };
}

/// Creates `dir` (0700) if it is missing, and takes group and other permissions away from it
/// and from every entry the agent writes in it (the Git mirror recursively). A directory that
/// also holds entries the agent does not write (`--state-dir /var/lib`, a shared `/tmp`) is
/// someone else's too: then only the agent's entries are tightened, and that is logged.
/// Symbolic links are never followed.
pub fn tighten(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut shared = false;
    let mut changed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(ours) {
            shared = true;
            continue;
        }
        changed += tighten_tree(&entry.path())?;
    }
    if shared {
        warn!(dir = %dir.display(), "the state directory holds other programs' files too: only the agent's own are made private (give the agent a directory of its own)");
    } else {
        changed += tighten_one(dir)?;
    }
    if changed > 0 {
        info!(dir = %dir.display(), entries = changed, "state directory entries made private (no access for group and others)");
    }
    Ok(())
}

/// `path`, and everything under it when it is a directory; returns how many modes changed.
fn tighten_tree(path: &Path) -> io::Result<usize> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut changed = tighten_one(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            changed += tighten_tree(&entry?.path())?;
        }
    }
    Ok(changed)
}

/// Removes group and other permissions from one file or directory (directories keep the
/// owner's full access; files keep the owner's bits, so a read-only Git object stays
/// read-only). Symbolic links are left alone. Returns 1 when the mode changed.
fn tighten_one(path: &Path) -> io::Result<usize> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(0);
    }
    let mode = meta.permissions().mode() & 0o7777;
    let private = if meta.is_dir() { 0o700 } else { mode & 0o700 };
    if mode == private {
        return Ok(0);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A state directory as an older agent left it: everything world-readable.
    fn loose(root: &Path) -> PathBuf {
        let state = root.join("state");
        let objects = state.join("git/0123456789abcdef/objects/ab");
        fs::create_dir_all(&objects).unwrap();
        for (file, m) in [
            (state.join("last-good.json"), 0o644),
            (state.join("ids.json"), 0o666),
            (state.join("ids.json.tmp"), 0o644),
            (objects.join("cdef"), 0o444),
        ] {
            fs::write(&file, "x").unwrap();
            set(&file, m);
        }
        for dir in [
            state.join("git/0123456789abcdef/objects/ab"),
            state.join("git/0123456789abcdef/objects"),
            state.join("git/0123456789abcdef"),
            state.join("git"),
            state.clone(),
        ] {
            set(&dir, 0o755);
        }
        state
    }

    #[test]
    fn an_existing_state_directory_is_made_private_at_start() {
        let root = tempfile::tempdir().unwrap();
        let state = loose(root.path());
        // A link out of the directory is not followed.
        let outside = root.path().join("outside");
        fs::write(&outside, "x").unwrap();
        set(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, state.join("git/link")).unwrap();
        tighten(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("last-good.json")), 0o600);
        assert_eq!(mode(&state.join("ids.json")), 0o600);
        assert_eq!(mode(&state.join("ids.json.tmp")), 0o600);
        assert_eq!(mode(&state.join("git")), 0o700);
        assert_eq!(mode(&state.join("git/0123456789abcdef/objects/ab")), 0o700);
        assert_eq!(
            mode(&state.join("git/0123456789abcdef/objects/ab/cdef")),
            0o400
        );
        assert_eq!(mode(&outside), 0o644);
        // Idempotent.
        tighten(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
    }

    #[test]
    fn a_missing_state_directory_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("a/b");
        tighten(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
    }

    #[test]
    fn a_shared_directory_keeps_its_mode_and_other_files() {
        let root = tempfile::tempdir().unwrap();
        let state = loose(root.path());
        let other = state.join("someone-else.conf");
        fs::write(&other, "x").unwrap();
        set(&other, 0o644);
        set(&state, 0o1777);
        tighten(&state).unwrap();
        assert_eq!(mode(&state), 0o1777);
        assert_eq!(mode(&other), 0o644);
        assert_eq!(mode(&state.join("last-good.json")), 0o600);
        assert_eq!(mode(&state.join("git")), 0o700);
    }
}
