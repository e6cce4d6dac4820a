//! TLS to backends (`Backend` `spec.tls`): one rustls client configuration per Backend that
//! asks for TLS, with that Backend's trust anchors (the `ca.crt` of its `caCertificateRefs`,
//! or the system's store), its server name (SNI and the name the certificate must be valid
//! for) and optionally a client certificate (mutual TLS). HTTP/1.1 inside, on the proxy's own
//! pool as to plain backends ([`super::backend_h1`]); no ALPN is offered, so servers use
//! HTTP/1.1. Backends with `appProtocol: tollgate.dev/h2` are spoken to in HTTP/2 with the
//! same settings and ALPN `h2` ([`super::backend_h2`]); upgrade requests (WebSocket) get a
//! connection of their own with the HTTP/1.1 settings ([`super::upgrade`]).
//!
//! The files are read when a revision is applied ([`super::Proxy::prepare`]): a missing or bad
//! file refuses the revision. Unlike listener certificates they are not watched: a changed CA
//! or client certificate is used from the next revision (or SIGHUP) on.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::sign::CertifiedKey;

use super::tls::{CaFile, CertError, SecretFiles, Source as _};
use tollgate_compile::l7::table::{BackendCa, BackendDef, BackendTlsDef, SecretRef};

/// The system's trust store (Debian's `ca-certificates`), for `wellKnownCACertificates:
/// System`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the proxy speaks TLS to one Backend's endpoints.
#[derive(Clone)]
pub struct TlsBackend {
    /// The HTTP/1.1 configuration (no ALPN). Built anew with each revision: the pool tells a
    /// connection opened with it by this `Arc` (see `backend_h1`).
    pub http1: Arc<rustls::ClientConfig>,
    /// HTTP/2: the configuration with ALPN `h2`.
    pub h2: super::backend_h2::H2Tls,
}
/// Why a Backend's TLS settings cannot be put in force.
#[derive(Debug, thiserror::Error)]
#[error("Backend {backend}: cannot load {what}: {source}")]
pub struct BackendTlsError {
    /// `namespace/name` of the Backend.
    pub backend: String,
    /// What was being loaded (`caCertificateRef ConfigMap NS/NAME`, ...).
    pub what: String,
    /// Why.
    pub source: CertError,
}

/// The TLS clients of a revision's backends, aligned with `defs` (`None`: plain HTTP).
pub fn clients(
    dir: &Path,
    defs: &[BackendDef],
) -> Result<Vec<Option<TlsBackend>>, Box<BackendTlsError>> {
    defs.iter()
        .map(|def| match &def.tls {
            None => Ok(None),
            Some(tls) => client(dir, &def.label, tls).map(Some),
        })
        .collect()
}

fn client(
    dir: &Path,
    backend: &str,
    tls: &BackendTlsDef,
) -> Result<TlsBackend, Box<BackendTlsError>> {
    let config = client_config(dir, backend, tls)?;
    let name = ServerName::try_from(tls.hostname.clone()).map_err(|e| {
        Box::new(BackendTlsError {
            backend: backend.to_owned(),
            what: format!("the server name {:?}", tls.hostname),
            source: CertError::Pem {
                file: PathBuf::new(),
                reason: e.to_string(),
            },
        })
    })?;
    let mut h2 = config.clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsBackend {
        http1: Arc::new(config),
        h2: super::backend_h2::H2Tls {
            config: Arc::new(h2),
            name,
        },
    })
}

/// The rustls configuration of one Backend.
pub fn client_config(
    dir: &Path,
    backend: &str,
    tls: &BackendTlsDef,
) -> Result<rustls::ClientConfig, Box<BackendTlsError>> {
    let error = |what: String, source: CertError| {
        Box::new(BackendTlsError {
            backend: backend.to_owned(),
            what,
            source,
        })
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        BackendCa::System => {
            let certs = CaFile(PathBuf::from(SYSTEM_CA_FILE))
                .load()
                .map_err(|e| error("the system's CA certificates".to_owned(), e))?;
            roots.add_parsable_certificates(certs);
        }
        BackendCa::Refs(refs) => {
            for r in refs {
                let certs = CaFile::new(dir, r)
                    .load()
                    .map_err(|e| error(format!("caCertificateRef ConfigMap {r}"), e))?;
                // Each was checked by `load`.
                roots.add_parsable_certificates(certs);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            error(
                "the TLS configuration".to_owned(),
                CertError::Pem {
                    file: PathBuf::new(),
                    reason: e.to_string(),
                },
            )
        })?
        .with_root_certificates(roots);
    // No ALPN: HTTP/1.1 (the HTTP/2 copy of it offers `h2`).
    Ok(match &tls.client_certificate {
        None => builder.with_no_client_auth(),
        Some(r) => {
            let key = client_certificate(dir, r)
                .map_err(|e| error(format!("clientCertificateRef Secret {r}"), e))?;
            builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::new(key))))
        }
    })
}

fn client_certificate(dir: &Path, r: &SecretRef) -> Result<CertifiedKey, CertError> {
    SecretFiles::new(dir, r).load()
}

/// Always presents the one client certificate.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
