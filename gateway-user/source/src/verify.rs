//! `--verify-commits ALLOWED_SIGNERS`: a fetched commit is applied only when it carries an SSH
//! signature (the `gpgsig` header git writes with `gpg.format=ssh`) made by one of the keys of
//! an OpenSSH `allowed_signers` file, over the commit object without that header, in the SSHSIG
//! namespace `git`. The same file `git config gpg.ssh.allowedSignersFile` takes; the verdict is
//! meant to be `git verify-commit`'s.
//!
//! Only the commit the ref points to is verified: its signature covers its tree (every policy
//! file) by hash, so a signed tip vouches for all that is applied, whoever made the commits
//! before it. OpenPGP and X.509 signatures are not verified (refused, with a message saying so).
//!
//! Formats: <https://man.openbsd.org/ssh-keygen#ALLOWED_SIGNERS>,
//! <https://github.com/openssh/openssh-portable/blob/master/PROTOCOL.sshsig>.
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use ssh_key::{HashAlg, PublicKey, SshSig};

/// The SSHSIG namespace git signs commits in.
pub const GIT_NAMESPACE: &str = "git";

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// The principals (for reports; git matches them against the committer only for display).
    pub principals: String,
    /// The signing key.
    pub key: PublicKey,
    /// `namespaces="..."`: the SSHSIG namespaces the key may sign in (patterns); `None`: any.
    namespaces: Option<String>,
    /// `valid-after=`: Unix seconds.
    valid_after: Option<i64>,
    /// `valid-before=`: Unix seconds.
    valid_before: Option<i64>,
    /// Line number in the file (1-based), for reports.
    line: usize,
}

/// The keys that may sign commits: an OpenSSH allowed_signers file, parsed.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    signers: Vec<AllowedSigner>,
}

/// Why an allowed_signers file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    /// The file cannot be read.
    #[error("cannot read the allowed signers file {} (--verify-commits): {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line that is not `principals [options] keytype base64-key [comment]`.
    #[error("{}:{line} (--verify-commits): {why}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No key at all: no commit could ever be applied.
    #[error("{} (--verify-commits) lists no signing key, so no commit could be verified", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Why a commit is refused under `--verify-commits` (reason `unverified`).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No signature at all.
    #[error("commit {commit} is not signed; with --verify-commits only commits signed by a key of {signers} are applied")]
    Unsigned {
        /// The commit.
        commit: String,
        /// The allowed_signers file.
        signers: String,
    },
    /// An OpenPGP or X.509 signature.
    #[error("commit {commit} carries {kind} signature; only SSH signatures (git's gpg.format=ssh) are verified")]
    NotSsh {
        /// The commit.
        commit: String,
        /// "an OpenPGP", "an X.509" or "an unknown kind of".
        kind: &'static str,
    },
    /// Not a well-formed SSHSIG.
    #[error("commit {commit}: the SSH signature cannot be read: {why}")]
    Malformed {
        /// The commit.
        commit: String,
        /// The parser's message.
        why: String,
    },
    /// A signature made for another purpose (`ssh-keygen -Y sign -n file`, say).
    #[error("commit {commit}: the signature is in namespace {namespace:?}, not {GIT_NAMESPACE:?} (not a commit signature)")]
    Namespace {
        /// The commit.
        commit: String,
        /// The signature's namespace.
        namespace: String,
    },
    /// Signed by a key that is not allowed.
    #[error("commit {commit} is signed by key {fingerprint}, which is not in {signers}")]
    UnknownKey {
        /// The commit.
        commit: String,
        /// SHA256 fingerprint of the signing key.
        fingerprint: String,
        /// The allowed_signers file.
        signers: String,
    },
    /// The key is listed, but its options do not allow this signature.
    #[error("commit {commit}: key {key} {why}")]
    NotAllowed {
        /// The commit.
        commit: String,
        /// SHA256 fingerprint of the signing key, its principals, the file and line.
        key: String,
        /// Which option refuses it.
        why: String,
    },
    /// The signature does not match the commit.
    #[error("commit {commit}: the signature by key {fingerprint} ({principals}) does not match the commit (altered after signing?)")]
    BadSignature {
        /// The commit.
        commit: String,
        /// SHA256 fingerprint of the signing key.
        fingerprint: String,
        /// Its principals.
        principals: String,
    },
    /// The allowed_signers file became unusable.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// libgit2 could not read the commit.
    #[error("git: read commit {commit}: {source}")]
    Git {
        /// The commit.
        commit: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
}

