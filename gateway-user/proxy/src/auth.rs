//! Authentication of requests on routes with an `AuthPolicy`: API keys checked against salted
//! SHA-256 hashes, basic authentication against htpasswd files with bcrypt hashes, JWTs
//! ([`super::jwt`]) and the verified TLS client certificate of the connection; then the
//! policy's `allowedConsumers` (403 for others).
//!
//! The credential files are read when a revision is applied ([`AuthStore::load`]: a missing,
//! unreadable or malformed file refuses the revision, naming the file and line) and checked
//! again every [`RELOAD_INTERVAL`] ([`AuthStore::check`]): a changed file is parsed aside and
//! swapped in whole; a bad one is logged and the set loaded before stays in use.
//!
//! File formats (standalone, under the secrets directory):
//! - `<namespace>/<name>/keys`: `consumer-id:sha256:<salt hex>:<hex of sha256(salt || key)>`
//!   per line (the salt at least [`MIN_SALT_BYTES`] bytes);
//! - `<namespace>/<name>/htpasswd`: `user:<bcrypt hash>` per line (`$2a$`, `$2b$`, `$2x$` or
//!   `$2y$`; other schemes are refused).
//!
//! Blank lines and lines starting with `#` are ignored in both.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::jwt::TokenFailure;
use crate::metrics::JwksMetrics;
use tollgate_compile::l7::table::{AuthDef, KeyLocation, SecretRef};
use tollgate_compile::l7::RouteTable;
use tollgate_model::auth::CertificateField;

/// How often the credential files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest salt accepted in a key file.
pub const MIN_SALT_BYTES: usize = 8;
pub use tollgate_model::names::{consumer_id as check_consumer, MAX_CONSUMER_LEN};
/// Largest credential file read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// The request header the authenticated consumer is sent to the backend in (any such header
/// from the client is removed first).
pub const CONSUMER_HEADER: &str = "x-tollgate-consumer";
/// Name of the file of API keys in a credential Secret's directory.
pub const KEYS_FILE: &str = "keys";
/// Name of the htpasswd file in a credential Secret's directory.
pub const HTPASSWD_FILE: &str = "htpasswd";

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

/// One API key: its consumer, salt and `sha256(salt || key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The consumer id.
    pub consumer: Arc<str>,
    /// The salt.
    pub salt: Vec<u8>,
    /// The salted hash.
    pub hash: [u8; 32],
}

/// The credentials of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSet {
    /// API keys.
    Keys(Vec<KeyEntry>),
    /// htpasswd users and their bcrypt hashes.
    Users(HashMap<String, String>),
}

/// Lines that are neither blank nor comments, numbered from 1.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses a key file.
pub fn parse_keys(file: &Path, text: &str) -> Result<Vec<KeyEntry>, AuthFileError> {
    let mut out = Vec::new();
    for (line, l) in lines(text) {
        let err = |why: String| AuthFileError::Line {
            file: file.to_owned(),
            line,
            why,
        };
        let parts: Vec<&str> = l.split(':').collect();
        let [consumer, scheme, salt, hash] = parts[..] else {
            return Err(err(
                "not consumer-id:sha256:<salt hex>:<hex of sha256(salt || key)> (clear keys are not accepted)".into(),
            ));
        };
        check_consumer(consumer).map_err(err)?;
        if scheme != "sha256" {
            return Err(err(format!(
                "hash scheme \"{}\" is not supported; use sha256",
                scheme.chars().take(16).collect::<String>()
            )));
        }
        let salt = hex::decode(salt).map_err(|_| err("the salt is not hex".into()))?;
        if salt.len() < MIN_SALT_BYTES {
            return Err(err(format!(
                "the salt is shorter than {MIN_SALT_BYTES} bytes ({} hex digits)",
                MIN_SALT_BYTES * 2
            )));
        }
        let mut h = [0u8; 32];
        hex::decode_to_slice(hash, &mut h)
            .map_err(|_| err("the hash is not 64 hex digits (a SHA-256)".into()))?;
        out.push(KeyEntry {
            consumer: consumer.into(),
            salt,
            hash: h,
        });
    }
    if out.is_empty() {
        return Err(AuthFileError::Empty {
            file: file.to_owned(),
        });
    }
    Ok(out)
}

