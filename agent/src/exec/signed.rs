//! The DB agent's check of operators' signatures: the last word on whether
//! what the coordinator sends was asked for by an operator allowed to
//! change this environment's database (see `runway_identity::signature`).
//!
//! - SQL (preflight, migrate, the downs) runs under the rollout's deploy
//!   signature, which binds the bundle and the rollout id: a migrate runs
//!   once per rollout and database.
//! - A restore, a verify or a rollback's downs run under an operator's
//!   signed operation (one use: its nonce is remembered), or, inside the
//!   rollout that took the backup and before it ended, under the rollout's
//!   own deploy signature: its starter accepted that its way back may run.
//!
//! Uses are remembered in [`SignedUses`](crate::signed_uses::SignedUses).

use runway_engine::backup::BackupConfig;
use runway_engine::progress::Progress;
use runway_identity::signature::{self, DeployClaim, Operation, OperationClaim, SignatureError};
use runway_identity::tls::Security;
use runway_proto::v1::{self, Bundle, DeploySignature, OperationSignature, RolloutClaim};

use super::{ExecError, Executor};

/// Whether a command may run without a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// It changes the database: a valid signature or nothing runs.
    Required,
    /// It only reads (a plan's preflight): a signature, if sent, must hold.
    IfPresent,
}

/// What a backup operation acts on, for its authority check.
pub(super) struct BackupOp<'a> {
    pub operation: Operation,
    /// The backup's name.
    pub name: &'a str,
    pub signature: Option<&'a OperationSignature>,
    pub rollout_claim: Option<&'a RolloutClaim>,
}

impl Executor {
    /// Checks `signature` against the bundle's actual content (the digest
    /// recomputed here, not the one the bundle states), this agent's own
    /// environment, `allow_danger` and the command's rollout id.
    pub(super) fn check_signature(
        &self,
        (bundle, rollout_id): (&Bundle, &str),
        allow_danger: &[String],
        signature: Option<&DeploySignature>,
        need: Need,
        progress: &Progress,
    ) -> Result<(), ExecError> {
        let Security::Mutual(_) = &self.security else {
            progress.emit("signature", "insecure mode: operator signatures are not checked");
            return Ok(());
        };
        let Some(signature) = signature else {
            return match need {
                Need::Required => Err(ExecError::Unsigned(SignatureError::Missing)),
                Need::IfPresent => Ok(()),
            };
        };
        let digest = runway_proto::bundle::digest(&bundle.files);
        let operator = self.deploy_claim_holds(&digest, allow_danger, rollout_id, signature)?;
        progress.emit(
            "signature",
            format!(
                "bundle signed by operator {operator} for rollout {rollout_id} in {}",
                self.config.environment
            ),
        );
        Ok(())
    }

    /// A migrate runs once per rollout and database: the rollout's
    /// signature does not start a second one.
    pub(super) async fn once_per_rollout(&self, cmd: &v1::Command, database: &str) -> Result<(), ExecError> {
        if matches!(self.security, Security::Insecure) {
            return Ok(());
        }
        let key = format!("rollout/{}/{database}/migrate", cmd.rollout_id);
        Ok(self.uses.claim(&key, &cmd.command_id, now()).await?)
    }

    /// Whether a restore or verify of a backup may run: an operator's
    /// signed operation, or the rollout's own signature when this is that
    /// rollout's backup and the rollout has not ended.
    pub(super) async fn authorize_backup_op(
        &self,
        cmd: &v1::Command,
        op: BackupOp<'_>,
        (config, database): (&BackupConfig, &str),
        progress: &Progress,
    ) -> Result<(), ExecError> {
        if matches!(self.security, Security::Insecure) {
            progress.emit(
                "signature",
                format!("insecure mode: the {} is not checked for a signature", op.operation),
            );
            return Ok(());
        }
        // A rollback restores the backup of the rollout it rolls back, and
        // nothing else.
        let in_rollout = !cmd.rollout_id.is_empty();
        if in_rollout {
            let manifest = crate::backup_ops::show(config, op.name).await?;
            if manifest.rollout_id != cmd.rollout_id {
                return Err(ExecError::Unauthorized(format!(
                    "backup {} was taken by {}, not by rollout {}: a rollout's way back restores its own backup",
                    op.name,
                    if manifest.rollout_id.is_empty() {
                        "hand".to_owned()
                    } else {
                        format!("rollout {}", manifest.rollout_id)
                    },
                    cmd.rollout_id
                )));
            }
        }
        if let Some(signature) = op.signature {
            let (operation, subject) = match (op.operation, in_rollout) {
                (Operation::Restore, true) => (Operation::Rollback, cmd.rollout_id.as_str()),
                (operation, _) => (operation, op.name),
            };
            return self
                .operation_holds(cmd, (operation, subject), signature, (database, op.operation), progress)
                .await;
        }
        match op.rollout_claim.filter(|_| in_rollout) {
            Some(claim) => self.rollout_claim_holds(cmd, claim, (database, op.operation), progress).await,
            None => Err(ExecError::Unsigned(SignatureError::Missing)),
        }
    }

