//! Staging first: `requires = { environment = "staging", soak = "24h" }`.
//!
//! A rollout of bundle digest D to an environment with `requires` is
//! refused unless a rollout of D *succeeded* in the required environment
//! at least `soak` before now (counted from when that rollout ended), and
//! no rollout of D there was rolled back after that success (a rollout
//! rolled back by `runway rollout rollback` is no longer a success
//! either). The saved rollout records are the facts; nothing else is kept.

use std::time::Duration;

use crate::config::{Requires, format_duration};
use crate::model::{RolloutRecord, RolloutState};

/// The success that meets the requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Met {
    /// The rollout in the required environment.
    pub rollout_id: String,
    /// When it ended.
    pub ended_unix_ms: i64,
}

/// Why the requirement is not met, for the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// No rollout of the bundle succeeded there.
    Never,
    /// It succeeded, but less than `soak` ago.
    Soaking { rollout_id: String, ended_unix_ms: i64, left: Duration },
    /// It succeeded, but a rollout of it there was rolled back since.
    RolledBack { rollout_id: String, rolled_back_id: String },
}

/// Decides whether `digest` may roll out to `environment` now (`now_unix_ms`)
/// under `requires`, judging by `rollouts` (every saved rollout).
pub fn check(
    requires: &Requires,
    digest: &str,
    rollouts: &[RolloutRecord],
    now_unix_ms: i64,
) -> Result<Met, Unmet> {
    let there: Vec<&RolloutRecord> = rollouts
        .iter()
        .filter(|r| r.environment == requires.environment && r.bundle_digest == digest)
        .collect();
    let rolled_back_after = |ended: i64| {
        there
            .iter()
            .filter(|r| r.state == RolloutState::RolledBack && r.updated_unix_ms >= ended)
            .max_by_key(|r| r.updated_unix_ms)
    };
    let soak_ms = i64::try_from(requires.soak.as_millis()).unwrap_or(i64::MAX);
    let mut successes: Vec<&&RolloutRecord> =
        there.iter().filter(|r| r.state == RolloutState::Succeeded).collect();
    // Oldest first: the first one that soaked long enough and was not
    // rolled back since meets it; otherwise the newest says why not.
    successes.sort_by_key(|r| r.updated_unix_ms);
    let mut unmet = Unmet::Never;
    for success in successes {
        let ended = success.updated_unix_ms;
        if let Some(rollback) = rolled_back_after(ended) {
            unmet = Unmet::RolledBack { rollout_id: success.id.clone(), rolled_back_id: rollback.id.clone() };
            continue;
        }
        let soaked = now_unix_ms.saturating_sub(ended);
        if soaked >= soak_ms {
            return Ok(Met { rollout_id: success.id.clone(), ended_unix_ms: ended });
        }
        let left = Duration::from_millis(u64::try_from(soak_ms - soaked).unwrap_or(0));
        unmet = Unmet::Soaking { rollout_id: success.id.clone(), ended_unix_ms: ended, left };
    }
    Err(unmet)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for messages.
fn when(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix_ms.to_string())
}

impl Unmet {
    /// The refusal, naming the rule, the bundle and what to do.
    pub fn message(&self, environment: &str, requires: &Requires, digest: &str) -> String {
        let short = &digest[..digest.len().min(12)];
        let why = match self {
            Unmet::Never => format!("bundle {short} has not succeeded in {} yet", requires.environment),
            Unmet::Soaking { rollout_id, ended_unix_ms, left } => format!(
                "bundle {short} succeeded in {} (rollout {rollout_id}, {}) less than {} ago; {} of soak left",
                requires.environment,
                when(*ended_unix_ms),
                format_duration(requires.soak),
                format_duration(*left)
            ),
            Unmet::RolledBack { rollout_id, rolled_back_id } => format!(
                "bundle {short} succeeded in {} (rollout {rollout_id}) but was rolled back there since (rollout {rolled_back_id})",
                requires.environment
            ),
        };
        format!(
            "refused by [environments.{environment}] requires = {{ environment = \"{}\", soak = \"{}\" }}: {why}. \
             Roll the same bundle out to {} first, or override with `--override-requires` (needs the approve role in {environment})",
            requires.environment,
            format_duration(requires.soak),
            requires.environment
        )
    }
}

