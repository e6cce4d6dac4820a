//! The settings of the Git source ([`GitOptions`], one field per flag of `tollgate run`, with
//! their defaults), their checks against the transport when the source is opened (before
//! anything goes on the network), and reading the secret and CA files they name. Apart from
//! `git.rs` because they are the operator's input, checked up front; the source only uses them.
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use tracing::warn;

use super::{libgit2_globals, GitError, Transport};
use crate::known_hosts::KnownHosts;

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
/// Checks that `options` fit the transport before anything goes on the network, and warns
/// about what they cannot do; returns the secret of `--git-password-env`. `url` is the URL as
/// shown ([`redacted`](crate::redacted)): it only names the source in errors and warnings.
pub(super) fn check_options(
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

/// Reads a secret from `file`: its content without trailing newlines, which must leave
/// something. The error names the flag and the file, never the content.
pub(super) fn read_secret(url: &str, file: &Path, flag: &str) -> Result<String, GitError> {
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
