//! The DB agent's check of an operator's deploy signature: the last word
//! on whether SQL the coordinator sends was sent by an operator allowed to
//! change this environment's database (see `runway_identity::signature`).

use runway_engine::progress::Progress;
use runway_identity::signature::{self, DeployClaim, SignatureError};
use runway_identity::tls::Security;
use runway_proto::v1::{Bundle, DeploySignature};

use super::{ExecError, Executor};

/// Whether a command may run without a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// It changes the database: a valid signature or nothing runs.
    Required,
    /// It only reads (a plan's preflight): a signature, if sent, must hold.
    IfPresent,
}

impl Executor {
    /// Checks `signature` against the bundle's actual content (the digest
    /// recomputed here, not the one the bundle states), this agent's own
    /// environment and `allow_danger`.
    pub(super) fn check_signature(
        &self,
        bundle: &Bundle,
        allow_danger: &[String],
        signature: Option<&DeploySignature>,
        need: Need,
        progress: &Progress,
    ) -> Result<(), ExecError> {
        let Security::Mutual(credentials) = &self.security else {
            progress.emit("signature", "insecure mode: operator signatures are not checked");
            return Ok(());
        };
        let Some(signature) = signature else {
            return match need {
                Need::Required => Err(ExecError::Unsigned(SignatureError::Missing)),
                Need::IfPresent => Ok(()),
            };
        };
        signature::check_age(
            signature.signed_at,
            chrono::Utc::now().timestamp(),
            self.config.signature_max_age_secs,
        )
        .map_err(ExecError::Unsigned)?;
        let digest = runway_proto::bundle::digest(&bundle.files);
        let claim = DeployClaim::new(&self.config.environment, &digest, allow_danger, signature.signed_at);
        let operator =
            signature::verify(credentials.roots(), &signature.certificate, &signature.signature, &claim)
                .map_err(ExecError::Unsigned)?;
        progress.emit(
            "signature",
            format!("bundle signed by operator {operator} for {}", self.config.environment),
        );
        Ok(())
    }
}
