//! JWT authentication (`jwt`): JWKS key sets (inline, or fetched from a URI and kept fresh),
//! the check of a token against a provider, and the method ([`Jwt`]) that tries a request's
//! tokens against the policy's providers in turn.
//!
//! Keys: RSA (RS256), EC P-256 (ES256) and Ed25519 (EdDSA) signing keys of a JWKS are used;
//! other keys (encryption keys, symmetric `oct` keys, other curves, a JWK whose `alg` does not
//! match its type) are skipped, and at most [`MAX_JWKS_KEYS`] are kept. A token's `alg` must be
//! the one of its key: `none`, HS256 and the rest are refused.
//!
//! A JWKS from a URI is fetched off the request path: when the revision is applied, then every
//! `refreshInterval` (after a failed fetch with no keys yet: again after 1 s, 2 s, ... up to
//! 30 s). A token whose `kid` is not in the set makes the request fetch the set again, at most
//! once per [`MIN_KID_REFRESH_GAP`] per provider (requests meanwhile wait for that one fetch or
//! are refused as `unknown_kid`), so tokens with made-up `kid`s cannot make the gateway hammer
//! the identity provider. A fetch that fails (unreachable, timeout, not 200, larger than
//! [`MAX_JWKS_BYTES`], not a JWKS with a usable key) keeps the keys fetched before, is logged
//! and counted (`tollgate_jwks_refresh_failures_total{policy,provider}`). When the first fetch
//! fails, the revision still applies and every token of that provider is refused (401,
//! `unknown_kid`) until a fetch succeeds: fail closed, without tying policy deployment to the
//! identity provider's availability.
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, Validation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tracing::{info, warn};

use super::store::{AuthFileError, Loader};
use super::{Authenticated, Failure, Request, Scheme};
use crate::metrics::{JwksLabels, JwksMetrics};
pub use tollgate_compile::l7::jwks::{parse_jwks, KeySet, VerifyingKey, MAX_JWKS_KEYS};
use tollgate_compile::l7::table::{AuthDef, JwksDef, JwtProviderDef, TokenLocation};

/// Largest JWKS document fetched.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Time allowed for a JWKS fetch (connection, TLS, request and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest time between two fetches of a JWKS caused by tokens with an unknown `kid`.
pub const MIN_KID_REFRESH_GAP: Duration = Duration::from_secs(5);
/// Longest token looked at.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest claim value sent in a header.
pub const MAX_CLAIM_HEADER_BYTES: usize = 4096;
/// The system's trusted roots, for `https` JWKS URIs (the first file that exists).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Where a JWKS is fetched from.
struct Remote {
    url: url::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    refresh: Duration,
}

/// The keys of one JWT provider of one AuthPolicy.
pub struct Jwks {
    remote: Option<Remote>,
    keys: ArcSwap<KeySet>,
    /// When a fetch was last started (held while fetching: one fetch at a time).
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    labels: JwksLabels,
    metrics: JwksMetrics,
}

impl Jwks {
    /// The keys in use.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Fetches the set again, unless `min_gap` is given and the last fetch started less than
    /// that ago. A set that cannot be fetched keeps the keys in use.
    pub async fn refresh(&self, min_gap: Option<Duration>) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut last = self.last_fetch.lock().await;
        if let (Some(gap), Some(t)) = (min_gap, *last) {
            if t.elapsed() < gap {
                return;
            }
        }
        *last = Some(Instant::now());
        let got = fetch(&remote.url, remote.tls.as_ref())
            .await
            .and_then(|body| parse_jwks(&body));
        // The gap is counted from the end too: the requests that waited for this fetch (an
        // unknown `kid` each) find it recent and are answered, instead of each starting
        // another fetch of a slow server in turn, their wait growing by a fetch each.
        *last = Some(Instant::now());
        match got {
            Ok(set) => {
                let n = set.len();
                self.keys.store(Arc::new(set));
                self.metrics.keys.get_or_create(&self.labels).set(n as i64);
                info!(policy = %self.labels.policy, provider = %self.labels.provider, keys = n, "JWKS fetched");
            }
            Err(error) => {
                self.metrics
                    .refresh_failures
                    .get_or_create(&self.labels)
                    .inc();
                warn!(policy = %self.labels.policy, provider = %self.labels.provider, url = %remote.url, %error,
                    kept = self.keys.load().len(), "JWKS not fetched; the keys fetched before stay in use");
            }
        }
    }
}

/// Keeps a fetched JWKS fresh until it is dropped.
async fn keep_fresh(jwks: Weak<Jwks>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(j) = jwks.upgrade() else {
            return;
        };
        j.refresh(None).await;
        let wait = match &j.remote {
            Some(r) if !j.keys.load().is_empty() => {
                backoff = Duration::from_secs(1);
                r.refresh
            }
            Some(_) => {
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                w
            }
            None => return,
        };
        drop(j);
        tokio::time::sleep(wait).await;
    }
}

