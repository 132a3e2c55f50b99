//! Certificate checks beyond plain TLS: "this peer is a coordinator", and
//! "this certificate chains to the runway CA" outside a handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use crate::Identity;

/// Accepts a server certificate that chains to the runway CA and names a
/// coordinator identity, whatever host name it was reached by.
#[derive(Debug)]
pub(crate) struct CoordinatorsOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

/// The peer's certificate is valid but not a coordinator's.
#[derive(Debug, thiserror::Error)]
#[error("the peer is not a runway coordinator: its certificate names {0}")]
struct NotACoordinator(String);

impl CoordinatorsOnly {
    /// Checks the coordinator's certificate against `crls` too (a CA
    /// without a CRL there is not an error). `Err` only for a CRL that
    /// cannot be parsed.
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Self, VerifierBuilderError> {
        let webpki = WebPkiServerVerifier::builder(roots)
            .with_crls(crls.iter().cloned())
            .allow_unknown_revocation_status()
            .build()?;
        Ok(Self { webpki })
    }
}

impl ServerCertVerifier for CoordinatorsOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name mismatch means the
        // chain is good, and the name is not what we go by.
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        let named = match Identity::from_der(end_entity) {
            Ok(Identity::Coordinator { .. }) => return Ok(ServerCertVerified::assertion()),
            Ok(other) => other.to_string(),
            Err(e) => e.to_string(),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            NotACoordinator(named),
        )))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Checks that `chain` (end entity first) chains to one of `roots`, valid
/// now, for client or server use.
pub(crate) fn chains_to(roots: &RootCertStore, chain: &[CertificateDer<'_>]) -> Result<(), String> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("no certificate".into());
    };
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| e.to_string())?;
    let now = UnixTime::now();
    let algs = webpki::ALL_VERIFICATION_ALGS;
    let client = cert.verify_for_usage(
        algs,
        &roots.roots,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    );
    match client {
        Ok(_) => Ok(()),
        Err(client_error) => cert
            .verify_for_usage(
                algs,
                &roots.roots,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map(|_| ())
            .map_err(|_| client_error.to_string()),
    }
}
