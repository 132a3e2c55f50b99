//! The approval gate's rules: how many approvals a rollout needs, who may
//! give them, and what the operators' saved decisions add up to. The
//! runner waits at the gate (`runner/gate.rs`); the operator API saves the
//! decisions (`api/approvals.rs`).
//!
//! The count is `approvals.default` unless the plan that preflight saved
//! is riskier, then `approvals.danger`. Riskier means, from the DB agent's
//! plan (`RolloutRecord::plan_json`):
//!
//! - it has a Danger lint finding: one the operator accepted with
//!   `--allow-danger` (an unaccepted one stops the rollout in preflight);
//! - its downtime class is `large` (over five minutes) or `unknown`;
//! - or there is no plan to judge by: never guess in favour of fewer
//!   approvals.
//!
//! Needing maintenance mode alone is not riskier: nearly every change that
//! drops or renames something needs it, and the default count covers it.

use runway_proto::v1::DowntimeClass;

use crate::config::{EnvironmentPolicy, Role};
use crate::model::{ApprovalGate, Decision, RolloutRecord, Verdict};

/// How many approvals `record` needs in an environment with `policy`, and
/// why (for people: the gate's `rule`). A rollback's gate needs
/// `approvals.rollback`, whatever the plan.
pub fn needed(policy: &EnvironmentPolicy, record: &RolloutRecord, rollback: bool) -> (u32, String) {
    let counts = policy.approvals;
    if rollback {
        return (counts.rollback, "approvals.rollback".to_owned());
    }
    match riskier(record) {
        Some(why) if counts.danger > counts.default => (counts.danger, format!("approvals.danger: {why}")),
        Some(why) => (counts.default, format!("approvals: {why}")),
        None => (counts.default, "approvals.default".to_owned()),
    }
}

/// What makes `record`'s plan riskier than an ordinary one, if anything.
fn riskier(record: &RolloutRecord) -> Option<String> {
    let Some(plan) = record.plan.as_ref() else {
        return Some("no preflight plan to judge the risk by".into());
    };
    let mut rules: Vec<&str> = plan.dangers().map(|f| f.rule.as_str()).collect();
    if !rules.is_empty() {
        rules.sort_unstable();
        rules.dedup();
        return Some(format!("it accepts Danger finding(s) {} (--allow-danger)", rules.join(", ")));
    }
    let Some(downtime) = plan.downtime.as_ref() else {
        return Some("the plan has no downtime class".into());
    };
    match plan.downtime_class() {
        class @ (DowntimeClass::Large | DowntimeClass::Unknown) => Some(format!(
            "downtime class {}{}",
            runway_proto::plan::downtime_class_name(class),
            if downtime.reason.is_empty() { String::new() } else { format!(" ({})", downtime.reason) }
        )),
        _ => None,
    }
}

/// Who may approve a rollout `started_by` started, for the message that
/// says the rollout waits: the named holders of the approve role other
/// than its starter, or any operator with it.
pub fn who_may_approve(policy: &EnvironmentPolicy, started_by: &str, insecure: bool) -> String {
    if insecure {
        return format!("any operator other than {started_by} (insecure mode: nobody is identified)");
    }
    let holders = policy.holders(Role::Approve);
    if holders.contains(&"*") {
        return format!("any operator other than {started_by}");
    }
    let others: Vec<&str> = holders.into_iter().filter(|h| *h != started_by).collect();
    if others.is_empty() {
        "nobody: no operator other than the starter holds the approve role here".to_owned()
    } else {
        others.join(", ")
    }
}

/// What changed at the gate when the saved decisions were read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new approval, now counted.
    Approved(Decision),
    /// A rejection: the rollout ends `cancelled`.
    Rejected(Decision),
}

