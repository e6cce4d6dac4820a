//! A directory (or one file) on disk as a policy source: what `tollgate validate PATH` reads,
//! and what the Git source reads from its checkout.
use super::{
    content_id, escaped, policy_path, Documents, Revision, SourceError, SourceFile, MAX_FILE_SIZE,
};
use std::path::{Path, PathBuf};
use tollgate_model::revision::MAX_REVISION_SIZE;
use walkdir::WalkDir;

/// Reads every `*.yaml` / `*.yml` file under `root`, at any depth, sorted by path; or just
/// `root` if it is a file (whatever its extension). Hidden files and directories (`.git`,
/// `.github`, ...) are skipped, and so are symbolic links: a policy repository cannot point the
/// agent at files outside itself. A policy file whose path is not UTF-8 or has a control
/// character is refused ([`SourceError::BadName`]). The Git source reads the same files of a
/// commit as this reads of its checkout.
pub fn read_dir(root: &Path) -> Result<Documents, SourceError> {
    let meta = std::fs::metadata(root).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound {
            path: root.to_path_buf(),
        },
        _ => SourceError::Io {
            path: root.to_path_buf(),
            source,
        },
    })?;

    // What to read, with sizes: the limits are checked before anything is read.
    let mut found: Vec<(PathBuf, String, u64)> = Vec::new();
    if meta.is_file() {
        let name = match root.file_name() {
            Some(name) => checked(name.as_encoded_bytes(), root.as_os_str().as_encoded_bytes())?,
            None => root.display().to_string(),
        };
        found.push((root.to_path_buf(), name, meta.len()));
    } else {
        let walk = WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                SourceError::Io {
                    path,
                    source: e.into(),
                }
            })?;
            if !entry.file_type().is_file() || !is_yaml(entry.path()) {
                continue;
            }
            let size = entry
                .metadata()
                .map_err(|e| SourceError::Io {
                    path: entry.path().to_path_buf(),
                    source: e.into(),
                })?
                .len();
            let relative = relative_path(root, entry.path())?;
            found.push((entry.path().to_path_buf(), relative, size));
        }
    }
    let total: u64 = found.iter().map(|(_, _, size)| size).sum();
    if total > MAX_REVISION_SIZE {
        return Err(SourceError::RevisionTooLarge {
            path: root.to_path_buf(),
            size: total,
            limit: MAX_REVISION_SIZE,
        });
    }
    let mut files = Vec::with_capacity(found.len());
    for (path, relative, size) in found {
        files.push(read_file(&path, relative, size)?);
    }
    // walkdir sorts per directory by file name; sorting the '/'-joined paths as well keeps the
    // order (and so the revision id) independent of that detail.
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let id = format!("dir:{:016x}", content_id(&files));
    Ok(Documents {
        revision: Revision {
            id,
            source: root.display().to_string(),
        },
        files,
        cluster: None,
        unresolved: Vec::new(),
    })
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// `path` relative to `root`, with `/` separators whatever the platform, if it is a name a
/// policy file may have.
fn relative_path(root: &Path, path: &Path) -> Result<String, SourceError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let bytes: Vec<&[u8]> = rel
        .components()
        .map(|c| c.as_os_str().as_encoded_bytes())
        .collect();
    let relative = bytes.join(&b'/');
    let mut full = root.as_os_str().as_encoded_bytes().to_vec();
    full.push(b'/');
    full.extend_from_slice(&relative);
    checked(&relative, &full)
}

/// `name` as a policy file's name ([`policy_path`]), or why it cannot be one (naming the file
/// by `full`, its whole path).
fn checked(name: &[u8], full: &[u8]) -> Result<String, SourceError> {
    policy_path(name).map_err(|why| SourceError::BadName {
        path: escaped(full),
        why,
    })
}

