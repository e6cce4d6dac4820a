//! The credential files of AuthPolicies: read when a revision is applied ([`AuthStore::load`]:
//! a missing, unreadable or malformed file refuses the revision, naming the file and line) and
//! checked again every [`RELOAD_INTERVAL`] ([`AuthStore::check`]): a changed file is parsed
//! aside and swapped in whole; a bad one is logged and the set loaded before stays in use.
//!
//! Each method says which files it reads ([`CredentialFile`]: a file name in a Secret's
//! directory and a parser); the store keeps one parsed set per path, shared by every policy
//! that names it.
use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};
use tracing::{info, warn};

use super::jwt::{Jwks, JwksStore};
use super::password::PasswordChecks;
use super::{AuthRuntime, Method};
use crate::metrics::JwksMetrics;
use tollgate_compile::l7::table::{JwtProviderDef, SecretRef};
use tollgate_compile::l7::RouteTable;

/// How often the credential files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Largest credential file read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a credential file cannot be used. The messages never quote a line: it may hold a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is too large.
    #[error("{file} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        file: PathBuf,
    },
    /// A line is malformed.
    #[error("{file} line {line}: {why}")]
    Line {
        /// The file.
        file: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The file holds no credential.
    #[error("{file} holds no credential")]
    Empty {
        /// The file.
        file: PathBuf,
    },
    /// The keys of a JWT provider cannot be set up (its CA file).
    #[error("JWT provider \"{provider}\": {why}")]
    Jwt {
        /// The provider.
        provider: String,
        /// Why.
        why: String,
    },
}

/// A credential file that refuses a revision, with the AuthPolicy that names it.
#[derive(Debug, thiserror::Error)]
#[error("AuthPolicy {policy}: {source}")]
pub struct PolicyFileError {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// What is wrong with the file.
    pub source: AuthFileError,
}

/// The format of one credential file in a Secret's directory.
pub trait CredentialFile: Sized + Send + Sync + 'static {
    /// The file's name in the directory.
    const NAME: &'static str;
    /// Parses the file's text (`file` names it in errors).
    fn parse(file: &Path, text: &str) -> Result<Self, AuthFileError>;
}

/// Lines that are neither blank nor comments, numbered from 1 (the syntax every credential
/// file shares).
pub fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// The parsed content of one credential file, swapped whole when the file changes.
pub struct FileSet<T> {
    current: ArcSwap<T>,
}

impl<T> FileSet<T> {
    /// A set holding `content`.
    pub fn new(content: T) -> FileSet<T> {
        FileSet {
            current: ArcSwap::from_pointee(content),
        }
    }

    /// The content in use.
    pub fn load(&self) -> Guard<Arc<T>> {
        self.current.load()
    }
}

