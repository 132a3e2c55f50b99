//! An operator's signature over what changes a database.
//!
//! Two kinds of claim, both signed by the CLI with the operator's
//! certificate key and checked by the DB agent before it acts:
//!
//! - a [`DeployClaim`] starts a rollout: environment, bundle digest, the
//!   parameters that change what SQL runs, and the rollout id the CLI
//!   chose, so one signature starts one rollout and no other. It also
//!   covers that rollout's own automatic way back (its proven downs, or a
//!   restore of the backup it took): the operator who started it accepted
//!   both. Needs `runway://deploy/ENV` on the certificate.
//! - an [`OperationClaim`] asks for a restore, a rollback or a backup
//!   verify outside a running rollout: it names the operation, the
//!   environment, the rollout or backup, and a fresh nonce the agent
//!   remembers, so it is good for one use. Needs `runway://restore/ENV`.
//!
//! The coordinator only carries signatures: it holds no operator key, so
//! neither a compromised nor a buggy coordinator can make an agent run SQL,
//! restore a backup or roll back a rollout that no operator asked for.

use std::fmt;

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
    /// The id of the one rollout this signature starts (chosen by the CLI).
    pub rollout_id: String,
    /// When the operator signed, Unix seconds.
    pub signed_at: i64,
}

impl DeployClaim {
    /// A claim; the order of `allow_danger` does not matter.
    pub fn new(
        environment: &str,
        bundle_digest: &str,
        allow_danger: &[String],
        rollout_id: &str,
        signed_at: i64,
    ) -> Self {
        let mut allow_danger = allow_danger.to_vec();
        allow_danger.sort();
        allow_danger.dedup();
        Self {
            environment: environment.into(),
            bundle_digest: bundle_digest.into(),
            allow_danger,
            rollout_id: rollout_id.into(),
            signed_at,
        }
    }

    /// The exact bytes signed: one field a line, versioned. Names and
    /// rules cannot hold a newline (names are checked, rules are lint rule
    /// names), so no field can pose as another.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "runway deploy claim v2\nenvironment={}\nbundle_digest={}\nallow_danger={}\nrollout_id={}\nsigned_at={}\n",
            self.environment,
            self.bundle_digest,
            self.allow_danger.join(","),
            self.rollout_id,
            self.signed_at
        )
        .into_bytes()
    }
}

/// What an [`OperationClaim`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Roll back rollout `subject` (by its downs or by restoring its backup).
    Rollback,
    /// Restore backup `subject` over the environment's database.
    Restore,
    /// Verify backup `subject` (checksums, and a test restore when asked).
    Verify,
}

impl Operation {
    /// The name in the signed message and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Rollback => "rollback",
            Operation::Restore => "restore",
            Operation::Verify => "verify",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operator vouches for when asking for a restore, a rollback or a
/// verify: good for one use (the nonce), in one environment, on one
/// rollout or backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationClaim {
    pub operation: Operation,
    pub environment: String,
    /// The rollout id (rollback) or the backup name (restore, verify).
    pub subject: String,
    /// Fresh random hex from the CLI; the DB agent refuses one it has seen.
    pub nonce: String,
    /// When the operator signed, Unix seconds.
    pub signed_at: i64,
}

impl OperationClaim {
    /// The exact bytes signed, versioned like [`DeployClaim::message`].
    pub fn message(&self) -> Vec<u8> {
        format!(
            "runway operation claim v1\noperation={}\nenvironment={}\nsubject={}\nnonce={}\nsigned_at={}\n",
            self.operation, self.environment, self.subject, self.nonce, self.signed_at
        )
        .into_bytes()
    }
}

