//! The agent's start-up checks, which `runway config check --agent` runs
//! alone: every key, and with [`Files::Check`] every file, program and
//! directory the config names, as the agent will use them. Every problem
//! is collected, each naming its key, so one round of fixes is enough.

use std::path::Path;

use crate::backup::{BackupConfig, BackupError};
use runway_daemon::config_check::{self, Files, Problems};
use runway_identity::Identity;
use runway_identity::tls::Security;

use super::{AppConfig, Config, DEFAULT_HOOK_PATH, RUNWAY_PREFIX, Role};

/// Every problem of `config`, read from `file`.
pub(super) fn validate(config: &Config, file: &Path, files: Files) -> Result<(), Problems> {
    let mut problems = Problems::new(file);
    for (key, value) in [("name", &config.name), ("environment", &config.environment)] {
        if value.trim().is_empty() {
            problems.add(key, "must not be empty");
        }
    }
    if config.roles.is_empty() {
        problems.add("roles", "must hold \"db\", \"app\" or both");
    }
    if config.coordinators.is_empty() {
        problems.add("coordinators", "must list at least one address, e.g. [\"https://10.0.0.5:7400\"]");
    }
    // An http:// coordinator with TLS on (or the reverse) would only fail
    // on every dial; say so now.
    for addr in &config.coordinators {
        problems.check("coordinators", config.tls.check_address(addr));
    }
    if files == Files::Check {
        problems.check("state_dir", config_check::writable_dir(&config.state_dir));
    }
    if config.has_role(Role::Db) {
        super::databases::validate(config, files, &mut problems);
        match &config.backup {
            None => problems.add("[backup]", "the db role needs a [backup] table with `dir`"),
            Some(backup) => check_backup(backup, files, &mut problems),
        }
    }
    if config.has_role(Role::App) {
        match &config.app {
            None => problems.add(
                "[app]",
                "the app role needs an [app] table (maintenance_on, maintenance_off, restart, health_url)",
            ),
            Some(app) => check_app(app, files, &mut problems),
        }
    }
    if let Some(Security::Mutual(credentials)) = config_check::tls(&config.tls, files, &mut problems) {
        problems.check("[tls] cert", names_this_agent(config, credentials.identity()));
    }
    if let Some(endpoint) = config.telemetry.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        problems.check("[telemetry] otlp_endpoint", config_check::http_url(endpoint));
    }
    if files == Files::Check {
        problems.check("[telemetry]", config.telemetry.check_tls());
    }
    problems.into_result()
}

/// The certificate must name this agent: the coordinator refuses a
/// registration that does not match it, so a mismatch is better caught
/// with the config at hand.
pub fn names_this_agent(config: &Config, identity: &Identity) -> Result<(), String> {
    match identity {
        Identity::Agent { environment, name }
            if *environment == config.environment && *name == config.name =>
        {
            Ok(())
        }
        other => Err(format!(
            "the certificate names {other}, but this agent is configured as {} in {}; it needs a certificate \
             naming runway://agent/{}/{}",
            config.name, config.environment, config.environment, config.name
        )),
    }
}

/// `[app]`: hooks are argv arrays whose program runs (looked up in the
/// hooks' own `PATH`), the health URL parses, `hook_env` is usable.
fn check_app(app: &AppConfig, files: Files, problems: &mut Problems) {
    let path = app.hook_env.get("PATH").map_or(DEFAULT_HOOK_PATH, String::as_str);
    let hooks = [
        ("maintenance_on".to_owned(), &app.maintenance_on),
        ("maintenance_off".to_owned(), &app.maintenance_off),
        ("restart".to_owned(), &app.restart),
    ];
    let smoke = app.smoke_commands.iter().map(|(name, argv)| (format!("smoke_commands.{name}"), argv));
    for (key, argv) in hooks.into_iter().chain(smoke) {
        let key = format!("[app] {key}");
        match argv.first().filter(|program| !program.trim().is_empty()) {
            None => problems.add(key, "must be a command as an argv array, e.g. [\"/usr/local/bin/hook\"]"),
            Some(program) if files == Files::Check => {
                problems.check(key, config_check::executable(program, path));
            }
            Some(_) => {}
        }
    }
    for (key, value) in &app.hook_env {
        if key.is_empty() || key.contains(['=', '\0']) {
            problems.add("[app] hook_env", format_args!("{key:?} is not a variable name"));
        } else if key.starts_with(RUNWAY_PREFIX) {
            problems.add(
                format_args!("[app] hook_env.{key}"),
                format_args!("variables starting with {RUNWAY_PREFIX} are set by runway itself"),
            );
        } else if value.contains('\0') {
            problems.add(format_args!("[app] hook_env.{key}"), "holds a NUL character");
        }
    }
    match config_check::http_url(&app.health_url) {
        Ok(url) if url.scheme() == "http" => {}
        Ok(_) => {
            problems.add("[app] health_url", format_args!("must be an http:// URL, got {:?}", app.health_url))
        }
        Err(problem) => problems.add("[app] health_url", problem),
    }
}

