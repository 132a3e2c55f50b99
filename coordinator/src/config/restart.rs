//! `[environments.NAME]` keys for the restart phase: restarts in batches
//! with a canary (`restart`), smoke tests (`smoke`) and the watch window
//! after maintenance off (`watch`).
//!
//! ```toml
//! [environments.production]
//! restart = { batch = "25%", canary = 1, min_healthy = "30s", healthy_deadline = "5m", max_failures = 0, select = { region = "eu-west-1" } }
//! smoke = [
//!   { name = "home", path = "/", status = 200, body_contains = "Welcome", after = "maintenance_off" },
//!   { name = "api", path = "/api/status", json_field = "db.ok", json_equals = "true", timeout = "3s", retries = 2 },
//!   { name = "queue", command = "check-queue" },   # from the agent's [app] smoke_commands
//! ]
//! watch = { duration = "10m", interval = "15s", restore = false }
//! ```
//!
//! Durations are strings read by `humantime_serde`: `"500ms"`, `"30s"`,
//! `"5m"`, `"1h"`, or sums such as `"1m30s"`.

use std::collections::BTreeMap;
use std::time::Duration;

use runway_daemon::config_check::duration_schema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration written as `"30s"`, `"5m"`, `"1m30s"`, `"500ms"`, shown
/// the same way (`Display`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Span(
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub Duration,
);

impl Span {
    pub fn secs(secs: u64) -> Self {
        Span(Duration::from_secs(secs))
    }

    pub fn millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.millis();
        match ms {
            0 => f.write_str("0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

/// A number of hosts: `2`, or a share of the hosts restarted, `"25%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Hosts(u32),
    Percent(u32),
}

impl Count {
    /// Of `total` hosts, rounded up (at least 1): a batch size.
    pub fn batch_of(self, total: usize) -> usize {
        match self {
            Count::Hosts(n) => n as usize,
            Count::Percent(p) => (total * p as usize).div_ceil(100),
        }
        .max(1)
    }

    /// Of `total` hosts, rounded down: failures tolerated.
    pub fn failures_of(self, total: usize) -> usize {
        match self {
            Count::Hosts(n) => n as usize,
            Count::Percent(p) => total * p as usize / 100,
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Hosts(n) => write!(f, "{n}"),
            Count::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Count::Hosts(n) => serializer.serialize_u32(*n),
            Count::Percent(_) => serializer.serialize_str(&self.to_string()),
        }
    }
}

impl JsonSchema for Count {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Count".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of hosts (`2`) or a percentage of the hosts (`\"25%\"`).",
            "type": ["integer", "string"],
        })
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Serialize, JsonSchema)]
        #[serde(untagged)]
        enum Form {
            Number(u32),
            Text(String),
        }
        let bad = |what: &str| {
            serde::de::Error::custom(format!(
                "{what} is not a host count; write a number of hosts (`2`) or a percentage (`\"25%\"`)"
            ))
        };
        match Form::deserialize(deserializer).map_err(|_| bad("this"))? {
            Form::Number(n) => Ok(Count::Hosts(n)),
            Form::Text(text) => {
                let percent = text.trim().strip_suffix('%').and_then(|p| p.trim().parse::<u32>().ok());
                match percent {
                    Some(p) if p <= 100 => Ok(Count::Percent(p)),
                    _ => Err(bad(&format!("{text:?}"))),
                }
            }
        }
    }
}

/// `restart = { … }`: how the app hosts are restarted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Hosts restarted together after the canaries (`2` or `"25%"` of the
    /// hosts); batches run one after another.
    pub batch: Count,
    /// Hosts restarted first, alone, that must become and stay healthy
    /// before any other host is restarted. A canary that fails stops the
    /// rollout whatever `max_failures` says.
    pub canary: u32,
    /// How long a restarted host must stay healthy (probe after probe)
    /// before it counts as healthy.
    pub min_healthy: Span,
    /// How long a host may take to count as healthy; unset: the agent's
    /// `[app] health_timeout`.
    pub healthy_deadline: Option<Span>,
    /// Host failures tolerated (`0` or `"10%"` of the hosts); one more stops
    /// the rollout after its batch and rolls back the restart phase.
    pub max_failures: Count,
    /// Only app agents with all these labels take part in the rollout.
    pub select: BTreeMap<String, String>,
}

impl Default for RestartPolicy {
    /// One host at a time, no canary, no failure tolerated: the runbook's
    /// own way.
    fn default() -> Self {
        Self {
            batch: Count::Hosts(1),
            canary: 0,
            min_healthy: Span::default(),
            healthy_deadline: None,
            max_failures: Count::Hosts(0),
            select: BTreeMap::new(),
        }
    }
}

