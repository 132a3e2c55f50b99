//! The coordinator's config: defaults ← TOML file ← environment ← command
//! line, then checked as a whole before the coordinator binds or connects
//! anywhere ([`Config::check`]; `runway config check --coordinator` runs
//! the same checks alone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_daemon::config_check::{ParseError, Renamed, duration_schema, renamed};
use runway_identity::tls::TlsFiles;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod analysis;
mod check;
mod databases;
mod restart;
mod runbook;
mod server;
pub use analysis::{AnalysisCheck, Compare, Inconclusive, Number, OnMonitorFailure, PrometheusConfig};
pub use check::names_a_coordinator;
pub use databases::DatabasePolicy;
pub use restart::{Count, RestartPolicy, SmokeAfter, SmokeCheck, Span, WatchPolicy};
pub use runbook::{Maintenance, NotifyEvent, Requires, Secret, Webhook, WebhookFormat};
pub use runway_daemon::config_check::format_duration;
pub use runway_daemon::config_check::{Files, Problems};
pub use server::ServerLimits;

/// `step_deadline` unless configured: 6 hours, longer than any migration
/// should take, so only an agent that is really gone reaches it.
pub const DEFAULT_STEP_DEADLINE: Duration = Duration::from_secs(6 * 60 * 60);

/// The keys that once counted seconds (or days) and are durations now,
/// still read under their old names with a warning (see
/// [`runway_daemon::config_check::renamed`]).
pub const RENAMED: [Renamed; 9] = [
    Renamed::secs("", "lease_ttl_secs", "lease_ttl"),
    Renamed::secs("", "heartbeat_secs", "heartbeat"),
    Renamed::secs("", "agent_grace_secs", "agent_grace"),
    Renamed::secs("", "step_deadline_secs", "step_deadline"),
    Renamed::secs("retention", "every_secs", "every"),
    Renamed::days("retention", "keep_days", "keep_for"),
    Renamed::days("retention", "keep_audit_days", "keep_audit_for"),
    Renamed::secs("environments.*", "rollback_window_secs", "rollback_window"),
    Renamed::secs("environments.*", "approval_timeout_secs", "approval_timeout"),
];

/// See `deploy/coordinator.toml` for a commented example. Durations are
/// strings read by `humantime_serde`: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`,
/// `"7d"`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(transform = runway_daemon::config_check::host_dependent("name"))]
pub struct Config {
    /// Unique name of this coordinator (defaults to the host name, from
    /// `HOSTNAME`).
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
    /// The leader's lease TTL in etcd: how long a leader that stopped
    /// renewing it (crashed, cut off) keeps leadership before another
    /// coordinator takes over. At least 2s (etcd's minimum), whole seconds.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub lease_ttl: Duration,
    /// Environments rollouts may target, with their policies: a list of
    /// names (default policies), or one `[environments.NAME]` table each.
    pub environments: Environments,
    /// Time between heartbeats on agent streams (at least 1s; shorter is
    /// read as 1s).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub heartbeat: Duration,
    /// How long an operator's backup call (`runway backup list|show|verify|restore`)
    /// waits for a disconnected DB agent before it tells the caller so.
    /// The command is not failed: it carries on on the host and its
    /// journal keeps the result. Rollouts do not use this: a rollout step
    /// waits for an away agent's real result, up to `step_deadline`.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub agent_grace: Duration,
    /// How long a rollout step waits for an agent that is away, counted
    /// from when this leader dispatched the step. Until then an away
    /// agent's result decides the step when it comes back (its journal
    /// answers the re-sent command). Once the deadline has passed with an
    /// agent still away, the outcome is unknown: the rollout holds
    /// (maintenance mode stays on, nothing more runs) and ends `failed`,
    /// asking for a person. A connected agent still working is waited for
    /// past the deadline. At least 1s.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub step_deadline: Duration,
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
    /// Warnings about the file (old keys read under their new names), one
    /// line each, naming the file: the coordinator prints them at start,
    /// `runway config check` with its result.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[retention]`: finished rollouts (with their events and decisions) are
/// deleted beyond the newest `keep_rollouts` or after `keep_for`, but
/// never inside their environment's rollback window; then bundles no kept
/// rollout refers to. The audit log is kept longer, on bounds of its own
/// (`keep_audit_entries`, `keep_audit_for`): export it first with
/// `runway audit --output json` where it must outlive them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// How many finished rollouts are kept at most (the newest); at least 1.
    pub keep_rollouts: usize,
    /// How long a finished rollout is kept after it ended (whole days
    /// count; at least 1d).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub keep_for: Duration,
    /// How many audit log entries are kept at most (the newest).
    pub keep_audit_entries: usize,
    /// How long an audit log entry is kept (whole days count).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub keep_audit_for: Duration,
    /// How often the leader prunes (at least 1s).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub every: Duration,
    /// After each prune, compact etcd's history to the revision the
    /// previous prune started at (history younger than `every` stays).
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
            keep_for: Duration::from_secs(90 * 86_400),
            keep_audit_entries: 100_000,
            keep_audit_for: Duration::from_secs(365 * 86_400),
            every: Duration::from_secs(600),
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
            lease_ttl: Duration::from_secs(5),
            environments: Environments::named(&["staging", "production"]),
            heartbeat: Duration::from_secs(2),
            agent_grace: Duration::from_secs(60),
            step_deadline: DEFAULT_STEP_DEADLINE,
            tls: TlsFiles::default(),
            telemetry: runway_telemetry::Config::default(),
            retention: Retention::default(),
            max_bundle_bytes: runway_proto::bundle::MAX_BUNDLE_BYTES,
            server: ServerLimits::default(),
            prometheus: None,
            warnings: Vec::new(),
        }
    }
}

