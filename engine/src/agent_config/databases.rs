//! The databases a DB agent serves, by name.
//!
//! Two forms of config:
//!
//! - `[database] url = …`: one database, named after the database in its
//!   URL (`postgres://…/orders` is `orders`; libpq's fallback, `postgres`,
//!   when the URL names none). `DATABASE_URL` overrides its `url`.
//! - `[databases.NAME] url = …`: several. Names are letters, digits, `_`
//!   and `-` (they appear in command ids, targets `host/NAME` and paths).
//!
//! Every DB command names its database (`Command.database`); empty means
//! the agent's only one, so a coordinator that names none keeps working
//! with single-database agents. With several databases, each one's backups
//! live in `backup.dir/NAME` and under `NAME/` of the object store's
//! prefix, so names, retention and pins of two databases never mix; all
//! share the other `[backup]` settings. With one, `backup.dir` as before.

use crate::backup::BackupConfig;
use crate::database::Database;
use runway_daemon::config_check::{Files, Problems};

use super::{Config, DatabaseConfig};

/// Longest database name accepted in `[databases.NAME]`.
const MAX_NAME: usize = 63;

/// One database this agent serves.
#[derive(Clone, PartialEq, Eq)]
pub struct Served {
    /// Its name: what commands and the coordinator call it.
    pub name: String,
    /// Its libpq URL (holds the password: never log it).
    pub url: String,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("name", &self.name)
            .field("url", &crate::redact::redact_urls(&self.url))
            .finish()
    }
}

/// A command names a database this agent cannot run it against. Nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    #[error("this agent serves no database named {name:?}; it serves: {served}")]
    Unknown { name: String, served: String },
    #[error("this agent serves several databases ({served}); the command must name one")]
    Unnamed { served: String },
    #[error("this agent serves no database; check its [database] or [databases.NAME] tables")]
    None,
}

/// Every database of `config`, in name order (`[database]`'s one alone).
pub fn served(config: &Config) -> Vec<Served> {
    if let Some(db) = &config.database {
        return vec![Served { name: single_name(db), url: db.url.clone() }];
    }
    config.databases.iter().map(|(name, db)| Served { name: name.clone(), url: db.url.clone() }).collect()
}

/// The names the agent registers with.
pub fn names(config: &Config) -> Vec<String> {
    served(config).into_iter().map(|s| s.name).collect()
}

/// The database a command names: `name`, or the only one when empty.
pub fn resolve(config: &Config, name: &str) -> Result<Served, DatabaseError> {
    let served = served(config);
    let list = || served.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    match (name, served.as_slice()) {
        (_, []) => Err(DatabaseError::None),
        ("", [one]) => Ok(one.clone()),
        ("", _) => Err(DatabaseError::Unnamed { served: list() }),
        (name, all) => all
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| DatabaseError::Unknown { name: name.to_owned(), served: list() }),
    }
}

/// The backup settings of database `name` (see the module doc): its own
/// dir and object-store prefix when the agent serves several.
pub fn backup_config(config: &Config, name: &str) -> Option<BackupConfig> {
    let mut backup = config.backup.clone()?;
    if config.database.is_none() && !config.databases.is_empty() {
        backup.dir = backup.dir.join(name);
        if let Some(store) = backup.object_store.as_mut() {
            let prefix = store.prefix.trim_matches('/');
            store.prefix = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") };
        }
    }
    Some(backup)
}

/// The backup settings of every database (pins and retention of each).
pub fn all_backup_configs(config: &Config) -> Vec<BackupConfig> {
    served(config).iter().filter_map(|s| backup_config(config, &s.name)).collect()
}

/// Checks the databases of a DB agent: the tables, their names, and that
/// every URL parses as the engine will parse it to connect (and, with
/// [`Files::Check`], that the certificate files it names are readable).
pub fn validate(config: &Config, files: Files, problems: &mut Problems) {
    match (&config.database, config.databases.is_empty()) {
        (None, true) => problems.add(
            "[database]",
            "the db role needs a [database] table with `url` (or [databases.NAME] tables with `url`)",
        ),
        (Some(_), false) => problems.add(
            "[database]",
            "give either one [database] table or [databases.NAME] tables, not both; move [database] to \
             [databases.NAME]",
        ),
        (Some(db), true) if db.url.is_empty() => {
            problems.add("[database] url", "is empty and DATABASE_URL is not set")
        }
        (Some(db), true) => {
            let key = if db.from_env { "DATABASE_URL (over [database] url)" } else { "[database] url" };
            check_url(key, &db.url, files, problems);
        }
        (None, false) => {
            for (name, db) in &config.databases {
                if let Err(problem) = check_name(name) {
                    problems.add(format_args!("[databases.{name:?}]"), problem);
                } else if db.url.is_empty() {
                    problems.add(format_args!("[databases.{name}] url"), "is empty");
                } else {
                    check_url(&format!("[databases.{name}] url"), &db.url, files, problems);
                }
            }
        }
    }
}

