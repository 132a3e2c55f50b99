//! The exit codes of every `runway` subcommand, and the one place where
//! engine verdicts and errors become exit codes.
//!
//! Scripts rely on these numbers: add a code at the end, never reuse one.
//! `--help` prints [`help`], built from the same table, so the two cannot
//! drift apart.

use std::process::ExitCode;

use runway_engine::backup::BackupError;
use runway_engine::migrate::{MigrateError, lint, plan, status};
use runway_proto::v1::PlanVerdict;
use tonic::Code;

use crate::remote::CallError;

/// How a `runway` run ended, as its process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success. `migrate status`: up to date; `migrate lint`: nothing
    /// found; `migrate plan` and `rollout plan`: safe without maintenance
    /// mode (and, for `rollout plan`, nothing refused).
    Success = 0,
    /// 1: the rollout or operation ran and failed: a migration failed, a
    /// backup failed on the way, a command failed on the agent. Look at the
    /// error before retrying.
    Failed = 1,
    /// 2: bad input, or refused before anything changed: usage (clap exits
    /// 2 too), migrations folder, URL, unknown environment or backup,
    /// another change holding the environment (`--queue` waits), no
    /// suitable agent, restore without `--yes`, not enough free space, a
    /// Danger finding without `--allow-danger` (`rollout start`, and
    /// `rollout plan` when the danger gate would refuse), a config file
    /// `config check` refuses. The agent and the coordinator exit 2 too
    /// when they refuse their config at start-up
    /// ([`runway_daemon::config_check::EXIT_INVALID_CONFIG`]).
    Invalid = 2,
    /// 3: unreachable: no coordinator answered as leader, the database
    /// could not be reached, or an agent the environment is known to have
    /// is away (`rollout start`; `--skip-host` leaves it out). Nothing was
    /// changed; retry when it is back.
    /// `runway status` still shows what each coordinator answered.
    Unreachable = 3,
    /// 4: the rollout was cancelled.
    Cancelled = 4,
    /// 5: busy: another runner holds the migrations advisory lock; retry later.
    Busy = 5,
    /// 6: integrity: the backup is corrupt or does not match its manifest
    /// (checksums, files, row counts); use another backup.
    Integrity = 6,
    /// 7: needs attention. `migrate status`: migrations pending;
    /// `migrate lint`: warnings; `migrate plan` and `rollout plan`: needs
    /// maintenance mode; `runway status`: an agent missing, a coordinator
    /// unreachable or disagreeing, maintenance left on after a rollout.
    Attention = 7,
    /// 8: blocked. `migrate status`: a failed migration waits for `resolve`
    /// (and `deploy` refuses for that reason, or for a schema to baseline);
    /// `migrate lint`: dangerous statements or SQL that does not parse;
    /// `migrate plan` and `rollout plan`: deploy would refuse.
    Blocked = 8,
    /// 9: diverged. `migrate status`: an applied migration was modified or
    /// is missing locally.
    Diverged = 9,
    /// 10: denied: the coordinator refused who you are (no or unknown
    /// client certificate, a certificate from another CA) or what you may
    /// do (a role missing in that environment, approving your own
    /// rollout). Nothing was changed.
    Denied = 10,
}