/// Parses an htpasswd file (bcrypt entries only).
pub fn parse_htpasswd(file: &Path, text: &str) -> Result<HashMap<String, String>, AuthFileError> {
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
    Ok(out)
}

/// The consumer of an API key, if one line of `keys` matches. Every line is checked, and each
/// hash comparison is constant-time, so the time taken does not tell which line (or how much
/// of a hash) matched.
pub fn match_key(keys: &[KeyEntry], key: &[u8]) -> Option<Arc<str>> {
    let mut found = None;
    for e in keys {
        let mut h = Sha256::new();
        h.update(&e.salt);
        h.update(key);
        let digest: [u8; 32] = h.finalize().into();
        if bool::from(digest.ct_eq(&e.hash)) && found.is_none() {
            found = Some(e.consumer.clone());
        }
    }
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Keys,
    Htpasswd,
}

/// A credential file and the set loaded from it.
struct Loaded {
    kind: Kind,
    stamp: Option<(SystemTime, u64)>,
    set: Arc<ArcSwap<CredentialSet>>,
}

fn stamp(file: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(file: &Path, kind: Kind) -> Result<CredentialSet, AuthFileError> {
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
    Ok(match kind {
        Kind::Keys => CredentialSet::Keys(parse_keys(file, &text)?),
        Kind::Htpasswd => CredentialSet::Users(parse_htpasswd(file, &text)?),
    })
}

/// The credentials of one AuthPolicy, as requests see them (each set is swapped whole when its
/// file changes).
pub struct AuthRuntime {
    /// API key sets.
    pub keys: Vec<Arc<ArcSwap<CredentialSet>>>,
    /// htpasswd sets.
    pub users: Vec<Arc<ArcSwap<CredentialSet>>>,
    /// JWKS of the JWT providers, aligned with the policy's `jwt`.
    pub jwt: Vec<Arc<super::jwt::Jwks>>,
    /// Basic credentials bcrypt has accepted: a keyed SHA-256 of user and password -> the
    /// bcrypt hash it matched (a hit counts only while the file still holds that hash).
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// Process-random key of `verified` (no plain hash of a password is kept).
    cache_key: [u8; 16],
    /// Bounds the bcrypt checks running at once (they are slow on purpose).
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

/// Verified basic credentials remembered per AuthPolicy (the cache is emptied when full).
pub const MAX_VERIFIED: usize = 10_000;

impl AuthRuntime {
    fn new(
        keys: Vec<Arc<ArcSwap<CredentialSet>>>,
        users: Vec<Arc<ArcSwap<CredentialSet>>>,
        jwt: Vec<Arc<super::jwt::Jwks>>,
        bcrypt_slots: Arc<tokio::sync::Semaphore>,
    ) -> AuthRuntime {
        use std::hash::{BuildHasher, Hasher};
        let mut cache_key = [0u8; 16];
        for (i, chunk) in cache_key.chunks_mut(8).enumerate() {
            // RandomState is seeded from the OS's randomness once per process.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        AuthRuntime {
            keys,
            users,
            jwt,
            verified: Mutex::new(HashMap::new()),
            cache_key,
            bcrypt_slots,
        }
    }

    fn cache_id(&self, user: &str, pass: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(pass.as_bytes());
        h.finalize().into()
    }
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

/// Every credential file in use, by path.
pub struct AuthStore {
    dir: PathBuf,
    files: Mutex<HashMap<PathBuf, Loaded>>,
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
    jwks: super::jwt::JwksStore,
}

impl AuthStore {
    /// A store reading files under `dir` (JWKS metrics not registered).
    pub fn new(dir: PathBuf) -> AuthStore {
        AuthStore::with_metrics(dir, JwksMetrics::default())
    }

    /// A store reading files under `dir`, counting JWKS fetches in `jwks`.
    pub fn with_metrics(dir: PathBuf, jwks: JwksMetrics) -> AuthStore {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        AuthStore {
            jwks: super::jwt::JwksStore::new(dir.clone(), jwks),
            dir,
            files: Mutex::new(HashMap::new()),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(cpus)),
        }
    }

    fn path(&self, s: &SecretRef, file: &str) -> PathBuf {
        self.dir.join(&s.namespace).join(&s.name).join(file)
    }

    /// Loads the files of every AuthPolicy of `table` (unchanged files are not read again);
    /// one runtime per policy, aligned with `table.policy.auth`. Files no revision names any
    /// more are forgotten.
    pub fn load(&self, table: &RouteTable) -> Result<Vec<Arc<AuthRuntime>>, PolicyFileError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh: HashMap<PathBuf, Loaded> = HashMap::new();
        let mut out = Vec::new();
        for def in &table.policy.auth {
            let mut get = |s: &SecretRef, kind: Kind| -> Result<_, PolicyFileError> {
                let name = match kind {
                    Kind::Keys => KEYS_FILE,
                    Kind::Htpasswd => HTPASSWD_FILE,
                };
                let path = self.path(s, name);
                if let Some(l) = fresh.get(&path) {
                    return Ok(l.set.clone());
                }
                let now = stamp(&path);
                let reuse = files
                    .get(&path)
                    .filter(|l| l.kind == kind && l.stamp.is_some() && l.stamp == now);
                let loaded = match reuse {
                    Some(l) => Loaded {
                        kind,
                        stamp: l.stamp,
                        set: l.set.clone(),
                    },
                    None => Loaded {
                        kind,
                        stamp: now,
                        set: Arc::new(ArcSwap::from_pointee(read(&path, kind).map_err(
                            |source| PolicyFileError {
                                policy: def.policy.to_string(),
                                source,
                            },
                        )?)),
                    },
                };
                let set = loaded.set.clone();
                fresh.insert(path, loaded);
                Ok(set)
            };
            let keys = match &def.api_key {
                Some(k) => k
                    .files
                    .iter()
                    .map(|s| get(s, Kind::Keys))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            let users = def
                .basic
                .iter()
                .map(|s| get(s, Kind::Htpasswd))
                .collect::<Result<_, _>>()?;
            let jwt = def
                .jwt
                .iter()
                .map(|p| {
                    self.jwks
                        .get(&def.policy, p)
                        .map_err(|why| PolicyFileError {
                            policy: def.policy.to_string(),
                            source: AuthFileError::Jwt {
                                provider: p.name.clone(),
                                why,
                            },
                        })
                })
                .collect::<Result<_, _>>()?;
            out.push(Arc::new(AuthRuntime::new(
                keys,
                users,
                jwt,
                self.bcrypt_slots.clone(),
            )));
        }
        // The revision may still be refused (a port that cannot be bound): the files of the
        // revision in force stay too; `check` forgets those no revision holds any more.
        for (path, l) in fresh {
            files.insert(path, l);
        }
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
            match read(path, l.kind) {
                Ok(set) => {
                    l.set.store(Arc::new(set));
                    l.stamp = now;
                    info!(file = %path.display(), "credential file reloaded");
                }
                Err(error) => {
                    // Remember the stamp: a bad file is reported once, not every second.
                    l.stamp = now;
                    warn!(%error, file = %path.display(), "credential file not reloaded; the credentials loaded before stay in use");
                    failed.push(path.clone());
                }
            }
        }
        failed
    }
}

/// Why a request is not authenticated: the `reason` label of `tollgate_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credentials.
    Missing,
    /// Credentials that match none.
    Invalid,
    /// A JWT that is refused.
    Token(TokenFailure),
    /// An authenticated consumer not in `allowedConsumers` (403).
    Forbidden,
}

