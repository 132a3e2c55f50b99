//! The preflight command: what a host checks before a rollout changes
//! anything, and the facts it reports (the plan, the danger gate, disk).

use runway_engine::backup::BackupConfig;
use runway_engine::database::Database;
use runway_engine::progress::Progress;
use runway_engine::redact::redact_urls;
use runway_engine::{backup, migrate};
use runway_proto::v1;

use super::{ExecError, Executor, short};
use crate::config::Role;
use crate::health;

impl Executor {
    /// Checks that this host can do its part of the rollout. Changes
    /// nothing but a probe file in the backup dir (written and removed).
    /// The facts found are the result; when a check stops the command, they
    /// travel with the error ([`ExecError::PreflightStopped`]).
    pub(super) async fn preflight(
        &self,
        p: &v1::Preflight,
        cmd: &v1::Command,
        progress: &Progress,
    ) -> Result<(serde_json::Value, Option<v1::MigrationPlan>), ExecError> {
        let mut facts = serde_json::Map::new();
        let mut plan = None;
        match self.preflight_checks(p, cmd, progress, &mut facts, &mut plan).await {
            Ok(()) => Ok((serde_json::Value::Object(facts), plan)),
            Err(error) if facts.is_empty() => Err(error),
            Err(error) => Err(ExecError::PreflightStopped {
                error: Box::new(error),
                facts: serde_json::Value::Object(facts),
                plan: plan.map(Box::new),
            }),
        }
    }

    /// The checks of [`Self::preflight`]; each fact goes into `detail` as
    /// soon as it is known.
    async fn preflight_checks(
        &self,
        p: &v1::Preflight,
        cmd: &v1::Command,
        progress: &Progress,
        detail: &mut serde_json::Map<String, serde_json::Value>,
        typed_plan: &mut Option<v1::MigrationPlan>,
    ) -> Result<(), ExecError> {
        if self.config.has_role(Role::Db) {
            self.database_checks(p, cmd, progress, detail, typed_plan).await?;
        }
        if let Some(app) = self.config.app.as_ref().filter(|_| self.config.has_role(Role::App)) {
            let line = health::probe(&app.health_url).await.map_err(|why| {
                ExecError::Preflight(format!(
                    "app is not healthy before the rollout: {} answered {why}",
                    app.health_url
                ))
            })?;
            progress.emit("health", format!("{} healthy: {line}", app.health_url));
            detail.insert("health".into(), line.into());
        }
        Ok(())
    }

    /// A DB host's checks: the bundle and its signature, the database, the
    /// plan of the pending migrations (status, data, lint), then room for
    /// the backup.
    async fn database_checks(
        &self,
        p: &v1::Preflight,
        cmd: &v1::Command,
        progress: &Progress,
        detail: &mut serde_json::Map<String, serde_json::Value>,
        typed_plan: &mut Option<v1::MigrationPlan>,
    ) -> Result<(), ExecError> {
        let (served, backup) = self.db(&cmd.database)?;
        let url = served.url.as_str();
        detail.insert("database".into(), served.name.clone().into());
        let bundle = p.bundle.clone().unwrap_or_default();
        self.check_signature(
            (&bundle, &cmd.rollout_id),
            &p.allow_danger,
            p.signature.as_ref(),
            super::signed::Need::IfPresent,
            progress,
        )?;
        let migrations = runway_proto::bundle::migrations(&bundle)?;
        progress.emit(
            "bundle",
            format!("bundle {} holds {} migration(s)", short(&bundle.digest), migrations.len()),
        );
        let version = server_version(url).await.map_err(|e| ExecError::Preflight(redact_urls(&e)))?;
        progress.emit("database", format!("database reachable: {version}"));
        detail.insert("server_version".into(), version.into());
        let pg_dump = backup.tool("pg_dump");
        let data = self.config.migrate.predict();
        let plan =
            migrate::plan(url, &migrations, migrate::PlanOptions { pg_dump: &pg_dump, data: &data }).await?;
        let dangers = migrate::gate::unaccepted(&plan.lint, &p.allow_danger);
        crate::metrics::get().lint_findings(plan.lint.findings.iter().map(|f| &f.rule));
        detail.insert("pending".into(), plan.status.pending.clone().into());
        *typed_plan = Some(v1::MigrationPlan::from(&plan));
        progress.emit("data", data_line(&plan.data));
        progress.emit("downs", downs_line(&plan.downs));
        detail
            .insert("unaccepted_dangers".into(), serde_json::to_value(&dangers).expect("findings serialize"));
        let status = &plan.status;
        if let Some(failed) = status.failed.first() {
            return Err(ExecError::Preflight(format!(
                "migration {} failed earlier and is unresolved; fix it and run `runway migrate resolve --rolled-back {}` (or --applied) first",
                failed.name, failed.name
            )));
        }
        if status.needs_baseline {
            return Err(ExecError::Preflight(
                "the database has tables but no _prisma_migrations; baseline it with `runway migrate resolve --applied` first".into(),
            ));
        }
        for name in status.modified.iter().chain(&status.missing_locally) {
            progress.emit(
                "status",
                format!("warning: applied migration {name} was changed or is missing from the bundle"),
            );
        }
        progress.emit_counted(
            "status",
            format!("{} pending, {} applied", status.pending.len(), status.applied.len()),
            status.applied.len() as u64,
            migrations.len() as u64,
            "migrations",
        );
        // Certain to fail on the live data: refused before any downtime,
        // whatever was accepted (the fix is the data or the migration).
        if plan.data.will_fail() {
            return Err(ExecError::WillFail(migrate::plan::will_fail(&plan.data)));
        }
        progress.emit(
            "lint",
            format!(
                "{} finding(s) in the pending SQL; downtime class {:?}",
                plan.lint.findings.len(),
                plan.lint.downtime.class
            ),
        );
        if !dangers.is_empty() {
            return Err(ExecError::Dangerous(migrate::gate::refusal(&dangers)));
        }
        self.backup_checks(url, &backup, progress, detail).await
    }