impl Exit {
    /// Every code, in order.
    pub const ALL: [Exit; 11] = [
        Exit::Success,
        Exit::Failed,
        Exit::Invalid,
        Exit::Unreachable,
        Exit::Cancelled,
        Exit::Busy,
        Exit::Integrity,
        Exit::Attention,
        Exit::Blocked,
        Exit::Diverged,
        Exit::Denied,
    ];

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// One line for `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success; `migrate status`: up to date; `lint`: nothing found; `plan`: safe",
            Exit::Failed => {
                "failed: the rollout or operation ran and failed (a migration failed, a backup failed on the \
                 way, a command failed on the agent)"
            }
            Exit::Invalid => {
                "bad input or refused before anything changed (usage, migrations folder, URL, unknown \
                 environment or backup, no suitable agent, restore without --yes, not enough free space, \
                 a Danger finding without --allow-danger, an environment policy such as staging first, a \
                 config file `config check` refuses; runway-agent and runway-coordinator exit 2 for theirs)"
            }
            Exit::Unreachable => {
                "unreachable: no coordinator answered as leader, or the database could not be reached"
            }
            Exit::Cancelled => "the rollout was cancelled",
            Exit::Busy => "busy: another runner holds the migrations advisory lock; retry later",
            Exit::Integrity => {
                "integrity: the backup is corrupt or does not match its manifest (checksums, files, row \
                 counts); use another backup"
            }
            Exit::Attention => {
                "needs attention: `migrate status`: migrations pending; `lint`: warnings; `plan`: needs maintenance \
                 mode; `runway status`: an agent missing, a coordinator unreachable, maintenance left on"
            }
            Exit::Blocked => {
                "blocked: `status`: a failed migration waits for `resolve`; `lint`: dangerous statements or \
                 SQL that does not parse; `plan`: deploy would refuse"
            }
            Exit::Diverged => "diverged: `status`: an applied migration was modified or is missing locally",
            Exit::Denied => {
                "denied: no valid identity (client certificate) or a role missing in that environment; nothing changed"
            }
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The exit-code table every `--help` ends with.
pub fn help() -> String {
    let mut text = String::from("Exit codes (the same for every subcommand):\n");
    for exit in Exit::ALL {
        text.push_str(&format!("  {}  {}\n", exit.code(), exit.meaning()));
    }
    text
}

impl From<status::Verdict> for Exit {
    fn from(verdict: status::Verdict) -> Self {
        match verdict {
            status::Verdict::UpToDate => Exit::Success,
            status::Verdict::Pending => Exit::Attention,
            status::Verdict::Failed => Exit::Blocked,
            status::Verdict::Diverged => Exit::Diverged,
        }
    }
}

impl From<lint::Verdict> for Exit {
    fn from(verdict: lint::Verdict) -> Self {
        match verdict {
            lint::Verdict::Clean => Exit::Success,
            lint::Verdict::Warnings => Exit::Attention,
            lint::Verdict::Dangerous => Exit::Blocked,
        }
    }
}

impl From<plan::Verdict> for Exit {
    fn from(verdict: plan::Verdict) -> Self {
        match verdict {
            plan::Verdict::Safe => Exit::Success,
            plan::Verdict::NeedsMaintenance => Exit::Attention,
            plan::Verdict::WouldRefuse => Exit::Blocked,
        }
    }
}

/// `rollout plan`: the coordinator's verdict, with the codes `rollout
/// start` would end with for the same answers (a danger-gate refusal is 2,
/// a failing host 1) and those of `migrate plan` for the rest.
impl From<PlanVerdict> for Exit {
    fn from(verdict: PlanVerdict) -> Self {
        match verdict {
            PlanVerdict::Safe => Exit::Success,
            PlanVerdict::NeedsMaintenance => Exit::Attention,
            PlanVerdict::DangerRefused | PlanVerdict::PolicyRefused => Exit::Invalid,
            PlanVerdict::Blocked => Exit::Blocked,
            PlanVerdict::PreflightFailed | PlanVerdict::Unspecified => Exit::Failed,
        }
    }
}

impl From<&MigrateError> for Exit {
    fn from(error: &MigrateError) -> Self {
        match error {
            MigrateError::Connect(_) => Exit::Unreachable,
            MigrateError::InvalidUrl(_)
            | MigrateError::Bundle(_)
            | MigrateError::NotFound { .. }
            | MigrateError::AlreadyApplied { .. }
            | MigrateError::NotFailed { .. }
            | MigrateError::CannotUndo(_)
            | MigrateError::Dangerous { .. } => Exit::Invalid,
            MigrateError::LockTimeout { .. } => Exit::Busy,
            // The same conditions `status` and `plan` report as blocked.
            MigrateError::FailedMigrationsPresent { .. } | MigrateError::SchemaNotEmpty { .. } => {
                Exit::Blocked
            }
            MigrateError::Failed { .. }
            | MigrateError::DownFailed { .. }
            | MigrateError::SchemaDiffers { .. }
            | MigrateError::Database { .. }
            | MigrateError::Tool { .. } => Exit::Failed,
        }
    }
}

impl From<&BackupError> for Exit {
    fn from(error: &BackupError) -> Self {
        match error {
            e if e.is_integrity_failure() => Exit::Integrity,
            BackupError::NotEnoughSpace { .. }
            | BackupError::NotConfirmed { .. }
            | BackupError::Config { .. }
            | BackupError::Url(_)
            | BackupError::NotFound { .. } => Exit::Invalid,
            // The engine names the first connection of every operation
            // "connecting" (`backup::snapshot::connect`); exit_codes.rs
            // proves this mapping on the real binary.
            BackupError::Database { what, .. } if what == "connecting" => Exit::Unreachable,
            _ => Exit::Failed,
        }
    }
}

impl From<&CallError> for Exit {
    fn from(error: &CallError) -> Self {
        match error {
            CallError::Unreachable(_) => Exit::Unreachable,
            CallError::Status(s)
                if runway_proto::refusal_reason(s) == Some(runway_proto::REASON_AGENTS_AWAY) =>
            {
                Exit::Unreachable
            }
            CallError::Tls(_) => Exit::Denied,
            CallError::Status(s)
                if matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound) =>
            {
                Exit::Invalid
            }
            CallError::Status(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) => {
                Exit::Denied
            }
            CallError::Status(_) => Exit::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_their_position_and_unique() {
        for (i, exit) in Exit::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(exit.code()), i, "{exit:?}");
        }
    }

