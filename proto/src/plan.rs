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
    pub fn downs_proven(&self) -> bool {
        self.pending.iter().all(|name| {
            self.downs.iter().any(|d| &d.migration == name && d.state == DownState::Proven as i32)
        })
    }

    /// The pending migrations whose down is not proven, with their state.
    pub fn unproven_downs(&self) -> Vec<String> {
        self.pending
            .iter()
            .filter_map(|name| match self.downs.iter().find(|d| &d.migration == name) {
                Some(d) if d.state == DownState::Proven as i32 => None,
                Some(d) => Some(format!("{name} ({})", down_state_name(d.state))),
                None => Some(format!("{name} (not proven)")),
            })
            .collect()
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
}