/// What a rollout does when its migrate step fails after the database
/// changed (earlier migrations applied, or part of the failed one committed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDownFailure {
    /// Restore the rollout's backup, still in maintenance mode.
    #[default]
    Restore,
    /// Stay in maintenance mode and stop: a person decides.
    Hold,
}

/// `approval_timeout` unless configured: a day.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// `[environments.NAME]`: the policies of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EnvironmentPolicy {
    /// When the migrate step fails after the database changed (see
    /// [`OnMigrateFailure`]).
    pub on_migrate_failure: OnMigrateFailure,
    /// When an app host does not become healthy after its restart (see
    /// [`OnRestartFailure`]).
    pub on_restart_failure: OnRestartFailure,
    /// By migration or by restore (see [`Rollback`]).
    pub rollback: Rollback,
    /// When a rollback by migration fails (see [`OnDownFailure`]).
    pub on_down_failure: OnDownFailure,
    /// How long a rollout's backup stays pinned (never pruned by the
    /// agents' `keep`) after the rollout ended, and the rollout itself kept
    /// by `[retention]`; `"0s"` releases it at once. Whole seconds count.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub rollback_window: Duration,
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
    /// How long a rollout waits for its approvals before it ends
    /// `cancelled` (nothing changed); at least 1s, whole seconds count.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub approval_timeout: Duration,
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
            rollback_window: Duration::ZERO,
            roles: BTreeMap::new(),
            approvals: Approvals::default(),
            approval_timeout: DEFAULT_APPROVAL_TIMEOUT,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

