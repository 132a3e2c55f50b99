//! The app version this host last deployed, kept in the state dir: what
//! the agent registers with, also after it restarts, so that the version
//! the coordinator records as a host's previous one (the version a revert
//! brings back) is the one the host really ran.
//!
//! At start the agent reports, the first that knows:
//!
//! 1. the version its last successful restart hook deployed
//!    (`<state_dir>/app_version.json`, replaced atomically after each);
//! 2. what `[app] version_command` prints: the host's own answer, for a
//!    host runway has not deployed to yet;
//! 3. `[app] version`, the operator's word for such a host.
//!
//! Empty when none knows. The coordinator then refuses to revert the host
//! to it rather than restart whatever runs now.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, Config};
use crate::hooks::{self, Hook};

/// The file in the state dir.
const FILE: &str = "app_version.json";

/// What the file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Deployed {
    /// The version the restart hook was given (`RUNWAY_APP_VERSION`).
    version: String,
    /// When the hook deployed it.
    deployed_unix_ms: i64,
}

/// The deployed version could not be read or recorded. Retrying is safe; a
/// persistent error needs the state dir fixed.
#[derive(Debug, thiserror::Error)]
pub enum DeployedError {
    #[error("deployed app version {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("deployed app version {path} is damaged ({message}); delete it to fall back to `[app] version`")]
    Corrupt { path: PathBuf, message: String },
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The version last recorded by [`save`] in `state_dir`, `None` when
/// nothing was deployed yet (or only an empty version).
pub fn load(state_dir: &Path) -> Result<Option<String>, DeployedError> {
    let path = path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(DeployedError::Io { path, error }),
    };
    let deployed: Deployed = serde_json::from_slice(&bytes)
        .map_err(|e| DeployedError::Corrupt { path: path.clone(), message: e.to_string() })?;
    Ok(Some(deployed.version).filter(|v| !v.is_empty()))
}

/// Records that `version` was deployed: the file is replaced atomically
/// (write, fsync, rename, fsync the dir), so a crash leaves the old fact or
/// the new one, never half of either.
pub async fn save(state_dir: &Path, version: &str) -> Result<(), DeployedError> {
    let path = path(state_dir);
    let deployed = Deployed { version: version.to_owned(), deployed_unix_ms: runway_proto::unix_ms_now() };
    let bytes = serde_json::to_vec_pretty(&deployed).expect("the deployed version serializes");
    let target = path.clone();
    tokio::task::spawn_blocking(move || crate::journal::write_atomically(&target, &bytes))
        .await
        .expect("the write task does not panic")
        .map_err(|error| DeployedError::Io { path, error })
}

/// The version to register with at start (see the module docs); a
/// damaged record or a failing `version_command` is logged and passed over.
pub async fn at_start(config: &Config) -> String {
    let deployed = match load(&config.state_dir) {
        Ok(deployed) => deployed,
        Err(e) => {
            tracing::error!(error = %e, "cannot tell which app version was last deployed");
            None
        }
    };
    if let Some(version) = deployed {
        return version;
    }
    let Some(app) = config.app.as_ref() else { return String::new() };
    if !app.version_command.is_empty() {
        match reported(config, app).await {
            Ok(version) => return version,
            Err(why) => tracing::warn!(
                why = %why,
                configured = %app.version,
                "`app.version_command` did not tell the running version; reporting `app.version`"
            ),
        }
    }
    app.version.clone()
}

/// The running version as `app.version_command` prints it.
async fn reported(config: &Config, app: &AppConfig) -> Result<String, String> {
    let env = app.hook_environment(config, "version_command", &[]);
    let hook =
        Hook { name: "version_command", argv: &app.version_command, env: &env, timeout: app.hook_timeout };
    let lines = hooks::hook_output(&hook).await.map_err(|e| e.to_string())?;
    let version = lines.iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or_default();
    if plausible(version) {
        Ok(version.to_owned())
    } else {
        Err(format!("it printed {version:?}, which is not an app version"))
    }
}

/// An app version as the coordinator accepts one for a rollout (see its
/// `rollout::validate::app_version`): at most 128 bytes of `A-Z a-z 0-9 .
/// _ + - : @ /`, starting with a letter or digit, without `..`.
fn plausible(version: &str) -> bool {
    version.len() <= 128
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || "._+-:@/".contains(c))
        && !version.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_saved_version_survives_and_nothing_saved_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), "v2").await.unwrap();
        save(dir.path(), "v3").await.unwrap();
        assert_eq!(load(dir.path()).unwrap().as_deref(), Some("v3"));
        // Nothing but the file itself is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [FILE]);
    }

    /// `text` as an agent config file, loaded without checking its files.
    fn config_from(text: &str) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, runway_daemon::config_check::Files::Skip)
    }

    /// An app agent's config with state dir `dir` and `app_lines` under `[app]`.
    fn config(dir: &Path, app_lines: &str) -> Config {
        config_from(&format!(
            "name = \"app-1\"\nenvironment = \"staging\"\ncoordinators = [\"http://127.0.0.1:7400\"]\n\
             roles = [\"app\"]\nstate_dir = {dir:?}\n[app]\nmaintenance_on = [\"/bin/true\"]\n\
             maintenance_off = [\"/bin/true\"]\nrestart = [\"/bin/true\"]\n\
             health_url = \"http://127.0.0.1:8080/health\"\n{app_lines}\n[tls]\ninsecure = true\n"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn what_was_deployed_comes_first_then_the_hook_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let asked = |script: &str| {
            config(dir, &format!("version = \"v1\"\nversion_command = [\"/bin/sh\", \"-c\", {script:?}]"))
        };
        let hook = asked("echo checking; echo v7; echo");
        assert_eq!(at_start(&hook).await, "v7");
        assert_eq!(at_start(&asked("exit 3")).await, "v1", "a failing hook falls back to the config");
        assert_eq!(at_start(&asked("echo 'v 2; rm -rf /'")).await, "v1", "not a version");
        assert_eq!(at_start(&config(dir, "")).await, "", "nothing knows");
        save(dir, "v2").await.unwrap();
        assert_eq!(at_start(&hook).await, "v2");
        assert_eq!(at_start(&config(dir, "version = \"v1\"")).await, "v2");
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{ not json").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains(FILE) && error.contains("damaged"), "{error}");
    }
}
