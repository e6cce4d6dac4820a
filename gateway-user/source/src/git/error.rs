//! [`GitError`]: every way the Git source can fail, each with what an operator needs to act on
//! it. Apart from `git.rs` because it is long (one variant per failure) and every other part
//! of the source makes it.
use std::time::Duration;

use super::{human_size, MAX_TREE_ENTRIES};
use crate::known_hosts::{HostKeyError, KnownHostsError};

/// Why a Git source could not give a revision. Every URL in it is [`redacted`](crate::redacted),
/// and so are libgit2's messages ([`scrub`](crate::redact::scrub)): an error can be shown, logged
/// and put in `/status` as it is.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed (unknown repository, a server error, ...).
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
    /// The URL is not one the source can use.
    #[error("git: bad source URL {url:?}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The options do not fit the URL, or a file they name is unusable.
    #[error("git: {url}: {why}")]
    Config {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The server refused the credentials.
    #[error("git: authentication failed for {url} (user {user}){detail}")]
    Auth {
        /// The URL.
        url: String,
        /// The user name sent.
        user: String,
        /// More, when known (which key).
        detail: String,
    },
    /// The server asks for credentials and none are configured.
    #[error("git: {url} asks for credentials ({asked}) and none are configured for it: {hint}")]
    NoCredentials {
        /// The URL.
        url: String,
        /// What the server accepts.
        asked: String,
        /// Which flags give them.
        hint: &'static str,
    },
    /// The server's TLS certificate does not verify.
    #[error(
        "git: the TLS certificate of {url} does not verify against {anchors}: {detail}; refused{hint}"
    )]
    Tls {
        /// The URL.
        url: String,
        /// What was trusted.
        anchors: String,
        /// libgit2's (OpenSSL's) words.
        detail: String,
        /// What to do, when it is not obvious.
        hint: &'static str,
    },
    /// The ssh server's host key is unknown, changed or revoked.
    #[error("git: {url}: {source}")]
    HostKey {
        /// The URL.
        url: String,
        /// Why the key was refused.
        #[source]
        source: Box<HostKeyError>,
    },
    /// The known_hosts file cannot be used.
    #[error("git: {url}: {source}")]
    KnownHosts {
        /// The URL.
        url: String,
        /// What is wrong with the file.
        #[source]
        source: KnownHostsError,
    },
    /// The server cannot be reached.
    #[error("git: cannot reach {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// libgit2's words.
        detail: String,
    },
    /// The fetch took longer than `--git-timeout`.
    #[error("git: fetching {url} took longer than --git-timeout {timeout:?}; aborted")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The fetch received more than `--git-max-size`.
    #[error("git: fetching {url} received more than --git-max-size {} ({limit} bytes); aborted", human_size(*limit))]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit, in bytes.
        limit: u64,
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
    /// A policy file is not text, too big, or badly named (or a tree is unreadable).
    #[error("git: {path} in commit {commit}: {why}")]
    BadFile {
        /// The commit.
        commit: String,
        /// The file, relative to `--path`, escaped ([`crate::escaped`]).
        path: String,
        /// Why.
        why: String,
    },
    /// The policy files of the revision are too big together.
    #[error("git: the policy files of commit {commit} of {url} under {path:?} hold more than --git-max-policy-size {} ({limit} bytes): {total} bytes counted so far; refused before reading them", human_size(*limit))]
    PolicyTooLarge {
        /// The commit.
        commit: String,
        /// The repository.
        url: String,
        /// `--path`.
        path: String,
        /// The sizes added up when the limit was passed.
        total: u64,
        /// `--git-max-policy-size`.
        limit: u64,
    },
    /// The tree under `--path` has more entries than are read.
    #[error("git: commit {commit} of {url} has more than {MAX_TREE_ENTRIES} entries under {path:?} (counting a subtree each time it is named); refused")]
    TooManyEntries {
        /// The commit.
        commit: String,
        /// The repository.
        url: String,
        /// `--path`.
        path: String,
    },
}
