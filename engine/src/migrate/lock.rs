//! Prisma's migrations advisory lock, so that runway and `prisma migrate`
//! never run at the same time against one database.

use std::time::Duration;

use sqlx::PgConnection;

use super::MigrateError;
use super::connect::{self, Session};
use crate::database::Database;

/// The key Prisma's schema engine locks (`pg_advisory_lock(72707369)`).
pub const PRISMA_LOCK_KEY: i64 = 72707369;

/// SQLSTATE `lock_not_available`, raised when `lock_timeout` expires.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// A session on `database` that holds the lock, waited for at most
/// `timeout`; closing the session releases it.
pub(crate) async fn locked(database: &Database, timeout: Duration) -> Result<Session, MigrateError> {
    let mut session = connect::open(database).await?;
    acquire(&mut session.conn, timeout).await?;
    Ok(session)
}

/// Takes the session-level advisory lock, waiting at most `timeout`
/// (0 = try once). The wait is server-side (`lock_timeout`), so we get the
/// lock the moment the other runner lets go.
///
/// Leaves the session's `lock_timeout` at the server default; callers set
/// their own afterwards.
pub async fn acquire(conn: &mut PgConnection, timeout: Duration) -> Result<(), MigrateError> {
    let got = if timeout.is_zero() {
        sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(PRISMA_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| MigrateError::db("taking the migrations advisory lock", e))?
    } else {
        let ms = timeout.as_millis().max(1);
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&format!("SET lock_timeout = {ms}")))
            .await
            .map_err(|e| MigrateError::db("setting lock_timeout", e))?;
        let result =
            sqlx::query("SELECT pg_advisory_lock($1)").bind(PRISMA_LOCK_KEY).execute(&mut *conn).await;
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql("RESET lock_timeout"))
            .await
            .map_err(|e| MigrateError::db("resetting lock_timeout", e))?;
        match result {
            Ok(_) => true,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => false,
            Err(e) => return Err(MigrateError::db("taking the migrations advisory lock", e)),
        }
    };
    if got {
        return Ok(());
    }
    let holder = describe_holder(conn).await;
    Err(MigrateError::LockTimeout { waited_secs: timeout.as_secs(), holder })
}

/// Lets go of the lock (closing the session would too).
pub async fn release(conn: &mut PgConnection) -> Result<(), MigrateError> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PRISMA_LOCK_KEY)
        .execute(conn)
        .await
        .map_err(|e| MigrateError::db("releasing the migrations advisory lock", e))?;
    Ok(())
}

/// One line naming the session that holds the lock.
async fn describe_holder(conn: &mut PgConnection) -> String {
    type Holder = (i32, Option<String>, Option<String>, Option<String>, Option<String>);
    let row: Result<Option<Holder>, _> = sqlx::query_as(
        "SELECT l.pid, a.application_name, a.usename::text, host(a.client_addr),
                to_char(a.backend_start, 'YYYY-MM-DD\"T\"HH24:MI:SSOF')
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid::bigint = $1 AND l.objsubid = 1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          LIMIT 1",
    )
    .bind(PRISMA_LOCK_KEY)
    .fetch_optional(conn)
    .await;
    match row {
        Ok(Some((pid, app, user, addr, since))) => {
            let app = app.filter(|a| !a.is_empty()).unwrap_or_else(|| "an unnamed client".into());
            let mut line = format!("{app} (server pid {pid}");
            if let Some(user) = user {
                line.push_str(&format!(", user {user}"));
            }
            line.push_str(&format!(", from {}", addr.unwrap_or_else(|| "a local socket".into())));
            if let Some(since) = since {
                line.push_str(&format!(", connected since {since}"));
            }
            line.push(')');
            line
        }
        Ok(None) => "nobody any more (it was just released; try again)".into(),
        Err(e) => format!("unknown ({e})"),
    }
}
