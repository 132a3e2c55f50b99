//! [`Database`]: one database, parsed once from a `postgres://` URL.
//!
//! The same value opens sqlx sessions (through its [`PgConnectOptions`]) and
//! sets the environment of `pg_dump`/`pg_restore` (the password through
//! `PGPASSWORD`, never argv, which `ps` shows). It understands what Prisma's
//! `DATABASE_URL` may carry: `?schema=` (where `_prisma_migrations` lives),
//! `?connect_timeout=`, and Prisma-only parameters that the driver and libpq
//! would refuse (dropped).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use tokio::process::Command;

use crate::redact::{redact_secret, redact_urls};

/// A database URL that cannot be used. Retrying is pointless: fix the URL.
/// The message never repeats the URL (it may hold a password).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UrlError(String);

/// The database did not answer or refused the session. Retry is safe:
/// nothing was done. The message names the server, never the password.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConnectError(String);

/// One database: where it is, how to log in, and which schema Prisma uses.
#[derive(Clone)]
pub struct Database {
    /// Everything sqlx needs, built once.
    options: PgConnectOptions,
    /// Kept for `PGPASSWORD` and for redaction; sqlx has no getter for it.
    password: Option<String>,
    /// libpq parameters (`sslmode`, `sslrootcert`, …) for the tools' `PG*` variables.
    libpq: Vec<(String, String)>,
    /// Prisma's `?schema=`.
    schema: Option<String>,
    /// `?connect_timeout=` (seconds), 10 s by default.
    connect_timeout: Duration,
}

/// Stand-in host while parsing a URL without one.
const NO_HOST: &str = "runway-no-host.invalid";

/// Query parameters libpq understands, with the environment variable for each.
const LIBPQ_PARAMS: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
];

/// libpq variables that would otherwise leak in from our own environment and
/// point the tools somewhere else than the URL says.
const CLEARED_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGAPPNAME",
    "PGOPTIONS",
    "PGCONNECT_TIMEOUT",
];

impl FromStr for Database {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        // libpq accepts `postgres://user@/db?host=/socket/dir`; the url crate
        // wants a host there, so parse with a placeholder and drop it again.
        let (parsed, placeholder) = match url::Url::parse(url) {
            Err(url::ParseError::EmptyHost) => match url.split_once("@/") {
                Some((head, tail)) => (url::Url::parse(&format!("{head}@{NO_HOST}/{tail}")), true),
                None => (Err(url::ParseError::EmptyHost), false),
            },
            other => (other, false),
        };
        let parsed = parsed.map_err(|e| UrlError(redact_urls(&e.to_string())))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(UrlError(format!(
                "scheme `{}`: runway works with PostgreSQL only (postgresql://…)",
                parsed.scheme()
            )));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let mut host = parsed.host_str().filter(|_| !placeholder).map(decode).and_then(nonempty);
        let mut port = parsed.port();
        let mut user = nonempty(decode(parsed.username()));
        let mut password = parsed.password().map(decode);
        let mut database = nonempty(decode(parsed.path().trim_start_matches('/')));
        let mut libpq = Vec::new();
        let mut schema = None;
        let mut connect_timeout = Duration::from_secs(10);
        for (key, value) in parsed.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "host" => host = Some(value),
                "port" => {
                    port =
                        Some(value.parse().map_err(|_| UrlError(format!("port `{value}` is not a number")))?)
                }
                "user" => user = Some(value),
                "password" => password = Some(value),
                "dbname" => database = Some(value),
                "schema" if !value.is_empty() => schema = Some(value),
                key if LIBPQ_PARAMS.iter().any(|(k, _)| *k == key) => {
                    if key == "connect_timeout" {
                        let secs: u64 = value.parse().map_err(|_| {
                            UrlError(format!("connect_timeout `{value}` is not whole seconds"))
                        })?;
                        connect_timeout = Duration::from_secs(secs.max(1));
                    }
                    libpq.push((key.to_owned(), value));
                }
                // Prisma's and other drivers' parameters (connection_limit,
                // pgbouncer, …) mean nothing to PostgreSQL; dropping them keeps
                // the driver and pg_dump from refusing the URL.
                _ => {}
            }
        }

        let mut options = PgConnectOptions::new_without_pgpass().disable_statement_logging();
        if let Some(host) = &host {
            options =
                if host.starts_with('/') { options.socket(PathBuf::from(host)) } else { options.host(host) };
        }
        if let Some(port) = port {
            options = options.port(port);
        }
        if let Some(user) = &user {
            options = options.username(user);
        }
        if let Some(password) = &password {
            options = options.password(password);
        }
        if let Some(database) = database.as_deref().or(user.as_deref()) {
            options = options.database(database);
        }
        options = options.application_name("runway");
        for (key, value) in &libpq {
            options = match key.as_str() {
                "sslmode" => options.ssl_mode(
                    value
                        .parse::<PgSslMode>()
                        .map_err(|_| UrlError(format!("sslmode `{value}` is unknown")))?,
                ),
                "sslrootcert" => options.ssl_root_cert(value.as_str()),
                "sslcert" => options.ssl_client_cert(value.as_str()),
                "sslkey" => options.ssl_client_key(value.as_str()),
                "application_name" => options.application_name(value),
                "options" => options.options(parse_options(value)),
                _ => options,
            };
        }
        Ok(Self { options, password, libpq, schema, connect_timeout })
    }
}

