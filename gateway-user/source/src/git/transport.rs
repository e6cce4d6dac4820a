//! Which transport a source names: telling a Git URL from a directory ([`is_git_url`]), and
//! reading the scheme, user, host and port from the URL. Apart from `git.rs` because it is
//! pure text work, done before any repository is opened.

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
pub(super) enum Transport {
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
    pub(super) fn parse(url: &str) -> Result<Transport, String> {
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
