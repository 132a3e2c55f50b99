//! Analysis as policy: where to ask (`[prometheus]`), what to ask and the
//! limits (`[[environments.NAME.analysis]]`), and the `monitor` phase after
//! a rollout succeeded.
//!
//! ```toml
//! [prometheus]
//! url = "https://prometheus:9090"
//! ca_file = "/etc/runway/prometheus-ca.pem"       # else the system roots
//! bearer_token_file = "/etc/runway/prometheus.token"  # or bearer_token_env, or username + password_file | password_env
//! timeout = "10s"
//!
//! [environments.production]
//! monitor = "24h"
//! on_monitor_failure = "rollback"     # or "notify" (the default)
//!
//! [[environments.production.analysis]]
//! name = "errors"
//! query = 'sum(rate(http_requests_total{code=~"5..",host=~"{{hosts}}"}[1m])) / sum(rate(http_requests_total{host=~"{{hosts}}"}[1m]))'
//! max = 0.01
//! interval = "30s"
//! failure_limit = 0
//! inconclusive = "fail"
//!
//! [[environments.production.analysis]]
//! name = "p99"
//! query = 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host=~"{{hosts}}"}[1m])))'
//! compare = "baseline"                # canary against the hosts not yet restarted
//! factor = 1.5                        # fail above baseline × factor + margin
//! margin = 0.05
//! ```
//!
//! The checks themselves (templates, queries, verdicts) live in
//! `crate::analysis`; this module only reads and checks the keys.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Span;
use runway_daemon::config_check::{Files, Problems};

/// `[prometheus]`: where analysis queries go. Credentials come from files
/// or the environment and are never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The server's base URL, `http(s)://HOST:PORT[/PATH]`, without
    /// credentials in it.
    pub url: String,
    /// A PEM CA bundle to trust for an `https` URL (else the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// An environment variable holding a bearer token.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Basic auth user; the password from `password_file` or `password_env`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the basic auth password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the basic auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// How long one query may take, connecting included.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
}

fn default_timeout() -> Span {
    Span::secs(10)
}

/// A limit or factor: a float compared by its bits, so policies stay `Eq`.
#[derive(Debug, Clone, Copy, Default, PartialOrd, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Number(pub f64);

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Number {}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a measurement without a usable value counts as (no data, NaN, a
/// query error, Prometheus unreachable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// As a failed measurement.
    #[default]
    Fail,
    /// Not at all, until more than `consecutive_error_limit` come in a row.
    Ignore,
}

impl Inconclusive {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Ignore => "ignore",
        }
    }
}

/// `compare = "baseline"`: the query runs for the canaries and for the
/// hosts not yet restarted (`{{hosts}}` is each group in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    Baseline,
}

/// One `[[environments.NAME.analysis]]` check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisCheck {
    /// Names the check in events, metrics and `rollout plan`; unique per environment.
    pub name: String,
    /// PromQL with `{{environment}}`, `{{hosts}}`, `{{canary_hosts}}`,
    /// `{{baseline_hosts}}`, `{{version}}`, `{{previous_version}}`. Must
    /// give one number (a scalar, or a vector of one sample).
    pub query: String,
    /// A measurement above fails.
    #[serde(default)]
    pub max: Option<Number>,
    /// A measurement below fails.
    #[serde(default)]
    pub min: Option<Number>,
    /// Canary against baseline instead of a fixed limit.
    #[serde(default)]
    pub compare: Option<Compare>,
    /// With `compare`: fail above baseline × factor + margin.
    #[serde(default = "one")]
    pub factor: Number,
    /// With `compare`: what the canaries may be above baseline × factor.
    #[serde(default)]
    pub margin: Number,
    /// Time between measurements.
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// How long after a phase begins its first measurement is taken
    /// (Argo's `initialDelay`): time for restarted canaries to serve
    /// traffic. One `interval` unless set.
    #[serde(default)]
    pub initial_delay: Option<Span>,
    /// Failed measurements tolerated; one more fails the analysis (Argo's `failureLimit`).
    #[serde(default)]
    pub failure_limit: u32,
    /// What a measurement without a value counts as.
    #[serde(default)]
    pub inconclusive: Inconclusive,
    /// Inconclusive measurements in a row tolerated with `inconclusive =
    /// "ignore"`; one more fails the analysis (Argo's `consecutiveErrorLimit`, 4).
    #[serde(default = "default_consecutive")]
    pub consecutive_error_limit: u32,
}

fn one() -> Number {
    Number(1.0)
}

fn default_interval() -> Span {
    Span::secs(30)
}

fn default_consecutive() -> u32 {
    4
}

