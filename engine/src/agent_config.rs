//! The agent's config: who this host is and what it may do. Here rather
//! than in the agent so that `runway config check` runs the agent's own
//! checks without linking the agent.
//!
//! The coordinator only chooses among the actions configured here, so a
//! compromised coordinator cannot make a host run anything else. Loaded from
//! TOML; `DATABASE_URL` in the environment overrides `database.url`. Checked
//! at start-up, files and hooks included ([`check`]), before the agent
//! connects anywhere.
//!
//! A DB agent serves one database (`[database] url`, named after the
//! database in its URL) or several named ones (`[databases.NAME] url`); see
//! [`databases`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_daemon::config_check::{ParseError, Renamed, duration_schema, renamed};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup::BackupConfig;
use crate::database::Database;
use crate::migrate::MigrateConfig;
use crate::redact::{Redactor, redact_urls};
pub use runway_daemon::config_check::{Files, Problems};

mod check;
pub mod databases;
pub use check::names_this_agent;

/// The keys that once counted seconds or milliseconds and are durations
/// now, still read under their old names with a warning (see
/// [`runway_daemon::config_check::renamed`]).
pub const RENAMED: [Renamed; 8] = [
    Renamed::secs("", "heartbeat_secs", "heartbeat"),
    Renamed::secs("", "signature_max_age_secs", "signature_max_age"),
    Renamed::secs("app", "health_timeout_secs", "health_timeout"),
    Renamed::secs("app", "hook_timeout_secs", "hook_timeout"),
    Renamed::secs("migrate", "advisory_lock_timeout_secs", "advisory_lock_timeout"),
    Renamed::millis("migrate", "lock_timeout_ms", "lock_timeout"),
    Renamed::millis("migrate", "statement_timeout_ms", "statement_timeout"),
    Renamed::millis("migrate", "data_check_timeout_ms", "data_check_timeout"),
];

/// The whole agent config file. See `deploy/agent-db.toml` and
/// `deploy/agent-app.toml` for commented examples. Durations are strings
/// read by `humantime_serde`: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"7d"`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
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
    /// Time between heartbeats on the stream to the coordinator (at least
    /// 1s; shorter is read as 1s).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub heartbeat: Duration,
    /// How old an operator's deploy signature may be when the DB agent
    /// runs the rollout (`"0s"`: no limit; whole seconds count). Longer
    /// than the longest approval wait plus the steps before migrate.
    /// Stops an old signed bundle from being replayed.
    #[serde(default = "default_signature_max_age", with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub signature_max_age: Duration,
    /// The one database of a DB host (or `databases`).
    pub database: Option<DatabaseConfig>,
    /// Several named databases of a DB host: `[databases.orders] url = …`.
    /// Names: letters, digits, `_` and `-`. Not together with `database`.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
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
    /// `[telemetry]`: where to serve Prometheus metrics and send trace spans, if anywhere.
    #[serde(default)]
    pub telemetry: runway_telemetry::Config,
    /// Warnings about the file (old keys read under their new names), one
    /// line each, naming the file: the agent prints them at start,
    /// `runway config check` with its result.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// What this host is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
/// `Debug` shows the URL without its password.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A libpq URL. Prefer setting `DATABASE_URL` in the service's
    /// environment file so the password is not in this file.
    #[serde(default)]
    pub url: String,
    /// Whether `url` came from `DATABASE_URL` (a problem then names that).
    #[serde(skip)]
    pub from_env: bool,
}

/// `[app]`: how to drive the application on an app host. Hooks are argv
/// arrays (no shell), run with a cleared environment: `hook_env` plus the
/// variables in [`AppConfig::hook_environment`]; never the agent's own
/// environment, which holds `DATABASE_URL` and object-store keys.
/// `Debug` shows `hook_env`'s names, not its values (a hook may need a token).
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
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
    /// How long a restart may take to become healthy (unless the
    /// environment's `restart.healthy_deadline` says otherwise).
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub health_timeout: Duration,
    /// How long one hook may run; then it is killed with its whole process
    /// group.
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub hook_timeout: Duration,
    /// The whole environment of every hook, besides the `RUNWAY_*`
    /// variables runway sets, e.g. `{ PATH = "/usr/bin:/bin", HOME =
    /// "/srv/app" }`. `PATH` is [`DEFAULT_HOOK_PATH`] unless set here.
    /// Keys starting with `RUNWAY_` are runway's and refused.
    #[serde(default)]
    pub hook_env: BTreeMap<String, String>,
    /// The version running before runway first deploys to this host
    /// (optional). Once a restart hook deployed a version, the agent
    /// reports that one instead, also after it restarts (see
    /// the agent's `deployed` module). Unknown (empty), a revert to it is refused.
    #[serde(default)]
    pub version: String,
    /// Prints the app version running now (its last non-empty line of
    /// output), as an argv array run like a hook; optional. Asked at start
    /// when runway has not deployed to this host yet, before falling back
    /// to `version`.
    #[serde(default)]
    pub version_command: Vec<String>,
    /// Commands the coordinator's smoke checks may name (`smoke = [{ name
    /// = "queue", command = "check-queue" }]`), as argv arrays run like
    /// hooks (no shell, `hook_env`, plus `RUNWAY_SMOKE_CHECK`), with the
    /// check's timeout: `smoke_commands = { check-queue = ["/usr/local/bin/check-queue"] }`.
    #[serde(default)]
    pub smoke_commands: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig").field("url", &redact_urls(&self.url)).finish()
    }
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("maintenance_on", &self.maintenance_on)
            .field("maintenance_off", &self.maintenance_off)
            .field("restart", &self.restart)
            .field("health_url", &self.health_url)
            .field("health_timeout", &self.health_timeout)
            .field("hook_timeout", &self.hook_timeout)
            .field("hook_env", &self.hook_env.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .field("version_command", &self.version_command)
            .field("smoke_commands", &self.smoke_commands)
            .finish()
    }
}

