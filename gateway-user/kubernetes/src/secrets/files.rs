//! Writes the referenced Secrets and ConfigMaps under `--tls-secrets-dir` in the layout the
//! proxy reads in every mode (`NAMESPACE/NAME/FILE`), and removes what is no longer referenced.
//!
//! - Every directory the agent makes holds a [`MARKER`] file; only such directories are ever
//!   changed or removed, so a user's files in the same tree are never touched (a directory of
//!   a referenced object that exists without the marker is an error, not overwritten).
//! - A new object directory is filled under a temporary name and renamed into place; a file of
//!   an existing one is written to a temporary file in the same directory and renamed over
//!   the old one. Readers see the old file or the new one, never a part of either. Files are
//!   written in the order given (a key before its certificate): the proxy's reload reads
//!   both at each check, and a check between the two renames sees a new key with the old
//!   certificate, which fails and is retried at the next check without being reported.
//! - Files are 0600 and directories 0700; a file whose content is unchanged is not written
//!   (its stamp stays, so the proxy does not reload it).
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The file that marks a directory as written by the agent.
pub const MARKER: &str = ".tollgate-managed";
/// Prefix of temporary files and directories (never a DNS name: those start with a letter or
/// digit).
const TEMP: &str = ".tollgate-tmp-";
/// Every file name the agent writes in an object's directory.
pub const FILES: [&str; 5] = ["tls.crt", "tls.key", "ca.crt", "keys", "htpasswd"];

/// (namespace, name) of an object's directory.
pub type DirKey = (String, String);
/// The files of each object directory, in the order they are written.
pub type Wanted = BTreeMap<DirKey, Vec<(&'static str, Vec<u8>)>>;

fn error(path: &Path, what: &str, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn mkdir(path: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| error(path, "create the directory", e))?;
    // The mode of `create` is filtered by the umask: set it as meant.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| error(path, "set the mode of", e))
}

fn write_file(path: &Path, content: &[u8]) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| error(path, "create", e))?;
    f.write_all(content).map_err(|e| error(path, "write", e))
}

fn temp_name(base: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP}{base}-{}-{n}", std::process::id())
}