impl Failure {
    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Invalid => "invalid",
            Failure::Token(t) => t.reason(),
            Failure::Forbidden => "forbidden",
        }
    }
}

/// An authenticated request: its consumer, and the claim headers to send to the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// The consumer id.
    pub consumer: Arc<str>,
    /// Headers to set (JWT claims).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl From<Arc<str>> for Authenticated {
    fn from(consumer: Arc<str>) -> Self {
        Authenticated {
            consumer,
            headers: Vec::new(),
        }
    }
}

/// The identity of a verified TLS client certificate, read at the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The first common name (CN) of the subject.
    pub common_name: Option<String>,
    /// The first DNS name of the subject alternative names.
    pub dns_name: Option<String>,
    /// The first e-mail address (rfc822Name) of the subject alternative names.
    pub email: Option<String>,
}

impl PeerCertificate {
    /// Reads the identity of a DER certificate (`None` if it cannot be parsed).
    pub fn from_der(der: &[u8]) -> Option<PeerCertificate> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut out = PeerCertificate {
            common_name,
            ..PeerCertificate::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) if out.dns_name.is_none() => {
                        out.dns_name = Some((*d).to_owned())
                    }
                    GeneralName::RFC822Name(e) if out.email.is_none() => {
                        out.email = Some((*e).to_owned())
                    }
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// The consumer this certificate names by `field`, if it is a valid consumer id.
    pub fn consumer(&self, field: CertificateField) -> Option<Arc<str>> {
        let v = match field {
            CertificateField::CommonName => self.common_name.as_deref(),
            CertificateField::SubjectAltNameDNS => self.dns_name.as_deref(),
            CertificateField::SubjectAltNameEmail => self.email.as_deref(),
        }?;
        check_consumer(v).ok()?;
        Some(v.into())
    }
}