impl AnalysisCheck {
    /// `value > 0.01` style text of the limit, for events and `rollout plan`.
    pub fn limit(&self) -> String {
        match (self.compare, self.max, self.min) {
            (Some(Compare::Baseline), _, _) => {
                format!("≤ baseline × {} + {}", self.factor, self.margin)
            }
            (None, Some(max), Some(min)) => format!("between {min} and {max}"),
            (None, Some(max), None) => format!("≤ {max}"),
            (None, None, Some(min)) => format!("≥ {min}"),
            (None, None, None) => "no limit".to_owned(),
        }
    }

    /// One line for `runway rollout plan`.
    pub fn describe(&self) -> String {
        format!(
            "analysis {}: {} every {}, failures tolerated {}, inconclusive = {}{}: {}",
            self.name,
            self.limit(),
            self.interval,
            self.failure_limit,
            self.inconclusive.as_str(),
            if self.inconclusive == Inconclusive::Ignore {
                format!(" (at most {} in a row)", self.consecutive_error_limit)
            } else {
                String::new()
            },
            self.query
        )
    }
}

/// What a failed analysis in the `monitor` phase does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMonitorFailure {
    /// Tell the webhooks (`degraded`); change nothing.
    #[default]
    Notify,
    /// Tell them, and roll back: the previous app version, and the
    /// migrations by their proven downs (writes kept). Never a restore:
    /// traffic has written to the new schema.
    Rollback,
}

impl OnMonitorFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::Rollback => "rollback",
        }
    }
}

/// Placeholders a query may use.
pub const PLACEHOLDERS: [&str; 6] =
    ["environment", "hosts", "canary_hosts", "baseline_hosts", "version", "previous_version"];

/// Checks environment `name`'s analysis keys.
pub(super) fn check(
    name: &str,
    checks: &[AnalysisCheck],
    prometheus: Option<&PrometheusConfig>,
    (monitor, runs): (Option<Span>, bool),
    problems: &mut Problems,
) {
    let key = |i: usize, key: &str| format!("[[environments.{name}.analysis]] #{} {key}", i + 1);
    if !checks.is_empty() && !runs {
        problems.add(
            format!("[environments.{name}] analysis"),
            "never runs: it runs during the canaries' min_healthy (restart.canary), the watch window (watch) \
             and monitor; set at least one",
        );
    }
    if !checks.is_empty() && prometheus.is_none() {
        problems.add(
            format!("[environments.{name}] analysis"),
            "needs a [prometheus] table with the url the queries go to",
        );
    }
    if monitor.is_some() && checks.is_empty() {
        problems.add(
            format!("[environments.{name}] monitor"),
            "monitors nothing: add [[environments.NAME.analysis]] checks, or remove monitor",
        );
    }
    if monitor.is_some_and(|m| m.0.is_zero()) {
        problems.add(format!("[environments.{name}] monitor"), "must be longer than 0s");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, check) in checks.iter().enumerate() {
        if check.name.trim().is_empty() || !seen.insert(check.name.as_str()) {
            problems
                .add(key(i, "name"), format_args!("{:?} must be set and unique per environment", check.name));
        }
        if check.query.trim().is_empty() {
            problems.add(key(i, "query"), "must not be empty");
        }
        if let Some(unknown) = unknown_placeholder(&check.query) {
            problems.add(
                key(i, "query"),
                format_args!("{{{{{unknown}}}}} is not a placeholder; use {}", PLACEHOLDERS.join(", ")),
            );
        }
        match (check.compare, check.max, check.min) {
            (None, None, None) => problems.add(key(i, "max"), "set max, min, or compare = \"baseline\""),
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => problems
                .add(key(i, "compare"), "compare = \"baseline\" takes factor and margin, not max or min"),
            _ => {}
        }
        let bad = |n: Number| !n.0.is_finite();
        if [check.max, check.min].into_iter().flatten().any(bad) || bad(check.margin) || bad(check.factor) {
            problems.add(key(i, "max"), "limits, factor and margin must be finite numbers");
        }
        if check.compare.is_some() && check.factor.0 <= 0.0 {
            problems.add(key(i, "factor"), "must be above 0");
        }
        if check.interval.0 < std::time::Duration::from_millis(100) {
            problems.add(key(i, "interval"), format_args!("is {}; at least 100ms", check.interval));
        }
    }
}

