//! The agent's config: who this host is and what it may do.
//!
//! The coordinator only chooses among the actions configured here, so a
//! compromised coordinator cannot make a host run anything else. Loaded from
//! TOML; `DATABASE_URL` in the environment overrides `database.url`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use runway_engine::backup::BackupConfig;
use runway_engine::migrate::MigrateConfig;

/// The whole agent config file. See `deploy/agent-db.toml` and
/// `deploy/agent-app.toml` for commented examples.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host's name, unique in its environment.
    pub name: String,
    /// The environment this host belongs to, e.g. `staging`.
    pub environment: String,
    /// gRPC addresses of every coordinator, e.g. `http://10.0.0.5:7400`.
    /// The agent finds the leader among them.
    pub coordinators: Vec<String>,
    /// `db`, `app` or both.
    pub roles: Vec<Role>,
    /// Free-form labels shown by `runway agents`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where the command journal lives.
    pub state_dir: PathBuf,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// Required for the `db` role.
    pub database: Option<DatabaseConfig>,
    /// Tuning of the migrations engine.
    #[serde(default)]
    pub migrate: MigrateConfig,
    /// Required for the `db` role.
    pub backup: Option<BackupConfig>,
    /// Required for the `app` role.
    pub app: Option<AppConfig>,
    /// `[tls]`: the runway CA, this agent's certificate (naming
    /// `runway://agent/ENVIRONMENT/NAME`, matching `environment` and
    /// `name`) and key. `insecure = true` for plain text.
    #[serde(default)]
    pub tls: runway_identity::tls::TlsFiles,
}

/// What this host is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the database: preflight, backup, migrate.
    Db,
    /// Runs the application: maintenance, restart, health.
    App,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Db => "db",
            Role::App => "app",
        }
    }
}

/// `[database]`: the database this DB host migrates and backs up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A libpq URL. Prefer setting `DATABASE_URL` in the service's
    /// environment file so the password is not in this file.
    #[serde(default)]
    pub url: String,
}

/// `[app]`: how to drive the application on an app host. Hooks are argv
/// arrays (no shell), run with the agent's environment plus
/// `RUNWAY_APP_VERSION` for the restart hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Turns maintenance mode on.
    pub maintenance_on: Vec<String>,
    /// Turns maintenance mode off.
    pub maintenance_off: Vec<String>,
    /// Deploys the given version and restarts the app.
    pub restart: Vec<String>,
    /// Polled after a restart until it answers 2xx.
    pub health_url: String,
    /// How long a restart may take to become healthy, in seconds.
    #[serde(default = "default_health_timeout_secs")]
    pub health_timeout_secs: u64,
    /// How long one hook may run, in seconds.
    #[serde(default = "default_hook_timeout_secs")]
    pub hook_timeout_secs: u64,
    /// The version running now; updated after each successful restart.
    #[serde(default)]
    pub version: String,
}

fn default_heartbeat_secs() -> u64 {
    2
}
fn default_health_timeout_secs() -> u64 {
    60
}
fn default_hook_timeout_secs() -> u64 {
    300
}

/// A config that cannot be used. Names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read agent config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("agent config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("agent config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads, applies environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        if let Ok(url) = std::env::var("DATABASE_URL")
            && let Some(db) = config.database.as_mut()
        {
            db.url = url;
        }
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        if self.environment.trim().is_empty() {
            return Err("`environment` must not be empty".into());
        }
        if self.coordinators.is_empty() {
            return Err(
                "`coordinators` must list at least one address, e.g. [\"http://10.0.0.5:7400\"]".into()
            );
        }
        if self.roles.is_empty() {
            return Err("`roles` must hold \"db\", \"app\" or both".into());
        }
        if self.has_role(Role::Db) {
            match &self.database {
                None => return Err("the db role needs a [database] table with `url`".into()),
                Some(db) if db.url.is_empty() => {
                    return Err("`database.url` is empty and DATABASE_URL is not set".into());
                }
                Some(_) => {}
            }
            match &self.backup {
                None => return Err("the db role needs a [backup] table with `dir`".into()),
                Some(backup) => backup.validate().map_err(|e| e.to_string())?,
            }
        }
        if self.has_role(Role::App) {
            let Some(app) = &self.app else {
                return Err("the app role needs an [app] table (maintenance_on, maintenance_off, restart, health_url)".into());
            };
            for (key, hook) in [
                ("maintenance_on", &app.maintenance_on),
                ("maintenance_off", &app.maintenance_off),
                ("restart", &app.restart),
            ] {
                if hook.is_empty() {
                    return Err(format!(
                        "`app.{key}` must be a command as an argv array, e.g. [\"/usr/local/bin/hook\"]"
                    ));
                }
            }
            if !app.health_url.starts_with("http://") {
                return Err(format!("`app.health_url` must be an http:// URL, got {:?}", app.health_url));
            }
        }
        Ok(())
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The database URL of a DB host.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const APP: &str = r#"
name = "app-1"
environment = "staging"
coordinators = ["http://127.0.0.1:7400"]
roles = ["app"]
state_dir = "/tmp/x"
[app]
maintenance_on = ["/bin/true"]
maintenance_off = ["/bin/true"]
restart = ["/bin/true"]
health_url = "http://127.0.0.1:8080/health"
"#;

    #[test]
    fn accepts_a_complete_app_config() {
        let config = load(APP).unwrap();
        assert_eq!(config.roles, [Role::App]);
        assert_eq!(config.app.unwrap().health_timeout_secs, 60);
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = load(&APP.replace("environment = \"staging\"\n", "")).unwrap_err().to_string();
        assert!(err.contains("missing field `environment`"), "{err}");
        let err = load(&APP.replace("restart = [\"/bin/true\"]\n", "")).unwrap_err().to_string();
        assert!(err.contains("restart"), "{err}");
    }

    #[test]
    fn db_role_needs_a_database() {
        let err = load(&APP.replace("roles = [\"app\"]", "roles = [\"db\"]")).unwrap_err().to_string();
        assert!(err.contains("[database]"), "{err}");
    }

    #[test]
    fn the_example_configs_in_deploy_load() {
        for name in ["agent-db.toml", "agent-app.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!config.roles.is_empty(), "{name}");
        }
    }
}
