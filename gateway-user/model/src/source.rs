//! The interface every policy source implements for the agent: [`PolicySource::next`] reads the
//! source and says whether there is a new revision, none, or one that is refused and why. The
//! agent does not know which kind of source it runs: a directory, Git, or the Kubernetes API
//! all answer the same three ways. It lives in the model (no I/O here) so that each source
//! crate depends on the model only.
//!
//! A source never compiles or applies anything; a revision it returns may still be refused by
//! the compiler ([`RefusalKind::Invalid`]) or when it is applied ([`RefusalKind::Apply`]), which
//! the agent decides and reports with the same kinds.
use std::time::Duration;

use crate::Documents;

/// Wakes the agent for a pass (many calls while a pass runs give one more pass).
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Why a revision was not enforced: the `reason` label of
/// `tollgate_policy_apply_failures_total` and the `refused` field of `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The source could not be read, or what it holds is unusable as a revision (no policy
    /// files, a file over the size limit).
    Source,
    /// A Git ref moved backwards or sideways from the revision in force.
    Rewind,
    /// A Git commit without a valid signature of an allowed signer.
    Unverified,
    /// Refused by the compiler.
    Invalid,
    /// Compiled, but could not be applied (a port that cannot be bound, a kernel refusal).
    Apply,
}

impl RefusalKind {
    /// Every kind (the label's bounded set).
    pub const ALL: [RefusalKind; 5] = [
        RefusalKind::Source,
        RefusalKind::Rewind,
        RefusalKind::Unverified,
        RefusalKind::Invalid,
        RefusalKind::Apply,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Source => "source",
            RefusalKind::Rewind => "rewind",
            RefusalKind::Unverified => "unverified",
            RefusalKind::Invalid => "invalid",
            RefusalKind::Apply => "apply",
        }
    }
}

/// A revision that is not enforced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The kind of refusal.
    pub kind: RefusalKind,
    /// Every problem, in words, for the log and `/status`.
    pub message: String,
    /// The source itself could not be reached or read (a failed fetch, a missing directory):
    /// the agent retries with backoff. Any other refusal is a property of the revision, which
    /// does not change until the source does.
    pub unavailable: bool,
    /// The revision refused, when it is known (a fetched commit, a read directory).
    pub revision: Option<String>,
}

impl Refusal {
    /// The source could not be read.
    pub fn unavailable(message: impl std::fmt::Display) -> Self {
        Refusal {
            kind: RefusalKind::Source,
            message: message.to_string(),
            unavailable: true,
            revision: None,
        }
    }

    /// A revision refused for `kind`.
    pub fn refused(kind: RefusalKind, message: impl std::fmt::Display) -> Self {
        Refusal {
            kind,
            message: message.to_string(),
            unavailable: false,
            revision: None,
        }
    }

    /// The same refusal, naming the revision.
    pub fn of(mut self, revision: &str) -> Self {
        self.revision = Some(revision.to_owned());
        self
    }
}

/// What one read of a source found.
#[derive(Debug)]
pub enum Next {
    /// The revision returned last time (or refused last time) is still the source's: nothing
    /// to do.
    Unchanged,
    /// A revision not returned before.
    Revision(Documents),
}

/// One read of a source, with what its steps took.
#[derive(Debug)]
pub struct Poll {
    /// The outcome.
    pub outcome: Result<Next, Refusal>,
    /// The network fetch, when the source has one (Git), failed ones included.
    pub fetch: Option<Duration>,
    /// Reading the revision's files (zero when nothing was read).
    pub read: Duration,
}

/// A source of policy revisions. `next` blocks (it may fetch over the network): the agent
/// calls it on a blocking thread.
pub trait PolicySource: Send {
    /// Gives the source a way to wake the agent when it has something new (a watch event), so
    /// that a pass runs at once instead of at the next interval. Sources that are only polled
    /// ignore it.
    fn set_waker(&mut self, wake: Waker) {
        let _ = wake;
    }

    /// Where the policy comes from, for logs and `/status` (credentials never shown).
    fn describe(&self) -> String;

    /// Reads the source. `applied` is the revision in force on this node (or, before the
    /// first apply of a run, the last good one saved on it): a source with history refuses to
    /// move backwards from it.
    fn next(&mut self, applied: Option<&str>) -> Poll;

    /// Forgets what was returned, so that the next read returns the current revision again
    /// even when it has not changed (SIGHUP; a revision that could not be applied).
    fn rescan(&mut self);
}
