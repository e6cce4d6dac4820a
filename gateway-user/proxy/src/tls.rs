//! TLS termination on `HTTPS` listeners (rustls, ring provider).
//!
//! - **Certificates** come from files: the Secret `NS/NAME` of a `certificateRef` is the
//!   directory `<--tls-secrets-dir>/NS/NAME` with `tls.crt` (PEM chain, leaf first) and `tls.key`
//!   (PEM private key), the layout of a mounted `kubernetes.io/tls` Secret. They are read when a
//!   revision is applied ([`CertStore::load`]): a missing, unreadable or mismatched file refuses
//!   the revision.
//! - **Reload**: [`CertStore::check`] runs on a short timer and reads again the files whose
//!   modification time, size or inode changed (a Kubernetes volume swaps a symlink, `cp` writes
//!   in place: both change the stamp). A good new pair is swapped in for the next handshakes;
//!   open connections keep the session they have. A bad one (still bad at the next check, so
//!   that a pair caught half written is not reported) is logged and counted, and the
//!   certificate already loaded keeps being served.
//! - **SNI**: the listener of a connection is chosen from the ClientHello before the handshake
//!   goes on, with the precedence of routing: the exact hostname, then the longest wildcard,
//!   then a listener without hostname. A name that matches none (or no SNI and no listener
//!   without hostname) fails the handshake with an alert. Each listener has its own rustls
//!   `ServerConfig` (ALPN `h2`, `http/1.1`), and requests on a connection must be for hosts of
//!   that listener (`listener::TlsConn::covers`; otherwise 421).
//! - **Client certificates** (optional, per listener): the `validation.caCertificateRefs` of
//!   its Gateway's `spec.tls.frontend` (`default`, or the `perPort` entry of its port) name
//!   ConfigMaps, the files `<--tls-secrets-dir>/NS/NAME/ca.crt`, loaded and reloaded as
//!   the certificates are; the rustls verifier is rebuilt when they change, and sessions
//!   verified against the CAs before resume no more ([`client_auth`]).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tracing::{info, warn};

use crate::metrics::{SecretLabel, TlsFailureLabels};
use tollgate_compile::l7::table::{HostIndex, HostPattern, SecretRef};
use tollgate_compile::l7::RouteTable;

/// Default `--tls-secrets-dir`.
pub const DEFAULT_TLS_SECRETS_DIR: &str = "/etc/tollgate/secrets";
/// Name of the certificate chain file in a Secret's directory.
pub const CERT_FILE: &str = "tls.crt";
/// Name of the CA certificates file in a ConfigMap's directory (client certificates).
pub const CA_FILE: &str = "ca.crt";
/// Name of the private key file in a Secret's directory.
pub const KEY_FILE: &str = "tls.key";
/// Time a client has to complete the TLS handshake, from the accepted connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Largest certificate or key file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_FILE: u64 = 1024 * 1024;
/// ALPN protocols offered, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate and key cannot be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_PEM_FILE`].
    #[error("{} is larger than {MAX_PEM_FILE} bytes", file.display())]
    TooLarge {
        /// The file.
        file: PathBuf,
    },
    /// The file holds no PEM object of the expected kind, or a malformed one.
    #[error("{}: {reason}", file.display())]
    Pem {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is of a type the TLS library cannot sign with, or does not belong to the
    /// certificate.
    #[error("{} does not go with {}: {reason}", key.display(), cert.display())]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// (modification time, size, inode, device) of a file: what says it changed.
type FileStamp = (i128, u64, u64, u64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.size(),
        m.ino(),
        m.dev(),
    ))
}

/// The stamps of the files of one Secret or ConfigMap.
type Stamp = Vec<Option<FileStamp>>;

/// Files that are loaded together and reloaded when they change.
pub trait Source: std::fmt::Debug + Send + Sync + 'static {
    /// What they hold.
    type Value: std::fmt::Debug + Send + Sync + 'static;
    /// The files.
    fn files(&self) -> Vec<&Path>;
    /// Reads and checks them.
    fn load(&self) -> Result<Self::Value, CertError>;
    /// Their stamps now.
    fn stamp(&self) -> Stamp {
        self.files().into_iter().map(file_stamp).collect()
    }
}

/// The files of one Secret.
#[derive(Debug, Clone)]
pub struct SecretFiles {
    /// `tls.crt`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
}

impl SecretFiles {
    /// The files of `secret` under `dir`.
    pub fn new(dir: &Path, secret: &SecretRef) -> SecretFiles {
        let d = dir.join(&secret.namespace).join(&secret.name);
        SecretFiles {
            cert: d.join(CERT_FILE),
            key: d.join(KEY_FILE),
        }
    }

