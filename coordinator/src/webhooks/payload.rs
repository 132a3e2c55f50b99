//! What a notification says, and the request each webhook format makes
//! of it.
//!
//! Notifications are read off the rollout's saved event log (see
//! [`notification_of`]), so they exist exactly when the transition they
//! report was saved; the runner knows nothing about webhooks.

use runway_proto::v1::RolloutEvent;
use serde_json::{Value, json};

use crate::config::{NotifyEvent, Webhook, WebhookFormat};
use crate::model::{RolloutRecord, StepState};

/// One thing to tell about one rollout: the event log entry it comes from,
/// with the rollout's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `ROLLOUT/SEQ`: unique per event, the same for every retry and after
    /// a failover; sent as the `Idempotency-Key` header.
    pub id: String,
    pub event: NotifyEvent,
    /// The event's sequence number in the rollout's log.
    pub seq: u64,
    pub rollout_id: String,
    pub environment: String,
    pub bundle_digest: String,
    /// The step it is about (the failed one, for `failed` and `rolled_back`).
    pub step: String,
    /// Why the rollout failed, was rolled back or cancelled; empty otherwise.
    pub error: String,
    /// The event's message, for people.
    pub message: String,
    pub unix_ms: i64,
}

/// The notification `event` of `record`'s log stands for, if any.
pub fn notification_of(record: &RolloutRecord, event: &RolloutEvent) -> Option<Notification> {
    let kind = match (event.kind.as_str(), event.step.as_str()) {
        ("rollout_started", _) => NotifyEvent::Started,
        ("step_started", "approval") => NotifyEvent::AwaitingApproval,
        ("step_succeeded", "maintenance_on") => NotifyEvent::MaintenanceOn,
        ("step_succeeded", "maintenance_off") => NotifyEvent::MaintenanceOff,
        ("rollout_failed", _) => NotifyEvent::Failed,
        ("rollout_rolled_back", _) => NotifyEvent::RolledBack,
        ("rollout_succeeded", _) => NotifyEvent::Succeeded,
        ("rollout_cancelled", _) => NotifyEvent::Cancelled,
        ("monitor_degraded", _) => NotifyEvent::Degraded,
        _ => return None,
    };
    let ended_badly = matches!(kind, NotifyEvent::Failed | NotifyEvent::RolledBack | NotifyEvent::Cancelled);
    let step = if ended_badly {
        record
            .steps
            .iter()
            .find(|s| s.state == StepState::Failed && !s.recovery)
            .map(|s| s.kind.name().to_owned())
            .unwrap_or_default()
    } else {
        event.step.clone()
    };
    Some(Notification {
        id: format!("{}/{}", record.id, event.seq),
        event: kind,
        seq: event.seq,
        rollout_id: record.id.clone(),
        environment: record.environment.clone(),
        bundle_digest: record.bundle_digest.clone(),
        step,
        error: if ended_badly { record.error.clone() } else { String::new() },
        message: event.message.clone(),
        unix_ms: event.unix_ms,
    })
}

