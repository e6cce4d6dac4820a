//! Host key checking for the ssh transport of the Git source, against an OpenSSH `known_hosts`
//! file (`--git-known-hosts`): the key the server presents must be listed for that host, or the
//! connection is refused. Nothing is ever trusted on first use and the file is never written.
//!
//! The format is OpenSSH's (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): an optional marker
//! (`@revoked`; `@cert-authority` lines are read but vouch for nothing here, libssh2 does not
//! present host certificates), comma-separated host patterns (`*` and `?` globs, `!` negation,
//! `[host]:port` for ports other than 22) or one hashed name (`|1|salt|hash`, as `ssh-keygen -H`
//! writes), the key type and the base64 key. Parsing is ssh-key's; matching follows OpenSSH.
use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::{HashAlg, PublicKey};

/// Why a known_hosts file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// The file cannot be read.
    #[error("cannot read the known_hosts file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a known_hosts entry.
    #[error("{}:{line}: not a known_hosts entry (marker, host patterns, key type, base64 key): {why}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What ssh-key said.
        why: String,
    },
}

/// Why a host key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    /// No entry names the host.
    #[error("host key of {host} is not in {} (the server presented {presented}); refused: host keys are never trusted on first use, add the server's key to that file once you have checked it out of band (ssh-keyscan prints it)", file.display())]
    Unknown {
        /// `host` or `[host]:port`.
        host: String,
        /// The known_hosts file.
        file: PathBuf,
        /// Type and SHA256 fingerprint of the key the server presented.
        presented: KeyId,
    },
    /// Entries name the host, with other keys.
    #[error("host key of {host} has changed: the server presented {presented}, {} lists {} for it; refused (a man-in-the-middle, or a new key on the server: update that file once you have checked the new key out of band)", file.display(), list(known))]
    Changed {
        /// `host` or `[host]:port`.
        host: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The key the server presented.
        presented: KeyId,
        /// The keys listed for the host, with their line numbers.
        known: Vec<(usize, KeyId)>,
    },
    /// The key is marked `@revoked`.
    #[error("host key of {host} ({presented}) is marked @revoked in {}:{line}; refused", file.display())]
    Revoked {
        /// `host` or `[host]:port`.
        host: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The revoked key.
        presented: KeyId,
        /// The line of the `@revoked` entry.
        line: usize,
    },
    /// The server's key is not an SSH public key blob.
    #[error("the host key {host} presented cannot be decoded ({why}); refused")]
    Undecodable {
        /// `host` or `[host]:port`.
        host: String,
        /// What ssh-key said.
        why: String,
    },
}

/// A key as people compare them: its type and SHA256 fingerprint, as `ssh-keygen -l` prints
/// them (`ssh-ed25519 SHA256:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    /// The algorithm (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...).
    pub algorithm: String,
    /// `SHA256:` and the unpadded base64 of the SHA-256 of the key blob.
    pub fingerprint: String,
}

impl KeyId {
    fn of(key: &PublicKey) -> KeyId {
        KeyId {
            algorithm: key.algorithm().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.fingerprint)
    }
}