/// A JWKS fetch in `FETCH_TIMEOUT`: the body of a 200 answer, at most `MAX_JWKS_BYTES`.
async fn fetch(url: &url::Url, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, tls)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer in {FETCH_TIMEOUT:?}")),
    }
}

async fn fetch_inner(
    url: &url::Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Vec<u8>, String> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err("no host".into()),
    };
    let port = url.port_or_known_default().ok_or("no port")?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .header(http::header::USER_AGENT, "tollgate")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    match tls {
        None => send(tcp, req).await,
        Some(config) => {
            let name = ServerName::try_from(host).map_err(|e| format!("bad server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(stream, req).await
        }
    }
}

async fn send<S>(
    stream: S,
    req: http::Request<http_body_util::Empty<Bytes>>,
) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("body: {e} (at most {MAX_JWKS_BYTES} bytes)"))?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    driver.abort();
    result
}

/// The TLS client configuration of `https` JWKS URIs: the system's roots, and `ca` if given.
fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for file in SYSTEM_ROOTS {
        if let Ok(certs) = CertificateDer::pem_file_iter(file) {
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
            break;
        }
    }
    if let Some(ca) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", ca.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Identifies a fetched JWKS across revisions: a revision that keeps a provider unchanged
/// keeps its keys (and fetches nothing at apply).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    policy: String,
    provider: String,
    url: String,
    ca: Option<Vec<u8>>,
    refresh: Duration,
}

/// The JWKS of every JWT provider in force.
pub struct JwksStore {
    dir: PathBuf,
    metrics: JwksMetrics,
    fetched: Mutex<HashMap<CacheKey, Weak<Jwks>>>,
}

impl JwksStore {
    /// A store reading CA files under `dir` (the secrets directory).
    pub fn new(dir: PathBuf, metrics: JwksMetrics) -> JwksStore {
        JwksStore {
            dir,
            metrics,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the sets no revision holds any more, and their `tollgate_jwks_keys` series
    /// (unless a set in use has the same labels).
    pub fn forget_dropped(&self) {
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone: Vec<JwksLabels> = Vec::new();
        fetched.retain(|k, w| {
            let alive = w.strong_count() > 0;
            if !alive {
                gone.push(JwksLabels {
                    policy: k.policy.clone(),
                    provider: k.provider.clone(),
                });
            }
            alive
        });
        for labels in gone {
            let in_use = fetched
                .keys()
                .any(|k| k.policy == labels.policy && k.provider == labels.provider);
            if !in_use {
                self.metrics.keys.remove(&labels);
            }
        }
    }

    /// The keys of provider `def` of AuthPolicy `policy`: parsed (inline), or the set already
    /// fetched for the same provider, or a new set whose first fetch starts now (needs a
    /// tokio runtime; without one nothing is fetched). Fails only on an unusable CA file.
    pub fn get(&self, policy: &str, def: &JwtProviderDef) -> Result<Arc<Jwks>, String> {
        let labels = JwksLabels {
            policy: policy.to_owned(),
            provider: def.name.clone(),
        };
        let (url, ca, refresh) = match &def.jwks {
            JwksDef::Inline(text) => {
                let set = parse_jwks(text.as_bytes())?;
                return Ok(Arc::new(Jwks {
                    remote: None,
                    keys: ArcSwap::from_pointee(set),
                    last_fetch: tokio::sync::Mutex::new(None),
                    labels,
                    metrics: self.metrics.clone(),
                }));
            }
            JwksDef::Uri { url, ca, refresh } => (url, ca, *refresh),
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let ca_file = ca.as_ref().map(|s| {
            self.dir
                .join(&s.namespace)
                .join(&s.name)
                .join(crate::tls::CA_FILE)
        });
        let ca_bytes = match &ca_file {
            Some(f) => {
                Some(std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?)
            }
            None => None,
        };
        let key = CacheKey {
            policy: policy.to_owned(),
            provider: def.name.clone(),
            url: url.clone(),
            ca: ca_bytes,
            refresh,
        };
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = fetched.get(&key).and_then(Weak::upgrade) {
            return Ok(j);
        }
        let tls = match parsed.scheme() {
            "https" => Some(client_config(ca_file.as_deref())?),
            _ => None,
        };
        let jwks = Arc::new(Jwks {
            remote: Some(Remote {
                url: parsed,
                tls,
                refresh,
            }),
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            labels,
            metrics: self.metrics.clone(),
        });
        self.metrics.keys.get_or_create(&jwks.labels).set(0);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(keep_fresh(Arc::downgrade(&jwks)));
        }
        fetched.insert(key, Arc::downgrade(&jwks));
        Ok(jwks)
    }
}

/// Why a token is refused: the `reason` label of `tollgate_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// Not a JWT, a refused algorithm (`none`, HS*), a key of another algorithm, no `exp`, or
    /// a consumer claim that is missing or not a valid consumer id.
    Invalid,
    /// `exp` is past (beyond the clock skew).
    Expired,
    /// `nbf` is ahead (beyond the clock skew).
    NotYetValid,
    /// `iss` is missing or not the provider's issuer.
    Issuer,
    /// `aud` is missing or names none of the provider's audiences.
    Audience,
    /// No key of the set has the token's `kid` (or, without a `kid`, its algorithm).
    UnknownKid,
    /// The signature does not match.
    Signature,
}

impl TokenFailure {
    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            TokenFailure::Invalid => "invalid",
            TokenFailure::Expired => "expired",
            TokenFailure::NotYetValid => "not_yet_valid",
            TokenFailure::Issuer => "issuer",
            TokenFailure::Audience => "audience",
            TokenFailure::UnknownKid => "unknown_kid",
            TokenFailure::Signature => "signature",
        }
    }

    /// The `error_description` of the `WWW-Authenticate` challenge (RFC 6750).
    pub fn description(self) -> &'static str {
        match self {
            TokenFailure::Invalid => "the token is malformed or not acceptable",
            TokenFailure::Expired => "the token has expired",
            TokenFailure::NotYetValid => "the token is not valid yet",
            TokenFailure::Issuer => "the token has another issuer",
            TokenFailure::Audience => "the token is for another audience",
            TokenFailure::UnknownKid => "the token's signing key is not known",
            TokenFailure::Signature => "the token's signature does not match",
        }
    }
}