/// Who signed a verified commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The principals of the allowed_signers line.
    pub principals: String,
    /// SHA256 fingerprint of the key.
    pub fingerprint: String,
}

impl AllowedSigners {
    /// Reads and parses `path`. Every line is checked; the first bad one is reported with its
    /// number. Options this implementation cannot honour (`cert-authority`) are refused rather
    /// than ignored, since ignoring one would accept more than the file says.
    pub fn load(path: &Path) -> Result<Self, SignersError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignersError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of an allowed_signers file (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, SignersError> {
        let mut signers = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| SignersError::Line {
                path: path.to_owned(),
                line: i + 1,
                why,
            };
            signers.push(parse_line(line, i + 1).map_err(bad)?);
        }
        if signers.is_empty() {
            return Err(SignersError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(AllowedSigners {
            path: path.to_owned(),
            signers,
        })
    }

    /// The file these keys came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys, in file order.
    pub fn signers(&self) -> &[AllowedSigner] {
        &self.signers
    }

    /// Verifies the signature of `commit` in `repo`.
    pub fn verify_commit(&self, repo: &Repository, commit: Oid) -> Result<Verified, VerifyError> {
        let id = commit.to_string();
        let signers = self.path.display().to_string();
        let (signature, signed) = match repo.extract_signature(&commit, None) {
            Ok((s, d)) => (s.to_vec(), d.to_vec()),
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                return Err(VerifyError::Unsigned {
                    commit: id,
                    signers,
                })
            }
            Err(source) => return Err(VerifyError::Git { commit: id, source }),
        };
        let text = String::from_utf8_lossy(&signature);
        let armor = text.trim_start();
        if !armor.starts_with("-----BEGIN SSH SIGNATURE-----") {
            let kind = if armor.starts_with("-----BEGIN PGP SIGNATURE-----") {
                "an OpenPGP"
            } else if armor.starts_with("-----BEGIN SIGNED MESSAGE-----") {
                "an X.509"
            } else {
                "an unknown kind of"
            };
            return Err(VerifyError::NotSsh { commit: id, kind });
        }
        let sig = SshSig::from_pem(armor.trim_end()).map_err(|e| VerifyError::Malformed {
            commit: id.clone(),
            why: e.to_string(),
        })?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(VerifyError::Namespace {
                commit: id,
                namespace: sig.namespace().to_owned(),
            });
        }
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        let committed_at = repo
            .find_commit(commit)
            .map_err(|source| VerifyError::Git {
                commit: id.clone(),
                source,
            })?
            .committer()
            .when()
            .seconds();
        let mut refusal = None;
        for signer in self
            .signers
            .iter()
            .filter(|s| s.key.key_data() == sig.public_key())
        {
            // As git verify-commit: options are checked against the committer's timestamp.
            if let Err(why) = signer.allows(GIT_NAMESPACE, committed_at) {
                refusal.get_or_insert(VerifyError::NotAllowed {
                    commit: id.clone(),
                    key: format!(
                        "{fingerprint} ({}, {signers} line {})",
                        signer.principals, signer.line
                    ),
                    why,
                });
                continue;
            }
            return match signer.key.verify(GIT_NAMESPACE, &signed, &sig) {
                Ok(()) => Ok(Verified {
                    principals: signer.principals.clone(),
                    fingerprint,
                }),
                Err(_) => Err(VerifyError::BadSignature {
                    commit: id,
                    fingerprint,
                    principals: signer.principals.clone(),
                }),
            };
        }
        Err(refusal.unwrap_or(VerifyError::UnknownKey {
            commit: id,
            fingerprint,
            signers,
        }))
    }
}

