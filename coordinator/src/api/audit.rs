//! Operator actions in the audit log: who the actor is, recording refusals,
//! and `ListAudit`.
//!
//! Each audited handler builds its entry as it learns who calls and what
//! for, writes it as `accepted` in the same fenced transaction as the change
//! it makes (see [`crate::repo::audit`]), and hands its result to
//! [`Shared::audited`], which records a refusal with its error.
//!
//! Names: with TLS, the operator name from the client certificate. In
//! insecure mode nobody is identified, so the name the CLI sends (its
//! `user@host`) is recorded as `insecure:<name>`: a label, not an identity,
//! but it keeps approvals by a second person workable in test setups. A
//! call without a usable identity is recorded as `unidentified`.

use runway_identity::tls::Security;
use runway_proto::v1::{AuditEntry, ListAuditRequest, ListAuditResponse};
use tonic::Request;

use super::Shared;
use super::auth::Operator;
use super::error::ApiError;
use super::refusals::Verdict;
use crate::config::Role;
use crate::repo::audit::Outcome;
use crate::store::StoreError;

/// The actor of a call whose caller has no usable identity.
pub const UNIDENTIFIED: &str = "unidentified";

/// The name recorded for `operator`: the certificate's operator name; in
/// insecure mode, `insecure:<claimed>` (the name the CLI sent, restricted
/// to a few safe characters), or `insecure` when it sent none.
pub fn recorded_name(security: &Security, operator: &Operator, claimed: &str) -> String {
    if !matches!(security, Security::Insecure) {
        return operator.name.clone();
    }
    let clean: String =
        claimed.chars().filter(|c| c.is_ascii_alphanumeric() || "@._-+".contains(*c)).take(64).collect();
    if clean.is_empty() { "insecure".to_owned() } else { format!("insecure:{clean}") }
}

/// What the audit log says about a refusal: the caller's error, except for
/// etcd's own, which stay in the coordinator's log.
fn refusal(error: &ApiError) -> String {
    match error {
        ApiError::Store(_) => "the coordinator could not save it (etcd); nothing changed".to_owned(),
        other => other.to_string(),
    }
}

impl Shared {
    /// The name recorded for `operator` (see [`recorded_name`]).
    pub fn recorded_name(&self, operator: &Operator, claimed: &str) -> String {
        recorded_name(&self.security, operator, claimed)
    }

    /// Who is behind `request`, for the audit log, whatever their roles.
    pub fn actor<T>(&self, request: &Request<T>, claimed: &str) -> String {
        match self.operator(request) {
            Ok(operator) => self.recorded_name(&operator, claimed),
            Err(_) => UNIDENTIFIED.to_owned(),
        }
    }

    /// Records in the audit log that `entry`'s action was refused when
    /// `result` is an error, then hands `result` back; one refusal per
    /// caller and action a minute, counting the others (see [`super::refusals`]).
    /// Best effort: a
    /// follower's refusal (the caller retries against the leader) and a
    /// refusal that cannot be written are not recorded; the latter is logged.
    pub async fn audited<T>(&self, entry: &AuditEntry, result: Result<T, ApiError>) -> Result<T, ApiError> {
        let Err(error) = &result else { return result };
        if matches!(error, ApiError::NotLeader { .. } | ApiError::Store(StoreError::Fenced(_))) {
            return result;
        }
        let Ok(term) = self.leader_term() else { return result };
        let mut entry = entry.clone();
        match self.refusals.refused(&entry.actor, &entry.action) {
            Verdict::Skip => return result,
            Verdict::Write { held_back: 0 } => {}
            Verdict::Write { held_back } => {
                tracing::warn!(actor = %entry.actor, held_back, "refused calls of this caller were not written to the audit log: one per action a minute is");
                entry.parameters.insert("refusals_not_recorded".into(), held_back.to_string());
            }
        }
        if let Err(e) = self.store.audit().append(&term, &entry, Outcome::Refused, &refusal(error)).await {
            tracing::warn!(action = %entry.action, actor = %entry.actor, error = %e, "cannot record a refused action in the audit log");
        }
        result
    }

    /// Whether `operator` may read entries about `environment`: the view
    /// role there; for an entry without a known environment (a call that
    /// named an unknown rollout or environment), the view role anywhere.
    fn may_read(&self, operator: &Operator, environment: &str) -> bool {
        if self.config.environments.contains(environment) {
            self.allows(operator, environment, Role::View)
        } else {
            self.config.environments.iter().any(|(name, _)| self.allows(operator, name, Role::View))
        }
    }
}

/// `ListAudit`: entries since a time, for one environment or every
/// environment the caller may view. Any coordinator answers, from etcd.
pub async fn list(
    shared: &Shared,
    request: Request<ListAuditRequest>,
) -> Result<ListAuditResponse, ApiError> {
    let ListAuditRequest { environment, since_unix_ms } = request.get_ref().clone();
    let operator = if environment.is_empty() {
        shared.operator(&request)?
    } else {
        shared.authorize(&request, &environment, Role::View)?
    };
    let entries = shared
        .store
        .audit()
        .list(since_unix_ms)
        .await?
        .into_iter()
        .filter(|e| environment.is_empty() || e.environment == environment)
        .filter(|e| shared.may_read(&operator, &e.environment))
        .collect();
    Ok(ListAuditResponse { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_mode_records_the_claimed_name_marked_and_cleaned() {
        let operator = Operator { name: "insecure".into() };
        let insecure = Security::Insecure;
        assert_eq!(recorded_name(&insecure, &operator, "alice@laptop"), "insecure:alice@laptop");
        assert_eq!(recorded_name(&insecure, &operator, ""), "insecure");
        assert_eq!(recorded_name(&insecure, &operator, "bob\n; rm -rf /"), "insecure:bobrm-rf");
        assert_eq!(recorded_name(&insecure, &operator, &"x".repeat(500)).len(), "insecure:".len() + 64);
    }

    #[test]
    fn etcd_errors_stay_out_of_the_audit_log() {
        assert_eq!(
            refusal(&ApiError::PermissionDenied("operator bob lacks the deploy role in production".into())),
            "permission denied: operator bob lacks the deploy role in production"
        );
        assert!(refusal(&ApiError::Store(StoreError::Timeout)).contains("could not save it"));
    }
}