/// An accepted token: its consumer and the claim headers to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The consumer id.
    pub consumer: Arc<str>,
    /// Claim headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The token of a request for provider `def`, if it carries one.
pub fn token<'a>(
    def: &JwtProviderDef,
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    let bearer = |v: &'a str| -> &'a str {
        match v.trim().split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => v.trim(),
        }
    };
    let t: Cow<'a, str> = match &def.location {
        TokenLocation::Bearer => {
            let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = v.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            rest.trim().into()
        }
        TokenLocation::Header(h) => bearer(headers.get(h)?.to_str().ok()?).into(),
        TokenLocation::Query(q) => tollgate_compile::l7::table::query_param(query, q)?,
    };
    (!t.is_empty()).then_some(t)
}

/// The validation of a token signed with `alg` for provider `def`.
fn validation(def: &JwtProviderDef, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = def.clock_skew.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(iss) = &def.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if def.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&def.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn failure(e: &jsonwebtoken::errors::Error) -> TokenFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => TokenFailure::Expired,
        K::ImmatureSignature => TokenFailure::NotYetValid,
        K::InvalidIssuer => TokenFailure::Issuer,
        K::InvalidAudience => TokenFailure::Audience,
        K::MissingRequiredClaim(c) if c == "iss" => TokenFailure::Issuer,
        K::MissingRequiredClaim(c) if c == "aud" => TokenFailure::Audience,
        K::InvalidSignature => TokenFailure::Signature,
        _ => TokenFailure::Invalid,
    }
}

/// Whether the token's header has `crit` (the header has been decoded once already).
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine as _;
    let Some(first) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .ok()
        .and_then(|raw| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&raw).ok()
        })
        .is_some_and(|h| h.contains_key("crit"))
}