/// A fresh nonce for an [`OperationClaim`]: a random (v4) UUID, 122
/// random bits, as 32 hex digits.
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A signature that must not be trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the request carries no operator signature; send it with a TLS-configured `runway` (--cert, --key)"
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
        "operator {operator}'s certificate grants restore to [{granted}], not to {environment} \
         (issue it with `runway certs operator --restore {environment}`)"
    )]
    NoRestoreGrant { operator: String, environment: String, granted: String },
    #[error(
        "operator {0}'s signature does not match this request: it was signed for another bundle, rollout, \
         backup or operation, or changed after it was signed"
    )]
    Mismatch(String),
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error(
        "the operator signed this {age_secs} s ago, longer than this agent accepts ({max_secs} s, \
         `signature_max_age`): sign it again"
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

/// Signs `message` (a claim's [`DeployClaim::message`] or
/// [`OperationClaim::message`]) with a PEM private key; the signature is
/// the key's usual (for ECDSA: ASN.1) form.
pub fn sign(key_pem: &[u8], message: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let pem = std::str::from_utf8(key_pem).map_err(|e| SignatureError::Sign(e.to_string()))?;
    let key = KeyPair::from_pem(pem).map_err(|e| SignatureError::Sign(e.to_string()))?;
    key.sign(message).map_err(|e| SignatureError::Sign(e.to_string()))
}

/// Checks a deploy signature as a DB agent does; returns the operator's name.
pub fn verify(
    roots: &RootCertStore,
    certificate: &[u8],
    signature: &[u8],
    claim: &DeployClaim,
) -> Result<String, SignatureError> {
    let (operator, deploy, _) = verified(roots, certificate, signature, &claim.message())?;
    if !deploy.contains(&claim.environment) {
        return Err(SignatureError::NoDeployGrant {
            operator,
            environment: claim.environment.clone(),
            granted: deploy.join(", "),
        });
    }
    Ok(operator)
}

/// Checks an operation signature as a DB agent does (chain, operator,
/// `runway://restore/ENV`, the exact claim); returns the operator's name.
/// The nonce's freshness is the agent's to check: it remembers them.
pub fn verify_operation(
    roots: &RootCertStore,
    certificate: &[u8],
    signature: &[u8],
    claim: &OperationClaim,
) -> Result<String, SignatureError> {
    let (operator, _, restore) = verified(roots, certificate, signature, &claim.message())?;
    if !restore.contains(&claim.environment) {
        return Err(SignatureError::NoRestoreGrant {
            operator,
            environment: claim.environment.clone(),
            granted: restore.join(", "),
        });
    }
    Ok(operator)
}

/// The operator whose certificate chains to `roots` and whose key signed
/// `message`, with the certificate's deploy and restore grants. Grants are
/// checked after the signature, so a forged request learns nothing of them.
fn verified(
    roots: &RootCertStore,
    certificate: &[u8],
    signature: &[u8],
    message: &[u8],
) -> Result<(String, Vec<String>, Vec<String>), SignatureError> {
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
    let (operator, deploy, restore) = match Identity::from_der(certificate) {
        Ok(Identity::Operator { name, deploy, restore }) => (name, deploy, restore),
        Ok(other) => return Err(SignatureError::NotOperator(other.to_string())),
        Err(e) => return Err(SignatureError::Identity(e.to_string())),
    };
    let valid = webpki::ALL_VERIFICATION_ALGS
        .iter()
        .any(|alg| cert.verify_signature(*alg, message, signature).is_ok());
    if valid { Ok((operator, deploy, restore)) } else { Err(SignatureError::Mismatch(operator)) }
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
        DeployClaim::new("production", &"ab".repeat(32), &[], "r1", 1_790_000_000)
    }

    fn operator(deploy: &[&str], restore: &[&str]) -> Identity {
        let list = |l: &[&str]| l.iter().map(|e| e.to_string()).collect();
        Identity::Operator { name: "alice".into(), deploy: list(deploy), restore: list(restore) }
    }

    #[test]
    fn a_signature_holds_for_exactly_what_was_signed() {
        let ca = Authority::create(1).unwrap();
        let issued = ca.issue(&operator(&["production"], &[]), &[], 1).unwrap();
        let signature = sign(issued.key_pem.as_bytes(), &claim().message()).unwrap();
        let cert = der(&issued.cert_pem);
        assert_eq!(verify(&roots(&ca), &cert, &signature, &claim()), Ok("alice".into()));

        let changed = DeployClaim { bundle_digest: "cd".repeat(32), ..claim() };
        assert_eq!(
            verify(&roots(&ca), &cert, &signature, &changed),
            Err(SignatureError::Mismatch("alice".into()))
        );
        let danger = DeployClaim { allow_danger: vec!["drop-table".into()], ..claim() };
        assert!(matches!(verify(&roots(&ca), &cert, &signature, &danger), Err(SignatureError::Mismatch(_))));
        let other_rollout = DeployClaim { rollout_id: "r2".into(), ..claim() };
        assert!(matches!(
            verify(&roots(&ca), &cert, &signature, &other_rollout),
            Err(SignatureError::Mismatch(_))
        ));
        let staging = DeployClaim { environment: "staging".into(), ..claim() };
        assert!(matches!(verify(&roots(&ca), &cert, &signature, &staging), Err(SignatureError::Mismatch(_))));
        // Signed for staging by a certificate that grants production only.
        let signed_for_staging = sign(issued.key_pem.as_bytes(), &staging.message()).unwrap();
        assert!(matches!(
            verify(&roots(&ca), &cert, &signed_for_staging, &staging),
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
        let forged = other.issue(&operator(&["production"], &[]), &[], 1).unwrap();
        let signature = sign(forged.key_pem.as_bytes(), &claim().message()).unwrap();
        assert!(matches!(
            verify(&roots(&ca), &der(&forged.cert_pem), &signature, &claim()),
            Err(SignatureError::Untrusted(_))
        ));
        let agent = ca
            .issue(&Identity::Agent { environment: "production".into(), name: "db-1".into() }, &[], 1)
            .unwrap();
        let signature = sign(agent.key_pem.as_bytes(), &claim().message()).unwrap();
        assert!(matches!(
            verify(&roots(&ca), &der(&agent.cert_pem), &signature, &claim()),
            Err(SignatureError::NotOperator(_))
        ));
    }

    #[test]
    fn an_operation_signature_needs_the_restore_grant_and_holds_for_one_subject() {
        let ca = Authority::create(1).unwrap();
        let rollback = OperationClaim {
            operation: Operation::Rollback,
            environment: "production".into(),
            subject: "r1".into(),
            nonce: new_nonce(),
            signed_at: 1_790_000_000,
        };
        let restorer = ca.issue(&operator(&[], &["production"]), &[], 1).unwrap();
        let cert = der(&restorer.cert_pem);
        let signature = sign(restorer.key_pem.as_bytes(), &rollback.message()).unwrap();
        assert_eq!(verify_operation(&roots(&ca), &cert, &signature, &rollback), Ok("alice".into()));
        for changed in [
            OperationClaim { subject: "r2".into(), ..rollback.clone() },
            OperationClaim { operation: Operation::Restore, ..rollback.clone() },
            OperationClaim { nonce: new_nonce(), ..rollback.clone() },
        ] {
            assert!(matches!(
                verify_operation(&roots(&ca), &cert, &signature, &changed),
                Err(SignatureError::Mismatch(_))
            ));
        }

        let deployer = ca.issue(&operator(&["production"], &[]), &[], 1).unwrap();
        let signature = sign(deployer.key_pem.as_bytes(), &rollback.message()).unwrap();
        assert!(matches!(
            verify_operation(&roots(&ca), &der(&deployer.cert_pem), &signature, &rollback),
            Err(SignatureError::NoRestoreGrant { .. })
        ));
        assert_ne!(new_nonce(), new_nonce());
    }
}