impl AllowedSigner {
    /// Whether this line's options allow a signature in `namespace` at `when` (Unix seconds).
    fn allows(&self, namespace: &str, when: i64) -> Result<(), String> {
        if let Some(patterns) = &self.namespaces {
            if !match_pattern_list(namespace, patterns) {
                return Err(format!(
                    "may only sign in namespaces=\"{patterns}\", not {namespace:?}"
                ));
            }
        }
        if let Some(after) = self.valid_after {
            if when < after {
                return Err(format!(
                    "is valid only after {after} (Unix time); the commit is dated {when}"
                ));
            }
        }
        if let Some(before) = self.valid_before {
            if when > before {
                return Err(format!(
                    "is valid only before {before} (Unix time); the commit is dated {when}"
                ));
            }
        }
        Ok(())
    }
}

/// Splits off the first field of `s`: up to whitespace outside double quotes.
fn next_field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Some((&s[..i], &s[i..])),
            _ => {}
        }
    }
    Some((s, ""))
}

fn parse_line(line: &str, number: usize) -> Result<AllowedSigner, String> {
    let (principals, rest) =
        next_field(line).ok_or_else(|| "expected principals, then a key".to_owned())?;
    let principals = principals.trim_matches('"').to_owned();
    let (second, after_second) =
        next_field(rest).ok_or_else(|| format!("no key after the principals {principals:?}"))?;
    // The options field is optional: as ssh-keygen does, try the key first.
    let (options, key) = match PublicKey::from_openssh(rest.trim()) {
        Ok(key) => (None, key),
        Err(first) => {
            let key = PublicKey::from_openssh(after_second.trim()).map_err(|e| {
                if after_second.trim().is_empty() {
                    format!("{second:?} is not a public key ({first})")
                } else {
                    format!("no valid public key after the options {second:?}: {e}")
                }
            })?;
            (Some(second), key)
        }
    };
    let mut signer = AllowedSigner {
        principals,
        key,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        line: number,
    };
    for option in options.map(split_options).transpose()?.unwrap_or_default() {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"'))),
            None => (option.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("namespaces", Some(v)) => signer.namespaces = Some(v.to_owned()),
            ("valid-after", Some(v)) => signer.valid_after = Some(parse_time(v)?),
            ("valid-before", Some(v)) => signer.valid_before = Some(parse_time(v)?),
            ("cert-authority", None) => {
                return Err("cert-authority (keys that sign certificates) is not supported: list the signing keys themselves".to_owned())
            }
            (other, _) => {
                return Err(format!(
                    "unknown or malformed option {other:?} (known: namespaces=\"...\", valid-after=..., valid-before=...)"
                ))
            }
        }
    }
    Ok(signer)
}

