//! The coordinator's config: defaults ← TOML file ← environment ← command
//! line, then checked as a whole before the coordinator binds or connects
//! anywhere ([`Config::check`]; `runway config check --coordinator` runs
//! the same checks alone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_identity::tls::TlsFiles;
use serde::Deserialize;

mod analysis;
mod check;
mod databases;
mod duration;
mod restart;
mod runbook;
mod server;
pub use analysis::{AnalysisCheck, Compare, Inconclusive, Number, OnMonitorFailure, PrometheusConfig};
pub use check::names_a_coordinator;
pub use databases::DatabasePolicy;
pub use duration::{format_duration, parse_duration};
pub use restart::{Count, RestartPolicy, SmokeAfter, SmokeCheck, Span, WatchPolicy};
pub use runbook::{Maintenance, NotifyEvent, Requires, Secret, Webhook, WebhookFormat};
pub use runway_daemon::config_check::{Files, Problems};
pub use server::ServerLimits;

/// `step_deadline_secs` unless configured: 6 hours, longer than any
/// migration should take, so only an agent that is really gone reaches it.
pub const DEFAULT_STEP_DEADLINE_SECS: u64 = 6 * 60 * 60;

/// See `deploy/coordinator.toml` for a commented example.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unique name of this coordinator (defaults to the host name).
    pub name: String,
    /// Address the gRPC server binds to.
    pub listen: SocketAddr,
    /// Address agents and CLIs use to reach this coordinator, given to them
    /// by followers as the leader's address. Defaults to `http://<listen>`.
    pub advertise: String,
    /// etcd client endpoints.
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key runway writes in etcd.
    pub etcd_prefix: String,
    /// Leader lease TTL in seconds (etcd's minimum is 2).
    pub lease_ttl_secs: u64,
    /// Environments rollouts may target, with their policies: a list of
    /// names (default policies), or one `[environments.NAME]` table each.
    pub environments: Environments,
    /// Seconds between heartbeats on agent streams.
    pub heartbeat_secs: u64,
    /// How long an operator's backup call (`runway backup list|show|verify|restore`)
    /// waits for a disconnected DB agent before it tells the caller so, in
    /// seconds. The command is not failed: it carries on on the host and its
    /// journal keeps the result. Rollouts do not use this: a rollout step
    /// waits for an away agent's real result, up to `step_deadline_secs`.
    pub agent_grace_secs: u64,
    /// How long a rollout step waits for an agent that is away, in seconds,
    /// counted from when this leader dispatched the step. Until then an away
    /// agent's result decides the step when it comes back (its journal
    /// answers the re-sent command). Once the deadline has passed with an
    /// agent still away, the outcome is unknown: the rollout holds
    /// (maintenance mode stays on, nothing more runs) and ends `failed`,
    /// asking for a person. A connected agent still working is waited for
    /// past the deadline.
    pub step_deadline_secs: u64,
    /// `[tls]`: the runway CA, this coordinator's certificate (naming
    /// `runway://coordinator/NAME`) and key; used for the gRPC server and
    /// as etcd's client certificate. `insecure = true` for plain text.
    pub tls: TlsFiles,
    /// `[telemetry]`: where to serve Prometheus metrics and send trace spans, if anywhere.
    pub telemetry: runway_telemetry::Config,
    /// `[retention]`: which finished rollouts etcd keeps.
    pub retention: Retention,
    /// Largest migration bundle (protobuf-encoded) a rollout or plan may
    /// carry, in bytes; larger ones are refused with `InvalidArgument`.
    /// At most `runway_proto::bundle::MAX_BUNDLE_BYTES` (64 MiB), the
    /// default, which is what every gRPC hop is sized for.
    pub max_bundle_bytes: usize,
    /// `[server]`: connection caps and the TLS handshake deadline.
    pub server: ServerLimits,
    /// `[prometheus]`: where the environments' `analysis` queries go.
    pub prometheus: Option<PrometheusConfig>,
}