    /// Reads and checks the pair: a PEM chain (leaf first), a PEM private key (PKCS#8, PKCS#1
    /// or SEC1) the provider can sign with, and the key matching the leaf's public key.
    pub fn load(&self) -> Result<CertifiedKey, CertError> {
        Source::load(self)
    }
}

impl Source for SecretFiles {
    type Value = CertifiedKey;

    fn files(&self) -> Vec<&Path> {
        vec![&self.cert, &self.key]
    }

    fn load(&self) -> Result<CertifiedKey, CertError> {
        let cert_pem = read_limited(&self.cert)?;
        let key_pem = read_limited(&self.key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Pem {
                file: self.cert.clone(),
                reason: format!("malformed PEM certificate: {e}"),
            })?;
        if chain.is_empty() {
            return Err(CertError::Pem {
                file: self.cert.clone(),
                reason: "no certificate (expected -----BEGIN CERTIFICATE-----)".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Pem {
            file: self.key.clone(),
            reason: match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no private key (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)".to_owned()
                }
                e => format!("malformed PEM private key: {e}"),
            },
        })?;
        let key_error = |reason: String| CertError::Key {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason,
        };
        let signer = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(format!("unusable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => Ok(certified),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
                key_error("the private key is not the key of the certificate".to_owned()),
            ),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(e) => Err(CertError::Pem {
                file: self.cert.clone(),
                reason: format!("the first certificate cannot be parsed: {e}"),
            }),
        }
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, CertError> {
    use std::io::Read;
    let read = |source| CertError::Read {
        file: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(read)?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(CertError::TooLarge {
            file: path.to_owned(),
        });
    }
    Ok(buf)
}

/// The crypto provider: ring.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The `ca.crt` file of a ConfigMap of CA certificates.
#[derive(Debug, Clone)]
pub struct CaFile(pub PathBuf);

impl CaFile {
    /// The file of `configmap` under `dir`.
    pub fn new(dir: &Path, configmap: &SecretRef) -> CaFile {
        CaFile(
            dir.join(&configmap.namespace)
                .join(&configmap.name)
                .join(CA_FILE),
        )
    }
}

impl Source for CaFile {
    type Value = Vec<CertificateDer<'static>>;

    fn files(&self) -> Vec<&Path> {
        vec![&self.0]
    }

    /// One or more PEM certificates, each usable as a trust anchor.
    fn load(&self) -> Result<Self::Value, CertError> {
        let pem = read_limited(&self.0)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Pem {
                file: self.0.clone(),
                reason: format!("malformed PEM certificate: {e}"),
            })?;
        if certs.is_empty() {
            return Err(CertError::Pem {
                file: self.0.clone(),
                reason: "no certificate (expected -----BEGIN CERTIFICATE-----)".to_owned(),
            });
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, c) in certs.iter().enumerate() {
            roots.add(c.clone()).map_err(|e| CertError::Pem {
                file: self.0.clone(),
                reason: format!("certificate {} is not a usable CA certificate: {e}", i + 1),
            })?;
        }
        Ok(certs)
    }
}

/// Files in use, as loaded now; reloaded by [`CertStore::check`].
#[derive(Debug)]
pub struct Watched<S: Source> {
    secret: SecretRef,
    source: S,
    value: ArcSwap<S::Value>,
    /// Stamp of the files `value` was loaded from.
    loaded: Mutex<Stamp>,
    /// Stamp of the files of the last failed reload, and whether the failure was reported
    /// (files caught between the writes of the certificate and of the key fail once; they
    /// are reported only when they fail again, unchanged, at the next check).
    failed: Mutex<Option<(Stamp, bool)>>,
}

/// One Secret's certificate and key.
pub type CertEntry = Watched<SecretFiles>;
/// One ConfigMap's CA certificates.
pub type CaEntry = Watched<CaFile>;

impl<S: Source> Watched<S> {
    fn load(secret: &SecretRef, source: S) -> Result<Watched<S>, CertError> {
        let stamp = source.stamp();
        let value = source.load()?;
        Ok(Watched {
            secret: secret.clone(),
            source,
            value: ArcSwap::from_pointee(value),
            loaded: Mutex::new(stamp),
            failed: Mutex::new(None),
        })
    }

    fn changed(&self) -> bool {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) != self.source.stamp()
    }

    /// What is in use now.
    pub fn current(&self) -> Arc<S::Value> {
        self.value.load_full()
    }

