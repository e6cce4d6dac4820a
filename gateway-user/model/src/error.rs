//! Every problem found in a revision, with the file, the object and the field it is about.
use serde::Serialize;
use std::fmt;

use crate::Located;

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
        // A problem of the whole file (or revision) names no object.
        write!(f, "{file}")?;
        if !object.is_empty() {
            write!(f, ": {object}")?;
        }
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

/// Collects the problems of one object into the list of a revision: each problem names the
/// object's file and `Kind/name`, and the field given. Validators take `&mut Checker` and go on
/// after a problem, so that one round of fixes is enough.
pub struct Checker<'a, 'e> {
    file: &'a str,
    object: &'a str,
    errors: &'e mut Vec<PolicyError>,
}

/// How many problems a revision's list held at one moment: see [`Checker::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(usize);

impl<'a, 'e> Checker<'a, 'e> {
    /// A checker whose problems name `object` (`Kind/name`) in `file`.
    pub fn new(file: &'a str, object: &'a str, errors: &'e mut Vec<PolicyError>) -> Self {
        Checker {
            file,
            object,
            errors,
        }
    }

    /// A checker whose problems name object `o`.
    pub fn of<T>(o: &'a Located<T>, errors: &'e mut Vec<PolicyError>) -> Self {
        Self::new(&o.file, &o.object, errors)
    }

    /// The file of the object.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// The object (`Kind/name`).
    pub fn object(&self) -> &'a str {
        self.object
    }

    /// Records a problem at `field` of the object (empty for the whole object).
    pub fn error(&mut self, field: impl Into<String>, message: impl fmt::Display) {
        self.errors
            .push(PolicyError::new(self.file, self.object, field, message));
    }

    /// Records a problem when the list at `field` has more than `max` entries.
    pub fn count(&mut self, field: &str, n: usize, max: usize) {
        if n > max {
            self.error(field, format!("{n} entries, more than the limit of {max}"));
        }
    }

    /// The problems recorded so far, for [`Checker::clean_since`]: a check that returns a value
    /// only when it found nothing wrong takes a mark first.
    pub fn mark(&self) -> Mark {
        Mark(self.errors.len())
    }

    /// The problems recorded since `mark` was taken.
    pub fn problems_since(&self, mark: Mark) -> &[PolicyError] {
        self.errors.get(mark.0..).unwrap_or_default()
    }

    /// Whether no problem was recorded since `mark` was taken.
    pub fn clean_since(&self, mark: Mark) -> bool {
        self.errors.len() == mark.0
    }
}