/// `[retention]`: finished rollouts (with their events and decisions) are
/// deleted beyond the newest `keep_rollouts` or after `keep_days`, but
/// never inside their environment's rollback window; then bundles no kept
/// rollout refers to. The audit log is kept longer, on bounds of its own
/// (`keep_audit_entries`, `keep_audit_days`): export it first with
/// `runway audit --output json` where it must outlive them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    pub keep_rollouts: usize,
    pub keep_days: u64,
    pub keep_audit_entries: usize,
    pub keep_audit_days: u64,
    /// How often the leader prunes.
    pub every_secs: u64,
    /// After each prune, compact etcd's history to the revision the
    /// previous prune started at (history younger than `every_secs` stays).
    /// Without compaction (here or etcd's `--auto-compaction-retention`)
    /// etcd keeps every revision of every deleted key and its database
    /// grows until it hits its quota. Turn off only when etcd compacts by
    /// itself.
    pub compact: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_rollouts: 1000,
            keep_days: 90,
            keep_audit_entries: 100_000,
            keep_audit_days: 365,
            every_secs: 600,
            compact: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: std::env::var("HOSTNAME").unwrap_or_else(|_| "coordinator".into()),
            listen: "127.0.0.1:7400".parse().expect("valid default address"),
            advertise: String::new(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_prefix: "/runway".into(),
            lease_ttl_secs: 5,
            environments: Environments::named(&["staging", "production"]),
            heartbeat_secs: 2,
            agent_grace_secs: 60,
            step_deadline_secs: DEFAULT_STEP_DEADLINE_SECS,
            tls: TlsFiles::default(),
            telemetry: runway_telemetry::Config::default(),
            retention: Retention::default(),
            max_bundle_bytes: runway_proto::bundle::MAX_BUNDLE_BYTES,
            server: ServerLimits::default(),
            prometheus: None,
        }
    }
}

/// What a rollout does when its migrate step fails after the database
/// changed (earlier migrations applied, or part of the failed one committed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMigrateFailure {
    /// Stay in maintenance mode, restore the backup this rollout took,
    /// check it, then lift maintenance mode: the rollout ends `rolled_back`.
    #[default]
    Restore,
    /// Stay in maintenance mode and stop: a person decides.
    Hold,
}

/// What a rollout does when an app host does not become healthy after its
/// restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRestartFailure {
    /// Restart the hosts already changed with the version they ran before
    /// (restoring the backup first when the migrations were not backward
    /// compatible), then lift maintenance mode: the rollout ends `rolled_back`.
    #[default]
    Revert,
    /// Stay in maintenance mode and stop: a person decides.
    Hold,
}

/// How a rollout is rolled back once the database changed
/// (`rollback = "auto" | "migration" | "restore"`): the runbook's order is
/// by migration first, the backup restore only as the nuclear option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollback {
    /// By the proven downs of the migrations the rollout applied (writes
    /// made since are kept); by restoring its backup when they are not all
    /// proven.
    #[default]
    Auto,
    /// By migration only: a rollout whose pending migrations do not all
    /// have proven downs is refused in preflight (for teams that require
    /// downs).
    Migration,
    /// Always by restoring the rollout's backup.
    Restore,
}

impl Rollback {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Migration => "migration",
            Self::Restore => "restore",
        }
    }
}

/// What happens when a rollback by migration fails (a down errors, or the
/// schema does not come back): `on_down_failure = "restore" | "hold"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDownFailure {
    /// Restore the rollout's backup, still in maintenance mode.
    #[default]
    Restore,
    /// Stay in maintenance mode and stop: a person decides.
    Hold,
}

