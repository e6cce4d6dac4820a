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
pub mod redact;
pub mod secret_files;
pub mod verify;
pub mod webhook;

pub use redact::redacted;

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
    /// A policy file whose name cannot be shown as it is: not UTF-8, or with a control
    /// character (a newline, an escape sequence) that would forge lines in logs and reports.
    #[error("{path}: {why}")]
    BadName {
        /// The path, escaped ([`escaped`]).
        path: String,
        /// What is wrong with it.
        why: &'static str,
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

/// `path` (bytes, '/'-separated) as a policy file's name in reports, or why it cannot be one:
/// it must be UTF-8 without control characters, so that a name cannot forge a line of a log or
/// an error, nor be shown differently from what the file is called. The directory source and
/// the Git source both apply it, so a checkout and its commit are refused alike.
pub(crate) fn policy_path(path: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(path)
        .map_err(|_| "the name is not UTF-8; refused (rename the file)")?;
    if text.chars().any(char::is_control) {
        return Err("the name has a control character; refused (rename the file)");
    }
    Ok(text.to_owned())
}

/// `path` for display: control characters and bytes that are not UTF-8 escaped (`\n`,
/// `\u{1b}`, `\xff`), everything else as it is.
pub fn escaped(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_characters_or_not_utf8_are_refused_and_shown_escaped() {
        assert_eq!(
            policy_path(b"edge/a b.yaml").as_deref(),
            Ok("edge/a b.yaml")
        );
        assert_eq!(
            policy_path("d\u{e9}j\u{e0}/x.yaml".as_bytes()).as_deref(),
            Ok("d\u{e9}j\u{e0}/x.yaml")
        );
        for bad in [
            &b"a\nb.yaml"[..],
            b"a\x1b[31m.yaml",
            b"a\x7f.yaml",
            b"a\xff.yaml",
            "a\u{85}.yaml".as_bytes(),
        ] {
            assert!(policy_path(bad).is_err(), "{}", escaped(bad));
        }
        assert_eq!(escaped(b"dir/a\nb.yaml"), "dir/a\\nb.yaml");
        assert_eq!(escaped(b"a\x1b[31m.yaml"), "a\\u{1b}[31m.yaml");
        assert_eq!(escaped(b"a\xffb.yaml"), "a\\xffb.yaml");
        assert_eq!(
            escaped("it's \"d\u{e9}j\u{e0}\".yaml".as_bytes()),
            "it's \"d\u{e9}j\u{e0}\".yaml"
        );
    }
}
