//! The Git source: a bare mirror of the repository in the state directory, fetched on every
//! pass; the policy is the tree of the commit the configured ref points to (under `--path`), and
//! the revision is that commit's id. The tree is read again only when the commit changes.
//!
//! This first version speaks what needs no credentials: `file://` and `git://` (git daemon),
//! through libgit2 (the git2 crate). https and ssh, authentication, the webhook, history rules
//! and signed commits are the rest of issue 3.
use std::path::{Path, PathBuf};

use git2::{FetchOptions, Oid, Repository};

use super::{Documents, Revision, SourceFile, MAX_FILE_SIZE};

/// Why a Git source could not give a revision.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed (unreachable host, unknown repository, ...).
    #[error("git: {what} ({url}): {source}")]
    Git {
        /// What was being done.
        what: String,
        /// The repository.
        url: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The ref moved backwards or sideways.
    #[error("git: {reference} of {url} moved from {applied} to {fetched}, which does not descend from it (a force-push back or sideways); refused: revert with a new commit, or run with --allow-ref-rewind")]
    Rewind {
        /// The ref.
        reference: String,
        /// The repository.
        url: String,
        /// The commit in force.
        applied: String,
        /// The commit fetched.
        fetched: String,
    },
    /// A transport this version does not speak yet.
    #[error("git: {url}: only file:// and git:// sources are supported so far (https and ssh come with authentication)")]
    Unsupported {
        /// The URL.
        url: String,
    },
    /// The ref names no branch, tag or commit.
    #[error("git: {reference:?} is neither a branch, a tag nor a commit of {url}")]
    UnknownRef {
        /// The ref.
        reference: String,
        /// The repository.
        url: String,
    },
    /// `--path` is not a directory of the commit.
    #[error("git: commit {commit} of {url} has no directory {path:?}")]
    NoPath {
        /// The commit.
        commit: String,
        /// The repository.
        url: String,
        /// The path.
        path: String,
    },
    /// A policy file is not text, or too big.
    #[error("git: {path} in commit {commit}: {why}")]
    BadFile {
        /// The commit.
        commit: String,
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// True when `source` names a Git repository (by URL scheme) rather than a directory.
pub fn is_git_url(source: &str) -> bool {
    ["file://", "git://", "http://", "https://", "ssh://"]
        .iter()
        .any(|s| source.starts_with(s))
}

/// A Git repository followed at one ref.
pub struct GitSource {
    url: String,
    reference: String,
    path: String,
    repo: Repository,
}

impl GitSource {
    /// A source for `url` at `reference`, policies under `path` ("" = the whole tree); the
    /// mirror lives under `cache_dir`.
    pub fn open(
        url: &str,
        reference: &str,
        path: &str,
        cache_dir: &Path,
    ) -> Result<Self, GitError> {
        if !(url.starts_with("file://") || url.starts_with("git://")) {
            return Err(GitError::Unsupported {
                url: url.to_owned(),
            });
        }
        let err = |what: &str| {
            let url = url.to_owned();
            let what = what.to_owned();
            move |source| GitError::Git { what, url, source }
        };
        let dir: PathBuf = cache_dir.join(format!("{:016x}", fnv(url)));
        let repo = match Repository::open_bare(&dir) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&dir).map_err(|e| GitError::Git {
                    what: format!("create {}", dir.display()),
                    url: url.to_owned(),
                    source: git2::Error::from_str(&e.to_string()),
                })?;
                Repository::init_bare(&dir).map_err(err("create the local mirror"))?
            }
        };
        Ok(GitSource {
            url: url.to_owned(),
            reference: reference.to_owned(),
            path: path.trim_matches('/').to_owned(),
            repo,
        })
    }

    /// An existing local repository (bare or with a work tree), read in place: no mirror, no
    /// fetch. For `tollgate diff --repo PATH`, where any revision of it may be named.
    pub fn open_local(dir: &Path, path: &str) -> Result<Self, GitError> {
        let url = dir.display().to_string();
        let repo = Repository::open(dir).map_err(|source| GitError::Git {
            what: "open the repository".to_owned(),
            url: url.clone(),
            source,
        })?;
        Ok(GitSource {
            url,
            reference: "HEAD".to_owned(),
            path: path.trim_matches('/').to_owned(),
            repo,
        })
    }

    /// The commit `rev` names, as `git rev-parse` reads it (a branch, a tag, a commit id,
    /// `main~1`, `v2^{commit}`, ...); in a mirror, branches are also looked up among the
    /// fetched ones (`main` = `origin/main`).
    pub fn rev_parse(&self, rev: &str) -> Result<Oid, GitError> {
        [rev.to_owned(), format!("origin/{rev}")]
            .iter()
            .find_map(|r| {
                self.repo
                    .revparse_single(r)
                    .and_then(|o| o.peel_to_commit())
                    .ok()
            })
            .map(|c| c.id())
            .ok_or_else(|| GitError::UnknownRef {
                reference: rev.to_owned(),
                url: self.url.clone(),
            })
    }

    /// The repository (the mirror, or the local repository itself), for checks that read
    /// commits beyond their trees (`--verify-commits`).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Where the policy comes from, for reports.
    pub fn describe(&self) -> String {
        if self.path.is_empty() {
            format!("{}@{}", self.url, self.reference)
        } else {
            format!("{}@{}:{}", self.url, self.reference, self.path)
        }
    }

    /// Fetches and returns the commit the ref points to.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let err = |what: &'static str| {
            let url = self.url.clone();
            move |source| GitError::Git {
                what: what.to_owned(),
                url,
                source,
            }
        };
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(err("open the remote"))?;
        let mut options = FetchOptions::new();
        options.download_tags(git2::AutotagOption::All);
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut options),
                None,
            )
            .map_err(err("fetch"))?;
        self.resolve()
    }

    /// Refuses `fetched` unless it is `applied` or descends from it: history only moves forward
    /// (a rollback is a revert commit), so an older or unrelated commit is not applied silently.
    pub fn check_forward(&self, applied: &str, fetched: Oid) -> Result<(), GitError> {
        let Ok(applied_oid) = Oid::from_str(applied) else {
            return Ok(());
        };
        if applied_oid == fetched {
            return Ok(());
        }
        match self.repo.graph_descendant_of(fetched, applied_oid) {
            Ok(true) => Ok(()),
            // An applied commit the mirror does not have (another repository after a move):
            // nothing to compare with.
            _ if self.repo.find_commit(applied_oid).is_err() => Ok(()),
            _ => Err(GitError::Rewind {
                reference: self.reference.clone(),
                url: self.url.clone(),
                applied: applied.to_owned(),
                fetched: fetched.to_string(),
            }),
        }
    }

    fn resolve(&self) -> Result<Oid, GitError> {
        for name in [
            format!("refs/remotes/origin/{}", self.reference),
            format!("refs/tags/{}", self.reference),
        ] {
            if let Ok(r) = self.repo.find_reference(&name) {
                if let Ok(c) = r.peel_to_commit() {
                    return Ok(c.id());
                }
            }
        }
        if let Ok(oid) = Oid::from_str(&self.reference) {
            if let Ok(c) = self.repo.find_commit(oid) {
                return Ok(c.id());
            }
        }
        Err(GitError::UnknownRef {
            reference: self.reference.clone(),
            url: self.url.clone(),
        })
    }

    /// The policy files of `commit`: every `*.yaml`/`*.yml` under the path, at any depth.
    pub fn read(&self, commit: Oid) -> Result<Documents, GitError> {
        let git = |what: &'static str| {
            let url = self.url.clone();
            move |source| GitError::Git {
                what: what.to_owned(),
                url,
                source,
            }
        };
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git("read the commit"))?;
        let root = if self.path.is_empty() {
            tree
        } else {
            let entry = tree
                .get_path(Path::new(&self.path))
                .map_err(|_| GitError::NoPath {
                    commit: commit.to_string(),
                    url: self.url.clone(),
                    path: self.path.clone(),
                })?;
            self.repo
                .find_tree(entry.id())
                .map_err(|_| GitError::NoPath {
                    commit: commit.to_string(),
                    url: self.url.clone(),
                    path: self.path.clone(),
                })?
        };
        let mut files = Vec::new();
        let mut bad = None;
        root.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or("");
            if name.starts_with('.') {
                return git2::TreeWalkResult::Skip;
            }
            if entry.kind() != Some(git2::ObjectType::Blob)
                || !(name.ends_with(".yaml") || name.ends_with(".yml"))
            {
                return git2::TreeWalkResult::Ok;
            }
            let path = format!("{dir}{name}");
            match self.repo.find_blob(entry.id()) {
                Ok(blob) if blob.size() as u64 > MAX_FILE_SIZE => {
                    bad = Some((
                        path,
                        format!(
                            "{} bytes, more than the {MAX_FILE_SIZE} a policy file may have",
                            blob.size()
                        ),
                    ));
                    git2::TreeWalkResult::Abort
                }
                Ok(blob) => match std::str::from_utf8(blob.content()) {
                    Ok(text) => {
                        files.push(SourceFile {
                            path,
                            content: text.to_owned(),
                        });
                        git2::TreeWalkResult::Ok
                    }
                    Err(_) => {
                        bad = Some((path, "not UTF-8 text".to_owned()));
                        git2::TreeWalkResult::Abort
                    }
                },
                Err(e) => {
                    bad = Some((path, e.to_string()));
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .ok();
        if let Some((path, why)) = bad {
            return Err(GitError::BadFile {
                commit: commit.to_string(),
                path,
                why,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Documents {
            revision: Revision {
                id: commit.to_string(),
                source: self.describe(),
            },
            files,
        })
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_commit_is_read_whole_and_a_new_commit_is_a_new_revision() {
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let repo = work.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(repo.join("policies/edge")).unwrap();
        std::fs::write(repo.join("policies/edge/a.yaml"), "a: 1\n").unwrap();
        std::fs::write(repo.join("policies/README.md"), "not policy\n").unwrap();
        std::fs::write(repo.join("other.yaml"), "outside the path\n").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "one"]);
        let url = format!("file://{}", repo.display());
        let src = GitSource::open(&url, "main", "policies", cache.path()).unwrap();
        let first = src.fetch().unwrap();
        let docs = src.read(first).unwrap();
        assert_eq!(docs.revision.id, first.to_string());
        assert_eq!(
            docs.files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            vec!["edge/a.yaml"]
        );

        std::fs::write(repo.join("policies/b.yml"), "b: 2\n").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "two"]);
        git(repo, &["tag", "v2"]);
        let second = src.fetch().unwrap();
        assert_ne!(first, second);
        assert_eq!(src.read(second).unwrap().files.len(), 2);
        // A tag and a commit id are refs too.
        assert_eq!(
            GitSource::open(&url, "v2", "policies", cache.path())
                .unwrap()
                .fetch()
                .unwrap(),
            second
        );
        assert_eq!(
            GitSource::open(&url, &first.to_string(), "policies", cache.path())
                .unwrap()
                .fetch()
                .unwrap(),
            first
        );
        // Errors name what is wrong.
        let e = GitSource::open(&url, "no-such-branch", "", cache.path())
            .unwrap()
            .fetch()
            .unwrap_err();
        assert!(e.to_string().contains("no-such-branch"), "{e}");
        let e = GitSource::open(&url, "main", "nowhere", cache.path()).unwrap();
        let e = e.read(e.fetch().unwrap()).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        let e = GitSource::open("file:///nonexistent/repo", "main", "", cache.path())
            .unwrap()
            .fetch()
            .unwrap_err();
        assert!(e.to_string().contains("fetch"), "{e}");
    }
}
