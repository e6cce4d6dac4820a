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

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in this revision:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}