    /// Room for the backup: its folder is writable and has the space, and
    /// how long it will take.
    async fn backup_checks(
        &self,
        url: &str,
        backup: &BackupConfig,
        progress: &Progress,
        detail: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ExecError> {
        check_writable(&backup.dir).await.map_err(ExecError::Preflight)?;
        progress.emit("backup_dir", format!("backup dir {} is writable", backup.dir.display()));
        let space = backup::space::preflight(url, backup).await?;
        progress.emit(
            "space",
            format!(
                "{} free for backups; a backup of this {} database needs {}",
                backup::error::human(space.free_bytes),
                backup::error::human(space.database_bytes),
                backup::error::human(space.needed_bytes)
            ),
        );
        detail.insert("space".into(), serde_json::to_value(&space).expect("space report serializes"));
        let database = Database::parse(url).map(|d| d.name().to_owned()).unwrap_or_default();
        let estimate =
            backup::estimate::estimate(backup, &self.config.environment, &database, space.database_bytes)?;
        progress.emit("backup", estimate_line(&estimate));
        detail.insert("backup".into(), serde_json::to_value(&estimate).expect("estimate serializes"));
        Ok(())
    }
}

/// One line about the checks of the live data: how many, how long, and
/// what will fail (counts and keys only: the findings never carry values).
fn data_line(data: &migrate::DataReport) -> String {
    let mut line = format!("{} check(s) of the live data in {} ms", data.checks, data.ms);
    if data.findings.is_empty() {
        line.push_str(": nothing will fail");
    }
    for f in &data.findings {
        let certainty = serde_json::to_value(f.certainty).ok().and_then(|c| c.as_str().map(str::to_owned));
        line.push_str(&format!(
            "; {} line {}: {} ({})",
            f.migration,
            f.line,
            f.message,
            certainty.unwrap_or_default()
        ));
    }
    line
}

/// One line about the pending migrations' downs and what proving them cost.
fn downs_line(downs: &migrate::DownsReport) -> String {
    if downs.downs.is_empty() {
        return "no pending migration, no down to prove".into();
    }
    let proven = downs.downs.iter().filter(|d| d.state == migrate::DownState::Proven).count();
    let mut line = format!("{proven} of {} down(s) proven in {} ms", downs.downs.len(), downs.ms);
    for d in downs.downs.iter().filter(|d| d.state != migrate::DownState::Proven) {
        line.push_str(&format!("; {}: {}", d.migration, d.state.name()));
        if !d.detail.is_empty() {
            line.push_str(&format!(" ({})", d.detail));
        }
    }
    line
}

/// One line about the backup step to expect.
fn estimate_line(e: &backup::estimate::Estimate) -> String {
    let secs = |s: Option<f64>| s.map_or_else(|| "unknown".to_owned(), |s| format!("{s:.1} s"));
    let proof = match e.proof {
        backup::Proof::InWindow => "test restore in the window, alongside the dump",
        backup::Proof::Background => "test restore after the window (the rollout waits for it)",
        backup::Proof::None => "no test restore",
    };
    let based = e.based_on.as_deref().map_or_else(|| "no earlier backup".to_owned(), |b| format!("from {b}"));
    format!(
        "backup: {proof}; expected dump {}, test restore {}, in the window {} ({based})",
        secs(e.backup_secs),
        secs(e.verify_secs),
        secs(e.window_secs)
    )
}

async fn server_version(url: &str) -> Result<String, String> {
    use sqlx::Connection;
    let database = Database::parse(url).map_err(|e| format!("invalid database URL: {e}"))?;
    let mut conn = database.connect().await.map_err(|e| format!("cannot connect to the database: {e}"))?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("cannot query the database: {e}"))?;
    let _ = conn.close().await;
    Ok(format!("PostgreSQL {version}"))
}

async fn check_writable(dir: &std::path::Path) -> Result<(), String> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| format!("backup dir {}: {e}", dir.display()))?;
    let probe = dir.join(".runway-write-test");
    tokio::fs::write(&probe, b"ok")
        .await
        .map_err(|e| format!("backup dir {} is not writable: {e}", dir.display()))?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(())
}