    /// Whether a rollback's downs may run (their SQL was checked against
    /// the deploy signature already): an operator's signed rollback of this
    /// rollout, or, until the rollout ended, its own signature.
    pub(super) async fn authorize_downs(
        &self,
        cmd: &v1::Command,
        down: &v1::MigrateDown,
        database: &str,
        progress: &Progress,
    ) -> Result<(), ExecError> {
        if matches!(self.security, Security::Insecure) {
            return Ok(());
        }
        let action = Operation::Rollback;
        if let Some(signature) = down.operation.as_ref() {
            let subject = (Operation::Rollback, cmd.rollout_id.as_str());
            return self.operation_holds(cmd, subject, signature, (database, action), progress).await;
        }
        self.still_running(cmd).await?;
        let key = format!("rollout/{}/{database}/migrate_down", cmd.rollout_id);
        Ok(self.uses.claim(&key, &cmd.command_id, now()).await?)
    }

    /// An operation signature over `(operation, subject)` in this agent's
    /// environment: chain, restore grant, the exact claim, age, and a nonce
    /// not used before for `action` on `database`.
    async fn operation_holds(
        &self,
        cmd: &v1::Command,
        (operation, subject): (Operation, &str),
        signature: &OperationSignature,
        (database, action): (&str, Operation),
        progress: &Progress,
    ) -> Result<(), ExecError> {
        let Security::Mutual(credentials) = &self.security else { return Ok(()) };
        let nonce = &signature.nonce;
        if !(16..=64).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ExecError::Unauthorized(
                "the signature carries no proper nonce (16 to 64 hex digits); sign it with a current `runway`".into(),
            ));
        }
        signature::check_age(signature.signed_at, now(), self.config.signature_max_age.as_secs())
            .map_err(ExecError::Unsigned)?;
        let claim = OperationClaim {
            operation,
            environment: self.config.environment.clone(),
            subject: subject.to_owned(),
            nonce: nonce.clone(),
            signed_at: signature.signed_at,
        };
        let operator = signature::verify_operation(
            credentials.roots(),
            &signature.certificate,
            &signature.signature,
            &claim,
        )
        .map_err(ExecError::Unsigned)?;
        let key = format!("nonce/{nonce}/{database}/{action}");
        self.uses.claim(&key, &cmd.command_id, now()).await?;
        progress.emit(
            "signature",
            format!("{operation} of {subject} signed by operator {operator} for {}", self.config.environment),
        );
        Ok(())
    }

    /// The rollout's own deploy signature, as authority for its way back
    /// (a restore or verify of its backup): bound to this rollout, which
    /// must not have ended. A restore runs once per rollout and database.
    async fn rollout_claim_holds(
        &self,
        cmd: &v1::Command,
        claim: &RolloutClaim,
        (database, action): (&str, Operation),
        progress: &Progress,
    ) -> Result<(), ExecError> {
        let signature = claim.signature.as_ref().ok_or(ExecError::Unsigned(SignatureError::Missing))?;
        let operator =
            self.deploy_claim_holds(&claim.bundle_digest, &claim.allow_danger, &cmd.rollout_id, signature)?;
        self.still_running(cmd).await?;
        if action == Operation::Restore {
            let key = format!("rollout/{}/{database}/restore", cmd.rollout_id);
            self.uses.claim(&key, &cmd.command_id, now()).await?;
        }
        progress.emit(
            "signature",
            format!(
                "{action} of rollout {}'s backup, under its start signed by operator {operator}",
                cmd.rollout_id
            ),
        );
        Ok(())
    }

    /// Refuses the rollout's own signature as authority once the rollout
    /// ended: a later rollback is the operator's to sign.
    async fn still_running(&self, cmd: &v1::Command) -> Result<(), ExecError> {
        if self.uses.ended(&cmd.rollout_id).await? {
            return Err(ExecError::Unauthorized(format!(
                "rollout {} has ended, so its start signature no longer covers its way back; \
                 `runway rollout rollback` sends the operator's signed rollback",
                cmd.rollout_id
            )));
        }
        Ok(())
    }

    /// A deploy signature over `(digest, allow_danger, rollout_id)` in this
    /// agent's environment: age, chain, deploy grant, the exact claim.
    fn deploy_claim_holds(
        &self,
        digest: &str,
        allow_danger: &[String],
        rollout_id: &str,
        signature: &DeploySignature,
    ) -> Result<String, ExecError> {
        let Security::Mutual(credentials) = &self.security else { return Ok(String::new()) };
        signature::check_age(signature.signed_at, now(), self.config.signature_max_age.as_secs())
            .map_err(ExecError::Unsigned)?;
        let claim =
            DeployClaim::new(&self.config.environment, digest, allow_danger, rollout_id, signature.signed_at);
        signature::verify(credentials.roots(), &signature.certificate, &signature.signature, &claim)
            .map_err(ExecError::Unsigned)
    }
}

/// Unix seconds now.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
