//! Turning a step into the typed command each of its hosts receives.
//!
//! The command id is stable for (rollout, step, host, attempt): a leader
//! that resumes a running step sends the very ids the previous leader
//! sent, and the agents' journals turn that into a re-attach. For a DB
//! step the host is a target (see [`super::target`]): `host/database`
//! puts the database in the id, so two databases of one agent never share
//! a journal entry, and the command names the database.

use runway_proto::v1::{self, command};

use super::target::Target;
use crate::fencing::FencingToken;
use crate::model::{RolloutRecord, SignatureRecord, StepKind, StepRecord};

/// The command that runs `step` of `record` on `host` (a host, or a DB
/// target), stamped with the leader's `token` and name (`issued_by`).
pub fn for_host(
    record: &RolloutRecord,
    step: &StepRecord,
    host: &str,
    bundle: &v1::Bundle,
    token: FencingToken,
    issued_by: &str,
) -> v1::Command {
    v1::Command {
        command_id: command_id(&record.id, step, host),
        fencing_token: token.0,
        rollout_id: record.id.clone(),
        issued_by: issued_by.to_owned(),
        // The command's own span, under which the agent's spans hang.
        traceparent: super::trace::command_context(record, step, host),
        database: Target::parse(host).database,
        action: Some(action(step, host, bundle, record)),
    }
}

/// Tells `db_host` that `record` ended: its backup stays pinned for
/// `keep_pinned_secs` more (the rollback window), then retention may prune it.
pub fn release_backup(
    record: &RolloutRecord,
    db_host: &str,
    keep_pinned_secs: u64,
    token: FencingToken,
    issued_by: &str,
) -> v1::Command {
    v1::Command {
        command_id: format!("{}/release_backup/{db_host}/1", record.id),
        fencing_token: token.0,
        rollout_id: record.id.clone(),
        issued_by: issued_by.to_owned(),
        traceparent: record.trace.span.clone(),
        // Every database's pin of this rollout on that agent.
        database: String::new(),
        action: Some(command::Action::ReleaseBackup(v1::ReleaseBackup {
            rollout_id: record.id.clone(),
            keep_pinned_secs,
        })),
    }
}

/// `<rollout>/<step>[-recovery]/<host>/<attempt>`.
pub fn command_id(rollout_id: &str, step: &StepRecord, host: &str) -> String {
    format!(
        "{rollout_id}/{}{}/{host}/{}",
        step.kind.name(),
        if step.recovery { "-recovery" } else { "" },
        step.attempt
    )
}

/// What a DB target's preflight checks besides the database: the bundle,
/// the danger lint rules the operator accepted, and the operator's
/// signature (`None` outside a rollout, for a plan).
pub type DbChecks<'a> = (&'a v1::Bundle, &'a [String], Option<v1::DeploySignature>);

/// The preflight every host of a rollout gets, and `runway rollout plan`
/// sends outside any rollout: the same checks, the same danger gate.
///
/// Only a DB target's preflight carries `db` (`None` for app hosts, which
/// check their health and nothing of the bundle): a step on ten thousand
/// app hosts must not copy and send a bundle of tens of MiB, or even its
/// signature, ten thousand times.
pub fn preflight(db: Option<DbChecks<'_>>) -> command::Action {
    let (bundle, allow_danger, signature) = match db {
        Some((bundle, allow_danger, signature)) => (Some(bundle.clone()), allow_danger.to_vec(), signature),
        None => (None, Vec::new(), None),
    };
    command::Action::Preflight(v1::Preflight { bundle, allow_danger, signature })
}