    #[test]
    fn the_daemons_refuse_their_config_with_the_bad_input_code() {
        assert_eq!(Exit::Invalid.code(), runway_daemon::config_check::EXIT_INVALID_CONFIG);
    }

    #[test]
    fn the_help_lists_every_code_once() {
        let help = help();
        for exit in Exit::ALL {
            let line = format!("  {}  {}\n", exit.code(), exit.meaning());
            assert_eq!(help.matches(&line).count(), 1, "{exit:?} in:\n{help}");
        }
    }

    #[test]
    fn backup_errors_tell_integrity_from_refusal() {
        let corrupt = BackupError::ChecksumMismatch {
            file: "/b/x/dump".into(),
            expected: "a".into(),
            actual: "b".into(),
            expected_bytes: 1,
            actual_bytes: 1,
        };
        assert_eq!(Exit::from(&corrupt), Exit::Integrity);
        let refused = BackupError::NotConfirmed { backup: "x".into(), database: "app".into() };
        assert_eq!(Exit::from(&refused), Exit::Invalid);
        assert_eq!(Exit::from(&BackupError::Internal("x".into())), Exit::Failed);
    }

    #[test]
    fn migrate_errors_map_to_the_documented_codes() {
        let lock = MigrateError::LockTimeout { waited_secs: 1, holder: "pid 1".into() };
        assert_eq!(Exit::from(&lock), Exit::Busy);
        assert_eq!(Exit::from(&MigrateError::Connect("refused".into())), Exit::Unreachable);
        let failed = MigrateError::Failed {
            name: "1_a".into(),
            line: Some(1),
            code: "42P01".into(),
            error: "x".into(),
            database_changed: false,
        };
        assert_eq!(Exit::from(&failed), Exit::Failed);
        assert_eq!(Exit::from(status::Verdict::Failed), Exit::Blocked);
        assert_eq!(Exit::from(lint::Verdict::Warnings), Exit::Attention);
        assert_eq!(Exit::from(plan::Verdict::WouldRefuse), Exit::Blocked);
    }

    #[test]
    fn rollout_plan_verdicts_map_like_migrate_plan_and_rollout_start() {
        // The same verdicts `migrate plan` has keep their codes.
        assert_eq!(Exit::from(PlanVerdict::Safe), Exit::from(plan::Verdict::Safe));
        assert_eq!(Exit::from(PlanVerdict::NeedsMaintenance), Exit::from(plan::Verdict::NeedsMaintenance));
        assert_eq!(Exit::from(PlanVerdict::Blocked), Exit::from(plan::Verdict::WouldRefuse));
        // A danger-gate refusal is what `rollout start` exits with for it.
        assert_eq!(Exit::from(PlanVerdict::DangerRefused).code(), 2);
        assert_eq!(Exit::from(PlanVerdict::PreflightFailed), Exit::Failed);
        assert_eq!(Exit::from(PlanVerdict::Unspecified), Exit::Failed);
    }
}