/// `[backup]`: the engine's own checks, the object store's endpoint, and
/// with [`Files::Check`] a writable `dir` and runnable `pg_dump` and
/// `pg_restore` (in `pg_bin_dir`, else on the agent's `PATH`).
fn check_backup(backup: &BackupConfig, files: Files, problems: &mut Problems) {
    match backup.validate() {
        Ok(()) => {}
        // `backup.object_store.bucket` is `[backup.object_store] bucket`.
        Err(BackupError::Config { key, problem }) => match key.rsplit_once('.') {
            Some((table, key)) => problems.add(format_args!("[{table}] {key}"), problem),
            None => problems.add(key, problem),
        },
        Err(other) => problems.add("[backup]", other),
    }
    if let Some(store) = &backup.object_store
        && let Some(endpoint) = store.endpoint.as_deref()
    {
        let key = "[backup.object_store] endpoint";
        match config_check::http_url(endpoint) {
            Ok(url) if url.scheme() == "http" && !store.allow_http => {
                problems.add(key, "is http://; set `allow_http = true` for a plain-text store")
            }
            Ok(_) => {}
            Err(problem) => problems.add(key, problem),
        }
    }
    if files == Files::Skip {
        return;
    }
    problems.check("[backup] dir", config_check::writable_dir(&backup.dir));
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in ["pg_dump", "pg_restore"] {
        let program = backup.tool(tool);
        problems.check("[backup] pg_bin_dir", config_check::executable(&program.to_string_lossy(), &path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app agent's config in `dir` whose every file is there, with `hooks`
    /// appended to its `[app]` table.
    fn app_config(dir: &Path, hooks: &str) -> String {
        format!(
            "name = \"app-1\"\nenvironment = \"staging\"\ncoordinators = [\"http://127.0.0.1:7400\"]\n\
             roles = [\"app\"]\nstate_dir = {:?}\ntls = {{ insecure = true }}\n[app]\nmaintenance_on = [\"true\"]\n\
             maintenance_off = [\"/bin/true\"]\nrestart = [\"/bin/true\"]\nhealth_url = \"http://127.0.0.1:8080/health\"\n\
             {hooks}",
            dir.join("state")
        )
    }

    fn load(dir: &Path, text: &str, files: Files) -> Result<Config, String> {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, files).map_err(|e| e.to_string())
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = app_config(dir.path(), "")
            .replace("name = \"app-1\"", "name = \"\"")
            .replace("http://127.0.0.1:7400", "http://127.0.0.1:notaport")
            .replace("maintenance_on = [\"true\"]", "maintenance_on = [\"no-such-hook\"]")
            .replace("restart = [\"/bin/true\"]", "restart = []")
            .replace("http://127.0.0.1:8080/health", "http://127.0.0.1:8080:80/health");
        let error = load(dir.path(), &text, Files::Check).unwrap_err();
        let lines: Vec<&str> = error.lines().collect();
        for needle in [
            "agent.toml: name: must not be empty",
            "agent.toml: coordinators: bad address \"http://127.0.0.1:notaport\"",
            "agent.toml: [app] maintenance_on: \"no-such-hook\" is not found in PATH",
            "agent.toml: [app] restart: must be a command",
            "agent.toml: [app] health_url: ",
        ] {
            assert_eq!(lines.iter().filter(|l| l.contains(needle)).count(), 1, "{needle:?} in:\n{error}");
        }
        assert_eq!(lines.len(), 5, "{error}");
    }

    #[test]
    fn a_database_url_that_does_not_parse_is_named_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = |tables: &str| {
            format!(
                "name = \"db-1\"\nenvironment = \"staging\"\ncoordinators = [\"http://127.0.0.1:7400\"]\n\
                 roles = [\"db\"]\nstate_dir = {:?}\n[backup]\ndir = {:?}\n[tls]\ninsecure = true\n{tables}",
                dir.path().join("state"),
                dir.path().join("backups"),
            )
        };
        let error = load(
            dir.path(),
            &db("[databases.app]\nurl = \"postgres://app:hunter2@127.0.0.1:notaport/app\"\n\
                 [databases.orders]\nurl = \"mysql://app@127.0.0.1/orders\"\n"),
            Files::Skip,
        )
        .unwrap_err();
        assert!(error.contains("agent.toml: [databases.app] url: invalid port number"), "{error}");
        assert!(error.contains("agent.toml: [databases.orders] url: scheme `mysql`"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");

        let missing = dir.path().join("root.crt");
        let text =
            db(&format!("[database]\nurl = \"postgres://app@db/app?sslrootcert={}\"\n", missing.display()));
        assert!(load(dir.path(), &text, Files::Skip).is_ok());
        let error = load(dir.path(), &text, Files::Check).unwrap_err();
        assert!(error.contains("[database] url ?sslrootcert: cannot read"), "{error}");
    }

    #[test]
    fn files_are_checked_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let text = app_config(dir.path(), "smoke_commands = { queue = [\"check-queue\"] }\n")
            .replace("\"true\"", "\"/no/such/hook\"")
            .replace("http://127.0.0.1:7400", "https://127.0.0.1:7400")
            .replace(
                "tls = { insecure = true }",
                &format!(
                    "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
                    dir.path().join("ca.pem"),
                    dir.path().join("agent.pem"),
                    dir.path().join("agent.key")
                ),
            );
        load(dir.path(), &text, Files::Skip).unwrap();
        let error = load(dir.path(), &text, Files::Check).unwrap_err();
        for needle in [
            "[app] maintenance_on: /no/such/hook: No such file",
            "[app] smoke_commands.queue: \"check-queue\" is not found in PATH",
            "[tls] ca: cannot read",
            "[tls] cert: cannot read",
            "[tls] key: cannot read",
        ] {
            assert!(error.contains(needle), "{needle:?} in:\n{error}");
        }
        assert_eq!(error.lines().count(), 5, "{error}");
    }
}
