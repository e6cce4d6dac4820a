//! The policy files of one commit: what [`super::GitSource::read`] takes from its tree.
//!
//! The same files as the directory source ([`crate::dir`]) reads from a checkout of the commit,
//! so that `tollgate validate` on a checkout, `tollgate diff --repo` and the agent agree: every
//! `*.yaml`/`*.yml` that is a regular file (mode 100644 or 100755, and git's deprecated 100664,
//! which a checkout also writes as a regular file), at any depth; hidden names (`.github`,
//! `.x.yaml`) are skipped; so are symbolic links (mode 120000: the target text of a link named
//! `x.yaml` is not policy, and a checkout has a link there, which the directory source does not
//! follow), submodules (160000, a commit of another repository) and any other mode.
//!
//! A blob is inflated only after its size, read from the object's header (libgit2 inflates
//! the first bytes of a loose object, or reads a packed object's header, not the content), fits
//! [`MAX_FILE_SIZE`] and the sizes of all the files of the revision together fit the configured
//! total. So a commit with a 2 GiB blob that compresses to a few MB costs a few kB to refuse,
//! not 2 GiB of memory. The walk itself is bounded too: trees are sized before they are read,
//! and at most [`MAX_TREE_ENTRIES`] entries are looked at (a tree can name the same subtree
//! many times, and a few kB of objects can then describe billions of paths).
use std::collections::HashSet;

use git2::{ObjectType, Oid, Repository};

use crate::{escaped, policy_path, SourceFile, MAX_FILE_SIZE};

/// The most entries of trees one revision's walk looks at. A policy directory has some
/// hundreds; a large monorepo read whole (`--path ""`) some hundred thousand.
pub const MAX_TREE_ENTRIES: usize = 1_000_000;

/// The largest tree object read (about 400,000 entries).
pub const MAX_TREE_SIZE: u64 = 16 * 1024 * 1024;

/// Why the files of a tree could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TreeError {
    /// One file (or the tree itself, `path` ""): what is wrong with it.
    File {
        /// The path, relative to the policy directory, escaped for display.
        path: String,
        /// Why.
        why: String,
    },
    /// The files together are larger than the limit.
    Total {
        /// What they add up to when the limit is passed (the files counted so far).
        total: u64,
    },
    /// The walk looked at more than [`MAX_TREE_ENTRIES`] entries.
    Entries,
}

/// A policy file found in the tree, sized but not read.
struct Found {
    path: String,
    oid: Oid,
    size: u64,
}

