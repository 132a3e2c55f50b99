//! Operators' signatures, checked here the way the DB agent will check
//! them, so a bad one is refused at once and not at preflight or half-way
//! through a rollback: the deploy signature that starts a rollout, and the
//! signed restores, rollbacks and verifies. The DB agent checks again and
//! has the last word (it also refuses a nonce it has seen): the
//! coordinator only carries signatures (see `runway_identity::signature`).

use runway_identity::signature::{self, DeployClaim, Operation, OperationClaim};
use runway_proto::v1::{Bundle, DeploySignature, OperationSignature};

use super::Shared;
use super::auth::Operator;
use super::error::ApiError;
use crate::model::SignatureRecord;

impl Shared {
    /// The operator's deploy signature on a rollout, checked the way the DB
    /// agent will check it, so a bad one is refused now and not at
    /// preflight. Required with TLS (the DB agent runs no SQL without it);
    /// `None` in insecure mode.
    pub fn deploy_signature(
        &self,
        operator: &Operator,
        environment: &str,
        bundle: &Bundle,
        (allow_danger, rollout_id): (&[String], &str),
        signature: Option<&DeploySignature>,
    ) -> Result<Option<SignatureRecord>, ApiError> {
        let Some(credentials) = self.security.credentials() else {
            return Ok(None);
        };
        let signature = signature.ok_or_else(|| {
            ApiError::InvalidArgument(
                "the rollout carries no operator signature; start it with a `runway` that has --cert and --key".into(),
            )
        })?;
        let digest = runway_proto::bundle::digest(&bundle.files);
        let claim = DeployClaim::new(environment, &digest, allow_danger, rollout_id, signature.signed_at);
        let signer =
            signature::verify(credentials.roots(), &signature.certificate, &signature.signature, &claim)
                .map_err(|e| ApiError::PermissionDenied(format!("the deploy signature is refused: {e}")))?;
        if signer != operator.name {
            return Err(ApiError::PermissionDenied(format!(
                "the bundle is signed by operator {signer}, but operator {} is starting the rollout; \
                 each operator starts rollouts with their own signature",
                operator.name
            )));
        }
        Ok(Some(SignatureRecord::from_proto(signature)))
    }
    /// The signature `operator` sent over `operation` of `subject` (a
    /// rollout id or a backup name) in `environment`, once it checks out.
    /// Required with TLS; `None` in insecure mode, where nobody signs.
    pub fn operation_signature(
        &self,
        operator: &Operator,
        (operation, environment, subject): (Operation, &str, &str),
        signature: Option<&OperationSignature>,
    ) -> Result<Option<OperationSignature>, ApiError> {
        let Some(credentials) = self.security.credentials() else {
            return Ok(None);
        };
        if crate::failpoint::forward_unchecked_signatures() {
            return Ok(signature.cloned());
        }
        let signature = signature.ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "the {operation} carries no operator signature; send it with a `runway` that has --cert and --key"
            ))
        })?;
        let claim = OperationClaim {
            operation,
            environment: environment.to_owned(),
            subject: subject.to_owned(),
            nonce: signature.nonce.clone(),
            signed_at: signature.signed_at,
        };
        let signer = signature::verify_operation(
            credentials.roots(),
            &signature.certificate,
            &signature.signature,
            &claim,
        )
        .map_err(|e| ApiError::PermissionDenied(format!("the {operation} signature is refused: {e}")))?;
        if signer != operator.name {
            return Err(ApiError::PermissionDenied(format!(
                "the {operation} is signed by operator {signer}, but operator {} asks for it; \
                 each operator sends their own signature",
                operator.name
            )));
        }
        Ok(Some(signature.clone()))
    }
}
