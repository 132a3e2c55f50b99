//! Reading a [`MigrationPlan`]: the questions every reader of the typed
//! plan asks (the coordinator's policies and recovery, the CLI), answered
//! once.

use crate::v1::{Certainty, DataFinding, DownState, DowntimeClass, LintFinding, MigrationPlan, Severity};

impl MigrationPlan {
    /// The findings of severity Danger.
    pub fn dangers(&self) -> impl Iterator<Item = &LintFinding> {
        self.findings.iter().filter(|f| f.severity == Severity::Danger as i32)
    }

    /// Whether the app version running before can keep running against the
    /// migrated database: nothing destructive or breaking (no Danger
    /// finding, no `drop-*` or `rename-*`).
    pub fn backward_compatible(&self) -> bool {
        !self.findings.iter().any(|f| {
            f.severity == Severity::Danger as i32
                || f.rule.starts_with("drop-")
                || f.rule.starts_with("rename-")
        })
    }

    /// Whether every pending migration has a down proven on a scratch copy,
    /// so a rollback by migration is possible (true when nothing is pending).
    /// In a plan [merged](Self::merge) from several databases, every
    /// database's proof of it must hold.
    pub fn downs_proven(&self) -> bool {
        self.unproven_downs().is_empty()
    }

    /// The pending migrations whose down is not proven (on some database),
    /// with its state there.
    pub fn unproven_downs(&self) -> Vec<String> {
        let mut unproven = Vec::new();
        for name in &self.pending {
            let proofs: Vec<_> = self.downs.iter().filter(|d| &d.migration == name).collect();
            let line = match proofs.iter().find(|d| d.state != DownState::Proven as i32) {
                _ if proofs.is_empty() => format!("{name} (not proven)"),
                Some(d) => format!("{name} ({})", down_state_name(d.state)),
                None => continue,
            };
            if !unproven.contains(&line) {
                unproven.push(line);
            }
        }
        unproven
    }

    /// One plan for a rollout over several databases, from each target's
    /// (`host/database`, plan): everything each found, `safe` only when
    /// every one is, the worst downtime (estimates added: the databases
    /// migrate one after another), and reasons and refusals named by
    /// target. `None` without plans; one plan as it is.
    pub fn merge<'a>(plans: impl IntoIterator<Item = (&'a str, &'a MigrationPlan)>) -> Option<MigrationPlan> {
        let plans: Vec<(&str, &MigrationPlan)> = plans.into_iter().collect();
        match plans.as_slice() {
            [] => return None,
            [(_, only)] => return Some((*only).clone()),
            _ => {}
        }
        let mut merged = MigrationPlan { safe_without_maintenance: true, ..MigrationPlan::default() };
        let mut downtime: Option<crate::v1::Downtime> = None;
        for (target, plan) in plans {
            for name in &plan.pending {
                if !merged.pending.contains(name) {
                    merged.pending.push(name.clone());
                }
            }
            merged.findings.extend(plan.findings.iter().cloned());
            merged.parse_errors.extend(plan.parse_errors.iter().cloned());
            merged.tables.extend(plan.tables.iter().cloned());
            merged.downs.extend(plan.downs.iter().cloned());
            merged.data.extend(plan.data.iter().cloned());
            merged.failed.extend(plan.failed.iter().cloned());
            merged.modified.extend(plan.modified.iter().cloned());
            merged.missing_locally.extend(plan.missing_locally.iter().cloned());
            merged.safe_without_maintenance &= plan.safe_without_maintenance;
            merged.reasons.extend(plan.reasons.iter().map(|r| format!("{target}: {r}")));
            if !plan.blocked.is_empty() {
                let line = format!("{target}: {}", plan.blocked);
                merged.blocked =
                    if merged.blocked.is_empty() { line } else { format!("{}; {line}", merged.blocked) };
            }
            merged.downs_ms += plan.downs_ms;
            merged.applied = merged.applied.max(plan.applied);
            merged.data_checks += plan.data_checks;
            merged.data_ms += plan.data_ms;
            downtime = Some(match (downtime, plan.downtime.clone()) {
                (None, next) => next.unwrap_or_default(),
                (Some(so_far), None) => so_far,
                (Some(so_far), Some(next)) => worse_downtime(so_far, next),
            });
        }
        merged.downtime = downtime;
        Some(merged)
    }

    /// The data findings that make deploy fail for certain.
    pub fn will_fail(&self) -> impl Iterator<Item = &DataFinding> {
        self.data.iter().filter(|f| f.certainty == Certainty::WillFail as i32)
    }

    /// The downtime class, `Unknown` when absent.
    pub fn downtime_class(&self) -> DowntimeClass {
        self.downtime
            .as_ref()
            .and_then(|d| DowntimeClass::try_from(d.class).ok())
            .filter(|c| *c != DowntimeClass::Unspecified)
            .unwrap_or(DowntimeClass::Unknown)
    }
}

/// The worse of two databases' downtimes (`Unknown` is the worst), with
/// their estimates added when both have one.
fn worse_downtime(a: crate::v1::Downtime, b: crate::v1::Downtime) -> crate::v1::Downtime {
    let rank =
        |d: &crate::v1::Downtime| match DowntimeClass::try_from(d.class).unwrap_or(DowntimeClass::Unknown) {
            DowntimeClass::Small => 1,
            DowntimeClass::Medium => 2,
            DowntimeClass::Large => 3,
            DowntimeClass::Unknown | DowntimeClass::Unspecified => 4,
        };
    let estimated_seconds = match (a.estimated_seconds, b.estimated_seconds) {
        (Some(x), Some(y)) => Some(x + y),
        _ => None,
    };
    let worst = if rank(&b) > rank(&a) { b } else { a };
    crate::v1::Downtime { estimated_seconds, ..worst }
}

