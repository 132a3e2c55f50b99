//! What backups that did not finish leave behind, removed: a process killed
//! mid-backup (SIGKILL, a power cut) never runs its cleanup, and its
//! leftovers are a full copy of production on the database server and a
//! half-written dump in the backup dir, forever.
//!
//! [`sweep`] runs where no backup of this owner can be running: at the DB
//! agent's start, before it takes commands. Even so it takes only what is
//! certainly runway's and certainly abandoned:
//!
//! - `.partial-*` folders directly under the backup dir that no process
//!   holds locked ([`super::partial`]);
//! - databases whose name has a scratch prefix (`runway_verify_`,
//!   `runway_restore_`, `runway_old_`) *and* whose comment is the marker
//!   of this owner ([`super::scratch`]), and that no session is connected
//!   to. A user database that merely looks like one (no marker, another
//!   owner's marker) is never dropped.

use std::path::PathBuf;

use serde::Serialize;
use sqlx::Row;

use super::config::BackupConfig;
use super::error::BackupError;
use super::{partial, pgrestore, scratch};
use crate::database::Database;

/// What [`sweep`] removed and what it left, with why.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SweepReport {
    /// `.partial-*` folders removed.
    pub folders: Vec<PathBuf>,
    /// Scratch databases dropped.
    pub databases: Vec<String>,
    /// Databases with a scratch prefix that were kept, each with the reason.
    pub kept: Vec<String>,
}

/// Removes abandoned `.partial-*` folders in `config.dir` and drops this
/// owner's abandoned scratch databases on the server of `server_url`;
/// logs each thing it removes. The folders are swept even when the
/// server cannot be reached (that is the error returned then).
pub async fn sweep(config: &BackupConfig, server_url: &str) -> Result<SweepReport, BackupError> {
    let dir = config.dir.clone();
    let folders = tokio::task::spawn_blocking(move || partial::remove_abandoned(&dir))
        .await
        .map_err(|e| BackupError::Internal(format!("sweep task: {e}")))??;
    let server = Database::parse(server_url)?;
    let (databases, kept) = sweep_databases(&server, &scratch::owner(config)).await?;
    Ok(SweepReport { folders, databases, kept })
}

/// Drops the scratch databases `owner` marked that no session uses.
async fn sweep_databases(server: &Database, owner: &str) -> Result<(Vec<String>, Vec<String>), BackupError> {
    let mut conn = scratch::connect(server).await?;
    let prefixes: Vec<String> =
        scratch::Kind::ALL.iter().map(|k| format!("{}%", k.prefix().replace('_', "\\_"))).collect();
    let rows = sqlx::query(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database') AS comment,
                (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) AS sessions
         FROM pg_database d WHERE d.datname LIKE ANY ($1) ORDER BY d.datname",
    )
    .bind(&prefixes)
    .fetch_all(&mut conn)
    .await
    .map_err(|e| BackupError::db(server.name(), "listing scratch databases", e))?;
    let (mut dropped, mut kept) = (Vec::new(), Vec::new());
    for row in rows {
        let name: String = row.get("datname");
        let comment: Option<String> = row.get("comment");
        let sessions: i64 = row.get("sessions");
        let marker = comment.as_deref().and_then(scratch::parse_marker);
        let keep_because = match &marker {
            None => Some("not marked as runway's scratch database: a user's".to_owned()),
            Some(m) if scratch::Kind::of_name(&name) != Some(m.kind) => {
                Some(format!("marked as {} but named otherwise", m.kind.word()))
            }
            Some(m) if m.owner != owner => Some(format!("another owner's ({})", m.owner)),
            Some(_) if sessions > 0 => Some(format!("in use ({sessions} session(s))")),
            Some(_) => None,
        };
        if let Some(why) = keep_because {
            if marker.is_some() {
                tracing::info!(database = %name, why = %why, "kept a database named like a scratch database");
            } else {
                tracing::debug!(database = %name, why = %why, "kept a database named like a scratch database");
            }
            kept.push(format!("{name}: {why}"));
            continue;
        }
        let created = marker.map(|m| m.created_at.to_rfc3339()).unwrap_or_default();
        // No FORCE: a session that connected since the listing keeps it.
        let statement = format!("DROP DATABASE IF EXISTS {}", pgrestore::ident(&name));
        match sqlx::Executor::execute(&mut conn, sqlx::raw_sql(&statement)).await {
            Ok(_) => {
                tracing::info!(database = %name, created = %created, "dropped a scratch database left by a backup that did not finish");
                dropped.push(name);
            }
            Err(e) => {
                let why = format!("dropping it failed: {}", crate::redact::redact_urls(&e.to_string()));
                tracing::warn!(database = %name, why = %why, "kept a leftover scratch database");
                kept.push(format!("{name}: {why}"));
            }
        }
    }
    let _ = sqlx::Connection::close(conn).await;
    Ok((dropped, kept))
}