/// Whether the policy lets `consumer` through (`allowedConsumers`).
pub fn allowed(def: &AuthDef, consumer: &str) -> bool {
    def.allowed_consumers
        .as_ref()
        .is_none_or(|list| list.iter().any(|c| &**c == consumer))
}

/// The request headers of `def` a client may not set on its routes (they are removed before
/// authentication, like `X-Tollgate-Consumer` on every route): the claim headers of its JWT
/// providers.
pub fn owned_headers(def: &AuthDef) -> impl Iterator<Item = &http::HeaderName> {
    def.jwt
        .iter()
        .flat_map(|p| p.claim_headers.iter().map(|(_, h)| h))
}

/// What a request presents.
struct Presented {
    key: Option<Vec<u8>>,
    basic: Option<(String, String)>,
}

fn presented(def: &AuthDef, headers: &HeaderMap, query: Option<&str>) -> Presented {
    let key = def.api_key.as_ref().and_then(|k| match &k.location {
        KeyLocation::Header(h) => headers.get(h).map(|v| v.as_bytes().to_vec()),
        KeyLocation::Query(q) => {
            tollgate_compile::l7::table::query_param(query, q).map(|v| v.as_bytes().to_vec())
        }
    });
    let basic = if def.basic.is_empty() {
        None
    } else {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_basic)
    };
    Presented {
        key: key.filter(|k| !k.is_empty()),
        basic,
    }
}

