//! API keys (`apiKey`): a key in a request header or query parameter, checked against the
//! key files of the policy.
//!
//! Key file (`<namespace>/<name>/keys` under the secrets directory): one line per key,
//! `consumer-id:sha256:<salt hex>:<hex of sha256(salt || key)>` (the salt at least
//! [`MIN_SALT_BYTES`] bytes); blank lines and lines starting with `#` are ignored.
//!
//! Cost of a request: the file is indexed when it is loaded, by salt and then by hash, so a
//! presented key is hashed once per distinct salt of the file and looked up, whatever the
//! number of keys. A file whose lines share one salt (as the documented recipe makes them)
//! costs one SHA-256 per request; a file with a salt per line costs one per line, which is
//! why a key longer than [`MAX_KEY_BYTES`] is refused before any hashing, and why loading such
//! a file warns beyond [`MANY_SALTS`].
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::warn;

use super::store::{lines, AuthFileError, CredentialFile, FileSet, Loader};
use super::{check_consumer, Authenticated, Failure, Request, Scheme};
use tollgate_compile::l7::table::{query_param, AuthDef, KeyLocation, SecretRef};

/// Name of the file of API keys in a credential Secret's directory.
pub const KEYS_FILE: &str = "keys";
/// Shortest salt accepted in a key file.
pub const MIN_SALT_BYTES: usize = 8;
/// Longest API key checked; a longer one is refused (`invalid`) without being hashed. Keys
/// are random strings (the recipe makes 64 hex digits); 512 bytes leaves room for any format
/// while bounding what a request can make the proxy hash.
pub const MAX_KEY_BYTES: usize = 512;
/// Distinct salts in one key file above which loading it warns (each costs a SHA-256 per
/// request).
pub const MANY_SALTS: usize = 16;

/// The keys of one salt: `sha256(salt || key)` -> the line (from 1) and consumer.
struct SaltGroup {
    salt: Vec<u8>,
    keys: HashMap<[u8; 32], KeyEntry>,
}

/// A key's line (from 1) and consumer.
struct KeyEntry {
    line: usize,
    consumer: Arc<str>,
    /// The consumer as the value of the header the backend gets, made once here rather than
    /// on every request.
    header: Option<http::HeaderValue>,
}

/// The API keys of one file, indexed by salt and hash.
pub struct KeyIndex {
    /// In the order of their first line.
    groups: Vec<SaltGroup>,
    len: usize,
}

#[cfg(test)]
thread_local! {
    /// SHA-256 computations of [`salted_hash`] on this thread (tests count them).
    pub static HASHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn salted_hash(salt: &[u8], key: &[u8]) -> [u8; 32] {
    #[cfg(test)]
    HASHES.with(|n| n.set(n.get() + 1));
    let mut h = Sha256::new();
    h.update(salt);
    h.update(key);
    h.finalize().into()
}

impl KeyIndex {
    /// Number of keys (lines).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file holds no key (a parsed file never is: it is refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct salts: the SHA-256 computations of one lookup.
    pub fn salts(&self) -> usize {
        self.groups.len()
    }

    /// The request's authentication by `key`: its consumer, if a line of the file has its hash
    /// (the first such line).
    ///
    /// The hash is looked up in a hash table, not compared in constant time: the time taken
    /// can only tell something about `sha256(salt || key)`, a value an attacker who does not
    /// know the salt cannot steer, and from which nothing about a stored hash can be
    /// worked back. Every salt is tried (no early return), so the time does not tell which
    /// salt matched either.
    pub fn lookup(&self, key: &[u8]) -> Option<Authenticated> {
        let mut found: Option<&KeyEntry> = None;
        for g in &self.groups {
            if let Some(hit) = g.keys.get(&salted_hash(&g.salt, key)) {
                if found.is_none_or(|f| hit.line < f.line) {
                    found = Some(hit);
                }
            }
        }
        found.map(|e| Authenticated {
            consumer: e.consumer.clone(),
            consumer_header: e.header.clone(),
            headers: Vec::new(),
        })
    }
}

/// Parses a key file.
pub fn parse_keys(file: &Path, text: &str) -> Result<KeyIndex, AuthFileError> {
    let mut groups: Vec<SaltGroup> = Vec::new();
    let mut group_of: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut len = 0;
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
        let g = *group_of.entry(salt.clone()).or_insert_with(|| {
            groups.push(SaltGroup {
                salt,
                keys: HashMap::new(),
            });
            groups.len() - 1
        });
        // The same key twice: the first line names its consumer.
        groups[g].keys.entry(h).or_insert_with(|| KeyEntry {
            line,
            consumer: consumer.into(),
            header: http::HeaderValue::from_str(consumer).ok(),
        });
        len += 1;
    }
    if len == 0 {
        return Err(AuthFileError::Empty {
            file: file.to_owned(),
        });
    }
    if groups.len() > MANY_SALTS {
        warn!(file = %file.display(), keys = len, salts = groups.len(),
            "key file with many salts: each request hashes its key once per salt; give the lines of a file one salt");
    }
    Ok(KeyIndex { groups, len })
}

