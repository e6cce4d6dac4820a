//! The source stage: where policy comes from (a directory now; Git and the Kubernetes API
//! later). A source produces [`Documents`]: the raw text of every policy file of one revision,
//! and an id that changes whenever any of it changes. Nothing here parses YAML.
use std::path::PathBuf;

pub use tollgate_model::revision::{content_id, Documents, Revision, SourceFile, MAX_FILE_SIZE};

pub mod dir;
pub mod git;
pub mod known_hosts;
pub mod last_good;
pub mod poll;
pub mod verify;
pub mod webhook;

/// Why a source could not be read (as opposed to read and found invalid).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An I/O error reading `path`.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A policy file that is not UTF-8 text.
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The source path does not exist.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A revision whose files together are larger than the limit.
    #[error("the policy files under {} hold {size} bytes, more than the limit of {limit} bytes for one revision", path.display())]
    RevisionTooLarge {
        /// The source root.
        path: PathBuf,
        /// The files' total size in bytes.
        size: u64,
        /// The limit ([`tollgate_model::revision::MAX_REVISION_SIZE`]).
        limit: u64,
    },
    /// A policy file larger than the limit.
    #[error("{} is {size} bytes, more than the limit of {limit} bytes for one policy file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit ([`MAX_FILE_SIZE`]).
        limit: u64,
    },
}
