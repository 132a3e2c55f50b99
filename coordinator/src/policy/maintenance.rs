//! Maintenance only when needed: `maintenance = "always" | "auto" | "never"`.
//!
//! The DB agent's preflight plan (saved with the rollout) already says
//! whether every pending statement is safe while the apps serve traffic
//! (`safe_without_maintenance`) and, if not, why (`reasons`). The policy
//! turns that into one decision, taken where maintenance mode would go on.

use runway_proto::v1::MigrationPlan;

use crate::config::Maintenance;

/// What a rollout does about maintenance mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Turn it on (and off again after the restarts); why, for people.
    TurnOn(String),
    /// Skip maintenance on and off; why, for people.
    Skip(String),
    /// Refuse the rollout before anything changes; why.
    Refuse(String),
}

/// The decision for `policy` and the preflight plan (`None` when the DB
/// agent computed none).
pub fn decide(policy: Maintenance, plan: Option<&MigrationPlan>) -> Decision {
    let needs = match plan {
        Some(plan) if plan.safe_without_maintenance => None,
        Some(plan) if plan.reasons.is_empty() => Some("the plan says maintenance mode is needed".to_owned()),
        Some(plan) => Some(format!("the plan says maintenance mode is needed: {}", plan.reasons.join("; "))),
        None => Some("there is no preflight plan to judge by".to_owned()),
    };
    let rule = format!("maintenance = \"{}\"", policy.as_str());
    match (policy, needs) {
        (Maintenance::Always, _) => Decision::TurnOn(format!("{rule}: maintenance mode goes on")),
        (Maintenance::Auto, Some(why)) => {
            Decision::TurnOn(format!("{rule}: maintenance mode goes on, {why}"))
        }
        (Maintenance::Auto | Maintenance::Never, None) => Decision::Skip(format!(
            "{rule}: maintenance on and off are skipped: every pending statement is safe with the app running"
        )),
        (Maintenance::Never, Some(why)) => Decision::Refuse(format!(
            "refused by {rule}: {why}. Nothing was changed; split the migration into steps that are safe \
             while the app runs, or set maintenance = \"auto\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe() -> MigrationPlan {
        MigrationPlan { safe_without_maintenance: true, ..MigrationPlan::default() }
    }

    fn rewrite() -> MigrationPlan {
        MigrationPlan {
            safe_without_maintenance: false,
            reasons: vec!["m line 1: ALTER COLUMN TYPE rewrites \"User\"".into()],
            ..MigrationPlan::default()
        }
    }

    #[test]
    fn auto_skips_only_a_safe_plan() {
        assert!(
            matches!(decide(Maintenance::Auto, Some(&safe())), Decision::Skip(why) if why.contains("every pending statement is safe"))
        );
        let Decision::TurnOn(why) = decide(Maintenance::Auto, Some(&rewrite())) else {
            panic!("a rewrite needs maintenance")
        };
        assert!(why.contains("rewrites \"User\""), "{why}");
        assert!(
            matches!(decide(Maintenance::Auto, None), Decision::TurnOn(why) if why.contains("no preflight plan"))
        );
    }

    #[test]
    fn always_turns_it_on_and_never_refuses_what_needs_it() {
        assert!(matches!(decide(Maintenance::Always, Some(&safe())), Decision::TurnOn(_)));
        assert!(matches!(decide(Maintenance::Never, Some(&safe())), Decision::Skip(_)));
        let Decision::Refuse(why) = decide(Maintenance::Never, Some(&rewrite())) else {
            panic!("never refuses")
        };
        assert!(why.starts_with("refused by maintenance = \"never\"") && why.contains("rewrites"), "{why}");
    }
}