impl CredentialFile for KeyIndex {
    const NAME: &'static str = KEYS_FILE;
    fn parse(file: &Path, text: &str) -> Result<Self, AuthFileError> {
        parse_keys(file, text)
    }
}

/// The API-key method of a policy.
pub struct ApiKey {
    location: KeyLocation,
    files: Vec<SecretRef>,
    sets: Vec<Arc<FileSet<KeyIndex>>>,
}

impl Scheme for ApiKey {
    type Credentials<'r> = Cow<'r, [u8]>;
    const COST: u8 = 1;

    fn of(def: &AuthDef) -> Option<Self> {
        let k = def.api_key.as_ref()?;
        Some(ApiKey {
            location: k.location.clone(),
            files: k.files.clone(),
            sets: Vec::new(),
        })
    }

    fn load(&mut self, loader: &mut Loader<'_>) -> Result<(), AuthFileError> {
        self.sets = self
            .files
            .iter()
            .map(|s| loader.file::<KeyIndex>(s))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn present<'r>(&self, req: &Request<'r>) -> Option<Cow<'r, [u8]>> {
        let key: Cow<'r, [u8]> = match &self.location {
            // Two key fields are refused (an empty key matches none), not read as the first:
            // a backend reading the other would act for another consumer than was checked.
            KeyLocation::Header(h) if req.headers.get_all(h).iter().nth(1).is_some() => {
                return Some(Cow::Borrowed(b""));
            }
            KeyLocation::Header(h) => req.headers.get(h)?.as_bytes().into(),
            KeyLocation::Query(q) => match query_param(req.query, q)? {
                Cow::Borrowed(s) => s.as_bytes().into(),
                Cow::Owned(s) => s.into_bytes().into(),
            },
        };
        (!key.is_empty()).then_some(key)
    }

    async fn verify<'r>(&self, key: Self::Credentials<'r>) -> Result<Authenticated, Failure> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Failure::Invalid);
        }
        for set in &self.sets {
            if let Some(ok) = set.load().lookup(&key) {
                return Ok(ok);
            }
        }
        Err(Failure::Invalid)
    }

    fn challenge(&self, realm: &str, _: Failure) -> String {
        let (what, name) = match &self.location {
            KeyLocation::Header(h) => ("header", h.as_str()),
            KeyLocation::Query(q) => ("query", q.as_str()),
        };
        format!("ApiKey realm=\"{realm}\", {what}=\"{name}\"")
    }

    fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(ToString::to_string).collect();
        let files = files.join(", ");
        match &self.location {
            KeyLocation::Header(h) => format!("an API key in header {h} (keys of {files})"),
            KeyLocation::Query(q) => {
                format!("an API key in query parameter {q} (keys of {files})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key line as the documented shell recipe makes it.
    pub(crate) fn key_line(consumer: &str, salt: &[u8], key: &str) -> String {
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

    /// The consumer `keys` names for `key`.
    fn consumer_of(keys: &KeyIndex, key: &[u8]) -> Option<Arc<str>> {
        keys.lookup(key).map(|a| a.consumer)
    }

    fn hashes() -> usize {
        HASHES.with(|n| n.get())
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
        assert_eq!(consumer_of(&keys, b"k-one").as_deref(), Some("shop-app"));
        assert_eq!(consumer_of(&keys, b"k-two").as_deref(), Some("billing"));
        assert_eq!(consumer_of(&keys, b"k-one "), None);
        assert_eq!(consumer_of(&keys, b""), None);
        // The hash of the key without its salt does not match.
        let unsalted = format!(
            "x:sha256:{}:{}",
            hex::encode(b"saltsalt"),
            hex::encode(Sha256::digest(b"k-one"))
        );
        let keys = parse_keys(Path::new("keys"), &unsalted).unwrap();
        assert_eq!(consumer_of(&keys, b"k-one"), None);
    }

    #[test]
    fn the_first_line_of_a_key_names_its_consumer_whatever_its_salt() {
        let text = [
            key_line("first", b"salt-bbbb", "k"),
            key_line("other", b"salt-aaaa", "x"),
            key_line("second", b"salt-aaaa", "k"),
            key_line("third", b"salt-bbbb", "k"),
        ]
        .join("\n");
        let keys = parse_keys(Path::new("keys"), &text).unwrap();
        assert_eq!((keys.len(), keys.salts()), (4, 2));
        assert_eq!(consumer_of(&keys, b"k").as_deref(), Some("first"));
        assert_eq!(consumer_of(&keys, b"x").as_deref(), Some("other"));
    }

    #[test]
    fn ten_thousand_keys_of_one_salt_are_found_with_one_hash() {
        let salt = b"one-salt-for-the-file";
        let text: String = (0..10_000)
            .map(|i| key_line(&format!("app-{i}"), salt, &format!("key-{i}")) + "\n")
            .collect();
        let keys = parse_keys(Path::new("keys"), &text).unwrap();
        assert_eq!((keys.len(), keys.salts()), (10_000, 1));
        for i in [0, 1, 4_999, 9_999] {
            let before = hashes();
            assert_eq!(
                consumer_of(&keys, format!("key-{i}").as_bytes()).as_deref(),
                Some(format!("app-{i}").as_str())
            );
            assert_eq!(hashes() - before, 1);
        }
        let before = hashes();
        assert_eq!(consumer_of(&keys, b"key-10000"), None);
        assert_eq!(hashes() - before, 1, "a wrong key costs one hash too");
    }

    #[test]
    fn a_salt_per_line_costs_a_hash_per_line() {
        let text: String = (0..100)
            .map(|i| key_line("app", format!("salt-{i:04}").as_bytes(), &format!("k{i}")) + "\n")
            .collect();
        let keys = parse_keys(Path::new("keys"), &text).unwrap();
        assert_eq!(keys.salts(), 100);
        let before = hashes();
        assert_eq!(consumer_of(&keys, b"k42").as_deref(), Some("app"));
        assert_eq!(hashes() - before, 100);
    }

    #[tokio::test]
    async fn a_key_longer_than_the_cap_is_refused_without_hashing() {
        let text = key_line("app", b"saltsalt", &"k".repeat(MAX_KEY_BYTES));
        let method = ApiKey {
            location: KeyLocation::Header(http::HeaderName::from_static("x-api-key")),
            files: Vec::new(),
            sets: vec![Arc::new(FileSet::new(
                parse_keys(Path::new("keys"), &text).unwrap(),
            ))],
        };
        let verify = |key: Vec<u8>| method.verify(Cow::Owned(key));
        // At the cap: hashed and accepted.
        let before = hashes();
        let ok = verify(vec![b'k'; MAX_KEY_BYTES]).await;
        assert_eq!(ok.map(|a| a.consumer).as_deref(), Ok("app"));
        assert_eq!(hashes() - before, 1);
        // One byte over, and 60 KB: refused as invalid, nothing hashed.
        for len in [MAX_KEY_BYTES + 1, 61_440] {
            let before = hashes();
            assert_eq!(verify(vec![b'k'; len]).await, Err(Failure::Invalid));
            assert_eq!(hashes(), before, "{len} bytes were hashed");
        }
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
            let e = parse_keys(Path::new("/s/ns/k/keys"), &text).err().unwrap();
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
}