/// The consumer and claim headers of checked claims.
pub fn consumer_of(
    def: &JwtProviderDef,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Verified, TokenFailure> {
    // Registered claims of the wrong type are refused, not read as absent: the dates are
    // NumericDates (RFC 7519 sections 4.1.4-4.1.6), `iss` one StringOrURI (section 4.1.1).
    for date in ["exp", "nbf", "iat"] {
        if claims.get(date).is_some_and(|v| !v.is_number()) {
            return Err(TokenFailure::Invalid);
        }
    }
    if claims.get("iss").is_some_and(|v| !v.is_string()) {
        return Err(TokenFailure::Issuer);
    }
    let consumer = claims
        .get(&def.consumer_claim)
        .and_then(|v| v.as_str())
        .filter(|c| super::check_consumer(c).is_ok())
        .ok_or(TokenFailure::Invalid)?;
    let mut headers = Vec::new();
    for (claim, header) in &def.claim_headers {
        let text = match claims.get(claim) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        if text.len() > MAX_CLAIM_HEADER_BYTES {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.push((header.clone(), v));
        }
    }
    Ok(Verified {
        consumer: consumer.into(),
        headers,
    })
}

/// Checks `token` against provider `def` and its keys.
pub async fn verify(
    def: &JwtProviderDef,
    jwks: &Jwks,
    token: &str,
) -> Result<Verified, TokenFailure> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenFailure::Invalid);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenFailure::Invalid)?;
    // Extensions the token says must be understood: none is (RFC 7515 section 4.1.11: the
    // JWS is then invalid; `b64: false` of RFC 7797 would change what the signature covers).
    if names_critical_extensions(token) {
        return Err(TokenFailure::Invalid);
    }
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
    ) {
        return Err(TokenFailure::Invalid);
    }
    let mut keys = jwks.keys();
    let has_key = |set: &KeySet| match &header.kid {
        Some(kid) => set.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
        None => set.keys.iter().any(|k| k.alg == header.alg),
    };
    if !has_key(&keys) {
        jwks.refresh(Some(MIN_KID_REFRESH_GAP)).await;
        keys = jwks.keys();
        if !has_key(&keys) {
            return Err(TokenFailure::UnknownKid);
        }
    }
    let mut last = TokenFailure::UnknownKid;
    for k in keys.keys.iter().filter(|k| match &header.kid {
        Some(kid) => k.kid.as_deref() == Some(kid),
        None => k.alg == header.alg,
    }) {
        if k.alg != header.alg {
            // The key's type fixes the algorithm: a token may not choose another.
            last = TokenFailure::Invalid;
            continue;
        }
        match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &k.key,
            &validation(def, k.alg),
        ) {
            Ok(data) => return consumer_of(def, &data.claims),
            Err(e) => {
                last = failure(&e);
                if last != TokenFailure::Signature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

/// The JWT method of a policy: its providers, tried in order, and their keys.
pub struct Jwt {
    providers: Vec<JwtProviderDef>,
    /// Aligned with `providers` once loaded.
    keys: Vec<Arc<Jwks>>,
}

impl Scheme for Jwt {
    /// The token of each provider whose location holds one: (provider index, token).
    type Credentials<'r> = Vec<(usize, Cow<'r, str>)>;
    const COST: u8 = 2;

    fn of(def: &AuthDef) -> Option<Self> {
        (!def.jwt.is_empty()).then(|| Jwt {
            providers: def.jwt.clone(),
            keys: Vec::new(),
        })
    }

    fn load(&mut self, loader: &mut Loader<'_>) -> Result<(), AuthFileError> {
        self.keys = self
            .providers
            .iter()
            .map(|p| loader.jwks(p))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn present<'r>(&self, req: &Request<'r>) -> Option<Self::Credentials<'r>> {
        let tokens: Vec<_> = self
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| token(p, req.headers, req.query).map(|t| (i, t)))
            .collect();
        (!tokens.is_empty()).then_some(tokens)
    }

    /// When no provider accepts the token, the failure is that of the first provider whose
    /// issuer matches (or of the last one).
    async fn verify<'r>(&self, tokens: Self::Credentials<'r>) -> Result<Authenticated, Failure> {
        let mut failure: Option<TokenFailure> = None;
        for (i, t) in &tokens {
            let (Some(def), Some(jwks)) = (self.providers.get(*i), self.keys.get(*i)) else {
                continue; // not loaded: no key accepts anything
            };
            // Boxed: a key fetch's state (about 5 KB) stays out of the future of every
            // request on a route with authentication, API keys and passwords too.
            match Box::pin(verify(def, jwks, t)).await {
                Ok(v) => {
                    return Ok(Authenticated {
                        consumer: v.consumer,
                        consumer_header: None,
                        headers: v.headers,
                    })
                }
                // An issuer mismatch says least: keep a more telling failure.
                Err(f) => {
                    if failure.is_none_or(|o| o == TokenFailure::Issuer) {
                        failure = Some(f);
                    }
                }
            }
        }
        Err(failure.map_or(Failure::Invalid, Failure::Token))
    }

    /// `Bearer realm="<route>"` (RFC 6750), with `error="invalid_token",
    /// error_description="..."` when a token was refused.
    fn challenge(&self, realm: &str, failure: Failure) -> String {
        match failure {
            Failure::Token(t) => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                t.description()
            ),
            _ => format!("Bearer realm=\"{realm}\""),
        }
    }

    fn describe(&self) -> String {
        let each: Vec<String> = self
            .providers
            .iter()
            .map(|p| {
                format!(
                    "a JWT of provider {}{} (consumer from claim {})",
                    p.name,
                    p.issuer
                        .as_ref()
                        .map(|i| format!(", issuer {i}"))
                        .unwrap_or_default(),
                    p.consumer_claim
                )
            })
            .collect();
        each.join(" or ")
    }
}

#[cfg(test)]
mod tests;
