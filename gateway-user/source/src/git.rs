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
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, Oid,
    RemoteCallbacks, Repository,
};
use tracing::warn;

use super::known_hosts::{host_name, HostKeyError, KnownHosts, KnownHostsError};
use super::redact::{redacted, scrub};
use super::{Documents, Revision};

mod tree;
pub use tree::{MAX_TREE_ENTRIES, MAX_TREE_SIZE};

/// Default of `--git-timeout`: how long one fetch may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--git-max-size`: how many bytes one fetch may receive (512 MiB).
pub const DEFAULT_MAX_SIZE: u64 = 512 * 1024 * 1024;
/// Default of `--git-max-policy-size`: how many bytes the policy files of one revision may
/// hold together (64 MiB; one file may hold [`crate::MAX_FILE_SIZE`]).
pub const DEFAULT_MAX_POLICY_SIZE: u64 = 64 * 1024 * 1024;
/// User name sent with a password or token when none is configured (what Git hosts expect
/// with a token), and the ssh user when the URL names none.
pub const DEFAULT_USERNAME: &str = "git";

/// How the Git source connects and what it may spend: credentials, trust anchors and limits.
/// Each field is one command-line flag of `tollgate run` (named in its doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOptions {
    /// `--git-username`: the user for http(s) and ssh; when not given, the URL's user, else
    /// [`DEFAULT_USERNAME`]. Not a secret.
    pub username: Option<String>,
    /// `--git-password-file`: file holding the https password or token (read on every fetch,
    /// so a rotated secret is picked up; one trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// `--git-password-env`: environment variable holding the https password or token.
    pub password_env: Option<String>,
    /// `--git-ca-file`: PEM file of CA certificates trusted for https, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `--git-ssh-key`: private key file for ssh (OpenSSH or PEM format).
    pub ssh_key: Option<PathBuf>,
    /// `--git-ssh-key-passphrase-file`: file holding the passphrase of an encrypted ssh key.
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// `--git-known-hosts`: OpenSSH known_hosts file with the server's host keys; required for
    /// ssh (read on every fetch).
    pub known_hosts: Option<PathBuf>,
    /// `--git-timeout`: the longest one fetch may take, connection included.
    pub timeout: Duration,
    /// `--git-max-size`: the most bytes one fetch may receive.
    pub max_size: u64,
    /// `--git-max-policy-size`: the most bytes the policy files of one revision may hold
    /// together, checked from the objects' headers before any is read.
    pub max_policy_size: u64,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            username: None,
            password_file: None,
            password_env: None,
            ca_file: None,
            ssh_key: None,
            ssh_key_passphrase_file: None,
            known_hosts: None,
            timeout: DEFAULT_TIMEOUT,
            max_size: DEFAULT_MAX_SIZE,
            max_policy_size: DEFAULT_MAX_POLICY_SIZE,
        }
    }
}

/// Why a Git source could not give a revision. Every URL in it is [`redacted`], and so are
/// libgit2's messages ([`scrub`]): an error can be shown, logged and put in `/status` as it is.
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

/// True when `source` names a Git repository rather than a directory: a URL (`scheme://`,
/// including schemes the source refuses, so that a typo is reported as a bad URL rather than
/// a missing directory) or an scp-like ssh address (`user@host:path`).
pub fn is_git_url(source: &str) -> bool {
    source.contains("://") || parse_scp_like(source).is_some()
}

/// `user@host:path` (git's scp-like ssh syntax; the user is required here, so that a
/// directory with a colon in its name is not taken for a host): user, host, path.
fn parse_scp_like(source: &str) -> Option<(&str, &str, &str)> {
    let (user, rest) = source.split_once('@')?;
    if user.is_empty() || user.contains(['/', ':']) {
        return None;
    }
    let (host, path) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        rest.split_once(':')?
    };
    if host.is_empty() || host.contains('/') || path.is_empty() {
        return None;
    }
    Some((user, host, path))
}

/// How the source reaches the repository, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    /// `file://`.
    File,
    /// `git://`.
    GitDaemon,
    /// `http://` (`tls` false) or `https://`.
    Http {
        /// TLS.
        tls: bool,
        /// The user named in the URL, if any.
        user: Option<String>,
    },
    /// `ssh://` or `user@host:path`.
    Ssh {
        /// The user named in the URL, if any.
        user: Option<String>,
        /// The host, as the known_hosts file names it (no brackets).
        host: String,
        /// The port (22 unless the URL says otherwise).
        port: u16,
    },
}

