//! The runbook's policies of an environment (`[environments.NAME]`):
//! staging first (`requires`), maintenance only when needed
//! (`maintenance`), and notifications (`webhooks`). The keys' types and
//! their start-up checks; what they do lives in `crate::policy` and
//! `crate::webhooks`.

use std::collections::BTreeMap;
use std::time::Duration;

use runway_daemon::config_check::duration_schema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Environments, Problems};

/// `requires = { environment = "staging", soak = "24h" }`: a rollout of a
/// bundle here is refused unless a rollout of the same bundle digest
/// succeeded in `environment` at least `soak` earlier and was not rolled
/// back since.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// The environment the bundle must have succeeded in first.
    pub environment: String,
    /// How long before this rollout that success must be: `"24h"`,
    /// `"90m"`, `"30s"`, `"1d"`, or combined (`"1h30m"`); `"0s"` for none.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub soak: Duration,
}

/// `maintenance = "always" | "auto" | "never"`: when a rollout turns
/// maintenance mode on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Maintenance {
    /// Every rollout with app hosts turns maintenance mode on and off.
    #[default]
    Always,
    /// The preflight plan decides: when every pending statement is safe
    /// with the app running, maintenance on and off are skipped, and the
    /// rollout says why.
    Auto,
    /// Never: maintenance on and off are skipped, and a rollout whose plan
    /// needs maintenance mode is refused in preflight, before anything
    /// changes.
    Never,
}

impl Maintenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Auto => "auto",
            Self::Never => "never",
        }
    }
}

/// What a rollout tells webhooks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The rollout started (before preflight).
    Started,
    /// Preflight passed; the rollout waits for approvals.
    AwaitingApproval,
    /// Maintenance mode is on, on every app host.
    MaintenanceOn,
    /// Maintenance mode is off again.
    MaintenanceOff,
    /// The rollout ended `failed`.
    Failed,
    /// The rollout ended `rolled_back`.
    RolledBack,
    /// The rollout ended `succeeded`.
    Succeeded,
    /// The rollout ended `cancelled` (also: rejected, approval expired).
    Cancelled,
    /// A succeeded rollout's `monitor` analysis failed.
    Degraded,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 9] = [
        Self::Started,
        Self::AwaitingApproval,
        Self::MaintenanceOn,
        Self::MaintenanceOff,
        Self::Failed,
        Self::RolledBack,
        Self::Succeeded,
        Self::Cancelled,
        Self::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::AwaitingApproval => "awaiting_approval",
            Self::MaintenanceOn => "maintenance_on",
            Self::MaintenanceOff => "maintenance_off",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Succeeded => "succeeded",
            Self::Cancelled => "cancelled",
            Self::Degraded => "degraded",
        }
    }

    /// The status a status page shows, unless the webhook's `status`
    /// table says otherwise: Statuspage's scheduled-maintenance statuses
    /// for the way through, incident words for the way out.
    pub fn default_status(self) -> &'static str {
        match self {
            Self::Started | Self::AwaitingApproval => "scheduled",
            Self::MaintenanceOn => "in_progress",
            Self::MaintenanceOff => "verifying",
            Self::Succeeded | Self::Cancelled => "completed",
            Self::Failed => "identified",
            Self::RolledBack => "resolved",
            Self::Degraded => "investigating",
        }
    }
}

/// How a webhook's request looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// A Slack-compatible incoming webhook: `{"text": "…"}`.
    Slack,
    /// runway's own JSON: rollout id, environment, bundle digest, event,
    /// step, error, message, links.
    Json,
    /// `method`, `headers` and `body` with `{{placeholders}}`, e.g. a
    /// status page's incident or maintenance update.
    Template,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Json => "json",
            Self::Template => "template",
        }
    }
}

/// A value that must not be logged (a webhook URL, a header with a
/// token): its `Debug` prints a mask.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

/// Masked like `Debug`: a serialized config never holds the value.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl Secret {
    /// The value itself, for the request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// `webhooks = [{ name = "chat", format = "slack", url = "https://…" }, …]`
/// (or `[[environments.NAME.webhooks]]` tables).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Names the webhook in logs and in the delivery records (the URL is a
    /// secret and is never logged). Unique per environment.
    pub name: String,
    /// How the request looks.
    pub format: WebhookFormat,
    /// Where to send; a secret (redacted in logs and errors).
    pub url: Secret,
    /// Which events to send; all when empty.
    #[serde(default)]
    pub events: Vec<NotifyEvent>,
    /// A link to the rollout for people (e.g. a dashboard):
    /// `{{rollout_id}}` and `{{environment}}` are filled in. Shown in
    /// every format as `links.rollout`.
    #[serde(default)]
    pub link: Option<String>,
    /// `template` only: the HTTP method (default `POST`).
    #[serde(default)]
    pub method: Option<String>,
    /// `template` only: extra request headers; secrets (e.g. an API token).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `template` only: the request body with `{{placeholders}}`.
    #[serde(default)]
    pub body: Option<String>,
    /// `template` only: the body's content type (default
    /// `application/json`; with JSON, filled-in values are escaped).
    #[serde(default)]
    pub content_type: Option<String>,
    /// `template` only: the `{{status}}` shown per event, over
    /// [`NotifyEvent::default_status`].
    #[serde(default)]
    pub status: BTreeMap<NotifyEvent, String>,
}

