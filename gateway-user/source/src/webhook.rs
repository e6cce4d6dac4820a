//! The webhook's shared secret and the check that a call knows it, GitHub style
//! (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`) or GitLab style
//! (`X-Gitlab-Token: <secret>`), both compared in constant time. The HTTP endpoint that calls
//! this is the agent's admin server; what a call does is wake the source for a fetch.
//!
//! <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>,
//! <https://docs.gitlab.com/user/project/integrations/webhooks/#validate-requests-with-a-secret-token>
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// GitHub's signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// GitLab's token header.
pub const TOKEN_HEADER: &str = "x-gitlab-token";

/// The shared secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret(<{} bytes>)", self.0.len())
    }
}

/// Why the secret cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the webhook secret file {} (--webhook-secret-file): {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The variable is not set (or not Unicode).
    #[error("the environment variable {var} (--webhook-secret-env) is not set")]
    Unset {
        /// The variable.
        var: String,
    },
    /// An empty secret would let anyone in.
    #[error("the webhook secret from {from} is empty")]
    Empty {
        /// Where it came from.
        from: String,
    },
}

impl WebhookSecret {
    /// The secret is the file's content, without the trailing newline editors add.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::new(bytes, || {
            format!("{} (--webhook-secret-file)", path.display())
        })
    }

    /// The secret is the variable's value.
    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        let value = std::env::var_os(var).ok_or_else(|| SecretError::Unset {
            var: var.to_owned(),
        })?;
        Self::new(value.into_encoded_bytes(), || {
            format!("${var} (--webhook-secret-env)")
        })
    }

    /// A secret given as bytes (tests, and a secret read from elsewhere).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        Self::new(bytes, || "the given bytes".to_owned())
    }

    fn new(mut bytes: Vec<u8>, from: impl Fn() -> String) -> Result<Self, SecretError> {
        while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(SecretError::Empty { from: from() });
        }
        Ok(WebhookSecret(bytes))
    }

    /// Whether `headers` and `body` prove knowledge of the secret; `Err` says what is wrong
    /// (for the log and the 401 body, never revealing anything about the secret).
    pub fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        if let Some(value) = headers.get(SIGNATURE_HEADER) {
            let hex_mac = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().strip_prefix("sha256="))
                .ok_or("X-Hub-Signature-256 is not \"sha256=<hex>\"")?;
            let mac = hex::decode(hex_mac).map_err(|_| "X-Hub-Signature-256 is not hex")?;
            let mut expected =
                Hmac::<Sha256>::new_from_slice(&self.0).map_err(|_| "unusable secret")?;
            expected.update(body);
            // verify_slice compares in constant time.
            return expected
                .verify_slice(&mac)
                .map_err(|_| "X-Hub-Signature-256 does not match the body and the secret");
        }
        if let Some(token) = headers.get(TOKEN_HEADER) {
            // Compare digests, so that neither the content nor the length of the secret shows
            // in the time taken.
            let given = Sha256::digest(token.as_bytes());
            let wanted = Sha256::digest(&self.0);
            return if bool::from(given.ct_eq(&wanted)) {
                Ok(())
            } else {
                Err("X-Gitlab-Token is wrong")
            };
        }
        Err("no X-Hub-Signature-256 or X-Gitlab-Token header")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_lose_the_trailing_newline_and_may_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "abc\n").unwrap();
        let s = WebhookSecret::from_file(&file).unwrap();
        assert_eq!(s.0, b"abc");
        assert!(!format!("{s:?}").contains("abc"));
        std::fs::write(&file, "\n").unwrap();
        let e = WebhookSecret::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("secret"), "{e}");
        let e = WebhookSecret::from_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let e = WebhookSecret::from_env("TOLLGATE_TEST_UNSET_VARIABLE_X")
            .unwrap_err()
            .to_string();
        assert!(e.contains("TOLLGATE_TEST_UNSET_VARIABLE_X"), "{e}");
    }
}
