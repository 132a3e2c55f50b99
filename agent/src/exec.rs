//! Turns a `Command` from the coordinator into work on this host
//! (`preflight`: the checks before a rollout changes anything).
//!
//! Every command goes through the [`Journal`] first (fencing and
//! exactly-once), then runs in its own task. Progress becomes numbered
//! `CommandEvent`s and the end a `CommandResult`; both go to the outbox,
//! which the connection drains into whichever stream is live. A result
//! lost with a dropped stream is not lost: it is in the journal, and the
//! coordinator re-sends unfinished commands when the agent reconnects.

mod preflight;
mod signed;
mod smoke;
mod undo;

use std::sync::Arc;

use runway_identity::tls::Security;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use runway_proto::v1::{
    self, AgentMessage, CommandEvent, CommandOutcome, CommandResult, agent_message, command,
};
use runway_telemetry::TraceParent;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{Config, Role};
use crate::journal::{Admission, Incoming, Journal};
use crate::signed_uses::SignedUses;
use crate::{backup_ops, hooks};
use runway_engine::progress::Progress;
use runway_engine::redact::Redactor;
use runway_engine::{backup, migrate};
use runway_identity::signature::Operation;

/// Where messages for the coordinator go.
pub type Outbox = mpsc::UnboundedSender<AgentMessage>;

/// Runs commands; one per agent process.
#[derive(Clone)]
pub struct Executor {
    config: Arc<Config>,
    /// mTLS credentials (the CA checks operators' deploy signatures).
    security: Security,
    journal: Journal,
    outbox: Outbox,
    tracker: TaskTracker,
    /// The app version deployed now (changes when a restart hook deploys
    /// one; see [`crate::deployed`]).
    app_version: Arc<std::sync::Mutex<String>>,
    /// Set when the agent is stopping: running commands finish, new ones do not start.
    stopping: Arc<AtomicBool>,
    /// Masks this agent's secrets in every event and result it sends.
    redactor: Arc<Redactor>,
    /// What was done under each operator signature (one use each).
    uses: SignedUses,
}