impl Webhook {
    /// Whether this webhook wants `event`.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }

    /// `{{status}}` for `event`.
    pub fn status_of(&self, event: NotifyEvent) -> &str {
        self.status.get(&event).map_or(event.default_status(), String::as_str)
    }
}

/// The placeholders a `template` body, and a `link`, may use.
pub const PLACEHOLDERS: [&str; 12] = [
    "id",
    "event",
    "status",
    "rollout_id",
    "environment",
    "bundle_digest",
    "short_digest",
    "step",
    "error",
    "message",
    "link",
    "unix_ms",
];

/// Checks the runbook keys of environment `name` against every
/// environment: `requires`, and each webhook on its own.
pub(super) fn check(
    name: &str,
    requires: Option<&Requires>,
    webhooks: &[Webhook],
    all: &Environments,
    problems: &mut Problems,
) {
    let at = format!("[environments.{name}]");
    if let Some(requires) = requires
        && let Err(problem) = check_requires(name, requires, all)
    {
        problems.add_named(format_args!("{at} {problem}"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, hook) in webhooks.iter().enumerate() {
        let which =
            if hook.name.is_empty() { format!("webhooks[{i}]") } else { format!("webhook {:?}", hook.name) };
        if !hook.name.trim().is_empty() && !names.insert(hook.name.as_str()) {
            problems
                .add_named(format_args!("{at} {which}: two webhooks share this name; names must be unique"));
        }
        // Never echo the URL: it is a secret.
        match url::Url::parse(hook.url.expose()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => problems.add_named(format_args!(
                "{at} {which}: `url` is not an http:// or https:// URL (value not shown: secret)"
            )),
        }
        if let Err(problem) = check_webhook(&which, hook) {
            problems.add_named(format_args!("{at} {problem}"));
        }
    }
}

/// `requires` names another configured environment, without a circle.
fn check_requires(name: &str, requires: &Requires, all: &Environments) -> Result<(), String> {
    if requires.environment == name {
        return Err(format!(
            "requires.environment = {:?} names this environment itself; name the one a bundle must succeed \
             in first (e.g. \"staging\")",
            requires.environment
        ));
    }
    if !all.contains(&requires.environment) {
        return Err(format!(
            "requires.environment = {:?} is not a configured environment (configured: {})",
            requires.environment,
            all.list()
        ));
    }
    // A circle of requirements could never be met.
    let mut seen = vec![name.to_owned()];
    let mut next = Some(requires.environment.clone());
    while let Some(env) = next {
        if seen.contains(&env) {
            seen.push(env);
            return Err(format!(
                "requires forms a circle ({}); no bundle could ever roll out there",
                seen.join(" → ")
            ));
        }
        next = all.policy(&env).requires.map(|r| r.environment);
        seen.push(env);
    }
    Ok(())
}

/// One webhook's name, format keys and placeholders (its URL and the
/// uniqueness of its name are checked by the caller).
fn check_webhook(which: &str, hook: &Webhook) -> Result<(), String> {
    if hook.name.trim().is_empty() {
        return Err(format!("{which}: `name` must not be empty (it names the webhook in logs)"));
    }
    if !hook.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!(
            "{which}: `name` may hold only letters, digits, '-', '_' and '.' (it is part of an etcd key)"
        ));
    }
    let template_only = [
        ("method", hook.method.is_some()),
        ("headers", !hook.headers.is_empty()),
        ("body", hook.body.is_some()),
        ("content_type", hook.content_type.is_some()),
        ("status", !hook.status.is_empty()),
    ];
    match hook.format {
        WebhookFormat::Template => {
            let Some(body) = &hook.body else {
                return Err(format!(
                    "{which}: format = \"template\" needs a `body` (placeholders: {})",
                    PLACEHOLDERS.map(|p| format!("{{{{{p}}}}}")).join(", ")
                ));
            };
            check_placeholders(which, "body", body)?;
            if let Some(method) = &hook.method
                && reqwest::Method::from_bytes(method.as_bytes()).is_err()
            {
                return Err(format!("{which}: method {method:?} is not an HTTP method"));
            }
            for header in hook.headers.keys() {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(format!("{which}: header {header:?} is not a valid header name"));
                }
            }
        }
        WebhookFormat::Slack | WebhookFormat::Json => {
            if let Some((key, _)) = template_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{which}: `{key}` is only for format = \"template\" (this one is {:?})",
                    hook.format.as_str()
                ));
            }
        }
    }
    match &hook.link {
        Some(link) => check_placeholders(which, "link", link),
        None => Ok(()),
    }
}

