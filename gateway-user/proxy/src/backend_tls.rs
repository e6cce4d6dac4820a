//! TLS to backends (`Backend` `spec.tls`): one hyper-rustls client per Backend that asks for
//! TLS, with that Backend's trust anchors (the `ca.crt` of its `caCertificateRefs`, or the
//! system's store), its server name (SNI and the name the certificate must be valid for) and
//! optionally a client certificate (mutual TLS). HTTP/1.1 inside, as to plain backends; no
//! ALPN is offered (hyper-rustls offers ALPN only with HTTP/2), so servers use HTTP/1.1.
//! Backends with `appProtocol: tollgate.dev/h2` are spoken to in HTTP/2 with the same
//! settings and ALPN `h2` ([`super::backend_h2`]); upgrade requests (WebSocket) get a
//! connection of their own with the HTTP/1.1 settings ([`super::upgrade`]).
//!
//! The files are read when a revision is applied ([`super::Proxy::prepare`]): a missing or bad
//! file refuses the revision. Unlike listener certificates they are not watched: a changed CA
//! or client certificate is used from the next revision (or SIGHUP) on.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::sign::CertifiedKey;

use super::tls::{CaFile, CertError, SecretFiles, Source as _};
use super::{Limits, UpstreamBody};
use tollgate_compile::l7::table::{BackendCa, BackendDef, BackendTlsDef, SecretRef};

/// The system's trust store (Debian's `ca-certificates`), for `wellKnownCACertificates:
/// System`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client that speaks TLS to one Backend's endpoints.
pub type TlsClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// How the proxy speaks TLS to one Backend's endpoints.
#[derive(Clone)]
pub struct TlsBackend {
    /// HTTP/1.1, pooled.
    pub client: TlsClient,
    /// The HTTP/1.1 configuration (no ALPN), for connections of their own (upgrades).
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
    limits: &Limits,
    defs: &[BackendDef],
) -> Result<Vec<Option<TlsBackend>>, Box<BackendTlsError>> {
    defs.iter()
        .map(|def| match &def.tls {
            None => Ok(None),
            Some(tls) => client(dir, limits, &def.label, tls).map(Some),
        })
        .collect()
}

fn client(
    dir: &Path,
    limits: &Limits,
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
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(limits.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config.clone())
        .https_only()
        .with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(limits.pool_idle_timeout)
        .pool_max_idle_per_host(limits.pool_max_idle_per_endpoint)
        .build(https);
    Ok(TlsBackend {
        client,
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
    // No ALPN: the connector sets it (only when HTTP/2 is enabled) and panics on a
    // configuration that already has it.
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

/// Whether a failed attempt failed in the TLS handshake (a certificate not trusted or not
/// valid for the hostname, a client certificate refused, no common protocol).
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if is_rustls(e) {
            return true;
        }
        current = e.source();
    }
    false
}

/// Is `e` a rustls error, itself or inside an `io::Error` (as tokio-rustls wraps it)?
fn is_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return is_rustls(inner);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_found_inside_io_errors() {
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_tls_failure(&tls));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_tls_failure(&refused));
    }
}
