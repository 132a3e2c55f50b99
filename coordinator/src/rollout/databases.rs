//! Many databases in one rollout: the order they back up and migrate in,
//! where each stands, and which are restored when the migrate step stops.
//!
//! Backups run `parallel` at a time. Migrations run the `canary`
//! databases first, then batches of `parallel`, through the same batching
//! as restarts (`runner::batches`); more failures than `max_failures` (or
//! a failed canary) stop later batches. On a stop, each failed database
//! that changed is restored from this rollout's backup of it; databases
//! already migrated are restored too when `uniform`, otherwise they stay
//! migrated and the rollout's error names them. Databases never started
//! stay untouched (`skipped`). App restarts come after the migrate step,
//! so they wait for every database.
//!
//! Pure functions over the saved record; the runner runs them.

use super::outcome::StepResult;
use super::restart::{Batching, batches, tolerated};
use crate::config::{Count, DatabasePolicy};
use crate::model::{DatabaseState, RolloutRecord, StepKind};

/// The migrate step's batching.
pub fn migrate_batching(policy: &DatabasePolicy) -> Batching {
    Batching {
        canary: policy.canary,
        batch: Count::Hosts(policy.parallel),
        max_failures: Count::Hosts(policy.max_failures),
    }
}

/// The backup step's batching: `parallel` at a time; any failure stops it.
pub fn backup_batching(policy: &DatabasePolicy) -> Batching {
    Batching { canary: 0, batch: Count::Hosts(policy.parallel), max_failures: Count::Hosts(0) }
}