/// `url` parses the way [`Database::parse`] reads it to connect; the
/// files its `sslrootcert`, `sslcert` and `sslkey` name are readable.
/// Problems never quote the URL (it may hold a password).
fn check_url(key: &str, url: &str, files: Files, problems: &mut Problems) {
    if problems.check(key, Database::parse(url)).is_none() || files == Files::Skip {
        return;
    }
    let Ok(parsed) = url::Url::parse(url) else { return };
    for (param, value) in parsed.query_pairs() {
        // libpq's `sslrootcert=system` means the system's roots, no file.
        if matches!(param.as_ref(), "sslrootcert" | "sslcert" | "sslkey") && value != "system" {
            problems.check(
                format_args!("{key} ?{param}"),
                runway_daemon::config_check::readable_file(std::path::Path::new(value.as_ref())),
            );
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a database name is 1 to {MAX_NAME} letters, digits, `_` or `-` (it appears in command ids, targets \
             `host/NAME` and backup paths)"
        ))
    }
}

/// The name of `[database]`'s one database: the database in its URL.
fn single_name(db: &DatabaseConfig) -> String {
    Database::parse(&db.url).map(|d| d.name().to_owned()).unwrap_or_else(|_| "default".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = r#"
name = "db-2"
environment = "staging"
coordinators = ["http://127.0.0.1:7400"]
roles = ["db"]
state_dir = "/tmp/x"
tls = { insecure = true }
[backup]
dir = "/var/backups/runway"
"#;

    fn load(text: &str) -> Result<Config, String> {
        crate::agent_config::tests::load(text).map_err(|e| e.to_string())
    }

    #[test]
    fn several_databases_are_served_by_name_each_with_its_own_backup_dir() {
        let config = load(&format!(
            "{DB}[databases.orders]\nurl = \"postgres://app:pw-orders@db/orders\"\n\
             [databases.billing]\nurl = \"postgres://app:pw-billing@db/billing\"\n"
        ))
        .unwrap();
        assert_eq!(names(&config), ["billing", "orders"]);
        assert_eq!(resolve(&config, "orders").unwrap().url, "postgres://app:pw-orders@db/orders");
        let unknown = resolve(&config, "users").unwrap_err().to_string();
        assert!(unknown.contains("\"users\"") && unknown.contains("billing, orders"), "{unknown}");
        assert!(matches!(resolve(&config, ""), Err(DatabaseError::Unnamed { .. })));
        let dir = backup_config(&config, "orders").unwrap().dir;
        assert_eq!(dir, std::path::Path::new("/var/backups/runway/orders"));
        let redacted = config.redactor().redact("pw-orders pw-billing");
        assert!(!redacted.contains("pw-"), "{redacted}");
    }

    #[test]
    fn the_single_form_is_named_after_its_database_and_keeps_its_dir() {
        let config = load(&format!("{DB}[database]\nurl = \"postgres://app:pw@db/shop\"\n")).unwrap();
        assert_eq!(names(&config), ["shop"]);
        assert_eq!(resolve(&config, "").unwrap().name, "shop");
        assert_eq!(resolve(&config, "shop").unwrap().name, "shop");
        assert!(resolve(&config, "orders").is_err());
        let dir = backup_config(&config, "shop").unwrap().dir;
        assert_eq!(dir, std::path::Path::new("/var/backups/runway"));
    }

    #[test]
    fn bad_database_tables_are_refused_naming_the_key() {
        for (tables, needle) in [
            ("[databases.\"a/b\"]\nurl = \"postgres://db/x\"\n", "a database name is"),
            ("[databases.orders]\nurl = \"\"\n", "[databases.orders] url: is empty"),
            (
                "[database]\nurl = \"postgres://db/x\"\n[databases.orders]\nurl = \"postgres://db/y\"\n",
                "not both",
            ),
            ("", "[database] table"),
        ] {
            let error = load(&format!("{DB}{tables}")).unwrap_err();
            assert!(error.contains(needle), "{tables}: {error}");
        }
    }
}
