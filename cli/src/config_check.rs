//! `runway config check`: the checks the agent and the coordinator run on
//! their config at start-up, run alone, without starting anything.
//!
//! Each file gets one result: `FILE: OK`, or one line per problem, each
//! naming its key (`agent.toml: [databases.app] url: invalid port
//! number`). The same functions the daemons call do the checking
//! (`runway_engine::agent_config::Config::load`,
//! `runway_coordinator::config::Config::load`), so a config this command
//! passes is one the daemon starts with, on this host, as this user.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Subcommand};
use runway_daemon::config_check::Files;
use serde_json::json;

use crate::exit::Exit;
use crate::output::{Failure, Output};

/// `runway config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check agent and coordinator config files exactly as the daemons do
    /// at start-up, without starting anything: every key; every URL
    /// (database URLs parse as the agent parses them to connect;
    /// coordinator, etcd, webhook, health and trace URLs); every file
    /// (`[tls]` readable and loading, naming this agent or a coordinator);
    /// every hook and smoke command (found and executable, in the hooks'
    /// own PATH); `pg_dump` and `pg_restore`; `state_dir` and `[backup]
    /// dir` writable or creatable. Every problem is printed, each naming
    /// its file, table and key; exit 2 when there is any. Old duration keys
    /// (`lease_ttl_secs = 5`) still load, each with a warning naming the new
    /// spelling (`lease_ttl = "5s"`); both spellings at once are a problem.
    /// Run it as the
    /// daemon's user, with the daemon's environment (`DATABASE_URL`
    /// overrides `[database] url`, `RUNWAY_ETCD_ENDPOINTS` the etcd
    /// endpoints, as they do for the daemons).
    #[command(group(ArgGroup::new("configs").required(true).multiple(true).args(["agent", "coordinator"])))]
    Check {
        /// An agent config file (e.g. /etc/runway/agent.toml); repeat for several.
        #[arg(long, value_name = "FILE")]
        agent: Vec<PathBuf>,
        /// A coordinator config file (e.g. /etc/runway/coordinator.toml); repeat for several.
        #[arg(long, value_name = "FILE")]
        coordinator: Vec<PathBuf>,
        /// Check the keys only, not whether the files, programs and
        /// directories they name are usable on this host: for configs
        /// written for other hosts (e.g. the examples in deploy/, in CI).
        #[arg(long)]
        skip_files: bool,
    },
    /// Print the configuration reference (Markdown) generated from the
    /// config types: every key of the agent's and the coordinator's
    /// config, with its type, default and doc comment. The book keeps it in
    /// docs/src/reference/configuration.md.
    #[command(hide = true)]
    Reference,
}

/// Runs `runway config …`.
pub fn run(output: Output, command: ConfigCommand) -> Result<Exit, Failure> {
    match command {
        ConfigCommand::Check { agent, coordinator, skip_files } => {
            let files = if skip_files { Files::Skip } else { Files::Check };
            check(output, &agent, &coordinator, files)
        }
        ConfigCommand::Reference => {
            print!("{}", crate::config_reference::reference());
            Ok(Exit::Success)
        }
    }
}

/// Checks every file, prints each one's result, and fails when any has a problem.
fn check(
    output: Output,
    agents: &[PathBuf],
    coordinators: &[PathBuf],
    files: Files,
) -> Result<Exit, Failure> {
    let mut refused = 0;
    let results = agents
        .iter()
        .map(|path| ("agent", path.as_path(), agent(path, files)))
        .chain(coordinators.iter().map(|path| ("coordinator", path.as_path(), coordinator(path, files))));
    for (kind, path, Checked { problems, warnings }) in results {
        if !problems.is_empty() {
            refused += 1;
        }
        // Warnings (old keys still read) name their file already.
        let lines = warnings.iter().cloned().chain(if problems.is_empty() {
            vec![format!("{}: OK ({kind} config)", path.display())]
        } else {
            problems.iter().map(|p| format!("{}: {p}", path.display())).collect()
        });
        output.result(
            lines.collect::<Vec<_>>().join("\n"),
            &json!({
                "file": path, "kind": kind, "ok": problems.is_empty(), "problems": problems, "warnings": warnings,
            }),
        );
    }
    if refused > 0 {
        let total = agents.len() + coordinators.len();
        return Err(Failure::invalid(format!(
            "{refused} of {total} config file(s) have problems (listed above); the daemons refuse to start with them"
        )));
    }
    Ok(Exit::Success)
}

/// What checking one file found.
struct Checked {
    /// Each `key: what`, without the file.
    problems: Vec<String>,
    /// Each `FILE: warning: …` (old keys still read), when the file loaded.
    warnings: Vec<String>,
}

impl Checked {
    fn problems(problems: Vec<String>) -> Self {
        Self { problems, warnings: Vec::new() }
    }
}

/// An agent config's problems and warnings.
fn agent(path: &Path, files: Files) -> Checked {
    use runway_engine::agent_config::{Config, ConfigError};
    match Config::load(path, files) {
        Ok(config) => Checked { problems: Vec::new(), warnings: config.warnings },
        Err(ConfigError::Invalid(problems)) => {
            Checked::problems(problems.iter().map(str::to_owned).collect())
        }
        Err(ConfigError::Read { error, .. }) => Checked::problems(vec![format!("cannot read it: {error}")]),
        Err(ConfigError::Parse { message, .. }) => Checked::problems(vec![format!("not valid: {message}")]),
    }
}

/// A coordinator config's problems and warnings, like [`agent`]'s.
fn coordinator(path: &Path, files: Files) -> Checked {
    use runway_coordinator::config::{Config, ConfigError};
    match Config::load(Some(path), files) {
        Ok(config) => Checked { problems: Vec::new(), warnings: config.warnings },
        Err(ConfigError::Invalid(problems)) => {
            Checked::problems(problems.iter().map(str::to_owned).collect())
        }
        Err(ConfigError::Read { error, .. }) => Checked::problems(vec![format!("cannot read it: {error}")]),
        Err(ConfigError::Parse { message, .. }) => Checked::problems(vec![format!("not valid: {message}")]),
    }
}
