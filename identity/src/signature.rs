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
    #[error(
        "the operator signed this rollout {age_secs} s ago, longer than this agent accepts ({max_secs} s, \
         `signature_max_age_secs`): start a new rollout"
    )]
    TooOld { age_secs: i64, max_secs: u64 },
    #[error(
        "the signature is dated {ahead_secs} s in the future: check the clocks of the operator's machine and this host"
    )]
    FromTheFuture { ahead_secs: i64 },
}

/// How far a signer's clock may run ahead of the agent's.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Refuses a claim signed longer than `max_age_secs` before `now` (both
/// Unix seconds; 0 means no limit), so an old signed bundle cannot be
/// replayed forever, or dated ahead of `now` by more than
/// [`CLOCK_SKEW_SECS`].
pub fn check_age(signed_at: i64, now: i64, max_age_secs: u64) -> Result<(), SignatureError> {
    let age_secs = now.saturating_sub(signed_at);
    if -age_secs > CLOCK_SKEW_SECS {
        return Err(SignatureError::FromTheFuture { ahead_secs: -age_secs });
    }
    if max_age_secs > 0 && age_secs > i64::try_from(max_age_secs).unwrap_or(i64::MAX) {
        return Err(SignatureError::TooOld { age_secs, max_secs: max_age_secs });
    }
    Ok(())
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
    fn old_or_future_signatures_are_refused() {
        let now = 1_790_000_000;
        assert_eq!(check_age(now - 60, now, 3600), Ok(()));
        assert_eq!(check_age(now - 7200, now, 0), Ok(()), "0 is no limit");
        assert_eq!(check_age(now + 60, now, 3600), Ok(()), "within the clock skew");
        assert_eq!(
            check_age(now - 7200, now, 3600),
            Err(SignatureError::TooOld { age_secs: 7200, max_secs: 3600 })
        );
        assert_eq!(check_age(now + 3600, now, 3600), Err(SignatureError::FromTheFuture { ahead_secs: 3600 }));
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