    /// Reloads the files if they changed; returns whether the value was replaced.
    fn reload(&self, failures: &Family<SecretLabel, Counter>) -> bool {
        let stamp = self.source.stamp();
        if *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) == stamp {
            return false;
        }
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.as_ref() == Some(&(stamp.clone(), true)) {
            return false; // already reported; wait for the files to change again
        }
        let file = self.source.files()[0].display().to_string();
        match self.source.load() {
            Ok(value) => {
                self.value.store(Arc::new(value));
                *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
                *failed = None;
                info!(secret = %self.secret, %file, "TLS certificate reloaded");
                true
            }
            Err(_) if failed.as_ref() != Some(&(stamp.clone(), false)) => {
                // Maybe half written: try again at the next check before reporting.
                *failed = Some((stamp, false));
                false
            }
            Err(error) => {
                *failed = Some((stamp, true));
                failures
                    .get_or_create(&SecretLabel {
                        secret: self.secret.to_string(),
                    })
                    .inc();
                warn!(secret = %self.secret, %error, "TLS certificate files changed but cannot be loaded; the certificate loaded before stays in use");
                false
            }
        }
    }
}

/// The CA certificates of one ConfigMap, as loaded.
type CaCerts = Arc<Vec<CertificateDer<'static>>>;

/// The certificates of one listener, chosen per handshake: the first whose key can sign
/// with a scheme the client offers.
#[derive(Debug)]
struct ListenerCerts(Vec<Arc<CertEntry>>);

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .map(|e| e.current())
            .find(|k| k.key.choose_scheme(schemes).is_some())
    }
}

/// Serves no certificate: the handshake fails with an alert (SNI that matches no listener).
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: Option<Arc<ClientAuth>>,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions");
    let builder = match &client_auth {
        Some(v) => builder.with_client_cert_verifier(v.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    if let Some(auth) = client_auth {
        config.session_storage = Arc::new(CaBoundSessions::new(auth));
    }
    Arc::new(config)
}

/// An HTTPS listener, ready for handshakes.
#[derive(Debug)]
pub struct TlsListener {
    /// Index into the revision's `policy.listeners`.
    pub listener: usize,
    /// Its rustls configuration.
    pub config: Arc<ServerConfig>,
}

/// The HTTPS listeners of one port, by hostname.
#[derive(Debug)]
pub struct TlsPort {
    hosts: HostIndex<Arc<TlsListener>>,
    reject: Arc<ServerConfig>,
}

impl TlsPort {
    /// The listener for a ClientHello's SNI: exact name, then the longest wildcard, then the
    /// listener without hostname; no SNI: the listener without hostname.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<TlsListener>> {
        match sni {
            Some(name) => self.hosts.best(&name.to_ascii_lowercase()),
            None => self.hosts.get(&HostPattern::Any),
        }
    }

    /// A configuration that fails every handshake with an alert.
    pub fn reject(&self) -> Arc<ServerConfig> {
        self.reject.clone()
    }
}

/// Why an HTTPS listener cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("listener \"{listener}\" of Gateway {gateway}, {what} {secret}: {source}")]
pub struct ListenerCertError {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The listener.
    pub listener: String,
    /// `certificateRef Secret` or `caCertificateRef ConfigMap`.
    pub what: &'static str,
    /// The Secret or ConfigMap.
    pub secret: SecretRef,
    /// What is wrong with its files.
    pub source: CertError,
}

/// The TLS side of a revision, loaded and not yet serving.
#[derive(Debug)]
pub struct PreparedTls {
    /// HTTPS ports.
    pub ports: BTreeMap<u16, Arc<TlsPort>>,
    entries: BTreeMap<SecretRef, Arc<CertEntry>>,
    cas: BTreeMap<SecretRef, Arc<CaEntry>>,
}

/// Every certificate in use, with what reloads them.
pub struct CertStore {
    dir: PathBuf,
    entries: Mutex<BTreeMap<SecretRef, Arc<CertEntry>>>,
    cas: Mutex<BTreeMap<SecretRef, Arc<CaEntry>>>,
    reload_failures: Family<SecretLabel, Counter>,
}

/// The entry of `secret`: already loaded for this revision, or in use and unchanged, or read
/// now.
fn entry<S: Source>(
    fresh: &mut BTreeMap<SecretRef, Arc<Watched<S>>>,
    current: &BTreeMap<SecretRef, Arc<Watched<S>>>,
    secret: &SecretRef,
    source: impl FnOnce() -> S,
) -> Result<Arc<Watched<S>>, CertError> {
    if let Some(e) = fresh.get(secret) {
        return Ok(e.clone());
    }
    let e = match current.get(secret) {
        Some(e) if !e.changed() => e.clone(),
        _ => Arc::new(Watched::load(secret, source())?),
    };
    fresh.insert(secret.clone(), e.clone());
    Ok(e)
}