impl Database {
    /// Parses a `postgres://` / `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        url.parse()
    }

    /// The database name (libpq falls back to the user name, then `postgres`).
    pub fn name(&self) -> &str {
        self.options.get_database().unwrap_or("postgres")
    }

    /// The schema `_prisma_migrations` lives in: `?schema=`, or `public`.
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    /// `?schema=` as given, `None` when the URL names none (the search path decides).
    pub fn schema_param(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// `host:port` (or the socket directory) for messages; never the password.
    pub fn server(&self) -> String {
        match self.options.get_socket() {
            Some(dir) => format!("{}:{}", dir.display(), self.options.get_port()),
            None => format!("{}:{}", self.options.get_host(), self.options.get_port()),
        }
    }

    /// The same server, another database (scratch databases, `postgres`).
    pub fn with_database(&self, database: &str) -> Self {
        Self { options: self.options.clone().database(database), ..self.clone() }
    }

    /// The password, for redacting it from tool output.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Options for sqlx.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// Opens a session, waiting at most the URL's `connect_timeout`.
    pub async fn connect(&self) -> Result<PgConnection, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.options.connect())
            .await
            .map_err(|_| {
                ConnectError(format!(
                    "no answer from {} within {}s",
                    self.server(),
                    self.connect_timeout.as_secs()
                ))
            })?
            .map_err(|e| {
                ConnectError(format!("{} ({}): {}", self.server(), self.name(), self.redact(&e.to_string())))
            })
    }

    /// `text` without this database's password, in a URL or by itself.
    pub fn redact(&self, text: &str) -> String {
        let text = redact_urls(text);
        match &self.password {
            Some(password) => redact_secret(&text, password),
            None => text,
        }
    }

    /// Sets the `PG*` environment of a `pg_dump`/`pg_restore` command so it
    /// reaches the same database as sqlx; the password goes through
    /// `PGPASSWORD`, never argv.
    pub fn apply_env(&self, cmd: &mut Command) {
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        let host = match self.options.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => self.options.get_host().to_owned(),
        };
        cmd.env("PGHOST", host)
            .env("PGPORT", self.options.get_port().to_string())
            .env("PGUSER", self.options.get_username())
            .env("PGDATABASE", self.name());
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
        for (key, value) in &self.libpq {
            if let Some((_, var)) = LIBPQ_PARAMS.iter().find(|(k, _)| k == key) {
                cmd.env(var, value);
            }
        }
    }
}