/// Why a command failed. Rendered into the result's `error` field.
#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("this host does not have the {0} role; check the agent's `roles`")]
    WrongRole(&'static str),
    #[error("command has no action; the coordinator is newer than this agent")]
    NoAction,
    #[error(transparent)]
    Bundle(#[from] runway_proto::bundle::BundleError),
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error(transparent)]
    Backup(#[from] backup::BackupError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Smoke(#[from] smoke::SmokeError),
    #[error("{0}")]
    Preflight(String),
    /// The command names a database this agent does not serve.
    #[error(transparent)]
    Database(#[from] crate::databases::DatabaseError),
    /// No valid operator signature over the SQL: nothing ran.
    #[error("refused: {0}")]
    Unsigned(runway_identity::signature::SignatureError),
    /// The signature was used before, or its journal cannot be read.
    #[error("refused: {0}")]
    Uses(crate::signed_uses::UseError),
    /// A signature that holds, but not for this (another rollout's backup,
    /// a rollout that has ended): nothing ran.
    #[error("refused: {0}")]
    Unauthorized(String),
    /// The pending SQL has Danger findings the operator did not accept.
    #[error("{0}")]
    Dangerous(String),
    /// A pending statement will certainly fail on the live data.
    #[error("{0}")]
    WillFail(String),
    /// A preflight check stopped the command; `facts` holds what preflight
    /// found before it (server version, the plan, the unaccepted Danger
    /// findings), so the operator sees why (`runway rollout plan`).
    #[error("{error}")]
    PreflightStopped { error: Box<ExecError>, facts: serde_json::Value, plan: Option<Box<v1::MigrationPlan>> },
}

/// By hand, not `#[from]`: the message already holds the journal's error,
/// so it is not also the `source()` a reporter would print a second time.
impl From<crate::signed_uses::UseError> for ExecError {
    fn from(error: crate::signed_uses::UseError) -> Self {
        ExecError::Uses(error)
    }
}

impl ExecError {
    /// Facts about the failure the coordinator decides on, as the result's
    /// detail: for a migration, whether the database changed (`null` when
    /// unknown), which chooses between lifting maintenance and restoring.
    fn detail(&self) -> Option<serde_json::Value> {
        match self {
            // What the preflight's facts name too, for `rollout show`.
            Self::Migrate(migrate::MigrateError::Dangerous { findings }) => Some(serde_json::json!({
                "database_changed": false,
                "unaccepted_dangers": findings,
            })),
            Self::Migrate(e) => Some(serde_json::json!({ "database_changed": e.database_changed() })),
            // The backup itself is corrupt or does not match its manifest:
            // another backup is needed, not a retry.
            Self::Backup(e) if e.is_integrity_failure() => Some(serde_json::json!({ "integrity": true })),
            Self::PreflightStopped { facts, .. } => Some(facts.clone()),
            _ => None,
        }
    }

    /// The plan a preflight computed before a check stopped it.
    fn plan(&self) -> Option<v1::MigrationPlan> {
        match self {
            Self::PreflightStopped { plan, .. } => plan.as_deref().cloned(),
            _ => None,
        }
    }

    /// Refused before anything ran: the request itself was wrong (wrong
    /// host, unknown backup, restore not confirmed). Reported as
    /// `Refused`, so callers can tell bad input from a failure.
    fn nothing_ran(&self) -> bool {
        match self {
            Self::PreflightStopped { error, .. } => error.nothing_ran(),
            other => matches!(
                other,
                Self::WrongRole(_)
                    | Self::NoAction
                    | Self::Database(_)
                    | Self::Dangerous(_)
                    | Self::WillFail(_)
                    | Self::Unsigned(_)
                    | Self::Uses(_)
                    | Self::Unauthorized(_)
                    | Self::Migrate(migrate::MigrateError::Dangerous { .. })
                    | Self::Backup(
                        backup::BackupError::NotFound { .. } | backup::BackupError::NotConfirmed { .. }
                    )
            ),
        }
    }
}

impl Executor {
    /// `app_version`: the version to report until a restart deploys
    /// another (see [`crate::deployed::at_start`]).
    pub fn new(
        config: Arc<Config>,
        security: Security,
        journal: Journal,
        outbox: Outbox,
        tracker: TaskTracker,
        app_version: String,
    ) -> Self {
        Self {
            security,
            journal,
            outbox,
            tracker,
            app_version: Arc::new(std::sync::Mutex::new(app_version)),
            stopping: Arc::default(),
            redactor: Arc::new(config.redactor()),
            uses: SignedUses::new(&config.state_dir, config.signature_max_age.as_secs()),
            config,
        }
    }

    /// From now on, commands this agent has not seen are not started (the
    /// coordinator sends them again once the agent is back); re-sends of
    /// known commands are still answered.
    pub fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The app version to report at registration.
    pub fn app_version(&self) -> String {
        self.app_version.lock().expect("app version lock").clone()
    }

    /// Checks the fencing token of a coordinator that says it leads; see
    /// [`Journal::observe_token`]. `Err` says why the agent must not take
    /// commands from it.
    pub async fn accept_leader(&self, token: u64) -> Result<(), String> {
        match self.journal.observe_token(token).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "it leads with fencing token {token}, but this agent has seen {}: it was deposed; \
                 not taking commands from it",
                self.journal.highest_token().await
            )),
            // Without a durable token the agent cannot fence.
            Err(e) => Err(format!("cannot record its fencing token {token}: {e}")),
        }
    }

    /// Admits `cmd` through the journal and runs it in the background.
    pub async fn submit(&self, cmd: v1::Command) {
        let action = action_name(&cmd);
        if self.stopping.load(Ordering::SeqCst) && !self.journal.knows(&cmd.command_id).await {
            tracing::warn!(command_id = %cmd.command_id, action, "agent is stopping; not starting a new command");
            return;
        }
        let admission = self
            .journal
            .admit(Incoming {
                command_id: &cmd.command_id,
                rollout_id: &cmd.rollout_id,
                token: cmd.fencing_token,
                issued_by: &cmd.issued_by,
                action,
            })
            .await;
        match admission {
            Ok(Admission::Start) => {
                // Every line logged while it runs carries its ids; in the
                // trace it hangs under the coordinator's span for it.
                let parent = TraceParent::parse(&cmd.traceparent);
                let span = tracing::info_span!(
                    "command",
                    otel.name = %format!("{action} {}", self.config.name),
                    command_id = %cmd.command_id,
                    rollout_id = %cmd.rollout_id,
                    trace_id = %parent.map(|p| p.trace_id_hex()).unwrap_or_default(),
                    "host.name" = %self.config.name,
                    otel.status_code = tracing::field::Empty,
                );
                if let Some(parent) = parent {
                    parent.adopt(&span);
                }
                span.in_scope(|| tracing::info!(command_id = %cmd.command_id, action, token = cmd.fencing_token, "starting command"));
                let this = self.clone();
                self.tracker.spawn(async move { this.run(cmd).await }.instrument(span));
            }
            Ok(Admission::AlreadyRunning) => {
                tracing::info!(command_id = %cmd.command_id, "command re-sent while running; its result will follow");
            }
            Ok(Admission::Finished(result)) => {
                tracing::info!(command_id = %cmd.command_id, "command re-sent after it finished; returning the recorded result");
                self.send_result(result);
            }
            Ok(Admission::Stale { token, highest, known: true }) => {
                // Answering could reach the new leader, which waits for
                // the same id: stay silent.
                tracing::warn!(command_id = %cmd.command_id, token, highest, "ignoring a re-send from a deposed leader");
            }
            Ok(Admission::Stale { token, highest, known: false }) => {
                tracing::warn!(command_id = %cmd.command_id, token, highest, "refusing command from a deposed leader");
                self.send_result(CommandResult {
                    command_id: cmd.command_id,
                    outcome: CommandOutcome::Refused as i32,
                    error: format!(
                        "refused: fencing token {token} is lower than {highest}, already seen from a newer leader"
                    ),
                    ..CommandResult::default()
                });
            }
            Err(e) => {
                tracing::error!(command_id = %cmd.command_id, error = %e, "cannot journal command; refusing it");
                self.send_result(CommandResult {
                    command_id: cmd.command_id,
                    outcome: CommandOutcome::Refused as i32,
                    error: format!("refused: {e}"),
                    ..CommandResult::default()
                });
            }
        }
    }

    async fn run(&self, cmd: v1::Command) {
        let progress = self.progress_for(&cmd.command_id);
        let started = std::time::Instant::now();
        let outcome = match &cmd.action {
            Some(command::Action::Preflight(p)) => self.preflight(p, &cmd, &progress).await,
            _ => self.execute(&cmd, &progress).await.map(|detail| (detail, None)),
        };
        if let Some(hold) = crate::failpoint::hold_result() {
            progress.emit("failpoint", format!("holding the result for {} ms", hold.as_millis()));
            tokio::time::sleep(hold).await;
        }
        let result = match outcome {
            Ok((detail, plan)) => CommandResult {
                command_id: cmd.command_id.clone(),
                outcome: CommandOutcome::Succeeded as i32,
                error: String::new(),
                detail_json: self.redactor.redact(&detail.to_string()),
                plan: plan.map(Box::new),
                work_ms: started.elapsed().as_millis() as u64,
            },
            Err(e) => {
                let error = self.redactor.redact(&e.to_string());
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::warn!(command_id = %cmd.command_id, %error, "command failed");
                CommandResult {
                    command_id: cmd.command_id.clone(),
                    outcome: if e.nothing_ran() { CommandOutcome::Refused } else { CommandOutcome::Failed }
                        as i32,
                    error,
                    detail_json: e.detail().map(|d| self.redactor.redact(&d.to_string())).unwrap_or_default(),
                    plan: e.plan().map(Box::new),
                    work_ms: started.elapsed().as_millis() as u64,
                }
            }
        };
        crate::metrics::get().command_ended(
            action_name(&cmd),
            outcome_name(result.outcome),
            started.elapsed(),
        );
        if let Err(e) = self.journal.finish(&result).await {
            tracing::error!(command_id = %cmd.command_id, error = %e, "cannot record command result");
        }
        let outcome = CommandOutcome::try_from(result.outcome).map_or("unknown", |o| o.as_str_name());
        tracing::info!(command_id = %cmd.command_id, outcome, "command finished");
        self.send_result(result);
    }

    async fn execute(&self, cmd: &v1::Command, progress: &Progress) -> Result<serde_json::Value, ExecError> {
        let action = cmd.action.as_ref().ok_or(ExecError::NoAction)?;
        match action {
            // Run by `run` itself: its result carries the typed plan.
            command::Action::Preflight(p) => Ok(self.preflight(p, cmd, progress).await?.0),
            command::Action::Backup(b) => self.backup(cmd, b, progress).await,
            command::Action::ListBackups(_)
            | command::Action::ShowBackup(_)
            | command::Action::VerifyBackup(_)
            | command::Action::RestoreBackup(_) => self.backup_operation(cmd, action, progress).await,
            command::Action::ReleaseBackup(r) => self.release_backup(cmd, r, progress).await,
            command::Action::Migrate(m) => self.migrate(cmd, m, progress).await,
            command::Action::MigrateDown(m) => self.migrate_down(cmd, m, progress).await,
            command::Action::PreviewRollback(p) => self.preview_rollback(cmd, p).await,
            command::Action::MaintenanceOn(_) => {
                let app = self.app()?;
                self.hook(app, "maintenance_on", &app.maintenance_on, &[], progress).await?;
                Ok(serde_json::json!({}))
            }
            command::Action::MaintenanceOff(_) => {
                let app = self.app()?;
                self.hook(app, "maintenance_off", &app.maintenance_off, &[], progress).await?;
                Ok(serde_json::json!({}))
            }
            command::Action::Restart(r) => self.restart(r, progress).await,
            command::Action::Smoke(s) => {
                let app = self.app()?;
                let smoke = smoke::run_checks(&s.checks, &self.config, app, progress).await?;
                Ok(serde_json::json!({ "smoke": smoke }))
            }
            command::Action::Watch(w) => {
                let app = self.app()?;
                Ok(smoke::watch(w, &self.config, app, progress).await?)
            }
        }
    }

    /// A rollout's backup of the command's database.
    async fn backup(
        &self,
        cmd: &v1::Command,
        b: &v1::Backup,
        progress: &Progress,
    ) -> Result<serde_json::Value, ExecError> {
        let (served, config) = self.db(&cmd.database)?;
        let environment = &self.config.environment;
        let started = std::time::Instant::now();
        let report =
            backup::run_step(&served.url, &config, environment, &b.label, &cmd.rollout_id, progress).await?;
        let manifest = &report.manifest;
        crate::metrics::get().backup_succeeded(&manifest.database, manifest.bytes, started.elapsed());
        Ok(serde_json::to_value(report).expect("backup report serializes"))
    }

    /// An operator's list, show, verify or restore of backups; verify and
    /// restore need the operator's signature first.
    async fn backup_operation(
        &self,
        cmd: &v1::Command,
        action: &command::Action,
        progress: &Progress,
    ) -> Result<serde_json::Value, ExecError> {
        let (served, config) = self.db(&cmd.database)?;
        let op = match action {
            command::Action::VerifyBackup(v) => Some(signed::BackupOp {
                operation: Operation::Verify,
                name: &v.name,
                signature: v.signature.as_ref(),
                rollout_claim: v.rollout_claim.as_ref(),
            }),
            command::Action::RestoreBackup(r) => Some(signed::BackupOp {
                operation: Operation::Restore,
                name: &r.name,
                signature: r.signature.as_ref(),
                rollout_claim: r.rollout_claim.as_ref(),
            }),
            _ => None,
        };
        if let Some(op) = op {
            self.authorize_backup_op(cmd, op, (&config, &served.name), progress).await?;
        }
        Ok(backup_ops::run(action, &config, &served.url, &cmd.rollout_id, progress).await?)
    }

    /// A rollout ended: its backups may be pruned (after `keep_pinned_secs`),
    /// and its signature no longer covers its way back.
    async fn release_backup(
        &self,
        cmd: &v1::Command,
        r: &v1::ReleaseBackup,
        progress: &Progress,
    ) -> Result<serde_json::Value, ExecError> {
        let keep_for = Duration::from_secs(r.keep_pinned_secs);
        // Named: that database's pin; empty: the rollout's pins of every database.
        let configs = if cmd.database.is_empty() {
            self.db_role()?;
            crate::databases::all_backup_configs(&self.config)
        } else {
            vec![self.db(&cmd.database)?.1]
        };
        for config in &configs {
            backup::retention::release(config, &r.rollout_id, keep_for)?;
        }
        // From now on the rollout's own signature no longer covers
        // its way back.
        self.uses.mark_ended(&r.rollout_id, chrono::Utc::now().timestamp()).await?;
        let message = match keep_for.as_secs() {
            0 => format!("rollout {} ended: its backup may be pruned now", r.rollout_id),
            secs => {
                format!("rollout {} ended: its backup stays pinned for {secs} s more", r.rollout_id)
            }
        };
        progress.emit("retention", message);
        Ok(serde_json::json!({ "rollout_id": r.rollout_id, "keep_pinned_secs": r.keep_pinned_secs }))
    }

    /// Applies the signed bundle's pending migrations, once per rollout,
    /// after saving what a rollback by migration needs.
    async fn migrate(
        &self,
        cmd: &v1::Command,
        m: &v1::Migrate,
        progress: &Progress,
    ) -> Result<serde_json::Value, ExecError> {
        let (served, backup) = self.db(&cmd.database)?;
        let url = served.url.as_str();
        let migrations = self.signed_migrations(
            (m.bundle.as_ref(), &cmd.rollout_id),
            &m.allow_danger,
            m.signature.as_ref(),
            progress,
        )?;
        self.once_per_rollout(cmd, &served.name).await?;
        let pg_dump = backup.tool("pg_dump");
        undo::save_before(&self.rollout_database(cmd, &served, &pg_dump), &migrations, progress).await?;
        // The danger gate again, over what is pending now: the
        // preflight that checked it may have been skipped, or the
        // database may have changed since.
        let report =
            migrate::deploy_accepted(url, &migrations, &m.allow_danger, &self.config.migrate, progress)
                .await?;
        crate::metrics::get().migrations_applied(&report.durations_ms);
        Ok(serde_json::to_value(report).expect("report serializes"))
    }

    /// Rolls back by migration what the rollout applied, with the bundle's
    /// proven downs.
    async fn migrate_down(
        &self,
        cmd: &v1::Command,
        m: &v1::MigrateDown,
        progress: &Progress,
    ) -> Result<serde_json::Value, ExecError> {
        let (served, backup) = self.db(&cmd.database)?;
        // The downs change the database: signed like an up.
        let migrations = self.signed_migrations(
            (m.bundle.as_ref(), &cmd.rollout_id),
            &m.allow_danger,
            m.signature.as_ref(),
            progress,
        )?;
        self.authorize_downs(cmd, m, &served.name, progress).await?;
        // No lint gate over the downs: their Danger statements
        // (a DROP COLUMN of what the up added) are what a down is
        // for, and no preflight gates them. The Danger of a down
        // that preflight does gate, `down-drops-existing`, is held
        // here by the proof: `undo` runs the downs only when, on a
        // copy, they give back the schema this agent saved before
        // the rollout migrated, so a table or column that existed
        // then cannot go (one dropped and created again, empty,
        // still could: the proof compares schemas, not rows).
        let pg_dump = backup.tool("pg_dump");
        let at = self.rollout_database(cmd, &served, &pg_dump);
        let report = undo::undo(&at, &migrations, &self.config.migrate, progress).await?;
        Ok(serde_json::to_value(report).expect("an undo report serializes"))
    }

    /// What a rollback would lose each way (reads only).
    async fn preview_rollback(
        &self,
        cmd: &v1::Command,
        p: &v1::PreviewRollback,
    ) -> Result<serde_json::Value, ExecError> {
        let (served, config) = self.db(&cmd.database)?;
        let bundle = p.bundle.clone().unwrap_or_default();
        let migrations = runway_proto::bundle::migrations(&bundle)?;
        let manifest =
            if p.backup.is_empty() { None } else { crate::backup_ops::show(&config, &p.backup).await.ok() };
        let pg_dump = config.tool("pg_dump");
        Ok(undo::preview(&self.rollout_database(cmd, &served, &pg_dump), &migrations, manifest.as_ref())
            .await)
    }

    /// Runs the restart hook with the app version, then waits for the app
    /// to be healthy and runs the smoke checks.
    async fn restart(&self, r: &v1::Restart, progress: &Progress) -> Result<serde_json::Value, ExecError> {
        let app = self.app()?;
        let version = if r.app_version.is_empty() { self.app_version() } else { r.app_version.clone() };
        let hook_started = std::time::Instant::now();
        self.hook(app, "restart", &app.restart, &[("RUNWAY_APP_VERSION", &version)], progress).await?;
        self.deployed(&version, progress).await;
        let hook_ms = hook_started.elapsed().as_millis() as u64;
        // The checks' own time (health, then smoke), for the overhead
        // figures: what the window spent waiting on the app itself.
        let checks_started = std::time::Instant::now();
        let deadline = match r.healthy_deadline_ms {
            0 => app.health_timeout,
            ms => Duration::from_millis(ms),
        };
        let min_healthy = Duration::from_millis(r.min_healthy_ms);
        let health = smoke::healthy_for(&app.health_url, deadline, min_healthy, progress)
            .instrument(tracing::info_span!("health", otel.name = "health probe"))
            .await?;
        let smoke = smoke::run_checks(&r.smoke, &self.config, app, progress)
            .instrument(tracing::info_span!("smoke", otel.name = "smoke checks"))
            .await?;
        let health_ms = checks_started.elapsed().as_millis() as u64;
        Ok(serde_json::json!({
            "app_version": version, "health": health, "smoke": smoke, "hook_ms": hook_ms, "health_ms": health_ms
        }))
    }

    /// Records that the restart hook deployed `version`: what this agent
    /// reports from now on, also after it restarts, healthy or not (it is
    /// what the host runs). A record that cannot be written fails nothing
    /// (the app already runs `version`) but is reported: after an agent
    /// restart the host would report what it deployed before.
    async fn deployed(&self, version: &str, progress: &Progress) {
        if version.is_empty() {
            return;
        }
        *self.app_version.lock().expect("app version lock") = version.to_owned();
        if let Err(e) = crate::deployed::save(&self.config.state_dir, version).await {
            tracing::error!(error = %e, version, "cannot record the deployed app version");
            progress
                .emit("version", format!("warning: cannot record that version {version} was deployed: {e}"));
        }
    }

    /// Runs hook `name` with its declared environment plus `extra`
    /// `RUNWAY_*` variables (see [`crate::config::AppConfig::hook_environment`]).
    async fn hook(
        &self,
        app: &crate::config::AppConfig,
        name: &str,
        argv: &[String],
        extra: &[(&str, &str)],
        progress: &Progress,
    ) -> Result<(), hooks::HookError> {
        let env = app.hook_environment(&self.config, name, extra);
        let hook = hooks::Hook { name, argv, env: &env, timeout: app.hook_timeout };
        hooks::run_hook(&hook, progress)
            .instrument(tracing::info_span!("hook", otel.name = %format!("hook {name}")))
            .await
    }

    fn db_role(&self) -> Result<(), ExecError> {
        if self.config.has_role(Role::Db) { Ok(()) } else { Err(ExecError::WrongRole("db")) }
    }

    /// The database a command names (empty: the only one) and its backup
    /// settings (see [`crate::databases`]).
    fn db(
        &self,
        database: &str,
    ) -> Result<(crate::databases::Served, runway_engine::backup::BackupConfig), ExecError> {
        self.db_role()?;
        let served = crate::databases::resolve(&self.config, database)?;
        let backup =
            crate::databases::backup_config(&self.config, &served.name).ok_or(ExecError::WrongRole("db"))?;
        Ok((served, backup))
    }

    /// The migrations of a bundle that changes the database, once the
    /// operator's signature over it and the accepted Danger rules checks out.
    fn signed_migrations(
        &self,
        (bundle, rollout_id): (Option<&v1::Bundle>, &str),
        allow_danger: &[String],
        signature: Option<&v1::DeploySignature>,
        progress: &Progress,
    ) -> Result<Vec<runway_proto::bundle::MigrationFile>, ExecError> {
        let bundle = bundle.cloned().unwrap_or_default();
        self.check_signature(
            (&bundle, rollout_id),
            allow_danger,
            signature,
            signed::Need::Required,
            progress,
        )?;
        Ok(runway_proto::bundle::migrations(&bundle)?)
    }

    /// Where `cmd`'s rollout keeps its state for `served`.
    fn rollout_database<'a>(
        &'a self,
        cmd: &'a v1::Command,
        served: &'a crate::databases::Served,
        pg_dump: &'a std::path::Path,
    ) -> undo::RolloutDatabase<'a> {
        undo::RolloutDatabase {
            state_dir: &self.config.state_dir,
            rollout_id: &cmd.rollout_id,
            database: &served.name,
            url: &served.url,
            pg_dump,
        }
    }

    fn app(&self) -> Result<&crate::config::AppConfig, ExecError> {
        match &self.config.app {
            Some(app) if self.config.has_role(Role::App) => Ok(app),
            _ => Err(ExecError::WrongRole("app")),
        }
    }

    /// A progress handle that numbers events of one command from 1.
    fn progress_for(&self, command_id: &str) -> Progress {
        let outbox = self.outbox.clone();
        let command_id = command_id.to_owned();
        let redactor = Arc::clone(&self.redactor);
        let seq = AtomicU64::new(0);
        Progress::new(move |update| {
            let event = CommandEvent {
                command_id: command_id.clone(),
                seq: seq.fetch_add(1, Ordering::SeqCst) + 1,
                phase: update.phase,
                message: redactor.redact(&update.message),
                counters: update.counters.map(|c| v1::Counters {
                    done: c.done,
                    total: c.total,
                    unit: c.unit.into(),
                }),
                unix_ms: runway_proto::unix_ms_now(),
            };
            let _ = outbox.send(AgentMessage { kind: Some(agent_message::Kind::Event(event)) });
        })
    }

    fn send_result(&self, result: CommandResult) {
        let _ = self.outbox.send(AgentMessage { kind: Some(agent_message::Kind::Result(result)) });
    }
}