/// `approval_timeout_secs` unless configured: a day.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// `[environments.NAME]`: the policies of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvironmentPolicy {
    pub on_migrate_failure: OnMigrateFailure,
    pub on_restart_failure: OnRestartFailure,
    /// By migration or by restore (see [`Rollback`]).
    pub rollback: Rollback,
    /// When a rollback by migration fails (see [`OnDownFailure`]).
    pub on_down_failure: OnDownFailure,
    /// Seconds a rollout's backup stays pinned (never pruned by `keep`)
    /// after the rollout ended; 0 releases it at once.
    pub rollback_window_secs: u64,
    /// Who may do what here: operator name (from the certificate's
    /// `runway://operator/NAME`) or `"*"` for every operator, to roles.
    /// `roles = { alice = ["deploy", "restore"], bob = ["approve"], "*" = ["view"] }`.
    pub roles: BTreeMap<String, BTreeSet<Role>>,
    /// How many operators other than the one who started a rollout must
    /// approve it after preflight, before anything changes: `approvals = 1`,
    /// or `approvals = { default = 1, danger = 2 }` for a higher count when
    /// the plan is riskier (see [`Approvals::danger`]). 0 (the default): no
    /// approval step.
    pub approvals: Approvals,
    /// How long a rollout waits for its approvals, in seconds, before it
    /// ends `cancelled` (nothing changed).
    pub approval_timeout_secs: u64,
    /// `restart = { batch, canary, min_healthy, healthy_deadline,
    /// max_failures, select }`: restarts in batches with canaries.
    pub restart: RestartPolicy,
    /// `smoke = [ … ]`: checks the app agents run after their restart and
    /// again after maintenance off.
    pub smoke: Vec<SmokeCheck>,
    /// `watch = { duration, interval }`: the watch window after
    /// maintenance off.
    pub watch: Option<WatchPolicy>,
    /// Staging first: `requires = { environment = "staging", soak = "24h" }`.
    pub requires: Option<Requires>,
    /// When maintenance mode is turned on: `"always"` (default), `"auto"`, `"never"`.
    pub maintenance: Maintenance,
    /// Where to tell about rollouts here (see [`Webhook`]).
    pub webhooks: Vec<Webhook>,
    /// `[environments.NAME.databases]`: canary, parallel, max_failures,
    /// uniform for an environment with several databases.
    pub databases: DatabasePolicy,
    /// `[[environments.NAME.analysis]]`: Prometheus checks during the
    /// canaries' `min_healthy`, the watch window and `monitor`.
    pub analysis: Vec<AnalysisCheck>,
    /// `monitor = "24h"`: keep running the analysis this long after the
    /// rollout succeeded.
    pub monitor: Option<Span>,
    /// What a failed analysis during `monitor` does (see [`OnMonitorFailure`]).
    pub on_monitor_failure: OnMonitorFailure,
}

impl Default for EnvironmentPolicy {
    fn default() -> Self {
        Self {
            on_migrate_failure: OnMigrateFailure::default(),
            on_restart_failure: OnRestartFailure::default(),
            rollback: Rollback::default(),
            on_down_failure: OnDownFailure::default(),
            rollback_window_secs: 0,
            roles: BTreeMap::new(),
            approvals: Approvals::default(),
            approval_timeout_secs: DEFAULT_APPROVAL_TIMEOUT_SECS,
            restart: RestartPolicy::default(),
            smoke: Vec::new(),
            watch: None,
            requires: None,
            maintenance: Maintenance::default(),
            webhooks: Vec::new(),
            databases: DatabasePolicy::default(),
            analysis: Vec::new(),
            monitor: None,
            on_monitor_failure: OnMonitorFailure::default(),
        }
    }
}

/// How many approvals a rollout needs: `approvals = N` (the same count
/// whatever the plan) or `approvals = { default = N, danger = M }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Approvals {
    /// For an ordinary plan.
    pub default: u32,
    /// For a riskier plan: the rollout accepts a Danger lint finding
    /// (`--allow-danger`), or the plan's downtime class is `large` or
    /// unknown, or there is no plan to judge by. At least `default`.
    pub danger: u32,
    /// For an operator's rollback (`runway rollout rollback`), before it
    /// touches anything: `approvals = { default = 1, rollback = 1 }`.
    /// 0 (the default, also for `approvals = N`): an emergency rollback is
    /// never held up unless a team asks for it.
    pub rollback: u32,
}

