//! [`ConnParams`]: a `postgres://` URL split into its parts, so the password
//! reaches `pg_dump`/`pg_restore` through `PGPASSWORD` (never argv, which
//! `ps` shows) and reaches sqlx without re-parsing the URL.

use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::process::Command;

use super::error::BackupError;

/// Connection parameters of one database.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// Host name, IP address or unix socket directory (starts with `/`).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    password: Option<String>,
    pub database: Option<String>,
    /// `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `application_name`,
    /// `options`, `connect_timeout`: handed to the tools as `PG*` variables.
    pub params: Vec<(String, String)>,
    /// Prisma's `?schema=`: where `_prisma_migrations` lives. Not a libpq parameter.
    pub schema: Option<String>,
}

/// Stand-in host while parsing a URL without one.
const NO_HOST: &str = "runway-no-host.invalid";

/// Query parameters libpq understands, with the environment variable for each.
const PARAM_ENV: &[(&str, &str)] = &[
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

impl FromStr for ConnParams {
    type Err = BackupError;

    fn from_str(url: &str) -> Result<Self, BackupError> {
        // libpq accepts `postgres://user@/db?host=/socket/dir`; the url crate
        // wants a host there, so parse with a placeholder and drop it again.
        let (parsed, placeholder) = match url::Url::parse(url) {
            Err(url::ParseError::EmptyHost) => match url.split_once("@/") {
                Some((head, tail)) => (url::Url::parse(&format!("{head}@{NO_HOST}/{tail}")), true),
                None => (Err(url::ParseError::EmptyHost), false),
            },
            other => (other, false),
        };
        let parsed = parsed.map_err(|e| BackupError::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(BackupError::Url(format!(
                "scheme `{}` is not postgres:// or postgresql://",
                parsed.scheme()
            )));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let mut conn = ConnParams {
            host: parsed.host_str().filter(|_| !placeholder).map(decode).and_then(nonempty),
            port: parsed.port(),
            user: nonempty(decode(parsed.username())),
            password: parsed.password().map(decode),
            database: nonempty(decode(parsed.path().trim_start_matches('/'))),
            params: Vec::new(),
            schema: None,
        };
        for (key, value) in parsed.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "host" => conn.host = Some(value),
                "port" => {
                    conn.port = Some(
                        value
                            .parse()
                            .map_err(|_| BackupError::Url(format!("port `{value}` is not a number")))?,
                    )
                }
                "user" => conn.user = Some(value),
                "password" => conn.password = Some(value),
                "dbname" => conn.database = Some(value),
                "schema" => conn.schema = Some(value),
                key if PARAM_ENV.iter().any(|(k, _)| *k == key) => conn.params.push((key.to_owned(), value)),
                // Prisma and driver-specific parameters (connection_limit, pgbouncer, …)
                // mean nothing to libpq; dropping them keeps pg_dump from refusing the URL.
                _ => {}
            }
        }
        Ok(conn)
    }
}

impl ConnParams {
    /// The database name, or the user name libpq falls back to.
    pub fn database_name(&self) -> String {
        self.database.clone().or_else(|| self.user.clone()).unwrap_or_else(|| "postgres".to_owned())
    }

    /// The same server, another database (scratch databases, `postgres`).
    pub fn with_database(&self, database: &str) -> Self {
        Self { database: Some(database.to_owned()), ..self.clone() }
    }

    /// The password, for redacting it from tool output.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Sets the `PG*` environment of a `pg_dump`/`pg_restore` command; the
    /// password goes through `PGPASSWORD`, never argv.
    pub fn apply_env(&self, cmd: &mut Command) {
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        let mut set = |var: &str, value: &Option<String>| {
            if let Some(value) = value {
                cmd.env(var, value);
            }
        };
        set("PGHOST", &self.host);
        set("PGPORT", &self.port.map(|p| p.to_string()));
        set("PGUSER", &self.user);
        set("PGPASSWORD", &self.password);
        set("PGDATABASE", &self.database);
        for (key, value) in &self.params {
            if let Some((_, var)) = PARAM_ENV.iter().find(|(k, _)| k == key) {
                cmd.env(var, value);
            }
        }
    }

    /// Options for sqlx, built from the same parts.
    pub fn connect_options(&self) -> Result<PgConnectOptions, BackupError> {
        let mut opts = PgConnectOptions::new_without_pgpass();
        if let Some(host) = &self.host {
            opts = if host.starts_with('/') { opts.socket(PathBuf::from(host)) } else { opts.host(host) };
        }
        if let Some(port) = self.port {
            opts = opts.port(port);
        }
        if let Some(user) = &self.user {
            opts = opts.username(user);
        }
        if let Some(password) = &self.password {
            opts = opts.password(password);
        }
        opts = opts.database(&self.database_name());
        for (key, value) in &self.params {
            opts = match key.as_str() {
                "sslmode" => opts.ssl_mode(
                    value
                        .parse::<PgSslMode>()
                        .map_err(|_| BackupError::Url(format!("sslmode `{value}` is unknown")))?,
                ),
                "sslrootcert" => opts.ssl_root_cert(value.as_str()),
                "sslcert" => opts.ssl_client_cert(value.as_str()),
                "sslkey" => opts.ssl_client_key(value.as_str()),
                "application_name" => opts.application_name(value),
                "options" => opts.options(parse_options(value)),
                _ => opts,
            };
        }
        Ok(opts.application_name("runway-backup"))
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

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("params", &self.params)
            .field("schema", &self.schema)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_tcp_url() {
        let c: ConnParams = "postgres://app:s%40cret@db.internal:6432/orders?sslmode=require&schema=billing&connection_limit=5"
            .parse()
            .expect("valid");
        assert_eq!(c.host.as_deref(), Some("db.internal"));
        assert_eq!(c.port, Some(6432));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password(), Some("s@cret"));
        assert_eq!(c.database_name(), "orders");
        assert_eq!(c.schema.as_deref(), Some("billing"));
        assert_eq!(c.params, vec![("sslmode".to_owned(), "require".to_owned())]);
        assert!(!format!("{c:?}").contains("s@cret"));
    }

    #[test]
    fn splits_a_unix_socket_url() {
        let c: ConnParams = "postgresql://postgres@/app?host=/tmp/sock&port=5999".parse().expect("valid");
        assert_eq!(c.host.as_deref(), Some("/tmp/sock"));
        assert_eq!(c.port, Some(5999));
        let c: ConnParams = "postgres://%2Fvar%2Frun%2Fpg/app".parse().expect("valid");
        assert_eq!(c.host.as_deref(), Some("/var/run/pg"));
    }

    #[test]
    fn refuses_other_schemes() {
        assert!("mysql://a@b/c".parse::<ConnParams>().is_err());
    }

    #[test]
    fn options_for_sqlx() {
        assert_eq!(
            parse_options("-c search_path=x -cwork_mem=4MB"),
            vec![("search_path".into(), "x".into()), ("work_mem".into(), "4MB".into())]
        );
    }
}