fn managed(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// Makes `dir` (a directory under the root) as a managed one, atomically: filled under a
/// temporary name, then renamed.
fn create_managed(dir: &Path, files: &[(&'static str, Vec<u8>)]) -> Result<(), String> {
    let parent = dir.parent().expect("an object directory has a parent");
    let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    let temp = parent.join(temp_name(base));
    let filled = (|| {
        mkdir(&temp)?;
        write_file(&temp.join(MARKER), b"")?;
        for (name, content) in files {
            write_file(&temp.join(name), content)?;
        }
        fs::rename(&temp, dir).map_err(|e| error(dir, "rename into place", e))
    })();
    if filled.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    filled
}

/// Replaces one file of a managed directory, atomically; nothing when its content is the same.
fn replace_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    if fs::read(&path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let temp = dir.join(temp_name(name));
    let written = write_file(&temp, content)
        .and_then(|()| fs::rename(&temp, &path).map_err(|e| error(&path, "rename into place", e)));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Writes every directory of `wanted` under `root`. Stops at the first failure, naming it.
pub fn write(root: &Path, wanted: &Wanted) -> Result<(), String> {
    if !root.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| error(root, "create the secrets directory", e))?;
    }
    for ((namespace, name), files) in wanted {
        let ns_dir = root.join(namespace);
        if !ns_dir.exists() {
            create_managed(&ns_dir, &[])?;
        }
        let dir = ns_dir.join(name);
        if !dir.exists() {
            create_managed(&dir, files)?;
            continue;
        }
        if !managed(&dir) {
            return Err(format!(
                "{} exists and was not written by the agent (no {MARKER} file in it): the agent does not overwrite it; remove it, or point --tls-secrets-dir at a directory of the agent's own",
                dir.display()
            ));
        }
        for (file, content) in files {
            replace_file(&dir, file, content)?;
        }
        for file in FILES {
            if !files.iter().any(|(f, _)| *f == file) {
                match fs::remove_file(dir.join(file)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(error(&dir.join(file), "remove", e))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Removes the managed object directories under `root` not in `keep` (and managed namespace
/// directories left empty), and temporary ones a crash left. Returns what could not be
/// removed (logged by the caller; retried at the next revision).
pub fn remove_unreferenced(root: &Path, keep: &BTreeSet<DirKey>) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(namespaces) = fs::read_dir(root) else {
        return problems;
    };
    for ns_entry in namespaces.flatten() {
        let ns_dir = ns_entry.path();
        let Some(namespace) = ns_entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !ns_entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if namespace.starts_with(TEMP) {
            if managed(&ns_dir) {
                remove_dir(&ns_dir, &mut problems);
            }
            continue;
        }
        let Ok(objects) = fs::read_dir(&ns_dir) else {
            continue;
        };
        for entry in objects.flatten() {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || !managed(&dir) {
                continue;
            }
            if name.starts_with(TEMP) || !keep.contains(&(namespace.clone(), name)) {
                remove_dir(&dir, &mut problems);
            }
        }
        if managed(&ns_dir) {
            let only_marker = fs::read_dir(&ns_dir)
                .map(|d| d.flatten().all(|e| e.file_name() == MARKER))
                .unwrap_or(false);
            if only_marker {
                remove_dir(&ns_dir, &mut problems);
            }
        }
    }
    problems
}

/// Removes a managed directory: the files the agent writes, its temporary files and the
/// marker, then the directory itself (which fails, and is reported, if anything else is in
/// it: that is not the agent's to delete).
fn remove_dir(dir: &Path, problems: &mut Vec<String>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = FILES.contains(&name.as_str()) || name.starts_with(TEMP);
            if ours && e.file_type().is_ok_and(|t| t.is_file()) {
                if let Err(err) = fs::remove_file(e.path()) {
                    problems.push(error(&e.path(), "remove", err));
                }
            }
        }
    }
    // The marker last: a directory left half-removed is still known as the agent's.
    let _ = fs::remove_file(dir.join(MARKER));
    if let Err(e) = fs::remove_dir(dir) {
        problems.push(error(dir, "remove the directory", e));
        // Keep it marked, so that a later pass may finish the job.
        let _ = write_file(&dir.join(MARKER), b"");
    }
}

/// The directory of one object.
pub fn object_dir(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join(namespace).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    fn key(ns: &str, name: &str) -> DirKey {
        (ns.into(), name.into())
    }

    #[test]
    fn writes_private_files_and_replaces_only_what_changed() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().join("secrets");
        let mut wanted = Wanted::new();
        wanted.insert(
            key("ns", "cert"),
            vec![
                ("tls.key", b"KEY1".to_vec()),
                ("tls.crt", b"CERT1".to_vec()),
            ],
        );
        write(&root, &wanted).unwrap();
        let dir = object_dir(&root, "ns", "cert");
        assert_eq!(fs::read(dir.join("tls.crt")).unwrap(), b"CERT1");
        assert_eq!(mode(&dir.join("tls.crt")), 0o600);
        assert_eq!(mode(&dir.join("tls.key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("ns")), 0o700);
        assert!(managed(&dir) && managed(&root.join("ns")));
        let key_inode = fs::metadata(dir.join("tls.key")).unwrap().ino();

        // The certificate changes, the key does not; and the object gains a file it needs.
        wanted.insert(
            key("ns", "cert"),
            vec![
                ("tls.key", b"KEY1".to_vec()),
                ("tls.crt", b"CERT2".to_vec()),
                ("keys", b"k".to_vec()),
            ],
        );
        write(&root, &wanted).unwrap();
        assert_eq!(fs::read(dir.join("tls.crt")).unwrap(), b"CERT2");
        assert_eq!(fs::metadata(dir.join("tls.key")).unwrap().ino(), key_inode);
        assert_eq!(fs::read(dir.join("keys")).unwrap(), b"k");
        // A file no longer needed goes; no temporary file is left.
        wanted.insert(key("ns", "cert"), vec![("keys", b"k".to_vec())]);
        write(&root, &wanted).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [MARKER, "keys"]);
    }

    #[test]
    fn never_touches_a_directory_the_agent_did_not_write() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let user = object_dir(root, "ns", "mine");
        fs::create_dir_all(&user).unwrap();
        fs::write(user.join("tls.crt"), b"USER").unwrap();
        let mut wanted = Wanted::new();
        wanted.insert(key("ns", "mine"), vec![("tls.crt", b"NEW".to_vec())]);
        let e = write(root, &wanted).unwrap_err();
        assert!(e.contains("was not written by the agent"), "{e}");
        assert_eq!(fs::read(user.join("tls.crt")).unwrap(), b"USER");
        // Nor is it removed when unreferenced; the user's namespace directory stays too.
        assert!(remove_unreferenced(root, &BTreeSet::new()).is_empty());
        assert_eq!(fs::read(user.join("tls.crt")).unwrap(), b"USER");
    }

    #[test]
    fn removes_unreferenced_managed_directories_and_empty_managed_namespaces() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut wanted = Wanted::new();
        wanted.insert(key("a", "one"), vec![("keys", b"1".to_vec())]);
        wanted.insert(key("a", "two"), vec![("keys", b"2".to_vec())]);
        wanted.insert(key("b", "three"), vec![("htpasswd", b"3".to_vec())]);
        write(root, &wanted).unwrap();
        // A user's file in a managed object directory keeps it (and the file) in place.
        fs::write(object_dir(root, "a", "two").join("notes"), b"mine").unwrap();
        let keep = BTreeSet::from([key("a", "one")]);
        let problems = remove_unreferenced(root, &keep);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(object_dir(root, "a", "one").join("keys").exists());
        assert!(!object_dir(root, "a", "two").join("keys").exists());
        assert!(object_dir(root, "a", "two").join("notes").exists());
        assert!(managed(&object_dir(root, "a", "two")));
        assert!(
            !root.join("b").exists(),
            "an emptied managed namespace goes"
        );
        // Once the user's file is gone, the directory goes at the next pass.
        fs::remove_file(object_dir(root, "a", "two").join("notes")).unwrap();
        assert!(remove_unreferenced(root, &keep).is_empty());
        assert!(!object_dir(root, "a", "two").exists());
        assert!(remove_unreferenced(root, &BTreeSet::new()).is_empty());
        assert_eq!(fs::read_dir(root).unwrap().count(), 0);
    }
}