/// The action's name as journaled and logged.
pub fn action_name(cmd: &v1::Command) -> &'static str {
    match &cmd.action {
        Some(command::Action::Preflight(_)) => "preflight",
        Some(command::Action::Backup(_)) => "backup",
        Some(command::Action::Migrate(_)) => "migrate",
        Some(command::Action::MigrateDown(_)) => "migrate_down",
        Some(command::Action::PreviewRollback(_)) => "preview_rollback",
        Some(command::Action::MaintenanceOn(_)) => "maintenance_on",
        Some(command::Action::MaintenanceOff(_)) => "maintenance_off",
        Some(command::Action::Restart(_)) => "restart",
        Some(command::Action::ListBackups(_)) => "list_backups",
        Some(command::Action::ShowBackup(_)) => "show_backup",
        Some(command::Action::VerifyBackup(_)) => "verify_backup",
        Some(command::Action::RestoreBackup(_)) => "restore_backup",
        Some(command::Action::ReleaseBackup(_)) => "release_backup",
        Some(command::Action::Smoke(_)) => "smoke",
        Some(command::Action::Watch(_)) => "watch",
        None => "unknown",
    }
}

/// The `outcome` label of a result's outcome.
fn outcome_name(outcome: i32) -> &'static str {
    match CommandOutcome::try_from(outcome) {
        Ok(CommandOutcome::Succeeded) => "succeeded",
        Ok(CommandOutcome::Refused) => "refused",
        _ => "failed",
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
