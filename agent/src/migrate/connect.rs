//! Connecting the way Prisma does: the same `DATABASE_URL`, including
//! Prisma's own query parameters (`?schema=` sets the search path where
//! `_prisma_migrations` and unqualified objects live).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::MigrateError;
use crate::redact::redact_urls;

/// Parameters Prisma understands that the PostgreSQL driver does not.
const PRISMA_ONLY_PARAMS: &[&str] = &[
    "schema",
    "connection_limit",
    "pool_timeout",
    "pgbouncer",
    "socket_timeout",
    "statement_cache_size",
    "connect_timeout",
    "sslaccept",
    "sslidentity",
    "sslpassword",
];

/// One open session with the settings every migrations command wants.
pub(crate) struct Session {
    pub conn: PgConnection,
    /// The schema from `?schema=`, or `public`.
    pub schema: String,
}

/// A parsed database URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    options: PgConnectOptions,
    schema: Option<String>,
    connect_timeout: Duration,
}

impl Target {
    pub fn parse(database_url: &str) -> Result<Self, MigrateError> {
        let bad = |e: &dyn std::fmt::Display| MigrateError::InvalidUrl(redact_urls(&e.to_string()));
        let mut url = url::Url::parse(database_url).map_err(|e| bad(&e))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(MigrateError::InvalidUrl(format!(
                "scheme {:?}: runway only migrates PostgreSQL (postgresql://…)",
                url.scheme()
            )));
        }
        let mut schema = None;
        let mut connect_timeout = Duration::from_secs(10);
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                match &*k {
                    "schema" if !v.is_empty() => schema = Some(v.to_string()),
                    "connect_timeout" => {
                        if let Ok(secs) = v.parse::<u64>() {
                            connect_timeout = Duration::from_secs(secs.max(1));
                        }
                    }
                    _ => {}
                }
                (!PRISMA_ONLY_PARAMS.contains(&&*k)).then(|| (k.into_owned(), v.into_owned()))
            })
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        let mut options =
            PgConnectOptions::from_str(url.as_str()).map_err(|e| bad(&e))?.disable_statement_logging();
        if options.get_application_name().is_none() {
            options = options.application_name("runway");
        }
        Ok(Self { options, schema, connect_timeout })
    }

    /// The schema migrations bookkeeping lives in.
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    /// Opens a session and points its search path at the schema.
    pub async fn connect(&self) -> Result<Session, MigrateError> {
        let conn = tokio::time::timeout(self.connect_timeout, self.options.connect())
            .await
            .map_err(|_| {
                MigrateError::Connect(format!(
                    "no answer from {}:{} within {}s",
                    self.options.get_host(),
                    self.options.get_port(),
                    self.connect_timeout.as_secs()
                ))
            })?
            .map_err(|e| MigrateError::Connect(redact_urls(&e.to_string())))?;
        let mut session = Session { conn, schema: self.schema().to_owned() };
        if let Some(schema) = &self.schema {
            sqlx::Executor::execute(
                &mut session.conn,
                sqlx::raw_sql(&format!("SET search_path TO {}", quote_ident(schema))),
            )
            .await
            .map_err(|e| MigrateError::db("setting search_path from ?schema=", e))?;
        }
        Ok(session)
    }
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
    fn understands_prisma_parameters() {
        let t = Target::parse(
            "postgresql://app:pw@db:5433/app?schema=tenant1&connection_limit=5&sslmode=disable",
        )
        .unwrap();
        assert_eq!(t.schema(), "tenant1");
        assert_eq!(t.options.get_port(), 5433);
        assert_eq!(t.options.get_database(), Some("app"));
        let t = Target::parse("postgres://app@db/app").unwrap();
        assert_eq!(t.schema(), "public");
        assert!(matches!(Target::parse("mysql://x@y/z"), Err(MigrateError::InvalidUrl(_))));
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