fn list(known: &[(usize, KeyId)]) -> String {
    known
        .iter()
        .map(|(line, key)| format!("{key} (line {line})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name a host is listed under: `host` on port 22, `[host]:port` otherwise (lower case,
/// as OpenSSH compares them).
pub fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// A parsed known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    /// Entries with their 1-based line numbers.
    entries: Vec<(usize, Entry)>,
}

impl KnownHosts {
    /// Reads and parses `path`. Every line must be an entry, a comment or blank: a line that
    /// cannot be read is an error (it could be the `@revoked` line that matters).
    pub fn load(path: &Path) -> Result<KnownHosts, KnownHostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KnownHostsError::Read {
            path: path.to_owned(),
            source,
        })?;
        KnownHosts::parse(path, &text)
    }

    /// Parses the text of a known_hosts file (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<KnownHosts, KnownHostsError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry: Entry =
                line.parse()
                    .map_err(|e: ssh_key::Error| KnownHostsError::Parse {
                        path: path.to_owned(),
                        line: i + 1,
                        why: e.to_string(),
                    })?;
            entries.push((i + 1, entry));
        }
        Ok(KnownHosts {
            path: path.to_owned(),
            entries,
        })
    }

    /// The keys listed for `host` on `port` (not `@revoked` or `@cert-authority` ones), with
    /// their line numbers.
    pub fn keys_for(&self, host: &str, port: u16) -> Vec<(usize, &PublicKey)> {
        let name = host_name(host, port);
        self.entries
            .iter()
            .filter(|(_, e)| e.marker().is_none() && matches_host(e.host_patterns(), &name))
            .map(|(line, e)| (*line, e.public_key()))
            .collect()
    }

    /// Accepts `presented` (the SSH wire encoding of the server's host key, as libssh2 gives
    /// it) for `host` on `port` only when an entry for that host lists exactly this key and no
    /// `@revoked` entry for the host names it.
    pub fn check(&self, host: &str, port: u16, presented: &[u8]) -> Result<(), HostKeyError> {
        let name = host_name(host, port);
        let key = PublicKey::from_bytes(presented).map_err(|e| HostKeyError::Undecodable {
            host: name.clone(),
            why: e.to_string(),
        })?;
        let presented_id = KeyId::of(&key);
        for (line, entry) in &self.entries {
            if entry.marker() == Some(&Marker::Revoked)
                && matches_host(entry.host_patterns(), &name)
                && entry.public_key().key_data() == key.key_data()
            {
                return Err(HostKeyError::Revoked {
                    host: name,
                    file: self.path.clone(),
                    presented: presented_id,
                    line: *line,
                });
            }
        }
        let known = self.keys_for(host, port);
        if known.iter().any(|(_, k)| k.key_data() == key.key_data()) {
            return Ok(());
        }
        if known.is_empty() {
            return Err(HostKeyError::Unknown {
                host: name,
                file: self.path.clone(),
                presented: presented_id,
            });
        }
        Err(HostKeyError::Changed {
            host: name,
            file: self.path.clone(),
            presented: presented_id,
            known: known.iter().map(|(l, k)| (*l, KeyId::of(k))).collect(),
        })
    }
}

