//! Scratch databases: a test restore's copy (`runway_verify_…`), a
//! replace-mode restore's copy before it is swapped in (`runway_restore_…`),
//! and the database a swap replaced, until it is dropped (`runway_old_…`).
//!
//! Each gets its kind's prefix and a random suffix, and from the statement
//! after its `CREATE DATABASE` on, a marker as its `COMMENT`:
//!
//! ```text
//! runway scratch: verify 2026-12-07T10:00:00Z owner=db-1.example:/var/backups/runway
//! ```
//!
//! A name alone could be a user's; [`super::sweep()`] drops only databases
//! with the prefix *and* the marker of its own owner (this host and backup
//! dir), so it never takes a user's database for a leftover.
//!
//! Every statement about a scratch database after it was created runs on
//! a connection opened for that statement: one opened before a dump or
//! restore of hours may have been closed meanwhile by the server or a
//! middlebox, and a cleanup that reuses it leaks a full copy of production.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Connection, PgConnection};

use super::config::BackupConfig;
use super::error::BackupError;
use super::pgrestore;
use crate::database::Database;

/// What a scratch database is for; its name starts with [`Kind::prefix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A test restore's copy.
    Verify,
    /// A replace-mode restore's copy before the swap.
    Restore,
    /// The database a swap renamed away, before it is dropped.
    Old,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Verify, Kind::Restore, Kind::Old];

    /// The start of its name.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Verify => "runway_verify_",
            Self::Restore => "runway_restore_",
            Self::Old => "runway_old_",
        }
    }

    /// Its word in the marker.
    pub fn word(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Restore => "restore",
            Self::Old => "old",
        }
    }

    /// The kind whose prefix `name` has.
    pub fn of_name(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| name.starts_with(k.prefix()))
    }
}

/// The start of every marker.
pub const MARKER_PREFIX: &str = "runway scratch: ";

/// Attempts to drop a scratch database, each on a new connection.
const DROP_ATTEMPTS: u32 = 3;

