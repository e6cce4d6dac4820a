//! Client certificates of a listener ([`ClientAuth`]) and the sessions resumed on it
//! ([`CaBoundSessions`]): both follow the CA files as they are now, so that a client whose CA
//! was taken out is refused from the next handshake on, resumed or not.
use std::sync::{Arc, Mutex};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::{
    ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};

use super::{provider, CaCerts, CaEntry};
use tracing::warn;

/// Sessions kept for resumption on a listener (rustls's own default).
const SESSIONS: usize = 256;

/// Verifies client certificates against the CAs of a listener, as they are now: the rustls
/// verifier is built again when a CA file was reloaded, and the generation counted, which
/// [`CaBoundSessions`] ties every session to.
#[derive(Debug)]
pub(super) struct ClientAuth {
    cas: Vec<Arc<CaEntry>>,
    built: Mutex<Built>,
}

#[derive(Debug)]
struct Built {
    /// The CA files the verifier was built from.
    from: Vec<CaCerts>,
    verifier: Arc<dyn ClientCertVerifier>,
    /// How many times the verifier was built (0 the first).
    generation: u64,
}

impl ClientAuth {
    pub(super) fn new(cas: Vec<Arc<CaEntry>>) -> Result<ClientAuth, String> {
        let now: Vec<_> = cas.iter().map(|c| c.current()).collect();
        let verifier = build_verifier(&now)?;
        Ok(ClientAuth {
            cas,
            built: Mutex::new(Built {
                from: now,
                verifier,
                generation: 0,
            }),
        })
    }

    /// The verifier for the CA files as loaded now, and its generation.
    fn current(&self) -> (Arc<dyn ClientCertVerifier>, u64) {
        let now: Vec<_> = self.cas.iter().map(|c| c.current()).collect();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        let same = built.from.len() == now.len()
            && built.from.iter().zip(&now).all(|(a, b)| Arc::ptr_eq(a, b));
        if !same {
            match build_verifier(&now) {
                Ok(verifier) => {
                    let generation = built.generation + 1;
                    *built = Built {
                        from: now,
                        verifier,
                        generation,
                    };
                }
                Err(error) => {
                    warn!(%error, "client CA certificates reloaded but unusable; the previous ones stay in use")
                }
            }
        }
        (built.verifier.clone(), built.generation)
    }

    pub(super) fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current().0
    }

    pub(super) fn generation(&self) -> u64 {
        self.current().1
    }
}

fn build_verifier(roots: &[CaCerts]) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots.iter().flat_map(|r| r.iter()) {
        store.add(c.clone()).map_err(|e| e.to_string())?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| e.to_string())
}

impl ClientCertVerifier for ClientAuth {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // The hints would have to outlive a reload; clients send their certificate without.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// The sessions of a listener that verifies client certificates, each good for resumption
/// only while the CA files it was verified against are the ones in use. A resumed session
/// skips the client's certificate (rustls does not verify it again), so without this a client
/// whose CA was taken out of the ConfigMap would go on resuming its session for as long as the
/// cache kept it. The CA generation is stored before each session's bytes.
#[derive(Debug)]
pub(super) struct CaBoundSessions {
    auth: Arc<ClientAuth>,
    inner: Arc<ServerSessionMemoryCache>,
}

impl CaBoundSessions {
    pub(super) fn new(auth: Arc<ClientAuth>) -> Self {
        CaBoundSessions {
            auth,
            inner: ServerSessionMemoryCache::new(SESSIONS),
        }
    }

    /// `value` without its generation, if that is the current one.
    fn unwrap(&self, value: Vec<u8>) -> Option<Vec<u8>> {
        let (generation, rest) = value.split_first_chunk::<8>()?;
        (u64::from_le_bytes(*generation) == self.auth.generation()).then(|| rest.to_vec())
    }
}

impl StoresServerSessions for CaBoundSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut stamped = Vec::with_capacity(8 + value.len());
        stamped.extend_from_slice(&self.auth.generation().to_le_bytes());
        stamped.extend_from_slice(&value);
        self.inner.put(key, stamped)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key).and_then(|v| self.unwrap(v))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key).and_then(|v| self.unwrap(v))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}