impl CertStore {
    /// A store reading Secrets under `dir`.
    pub fn new(dir: PathBuf, reload_failures: Family<SecretLabel, Counter>) -> CertStore {
        CertStore {
            dir,
            entries: Mutex::new(BTreeMap::new()),
            cas: Mutex::new(BTreeMap::new()),
            reload_failures,
        }
    }

    /// Loads the certificates (and client CAs) of every HTTPS listener of `table`. Files
    /// already in use that have not changed are shared, not read again. Nothing serving
    /// changes.
    pub fn load(&self, table: &RouteTable) -> Result<PreparedTls, Box<ListenerCertError>> {
        let current = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let current_cas = self.cas.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut entries: BTreeMap<SecretRef, Arc<CertEntry>> = BTreeMap::new();
        let mut cas: BTreeMap<SecretRef, Arc<CaEntry>> = BTreeMap::new();
        let mut ports: BTreeMap<u16, HostIndex<Arc<TlsListener>>> = BTreeMap::new();
        for (index, l) in table.policy.listeners.iter().enumerate() {
            let Some(tls) = &l.tls else { continue };
            let error = |what, secret: &SecretRef, source| {
                Box::new(ListenerCertError {
                    gateway: l.gateway.clone(),
                    listener: l.name.clone(),
                    what,
                    secret: secret.clone(),
                    source,
                })
            };
            let mut certs = Vec::new();
            for secret in &tls.certificates {
                let e = entry(&mut entries, &current, secret, || {
                    SecretFiles::new(&self.dir, secret)
                })
                .map_err(|source| error("certificateRef Secret", secret, source))?;
                certs.push(e);
            }
            let mut client_cas = Vec::new();
            for map in &tls.client_cas {
                let e = entry(&mut cas, &current_cas, map, || CaFile::new(&self.dir, map))
                    .map_err(|source| error("caCertificateRef ConfigMap", map, source))?;
                client_cas.push(e);
            }
            let client_auth = match client_cas.first() {
                None => None,
                Some(first) => {
                    let file = first.source.0.clone();
                    let map = first.secret.clone();
                    Some(Arc::new(ClientAuth::new(client_cas).map_err(|reason| {
                        error(
                            "caCertificateRef ConfigMap",
                            &map,
                            CertError::Pem { file, reason },
                        )
                    })?))
                }
            };
            let listener = Arc::new(TlsListener {
                listener: index,
                config: server_config(Arc::new(ListenerCerts(certs)), client_auth),
            });
            // (port, hostname) is unique in a compiled revision.
            let slot = ports
                .entry(l.port)
                .or_default()
                .entry(&l.hostname, || listener.clone());
            *slot = listener;
        }
        let reject = server_config(Arc::new(NoCertificate), None);
        Ok(PreparedTls {
            ports: ports
                .into_iter()
                .map(|(port, hosts)| {
                    (
                        port,
                        Arc::new(TlsPort {
                            hosts,
                            reject: reject.clone(),
                        }),
                    )
                })
                .collect(),
            entries,
            cas,
        })
    }

    /// Keeps the files of the revision just put in force (and drops the others).
    pub fn commit(&self, prepared: &PreparedTls) {
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = prepared.entries.clone();
        *self.cas.lock().unwrap_or_else(|e| e.into_inner()) = prepared.cas.clone();
    }

    /// Reads again the files that changed since they were loaded; returns how many
    /// certificates (and CA files) were replaced.
    pub fn check(&self) -> usize {
        let entries: Vec<Arc<CertEntry>> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let cas: Vec<Arc<CaEntry>> = self
            .cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let certs = entries
            .iter()
            .filter(|e| e.reload(&self.reload_failures))
            .count();
        certs
            + cas
                .iter()
                .filter(|e| e.reload(&self.reload_failures))
                .count()
    }
}

/// Why a handshake failed: a bounded set of label values for
/// `tollgate_http_tls_handshake_failures_total{reason}`.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. })
        | Some(rustls::Error::InappropriateHandshakeMessage { .. }) => "malformed",
        Some(rustls::Error::PeerIncompatible(_)) | Some(rustls::Error::NoApplicationProtocol) => {
            "incompatible"
        }
        Some(rustls::Error::AlertReceived(_)) => "client_alert",
        Some(rustls::Error::NoCertificatesPresented)
        | Some(rustls::Error::InvalidCertificate(_)) => "client_certificate",
        Some(_) => "protocol",
        None => "closed",
    }
}

/// Labels for a failure.
pub fn failure_labels(reason: &'static str) -> TlsFailureLabels {
    TlsFailureLabels { reason }
}

mod client_auth;

use client_auth::{CaBoundSessions, ClientAuth};

#[cfg(test)]
mod tests;