impl Approvals {
    /// Whether rollouts here wait for approvals at all (for some plan).
    pub fn required(self) -> bool {
        self.default > 0 || self.danger > 0
    }
}

impl<'de> Deserialize<'de> for Approvals {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Counts {
            #[serde(default)]
            default: u32,
            danger: Option<u32>,
            #[serde(default)]
            rollback: u32,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Count(u32),
            Counts(Counts),
        }
        let form = Form::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "`approvals` must be a count (`approvals = 1`) or a table \
                 (`approvals = { default = 1, danger = 2, rollback = 1 }`)",
            )
        })?;
        Ok(match form {
            Form::Count(n) => Approvals { default: n, danger: n, rollback: 0 },
            Form::Counts(Counts { default, danger, rollback }) => {
                Approvals { default, danger: danger.unwrap_or(default), rollback }
            }
        })
    }
}

/// What an operator may do in one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// List and show rollouts, backups, plans and the audit log.
    View,
    /// Start and cancel rollouts.
    Deploy,
    /// Roll back rollouts, restore and verify backups, resolve held rollouts.
    Restore,
    /// Approve or reject someone else's rollout.
    Approve,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Deploy => "deploy",
            Role::Restore => "restore",
            Role::Approve => "approve",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EnvironmentPolicy {
    /// Whether `operator` holds `role` here, by name or through `"*"`.
    pub fn allows(&self, operator: &str, role: Role) -> bool {
        [operator, "*"].iter().any(|who| self.roles.get(*who).is_some_and(|roles| roles.contains(&role)))
    }

    /// The operators named as holding `role` here (`"*"` included when
    /// every operator holds it), for messages such as who may approve.
    pub fn holders(&self, role: Role) -> Vec<&str> {
        self.roles.iter().filter(|(_, roles)| roles.contains(&role)).map(|(who, _)| who.as_str()).collect()
    }

    /// Checks the keys of environment `name`. With TLS on
    /// (`check_approvers`), an approval count that the named approvers
    /// cannot reach is refused: such a rollout could never run.
    fn check(&self, name: &str, check_approvers: bool, problems: &mut Problems) {
        let key = |key: &str| format!("[environments.{name}] {key}");
        let Approvals { default, danger, rollback } = self.approvals;
        if danger < default {
            problems.add(
                key("approvals"),
                format_args!(
                    "danger = {danger} is lower than default = {default}; the danger count is for riskier plans \
                     and must be at least the default"
                ),
            );
        }
        if self.approval_timeout_secs == 0 {
            problems.add(
                key("approval_timeout_secs"),
                format_args!(
                    "must be at least 1 (seconds a rollout waits for its approvals); the default is \
                     {DEFAULT_APPROVAL_TIMEOUT_SECS}"
                ),
            );
        }
        let approvers = self.holders(Role::Approve);
        let most = danger.max(rollback);
        if check_approvers && !approvers.contains(&"*") && (approvers.len() as u64) < u64::from(most) {
            problems.add(
                key("approvals"),
                format_args!(
                    "needs up to {most} approver(s) but roles grant \"approve\" to {} ({}); a rollout or \
                     rollback there could never be approved. Grant it in [environments.{name}] roles",
                    approvers.len(),
                    if approvers.is_empty() { "nobody".to_owned() } else { approvers.join(", ") }
                ),
            );
        }
        if let Err(problem) = restart::check(name, &self.restart, &self.smoke, self.watch.as_ref()) {
            problems.add_named(problem);
        }
        if let Err(problem) = databases::check(name, &self.databases) {
            problems.add_named(problem);
        }
    }
}

/// The environments rollouts may target. In TOML either a list of names
/// (`environments = ["staging", "production"]`, default policies) or a
/// table per environment (`[environments.production] on_migrate_failure = "hold"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environments(BTreeMap<String, EnvironmentPolicy>);