/// Takes the saved `decisions` of the gate's round into `gate`: approvals
/// it has not counted (one per operator, never the asker's: the starter,
/// or who asked for the rollback), then the first rejection. Returns what
/// changed, in order.
pub fn merge(gate: &mut ApprovalGate, decisions: &[Decision], asker: &str) -> Vec<Change> {
    let mut decisions: Vec<Decision> = decisions.iter().filter(|d| d.round == gate.round).cloned().collect();
    decisions.sort_by_key(|d| d.unix_ms);
    let mut changes = Vec::new();
    for decision in &decisions {
        if decision.operator == asker {
            // The API refuses these; a record is never the place to trust it.
            continue;
        }
        match decision.verdict {
            Verdict::Approve if !gate.approvals.iter().any(|a| a.operator == decision.operator) => {
                gate.approvals.push(decision.clone());
                changes.push(Change::Approved(decision.clone()));
            }
            Verdict::Reject if gate.rejection.is_none() => {
                gate.rejection = Some(decision.clone());
                changes.push(Change::Rejected(decision.clone()));
            }
            _ => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use runway_proto::v1::{self, Severity};

    use super::*;
    use crate::config::Approvals;

    fn record(plan: Option<v1::MigrationPlan>) -> RolloutRecord {
        RolloutRecord { plan, started_by: "alice".into(), ..RolloutRecord::default() }
    }

    fn plan(severity: Severity, class: DowntimeClass) -> Option<v1::MigrationPlan> {
        Some(v1::MigrationPlan {
            findings: vec![v1::LintFinding {
                rule: "drop-column".into(),
                severity: severity as i32,
                ..v1::LintFinding::default()
            }],
            downtime: Some(v1::Downtime {
                class: class as i32,
                estimated_seconds: None,
                reason: "about an hour for 40 GiB".into(),
            }),
            ..v1::MigrationPlan::default()
        })
    }

    fn policy(default: u32, danger: u32) -> EnvironmentPolicy {
        EnvironmentPolicy {
            approvals: Approvals { default, danger, rollback: 0 },
            ..EnvironmentPolicy::default()
        }
    }

    #[test]
    fn a_rollback_needs_the_rollback_count_and_counts_only_its_own_rounds_decisions() {
        let mut with_rollback = policy(1, 2);
        with_rollback.approvals.rollback = 1;
        let plan = record(plan(Severity::Danger, DowntimeClass::Large));
        assert_eq!(needed(&with_rollback, &plan, true), (1, "approvals.rollback".into()));
        assert_eq!(needed(&policy(1, 2), &plan, true).0, 0, "by default a rollback needs none");

        let mut gate =
            ApprovalGate { needed: 1, round: 1, asked_by: "bob".into(), ..ApprovalGate::default() };
        let start = decision("carol", 10, Verdict::Approve);
        let own = Decision { round: 1, ..decision("bob", 20, Verdict::Approve) };
        assert!(
            merge(&mut gate, &[start, own], "bob").is_empty(),
            "the start's approval and the asker's never count"
        );
        let dave = Decision { round: 1, ..decision("dave", 30, Verdict::Approve) };
        assert_eq!(merge(&mut gate, std::slice::from_ref(&dave), "bob"), [Change::Approved(dave)]);
    }

    #[test]
    fn an_ordinary_plan_needs_the_default_count() {
        assert_eq!(
            needed(&policy(1, 2), &record(plan(Severity::Warning, DowntimeClass::Small)), false),
            (1, "approvals.default".into())
        );
        assert_eq!(needed(&policy(1, 2), &record(plan(Severity::Info, DowntimeClass::Medium)), false).0, 1);
        assert_eq!(
            needed(&policy(0, 2), &record(plan(Severity::Info, DowntimeClass::Small)), false).0,
            0,
            "no approval needed"
        );
    }

    #[test]
    fn an_accepted_danger_a_large_or_unknown_downtime_or_no_plan_needs_the_danger_count() {
        let (count, rule) =
            needed(&policy(1, 2), &record(plan(Severity::Danger, DowntimeClass::Small)), false);
        assert_eq!(count, 2);
        assert_eq!(rule, "approvals.danger: it accepts Danger finding(s) drop-column (--allow-danger)");
        let (count, rule) = needed(&policy(1, 2), &record(plan(Severity::Info, DowntimeClass::Large)), false);
        assert_eq!(count, 2);
        assert!(rule.contains("downtime class large (about an hour for 40 GiB)"), "{rule}");
        assert_eq!(needed(&policy(1, 2), &record(plan(Severity::Info, DowntimeClass::Unknown)), false).0, 2);
        let (count, rule) = needed(&policy(1, 2), &record(None), false);
        assert_eq!((count, rule.as_str()), (2, "approvals.danger: no preflight plan to judge the risk by"));
        // `approvals = 1`: the same count, and the rule still says why.
        let (count, rule) =
            needed(&policy(1, 1), &record(plan(Severity::Danger, DowntimeClass::Small)), false);
        assert_eq!(count, 1);
        assert!(rule.starts_with("approvals: it accepts Danger"), "{rule}");
    }

    #[test]
    fn who_may_approve_names_the_approvers_but_not_the_starter() {
        let mut roles = policy(1, 1);
        for (who, role) in [("alice", Role::Approve), ("bob", Role::Approve), ("carol", Role::Deploy)] {
            roles.roles.entry(who.into()).or_default().insert(role);
        }
        assert_eq!(who_may_approve(&roles, "alice", false), "bob");
        roles.roles.entry("*".into()).or_default().insert(Role::Approve);
        assert_eq!(who_may_approve(&roles, "alice", false), "any operator other than alice");
        assert!(who_may_approve(&policy(1, 1), "x", false).starts_with("nobody"));
        assert!(who_may_approve(&policy(1, 1), "insecure:x", true).contains("insecure mode"));
    }

    fn decision(operator: &str, unix_ms: i64, verdict: Verdict) -> Decision {
        Decision { operator: operator.into(), unix_ms, verdict, comment: String::new(), round: 0 }
    }

    #[test]
    fn decisions_count_once_per_operator_never_for_the_starter_and_a_rejection_stops() {
        let mut gate = ApprovalGate { needed: 2, ..ApprovalGate::default() };
        let saved = [decision("carol", 20, Verdict::Approve), decision("bob", 10, Verdict::Approve)];
        let changes = merge(&mut gate, &saved, "alice");
        assert_eq!(changes, [Change::Approved(saved[1].clone()), Change::Approved(saved[0].clone())]);
        assert_eq!(gate.approvers(), "bob, carol", "in the order they were given");
        assert!(merge(&mut gate, &saved, "alice").is_empty(), "read again, nothing new");

        let mut gate = ApprovalGate { needed: 2, ..ApprovalGate::default() };
        let own = [decision("alice", 5, Verdict::Approve)];
        assert!(merge(&mut gate, &own, "alice").is_empty(), "the starter's approval never counts");

        let rejected = [decision("bob", 10, Verdict::Approve), decision("dave", 30, Verdict::Reject)];
        let changes = merge(&mut gate, &rejected, "alice");
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1], Change::Rejected(rejected[1].clone()));
        assert_eq!(gate.rejection.as_ref().map(|r| r.operator.as_str()), Some("dave"));
    }
}
