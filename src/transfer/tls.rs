//! Whom a TLS store (`https://`, `ftps://`) is checked against: the CA certificates of
//! `ca_file` in the store config, else the system's. Verification cannot be turned off:
//! a server whose certificate does not chain to one of them, or names another host, is
//! refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Failure;

/// Debian's bundle of the system's trusted CA certificates.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The CA certificates a TLS server's certificate must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsTrust {
    /// A PEM file of CA certificates; `None`: the system's ([`SYSTEM_ROOTS`]).
    pub ca_file: Option<PathBuf>,
}

impl TlsTrust {
    fn path(&self) -> &Path {
        self.ca_file.as_deref().unwrap_or(Path::new(SYSTEM_ROOTS))
    }

    /// The certificates, DER; none is an error (it would refuse every server).
    fn certificates(&self) -> Result<Vec<Vec<u8>>, Failure> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let path = self.path();
        let refused =
            |why: String| Failure::Refused(format!("CA certificates {}: {why}", path.display()));
        let pem = crate::io::read_regular_to_string(path, 16 << 20).map_err(|e| {
            let what = match self.ca_file {
                Some(_) => "check ca_file in the store config",
                None => "set ca_file in the store config to the CA certificates of the store",
            };
            refused(format!("cannot be read ({e}); {what}"))
        })?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refused(format!("not PEM certificates ({e})")))?;
        match certificates.is_empty() {
            true => Err(refused("holds no certificate".into())),
            false => Ok(certificates),
        }
    }

    /// For ureq (HTTPS).
    pub(super) fn ureq_config(&self) -> Result<ureq::tls::TlsConfig, Failure> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let certificates: Vec<Certificate<'static>> = self
            .certificates()?
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect();
        Ok(TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&certificates))
            .build())
    }

    /// For suppaftp (FTPS): the same certificates, ring's cryptography.
    pub(super) fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, Failure> {
        let mut roots = rustls::RootCertStore::empty();
        for der in self.certificates()? {
            roots
                .add(rustls::pki_types::CertificateDer::from(der))
                .map_err(|e| {
                    Failure::Refused(format!("CA certificate in {}: {e}", self.path().display()))
                })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Refused(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The TLS error inside an I/O error: rustls reports so a certificate it refused, or a
/// server that answered without TLS.
pub(super) fn inside(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A failed TLS handshake, said for an operator. It is a refusal, not retried: another
/// attempt would meet the same certificate.
pub(super) fn refusal(error: &rustls::Error) -> Failure {
    use rustls::{CertificateError as Certificate, Error as Tls};
    let why = match error {
        Tls::InvalidCertificate(
            Certificate::NotValidForName | Certificate::NotValidForNameContext { .. },
        ) => format!(
            "the server's TLS certificate is for another host ({error}); the store's url \
             must name a host its certificate covers"
        ),
        Tls::InvalidCertificate(Certificate::UnknownIssuer | Certificate::BadSignature) => {
            format!(
                "the server's TLS certificate is not trusted ({error}); it must be issued by a \
                 CA certificate in the store config's ca_file (without one: the system's, {SYSTEM_ROOTS})"
            )
        }
        Tls::InvalidCertificate(_) => format!("the server's TLS certificate is refused ({error})"),
        Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => {
            format!("the server does not speak TLS here ({error}); check the store's url")
        }
        _ => format!("TLS failed: {error}"),
    };
    Failure::Refused(why)
}