impl Environments {
    /// These names, with default policies.
    pub fn named(names: &[&str]) -> Self {
        Self(names.iter().map(|n| ((*n).to_owned(), EnvironmentPolicy::default())).collect())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The policies of `name` (defaults for an unknown one).
    pub fn policy(&self, name: &str) -> EnvironmentPolicy {
        self.0.get(name).cloned().unwrap_or_default()
    }

    /// `staging, production` for messages.
    pub fn list(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every environment's name and policies.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &EnvironmentPolicy)> {
        self.0.iter().map(|(name, policy)| (name.as_str(), policy))
    }
}

impl<'de> Deserialize<'de> for Environments {
    /// A list of names, or a table of tables. Not `untagged`: an error
    /// inside one environment's table (a bad duration, an unknown key)
    /// keeps its own message and position.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const KEYS: &str = "keys: on_migrate_failure = \"restore\" | \"hold\", on_restart_failure = \"revert\" | \"hold\", rollback = \"auto\" | \"migration\" | \"restore\", on_down_failure = \"restore\" | \"hold\", rollback_window_secs = N, roles = { NAME = [\"view\" | \"deploy\" | \"restore\" | \"approve\", ...] }, approvals = N | { default = N, danger = M }, approval_timeout_secs = N, requires = { environment = NAME, soak = \"24h\" }, maintenance = \"always\" | \"auto\" | \"never\", webhooks = [{ name, format, url, ... }], restart = { batch, canary, min_healthy, healthy_deadline, max_failures, select }, smoke = [ { name, path | command, ... } ], watch = { duration, interval, restore }, databases = { canary, parallel, max_failures, uniform }, analysis = [{ name, query, max | min | compare, interval, failure_limit, inconclusive }], monitor = \"24h\", on_monitor_failure = \"notify\" | \"rollback\"";
        let value = toml::Value::deserialize(deserializer)?;
        match value {
            toml::Value::Array(names) => {
                let names = names
                    .into_iter()
                    .map(|n| match n {
                        toml::Value::String(name) => Ok((name, EnvironmentPolicy::default())),
                        _ => Err(D::Error::custom("`environments` as a list holds environment names only")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Self(names))
            }
            toml::Value::Table(tables) => {
                let mut environments = BTreeMap::new();
                for (name, table) in tables {
                    // The error names the environment and the key's problem.
                    let policy = EnvironmentPolicy::deserialize(table).map_err(|e| {
                        D::Error::custom(format!("[environments.{name}] {}; {KEYS}", e.message()))
                    })?;
                    environments.insert(name, policy);
                }
                Ok(Self(environments))
            }
            _ => Err(D::Error::custom(format!(
                "`environments` must be a list of names or one [environments.NAME] table each ({KEYS})"
            ))),
        }
    }
}

/// A config that cannot be used; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read coordinator config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("coordinator config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    /// Keys that cannot be used: every one found, each named.
    #[error("{0}")]
    Invalid(Problems),
}

impl Config {
    /// Reads `path` (if given) over the defaults, applies
    /// `RUNWAY_ETCD_ENDPOINTS` (comma-separated) and checks it all (see
    /// [`Config::check`]): what `runway config check --coordinator` runs.
    pub fn load(path: Option<&Path>, files: Files) -> Result<Self, ConfigError> {
        let mut config = Self::read(path)?;
        config.check(path, files)?;
        Ok(config)
    }

    /// Reads `path` (if given) over the defaults and applies
    /// `RUNWAY_ETCD_ENDPOINTS`, checking nothing yet: the coordinator
    /// applies its command line, then [`Config::check`]s.
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        if let Ok(endpoints) = std::env::var("RUNWAY_ETCD_ENDPOINTS") {
            config.etcd_endpoints = endpoints.split(',').map(|s| s.trim().to_owned()).collect();
        }
        Ok(config)
    }

