//! The directory and Git implementations of [`PolicySource`] (the interface is in the model
//! crate, so that every source crate can implement it without depending on this one). Git's
//! history rules (no rewinds) and signature checks live here.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use tollgate_model::source::{Next, PolicySource, Poll, Refusal, RefusalKind};
use tollgate_model::Documents;
use tracing::info;

use crate::dir::read_dir;
use crate::git::{GitOptions, GitSource};
use crate::verify::{AllowedSigners, VerifyError};

/// Refuses a revision with no policy file: most likely a wrong path or an unmounted volume,
/// and applying it would silently remove every rule. An operator who wants no filtering
/// commits a policy without rules.
fn check_not_empty(docs: &Documents, describe: &str) -> Result<(), Refusal> {
    if docs.files.is_empty() {
        return Err(Refusal::refused(
            RefusalKind::Source,
            format!(
                "no policy files (*.yaml, *.yml) in {describe}; refusing a revision that would remove all policy"
            ),
        )
        .of(&docs.revision.id));
    }
    Ok(())
}

/// A directory of YAML files, read whole on every call (reading is cheap; the revision id is a
/// hash of every path and content, so an unchanged tree is [`Next::Unchanged`]).
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    last: Option<String>,
}

impl DirSource {
    /// The directory `root`.
    pub fn new(root: &Path) -> Self {
        DirSource {
            root: root.to_owned(),
            last: None,
        }
    }
}

impl PolicySource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn next(&mut self, _applied: Option<&str>) -> Poll {
        let started = Instant::now();
        let outcome = (|| {
            let docs = read_dir(&self.root).map_err(Refusal::unavailable)?;
            if self.last.as_deref() == Some(docs.revision.id.as_str()) {
                return Ok(Next::Unchanged);
            }
            self.last = Some(docs.revision.id.clone());
            check_not_empty(&docs, &self.describe())?;
            Ok(Next::Revision(docs))
        })();
        Poll {
            outcome,
            fetch: None,
            read: started.elapsed(),
        }
    }

    fn rescan(&mut self) {
        self.last = None;
    }
}

/// A Git repository at a ref, under a path: fetched on every call; a commit is read only when
/// it is not the one returned last time. The history rules live here: a ref that moves
/// backwards or sideways from the revision in force is refused unless `allow_rewind`, and with
/// `verify_commits` only commits signed by an allowed signer are returned.
pub struct GitPolicySource {
    git: GitSource,
    describe: String,
    allow_rewind: bool,
    verify_commits: Option<PathBuf>,
    last: Option<String>,
}

impl GitPolicySource {
    /// Opens (or creates) the mirror under `mirror_dir` for `url` at `reference`, policy under
    /// `path` (`""`: the whole tree).
    pub fn open(
        url: &str,
        reference: &str,
        path: &str,
        options: &GitOptions,
        mirror_dir: &Path,
        allow_rewind: bool,
        verify_commits: Option<PathBuf>,
    ) -> Result<Self, crate::git::GitError> {
        let git = GitSource::open(url, reference, path, options, mirror_dir)?;
        let describe = git.describe();
        Ok(GitPolicySource {
            git,
            describe,
            allow_rewind,
            verify_commits,
            last: None,
        })
    }
}

impl PolicySource for GitPolicySource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn next(&mut self, applied: Option<&str>) -> Poll {
        let fetch_started = Instant::now();
        let fetched = self.git.fetch();
        let fetch = Some(fetch_started.elapsed());
        let commit = match fetched {
            Ok(c) => c,
            Err(e) => {
                return Poll {
                    outcome: Err(Refusal::unavailable(e)),
                    fetch,
                    read: Duration::ZERO,
                }
            }
        };
        let id = commit.to_string();
        if self.last.as_deref() == Some(id.as_str()) {
            return Poll {
                outcome: Ok(Next::Unchanged),
                fetch,
                read: Duration::ZERO,
            };
        }
        // Whatever becomes of this commit, it is not read again until the ref moves (or a
        // rescan): a refused commit stays refused.
        self.last = Some(id.clone());
        let read_started = Instant::now();
        let outcome = (|| {
            if let (Some(applied), false) = (applied, self.allow_rewind) {
                self.git
                    .check_forward(applied, commit)
                    .map_err(|e| Refusal::refused(RefusalKind::Rewind, e).of(&id))?;
            }
            if let Some(file) = &self.verify_commits {
                // Read again on every pass until the commit verifies, so that a signer added
                // to the file (keys rotated without a restart) lets the same commit in.
                let verified = AllowedSigners::load(file)
                    .map_err(VerifyError::from)
                    .and_then(|signers| signers.verify_commit(self.git.repository(), commit))
                    .map_err(|e| {
                        self.last = None;
                        Refusal::refused(RefusalKind::Unverified, e).of(&id)
                    })?;
                info!(commit = %commit, signer = %verified.principals, key = %verified.fingerprint, "commit signature verified");
            }
            let docs = self
                .git
                .read(commit)
                .map_err(|e| Refusal::refused(RefusalKind::Source, e).of(&id))?;
            check_not_empty(&docs, &self.describe)?;
            Ok(Next::Revision(docs))
        })();
        Poll {
            outcome,
            fetch,
            read: read_started.elapsed(),
        }
    }

    fn rescan(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn a_directory_gives_each_revision_once_until_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "# one\n");
        let mut source = DirSource::new(dir.path());
        let first = match source.next(None).outcome {
            Ok(Next::Revision(d)) => d.revision.id,
            other => panic!("expected a revision, got {other:?}"),
        };
        assert!(matches!(source.next(None).outcome, Ok(Next::Unchanged)));
        write(dir.path(), "a.yaml", "# two\n");
        let second = match source.next(None).outcome {
            Ok(Next::Revision(d)) => d.revision.id,
            other => panic!("expected a revision, got {other:?}"),
        };
        assert_ne!(first, second);
        assert!(matches!(source.next(None).outcome, Ok(Next::Unchanged)));
        source.rescan();
        assert!(matches!(source.next(None).outcome, Ok(Next::Revision(_))));
    }

    #[test]
    fn an_empty_directory_is_refused_and_a_missing_one_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = DirSource::new(dir.path());
        let refusal = source.next(None).outcome.unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Source);
        assert!(!refusal.unavailable);
        assert!(
            refusal.message.contains("no policy files"),
            "{}",
            refusal.message
        );
        // The same empty tree is not refused twice.
        assert!(matches!(source.next(None).outcome, Ok(Next::Unchanged)));
        let mut missing = DirSource::new(&dir.path().join("nope"));
        let refusal = missing.next(None).outcome.unwrap_err();
        assert!(refusal.unavailable);
        assert_eq!(refusal.kind.as_str(), "source");
    }
}
