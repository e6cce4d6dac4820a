//! Basic authentication (`basicAuth`, RFC 7617): a user and password in
//! `Authorization: Basic`, checked against htpasswd files of bcrypt hashes.
//!
//! htpasswd file (`<namespace>/<name>/htpasswd` under the secrets directory): `user:<bcrypt
//! hash>` per line (`$2a$`, `$2b$`, `$2x$` or `$2y$`; other schemes are refused); blank lines
//! and lines starting with `#` are ignored.
//!
//! Cost of a request: credentials longer than [`MAX_BASIC_BYTES`] are refused unread; an
//! unknown user costs a table lookup; a known user costs a bcrypt check on the password
//! threads ([`super::password`], bounded: when full, 503) unless the same user and password
//! were accepted before against the same hash (remembered under a process-random keyed hash,
//! so a wrong password never matches a remembered one).
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::password::PasswordChecks;
use super::store::{lines, AuthFileError, CredentialFile, FileSet, Loader};
use super::{check_consumer, Authenticated, Failure, Request, Scheme};
use tollgate_compile::l7::table::{AuthDef, SecretRef};

/// Name of the htpasswd file in a credential Secret's directory.
pub const HTPASSWD_FILE: &str = "htpasswd";
/// Longest `user:password` (decoded) checked; longer credentials are refused (`invalid`)
/// without being hashed or decoded past this bound. bcrypt reads at most 72 bytes of a
/// password anyway.
pub const MAX_BASIC_BYTES: usize = 512;
/// Verified basic credentials remembered per AuthPolicy (the cache is emptied when full).
pub const MAX_VERIFIED: usize = 10_000;

/// The users of an htpasswd file and their bcrypt hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// A bcrypt hash of the file's most common cost that no password matches: what a user the
    /// file does not hold is checked against, so that the answer takes as long as for a user
    /// it holds (else the time tells which user names exist; CWE-208).
    decoy: String,
}

impl Users {
    /// The bcrypt hash of `user`.
    pub fn get(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }

    /// The hash an unknown user's password is checked against.
    pub fn decoy(&self) -> &str {
        &self.decoy
    }
}

/// A bcrypt hash of `cost` (an all-zero salt and digest: bcrypt does the whole work of its
/// cost to find that a password does not match).
fn decoy(cost: u32) -> String {
    format!("$2b${cost:02}${}", ".".repeat(53))
}

/// Parses an htpasswd file (bcrypt entries only).
pub fn parse_htpasswd(file: &Path, text: &str) -> Result<Users, AuthFileError> {
    let mut out = HashMap::new();
    for (line, l) in lines(text) {
        let err = |why: String| AuthFileError::Line {
            file: file.to_owned(),
            line,
            why,
        };
        let Some((user, hash)) = l.split_once(':') else {
            return Err(err("not user:hash".into()));
        };
        check_consumer(user).map_err(err)?;
        let scheme = if hash.starts_with("$apr1$") {
            Some("MD5 (apr1)")
        } else if hash.starts_with("{SHA}") {
            Some("SHA-1")
        } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
            Some("SHA-crypt")
        } else if !hash.starts_with("$2") {
            Some("crypt or plain text")
        } else {
            None
        };
        if let Some(s) = scheme {
            return Err(err(format!(
                "user \"{user}\" has a {s} hash; only bcrypt is accepted (htpasswd -B)"
            )));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(err(format!("user \"{user}\" has a malformed bcrypt hash")));
        }
        if out.insert(user.to_owned(), hash.to_owned()).is_some() {
            return Err(err(format!("user \"{user}\" is listed twice")));
        }
    }
    if out.is_empty() {
        return Err(AuthFileError::Empty {
            file: file.to_owned(),
        });
    }
    let mut costs: HashMap<u32, usize> = HashMap::new();
    for hash in out.values() {
        if let Ok(parts) = hash.parse::<bcrypt::HashParts>() {
            *costs.entry(parts.get_cost()).or_default() += 1;
        }
    }
    // The most common cost; of two as common, the higher.
    let cost = costs
        .into_iter()
        .max_by_key(|&(cost, n)| (n, cost))
        .map_or(bcrypt::DEFAULT_COST, |(cost, _)| cost);
    Ok(Users {
        hashes: out,
        decoy: decoy(cost),
    })
}

