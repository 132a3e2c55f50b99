//! A small certificate authority: enough for the quick start, the tests and
//! a small installation. Larger ones use their own PKI and only need to put
//! the runway URI SANs (see the crate docs) into the certificates.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::Identity;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Issuing failed (a bad host name, an unreadable CA key).
#[derive(Debug, thiserror::Error)]
#[error("cannot issue the certificate: {0}")]
pub struct IssueError(String);

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        IssueError(e.to_string())
    }
}

/// The runway CA: its certificate and the key that signs with it.
pub struct Authority {
    issued: Issued,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA, valid for `days`.
    pub fn create(days: u32) -> Result<Authority, IssueError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "runway CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let issued = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(Authority { issued, issuer: Issuer::new(params, key) })
    }

    /// A CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, IssueError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Authority { issued: Issued { cert_pem: cert_pem.into(), key_pem: key_pem.into() }, issuer })
    }

    /// The CA's own certificate and key.
    pub fn own(&self) -> &Issued {
        &self.issued
    }

    /// A certificate for `identity`, valid for `days`. `hosts` (names or IP
    /// addresses) go in as DNS/IP SANs too, for tools that check host names.
    pub fn issue(&self, identity: &Identity, hosts: &[String], days: u32) -> Result<Issued, IssueError> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        for uri in identity.uris() {
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        params.distinguished_name.push(DnType::CommonName, identity.to_string());
        params.extended_key_usages = match identity {
            // A coordinator serves gRPC and is etcd's client.
            Identity::Coordinator { .. } => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            Identity::Agent { .. } | Identity::Operator { .. } => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        self.sign(params, days)
    }

    /// A plain server certificate for `hosts` (etcd), no runway identity.
    pub fn issue_server(&self, name: &str, hosts: &[String], days: u32) -> Result<Issued, IssueError> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, days)
    }

    /// A client-only certificate whose common name is `name` and that names
    /// no runway identity: etcd's `root` user (etcd takes the CN as the
    /// user name).
    pub fn issue_client(&self, name: &str, days: u32) -> Result<Issued, IssueError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, days)
    }

    fn sign(&self, mut params: CertificateParams, days: u32) -> Result<Issued, IssueError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// From an hour ago (clocks drift) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

/// A certificate on a revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial number, as the certificate encodes it.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub at: OffsetDateTime,
}

impl Revoked {
    /// `serial`, revoked now.
    pub fn now(serial: Vec<u8>) -> Revoked {
        Revoked { serial, at: OffsetDateTime::now_utc() }
    }
}

impl Authority {
    /// A revocation list (PEM) of `revoked`, signed by this CA, valid for
    /// `days` (checkers that enforce the CRL's next update need it signed
    /// again before then; runway's own do not). Its number is the time
    /// in seconds, so a later list has a higher one.
    pub fn revocation_list(&self, revoked: &[Revoked], days: u32) -> Result<String, IssueError> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(i64::from(days.max(1))),
            crl_number: rcgen::SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&r.serial),
                    revocation_time: r.at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// The certificates a PEM revocation list names (every list in `pem`).
pub fn read_revocation_list(pem: &[u8]) -> Result<Vec<Revoked>, IssueError> {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject;
    let mut revoked = Vec::new();
    for der in CertificateRevocationListDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| IssueError(format!("not a PEM revocation list: {e}")))?;
        let (_, crl) = x509_parser::parse_x509_crl(&der)
            .map_err(|e| IssueError(format!("the revocation list cannot be parsed: {e}")))?;
        for entry in crl.iter_revoked_certificates() {
            revoked.push(Revoked {
                serial: entry.raw_serial().to_vec(),
                at: entry.revocation_date.to_datetime(),
            });
        }
    }
    Ok(revoked)
}

/// The serial number of the (first) certificate in `pem`.
pub fn serial_number(pem: &[u8]) -> Result<Vec<u8>, IssueError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der =
        CertificateDer::from_pem_slice(pem).map_err(|e| IssueError(format!("not a PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| IssueError(format!("the certificate cannot be parsed: {e}")))?;
    Ok(cert.raw_serial().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_list_names_the_serials_it_was_given() {
        let ca = Authority::create(1).unwrap();
        let alice = ca
            .issue(&Identity::Operator { name: "alice".into(), deploy: vec![], restore: vec![] }, &[], 1)
            .unwrap();
        let serial = serial_number(alice.cert_pem.as_bytes()).unwrap();
        let empty = ca.revocation_list(&[], 30).unwrap();
        assert!(read_revocation_list(empty.as_bytes()).unwrap().is_empty());
        let at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let list = ca.revocation_list(&[Revoked { serial: serial.clone(), at }], 30).unwrap();
        assert_eq!(read_revocation_list(list.as_bytes()).unwrap(), vec![Revoked { serial, at }]);
        assert!(read_revocation_list(b"no PEM block here").unwrap().is_empty(), "the caller decides");
    }
}