/// Splits `a,b="x,y",c` at commas outside quotes.
fn split_options(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(format!("unbalanced quotes in the options {s:?}"));
    }
    out.push(current);
    Ok(out)
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns with `*` and `?`, a leading `!`
/// negates (and a negated match refuses whatever else matches).
fn match_pattern_list(s: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',').map(str::trim) {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob(s.as_bytes(), pattern.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn glob(s: &[u8], p: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(s, &p[1..]) || (!s.is_empty() && glob(&s[1..], p)),
        (Some(b'?'), Some(_)) => glob(&s[1..], &p[1..]),
        (Some(a), Some(b)) if a == b => glob(&s[1..], &p[1..]),
        _ => false,
    }
}

/// An allowed_signers time: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, UTC with a trailing
/// `Z`, local time otherwise (as ssh-keygen reads it).
fn parse_time(v: &str) -> Result<i64, String> {
    let bad = || format!("{v:?} is not a time like 20250131, 202501311200 or 20250131120000Z");
    let (digits, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (v, false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num =
        |r: std::ops::Range<usize>| digits.get(r).map_or(0, |d| d.parse::<i64>().unwrap_or(0));
    let (y, mo, d) = (num(0..4), num(4..6), num(6..8));
    let (h, mi, s) = (num(8..10), num(10..12), num(12..14));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    if utc {
        return Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s);
    }
    // SAFETY: mktime reads and normalises a fully initialised tm.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as libc::c_int;
    tm.tm_mon = (mo - 1) as libc::c_int;
    tm.tm_mday = d as libc::c_int;
    tm.tm_hour = h as libc::c_int;
    tm.tm_min = mi as libc::c_int;
    tm.tm_sec = s as libc::c_int;
    tm.tm_isdst = -1;
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        return Err(bad());
    }
    Ok(t)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm,
/// <https://howardhinnant.github.io/date_algorithms.html#days_from_civil>).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(dir: &Path, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn git(dir: &Path, extra: &[&str], args: &[&str]) -> String {
        let mut all = vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ];
        all.extend_from_slice(extra);
        all.extend_from_slice(args);
        run(dir, "git", &all)
    }

    /// A key pair made by ssh-keygen: (private key file, public key line).
    fn keygen(dir: &Path, name: &str, kind: &[&str]) -> (PathBuf, String) {
        let file = dir.join(name);
        let mut args = vec!["-q", "-N", "", "-C", name, "-f"];
        args.push(file.to_str().unwrap());
        args.extend_from_slice(kind);
        run(dir, "ssh-keygen", &args);
        let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
        (file, public.trim().to_owned())
    }

    /// Commits a change, signed with `key` (by git and ssh-keygen) or unsigned.
    fn commit(repo: &Path, content: &str, key: Option<&Path>) -> Oid {
        std::fs::write(repo.join("p.yaml"), content).unwrap();
        git(repo, &[], &["add", "."]);
        match key {
            Some(k) => {
                let key = format!("user.signingkey={}", k.display());
                git(
                    repo,
                    &["-c", "gpg.format=ssh", "-c", &key],
                    &["commit", "-q", "-S", "-m", content],
                )
            }
            None => git(repo, &[], &["commit", "-q", "-m", content]),
        };
        Oid::from_str(&git(repo, &[], &["rev-parse", "HEAD"])).unwrap()
    }

    fn signers_file(dir: &Path, text: &str) -> (PathBuf, AllowedSigners) {
        let path = dir.join("allowed_signers");
        std::fs::write(&path, text).unwrap();
        let signers = AllowedSigners::load(&path).unwrap_or_else(|e| panic!("{e}"));
        (path, signers)
    }

    #[test]
    fn commits_signed_by_ssh_keygen_with_each_key_type_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &[], &["init", "-q", "-b", "main"]);
        let keys = [
            ("ed", vec!["-t", "ed25519"]),
            ("ec", vec!["-t", "ecdsa", "-b", "256"]),
            ("rsa", vec!["-t", "rsa", "-b", "2048"]),
        ];
        let mut text = String::from("# team keys\n\n");
        let mut made = Vec::new();
        for (name, kind) in &keys {
            let (file, public) = keygen(dir.path(), name, kind);
            text.push_str(&format!("{name}@example.com {public}\n"));
            made.push((name, file));
        }
        let (path, signers) = signers_file(dir.path(), &text);
        let r = Repository::open(&repo).unwrap();
        for (name, file) in &made {
            let oid = commit(&repo, &format!("signed by {name}\n"), Some(file));
            let who = signers
                .verify_commit(&r, oid)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(who.principals, format!("{name}@example.com"));
            assert!(who.fingerprint.starts_with("SHA256:"), "{who:?}");
            // git itself agrees with the same file (an independent verifier).
            let allowed = format!("gpg.ssh.allowedSignersFile={}", path.display());
            git(
                &repo,
                &["-c", &allowed],
                &["verify-commit", &oid.to_string()],
            );
        }
    }

    #[test]
    fn unsigned_unknown_key_altered_and_wrong_namespace_commits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &[], &["init", "-q", "-b", "main"]);
        let (good, good_pub) = keygen(dir.path(), "good", &["-t", "ed25519"]);
        let (other, _) = keygen(dir.path(), "other", &["-t", "ed25519"]);
        let (_, signers) = signers_file(dir.path(), &format!("ops@example.com {good_pub}\n"));
        let r = Repository::open(&repo).unwrap();

        let unsigned = commit(&repo, "a\n", None);
        let e = signers.verify_commit(&r, unsigned).unwrap_err();
        assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
        assert!(e.to_string().contains(&unsigned.to_string()), "{e}");

        let by_other = commit(&repo, "b\n", Some(&other));
        let e = signers.verify_commit(&r, by_other).unwrap_err();
        assert!(matches!(e, VerifyError::UnknownKey { .. }), "{e}");
        assert!(e.to_string().contains("allowed_signers"), "{e}");

        // The good key's signature moved onto different content: the signature is intact, the
        // commit is not what was signed.
        let signed = commit(&repo, "c\n", Some(&good));
        assert!(signers.verify_commit(&r, signed).is_ok());
        let raw = run(&repo, "git", &["cat-file", "commit", &signed.to_string()]);
        let headers = raw
            .strip_suffix("\n\nc")
            .unwrap_or_else(|| panic!("the message ends the commit object:\n{raw}"));
        let forged_file = dir.path().join("forged");
        std::fs::write(&forged_file, format!("{headers}\n\nsomething else\n")).unwrap();
        let forged = Oid::from_str(&run(
            &repo,
            "git",
            &[
                "hash-object",
                "-t",
                "commit",
                "-w",
                forged_file.to_str().unwrap(),
            ],
        ))
        .unwrap();
        let e = signers.verify_commit(&r, forged).unwrap_err();
        assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("ops@example.com"), "{e}");

        // A key listed only for other namespaces does not sign commits.
        let (_, file_only) = signers_file(
            dir.path(),
            &format!("ops@example.com namespaces=\"file,mail\" {good_pub}\n"),
        );
        let e = file_only.verify_commit(&r, signed).unwrap_err();
        assert!(matches!(e, VerifyError::NotAllowed { .. }), "{e}");
        // ... and one that expired before the commit neither.
        let (_, expired) = signers_file(
            dir.path(),
            &format!("ops@example.com valid-before=20200101Z {good_pub}\n"),
        );
        let e = expired.verify_commit(&r, signed).unwrap_err();
        assert!(e.to_string().contains("valid only before"), "{e}");
        let (_, valid) = signers_file(
            dir.path(),
            &format!("ops@example.com namespaces=\"git\",valid-after=20200101Z {good_pub}\n"),
        );
        assert!(valid.verify_commit(&r, signed).is_ok());
    }

    #[test]
    fn allowed_signers_lines_are_parsed_as_ssh_keygen_reads_them() {
        let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDLuvWtCNFlHJGYAS/7Z/GUfACgAe0gMcchYSp+U0L5o comment";
        let p = Path::new("signers");
        let s = AllowedSigners::parse(
            p,
            &format!("# c\n\"a@x,b@x\" {ed}\nc@x namespaces=\"git,file\",valid-after=\"20240101\" {ed}\n"),
        )
        .unwrap();
        assert_eq!(s.signers().len(), 2);
        assert_eq!(s.signers()[0].principals, "a@x,b@x");
        assert_eq!(s.signers()[1].namespaces.as_deref(), Some("git,file"));
        assert!(s.signers()[1].valid_after.is_some());

        for (text, wanted) in [
            ("", "lists no signing key"),
            ("# only a comment\n", "lists no signing key"),
            ("a@x\n", "signers:1"),
            (
                &format!("a@x ssh-ed25519 AAAAnotbase64!!\n{ed}\n") as &str,
                "signers:1",
            ),
            (
                &format!("ok@x {ed}\nb@x cert-authority {ed}\n"),
                "signers:2",
            ),
            (&format!("b@x cert-authority {ed}\n"), "cert-authority"),
            (
                &format!("b@x restrict {ed}\n"),
                "unknown or malformed option",
            ),
            (&format!("b@x valid-after=2024 {ed}\n"), "not a time"),
        ] {
            let e = AllowedSigners::parse(p, text).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
    }

    #[test]
    fn namespace_patterns_and_times_follow_openssh() {
        assert!(match_pattern_list("git", "git"));
        assert!(match_pattern_list("git", "file,g*"));
        assert!(match_pattern_list("git", "?it"));
        assert!(!match_pattern_list("git", "file"));
        assert!(!match_pattern_list("git", "*,!git"));
        assert_eq!(parse_time("19700101Z").unwrap(), 0);
        assert_eq!(parse_time("20240229Z").unwrap(), 1_709_164_800);
        assert_eq!(parse_time("20240229123456Z").unwrap(), 1_709_210_096);
        assert!(parse_time("20241301Z").is_err());
        assert!(parse_time("2024").is_err());
        assert!(parse_time("20240101").is_ok(), "local time");
    }
}