/// The policy files under `root` (a tree of `repo`), sorted by path; refuses a file over
/// [`MAX_FILE_SIZE`] or a revision whose files add up to more than `max_total` bytes before
/// inflating any of them.
pub(super) fn policy_files(
    repo: &Repository,
    root: Oid,
    max_total: u64,
) -> Result<Vec<SourceFile>, TreeError> {
    let odb = repo.odb().map_err(|e| file_error("", e.message()))?;
    let mut found: Vec<Found> = Vec::new();
    let mut total: u64 = 0;
    let mut entries: usize = 0;
    // Trees still to walk: the path of the directory (bytes, "" or ending in '/'), its tree.
    // A stack rather than recursion: a deep tree must not overflow the agent's stack.
    let mut pending: Vec<(Vec<u8>, Oid)> = vec![(Vec::new(), root)];
    // Trees already sized: a subtree named many times is checked once.
    let mut sized: HashSet<Oid> = HashSet::new();
    while let Some((dir, oid)) = pending.pop() {
        let tree = if sized.contains(&oid) {
            repo.find_tree(oid)
                .map_err(|e| file_error(&escaped(&dir), e.message()))?
        } else {
            let tree = read_tree(repo, &odb, oid, dir.strip_suffix(b"/").unwrap_or(&dir))?;
            sized.insert(oid);
            tree
        };
        for entry in tree.iter() {
            entries += 1;
            if entries > MAX_TREE_ENTRIES {
                return Err(TreeError::Entries);
            }
            let name = entry.name_bytes();
            // Hidden, as in the directory source.
            if name.starts_with(b".") {
                continue;
            }
            let path = || [&dir[..], name].concat();
            match entry.filemode_raw() {
                0o040000 => {
                    let mut path = path();
                    path.push(b'/');
                    pending.push((path, entry.id()));
                }
                0o100644 | 0o100755 | 0o100664 if is_yaml(name) => {
                    let path = checked_path(&path(), name)?;
                    let (size, kind) = odb
                        .read_header(entry.id())
                        .map_err(|e| file_error(&path, e.message()))?;
                    if kind != ObjectType::Blob {
                        return Err(file_error(
                            &path,
                            &format!("a file entry that names a {kind}, not a blob"),
                        ));
                    }
                    let size = size as u64;
                    if size > MAX_FILE_SIZE {
                        return Err(file_error(
                            &path,
                            &format!("{size} bytes, more than the {MAX_FILE_SIZE} a policy file may have; not read"),
                        ));
                    }
                    total = total.saturating_add(size);
                    if total > max_total {
                        return Err(TreeError::Total { total });
                    }
                    found.push(Found {
                        path,
                        oid: entry.id(),
                        size,
                    });
                }
                // Symbolic links (120000), submodules (160000), files that are not policy, and
                // any other mode: not read, as the directory source does not read them.
                _ => {}
            }
        }
    }
    let mut files = Vec::with_capacity(found.len());
    for Found { path, oid, size } in found {
        let blob = repo
            .find_blob(oid)
            .map_err(|e| file_error(&path, e.message()))?;
        // libgit2 checks that an object inflates to the size its header gives.
        if blob.size() as u64 != size {
            return Err(file_error(
                &path,
                &format!(
                    "the object holds {} bytes, its header said {size}",
                    blob.size()
                ),
            ));
        }
        let content = std::str::from_utf8(blob.content())
            .map_err(|_| file_error(&path, "not UTF-8 text"))?
            .to_owned();
        files.push(SourceFile { path, content });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The tree of the directory `path` ("" = `top` itself, else '/'-separated) under the tree
/// `top`, or `None` when there is no such directory. Each tree on the way is sized before it is
/// read; a symbolic link or a submodule on the way is no directory, as in a checkout read by
/// the directory source (which does not follow links).
pub(super) fn subtree(repo: &Repository, top: Oid, path: &str) -> Result<Option<Oid>, TreeError> {
    let odb = repo.odb().map_err(|e| file_error("", e.message()))?;
    let mut oid = top;
    let mut walked = String::new();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        let tree = read_tree(repo, &odb, oid, walked.as_bytes())?;
        let Some(entry) = tree.get_name(name) else {
            return Ok(None);
        };
        if entry.filemode_raw() != 0o040000 {
            return Ok(None);
        }
        oid = entry.id();
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(name);
    }
    Ok(Some(oid))
}

/// The tree `oid` (the directory `dir`, for errors), after checking from its header that it is
/// a tree of at most [`MAX_TREE_SIZE`] bytes.
fn read_tree<'r>(
    repo: &'r Repository,
    odb: &git2::Odb<'_>,
    oid: Oid,
    dir: &[u8],
) -> Result<git2::Tree<'r>, TreeError> {
    let shown = || escaped(dir);
    let (size, kind) = odb
        .read_header(oid)
        .map_err(|e| file_error(&shown(), e.message()))?;
    if kind != ObjectType::Tree {
        return Err(file_error(
            &shown(),
            &format!("a directory entry that names a {kind}, not a tree"),
        ));
    }
    if size as u64 > MAX_TREE_SIZE {
        return Err(file_error(
            &shown(),
            &format!("a tree object of {size} bytes, more than the {MAX_TREE_SIZE} read"),
        ));
    }
    repo.find_tree(oid)
        .map_err(|e| file_error(&shown(), e.message()))
}