/// `proven`, `missing`, `fails`, `differs`, `unproven`: a down's state as
/// output and JSON name it.
pub fn down_state_name(state: i32) -> &'static str {
    match DownState::try_from(state).unwrap_or(DownState::Unspecified) {
        DownState::Proven => "proven",
        DownState::Missing => "missing",
        DownState::Fails => "fails",
        DownState::Differs => "differs",
        DownState::Unproven | DownState::Unspecified => "unproven",
    }
}

/// `will fail`, `may fail`, `unknown`.
pub fn certainty_name(certainty: i32) -> &'static str {
    match Certainty::try_from(certainty).unwrap_or(Certainty::Unspecified) {
        Certainty::WillFail => "will fail",
        Certainty::MayFail => "may fail",
        Certainty::Unknown | Certainty::Unspecified => "unknown",
    }
}

/// `small`, `medium`, `large`, `unknown`.
pub fn downtime_class_name(class: DowntimeClass) -> &'static str {
    match class {
        DowntimeClass::Small => "small",
        DowntimeClass::Medium => "medium",
        DowntimeClass::Large => "large",
        DowntimeClass::Unknown | DowntimeClass::Unspecified => "unknown",
    }
}

/// `info`, `warning`, `danger`.
pub fn severity_name(severity: i32) -> &'static str {
    match Severity::try_from(severity).unwrap_or(Severity::Unspecified) {
        Severity::Info | Severity::Unspecified => "info",
        Severity::Warning => "warning",
        Severity::Danger => "danger",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::DownProof;

    fn plan(downs: &[(&str, DownState)]) -> MigrationPlan {
        MigrationPlan {
            pending: downs.iter().map(|(n, _)| (*n).to_owned()).collect(),
            downs: downs
                .iter()
                .map(|(n, s)| DownProof {
                    migration: (*n).to_owned(),
                    state: *s as i32,
                    detail: String::new(),
                })
                .collect(),
            ..MigrationPlan::default()
        }
    }

    #[test]
    fn downs_are_proven_only_when_every_pending_one_is() {
        assert!(plan(&[]).downs_proven());
        assert!(plan(&[("1_a", DownState::Proven), ("2_b", DownState::Proven)]).downs_proven());
        let one_missing = plan(&[("1_a", DownState::Proven), ("2_b", DownState::Missing)]);
        assert!(!one_missing.downs_proven());
        assert_eq!(one_missing.unproven_downs(), ["2_b (missing)"]);
        let mut no_proof = plan(&[("1_a", DownState::Proven)]);
        no_proof.downs.clear();
        assert!(!no_proof.downs_proven(), "a plan without proofs (an older agent) proves nothing");
    }

    #[test]
    fn a_danger_or_a_drop_breaks_the_old_version() {
        let finding = |rule: &str, severity: Severity| LintFinding {
            rule: rule.into(),
            severity: severity as i32,
            ..LintFinding::default()
        };
        let mut p =
            MigrationPlan { findings: vec![finding("add-column", Severity::Info)], ..Default::default() };
        assert!(p.backward_compatible());
        p.findings.push(finding("drop-index-non-concurrent", Severity::Warning));
        assert!(!p.backward_compatible());
        p.findings = vec![finding("alter-column-type", Severity::Danger)];
        assert!(!p.backward_compatible());
        assert_eq!(p.dangers().count(), 1);
        assert_eq!(p.downtime_class(), DowntimeClass::Unknown);
    }

    #[test]
    fn a_merged_plan_holds_what_any_database_found() {
        use crate::v1::Downtime;
        let mut orders = plan(&[("1_a", DownState::Proven)]);
        orders.safe_without_maintenance = true;
        orders.downtime = Some(Downtime {
            class: DowntimeClass::Small as i32,
            estimated_seconds: Some(1.0),
            ..Default::default()
        });
        let mut billing = plan(&[("1_a", DownState::Fails)]);
        billing.reasons = vec!["SET NOT NULL scans the table".into()];
        billing.blocked = "a failed migration waits for resolve".into();
        billing.downtime = Some(Downtime {
            class: DowntimeClass::Large as i32,
            estimated_seconds: Some(30.0),
            ..Default::default()
        });

        assert_eq!(MigrationPlan::merge([("db-1/orders", &orders)]), Some(orders.clone()));
        assert_eq!(MigrationPlan::merge(Vec::new()), None);
        let merged = MigrationPlan::merge([("db-1/orders", &orders), ("db-2/billing", &billing)]).unwrap();
        assert!(!merged.safe_without_maintenance, "one database needs maintenance mode");
        assert!(!merged.downs_proven(), "billing's down of 1_a fails though orders' is proven");
        assert_eq!(merged.unproven_downs(), ["1_a (fails)"]);
        assert_eq!(merged.pending, ["1_a"]);
        assert_eq!(merged.reasons, ["db-2/billing: SET NOT NULL scans the table"]);
        assert_eq!(merged.blocked, "db-2/billing: a failed migration waits for resolve");
        assert_eq!(merged.downtime_class(), DowntimeClass::Large);
        assert_eq!(merged.downtime.unwrap().estimated_seconds, Some(31.0));
    }
}