fn read_file(path: &Path, relative: String, size: u64) -> Result<SourceFile, SourceError> {
    if size > MAX_FILE_SIZE {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_FILE_SIZE,
        });
    }
    // Never more than one byte over the limit, whatever the file grew to since it was sized.
    let mut bytes = Vec::with_capacity(size.min(MAX_FILE_SIZE) as usize);
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_FILE_SIZE + 1), &mut bytes)
        })
        .map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    // The size can change between stat and read; the limit holds for what was actually read.
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_FILE_SIZE,
        });
    }
    let content = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 {
        path: PathBuf::from(path),
    })?;
    Ok(SourceFile {
        path: relative,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn paths(docs: &Documents) -> Vec<&str> {
        docs.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn reads_yaml_files_at_any_depth_sorted_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "z.yaml", b"z");
        write(dir.path(), "a/b/c/deep.yml", b"deep");
        write(dir.path(), "a/first.yaml", b"first");
        write(dir.path(), "README.md", b"not policy");
        write(dir.path(), "a/notes.txt", b"not policy");
        write(dir.path(), ".git/config.yaml", b"hidden");
        write(dir.path(), "a/.hidden.yaml", b"hidden");
        let docs = read_dir(dir.path()).unwrap();
        assert_eq!(paths(&docs), ["a/b/c/deep.yml", "a/first.yaml", "z.yaml"]);
        assert_eq!(docs.files[1].content, "first");
        assert_eq!(docs.revision.source, dir.path().display().to_string());
        assert!(docs.revision.id.starts_with("dir:"), "{}", docs.revision.id);
    }

    #[test]
    fn a_single_file_is_read_whatever_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "policy.txt", b"kind: L4Policy");
        let docs = read_dir(&dir.path().join("policy.txt")).unwrap();
        assert_eq!(paths(&docs), ["policy.txt"]);
    }

    #[test]
    fn revision_id_is_stable_and_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", b"one");
        let first = read_dir(dir.path()).unwrap().revision.id;
        assert_eq!(first, read_dir(dir.path()).unwrap().revision.id);
        write(dir.path(), "a.yaml", b"two");
        assert_ne!(first, read_dir(dir.path()).unwrap().revision.id);
    }

    #[test]
    fn a_missing_path_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_dir(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bad.yaml", &[0xff, 0xfe, 0x00]);
        let err = read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, SourceError::NotUtf8 { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }

    #[test]
    fn a_policy_file_named_with_a_control_character_or_not_utf8_is_refused_escaped() {
        use std::os::unix::ffi::OsStrExt;
        for (name, shown) in [
            (&b"a\nforged: line.yaml"[..], "a\\nforged: line.yaml"),
            (b"a\x1b[2Jb.yaml", "a\\u{1b}[2Jb.yaml"),
            (b"caf\xe9.yaml", "caf\\xe9.yaml"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "ok.yaml", b"ok");
            let sub = dir.path().join("sub");
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(std::ffi::OsStr::from_bytes(name)), b"x").unwrap();
            let err = read_dir(dir.path()).unwrap_err();
            assert!(matches!(err, SourceError::BadName { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{}/sub/{shown}: ", dir.path().display())),
                "{text}"
            );
            assert!(!text.contains('\n') && !text.contains('\x1b'), "{text:?}");
        }
        // A name that is not policy is not read, so not refused either.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ok.yaml", b"ok");
        fs::write(dir.path().join("notes\n.txt"), b"x").unwrap();
        assert_eq!(paths(&read_dir(dir.path()).unwrap()), ["ok.yaml"]);
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yaml");
        fs::File::create(&path)
            .unwrap()
            .set_len(MAX_FILE_SIZE + 1)
            .unwrap();
        let err = read_dir(dir.path()).unwrap_err();
        match &err {
            SourceError::TooLarge { size, limit, .. } => {
                assert_eq!((*size, *limit), (MAX_FILE_SIZE + 1, MAX_FILE_SIZE))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("huge.yaml"), "{err}");
    }

    #[test]
    fn a_revision_over_the_total_limit_is_refused_before_any_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // Five sparse files just under the per-file limit: 80 MiB together, over 64 MiB.
        for i in 0..5 {
            fs::File::create(dir.path().join(format!("p{i}.yaml")))
                .unwrap()
                .set_len(MAX_FILE_SIZE - 1)
                .unwrap();
        }
        // Not UTF-8: reading any file would be refused for that instead.
        fs::write(dir.path().join("a.yaml"), [0xff, 0xfe]).unwrap();
        let err = read_dir(dir.path()).unwrap_err();
        match &err {
            SourceError::RevisionTooLarge { size, limit, .. } => {
                assert_eq!(*limit, MAX_REVISION_SIZE);
                assert_eq!(*size, 5 * (MAX_FILE_SIZE - 1) + 2);
            }
            other => panic!("expected RevisionTooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("one revision"), "{err}");
    }
}