fn is_yaml(name: &[u8]) -> bool {
    name.ends_with(b".yaml") || name.ends_with(b".yml")
}

/// The path of a policy file, when it is one the agent can name in reports: UTF-8, no control
/// character, and no `/` inside one name (a tree can hold such a name; a checkout cannot).
fn checked_path(path: &[u8], name: &[u8]) -> Result<String, TreeError> {
    if name.contains(&b'/') {
        return Err(file_error(
            &escaped(path),
            "a name with a '/' in it (a corrupt tree); refused",
        ));
    }
    policy_path(path).map_err(|why| file_error(&escaped(path), why))
}

fn file_error(path: &str, why: &str) -> TreeError {
    TreeError::File {
        path: path.to_owned(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GitError, GitOptions, GitSource};
    use super::*;
    use std::io::Write as _;
    use std::path::Path;

    const POLICY: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec:\n  rules:\n    - { name: scanners, action: deny, from: [203.0.113.0/24] }\n";

    const FILE: u32 = 0o100644;
    const EXECUTABLE: u32 = 0o100755;
    const GROUP_WRITABLE: u32 = 0o100664;
    const LINK: u32 = 0o120000;
    const SUBMODULE: u32 = 0o160000;
    const DIR: u32 = 0o040000;

    fn blob(repo: &Repository, content: &str) -> Oid {
        repo.blob(content.as_bytes()).unwrap()
    }

    /// A tree object written as is (any mode, any name), entries in git's order.
    fn raw_tree(repo: &Repository, entries: &[(&[u8], u32, Oid)]) -> Oid {
        let mut sorted = entries.to_vec();
        // Git's order: by name, a directory's name compared as if it ended in '/'.
        let key = |(name, mode, _): &(&[u8], u32, Oid)| {
            let mut k = name.to_vec();
            if *mode == DIR {
                k.push(b'/');
            }
            k
        };
        sorted.sort_by_key(key);
        let mut data = Vec::new();
        for (name, mode, oid) in sorted {
            data.extend_from_slice(format!("{mode:o} ").as_bytes());
            data.extend_from_slice(name);
            data.push(0);
            data.extend_from_slice(oid.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &data).unwrap()
    }

    /// Commits `tree` on HEAD; returns the commit.
    fn commit(repo: &Repository, tree: Oid) -> Oid {
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "policy", &tree, &parents)
            .unwrap()
    }

    fn read(dir: &Path, commit: Oid, options: &GitOptions) -> Result<Vec<SourceFile>, GitError> {
        GitSource::open_local(dir, "", options)
            .unwrap()
            .read(commit)
            .map(|d| d.files)
    }

    fn paths(files: &[SourceFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn only_regular_files_are_read_and_links_submodules_and_other_modes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let policy = blob(&repo, POLICY);
        // What a symbolic link's blob holds is its target; here a target that parses as
        // policy, which must not be enforced.
        let link_target = blob(&repo, POLICY);
        let inner = raw_tree(&repo, &[(b"inner.yaml", FILE, policy)]);
        let hidden = raw_tree(&repo, &[(b"x.yaml", FILE, policy)]);
        let submodule_commit = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let top = raw_tree(
            &repo,
            &[
                (b"edge.yaml", FILE, policy),
                (b"run.yml", EXECUTABLE, policy),
                (b"legacy.yaml", GROUP_WRITABLE, policy),
                (b"link.yaml", LINK, link_target),
                (b"vendor.yaml", SUBMODULE, submodule_commit),
                (b"vendor", SUBMODULE, submodule_commit),
                (b"private.yaml", 0o100600, policy),
                (b"README.md", FILE, policy),
                (b"sub", DIR, inner),
                (b".github", DIR, hidden),
                (b".x.yaml", FILE, policy),
            ],
        );
        let c = commit(&repo, top);
        let files = read(dir.path(), c, &GitOptions::default()).unwrap();
        assert_eq!(
            paths(&files),
            ["edge.yaml", "legacy.yaml", "run.yml", "sub/inner.yaml"]
        );
        assert!(files.iter().all(|f| f.content == POLICY));

        // `--path` through a symbolic link or a submodule names no directory.
        for path in ["link.yaml", "vendor", "sub/inner.yaml", "nowhere"] {
            let e = GitSource::open_local(dir.path(), path, &GitOptions::default())
                .unwrap()
                .read(c)
                .unwrap_err();
            assert!(matches!(e, GitError::NoPath { .. }), "{path}: {e}");
        }
        let sub = GitSource::open_local(dir.path(), "sub/", &GitOptions::default())
            .unwrap()
            .read(c)
            .unwrap();
        assert_eq!(paths(&sub.files), ["inner.yaml"]);
    }

    /// A work tree written on disk, committed with git2; the directory source reading it and
    /// the Git source reading the commit give the same files.
    #[test]
    fn a_commit_and_its_checkout_give_the_same_files() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path();
        let repo = Repository::init(work).unwrap();
        std::fs::create_dir_all(work.join("edge")).unwrap();
        std::fs::write(work.join("edge/a.yaml"), POLICY).unwrap();
        std::fs::write(work.join("run.yaml"), POLICY).unwrap();
        std::fs::set_permissions(
            work.join("run.yaml"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(work.join("target.txt"), POLICY).unwrap();
        symlink("target.txt", work.join("link.yaml")).unwrap();
        symlink("edge", work.join("linked-dir")).unwrap();
        std::fs::create_dir_all(work.join(".github")).unwrap();
        std::fs::write(work.join(".github/ci.yaml"), "on: push\n").unwrap();
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        let tree = index.write_tree().unwrap();
        // The index recorded what the work tree has: a link, an executable file.
        let t = repo.find_tree(tree).unwrap();
        assert_eq!(t.get_name("link.yaml").unwrap().filemode_raw(), LINK as i32);
        assert_eq!(
            t.get_name("run.yaml").unwrap().filemode_raw(),
            EXECUTABLE as i32
        );
        let c = commit(&repo, tree);

        let from_git = read(work, c, &GitOptions::default()).unwrap();
        let from_dir = crate::dir::read_dir(work).unwrap().files;
        assert_eq!(paths(&from_git), ["edge/a.yaml", "run.yaml"]);
        assert_eq!(from_git, from_dir);
    }

    #[test]
    fn names_with_control_characters_or_not_utf8_are_refused_naming_the_path_escaped() {
        for (name, shown) in [
            (&b"a\nforged: line.yaml"[..], "sub/a\\nforged: line.yaml"),
            (b"a\x1b[2J.yaml", "sub/a\\u{1b}[2J.yaml"),
            (b"caf\xe9.yaml", "sub/caf\\xe9.yaml"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path()).unwrap();
            let policy = blob(&repo, POLICY);
            let sub = raw_tree(&repo, &[(name, FILE, policy)]);
            let top = raw_tree(&repo, &[(b"edge.yaml", FILE, policy), (b"sub", DIR, sub)]);
            let c = commit(&repo, top);
            let e = read(dir.path(), c, &GitOptions::default()).unwrap_err();
            assert!(
                matches!(&e, GitError::BadFile { path, .. } if path == shown),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(text.contains(shown), "{text}");
            assert!(text.contains("refused"), "{text}");
            assert!(!text.contains(['\n', '\x1b']), "{text:?}");
        }
        // A name that is not policy is not read, so not refused either.
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let policy = blob(&repo, POLICY);
        let top = raw_tree(
            &repo,
            &[(b"edge.yaml", FILE, policy), (b"notes\n.txt", FILE, policy)],
        );
        let c = commit(&repo, top);
        assert_eq!(
            paths(&read(dir.path(), c, &GitOptions::default()).unwrap()),
            ["edge.yaml"]
        );
    }

    /// The peak resident memory of this process, in bytes.
    fn peak_rss() -> u64 {
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct it is given.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        assert_eq!(rc, 0, "getrusage");
        // Linux gives kilobytes.
        usage.ru_maxrss as u64 * 1024
    }

    #[test]
    fn a_blob_over_the_limit_is_refused_from_its_header_without_being_inflated() {
        const BIG: usize = 128 << 20;
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        // A loose object of 128 MiB of zeros, written in pieces (it compresses to about
        // 130 kB): this process never holds it whole.
        let odb = repo.odb().unwrap();
        let mut writer = odb.writer(BIG, ObjectType::Blob).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..BIG / chunk.len() {
            writer.write_all(&chunk).unwrap();
        }
        let big = writer.finalize().unwrap();
        drop(writer);
        let policy = blob(&repo, POLICY);
        let top = raw_tree(
            &repo,
            &[(b"edge.yaml", FILE, policy), (b"big.yaml", FILE, big)],
        );
        let c = commit(&repo, top);

        let before = peak_rss();
        let e = read(dir.path(), c, &GitOptions::default()).unwrap_err();
        let grew = peak_rss().saturating_sub(before);
        assert!(
            matches!(&e, GitError::BadFile { path, .. } if path == "big.yaml"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("134217728 bytes, more than the 16777216 a policy file may have"),
            "{e}"
        );
        // Inflating it would have taken 128 MiB at once.
        assert!(
            grew < 32 << 20,
            "the peak RSS grew by {grew} bytes reading a commit with a {BIG}-byte blob"
        );
    }

    #[test]
    fn files_that_are_too_big_together_are_refused_by_the_configured_total() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let a = blob(&repo, &format!("{POLICY}# {}\n", "a".repeat(400)));
        let b = blob(&repo, &format!("{POLICY}# {}\n", "b".repeat(400)));
        let size = (POLICY.len() + 403) as u64;
        let top = raw_tree(&repo, &[(b"a.yaml", FILE, a), (b"b.yaml", FILE, b)]);
        let c = commit(&repo, top);
        let tight = GitOptions {
            max_policy_size: 2 * size - 1,
            ..GitOptions::default()
        };
        let e = read(dir.path(), c, &tight).unwrap_err();
        assert!(
            matches!(e, GitError::PolicyTooLarge { total, limit, .. } if total == 2 * size && limit == 2 * size - 1),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("--git-max-policy-size"), "{text}");
        assert!(text.contains(&c.to_string()), "{text}");
        let exact = GitOptions {
            max_policy_size: 2 * size,
            ..GitOptions::default()
        };
        assert_eq!(read(dir.path(), c, &exact).unwrap().len(), 2);
        // The default total is the documented one.
        assert_eq!(GitOptions::default().max_policy_size, 64 << 20);
    }

    #[test]
    fn a_tree_that_names_the_same_subtree_over_and_over_is_not_walked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let leaf = blob(&repo, "not policy\n");
        // 50^4 = 6,250,000 paths from a few kB of trees.
        let mut tree = raw_tree(&repo, &[(b"f.txt", FILE, leaf)]);
        for _ in 0..4 {
            let names: Vec<String> = (0..50).map(|i| format!("d{i:02}")).collect();
            let entries: Vec<(&[u8], u32, Oid)> =
                names.iter().map(|n| (n.as_bytes(), DIR, tree)).collect();
            tree = raw_tree(&repo, &entries);
        }
        let c = commit(&repo, tree);
        let e = read(dir.path(), c, &GitOptions::default()).unwrap_err();
        assert!(matches!(e, GitError::TooManyEntries { .. }), "{e:?}");
        assert!(e.to_string().contains("1000000 entries"), "{e}");
    }
}