/// A new name of `kind`: its prefix and 12 random hex digits.
pub fn new_name(kind: Kind) -> String {
    format!("{}{}", kind.prefix(), &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Who makes scratch databases with `config`: this host's name and the
/// backup dir (absolute), e.g. `db-1:/var/backups/runway`. Two agents on one
/// database server never sweep each other's.
pub fn owner(config: &BackupConfig) -> String {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let dir = std::path::absolute(&config.dir).unwrap_or_else(|_| config.dir.clone());
    format!("{host}:{}", dir.display())
}

/// The marker of a scratch database of `kind` made by `owner` at `at`.
pub fn marker(kind: Kind, owner: &str, at: DateTime<Utc>) -> String {
    format!("{MARKER_PREFIX}{} {} owner={owner}", kind.word(), at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// A marker read back: kind, when, whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub kind: Kind,
    pub created_at: DateTime<Utc>,
    pub owner: String,
}

/// Reads a database comment as a marker; `None` when it is not one.
pub fn parse_marker(comment: &str) -> Option<Marker> {
    let rest = comment.strip_prefix(MARKER_PREFIX)?;
    let mut parts = rest.splitn(3, ' ');
    let word = parts.next()?;
    let kind = Kind::ALL.into_iter().find(|k| k.word() == word)?;
    let created_at = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
    let owner = parts.next()?.strip_prefix("owner=")?.to_owned();
    Some(Marker { kind, created_at, owner })
}

/// A scratch database that exists and carries its marker.
#[derive(Debug)]
pub struct ScratchDb {
    pub name: String,
    /// The scratch database itself (the server's URL, another database).
    pub target: Database,
    /// Where `CREATE` / `DROP DATABASE` run: a database on the same server.
    admin: Database,
}

impl ScratchDb {
    /// Creates a scratch database of `kind` from `admin` (a database on the
    /// server), marked as runway's. The connection is closed again at once.
    pub async fn create(admin: &Database, kind: Kind, config: &BackupConfig) -> Result<Self, BackupError> {
        let name = new_name(kind);
        let mut conn = connect(admin).await?;
        pgrestore::create_database(&mut conn, &name).await?;
        let marked = set_comment(&mut conn, &name, Some(&marker(kind, &owner(config), Utc::now()))).await;
        if let Err(e) = marked {
            // Unmarked, no sweep would ever take it: drop it now (the
            // connection may be what failed).
            drop(conn);
            let _ = drop_fresh(admin, &name).await;
            return Err(e);
        }
        let _ = conn.close().await;
        Ok(Self { target: admin.with_database(&name), admin: admin.clone(), name })
    }

    /// Where `CREATE` / `DROP DATABASE` about it run.
    pub fn admin(&self) -> &Database {
        &self.admin
    }

    /// Drops it; see [`drop_fresh`].
    pub async fn drop_it(self) -> Result<(), BackupError> {
        drop_fresh(&self.admin, &self.name).await
    }
}

/// Opens a connection for one cleanup or catalog statement, waiting at most
/// the URL's `connect_timeout`.
pub async fn connect(admin: &Database) -> Result<PgConnection, BackupError> {
    admin.connect().await.map_err(|e| BackupError::db(admin.name(), "connecting", e))
}

/// `DROP DATABASE IF EXISTS name WITH (FORCE)` on a connection opened now
/// from `admin`, tried three times (a server restarting, a
/// connection refused once). The error names the database and how it goes
/// away later.
pub async fn drop_fresh(admin: &Database, name: &str) -> Result<(), BackupError> {
    let mut last = None;
    for attempt in 0..DROP_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        let dropped = async {
            let mut conn = connect(admin).await?;
            pgrestore::drop_database(&mut conn, name).await?;
            let _ = conn.close().await;
            Ok::<_, BackupError>(())
        };
        match dropped.await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(BackupError::ScratchLeft {
        database: name.to_owned(),
        error: last.map(|e| e.to_string()).unwrap_or_default(),
    })
}

/// `COMMENT ON DATABASE name IS text` (`None`: no comment), quoted by the server.
pub async fn set_comment(conn: &mut PgConnection, name: &str, text: Option<&str>) -> Result<(), BackupError> {
    let statement: String =
        sqlx::query_scalar("SELECT format('COMMENT ON DATABASE %I IS %L', $1::text, $2::text)")
            .bind(name)
            .bind(text)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| BackupError::db(name, "marking the database", e))?;
    sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&statement))
        .await
        .map_err(|e| BackupError::db(name, "marking the database", e))?;
    Ok(())
}

/// The comment on database `name`, if it exists and has one.
pub async fn comment(conn: &mut PgConnection, name: &str) -> Result<Option<String>, BackupError> {
    let found: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| BackupError::db(name, "reading the database's comment", e))?;
    Ok(found.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_markers() {
        for kind in Kind::ALL {
            let name = new_name(kind);
            assert_eq!(Kind::of_name(&name), Some(kind));
            assert_eq!(name.len(), kind.prefix().len() + 12);
            let at = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z").expect("time").with_timezone(&Utc);
            let text = marker(kind, "db-1:/var/backups/run way", at);
            assert_eq!(
                parse_marker(&text),
                Some(Marker { kind, created_at: at, owner: "db-1:/var/backups/run way".into() })
            );
        }
        assert_eq!(
            marker(Kind::Verify, "h:/b", DateTime::<Utc>::UNIX_EPOCH),
            "runway scratch: verify 1970-01-01T00:00:00Z owner=h:/b"
        );
        assert_eq!(Kind::of_name("app"), None);
        for not_one in [
            "",
            "runway scratch:",
            "runway scratch: verify",
            "runway scratch: nope 2026-12-07T10:00:00Z owner=x",
            "runway scratch: verify yesterday owner=x",
            "runway scratch: verify 2026-12-07T10:00:00Z x",
            "a user's note",
        ] {
            assert_eq!(parse_marker(not_one), None, "{not_one:?}");
        }
    }

    #[test]
    fn the_owner_is_this_host_and_the_absolute_backup_dir() {
        let owner = owner(&BackupConfig::new("/var/backups/runway"));
        assert!(
            owner.ends_with(":/var/backups/runway") && owner.len() > ":/var/backups/runway".len(),
            "{owner}"
        );
    }
}