/// The user and password of an `Authorization: Basic` value (RFC 7617); `None` when it is not
/// one.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Checks a request's credentials against a policy: the consumer, or why not. bcrypt is slow
/// on purpose: it runs off the async workers, at most one check per CPU at once, and basic
/// credentials it accepted are remembered (keyed by a process-random key) until the user's hash
/// in the file changes.
///
/// JWTs are checked against each provider in turn; when none accepts the token, the failure
/// is that of the first provider whose issuer matches (or of the last one). A client
/// certificate counts only when the connection's handshake verified it (`cert`).
pub async fn authenticate(
    def: &AuthDef,
    rt: &Arc<AuthRuntime>,
    headers: &HeaderMap,
    query: Option<&str>,
    cert: Option<&PeerCertificate>,
) -> Result<Authenticated, Failure> {
    let p = presented(def, headers, query);
    let tokens: Vec<_> = def
        .jwt
        .iter()
        .zip(&rt.jwt)
        .filter_map(|(d, j)| super::jwt::token(d, headers, query).map(|t| (d, j, t)))
        .collect();
    let cert = def.client_certificate.zip(cert);
    if p.key.is_none() && p.basic.is_none() && tokens.is_empty() && cert.is_none() {
        return Err(Failure::Missing);
    }
    if let Some((field, cert)) = cert {
        if let Some(c) = cert.consumer(field) {
            return Ok(c.into());
        }
    }
    if let Some(key) = &p.key {
        for set in &rt.keys {
            if let CredentialSet::Keys(keys) = &**set.load() {
                if let Some(c) = match_key(keys, key) {
                    return Ok(c.into());
                }
            }
        }
    }
    let mut token_failure = None;
    for (d, j, t) in &tokens {
        match super::jwt::verify(d, j, t).await {
            Ok(v) => {
                return Ok(Authenticated {
                    consumer: v.consumer,
                    headers: v.headers,
                })
            }
            Err(f) => {
                // An issuer mismatch says least: keep a more telling failure.
                if token_failure.is_none_or(|o| o == TokenFailure::Issuer) {
                    token_failure = Some(f);
                }
            }
        }
    }
    if let Some((user, pass)) = p.basic {
        let hash = rt.users.iter().find_map(|set| match &**set.load() {
            CredentialSet::Users(u) => u.get(&user).cloned(),
            CredentialSet::Keys(_) => None,
        });
        let Some(hash) = hash else {
            return Err(token_failure.map_or(Failure::Invalid, Failure::Token));
        };
        let id = rt.cache_id(&user, &pass);
        let cached = rt
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|h| *h == hash);
        if cached {
            return Ok(Arc::<str>::from(user).into());
        }
        let Ok(_slot) = rt.bcrypt_slots.acquire().await else {
            return Err(Failure::Invalid); // never closed
        };
        let checked = hash.clone();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(pass, &checked).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok {
            let mut verified = rt.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(id, hash);
            return Ok(Arc::<str>::from(user).into());
        }
    }
    Err(token_failure.map_or(Failure::Invalid, Failure::Token))
}

