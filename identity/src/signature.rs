//! An operator's signature over what changes a database.
//!
//! The CLI signs a [`DeployClaim`] (environment, bundle digest, and the
//! rollout parameters that change what SQL runs) with the operator's
//! certificate key. The DB agent checks, before it runs any SQL, that the
//! certificate chains to the runway CA, names an operator, grants
//! `runway://deploy/ENV` for the agent's own environment, and that the
//! signature covers exactly the bundle it was given. The coordinator only
//! carries the signature: it holds no operator key, so neither a
//! compromised nor a buggy coordinator can make an agent run SQL no
//! operator sent.

use rcgen::{KeyPair, SigningKey};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::Identity;

/// What an operator vouches for when starting a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployClaim {
    /// The environment the rollout targets.
    pub environment: String,
    /// The bundle's digest (hex), which covers every migration's bytes.
    pub bundle_digest: String,
    /// The Danger lint rules accepted (sorted, no duplicates).
    pub allow_danger: Vec<String>,
    /// When the operator signed, Unix seconds.
    pub signed_at: i64,
}

impl DeployClaim {
    /// A claim; the order of `allow_danger` does not matter.
    pub fn new(environment: &str, bundle_digest: &str, allow_danger: &[String], signed_at: i64) -> Self {
        let mut allow_danger = allow_danger.to_vec();
        allow_danger.sort();
        allow_danger.dedup();
        Self { environment: environment.into(), bundle_digest: bundle_digest.into(), allow_danger, signed_at }
    }

    /// The exact bytes signed: one field a line, versioned. Names and
    /// rules cannot hold a newline (names are checked, rules are lint rule
    /// names), so no field can pose as another.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "runway deploy claim v1\nenvironment={}\nbundle_digest={}\nallow_danger={}\nsigned_at={}\n",
            self.environment,
            self.bundle_digest,
            self.allow_danger.join(","),
            self.signed_at
        )
        .into_bytes()
    }
}

/// A signature that must not be trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the rollout carries no operator signature; start it with a TLS-configured `runway rollout start`"
    )]
    Missing,
    #[error("the signer's certificate does not chain to the runway CA: {0}")]
    Untrusted(String),
    #[error("the signer's certificate: {0}")]
    Identity(String),
    #[error("the signer is {0}, not an operator")]
    NotOperator(String),
    #[error("operator {operator}'s certificate grants deploy to [{granted}], not to {environment}")]
    NoDeployGrant { operator: String, environment: String, granted: String },
    #[error(
        "operator {0}'s signature does not match this bundle and its parameters: the bundle was changed after it was signed"
    )]
    Mismatch(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Signs `claim` with a PEM private key; the signature is the key's usual
/// (for ECDSA: ASN.1) form.
pub fn sign(key_pem: &[u8], claim: &DeployClaim) -> Result<Vec<u8>, SignatureError> {
    let pem = std::str::from_utf8(key_pem).map_err(|e| SignatureError::Sign(e.to_string()))?;
    let key = KeyPair::from_pem(pem).map_err(|e| SignatureError::Sign(e.to_string()))?;
    key.sign(&claim.message()).map_err(|e| SignatureError::Sign(e.to_string()))
}

/// Checks a signature as a DB agent in `environment` does; returns the
/// operator's name.
pub fn verify(
    roots: &RootCertStore,
    certificate: &[u8],
    signature: &[u8],
    claim: &DeployClaim,
) -> Result<String, SignatureError> {
    if certificate.is_empty() || signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    let der = CertificateDer::from(certificate);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| SignatureError::Untrusted(e.to_string()))?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &roots.roots,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| SignatureError::Untrusted(e.to_string()))?;
    let (operator, granted) = match Identity::from_der(certificate) {
        Ok(Identity::Operator { name, deploy }) => (name, deploy),
        Ok(other) => return Err(SignatureError::NotOperator(other.to_string())),
        Err(e) => return Err(SignatureError::Identity(e.to_string())),
    };
    if !granted.contains(&claim.environment) {
        return Err(SignatureError::NoDeployGrant {
            operator,
            environment: claim.environment.clone(),
            granted: granted.join(", "),
        });
    }
    let message = claim.message();
    let valid = webpki::ALL_VERIFICATION_ALGS
        .iter()
        .any(|alg| cert.verify_signature(*alg, &message, signature).is_ok());
    if valid { Ok(operator) } else { Err(SignatureError::Mismatch(operator)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::Authority;
    use rustls_pki_types::pem::PemObject;

    fn roots(ca: &Authority) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.own().cert_pem.as_bytes()).unwrap()).unwrap();
        roots
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    fn claim() -> DeployClaim {
        DeployClaim::new("production", &"ab".repeat(32), &[], 1_790_000_000)
    }

    #[test]
    fn a_signature_holds_for_exactly_what_was_signed() {
        let ca = Authority::create(1).unwrap();
        let alice = Identity::Operator { name: "alice".into(), deploy: vec!["production".into()] };
        let issued = ca.issue(&alice, &[], 1).unwrap();
        let signature = sign(issued.key_pem.as_bytes(), &claim()).unwrap();
        let cert = der(&issued.cert_pem);
        assert_eq!(verify(&roots(&ca), &cert, &signature, &claim()), Ok("alice".into()));

        let changed = DeployClaim { bundle_digest: "cd".repeat(32), ..claim() };
        assert_eq!(
            verify(&roots(&ca), &cert, &signature, &changed),
            Err(SignatureError::Mismatch("alice".into()))
        );
        let danger = DeployClaim { allow_danger: vec!["drop-table".into()], ..claim() };
        assert!(matches!(verify(&roots(&ca), &cert, &signature, &danger), Err(SignatureError::Mismatch(_))));
        let staging = DeployClaim { environment: "staging".into(), ..claim() };
        assert!(matches!(
            verify(&roots(&ca), &cert, &signature, &staging),
            Err(SignatureError::NoDeployGrant { .. })
        ));
        assert_eq!(verify(&roots(&ca), &cert, &[], &claim()), Err(SignatureError::Missing));
    }

    #[test]
    fn signers_from_another_ca_or_without_an_operator_identity_are_refused() {
        let ca = Authority::create(1).unwrap();
        let other = Authority::create(1).unwrap();
        let alice = Identity::Operator { name: "alice".into(), deploy: vec!["production".into()] };
        let forged = other.issue(&alice, &[], 1).unwrap();
        let signature = sign(forged.key_pem.as_bytes(), &claim()).unwrap();
        assert!(matches!(
            verify(&roots(&ca), &der(&forged.cert_pem), &signature, &claim()),
            Err(SignatureError::Untrusted(_))
        ));
        let agent = ca
            .issue(&Identity::Agent { environment: "production".into(), name: "db-1".into() }, &[], 1)
            .unwrap();
        let signature = sign(agent.key_pem.as_bytes(), &claim()).unwrap();
        assert!(matches!(
            verify(&roots(&ca), &der(&agent.cert_pem), &signature, &claim()),
            Err(SignatureError::NotOperator(_))
        ));
    }
}