impl CredentialFile for Users {
    const NAME: &'static str = HTPASSWD_FILE;
    fn parse(file: &Path, text: &str) -> Result<Self, AuthFileError> {
        parse_htpasswd(file, text)
    }
}

/// What an `Authorization: Basic` header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasicCredentials {
    /// A user and password.
    Given {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// More than [`MAX_BASIC_BYTES`].
    TooLong,
    /// The Basic scheme, but not `user:password` in base64 of UTF-8: credentials that were
    /// sent and are wrong (`invalid`), not missing ones.
    Malformed,
}

/// The credentials of an `Authorization: Basic` value (RFC 7617); `None` when it is another
/// scheme.
pub fn parse_basic(value: &str) -> Option<BasicCredentials> {
    use base64::Engine;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    // Base64 of MAX_BASIC_BYTES bytes, padded: longer is longer decoded too.
    if rest.len() > MAX_BASIC_BYTES.div_ceil(3) * 4 {
        return Some(BasicCredentials::TooLong);
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return Some(BasicCredentials::Malformed);
    };
    if raw.len() > MAX_BASIC_BYTES {
        return Some(BasicCredentials::TooLong);
    }
    let Some((user, password)) = String::from_utf8(raw)
        .ok()
        .and_then(|t| t.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
    else {
        return Some(BasicCredentials::Malformed);
    };
    Some(BasicCredentials::Given { user, password })
}

/// The basic-authentication method of a policy.
pub struct Basic {
    files: Vec<SecretRef>,
    sets: Vec<Arc<FileSet<Users>>>,
    /// The password check threads (`None` until loaded: every check fails).
    checks: Option<Arc<PasswordChecks>>,
    /// Credentials bcrypt has accepted: a keyed SHA-256 of user and password -> the bcrypt
    /// hash it matched (a hit counts only while the file still holds that hash).
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// Process-random key of `verified` (no plain hash of a password is kept).
    cache_key: [u8; 16],
}

impl Basic {
    fn cache_id(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

fn random_key() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 16];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        // RandomState is seeded from the OS's randomness once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

impl Scheme for Basic {
    type Credentials<'r> = BasicCredentials;
    const COST: u8 = 3;

    fn of(def: &AuthDef) -> Option<Self> {
        (!def.basic.is_empty()).then(|| Basic {
            files: def.basic.clone(),
            sets: Vec::new(),
            checks: None,
            verified: Mutex::new(HashMap::new()),
            cache_key: random_key(),
        })
    }

    fn load(&mut self, loader: &mut Loader<'_>) -> Result<(), AuthFileError> {
        self.sets = self
            .files
            .iter()
            .map(|s| loader.file::<Users>(s))
            .collect::<Result<_, _>>()?;
        self.checks = Some(loader.password_checks());
        Ok(())
    }

    fn present(&self, req: &Request<'_>) -> Option<BasicCredentials> {
        req.headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_basic)
    }

    async fn verify<'r>(
        &self,
        credentials: Self::Credentials<'r>,
    ) -> Result<Authenticated, Failure> {
        let BasicCredentials::Given { user, password } = credentials else {
            return Err(Failure::Invalid);
        };
        let Some(hash) = self
            .sets
            .iter()
            .find_map(|set| set.load().get(&user).map(str::to_owned))
        else {
            // As long as a wrong password of a user the files hold.
            let decoy = self.sets.first().map(|set| set.load().decoy().to_owned());
            if let (Some(checks), Some(decoy)) = (self.checks.as_ref(), decoy) {
                let check = checks.submit(password, decoy).map_err(|_| Failure::Busy)?;
                let _ = check.await;
            }
            return Err(Failure::Invalid);
        };
        let id = self.cache_id(&user, &password);
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|h| *h == hash);
        if cached {
            return Ok(Arc::<str>::from(user).into());
        }
        let checks = self.checks.as_ref().ok_or(Failure::Invalid)?;
        let check = checks
            .submit(password, hash.clone())
            .map_err(|_| Failure::Busy)?;
        if !check.await {
            return Err(Failure::Invalid);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(id, hash);
        Ok(Arc::<str>::from(user).into())
    }

    fn challenge(&self, realm: &str, _: Failure) -> String {
        format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")
    }

    fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(ToString::to_string).collect();
        format!("basic auth (users of {})", files.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_error(e: AuthFileError) -> (usize, String) {
        match e {
            AuthFileError::Line { line, why, .. } => (line, why),
            other => panic!("expected a line error, got {other}"),
        }
    }

    #[test]
    fn htpasswd_files_take_bcrypt_only() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = parse_htpasswd(Path::new("h"), &format!("alice:{hash}\n")).unwrap();
        assert!(bcrypt::verify("s3cret", users.get("alice").unwrap()).unwrap());
        let cases = [
            ("bob:$apr1$abc$def", "MD5 (apr1)"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:$6$salt$hash", "SHA-crypt"),
            ("bob:plain", "crypt or plain text"),
            ("bob:$2y$05$short", "malformed bcrypt"),
            ("bob", "not user:hash"),
            (&format!("alice:{hash}"), "listed twice"),
        ];
        for (line, want) in cases {
            let text = format!("alice:{hash}\n{line}\n");
            let (n, why) = line_error(parse_htpasswd(Path::new("h"), &text).unwrap_err());
            assert_eq!(n, 2, "{line}");
            assert!(why.contains(want), "{line}: {why}");
        }
    }

    #[test]
    fn an_unknown_user_is_checked_against_a_decoy_of_the_files_most_common_cost() {
        let (a, b, c) = (
            bcrypt::hash("x", 4).unwrap(),
            bcrypt::hash("y", 5).unwrap(),
            bcrypt::hash("z", 5).unwrap(),
        );
        let users = parse_htpasswd(Path::new("h"), &format!("a:{a}\nb:{b}\nc:{c}\n")).unwrap();
        let parts: bcrypt::HashParts = users.decoy().parse().expect("a bcrypt hash");
        assert_eq!(parts.get_cost(), 5);
        // bcrypt runs the check (no error) and no password matches it.
        for password in ["", "x", "y", "z", "password"] {
            assert_eq!(bcrypt::verify(password, users.decoy()).ok(), Some(false));
        }
    }

    #[tokio::test]
    async fn an_unknown_user_takes_a_bcrypt_check_like_a_known_one() {
        // A pool that takes no check: a known user's wrong password finds it busy, and so
        // must an unknown user's (before the decoy, it was refused at once, without one).
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = parse_htpasswd(Path::new("h"), &format!("alice:{hash}\n")).unwrap();
        let basic = Basic {
            files: Vec::new(),
            sets: vec![Arc::new(FileSet::new(users))],
            checks: Some(Arc::new(PasswordChecks::new(0, 0))),
            verified: Mutex::new(HashMap::new()),
            cache_key: random_key(),
        };
        for user in ["alice", "mallory"] {
            let got = basic.verify(given(user, "wrong").unwrap()).await;
            assert!(matches!(got, Err(Failure::Busy)), "{user}: {:?}", got.err());
        }
    }

    fn given(user: &str, password: &str) -> Option<BasicCredentials> {
        Some(BasicCredentials::Given {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn basic_credentials_are_read_from_the_authorization_header() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcjp0"),
            given("alice", "s3cr:t")
        );
        assert_eq!(
            parse_basic("basic   YWxpY2U6czNjcjp0"),
            given("alice", "s3cr:t")
        );
        assert_eq!(parse_basic("Bearer YWxpY2U6czNjcjp0"), None);
        // The Basic scheme with what is not user:password: sent and wrong, not missing.
        assert_eq!(parse_basic("Basic !!!"), Some(BasicCredentials::Malformed));
        assert_eq!(
            parse_basic("Basic YWxpY2U="), // no colon
            Some(BasicCredentials::Malformed)
        );
        assert_eq!(
            parse_basic("Basic /w=="), // not UTF-8
            Some(BasicCredentials::Malformed)
        );
    }

    #[test]
    fn basic_credentials_over_the_cap_are_too_long_before_decoding() {
        use base64::Engine;
        let encode = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        let at_cap = format!("alice:{}", "p".repeat(MAX_BASIC_BYTES - 6));
        assert_eq!(parse_basic(&encode(&at_cap)), given("alice", &at_cap[6..]));
        let over = format!("{at_cap}p");
        assert_eq!(parse_basic(&encode(&over)), Some(BasicCredentials::TooLong));
        // 60 KB of anything, even not base64: too long, not decoded.
        assert_eq!(
            parse_basic(&format!("Basic {}", "!".repeat(61_440))),
            Some(BasicCredentials::TooLong)
        );
    }
}
