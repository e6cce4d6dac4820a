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
//!   `ServerConfig` (ALPN `h2`, `http/1.1`).
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

use crate::compile::l7::table::{HostIndex, HostPattern, SecretRef};
use crate::compile::l7::RouteTable;
use crate::telemetry::metrics::{SecretLabel, TlsFailureLabels};

/// Default `--tls-secrets-dir`.
pub const DEFAULT_TLS_SECRETS_DIR: &str = "/etc/tollgate/secrets";
/// Name of the certificate chain file in a Secret's directory.
pub const CERT_FILE: &str = "tls.crt";
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

/// The stamps of a Secret's two files.
type Stamp = (Option<FileStamp>, Option<FileStamp>);

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

    fn stamp(&self) -> Stamp {
        (file_stamp(&self.cert), file_stamp(&self.key))
    }

    /// Reads and checks the pair: a PEM chain (leaf first), a PEM private key (PKCS#8, PKCS#1
    /// or SEC1) the provider can sign with, and the key matching the leaf's public key.
    pub fn load(&self) -> Result<CertifiedKey, CertError> {
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

/// One Secret's certificate, as served now.
#[derive(Debug)]
pub struct CertEntry {
    secret: SecretRef,
    files: SecretFiles,
    key: ArcSwap<CertifiedKey>,
    /// Stamp of the files `key` was loaded from.
    loaded: Mutex<Stamp>,
    /// Stamp of the files of the last failed reload, and whether the failure was reported
    /// (files caught between the writes of the certificate and of the key fail once; they
    /// are reported only when they fail again, unchanged, at the next check).
    failed: Mutex<Option<(Stamp, bool)>>,
}

impl CertEntry {
    fn load(secret: &SecretRef, files: SecretFiles) -> Result<CertEntry, CertError> {
        let stamp = files.stamp();
        let key = files.load()?;
        Ok(CertEntry {
            secret: secret.clone(),
            files,
            key: ArcSwap::from_pointee(key),
            loaded: Mutex::new(stamp),
            failed: Mutex::new(None),
        })
    }

    fn changed(&self) -> bool {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) != self.files.stamp()
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.key.load_full()
    }
}

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

fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
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
#[error("listener \"{listener}\" of Gateway {gateway}, certificateRef Secret {secret}: {source}")]
pub struct ListenerCertError {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The listener.
    pub listener: String,
    /// The Secret.
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
}

/// Every certificate in use, with what reloads them.
pub struct CertStore {
    dir: PathBuf,
    entries: Mutex<BTreeMap<SecretRef, Arc<CertEntry>>>,
    reload_failures: Family<SecretLabel, Counter>,
}

impl CertStore {
    /// A store reading Secrets under `dir`.
    pub fn new(dir: PathBuf, reload_failures: Family<SecretLabel, Counter>) -> CertStore {
        CertStore {
            dir,
            entries: Mutex::new(BTreeMap::new()),
            reload_failures,
        }
    }

    /// Loads the certificates of every HTTPS listener of `table`. A Secret already in use whose
    /// files have not changed is shared, not read again. Nothing serving changes.
    pub fn load(&self, table: &RouteTable) -> Result<PreparedTls, Box<ListenerCertError>> {
        let current = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut entries: BTreeMap<SecretRef, Arc<CertEntry>> = BTreeMap::new();
        let mut ports: BTreeMap<u16, HostIndex<Arc<TlsListener>>> = BTreeMap::new();
        for (index, l) in table.policy.listeners.iter().enumerate() {
            let Some(tls) = &l.tls else { continue };
            let mut certs = Vec::new();
            for secret in &tls.certificates {
                let entry = match entries.get(secret) {
                    Some(e) => e.clone(),
                    None => {
                        let e = match current.get(secret) {
                            Some(e) if !e.changed() => e.clone(),
                            _ => Arc::new(
                                CertEntry::load(secret, SecretFiles::new(&self.dir, secret))
                                    .map_err(|source| {
                                        Box::new(ListenerCertError {
                                            gateway: l.gateway.clone(),
                                            listener: l.name.clone(),
                                            secret: secret.clone(),
                                            source,
                                        })
                                    })?,
                            ),
                        };
                        entries.insert(secret.clone(), e.clone());
                        e
                    }
                };
                certs.push(entry);
            }
            let listener = Arc::new(TlsListener {
                listener: index,
                config: server_config(Arc::new(ListenerCerts(certs))),
            });
            // (port, hostname) is unique in a compiled revision.
            let slot = ports
                .entry(l.port)
                .or_default()
                .entry(&l.hostname, || listener.clone());
            *slot = listener;
        }
        let reject = server_config(Arc::new(NoCertificate));
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
        })
    }

    /// Keeps the certificates of the revision just put in force (and drops the others).
    pub fn commit(&self, prepared: &PreparedTls) {
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = prepared.entries.clone();
    }

    /// Reads again the files that changed since they were loaded; returns how many
    /// certificates were replaced.
    pub fn check(&self) -> usize {
        let entries: Vec<Arc<CertEntry>> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut replaced = 0;
        for e in entries {
            let stamp = e.files.stamp();
            if *e.loaded.lock().unwrap_or_else(|p| p.into_inner()) == stamp {
                continue;
            }
            let mut failed = e.failed.lock().unwrap_or_else(|p| p.into_inner());
            if *failed == Some((stamp, true)) {
                continue; // already reported; wait for the files to change again
            }
            match e.files.load() {
                Ok(key) => {
                    e.key.store(Arc::new(key));
                    *e.loaded.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
                    *failed = None;
                    replaced += 1;
                    info!(secret = %e.secret, file = %e.files.cert.display(), "TLS certificate reloaded");
                }
                Err(_) if *failed != Some((stamp, false)) => {
                    // Maybe half written: try again at the next check before reporting.
                    *failed = Some((stamp, false));
                }
                Err(error) => {
                    *failed = Some((stamp, true));
                    self.reload_failures
                        .get_or_create(&SecretLabel {
                            secret: e.secret.to_string(),
                        })
                        .inc();
                    warn!(secret = %e.secret, %error, "TLS certificate files changed but cannot be loaded; the certificate loaded before stays in use");
                }
            }
        }
        replaced
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

#[cfg(test)]
mod tests;