impl Transport {
    fn parse(url: &str) -> Result<Transport, String> {
        if url.starts_with("file://") {
            return Ok(Transport::File);
        }
        if url.starts_with("git://") {
            return Ok(Transport::GitDaemon);
        }
        if !url.contains("://") {
            return match parse_scp_like(url) {
                Some((user, host, _)) => Ok(Transport::Ssh {
                    user: Some(user.to_owned()),
                    host: host.to_owned(),
                    port: 22,
                }),
                None => Err("neither a URL (scheme://...) nor user@host:path".to_owned()),
            };
        }
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if parsed.password().is_some() {
            return Err("the URL carries a password; give it with --git-password-file or --git-password-env instead (a URL shows up in logs, /status and metrics)".to_owned());
        }
        let user = Some(parsed.username()).filter(|u| !u.is_empty()).map(|u| {
            percent_encoding::percent_decode_str(u)
                .decode_utf8_lossy()
                .into_owned()
        });
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err("no host".to_owned()),
        };
        match parsed.scheme() {
            "https" => Ok(Transport::Http { tls: true, user }),
            "http" => Ok(Transport::Http { tls: false, user }),
            "ssh" => Ok(Transport::Ssh {
                user,
                host,
                port: parsed.port().unwrap_or(22),
            }),
            other => Err(format!(
                "unsupported scheme {other}:// (use file://, git://, http://, https://, ssh:// or user@host:path)"
            )),
        }
    }
}

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

    /// The user name sent to the server: `--git-username`, else the URL's, else `git`.
    fn username(&self, from_url: Option<&str>) -> String {
        let url_user = match &self.transport {
            Transport::Http { user, .. } | Transport::Ssh { user, .. } => user.as_deref(),
            _ => None,
        };
        self.options
            .username
            .as_deref()
            .or(url_user)
            .or(from_url)
            .unwrap_or(DEFAULT_USERNAME)
            .to_owned()
    }

    /// The https password or token: from the file (read now, so a rotated secret is used at
    /// once) or from the environment (read at start).
    fn password(&self) -> Result<Option<String>, GitError> {
        if let Some(file) = &self.options.password_file {
            return read_secret(&self.shown, file, "--git-password-file").map(Some);
        }
        Ok(self.env_secret.clone())
    }

    /// For ssh: reads the known_hosts file (again, so an operator's fix applies without a
    /// restart) and writes this host's keys where libgit2 looks for its own, so that libssh2
    /// asks the server for a key type the file lists.
    fn prepare_ssh(&self, host: &str, port: u16) -> Result<Option<KnownHosts>, GitError> {
        let Some(file) = &self.options.known_hosts else {
            return Ok(None);
        };
        let known = KnownHosts::load(file).map_err(|source| GitError::KnownHosts {
            url: self.shown.clone(),
            source,
        })?;
        let mut lines = String::new();
        for (_, key) in known.keys_for(host, port) {
            let bare = ssh_key::PublicKey::from(key.key_data().clone());
            if let Ok(text) = bare.to_openssh() {
                lines.push_str(&format!("{} {text}\n", host_name(host, port)));
            }
        }
        let ssh_dir = self.ssh_home.join(".ssh");
        let written = std::fs::create_dir_all(&ssh_dir)
            .and_then(|()| std::fs::write(ssh_dir.join("known_hosts"), lines));
        if let Err(e) = written {
            // Only a preference: the host key is checked against the operator's file anyway.
            warn!(dir = %ssh_dir.display(), error = %e, "cannot write the ssh host key preferences; the server picks the key type");
        } else if let Ok(home) =
            std::ffi::CString::new(self.ssh_home.as_os_str().as_encoded_bytes())
        {
            // SAFETY: GIT_OPT_SET_HOMEDIR takes one NUL-terminated string, which libgit2
            // copies; the caller holds LIBGIT2_GLOBALS, so no other thread uses libgit2's
            // global settings meanwhile.
            unsafe {
                libgit2_sys::git_libgit2_opts(
                    libgit2_sys::GIT_OPT_SET_HOMEDIR as libc::c_int,
                    home.as_ptr(),
                );
            }
        }
        Ok(Some(known))
    }

    /// Fetches and returns the commit the ref points to.
    ///
    /// Bounded by `--git-timeout` three ways: libgit2's connect timeout, its timeout for each
    /// read (libssh2's session timeout for ssh), and the deadline checked by every callback as
    /// data arrives. What these cannot cut short is a server that trickles its ref
    /// advertisement a byte at a time, each just inside the read timeout (no callback runs
    /// then, and libgit2 offers no way to cancel a fetch from another thread); over https or
    /// ssh only the server itself could do that.
    ///
    /// The fetch is not shallow: [`GitSource::check_forward`] needs the ancestry of the
    /// fetched commit to tell a forward move from a rewind, which a depth-limited history
    /// cannot show. Incremental fetches only bring the new objects anyway.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let _globals = libgit2_globals();
        let limits = &self.options;
        let timeout_ms = i32::try_from(limits.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: libgit2's global settings, changed with LIBGIT2_GLOBALS held (no other
        // fetch runs). The connect timeout bounds connecting; the server timeout bounds each
        // read (libssh2 gets it as its session timeout); the callbacks below bound the rest.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(timeout_ms);
            let _ = git2::opts::set_server_timeout_in_milliseconds(timeout_ms);
        }
        let known_hosts = match &self.transport {
            Transport::Ssh { host, port, .. } => self.prepare_ssh(host, *port)?,
            _ => None,
        };
        let password = match self.transport {
            Transport::Http { .. } => self.password()?,
            _ => None,
        };
        let passphrase = match &self.options.ssh_key_passphrase_file {
            Some(f) if matches!(self.transport, Transport::Ssh { .. }) => Some(read_secret(
                &self.shown,
                f,
                "--git-ssh-key-passphrase-file",
            )?),
            _ => None,
        };
        let deadline = Instant::now() + limits.timeout;
        // Why a callback stopped the fetch: libgit2 replaces a callback's message with its
        // own, so the real reason is kept here and reported instead.
        let failure: RefCell<Option<GitError>> = RefCell::new(None);
        let fail = |e: GitError| {
            let text = e.to_string();
            failure.borrow_mut().get_or_insert(e);
            git2::Error::from_str(&text)
        };
        let timed_out = || GitError::Timeout {
            url: self.shown.clone(),
            timeout: limits.timeout,
        };

        let mut password_sent = false;
        let mut key_sent = false;
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, user_from_url, allowed| {
            if Instant::now() > deadline {
                return Err(fail(timed_out()));
            }
            let user = self.username(user_from_url);
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(&user);
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                if let Some(key) = &self.options.ssh_key {
                    if key_sent {
                        return Err(fail(GitError::Auth {
                            url: self.shown.clone(),
                            user,
                            detail: format!(": the server refused the key {}", key.display()),
                        }));
                    }
                    key_sent = true;
                    return Cred::ssh_key(&user, None, key, passphrase.as_deref());
                }
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(password) = &password {
                    // Asked again: the server refused what was sent.
                    if password_sent {
                        return Err(fail(GitError::Auth {
                            url: self.shown.clone(),
                            user,
                            detail: String::new(),
                        }));
                    }
                    password_sent = true;
                    return Cred::userpass_plaintext(&user, password);
                }
            }
            Err(fail(GitError::NoCredentials {
                url: self.shown.clone(),
                asked: describe_credentials(allowed),
                hint: "--git-password-file or --git-password-env (with --git-username) for http(s), --git-ssh-key for ssh",
            }))
        });
        callbacks.certificate_check(|cert, _host| match (&self.transport, cert.as_hostkey()) {
            (Transport::Ssh { host, port, .. }, Some(hostkey)) => {
                let Some(known) = &known_hosts else {
                    return Err(fail(GitError::Config {
                        url: self.shown.clone(),
                        why: "ssh needs --git-known-hosts".to_owned(),
                    }));
                };
                let checked = match hostkey.hostkey() {
                    Some(raw) => known.check(host, *port, raw),
                    None => Err(HostKeyError::Undecodable {
                        host: host_name(host, *port),
                        why: "libssh2 gave no key".to_owned(),
                    }),
                };
                match checked {
                    Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                    Err(source) => Err(fail(GitError::HostKey {
                        url: self.shown.clone(),
                        source: Box::new(source),
                    })),
                }
            }
            // X.509 (https): libgit2 has verified the chain and the name against the system's
            // roots and --git-ca-file; its verdict stands.
            (Transport::Http { .. }, None) => Ok(CertificateCheckStatus::CertificatePassthrough),
            _ => Err(fail(GitError::Config {
                url: self.shown.clone(),
                why: "the server presented a certificate of the wrong kind for this transport"
                    .to_owned(),
            })),
        });
        callbacks.transfer_progress(|progress| {
            if progress.received_bytes() as u64 > limits.max_size {
                fail(GitError::TooLarge {
                    url: self.shown.clone(),
                    limit: limits.max_size,
                });
                return false;
            }
            if Instant::now() > deadline {
                fail(timed_out());
                return false;
            }
            true
        });
        callbacks.sideband_progress(|_| {
            if Instant::now() > deadline {
                fail(timed_out());
                return false;
            }
            true
        });

        let git = |what: &'static str| self.git_error(what);
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(git("open the remote"))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(git2::AutotagOption::All);
        let fetched = remote.fetch(
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            Some(&mut options),
            None,
        );
        drop(options);
        if let Err(e) = fetched {
            if let Some(reason) = failure.into_inner() {
                return Err(reason);
            }
            return Err(self.classify(e, Instant::now() > deadline));
        }
        self.resolve()
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

    /// Turns a libgit2 fetch error into the error an operator can act on.
    fn classify(&self, e: git2::Error, past_deadline: bool) -> GitError {
        let e = scrubbed(&e, &self.url);
        let url = self.shown.clone();
        // libssh2's session timeout is --git-timeout too (set above as the server timeout):
        // its "Timed out waiting on socket" may come a moment before the deadline checks.
        let ssh_timeout = e.class() == ErrorClass::Ssh && e.message().contains("Timed out");
        if e.code() == ErrorCode::Timeout || past_deadline || ssh_timeout {
            return GitError::Timeout {
                url,
                timeout: self.options.timeout,
            };
        }
        if e.code() == ErrorCode::Certificate || e.class() == ErrorClass::Ssl {
            let (anchors, hint) = match &self.options.ca_file {
                Some(f) => (format!("the system's CA roots and {}", f.display()), ""),
                None => (
                    "the system's CA roots".to_owned(),
                    " (for a server with a private CA, give the CA's certificate with --git-ca-file)",
                ),
            };
            return GitError::Tls {
                url,
                anchors,
                detail: e.message().to_owned(),
                hint,
            };
        }
        if e.code() == ErrorCode::Auth {
            return GitError::Auth {
                url,
                user: self.username(None),
                detail: format!(": {}", e.message()),
            };
        }
        let message = e.message();
        let network = !matches!(self.transport, Transport::File);
        if network
            && matches!(
                e.class(),
                ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh
            )
            && (message.starts_with("failed to connect")
                || message.starts_with("failed to resolve address")
                || message.contains("Connection refused")
                || message.contains("No route to host"))
        {
            return GitError::Unreachable {
                url,
                detail: message.to_owned(),
            };
        }
        GitError::Git {
            what: "fetch".to_owned(),
            url,
            source: e,
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

    fn resolve(&self) -> Result<Oid, GitError> {
        for name in [
            format!("refs/remotes/origin/{}", self.reference),
            format!("refs/tags/{}", self.reference),
        ] {
            if let Ok(r) = self.repo.find_reference(&name) {
                if let Ok(c) = r.peel_to_commit() {
                    return Ok(c.id());
                }
            }
        }
        if let Ok(oid) = Oid::from_str(&self.reference) {
            if let Ok(c) = self.repo.find_commit(oid) {
                return Ok(c.id());
            }
        }
        Err(GitError::UnknownRef {
            reference: self.reference.clone(),
            url: self.shown.clone(),
        })
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

/// Checks that `options` fit the transport before anything goes on the network, and warns
/// about what they cannot do; returns the secret of `--git-password-env`. `url` is the URL as
/// shown ([`redacted`]): it only names the source in errors and warnings.
fn check_options(
    url: &str,
    transport: &Transport,
    options: &GitOptions,
) -> Result<Option<String>, GitError> {
    let config = |why: String| GitError::Config {
        url: url.to_owned(),
        why,
    };
    if options.timeout.is_zero() {
        return Err(config("--git-timeout must be more than zero".to_owned()));
    }
    if options.max_size == 0 {
        return Err(config("--git-max-size must be more than zero".to_owned()));
    }
    if options.max_policy_size == 0 {
        return Err(config(
            "--git-max-policy-size must be more than zero".to_owned(),
        ));
    }
    if options.password_file.is_some() && options.password_env.is_some() {
        return Err(config(
            "give the password with --git-password-file or with --git-password-env, not both"
                .to_owned(),
        ));
    }
    let readable = |file: &Path, flag: &str| {
        std::fs::File::open(file)
            .map(drop)
            .map_err(|e| config(format!("{flag} {}: {e}", file.display())))
    };
    let mut env_secret = None;
    match transport {
        Transport::File | Transport::GitDaemon => {
            let unused: Vec<&str> = [
                (options.password_file.is_some(), "--git-password-file"),
                (options.password_env.is_some(), "--git-password-env"),
                (options.ssh_key.is_some(), "--git-ssh-key"),
                (options.known_hosts.is_some(), "--git-known-hosts"),
                (options.ca_file.is_some(), "--git-ca-file"),
            ]
            .into_iter()
            .filter_map(|(set, flag)| set.then_some(flag))
            .collect();
            if !unused.is_empty() {
                warn!(source = url, flags = %unused.join(" "), "these Git settings do not apply to this transport and are ignored");
            }
        }
        Transport::Http { tls, .. } => {
            if let Some(file) = &options.password_file {
                read_secret(url, file, "--git-password-file")?;
            }
            if let Some(var) = &options.password_env {
                match std::env::var(var) {
                    Ok(v) if !v.trim_end_matches(['\n', '\r']).is_empty() => {
                        env_secret = Some(v.trim_end_matches(['\n', '\r']).to_owned());
                    }
                    Ok(_) => return Err(config(format!("--git-password-env: {var} is empty"))),
                    Err(_) => return Err(config(format!("--git-password-env: {var} is not set"))),
                }
            }
            if let Some(ca) = &options.ca_file {
                if !tls {
                    warn!(
                        source = url,
                        "--git-ca-file does not apply to http:// and is ignored"
                    );
                } else {
                    load_ca_file(url, ca)?;
                }
            }
            let credentials = options.password_file.is_some() || options.password_env.is_some();
            if !tls && credentials {
                static CLEAR: Once = Once::new();
                CLEAR.call_once(|| {
                    warn!(source = url, "the Git source is http:// without TLS: its credentials travel in clear; use https:// beyond a trusted local network");
                });
            }
            if options.ssh_key.is_some() || options.known_hosts.is_some() {
                warn!(
                    source = url,
                    "--git-ssh-key and --git-known-hosts do not apply to http(s) and are ignored"
                );
            }
        }
        Transport::Ssh { .. } => {
            let Some(known_hosts) = &options.known_hosts else {
                return Err(config("an ssh source needs --git-known-hosts FILE (OpenSSH known_hosts with the server's host keys; they are never trusted on first use)".to_owned()));
            };
            KnownHosts::load(known_hosts).map_err(|source| GitError::KnownHosts {
                url: url.to_owned(),
                source,
            })?;
            let Some(key) = &options.ssh_key else {
                return Err(config(
                    "an ssh source needs --git-ssh-key FILE (a private key the server accepts)"
                        .to_owned(),
                ));
            };
            readable(key, "--git-ssh-key")?;
            if let Some(file) = &options.ssh_key_passphrase_file {
                read_secret(url, file, "--git-ssh-key-passphrase-file")?;
            }
            if options.password_file.is_some()
                || options.password_env.is_some()
                || options.ca_file.is_some()
            {
                warn!(source = url, "--git-password-file, --git-password-env and --git-ca-file do not apply to ssh and are ignored");
            }
        }
    }
    Ok(env_secret)
}

/// What a server accepts, in words: `a user and password or an ssh key`.
fn describe_credentials(allowed: CredentialType) -> String {
    let words: Vec<&str> = [
        (CredentialType::USER_PASS_PLAINTEXT, "a user and password"),
        (CredentialType::SSH_KEY, "an ssh key"),
        (CredentialType::SSH_MEMORY, "an ssh key"),
        (CredentialType::SSH_CUSTOM, "an ssh signature"),
        (CredentialType::SSH_INTERACTIVE, "keyboard-interactive ssh"),
        (CredentialType::DEFAULT, "Negotiate/NTLM"),
        (CredentialType::USERNAME, "a user name"),
    ]
    .into_iter()
    .filter(|(t, _)| allowed.contains(*t))
    .map(|(_, w)| w)
    .fold(Vec::new(), |mut acc, w| {
        if !acc.contains(&w) {
            acc.push(w);
        }
        acc
    });
    if words.is_empty() {
        format!("{allowed:?}")
    } else {
        words.join(" or ")
    }
}

/// Reads a secret from `file`: its content without trailing newlines, which must leave
/// something. The error names the flag and the file, never the content.
fn read_secret(url: &str, file: &Path, flag: &str) -> Result<String, GitError> {
    let text = std::fs::read_to_string(file).map_err(|e| GitError::Config {
        url: url.to_owned(),
        why: format!("{flag} {}: {e}", file.display()),
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(GitError::Config {
            url: url.to_owned(),
            why: format!("{flag} {}: the file is empty", file.display()),
        });
    }
    Ok(secret.to_owned())
}

/// Adds the CA certificates of `file` (PEM) to the ones libgit2 trusts for https, after
/// checking that it holds at least one.
fn load_ca_file(url: &str, file: &Path) -> Result<(), GitError> {
    let config = |why: String| GitError::Config {
        url: url.to_owned(),
        why: format!("--git-ca-file {}: {why}", file.display()),
    };
    let text = std::fs::read_to_string(file).map_err(|e| config(e.to_string()))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(config("no PEM certificate in it".to_owned()));
    }
    let _globals = libgit2_globals();
    // SAFETY: a libgit2 global setting, changed with LIBGIT2_GLOBALS held.
    unsafe { git2::opts::set_ssl_cert_file(file) }.map_err(|e| config(e.message().to_owned()))
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
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_commit_is_read_whole_and_a_new_commit_is_a_new_revision() {
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let repo = work.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(repo.join("policies/edge")).unwrap();
        std::fs::write(repo.join("policies/edge/a.yaml"), "a: 1\n").unwrap();
        std::fs::write(repo.join("policies/README.md"), "not policy\n").unwrap();
        std::fs::write(repo.join("other.yaml"), "outside the path\n").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "one"]);
        let url = format!("file://{}", repo.display());
        let src = GitSource::open(
            &url,
            "main",
            "policies",
            &GitOptions::default(),
            cache.path(),
        )
        .unwrap();
        let first = src.fetch().unwrap();
        let docs = src.read(first).unwrap();
        assert_eq!(docs.revision.id, first.to_string());
        assert_eq!(
            docs.files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            vec!["edge/a.yaml"]
        );

        std::fs::write(repo.join("policies/b.yml"), "b: 2\n").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "two"]);
        git(repo, &["tag", "v2"]);
        let second = src.fetch().unwrap();
        assert_ne!(first, second);
        assert_eq!(src.read(second).unwrap().files.len(), 2);
        // A tag and a commit id are refs too.
        assert_eq!(
            GitSource::open(&url, "v2", "policies", &GitOptions::default(), cache.path())
                .unwrap()
                .fetch()
                .unwrap(),
            second
        );
        assert_eq!(
            GitSource::open(
                &url,
                &first.to_string(),
                "policies",
                &GitOptions::default(),
                cache.path()
            )
            .unwrap()
            .fetch()
            .unwrap(),
            first
        );
        // Errors name what is wrong.
        let e = GitSource::open(
            &url,
            "no-such-branch",
            "",
            &GitOptions::default(),
            cache.path(),
        )
        .unwrap()
        .fetch()
        .unwrap_err();
        assert!(e.to_string().contains("no-such-branch"), "{e}");
        let e = GitSource::open(
            &url,
            "main",
            "nowhere",
            &GitOptions::default(),
            cache.path(),
        )
        .unwrap();
        let e = e.read(e.fetch().unwrap()).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        let e = GitSource::open(
            "file:///nonexistent/repo",
            "main",
            "",
            &GitOptions::default(),
            cache.path(),
        )
        .unwrap()
        .fetch()
        .unwrap_err();
        assert!(e.to_string().contains("fetch"), "{e}");
    }

    #[test]
    fn git_urls_are_told_from_directories() {
        for url in [
            "file:///srv/policy",
            "git://git.example.com/policy",
            "https://git.example.com/org/policy.git",
            "http://127.0.0.1:8080/policy",
            "ssh://git@git.example.com:2222/org/policy.git",
            "git@git.example.com:org/policy.git",
            "git@[2001:db8::1]:policy.git",
            "htps://typo.example.com/policy",
        ] {
            assert!(is_git_url(url), "{url}");
        }
        for dir in [
            "/etc/tollgate/policies",
            "policies",
            "./a:b",
            "policies:v2",
            "/srv/a@b:c",
        ] {
            assert!(!is_git_url(dir), "{dir}");
        }
        assert_eq!(
            Transport::parse("git@git.example.com:org/policy.git"),
            Ok(Transport::Ssh {
                user: Some("git".into()),
                host: "git.example.com".into(),
                port: 22
            })
        );
        assert_eq!(
            Transport::parse("ssh://deploy@[2001:db8::1]:2222/policy.git"),
            Ok(Transport::Ssh {
                user: Some("deploy".into()),
                host: "2001:db8::1".into(),
                port: 2222
            })
        );
        assert_eq!(
            Transport::parse("https://bot%40example@git.example.com/p.git"),
            Ok(Transport::Http {
                tls: true,
                user: Some("bot@example".into())
            })
        );
    }

    /// Every way a URL is shown: the refusal of a password, `describe()` (the revision's
    /// source in `/status` and metrics), the revision read, and libgit2's errors, which quote
    /// the path they were given.
    #[test]
    fn a_password_or_a_token_in_the_url_is_never_shown() {
        let cache = tempfile::tempdir().unwrap();
        let e = GitSource::open(
            "https://bot:hunter2@git.example.com/policy?token=SECRET",
            "main",
            "",
            &GitOptions::default(),
            cache.path(),
        )
        .err()
        .expect("a password in the URL is refused");
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("SECRET"),
            "{text}"
        );

        // A token in the query of a URL the source accepts.
        let work = tempfile::tempdir().unwrap();
        let repo = work.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("a.yaml"), "a: 1\n").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "one"]);
        let url = format!("file://{}?private_token=S%45CRET", repo.display());
        let src = GitSource::open(&url, "main", "", &GitOptions::default(), cache.path()).unwrap();
        assert_eq!(
            src.describe(),
            format!("file://{}?***@main", repo.display())
        );
        let shown = |e: GitError| format!("{e} {e:?}");
        let mut said = vec![src.describe()];
        match src.fetch() {
            // libgit2 takes the query for part of the path: a repository that is not there.
            Err(e) => said.push(shown(e)),
            Ok(commit) => said.push(format!("{:?}", src.read(commit).unwrap().revision)),
        }
        said.push(shown(src.rev_parse("no-such-ref").unwrap_err()));
        for text in &said {
            assert!(
                !text.contains("SECRET") && !text.contains("S%45CRET"),
                "{text}"
            );
        }
        assert!(said[1].contains("?***"), "{said:?}");
        let https = GitSource::open(
            "https://127.0.0.1:19533/policy.git?token=SECRET",
            "main",
            "",
            &GitOptions {
                timeout: Duration::from_secs(2),
                ..GitOptions::default()
            },
            cache.path(),
        )
        .unwrap();
        let text = shown(https.fetch().unwrap_err());
        assert!(!text.contains("SECRET"), "{text}");
        assert!(
            text.contains("https://127.0.0.1:19533/policy.git?***"),
            "{text}"
        );
    }

    fn open_err(url: &str, options: &GitOptions) -> String {
        let cache = tempfile::tempdir().unwrap();
        match GitSource::open(url, "main", "", options, cache.path()) {
            Ok(_) => panic!("{url} with {options:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn urls_and_settings_are_checked_before_anything_goes_on_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        let known_hosts = file(
            "known_hosts",
            "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEdk0ygxc2Asekl6EM2z/9euZ2KaemvsQowOfmtoJhHA\n",
        );
        let key = file("id_ed25519", "not checked before the server asks\n");
        let none = GitOptions::default();

        let e = open_err("ftp://git.example.com/policy", &none);
        assert!(e.contains("unsupported scheme ftp://"), "{e}");
        let e = open_err("https://bot:hunter2@git.example.com/policy", &none);
        assert!(e.contains("carries a password"), "{e}");
        assert!(e.contains("https://bot:***@git.example.com/policy"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = open_err("ssh:///policy", &none);
        assert!(e.contains("bad source URL"), "{e}");

        let ssh = "ssh://git@git.example.com/policy.git";
        let e = open_err(ssh, &none);
        assert!(e.contains("needs --git-known-hosts"), "{e}");
        let e = open_err(
            ssh,
            &GitOptions {
                known_hosts: Some(known_hosts.clone()),
                ..GitOptions::default()
            },
        );
        assert!(e.contains("needs --git-ssh-key"), "{e}");
        let e = open_err(
            ssh,
            &GitOptions {
                known_hosts: Some(dir.path().join("missing")),
                ssh_key: Some(key.clone()),
                ..GitOptions::default()
            },
        );
        assert!(e.contains("cannot read the known_hosts file"), "{e}");
        let bad_known_hosts = file("bad_known_hosts", "git.example.com ssh-ed25519\n");
        let e = open_err(
            ssh,
            &GitOptions {
                known_hosts: Some(bad_known_hosts.clone()),
                ssh_key: Some(key.clone()),
                ..GitOptions::default()
            },
        );
        assert!(
            e.contains(&format!(
                "{}:1: not a known_hosts entry",
                bad_known_hosts.display()
            )),
            "{e}"
        );
        let cache = tempfile::tempdir().unwrap();
        let ssh_options = GitOptions {
            known_hosts: Some(known_hosts.clone()),
            ssh_key: Some(key.clone()),
            ..GitOptions::default()
        };
        GitSource::open(ssh, "main", "", &ssh_options, cache.path()).unwrap();
        GitSource::open(
            "git@git.example.com:policy.git",
            "main",
            "",
            &ssh_options,
            cache.path(),
        )
        .unwrap();

        let https = "https://git.example.com/policy.git";
        let e = open_err(
            https,
            &GitOptions {
                password_file: Some(dir.path().join("missing")),
                ..GitOptions::default()
            },
        );
        assert!(e.contains("--git-password-file"), "{e}");
        let e = open_err(
            https,
            &GitOptions {
                password_file: Some(file("empty", "\n")),
                ..GitOptions::default()
            },
        );
        assert!(e.contains("the file is empty"), "{e}");
        let e = open_err(
            https,
            &GitOptions {
                password_file: Some(file("token", "t0ken\n")),
                password_env: Some("PATH".into()),
                ..GitOptions::default()
            },
        );
        assert!(e.contains("not both"), "{e}");
        let e = open_err(
            https,
            &GitOptions {
                password_env: Some("TOLLGATE_TEST_NO_SUCH_VARIABLE".into()),
                ..GitOptions::default()
            },
        );
        assert!(
            e.contains("--git-password-env: TOLLGATE_TEST_NO_SUCH_VARIABLE is not set"),
            "{e}"
        );
        let e = open_err(
            https,
            &GitOptions {
                ca_file: Some(file("not-a-ca.pem", "hello\n")),
                ..GitOptions::default()
            },
        );
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = open_err(
            https,
            &GitOptions {
                timeout: Duration::ZERO,
                ..GitOptions::default()
            },
        );
        assert!(e.contains("--git-timeout"), "{e}");

        // The secret: trailing newlines trimmed, read again on every use.
        let token = file("token", "t0ken\r\n");
        let src = GitSource::open(
            https,
            "main",
            "",
            &GitOptions {
                password_file: Some(token.clone()),
                ..GitOptions::default()
            },
            cache.path(),
        )
        .unwrap();
        assert_eq!(src.password().unwrap().as_deref(), Some("t0ken"));
        std::fs::write(&token, "rotated").unwrap();
        assert_eq!(src.password().unwrap().as_deref(), Some("rotated"));
        assert_eq!(src.username(None), DEFAULT_USERNAME);
        let src = GitSource::open(
            "https://alice@git.example.com/p.git",
            "main",
            "",
            &GitOptions::default(),
            cache.path(),
        )
        .unwrap();
        assert_eq!(src.username(None), "alice");
    }

    /// An HTTP server on 127.0.0.1:`port` that answers every request with 401 (basic auth
    /// required), for `requests` requests; returns what it was sent.
    fn refusing_server(port: u16, requests: usize) -> std::thread::JoinHandle<Vec<String>> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for stream in listener.incoming().take(requests) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
            seen
        })
    }

    #[test]
    fn a_server_that_wants_credentials_gets_them_once_and_a_refusal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1:19532/policy";
        // No credentials configured.
        let server = refusing_server(19532, 1);
        let cache = tempfile::tempdir().unwrap();
        let e = GitSource::open(url, "main", "", &GitOptions::default(), cache.path())
            .unwrap()
            .fetch()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("git: {url} asks for credentials (a user and password) and none are configured for it: --git-password-file or --git-password-env (with --git-username) for http(s), --git-ssh-key for ssh")
        );
        server.join().unwrap();

        // Credentials the server refuses: sent once (basic auth), then reported.
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let server = refusing_server(19532, 2);
        let options = GitOptions {
            username: Some("deploy".into()),
            password_file: Some(token),
            ..GitOptions::default()
        };
        let e = GitSource::open(url, "main", "", &options, cache.path())
            .unwrap()
            .fetch()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("git: authentication failed for {url} (user deploy)")
        );
        let seen = server.join().unwrap();
        // "deploy:t0ken", base64: the trailing newline of the file is not part of it.
        assert!(
            seen[1].contains("Authorization: Basic ZGVwbG95OnQwa2Vu"),
            "{seen:?}"
        );
        assert!(!seen[0].contains("Authorization"), "{seen:?}");
    }

    #[test]
    fn a_fetch_over_the_size_cap_is_aborted() {
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let repo = work.path();
        git(repo, &["init", "-q", "-b", "main"]);
        // 256 KiB that do not compress (an xorshift stream).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let blob: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(repo.join("blob.bin"), blob).unwrap();
        std::fs::write(repo.join("a.yaml"), "a: 1\n").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "big"]);
        let url = format!("file://{}", repo.display());
        let small = GitOptions {
            max_size: 64 * 1024,
            ..GitOptions::default()
        };
        let e = GitSource::open(&url, "main", "", &small, cache.path())
            .unwrap()
            .fetch()
            .unwrap_err();
        assert!(
            matches!(e, GitError::TooLarge { limit, .. } if limit == 64 * 1024),
            "{e}"
        );
        // Nothing of the refused fetch is left behind: the ref is unknown to the mirror.
        let mirror = GitSource::open(&url, "main", "", &small, cache.path()).unwrap();
        assert!(mirror.resolve().is_err());
        // Under a cap it fits, the same repository is fetched.
        let roomy = GitOptions {
            max_size: 1024 * 1024,
            ..GitOptions::default()
        };
        GitSource::open(&url, "main", "", &roomy, cache.path())
            .unwrap()
            .fetch()
            .unwrap();
        let e = GitError::TooLarge {
            url: url.clone(),
            limit: 64 * 1024,
        };
        assert!(
            e.to_string()
                .contains("more than --git-max-size 64 KiB (65536 bytes)"),
            "{e}"
        );
    }

    #[test]
    fn a_server_that_never_answers_times_out_and_a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:19530").unwrap();
        let held = std::thread::spawn(move || {
            let mut streams = Vec::new();
            for s in listener.incoming().take(2) {
                streams.push(s);
            }
            std::thread::sleep(Duration::from_secs(8));
        });
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, "").unwrap();
        let key = dir.path().join("id");
        std::fs::write(&key, "unused").unwrap();
        let options = GitOptions {
            timeout: Duration::from_secs(1),
            known_hosts: Some(known_hosts),
            ssh_key: Some(key),
            ..GitOptions::default()
        };
        for url in [
            "https://127.0.0.1:19530/policy",
            "ssh://git@127.0.0.1:19530/policy",
        ] {
            let cache = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let e = GitSource::open(url, "main", "", &options, cache.path())
                .unwrap()
                .fetch()
                .unwrap_err();
            assert!(matches!(e, GitError::Timeout { .. }), "{url}: {e}");
            assert_eq!(
                e.to_string(),
                format!("git: fetching {url} took longer than --git-timeout 1s; aborted")
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{url}: {:?}",
                started.elapsed()
            );
        }
        drop(held);

        // Nothing listens on 19531.
        let cache = tempfile::tempdir().unwrap();
        let e = GitSource::open(
            "https://127.0.0.1:19531/policy",
            "main",
            "",
            &options,
            cache.path(),
        )
        .unwrap()
        .fetch()
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("git: cannot reach https://127.0.0.1:19531/policy: "),
            "{e}"
        );
    }
}
