//! The secrets directory of a test proxy (`--tls-secrets-dir`), a temporary directory laid out
//! as docs/l7-gateway.md describes: a Secret or ConfigMap `NS/NAME` is the directory
//! `<dir>/NS/NAME`, holding `keys` (API keys), `htpasswd` (basic auth), `tls.crt` and
//! `tls.key` (certificates) or `ca.crt` (CA certificates). The files are written the way an
//! operator makes them, independently of the proxy's parsers: key lines from SHA-256 of salt
//! and key, htpasswd lines from the `bcrypt` crate.
use std::path::Path;

use sha2::{Digest, Sha256};

/// bcrypt cost of test htpasswd files: the lowest, so that tests stay fast (the proxy reads
/// the cost from the hash).
const BCRYPT_COST: u32 = 4;

/// A temporary secrets directory; removed when dropped.
pub struct Secrets {
    dir: tempfile::TempDir,
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets::new()
    }
}

impl Secrets {
    /// An empty directory.
    pub fn new() -> Secrets {
        Secrets {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `default/<name>/<file>`.
    pub fn write(&self, name: &str, file: &str, text: &str) {
        let dir = self.dir.path().join("default").join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Secret `default/<name>` with an API key file: one `consumer:sha256:salt:hash` line per
    /// `(consumer, key)`, each with its own salt.
    pub fn api_keys(&self, name: &str, keys: &[(&str, &str)]) {
        let mut text = String::from("# consumer:sha256:salt:hash\n");
        for (i, (consumer, key)) in keys.iter().enumerate() {
            let salt: Vec<u8> = (0..16u8)
                .map(|b| b.wrapping_mul(17).wrapping_add(i as u8))
                .collect();
            let mut h = Sha256::new();
            h.update(&salt);
            h.update(key.as_bytes());
            text.push_str(&format!(
                "{consumer}:sha256:{}:{}\n",
                hex::encode(&salt),
                hex::encode(h.finalize())
            ));
        }
        self.write(name, "keys", &text);
    }

    /// Secret `default/<name>` with an htpasswd file of bcrypt hashes (`$2b$`).
    pub fn htpasswd(&self, name: &str, users: &[(&str, &str)]) {
        let text: String = users
            .iter()
            .map(|(user, password)| {
                let hash = bcrypt::hash(password, BCRYPT_COST).expect("bcrypt");
                format!("{user}:{hash}\n")
            })
            .collect();
        self.write(name, "htpasswd", &text);
    }

    /// Secret `default/<name>` with a certificate and its key (`kubernetes.io/tls` layout).
    pub fn tls(&self, name: &str, pem: &super::pki::Pem) {
        self.write(name, "tls.crt", &pem.cert);
        self.write(name, "tls.key", &pem.key);
    }

    /// ConfigMap `default/<name>` with CA certificates.
    pub fn ca(&self, name: &str, ca_pem: &str) {
        self.write(name, "ca.crt", ca_pem);
    }
}