/// When a smoke check runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmokeAfter {
    /// After each host's restart and again after maintenance off (and in
    /// the watch window).
    #[default]
    Both,
    /// Only after each host's restart.
    Restart,
    /// Only after maintenance off (and in the watch window): for pages
    /// that maintenance mode takes down.
    MaintenanceOff,
}

/// One entry of `smoke = [ … ]`: an HTTP request to the app (`path`) or a
/// command from the agent's own config (`command`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    /// Names the check in events and errors.
    pub name: String,
    /// `GET` this path on the app's origin (that of the agent's `health_url`).
    pub path: Option<String>,
    /// The name of a command in the agent's `[app] smoke_commands`.
    pub command: Option<String>,
    /// Expected HTTP status.
    #[serde(default = "default_status")]
    pub status: u16,
    /// The body must contain this.
    #[serde(default)]
    pub body_contains: String,
    /// The body is JSON and this field (dotted: `a.b.0`) equals `json_equals`.
    #[serde(default)]
    pub json_field: String,
    /// The value `json_field` must have, as text (`"true"`, `"3"`, `"ok"`).
    #[serde(default)]
    pub json_equals: String,
    /// How long one try may take.
    #[serde(default = "default_smoke_timeout")]
    pub timeout: Span,
    /// Further tries after a failure, one second apart.
    #[serde(default)]
    pub retries: u32,
    /// When the check runs.
    #[serde(default)]
    pub after: SmokeAfter,
}

fn default_status() -> u16 {
    200
}

fn default_smoke_timeout() -> Span {
    Span::secs(5)
}

/// `watch = { duration = "10m", interval = "15s" }`: after maintenance
/// off, health and smoke checks keep running for `duration`; a failure
/// rolls the restart phase back. The rollout succeeds only after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchPolicy {
    /// How long the window lasts after maintenance off.
    pub duration: Span,
    /// Time between two rounds of health and smoke checks in the window.
    #[serde(default = "default_watch_interval")]
    pub interval: Span,
    /// Restore the backup too when the window fails and the migrations
    /// were not backward compatible. Off by default: traffic ran against
    /// the migrated database, and a restore loses what it wrote.
    #[serde(default)]
    pub restore: bool,
}

fn default_watch_interval() -> Span {
    Span::secs(15)
}

