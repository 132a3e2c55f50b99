//! Connecting the way Prisma does: the same `DATABASE_URL`, including
//! Prisma's own query parameters (`?schema=` sets the search path where
//! `_prisma_migrations` and unqualified objects live).

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::MigrateError;
use crate::database::Database;

/// One open session with the settings every migrations command wants.
pub(crate) struct Session {
    pub conn: PgConnection,
    /// The schema from `?schema=`, or `public`.
    pub schema: String,
    /// The database's name (`db.namespace` in traces).
    pub database: String,
}

/// Parses `database_url` for a migrations command.
pub(crate) fn parse(database_url: &str) -> Result<Database, MigrateError> {
    Database::parse(database_url).map_err(|e| MigrateError::InvalidUrl(e.to_string()))
}

/// Opens a session and points its search path at the URL's `?schema=`.
pub(crate) async fn open(database: &Database) -> Result<Session, MigrateError> {
    let conn = database.connect().await.map_err(|e| MigrateError::Connect(e.to_string()))?;
    let mut session =
        Session { conn, schema: database.schema().to_owned(), database: database.name().to_owned() };
    if let Some(schema) = database.schema_param() {
        sqlx::Executor::execute(
            &mut session.conn,
            sqlx::raw_sql(&format!("SET search_path TO {}", quote_ident(schema))),
        )
        .await
        .map_err(|e| MigrateError::db("setting search_path from ?schema=", e))?;
    }
    Ok(session)
}

impl Session {
    /// Closes the session politely (releasing session-level advisory locks).
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// Quotes an identifier for SQL: `"name"` with inner quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
