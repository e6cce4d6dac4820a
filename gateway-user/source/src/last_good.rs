//! The last good revision, kept on the node (`--state-dir`): the documents of the last revision
//! that was applied, so that an agent started while its source is unreadable or invalid (a node
//! rebooted while Git is down, say) enforces it at once.
use std::path::Path;

use super::Documents;

/// File name in the state directory.
pub const FILE: &str = "last-good.json";

/// Saves `docs` atomically (temporary file, then rename), readable by the agent's user only
/// (see [`write_private`]).
pub fn save(state_dir: &Path, docs: &Documents) -> std::io::Result<()> {
    write_private(
        state_dir,
        FILE,
        &serde_json::to_vec(docs).map_err(std::io::Error::other)?,
    )
}

/// Writes `bytes` to `dir/name` atomically: a fresh temporary file created 0600, then a rename.
/// `dir` (and any parent it creates) is created 0700. The state directory holds the policy (what
/// the node lets through and from where) and the Git mirror; nobody but the agent's user has
/// reason to read it. (The data plane's id table is written the same way, in
/// `tollgate_dataplane::ids`; the agent also tightens what an older version left, at start.)
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    // A temporary file left by a crash keeps its old mode if opened as it is: start over.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(tmp, dir.join(name))
}

/// Loads the saved documents; `Ok(None)` when there are none.
pub fn load(state_dir: &Path) -> std::io::Result<Option<Documents>> {
    match std::fs::read(state_dir.join(FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Revision, SourceFile};

    #[test]
    fn the_last_good_revision_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let docs = Documents {
            revision: Revision {
                id: "dir:1".into(),
                source: "/etc/tollgate".into(),
            },
            files: vec![SourceFile {
                path: "a/edge.yaml".into(),
                content: "kind: L4Policy\n".into(),
            }],
            cluster: None,
            unresolved: Vec::new(),
        };
        save(dir.path(), &docs).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(docs));
    }

    #[test]
    fn the_last_good_revision_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state/sub");
        // A temporary file left behind world-readable by a crash is not reused as it is.
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let stale = state.join(format!("{FILE}.tmp"));
        std::fs::write(&stale, "old").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&state, &Documents::inline(&[("a.yaml", "a: 1\n")])).unwrap();
        assert_eq!(mode(&state.join(FILE)), 0o600);
        assert!(!stale.exists());
        let fresh = root.path().join("new/state");
        save(&fresh, &Documents::inline(&[])).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&root.path().join("new")), 0o700);
        assert_eq!(mode(&fresh.join(FILE)), 0o600);
    }
}