/// `-c a=b -c x=y` → `[(a, b), (x, y)]` for sqlx.
fn parse_options(options: &str) -> Vec<(String, String)> {
    options
        .split_whitespace()
        .filter(|w| *w != "-c")
        .filter_map(|w| w.trim_start_matches("-c").split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("server", &self.server())
            .field("user", &self.options.get_username())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.name())
            .field("libpq", &self.libpq)
            .field("schema", &self.schema)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(db: &Database) -> Vec<(String, String)> {
        let mut cmd = Command::new("true");
        db.apply_env(&mut cmd);
        cmd.as_std()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect()
    }

    #[test]
    fn splits_a_tcp_url_with_prisma_parameters() {
        let db = Database::parse(
            "postgres://app:s%40cret@db.internal:6432/orders?sslmode=require&schema=billing&connection_limit=5",
        )
        .expect("valid");
        assert_eq!(db.server(), "db.internal:6432");
        assert_eq!(db.options().get_username(), "app");
        assert_eq!(db.password(), Some("s@cret"));
        assert_eq!(db.name(), "orders");
        assert_eq!(db.schema(), "billing");
        assert_eq!(db.libpq, vec![("sslmode".to_owned(), "require".to_owned())]);
        assert!(!format!("{db:?}").contains("s@cret"));
        let env = env_of(&db);
        for (var, value) in [
            ("PGHOST", "db.internal"),
            ("PGPORT", "6432"),
            ("PGUSER", "app"),
            ("PGPASSWORD", "s@cret"),
            ("PGDATABASE", "orders"),
            ("PGSSLMODE", "require"),
        ] {
            assert!(env.contains(&(var.to_owned(), value.to_owned())), "{var}={value} missing in {env:?}");
        }
    }

    #[test]
    fn defaults_schema_to_public_and_database_to_user() {
        let db = Database::parse("postgres://app@db/").expect("valid");
        assert_eq!(db.schema(), "public");
        assert_eq!(db.schema_param(), None);
        assert_eq!(db.name(), "app");
        assert_eq!(db.with_database("scratch").name(), "scratch");
    }

    #[test]
    fn splits_a_unix_socket_url() {
        let db = Database::parse("postgresql://postgres@/app?host=/tmp/sock&port=5999").expect("valid");
        assert_eq!(db.server(), "/tmp/sock:5999");
        assert!(env_of(&db).contains(&("PGHOST".to_owned(), "/tmp/sock".to_owned())));
        let db = Database::parse("postgres://%2Fvar%2Frun%2Fpg/app").expect("valid");
        assert_eq!(db.options().get_socket().map(|p| p.display().to_string()), Some("/var/run/pg".into()));
    }

    #[test]
    fn refuses_what_it_cannot_use_without_echoing_the_password() {
        assert!(Database::parse("mysql://a@b/c").is_err());
        let err = Database::parse("postgres://u:hunter2@db:notaport/x").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(Database::parse("postgres://u@db/x?sslmode=sometimes").is_err());
        let err = Database::parse("postgres://u@db:x/x?password=hunter2").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_password_parameter_is_used_and_kept_out_of_debug() {
        let db = Database::parse("postgres://app@db/app?password=hunter2&sslmode=disable").expect("valid");
        assert_eq!(db.password(), Some("hunter2"));
        assert!(!format!("{db:?}").contains("hunter2"));
        assert_eq!(
            db.redact("auth failed for hunter2 at postgres://app:hunter2@db"),
            "auth failed for *** at postgres://app:***@db"
        );
    }

    #[test]
    fn options_for_sqlx() {
        assert_eq!(
            parse_options("-c search_path=x -cwork_mem=4MB"),
            vec![("search_path".into(), "x".into()), ("work_mem".into(), "4MB".into())]
        );
    }
}
