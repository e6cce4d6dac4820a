//! The Git source: a bare mirror of the repository in the state directory, fetched on every
//! pass; the policy is the tree of the commit the configured ref points to (under `--path`), and
//! the revision is that commit's id. The tree is read again only when the commit changes.
//!
//! Transports (libgit2, through the git2 crate): `file://`, `git://` (git daemon), smart HTTP
//! over `https://` (OpenSSL; system roots plus `--git-ca-file`) and `http://`, and ssh
//! (`ssh://user@host:port/path` or `user@host:path`, libssh2) with a key and a known_hosts file
//! (host keys are checked here, in [`super::known_hosts`], never trusted on first use).
//! Credentials come from files or the environment, never from the command line or the URL.
//! Every fetch is bounded in time (`--git-timeout`) and in bytes received (`--git-max-size`);
//! reading a commit, in the size of each policy file and of all of them (`--git-max-policy-size`),
//! checked before any is inflated (`git/tree.rs`). The URL is shown only [`redacted`].
//!
//! The parts: `git/options.rs` (the settings, checked before anything goes on the network),
//! `git/error.rs` ([`GitError`]), `git/transport.rs` (telling a URL from a directory, and which
//! transport it names), `git/fetch.rs` (credentials, host keys, limits and the fetch itself),
//! `git/tree.rs` (reading a commit's policy files); this file holds the source itself: opening
//! the mirror, naming revisions, the forward-only check and reading a commit.
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{Oid, Repository};

use super::redact::{redacted, scrub};
use super::{Documents, Revision};

mod error;
mod fetch;
mod options;
mod transport;
mod tree;
pub use error::GitError;
use options::check_options;
pub use options::{
    GitOptions, DEFAULT_MAX_POLICY_SIZE, DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT, DEFAULT_USERNAME,
};
pub use transport::is_git_url;
use transport::Transport;
pub use tree::{MAX_TREE_ENTRIES, MAX_TREE_SIZE};

/// Serialises fetches and the libgit2 process-wide settings they change (timeouts, the home
/// directory libssh2's host key preferences are read from, extra CA certificates): libgit2
/// keeps them in unsynchronised globals, so they are only touched with this held, and no other
/// fetch runs meanwhile.
static LIBGIT2_GLOBALS: Mutex<()> = Mutex::new(());

fn libgit2_globals() -> std::sync::MutexGuard<'static, ()> {
    LIBGIT2_GLOBALS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Git repository followed at one ref.
pub struct GitSource {
    /// The URL, as libgit2 is given it. Never shown: see `shown`.
    url: String,
    /// The URL as messages and reports show it ([`redacted`]).
    shown: String,
    reference: String,
    path: String,
    repo: Repository,
    transport: Transport,
    options: GitOptions,
    /// The password or token from `--git-password-env`, read once at start.
    env_secret: Option<String>,
    /// `HOME` for libgit2 during ssh fetches: holds `.ssh/known_hosts` with this host's keys,
    /// from which libgit2 tells libssh2 which host key types to ask the server for first.
    ssh_home: PathBuf,
}