/// One HTTP request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub content_type: String,
    /// Extra headers (the template's, secrets included).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Notification {
    fn short_digest(&self) -> &str {
        &self.bundle_digest[..self.bundle_digest.len().min(12)]
    }

    /// `{{name}}`'s value; `None` for an unknown name (the config check
    /// refuses those).
    fn placeholder(&self, name: &str, webhook: &Webhook) -> Option<String> {
        Some(match name {
            "id" => self.id.clone(),
            "event" => self.event.as_str().to_owned(),
            "status" => webhook.status_of(self.event).to_owned(),
            "rollout_id" => self.rollout_id.clone(),
            "environment" => self.environment.clone(),
            "bundle_digest" => self.bundle_digest.clone(),
            "short_digest" => self.short_digest().to_owned(),
            "step" => self.step.clone(),
            "error" => self.error.clone(),
            "message" => self.message.clone(),
            "link" => self.link(webhook).unwrap_or_default(),
            "unix_ms" => self.unix_ms.to_string(),
            _ => return None,
        })
    }

    /// The webhook's `link` for this rollout, filled in.
    fn link(&self, webhook: &Webhook) -> Option<String> {
        let link = webhook.link.as_ref()?;
        Some(crate::placeholders::fill(link, |name| match name {
            "link" => Some(String::new()),
            other => self.placeholder(other, webhook),
        }))
    }

    /// Where people look: the CLI commands, and the webhook's link.
    fn links(&self, webhook: &Webhook) -> Value {
        let mut links = json!({
            "show": format!("runway rollout show {}", self.rollout_id),
            "watch": format!("runway rollout watch {}", self.rollout_id),
        });
        if let Some(link) = self.link(webhook) {
            links["rollout"] = Value::String(link);
        }
        links
    }

    /// One line for a chat.
    pub fn text(&self) -> String {
        let what = match self.event {
            NotifyEvent::Started => "started".to_owned(),
            NotifyEvent::AwaitingApproval => "is waiting for approval".to_owned(),
            NotifyEvent::MaintenanceOn => "turned maintenance mode ON".to_owned(),
            NotifyEvent::MaintenanceOff => "turned maintenance mode off".to_owned(),
            NotifyEvent::Succeeded => "succeeded".to_owned(),
            NotifyEvent::Failed => format!("FAILED in {}: {}", self.step, self.error),
            NotifyEvent::RolledBack => format!("was ROLLED BACK after {} failed: {}", self.step, self.error),
            NotifyEvent::Cancelled => format!("was cancelled: {}", self.error),
            NotifyEvent::Degraded => format!("is DEGRADED after it succeeded: {}", self.message),
        };
        format!(
            "runway: rollout {} of bundle {} to {} {what}",
            self.rollout_id,
            self.short_digest(),
            self.environment
        )
    }

    /// The request `webhook` makes of this notification.
    pub fn request(&self, webhook: &Webhook) -> Request {
        const JSON: &str = "application/json";
        let plain = |body: Value| Request {
            method: "POST".into(),
            content_type: JSON.into(),
            headers: Vec::new(),
            body: body.to_string(),
        };
        match webhook.format {
            WebhookFormat::Slack => {
                let mut text = self.text();
                if let Some(link) = self.link(webhook) {
                    text.push_str(&format!(" <{link}|details>"));
                }
                plain(json!({ "text": text }))
            }
            WebhookFormat::Json => plain(json!({
                "id": self.id,
                "event": self.event.as_str(),
                "rollout_id": self.rollout_id,
                "environment": self.environment,
                "bundle_digest": self.bundle_digest,
                "step": self.step,
                "error": self.error,
                "message": self.message,
                "unix_ms": self.unix_ms,
                "links": self.links(webhook),
            })),
            WebhookFormat::Template => {
                let content_type = webhook.content_type.clone().unwrap_or_else(|| JSON.into());
                let escape_json = content_type.contains("json");
                let body = crate::placeholders::fill(webhook.body.as_deref().unwrap_or_default(), |name| {
                    let value = self.placeholder(name, webhook)?;
                    Some(if escape_json { json_escaped(&value) } else { value })
                });
                Request {
                    method: webhook.method.clone().unwrap_or_else(|| "POST".into()),
                    content_type,
                    headers: webhook
                        .headers
                        .iter()
                        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
                        .collect(),
                    body,
                }
            }
        }
    }
}

