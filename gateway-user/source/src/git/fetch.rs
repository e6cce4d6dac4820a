//! The fetch: credentials (sent once; a second request is a refusal), ssh host keys checked
//! against the operator's known_hosts file, the limits of time and size enforced from
//! libgit2's callbacks, and libgit2's errors turned into ones an operator can act on. Apart
//! from `git.rs` because it is the only part that goes on the network.
use std::cell::RefCell;
use std::time::Instant;

use git2::{
    CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, Oid,
    RemoteCallbacks,
};
use tracing::warn;

use super::options::{read_secret, DEFAULT_USERNAME};
use super::{libgit2_globals, scrubbed, GitError, GitSource, Transport};
use crate::known_hosts::{host_name, HostKeyError, KnownHosts};

impl GitSource {
    /// The user name sent to the server: `--git-username`, else the URL's, else `git`.
    pub(super) fn username(&self, from_url: Option<&str>) -> String {
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
    pub(super) fn password(&self) -> Result<Option<String>, GitError> {
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
        // A branch or tag deleted on the server goes here too: kept, it would be followed as
        // if nothing had happened, and the deletion never reported.
        options.prune(git2::FetchPrune::On);
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

    pub(super) fn resolve(&self) -> Result<Oid, GitError> {
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