/// `PATH` of a hook when `app.hook_env` sets none.
pub const DEFAULT_HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Prefix of the variables runway itself sets for hooks.
const RUNWAY_PREFIX: &str = "RUNWAY_";

impl AppConfig {
    /// The whole environment of hook `hook` (`restart`, …) on agent `config`:
    /// `hook_env` (with a default `PATH`), then runway's own variables:
    ///
    /// - `RUNWAY_HOOK`: the hook's config key (`maintenance_on`, `maintenance_off`, `restart`);
    /// - `RUNWAY_AGENT`, `RUNWAY_ENVIRONMENT`: this agent's `name` and `environment`;
    /// - `extra`: e.g. `RUNWAY_APP_VERSION` for the restart hook (the version
    ///   to deploy, validated by the coordinator; empty keeps the current one).
    pub fn hook_environment(
        &self,
        config: &Config,
        hook: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut env = self.hook_env.clone();
        env.entry("PATH".to_owned()).or_insert_with(|| DEFAULT_HOOK_PATH.to_owned());
        let runway = [
            ("RUNWAY_HOOK", hook),
            ("RUNWAY_AGENT", config.name.as_str()),
            ("RUNWAY_ENVIRONMENT", config.environment.as_str()),
        ];
        for (key, value) in runway.iter().chain(extra) {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        env.into_iter().collect()
    }
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(2)
}
fn default_signature_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 60 * 60)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(300)
}

/// A config that cannot be used. Names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read agent config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("agent config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    /// Keys that cannot be used: every one found, each named.
    #[error("{0}")]
    Invalid(Problems),
}

