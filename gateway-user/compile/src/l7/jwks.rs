//! JWKS documents (RFC 7517) -> the keys that can check token signatures. The compiler reads
//! an inline JWKS with this, so a revision with an unusable one is refused; the proxy reads
//! fetched ones with the same function.
//!
//! Keys: RSA (RS256), EC P-256 (ES256) and Ed25519 (EdDSA) signing keys are used; other keys
//! (encryption keys, symmetric `oct` keys, other curves, a JWK whose `alg` does not match its
//! type) are skipped, and at most [`MAX_JWKS_KEYS`] are kept.
//!
//! An EC coordinate shorter than the curve's 32 bytes is taken as the same integer with its
//! leading zero bytes left out (RFC 7518 6.2.1.2 asks for the full length, but PyJWT before
//! 2.10 and other issuers strip them, so about one key in 128 would otherwise never verify);
//! a longer one is not a P-256 coordinate and its key is skipped.
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Keys kept of a JWKS.
pub const MAX_JWKS_KEYS: usize = 64;

/// A key of a JWKS, ready to check signatures.
pub struct VerifyingKey {
    /// The JWK's `kid`.
    pub kid: Option<String>,
    /// The one algorithm this key checks (from its type).
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// The usable keys of a JWKS.
#[derive(Default)]
pub struct KeySet {
    /// The keys, in document order.
    pub keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key of a JWK, if it is a signing key of a supported type.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    if let Some(a) = jwk.common.key_algorithm {
        let same = matches!(
            (a, alg),
            (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !same {
            return None;
        }
    }
    let key = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            // jsonwebtoken joins the decoded coordinates as they are into the SEC1 point.
            let x = p256_coordinate(&p.x)?;
            let y = p256_coordinate(&p.y)?;
            DecodingKey::from_ec_components(&x, &y).ok()?
        }
        _ => DecodingKey::from_jwk(jwk).ok()?,
    };
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// A P-256 coordinate (base64url) re-encoded at its full 32 bytes, or `None` when it is not
/// base64url or longer than 32 bytes.
fn p256_coordinate(b64: &str) -> Option<String> {
    const LEN: usize = 32;
    let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = engine.decode(b64).ok()?;
    if raw.is_empty() || raw.len() > LEN {
        return None;
    }
    let mut full = [0u8; LEN];
    full[LEN - raw.len()..].copy_from_slice(&raw);
    Some(engine.encode(full))
}

/// Parses a JWKS (RFC 7517 `{"keys": [...]}`), keeping its usable keys; an error when it is
/// not a JWKS or has no usable key. The messages never quote the document.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("not a JWKS: no \"keys\" array")?;
    let mut out = Vec::new();
    for k in keys {
        if out.len() >= MAX_JWKS_KEYS {
            break;
        }
        if let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) {
            if let Some(key) = verifying_key(&jwk) {
                out.push(key);
            }
        }
    }
    if out.is_empty() {
        return Err(
            "no usable key (RSA, EC P-256 or Ed25519 signing keys, for RS256, ES256 or EdDSA)"
                .into(),
        );
    }
    Ok(KeySet { keys: out })
}