    /// Fills derived defaults and checks the keys of its own (policies,
    /// limits), not the addresses and files it names: for configs built
    /// in code.
    #[cfg(test)]
    pub(crate) fn finish(&mut self) -> Result<(), ConfigError> {
        let mut problems = Problems::new("coordinator config");
        self.check_keys(&mut problems);
        problems.into_result().map_err(ConfigError::Invalid)
    }

    /// Fills derived defaults (`advertise`) and checks every key, and with
    /// [`Files::Check`] the files they name. Every problem is reported,
    /// each naming its key, in lines that start with `file` (the config
    /// file; `None`: the defaults).
    pub fn check(&mut self, file: Option<&Path>, files: Files) -> Result<(), ConfigError> {
        let mut problems = Problems::new(file.unwrap_or(Path::new("coordinator config (defaults)")));
        self.check_keys(&mut problems);
        check::addresses_and_files(self, files, &mut problems);
        problems.into_result().map_err(ConfigError::Invalid)
    }

    /// Fills `advertise` unless set; checks the keys of its own.
    fn check_keys(&mut self, problems: &mut Problems) {
        if self.advertise.is_empty() {
            let scheme = if self.tls.insecure { "http" } else { "https" };
            self.advertise = format!("{scheme}://{}", self.listen);
        }
        if self.name.trim().is_empty() {
            problems.add("name", "must not be empty");
        }
        if self.lease_ttl_secs < 2 {
            problems.add(
                "lease_ttl_secs",
                format_args!("is {}; etcd's minimum lease TTL is 2", self.lease_ttl_secs),
            );
        }
        if self.step_deadline_secs == 0 {
            problems.add(
                "step_deadline_secs",
                format_args!(
                    "must be at least 1 (seconds a rollout step waits for an agent that is away before the \
                     rollout holds in maintenance mode); the default is {DEFAULT_STEP_DEADLINE_SECS}"
                ),
            );
        }
        if self.environments.is_empty() {
            problems.add("environments", "must name at least one environment");
        }
        if self.retention.keep_rollouts == 0
            || self.retention.keep_days == 0
            || self.retention.every_secs == 0
        {
            problems.add(
                "[retention]",
                "keep_rollouts, keep_days and every_secs must each be at least 1 (defaults: 1000 rollouts, 90 \
                 days, every 600 s)",
            );
        }
        let most = runway_proto::bundle::MAX_BUNDLE_BYTES;
        if self.max_bundle_bytes == 0 || self.max_bundle_bytes > most {
            problems.add(
                "max_bundle_bytes",
                format_args!(
                    "is {}; it must be between 1 and {most} (64 MiB, the default: the largest message agents \
                     and the CLI accept)",
                    self.max_bundle_bytes
                ),
            );
        }
        self.server.check(problems);
        for (name, policy) in self.environments.iter() {
            policy.check(name, !self.tls.insecure, problems);
            runbook::check(name, policy.requires.as_ref(), &policy.webhooks, &self.environments, problems);
            let runs = policy.restart.canary > 0 || policy.watch.is_some() || policy.monitor.is_some();
            analysis::check(
                name,
                &policy.analysis,
                self.prometheus.as_ref(),
                (policy.monitor, runs),
                problems,
            );
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    /// See [`Config::step_deadline_secs`].
    pub fn step_deadline(&self) -> Duration {
        Duration::from_secs(self.step_deadline_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coordinator.toml");
        let config = Config::load(Some(&path), Files::Skip).unwrap();
        assert_eq!(config.lease_ttl(), Duration::from_secs(5));
        assert_eq!(config.step_deadline(), Duration::from_secs(DEFAULT_STEP_DEADLINE_SECS));
        let production = config.environments.policy("production");
        assert_eq!(production.approvals, Approvals { default: 1, danger: 2, rollback: 0 });
        assert!(production.allows("carol", Role::Approve) && !production.allows("carol", Role::Deploy));
    }

    #[test]
    fn a_zero_step_deadline_is_refused_by_name() {
        let mut config: Config = toml::from_str("step_deadline_secs = 0").unwrap();
        assert!(config.finish().unwrap_err().to_string().contains("step_deadline_secs"));
        let mut config: Config = toml::from_str("step_deadline_secs = 3600\nagent_grace_secs = 20").unwrap();
        config.finish().unwrap();
        assert_eq!(config.step_deadline(), Duration::from_secs(3600));
    }

    #[test]
    fn max_bundle_bytes_above_what_agents_accept_is_refused_by_name() {
        let too_big = runway_proto::bundle::MAX_BUNDLE_BYTES + 1;
        let mut config: Config = toml::from_str(&format!("max_bundle_bytes = {too_big}")).unwrap();
        assert!(config.finish().unwrap_err().to_string().contains("max_bundle_bytes"));
        let mut config: Config = toml::from_str("max_bundle_bytes = 3145728").unwrap();
        config.finish().unwrap();
        assert_eq!(config.max_bundle_bytes, 3 * 1024 * 1024);
        assert!(Config::default().retention.compact, "compaction is on unless turned off");
    }

    #[test]
    fn environments_are_a_list_or_tables_with_policies() {
        let config: Config = toml::from_str("environments = [\"staging\"]").unwrap();
        assert!(config.environments.contains("staging"));
        assert_eq!(config.environments.policy("staging").on_migrate_failure, OnMigrateFailure::Restore);
        let config: Config = toml::from_str(
            "[environments.staging]\n[environments.production]\non_migrate_failure = \"hold\"\n",
        )
        .unwrap();
        assert_eq!(config.environments.list(), "production, staging");
        assert_eq!(config.environments.policy("production").on_migrate_failure, OnMigrateFailure::Hold);
        let bad = toml::from_str::<Config>("[environments.production]\non_migrate_failure = \"panic\"\n");
        assert!(bad.unwrap_err().to_string().contains("on_migrate_failure"));
    }

    fn policy(toml_text: &str) -> EnvironmentPolicy {
        let config: Config = toml::from_str(&format!("[environments.production]\n{toml_text}")).unwrap();
        config.environments.policy("production")
    }

    #[test]
    fn roles_are_granted_by_name_or_to_everyone_and_only_where_configured() {
        let production =
            policy("roles = { alice = [\"deploy\", \"restore\"], bob = [\"approve\"], \"*\" = [\"view\"] }");
        assert!(production.allows("alice", Role::Deploy));
        assert!(production.allows("alice", Role::Restore));
        assert!(!production.allows("alice", Role::Approve), "roles are not implied by others");
        assert!(production.allows("bob", Role::Approve));
        assert!(!production.allows("bob", Role::Deploy));
        assert!(production.allows("carol", Role::View), "\"*\" grants every operator");
        assert!(production.allows("alice", Role::View));
        assert!(!production.allows("carol", Role::Deploy));
        assert_eq!(production.holders(Role::Approve), ["bob"]);
        assert_eq!(production.holders(Role::View), ["*"]);
        // An environment without roles grants nothing; an unknown one neither.
        assert!(!policy("").allows("alice", Role::View));
        let config: Config =
            toml::from_str("[environments.production]\nroles = { alice = [\"view\"] }").unwrap();
        assert!(!config.environments.policy("staging").allows("alice", Role::View));
        let bad = toml::from_str::<Config>("[environments.production]\nroles = { alice = [\"admin\"] }");
        assert!(bad.unwrap_err().to_string().contains("roles"));
        assert_eq!(Role::Approve.to_string(), "approve");
    }

    #[test]
    fn approvals_are_a_count_or_a_default_and_a_danger_count() {
        assert_eq!(policy("").approvals, Approvals { default: 0, danger: 0, rollback: 0 });
        assert!(!policy("").approvals.required());
        assert_eq!(policy("").approval_timeout_secs, DEFAULT_APPROVAL_TIMEOUT_SECS);
        assert_eq!(policy("approvals = 1").approvals, Approvals { default: 1, danger: 1, rollback: 0 });
        assert_eq!(
            policy("approvals = { default = 1, danger = 2 }\napproval_timeout_secs = 600").approvals,
            Approvals { default: 1, danger: 2, rollback: 0 }
        );
        assert_eq!(
            policy("approvals = { danger = 2 }").approvals,
            Approvals { default: 0, danger: 2, rollback: 0 }
        );
        assert!(policy("approvals = { danger = 2 }").approvals.required());
        assert_eq!(
            policy("approvals = { default = 2 }").approvals,
            Approvals { default: 2, danger: 2, rollback: 0 }
        );
        assert_eq!(
            policy("approvals = { rollback = 1 }").approvals,
            Approvals { default: 0, danger: 0, rollback: 1 },
            "a rollback can need approval where rollouts need none"
        );
        assert!(toml::from_str::<Config>("[environments.production]\napprovals = { dflt = 1 }").is_err());
    }

    #[test]
    fn approval_counts_nobody_can_reach_are_refused_by_name() {
        let finish = |text: &str| {
            let mut config: Config = toml::from_str(text).unwrap();
            config.finish().map(|()| config)
        };
        let low_danger = finish(
            "[environments.production]\napprovals = { default = 2, danger = 1 }\n\
                                 roles = { \"*\" = [\"approve\"] }",
        );
        assert!(
            low_danger.unwrap_err().to_string().contains("[environments.production] approvals: danger = 1")
        );
        let zero_timeout = finish("[environments.production]\napproval_timeout_secs = 0");
        assert!(zero_timeout.unwrap_err().to_string().contains("approval_timeout_secs"));
        // With TLS on, two approvals need two named approvers (or "*").
        let one_approver = finish(
            "[environments.production]\napprovals = { default = 1, danger = 2 }\n\
                                   roles = { bob = [\"approve\"], alice = [\"deploy\"] }",
        );
        let error = one_approver.unwrap_err().to_string();
        assert!(error.contains("needs up to 2 approver(s)") && error.contains("(bob)"), "{error}");
        finish("[environments.production]\napprovals = 2\nroles = { bob = [\"approve\"], carol = [\"approve\"] }")
            .unwrap();
        finish("[environments.production]\napprovals = 2\nroles = { \"*\" = [\"approve\"] }").unwrap();
        // In insecure mode everyone holds every role.
        finish("[tls]\ninsecure = true\n[environments.production]\napprovals = 2").unwrap();
    }

    #[test]
    fn restart_policies_load_and_bad_ones_are_refused_naming_the_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coordinator.toml");
        let production = Config::load(Some(&path), Files::Skip).unwrap().environments.policy("production");
        assert_eq!(production.restart.canary, 1);
        assert_eq!(production.restart.batch, Count::Percent(25));
        assert_eq!(production.smoke.len(), 3);
        assert_eq!(production.watch.map(|w| w.duration), Some(Span::secs(600)));
        // A bad value inside an environment's table keeps its own message.
        let error =
            toml::from_str::<Config>("[environments.production]\nrestart = { min_healthy = \"30 secs\" }")
                .unwrap_err()
                .to_string();
        assert!(error.contains("\"30 secs\" is not a duration") && error.contains("min_healthy"), "{error}");
        let error = toml::from_str::<Config>("[environments.production]\nrestart = { batches = 2 }")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `batches`"), "{error}");
        let mut config: Config = toml::from_str(
            "[tls]\ninsecure = true\n[environments.production]\nwatch = { duration = \"0s\" }",
        )
        .unwrap();
        let error = config.finish().unwrap_err().to_string();
        assert!(error.contains("[environments.production] watch.duration"), "{error}");
    }

    #[test]
    fn a_lease_below_etcds_minimum_is_refused() {
        let mut config = Config { lease_ttl_secs: 1, ..Config::default() };
        assert!(config.finish().unwrap_err().to_string().contains("lease_ttl_secs"));
    }
}