/// Whether an entry's host patterns name `name` (`host` or `[host]:port`): a hashed name must
/// be the HMAC-SHA1 of `name` under its salt; otherwise some pattern must match and no negated
/// (`!`) pattern may (OpenSSH's `match_hostname`).
fn matches_host(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                if let Some(negated) = pattern.strip_prefix('!') {
                    if glob(negated.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob(pattern.as_bytes(), name.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// OpenSSH's wildcard match: `*` any run of characters (also none), `?` exactly one.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative, with one backtrack point (the last `*`): linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `ssh-keygen -t ed25519` / `-t ecdsa`; the fingerprints are what
    // `ssh-keygen -lf` printed for them, an independent implementation.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEdk0ygxc2Asekl6EM2z/9euZ2KaemvsQowOfmtoJhHA";
    const ED25519_FP: &str = "SHA256:6Ljl0WVfNLARuuKpZ/CloRNp1jXhZmAFsY2p5phKZdM";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBFGk3wFcmpqkeiPTTkO/scYR9gxj3RHUDBj1gi+cqNmKACl57i760Zub8wnlwHqY8X6FsvHMJ/N3fIBF8KhNMY=";
    const ECDSA_FP: &str = "SHA256:3G6ticlw+wc6eGDQWNxZ3fDDKhBz5KQix/p1YJ58lQs";
    // `ssh-keygen -H` of "git.example.com <ED25519>" and "[git.example.com]:2222 <ED25519>".
    const HASHED_22: &str = "|1|hFU/SWZ+0QJ9LHdNSdVtkvFGkkI=|f0mrgj3Y0cW8Swzrta8mGfjxTbw=";
    const HASHED_2222: &str = "|1|iwehCwaVtdYgYv/ITURb8iE0gnw=|xRtXZuCaKOZ3aNFtO83wdBb81L4=";

    fn blob(openssh: &str) -> Vec<u8> {
        PublicKey::from_openssh(openssh)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    fn hosts(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("/etc/tollgate/known_hosts"), text).unwrap()
    }

    #[test]
    fn fingerprints_are_the_ones_ssh_keygen_prints() {
        let id = KeyId::of(&PublicKey::from_openssh(ED25519).unwrap());
        assert_eq!(id.to_string(), format!("ssh-ed25519 {ED25519_FP}"));
        let id = KeyId::of(&PublicKey::from_openssh(ECDSA).unwrap());
        assert_eq!(id.to_string(), format!("ecdsa-sha2-nistp256 {ECDSA_FP}"));
    }

    #[test]
    fn a_listed_key_is_accepted_for_its_host_and_port_only() {
        let kh = hosts(&format!(
            "# comment\n\ngit.example.com,10.0.0.1 {ED25519}\n[git.example.com]:2222 {ECDSA} a comment\n"
        ));
        assert_eq!(kh.check("git.example.com", 22, &blob(ED25519)), Ok(()));
        assert_eq!(kh.check("GIT.example.com", 22, &blob(ED25519)), Ok(()));
        assert_eq!(kh.check("10.0.0.1", 22, &blob(ED25519)), Ok(()));
        assert_eq!(kh.check("git.example.com", 2222, &blob(ECDSA)), Ok(()));
        // The port-22 entry does not vouch for another port, nor the other way round.
        let e = kh
            .check("git.example.com", 2222, &blob(ED25519))
            .unwrap_err();
        assert!(matches!(e, HostKeyError::Changed { .. }), "{e}");
        let e = kh.check("10.0.0.1", 2222, &blob(ED25519)).unwrap_err();
        assert!(matches!(e, HostKeyError::Unknown { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("host key of [10.0.0.1]:2222 is not in /etc/tollgate/known_hosts"),
            "{text}"
        );
        assert!(text.contains(ED25519_FP), "{text}");
    }

    #[test]
    fn a_changed_key_is_refused_naming_both_fingerprints() {
        let kh = hosts(&format!("git.example.com {ED25519}\n"));
        let e = kh.check("git.example.com", 22, &blob(ECDSA)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("host key of git.example.com has changed"),
            "{text}"
        );
        assert!(
            text.contains(&format!("presented ecdsa-sha2-nistp256 {ECDSA_FP}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("ssh-ed25519 {ED25519_FP} (line 1)")),
            "{text}"
        );
    }

    #[test]
    fn hashed_names_are_matched_with_hmac_sha1() {
        let kh = hosts(&format!("{HASHED_22} {ED25519}\n{HASHED_2222} {ED25519}\n"));
        assert_eq!(kh.check("git.example.com", 22, &blob(ED25519)), Ok(()));
        assert_eq!(kh.check("git.example.com", 2222, &blob(ED25519)), Ok(()));
        assert!(matches!(
            kh.check("git.example.org", 22, &blob(ED25519)),
            Err(HostKeyError::Unknown { .. })
        ));
        assert!(matches!(
            kh.check("git.example.com", 2223, &blob(ED25519)),
            Err(HostKeyError::Unknown { .. })
        ));
    }

    #[test]
    fn wildcards_and_negations_follow_openssh() {
        let kh = hosts(&format!(
            "*.example.com,!evil.example.com,git?.example.org {ED25519}\n"
        ));
        for host in ["a.example.com", "deep.a.example.com", "git1.example.org"] {
            assert_eq!(kh.check(host, 22, &blob(ED25519)), Ok(()), "{host}");
        }
        for host in ["evil.example.com", "example.com", "git12.example.org"] {
            assert!(kh.check(host, 22, &blob(ED25519)).is_err(), "{host}");
        }
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"[*]:2222", b"[h.example.com]:2222"));
    }

    #[test]
    fn revoked_keys_are_refused_even_when_also_listed() {
        let kh = hosts(&format!(
            "git.example.com {ED25519}\n@revoked * {ED25519}\n@cert-authority *.example.com {ECDSA}\n"
        ));
        let e = kh.check("git.example.com", 22, &blob(ED25519)).unwrap_err();
        assert!(
            e.to_string()
                .contains("marked @revoked in /etc/tollgate/known_hosts:2"),
            "{e}"
        );
        // A CA line vouches for nothing: the plain key it carries is not a host key.
        assert!(matches!(
            kh.check("a.example.com", 22, &blob(ECDSA)),
            Err(HostKeyError::Unknown { .. })
        ));
    }

    #[test]
    fn a_bad_line_is_an_error_naming_file_and_line() {
        let e = KnownHosts::parse(
            Path::new("/k"),
            &format!("git.example.com {ED25519}\ngit.example.org ssh-ed25519 !!notbase64\n"),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("/k:2: not a known_hosts entry"),
            "{e}"
        );
        let e = KnownHosts::load(Path::new("/nonexistent/known_hosts")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/known_hosts"), "{e}");
    }

    #[test]
    fn garbage_from_the_server_is_refused() {
        let kh = hosts(&format!("git.example.com {ED25519}\n"));
        assert!(matches!(
            kh.check("git.example.com", 22, b"\x00\x00\x00\x01"),
            Err(HostKeyError::Undecodable { .. })
        ));
    }
}