/// A [`FileSet`] of any format, as the store keeps it.
trait Reload: Send + Sync {
    /// Reads and parses `file` again and swaps it in; on error the content stays.
    fn reload(&self, file: &Path) -> Result<(), AuthFileError>;
    /// The set itself, for a typed [`Arc::downcast`].
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: CredentialFile> Reload for FileSet<T> {
    fn reload(&self, file: &Path) -> Result<(), AuthFileError> {
        self.current.store(Arc::new(read::<T>(file)?));
        Ok(())
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A credential file and the set loaded from it.
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    set: Arc<dyn Reload>,
}

fn stamp(file: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read<T: CredentialFile>(file: &Path) -> Result<T, AuthFileError> {
    let read_err = |source| AuthFileError::Read {
        file: file.to_owned(),
        source,
    };
    let len = std::fs::metadata(file).map_err(read_err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(AuthFileError::TooLarge {
            file: file.to_owned(),
        });
    }
    let text = std::fs::read_to_string(file).map_err(read_err)?;
    T::parse(file, &text)
}

/// Every credential file in use, by path, and what the methods share (the JWKS of JWT
/// providers, the threads of password checks).
pub struct AuthStore {
    dir: PathBuf,
    files: Mutex<HashMap<PathBuf, Loaded>>,
    passwords: Arc<PasswordChecks>,
    jwks: JwksStore,
}

/// What a method loads its credentials through ([`AuthStore::load`]).
pub struct Loader<'a> {
    store: &'a AuthStore,
    /// The sets of the revision in force (reused when their file did not change).
    in_force: &'a HashMap<PathBuf, Loaded>,
    /// The sets of the revision being loaded.
    fresh: &'a mut HashMap<PathBuf, Loaded>,
    policy: &'a str,
}

impl Loader<'_> {
    /// The set of file `T::NAME` of Secret `secret`: the one this revision already loaded,
    /// the one in force if its file did not change, or read now.
    pub fn file<T: CredentialFile>(
        &mut self,
        secret: &SecretRef,
    ) -> Result<Arc<FileSet<T>>, AuthFileError> {
        let path = self
            .store
            .dir
            .join(&secret.namespace)
            .join(&secret.name)
            .join(T::NAME);
        let typed = |l: &Loaded| l.set.clone().as_any().downcast::<FileSet<T>>().ok();
        if let Some(set) = self.fresh.get(&path).and_then(typed) {
            return Ok(set);
        }
        let now = stamp(&path);
        let reused = self
            .in_force
            .get(&path)
            .filter(|l| l.stamp.is_some() && l.stamp == now)
            .and_then(typed);
        let set = match reused {
            Some(set) => set,
            None => Arc::new(FileSet::new(read::<T>(&path)?)),
        };
        self.fresh.insert(
            path,
            Loaded {
                stamp: now,
                set: set.clone(),
            },
        );
        Ok(set)
    }

    /// The keys of JWT provider `def` of the policy.
    pub fn jwks(&mut self, def: &JwtProviderDef) -> Result<Arc<Jwks>, AuthFileError> {
        self.store
            .jwks
            .get(self.policy, def)
            .map_err(|why| AuthFileError::Jwt {
                provider: def.name.clone(),
                why,
            })
    }

    /// The threads that check passwords.
    pub fn password_checks(&self) -> Arc<PasswordChecks> {
        self.store.passwords.clone()
    }
}

impl AuthStore {
    /// A store reading files under `dir` (JWKS metrics not registered).
    pub fn new(dir: PathBuf) -> AuthStore {
        AuthStore::with_metrics(dir, JwksMetrics::default())
    }

    /// A store reading files under `dir`, counting JWKS fetches in `jwks`.
    pub fn with_metrics(dir: PathBuf, jwks: JwksMetrics) -> AuthStore {
        AuthStore {
            jwks: JwksStore::new(dir.clone(), jwks),
            dir,
            files: Mutex::new(HashMap::new()),
            passwords: Arc::new(PasswordChecks::new(
                super::password::PASSWORD_CHECK_THREADS,
                super::password::PASSWORD_CHECK_QUEUE,
            )),
        }
    }

    /// Loads the files of every AuthPolicy of `table` (unchanged files are not read again);
    /// one runtime per policy, aligned with `table.policy.auth`. Files no revision names any
    /// more are forgotten.
    pub fn load(&self, table: &RouteTable) -> Result<Vec<Arc<AuthRuntime>>, PolicyFileError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh: HashMap<PathBuf, Loaded> = HashMap::new();
        let mut out = Vec::new();
        for def in &table.policy.auth {
            let mut loader = Loader {
                store: self,
                in_force: &files,
                fresh: &mut fresh,
                policy: &def.policy,
            };
            let mut methods = Method::of(def);
            for m in &mut methods {
                m.load(&mut loader).map_err(|source| PolicyFileError {
                    policy: def.policy.to_string(),
                    source,
                })?;
            }
            out.push(Arc::new(AuthRuntime::new(methods)));
        }
        // The revision may still be refused (a port that cannot be bound): the files of the
        // revision in force stay too; `check` forgets those no revision holds any more.
        files.extend(fresh);
        Ok(out)
    }

    /// Reads again every file whose modification time or size changed; a file that cannot be
    /// loaded keeps its previous set (and is logged). Returns the files that failed.
    pub fn check(&self) -> Vec<PathBuf> {
        self.jwks.forget_dropped();
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed = Vec::new();
        files.retain(|_, l| Arc::strong_count(&l.set) > 1);
        for (path, l) in files.iter_mut() {
            let now = stamp(path);
            if now == l.stamp {
                continue;
            }
            // Remember the stamp either way: a bad file is reported once, not every second.
            l.stamp = now;
            match l.set.reload(path) {
                Ok(()) => info!(file = %path.display(), "credential file reloaded"),
                Err(error) => {
                    warn!(%error, file = %path.display(), "credential file not reloaded; the credentials loaded before stay in use");
                    failed.push(path.clone());
                }
            }
        }
        failed
    }
}
