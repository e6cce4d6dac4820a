//! The last good revision, kept on the node (`--state-dir`): the documents of the last revision
//! that was applied, so that an agent started while its source is unreadable or invalid (a node
//! rebooted while Git is down, say) enforces it at once.
use std::path::Path;

use super::Documents;

/// File name in the state directory.
pub const FILE: &str = "last-good.json";

/// Saves `docs` atomically (temporary file, then rename).
pub fn save(state_dir: &Path, docs: &Documents) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(docs).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, state_dir.join(FILE))
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
        };
        save(dir.path(), &docs).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(docs));
    }
}