impl Met {
    /// For the plan and the log.
    pub fn describe(&self, requires: &Requires) -> String {
        format!(
            "requires: met: succeeded in {} by rollout {} at {} (soak {})",
            requires.environment,
            self.rollout_id,
            when(self.ended_unix_ms),
            format_duration(requires.soak)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn rollout(id: &str, env: &str, digest: &str, state: RolloutState, ended: i64) -> RolloutRecord {
        RolloutRecord {
            id: id.into(),
            environment: env.into(),
            bundle_digest: digest.into(),
            state,
            updated_unix_ms: ended,
            ..RolloutRecord::default()
        }
    }

    fn requires() -> Requires {
        Requires { environment: "staging".into(), soak: Duration::from_secs(24 * 3600) }
    }

    #[test]
    fn a_success_in_staging_counts_once_it_has_soaked() {
        let now = 100 * HOUR;
        let rollouts = [
            rollout("s1", "staging", "D", RolloutState::Succeeded, now - 30 * HOUR),
            rollout("p1", "production", "E", RolloutState::Succeeded, now - 50 * HOUR),
        ];
        assert_eq!(
            check(&requires(), "D", &rollouts, now),
            Ok(Met { rollout_id: "s1".into(), ended_unix_ms: now - 30 * HOUR })
        );
        assert_eq!(check(&requires(), "E", &rollouts, now), Err(Unmet::Never), "production is not staging");
        assert_eq!(check(&requires(), "X", &rollouts, now), Err(Unmet::Never));
        let soaking = check(&requires(), "D", &rollouts, now - 10 * HOUR).unwrap_err();
        assert_eq!(
            soaking,
            Unmet::Soaking {
                rollout_id: "s1".into(),
                ended_unix_ms: now - 30 * HOUR,
                left: Duration::from_secs(4 * 3600)
            }
        );
        let message = soaking.message("production", &requires(), "D");
        assert!(
            message.starts_with(
                "refused by [environments.production] requires = { environment = \"staging\", soak = \"1d\" }"
            ),
            "{message}"
        );
        assert!(message.contains("4h of soak left") && message.contains("--override-requires"), "{message}");
    }

    #[test]
    fn failures_do_not_count_and_a_rollback_since_undoes_a_success() {
        let now = 100 * HOUR;
        let failed = [
            rollout("s1", "staging", "D", RolloutState::Failed, now - 30 * HOUR),
            rollout("s2", "staging", "D", RolloutState::Cancelled, now - 30 * HOUR),
        ];
        assert_eq!(check(&requires(), "D", &failed, now), Err(Unmet::Never));
        let rolled_back = [
            rollout("s1", "staging", "D", RolloutState::Succeeded, now - 30 * HOUR),
            rollout("s2", "staging", "D", RolloutState::RolledBack, now - 20 * HOUR),
        ];
        assert_eq!(
            check(&requires(), "D", &rolled_back, now),
            Err(Unmet::RolledBack { rollout_id: "s1".into(), rolled_back_id: "s2".into() })
        );
        // A rollback before the success does not undo it.
        let earlier = [
            rollout("s1", "staging", "D", RolloutState::RolledBack, now - 40 * HOUR),
            rollout("s2", "staging", "D", RolloutState::Succeeded, now - 30 * HOUR),
        ];
        assert_eq!(check(&requires(), "D", &earlier, now).unwrap().rollout_id, "s2");
        let zero = Requires { soak: Duration::ZERO, ..requires() };
        assert!(
            check(&zero, "D", &[rollout("s1", "staging", "D", RolloutState::Succeeded, now)], now).is_ok()
        );
    }
}
