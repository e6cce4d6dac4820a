//! Every problem found in a revision, with the file, the object and the field it is about.
use serde::Serialize;
use std::fmt;

/// Where a problem is: file (relative to the source root), object (`Kind/name`, or
/// `document N` when the document has no usable name), and the field path inside it
/// (`spec.rules[2].ports[0]`, empty for the whole object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    /// File path relative to the source root.
    pub file: String,
    /// `Kind/name` of the object, or `document N` (1-based) inside the file.
    pub object: String,
    /// Field path, e.g. `spec.rules[0].from[1]`.
    pub field: String,
}

/// One problem in a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// Where.
    #[serde(flatten)]
    pub location: Location,
    /// What, in words a person can act on.
    pub message: String,
}

impl PolicyError {
    /// A problem at `file` / `object` / `field`.
    pub fn new(
        file: impl Into<String>,
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        Self {
            location: Location {
                file: file.into(),
                object: object.into(),
                field: field.into(),
            },
            message: message.to_string(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Location {
            file,
            object,
            field,
        } = &self.location;
        write!(f, "{file}: {object}")?;
        if !field.is_empty() {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the problems of a revision (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

/// Longest message shown for one problem (a message may quote a value from the policy).
const MAX_MESSAGE_CHARS: usize = 1024;

impl fmt::Display for PolicyErrors {
    /// The first [`crate::limits::MAX_REPORTED_ERRORS`] problems and a count of the rest, each
    /// message cut at 1,024 characters: a revision with 200,000 broken documents makes a
    /// readable report, not a 33 MB log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in this revision:", self.0.len())?;
        let shown = crate::limits::MAX_REPORTED_ERRORS;
        for e in self.0.iter().take(shown) {
            let line = e.to_string();
            match line.char_indices().nth(MAX_MESSAGE_CHARS) {
                Some((cut, _)) => writeln!(f, "  {}...", &line[..cut])?,
                None => writeln!(f, "  {line}")?,
            }
        }
        if self.0.len() > shown {
            writeln!(f, "  ... and {} more", self.0.len() - shown)?;
        }
        Ok(())
    }
}