/// Every `{{name}}` in `text` is a known placeholder.
fn check_placeholders(which: &str, key: &str, text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("{which}: `{key}` has a `{{{{` without its `}}}}`"));
        };
        let placeholder = after[..end].trim();
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "{which}: `{key}` uses {{{{{placeholder}}}}}, which runway does not fill in (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn finish(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.finish().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn requires_names_another_configured_environment_without_a_circle() {
        let config = finish(
            "[tls]\ninsecure = true\n[environments.staging]\n[environments.production]\n\
             requires = { environment = \"staging\", soak = \"24h\" }\n",
        )
        .unwrap();
        let requires = config.environments.policy("production").requires.unwrap();
        assert_eq!((requires.environment.as_str(), requires.soak), ("staging", Duration::from_secs(86_400)));
        let err = finish(
            "[tls]\ninsecure = true\n[environments.production]\nrequires = { environment = \"stage\", soak = \"1h\" }\n",
        )
        .unwrap_err();
        assert!(
            err.contains("[environments.production] requires.environment = \"stage\" is not a configured"),
            "{err}"
        );
        let err = finish(
            "[tls]\ninsecure = true\n[environments.a]\nrequires = { environment = \"b\", soak = \"1h\" }\n\
             [environments.b]\nrequires = { environment = \"a\", soak = \"1h\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("circle (a → b → a)"), "{err}");
        let err = finish(
            "[tls]\ninsecure = true\n[environments.a]\nrequires = { environment = \"a\", soak = \"1h\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("itself"), "{err}");
        let err = finish(
            "[tls]\ninsecure = true\n[environments.s]\n[environments.p]\nrequires = { environment = \"s\", soak = \"soon\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("soak"), "{err}");
    }

    #[test]
    fn maintenance_is_always_auto_or_never() {
        let config =
            finish("[tls]\ninsecure = true\n[environments.staging]\nmaintenance = \"auto\"\n").unwrap();
        assert_eq!(config.environments.policy("staging").maintenance, Maintenance::Auto);
        assert_eq!(config.environments.policy("other").maintenance, Maintenance::Always);
        assert!(
            finish("[tls]\ninsecure = true\n[environments.staging]\nmaintenance = \"sometimes\"\n").is_err()
        );
    }

    #[test]
    fn webhooks_are_checked_and_their_secrets_never_shown() {
        let config = finish(
            "[tls]\ninsecure = true\n[environments.production]\n\
             [[environments.production.webhooks]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"https://hooks.example/T0/SECRET1\"\n\
             [[environments.production.webhooks]]\nname = \"status\"\nformat = \"template\"\nurl = \"http://127.0.0.1:9/x\"\n\
             method = \"PATCH\"\nheaders = { Authorization = \"OAuth SECRET2\" }\nevents = [\"maintenance_on\", \"maintenance_off\"]\n\
             body = '{\"status\": \"{{status}}\", \"name\": \"{{environment}}: {{message}}\"}'\n\
             status = { maintenance_off = \"completed\" }\n",
        )
        .unwrap();
        let hooks = config.environments.policy("production").webhooks;
        assert_eq!(hooks.len(), 2);
        assert!(hooks[1].wants(NotifyEvent::MaintenanceOn) && !hooks[1].wants(NotifyEvent::Started));
        assert!(hooks[0].wants(NotifyEvent::Started));
        assert_eq!(hooks[1].status_of(NotifyEvent::MaintenanceOff), "completed");
        assert_eq!(hooks[1].status_of(NotifyEvent::MaintenanceOn), "in_progress");
        let debug = format!("{config:?}");
        assert!(!debug.contains("SECRET1") && !debug.contains("SECRET2"), "{debug}");

        let bad = |hook: &str| {
            finish(&format!("[tls]\ninsecure = true\n[environments.production]\nwebhooks = [{hook}]\n"))
                .unwrap_err()
        };
        let err = bad("{ name = \"x\", format = \"json\", url = \"ftp://SECRET3\" }");
        assert!(err.contains("webhook \"x\": `url` is not an http") && !err.contains("SECRET3"), "{err}");
        let err = bad("{ name = \"x\", format = \"template\", url = \"http://h/\" }");
        assert!(err.contains("needs a `body`"), "{err}");
        let err = bad("{ name = \"x\", format = \"template\", url = \"http://h/\", body = \"{{rollout}}\" }");
        assert!(err.contains("{{rollout}}, which runway does not fill in"), "{err}");
        let err = bad("{ name = \"x\", format = \"slack\", url = \"http://h/\", body = \"hi\" }");
        assert!(err.contains("`body` is only for format = \"template\""), "{err}");
        let err = bad(
            "{ name = \"x\", format = \"json\", url = \"http://h/\" }, { name = \"x\", format = \"json\", url = \"http://h/\" }",
        );
        assert!(err.contains("unique"), "{err}");
        let err = bad("{ name = \"a/b\", format = \"json\", url = \"http://h/\" }");
        assert!(err.contains("only letters, digits"), "{err}");
    }
}