impl JsonSchema for Approvals {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Approvals".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A count (`approvals = 1`) or a table (`approvals = { default = 1, danger = 2, rollback = 1 }`).",
            "type": ["integer", "object"],
        })
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
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
        if self.approval_timeout < Duration::from_secs(1) {
            problems.add(
                key("approval_timeout"),
                format_args!(
                    "must be at least 1s (how long a rollout waits for its approvals); the default is {:?}",
                    format_duration(DEFAULT_APPROVAL_TIMEOUT)
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environments(BTreeMap<String, EnvironmentPolicy>);

/// In the reference: the table form, one [`EnvironmentPolicy`] per name.
impl JsonSchema for Environments {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Environments".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<EnvironmentPolicy>(),
        })
    }
}

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
        const KEYS: &str = "keys: on_migrate_failure = \"restore\" | \"hold\", on_restart_failure = \"revert\" | \"hold\", rollback = \"auto\" | \"migration\" | \"restore\", on_down_failure = \"restore\" | \"hold\", rollback_window = \"1d\", roles = { NAME = [\"view\" | \"deploy\" | \"restore\" | \"approve\", ...] }, approvals = N | { default = N, danger = M }, approval_timeout = \"24h\", requires = { environment = NAME, soak = \"24h\" }, maintenance = \"always\" | \"auto\" | \"never\", webhooks = [{ name, format, url, ... }], restart = { batch, canary, min_healthy, healthy_deadline, max_failures, select }, smoke = [ { name, path | command, ... } ], watch = { duration, interval, restore }, databases = { canary, parallel, max_failures, uniform }, analysis = [{ name, query, max | min | compare, interval, failure_limit, inconclusive }], monitor = \"24h\", on_monitor_failure = \"notify\" | \"rollback\"";
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
                    // The error names the environment, the key and its problem.
                    let policy = EnvironmentPolicy::deserialize(table).map_err(|e| {
                        D::Error::custom(format!(
                            "[environments.{name}] {}; {KEYS}",
                            renamed::describe("", &e)
                        ))
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
    /// applies its command line, then [`Config::check`]s. Old keys
    /// ([`RENAMED`]) are read as their new ones, each with a warning in
    /// [`Config::warnings`].
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
                let parsed = renamed::parse::<Config>(path, &text, &RENAMED).map_err(|e| match e {
                    ParseError::Toml(e) => {
                        ConfigError::Parse { path: path.to_owned(), message: renamed::describe(&text, &e) }
                    }
                    ParseError::Renamed(problems) => ConfigError::Invalid(problems),
                })?;
                Config { warnings: parsed.warnings, ..parsed.config }
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
        if self.lease_ttl < Duration::from_secs(2) {
            problems.add(
                "lease_ttl",
                format_args!("is {:?}; etcd's minimum lease TTL is 2s", format_duration(self.lease_ttl)),
            );
        }
        if self.step_deadline < Duration::from_secs(1) {
            problems.add(
                "step_deadline",
                format_args!(
                    "must be at least 1s (how long a rollout step waits for an agent that is away before the \
                     rollout holds in maintenance mode); the default is {:?}",
                    format_duration(DEFAULT_STEP_DEADLINE)
                ),
            );
        }
        if self.environments.is_empty() {
            problems.add("environments", "must name at least one environment");
        }
        if self.retention.keep_rollouts == 0
            || self.retention.keep_for < Duration::from_secs(86_400)
            || self.retention.every < Duration::from_secs(1)
        {
            problems.add(
                "[retention]",
                "keep_rollouts must be at least 1, keep_for at least 1d and every at least 1s (defaults: \
                 keep_rollouts = 1000, keep_for = \"90d\", every = \"10m\")",
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coordinator.toml");
        let config = Config::load(Some(&path), Files::Skip).unwrap();
        assert_eq!(config.lease_ttl, Duration::from_secs(5));
        assert_eq!(config.step_deadline, DEFAULT_STEP_DEADLINE);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let production = config.environments.policy("production");
        assert_eq!(production.approvals, Approvals { default: 1, danger: 2, rollback: 0 });
        assert!(production.allows("carol", Role::Approve) && !production.allows("carol", Role::Deploy));
    }

    #[test]
    fn a_zero_step_deadline_is_refused_by_name() {
        let mut config: Config = toml::from_str("step_deadline = \"0s\"").unwrap();
        assert!(config.finish().unwrap_err().to_string().contains("step_deadline: must be at least 1s"));
        let mut config: Config = toml::from_str("step_deadline = \"1h\"\nagent_grace = \"20s\"").unwrap();
        config.finish().unwrap();
        assert_eq!(config.step_deadline, Duration::from_secs(3600));
        assert_eq!(config.agent_grace, Duration::from_secs(20));
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
        assert_eq!(policy("").approval_timeout, DEFAULT_APPROVAL_TIMEOUT);
        assert_eq!(policy("approvals = 1").approvals, Approvals { default: 1, danger: 1, rollback: 0 });
        assert_eq!(
            policy("approvals = { default = 1, danger = 2 }\napproval_timeout = \"10m\"").approvals,
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
        let zero_timeout = finish("[environments.production]\napproval_timeout = \"0s\"");
        assert!(zero_timeout.unwrap_err().to_string().contains("[environments.production] approval_timeout"));
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
            toml::from_str::<Config>("[environments.production]\nrestart = { min_healthy = \"30 parsecs\" }")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains(
                "[environments.production] invalid value: string \"30 parsecs\", expected a duration such as \
                             \"500ms\", \"30s\", \"5m\", \"1h30m\" or \"7d\" (key `restart.min_healthy`)"
            ),
            "{error}"
        );
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
        let mut config = Config { lease_ttl: Duration::from_secs(1), ..Config::default() };
        let error = config.finish().unwrap_err().to_string();
        assert!(error.contains("lease_ttl: is \"1s\"; etcd's minimum lease TTL is 2s"), "{error}");
    }

    /// `text` as a coordinator config file, read and checked.
    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, format!("{text}\n[tls]\ninsecure = true\n")).unwrap();
        let shown = |text: String| text.replace(&path.display().to_string(), "coordinator.toml");
        let mut config = Config::load(Some(&path), Files::Skip).map_err(|e| shown(e.to_string()))?;
        config.warnings = config.warnings.into_iter().map(shown).collect();
        Ok(config)
    }

    #[test]
    fn durations_are_humantime_strings() {
        let config = load(
            "lease_ttl = \"10s\"\nheartbeat = \"500ms\"\nstep_deadline = \"1h 30m\"\n\
             [retention]\nkeep_for = \"30d\"\nevery = \"5m\"\n[environments.production]\nrollback_window = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(config.lease_ttl, Duration::from_secs(10));
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(config.step_deadline, Duration::from_secs(5400));
        assert_eq!(config.retention.keep_for, Duration::from_secs(30 * 86_400));
        assert_eq!(config.retention.every, Duration::from_secs(300));
        assert_eq!(config.environments.policy("production").rollback_window, Duration::from_secs(7200));
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn old_secs_keys_still_work_with_a_deprecation_warning() {
        let config = load(
            "lease_ttl_secs = 10\n[retention]\nkeep_days = 7\n\
             [environments.production]\napproval_timeout_secs = 7200\n",
        )
        .unwrap();
        assert_eq!(config.lease_ttl, Duration::from_secs(10));
        assert_eq!(config.retention.keep_for, Duration::from_secs(7 * 86_400));
        assert_eq!(config.environments.policy("production").approval_timeout, Duration::from_secs(7200));
        let warnings = config.warnings.join("\n");
        for needle in [
            "coordinator.toml: warning: lease_ttl_secs = 10 is deprecated; write `lease_ttl = \"10s\"` instead",
            "coordinator.toml: warning: [retention] keep_days = 7 is deprecated; write `keep_for = \"7d\"`",
            "coordinator.toml: warning: [environments.production] approval_timeout_secs = 7200 is deprecated; \
             write `approval_timeout = \"2h\"`",
        ] {
            assert!(warnings.contains(needle), "{needle:?} in:\n{warnings}");
        }
        // The old spelling still goes through the same checks.
        let error = load("lease_ttl_secs = 1\n").unwrap_err();
        assert!(error.contains("lease_ttl: is \"1s\""), "{error}");
    }

    #[test]
    fn both_spellings_or_a_bad_duration_are_refused_naming_the_keys() {
        let error =
            load("[environments.production]\nrollback_window = \"1h\"\nrollback_window_secs = 3600\n")
                .unwrap_err();
        assert!(
            error.contains(
                "[environments.production] rollback_window_secs: both `rollback_window` and its old spelling \
                 `rollback_window_secs` are set"
            ),
            "{error}"
        );
        let error = load("lease_ttl = \"10 parsecs\"\n").unwrap_err();
        assert!(error.contains("\"10 parsecs\"") && error.contains("(key `lease_ttl`)"), "{error}");
        let error = load("lease_ttl = 10\n").unwrap_err();
        assert!(error.contains("(key `lease_ttl`)"), "{error}");
        let error = load("lease_ttl_sec = 10\n").unwrap_err();
        assert!(error.contains("unknown field `lease_ttl_sec`"), "{error}");
    }
}
