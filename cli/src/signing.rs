//! Operators' signatures on restores, rollbacks and verifies (see
//! `runway_identity::signature::OperationClaim`): made here with the
//! operator's key, checked by the coordinator and, with the last word, by
//! the DB agent, which takes each for one use.

use runway_identity::signature::{self, Operation, OperationClaim};
use runway_proto::v1::OperationSignature;

use crate::output::Failure;
use crate::remote::Remote;

/// The operator's signature over `operation` of `subject` (a rollout id or
/// a backup name) in `environment`, with a fresh nonce; `None` in insecure
/// mode, where nobody signs.
pub fn operation(
    remote: &Remote,
    operation: Operation,
    environment: &str,
    subject: &str,
) -> Result<Option<OperationSignature>, Failure> {
    let Some(credentials) = remote.credentials() else {
        return Ok(None);
    };
    let claim = OperationClaim {
        operation,
        environment: environment.to_owned(),
        subject: subject.to_owned(),
        nonce: signature::new_nonce(),
        signed_at: chrono::Utc::now().timestamp(),
    };
    let signed = signature::sign(credentials.key_pem(), &claim.message())
        .map_err(|e| Failure::invalid(format!("cannot sign the {operation} with --key: {e}")))?;
    Ok(Some(OperationSignature {
        certificate: credentials.certificate().to_vec(),
        signature: signed,
        signed_at: claim.signed_at,
        nonce: claim.nonce,
    }))
}