impl Config {
    /// Reads `path`, applies `DATABASE_URL`, and checks every key, and with
    /// [`Files::Check`] every file, program and directory the config names:
    /// what the agent does at start-up, and `runway config check --agent`
    /// does alone. Old keys ([`RENAMED`]) are read as their new ones, each
    /// with a warning in [`Config::warnings`].
    pub fn load(path: &Path, files: Files) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        // Errors name the line and the key without quoting the line: it
        // may hold a password or a key.
        let parsed = renamed::parse::<Config>(path, &text, &RENAMED).map_err(|e| match e {
            ParseError::Toml(e) => {
                ConfigError::Parse { path: path.to_owned(), message: renamed::describe(&text, &e) }
            }
            ParseError::Renamed(problems) => ConfigError::Invalid(problems),
        })?;
        let mut config = Config { warnings: parsed.warnings, ..parsed.config };
        if let Ok(url) = std::env::var("DATABASE_URL")
            && let Some(db) = config.database.as_mut()
        {
            db.url = url;
            db.from_env = true;
        }
        check::validate(&config, path, files).map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Masks every secret this agent holds (its database password, in any
    /// form, and its object-store keys) and URL passwords in text that
    /// leaves the agent: events, results, logs.
    pub fn redactor(&self) -> Redactor {
        let passwords = databases::served(self)
            .into_iter()
            .filter_map(|served| Database::parse(&served.url).ok())
            .filter_map(|db| db.password().map(str::to_owned))
            .collect::<Vec<_>>();
        let store = self.backup.as_ref().and_then(|b| b.object_store.as_ref()).map(|s| s.secrets());
        Redactor::new(passwords.into_iter().chain(store.into_iter().flatten()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `text` as an agent config file, loaded.
    pub(crate) fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, Files::Skip)
    }

    const APP: &str = r#"
name = "app-1"
environment = "staging"
coordinators = ["http://127.0.0.1:7400"]
roles = ["app"]
state_dir = "/tmp/x"
tls = { insecure = true }
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
        assert_eq!(config.app.unwrap().health_timeout, Duration::from_secs(60));
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn durations_are_humantime_strings() {
        let text = APP.replace(
            "roles = [\"app\"]",
            "roles = [\"app\"]\nheartbeat = \"500ms\"\nsignature_max_age = \"2d\"",
        );
        let config =
            load(&format!("{text}hook_timeout = \"1m 30s\"\n[migrate]\nlock_timeout = \"5s\"\n")).unwrap();
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(config.signature_max_age, Duration::from_secs(2 * 86_400));
        assert_eq!(config.app.as_ref().unwrap().hook_timeout, Duration::from_secs(90));
        assert_eq!(config.migrate.lock_timeout, Duration::from_secs(5));
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn old_keys_still_work_with_a_deprecation_warning_naming_file_table_and_new_key() {
        let text = APP.replace("roles = [\"app\"]", "roles = [\"app\"]\nheartbeat_secs = 5");
        let config =
            load(&format!("{text}health_timeout_secs = 120\n[migrate]\nstatement_timeout_ms = 1500\n"))
                .unwrap();
        assert_eq!(config.heartbeat, Duration::from_secs(5));
        assert_eq!(config.app.as_ref().unwrap().health_timeout, Duration::from_secs(120));
        assert_eq!(config.migrate.statement_timeout, Duration::from_millis(1500));
        let warnings = config.warnings.join("\n");
        for needle in [
            "agent.toml: warning: heartbeat_secs = 5 is deprecated; write `heartbeat = \"5s\"` instead",
            "agent.toml: warning: [app] health_timeout_secs = 120 is deprecated; write `health_timeout = \"2m\"`",
            "agent.toml: warning: [migrate] statement_timeout_ms = 1500 is deprecated; write \
             `statement_timeout = \"1s500ms\"`",
        ] {
            assert!(warnings.contains(needle), "{needle:?} in:\n{warnings}");
        }
        assert_eq!(config.warnings.len(), 3, "{warnings}");
    }

    #[test]
    fn both_spellings_or_a_bad_duration_are_refused_naming_the_keys() {
        let err =
            load(&format!("{APP}hook_timeout = \"5m\"\nhook_timeout_secs = 300\n")).unwrap_err().to_string();
        assert!(
            err.contains("[app] hook_timeout_secs: both `hook_timeout` and its old spelling `hook_timeout_secs` are set"),
            "{err}"
        );
        let err = load(&format!("{APP}hook_timeout = \"10 parsecs\"\n")).unwrap_err().to_string();
        assert!(err.contains("\"10 parsecs\"") && err.contains("(key `app.hook_timeout`)"), "{err}");
        let err = load(&format!("{APP}hook_timeout_secs = \"5m\"\n")).unwrap_err().to_string();
        assert!(err.contains("[app] hook_timeout_secs: is not a whole number of seconds"), "{err}");
        let err = load(&format!("{APP}hook_timout = \"5m\"\n")).unwrap_err().to_string();
        assert!(err.contains("unknown field `hook_timout`"), "{err}");
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
    fn an_empty_hook_is_refused_at_start_up() {
        for empty in ["restart = []", "restart = [\"\"]"] {
            let err = load(&APP.replace("restart = [\"/bin/true\"]", empty)).unwrap_err().to_string();
            assert!(err.contains("[app] restart: must be a command"), "{empty}: {err}");
        }
    }

    #[test]
    fn hooks_get_the_declared_environment_and_runways_variables() {
        let config = load(APP).unwrap();
        let app = config.app.as_ref().unwrap();
        let env = app.hook_environment(&config, "restart", &[("RUNWAY_APP_VERSION", "1.2.3")]);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some(DEFAULT_HOOK_PATH));
        assert_eq!(get("RUNWAY_HOOK"), Some("restart"));
        assert_eq!(get("RUNWAY_AGENT"), Some("app-1"));
        assert_eq!(get("RUNWAY_ENVIRONMENT"), Some("staging"));
        assert_eq!(get("RUNWAY_APP_VERSION"), Some("1.2.3"));
        assert_eq!(env.len(), 5, "{env:?}");

        let declared =
            load(&format!("{APP}hook_env = {{ PATH = \"/usr/bin:/bin\", HOME = \"/srv/app\" }}\n")).unwrap();
        let app = declared.app.as_ref().unwrap();
        let env = app.hook_environment(&declared, "maintenance_on", &[]);
        assert!(env.contains(&("PATH".into(), "/usr/bin:/bin".into())), "{env:?}");
        assert!(env.contains(&("HOME".into(), "/srv/app".into())), "{env:?}");
    }

    #[test]
    fn hook_env_may_not_set_runways_variables() {
        let err =
            load(&format!("{APP}hook_env = {{ RUNWAY_APP_VERSION = \"x\" }}\n")).unwrap_err().to_string();
        assert!(err.contains("[app] hook_env.RUNWAY_APP_VERSION"), "{err}");
    }

    #[test]
    fn a_parse_error_names_the_line_but_does_not_quote_it() {
        let err = load(&format!("{APP}[database]\nurl = \"postgres://app:hunter2@db/app\" junk\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 14"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let config = load(&format!(
            "{APP}hook_env = {{ LB_TOKEN = \"tok-hunter2\" }}\n[database]\nurl = \"postgres://app:pw-hunter2@db/app\"\n"
        ))
        .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("LB_TOKEN") && debug.contains("postgres://app:***@db/app"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn the_example_configs_in_deploy_load() {
        for name in ["agent-db.toml", "agent-app.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
            let config = Config::load(&path, Files::Skip).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!config.roles.is_empty(), "{name}");
            assert!(config.warnings.is_empty(), "{name}: {:?}", config.warnings);
        }
    }
}