/// Records in `record.databases` what a `kind` step's commands did to each
/// database they reached.
pub(super) fn observe(record: &mut RolloutRecord, kind: StepKind, recovery: bool, result: &StepResult) {
    for end in &result.ends {
        let Some(db) = record.databases.iter_mut().find(|d| d.target == end.host) else { continue };
        let ok = end.error.is_none();
        match (kind, recovery) {
            (StepKind::Backup, false) if ok => {
                db.state = DatabaseState::BackedUp;
                if let Some(id) =
                    end.detail.get("manifest").and_then(|m| m.get("id")).and_then(|i| i.as_str())
                {
                    db.backup = id.to_owned();
                }
            }
            (StepKind::Migrate, false) => {
                db.state = if ok { DatabaseState::Migrated } else { DatabaseState::Failed };
                let applied = end.detail.get("applied").and_then(|a| a.as_array()).map_or(0, Vec::len);
                db.migrations_applied = u32::try_from(applied).unwrap_or(u32::MAX);
            }
            (StepKind::Restore, true) => {
                db.state = if ok { DatabaseState::Restored } else { DatabaseState::Failed };
            }
            // A failed one stays as it was: the restore that follows decides.
            (StepKind::MigrateDown, true) if ok => {
                db.state = DatabaseState::RolledBack;
                db.undone = end
                    .detail
                    .get("undone")
                    .and_then(|u| u.as_array())
                    .map(|u| u.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
}

/// Whether a stopped rollout may leave its migrated databases migrated:
/// only with `databases.uniform = false` and a plan the running (old) app
/// version can serve (backward compatible: the app hosts are not
/// restarted when migrate fails, so they keep their version over it).
pub(super) fn may_stay_migrated(uniform: bool, plan: Option<&runway_proto::v1::MigrationPlan>) -> bool {
    !uniform && plan.is_some_and(runway_proto::v1::MigrationPlan::backward_compatible)
}

/// After a failed migrate step: the targets to restore (each failed one
/// that may have changed; the migrated ones too when `uniform`) and those
/// left migrated (when not).
pub(super) fn to_restore(result: &StepResult, uniform: bool) -> (Vec<String>, Vec<String>) {
    let changed = result.ends.iter().filter(|e| {
        e.error.is_some()
            && !e.refused
            && e.detail.get("database_changed").and_then(serde_json::Value::as_bool) != Some(false)
    });
    let migrated: Vec<String> =
        result.ends.iter().filter(|e| e.error.is_none()).map(|e| e.host.clone()).collect();
    let mut restore: Vec<String> = changed.map(|e| e.host.clone()).collect();
    if uniform {
        restore.extend(migrated);
        (restore, Vec::new())
    } else {
        (restore, migrated)
    }
}

/// When the rollout ends other than succeeded: databases whose migration
/// never started are `skipped` (untouched).
pub fn finish(record: &mut RolloutRecord) {
    if record.error.is_empty() {
        return;
    }
    for db in &mut record.databases {
        if matches!(db.state, DatabaseState::Pending | DatabaseState::BackedUp) {
            db.state = DatabaseState::Skipped;
        }
    }
}

/// The database policy as it applies to `targets`, for `runway rollout plan`.
pub fn describe(policy: &DatabasePolicy, targets: &[String]) -> Vec<String> {
    if targets.len() < 2 {
        return Vec::new();
    }
    let batching = migrate_batching(policy);
    let order = batches(targets, &batching)
        .iter()
        .map(|b| format!("{}[{}]", if b.canary { "canary " } else { "" }, b.hosts.join(", ")))
        .collect::<Vec<_>>()
        .join(" → ");
    vec![
        format!("databases: {} ({})", targets.len(), targets.join(", ")),
        format!("backup: {} at a time", policy.parallel),
        format!("migrate order: {order}"),
        format!(
            "failures tolerated: {} (one more stops later batches; a failed canary always does); a failed \
             database is restored from its backup; {}",
            tolerated(&batching, targets.len()),
            if policy.uniform {
                "uniform: databases already migrated are restored too"
            } else {
                "not uniform: databases already migrated stay migrated and are reported"
            }
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DatabaseRecord;
    use crate::rollout::outcome::CommandEnd;

    fn end(host: &str, error: bool, detail: serde_json::Value) -> CommandEnd {
        CommandEnd {
            host: host.into(),
            error: error.then(|| format!("{host}: boom")),
            refused: false,
            detail,
            plan: None,
            outcome_unknown: false,
        }
    }

    fn targets() -> Vec<String> {
        ["db-1", "db-2/billing", "db-2/orders"].map(String::from).to_vec()
    }

    #[test]
    fn a_canary_first_then_batches_of_parallel() {
        let policy = DatabasePolicy { canary: 1, parallel: 2, ..DatabasePolicy::default() };
        let order: Vec<(bool, Vec<String>)> = batches(&targets(), &migrate_batching(&policy))
            .into_iter()
            .map(|b| (b.canary, b.hosts))
            .collect();
        assert_eq!(
            order,
            [(true, vec!["db-1".into()]), (false, vec!["db-2/billing".into(), "db-2/orders".into()])]
        );
        let backups = batches(&targets(), &backup_batching(&policy));
        assert!(backups.iter().all(|b| !b.canary) && backups.len() == 2);
        let lines = describe(&policy, &targets()).join("\n");
        assert!(lines.contains("canary [db-1] → [db-2/billing, db-2/orders]"), "{lines}");
        assert!(describe(&policy, &["db-1".into()]).is_empty(), "one database: nothing to say");
    }

    #[test]
    fn a_failed_migration_restores_what_changed_and_the_migrated_ones_only_when_uniform() {
        let result = StepResult {
            ends: vec![
                end("db-1", false, serde_json::json!({ "applied": ["a"] })),
                end("db-2/billing", true, serde_json::json!({ "database_changed": true })),
                end("db-2/orders", true, serde_json::json!({ "database_changed": false })),
            ],
            tolerated: 0,
        };
        assert_eq!(to_restore(&result, true), (vec!["db-2/billing".into(), "db-1".into()], vec![]));
        assert_eq!(to_restore(&result, false), (vec!["db-2/billing".into()], vec!["db-1".into()]));
    }

    #[test]
    fn states_follow_the_steps_and_untouched_databases_end_skipped() {
        let mut record = RolloutRecord {
            databases: targets()
                .into_iter()
                .map(|t| DatabaseRecord { target: t, ..DatabaseRecord::default() })
                .collect(),
            ..RolloutRecord::default()
        };
        let backup = StepResult {
            ends: vec![
                end("db-1", false, serde_json::json!({ "manifest": { "id": "b-1" } })),
                end("db-2/billing", false, serde_json::json!({ "manifest": { "id": "b-2" } })),
            ],
            tolerated: 0,
        };
        observe(&mut record, StepKind::Backup, false, &backup);
        let migrate = StepResult {
            ends: vec![end("db-1", false, serde_json::json!({ "applied": ["a", "b"] }))],
            tolerated: 0,
        };
        observe(&mut record, StepKind::Migrate, false, &migrate);
        assert_eq!(record.backup_of("db-2/billing"), "b-2");
        record.error = "migrate failed".into();
        finish(&mut record);
        let states: Vec<(DatabaseState, u32)> =
            record.databases.iter().map(|d| (d.state, d.migrations_applied)).collect();
        assert_eq!(
            states,
            [(DatabaseState::Migrated, 2), (DatabaseState::Skipped, 0), (DatabaseState::Skipped, 0)]
        );
    }

    #[test]
    fn migrated_databases_stay_only_where_the_old_app_can_serve_them() {
        use runway_proto::v1::{LintFinding, MigrationPlan, Severity};
        let compatible = MigrationPlan::default();
        let breaking = MigrationPlan {
            findings: vec![LintFinding {
                rule: "drop-column".into(),
                severity: Severity::Danger as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(may_stay_migrated(false, Some(&compatible)));
        assert!(
            !may_stay_migrated(false, Some(&breaking)),
            "the old app would run on a schema it cannot use"
        );
        assert!(!may_stay_migrated(false, None), "without a plan nothing is known");
        assert!(!may_stay_migrated(true, Some(&compatible)));
    }
}