/// Checks the restart-phase keys of environment `name`.
pub fn check(
    name: &str,
    restart: &RestartPolicy,
    smoke: &[SmokeCheck],
    watch: Option<&WatchPolicy>,
) -> Result<(), String> {
    let key = |k: &str| format!("[environments.{name}] {k}");
    if restart.batch == Count::Hosts(0) || restart.batch == Count::Percent(0) {
        return Err(format!(
            "{}: a batch of 0 hosts would restart nothing; write 1 or more, or \"25%\"",
            key("restart.batch")
        ));
    }
    if let Some(deadline) = restart.healthy_deadline {
        if deadline.0.is_zero() {
            return Err(format!("{} must be longer than 0s", key("restart.healthy_deadline")));
        }
        if deadline <= restart.min_healthy {
            return Err(format!(
                "{} ({deadline}) must be longer than restart.min_healthy ({}): no host could stay healthy long enough in time",
                key("restart.healthy_deadline"),
                restart.min_healthy
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for check in smoke {
        let at = key(&format!("smoke {:?}", check.name));
        if check.name.trim().is_empty() {
            return Err(format!("{}: every smoke check needs a `name`", key("smoke")));
        }
        if !names.insert(check.name.as_str()) {
            return Err(format!("{at}: two smoke checks have this name"));
        }
        match (&check.path, &check.command) {
            (Some(path), None) => {
                if !path.starts_with('/') {
                    return Err(format!(
                        "{at}: `path` must start with `/` (it is requested on the app's own origin, that of the agent's health_url), got {path:?}"
                    ));
                }
                if !(100..=599).contains(&check.status) {
                    return Err(format!("{at}: `status` {} is not an HTTP status", check.status));
                }
                if check.json_field.is_empty() != check.json_equals.is_empty() {
                    return Err(format!("{at}: `json_field` and `json_equals` go together"));
                }
            }
            (None, Some(command)) => {
                if command.trim().is_empty() {
                    return Err(format!(
                        "{at}: `command` names a command of the agent's [app] smoke_commands"
                    ));
                }
                if !check.body_contains.is_empty() || !check.json_field.is_empty() {
                    return Err(format!("{at}: `body_contains` and `json_field` are for `path` checks"));
                }
            }
            _ => {
                return Err(format!(
                    "{at}: give either `path` (an HTTP GET of the app) or `command` (from the agent's [app] smoke_commands)"
                ));
            }
        }
        if check.timeout.0.is_zero() {
            return Err(format!("{at}: `timeout` must be longer than 0s"));
        }
    }
    if let Some(watch) = watch {
        if watch.duration.0.is_zero() {
            return Err(format!("{} must be longer than 0s (or leave `watch` out)", key("watch.duration")));
        }
        if watch.interval.0.is_zero() || watch.interval > watch.duration {
            return Err(format!(
                "{} ({}) must be longer than 0s and at most watch.duration ({})",
                key("watch.interval"),
                watch.interval,
                watch.duration
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(Span::secs(90).to_string(), "90s");
        assert_eq!(Span::secs(300).to_string(), "5m");
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    #[test]
    fn counts_are_hosts_or_percentages() {
        assert_eq!(Count::Hosts(2).batch_of(5), 2);
        assert_eq!(Count::Percent(25).batch_of(5), 2, "rounded up");
        assert_eq!(Count::Percent(1).batch_of(5), 1, "at least one");
        assert_eq!(Count::Percent(10).failures_of(5), 0, "rounded down");
        assert_eq!(Count::Percent(40).failures_of(5), 2);
        #[derive(Deserialize, Serialize, JsonSchema)]
        struct T {
            c: Count,
        }
        assert_eq!(toml::from_str::<T>("c = 3").unwrap().c, Count::Hosts(3));
        assert_eq!(toml::from_str::<T>("c = \"25%\"").unwrap().c, Count::Percent(25));
        for bad in ["c = \"25\"", "c = \"150%\"", "c = -1", "c = true"] {
            let error = toml::from_str::<T>(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains("host count"), "{bad}: {error}");
        }
    }

    fn restart(text: &str) -> RestartPolicy {
        #[derive(Deserialize, Serialize, JsonSchema)]
        struct T {
            restart: RestartPolicy,
        }
        toml::from_str::<T>(&format!("restart = {text}")).unwrap().restart
    }

    #[test]
    fn the_issue_example_reads_and_checks() {
        let policy = restart(
            "{ batch = 2, canary = 1, min_healthy = \"30s\", healthy_deadline = \"5m\", max_failures = \"10%\", select = { region = \"eu-west-1\" } }",
        );
        assert_eq!(policy.batch, Count::Hosts(2));
        assert_eq!(policy.canary, 1);
        assert_eq!(policy.min_healthy, Span::secs(30));
        assert_eq!(policy.healthy_deadline, Some(Span::secs(300)));
        assert_eq!(policy.max_failures, Count::Percent(10));
        assert_eq!(policy.select["region"], "eu-west-1");
        check("production", &policy, &[], None).unwrap();
    }

    #[test]
    fn impossible_policies_are_refused_by_key() {
        let error = check("prod", &restart("{ batch = 0 }"), &[], None).unwrap_err();
        assert!(error.contains("[environments.prod] restart.batch"), "{error}");
        let error =
            check("prod", &restart("{ min_healthy = \"1m\", healthy_deadline = \"30s\" }"), &[], None)
                .unwrap_err();
        assert!(
            error.contains("restart.healthy_deadline (30s) must be longer than restart.min_healthy (1m)"),
            "{error}"
        );
        let watch = WatchPolicy { duration: Span::secs(10), interval: Span::secs(15), restore: false };
        let error = check("prod", &RestartPolicy::default(), &[], Some(&watch)).unwrap_err();
        assert!(error.contains("watch.interval (15s)"), "{error}");
        #[derive(Deserialize, Serialize, JsonSchema)]
        struct T {
            smoke: Vec<SmokeCheck>,
        }
        let smoke = |text: &str| toml::from_str::<T>(&format!("smoke = [{text}]")).unwrap().smoke;
        for (text, needle) in [
            ("{ name = \"a\" }", "either `path`"),
            ("{ name = \"a\", path = \"/\", command = \"x\" }", "either `path`"),
            ("{ name = \"a\", path = \"http://evil/\" }", "must start with `/`"),
            ("{ name = \"a\", path = \"/\", json_field = \"x\" }", "go together"),
            ("{ name = \"a\", path = \"/\" }, { name = \"a\", path = \"/x\" }", "two smoke checks"),
        ] {
            let error = check("prod", &RestartPolicy::default(), &smoke(text), None).unwrap_err();
            assert!(error.contains(needle) && error.contains("[environments.prod] smoke"), "{text}: {error}");
        }
        let fine = smoke(
            "{ name = \"home\", path = \"/\", timeout = \"2s\", retries = 2, after = \"maintenance_off\" }, { name = \"q\", command = \"check-queue\" }",
        );
        check("prod", &RestartPolicy::default(), &fine, None).unwrap();
        assert_eq!(fine[0].after, SmokeAfter::MaintenanceOff);
        assert_eq!(fine[1].status, 200);
    }
}