/// The typed action of `step` of `record` on `host`.
fn action(step: &StepRecord, host: &str, bundle: &v1::Bundle, record: &RolloutRecord) -> command::Action {
    match step.kind {
        StepKind::Preflight => preflight(record.is_db_target(host).then(|| {
            (bundle, record.allow_danger.as_slice(), record.signature.as_ref().map(SignatureRecord::to_proto))
        })),
        StepKind::MaintenanceOn => command::Action::MaintenanceOn(v1::MaintenanceOn {}),
        StepKind::Backup => command::Action::Backup(v1::Backup { label: format!("rollout-{}", record.id) }),
        StepKind::Migrate => command::Action::Migrate(v1::Migrate {
            bundle: Some(bundle.clone()),
            allow_danger: record.allow_danger.clone(),
            signature: record.signature.as_ref().map(SignatureRecord::to_proto),
        }),
        // A recovery restart brings back what the host ran before the rollout.
        StepKind::Restart => command::Action::Restart(v1::Restart {
            app_version: if step.recovery {
                record.previous_versions.get(host).cloned().unwrap_or_default()
            } else {
                record.app_version.clone()
            },
            ..v1::Restart::default()
        }),
        StepKind::MaintenanceOff => command::Action::MaintenanceOff(v1::MaintenanceOff {}),
        // The downs come from the rollout's own signed bundle.
        StepKind::MigrateDown => command::Action::MigrateDown(v1::MigrateDown {
            bundle: Some(bundle.clone()),
            allow_danger: record.allow_danger.clone(),
            signature: record.signature.as_ref().map(SignatureRecord::to_proto),
            operation: record.rollback_signature.as_ref().map(SignatureRecord::to_operation),
        }),
        // The rollback restores this rollout's own backup, exactly. What
        // the DB agent acts on is the operator's word, not ours: their
        // signed rollback, or inside the rollout's own recovery the
        // rollout's signature (its starter accepted a restore of its backup).
        StepKind::Restore => command::Action::RestoreBackup(v1::RestoreBackup {
            name: record.backup_of(host).to_owned(),
            confirmed: true,
            replace: true,
            signature: record.rollback_signature.as_ref().map(SignatureRecord::to_operation),
            rollout_claim: rollout_claim(record),
        }),
        // The checks come from the environment's policy: the runner adds
        // them (see `rollout::restart::complete`).
        StepKind::Smoke => command::Action::Smoke(v1::Smoke::default()),
        StepKind::Watch => command::Action::Watch(v1::Watch::default()),
        // After the window: a full test restore of this rollout's backup.
        StepKind::VerifyBackup => command::Action::VerifyBackup(v1::VerifyBackup {
            name: record.backup_of(host).to_owned(),
            test_restore: true,
            signature: None,
            rollout_claim: rollout_claim(record),
        }),
        StepKind::Approval => unreachable!("the approval step has no hosts, so it never sends a command"),
    }
}

/// The rollout's deploy signature with what it covers: a DB agent's
/// authority for what the rollout does to its own backup.
fn rollout_claim(record: &RolloutRecord) -> Option<v1::RolloutClaim> {
    record.signature.as_ref().map(|signature| v1::RolloutClaim {
        signature: Some(signature.to_proto()),
        bundle_digest: record.bundle_digest.clone(),
        allow_danger: record.allow_danger.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepState;

    #[test]
    fn ids_name_rollout_step_host_and_attempt() {
        let step = |kind, recovery| StepRecord {
            kind,
            hosts: vec!["app-1".into()],
            state: StepState::Running,
            attempt: 2,
            error: String::new(),
            recovery,
        };
        assert_eq!(command_id("r1", &step(StepKind::Restart, false), "app-1"), "r1/restart/app-1/2");
        // Two databases of one agent: two ids, and each command names its database.
        assert_eq!(
            command_id("r1", &step(StepKind::Migrate, false), "db-2/orders"),
            "r1/migrate/db-2/orders/2"
        );
        let record = RolloutRecord::default();
        let bundle = v1::Bundle::default();
        let migrate = step(StepKind::Migrate, false);
        let command = for_host(&record, &migrate, "db-2/orders", &bundle, FencingToken(1), "c1");
        assert_eq!(command.database, "orders");
        assert_eq!(for_host(&record, &migrate, "db-1", &bundle, FencingToken(1), "c1").database, "");
        assert_eq!(
            command_id("r1", &step(StepKind::MaintenanceOff, true), "app-1"),
            "r1/maintenance_off-recovery/app-1/2"
        );
    }

    #[test]
    fn only_db_targets_get_the_bundle_its_signature_and_the_accepted_dangers_in_their_preflight() {
        let step = |kind, hosts: &[&str]| StepRecord {
            kind,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            state: StepState::Running,
            attempt: 1,
            error: String::new(),
            recovery: false,
        };
        let record = RolloutRecord {
            steps: vec![
                step(StepKind::Preflight, &["db-1", "db-2/orders", "app-1"]),
                step(StepKind::Migrate, &["db-1", "db-2/orders"]),
            ],
            allow_danger: vec!["drop-table".into()],
            signature: Some(SignatureRecord {
                certificate: "00".into(),
                signature: "01".into(),
                signed_at: 7,
                nonce: String::new(),
            }),
            ..RolloutRecord::default()
        };
        let bundle = v1::Bundle { digest: "d1".into(), ..v1::Bundle::default() };
        let preflight = &record.steps[0];
        let carried =
            |host: &str| match for_host(&record, preflight, host, &bundle, FencingToken(1), "c1").action {
                Some(command::Action::Preflight(p)) => {
                    (p.bundle.map(|b| b.digest), p.allow_danger, p.signature.map(|s| s.signed_at))
                }
                other => panic!("not a preflight: {other:?}"),
            };
        let db_checks = (Some("d1".to_owned()), vec!["drop-table".to_owned()], Some(7));
        assert_eq!(carried("db-1"), db_checks);
        assert_eq!(carried("db-2/orders"), db_checks);
        assert_eq!(carried("app-1"), (None, Vec::new(), None), "an app host checks nothing of the bundle");
    }
}
