//! Client certificates (`clientCertificate`): the TLS client certificate of the connection,
//! which an HTTPS listener whose Gateway sets `spec.tls.frontend` validation verified during the handshake, names the
//! consumer by one of its fields. Nothing is checked per request: the handshake did it.
use std::sync::Arc;

use super::store::{AuthFileError, Loader};
use super::{check_consumer, Authenticated, Failure, Request, Scheme};
use tollgate_compile::l7::table::AuthDef;
use tollgate_model::auth::CertificateField;

/// The identity of a verified TLS client certificate, read at the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The first common name (CN) of the subject.
    pub common_name: Option<String>,
    /// The first DNS name of the subject alternative names.
    pub dns_name: Option<String>,
    /// The first e-mail address (rfc822Name) of the subject alternative names.
    pub email: Option<String>,
}

impl PeerCertificate {
    /// Reads the identity of a DER certificate (`None` if it cannot be parsed).
    pub fn from_der(der: &[u8]) -> Option<PeerCertificate> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut out = PeerCertificate {
            common_name,
            ..PeerCertificate::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) if out.dns_name.is_none() => {
                        out.dns_name = Some((*d).to_owned())
                    }
                    GeneralName::RFC822Name(e) if out.email.is_none() => {
                        out.email = Some((*e).to_owned())
                    }
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// The consumer this certificate names by `field`, if it is a valid consumer id.
    pub fn consumer(&self, field: CertificateField) -> Option<Arc<str>> {
        let v = match field {
            CertificateField::CommonName => self.common_name.as_deref(),
            CertificateField::SubjectAltNameDNS => self.dns_name.as_deref(),
            CertificateField::SubjectAltNameEmail => self.email.as_deref(),
        }?;
        check_consumer(v).ok()?;
        Some(v.into())
    }
}

/// The client-certificate method of a policy.
pub struct ClientCert {
    field: CertificateField,
}

impl Scheme for ClientCert {
    type Credentials<'r> = &'r PeerCertificate;
    // First: the handshake already did the work.
    const COST: u8 = 0;

    fn of(def: &AuthDef) -> Option<Self> {
        def.client_certificate.map(|field| ClientCert { field })
    }

    fn load(&mut self, _: &mut Loader<'_>) -> Result<(), AuthFileError> {
        Ok(())
    }

    fn present<'r>(&self, req: &Request<'r>) -> Option<&'r PeerCertificate> {
        req.client_certificate
    }

    async fn verify<'r>(&self, cert: Self::Credentials<'r>) -> Result<Authenticated, Failure> {
        cert.consumer(self.field)
            .map(Authenticated::from)
            .ok_or(Failure::Invalid)
    }

    /// Informational: a certificate is sent in the TLS handshake, not in a request.
    fn challenge(&self, realm: &str, _: Failure) -> String {
        format!("ClientCertificate realm=\"{realm}\"")
    }

    fn describe(&self) -> String {
        format!(
            "a verified client certificate (consumer from {:?})",
            self.field
        )
    }
}