/// The `WWW-Authenticate` challenges of a policy on `route` for a request refused with
/// `failure`: `Basic realm="<route>", charset="UTF-8"` for basic authentication,
/// `ApiKey realm="<route>", header="<name>"` (or `query="<name>"`) for API keys,
/// `Bearer realm="<route>"` for JWTs (RFC 6750; with `error="invalid_token",
/// error_description="..."` when a token was refused), `ClientCertificate realm="<route>"`
/// for client certificates (informational: a certificate is sent in the TLS handshake).
pub fn challenges(def: &AuthDef, route: &str, failure: Failure) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = &def.api_key {
        let (what, name) = match &k.location {
            KeyLocation::Header(h) => ("header", h.as_str()),
            KeyLocation::Query(q) => ("query", q.as_str()),
        };
        out.push(format!("ApiKey realm=\"{route}\", {what}=\"{name}\""));
    }
    if !def.basic.is_empty() {
        out.push(format!("Basic realm=\"{route}\", charset=\"UTF-8\""));
    }
    if !def.jwt.is_empty() {
        out.push(match failure {
            Failure::Token(t) => format!(
                "Bearer realm=\"{route}\", error=\"invalid_token\", error_description=\"{}\"",
                t.description()
            ),
            _ => format!("Bearer realm=\"{route}\""),
        });
    }
    if def.client_certificate.is_some() {
        out.push(format!("ClientCertificate realm=\"{route}\""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    /// A key line as the README's shell one-liner makes it.
    fn key_line(consumer: &str, salt: &[u8], key: &str) -> String {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(key.as_bytes());
        format!(
            "{consumer}:sha256:{}:{}",
            hex::encode(salt),
            hex::encode(h.finalize())
        )
    }

    fn line_error(e: AuthFileError) -> (usize, String) {
        match e {
            AuthFileError::Line { line, why, .. } => (line, why),
            other => panic!("expected a line error, got {other}"),
        }
    }

    #[test]
    fn key_files_parse_and_match_only_the_right_key() {
        let text = format!(
            "# comment\n\n{}\n  {}  \n",
            key_line("shop-app", b"saltsalt1", "k-one"),
            key_line("billing", b"saltsalt2", "k-two")
        );
        let keys = parse_keys(Path::new("keys"), &text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(match_key(&keys, b"k-one").as_deref(), Some("shop-app"));
        assert_eq!(match_key(&keys, b"k-two").as_deref(), Some("billing"));
        assert_eq!(match_key(&keys, b"k-one "), None);
        assert_eq!(match_key(&keys, b""), None);
        // The hash of the key without its salt does not match.
        let unsalted = format!(
            "x:sha256:{}:{}",
            hex::encode(b"saltsalt"),
            hex::encode(Sha256::digest(b"k-one"))
        );
        let keys = parse_keys(Path::new("keys"), &unsalted).unwrap();
        assert_eq!(match_key(&keys, b"k-one"), None);
    }

    #[test]
    fn bad_key_lines_are_refused_with_file_and_line_without_quoting_them() {
        let good = key_line("a", b"saltsalt", "k");
        let cases = [
            ("the-clear-key", "clear keys are not accepted"),
            ("a:md5:0011223344556677:00", "\"md5\" is not supported"),
            ("a:sha256:zz:00", "salt is not hex"),
            ("a:sha256:0011:00", "shorter than 8 bytes"),
            ("a:sha256:0011223344556677:abcd", "not 64 hex digits"),
            ("bad id:sha256:0011223344556677:00", "letters, digits"),
            (":sha256:0011223344556677:00", "consumer id is empty"),
        ];
        for (line, want) in cases {
            let text = format!("{good}\n# c\n{line}\n");
            let e = parse_keys(Path::new("/s/ns/k/keys"), &text).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with("/s/ns/k/keys line 3: "), "{shown}");
            assert!(!shown.contains("the-clear-key"), "{shown}");
            let (n, why) = line_error(e);
            assert_eq!(n, 3);
            assert!(why.contains(want), "{line}: {why}");
        }
        assert!(matches!(
            parse_keys(Path::new("k"), "# nothing\n"),
            Err(AuthFileError::Empty { .. })
        ));
    }

    #[test]
    fn htpasswd_files_take_bcrypt_only() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = parse_htpasswd(Path::new("h"), &format!("alice:{hash}\n")).unwrap();
        assert!(bcrypt::verify("s3cret", &users["alice"]).unwrap());
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
    fn basic_credentials_are_read_from_the_authorization_header() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcjp0"),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(
            parse_basic("basic   YWxpY2U6czNjcjp0"),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(parse_basic("Bearer YWxpY2U6czNjcjp0"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic YWxpY2U="), None); // no colon
    }

    fn policy(api: Option<KeyLocation>, basic: bool) -> AuthDef {
        let s = |name: &str| SecretRef {
            namespace: "shop".into(),
            name: name.into(),
        };
        AuthDef {
            policy: "shop/auth".into(),
            api_key: api.map(|location| tollgate_compile::l7::table::ApiKeyDef {
                location,
                files: vec![s("keys")],
            }),
            basic: if basic { vec![s("users")] } else { vec![] },
            jwt: vec![],
            client_certificate: None,
            allowed_consumers: None,
        }
    }

    fn table_with(def: AuthDef) -> RouteTable {
        let mut t = RouteTable::default();
        t.policy.auth.push(def);
        t
    }

    #[tokio::test]
    async fn requests_authenticate_by_header_query_or_basic_and_files_reload() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("shop/keys/keys");
        let users = dir.path().join("shop/users/htpasswd");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        std::fs::create_dir_all(users.parent().unwrap()).unwrap();
        std::fs::write(&keys, key_line("app-1", b"0123456789", "good-key")).unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&users, format!("alice:{hash}\n")).unwrap();

        let store = AuthStore::new(dir.path().to_owned());
        let header = HeaderName::from_static("x-api-key");
        let def = policy(Some(KeyLocation::Header(header.clone())), true);
        let rt = store.load(&table_with(def.clone())).unwrap().remove(0);
        let with = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            h
        };
        let auth = |h: HeaderMap, q: Option<&'static str>| {
            let def = def.clone();
            let rt = rt.clone();
            async move {
                authenticate(&def, &rt, &h, q, None)
                    .await
                    .map(|a| a.consumer)
            }
        };
        assert_eq!(auth(HeaderMap::new(), None).await, Err(Failure::Missing));
        assert_eq!(
            auth(with("x-api-key", ""), None).await,
            Err(Failure::Missing)
        );
        assert_eq!(
            auth(with("x-api-key", "bad"), None).await,
            Err(Failure::Invalid)
        );
        assert_eq!(
            auth(with("x-api-key", "good-key"), None).await.as_deref(),
            Ok("app-1")
        );
        // alice:pw
        assert_eq!(
            auth(with("authorization", "Basic YWxpY2U6cHc="), None)
                .await
                .as_deref(),
            Ok("alice")
        );
        // alice:px, and an unknown user
        assert_eq!(
            auth(with("authorization", "Basic YWxpY2U6cHg="), None).await,
            Err(Failure::Invalid)
        );
        assert_eq!(
            auth(with("authorization", "Basic Ym9iOnB3"), None).await,
            Err(Failure::Invalid)
        );

        // A query parameter.
        let qdef = policy(Some(KeyLocation::Query("api_key".into())), false);
        let qrt = store.load(&table_with(qdef.clone())).unwrap().remove(0);
        let q = |query: &'static str| {
            let (d, r) = (qdef.clone(), qrt.clone());
            async move {
                authenticate(&d, &r, &HeaderMap::new(), Some(query), None)
                    .await
                    .map(|a| a.consumer)
            }
        };
        assert_eq!(q("a=1&api_key=good-key").await.as_deref(), Ok("app-1"));
        assert_eq!(q("a=1").await, Err(Failure::Missing));
        // Basic credentials are not looked at when the policy has no basicAuth.
        assert_eq!(
            authenticate(
                &qdef,
                &qrt,
                &with("authorization", "Basic YWxpY2U6cHc="),
                None,
                None
            )
            .await,
            Err(Failure::Missing)
        );

        // A changed file is reloaded; a bad one keeps the keys loaded before.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&keys, key_line("app-2", b"abcdefghij", "new-key")).unwrap();
        assert!(store.check().is_empty());
        assert_eq!(
            auth(with("x-api-key", "new-key"), None).await.as_deref(),
            Ok("app-2")
        );
        assert_eq!(
            auth(with("x-api-key", "good-key"), None).await,
            Err(Failure::Invalid)
        );
        // A remembered basic credential stops working once the user's hash changes.
        assert_eq!(
            auth(with("authorization", "Basic YWxpY2U6cHc="), None)
                .await
                .as_deref(),
            Ok("alice")
        );
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            &users,
            format!("alice:{}\n", bcrypt::hash("pw2", 4).unwrap()),
        )
        .unwrap();
        assert!(store.check().is_empty());
        assert_eq!(
            auth(with("authorization", "Basic YWxpY2U6cHc="), None).await,
            Err(Failure::Invalid)
        );
        // alice:pw2
        assert_eq!(
            auth(with("authorization", "Basic YWxpY2U6cHcy"), None)
                .await
                .as_deref(),
            Ok("alice")
        );

        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&keys, "clear-key-oops\n").unwrap();
        assert_eq!(store.check(), vec![keys.clone()]);
        assert_eq!(
            auth(with("x-api-key", "new-key"), None).await.as_deref(),
            Ok("app-2")
        );
    }

    #[test]
    fn a_missing_or_bad_file_refuses_the_revision_naming_the_policy_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::new(dir.path().to_owned());
        let def = policy(Some(KeyLocation::Query("k".into())), false);
        let e = store
            .load(&table_with(def.clone()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("AuthPolicy shop/auth: cannot read "), "{e}");
        assert!(e.contains("shop/keys/keys"), "{e}");
        let keys = dir.path().join("shop/keys/keys");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        std::fs::write(&keys, "a:sha256:00:00\n").unwrap();
        let e = store.load(&table_with(def)).err().unwrap().to_string();
        assert!(
            e.contains("shop/keys/keys line 1: the salt is shorter"),
            "{e}"
        );
    }

    #[test]
    fn challenges_name_the_route_and_where_the_key_goes() {
        let def = policy(
            Some(KeyLocation::Header(HeaderName::from_static("x-api-key"))),
            true,
        );
        assert_eq!(
            challenges(&def, "shop/orders", Failure::Missing),
            [
                "ApiKey realm=\"shop/orders\", header=\"x-api-key\"",
                "Basic realm=\"shop/orders\", charset=\"UTF-8\""
            ]
        );
    }
}