impl GitSource {
    /// A source for `url` at `reference`, policies under `path` ("" = the whole tree), reached
    /// with `options`; the mirror lives under `cache_dir`. Checks the URL and that the options
    /// fit it (ssh needs a key and a known_hosts file, the files named are readable) before
    /// anything goes on the network.
    pub fn open(
        url: &str,
        reference: &str,
        path: &str,
        options: &GitOptions,
        cache_dir: &Path,
    ) -> Result<Self, GitError> {
        let shown = redacted(url);
        let transport = Transport::parse(url).map_err(|why| GitError::BadUrl {
            url: shown.clone(),
            why,
        })?;
        let env_secret = check_options(&shown, &transport, options)?;
        let err = |what: &str| {
            let shown = shown.clone();
            let what = what.to_owned();
            move |source: git2::Error| GitError::Git {
                what,
                source: scrubbed(&source, url),
                url: shown,
            }
        };
        let dir: PathBuf = cache_dir.join(format!("{:016x}", fnv(url)));
        let repo = match Repository::open_bare(&dir) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&dir).map_err(|e| GitError::Git {
                    what: format!("create {}", dir.display()),
                    url: shown.clone(),
                    source: git2::Error::from_str(&e.to_string()),
                })?;
                Repository::init_bare(&dir).map_err(err("create the local mirror"))?
            }
        };
        Ok(GitSource {
            url: url.to_owned(),
            shown,
            reference: reference.to_owned(),
            path: path.trim_matches('/').to_owned(),
            repo,
            transport,
            options: options.clone(),
            env_secret,
            ssh_home: cache_dir.join(format!("{:016x}.ssh-home", fnv(url))),
        })
    }

    /// An existing local repository (bare or with a work tree), read in place: no mirror, no
    /// fetch. For `tollgate diff --repo PATH`, where any revision of it may be named; of
    /// `options`, only the limits of reading apply.
    pub fn open_local(dir: &Path, path: &str, options: &GitOptions) -> Result<Self, GitError> {
        let url = dir.display().to_string();
        let repo = Repository::open(dir).map_err(|source| GitError::Git {
            what: "open the repository".to_owned(),
            url: url.clone(),
            source,
        })?;
        Ok(GitSource {
            ssh_home: dir.join(".tollgate-unused"),
            shown: url.clone(),
            url,
            reference: "HEAD".to_owned(),
            path: path.trim_matches('/').to_owned(),
            repo,
            // Read in place, never fetched.
            transport: Transport::File,
            options: GitOptions {
                max_policy_size: options.max_policy_size,
                ..GitOptions::default()
            },
            env_secret: None,
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
                url: self.shown.clone(),
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
            format!("{}@{}", self.shown, self.reference)
        } else {
            format!("{}@{}:{}", self.shown, self.reference, self.path)
        }
    }

    /// A libgit2 error while doing `what`, its message scrubbed of the URL's secrets.
    fn git_error(&self, what: &str) -> impl FnOnce(git2::Error) -> GitError {
        let what = what.to_owned();
        let url = self.shown.clone();
        let source_url = self.url.clone();
        move |source| GitError::Git {
            what,
            url,
            source: scrubbed(&source, &source_url),
        }
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
                url: self.shown.clone(),
                applied: applied.to_owned(),
                fetched: fetched.to_string(),
            }),
        }
    }

    /// The policy files of `commit`: every `*.yaml`/`*.yml` under the path, at any depth, that
    /// is a regular file; sized before any is read (`git/tree.rs`).
    pub fn read(&self, commit: Oid) -> Result<Documents, GitError> {
        let git = |what: &'static str| self.git_error(what);
        let top = self
            .repo
            .find_commit(commit)
            .map(|c| c.tree_id())
            .map_err(git("read the commit"))?;
        let no_path = || GitError::NoPath {
            commit: commit.to_string(),
            url: self.shown.clone(),
            path: self.path.clone(),
        };
        let file_error = |e| match e {
            tree::TreeError::File { path, why } => GitError::BadFile {
                commit: commit.to_string(),
                path,
                why,
            },
            tree::TreeError::Total { total } => GitError::PolicyTooLarge {
                commit: commit.to_string(),
                url: self.shown.clone(),
                path: self.path.clone(),
                total,
                limit: self.options.max_policy_size,
            },
            tree::TreeError::Entries => GitError::TooManyEntries {
                commit: commit.to_string(),
                url: self.shown.clone(),
                path: self.path.clone(),
            },
        };
        let root = tree::subtree(&self.repo, top, &self.path)
            .map_err(file_error)?
            .ok_or_else(no_path)?;
        let files = tree::policy_files(&self.repo, root, self.options.max_policy_size)
            .map_err(file_error)?;
        Ok(Documents {
            revision: Revision {
                id: commit.to_string(),
                source: self.describe(),
            },
            files,
            cluster: None,
            unresolved: Vec::new(),
        })
    }
}

/// `e` with every secret of `url` taken out of its message ([`scrub`]); code and class kept.
fn scrubbed(e: &git2::Error, url: &str) -> git2::Error {
    git2::Error::new(e.code(), e.class(), scrub(e.message(), url))
}

/// `1048576` -> `1 MiB`; sizes that are not a whole number of KiB/MiB/GiB stay in bytes.
pub fn human_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