/// `value` as it goes between the quotes of a JSON string.
fn json_escaped(value: &str) -> String {
    let quoted = Value::String(value.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Secret;
    use crate::model::{StepKind, StepRecord};

    fn webhook(format: WebhookFormat) -> Webhook {
        Webhook {
            name: "w".into(),
            format,
            url: Secret::from("http://127.0.0.1:1/secret"),
            events: Vec::new(),
            link: Some("https://grafana.example/d/runway?var-rollout={{rollout_id}}".into()),
            method: None,
            headers: BTreeMap::new(),
            body: None,
            content_type: None,
            status: BTreeMap::new(),
        }
    }

    fn record() -> RolloutRecord {
        let step = |kind, state, recovery| StepRecord {
            kind,
            hosts: vec!["db-1".into()],
            state,
            attempt: 1,
            error: String::new(),
            recovery,
        };
        RolloutRecord {
            id: "r1".into(),
            environment: "production".into(),
            bundle_digest: "0123456789abcdef".into(),
            error: "migrate failed: db-1: \"quoted\" boom".into(),
            steps: vec![
                step(StepKind::Migrate, StepState::Failed, false),
                step(StepKind::MaintenanceOff, StepState::Failed, true),
            ],
            ..RolloutRecord::default()
        }
    }

    fn event(seq: u64, kind: &str, step: &str) -> RolloutEvent {
        RolloutEvent {
            rollout_id: "r1".into(),
            seq,
            kind: kind.into(),
            step: step.into(),
            message: format!("{kind} {step}"),
            unix_ms: 42,
            ..RolloutEvent::default()
        }
    }

    #[test]
    fn events_map_to_notifications_and_others_to_none() {
        let record = record();
        let kinds: Vec<Option<NotifyEvent>> = [
            event(1, "rollout_started", ""),
            event(2, "step_started", "preflight"),
            event(3, "step_started", "approval"),
            event(4, "step_succeeded", "maintenance_on"),
            event(5, "progress", "migrate"),
            event(6, "step_succeeded", "maintenance_off"),
            event(7, "rollout_rolled_back", ""),
            event(8, "step_succeeded", "approval"),
        ]
        .iter()
        .map(|e| notification_of(&record, e).map(|n| n.event))
        .collect();
        assert_eq!(
            kinds,
            [
                Some(NotifyEvent::Started),
                None,
                Some(NotifyEvent::AwaitingApproval),
                Some(NotifyEvent::MaintenanceOn),
                None,
                Some(NotifyEvent::MaintenanceOff),
                Some(NotifyEvent::RolledBack),
                None,
            ]
        );
        let rolled_back = notification_of(&record, &event(7, "rollout_rolled_back", "")).unwrap();
        assert_eq!((rolled_back.id.as_str(), rolled_back.step.as_str()), ("r1/7", "migrate"));
        assert!(rolled_back.error.contains("boom"));
        let on = notification_of(&record, &event(4, "step_succeeded", "maintenance_on")).unwrap();
        assert_eq!((on.step.as_str(), on.error.as_str()), ("maintenance_on", ""));
    }

    #[test]
    fn each_format_says_what_it_should() {
        let n = notification_of(&record(), &event(7, "rollout_rolled_back", "")).unwrap();
        let slack: Value = serde_json::from_str(&n.request(&webhook(WebhookFormat::Slack)).body).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.starts_with("runway: rollout r1 of bundle 0123456789ab to production was ROLLED BACK"),
            "{text}"
        );
        assert!(text.contains("var-rollout=r1|details>"), "{text}");

        let generic: Value = serde_json::from_str(&n.request(&webhook(WebhookFormat::Json)).body).unwrap();
        assert_eq!(generic["id"], "r1/7");
        assert_eq!(generic["event"], "rolled_back");
        assert_eq!(generic["bundle_digest"], "0123456789abcdef");
        assert_eq!(generic["step"], "migrate");
        assert_eq!(generic["links"]["show"], "runway rollout show r1");
        assert_eq!(generic["links"]["rollout"], "https://grafana.example/d/runway?var-rollout=r1");

        let mut template = webhook(WebhookFormat::Template);
        template.method = Some("PATCH".into());
        template.headers.insert("Authorization".into(), Secret::from("OAuth t0k"));
        template.body = Some(
            r#"{"incident": {"name": "{{environment}} {{short_digest}}", "status": "{{status}}", "body": "{{error}}"}}"#
                .into(),
        );
        let request = n.request(&template);
        assert_eq!(request.method, "PATCH");
        assert_eq!(request.headers, [("Authorization".to_owned(), "OAuth t0k".to_owned())]);
        let body: Value = serde_json::from_str(&request.body).expect("escaped values keep the body JSON");
        assert_eq!(body["incident"]["status"], "resolved");
        assert_eq!(body["incident"]["name"], "production 0123456789ab");
        assert_eq!(body["incident"]["body"], "migrate failed: db-1: \"quoted\" boom");
        template.content_type = Some("text/plain".into());
        template.body = Some("{{event}}: {{error}} {{nope".into());
        assert_eq!(n.request(&template).body, "rolled_back: migrate failed: db-1: \"quoted\" boom {{nope");
    }
}