/// The first `{{name}}` in `query` that is not a placeholder.
pub fn unknown_placeholder(query: &str) -> Option<String> {
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Some(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    None
}

/// Checks `[prometheus]`: the URL, and with [`Files::Check`] that its
/// files are readable and its variables set.
pub(super) fn check_prometheus(prometheus: &PrometheusConfig, files: Files, problems: &mut Problems) {
    match url::Url::parse(&prometheus.url) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            problems.add("[prometheus] url", "must be an http:// or https:// URL")
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => problems.add(
            "[prometheus] url",
            "must not carry credentials; use username with password_file or password_env",
        ),
        Ok(_) => {}
        Err(e) => problems.add("[prometheus] url", format_args!("is not a URL: {e}")),
    }
    if prometheus.timeout.0.is_zero() {
        problems.add("[prometheus] timeout", "must be longer than 0s");
    }
    let tokens = [prometheus.bearer_token_file.is_some(), prometheus.bearer_token_env.is_some()];
    let passwords = [prometheus.password_file.is_some(), prometheus.password_env.is_some()];
    if tokens.iter().filter(|t| **t).count() > 1 || passwords.iter().filter(|t| **t).count() > 1 {
        problems.add("[prometheus]", "name each credential once: a file or an environment variable");
    }
    if tokens.contains(&true) && prometheus.username.is_some() {
        problems.add("[prometheus]", "use a bearer token or basic auth (username), not both");
    }
    if prometheus.username.is_some() != passwords.contains(&true) {
        problems.add("[prometheus] username", "basic auth needs username and password_file or password_env");
    }
    if files != Files::Check {
        return;
    }
    let files = [
        ("[prometheus] ca_file", &prometheus.ca_file),
        ("[prometheus] bearer_token_file", &prometheus.bearer_token_file),
        ("[prometheus] password_file", &prometheus.password_file),
    ];
    for (key, file) in files {
        if let Some(file) = file
            && let Err(e) = std::fs::metadata(file).and_then(|_| std::fs::File::open(file))
        {
            problems.add(key, format_args!("cannot read {}: {e}", file.display()));
        }
    }
    for (key, var) in [
        ("[prometheus] bearer_token_env", &prometheus.bearer_token_env),
        ("[prometheus] password_env", &prometheus.password_env),
    ] {
        if let Some(var) = var
            && std::env::var_os(var).is_none()
        {
            problems.add(key, format_args!("names {var}, which is not set"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(checks: &str, prometheus: bool) -> String {
        let table: toml::Table = toml::from_str(checks).unwrap();
        let checks: Vec<AnalysisCheck> = table["analysis"].clone().try_into().unwrap();
        let prometheus = prometheus.then(|| PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            ca_file: None,
            bearer_token_file: None,
            bearer_token_env: None,
            username: None,
            password_file: None,
            password_env: None,
            timeout: Span::secs(1),
        });
        let mut problems = Problems::new("c.toml");
        check("prod", &checks, prometheus.as_ref(), (None, true), &mut problems);
        problems.into_result().err().map(|p| p.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_check_needs_a_limit_known_placeholders_and_a_server() {
        let good = "analysis = [{ name = \"errors\", query = 'x{host=~\"{{hosts}}\"}', max = 0.01 }]";
        assert_eq!(problems_of(good, true), "");
        assert!(problems_of(good, false).contains("needs a [prometheus] table"));
        let no_limit = "analysis = [{ name = \"e\", query = \"x\" }]";
        assert!(problems_of(no_limit, true).contains("set max, min, or compare"));
        let unknown = "analysis = [{ name = \"e\", query = \"x{a=~'{{host}}'}\", max = 1 }]";
        assert!(
            problems_of(unknown, true).contains("{{host}} is not a placeholder"),
            "{}",
            problems_of(unknown, true)
        );
        let both = "analysis = [{ name = \"e\", query = \"x\", compare = \"baseline\", max = 1 }]";
        assert!(problems_of(both, true).contains("not max or min"));
        let twice =
            "analysis = [{ name = \"e\", query = \"x\", max = 1 }, { name = \"e\", query = \"y\", min = 1 }]";
        assert!(problems_of(twice, true).contains("unique"));
    }

    #[test]
    fn prometheus_credentials_are_checked_and_never_in_the_url() {
        let mut prometheus: PrometheusConfig =
            toml::from_str("url = \"https://u:p@prom:9090\"\nusername = \"u\"").unwrap();
        let mut problems = Problems::new("c.toml");
        check_prometheus(&prometheus, Files::Skip, &mut problems);
        let text = problems.into_result().unwrap_err().to_string();
        assert!(text.contains("must not carry credentials") && text.contains("basic auth needs"), "{text}");
        prometheus.url = "https://prom:9090".into();
        prometheus.password_env = Some("RUNWAY_TEST_UNSET_PASSWORD".into());
        let mut problems = Problems::new("c.toml");
        check_prometheus(&prometheus, Files::Check, &mut problems);
        let text = problems.into_result().unwrap_err().to_string();
        assert!(text.contains("RUNWAY_TEST_UNSET_PASSWORD, which is not set"), "{text}");
    }
}
